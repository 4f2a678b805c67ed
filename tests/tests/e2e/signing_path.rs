//! The signing path end to end, with the real binaries as separate processes.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cada_attestation_verifier::pop::{PopRequest, PopVerifier};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_e2e::*;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::wire::{self, ErrorCode, Request};
use cada_protocol::{b64, token};

const URL: &str = "https://api.example.com/v1/orders";

fn verifier(trusted_roots: &[&std::path::Path]) -> PopVerifier {
    let roots: Vec<Vec<u8>> = trusted_roots
        .iter()
        .map(|r| std::fs::read(r.join("state/sim-root.der")).expect("sim root"))
        .collect();
    verifier_trusting(&roots, test_pop_config())
}

fn evidence(ans: &serde_json::Value) -> EvidenceEnvelope {
    EvidenceEnvelope::from_header(ans["evidence"].as_str().expect("evidence")).expect("envelope")
}

fn req<'a>(
    method: &'a str,
    url: &'a str,
    at: Option<&'a str>,
    ev: Option<&'a EvidenceEnvelope>,
) -> PopRequest<'a> {
    PopRequest {
        method,
        url,
        access_token: at,
        expected_nonce: None,
        evidence: ev,
    }
}

#[test]
fn sign_then_verify_and_sim_fails_the_default_policy() {
    let dir = TempDir::new("basic");
    let _enclave = start_enclave(&dir.0, &[]);
    let _parent = start_parent(&dir.0, &[]);
    let sock = dir.0.join("agent.sock");
    let ans = mint(&sock, "POST", URL, Some("tok"), true);
    let dpop = ans["dpop"].as_str().unwrap();
    let env = evidence(&ans);
    let now = UnixTime::now();
    let v = verifier(&[&dir.0]);
    let store = MemoryReplayStore::default();
    let ok = v
        .verify(
            dpop,
            &req("POST", URL, Some("tok"), Some(&env)),
            &store,
            now,
        )
        .expect("valid proof");
    assert_eq!(ok.key.platform.as_str(), "sim");
    assert!(ok.key.module_id.starts_with("sim-"));
    assert_eq!(ok.claims.cada.seq, 1);
    // The key is now known: a second proof verifies without evidence.
    let ans2 = mint(&sock, "GET", URL, None, false);
    let ok2 = v
        .verify(
            ans2["dpop"].as_str().unwrap(),
            &req("GET", URL, None, None),
            &store,
            now,
        )
        .expect("token alone suffices once evidence was seen");
    assert_eq!(ok2.claims.cada.seq, 2, "the enclave counts every signature");
    // Default policy: only the pinned AWS root.
    let strict = verifier(&[]);
    let err = strict
        .verify(
            dpop,
            &req("POST", URL, Some("tok"), Some(&env)),
            &MemoryReplayStore::default(),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, VerifyError::UntrustedRoot { .. }), "{err:?}");
    // Without evidence, an unknown key is asked for it.
    let err = strict
        .verify(
            dpop,
            &req("POST", URL, Some("tok"), None),
            &MemoryReplayStore::default(),
            now,
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::EvidenceRequired { .. }),
        "{err:?}"
    );
    // identity and metrics
    let (st, body) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    assert_eq!(st, 200);
    let id: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(id["jkt"].as_str().unwrap(), ok.key.jkt);
    assert_eq!(id["platform"], "sim");
    let (st, metrics) = http(&sock, "GET", "/metrics", None, Duration::from_secs(5)).unwrap();
    assert_eq!(st, 200);
    assert!(
        metrics.contains("cada_parent_requests_total{route=\"pop\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE cada_parent_connections_accepted counter")
            && metrics.contains("cada_parent_connections_open 1"),
        "{metrics}"
    );
}

/// A change a relay might make to a proof's claims.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

