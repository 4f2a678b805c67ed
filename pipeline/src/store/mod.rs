//! The one store layer behind every store a fleet shares: proof ids and revoked token ids
//! ([`crate::replay`]), single-use grants, contracts' behaviour counters and suspensions
//! ([`crate::fleet`]). In memory (one process), on one Redis or on a Redis Cluster, chosen
//! by the `--replay-store` URL ([`url`]); docs/stores.md is the operator's guide.
//!
//! What the layer adds to the redis client:
//! - keys built in one place ([`keys`]), those updated together sharing a hash tag, so that
//!   no operation spans cluster slots;
//! - single-use writes that cannot be lost by a failover unnoticed: `SET NX` and, with
//!   `--store-ack replicas=N` ([`ack`]), `WAIT N` on the same connection to the same master;
//!   fewer acknowledgements refuse (`store.unacknowledged`);
//! - a write retried by the client after a lost answer is recognised as its own (each
//!   claim writes a random value and reads the key back in the same script), so a retry
//!   never refuses a fresh proof as a replay;
//! - a bound on operations in flight per master (`--store-max-in-flight`: more refuse at
//!   once, `store.busy`; `bound.rs`: one master that hangs fills its own places only), a
//!   deadline per operation (`--store-timeout-ms`, plus the ack wait),
//!   reconnection with backoff (the first connection here; after it, the redis client's
//!   own), topology refresh on `MOVED`/`ASK` (the cluster client's);
//! - outages: the `cada_store_*` metrics and one log line when an outage starts and one
//!   when it ends ([`health`]).
//!
//! Every failure is an error with a stable [`StoreError::code`]; callers refuse (503):
//! nothing is accepted without the store. On a cluster only the slots that cannot answer
//! fail: other keys keep being served.
pub mod ack;
mod bound;
pub mod cli;
#[cfg(test)]
mod fake_redis;
pub mod health;
pub mod keys;
pub(crate) mod tree;
pub mod url;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use prometheus_client::registry::Registry;

pub use ack::Ack;
pub use health::StoreMetrics;
pub use url::StoreUrl;

use health::Health;

/// Why a store operation (or a store's configuration) failed. Each has a stable
/// [`StoreError::code`]; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `--replay-store` URL is not one the layer reads (`store.url`).
    #[error("store.url: --replay-store {shown}: {detail}")]
    Url {
        /// The URL, password hidden.
        shown: String,
        /// The rule it breaks and how to write it.
        detail: String,
    },
    /// The `--store-ack` value is not one the layer reads (`store.ack`).
    #[error("store.ack: --store-ack {given}: {detail}")]
    Ack {
        /// The value given.
        given: String,
        /// The rule it breaks and how to write it.
        detail: String,
    },
    /// The store cannot be reached, or has no master for the key's slot
    /// (`store.unavailable`).
    #[error("store.unavailable: {detail}")]
    Unavailable {
        /// What failed.
        detail: String,
    },
    /// The store did not answer in time (`store.timeout`).
    #[error(
        "store.timeout: the shared store did not answer the {what} within {ms} ms \
         (--store-timeout-ms, plus the --store-ack wait)"
    )]
    Timeout {
        /// Which operation, and for which slot.
        what: String,
        /// The deadline, in milliseconds.
        ms: u64,
    },
    /// Too many operations were in flight to the key's master (`store.busy`).
    #[error(
        "store.busy: {max} shared-store operations are in flight already to the master of \
         this key (on one Redis: in all), the most --store-max-in-flight allows per master \
         (that master is slow or out); retry shortly"
    )]
    Busy {
        /// The limit.
        max: usize,
    },
    /// Fewer replicas than `--store-ack` asks for acknowledged a single-use write
    /// (`store.unacknowledged`): it could be lost by a failover, so it does not count.
    #[error(
        "store.unacknowledged: {acked} of {replicas} replicas acknowledged the write of {what} \
         within {timeout_ms} ms (--store-ack replicas={replicas},timeout={timeout_ms}); it is \
         not accepted, since a failover could lose it. A master without that many \
         replicas never acknowledges: add replicas, or lower --store-ack (none accepts that \
         a failover may let a proof be used twice)"
    )]
    Unacknowledged {
        /// What was written, and its slot.
        what: String,
        /// Replicas that acknowledged.
        acked: u64,
        /// Replicas asked for.
        replicas: u32,
        /// How long the master waited.
        timeout_ms: u64,
    },
}

impl StoreError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Url { .. } => "store.url",
            StoreError::Ack { .. } => "store.ack",
            StoreError::Unavailable { .. } => "store.unavailable",
            StoreError::Timeout { .. } => "store.timeout",
            StoreError::Busy { .. } => "store.busy",
            StoreError::Unacknowledged { .. } => "store.unacknowledged",
        }
    }
}

/// How a store is run (`--store-ack`, `--store-max-in-flight`, `--store-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Replica acknowledgement of single-use writes.
    pub ack: Ack,
    /// Operations in flight at most per master of a cluster (and as many for operations
    /// whose master is not known; one Redis: in all); more are refused at once
    /// (`store.busy`).
    pub max_in_flight: usize,
    /// Deadline of one operation (the ack wait comes on top for single-use writes).
    pub timeout: Duration,
    /// Connections (to one Redis, or to each node of a cluster) used in turn.
    pub connections: usize,
}

/// Default `--store-max-in-flight`.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 1024;
/// Default `--store-timeout-ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 300;
/// Default `--store-connections`.
pub const DEFAULT_CONNECTIONS: u32 = 4;

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            ack: Ack::Auto,
            max_in_flight: usize::try_from(DEFAULT_MAX_IN_FLIGHT).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            connections: usize::try_from(DEFAULT_CONNECTIONS).unwrap_or(1),
        }
    }
}

