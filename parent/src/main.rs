//! `cada-parent`: agent signing daemon (`serve`) and a one-shot signer for shells (`sign`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cada_parent::api::{router, with_bearer, AppState, PopAnswer};
use cada_parent::auth::BearerToken;
use cada_parent::client::{EnclaveClient, Endpoint};
use clap::{Parser, Subcommand};

/// CADA parent: relays agents' proof requests to the enclave signer.
///
/// Run the daemon:   cada-parent serve --enclave vsock:16:5005
/// Sign in a shell:  curl -H "$(cada-parent sign --method GET --url https://api.example/x)" …
///
/// Every subcommand finds the daemon's socket the same way: --socket, else $CADA_SOCKET,
/// else /run/cada/agent.sock for root and $XDG_RUNTIME_DIR/cada/agent.sock for other users.
#[derive(Parser)]
#[command(name = "cada-parent", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent signing daemon.
    Serve(ServeArgs),
    /// Ask the daemon for a proof and print ready-to-send headers (`DPoP:`, `CADA-Evidence:`).
    Sign(SignArgs),
    /// Lock the enclave to its owner with a lock from `cada-owner lock` (once per key).
    #[command(subcommand)]
    Owner(OwnerCmd),
    /// Install and list the owner's trust contracts (from `cada-owner grant`).
    #[command(subcommand)]
    Contract(ContractCmd),
    // Its help is DelegateArgs' own.
    Delegate(cada_parent::delegate::DelegateArgs),
    // Its help is ProxyArgs' own (a doc comment here would replace it).
    Proxy(ProxyArgs),
    /// Start an agent that holds no secret: base URLs point at the local secrets endpoint,
    /// placeholders stand where SDKs want a token.
    ///
    ///   cada-parent run --env-file .env.cada -- python agent.py
    ///
    /// .env.cada is a template (NAME=VALUE lines): {{cada.url:NAME}} becomes the secret's
    /// base URL at the endpoint (http://127.0.0.1:PORT/NAME), {{cada.placeholder:NAME}}
    /// becomes cada:NAME, {{cada.proxy}} the endpoint. A file that holds a real-looking
    /// secret is refused (run.secret_in_env_file). Without --proxy, run starts
    /// `cada-parent proxy --secret NAME…` for the agent's lifetime. Signals are forwarded; run
    /// exits with the agent's status. Format and rules: docs/secrets.md, "Running agents".
    ///
    /// After an enclave restart (new keys, no secrets) the agent and .env.cada stay as they
    /// are; the owner re-seals and installs each secret in one command:
    ///   cada-owner seal --key owner-key.json --policy policy.toml --socket S \
    ///     --like github.sealed --value-file token.txt --install
    #[command(verbatim_doc_comment)]
    Run(cada_parent::run::RunArgs),
    /// Sealed secrets (`cada-owner seal`) for the enclave.
    #[command(subcommand)]
    Secret(SecretCmd),
    /// Open data a service sealed to this enclave's attested key (`cada-verify seal`).
    ///
    /// The enclave decrypts it only for a label a live contract of its owner grants
    /// (`cada-owner grant --open LABEL=BUDGET`), at most BUDGET times per contract, and
    /// chains each open. The plaintext is then here, on the host: see docs/secrets.md.
    ///
    /// Example: cada-parent open --label report report.cose --out report.txt
    #[command(verbatim_doc_comment)]
    Open(OpenArgs),
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Hand an owner-sealed bundle (`cada-owner seal`) to the enclave, which accepts it
    /// only from the owner it is locked to and for its own keys; prints the secret's name,
    /// its ciphertext digest and expiry — never the value, which the host never holds.
    ///
    /// Example: cada-parent secret install github.sealed
    #[command(verbatim_doc_comment)]
    Install {
        /// The bundle file (CBOR or its base64url), or - for stdin.
        file: PathBuf,
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(clap::Args)]
struct OpenArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// The label the data was sealed for (granted by the contract's `opens`).
    #[arg(long)]
    label: String,
    /// Where the plaintext goes (- for stdout).
    #[arg(long, default_value = "-")]
    out: PathBuf,
    /// The envelope file (CBOR or its base64url), or - for stdin.
    file: PathBuf,
}

/// The daemon's unix socket, the same option for every subcommand.
#[derive(clap::Args, Clone)]
struct SocketArg {
    /// The daemon's unix socket [default: /run/cada/agent.sock for root, else
    /// $XDG_RUNTIME_DIR/cada/agent.sock].
    #[arg(long = "socket", env = "CADA_SOCKET", value_name = "PATH")]
    path: Option<PathBuf>,
}

