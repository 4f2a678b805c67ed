//! The pending-request store: in memory, time injected (milliseconds since the epoch).
//!
//! * ids are 128 random bits (unpadded base64url, [`cada_protocol::stepup::ID_LEN`]);
//! * per enclave key (its RFC 7638 thumbprint): at most [`Limits::max_pending_per_key`]
//!   pending requests and [`Limits::max_per_hour`] filed in any hour (approval fatigue),
//!   else `stepup.rate_limited` with the seconds until a place frees;
//! * a request the owner has not answered within [`Limits::ttl_ms`] expires; ended requests
//!   (answered or expired) are kept [`Limits::keep_ended_ms`] so that the agent can read the
//!   outcome, then forgotten (`stepup.unknown`);
//! * polls only by the filing key, CIBA `slow_down` when faster than the interval;
//! * a call the owner denied is not put before the owner again for
//!   [`Limits::denial_cooloff_ms`] (review stepup-2, finding 1): a filing by the same key
//!   for the same server, tool and arguments — compared after removing the characters the
//!   page flags as hidden ([`crate::web::render::is_hidden`]: invisible, format, bidi …) —
//!   is refused `stepup.denied` ([`FileRefused::Denied`]) with the time it may be asked
//!   again. Denials are remembered as a 32-byte digest of that comparison key apart from
//!   the requests (so for the whole window even when the request itself is forgotten), at
//!   most [`Limits::max_requests`] of them.
use std::collections::{BTreeMap, HashMap, VecDeque};

use cada_attestation_verifier::UnixTime;
use cada_protocol::stepup::{codes, RequestedCall, StepUpRequest};
use serde_json::Value;

/// One hour in milliseconds.
const HOUR_MS: u64 = 3_600_000;
/// CIBA §11: after `slow_down` the interval grows by at least 5 s.
const SLOW_DOWN_STEP_MS: u64 = 5_000;
/// The longest interval `slow_down` asks for.
const MAX_INTERVAL_MS: u64 = 60_000;
/// How much earlier than the interval a poll may come without being too fast (a client
/// that sleeps exactly `interval` seconds between polls is not penalised for jitter).
const POLL_TOLERANCE_MS: u64 = 250;

/// The store's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Pending requests one enclave key may have at once (default 5).
    pub max_pending_per_key: usize,
    /// Requests one enclave key may file in any hour (default 30).
    pub max_per_hour: usize,
    /// Requests held at once, all keys together (a bound on memory; default 10,000).
    pub max_requests: usize,
    /// How long a request waits for the owner (default 10 minutes).
    pub ttl_ms: u64,
    /// How long an ended request is kept for the agent to read (default 1 hour).
    pub keep_ended_ms: u64,
    /// The poll interval the agent is given (default 2 s).
    pub interval_ms: u64,
    /// How long after the owner denies a call the same call (same key, server, tool and
    /// arguments, hidden characters ignored) is refused `stepup.denied` instead of being
    /// put before the owner again (default 15 minutes; 0: never).
    pub denial_cooloff_ms: u64,
}

/// The default of [`Limits::denial_cooloff_ms`]: 15 minutes.
pub const DEFAULT_DENIAL_COOLOFF_MS: u64 = 15 * 60_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending_per_key: 5,
            max_per_hour: 30,
            max_requests: 10_000,
            ttl_ms: 600_000,
            keep_ended_ms: HOUR_MS,
            interval_ms: cada_protocol::stepup::DEFAULT_INTERVAL_SECS * 1000,
            denial_cooloff_ms: DEFAULT_DENIAL_COOLOFF_MS,
        }
    }
}

/// The enclave key that filed a request, as its verified proof and evidence showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filer {
    /// RFC 7638 thumbprint of the enclave key.
    pub jkt: String,
    /// Its `did:key` (the subject of any grant).
    pub did: String,
    /// The platform of its evidence (`nitro`, `sev-snp`, `sim` …).
    pub platform: String,
    /// The measurements its evidence attests (`PCR0` … or `MEASUREMENT` … → hex).
    pub measurements: BTreeMap<String, String>,
    /// Hex SHA-256 over the sorted measurements (as in audit records and access tokens).
    pub measurement_digest: String,
    /// Whether the evidence came from an emulator.
    pub emulated: bool,
}

/// How a request ended, or that it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for the owner.
    Pending,
    /// An owner's decision is being applied (signing, audit): other decisions are refused,
    /// polls still see `pending`.
    Deciding,
    /// Approved: the grant (compact `vc+jwt`) for the filing key.
    Approved {
        /// The grant.
        grant: String,
        /// Its digest (`cada.dtc`).
        digest: String,
        /// Until when it is valid (Unix seconds).
        valid_until: u64,
        /// `None`: once (single use); `Some(n)`: n minutes.
        minutes: Option<u32>,
        /// Who approved (the page's passkey name).
        by: String,
        /// When (ms).
        at_ms: u64,
    },
    /// Denied by the owner.
    Denied {
        /// Who denied.
        by: String,
        /// When (ms).
        at_ms: u64,
    },
    /// Expired unanswered.
    Expired {
        /// When (ms).
        at_ms: u64,
    },
}

