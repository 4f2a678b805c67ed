//! What the proxy remembers for step-up: what each client declared in `initialize` (by
//! session, or by connection where the server keeps no session), and the step-up requests
//! filed and not yet ended, keyed by (session, server, tool, canonical arguments digest) —
//! the session being `Mcp-Session-Id`, or one key shared by all sessionless clients —
//! and, for 2026-07-28 clients, by the `requestState` the proxy handed out, which comes back
//! on the retry whatever connection it takes. Both are bounded. And, per request id, the
//! one poll under way ([`Polls`]): calls held for the same request share it.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cada_protocol::stepup::RefusedBy;
use serde_json::Value;

/// Most sessions remembered (the oldest is forgotten first).
pub const MAX_SESSIONS: usize = 1024;
/// Most pending requests held (the approval service allows 5 pending per enclave key; a
/// proxy serving several sessions holds more, but never without bound).
pub const MAX_PENDING: usize = 256;
/// How long an ended-but-unanswered request is kept after its expiry, so that a late retry
/// still hears `stepup.expired` rather than starting over silently.
pub const KEEP_AFTER_EXPIRY_SECS: u64 = 300;

/// What a client declared in `initialize`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// `params.protocolVersion` (what the client asked for; later requests name the
    /// negotiated one in `MCP-Protocol-Version`).
    pub version: Option<String>,
    /// `params.capabilities.elicitation.url` is an object.
    pub url_elicitation: bool,
}

impl SessionInfo {
    /// The declarations of an `initialize` request body; `None` for any other body.
    pub fn of_initialize(bytes: &[u8]) -> Option<SessionInfo> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        if v.get("method")?.as_str()? != "initialize" {
            return None;
        }
        let p = v.get("params")?;
        Some(SessionInfo {
            version: p
                .get("protocolVersion")
                .and_then(Value::as_str)
                .map(|s| s.chars().take(32).collect()),
            url_elicitation: p
                .get("capabilities")
                .and_then(|c| c.get("elicitation"))
                .and_then(|e| e.get("url"))
                .is_some_and(Value::is_object),
        })
    }
}

/// Sessions' declarations, by session key (`session:<Mcp-Session-Id>` or `conn:<peer>`).
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, (SessionInfo, Instant)>>,
}

impl Sessions {
    /// Remembers `info` for `key` (forgetting the oldest beyond [`MAX_SESSIONS`]).
    pub fn record(&self, key: String, info: SessionInfo) {
        let Ok(mut m) = self.inner.lock() else { return };
        if m.len() >= MAX_SESSIONS && !m.contains_key(&key) {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(key, (info, Instant::now()));
    }

    /// What `key` declared, if remembered.
    pub fn get(&self, key: &str) -> Option<SessionInfo> {
        self.inner
            .lock()
            .ok()
            .and_then(|m| m.get(key).map(|(i, _)| i.clone()))
    }
}

/// What a pending request is for: one call of one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PendingKey {
    /// `session:<Mcp-Session-Id>`, or `conn:<peer>` without a session.
    pub session: String,
    /// The upstream URL (the refused request's `htu`).
    pub audience: String,
    /// The tool.
    pub tool: String,
    /// [`super::arguments_digest`] of its arguments.
    pub arguments: String,
}

impl PendingKey {
    /// Whether `other` is the same call (session aside).
    fn same_call(&self, other: &PendingKey) -> bool {
        self.audience == other.audience
            && self.tool == other.tool
            && self.arguments == other.arguments
    }
}

/// A filed step-up request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The proxy's local id (in the `requestState` it hands out).
    pub local: String,
    /// The approval service's base URL (the contract's `stepUp`).
    pub step_up: String,
    /// The service's request id.
    pub id: String,
    /// The owner's page.
    pub url: String,
    /// When the service forgets it (Unix seconds).
    pub expires_at: u64,
    /// The least time between two polls.
    pub interval: Duration,
    /// When it was last polled.
    pub last_poll: Option<Instant>,
    /// The refusal that started it.
    pub refusal: String,
    /// Who refused.
    pub by: RefusedBy,
}

