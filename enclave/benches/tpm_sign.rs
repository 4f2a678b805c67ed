//! `--platform tpm` on swtpm: what a proof costs when the TPM signs it (TPM2_Sign, with and
//! without the PolicyPCR + PolicyAuthValue binding) and with a session key the TPM certified, and what fresh
//! evidence (TPM2_Certify + TPM2_Quote + PCR read) costs. Not a test: figures for
//! docs/tpm.md. Starts its own swtpm with scripts/swtpm.sh in a temporary directory.
//!
//!   scripts/bench-tpm.sh   (cargo bench -p cada-enclave --features tpm --bench tpm_sign)
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cada_enclave::key::SigningKey;
use cada_enclave::platform::tpm::{KeyPolicy, Tpm, TpmOptions, DEFAULT_PCRS};
use cada_enclave::platform::tpm_enroll::{enroll, EnrollOptions};
use cada_enclave::platform::Platform;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;

struct Swtpm(PathBuf);

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swtpm.sh")
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short vector of samples"
    )]
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    let n = samples.len();
    let total: Duration = samples.iter().sum();
    println!(
        "{what:<58} n={n:<5} median {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms",
        percentile(&mut samples, 0.5).as_secs_f64() * 1e3,
        percentile(&mut samples, 0.9).as_secs_f64() * 1e3,
        percentile(&mut samples, 0.99).as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3 / f64::from(u32::try_from(n).unwrap()),
    );
}

fn req() -> SignPopRequest {
    serde_json::from_value(serde_json::json!({
        "htm": "GET", "htu": "https://api.example.com/v1/items"
    }))
    .unwrap()
}

/// Proofs per second over `secs` seconds from `threads` threads.
fn throughput(signer: &Arc<Signer>, threads: usize, secs: u64) -> f64 {
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = signer.clone();
            std::thread::spawn(move || {
                let r = req();
                let mut n = 0u64;
                while Instant::now() < end {
                    s.sign_pop(&r).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    #[expect(clippy::cast_precision_loss, reason = "a count of proofs")]
    let n = n as f64;
    n / start.elapsed().as_secs_f64()
}

fn open(
    tcti: &str,
    dir: &Path,
    policy: KeyPolicy,
    session: Option<u64>,
    alg: SigAlg,
) -> (Tpm, SigningKey) {
    Tpm::open(
        &TpmOptions {
            tcti: tcti.into(),
            state_dir: dir.join("state"),
            pcrs: DEFAULT_PCRS.to_vec(),
            key_policy: policy,
            session_secs: session,
            event_log: None,
        },
        alg,
    )
    .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("tpm_sign: bench");
        return;
    }
    let dir = std::env::temp_dir().join(format!("cada-bench-tpm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(script())
        .arg("start")
        .arg(dir.join("swtpm"))
        .output()
        .expect("scripts/swtpm.sh (apt-get install swtpm swtpm-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _swtpm = Swtpm(dir.join("swtpm"));
    let tcti = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    enroll(&EnrollOptions {
        tcti: tcti.clone(),
        state_dir: dir.join("state"),
        ca_dir: dir.join("ca"),
        ek_intermediates: Some(dir.join("swtpm/ca/issuercert.pem")),
        days: 1,
    })
    .unwrap();
    println!(
        "swtpm {} at {tcti}, libtpms; one TSS connection, no resource manager",
        {
            let v = Command::new("swtpm").arg("--version").output().unwrap();
            String::from_utf8_lossy(&v.stdout).trim().to_owned()
        }
    );
    let msg = [7u8; 300];
    for (label, policy) in [
        (
            "TPM2_Sign, no policy (HMAC session, Sign, Flush)",
            KeyPolicy::None,
        ),
        (
            "TPM2_Sign, PolicyPCR+PolicyAuthValue (5 commands)",
            KeyPolicy::Pcr,
        ),
    ] {
        let (tpm, _) = open(&tcti, &dir, policy, None, SigAlg::ES256);
        for _ in 0..20 {
            tpm.sign_in_tpm(&msg).unwrap();
        }
        let samples = (0..500)
            .map(|_| {
                let t = Instant::now();
                tpm.sign_in_tpm(&msg).unwrap();
                t.elapsed()
            })
            .collect();
        report(label, samples);
        let samples = (0..50)
            .map(|i| {
                let t = Instant::now();
                tpm.attest(b"binding", &[u8::try_from(i).unwrap(); 32])
                    .unwrap();
                t.elapsed()
            })
            .collect();
        report("evidence: PCR read + TPM2_Quote + TPM2_Certify", samples);
        drop(tpm);
    }
    // Proofs through the signer (JWS, hash chain, policy) on 2 threads.
    for (label, policy, session, alg) in [
        (
            "proofs/s, each signed in the TPM (PolicyPCR+AuthValue)",
            KeyPolicy::Pcr,
            None,
            SigAlg::ES256,
        ),
        (
            "proofs/s, each signed in the TPM (no policy)",
            KeyPolicy::None,
            None,
            SigAlg::ES256,
        ),
        (
            "proofs/s, session key ES256 (TPM-certified)",
            KeyPolicy::Pcr,
            Some(900),
            SigAlg::ES256,
        ),
        (
            "proofs/s, session key EdDSA (TPM-certified)",
            KeyPolicy::Pcr,
            Some(900),
            SigAlg::EdDSA,
        ),
    ] {
        let (tpm, key) = open(&tcti, &dir, policy, session, alg);
        let signer =
            Arc::new(Signer::new(key, Box::new(tpm), DelegationPolicy::default()).unwrap());
        let _ = throughput(&signer, 2, 1);
        println!(
            "{label:<58} {:>10.0} /s (2 threads, 5 s)",
            throughput(&signer, 2, 5)
        );
    }
}
