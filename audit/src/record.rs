//! The one record format of every audit log.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Calls a short record keeps (the rest are counted in `rpc_count`).
pub const SHORT_RPC: usize = 4;

/// Longest line (bytes, `seq` and `prev` included, newline excluded) of a short record
/// ([`AuditRecord::shorten`]): what one unauthenticated request can cost at most.
pub const MAX_SHORT_LINE: usize = 2048;

/// Longest line of an `audit.dropped` record (at most [`MAX_DROPPED_REASONS`] reasons).
pub const MAX_DROPPED_LINE: usize = 4096;

/// Reasons an `audit.dropped` record names apart; the others are counted as `other`.
pub const MAX_DROPPED_REASONS: usize = 32;

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
    /// The client's address, on the short record of an unauthenticated request
    /// ([`AuditRecord::shorten`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// How many calls the request made, when `rpc` holds only the first
    /// [`SHORT_RPC`] of them (short records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_count: Option<u64>,
    /// Unauthenticated records not written, by reason (the `audit.dropped` record of an
    /// interval; see [`crate::FloodLimits`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
    /// What a checkpoint record (the first line of every file) says about the file before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// The task the request was part of (`cada.task` of the proof; chain of custody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The W3C traceparent the request came with (`cada.tp` of the proof).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp: Option<String>,
    /// This hop's own span id (16 lower-case hex), when it sent the request on (`cada-gate`:
    /// the parent id of the `traceparent` it forwarded upstream) or exported a span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<String>,
    /// Who acted for whom, principal first: the owner, then each delegate down to the
    /// proof key's DID (`[owner, planner, worker]` under a chain, `[owner, agent]` under an
    /// owner's contract). Empty when no contract governs the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<String>,
    /// The digests of the delegation chain above `contract`, root first (`cada.dch`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dch: Vec<String>,
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

/// The head of a file: the first line of every audit file is a checkpoint naming the line
/// before it (the last line of the previous file, or nothing for the first file of a log).
/// When older files were removed by retention, the first remaining file's checkpoint is
/// the trust anchor of `cada-verify audit verify`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The number of the file it heads (`audit-NNNNNN.jsonl`): a renamed file is caught.
    pub file: u32,
    /// `seq` of the previous file's last line (0: none, a new log).
    pub prev_seq: u64,
    /// Hex SHA-256 of the previous file's last line (64 zeros: none).
    pub prev_hash: String,
}

/// Bytes of `s` as serde_json writes it inside a JSON string.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest prefix of `s` whose JSON-escaped form fits in `max` bytes.
pub(crate) fn clip_json(s: &str, max: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += json_len(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out
}

fn clip_opt(v: &mut Option<String>, max: usize) {
    if let Some(s) = v.as_mut() {
        if s.len() > max / 6 {
            *s = clip_json(s, max);
        }
    }
}

impl AuditRecord {
    /// Makes this the short record of an unauthenticated request: every field clipped to a
    /// few dozen bytes (the URL to 256), at most [`SHORT_RPC`] calls without their argument
    /// digests (`rpc_count` says how many there were), so that its line is at most
    /// [`MAX_SHORT_LINE`] bytes whatever the request held.
    pub fn shorten(&mut self) {
        self.time = clip_json(&self.time, 40);
        self.kind = if self.kind.len() > 24 { "?" } else { self.kind };
        self.decision = if self.decision.len() > 16 {
            "?"
        } else {
            self.decision
        };
        clip_opt(&mut self.jti, 64);
        clip_opt(&mut self.jkt, 64);
        clip_opt(&mut self.did, 64);
        clip_opt(&mut self.platform, 16);
        clip_opt(&mut self.measurement_digest, 64);
        clip_opt(&mut self.method, 16);
        clip_opt(&mut self.url, 256);
        clip_opt(&mut self.reason, 64);
        clip_opt(&mut self.contract, 64);
        clip_opt(&mut self.token, 64);
        clip_opt(&mut self.peer, 48);
        if self.rpc.len() > SHORT_RPC {
            self.rpc_count = Some(self.rpc.len() as u64);
            self.rpc.truncate(SHORT_RPC);
        }
        for r in &mut self.rpc {
            r.method = clip_json(&r.method, 32);
            clip_opt(&mut r.target, 64);
            r.arguments = None;
        }
        self.dropped.clear();
        self.checkpoint = None;
        clip_opt(&mut self.task, 128);
        clip_opt(&mut self.tp, 55);
        clip_opt(&mut self.span, 16);
        self.actors.clear();
        self.dch.clear();
    }
}
