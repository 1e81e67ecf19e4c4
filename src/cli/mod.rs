//! The `onnxq` command line, laid out as cargo lays out its subcommands:
//! this file holds the parser, the command list, the failure every command
//! returns and the dispatch; `args.rs` the argument groups several commands
//! share and the helpers that load and write models for them; and each
//! subcommand has a file of its own with its arguments and its `cmd_*`
//! function. Everything public is re-exported here, so `onnxq::cli::X`
//! names it wherever it lives.

use clap::{Parser, Subcommand};

mod args;
mod bench;
mod calibrate;
mod inspect;
mod lint;
mod opt;
mod passes;
pub mod process;
mod profile;
mod quantize;
mod run;
mod validate;

pub use args::{check_output, load, parse_input_shapes, save, CalibArgs, WriteArgs};
pub use bench::{cmd_bench, BenchArgs, BenchRuntime};
pub use calibrate::{calibrate, cmd_calibrate, CalibrateArgs};
pub use inspect::{cmd_inspect, inspect, InspectArgs, Inspection, PortInfo};
pub use lint::{cmd_convert, cmd_lint, ConvertArgs, LintArgs};
pub use opt::{cmd_opt, OptArgs};
pub use passes::cmd_passes;
pub use profile::{cmd_profile, profile, ProfileArgs};
pub use quantize::{cmd_quantize, quantize, QuantizeArgs};
pub use run::{cmd_run, RunArgs};
pub use validate::{cmd_validate, validation, ValidateArgs};

/// A command failed: the message and the exit code (1: a check failed,
/// 2: bad input or usage).
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn bad_input(m: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            message: m.to_string(),
        }
    }
    pub fn check(m: impl std::fmt::Display) -> Self {
        Failure {
            code: 1,
            message: m.to_string(),
        }
    }
}

pub type CliResult = Result<(), Failure>;

/// A command's result for a caller in the same process (the Python
/// package): what `--json` prints, what the command prints for people, and
/// the checks it failed (exit 1), if any.
#[derive(Debug)]
pub struct Outcome {
    pub json: serde_json::Value,
    pub text: String,
    pub failed: Option<Failure>,
}

impl Outcome {
    /// What the command prints: the JSON (`--json`) or the text.
    pub fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.json).expect("invariant: serializable")
            );
        } else {
            print!("{}", self.text);
        }
    }
}

/// Runs the parsed command as [`run`] does, but returns what the commands
/// that produce a result would print (quantize's report, inspect, validate,
/// profile, calibrate) instead of printing it. The others run as on the
/// command line and return `null`.
pub fn run_value(cli: &Cli) -> Result<Outcome, Failure> {
    let plain = |r: CliResult| {
        r.map(|()| Outcome {
            json: serde_json::Value::Null,
            text: String::new(),
            failed: None,
        })
    };
    match &cli.command {
        Command::Quantize(a) => {
            let report = quantize(a)?;
            Ok(Outcome {
                json: serde_json::to_value(&report).expect("invariant: report serializes"),
                text: report.summary(),
                failed: None,
            })
        }
        Command::Inspect(a) if !a.ir => {
            let m = load(&a.model)?;
            Ok(Outcome {
                json: serde_json::to_value(inspect(&a.model, &m)).expect("invariant: serializable"),
                text: String::new(),
                failed: None,
            })
        }
        Command::Inspect(a) => {
            let m = load(&a.model)?;
            let opts = crate::ir::text::PrintOptions {
                elide_above: a.elide_above,
            };
            Ok(Outcome {
                json: serde_json::Value::Null,
                text: crate::ir::text::print_model_with(&m, &opts),
                failed: None,
            })
        }
        Command::Validate(a) => validation(a),
        Command::Profile(a) => profile(a),
        Command::Calibrate(a) => calibrate(a),
        _ => plain(run(cli)),
    }
}

/// Runs the parsed command; the binary maps a `Failure` to its exit code.
pub fn run(cli: &Cli) -> CliResult {
    match &cli.command {
        Command::Inspect(a) => cmd_inspect(a),
        Command::Opt(a) => cmd_opt(a),
        Command::Passes => cmd_passes(),
        Command::Run(a) => cmd_run(a),
        Command::Quantize(a) => cmd_quantize(a),
        Command::Calibrate(a) => cmd_calibrate(a),
        Command::Validate(a) => cmd_validate(a),
        Command::Profile(a) => cmd_profile(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Lint(a) => cmd_lint(a),
        Command::Convert(a) => cmd_convert(a),
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "onnxq",
    version,
    about = "Compile ONNX models into quantized ONNX models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Summarise a model: versions, op histogram, parameters, inputs and outputs.
    Inspect(InspectArgs),
    /// Run a pass pipeline over a model and write the result.
    Opt(OptArgs),
    /// List the available passes.
    Passes,
    /// Run a model on inputs from .npy/.npz files and print or save the outputs.
    Run(RunArgs),
    /// Quantize a float model to int8 (static, calibrated), validate and report.
    Quantize(QuantizeArgs),
    /// Run calibration only and save the statistics (histograms) for reuse.
    Calibrate(CalibrateArgs),
    /// Compare a quantized model with the original on data; exit 1 below thresholds.
    Validate(ValidateArgs),
    /// Time every node (tract, median of N runs) and list the hotspots with MACs.
    Profile(ProfileArgs),
    /// Time the float model and candidates side by side (alternating rounds) in tract or onnxruntime.
    Bench(BenchArgs),
    /// Per quantized group: does the target run it as an integer kernel, which Q/DQ pairs are overhead, what it cannot load.
    Lint(LintArgs),
    /// Rewrite an existing QDQ model (onnxq's, onnxruntime's, a QAT export) into the target's fast form.
    Convert(ConvertArgs),
}
