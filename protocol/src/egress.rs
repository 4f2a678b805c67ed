//! `secret_call`: one HTTPS request that the enclave makes itself, with a sealed secret it
//! adds inside (issue 22). The parent sends what the agent asked for — the secret's name,
//! the method, the path and query below the secret's upstream, headers and a body — and
//! gets the upstream's answer back; it never sees the credential, the TLS keys or the
//! plaintext on the wire to the upstream (it relays only TLS ciphertext).
//!
//! Limits: a request or answer body is at most [`MAX_CALL_BODY`] bytes (768 KiB, so that a
//! whole answer with its headers stays below the 1 MiB frame, [`crate::wire::MAX_FRAME_LEN`]);
//! at most [`MAX_CALL_HEADERS`] headers of at most [`MAX_HEADER_BYTES`] bytes together; a
//! path and query of at most [`crate::url::MAX_URL_LEN`] bytes.
//!
//! Refusals come back as [`crate::wire::ErrorCode::SecretDenied`] (or `ContractDenied` for a
//! contract's own `contract.*` rules) with a message that starts with the stable code; the
//! codes are in [`codes`].
use serde::{Deserialize, Serialize};

/// Largest request body, and largest answer body the enclave returns (768 KiB).
pub const MAX_CALL_BODY: usize = 768 * 1024;
/// Most headers in a request or an answer.
pub const MAX_CALL_HEADERS: usize = 64;
/// Most bytes of header names and values together, in a request or an answer.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The stable refusal codes of secret calls (the message of a refusal starts with one).
pub mod codes {
    /// No live contract grants this secret.
    pub const NOT_GRANTED: &str = "secret.not_granted";
    /// The method is not granted for this secret.
    pub const METHOD: &str = "secret.method";
    /// The URL is outside the grant or the sealed usage (a path trick adds its `url.*` code).
    pub const PATH: &str = "secret.path";
    /// A `cada:<name>` placeholder for another secret (or sent to another host).
    pub const PLACEHOLDER_ELSEWHERE: &str = "secret.placeholder_elsewhere";
    /// The upstream's certificate does not verify against the usage's CAs (or the
    /// built-in roots), or the TLS handshake failed: never a downgrade to plain HTTP.
    pub const TLS: &str = "secret.tls";
    /// The sealed usage has expired.
    pub const EXPIRED: &str = "secret.expired";
    /// The path is a credential endpoint the owner did not mark (answers carry credentials).
    pub const CREDENTIAL_ENDPOINT: &str = "secret.credential_endpoint";
    /// A request header the enclave refuses (CR/LF, NUL, an oversized or malformed one).
    pub const HEADER: &str = "secret.header";
    /// The secret is not installed in this enclave.
    pub const UNKNOWN: &str = "secret.unknown";
    /// The upstream could not be reached through the relay, or broke off the answer.
    pub const UPSTREAM: &str = "secret.upstream";
    /// The upstream's answer is larger than [`super::MAX_CALL_BODY`] or malformed.
    pub const ANSWER: &str = "secret.answer";
    /// The upstream's answer reflects the injected credential in some spelling (raw,
    /// escaped, percent-encoded, base64, hex…): the whole answer is withheld.
    pub const REFLECTED: &str = "secret.reflected";
    /// The upstream's answer carries a credential of its own (a minted token or key) on a
    /// path the owner did not mark as a credential endpoint: the whole answer is withheld.
    pub const CREDENTIAL_IN_ANSWER: &str = "secret.credential_in_answer";
    /// The credential to inject is too short to be searched for in answers (an OAuth access
    /// token under 12 bytes); static values that short are refused at seal and install.
    pub const VALUE_TOO_SHORT: &str = "secret.value_too_short";
    /// The enclave was started without an egress relay (`cada-enclave --egress`).
    pub const NO_EGRESS: &str = "secret.no_egress";
    /// Secrets are refused on a platform whose keys live in host memory (sim), unless a
    /// development flag says otherwise.
    pub const SIM_PLATFORM: &str = "secret.sim_platform";
}

