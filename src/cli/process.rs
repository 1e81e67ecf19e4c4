//! What a process running onnxq as its command line sets up before the
//! command (the `onnxq` binary and the Python package's `onnxq` command):
//! a quiet exit when the reader of stdout goes, and a clean stop on
//! SIGINT/SIGTERM. A host calling onnxq as a library sets neither.

/// Exit status when stdout is a pipe whose reader has gone
/// (`onnxq inspect m.onnx | head`): 128 + SIGPIPE, what a shell reports for
/// a tool that signal ended. Rust ignores SIGPIPE and `println!` panics on
/// the write error instead; this hook turns exactly that panic into a
/// quiet exit.
const BROKEN_PIPE_EXIT: i32 = 141;

pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // std's wording for a failed `print!`: "failed printing to stdout:
        // Broken pipe (os error 32)".
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default(info)
    }));
}

/// Exit status after SIGINT or SIGTERM: 130, what a shell reports for
/// Ctrl-C, for both (the brief a build pipeline checks).
const INTERRUPTED_EXIT: i32 = 130;

/// On SIGINT/SIGTERM: stop at once, remove the temporary files being
/// written (outputs are only ever renamed into place whole), say so, and
/// exit 130. A watcher thread takes the signal, so nothing runs in signal
/// context.
pub fn stop_cleanly_on_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
            eprintln!("onnxq: interrupted ({name}): stopped; no output was left half-written");
            crate::onnx::export::abandon_and_exit(INTERRUPTED_EXIT);
        }
    });
}