/// A shared store: memory, or a connection (pool) to one Redis or a Redis Cluster. Cheap to
/// clone; the replay store and the fleet of one process share one.
#[derive(Clone)]
pub struct Store {
    url: Arc<StoreUrl>,
    redis: Option<Arc<RedisStore>>,
    metrics: StoreMetrics,
}

impl Store {
    /// The store `url` names (see [`url`]), run with `options`. Nothing is connected yet:
    /// the first operation connects (a process starts while its store is down, and
    /// refuses until it answers).
    pub fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
        let url = StoreUrl::parse(url)?;
        let metrics = StoreMetrics::default();
        let redis = match &url {
            StoreUrl::Memory => None,
            other => Some(Arc::new(RedisStore::new(other, options, metrics.clone())?)),
        };
        Ok(Store {
            url: Arc::new(url),
            redis,
            metrics,
        })
    }

    /// This process's memory.
    pub fn memory() -> Store {
        Store {
            url: Arc::new(StoreUrl::Memory),
            redis: None,
            metrics: StoreMetrics::default(),
        }
    }

    /// The URL (password hidden when shown).
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The acknowledgement in force ([`Ack::Auto`] resolved); `none` for memory.
    pub fn ack(&self) -> Ack {
        self.redis.as_ref().map_or(Ack::None, |r| r.ack)
    }

    /// Registers the `cada_store_*` metrics in `registry` (once per process and registry).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// The store's metrics.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// The Redis behind it, if any.
    pub(crate) fn redis(&self) -> Option<&RedisStore> {
        self.redis.as_deref()
    }

    /// The latest epoch start (Unix ms) of any slot: when this process learnt that a slot
    /// of the store lost its memory (its epoch sentinel was gone), or met a sentinel another
    /// instance rewrote after a loss; `None` while no loss is known (and always for memory).
    pub fn epoch_start(&self) -> Option<u64> {
        self.redis.as_ref().and_then(|r| r.epoch_start())
    }

    /// The epoch start (Unix ms) of the slot of the store key `key` (one Redis: its only
    /// epoch), if that slot is known to have lost its memory; `None` otherwise (and always
    /// for memory). Whatever of that key's slot may have been accepted before it is refused
    /// by the callers (docs/stores.md).
    pub fn epoch_for(&self, key: &str) -> Option<u64> {
        self.redis.as_ref().and_then(|r| r.epoch_for(key))
    }

    /// Whether an outage is in progress (always false for memory).
    pub fn is_out(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| r.health.is_down())
    }

    /// Whether the store answers: `PING` to one Redis, or to one node of a cluster (a
    /// cluster with a slot down still serves the others, so it stays ready).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.redis {
            None => Ok(()),
            Some(r) => r.ping().await,
        }
    }
}