/// `secret_call` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretCallRequest {
    /// The secret's name (as sealed and granted).
    pub secret: String,
    /// HTTP method (a token, e.g. `GET`).
    pub method: String,
    /// Path and query below the secret's upstream origin, starting with `/`, in the normal
    /// form of [`crate::url`] (strict paths).
    pub path_and_query: String,
    /// Request headers as the agent sent them (name, value). The enclave drops hop-by-hop,
    /// forwarding, `Host` and credential headers and refuses CR/LF (see docs/secrets.md).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Request body.
    #[serde(default, with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// `secret_call` answer: the upstream's answer as the enclave passes it on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretCallResponse {
    /// The upstream's status (a 3xx is returned as is, never followed).
    pub status: u16,
    /// Answer headers, without `Set-Cookie` and hop-by-hop headers.
    pub headers: Vec<(String, String)>,
    /// Answer body (at most [`MAX_CALL_BODY`] bytes).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// What the enclave removed or rewrote, for the caller's audit: request header names
    /// it stripped (`host`, hop-by-hop, forwarding, the credential header, placeholders),
    /// `set-cookie` when it dropped cookies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stripped: Vec<String>,
    /// The contract that granted the call (`cada.dtc` digest), when the enclave is locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtc: Option<String>,
    /// The sequence number of the call's entry in the enclave's hash chain.
    pub seq: u64,
    /// The chain head after that entry (base64url).
    pub head: String,
}

/// The first line the enclave sends on a new relay connection, before any TLS byte:
/// `CADA-EGRESS/1 host:port\n` (the upstream the parent must connect the stream to). The
/// parent answers one line, `OK\n` or `ERR <reason>\n`, then relays bytes both ways; what
/// follows is the enclave's TLS session with the upstream, which the parent cannot read.
pub const RELAY_HELLO_PREFIX: &str = "CADA-EGRESS/1 ";
/// Longest relay hello line, newline included.
pub const MAX_RELAY_HELLO: usize = 300;
/// Longest relay answer line, newline included.
pub const MAX_RELAY_ANSWER: usize = 256;

/// The hello line for `host` (a DNS name, an IPv4 address, or an IPv6 address in brackets)
/// and `port`.
pub fn relay_hello(host: &str, port: u16) -> String {
    format!("{RELAY_HELLO_PREFIX}{host}:{port}\n")
}

