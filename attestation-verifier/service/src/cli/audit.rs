//! `cada-verify audit verify` and `cada-verify audit trace`.
use std::path::PathBuf;

use cada_audit::verify_dir;
use clap::Args;

use super::UsageError;

/// Arguments of `cada-verify audit verify`.
#[derive(Args)]
pub struct AuditVerifyArgs {
    /// The audit directory.
    pub dir: PathBuf,
    /// Also fail (exit 1) on a partial last line. Without it a partial last line — a write in
    /// progress, or one cut short by a crash, so never acknowledged — is reported and the
    /// check passes if every complete line before it holds.
    #[arg(long)]
    pub strict: bool,
}

/// Checks every complete line of the chain; exit 0 intact, 1 broken.
pub fn audit_verify(a: AuditVerifyArgs) -> Result<bool, UsageError> {
    let c = verify_dir(&a.dir).map_err(|e| UsageError(e.to_string()))?;
    if let Some(b) = &c.broken {
        println!("BROKEN after {} good lines: {b}", c.lines);
        return Ok(false);
    }
    if let Some(a) = &c.anchor {
        println!(
            "anchored at {} (its checkpoint names seq {} as the line before it): the {} \
             file(s) before it were removed (retention keeps the newest files)",
            a.file, a.seq, a.files_before
        );
    }
    if let Some((seq, hash)) = &c.head {
        // Lines cut from the newest file's end show only against a copy of the head.
        println!("head: seq {seq} sha256 {hash}");
    }
    match &c.partial {
        None => {
            println!("OK {} lines, chain intact", c.lines);
            Ok(true)
        }
        Some(p) => {
            println!(
                "{} {} complete lines, chain intact; partial last line: {} bytes at {} offset {} \
                 (a write in progress or cut short by a crash: never acknowledged; \
                 `cada-verify serve` cuts it when it starts)",
                if a.strict { "INCOMPLETE" } else { "OK" },
                c.lines,
                p.len,
                p.file,
                p.offset
            );
            Ok(!a.strict)
        }
    }
}

/// Arguments of `cada-verify audit trace`.
#[derive(Args)]
pub struct AuditTraceArgs {
    /// The task identifier (`cada.task` of the proofs, `task` of the records).
    pub task: String,
    /// An audit directory (repeatable): a gate's, an STS's, a `cada-verify serve`'s.
    #[arg(long = "log", value_name = "DIR", required = true)]
    pub logs: Vec<PathBuf>,
    /// The JSON of `cada-parent contract list` of an enclave (repeatable): its delegation events
    /// of the task are shown at their delegatee.
    #[arg(long = "enclave", value_name = "FILE")]
    pub enclaves: Vec<PathBuf>,
    /// Print the joined trace as JSON instead of the tree.
    #[arg(long)]
    pub json: bool,
}

/// Joins and prints the chain of custody of a task; exit 0 when every log's chain holds,
/// 1 when one is broken (the trace is printed all the same, naming the break).
pub fn audit_trace(a: &AuditTraceArgs) -> Result<bool, UsageError> {
    cada_protocol::trace::check_task(&a.task).map_err(|e| UsageError(e.to_string()))?;
    let t = cada_audit::trace::trace(&a.task, &a.logs, &a.enclaves)
        .map_err(|e| UsageError(e.to_string()))?;
    if a.json {
        let text = serde_json::to_string_pretty(&t).map_err(|e| UsageError(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", cada_audit::trace::render(&t));
    }
    Ok(t.intact())
}
