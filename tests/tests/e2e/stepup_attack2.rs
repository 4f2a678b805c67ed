//! Second-round adversarial review of issue 23 (findings in `docs/reviews/stepup-2.md`):
//! variations on the round-1 fixes (grants-1, stepup-1) and new angles, through the REAL
//! binaries on loopback. Each test asserts the SECURE behaviour; a test of an attack that
//! works today is `#[ignore = "finding N: …"]`. The rigs are the round-1 modules' own
//! (`grants_attack::Bench`, `stepup_attack::Rig`), not copies.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cada_e2e::mcp_interop::{refs, send};

use crate::grants_attack::{
    attempt, call_body, fresh_id, head_lines, issue, now_s, transfer_detail, utf7, Bench, GOOD,
};
use crate::stepup_attack::{file, file_ok, first_passkey, Knobs, Passkey, Rig, MCP};

/// `body` under `grant` at gate 0 with the Content-Type headers replaced by `types` (none
/// when empty): refused 415 `mcp.content_type` and never forwarded.
fn refused_type(b: &Bench, grant: &str, body: &[u8], types: &[&str]) {
    let mut h: Vec<(String, String)> = b
        .signer
        .headers(&b.url(0), body, grant)
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-type"))
        .collect();
    for t in types {
        h.push(("Content-Type".into(), (*t).into()));
    }
    let o = attempt(b.port(0), "/mcp", &h, body, &b.up);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (415, "mcp.content_type", false),
        "{types:?}: {o:?}"
    );
}

