//! `cada-owner`: the owner's tool. Make an owner key and DID, grant trust contracts to
//! enclave keys (or to any enclave running an image), publish and update the status list
//! that revokes them, and read any of them back.
//!
//! Exit codes: 0 = done (or, for `inspect`, valid), 1 = refused (the reason and its code
//! are printed), 2 = usage or I/O error.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use cada_contract::{
    AuditLevel, BehaviourLimits, Contract, ContractError, Grant, OwnerAlg, OwnerKey, OwnerLock,
    Reinstatement, StatusEntry, StatusList, Subject, TrustedOwners, UnixSeconds, WindowLimit,
    MAX_CHAIN_LEN, MAX_CONTRACT_LEN, MAX_KEY_FILE_LEN, MAX_STATUS_LIST_LEN,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use zeroize::Zeroizing;

mod seal;
mod serve;

/// Make owner keys, grant trust contracts to CADA enclaves, and revoke them.
///
/// A trust contract says who (the owner, a DID) allowed which agent (an enclave key's
/// did:key, or any enclave running a measured image) to do what (audiences, methods,
/// scopes, MCP tools, required context, budget, rate, behaviour limits) until when. It is
/// a W3C Verifiable Credential secured as a JWT (typ vc+jwt), signed by the owner key.
/// Revocation is a W3C Bitstring Status List, also signed by the owner. The enclave
/// checks a contract before it signs; every verifier checks it after.
///
/// A first session:
///
///   cada-owner keygen --out ~/.cada-owner
///   cada-owner status-list new --key ~/.cada-owner/owner-key.json
///       --url https://owner.example/status/1 > status.jwt          (publish it there)
///   cada-owner grant --key ~/.cada-owner/owner-key.json --subject did:key:z6Mk…
///       --audience https://api.example.com/v1 --method GET --valid-for 8h
///       --status-list https://owner.example/status/1 --status-index 0 > contract.jwt
///   cada-owner lock --key ~/.cada-owner/owner-key.json --enclave did:key:z6Mk… > lock.jwt
///       (then on the parent: cada-parent owner lock lock.jwt)
///   cada-owner inspect contract.jwt
///   cada-owner revoke --key ~/.cada-owner/owner-key.json --list status.jwt --index 0
///       > status.new.jwt                                           (publish it)
///
/// Exit codes: 0 = done or valid, 1 = refused (reason and code printed), 2 = usage or
/// I/O error. Logs go to stderr (RUST_LOG=debug for more); results go to stdout.
#[derive(Parser)]
#[command(
    name = "cada-owner",
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
    /// Make an owner key and print its DID.
    ///
    /// Writes DIR/owner-key.json (mode 0600; it never leaves this machine) and prints the
    /// owner's DID on stdout: a did:key by default (the DID is the public key, nothing to
    /// publish), or a did:web with --did-web, in which case DIR/did.json is the DID
    /// document to publish at the printed URL.
    ///
    /// Example: cada-owner keygen --out ~/.cada-owner --did-web owner.example
    #[command(verbatim_doc_comment)]
    Keygen(KeygenArgs),
    /// Grant a trust contract to an agent; the contract (a vc+jwt) goes to stdout.
    ///
    /// The subject is one enclave key (--subject did:key:…, from `cada-parent identity`)
    /// or any enclave whose evidence meets a measurement set (--pcr0 … for Nitro,
    /// --measurement … for SEV-SNP), so an image can be granted before it boots.
    ///
    /// Example: cada-owner grant --key owner-key.json --subject did:key:z6Mk…
    ///   --audience https://api.example.com/v1 --method GET --method POST
    ///   --scope docs:read --tool search --ctx task --budget 10000 --rate 20
    ///   --max-requests 600/1m --max-refusals 5/5m --valid-for 8h
    ///   --status-list https://owner.example/status/1 --status-index 17 > contract.jwt
    ///
    /// One-transaction grant (RFC 9396 authorization_details): a short contract whose only
    /// authority is "call this tool, at this server, with these arguments", e.g. "transfer
    /// at most 500 USD to alice or bob", once. FILE is a JSON array of details (example:
    /// docs/examples/authorization-details.json; rules: docs/contracts.md, "One-transaction
    /// grants"); a detail without "identifier" gets a fresh urn:uuid. The enclave checks the
    /// tool, the server, the minutes and single use; a CADA gate checks the arguments.
    ///
    /// Example: cada-owner grant --key owner-key.json --subject did:key:z6Mk…
    ///   --authorization-details transfer.json --minutes 10 > grant.jwt
    ///   (then on the parent: cada-parent contract install grant.jwt)
    ///
    /// Step-up: --step-up http://localhost:8470 names your approval service
    /// (cada-owner serve) in the agent's standing contract; the enclave may then ask it
    /// for more (and nothing else is signed without a grant).
    #[command(verbatim_doc_comment)]
    Grant(Box<GrantArgs>),
    /// Lock an enclave key to this owner; the lock (a JWS) goes to stdout.
    ///
    /// An enclave accepts one lock in its key's life: from then on its key binding (and so
    /// its evidence) names this owner, and it signs only inside this owner's contracts.
    /// The owner must be a did:key (an enclave cannot resolve did:web). The lock is valid
    /// for --valid-for (default 10m, at most 1h): it is for installing now.
    ///
    /// Example: cada-owner lock --key owner-key.json --enclave did:key:z6Mk… > lock.jwt
    #[command(verbatim_doc_comment)]
    Lock(LockArgs),
    /// Lift one fleet-wide suspension of a contract (a behaviour limit was crossed), once;
    /// the reinstatement (a JWS) goes to stdout, for the verifiers' POST
    /// /v1/contracts/reinstate. It names the suspension: a replay, or a later suspension of
    /// the same contract, is refused (contract.reinstate.replayed, .other_suspension).
    ///
    /// Example: curl https://verifier.example/v1/contracts/DTC/suspension   (its "id")
    ///   cada-owner reinstate --key owner-key.json --contract contract.jwt --suspension ID > r.jwt
    ///   curl -d "{\"reinstatement\": \"$(cat r.jwt)\"}" -H 'Content-Type: application/json'
    ///     https://verifier.example/v1/contracts/reinstate
    #[command(verbatim_doc_comment)]
    Reinstate(ReinstateArgs),
    /// Revoke contracts: read the current status list, set their bits, and print the new
    /// owner-signed list (publish it at the same URL; verifiers pick it up within their
    /// staleness bound).
    ///
    /// Example: cada-owner revoke --key owner-key.json --list status.jwt --index 17
    ///   > status.new.jwt && mv status.new.jwt status.jwt
    #[command(verbatim_doc_comment)]
    Revoke(RevokeArgs),
    /// Status list tools.
    #[command(subcommand, name = "status-list")]
    StatusList(StatusListCmd),
    /// Print a contract or status list decoded, and verify its signature against its
    /// issuer (a did:key resolves itself; a did:web needs --did-document) and its
    /// validity now (or --at).
    ///
    /// Example: cada-owner inspect contract.jwt --status-list status.jwt
    #[command(verbatim_doc_comment)]
    Inspect(InspectArgs),
    /// Seal a secret to one attested enclave; the bundle goes to stdout (base64url) or
    /// --out, for `cada-parent secret install`.
    ///
    /// The evidence (--evidence FILE, or fresh from the daemon with --socket) is verified
    /// under your policy, whose [[audience]] covering the secret's upstream lists the
    /// measurements you accept; the enclave must be locked to you. The value comes from a
    /// file or stdin, never the command line. Name, usage, the enclave's two keys and you
    /// are bound to the ciphertext and signed, so the host can neither point the secret at
    /// another upstream nor give it to another enclave.
    ///
    /// Example: cada-owner seal --key owner-key.json --policy policy.toml --socket S
    ///   --name github --upstream https://api.github.com --path-prefix /repos/acme/
    ///   --format "Bearer {}" --expires-in 30d --value-file token.txt --out github.sealed
    ///
    /// After an enclave restart (new keys), one command re-seals and installs, run on the
    /// owner's machine with the daemon's socket forwarded (ssh -L /tmp/cada.sock:S host):
    ///   cada-owner seal --key owner-key.json --policy policy.toml --socket /tmp/cada.sock
    ///   --like github.sealed --name github --value-file token.txt --install
    #[command(verbatim_doc_comment)]
    Seal(Box<seal::SealArgs>),
    /// Run the owner's approval service: enclaves locked to you ask it for one-transaction
    /// grants (step-up), you approve or deny on its page after signing in with a passkey.
    ///
    /// Prints `ready …` and, while no passkey is registered, a one-time registration code
    /// (type it on the sign-in page). Contracts name the service with `grant --step-up URL`.
    ///
    /// Example: cada-owner serve --key owner-key.json --policy policy.toml
    ///   --public-url http://localhost:8470 --audit-dir approval-audit
    #[command(verbatim_doc_comment)]
    Serve(Box<serve::ServeArgs>),
}

