//! `cada-sts`: exchange attested proofs for short-lived, DPoP-bound access tokens.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::{Policy, Verifier, VerifierOptions};
use cada_audit::Durability;
use cada_pipeline::fleet::Fleet;
use cada_pipeline::replay::Replay;
use cada_protocol::access_token::MAX_LIFETIME_SECS;
use cada_sts::exchange::Minter;
use cada_sts::keys::{KeySet, SigningKey};
use cada_sts::server::{router, StsState};
use cada_sts::StsError;
use clap::{Args, Parser, Subcommand};
use zeroize::Zeroizing;

/// A security token service for CADA agents: no standing credentials.
///
/// An agent sends, to POST /token, an RFC 8693 token exchange: a CB-PoP for the token
/// endpoint in the DPoP header, its evidence in CADA-Evidence, the owner's trust contract
/// as subject_token (subject_token_type urn:cada:params:oauth:token-type:trust-contract),
/// the resource it wants a token for (RFC 8707) and optionally scope. The STS applies the
/// one decision of the verifier library — evidence, measurements allowed for the
/// resource's audience, the owner, the contract (granting the resource and every scope),
/// its status, the proof's freshness, nonce and replay — and answers an RFC 9068 access
/// token (typ at+jwt, ES256) bound to the enclave key (cnf.jkt), for that resource only,
/// living at most 5 minutes and never past the contract or the evidence.
///
/// Resource servers check the token with their own DPoP support and the STS's JWKS
/// (/jwks, announced in /.well-known/oauth-authorization-server): no CADA code needed.
///
/// A first run:
///
///   cada-sts keygen --out sts-key.pem
///   cada-sts serve --policy policy.toml --signing-key sts-key.pem
///       --issuer https://sts.example.com --listen 0.0.0.0:8443
///
/// Refusals are RFC 6749 errors whose error_description starts with the [code] of the
/// rule that refused (invalid_client: evidence or measurements; invalid_grant: contract;
/// invalid_scope; invalid_target; invalid_dpop_proof; use_dpop_nonce).
#[derive(Parser)]
#[command(
    name = "cada-sts",
    version,
    propagate_version = true,
    verbatim_doc_comment
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the token endpoint, metadata, JWKS, introspection and revocation.
    Serve(Box<ServeArgs>),
    /// Make a token-signing key (ES256, PEM PKCS#8, mode 0600) and print its kid.
    ///
    /// Rotation: start with the new key as --signing-key and the old one as --previous-key
    /// for at least the token lifetime (5 minutes), so tokens the old key signed keep
    /// verifying through the JWKS; then drop the old one.
    Keygen {
        /// Where to write the key (refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8440")]
    listen: SocketAddr,
    /// The issuer identifier: the STS's public base URL (`iss` of its tokens; the token
    /// endpoint is ISSUER/token, the URL token-endpoint proofs are signed for). Default:
    /// http://LISTEN (for local use only).
    #[arg(long, value_name = "URL")]
    issuer: Option<String>,
    /// Policy file (TOML), the same format as cada-verify's: roots, evidence rules, the
    /// measurements allowed per audience (the resource's), and the owners each audience
    /// trusts. Every token needs a contract from an owner the resource's audience lists.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The key that signs tokens (PEM PKCS#8 P-256, from `cada-sts keygen`). Without it a
    /// key is made in memory at start: its tokens die with the process.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// An older key still published in the JWKS and accepted by introspection, never used
    /// to sign (repeatable): for rotation.
    #[arg(long = "previous-key", value_name = "FILE")]
    previous_keys: Vec<PathBuf>,
    /// Token lifetime in seconds (at most 300; a token never outlives its contract or the
    /// evidence).
    #[arg(long, value_name = "SECS", default_value_t = MAX_LIFETIME_SECS,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LIFETIME_SECS))]
    token_ttl: u64,
    /// Where token-endpoint proof ids (and revoked token ids) are remembered: `memory`
    /// (this process), one Redis (`redis://HOST:PORT`, `rediss://…`, `unix:///PATH`) or a
    /// Redis Cluster (`redis+cluster://HOST:PORT,HOST:PORT,…`) shared with other STS and
    /// verifier instances (a proof used at one is refused at all; docs/stores.md).
    #[arg(long, default_value = "memory")]
    replay_store: String,
    /// Replica acknowledgement, in-flight bound and deadline of the shared store.
    #[command(flatten)]
    store: cada_pipeline::store::cli::StoreArgs,
    /// Most proof ids remembered in memory.
    #[arg(long, default_value_t = 1_000_000)]
    replay_capacity: usize,
    /// Directory of the hash-chained audit log (every exchange, issued or refused, and
    /// every revocation); `cada-verify audit verify DIR` checks it.
    #[arg(long, value_name = "DIR")]
    audit_dir: PathBuf,
    /// When an audit line counts as written (a token is answered only after): `fsync`
    /// (each line on disk first), `batch-ms:N` (fdatasync every N ms; a power loss loses at
    /// most the last N ms), or `none` (the kernel writes back when it chooses).
    #[arg(long, default_value = "fsync")]
    audit_durability: Durability,
    /// Audit rotation and retention (and the limits on unauthenticated records).
    #[command(flatten)]
    audit: cada_audit::cli::AuditArgs,
    /// A file holding the secret that /introspect and /revoke require as
    /// `Authorization: Bearer SECRET` (resource servers and operators). Without it both
    /// endpoints refuse every request.
    #[arg(long, value_name = "FILE")]
    admin_secret_file: Option<PathBuf>,
    /// A file holding the DPoP nonce key (32+ bytes), shared by the STS instances of a
    /// fleet so that a nonce one issued is accepted by all. Default: random per process.
    #[arg(long, value_name = "FILE")]
    nonce_key_file: Option<PathBuf>,
    /// How often the owners' status lists are fetched again (seconds). Lists are found in
    /// the contracts exchanges present; a list not fetched within the policy's
    /// `[contracts] status_max_staleness_secs` refuses its contracts.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    status_refresh: u64,
    /// Also fetch this status list from the start (repeatable).
    #[arg(long = "status-list", value_name = "URL")]
    status_lists: Vec<String>,
    /// Roots for fetching status lists over HTTPS.
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
    let r = match cli.command {
        Command::Serve(a) => serve(*a),
        Command::Keygen { out } => keygen(&out),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cada-sts: {e}");
            ExitCode::from(2)
        }
    }
}

