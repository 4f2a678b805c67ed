//! `cada-audit`: the append-only, hash-chained audit log every CADA server writes
//! (`cada-verify serve`, `cada-gate`, `cada-sts`): one record format ([`AuditRecord`]), one
//! writer with group commit ([`AuditLog`]), one chain verifier ([`verify_dir`], the
//! `cada-verify audit verify` command). It links no other CADA crate: the decision pipeline
//! (`cada-pipeline`) turns decisions into records.
//!
//! Each line is a JSON object with `seq` (1, 2, …) and `prev` (hex SHA-256 of the previous
//! line's bytes, without its newline; 64 zeros for the first). Files `audit-NNNNNN.jsonl`
//! rotate by size; the chain continues across files.
//!
//! One writer thread owns the chain. It takes every record that is waiting, appends them with
//! one `write`, and — with [`Durability::Fsync`], the default — calls `fdatasync` before it
//! releases the answers, so every answered decision is on disk. It starts the next group as
//! soon as the previous one is on disk (no timer). [`Durability::BatchMs`] and
//! [`Durability::None`] answer once the kernel has the bytes, trading a bounded (or the
//! kernel's) window of answered-but-unsynced decisions for latency; see [`Durability`].
//!
//! A write or sync that fails never advances the chain: the file is cut back to the end of
//! the last good line and the waiting requests get an error (the service answers 503). If
//! the cut itself fails, nothing more is written (every append fails) until a later cut
//! succeeds, so the chain on disk never has a gap or a foreign fragment in the middle.
//! On start, a partial last line (a crash mid-write, never acknowledged) is cut off.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::digest::{self, SHA256};
use serde::Serialize;
use tokio::sync::oneshot;

/// The one error of this crate: the audit log cannot be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(pub String);

/// Longest audit line (bytes, newline excluded) the writer produces and the reader accepts.
pub const MAX_LINE: usize = 1 << 20;

/// Records committed in one group at most.
const MAX_BATCH: usize = 4096;

/// Requests that may wait for the writer before `append` fails fast.
const QUEUE: usize = 65_536;

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
    /// Digest of the trust contract the decision was about (`cada.dtc`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// Id (`jti`) of the access token issued (`cada-sts`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The MCP calls of the request (`cada-gate`): method, tool/prompt/resource, and the
    /// digest of the arguments (the arguments themselves are not logged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<RpcRecord>,
    /// The upstream's HTTP status (`cada-gate`, on the record of the forwarded call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    /// Microseconds from the request's arrival to the upstream's answer headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
}

/// One JSON-RPC call in an audit record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RpcRecord {
    /// JSON-RPC method.
    pub method: String,
    /// Tool, prompt or resource URI it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// base64url SHA-256 of its `params.arguments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    #[serde(flatten)]
    record: &'a AuditRecord,
    prev: String,
}

