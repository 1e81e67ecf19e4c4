//! Exit codes shared by the CLI and the library's callers.

/// The process exit code for an outcome: 0 ok, 1 a check failed, 2 bad input
/// or usage.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    CheckFailed = 1,
    BadInput = 2,
}
