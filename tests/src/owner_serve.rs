//! `cada-owner serve` (the approval service) as the end-to-end tests start it: stdout read
//! here, since the registration code follows the `ready` line.
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use crate::{bin, Proc};

/// A running `cada-owner serve` (killed on drop), its first registration code and the rest
/// of its stdout.
pub struct OwnerServe {
    /// The process.
    pub proc: Proc,
    /// The registration code it printed after `ready`.
    pub code: String,
    /// The lines it prints after the registration code.
    pub lines: Receiver<String>,
}

/// The registration code in a line of `cada-owner serve`'s stdout, if it names one.
pub fn registration_code(line: &str) -> Option<String> {
    line.split_once("registration code ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// Starts `cada-owner` with `args` (`serve` and its flags), stderr to `log`, and waits up
/// to 30 s for its `ready` line and registration code; panics with the log otherwise.
pub fn start(args: &[&str], log: &Path) -> OwnerServe {
    let logf = std::fs::File::create(log).unwrap();
    let mut child = Command::new(bin("cada-owner"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(logf)
        .spawn()
        .expect("spawn cada-owner serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    let proc = Proc {
        child,
        name: "cada-owner".into(),
    };
    let mut seen = Vec::new();
    let code = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => {
                let code = registration_code(&l);
                seen.push(l);
                if let Some(c) = code {
                    break c;
                }
            }
            Err(e) => panic!(
                "cada-owner serve printed no registration code ({e}): {seen:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
    };
    assert!(seen[0].starts_with("ready"), "{seen:?}");
    OwnerServe {
        proc,
        code,
        lines: rx,
    }
}
