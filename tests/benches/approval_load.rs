//! Requests per second of the owner's approval service (issue 23's benchmark, not a test):
//! `cada-owner serve` (release, default limits, audit `fsync`) taking step-up filings
//! (`POST /v1/step-up`) and polls (`GET /v1/step-up/{id}`) with real proofs and evidence.
//!
//! The enclaves are sim signers in this process (the enclave's own `Signer` with the `sim`
//! platform: an Ed25519 key, evidence from the sim root, locked to the owner with an owner
//! lock, a contract naming the service's `stepUp` installed), many of them: the service's
//! default limits (5 pending requests and 30 filings an hour per enclave key) hold, so each
//! key files at most five. Every request carries what the daemon sends: a fresh proof signed
//! for exactly that URL and method (the body's digest bound for a filing), `CADA-Evidence`,
//! `CADA-Contract` and, for a filing, `Content-Digest`. Proofs are signed before each run
//! (they live 30 s); each is sent once. Each key's evidence is verified once first (a poll
//! of an unknown id: the first request of a new enclave), and those first requests are timed
//! too.
//!
//! Phases, closed loop with CONNECTIONS keep-alive connections (client and service share the
//! machine's 2 cores): polls with 200 requests held; filings into the store in blocks of
//! 1,000 (how the rate moves as the store fills); polls again with ~4,200 and ~8,200 held;
//! last, the same polls without `CADA-Evidence` (the keys are known: what sending the
//! evidence on every request costs). The service's CPU time per request (from /proc) and
//! its verification stage means are printed beside each. AUDIT is the service's
//! `--audit-durability` (default `fsync`, its default).
//!
//! Run with `scripts/bench-stepup.sh` or
//! `cargo bench -p cada-e2e --bench approval_load -- [CONNECTIONS=32] [POLLS=10000] [AUDIT=fsync]` after
//! `cargo build --release -p cada-owner`.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)] // bench code: casts of measured values, no outside bytes
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cada_attestation_verifier::UnixTime;
use cada_contract::{Grant, OwnerKey, OwnerLock, Subject};
use cada_e2e::{free_port, keygen, Proc, TempDir};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::mcp;
use cada_protocol::wire::SignPopRequest;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{json, Value};

/// One enclave: its signer, evidence header, contract and the contract's digest.
struct Enclave {
    signer: Signer,
    evidence: String,
    contract: String,
    digest: String,
}

/// A request ready to send: method, path, headers, body.
struct Prepared {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

/// What a run measured.
struct Run {
    secs: f64,
    /// Latency of each successful request, ms, by completion order.
    lat: Vec<f64>,
    /// Completion time of each successful request since the start, s, in order.
    done: Vec<f64>,
    /// Requests not answered with `want` (status → count).
    errors: BTreeMap<u16, usize>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.secs
    }

    fn pct(&self, p: f64) -> f64 {
        let mut s = self.lat.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    }

    fn summary(&self) -> String {
        format!(
            "{:>6.0}/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   ({} in {:.2} s{})",
            self.rate(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0),
            self.lat.len(),
            self.secs,
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(", NOT as expected: {:?}", self.errors)
            }
        )
    }
}

/// Longest a run may send for: proofs live 30 s from when they were signed.
const RUN_CAP: Duration = Duration::from_secs(15);

/// What came back for one request: its index, status, body, latency and completion time.
type Answer = (usize, u16, Bytes, Duration, Instant);

