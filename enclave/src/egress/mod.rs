//! Secret calls (issue 22): the enclave makes an HTTPS request itself and adds a sealed
//! secret to it, only where a live contract and the secret's sealed usage both allow it.
//! The parent relays TLS ciphertext ([`client`]); the agent gets the answer, never the
//! secret.
//!
//! What [`Egress::call`] checks and does, in order (each refusal with its `secret.*` or
//! `contract.*` code, chained as a `refusal` event):
//!
//! 1. sizes ([`SecretCallRequest::check_limits`]) and the method (an HTTP token);
//! 2. the secret is installed (`secret.unknown`) and its usage has not expired at the
//!    enclave's clock (`secret.expired`);
//! 3. the URL — the usage's upstream origin plus the agent's path — is in normal form under
//!    the strict-path rules (`secret.path` with the `url.*` code of the trick) and lies
//!    under the usage's path prefix on a segment boundary (`secret.path`);
//! 4. it is not a credential endpoint (the OAuth token endpoint, compared on path segments;
//!    a path with a segment of [`CREDENTIAL_SEGMENTS`], compared by stem), unless the owner
//!    marked it in the usage (`secret.credential_endpoint`);
//! 5. the agent's headers: CR, LF or NUL anywhere refuses the call (`secret.header`); a
//!    `cada:<other>` placeholder — in any letter case or encoding, in a header, the URL or
//!    the body, matched by [`cada_secrets::placeholder`] as the parent's endpoint does —
//!    refuses it (`secret.placeholder_elsewhere`); a
//!    method-override header refuses it (`secret.method`); `Host`, hop-by-hop and forwarding
//!    headers, `Accept-Encoding`, `Range`, `If-Range`, the credential's own header and
//!    headers carrying this secret's placeholder are removed (named in `stripped`);
//! 6. a live contract grants the secret for this method and URL, its status list is fresh
//!    and clear, its budget and rate hold ([`crate::authority`]: `secret.not_granted`,
//!    `secret.method`, `secret.path`, `contract.*`);
//! 7. the request goes out with `Host` = the usage's origin, `Accept-Encoding: identity`
//!    and the credential header in the usage's format; the answer comes back as is — a 3xx
//!    is returned, never followed —, without `Set-Cookie` and hop-by-hop headers. Refused
//!    whole, never rewritten: an answer that reflects the credential in any spelling
//!    [`reflect`] searches for (`secret.reflected`); one that carries a credential of its own
//!    ([`shapes`], `secret.credential_in_answer`) unless the path is owner-marked; a
//!    compressed one — content- or transfer-coding other than `chunked` — and a partial one
//!    (206), which could hide or piece out a copy (`secret.answer`);
//! 8. the call enters the hash chain: `secret_call` with the secret's name, method, URL,
//!    status and answer bytes.
pub mod client;
pub mod oauth;
pub mod reflect;
pub mod shapes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cada_protocol::egress::{codes, SecretCallRequest, SecretCallResponse};
use cada_protocol::url::HttpUrl;
use cada_protocol::wire::{self, ErrorCode, Request, Response, WireError};
use cada_secrets::placeholder;
use cada_secrets::{SecretKind, SecretUsage};
use hyper::body::Bytes;
use zeroize::Zeroizing;

pub use client::{Client, EgressError, Relay};

use crate::secrets::InstalledSecret;
use crate::signer::Signer;
use crate::EnclaveError;

/// Path segments of well-known credential endpoints (token endpoints, key and token
/// issuers): their answers carry credentials, so a secret is never used on them unless the
/// owner lists the path in the usage's `credential_endpoints`. A segment is compared by its
/// stem ([`segment_stem`]: percent-decoded, lower case, `-` as `_`, cut at the first `.`),
/// so `Token.json`, `token.` and `access-tokens` count; any stem starting with `oauth`
/// (`oauth`, `oauth2`, Slack's `oauth.v2.access`) counts too. Not listed, for their false
/// positives: `sessions` (Stripe Checkout), `secrets` (GitHub Actions writes them, never
/// returns them); the answer check ([`shapes`]) covers what such endpoints would return.
pub const CREDENTIAL_SEGMENTS: [&str; 20] = [
    "token",
    "tokens",
    "access_token",
    "access_tokens",
    "refresh_token",
    "refresh_tokens",
    "id_token",
    "api_key",
    "api_keys",
    "apikey",
    "apikeys",
    "api_tokens",
    "keys",
    "deploy_keys",
    "ephemeral_keys",
    "deploy_tokens",
    "personal_access_tokens",
    "credentials",
    "authorizations",
    "service_tokens",
];

