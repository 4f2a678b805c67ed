//! Second adversarial review of sealed secrets (issue 22), after the fixes for
//! docs/reviews/secrets-1.md: attempts to bypass them against the real binaries on `sim`.
//! Every test asserts the SECURE behaviour; an attack that still works is ignored with its
//! finding number (docs/reviews/secrets-2.md). The harness is
//! `secrets_harness`, shared with `secrets_attack`.
use super::secrets_harness::*;

/// The `secret.*` code of a daemon refusal (its problem detail starts with it).
fn refusal(b: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
    v["detail"]
        .as_str()
        .and_then(|d| d.split(':').next())
        .unwrap_or("")
        .to_owned()
}

/// The answer body of a daemon `POST /v1/secrets/call` that succeeded.
fn call_body(b: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(b).unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(v["body"].as_str().unwrap_or(""))
        .unwrap_or_default()
}

/// An upstream that reflects the request in ways honest servers do, at the agent's choice
/// of alignment (the query string pads the request head).
fn reflect_handler() -> Handler {
    Arc::new(|r: &Req| {
        let auth = r.header("authorization").unwrap_or("").to_owned();
        let p = r.path();
        if p.ends_with("/mime") {
            // The request stored and shown MIME-base64 (76-character lines, as Python's
            // base64.encodebytes, PHP's chunk_split or Java's MIME encoder write it).
            let b64 = base64::engine::general_purpose::STANDARD.encode(r.head.as_bytes());
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(76)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            respond(
                "200 OK",
                "Content-Type: text/plain\r\n",
                lines.join("\n").as_bytes(),
            )
        } else if p.ends_with("/hexdump") {
            // A request inspector's hex dump (`xxd`/`hexdump -C` style: bytes apart).
            let dump: Vec<String> = r.head.bytes().map(|b| format!("{b:02x}")).collect();
            respond(
                "200 OK",
                "Content-Type: text/plain\r\n",
                dump.join(" ").as_bytes(),
            )
        } else if p.ends_with("/nested") {
            // A log API: an event whose message is a JSON document holding the request's
            // JSON, each level written by a PHP-style encoder (`/` as `\/`).
            let php = |v: &serde_json::Value| v.to_string().replace('/', "\\/");
            let l1 = php(&serde_json::json!({"headers": {"Authorization": auth}}));
            let l2 = php(&serde_json::json!({"request": l1}));
            let l3 = php(&serde_json::json!({"event": {"message": l2}}));
            respond(
                "200 OK",
                "Content-Type: application/json\r\n",
                l3.as_bytes(),
            )
        } else if p.ends_with("/chunked") {
            // The credential split across chunk boundaries, one byte per chunk.
            let v = format!("{{\"auth\":\"{auth}\"}}");
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for b in v.bytes() {
                out.extend_from_slice(b"1\r\n");
                out.push(b);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        } else if p.ends_with("/trailer") {
            // The credential only in a trailer field.
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Echo\r\n\r\n\
                 2\r\nok\r\n0\r\nX-Echo: {auth}\r\n\r\n"
            )
            .into_bytes()
        } else if p.ends_with("/early-hints") {
            // The credential only in an informational 103 answer's headers.
            let mut out =
                format!("HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload; a=\"{auth}\"\r\nX-Echo: {auth}\r\n\r\n")
                    .into_bytes();
            out.extend(respond("200 OK", "", b"ok"));
            out
        } else if p.ends_with("/huge") {
            // More than the enclave reads, the credential at the very end.
            let mut body = vec![b'a'; 800 * 1024];
            body.extend_from_slice(auth.as_bytes());
            respond("200 OK", "", &body)
        } else {
            respond("200 OK", "", b"{}")
        }
    })
}

fn reflect_stack(dir: &TempDir, secret: &str) -> Stack {
    let tls = cada_net::test_tls::issue(&["localhost"]);
    let ca = pem_b64(&tls.ca_pem);
    let (up, _seen) = upstream(tls.server.clone(), reflect_handler());
    let st = stack(&dir.0, true, true);
    st.seal_install(
        &static_usage("aws", up, &ca, "Bearer {}"),
        secret.as_bytes(),
    );
    st.grant(
        "c.jwt",
        &[("aws", format!("https://localhost:{up}/repos/acme/"))],
        &["GET"],
    );
    st
}

