//! `cada-verify evidence`: one evidence envelope, decided by the same [`Verifier`] and policy
//! as `serve`'s `POST /v1/evidence/verify` (rule 4 of the decision), and, with `--audience`,
//! by rules 1, 11 and 12 for that URL.
use cada_attestation_verifier::decide::{Admission, Refusal};
use cada_attestation_verifier::evidence::AttestedKey;
use cada_attestation_verifier::{Verifier, VerifierOptions, VerifyError};
use cada_protocol::envelope::EvidenceEnvelope;
use clap::Args;

use super::policy::{read_nonce_key, PolicyArgs};
use super::{parse_hex, parse_time, read_input, UsageError};

/// Arguments of `cada-verify evidence`.
#[derive(Args)]
pub struct EvidenceArgs {
    /// The envelope: a `CADA-Evidence` value (base64url) or its CBOR, in a file (`-` reads
    /// stdin).
    pub envelope: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Also decide whether this evidence's measurements may call URL (the audience rules
    /// of the policy, as for a proof sent to that URL).
    #[arg(long, value_name = "URL")]
    pub audience: Option<String>,
    /// The nonce (hex) this verifier asked the enclave to put in its evidence.
    #[arg(long)]
    pub nonce: Option<String>,
    /// File holding the fleet's nonce key (as `serve --nonce-key-file`): SEV-SNP evidence
    /// under `[snp] freshness = "verifier_nonce"` must carry a nonce issued with it.
    #[arg(long)]
    pub nonce_key_file: Option<std::path::PathBuf>,
    /// Verification time: RFC 3339 or `now`.
    #[arg(long, default_value = "now")]
    pub at: String,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents.
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cada-verify evidence`; `Ok(true)` when the evidence (and the audience) is accepted.
pub fn run(a: EvidenceArgs) -> Result<bool, UsageError> {
    let policy = a.policy.load_unchecked()?;
    let at = parse_time(&a.at)?;
    let nonce = a
        .nonce
        .as_deref()
        .map(|n| parse_hex("--nonce", n))
        .transpose()?;
    let nonces = read_nonce_key(a.nonce_key_file.as_ref())?;
    if a.insecure_emulator {
        super::warn_emulator();
    }
    let env = match decode(&read_input(&a.envelope)?) {
        Ok(env) => env,
        Err(e) => return Ok(print_refused(&e.into(), a.json)),
    };
    let verifier = Verifier::new(
        policy,
        VerifierOptions {
            insecure_emulator: a.insecure_emulator,
        },
    );
    let key = match verifier.admit_evidence(&env, nonce.as_deref(), at, nonces.as_ref()) {
        Ok(k) => k,
        Err(r) => return Ok(print_refused(&r, a.json)),
    };
    let admission = match a.audience.as_deref() {
        None => None,
        Some(url) => match verifier.check_audience(url, &key) {
            Ok(adm) => Some(adm),
            Err(r) => return Ok(print_refused(&r, a.json)),
        },
    };
    print_valid(&key, a.audience.as_deref(), admission.as_ref(), a.json);
    Ok(true)
}

/// A header value (base64url text) or the envelope's CBOR.
pub fn decode(raw: &[u8]) -> Result<EvidenceEnvelope, VerifyError> {
    let text = std::str::from_utf8(raw).map(str::trim).unwrap_or("");
    let header_like = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let env = if header_like {
        EvidenceEnvelope::from_header(text)
    } else {
        EvidenceEnvelope::from_cbor(raw)
    };
    env.map_err(VerifyError::from)
}

fn print_valid(k: &AttestedKey, audience: Option<&str>, adm: Option<&Admission>, json: bool) {
    if json {
        let out = serde_json::json!({
            "valid": true, "key": k, "audience": audience, "admission": adm,
        });
        super::print_json(&out);
        return;
    }
    if k.emulated {
        println!(
            "VALID-BUT-EMULATED {} evidence (unsigned, from QEMU)",
            k.platform
        );
    } else {
        println!("VALID {} evidence", k.platform);
    }
    println!("  key:     {} ({})", k.jkt, k.did);
    if let Some(h) = &k.hpke {
        if cada_attestation_verifier::seal::keys_in_host_memory(k) {
            println!("  hpke:    {h} (HPKE-4; keys in host memory: secrets for development only)");
        } else {
            println!("  hpke:    {h} (HPKE-4)");
        }
    }
    println!("  module:  {}", k.module_id);
    for (n, m) in &k.measurements {
        println!("  {n}: {m}");
    }
    println!("  relied on until: {}", k.expires);
    if let (Some(url), Some(adm)) = (audience, adm) {
        println!("  may call {url}: admitted by {adm}");
    }
}

/// Prints the refusal; returns `false` (the exit status of a refusal).
fn print_refused(r: &Refusal, json: bool) -> bool {
    if json {
        let out = serde_json::json!({
            "valid": false, "rule": r.rule(),
            "errors": [{"code": r.code(), "message": r.error.to_string()}],
        });
        super::print_json(&out);
    } else {
        println!("REJECTED by rule {}: [{}] {}", r.rule(), r.code(), r.error);
    }
    false
}
