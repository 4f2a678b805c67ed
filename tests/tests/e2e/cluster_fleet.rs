//! A fleet on one Redis Cluster (issue 26, Acceptance), with the real binaries: a six-node
//! local cluster (three masters, three replicas), two `cada-verify serve`, two `cada-gate`
//! and two `cada-sts` sharing it through `--replay-store redis+cluster://…`.
//!
//! - A proof accepted at any instance is refused at every other that could accept it (each
//!   ordered pair), a behaviour limit crossed through one instance suspends the contract at
//!   all six, a single-use grant used at gate A is refused at gate B.
//! - Under steady load at both verifiers, a master is killed: after the failover every
//!   instance serves again without a restart; no jti is accepted twice (counted from both
//!   audit logs) and every accepted proof replayed afterwards is refused; the window of 503s
//!   is measured and printed (not asserted: no timed assertions).
//! - A slot whose master and replica are both down: 503 for requests whose jti lands there,
//!   200 for the others, at every binary.
//!
//! Proofs are signed in the test by a key outside any enclave with `sim` evidence naming the
//! owner (as an enclave locked to the owner presents), so that their `jti` — and therefore
//! the cluster slot of their replay key — is chosen by the test.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cada_contract::{AuthorizationDetail, BehaviourLimits, Grant, OwnerKey, Subject, WindowLimit};
use cada_e2e::mcp_interop::{refs, send, start_gate};
use cada_e2e::redis_cluster::{Cluster, Options};
use cada_e2e::*;
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::platform::Platform;
use cada_pipeline::store::keys;
use cada_protocol::access_token::{GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_CONTRACT};
use cada_protocol::jwk::SigAlg;
use cada_protocol::token::{CadaClaim, PopClaims, PopHeader};
use cada_protocol::{b64, mcp, token};
use serde_json::Value;

/// What the gates are called behind their load balancer (both: `--public-url`).
const MCP: &str = "https://mcp.example.com";
/// The STS fleet's one issuer.
const ISSUER: &str = "https://sts.example.com";
/// An API the verifiers guard without contracts (the load).
const LOAD: &str = "https://load.example.com/v1/orders";

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A key outside any enclave with `sim` evidence that binds it and names the owner.
struct Agent {
    key: SigningKey,
    evidence: String,
    att: String,
    root: PathBuf,
    pcr0: String,
}

impl Agent {
    fn new(d: &Path, owner: &str) -> Self {
        let sim = Sim::new(None).unwrap();
        let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
        let mut binding = key.binding();
        binding.owner = Some(owner.to_owned());
        let env = sim.attest(&binding.to_cbor(), b"fleet").unwrap();
        let root = d.join("agent-root.der");
        std::fs::write(&root, sim.root_der()).unwrap();
        let pcr0 = sim.measurements().unwrap()["PCR0"].clone();
        Agent {
            att: env.att_digest(),
            evidence: env.to_header(),
            key,
            root,
            pcr0,
        }
    }

    /// The replay key's slot of a proof with this `jti` (what every instance claims).
    fn slot_of(&self, jti: &str) -> u16 {
        let replay = cada_attestation_verifier::pop::replay_key(self.key.jkt(), jti);
        keys::slot(keys::jti(&replay).as_bytes())
    }

    /// A proof for `POST htu` with `jti`, under the contract `dtc`, bound to `body`.
    fn proof(&self, htu: &str, body: &[u8], dtc: Option<&str>, jti: &str) -> String {
        let iat = now_s();
        let header = PopHeader {
            typ: token::TYP.into(),
            alg: self.key.alg().as_str().into(),
            jwk: self.key.jwk().clone(),
        };
        let claims = PopClaims {
            jti: jti.to_owned(),
            htm: "POST".into(),
            htu: htu.into(),
            iat,
            exp: iat + token::MAX_LIFETIME_SECS,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: self.att.clone(),
                seq: 1,
                chain: b64::encode([0u8; 32]),
                dtc: dtc.map(str::to_owned),
                bd: (!body.is_empty()).then(|| mcp::body_digest(body)),
                mcp: if body.is_empty() {
                    vec![]
                } else {
                    mcp::parse_body(body).unwrap().calls()
                },
                ..CadaClaim::default()
            },
        };
        let input = token::signing_input(&header, &claims).unwrap();
        let sig = self.key.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", b64::encode(sig))
    }
}