/// Re-encodes a proof's claims after `edit`, keeping the original header and signature.
fn tamper(dpop: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let parts: Vec<&str> = dpop.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64::decode("c", parts[1], 8192).unwrap()).unwrap();
    edit(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

#[test]
fn a_relay_cannot_alter_swap_replay_or_strip() {
    let a = TempDir::new("relay-a");
    let b = TempDir::new("relay-b");
    let _ea = start_enclave(&a.0, &[]);
    let _pa = start_parent(&a.0, &[]);
    let _eb = start_enclave(&b.0, &[]);
    let _pb = start_parent(&b.0, &[]);
    let v = verifier(&[&a.0, &b.0]);
    let store = MemoryReplayStore::default();
    let now = UnixTime::now();
    let ans = mint(&a.0.join("agent.sock"), "POST", URL, Some("tok"), true);
    let dpop = ans["dpop"].as_str().unwrap().to_owned();
    let env_a = evidence(&ans);
    let env_b = evidence(&mint(&b.0.join("agent.sock"), "GET", URL, None, true));

    // Any altered claim breaks the signature.
    let edits: Vec<(&str, Edit)> = vec![
        (
            "htu",
            Box::new(|c| c["htu"] = "https://api.example.com/v1/admin".into()),
        ),
        ("htm", Box::new(|c| c["htm"] = "DELETE".into())),
        (
            "iat",
            Box::new(|c| c["iat"] = (c["iat"].as_u64().unwrap() + 20).into()),
        ),
        (
            "exp",
            Box::new(|c| c["exp"] = (c["exp"].as_u64().unwrap() + 20).into()),
        ),
        ("jti", Box::new(|c| c["jti"] = "fresh-jti".into())),
        (
            "ath",
            Box::new(|c| c["ath"] = token::access_token_hash("other").into()),
        ),
        (
            "strip ath",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
        ),
        (
            "ctx",
            Box::new(|c| c["cada"]["ctx"] = serde_json::json!({"task": "evil"})),
        ),
        ("seq", Box::new(|c| c["cada"]["seq"] = 99.into())),
        ("att", Box::new(|c| c["cada"]["att"] = "AAAA".into())),
    ];
    for (what, edit) in edits {
        let forged = tamper(&dpop, edit);
        let err = v
            .verify(
                &forged,
                &req("POST", URL, Some("tok"), Some(&env_a)),
                &store,
                now,
            )
            .unwrap_err();
        assert_eq!(err, VerifyError::PopSignature, "altered {what}");
    }
    // Evidence of another enclave does not bind this key.
    let err = v
        .verify(
            &dpop,
            &req("POST", URL, Some("tok"), Some(&env_b)),
            &store,
            now,
        )
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::BindingMismatch { .. }),
        "{err:?}"
    );
    // A header swapped to another key: the signature fails under that key.
    let hdr_b: Vec<String> = mint(&b.0.join("agent.sock"), "POST", URL, Some("tok"), false)["dpop"]
        .as_str()
        .unwrap()
        .split('.')
        .map(str::to_owned)
        .collect();
    let parts: Vec<&str> = dpop.split('.').collect();
    let swapped = format!("{}.{}.{}", hdr_b[0], parts[1], parts[2]);
    assert_eq!(
        v.verify(&swapped, &req("POST", URL, Some("tok"), None), &store, now)
            .unwrap_err(),
        VerifyError::PopSignature
    );
    // The genuine proof passes once, then is a replay.
    v.verify(
        &dpop,
        &req("POST", URL, Some("tok"), Some(&env_a)),
        &store,
        now,
    )
    .expect("genuine");
    let err = v
        .verify(&dpop, &req("POST", URL, Some("tok"), None), &store, now)
        .unwrap_err();
    assert!(matches!(err, VerifyError::Replay { .. }), "{err:?}");
    // A proof minted without the access token, presented with one: ath missing.
    let no_ath = mint(&a.0.join("agent.sock"), "POST", URL, None, false);
    let err = v
        .verify(
            no_ath["dpop"].as_str().unwrap(),
            &req("POST", URL, Some("tok"), None),
            &store,
            now,
        )
        .unwrap_err();
    assert_eq!(
        err,
        VerifyError::AccessTokenHash("is missing but an access token was sent")
    );
    // A proof for another method or URL, and an expired one.
    let p = mint(&a.0.join("agent.sock"), "GET", URL, None, false);
    let p = p["dpop"].as_str().unwrap();
    assert!(matches!(
        v.verify(p, &req("POST", URL, None, None), &store, now)
            .unwrap_err(),
        VerifyError::MethodMismatch { .. }
    ));
    assert!(matches!(
        v.verify(
            p,
            &req("GET", "https://api.example.com/other", None, None),
            &store,
            now
        )
        .unwrap_err(),
        VerifyError::UrlMismatch { .. }
    ));
    let later = UnixTime::from_millis(now.as_millis() + 60_000);
    assert!(matches!(
        v.verify(p, &req("GET", URL, None, None), &store, later)
            .unwrap_err(),
        VerifyError::NotFresh(_)
    ));
}

