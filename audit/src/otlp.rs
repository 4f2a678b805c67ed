//! OpenTelemetry spans of audited decisions, exported over OTLP/HTTP with the JSON encoding
//! (`POST {endpoint}/v1/traces`, `Content-Type: application/json`).
//!
//! Every record appended to a log with an exporter ([`crate::AuditLog::with_otlp`]) that
//! carries a traceparent (`tp`) becomes one span: the record's trace id, the traceparent's
//! parent id as parent span, the hop's own span id (`span`) or a new one, the decision, its
//! code and the actors as attributes. Spans wait in a bounded queue ([`OtlpConfig::queue`]);
//! [`Otlp::record`] never blocks and never fails: a full queue drops the span and counts it
//! (`cada_audit_otlp_spans_total{result="dropped"}`), a collector that does not answer 2xx
//! counts the batch as `failed`. One background thread sends batches of at most
//! [`OtlpConfig::batch`] spans, one HTTP/1.1 request each, with a 5 s deadline for the whole request ([`POST_DEADLINE`]); the span's `url.full` has no query or fragment.
//!
//! Plain `http://` only: a collector (or agent) on the same host or network is the usual
//! deployment, and this crate links no TLS stack. The JSON is written here rather than with
//! `opentelemetry-proto` (its serde feature pulls prost, tonic's types and a code generator
//! for one message shape of about forty lines).
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use crate::{AuditError, AuditRecord};

/// Where and how spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://host:port[/path]`); spans go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the spans' resource.
    pub service: String,
    /// Spans waiting at most (beyond: dropped and counted).
    pub queue: usize,
    /// Spans per request at most.
    pub batch: usize,
}

impl OtlpConfig {
    /// The defaults for `endpoint`: queue 4096, batches of 512.
    pub fn new(endpoint: &str, service: &str) -> Self {
        OtlpConfig {
            endpoint: endpoint.to_owned(),
            service: service.to_owned(),
            queue: 4096,
            batch: 512,
        }
    }
}

/// Labels of the span counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The exporter: a bounded queue and its sender thread.
#[derive(Clone)]
pub struct Otlp {
    tx: SyncSender<Value>,
    spans: Family<ResultLabels, Counter>,
}

/// The collector's address, host header and path.
struct Target {
    addr: String,
    host: String,
    path: String,
}

fn parse_endpoint(endpoint: &str) -> Result<Target, AuditError> {
    let bad = |why: &str| {
        AuditError(format!(
            "--otlp-endpoint {endpoint:?}: {why} (give the collector's OTLP/HTTP base URL, e.g. \
             http://127.0.0.1:4318)"
        ))
    };
    let u = url::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    if u.scheme() != "http" {
        return Err(bad(
            "only http:// is supported (run the collector or an agent beside this server)",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() || u.query().is_some() {
        return Err(bad("no userinfo or query"));
    }
    let host = u.host_str().ok_or_else(|| bad("no host"))?.to_owned();
    let port = u.port_or_known_default().unwrap_or(80);
    let base = u.path().trim_end_matches('/');
    Ok(Target {
        addr: format!("{host}:{port}"),
        host: match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        },
        path: format!("{base}/v1/traces"),
    })
}

impl Otlp {
    /// Starts the exporter's thread; refused for an endpoint that is not `http://`.
    pub fn start(cfg: &OtlpConfig) -> Result<Self, AuditError> {
        let target = parse_endpoint(&cfg.endpoint)?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let spans = Family::<ResultLabels, Counter>::default();
        for result in ["exported", "dropped", "failed"] {
            // Each result shows in /metrics from the start, at 0.
            let _ = spans.get_or_create(&ResultLabels { result });
        }
        let thread_spans = spans.clone();
        let service = cfg.service.clone();
        let batch = cfg.batch.max(1);
        std::thread::Builder::new()
            .name("cada-otlp".into())
            .spawn(move || send_loop(&rx, &target, &service, batch, &thread_spans))
            .map_err(|e| AuditError(format!("OTLP exporter thread: {e}")))?;
        Ok(Otlp { tx, spans })
    }

    /// Queues the span of `record` if it carries a traceparent; never blocks (a full queue
    /// drops it, counted).
    pub fn record(&self, record: &AuditRecord) {
        if let Some(span) = span_of(record, SystemTime::now()) {
            self.queue(span);
        }
    }

    /// Queues a span made by [`span_of`]; never blocks (a full queue drops it, counted).
    pub fn queue(&self, span: Value) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.count("dropped", 1);
            }
        }
    }

    fn count(&self, result: &'static str, n: u64) {
        self.spans.get_or_create(&ResultLabels { result }).inc_by(n);
    }

    /// Spans counted so far with `result` (`exported`, `dropped`, `failed`).
    pub fn spans(&self, result: &'static str) -> u64 {
        self.spans.get_or_create(&ResultLabels { result }).get()
    }

    /// Registers `cada_audit_otlp_spans_total{result}` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cada_audit_otlp_spans",
            "OpenTelemetry spans of audited decisions: exported to the collector, dropped \
             (queue full), failed (the collector did not take them)",
            self.spans.clone(),
        );
    }
}