/// When an answered decision is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Durability {
    /// `fsync` (default): the group is `fdatasync`ed before any of its requests is answered.
    /// Every answered decision survives a crash of the process, the OS or the machine.
    #[default]
    Fsync,
    /// `batch-ms:N`: requests are answered once the kernel has the bytes (a crash of
    /// `cada-verify` loses nothing); a second thread `fdatasync`s at least every N ms, so a
    /// power loss or kernel crash loses at most the last N ms (plus one sync) of answered
    /// decisions, always at the end of the chain. If a sync fails, no request is answered
    /// until a sync succeeds again.
    BatchMs(u32),
    /// `none`: answered once the kernel has the bytes; the kernel writes them back when it
    /// chooses (about 30 s on Linux). Files are synced only when they rotate.
    None,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Fsync => f.write_str("fsync"),
            Durability::BatchMs(ms) => write!(f, "batch-ms:{ms}"),
            Durability::None => f.write_str("none"),
        }
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("audit durability {s:?}: use fsync, batch-ms:N (N = 1..=10000 ms) or none");
        match s {
            "fsync" => Ok(Durability::Fsync),
            "none" => Ok(Durability::None),
            _ => {
                let ms: u32 = s
                    .strip_prefix("batch-ms:")
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(bad)?;
                if (1..=10_000).contains(&ms) {
                    Ok(Durability::BatchMs(ms))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl TryFrom<String> for Durability {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// How the audit log is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Directory of the `audit-NNNNNN.jsonl` files.
    pub dir: PathBuf,
    /// A file is closed and the next one started once it reaches this size (bytes).
    pub max_file_bytes: u64,
    /// When an answered decision is on disk.
    pub durability: Durability,
}

impl AuditConfig {
    /// `dir` with 64 MiB files and [`Durability::Fsync`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AuditConfig {
            dir: dir.into(),
            max_file_bytes: 64 * 1024 * 1024,
            durability: Durability::Fsync,
        }
    }
}

/// An audit file open for appending: a [`File`] in production; tests wrap one to inject
/// failures (a full disk, a failing sync).
pub trait AuditFile: Send + Sync {
    /// Appends all of `buf` at the end of the file (`O_APPEND`); may have written a prefix
    /// when it fails.
    fn append(&self, buf: &[u8]) -> std::io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync(&self) -> std::io::Result<()>;
    /// Cuts the file to `len` bytes and makes that durable.
    fn cut(&self, len: u64) -> std::io::Result<()>;
}

impl AuditFile for File {
    fn append(&self, buf: &[u8]) -> std::io::Result<()> {
        let mut f: &File = self;
        f.write_all(buf)
    }

    fn sync(&self) -> std::io::Result<()> {
        self.sync_data()
    }

    fn cut(&self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.sync_all()
    }
}

/// Opens (creating if needed) an audit file for appending.
pub type FileOpener = Box<dyn Fn(&Path) -> std::io::Result<Arc<dyn AuditFile>> + Send>;

fn open_real(path: &Path) -> std::io::Result<Arc<dyn AuditFile>> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(Arc::new(f))
}

type Job = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// Handle to the writer thread.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::SyncSender<Job>,
}

/// State shared with the sync thread of [`Durability::BatchMs`].
struct SyncState {
    file: Mutex<Arc<dyn AuditFile>>,
    /// Bytes were appended since the last sync started.
    pending: AtomicBool,
    /// The last sync failed with this error.
    failed: Mutex<Option<String>>,
    /// The writer has stopped.
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Writer {
    dir: PathBuf,
    open: FileOpener,
    file: Arc<dyn AuditFile>,
    file_no: u32,
    /// End of the last good line in the current file.
    size: u64,
    max_size: u64,
    seq: u64,
    prev: [u8; 32],
    /// Bytes past `size` may be in the file (a failed write whose cut failed too).
    dirty: bool,
    durability: Durability,
    sync: Arc<SyncState>,
}

fn file_name(n: u32) -> String {
    format!("audit-{n:06}.jsonl")
}

/// Audit files of `dir` in order.
pub fn list_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| AuditError(format!("{}: {e}", dir.display())))?;
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

/// What one read of a line found.
enum Read1 {
    /// A line ending in `\n` (kept out of the buffer).
    Line,
    /// End of file after these bytes without a newline (empty: clean end).
    End,
    /// More than [`MAX_LINE`] bytes without a newline.
    TooLong,
}