#[derive(Subcommand)]
enum StatusListCmd {
    /// Make a new, empty status list (131,072 entries at least) to publish at --url; the
    /// owner-signed list goes to stdout.
    ///
    /// Example: cada-owner status-list new --key owner-key.json
    ///   --url https://owner.example/status/1 > status.jwt
    #[command(verbatim_doc_comment)]
    New(StatusNewArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgArg {
    /// Ed25519 (JOSE EdDSA): small, fast, deterministic. The default.
    Ed25519,
    /// ECDSA P-256 (JOSE ES256): where policy or hardware requires NIST curves.
    Es256,
}

#[derive(Args)]
struct KeygenArgs {
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "ed25519")]
    alg: AlgArg,
    /// Use a did:web instead of a did:key: the host (lower case; a port as %3A8443) and
    /// optional path, colon-separated, e.g. `owner.example` or `owner.example:teams:ml`.
    #[arg(long, value_name = "HOST[:PATH]")]
    did_web: Option<String>,
    /// Directory to write owner-key.json (and did.json) into; created if missing.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["subject", "pcr0", "measurement"])))]
#[command(group(clap::ArgGroup::new("until").required(true).args(["valid_for", "valid_until", "minutes"])))]
#[command(group(clap::ArgGroup::new("revocation").args(["status_list", "no_revocation"])))]
struct GrantArgs {
    /// The owner key file (from `keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The agent: an enclave key's did:key.
    #[arg(long, value_name = "DID")]
    subject: Option<String>,
    /// Nitro image: PCR0 (96 hex digits); with --pcr1/--pcr2/--pcr8 as needed.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["subject", "measurement"])]
    pcr0: Option<String>,
    /// Nitro: PCR1 (kernel and boot ramfs).
    #[arg(long, value_name = "HEX", requires = "pcr0")]
    pcr1: Option<String>,
    /// Nitro: PCR2 (application).
    #[arg(long, value_name = "HEX", requires = "pcr0")]
    pcr2: Option<String>,
    /// Nitro: PCR8 (signing certificate of a signed image).
    #[arg(long, value_name = "HEX", requires = "pcr0")]
    pcr8: Option<String>,
    /// SEV-SNP image: the launch MEASUREMENT (96 hex digits).
    #[arg(long, value_name = "HEX", conflicts_with = "subject")]
    measurement: Option<String>,
    /// SEV-SNP: HOST_DATA (64 hex digits), with --measurement.
    #[arg(long, value_name = "HEX", requires = "measurement")]
    host_data: Option<String>,
    /// A URL prefix the agent may call: origin plus path prefix, matched on path-segment
    /// boundaries (https://api.example.com/v1 covers /v1 and /v1/x, never /v10 or
    /// api.example.com.evil.net). Repeatable; at least one unless --secret, --open,
    /// --authorization-details or --step-up is given.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present_any = ["secret", "open", "authorization_details", "step_up"]
    )]
    audience: Vec<String>,
    /// A sealed secret the enclave may use for the agent, for the --method methods, on URLs
    /// under PREFIX (https, normal form, matched on segment boundaries under the strict
    /// path rules): e.g. github=https://api.github.com/repos/acme/. The enclave adds the
    /// secret only to requests under both this prefix and the origin and path prefix the
    /// secret was sealed for. Repeatable.
    #[arg(long, value_name = "NAME=PREFIX")]
    secret: Vec<String>,
    /// Data sealed to the enclave for LABEL (`cada-verify seal`) that it may open for the
    /// agent (`cada-parent open`), at most BUDGET times under this contract: e.g.
    /// report=10. Repeatable.
    #[arg(long, value_name = "LABEL=BUDGET")]
    open: Vec<String>,
    /// An HTTP method the agent may use (GET, POST, …). Repeatable; at least one (with
    /// --authorization-details alone the default is POST, the method of an MCP call).
    #[arg(
        long,
        value_name = "METHOD",
        required_unless_present = "authorization_details"
    )]
    method: Vec<String>,
    /// An OAuth scope the agent may use. Repeatable; none by default.
    #[arg(long, value_name = "SCOPE")]
    scope: Vec<String>,
    /// An MCP tool the agent may call. Repeatable; none by default.
    #[arg(long, value_name = "NAME")]
    tool: Vec<String>,
    /// An MCP resource the agent may read, subscribe to or complete: a hierarchical URI
    /// prefix matched on segment boundaries (file:///srv/public/) or an opaque URI matched
    /// exactly (urn:…); in normal form, without dot segments, encoded separators or `;`
    /// (refused when written, see docs/contracts.md). Repeatable; none by default.
    #[arg(long, value_name = "URI_PREFIX")]
    resource: Vec<String>,
    /// An MCP prompt the agent may get. Repeatable; none by default.
    #[arg(long, value_name = "NAME")]
    prompt: Vec<String>,
    /// A ctx key every proof must carry (e.g. task). Repeatable.
    #[arg(long, value_name = "KEY")]
    ctx: Vec<String>,
    /// Most signatures under this contract.
    #[arg(long, value_name = "N")]
    budget: Option<u64>,
    /// Most signatures per second.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// What the enclave and verifiers record: minimal (installs, revocations, refusals),
    /// standard (also every signature), full (also ctx values).
    #[arg(long, value_enum, default_value = "standard")]
    audit: AuditArg,
    /// Behaviour limit: at most N accepted requests per window, fleet-wide (e.g. 600/1m).
    /// Crossing it suspends the contract until you reinstate it.
    #[arg(long, value_name = "N/WINDOW")]
    max_requests: Option<String>,
    /// Behaviour limit: at most N refused requests per window, fleet-wide (e.g. 5/5m).
    #[arg(long, value_name = "N/WINDOW")]
    max_refusals: Option<String>,
    /// Start of validity (RFC 3339, e.g. 2026-01-01T00:00:00Z); default now.
    #[arg(long, value_name = "TIME")]
    valid_from: Option<String>,
    /// Length of validity from --valid-from: 90s, 30m, 8h, 7d.
    #[arg(long, value_name = "DURATION")]
    valid_for: Option<String>,
    /// End of validity (RFC 3339).
    #[arg(long, value_name = "TIME")]
    valid_until: Option<String>,
    /// Length of validity in minutes from --valid-from (1 to 1440): for one-transaction
    /// grants, which should live only as long as the task needs. Such a short grant may
    /// omit --status-list / --no-revocation (it cannot be revoked; it expires).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1440))]
    minutes: Option<u64>,
    /// One-transaction grants: a JSON file holding an array of RFC 9396 authorization
    /// details of type mcp_tool_call ("-" reads stdin), each naming a tool, the server URL
    /// prefixes where it may be called ("locations"), optional constraints on its
    /// arguments (eq, min, max, one_of, prefix), "additional_arguments" (default false:
    /// arguments not listed are refused) and "single_use" (default false). A detail without
    /// "identifier" gets a fresh urn:uuid. See docs/examples/authorization-details.json.
    #[arg(long, value_name = "FILE")]
    authorization_details: Option<PathBuf>,
    /// The owner's approval service (cada-owner serve), base URL: https, or http to
    /// localhost or a loopback address (e.g. http://localhost:8470). The enclave then
    /// signs step-up requests to it (POST {URL}/v1/step-up, GET {URL}/v1/step-up/{id})
    /// under this contract, so the agent can ask you for a grant it lacks.
    #[arg(long, value_name = "URL")]
    step_up: Option<String>,
    /// URL of the status list that can revoke this contract (`status-list new`).
    #[arg(long, value_name = "URL", requires = "status_index")]
    status_list: Option<String>,
    /// This contract's index in the status list; give each contract its own.
    #[arg(long, value_name = "N", requires = "status_list")]
    status_index: Option<u64>,
    /// Issue a contract that cannot be revoked, only expire.
    #[arg(long)]
    no_revocation: bool,
    /// Let the subject delegate a narrower contract to another enclave (`cada-parent
    /// delegate`), at most K levels below this contract (1 to 8). Every delegation takes a
    /// revocation entry in your status list (--delegation-status-list, default
    /// --status-list) at an index of --delegation-status-range, so `revoke` takes back any
    /// link and everything below it. Without it the subject may not delegate.
    /// docs/delegation.md.
    #[arg(long, value_name = "K", requires = "delegation_status_range",
          value_parser = clap::value_parser!(u8).range(1..=8))]
    max_depth: Option<u8>,
    /// With --max-depth: the status-list indexes A..B (half-open, at most 2^20) the
    /// delegations below this contract take; it must exclude --status-index.
    #[arg(
        long,
        value_name = "A..B",
        requires = "max_depth",
        visible_alias = "status-range"
    )]
    delegation_status_range: Option<String>,
    /// With --max-depth: the status list the delegations' entries are in [default:
    /// --status-list].
    #[arg(long, value_name = "URL", requires = "max_depth")]
    delegation_status_list: Option<String>,
    /// A name for people (shown by inspect and in verifier answers).
    #[arg(long, value_name = "TEXT")]
    name: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AuditArg {
    Minimal,
    Standard,
    Full,
}