/// Nanoseconds since the epoch, as OTLP/JSON writes 64-bit integers (a decimal string).
fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .to_string()
}

fn attr(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}

/// The OTLP/JSON span of a record with a traceparent, ending `now`.
pub fn span_of(r: &AuditRecord, now: SystemTime) -> Option<Value> {
    let tp = cada_traceparent(r.tp.as_deref()?)?;
    let span_id = r
        .span
        .clone()
        .filter(|s| s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .unwrap_or_else(new_span_hex);
    let start = r
        .latency_us
        .and_then(|us| now.checked_sub(Duration::from_micros(us)))
        .unwrap_or(now);
    let mut attrs = vec![attr("cada.decision", r.decision), attr("cada.kind", r.kind)];
    for (k, v) in [
        ("cada.task", &r.task),
        ("cada.reason", &r.reason),
        ("cada.did", &r.did),
        ("cada.contract", &r.contract),
        ("cada.jti", &r.jti),
        ("cada.token", &r.token),
        ("http.request.method", &r.method),
    ] {
        if let Some(v) = v {
            attrs.push(attr(k, v));
        }
    }
    if let Some(u) = &r.url {
        attrs.push(attr("url.full", without_query(u)));
    }
    for (k, list) in [("cada.actors", &r.actors), ("cada.dch", &r.dch)] {
        if !list.is_empty() {
            let values: Vec<Value> = list.iter().map(|a| json!({"stringValue": a})).collect();
            attrs.push(json!({"key": k, "value": {"arrayValue": {"values": values}}}));
        }
    }
    if let Some(s) = r.upstream_status {
        attrs.push(
            json!({"key": "http.response.status_code", "value": {"intValue": s.to_string()}}),
        );
    }
    let status = match r.decision {
        "reject" => json!({"code": 2, "message": r.reason.clone().unwrap_or_default()}),
        _ => json!({"code": 1}),
    };
    Some(json!({
        "traceId": tp.0,
        "spanId": span_id,
        "parentSpanId": tp.1,
        "name": format!("cada {} {}", r.kind, r.decision),
        "kind": 2,
        "startTimeUnixNano": nanos(start),
        "endTimeUnixNano": nanos(now),
        "attributes": attrs,
        "status": status,
    }))
}

/// `url` without its query and fragment: a query may carry secrets (pre-signed URL
/// signatures, API keys, OAuth `code`/`state`), and the collector is a party that otherwise
/// gets no request content. The audit log keeps the whole URL.
fn without_query(url: &str) -> &str {
    url.find(['?', '#']).map_or(url, |i| &url[..i])
}

/// Trace id and parent id (hex) of a version-00 traceparent.
fn cada_traceparent(tp: &str) -> Option<(String, String)> {
    let b = tp.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    (b.len() == 55
        && tp.starts_with("00-")
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[3..35])
        && hex(&b[36..52]))
    .then(|| (tp[3..35].to_owned(), tp[36..52].to_owned()))
}

fn new_span_hex() -> String {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        let _ = aws_lc_rs::rand::fill(&mut id);
    }
    hex::encode(id)
}

/// The request body of one batch.
fn body(service: &str, spans: Vec<Value>) -> Vec<u8> {
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", service)]},
        "scopeSpans": [{
            "scope": {"name": "cada-audit", "version": env!("CARGO_PKG_VERSION")},
            "spans": spans,
        }],
    }]})
    .to_string()
    .into_bytes()
}

/// The whole of one POST (connect, write, read of the status line), whatever the
/// collector does: the one sender moves on after it.
pub const POST_DEADLINE: Duration = Duration::from_secs(5);

/// One POST; true on a 2xx answer. The request as a whole has [`POST_DEADLINE`] (not each
/// read: a collector trickling bytes would hold the sender for hours), and only the status
/// line is read (at most 1 KiB).
fn post(t: &Target, body: &[u8]) -> bool {
    post_within(t, body, POST_DEADLINE)
}

