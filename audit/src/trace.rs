//! The chain of custody of one task (`cada-verify audit trace ID --log DIR …`): every given
//! log's hash chain verified ([`crate::verify_dir`]), the records of the task joined across
//! the logs (gate, STS, verifier), the enclaves' exported authority events of the task
//! (delegations) beside them, and the tree of who called what for whom: the owner, each
//! delegate acting for the one above, and under each actor its calls with their decision.
//!
//! A record belongs to the task when its `task` is the task, or when it has no task but its
//! `tp` carries a trace id of the task's AUTHENTICATED records (a hop that got the
//! traceparent alone). A record is authenticated when the proof's key was verified (it has
//! a `did` or `actors`): a refused proof's task and traceparent are only what it claims, so
//! such records are listed apart ([`Trace::unverified`]), never as a principal of the tree,
//! and their trace ids never join other records to the task.
//! Memory is bounded per record (every kept field clipped) and in all
//! ([`MAX_TRACE_CALLS`] kept, the rest counted); lines are read one at a time, each at most
//! [`crate::MAX_LINE`]. The text output ([`render`]) escapes every control and bidi
//! character of the records: they hold what requests sent.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::clip_json;
use crate::{list_files, read_line, verify_dir, AuditError, Read1};

/// Most calls a trace keeps (about 12 KB each at most: ~24 MB); beyond, [`Trace::truncated`]
/// counts the rest, and the text says how many more there are.
pub const MAX_TRACE_CALLS: usize = 2_000;

/// Most actors, chain digests and call targets kept per record.
const MAX_LIST: usize = 16;

/// One record of the task, as the trace shows it (every field clipped).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TraceCall {
    /// The log it was read from (the directory as given).
    pub log: String,
    /// Its `seq` in that log.
    pub seq: u64,
    /// Time of the decision (RFC 3339).
    pub time: String,
    /// `gate`, `gate.upstream`, `token`, `pop`, …
    pub kind: String,
    /// `accept`, `reject`, `forwarded`, …
    pub decision: String,
    /// The rule code of a refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Request method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request URL (or the resource of a token exchange).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The proof key's DID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub did: Option<String>,
    /// Proof id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The governing contract's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contract: Option<String>,
    /// The access token issued (STS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The traceparent the request came with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tp: Option<String>,
    /// The hop's own span id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// Who acted for whom, principal first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// The delegation chain's digests above the contract.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dch: Vec<String>,
    /// Its MCP calls, `method target`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
    /// The upstream's status (gate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

/// What the verification of one log found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogCheck {
    /// The directory as given.
    pub log: String,
    /// Complete lines whose links hold.
    pub lines: u64,
    /// The first broken link (`file:line: reason`): the log was edited, cut or reordered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    /// A partial last line (a write cut short; never acknowledged).
    pub partial: bool,
    /// Where the proved chain starts when retention removed older files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// `seq` and hash of the last line, to compare with a copy kept elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Records of the task found in it.
    pub records: u64,
}

/// An enclave's authority event of the task (a delegation it signed), from an export of
/// `cada-parent contract list` (JSON with `events`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EnclaveEvent {
    /// The export file.
    pub source: String,
    /// Position in the enclave's signature hash chain.
    pub seq: u64,
    /// Seconds since the epoch.
    pub at: u64,
    /// The event kind (`delegate`).
    pub kind: String,
    /// The delegated contract's digest.
    pub digest: String,
    /// The delegatee's DID.
    pub subject: String,
    /// The parent contract's digest.
    pub parent: String,
    /// The enclave's chain head after it.
    pub head: String,
}

/// One actor of the tree: its calls, then the actors acting for it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TraceNode {
    /// The actor's DID (the owner at the top).
    pub actor: String,
    /// Delegations to this actor found in the enclave exports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub delegated: Vec<EnclaveEvent>,
    /// Its own calls, in time order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<TraceCall>,
    /// The actors acting for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<TraceNode>,
}