/// Finding 1 of grants-1, varied: a charset named twice (the second one UTF-7), wildcards,
/// `text/json`, a trailing `;`, a list folded into one value, spaces around `=`, an extra
/// parameter after `charset=utf-8`, a second header, and no header at all with a body that
/// is UTF-7 JSON for a server that sniffs — each refused 415, the grant unspent after them.
#[test]
fn content_type_variants_are_refused_and_leave_the_grant_unspent() {
    let b = Bench::start("attack2-ctype", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let sneaky = call_body(
        "transfer",
        &format!(
            r#"{{"amount":5,"currency":"USD","to":"alice","memo":"{}"}}"#,
            utf7(r#"inv-1","amount":9999,"memo":"inv-2"#)
        ),
    );
    for t in [
        "application/json; charset=UTF-8; charset=utf-7",
        "application/json;charset=utf-8;charset=utf-7",
        "application/*",
        "*/*",
        "text/json",
        "application/json;",
        "application/json, text/plain",
        "application/json; charset = utf-7",
        "application/json; charset=utf-8; boundary=x",
        "application/json; charset=\"utf-8\\\"; charset=utf-7\"",
        "application/jsonx",
        "application/json-seq",
        "application/vnd.api+json",
    ] {
        refused_type(&b, &grant, &sneaky, &[t]);
    }
    refused_type(&b, &grant, &sneaky, &[]);
    refused_type(
        &b,
        &grant,
        &sneaky,
        &["application/json", "application/json"],
    );
    refused_type(
        &b,
        &grant,
        &sneaky,
        &["application/json", "application/json; charset=utf-7"],
    );
    // The good call with a plain header: admitted once, forwarded as application/json.
    let o = b.call(0, &body, &grant);
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    let served = b.up.last().unwrap();
    assert!(
        served.head.contains("content-type: application/json\r\n"),
        "{}",
        served.head
    );
}

/// `Transfer-Encoding` other than plain `chunked` (`gzip, chunked`, `chunked, identity`,
/// two headers): the server never receives a transfer coding it would decode differently
/// from the bytes the gate checked.
#[test]
fn transfer_coding_variants_deliver_only_the_checked_bytes() {
    let b = Bench::start("attack2-te", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    for te in [
        "gzip, chunked",
        "deflate,chunked",
        "chunked, identity",
        "identity",
        "chunked\r\nTransfer-Encoding: gzip",
    ] {
        let h = b.signer.headers(&b.url(0), &body, &grant);
        let head = format!(
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nTransfer-Encoding: {te}\r\n{}\r\n",
            b.port(0),
            head_lines(&h, &["content-length"])
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        let before = b.up.count();
        let mut s = TcpStream::connect(("127.0.0.1", b.port(0))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&raw).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if b.up.count() > before {
            let served = b.up.last().unwrap();
            assert!(
                !served.head.contains("gzip") && !served.head.contains("deflate"),
                "{te}: a transfer coding reached the server: {}",
                served.head
            );
            assert_eq!(served.body, body, "{te}: the server got other bytes");
        }
    }
}

/// The all-or-nothing rule of grants-1 finding 6 under concurrency: two single-use grants
/// (transfer, refund), valid at two gates sharing Redis; 50 racing requests each using both,
/// half in each order. At most one is admitted; the server sees exactly the admitted ones;
/// and no grant is lost to a refused request: if none was admitted both are still usable
/// (once), if one was both are spent.
#[test]
fn fifty_racing_requests_using_two_single_use_grants_consume_all_or_nothing() {
    let b = Bench::start("attack2-race2", 2, true);
    let t = now_s();
    let both = format!(r#"["{}","{}"]"#, b.prefix(0), b.prefix(1));
    let one = format!(r#"["{}"]"#, b.prefix(0));
    let refund = format!(
        r#"{{"type":"mcp_tool_call","locations":{both},"tool":"refund","additional_arguments":true,"single_use":true,"identifier":"{}"}}"#,
        fresh_id("rf")
    );
    let grant = issue(
        &b.owner,
        b.signer.did(),
        &format!(
            "[{},{refund}]",
            transfer_detail(&b.prefix(0), true, &fresh_id("tr")).replace(&one, &both)
        ),
        t - 5,
        t + 600,
    );
    let tr = String::from_utf8(call_body("transfer", GOOD)).unwrap();
    let rf = String::from_utf8(call_body("refund", "{}"))
        .unwrap()
        .replace(r#""id":7"#, r#""id":8"#);
    let ab = format!("[{tr},{rf}]").into_bytes();
    let ba = format!("[{rf},{tr}]").into_bytes();
    type Racer = (u16, Vec<(String, String)>, Vec<u8>);
    let requests: Vec<Racer> = (0..50)
        .map(|i| {
            let g = i % 2;
            let body = if (i / 2) % 2 == 0 { &ab } else { &ba };
            (
                b.port(g),
                b.signer.headers(&b.url(g), body, &grant),
                body.clone(),
            )
        })
        .collect();
    let start = Arc::new(std::sync::Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(port, h, body)| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                send(port, "POST", "/mcp", &refs(&h), &body).0
            })
        })
        .collect();
    let st: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted = st.iter().filter(|s| **s == 200).count();
    assert!(admitted <= 1, "{st:?}");
    assert!(st.iter().all(|s| *s == 200 || *s == 403), "{st:?}");
    assert_eq!(
        b.up.count(),
        admitted,
        "the server saw other than the admitted"
    );
    // Nothing was lost: each grant's state is what the admitted requests made it.
    for (i, body) in [
        call_body("transfer", GOOD),
        call_body("refund", "{}").clone(),
    ]
    .iter()
    .enumerate()
    {
        let o = b.call(i % 2, body, &grant);
        if admitted == 0 {
            assert_eq!(
                (o.status, o.reached),
                (200, true),
                "a refused racer left grant {i} used: {o:?}"
            );
        } else {
            assert_eq!((o.code.as_str(), o.reached), ("grant.used", false), "{o:?}");
        }
    }
}

/// The approve-for-N-minutes grant is one `eq` per argument (`approval::stepup::grant::mint`).
/// The agent tries to widen an `eq` on an object, an array and a number: extra members, an
/// extra element, a reordered array, another type, and `1e2` for `100` — only values equal to
/// the approved ones pass (`1e2` is 100: the same number, admitted), and the grant is
/// reusable within them.
#[test]
fn an_eq_limit_on_objects_arrays_and_numbers_cannot_be_widened() {
    let b = Bench::start("attack2-eq", 1, false);
    let grant = b.grant(&format!(
        r#"[{{"type":"mcp_tool_call","locations":["{}"],"tool":"pay",
             "arguments":{{"to":{{"eq":{{"name":"alice","bank":"x"}}}},"lines":{{"eq":[1,2]}},"amount":{{"eq":100}}}},
             "additional_arguments":false,"single_use":false,"identifier":"{}"}}]"#,
        b.prefix(0),
        fresh_id("eq")
    ));
    for args in [
        r#"{"to":{"name":"alice","bank":"x","iban":"EVIL"},"lines":[1,2],"amount":100}"#,
        r#"{"to":{"name":"alice"},"lines":[1,2],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x","name":"mallory"},"lines":[1,2],"amount":100}"#,
        r#"{"to":[{"name":"alice","bank":"x"}],"lines":[1,2],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2,3],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[2,1],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[[1,2]],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":"100"}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":[100]}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":100.0000000000000000001}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":1000}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":100,"cc":"mallory"}"#,
    ] {
        let o = b.call(0, &call_body("pay", args), &grant);
        assert!(o.status >= 400 && !o.reached, "{args}: {o:?}");
    }
    for args in [
        r#"{"to":{"bank":"x","name":"alice"},"lines":[1,2],"amount":100}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1,2],"amount":1e2}"#,
        r#"{"to":{"name":"alice","bank":"x"},"lines":[1.0,2],"amount":100.0}"#,
    ] {
        let o = b.call(0, &call_body("pay", args), &grant);
        assert_eq!((o.status, o.reached), (200, true), "{args}: {o:?}");
    }
}

/// Stateless WebAuthn challenges (stepup-1 finding 1), varied: a challenge that already
/// signed the owner in, answered again with a fresh signature (not the same bytes); a
/// registration challenge used to sign in; a registration challenge issued to one session
/// finished in another session of the same owner.
#[test]
fn a_used_or_misplaced_webauthn_challenge_signs_no_one_in() {
    let rig = Rig::start("attack2-webauthn", &[]);
    let o = &rig.owner;
    let (mut pk, s) = first_passkey(o);
    // A successful sign-in, then the same challenge with a new assertion.
    let ch = Passkey::challenge(o);
    let body = pk.assertion(o, &ch, &Knobs::default());
    let r = o.post_json("/webauthn/signin", &body, None);
    assert_eq!(r.status, 200, "{r:?}");
    let again = pk.assertion(o, &ch, &Knobs::default());
    let r = o.post_json("/webauthn/signin", &again, None);
    assert_eq!(
        (r.status, r.code().as_str(), r.cookie().is_none()),
        (400, "webauthn.challenge", true),
        "{r:?}"
    );
    // A registration challenge (fresh code, session s) used to sign in.
    let r = o.post_form(
        "/passkeys/code",
        &[
            ("Cookie", &s.cookie),
            ("Origin", &o.public),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        &format!("csrf={}", s.csrf),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let code = o.next_code();
    let opts = o.post_json(
        "/webauthn/register/options",
        &serde_json::json!({"code": code, "csrf": s.csrf}),
        Some(&s.cookie),
    );
    assert_eq!(opts.status, 200, "{opts:?}");
    let reg_ch = opts.json()["publicKey"]["challenge"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = pk.assertion(o, &reg_ch, &Knobs::default());
    let r = o.post_json("/webauthn/signin", &body, None);
    assert_eq!(
        (r.status, r.code().as_str(), r.cookie().is_none()),
        (400, "webauthn.challenge", true),
        "{r:?}"
    );
    // The same registration challenge finished in another session of the owner.
    let other = pk.sign_in(o);
    let second = Passkey::new();
    let r = second.register_with(o, &reg_ch, Some(&other), &Knobs::default());
    assert!(
        r.status >= 400 && r.code().starts_with("webauthn.") || r.code().starts_with("web."),
        "a registration challenge of session s finished in another session: {r:?}"
    );
    assert_ne!(r.status, 200, "{r:?}");
    o.assert_audit_chain();
}

/// Approval fatigue: the owner denies `transfer {amount: 500, to: mallory}`; the agent files
/// the identical call again at once, then with one invisible character changed. Secure: a
/// call the owner just denied is not put before the owner again as a new request (refused
/// with a code naming the rule, e.g. `stepup.denied`), and a look-alike refiling does not
/// count as new either. Fixed: the service refuses such a filing 403 `stepup.denied` for
/// the cool-off (`--denial-cooloff`, 15 minutes), which the daemon passes on as
/// `stepup-refused: stepup.denied: …` (and the proxy as a JSON-RPC error with that code).
#[test]
fn a_denied_call_is_not_asked_again_at_once() {
    let rig = Rig::start("attack2-fatigue", &[]);
    let o = &rig.owner;
    let (_pk, s) = first_passkey(o);
    let sock = &rig.agent.sock;
    let args = serde_json::json!({"amount": 500, "to": "mallory"});
    let filed = file_ok(sock, MCP, "transfer", args.clone());
    let id = filed["id"].as_str().unwrap().to_owned();
    let r = o.decide(&s, &id, "deny");
    assert_eq!(r.status, 200, "{r:?}");
    let (st, again) = file(sock, MCP, "transfer", args, "not granted");
    let fresh = st == 200 && again["id"].as_str().is_some_and(|i| i != id);
    let (st2, disguised) = file(
        sock,
        MCP,
        "transfer",
        serde_json::json!({"amount": 500, "to": "mallor\u{200b}y"}),
        "not granted",
    );
    let fresh2 = st2 == 200 && disguised["id"].as_str().is_some_and(|i| i != id);
    assert!(
        !fresh && !fresh2,
        "a denied call was put before the owner again: identical {st} {again}, disguised {st2} {disguised}"
    );
    for (st, v) in [(st, &again), (st2, &disguised)] {
        let detail = v["detail"].as_str().unwrap_or_default();
        assert_eq!(
            (st, v["code"].as_str()),
            (403, Some("stepup-refused")),
            "{v}"
        );
        assert!(
            detail.starts_with("stepup.denied: ") && detail.contains("again until"),
            "the refusal names the rule and when the call may be asked again: {v}"
        );
    }
    // The rule is narrow: another amount is put to the owner.
    file_ok(
        sock,
        MCP,
        "transfer",
        serde_json::json!({"amount": 501, "to": "mallory"}),
    );
}
