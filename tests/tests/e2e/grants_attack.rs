//! Adversarial review of one-transaction grants (issue 23), against the real binaries
//! (`cada-gate`, `cada-sts`, `cada-verify`, `cada-enclave` on `sim`, `cada-parent`,
//! `redis-server`, and a stock MCP server on the official TypeScript SDK): an agent holding
//! a grant tries to make a gate admit a call the grant does not permit, to use a single-use
//! grant twice, or to get an STS token wider than the grant.
//!
//! Every test asserts the SECURE behaviour, so an attack that works makes its test fail; those
//! are `#[ignore]`d with the finding they prove (docs/reviews/grants-1.md) until fixed. Run:
//! `cargo build --workspace --bins --quiet && cargo test -p cada-e2e --test e2e grants_attack::`
//! (`-- --ignored` for the open findings).
//!
//! Most attacks sign with a key outside any enclave whose `sim` evidence names the owner (what
//! an enclave locked to the owner presents), so that the gate's own checks are what is
//! attacked; the attacks that need no compromise at all use the real enclave and daemon.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cada_contract::{AuthorizationDetail, Grant, OwnerAlg, OwnerKey, Subject};
use cada_e2e::mcp_interop::*;
use cada_e2e::*;
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::platform::Platform;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::jwk::SigAlg;
use cada_protocol::token::{CadaClaim, PopClaims, PopHeader};
use cada_protocol::{b64, mcp, token};
use serde_json::Value;

pub(crate) fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh identifier per call (single-use keys must not collide between tests sharing a
/// Redis, which they do not, or between grants of one test, which they must not).
pub(crate) fn fresh_id(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "urn:uuid:{:08x}-{tag}-4000-8000-{:012}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The issue's transaction as one detail: `transfer` at `location`, amount 1..=500, currency
/// USD, to alice or bob, memo starting `inv-`, nothing else; `single_use` as given.
pub(crate) fn transfer_detail(location: &str, single_use: bool, id: &str) -> String {
    format!(
        r#"{{"type":"mcp_tool_call","locations":["{location}"],"actions":["tools/call"],"tool":"transfer",
            "arguments":{{"amount":{{"min":1,"max":500}},"currency":{{"eq":"USD"}},
                          "to":{{"one_of":["alice","bob"]}},"memo":{{"prefix":"inv-"}}}},
            "additional_arguments":false,"single_use":{single_use},"identifier":"{id}"}}"#
    )
}

pub(crate) const GOOD: &str = r#"{"amount":5,"currency":"USD","to":"alice","memo":"inv-42"}"#;

/// A `tools/call` body.
pub(crate) fn call_body(tool: &str, arguments: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
    .into_bytes()
}

/// One request as the stand-in MCP server received it.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    /// The request head, lower-cased.
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

/// A stand-in MCP server: answers every request with a JSON-RPC result and keeps what it
/// was sent (head and body).
pub(crate) struct Upstream {
    port: u16,
    served: Arc<Mutex<Vec<Served>>>,
}

impl Upstream {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&served);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(c) = conn else { continue };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || serve_one(c, &keep));
            }
        });
        Upstream { port, served }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn count(&self) -> usize {
        self.served.lock().unwrap().len()
    }

    pub(crate) fn last(&self) -> Option<Served> {
        self.served.lock().unwrap().last().cloned()
    }

    /// The `i`th request served (from 0).
    pub(crate) fn nth(&self, i: usize) -> Option<Served> {
        self.served.lock().unwrap().get(i).cloned()
    }
}

fn serve_one(mut c: TcpStream, keep: &Mutex<Vec<Served>>) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let head_end = loop {
        match c.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&b[..n]),
        }
    }
    keep.lock().unwrap().push(Served {
        head,
        body: buf[head_end..].to_vec(),
    });
    let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"done"}]}}"#;
    let _ = write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// A key outside any enclave, with `sim` evidence that binds it and names `owner`: it signs
/// whatever proof an attacker needs (a compromised enclave, or the gate's checks alone).
pub(crate) struct Signer {
    key: SigningKey,
    pub(crate) evidence: String,
    att: String,
    pub(crate) root: PathBuf,
    pub(crate) pcr0: String,
}

impl Signer {
    pub(crate) fn new(d: &Path, name: &str, owner: &str) -> Self {
        let sim = Sim::new(None).unwrap();
        let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
        let mut binding = key.binding();
        binding.owner = Some(owner.to_owned());
        let env = sim.attest(&binding.to_cbor(), b"grants-attack").unwrap();
        let root = d.join(format!("{name}-root.der"));
        std::fs::write(&root, sim.root_der()).unwrap();
        let pcr0 = sim.measurements().unwrap()["PCR0"].clone();
        Signer {
            att: env.att_digest(),
            evidence: env.to_header(),
            key,
            root,
            pcr0,
        }
    }

    pub(crate) fn did(&self) -> &str {
        self.key.did()
    }

    /// A fresh proof for `htm htu` under the contract `dtc`, bound to `body` (digest and
    /// calls as the gate reads them), with `ath` for `access_token`.
    pub(crate) fn proof(
        &self,
        htm: &str,
        htu: &str,
        body: &[u8],
        dtc: Option<&str>,
        access_token: Option<&str>,
    ) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let iat = now_s();
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: self.key.alg().as_str().into(),
            jwk: self.key.jwk().clone(),
        };
        let claims = PopClaims {
            jti: format!(
                "attack-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            htm: htm.into(),
            htu: htu.into(),
            iat,
            exp: iat + 30,
            ath: access_token.map(token::access_token_hash),
            nonce: None,
            cada: CadaClaim {
                att: self.att.clone(),
                seq: 1,
                chain: b64::encode([0u8; 32]),
                dtc: dtc.map(str::to_owned),
                bd: Some(mcp::body_digest(body)),
                mcp: mcp::parse_body(body).map(|b| b.calls()).unwrap_or_default(),
                ..CadaClaim::default()
            },
        };
        let input = token::signing_input(&header, &claims).unwrap();
        let sig = self.key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(sig))
    }

    /// The headers of an MCP call to `url` under the contract `contract` (compact).
    pub(crate) fn headers(&self, url: &str, body: &[u8], contract: &str) -> Vec<(String, String)> {
        let dtc = cada_contract::digest_of(contract);
        vec![
            ("Content-Type".into(), "application/json".into()),
            (
                "Accept".into(),
                "application/json, text/event-stream".into(),
            ),
            (
                "DPoP".into(),
                self.proof("POST", url, body, Some(&dtc), None),
            ),
            ("CADA-Evidence".into(), self.evidence.clone()),
            ("CADA-Contract".into(), contract.to_owned()),
            ("Content-Digest".into(), mcp::content_digest(body)),
        ]
    }

    /// The headers of an MCP call to `url` under the access token `at`.
    fn token_headers(&self, url: &str, body: &[u8], at: &str) -> Vec<(String, String)> {
        vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Digest".into(), mcp::content_digest(body)),
            ("Authorization".into(), format!("DPoP {at}")),
            ("DPoP".into(), self.proof("POST", url, body, None, Some(at))),
        ]
    }
}

/// What became of one call: status, refusal code (from the JSON-RPC error's data, first of a
/// batch), whether the upstream got it, and the answer's body.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) status: u16,
    pub(crate) code: String,
    pub(crate) reached: bool,
    pub(crate) text: String,
}

