//! `cada-verify nitro`.
use std::collections::BTreeMap;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::nitro::{AttestationDocument, NitroPolicy, NitroVerifier};
use cada_attestation_verifier::{cose, roots, UnixTime};
use clap::Args;

use super::{decode_flexible, parse_hex, parse_time, read_cert, read_input, UsageError};

/// Arguments of `cada-verify nitro`.
#[derive(Args)]
pub struct NitroArgs {
    /// Document file: raw COSE_Sign1 CBOR, hex or base64. `-` reads standard input.
    pub file: String,
    /// Verification time: RFC 3339 (`2022-10-13T08:58:02Z`), `now`, or `document` (the
    /// document's own timestamp — for recorded evidence whose certificates have expired).
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Required PCR value, `IDX=HEX` (repeatable; all given PCRs must match).
    #[arg(long = "pcr", value_name = "IDX=HEX")]
    pub pcrs: Vec<String>,
    /// Required nonce (hex).
    #[arg(long)]
    pub nonce: Option<String>,
    /// Required user_data (hex).
    #[arg(long)]
    pub user_data: Option<String>,
    /// Accept debug-mode enclaves (PCR0–2 all zero). Never do this in production.
    #[arg(long)]
    pub allow_debug: bool,
    /// Reject documents older than this many seconds at the verification time.
    #[arg(long, value_name = "SECS")]
    pub max_age: Option<u64>,
    /// Trust this extra root (PEM or DER) beside the pinned AWS root, e.g. a `sim` root.
    #[arg(long = "trust-root", value_name = "FILE")]
    pub trust_roots: Vec<String>,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned documents (alg −1). Every
    /// payload rule, the PCR policy, the nonce and the binding still apply; the result is
    /// marked as emulated.
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Run every check and list every failure instead of stopping at the first.
    #[arg(long)]
    pub report: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_pcr(s: &str) -> Result<(u8, Vec<u8>), UsageError> {
    let (i, h) = s
        .split_once('=')
        .ok_or_else(|| UsageError(format!("--pcr {s:?}: expected IDX=HEX")))?;
    let idx: u8 = i
        .parse()
        .ok()
        .filter(|i| *i < 32)
        .ok_or_else(|| UsageError(format!("--pcr {s:?}: index must be 0..31")))?;
    Ok((idx, parse_hex("--pcr", h)?))
}

fn doc_time(bytes: &[u8]) -> Option<UnixTime> {
    let s = cose::decode(bytes, cada_attestation_verifier::nitro::MAX_DOCUMENT_LEN).ok()?;
    AttestationDocument::from_payload(&s.payload)
        .ok()
        .map(|d| d.timestamp)
}

/// Runs the subcommand; `Ok(true)` when the document is valid.
pub fn run(a: NitroArgs) -> Result<bool, UsageError> {
    let bytes = decode_flexible(read_input(&a.file)?);
    let at = if a.at == "document" {
        doc_time(&bytes).unwrap_or_else(UnixTime::now)
    } else {
        parse_time(&a.at)?
    };
    let mut store = roots::nitro_store();
    for path in &a.trust_roots {
        let der = read_cert(path)?;
        let anchor = TrustAnchor::from_der(path.clone(), &der)
            .map_err(|e| UsageError(format!("{path}: {e}")))?;
        store.add(anchor);
    }
    let mut pcr_set = BTreeMap::new();
    for p in &a.pcrs {
        let (i, v) = parse_pcr(p)?;
        pcr_set.insert(i, v);
    }
    let policy = NitroPolicy {
        pcr_sets: if pcr_set.is_empty() {
            vec![]
        } else {
            vec![pcr_set]
        },
        allow_debug: a.allow_debug,
        expected_nonce: a
            .nonce
            .as_deref()
            .map(|n| parse_hex("--nonce", n))
            .transpose()?,
        expected_user_data: a
            .user_data
            .as_deref()
            .map(|n| parse_hex("--user-data", n))
            .transpose()?,
        expected_public_key: None,
        max_age_ms: a.max_age.map(|s| s.saturating_mul(1000)),
        max_future_skew_ms: 60_000,
    };
    let mut verifier = NitroVerifier::new(store);
    if a.insecure_emulator {
        super::warn_emulator();
        verifier = verifier.insecure_accept_emulator_documents();
    }
    let report = if a.report {
        verifier.report(&bytes, &policy, at)
    } else {
        match verifier.verify(&bytes, &policy, at) {
            Ok(v) => {
                print_valid(&v, at, a.json);
                return Ok(true);
            }
            Err(e) => cada_attestation_verifier::nitro::NitroReport {
                document: None,
                failures: vec![e],
            },
        }
    };
    if report.failures.is_empty() {
        // Report mode and clean: verify once more to get the verified form to print.
        if let Ok(v) = verifier.verify(&bytes, &policy, at) {
            print_valid(&v, at, a.json);
            return Ok(true);
        }
    }
    if a.json {
        let errors: Vec<_> = report
            .failures
            .iter()
            .map(|e| serde_json::json!({"code": e.code(), "message": e.to_string()}))
            .collect();
        let out = serde_json::json!({"valid": false, "at": at.to_string(), "errors": errors, "document": report.document});
        super::print_json(&out);
    } else {
        println!("REJECTED (verified at {at})");
        for e in &report.failures {
            println!("  [{}] {e}", e.code());
        }
    }
    Ok(false)
}

fn print_valid(
    v: &cada_attestation_verifier::nitro::VerifiedNitroDocument,
    at: UnixTime,
    json: bool,
) {
    if json {
        let out = serde_json::json!({"valid": true, "at": at.to_string(), "document": v});
        super::print_json(&out);
        return;
    }
    let d = &v.document;
    if v.emulated {
        println!("VALID-BUT-EMULATED unsigned Nitro attestation document (QEMU; no hardware root of trust)");
    } else {
        println!("VALID Nitro attestation document (verified at {at})");
    }
    println!("  module_id:   {}", d.module_id);
    println!("  timestamp:   {}", d.timestamp);
    println!("  root:        {} ({})", v.root_name, v.root_fingerprint);
    println!("  valid until: {}", v.valid_until);
    println!("  debug:       {}", v.debug);
    for (i, p) in &d.pcrs {
        if p.iter().any(|b| *b != 0) {
            println!("  PCR{i:<2}       {}", hex::encode(p));
        }
    }
    let show = |name: &str, f: &Option<Vec<u8>>| match f {
        None => println!("  {name:<12} null"),
        Some(b) => println!("  {name:<12} {} ({} bytes)", hex::encode(b), b.len()),
    };
    show("public_key:", &d.public_key);
    show("user_data:", &d.user_data);
    show("nonce:", &d.nonce);
}