/// The joined chain of custody of one task.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Trace {
    /// The task.
    pub task: String,
    /// Every log given, with its chain's verification.
    pub logs: Vec<LogCheck>,
    /// The trace ids the task's authenticated records carry.
    pub trace_ids: Vec<String>,
    /// Who called what for whom (authenticated records only).
    pub tree: Vec<TraceNode>,
    /// Records that name the task (or one of its trace ids) without an authenticated key
    /// (refusals record none: whether the proof's signature was checked or not, its task and
    /// traceparent are only claimed). Time order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<TraceCall>,
    /// Enclave events of the task whose subject made no call in the logs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EnclaveEvent>,
    /// Records of the task not kept (over [`MAX_TRACE_CALLS`]).
    pub truncated: u64,
}

impl Trace {
    /// Whether every log's hash chain holds.
    pub fn intact(&self) -> bool {
        self.logs.iter().all(|l| l.broken.is_none())
    }

    /// Records of the task in all.
    pub fn records(&self) -> u64 {
        self.logs.iter().map(|l| l.records).sum()
    }
}

/// The fields of a record the trace reads (others ignored).
#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    time: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    did: Option<String>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    contract: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    tp: Option<String>,
    #[serde(default)]
    span: Option<String>,
    #[serde(default)]
    actors: Vec<String>,
    #[serde(default)]
    dch: Vec<String>,
    #[serde(default)]
    rpc: Vec<crate::RpcRecord>,
    #[serde(default)]
    upstream_status: Option<u16>,
}

fn clip(s: Option<String>, max: usize) -> Option<String> {
    s.map(|s| if s.len() > max { clip_json(&s, max) } else { s })
}

fn clip_list(v: Vec<String>, max: usize) -> Vec<String> {
    v.into_iter()
        .take(MAX_LIST)
        .map(|s| if s.len() > max { clip_json(&s, max) } else { s })
        .collect()
}

/// The trace id of a traceparent (`00-<trace id>-…`), if it has that shape.
fn trace_id(tp: &str) -> Option<&str> {
    tp.strip_prefix("00-")
        .and_then(|r| r.get(..32))
        .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl TraceCall {
    /// Whether the proof's key was verified (an accepted proof): only then are its task and
    /// traceparent the signed ones, not a claim.
    pub fn authenticated(&self) -> bool {
        self.did.is_some() || !self.actors.is_empty()
    }
}

impl Row {
    fn into_call(self, log: &str) -> TraceCall {
        TraceCall {
            log: log.to_owned(),
            seq: self.seq,
            time: clip_json(&self.time, 40),
            kind: clip_json(&self.kind, 32),
            decision: clip_json(&self.decision, 32),
            reason: clip(self.reason, 128),
            method: clip(self.method, 32),
            url: clip(self.url, 2048),
            did: clip(self.did, 128),
            jti: clip(self.jti, 128),
            contract: clip(self.contract, 64),
            token: clip(self.token, 128),
            tp: clip(self.tp, 55),
            span: clip(self.span, 16),
            actors: clip_list(self.actors, 128),
            dch: clip_list(self.dch, 64),
            calls: self
                .rpc
                .into_iter()
                .take(MAX_LIST)
                .map(|r| {
                    let s = match r.target {
                        Some(t) => format!("{} {t}", r.method),
                        None => r.method,
                    };
                    clip_json(&s, 256)
                })
                .collect(),
            upstream_status: self.upstream_status,
        }
    }
}

/// Calls `f` with every complete line of the log in `dir`, in order.
fn each_line(dir: &Path, mut f: impl FnMut(&[u8])) -> Result<(), AuditError> {
    let mut line = Vec::new();
    for (_, path) in list_files(dir)? {
        let file = File::open(&path).map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        let mut rd = BufReader::with_capacity(1 << 16, file);
        while let Read1::Line = read_line(&mut rd, &mut line)
            .map_err(|e| AuditError(format!("{}: {e}", path.display())))?
        {
            f(&line);
        }
    }
    Ok(())
}

/// Reads the delegation events of `task` from an export of `cada-parent contract list`.
fn enclave_events(path: &Path, task: &str) -> Result<Vec<EnclaveEvent>, AuditError> {
    const MAX_EXPORT: u64 = 4 << 20;
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| AuditError(format!("{name}: {e}")))?;
    if meta.len() > MAX_EXPORT {
        return Err(AuditError(format!(
            "{name}: more than {MAX_EXPORT} bytes; give the JSON of cada-parent contract list"
        )));
    }
    let text = std::fs::read(path).map_err(|e| AuditError(format!("{name}: {e}")))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        AuditError(format!(
            "{name}: not the JSON of cada-parent contract list: {e}"
        ))
    })?;
    let Some(events) = v.get("events").and_then(serde_json::Value::as_array) else {
        return Err(AuditError(format!(
            "{name}: no `events` array (the JSON of cada-parent contract list)"
        )));
    };
    let mut out = Vec::new();
    for e in events {
        if e["kind"] != "delegate" {
            continue;
        }
        let detail = e["detail"].as_str().unwrap_or_default();
        let parts: Vec<&str> = detail.split(' ').collect();
        if parts.get(3) != Some(&task) {
            continue;
        }
        let s = |i: usize| clip_json(parts.get(i).copied().unwrap_or_default(), 128);
        out.push(EnclaveEvent {
            source: name.clone(),
            seq: e["seq"].as_u64().unwrap_or_default(),
            at: e["at"].as_u64().unwrap_or_default(),
            kind: "delegate".into(),
            digest: s(0),
            subject: s(1),
            parent: s(2),
            head: clip_json(e["head"].as_str().unwrap_or_default(), 64),
        });
    }
    Ok(out)
}