#[derive(Args)]
struct RevokeArgs {
    /// The owner key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The current status list (as published).
    #[arg(long, value_name = "FILE")]
    list: PathBuf,
    /// Index to revoke (repeatable). Revocation is final.
    #[arg(long, value_name = "N", required = true)]
    index: Vec<u64>,
    /// Validity of the new list (e.g. 7d); verifiers refuse it afterwards, so re-sign
    /// before then. Default: no end.
    #[arg(long, value_name = "DURATION")]
    valid_for: Option<String>,
}

#[derive(Args)]
struct StatusNewArgs {
    /// The owner key file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Where the list will be published (https; http only to a loopback host).
    #[arg(long, value_name = "URL")]
    url: String,
    /// Entries at least (rounded up; never fewer than 131,072).
    #[arg(long, value_name = "N", default_value_t = 131_072)]
    entries: u64,
    /// Validity of the list (e.g. 7d). Default: no end.
    #[arg(long, value_name = "DURATION")]
    valid_for: Option<String>,
}

#[derive(Args)]
struct InspectArgs {
    /// A contract or a status list (vc+jwt), or - for stdin.
    file: PathBuf,
    /// The did:web issuer's DID document (a did:key issuer needs none).
    #[arg(long, value_name = "FILE")]
    did_document: Option<PathBuf>,
    /// Also check the contract against this status list.
    #[arg(long, value_name = "FILE")]
    status_list: Option<PathBuf>,
    /// Check validity at this time (seconds since the epoch) instead of now.
    #[arg(long, value_name = "UNIX")]
    at: Option<u64>,
}

