//! `cada-verify did resolve` as scripts use it: did:key offline, did:web from a loopback
//! HTTPS server started here (its certificate from a throwaway CA given with `--fetch-ca`),
//! and each refusal with its exit code and `did.*` code.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;

use cada_contract::PublicKey;

const ED25519: &str = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
const P256: &str = "did:key:zDnaerDaTF5BXEavCrfRZEk316dpbLsfPDZ3WJ5hRTPFU2169";

fn run(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cada-verify"))
        .args(args)
        .output()
        .expect("run cada-verify");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stdout + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A tiny HTTPS (HTTP/1.1) server on `l` answering each path with a canned answer
/// (`routes`: path → whole raw response), 404 otherwise.
fn serve(l: TcpListener, tls: Arc<rustls::ServerConfig>, routes: Vec<(String, Vec<u8>)>) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut s = cada_net::test_tls::accept(&tls, s);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req).into_owned();
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            let resp = routes
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| {
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_vec()
                });
            let _ = s.write_all(&resp);
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    });
}

fn ok_json(body: &[u8], content_length: bool) -> Vec<u8> {
    let mut r =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/did+json\r\nconnection: close\r\n".to_vec();
    if content_length {
        r.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[test]
fn did_key_of_each_type_resolves_offline() {
    for (did, prefix) in [(ED25519, "z6Mk"), (P256, "zDn")] {
        let (code, doc, out) = run(&["did", "resolve", did]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(doc["id"], did, "{out}");
        let vm = &doc["verificationMethod"][0];
        let m = did.strip_prefix("did:key:").unwrap();
        assert!(m.starts_with(prefix));
        assert_eq!(vm["publicKeyMultibase"], m);
        assert_eq!(vm["id"], format!("{did}#{m}"));
        assert_eq!(vm["controller"], did);
        assert_eq!(doc["assertionMethod"][0], vm["id"]);
        assert_eq!(doc["authentication"][0], vm["id"]);
        // --text gives the same key in words.
        let (code, _, out) = run(&["did", "resolve", did, "--text"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("RESOLVED {did}")), "{out}");
    }
}

/// base58btc (Bitcoin alphabet), enough for a test vector.
fn bs58_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut digits: Vec<u32> = Vec::new();
    for &b in bytes {
        let mut carry = u32::from(b);
        for d in &mut digits {
            carry += *d << 8;
            *d = carry % 58;
            carry /= 58;
        }
        while carry > 0 {
            digits.push(carry % 58);
            carry /= 58;
        }
    }
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    std::iter::repeat_n('1', zeros)
        .chain(digits.iter().rev().map(|d| ALPHABET[*d as usize] as char))
        .collect()
}

#[test]
fn malformed_dids_are_refused_with_exit_1() {
    // '0' is not in the base58 alphabet (any other last character would be another
    // valid Ed25519 key: every 32 bytes are one).
    let mut flipped = ED25519.to_owned();
    flipped.pop();
    flipped.push('0');
    // A P-256 did:key whose point is not on the curve.
    let off_curve = {
        let mut b = vec![0x80, 0x24, 0x02];
        b.extend_from_slice(&[0xff; 32]);
        format!("did:key:z{}", bs58_encode(&b))
    };
    for bad in [
        "not-a-did",
        "did:example:123",
        "did:key:",
        "did:key:6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        &flipped,
        &off_curve,
        &format!("{ED25519}#frag"),
        "did:web:Example.com",
        "did:web:example.com:..:x",
    ] {
        let (code, v, out) = run(&["did", "resolve", bad]);
        assert_eq!(code, 1, "{bad}: {out}");
        assert_eq!(v["valid"], false, "{out}");
        assert_eq!(v["errors"][0]["code"], "did.malformed", "{bad}: {out}");
    }
    // Usage errors stay exit 2.
    assert_eq!(run(&["did", "resolve"]).0, 2);
    assert_eq!(run(&["did", "resolve", ED25519, "--timeout", "0"]).0, 2);
}

#[test]
fn did_web_resolves_from_loopback_and_refuses_bad_answers() {
    // The documents name the port: bind first, then write them.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let did = |path: &str| format!("did:web:127.0.0.1%3A{port}:{path}");
    let key = PublicKey::from_did_key(ED25519).unwrap();
    let p256 = PublicKey::from_did_key(P256).unwrap();
    let good = serde_json::to_vec(&key.did_web_document(&did("good")).unwrap()).unwrap();
    let ec = serde_json::to_vec(&p256.did_web_document(&did("ec")).unwrap()).unwrap();
    // Someone else's document served at this DID's URL.
    let other = serde_json::to_vec(&key.did_web_document(&did("other")).unwrap()).unwrap();
    // A valid document padded past 64 KiB with whitespace.
    let mut big = good.clone();
    big.extend(std::iter::repeat_n(b' ', 64 * 1024));
    let routes = vec![
        ("/good/did.json".to_owned(), ok_json(&good, true)),
        ("/ec/did.json".to_owned(), ok_json(&ec, false)),
        ("/mismatch/did.json".to_owned(), ok_json(&other, true)),
        ("/big/did.json".to_owned(), ok_json(&big, true)),
        ("/bigchunk/did.json".to_owned(), ok_json(&big, false)),
        ("/notjson/did.json".to_owned(), ok_json(b"<html>", true)),
        (
            "/moved/did.json".to_owned(),
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:{port}/good/did.json\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            .into_bytes(),
        ),
    ];
    let ca = cada_net::test_tls::loopback_ca();
    let ca_file = std::env::temp_dir().join(format!("cada-did-test-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    let ca_file = ca_file.to_str().unwrap().to_owned();
    serve(listener, Arc::clone(&ca.server), routes);
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--fetch-ca", &ca_file]);
        run(&a)
    };

    for path in ["good", "ec"] {
        let (code, doc, out) = run(&["did", "resolve", &did(path)]);
        assert_eq!(code, 0, "{path}: {out}");
        assert_eq!(doc["id"], did(path), "{out}");
    }
    let (code, _, out) = run(&["did", "resolve", &did("good"), "--text"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("from:  https://127.0.0.1:{port}/good/did.json")),
        "{out}"
    );
    for (path, want) in [
        ("mismatch", "did.id_mismatch"),
        ("big", "did.too_large"),
        ("bigchunk", "did.too_large"),
        ("notjson", "did.document"),
        ("moved", "did.redirect"),
        ("missing", "did.http_status"),
    ] {
        let (code, v, out) = run(&["did", "resolve", &did(path)]);
        assert_eq!(code, 1, "{path}: {out}");
        assert_eq!(v["errors"][0]["code"], want, "{path}: {out}");
    }
    // Could not find out: nothing listening, or a server whose certificate does not chain
    // to the roots (here the built-in Mozilla set) — exit 2.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let (code, _, out) = run(&[
        "did",
        "resolve",
        &format!("did:web:127.0.0.1%3A{dead_port}"),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did.unreachable"), "{out}");
    let (code, _, out) = self::run(&["did", "resolve", &did("good")]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did.tls"), "{out}");
    assert!(out.contains("--fetch-ca"), "{out}");
    let _ = std::fs::remove_file(&ca_file);
}

#[test]
fn a_server_that_never_answers_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    // Accept and hold connections without answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    let (code, _, out) = run(&[
        "did",
        "resolve",
        &format!("did:web:127.0.0.1%3A{port}"),
        "--timeout",
        "1",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("did.timeout"), "{out}");
}
