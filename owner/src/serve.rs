//! `cada-owner serve`: the owner's approval service, a thin adapter over `cada-approval` —
//! the step-up API enclaves call (`approval::stepup`), the passkey-protected approval page
//! (`approval::web`) and `/healthz` on one listener; Prometheus `/metrics` on
//! `--metrics-listen` if given, else on the same listener for loopback clients only. It
//! holds the owner key: run it where the owner chooses (`docs/approval.md`).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use cada_approval::stepup::{self, Config, Limits, Revocation, Service, Webhook};
use cada_approval::web::{RegistrationCode, Web, WebConfig};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{Policy, UnixTime};
use cada_audit::Durability;
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use cada_pipeline::{AppState, Limits as PipelineLimits};
use clap::Args;

use crate::{load_key, parse_duration, usage, Failure};

/// `cada-owner serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The owner key file (from `keygen`): approvals are signed with it.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8470")]
    listen: SocketAddr,
    /// Serve /metrics (and /healthz) on this address instead, and not on --listen. Without
    /// it /metrics is on --listen for loopback clients only: the request counts and the
    /// pending gauge are not for the agents' hosts, which must reach --listen to file.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// The URL enclaves and the owner's browser use: what contracts name as stepUp
    /// (`cada-owner grant --step-up URL`), what proofs are bound to, and the passkeys'
    /// relying party (a host name such as localhost, never an IP address: WebAuthn refuses
    /// those). https, or http to localhost. Default: http://localhost:PORT.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Policy file (TOML, cada-verify's format): the roots and evidence rules, and an
    /// [[audience]] whose prefix covers the public URL listing the measurements of the
    /// images that may ask (no owners there: the service checks the owner lock itself).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Directory of the hash-chained audit log (every request, refusal, decision, grant
    /// handed out and expiry); `cada-verify audit verify DIR` checks it.
    #[arg(long, value_name = "DIR")]
    audit_dir: PathBuf,
    /// When an audit line counts as written: `fsync`, `batch-ms:N` or `none`.
    #[arg(long, default_value = "fsync")]
    audit_durability: Durability,
    /// Audit rotation, retention and what unauthenticated requests may cost.
    #[command(flatten)]
    audit: cada_audit::cli::AuditArgs,
    /// Where the page keeps the owner's passkeys (created if missing; default: an
    /// `approval` directory beside the key file).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// POST {"id", "url", "agent", "tool"} (JSON, never the arguments) here for each new
    /// request: https, or http to a loopback host; 5 s to answer; failures are logged.
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// How long a request waits for an answer before it expires (stepup.expired): 90s,
    /// 10m, 1h; at most 24h.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    request_ttl: String,
    /// Seconds an agent waits between polls (CIBA interval; faster polls get slow_down).
    #[arg(long, value_name = "SECS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    poll_interval: u64,
    /// Pending requests one enclave key may have at once.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    max_pending_per_key: u64,
    /// Requests one enclave key may file per hour.
    #[arg(long, value_name = "N", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_per_hour: u64,
    /// How long after the owner denies a call the same call (same enclave key, server,
    /// tool and arguments; invisible and direction-changing characters ignored) is refused
    /// with stepup.denied instead of being put before the owner again: 90s, 15m, 1h; at
    /// most 24h; 0 never refuses.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    denial_cooloff: String,
    /// The status list (`status-list new --url`) whose next free index each grant gets,
    /// so the owner can revoke it (`cada-owner revoke`); with --status-index-file. Without
    /// it grants carry no status entry and only expire, as short grants of `grant
    /// --minutes` (5 minutes for "approve once", at most 24 h for "approve for N minutes").
    #[arg(long, value_name = "URL", requires = "status_index_file")]
    status_list: Option<String>,
    /// The file holding the next free index of --status-list (created with 0; rewritten
    /// before each grant is signed). Give the service its own range of the list: start the
    /// file at an index no other contract uses.
    #[arg(long, value_name = "FILE", requires = "status_list")]
    status_index_file: Option<PathBuf>,
    /// Where proof ids are remembered: `memory`, `redis://HOST:PORT` or
    /// `redis+cluster://HOST:PORT,…` (docs/stores.md).
    #[arg(long, default_value = "memory")]
    replay_store: String,
    /// Replica acknowledgement, in-flight bound and deadline of the shared store.
    #[command(flatten)]
    store: cada_pipeline::store::cli::StoreArgs,
    /// Most proof ids remembered in memory.
    #[arg(long, default_value_t = 100_000)]
    replay_capacity: usize,
    /// Roots for the webhook's HTTPS.
    #[command(flatten)]
    fetch: cada_net::cli::FetchArgs,
    /// Connection limits.
    #[command(flatten)]
    net: cada_net::cli::NetArgs,
}

