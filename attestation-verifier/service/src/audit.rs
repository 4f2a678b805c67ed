//! Append-only, hash-chained audit log of every decision.
//!
//! Each line is a JSON object with `seq` (1, 2, …) and `prev` (hex SHA-256 of the previous
//! line's bytes; 64 zeros for the first). Files `audit-NNNNNN.jsonl` rotate by size; the chain
//! continues across files. A writer thread commits in groups: it appends every record that is
//! waiting, calls fsync once, and only then releases the answers — so every answered request
//! is on disk. On start, a torn last line (a crash mid-write, never acknowledged) is cut off.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use aws_lc_rs::digest::{self, SHA256};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::ServiceError;

/// One decision.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    /// RFC 3339 time of the decision.
    pub time: String,
    /// Endpoint (`pop` or `evidence`).
    pub kind: &'static str,
    /// Proof id.
    pub jti: Option<String>,
    /// Key thumbprint.
    pub jkt: Option<String>,
    /// did:key.
    pub did: Option<String>,
    /// Platform.
    pub platform: Option<String>,
    /// SHA-256 (hex) over the sorted measurements.
    pub measurement_digest: Option<String>,
    /// Request method.
    pub method: Option<String>,
    /// Request URL.
    pub url: Option<String>,
    /// `accept` or `reject`.
    pub decision: &'static str,
    /// Rule code of a rejection.
    pub reason: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: String,
}

type Job = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// Handle to the writer thread.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::SyncSender<Job>,
}

struct Writer {
    dir: PathBuf,
    file: File,
    file_no: u32,
    size: u64,
    max_size: u64,
    seq: u64,
    prev: [u8; 32],
}

fn file_name(n: u32) -> String {
    format!("audit-{n:06}.jsonl")
}

/// Audit files of `dir` in order.
pub fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, ServiceError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir)
        .map_err(|e| ServiceError::Audit(format!("{}: {e}", dir.display())))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".jsonl"))
        {
            if let Ok(n) = n.parse::<u32>() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&SHA256, b).as_ref());
    out
}

impl Writer {
    fn open(dir: &Path, max_size: u64) -> Result<Writer, ServiceError> {
        let err = |e: std::io::Error| ServiceError::Audit(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(err)?;
        let files = list_files(dir)?;
        let (file_no, path) = match files.last() {
            Some((n, p)) => (*n, p.clone()),
            None => (1, dir.join(file_name(1))),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        // Find the last complete line; cut a torn tail.
        let mut seq = 0;
        let mut prev = [0u8; 32];
        let mut good_len = 0u64;
        {
            let mut rd = BufReader::new(&file);
            let mut line = Vec::new();
            let mut pos = 0u64;
            loop {
                line.clear();
                let n = rd.read_until(b'\n', &mut line).map_err(err)?;
                if n == 0 {
                    break;
                }
                pos += n as u64;
                if line.last() != Some(&b'\n') {
                    break;
                }
                let body = &line[..line.len() - 1];
                let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                    ServiceError::Audit(format!("{}: unreadable line: {e}", path.display()))
                })?;
                seq = v["seq"].as_u64().unwrap_or(seq);
                prev = sha256(body);
                good_len = pos;
            }
        }
        let len = file.metadata().map_err(err)?.len();
        if len > good_len {
            tracing::warn!(file = %path.display(), bytes = len - good_len, "cutting a torn, never-acknowledged audit line");
            file.set_len(good_len).map_err(err)?;
            file.sync_all().map_err(err)?;
        }
        if seq == 0 && file_no > 1 {
            // A fresh file after rotation: continue from the previous file's last line.
            if let Some((_, p)) = files.iter().rev().nth(1) {
                let text = std::fs::read(p).map_err(err)?;
                if let Some(last) = text.split(|b| *b == b'\n').rfind(|l| !l.is_empty()) {
                    let v: serde_json::Value = serde_json::from_slice(last)
                        .map_err(|e| ServiceError::Audit(e.to_string()))?;
                    seq = v["seq"].as_u64().unwrap_or(0);
                    prev = sha256(last);
                }
            }
        }
        file.seek(SeekFrom::End(0)).map_err(err)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            file,
            file_no,
            size: good_len,
            max_size,
            seq,
            prev,
        })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file_no += 1;
        let path = self.dir.join(file_name(self.file_no));
        self.file = OpenOptions::new().create(true).append(true).open(path)?;
        self.size = 0;
        // Make the new directory entry durable.
        File::open(&self.dir)?.sync_all()
    }

    fn append(&mut self, records: &[Job]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 400);
        for (r, _) in records {
            self.seq += 1;
            let line = Line {
                seq: self.seq,
                record: r,
                prev: hex::encode(self.prev),
            };
            let start = buf.len();
            serde_json::to_writer(&mut buf, &line).map_err(std::io::Error::other)?;
            self.prev = sha256(&buf[start..]);
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.size += buf.len() as u64;
        if self.size >= self.max_size {
            self.rotate()?;
        }
        Ok(())
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, rotating files at `max_size` bytes.
    pub fn open(dir: &Path, max_size: u64) -> Result<Self, ServiceError> {
        let mut w = Writer::open(dir, max_size)?;
        let (tx, rx) = mpsc::sync_channel::<Job>(65_536);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    let res = w
                        .append(&batch)
                        .map_err(|e| format!("audit log write failed: {e}"));
                    for (_, done) in batch {
                        let _ = done.send(res.clone());
                    }
                }
            })
            .map_err(|e| ServiceError::Audit(e.to_string()))?;
        Ok(AuditLog { tx })
    }

    /// Appends a record; resolves once it is on disk.
    pub async fn append(&self, record: AuditRecord) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send((record, done))
            .map_err(|_| "audit log queue is full".to_string())?;
        wait.await.map_err(|_| "audit writer stopped".to_string())?
    }
}

