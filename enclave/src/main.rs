//! `cada-enclave`: the signer process.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use cada_enclave::key::SigningKey;
use cada_enclave::platform::{nitro::Nitro, sim::Sim, sim_snp::SimSnp, snp::SevSnp, Platform};
use cada_enclave::server::{accept_hybrid, serve_connection};
use cada_enclave::signer::{check_prefix, DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::url::UrlPrefix;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum PlatformArg {
    /// AWS Nitro Enclaves through /dev/nsm.
    Nitro,
    /// AMD SEV-SNP through /dev/sev-guest.
    SevSnp,
    /// Software evidence in the Nitro format; never trusted by default.
    Sim,
    /// Software evidence in the SEV-SNP format; never trusted by default.
    SimSnp,
    /// A TPM 2.0 (--tpm-tcti): the proof key is made in the TPM and signs ES256 there; the
    /// machine's TPM, enrolled once with `cada-enclave tpm enroll`. Needs a cada-enclave
    /// built with the `tpm` feature (the enclave image is not).
    Tpm,
}

/// `--tpm-key-policy`.
#[derive(Clone, Copy, ValueEnum)]
enum TpmKeyPolicyArg {
    /// The TPM signs with the proof key only while the quoted PCRs keep the values they had
    /// when it was made (authPolicy = PolicyPCR).
    Pcr,
    /// No policy: the TPM signs whenever this process asks.
    None,
}

#[derive(clap::Subcommand)]
enum Command {
    /// TPM 2.0 administration (needs the `tpm` feature).
    #[command(subcommand)]
    Tpm(TpmCommand),
}

#[derive(clap::Subcommand)]
enum TpmCommand {
    /// Enrolls this TPM once: creates the attestation key (AK) under the endorsement key,
    /// proves by credential activation that it is in the TPM of the EK certificate, and has
    /// the enrollment CA (--ca-dir) issue its AK certificate naming that EK. Writes the AK
    /// and both certificate chains to --state-dir, the CA certificate to
    /// <ca-dir>/tpm-enroll-ca.pem (give it to verifiers as a [tpm] AK root).
    Enroll {
        /// The TPM's TCTI.
        #[arg(long, env = "CADA_TPM_TCTI", default_value = "device:/dev/tpmrm0")]
        tpm_tcti: String,
        /// The signer's state directory (`--state-dir` of `--platform tpm`).
        #[arg(long)]
        state_dir: PathBuf,
        /// The enrollment CA's directory (created with a new CA once).
        #[arg(long)]
        ca_dir: PathBuf,
        /// Intermediate certificates of the EK certificate (PEM), sent after it in evidence.
        #[arg(long, value_name = "PEM")]
        ek_intermediates: Option<PathBuf>,
        /// Validity of the AK certificate in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

/// The CADA signer. It generates its signing key inside the TEE at start, binds it in
/// attestation evidence, and signs CB-PoP proofs for the parent's requests — only within
/// the delegation given by the flags below.
///
/// Example (development): cada-enclave --platform sim --tcp 127.0.0.1:5005 --export-root sim-root.pem
#[derive(Parser)]
#[command(name = "cada-enclave", version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Evidence platform.
    #[arg(long, value_enum, default_value = "nitro", env = "CADA_PLATFORM")]
    platform: PlatformArg,
    /// Signing key, generated inside the enclave at boot, and the JOSE `alg` its proofs
    /// carry. ES256 is the most widely supported DPoP algorithm (some DPoP libraries accept
    /// nothing else); EdDSA is the fastest. Default EdDSA; ES256 on --platform tpm, whose
    /// TPM key signs only ES256 (there it names the session key's algorithm with
    /// --tpm-session).
    #[arg(long, value_parser = alg_parser())]
    alg: Option<SigAlg>,
    /// Listen on AF_VSOCK at this port (any CID). As PID 1 the default is 5005.
    #[arg(long, value_name = "PORT", env = "CADA_VSOCK_PORT")]
    vsock: Option<u32>,
    /// Run as the image's init even when not PID 1: mount /proc, /sys, /dev, load the
    /// modules in /lib/modules/order, send the heartbeat. Automatic when PID 1.
    #[arg(long)]
    init: bool,
    /// CID that receives the boot heartbeat (the parent: 3 on Nitro).
    #[arg(long, default_value_t = 3, env = "CADA_HEARTBEAT_CID")]
    heartbeat_cid: u32,
    /// Port that receives the boot heartbeat.
    #[arg(long, default_value_t = 9000, env = "CADA_HEARTBEAT_PORT")]
    heartbeat_port: u32,
    /// Listen on a unix socket speaking hybrid vsock (`CONNECT <port>`).
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Port expected in the hybrid-vsock CONNECT line.
    #[arg(long, default_value_t = 5005)]
    hybrid_port: u32,
    /// Listen on TCP (only with --platform sim, sim-snp or tpm, only on loopback).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<std::net::SocketAddr>,
    /// Directory that keeps the sim / sim-snp root across restarts; on --platform tpm, the
    /// enrolled AK and its certificates (`cada-enclave tpm enroll`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The TPM of --platform tpm: device:/dev/tpmrm0 (the kernel's resource manager),
    /// swtpm:host=127.0.0.1,port=PORT (scripts/swtpm.sh prints it), tabrmd:, ….
    #[arg(long, env = "CADA_TPM_TCTI", default_value = "device:/dev/tpmrm0")]
    tpm_tcti: String,
    /// SHA-256 PCRs the TPM quotes in evidence (comma-separated, 0..=23).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    tpm_pcrs: Vec<u8>,
    /// When the TPM signs with the proof key.
    #[arg(long, value_enum, default_value = "pcr")]
    tpm_key_policy: TpmKeyPolicyArg,
    /// Sign proofs with a software session key the TPM key certifies for this many seconds
    /// (--alg chooses its algorithm) instead of signing each proof in the TPM: as fast as
    /// sim, but the session key lives in this process's memory until it expires, and
    /// verifiers may refuse session keys or cap their lifetime. The signer stops signing
    /// when it expires. Without it every proof is signed in the TPM.
    #[arg(long, value_name = "SECS")]
    tpm_session: Option<u64>,
    /// Send this TCG event log with every TPM evidence (read once at start), e.g.
    /// /sys/kernel/security/tpm0/binary_bios_measurements: verifiers replay it to the quoted
    /// PCRs (at most 48 KiB).
    #[arg(long, value_name = "FILE")]
    tpm_event_log: Option<PathBuf>,
    /// Write the sim / sim-snp root certificate (PEM) here, for verifiers that trust it explicitly.
    #[arg(long)]
    export_root: Option<PathBuf>,
    /// Only sign for URLs under this prefix (repeatable; default: any): same scheme, host and
    /// port, and a path that equals the prefix's or continues it after a `/`
    /// (https://api.example.com/v1 covers /v1 and /v1/x, not /v10). Must be in normal form
    /// (lower-case host, no default port, no query, userinfo or fragment) and https (http
    /// only for loopback hosts); a prefix that is not refuses to start, naming the normal form.
    #[arg(long = "allow-url-prefix", value_name = "URL", value_parser = check_prefix)]
    url_prefixes: Vec<UrlPrefix>,
    /// Only sign for this HTTP method (repeatable; default: any).
    #[arg(long = "allow-method")]
    methods: Vec<String>,
    /// Stop signing after this many proofs.
    #[arg(long)]
    budget: Option<u64>,
    /// At most this many proofs per second.
    #[arg(long)]
    rate: Option<u32>,
    /// Stop signing after this many seconds from start.
    #[arg(long, value_name = "SECS")]
    delegation_ttl: Option<u64>,
    /// Lifetime of each proof (1..=30 s).
    #[arg(long, default_value_t = 30)]
    lifetime: u64,
    /// Lock the enclave to this owner from boot (its did:key, from `cada-owner keygen`).
    /// On Nitro the flag is part of the measured image, so the PCRs commit to the owner.
    /// Without it, the first valid owner lock (`cada-owner lock`, installed with
    /// `cada-parent owner lock`) locks the enclave, once. Once locked, the enclave signs
    /// only what a live contract of that owner permits (intersected with the flags above).
    #[arg(long, value_name = "DID")]
    owner: Option<String>,
    /// A contract with a status entry authorizes proofs only while its installed status
    /// list is at most this old (by the list's validFrom); reinstall a fresher list before.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    status_max_age: u64,
    /// The parent's egress relay for secret calls (vsock:CID:PORT on Nitro, e.g.
    /// vsock:3:8001; unix:PATH or tcp:127.0.0.1:PORT for development). The enclave dials it
    /// for each new upstream connection and speaks TLS through it, verifying the upstream
    /// inside; the parent sees only ciphertext. Without it, secret calls are refused
    /// (secret.no_egress).
    /// In an enclave image, CADA_EGRESS on the kernel command line sets it without changing
    /// the measured image.
    #[arg(
        long,
        value_name = "vsock:CID:PORT|unix:PATH|tcp:ADDR",
        env = "CADA_EGRESS"
    )]
    egress: Option<cada_enclave::egress::Relay>,
    /// Idle upstream connections kept per upstream (0: a new TLS connection per call).
    #[arg(long, default_value_t = cada_enclave::egress::Client::DEFAULT_MAX_IDLE)]
    egress_max_idle: usize,
    /// Most secret calls in flight per upstream, each on its own connection; more wait for
    /// one to end (within --egress-timeout-ms).
    #[arg(long, default_value_t = cada_enclave::egress::Client::DEFAULT_MAX_PER_ORIGIN)]
    egress_max_per_origin: usize,
    /// Time a secret call gets to connect, handshake and read the answer, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    egress_timeout_ms: u64,
    /// DEVELOPMENT ONLY (sim and sim-snp): a secret to use without sealing, from a JSON file
    /// {"usage": {…}, "value": "…"} (repeatable). Until sealed bundles are installed.
    #[arg(long, value_name = "FILE")]
    dev_secret: Vec<PathBuf>,
    /// DEVELOPMENT ONLY (sim and sim-snp): accept sealed secrets (`secret_install`) and
    /// opens although this platform keeps its keys in host memory, where the host can read
    /// them. Without it such a platform refuses them (secret.sim_platform); `describe` and
    /// `/v1/identity` show the flag.
    #[arg(long)]
    dev_secrets: bool,
}