#[test]
fn bad_frames_get_typed_errors_and_the_enclave_keeps_serving() {
    let dir = TempDir::new("frames");
    let _enclave = start_enclave(&dir.0, &[]);
    let sock = dir.0.join("enclave.sock");
    let mut s = hybrid_connect(&sock, 5005);
    let describe = |id| {
        wire::encode_frame(&Request {
            id,
            op: "describe".into(),
            body: ciborium::Value::Null,
        })
        .unwrap()
    };
    // garbage CBOR
    write_frame(&mut s, &[0xff, 0x00, 0x13]);
    let r = read_response(&mut s).expect("answer");
    assert_eq!(r.err.unwrap().code, ErrorCode::Malformed);
    // well-formed CBOR that is not a request
    write_frame(&mut s, &[0xa1, 0x61, b'x', 0x01]);
    assert_eq!(
        read_response(&mut s).unwrap().err.unwrap().code,
        ErrorCode::Malformed
    );
    // unknown op
    let unknown = wire::encode_frame(&Request {
        id: 7,
        op: "export_key".into(),
        body: ciborium::Value::Null,
    })
    .unwrap();
    std::io::Write::write_all(&mut s, &unknown).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.id, r.err.unwrap().code), (7, ErrorCode::UnknownOp));
    // bad body for a known op
    let bad = wire::encode_frame(&Request {
        id: 8,
        op: "sign_pop".into(),
        body: ciborium::Value::Integer(3.into()),
    })
    .unwrap();
    std::io::Write::write_all(&mut s, &bad).unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!((r.id, r.err.unwrap().code), (8, ErrorCode::BadRequest));
    // sign_pop for a non-https URL and a non-token method
    for (id, htm, htu) in [
        (9u64, "GET", "http://api.example.com/"),
        (10, "GET /", "https://api.example.com/"),
    ] {
        let body = wire::to_value(&wire::SignPopRequest {
            htm: htm.into(),
            htu: htu.into(),
            access_token: None,
            nonce: None,
            ctx: BTreeMap::new(),
            bd: None,
            mcp: vec![],
            exchange: None,
            task: None,
            traceparent: None,
        })
        .unwrap();
        let f = wire::encode_frame(&Request {
            id,
            op: "sign_pop".into(),
            body,
        })
        .unwrap();
        std::io::Write::write_all(&mut s, &f).unwrap();
        let r = read_response(&mut s).unwrap();
        assert_eq!((r.id, r.err.unwrap().code), (id, ErrorCode::BadRequest));
    }
    // several requests in flight on one connection, answered by id
    let mut batch = Vec::new();
    for id in 100..120 {
        batch.extend_from_slice(&describe(id));
    }
    std::io::Write::write_all(&mut s, &batch).unwrap();
    let mut ids: Vec<u64> = (0..20).map(|_| read_response(&mut s).unwrap().id).collect();
    ids.sort();
    assert_eq!(ids, (100..120).collect::<Vec<_>>());
    // an oversized frame: typed error, then the connection closes
    std::io::Write::write_all(&mut s, &(64u32 << 20).to_be_bytes()).unwrap();
    assert_eq!(
        read_response(&mut s).unwrap().err.unwrap().code,
        ErrorCode::TooLarge
    );
    assert!(
        read_response(&mut s).is_none(),
        "connection closed after an oversized frame"
    );
    // a wrong hybrid port is refused; a new connection is served
    let mut wrong = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut wrong, b"CONNECT 9\n").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(std::io::Read::read(&mut wrong, &mut buf).unwrap_or(0), 0);
    let mut s2 = hybrid_connect(&sock, 5005);
    std::io::Write::write_all(&mut s2, &describe(1)).unwrap();
    let r = read_response(&mut s2).unwrap();
    assert!(r.ok.is_some(), "{r:?}");
}

#[test]
fn the_daemon_recovers_when_the_enclave_restarts_and_nothing_hangs() {
    let dir = TempDir::new("restart");
    let mut enclave = start_enclave(&dir.0, &[]);
    let _parent = start_parent(&dir.0, &["--timeout-ms", "1000"]);
    let sock = dir.0.join("agent.sock");
    mint(&sock, "GET", URL, None, true);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let sock = sock.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut log = Vec::new();
                let body = serde_json::json!({"method": "GET", "url": URL}).to_string();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = Instant::now();
                    let status = http(
                        &sock,
                        "POST",
                        "/v1/pop",
                        Some(&body),
                        Duration::from_secs(10),
                    )
                    .map(|(s, _)| s)
                    .unwrap_or(0);
                    log.push((t.duration_since(start), t.elapsed(), status));
                }
                log
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    enclave.kill();
    let killed_at = start.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    let _enclave2 = start_enclave(&dir.0, &[]);
    let restarted_at = start.elapsed();
    std::thread::sleep(Duration::from_millis(4000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let log: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let slowest = log.iter().map(|(_, d, _)| *d).max().unwrap();
    assert!(
        slowest < Duration::from_secs(3),
        "a request took {slowest:?} (daemon timeout is 1 s)"
    );
    assert!(
        log.iter().all(|(_, _, s)| [200, 503, 504].contains(s)),
        "unexpected statuses"
    );
    let before = log
        .iter()
        .filter(|(t, _, s)| *t < killed_at && *s == 200)
        .count();
    let outage = log
        .iter()
        .filter(|(t, _, s)| *t > killed_at && *t < restarted_at && *s != 200)
        .count();
    let recovered = log
        .iter()
        .filter(|(t, _, s)| *t > restarted_at + Duration::from_millis(2500) && *s == 200)
        .count();
    let failed_late = log
        .iter()
        .filter(|(t, _, s)| *t > restarted_at + Duration::from_millis(2500) && *s != 200)
        .count();
    assert!(before > 10, "served before the kill: {before}");
    assert!(outage > 0, "the outage was noticed");
    assert!(
        recovered > 10 && failed_late == 0,
        "recovered {recovered}, still failing {failed_late}"
    );
    // The new enclave has a new key: new evidence is fetched for it.
    let ans = mint(&sock, "GET", URL, None, true);
    let v = verifier(&[&dir.0]);
    v.verify(
        ans["dpop"].as_str().unwrap(),
        &req("GET", URL, None, Some(&evidence(&ans))),
        &MemoryReplayStore::default(),
        UnixTime::now(),
    )
    .expect("proof from the restarted enclave verifies");
}
