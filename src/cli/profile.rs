//! `onnxq profile`: time every node and list the hotspots.

use std::path::PathBuf;

use clap::Args;

use super::args::{load, parse_input_shapes};
use super::{CliResult, Failure, Outcome};
use crate::passes::{PassContext, PassManager, Pipeline};

#[derive(Args, Debug)]
pub struct ProfileArgs {
    pub model: PathBuf,
    /// Run on the first sample of this directory (same layouts as --calib);
    /// without it, on seeded random inputs.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Timed runs after one warm-up; times are medians.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fix an input's shape: NAME=D0,D1,... (symbolic dims default to 1
    /// with random inputs).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
}

/// `onnxq profile`: `shape-inference` at the sample's shapes, then
/// `profile-hotspots`, printed as a table or JSON.
pub fn cmd_profile(a: &ProfileArgs) -> CliResult {
    let out = profile(a)?;
    out.print(a.json);
    Ok(())
}

/// `onnxq profile` without its printing: the hotspots as JSON and as the
/// table.
pub fn profile(a: &ProfileArgs) -> Result<Outcome, Failure> {
    use crate::calib::data::DataSet;
    use crate::passes::profile_hotspots::RANDOM_SEED;
    if a.runs == 0 {
        return Err(Failure::bad_input("--runs must be at least 1"));
    }
    let mut m = load(&a.model)?;
    let mut shapes = parse_input_shapes(&a.input_shapes)?;
    let data = match &a.data {
        Some(dir) => DataSet::open(dir, Some(1)).map_err(Failure::bad_input)?,
        None => DataSet::random(1, RANDOM_SEED),
    };
    // Fixed shapes from the sample, so shape inference sees every dim.
    let specs = crate::calib::data::input_specs(&m);
    for (name, t) in data.load(0, &specs, &shapes).map_err(Failure::bad_input)? {
        shapes.entry(name).or_insert_with(|| t.shape().to_vec());
    }
    let source = data.root.clone();
    let mut cx = PassContext::with_inputs(crate::passes::context::Inputs {
        input_shapes: shapes,
        calib_data: Some(data),
        ..Default::default()
    });
    let pipeline = Pipeline::parse(&format!(
        "shape-inference,profile-hotspots{{runs={}}}",
        a.runs
    ))
    .map_err(Failure::bad_input)?;
    PassManager::new(pipeline)
        .run(&mut m, &mut cx)
        .map_err(Failure::bad_input)?;
    for r in cx.remarks() {
        eprintln!("remark: {}: {}: {}", r.pass, r.node, r.message);
    }
    let p = cx
        .analyses
        .profile
        .as_ref()
        .expect("invariant: profile-hotspots sets the profile");
    #[derive(serde::Serialize)]
    struct Out<'a> {
        model: String,
        data: String,
        #[serde(flatten)]
        profile: &'a crate::analysis::Profile,
    }
    let json = serde_json::to_value(Out {
        model: a.model.display().to_string(),
        data: source.clone(),
        profile: p,
    })
    .expect("invariant: serializable");
    let text = format!("{}  (data: {source})\n{}", a.model.display(), p.table());
    Ok(Outcome {
        json,
        text,
        failed: None,
    })
}