impl State {
    /// The wire status (`Deciding` reads as pending).
    pub fn status(&self) -> cada_protocol::stepup::Status {
        use cada_protocol::stepup::Status;
        match self {
            State::Pending | State::Deciding => Status::Pending,
            State::Approved { .. } => Status::Approved,
            State::Denied { .. } => Status::Denied,
            State::Expired { .. } => Status::Expired,
        }
    }

    fn ended_at(&self) -> Option<u64> {
        match self {
            State::Pending | State::Deciding => None,
            State::Approved { at_ms, .. }
            | State::Denied { at_ms, .. }
            | State::Expired { at_ms } => Some(*at_ms),
        }
    }
}

/// One request.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its id.
    pub id: String,
    /// Who filed it.
    pub filer: Filer,
    /// What the agent asked for (bounded and checked by [`StepUpRequest::parse`]).
    pub request: StepUpRequest,
    /// What the service knows of the contract the agent worked under (a verified copy sent
    /// in `CADA-Contract`), as JSON for the page.
    pub contract: Option<serde_json::Value>,
    /// When it was filed (ms).
    pub created_ms: u64,
    /// When it expires unanswered (ms).
    pub expires_ms: u64,
    /// Where it stands.
    pub state: State,
    /// The poll interval this request's agent must keep (grows with `slow_down`).
    pub interval_ms: u64,
    /// The last poll (ms).
    pub last_poll_ms: Option<u64>,
    /// Whether the grant was handed out (audited once).
    pub delivered: bool,
}

/// Why a request could not be filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    /// Seconds until a place frees (`Retry-After`).
    pub retry_after_secs: u64,
    /// Which limit, for people.
    pub message: String,
}

/// A filing of a call the owner denied within the cool-off ([`Limits::denial_cooloff_ms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedRecently {
    /// When the owner denied it (ms).
    pub denied_ms: u64,
    /// From when it may be asked again (ms).
    pub until_ms: u64,
    /// Seconds until then (`Retry-After`).
    pub retry_after_secs: u64,
    /// The rule and the time, for people.
    pub message: String,
}

/// Why a request could not be filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefused {
    /// A limit on pending or hourly requests, or on the store (`stepup.rate_limited`).
    RateLimited(RateLimited),
    /// The owner denied this call within the cool-off (`stepup.denied`).
    Denied(DeniedRecently),
}

impl FileRefused {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            FileRefused::RateLimited(_) => codes::RATE_LIMITED,
            FileRefused::Denied(_) => codes::DENIED,
        }
    }
}

/// What a poll finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Still pending; `slow_down` when polled faster than the interval (which then grew to
    /// `interval_ms`).
    Pending {
        /// Whether this poll came too early.
        slow_down: bool,
        /// The interval to keep from now on.
        interval_ms: u64,
    },
    /// Approved: the grant; `first` when this is the first time it is handed out.
    Approved {
        /// The grant.
        grant: String,
        /// Its digest.
        digest: String,
        /// First delivery.
        first: bool,
    },
    /// Denied.
    Denied,
    /// Expired.
    Expired,
}

/// Why a poll was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollRefused {
    /// No such request (`stepup.unknown`).
    Unknown,
    /// Filed by another key (`stepup.other_key`).
    OtherKey,
}

impl PollRefused {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            PollRefused::Unknown => codes::UNKNOWN,
            PollRefused::OtherKey => codes::OTHER_KEY,
        }
    }
}

/// The store.
#[derive(Debug, Default)]
pub struct Store {
    limits: Limits,
    entries: HashMap<String, Entry>,
    /// Per key: when its requests of the last hour were filed (oldest first).
    filed: HashMap<String, VecDeque<u64>>,
    /// Denied calls ([`call_key`]) → (denied at, refused until), ms.
    denials: HashMap<[u8; 32], (u64, u64)>,
}

