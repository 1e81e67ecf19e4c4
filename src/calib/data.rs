//! Calibration and validation data: where samples come from and how they
//! are checked against the model's inputs.
//!
//! A data directory holds one of:
//! * `.npz` files, one sample each, keyed by graph input name;
//! * `.npy` files, one sample each, for single-input models;
//! * ONNX test-data folders `test_data_set_*/input_*.pb`.
//!
//! Files are taken in sorted order and loaded one at a time (a data set is
//! never held in memory whole). Every sample is checked: a missing or unknown
//! input, a wrong dtype or a wrong shape is an error naming the file and the
//! input.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ir::types::Dim;
use crate::proto::dtype_name;
use crate::tensorio::{self, HostTensor, TensorIoError};

pub use crate::runtime::{input_specs, InputSpec};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read the data directory ({source})")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no samples found; expected .npz files, .npy files or test_data_set_*/input_*.pb folders")]
    Empty { path: String },
    #[error("{path}: mixes sample kinds ({kinds}); use one kind per directory")]
    Mixed { path: String, kinds: String },
    #[error(transparent)]
    Io(#[from] TensorIoError),
    #[error("{file}: has no tensor for model input '{input}' (it holds: {have})")]
    MissingInput {
        file: String,
        input: String,
        have: String,
    },
    #[error("{file}: tensor '{name}' is not an input of the model (inputs: {inputs})")]
    UnknownInput {
        file: String,
        name: String,
        inputs: String,
    },
    #[error("{file}: input '{input}' is {got}, the model expects {want}")]
    Dtype {
        file: String,
        input: String,
        got: String,
        want: String,
    },
    #[error("{file}: input '{input}' has shape {got:?}, the model expects {want}")]
    Shape {
        file: String,
        input: String,
        got: Vec<usize>,
        want: String,
    },
    #[error("{file}: .npy samples need a model with exactly one input; this one has {n}: use .npz files keyed by input name")]
    NpyMulti { file: String, n: usize },
}

/// Where one sample comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    Npz(PathBuf),
    Npy(PathBuf),
    PbDir(PathBuf),
    /// Seeded random inputs (no data given).
    Random {
        seed: u64,
        index: usize,
    },
}

impl Source {
    pub fn label(&self) -> String {
        match self {
            Source::Npz(p) | Source::Npy(p) | Source::PbDir(p) => p.display().to_string(),
            Source::Random { seed, index } => format!("random sample {index} (seed {seed})"),
        }
    }
}

/// An ordered set of samples.
#[derive(Clone, Debug)]
pub struct DataSet {
    pub root: String,
    pub sources: Vec<Source>,
}

