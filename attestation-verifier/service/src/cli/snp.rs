//! `cada-verify snp`: one SEV-SNP report, its VCEK/VLEK and chain, under flag-given rules.
use cada_attestation_verifier::chain::TrustStore;
use cada_attestation_verifier::snp::{MinTcb, SnpPolicy, SnpVerifier};
use clap::Args;

use super::{
    decode_flexible, parse_hex, parse_time, read_cert, read_certs, read_input, UsageError,
};

/// The SEV-SNP rules of `cada-verify snp`.
#[derive(Args)]
pub struct SnpPolicyArgs {
    /// Allowed launch measurement (hex, repeatable; any one must match).
    #[arg(long = "measurement", value_name = "HEX")]
    pub measurements: Vec<String>,
    /// Minimum reported TCB, e.g. `bootloader=3,tee=0,snp=8,microcode=115` (Turin: `fmc=`).
    #[arg(long, value_name = "LIST")]
    pub min_tcb: Option<String>,
    /// Highest VMPL accepted (default 0, the guest kernel's own level).
    #[arg(long)]
    pub max_vmpl: Option<u32>,
    /// Refuse guests whose policy allows SMT.
    #[arg(long)]
    pub no_smt: bool,
}

impl SnpPolicyArgs {
    fn policy(&self, allow_debug: bool) -> Result<SnpPolicy, UsageError> {
        let mut min = MinTcb::default();
        if let Some(list) = &self.min_tcb {
            for item in list.split(',').filter(|s| !s.is_empty()) {
                let (k, v) = item.split_once('=').ok_or_else(|| {
                    UsageError(format!("--min-tcb {item:?}: expected NAME=VALUE"))
                })?;
                let v: u8 = v
                    .parse()
                    .map_err(|_| UsageError(format!("--min-tcb {item:?}: value must be 0..255")))?;
                match k {
                    "fmc" => min.fmc = Some(v),
                    "bootloader" | "bl" => min.bootloader = Some(v),
                    "tee" => min.tee = Some(v),
                    "snp" => min.snp = Some(v),
                    "microcode" | "ucode" => min.microcode = Some(v),
                    _ => return Err(UsageError(format!("--min-tcb: unknown component {k:?}"))),
                }
            }
        }
        Ok(SnpPolicy {
            allow_debug,
            measurements: self
                .measurements
                .iter()
                .map(|m| parse_hex("--measurement", m))
                .collect::<Result<_, _>>()?,
            min_tcb: min,
            max_vmpl: self.max_vmpl.or(SnpPolicy::default().max_vmpl),
            allow_smt: !self.no_smt,
            ..SnpPolicy::default()
        })
    }
}

/// Arguments of `cada-verify snp`.
#[derive(Args)]
pub struct SnpArgs {
    /// The report: 1184 raw bytes, hex or base64 (`-` reads stdin).
    #[arg(value_name = "REPORT")]
    pub report_file: String,
    /// The VCEK or VLEK that signed it (PEM or DER).
    #[arg(long)]
    pub vcek: String,
    /// ASK/ASVK and ARK (PEM); default: AMD's, pinned in the code.
    #[arg(long)]
    pub chain: Option<String>,
    /// Verification time: RFC 3339 or `now`.
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Accept guests whose policy allows debugging.
    #[arg(long)]
    pub allow_debug: bool,
    /// Required report_data (hex).
    #[arg(long)]
    pub report_data: Option<String>,
    #[command(flatten)]
    pub policy: SnpPolicyArgs,
    /// Trust this extra root (PEM or DER), e.g. a `sim-snp` root.
    #[arg(long = "trust-root", value_name = "FILE")]
    pub trust_roots: Vec<String>,
    /// Run every check and list every failure.
    #[arg(long)]
    pub report: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn extra_store(paths: &[String]) -> Result<TrustStore, UsageError> {
    let mut s = TrustStore::empty();
    for p in paths {
        s.add(super::policy::anchor(p)?);
    }
    Ok(s)
}

fn print_failures(failures: &[cada_attestation_verifier::VerifyError], json: bool) {
    if json {
        let errors: Vec<_> = failures
            .iter()
            .map(|e| serde_json::json!({"code": e.code(), "message": e.to_string()}))
            .collect();
        super::print_json(&serde_json::json!({"valid": false, "errors": errors}));
    } else {
        println!("REJECTED");
        for e in failures {
            println!("  [{}] {e}", e.code());
        }
    }
}

/// Runs `cada-verify snp`.
pub fn run(a: SnpArgs) -> Result<bool, UsageError> {
    let report = decode_flexible(read_input(&a.report_file)?);
    let vcek = read_cert(&a.vcek)?;
    let chain = match &a.chain {
        Some(p) => read_certs(p)?,
        None => vec![],
    };
    let at = parse_time(&a.at)?;
    let mut policy = a.policy.policy(a.allow_debug)?;
    policy.expected_report_data = a
        .report_data
        .as_deref()
        .map(|d| parse_hex("--report-data", d))
        .transpose()?;
    let v = SnpVerifier::new(extra_store(&a.trust_roots)?);
    if a.report {
        let out = v.report(&report, &vcek, &chain, &policy, at);
        if !out.failures.is_empty() {
            print_failures(&out.failures, a.json);
            return Ok(false);
        }
    }
    match v.verify(&report, &vcek, &chain, &policy, at) {
        Ok(ok) => {
            if a.json {
                super::print_json(
                    &serde_json::json!({"valid": true, "at": at.to_string(), "report": ok}),
                );
            } else {
                let r = &ok.report;
                println!("VALID SEV-SNP report (verified at {at})");
                println!(
                    "  generation:   {:?} (root {})",
                    ok.generation, ok.root_name
                );
                println!("  signed by:    {:?}", ok.signer);
                println!("  version:      {}", r.version);
                println!("  measurement:  {}", hex::encode(r.measurement));
                println!("  report_data:  {}", hex::encode(r.report_data));
                println!(
                    "  policy:       {:#x} (debug {})",
                    r.policy.raw, r.policy.debug
                );
                println!("  vmpl:         {}", r.vmpl);
                let t = &r.reported_tcb;
                println!(
                    "  reported_tcb: {:#018x} (bootloader {} tee {} snp {} microcode {})",
                    t.raw, t.bootloader, t.tee, t.snp, t.microcode
                );
                println!("  chip_id:      {}", hex::encode(r.chip_id));
            }
            Ok(true)
        }
        Err(e) => {
            print_failures(&[e], a.json);
            Ok(false)
        }
    }
}
