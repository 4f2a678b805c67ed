//! `cada-verify audit verify` as an operator uses it: every complete line is checked, a
//! partial last line is reported on its own and never hides an edit before it.
use std::path::{Path, PathBuf};
use std::process::Command;

use cada_audit::{AuditLog, AuditRecord};

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cada-verify"))
        .args(args)
        .output()
        .expect("run cada-verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cada-audit-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn write_log(dir: &Path, n: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = AuditLog::open(dir, 1 << 20).unwrap();
        for i in 0..n {
            log.append(AuditRecord {
                time: format!("2026-01-01T00:00:{i:02}Z"),
                kind: "pop",
                jti: Some(format!("jti-{i}")),
                decision: "accept",
                ..AuditRecord::default()
            })
            .await
            .unwrap();
        }
    });
}

#[test]
fn an_edit_is_reported_even_when_a_partial_line_follows() {
    let d = tmp("edit-torn");
    write_log(&d, 5);
    let dir = d.to_str().unwrap();
    let (code, out) = run(&["audit", "verify", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK 6 lines"), "{out}"); // the checkpoint and 5 records
    let file = d.join("audit-000001.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    // Record 2 (line 3, after the checkpoint) edited, then a partial line appended.
    let edited = text.replacen("\"jti-1\",", "\"jti-1\" ,", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, format!("{edited}{{\"seq\":6,\"ti")).unwrap();
    let (code, out) = run(&["audit", "verify", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN"), "{out}");
    assert!(out.contains("audit-000001.jsonl:4"), "{out}");
    // Without the edit, the partial line alone is reported for what it is, after the 6 lines.
    std::fs::write(&file, format!("{text}{{\"seq\":6,\"ti")).unwrap();
    let (code, out) = run(&["audit", "verify", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK 6 complete lines"), "{out}");
    assert!(out.contains("partial last line: 12 bytes"), "{out}");
    let (code, out) = run(&["audit", "verify", "--strict", dir]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INCOMPLETE 6 complete lines"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}