fn post_within(t: &Target, body: &[u8], deadline: Duration) -> bool {
    const MAX_STATUS_LINE: usize = 1024;
    let start = Instant::now();
    let left = || {
        deadline
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
    };
    let Some(addr) = t.addr.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, deadline) else {
        return false;
    };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.host,
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    // Written in pieces, each with the time left, so a collector that reads slowly is cut
    // at the deadline too.
    for piece in out.chunks(16 * 1024) {
        let Some(d) = left() else { return false };
        if s.set_write_timeout(Some(d)).is_err() || s.write_all(piece).is_err() {
            return false;
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < MAX_STATUS_LINE {
        let Some(d) = left() else { return false };
        if s.set_read_timeout(Some(d)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    matches!(
        (words.next(), words.next()),
        (Some(v), Some(code)) if v.starts_with(b"HTTP/1.") && code.first() == Some(&b'2') && code.len() == 3
    )
}

fn send_loop(
    rx: &Receiver<Value>,
    target: &Target,
    service: &str,
    batch: usize,
    spans: &Family<ResultLabels, Counter>,
) {
    let count = |result: &'static str, n: usize| {
        spans
            .get_or_create(&ResultLabels { result })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    };
    // Ends when every sender (every clone of the log) is gone.
    while let Ok(first) = rx.recv() {
        let mut out = vec![first];
        while out.len() < batch {
            match rx.try_recv() {
                Ok(s) => out.push(s),
                Err(_) => break,
            }
        }
        let n = out.len();
        if post(target, &body(service, out)) {
            count("exported", n);
        } else {
            count("failed", n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn endpoints_are_http_base_urls() {
        let t = parse_endpoint("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let t = parse_endpoint("http://collector/otlp/").unwrap();
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("collector:80", "/otlp/v1/traces")
        );
        for bad in [
            "https://c:4318",
            "c:4318",
            "http://u:p@c:4318",
            "http://c:4318/?x=1",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_with_a_traceparent_is_a_span_of_that_trace() {
        let r = AuditRecord {
            kind: "gate",
            decision: "reject",
            reason: Some("contract.not_permitted.tool".into()),
            task: Some("t1".into()),
            tp: Some(TP.into()),
            span: Some("0102030405060708".into()),
            actors: vec!["did:web:o".into(), "did:key:w".into()],
            latency_us: Some(1500),
            ..AuditRecord::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let s = span_of(&r, now).unwrap();
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
        assert_eq!(s["spanId"], "0102030405060708");
        assert_eq!(s["endTimeUnixNano"], "10000000000");
        assert_eq!(s["startTimeUnixNano"], "9998500000");
        assert_eq!(s["status"]["code"], 2);
        let text = s.to_string();
        assert!(
            text.contains("\"cada.task\"") && text.contains("did:key:w"),
            "{text}"
        );
        assert!(span_of(&AuditRecord::default(), now).is_none());
        let mut r2 = r.clone();
        r2.span = None;
        assert_eq!(
            span_of(&r2, now).unwrap()["spanId"].as_str().unwrap().len(),
            16
        );
    }

    /// A URL's query and fragment (where secrets travel) never reach the collector.
    #[test]
    fn spans_carry_the_url_without_its_query() {
        let mut r = AuditRecord {
            kind: "gate",
            decision: "accept",
            tp: Some(TP.into()),
            url: Some("https://api.example/mcp?sig=SECRET&k=v#frag".into()),
            ..AuditRecord::default()
        };
        let now = UNIX_EPOCH + Duration::from_secs(10);
        let text = span_of(&r, now).unwrap().to_string();
        assert!(text.contains("\"https://api.example/mcp\""), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("frag"), "{text}");
        r.url = Some("https://api.example/a#x?y".into());
        let text = span_of(&r, now).unwrap().to_string();
        assert!(text.contains("\"https://api.example/a\""), "{text}");
    }

    /// A collector that answers one byte at a time (each read succeeding within any per-read
    /// timeout) does not hold the sender: the request as a whole has a deadline, and fails.
    #[test]
    fn a_trickling_collector_is_cut_at_the_deadline_of_the_whole_request() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = std::sync::Arc::clone(&stop);
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 65536];
            let _ = conn.read(&mut buf);
            // A status line that never ends.
            let _ = conn.write_all(b"HTTP/1.1 200");
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if conn.write_all(b"0").is_err() {
                    return;
                }
            }
        });
        let t = parse_endpoint(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(!post_within(&t, b"{}", Duration::from_millis(300)));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().unwrap();
    }

    /// Spans reach a collector (a loopback listener here); a full queue drops and counts,
    /// and `record` returns at once whatever the collector does.
    #[test]
    fn spans_are_posted_and_a_full_queue_drops_them() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let otlp = Otlp::start(&OtlpConfig {
            queue: 2,
            batch: 10,
            ..OtlpConfig::new(&format!("http://127.0.0.1:{port}"), "test")
        })
        .unwrap();
        let r = AuditRecord {
            kind: "gate",
            decision: "accept",
            tp: Some(TP.into()),
            ..AuditRecord::default()
        };
        // The collector has not accepted yet: the first batch is in flight (its connect
        // waits in the backlog), the queue of 2 fills, the rest is dropped.
        for _ in 0..50 {
            otlp.record(&r);
        }
        let (mut conn, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req);
            if let Some(i) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                if req.len() >= i + 4 + len {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&req).into_owned();
        assert!(text.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("\"traceId\":\"4bf92f3577b34da6a3ce929d0e0e4736\""));
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        drop(conn);
        assert!(otlp.spans("dropped") >= 30, "{}", otlp.spans("dropped"));
        let mut reg = Registry::default();
        otlp.register(&mut reg);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(
            out.contains("cada_audit_otlp_spans_total{result=\"dropped\"}"),
            "{out}"
        );
    }
}