/// A connection, to one Redis or a cluster.
#[derive(Clone)]
enum Conn {
    Single(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    async fn pipe<T: redis::FromRedisValue>(
        &mut self,
        p: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }

    async fn cmd<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

enum Target {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// When the next connection attempt may be made, after failed ones.
struct Backoff {
    next: Option<Instant>,
    delay: Duration,
    last_error: String,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The claim script: `KEYS[1]` the key, `KEYS[2]` the epoch sentinel of its slot
/// ([`keys::sentinel_for`]), `ARGV` this claim's value and the key's lifetime (ms; 0: none).
/// When the sentinel is gone the store lost its memory: nothing is written and the answer
/// is `{'lost'}`. Else sets the key unless it is set and answers the sentinel's value (the
/// epoch start) and what the key holds: the caller's own value when this claim (or the
/// client's retry of it) set it. One command, so that a cluster's ASK redirection during a
/// resharding applies to all of it.
const CLAIM_SCRIPT: &str = r"
local e = redis.call('GET', KEYS[2])
if not e then
  return {'lost'}
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
return {e, redis.call('GET', KEYS[1]) or ''}
";

/// The claim script without the sentinel, for a slot being migrated (resharding), where
/// Redis refuses a script on two keys (`TRYAGAIN`) while one is on the source and the other
/// is not: `KEYS[1]` the key, `ARGV` as for [`CLAIM_SCRIPT`]; answers `{'-', held}`.
const PLAIN_CLAIM_SCRIPT: &str = r"
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
return {'-', redis.call('GET', KEYS[1]) or ''}
";

/// One run of a claim script.
enum Claimed {
    /// The sentinel is gone.
    Lost,
    /// The slot is being migrated: the two-key script is refused (`TRYAGAIN`).
    Migrating,
    /// The sentinel's value (none for the plain script) and whether the key is this
    /// claim's.
    Done(Option<u64>, bool),
}

/// The value the first sentinels of a new (empty) store are written with: smaller than
/// any epoch start, so that a sentinel rewritten after a loss (with its detector's clock,
/// Unix ms) is always newer than the slots that did not lose their memory.
const GENESIS: u64 = 1;

/// What this process knows of the store's epochs (see [`Store::epoch_for`]): one per slot
/// (one Redis: one slot), since a cluster loses its memory one shard at a time.
#[derive(Debug, Default)]
struct EpochState {
    /// Whether this process has met a sentinel (a sentinel gone after that is a loss).
    seen: bool,
    /// Per slot, the largest sentinel value met there, or when this process found its
    /// sentinel gone (Unix ms). A sentinel holds [`GENESIS`] for a store as it was created
    /// and the start of its slot's epoch (Unix ms) after a loss: a slot whose value is
    /// above [`GENESIS`] lost its memory then, whether this process met the slot before
    /// the loss or only after it (review delegation-3 finding 1).
    slots: HashMap<u16, u64>,
}

impl EpochState {
    fn seen(&self) -> bool {
        self.seen
    }

    fn epoch_of(&self, slot: u16) -> Option<u64> {
        self.slots.get(&slot).copied().filter(|v| *v > GENESIS)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The release script: `KEYS[1]` a claimed key, `ARGV[1]` the value its claim wrote.
/// Deletes the key only while it holds that value.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The counter script: `KEYS[1]` a contract's counter hash, `ARGV` the kind (`req`,
/// `ref`), the window number and the hash's lifetime (ms). A newer window resets the
/// kind's count; an event from an older window (a clock behind the others) counts in the
/// newer one, never resets it. The hash lives at least two windows of its longest limit.
const COUNT_SCRIPT: &str = r"
local w = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local now = tonumber(ARGV[2])
local f = ARGV[1] .. ':n'
if now > w then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], f, 0)
end
local n = redis.call('HINCRBY', KEYS[1], f, 1)
local ttl = tonumber(ARGV[3])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return n
";

/// One Redis or a Redis Cluster, with the layer's limits and health.
pub(crate) struct RedisStore {
    target: Target,
    /// Connections used in turn: a `WAIT` holds its connection until the replicas answer
    /// (Redis runs one client's commands in order), so one connection would allow one
    /// acknowledged claim per replica round trip per master.
    conns: Vec<ArcSwapOption<Conn>>,
    next: std::sync::atomic::AtomicUsize,
    connecting: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
    ack: Ack,
    timeout: Duration,
    response_timeout: Duration,
    /// The places of operations in flight, per master ([`bound`]).
    bounds: Arc<bound::Bounds>,
    pub(crate) health: Health,
    metrics: StoreMetrics,
    cluster: bool,
    epoch: Mutex<EpochState>,
    /// One rewrite of the sentinels at a time in this process (single flight).
    rewriting: tokio::sync::Mutex<()>,
}

/// One operation in `cada_store_in_flight`, until dropped.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What an operation is about, for messages: the operation and, on a cluster, the slot.
fn what(op: &str, key: &str, cluster: bool) -> String {
    if cluster {
        format!("{op} (slot {})", keys::slot(key.as_bytes()))
    } else {
        op.to_owned()
    }
}

impl RedisStore {
    fn new(url: &StoreUrl, o: &StoreOptions, metrics: StoreMetrics) -> Result<Self, StoreError> {
        let shown = url.shown().to_owned();
        let refuse = |e: redis::RedisError| StoreError::Url {
            shown: shown.clone(),
            detail: format!("the redis client refuses it: {e}"),
        };
        let cluster = url.is_cluster();
        let ack = o.ack.resolve(cluster);
        // The client's own deadline must not cut a WAIT short, nor come first: the
        // layer's deadline (timeout plus the ack wait) is the one that refuses
        // (store.timeout); the client's is a backstop just past it.
        let response_timeout = match ack {
            Ack::Replicas { timeout_ms, .. } => o.timeout + Duration::from_millis(timeout_ms),
            _ => o.timeout,
        } + Duration::from_millis(50);
        let target = match url {
            StoreUrl::Memory => {
                return Err(StoreError::Url {
                    shown,
                    detail: "memory is not a Redis".into(),
                })
            }
            StoreUrl::Single { url, .. } => {
                Target::Single(redis::Client::open(url.as_str()).map_err(refuse)?)
            }
            StoreUrl::Cluster { seeds, .. } => Target::Cluster(
                redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(o.timeout)
                    .response_timeout(response_timeout)
                    // A few quick retries ride through MOVED/ASK and a promoted replica;
                    // the operation's own deadline bounds them all.
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(refuse)?,
            ),
        };
        Ok(RedisStore {
            target,
            conns: (0..o.connections.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
            connecting: tokio::sync::Mutex::new(()),
            backoff: Mutex::new(Backoff {
                next: None,
                delay: FIRST_BACKOFF,
                last_error: String::new(),
            }),
            ack,
            timeout: o.timeout,
            response_timeout,
            bounds: Arc::new(bound::Bounds::new(o.max_in_flight)),
            health: Health::new(metrics.clone(), shown),
            metrics,
            cluster,
            epoch: Mutex::new(EpochState::default()),
            rewriting: tokio::sync::Mutex::new(()),
        })
    }

    /// The connection, made on first use; after a failed attempt, none is tried again
    /// before its backoff (100 ms doubling to 5 s) ends: operations fail at once meanwhile.
    async fn connection(&self) -> Result<Conn, StoreError> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.conns.len();
        let slot = &self.conns[i];
        if let Some(c) = slot.load_full() {
            return Ok((*c).clone());
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = slot.load_full() {
            return Ok((*c).clone());
        }
        if let Ok(b) = self.backoff.lock() {
            if let Some(next) = b.next {
                let now = Instant::now();
                if now < next {
                    return Err(StoreError::Unavailable {
                        detail: format!(
                            "cannot connect ({}); next attempt in {} ms",
                            b.last_error,
                            next.duration_since(now).as_millis()
                        ),
                    });
                }
            }
        }
        let made = match &self.target {
            Target::Single(client) => {
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(self.timeout)
                    .set_response_timeout(self.response_timeout)
                    // One attempt here: the backoff between attempts is this layer's.
                    .set_number_of_retries(0)
                    .set_max_delay(5_000);
                tokio::time::timeout(
                    self.timeout,
                    redis::aio::ConnectionManager::new_with_config(client.clone(), cfg),
                )
                .await
                .map(|r| r.map(Conn::Single))
            }
            Target::Cluster(client) => {
                tokio::time::timeout(self.timeout, client.get_async_connection())
                    .await
                    .map(|r| r.map(Conn::Cluster))
            }
        };
        let made = match made {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no connection within {} ms",
                self.timeout.as_millis()
            )),
        };
        let Ok(mut b) = self.backoff.lock() else {
            return Err(StoreError::Unavailable {
                detail: "connection state unavailable".into(),
            });
        };
        match made {
            Ok(c) => {
                b.next = None;
                b.delay = FIRST_BACKOFF;
                slot.store(Some(Arc::new(c.clone())));
                Ok(c)
            }
            Err(e) => {
                b.next = Some(Instant::now() + b.delay);
                b.delay = (b.delay * 2).min(MAX_BACKOFF);
                b.last_error.clone_from(&e);
                Err(StoreError::Unavailable {
                    detail: format!("cannot connect: {e}"),
                })
            }
        }
    }

    /// Runs one operation without a key (its place among those whose master is not
    /// known): as [`Self::run_for`].
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        what: String,
        deadline: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.run_for(None, op, what, deadline, f).await
    }

    /// Runs one operation on `key` (and keys of its slot): a place among those in flight
    /// to the key's master, the connection, the deadline, the health and metrics.
    async fn run_for<T, F, Fut>(
        &self,
        key: Option<&str>,
        op: &'static str,
        what: String,
        deadline: Duration,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let slot = key
            .filter(|_| self.cluster)
            .map(|k| keys::slot(k.as_bytes()));
        let _place = match self.bounds.acquire(slot) {
            Ok(p) => p,
            Err(full) => {
                let e = StoreError::Busy { max: full.max };
                self.health.failed(&e);
                return Err(e);
            }
        };
        // Counted down on drop: a request dropped mid-operation (its client went away)
        // leaves the gauge right, as it returns its permit.
        let _in_flight = InFlight::new(self.metrics.in_flight().clone());
        let t = Instant::now();
        // The connection first, under its own deadline (an attempt that ends records its
        // backoff; one cut short by the operation's deadline would not), then the operation.
        let result = match self.connection().await {
            Err(e) => Err(e),
            Ok(c) => {
                self.read_slot_map_if_due(&c).await;
                match tokio::time::timeout(deadline, f(c)).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Timeout {
                        what,
                        ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                    }),
                }
            }
        };
        match &result {
            Ok(_) => {
                self.metrics.observe(op, t);
                self.health.succeeded();
            }
            Err(e) => self.health.failed(e),
        }
        result
    }