#[derive(Debug, Default)]
struct Inner {
    by_key: HashMap<PendingKey, Pending>,
    by_state: HashMap<String, PendingKey>,
}

impl Inner {
    fn remove(&mut self, key: &PendingKey) -> Option<Pending> {
        let p = self.by_key.remove(key)?;
        self.by_state.remove(&p.local);
        Some(p)
    }

    /// Drops requests ended long ago (`now`: Unix seconds).
    fn prune(&mut self, now: u64) {
        let old: Vec<PendingKey> = self
            .by_key
            .iter()
            .filter(|(_, p)| p.expires_at.saturating_add(KEEP_AFTER_EXPIRY_SECS) < now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            self.remove(&k);
        }
    }
}

/// The pending requests.
#[derive(Debug, Default)]
pub struct PendingStore {
    inner: Mutex<Inner>,
}

impl PendingStore {
    /// Whether nothing is pending (the common case: no body needs reading for it).
    pub fn is_empty(&self) -> bool {
        self.inner.lock().map_or(true, |m| m.by_key.is_empty())
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.by_key.len())
    }

    /// Holds `p` for `key` (replacing an earlier request for the same call), after
    /// dropping requests that ended long before `now`; beyond [`MAX_PENDING`] the one that
    /// expires first goes.
    pub fn insert(&self, key: PendingKey, p: Pending, now: u64) {
        let Ok(mut m) = self.inner.lock() else { return };
        m.prune(now);
        m.remove(&key);
        if m.by_key.len() >= MAX_PENDING {
            if let Some(first) = m
                .by_key
                .iter()
                .min_by_key(|(_, p)| p.expires_at)
                .map(|(k, _)| k.clone())
            {
                m.remove(&first);
            }
        }
        m.by_state.insert(p.local.clone(), key.clone());
        m.by_key.insert(key, p);
    }

    /// The request `key` waits on: by `state` (the local id of a `requestState` the proxy
    /// handed out), which must name the same call — a state moved onto another call or
    /// other arguments is not followed —, else by `key` itself.
    pub fn find(&self, key: &PendingKey, state: Option<&str>) -> Option<(PendingKey, Pending)> {
        let m = self.inner.lock().ok()?;
        if let Some(k) = state.and_then(|s| m.by_state.get(s)) {
            if k.same_call(key) {
                return m.by_key.get(k).map(|p| (k.clone(), p.clone()));
            }
        }
        m.by_key.get(key).map(|p| (key.clone(), p.clone()))
    }

    /// Changes the request of `key`, if still held.
    pub fn update(&self, key: &PendingKey, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(p) = m.by_key.get_mut(key) {
                f(p);
            }
        }
    }

    /// Forgets the request of `key`.
    pub fn remove(&self, key: &PendingKey) -> Option<Pending> {
        self.inner.lock().ok()?.remove(key)
    }
}

/// How long the answer of a poll is kept for the calls that slept through it (a request
/// that ended while they slept hears how it ended): longer than the longest interval.
pub const KEEP_ANSWER: Duration = Duration::from_secs(120);
/// Most request ids whose polls are tracked at once.
pub const MAX_POLLED: usize = 1024;

/// One slot per request id: the latest answer and when it came.
type Slot<T> = Arc<tokio::sync::Mutex<Option<(Instant, T)>>>;

/// Single-flight polls: at most one poll of a request id under way; a caller that asks for
/// a poll newer than what it last saw takes the answer another caller got in the meantime
/// (twenty calls held for one request poll as one).
#[derive(Debug)]
pub struct Polls<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Polls<T> {
    fn default() -> Self {
        Polls {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Polls<T> {
    fn slot(&self, id: &str) -> Option<Slot<T>> {
        let mut m = self.slots.lock().ok()?;
        if m.len() >= MAX_POLLED / 2 {
            // Forget answers nobody waits on that are old (or empty).
            m.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .is_ok_and(|v| v.as_ref().is_some_and(|(at, _)| at.elapsed() < KEEP_ANSWER))
            });
            if m.len() >= MAX_POLLED {
                m.retain(|_, s| Arc::strong_count(s) > 1);
            }
        }
        Some(Arc::clone(m.entry(id.to_owned()).or_default()))
    }

    /// An answer for request `id` obtained after `since`: another caller's, when it came
    /// while this one waited its turn, else `poll()`'s (one poll of an id at a time). With
    /// when the answer came.
    pub async fn poll_since<F, Fut>(&self, id: &str, since: Instant, poll: F) -> (Instant, T)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let Some(slot) = self.slot(id) else {
            return (Instant::now(), poll().await);
        };
        let mut held = slot.lock().await;
        if let Some((at, v)) = held.as_ref() {
            if *at > since {
                return (*at, v.clone());
            }
        }
        let v = poll().await;
        let at = Instant::now();
        *held = Some((at, v.clone()));
        (at, v)
    }

