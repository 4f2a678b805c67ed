//! `cada-gate`: admit only attested agents to an MCP server, per tool.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::Policy;
use cada_audit::Durability;
use cada_gate::public::PublicBase;
use cada_gate::server::{router, GateConfig, GateState};
use cada_gate::GateError;
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use cada_pipeline::{AppState, Limits};
use clap::Parser;

/// A reverse proxy that admits only attested AI agents to an MCP server (or any HTTP API).
///
/// Every request must carry a CB-PoP in the DPoP header, made inside an enclave whose
/// evidence (CADA-Evidence, sent once) shows an image the policy allows, and — where the
/// policy's audience names owners — under the owner's trust contract (CADA-Contract, sent
/// once). Or an access token of a policy [[issuer]] (cada-sts) with its DPoP proof.
/// The gate reads the JSON-RPC body: the proof must name its digest (cada.bd, when the
/// policy requires it) and its calls (cada.mcp), and every tools/call must be a tool the
/// contract grants. Refused calls never reach the server; each answer names its rule:
///
///   401 WWW-Authenticate: DPoP error="use_attestation" | "invalid_dpop_proof" |
///       "invalid_token" | "use_dpop_nonce", resource_metadata="…"
///   403 error="insufficient_scope", scope="tool:NAME"
///
/// and the body is a JSON-RPC error per request: "[code] rule N: what failed".
/// The request target must already be in normal form (no dot segments, no encoded / \ . %,
/// no ;, //, NUL or raw non-ASCII): else 400 request.url_not_normal, naming the rule. It is
/// forwarded byte for byte below --upstream's path, never normalized.
/// Accepted calls are forwarded with CADA-Agent (the agent's did:key) and CADA-Agent-Claims
/// (base64url JSON: key, platform, measurements digest, owner, contract, tools, calls, bd);
/// any client header that reads as CADA-Agent* (any case, _ for -) is removed, and
/// X-Forwarded-For is the client's address (appended to only from a --trusted-proxy);
/// Forwarded, X-Forwarded-*, X-Real-IP and the like pass only from a --trusted-proxy, and
/// method or URL overrides (X-HTTP-Method-Override, X-Original-URL …) and _ look-alikes of
/// checked headers (Mcp_Name …) are removed (refused in forward auth).
/// Every decision and every forwarded call's upstream status and latency go to the
/// hash-chained audit log.
///
/// Also served: RFC 9728 metadata at /.well-known/oauth-protected-resource[/PATH],
/// /_cada/auth for nginx auth_request, Envoy ext_authz and Traefik ForwardAuth (see
/// docs/gate.md for the proxy settings that forward exactly the URI the gate checked; where
/// contracts grant tools, proofs there must name their calls and Content-Digest),
/// /_cada/metrics (Prometheus) and /_cada/healthz.
///
/// A first run, in front of an MCP server on port 9000:
///
///   cada-gate --upstream http://127.0.0.1:9000 --public-url https://mcp.example.com
///       --policy policy.toml --audit-dir /var/lib/cada-gate/audit
#[derive(Parser)]
#[command(name = "cada-gate", version, verbatim_doc_comment)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8402")]
    listen: SocketAddr,
    /// The MCP server (http or https, with an optional path prefix, in normal form): a
    /// request for /P?Q is forwarded to UPSTREAM/P?Q, the target's exact bytes (a target
    /// not in normal form, e.g. with dot segments or encoded slashes, is refused 400).
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// The URL clients call, without a path: what proofs are bound to (a proof for
    /// http://localhost:8402/mcp fails at http://127.0.0.1:8402/mcp). Default:
    /// http://LISTEN. Behind a reverse proxy, use --trusted-proxy instead or as well.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// A reverse proxy (IP address) whose X-Forwarded-Proto, X-Forwarded-Host and
    /// X-Forwarded-Prefix tell the public URL, and which may use /_cada/auth (repeatable).
    /// From anyone else these headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<IpAddr>,
    /// Policy file (TOML), cada-verify's format: roots, evidence rules, audiences with
    /// their measurements and trusted owners, [token] require_body_digest, [[issuer]].
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// An authorization server (a cada-sts issuer URL) named in the resource metadata, so
    /// that clients know where to exchange for access tokens (repeatable).
    #[arg(long = "authorization-server", value_name = "URL")]
    authorization_servers: Vec<String>,
    /// Largest request body; larger ones are answered 413 and not forwarded.
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=4 * 1024 * 1024))]
    max_body: u64,
    /// Time the upstream gets to answer a request's head; then 504. The body (e.g. a
    /// server-sent event stream) then streams without a deadline.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    upstream_timeout_ms: u64,
    /// Trust only the CA certificates in this PEM file for an https upstream (repeatable;
    /// default: the Mozilla CAs built in).
    #[arg(long = "upstream-ca", value_name = "PEM")]
    upstream_ca: Vec<PathBuf>,
    /// Where proof ids, single-use grants and behaviour limits are kept: `memory`, one
    /// Redis (`redis://HOST:PORT`, `rediss://…`, `unix:///PATH`) or a Redis Cluster
    /// (`redis+cluster://HOST:PORT,HOST:PORT,…`), shared with other gates and verifiers (a
    /// proof used at one is refused at all; docs/stores.md).
    #[arg(long, default_value = "memory")]
    replay_store: String,
    /// Replica acknowledgement, in-flight bound and deadline of the shared store.
    #[command(flatten)]
    store: cada_pipeline::store::cli::StoreArgs,
    /// Most proof ids remembered in memory.
    #[arg(long, default_value_t = 1_000_000)]
    replay_capacity: usize,
    /// Directory of the hash-chained audit log; `cada-verify audit verify DIR` checks it.
    #[arg(long, value_name = "DIR")]
    audit_dir: PathBuf,
    /// When an audit line counts as written: `fsync`, `batch-ms:N` or `none`.
    #[arg(long, default_value = "fsync")]
    audit_durability: Durability,
    /// Audit rotation, retention and what unauthenticated requests may cost.
    #[command(flatten)]
    audit: cada_audit::cli::AuditArgs,
    /// A file holding the DPoP nonce key (32+ bytes), shared by a fleet of gates and
    /// verifiers (read as cada-verify reads it: the same file gives the same key).
    #[arg(long, value_name = "FILE")]
    nonce_key_file: Option<PathBuf>,
    /// How often the owners' status lists are fetched again (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    status_refresh: u64,
    /// Also fetch this status list from the start (repeatable).
    #[arg(long = "status-list", value_name = "URL")]
    status_lists: Vec<String>,
    /// Roots for fetching status lists, did:web documents and JWKS over HTTPS.
    #[command(flatten)]
    fetch: cada_net::cli::FetchArgs,
    /// Logs as JSON lines (default) or text.
    #[arg(long, default_value = "json")]
    log_format: String,
    /// Connection limits.
    #[command(flatten)]
    net: cada_net::cli::NetArgs,
}