impl SocketArg {
    fn resolve(self) -> Result<PathBuf, String> {
        cada_parent::daemon::socket_or_default(self.path)
    }
}

/// A local endpoint for MCP clients that know nothing of CADA (no code change)
///
/// Point an unmodified MCP client at http://LISTEN/PATH: each request goes to its
/// upstream with a fresh proof from the enclave (through the daemon at --socket) bound to
/// the upstream URL, the body (Content-Digest, cada.bd) and its JSON-RPC calls (cada.mcp;
/// the enclave refuses tools the owner's contract does not grant). The proxy sends the
/// evidence and contract on first contact, answers use_attestation and DPoP-Nonce
/// challenges itself, obtains access tokens through the daemon's --sts when the
/// upstream's RFC 9728 metadata names authorization servers, and streams answers
/// (server-sent events too). A refusal reaches the client as a JSON-RPC error naming the
/// rule (HTTP 200, the status in CADA-Refused-Status) unless --pass-refusals.
///
///   cada-parent proxy --listen 127.0.0.1:8765 --upstream https://mcp.example.com/mcp
///   # the client then uses http://127.0.0.1:8765/mcp
///
/// Whoever can send the proxy requests acts as the agent. On TCP, a request's Host must
/// name the proxy's own address (127.0.0.1:PORT as listened, or localhost:PORT), else it is
/// refused proxy.host (a web page reaching the port through DNS rebinding names its own
/// host); a browser's Origin must be the proxy's own or one given with --allow-origin,
/// else proxy.origin (Origin: null never passes), and without an Origin a browser's
/// Sec-Fetch-Site must be same-origin or none, else proxy.fetch_site (a page's <img>, form
/// or no-cors fetch). That stops web pages, not other local users, who can all reach a
/// loopback port. So choose:
///
///   --listen unix:PATH     when the client can use a unix socket (curl --unix-socket,
///                          httpx or undici with a socket transport): created 0600, only
///                          this user gets in, no secret to keep.
///   --auth-token-file FILE when the client speaks TCP only but can send a header (most MCP
///                          clients' "headers" setting): Authorization: Bearer <token>,
///                          else proxy.unauthorized (401); the header is not forwarded.
///   neither                only on a host where every local user may act as the agent.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct ProxyArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// Sign in this process: speak frames to the enclave at ENDPOINT (as `serve --enclave`)
    /// instead of asking a daemon at --socket, and serve the daemon's API at --socket
    /// yourself (for `owner lock`, `contract install`, `sign` …). One process fewer on every
    /// call's path: no socket, no HTTP and no second process between the proxy and the
    /// enclave. Without --sts no access tokens; secrets (--secret) need `serve
    /// --egress-listen` and so a separate daemon.
    #[arg(
        long,
        value_name = "vsock:CID:PORT|unix:PATH:PORT|tcp:ADDR",
        conflicts_with = "secrets"
    )]
    enclave: Option<Endpoint>,
    /// With --enclave: the cada-sts to obtain access tokens from (as `serve --sts`; its
    /// HTTPS roots are --upstream-ca's).
    #[arg(long, value_name = "URL", requires = "enclave")]
    sts: Option<String>,
    /// Where to listen: a loopback IP:PORT, or unix:PATH (a socket created with mode 0600).
    #[arg(
        long,
        default_value = "127.0.0.1:8765",
        value_name = "IP:PORT|unix:PATH"
    )]
    listen: cada_parent::access::Listen,
    /// Require `Authorization: Bearer <token>` on every request, the token read from FILE:
    /// owned by this user, mode 0600 or 0400, 32 to 1024 token characters (e.g.
    /// `(umask 077; openssl rand -hex 32 > FILE)`); the same rules as `serve --listen`.
    #[arg(long, value_name = "FILE")]
    auth_token_file: Option<PathBuf>,
    /// A browser origin allowed besides the proxy's own (repeatable), e.g.
    /// http://localhost:6274 for a browser-based MCP inspector you trust.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// The task every request through this proxy is part of (chain of custody), unless the
    /// client names one in a `CADA-Task` header: the proofs sign it (`cada.task`) with the
    /// client's `traceparent` (or, without one, a trace this proxy starts), and the gate and
    /// the STS log it. 1 to 128 bytes of A-Z a-z 0-9 . _ : -
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    task: Option<String>,
    /// An upstream, `[PREFIX=]URL` (repeatable): local requests under PREFIX go to URL plus
    /// the rest of the path. Without PREFIX the URL's own path is the local one (only the
    /// origin changes). https, or http to loopback only.
    #[arg(
        long = "upstream",
        value_name = "[PREFIX=]URL",
        required_unless_present = "secrets"
    )]
    upstreams: Vec<String>,
    /// Serve the sealed secret NAME at /NAME/…: a request to
    /// http://LISTEN/NAME/PATH becomes the enclave's own HTTPS call to the secret's
    /// upstream at PATH, with the credential added inside the enclave (`cada-parent serve
    /// --egress-listen` relays its TLS); the answer comes back, the credential never does.
    /// Repeatable. Refusals are problem JSON naming the rule (secret.*, contract.*).
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Audit every secret call (answered or refused) into this directory (cada-audit's
    /// hash-chained log; verify with `cada-verify audit verify`).
    #[arg(long, value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Time an upstream gets to answer a request's head, milliseconds (then 504).
    #[arg(long, default_value_t = 60_000)]
    timeout_ms: u64,
    /// Keep refusals' HTTP status (401/403/…) instead of answering them as JSON-RPC errors
    /// with status 200.
    #[arg(long)]
    pass_refusals: bool,
    /// Trust only these CAs (PEM, repeatable) for https upstreams; default: the Mozilla CAs
    /// built in.
    #[arg(long = "upstream-ca", value_name = "PEM")]
    upstream_ca: Vec<PathBuf>,
    /// What to do when a tool call is refused for want of a grant (the enclave's
    /// contract.not_permitted.tool or grant.*, a gate's 403 insufficient_scope or grant.*)
    /// and an installed contract names the owner's approval service (stepUp):
    ///   ask            file a step-up request and answer the MCP client with a URL
    ///                  elicitation in its protocol version (2025-11-25: error -32042;
    ///                  2026-07-28: an input_required result; a client that declared no
    ///                  URL elicitation: a JSON-RPC error naming the URL); the same call
    ///                  made again after the owner approved goes through (the grant is
    ///                  installed in the enclave first); denied or expired requests answer
    ///                  stepup.denied / stepup.expired;
    ///   wait=DURATION  for headless agents: hold the call while polling the service
    ///                  (CIBA poll mode), keeping a text/event-stream answer alive with a
    ///                  comment every 10 s, and finish it once approved (e.g. wait=10m;
    ///                  still pending at the end: answered as with ask);
    ///   off            pass the refusal on.
    /// Without a contract naming stepUp, refusals pass as with off. docs/stepup.md.
    #[arg(
        long = "step-up",
        default_value = "ask",
        value_name = "off|ask|wait=DURATION",
        verbatim_doc_comment
    )]
    step_up: cada_parent::stepup::Mode,
    /// Client connection limits.
    #[command(flatten)]
    net: cada_net::cli::NetArgs,
}