    /// Reads a cluster's slot map (`CLUSTER SLOTS` on one node) for the bound per master
    /// when it is due ([`bound::Bounds::start_read`]): the first read is awaited, so that
    /// the operations after the first find their masters; the later ones run beside the
    /// operations. A read that fails or times out leaves the groups as they were.
    async fn read_slot_map_if_due(&self, c: &Conn) {
        let Conn::Cluster(c) = c else { return };
        let first = self.bounds.never_read();
        if !self.bounds.start_read(Instant::now()) {
            return;
        }
        let (mut c, bounds, timeout) = (c.clone(), self.bounds.clone(), self.timeout);
        let read = async move {
            use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            let answer = tokio::time::timeout(
                timeout,
                c.route_command(&cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
            )
            .await;
            match answer
                .ok()
                .and_then(Result::ok)
                .as_ref()
                .and_then(bound::parse_cluster_slots)
            {
                Some(ranges) => bounds.install(ranges, Instant::now()),
                None => bounds.read_failed(Instant::now()),
            }
        };
        if first {
            read.await;
        } else {
            tokio::spawn(read);
        }
    }

    fn unavailable(what: &str, e: &redis::RedisError) -> StoreError {
        StoreError::Unavailable {
            detail: format!("{what}: {e}"),
        }
    }

    /// Sets `key` (with a lifetime of `ttl_ms`) unless it is set; with `--store-ack
    /// replicas=N`, waits for N replicas to hold it. `Ok(true)` the first time the key is
    /// claimed (a retry of this very claim by the client included), `Ok(false)` when it was
    /// claimed before.
    pub(crate) async fn claim(
        &self,
        op_name: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        // 64 random bits tell this claim from a concurrent one for the same key.
        let mut token = [0u8; 8];
        aws_lc_rs::rand::fill(&mut token).map_err(|_| StoreError::Unavailable {
            detail: "no random generator".into(),
        })?;
        self.written(op_name, key, &hex::encode(token), ttl_ms.max(1))
            .await
    }

    /// As [`Self::claim`], and the value this claim wrote, so that it can be given back
    /// ([`Self::release`]): `Ok(None)` when the key was claimed before.
    pub(crate) async fn claim_held(
        &self,
        op_name: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let mut token = [0u8; 16];
        aws_lc_rs::rand::fill(&mut token).map_err(|_| StoreError::Unavailable {
            detail: "no random generator".into(),
        })?;
        let mine = hex::encode(token);
        let fresh = self.written(op_name, key, &mine, ttl_ms.max(1)).await?;
        Ok(fresh.then_some(mine))
    }

    /// Gives a claim back: deletes `key` if it still holds `value` (the release script:
    /// another's claim is never deleted); whether it did. No `WAIT`: a release that is
    /// lost leaves the key claimed, which fails closed.
    pub(crate) async fn release(
        &self,
        op_name: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        let w = what(op_name, key, self.cluster);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_SCRIPT).arg(1).arg(key).arg(value);
        let w2 = w.clone();
        self.run_for(
            Some(key),
            "release",
            w,
            self.timeout,
            move |mut c| async move {
                c.cmd::<u64>(&cmd)
                    .await
                    .map(|n| n > 0)
                    .map_err(|e| Self::unavailable(&w2, &e))
            },
        )
        .await
    }

