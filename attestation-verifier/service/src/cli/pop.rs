//! `cada-verify pop`.
use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::evidence::EvidenceVerifier;
use cada_attestation_verifier::nitro::{NitroPolicy, NitroVerifier};
use cada_attestation_verifier::pop::{PopConfig, PopRequest, PopVerifier};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::roots;
use cada_protocol::envelope::EvidenceEnvelope;
use clap::Args;

use super::{parse_time, read_cert, UsageError};

/// Arguments of `cada-verify pop`.
#[derive(Args)]
pub struct PopArgs {
    /// HTTP method of the request the proof came with.
    #[arg(long)]
    pub method: String,
    /// Full URL of that request.
    #[arg(long)]
    pub url: String,
    /// The `DPoP` header value (compact JWS); `@FILE` reads it from a file. Repeatable:
    /// proofs are verified in order by one verifier (one replay cache), so a repeated
    /// proof shows as a replay.
    #[arg(long, required = true)]
    pub dpop: Vec<String>,
    /// The `CADA-Evidence` header value (base64url envelope); `@FILE` reads it from a file.
    #[arg(long)]
    pub evidence: String,
    /// The access token the request carried (then `ath` must match).
    #[arg(long)]
    pub access_token: Option<String>,
    /// The DPoP nonce this server demanded.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Verification time (RFC 3339 or `now`).
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Trust this extra root (PEM or DER) beside the pinned AWS root — e.g. the `sim` root.
    #[arg(long = "trust-root", value_name = "FILE")]
    pub trust_roots: Vec<String>,
    /// Accept debug-mode enclaves.
    #[arg(long)]
    pub allow_debug: bool,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents.
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Allowed clock skew in seconds.
    #[arg(long, default_value_t = 10)]
    pub skew: u64,
    /// Print JSON (RFC 7662 introspection shape).
    #[arg(long)]
    pub json: bool,
}

fn arg_value(v: &str) -> Result<String, UsageError> {
    match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| UsageError(format!("cannot read {path}: {e}"))),
        None => Ok(v.trim().to_owned()),
    }
}

/// Runs the subcommand; `Ok(true)` when the proof is valid.
pub fn run(a: PopArgs) -> Result<bool, UsageError> {
    let at = parse_time(&a.at)?;
    let mut store = roots::nitro_store();
    for path in &a.trust_roots {
        let der = read_cert(path)?;
        store.add(
            TrustAnchor::from_der(path.clone(), &der)
                .map_err(|e| UsageError(format!("{path}: {e}")))?,
        );
    }
    let evidence = EvidenceEnvelope::from_header(&arg_value(&a.evidence)?);
    let config = PopConfig {
        skew_secs: a.skew,
        evidence_policy: NitroPolicy {
            allow_debug: a.allow_debug,
            max_future_skew_ms: a.skew * 1000,
            ..NitroPolicy::default()
        },
        ..PopConfig::default()
    };
    let mut nitro = NitroVerifier::new(store);
    if a.insecure_emulator {
        super::warn_emulator();
        nitro = nitro.insecure_accept_emulator_documents();
    }
    let verifier = PopVerifier::new(EvidenceVerifier::new(nitro), config);
    let replay = MemoryReplayStore::new(1024);
    let env = match evidence {
        Ok(env) => env,
        Err(e) => {
            let e: cada_attestation_verifier::VerifyError = e.into();
            print_rejected(&e, a.json);
            return Ok(false);
        }
    };
    let mut all_ok = true;
    for d in &a.dpop {
        let dpop = arg_value(d)?;
        let req = PopRequest {
            method: &a.method,
            url: &a.url,
            access_token: a.access_token.as_deref(),
            expected_nonce: a.nonce.as_deref(),
            evidence: Some(&env),
        };
        match verifier.verify(&dpop, &req, &replay, at) {
            Ok(v) => print_accepted(&v, a.json),
            Err(e) => {
                all_ok = false;
                print_rejected(&e, a.json);
            }
        }
    }
    Ok(all_ok)
}

fn print_accepted(v: &cada_attestation_verifier::pop::VerifiedPop, json: bool) {
    if json {
        let out = serde_json::json!({
            "active": true, "jkt": v.key.jkt, "did": v.key.did, "platform": v.key.platform,
            "measurements": v.key.measurements, "exp": v.claims.exp, "iat": v.claims.iat,
            "jti": v.claims.jti, "htm": v.claims.htm, "htu": v.claims.htu, "cada": v.claims.cada,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("ACCEPTED proof for {} {}", v.claims.htm, v.claims.htu);
        println!("  key:      {} ({})", v.key.jkt, v.key.did);
        println!(
            "  platform: {}  module: {}",
            v.key.platform, v.key.module_id
        );
        for (k, m) in &v.key.measurements {
            println!("  {k}:     {m}");
        }
        println!(
            "  seq:      {}  chain: {}",
            v.claims.cada.seq, v.claims.cada.chain
        );
    }
}

fn print_rejected(e: &cada_attestation_verifier::VerifyError, json: bool) {
    if json {
        let out = serde_json::json!({"active": false, "reasons": [{"code": e.code(), "message": e.to_string()}]});
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        println!("REJECTED [{}] {e}", e.code());
    }
}
