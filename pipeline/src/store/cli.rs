//! The store flags every server with a shared store takes (`#[command(flatten)] store:
//! StoreArgs`), beside its own `--replay-store URL`.
use std::time::Duration;

use super::{
    Ack, Store, StoreError, StoreOptions, DEFAULT_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_TIMEOUT_MS,
};

/// Replica acknowledgement, in-flight bound and deadline of the shared store.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Shared store (docs/stores.md)")]
pub struct StoreArgs {
    /// Replicas that must hold a single-use write (a proof id, a single-use grant, a
    /// revoked token id, a suspension) before it counts: `none`, `replicas=N` or
    /// `replicas=N,timeout=MS` (WAIT N MS after the write; fewer acknowledgements refuse
    /// with 503 store.unacknowledged). `auto`: replicas=1,timeout=100 on a Redis Cluster,
    /// none on one Redis. With none, a master that fails before replicating may let a
    /// proof be accepted twice (docs/stores.md).
    #[arg(long, value_name = "ACK", default_value = "auto", value_parser = parse_ack)]
    pub store_ack: Ack,
    /// Store operations in flight at most per master of a cluster (one Redis: in all); more
    /// are refused at once (503 store.busy), so that a slow or absent store holds no
    /// unbounded queue of requests and a master that hangs fills its own places only.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub store_max_in_flight: u32,
    /// Deadline of one store operation in milliseconds (a single-use write also waits for
    /// its replicas, up to the --store-ack timeout, on top); past it the request is refused
    /// (503 store.timeout).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub store_timeout_ms: u64,
    /// Connections to the store (to each node of a cluster), used in turn. A claim that
    /// waits for replicas holds its connection for a replica round trip, so with
    /// --store-ack replicas=N the acknowledged claims per second grow with this number.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub store_connections: u32,
}

fn parse_ack(s: &str) -> Result<Ack, String> {
    Ack::parse(s).map_err(|e| match e {
        StoreError::Ack { detail, .. } => detail,
        other => other.to_string(),
    })
}

impl Default for StoreArgs {
    fn default() -> Self {
        StoreArgs {
            store_ack: Ack::Auto,
            store_max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            store_timeout_ms: DEFAULT_TIMEOUT_MS,
            store_connections: DEFAULT_CONNECTIONS,
        }
    }
}

impl StoreArgs {
    /// The options these flags set.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            ack: self.store_ack,
            max_in_flight: usize::try_from(self.store_max_in_flight).unwrap_or(usize::MAX),
            timeout: Duration::from_millis(self.store_timeout_ms),
            connections: usize::try_from(self.store_connections).unwrap_or(1),
        }
    }

    /// The store `url` names (`--replay-store`), run with these flags.
    pub fn open(&self, url: &str) -> Result<Store, StoreError> {
        Store::open(url, &self.options())
    }
}