#[derive(Subcommand)]
enum OwnerCmd {
    /// Send an owner lock to the enclave; prints the owner and the new evidence.
    ///
    /// Make the lock with `cada-owner lock --key ~/.cada-owner/owner-key.json --enclave
    /// <did:key of the enclave key>` (the enclave's did is in `GET /v1/identity`). After
    /// it, the enclave signs only inside a contract of that owner.
    Lock {
        /// The lock file (compact JWS, `typ: cada-lock+jwt`).
        file: PathBuf,
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Subcommand)]
enum ContractCmd {
    /// Install a trust contract; the enclave checks owner, signature, subject, validity and
    /// status before it accepts it. Re-install with a fresher --status-list to keep a
    /// contract with a status entry live (or to revoke it).
    ///
    /// A delegation chain from another agent's `cada-parent delegate` (root~…~leaf, one
    /// line) installs the same way: the enclave accepts it when the chain reaches the owner
    /// it is locked to, every link is within the one above it, and the leaf names this
    /// enclave's key; give the owner's status list(s) the links name.
    Install {
        /// The contract file (compact `vc+jwt` from `cada-owner grant`), or a delegation
        /// chain (from `cada-parent delegate`).
        file: PathBuf,
        /// The owner's status list (from `cada-owner status-list` / `revoke`), required
        /// when the contract has a status entry; repeatable, for a chain whose links name
        /// several lists.
        #[arg(long = "status-list", value_name = "FILE")]
        status_list: Vec<PathBuf>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Print the owner, the installed contracts and the latest authority events (JSON).
    List {
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The enclave: vsock:CID:PORT, unix:PATH:PORT (hybrid vsock) or tcp:127.0.0.1:PORT (sim).
    #[arg(long)]
    enclave: Endpoint,
    /// Unix socket for agents, created with mode 0600 (its directory, if missing, with 0700)
    /// [default: /run/cada/agent.sock for root, else $XDG_RUNTIME_DIR/cada/agent.sock].
    #[arg(long, env = "CADA_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also listen on this loopback address (e.g. 127.0.0.1:8787), for agents that cannot
    /// use a unix socket. Needs --auth-token-file: any local user can reach a TCP port.
    /// Non-loopback addresses are refused: the API is plain HTTP, so the token and the
    /// proofs would cross the network in clear.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// The bearer token that --listen requires (`Authorization: Bearer <token>`): a file
    /// owned by this user with mode 0600 or 0400, holding 32 to 1024 token characters
    /// (e.g. `openssl rand -hex 32`). The unix socket needs no token.
    #[arg(long, value_name = "FILE", requires = "listen")]
    auth_token_file: Option<PathBuf>,
    /// Connections to the enclave.
    #[arg(long, default_value_t = DaemonLimits::DEFAULT.connections)]
    connections: usize,
    /// Per-request timeout towards the enclave, milliseconds.
    #[arg(long, default_value_t = DaemonLimits::DEFAULT.timeout_ms)]
    timeout_ms: u64,
    /// Requests in flight before answering 503 with Retry-After.
    #[arg(long, default_value_t = DaemonLimits::DEFAULT.max_in_flight)]
    max_in_flight: usize,
    /// Agent connection limits, per listener (header/idle/body deadlines, connection cap).
    #[command(flatten)]
    net: cada_net::cli::NetArgs,
    /// The cada-sts to obtain access tokens from (its issuer URL; the token endpoint is
    /// URL/token). Then `POST /v1/pop` with a `resource` (and `cada-parent sign --resource`)
    /// returns `Authorization: DPoP <token>` with a proof carrying its `ath`. Tokens are
    /// kept in memory only, per (enclave key, resource, scope), and exchanged again before they
    /// expire (or when the enclave restarts with a new key).
    /// The owner's contract must list URL/token among its audiences (method POST).
    #[arg(long, value_name = "URL")]
    sts: Option<String>,
    /// Roots for the HTTPS connection to the STS.
    #[command(flatten)]
    fetch: cada_net::cli::FetchArgs,
    /// Relay the enclave's secret calls (its TLS, ciphertext only) to their upstreams:
    /// vsock:PORT (Nitro; the enclave runs with --egress vsock:3:PORT), unix:PATH (mode
    /// 0600) or tcp:127.0.0.1:PORT (sim). Also serves POST /v1/secrets/call.
    #[arg(long, value_name = "vsock:PORT|unix:PATH|tcp:ADDR")]
    egress_listen: Option<cada_parent::relay::EgressListen>,
    /// A destination the relay connects although it resolves to a loopback, private,
    /// link-local or metadata address (refused otherwise, `relay.destination`): exactly this
    /// HOST:PORT as the usage's upstream or token endpoint names it. Repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    egress_allow: Vec<cada_parent::relay::EgressAllow>,
    /// Time a secret call gets from the daemon to the enclave's answer (the upstream's
    /// included), milliseconds.
    #[arg(long, default_value_t = DaemonLimits::DEFAULT.secret_timeout_ms)]
    secret_timeout_ms: u64,
}

#[derive(clap::Args)]
struct SignArgs {
    #[command(flatten)]
    socket: SocketArg,
    /// HTTP method of the request to prove.
    #[arg(long)]
    method: String,
    /// Absolute URL of the request.
    #[arg(long)]
    url: String,
    /// Access token the request carries (the proof then includes `ath`).
    #[arg(long, allow_hyphen_values = true)]
    access_token: Option<String>,
    /// DPoP nonce the server demanded (opaque, often base64url: it may begin with '-').
    #[arg(long, allow_hyphen_values = true)]
    nonce: Option<String>,
    /// Context digest `name=value` (repeatable).
    #[arg(long = "ctx", value_name = "NAME=VALUE")]
    ctx: Vec<String>,
    /// Also print the CADA-Evidence header (and the CADA-Contract header once the enclave
    /// is locked to an owner).
    #[arg(long)]
    with_evidence: bool,
    /// The resource (RFC 8707) the request goes to: the daemon adds an access token for it
    /// from its STS (`serve --sts`) and prints `Authorization: DPoP <token>`. A URL prefix
    /// in normal form without query; a whole origin is https://host/ (https://host is taken
    /// as that, as by `cada-owner grant --audience`).
    #[arg(long, value_name = "URL", conflicts_with = "access_token")]
    resource: Option<String>,
    /// Scopes for that token, space-separated (default: all the contract grants).
    #[arg(long, requires = "resource")]
    scope: Option<String>,
    /// Print the JSON answer instead of headers.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // `… | head -1`: a closed stdout ends the command quietly (status 141), no panic.
    cada_protocol::cli::exit_quietly_on_broken_pipe();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The proxy relays one client's calls, each a chain of waits on other processes: on one
    // thread every hop continues where it was woken, while a second worker thread was woken
    // (and went back to sleep) at nearly every hop, about 50 µs per proxied call.
    let mut runtime = match cli.cmd {
        Cmd::Proxy(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cada-parent: {e}");
            return ExitCode::from(2);
        }
    };
    let res = match cli.cmd {
        Cmd::Serve(a) => rt.block_on(serve(a)),
        Cmd::Sign(a) => rt.block_on(sign(a)),
        Cmd::Proxy(a) => rt.block_on(proxy(a)),
        // Exits with the agent's status.
        Cmd::Run(a) => return cada_parent::run::main(&rt, a),
        Cmd::Owner(OwnerCmd::Lock { file, socket }) => rt.block_on(async move {
            let socket = socket.resolve()?;
            let lock = read_small(&file)?;
            let body = serde_json::json!({ "lock": lock });
            let out =
                cada_parent::daemon::call(&socket, "POST", "/v1/owner/lock", Some(body)).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }),
        Cmd::Contract(ContractCmd::Install {
            file,
            status_list,
            socket,
        }) => rt.block_on(async move {
            let socket = socket.resolve()?;
            let contract = read_small(&file)?;
            let mut lists = status_list
                .iter()
                .map(|p| read_small(p))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter();
            let first = lists.next();
            let mut body = serde_json::json!({ "contract": contract, "status_list": first });
            let more: Vec<String> = lists.collect();
            if !more.is_empty() {
                body["status_lists"] = more.into();
            }
            let out =
                cada_parent::daemon::call(&socket, "POST", "/v1/contracts", Some(body)).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }),
        Cmd::Delegate(a) => rt.block_on(async move {
            let socket = cada_parent::daemon::socket_or_default(a.socket.clone())?;
            cada_parent::delegate::delegate_cli(&socket, &a).await
        }),
        Cmd::Secret(SecretCmd::Install { file, socket }) => rt.block_on(async move {
            cada_parent::secret_cli::install_cli(&socket.resolve()?, &file).await
        }),
        Cmd::Open(a) => rt.block_on(async move {
            let socket = a.socket.resolve()?;
            cada_parent::secret_cli::open_cli(&socket, &a.label, &a.file, &a.out).await
        }),
        Cmd::Contract(ContractCmd::List { socket }) => rt.block_on(async move {
            let socket = socket.resolve()?;
            let out = cada_parent::daemon::call(&socket, "GET", "/v1/contracts", None).await?;
            println!("{}", String::from_utf8_lossy(&out));
            Ok(())
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cada-parent: {e}");
            ExitCode::from(1)
        }
    }
}

/// Binds a unix socket that is never visible with looser permissions than 0600: bind at a
/// temporary name, chmod, then rename into place. The rename replaces only a stale socket
/// (see [`replaceable`]): never a live daemon's or proxy's, nor a file that is no socket.
fn bind_private(path: &Path) -> Result<tokio::net::UnixListener, String> {
    replaceable(path)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l =
        tokio::net::UnixListener::bind(&tmp).map_err(|e| format!("bind {}: {e}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod: {e}"))
        .and_then(|()| replaceable(path))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

/// Whether a socket may be put at `path`: nothing is there, or a socket nobody listens at
/// (left by a process that ended). A socket that answers is another `serve` or `proxy
/// --enclave` (socket.in_use: replacing it would cut that process off and send its clients'
/// `sign`, `owner lock` and `contract install` here); anything else, a symlink included, is
/// not ours to replace (socket.not_a_socket).
fn replaceable(path: &Path) -> Result<(), String> {
    use std::io::ErrorKind;
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "socket.not_a_socket: {} exists and is not a socket; it is not replaced (give \
             a path where only a socket of this tool may be)",
            path.display()
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => Ok(()),
        Ok(_) => Err(format!(
            "socket.in_use: a process listens at {} (a `cada-parent serve` daemon or another \
             `proxy`); stop it or give another path",
            path.display()
        )),
        Err(e) => Err(format!(
            "socket.in_use: cannot tell whether a process listens at {}: {e}",
            path.display()
        )),
    }
}

/// The TCP listener's rules: loopback only, and a bearer token from a private file.
fn tcp_auth(a: &ServeArgs) -> Result<Option<(std::net::SocketAddr, Arc<BearerToken>)>, String> {
    let Some(addr) = a.listen else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--listen {addr}: only loopback addresses are allowed; the API is plain HTTP, so \
             a bearer token and the proofs would cross the network in clear, and whoever \
             reaches the port can have the enclave sign (forward the unix socket instead, \
             e.g. over SSH)"
        ));
    }
    let path = a.auth_token_file.as_deref().ok_or_else(|| {
        format!(
            "--listen {addr} needs --auth-token-file: every local user can connect to a TCP \
             port and have the enclave sign"
        )
    })?;
    let token = BearerToken::from_file(path).map_err(|e| e.to_string())?;
    Ok(Some((addr, Arc::new(token))))
}