pub(crate) fn code_of(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let m = if v.is_array() { &v[0] } else { &v };
    m["error"]["data"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn attempt(
    port: u16,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    up: &Upstream,
) -> Outcome {
    let before = up.count();
    let (status, _, text) = send(port, "POST", path, &refs(headers), body);
    Outcome {
        status,
        code: code_of(&text),
        reached: up.count() > before,
        text,
    }
}

/// The owner signs a contract for `subject` whose only authority is `details` (a JSON array
/// of details with identifiers), valid from `from` to `until`.
pub(crate) fn issue(
    owner: &OwnerKey,
    subject: &str,
    details: &str,
    from: u64,
    until: u64,
) -> String {
    let mut g = Grant::new(
        Subject::Key(subject.into()),
        vec![],
        vec!["POST".into()],
        from,
        until,
    );
    g.authorization_details = AuthorizationDetail::parse_draft_list(details).unwrap();
    g.issue(owner, from).unwrap()
}

/// A policy trusting the signer's sim root, one `[[audience]]` per prefix naming `owners`,
/// `checks_arguments` as given, and `extra` TOML first.
fn write_policy(
    d: &Path,
    name: &str,
    signer: &Signer,
    owners: &[&str],
    prefixes: &[(String, bool)],
    extra: &str,
) -> PathBuf {
    let mut text = format!(
        "[roots]\nnitro = [{:?}]\n{extra}",
        signer.root.display().to_string()
    );
    for (p, checks) in prefixes {
        text.push_str(&format!(
            "[[audience]]\nprefix = \"{p}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = {}\nchecks_arguments = {checks}\n",
            signer.pcr0,
            serde_json::to_string(owners).unwrap()
        ));
    }
    let path = d.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One owner, one attacking signer, a stand-in MCP server and `gates` gates in front of it
/// (all in one policy; sharing one Redis when `redis`).
pub(crate) struct Bench {
    dir: TempDir,
    pub(crate) owner: OwnerKey,
    pub(crate) signer: Signer,
    pub(crate) up: Upstream,
    redis: Option<(Proc, u16)>,
    gates: Vec<(u16, Proc)>,
}

impl Bench {
    pub(crate) fn start(tag: &str, gates: usize, redis: bool) -> Self {
        let dir = TempDir::new(tag);
        let d = dir.0.clone();
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let signer = Signer::new(&d, "signer", owner.did());
        let up = Upstream::start();
        let redis = redis.then(|| start_redis(&d));
        let ports: Vec<u16> = (0..gates).map(|_| free_port()).collect();
        let policy = write_policy(
            &d,
            "policy.toml",
            &signer,
            &[owner.did()],
            &ports
                .iter()
                .map(|p| (format!("http://127.0.0.1:{p}/"), true))
                .collect::<Vec<_>>(),
            "",
        );
        let store = redis.as_ref().map_or("memory".to_owned(), |(_, p)| {
            format!("redis://127.0.0.1:{p}")
        });
        let gates = ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let g = start_gate(
                    &d,
                    &format!("gate-{i}"),
                    p,
                    &up.url(),
                    &policy,
                    &["--replay-store", &store, "--trusted-proxy", "127.0.0.1"],
                );
                (p, g)
            })
            .collect();
        Bench {
            dir,
            owner,
            signer,
            up,
            redis,
            gates,
        }
    }

    fn d(&self) -> &Path {
        &self.dir.0
    }

    pub(crate) fn port(&self, i: usize) -> u16 {
        self.gates[i].0
    }

    pub(crate) fn prefix(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}/", self.port(i))
    }

    pub(crate) fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port(i))
    }

    /// A ten-minute grant of `details` (a JSON array) to the signer.
    pub(crate) fn grant(&self, details: &str) -> String {
        let t = now_s();
        issue(&self.owner, self.signer.did(), details, t - 5, t + 600)
    }

    /// The issue's transaction, single use, at gate 0.
    pub(crate) fn transfer_grant(&self) -> String {
        self.grant(&format!(
            "[{}]",
            transfer_detail(&self.prefix(0), true, &fresh_id("t"))
        ))
    }

    /// `body` to gate `i` at `/mcp` under `contract`, with a fresh proof.
    pub(crate) fn call(&self, i: usize, body: &[u8], contract: &str) -> Outcome {
        let h = self.signer.headers(&self.url(i), body, contract);
        attempt(self.port(i), "/mcp", &h, body, &self.up)
    }

    /// A ten-minute grant of `transfer` at gate 0, reusable and with any other arguments.
    pub(crate) fn reusable_transfer_grant(&self) -> String {
        self.grant(&format!(
            r#"[{{"type":"mcp_tool_call","locations":["{}"],"tool":"transfer","additional_arguments":true,"identifier":"{}"}}]"#,
            self.prefix(0),
            fresh_id("f")
        ))
    }

    /// `body` to gate 0 at `/mcp` under `contract`, with a fresh proof and the `extra`
    /// headers after the signer's.
    pub(crate) fn call_with(&self, body: &[u8], contract: &str, extra: &[(&str, &str)]) -> Outcome {
        let mut h = self.signer.headers(&self.url(0), body, contract);
        h.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        attempt(self.port(0), "/mcp", &h, body, &self.up)
    }

    /// Gate 0's forward auth (`GET /_cada/auth`) asked about a `POST /mcp` of `body` under
    /// `contract`, the reverse proxy forwarding the `extra` headers: (status, answer).
    pub(crate) fn forward_auth_with(
        &self,
        body: &[u8],
        contract: &str,
        extra: &[(&str, &str)],
    ) -> (u16, String) {
        let mut h = self.signer.headers(&self.url(0), body, contract);
        h.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        h.push(("X-Original-Method".into(), "POST".into()));
        h.push(("X-Original-URI".into(), "/mcp".into()));
        let (st, _, text) = send(self.port(0), "GET", "/_cada/auth", &refs(&h), b"");
        (st, text)
    }
}

/// Asserts that none of `bodies` is admitted or reaches the server under `grant`, and that
/// the grant was not used up by the refusals (the good call still passes once).
fn refused_all(b: &Bench, grant: &str, bodies: &[(Vec<u8>, &str)]) {
    for (body, why) in bodies {
        let o = b.call(0, body, grant);
        assert!(
            o.status >= 400 && !o.reached,
            "{why}: admitted ({o:?}) for {}",
            String::from_utf8_lossy(body)
        );
    }
    let o = b.call(0, &call_body("transfer", GOOD), grant);
    assert_eq!(
        (o.status, o.reached),
        (200, true),
        "the grant was used up by a refusal: {o:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 1. The body: the gate checks one set of arguments, the server must not read another.
// ---------------------------------------------------------------------------------------

/// Repeated members at every depth of the JSON-RPC message, also spelled with `\u` escapes
/// (a server keeping the last copy would read another call or other arguments).
#[test]
fn repeated_members_at_any_depth_are_refused_before_forwarding() {
    let b = Bench::start("attack-dup", 1, false);
    let grant = b.transfer_grant();
    let evil = r#"{"amount":9999,"currency":"USD","to":"mallory","memo":"x"}"#;
    let bodies = [
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{GOOD},"arguments":{evil}}}}}"#
            ),
            "two arguments",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{GOOD},"argument\u0073":{evil}}}}}"#
            ),
            "arguments spelled with an escape",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{GOOD},"n\u0061me":"delete_all"}}}}"#
            ),
            "name spelled with an escape",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{GOOD}}},"params":{{"name":"transfer","arguments":{evil}}}}}"#
            ),
            "two params",
        ),
        (
            format!(
                r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"transfer","arguments":{GOOD}}},"p\u0061rams":{{"name":"transfer","arguments":{evil}}}}}"#
            ),
            "params spelled with an escape",
        ),
        (
            GOOD.replace(r#""amount":5"#, r#""amount":5,"\u0061mount":9999"#),
            "amount spelled with an escape (inside arguments)",
        ),
    ];
    let mut all: Vec<(Vec<u8>, &str)> = bodies
        .iter()
        .map(|(body, why)| {
            let bytes = if body.starts_with('{') && body.contains("jsonrpc") {
                body.clone().into_bytes()
            } else {
                call_body("transfer", body)
            };
            (bytes, *why)
        })
        .collect();
    // A nested repeat inside an argument the grant fixes with `eq` (an object).
    let nested_grant = b.grant(&format!(
        r#"[{{"type":"mcp_tool_call","locations":["{}"],"tool":"transfer",
             "arguments":{{"to":{{"eq":{{"iban":"DE00","bic":{{"x":1}}}}}}}},"single_use":true,"identifier":"{}"}}]"#,
        b.prefix(0),
        fresh_id("n")
    ));
    let o = b.call(
        0,
        &call_body("transfer", r#"{"to":{"iban":"DE00","bic":{"x":1,"x":2}}}"#),
        &nested_grant,
    );
    assert!(o.status >= 400 && !o.reached, "nested repeat: {o:?}");
    all.push((
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","method":"tools/call","params":{"name":"transfer"}}"#.to_vec(),
        "two methods",
    ));
    refused_all(&b, &grant, &all);
}