/// A failure with its exit code.
enum Failure {
    /// Refused: exit 1.
    Refused(ContractError),
    /// Usage or I/O: exit 2.
    Usage(String),
    /// A sealing refusal (`secret.*`): exit 1.
    Sealing(cada_secrets::SecretsError),
    /// The daemon or the enclave refused (its problem code and detail): exit 1.
    Remote(String),
}

impl From<ContractError> for Failure {
    fn from(e: ContractError) -> Self {
        Failure::Refused(e)
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure::Usage(msg.into())
}

fn main() -> ExitCode {
    // `… | head -1`: a closed stdout ends the command quietly (status 141), no panic.
    cada_protocol::cli::exit_quietly_on_broken_pipe();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .without_time()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(a) => keygen(&a),
        Command::Grant(a) => grant(&a),
        Command::Lock(a) => lock(&a),
        Command::Reinstate(a) => reinstate(&a),
        Command::Revoke(a) => revoke(&a),
        Command::StatusList(StatusListCmd::New(a)) => status_new(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Seal(a) => seal::run(&a),
        Command::Serve(a) => serve::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Refused(e)) => {
            eprintln!("refused ({}): {e}", e.code());
            ExitCode::from(1)
        }
        Err(Failure::Sealing(e)) => {
            eprintln!("refused ({}): {e}", e.code());
            ExitCode::from(1)
        }
        Err(Failure::Remote(m)) => {
            eprintln!("refused: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
    }
}

fn now() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `90s`, `30m`, `8h`, `7d`, or plain seconds.
fn parse_duration(s: &str) -> Result<u64, Failure> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| usage(format!("{s:?} is not a duration (90s, 30m, 8h, 7d)")))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(usage(format!("{s:?}: the unit is s, m, h or d"))),
    };
    n.checked_mul(mult)
        .filter(|d| *d > 0)
        .ok_or_else(|| usage(format!("{s:?} is not a positive duration")))
}

