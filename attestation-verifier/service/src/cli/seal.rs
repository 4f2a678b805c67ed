//! `cada-verify seal`: encrypt data to an agent's attested key, after verifying its
//! evidence and deciding its measurements under the policy, as for a proof to `--audience`.
//! The envelope (an HPKE-4 COSE_Encrypt0, see docs/secrets.md) opens only inside that
//! enclave, and only where a contract of its owner grants the label (`cada-parent open`).
use cada_attestation_verifier::{Verifier, VerifierOptions};
use clap::Args;

use super::policy::PolicyArgs;
use super::{parse_time, read_input, read_input_limited, UsageError};

/// Arguments of `cada-verify seal`.
#[derive(Args)]
pub struct SealArgs {
    /// The agent's evidence: a `CADA-Evidence` value (base64url) or its CBOR, in a file
    /// (`-` reads stdin).
    #[arg(long)]
    pub evidence: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The URL this data is for: the policy's [[audience]] covering it names the
    /// measurements accepted.
    #[arg(long, value_name = "URL")]
    pub audience: String,
    /// The label the agent's contract must grant (`cada-owner grant --open LABEL=BUDGET`).
    #[arg(long)]
    pub label: String,
    /// The data to seal (`-` reads stdin; at most 200 KiB).
    #[arg(long = "in", value_name = "FILE")]
    pub input: String,
    /// Where the envelope goes (`-`: stdout, as base64url).
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Accept evidence from a platform whose keys live in host memory (sim, emulators):
    /// development only. Sim evidence verifies only when the policy names the sim root.
    #[arg(long)]
    pub allow_dev_platform: bool,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents.
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Verification time: RFC 3339 or `now`.
    #[arg(long, default_value = "now")]
    pub at: String,
}

/// Runs `cada-verify seal`; `Ok(false)` when refused (the code is printed).
pub fn run(a: SealArgs) -> Result<bool, UsageError> {
    let policy = a.policy.load_unchecked()?;
    let at = parse_time(&a.at)?;
    let env = match super::evidence::decode(&read_input(&a.evidence)?) {
        Ok(env) => env,
        Err(e) => {
            println!("REFUSED: [secret.measurement] the evidence: {e}");
            return Ok(false);
        }
    };
    let max = u64::try_from(cada_secrets::data::MAX_DATA_LEN).unwrap_or(u64::MAX);
    let data = zeroize::Zeroizing::new(read_input_limited(&a.input, max)?);
    let verifier = Verifier::new(
        policy,
        VerifierOptions {
            insecure_emulator: a.insecure_emulator,
        },
    );
    let (key, envelope) = match cada_attestation_verifier::seal::seal_data_to_agent(
        &verifier,
        &env,
        &a.audience,
        &a.label,
        &data,
        at,
        a.allow_dev_platform,
    ) {
        Ok(r) => r,
        Err(e) => {
            println!("REFUSED: [{}] {e}", e.code());
            return Ok(false);
        }
    };
    eprintln!(
        "sealed {} bytes for label {:?} to {} enclave {} (HPKE key {})",
        data.len(),
        a.label,
        key.platform,
        key.jkt,
        key.hpke.as_deref().unwrap_or("")
    );
    if a.out == "-" {
        println!("{}", cada_protocol::b64::encode(&envelope));
    } else {
        std::fs::write(&a.out, &envelope).map_err(|e| UsageError(format!("{}: {e}", a.out)))?;
    }
    Ok(true)
}
