//! `cada-verify tpm`: TPM 2.0 evidence (a CADA envelope of platform `tpm`), or the raw
//! artefacts of a quote (TPMS_ATTEST, signature, PCR values) with the AK given directly, by
//! its certificate chain, or by an Azure HCL report — under flag-given roots and rules.
use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::tpm::structs::{alg, parse_public, parse_signature};
use cada_attestation_verifier::tpm::{
    ecdsa_signature_from_der, public_key_from_cert, public_key_from_spki, verify_hcl, verify_quote,
    PublicKey, Signature, TpmPolicy, TpmRoots, TpmVerifier,
};
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_protocol::envelope::EvidenceEnvelope;
use clap::{Args, Subcommand};

use super::{decode_flexible, parse_hex, parse_time, read_certs, read_input, UsageError};

/// Arguments of `cada-verify tpm`.
#[derive(Args)]
pub struct TpmArgs {
    #[command(subcommand)]
    cmd: TpmCmd,
}

#[derive(Subcommand)]
enum TpmCmd {
    /// Verify TPM evidence: an envelope of platform `tpm` (CBOR, or base64url as in the
    /// CADA-Evidence header; `-` reads stdin). Checks the AK (restricted, fixed to its
    /// TPM), its AK certificate and the EK chain (or Azure HCL report), both attestations'
    /// signatures and qualifying data (SHA-256(binding ‖ nonce)), the certified key (name,
    /// attributes, = the binding's jkt or a session key it certified), the PCR digest and the
    /// event log. Measurements against audiences are `cada-verify evidence --audience`.
    ///
    /// Example: cada-verify tpm evidence ev.b64 --ek-root swtpm-ca.pem --ak-root enroll.pem
    Evidence(EvidenceArgs),
    /// Verify a raw TPM2_Quote: the TPMS_ATTEST, its signature (TPMT_SIGNATURE, DER ECDSA or
    /// a raw RSASSA-SHA256 signature) and the PCR values, under an AK given as a key
    /// (unverified), an AK certificate chain (to a pinned or --ak-root root), or an Azure
    /// HCL report with its VCEK chain (the AK from its runtime claims).
    ///
    /// Example: cada-verify tpm quote --quote q.msg --sig q.sig --pcrs pcrs.bin
    ///          --hcl hcl-report.bin --vcek-chain vcek-chain.pem --nonce 6368616c6c656e6765
    Quote(QuoteArgs),
}

