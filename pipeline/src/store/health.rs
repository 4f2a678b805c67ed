//! The store's metrics (`cada_store_*`, in each binary's `/metrics` beside the pipeline's)
//! and its outages: one log line when an outage starts, one when it ends, none per request.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::StoreError;

/// An outage ends at the first success this long after its last failure (so that a slot
/// that keeps failing while others answer is one outage, not one per request).
pub const QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// The store's metrics (cheap to clone: shared counters).
#[derive(Clone)]
pub struct StoreMetrics {
    outage: Gauge,
    outages: Counter,
    errors: Family<CodeLabels, Counter>,
    in_flight: Gauge,
    operations: Family<OpLabels, Histogram>,
    memory_lost: Counter,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            outage: Gauge::default(),
            outages: Counter::default(),
            errors: Family::default(),
            in_flight: Gauge::default(),
            memory_lost: Counter::default(),
            operations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
            }),
        }
    }
}

impl StoreMetrics {
    /// Registers them in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cada_store_outage",
            "1 while the shared store is out (an operation failed and none succeeded in the \
             2 s since the last failure: unreachable, no quorum for a slot, timeout, replicas \
             not acknowledging); requests that need it are refused with 503",
            self.outage.clone(),
        );
        registry.register(
            "cada_store_outages",
            "shared-store outages started (each also logged once when it starts and ends)",
            self.outages.clone(),
        );
        registry.register(
            "cada_store_errors",
            "failed shared-store operations by code (store.unavailable, store.timeout, \
             store.unacknowledged, store.busy)",
            self.errors.clone(),
        );
        registry.register(
            "cada_store_memory_lost",
            "times this process found the shared store's epoch sentinel gone (the store lost \
             its memory: restart without persistence, FLUSHALL, failover to an empty node) and \
             started a new epoch",
            self.memory_lost.clone(),
        );
        registry.register(
            "cada_store_in_flight",
            "shared-store operations in flight (at most --store-max-in-flight per master)",
            self.in_flight.clone(),
        );
        registry.register(
            "cada_store_operation_seconds",
            "time per shared-store operation that succeeded (claim: SET NX and the WAIT for \
             replicas if --store-ack asks for one; read; count; release; reinstate; ping)",
            self.operations.clone(),
        );
    }

    /// Outages started so far (`cada_store_outages_total`).
    pub fn outages_started(&self) -> u64 {
        self.outages.get()
    }

    /// Failed operations with `code` so far (`cada_store_errors_total{code}`).
    pub fn errors(&self, code: &'static str) -> u64 {
        self.errors.get_or_create(&CodeLabels { code }).get()
    }

    /// `cada_store_memory_lost_total`: epochs this process started.
    pub fn memory_lost(&self) -> &Counter {
        &self.memory_lost
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    pub(crate) fn observe(&self, op: &'static str, since: Instant) {
        self.operations
            .get_or_create(&OpLabels { op })
            .observe(since.elapsed().as_secs_f64());
    }
}

struct State {
    since: Option<Instant>,
    last_failure: Option<Instant>,
    failures: u64,
}

/// Whether the store is out, with the log lines and metrics of each change.
pub(crate) struct Health {
    down: AtomicBool,
    state: Mutex<State>,
    metrics: StoreMetrics,
    shown: String,
}

impl Health {
    pub(crate) fn new(metrics: StoreMetrics, shown: String) -> Self {
        Health {
            down: AtomicBool::new(false),
            state: Mutex::new(State {
                since: None,
                last_failure: None,
                failures: 0,
            }),
            metrics,
            shown,
        }
    }

    /// Whether an outage is in progress.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Counts a failed operation; the first of an outage logs its start.
    pub(crate) fn failed(&self, e: &StoreError) {
        self.metrics
            .errors
            .get_or_create(&CodeLabels { code: e.code() })
            .inc();
        // Too many operations at once is this process's limit, not the store's state.
        if matches!(e, StoreError::Busy { .. }) {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        s.last_failure = Some(now);
        s.failures += 1;
        if s.since.is_none() {
            s.since = Some(now);
            self.down.store(true, Ordering::Relaxed);
            self.metrics.outage.set(1);
            self.metrics.outages.inc();
            tracing::error!(
                store = %self.shown,
                code = e.code(),
                error = %e,
                "shared store outage started: requests that need the store are refused (503) \
                 until it answers"
            );
        }
    }

    /// Notes a successful operation; the first one [`QUIET`] after the last failure ends
    /// the outage and logs its end.
    pub(crate) fn succeeded(&self) {
        if !self.is_down() {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let (Some(since), Some(last)) = (s.since, s.last_failure) else {
            return;
        };
        if last.elapsed() < QUIET {
            return;
        }
        let failures = s.failures;
        s.since = None;
        s.failures = 0;
        self.down.store(false, Ordering::Relaxed);
        self.metrics.outage.set(0);
        tracing::warn!(
            store = %self.shown,
            duration_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
            failed_operations = failures,
            "shared store outage ended: the store answers again"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_counted_once_however_many_requests_fail() {
        let m = StoreMetrics::default();
        let h = Health::new(m.clone(), "redis://h:1".into());
        h.succeeded();
        assert_eq!(m.outage.get(), 0);
        for _ in 0..100 {
            h.failed(&StoreError::Unavailable {
                detail: "down".into(),
            });
            // A success on another slot in between does not end it: failures are recent.
            h.succeeded();
        }
        assert!(h.is_down());
        assert_eq!((m.outage.get(), m.outages.get()), (1, 1));
        let unavailable = m
            .errors
            .get_or_create(&CodeLabels {
                code: "store.unavailable",
            })
            .get();
        assert_eq!(unavailable, 100);
        // Busy is this process's own limit: counted, but no outage.
        let m2 = StoreMetrics::default();
        let h2 = Health::new(m2.clone(), "x".into());
        h2.failed(&StoreError::Busy { max: 1 });
        assert!(!h2.is_down());
        assert_eq!(m2.outages.get(), 0);
    }

    #[test]
    fn an_outage_ends_at_the_first_success_after_a_quiet_spell() {
        let m = StoreMetrics::default();
        let h = Health::new(m.clone(), "x".into());
        h.failed(&StoreError::Timeout {
            what: "claim".into(),
            ms: 1,
        });
        // Pretend the last failure is older than QUIET.
        if let Ok(mut s) = h.state.lock() {
            s.last_failure = Instant::now().checked_sub(QUIET + Duration::from_millis(1));
        }
        h.succeeded();
        assert!(!h.is_down());
        assert_eq!((m.outage.get(), m.outages.get()), (0, 1));
        h.failed(&StoreError::Timeout {
            what: "claim".into(),
            ms: 1,
        });
        assert_eq!((m.outage.get(), m.outages.get()), (1, 2));
    }
}
