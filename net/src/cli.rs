//! The listener flags every CADA server takes (`#[command(flatten)] net: NetArgs`).
use std::time::Duration;

use crate::{
    NetError, ServeLimits, DEFAULT_BODY_TIMEOUT_MS, DEFAULT_HEADER_READ_TIMEOUT_MS,
    DEFAULT_IDLE_TIMEOUT_MS,
};

/// Connection limits of the HTTP listener(s).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Connection limits (slow-client protection)")]
pub struct NetArgs {
    /// Most client connections open at once, per listener. At the cap, new connections wait
    /// in the kernel's accept queue and are served as slots free; keep-alive connections
    /// idle between requests are closed to make room. The open-file limit is raised to
    /// match (start fails if the hard limit is too low). [default: 4096 for cada-verify,
    /// 512 for cada-parent]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Time a client gets to send a complete request head: from connecting for its first
    /// request, from the first byte for later ones. Connections that send nothing or half a
    /// head are closed after it.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_HEADER_READ_TIMEOUT_MS)]
    pub header_timeout_ms: u64,
    /// Time a keep-alive connection may wait for its next request before it is closed.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// Time a request body gets to arrive in full after its head; slower bodies are
    /// answered 408 and the connection closed.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_BODY_TIMEOUT_MS)]
    pub body_timeout_ms: u64,
}

impl NetArgs {
    /// These flags applied over `base` (the server's defaults), validated.
    pub fn limits(&self, base: ServeLimits) -> Result<ServeLimits, NetError> {
        let l = ServeLimits {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            header_read_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            ..base
        };
        l.validate()?;
        Ok(l)
    }
}

/// The roots of outgoing HTTPS fetches (did:web documents, status lists).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq, Default)]
#[command(next_help_heading = "Outgoing HTTPS (did:web documents, status lists)")]
pub struct FetchArgs {
    /// Trust only the CA certificates in this PEM file for outgoing HTTPS, instead of the
    /// Mozilla CA set built into the binary (repeatable). For an owner who publishes behind
    /// a private CA, or to pin the one CA that serves your owners. Plain `http` is used only
    /// for loopback URLs.
    #[arg(long = "fetch-ca", value_name = "PEM")]
    pub fetch_ca: Vec<std::path::PathBuf>,
}

impl FetchArgs {
    /// The fetcher these flags describe.
    pub fn fetcher(&self) -> Result<crate::fetch::Fetcher, NetError> {
        crate::fetch::Fetcher::with_ca_files(&self.fetch_ca)
    }
}
