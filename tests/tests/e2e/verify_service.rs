//! `cada-verify serve` as resource servers use it: two instances sharing a real Redis,
//! fail-closed on a Redis outage, a crash under load, bad input, and policy reloads.
use std::process::Command;
use std::time::Duration;

use cada_e2e::*;
use serde_json::json;

const URL: &str = "https://api.example.com/v1/orders";

/// The PCR0 of the sim enclave behind `dir`'s agent socket.
fn sim_pcr0(dir: &std::path::Path) -> String {
    let (_, id) = http(
        &dir.join("agent.sock"),
        "GET",
        "/v1/identity",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    id["measurements"]["PCR0"].as_str().unwrap().to_owned()
}

/// A policy trusting the sim root, with `extra` and — unless `extra` names audiences — one
/// audience for api.example.com allowing the running sim enclave's PCR0.
fn write_policy(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let p = dir.join("policy.toml");
    let root = dir.join("state/sim-root.der");
    let audience = if extra.contains("[[audience]]") {
        String::new()
    } else {
        format!(
            "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            sim_pcr0(dir)
        )
    };
    std::fs::write(
        &p,
        format!(
            "[roots]\nnitro = [{:?}]\n{extra}\n{audience}",
            root.display().to_string()
        ),
    )
    .unwrap();
    p
}

fn proof(sock: &std::path::Path) -> serde_json::Value {
    let a = mint(sock, "POST", URL, None, true);
    json!({"dpop": a["dpop"], "method": "POST", "url": URL, "evidence": a["evidence"]})
}

#[test]
fn instances_share_replays_through_redis_and_fail_closed_without_it() {
    let dir = TempDir::new("redis");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let (mut redis, rport) = start_redis(&dir.0);
    let policy = write_policy(&dir.0, "");
    let store = format!("redis://127.0.0.1:{rport}");
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
    ];
    let (_a, pa) = start_verifier(&dir.0, "a", &args);
    let (_b, pb) = start_verifier(&dir.0, "b", &args);
    let sock = dir.0.join("agent.sock");

    let body = proof(&sock);
    let (st, v) = pop_verify(pa, &body);
    assert_eq!((st, v["active"].as_bool()), (200, Some(true)), "{v}");
    let (st, v) = pop_verify(pb, &body);
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["active"], false, "{v}");
    assert_eq!(v["reasons"][0]["code"], "pop.replay", "{v}");
    // and the other way round
    let body2 = proof(&sock);
    assert_eq!(pop_verify(pb, &body2).1["active"], true);
    assert_eq!(pop_verify(pa, &body2).1["reasons"][0]["code"], "pop.replay");

    redis.kill();
    for port in [pa, pb] {
        let (st, v) = pop_verify(port, &proof(&sock));
        assert_eq!(st, 503, "{v}");
        assert_eq!(
            v["type"], "urn:cada:problem:replay-store-unavailable",
            "{v}"
        );
        let (st, _, _) = http_tcp(port, "GET", "/readyz", "text/plain", b"").unwrap();
        assert_eq!(st, 503);
    }
    // Redis back on the same port, empty (no persistence): the instances recover by
    // themselves. Having met the store before, they see its epoch sentinel gone and refuse
    // proofs issued before the new epoch plus the clock skew (`pop.store_epoch`, since the
    // store can no longer tell whether they were accepted); fresh proofs pass after that.
    let _redis2 = start_redis_on(&dir.0, rport);
    let mut ok = false;
    for _ in 0..80 {
        let (st, v) = pop_verify(pa, &proof(&sock));
        if st == 200 && v["active"] == true {
            ok = true;
            break;
        }
        let code = v["reasons"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            st == 503 || code == "pop.store_epoch",
            "while Redis comes back only 503 or pop.store_epoch: {st} {v}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(ok, "instance A did not recover after Redis came back");
}

fn audit_verify(dir: &std::path::Path) -> (i32, String) {
    let out = Command::new(bin("cada-verify"))
        .args(["audit", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn kill_dash_nine_under_load_loses_no_answered_decision() {
    let dir = TempDir::new("crash");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let policy = write_policy(&dir.0, "");
    let sock = dir.0.join("agent.sock");
    // Pre-mint proofs (one carries evidence so the verifier learns the key).
    let first = proof(&sock);
    let tokens: Vec<String> = (0..300)
        .map(|_| {
            mint(&sock, "POST", URL, None, false)["dpop"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let (mut v, port) = start_verifier(
        &dir.0,
        "v",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--audit-max-bytes",
            "65536",
        ],
    );
    assert_eq!(pop_verify(port, &first).1["active"], true);
    let tokens = std::sync::Arc::new(tokens);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let tokens = tokens.clone();
            let next = next.clone();
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                // Cycle through the proofs until the verifier dies: repeats are answered as
                // replays, which are decisions too and must be in the log as well.
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % tokens.len();
                    let body = json!({"dpop": tokens[i], "method": "POST", "url": URL});
                    match http_tcp(
                        port,
                        "POST",
                        "/v1/pop/verify",
                        "application/json",
                        body.to_string().as_bytes(),
                    ) {
                        Ok((200, _, b)) if b.contains("\"active\"") => answered.push(i),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                answered
            })
        })
        .collect();
    // Kill once the log has rotated at least once (a loaded machine answers fewer requests
    // per second: wait for the state, not for a fixed time), bounded by 30 s.
    let audit = dir.0.join("v-audit");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline
        && std::fs::read_dir(&audit).map(Iterator::count).unwrap_or(0) < 2
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    v.kill();
    let answered: Vec<usize> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        answered.len() > 20,
        "the load ran before the kill: {}",
        answered.len()
    );
    // Restart on the same log: it verifies (a torn tail, if any, is cut) and holds every answer.
    let (_v2, port2) = start_verifier(
        &dir.0,
        "v",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--audit-max-bytes",
            "65536",
        ],
    );
    let (code, out) = audit_verify(&audit);
    assert_eq!(code, 0, "{out}");
    let lines = audit_records(&audit);
    assert!(
        lines.len() > answered.len(),
        "{} audit lines for {} answered requests (+1 before the load)",
        lines.len(),
        answered.len()
    );
    let logged: std::collections::HashSet<String> = lines
        .iter()
        .filter_map(|l| l["jti"].as_str().map(str::to_owned))
        .collect();
    for i in &answered {
        let claims = tokens[*i].split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&cada_protocol::b64::decode("c", claims, 8192).unwrap())
                .unwrap();
        assert!(
            logged.contains(claims["jti"].as_str().unwrap()),
            "answered request {i} is not in the audit log"
        );
    }
    assert!(
        std::fs::read_dir(&audit).unwrap().count() > 1,
        "the log rotated"
    );
    // The restarted instance keeps appending to the same chain.
    assert_eq!(pop_verify(port2, &proof(&sock)).1["active"], true);
    assert_eq!(audit_verify(&audit).0, 0);

    // Editing, deleting or reordering any line is detected.
    let mut files: Vec<_> = std::fs::read_dir(&audit)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let target = &files[0];
    let orig = std::fs::read_to_string(target).unwrap();
    let ls: Vec<&str> = orig.lines().collect();
    let edited = orig.replacen("\"accept\"", "\"reject\"", 1);
    let deleted: String = ls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let mut sw = ls.clone();
    sw.swap(3, 4);
    let reordered: String = sw.iter().map(|l| format!("{l}\n")).collect();
    for (what, text) in [
        ("edit", edited),
        ("delete", deleted),
        ("reorder", reordered),
    ] {
        std::fs::write(target, text).unwrap();
        let (code, out) = audit_verify(&audit);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains("BROKEN"), "{what}: {out}");
    }
    std::fs::write(target, orig).unwrap();
    assert_eq!(audit_verify(&audit).0, 0);
}