impl Store {
    /// An empty store with `limits`.
    pub fn new(limits: Limits) -> Self {
        Store {
            limits,
            entries: HashMap::new(),
            filed: HashMap::new(),
            denials: HashMap::new(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Files a request under `id` (fresh random, from the caller), or — when the same key
    /// already has a pending request for the identical call (audience, method, tool,
    /// arguments, want) — returns that one instead (`Ok((entry, false))`), so that an agent
    /// retrying does not ask its owner twice. `Err` when a limit refuses it, or when the
    /// owner denied the same call within the cool-off ([`FileRefused::Denied`]).
    pub fn file(
        &mut self,
        id: String,
        filer: Filer,
        request: StepUpRequest,
        contract: Option<serde_json::Value>,
        now_ms: u64,
    ) -> Result<(Entry, bool), FileRefused> {
        self.expire(now_ms);
        if let Some(same) = self.entries.values().find(|e| {
            e.filer.jkt == filer.jkt
                && matches!(e.state, State::Pending | State::Deciding)
                && e.request.request == request.request
                && e.request.want == request.want
        }) {
            return Ok((same.clone(), false));
        }
        if let Some(refused) = self.denied_recently(&filer.jkt, &request.request, now_ms) {
            return Err(FileRefused::Denied(refused));
        }
        // Pending of this key: the one that expires first frees a place.
        let mut pending: Vec<u64> = self
            .entries
            .values()
            .filter(|e| {
                e.filer.jkt == filer.jkt && matches!(e.state, State::Pending | State::Deciding)
            })
            .map(|e| e.expires_ms)
            .collect();
        if pending.len() >= self.limits.max_pending_per_key {
            pending.sort_unstable();
            let first = pending.first().copied().unwrap_or(now_ms);
            return Err(FileRefused::RateLimited(RateLimited {
                retry_after_secs: secs_until(first, now_ms),
                message: format!(
                    "this enclave key has {} step-up requests waiting for the owner (at most {}); \
                     wait for an answer or for one to expire",
                    pending.len(),
                    self.limits.max_pending_per_key
                ),
            }));
        }
        if self.entries.len() >= self.limits.max_requests {
            self.forget(now_ms);
        }
        let times = self.filed.entry(filer.jkt.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| t.saturating_add(HOUR_MS) <= now_ms)
        {
            times.pop_front();
        }
        if times.len() >= self.limits.max_per_hour {
            let oldest = times.front().copied().unwrap_or(now_ms);
            return Err(FileRefused::RateLimited(RateLimited {
                retry_after_secs: secs_until(oldest.saturating_add(HOUR_MS), now_ms),
                message: format!(
                    "this enclave key filed {} step-up requests in the last hour (at most {})",
                    times.len(),
                    self.limits.max_per_hour
                ),
            }));
        }
        if self.entries.len() >= self.limits.max_requests {
            return Err(FileRefused::RateLimited(RateLimited {
                retry_after_secs: secs_until(now_ms.saturating_add(self.limits.ttl_ms), now_ms),
                message: format!(
                    "the approval service holds {} requests, its limit; retry later",
                    self.entries.len()
                ),
            }));
        }
        times.push_back(now_ms);
        let entry = Entry {
            id: id.clone(),
            filer,
            request,
            contract,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.limits.ttl_ms),
            state: State::Pending,
            interval_ms: self.limits.interval_ms,
            last_poll_ms: None,
            delivered: false,
        };
        self.entries.insert(id, entry.clone());
        Ok((entry, true))
    }

    /// The refusal of a filing by `jkt` of `call` when the owner denied the same call
    /// (hidden characters ignored) less than [`Limits::denial_cooloff_ms`] before `now_ms`.
    fn denied_recently(
        &self,
        jkt: &str,
        call: &RequestedCall,
        now_ms: u64,
    ) -> Option<DeniedRecently> {
        if self.limits.denial_cooloff_ms == 0 || self.denials.is_empty() {
            return None;
        }
        let (denied_ms, until_ms) = *self.denials.get(&call_key(jkt, call))?;
        if until_ms <= now_ms {
            return None;
        }
        let retry_after_secs = secs_until(until_ms, now_ms);
        Some(DeniedRecently {
            denied_ms,
            until_ms,
            retry_after_secs,
            message: format!(
                "the owner denied this call ({} at {}) at {}; the same call — same server, tool \
                 and arguments, invisible and direction-changing characters ignored — is not put \
                 before the owner again until {} (in {} min): do not ask again before then, or \
                 ask for a different call",
                clip(&call.tool),
                clip(&call.audience),
                UnixTime::from_secs(denied_ms / 1000),
                UnixTime::from_secs(until_ms.div_ceil(1000)),
                retry_after_secs.div_ceil(60)
            ),
        })
    }

    /// Remembers that the owner denied `call` of `jkt` at `at_ms` (for the cool-off),
    /// within the bound on memory: expired denials go first, then the one that ends first.
    fn remember_denial(&mut self, jkt: &str, call: &RequestedCall, at_ms: u64) {
        let cooloff = self.limits.denial_cooloff_ms;
        if cooloff == 0 {
            return;
        }
        let cap = self.limits.max_requests.max(1);
        if self.denials.len() >= cap {
            self.denials.retain(|_, (_, until)| *until > at_ms);
        }
        while self.denials.len() >= cap {
            let Some(first) = self
                .denials
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.denials.remove(&first);
        }
        self.denials
            .insert(call_key(jkt, call), (at_ms, at_ms.saturating_add(cooloff)));
    }

    /// Expires pending requests whose time is up; returns them (to audit and count).
    pub fn expire(&mut self, now_ms: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        for e in self.entries.values_mut() {
            // A decision being applied finishes or rolls back first.
            if e.state == State::Pending && e.expires_ms <= now_ms {
                e.state = State::Expired { at_ms: now_ms };
                out.push(e.clone());
            }
        }
        out
    }

    /// Forgets ended requests older than [`Limits::keep_ended_ms`] and empty rate windows.
    pub fn forget(&mut self, now_ms: u64) {
        let keep = self.limits.keep_ended_ms;
        self.entries.retain(|_, e| {
            e.state
                .ended_at()
                .is_none_or(|t| t.saturating_add(keep) > now_ms)
        });
        self.filed.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| t.saturating_add(HOUR_MS) > now_ms)
        });
        self.denials.retain(|_, (_, until)| *until > now_ms);
    }

    /// One request.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Every request held, newest first.
    pub fn all(&self) -> Vec<&Entry> {
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        v
    }

    /// A poll of `id` by the key `jkt`.
    pub fn poll(&mut self, id: &str, jkt: &str, now_ms: u64) -> Result<Poll, PollRefused> {
        self.expire(now_ms);
        let e = self.entries.get_mut(id).ok_or(PollRefused::Unknown)?;
        if e.filer.jkt != jkt {
            return Err(PollRefused::OtherKey);
        }
        let previous = e.last_poll_ms.replace(now_ms);
        Ok(match &e.state {
            State::Pending | State::Deciding => {
                let too_fast = previous.is_some_and(|p| {
                    now_ms.saturating_sub(p).saturating_add(POLL_TOLERANCE_MS) < e.interval_ms
                });
                if too_fast {
                    e.interval_ms = e
                        .interval_ms
                        .saturating_add(SLOW_DOWN_STEP_MS)
                        .min(MAX_INTERVAL_MS);
                }
                Poll::Pending {
                    slow_down: too_fast,
                    interval_ms: e.interval_ms,
                }
            }
            State::Approved { grant, digest, .. } => {
                let first = !e.delivered;
                e.delivered = true;
                Poll::Approved {
                    grant: grant.clone(),
                    digest: digest.clone(),
                    first,
                }
            }
            State::Denied { .. } => Poll::Denied,
            State::Expired { .. } => Poll::Expired,
        })
    }

    /// Marks the grant of `id` as not yet handed out (its delivery record failed).
    pub fn undeliver(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            e.delivered = false;
        }
    }

    /// Starts applying a decision: the request must be pending (and not expired at
    /// `now_ms`); it becomes [`State::Deciding`] and its copy is returned.
    pub fn begin_decision(&mut self, id: &str, now_ms: u64) -> Result<Entry, DecisionRefused> {
        self.expire(now_ms);
        let e = self.entries.get_mut(id).ok_or(DecisionRefused::Unknown)?;
        match e.state {
            State::Pending => {
                e.state = State::Deciding;
                Ok(e.clone())
            }
            State::Deciding => Err(DecisionRefused::Decided("being answered")),
            State::Approved { .. } => Err(DecisionRefused::Decided("approved")),
            State::Denied { .. } => Err(DecisionRefused::Decided("denied")),
            State::Expired { .. } => Err(DecisionRefused::Expired),
        }
    }

    /// Ends a decision begun with [`Store::begin_decision`]: `Some(state)` applies it,
    /// `None` rolls it back to pending (signing or audit failed).
    /// A denial is remembered for [`Limits::denial_cooloff_ms`].
    pub fn end_decision(&mut self, id: &str, outcome: Option<State>) {
        let mut denied = None;
        if let Some(e) = self.entries.get_mut(id) {
            if e.state == State::Deciding {
                e.state = outcome.unwrap_or(State::Pending);
                if let State::Denied { at_ms, .. } = e.state {
                    denied = Some((e.filer.jkt.clone(), e.request.request.clone(), at_ms));
                }
            }
        }
        if let Some((jkt, call, at_ms)) = denied {
            self.remember_denial(&jkt, &call, at_ms);
        }
    }

    /// Removes a request that could not be recorded (the audit log failed): it was never
    /// filed, and does not count against its key.
    pub fn withdraw(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            if let Some(times) = self.filed.get_mut(&e.filer.jkt) {
                if let Some(i) = times.iter().rposition(|t| *t == e.created_ms) {
                    times.remove(i);
                }
            }
        }
    }

    /// Requests still waiting for the owner.
    pub fn pending_count(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Pending | State::Deciding))
            .count()
    }
}