/// Creates the socket's directory when it is missing (one level, mode 0700: the default
/// `/run/cada` or `$XDG_RUNTIME_DIR/cada` on a fresh boot).
/// The limits of a daemon's enclave connections and API: `serve`'s flags, and what
/// `proxy --enclave` uses (their defaults).
struct DaemonLimits {
    connections: usize,
    timeout_ms: u64,
    max_in_flight: usize,
    secret_timeout_ms: u64,
}

impl DaemonLimits {
    const DEFAULT: DaemonLimits = DaemonLimits {
        connections: 4,
        timeout_ms: 2000,
        max_in_flight: 1024,
        secret_timeout_ms: 35_000,
    };
}

/// A daemon's API over `enclave`, the one `serve` runs and `proxy --enclave` runs in
/// process: its router (proofs, evidence, identity, owner lock, contracts, delegation,
/// step-up, `secret install` and `open`), the client for secret calls (whose route needs
/// the egress relay, so only `serve` adds it) and the connection stats.
struct Daemon {
    app: axum::Router,
    secret_client: Arc<EnclaveClient>,
    stats: cada_net::ConnStats,
}

impl Daemon {
    /// `sts` for access tokens; approval services (contracts' stepUp) are reached trusting
    /// `roots`, the STS's.
    fn new(
        enclave: &Endpoint,
        limits: &DaemonLimits,
        sts: Option<cada_parent::tokens::Sts>,
        roots: &cada_net::fetch::Fetcher,
    ) -> Daemon {
        let client = EnclaveClient::new(
            enclave.clone(),
            limits.connections,
            Duration::from_millis(limits.timeout_ms),
        );
        let state = AppState::with_sts(client, limits.max_in_flight, sts);
        state.step_up().set_roots(roots);
        let stats = state.conn_stats();
        let secret_client = Arc::new(EnclaveClient::new(
            enclave.clone(),
            2,
            Duration::from_millis(limits.secret_timeout_ms.max(1)),
        ));
        let app = router(state).merge(cada_parent::secret_cli::daemon_router(
            secret_client.clone(),
        ));
        Daemon {
            app,
            secret_client,
            stats,
        }
    }

