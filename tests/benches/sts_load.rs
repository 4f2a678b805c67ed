//! Load benchmark of `cada-sts` (not a test): token exchanges over HTTP with warm evidence
//! (the STS saw the enclave's evidence once; each exchange then sends a fresh proof and the
//! contract), saturation, for each audit durability asked for; beside it, in the same run,
//! the in-process lower bound (one token signature plus one proof verification) and a
//! resource server's in-process check of a token with its proof.
//!
//! Run with `scripts/bench-sts.sh [CONNECTIONS] [SECONDS] [DURABILITIES]`, e.g.
//! `scripts/bench-sts.sh 64 5 fsync,batch-ms:5` (defaults: 64, 5, `fsync,batch-ms:5`).
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cada_attestation_verifier::decide::{Request, Stores};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::{Grant, OwnerAlg, OwnerKey, OwnerLock, Subject};
use cada_e2e::{free_port, loadgen, spawn_ready, TempDir};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::access_token::{
    AccessTokenClaims, Actor, CadaAt, Confirmation, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT,
};
use cada_protocol::jwk::SigAlg;
use cada_protocol::wire::SignPopRequest;
use http_body_util::Full;
use hyper::body::Bytes;

const RESOURCE: &str = "https://api.example.com/v1";
const RS_URL: &str = "https://api.example.com/v1/orders";

