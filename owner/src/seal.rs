//! `cada-owner seal`: seal a secret to one attested enclave.
//!
//! 1. the enclave's evidence (a file, or fresh from the daemon for a random nonce) is
//!    verified with the verifier library under the owner's policy, and its measurements are
//!    decided for the secret's upstream (the policy's `[[audience]]` covering it);
//! 2. the enclave must be locked to this owner (it accepts bundles from its owner only);
//! 3. the value (from a file or stdin, never argv) is sealed to the HPKE key the evidence
//!    binds, with the name, the usage, both enclave keys and the owner as AEAD context, and
//!    the whole bundle is signed with the owner key (`cada_secrets::seal_bundle`).
//!
//! `--like OLD --name N --socket S --install` is the one-command re-seal after an enclave
//! restart: same name and usage as the earlier bundle, new evidence, installed through the
//! daemon. It runs on the owner's machine (the daemon's socket forwarded, or `--evidence`),
//! never on the agent host: the old bundle's owner signature is verified with the owner's
//! own key, its name must equal `--name`, the usage it carries is printed and confirmed
//! (`--yes` to skip), and the new bundle's `iat` is later than the old one's (the enclave
//! refuses a bundle of the same second or older: `secret.replayed`).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_protocol::b64;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_secrets::{
    inspect_signed_bundle, seal_bundle, ClientAuth, OAuthGrant, OAuthUsage, SecretKind,
    SecretUsage, SecretsError, MAX_VALUE_LEN,
};
use clap::Args;
use zeroize::Zeroizing;

use crate::{load_key, now, parse_duration, parse_time, read_small, usage, Failure};

/// `cada-owner seal`.
#[derive(Args)]
pub struct SealArgs {
    /// The owner key file (from `keygen`); the enclave must be locked to this owner.
    #[arg(long)]
    key: PathBuf,
    /// The verifier policy (TOML, as for `cada-verify`) whose [[audience]] covering the
    /// secret's upstream lists the measurements you accept. Sim evidence passes only if it
    /// names the sim root, and then only with --allow-dev-platform.
    #[arg(long)]
    policy: PathBuf,
    /// The enclave's evidence: a CADA-Evidence value (base64url) or its CBOR, in a file.
    #[arg(long, value_name = "FILE", required_unless_present = "socket")]
    evidence: Option<PathBuf>,
    /// Fetch fresh evidence (for a random nonce) from the daemon at this unix socket instead
    /// (and with --install, install the bundle through it).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The secret's name (contracts grant it by this name). With --like it must equal the
    /// earlier bundle's name.
    #[arg(long)]
    name: Option<String>,
    /// The value, from this file (a trailing newline is removed); never on the command line.
    #[arg(long, value_name = "FILE", required_unless_present = "value_stdin")]
    value_file: Option<PathBuf>,
    /// The value, from stdin (a trailing newline is removed).
    #[arg(long, conflicts_with = "value_file")]
    value_stdin: bool,
    /// The whole usage as a TOML file (the fields of docs/secrets.md; `name` may be left
    /// out, then --name gives it). Instead of the flags below.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["upstream", "like"])]
    usage: Option<PathBuf>,
    /// Re-seal: the usage of an earlier bundle of this owner (after an enclave restart,
    /// which makes new keys; the old bundle can no longer be opened by anyone). Needs
    /// --name (the same name); keep the bundle on your own machine: its usage (upstream,
    /// prefix, CAs) is what the new bundle grants, and it is shown for confirmation.
    #[arg(
        long,
        value_name = "BUNDLE",
        conflicts_with = "upstream",
        requires = "name"
    )]
    like: Option<PathBuf>,
    /// With --like: do not ask for confirmation of the re-sealed usage.
    #[arg(long, requires = "like")]
    yes: bool,
    /// The upstream origin, https://host[:port].
    #[arg(long, value_name = "ORIGIN")]
    upstream: Option<String>,
    /// The path prefix under the upstream, matched on segment boundaries.
    #[arg(long, default_value = "/")]
    path_prefix: String,
    /// The header the credential goes in.
    #[arg(long, default_value = "authorization")]
    header: String,
    /// The header value, {} where the credential goes (`Bearer {}`, `token {}`, `Basic {}`).
    #[arg(long, default_value = "Bearer {}")]
    format: String,
    /// A CA certificate (PEM or DER) that may sign the upstream's certificate (repeatable);
    /// none: the built-in Mozilla roots.
    #[arg(long = "ca", value_name = "FILE")]
    cas: Vec<PathBuf>,
    /// A path (under the prefix) whose answers may carry credentials, allowed explicitly
    /// (repeatable).
    #[arg(long = "credential-endpoint", value_name = "PATH")]
    credential_endpoints: Vec<String>,
    /// How long the enclave may use the secret (90s, 30m, 8h, 30d).
    #[arg(long, default_value = "30d", conflicts_with = "expires_at")]
    expires_in: String,
    /// Until when the enclave may use the secret (RFC 3339).
    #[arg(long)]
    expires_at: Option<String>,
    /// An OAuth upstream: the token endpoint (the value is then JSON
    /// {"client_secret": …, "refresh_token": …}).
    #[arg(long, value_name = "URL", requires = "oauth_client_id")]
    oauth_token_endpoint: Option<String>,
    /// The OAuth client id.
    #[arg(long)]
    oauth_client_id: Option<String>,
    /// The OAuth grant: refresh_token or client_credentials.
    #[arg(long, default_value = "refresh_token")]
    oauth_grant: String,
    /// The OAuth scope to ask for.
    #[arg(long)]
    oauth_scope: Option<String>,
    /// Client authentication at the token endpoint: basic or post.
    #[arg(long, default_value = "basic")]
    oauth_client_auth: String,
    /// Development only: accept evidence from a platform whose keys live in host memory
    /// (sim, sim-snp, emulators).
    #[arg(long)]
    allow_dev_platform: bool,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents.
    #[arg(long)]
    insecure_emulator: bool,
    /// Where the bundle goes (CBOR); default: stdout as base64url.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also install the bundle through the daemon (--socket).
    #[arg(long, requires = "socket")]
    install: bool,
}