/// The roots and rules both forms take.
#[derive(Args)]
struct Roots {
    /// Trust this EK root (PEM or DER) beside the pinned manufacturers', e.g. swtpm's CA.
    #[arg(long = "ek-root", value_name = "FILE")]
    ek_roots: Vec<String>,
    /// Trust this enrollment CA's AK certificates (they must name the EK).
    #[arg(long = "ak-root", value_name = "FILE")]
    ak_roots: Vec<String>,
    /// Trust this CA's AK certificates without an EK (it vouches for the TPM alone).
    #[arg(long = "ak-root-without-ek", value_name = "FILE")]
    ak_roots_alone: Vec<String>,
    /// Verification time: RFC 3339 or `now`.
    #[arg(long, default_value = "now")]
    at: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl Roots {
    fn roots(&self) -> Result<TpmRoots, UsageError> {
        let mut r = TpmRoots::pinned();
        for (list, kind) in [
            (&self.ek_roots, 0),
            (&self.ak_roots, 1),
            (&self.ak_roots_alone, 2),
        ] {
            for p in list {
                let der = read_certs(p)?
                    .into_iter()
                    .next()
                    .ok_or_else(|| UsageError(format!("{p}: no certificate")))?;
                let res = match kind {
                    0 => r.add_ek_root(p, &der),
                    1 => r.add_ak_root(p, &der, false),
                    _ => r.add_ak_root(p, &der, true),
                };
                res.map_err(|e| UsageError(format!("{p}: {e}")))?;
            }
        }
        Ok(r)
    }
}

#[derive(Args)]
struct EvidenceArgs {
    /// The envelope (CBOR or base64url).
    #[arg(value_name = "EVIDENCE")]
    file: String,
    /// Require the envelope's nonce to be this (hex).
    #[arg(long)]
    nonce: Option<String>,
    /// Refuse session keys (require every proof to be signed in the TPM).
    #[arg(long)]
    no_session_keys: bool,
    /// Longest session-key lifetime accepted, seconds.
    #[arg(long, default_value_t = cada_attestation_verifier::tpm::DEFAULT_MAX_SESSION_SECS)]
    max_session_secs: u64,
    /// Require a key that signs only in the quoted boot state: its authPolicy PolicyPCR over
    /// the quoted SHA-256 PCRs (optionally then PolicyAuthValue) and userWithAuth clear, as
    /// `cada-enclave --tpm-key-policy pcr` makes it; else refused `tpm.key_policy`. The
    /// policy file's `[tpm] require_key_policy`.
    #[arg(long)]
    require_key_policy: bool,
    #[command(flatten)]
    roots: Roots,
}

#[derive(Args)]
struct QuoteArgs {
    /// The TPMS_ATTEST of the quote (raw, hex or base64).
    #[arg(long, value_name = "FILE")]
    quote: String,
    /// Its signature: a TPMT_SIGNATURE, a DER ECDSA signature, or a raw RSA signature.
    #[arg(long, value_name = "FILE")]
    sig: String,
    /// The PCR values the quote selects, in its order (raw concatenation, hex or base64).
    #[arg(long, value_name = "FILE")]
    pcrs: String,
    /// The AK (not verified): a certificate, a SubjectPublicKeyInfo (PEM or DER) or a
    /// TPMT_PUBLIC.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["ak_chain", "hcl"])]
    ak: Option<String>,
    /// The AK certificate chain (PEM, leaf first), verified to a pinned or --ak-root root.
    #[arg(long, value_name = "FILE", conflicts_with = "hcl")]
    ak_chain: Option<String>,
    /// The EK certificate chain (PEM, leaf first), when the AK certificate names the EK.
    #[arg(long, value_name = "FILE", requires = "ak_chain")]
    ek_chain: Option<String>,
    /// An Azure confidential VM's HCL report holding the AK (HCLAkPub).
    #[arg(long, value_name = "FILE", requires = "vcek_chain")]
    hcl: Option<String>,
    /// The VCEK (then ASK, ARK if known) of the HCL report's SNP report (PEM).
    #[arg(long, value_name = "FILE")]
    vcek_chain: Option<String>,
    /// Require the quote's extraData to be this (hex).
    #[arg(long)]
    nonce: Option<String>,
    #[command(flatten)]
    roots: Roots,
}

fn reject(e: &VerifyError, json: bool) -> Result<bool, UsageError> {
    if json {
        super::print_json(&serde_json::json!({
            "valid": false,
            "errors": [{"code": e.code(), "message": e.to_string()}],
        }));
    } else {
        println!("REJECTED");
        println!("  [{}] {e}", e.code());
    }
    Ok(false)
}

/// Runs `cada-verify tpm`.
pub fn run(a: TpmArgs) -> Result<bool, UsageError> {
    match a.cmd {
        TpmCmd::Evidence(e) => evidence(e),
        TpmCmd::Quote(q) => quote(q),
    }
}

fn evidence(a: EvidenceArgs) -> Result<bool, UsageError> {
    let raw = read_input(&a.file)?;
    let env = match EvidenceEnvelope::from_cbor(&raw) {
        Ok(e) => e,
        Err(_) => {
            let text = String::from_utf8(raw)
                .map_err(|_| UsageError(format!("{}: neither CBOR nor base64url", a.file)))?;
            EvidenceEnvelope::from_header(&text)
                .map_err(|e| UsageError(format!("{}: not an evidence envelope: {e}", a.file)))?
        }
    };
    let at = parse_time(&a.roots.at)?;
    if env.platform != cada_protocol::envelope::Platform::Tpm {
        return Err(UsageError(format!(
            "{}: the envelope is {} evidence; use `cada-verify evidence`",
            a.file, env.platform
        )));
    }
    if let Some(n) = &a.nonce {
        if env.nonce != parse_hex("--nonce", n)? {
            return reject(
                &VerifyError::NonceMismatch {
                    expected: n.clone(),
                    found: hex::encode(&env.nonce),
                },
                a.roots.json,
            );
        }
    }
    let v = TpmVerifier::new(
        a.roots.roots()?,
        TpmPolicy {
            allow_session_keys: !a.no_session_keys,
            max_session_secs: a.max_session_secs,
            require_key_policy: a.require_key_policy,
        },
    );
    match v.verify(&env, &SnpVerifier::default(), &SnpPolicy::default(), at) {
        Err(e) => reject(&e, a.roots.json),
        Ok(ok) => {
            if a.roots.json {
                super::print_json(&serde_json::json!({
                    "valid": true,
                    "at": at.to_string(),
                    "att": env.att_digest(),
                    "tpm": ok,
                }));
            } else {
                println!("VALID TPM evidence (at {at})");
                println!("  TPM:            {}", ok.tpm_id);
                println!("  AK:             {} ({})", ok.ak_name, describe_ak(&ok.ak));
                println!("  certified key:  jkt {}", ok.key_jkt);
                match ok.session {
                    Some((nbf, exp)) => println!(
                        "  proof key:      a session key the TPM key certified, valid {} .. {}",
                        UnixTime::from_secs(nbf),
                        UnixTime::from_secs(exp)
                    ),
                    None => println!("  proof key:      the certified TPM key itself"),
                }
                if !ok.key_auth_policy.is_empty() {
                    println!("  key policy:     {}", ok.key_auth_policy);
                }
                print_clock(&ok.clock, &ok.firmware_version);
                print_pcrs(ok.pcrs.iter().map(|p| (&p.bank, p.index, &p.value)));
                if let Some(log) = &ok.event_log {
                    println!(
                        "  event log:      {} events; replay matches PCRs {:?}",
                        log.events, log.matched
                    );
                }
                println!("  valid until:    {}", ok.valid_until);
            }
            Ok(true)
        }
    }
}

fn describe_ak(ak: &cada_attestation_verifier::tpm::AkBound) -> String {
    use cada_attestation_verifier::tpm::AkBound;
    match ak {
        AkBound::Certificate {
            ak_root,
            ak_subject,
            ek,
        } => match ek {
            Some(ek) => format!(
                "certificate {ak_subject} from {ak_root}; EK {} to {}{}",
                &ek.spki_sha256[..16],
                ek.root,
                if ek.pinned_root {
                    ""
                } else {
                    " (a root added, not pinned)"
                }
            ),
            None => format!("certificate {ak_subject} from {ak_root}, which vouches for the vTPM"),
        },
        AkBound::AzureHcl {
            measurement,
            chip_id,
            vm_id,
            amd_root,
        } => format!(
            "Azure HCL report: SNP measurement {measurement}, chip {chip_id}{}{}",
            vm_id
                .as_deref()
                .map(|v| format!(", VM {v}"))
                .unwrap_or_default(),
            if *amd_root { "" } else { " (NOT an AMD root)" }
        ),
    }
}

fn print_clock(c: &cada_attestation_verifier::tpm::structs::ClockInfo, fw: &str) {
    println!(
        "  clock:          {} ms, resets {}, restarts {}, safe {}; firmware {fw}",
        c.clock, c.reset_count, c.restart_count, c.safe
    );
}

fn print_pcrs<'a>(pcrs: impl Iterator<Item = (&'a String, u8, &'a String)>) {
    for (bank, idx, value) in pcrs {
        println!("  {bank} PCR {idx:>2}:  {value}");
    }
}