/// Parses a hello line (with its newline): the host and port it names. Bounded and strict:
/// a host of letters, digits, `-` and `.` (a DNS name or IPv4 address) or a bracketed IPv6
/// address, a port 1..=65535, nothing else.
pub fn parse_relay_hello(line: &[u8]) -> Result<(String, u16), String> {
    if line.len() > MAX_RELAY_HELLO {
        return Err(format!("the hello is longer than {MAX_RELAY_HELLO} bytes"));
    }
    let text = std::str::from_utf8(line).map_err(|_| "the hello is not UTF-8".to_owned())?;
    let rest = text
        .strip_suffix('\n')
        .and_then(|t| t.strip_prefix(RELAY_HELLO_PREFIX))
        .ok_or_else(|| format!("expected {RELAY_HELLO_PREFIX:?}host:port and a newline"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port"))?;
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if !ok {
        return Err(format!(
            "{:?} is not a host name or address",
            host.chars().take(64).collect::<String>()
        ));
    }
    Ok((host.to_owned(), port))
}

impl SecretCallRequest {
    /// Checks the sizes (not the meaning: the enclave does that): body, header count and
    /// bytes, path length. The message names the limit.
    pub fn check_limits(&self) -> Result<(), String> {
        if self.body.len() > MAX_CALL_BODY {
            return Err(format!(
                "the body is {} bytes, more than the limit of {MAX_CALL_BODY}",
                self.body.len()
            ));
        }
        if self.headers.len() > MAX_CALL_HEADERS {
            return Err(format!(
                "{} headers, more than the limit of {MAX_CALL_HEADERS}",
                self.headers.len()
            ));
        }
        let bytes: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > MAX_HEADER_BYTES {
            return Err(format!(
                "the headers are {bytes} bytes, more than the limit of {MAX_HEADER_BYTES}"
            ));
        }
        if self.path_and_query.len() > crate::url::MAX_URL_LEN {
            return Err(format!(
                "the path is {} bytes, more than the limit of {}",
                self.path_and_query.len(),
                crate::url::MAX_URL_LEN
            ));
        }
        if self.secret.len() > 64 || self.method.len() > 32 {
            return Err("the secret name (64) or the method (32) is too long".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    fn req() -> SecretCallRequest {
        SecretCallRequest {
            secret: "github".into(),
            method: "GET".into(),
            path_and_query: "/repos/acme/app?x=1".into(),
            headers: vec![("accept".into(), "application/json".into())],
            body: vec![],
        }
    }

    #[test]
    fn a_call_round_trips_through_a_frame_and_its_limits_hold() {
        let r = req();
        let v = wire::to_value(&r).unwrap();
        assert_eq!(wire::body::<SecretCallRequest>(&v).unwrap(), r);
        assert!(r.check_limits().is_ok());
        let mut big = req();
        big.body = vec![0; MAX_CALL_BODY + 1];
        assert!(big.check_limits().unwrap_err().contains("body"));
        let mut many = req();
        many.headers = vec![("a".into(), "b".into()); MAX_CALL_HEADERS + 1];
        assert!(many.check_limits().unwrap_err().contains("headers"));
        let mut long = req();
        long.headers = vec![("a".into(), "b".repeat(MAX_HEADER_BYTES))];
        assert!(long.check_limits().unwrap_err().contains("bytes"));
        // The largest answer fits in one frame.
        let ans = SecretCallResponse {
            status: 200,
            headers: vec![("x".into(), "y".repeat(MAX_HEADER_BYTES - 1))],
            body: vec![0xff; MAX_CALL_BODY],
            stripped: vec!["host".into()],
            dtc: Some("d".repeat(43)),
            seq: u64::MAX,
            head: "h".repeat(43),
        };
        let frame = wire::encode_frame(&wire::Response {
            id: 1,
            ok: Some(wire::to_value(&ans).unwrap()),
            err: None,
        })
        .unwrap();
        assert!(frame.len() < wire::MAX_FRAME_LEN);
    }

    #[test]
    fn relay_hellos_are_strict() {
        let h = relay_hello("api.github.com", 443);
        assert_eq!(
            parse_relay_hello(h.as_bytes()).unwrap(),
            ("api.github.com".into(), 443)
        );
        assert_eq!(
            parse_relay_hello(relay_hello("[::1]", 8443).as_bytes()).unwrap(),
            ("[::1]".into(), 8443)
        );
        for bad in [
            "CADA-EGRESS/1 api.github.com:443",
            "CADA-EGRESS/1 api.github.com:0\n",
            "CADA-EGRESS/1 api.github.com:65536\n",
            "CADA-EGRESS/1 api.github.com\n",
            "CADA-EGRESS/1 a b:443\n",
            "CADA-EGRESS/1 evil@host:443\n",
            "CADA-EGRESS/1 [zz]:443\n",
            "CADA-EGRESS/1 :443\n",
            "CONNECT api.github.com:443\n",
        ] {
            assert!(parse_relay_hello(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let long = format!("{RELAY_HELLO_PREFIX}{}:443\n", "a".repeat(400));
        assert!(parse_relay_hello(long.as_bytes()).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = wire::to_value(&req()).unwrap();
        if let ciborium::Value::Map(m) = &mut v {
            m.push((
                ciborium::Value::Text("credential".into()),
                ciborium::Value::Text("x".into()),
            ));
        }
        assert!(wire::body::<SecretCallRequest>(&v).is_err());
    }
}