/// Registration codes issued before the listener is ready wait, so that `ready` is the
/// first line on stdout; later ones are printed at once.
#[derive(Default)]
struct Codes {
    ready: bool,
    held: Vec<String>,
}

fn print_code(codes: &Mutex<Codes>, code: &RegistrationCode) {
    let mut c = match codes.lock() {
        Ok(c) => c,
        Err(p) => p.into_inner(),
    };
    let line = code.to_string();
    if c.ready {
        println!("{line}");
    } else {
        c.held.push(line);
    }
}

/// Runs `cada-owner serve` until SIGINT/SIGTERM.
pub fn run(a: &ServeArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let ttl = parse_duration(&a.request_ttl)?;
    if ttl > 24 * 3600 {
        return Err(usage("--request-ttl: at most 24h"));
    }
    // `0` (or `0s`, `0m` …) turns the cool-off off; anything else is a positive duration.
    let digits = a
        .denial_cooloff
        .strip_suffix(['s', 'm', 'h', 'd'])
        .unwrap_or(&a.denial_cooloff);
    let cooloff = if !digits.is_empty() && digits.bytes().all(|b| b == b'0') {
        0
    } else {
        parse_duration(&a.denial_cooloff)?
    };
    if cooloff > 24 * 3600 {
        return Err(usage("--denial-cooloff: at most 24h (0 never refuses)"));
    }
    let limits = a
        .net
        .limits(cada_net::ServeLimits::public())
        .map_err(|e| usage(e.to_string()))?;
    let policy = Policy::load(&a.policy).map_err(|e| usage(format!("--policy: {e}")))?;
    policy
        .check_startable()
        .map_err(|e| usage(format!("--policy: {e}")))?;
    let store = a
        .store
        .open(&a.replay_store)
        .map_err(|e| usage(e.to_string()))?;
    let replay = Replay::new(&store, a.replay_capacity);
    let fleet = Fleet::new(&store);
    let audit = a
        .audit
        .open(&a.audit_dir, a.audit_durability)
        .map_err(|e| usage(format!("--audit-dir: {e}")))?;
    let revocation = match (&a.status_list, &a.status_index_file) {
        (Some(url), Some(file)) => {
            Revocation::list(url, file.clone()).map_err(|e| usage(e.to_string()))?
        }
        _ => Revocation::None,
    };
    let fetcher = a.fetch.fetcher().map_err(|e| usage(e.to_string()))?;
    let webhook = a
        .webhook
        .as_deref()
        .map(|u| Webhook::new(u, &fetcher))
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let state_dir = a.state_dir.clone().unwrap_or_else(|| {
        a.key
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("approval")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(e.to_string()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| usage(format!("bind {}: {e}", a.listen)))?;
        let bound = listener.local_addr().map_err(|e| usage(e.to_string()))?;
        let public_url = a
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://localhost:{}", bound.port()));
        let pipeline = AppState::new(
            policy,
            replay,
            audit,
            NonceIssuer::random(),
            PipelineLimits {
                max_body: cada_protocol::stepup::MAX_REQUEST_BODY,
                max_concurrency: 1024,
                rate_per_client: 0,
            },
            false,
            fleet,
        );
        let owner = key.did().to_owned();
        let svc = Service::new(
            Config {
                public_url: public_url.clone(),
                limits: Limits {
                    max_pending_per_key: usize::try_from(a.max_pending_per_key).unwrap_or(5),
                    max_per_hour: usize::try_from(a.max_per_hour).unwrap_or(30),
                    ttl_ms: ttl.saturating_mul(1000),
                    interval_ms: a.poll_interval.saturating_mul(1000),
                    denial_cooloff_ms: cooloff.saturating_mul(1000),
                    ..Limits::default()
                },
                revocation,
                webhook,
            },
            key,
            Arc::clone(&pipeline),
            stepup::system_clock(),
        )
        .map_err(|e| usage(e.to_string()))?;
        let codes = Arc::new(Mutex::new(Codes::default()));
        let sink_codes = Arc::clone(&codes);
        let web = Web::new(
            &WebConfig {
                public_url: svc.public_url().to_owned(),
                state_dir,
            },
            svc.clone(),
            Arc::new(|| UnixTime::now().as_secs()),
            Arc::new(move |c: &RegistrationCode| print_code(&sink_codes, c)),
        )
        .map_err(|e| usage(format!("the approval page: {e}")))?;
        tokio::spawn(Arc::clone(&svc).run_sweeper());
        let metrics_router = |loopback_only: bool| {
            let metrics_svc = Arc::clone(&svc);
            axum::Router::new()
                .route(
                    "/metrics",
                    axum::routing::get(move |peer: Peer| {
                        let svc = Arc::clone(&metrics_svc);
                        async move {
                            if loopback_only && !is_loopback(peer) {
                                return metrics_refused();
                            }
                            metrics(&svc)
                        }
                    }),
                )
                .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        };
        let mut router = stepup::router(Arc::clone(&svc)).merge(web.router());
        if let Some(addr) = a.metrics_listen {
            let ml = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| usage(format!("bind --metrics-listen {addr}: {e}")))?;
            let mbound = ml.local_addr().map_err(|e| usage(e.to_string()))?;
            tracing::info!(%mbound, "metrics listener");
            let (mr, stats) = (metrics_router(false), pipeline.conn_stats());
            let mlimits = limits.clone();
            tokio::spawn(async move {
                if let Err(e) =
                    cada_net::serve_tcp(ml, mr, &mlimits, stats, cada_net::shutdown_signal()).await
                {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
            router = router.route("/healthz", axum::routing::get(|| async { "ok\n" }));
        } else {
            router = router.merge(metrics_router(true));
        }
        tracing::info!(%bound, public = %svc.public_url(), %owner, "cada-owner serve");
        {
            let mut c = match codes.lock() {
                Ok(c) => c,
                Err(p) => p.into_inner(),
            };
            println!(
                "ready listen={bound} public={} owner={owner}",
                svc.public_url()
            );
            for line in c.held.drain(..) {
                println!("{line}");
            }
            c.ready = true;
        }
        cada_net::serve_tcp(
            listener,
            router,
            &limits,
            pipeline.conn_stats(),
            cada_net::shutdown_signal(),
        )
        .await
        .map_err(|e| usage(e.to_string()))?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The client's address, as the listener records it.
type Peer = Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>;

fn is_loopback(peer: Peer) -> bool {
    peer.is_some_and(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip().is_loopback())
}

/// `/metrics` asked on the public listener by a client that is not on this host.
fn metrics_refused() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::FORBIDDEN,
        axum::Json(serde_json::json!({
            "code": "metrics.not_local",
            "message": "/metrics on this listener answers loopback clients only; scrape it \
                        from this host, or start cada-owner serve with --metrics-listen ADDR"
        })),
    )
        .into_response()
}

/// `/metrics`: the service's `cada_approval_*` and the pipeline's `cada_verify_*`.
fn metrics(svc: &Service) -> axum::response::Response {
    use axum::response::IntoResponse;
    use prometheus_client::encoding::text::{encode_eof, encode_registry};
    let mut out = String::new();
    let ok = encode_registry(&mut out, svc.registry()).is_ok()
        && encode_registry(&mut out, svc.pipeline().registry()).is_ok()
        && encode_eof(&mut out).is_ok();
    if !ok {
        return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