/// The AK from a file: certificate, SPKI (PEM or DER) or TPMT_PUBLIC.
fn read_ak(path: &str) -> Result<PublicKey, UsageError> {
    let raw = read_input(path)?;
    if let Ok(text) = std::str::from_utf8(&raw) {
        if let Some(b64) = text
            .split("-----BEGIN PUBLIC KEY-----")
            .nth(1)
            .and_then(|r| r.split("-----END").next())
        {
            let der = decode_flexible(b64.as_bytes().to_vec());
            return public_key_from_spki(&der).map_err(|e| UsageError(format!("{path}: {e}")));
        }
    }
    if let Some(k) = cada_attestation_verifier::x509::certs_from_pem_or_der(&raw)
        .and_then(|c| c.into_iter().next())
        .and_then(|d| public_key_from_cert(&d).ok())
    {
        return Ok(k);
    }
    let raw = decode_flexible(raw);
    if let Ok(k) = public_key_from_spki(&raw) {
        return Ok(k);
    }
    parse_public(&raw).map(|p| p.key).map_err(|e| {
        UsageError(format!(
            "{path}: not a certificate, SubjectPublicKeyInfo or TPMT_PUBLIC ({e})"
        ))
    })
}

/// The signature from its bytes: TPMT_SIGNATURE, DER ECDSA (SHA-256) or raw RSASSA-SHA256.
fn read_sig(raw: &[u8], ak: &PublicKey) -> Result<Signature, VerifyError> {
    if let Ok(s) = parse_signature(raw) {
        return Ok(s);
    }
    match ak {
        PublicKey::Ecc { .. } => ecdsa_signature_from_der(raw, alg::SHA256),
        PublicKey::Rsa { .. } => Ok(Signature::Rsa {
            scheme: alg::RSASSA,
            hash: alg::SHA256,
            sig: raw.to_vec(),
        }),
    }
}

