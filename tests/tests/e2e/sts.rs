//! `cada-sts` end to end with the real binaries on `sim` and `sim-snp`: an agent whose
//! enclave is locked to its owner exchanges a proof, its evidence and the owner's contract
//! for an access token; an independent resource server (Node's oauth4webapi, installed
//! here, pinned) accepts the token with a fresh proof and refuses it with another key, for
//! another audience and after expiry; the STS refuses each bad exchange with its RFC 6749
//! error and the rule's code, including a replay across two instances sharing Redis; token
//! lifetimes stop at the contract's and the evidence's end.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cada_e2e::delegation::start_sts;
use cada_e2e::*;
use cada_protocol::access_token::{
    AccessTokenClaims, Actor, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT,
};
use cada_protocol::b64;
use cada_protocol::envelope::EvidenceEnvelope;

/// The pinned resource-server library.
const OAUTH4WEBAPI: &str = "oauth4webapi@3.8.8";

/// Installs the pinned package once per target dir; returns its node_modules' parent.
pub(crate) fn node_packages() -> PathBuf {
    npm_package(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "node-interop-oauth4webapi-3.8.8",
        OAUTH4WEBAPI,
    )
}

/// Runs the Node resource server over `cases`; returns each case's result by name.
pub(crate) fn node_rs(issuer: &str, cases: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let pkgs = node_packages();
    // The script is ESM and resolves oauth4webapi from its own directory's node_modules.
    let script = pkgs.join("rs_oauth4webapi.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/rs_oauth4webapi.mjs"),
        &script,
    )
    .unwrap();
    let input = pkgs.join(format!("cases-{}.json", std::process::id()));
    std::fs::write(
        &input,
        serde_json::json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks"), "cases": cases})
            .to_string(),
    )
    .unwrap();
    let out = Command::new("node")
        .arg(&script)
        .arg(&input)
        .output()
        .expect("node must be installed for the interop test (it does not skip)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An STS answer: status, `DPoP-Nonce` header, JSON body.
struct Answer {
    status: u16,
    nonce: Option<String>,
    body: serde_json::Value,
}

impl Answer {
    fn error(&self) -> (&str, &str) {
        (
            self.body["error"].as_str().unwrap_or_default(),
            self.body["error_description"].as_str().unwrap_or_default(),
        )
    }

    fn claims(&self) -> AccessTokenClaims {
        let token = self.body["access_token"].as_str().unwrap();
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&b64::decode("at", payload, 8192).unwrap()).unwrap()
    }
}

/// `POST /token` on the STS at `port` with a form and extra headers.
fn post_token(port: u16, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Answer {
    let (status, h, b) = http_tcp_with(
        port,
        "POST",
        "/token",
        "application/x-www-form-urlencoded",
        headers,
        form_body(form).as_bytes(),
    );
    let nonce = h
        .lines()
        .find_map(|l| l.strip_prefix("dpop-nonce: ").map(str::to_owned));
    Answer {
        status,
        nonce,
        body: serde_json::from_str(&b).unwrap_or(serde_json::Value::Null),
    }
}

/// The enclave's proof (with evidence) for `POST <issuer>/token`.
fn token_proof(sock: &Path, issuer: &str, nonce: Option<&str>) -> (String, String) {
    let body = serde_json::json!({
        "method": "POST", "url": format!("{issuer}/token"), "with_evidence": true, "nonce": nonce,
    });
    let (st, v) = daemon_pop(sock, &body);
    assert_eq!(st, 200, "{v}");
    (
        v["dpop"].as_str().unwrap().to_owned(),
        v["evidence"].as_str().unwrap().to_owned(),
    )
}

fn exchange_form<'a>(
    contract: &'a str,
    resource: &'a str,
    scope: Option<&'a str>,
) -> Vec<(&'a str, &'a str)> {
    let mut f = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", contract),
        ("subject_token_type", TOKEN_TYPE_CONTRACT),
        ("resource", resource),
    ];
    if let Some(s) = scope {
        f.push(("scope", s));
    }
    f
}

/// `exp` of a contract (its JWT claim).
fn contract_exp(contract: &str) -> u64 {
    let p = contract.split('.').nth(1).unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&b64::decode("c", p, 65536).unwrap()).unwrap();
    v["exp"].as_u64().unwrap()
}

#[test]
fn agents_exchange_attested_proofs_for_tokens_that_a_node_resource_server_accepts() {
    for platform in ["sim", "sim-snp"] {
        sts_story(platform);
    }
}

