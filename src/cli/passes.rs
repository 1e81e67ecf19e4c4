//! `onnxq passes`: list the registered passes.

use super::CliResult;
use crate::passes;

pub fn cmd_passes() -> CliResult {
    let w = passes::registry()
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    for p in passes::registry() {
        let tag = if p.changes_numerics {
            " [changes numerics]"
        } else {
            ""
        };
        println!("{:<w$}  {}{}", p.name, p.summary, tag);
    }
    Ok(())
}
