//! The `onnxq` binary: parses arguments and maps outcomes to exit codes
//! (0 ok, 1 a check failed, 2 bad input or usage).

use clap::Parser;
use onnxq::cli::{self, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(a) => cli::cmd_inspect(a),
        Command::Opt(a) => cli::cmd_opt(a),
        Command::Passes => cli::cmd_passes(),
        Command::Run(a) => cli::cmd_run(a),
        Command::Quantize(a) => cli::cmd_quantize(a),
        Command::Calibrate(a) => cli::cmd_calibrate(a),
        Command::Validate(a) => cli::cmd_validate(a),
        Command::Profile(a) => cli::cmd_profile(a),
    };
    if let Err(f) = result {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