/// Result of checking a log directory.
#[derive(Debug, PartialEq, Eq)]
pub struct AuditCheck {
    /// Lines checked.
    pub lines: u64,
    /// First broken link: `file:line: reason`.
    pub broken: Option<String>,
    /// A torn last line (crash mid-write; never acknowledged).
    pub torn_tail: bool,
}

/// Checks every link of the chain in `dir`.
pub fn verify_dir(dir: &Path) -> Result<AuditCheck, ServiceError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(ServiceError::Audit(format!(
            "no audit-*.jsonl files in {}",
            dir.display()
        )));
    }
    let mut prev = [0u8; 32];
    let mut seq = 0u64;
    let mut lines = 0u64;
    let first_no = files[0].0;
    for (fi, (no, path)) in files.iter().enumerate() {
        let expected_no = first_no.saturating_add(fi as u32);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if *no != expected_no {
            return Ok(AuditCheck {
                lines,
                broken: Some(format!("{name}: file {expected_no:06} is missing")),
                torn_tail: false,
            });
        }
        let text = std::fs::read(path).map_err(|e| ServiceError::Audit(format!("{name}: {e}")))?;
        let last_file = fi + 1 == files.len();
        let mut parts: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let tail = parts.pop().unwrap_or_default();
        if !tail.is_empty() {
            if last_file {
                return Ok(AuditCheck {
                    lines,
                    broken: None,
                    torn_tail: true,
                });
            }
            return Ok(AuditCheck {
                lines,
                broken: Some(format!(
                    "{name}: last line is incomplete in a file that was rotated"
                )),
                torn_tail: false,
            });
        }
        for (i, line) in parts.iter().enumerate() {
            let at = format!("{name}:{}", i + 1);
            let broken = |why: String| {
                Ok(AuditCheck {
                    lines,
                    broken: Some(format!("{at}: {why}")),
                    torn_tail: false,
                })
            };
            let v: serde_json::Value = match serde_json::from_slice(line) {
                Ok(v) => v,
                Err(e) => return broken(format!("not JSON ({e})")),
            };
            if v["prev"].as_str() != Some(hex::encode(prev).as_str()) {
                return broken("prev does not match the hash of the line before (edited, deleted or reordered)".into());
            }
            if v["seq"].as_u64() != Some(seq + 1) {
                return broken(format!("seq is {}, expected {}", v["seq"], seq + 1));
            }
            seq += 1;
            prev = sha256(line);
            lines += 1;
        }
    }
    Ok(AuditCheck {
        lines,
        broken: None,
        torn_tail: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32) -> AuditRecord {
        AuditRecord {
            time: format!("t{i}"),
            kind: "pop",
            jti: Some(format!("jti-{i}")),
            decision: "accept",
            ..AuditRecord::default()
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cada-audit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    async fn write_n(dir: &Path, n: u32, max: u64) {
        let log = AuditLog::open(dir, max).unwrap();
        for i in 0..n {
            log.append(rec(i)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn chain_verifies_across_rotation_and_restart() {
        let d = tmp("rot");
        write_n(&d, 30, 2000).await;
        write_n(&d, 30, 2000).await; // restart continues the chain
        assert!(list_files(&d).unwrap().len() > 3);
        let c = verify_dir(&d).unwrap();
        assert_eq!(
            c,
            AuditCheck {
                lines: 60,
                broken: None,
                torn_tail: false
            }
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn edits_deletions_reorderings_and_torn_tails() {
        let d = tmp("tamper");
        write_n(&d, 10, 1 << 20).await;
        let path = d.join(file_name(1));
        let orig = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = orig.lines().collect();
        let variants: Vec<(&str, String)> = vec![
            ("edit", orig.replacen("jti-4", "jti-X", 1)),
            (
                "delete",
                lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 3)
                    .map(|(_, l)| format!("{l}\n"))
                    .collect(),
            ),
            ("reorder", {
                let mut l = lines.clone();
                l.swap(2, 3);
                l.iter().map(|l| format!("{l}\n")).collect()
            }),
        ];
        for (what, text) in variants {
            std::fs::write(&path, text).unwrap();
            let c = verify_dir(&d).unwrap();
            assert!(c.broken.is_some(), "{what} not detected");
        }
        // A torn tail is reported, then cut by the next writer, which continues the chain.
        std::fs::write(&path, format!("{orig}{{\"seq\":11,\"ti")).unwrap();
        assert!(verify_dir(&d).unwrap().torn_tail);
        write_n(&d, 1, 1 << 20).await;
        assert_eq!(
            verify_dir(&d).unwrap(),
            AuditCheck {
                lines: 11,
                broken: None,
                torn_tail: false
            }
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