/// Joins the chain of custody of `task` from the logs in `logs` and the enclave exports in
/// `enclaves`. Every log's chain is verified first; a broken chain is reported in
/// [`Trace::logs`] (and [`Trace::intact`] is false), and its records are still read, so the
/// trace shows what the log claims beside the proof that it was altered.
pub fn trace(task: &str, logs: &[PathBuf], enclaves: &[PathBuf]) -> Result<Trace, AuditError> {
    let mut checks = Vec::new();
    let mut calls: Vec<TraceCall> = Vec::new();
    let mut truncated = 0u64;
    let needle = format!("\"task\":{}", serde_json::Value::from(task));
    // Only lines holding the task's member are parsed (SIMD substring search).
    let task_member = memchr::memmem::Finder::new(needle.as_bytes());
    let any_task = memchr::memmem::Finder::new(b"\"task\":");
    let any_tp = memchr::memmem::Finder::new(b"\"tp\":\"00-");
    for dir in logs {
        let name = dir.display().to_string();
        let c = verify_dir(dir)?;
        let mut records = 0u64;
        each_line(dir, |line| {
            if task_member.find(line).is_none() {
                return;
            }
            let Ok(row) = serde_json::from_slice::<Row>(line) else {
                return;
            };
            if row.task.as_deref() != Some(task) {
                return;
            }
            records += 1;
            if calls.len() < MAX_TRACE_CALLS {
                calls.push(row.into_call(&name));
            } else {
                truncated += 1;
            }
        })?;
        checks.push(LogCheck {
            log: name,
            lines: c.lines,
            broken: c.broken,
            partial: c.partial.is_some(),
            anchor: c.anchor.map(|a| a.file),
            head: c.head.map(|(seq, h)| format!("{seq} {h}")),
            records,
        });
    }
    // Records of the same traces that carry no task (a hop that got the traceparent only).
    // Only authenticated records say which traces are the task's: a refused proof's
    // traceparent is a claim anyone can make, and would pull other traffic in.
    let ids: BTreeSet<String> = calls
        .iter()
        .filter(|c| c.authenticated())
        .filter_map(|c| c.tp.as_deref().and_then(trace_id).map(str::to_owned))
        .collect();
    if !ids.is_empty() {
        for (dir, check) in logs.iter().zip(checks.iter_mut()) {
            let name = dir.display().to_string();
            each_line(dir, |line| {
                // A record with a task (this one or another) is never joined by trace id.
                if any_tp.find(line).is_none() || any_task.find(line).is_some() {
                    return;
                }
                let Ok(row) = serde_json::from_slice::<Row>(line) else {
                    return;
                };
                if row.task.is_some()
                    || !row
                        .tp
                        .as_deref()
                        .and_then(trace_id)
                        .is_some_and(|t| ids.contains(t))
                {
                    return;
                }
                check.records += 1;
                if calls.len() < MAX_TRACE_CALLS {
                    calls.push(row.into_call(&name));
                } else {
                    truncated += 1;
                }
            })?;
        }
    }
    let mut events = Vec::new();
    for e in enclaves {
        events.extend(enclave_events(e, task)?);
    }
    // By the instant each time names, not its text: RFC 3339 drops a fraction's trailing
    // zeros ("06.81Z" is before "06.815Z" but sorts after it) and may carry an offset.
    // A time that does not parse sorts first.
    let mut timed: Vec<(Option<i128>, TraceCall)> =
        calls.into_iter().map(|c| (instant(&c.time), c)).collect();
    timed.sort_by(|(ta, a), (tb, b)| (ta, &a.log, a.seq).cmp(&(tb, &b.log, b.seq)));
    let (calls, unverified): (Vec<_>, Vec<_>) = timed
        .into_iter()
        .map(|(_, c)| c)
        .partition(TraceCall::authenticated);
    let (tree, events) = build_tree(calls, events);
    Ok(Trace {
        task: task.to_owned(),
        logs: checks,
        trace_ids: ids.into_iter().collect(),
        tree,
        unverified,
        events,
        truncated,
    })
}