    /// Sets `key` to `value` (no lifetime) unless it is set, acknowledged as a claim is;
    /// `Ok(true)` if this call set it.
    pub(crate) async fn set_new(
        &self,
        op_name: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, StoreError> {
        self.written(op_name, key, value, 0).await
    }

    /// Runs the claim script (the sentinel checked, `SET key mine NX [PX ttl_ms]`, then the
    /// key's value), adds the `WAIT` of the ack setting, and tells whether the key now holds
    /// `mine`. A sentinel found gone starts a new epoch ([`Self::memory_lost`]) and the claim
    /// is made once more.
    async fn written(
        &self,
        op_name: &str,
        key: &str,
        mine: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let sentinel = keys::sentinel_for(key, self.cluster);
        // Whether this process had met a sentinel before this claim began: a claim that
        // began before (one of many at the first contact) finds an empty store, not a loss.
        let had_seen = self.epoch.lock().is_ok_and(|e| e.seen());
        for _ in 0..2 {
            match self
                .written_once(op_name, key, Some(&sentinel), mine, ttl_ms)
                .await?
            {
                Claimed::Done(epoch, fresh) => {
                    if let Some(e) = epoch {
                        self.saw_epoch(self.slot_of(key), e);
                    }
                    return Ok(fresh);
                }
                Claimed::Lost => self.memory_lost(key, had_seen).await?,
                // Resharding: the slot's sentinel is not checked until its keys have moved
                // (docs/stores.md).
                Claimed::Migrating => {
                    return match self.written_once(op_name, key, None, mine, ttl_ms).await? {
                        Claimed::Done(_, fresh) => Ok(fresh),
                        _ => Err(StoreError::Unavailable {
                            detail: format!(
                                "{}: the slot is being migrated",
                                what(op_name, key, self.cluster)
                            ),
                        }),
                    };
                }
            }
        }
        Err(StoreError::Unavailable {
            detail: format!(
                "{}: the store's epoch sentinel is gone again right after it was rewritten",
                what(op_name, key, self.cluster)
            ),
        })
    }

    /// The slot of `key` as far as epochs go (one Redis: 0).
    fn slot_of(&self, key: &str) -> u16 {
        if self.cluster {
            keys::slot(key.as_bytes())
        } else {
            0
        }
    }

    /// The latest epoch start of any slot, if a loss is known.
    pub(crate) fn epoch_start(&self) -> Option<u64> {
        let e = self.epoch.lock().ok()?;
        e.slots.values().copied().filter(|v| *v > GENESIS).max()
    }

    /// The start (Unix ms) of the epoch of `key`'s slot, if that slot is known to have lost
    /// its memory.
    pub(crate) fn epoch_for(&self, key: &str) -> Option<u64> {
        let slot = self.slot_of(key);
        self.epoch.lock().ok()?.epoch_of(slot)
    }

    /// The sentinel of `slot` met holding `value`: [`GENESIS`] for a slot as the store was
    /// created, else the start of the epoch that began when that slot was found without
    /// memory (by this or another instance, before or after this process started): proofs
    /// and grants of that slot, and budgets of trees rooted there, older than it are
    /// refused.
    fn saw_epoch(&self, slot: u16, value: u64) {
        let Ok(mut e) = self.epoch.lock() else { return };
        e.seen = true;
        let v = e.slots.entry(slot).or_insert(GENESIS);
        let before = *v;
        *v = before.max(value);
        if value > before && value > GENESIS {
            tracing::warn!(
                slot,
                epoch_start_ms = value,
                "another instance found a slot of the shared store without memory (now or \
                 before this process started): proofs issued, single-use grants given and \
                 delegations with a budget issued before the new epoch are refused in that slot"
            );
        }
    }

    /// The sentinel of `key`'s slot is gone. The first time this process meets the store
    /// that is an empty store unless another slot's sentinel is there (a new store: the
    /// sentinels are written with [`GENESIS`]); else the slot lost its memory: its epoch
    /// starts now (logged, counted in `cada_store_memory_lost_total`) and `now` is written
    /// into every sentinel that is missing (`SET NX`: those of the lost shard; the others
    /// keep theirs). One rewrite at a time per process: a claim that waited for another's
    /// finds the sentinel back and is made again.
    async fn memory_lost(&self, key: &str, had_seen: bool) -> Result<(), StoreError> {
        let slot = self.slot_of(key);
        let sentinel = keys::sentinel_for(key, self.cluster);
        if had_seen {
            let now = now_ms();
            if let Ok(mut e) = self.epoch.lock() {
                let v = e.slots.entry(slot).or_insert(now);
                *v = (*v).max(now);
            }
        }
        let _one = self.rewriting.lock().await;
        if self.sentinel_value(&sentinel).await?.is_some() {
            // Rewritten meanwhile (by another claim of this process, or another instance).
            return Ok(());
        }
        let now = now_ms();
        let lost = had_seen || self.store_is_not_new().await?;
        if !lost {
            return self.write_sentinels(GENESIS).await;
        }
        // A process meeting the store for the first time learns the slot's epoch from the
        // sentinel it reads next (its own `now` if its write is the one that landed; a new
        // store's first writer may have written GENESIS meanwhile).
        if had_seen {
            if let Ok(mut e) = self.epoch.lock() {
                let v = e.slots.entry(slot).or_insert(now);
                *v = (*v).max(now);
            }
        }
        self.metrics.memory_lost().inc();
        tracing::error!(
            slot,
            epoch_start_ms = now,
            "a slot of the shared store lost its memory (its epoch sentinel is gone: a restart \
             without persistence, FLUSHALL, or a failover to an empty node): a new epoch starts \
             there; proofs issued and single-use grants given before it are refused in that slot"
        );
        self.write_sentinels(now).await
    }

    /// The value of one sentinel (`GET`).
    async fn sentinel_value(&self, sentinel: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(sentinel);
        tokio::time::timeout(self.timeout, conn.cmd::<Option<String>>(&cmd))
            .await
            .map_err(|_| StoreError::Timeout {
                what: "read of an epoch sentinel".into(),
                ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            })?
            .map_err(|e| Self::unavailable("epoch sentinel", &e))
    }

    /// The slots whose sentinels a new store's first writer writes last, and that a
    /// process meeting the store for the first time reads to tell a new store (none of
    /// them) from one that lost a shard (one of them there): one per third of the slots.
    fn probe_slots() -> [u16; 3] {
        [0, keys::SLOTS / 2, keys::SLOTS - 1]
    }

    /// Whether any probe sentinel is there (a cluster; one Redis has one sentinel).
    async fn store_is_not_new(&self) -> Result<bool, StoreError> {
        if !self.cluster {
            return Ok(false);
        }
        for slot in Self::probe_slots() {
            if self
                .sentinel_value(&keys::cluster_sentinel(slot))
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `SET NX` of every sentinel to `value` (one Redis: one; a cluster: one per slot, many
    /// at once, the probe slots last): a sentinel that is there keeps its value.
    async fn write_sentinels(&self, value: u64) -> Result<(), StoreError> {
        let conn = self.connection().await?;
        if !self.cluster {
            return self
                .write_all_sentinels(conn, vec![keys::EPOCH_SENTINEL.to_owned()], value)
                .await;
        }
        let probes = Self::probe_slots();
        self.write_all_sentinels(
            conn.clone(),
            (0..keys::SLOTS)
                .filter(|s| !probes.contains(s))
                .map(keys::cluster_sentinel)
                .collect(),
            value,
        )
        .await?;
        self.write_all_sentinels(
            conn,
            probes.iter().map(|s| keys::cluster_sentinel(*s)).collect(),
            value,
        )
        .await
    }

    /// `SET NX` of `names` to `value`, 64 at a time per task.
    async fn write_all_sentinels(
        &self,
        conn: Conn,
        names: Vec<String>,
        value: u64,
    ) -> Result<(), StoreError> {
        let deadline = self.timeout * 10;
        let work = async move {
            let mut set = tokio::task::JoinSet::new();
            for chunk in names.chunks(64) {
                let chunk = chunk.to_vec();
                let mut c = conn.clone();
                set.spawn(async move {
                    for name in chunk {
                        let mut cmd = redis::cmd("SET");
                        cmd.arg(&name).arg(value).arg("NX");
                        c.cmd::<Option<String>>(&cmd).await?;
                    }
                    Ok::<(), redis::RedisError>(())
                });
            }
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(Self::unavailable("epoch sentinels", &e)),
                    Err(e) => {
                        return Err(StoreError::Unavailable {
                            detail: format!("epoch sentinels: {e}"),
                        })
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout {
                what: "rewrite of the epoch sentinels".into(),
                ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// One run of the claim script (with `sentinel`), or of the plain one.
    async fn written_once(
        &self,
        op_name: &str,
        key: &str,
        sentinel: Option<&str>,
        mine: &str,
        ttl_ms: u64,
    ) -> Result<Claimed, StoreError> {
        let w = what(op_name, key, self.cluster);
        let mut p = redis::pipe();
        match sentinel {
            Some(sentinel) => p
                .cmd("EVAL")
                .arg(CLAIM_SCRIPT)
                .arg(2)
                .arg(key)
                .arg(sentinel),
            None => p.cmd("EVAL").arg(PLAIN_CLAIM_SCRIPT).arg(1).arg(key),
        }
        .arg(mine)
        .arg(ttl_ms);
        let (deadline, wait) = match self.ack {
            Ack::Replicas {
                replicas,
                timeout_ms,
            } => {
                // WAIT goes with the write: same connection, same master (the cluster
                // client routes a pipeline by its first key, and follows MOVED and ASK
                // with the whole pipeline).
                p.cmd("WAIT").arg(replicas).arg(timeout_ms);
                (
                    self.timeout + Duration::from_millis(timeout_ms),
                    Some((replicas, timeout_ms)),
                )
            }
            _ => (self.timeout, None),
        };
        let mine = mine.to_owned();
        let w2 = w.clone();
        self.run_for(Some(key), "claim", w, deadline, move |mut c| async move {
            let answer = if wait.is_some() {
                c.pipe::<(Vec<String>, u64)>(&p).await
            } else {
                c.pipe::<(Vec<String>,)>(&p).await.map(|(h,)| (h, 0))
            };
            let (answer, acked) = match answer {
                Ok(a) => a,
                Err(e) if e.kind() == redis::ErrorKind::TryAgain => return Ok(Claimed::Migrating),
                Err(e) => return Err(Self::unavailable(&w2, &e)),
            };
            let [epoch, held] = answer.as_slice() else {
                return Ok(Claimed::Lost);
            };
            let fresh = *held == mine;
            if let (true, Some((replicas, timeout_ms))) = (fresh, wait) {
                if acked < u64::from(replicas) {
                    return Err(StoreError::Unacknowledged {
                        what: w2,
                        acked,
                        replicas,
                        timeout_ms,
                    });
                }
            }
            // A value CADA did not write counts as none (the plain script's '-').
            Ok(Claimed::Done(epoch.parse::<u64>().ok(), fresh))
        })
        .await
    }

    /// `EXISTS key`.
    pub(crate) async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let w = what("read", key, self.cluster);
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(key);
        let w2 = w.clone();
        self.run_for(
            Some(key),
            "read",
            w,
            self.timeout,
            move |mut c| async move {
                c.cmd::<u64>(&cmd)
                    .await
                    .map(|n| n > 0)
                    .map_err(|e| Self::unavailable(&w2, &e))
            },
        )
        .await
    }

    /// `GET key`, and on a single Redis also `GET legacy` when `key` is not set (keys named
    /// before issue 26).
    pub(crate) async fn get(
        &self,
        key: &str,
        legacy: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let w = what("read", key, self.cluster);
        let mut p = redis::pipe();
        p.cmd("GET").arg(key);
        let legacy = legacy.filter(|_| !self.cluster);
        if let Some(l) = legacy {
            p.cmd("GET").arg(l);
        }
        let w2 = w.clone();
        self.run_for(
            Some(key),
            "read",
            w,
            self.timeout,
            move |mut c| async move {
                let values: Vec<Option<String>> =
                    c.pipe(&p).await.map_err(|e| Self::unavailable(&w2, &e))?;
                Ok(values.into_iter().flatten().next())
            },
        )
        .await
    }

    /// Counts one event of `kind` in `window` in the hash `key` (see the counter script);
    /// the count so far in that window.
    pub(crate) async fn count(
        &self,
        key: &str,
        kind: &str,
        window: u64,
        ttl_ms: u64,
    ) -> Result<u64, StoreError> {
        let w = what("count", key, self.cluster);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COUNT_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(kind)
            .arg(window)
            .arg(ttl_ms.max(1));
        let w2 = w.clone();
        self.run_for(
            Some(key),
            "count",
            w,
            self.timeout,
            move |mut c| async move {
                c.cmd::<u64>(&cmd)
                    .await
                    .map_err(|e| Self::unavailable(&w2, &e))
            },
        )
        .await
    }

    /// `DEL` of `keys`, which must share one slot; on a single Redis also of `legacy`.
    /// How many existed.
    pub(crate) async fn delete(
        &self,
        keys: &[String],
        legacy: &[String],
    ) -> Result<u64, StoreError> {
        let Some(first) = keys.first() else {
            return Ok(0);
        };
        let slot = keys::slot(first.as_bytes());
        if keys.iter().any(|k| keys::slot(k.as_bytes()) != slot) {
            return Err(StoreError::Unavailable {
                detail: format!("keys of one operation span cluster slots: {keys:?}"),
            });
        }
        let w = what("reinstate", first, self.cluster);
        let mut p = redis::pipe();
        p.cmd("DEL").arg(keys);
        let legacy: Vec<String> = if self.cluster {
            Vec::new()
        } else {
            legacy.to_vec()
        };
        if !legacy.is_empty() {
            p.cmd("DEL").arg(&legacy);
        }
        let w2 = w.clone();
        self.run_for(
            Some(first),
            "reinstate",
            w,
            self.timeout,
            move |mut c| async move {
                let n: Vec<u64> = c.pipe(&p).await.map_err(|e| Self::unavailable(&w2, &e))?;
                Ok(n.iter().sum())
            },
        )
        .await
    }

    /// `PING` (one node of a cluster).
    async fn ping(&self) -> Result<(), StoreError> {
        self.run("ping", "ping".into(), self.timeout, |c| async move {
            let r: redis::RedisResult<String> = match c {
                Conn::Single(mut c) => redis::cmd("PING").query_async(&mut c).await,
                Conn::Cluster(mut c) => {
                    use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
                    c.route_command(
                        &redis::cmd("PING"),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await
                    .and_then(redis::from_owned_redis_value)
                }
            };
            r.map(|_| ()).map_err(|e| Self::unavailable("ping", &e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_code_in_its_message() {
        for e in [
            StoreError::Unavailable { detail: "x".into() },
            StoreError::Timeout {
                what: "claim".into(),
                ms: 300,
            },
            StoreError::Busy { max: 3 },
            StoreError::Url {
                shown: "x".into(),
                detail: "y".into(),
            },
            StoreError::Ack {
                given: "x".into(),
                detail: "y".into(),
            },
            StoreError::Unacknowledged {
                what: "claim (slot 5)".into(),
                acked: 0,
                replicas: 1,
                timeout_ms: 100,
            },
        ] {
            assert!(e.to_string().starts_with(e.code()), "{e}");
        }
    }

    #[test]
    fn auto_ack_is_resolved_by_the_kind_of_store() {
        let o = StoreOptions::default();
        let single = Store::open("redis://127.0.0.1:1", &o).unwrap();
        assert_eq!(single.ack(), Ack::None);
        let cluster = Store::open("redis+cluster://127.0.0.1:1,127.0.0.1:2", &o).unwrap();
        assert_eq!(
            cluster.ack(),
            Ack::Replicas {
                replicas: 1,
                timeout_ms: ack::DEFAULT_ACK_TIMEOUT_MS
            }
        );
        assert_eq!(Store::open("memory", &o).unwrap().ack(), Ack::None);
        let e = Store::open("redis://h:1?x=y", &o).err().unwrap();
        assert_eq!(e.code(), "store.url");
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_fast_after_the_first_attempt() {
        // Port 1 on loopback: refused at once. The first operation tries and fails; the
        // next ones fail within the backoff without trying (no request waits on a dead
        // store twice), each as store.unavailable, and one outage is counted.
        let s = Store::open("redis://127.0.0.1:1", &StoreOptions::default()).unwrap();
        let r = s.redis().unwrap();
        let e = r.claim("claim", "cada:jti:00", 1000).await.unwrap_err();
        assert_eq!(e.code(), "store.unavailable", "{e}");
        let e = r.exists("cada:jti:00").await.unwrap_err();
        assert_eq!(e.code(), "store.unavailable");
        assert!(e.to_string().contains("next attempt in"), "{e}");
        assert!(s.is_out());
        assert!(s.ping().await.is_err());
    }

    #[tokio::test]
    async fn a_hanging_store_times_out_and_a_dropped_operation_leaves_no_count() {
        let port = fake_redis::hanging().await;
        let o = StoreOptions {
            timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        };
        let s = Store::open(&format!("redis://127.0.0.1:{port}"), &o).unwrap();
        let r = s.redis().unwrap();
        let e = r.claim("claim", "cada:jti:00", 1000).await.unwrap_err();
        assert_eq!(e.code(), "store.timeout", "{e}");
        assert!(s.is_out());
        // A request dropped mid-operation (its client went away) gives its place back.
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            r.claim("claim", "cada:jti:01", 1000),
        )
        .await;
        assert!(dropped.is_err());
        assert_eq!(s.metrics().in_flight().get(), 0);
        assert_eq!(r.bounds.available(None), 1024);
    }

    #[tokio::test]
    async fn operations_beyond_the_bound_are_refused_busy() {
        let o = StoreOptions {
            max_in_flight: 1,
            ..StoreOptions::default()
        };
        let s = Store::open("redis://127.0.0.1:1", &o).unwrap();
        let r = s.redis().unwrap();
        let _held = r.bounds.acquire(None).unwrap();
        let e = r.exists("k").await.unwrap_err();
        assert_eq!(e.code(), "store.busy");
        // Busy is not an outage of the store.
        assert!(!s.is_out());
    }

    #[test]
    fn a_sentinel_other_than_genesis_is_an_epoch_of_its_slot_only() {
        let s = Store::open("redis+cluster://127.0.0.1:1", &StoreOptions::default()).unwrap();
        let r = s.redis().unwrap();
        let in_slot = |slot: u16| format!("x{{{}}}", keys::slot_tags()[usize::from(slot)]);
        // A store as it was created: no loss known.
        r.saw_epoch(1, GENESIS);
        r.saw_epoch(2, GENESIS);
        assert_eq!(s.epoch_start(), None);
        assert_eq!(s.epoch_for(&in_slot(1)), None);
        // Another instance found slot 3 without memory and rewrote its sentinel: slot 3 only.
        r.saw_epoch(3, 5_000);
        assert_eq!(s.epoch_for(&in_slot(3)), Some(5_000));
        assert_eq!(s.epoch_for(&in_slot(1)), None);
        assert_eq!(s.epoch_for(&in_slot(4)), None);
        assert_eq!(s.epoch_start(), Some(5_000));
        // An older value does not move it back.
        r.saw_epoch(3, 2_000);
        assert_eq!(s.epoch_for(&in_slot(3)), Some(5_000));
        // Review delegation-3 finding 1: a process that starts after the loss and meets
        // only rewritten sentinels (one Redis has one) knows the loss from the first one.
        let t = Store::open("redis+cluster://127.0.0.1:1", &StoreOptions::default()).unwrap();
        let q = t.redis().unwrap();
        q.saw_epoch(3, 5_000);
        assert_eq!(t.epoch_for(&in_slot(3)), Some(5_000));
        assert_eq!(t.epoch_start(), Some(5_000));
        let one = Store::open("redis://127.0.0.1:1", &StoreOptions::default()).unwrap();
        one.redis().unwrap().saw_epoch(0, 7_000);
        assert_eq!(one.epoch_for("cada:jti:00"), Some(7_000));
        assert_eq!(one.epoch_for("cada:cnt:{x}"), Some(7_000));
        assert_eq!(Store::memory().epoch_start(), None);
    }

    #[tokio::test]
    async fn a_sentinel_found_gone_after_the_first_contact_starts_an_epoch() {
        // Port 1: the rewrite of the sentinels fails (fails closed), but the epoch starts.
        let s = Store::open("redis://127.0.0.1:1", &StoreOptions::default()).unwrap();
        let r = s.redis().unwrap();
        let seen = r.epoch.lock().unwrap().seen();
        assert!(r.memory_lost("cada:jti:00", seen).await.is_err());
        // The first contact with an empty store cannot tell a new store from a lost one.
        assert_eq!(s.epoch_start(), None);
        assert_eq!(s.metrics().memory_lost().get(), 0);
        // Once a sentinel was met, its absence is a loss.
        r.saw_epoch(0, GENESIS);
        let before = now_ms();
        let seen = r.epoch.lock().unwrap().seen();
        assert!(r.memory_lost("cada:jti:00", seen).await.is_err());
        assert!(s.epoch_for("cada:jti:00").unwrap() >= before);
    }
}
