//! Trace join benchmark (not a test): `cada_audit::trace::trace` over 100,000 records in
//! three logs (a gate's 60,000, an STS's 20,000, a verifier's 20,000), 1 % of them the
//! task's (owner → planner → worker, accepted and refused calls, upstream records), the
//! rest other tasks' with the same shape. The figure is the whole command's work: every
//! log's hash chain verified, the task's records joined (and its trace ids' records without
//! a task), the tree built.
//!
//! Run with `scripts/bench-trace.sh` or `cargo bench -p cada-audit --bench trace_join`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::time::Duration;

use cada_audit::{AuditConfig, AuditLog, AuditRecord, Durability, RpcRecord};
use criterion::{criterion_group, criterion_main, Criterion};

const RECORDS: usize = 100_000;

fn record(i: usize) -> AuditRecord {
    let ours = i % 100 == 0;
    let task = if ours {
        "task-bench".to_owned()
    } else {
        format!("task-{}", i % 997)
    };
    let trace = if ours { 0x4bf9 } else { i % 997 };
    let actors: Vec<String> = [
        "did:web:owner.example",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "did:key:z6MkvQnUuQn3s52DbmHY5pLPmsBLg8ZtqYeFPzdVQBQdS5pN",
    ][..2 + i % 2]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let kind = match i % 3 {
        0 => "gate",
        1 => "gate.upstream",
        _ => "token",
    };
    AuditRecord {
        time: format!(
            "2026-01-01T00:{:02}:{:02}.{:06}Z",
            i / 60_000 % 60,
            i / 1000 % 60,
            i
        ),
        kind,
        jti: Some(format!("{i:032x}")),
        jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
        did: actors.last().cloned(),
        platform: Some("nitro".into()),
        measurement_digest: Some("ab".repeat(32)),
        method: Some("POST".into()),
        url: Some("https://mcp.example.com/mcp".into()),
        decision: if i % 7 == 0 { "reject" } else { "accept" },
        reason: (i % 7 == 0).then(|| "contract.not_permitted.tool".into()),
        contract: Some("Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6".into()),
        rpc: vec![RpcRecord {
            method: "tools/call".into(),
            target: Some("search".into()),
            arguments: Some("A".repeat(43)),
        }],
        task: Some(task),
        tp: Some(format!("00-{trace:032x}-{:016x}-01", i + 1)),
        actors,
        dch: if i % 2 == 1 {
            vec!["Zm9vYmFy".repeat(5)]
        } else {
            vec![]
        },
        ..AuditRecord::default()
    }
}

async fn write(dir: &Path, from: usize, n: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let log = AuditLog::open_with(&AuditConfig {
        durability: Durability::None,
        ..AuditConfig::new(dir)
    })
    .unwrap();
    for i in from..from + n {
        log.append(record(i)).await.unwrap();
    }
}

fn logs() -> Vec<PathBuf> {
    let base = std::env::temp_dir().join(format!("cada-trace-bench-{}", std::process::id()));
    let dirs: Vec<PathBuf> = ["gate", "sts", "verify"]
        .iter()
        .map(|n| base.join(n))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        write(&dirs[0], 0, RECORDS * 6 / 10).await;
        write(&dirs[1], RECORDS * 6 / 10, RECORDS * 2 / 10).await;
        write(&dirs[2], RECORDS * 8 / 10, RECORDS * 2 / 10).await;
    });
    dirs
}

fn bench(c: &mut Criterion) {
    let dirs = logs();
    let bytes: u64 = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap().flatten())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let t = cada_audit::trace::trace("task-bench", &dirs, &[]).unwrap();
    assert!(t.intact());
    eprintln!(
        "{RECORDS} records in 3 logs ({:.1} MB): the task has {} records, tree of {} principal(s)",
        bytes as f64 / 1e6,
        t.records(),
        t.tree.len()
    );
    let mut g = c.benchmark_group("trace_join");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("100k_records_3_logs", |b| {
        b.iter(|| cada_audit::trace::trace("task-bench", &dirs, &[]).unwrap());
    });
    g.bench_function("verify_chains_only", |b| {
        b.iter(|| {
            for d in &dirs {
                cada_audit::verify_dir(d).unwrap();
            }
        });
    });
    g.finish();
    let _ = std::fs::remove_dir_all(dirs[0].parent().unwrap());
}

criterion_group!(benches, bench);
criterion_main!(benches);
