//! Layers point one way: a module may use the ones below it in
//! [`LAYERS`], never one above. A new back-edge (a module reaching up, as
//! `report` once used `quantize` and `ir` used `onnx::import`) fails here,
//! naming the file, the line and the two layers. The order is the one the
//! crate's docs (`src/lib.rs`) give.

use std::path::{Path, PathBuf};

/// Lowest first. Each entry is a top-level module of the crate (`passes`
/// is mounted from the repository's `passes/` folder).
const LAYERS: &[&str] = &[
    "proto",
    "ir",
    "onnx",
    "tensorio",
    "runtime",
    "analysis",
    "calib",
    "quant",
    "target",
    "plan",
    "passes",
    "validate",
    "sensitivity",
    "report",
    "quantize",
    "cli",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source dir") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The layer a source file belongs to.
fn layer_of(root: &Path, file: &Path) -> Option<&'static str> {
    let rel = file.strip_prefix(root).ok()?;
    let mut parts = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    let top = parts.next()?;
    let name = if top == "passes" {
        "passes".to_string()
    } else {
        let second = parts.next()?;
        second.trim_end_matches(".rs").to_string()
    };
    LAYERS.iter().copied().find(|m| *m == name)
}

/// Top-level modules a line of code names through `crate::` (plain paths
/// and `use crate::{a, b::c}` groups).
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("passes"), &mut files);
    files.sort();
    let mut back_edges = Vec::new();
    let mut layered = 0;
    for f in &files {
        let Some(layer) = layer_of(root, f) else {
            continue;
        };
        layered += 1;
        let src = std::fs::read_to_string(f).expect("readable source");
        for (i, line) in src.lines().enumerate() {
            // Doc links and comments are not dependencies.
            if line.trim_start().starts_with("//") {
                continue;
            }
            for m in crate_refs(line) {
                let (Some(to), Some(from)) = (rank(&m), rank(layer)) else {
                    continue;
                };
                if to > from {
                    back_edges.push(format!(
                        "{}:{}: {layer} uses {m}, a layer above it",
                        f.strip_prefix(root).unwrap().display(),
                        i + 1
                    ));
                }
            }
        }
    }
    assert!(layered > 50, "the test found the sources ({layered} files)");
    assert!(
        back_edges.is_empty(),
        "layers must point down (order: {}):\n{}",
        LAYERS.join(" → "),
        back_edges.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("src/lib.rs");
    for line in lib.lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                rank(m).is_some(),
                "module '{m}' is in no layer: add it to LAYERS and lib.rs's order"
            );
        }
    }
}

#[test]
fn the_scanner_sees_groups_and_paths() {
    assert_eq!(
        crate_refs("use crate::{ir::Model, onnx::import};"),
        ["ir", "onnx"]
    );
    assert_eq!(crate_refs("let x = crate::quant::QType::U8;"), ["quant"]);
}
