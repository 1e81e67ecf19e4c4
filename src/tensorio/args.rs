//! Command-line input arguments: `NAME=FILE` or `FILE`.

use std::path::{Path, PathBuf};

use super::{read_npy, read_npz, read_pb, HostTensor, TensorIoError};

/// Splits a command-line input argument: `NAME=FILE` names the tensor,
/// a bare `FILE` leaves the name to the file (`.npz` keys, `.pb` names,
/// the `.npy` file stem).
pub fn parse_input_arg(arg: &str) -> Result<(Option<String>, PathBuf), TensorIoError> {
    // A path may itself contain '=', so only split when the left part looks
    // like a name rather than an existing file.
    if let Some((name, file)) = arg.split_once('=') {
        if !Path::new(arg).exists() {
            if name.is_empty() || file.is_empty() {
                return Err(TensorIoError::BadArg {
                    arg: arg.to_string(),
                    what: "expected NAME=FILE or FILE".into(),
                });
            }
            return Ok((Some(name.to_string()), PathBuf::from(file)));
        }
    }
    if arg.is_empty() {
        return Err(TensorIoError::BadArg {
            arg: arg.to_string(),
            what: "expected NAME=FILE or FILE".into(),
        });
    }
    Ok((None, PathBuf::from(arg)))
}

/// Reads the tensors a command-line input argument names (see
/// [`parse_input_arg`]), by extension: `.npy` (one tensor), `.npz` (every
/// array; with `NAME=`, the archive must hold exactly one), `.pb` (one
/// `TensorProto`; `NAME=` overrides its name).
pub fn read_inputs_arg(arg: &str) -> Result<Vec<(String, HostTensor)>, TensorIoError> {
    let (name, path) = parse_input_arg(arg)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let bad = |what: String| TensorIoError::BadArg {
        arg: arg.to_string(),
        what,
    };
    match ext.as_str() {
        "npy" => {
            let t = read_npy(&path)?;
            let name = match name {
                Some(n) => n,
                None => path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| bad("cannot take a tensor name from the file name".into()))?,
            };
            Ok(vec![(name, t)])
        }
        "npz" => {
            let mut all = read_npz(&path)?;
            match name {
                None => Ok(all),
                Some(n) if all.len() == 1 => {
                    let t = all.pop().expect("invariant: one array").1;
                    Ok(vec![(n, t)])
                }
                Some(_) => Err(bad(format!(
                    "NAME= needs an archive with one array, this one has {}",
                    all.len()
                ))),
            }
        }
        "pb" => {
            let (pb_name, t) = read_pb(&path)?;
            let name = name.unwrap_or(pb_name);
            if name.is_empty() {
                return Err(bad("the TensorProto has no name; pass NAME=FILE".into()));
            }
            Ok(vec![(name, t)])
        }
        _ => Err(bad("unknown file type; expected .npy, .npz or .pb".into())),
    }
}
