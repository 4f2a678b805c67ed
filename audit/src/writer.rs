//! The writer: one thread owns the chain, commits groups, rotates and retains files, and
//! heads each file with its checkpoint.
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::flood::{Admit, Budget, FloodLimits};
use crate::record::{AuditRecord, Checkpoint};
use crate::{file_name, list_files, read_line, sha256, AuditError, Read1, MAX_LINE};

/// Records committed in one group at most.
const MAX_BATCH: usize = 4096;

/// Requests that may wait for the writer before `append` fails fast.
const QUEUE: usize = 65_536;

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

/// What the log may grow to: rotation by age, retention, and the records of
/// unauthenticated requests ([`AuditLog::open_limited`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditLimits {
    /// A file is also closed once it is this old (and holds more than its checkpoint).
    pub max_file_age: Option<Duration>,
    /// Files kept: after a rotation the oldest are deleted while there are more (0: all).
    /// The first file left starts with a checkpoint, the anchor `audit verify` starts from.
    pub keep_files: u32,
    /// What the records of unauthenticated requests may cost
    /// ([`AuditLog::append_unauthenticated`]).
    pub flood: FloodLimits,
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

/// A record and who waits for it (nobody for the writer's own `audit.dropped` records).
type Job = (AuditRecord, Option<oneshot::Sender<Result<(), String>>>);

/// Handle to the log: the writer thread, and with [`Durability::None`] and
/// [`Durability::BatchMs`] the writer itself, which callers then append to inline.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::SyncSender<Job>,
    budget: Arc<Mutex<Budget>>,
    /// The writer, shared with its thread (which takes the same lock for each group), so
    /// every line is chained in the order it was written whichever side wrote it.
    writer: Arc<Mutex<Writer>>,
    /// Appends are written by the caller under the lock (`none`, `batch-ms`: answered once
    /// the kernel has the bytes, so a hand-off to the thread and back only added two
    /// thread wake-ups); `fsync` appends go to the thread's group commit.
    inline: bool,
    /// Spans of the records that carry a traceparent, when a collector is configured.
    otlp: Option<crate::otlp::Otlp>,
}