/// `params.arguments` in other shapes than an object, or missing, or hidden in `_meta`,
/// under a grant that constrains arguments.
#[test]
fn arguments_in_other_shapes_are_refused() {
    let b = Bench::start("attack-shapes", 1, false);
    let grant = b.transfer_grant();
    let params = |p: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{p}}}"#).into_bytes()
    };
    let bodies = vec![
        (
            params(&format!(r#"{{"name":"transfer","arguments":{:?}}}"#, GOOD)),
            "arguments as a string",
        ),
        (
            params(&format!(r#"{{"name":"transfer","arguments":[{GOOD}]}}"#)),
            "arguments as an array",
        ),
        (
            params(r#"{"name":"transfer","arguments":null}"#),
            "arguments null",
        ),
        (params(r#"{"name":"transfer"}"#), "arguments missing"),
        (
            params(&format!(
                r#"{{"name":"transfer","_meta":{{"arguments":{GOOD}}}}}"#
            )),
            "arguments in _meta",
        ),
        (
            params(r#"{"name":"transfer","arguments":5}"#),
            "arguments as a number",
        ),
    ];
    refused_all(&b, &grant, &bodies);
}

/// Numbers beyond a bound in every spelling a parser might read differently, and texts
/// some parsers read as numbers.
#[test]
fn numbers_beyond_the_bound_in_any_spelling_are_refused() {
    let b = Bench::start("attack-numbers", 1, false);
    let grant = b.transfer_grant();
    let with_amount = |a: &str| {
        call_body(
            "transfer",
            &GOOD.replace(r#""amount":5"#, &format!(r#""amount":{a}"#)),
        )
    };
    let huge = format!("5{}", "0".repeat(1100));
    let mut bodies: Vec<(Vec<u8>, String)> = [
        "1e400",
        "-1e400",
        "500.00000000000000001",
        "5.0000000000000000001e2",
        "500.0000000000000000000000000000000000000000000000000000000000000001",
        "50001e-2",
        "1E+3",
        "0.99999999999999999999",
        "-0",
        "0",
        "\"5\"",
        "\"1e400\"",
        "NaN",
        "Infinity",
        "-Infinity",
        "0x1F4",
        "+5",
        "05",
        ".5",
        "5.",
        "true",
        "null",
        "[5]",
        "{\"$numberDecimal\":\"5\"}",
        huge.as_str(),
        "1e1000000001",
    ]
    .iter()
    .map(|a| (with_amount(a), format!("amount {a:.40}")))
    .collect();
    bodies.push((
        call_body(
            "transfer",
            &GOOD.replace(r#""amount":5"#, r#""amount":5 ,"amount" :9999"#),
        ),
        "a repeat with spaces".into(),
    ));
    let bodies: Vec<(Vec<u8>, &str)> = bodies
        .iter()
        .map(|(x, w)| (x.clone(), w.as_str()))
        .collect();
    refused_all(&b, &grant, &bodies);
}

/// Strings that look like they meet a `prefix`, `eq` or `one_of` and do not byte for byte,
/// and bytes that are not JSON text at all.
#[test]
fn look_alike_and_malformed_strings_do_not_meet_a_constraint() {
    let b = Bench::start("attack-strings", 1, false);
    let grant = b.transfer_grant();
    let memo = |m: &str| call_body("transfer", &GOOD.replace("inv-42", m));
    let mut bodies: Vec<(Vec<u8>, &str)> = vec![
        (memo("\u{ff49}nv-42"), "fullwidth i"),
        (memo("inv\u{2010}42"), "hyphen U+2010"),
        (memo("\u{456}nv-42"), "Cyrillic i"),
        (memo("i\u{200d}nv-42"), "zero-width joiner"),
        (memo("\u{202e}inv-42"), "bidi override first"),
        (memo("INV-42"), "upper case"),
        (memo(" inv-42"), "leading space"),
        (memo("inv-42\\ud800"), "lone surrogate"),
        (memo("\\ud800inv-42"), "lone surrogate first"),
        (
            call_body("transfer", &GOOD.replace("alice", "alic\u{0435}")),
            "Cyrillic e in alice",
        ),
        (
            call_body("transfer", &GOOD.replace("alice", "Alice")),
            "Alice",
        ),
        (
            call_body("transfer", &GOOD.replace("alice", "alice\\u0000")),
            "alice NUL",
        ),
        (
            call_body("transfer", &GOOD.replace("USD", "US\u{0044}\u{0307}")),
            "combining dot",
        ),
        (call_body("transfer", &GOOD.replace("USD", "usd")), "usd"),
    ];
    // Raw bytes that are not UTF-8: an overlong '-' (C0 AD) and a CESU-8 surrogate.
    let mut overlong = call_body("transfer", &GOOD.replace("inv-42", "invX42"));
    let at = overlong.iter().position(|&c| c == b'X').unwrap();
    overlong.splice(at..=at, [0xC0, 0xAD]);
    bodies.push((overlong, "overlong UTF-8 hyphen"));
    let mut cesu = call_body("transfer", &GOOD.replace("inv-42", "inv-42X"));
    let at = cesu.iter().position(|&c| c == b'X').unwrap();
    cesu.splice(at..=at, [0xED, 0xA0, 0x80]);
    bodies.push((cesu, "UTF-8 encoded surrogate"));
    // A byte order mark before the body, and the body in UTF-16.
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(call_body(
        "transfer",
        &GOOD.replace(r#""amount":5"#, r#""amount":9999"#),
    ));
    bodies.push((bom, "BOM"));
    let utf16: Vec<u8> = String::from_utf8(call_body("transfer", GOOD))
        .unwrap()
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    bodies.push((utf16, "UTF-16LE"));
    refused_all(&b, &grant, &bodies);
}

/// Arguments nested 100,000 deep (and 65, one past the reader's limit) are refused and do
/// not bring the gate down.
#[test]
fn very_deep_nesting_is_refused_and_the_gate_survives() {
    let b = Bench::start("attack-deep", 1, false);
    let grant = b.grant(&format!(
        r#"[{{"type":"mcp_tool_call","locations":["{}"],"tool":"transfer",
             "arguments":{{"amount":{{"max":500}}}},"additional_arguments":true,"single_use":true,"identifier":"{}"}}]"#,
        b.prefix(0),
        fresh_id("d")
    ));
    let mut bodies = Vec::new();
    for depth in [65usize, 100_000] {
        let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        bodies.push(call_body(
            "transfer",
            &format!(r#"{{"amount":5,"note":{deep}}}"#),
        ));
        let deep_obj = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        bodies.push(call_body(
            "transfer",
            &format!(r#"{{"amount":5,"note":{deep_obj}}}"#),
        ));
    }
    for body in &bodies {
        let o = b.call(0, body, &grant);
        assert!(o.status >= 400 && !o.reached, "{o:?}");
    }
    let o = b.call(0, &call_body("transfer", r#"{"amount":5}"#), &grant);
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
}

/// A second use of a single-use grant inside the same body: a batch of two calls, a call and
/// a notification (a `tools/call` without `id`, which some servers still run), and a good
/// call beside a bad notification.
#[test]
fn a_batch_cannot_spend_a_single_use_grant_twice_or_hide_a_call() {
    let b = Bench::start("attack-batch", 1, false);
    let grant = b.transfer_grant();
    let call = |id: Option<u32>, args: &str| match id {
        Some(id) => format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"transfer","arguments":{args}}}}}"#
        ),
        None => format!(
            r#"{{"jsonrpc":"2.0","method":"tools/call","params":{{"name":"transfer","arguments":{args}}}}}"#
        ),
    };
    let bad = GOOD.replace(r#""amount":5"#, r#""amount":9999"#);
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (
            format!("[{},{}]", call(Some(1), GOOD), call(Some(2), GOOD)).into_bytes(),
            "two calls",
        ),
        (
            format!("[{},{}]", call(Some(1), GOOD), call(None, GOOD)).into_bytes(),
            "a call and a notification",
        ),
        (
            format!("[{},{}]", call(Some(1), GOOD), call(None, &bad)).into_bytes(),
            "a bad notification",
        ),
        (call(None, &bad).into_bytes(), "a bad notification alone"),
        (
            format!("[{},{}]", call(Some(1), GOOD), call(Some(1), GOOD)).into_bytes(),
            "the same id twice",
        ),
        (
            format!(
                r#"[{},{{"jsonrpc":"2.0","id":3,"method":"ping"}},{}]"#,
                call(Some(1), GOOD),
                call(Some(2), GOOD)
            )
            .into_bytes(),
            "two calls around a ping",
        ),
        (
            format!("[[{}]]", call(Some(1), GOOD)).into_bytes(),
            "a nested batch",
        ),
    ];
    refused_all(&b, &grant, &bodies);
}

/// A one-transaction grant's authority is one `tools/call`; a call of another method riding
/// in the same batch (one the gate does not govern: no tool, prompt or resource named) is
/// not the grant's to admit. The enclave refuses to sign such a batch under the grant; the
/// gate must refuse it too.
#[test]
fn a_grant_admits_no_other_method_beside_its_call() {
    let b = Bench::start("attack-ride-along", 1, false);
    let grant = b.transfer_grant();
    let call = String::from_utf8(call_body("transfer", GOOD)).unwrap();
    for other in [
        r#"{"jsonrpc":"2.0","id":9,"method":"bank/withdraw","params":{"amount":9999}}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
    ] {
        let batch = format!("[{call},{other}]");
        let o = b.call(0, batch.as_bytes(), &grant);
        assert!(
            o.status >= 400 && !o.reached,
            "{other}: admitted under the grant ({o:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. HTTP framing: what the gate checks is the one request the server gets.
// ---------------------------------------------------------------------------------------

/// Raw bytes on one connection; everything the gate answers until it closes.
pub(crate) fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn statuses(answers: &str) -> Vec<u16> {
    answers
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| answers[i + 9..].get(..3).and_then(|s| s.parse().ok()))
        .collect()
}

pub(crate) fn head_lines(headers: &[(String, String)], skip: &[&str]) -> String {
    headers
        .iter()
        .filter(|(k, _)| !skip.iter().any(|s| k.eq_ignore_ascii_case(s)))
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

/// Two requests pipelined on one keep-alive connection, each with its own fresh proof, under
/// one single-use grant: one is admitted.
#[test]
fn pipelined_requests_on_one_connection_use_the_grant_once() {
    let b = Bench::start("attack-pipeline", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let mut bytes = Vec::new();
    for close in [false, true] {
        let h = b.signer.headers(&b.url(0), &body, &grant);
        bytes.extend_from_slice(
            format!(
                "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\n{}{}\r\n",
                b.port(0),
                body.len(),
                if close { "Connection: close\r\n" } else { "" },
                head_lines(&h, &[])
            )
            .as_bytes(),
        );
        bytes.extend_from_slice(&body);
    }
    let answers = raw_exchange(b.port(0), &bytes);
    let st = statuses(&answers);
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 1, "{answers}");
    assert_eq!(b.up.count(), 1);
}

/// `Transfer-Encoding: chunked` beside a `Content-Length`, and a second request smuggled
/// after the chunks or after a short `Content-Length`: the server gets the checked body
/// once and nothing else.
#[test]
fn framing_tricks_deliver_only_the_checked_body() {
    let b = Bench::start("attack-framing", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let evil = call_body(
        "transfer",
        &GOOD.replace(r#""amount":5"#, r#""amount":9999"#),
    );
    let smuggled = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        evil.len(),
        String::from_utf8_lossy(&evil)
    );
    // TE + CL: the CL covers only the first chunk's size line.
    let h = b.signer.headers(&b.url(0), &body, &grant);
    let mut bytes = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n{}\r\n{:x}\r\n",
        b.port(0),
        head_lines(&h, &[]),
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(b"\r\n0\r\n\r\n");
    bytes.extend_from_slice(smuggled.as_bytes());
    let answers = raw_exchange(b.port(0), &bytes);
    assert!(b.up.count() <= 1, "{answers}");
    for s in b.up.served.lock().unwrap().iter() {
        assert_eq!(s.body, body, "the server got a body the gate did not check");
    }
    // A short Content-Length: the rest is read as a second request (no proof), never as
    // part of the first.
    let grant2 = b.transfer_grant();
    let h = b.signer.headers(&b.url(0), &body, &grant2);
    let half = body.len() / 2;
    let mut bytes = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {half}\r\n{}\r\n",
        b.port(0),
        head_lines(&h, &[])
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(smuggled.as_bytes());
    let before = b.up.count();
    let answers = raw_exchange(b.port(0), &bytes);
    assert_eq!(b.up.count(), before, "{answers}");
    // A compressed body: the gate cannot read it, so it does not forward it.
    let grant3 = b.transfer_grant();
    let gz = gzip_stored(&evil);
    let mut h = b.signer.headers(&b.url(0), &gz, &grant3);
    h.push(("Content-Encoding".into(), "gzip".into()));
    let o = attempt(b.port(0), "/mcp", &h, &gz, &b.up);
    assert!(o.status >= 400 && !o.reached, "{o:?}");
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let len = u16::try_from(data.len()).unwrap();
    out.push(1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    let mut crc: u32 = 0xffff_ffff;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    out.extend_from_slice(&(!crc).to_le_bytes());
    out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
    out
}

/// MCP 2026-07-28 routing headers that name another call than the body's (a server routing
/// by header would run a call the gate did not check).
#[test]
fn routing_headers_cannot_name_another_call() {
    let b = Bench::start("attack-routing", 1, false);
    let grant = b.grant(&format!(
        "[{}]",
        transfer_detail(&b.prefix(0), false, &fresh_id("m"))
    ));
    let body = call_body("transfer", GOOD);
    for extra in [
        vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "delete_all")],
        vec![
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "transfer"),
            ("Mcp-Name", "delete_all"),
        ],
        vec![("Mcp-Method", "resources/read"), ("Mcp-Name", "transfer")],
        vec![("Mcp_Name", "delete_all")],
    ] {
        let o = b.call_with(&body, &grant, &extra);
        if o.reached {
            // Admitted only with the header the server could route by removed.
            let s = b.up.last().unwrap();
            assert!(!s.head.contains("delete_all"), "{extra:?}: {}", s.head);
        } else {
            assert!(o.status >= 400, "{extra:?}: {o:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. Content-Type charset: the stock TypeScript SDK server decodes the body in the charset
//    the client names; the gate reads it as UTF-8.
// ---------------------------------------------------------------------------------------

/// The official TypeScript SDK (pinned), as the other interop tests install it.
const TS_SDK: &str = "@modelcontextprotocol/sdk@1.32.2";

/// A stock MCP server on the official TypeScript SDK: `createMcpExpressApp()` (the SDK's own
/// Express app, with `express.json()`), a stateless Streamable HTTP transport, and two tools
/// that answer with the tool name and the arguments they received.
const TS_SERVER: &str = r#"
import { createRequire } from 'node:module';
import path from 'node:path';
const req = createRequire(path.join(process.env.SDK_DIR, 'package.json'));
const { McpServer } = await import(req.resolve('@modelcontextprotocol/sdk/server/mcp.js'));
const { StreamableHTTPServerTransport } = await import(req.resolve('@modelcontextprotocol/sdk/server/streamableHttp.js'));
const { createMcpExpressApp } = await import(req.resolve('@modelcontextprotocol/sdk/server/express.js'));
const { z } = await import(req.resolve('zod'));
const app = createMcpExpressApp();
app.post('/mcp', async (rq, rs) => {
  const server = new McpServer({ name: 'bank', version: '1.0.0' });
  const shape = { amount: z.number().optional(), currency: z.string().optional(),
                  to: z.string().optional(), memo: z.string().optional() };
  for (const name of ['transfer', 'delete_all']) {
    server.registerTool(name, { inputSchema: shape },
      async (args) => ({ content: [{ type: 'text', text: JSON.stringify({ tool: name, args }) }] }));
  }
  const t = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  rs.on('close', () => { t.close(); server.close(); });
  await server.connect(t);
  await t.handleRequest(rq, rs, rq.body);
});
app.listen(Number(process.argv[2]), '127.0.0.1', () => console.log('ready'));
"#;

/// Starts the TypeScript SDK server on a free port (killed on drop).
fn start_ts_server(d: &Path) -> (Proc, u16) {
    let sdk = npm_package(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "node-mcp-sdk-1.32.2",
        TS_SDK,
    );
    let script = d.join("ts_server.mjs");
    std::fs::write(&script, TS_SERVER).unwrap();
    let port = free_port();
    let log = std::fs::File::create(d.join("ts_server.log")).unwrap();
    let mut child = Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .env("SDK_DIR", &sdk)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("node");
    let mut out = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    assert_eq!(line, b"ready", "the TypeScript SDK server did not start");
    (
        Proc {
            child,
            name: "node ts_server.mjs".into(),
        },
        port,
    )
}

/// A sim enclave locked to an owner, its daemon, a gate in front of the TypeScript SDK
/// server trusting the enclave's root and owner: the agent's whole path, nothing compromised.
struct RealPath {
    dir: TempDir,
    agent: LockedAgent,
    _ts: Proc,
    _gate: Proc,
    port: u16,
}

impl RealPath {
    fn start(tag: &str) -> Self {
        let dir = TempDir::new(tag);
        let d = dir.0.clone();
        let agent = LockedAgent::start(&d, &[]);
        let (ts, ts_port) = start_ts_server(&d);
        let port = free_port();
        let policy = d.join("gate.toml");
        std::fs::write(
            &policy,
            format!(
                "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"http://127.0.0.1:{port}/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n",
                d.join("state/sim-root.der").display().to_string(),
                agent.pcr0,
                agent.owner_did
            ),
        )
        .unwrap();
        let gate = start_gate(
            &d,
            "gate",
            port,
            &format!("http://127.0.0.1:{ts_port}"),
            &policy,
            &[],
        );
        RealPath {
            dir,
            agent,
            _ts: ts,
            _gate: gate,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// The owner's CLI signs a ten-minute one-transaction grant of `details` (a JSON array)
    /// and the daemon installs it.
    fn install_grant(&self, details: &str) {
        let d = &self.dir.0;
        let file = d.join("details.json");
        std::fs::write(&file, details).unwrap();
        owner_to(
            d,
            "grant.jwt",
            &[
                "grant",
                "--key",
                &self.agent.key,
                "--subject",
                &self.agent.did,
                "--authorization-details",
                file.to_str().unwrap(),
                "--minutes",
                "10",
            ],
        );
        let (code, _, err) = parent(
            &self.agent.sock,
            &["contract", "install", d.join("grant.jwt").to_str().unwrap()],
        );
        assert_eq!(code, 0, "{err}");
    }

    /// The enclave signs `body` through the daemon; it goes to the gate with `content_type`.
    /// (status, what the TypeScript server says it ran: tool and arguments).
    fn send(&self, body: &[u8], content_type: &str) -> (u16, Value) {
        let p = proof_for(&self.agent.sock, &self.url(), body, true);
        let mut h = mcp_headers(&p, body);
        for (k, v) in &mut h {
            if k == "Content-Type" {
                *v = content_type.to_owned();
            }
        }
        let (st, _, text) = send(self.port, "POST", "/mcp", &refs(&h), body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let ran = v["result"]["content"][0]["text"]
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null);
        (st, ran)
    }
}

/// In UTF-7, `+ACI-` is `"`: a memo that is one string to the gate (UTF-8) closes itself
/// and adds members for a server that decodes the body as `charset=utf-7`.
pub(crate) fn utf7(s: &str) -> String {
    s.replace('"', "+ACI-")
}

/// The enclave, the daemon and the gate all see `transfer` of 5 within the grant; the
/// TypeScript SDK server, told `charset=utf-7`, reads 9,999.
#[test]
fn a_content_type_charset_cannot_make_the_server_read_other_arguments() {
    let p = RealPath::start("attack-charset-args");
    let id = fresh_id("c");
    p.install_grant(&format!(
        "[{}]",
        transfer_detail(&format!("http://127.0.0.1:{}/", p.port), true, &id)
    ));
    let memo = format!(r#"inv-1{}"#, utf7(r#"","amount":9999,"memo":"inv-2"#));
    let body = call_body(
        "transfer",
        &format!(r#"{{"amount":5,"currency":"USD","to":"alice","memo":"{memo}"}}"#),
    );
    let (st, ran) = p.send(&body, "application/json; charset=utf-7");
    assert!(
        st >= 400 || (ran["tool"] == "transfer" && ran["args"]["amount"] == 5),
        "the gate admitted amount 5 and the server ran {ran} ({st})"
    );
}

/// The same with a standing contract (no one-transaction grant): it grants `transfer` only,
/// and the server runs `delete_all`.
#[test]
fn a_content_type_charset_cannot_make_the_server_run_another_tool() {
    let p = RealPath::start("attack-charset-tool");
    let d = p.dir.0.clone();
    p.agent.grant(
        &d,
        &[
            "--method",
            "POST",
            "--tool",
            "transfer",
            "--audience",
            &format!("http://127.0.0.1:{}/", p.port),
        ],
    );
    let memo = format!(
        "x{}",
        utf7(r#""},"name":"delete_all","arguments":{"memo":"all"#)
    );
    let body = call_body("transfer", &format!(r#"{{"memo":"{memo}"}}"#));
    let mut wrong = Vec::new();
    let (st, ran) = p.send(&body, "application/json; charset=utf-7");
    if st < 400 && ran["tool"] != "transfer" {
        wrong.push(format!(
            "with the daemon's proof the server ran {ran} ({st})"
        ));
    }
    // The gate's view of the same body sent as plain JSON: transfer, as granted.
    let (st, ran) = p.send(&body, "application/json");
    assert_eq!((st, &ran["tool"]), (200, &Value::from("transfer")), "{ran}");
    // Nor through `cada-parent proxy`: the agent's own MCP client, holding no credential,
    // names the charset; the proxy has the enclave sign what it reads as UTF-8.
    let pp = free_port();
    let listen = format!("127.0.0.1:{pp}");
    let route = format!("/mcp={}", p.url());
    let _proxy = spawn_ready(
        "cada-parent",
        &[
            "proxy",
            "--socket",
            p.agent.sock.to_str().unwrap(),
            "--listen",
            &listen,
            "--upstream",
            &route,
        ],
        &d.join("proxy.log"),
    );
    let h = [
        ("Content-Type", "application/json; charset=utf-7"),
        ("Accept", "application/json, text/event-stream"),
    ];
    let (st, _, text) = send(pp, "POST", "/mcp", &h, &body);
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let ran: Value = v["result"]["content"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or(Value::Null);
    if !(ran.is_null() || ran["tool"] == "transfer") {
        wrong.push(format!("through the proxy the server ran {ran} ({st})"));
    }
    assert!(
        wrong.is_empty(),
        "the contract grants transfer only: {wrong:?}"
    );
}

/// Other media-type parameters and spellings the gate lets through must not change what the
/// server reads: a charset other than UTF-8 in any spelling is refused (or not forwarded).
#[test]
fn a_content_type_naming_another_charset_is_not_forwarded() {
    let b = Bench::start("attack-charset-stand-in", 1, false);
    let body = call_body("transfer", GOOD);
    let mut wrong = Vec::new();
    for ct in [
        "application/json; charset=utf-7",
        "application/json;charset=\"UTF-7\"",
        "application/json; charset=utf-16le",
        "application/json; charset=shift_jis",
        "Application/JSON; Charset=UTF7",
    ] {
        let grant = b.transfer_grant();
        let mut h = b.signer.headers(&b.url(0), &body, &grant);
        h[0].1 = ct.to_owned();
        let o = attempt(b.port(0), "/mcp", &h, &body, &b.up);
        if o.reached {
            let s = b.up.last().unwrap();
            let forwarded = s
                .head
                .lines()
                .find_map(|l| l.strip_prefix("content-type:"))
                .unwrap_or("")
                .trim()
                .to_owned();
            if forwarded.contains("charset") && !forwarded.ends_with("charset=utf-8") {
                wrong.push(format!("{ct}: forwarded as {forwarded:?}"));
            }
        }
    }
    // Forward auth: the server behind the reverse proxy reads the body in the charset the
    // client names, so the check must refuse it too (the gate sees the headers).
    let reusable = b.reusable_transfer_grant();
    let mut h = b.signer.headers(&b.url(0), &body, &reusable);
    h[0].1 = "application/json; charset=utf-7".into();
    h.push(("X-Original-Method".into(), "POST".into()));
    h.push(("X-Original-URI".into(), "/mcp".into()));
    let (st, _, text) = send(b.port(0), "GET", "/_cada/auth", &refs(&h), b"");
    if st < 400 {
        wrong.push(format!(
            "forward auth admitted charset=utf-7: {st} {text:.80}"
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Informational note I1 (fixed with finding 1): a JSON body with a `Content-Encoding` would
/// be checked as sent and read decoded by a server that inflates it. Refused in any coding
/// but `identity`, in proxy mode and forward auth; the grant is not used by the refusal.
#[test]
fn a_content_encoding_on_a_json_body_is_refused() {
    let b = Bench::start("attack-content-encoding", 1, false);
    let body = call_body("transfer", GOOD);
    let grant = b.transfer_grant();
    for coding in ["gzip", "deflate", "br", "zstd", "GZIP", "identity, gzip"] {
        let o = b.call_with(&body, &grant, &[("Content-Encoding", coding)]);
        assert_eq!(
            (o.status, o.code.as_str(), o.reached),
            (415, "mcp.content_encoding", false),
            "{coding}: {o:?}"
        );
    }
    // Two headers, each harmless alone.
    let o = b.call_with(
        &body,
        &grant,
        &[
            ("Content-Encoding", "identity"),
            ("Content-Encoding", "gzip"),
        ],
    );
    assert_eq!((o.status, o.reached), (415, false), "{o:?}");
    // Forward auth: the reverse proxy forwards the header with the body.
    let reusable = b.reusable_transfer_grant();
    let (st, text) = b.forward_auth_with(&body, &reusable, &[("Content-Encoding", "gzip")]);
    assert_eq!(
        (st, code_of(&text)),
        (415, "mcp.content_encoding".into()),
        "{text}"
    );
    // `identity` is no coding: admitted, once.
    let o = b.call_with(&body, &grant, &[("Content-Encoding", "identity")]);
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
}

/// Informational note I2 (fixed with finding 1): MCP 2026-07-28 `Mcp-Param-{Name}` headers
/// mirror tool arguments for intermediaries that route on them. One the gate cannot tie to
/// the body's value of the argument of that name is refused; one that is that value goes on.
/// In forward auth, where the gate does not see the body, none passes.
#[test]
fn mcp_param_headers_are_the_bodys_values_or_refused() {
    let b = Bench::start("attack-mcp-param", 1, false);
    let body = call_body("transfer", GOOD);
    let grant = b.transfer_grant();
    for (name, value) in [
        ("Mcp-Param-To", "bob"),
        ("Mcp-Param-Amount", "9999"),
        ("Mcp-Param-Amount", "5.0"),
        ("Mcp-Param-Amount", "05"),
        ("Mcp-Param-Currency", "=?base64?RVVS?="),
        ("Mcp-Param-Memo", "=?base64?not base64?="),
        ("Mcp-Param-Account", "acme"),
        ("Mcp-Param-", "x"),
    ] {
        let o = b.call_with(&body, &grant, &[(name, value)]);
        assert_eq!(
            (o.status, o.code.as_str(), o.reached),
            (400, "mcp.param_header", false),
            "{name}: {value}: {o:?}"
        );
    }
    // Twice, even with the right value.
    let o = b.call_with(
        &body,
        &grant,
        &[("Mcp-Param-To", "alice"), ("mcp-param-to", "alice")],
    );
    assert_eq!((o.status, o.reached), (400, false), "{o:?}");
    // A `_` look-alike (read as the same header by CGI-style servers) never reaches it.
    // Forward auth cannot compare the header with the body.
    let reusable = b.reusable_transfer_grant();
    let (st, text) = b.forward_auth_with(&body, &reusable, &[("Mcp-Param-To", "alice")]);
    assert_eq!(
        (st, code_of(&text)),
        (400, "mcp.param_header".into()),
        "{text}"
    );
    // The body's values, plain or Base64, in any header-name case: forwarded as sent, once.
    let o = b.call_with(
        &body,
        &grant,
        &[
            ("Mcp-Param-To", "alice"),
            ("MCP-PARAM-AMOUNT", "5"),
            ("Mcp-Param-Memo", "=?base64?aW52LTQy?="),
            ("Mcp_Param_To", "bob"),
        ],
    );
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    let head = b.up.last().unwrap().head.to_ascii_lowercase();
    assert!(head.contains("mcp-param-to: alice"), "{head}");
    assert!(head.contains("mcp-param-amount: 5"), "{head}");
    assert!(!head.contains("mcp_param_to"), "{head}");
    assert!(
        head.contains("content-type: application/json\r\n"),
        "{head}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Single use across a fleet.
// ---------------------------------------------------------------------------------------

/// Twenty uses of one single-use grant at once at one gate with its in-memory store: exactly
/// one is admitted (the documented scope of `--replay-store memory`).
#[test]
fn racing_uses_at_one_gate_with_a_memory_store_admit_exactly_one() {
    let b = Bench::start("attack-race-memory", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let requests: Vec<Vec<(String, String)>> = (0..20)
        .map(|_| b.signer.headers(&b.url(0), &body, &grant))
        .collect();
    let start = Arc::new(std::sync::Barrier::new(requests.len()));
    let port = b.port(0);
    let handles: Vec<_> = requests
        .into_iter()
        .map(|h| {
            let start = Arc::clone(&start);
            let body = body.clone();
            std::thread::spawn(move || {
                start.wait();
                send(port, "POST", "/mcp", &refs(&h), &body).0
            })
        })
        .collect();
    let st: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 1, "{st:?}");
    assert_eq!(b.up.count(), 1);
}

/// Fifty uses of one single-use grant at once, half at each of two gates sharing Redis, each
/// with its own fresh proof: exactly one is admitted.
#[test]
fn fifty_racing_uses_at_two_gates_sharing_redis_admit_exactly_one() {
    let b = Bench::start("attack-race", 2, true);
    // Both gates are in the grant's locations.
    let t = now_s();
    let id = fresh_id("r");
    let grant_both = issue(
        &b.owner,
        b.signer.did(),
        &format!(
            "[{}]",
            transfer_detail(&b.prefix(0), true, &id).replace(
                &format!(r#"["{}"]"#, b.prefix(0)),
                &format!(r#"["{}","{}"]"#, b.prefix(0), b.prefix(1))
            )
        ),
        t - 5,
        t + 600,
    );
    let body = call_body("transfer", GOOD);
    let requests: Vec<(u16, Vec<(String, String)>)> = (0..50)
        .map(|i| {
            let g = i % 2;
            (b.port(g), b.signer.headers(&b.url(g), &body, &grant_both))
        })
        .collect();
    let start = Arc::new(std::sync::Barrier::new(requests.len()));
    let handles: Vec<_> = requests
        .into_iter()
        .map(|(port, h)| {
            let start = Arc::clone(&start);
            let body = body.clone();
            std::thread::spawn(move || {
                start.wait();
                send(port, "POST", "/mcp", &refs(&h), &body).0
            })
        })
        .collect();
    let st: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(st.iter().filter(|s| **s == 200).count(), 1, "{st:?}");
    assert!(st.iter().all(|s| *s == 200 || *s == 403), "{st:?}");
    assert_eq!(b.up.count(), 1);
}

/// Redis down: nothing is admitted (503), at any gate; back up, the grant works once.
#[test]
fn the_gates_fail_closed_while_redis_is_down() {
    let mut b = Bench::start("attack-redis-down", 1, true);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let (mut redis, port) = b.redis.take().unwrap();
    redis.kill();
    let o = b.call(0, &body, &grant);
    assert!(o.status == 503 && !o.reached, "{o:?}");
    b.redis = Some((start_redis_on(b.d(), port), port));
    // The gate reconnects on its own; until then it keeps refusing (503).
    let mut o = b.call(0, &body, &grant);
    for _ in 0..80 {
        if o.status != 503 {
            break;
        }
        assert!(!o.reached, "{o:?}");
        std::thread::sleep(Duration::from_millis(250));
        o = b.call(0, &body, &grant);
    }
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    let o = b.call(0, &body, &grant);
    assert_eq!((o.code.as_str(), o.reached), ("grant.used", false), "{o:?}");
}

/// A spent single-use grant stays spent when Redis restarts (without persistence, as the
/// test fleet and many cache deployments run it): the very request that spent it, replayed
/// seconds later with the same proof, and a new proof under the grant, are refused.
#[test]
fn a_redis_restart_does_not_reopen_a_spent_grant() {
    let mut b = Bench::start("attack-redis-restart", 1, true);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let h = b.signer.headers(&b.url(0), &body, &grant);
    let o = attempt(b.port(0), "/mcp", &h, &body, &b.up);
    assert_eq!(o.status, 200, "{o:?}");
    let (mut redis, port) = b.redis.take().unwrap();
    redis.kill();
    b.redis = Some((start_redis_on(b.d(), port), port));
    // The gate's connection notices the restart on its first command: a call under another
    // grant until the store answers again.
    for _ in 0..80 {
        if b.call(0, &body, &b.transfer_grant()).status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let replay = attempt(b.port(0), "/mcp", &h, &body, &b.up);
    assert!(
        !replay.reached,
        "the same request was admitted again: {replay:?}"
    );
    let fresh = b.call(0, &body, &grant);
    assert!(
        !fresh.reached,
        "the spent grant was admitted again: {fresh:?}"
    );
}

/// Two single-use details for the same tool are two uses (the enclave signs one proof per
/// detail); the gate must not refuse the second because it always picks the first.
#[test]
fn two_single_use_details_for_one_tool_are_two_uses() {
    let b = Bench::start("attack-two-details", 1, false);
    let grant = b.grant(&format!(
        "[{},{}]",
        transfer_detail(&b.prefix(0), true, &fresh_id("a")),
        transfer_detail(&b.prefix(0), true, &fresh_id("b"))
    ));
    let body = call_body("transfer", GOOD);
    assert_eq!(b.call(0, &body, &grant).status, 200);
    let o = b.call(0, &body, &grant);
    assert_eq!(
        (o.status, o.reached),
        (200, true),
        "the second detail: {o:?}"
    );
    let o = b.call(0, &body, &grant);
    assert_eq!(o.code, "grant.used", "a third use: {o:?}");
}

/// A refused request uses up no grant: a batch whose second call's single-use grant was
/// spent is refused, and the first call's grant stays unused.
#[test]
fn a_refused_request_consumes_no_single_use_grant() {
    let b = Bench::start("attack-partial", 1, false);
    let refund = format!(
        r#"{{"type":"mcp_tool_call","locations":["{}"],"tool":"refund","additional_arguments":true,"single_use":true,"identifier":"{}"}}"#,
        b.prefix(0),
        fresh_id("f")
    );
    let grant = b.grant(&format!(
        "[{},{refund}]",
        transfer_detail(&b.prefix(0), true, &fresh_id("t"))
    ));
    assert_eq!(b.call(0, &call_body("refund", "{}"), &grant).status, 200);
    let batch = format!(
        r#"[{},{}]"#,
        String::from_utf8(call_body("transfer", GOOD)).unwrap(),
        String::from_utf8(call_body("refund", "{}"))
            .unwrap()
            .replace(r#""id":7"#, r#""id":8"#)
    );
    let o = b.call(0, batch.as_bytes(), &grant);
    assert_eq!((o.code.as_str(), o.reached), ("grant.used", false), "{o:?}");
    let o = b.call(0, &call_body("transfer", GOOD), &grant);
    assert_eq!(
        (o.status, o.reached),
        (200, true),
        "the transfer grant was spent by a refusal: {o:?}"
    );
}

/// The real enclave: a batch of two calls under one single-use grant is not signed, and
/// neither is a second proof; so the one proof it signs is spent at the gate once.
#[test]
fn the_real_enclave_signs_one_proof_per_single_use_grant() {
    let p = RealPath::start("attack-enclave");
    p.install_grant(&format!(
        "[{}]",
        transfer_detail(
            &format!("http://127.0.0.1:{}/", p.port),
            true,
            &fresh_id("e")
        )
    ));
    let one = String::from_utf8(call_body("transfer", GOOD)).unwrap();
    let batch = format!("[{one},{}]", one.replace(r#""id":7"#, r#""id":8"#));
    let e = ask_proof(&p.agent.sock, "POST", &p.url(), batch.as_bytes(), true).unwrap_err();
    assert!(e.contains("grant.used"), "{e}");
    // Nor a batch where another method rides beside the granted call (finding 7's attack,
    // which only a signer outside the enclave can make).
    let ride = format!(
        r#"[{one},{{"jsonrpc":"2.0","id":9,"method":"bank/withdraw","params":{{"amount":9999}}}}]"#
    );
    let e = ask_proof(&p.agent.sock, "POST", &p.url(), ride.as_bytes(), true).unwrap_err();
    assert!(e.contains("grant.tool"), "{e}");
    let (st, ran) = p.send(one.as_bytes(), "application/json");
    assert_eq!(
        (st, &ran["args"]["amount"]),
        (200, &Value::from(5)),
        "{ran}"
    );
    let e = ask_proof(&p.agent.sock, "POST", &p.url(), one.as_bytes(), true).unwrap_err();
    assert!(e.contains("grant.used"), "{e}");
}

// ---------------------------------------------------------------------------------------
// 5. Where, whose and when.
// ---------------------------------------------------------------------------------------

/// Request targets that a server might route to another path than the grant's location.
#[test]
fn path_tricks_do_not_move_a_grant_to_another_path() {
    let b = Bench::start("attack-paths", 1, false);
    let location = format!("http://127.0.0.1:{}/mcp", b.port(0));
    let grant = b.grant(&format!(
        "[{}]",
        transfer_detail(&location, false, &fresh_id("p"))
    ));
    let body = call_body("transfer", GOOD);
    for path in [
        "/mcp/../admin",
        "/admin/../mcp",
        "/mcp/%2e%2e/admin",
        "/mcp%2F..%2Fadmin",
        "/%6Dcp",
        "//mcp",
        "/mcp;x=1",
        "/mcp/./",
        "/MCP",
        "/mcpx",
        "/mcp\\..\\admin",
        "/mcp%00",
        "/mcp%EF%BC%8F..%EF%BC%8Fadmin",
        "http://127.0.0.1/mcp",
    ] {
        let url = format!("http://127.0.0.1:{}{path}", b.port(0));
        let h = b.signer.headers(&url, &body, &grant);
        let before = b.up.count();
        let (st, _, text) = send_raw(b.port(0), "POST", path.as_bytes(), &refs(&h), &body);
        assert!(st >= 400 && b.up.count() == before, "{path}: {st} {text}");
    }
    // The location itself and below it are the grant's.
    let o = attempt(
        b.port(0),
        "/mcp",
        &b.signer.headers(&b.url(0), &body, &grant),
        &body,
        &b.up,
    );
    assert_eq!(o.status, 200, "{o:?}");
}

/// A grant for server A used at server B on the same path, by a gate of the same fleet.
#[test]
fn a_grant_for_one_server_is_refused_at_another_on_the_same_path() {
    let b = Bench::start("attack-server", 2, false);
    let grant = b.transfer_grant();
    let o = b.call(1, &call_body("transfer", GOOD), &grant);
    assert_eq!(
        (o.status, o.code.as_str(), o.reached),
        (403, "grant.tool", false),
        "{o:?}"
    );
}

/// Owners: an agent locked to owner Y presenting owner X's grant; and a grant of Y with the
/// identifier of X's spent grant, which stays Y's to use (one owner cannot spend another's).
#[test]
fn grants_and_identifiers_do_not_cross_owners() {
    let dir = TempDir::new("attack-owners");
    let d = &dir.0;
    let x = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let y = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let ax = Signer::new(d, "ax", x.did());
    let ay = Signer::new(d, "ay", y.did());
    let up = Upstream::start();
    let port = free_port();
    let prefix = format!("http://127.0.0.1:{port}/");
    // One policy trusting both roots and both owners.
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}, {:?}]\n[[audience]]\nprefix = \"{prefix}\"\nmeasurements = [{{ PCR0 = \"{}\" }}, {{ PCR0 = \"{}\" }}]\nowners = [\"{}\", \"{}\"]\n",
            ax.root.display().to_string(),
            ay.root.display().to_string(),
            ax.pcr0,
            ay.pcr0,
            x.did(),
            y.did()
        ),
    )
    .unwrap();
    let _g = start_gate(d, "gate", port, &up.url(), &policy, &[]);
    let url = format!("{prefix}mcp");
    let t = now_s();
    let id = fresh_id("o");
    let details = format!("[{}]", transfer_detail(&prefix, true, &id));
    let gx = issue(&x, ax.did(), &details, t - 5, t + 600);
    let gy = issue(&y, ay.did(), &details, t - 5, t + 600);
    let body = call_body("transfer", GOOD);
    // Y's agent with X's grant (for X's agent's key): refused.
    let o = attempt(port, "/mcp", &ay.headers(&url, &body, &gx), &body, &up);
    assert!(
        o.status == 401 && o.code.starts_with("contract.") && !o.reached,
        "{o:?}"
    );
    // X's grant for Y's key, signed by X: still refused (Y's enclave is not X's).
    let gxy = issue(&x, ay.did(), &details, t - 5, t + 600);
    let o = attempt(port, "/mcp", &ay.headers(&url, &body, &gxy), &body, &up);
    assert!(o.status == 401 && !o.reached, "{o:?}");
    // X spends identifier `id`; Y's grant with the same identifier is Y's own.
    assert_eq!(
        attempt(port, "/mcp", &ax.headers(&url, &body, &gx), &body, &up).status,
        200
    );
    let o = attempt(port, "/mcp", &ay.headers(&url, &body, &gy), &body, &up);
    assert_eq!((o.status, o.reached), (200, true), "{o:?}");
}

/// Time: a grant not yet valid (the owner's clock ahead, or a grant post-dated), and one
/// that ended a second ago.
#[test]
fn a_grant_outside_its_minutes_is_refused() {
    let b = Bench::start("attack-time", 1, false);
    let t = now_s();
    let details = |id: &str| format!("[{}]", transfer_detail(&b.prefix(0), true, id));
    let later = issue(
        &b.owner,
        b.signer.did(),
        &details(&fresh_id("l")),
        t + 120,
        t + 720,
    );
    let ended = issue(
        &b.owner,
        b.signer.did(),
        &details(&fresh_id("x")),
        t - 600,
        t - 1,
    );
    let body = call_body("transfer", GOOD);
    for (grant, code) in [
        (later, "contract.not_yet_valid"),
        (ended, "contract.expired"),
    ] {
        let o = b.call(0, &body, &grant);
        assert_eq!(
            (o.status, o.code.as_str(), o.reached),
            (401, code, false),
            "{o:?}"
        );
        assert!(o.text.contains(&format!("[{code}] rule 13")), "{}", o.text);
    }
}

/// Re-signs `compact` (owner-signed) with its payload changed by `edit`.
fn resign(owner: &OwnerKey, compact: &str, edit: impl Fn(&mut Value)) -> String {
    let parts: Vec<&str> = compact.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&b64::decode("payload", parts[1], 65536).unwrap()).unwrap();
    edit(&mut payload);
    let input = format!("{}.{}", parts[0], b64::encode(payload.to_string()));
    let sig = owner.sign_bytes(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(sig))
}

/// Contracts of a schema that may not carry details, signed by the owner: schema 1 (no
/// `cadaSchema`) with `authorization_details`, schema 3, and other spellings of 2.
#[test]
fn contracts_of_other_schemas_carrying_details_are_refused() {
    let b = Bench::start("attack-schema", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let variants: Vec<(String, &str)> = vec![
        (
            resign(&b.owner, &grant, |p| {
                p.as_object_mut().unwrap().remove("cadaSchema");
            }),
            "schema 1",
        ),
        (
            resign(&b.owner, &grant, |p| p["cadaSchema"] = 3.into()),
            "schema 3",
        ),
        (
            resign(&b.owner, &grant, |p| p["cadaSchema"] = "2".into()),
            "schema \"2\"",
        ),
        (
            resign(&b.owner, &grant, |p| {
                p["cadaSchema"] = serde_json::json!(2.0);
            }),
            "schema 2.0",
        ),
        (
            resign(&b.owner, &grant, |p| p["cadaSchema"] = Value::Null),
            "schema null",
        ),
    ];
    for (c, why) in &variants {
        let o = b.call(0, &body, c);
        assert!(o.status == 401 && !o.reached, "{why}: {o:?}");
        assert_eq!(o.code, "contract.schema", "{why}: {o:?}");
    }
    // Re-signed unchanged, the grant is accepted: the refusals above are the schema's.
    let same = resign(&b.owner, &grant, |_| {});
    assert_eq!(b.call(0, &body, &same).status, 200);
}

/// Unsigned header tricks: a second `CADA-Contract` carrying a wider grant (forged), a wider
/// grant in the header while the proof names the real one, and a tampered detail.
#[test]
fn unsigned_header_tricks_do_not_widen_a_grant() {
    let b = Bench::start("attack-headers", 1, false);
    let grant = b.transfer_grant();
    let mallory = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let wide = format!(
        r#"[{{"type":"mcp_tool_call","locations":["{}"],"tool":"transfer","additional_arguments":true,"identifier":"{}"}}]"#,
        b.prefix(0),
        fresh_id("w")
    );
    let t = now_s();
    let forged = issue(&mallory, b.signer.did(), &wide, t - 5, t + 600);
    let body = call_body(
        "transfer",
        &GOOD.replace(r#""amount":5"#, r#""amount":9999"#),
    );
    // Two CADA-Contract headers, forged first.
    let mut h = b.signer.headers(&b.url(0), &body, &grant);
    h.insert(4, ("CADA-Contract".into(), forged.clone()));
    let o = attempt(b.port(0), "/mcp", &h, &body, &b.up);
    assert!(o.status >= 400 && !o.reached, "{o:?}");
    // The proof names the forged one.
    let o = attempt(
        b.port(0),
        "/mcp",
        &b.signer.headers(&b.url(0), &body, &forged),
        &body,
        &b.up,
    );
    assert!(o.status == 401 && !o.reached, "{o:?}");
    // The owner's grant with its max raised (signature no longer matches).
    let parts: Vec<&str> = grant.split('.').collect();
    let payload = String::from_utf8(b64::decode("p", parts[1], 65536).unwrap()).unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(payload.replace("\"max\":500", "\"max\":50000")),
        parts[2]
    );
    let o = b.call(0, &body, &tampered);
    assert_eq!(
        (o.code.as_str(), o.reached),
        ("contract.signature", false),
        "{o:?}"
    );
    // The proof names no contract at all, the header carries the grant.
    let mut h = b.signer.headers(&b.url(0), &body, &grant);
    h[2].1 = b.signer.proof("POST", &b.url(0), &body, None, None);
    let o = attempt(b.port(0), "/mcp", &h, &body, &b.up);
    assert!(o.status >= 400 && !o.reached, "{o:?}");
}

/// Forward auth cannot read the arguments: an argument-limited grant or token detail is
/// refused there, and a proof naming no calls is refused before any grant is looked at.
#[test]
fn forward_auth_refuses_what_it_cannot_check() {
    let b = Bench::start("attack-forward", 1, false);
    let grant = b.transfer_grant();
    let body = call_body("transfer", GOOD);
    let fwd = |h: Vec<(String, String)>| {
        let mut h = h;
        h.push(("X-Original-Method".into(), "POST".into()));
        h.push(("X-Original-URI".into(), "/mcp".into()));
        let (st, head, text) = send(b.port(0), "GET", "/_cada/auth", &refs(&h), b"");
        (st, head, text)
    };
    let (st, _, text) = fwd(b.signer.headers(&b.url(0), &body, &grant));
    assert!(
        st == 403 && text.contains("grant.arguments_unchecked"),
        "{st} {text}"
    );
    // A proof that names the digest but no calls.
    let mut h = b.signer.headers(&b.url(0), &body, &grant);
    let dtc = cada_contract::digest_of(&grant);
    h[2].1 = b.signer.proof("POST", &b.url(0), b"x", Some(&dtc), None);
    h[5].1 = mcp::content_digest(b"x");
    let (st, _, text) = fwd(h);
    assert!(
        st == 401 && text.contains("forward_auth.calls_required"),
        "{st} {text}"
    );
    // The grant was never spent: proxy mode admits it once.
    assert_eq!(b.call(0, &body, &grant).status, 200);
}

/// `cada-verify serve` asked without the body and without its digest, under an
/// argument-limited grant: nothing tells it the arguments, so it refuses.
#[test]
fn the_verify_service_without_the_body_refuses_argument_limited_grants() {
    let b = Bench::start("attack-verify", 1, true);
    let grant = b.transfer_grant();
    let policy = b.d().join("policy.toml");
    let redis = format!("redis://127.0.0.1:{}", b.redis.as_ref().unwrap().1);
    let (_v, vport) = start_verifier(
        b.d(),
        "verify",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--replay-store",
            &redis,
        ],
    );
    let body = call_body(
        "transfer",
        &GOOD.replace(r#""amount":5"#, r#""amount":9999"#),
    );
    let dtc = cada_contract::digest_of(&grant);
    let q = serde_json::json!({
        "dpop": b.signer.proof("POST", &b.url(0), &body, Some(&dtc), None),
        "method": "POST", "url": b.url(0), "evidence": b.signer.evidence, "contract": grant,
    });
    let (st, v) = pop_verify(vport, &q);
    assert!(st >= 400, "admitted without the body: {v}");
    // With an empty body's digest while the proof binds another body: refused too.
    let mut q2 = q.clone();
    q2["dpop"] = b
        .signer
        .proof("POST", &b.url(0), &body, Some(&dtc), None)
        .into();
    q2["body_digest"] = mcp::body_digest(b"").into();
    let (st, v) = pop_verify(vport, &q2);
    assert!(st >= 400, "admitted with the empty body's digest: {v}");
    // The grant is unspent: the gate admits it once.
    assert_eq!(b.call(0, &call_body("transfer", GOOD), &grant).status, 200);
}

// ---------------------------------------------------------------------------------------
// 6. The STS: a token exactly as wide as the grant, used once.
// ---------------------------------------------------------------------------------------

/// An STS and a gate (trusting its keys) sharing Redis with the bench's gate 0.
struct Sts {
    _proc: Proc,
    port: u16,
    issuer: String,
    _gate: Proc,
    gate: u16,
}

fn start_sts(b: &Bench) -> Sts {
    let d = b.d();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let redis = format!("redis://127.0.0.1:{}", b.redis.as_ref().unwrap().1);
    let gate = free_port();
    let plain = free_port();
    let policy = write_policy(
        d,
        "sts.toml",
        &b.signer,
        &[b.owner.did()],
        &[
            (b.prefix(0), true),
            (format!("http://127.0.0.1:{gate}/"), true),
            (format!("http://127.0.0.1:{plain}/"), false),
        ],
        "",
    );
    let listen = format!("127.0.0.1:{port}");
    let audit = d.join("sts-audit");
    let proc = spawn_ready(
        "cada-sts",
        &[
            "serve",
            "--listen",
            &listen,
            "--issuer",
            &issuer,
            "--policy",
            policy.to_str().unwrap(),
            "--audit-dir",
            audit.to_str().unwrap(),
            "--log-format",
            "text",
            "--replay-store",
            &redis,
        ],
        &d.join("sts.log"),
    );
    let (st, _, jwks) = http_tcp(port, "GET", "/jwks", "application/json", b"").unwrap();
    assert_eq!(st, 200);
    let jwks_file = d.join("sts-jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let gate_policy = write_policy(
        d,
        "sts-gate.toml",
        &b.signer,
        &[b.owner.did()],
        &[(format!("http://127.0.0.1:{gate}/"), true)],
        &format!(
            "[[issuer]]\nissuer = \"{issuer}\"\njwks = {:?}\n",
            jwks_file.display().to_string()
        ),
    );
    let g = start_gate(
        d,
        "sts-gate",
        gate,
        &b.up.url(),
        &gate_policy,
        &["--replay-store", &redis],
    );
    Sts {
        _proc: proc,
        port,
        issuer,
        _gate: g,
        gate,
    }
}

impl Sts {
    fn prefix(&self) -> String {
        format!("http://127.0.0.1:{}/", self.gate)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.gate)
    }

    /// The access token the exchange of `grant` for exactly `detail` (at this gate) gives;
    /// asserts that it is given.
    fn token_for(&self, signer: &Signer, grant: &str, detail: &str) -> String {
        let (st, v) = self.exchange(
            signer,
            grant,
            &self.prefix(),
            &[("authorization_details", &format!("[{detail}]"))],
        );
        assert_eq!(st, 200, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    }

    /// The token exchange of `contract` for `resource` with `form` added: (status, answer).
    fn exchange(
        &self,
        signer: &Signer,
        contract: &str,
        resource: &str,
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let dtc = cada_contract::digest_of(contract);
        let proof = signer.proof(
            "POST",
            &format!("{}/token", self.issuer),
            b"",
            Some(&dtc),
            None,
        );
        let mut form = vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", contract),
            ("subject_token_type", TOKEN_TYPE_CONTRACT),
            ("resource", resource),
        ];
        form.extend_from_slice(extra);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let h = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("DPoP", proof.as_str()),
            ("CADA-Evidence", signer.evidence.as_str()),
        ];
        let (st, _, text) = send(self.port, "POST", "/token", &h, body.as_bytes());
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Requests for details wider than the grant's, or other than it, in every dimension.
#[test]
fn the_sts_mints_no_token_wider_than_the_grant() {
    let b = Bench::start("attack-sts-wide", 1, true);
    let sts = start_sts(&b);
    let id = fresh_id("s");
    let detail = transfer_detail(&sts.prefix(), true, &id);
    let t = now_s();
    let grant = issue(
        &b.owner,
        b.signer.did(),
        &format!("[{detail}]"),
        t - 5,
        t + 600,
    );
    let resource = sts.prefix();
    let other = fresh_id("o");
    let variants: Vec<(String, &str)> = vec![
        (detail.replace("\"max\":500", "\"max\":501"), "a higher max"),
        (detail.replace("\"min\":1,", ""), "no min"),
        (
            detail.replace(r#""currency":{"eq":"USD"},"#, ""),
            "currency unconstrained",
        ),
        (
            detail.replace(r#"{"eq":"USD"}"#, r#"{"one_of":["USD","EUR"]}"#),
            "currency one of two",
        ),
        (
            detail.replace(r#"["alice","bob"]"#, r#"["alice","bob","mallory"]"#),
            "one_of wider",
        ),
        (
            detail.replace(r#"{"one_of":["alice","bob"]}"#, r#"{"prefix":"a"}"#),
            "one_of as a prefix",
        ),
        (
            detail.replace(r#"{"prefix":"inv-"}"#, r#"{"prefix":"inv"}"#),
            "a shorter prefix",
        ),
        (
            detail.replace(r#"{"prefix":"inv-"}"#, r#"{"prefix":""}"#),
            "an empty prefix",
        ),
        (
            detail.replace(
                r#""additional_arguments":false"#,
                r#""additional_arguments":true"#,
            ),
            "additional arguments",
        ),
        (
            detail.replace(
                r#""memo":{"prefix":"inv-"}"#,
                r#""memo":{"prefix":"inv-"},"cc":{"eq":"eve"}"#,
            ),
            "an unlisted argument constrained",
        ),
        (
            detail.replace(r#""single_use":true"#, r#""single_use":false"#),
            "not single use",
        ),
        (
            detail.replace(&id, &other),
            "single use under another identifier",
        ),
        (
            detail.replace(r#""tool":"transfer""#, r#""tool":"delete_all""#),
            "another tool",
        ),
        (
            detail.replace(r#""tool":"transfer""#, r#""tool":"Transfer""#),
            "the tool in upper case",
        ),
        (
            detail.replace(&sts.prefix(), &b.prefix(0)),
            "another server",
        ),
        (
            detail.replace(&sts.prefix(), &format!("http://127.0.0.1:{}/", free_port())),
            "a server outside the resource",
        ),
        (
            detail.replace(
                r#""type":"mcp_tool_call""#,
                r#""type":"mcp_tool_call","type":"payment""#,
            ),
            "a repeated member",
        ),
        (
            detail.replace(
                r#""type":"mcp_tool_call""#,
                r#""type":"mcp_tool_call","limits":{}"#,
            ),
            "an unknown member",
        ),
    ];
    for (d, why) in &variants {
        let (st, v) = sts.exchange(
            &b.signer,
            &grant,
            &resource,
            &[("authorization_details", &format!("[{d}]"))],
        );
        assert!(st == 400 && v["access_token"].is_null(), "{why}: {st} {v}");
    }
    // Twice the same detail, and the parameter twice.
    let twice = format!("[{detail},{detail}]");
    let (st, v) = sts.exchange(
        &b.signer,
        &grant,
        &resource,
        &[("authorization_details", &twice)],
    );
    assert!(st == 400, "the same detail twice: {v}");
    let one = format!("[{detail}]");
    let (st, v) = sts.exchange(
        &b.signer,
        &grant,
        &resource,
        &[
            ("authorization_details", &one),
            ("authorization_details", &one),
        ],
    );
    assert!(st == 400, "the parameter twice: {v}");
    // Without details: a grant with no audiences gives no token.
    let (st, v) = sts.exchange(&b.signer, &grant, &resource, &[]);
    assert!(
        st == 400 && v["access_token"].is_null(),
        "a plain token: {v}"
    );
    // The grant's own detail, exactly: one token.
    let (st, v) = sts.exchange(
        &b.signer,
        &grant,
        &resource,
        &[("authorization_details", &one)],
    );
    assert_eq!(st, 200, "{v}");
}

/// A token is worth one use of its grant whichever way the grant is spent: the grant first,
/// then a token minted afterwards; a token replayed; two tokens of one grant.
#[test]
fn a_token_is_dead_once_its_grant_is_used() {
    let b = Bench::start("attack-sts-once", 1, true);
    let sts = start_sts(&b);
    let t = now_s();
    let mint = |grant: &str, detail: &str| sts.token_for(&b.signer, grant, detail);
    let body = call_body("transfer", GOOD);
    let by_token = |at: &str| {
        attempt(
            sts.gate,
            "/mcp",
            &b.signer.token_headers(&sts.url(), &body, at),
            &body,
            &b.up,
        )
    };
    // The grant spent directly, then a token minted for it.
    let d1 = transfer_detail(&sts.prefix(), true, &fresh_id("g"));
    let g1 = issue(&b.owner, b.signer.did(), &format!("[{d1}]"), t - 5, t + 600);
    let o = attempt(
        sts.gate,
        "/mcp",
        &b.signer.headers(&sts.url(), &body, &g1),
        &body,
        &b.up,
    );
    assert_eq!(o.status, 200, "{o:?}");
    let at = mint(&g1, &d1);
    let o = by_token(&at);
    assert_eq!((o.code.as_str(), o.reached), ("grant.used", false), "{o:?}");
    // Two tokens of one grant: one use in all.
    let d2 = transfer_detail(&sts.prefix(), true, &fresh_id("h"));
    let g2 = issue(&b.owner, b.signer.did(), &format!("[{d2}]"), t - 5, t + 600);
    let (a, c) = (mint(&g2, &d2), mint(&g2, &d2));
    assert_eq!(by_token(&a).status, 200);
    for at in [&a, &c] {
        let o = by_token(at);
        assert_eq!((o.code.as_str(), o.reached), ("grant.used", false), "{o:?}");
    }
}

/// A token's single use must be remembered as long as the token is accepted: the gate
/// accepts a token up to `skew_secs` past its `exp` (= the grant's end when the grant ends
/// first) but forgets the spent grant at the grant's end.
#[test]
fn a_single_use_token_is_not_admitted_again_after_its_grant_ends() {
    let b = Bench::start("attack-sts-skew", 1, true);
    let sts = start_sts(&b);
    let t = now_s();
    let detail = transfer_detail(&sts.prefix(), true, &fresh_id("k"));
    let grant = issue(
        &b.owner,
        b.signer.did(),
        &format!("[{detail}]"),
        t - 5,
        t + 4,
    );
    let at = sts.token_for(&b.signer, &grant, &detail);
    let body = call_body("transfer", GOOD);
    let o = attempt(
        sts.gate,
        "/mcp",
        &b.signer.token_headers(&sts.url(), &body, &at),
        &body,
        &b.up,
    );
    assert_eq!(o.status, 200, "{o:?}");
    // Past the grant's end (and the token's exp), inside the gate's default 10 s skew.
    while now_s() < t + 6 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = attempt(
        sts.gate,
        "/mcp",
        &b.signer.token_headers(&sts.url(), &body, &at),
        &body,
        &b.up,
    );
    assert!(
        !o.reached,
        "the single-use token was admitted a second time: {o:?}"
    );
}

/// A token asked for as single use under an identifier of the requester's choosing (from a
/// reusable detail) must not spend another grant that carries that identifier.
#[test]
fn a_token_cannot_spend_another_grants_identifier() {
    let b = Bench::start("attack-sts-id", 1, true);
    let sts = start_sts(&b);
    let t = now_s();
    // The owner's reusable grant for small transfers, and, separately, a single-use grant
    // (the victim) whose identifier the agent has seen.
    let reusable = transfer_detail(&sts.prefix(), false, &fresh_id("u"));
    let standing = issue(
        &b.owner,
        b.signer.did(),
        &format!("[{reusable}]"),
        t - 5,
        t + 600,
    );
    let victim_id = fresh_id("v");
    let victim = issue(
        &b.owner,
        b.signer.did(),
        &format!("[{}]", transfer_detail(&sts.prefix(), true, &victim_id)),
        t - 5,
        t + 600,
    );
    let asked = transfer_detail(&sts.prefix(), true, &victim_id);
    let (st, v) = sts.exchange(
        &b.signer,
        &standing,
        &sts.prefix(),
        &[("authorization_details", &format!("[{asked}]"))],
    );
    let body = call_body("transfer", GOOD);
    if st == 200 {
        let at = v["access_token"].as_str().unwrap();
        let _ = attempt(
            sts.gate,
            "/mcp",
            &b.signer.token_headers(&sts.url(), &body, at),
            &body,
            &b.up,
        );
    }
    let o = attempt(
        sts.gate,
        "/mcp",
        &b.signer.headers(&sts.url(), &body, &victim),
        &body,
        &b.up,
    );
    assert_eq!(
        (o.status, o.reached),
        (200, true),
        "the victim grant was spent by another's token: {o:?}"
    );
}

/// Finding 7 through a token: a token minted for exactly one transaction (no scope, no
/// tools) carries only that grant's authority, like the grant itself — a method naming
/// nothing, riding in a batch beside the covered call, is refused too.
#[test]
fn a_one_transaction_token_admits_no_other_method_beside_its_call() {
    let b = Bench::start("attack-sts-ride-along", 1, true);
    let sts = start_sts(&b);
    let t = now_s();
    let detail = transfer_detail(&sts.prefix(), false, &fresh_id("r"));
    let grant = issue(
        &b.owner,
        b.signer.did(),
        &format!("[{detail}]"),
        t - 5,
        t + 600,
    );
    let at = sts.token_for(&b.signer, &grant, &detail);
    let by_token = |body: &[u8]| {
        attempt(
            sts.gate,
            "/mcp",
            &b.signer.token_headers(&sts.url(), body, &at),
            body,
            &b.up,
        )
    };
    let call = String::from_utf8(call_body("transfer", GOOD)).unwrap();
    for other in [
        r#"{"jsonrpc":"2.0","id":9,"method":"bank/withdraw","params":{"amount":9999}}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
    ] {
        let batch = format!("[{call},{other}]");
        let o = by_token(batch.as_bytes());
        assert_eq!(
            (o.code.as_str(), o.reached),
            ("grant.tool", false),
            "{other}: admitted under the token ({o:?})"
        );
        let o = by_token(other.as_bytes());
        assert_eq!((o.code.as_str(), o.reached), ("grant.tool", false), "{o:?}");
    }
    // The covered call alone is the token's transaction (reusable: twice).
    for _ in 0..2 {
        let o = by_token(call.as_bytes());
        assert_eq!((o.status, o.reached), (200, true), "{o:?}");
    }
}
