//! The `onnxq` binary: parses arguments and maps outcomes to exit codes
//! (0 ok, 1 a check failed, 2 bad input or usage, 130 interrupted).

use clap::Parser;
use onnxq::cli::{self, Cli};

/// mimalloc instead of the system allocator. Tract allocates a fresh
/// buffer for every intermediate tensor of every run; glibc serves large
/// ones with a new `mmap` each time and returns them on free, so every run
/// paid a page fault per 4 KiB of activations (a third of the CPU time
/// quantizing MiniLM). mimalloc keeps freed pages for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory in the process for reuse: mimalloc otherwise returns
/// it to the OS 10 ms after a free, and tract's next run faults it back in
/// page by page (ppocr_det quantized in 1.88 s instead of 2.21 s with this).
/// The process is short-lived, and peak RSS does not change: the same pages
/// are reused. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn keep_freed_memory() {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike;
    /// libmimalloc-sys leaves it out of its constants).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain setter of a process-wide option; mimalloc asks
        // that it not race with other option calls, and no other thread
        // exists yet.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        };
    }
}

fn main() {
    keep_freed_memory();
    cli::process::quiet_on_broken_pipe();
    cli::process::stop_cleanly_on_interrupt();
    if let Err(f) = cli::run(&Cli::parse()) {
        eprintln!("error: {}", f.message);
        std::process::exit(f.code);
    }
}