/// What became of the record of an unauthenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// It is in the log (as durable as the other records).
    Written,
    /// Over the client's rate or the interval's cap: counted in the interval's
    /// `audit.dropped` record instead.
    Dropped,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    max_age: Option<Duration>,
    keep_files: u32,
    /// When the current file was started.
    opened: SystemTime,
    /// Size of the current file's checkpoint line (a file holding only it is not rotated
    /// for its age).
    head_len: u64,
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
        limits: &AuditLimits,
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
        let opened = std::fs::metadata(&path)
            .and_then(|m| m.created())
            .unwrap_or_else(|_| SystemTime::now());
        let mut w = Writer {
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
            max_age: limits.max_file_age,
            keep_files: limits.keep_files,
            opened,
            head_len: 0,
        };
        if good_len == 0 {
            // A new log, or a file a rotation created but could not head: its checkpoint.
            let (line, hash) = w.checkpoint_line(file_no).map_err(AuditError)?;
            w.file
                .append(&line)
                .and_then(|()| w.file.sync())
                .map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
            w.seq += 1;
            w.prev = hash;
            w.size = line.len() as u64;
            w.head_len = w.size;
            w.opened = SystemTime::now();
        }
        w.retain();
        Ok(w)
    }

    /// The checkpoint line heading file `no`, after the current last line, and its hash.
    fn checkpoint_line(&self, no: u32) -> Result<(Vec<u8>, [u8; 32]), String> {
        let record = AuditRecord {
            time: now_rfc3339(),
            kind: "audit",
            decision: "checkpoint",
            checkpoint: Some(Checkpoint {
                file: no,
                prev_seq: self.seq,
                prev_hash: hex::encode(self.prev),
            }),
            ..AuditRecord::default()
        };
        let mut buf = Vec::with_capacity(512);
        let hash = encode(&mut buf, self.seq + 1, &self.prev, &record)?;
        Ok((buf, hash))
    }

    /// Deletes the oldest files while more than `keep_files` are left (never the current
    /// one). A failure is logged: the log goes on, larger.
    fn retain(&mut self) {
        if self.keep_files == 0 {
            return;
        }
        let Ok(files) = list_files(&self.dir) else {
            return;
        };
        let keep = usize::try_from(self.keep_files).unwrap_or(usize::MAX);
        let excess = files.len().saturating_sub(keep);
        let mut removed = 0;
        for (n, p) in files.iter().take(excess) {
            if *n >= self.file_no {
                break;
            }
            match std::fs::remove_file(p) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "audit retention: cannot delete");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                keep = self.keep_files,
                "audit retention: oldest files deleted"
            );
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                tracing::error!(error = %e, "audit retention: directory sync failed");
            }
        }
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
        // The new file's first line is its checkpoint, durable before the file is used.
        let (line, hash) = self
            .checkpoint_line(self.file_no + 1)
            .map_err(std::io::Error::other)?;
        if let Err(e) = file.append(&line).and_then(|()| file.sync()) {
            // Left empty, the file is headed by the next attempt.
            let _ = file.cut(0);
            return Err(e);
        }
        self.file = file;
        self.file_no += 1;
        self.seq += 1;
        self.prev = hash;
        self.size = line.len() as u64;
        self.head_len = self.size;
        self.opened = SystemTime::now();
        *lock(&self.sync.file) = self.file.clone();
        self.retain();
        Ok(())
    }

    /// Whether the current file is due for rotation (size, or age past its checkpoint).
    fn full(&self) -> bool {
        self.size >= self.max_size
            || self.max_age.is_some_and(|age| {
                self.size > self.head_len
                    && self.opened.elapsed().is_ok_and(|elapsed| elapsed >= age)
            })
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
        if self.full() {
            self.rotate()
                .map_err(|e| format!("audit log rotation failed: {e}"))?;
        }
        Ok(())
    }

    /// Appends the group; each record's result is in `results` (same order). The chain
    /// advances only over lines that are written (and synced, with [`Durability::Fsync`]).
    fn commit<'r>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'r AuditRecord>,
        results: &mut Vec<Result<(), String>>,
    ) {
        results.clear();
        if let Err(e) = self.ready() {
            results.resize(records.len(), Err(e));
            return;
        }
        let mut buf = Vec::with_capacity(records.len() * 512);
        let mut seq = self.seq;
        let mut prev = self.prev;
        for r in records {
            match encode(&mut buf, seq + 1, &prev, r) {
                Ok(hash) => {
                    prev = hash;
                    seq += 1;
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(format!("audit record not written: {e}"))),
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

    /// Opens (or creates) the log that `cfg` describes, every file kept, the default
    /// [`FloodLimits`].
    pub fn open_with(cfg: &AuditConfig) -> Result<Self, AuditError> {
        Self::open_limited(cfg, &AuditLimits::default())
    }

    /// Opens (or creates) the log that `cfg` describes, under `limits`.
    pub fn open_limited(cfg: &AuditConfig, limits: &AuditLimits) -> Result<Self, AuditError> {
        Self::open_with_files(cfg, limits, Box::new(open_real))
    }

    /// Like [`AuditLog::open_limited`], appending through the files that `open` returns
    /// (tests inject failing files this way). The existing files are still read with
    /// `std::fs`.
    pub fn open_with_files(
        cfg: &AuditConfig,
        limits: &AuditLimits,
        open: FileOpener,
    ) -> Result<Self, AuditError> {
        let placeholder: Arc<dyn AuditFile> = Arc::new(NoFile);
        let sync = Arc::new(SyncState {
            file: Mutex::new(placeholder),
            pending: AtomicBool::new(false),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        let writer = Arc::new(Mutex::new(Writer::open(cfg, limits, open, sync.clone())?));
        let w = writer.clone();
        let budget = Arc::new(Mutex::new(Budget::new(limits.flood)));
        let due = budget.clone();
        let tick = Duration::from_millis(limits.flood.interval_ms.clamp(10, 60_000));
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
                let mut open = true;
                while open {
                    let first = match rx.recv_timeout(tick) {
                        Ok(j) => Some(j),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            None
                        }
                    };
                    // The drops of past intervals (all of them at the end) are recorded
                    // even when no record of a later one comes.
                    if let Some(d) = lock(&due).take_due(now_ms(), !open) {
                        batch.push((dropped_record(d), None));
                    }
                    if let Some(j) = first {
                        batch.push(j);
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(j) => batch.push(j),
                                Err(_) => break,
                            }
                        }
                    }
                    if batch.is_empty() {
                        continue;
                    }
                    lock(&w).commit(batch.iter().map(|(r, _)| r), &mut results);
                    for ((record, done), res) in batch.drain(..).zip(results.drain(..)) {
                        match done {
                            Some(done) => {
                                let _ = done.send(res);
                            }
                            None => {
                                if let Err(e) = res {
                                    tracing::error!(error = %e, dropped = ?record.dropped, "audit log: the record of dropped records was not written");
                                }
                            }
                        }
                    }
                }
                // Every handle is gone: leave the file complete on disk.
                sync.stop.store(true, Ordering::Release);
                if let Err(e) = lock(&w).file.sync() {
                    tracing::error!(error = %e, "audit log: final sync failed");
                }
            })
            .map_err(spawn_err)?;
        Ok(AuditLog {
            tx,
            budget,
            writer,
            inline: cfg.durability != Durability::Fsync,
            otlp: None,
        })
    }

    /// This log, exporting a span of every authenticated record that carries a
    /// traceparent to `otlp` (after the record is written; never blocking it).
    #[must_use]
    pub fn with_otlp(mut self, otlp: crate::otlp::Otlp) -> Self {
        self.otlp = Some(otlp);
        self
    }

    /// The span exporter, if any.
    pub fn otlp(&self) -> Option<&crate::otlp::Otlp> {
        self.otlp.as_ref()
    }

    /// Registers the log's metrics (`cada_audit_otlp_spans_total` when it exports spans).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        if let Some(o) = &self.otlp {
            o.register(registry);
        }
    }

    /// Writes `records` in this thread if the durability allows it and no rotation is due
    /// (a rotation syncs files and the directory: left to the writer thread, off the
    /// caller's async worker). `None`: not written, hand them to the thread.
    fn write_inline(&self, records: &[&AuditRecord]) -> Option<Vec<Result<(), String>>> {
        if !self.inline {
            return None;
        }
        if records.is_empty() {
            // A dropped record, nothing due: no need for the writer's lock.
            return Some(Vec::new());
        }
        let mut w = lock(&self.writer);
        if w.full() {
            return None;
        }
        let mut results = Vec::with_capacity(records.len());
        w.commit(records.iter().copied(), &mut results);
        Some(results)
    }

    /// Appends a record; resolves once it is as durable as the configured [`Durability`]
    /// promises (with `fsync`: on disk; otherwise once the kernel has the bytes, written
    /// by the caller itself). An error means the record is not in the log.
    pub async fn append(&self, record: AuditRecord) -> Result<(), String> {
        let span = self
            .otlp
            .as_ref()
            .filter(|_| record.tp.is_some())
            .and_then(|o| {
                crate::otlp::span_of(&record, std::time::SystemTime::now()).map(|s| (o, s))
            });
        if let Some(mut r) = self.write_inline(&[&record]) {
            let r = r
                .pop()
                .unwrap_or_else(|| Err("audit record not written".into()));
            if r.is_ok() {
                if let Some((o, s)) = span {
                    o.queue(s);
                }
            }
            return r;
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .try_send((record, Some(done)))
            .map_err(|_| "audit log queue is full".to_string())?;
        let r = wait.await.map_err(|_| "audit writer stopped".to_string())?;
        if r.is_ok() {
            if let Some((o, s)) = span {
                o.queue(s);
            }
        }
        r
    }

    /// Appends the record of an unauthenticated request from `peer` at `now_ms`
    /// (milliseconds since the Unix epoch) as a short record ([`AuditRecord::shorten`]),
    /// within the [`FloodLimits`]: over the client's rate or the interval's cap it is not
    /// written but counted, by reason, in one `audit.dropped` record per interval. Never use
    /// it for an authenticated decision: those go through [`AuditLog::append`].
    pub async fn append_unauthenticated(
        &self,
        mut record: AuditRecord,
        peer: IpAddr,
        now_ms: u64,
    ) -> Result<Limited, String> {
        record.peer = Some(peer.to_string());
        record.shorten();
        let reason = record.reason.as_deref().unwrap_or("none");
        let (due, admit) = {
            let mut b = lock(&self.budget);
            (b.take_due(now_ms, false), b.admit(peer, reason, now_ms))
        };
        if self.inline {
            // Both in one group, the drops of the past interval first.
            let dropped = due.map(dropped_record);
            let mut records: Vec<&AuditRecord> = dropped.iter().collect();
            if admit == Admit::Write {
                records.push(&record);
            }
            if let Some(results) = self.write_inline(&records) {
                if let (Some(d), Some(Err(e))) = (&dropped, results.first()) {
                    tracing::error!(error = %e, dropped = ?d.dropped, "audit log: the record of dropped records was not written");
                    lock(&self.budget).restore(d.dropped.clone());
                }
                return match admit {
                    Admit::Write => results
                        .last()
                        .cloned()
                        .unwrap_or_else(|| Err("audit record not written".into()))
                        .map(|()| Limited::Written),
                    Admit::Drop => Ok(Limited::Dropped),
                };
            }
            // A rotation is due: through the writer thread, in the same order.
            if let Some(d) = dropped {
                self.queue_dropped(d);
            }
        } else if let Some(d) = due {
            self.queue_dropped(dropped_record(d));
        }
        match admit {
            Admit::Write => self.append(record).await.map(|()| Limited::Written),
            Admit::Drop => Ok(Limited::Dropped),
        }
    }

    /// Hands an `audit.dropped` record to the writer thread (nobody waits for it); a full
    /// queue keeps the counts for the next one.
    fn queue_dropped(&self, d: AuditRecord) {
        if let Err(mpsc::TrySendError::Full((r, _)) | mpsc::TrySendError::Disconnected((r, _))) =
            self.tx.try_send((d, None))
        {
            lock(&self.budget).restore(r.dropped);
        }
    }

    /// Writes the `audit.dropped` record of every drop not yet recorded, now (at shutdown,
    /// or in tests); resolves once it is written.
    pub async fn flush_dropped(&self, now_ms: u64) -> Result<(), String> {
        let due = lock(&self.budget).take_due(now_ms, true);
        match due {
            Some(d) => self.append(dropped_record(d)).await,
            None => Ok(()),
        }
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

/// Serializes `record` as line `seq` after the line whose hash is `prev`, newline
/// included, at the end of `buf`; returns the line's hash. Nothing is left in `buf` on error.
fn encode(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 32],
    record: &AuditRecord,
) -> Result<[u8; 32], String> {
    let start = buf.len();
    let line = Line {
        seq,
        record,
        prev: hex::encode(prev),
    };
    let res = serde_json::to_writer(&mut *buf, &line).map_err(|e| e.to_string());
    let res = res.and_then(|()| {
        if buf.len() - start > MAX_LINE {
            Err(format!("audit record longer than {MAX_LINE} bytes"))
        } else {
            Ok(())
        }
    });
    match res {
        Ok(()) => {
            let hash = sha256(&buf[start..]);
            buf.push(b'\n');
            Ok(hash)
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 time, now.
fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The `audit.dropped` record of `dropped` (counts by reason).
fn dropped_record(dropped: std::collections::BTreeMap<String, u64>) -> AuditRecord {
    AuditRecord {
        time: now_rfc3339(),
        kind: "audit",
        decision: "dropped",
        reason: Some("audit.dropped".to_owned()),
        dropped,
        ..AuditRecord::default()
    }
}

/// Fault injection: a real file that fails on demand, as a full disk or a failing device.
#[cfg(test)]
mod faults {
    use super::*;
    use crate::{verify_dir, AuditCheck};
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
        (
            AuditLog::open_with_files(cfg, &AuditLimits::default(), opener).unwrap(),
            plan,
        )
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
            max_file_bytes: max,
            durability,
            ..AuditConfig::new(d)
        }
    }

    fn len(cfg: &AuditConfig, n: u32) -> u64 {
        std::fs::metadata(cfg.dir.join(file_name(n))).unwrap().len()
    }

    /// Intact with `records` records after the first file's checkpoint.
    fn intact(c: &AuditCheck, records: u64) -> bool {
        c.lines == records + 1 && c.broken.is_none() && c.partial.is_none()
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
            assert!(intact(&verify_dir(&c.dir).unwrap(), 5), "{d}");
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
        assert!(intact(&verify_dir(&c.dir).unwrap(), 2));
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
        assert!(intact(&verify_dir(&c.dir).unwrap(), 2));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_rotation_writes_nothing_and_is_retried() {
        let c = cfg("rot", Durability::Fsync, 700);
        let (log, plan) = open_flaky(&c);
        log.append(rec(0)).await.unwrap();
        log.append(rec(1)).await.unwrap(); // checkpoint + 2 past 700 bytes: the next rotates
        plan.open_fails.store(true, Ordering::SeqCst);
        let before = len(&c, 1);
        assert!(log.append(rec(2)).await.unwrap_err().contains("rotation"));
        assert_eq!(len(&c, 1), before);
        assert_eq!(list_files(&c.dir).unwrap().len(), 1);
        plan.open_fails.store(false, Ordering::SeqCst);
        log.append(rec(3)).await.unwrap();
        assert_eq!(list_files(&c.dir).unwrap().len(), 2);
        // Three records and the second file's checkpoint.
        assert!(intact(&verify_dir(&c.dir).unwrap(), 4));
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
        assert!(intact(&verify_dir(&c.dir).unwrap(), 2));
        std::fs::remove_dir_all(&c.dir).unwrap();
    }
}