/// The instant an RFC 3339 time names, in nanoseconds since the Unix epoch.
fn instant(time: &str) -> Option<i128> {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(time::OffsetDateTime::unix_timestamp_nanos)
}

/// A node under construction: children by actor, in first-seen order.
#[derive(Default)]
struct Building {
    calls: Vec<TraceCall>,
    order: Vec<String>,
    children: BTreeMap<String, Building>,
}

impl Building {
    fn child(&mut self, actor: &str) -> &mut Building {
        if !self.children.contains_key(actor) {
            self.order.push(actor.to_owned());
        }
        self.children.entry(actor.to_owned()).or_default()
    }

    fn finish(mut self, events: &mut Vec<EnclaveEvent>) -> Vec<TraceNode> {
        let mut out = Vec::new();
        for actor in std::mem::take(&mut self.order) {
            let Some(b) = self.children.remove(&actor) else {
                continue;
            };
            let (delegated, rest): (Vec<_>, Vec<_>) = std::mem::take(events)
                .into_iter()
                .partition(|e| e.subject == actor);
            *events = rest;
            out.push(TraceNode {
                actor,
                delegated,
                calls: b.calls.clone(),
                children: Building {
                    calls: Vec::new(),
                    ..b
                }
                .finish(events),
            });
        }
        out
    }
}

/// The tree of who called what for whom: each call under its actors path (principal first;
/// a call without actors under its key's DID), delegation events at their subject.
fn build_tree(
    calls: Vec<TraceCall>,
    mut events: Vec<EnclaveEvent>,
) -> (Vec<TraceNode>, Vec<EnclaveEvent>) {
    let mut root = Building::default();
    for c in calls {
        let path: Vec<String> = if c.actors.is_empty() {
            vec![c.did.clone().unwrap_or_default()]
        } else {
            c.actors.clone()
        };
        let mut node = &mut root;
        for a in &path {
            node = node.child(a);
        }
        node.calls.push(c);
    }
    let tree = root.finish(&mut events);
    (tree, events)
}