fn now_secs() -> u64 {
    UnixTime::now().as_secs()
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let durabilities: Vec<String> = args
        .get(3)
        .map_or("fsync,batch-ms:5", String::as_str)
        .split(',')
        .map(str::to_owned)
        .collect();

    let dir = TempDir::new("sts-bench");
    let d = &dir.0;
    let sim = Sim::new(Some(&d.join("state"))).expect("sim");
    let signer = Signer::new(
        SigningKey::generate(SigAlg::EdDSA).expect("key"),
        Box::new(sim),
        DelegationPolicy::default(),
    )
    .expect("signer");
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).expect("owner");
    let lock = OwnerLock::issue(&owner, signer.key().did(), now_secs(), 300).expect("lock");
    signer.lock_owner(&lock).expect("locked");
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut grant = Grant::new(
        Subject::Key(signer.key().did().into()),
        vec![issuer.clone(), "https://api.example.com/".into()],
        vec!["POST".into(), "GET".into()],
        now_secs() - 10,
        now_secs() + 3600,
    );
    grant.scopes = vec!["orders:read".into()];
    let contract = grant.issue(&owner, now_secs()).expect("contract");
    signer.install_contract(&contract, None).expect("installed");
    let env = signer.attest(&[]).expect("evidence");
    let pcr0 = signer.measurements().expect("measurements")["PCR0"].clone();
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{}\"]\n",
            d.join("state/sim-root.der").display().to_string(),
            owner.did()
        ),
    )
    .expect("policy");
    let form = Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", GRANT_TYPE_TOKEN_EXCHANGE)
            .append_pair("subject_token", &contract)
            .append_pair("subject_token_type", TOKEN_TYPE_CONTRACT)
            .append_pair("resource", RESOURCE)
            .append_pair("scope", "orders:read")
            .finish(),
    );
    let token_req = SignPopRequest {
        htm: "POST".into(),
        htu: format!("{issuer}/token"),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    };
    let evidence = env.to_header();
    // A pool of proofs minted just before each run, large enough that none is sent twice.
    let mint = |n: usize| -> loadgen::RequestFn {
        let t = Instant::now();
        let proofs: Vec<String> = (0..n)
            .map(|_| signer.sign_pop(&token_req).expect("sign").dpop)
            .collect();
        eprintln!("minted {n} proofs in {:.1} s", t.elapsed().as_secs_f64());
        let form = form.clone();
        Arc::new(move |i| {
            hyper::Request::post("/token")
                .header("host", "sts")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("dpop", &proofs[i % proofs.len()])
                .body(Full::new(form.clone()))
                .expect("request")
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let window = secs as usize + 1;
    let mut http_rates = Vec::new();
    for durability in &durabilities {
        let listen = format!("127.0.0.1:{port}");
        let audit = d.join(format!("audit-{}", durability.replace(':', "-")));
        let sts = spawn_ready(
            "cada-sts",
            &[
                "serve",
                "--listen",
                &listen,
                "--issuer",
                &issuer,
                "--policy",
                policy.to_str().expect("utf8"),
                "--audit-dir",
                audit.to_str().expect("utf8"),
                "--audit-durability",
                durability,
                "--log-format",
                "text",
            ],
            &d.join("sts.log"),
        );
        let target = loadgen::Target::Tcp(port);
        // Warm: one exchange with the evidence, then proofs only.
        let first = signer.sign_pop(&token_req).expect("sign").dpop;
        let status = post_once(
            port,
            &form,
            &[("dpop", &first), ("cada-evidence", &evidence)],
        );
        assert_eq!(status, 200, "the warm-up exchange failed");
        let r = loadgen::run_requests(&rt, &target, mint(12_000 * window), conns, secs, None);
        println!(
            "HTTP POST /token (token exchange, warm evidence, memory replay store, audit {durability}), {conns} connections: {r}"
        );
        http_rates.push((durability.clone(), r.rate));
        println!(
            "  server peak RSS {:.1} MiB",
            sts.peak_rss_kib().unwrap_or(0) as f64 / 1024.0
        );
        drop(sts);
    }

    // In process, one core: the lower bound of an exchange — one token signature plus one
    // proof verification (the decision with warm evidence and the contract cached).
    let v = Verifier::new(
        Policy::load(&policy).expect("policy"),
        VerifierOptions::default(),
    );
    let now = UnixTime::now();
    v.admit_evidence(&env, None, now, None).expect("admit");
    let nonces = NonceIssuer::random();
    let replay = MemoryReplayStore::default();
    let (_, pem) = cada_sts::keys::SigningKey::generate().expect("sts key");
    let key_file = d.join("sts-key.pem");
    std::fs::write(&key_file, pem.as_bytes()).expect("key file");
    let sts_key = cada_sts::keys::SigningKey::from_pem_file(&key_file).expect("sts key");
    let n = 20_000;
    let proofs: Vec<String> = (0..n)
        .map(|_| signer.sign_pop(&token_req).expect("sign").dpop)
        .collect();
    let endpoint = format!("{issuer}/token");
    let scopes = vec!["orders:read".to_owned()];
    let exchange = cada_attestation_verifier::decide::Exchange {
        resource: RESOURCE,
        scopes: &scopes,
        authorization_details: &[],
    };
    let claims = |jkt: &str| AccessTokenClaims {
        iss: issuer.clone(),
        sub: owner.did().into(),
        client_id: signer.key().did().into(),
        aud: RESOURCE.into(),
        scope: "orders:read".into(),
        iat: now.as_secs(),
        exp: now.as_secs() + 300,
        jti: "x".into(),
        cnf: Confirmation { jkt: jkt.into() },
        act: Actor::nest(&[signer.key().did()]),
        cada_dch: vec!["d".into()],
        cada_tree: vec![],
        cada: CadaAt {
            platform: "sim".into(),
            msr: "m".into(),
            att: "a".into(),
            dtc: "d".into(),
            tools: vec![],
            resources: vec![],
            prompts: vec![],
            required_ctx: vec![],
            dtc_exp: None,
        },
        authorization_details: None,
    };
    let t = Instant::now();
    for p in &proofs {
        let req = Request {
            method: "POST",
            url: &endpoint,
            dpop: p,
            access_token: None,
            evidence: None,
            contract: Some(&contract),
            body: None,
        };
        let pending = v
            .evaluate_exchange(&req, &exchange, now, Some(&nonces))
            .expect("exchange");
        let _ = replay_insert(&replay, &pending, now);
    }
    let verify_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let jkt = signer.key().jkt().to_owned();
    let t = Instant::now();
    for _ in 0..n {
        let _ = sts_key.sign_jwt("at+jwt", &claims(&jkt)).expect("sign");
    }
    let sign_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let bound = 1e6 / (verify_us + sign_us);
    println!(
        "in process, one core: proof + contract decision {verify_us:.1} µs + token signature (ES256) {sign_us:.1} µs = {:.1} µs → {bound:.0} exchanges/s",
        verify_us + sign_us
    );
    for (name, r) in &http_rates {
        println!(
            "  HTTP (audit {name}) / in-process one core: {:.2}",
            r / bound
        );
    }

    // A resource server's check of a token and its proof, in process (the library's rule 5
    // with an [[issuer]] pinned by its JWKS), one core.
    let published = cada_sts::keys::SigningKey::from_pem_file(&key_file).expect("key");
    let jwks = d.join("jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_vec(&cada_sts::keys::KeySet::new(published, vec![]).jwks()).expect("jwks"),
    )
    .expect("jwks file");
    let rs_policy = d.join("rs-policy.toml");
    std::fs::write(
        &rs_policy,
        format!(
            "{}[[issuer]]\nissuer = \"{issuer}\"\njwks = {:?}\n",
            std::fs::read_to_string(&policy).expect("policy"),
            jwks.display().to_string()
        ),
    )
    .expect("rs policy");
    let rs = Verifier::new(
        Policy::load(&rs_policy).expect("rs policy"),
        VerifierOptions::default(),
    );
    let token = sts_key.sign_jwt("at+jwt", &claims(&jkt)).expect("token");
    let rs_req = SignPopRequest {
        htm: "GET".into(),
        htu: RS_URL.into(),
        access_token: Some(token.clone()),
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    };
    let proofs: Vec<String> = (0..n)
        .map(|_| signer.sign_pop(&rs_req).expect("sign").dpop)
        .collect();
    let rs_replay = MemoryReplayStore::default();
    let t = Instant::now();
    for p in &proofs {
        let req = Request {
            method: "GET",
            url: RS_URL,
            dpop: p,
            access_token: Some(&token),
            evidence: None,
            contract: None,
            body: None,
        };
        let d = rs.decide(
            &req,
            now,
            Stores {
                replay: &rs_replay,
                nonces: None,
            },
        );
        assert!(d.accepted().is_some(), "{:?}", d.refusal());
    }
    let rs_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "resource server in process, one core: access token (ES256) + DPoP proof (Ed25519) + replay {rs_us:.1} µs → {:.0}/s",
        1e6 / rs_us
    );
}

/// One raw HTTP/1.1 POST /token; the status.
fn post_once(port: u16, form: &[u8], headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut head = format!(
        "POST /token HTTP/1.1\r\nhost: sts\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n",
        form.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(form).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn replay_insert(
    replay: &MemoryReplayStore,
    p: &cada_attestation_verifier::decide::Pending,
    now: UnixTime,
) -> bool {
    use cada_attestation_verifier::replay::ReplayStore;
    replay
        .insert_new(p.replay_key(), p.remember_until(), now)
        .unwrap_or(false)
}