/// Reads one line into `buf` (cleared first), never holding more than [`MAX_LINE`] bytes.
fn read_line(rd: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Read1> {
    buf.clear();
    loop {
        let chunk = rd.fill_buf()?;
        if chunk.is_empty() {
            return Ok(Read1::End);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > MAX_LINE {
            return Ok(Read1::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        rd.consume(take + usize::from(done));
        if done {
            return Ok(Read1::Line);
        }
    }
}

/// The last complete line of `path`: (its `seq`, its hash, end offset); `None` if it has none.
fn last_line(path: &Path) -> Result<Option<(u64, [u8; 32], u64)>, AuditError> {
    let name = path.display();
    let err = |e: std::io::Error| AuditError(format!("{name}: {e}"));
    let mut rd = BufReader::new(File::open(path).map_err(err)?);
    let mut line = Vec::new();
    let mut pos = 0u64;
    let mut last = None;
    let mut last_body = Vec::new();
    loop {
        match read_line(&mut rd, &mut line).map_err(err)? {
            Read1::Line => {
                pos += line.len() as u64 + 1;
                std::mem::swap(&mut last_body, &mut line);
                last = Some(pos);
            }
            Read1::End => break,
            Read1::TooLong => {
                return Err(AuditError(format!(
                    "{name}: a line longer than {MAX_LINE} bytes: not an audit log"
                )))
            }
        }
    }
    let Some(end) = last else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_slice(&last_body).map_err(|e| {
        AuditError(format!(
            "{name}: the last complete line is not JSON ({e}); check it with `cada-verify audit verify`"
        ))
    })?;
    let seq = v["seq"].as_u64().ok_or_else(|| {
        AuditError(format!(
            "{name}: the last complete line has no seq; check it with `cada-verify audit verify`"
        ))
    })?;
    Ok(Some((seq, sha256(&last_body), end)))
}

impl Writer {
    fn open(
        cfg: &AuditConfig,
        open: FileOpener,
        sync: Arc<SyncState>,
    ) -> Result<Writer, AuditError> {
        let dir = &cfg.dir;
        let err = |e: std::io::Error| AuditError(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(err)?;
        let files = list_files(dir)?;
        let (file_no, path) = match files.last() {
            Some((n, p)) => (*n, p.clone()),
            None => (1, dir.join(file_name(1))),
        };
        let file = open(&path).map_err(err)?;
        let (mut seq, mut prev, good_len) = match last_line(&path)? {
            Some((s, h, end)) => (s, h, end),
            None => (0, [0u8; 32], 0),
        };
        let len = std::fs::metadata(&path).map_err(err)?.len();
        if len > good_len {
            tracing::warn!(file = %path.display(), bytes = len - good_len, "cutting a partial, never-acknowledged audit line");
            file.cut(good_len).map_err(err)?;
        }
        if seq == 0 && file_no > 1 {
            // A fresh file after rotation: continue from the previous file's last line.
            if let Some((_, p)) = files.iter().rev().nth(1) {
                if let Some((s, h, _)) = last_line(p)? {
                    seq = s;
                    prev = h;
                }
            }
        }
        *lock(&sync.file) = file.clone();
        Ok(Writer {
            dir: dir.clone(),
            open,
            file,
            file_no,
            size: good_len,
            max_size: cfg.max_file_bytes,
            seq,
            prev,
            dirty: false,
            durability: cfg.durability,
            sync,
        })
    }

    /// Starts the next file. Nothing changes unless every step succeeds.
    fn rotate(&mut self) -> std::io::Result<()> {
        // The closed file is complete on disk whatever the durability.
        self.file.sync()?;
        let path = self.dir.join(file_name(self.file_no + 1));
        let file = (self.open)(&path)?;
        let len = std::fs::metadata(&path)?.len();
        if len != 0 {
            return Err(std::io::Error::other(format!(
                "{} exists and is not empty",
                path.display()
            )));
        }
        // Make the new directory entry durable.
        File::open(&self.dir)?.sync_all()?;
        self.file = file;
        self.file_no += 1;
        self.size = 0;
        *lock(&self.sync.file) = self.file.clone();
        Ok(())
    }

    /// Cuts anything past the last good line.
    fn cut_back(&mut self) -> Result<(), String> {
        match self.file.cut(self.size) {
            Ok(()) => {
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                tracing::error!(error = %e, "audit log: cannot cut a failed write back; refusing to write until it can");
                Err(format!(
                    "audit log unwritable: a failed write could not be cut back ({e})"
                ))
            }
        }
    }

    /// Checks that the log can take a group: no uncut failed write, no failed background
    /// sync, room in the current file.
    fn ready(&mut self) -> Result<(), String> {
        if self.dirty {
            self.cut_back()?;
        }
        if matches!(self.durability, Durability::BatchMs(_)) {
            let failed = lock(&self.sync.failed).clone();
            if let Some(e) = failed {
                self.file
                    .sync()
                    .map_err(|e2| format!("audit log sync failed ({e}; again: {e2})"))?;
                *lock(&self.sync.failed) = None;
            }
        }
        if self.size >= self.max_size {
            self.rotate()
                .map_err(|e| format!("audit log rotation failed: {e}"))?;
        }
        Ok(())
    }

    /// Appends the group; each job's result is in `results` (same order). The chain
    /// advances only over lines that are written (and synced, with [`Durability::Fsync`]).
    fn commit(&mut self, jobs: &[Job], results: &mut Vec<Result<(), String>>) {
        results.clear();
        if let Err(e) = self.ready() {
            results.resize(jobs.len(), Err(e));
            return;
        }
        let mut buf = Vec::with_capacity(jobs.len() * 512);
        let mut seq = self.seq;
        let mut prev = self.prev;
        for (r, _) in jobs {
            let start = buf.len();
            let line = Line {
                seq: seq + 1,
                record: r,
                prev: hex::encode(prev),
            };
            let res = serde_json::to_writer(&mut buf, &line).map_err(|e| e.to_string());
            let res = res.and_then(|()| {
                if buf.len() - start > MAX_LINE {
                    Err(format!("audit record longer than {MAX_LINE} bytes"))
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(()) => {
                    prev = sha256(&buf[start..]);
                    seq += 1;
                    buf.push(b'\n');
                    results.push(Ok(()));
                }
                Err(e) => {
                    buf.truncate(start);
                    results.push(Err(format!("audit record not written: {e}")));
                }
            }
        }
        if buf.is_empty() {
            return;
        }
        let written = self.file.append(&buf).and_then(|()| {
            if self.durability == Durability::Fsync {
                self.file.sync()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.seq = seq;
                self.prev = prev;
                self.size += buf.len() as u64;
                if self.durability != Durability::Fsync {
                    self.sync.pending.store(true, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed: cutting it back, answering 503");
                let msg = match self.cut_back() {
                    Ok(()) => format!("audit log write failed: {e}"),
                    Err(cut) => format!("audit log write failed: {e}; {cut}"),
                };
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(msg.clone());
                }
            }
        }
    }
}

/// The sync thread of [`Durability::BatchMs`].
fn sync_loop(st: &SyncState, every: Duration) {
    while !st.stop.load(Ordering::Acquire) {
        std::thread::sleep(every);
        if st.pending.swap(false, Ordering::AcqRel) {
            let file = lock(&st.file).clone();
            if let Err(e) = file.sync() {
                st.pending.store(true, Ordering::Release);
                tracing::error!(error = %e, "audit log sync failed: answering 503 until a sync succeeds");
                *lock(&st.failed) = Some(e.to_string());
            }
        }
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, rotating files at `max_size` bytes, with
    /// [`Durability::Fsync`].
    pub fn open(dir: &Path, max_size: u64) -> Result<Self, AuditError> {
        Self::open_with(&AuditConfig {
            max_file_bytes: max_size,
            ..AuditConfig::new(dir)
        })
    }

    /// Opens (or creates) the log that `cfg` describes.
    pub fn open_with(cfg: &AuditConfig) -> Result<Self, AuditError> {
        Self::open_with_files(cfg, Box::new(open_real))
    }

    /// Like [`AuditLog::open_with`], appending through the files that `open` returns (tests
    /// inject failing files this way). The existing files are still read with `std::fs`.
    pub fn open_with_files(cfg: &AuditConfig, open: FileOpener) -> Result<Self, AuditError> {
        let placeholder: Arc<dyn AuditFile> = Arc::new(NoFile);
        let sync = Arc::new(SyncState {
            file: Mutex::new(placeholder),
            pending: AtomicBool::new(false),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let mut w = Writer::open(cfg, open, sync.clone())?;
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let spawn_err = |e: std::io::Error| AuditError(format!("writer thread: {e}"));
        if let Durability::BatchMs(ms) = cfg.durability {
            let st = sync.clone();
            std::thread::Builder::new()
                .name("audit-sync".into())
                .spawn(move || sync_loop(&st, Duration::from_millis(u64::from(ms))))
                .map_err(spawn_err)?;
        }
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                let mut results = Vec::with_capacity(MAX_BATCH);
                while let Ok(first) = rx.recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => batch.push(j),
                            Err(_) => break,
                        }
                    }
                    w.commit(&batch, &mut results);
                    for ((_, done), res) in batch.drain(..).zip(results.drain(..)) {
                        let _ = done.send(res);
                    }
                }
                // Every handle is gone: leave the file complete on disk.
                sync.stop.store(true, Ordering::Release);
                if let Err(e) = w.file.sync() {
                    tracing::error!(error = %e, "audit log: final sync failed");
                }
            })
            .map_err(spawn_err)?;
        Ok(AuditLog { tx })
    }

    /// Appends a record; resolves once it is as durable as the configured [`Durability`]
    /// promises (with `fsync`: on disk). An error means the record is not in the log.
    pub async fn append(&self, record: AuditRecord) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send((record, done))
            .map_err(|_| "audit log queue is full".to_string())?;
        wait.await.map_err(|_| "audit writer stopped".to_string())?
    }
}

/// Stands in for the file until the writer has opened it.
struct NoFile;

impl AuditFile for NoFile {
    fn append(&self, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("audit file not open"))
    }
    fn sync(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn cut(&self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

/// A partial last line: bytes after the last newline of the newest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialLine {
    /// File name.
    pub file: String,
    /// Byte offset where it starts (the end of the last complete line).
    pub offset: u64,
    /// Its length in bytes.
    pub len: u64,
}

/// Result of checking a log directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheck {
    /// Complete lines whose links were checked and hold.
    pub lines: u64,
    /// First broken link: `file:line: reason`.
    pub broken: Option<String>,
    /// Bytes after the last newline of the newest file: a write in progress or cut short by
    /// a crash, so never acknowledged. Every complete line before it is still checked; the
    /// next `cada-verify serve` start cuts it.
    pub partial: Option<PartialLine>,
}

/// Checks every link of the chain in `dir`: every complete line of every file, in order.
pub fn verify_dir(dir: &Path) -> Result<AuditCheck, AuditError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(AuditError(format!(
            "no audit-*.jsonl files in {}",
            dir.display()
        )));
    }
    let mut prev = [0u8; 32];
    let mut seq = 0u64;
    let mut lines = 0u64;
    let first_no = files[0].0;
    let mut line = Vec::new();
    for (fi, (no, path)) in files.iter().enumerate() {
        let expected_no = first_no.saturating_add(u32::try_from(fi).unwrap_or(u32::MAX));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let broken = |lines: u64, why: String| {
            Ok(AuditCheck {
                lines,
                broken: Some(why),
                partial: None,
            })
        };
        if *no != expected_no {
            return broken(lines, format!("{name}: file {expected_no:06} is missing"));
        }
        let f = File::open(path).map_err(|e| AuditError(format!("{name}: {e}")))?;
        let mut rd = BufReader::new(f);
        let mut offset = 0u64;
        let mut n = 0u64;
        loop {
            let read =
                read_line(&mut rd, &mut line).map_err(|e| AuditError(format!("{name}: {e}")))?;
            n += 1;
            let at = format!("{name}:{n}");
            match read {
                Read1::Line => {}
                Read1::End if line.is_empty() => break,
                Read1::End => {
                    if fi + 1 < files.len() {
                        return broken(
                            lines,
                            format!("{at}: the last line of a closed (rotated) file is incomplete"),
                        );
                    }
                    return Ok(AuditCheck {
                        lines,
                        broken: None,
                        partial: Some(PartialLine {
                            file: name,
                            offset,
                            len: line.len() as u64,
                        }),
                    });
                }
                Read1::TooLong => {
                    return broken(lines, format!("{at}: longer than {MAX_LINE} bytes"));
                }
            }
            offset += line.len() as u64 + 1;
            let v: serde_json::Value = match serde_json::from_slice(&line) {
                Ok(v) => v,
                Err(e) => return broken(lines, format!("{at}: not JSON ({e})")),
            };
            if v["prev"].as_str() != Some(hex::encode(prev).as_str()) {
                return broken(
                    lines,
                    format!("{at}: prev does not match the hash of the line before (that line edited, or lines deleted or reordered)"),
                );
            }
            if v["seq"].as_u64() != Some(seq + 1) {
                return broken(
                    lines,
                    format!("{at}: seq is {}, expected {}", v["seq"], seq + 1),
                );
            }
            seq += 1;
            prev = sha256(&line);
            lines += 1;
        }
    }
    Ok(AuditCheck {
        lines,
        broken: None,
        partial: None,
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

    fn intact(lines: u64) -> AuditCheck {
        AuditCheck {
            lines,
            broken: None,
            partial: None,
        }
    }

    #[tokio::test]
    async fn chain_verifies_across_rotation_and_restart() {
        let d = tmp("rot");
        write_n(&d, 30, 2000).await;
        write_n(&d, 30, 2000).await; // restart continues the chain
        assert!(list_files(&d).unwrap().len() > 3);
        assert_eq!(verify_dir(&d).unwrap(), intact(60));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn edits_deletions_reorderings_and_partial_tails() {
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
            std::fs::write(&path, &text).unwrap();
            let c = verify_dir(&d).unwrap();
            assert!(c.broken.is_some(), "{what} not detected");
            // A partial line after it hides nothing.
            std::fs::write(&path, format!("{text}{{\"seq\":11,\"ti")).unwrap();
            let c = verify_dir(&d).unwrap();
            assert!(c.broken.is_some(), "{what} hidden by a partial line");
        }
        // A partial tail is reported, then cut by the next writer, which continues the chain.
        std::fs::write(&path, format!("{orig}{{\"seq\":11,\"ti")).unwrap();
        assert_eq!(
            verify_dir(&d).unwrap(),
            AuditCheck {
                lines: 10,
                broken: None,
                partial: Some(PartialLine {
                    file: file_name(1),
                    offset: orig.len() as u64,
                    len: 13,
                }),
            }
        );
        write_n(&d, 1, 1 << 20).await;
        assert_eq!(verify_dir(&d).unwrap(), intact(11));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_partial_line_in_a_closed_file_is_broken_and_long_lines_are_bounded() {
        let d = tmp("closed");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file_name(1)), "{\"seq\":1").unwrap();
        std::fs::write(d.join(file_name(2)), "").unwrap();
        let c = verify_dir(&d).unwrap();
        assert!(c.broken.unwrap().contains("closed (rotated)"));
        std::fs::remove_file(d.join(file_name(2))).unwrap();
        std::fs::write(d.join(file_name(1)), vec![b'x'; MAX_LINE + 10]).unwrap();
        let c = verify_dir(&d).unwrap();
        assert!(c.broken.unwrap().contains("longer than"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn durability_parses_and_prints() {
        for s in ["fsync", "none", "batch-ms:1", "batch-ms:10000"] {
            assert_eq!(s.parse::<Durability>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "FSYNC",
            "batch-ms",
            "batch-ms:0",
            "batch-ms:10001",
            "batch-ms:x",
        ] {
            assert!(s.parse::<Durability>().is_err(), "{s}");
        }
        assert_eq!(Durability::default(), Durability::Fsync);
    }
}

/// Fault injection: a real file that fails on demand, as a full disk or a failing device.
#[cfg(test)]
mod faults {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// What fails next. `usize::MAX` in `write_ok_bytes`: writes succeed.
    #[derive(Default)]
    struct Plan {
        /// A failing write still writes this many bytes first (a partial write).
        write_ok_bytes: AtomicUsize,
        write_fails: AtomicBool,
        sync_fails: AtomicBool,
        cut_fails: AtomicBool,
        open_fails: AtomicBool,
    }

    struct Flaky {
        inner: File,
        plan: Arc<Plan>,
    }

    fn full() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: no space left")
    }

    impl AuditFile for Flaky {
        fn append(&self, buf: &[u8]) -> std::io::Result<()> {
            if self.plan.write_fails.load(Ordering::SeqCst) {
                let n = self
                    .plan
                    .write_ok_bytes
                    .load(Ordering::SeqCst)
                    .min(buf.len());
                self.inner.append(&buf[..n])?;
                return Err(full());
            }
            self.inner.append(buf)
        }
        fn sync(&self) -> std::io::Result<()> {
            if self.plan.sync_fails.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected: sync failed"));
            }
            self.inner.sync()
        }
        fn cut(&self, len: u64) -> std::io::Result<()> {
            if self.plan.cut_fails.load(Ordering::SeqCst) {
                return Err(full());
            }
            self.inner.cut(len)
        }
    }

    fn open_flaky(cfg: &AuditConfig) -> (AuditLog, Arc<Plan>) {
        let plan = Arc::new(Plan::default());
        let p = plan.clone();
        let opener: FileOpener = Box::new(move |path| {
            if p.open_fails.load(Ordering::SeqCst) {
                return Err(full());
            }
            let inner = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(Arc::new(Flaky {
                inner,
                plan: p.clone(),
            }))
        });
        (AuditLog::open_with_files(cfg, opener).unwrap(), plan)
    }

    fn rec(i: u32) -> AuditRecord {
        AuditRecord {
            time: format!("t{i}"),
            kind: "pop",
            jti: Some(format!("jti-{i}")),
            decision: "accept",
            ..AuditRecord::default()
        }
    }

    fn cfg(tag: &str, durability: Durability, max: u64) -> AuditConfig {
        let d = std::env::temp_dir().join(format!("cada-audit-f-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        AuditConfig {
            dir: d,
            max_file_bytes: max,
            durability,
        }
    }

    fn len(cfg: &AuditConfig, n: u32) -> u64 {
        std::fs::metadata(cfg.dir.join(file_name(n))).unwrap().len()
    }

    fn intact(lines: u64) -> AuditCheck {
        AuditCheck {
            lines,
            broken: None,
            partial: None,
        }
    }

    #[tokio::test]
    async fn a_partial_write_on_a_full_disk_is_cut_back_and_the_chain_does_not_advance() {
        for d in [Durability::Fsync, Durability::BatchMs(5), Durability::None] {
            let c = cfg("full", d, 1 << 20);
            let (log, plan) = open_flaky(&c);
            for i in 0..3 {
                log.append(rec(i)).await.unwrap();
            }
            let good = len(&c, 1);
            plan.write_ok_bytes.store(25, Ordering::SeqCst);
            plan.write_fails.store(true, Ordering::SeqCst);
            let e = log.append(rec(3)).await.unwrap_err();
            assert!(e.contains("no space left"), "{d}: {e}");
            assert_eq!(len(&c, 1), good, "{d}: the partial record is cut back");
            // The disk recovers: the service's own log still verifies, with no gap.
            plan.write_fails.store(false, Ordering::SeqCst);
            log.append(rec(4)).await.unwrap();
            log.append(rec(5)).await.unwrap();
            assert_eq!(verify_dir(&c.dir).unwrap(), intact(5), "{d}");
            let text = std::fs::read_to_string(c.dir.join(file_name(1))).unwrap();
            assert!(
                !text.contains("jti-3"),
                "{d}: the failed record is not in the log"
            );
            std::fs::remove_dir_all(&c.dir).unwrap();
        }
    }

    #[tokio::test]
    async fn a_failed_fsync_is_not_acknowledged_and_not_chained() {
        let c = cfg("sync", Durability::Fsync, 1 << 20);
        let (log, plan) = open_flaky(&c);
        log.append(rec(0)).await.unwrap();
        let good = len(&c, 1);
        plan.sync_fails.store(true, Ordering::SeqCst);
        assert!(log.append(rec(1)).await.is_err());
        assert_eq!(len(&c, 1), good);
        plan.sync_fails.store(false, Ordering::SeqCst);
        log.append(rec(2)).await.unwrap();
        assert_eq!(verify_dir(&c.dir).unwrap(), intact(2));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }

    #[tokio::test]
    async fn when_the_cut_fails_too_nothing_is_written_until_it_succeeds() {
        let c = cfg("cut", Durability::Fsync, 1 << 20);
        let (log, plan) = open_flaky(&c);
        log.append(rec(0)).await.unwrap();
        plan.write_ok_bytes.store(10, Ordering::SeqCst);
        plan.write_fails.store(true, Ordering::SeqCst);
        plan.cut_fails.store(true, Ordering::SeqCst);
        assert!(log.append(rec(1)).await.is_err());
        // The disk has room again but the fragment cannot be cut yet: refuse, write nothing.
        plan.write_fails.store(false, Ordering::SeqCst);
        let with_fragment = len(&c, 1);
        let e = log.append(rec(2)).await.unwrap_err();
        assert!(e.contains("could not be cut back"), "{e}");
        assert_eq!(len(&c, 1), with_fragment);
        plan.cut_fails.store(false, Ordering::SeqCst);
        log.append(rec(3)).await.unwrap();
        assert_eq!(verify_dir(&c.dir).unwrap(), intact(2));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_rotation_writes_nothing_and_is_retried() {
        let c = cfg("rot", Durability::Fsync, 300);
        let (log, plan) = open_flaky(&c);
        log.append(rec(0)).await.unwrap();
        log.append(rec(1)).await.unwrap(); // past 300 bytes: the next append rotates
        plan.open_fails.store(true, Ordering::SeqCst);
        let before = len(&c, 1);
        assert!(log.append(rec(2)).await.unwrap_err().contains("rotation"));
        assert_eq!(len(&c, 1), before);
        assert_eq!(list_files(&c.dir).unwrap().len(), 1);
        plan.open_fails.store(false, Ordering::SeqCst);
        log.append(rec(3)).await.unwrap();
        assert_eq!(list_files(&c.dir).unwrap().len(), 2);
        assert_eq!(verify_dir(&c.dir).unwrap(), intact(3));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }

    #[tokio::test]
    async fn batch_ms_refuses_answers_while_background_syncs_fail() {
        let c = cfg("bsync", Durability::BatchMs(1), 1 << 20);
        let (log, plan) = open_flaky(&c);
        log.append(rec(0)).await.unwrap();
        plan.sync_fails.store(true, Ordering::SeqCst);
        // Answered until the sync thread sees the failure, then refused.
        let mut refused = false;
        for i in 1..5000 {
            if log.append(rec(i)).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(refused, "a failing background sync must stop the answers");
        assert!(log.append(rec(9999)).await.is_err());
        plan.sync_fails.store(false, Ordering::SeqCst);
        log.append(rec(10_000)).await.unwrap();
        let check = verify_dir(&c.dir).unwrap();
        assert_eq!(check.broken, None);
        assert_eq!(check.partial, None);
        std::fs::remove_dir_all(&c.dir).unwrap();
    }

    #[tokio::test]
    async fn an_oversized_record_fails_alone() {
        let c = cfg("big", Durability::Fsync, 1 << 30);
        let (log, _plan) = open_flaky(&c);
        let mut big = rec(1);
        big.url = Some("x".repeat(MAX_LINE));
        let (a, b, d) = tokio::join!(log.append(rec(0)), log.append(big), log.append(rec(2)));
        assert!(a.is_ok() && d.is_ok());
        assert!(b.unwrap_err().contains("longer than"));
        assert_eq!(verify_dir(&c.dir).unwrap(), intact(2));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }
}