/// `s` safe to print on a terminal: every control character (C0, DEL, C1), bidi control and
/// line or paragraph separator written as `\u{…}`, so that a record's bytes can neither
/// drive the terminal (ESC, OSC, CSI) nor draw lines of their own in the tree.
pub fn escape_for_terminal(s: &str) -> std::borrow::Cow<'_, str> {
    fn bad(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    }
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The trace as text: the logs and their chains (each with its head, to compare with a copy
/// kept elsewhere: lines cut from a log's end leave its chain intact), then the tree, then
/// the unauthenticated records of the task. Every field is escaped
/// ([`escape_for_terminal`]).
pub fn render(t: &Trace) -> String {
    let e = escape_for_terminal;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "task {} — {} records in {} logs; trace ids: {}",
        e(&t.task),
        t.records(),
        t.logs.len(),
        if t.trace_ids.is_empty() {
            "none".to_owned()
        } else {
            e(&t.trace_ids.join(", ")).into_owned()
        }
    );
    for l in &t.logs {
        let state = match &l.broken {
            Some(b) => format!("CHAIN BROKEN at {}", e(b)),
            None => match &l.anchor {
                Some(a) => format!("chain intact from the checkpoint of {}", e(a)),
                None => "chain intact".to_owned(),
            },
        };
        let head = match l.head.as_deref().and_then(|h| h.split_once(' ')) {
            Some((seq, hash)) => format!("; head: seq {} sha256 {}", e(seq), e(hash)),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "log {}: {} lines, {state}{}, {} records of the task{head}",
            e(&l.log),
            l.lines,
            if l.partial { ", partial last line" } else { "" },
            l.records
        );
    }
    for (i, n) in t.tree.iter().enumerate() {
        render_node(&mut s, n, "", i + 1 == t.tree.len(), 0);
    }
    if !t.unverified.is_empty() {
        let _ = writeln!(
            s,
            "claimed by refused requests, no verified key recorded (NOT verified: a refused \
             proof may name any task or trace): {}",
            t.unverified.len()
        );
        for (i, c) in t.unverified.iter().enumerate() {
            let b = if i + 1 == t.unverified.len() {
                "└─ "
            } else {
                "├─ "
            };
            let _ = writeln!(s, "{b}{}", call_line(c));
        }
    }
    if t.truncated > 0 {
        let _ = writeln!(
            s,
            "… {} more records of the task not shown (the trace keeps {MAX_TRACE_CALLS})",
            t.truncated
        );
    }
    for ev in &t.events {
        let _ = writeln!(
            s,
            "enclave event (no call of its subject in the logs): delegate {} to {} under {} (seq {}, at {}, {})",
            e(&ev.digest),
            e(&ev.subject),
            e(&ev.parent),
            ev.seq,
            ev.at,
            e(&ev.source)
        );
    }
    s
}

/// One call as a line of the tree, every field escaped.
fn call_line(c: &TraceCall) -> String {
    let e = escape_for_terminal;
    let mut line = format!(
        "{} {} {} {}",
        e(&c.time),
        e(&c.kind),
        e(c.method.as_deref().unwrap_or("-")),
        e(c.url.as_deref().unwrap_or("-"))
    );
    if !c.calls.is_empty() {
        let _ = write!(line, " [{}]", e(&c.calls.join(", ")));
    }
    let _ = write!(line, " → {}", e(&c.decision));
    if let Some(r) = &c.reason {
        let _ = write!(line, " {}", e(r));
    }
    if let Some(u) = c.upstream_status {
        let _ = write!(line, " (upstream {u})");
    }
    if let Some(t) = &c.token {
        let _ = write!(line, " token {}", e(t));
    }
    let _ = write!(line, "  ({} seq {}", e(&c.log), c.seq);
    if let Some(sp) = &c.span {
        let _ = write!(line, ", span {}", e(sp));
    }
    line.push(')');
    line
}

