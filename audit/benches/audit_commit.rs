//! Audit group-commit benchmark (not a test): the latency of `AuditLog::append` alone — no
//! HTTP, no verification — for each durability mode, closed loop (saturation) and paced.
//!
//! Run with `cargo bench -p cada-audit --bench audit_commit -- [DURABILITIES] [RATES] [SECONDS]`
//! (defaults `fsync,batch-ms:5,none`, `2000,8000`, 5). The log goes to `$TMPDIR`.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cada_audit::{AuditConfig, AuditLog, AuditRecord, Durability};

const TASKS: usize = 64;

fn record(i: usize) -> AuditRecord {
    AuditRecord {
        time: "2026-01-01T00:00:00Z".into(),
        kind: "pop",
        jti: Some(format!("{i:032x}")),
        jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".into()),
        did: Some("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK".into()),
        platform: Some("nitro".into()),
        measurement_digest: Some("ab".repeat(32)),
        method: Some("POST".into()),
        url: Some("https://api.example.com/v1/orders".into()),
        decision: "accept",
        reason: None,
        contract: None,
        ..AuditRecord::default()
    }
}

/// Runs TASKS appenders for `secs` (after 1 s of warm-up); returns (rate, p50, p99, max) in ms.
async fn run(log: &AuditLog, pace: Option<u32>, secs: u64) -> (f64, f64, f64, f64) {
    let counter = Arc::new(AtomicUsize::new(0));
    let warm = Instant::now() + Duration::from_secs(1);
    let until = warm + Duration::from_secs(secs);
    let interval = pace.map(|r| Duration::from_secs_f64(TASKS as f64 / f64::from(r)));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = log.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let first = Instant::now()
                    + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(t as f64 / TASKS as f64));
                let mut k = 0u32;
                loop {
                    let start = match interval {
                        Some(iv) => {
                            let due = first + iv * k;
                            k += 1;
                            if Instant::now() < due {
                                tokio::time::sleep_until(due.into()).await;
                            }
                            due // latency counts from the due time (no coordinated omission)
                        }
                        None => Instant::now(),
                    };
                    if start >= until {
                        break;
                    }
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    log.append(record(n)).await.expect("append");
                    if start >= warm {
                        lat.push(start.elapsed().as_micros() as u32);
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    // Appends due before the end finish after it: the window ends with the last one, so a
    // paced run the log cannot keep up with reports what it achieved, not its pace.
    let window = warm.elapsed().as_secs_f64().max(secs as f64);
    all.sort_unstable();
    let pct = |p: f64| {
        let i = (all.len().saturating_sub(1) as f64 * p).round() as usize;
        all.get(i).map_or(f64::NAN, |us| f64::from(*us) / 1000.0)
    };
    (all.len() as f64 / window, pct(0.5), pct(0.99), pct(1.0))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let modes: Vec<Durability> = args
        .first()
        .map_or("fsync,batch-ms:5,none", String::as_str)
        .split(',')
        .map(|m| m.parse().expect("DURABILITIES"))
        .collect();
    let rates: Vec<u32> = args
        .get(1)
        .map_or("2000,8000", String::as_str)
        .split(',')
        .map(|r| r.parse().expect("RATES"))
        .collect();
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for mode in modes {
        let dir = std::env::temp_dir().join(format!("cada-audit-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = AuditLog::open_with(&AuditConfig {
            durability: mode,
            ..AuditConfig::new(&dir)
        })
        .expect("open");
        let runs = std::iter::once(None).chain(rates.iter().map(|r| Some(*r)));
        for pace in runs {
            let (rate, p50, p99, max) = rt.block_on(run(&log, pace, secs));
            let what = pace.map_or("closed loop (saturation)".into(), |r| {
                format!("paced at {r}/s")
            });
            println!(
                "audit append, {mode}, {TASKS} tasks, {what}: {rate:.0}/s, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms"
            );
        }
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