impl DataSet {
    /// Lists the samples of a directory (sorted), keeping at most `limit`.
    pub fn open(dir: &Path, limit: Option<usize>) -> Result<DataSet, DataError> {
        let label = dir.display().to_string();
        let rd = std::fs::read_dir(dir).map_err(|source| DataError::Dir {
            path: label.clone(),
            source,
        })?;
        let mut entries: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e = e.map_err(|source| DataError::Dir {
                path: label.clone(),
                source,
            })?;
            entries.push(e.path());
        }
        entries.sort();
        let mut npz = Vec::new();
        let mut npy = Vec::new();
        let mut pb = Vec::new();
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .to_string();
            if p.is_dir() && name.starts_with("test_data_set") {
                pb.push(Source::PbDir(p));
            } else if name.ends_with(".npz") {
                npz.push(Source::Npz(p));
            } else if name.ends_with(".npy") {
                npy.push(Source::Npy(p));
            }
        }
        let kinds: Vec<&str> = [
            (!npz.is_empty(), ".npz"),
            (!npy.is_empty(), ".npy"),
            (!pb.is_empty(), "test_data_set_*"),
        ]
        .iter()
        .filter(|(b, _)| *b)
        .map(|(_, k)| *k)
        .collect();
        if kinds.len() > 1 {
            return Err(DataError::Mixed {
                path: label,
                kinds: kinds.join(", "),
            });
        }
        let mut sources: Vec<Source> = npz.into_iter().chain(npy).chain(pb).collect();
        if sources.is_empty() {
            return Err(DataError::Empty { path: label });
        }
        if let Some(l) = limit {
            sources.truncate(l.max(1));
        }
        Ok(DataSet {
            root: label,
            sources,
        })
    }

    /// `n` seeded random samples.
    pub fn random(n: usize, seed: u64) -> DataSet {
        DataSet {
            root: format!("<random x{n}, seed {seed}>"),
            sources: (0..n).map(|index| Source::Random { seed, index }).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// A subset (for validating on part of the calibration data).
    /// `n` samples spread evenly over `start..` (all of them when fewer):
    /// files sorted by name come in runs of one kind, and a check on a
    /// run would judge that kind alone.
    pub fn spread(&self, start: usize, n: usize) -> DataSet {
        let avail = self.sources.len().saturating_sub(start);
        let n = n.min(avail);
        DataSet {
            root: self.root.clone(),
            sources: (0..n)
                .map(|j| self.sources[start + j * avail / n].clone())
                .collect(),
        }
    }

    pub fn take(&self, n: usize) -> DataSet {
        DataSet {
            root: self.root.clone(),
            sources: self.sources.iter().take(n).cloned().collect(),
        }
    }

    /// Loads and checks sample `i` against `specs`; returns the inputs in
    /// the order of `specs`. `fixed` gives concrete dims for symbolic ones
    /// (random samples need them).
    pub fn load(
        &self,
        i: usize,
        specs: &[InputSpec],
        fixed: &std::collections::BTreeMap<String, Vec<usize>>,
    ) -> Result<Vec<(String, HostTensor)>, DataError> {
        let src = &self.sources[i];
        let file = src.label();
        let mut got: Vec<(String, HostTensor)> = match src {
            Source::Npz(p) => tensorio::read_npz(p)?,
            Source::Npy(p) => {
                if specs.len() != 1 {
                    return Err(DataError::NpyMulti {
                        file,
                        n: specs.len(),
                    });
                }
                vec![(specs[0].name.clone(), tensorio::read_npy(p)?)]
            }
            Source::PbDir(d) => {
                let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                    .map_err(|source| DataError::Dir {
                        path: file.clone(),
                        source,
                    })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("input_") && n.ends_with(".pb"))
                    })
                    .collect();
                // input_10 sorts after input_9.
                files.sort_by_key(|p| {
                    let n = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    n.trim_start_matches("input_")
                        .parse::<usize>()
                        .unwrap_or(usize::MAX)
                });
                let mut out = Vec::new();
                for (k, f) in files.iter().enumerate() {
                    let (name, t) = tensorio::read_pb(f)?;
                    // Unnamed tensors bind by position, as in ONNX's test runner.
                    let name = if name.is_empty() {
                        specs.get(k).map(|s| s.name.clone()).unwrap_or_default()
                    } else {
                        name
                    };
                    out.push((name, t));
                }
                out
            }
            Source::Random { seed, index } => {
                return Ok(random_sample(specs, fixed, *seed, *index))
            }
        };
        let inputs = specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (name, _) in &got {
            if !specs.iter().any(|s| &s.name == name) {
                return Err(DataError::UnknownInput {
                    file: file.clone(),
                    name: name.clone(),
                    inputs: inputs.clone(),
                });
            }
        }
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            let have = got
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let pos = got.iter().position(|(n, _)| n == &s.name).ok_or_else(|| {
                DataError::MissingInput {
                    file: file.clone(),
                    input: s.name.clone(),
                    have,
                }
            })?;
            let (name, t) = got.swap_remove(pos);
            if s.dtype != 0 && t.dtype() != s.dtype {
                return Err(DataError::Dtype {
                    file: file.clone(),
                    input: name,
                    got: t.dtype_name().to_string(),
                    want: dtype_name(s.dtype).to_string(),
                });
            }
            if let Some(dims) = &s.dims {
                let ok = dims.len() == t.shape().len()
                    && dims.iter().zip(t.shape()).all(|(d, &n)| match d {
                        Dim::Known(v) => *v as usize == n,
                        _ => true,
                    });
                let fixed_ok = fixed.get(&s.name).is_none_or(|f| f.as_slice() == t.shape());
                if !ok || !fixed_ok {
                    return Err(DataError::Shape {
                        file: file.clone(),
                        input: name,
                        got: t.shape().to_vec(),
                        want: fixed
                            .get(&s.name)
                            .map(|f| format!("{f:?}"))
                            .unwrap_or_else(|| show_dims(dims)),
                    });
                }
            }
            out.push((name, t));
        }
        Ok(out)
    }

    /// A hash of the data that does not depend on file names or order: the
    /// sorted list of per-sample content hashes, hashed.
    pub fn content_hash(&self) -> Result<String, DataError> {
        let mut per: Vec<[u8; 32]> = Vec::with_capacity(self.sources.len());
        for s in &self.sources {
            let mut h = Sha256::new();
            match s {
                Source::Npz(p) | Source::Npy(p) => {
                    let b = std::fs::read(p).map_err(|source| TensorIoError::Io {
                        path: p.display().to_string(),
                        source,
                    })?;
                    h.update(&b);
                }
                Source::PbDir(d) => {
                    let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                        .map_err(|source| DataError::Dir {
                            path: d.display().to_string(),
                            source,
                        })?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .collect();
                    files.sort();
                    for f in files {
                        if let Some(n) = f.file_name().and_then(|n| n.to_str()) {
                            if n.starts_with("input_") {
                                h.update(n.as_bytes());
                                let b = std::fs::read(&f).map_err(|source| TensorIoError::Io {
                                    path: f.display().to_string(),
                                    source,
                                })?;
                                h.update(&b);
                            }
                        }
                    }
                }
                Source::Random { seed, index } => {
                    h.update(format!("random:{seed}:{index}").as_bytes())
                }
            }
            per.push(h.finalize().into());
        }
        per.sort();
        let mut h = Sha256::new();
        for p in per {
            h.update(p);
        }
        Ok(hex(&h.finalize()))
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn show_dims(d: &[Dim]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| match x {
            Dim::Known(v) => v.to_string(),
            Dim::Symbol(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Deterministic pseudo-random inputs: floats uniform in [-1, 1), integers
/// in [0, 100) (below the table size where the input indexes a Gather),
/// booleans half true. Symbolic dims take `fixed` or 1 (callers refuse
/// symbolic dims past the first before calibrating on random data).
fn random_sample(
    specs: &[InputSpec],
    fixed: &std::collections::BTreeMap<String, Vec<usize>>,
    seed: u64,
    index: usize,
) -> Vec<(String, HostTensor)> {
    let mut state =
        seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    specs
        .iter()
        .map(|s| {
            let shape: Vec<usize> = match fixed.get(&s.name) {
                Some(f) => f.clone(),
                None => s
                    .dims
                    .as_ref()
                    .map(|d| {
                        d.iter()
                            .map(|x| {
                                if let Dim::Known(v) = x {
                                    *v as usize
                                } else {
                                    1
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let n: usize = shape.iter().product();
            let ix = ndarray::IxDyn(&shape);
            use crate::proto::tensor_proto::DataType as D;
            let top = s.index_bound.map_or(100, |b| b.clamp(1, 100));
            let t = match D::try_from(s.dtype).unwrap_or(D::Float) {
                D::Int64 => HostTensor::I64(ndarray::ArrayD::from_shape_fn(ix, |_| {
                    (next() % top) as i64
                })),
                D::Int32 => HostTensor::I32(ndarray::ArrayD::from_shape_fn(ix, |_| {
                    (next() % top) as i32
                })),
                D::Uint8 => {
                    HostTensor::U8(ndarray::ArrayD::from_shape_fn(ix, |_| (next() % 256) as u8))
                }
                D::Int8 => HostTensor::I8(ndarray::ArrayD::from_shape_fn(ix, |_| {
                    (next() % 256) as u8 as i8
                })),
                D::Bool => {
                    HostTensor::Bool(ndarray::ArrayD::from_shape_fn(ix, |_| next() & 1 == 1))
                }
                _ => {
                    let v: Vec<f32> = (0..n)
                        .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                        .collect();
                    HostTensor::F32(
                        ndarray::ArrayD::from_shape_vec(ix, v).expect("invariant: sized"),
                    )
                }
            };
            (s.name.clone(), t)
        })
        .collect()
}