fn render_node(s: &mut String, n: &TraceNode, prefix: &str, last: bool, depth: usize) {
    let e = escape_for_terminal;
    let (branch, next) = if depth == 0 {
        ("", String::new())
    } else if last {
        ("└─ ", format!("{prefix}   "))
    } else {
        ("├─ ", format!("{prefix}│  "))
    };
    let role = match depth {
        0 => "principal",
        _ => "acting for the one above",
    };
    let _ = writeln!(s, "{prefix}{branch}{} ({role})", e(&n.actor));
    for d in &n.delegated {
        let _ = writeln!(
            s,
            "{next}   delegated {} under {} (enclave seq {}, at {}, head {})",
            e(&d.digest),
            e(&d.parent),
            d.seq,
            d.at,
            e(&d.head)
        );
    }
    let items = n.calls.len() + n.children.len();
    for (i, c) in n.calls.iter().enumerate() {
        let b = if i + 1 == items { "└─ " } else { "├─ " };
        let _ = writeln!(s, "{next}{b}{}", call_line(c));
    }
    for (i, child) in n.children.iter().enumerate() {
        render_node(s, child, &next, n.calls.len() + i + 1 == items, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuditLog, AuditRecord};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cada-trace-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rec(time: &str, kind: &'static str, actors: &[&str], task: Option<&str>) -> AuditRecord {
        AuditRecord {
            time: time.into(),
            kind,
            decision: "accept",
            method: Some("POST".into()),
            url: Some("https://mcp.example/mcp".into()),
            did: actors.last().map(|a| (*a).to_owned()),
            task: task.map(str::to_owned),
            tp: Some(TP.into()),
            actors: actors.iter().map(|a| (*a).to_owned()).collect(),
            ..AuditRecord::default()
        }
    }

    /// Two logs (a gate's and an STS's) of three tasks; task t1 by owner → planner → worker.
    async fn logs(tag: &str) -> (PathBuf, PathBuf) {
        let gate = tmp(&format!("{tag}-gate"));
        let sts = tmp(&format!("{tag}-sts"));
        let g = AuditLog::open(&gate, 1 << 20).unwrap();
        let s = AuditLog::open(&sts, 1 << 20).unwrap();
        let owner_planner = ["did:web:owner", "did:key:planner"];
        let chain = ["did:web:owner", "did:key:planner", "did:key:worker"];
        g.append(rec(
            "2026-01-01T00:00:01Z",
            "gate",
            &owner_planner,
            Some("t1"),
        ))
        .await
        .unwrap();
        g.append(rec("2026-01-01T00:00:02Z", "gate", &chain, Some("other")))
            .await
            .unwrap();
        s.append(rec("2026-01-01T00:00:03Z", "token", &chain, Some("t1")))
            .await
            .unwrap();
        let mut refused = rec("2026-01-01T00:00:04Z", "gate", &chain, Some("t1"));
        refused.decision = "reject";
        refused.reason = Some("contract.not_permitted.tool".into());
        refused.rpc = vec![crate::RpcRecord {
            method: "tools/call".into(),
            target: Some("delete".into()),
            arguments: None,
        }];
        g.append(refused).await.unwrap();
        // The same trace, no task: joined by its trace id.
        let mut up = rec("2026-01-01T00:00:05Z", "gate.upstream", &chain, None);
        up.decision = "forwarded";
        up.upstream_status = Some(200);
        up.span = Some("0102030405060708".into());
        g.append(up).await.unwrap();
        // Another trace, no task: not joined.
        let mut other = rec("2026-01-01T00:00:06Z", "gate", &chain, None);
        other.tp = Some(TP.replace("4bf9", "5bf9"));
        g.append(other).await.unwrap();
        (gate, sts)
    }

    #[tokio::test]
    async fn the_records_of_a_task_are_joined_across_logs_into_the_tree() {
        let (gate, sts) = logs("join").await;
        let export = tmp("join-enclave.json");
        std::fs::write(
            &export,
            serde_json::json!({"owner": "did:web:owner", "contracts": [], "events": [
                {"seq": 3, "kind": "delegate", "detail": "DDD did:key:worker PPP t1", "at": 5, "head": "h"},
                {"seq": 4, "kind": "delegate", "detail": "EEE did:key:x PPP other", "at": 6, "head": "h2"},
                {"seq": 5, "kind": "install", "detail": "PPP", "at": 7, "head": "h3"}
            ]})
            .to_string(),
        )
        .unwrap();
        let t = trace(
            "t1",
            &[gate.clone(), sts.clone()],
            std::slice::from_ref(&export),
        )
        .unwrap();
        assert!(t.intact());
        assert_eq!(t.records(), 4, "{t:#?}");
        assert_eq!(t.trace_ids, ["4bf92f3577b34da6a3ce929d0e0e4736"]);
        assert_eq!(t.tree.len(), 1);
        let owner = &t.tree[0];
        assert_eq!(owner.actor, "did:web:owner");
        let planner = &owner.children[0];
        assert_eq!(planner.actor, "did:key:planner");
        assert_eq!(planner.calls.len(), 1);
        let worker = &planner.children[0];
        assert_eq!(worker.actor, "did:key:worker");
        assert_eq!(worker.delegated.len(), 1);
        assert_eq!(worker.delegated[0].digest, "DDD");
        let kinds: Vec<_> = worker.calls.iter().map(|c| c.kind.as_str()).collect();
        assert_eq!(kinds, ["token", "gate", "gate.upstream"]);
        assert_eq!(
            worker.calls[1].reason.as_deref(),
            Some("contract.not_permitted.tool")
        );
        assert!(t.events.is_empty());
        let text = render(&t);
        for want in [
            "did:web:owner (principal)",
            "└─ did:key:planner",
            "did:key:worker (acting for the one above)",
            "delegated DDD under PPP",
            "[tools/call delete] → reject contract.not_permitted.tool",
            "→ forwarded (upstream 200)",
            "span 0102030405060708",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(!text.contains("other"), "{text}");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json["tree"][0]["children"][0]["children"][0]["actor"],
            "did:key:worker"
        );
        // A task nobody ran: nothing joined, chains still verified.
        let none = trace("t9", &[gate.clone(), sts.clone()], &[]).unwrap();
        assert_eq!((none.records(), none.tree.len()), (0, 0));
        assert!(none.intact());
        for d in [gate, sts] {
            std::fs::remove_dir_all(d).unwrap();
        }
        std::fs::remove_file(export).unwrap();
    }

    #[tokio::test]
    async fn a_tampered_log_is_reported_by_the_trace() {
        let (gate, sts) = logs("tamper").await;
        let file = gate.join(crate::file_name(1));
        let text = std::fs::read_to_string(&file).unwrap();
        // Hide the refusal: make it an acceptance.
        let edited = text.replacen("\"reject\"", "\"accept\"", 1);
        assert_ne!(edited, text);
        std::fs::write(&file, edited).unwrap();
        let t = trace("t1", &[gate.clone(), sts.clone()], &[]).unwrap();
        assert!(!t.intact());
        let broken = t.logs[0].broken.as_deref().unwrap();
        assert!(broken.contains("prev does not match"), "{broken}");
        assert!(t.logs[1].broken.is_none());
        assert!(render(&t).contains("CHAIN BROKEN"), "{}", render(&t));
        for d in [gate, sts] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    /// RFC 3339 times drop trailing zeros of their fraction ("06.81Z" is 06.810), so their
    /// text does not sort in time order: calls are ordered by the instant they name.
    #[tokio::test]
    async fn calls_are_in_time_order_whatever_digits_their_times_keep() {
        let dir = tmp("time-order");
        let log = AuditLog::open(&dir, 1 << 20).unwrap();
        let actors = ["did:web:owner", "did:key:worker"];
        for (time, kind) in [
            ("2026-01-01T00:00:06.81Z", "first"),
            ("2026-01-01T00:00:06.815Z", "second"),
            // 00:00:07Z written with an offset: before the next, though its text sorts last.
            ("2026-01-01T01:00:07+01:00", "third"),
            ("2026-01-01T00:00:07.5Z", "fourth"),
            ("2026-01-01T00:00:10Z", "fifth"),
        ] {
            let mut r = rec(time, "gate", &actors, Some("t1"));
            r.reason = Some(kind.into());
            log.append(r).await.unwrap();
        }
        let t = trace("t1", std::slice::from_ref(&dir), &[]).unwrap();
        let worker = &t.tree[0].children[0];
        let order: Vec<_> = worker
            .calls
            .iter()
            .map(|c| c.reason.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(order, ["first", "second", "third", "fourth", "fifth"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A refused proof (no verified key) that claims the task and another trace id is
    /// listed apart, as a claim, and its trace id joins nothing to the task.
    #[tokio::test]
    async fn an_unauthenticated_record_never_widens_the_join() {
        let dir = tmp("unauth");
        let log = AuditLog::open(&dir, 1 << 20).unwrap();
        let actors = ["did:web:owner", "did:key:worker"];
        log.append(rec("2026-01-01T00:00:01Z", "pop", &actors, Some("t1")))
            .await
            .unwrap();
        let other = TP.replace("4bf9", "5bf9");
        // Another trace's accepted call, no task.
        let mut private = rec("2026-01-01T00:00:02Z", "pop", &actors, None);
        private.tp = Some(other.clone());
        private.url = Some("https://api.example/private".into());
        log.append(private).await.unwrap();
        // The forged claim: the task and the other trace, refused before any key was trusted.
        let mut forged = rec("2026-01-01T00:00:03Z", "pop", &[], Some("t1"));
        forged.decision = "reject";
        forged.reason = Some("pop.evidence_required".into());
        forged.tp = Some(other);
        log.append(forged).await.unwrap();
        let t = trace("t1", std::slice::from_ref(&dir), &[]).unwrap();
        assert_eq!(t.trace_ids, ["4bf92f3577b34da6a3ce929d0e0e4736"]);
        assert_eq!(t.records(), 2, "{t:#?}");
        assert_eq!(t.tree.len(), 1, "{t:#?}");
        assert_eq!(t.tree[0].actor, "did:web:owner");
        assert_eq!(t.unverified.len(), 1);
        assert_eq!(
            t.unverified[0].reason.as_deref(),
            Some("pop.evidence_required")
        );
        let text = render(&t);
        assert!(!text.contains("private"), "{text}");
        assert!(text.contains("NOT verified"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn control_and_bidi_characters_are_escaped_for_the_terminal() {
        let e = |s: &str| escape_for_terminal(s).into_owned();
        assert_eq!(e("https://a.example/x?y=1"), "https://a.example/x?y=1");
        assert_eq!(e("a\u{1b}]0;t\u{7}b"), "a\\u{1b}]0;t\\u{7}b");
        assert_eq!(e("\r\n\t\u{7f}\u{9b}"), "\\u{d}\\u{a}\\u{9}\\u{7f}\\u{9b}");
        assert_eq!(
            e("x\u{202e}y\u{2066}\u{2028}"),
            "x\\u{202e}y\\u{2066}\\u{2028}"
        );
        assert_eq!(e("did:key:zé→"), "did:key:zé→");
    }

    /// Every field of the text is escaped (one record, one line), and each log's head is
    /// printed: lines cut from a log's end show only against a copy of it.
    #[tokio::test]
    async fn the_text_escapes_records_and_names_each_logs_head() {
        let dir = tmp("escape");
        let log = AuditLog::open(&dir, 1 << 20).unwrap();
        let actors = ["did:web:owner\u{1b}[2J", "did:key:worker"];
        let mut r = rec("2026-01-01T00:00:01Z", "gate", &actors, Some("t1"));
        r.url = Some("https://a.example/x\u{1b}]0;owned\u{7}\n└─ forged → accept".into());
        r.reason = Some("why\r".into());
        log.append(r).await.unwrap();
        let t = trace("t1", std::slice::from_ref(&dir), &[]).unwrap();
        let text = render(&t);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.lines().any(|l| l.starts_with("└─ forged")), "{text}");
        assert!(
            text.contains("x\\u{1b}]0;owned\\u{7}\\u{a}└─ forged"),
            "{text}"
        );
        let head = t.logs[0].head.clone().unwrap();
        let (seq, hash) = head.split_once(' ').unwrap();
        assert!(
            text.contains(&format!("head: seq {seq} sha256 {hash}")),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Over [`MAX_TRACE_CALLS`] records of the task, the rest is counted and said.
    #[test]
    fn records_over_the_cap_are_counted_not_kept() {
        let dir = tmp("cap");
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        for i in 0..MAX_TRACE_CALLS + 5 {
            let r = serde_json::json!({"seq": i + 1, "time": "2026-01-01T00:00:01Z",
                "kind": "gate", "decision": "accept", "did": "did:key:w", "task": "t1"});
            text.push_str(&format!("{r}\n"));
        }
        std::fs::write(dir.join(crate::file_name(1)), text).unwrap();
        let t = trace("t1", std::slice::from_ref(&dir), &[]).unwrap();
        assert_eq!(t.truncated, 5);
        assert_eq!(t.records(), u64::try_from(MAX_TRACE_CALLS + 5).unwrap());
        assert_eq!(t.tree[0].calls.len(), MAX_TRACE_CALLS);
        assert!(render(&t).contains("… 5 more records of the task not shown"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_log_or_bad_export_is_an_error() {
        assert!(trace("t", &[tmp("nothing-here")], &[]).is_err());
        let bad = tmp("bad-export.json");
        std::fs::write(&bad, "{}").unwrap();
        assert!(enclave_events(&bad, "t").is_err());
        std::fs::remove_file(bad).unwrap();
    }
}
