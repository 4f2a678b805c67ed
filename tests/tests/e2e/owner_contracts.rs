//! The owner's story end to end with the real binaries (`cada-owner`, `cada-enclave`,
//! `cada-parent`) on `sim` and `sim-snp`: lock the enclave to an owner, install contracts,
//! sign only inside them (each proof names its contract), refuse everything else with the
//! rule's code, revoke through a status list.
use std::path::Path;
use std::time::Duration;

use cada_attestation_verifier::UnixTime;
use cada_e2e::*;
use cada_protocol::envelope::EvidenceEnvelope;

fn pop(sock: &Path, method: &str, url: &str) -> (u16, serde_json::Value) {
    let body = serde_json::json!({"method": method, "url": url, "with_evidence": true});
    let (st, text) = http(
        sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    (
        st,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// The problem code and detail of a refusal.
fn refusal(answer: &serde_json::Value) -> (String, String) {
    (
        answer["type"]
            .as_str()
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
        answer["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn an_owner_locks_grants_and_revokes_on_sim_and_sim_snp() {
    for platform in ["sim", "sim-snp"] {
        let dir = TempDir::new(&format!("owner-{platform}"));
        let d = &dir.0;
        let _enclave = start_enclave_on(d, platform, &[]);
        let _parent = start_parent(d, &[]);
        let sock = d.join("agent.sock");
        let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
        let id: serde_json::Value = serde_json::from_str(&id).unwrap();
        let enclave_did = id["did"].as_str().unwrap().to_owned();
        assert!(id["owner"].is_null(), "{id}");

        // Unlocked: the boot flags alone decide, proofs name no contract.
        let (st, a) = pop(&sock, "GET", "https://api.example.com/v1/items");
        assert_eq!(st, 200, "{a}");
        assert!(a.get("dtc").is_none(), "{a}");

        // The owner locks the enclave; the new evidence's binding names the owner.
        let (owner_did, key) = keygen(d, "owner");
        let (mallory_did, mallory_key) = keygen(d, "mallory");
        owner_to(
            d,
            "lock.jwt",
            &["lock", "--key", &key, "--enclave", &enclave_did],
        );
        let lock = d.join("lock.jwt");
        let (code, out, err) = parent(&sock, &["owner", "lock", lock.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let locked: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(locked["owner"], owner_did.as_str());
        let env = EvidenceEnvelope::from_header(locked["evidence"].as_str().unwrap()).unwrap();
        let root = std::fs::read(d.join(format!("state/{platform}-root.der"))).unwrap();
        let attested = verifier_trusting(&[root], test_pop_config())
            .verify_evidence(&env, None, UnixTime::now())
            .expect("the locked evidence verifies");
        assert_eq!(attested.owner.as_deref(), Some(owner_did.as_str()));
        assert_eq!(attested.did, enclave_did);

        // A second lock, by anyone, is refused.
        owner_to(
            d,
            "lock2.jwt",
            &["lock", "--key", &mallory_key, "--enclave", &enclave_did],
        );
        let (code, _, err) = parent(
            &sock,
            &["owner", "lock", d.join("lock2.jwt").to_str().unwrap()],
        );
        assert_eq!(code, 1);
        assert!(
            err.contains("contract-denied") && err.contains("contract.lock"),
            "{err}"
        );

        // Locked, no contract: nothing is signed.
        let (st, a) = pop(&sock, "GET", "https://api.example.com/v1/items");
        assert_eq!(st, 403, "{a}");
        let (code, detail) = refusal(&a);
        assert_eq!(code, "contract-denied");
        assert!(detail.starts_with("contract.none"), "{detail}");

        // A contract of the owner for this key.
        let grant = |file: &str, k: &str, subject: &str, extra: &[&str]| {
            let mut args = vec![
                "grant",
                "--key",
                k,
                "--subject",
                subject,
                "--audience",
                "https://api.example.com/v1",
                "--method",
                "GET",
                "--valid-for",
                "1h",
            ];
            args.extend_from_slice(extra);
            owner_to(d, file, &args)
        };
        let contract = grant("contract.jwt", &key, &enclave_did, &["--no-revocation"]);
        let (code, out, err) = parent(
            &sock,
            &[
                "contract",
                "install",
                d.join("contract.jwt").to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        let installed: serde_json::Value = serde_json::from_str(&out).unwrap();
        let dtc = cada_contract::digest_of(&contract);
        assert_eq!(installed["digest"], dtc.as_str());

        let (st, a) = pop(&sock, "GET", "https://api.example.com/v1/items");
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["dtc"], dtc.as_str());
        // The daemon hands the contract out with the evidence, for servers that lack it.
        assert_eq!(a["contract"], contract.as_str());
        let claims = a["dpop"]
            .as_str()
            .unwrap()
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let claims: serde_json::Value =
            serde_json::from_slice(&cada_protocol::b64::decode("claims", &claims, 4096).unwrap())
                .unwrap();
        assert_eq!(claims["cada"]["dtc"], dtc.as_str());

        // Outside the contract, each refusal names its rule.
        for (method, url, want) in [
            (
                "GET",
                "https://api.example.com.evil.net/v1/x",
                "contract.not_permitted.audience",
            ),
            (
                "GET",
                "https://api.example.com/v10",
                "contract.not_permitted.audience",
            ),
            (
                "DELETE",
                "https://api.example.com/v1/items",
                "contract.not_permitted.method",
            ),
        ] {
            let (st, a) = pop(&sock, method, url);
            assert_eq!(st, 403, "{url}: {a}");
            assert!(refusal(&a).1.starts_with(want), "{url}: {a}");
        }
        let (st, a) = pop(&sock, "GET", "https://api.example.com@evil.net/v1/x");
        assert_eq!((st, refusal(&a).0.as_str()), (400, "bad-request"), "{a}");

        // Contracts the enclave refuses at install, each with its code.
        grant(
            "mallory.jwt",
            &mallory_key,
            &enclave_did,
            &["--no-revocation"],
        );
        let (_, other, _) = owner(&["keygen", "--out", d.join("k3").to_str().unwrap()]);
        let other_did = other.lines().last().unwrap().trim().to_owned();
        grant("other-key.jwt", &key, &other_did, &["--no-revocation"]);
        for (file, want) in [
            ("mallory.jwt", "contract.untrusted_owner"),
            ("other-key.jwt", "contract.subject"),
        ] {
            let (code, _, err) = parent(
                &sock,
                &["contract", "install", d.join(file).to_str().unwrap()],
            );
            assert_eq!(code, 1, "{file}");
            assert!(err.contains(want), "{file}: {err}");
        }
        assert!(!mallory_did.is_empty());

        // Revocation: a contract with a status entry lives only with its owner's list.
        let url = "https://owner.example/status/1";
        owner_to(
            d,
            "status.jwt",
            &["status-list", "new", "--key", &key, "--url", url],
        );
        grant(
            "revocable.jwt",
            &key,
            &enclave_did,
            &[
                "--audience",
                "https://docs.example.com/",
                "--status-list",
                url,
                "--status-index",
                "3",
            ],
        );
        let revocable = d.join("revocable.jwt");
        let (code, _, err) = parent(&sock, &["contract", "install", revocable.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(err.contains("contract.status_stale"), "{err}");
        let status = d.join("status.jwt");
        let (code, _, err) = parent(
            &sock,
            &[
                "contract",
                "install",
                revocable.to_str().unwrap(),
                "--status-list",
                status.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(pop(&sock, "GET", "https://docs.example.com/a").0, 200);
        owner_to(
            d,
            "status2.jwt",
            &[
                "revoke",
                "--key",
                &key,
                "--list",
                status.to_str().unwrap(),
                "--index",
                "3",
            ],
        );
        let status2 = d.join("status2.jwt");
        let (code, _, err) = parent(
            &sock,
            &[
                "contract",
                "install",
                revocable.to_str().unwrap(),
                "--status-list",
                status2.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1);
        assert!(err.contains("contract.revoked"), "{err}");
        let (st, a) = pop(&sock, "GET", "https://docs.example.com/a");
        assert_eq!(st, 403, "{a}");
        // The host installs it again with the older, unrevoked list (issue 21, item 9): the
        // enclave remembers the newest list of that URL for its key's life and refuses.
        let (code, _, err) = parent(
            &sock,
            &[
                "contract",
                "install",
                revocable.to_str().unwrap(),
                "--status-list",
                status.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("contract.status_rollback"), "{err}");
        let (st, a) = pop(&sock, "GET", "https://docs.example.com/a");
        assert_eq!(st, 403, "{a}");
        // The first contract is untouched.
        assert_eq!(pop(&sock, "GET", "https://api.example.com/v1/items").0, 200);

        // The owner, the contracts and the chain's authority events are visible.
        let (code, out, err) = parent(&sock, &["contract", "list"]);
        assert_eq!(code, 0, "{err}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(list["owner"], owner_did.as_str());
        assert_eq!(list["contracts"].as_array().unwrap().len(), 1, "{list}");
        let kinds: Vec<&str> = list["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds.first(), Some(&"lock"), "{kinds:?}");
        assert!(
            kinds.contains(&"install") && kinds.contains(&"refusal"),
            "{kinds:?}"
        );
        let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
        let id: serde_json::Value = serde_json::from_str(&id).unwrap();
        assert_eq!(id["owner"], owner_did.as_str());
        assert_eq!(id["contracts"]["href"], "/v1/contracts");
    }
}

fn code_of(answer: &serde_json::Value) -> String {
    answer["reasons"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn verifiers_check_the_contract_and_follow_the_owners_status_list() {
    for platform in ["sim", "sim-snp"] {
        contract_and_status_list_at_the_verifier(platform);
    }
}

fn contract_and_status_list_at_the_verifier(platform: &str) {
    let dir = TempDir::new(&format!("owner-verify-{platform}"));
    let d = &dir.0;
    let _enclave = start_enclave_on(d, platform, &[]);
    let _parent = start_parent(d, &[]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let enclave_did = id["did"].as_str().unwrap().to_owned();
    // The image: PCR0 on the Nitro format, MEASUREMENT on SEV-SNP; the root goes to its
    // platform's store, and SEV-SNP evidence is kept fresh by first sighting here.
    let (measurement, roots) = if platform == "sim" {
        (
            format!(
                "PCR0 = \"{}\"",
                id["measurements"]["PCR0"].as_str().unwrap()
            ),
            format!(
                "[roots]\nnitro = [{:?}]\n",
                d.join("state/sim-root.der").display().to_string()
            ),
        )
    } else {
        (
            format!(
                "MEASUREMENT = \"{}\"",
                id["measurements"]["MEASUREMENT"].as_str().unwrap()
            ),
            format!(
                "[roots]\nsev_snp = [{:?}]\n[snp]\nfreshness = \"first_seen\"\n",
                d.join("state/sim-snp-root.der").display().to_string()
            ),
        )
    };

    let (owner_did, key) = keygen(d, "owner");
    let (_, mallory_key) = keygen(d, "mallory");
    owner_to(
        d,
        "lock.jwt",
        &["lock", "--key", &key, "--enclave", &enclave_did],
    );
    assert_eq!(
        parent(
            &sock,
            &["owner", "lock", d.join("lock.jwt").to_str().unwrap()]
        )
        .0,
        0
    );

    // The owner publishes a status list on a loopback server: over HTTPS for the Nitro
    // format (its certificate from a CA the verifiers are given with --fetch-ca), over
    // plain HTTP (allowed to loopback only) for SEV-SNP.
    let published = d.join("published.jwt");
    let (list_url, fetch_ca) = if platform == "sim" {
        let ca = cada_net::test_tls::loopback_ca();
        let ca_file = d.join("status-ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let port = serve_status_file(published.clone(), Some(ca.server));
        (
            format!("https://localhost:{port}/status/1"),
            vec![
                "--fetch-ca".to_owned(),
                ca_file.to_str().unwrap().to_owned(),
            ],
        )
    } else {
        let port = serve_status_file(published.clone(), None);
        (format!("http://127.0.0.1:{port}/status/1"), vec![])
    };
    owner_to(
        d,
        "status.jwt",
        &["status-list", "new", "--key", &key, "--url", &list_url],
    );
    std::fs::copy(d.join("status.jwt"), &published).unwrap();
    let url = "https://api.example.com/v1/orders";
    let contract = owner_to(
        d,
        "contract.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &enclave_did,
            "--audience",
            "https://api.example.com/v1",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--status-list",
            &list_url,
            "--status-index",
            "5",
        ],
    );
    let (code, _, err) = parent(
        &sock,
        &[
            "contract",
            "install",
            d.join("contract.jwt").to_str().unwrap(),
            "--status-list",
            d.join("status.jwt").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");

    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "{roots}[contracts]\nstatus_max_staleness_secs = 4\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ {measurement} }}]\nowners = [\"{owner_did}\"]\n"
        ),
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    // A knows the list from the start; B learns it from the first contract it sees.
    let fetch_ca: Vec<&str> = fetch_ca.iter().map(String::as_str).collect();
    let (_a, port_a) = start_verifier(
        d,
        "va",
        &[
            &[
                "--policy",
                p,
                "--status-refresh",
                "1",
                "--status-list",
                &list_url,
            ],
            &fetch_ca[..],
        ]
        .concat(),
    );
    let (_b, port_b) = start_verifier(
        d,
        "vb",
        &[&["--policy", p, "--status-refresh", "1"], &fetch_ca[..]].concat(),
    );
    std::thread::sleep(Duration::from_millis(1500));

    let proof = |with_contract: Option<&str>| {
        let a = mint(&sock, "POST", url, None, true);
        // The request has no body (`body: ""`): the verifier knows it makes no MCP calls.
        let mut body = serde_json::json!({
            "dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"],
            "body": "",
        });
        if let Some(c) = with_contract {
            body["contract"] = c.into();
        }
        body
    };
    let (st, r) = pop_verify(port_a, &proof(Some(&contract)));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["owner"], owner_did.as_str());
    assert_eq!(
        r["contract"]["digest"],
        cada_contract::digest_of(&contract).as_str()
    );
    assert_eq!(
        r["cada"]["dtc"],
        cada_contract::digest_of(&contract).as_str()
    );
    // Sent once: known by digest afterwards.
    assert_eq!(pop_verify(port_a, &proof(None)).0, 200);
    // Without the contract on a server that never saw it: asked for.
    let (st, r) = pop_verify(port_b, &proof(None));
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.required"),
        "{r}"
    );
    // B has no list yet: fails closed, then fetches the list the contract names.
    let (st, r) = pop_verify(port_b, &proof(Some(&contract)));
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.status_stale"),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let (st, r) = pop_verify(port_b, &proof(Some(&contract)));
    assert_eq!(st, 200, "B after fetching the list: {r}");
    // Another contract than the one the proof names.
    let other = owner_to(
        d,
        "other.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &enclave_did,
            "--audience",
            "https://api.example.com/v1",
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (st, r) = pop_verify(port_a, &proof(Some(&other)));
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.dtc_mismatch"),
        "{r}"
    );

    // The owner revokes: both verifiers refuse within the refresh interval.
    owner_to(
        d,
        "revoked.jwt",
        &[
            "revoke",
            "--key",
            &key,
            "--list",
            d.join("status.jwt").to_str().unwrap(),
            "--index",
            "5",
        ],
    );
    std::fs::copy(d.join("revoked.jwt"), &published).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    for port in [port_a, port_b] {
        let (st, r) = pop_verify(port, &proof(None));
        assert_eq!((st, code_of(&r).as_str()), (401, "contract.revoked"), "{r}");
    }

    // A forged list is refused on arrival; the last authentic one ages out (fail closed).
    owner_to(
        d,
        "forged.jwt",
        &[
            "status-list",
            "new",
            "--key",
            &mallory_key,
            "--url",
            &list_url,
        ],
    );
    std::fs::copy(d.join("forged.jwt"), &published).unwrap();
    std::thread::sleep(Duration::from_millis(5500));
    let (st, r) = pop_verify(port_a, &proof(None));
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.status_stale"),
        "{r}"
    );
    let (_, _, metrics) = http_tcp(port_a, "GET", "/metrics", "text/plain", b"").unwrap();
    assert!(
        metrics
            .contains("cada_verify_status_list_fetches_total{result=\"contract.status_forged\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("cada_verify_status_list_fetches_total{result=\"ok\"}"));
}

#[test]
fn a_behaviour_limit_crossed_on_one_verifier_suspends_the_contract_on_all() {
    let dir = TempDir::new("owner-fleet");
    let d = &dir.0;
    let _enclave = start_enclave(d, &[]);
    let _parent = start_parent(d, &[]);
    let (_redis, rport) = start_redis(d);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let enclave_did = id["did"].as_str().unwrap().to_owned();
    let pcr0 = id["measurements"]["PCR0"].as_str().unwrap().to_owned();
    let (owner_did, key) = keygen(d, "owner");
    let (_, mallory_key) = keygen(d, "mallory");
    owner_to(
        d,
        "lock.jwt",
        &["lock", "--key", &key, "--enclave", &enclave_did],
    );
    assert_eq!(
        parent(
            &sock,
            &["owner", "lock", d.join("lock.jwt").to_str().unwrap()]
        )
        .0,
        0
    );
    // At most 3 requests per hour and 2 refusals per hour, fleet-wide.
    let contract = owner_to(
        d,
        "contract.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &enclave_did,
            "--audience",
            "https://api.example.com/v1",
            "--method",
            "POST",
            "--valid-for",
            "1h",
            "--max-requests",
            "3/1h",
            "--max-refusals",
            "2/1h",
            "--no-revocation",
        ],
    );
    assert_eq!(
        parent(
            &sock,
            &[
                "contract",
                "install",
                d.join("contract.jwt").to_str().unwrap()
            ]
        )
        .0,
        0
    );
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\nowners = [\"{owner_did}\"]\n",
            d.join("state/sim-root.der").display().to_string()
        ),
    )
    .unwrap();
    let store = format!("redis://127.0.0.1:{rport}");
    let p = policy.to_str().unwrap();
    let (_a, port_a) = start_verifier(d, "fa", &["--policy", p, "--replay-store", &store]);
    let (_b, port_b) = start_verifier(d, "fb", &["--policy", p, "--replay-store", &store]);
    let url = "https://api.example.com/v1/orders";
    let proof = || {
        let a = mint(&sock, "POST", url, None, true);
        serde_json::json!({
            "dpop": a["dpop"], "method": "POST", "url": url, "evidence": a["evidence"],
            "contract": contract, "body": "",
        })
    };
    // Three requests spread over both instances: within the limit.
    for port in [port_a, port_b, port_a] {
        let (st, r) = pop_verify(port, &proof());
        assert_eq!(st, 200, "{r}");
    }
    // The fourth, on B, crosses it: refused, and the contract is suspended fleet-wide.
    let (st, r) = pop_verify(port_b, &proof());
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.not_permitted.behaviour"),
        "{r}"
    );
    let (st, r) = pop_verify(port_a, &proof());
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.not_permitted.behaviour"),
        "{r}"
    );
    assert!(
        r["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("suspended"),
        "{r}"
    );
    let (_, _, m) = http_tcp(port_b, "GET", "/metrics", "text/plain", b"").unwrap();
    assert!(
        m.contains("cada_verify_contract_suspensions_total{result=\"requests\"} 1"),
        "{m}"
    );

    // The owner learns which suspension is in force (the refusal names it too).
    let dtc = cada_contract::digest_of(&contract);
    let suspension_id = || {
        let (st, _, b) = http_tcp(
            port_b,
            "GET",
            &format!("/v1/contracts/{dtc}/suspension"),
            "application/json",
            b"",
        )
        .unwrap();
        assert_eq!(st, 200, "{b}");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        v["suspension"]["id"].as_str().unwrap().to_owned()
    };
    let first = suspension_id();
    assert!(
        r["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("--suspension {first}")),
        "{r}"
    );
    // Only the owner lifts it.
    let sign = |k: &str, sid: &str| {
        owner_to(
            d,
            "reinstate.jwt",
            &[
                "reinstate",
                "--key",
                k,
                "--contract",
                d.join("contract.jwt").to_str().unwrap(),
                "--suspension",
                sid,
            ],
        )
    };
    let post = |r: &str| {
        let body = serde_json::json!({ "reinstatement": r });
        http_tcp(
            port_a,
            "POST",
            "/v1/contracts/reinstate",
            "application/json",
            body.to_string().as_bytes(),
        )
        .unwrap()
    };
    let (st, _, body) = post(&sign(&mallory_key, &first));
    assert_eq!(st, 403, "{body}");
    let lifts_first = sign(&key, &first);
    let (st, _, body) = post(&lifts_first);
    assert_eq!(st, 200, "{body}");
    let (st, r) = pop_verify(port_b, &proof());
    assert_eq!(st, 200, "after reinstatement: {r}");

    // Replays are refused everywhere (pop.replay) but are not counted against the
    // contract's refusals: whoever received the proof can send it again (review
    // delegation-1, finding 3). Three replays, over the limit of 2: not suspended.
    let p = proof();
    assert_eq!(pop_verify(port_a, &p).0, 200);
    for (port, n) in [(port_b, 1), (port_a, 2), (port_b, 3)] {
        let (st, r) = pop_verify(port, &p);
        assert_eq!(
            (st, code_of(&r).as_str()),
            (401, "pop.replay"),
            "replay {n}: {r}"
        );
    }
    // Requests count: the 3rd since the reinstatement passes (the replays suspended
    // nothing), the 4th crosses the limit of 3 again: suspended a second time.
    let (st, r) = pop_verify(port_a, &proof());
    assert_eq!(st, 200, "replays counted as refusals: {r}");
    let (st, r) = pop_verify(port_b, &proof());
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.not_permitted.behaviour"),
        "{r}"
    );
    let (_, _, m) = http_tcp(port_b, "GET", "/metrics", "text/plain", b"").unwrap();
    assert!(
        m.contains("cada_verify_contract_suspensions_total{result=\"requests\"} 2"),
        "{m}"
    );

    // Suspended again: the first reinstatement, posted again (to either instance), does not
    // lift it (it lifted its suspension once), nor does a new one naming the first
    // suspension; one naming the suspension in force does.
    let second = suspension_id();
    assert_ne!(second, first);
    let (st, _, body) = post(&lifts_first);
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("contract.reinstate.replayed"), "{body}");
    let (st, r) = pop_verify(port_b, &proof());
    assert_eq!(
        (st, code_of(&r).as_str()),
        (401, "contract.not_permitted.behaviour"),
        "the replayed reinstatement lifted the second suspension: {r}"
    );
    let (st, _, body) = post(&sign(&key, &first));
    assert_eq!(st, 409, "{body}");
    assert!(
        body.contains("contract.reinstate.other_suspension"),
        "{body}"
    );
    let (st, _, body) = post(&sign(&key, &second));
    assert_eq!(st, 200, "{body}");
    let (st, r) = pop_verify(port_b, &proof());
    assert_eq!(st, 200, "after the second reinstatement: {r}");
}
