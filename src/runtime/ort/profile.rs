//! Per-node times from ORT's own profiler ([`OrtSession::profile`]), mapped
//! back to the ONNX graph ([`super::names`]).
//!
//! ORT's profiler (session option `enable_profiling`) writes a Chrome-trace
//! JSON array when profiling ends. Per run there is one `model_run` event
//! (`cat: "Session"`), and per executed node a `cat: "Node"` event named
//! `<node name>_kernel_time` with `dur` in µs and `args.op_name`,
//! `args.provider` (plus `_fence_before`/`_fence_after` events, ignored).
//! Each kernel event belongs to the `model_run` whose span holds it; the
//! first run is the warm-up and is left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use serde::Deserialize;

use super::names::{self, NodeMap};
use super::session::{commit, run_on};
use super::{OrtError, OrtSession};
use crate::proto::ModelProto;
use crate::tensorio::HostTensor;

/// One ORT node, timed.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtNodeTime {
    /// ORT's node name (in the optimized graph).
    pub ort_node: String,
    /// The kernel's op (`args.op_name`): `QLinearConv`, `Conv`, …
    pub op: String,
    /// Its domain in the optimized graph (`com.microsoft`, …); empty for
    /// ONNX ops or when the node is missing from the saved graph.
    pub domain: String,
    /// `CPUExecutionProvider`.
    pub provider: String,
    /// The ONNX node whose name it carries, if any (see [`super::names`]).
    pub carries: Option<String>,
    /// Every ONNX node it stands for, in graph order (carried and absorbed
    /// DQ/Q, folded activations, …); empty for nodes ORT inserted.
    pub onnx_nodes: Vec<String>,
    /// Median over the timed runs of its kernel time per run (summed when
    /// it runs more than once in a run, inside a loop).
    pub median: Duration,
}

/// What [`OrtSession::profile`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct OrtProfile {
    /// Timed runs (after one warm-up run).
    pub runs: usize,
    /// Median `model_run` time, profiler overhead included.
    pub total: Duration,
    /// ORT's nodes in execution order (of the first timed run).
    pub nodes: Vec<OrtNodeTime>,
    /// The whole optimized graph mapped back (also the nodes that never
    /// produced a kernel event).
    pub map: NodeMap,
}

impl OrtProfile {
    /// Sum of the per-node medians.
    pub fn node_sum(&self) -> Duration {
        self.nodes.iter().map(|n| n.median).sum()
    }

    /// Sum of the medians of the ORT nodes standing for ONNX node `label`
    /// (an ORT node standing for several ONNX nodes counts once for each).
    pub fn time_of(&self, label: &str) -> Duration {
        self.nodes
            .iter()
            .filter(|n| n.onnx_nodes.iter().any(|o| o == label))
            .map(|n| n.median)
            .sum()
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    cat: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    dur: u64,
    #[serde(default)]
    args: HashMap<String, serde_json::Value>,
}

/// A directory under the system's temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "onnxq-ort-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OrtSession {
    /// Times every ORT node: loads the model again with ORT's profiler on
    /// (and the optimized graph saved, for the mapping), runs it once
    /// untimed and `runs` (at least 1) times timed, and reads the profile.
    pub fn profile(
        &self,
        inputs: &[(String, HostTensor)],
        runs: usize,
    ) -> Result<OrtProfile, OrtError> {
        let runs = runs.max(1);
        let scratch = Scratch::new().map_err(|e| OrtError::Profile {
            model: self.model_name().to_string(),
            detail: format!("cannot create a scratch directory: {e}"),
        })?;
        let optimized = scratch.0.join("optimized.onnx");
        let prefix = scratch.0.join("profile");
        let mut session = commit(
            &self.bytes,
            &self.opts,
            self.model_name(),
            Some((&prefix, &optimized)),
        )?;
        let values = self.prepare(inputs)?;
        for _ in 0..=runs {
            run_on(&mut session, &values, self.model_name(), false)?;
        }
        let written = session.end_profiling().map_err(|e| OrtError::Profile {
            model: self.model_name().to_string(),
            detail: format!("ending the profile failed: {e}"),
        })?;
        drop(session);
        let map = self.optimized_map(&optimized)?;
        let json = read(Path::new(&written), self.model_name())?;
        parse(&json, runs, &map).map_err(|detail| OrtError::Profile {
            model: self.model_name().to_string(),
            detail: format!("{written}: {detail}"),
        })
    }

