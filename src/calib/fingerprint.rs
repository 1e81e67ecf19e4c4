//! The model fingerprint a statistics file is tied to.
//!
//! Statistics belong to a graph — its structure and its weights — not to
//! the bytes of a file: re-saving a model, reordering its initializers or
//! changing doc strings and metadata must not invalidate them, while any
//! change to an op, an attribute, a connection or a weight must. The
//! fingerprint hashes exactly that, in a form made for this purpose and
//! versioned ([`VERSION`]): a change of printer, exporter or IR detail does
//! not silently change it, and a deliberate change bumps the version.
//!
//! What goes in, in this order: the version; the opset imports; the graph
//! inputs (name, type); initializers sorted by name (name, dtype, dims,
//! SHA-256 of the data); ops in topological order (domain, op type, name,
//! operand and result names, attributes as encoded protobuf — subgraphs
//! included); the graph outputs (name).

use prost::Message;
use sha2::{Digest, Sha256};

use crate::ir::{Model, NodeKind};

/// Bumped whenever what the fingerprint covers changes.
pub const VERSION: u32 = 1;

/// The fingerprint of `m`: `v1-` and 16 hex digits.
pub fn model_fingerprint(m: &Model) -> String {
    let mut h = Sha256::new();
    let mut field = |tag: &str, bytes: &[u8]| {
        h.update(tag.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field("version", &VERSION.to_le_bytes());
    let mut opsets: Vec<(String, i64)> = m
        .meta
        .opset_import
        .iter()
        .map(|o| (o.domain().to_string(), o.version()))
        .collect();
    opsets.sort();
    for (d, v) in &opsets {
        field("opset", d.as_bytes());
        field("version", &v.to_le_bytes());
    }
    let g = &m.graph;
    for p in g.inputs() {
        field("input", p.info.name().as_bytes());
        let ty = p.info.r#type.as_ref().map(|t| t.encode_to_vec());
        field("type", &ty.unwrap_or_default());
    }
    let mut inits: Vec<(&str, &crate::ir::Tensor)> = g
        .initializer_nodes()
        .into_iter()
        .filter_map(|n| {
            g.node(n)
                .initializer()
                .map(|t| (g.name(g.node(n).output()), t))
        })
        .collect();
    inits.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in inits {
        field("initializer", name.as_bytes());
        field("dtype", &t.dtype().to_le_bytes());
        for d in t.dims() {
            field("dim", &d.to_le_bytes());
        }
        let data = match t.raw_bytes() {
            Ok(b) => Sha256::digest(&b),
            Err(_) => Sha256::digest(t.proto().encode_to_vec()),
        };
        field("data", &data);
    }
    for n in g.topo_order() {
        let node = g.node(n);
        let NodeKind::Op(p) = node.kind() else {
            continue;
        };
        field("op", node.domain().as_bytes());
        field("type", p.op_type().as_bytes());
        field("name", p.name().as_bytes());
        for v in node.inputs() {
            field("in", v.map(|v| g.name(v)).unwrap_or("").as_bytes());
        }
        for v in node.outputs() {
            field("out", v.map(|v| g.name(v)).unwrap_or("").as_bytes());
        }
        for a in &p.attribute {
            field("attr", &a.encode_to_vec());
        }
    }
    for p in g.outputs() {
        field("output", p.info.name().as_bytes());
    }
    let digest = h.finalize();
    format!("v{VERSION}-{}", &super::data::hex(&digest)[..16])
}

#[cfg(test)]
mod tests {
    use super::model_fingerprint;
    use crate::ir::text::parse_model;

    const BASE: &str = r#"<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] X) => (float[1,2] Y)
<float[2,2] W = {1.0, 2.0, 3.0, 4.0}, float[2] B = {0.5, -0.5}>
{
  [mm] M = MatMul (X, W)
  [add] Y = Add (M, B)
}
"#;

    fn fp(src: &str) -> String {
        model_fingerprint(&parse_model(src).expect("test model parses"))
    }

    #[test]
    fn versioned_and_stable_across_file_details() {
        let base = fp(BASE);
        assert!(base.starts_with("v1-"), "{base}");
        // Initializer order and doc strings are file details.
        let reordered = BASE.replace(
            "<float[2,2] W = {1.0, 2.0, 3.0, 4.0}, float[2] B = {0.5, -0.5}>",
            "<float[2] B = {0.5, -0.5}, float[2,2] W = {1.0, 2.0, 3.0, 4.0}>",
        );
        assert_eq!(fp(&reordered), base);
        let documented = BASE.replace(
            "<ir_version: 8,",
            "<ir_version: 8, doc_string: \"re-saved\",",
        );
        assert_eq!(fp(&documented), base);
    }

    #[test]
    fn changes_with_weights_ops_and_attributes() {
        let base = fp(BASE);
        assert_ne!(fp(&BASE.replace("4.0}", "4.5}")), base, "a weight");
        assert_ne!(fp(&BASE.replace("Add (M, B)", "Sub (M, B)")), base, "an op");
        let attr = BASE.replace("MatMul (X, W)", "Gemm <transB: int = 1> (X, W)");
        assert_ne!(
            fp(&attr),
            fp(&BASE.replace("MatMul (X, W)", "Gemm (X, W)")),
            "an attribute"
        );
    }
}