impl From<SecretsError> for Failure {
    fn from(e: SecretsError) -> Self {
        Failure::Sealing(e)
    }
}

fn read_value(a: &SealArgs) -> Result<Zeroizing<Vec<u8>>, Failure> {
    use std::io::Read as _;
    let limit = u64::try_from(MAX_VALUE_LEN + 2).unwrap_or(u64::MAX);
    let mut v = Zeroizing::new(Vec::new());
    let res = match &a.value_file {
        Some(p) => std::fs::File::open(p)
            .and_then(|f| f.take(limit).read_to_end(&mut v))
            .map_err(|e| usage(format!("--value-file {}: {e}", p.display()))),
        None => std::io::stdin()
            .take(limit)
            .read_to_end(&mut v)
            .map_err(|e| usage(format!("reading the value from stdin: {e}"))),
    };
    res?;
    while matches!(v.last(), Some(b'\n' | b'\r')) {
        v.pop();
    }
    if v.is_empty() || v.len() > MAX_VALUE_LEN {
        return Err(usage(format!(
            "the value is 1 to {MAX_VALUE_LEN} bytes, not {}",
            v.len()
        )));
    }
    Ok(v)
}

/// A CA file (PEM or DER) as the usage's base64 DER.
fn read_ca(p: &Path) -> Result<String, Failure> {
    let raw = std::fs::read(p).map_err(|e| usage(format!("--ca {}: {e}", p.display())))?;
    if raw.len() > 64 * 1024 {
        return Err(usage(format!("--ca {}: too large", p.display())));
    }
    let der = match std::str::from_utf8(&raw) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {
            let body: String = text
                .lines()
                .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body.trim())
                .map_err(|_| usage(format!("--ca {}: not PEM", p.display())))?
        }
        _ => raw,
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(der))
}