    /// Loads the model with its optimized graph saved and maps that graph
    /// back to the ONNX nodes (see [`super::names`]).
    pub fn node_map(&self) -> Result<NodeMap, OrtError> {
        let scratch = Scratch::new().map_err(|e| OrtError::Profile {
            model: self.model_name().to_string(),
            detail: format!("cannot create a scratch directory: {e}"),
        })?;
        let mut opts = self.opts.clone();
        let optimized = scratch.0.join("optimized.onnx");
        opts.save_optimized = Some(optimized.clone());
        drop(commit(&self.bytes, &opts, self.model_name(), None)?);
        self.optimized_map(&optimized)
    }

    fn optimized_map(&self, path: &Path) -> Result<NodeMap, OrtError> {
        let bytes = read(path, self.model_name())?;
        let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| OrtError::Profile {
            model: self.model_name().to_string(),
            detail: format!(
                "{}: the optimized graph ORT saved does not decode: {e}",
                path.display()
            ),
        })?;
        let g = proto.graph.unwrap_or_default();
        Ok(names::map_nodes(&self.labels, &g))
    }
}

fn read(path: &Path, model: &str) -> Result<Vec<u8>, OrtError> {
    std::fs::read(path).map_err(|e| OrtError::Profile {
        model: model.to_string(),
        detail: format!("cannot read {}: {e}", path.display()),
    })
}

fn median(v: &mut [u64]) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let m = v.len() / 2;
    let us = if v.len() % 2 == 1 {
        v[m] as f64
    } else {
        (v[m - 1] + v[m]) as f64 / 2.0
    };
    Duration::from_secs_f64(us / 1e6)
}

/// Reads ORT's profile: the last `runs` `model_run` spans, the kernel
/// events inside each, per node the median over runs.
fn parse(json: &[u8], runs: usize, map: &NodeMap) -> Result<OrtProfile, String> {
    let events: Vec<Event> =
        serde_json::from_slice(json).map_err(|e| format!("not an ORT profile: {e}"))?;
    let mut model_runs: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e.cat == "Session" && e.name == "model_run")
        .map(|e| (e.ts, e.dur))
        .collect();
    model_runs.sort_unstable();
    if model_runs.len() < runs {
        return Err(format!(
            "{} model_run events, expected at least {runs}",
            model_runs.len()
        ));
    }
    let timed = &model_runs[model_runs.len() - runs..];
    let mut order: Vec<String> = Vec::new();
    let mut info: HashMap<String, (String, String)> = HashMap::new();
    // Per node, per timed run: summed kernel µs.
    let mut per: HashMap<String, Vec<u64>> = HashMap::new();
    let mut kernels: Vec<&Event> = events
        .iter()
        .filter(|e| e.cat == "Node" && e.name.ends_with("_kernel_time"))
        .collect();
    kernels.sort_by_key(|e| e.ts);
    for e in kernels {
        let Some(r) = timed
            .iter()
            .position(|&(ts, dur)| e.ts >= ts && e.ts <= ts + dur)
        else {
            continue;
        };
        let name = e.name.trim_end_matches("_kernel_time").to_string();
        let arg = |k: &str| {
            e.args
                .get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let slot = per.entry(name.clone()).or_insert_with(|| {
            order.push(name.clone());
            info.insert(name.clone(), (arg("op_name"), arg("provider")));
            vec![0; runs]
        });
        slot[r] += e.dur;
    }
    let origin = names::by_name(map);
    let nodes = order
        .into_iter()
        .map(|name| {
            let (op, provider) = info.remove(&name).unwrap_or_default();
            let o = origin.get(name.as_str());
            let mut times = per.remove(&name).unwrap_or_default();
            OrtNodeTime {
                domain: o.map(|o| o.domain.clone()).unwrap_or_default(),
                carries: o.and_then(|o| o.carries.clone()),
                onnx_nodes: o.map(|o| o.onnx_nodes.clone()).unwrap_or_default(),
                median: median(&mut times),
                ort_node: name,
                op,
                provider,
            }
        })
        .collect();
    let mut totals: Vec<u64> = timed.iter().map(|&(_, d)| d).collect();
    Ok(OrtProfile {
        runs,
        total: median(&mut totals),
        nodes,
        map: map.clone(),
    })
}