fn parse_time(s: &str) -> Result<u64, Failure> {
    cada_contract::time::parse(s).ok_or_else(|| {
        usage(format!(
            "{s:?} is not an RFC 3339 time (2026-01-01T00:00:00Z)"
        ))
    })
}

/// `N/WINDOW`, e.g. `600/1m`.
fn parse_limit(s: &str) -> Result<WindowLimit, Failure> {
    let (n, w) = s
        .split_once('/')
        .ok_or_else(|| usage(format!("{s:?}: write N/WINDOW, e.g. 600/1m")))?;
    Ok(WindowLimit {
        max: n
            .parse()
            .map_err(|_| usage(format!("{s:?}: {n:?} is not a number")))?,
        window_seconds: parse_duration(w)?,
    })
}

fn read_small(path: &Path, max: usize, what: &str) -> Result<String, Failure> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(std::io::stdin(), max as u64 + 1),
            &mut s,
        )
        .map_err(|e| usage(format!("reading stdin: {e}")))?;
        s
    } else {
        let meta = std::fs::metadata(path)
            .map_err(|e| usage(format!("{what} {}: {e}", path.display())))?;
        if meta.len() > max as u64 {
            return Err(usage(format!(
                "{what} {} is larger than {max} bytes",
                path.display()
            )));
        }
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("{what} {}: {e}", path.display())))?
    };
    if text.len() > max {
        return Err(usage(format!("{what} is larger than {max} bytes")));
    }
    Ok(text)
}

fn load_key(path: &Path) -> Result<OwnerKey, Failure> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by other users; run chmod 600 on it",
                    path.display()
                );
            }
        }
    }
    let text = Zeroizing::new(read_small(path, MAX_KEY_FILE_LEN, "key file")?);
    Ok(OwnerKey::from_key_file(&text)?)
}

/// The owner as its own verifier trusts it (to re-read its own status list).
fn self_trust(key: &OwnerKey) -> Result<TrustedOwners, Failure> {
    let mut t = TrustedOwners::new();
    t.add_jwk(key.did(), key.kid(), &key.public_key().jwk())?;
    Ok(t)
}