/// The usage to seal, and with `--like` the earlier bundle's `iat`.
fn build_usage(a: &SealArgs, now: u64) -> Result<(SecretUsage, Option<u64>), Failure> {
    let expires_at = match &a.expires_at {
        Some(t) => parse_time(t)?,
        None => now.saturating_add(parse_duration(&a.expires_in)?),
    };
    if let Some(p) = &a.usage {
        let text = read_small(p, 256 * 1024, "usage file")?;
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        if let Some(n) = &a.name {
            table.insert("name".into(), toml::Value::String(n.clone()));
        }
        if !table.contains_key("expires_at") {
            let secs = i64::try_from(expires_at).map_err(|_| usage("expiry out of range"))?;
            table.insert("expires_at".into(), toml::Value::Integer(secs));
        }
        return table
            .try_into()
            .map(|u| (u, None))
            .map_err(|e| usage(format!("{}: {e}", p.display())));
    }
    if let Some(old) = &a.like {
        let bundle = crate_read_bytes(old)?;
        let key = load_key(&a.key)?;
        // The owner's own key checks the old bundle's signature before its usage is used.
        let info = inspect_signed_bundle(&bundle, key.did())?;
        if a.name.as_deref() != Some(info.usage.name.as_str()) {
            return Err(usage(format!(
                "--like {} is a bundle of secret {:?}, not of --name {:?}; re-seal keeps the \
                 name (check that the file is the bundle you meant)",
                old.display(),
                info.usage.name,
                a.name.as_deref().unwrap_or("")
            )));
        }
        let mut u = info.usage;
        if a.expires_at.is_some() || a.expires_in != "30d" {
            u.expires_at = expires_at;
        } else if u.expires_at <= now {
            return Err(Failure::Sealing(SecretsError::Expired(format!(
                "the earlier bundle's usage expired at {}; give --expires-in",
                u.expires_at
            ))));
        }
        return Ok((u, Some(info.iat)));
    }
    let Some(upstream) = &a.upstream else {
        return Err(usage(
            "give the usage: --usage FILE, --like BUNDLE, or --upstream …",
        ));
    };
    let Some(name) = &a.name else {
        return Err(usage("give the secret's --name"));
    };
    let kind = match &a.oauth_token_endpoint {
        None => SecretKind::Static,
        Some(te) => SecretKind::OAuth(OAuthUsage {
            token_endpoint: te.clone(),
            client_id: a.oauth_client_id.clone().unwrap_or_default(),
            grant: match a.oauth_grant.as_str() {
                "refresh_token" => OAuthGrant::RefreshToken,
                "client_credentials" => OAuthGrant::ClientCredentials,
                g => {
                    return Err(usage(format!(
                        "--oauth-grant {g:?}: refresh_token or client_credentials"
                    )))
                }
            },
            scope: a.oauth_scope.clone(),
            client_auth: match a.oauth_client_auth.as_str() {
                "basic" => ClientAuth::Basic,
                "post" => ClientAuth::Post,
                c => return Err(usage(format!("--oauth-client-auth {c:?}: basic or post"))),
            },
        }),
    };
    Ok((
        SecretUsage {
            name: name.clone(),
            upstream: upstream.clone(),
            path_prefix: a.path_prefix.clone(),
            header: a.header.clone(),
            format: a.format.clone(),
            cas: a.cas.iter().map(|p| read_ca(p)).collect::<Result<_, _>>()?,
            expires_at,
            credential_endpoints: a.credential_endpoints.clone(),
            kind,
        },
        None,
    ))
}

