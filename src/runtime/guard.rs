//! The panic boundary around tract.
//!
//! Tract panics on some models it should refuse, and in its own bugs: a
//! Gather index out of range fed at run time ("index out of bounds" in
//! `tract-core/src/ops/array/gather.rs`), a MaxPool with a zero-size
//! kernel (an `unwrap` on `None` in its patch builder, while optimising).
//! Uncaught, such a panic ended onnxq with exit code 101 and a backtrace,
//! and poisoned the runner cache's lock on its way out. Every call into
//! tract that analyses or runs model code goes through [`catch`] instead,
//! which turns the panic into a value the caller makes a
//! [`RuntimeError::TractPanic`](super::RuntimeError::TractPanic) of.
//!
//! * Printing: the panic hook prints nothing for a panic caught here; it
//!   records where it happened for the message instead. The hook installed
//!   before (the binary's broken-pipe hook, or std's) still handles every
//!   other panic: it is wrapped, not replaced, and a flag local to the
//!   thread says whether tract code is running.
//! * The node: [`eval_node`](super::runner::eval_node) notes the plan node
//!   it evaluates ([`enter_node`]), so a run's panic names it.
//! * Caller code called back from inside a tract call (a run's visitor,
//!   see [`outside`]) is not tract's: a panic there is printed as usual
//!   and goes on unwinding, past [`catch`].

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Tract code is running on this thread, under [`catch`].
    static IN_TRACT: Cell<bool> = const { Cell::new(false) };
    /// Where the panic being caught happened, as the hook saw it.
    static LOCATION: Cell<Option<String>> = const { Cell::new(None) };
    /// The plan node being evaluated, by id ([`enter_node`]).
    static NODE: Cell<Option<usize>> = const { Cell::new(None) };
    /// A panic unwound out of [`outside`]: it is the caller's, not tract's.
    static FOREIGN: Cell<bool> = const { Cell::new(false) };
}

/// A panic inside tract, caught.
#[derive(Debug)]
pub(super) struct TractPanic {
    /// The panic message, with where in tract it was raised.
    pub message: String,
    /// The plan node that was being evaluated, if any.
    pub node: Option<usize>,
}

/// Runs `f`, tract code, turning a panic in it into [`TractPanic`].
///
/// Whatever state `f` was building is dropped with the panic, and callers
/// only return an error afterwards: nothing half-built is used again,
/// which is what makes asserting unwind safety sound here. Panics from
/// [`outside`] are resumed, not caught.
pub(super) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, TractPanic> {
    install_hook();
    let outer = !IN_TRACT.replace(true);
    if outer {
        FOREIGN.set(false);
    }
    let node = NODE.replace(None);
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    IN_TRACT.set(!outer);
    let at_node = NODE.replace(node);
    match r {
        Ok(v) => Ok(v),
        Err(payload) if FOREIGN.get() => panic::resume_unwind(payload),
        Err(payload) => Err(TractPanic {
            message: describe(payload.as_ref(), LOCATION.take()),
            node: at_node,
        }),
    }
}

/// Runs `f`, caller code called back from inside [`catch`] (a visitor),
/// as code outside tract: its panics are printed and not caught.
pub(super) fn outside<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if std::thread::panicking() {
                FOREIGN.set(true);
            }
            IN_TRACT.set(self.0);
        }
    }
    let _restore = Restore(IN_TRACT.replace(false));
    f()
}

/// Tract is about to evaluate plan node `id` on this thread.
pub(super) fn enter_node(id: usize) {
    NODE.set(Some(id));
}

/// The node [`enter_node`] named has been evaluated.
pub(super) fn leave_node() {
    NODE.set(None);
}

/// Wraps the panic hook in place (once per process) with one that stays
/// quiet for panics inside [`catch`] and records their location.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            // `try_with`: a panic while the thread's locals are being torn
            // down is not one of ours.
            if IN_TRACT.try_with(Cell::get).unwrap_or(false) {
                let at = info.location().map(|l| {
                    // Registry paths are long; from the crate directory on
                    // (`tract-core-0.23.9/src/…`) says all there is.
                    let file = l.file();
                    let file = file.rfind("/tract-").map_or(file, |i| &file[i + 1..]);
                    format!("{file}:{}:{}", l.line(), l.column())
                });
                let _ = LOCATION.try_with(|c| c.set(at));
                return;
            }
            previous(info)
        }));
    });
}

/// The panic's message, and where it was raised when known.
fn describe(payload: &(dyn Any + Send), location: Option<String>) -> String {
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    match location {
        Some(at) => format!("{msg} (at {at})"),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_value_naming_the_node() {
        let p = catch(|| {
            enter_node(7);
            panic!("index out of bounds");
        })
        .unwrap_err();
        assert!(p.message.starts_with("index out of bounds"), "{p:?}");
        assert_eq!(p.node, Some(7));
        // The thread is outside tract again, and a later call is clean.
        assert!(!IN_TRACT.get());
        assert_eq!(catch(|| 3).unwrap(), 3);
    }

    #[test]
    fn a_panic_in_caller_code_is_not_caught() {
        let r = std::panic::catch_unwind(|| {
            let _ = catch(|| outside(|| panic!("the visitor's own bug")));
        });
        assert!(r.is_err());
        assert!(!IN_TRACT.get());
        assert!(catch(|| panic!("tract")).is_err());
    }
}
