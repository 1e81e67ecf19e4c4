//! `onnxq bench`: the float model and candidates timed side by side in one
//! process, in alternating rounds.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::args::{load, parse_input_shapes};
use super::{CliResult, Failure};
use crate::runtime::bench::{self, Engine, Rounds};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchRuntime {
    Tract,
    /// onnxruntime's CPU provider (needs its library: --ort-lib or
    /// ORT_DYLIB_PATH).
    Ort,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The baseline (usually the float model).
    pub original: PathBuf,
    /// Candidates to time against it.
    #[arg(required = true)]
    pub candidates: Vec<PathBuf>,
    /// Time on the first samples of this directory (same layouts as
    /// --calib); without it, on seeded random inputs.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Samples cycled through in every round.
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Runtime to time in.
    #[arg(long, value_enum, default_value_t = BenchRuntime::Tract)]
    pub runtime: BenchRuntime,
    /// Alternating rounds (ratios are taken per round, then their median).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Runs per model per round; by default sized so that one round of the
    /// baseline takes about half a second.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Intra-op threads for onnxruntime (tract runs on one).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// onnxruntime's shared library (else ORT_DYLIB_PATH).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Fix an input's shape: NAME=D0,D1,... (symbolic dims default to 1
    /// with random inputs).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    model: String,
    #[serde(flatten)]
    latency: bench::Latency,
}

pub fn cmd_bench(a: &BenchArgs) -> CliResult {
    use crate::calib::data::DataSet;
    if a.rounds == 0 || a.samples == 0 || a.iters == Some(0) {
        return Err(Failure::bad_input(
            "--rounds, --samples and --iters must be at least 1",
        ));
    }
    let engine = engine(a)?;
    let mut paths = vec![a.original.clone()];
    paths.extend(a.candidates.iter().cloned());
    let models = paths
        .iter()
        .map(|p| load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let shapes = parse_input_shapes(&a.input_shapes)?;
    let data = match &a.data {
        Some(dir) => DataSet::open(dir, Some(a.samples)).map_err(Failure::bad_input)?,
        None => DataSet::random(a.samples, crate::passes::profile_hotspots::RANDOM_SEED),
    };
    let specs = crate::calib::data::input_specs(&models[0]);
    let samples = (0..data.len())
        .map(|i| data.load(i, &specs, &shapes))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::bad_input)?;
    let refs: Vec<&crate::ir::Model> = models.iter().collect();
    let named = |e: bench::BenchError| Failure::bad_input(format!("timing failed: {e}"));
    let rounds = match a.iters {
        Some(iters) => Rounds {
            rounds: a.rounds,
            iters,
            warmup: None,
        },
        None => {
            let probe = bench::compare(
                &engine,
                &refs[..1],
                &samples,
                &Rounds::for_latency(1.0, 1.0, 1),
            )
            .map_err(named)?;
            Rounds::for_latency(probe[0].median_ms, 500.0, a.rounds)
        }
    };
    let lat = bench::compare(&engine, &refs, &samples, &rounds).map_err(named)?;
    let rows: Vec<Row> = paths
        .iter()
        .zip(lat)
        .map(|(p, latency)| Row {
            model: p.display().to_string(),
            latency,
        })
        .collect();
    if a.json {
        let out = serde_json::json!({
            "runtime": engine.name(),
            "threads": if matches!(a.runtime, BenchRuntime::Tract) { 1 } else { a.threads },
            "data": data.root,
            "rounds": rounds.rounds,
            "iters": rounds.iters,
            "models": rows,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("invariant: serializable")
        );
        return Ok(());
    }
    println!(
        "{} ({} thread(s)), {} round(s) x {} run(s), data: {}",
        engine.name(),
        if matches!(a.runtime, BenchRuntime::Tract) {
            1
        } else {
            a.threads
        },
        rounds.rounds,
        rounds.iters,
        data.root
    );
    println!("  {:>10}  {:>8}  model", "median ms", "ratio");
    for (i, r) in rows.iter().enumerate() {
        let ratio = if i == 0 {
            "base".to_string()
        } else {
            format!("{:.2}x", r.latency.ratio)
        };
        println!("  {:>10.3}  {:>8}  {}", r.latency.median_ms, ratio, r.model);
    }
    println!("  ratio = baseline time / candidate time in the same round (> 1: faster)");
    Ok(())
}

fn engine(a: &BenchArgs) -> Result<Engine, Failure> {
    match a.runtime {
        BenchRuntime::Tract => Ok(Engine::Tract),
        BenchRuntime::Ort => ort_engine(a),
    }
}

#[cfg(feature = "ort")]
fn ort_engine(a: &BenchArgs) -> Result<Engine, Failure> {
    let opts = crate::runtime::ort::OrtOptions {
        library: a.ort_lib.clone(),
        intra_threads: a.threads.max(1),
        ..Default::default()
    };
    crate::runtime::ort::library::load(opts.library.as_deref()).map_err(Failure::bad_input)?;
    Ok(Engine::Ort(opts))
}

#[cfg(not(feature = "ort"))]
fn ort_engine(_: &BenchArgs) -> Result<Engine, Failure> {
    Err(Failure::bad_input(
        "--runtime ort: this onnxq was built without the `ort` feature; rebuild with default features",
    ))
}
