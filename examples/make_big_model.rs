//! Writes a large synthetic model for the memory benchmark
//! (`benches/roundtrip_rss.sh`): a chain of `MatMul`s over 2048×2048 f32
//! weights filled with pseudo-random values (so no filesystem or page-cache
//! trick can shortcut the bytes).
//!
//! ```text
//! cargo run --release --example make_big_model -- OUT.onnx [--mb 450] [--external]
//! ```
//!
//! With `--external` the weights go to `OUT.onnx.data` beside the model
//! (each tensor page-aligned), built here directly from protos so that the
//! benchmark's input does not depend on the exporter under test.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use onnxq::onnx::tensor_proto::{DataLocation, DataType};
use onnxq::onnx::tensor_shape_proto::{dimension, Dimension};
use onnxq::onnx::type_proto;
use onnxq::onnx::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use prost::Message;

const D: i64 = 2048;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out: Option<PathBuf> = None;
    let mut mb: u64 = 450;
    let mut external = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mb" => {
                mb = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--mb needs a value"))?
                    .parse()?
            }
            "--external" => external = true,
            _ if out.is_none() => out = Some(PathBuf::from(a)),
            _ => anyhow::bail!("usage: make_big_model OUT.onnx [--mb N] [--external]"),
        }
    }
    let out =
        out.ok_or_else(|| anyhow::anyhow!("usage: make_big_model OUT.onnx [--mb N] [--external]"))?;
    let layer_bytes = (D * D * 4) as u64;
    let layers = (mb * 1_000_000).div_ceil(layer_bytes).max(1);

    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut weights = || -> Vec<u8> {
        let mut v = Vec::with_capacity(layer_bytes as usize);
        for _ in 0..D * D {
            // xorshift64*: cheap, deterministic, incompressible enough.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            let r = rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
            // Uniform with variance 1/D: each layer keeps the activations'
            // scale, so a long chain neither overflows nor underflows.
            let x = ((r >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.0765;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v
    };

    let data_name = format!(
        "{}.data",
        out.file_name().expect("file name").to_string_lossy()
    );
    let mut data = if external {
        Some(BufWriter::new(File::create(
            out.with_file_name(&data_name),
        )?))
    } else {
        None
    };
    let mut pos: u64 = 0;

    let mut g = GraphProto {
        name: Some("big".into()),
        ..Default::default()
    };
    g.input.push(vi("x"));
    let mut prev = "x".to_string();
    for i in 0..layers {
        let w = format!("w{i}");
        let y = format!("h{i}");
        let bytes = weights();
        let mut t = TensorProto {
            name: Some(w.clone()),
            data_type: Some(DataType::Float as i32),
            dims: vec![D, D],
            ..Default::default()
        };
        match &mut data {
            Some(f) => {
                let pad = (4096 - pos % 4096) % 4096;
                f.write_all(&vec![0u8; pad as usize])?;
                pos += pad;
                f.write_all(&bytes)?;
                t.data_location = Some(DataLocation::External as i32);
                t.external_data = vec![
                    kv("location", &data_name),
                    kv("offset", &pos.to_string()),
                    kv("length", &bytes.len().to_string()),
                ];
                pos += bytes.len() as u64;
            }
            None => t.raw_data = Some(bytes.into()),
        }
        g.initializer.push(t);
        g.node.push(NodeProto {
            op_type: Some("MatMul".into()),
            name: Some(format!("mm{i}")),
            input: vec![prev.clone(), w],
            output: vec![y.clone()],
            ..Default::default()
        });
        prev = y;
    }
    g.output.push(vi(&prev));
    if let Some(mut f) = data {
        f.flush()?;
    }

    let m = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        producer_name: Some("onnxq make_big_model".into()),
        graph: Some(g),
        ..Default::default()
    };
    let mut f = BufWriter::new(File::create(&out)?);
    f.write_all(&m.encode_to_vec())?;
    f.flush()?;
    eprintln!(
        "wrote {} ({layers} layers of {D}x{D} f32{})",
        out.display(),
        if external { ", external data" } else { "" }
    );
    Ok(())
}

fn vi(name: &str) -> ValueInfoProto {
    let dim = |d: i64| Dimension {
        value: Some(dimension::Value::DimValue(d)),
        denotation: None,
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(D)],
                }),
            })),
            denotation: None,
        }),
        ..Default::default()
    }
}

fn kv(k: &str, v: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}