fn print_line(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").map_err(|e| {
        cada_protocol::cli::exit_if_broken_pipe(&e);
        usage(format!("writing stdout: {e}"))
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(path).map_err(|e| {
        usage(format!(
            "{}: {e} (cada-owner never overwrites a key; move the old one away first)",
            path.display()
        ))
    })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn keygen(a: &KeygenArgs) -> Result<ExitCode, Failure> {
    let alg = match a.alg {
        AlgArg::Ed25519 => OwnerAlg::Ed25519,
        AlgArg::Es256 => OwnerAlg::Es256,
    };
    let mut key = OwnerKey::generate(alg)?;
    if let Some(web) = &a.did_web {
        let did = if web.starts_with("did:web:") {
            web.clone()
        } else {
            format!("did:web:{web}")
        };
        key.use_did_web(&did)?;
    }
    std::fs::create_dir_all(&a.out).map_err(|e| usage(format!("{}: {e}", a.out.display())))?;
    let key_path = a.out.join("owner-key.json");
    let text = key.to_key_file();
    write_new(&key_path, text.as_bytes(), 0o600)?;
    tracing::info!(path = %key_path.display(), alg = key.alg().jose().as_str(), "wrote the owner key (mode 0600; keep it offline)");
    if key.did().starts_with("did:web:") {
        let doc_path = a.out.join("did.json");
        let doc =
            serde_json::to_string_pretty(&key.did_document()).map_err(|e| usage(e.to_string()))?;
        write_new(&doc_path, format!("{doc}\n").as_bytes(), 0o644)?;
        let url = cada_contract::did::did_web_url(key.did())?;
        tracing::info!(path = %doc_path.display(), "publish this DID document at {url}");
    }
    print_line(key.did())?;
    Ok(ExitCode::SUCCESS)
}

fn hex_arg(v: &str) -> String {
    v.trim().to_ascii_lowercase()
}

/// `cada-owner lock`.
#[derive(Args)]
struct LockArgs {
    /// The owner key file (from `keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The enclave key's did:key (`did` in the daemon's GET /v1/identity).
    #[arg(long, value_name = "DID")]
    enclave: String,
    /// How long the lock can be installed (90s, 10m, 1h; at most 1h).
    #[arg(long, default_value = "10m")]
    valid_for: String,
}

/// `cada-owner reinstate`.
#[derive(Args)]
struct ReinstateArgs {
    /// The owner key file (from `keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The suspended contract (its file), or its digest (`cada.dtc`) with --dtc. A
    /// delegation chain file (`C0~D1~…`) names its leaf.
    #[arg(long, required_unless_present = "dtc")]
    contract: Option<PathBuf>,
    /// The suspended contract's digest, instead of --contract (base64url: it may begin
    /// with '-').
    #[arg(long, allow_hyphen_values = true)]
    dtc: Option<String>,
    /// The suspension to lift: its id, from the verifiers' refusal ("suspension ID") or
    /// `GET /v1/contracts/DTC/suspension` on a verifier. The reinstatement lifts that
    /// suspension once, and no later one.
    #[arg(long, value_name = "ID")]
    suspension: String,
    /// How long the reinstatement can be presented (90s, 10m, 1h; at most 1h).
    #[arg(long, default_value = "10m")]
    valid_for: String,
}

/// The digest (`cada.dtc`) of the contract a file names: the contract itself, or for a
/// delegation chain (`C0~D1~…`, the file a worker's host installs) its leaf — the link
/// the worker's proofs name, and so the one a verifier suspends for the worker's calls.
/// A suspended upper link is reinstated with its own file or `--dtc`.
fn leaf_digest(text: &str) -> Result<String, Failure> {
    if !text.contains('~') {
        if text.len() > cada_contract::MAX_CONTRACT_LEN {
            return Err(usage(format!(
                "the contract is larger than {} bytes",
                cada_contract::MAX_CONTRACT_LEN
            )));
        }
        return Ok(cada_contract::digest_of(text));
    }
    let links = cada_contract::split_chain(text)?;
    let Some(leaf) = links.last() else {
        return Err(usage("the chain has no link"));
    };
    let dtc = cada_contract::digest_of(leaf);
    tracing::info!(
        link = links.len() - 1,
        dtc = %dtc,
        "a delegation chain: naming its leaf (for an upper link give its --dtc)"
    );
    Ok(dtc)
}

fn reinstate(a: &ReinstateArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let dtc = match (&a.dtc, &a.contract) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => {
            leaf_digest(read_small(p, cada_contract::MAX_CHAIN_LEN, "contract or chain")?.trim())?
        }
        (None, None) => return Err(usage("give --contract or --dtc")),
    };
    let jws = Reinstatement::issue(
        &key,
        &dtc,
        &a.suspension,
        now(),
        parse_duration(&a.valid_for)?,
    )?;
    tracing::info!(owner = key.did(), dtc = %dtc, suspension = %a.suspension, "reinstatement issued");
    println!("{jws}");
    Ok(ExitCode::SUCCESS)
}

fn lock(a: &LockArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let now = now();
    let jws = OwnerLock::issue(&key, &a.enclave, now, parse_duration(&a.valid_for)?)?;
    OwnerLock::verify(&jws, &a.enclave, None, now)?;
    tracing::info!(owner = key.did(), enclave = %a.enclave, "lock issued");
    println!("{jws}");
    Ok(ExitCode::SUCCESS)
}