/// R2-1: an upstream that shows the request MIME-base64 (a line break every 76
/// characters): the agent pads the request so that a break falls inside the credential's
/// base64, which the enclave then no longer finds; the agent joins the lines and decodes.
#[test]
fn a_mime_wrapped_base64_echo_does_not_leak() {
    let dir = TempDir::new("attack2-mime");
    let secret = format!("ghp_{}AdvMime{}", nonce(), nonce());
    let st = reflect_stack(&dir, &secret);
    let mut leaked = Vec::new();
    for pad in 0..8 {
        let path = format!("/repos/acme/mime?p={}", "x".repeat(pad * 7));
        let (s, b) = st.call("aws", "GET", &path, &[], b"");
        if s != 200 {
            assert_eq!(refusal(&b), "secret.reflected", "{b}");
            continue;
        }
        let text: String = String::from_utf8_lossy(&call_body(&b))
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let head = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default();
        if String::from_utf8_lossy(&head).contains(&secret) {
            leaked.push(pad);
        }
    }
    assert!(
        leaked.is_empty(),
        "the agent decoded the credential from the MIME-base64 echo at paddings {leaked:?}"
    );
    st.assert_logs_clean(&secret);
}

/// R2-1 (second form): a request inspector's hex dump with a space between bytes; the
/// enclave searches hex only unbroken.
#[test]
fn a_spaced_hex_dump_echo_does_not_leak() {
    let dir = TempDir::new("attack2-hexdump");
    let secret = format!("ghp_{}AdvHex{}", nonce(), nonce());
    let st = reflect_stack(&dir, &secret);
    let (s, b) = st.call("aws", "GET", "/repos/acme/hexdump", &[], b"");
    if s == 200 {
        let text: String = String::from_utf8_lossy(&call_body(&b))
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let head = hex::decode(text).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&head).contains(&secret),
            "the agent decoded the credential from a spaced hex dump"
        );
    } else {
        assert_eq!(refusal(&b), "secret.reflected", "{b}");
    }
}

/// R2-2: JSON inside JSON inside JSON, each level PHP-escaped: the enclave decodes two
/// levels, so a credential holding `/` still reads `\/` there; the agent decodes three.
#[test]
fn a_thrice_json_encoded_echo_does_not_leak() {
    let dir = TempDir::new("attack2-nested");
    let secret = format!("wJalrXUtnFEMI/K7MDENG/{}+adv", nonce());
    let st = reflect_stack(&dir, &secret);
    let (s, b) = st.call("aws", "GET", "/repos/acme/nested", &[], b"");
    if s == 200 {
        let body = call_body(&b);
        let l3: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let l2: serde_json::Value =
            serde_json::from_str(l3["event"]["message"].as_str().unwrap()).unwrap();
        let l1: serde_json::Value = serde_json::from_str(l2["request"].as_str().unwrap()).unwrap();
        let got = l1["headers"]["Authorization"].as_str().unwrap_or("");
        assert!(
            !got.contains(&secret),
            "the agent decoded the credential from a thrice JSON-encoded echo"
        );
    } else {
        assert_eq!(refusal(&b), "secret.reflected", "{b}");
    }
}

/// Held: the credential split across one-byte chunks (the check reads the reassembled
/// body), carried only in a trailer or in a 103 Early Hints answer (neither reaches the
/// agent), or after more bytes than the enclave reads (refused, not passed unchecked).
#[test]
fn chunks_trailers_early_hints_and_huge_answers_carry_nothing_out() {
    let dir = TempDir::new("attack2-framing");
    let secret = format!("ghp_{}AdvFrame{}", nonce(), nonce());
    let st = reflect_stack(&dir, &secret);
    let (s, b) = st.call("aws", "GET", "/repos/acme/chunked", &[], b"");
    assert_eq!(refusal(&b), "secret.reflected", "{s} {b}");
    for p in ["trailer", "early-hints", "huge"] {
        let (s, b) = st.call("aws", "GET", &format!("/repos/acme/{p}"), &[], b"");
        assert_absent(p, b.as_bytes(), &secret);
        assert_absent(p, &call_body(&b), &secret);
        if p == "huge" {
            assert_ne!(s, 200, "an answer above the size read passed: {b}");
        }
    }
    st.assert_logs_clean(&secret);
}

/// Held: a credential endpoint with a `;` matrix parameter (which Java servlet
/// containers strip before routing: `/api_keys;v=1` is `/api_keys` there) is refused by the
/// URL rules (path parameters), and `%2e` before an extension or another case and `-` for
/// `_` still find the stem.
#[test]
fn credential_endpoints_with_matrix_parameters_or_escapes_are_refused() {
    let secret = format!("glpat-Sealed{}", nonce());
    let h: Handler = Arc::new(|r: &Req| {
        // A servlet container: matrix parameters dropped from each segment before routing.
        let routed: Vec<&str> = r
            .path()
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(""))
            .collect();
        let body = if routed.join("/").to_ascii_lowercase().contains("api") {
            format!("{{\"id\":\"k1\",\"key\":\"mk{}{}\"}}", nonce(), nonce())
        } else {
            "{}".to_owned()
        };
        respond(
            "201 Created",
            "Content-Type: application/json\r\n",
            body.as_bytes(),
        )
    });
    let Sealed {
        dir: _dir,
        st,
        seen,
        ..
    } = sealed(
        "attack2-matrix",
        h,
        "gitlab",
        "Bearer {}",
        secret.as_bytes(),
        &["GET", "POST"],
    );
    let mut minted = Vec::new();
    for p in [
        "/repos/acme/v1/api_keys",
        "/repos/acme/v1/api_keys;v=1",
        "/repos/acme/v1/api_keys;",
        "/repos/acme/v1/api_keys%3bv=1",
        "/repos/acme/v1/api_keys%2ejson",
        "/repos/acme/v1/api_keys%2Ejson",
        "/repos/acme/v1/API-KEYS",
        "/repos/acme/v1/Api_Keys.json",
    ] {
        let (s, b) = st.call("gitlab", "POST", p, &[], b"");
        if s == 200 {
            minted.push(format!(
                "{p} -> {}",
                String::from_utf8_lossy(&call_body(&b))
            ));
        }
    }
    assert!(
        minted.is_empty(),
        "the agent received minted credentials: {minted:#?}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "a credential endpoint was called"
    );
}

