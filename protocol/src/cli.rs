//! What every CADA command-line binary does alike at its start — the one piece of process
//! behaviour here, kept in this crate because every binary (`cada-verify`, `cada-owner`,
//! `cada-parent`, `cada-eif`, `cada-sts`, `cada-gate`) links it and nothing heavier.
//!
//! **A closed stdout.** Rust ignores `SIGPIPE`, so a write to a pipe whose reader went away
//! (`cada-verify … | head -1`) fails with `EPIPE`, and `println!` then panics with a
//! backtrace hint. [`exit_quietly_on_broken_pipe`] makes such a failed print end the
//! process at once and silently, with status [`BROKEN_PIPE_STATUS`] — what a shell reports
//! for a C program that `SIGPIPE` ended. Not 0: with `set -o pipefail`, a cut-off
//! `cada-verify` must not read as "valid"; and not 1 or 2, which say "rejected" and
//! "error". Any other panic keeps the default report.
use std::any::Any;

/// The exit status of a binary whose reader closed its stdout (or stderr): 128 + `SIGPIPE`.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// Installs a panic hook (chained to the one in place) under which a print to stdout or
/// stderr that fails because the pipe is closed exits the process quietly with
/// [`BROKEN_PIPE_STATUS`]. Call it first thing in `main`.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_pipe_panic(info.payload()) {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        previous(info);
    }));
}

/// Whether writing failed because the reader closed the pipe.
pub fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// For a binary that writes with `write!` and handles the error: exits quietly with
/// [`BROKEN_PIPE_STATUS`] when `e` is a closed pipe, and returns otherwise.
pub fn exit_if_broken_pipe(e: &std::io::Error) {
    if is_broken_pipe(e) {
        std::process::exit(BROKEN_PIPE_STATUS);
    }
}

/// Whether a panic is the standard library's report of a print to a closed pipe:
/// `failed printing to stdout: Broken pipe (os error 32)` (or stderr). `EPIPE` is 32 on
/// Linux, macOS and the BSDs; the text is matched too, in any case.
fn is_broken_pipe_panic(payload: &(dyn Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied());
    message.is_some_and(|m| {
        let printing = m.starts_with("failed printing to stdout")
            || m.starts_with("failed printing to stderr");
        printing && (m.ends_with("(os error 32)") || m.to_ascii_lowercase().contains("broken pipe"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_to_a_closed_pipe_counts() {
        let yes = |m: &str| is_broken_pipe_panic(&m.to_owned());
        assert!(yes("failed printing to stdout: Broken pipe (os error 32)"));
        assert!(yes("failed printing to stderr: Broken pipe (os error 32)"));
        assert!(is_broken_pipe_panic(
            &"failed printing to stdout: broken pipe"
        ));
        assert!(!yes(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!yes("index out of bounds: Broken pipe (os error 32)"));
        assert!(!is_broken_pipe_panic(&42_u8));
        assert!(is_broken_pipe(&std::io::Error::from(
            std::io::ErrorKind::BrokenPipe
        )));
        assert!(!is_broken_pipe(&std::io::Error::from(
            std::io::ErrorKind::WriteZero
        )));
    }
}