/// Why a decision could not begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionRefused {
    /// No such request.
    Unknown,
    /// Already answered (or being answered): what it is.
    Decided(&'static str),
    /// Expired.
    Expired,
}

/// `s` without the characters the page flags as hidden ([`crate::web::render::is_hidden`]):
/// what two filings are compared by, never what is stored or shown.
pub fn fold_hidden(s: &str) -> String {
    s.chars()
        .filter(|c| !crate::web::render::is_hidden(*c))
        .collect()
}

/// The digest two filings of the same call share: SHA-256 over the filing key, the
/// server, the tool and the arguments, strings (names included) folded with
/// [`fold_hidden`], object members in sorted order, numbers by value (`100`, `100.0` and
/// `1e2` alike). Every part is length-prefixed, so no two calls run together.
pub fn call_key(jkt: &str, call: &RequestedCall) -> [u8; 32] {
    let mut out = Vec::with_capacity(256);
    put(&mut out, b'k', jkt.as_bytes());
    put(&mut out, b'a', fold_hidden(&call.audience).as_bytes());
    put(&mut out, b't', fold_hidden(&call.tool).as_bytes());
    let mut args = Vec::new();
    canonical_members(&call.arguments, &mut args);
    put(&mut out, b'A', &args);
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &out);
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