/// R2-3: the enclave's own placeholder check (what a caller of the daemon socket meets:
/// the host, or an agent given the socket) still matches only lower-case `cada:` in headers
/// and the URL, one percent-decoding: `CADA:stripe`, `Cada:Stripe`, `cada%253Astripe` and a
/// JSON body's `cada\u003astripe` reach GitHub's upstream, where the parent's endpoint
/// (24abd63) refuses them.
#[test]
fn the_enclave_refuses_another_secrets_placeholder_in_any_spelling() {
    let Sealed {
        dir: _dir,
        st,
        up,
        seen,
        ca,
        ..
    } = sealed(
        "attack2-placeholder",
        Arc::new(|_: &Req| respond("200 OK", "", b"{}")),
        "github",
        "Bearer {}",
        format!("ghp_Ph{}", nonce()).as_bytes(),
        &["GET", "POST"],
    );
    // A second secret for the same upstream, installed but never granted.
    st.seal_install(
        &static_usage("stripe", up, &ca, "Bearer {}"),
        b"sk_live_adversary_stripe",
    );
    // The control: refused.
    let (s, b) = st.call(
        "github",
        "GET",
        "/repos/acme/c",
        &[("x-key", "cada:stripe")],
        b"",
    );
    assert_eq!(refusal(&b), "secret.placeholder_elsewhere", "{s} {b}");
    let mut reached = Vec::new();
    for (what, path, hdr, body) in [
        ("upper-case header", "/repos/acme/p1", "CADA:stripe", ""),
        ("mixed-case header", "/repos/acme/p2", "Cada:Stripe", ""),
        (
            "double percent header",
            "/repos/acme/p3",
            "cada%253Astripe",
            "",
        ),
        ("upper-case query", "/repos/acme/p4?k=CADA:stripe", "x", ""),
        (
            "JSON body",
            "/repos/acme/p5",
            "x",
            "{\"k\":\"cada\\u003astripe\"}",
        ),
        ("raw body", "/repos/acme/p6", "x", "cada:stripe"),
    ] {
        let (s, _) = st.call("github", "POST", path, &[("x-key", hdr)], body.as_bytes());
        if s == 200 {
            reached.push(what);
        }
    }
    assert!(
        reached.is_empty(),
        "another secret's placeholder reached this upstream: {reached:?} ({} requests seen)",
        seen.lock().unwrap().len()
    );
}

/// Held: the relay resolves the destination itself, so no spelling of a loopback address
/// (trailing-dot names, short, hex, octal and integer IPv4 forms, IPv4-mapped IPv6, zone
/// ids) connects a loopback service no `--egress-allow` names.
#[test]
fn the_relay_refuses_every_spelling_of_loopback() {
    let dir = TempDir::new("attack2-relay");
    let d = &dir.0;
    let svc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let svc_port = svc.local_addr().unwrap().port();
    let hits = Arc::new(Mutex::new(0u32));
    {
        let hits = hits.clone();
        std::thread::spawn(move || {
            for c in svc.incoming().flatten() {
                *hits.lock().unwrap() += 1;
                drop(c);
            }
        });
    }
    let _st = stack(d, true, true);
    let mut opened = Vec::new();
    for host in [
        "localhost",
        "localhost.",
        "LOCALHOST",
        "127.1",
        "0x7f.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "127.000.000.001",
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "::ffff:127.0.0.1",
        "[::ffff:7f00:1]",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::127.0.0.1]",
        "[fe80::1%lo]",
        "[64:ff9b::7f00:1]",
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(d.join("relay.sock")).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        c.write_all(format!("CADA-EGRESS/1 {host}:{svc_port}\n").as_bytes())
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
            opened.push(host);
        }
    }
    assert!(
        opened.is_empty(),
        "the relay connected loopback for {opened:?}"
    );
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "the loopback service was connected"
    );
}
