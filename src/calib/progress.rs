//! Progress of the long loops (calibration, sensitivity, weight rounding):
//! a bar on stderr for people at a terminal, or a process-wide hook for a
//! host that reports progress its own way (the Python package's callback).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Told `(what, done, total)` after every step of a loop; `done == total`
/// once the loop ends. Called from worker threads.
pub type ProgressHook = Arc<dyn Fn(&str, u64, u64) + Send + Sync>;

static HOOK: RwLock<Option<ProgressHook>> = RwLock::new(None);

/// Sends every loop's progress to `hook` instead of a terminal bar (`None`
/// puts the bars back). Process-wide: a host running two quantizations at
/// once sees both through it.
pub fn set_hook(hook: Option<ProgressHook>) {
    *HOOK.write().unwrap_or_else(|e| e.into_inner()) = hook;
}

fn hook() -> Option<ProgressHook> {
    HOOK.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// One loop's progress: a terminal bar, the hook, or nothing.
pub struct Progress {
    bar: indicatif::ProgressBar,
    hook: Option<ProgressHook>,
    what: String,
    total: u64,
    done: AtomicU64,
}

impl Progress {
    /// `wanted`: the caller's choice (`--quiet` says no). The hook, when
    /// one is set, is told whatever `wanted` says; the bar shows only on a
    /// terminal.
    pub fn new(total: u64, what: &str, wanted: bool) -> Progress {
        let hook = hook();
        let bar = if !wanted || hook.is_some() || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
                )
                .expect("invariant: valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what.to_string());
            bar
        };
        Progress {
            bar,
            hook,
            what: what.to_string(),
            total,
            done: AtomicU64::new(0),
        }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(h) = &self.hook {
            h(&self.what, done, self.total);
        }
    }

    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}