/// Splits raw PCR bytes by the quote's selection (bank digest sizes, in order).
fn split_pcrs(quote: &[u8], raw: &[u8]) -> Vec<Vec<u8>> {
    use cada_attestation_verifier::tpm::structs::{digest_len, parse_attest, Attested};
    let sizes: Vec<usize> = match parse_attest(quote).map(|a| a.attested) {
        Ok(Attested::Quote { selection, .. }) => selection
            .iter()
            .flat_map(|b| std::iter::repeat_n(digest_len(b.hash).unwrap_or(32), b.pcrs.len()))
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    let mut rest = raw;
    for s in sizes {
        if rest.len() < s {
            break;
        }
        let (a, b) = rest.split_at(s);
        out.push(a.to_vec());
        rest = b;
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

fn quote(a: QuoteArgs) -> Result<bool, UsageError> {
    let at = parse_time(&a.roots.at)?;
    let msg = decode_flexible(read_input(&a.quote)?);
    let sig_raw = decode_flexible(read_input(&a.sig)?);
    let pcrs = split_pcrs(&msg, &decode_flexible(read_input(&a.pcrs)?));
    let nonce = a
        .nonce
        .as_deref()
        .map(|n| parse_hex("--nonce", n))
        .transpose()?;
    let (ak, how) = if let Some(p) = &a.ak {
        (
            read_ak(p)?,
            "given (not verified: pass --ak-chain or --hcl to verify it)".to_owned(),
        )
    } else if let Some(p) = &a.ak_chain {
        let chain = read_certs(p)?;
        let leaf = chain
            .first()
            .ok_or_else(|| UsageError(format!("{p}: no certificate")))?;
        let ak = match public_key_from_cert(leaf) {
            Ok(k) => k,
            Err(e) => return reject(&e, a.roots.json),
        };
        let ek = match &a.ek_chain {
            Some(p) => read_certs(p)?,
            None => Vec::new(),
        };
        let v = TpmVerifier::new(a.roots.roots()?, TpmPolicy::default());
        let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
        let ek_refs: Vec<&[u8]> = ek.iter().map(Vec::as_slice).collect();
        match v.verify_ak_certificate(&ak, &[], &refs, &ek_refs, at) {
            Ok((bound, _, _)) => (ak, describe_ak(&bound)),
            Err(e) => return reject(&e, a.roots.json),
        }
    } else if let Some(p) = &a.hcl {
        let hcl = read_input(p)?;
        let certs = match &a.vcek_chain {
            Some(c) => read_certs(c)?,
            None => Vec::new(),
        };
        let policy = SnpPolicy {
            max_vmpl: Some(0),
            ..SnpPolicy::default()
        };
        match verify_hcl(&hcl, &certs, &SnpVerifier::default(), &policy, at) {
            Ok(h) => {
                let how = format!(
                    "HCLAkPub of the Azure HCL report (SNP measurement {}, chip {}{})",
                    hex::encode(h.snp.report.measurement),
                    hex::encode(&h.snp.report.chip_id[..8]),
                    h.vm_id.map(|v| format!(", VM {v}")).unwrap_or_default()
                );
                (h.ak, how)
            }
            Err(e) => return reject(&e, a.roots.json),
        }
    } else {
        return Err(UsageError(
            "give the AK: --ak FILE, --ak-chain FILE or --hcl FILE --vcek-chain FILE".into(),
        ));
    };
    let sig = match read_sig(&sig_raw, &ak) {
        Ok(s) => s,
        Err(e) => return reject(&e, a.roots.json),
    };
    match verify_quote(&msg, &sig, &ak, &pcrs, nonce.as_deref()) {
        Err(e) => reject(&e, a.roots.json),
        Ok(q) => {
            if a.roots.json {
                super::print_json(&serde_json::json!({
                    "valid": true,
                    "at": at.to_string(),
                    "ak": how,
                    "quote": q,
                }));
            } else {
                println!("VALID TPM quote (at {at})");
                println!("  AK:             {how}");
                println!("  extraData:      {}", q.extra_data);
                println!("  signer:         {}", q.qualified_signer);
                print_clock(&q.clock, &q.firmware_version);
                print_pcrs(q.pcrs.iter().map(|p| (&p.bank, p.index, &p.value)));
                println!(
                    "  (a quote alone certifies no CADA key: `cada-verify tpm evidence` checks one)"
                );
            }
            Ok(true)
        }
    }
}