fn sts_story(platform: &str) {
    // Install the resource server's library before any clock starts.
    node_packages();
    let dir = TempDir::new(&format!("sts-{platform}"));
    let d = &dir.0;
    let _enclave = start_enclave_on(d, platform, &[]);
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{port_a}");
    // The daemon obtains tokens from the fleet's issuer just in time.
    let _parent = start_parent(d, &["--sts", &issuer]);
    let sock = d.join("agent.sock");
    let (_redis, redis_port) = start_redis(d);
    let redis = format!("redis://127.0.0.1:{redis_port}");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let enclave_did = id["did"].as_str().unwrap().to_owned();
    let (name, roots) = if platform == "sim" {
        (
            "PCR0",
            format!(
                "[roots]\nnitro = [{:?}]\n",
                d.join("state/sim-root.der").display().to_string()
            ),
        )
    } else {
        (
            "MEASUREMENT",
            format!(
                "[roots]\nsev_snp = [{:?}]\n[snp]\nfreshness = \"first_seen\"\n",
                d.join("state/sim-snp-root.der").display().to_string()
            ),
        )
    };
    let value = id["measurements"][name].as_str().unwrap().to_owned();
    let other = "0".repeat(value.len());

    let (owner_did, key) = keygen(d, "owner");
    let (mallory_did, mallory_key) = keygen(d, "mallory");
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

    // One public issuer for STS A and B (a fleet behind one name, sharing Redis); C stands
    // alone with nonces required and evidence relied on for 100 s only.
    let issuer_c = format!("http://127.0.0.1:{port_c}");
    let policy = |extra: &str| {
        format!(
            "{roots}{extra}[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ {name} = \"{value}\" }}]\nowners = [\"{owner_did}\"]\n\
             [[audience]]\nprefix = \"https://api.example.com/admin\"\nmeasurements = [{{ {name} = \"{value}\" }}]\nowners = [\"{mallory_did}\"]\n\
             [[audience]]\nprefix = \"https://api.example.com/legacy\"\nmeasurements = [{{ {name} = \"{other}\" }}]\nowners = [\"{owner_did}\"]\n"
        )
    };
    let policy_ab = d.join("sts-policy.toml");
    std::fs::write(&policy_ab, policy("")).unwrap();
    let policy_c = d.join("sts-policy-c.toml");
    std::fs::write(
        &policy_c,
        policy("[token]\nrequire_nonce = true\n[evidence]\nmax_age_secs = 100\n"),
    )
    .unwrap();
    // A and B sign with the same key (one issuer); C with a key made in memory.
    let sts_key = d.join("sts-key.pem");
    let out = Command::new(bin("cada-sts"))
        .args(["keygen", "--out", sts_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sts_kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let key_arg = sts_key.to_str().unwrap();
    let secret = "s3cret-for-introspection-0123456789abcdef";
    let secret_file = d.join("admin-secret");
    std::fs::write(&secret_file, secret).unwrap();
    let secret_arg = secret_file.to_str().unwrap();
    let _a = start_sts(
        d,
        "sts-a",
        port_a,
        &issuer,
        &policy_ab,
        &[
            "--replay-store",
            &redis,
            "--signing-key",
            key_arg,
            "--admin-secret-file",
            secret_arg,
        ],
    );
    let _b = start_sts(
        d,
        "sts-b",
        port_b,
        &issuer,
        &policy_ab,
        &[
            "--replay-store",
            &redis,
            "--token-ttl",
            "2",
            "--signing-key",
            key_arg,
            "--admin-secret-file",
            secret_arg,
        ],
    );
    // C signs with a key made in memory and still publishes A's as the previous one.
    let _c = start_sts(
        d,
        "sts-c",
        port_c,
        &issuer_c,
        &policy_c,
        &["--previous-key", key_arg],
    );

    // The owner's contract: the agent may use the STSs' token endpoints and the API;
    // installed with its status list when it has one.
    let grant = |file: &str, extra: &[&str], status_list: Option<&Path>| {
        let mut args = vec![
            "grant",
            "--key",
            &key,
            "--subject",
            &enclave_did,
            "--audience",
            &issuer,
            "--audience",
            &issuer_c,
            "--audience",
            "https://api.example.com/",
            "--method",
            "POST",
            "--method",
            "GET",
            "--scope",
            "orders:read",
            "--scope",
            "orders:write",
        ];
        args.extend_from_slice(extra);
        let c = owner_to(d, file, &args);
        let installed = d.join(file);
        let mut install = vec!["contract", "install", installed.to_str().unwrap()];
        if let Some(list) = status_list {
            install.extend(["--status-list", list.to_str().unwrap()]);
        }
        let (code, _, err) = parent(&sock, &install);
        assert_eq!(code, 0, "{err}");
        c
    };
    let contract = grant(
        "contract.jwt",
        &["--valid-for", "1h", "--no-revocation"],
        None,
    );
    let resource = "https://api.example.com/v1";
    let auth =
        |dpop: &str, ev: &str| vec![("DPoP", dpop.to_owned()), ("CADA-Evidence", ev.to_owned())];
    let exchange = |port: u16, iss: &str, c: &str, res: &str, scope: Option<&str>| {
        let (dpop, ev) = token_proof(&sock, iss, None);
        let h = auth(&dpop, &ev);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_token(port, &exchange_form(c, res, scope), &h)
    };

    // 1. The exchange: a token for the resource, bound to the enclave key, the owner acting.
    let t0 = now_s();
    let ok = exchange(port_a, &issuer, &contract, resource, Some("orders:read"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["token_type"], "DPoP");
    assert_eq!(
        ok.body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    let claims = ok.claims();
    let header: serde_json::Value = serde_json::from_slice(
        &b64::decode(
            "h",
            ok.body["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap(),
            512,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(
        header["kid"],
        sts_kid.as_str(),
        "signed by the key from cada-sts keygen"
    );
    assert_eq!(claims.aud, resource);
    assert_eq!(claims.scope, "orders:read");
    // RFC 8693 §4.1 (issue 24): the owner is the principal, the agent acts for it.
    assert_eq!(claims.sub, owner_did);
    assert_eq!(claims.act, Actor::nest(&[&enclave_did]));
    assert_eq!(claims.client_id, enclave_did);
    assert_eq!(claims.cada_dch, [cada_contract::digest_of(&contract)]);
    assert_eq!(claims.iss, issuer);
    assert_eq!(claims.cada.dtc, cada_contract::digest_of(&contract));
    assert_eq!(claims.cada.platform, platform);
    assert_eq!(
        claims.exp - claims.iat,
        300,
        "the full lifetime when nothing ends sooner"
    );
    assert!(claims.iat >= t0);
    let token = ok.body["access_token"].as_str().unwrap().to_owned();
    // Without a scope: everything the contract grants.
    let all = exchange(port_a, &issuer, &contract, resource, None);
    assert_eq!(all.claims().scope, "orders:read orders:write");

    // Metadata, JWKS (two keys while rotating), introspection and revocation fleet-wide.
    let (st, _, meta) = http_tcp(
        port_a,
        "GET",
        "/.well-known/oauth-authorization-server",
        "text/plain",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200);
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["issuer"], issuer.as_str());
    assert_eq!(meta["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(meta["grant_types_supported"][0], GRANT_TYPE_TOKEN_EXCHANGE);
    let (_, _, jwks) = http_tcp(port_c, "GET", "/jwks", "text/plain", b"").unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    assert_eq!(jwks["keys"][1]["kid"], sts_kid.as_str());
    let admin = |port: u16, path: &str, auth: Option<&str>, tok: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let body = format!("token={tok}");
        let auth = auth
            .map(|a| format!("Authorization: Bearer {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: sts\r\nConnection: close\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status: u16 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let victim = all.body["access_token"].as_str().unwrap();
    assert_eq!(admin(port_a, "/introspect", None, victim).0, 401);
    assert_eq!(
        admin(port_a, "/introspect", Some("wrong-secret"), victim).0,
        401
    );
    let (st, v) = admin(port_b, "/introspect", Some(secret), victim);
    assert_eq!((st, &v["active"]), (200, &serde_json::json!(true)), "{v}");
    assert_eq!(v["token_type"], "DPoP");
    assert_eq!(v["cnf"]["jkt"], all.claims().cnf.jkt.as_str());
    // RFC 7662 answers the token's parties as the token names them (issue 24).
    assert_eq!(v["sub"], owner_did.as_str(), "{v}");
    assert_eq!(v["act"], serde_json::json!({"sub": enclave_did}), "{v}");
    assert_eq!(v["client_id"], enclave_did.as_str(), "{v}");
    assert_eq!(
        v["cada_dch"],
        serde_json::json!([cada_contract::digest_of(&contract)]),
        "{v}"
    );
    assert_eq!(admin(port_a, "/revoke", Some(secret), victim).0, 200);
    let (_, v) = admin(port_b, "/introspect", Some(secret), victim);
    assert_eq!(
        v,
        serde_json::json!({"active": false}),
        "revoked at A, inactive at B"
    );
    assert_eq!(
        admin(port_a, "/introspect", Some(secret), "not-a-token").1["active"],
        false
    );

    let refused = |a: &Answer, status: u16, error: &str, code: &str| {
        let (e, desc) = a.error();
        assert_eq!((a.status, e), (status, error), "{}", a.body);
        assert!(desc.starts_with(&format!("[{code}]")), "{code}: {desc}");
    };
    // Nonces required (C): asked for, then accepted; a stale one refused.
    let (dpop, ev) = token_proof(&sock, &issuer_c, None);
    let a = post_token(
        port_c,
        &exchange_form(&contract, resource, None),
        &[("DPoP", &dpop), ("CADA-Evidence", &ev)],
    );
    refused(&a, 400, "use_dpop_nonce", "pop.nonce");
    let nonce = a
        .nonce
        .clone()
        .expect("a DPoP-Nonce header with use_dpop_nonce");
    let (dpop, ev) = token_proof(&sock, &issuer_c, Some(&nonce));
    let a = post_token(
        port_c,
        &exchange_form(&contract, resource, None),
        &[("DPoP", &dpop), ("CADA-Evidence", &ev)],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    // The evidence ends first at C (relied on for 100 s): the token ends with it.
    let c_claims = a.claims();
    assert!(c_claims.exp <= c_claims.iat + 100, "{c_claims:?}");
    assert!(c_claims.exp + 30 > c_claims.iat + 100, "{c_claims:?}");
    let (dpop, ev) = token_proof(&sock, &issuer_c, Some("bm90LWlzc3VlZC1oZXJl"));
    refused(
        &post_token(
            port_c,
            &exchange_form(&contract, resource, None),
            &[("DPoP", &dpop), ("CADA-Evidence", &ev)],
        ),
        400,
        "use_dpop_nonce",
        "pop.nonce",
    );

    // 2. An independent resource server accepts it with a fresh proof carrying ath, and
    //    refuses it with another key's proof, for another audience, and after expiry.
    let rs_url = "https://api.example.com/v1/orders";
    let rs_proof = |tok: &str| {
        mint(&sock, "GET", rs_url, Some(tok), false)["dpop"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let short = exchange(port_b, &issuer, &contract, resource, None);
    assert_eq!(short.status, 200, "{}", short.body);
    let short_claims = short.claims();
    assert_eq!(short_claims.exp - short_claims.iat, 2);
    let short_token = short.body["access_token"].as_str().unwrap().to_owned();
    let case = |n: &str, tok: &str, dpop: &str, aud: &str, foreign: bool| {
        serde_json::json!({"name": n, "method": "GET", "url": rs_url, "token": tok, "dpop": dpop,
                           "audience": aud, "foreign_key": foreign})
    };
    let fresh = rs_proof(&token);
    // The daemon's own path: POST /v1/pop with a resource answers the Authorization value
    // and a proof carrying its ath; the token is held in memory and reused per (resource,
    // scope).
    let via_daemon = |scope: Option<&str>| {
        let body = serde_json::json!({"method": "GET", "url": rs_url, "resource": resource, "scope": scope});
        let (st, text) = http(
            &sock,
            "POST",
            "/v1/pop",
            Some(&body.to_string()),
            Duration::from_secs(10),
        )
        .unwrap();
        (
            st,
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        )
    };
    let (st1, d1) = via_daemon(Some("orders:read"));
    assert_eq!(st1, 200, "{d1}");
    let daemon_token = d1["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("DPoP ")
        .unwrap()
        .to_owned();
    assert!(d1["token_expires_in"].as_u64().unwrap() > 200, "{d1}");
    let (_, d2) = via_daemon(Some("orders:read"));
    assert_eq!(
        d2["authorization"], d1["authorization"],
        "the held token is reused"
    );
    assert_ne!(d2["dpop"], d1["dpop"], "each request gets its own proof");
    let (_, d3) = via_daemon(Some("orders:write"));
    assert_ne!(
        d3["authorization"], d1["authorization"],
        "one token per scope"
    );
    // A refused exchange reaches the agent with the STS's error and the rule's code.
    let body = serde_json::json!({"method": "GET", "url": "https://api.example.com/admin/x", "resource": "https://api.example.com/admin"});
    let (st4, d4) = http(
        &sock,
        "POST",
        "/v1/pop",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(st4, 403, "{d4}");
    assert!(
        d4.contains("sts-refused") && d4.contains("contract.untrusted_owner"),
        "{d4}"
    );
    // And the CLI prints ready-to-send headers.
    let (code, out, err) = parent(
        &sock,
        &[
            "sign",
            "--method",
            "GET",
            "--url",
            rs_url,
            "--resource",
            resource,
            "--scope",
            "orders:read",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("Authorization: DPoP {daemon_token}\nDPoP: ")),
        "{out}"
    );
    let early = node_rs(
        &issuer,
        &[
            case("accepted", &token, &fresh, resource, false),
            case(
                "via the daemon",
                &daemon_token,
                d1["dpop"].as_str().unwrap(),
                resource,
                false,
            ),
            case("another key", &token, "", resource, true),
            case(
                "another audience",
                &token,
                &rs_proof(&token),
                "https://other.example.com/",
                false,
            ),
        ],
    );
    assert_eq!(early[0]["ok"], true, "{early:?}");
    // The stock library reads the principal (the owner) and the actor (the agent).
    assert_eq!(early[0]["sub"], owner_did.as_str());
    assert_eq!(
        early[0]["act"],
        serde_json::json!({"sub": enclave_did}),
        "{early:?}"
    );
    assert_eq!(early[1]["ok"], true, "{early:?}");
    assert_eq!(early[1]["scope"], "orders:read", "{early:?}");
    assert_eq!(early[2]["ok"], false, "{early:?}");
    assert_eq!(early[3]["ok"], false, "{early:?}");
    // cada-verify serve accepts the same tokens: an [[issuer]] whose JWKS it fetches.
    let vpolicy = d.join("verify-policy.toml");
    std::fs::write(
        &vpolicy,
        format!(
            "{}[[issuer]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/jwks\"\n",
            policy("[token]\nskew_secs = 1\n")
                + &format!(
                    "[[audience]]\nprefix = \"https://api.example.com/v1/secret\"\nmeasurements = [{{ {name} = \"{value}\" }}]\nowners = [\"{owner_did}\"]\n"
                )
        ),
    )
    .unwrap();
    let (_v, port_v) = start_verifier(
        d,
        "v",
        &[
            "--policy",
            vpolicy.to_str().unwrap(),
            "--status-refresh",
            "1",
        ],
    );
    std::thread::sleep(Duration::from_millis(500)); // its first JWKS fetch
    let verify_with_token = |tok: &str, url: &str| {
        let dpop = mint(&sock, "GET", url, Some(tok), false)["dpop"]
            .as_str()
            .unwrap()
            .to_owned();
        pop_verify(
            port_v,
            &serde_json::json!({"dpop": dpop, "method": "GET", "url": url, "access_token": tok,
                "body": ""}),
        )
    };
    let (st, r) = verify_with_token(&token, rs_url);
    assert_eq!(
        st,
        200,
        "{r}\n{}",
        std::fs::read_to_string(d.join("v.log")).unwrap_or_default()
    );
    assert_eq!(r["admission"]["rule"], "token", "{r}");
    assert_eq!(r["token"]["jti"], claims.jti.as_str(), "{r}");
    assert_eq!(r["did"], enclave_did.as_str());
    // A URL under an audience of the verifier's own, narrower than the token's resource:
    // the issuer never applied that audience's rules.
    let (st, r) = verify_with_token(&token, "https://api.example.com/v1/secret/x");
    assert_eq!(
        (st, r["reasons"][0]["code"].as_str()),
        (401, Some("token.audience")),
        "{r}"
    );
    // The token is for /v1: not for /v2.
    let (st, r) = verify_with_token(&token, "https://api.example.com/v2/orders");
    assert_eq!(
        (st, r["reasons"][0]["code"].as_str()),
        (401, Some("token.audience")),
        "{r}"
    );
    // Past the short token's exp plus the verifier's 1 s of skew.
    std::thread::sleep(Duration::from_millis(4200));
    let (st, r) = verify_with_token(&short_token, rs_url);
    assert_eq!(
        (st, r["reasons"][0]["code"].as_str()),
        (401, Some("token.expired")),
        "{r}"
    );
    let late = node_rs(
        &issuer,
        &[case(
            "expired",
            &short_token,
            &rs_proof(&short_token),
            resource,
            false,
        )],
    );
    assert_eq!(late[0]["ok"], false, "{late:?}");
    assert!(
        late[0]["error"].as_str().unwrap().contains("exp"),
        "{late:?}"
    );

    // 3. Refusals, each with its OAuth error and the rule's code.
    refused(
        &exchange(port_a, &issuer, &contract, resource, Some("orders:delete")),
        400,
        "invalid_scope",
        "contract.not_permitted.scope",
    );
    refused(
        &exchange(
            port_a,
            &issuer,
            &contract,
            "https://api.example.com/admin/x",
            None,
        ),
        400,
        "invalid_grant",
        "contract.untrusted_owner",
    );
    refused(
        &exchange(
            port_a,
            &issuer,
            &contract,
            "https://api.example.com/legacy",
            None,
        ),
        401,
        "invalid_client",
        "policy.measurements",
    );
    refused(
        &exchange(
            port_a,
            &issuer,
            &contract,
            "https://elsewhere.example.com/",
            None,
        ),
        400,
        "invalid_target",
        "policy.audience",
    );
    // A resource wider than an audience with rules of its own (/admin, /legacy lie under
    // it), and one not in normal form: no token either would be safe or usable.
    refused(
        &exchange(port_a, &issuer, &contract, "https://api.example.com/", None),
        400,
        "invalid_target",
        "token.resource",
    );
    refused(
        &exchange(
            port_a,
            &issuer,
            &contract,
            "https://API.example.com/v1",
            None,
        ),
        400,
        "invalid_target",
        "token.resource",
    );
    // A whole origin without its `/`: refused on the wire, with the form to use (the
    // daemon writes it so itself: `resource` below).
    let a = exchange(port_a, &issuer, &contract, "https://api.example.com", None);
    refused(&a, 400, "invalid_target", "token.resource");
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("use \"https://api.example.com/\""),
        "{}",
        a.body
    );
    // Another owner's contract is not the one the proof names.
    let mallory_contract = owner_to(
        d,
        "mallory.jwt",
        &[
            "grant",
            "--key",
            &mallory_key,
            "--subject",
            &enclave_did,
            "--audience",
            "https://api.example.com/",
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    refused(
        &exchange(port_a, &issuer, &mallory_contract, resource, None),
        400,
        "invalid_grant",
        "contract.dtc_mismatch",
    );
    // No contract at all.
    let (dpop, ev) = token_proof(&sock, &issuer, None);
    let mut form = exchange_form(&contract, resource, None);
    form.retain(|(k, _)| *k != "subject_token");
    let a = post_token(port_a, &form, &[("DPoP", &dpop), ("CADA-Evidence", &ev)]);
    assert_eq!(
        (a.status, a.error().0),
        (400, "invalid_request"),
        "{}",
        a.body
    );
    // Evidence that does not verify (one byte of the document changed).
    let (dpop, ev) = token_proof(&sock, &issuer, None);
    let mut env = EvidenceEnvelope::from_header(&ev).unwrap();
    let mid = env.document.len() / 2;
    env.document[mid] ^= 1;
    let a = post_token(
        port_a,
        &exchange_form(&contract, resource, None),
        &[("DPoP", &dpop), ("CADA-Evidence", &env.to_header())],
    );
    assert_eq!(
        (a.status, a.error().0),
        (401, "invalid_client"),
        "{}",
        a.body
    );
    // A replayed token-endpoint proof, at the same instance and at the other one.
    let (dpop, ev) = token_proof(&sock, &issuer, None);
    let h = [("DPoP", dpop.as_str()), ("CADA-Evidence", ev.as_str())];
    assert_eq!(
        post_token(port_a, &exchange_form(&contract, resource, None), &h).status,
        200
    );
    refused(
        &post_token(port_a, &exchange_form(&contract, resource, None), &h),
        400,
        "invalid_dpop_proof",
        "pop.replay",
    );
    refused(
        &post_token(port_b, &exchange_form(&contract, resource, None), &h),
        400,
        "invalid_dpop_proof",
        "pop.replay",
    );
    // 5. The contract ends first (60 s): the token ends exactly with it.
    let short_contract = grant(
        "short.jwt",
        &["--valid-for", "60s", "--no-revocation"],
        None,
    );
    let a = exchange(port_a, &issuer, &short_contract, resource, None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.claims().exp, contract_exp(&short_contract));

    // 6. A revoked contract: refused once the STS has the owner's new list.
    let published = d.join("published.jwt");
    let list_port = serve_status_file(published.clone(), None);
    let list_url = format!("http://127.0.0.1:{list_port}/status/1");
    owner_to(
        d,
        "status.jwt",
        &["status-list", "new", "--key", &key, "--url", &list_url],
    );
    std::fs::copy(d.join("status.jwt"), &published).unwrap();
    let owner_out = grant(
        "revocable.jwt",
        &[
            "--valid-for",
            "1h",
            "--status-list",
            &list_url,
            "--status-index",
            "3",
        ],
        Some(&d.join("status.jwt")),
    );
    // The first exchange names the list; the refresher fetches it within a second.
    let _ = exchange(port_a, &issuer, &owner_out, resource, None);
    std::thread::sleep(Duration::from_millis(1500));
    let a = exchange(port_a, &issuer, &owner_out, resource, None);
    assert_eq!(a.status, 200, "{}", a.body);
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
            "3",
        ],
    );
    std::fs::copy(d.join("revoked.jwt"), &published).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    refused(
        &exchange(port_a, &issuer, &owner_out, resource, None),
        400,
        "invalid_grant",
        "contract.revoked",
    );

    // 7. An expired contract: the proof signed while it lived, presented after it ended.
    let until = now_s() + 3;
    let until_s = time_rfc3339(until);
    let dying = grant(
        "dying.jwt",
        &["--valid-until", &until_s, "--no-revocation"],
        None,
    );
    let (dpop, ev) = token_proof(&sock, &issuer, None);
    while now_s() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let a = post_token(
        port_a,
        &exchange_form(&dying, resource, None),
        &[("DPoP", &dpop), ("CADA-Evidence", &ev)],
    );
    refused(&a, 400, "invalid_grant", "contract.expired");

    // Every exchange is in A's hash-chained audit log, which verifies.
    let out = Command::new(bin("cada-verify"))
        .args(["audit", "verify", d.join("sts-a-audit").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit = std::fs::read_dir(d.join("sts-a-audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(
        audit.contains(&format!("\"token\":\"{}\"", claims.jti)),
        "the issued token is audited"
    );
    assert!(audit.contains("\"reason\":\"contract.revoked\""));
}

/// RFC 3339 UTC for `secs` (the owner CLI's --valid-until).
fn time_rfc3339(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap())
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Left open in issue 21: the daemon held tokens per (resource, scope), not per enclave key,
/// so after the enclave restarted (a new key) it kept handing out the old key's token
/// (`cnf.jkt` of a dead key) with proofs of the new one, and calls failed until the token
/// expired. Now the first call after the restart carries a fresh token that verifies.
/// The policy trusting `agent`'s image and owner for each of `apis` (sim root, PCR0,
/// owner), written to `sts-policy.toml`, and `cada-sts` started on it at `port`: the STS
/// process and the policy text (a verifier's policy adds the STS as an issuer to it).
fn start_sts_for(
    d: &Path,
    agent: &cada_e2e::mcp_interop::LockedAgent,
    port: u16,
    issuer: &str,
    apis: &[&str],
) -> (Proc, String) {
    agent.start_sts(d, port, issuer, apis, &["--status-refresh", "1"])
}

#[test]
fn after_an_enclave_restart_the_daemon_exchanges_a_token_for_the_new_key() {
    use cada_e2e::mcp_interop::LockedAgent;
    let dir = TempDir::new("sts-restart");
    let d = &dir.0;
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let mut agent = LockedAgent::start(d, &["--sts", &issuer]);
    let grant = [
        "--audience",
        issuer.as_str(),
        "--audience",
        "https://api.example.com/",
        "--method",
        "POST",
        "--method",
        "GET",
    ];
    agent.grant(d, &grant);
    let (_sts, policy) = start_sts_for(d, &agent, sts_port, &issuer, &["https://api.example.com/"]);
    let v_policy = d.join("verify-policy.toml");
    std::fs::write(
        &v_policy,
        format!("{policy}[[issuer]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/jwks\"\n"),
    )
    .unwrap();
    let (_v, port_v) = start_verifier(d, "v", &["--policy", v_policy.to_str().unwrap()]);
    let resource = "https://api.example.com/v1";
    let url = "https://api.example.com/v1/orders";
    // One call: a proof and a token from the daemon, checked by the verifier.
    let call = |sock: &Path| {
        let ask = serde_json::json!({"method": "GET", "url": url, "resource": resource});
        let (st, text) = http(
            sock,
            "POST",
            "/v1/pop",
            Some(&ask.to_string()),
            Duration::from_secs(15),
        )
        .unwrap();
        assert_eq!(st, 200, "{text}");
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        let token = p["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap()
            .to_owned();
        let (st, r) = pop_verify(
            port_v,
            &serde_json::json!({"dpop": p["dpop"], "method": "GET", "url": url,
                "access_token": token, "body": ""}),
        );
        (st, r, token)
    };
    // The verifier fetches the STS's keys once it runs: the first call may come too early.
    let mut first = call(&agent.sock);
    for _ in 0..40 {
        if first.0 == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        first = call(&agent.sock);
    }
    assert_eq!(first.0, 200, "{}", first.1);
    // The token is held: the next call carries the same one.
    let again = call(&agent.sock);
    assert_eq!((again.0, again.2 == first.2), (200, true), "{}", again.1);

    // The enclave restarts: a new key, locked and granted again by the owner.
    agent.enclave.kill();
    agent.enclave = start_enclave(d, &[]);
    let mut ready = false;
    for _ in 0..100 {
        if http(&agent.sock, "GET", "/readyz", None, Duration::from_secs(5))
            .is_ok_and(|(st, _)| st == 200)
        {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "the daemon did not reconnect to the new enclave");
    let (_, id) = http(
        &agent.sock,
        "GET",
        "/v1/identity",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let new_did = id["did"].as_str().unwrap().to_owned();
    assert_ne!(new_did, agent.did, "a restarted enclave has a new key");
    owner_to(
        d,
        "lock2.jwt",
        &["lock", "--key", &agent.key, "--enclave", &new_did],
    );
    let lock = d.join("lock2.jwt");
    assert_eq!(
        parent(&agent.sock, &["owner", "lock", lock.to_str().unwrap()]).0,
        0
    );
    agent.did = new_did;
    agent.grant(d, &grant);
    // The first call after the restart: a token for the new key, accepted.
    let after = call(&agent.sock);
    assert_eq!(after.0, 200, "{}", after.1);
    assert_ne!(after.2, first.2, "a fresh token");
    let log = std::fs::read_to_string(d.join("parent.log")).unwrap();
    assert!(log.contains("signing key changed"), "{log}");
}

/// Issue 21 (left open before): with two contracts that both list the STS, the daemon's
/// token-endpoint proof was signed under the most recently installed one, whatever the
/// resource; a token for the other contract's API was then refused by the STS
/// (`contract.not_permitted.audience`). The daemon now tells the enclave which token the
/// proof is for, and the enclave signs it under the contract that grants that token.
#[test]
fn with_two_contracts_the_token_proof_names_the_one_that_grants_the_resource() {
    use cada_e2e::mcp_interop::LockedAgent;
    let dir = TempDir::new("sts-two-contracts");
    let d = &dir.0;
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    for api in ["https://a.example.com/", "https://b.example.com/"] {
        agent.grant(
            d,
            &[
                "--audience",
                issuer.as_str(),
                "--audience",
                api,
                "--method",
                "POST",
                "--method",
                "GET",
            ],
        );
    }
    let (_sts, _) = start_sts_for(
        d,
        &agent,
        sts_port,
        &issuer,
        &["https://a.example.com/", "https://b.example.com/"],
    );
    // b's contract is the newer; a token for a's API, then for b's. a's resource is
    // written as an origin without its `/`, as `cada-owner grant --audience` takes it: the
    // daemon asks for (and the token names) its normal form.
    for (url, resource, aud) in [
        (
            "https://a.example.com/v1/x",
            "https://a.example.com",
            "https://a.example.com/",
        ),
        (
            "https://b.example.com/v1/x",
            "https://b.example.com/",
            "https://b.example.com/",
        ),
    ] {
        let ask = serde_json::json!({"method": "GET", "url": url, "resource": resource});
        let (st, text) = http(
            &agent.sock,
            "POST",
            "/v1/pop",
            Some(&ask.to_string()),
            Duration::from_secs(15),
        )
        .unwrap();
        assert_eq!(st, 200, "{resource}: {text}");
        let p: serde_json::Value = serde_json::from_str(&text).unwrap();
        let token = p["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap();
        let claims: AccessTokenClaims = serde_json::from_slice(
            &b64::decode("t", token.split('.').nth(1).unwrap(), 64 * 1024).unwrap(),
        )
        .unwrap();
        assert_eq!(claims.aud, aud);
    }
    // A resource that is not in normal form otherwise: refused by the daemon, naming the
    // form to use.
    let ask = serde_json::json!({"method": "GET", "url": "https://a.example.com/x",
                                 "resource": "https://A.example.com/v1"});
    let (st, text) = http(
        &agent.sock,
        "POST",
        "/v1/pop",
        Some(&ask.to_string()),
        Duration::from_secs(15),
    )
    .unwrap();
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("https://a.example.com/v1"), "{text}");
}

/// Issue 21 (suspected: "with an STS token, the gate skips the contract's requiredCtx"),
/// through the real binaries: under a contract that requires `ctx` key `task`, the daemon's
/// exchange proof carries the request's ctx (before, it carried none and the enclave
/// refused every token), the token carries the requirement (`cada.required_ctx`), and a
/// verifier trusting the STS refuses a request under the token whose proof lacks `task`.
#[test]
fn a_contract_that_requires_ctx_gets_tokens_that_carry_it() {
    use cada_e2e::mcp_interop::LockedAgent;
    let dir = TempDir::new("sts-required-ctx");
    let d = &dir.0;
    let sts_port = free_port();
    let issuer = format!("http://127.0.0.1:{sts_port}");
    let agent = LockedAgent::start(d, &["--sts", &issuer]);
    agent.grant(
        d,
        &[
            "--audience",
            issuer.as_str(),
            "--audience",
            "https://api.example.com/",
            "--method",
            "POST",
            "--method",
            "GET",
            "--ctx",
            "task",
        ],
    );
    let (_sts, policy) = start_sts_for(d, &agent, sts_port, &issuer, &["https://api.example.com/"]);
    let url = "https://api.example.com/v1/orders";
    let ask = |ctx: serde_json::Value| {
        let body = serde_json::json!({"method": "GET", "url": url,
                                      "resource": "https://api.example.com/v1", "ctx": ctx});
        let (st, text) = http(
            &agent.sock,
            "POST",
            "/v1/pop",
            Some(&body.to_string()),
            Duration::from_secs(15),
        )
        .unwrap();
        (
            st,
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        )
    };
    let (st, p) = ask(serde_json::json!({"task": "t-1"}));
    assert_eq!(st, 200, "{p}");
    let token = p["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("DPoP ")
        .unwrap()
        .to_owned();
    let claims: AccessTokenClaims = serde_json::from_slice(
        &b64::decode("t", token.split('.').nth(1).unwrap(), 64 * 1024).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.cada.required_ctx, vec!["task".to_string()]);
    // The enclave itself refuses a request proof without `task` under this contract.
    let (st, p) = ask(serde_json::json!({}));
    assert_eq!(st, 403, "{p}");
    assert!(p.to_string().contains("contract.not_permitted.ctx"), "{p}");
    // A verifier trusting the STS: the proof with `task` passes under the token. (A proof
    // without it, which an enclave would sign only under another contract, is refused:
    // decide::held_state_and_tokens::a_token_carries_its_contracts_required_ctx_to_every_request.)
    let v_policy = d.join("verify-policy.toml");
    std::fs::write(
        &v_policy,
        format!("{policy}[[issuer]]\nissuer = \"{issuer}\"\njwks_uri = \"{issuer}/jwks\"\n"),
    )
    .unwrap();
    let (_v, port_v) = start_verifier(d, "v", &["--policy", v_policy.to_str().unwrap()]);
    let mut last = serde_json::Value::Null;
    for _ in 0..40 {
        let (_, p) = ask(serde_json::json!({"task": "t-2"}));
        let token = p["authorization"]
            .as_str()
            .unwrap()
            .strip_prefix("DPoP ")
            .unwrap();
        let (st, r) = pop_verify(
            port_v,
            &serde_json::json!({"dpop": p["dpop"], "method": "GET", "url": url,
                "access_token": token, "body": ""}),
        );
        if st == 200 {
            assert_eq!(r["active"], true, "{r}");
            return;
        }
        // The verifier fetches the STS's keys once it runs: the first call may come early.
        last = r;
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("the verifier never accepted the token: {last}");
}