/// A fresh, unique jti.
fn fresh_jti(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh jti whose replay key lands in (or, with `inside` false, outside) `ranges`.
fn jti_where(agent: &Agent, tag: &str, ranges: &[(u16, u16)], inside: bool) -> String {
    loop {
        let j = fresh_jti(tag);
        let s = agent.slot_of(&j);
        if ranges.iter().any(|(a, b)| (*a..=*b).contains(&s)) == inside {
            return j;
        }
    }
}

/// An MCP upstream answering every request with a JSON-RPC result.
fn upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
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
                let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"done"}]}}"#;
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// A `tools/call` body.
fn call_body(tool: &str, arguments: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    )
    .into_bytes()
}

/// One instance of the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inst {
    Verify(u16),
    Gate(u16),
    Sts(u16),
}

impl std::fmt::Display for Inst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inst::Verify(p) => write!(f, "cada-verify :{p}"),
            Inst::Gate(p) => write!(f, "cada-gate :{p}"),
            Inst::Sts(p) => write!(f, "cada-sts :{p}"),
        }
    }
}

/// What one instance answered: status and the refusal's code ("" when accepted).
type Answer = (u16, String);

/// The refusal code in a `cada-verify` answer.
fn verify_code(v: &Value) -> String {
    // A 503's detail names the store's code (`… accepted: store.timeout: …`).
    v["detail"]
        .as_str()
        .and_then(|d| d.find("store.").map(|i| &d[i..]))
        .and_then(|d| d.split([':', ' ']).next())
        .or_else(|| v["code"].as_str())
        .or_else(|| v["reasons"][0]["code"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Six processes on one cluster, and the material to call them.
struct Fleet {
    agent: Agent,
    owner: OwnerKey,
    upstream: String,
    verifiers: [u16; 2],
    gates: [u16; 2],
    sts: [u16; 2],
    _procs: Vec<Proc>,
}

impl Fleet {
    /// Starts the six instances in `d` on `store` with `extra` store flags.
    fn start(d: &Path, store: &str, extra: &[&str]) -> Fleet {
        let (owner_did, owner_file) = keygen(d, "owner");
        let owner =
            OwnerKey::from_key_file(&std::fs::read_to_string(&owner_file).unwrap()).unwrap();
        let agent = Agent::new(d, &owner_did);
        let m = format!("measurements = [{{ PCR0 = \"{}\" }}]", agent.pcr0);
        let policy = d.join("fleet.toml");
        std::fs::write(
            &policy,
            format!(
                "[roots]\nnitro = [{root:?}]\n\
                 [[audience]]\nprefix = \"{MCP}/\"\n{m}\nowners = [\"{owner_did}\"]\nchecks_arguments = true\n\
                 [[audience]]\nprefix = \"{ISSUER}/\"\n{m}\nowners = [\"{owner_did}\"]\n\
                 [[audience]]\nprefix = \"https://load.example.com/\"\n{m}\n",
                root = agent.root.display().to_string()
            ),
        )
        .unwrap();
        let upstream = upstream();
        let p = policy.to_str().unwrap();
        let mut common = vec!["--replay-store", store, "--audit-durability", "batch-ms:20"];
        common.extend_from_slice(extra);
        let mut procs = Vec::new();
        let mut verifiers = [0; 2];
        for (i, name) in ["va", "vb"].iter().enumerate() {
            let mut args = vec!["--policy", p];
            args.extend_from_slice(&common);
            let (proc, port) = start_verifier(d, name, &args);
            procs.push(proc);
            verifiers[i] = port;
        }
        let mut gates = [0; 2];
        for (i, name) in ["ga", "gb"].iter().enumerate() {
            let port = free_port();
            let mut args = vec!["--public-url", MCP];
            args.extend_from_slice(&common);
            procs.push(start_gate(d, name, port, &upstream, &policy, &args));
            gates[i] = port;
        }
        let sts_key = d.join("sts-key.pem");
        let out = std::process::Command::new(bin("cada-sts"))
            .args(["keygen", "--out", sts_key.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success());
        let mut sts = [0; 2];
        for (i, name) in ["sa", "sb"].iter().enumerate() {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let audit = d.join(format!("{name}-audit"));
            let mut args = vec![
                "serve",
                "--listen",
                &listen,
                "--issuer",
                ISSUER,
                "--policy",
                p,
                "--audit-dir",
                audit.to_str().unwrap(),
                "--log-format",
                "text",
                "--signing-key",
                sts_key.to_str().unwrap(),
            ];
            args.extend_from_slice(&common);
            procs.push(spawn_ready(
                "cada-sts",
                &args,
                &d.join(format!("{name}.log")),
            ));
            sts[i] = port;
        }
        Fleet {
            agent,
            owner,
            upstream,
            verifiers,
            gates,
            sts,
            _procs: procs,
        }
    }

    fn all(&self) -> Vec<Inst> {
        let mut v: Vec<Inst> = self.verifiers.iter().map(|p| Inst::Verify(*p)).collect();
        v.extend(self.gates.iter().map(|p| Inst::Gate(*p)));
        v.extend(self.sts.iter().map(|p| Inst::Sts(*p)));
        v
    }

    /// A contract for the MCP server's `lookup` tool and the STS, with `limits`.
    fn contract(&self, limits: BehaviourLimits) -> String {
        let t = now_s();
        let mut g = Grant::new(
            Subject::Key(self.agent.key.did().into()),
            vec![format!("{MCP}/"), ISSUER.into()],
            vec!["POST".into()],
            t - 5,
            t + 3600,
        );
        g.tools = vec!["lookup".into()];
        g.limits = limits;
        g.issue(&self.owner, t - 5).unwrap()
    }

    /// A single-use grant for one `transfer` at the gates.
    fn single_use_grant(&self) -> String {
        let t = now_s();
        let details = format!(
            r#"[{{"type":"mcp_tool_call","locations":["{MCP}/"],"actions":["tools/call"],"tool":"transfer",
                "arguments":{{"amount":{{"max":500}}}},"additional_arguments":false,"single_use":true}}]"#
        );
        let mut g = Grant::new(
            Subject::Key(self.agent.key.did().into()),
            vec![],
            vec!["POST".into()],
            t - 5,
            t + 600,
        );
        g.authorization_details = AuthorizationDetail::parse_draft_list(&details).unwrap();
        g.authorization_details[0].identifier = format!("urn:uuid:{}", fresh_jti("grant"));
        g.issue(&self.owner, t - 5).unwrap()
    }

    /// Presents the proof `jti` (signed for what `inst` checks) under `contract` to `inst`.
    /// A proof for the MCP server is the same at a verifier and at a gate; one for the
    /// token endpoint the same at a verifier and at an STS.
    fn present(&self, inst: Inst, jti: &str, contract: &str, for_sts: bool) -> Answer {
        let dtc = cada_contract::digest_of(contract);
        let body = call_body("lookup", r#"{"q":"x"}"#);
        let (htu, body) = if for_sts {
            (format!("{ISSUER}/token"), Vec::new())
        } else {
            (format!("{MCP}/mcp"), body)
        };
        let dpop = self.agent.proof(&htu, &body, Some(&dtc), jti);
        match inst {
            Inst::Verify(port) => {
                let q = serde_json::json!({
                    "dpop": dpop, "method": "POST", "url": htu, "evidence": self.agent.evidence,
                    "contract": contract, "body": String::from_utf8_lossy(&body),
                });
                let (st, v) = pop_verify(port, &q);
                (
                    st,
                    if st == 200 {
                        String::new()
                    } else {
                        verify_code(&v)
                    },
                )
            }
            Inst::Gate(port) => {
                let h = vec![
                    ("Content-Type".to_owned(), "application/json".to_owned()),
                    (
                        "Accept".to_owned(),
                        "application/json, text/event-stream".to_owned(),
                    ),
                    ("DPoP".to_owned(), dpop),
                    ("CADA-Evidence".to_owned(), self.agent.evidence.clone()),
                    ("CADA-Contract".to_owned(), contract.to_owned()),
                    ("Content-Digest".to_owned(), mcp::content_digest(&body)),
                ];
                self.gate_call(port, &h, &body)
            }
            Inst::Sts(port) => {
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
                        ("subject_token", contract),
                        ("subject_token_type", TOKEN_TYPE_CONTRACT),
                        ("resource", &format!("{MCP}/")),
                    ])
                    .finish();
                let h = [
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("DPoP", dpop.as_str()),
                    ("CADA-Evidence", self.agent.evidence.as_str()),
                ];
                let (st, _, text) = send(port, "POST", "/token", &h, form.as_bytes());
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let code = v["error_description"]
                    .as_str()
                    .and_then(|d| d.strip_prefix('['))
                    .and_then(|d| d.split(']').next())
                    .unwrap_or_default()
                    .to_owned();
                (st, if st == 200 { String::new() } else { code })
            }
        }
    }

    fn gate_call(&self, port: u16, h: &[(String, String)], body: &[u8]) -> Answer {
        let (st, _, text) = send(port, "POST", "/mcp", &refs(h), body);
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = v["error"]["data"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (st, code)
    }
}

/// The acceptances (`decision: accept`) per jti in the audit logs of `names` under `d`.
fn acceptances(d: &Path, names: &[&str]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for name in names {
        for r in audit_records(&d.join(format!("{name}-audit"))) {
            if r["decision"] == "accept" {
                if let Some(j) = r["jti"].as_str() {
                    *n.entry(j.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
    n
}

#[test]
fn a_fleet_on_the_cluster_refuses_replays_everywhere_suspends_everywhere_and_uses_grants_once() {
    let dir = TempDir::new("cluster-fleet");
    let d = &dir.0;
    let c = Cluster::start(d);
    let fleet = Fleet::start(d, &c.url(), &[]);
    let contract = fleet.contract(BehaviourLimits::default());

    // 1. Replays: for every ordered pair of instances that check the same proofs (verifiers
    // and gates: the MCP server's URL; verifiers and STSs: the token endpoint), a proof
    // accepted at the first is refused at the second as a replay (and at the first too).
    let mcp_side = [
        Inst::Verify(fleet.verifiers[0]),
        Inst::Verify(fleet.verifiers[1]),
        Inst::Gate(fleet.gates[0]),
        Inst::Gate(fleet.gates[1]),
    ];
    let sts_side = [
        Inst::Verify(fleet.verifiers[0]),
        Inst::Verify(fleet.verifiers[1]),
        Inst::Sts(fleet.sts[0]),
        Inst::Sts(fleet.sts[1]),
    ];
    let mut pairs = 0;
    for (side, for_sts) in [(&mcp_side, false), (&sts_side, true)] {
        for first in side {
            for second in side {
                if first == second
                    || (for_sts
                        && matches!(first, Inst::Verify(_))
                        && matches!(second, Inst::Verify(_)))
                {
                    continue;
                }
                let jti = fresh_jti("pair");
                let a = fleet.present(*first, &jti, &contract, for_sts);
                assert_eq!(a, (200, String::new()), "{first} accepts {jti}");
                let b = fleet.present(*second, &jti, &contract, for_sts);
                let refused_as = if matches!(second, Inst::Sts(_)) {
                    400
                } else {
                    401
                };
                assert_eq!(
                    b,
                    (refused_as, "pop.replay".to_owned()),
                    "{jti} accepted at {first}, replayed at {second}"
                );
                let again = fleet.present(*first, &jti, &contract, for_sts);
                assert_eq!(again.1, "pop.replay", "{jti} again at {first}");
                pairs += 1;
            }
        }
    }
    assert_eq!(pairs, 22);

    // 2. A single-use grant used at gate A is refused at gate B (and at A).
    let grant = fleet.single_use_grant();
    let dtc = cada_contract::digest_of(&grant);
    let body = call_body("transfer", r#"{"amount":100}"#);
    let use_at = |port: u16| {
        let h = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            (
                "Accept".to_owned(),
                "application/json, text/event-stream".to_owned(),
            ),
            (
                "DPoP".to_owned(),
                fleet.agent.proof(
                    &format!("{MCP}/mcp"),
                    &body,
                    Some(&dtc),
                    &fresh_jti("grant-use"),
                ),
            ),
            ("CADA-Evidence".to_owned(), fleet.agent.evidence.clone()),
            ("CADA-Contract".to_owned(), grant.clone()),
            ("Content-Digest".to_owned(), mcp::content_digest(&body)),
        ];
        fleet.gate_call(port, &h, &body)
    };
    assert_eq!(use_at(fleet.gates[0]), (200, String::new()));
    assert_eq!(use_at(fleet.gates[1]), (403, "grant.used".to_owned()));
    assert_eq!(use_at(fleet.gates[0]), (403, "grant.used".to_owned()));

    // 3. A behaviour limit (3 requests an hour) crossed through gate A suspends the
    // contract at all six instances.
    let limited = fleet.contract(BehaviourLimits {
        requests: Some(WindowLimit {
            max: 3,
            window_seconds: 3600,
        }),
        refusals: None,
    });
    for inst in [
        Inst::Verify(fleet.verifiers[1]),
        Inst::Gate(fleet.gates[1]),
        Inst::Verify(fleet.verifiers[0]),
    ] {
        let a = fleet.present(inst, &fresh_jti("limit"), &limited, false);
        assert_eq!(a, (200, String::new()), "within the limit at {inst}");
    }
    let crossing = fleet.present(
        Inst::Gate(fleet.gates[0]),
        &fresh_jti("limit"),
        &limited,
        false,
    );
    assert_eq!(
        crossing.1, "contract.not_permitted.behaviour",
        "the fourth request crosses the limit"
    );
    for inst in fleet.all() {
        let for_sts = matches!(inst, Inst::Sts(_));
        let (st, code) = fleet.present(inst, &fresh_jti("suspended"), &limited, for_sts);
        assert!(
            st >= 400 && code == "contract.not_permitted.behaviour",
            "{inst} after the suspension: {st} {code}"
        );
    }
    // The unlimited contract is untouched.
    assert_eq!(
        fleet.present(
            Inst::Gate(fleet.gates[1]),
            &fresh_jti("other"),
            &contract,
            false
        ),
        (200, String::new())
    );
    let _ = &fleet.upstream;
}

/// One request of the load: when, where, which jti, and what came back.
#[derive(Clone, Debug)]
struct Sent {
    at: Duration,
    port: u16,
    jti: String,
    iat: u64,
    body: String,
    status: u16,
    code: String,
}

#[test]
fn a_killed_master_under_load_fails_over_without_restart_and_no_jti_is_accepted_twice() {
    let dir = TempDir::new("cluster-fleet-failover");
    let d = &dir.0;
    // One spare replica: after the failover Redis gives it to the promoted master, so
    // that replicas=1 is acknowledged again without restarting the killed node.
    let mut c = Cluster::start_with(
        d,
        Options {
            spares: 1,
            ..Options::default()
        },
    );
    let (owner_did, _) = keygen(d, "owner");
    let agent = Arc::new(Agent::new(d, &owner_did));
    let policy = d.join("load.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"https://load.example.com/\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
            agent.root.display().to_string(),
            agent.pcr0
        ),
    )
    .unwrap();
    let store = c.url();
    let args = [
        "--policy",
        policy.to_str().unwrap(),
        "--replay-store",
        &store,
        "--store-ack",
        "replicas=1,timeout=100",
        "--audit-durability",
        "batch-ms:20",
    ];
    let (_va, pa) = start_verifier(d, "la", &args);
    let (_vb, pb) = start_verifier(d, "lb", &args);
    // The victim: a master with one replica (the spare went to another).
    let victim = c
        .nodes_info()
        .iter()
        .filter(|n| n.master)
        .map(|n| n.port)
        .find(|p| c.replicas_of(*p).len() == 1)
        .unwrap();
    let ranges: Vec<(u16, u16)> = c
        .nodes_info()
        .into_iter()
        .find(|n| n.port == victim)
        .map(|n| n.slots)
        .unwrap();

    let request = |port: u16, jti: &str, agent: &Agent| -> (String, u16, String) {
        let dpop = agent.proof(LOAD, b"", None, jti);
        let q = serde_json::json!({"dpop": dpop, "method": "POST", "url": LOAD, "evidence": agent.evidence});
        let (st, v) = pop_verify(port, &q);
        (
            q.to_string(),
            st,
            if st == 200 {
                String::new()
            } else {
                verify_code(&v)
            },
        )
    };

    // Both instances accept before the load begins (a store seen for the first time may
    // refuse proofs issued before its epoch began: pop.store_epoch).
    for port in [pa, pb] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, st, code) = request(port, &fresh_jti("warm"), &agent);
            if st == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "verifier :{port} never accepts: {st} {code}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Six client threads, about 75 requests a second each, alternating the instances.
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let mut threads = Vec::new();
    for t in 0..6 {
        let (stop, log, agent) = (stop.clone(), log.clone(), agent.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let port = if (n + t) % 2 == 0 { pa } else { pb };
                let jti = fresh_jti(&format!("load{t}"));
                let iat = now_s();
                let dpop = agent.proof(LOAD, b"", None, &jti);
                let q = serde_json::json!({"dpop": dpop, "method": "POST", "url": LOAD, "evidence": agent.evidence});
                let (status, v) = pop_verify(port, &q);
                let sent = Sent {
                    at: start.elapsed(),
                    port,
                    jti,
                    iat,
                    body: q.to_string(),
                    status,
                    code: if status == 200 { String::new() } else { verify_code(&v) },
                };
                log.lock().unwrap().push(sent);
                n += 1;
                if let Some(rest) = Duration::from_millis(13).checked_sub(began.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(4));
    let killed_at = start.elapsed();
    c.kill(victim);
    std::thread::sleep(Duration::from_secs(11));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let sent = log.lock().unwrap().clone();

    // The 503 window, measured (printed, not asserted).
    let unavailable: Vec<&Sent> = sent.iter().filter(|s| s.status == 503).collect();
    let codes: BTreeMap<String, usize> = unavailable.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.code.clone()).or_insert(0) += 1;
        m
    });
    let accepted: Vec<&Sent> = sent.iter().filter(|s| s.status == 200).collect();
    let duration = sent.last().map_or(Duration::ZERO, |s| s.at);
    eprintln!(
        "failover under load: {} requests in {:.1} s ({:.0}/s) at two verifiers, {} accepted, \
         {} refused 503 {codes:?}; master :{victim} killed at {:.2} s; \
         503s from {} to {} ms after the kill",
        sent.len(),
        duration.as_secs_f64(),
        sent.len() as f64 / duration.as_secs_f64(),
        accepted.len(),
        unavailable.len(),
        killed_at.as_secs_f64(),
        unavailable
            .first()
            .map_or(0, |s| s.at.saturating_sub(killed_at).as_millis()),
        unavailable
            .last()
            .map_or(0, |s| s.at.saturating_sub(killed_at).as_millis()),
    );
    let mut answers: BTreeMap<String, (usize, u128, u128)> = BTreeMap::new();
    for x in &sent {
        let ms = x.at.as_millis();
        let e = answers
            .entry(format!("{} {}", x.status, x.code))
            .or_insert((0, ms, ms));
        e.0 += 1;
        e.2 = ms;
    }
    eprintln!("answers (count, first ms, last ms since the load began): {answers:?}");
    // Every answer was an acceptance or a 503 naming a store failure: nothing else.
    for s in &sent {
        if s.status == 503 && !s.code.starts_with("store.") {
            eprintln!("a 503 without a store code: {s:?}");
        }
        assert!(
            s.status == 200
                || (s.status == 401 && s.code == "pop.store_epoch")
                || (s.status == 503
                    && [
                        "store.unavailable",
                        "store.timeout",
                        "store.unacknowledged",
                        "store.busy"
                    ]
                    .contains(&s.code.as_str())),
            "{s:?}"
        );
    }
    assert!(
        !unavailable.is_empty(),
        "the killed master's slots were refused for a while"
    );
    // 503s only touched the victim's slots.
    for s in &unavailable {
        let slot = agent.slot_of(&s.jti);
        assert!(
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)),
            "a 503 for slot {slot}, not the killed master's: {s:?}"
        );
    }

    // Every accepted proof, replayed once at the other instance now: refused.
    let replays: Vec<(u16, String, u64)> = accepted
        .iter()
        .map(|s| (if s.port == pa { pb } else { pa }, s.body.clone(), s.iat))
        .collect();
    let replays = Arc::new(replays);
    let refused = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut threads = Vec::new();
    for t in 0..4 {
        let (replays, refused) = (replays.clone(), refused.clone());
        threads.push(std::thread::spawn(move || {
            for (port, body, iat) in replays.iter().skip(t).step_by(4) {
                let q: Value = serde_json::from_str(body).unwrap();
                // Still within its lifetime (a second to spare) when sent again: only the
                // store can refuse it.
                let fresh = now_s() + 1 < iat + token::MAX_LIFETIME_SECS;
                let (st, v) = pop_verify(*port, &q);
                let key = format!(
                    "{} {st} {}",
                    if fresh { "fresh" } else { "expired" },
                    verify_code(&v)
                );
                *refused.lock().unwrap().entry(key).or_insert(0) += 1;
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let refused = refused.lock().unwrap().clone();
    eprintln!(
        "replays of the {} accepted proofs: {refused:?}",
        accepted.len()
    );
    // Every one refused: as a replay while it is fresh (the store remembered it), and
    // after its lifetime as no longer fresh.
    for (what, n) in &refused {
        assert!(
            what == "fresh 401 pop.replay"
                || what == "expired 401 pop.not_fresh"
                || what.ends_with(" 401 pop.store_epoch"),
            "{n} replays answered {what}"
        );
    }
    assert_eq!(refused.values().sum::<usize>(), accepted.len());

    // The audit logs: no jti accepted twice across both instances, and exactly the
    // acceptances the clients saw (a 503 is never an acceptance).
    std::thread::sleep(Duration::from_millis(200));
    let counted = acceptances(d, &["la", "lb"]);
    let twice: Vec<_> = counted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "accepted more than once: {twice:?}");
    let seen: BTreeSet<&str> = accepted.iter().map(|s| s.jti.as_str()).collect();
    let load_accepted: BTreeSet<&str> = counted
        .keys()
        .map(String::as_str)
        .filter(|j| j.starts_with("load"))
        .collect();
    assert_eq!(
        load_accepted, seen,
        "the audit logs' acceptances are the answers' 200s"
    );
    eprintln!(
        "audit logs: {} jtis accepted, each once ({} of the load)",
        counted.len(),
        load_accepted.len()
    );
    // After the failover every instance serves again (the same processes): a fresh proof
    // whose jti lands in the killed master's slots is accepted at each.
    let promoted = c.wait_for_new_master(ranges[0].0, victim);
    eprintln!("slots of :{victim} now served by :{promoted}");
    for port in [pa, pb] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let jti = jti_where(&agent, "after", &ranges, true);
            let (_, st, code) = request(port, &jti, &agent);
            if st == 200 {
                break;
            }
            assert!(
                (st == 503 || code == "pop.store_epoch") && Instant::now() < deadline,
                "verifier :{port} does not serve the failed-over slots again: {st} {code}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    for (name, audit) in [("la", "la-audit"), ("lb", "lb-audit")] {
        let out = std::process::Command::new(bin("cada-verify"))
            .args(["audit", "verify", d.join(audit).to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}'s audit chain: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_slot_without_master_and_replica_refuses_only_its_own_requests_at_every_binary() {
    let dir = TempDir::new("cluster-fleet-slot");
    let d = &dir.0;
    let mut c = Cluster::start(d);
    let fleet = Fleet::start(d, &c.url(), &["--store-timeout-ms", "300"]);
    let contract = fleet.contract(BehaviourLimits::default());
    // Every instance knows the topology before the fault.
    for inst in fleet.all() {
        let for_sts = matches!(inst, Inst::Sts(_));
        assert_eq!(
            fleet
                .present(inst, &fresh_jti("warm"), &contract, for_sts)
                .0,
            200,
            "{inst}"
        );
    }
    let victim = c.master_of(9000);
    let replica = c.replicas_of(victim)[0];
    let down: Vec<(u16, u16)> = c
        .nodes_info()
        .into_iter()
        .find(|n| n.port == victim)
        .map(|n| n.slots)
        .unwrap();
    c.kill(replica);
    c.kill(victim);
    for inst in fleet.all() {
        let for_sts = matches!(inst, Inst::Sts(_));
        for _ in 0..3 {
            let jti = jti_where(&fleet.agent, "down", &down, true);
            let (st, code) = fleet.present(inst, &jti, &contract, for_sts);
            assert_eq!(st, 503, "{inst}: a jti in a slot nobody serves: {code}");
            let jti = jti_where(&fleet.agent, "up", &down, false);
            let a = fleet.present(inst, &jti, &contract, for_sts);
            assert_eq!(a, (200, String::new()), "{inst}: a jti in a served slot");
        }
    }
}