/// Sends the requests in order over `conns` keep-alive connections (closed loop), each
/// once, until all are sent or [`RUN_CAP`] passed: the answers and the run's start.
fn send_all(
    rt: &tokio::runtime::Runtime,
    port: u16,
    reqs: Vec<Prepared>,
    conns: usize,
) -> (Vec<Answer>, Instant) {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let answers = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|_| {
                let (reqs, next) = (Arc::clone(&reqs), Arc::clone(&next));
                tokio::spawn(async move {
                    let s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect");
                    let _ = s.set_nodelay(true);
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
                            .await
                            .expect("handshake");
                    tokio::spawn(conn);
                    let mut out = Vec::new();
                    while start.elapsed() < RUN_CAP {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = reqs.get(i) else { break };
                        let mut b = hyper::Request::builder()
                            .method(r.method)
                            .uri(&r.path)
                            .header("host", format!("localhost:{port}"));
                        for (k, v) in &r.headers {
                            b = b.header(*k, v);
                        }
                        let req = b.body(Full::new(r.body.clone())).expect("request");
                        let t = Instant::now();
                        let (status, body) = match sender.send_request(req).await {
                            Ok(resp) => {
                                let st = resp.status().as_u16();
                                let body = resp
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(http_body_util::Collected::to_bytes)
                                    .unwrap_or_default();
                                (st, body)
                            }
                            Err(_) => (0, Bytes::new()),
                        };
                        out.push((i, status, body, t.elapsed(), Instant::now()));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    });
    (answers, start)
}

/// The run of `answers` (expecting `want`) that started at `start`.
fn run_of(answers: &[Answer], start: Instant, want: u16) -> Run {
    let mut ok: Vec<(f64, f64)> = Vec::new();
    let mut errors = BTreeMap::new();
    let mut end = start;
    for (_, st, _, lat, at) in answers {
        end = end.max(*at);
        if *st == want {
            ok.push((
                at.duration_since(start).as_secs_f64(),
                lat.as_secs_f64() * 1000.0,
            ));
        } else {
            *errors.entry(*st).or_insert(0) += 1;
        }
    }
    ok.sort_by(|a, b| a.0.total_cmp(&b.0));
    Run {
        secs: end.duration_since(start).as_secs_f64(),
        done: ok.iter().map(|x| x.0).collect(),
        lat: ok.iter().map(|x| x.1).collect(),
        errors,
    }
}

/// The request ids of the 201 answers among `answers`, by request index.
fn filed_ids(answers: &[Answer]) -> Vec<(usize, String)> {
    let mut ids: Vec<(usize, String)> = answers
        .iter()
        .filter(|a| a.1 == 201)
        .filter_map(|(i, _, body, _, _)| {
            let v: Value = serde_json::from_slice(body).ok()?;
            Some((*i, v["id"].as_str()?.to_owned()))
        })
        .collect();
    ids.sort_by_key(|x| x.0);
    ids
}

/// The first answer that was not `want`, for the reader.
fn first_refusal(answers: &[Answer], want: u16) -> Option<String> {
    answers
        .iter()
        .find(|a| a.1 != want)
        .map(|a| format!("{} {}", a.1, String::from_utf8_lossy(&a.2)))
}

/// Utime + stime of process `pid`, seconds.
fn cpu_secs(pid: u32, tick: f64) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (n(11) + n(12)) / tick
}

fn start_serve(args: &[&str], log: &Path) -> Proc {
    let logf = std::fs::File::create(log).expect("log");
    let mut child = Command::new(cada_e2e::bin("cada-owner"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(logf)
        .spawn()
        .expect("spawn cada-owner serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30));
    assert!(
        first.as_deref().is_ok_and(|l| l.starts_with("ready")),
        "cada-owner serve did not start ({first:?}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Proc {
        child,
        name: "cada-owner".into(),
    }
}

/// Mean per stage of `cada_verify_stage_seconds` (sum / count) between two scrapes.
fn stage_means(before: &str, after: &str) -> String {
    let read = |m: &str| {
        let mut out = BTreeMap::<String, (f64, f64)>::new();
        for l in m.lines() {
            let (kind, rest) = if let Some(r) = l.strip_prefix("cada_verify_stage_seconds_sum{") {
                (0, r)
            } else if let Some(r) = l.strip_prefix("cada_verify_stage_seconds_count{") {
                (1, r)
            } else {
                continue;
            };
            let labels = rest.split('}').next().unwrap_or_default().to_owned();
            let v: f64 = rest
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            let e = out.entry(labels).or_default();
            if kind == 0 {
                e.0 = v;
            } else {
                e.1 = v;
            }
        }
        out
    };
    let (b, a) = (read(before), read(after));
    a.iter()
        .filter_map(|(l, (s, n))| {
            let (s0, n0) = b.get(l).copied().unwrap_or((0.0, 0.0));
            let n = n - n0;
            (n > 0.0).then(|| format!("{l} {:.3} ms", (s - s0) / n * 1000.0))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn metrics(port: u16) -> String {
    let (st, _, body) =
        cada_e2e::http_tcp(port, "GET", "/metrics", "text/plain", b"").expect("metrics");
    assert_eq!(st, 200);
    body
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[allow(clippy::too_many_lines)]
fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let polls: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let durability = args.get(3).map_or("fsync", String::as_str);
    let tick: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = TempDir::new("approval-load");
    let d = &dir.0;
    let (_, key_file) = keygen(d, "owner");
    let owner = OwnerKey::from_key_file(&std::fs::read_to_string(&key_file).expect("key"))
        .expect("owner key");
    let port = free_port();
    let public = format!("http://localhost:{port}");
    let step_up_url = format!("{public}/v1/step-up");
    let state = d.join("state");
    let now = UnixTime::now().as_secs();

    // 40 keys for the small store, then 800 + 800 for the two filing runs.
    const SMALL: usize = 40;
    const PER_RUN: usize = 800;
    let keys = SMALL + 2 * PER_RUN;
    let t = Instant::now();
    // Two threads: each sim platform hashes this benchmark's binary for its PCR0 (~0.1 s).
    let make = || {
        let signer = Signer::new(
            SigningKey::generate(SigAlg::EdDSA).expect("key"),
            Box::new(Sim::new(Some(&state)).expect("sim")),
            DelegationPolicy::default(),
        )
        .expect("signer");
        let did = signer.key().did().to_owned();
        let lock = OwnerLock::issue(&owner, &did, now, 300).expect("lock");
        let env = signer.lock_owner(&lock).expect("locked").envelope;
        let evidence = EvidenceEnvelope::from_cbor(&env)
            .expect("envelope")
            .to_header();
        let mut g = Grant::new(
            Subject::Key(did),
            vec!["https://mcp.example/".into()],
            vec!["POST".into()],
            now - 10,
            now + 3600,
        );
        g.tools = vec!["search".into()];
        g.step_up = Some(public.clone());
        let contract = g.issue(&owner, now).expect("contract");
        signer
            .install_contract(&contract, None)
            .expect("install the contract");
        let digest = cada_contract::digest_of(&contract);
        Enclave {
            signer,
            evidence,
            contract,
            digest,
        }
    };
    // The root first, alone: both threads then load it.
    drop(Sim::new(Some(&state)).expect("sim root"));
    let enclaves: Vec<Enclave> = std::thread::scope(|s| {
        let half = s.spawn(|| (0..keys / 2).map(|_| make()).collect::<Vec<_>>());
        let mut v: Vec<Enclave> = (keys / 2..keys).map(|_| make()).collect();
        v.extend(half.join().expect("key maker"));
        v
    });
    println!(
        "approval service load: cada-owner serve (release, default limits, audit {durability}), {keys} sim enclave keys locked to the owner (made in {:.1} s), {conns} connections, load average before {}",
        t.elapsed().as_secs_f64(),
        load_average()
    );
    let pcr0 = enclaves[0].signer.measurements().expect("measurements")["PCR0"].clone();
    let policy = d.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[roots]\nnitro = [{:?}]\n[[audience]]\nprefix = \"{public}/\"\nmeasurements = [{{ PCR0 = \"{pcr0}\" }}]\n",
            state.join("sim-root.der").display().to_string()
        ),
    )
    .expect("policy");
    let serve = start_serve(
        &[
            "serve",
            "--key",
            &key_file,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--public-url",
            &public,
            "--policy",
            policy.to_str().expect("utf8"),
            "--audit-dir",
            d.join("audit").to_str().expect("utf8"),
            "--state-dir",
            d.join("approval-state").to_str().expect("utf8"),
            "--audit-durability",
            durability,
        ],
        &d.join("serve.log"),
    );
    let pid = serve.child.id();

    let headers = |e: &Enclave, dpop: String| {
        vec![
            ("dpop", dpop),
            ("cada-evidence", e.evidence.clone()),
            ("cada-contract", e.contract.clone()),
        ]
    };
    let filing = |e: &Enclave, n: usize| {
        let body = json!({
            "contract": e.digest,
            "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                        "tool": "transfer", "arguments": {"amount": n, "to": "alice",
                        "memo": format!("invoice {n}")}},
            "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                        "server": "https://mcp.example/mcp",
                        "message": "MCP tool \"transfer\" is not granted"},
            "want": "once"
        })
        .to_string()
        .into_bytes();
        let dpop = e
            .signer
            .sign_pop(&SignPopRequest {
                htm: "POST".into(),
                htu: step_up_url.clone(),
                access_token: None,
                nonce: None,
                ctx: BTreeMap::new(),
                bd: Some(mcp::body_digest(&body)),
                mcp: vec![],
                exchange: None,
                task: None,
                traceparent: None,
            })
            .expect("sign a filing")
            .dpop;
        let mut h = headers(e, dpop);
        h.push(("content-digest", mcp::content_digest(&body)));
        h.push(("content-type", "application/json".into()));
        Prepared {
            method: "POST",
            path: "/v1/step-up".into(),
            headers: h,
            body: Bytes::from(body),
        }
    };
    let poll_with = |e: &Enclave, id: &str, with_evidence: bool| {
        let path = format!("/v1/step-up/{id}");
        let dpop = e
            .signer
            .sign_pop(&SignPopRequest {
                htm: "GET".into(),
                htu: format!("{public}{path}"),
                access_token: None,
                nonce: None,
                ctx: BTreeMap::new(),
                bd: None,
                mcp: vec![],
                exchange: None,
                task: None,
                traceparent: None,
            })
            .expect("sign a poll")
            .dpop;
        let mut h = headers(e, dpop);
        if !with_evidence {
            h.retain(|(k, _)| *k == "dpop");
        }
        Prepared {
            method: "GET",
            path,
            headers: h,
            body: Bytes::new(),
        }
    };
    let poll = |e: &Enclave, id: &str| poll_with(e, id, true);
    // What each run cost the service: the run, and the answers.
    let measured = |name: &str, reqs: Vec<Prepared>, want: u16| {
        let m0 = metrics(port);
        let c0 = cpu_secs(pid, tick);
        let (answers, start) = send_all(&rt, port, reqs, conns);
        let cpu = cpu_secs(pid, tick) - c0;
        let r = run_of(&answers, start, want);
        println!("  {name:<56} {}", r.summary());
        if let Some(e) = first_refusal(&answers, want) {
            println!("  {:<56} first answer not {want}: {e}", "");
        }
        println!(
            "  {:<56} service CPU {:.3} ms per request ({:.0}% of one core); stage means: {}",
            "",
            cpu * 1000.0 / answers.len().max(1) as f64,
            cpu / r.secs * 100.0,
            stage_means(&m0, &metrics(port))
        );
        (r, answers)
    };

    // 1. Each key's first request: the evidence is verified (a poll of an unknown id: 404).
    let first: Vec<Prepared> = enclaves
        .iter()
        .map(|e| poll(e, "AAAAAAAAAAAAAAAAAAAAAA"))
        .collect();
    measured(
        "first request of each enclave key (evidence verified)",
        first,
        404,
    );

    // 2. A small store: 200 requests held (40 keys × 5), then polls.
    let small: Vec<Prepared> = (0..SMALL * 5)
        .map(|n| filing(&enclaves[n % SMALL], n))
        .collect();
    let (answers, _) = send_all(&rt, port, small, conns);
    let mut ids: Vec<(usize, String)> = filed_ids(&answers)
        .into_iter()
        .map(|(i, id)| (i % SMALL, id))
        .collect();
    assert_eq!(ids.len(), SMALL * 5, "{:?}", first_refusal(&answers, 201));
    let polls_of = |ids: &[(usize, String)]| -> Vec<Prepared> {
        (0..polls)
            .map(|i| {
                let (k, id) = &ids[(i * 7919) % ids.len()];
                poll(&enclaves[*k], id)
            })
            .collect()
    };
    measured(
        &format!("polls (GET), {} requests held", ids.len()),
        polls_of(&ids),
        200,
    );

    // 3. Filings: 800 keys × 5 into the store, twice; the rate per block of 1,000 as it fills.
    for round in 0..2 {
        let base = SMALL + round * PER_RUN;
        let held = ids.len();
        let reqs: Vec<Prepared> = (0..PER_RUN * 5)
            .map(|n| filing(&enclaves[base + n % PER_RUN], 100_000 * (round + 1) + n))
            .collect();
        let n = reqs.len();
        let (r, answers) = measured(
            &format!("filings (POST), {n} into a store holding {held}"),
            reqs,
            201,
        );
        ids.extend(
            filed_ids(&answers)
                .into_iter()
                .map(|(i, id)| (base + i % PER_RUN, id)),
        );
        let blocks: Vec<String> = r
            .done
            .chunks(1000)
            .scan(0.0, |prev, c| {
                let end = *c.last().unwrap_or(prev);
                let rate = c.len() as f64 / (end - *prev).max(1e-9);
                *prev = end;
                Some(format!("{rate:.0}/s"))
            })
            .collect();
        println!(
            "  {:<56} per 1,000 filed, in order: {}",
            "",
            blocks.join(", ")
        );
        measured(
            &format!("polls (GET), {} requests held", ids.len()),
            polls_of(&ids),
            200,
        );
    }
    // The same polls without CADA-Evidence: the service knows every key already (what a
    // client that sends the evidence only on first contact would cost it).
    let bare: Vec<Prepared> = (0..polls)
        .map(|i| {
            let (k, id) = &ids[(i * 7919) % ids.len()];
            poll_with(&enclaves[*k], id, false)
        })
        .collect();
    measured(
        &format!("polls (GET) without CADA-Evidence, {} held", ids.len()),
        bare,
        200,
    );
    println!(
        "  service peak RSS {:.1} MiB; load average after {}",
        serve.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        load_average()
    );
}