#[test]
fn bad_input_gets_its_documented_4xx_and_the_instance_keeps_serving() {
    let dir = TempDir::new("badinput");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let policy = write_policy(&dir.0, "");
    let (_v, port) = start_verifier(&dir.0, "v", &["--policy", policy.to_str().unwrap()]);
    let sock = dir.0.join("agent.sock");
    let good = proof(&sock);
    let post = |ct: &str, body: &[u8]| http_tcp(port, "POST", "/v1/pop/verify", ct, body).unwrap();
    let problem = |(st, h, b): (u16, String, String)| {
        assert!(
            h.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{h}"
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        (st, v["type"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        problem(post("application/json", b"{not json")),
        (400, "urn:cada:problem:malformed-json".into())
    );
    assert_eq!(
        problem(post("application/json", b"[]")),
        (400, "urn:cada:problem:malformed-json".into())
    );
    assert_eq!(
        problem(post("application/json", &vec![b' '; 1 << 20])),
        (413, "urn:cada:problem:body-too-large".into())
    );
    assert_eq!(
        problem(post("text/plain", good.to_string().as_bytes())),
        (415, "urn:cada:problem:unsupported-media-type".into())
    );
    let mut bad = good.clone();
    bad["evidence"] = "***not base64***".into();
    assert_eq!(
        problem(post("application/json", bad.to_string().as_bytes())),
        (400, "urn:cada:problem:invalid-evidence".into())
    );
    // Evidence of the wrong platform: sim evidence relabelled as nitro, and as sev-snp.
    let env =
        cada_protocol::envelope::EvidenceEnvelope::from_header(good["evidence"].as_str().unwrap())
            .unwrap();
    for platform in [
        cada_protocol::envelope::Platform::Nitro,
        cada_protocol::envelope::Platform::SevSnp,
    ] {
        let mut e = env.clone();
        e.platform = platform;
        let mut b = good.clone();
        b["evidence"] = e.to_header().into();
        assert_eq!(
            problem(post("application/json", b.to_string().as_bytes())),
            (400, "urn:cada:problem:evidence.platform_mismatch".into())
        );
    }
    let (st, _, _) = http_tcp(port, "GET", "/v1/nope", "text/plain", b"").unwrap();
    assert_eq!(st, 404);
    // A relative request URL is a bad request, not an inactive token.
    let mut rel = good.clone();
    rel["url"] = "/v1/orders".into();
    assert_eq!(
        problem(post("application/json", rel.to_string().as_bytes())),
        (400, "urn:cada:problem:request.url".into())
    );
    // A proof refusal is 401 with a DPoP challenge that says why.
    let mut other = good.clone();
    other["method"] = "DELETE".into();
    let (st, h, b) = post("application/json", other.to_string().as_bytes());
    assert_eq!(st, 401, "{b}");
    let www = h
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:"))
        .expect("WWW-Authenticate");
    assert!(www.contains("DPoP error=\"invalid_dpop_proof\""), "{www}");
    assert!(www.contains("error_description=\"[pop.htm]"), "{www}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (v["code"].as_str(), v["active"].as_bool()),
        (Some("pop.htm"), Some(false)),
        "{v}"
    );
    // Still serving: the good proof verifies.
    assert_eq!(pop_verify(port, &good).1["active"], true);
    // Per-client rate: a second instance allowing 3 requests/s answers the rest 429.
    let (_limited, lport) = start_verifier(
        &dir.0,
        "limited",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--rate-per-client",
            "3",
        ],
    );
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            http_tcp(lport, "POST", "/v1/pop/verify", "application/json", b"{}")
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "{statuses:?}"
    );
    let (st, _, m) = http_tcp(port, "GET", "/metrics", "text/plain", b"").unwrap();
    assert_eq!(st, 200);
    assert!(
        m.contains("cada_verify_requests_total{endpoint=\"pop\",status=\"415\"} 1"),
        "{m}"
    );
}

#[test]
fn policy_reload_audiences_nonces_and_evidence_endpoint() {
    let dir = TempDir::new("reload");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let sock = dir.0.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let pcr0 = sim_pcr0(&dir.0);
    let wrong = "ab".repeat(48);
    let aud = |v: &str| {
        format!("[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{wrong}\" }}, {{ PCR0 = \"{v}\" }}]\n")
    };
    let policy = write_policy(&dir.0, &aud(&wrong));
    let (v, port) = start_verifier(&dir.0, "v", &["--policy", policy.to_str().unwrap()]);
    let (_, r) = pop_verify(port, &proof(&sock));
    assert_eq!(r["reasons"][0]["code"], "policy.measurements", "{r}");
    // The right image is added beside the old one (a roll-out): reload on SIGHUP.
    write_policy(&dir.0, &aud(&pcr0));
    Command::new("kill")
        .args(["-HUP", &v.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pop_verify(port, &proof(&sock)).1["active"], true);
    // A broken file keeps the previous policy.
    std::fs::write(&policy, "this is = not toml [").unwrap();
    Command::new("kill")
        .args(["-HUP", &v.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pop_verify(port, &proof(&sock)).1["active"], true);
    let (_, _, m) = http_tcp(port, "GET", "/metrics", "text/plain", b"").unwrap();
    assert!(
        m.contains("cada_verify_policy_reloads_total{result=\"error\"}"),
        "{m}"
    );
    // Nonces required: a proof without one is answered use_dpop_nonce with a fresh nonce.
    write_policy(&dir.0, "[token]\nrequire_nonce = true\n");
    Command::new("kill")
        .args(["-HUP", &v.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (st, h, b) = http_tcp(
        port,
        "POST",
        "/v1/pop/verify",
        "application/json",
        proof(&sock).to_string().as_bytes(),
    )
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (st, r["error"].as_str()),
        (401, Some("use_dpop_nonce")),
        "{r}"
    );
    let nonce = h
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("dpop-nonce:")
                .then(|| l[11..].trim().to_owned())
        })
        .expect("DPoP-Nonce header");
    let body = json!({"method": "POST", "url": URL, "nonce": nonce, "with_evidence": true});
    let (_, a) = http(
        &sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(5),
    )
    .unwrap();
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let r = pop_verify(
        port,
        &json!({"dpop": a["dpop"], "method": "POST", "url": URL, "evidence": a["evidence"]}),
    )
    .1;
    assert_eq!(r["active"], true, "{r}");
    // Evidence endpoint, with a verifier nonce.
    let (_, ev) = http(
        &sock,
        "GET",
        "/v1/evidence?nonce=0a0b0c",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    let body = json!({"evidence": ev["evidence"], "nonce": "0a0b0c"});
    let (st, _, b) = http_tcp(
        port,
        "POST",
        "/v1/evidence/verify",
        "application/json",
        body.to_string().as_bytes(),
    )
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!((st, r["valid"].as_bool()), (200, Some(true)), "{r}");
    assert_eq!(r["jkt"], id["jkt"]);
    let body = json!({"evidence": ev["evidence"], "nonce": "ffff"});
    let (_, _, b) = http_tcp(
        port,
        "POST",
        "/v1/evidence/verify",
        "application/json",
        body.to_string().as_bytes(),
    )
    .unwrap();
    let r: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(r["reasons"][0]["code"], "policy.nonce", "{r}");
}

#[test]
fn a_verifier_that_trusts_no_image_refuses_to_start() {
    let dir = TempDir::new("failclosed");
    let policy = dir.0.join("empty.toml");
    std::fs::write(&policy, "[token]\nskew_secs = 5\n").unwrap();
    for args in [
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--policy",
            policy.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(bin("cada-verify"))
            .args(&args)
            .arg("--audit-dir")
            .arg(dir.0.join("audit"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("allows no image"), "{err}");
        assert!(err.contains("--allow-any-measurement"), "{err}");
    }
}

/// `cada-verify evidence` decides with the same policy file as `serve`: the sim root comes
/// from `[roots]`, `--audience` applies the audience rules, and each refusal names its rule.
#[test]
fn evidence_subcommand_uses_the_policy_and_its_audiences() {
    let dir = TempDir::new("evidence-cli");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let policy = write_policy(&dir.0, "");
    let ev = dir.0.join("evidence.b64");
    let a = mint(&dir.0.join("agent.sock"), "POST", URL, None, true);
    std::fs::write(&ev, a["evidence"].as_str().unwrap()).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(bin("cada-verify"))
            .arg("evidence")
            .arg(&ev)
            .args(extra)
            .arg("--json")
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), v)
    };
    let p = policy.to_str().unwrap();

    // Under the policy: valid, and admitted for the audience by its PCR0 set.
    let (code, v) = run(&["--policy", p, "--audience", URL]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["admission"]["rule"], "audience", "{v}");
    assert_eq!(
        v["admission"]["audience"], "https://api.example.com/",
        "{v}"
    );

    // Without the policy the sim root is not trusted: rule 4 refuses the chain.
    let (code, v) = run(&[]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(
        (v["valid"].as_bool(), v["rule"].as_u64()),
        (Some(false), Some(4)),
        "{v}"
    );
    assert!(
        v["errors"][0]["code"]
            .as_str()
            .unwrap()
            .starts_with("chain."),
        "{v}"
    );

    // A URL no audience covers: rule 11; a look-alike origin is not the audience.
    for url in [
        "https://other.example.com/x",
        "https://api.example.com.evil.net/v1/orders",
    ] {
        let (code, v) = run(&["--policy", p, "--audience", url]);
        assert_eq!(code, Some(1), "{url}: {v}");
        assert_eq!(v["errors"][0]["code"], "policy.audience", "{url}: {v}");
        assert_eq!(v["rule"], 11, "{v}");
    }
    // A relative URL is a bad request: rule 1.
    let (_, v) = run(&["--policy", p, "--audience", "/v1/orders"]);
    assert_eq!(v["errors"][0]["code"], "request.url", "{v}");

    // An audience whose only set names another image: rule 12.
    let other = write_policy(
        &dir.0,
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            "00".repeat(48)
        ),
    );
    let (code, v) = run(&["--policy", other.to_str().unwrap(), "--audience", URL]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["errors"][0]["code"], "policy.measurements", "{v}");

    // A nonce the evidence does not carry.
    let (code, v) = run(&["--policy", p, "--nonce", "0badc0de"]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["rule"], 4, "{v}");
}

/// `--allow-any-measurement` is loud in metrics: a gauge while it is in force and every
/// accept it admits counted apart; the listener's connection counters are exported too.
#[test]
fn allow_any_measurement_and_connections_show_in_metrics() {
    let dir = TempDir::new("any-metrics");
    let _e = start_enclave(&dir.0, &[]);
    let _p = start_parent(&dir.0, &[]);
    let root = dir.0.join("state/sim-root.der");
    let policy = dir.0.join("roots-only.toml");
    std::fs::write(
        &policy,
        format!("[roots]\nnitro = [{:?}]\n", root.display().to_string()),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let (_v, port) = start_verifier(&dir.0, "v", &["--policy", p, "--allow-any-measurement"]);
    let (st, r) = pop_verify(port, &proof(&dir.0.join("agent.sock")));
    assert_eq!((st, r["active"].as_bool()), (200, Some(true)), "{r}");
    let (_, _, m) = http_tcp(port, "GET", "/metrics", "text/plain", b"").unwrap();
    assert!(m.contains("cada_verify_allow_any_measurement 1"), "{m}");
    assert!(
        m.contains("cada_verify_decisions_total{endpoint=\"pop\",decision=\"accept\",reason=\"any_measurement\"} 1"),
        "{m}"
    );
    let accepted: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("cada_verify_connections_accepted_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connection counter in {m}"));
    assert!(accepted >= 2, "{m}");

    // Without the flag the same policy trusts no image: serve refuses to start.
    let out = Command::new(bin("cada-verify"))
        .args(["serve", "--listen", "127.0.0.1:0", "--policy", p])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// Issue 21 item 5, at `cada-verify serve`: where owners' contracts govern tools, a resource
/// server trusting `active` ran whatever body it held — a proof naming no calls was
/// accepted with the digest of a `delete_all` body, which the contract does not grant. Now
/// the endpoint reads the calls from the `body` it is sent (rules 6 and 13), or, sent only
/// a digest (or nothing), needs a proof that names the body's digest and calls, as forward
/// auth does (`pop.calls_required`).
#[test]
fn where_contracts_govern_tools_active_covers_the_calls_or_the_proof_is_refused() {
    use cada_e2e::mcp_interop::LockedAgent;
    use cada_protocol::mcp;
    const ECHO: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}"#;
    const DELETE: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#;
    let dir = TempDir::new("verify-calls");
    let d = &dir.0;
    let agent = LockedAgent::start(d, &[]);
    agent.grant(
        d,
        &[
            "--audience",
            "https://api.example.com/",
            "--method",
            "POST",
            "--tool",
            "echo",
        ],
    );
    let policy = write_policy(
        d,
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n",
            agent.pcr0, agent.owner_did
        ),
    );
    let (_v, port) = start_verifier(d, "v", &["--policy", policy.to_str().unwrap()]);
    let url = "https://api.example.com/mcp";
    // A proof from the daemon: bound to `body` (cada.bd) and naming `calls` (cada.mcp) when
    // given; the enclave signs only calls its contract grants.
    let ask = |body: Option<&str>, calls: &[&str]| {
        let mut q = json!({"method": "POST", "url": url, "with_evidence": true});
        if let Some(b) = body {
            q["bd"] = mcp::body_digest(b.as_bytes()).into();
        }
        q["mcp"] = calls
            .iter()
            .map(|t| json!({"method": "tools/call", "target": t}))
            .collect();
        let (st, text) = http(
            &agent.sock,
            "POST",
            "/v1/pop",
            Some(&q.to_string()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(st, 200, "{text}");
        let a: serde_json::Value = serde_json::from_str(&text).unwrap();
        json!({"dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"],
            "contract": a["contract"]})
    };
    let verify = |mut q: serde_json::Value, extra: serde_json::Value| {
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        let (st, r) = pop_verify(port, &q);
        (st, r["code"].as_str().unwrap_or("").to_owned(), r)
    };
    let digest = |b: &str| mcp::body_digest(b.as_bytes());

    // The issue's request: the digest of a delete_all body, a proof naming no calls.
    let (st, code, r) = verify(ask(None, &[]), json!({"body_digest": digest(DELETE)}));
    assert_eq!((st, code.as_str()), (401, "pop.calls_required"), "{r}");
    assert_eq!(r["active"], false, "{r}");
    // Nothing said of the body at all.
    let (st, code, r) = verify(ask(None, &[]), json!({}));
    assert_eq!((st, code.as_str()), (401, "pop.calls_required"), "{r}");
    // A proof bound to the body's digest but naming none of its calls.
    let (st, code, r) = verify(ask(Some(ECHO), &[]), json!({"body_digest": digest(ECHO)}));
    assert_eq!((st, code.as_str()), (401, "pop.calls_required"), "{r}");

    // Sent the body, the endpoint reads its calls: the ungranted one is refused by the
    // contract, the granted one accepted, whatever the proof names.
    let (st, code, r) = verify(ask(None, &[]), json!({"body": DELETE}));
    assert_eq!(
        (st, code.as_str()),
        (403, "contract.not_permitted.tool"),
        "{r}"
    );
    let (st, _, r) = verify(ask(None, &[]), json!({"body": ECHO}));
    assert_eq!((st, r["active"].as_bool()), (200, Some(true)), "{r}");
    // A proof for the echo body does not cover the delete_all body sent with it.
    let (st, code, r) = verify(ask(Some(ECHO), &["echo"]), json!({"body": DELETE}));
    assert_eq!((st, code.as_str()), (401, "pop.body"), "{r}");

    // Sent only the digest, a proof naming the body's digest and calls passes; the answer
    // names the calls the grants were checked against.
    let (st, _, r) = verify(
        ask(Some(ECHO), &["echo"]),
        json!({"body_digest": digest(ECHO)}),
    );
    assert_eq!((st, r["active"].as_bool()), (200, Some(true)), "{r}");
    assert_eq!(r["cada"]["mcp"][0]["target"], "echo", "{r}");
    let (st, code, r) = verify(
        ask(Some(ECHO), &["echo"]),
        json!({"body_digest": digest(DELETE)}),
    );
    assert_eq!((st, code.as_str()), (401, "pop.body"), "{r}");

    // A request without a body makes no calls: an empty body, or its digest, suffices.
    for extra in [json!({"body": ""}), json!({"body_digest": digest("")})] {
        let (st, _, r) = verify(ask(None, &[]), extra.clone());
        assert_eq!(
            (st, r["active"].as_bool()),
            (200, Some(true)),
            "{extra} {r}"
        );
    }
    let (st, _, r) = verify(ask(Some(""), &[]), json!({"body_digest": digest("")}));
    assert_eq!((st, r["active"].as_bool()), (200, Some(true)), "{r}");

    // A body the verifier cannot read as JSON-RPC, or a digest that is not the body's.
    let (st, code, r) = verify(ask(None, &[]), json!({"body": "{\"jsonrpc\":"}));
    assert_eq!((st, code.as_str()), (400, "request.jsonrpc"), "{r}");
    let (st, code, r) = verify(
        ask(None, &[]),
        json!({"body": ECHO, "body_digest": digest(DELETE)}),
    );
    assert_eq!((st, code.as_str()), (400, "request.body_digest"), "{r}");

    // A REST resource server (not MCP) says so: its body is bound by digest, not read
    // as JSON-RPC, and the proof need not name calls; a wrong digest is still refused.
    let rest = r#"{"amount":500,"to":"alice"}"#;
    let (st, _, r) = verify(ask(Some(rest), &[]), json!({"body": rest, "mcp": false}));
    assert_eq!((st, r["active"].as_bool()), (200, Some(true)), "{r}");
    let (st, code, r) = verify(
        ask(Some(rest), &[]),
        json!({"body_digest": digest(DELETE), "mcp": false}),
    );
    assert_eq!((st, code.as_str()), (401, "pop.body"), "{r}");

    // `cada-verify pop` gives the same answers (`--body`, `--body-digest`).
    let cli = |extra: &[&str]| {
        let q = ask(None, &[]);
        let s = |k: &str| q[k].as_str().unwrap().to_owned();
        let (dpop, evidence, contract) = (s("dpop"), s("evidence"), s("contract"));
        let mut args = vec![
            "pop",
            "--policy",
            policy.to_str().unwrap(),
            "--method",
            "POST",
            "--url",
            url,
            "--dpop",
            &dpop,
            "--evidence",
            &evidence,
            "--contract",
            &contract,
        ];
        args.extend_from_slice(extra);
        let out = Command::new(bin("cada-verify"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let delete_digest = digest(DELETE);
    for extra in [&["--body-digest", delete_digest.as_str()][..], &[]] {
        let (code, out) = cli(extra);
        assert_eq!(code, Some(1), "{extra:?} {out}");
        assert!(out.contains("REJECTED [pop.calls_required]"), "{out}");
    }
    let (code, out) = cli(&["--body", DELETE]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("REJECTED [contract.not_permitted.tool]"),
        "{out}"
    );
    let (code, out) = cli(&["--body", ECHO]);
    assert_eq!(code, Some(0), "{out}");
}