    /// Serves `app` at `socket` (0600, its directory created 0700 if missing; a live
    /// socket or a file there is refused): the task serving it.
    fn serve_socket(
        socket: &Path,
        app: axum::Router,
        net: &cada_net::ServeLimits,
        stats: cada_net::ConnStats,
    ) -> Result<tokio::task::JoinHandle<Result<(), String>>, String> {
        socket_dir(socket)?;
        let unix = bind_private(socket)?;
        let net = net.clone();
        Ok(tokio::spawn(async move {
            cada_net::serve_unix(unix, app, &net, stats, std::future::pending())
                .await
                .map_err(|e| e.to_string())
        }))
    }
}

/// `proxy --enclave`: this process's own daemon, over its own connections to the enclave.
/// The proxy's calls go to its router in process; the same router serves `socket` for the
/// other subcommands, so what they install (the owner lock, contracts) is what the proxy
/// signs under.
fn sign_in_process(
    proxy: &cada_parent::proxy::ProxyState,
    enclave: &Endpoint,
    sts: Option<&str>,
    tls: &cada_net::fetch::Fetcher,
    socket: &Path,
    net: &cada_net::ServeLimits,
) -> Result<(), String> {
    let sts = match sts {
        Some(url) => Some(sts_client(url, tls.clone())?),
        None => None,
    };
    let daemon = Daemon::new(enclave, &DaemonLimits::DEFAULT, sts, tls);
    let served = Daemon::serve_socket(socket, daemon.app.clone(), net, daemon.stats)?;
    tokio::spawn(async move {
        if let Ok(Err(e)) = served.await {
            tracing::error!(error = %e, "the daemon API's socket stopped");
        }
    });
    proxy.sign_in_process(daemon.app);
    tracing::info!(socket = %socket.display(), ?enclave, "signing in process; the daemon API is served at the socket");
    Ok(())
}

