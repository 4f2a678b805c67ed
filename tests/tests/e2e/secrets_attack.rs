//! Adversarial review of sealed secrets (issue 22), against the real binaries on `sim`:
//! a malicious agent on the local secrets endpoint, a malicious host (daemon socket, relay,
//! sealed bundles) and a malicious upstream. Every test asserts the SECURE behaviour, so an
//! attack that works makes its test fail. Findings: docs/reviews/secrets-1.md.
use super::secrets_harness::*;

/// An upstream that echoes what it received the way common servers do.
fn echo_handler() -> Handler {
    Arc::new(|r: &Req| {
        let auth = r.header("authorization").unwrap_or("").to_owned();
        let p = r.path();
        if p.ends_with("/echo-php") {
            // PHP's json_encode escapes '/' by default.
            let v = serde_json::json!({"headers": {"Authorization": auth}}).to_string();
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                v.replace('/', "\\/").as_bytes(),
            )
        } else if p.ends_with("/dump") {
            // The request stored and returned base64-encoded (a request inspector, a
            // contents API): the credential sits at an offset that is not 0 mod 3.
            let v = serde_json::json!({
                "encoding": "base64",
                "content": base64::engine::general_purpose::STANDARD.encode(r.head.as_bytes()),
            });
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                v.to_string().as_bytes(),
            )
        } else if p.ends_with("/slow-close") {
            // Close-delimited (no Content-Length), in two writes 2 s apart.
            let mut out = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nfirst-part ".to_vec();
            out.extend_from_slice(b"\0PAUSE\0second-part");
            out
        } else if p.ends_with("/whoami") {
            // Stripe-style Basic (key as the user name): an error that names the key.
            let user = auth
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let user = user.split(':').next().unwrap_or("").to_owned();
            let v = serde_json::json!({"error": {"message": format!("Invalid API Key provided: {user}")}});
            respond(
                "401 Unauthorized",
                "Content-Type: application/json\r\n",
                v.to_string().as_bytes(),
            )
        } else if p.ends_with("/token-echo") {
            // An error that names the token it was given.
            let tok = auth.split_once(' ').map_or("", |(_, t)| t).to_owned();
            let v = serde_json::json!({"message": "Bad credentials", "token": tok});
            respond("401 Unauthorized", "", v.to_string().as_bytes())
        } else if p.ends_with("/echo-range") {
            // The request head as a document that honours Range (e.g. a debug endpoint
            // served by a static-file layer, or a paginated echo).
            let doc = r.head.as_bytes().to_vec();
            match r
                .header("range")
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
            {
                Some((a, b)) if a < doc.len() => {
                    let b = b.min(doc.len() - 1);
                    respond(
                        "206 Partial Content",
                        &format!("Content-Range: bytes {a}-{b}/{}\r\n", doc.len()),
                        &doc[a..=b],
                    )
                }
                _ => respond("200 OK", "", &doc),
            }
        } else {
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                format!("{{\"ok\":true,\"path\":\"{p}\"}}").as_bytes(),
            )
        }
    })
}

/// Finding 1: an upstream that echoes the credential JSON-escaped the way PHP does
/// (`/` as `\/`) gets past the enclave's redaction; the agent unescapes it.
#[test]
fn an_echo_with_json_escaped_slashes_does_not_leak() {
    let secret = format!("AKIAadv/{}/k+9Zq", nonce());
    let Sealed {
        dir: _dir,
        st,
        seen,
        ..
    } = sealed(
        "attack-php",
        echo_handler(),
        "aws",
        "Bearer {}",
        secret.as_bytes(),
        &["GET"],
    );
    let (_p, port) = st.proxy(&["aws"]);
    let a = get(port, "/aws/repos/acme/echo-php", "");
    // Refused whole (never rewritten): the upstream reflected the credential.
    assert_eq!(status(&a), 502, "{a}");
    assert_eq!(code_of(body_of(&a)), "secret.reflected", "{a}");
    assert!(seen.lock().unwrap().last().unwrap().head.contains(&secret));
    assert_absent("the echo answer", a.as_bytes(), &secret);
    st.assert_logs_clean(&secret);
}

/// Finding 2: Basic credentials (`Basic {}` with the base64 of `key:` sealed, as Stripe
/// takes its key): an upstream error naming the decoded user name (the key) is not
/// redacted.
#[test]
fn a_decoded_basic_credential_in_an_error_does_not_leak() {
    let key = format!("sk_live_adv{}", nonce());
    let value = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let Sealed {
        dir: _dir,
        st,
        seen,
        ..
    } = sealed(
        "attack-basic",
        echo_handler(),
        "stripe",
        "Basic {}",
        value.as_bytes(),
        &["GET"],
    );
    let (_p, port) = st.proxy(&["stripe"]);
    let a = get(port, "/stripe/repos/acme/whoami", "");
    assert_eq!(status(&a), 502, "{a}");
    assert_eq!(code_of(body_of(&a)), "secret.reflected", "{a}");
    assert!(seen.lock().unwrap().last().unwrap().head.contains(&value));
    assert_absent("the error answer", a.as_bytes(), &key);
    st.assert_logs_clean(&key);
}

/// Finding 3: a credential shorter than 8 bytes was never redacted on its own. Now a
/// credential under 12 bytes (too short to be searched for in answers) is refused at seal
/// (cada-owner seal) and at install; the bundle sealed here with the library is refused by
/// the enclave, so nothing is ever injected or echoed.
#[test]
fn a_short_credential_echoed_alone_does_not_leak() {
    let dir = TempDir::new("attack-short");
    let d = &dir.0;
    let secret = "Zq7x9".to_owned();
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let (up, seen) = upstream(tls.server.clone(), echo_handler());
    let st = stack(d, true, true);
    let f = st.seal(
        "pin.sealed",
        &static_usage("pin", up, &ca, "token {}"),
        secret.as_bytes(),
        now(),
    );
    let (c, out) = st.install_bundle(&f);
    assert!(
        c != 0 && out.contains("secret.usage_invalid") && out.contains("at least 12"),
        "{out}"
    );
    assert!(!out.contains(&secret), "{out}");
    st.grant(
        "c.jwt",
        &[("pin", format!("https://localhost:{up}/repos/acme/"))],
        &["GET"],
    );
    let (_p, port) = st.proxy(&["pin"]);
    let a = get(port, "/pin/repos/acme/token-echo", "");
    assert_eq!(status(&a), 404, "{a}");
    assert!(seen.lock().unwrap().is_empty());
    let b = body_of(&a);
    assert!(
        !b.contains("\"Zq7x9\""),
        "the short credential came back unredacted: {b}"
    );
}