    /// The answer for `id` obtained after `since`, if one came and no poll is under way.
    pub fn answered_since(&self, id: &str, since: Instant) -> Option<T> {
        let slot = self.slots.lock().ok()?.get(id).cloned()?;
        let held = slot.try_lock().ok()?;
        held.as_ref()
            .filter(|(at, _)| *at > since)
            .map(|(_, v)| v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: &str, tool: &str, args: &str) -> PendingKey {
        PendingKey {
            session: session.into(),
            audience: "http://127.0.0.1:9/mcp".into(),
            tool: tool.into(),
            arguments: args.into(),
        }
    }

    fn pending(local: &str, expires_at: u64) -> Pending {
        Pending {
            local: local.into(),
            step_up: "http://localhost:8470".into(),
            id: format!("id-{local}"),
            url: format!("http://localhost:8470/r/id-{local}"),
            expires_at,
            interval: Duration::from_secs(2),
            last_poll: None,
            refusal: "contract.not_permitted.tool".into(),
            by: RefusedBy::Enclave,
        }
    }

    #[test]
    fn pending_requests_are_per_session_tool_and_arguments() {
        let s = PendingStore::default();
        assert!(s.is_empty());
        s.insert(key("session:a", "transfer", "D1"), pending("l1", 1000), 0);
        // The same call of the same session finds it.
        let (k, p) = s.find(&key("session:a", "transfer", "D1"), None).unwrap();
        assert_eq!(p.local, "l1");
        assert_eq!(k.session, "session:a");
        // Another session, tool or arguments does not.
        assert!(s.find(&key("session:b", "transfer", "D1"), None).is_none());
        assert!(s.find(&key("session:a", "other", "D1"), None).is_none());
        assert!(s.find(&key("session:a", "transfer", "D2"), None).is_none());
        // A 2026-07-28 retry on another connection is found by its requestState…
        let (k, _) = s
            .find(&key("conn:x", "transfer", "D1"), Some("l1"))
            .unwrap();
        assert_eq!(k.session, "session:a");
        // …but not for other arguments or another tool, nor with an unknown state.
        assert!(s
            .find(&key("conn:x", "transfer", "D2"), Some("l1"))
            .is_none());
        assert!(s.find(&key("conn:x", "other", "D1"), Some("l1")).is_none());
        assert!(s
            .find(&key("conn:x", "transfer", "D1"), Some("nope"))
            .is_none());
        // Filing again for the same call replaces the request.
        s.insert(key("session:a", "transfer", "D1"), pending("l2", 1000), 0);
        assert_eq!(s.len(), 1);
        assert!(s
            .find(&key("conn:x", "transfer", "D1"), Some("l1"))
            .is_none());
        assert_eq!(
            s.find(&key("session:a", "transfer", "D1"), None)
                .unwrap()
                .1
                .local,
            "l2"
        );
        s.update(&key("session:a", "transfer", "D1"), |p| {
            p.interval = Duration::from_secs(7);
        });
        assert_eq!(
            s.find(&key("session:a", "transfer", "D1"), None)
                .unwrap()
                .1
                .interval,
            Duration::from_secs(7)
        );
        assert!(s.remove(&key("session:a", "transfer", "D1")).is_some());
        assert!(s.is_empty());
    }

    #[test]
    fn the_store_is_bounded_and_forgets_ended_requests() {
        let s = PendingStore::default();
        for i in 0..MAX_PENDING + 10 {
            let n = u64::try_from(i).unwrap();
            s.insert(
                key("session:a", "t", &format!("D{i}")),
                pending(&format!("l{i}"), 10_000 + n),
                0,
            );
        }
        assert_eq!(s.len(), MAX_PENDING);
        // The ones expiring first went.
        assert!(s.find(&key("session:a", "t", "D0"), None).is_none());
        assert!(s
            .find(
                &key("session:a", "t", &format!("D{}", MAX_PENDING + 9)),
                None
            )
            .is_some());
        // Long after every expiry, the next insert drops them all.
        s.insert(
            key("session:b", "t", "new"),
            pending("new", 100_000),
            20_000 + KEEP_AFTER_EXPIRY_SECS,
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn initialize_declarations_are_read() {
        let i = SessionInfo::of_initialize(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-11-25",
                "capabilities":{"elicitation":{"form":{},"url":{}}},
                "clientInfo":{"name":"c","version":"1"}}}"#,
        )
        .unwrap();
        assert_eq!(i.version.as_deref(), Some("2025-11-25"));
        assert!(i.url_elicitation);
        let form_only = SessionInfo::of_initialize(
            br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{"elicitation":{}}}}"#,
        )
        .unwrap();
        assert!(!form_only.url_elicitation);
        assert!(
            SessionInfo::of_initialize(br#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#).is_none()
        );

        let sessions = Sessions::default();
        sessions.record("session:a".into(), i.clone());
        assert_eq!(sessions.get("session:a"), Some(i));
        assert_eq!(sessions.get("session:b"), None);
        for n in 0..MAX_SESSIONS + 5 {
            sessions.record(format!("conn:{n}"), form_only.clone());
        }
        assert!(sessions.inner.lock().unwrap().len() <= MAX_SESSIONS);
    }