/// The TPM platform, the proof key (in the TPM, or a session key) and when the session key
/// expires.
type OpenedTpm = (Box<dyn Platform>, SigningKey, Option<u64>);

/// `--platform tpm`.
#[cfg(feature = "tpm")]
fn open_tpm(args: &Args) -> Result<OpenedTpm, String> {
    use cada_enclave::platform::tpm::{KeyPolicy, Tpm, TpmOptions};
    let state_dir = args
        .state_dir
        .clone()
        .ok_or("--platform tpm needs --state-dir (where `cada-enclave tpm enroll` put the AK)")?;
    if args.tpm_session.is_none() && args.alg.is_some_and(|a| a != SigAlg::ES256) {
        return Err(
            "--platform tpm signs ES256 in the TPM; another --alg needs --tpm-session".into(),
        );
    }
    let opts = TpmOptions {
        tcti: args.tpm_tcti.clone(),
        state_dir,
        pcrs: args.tpm_pcrs.clone(),
        key_policy: match args.tpm_key_policy {
            TpmKeyPolicyArg::Pcr => KeyPolicy::Pcr,
            TpmKeyPolicyArg::None => KeyPolicy::None,
        },
        session_secs: args.tpm_session,
        event_log: args.tpm_event_log.clone(),
    };
    let (tpm, key) =
        Tpm::open(&opts, args.alg.unwrap_or(SigAlg::ES256)).map_err(|e| e.to_string())?;
    let exp = tpm.session().map(|(_, exp)| exp);
    tracing::info!(
        pcrs = ?args.tpm_pcrs,
        policy = ?tpm.key_policy(),
        session_until = ?exp,
        "TPM proof key created in the TPM"
    );
    Ok((Box::new(tpm), key, exp))
}