fn keygen(out: &PathBuf) -> Result<(), StsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (key, pem) = SigningKey::generate()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| StsError::Usage(format!("{}: {e}", out.display())))?;
    f.write_all(pem.as_bytes())
        .map_err(|e| StsError::Usage(format!("{}: {e}", out.display())))?;
    println!("{}", key.kid());
    Ok(())
}

fn read_secret(path: &PathBuf, what: &str) -> Result<Zeroizing<String>, StsError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| StsError::Usage(format!("{what} {}: {e}", path.display())))?,
    );
    let s = Zeroizing::new(text.trim().to_owned());
    if s.len() < 32 {
        return Err(StsError::Usage(format!(
            "{what} {}: at least 32 characters, please (e.g. openssl rand -hex 32)",
            path.display()
        )));
    }
    Ok(s)
}

fn serve(a: ServeArgs) -> Result<(), StsError> {
    cada_net::init_logs(&a.log_format);
    let usage = |e: String| StsError::Usage(e);
    let limits = a
        .net
        .limits(cada_net::ServeLimits::public())
        .map_err(|e| usage(e.to_string()))?;
    let policy = Policy::load(&a.policy).map_err(|e| usage(e.to_string()))?;
    policy.check_startable().map_err(|e| usage(e.to_string()))?;
    let active = match &a.signing_key {
        Some(p) => SigningKey::from_pem_file(p)?,
        None => {
            tracing::warn!("no --signing-key: signing with a key made in memory; its tokens die with this process");
            SigningKey::generate()?.0
        }
    };
    let previous = a
        .previous_keys
        .iter()
        .map(|p| SigningKey::from_pem_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let fetcher = a.fetch.fetcher().map_err(|e| usage(e.to_string()))?;
    let store = a
        .store
        .open(&a.replay_store)
        .map_err(|e| usage(e.to_string()))?;
    let replay = Replay::new(&store, a.replay_capacity);
    let fleet = Fleet::new(&store);
    let nonces = match &a.nonce_key_file {
        Some(p) => NonceIssuer::new(read_secret(p, "--nonce-key-file")?.as_bytes()),
        None => NonceIssuer::random(),
    };
    let admin_secret = a
        .admin_secret_file
        .as_ref()
        .map(|p| read_secret(p, "--admin-secret-file"))
        .transpose()?;
    let audit = a
        .audit
        .open(&a.audit_dir, a.audit_durability)
        .map_err(|e| usage(e.to_string()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(e.to_string()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .map_err(|e| usage(format!("bind {}: {e}", a.listen)))?;
        let bound = listener.local_addr().map_err(|e| usage(e.to_string()))?;
        let issuer = a
            .issuer
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let issuer = issuer.trim_end_matches('/').to_owned();
        cada_protocol::url::HttpUrl::parse_canonical(&format!("{issuer}/token"))
            .map_err(|e| usage(format!("--issuer {issuer}: {e}")))?;
        let minter = Minter {
            issuer: issuer.clone(),
            ttl_secs: a.token_ttl,
            keys: KeySet::new(active, previous),
        };
        let verifier = Verifier::new(policy, VerifierOptions::default());
        let state = StsState::new(verifier, minter, replay, fleet, nonces, audit, admin_secret);
        {
            let state = state.clone();
            let extra = a.status_lists.clone();
            let every = Duration::from_secs(a.status_refresh.max(1));
            tokio::spawn(async move {
                loop {
                    state.refresh_status_lists(&fetcher, &extra).await;
                    tokio::time::sleep(every).await;
                }
            });
        }
        tracing::info!(%bound, %issuer, "cada-sts serving");
        println!("ready listen={bound} issuer={issuer}");
        let stats = state.conn_stats();
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
