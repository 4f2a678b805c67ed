//! The real `cada-owner` binary as an owner uses it: keygen → status-list new → grant →
//! inspect → revoke → inspect, plus its refusals and exit codes.
mod common;

use common::{ok, ok_to, owner, s, workdir};

#[test]
fn keygen_grant_inspect_revoke() {
    let dir = workdir("cli-flow");
    let key_dir = dir.join("owner");
    let did = ok(&["keygen", "--out", s(&key_dir)]);
    let did = did.trim();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let key = key_dir.join("owner-key.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    }
    // keygen never overwrites a key.
    let (code, _, err) = owner(&["keygen", "--out", s(&key_dir)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("never overwrites"), "{err}");

    let agent = ok(&["keygen", "--out", s(&dir.join("agent"))]);
    let agent = agent.trim();
    let status = dir.join("status.jwt");
    ok_to(
        &status,
        &[
            "status-list",
            "new",
            "--key",
            s(&key),
            "--url",
            "https://owner.example/status/1",
        ],
    );
    let contract = dir.join("contract.jwt");
    ok_to(
        &contract,
        &[
            "grant",
            "--key",
            s(&key),
            "--subject",
            agent,
            "--audience",
            "https://api.example.com/v1",
            "--audience",
            "https://mcp.example.com",
            "--method",
            "GET",
            "--method",
            "post",
            "--scope",
            "docs:read",
            "--tool",
            "search",
            "--ctx",
            "task",
            "--budget",
            "100",
            "--rate",
            "5",
            "--audit",
            "full",
            "--max-requests",
            "600/1m",
            "--max-refusals",
            "5/5m",
            "--valid-for",
            "1h",
            "--status-list",
            "https://owner.example/status/1",
            "--status-index",
            "7",
            "--name",
            "research agent",
        ],
    );
    let jwt = std::fs::read_to_string(&contract).unwrap();
    assert_eq!(jwt.trim().split('.').count(), 3);

    let out = ok(&["inspect", s(&contract), "--status-list", s(&status)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["header"]["typ"], "vc+jwt");
    assert_eq!(
        v["header"]["kid"],
        format!("{did}#{}", &did["did:key:".len()..])
    );
    let cs = &v["credential"]["credentialSubject"];
    assert_eq!(cs["id"], agent);
    assert_eq!(cs["methods"], serde_json::json!(["GET", "POST"]));
    // Typed as `https://mcp.example.com`: one rule for a whole origin, written in normal form.
    assert_eq!(cs["audiences"][1], "https://mcp.example.com/");
    assert_eq!(cs["limits"]["requests"]["windowSeconds"], 60);
    assert_eq!(cs["limits"]["refusals"]["max"], 5);
    assert_eq!(cs["audit"], "full");
    let ver = &v["verification"];
    assert_eq!(ver["signature"], "valid");
    assert_eq!(ver["owner"], did);
    assert_eq!(ver["status"], "not revoked");
    assert_eq!(ver["dtc"].as_str().unwrap().len(), 43);
    let remaining = ver["remaining_seconds"].as_u64().unwrap();
    assert!((3590..=3600).contains(&remaining), "{remaining}");

    // Revoke index 7: the contract is refused against the new list, exit code 1.
    let status2 = dir.join("status2.jwt");
    ok_to(
        &status2,
        &[
            "revoke",
            "--key",
            s(&key),
            "--list",
            s(&status),
            "--index",
            "7",
            "--valid-for",
            "7d",
        ],
    );
    let (code, out, _) = owner(&["inspect", s(&contract), "--status-list", s(&status2)]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verification"]["error"], "contract.revoked");
    let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", s(&status2)])).unwrap();
    assert_eq!(v["verification"]["kind"], "status list");
    assert_eq!(v["verification"]["revoked"], serde_json::json!([7]));
    assert_eq!(v["verification"]["entries"], 131_072);
    assert!(v["credential"]["validUntil"].is_string());

    // Checked at a time past its validity: expired, exit 1.
    let later = (v["credential"]["nbf"].as_u64().unwrap() + 7200).to_string();
    let (code, out, _) = owner(&["inspect", s(&contract), "--at", &later]);
    assert_eq!(code, 1);
    assert!(out.contains("contract.expired"), "{out}");

    // The payload widened after signing (DELETE added), signature kept: exit 1.
    let mut parts: Vec<String> = jwt.trim().split('.').map(str::to_owned).collect();
    let body = cada_protocol::b64::decode("p", &parts[1], 1 << 16).unwrap();
    let body = String::from_utf8(body)
        .unwrap()
        .replace("\"POST\"", "\"POST\",\"DELETE\"");
    assert!(body.contains("DELETE"));
    parts[1] = cada_protocol::b64::encode(body);
    let bad = dir.join("bad.jwt");
    std::fs::write(&bad, parts.join(".")).unwrap();
    let (code, out, err) = owner(&["inspect", s(&bad)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("contract.signature"), "{out}");
}

#[test]
fn measurement_grants_and_did_web_owners() {
    let dir = workdir("cli-web");
    let did = ok(&[
        "keygen",
        "--alg",
        "es256",
        "--did-web",
        "owner.example%3A8443:teams:ml",
        "--out",
        s(&dir.join("o")),
    ]);
    assert_eq!(did.trim(), "did:web:owner.example%3A8443:teams:ml");
    let doc = dir.join("o/did.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&doc).unwrap()).unwrap();
    assert_eq!(d["id"], did.trim());
    assert_eq!(d["verificationMethod"][0]["type"], "Multikey");
    let key = dir.join("o/owner-key.json");
    let pcr0 = "AB".repeat(48);
    let contract = dir.join("c.jwt");
    ok_to(
        &contract,
        &[
            "grant",
            "--key",
            s(&key),
            "--pcr0",
            &pcr0,
            "--pcr8",
            &"00".repeat(48),
            "--audience",
            "https://api.example.com/",
            "--method",
            "GET",
            "--valid-for",
            "30m",
            "--no-revocation",
        ],
    );
    // A did:web issuer needs its document to be verified.
    let (code, out, _) = owner(&["inspect", s(&contract)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("contract.untrusted_owner"), "{out}");
    let out = ok(&["inspect", s(&contract), "--did-document", s(&doc)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verification"]["owner"], did.trim());
    assert_eq!(
        v["credential"]["credentialSubject"]["measurements"][0]["PCR0"],
        "ab".repeat(48)
    );
    assert!(v["credential"].get("credentialStatus").is_none());
}

#[test]
fn refusals_and_usage_errors() {
    let dir = workdir("cli-refusals");
    ok(&["keygen", "--out", s(&dir.join("o"))]);
    let key = dir.join("o/owner-key.json");
    let key = s(&key);
    let base = [
        "grant",
        "--key",
        key,
        "--subject",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "--method",
        "GET",
        "--valid-for",
        "1h",
        "--no-revocation",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        owner(&a)
    };
    // The prefix tricks of the issue are refused at grant time, with the code.
    let (code, _, err) = run(&["--audience", "https://api.example.com@evil.net/"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("contract.malformed") && err.contains("userinfo"),
        "{err}"
    );
    let (code, _, err) = run(&["--audience", "http://api.example.com/"]);
    assert_eq!(code, 1, "{err}");
    // Usage errors: exit 2.
    let (code, _, err) = run(&["--audience", "https://a.example/", "--max-requests", "600"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["--audience", "https://a.example/", "--budget", "x"]);
    assert_eq!(code, 2, "{err}");
    // Neither --status-list nor --no-revocation: clap refuses.
    let (code, _, err) = owner(&[
        "grant",
        "--key",
        key,
        "--subject",
        "did:key:z6Mk",
        "--audience",
        "https://a.example/",
        "--method",
        "GET",
        "--valid-for",
        "1h",
    ]);
    assert_eq!(code, 2, "{err}");
    // A corrupted key file.
    let bad = dir.join("bad-key.json");
    std::fs::write(&bad, "{\"type\":\"x\"}").unwrap();
    let (code, _, err) = owner(&[
        "status-list",
        "new",
        "--key",
        s(&bad),
        "--url",
        "https://o.example/s",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("contract.key"), "{err}");
    // Revoking with a list signed by someone else.
    ok(&["keygen", "--out", s(&dir.join("other"))]);
    let theirs = dir.join("theirs.jwt");
    common::ok_to(
        &theirs,
        &[
            "status-list",
            "new",
            "--key",
            s(&dir.join("other/owner-key.json")),
            "--url",
            "https://o.example/s",
        ],
    );
    let (code, _, err) = owner(&["revoke", "--key", key, "--list", s(&theirs), "--index", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("contract.status_forged"), "{err}");
    // --help teaches: it shows a first session.
    let help = ok(&["--help"]);
    assert!(
        help.contains("A first session") && help.contains("cada-owner grant"),
        "{help}"
    );
}

/// Issue 23: a one-transaction grant from a details file (identifiers filled in, POST by
/// default, minutes, no revocation needed), a step-up URL, and the refusals of bad files.
#[test]
fn one_transaction_grants_from_a_details_file() {
    let dir = workdir("cli-details");
    ok(&["keygen", "--out", s(&dir.join("o"))]);
    let key = dir.join("o/owner-key.json");
    let agent = ok(&["keygen", "--out", s(&dir.join("agent"))]);
    let agent = agent.trim();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/authorization-details.json"
    );
    let grant = dir.join("grant.jwt");
    ok_to(
        &grant,
        &[
            "grant",
            "--key",
            s(&key),
            "--subject",
            agent,
            "--authorization-details",
            example,
            "--minutes",
            "10",
        ],
    );
    let out = ok(&["inspect", s(&grant)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["credential"]["cadaSchema"], 2);
    let cs = &v["credential"]["credentialSubject"];
    assert_eq!(cs["methods"], serde_json::json!(["POST"]));
    assert!(cs
        .get("audiences")
        .is_none_or(|a| a == &serde_json::json!([])));
    let details = cs["authorization_details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    let ids: Vec<&str> = details
        .iter()
        .map(|d| d["identifier"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|i| i.starts_with("urn:uuid:")), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(details[0]["arguments"]["amount"]["max"], 500);
    assert_eq!(details[0]["single_use"], true);
    assert!(v["credential"].get("credentialStatus").is_none());
    let remaining = v["verification"]["remaining_seconds"].as_u64().unwrap();
    assert!((590..=600).contains(&remaining), "{remaining}");

    // A standing contract naming the approval service.
    let standing = ok(&[
        "grant",
        "--key",
        s(&key),
        "--subject",
        agent,
        "--audience",
        "https://mcp.example.com/",
        "--method",
        "POST",
        "--tool",
        "search",
        "--step-up",
        "http://localhost:8470",
        "--valid-for",
        "8h",
        "--no-revocation",
    ]);
    let jwt = standing.trim();
    let (_, p) = cada_contract::Contract::decode_unverified(jwt).unwrap();
    assert_eq!(p["credentialSubject"]["stepUp"], "http://localhost:8470");

    let base = |file: &str| {
        owner(&[
            "grant",
            "--key",
            s(&key),
            "--subject",
            agent,
            "--authorization-details",
            file,
            "--minutes",
            "5",
        ])
    };
    for (body, want) in [
        (
            r#"[{"type":"payment_initiation","locations":["https://a.example/"],"tool":"t"}]"#,
            "contract.schema",
        ),
        (
            r#"[{"type":"mcp_tool_call","locations":["https://a.example/"],"tool":"t","arguments":{"x":{"regex":"."}}}]"#,
            "contract.schema",
        ),
        (
            r#"[{"type":"mcp_tool_call","locations":["http://a.example/"],"tool":"t"}]"#,
            "contract.malformed",
        ),
        (
            r#"[{"type":"mcp_tool_call","locations":["https://a.example/"],"tool":"t","arguments":{"x":{"max":1,"max":2}}}]"#,
            "contract.malformed",
        ),
        (r#"{"type":"mcp_tool_call"}"#, "contract.malformed"),
        ("[]", "contract.malformed"),
        ("not json", "contract.malformed"),
    ] {
        let f = dir.join("bad.json");
        std::fs::write(&f, body).unwrap();
        let (code, _, err) = base(s(&f));
        assert_eq!(code, 1, "{body}: {err}");
        assert!(err.contains(want), "{body}: {err}");
    }
    // Usage: minutes out of range, a missing file, an over-long file.
    let (code, _, err) = owner(&[
        "grant",
        "--key",
        s(&key),
        "--subject",
        agent,
        "--authorization-details",
        example,
        "--minutes",
        "0",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = base(s(&dir.join("missing.json")));
    assert_eq!(code, 2, "{err}");
    let big = dir.join("big.json");
    std::fs::write(&big, " ".repeat(cada_contract::MAX_CONTRACT_LEN + 1)).unwrap();
    let (code, _, err) = base(s(&big));
    assert_eq!(code, 2, "{err}");
    // Without --minutes a grant still says how it can be taken back.
    let (code, _, err) = owner(&[
        "grant",
        "--key",
        s(&key),
        "--subject",
        agent,
        "--authorization-details",
        example,
        "--valid-for",
        "1h",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-revocation"), "{err}");
    // The help teaches the new flags.
    let help = ok(&["grant", "--help"]);
    assert!(
        help.contains("--authorization-details")
            && help.contains("authorization-details.json")
            && help.contains("--step-up")
            && help.contains("--minutes"),
        "{help}"
    );
}
