//! ES256 vs Ed25519, in one run (not a test): what the enclave pays to sign a CB-PoP and what
//! the verifier pays to accept it, per algorithm.
//!
//! * `sign_pop/*` — the enclave's real signing path, in-process: [`Signer::sign_pop`]
//!   (request checks, delegation policy, random `jti`, hash chain, claims JSON, signature).
//! * `decide/*` — the verifier's real path, warm: [`Verifier::decide`] under a policy with an
//!   audience and a measurement set, the key's evidence admitted once beforehand, a fresh
//!   proof per iteration (minted outside the timing) and the memory replay store, exactly as
//!   `cada-verify serve` decides a `/v1/pop/verify` request (without HTTP and audit).
//! * `primitive_sign/*`, `primitive_verify/*` — the signature alone ([`SigningKey::sign`],
//!   [`verify_jws`]) on the same signing input, to show the share of each path that is the
//!   algorithm.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: this
//! machine is shared (2 cores, load averages of 7–9 while other agents build), and wall time
//! there counts every preemption. CPU time still carries cache and SMT interference from
//! neighbours; on an idle machine the two agree for this single-threaded code.
//!
//! It lives in `cada-e2e` because that is the one crate linking both the enclave and the
//! verifier: the verifier library must not link producer code, and the enclave no longer
//! links the verifier. Run with `cargo bench -p cada-e2e --bench alg_cost` (release).
#![forbid(unsafe_code)]
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Request, Stores};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::signature::verify_jws;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};

const URL: &str = "https://api.example.com/v1/orders";

/// The two algorithms compared: Ed25519 (under its usual JOSE name) and P-256.
const ALGS: [(&str, SigAlg); 2] = [("Ed25519", SigAlg::EdDSA), ("ES256", SigAlg::ES256)];

fn request() -> SignPopRequest {
    SignPopRequest {
        htm: "POST".into(),
        htu: URL.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    }
}

/// A signer holding a fresh `alg` key on the `sim` platform, and the verifier that trusts
/// its root and allows its PCR0 for the audience `https://api.example.com/`, with the
/// signer's evidence already admitted (the warm path).
fn setup(alg: SigAlg) -> (Signer, Verifier) {
    let sim = Sim::new(None).expect("sim platform");
    let root = sim.root_der().to_vec();
    let signer = Signer::new(
        SigningKey::generate(alg).expect("key"),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .expect("signer");
    let pcr0 = signer.measurements().expect("measurements")["PCR0"].clone();
    let mut policy = Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\n"
        ),
        std::path::Path::new("."),
        "alg_cost bench",
    )
    .expect("policy");
    policy
        .nitro_roots
        .add(TrustAnchor::from_der("sim", &root).expect("sim root"));
    let verifier = Verifier::new(policy, VerifierOptions::default());
    let env = signer.attest(&[]).expect("evidence");
    verifier
        .admit_evidence(&env, None, UnixTime::now(), None)
        .expect("evidence admitted");
    (signer, verifier)
}

fn decide(verifier: &Verifier, replay: &MemoryReplayStore, dpop: &str) -> bool {
    let req = Request {
        method: "POST",
        url: URL,
        dpop,
        access_token: None,
        evidence: None,
        contract: None,
        body: None,
    };
    let stores = Stores {
        replay,
        nonces: None,
    };
    verifier
        .decide(&req, UnixTime::now(), stores)
        .accepted()
        .is_some()
}

/// CPU time of the calling thread, for criterion.
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }

    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuNanos
    }
}

/// Formats nanoseconds of CPU time (`cpu ns`, `cpu µs`, …); throughputs per CPU second.
struct CpuNanos;

impl ValueFormatter for CpuNanos {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "cpu ns")
        } else if typical < 1e6 {
            (1e-3, "cpu µs")
        } else if typical < 1e9 {
            (1e-6, "cpu ms")
        } else {
            (1e-9, "cpu s")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        let per_op = match *t {
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
            Throughput::Bits(n) => n,
        } as f64;
        for v in values {
            *v = per_op * 1e9 / *v;
        }
        "/cpu s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn benches(c: &mut Criterion<ThreadCpu>) {
    let req = request();
    let setups: Vec<_> = ALGS.iter().map(|&(name, alg)| (name, setup(alg))).collect();

    let mut g = c.benchmark_group("sign_pop");
    for (name, (signer, _)) in &setups {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(signer.sign_pop(&req).expect("sign")));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("decide");
    for (name, (signer, verifier)) in &setups {
        // A store per algorithm, large enough that no run fills it with live entries.
        let replay = MemoryReplayStore::new(1 << 22);
        let first = signer.sign_pop(&req).expect("sign").dpop;
        assert!(
            decide(verifier, &replay, &first),
            "{name}: the benchmarked proof must be accepted"
        );
        g.bench_function(*name, |b| {
            b.iter_batched(
                || signer.sign_pop(&req).expect("sign").dpop,
                |dpop| assert!(decide(verifier, &replay, &dpop), "{name}: refused"),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();

    let mut g = c.benchmark_group("primitive_sign");
    for (name, (signer, _)) in &setups {
        let dpop = signer.sign_pop(&req).expect("sign").dpop;
        let (input, _) = dpop.rsplit_once('.').expect("compact JWS");
        let input = input.as_bytes().to_vec();
        g.bench_function(*name, |b| {
            b.iter(|| black_box(signer.key().sign(&input).expect("sign")));
        });
    }
    g.finish();

    let mut g = c.benchmark_group("primitive_verify");
    for (name, (signer, _)) in &setups {
        let dpop = signer.sign_pop(&req).expect("sign").dpop;
        let (input, sig) = dpop.rsplit_once('.').expect("compact JWS");
        let sig = cada_protocol::b64::decode("sig", sig, 128).expect("signature");
        let pk = signer.key().jwk().public_key_bytes().expect("public key");
        let alg = signer.key().alg();
        g.bench_function(*name, |b| {
            b.iter(|| assert!(verify_jws(alg, &pk, input.as_bytes(), &sig)));
        });
    }
    g.finish();
}

criterion_group! {
    name = alg_cost;
    config = Criterion::default()
        .with_measurement(ThreadCpu)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    targets = benches
}
criterion_main!(alg_cost);
