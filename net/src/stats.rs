//! Connection counters, as Prometheus types the binaries register in their own registry.
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Counters of one or more listeners (clones share the same values).
#[derive(Clone, Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: Gauge,
    /// Connections accepted.
    pub accepted: Counter,
    /// Times the accept loop found every slot taken and had to wait for one.
    pub cap_waits: Counter,
    /// Connections closed because no complete request head arrived in time (including
    /// connections that sent nothing at all).
    pub header_timeouts: Counter,
    /// Keep-alive connections closed after the idle deadline.
    pub idle_timeouts: Counter,
    /// Keep-alive connections closed while idle to make room at the cap.
    pub evicted_idle: Counter,
    /// Requests answered 408 because their body did not arrive in time.
    pub body_timeouts: Counter,
    /// Accept errors not about a single connection (e.g. out of file descriptors).
    pub accept_errors: Counter,
}

impl ConnStats {
    /// Registers every counter as `<prefix>_<name>` (e.g. `cada_verify_connections_open`).
    pub fn register(&self, registry: &mut Registry, prefix: &str) {
        let n = |s: &str| format!("{prefix}_{s}");
        registry.register(
            n("connections_open"),
            "connections open now",
            self.open.clone(),
        );
        registry.register(
            n("connections_accepted"),
            "connections accepted",
            self.accepted.clone(),
        );
        registry.register(
            n("connection_cap_waits"),
            "times every connection slot was taken and accepting waited",
            self.cap_waits.clone(),
        );
        registry.register(
            n("connection_header_timeouts"),
            "connections closed for not sending a complete request head in time",
            self.header_timeouts.clone(),
        );
        registry.register(
            n("connection_idle_timeouts"),
            "keep-alive connections closed after the idle deadline",
            self.idle_timeouts.clone(),
        );
        registry.register(
            n("connection_idle_evictions"),
            "idle keep-alive connections closed to make room at the connection cap",
            self.evicted_idle.clone(),
        );
        registry.register(
            n("request_body_timeouts"),
            "requests answered 408 because the body did not arrive in time",
            self.body_timeouts.clone(),
        );
        registry.register(
            n("accept_errors"),
            "accept errors not about a single connection",
            self.accept_errors.clone(),
        );
    }
}