/// Finding 4: `Range` is forwarded, so an echo that honours it returns the credential in
/// pieces shorter than any redacted form; the agent glues them together.
#[test]
fn range_requests_cannot_reassemble_an_echoed_credential() {
    let secret = format!("ghp_Range{}", nonce());
    let Sealed { dir: _dir, st, .. } = sealed(
        "attack-range",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET"],
    );
    let (_p, port) = st.proxy(&["github"]);
    let mut doc = Vec::new();
    let mut at = 0usize;
    loop {
        let a = get(
            port,
            "/github/repos/acme/echo-range",
            &format!("Range: bytes={at}-{}\r\n", at + 5),
        );
        if status(&a) != 206 {
            break;
        }
        let b = body_of(&a).as_bytes();
        doc.extend_from_slice(b);
        at += 6;
        if at > 4096 {
            break;
        }
    }
    assert_absent("the echo reassembled from ranges", &doc, &secret);
}

/// Code of a daemon/proxy refusal (problem JSON `type` ends in it, or JSON-RPC data.code).
fn code_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    match v["error"]["data"]["code"].as_str() {
        Some(c) => c.to_owned(),
        None => v["type"]
            .as_str()
            .unwrap_or("")
            .rsplit(':')
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

/// Held: path, method and request-target tricks, through the daemon API (a malicious host
/// or an agent holding the socket) and through the agent's endpoint: none reaches the
/// upstream outside `/repos/acme/` or with a method the contract does not grant, and none
/// reaches another host.
#[test]
fn path_method_and_target_tricks_stay_inside_the_grant() {
    let secret = format!("ghp_Paths{}", nonce());
    let Sealed {
        dir: _dir,
        st,
        seen,
        tls,
        ..
    } = sealed(
        "attack-paths",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    let (evil, evil_seen) = upstream(tls.server.clone(), echo_handler());
    let evil_host = format!("localhost:{evil}");
    let tricks: Vec<String> = vec![
        "/repos/acme/../evil/x".into(),
        "/repos/acme/%2e%2e/evil/x".into(),
        "/repos/acme/%2E%2E/evil/x".into(),
        "/repos/acme/.%2e/evil/x".into(),
        "/repos/acme%2F..%2Fevil/x".into(),
        "/repos/acme/..%2Fevil/x".into(),
        "/repos/acme/%252e%252e/evil/x".into(),
        "/repos/acme/..;/evil/x".into(),
        "/repos/acme;x=1/../evil/x".into(),
        "/repos/acme/x/..%5cevil".into(),
        "/repos/acme/..\\evil/x".into(),
        "/repos/acme/%c0%ae%c0%ae/evil".into(),
        "/repos/acme/\u{ff0e}\u{ff0e}/evil".into(),
        "/repos/acme/./x".into(),
        "/repos/acme//x".into(),
        "/repos/acme".into(),
        "/repos/acmeevil/x".into(),
        "/repos/ACME/x".into(),
        "/repos/acme/x%00".into(),
        "/repos/acme/x#/../../evil".into(),
        "/repos/acme/x?#".into(),
        format!("//{evil_host}/repos/acme/x"),
        format!("@{evil_host}/repos/acme/x"),
        format!("https://{evil_host}/repos/acme/x"),
        "repos/acme/x".into(),
        "*".into(),
        format!("/repos/acme/{}", "a/".repeat(5000)),
        "/repos/acme/x\u{0}".into(),
        "/repos/acme/ x".into(),
        "/repos/acme/x HTTP/1.1\r\nHost: evil".into(),
        "/repos/acme/token".into(),
        "/repos/acme/x/Access_Token".into(),
        "/repos/acme/x/oauth2/".into(),
    ];
    for t in &tricks {
        let (s, b) = st.call("github", "GET", t, &[], b"");
        assert!((400..500).contains(&s), "{t:?} was not refused: {s} {b}");
    }
    for m in [
        "get", "Get", "HEAD", "TRACE", "CONNECT", "OPTIONS", "PUT", "DELETE", "PATCH", "G ET",
        "GET\r\n", "", "PROPFIND",
    ] {
        let (s, b) = st.call("github", m, "/repos/acme/x", &[], b"");
        assert!(
            (400..500).contains(&s),
            "method {m:?} was not refused: {s} {b}"
        );
    }
    // Another secret's name in the path, and no secret name.
    for (n, p) in [
        ("github/../stripe", "/repos/acme/x"),
        ("../github", "/repos/acme/x"),
        ("GITHUB", "/repos/acme/x"),
        ("", "/repos/acme/x"),
    ] {
        let (s, b) = st.call(n, "GET", p, &[], b"");
        assert!(
            (400..500).contains(&s),
            "secret {n:?} was not refused: {s} {b}"
        );
    }
    // Through the agent's endpoint: raw request targets.
    let (_p, port) = st.proxy(&["github", "stripe"]);
    let targets = [
        "/github/repos/acme/../evil/x".to_owned(),
        "/github/repos/acme/%2e%2e/evil".into(),
        "/stripe/../github/repos/acme/x".into(),
        "/github/../github/repos/acme/x".into(),
        "/github%2F..%2Fgithub/repos/acme/x".into(),
        "/github/repos/acme/x/..%2F..%2F..%2Fevil".into(),
        format!("http://{evil_host}/github/repos/evil/x"),
        format!("https://{evil_host}/github/repos/acme/../evil"),
        "/github//repos/acme/x".into(),
        "/github/repos/acme/x%23/../../../evil".into(),
    ];
    for t in &targets {
        let a = raw(
            port,
            format!("GET {t} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(
            (400..500).contains(&status(&a)) || status(&a) == 0,
            "{t:?} was not refused: {a}"
        );
    }
    // An absolute-form target naming another host, in the grant: the enclave still goes
    // to the sealed origin only.
    let a = raw(
        port,
        format!(
            "GET http://{evil_host}/github/repos/acme/abs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let _ = a;
    // What else the host and agent can read: metrics, identity, contracts.
    let m = get(port, "/_cada/metrics", "");
    assert_absent("the proxy's metrics", m.as_bytes(), &secret);
    for route in ["/v1/identity", "/v1/contracts", "/_cada/metrics"] {
        let (_, b) = http(&st.sock, "GET", route, None, Duration::from_secs(5)).unwrap();
        assert_absent(route, b.as_bytes(), &secret);
    }
    assert!(
        evil_seen.lock().unwrap().is_empty(),
        "another host was reached"
    );
    for r in seen.lock().unwrap().iter() {
        assert!(
            r.path().starts_with("/repos/acme/") && !r.target.contains(".."),
            "the upstream got a call outside the grant: {}",
            r.head
        );
        assert!(
            r.method == "GET" || r.method == "POST",
            "the upstream got method {}",
            r.method
        );
        assert!(r.body.is_empty());
    }
    st.assert_logs_clean(&secret);
}

/// Held: Host / forwarding overrides, request smuggling through the agent's endpoint, odd
/// and many headers; every request the upstream gets has Host = the sealed origin, and no
/// smuggled second request reaches it.
#[test]
fn host_overrides_and_smuggling_reach_nothing_else() {
    let secret = format!("ghp_Hdrs{}", nonce());
    let Sealed {
        dir: _dir,
        st,
        up,
        seen,
        ..
    } = sealed(
        "attack-headers",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    let (_p, port) = st.proxy(&["github"]);
    let host = format!("127.0.0.1:{port}");
    let reqs: Vec<String> = vec![
        format!("GET /github/repos/acme/a HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/b HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: evil.example\r\nForwarded: host=evil.example\r\nX-Original-URL: /repos/evil\r\nX-Rewrite-URL: /repos/evil\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/c HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        format!("POST /github/repos/acme/d HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 60\r\nConnection: close\r\n\r\nhello"),
        format!("POST /github/repos/acme/e HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\nConnection: close\r\n\r\n0\r\n\r\nGET /repos/evil/x HTTP/1.1\r\nHost: localhost:{up}\r\n\r\n"),
        format!("POST /github/repos/acme/f HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n"),
        format!("GET /github/repos/acme/g HTTP/1.1\r\nHost: {host}\r\nX-A: 1\r\n folded: evil\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/h HTTP/1.1\r\nHost: {host}\r\nX A: 1\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/i HTTP/1.1\r\nHost: {host}\r\nX-A: 1\rX-B: 2\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/j HTTP/1.1\r\nHost: {host}\r\nConnection: close, authorization\r\n\r\n"),
        format!("GET /github/repos/acme/k HTTP/1.1\r\nHost: {host}\r\n{}Connection: close\r\n\r\n", (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()),
        format!("GET /github/repos/acme/l HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer mine\r\nConnection: close\r\n\r\n"),
        format!("TRACE /github/repos/acme/m HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("CONNECT localhost:{up} HTTP/1.1\r\nHost: localhost:{up}\r\nConnection: close\r\n\r\n"),
        format!("GET /github/repos/acme/n HTTP/1.0\r\n\r\n"),
    ];
    for r in &reqs {
        let _ = raw(port, r.as_bytes());
    }
    // The daemon API: header injection the proxy's parser would stop.
    for (k, v) in [
        ("X-A", "1\r\nHost: evil.example"),
        ("X-A", "1\nX-B: 2"),
        ("X-A", "1\u{0}"),
        ("X A", "1"),
        ("Host\r\nX", "1"),
        (":authority", "evil.example"),
        ("host", "evil.example"),
    ] {
        let (s, b) = st.call("github", "GET", "/repos/acme/z", &[(k, v)], b"");
        assert!((400..500).contains(&s) || s == 200, "{k:?}: {s} {b}");
    }
    let many: Vec<(String, String)> = (0..100).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let (s, _) = st.call("github", "GET", "/repos/acme/many", &many, b"");
    assert!((400..500).contains(&s), "100 headers: {s}");
    assert!(
        seen.lock().unwrap().len() >= 5,
        "too few calls reached the upstream"
    );
    for r in seen.lock().unwrap().iter() {
        assert_eq!(
            r.header("host"),
            Some(format!("localhost:{up}").as_str()),
            "{}",
            r.head
        );
        assert!(r.path().starts_with("/repos/acme/"), "{}", r.head);
        let hosts = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("host"))
            .count();
        assert_eq!(hosts, 1, "{}", r.head);
        for bad in [
            "x-forwarded-host",
            "forwarded",
            "x-original-url",
            "x-rewrite-url",
            "transfer-encoding",
        ] {
            assert!(
                r.header(bad).is_none(),
                "{bad} reached the upstream: {}",
                r.head
            );
        }
        assert!(!r.head.contains("evil"), "{}", r.head);
        let auths = r
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .count();
        assert_eq!(auths, 1, "{}", r.head);
        assert!(r.method == "GET" || r.method == "POST", "{}", r.head);
    }
    st.assert_logs_clean(&secret);
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finding 6 (low): another secret's placeholder in a spelling the checks do not know
/// (upper case, double percent-encoding, JSON `\u003a`) travels to this secret's upstream
/// although "a request that carries a placeholder to any host other than its secret's is
/// refused".
#[test]
fn another_secrets_placeholder_never_reaches_this_upstream_in_any_spelling() {
    let secret = format!("ghp_Ph{}", nonce());
    let Sealed {
        dir: _dir,
        st,
        up,
        seen,
        ca,
        ..
    } = sealed(
        "attack-placeholder",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    // A second secret for the same upstream, installed but never granted.
    st.seal_install(
        &static_usage("stripe", up, &ca, "Bearer {}"),
        b"sk_live_adversary_stripe",
    );
    let (_p, port) = st.proxy(&["github", "stripe"]);
    let host = format!("127.0.0.1:{port}");
    let variants: Vec<(&str, String)> = vec![
        ("raw header (control)", "GET /github/repos/acme/p0 HTTP/1.1\r\nHost: H\r\nX-Key: cada:stripe\r\nConnection: close\r\n\r\n".into()),
        ("upper case", "GET /github/repos/acme/p1 HTTP/1.1\r\nHost: H\r\nX-Key: CADA:stripe\r\nConnection: close\r\n\r\n".into()),
        ("mixed case", "GET /github/repos/acme/p2 HTTP/1.1\r\nHost: H\r\nX-Key: Cada:Stripe\r\nConnection: close\r\n\r\n".into()),
        ("double percent in a header", "GET /github/repos/acme/p3 HTTP/1.1\r\nHost: H\r\nX-Key: cada%253Astripe\r\nConnection: close\r\n\r\n".into()),
        ("double percent in the query", "GET /github/repos/acme/p4?k=cada%253Astripe HTTP/1.1\r\nHost: H\r\nConnection: close\r\n\r\n".into()),
        ("cookie", "GET /github/repos/acme/p5 HTTP/1.1\r\nHost: H\r\nCookie: a=1; key=cada:stripe\r\nConnection: close\r\n\r\n".into()),
        ("JSON escape in the body", {
            let b = r#"{"key":"cada\u003astripe"}"#;
            format!("POST /github/repos/acme/p6 HTTP/1.1\r\nHost: H\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())
        }),
        ("multipart, quoted-printable", {
            let b = "--XX\r\nContent-Disposition: form-data; name=\"k\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncada=3Astripe\r\n--XX--\r\n";
            format!("POST /github/repos/acme/p7 HTTP/1.1\r\nHost: H\r\nContent-Type: multipart/form-data; boundary=XX\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())
        }),
    ];
    let mut leaked = Vec::new();
    for (what, r) in &variants {
        let before = seen.lock().unwrap().len();
        let a = raw(
            port,
            r.replace("Host: H", &format!("Host: {host}")).as_bytes(),
        );
        let got = seen.lock().unwrap()[before..].to_vec();
        for g in got {
            let text = format!("{}{}", g.head, String::from_utf8_lossy(&g.body));
            let norm = pct_decode(&pct_decode(&text))
                .replace("\\u003a", ":")
                .replace("=3A", ":")
                .to_ascii_lowercase();
            if norm.contains("cada:stripe") {
                leaked.push(format!("{what} (answer {})", status(&a)));
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "stripe's placeholder reached github's upstream: {leaked:?}"
    );
}

/// Finding 5 (medium): two bundles of one name sealed in the same second — the host rolled
/// the newer one back to the older at will (`iat` ties were accepted). Now a tie is accepted
/// only for the very same bundle, and `cada-owner seal --like` seals the successor at least
/// one second later (tests/tests/e2e/sealing.rs), as v2 here.
#[test]
fn a_bundle_sealed_in_the_same_second_cannot_roll_back_its_successor() {
    let dir = TempDir::new("attack-rollback");
    let d = &dir.0;
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let (up, seen) = upstream(tls.server.clone(), echo_handler());
    let st = stack(d, true, true);
    st.grant(
        "c.jwt",
        &[("github", format!("https://localhost:{up}/"))],
        &["GET"],
    );
    let t = now();
    let old_v = format!("ghp_Old{}", nonce());
    let new_v = format!("ghp_New{}", nonce());
    // Control: an older bundle with a wider prefix is refused after the newer one.
    let mut wide = static_usage("github", up, &ca, "Bearer {}");
    wide["path_prefix"] = "/".into();
    let narrow = static_usage("github", up, &ca, "Bearer {}");
    let older = st.seal("older.sealed", &wide, old_v.as_bytes(), t - 10);
    let v1 = st.seal("v1.sealed", &wide, old_v.as_bytes(), t);
    let twin = st.seal("twin.sealed", &narrow, new_v.as_bytes(), t);
    let v2 = st.seal("v2.sealed", &narrow, new_v.as_bytes(), t + 1);
    assert_eq!(st.install_bundle(&v1).0, 0);
    // Same second, another bundle: whichever came first stays (no swapping back and forth).
    let (c, out) = st.install_bundle(&twin);
    assert!(c != 0 && out.contains("secret.replayed"), "{out}");
    assert_eq!(st.install_bundle(&v1).0, 0, "re-installing the same bundle");
    assert_eq!(st.install_bundle(&v2).0, 0);
    let (c, out) = st.install_bundle(&older);
    assert_ne!(c, 0, "an older bundle rolled back: {out}");
    assert!(out.contains("secret.replayed"), "{out}");
    // The host re-installs v1 (a second older: the rotated-away value and the wider prefix).
    let (c, out) = st.install_bundle(&v1);
    let (s, b) = st.call("github", "GET", "/other/x", &[], b"");
    let _ = s;
    let last = seen
        .lock()
        .unwrap()
        .last()
        .map(|r| r.head.clone())
        .unwrap_or_default();
    assert!(
        c != 0 && out.contains("secret.replayed"),
        "the same-second older bundle was accepted again ({out}); the call outside the new \
         prefix then answered {s} {b}, the upstream saw: {last}"
    );
}

/// A CA issuing leaves for `names` (each its own server config), and its PEM.
fn ca_with_leaves(leaves: &[(&[&str], bool)]) -> (String, Vec<Arc<rustls::ServerConfig>>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "owner CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let mut out = Vec::new();
    for (names, expired) in leaves {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(
            names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        )
        .unwrap();
        if *expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let leaf = p.signed_by(&k, &issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(k.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        out.push(Arc::new(cfg));
    }
    (ca_cert.pem(), out)
}

/// Held: a hostile relay that connects the enclave to another server whose certificate the
/// owner's own CA issued — for another host name, or expired — or that flips a byte of the
/// upstream's TLS records: `secret.tls`/`secret.upstream`, and that server reads nothing.
#[test]
fn a_relay_to_a_sibling_certificate_or_a_tampering_relay_is_refused() {
    let dir = TempDir::new("attack-relay");
    let d = &dir.0;
    let secret = format!("ghp_Relay{}", nonce());
    let (ca_pem, cfgs) = ca_with_leaves(&[
        (&["localhost"], false),
        (&["evil.example"], false),
        (&["localhost"], true),
    ]);
    let ca = pem_b64(&ca_pem);
    let (real, real_seen) = upstream(cfgs[0].clone(), echo_handler());
    let (other, other_seen) = upstream(cfgs[1].clone(), echo_handler());
    let (expired, expired_seen) = upstream(cfgs[2].clone(), echo_handler());
    // The hostile relay: mode decides where it connects and whether it flips a byte.
    let mode = Arc::new(Mutex::new(0u8));
    let relay = d.join("relay.sock");
    let l = std::os::unix::net::UnixListener::bind(&relay).unwrap();
    {
        let mode = mode.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let m = *mode.lock().unwrap();
                std::thread::spawn(move || {
                    let mut b = [0u8; 1];
                    while b[0] != b'\n' && c.read_exact(&mut b).is_ok() {}
                    let port = match m {
                        1 => other,
                        2 => expired,
                        _ => real,
                    };
                    let Ok(up) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    c.write_all(b"OK\n").unwrap();
                    let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c2, &mut up2);
                    });
                    let (mut up, mut c) = (up, c);
                    if m == 4 {
                        up.set_read_timeout(Some(Duration::from_millis(700)))
                            .unwrap();
                    }
                    let mut buf = [0u8; 16384];
                    let mut total = 0usize;
                    loop {
                        let n = match up.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        // Mode 3: flip one byte well after the handshake.
                        if m == 3 && total < 6000 && total + n > 6000 {
                            buf[6000 - total] ^= 0x55;
                        }
                        total += n;
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c.shutdown(std::net::Shutdown::Both);
                });
            }
        });
    }
    let st = stack(d, true, false);
    st.seal_install(
        &static_usage("github", real, &ca, "Bearer {}"),
        secret.as_bytes(),
    );
    st.grant(
        "c.jwt",
        &[("github", format!("https://localhost:{real}/repos/acme/"))],
        &["GET"],
    );
    for (m, what) in [
        (1u8, "another host's certificate"),
        (2, "an expired certificate"),
    ] {
        *mode.lock().unwrap() = m;
        let (s, b) = st.call("github", "GET", "/repos/acme/x", &[], b"");
        assert_eq!(s, 403, "{what}: {s} {b}");
        assert_eq!(code_of(&b), "secret-denied", "{what}: {b}");
        assert!(b.contains("secret.tls"), "{what}: {b}");
    }
    assert!(other_seen.lock().unwrap().is_empty());
    assert!(expired_seen.lock().unwrap().is_empty());
    assert!(real_seen.lock().unwrap().is_empty());
    // Mode 4: the relay cuts the connection (at a record boundary, in the upstream's pause)
    // of a close-delimited answer: the enclave must not return the first part as the whole.
    *mode.lock().unwrap() = 4;
    let (s, b) = st.call("github", "GET", "/repos/acme/slow-close", &[], b"");
    if s == 200 {
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        let body = base64::engine::general_purpose::STANDARD
            .decode(v["body"].as_str().unwrap_or(""))
            .unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&body).contains("second-part"),
            "a truncated answer was returned as complete: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Mode 3: the real upstream, a byte flipped in its answer (a long echo answer so that
    // the flip lands in application data).
    *mode.lock().unwrap() = 3;
    let pad = "p".repeat(7000);
    let (s, b) = st.call(
        "github",
        "GET",
        "/repos/acme/echo-range",
        &[("x-pad", pad.as_str())],
        b"",
    );
    assert!(s >= 400, "a tampered answer was returned: {s}");
    assert_absent("the refusal", b.as_bytes(), &secret);
    st.assert_logs_clean(&secret);
}

/// Finding 7 (low): the OAuth usage's own token endpoint is a credential endpoint — but
/// only when the URL equals it as a string: with a query (or a trailing slash) the agent
/// reaches it with the injected access token.
#[test]
fn the_oauth_token_endpoint_is_refused_in_every_spelling() {
    let dir = TempDir::new("attack-oauth-ep");
    let d = &dir.0;
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let at = format!("at_{}", nonce());
    let at2 = at.clone();
    let h: Handler = Arc::new(move |r: &Req| {
        if r.method == "POST" && r.path() == "/repos/acme/oauth/refresh" {
            let v = serde_json::json!({"access_token": at2, "token_type": "Bearer", "expires_in": 3600});
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                v.to_string().as_bytes(),
            )
        } else {
            respond("200 OK", "", b"{\"ok\":true}")
        }
    });
    let (up, seen) = upstream(tls.server.clone(), h);
    let st = stack(d, true, true);
    let mut usage = static_usage("linear", up, &ca, "Bearer {}");
    usage["kind"] = serde_json::json!({"oauth": {
        "token_endpoint": format!("https://localhost:{up}/repos/acme/oauth/refresh"),
        "client_id": "cid", "grant": "client_credentials", "client_auth": "basic"}});
    st.seal_install(&usage, br#"{"client_secret":"cs_adversary_0123456789"}"#);
    st.grant(
        "c.jwt",
        &[("linear", format!("https://localhost:{up}/repos/acme/"))],
        &["GET", "POST"],
    );
    let mut reached = Vec::new();
    for p in [
        "/repos/acme/oauth/refresh",
        "/repos/acme/oauth/refresh?x=1",
        "/repos/acme/oauth/refresh?",
        "/repos/acme/oauth/refresh/",
    ] {
        let (s, b) = st.call("linear", "POST", p, &[], b"grant_type=client_credentials");
        if s != 403 || !b.contains("secret.credential_endpoint") {
            reached.push(format!("{p}: {s} {b}"));
        }
    }
    let agent_calls = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.header("authorization").is_some_and(|a| a.contains(&at)))
        .map(|r| r.target.clone())
        .collect::<Vec<_>>();
    assert!(
        reached.is_empty(),
        "the token endpoint was reached with the injected token: {reached:?}; upstream saw \
         {agent_calls:?}"
    );
}

/// Held: on sim without `--dev-secrets` a sealed bundle is refused `secret.sim_platform`,
/// and `/v1/identity` says secrets are not accepted.
#[test]
fn sim_without_the_dev_flag_refuses_secrets() {
    let dir = TempDir::new("attack-nodev");
    let d = &dir.0;
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let st = stack(d, false, true);
    let id = st.identity();
    assert_eq!(id["secrets"]["accepted"], serde_json::json!(false), "{id}");
    let f = st.seal(
        "x.sealed",
        &static_usage("github", 8443, &ca, "Bearer {}"),
        b"ghp_nodev_123456789",
        now(),
    );
    let (c, out) = st.install_bundle(&f);
    assert_ne!(c, 0, "{out}");
    assert!(out.contains("secret.sim_platform"), "{out}");
    let (s, b) = st.call("github", "GET", "/repos/acme/x", &[], b"");
    assert!(
        b.contains("secret.unknown") && s == 404 || s == 403,
        "{s} {b}"
    );
}

/// The answers of `redirects_compression_and_answer_headers_carry_nothing_out`.
fn answers_handler(agent_port: u16) -> Handler {
    Arc::new(move |r: &Req| {
        let auth = r.header("authorization").unwrap_or("").to_owned();
        let tok = auth.split_once(' ').map_or("", |(_, t)| t).to_owned();
        let p = r.path().rsplit('/').next().unwrap_or("").to_owned();
        let loc = |l: String| format!("Location: {l}\r\n");
        match p.as_str() {
            "r301" => respond(
                "301 Moved",
                &loc(format!("https://127.0.0.1:{agent_port}/steal")),
                b"",
            ),
            "r307" => respond(
                "307 Temporary Redirect",
                &loc(format!("//127.0.0.1:{agent_port}/steal")),
                b"",
            ),
            "r308" => respond(
                "308 Permanent Redirect",
                &loc("/repos/acme/other".into()),
                b"",
            ),
            "rtok" => respond(
                "302 Found",
                &loc(format!(
                    "https://127.0.0.1:{agent_port}/cb?access_token={tok}"
                )),
                b"",
            ),
            "wwwauth" => respond(
                "401 Unauthorized",
                &format!("WWW-Authenticate: Bearer error=\"invalid_token\", token=\"{tok}\"\r\n"),
                b"",
            ),
            "cookie" => respond(
                "200 OK",
                &format!("Set-Cookie: s={tok}\r\nSet-Cookie2: t={tok}\r\n"),
                b"{}",
            ),
            "gzip" => {
                let body = gzip(format!("{{\"auth\":\"{auth}\"}}").as_bytes());
                respond("200 OK", "Content-Encoding: gzip\r\n", &body)
            }
            "gzip-upper" => {
                let body = gzip(format!("{{\"auth\":\"{auth}\"}}").as_bytes());
                respond(
                    "200 OK",
                    "Content-Encoding: identity\r\nContent-Encoding: GZIP\r\n",
                    &body,
                )
            }
            "te-gzip" => {
                let body = gzip(format!("{{\"auth\":\"{auth}\"}}").as_bytes());
                let mut out =
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
                out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
                out.extend_from_slice(&body);
                out.extend_from_slice(b"\r\n0\r\n\r\n");
                out
            }
            "trailer" => {
                let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Echo\r\n\r\n2\r\nok\r\n0\r\n".to_vec();
                out.extend_from_slice(format!("X-Echo: {auth}\r\n\r\n").as_bytes());
                out
            }
            "early-hints" => {
                let mut out =
                    format!("HTTP/1.1 103 Early Hints\r\nLink: <{tok}>; rel=preload\r\n\r\n")
                        .into_bytes();
                out.extend_from_slice(&respond("200 OK", "", b"{}"));
                out
            }
            _ => respond("200 OK", "", b"{}"),
        }
    })
}

/// Held (and one probe): redirects of every kind are returned, never followed, and one whose
/// `Location` carries the credential is refused (`secret.reflected`); a compressed answer is refused,
/// including one compressed as a transfer-coding (`Transfer-Encoding: gzip, chunked`);
/// `Set-Cookie`, trailers and `WWW-Authenticate` echoes carry nothing out.
#[test]
fn redirects_compression_and_answer_headers_carry_nothing_out() {
    answers_on(&["gzip", "gzip-upper"], true);
}

/// Finding 8: an answer compressed as a transfer-coding (`Transfer-Encoding: gzip, chunked`)
/// passes the compression refusal; the agent gunzips the credential.
#[test]
fn a_gzip_transfer_coding_is_refused_like_a_content_coding() {
    answers_on(&["te-gzip"], false);
}

fn answers_on(compressed: &[&str], the_rest: bool) {
    let secret = format!("ghp_Ans{}", nonce());
    let agent_host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_port = agent_host.local_addr().unwrap().port();
    agent_host.set_nonblocking(true).unwrap();
    let h = answers_handler(agent_port);
    let Sealed {
        dir: _dir,
        st,
        seen,
        ..
    } = sealed(
        "attack-answers",
        h,
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET"],
    );
    let (_p, port) = st.proxy(&["github"]);
    let mut saw = Vec::new();
    let rest: &[(&str, u16)] = if the_rest {
        &[
            ("r301", 301),
            ("r307", 307),
            ("r308", 308),
            // Reflections of the credential: refused whole, never rewritten.
            ("rtok", 502),
            ("wwwauth", 502),
            ("cookie", 200),
            ("trailer", 200),
            ("early-hints", 200),
        ]
    } else {
        &[]
    };
    for &(p, want) in rest {
        let before = seen.lock().unwrap().len();
        let a = get(port, &format!("/github/repos/acme/{p}"), "");
        assert_eq!(status(&a), want, "{p}: {a}");
        assert_eq!(
            seen.lock().unwrap().len(),
            before + 1,
            "{p}: a redirect was followed"
        );
        assert!(
            !a.to_ascii_lowercase().contains("\r\nset-cookie"),
            "{p}: {a}"
        );
        saw.extend_from_slice(a.as_bytes());
    }
    for p in compressed {
        let all = raw_bytes(
            port,
            format!(
                "GET /github/repos/acme/{p} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let at = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(all.len(), |i| i + 4);
        let body = all[at..].to_vec();
        let a = String::from_utf8_lossy(&all).into_owned();
        // The proxy may answer chunked: take the gzip member wherever it starts.
        let gz = body
            .windows(2)
            .position(|w| w == [0x1f, 0x8b])
            .map_or(&body[..0], |i| &body[i..]);
        let un = gunzip(gz).unwrap_or_default();
        assert_absent(&format!("{p} (gunzipped)"), &un, &secret);
        saw.extend_from_slice(a.as_bytes());
    }
    assert!(
        agent_host.accept().is_err(),
        "a redirect reached the agent's host"
    );
    assert_absent("the answers", &saw, &secret);
    st.assert_logs_clean(&secret);
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut c = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    c.wait_with_output().unwrap().stdout
}

fn gunzip(b: &[u8]) -> Option<Vec<u8>> {
    if b.len() < 2 || b[0] != 0x1f || b[1] != 0x8b {
        return None;
    }
    let mut c = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    c.stdin.take()?.write_all(b).ok()?;
    Some(c.wait_with_output().ok()?.stdout)
}

/// Held: 16 opens in parallel under a budget of 3 — at most 3 succeed.
#[test]
fn parallel_opens_do_not_exceed_the_budget() {
    let dir = TempDir::new("attack-opens");
    let d = &dir.0;
    let st = stack(d, true, true);
    let did = st.identity()["did"].as_str().unwrap().to_owned();
    owner_to(
        d,
        "o.jwt",
        &[
            "grant",
            "--key",
            &st.key,
            "--subject",
            &did,
            "--open",
            "report=3",
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, _, err) = parent(
        &st.sock,
        &["contract", "install", d.join("o.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    let id = st.identity();
    let target = cada_secrets::SealTarget {
        hpke: cada_secrets::HpkePublicKey::from_b64(id["hpke"]["key"].as_str().unwrap()).unwrap(),
        jkt: id["jkt"].as_str().unwrap().to_owned(),
    };
    let env = cada_secrets::data::seal_data(&target, "report", b"the numbers").unwrap();
    let body = serde_json::json!({
        "envelope": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&env),
        "label": "report",
    })
    .to_string();
    let sock = st.sock.clone();
    let hs: Vec<_> = (0..16)
        .map(|_| {
            let (sock, body) = (sock.clone(), body.clone());
            std::thread::spawn(move || {
                http(
                    &sock,
                    "POST",
                    "/v1/open",
                    Some(&body),
                    Duration::from_secs(30),
                )
                .map(|(s, _)| s)
                .unwrap_or(0)
            })
        })
        .collect();
    let ok = hs
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|s| *s == 200)
        .count();
    assert!(ok <= 3, "{ok} opens succeeded under a budget of 3");
    assert!(ok >= 1, "no open succeeded at all");
}

/// Finding 9: endpoints that mint NEW standing credentials from the injected one are not in
/// the credential-endpoint list, so an agent granted POST on a wide prefix walks away with
/// a credential of its own (GitLab's token rotation also revokes the sealed one).
#[test]
fn endpoints_that_mint_new_credentials_are_refused() {
    let secret = format!("glpat-Sealed{}", nonce());
    let h: Handler = Arc::new(|r: &Req| {
        let p = r.path();
        let fresh = nonce();
        let body = if p.ends_with("/personal_access_tokens/self/rotate") {
            format!("{{\"id\":1,\"token\":\"glpat-{fresh}\"}}")
        } else if p.ends_with("/deploy_tokens") {
            format!("{{\"id\":2,\"username\":\"d\",\"token\":\"gldt-{fresh}\"}}")
        } else if p.ends_with("/ephemeral_keys") {
            format!("{{\"id\":\"ephkey_1\",\"secret\":\"ek_live_{fresh}\"}}")
        } else if p.ends_with("/Keys.json") {
            format!("{{\"sid\":\"SK1\",\"secret\":\"twsk_{fresh}\"}}")
        } else if p.ends_with("/token.json") {
            format!("{{\"access_token\":\"doorkeeper-{fresh}\",\"token_type\":\"Bearer\"}}")
        } else if p.ends_with("/oauth.v2.access") {
            format!("{{\"ok\":true,\"access_token\":\"xoxb-{fresh}\"}}")
        } else {
            "{}".to_owned()
        };
        respond(
            "201 Created",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        )
    });
    let Sealed { dir: _dir, st, .. } = sealed(
        "attack-mint",
        h,
        "gitlab",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    let mut minted = Vec::new();
    for p in [
        "/repos/acme/api/v4/personal_access_tokens/self/rotate",
        "/repos/acme/api/v4/groups/1/deploy_tokens",
        "/repos/acme/v1/ephemeral_keys",
        "/repos/acme/2010-04-01/Accounts/AC1/Keys.json",
        "/repos/acme/api/oauth.v2.access",
        // Rails' `.:format` suffix: Doorkeeper's /oauth/token also answers /oauth/token.json.
        "/repos/acme/oauth/token.json",
    ] {
        let (s, b) = st.call("gitlab", "POST", p, &[], b"");
        if s == 200 {
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            let body = base64::engine::general_purpose::STANDARD
                .decode(v["body"].as_str().unwrap_or(""))
                .unwrap_or_default();
            minted.push(format!("{p} -> {}", String::from_utf8_lossy(&body)));
        }
    }
    assert!(
        minted.is_empty(),
        "the agent received newly minted credentials: {minted:#?}"
    );
}

/// Finding 11 (low): an endpoint that answers 401 makes the enclave drop its OAuth access
/// token, so an agent calling it in a loop makes one token request per call (a refresh
/// storm at the provider, which may throttle or lock the client).
#[test]
fn an_agent_cannot_drive_a_refresh_storm_with_401s() {
    let dir = TempDir::new("attack-storm");
    let d = &dir.0;
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let h: Handler = Arc::new(|r: &Req| {
        if r.method == "POST" && r.path() == "/oauth/issue" {
            let v = serde_json::json!({"access_token": format!("at_{}", nonce()), "token_type": "Bearer", "expires_in": 3600});
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                v.to_string().as_bytes(),
            )
        } else {
            respond("401 Unauthorized", "", b"{}")
        }
    });
    let (up, seen) = upstream(tls.server.clone(), h);
    let st = stack(d, true, true);
    let mut usage = static_usage("linear", up, &ca, "Bearer {}");
    usage["kind"] = serde_json::json!({"oauth": {
        "token_endpoint": format!("https://localhost:{up}/oauth/issue"),
        "client_id": "cid", "grant": "client_credentials", "client_auth": "basic"}});
    st.seal_install(&usage, br#"{"client_secret":"cs_adversary_0123456789"}"#);
    st.grant(
        "c.jwt",
        &[("linear", format!("https://localhost:{up}/repos/acme/"))],
        &["GET"],
    );
    for _ in 0..10 {
        let (s, _) = st.call("linear", "GET", "/repos/acme/always401", &[], b"");
        assert_eq!(s, 200);
    }
    let token_requests = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path() == "/oauth/issue")
        .count();
    assert!(
        token_requests <= 3,
        "10 agent calls to a 401 endpoint cost {token_requests} token requests"
    );
}

/// Finding 1b: the request echoed base64-encoded as a whole (the credential at an offset
/// that is not a multiple of 3) passes redaction; the agent decodes it.
#[test]
fn an_echo_of_the_request_in_base64_does_not_leak() {
    let secret = format!("ghp_B64dump{}", nonce());
    let Sealed { dir: _dir, st, .. } = sealed(
        "attack-b64",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET"],
    );
    let (_p, port) = st.proxy(&["github"]);
    let a = get(port, "/github/repos/acme/dump", "");
    assert_eq!(status(&a), 502, "{a}");
    assert_eq!(code_of(body_of(&a)), "secret.reflected", "{a}");
    let v: serde_json::Value = serde_json::from_str(body_of(&a)).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v["content"].as_str().unwrap_or(""))
        .unwrap_or_default();
    assert_absent("the decoded dump", &decoded, &secret);
}

/// Finding 13: method-override headers pass, so an agent granted GET+POST makes the upstream
/// run DELETE/PUT/PATCH (Google APIs, Rails/Laravel/Express method-override middleware,
/// many API gateways honour them on POST).
#[test]
fn method_override_headers_do_not_widen_the_granted_methods() {
    let secret = format!("ghp_Ovr{}", nonce());
    let Sealed {
        dir: _dir,
        st,
        seen,
        ..
    } = sealed(
        "attack-override",
        echo_handler(),
        "github",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    let mut effective = Vec::new();
    for (k, v) in [
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-HTTP-Method", "PUT"),
        ("X-Method-Override", "PATCH"),
    ] {
        let before = seen.lock().unwrap().len();
        let (s, _) = st.call("github", "POST", "/repos/acme/app", &[(k, v)], b"{}");
        for r in seen.lock().unwrap()[before..].iter() {
            // What a method-override-honouring upstream would run.
            let m = [
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
            ]
            .iter()
            .find_map(|h| r.header(h))
            .unwrap_or(&r.method)
            .to_owned();
            if m != "GET" && m != "POST" {
                effective.push(format!("{k}: {v} -> upstream runs {m} (answer {s})"));
            }
        }
    }
    assert!(
        effective.is_empty(),
        "methods outside the grant: {effective:?}"
    );
}

/// Finding 14 (low): the parent's egress relay connects any `host:port` it is told, for
/// whoever reaches its socket: an open TCP proxy from the parent (to its loopback
/// services, the cloud metadata service 169.254.169.254, the private network).
#[test]
fn the_egress_relay_is_not_an_open_tcp_proxy() {
    let dir = TempDir::new("attack-relay-open");
    let d = &dir.0;
    // A plain service on the parent's loopback that no usage names.
    let svc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let svc_port = svc.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<u8>>> = Arc::default();
    {
        let got = got.clone();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = svc.accept() {
                let mut b = [0u8; 256];
                let n = c.read(&mut b).unwrap_or(0);
                got.lock().unwrap().extend_from_slice(&b[..n]);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nmetadata");
            }
        });
    }
    let _st = stack(d, true, true);
    let mut c = std::os::unix::net::UnixStream::connect(d.join("relay.sock")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(format!("CADA-EGRESS/1 127.0.0.1:{svc_port}\n").as_bytes())
        .unwrap();
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while c.read_exact(&mut b).is_ok() {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    if line == b"OK\n" {
        let _ = c.write_all(b"GET /latest/meta-data/iam/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        std::thread::sleep(Duration::from_millis(100));
        panic!(
            "the relay connected an arbitrary loopback service for a local client: it got {:?}, \
             answered {:?}",
            String::from_utf8_lossy(&got.lock().unwrap()),
            String::from_utf8_lossy(&out)
        );
    }
}

/// Held: a hostile or broken token endpoint — another token type, a huge answer, CR/LF in
/// the token, an error that echoes the client secret, a redirect, a 5xx page echoing the
/// request — never puts the client secret or a token in what the agent or the logs see,
/// and each is refused with a `secret.oauth_*` code.
#[test]
fn hostile_token_endpoint_answers_are_refused_without_echo() {
    let dir = TempDir::new("attack-oauth-answers");
    let d = &dir.0;
    let cs = format!("cs_Adv{}", nonce());
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let h: Handler = Arc::new(|r: &Req| {
        let p = r.path().to_owned();
        let form = String::from_utf8_lossy(&r.body).into_owned();
        let auth = r.header("authorization").unwrap_or("").to_owned();
        let json = "Content-Type: application/json\r\n";
        match p.as_str() {
            "/t/mac" => respond(
                "200 OK",
                json,
                br#"{"access_token":"at_mac_0123456789","token_type":"mac"}"#,
            ),
            "/t/dpop" => respond(
                "200 OK",
                json,
                br#"{"access_token":"at_dpop_0123456789","token_type":"DPoP"}"#,
            ),
            "/t/huge" => {
                let big = format!(
                    "{{\"access_token\":\"{}\",\"token_type\":\"Bearer\"}}",
                    "a".repeat(200_000)
                );
                respond("200 OK", json, big.as_bytes())
            }
            "/t/crlf" => respond(
                "200 OK",
                json,
                br#"{"access_token":"at_x\r\nX-Evil: 1","token_type":"Bearer"}"#,
            ),
            "/t/echo-err" => {
                let v = serde_json::json!({"error": "invalid_client", "error_description": format!("bad client {auth} {form}")});
                respond("401 Unauthorized", json, v.to_string().as_bytes())
            }
            "/t/err-code-echo" => {
                let v = serde_json::json!({"error": format!("{auth}{form}").replace([' ', ':', '=', '&', '+', '/'], "_")});
                respond("400 Bad Request", json, v.to_string().as_bytes())
            }
            "/t/redirect" => respond(
                "302 Found",
                &format!("Location: https://127.0.0.1:1/?{form}\r\n"),
                b"",
            ),
            "/t/5xx" => respond(
                "500 Internal Server Error",
                "",
                format!("{auth} {form}").as_bytes(),
            ),
            "/t/html" => respond(
                "200 OK",
                "Content-Type: text/html\r\n",
                format!("<p>{auth} {form}</p>").as_bytes(),
            ),
            _ => respond("200 OK", "", b"{}"),
        }
    });
    let (up, _seen) = upstream(tls.server.clone(), h);
    let st = stack(d, true, true);
    let modes = [
        "mac",
        "dpop",
        "huge",
        "crlf",
        "echo-err",
        "err-code-echo",
        "redirect",
        "5xx",
        "html",
    ];
    let mut grants = Vec::new();
    for m in modes {
        let name = format!("o-{m}");
        let mut usage = static_usage(&name, up, &ca, "Bearer {}");
        usage["kind"] = serde_json::json!({"oauth": {
            "token_endpoint": format!("https://localhost:{up}/t/{m}"),
            "client_id": "cid", "grant": "client_credentials", "client_auth": "basic"}});
        st.seal_install(&usage, format!("{{\"client_secret\":\"{cs}\"}}").as_bytes());
        grants.push((name, format!("https://localhost:{up}/repos/acme/")));
    }
    let g: Vec<(&str, String)> = grants
        .iter()
        .map(|(n, p)| (n.as_str(), p.clone()))
        .collect();
    st.grant("c.jwt", &g, &["GET"]);
    let names: Vec<String> = modes.iter().map(|m| format!("o-{m}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (_p, port) = st.proxy(&refs);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("cid:{cs}"));
    let mut saw = Vec::new();
    for m in modes {
        let a = get(port, &format!("/o-{m}/repos/acme/x"), "");
        assert!(status(&a) >= 400, "{m}: {a}");
        let c = code_of(body_of(&a));
        assert!(c.starts_with("secret.oauth"), "{m}: {c} {a}");
        saw.extend_from_slice(a.as_bytes());
    }
    assert_absent("the refusals", &saw, &cs);
    assert_absent("the refusals", &saw, &basic);
    st.assert_logs_clean(&cs);
    st.assert_logs_clean(&basic);
}

/// Held: the host takes the COSE_Encrypt0 out of a sealed secret bundle and asks `open`
/// (data sealed to the agent, whose plaintext comes back to the host) to decrypt it under a
/// granted label: the contexts differ (domain separation in the AEAD's external_aad), so
/// it is refused and the secret never comes back.
#[test]
fn a_secret_bundles_ciphertext_cannot_be_opened_as_data() {
    let dir = TempDir::new("attack-crossop");
    let d = &dir.0;
    let secret = format!("ghp_Cross{}", nonce());
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let st = stack(d, true, true);
    let usage = static_usage("github", 8443, &ca, "Bearer {}");
    let f = st.seal("github.sealed", &usage, secret.as_bytes(), now());
    assert_eq!(st.install_bundle(&f).0, 0);
    let did = st.identity()["did"].as_str().unwrap().to_owned();
    owner_to(
        d,
        "o.jwt",
        &[
            "grant",
            "--key",
            &st.key,
            "--subject",
            &did,
            "--open",
            "github=5",
            "--open",
            "report=5",
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, _, err) = parent(
        &st.sock,
        &["contract", "install", d.join("o.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    // COSE_Sign1 = 18([protected, unprotected, payload, signature]); payload {"ct", "ctx"}.
    let bundle = std::fs::read(&f).unwrap();
    let v: ciborium::Value = ciborium::from_reader(&bundle[..]).unwrap();
    let arr = match v {
        ciborium::Value::Tag(18, b) => match *b {
            ciborium::Value::Array(a) => a,
            other => panic!("{other:?}"),
        },
        ciborium::Value::Array(a) => a,
        other => panic!("{other:?}"),
    };
    let payload = arr[2].as_bytes().unwrap().clone();
    let p: ciborium::Value = ciborium::from_reader(&payload[..]).unwrap();
    let ct = p
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_text() == Some("ct"))
        .map(|(_, v)| v.as_bytes().unwrap().clone())
        .unwrap();
    for label in ["github", "report"] {
        let body = serde_json::json!({
            "envelope": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&ct),
            "label": label,
        })
        .to_string();
        let (s, b) = http(
            &st.sock,
            "POST",
            "/v1/open",
            Some(&body),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_ne!(s, 200, "the bundle's ciphertext opened as data: {b}");
        assert!(b.contains("secret.tampered"), "{b}");
        assert_absent("the open refusal", b.as_bytes(), &secret);
    }
    st.assert_logs_clean(&secret);
}