fn grant(a: &GrantArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let now = now();
    let subject = if let Some(did) = &a.subject {
        Subject::Key(did.clone())
    } else if let Some(p0) = &a.pcr0 {
        let mut set = BTreeMap::from([("PCR0".to_string(), hex_arg(p0))]);
        for (name, v) in [("PCR1", &a.pcr1), ("PCR2", &a.pcr2), ("PCR8", &a.pcr8)] {
            if let Some(v) = v {
                set.insert(name.into(), hex_arg(v));
            }
        }
        Subject::Measurements(vec![set])
    } else if let Some(m) = &a.measurement {
        let mut set = BTreeMap::from([("MEASUREMENT".to_string(), hex_arg(m))]);
        if let Some(h) = &a.host_data {
            set.insert("HOST_DATA".into(), hex_arg(h));
        }
        Subject::Measurements(vec![set])
    } else {
        return Err(usage("name the agent: --subject, --pcr0 or --measurement"));
    };
    let valid_from = a
        .valid_from
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now);
    let valid_until = match (&a.valid_for, &a.valid_until, a.minutes) {
        (Some(d), _, _) => valid_from.saturating_add(parse_duration(d)?),
        (None, Some(t), _) => parse_time(t)?,
        (None, None, Some(m)) => valid_from.saturating_add(m.saturating_mul(60)),
        (None, None, None) => return Err(usage("give --valid-for, --valid-until or --minutes")),
    };
    if a.status_list.is_none() && !a.no_revocation && a.minutes.is_none() {
        return Err(usage(
            "say how the contract can be taken back: --status-list URL --status-index N, or \
             --no-revocation (a short grant given with --minutes may omit both)",
        ));
    }
    if valid_until <= now {
        return Err(usage("the contract would already be expired"));
    }
    // One rule for a whole origin everywhere (audiences, the daemon's `resource`, the
    // STS): `https://host` and `https://host/` both name it; the contract carries the normal
    // form, and the owner is told when it differs from what was typed.
    // One that does not parse is left as typed: the contract check refuses it with its code.
    let mut audiences = Vec::with_capacity(a.audience.len());
    for given in &a.audience {
        match cada_protocol::url::UrlPrefix::parse(given) {
            Ok(prefix) if prefix.as_str() != given => {
                tracing::info!(
                    given = %given,
                    written = %prefix.as_str(),
                    "--audience is written in normal form (an origin without a path is the \
                     whole origin)"
                );
                audiences.push(prefix.as_str().to_owned());
            }
            _ => audiences.push(given.clone()),
        }
    }
    let details = match &a.authorization_details {
        None => vec![],
        Some(path) => {
            let text = read_small(path, MAX_CONTRACT_LEN, "authorization details file")?;
            let mut details = cada_contract::AuthorizationDetail::parse_draft_list(&text)?;
            for d in &mut details {
                if d.identifier.is_empty() {
                    d.identifier = cada_contract::new_urn_uuid()?;
                }
            }
            details
        }
    };
    let methods: Vec<String> = if a.method.is_empty() && !details.is_empty() {
        vec!["POST".into()]
    } else {
        a.method.iter().map(|m| m.to_ascii_uppercase()).collect()
    };
    let mut g = Grant::new(subject, audiences, methods, valid_from, valid_until);
    g.authorization_details = details;
    g.step_up.clone_from(&a.step_up);
    g.scopes.clone_from(&a.scope);
    g.tools.clone_from(&a.tool);
    g.resources.clone_from(&a.resource);
    g.prompts.clone_from(&a.prompt);
    for s in &a.secret {
        let (name, prefix) = s
            .split_once('=')
            .ok_or_else(|| usage(format!("--secret {s:?}: expected NAME=PREFIX")))?;
        g.secrets.push(cada_contract::SecretGrant {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            methods: g.methods.clone(),
        });
    }
    for o in &a.open {
        let (label, budget) = o
            .split_once('=')
            .ok_or_else(|| usage(format!("--open {o:?}: expected LABEL=BUDGET")))?;
        g.opens.push(cada_contract::OpenGrant {
            label: label.to_owned(),
            budget: budget
                .parse()
                .map_err(|_| usage(format!("--open {o:?}: BUDGET is a number")))?,
        });
    }
    g.required_ctx.clone_from(&a.ctx);
    g.budget = a.budget;
    g.rate_per_second = a.rate;
    g.audit = match a.audit {
        AuditArg::Minimal => AuditLevel::Minimal,
        AuditArg::Standard => AuditLevel::Standard,
        AuditArg::Full => AuditLevel::Full,
    };
    g.limits = BehaviourLimits {
        requests: a.max_requests.as_deref().map(parse_limit).transpose()?,
        refusals: a.max_refusals.as_deref().map(parse_limit).transpose()?,
    };
    g.status = match (&a.status_list, a.status_index) {
        (Some(url), Some(i)) => Some(StatusEntry::new(url, i)?),
        _ => None,
    };
    if a.no_revocation || g.status.is_none() {
        tracing::warn!("this contract cannot be revoked; it only expires");
    }
    g.name.clone_from(&a.name);
    if let Some(max_depth) = a.max_depth {
        let status_list = a
            .delegation_status_list
            .clone()
            .or_else(|| a.status_list.clone())
            .ok_or_else(|| {
                usage(
                    "--max-depth: delegations are revoked through your status list: give \
                     --status-list (or --delegation-status-list)",
                )
            })?;
        let range = a.delegation_status_range.as_deref().unwrap_or_default();
        let bad = || {
            usage(format!(
                "--delegation-status-range {range:?}: expected A..B (half-open), e.g. 1000..2000"
            ))
        };
        let (from, to) = range.split_once("..").ok_or_else(bad)?;
        let status_range = [
            from.trim().parse().map_err(|_| bad())?,
            to.trim().parse().map_err(|_| bad())?,
        ];
        g.delegation = Some(cada_contract::DelegationRules {
            max_depth,
            status_list,
            status_range,
        });
    }
    let jwt = g.issue(&key, now)?;
    let c = Contract::verify(&jwt, &self_trust(&key)?, valid_from.max(now))?;
    tracing::info!(
        owner = c.owner(),
        id = c.id(),
        dtc = c.digest(),
        valid_until = %cada_contract::time::format(c.valid_until()),
        "granted"
    );
    print_line(&jwt)?;
    Ok(ExitCode::SUCCESS)
}

fn status_new(a: &StatusNewArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let now = now();
    let list = StatusList::new(&a.url, a.entries)?;
    let until = a
        .valid_for
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| now.saturating_add(d));
    let jwt = list.issue(&key, now, until)?;
    tracing::info!(
        url = list.id(),
        entries = list.entries(),
        "new status list; publish it at its URL"
    );
    print_line(&jwt)?;
    Ok(ExitCode::SUCCESS)
}