    /// Review stepup-1, I6: twenty calls held for one request polled twenty times in 20 s;
    /// callers waiting on the same request now take the one poll under way.
    #[tokio::test]
    async fn calls_waiting_on_one_request_share_its_poll() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let polls: Arc<Polls<u32>> = Arc::default();
        let made = Arc::new(AtomicU32::new(0));
        let since = Instant::now();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let (polls, made) = (Arc::clone(&polls), Arc::clone(&made));
            tokio::spawn(async move {
                polls
                    .poll_since("A", since, || async move {
                        let _ = started_tx.send(());
                        let _ = go_rx.await;
                        made.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            })
        };
        started_rx.await.unwrap();
        // While the first poll is under way, nineteen more calls ask for one.
        let others: Vec<_> = (0..19)
            .map(|_| {
                let (polls, made) = (Arc::clone(&polls), Arc::clone(&made));
                tokio::spawn(async move {
                    polls
                        .poll_since("A", since, || async move {
                            made.fetch_add(1, Ordering::SeqCst) + 1
                        })
                        .await
                })
            })
            .collect();
        assert!(
            polls.answered_since("A", since).is_none(),
            "a poll is under way"
        );
        go_tx.send(()).unwrap();
        let (at, v) = first.await.unwrap();
        for o in others {
            assert_eq!(o.await.unwrap(), (at, 1));
        }
        assert_eq!(
            made.load(Ordering::SeqCst),
            1,
            "one poll for twenty callers"
        );
        assert_eq!(polls.answered_since("A", since), Some(v));
        assert_eq!(polls.answered_since("A", at), None);
        // A caller that already saw that answer polls anew; another request is its own.
        let (_, v2) = polls.poll_since("A", at, || async { 2 }).await;
        assert_eq!(v2, 2);
        let (_, b) = polls.poll_since("B", since, || async { 7 }).await;
        assert_eq!(b, 7);
        // Bounded: ids nobody waits on are forgotten once old or beyond the limit.
        for n in 0..MAX_POLLED + 10 {
            let _ = polls
                .poll_since(&format!("id{n}"), Instant::now(), || async { 0 })
                .await;
        }
        assert!(polls.slots.lock().unwrap().len() <= MAX_POLLED);
    }
}