/// The `iat` of a new bundle: `now`, or one second after the earlier bundle of the same name
/// when that is not earlier (the enclave accepts a bundle of the same second only if it is the
/// very same one, `secret.replayed`). Refused when that lies beyond the enclave's clock-skew
/// tolerance (the earlier bundle then claims a time far in the future).
fn seal_iat(now: u64, earlier: Option<u64>) -> Result<u64, Failure> {
    let Some(old) = earlier else { return Ok(now) };
    let iat = now.max(old.saturating_add(1));
    if iat > now.saturating_add(cada_secrets::sealed::IAT_FUTURE_TOLERANCE_SECS) {
        return Err(Failure::Sealing(SecretsError::Replayed(format!(
            "the earlier bundle was sealed at {old}, more than {} s after this machine's clock \
             ({now}); check the clock",
            cada_secrets::sealed::IAT_FUTURE_TOLERANCE_SECS
        ))));
    }
    Ok(iat)
}

/// What a re-seal will grant, for the owner to confirm (no secret in it).
fn describe_usage(u: &SecretUsage) -> String {
    let mut out = format!(
        "re-sealing secret {:?}\n  upstream:    {}{}\n  header:      {}: {}\n  expires_at:  {}\n",
        u.name, u.upstream, u.path_prefix, u.header, u.format, u.expires_at
    );
    if u.cas.is_empty() {
        out.push_str("  CAs:         the built-in Mozilla roots\n");
    }
    for ca in &u.cas {
        let der = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap_or_default();
        out.push_str(&format!(
            "  CA:          sha256 {}\n",
            hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der))
        ));
    }
    for e in &u.credential_endpoints {
        out.push_str(&format!(
            "  credential endpoint (answers may carry credentials): {e}\n"
        ));
    }
    if let SecretKind::OAuth(o) = &u.kind {
        out.push_str(&format!(
            "  OAuth:       token endpoint {}, client {}\n",
            o.token_endpoint, o.client_id
        ));
    }
    out
}

/// Shows the re-sealed usage on stderr and asks for `yes` on the terminal (stdin), unless
/// `--yes`; with `--value-stdin` stdin holds the value, so `--yes` is required.
fn confirm_like(a: &SealArgs, u: &SecretUsage) -> Result<(), Failure> {
    eprint!("{}", describe_usage(u));
    if a.yes {
        return Ok(());
    }
    if a.value_stdin {
        return Err(usage(
            "--like with --value-stdin: check the usage above and give --yes",
        ));
    }
    eprint!("seal the value under this usage? [yes/no] ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| usage(format!("reading the confirmation: {e}")))?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(usage(
            "not confirmed; nothing sealed (--yes to skip the question)",
        ))
    }
}

fn crate_read_bytes(p: &Path) -> Result<Vec<u8>, Failure> {
    let raw = std::fs::read(p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return b64::decode("bundle", text, cada_secrets::MAX_BUNDLE_LEN)
            .map_err(|e| usage(format!("{}: {e}", p.display())));
    }
    Ok(raw)
}

/// The evidence, and the nonce it was asked for when it came from the daemon.
fn evidence(
    a: &SealArgs,
    rt: &tokio::runtime::Runtime,
) -> Result<(EvidenceEnvelope, Option<Vec<u8>>), Failure> {
    let bad = |e: String| Failure::Sealing(SecretsError::Measurement(format!("the evidence: {e}")));
    if let Some(p) = &a.evidence {
        let raw = crate_read_bytes(p)?;
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        let env = if !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            EvidenceEnvelope::from_header(text)
        } else {
            EvidenceEnvelope::from_cbor(&raw)
        };
        return env.map(|e| (e, None)).map_err(|e| bad(e.to_string()));
    }
    let Some(socket) = &a.socket else {
        return Err(usage("give --evidence FILE or --socket PATH"));
    };
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| usage("no randomness"))?;
    let path = format!("/v1/evidence?nonce={}", hex::encode(nonce));
    let out = rt
        .block_on(cada_parent::daemon::call(socket, "GET", &path, None))
        .map_err(usage)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| usage(format!("the daemon's answer: {e}")))?;
    let header = v["evidence"]
        .as_str()
        .ok_or_else(|| usage("the daemon's answer carries no evidence"))?;
    let env = EvidenceEnvelope::from_header(header).map_err(|e| bad(e.to_string()))?;
    Ok((env, Some(nonce.to_vec())))
}