/// The STS client of `--sts URL`: its token endpoint is URL/token, a canonical https (or
/// loopback http) URL.
fn sts_client(
    url: &str,
    fetcher: cada_net::fetch::Fetcher,
) -> Result<cada_parent::tokens::Sts, String> {
    // URL/token is built by appending: a query or fragment in URL would swallow "/token"
    // (https://sts/a?x=1 would be asked at /a, its proofs' htu without the query).
    if url.contains(['?', '#']) {
        return Err(format!(
            "--sts {url}: the STS's issuer URL has no query or fragment (its token endpoint \
             is URL/token)"
        ));
    }
    let endpoint = format!("{}/token", url.trim_end_matches('/'));
    cada_net::fetch::target(&endpoint).map_err(|e| format!("--sts {url}: {e}"))?;
    cada_protocol::url::HttpUrl::parse_canonical(&endpoint)
        .map_err(|e| format!("--sts {url}: {e}"))?;
    Ok(cada_parent::tokens::Sts::new(url, fetcher))
}

fn socket_dir(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {} for the socket: {e}", dir.display()))?;
    tracing::info!(dir = %dir.display(), "created the socket's directory (mode 0700)");
    Ok(())
}

async fn serve(a: ServeArgs) -> Result<(), String> {
    let socket = cada_parent::daemon::socket_or_default(a.socket.clone())?;
    let tcp = tcp_auth(&a)?;
    let net = a
        .net
        .limits(cada_net::ServeLimits::local())
        .map_err(|e| e.to_string())?;
    let sts = match &a.sts {
        Some(url) => Some(sts_client(
            url,
            a.fetch.fetcher().map_err(|e| e.to_string())?,
        )?),
        None => None,
    };
    let limits = DaemonLimits {
        connections: a.connections,
        timeout_ms: a.timeout_ms,
        max_in_flight: a.max_in_flight,
        secret_timeout_ms: a.secret_timeout_ms,
    };
    let daemon = Daemon::new(
        &a.enclave,
        &limits,
        sts,
        &a.fetch.fetcher().map_err(|e| e.to_string())?,
    );
    let stats = daemon.stats;
    let app = daemon.app.merge(cada_parent::secrets_proxy::daemon_router(
        daemon.secret_client,
    ));
    if let Some(listen) = a.egress_listen.clone() {
        let policy = cada_parent::relay::RelayPolicy::new(a.egress_allow.clone());
        tokio::spawn(async move {
            if let Err(e) = cada_parent::relay::serve(listen, policy).await {
                tracing::error!(error = %e, "egress relay stopped");
            }
        });
    }
    let mut tasks = vec![Daemon::serve_socket(
        &socket,
        app.clone(),
        &net,
        stats.clone(),
    )?];
    tracing::info!(socket = %socket.display(), enclave = ?a.enclave, "agent signing daemon listening");
    if let Some((addr, token)) = tcp {
        let app = with_bearer(app, token);
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        tracing::info!(%addr, "also listening on loopback TCP (bearer token required)");
        tasks.push(tokio::spawn(async move {
            cada_net::serve_tcp(tcp, app, &net, stats, std::future::pending())
                .await
                .map_err(|e| e.to_string())
        }));
    }
    println!("ready socket={}", socket.display());
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = tasks.remove(0) => { r.map_err(|e| e.to_string())??; }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn proxy(a: ProxyArgs) -> Result<(), String> {
    use cada_parent::access::{Access, Listen};
    let socket = a.socket.clone().resolve()?;
    let routes = a
        .upstreams
        .iter()
        .map(|u| cada_parent::proxy::Route::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let token = a
        .auth_token_file
        .as_deref()
        .map(BearerToken::from_file)
        .transpose()
        .map_err(|e| e.to_string())?
        .map(Arc::new);
    let tls = cada_net::fetch::Fetcher::with_ca_files(&a.upstream_ca).map_err(|e| e.to_string())?;
    let net = a
        .net
        .limits(cada_net::ServeLimits::local())
        .map_err(|e| e.to_string())?;
    let state = cada_parent::proxy::ProxyState::with_step_up(
        socket.clone(),
        routes.clone(),
        cada_net::upstream::Upstream::new(&tls),
        Duration::from_millis(a.timeout_ms.max(1)),
        a.pass_refusals,
        a.step_up,
    );
    if let Some(t) = &a.task {
        state.set_task(t).map_err(|e| format!("--task: {e}"))?;
    }
    if let Some(enclave) = &a.enclave {
        sign_in_process(&state, enclave, a.sts.as_deref(), &tls, &socket, &net)?;
    }
    let stats = state.conn_stats();
    let secrets = if a.secrets.is_empty() {
        None
    } else {
        let audit = a
            .audit_dir
            .as_deref()
            .map(|d| cada_audit::AuditLog::open(d, 64 * 1024 * 1024))
            .transpose()
            .map_err(|e| e.to_string())?;
        Some(cada_parent::secrets_proxy::SecretsProxy::new(
            socket.clone(),
            a.secrets.clone(),
            audit,
        )?)
    };
    let app = |access: Access| match &secrets {
        Some(sp) => cada_parent::proxy::router(state.clone(), access.clone()).merge(
            cada_parent::secrets_proxy::router(sp.clone(), state.clone(), access),
        ),
        None => cada_parent::proxy::router(state.clone(), access),
    };
    match &a.listen {
        Listen::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            let bound = listener.local_addr().map_err(|e| e.to_string())?;
            let access = Access::tcp(bound, &a.allow_origins, token)?;
            if !access.needs_token() {
                tracing::warn!(
                    "no --auth-token-file: every local user can use this proxy as the agent \
                     (use --listen unix:PATH or --auth-token-file on a shared host)"
                );
            }
            for r in &routes {
                tracing::info!(local = %format!("http://{bound}{}", r.prefix), upstream = %r.upstream, "proxying");
            }
            println!("ready listen={bound}");
            cada_net::serve_tcp(
                listener,
                app(access),
                &net,
                stats,
                cada_net::shutdown_signal(),
            )
            .await
            .map_err(|e| e.to_string())
        }
        Listen::Unix(path) => {
            let access = Access::unix(&a.allow_origins, token)?;
            let listener = bind_private(path)?;
            for r in &routes {
                tracing::info!(local = %format!("unix:{} {}", path.display(), r.prefix), upstream = %r.upstream, "proxying");
            }
            println!("ready listen=unix:{}", path.display());
            let served = cada_net::serve_unix(
                listener,
                app(access),
                &net,
                stats,
                cada_net::shutdown_signal(),
            )
            .await
            .map_err(|e| e.to_string());
            let _ = std::fs::remove_file(path);
            served
        }
    }
}

async fn sign(a: SignArgs) -> Result<(), String> {
    let mut ctx = BTreeMap::new();
    for c in &a.ctx {
        let (k, v) = c
            .split_once('=')
            .ok_or_else(|| format!("--ctx {c:?}: expected NAME=VALUE"))?;
        ctx.insert(k.to_owned(), v.to_owned());
    }
    let body = serde_json::json!({
        "method": a.method, "url": a.url, "access_token": a.access_token,
        "nonce": a.nonce, "ctx": ctx, "with_evidence": a.with_evidence,
        "resource": a.resource, "scope": a.scope,
    });
    let socket = a.socket.clone().resolve()?;
    let bytes = cada_parent::daemon::call(&socket, "POST", "/v1/pop", Some(body)).await?;
    if a.json {
        println!("{}", String::from_utf8_lossy(&bytes));
        return Ok(());
    }
    let ans: PopAnswer = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if let Some(a) = ans.authorization {
        println!("Authorization: {a}");
    }
    println!("DPoP: {}", ans.dpop);
    if let Some(ev) = ans.evidence {
        println!("CADA-Evidence: {ev}");
    }
    if let Some(c) = ans.contract {
        println!("CADA-Contract: {c}");
    }
    Ok(())
}

/// Reads a lock, contract or status list file (a compact JWS: small, trimmed).
fn read_small(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > 256 * 1024 {
        return Err(format!(
            "{}: expected a regular file of at most 256 KiB",
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DPoP nonce or access token is opaque (often base64url) and a task id may begin
    /// with '-': each is taken as its flag's value, not as an unknown option.
    #[test]
    fn values_beginning_with_a_dash_are_values() {
        let sign = Cli::try_parse_from([
            "cada-parent",
            "sign",
            "--method",
            "GET",
            "--url",
            "https://api.example/x",
            "--nonce",
            "-n0nce",
            "--access-token",
            "-t0ken",
        ])
        .unwrap();
        let Cmd::Sign(a) = sign.cmd else {
            panic!("not sign")
        };
        assert_eq!(a.nonce.as_deref(), Some("-n0nce"));
        assert_eq!(a.access_token.as_deref(), Some("-t0ken"));
        let proxy = Cli::try_parse_from([
            "cada-parent",
            "proxy",
            "--task",
            "-t1",
            "--upstream",
            "https://mcp.example/mcp",
        ])
        .unwrap();
        let Cmd::Proxy(a) = proxy.cmd else {
            panic!("not proxy")
        };
        assert_eq!(a.task.as_deref(), Some("-t1"));
        let delegate = Cli::try_parse_from([
            "cada-parent",
            "delegate",
            "--to",
            "did:key:zW",
            "--contract",
            "-7DI0cPbbB7bS0n8hQ3vVJx3mNq2zXWm7lS9yQeJ4Kk",
        ])
        .unwrap();
        let Cmd::Delegate(a) = delegate.cmd else {
            panic!("not delegate")
        };
        assert_eq!(a.contract, "-7DI0cPbbB7bS0n8hQ3vVJx3mNq2zXWm7lS9yQeJ4Kk");
    }
}