/// Appends `tag`, the length of `bytes` and `bytes`.
fn put(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The members of an object, each (folded name, value) encoded, in sorted order (names
/// that fold alike stay two members).
fn canonical_members(m: &serde_json::Map<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<Vec<u8>> = m
        .iter()
        .map(|(k, v)| {
            let mut one = Vec::new();
            put(&mut one, b'n', fold_hidden(k).as_bytes());
            canonical(v, &mut one);
            one
        })
        .collect();
    members.sort_unstable();
    let mut body = Vec::new();
    for one in members {
        body.extend_from_slice(&one);
    }
    put(out, b'{', &body);
}

/// One JSON value, encoded for [`call_key`] (depth bounded by [`StepUpRequest::parse`]).
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(b'0'),
        Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
        Value::Number(n) => {
            let text = if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                // Display prints integral floats without a fraction: 100.0 → "100".
                n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}"))
            };
            put(out, b'#', text.as_bytes());
        }
        Value::String(s) => put(out, b's', fold_hidden(s).as_bytes()),
        Value::Array(a) => {
            let mut body = Vec::new();
            for item in a {
                canonical(item, &mut body);
            }
            put(out, b'[', &body);
        }
        Value::Object(m) => canonical_members(m, out),
    }
}

/// At most 64 characters of `s`, hidden characters shown escaped (for messages).
fn clip(s: &str) -> String {
    crate::web::render::escaped_form(s, 64)
}