/// The shape of an OAuth secret's value, read without copying the values out.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthValue {
    #[serde(default)]
    client_secret: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    refresh_token: Option<serde::de::IgnoredAny>,
}

/// Refuses, before sealing, an OAuth value the enclave's refresher would refuse at its first
/// use: JSON `{"client_secret": …, "refresh_token": …}` with what the grant needs.
fn check_oauth_value(u: &SecretUsage, value: &[u8]) -> Result<(), Failure> {
    let SecretKind::OAuth(o) = &u.kind else {
        return Ok(());
    };
    let bad = |reason: &str| {
        Failure::Sealing(SecretsError::UsageInvalid {
            field: "value",
            reason: format!(
                "the value of an OAuth secret is JSON {{\"client_secret\": …, \"refresh_token\": …}}: {reason}"
            ),
        })
    };
    let v: OAuthValue = serde_json::from_slice(value).map_err(|_| bad("it is not that JSON"))?;
    match o.grant {
        OAuthGrant::RefreshToken if v.refresh_token.is_none() => {
            Err(bad("the refresh_token grant needs a refresh_token"))
        }
        OAuthGrant::ClientCredentials if v.client_secret.is_none() => {
            Err(bad("the client_credentials grant needs a client_secret"))
        }
        _ => Ok(()),
    }
}

/// Runs `cada-owner seal`.
pub fn run(a: &SealArgs) -> Result<ExitCode, Failure> {
    let key = load_key(&a.key)?;
    let now = now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| usage(e.to_string()))?;
    let (u, earlier) = build_usage(a, now)?;
    u.validate()?;
    let iat = seal_iat(now, earlier)?;
    if a.like.is_some() {
        confirm_like(a, &u)?;
    }
    let policy = Policy::load(&a.policy).map_err(|e| usage(format!("--policy: {e}")))?;
    let verifier = Verifier::new(
        policy,
        VerifierOptions {
            insecure_emulator: a.insecure_emulator,
        },
    );
    let (env, nonce) = evidence(a, &rt)?;
    let audience = format!("{}{}", u.upstream, u.path_prefix);
    let (attested, target) = cada_attestation_verifier::seal::attested_target(
        &verifier,
        &env,
        nonce.as_deref(),
        &audience,
        UnixTime::from_secs(now),
        a.allow_dev_platform,
    )?;
    if attested.owner.as_deref() != Some(key.did()) {
        return Err(Failure::Sealing(SecretsError::OtherOwner(format!(
            "the enclave is locked to {}, not to this owner ({}); it would refuse the bundle. \
             Lock it first (cada-owner lock, cada-parent owner lock)",
            attested.owner.as_deref().unwrap_or("nobody"),
            key.did()
        ))));
    }
    let value = read_value(a)?;
    check_oauth_value(&u, &value)?;
    u.check_value(&value)?;
    let bundle = seal_bundle(&key, &target, &u, &value, iat)?;
    drop(value);
    tracing::info!(
        secret = %u.name,
        digest = %bundle.digest,
        enclave = %attested.jkt,
        platform = %attested.platform,
        "sealed"
    );
    match &a.out {
        Some(p) => {
            std::fs::write(p, &bundle.bytes).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        }
        None if !a.install => println!("{}", b64::encode(&bundle.bytes)),
        None => {}
    }
    if a.install {
        let socket = a
            .socket
            .as_ref()
            .ok_or_else(|| usage("--install needs --socket"))?;
        let body = serde_json::json!({ "bundle": b64::encode(&bundle.bytes) });
        let out = rt
            .block_on(cada_parent::daemon::call(
                socket,
                "POST",
                "/v1/secrets/install",
                Some(body),
            ))
            // The daemon's refusal names the enclave's code.
            .map_err(|e| Failure::Remote(format!("installing: {e}")))?;
        println!("{}", String::from_utf8_lossy(&out));
    }
    Ok(ExitCode::SUCCESS)
}