/// Method-override headers: an upstream honouring one runs another method than the one the
/// contract granted (`secret.method`).
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Request headers never forwarded: `Host` (always the usage's origin), framing and
/// hop-by-hop headers (RFC 9110 §7.6.1), forwarding headers (which would let the agent name
/// another host or client to the upstream), `Accept-Encoding` (answers must come back
/// uncompressed so that copies of the credential can be found), `Range` and `If-Range` (a
/// piece of an echo is too short to be recognised; pieces are put together outside).
const DROPPED_REQUEST_HEADERS: [&str; 25] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "expect",
    "forwarded",
    "via",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
    "x-original-url",
    "x-rewrite-url",
    "accept-encoding",
    "range",
    "if-range",
];

/// Answer headers never returned.
const DROPPED_ANSWER_HEADERS: [&str; 11] = [
    "set-cookie",
    "set-cookie2",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "proxy-authenticate",
];

/// The egress side of the enclave: the client, the OAuth refresher over it, and the
/// development secrets.
pub struct Egress {
    client: Arc<Client>,
    /// Access tokens of OAuth secrets, refreshed inside the enclave over `client`.
    oauth: oauth::Tokens<Client>,
    /// Development secrets (`cada-enclave --dev-secret`, sim platforms only): used when the
    /// sealed store ([`crate::secrets::SecretStore`]) holds no secret of that name.
    dev: Mutex<HashMap<String, Arc<InstalledSecret>>>,
}

/// A development secret file: `{"usage": {…SecretUsage…}, "value": "…"}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSecretFile {
    usage: SecretUsage,
    value: String,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn refuse(code: &'static str, msg: impl Into<String>) -> EnclaveError {
    EnclaveError::secret(code, msg)
}

/// The name of another secret's placeholder in `found` ([`placeholder::other`]), for a
/// message.
fn other_placeholder(secret: &str, found: &[Vec<u8>]) -> Option<String> {
    placeholder::other(secret, found).map(|n| clip(&String::from_utf8_lossy(n)))
}