#[cfg(not(feature = "tpm"))]
fn open_tpm(_: &Args) -> Result<OpenedTpm, String> {
    Err(NO_TPM.into())
}

/// `--alg`: the algorithms a key can be generated for, each with its help line.
fn alg_parser() -> impl TypedValueParser<Value = SigAlg> {
    PossibleValuesParser::new([
        PossibleValue::new("EdDSA").help(
            "Ed25519 key, alg \"EdDSA\" (RFC 8037): the name today's DPoP libraries know (default)",
        ),
        PossibleValue::new("Ed25519")
            .help("Ed25519 key, alg \"Ed25519\": the fully specified name of RFC 9864"),
        PossibleValue::new("ES256").help("ECDSA P-256 key with SHA-256: the most widely supported"),
        PossibleValue::new("ES384").help("ECDSA P-384 key with SHA-384"),
    ])
    .try_map(|s| s.parse::<SigAlg>())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut args = Args::parse();
    if let Some(cmd) = args.command.take() {
        return match run_command(cmd) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cada-enclave: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let pid1 = std::process::id() == 1;
    // Before any key exists: no core file, no ptrace or /proc/<pid>/mem for same-uid processes.
    if let Err(e) = cada_enclave::init::harden_process() {
        eprintln!("cada-enclave: {e}");
        return halt(pid1);
    }
    if pid1 || args.init {
        if let Err(e) = boot(&mut args) {
            eprintln!("cada-enclave: init failed: {e}");
            return halt(pid1);
        }
    }
    let res = run(args);
    if pid1 {
        if let Err(e) = &res {
            eprintln!("cada-enclave: {e}");
        }
        return halt(true);
    }
    match res {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("cada-enclave: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The subcommands (administration, not the signer).
fn run_command(cmd: Command) -> Result<(), String> {
    match cmd {
        Command::Tpm(TpmCommand::Enroll {
            tpm_tcti,
            state_dir,
            ca_dir,
            ek_intermediates,
            days,
        }) => {
            #[cfg(feature = "tpm")]
            {
                let r = cada_enclave::platform::tpm_enroll::enroll(
                    &cada_enclave::platform::tpm_enroll::EnrollOptions {
                        tcti: tpm_tcti,
                        state_dir,
                        ca_dir,
                        ek_intermediates,
                        days,
                    },
                )
                .map_err(|e| e.to_string())?;
                println!(
                    "enrolled: EK {} AK {} (CA certificate {})",
                    r.ek_spki_sha256,
                    r.ak_name,
                    r.ca_pem.display()
                );
                Ok(())
            }
            #[cfg(not(feature = "tpm"))]
            {
                let _ = (tpm_tcti, state_dir, ca_dir, ek_intermediates, days);
                Err(NO_TPM.into())
            }
        }
    }
}

#[cfg(not(feature = "tpm"))]
const NO_TPM: &str = "this cada-enclave was built without TPM support: build it with \
`cargo build -p cada-enclave --features tpm` (needs Debian's libtss2-dev)";

/// Init duties inside an enclave image.
fn boot(args: &mut Args) -> Result<(), String> {
    use cada_enclave::init;
    init::mount_pseudo_filesystems().map_err(|e| e.to_string())?;
    let loaded =
        init::load_modules(std::path::Path::new("/lib/modules")).map_err(|e| e.to_string())?;
    eprintln!("cada-enclave: loaded modules {loaded:?}");
    init::heartbeat(args.heartbeat_cid, args.heartbeat_port).map_err(|e| e.to_string())?;
    eprintln!(
        "cada-enclave: heartbeat answered by {}:{}",
        args.heartbeat_cid, args.heartbeat_port
    );
    if args.vsock.is_none() && args.unix.is_none() && args.tcp.is_none() {
        args.vsock = Some(5005);
    }
    // Secret calls go through the parent's relay: on Nitro the parent is CID 3.
    if args.egress.is_none() {
        args.egress = Some(cada_enclave::egress::Relay::Vsock { cid: 3, port: 8001 });
    }
    Ok(())
}

/// PID 1 must not exit: power the enclave off instead.
fn halt(pid1: bool) -> std::process::ExitCode {
    if pid1 {
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    }
    std::process::ExitCode::from(2)
}

fn run(mut args: Args) -> Result<(), String> {
    let mut tpm_key = None;
    let platform: Box<dyn Platform> = match args.platform {
        PlatformArg::Nitro => Box::new(Nitro::open().map_err(|e| e.to_string())?),
        PlatformArg::SevSnp => Box::new(SevSnp::open().map_err(|e| e.to_string())?),
        PlatformArg::Sim => {
            let sim = Sim::new(args.state_dir.as_deref()).map_err(|e| e.to_string())?;
            if let Some(p) = &args.export_root {
                sim.export_root(p).map_err(|e| e.to_string())?;
            }
            Box::new(sim)
        }
        PlatformArg::SimSnp => {
            let sim = SimSnp::new(args.state_dir.as_deref()).map_err(|e| e.to_string())?;
            if let Some(p) = &args.export_root {
                sim.export_root(p).map_err(|e| e.to_string())?;
            }
            Box::new(sim)
        }
        PlatformArg::Tpm => {
            let (tpm, key, session_exp) = open_tpm(&args)?;
            if let Some(exp) = session_exp {
                // Past the session's end no verifier takes its evidence: stop signing there.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let left = exp.saturating_sub(now);
                args.delegation_ttl = Some(args.delegation_ttl.map_or(left, |t| t.min(left)));
            }
            tpm_key = Some(key);
            tpm
        }
    };
    if args.tcp.is_some()
        && !matches!(
            args.platform,
            PlatformArg::Sim | PlatformArg::SimSnp | PlatformArg::Tpm
        )
    {
        return Err(
            "--tcp is only for --platform sim, sim-snp or tpm; real enclaves listen on vsock"
                .into(),
        );
    }
    if let Some(addr) = args.tcp {
        if !addr.ip().is_loopback() {
            return Err(format!("--tcp {addr}: only loopback addresses are allowed"));
        }
    }
    if args.vsock.is_none() && args.unix.is_none() && args.tcp.is_none() {
        return Err("nothing to listen on: give --vsock, --unix or --tcp".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let policy = DelegationPolicy {
        url_prefixes: args.url_prefixes,
        methods: args.methods,
        budget: args.budget,
        rate_per_sec: args.rate,
        expires_at: args.delegation_ttl.map(|t| now + t),
        lifetime_secs: args.lifetime,
        owner: args.owner,
        status_max_age_secs: args.status_max_age,
    };
    let key = match tpm_key {
        Some(k) => k,
        None => {
            SigningKey::generate(args.alg.unwrap_or(SigAlg::EdDSA)).map_err(|e| e.to_string())?
        }
    };
    let signer = Arc::new(Signer::new(key, platform, policy).map_err(|e| e.to_string())?);
    if args.dev_secrets {
        if !matches!(args.platform, PlatformArg::Sim | PlatformArg::SimSnp) {
            return Err("--dev-secrets is for --platform sim or sim-snp only".into());
        }
        tracing::warn!(
            "--dev-secrets: secrets accepted on a platform whose keys live in host memory"
        );
        signer.allow_dev_secrets();
    }
    if !args.dev_secret.is_empty()
        && !matches!(args.platform, PlatformArg::Sim | PlatformArg::SimSnp)
    {
        return Err("--dev-secret is for --platform sim or sim-snp only".into());
    }
    if let Some(relay) = args.egress.clone() {
        let egress = cada_enclave::egress::Egress::new(
            cada_enclave::egress::Client::new(
                relay,
                args.egress_max_idle,
                std::time::Duration::from_millis(args.egress_timeout_ms.max(1)),
            )
            .with_max_per_origin(args.egress_max_per_origin),
        );
        for f in &args.dev_secret {
            let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let name = egress.add_dev_secret(&bytes).map_err(|e| e.to_string())?;
            tracing::warn!(secret = %name, "development secret loaded (not sealed)");
        }
        signer.set_egress(Arc::new(egress));
    } else if !args.dev_secret.is_empty() {
        return Err("--dev-secret needs --egress".into());
    }
    tracing::info!(
        jkt = signer.key().jkt(),
        did = signer.key().did(),
        "signing key generated inside the enclave"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        if let Some(addr) = args.tcp {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
            tracing::info!(%addr, "listening on TCP (sim only)");
            let s = signer.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok((c, _)) = l.accept().await {
                        let _ = c.set_nodelay(true);
                        tokio::spawn(serve_connection(c, s.clone()));
                    }
                }
            }));
        }
        if let Some(path) = args.unix.clone() {
            let _ = std::fs::remove_file(&path);
            let l = tokio::net::UnixListener::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), port = args.hybrid_port, "listening on hybrid vsock");
            let s = signer.clone();
            let port = args.hybrid_port;
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok((c, _)) = l.accept().await {
                        let s = s.clone();
                        tokio::spawn(async move {
                            match accept_hybrid(c, port).await {
                                Ok(stream) => serve_connection(stream, s).await,
                                Err(e) => tracing::warn!("hybrid vsock handshake refused: {e}"),
                            }
                        });
                    }
                }
            }));
        }
        if let Some(port) = args.vsock {
            let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
            let l = tokio_vsock::VsockListener::bind(addr).map_err(|e| format!("bind vsock port {port}: {e}"))?;
            tracing::info!(port, "listening on vsock");
            let s = signer.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    if let Ok((c, _)) = l.accept().await {
                        tokio::spawn(serve_connection(c, s.clone()));
                    }
                }
            }));
        }
        println!("ready jkt={} did={}", signer.key().jkt(), signer.key().did());
        // SIGINT or SIGTERM: return, so that the runtime and the signer are dropped (on tpm
        // that flushes the proof key and the AK from the TPM).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("SIGTERM handler: {e}"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping");
        Ok::<(), String>(())
    })?;
    // Drop the listeners' tasks (each holds the signer) before the signer.
    drop(rt);
    Ok(())
}