fn revoke(a: &RevokeArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let now = now();
    let text = read_small(&a.list, MAX_STATUS_LIST_LEN, "status list")?;
    let text = text.trim();
    let trust = self_trust(&key)?;
    // An expired list can still be updated: read it at its own issue time.
    let current = match StatusList::verify(text, &trust, now) {
        Ok(v) => v,
        Err(ContractError::StatusStale { .. }) => {
            let (_, p) = cada_contract::decode_unverified(text, MAX_STATUS_LIST_LEN)?;
            let at = p["nbf"].as_u64().unwrap_or(now);
            StatusList::verify(text, &trust, at)?
        }
        Err(e) => return Err(e.into()),
    };
    let mut list = StatusList::from_verified(&current);
    for i in &a.index {
        if list.is_revoked(*i)? {
            tracing::info!(index = i, "already revoked");
        }
        list.revoke(*i)?;
    }
    let until = a
        .valid_for
        .as_deref()
        .map(parse_duration)
        .transpose()?
        .map(|d| now.saturating_add(d));
    let jwt = list.issue(&key, now.max(current.valid_from()), until)?;
    tracing::info!(url = list.id(), revoked = ?a.index, "new status list; publish it at its URL");
    print_line(&jwt)?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: &InspectArgs) -> Result<ExitCode, Failure> {
    let text = read_small(&a.file, MAX_STATUS_LIST_LEN.max(MAX_CHAIN_LEN), "input")?;
    let text = text.trim();
    // A delegation chain (`C0~D1~…`): its links' digests, root first, and its leaf inspected
    // (the contract the worker's proofs name).
    let (text, chain) = if text.contains('~') {
        let links = cada_contract::split_chain(text)?;
        let digests: Vec<String> = links.iter().map(|l| cada_contract::digest_of(l)).collect();
        (links.last().copied().unwrap_or(text), Some(digests))
    } else {
        (text, None)
    };
    let at = a.at.unwrap_or_else(now);
    let (header, credential) = cada_contract::decode_unverified(text, MAX_STATUS_LIST_LEN)?;
    let issuer = credential["iss"].as_str().unwrap_or_default().to_owned();
    let is_list = credential["type"].as_array().is_some_and(|t| {
        t.iter()
            .any(|x| x == cada_contract::STATUS_LIST_CREDENTIAL_TYPE)
    });
    let mut trust = TrustedOwners::new();
    if let Some(doc) = &a.did_document {
        let d = read_small(doc, cada_contract::MAX_DID_DOCUMENT_LEN, "DID document")?;
        trust.add_did_document(d.as_bytes())?;
    } else if issuer.starts_with("did:key:") {
        trust.add_did_key(&issuer)?;
    }
    let mut out = serde_json::json!({ "header": header });
    if let Some(digests) = chain {
        out["chain"] = serde_json::json!({ "dtc": digests, "inspected": "leaf" });
    }
    let verdict: Result<serde_json::Value, ContractError> = if is_list {
        let mut credential = credential.clone();
        // The bitstring is long; show its size and the revoked indices instead.
        credential["credentialSubject"]["encodedList"] = "…".into();
        out["credential"] = credential;
        StatusList::verify(text, &trust, at).map(|l| {
            let revoked: Vec<u64> = (0..l.entries())
                .filter(|i| l.is_revoked(*i).unwrap_or(false))
                .take(1000)
                .collect();
            serde_json::json!({
                "kind": "status list",
                "owner": l.issuer(),
                "entries": l.entries(),
                "revoked_count": l.revoked_count(),
                "revoked": revoked,
            })
        })
    } else {
        out["credential"] = credential;
        Contract::verify(text, &trust, at).and_then(|c| {
            let mut v = serde_json::json!({
                "kind": "trust contract",
                "owner": c.owner(),
                "id": c.id(),
                "dtc": c.digest(),
                "remaining_seconds": c.remaining(at),
            });
            if let Some(p) = &a.status_list {
                let l = read_small(p, MAX_STATUS_LIST_LEN, "status list").map_err(|_| {
                    ContractError::StatusMalformed {
                        detail: format!("cannot read {}", p.display()),
                    }
                })?;
                let l = StatusList::verify(l.trim(), &trust, at)?;
                c.check_status(&l, at, at, u64::MAX)?;
                v["status"] = "not revoked".into();
            }
            Ok(v)
        })
    };
    let code = match verdict {
        Ok(mut v) => {
            v["signature"] = "valid".into();
            v["valid_at"] = at.into();
            out["verification"] = v;
            ExitCode::SUCCESS
        }
        Err(e) => {
            out["verification"] = serde_json::json!({
                "error": e.code(),
                "message": e.to_string(),
            });
            ExitCode::from(1)
        }
    };
    let pretty = serde_json::to_string_pretty(&out).map_err(|e| usage(e.to_string()))?;
    print_line(&pretty)?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contract digest is base64url: one in 64 begins with '-', and is still the value.
    #[test]
    fn a_digest_beginning_with_a_dash_is_a_value() {
        let dtc = "-7DI0cPbbB7bS0n8hQ3vVJx3mNq2zXWm7lS9yQeJ4Kk";
        let cli = Cli::try_parse_from([
            "cada-owner",
            "reinstate",
            "--key",
            "k.json",
            "--dtc",
            dtc,
            "--suspension",
            "0f",
        ])
        .unwrap();
        let Command::Reinstate(a) = cli.command else {
            panic!("not reinstate")
        };
        assert_eq!(a.dtc.as_deref(), Some(dtc));
    }
}