impl Egress {
    /// An egress side over `client`, with no development secrets.
    pub fn new(client: Client) -> Self {
        let client = Arc::new(client);
        Egress {
            oauth: oauth::Tokens::new(client.clone(), Arc::new(oauth::SystemClock)),
            client,
            dev: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTPS client (for the OAuth refresher and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Adds a development secret from its file (`{"usage": …, "value": "…"}`): for the sim
    /// platforms only (the caller checks), never through the wire.
    pub fn add_dev_secret(&self, json: &[u8]) -> Result<String, EnclaveError> {
        if json.len() > 64 * 1024 {
            return Err(EnclaveError::BadRequest(
                "a development secret file is at most 64 KiB".into(),
            ));
        }
        let mut f: DevSecretFile = serde_json::from_slice(json)
            .map_err(|e| EnclaveError::BadRequest(format!("development secret: {e}")))?;
        f.usage
            .validate()
            .and_then(|()| f.usage.check_value(f.value.as_bytes()))
            .map_err(|e| EnclaveError::BadRequest(format!("development secret: {e}")))?;
        let name = f.usage.name.clone();
        let value = Zeroizing::new(std::mem::take(&mut f.value).into_bytes());
        let secret = InstalledSecret {
            usage: f.usage,
            value,
            digest: "dev".into(),
            owner: String::new(),
            iat: 0,
        };
        if let Ok(mut m) = self.dev.lock() {
            m.insert(name.clone(), Arc::new(secret));
        }
        Ok(name)
    }

    /// The secret `name`: from the sealed store, else a development secret.
    fn lookup(&self, signer: &Signer, name: &str) -> Option<Arc<InstalledSecret>> {
        signer
            .secrets()
            .get(name)
            .or_else(|| self.dev.lock().ok().and_then(|m| m.get(name).cloned()))
    }

    /// One secret call (see the [module docs](self)) at `now` (the enclave's clock, unix
    /// seconds). Every refusal enters the hash chain as a `refusal` event naming its code.
    pub async fn call(
        &self,
        signer: &Signer,
        req: &SecretCallRequest,
        now: u64,
    ) -> Result<SecretCallResponse, EnclaveError> {
        match self.call_inner(signer, req, now).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if let Some(code) = e.rule_code() {
                    let _ = signer.chain_event(
                        "refusal",
                        &format!(
                            "{code} secret={} {} {}",
                            clip(&req.secret),
                            clip(&req.method),
                            clip(&req.path_and_query)
                        ),
                    );
                }
                Err(e)
            }
        }
    }

    async fn call_inner(
        &self,
        signer: &Signer,
        req: &SecretCallRequest,
        now: u64,
    ) -> Result<SecretCallResponse, EnclaveError> {
        req.check_limits().map_err(EnclaveError::BadRequest)?;
        if !is_token(&req.method) {
            return Err(EnclaveError::BadRequest(format!(
                "method {:?} is not an HTTP token",
                clip(&req.method)
            )));
        }
        let secret = self.lookup(signer, &req.secret).ok_or_else(|| {
            refuse(
                codes::UNKNOWN,
                format!(
                    "no secret named {:?} is installed in this enclave (cada-parent secret install)",
                    clip(&req.secret)
                ),
            )
        })?;
        let usage = &secret.usage;
        if usage.expired_at(now) {
            return Err(refuse(
                codes::EXPIRED,
                format!(
                    "the sealed usage of {} expired at {} (now {now}, the enclave's clock); the \
                     owner seals it again with a later expiry",
                    usage.name, usage.expires_at
                ),
            ));
        }
        let url = self.check_url(usage, &req.path_and_query)?;
        // The parent's endpoint applies the same matcher; this holds for any caller.
        for (place, bytes) in [
            ("URL", req.path_and_query.as_bytes()),
            ("body", req.body.as_slice()),
        ] {
            if let Some(other) = other_placeholder(&usage.name, &placeholder::all_names(bytes)) {
                return Err(refuse(
                    codes::PLACEHOLDER_ELSEWHERE,
                    format!(
                        "the {place} carries the placeholder cada:{other} for another secret \
                         (in some letter case or encoding); it is refused here (a placeholder \
                         goes only to its own secret's upstream)"
                    ),
                ));
            }
        }
        let mut stripped = Vec::new();
        let mut headers = http::HeaderMap::new();
        self.agent_headers(usage, &req.headers, &mut headers, &mut stripped)?;
        let dtc = signer.authorize_secret(&usage.name, &req.method, &url, now)?;
        let credential = self.credential(&secret).await?;
        // What the answer is searched for; a credential too short for that is not sent.
        let reflection = reflect::Reflection::new(usage, credential.as_bytes()).map_err(|e| {
            refuse(
                codes::VALUE_TOO_SHORT,
                format!("the credential cannot be searched for in answers, so it is not sent: {e}"),
            )
        })?;
        let header_value = usage.header_value(&credential);
        let (host_header, _) = usage
            .upstream
            .split_once("://")
            .map(|(_, h)| (h.to_owned(), ()))
            .unwrap_or_default();
        let mut builder = http::Request::builder()
            .method(req.method.as_str())
            .uri(req.path_and_query.as_str());
        {
            let h = builder
                .headers_mut()
                .ok_or_else(|| EnclaveError::BadRequest("request".into()))?;
            *h = headers;
            h.insert(
                http::header::HOST,
                http::HeaderValue::from_str(&host_header)
                    .map_err(|_| refuse(codes::PATH, "the upstream's host"))?,
            );
            h.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            if !req.body.is_empty()
                || !matches!(req.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS")
            {
                h.insert(
                    http::header::CONTENT_LENGTH,
                    http::HeaderValue::from(req.body.len()),
                );
            }
            let mut v = http::HeaderValue::from_str(&header_value).map_err(|_| {
                refuse(
                    codes::HEADER,
                    "the credential cannot be sent as a header value (control characters)",
                )
            })?;
            v.set_sensitive(true);
            let name = http::HeaderName::from_bytes(usage.header.as_bytes())
                .map_err(|_| refuse(codes::HEADER, "the usage's header name"))?;
            h.insert(name, v);
        }
        let out = builder
            .body(Bytes::copy_from_slice(&req.body))
            .map_err(|e| {
                refuse(
                    codes::PATH,
                    format!("the request cannot be sent as given: {e}"),
                )
            })?;
        let resp = self.client.send(usage, out).await?;
        if resp.status() == http::StatusCode::UNAUTHORIZED
            && matches!(usage.kind, SecretKind::OAuth(_))
        {
            // Revoked before its expiry, perhaps: the next call fetches a new token (at most
            // one such refresh per secret every oauth::INVALIDATE_INTERVAL_SECS).
            self.oauth.invalidate(&usage.name, &credential).await;
        }
        let answer = answer(resp, &reflection, !is_marked(usage, &url), &mut stripped)?;
        let detail = format!(
            "secret={} {} {} status={} bytes={}",
            usage.name,
            req.method,
            url.as_str(),
            answer.0,
            answer.2.len()
        );
        let (seq, head) = signer.chain_event("secret_call", &detail)?;
        Ok(SecretCallResponse {
            status: answer.0,
            headers: answer.1,
            body: answer.2,
            stripped,
            dtc: Some(dtc),
            seq,
            head,
        })
    }

    /// The request URL: the usage's origin plus the agent's path, in normal form under the
    /// strict rules, under the usage's prefix, and not a credential endpoint the owner did
    /// not mark.
    fn check_url(
        &self,
        usage: &SecretUsage,
        path_and_query: &str,
    ) -> Result<HttpUrl, EnclaveError> {
        if !path_and_query.starts_with('/') {
            return Err(refuse(
                codes::PATH,
                "the path must start with / (it goes below the secret's upstream origin)",
            ));
        }
        let full = format!("{}{}", usage.upstream, path_and_query);
        let url = HttpUrl::parse_canonical(&full)
            .map_err(|e| refuse(codes::PATH, format!("{} {e}", e.code())))?;
        if url.origin() != usage.upstream {
            return Err(refuse(
                codes::PATH,
                format!(
                    "{} is not on the secret's upstream {}",
                    clip(url.as_str()),
                    usage.upstream
                ),
            ));
        }
        let prefix = usage
            .prefix()
            .map_err(|e| refuse(codes::PATH, format!("the sealed usage: {e}")))?;
        if !prefix.matches(&url) {
            return Err(refuse(
                codes::PATH,
                format!(
                    "{} is outside the sealed usage's prefix {}",
                    clip(url.as_str()),
                    prefix.as_str()
                ),
            ));
        }
        if is_credential_endpoint(usage, &url) {
            return Err(refuse(
                codes::CREDENTIAL_ENDPOINT,
                format!(
                    "{} is a credential endpoint (its answers carry credentials); the owner \
                     must list it in the usage's credential_endpoints to allow it",
                    clip(url.path())
                ),
            ));
        }
        Ok(url)
    }

    /// The agent's headers that go to the upstream (see the module docs, step 5).
    fn agent_headers(
        &self,
        usage: &SecretUsage,
        given: &[(String, String)],
        out: &mut http::HeaderMap,
        stripped: &mut Vec<String>,
    ) -> Result<(), EnclaveError> {
        // Names listed in Connection are hop-by-hop too.
        let mut conn_listed: Vec<String> = Vec::new();
        for (k, v) in given {
            if k.eq_ignore_ascii_case("connection") {
                conn_listed.extend(v.split(',').map(|t| t.trim().to_ascii_lowercase()));
            }
        }
        for (k, v) in given {
            if k.bytes()
                .chain(v.bytes())
                .any(|b| matches!(b, b'\r' | b'\n' | 0))
            {
                return Err(refuse(
                    codes::HEADER,
                    format!(
                        "the header {:?} holds CR, LF or NUL (header injection); refused",
                        clip(&k.replace(['\r', '\n', '\0'], "?"))
                    ),
                ));
            }
            let name = k.to_ascii_lowercase();
            if !is_token(&name) || name.len() > 64 {
                return Err(refuse(
                    codes::HEADER,
                    format!("{:?} is not a header name", clip(k)),
                ));
            }
            if METHOD_OVERRIDES.contains(&name.as_str()) {
                return Err(refuse(
                    codes::METHOD,
                    format!(
                        "the header {name} asks the upstream to run another method than the \
                         one sent, which the contract's method grant would not see; refused \
                         (send the method itself)"
                    ),
                ));
            }
            let ph = placeholder::header_names(v.as_bytes());
            if let Some(other) = other_placeholder(&usage.name, &ph) {
                return Err(refuse(
                    codes::PLACEHOLDER_ELSEWHERE,
                    format!(
                        "the header {name} carries the placeholder cada:{other} for another \
                         secret (in some letter case or encoding); a placeholder goes only to \
                         its own secret's upstream"
                    ),
                ));
            }
            if !ph.is_empty()
                || name == usage.header
                || DROPPED_REQUEST_HEADERS.contains(&name.as_str())
                || conn_listed.contains(&name)
            {
                if !stripped.contains(&name) {
                    stripped.push(name);
                }
                continue;
            }
            let value = http::HeaderValue::from_str(v).map_err(|_| {
                refuse(
                    codes::HEADER,
                    format!("the value of {name} is not a header value"),
                )
            })?;
            let hn = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| refuse(codes::HEADER, format!("{name} is not a header name")))?;
            out.append(hn, value);
        }
        Ok(())
    }
}

impl Egress {
    /// The credential to inject: a static secret's value (printable, no CR/LF), or an OAuth
    /// secret's access token from the refresher (obtained inside the enclave).
    async fn credential(
        &self,
        secret: &InstalledSecret,
    ) -> Result<Zeroizing<String>, EnclaveError> {
        match &secret.usage.kind {
            SecretKind::Static => static_credential(secret),
            SecretKind::OAuth(_) => {
                let t = self
                    .oauth
                    .credential(
                        &secret.usage.name,
                        &secret.digest,
                        &secret.usage,
                        &secret.value,
                    )
                    .await?;
                if t.is_empty() || t.bytes().any(|b| b.is_ascii_control()) {
                    return Err(refuse(
                        codes::HEADER,
                        "the access token holds control characters; it cannot go in a header",
                    ));
                }
                Ok(t)
            }
        }
    }
}

/// A static secret's value as a header credential (printable, no CR/LF).
fn static_credential(secret: &InstalledSecret) -> Result<Zeroizing<String>, EnclaveError> {
    match &secret.usage.kind {
        SecretKind::Static => {
            let s = std::str::from_utf8(&secret.value).map_err(|_| {
                refuse(
                    codes::HEADER,
                    "the secret is not UTF-8 text; it cannot go in a header",
                )
            })?;
            if s.is_empty() || s.bytes().any(|b| b.is_ascii_control()) {
                return Err(refuse(
                    codes::HEADER,
                    "the secret holds control characters; it cannot go in a header",
                ));
            }
            Ok(Zeroizing::new(s.to_owned()))
        }
        SecretKind::OAuth(_) => Err(refuse(codes::UNKNOWN, "not a static secret")),
    }
}

/// Whether the owner marked `url`'s path as a credential endpoint in the usage (the path is
/// one of, or under one of, its `credential_endpoints`).
fn is_marked(usage: &SecretUsage, url: &HttpUrl) -> bool {
    let path = url.path();
    usage.credential_endpoints.iter().any(|p| {
        path == p
            || (p.ends_with('/') && path.starts_with(p.as_str()))
            || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
    })
}

/// A path segment as credential endpoints are compared: percent-decoded, lower case, `-` as
/// `_`, cut at the first `.` (an extension or format: `token.json`, `token.`), trailing
/// spaces dropped (`token%20`).
pub fn segment_stem(seg: &str) -> String {
    let decoded = reflect::percent_decode(seg.as_bytes()).map_or_else(
        || seg.to_owned(),
        |d| String::from_utf8_lossy(&d).into_owned(),
    );
    let lower = decoded.to_ascii_lowercase().replace('-', "_");
    lower
        .split('.')
        .next()
        .unwrap_or("")
        .trim_end_matches(|c: char| c.is_whitespace())
        .to_owned()
}

/// A path's segments for comparison: each percent-decoded and lower-cased, the last by its
/// stem, a trailing empty segment (`/x/`) dropped.
fn path_key(path: &str) -> Vec<String> {
    let mut segs: Vec<&str> = path.split('/').skip(1).collect();
    if segs.last() == Some(&"") {
        segs.pop();
    }
    let n = segs.len();
    segs.iter()
        .enumerate()
        .map(|(i, s)| {
            if i + 1 == n {
                segment_stem(s)
            } else {
                let d = reflect::percent_decode(s.as_bytes()).map_or_else(
                    || (*s).to_owned(),
                    |d| String::from_utf8_lossy(&d).into_owned(),
                );
                d.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Whether `url` is a credential endpoint the owner did not mark: the OAuth usage's own
/// token endpoint — compared on path segments ([`path_key`]), so `/oauth/refresh/`,
/// `/OAuth/Refresh.json` and any path under it count — or a path with a segment in
/// [`CREDENTIAL_SEGMENTS`] (by stem) or whose stem starts with `oauth`; unless the path is
/// one of (or under one of) the usage's `credential_endpoints`.
fn is_credential_endpoint(usage: &SecretUsage, url: &HttpUrl) -> bool {
    if is_marked(usage, url) {
        return false;
    }
    if let SecretKind::OAuth(o) = &usage.kind {
        if let Ok(t) = HttpUrl::parse_canonical(&o.token_endpoint) {
            let (te, here) = (path_key(t.path()), path_key(url.path()));
            if t.origin() == url.origin() && here.len() >= te.len() && here[..te.len()] == te[..] {
                return true;
            }
        }
    }
    url.path().split('/').any(|seg| {
        let stem = segment_stem(seg);
        stem.starts_with("oauth") || CREDENTIAL_SEGMENTS.contains(&stem.as_str())
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (tests).
#[cfg(test)]
fn percent_encode(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for &c in b {
        if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// The answer as the agent gets it (see the module docs, step 7): refused when it reflects
/// the credential (`secret.reflected`), carries a credential of its own and `scan_minted`
/// (the path is not owner-marked; `secret.credential_in_answer`), is compressed, uses a
/// transfer-coding other than `chunked`, or is partial (`secret.answer`).
fn answer(
    resp: http::Response<Bytes>,
    reflection: &reflect::Reflection,
    scan_minted: bool,
    stripped: &mut Vec<String>,
) -> Result<Answer, EnclaveError> {
    let (parts, body) = resp.into_parts();
    let encoded = parts
        .headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded && !body.is_empty() {
        return Err(refuse(
            codes::ANSWER,
            "the upstream answered compressed although the enclave asked for identity; a \
             compressed answer could hide a copy of the credential, so it is not returned",
        ));
    }
    // Hyper takes the chunked framing off; any other transfer-coding (gzip, deflate, …)
    // would reach the agent still applied.
    let mut codings = Vec::new();
    for v in parts.headers.get_all(http::header::TRANSFER_ENCODING) {
        let v = v.to_str().unwrap_or("?");
        codings.extend(v.split(',').map(str::trim).filter(|c| !c.is_empty()));
    }
    let plain = match codings.as_slice() {
        [] => true,
        [only] => only.eq_ignore_ascii_case("chunked"),
        _ => false,
    };
    if !plain {
        return Err(refuse(
            codes::ANSWER,
            "the upstream answered with a transfer-coding other than chunked (a compressed \
             answer could hide a copy of the credential), so it is not returned",
        ));
    }
    if parts.status == http::StatusCode::PARTIAL_CONTENT {
        return Err(refuse(
            codes::ANSWER,
            "the upstream answered 206 Partial Content although the enclave drops Range: \
             pieces of an answer could be put together outside the enclave, so it is not \
             returned",
        ));
    }
    let mut headers = Vec::with_capacity(parts.headers.len());
    let reflected = |where_: &str, f: reflect::Found| {
        if f.form == reflect::UNSETTLED {
            return refuse(
                codes::ANSWER,
                format!(
                    "the answer ({where_}) holds JSON, percent or HTML escapes nested more than \
                     {} levels deep (still changing after that many rounds of decoding), so it \
                     cannot be searched for the credential and is not returned",
                    reflect::MAX_DECODE_ROUNDS
                ),
            );
        }
        refuse(
            codes::REFLECTED,
            format!(
                "the upstream reflected the credential in its answer ({where_}, {} form, {}); \
                 the whole answer is withheld. Do not grant endpoints that echo request \
                 headers",
                f.form, f.view
            ),
        )
    };
    let minted = |where_: &str, what: String| {
        refuse(
            codes::CREDENTIAL_IN_ANSWER,
            format!(
                "the answer carries a credential of its own ({what}, in {where_}); the whole \
                 answer is withheld. If this endpoint is meant to hand out credentials, the \
                 owner lists its path in the usage's credential_endpoints"
            ),
        )
    };
    for (k, v) in &parts.headers {
        let name = k.as_str();
        if DROPPED_ANSWER_HEADERS.contains(&name) {
            if name.starts_with("set-cookie") && !stripped.iter().any(|s| s == "set-cookie") {
                stripped.push("set-cookie".into());
            }
            continue;
        }
        if let Some(f) = reflection
            .find(name.as_bytes())
            .or_else(|| reflection.find(v.as_bytes()))
        {
            return Err(reflected("a header", f));
        }
        if scan_minted {
            if let Some(what) = shapes::credential_shape(v.as_bytes()) {
                return Err(minted(&format!("the header {name}"), what));
            }
        }
        headers.push((
            name.to_owned(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    if let Some(f) = reflection.find(&body) {
        return Err(reflected("the body", f));
    }
    if scan_minted {
        if let Some(what) = shapes::credential_shape(&body) {
            return Err(minted("the body", what));
        }
    }
    Ok((parts.status.as_u16(), headers, body.to_vec()))
}

fn clip(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

/// Answers one `secret_call` frame.
pub async fn handle_call(signer: &Signer, req: &Request, now: u64) -> Response {
    let result = match wire::body::<SecretCallRequest>(&req.body) {
        Err(e) => Err(EnclaveError::BadRequest(e.to_string())),
        Ok(body) => match signer.egress() {
            None => Err(refuse(
                codes::NO_EGRESS,
                "this enclave was started without an egress relay (cada-enclave --egress)",
            )),
            Some(e) => e.call(signer, &body, now).await,
        },
    };
    let answer = result.and_then(|r| {
        wire::to_value(&r).map_err(|e| EnclaveError::BadRequest(format!("answer: {e}")))
    });
    match answer {
        Ok(v) => Response {
            id: req.id,
            ok: Some(v),
            err: None,
        },
        Err(e) => Response {
            id: req.id,
            ok: None,
            err: Some(WireError {
                code: match &e {
                    EnclaveError::Secret { .. } => ErrorCode::SecretDenied,
                    other => other.code(),
                },
                message: e.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests;
