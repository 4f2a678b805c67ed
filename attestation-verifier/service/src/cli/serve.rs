//! `cada-verify serve`, `cada-verify policy check`.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cada_attestation_verifier::nonce::NonceIssuer;
use cada_audit::Durability;
use cada_pipeline::replay::Replay;
use cada_pipeline::{AppState, Limits};
use cada_verify::server::router;
use clap::Args;

use super::UsageError;

/// Arguments of `cada-verify serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The policy (reloaded on SIGHUP and when the file changes; a bad file keeps the
    /// previous policy and logs why).
    #[command(flatten)]
    pub policy: super::policy::PolicyArgs,
    /// Replay store: `memory` (this instance), one Redis (`redis://HOST:PORT`,
    /// `rediss://…`, `unix:///PATH`) or a Redis Cluster
    /// (`redis+cluster://HOST:PORT,HOST:PORT,…`), shared by every instance for proof ids,
    /// single-use grants and behaviour limits; while it cannot answer, proofs that need it
    /// fail with 503 (docs/stores.md).
    #[arg(long, default_value = "memory")]
    pub replay_store: String,
    /// Replica acknowledgement, in-flight bound and deadline of the shared store.
    #[command(flatten)]
    pub store: cada_pipeline::store::cli::StoreArgs,
    /// Live entries the memory replay store holds (about 50 bytes each).
    #[arg(long, default_value_t = 4_000_000)]
    pub replay_capacity: usize,
    /// Directory of the hash-chained audit log.
    #[arg(long, default_value = "cada-audit")]
    pub audit_dir: PathBuf,
    /// When an answered decision is on disk. `fsync`: fdatasync before answering (every
    /// answered decision survives a power loss). `batch-ms:N`: answer once the kernel has
    /// the record, fdatasync every N ms (a power loss or kernel crash loses at most the last
    /// N ms of answered decisions; a crash of cada-verify loses none). `none`: the kernel
    /// writes back when it chooses (about 30 s).
    #[arg(long, default_value = "fsync")]
    pub audit_durability: Durability,
    /// Audit rotation, retention and what unauthenticated requests may cost.
    #[command(flatten)]
    pub audit: cada_audit::cli::AuditArgs,
    /// Largest request body; `POST /v1/pop/verify` takes this much beside its `contract`'s
    /// delegation chain (up to 256 KiB more, the largest chain the format accepts).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_body: usize,
    /// Verifications at once before answering 503.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrency: usize,
    /// Requests per second per client address (0: unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_per_client: u32,
    /// File holding the DPoP-nonce HMAC key (32+ bytes), shared by a fleet; default random.
    #[arg(long)]
    pub nonce_key_file: Option<PathBuf>,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents (marked
    /// `emulated` in every answer).
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Logs as JSON lines (default) or text.
    #[arg(long, default_value = "json")]
    pub log_format: String,
    /// Connection limits (header/idle/body deadlines, connection cap).
    #[command(flatten)]
    pub net: cada_net::cli::NetArgs,
    /// How often the owners' status lists are fetched again (seconds). Lists are found in
    /// the contracts proofs present; a list not fetched within the policy's
    /// `[contracts] status_max_staleness_secs` refuses its contracts.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub status_refresh: u64,
    /// Also fetch this status list from the start (repeatable): the URL a contract's
    /// status entry names, so the first proof under it does not wait for a fetch.
    #[arg(long = "status-list", value_name = "URL")]
    pub status_lists: Vec<String>,
    /// Roots for fetching status lists over HTTPS.
    #[command(flatten)]
    pub fetch: cada_net::cli::FetchArgs,
}

/// Runs the server until SIGINT/SIGTERM.
pub fn run(a: ServeArgs) -> Result<bool, UsageError> {
    cada_net::init_logs(&a.log_format);
    let net = a
        .net
        .limits(cada_net::ServeLimits::public())
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = a.policy.load()?;
    let fetcher = a.fetch.fetcher().map_err(|e| UsageError(e.to_string()))?;
    let store = a
        .store
        .open(&a.replay_store)
        .map_err(|e| UsageError(e.to_string()))?;
    let replay = Replay::new(&store, a.replay_capacity);
    let nonces = super::policy::read_nonce_key(a.nonce_key_file.as_ref())?
        .unwrap_or_else(NonceIssuer::random);
    let audit = a
        .audit
        .open(&a.audit_dir, a.audit_durability)
        .map_err(|e| UsageError(e.to_string()))?;
    let limits = Limits {
        max_body: a.max_body,
        max_concurrency: a.max_concurrency,
        rate_per_client: a.rate_per_client,
    };
    if a.insecure_emulator {
        super::warn_emulator();
        tracing::warn!("emulator mode: unsigned QEMU attestation documents are accepted");
    }
    let fleet = cada_pipeline::fleet::Fleet::new(&store);
    let state = AppState::new(
        policy,
        replay,
        audit,
        nonces,
        limits,
        a.insecure_emulator,
        fleet,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| UsageError(e.to_string()))?;
    rt.block_on(async move {
        if a.policy.policy.is_some() {
            tokio::spawn(watch_policy(a.policy.clone(), state.clone()));
        }
        tokio::spawn(cada_pipeline::refresh_status_lists(
            state.clone(),
            fetcher,
            a.status_lists.clone(),
            Duration::from_secs(a.status_refresh.max(1)),
        ));
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| UsageError(format!("bind {}: {e}", a.listen)))?;
        tracing::info!(addr = %a.listen, replay = %store.url(), store_ack = %store.ack(), audit = %a.audit_dir.display(), durability = %a.audit_durability, "cada-verify serving");
        println!("ready listen={}", a.listen);
        let stats = state.conn_stats();
        cada_net::serve_tcp(listener, router(state), &net, stats, cada_net::shutdown_signal())
            .await
            .map_err(|e| UsageError(e.to_string()))?;
        Ok(true)
    })
}

/// Reloads the policy on SIGHUP and when the file's modification time changes.
async fn watch_policy(args: super::policy::PolicyArgs, state: Arc<AppState>) {
    let Some(path) = args.policy.clone() else {
        return;
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last = mtime(&path);
    loop {
        let by_signal = tokio::select! {
            _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        let now = mtime(&path);
        if !by_signal && now == last {
            continue;
        }
        last = now;
        match args.load() {
            Ok(p) => {
                state.swap_policy(p);
                tracing::info!(policy = %path.display(), "policy reloaded");
            }
            Err(e) => {
                state.reload_failed();
                tracing::error!(policy = %path.display(), error = %e, "policy reload failed: keeping the previous policy");
            }
        }
    }
}
