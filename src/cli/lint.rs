//! `onnxq lint`: what a target runtime makes of a quantized model, and
//! `onnxq convert`: a QDQ model rewritten into the target's fast form.

use std::path::PathBuf;

use clap::Args;

use super::args::{check_output, load, parse_input_shapes, save, WriteArgs};
use super::{CliResult, Failure};
use crate::passes::{PassContext, PassManager, Pipeline};
use crate::target::Target;

#[derive(Args, Debug)]
pub struct LintArgs {
    pub model: PathBuf,
    /// The runtime to judge for: ort-cpu, tract or portable.
    #[arg(long, default_value = "ort-cpu")]
    pub target: String,
    /// Exit 1 when there is any warning (groups that are not whole,
    /// overhead Q/DQ pairs, what the target cannot load).
    #[arg(long)]
    pub deny_warnings: bool,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Shapes for MAC counts: NAME=D0,D1,... (symbolic dims count as 1).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
}

fn parse_target(s: &str) -> Result<Target, Failure> {
    Target::parse(s).ok_or_else(|| {
        Failure::bad_input(format!(
            "--target '{s}': expected ort-cpu, tract or portable"
        ))
    })
}

/// Shape inference for MAC counts (symbolic dims at 1 unless given); a
/// model it cannot handle is linted without them.
fn shaped(m: &mut crate::ir::Model, shapes: crate::passes::context::InputShapes) {
    let mut shapes = shapes;
    for p in m.graph.inputs() {
        let name = p.info.name().to_string();
        if m.graph.constant(p.value).is_some() || shapes.contains_key(&name) {
            continue;
        }
        if let Some(dims) = p.info.r#type.as_ref().and_then(crate::ir::types::dims) {
            let fixed: Vec<usize> = dims
                .iter()
                .map(|d| match d {
                    crate::ir::types::Dim::Known(n) if *n > 0 => *n as usize,
                    _ => 1,
                })
                .collect();
            shapes.insert(name, fixed);
        }
    }
    let mut cx = PassContext::with_inputs(crate::passes::context::Inputs {
        input_shapes: shapes,
        ..Default::default()
    });
    if let Ok(p) = Pipeline::parse("shape-inference") {
        let mut pm = PassManager::new(p);
        pm.verify_each = false;
        let _ = pm.run(m, &mut cx);
    }
}

pub fn cmd_lint(a: &LintArgs) -> CliResult {
    let target = parse_target(&a.target)?;
    let mut m = load(&a.model)?;
    shaped(&mut m, parse_input_shapes(&a.input_shapes)?);
    let l = crate::target::lint::lint(&m, target);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&l).expect("invariant: serializable")
        );
    } else {
        println!("{} on {}:", a.model.display(), target);
        print!("{}", l.text());
    }
    if a.deny_warnings && l.warnings() > 0 {
        return Err(Failure::check(format!(
            "{} warning(s) for {} (--deny-warnings)",
            l.warnings(),
            target
        )));
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub write: WriteArgs,
    /// The runtime to convert for (tract: QOperator QLinearConv /
    /// QLinearMatMul where they pay).
    #[arg(long, default_value = "tract")]
    pub target: String,
    /// Time the forms on the first samples of this directory (same
    /// layouts as --calib); without it, on seeded random inputs.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Fix an input's shape: NAME=D0,D1,...
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Lower every group that can be lowered, without timing.
    #[arg(long)]
    pub no_speed_select: bool,
}

/// `onnxq convert`: lowers the whole QDQ groups of an existing quantized
/// model (onnxq's, onnxruntime's, a QAT export) with `lower-qdq`, also
/// without the activation fake-quantization tract would run in float, and
/// writes the fastest form in tract (timed side by side against the QDQ
/// file), or the QDQ file unchanged when neither is faster; it says which.
pub fn cmd_convert(a: &ConvertArgs) -> CliResult {
    use crate::calib::data::DataSet;
    use crate::runtime::bench::{self, Engine, Rounds};
    let target = parse_target(&a.target)?;
    if target != Target::Tract {
        return Err(Failure::bad_input(format!(
            "convert --target {target}: only tract has a QOperator form to convert to; a QDQ model is already {target}'s form (see `onnxq lint --target {target}`)"
        )));
    }
    check_output(&a.model, &a.write)?;
    let orig = load(&a.model)?;
    // The forms tried: the QDQ file as given, its whole groups lowered to
    // QOperator ops, and that with the remaining activation Q/DQ pairs
    // (which tract runs in float) removed.
    let forms = [
        ("QOperator groups for tract", "lower-qdq,dce"),
        (
            "QOperator groups for tract, activation fake-quantization elsewhere removed",
            "lower-qdq,drop-fake-quant,dce",
        ),
    ];
    let mut models = vec![orig.clone()];
    for (_, p) in &forms {
        let mut m = orig.clone();
        let mut cx = PassContext::default();
        PassManager::new(Pipeline::parse(p).map_err(Failure::bad_input)?)
            .run(&mut m, &mut cx)
            .map_err(Failure::bad_input)?;
        for r in cx.remarks() {
            eprintln!("remark: {}: {}: {}", r.pass, r.node, r.message);
        }
        models.push(m);
    }
    let chosen = if a.no_speed_select {
        1
    } else {
        let shapes = parse_input_shapes(&a.input_shapes)?;
        let data = match &a.data {
            Some(dir) => DataSet::open(dir, Some(4)).map_err(Failure::bad_input)?,
            None => DataSet::random(4, crate::passes::profile_hotspots::RANDOM_SEED),
        };
        let specs = crate::calib::data::input_specs(&orig);
        let samples = (0..data.len())
            .map(|i| data.load(i, &specs, &shapes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Failure::bad_input)?;
        let named =
            |e: bench::BenchError| Failure::bad_input(format!("timing in tract failed: {e}"));
        let probe = bench::compare(
            &Engine::Tract,
            &[&orig],
            &samples,
            &Rounds::for_latency(1.0, 1.0, 1),
        )
        .map_err(named)?;
        let rounds = Rounds::for_latency(probe[0].median_ms, 300.0, 5);
        let refs: Vec<&crate::ir::Model> = models.iter().collect();
        let lat = bench::compare(&Engine::Tract, &refs, &samples, &rounds).map_err(named)?;
        for (i, (what, _)) in forms.iter().enumerate() {
            eprintln!(
                "convert: {what}: {:.2}x the QDQ form's speed in tract ({:.3} ms vs {:.3} ms)",
                lat[i + 1].ratio,
                lat[i + 1].median_ms,
                lat[0].median_ms
            );
        }
        // The fastest form, if it beats the QDQ file by more than noise.
        let (best, r) = lat
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, l)| (i, l.ratio))
            .fold((0, 1.0), |acc, x| if x.1 > acc.1 { x } else { acc });
        if best > 0 && r >= 1.02 {
            best
        } else {
            0
        }
    };
    let out = &models[chosen];
    if chosen == 0 {
        eprintln!("convert: no form is faster in tract than the QDQ file; it is written unchanged");
    }
    let what = if chosen == 0 {
        "unchanged"
    } else {
        forms[chosen - 1].0
    };
    save(out, &a.write)?;
    eprintln!(
        "onnxq convert: {} -> {} ({})",
        a.model.display(),
        a.write.output.display(),
        what
    );
    Ok(())
}