/// Whole seconds from `now_ms` until `at_ms`, at least 1.
fn secs_until(at_ms: u64, now_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_protocol::stepup::Want;

    fn filer(jkt: &str) -> Filer {
        Filer {
            jkt: jkt.into(),
            did: format!("did:key:{jkt}"),
            platform: "sim".into(),
            measurements: BTreeMap::from([("PCR0".into(), "00".repeat(48))]),
            measurement_digest: "ab".into(),
            emulated: false,
        }
    }

    fn request(amount: u64) -> StepUpRequest {
        StepUpRequest::parse(
            serde_json::json!({
                "contract": "dtc",
                "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                            "tool": "transfer", "arguments": {"amount": amount}},
                "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                            "server": "https://mcp.example/mcp"},
                "want": "once"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    const T0: u64 = 1_800_000_000_000;

    fn limited(e: FileRefused) -> RateLimited {
        match e {
            FileRefused::RateLimited(l) => l,
            other => panic!("expected stepup.rate_limited, got {other:?}"),
        }
    }

    #[test]
    fn at_most_five_pending_per_key_then_retry_after_the_first_expiry() {
        let mut s = Store::new(Limits::default());
        for i in 0..5 {
            let (_, new) = s
                .file(
                    format!("id{i}"),
                    filer("k1"),
                    request(i),
                    None,
                    T0 + i * 1000,
                )
                .unwrap();
            assert!(new);
        }
        let e = s
            .file("id5".into(), filer("k1"), request(5), None, T0 + 5000)
            .unwrap_err();
        let e = limited(e);
        // The first request expires at T0 + 10 min: 595 s from now.
        assert_eq!(e.retry_after_secs, 595);
        assert!(
            e.message.contains("5 step-up requests waiting"),
            "{}",
            e.message
        );
        // Another key is not affected.
        assert!(s
            .file("other".into(), filer("k2"), request(0), None, T0 + 5000)
            .is_ok());
        // An answered request frees a place.
        s.begin_decision("id0", T0 + 6000).unwrap();
        s.end_decision(
            "id0",
            Some(State::Denied {
                by: "owner".into(),
                at_ms: T0 + 6000,
            }),
        );
        assert!(s
            .file("id6".into(), filer("k1"), request(6), None, T0 + 7000)
            .is_ok());
    }

    #[test]
    fn at_most_thirty_per_hour_per_key() {
        let mut s = Store::new(Limits::default());
        for i in 0..30u64 {
            let id = format!("id{i}");
            s.file(id.clone(), filer("k1"), request(i), None, T0 + i * 60_000)
                .unwrap();
            // Answered at once: only the hourly limit can refuse.
            s.begin_decision(&id, T0 + i * 60_000).unwrap();
            s.end_decision(
                &id,
                Some(State::Denied {
                    by: "o".into(),
                    at_ms: T0,
                }),
            );
        }
        let now = T0 + 30 * 60_000;
        let e = s
            .file("id30".into(), filer("k1"), request(30), None, now)
            .unwrap_err();
        let e = limited(e);
        // The first of the hour was filed at T0: a place frees at T0 + 1 h.
        assert_eq!(e.retry_after_secs, 1800);
        assert!(e.message.contains("in the last hour"), "{}", e.message);
        assert!(s
            .file("id30".into(), filer("k1"), request(30), None, T0 + HOUR_MS)
            .is_ok());
    }

    #[test]
    fn an_identical_pending_call_is_not_asked_twice() {
        let mut s = Store::new(Limits::default());
        let (a, new_a) = s
            .file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        let (b, new_b) = s
            .file("b".into(), filer("k1"), request(1), None, T0 + 1)
            .unwrap();
        assert!(new_a && !new_b);
        assert_eq!(a.id, b.id);
        // Other arguments, another want or another key: a new request.
        assert!(
            s.file("c".into(), filer("k1"), request(2), None, T0)
                .unwrap()
                .1
        );
        let mut minutes = request(1);
        minutes.want = Want::Minutes;
        assert!(
            s.file("d".into(), filer("k1"), minutes, None, T0)
                .unwrap()
                .1
        );
        assert!(
            s.file("e".into(), filer("k2"), request(1), None, T0)
                .unwrap()
                .1
        );
    }

    #[test]
    fn requests_expire_and_are_forgotten_an_hour_later() {
        let limits = Limits {
            ttl_ms: 60_000,
            ..Limits::default()
        };
        let mut s = Store::new(limits);
        s.file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        assert!(s.expire(T0 + 59_999).is_empty());
        assert_eq!(
            s.poll("a", "k1", T0 + 59_999).unwrap(),
            Poll::Pending {
                slow_down: false,
                interval_ms: 2000
            }
        );
        let expired = s.expire(T0 + 60_000);
        assert_eq!(expired.len(), 1);
        assert_eq!(s.poll("a", "k1", T0 + 61_000).unwrap(), Poll::Expired);
        assert_eq!(
            s.begin_decision("a", T0 + 61_000).unwrap_err(),
            DecisionRefused::Expired
        );
        s.forget(T0 + 60_000 + HOUR_MS - 1);
        assert!(s.get("a").is_some());
        s.forget(T0 + 60_000 + HOUR_MS);
        assert_eq!(
            s.poll("a", "k1", T0 + 60_000 + HOUR_MS).unwrap_err(),
            PollRefused::Unknown
        );
    }

    #[test]
    fn only_the_filing_key_polls_and_fast_polls_slow_down() {
        let mut s = Store::new(Limits::default());
        s.file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        assert_eq!(s.poll("a", "k2", T0).unwrap_err(), PollRefused::OtherKey);
        assert_eq!(
            s.poll("a", "k2", T0).unwrap_err().code(),
            "stepup.other_key"
        );
        assert_eq!(s.poll("zz", "k1", T0).unwrap_err(), PollRefused::Unknown);
        let p = |s: &mut Store, t| s.poll("a", "k1", t).unwrap();
        assert_eq!(
            p(&mut s, T0),
            Poll::Pending {
                slow_down: false,
                interval_ms: 2000
            }
        );
        // 1.75 s later is within the tolerance; 1 s after that is too fast.
        assert_eq!(
            p(&mut s, T0 + 1750),
            Poll::Pending {
                slow_down: false,
                interval_ms: 2000
            }
        );
        assert_eq!(
            p(&mut s, T0 + 2750),
            Poll::Pending {
                slow_down: true,
                interval_ms: 7000
            }
        );
        assert_eq!(
            p(&mut s, T0 + 9750),
            Poll::Pending {
                slow_down: false,
                interval_ms: 7000
            }
        );
    }

    #[test]
    fn a_grant_is_handed_out_to_the_filing_key_and_delivery_is_noted_once() {
        let mut s = Store::new(Limits::default());
        s.file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        let e = s.begin_decision("a", T0).unwrap();
        assert_eq!(e.state, State::Deciding);
        // A second decision meanwhile is refused; a poll still reads pending.
        assert_eq!(
            s.begin_decision("a", T0).unwrap_err(),
            DecisionRefused::Decided("being answered")
        );
        assert!(matches!(
            s.poll("a", "k1", T0).unwrap(),
            Poll::Pending { .. }
        ));
        s.end_decision(
            "a",
            Some(State::Approved {
                grant: "g".into(),
                digest: "d".into(),
                valid_until: 0,
                minutes: None,
                by: "o".into(),
                at_ms: T0,
            }),
        );
        assert_eq!(s.poll("a", "k2", T0).unwrap_err(), PollRefused::OtherKey);
        let first = s.poll("a", "k1", T0).unwrap();
        assert_eq!(
            first,
            Poll::Approved {
                grant: "g".into(),
                digest: "d".into(),
                first: true
            }
        );
        assert!(matches!(
            s.poll("a", "k1", T0 + 1).unwrap(),
            Poll::Approved { first: false, .. }
        ));
        // An approved request never expires into "expired".
        assert!(s.expire(T0 + HOUR_MS).is_empty());
    }

    #[test]
    fn a_failed_decision_rolls_back_to_pending() {
        let mut s = Store::new(Limits::default());
        s.file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        s.begin_decision("a", T0).unwrap();
        s.end_decision("a", None);
        assert_eq!(s.get("a").unwrap().state, State::Pending);
        assert!(s.begin_decision("a", T0).is_ok());
    }

    fn call(tool: &str, arguments: serde_json::Value) -> StepUpRequest {
        StepUpRequest::parse(
            serde_json::json!({
                "contract": "dtc",
                "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                            "tool": tool, "arguments": arguments},
                "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                            "server": "https://mcp.example/mcp"},
                "want": "once"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn deny(s: &mut Store, id: &str, at_ms: u64) {
        s.begin_decision(id, at_ms).unwrap();
        s.end_decision(
            id,
            Some(State::Denied {
                by: "owner".into(),
                at_ms,
            }),
        );
    }

    fn denied(r: Result<(Entry, bool), FileRefused>) -> DeniedRecently {
        match r {
            Err(FileRefused::Denied(d)) => d,
            other => panic!("expected stepup.denied, got {other:?}"),
        }
    }

    #[test]
    fn a_denied_call_is_refused_during_the_cooloff_even_with_hidden_characters() {
        let mut s = Store::new(Limits::default());
        let mallory = serde_json::json!({"amount": 500, "to": "mallory"});
        s.file(
            "a".into(),
            filer("k1"),
            call("transfer", mallory.clone()),
            None,
            T0,
        )
        .unwrap();
        deny(&mut s, "a", T0 + 1000);
        // The same call at once: refused, naming the rule and when it may be asked again.
        let r = s.file(
            "b".into(),
            filer("k1"),
            call("transfer", mallory.clone()),
            None,
            T0 + 2000,
        );
        assert_eq!(r.as_ref().unwrap_err().code(), "stepup.denied");
        let d = denied(r);
        assert_eq!(d.denied_ms, T0 + 1000);
        assert_eq!(d.until_ms, T0 + 1000 + 15 * 60_000);
        assert_eq!(d.retry_after_secs, 15 * 60 - 1);
        assert!(
            d.message.contains("owner denied this call"),
            "{}",
            d.message
        );
        assert!(d.message.contains("2027-01-15T08:15:01Z"), "{}", d.message);
        assert!(s.get("b").is_none());
        // Hidden characters in a value, in a member name or in the tool, another member
        // order, the number spelt as a float, "minutes" instead of "once": the same call.
        let disguised = [
            call(
                "transfer",
                serde_json::json!({"amount": 500, "to": "mallor\u{200b}y"}),
            ),
            call(
                "transfer",
                serde_json::json!({"amount": 500, "to": "\u{202e}mallory\u{2066}"}),
            ),
            call(
                "transfer",
                serde_json::json!({"amo\u{feff}unt": 500, "to": "mallory"}),
            ),
            call("trans\u{200d}fer", mallory.clone()),
            call(
                "transfer",
                serde_json::json!({"to": "mallory", "amount": 500.0}),
            ),
            {
                let mut m = call("transfer", mallory.clone());
                m.want = Want::Minutes;
                m
            },
        ];
        for (i, c) in disguised.into_iter().enumerate() {
            denied(s.file(format!("d{i}"), filer("k1"), c, None, T0 + 3000));
        }
        // What was stored and is shown stays as filed.
        assert_eq!(
            s.get("a").unwrap().request.request.arguments["to"],
            serde_json::json!("mallory")
        );
        // Another call, another key, a look-alike letter (not hidden: the page warns of it
        // and it may be another name): put to the owner.
        assert!(s
            .file(
                "e".into(),
                filer("k1"),
                call(
                    "transfer",
                    serde_json::json!({"amount": 501, "to": "mallory"})
                ),
                None,
                T0 + 4000
            )
            .is_ok());
        assert!(s
            .file(
                "f".into(),
                filer("k2"),
                call("transfer", mallory.clone()),
                None,
                T0 + 4000
            )
            .is_ok());
        assert!(s
            .file(
                "g".into(),
                filer("k1"),
                call("refund", mallory.clone()),
                None,
                T0 + 4000
            )
            .is_ok());
        assert!(s
            .file(
                "h".into(),
                filer("k1"),
                call(
                    "transfer",
                    serde_json::json!({"amount": 500, "to": "m\u{430}llory"})
                ),
                None,
                T0 + 4000
            )
            .is_ok());
        // Until the cool-off ends, even after the request itself is forgotten.
        denied(s.file(
            "i".into(),
            filer("k1"),
            call("transfer", mallory.clone()),
            None,
            T0 + 1000 + 15 * 60_000 - 1,
        ));
        assert!(
            s.file(
                "j".into(),
                filer("k1"),
                call("transfer", mallory),
                None,
                T0 + 1000 + 15 * 60_000
            )
            .unwrap()
            .1
        );
    }

    #[test]
    fn the_cooloff_outlives_the_forgotten_request_and_zero_disables_it() {
        let limits = Limits {
            denial_cooloff_ms: 2 * HOUR_MS,
            ..Limits::default()
        };
        let mut s = Store::new(limits);
        s.file("a".into(), filer("k1"), request(7), None, T0)
            .unwrap();
        deny(&mut s, "a", T0);
        s.forget(T0 + HOUR_MS + 1);
        assert!(
            s.get("a").is_none(),
            "the request is forgotten after an hour"
        );
        denied(s.file("b".into(), filer("k1"), request(7), None, T0 + HOUR_MS + 1));
        s.forget(T0 + 2 * HOUR_MS);
        assert!(s
            .file("c".into(), filer("k1"), request(7), None, T0 + 2 * HOUR_MS)
            .is_ok());

        let mut off = Store::new(Limits {
            denial_cooloff_ms: 0,
            ..Limits::default()
        });
        off.file("a".into(), filer("k1"), request(7), None, T0)
            .unwrap();
        deny(&mut off, "a", T0);
        assert!(
            off.file("b".into(), filer("k1"), request(7), None, T0 + 1)
                .unwrap()
                .1
        );
        assert!(off.denials.is_empty());
    }

    #[test]
    fn approvals_and_expiries_set_no_cooloff_and_denials_are_bounded() {
        let mut s = Store::new(Limits {
            max_requests: 3,
            ttl_ms: 1000,
            ..Limits::default()
        });
        s.file("a".into(), filer("k1"), request(1), None, T0)
            .unwrap();
        s.begin_decision("a", T0).unwrap();
        s.end_decision(
            "a",
            Some(State::Approved {
                grant: "g".into(),
                digest: "d".into(),
                valid_until: 0,
                minutes: None,
                by: "o".into(),
                at_ms: T0,
            }),
        );
        s.file("b".into(), filer("k1"), request(2), None, T0)
            .unwrap();
        s.expire(T0 + 1000);
        s.forget(T0 + HOUR_MS + 1000);
        assert!(s
            .file(
                "c".into(),
                filer("k1"),
                request(1),
                None,
                T0 + HOUR_MS + 1000
            )
            .is_ok());
        assert!(s
            .file(
                "d".into(),
                filer("k1"),
                request(2),
                None,
                T0 + HOUR_MS + 1000
            )
            .is_ok());
        // At most max_requests denials: the one that ends first goes first (the requests
        // themselves are forgotten at once here, to make room).
        let mut s = Store::new(Limits {
            max_requests: 3,
            keep_ended_ms: 0,
            ..Limits::default()
        });
        for i in 0..4u64 {
            let id = format!("x{i}");
            s.file(
                id.clone(),
                filer(&format!("k{i}")),
                request(i),
                None,
                T0 + i,
            )
            .unwrap();
            deny(&mut s, &id, T0 + i);
        }
        assert_eq!(s.denials.len(), 3);
        assert!(s
            .file("y".into(), filer("k0"), request(0), None, T0 + 10)
            .is_ok());
        denied(s.file("z".into(), filer("k3"), request(3), None, T0 + 10));
    }

    #[test]
    fn the_call_key_folds_hidden_characters_only() {
        let k = |tool: &str, args: serde_json::Value| call_key("k1", &call(tool, args).request);
        let base = k("t", serde_json::json!({"a": "x y", "b": [1, {"c": null}]}));
        assert_eq!(
            base,
            k(
                "t",
                serde_json::json!({"b": [1, {"c": null}], "a": "x\u{200b} y"})
            )
        );
        assert_eq!(
            base,
            k(
                "t",
                serde_json::json!({"a": "x y", "b": [1.0, {"c": null}]})
            )
        );
        assert_ne!(
            base,
            k("t", serde_json::json!({"a": "xy", "b": [1, {"c": null}]}))
        );
        assert_ne!(
            base,
            k("t", serde_json::json!({"a": "x y", "b": [{"c": null}, 1]}))
        );
        assert_ne!(
            base,
            k("t", serde_json::json!({"a": "x y", "b": [1, {"c": false}]}))
        );
        assert_ne!(
            base,
            k(
                "t",
                serde_json::json!({"a": ["x y"], "b": [1, {"c": null}]})
            )
        );
        assert_ne!(
            base,
            k("u", serde_json::json!({"a": "x y", "b": [1, {"c": null}]}))
        );
        // Parts do not run together.
        assert_ne!(
            k("ab", serde_json::json!({})),
            k("a", serde_json::json!({"b": null}))
        );
        assert_eq!(fold_hidden("mal\u{200b}lo\u{202e}ry"), "mallory");
    }

    #[test]
    fn the_store_is_bounded() {
        let mut s = Store::new(Limits {
            max_requests: 3,
            ..Limits::default()
        });
        for i in 0..3 {
            s.file(
                format!("{i}"),
                filer(&format!("k{i}")),
                request(1),
                None,
                T0,
            )
            .unwrap();
        }
        let e = s
            .file("x".into(), filer("k9"), request(1), None, T0)
            .unwrap_err();
        let e = limited(e);
        assert!(e.message.contains("holds 3 requests"), "{}", e.message);
    }
}
