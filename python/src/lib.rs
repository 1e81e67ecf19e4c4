//! `onnxq._onnxq`: the native half of the Python package.
//!
//! Two entry points, both taking the command line as a list of strings, so
//! that the Python API and the `onnxq` command parse, check and run exactly
//! what the binary does (same options, same messages, same bytes out):
//!
//! * [`main`] is the `onnxq` command the wheel installs: it prints, exits
//!   with the binary's codes and stops cleanly on Ctrl-C.
//! * [`run`] is what `onnxq.quantize()` and the other functions call: it
//!   prints nothing, returns the command's result as JSON and its text for
//!   people, and reports failures as `(code, message)` for the Python side
//!   to raise as typed exceptions. The GIL is released while Rust works;
//!   progress goes to a Python callable when one is given.

use std::sync::{Arc, Mutex};

use clap::Parser;
use onnxq::cli::{self, Cli};
use pyo3::prelude::*;

/// Rust's allocations go to mimalloc, as in the binary (tract allocates a
/// buffer per intermediate tensor per run; see src/main.rs). Python's own
/// objects keep Python's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One command at a time per process: the progress hook is process-wide,
/// and a command already uses every core.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the command line `argv` (argv[0] is the program name) as the
/// `onnxq` binary does and returns its exit code.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> i32 {
    cli::process::quiet_on_broken_pipe();
    cli::process::stop_cleanly_on_interrupt();
    let parsed = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let _ = e.print();
            return e.exit_code();
        }
    };
    py.detach(|| {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        match cli::run(&parsed) {
            Ok(()) => 0,
            Err(f) => {
                eprintln!("error: {}", f.message);
                f.code
            }
        }
    })
}

/// Runs the command line `argv` without printing. Returns
/// `(code, message, json, text)`: code 0 and an empty message on success,
/// else the exit code the binary would give (1 a check failed, 2 bad input
/// or usage) and its error message; `json` is the command's result
/// (`"null"` when it has none; kept when a check failed) and `text` what
/// the command prints for people. `progress(what, done, total)` is called
/// after every step of the long loops; an exception it raises is raised
/// once the command ends (the command is not stopped midway).
#[pyfunction]
#[pyo3(signature = (argv, progress=None))]
fn run(
    py: Python<'_>,
    argv: Vec<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<(i32, String, String, String)> {
    let parsed = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            return Ok((code, e.render().to_string(), "null".into(), String::new()));
        }
    };
    let raised: Arc<Mutex<Option<PyErr>>> = Arc::new(Mutex::new(None));
    let hook: Option<onnxq::calib::progress::ProgressHook> = progress.map(|cb| {
        let raised = raised.clone();
        Arc::new(move |what: &str, done: u64, total: u64| {
            Python::attach(|py| {
                let mut first = raised.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    if let Err(e) = cb.call1(py, (what, done, total)) {
                        *first = Some(e);
                    }
                }
            })
        }) as onnxq::calib::progress::ProgressHook
    });
    let out = py.detach(|| {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        onnxq::calib::progress::set_hook(hook);
        let out = cli::run_value(&parsed);
        onnxq::calib::progress::set_hook(None);
        out
    });
    if let Some(e) = raised.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(e);
    }
    Ok(match out {
        Ok(o) => {
            let json = o.json.to_string();
            match o.failed {
                None => (0, String::new(), json, o.text),
                Some(f) => (f.code, f.message, json, o.text),
            }
        }
        Err(f) => (f.code, f.message, "null".into(), String::new()),
    })
}

#[pymodule]
fn _onnxq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