fn main() -> ExitCode {
    // `… | head -1`: a closed stdout ends the command quietly (status 141), no panic.
    cada_protocol::cli::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cada-gate: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(a: Cli) -> Result<(), GateError> {
    cada_net::init_logs(&a.log_format);
    let usage = |e: String| GateError::Usage(e);
    // A delegation chain in CADA-Contract may take 256 KiB beyond the head limit; every other
    // header keeps it (review delegation-1, finding 2).
    let limits = a
        .net
        .limits(cada_net::ServeLimits::public().with_chain())
        .map_err(|e| usage(e.to_string()))?;
    // Normal form, like every request target: the forwarded path is this path followed by
    // the target's exact bytes.
    let upstream = cada_gate::target::base_url("--upstream", &a.upstream)?;
    let policy = Policy::load(&a.policy).map_err(|e| usage(e.to_string()))?;
    policy.check_startable().map_err(|e| usage(e.to_string()))?;
    let fetcher = a.fetch.fetcher().map_err(|e| usage(e.to_string()))?;
    let upstream_tls = cada_net::fetch::Fetcher::with_ca_files(&a.upstream_ca)
        .map_err(|e| usage(e.to_string()))?;
    let store = a
        .store
        .open(&a.replay_store)
        .map_err(|e| usage(e.to_string()))?;
    let replay = Replay::new(&store, a.replay_capacity);
    let fleet = Fleet::new(&store);
    let nonces = cada_pipeline::read_nonce_key(a.nonce_key_file.as_deref())
        .map_err(usage)?
        .unwrap_or_else(NonceIssuer::random);
    let audit = a
        .audit
        .open(&a.audit_dir, a.audit_durability)
        .map_err(|e| usage(e.to_string()))?;
    let max_body = usize::try_from(a.max_body).map_err(|e| usage(e.to_string()))?;
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
            .unwrap_or_else(|| format!("http://{bound}"));
        let public = PublicBase::new(&public_url, a.trusted_proxies.clone())?;
        let verify = AppState::new(
            policy,
            replay,
            audit,
            nonces,
            Limits {
                max_body,
                max_concurrency: 4096,
                rate_per_client: 0,
            },
            false,
            fleet,
        );
        {
            let verify = verify.clone();
            let extra = a.status_lists.clone();
            let every = Duration::from_secs(a.status_refresh.max(1));
            tokio::spawn(cada_pipeline::refresh_status_lists(
                verify, fetcher, extra, every,
            ));
        }
        let state = GateState::new(
            verify,
            cada_net::upstream::Upstream::new(&upstream_tls),
            GateConfig {
                upstream: upstream.clone(),
                public,
                authorization_servers: a.authorization_servers.clone(),
                max_body,
                upstream_timeout: Duration::from_millis(a.upstream_timeout_ms.max(1)),
            },
        );
        tracing::info!(%bound, %public_url, upstream = %upstream, "cada-gate serving");
        println!("ready listen={bound} public={public_url}");
        let stats = state.verify.conn_stats();
        cada_net::serve_tcp(
            listener,
            router(state),
            &limits,
            stats,
            cada_net::shutdown_signal(),
        )
        .await
        .map_err(|e| usage(e.to_string()))
    })
}
