//! OAuth upstreams: the enclave obtains access tokens itself and keeps them inside.
//!
//! A sealed secret of kind [`SecretKind::OAuth`] carries client credentials and, for the
//! `refresh_token` grant, a refresh token (the sealed value is JSON
//! `{"client_secret": .., "refresh_token": ..}`, both optional by grant); its usage names the
//! token endpoint, the client id, the grant, the scope and how the client authenticates.
//! [`Tokens::credential`] returns the access token to inject for such a secret:
//!
//! * it POSTs to the token endpoint through a [`TokenTransport`] — the enclave's own TLS
//!   (the egress client), verified against the CAs the owner signed in the usage — and reads
//!   at most [`MAX_TOKEN_ANSWER`] bytes of the answer;
//! * it caches the access token in zeroizing memory until shortly before it expires
//!   ([`refresh_margin`]), per secret and sealed value (a re-installed secret starts over),
//!   or until the upstream refuses it ([`Tokens::invalidate`], on a 401);
//! * it refreshes single-flight: one request per secret at a time, concurrent callers wait
//!   for it and then share its token;
//! * a new refresh token in the answer (rotation) replaces the old one, **in memory only**:
//!   after an enclave restart the sealed refresh token is what the enclave has again — and a
//!   restarted enclave has a new key anyway, so the owner re-seals (`cada-owner seal`). With a
//!   provider that revokes rotated refresh tokens the sealed one is then spent: re-authorize
//!   and seal the new refresh token;
//! * a refusal of the grant (`invalid_grant`, `invalid_client`, …) is [`OAUTH_REFUSED`] and
//!   stays so until the secret is installed again (no retry storm against the provider); a
//!   transport failure or an unusable answer is [`OAUTH_UNAVAILABLE`], remembered for
//!   [`FAILURE_HOLD_SECS`] while a cached token that has not expired yet is still used.
//!
//! Neither the access token, the refresh token nor the client secret ever leaves this module
//! except as the return value of [`Tokens::credential`] (which the egress code puts in the
//! upstream request's header): no error message, log line or chain event carries them, and the
//! server's `error_description` is not repeated (it could echo what was sent).
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use cada_secrets::{ClientAuth, OAuthGrant, OAuthUsage, SecretKind, SecretUsage};
use zeroize::Zeroizing;

use crate::EnclaveError;

/// The grant was refused by the token endpoint (`invalid_grant`, `invalid_client`,
/// `unauthorized_client`, `invalid_scope`, …): re-authorize and seal again.
pub const OAUTH_REFUSED: &str = "secret.oauth_refused";
/// The token endpoint could not be reached or gave no usable answer (retried later).
pub const OAUTH_UNAVAILABLE: &str = "secret.oauth_unavailable";
/// The token endpoint issued a token of another type than `Bearer` (e.g. `DPoP`), which the
/// enclave cannot present.
pub const OAUTH_TOKEN_TYPE: &str = "secret.oauth_token_type";
/// The sealed value of an OAuth secret is not the JSON this module expects.
pub const OAUTH_VALUE: &str = "secret.oauth_value";
/// The secret is not an OAuth secret, or has expired.
pub const OAUTH_USAGE: &str = "secret.usage_invalid";
/// The secret's usage has expired (the same code as the egress path's).
pub const EXPIRED: &str = "secret.expired";

/// Largest token endpoint answer read (bytes).
pub const MAX_TOKEN_ANSWER: usize = 64 * 1024;
/// Longest access or refresh token accepted (bytes).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest sealed value of an OAuth secret (bytes).
pub const MAX_VALUE_LEN: usize = 16 * 1024;
/// Lifetime assumed when the answer has no `expires_in` (seconds).
pub const DEFAULT_LIFETIME_SECS: u64 = 300;
/// Longest lifetime believed (seconds): a token is refreshed at least this often.
pub const MAX_LIFETIME_SECS: u64 = 24 * 3600;
/// How long a transport failure is remembered before the next attempt (seconds).
pub const FAILURE_HOLD_SECS: u64 = 5;
/// Most OAuth secrets cached at once (one entry per secret name).
pub const MAX_ENTRIES: usize = 1024;

/// A request to the token endpoint. Its body (client secret, refresh token) and headers
/// (Basic credentials) are zeroized when dropped.
pub struct TokenRequest {
    /// The token endpoint: an absolute https URL from the owner-signed usage (it may be
    /// another origin than the usage's upstream).
    pub url: String,
    /// Headers to send (lower-case names): `content-type`, `accept`, maybe `authorization`.
    pub headers: Vec<(&'static str, Zeroizing<String>)>,
    /// The form body (`application/x-www-form-urlencoded`).
    pub body: Zeroizing<Vec<u8>>,
    /// Most answer body bytes to read; a longer answer is an error of the transport.
    pub max_answer: usize,
}

/// The token endpoint's answer.
pub struct TokenAnswer {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, at most the request's `max_answer` bytes (zeroized when dropped).
    pub body: Zeroizing<Vec<u8>>,
}

/// How the enclave reaches a token endpoint: the egress client implements it over the
/// enclave's own TLS (server certificate verified inside against the usage's CAs, or the
/// built-in Mozilla roots when it names none), through the parent's ciphertext relay.
pub trait TokenTransport: Send + Sync + 'static {
    /// POSTs `req` to `req.url` with TLS trust from `usage`; never follows a redirect; reads
    /// at most `req.max_answer` body bytes (more is an error). An error message must not
    /// carry the request's body or headers.
    fn post_form(
        &self,
        usage: &SecretUsage,
        req: TokenRequest,
    ) -> impl Future<Output = Result<TokenAnswer, EnclaveError>> + Send;
}

impl TokenTransport for super::Client {
    /// Over the enclave's own TLS: the token endpoint's origin with the usage's CAs (a
    /// connection pooled apart from the API's, since the pool key is origin + CA set). The
    /// client reads at most `MAX_CALL_BODY` bytes; past `req.max_answer` the answer is refused
    /// here. The request bytes handed to hyper are not wiped afterwards (hyper owns them).
    async fn post_form(
        &self,
        usage: &SecretUsage,
        req: TokenRequest,
    ) -> Result<TokenAnswer, EnclaveError> {
        let url = cada_protocol::url::HttpUrl::parse_canonical(&req.url).map_err(|e| {
            refused(
                OAUTH_UNAVAILABLE,
                format!("the token endpoint {}: {e}", req.url),
            )
        })?;
        let origin = url.origin().to_owned();
        let host = origin
            .strip_prefix("https://")
            .ok_or_else(|| refused(OAUTH_UNAVAILABLE, "the token endpoint is not https"))?
            .to_owned();
        let path = url.as_str()[origin.len()..].to_owned();
        let mut endpoint = usage.clone();
        endpoint.upstream = origin;
        let mut builder =
            http::Request::builder()
                .method(http::Method::POST)
                .uri(if path.is_empty() {
                    "/".to_owned()
                } else {
                    path
                });
        let h = builder
            .headers_mut()
            .ok_or_else(|| refused(OAUTH_UNAVAILABLE, "the token request"))?;
        h.insert(
            http::header::HOST,
            http::HeaderValue::from_str(&host)
                .map_err(|_| refused(OAUTH_UNAVAILABLE, "the token endpoint's host"))?,
        );
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(req.body.len()),
        );
        h.insert(
            http::header::ACCEPT_ENCODING,
            http::HeaderValue::from_static("identity"),
        );
        for (name, value) in &req.headers {
            let mut v = http::HeaderValue::from_str(value).map_err(|_| {
                refused(
                    OAUTH_UNAVAILABLE,
                    format!("the {name} header of the token request"),
                )
            })?;
            v.set_sensitive(true);
            h.insert(*name, v);
        }
        let out = builder
            .body(hyper::body::Bytes::copy_from_slice(&req.body))
            .map_err(|_| refused(OAUTH_UNAVAILABLE, "the token request could not be built"))?;
        let resp = self.send(&endpoint, out).await?;
        let (parts, body) = resp.into_parts();
        if body.len() > req.max_answer {
            return Err(refused(
                OAUTH_UNAVAILABLE,
                format!(
                    "the token endpoint answered more than {} bytes",
                    req.max_answer
                ),
            ));
        }
        Ok(TokenAnswer {
            status: parts.status.as_u16(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: Zeroizing::new(body.to_vec()),
        })
    }
}

/// Where the refresher reads the time (unix seconds); injected so that tests drive expiry.
pub trait Clock: Send + Sync + 'static {
    /// Now, unix seconds.
    fn now(&self) -> u64;
}

/// The system clock (inside an enclave: the enclave's clock; on SEV-SNP the host sets it).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Least time between two 401-triggered drops of one secret's token: an agent calling an
/// endpoint that always answers 401 must not make the enclave ask the provider for a new
/// token on every call (adversary22 finding 11). Within it the 401 reaches the agent as is.
pub const INVALIDATE_INTERVAL_SECS: u64 = 30;

/// How long before its expiry a token of `lifetime` seconds is refreshed: a minute, or half
/// its life when it is shorter than two minutes.
pub fn refresh_margin(lifetime: u64) -> u64 {
    (lifetime / 2).min(60)
}

fn refused(code: &'static str, message: impl Into<String>) -> EnclaveError {
    EnclaveError::secret(code, message)
}

/// The sealed value of an OAuth secret.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedValue {
    #[serde(default)]
    client_secret: Option<SecretString>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

/// A string read from JSON straight into zeroizing memory.
struct SecretString(Zeroizing<String>);

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretString, E> {
                Ok(SecretString(Zeroizing::new(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<SecretString, E> {
                Ok(SecretString(Zeroizing::new(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// A token endpoint's JSON answer (RFC 6749 §5.1 and §5.2); other members are ignored.
#[derive(serde::Deserialize)]
struct Answer {
    #[serde(default)]
    access_token: Option<SecretString>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default)]
    error: Option<String>,
}

/// The credentials of one secret, from its sealed value.
struct Credentials {
    client_secret: Option<Zeroizing<String>>,
    /// The newest refresh token: the sealed one, then each rotated one (memory only).
    refresh_token: Option<Zeroizing<String>>,
}

impl Credentials {
    fn parse(value: &[u8], grant: OAuthGrant) -> Result<Self, EnclaveError> {
        const SHAPE: &str = "the sealed value of an OAuth secret is JSON {\"client_secret\": \
                             \"..\", \"refresh_token\": \"..\"} (refresh_token for the \
                             refresh_token grant, client_secret for client_credentials)";
        if value.len() > MAX_VALUE_LEN {
            return Err(refused(
                OAUTH_VALUE,
                format!("{SHAPE}; at most {MAX_VALUE_LEN} bytes"),
            ));
        }
        // serde's message could quote the value: only say where it broke.
        let v: SealedValue = serde_json::from_slice(value).map_err(|e| {
            refused(
                OAUTH_VALUE,
                format!(
                    "{SHAPE}; not that JSON ({:?} at column {})",
                    e.classify(),
                    e.column()
                ),
            )
        })?;
        let c = Credentials {
            client_secret: v.client_secret.map(|s| s.0),
            refresh_token: v.refresh_token.map(|s| s.0),
        };
        for (what, s) in [
            ("client_secret", &c.client_secret),
            ("refresh_token", &c.refresh_token),
        ] {
            if let Some(s) = s {
                if s.is_empty() || s.len() > MAX_TOKEN_LEN || !s.bytes().all(is_token_byte) {
                    return Err(refused(
                        OAUTH_VALUE,
                        format!(
                            "{SHAPE}; {what} must be 1–{MAX_TOKEN_LEN} visible ASCII characters"
                        ),
                    ));
                }
            }
        }
        match grant {
            OAuthGrant::RefreshToken if c.refresh_token.is_none() => Err(refused(
                OAUTH_VALUE,
                format!("{SHAPE}; the refresh_token grant needs a refresh_token"),
            )),
            OAuthGrant::ClientCredentials if c.client_secret.is_none() => Err(refused(
                OAUTH_VALUE,
                format!("{SHAPE}; the client_credentials grant needs a client_secret"),
            )),
            _ => Ok(c),
        }
    }
}

/// Visible ASCII without space: what a token may hold to go into a header unchanged.
fn is_token_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

/// An access token and when to stop using it.
struct Cached {
    token: Zeroizing<String>,
    /// From then on the next caller refreshes (unix seconds).
    refresh_at: u64,
    /// The token's own end (unix seconds): used while a refresh fails until then.
    expires_at: u64,
}

/// What the refresher knows about one secret (guarded by its own async lock: single flight).
struct Entry {
    /// The digest of the sealed value this entry was made from.
    digest: String,
    credentials: Option<Credentials>,
    cached: Option<Cached>,
    /// The grant was refused: every call fails the same way until the secret is re-installed.
    refused: Option<String>,
    /// A transport failure and until when it is repeated without asking again.
    failed: Option<(u64, String)>,
    /// When a 401 last made this entry drop its token ([`Tokens::invalidate`]).
    invalidated_at: Option<u64>,
}

impl Entry {
    fn new(digest: &str) -> Self {
        Entry {
            digest: digest.to_owned(),
            credentials: None,
            cached: None,
            refused: None,
            failed: None,
            invalidated_at: None,
        }
    }
}

/// A freshly issued token.
struct Fresh {
    token: Zeroizing<String>,
    lifetime: u64,
    refresh_token: Option<Zeroizing<String>>,
}

/// Why a token request failed.
enum Failure {
    /// The provider refused the grant (permanent until re-installed).
    Refused(String),
    /// Could not get a usable answer (transient).
    Unavailable(String),
    /// An answer the enclave must not use, e.g. a DPoP token (permanent).
    TokenType(String),
}

/// The access tokens of every OAuth secret, cached inside the enclave.
pub struct Tokens<T: TokenTransport> {
    transport: Arc<T>,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

impl<T: TokenTransport> Tokens<T> {
    /// A refresher that reaches token endpoints through `transport` and reads the time from
    /// `clock`.
    pub fn new(transport: Arc<T>, clock: Arc<dyn Clock>) -> Self {
        Tokens {
            transport,
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets everything cached for `name` (the secret was removed or replaced).
    pub fn forget(&self, name: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(name);
        }
    }

    /// Drops `token` from the cache of `name` if it is still the cached one: the upstream
    /// refused it (HTTP 401, e.g. revoked before its expiry), so the next call fetches a new
    /// one. A token already replaced is left alone, so that many refusals of one token cost
    /// one refresh; and a secret's token is dropped at most once every
    /// [`INVALIDATE_INTERVAL_SECS`] (at the injected clock), so that an endpoint answering 401
    /// to every token cannot drive a refresh storm at the provider.
    pub async fn invalidate(&self, name: &str, token: &str) {
        let slot = self.entries.lock().ok().and_then(|m| m.get(name).cloned());
        if let Some(slot) = slot {
            let mut e = slot.lock().await;
            let now = self.clock.now();
            let recent = e
                .invalidated_at
                .is_some_and(|t| now < t.saturating_add(INVALIDATE_INTERVAL_SECS));
            if !recent && e.cached.as_ref().is_some_and(|c| c.token.as_str() == token) {
                e.cached = None;
                e.invalidated_at = Some(now);
            }
        }
    }

    fn slot(&self, name: &str) -> Result<Arc<tokio::sync::Mutex<Entry>>, EnclaveError> {
        let mut m = self
            .entries
            .lock()
            .map_err(|_| refused(OAUTH_UNAVAILABLE, "the token cache is unusable"))?;
        if let Some(e) = m.get(name) {
            return Ok(Arc::clone(e));
        }
        // Never evicted: an entry may hold the only valid (rotated) refresh token. Secrets
        // are few (the store is bounded); `forget` drops a removed one.
        if m.len() >= MAX_ENTRIES {
            return Err(refused(
                OAUTH_UNAVAILABLE,
                format!("more than {MAX_ENTRIES} OAuth secrets in use at once"),
            ));
        }
        let e = Arc::new(tokio::sync::Mutex::new(Entry::new("")));
        m.insert(name.to_owned(), Arc::clone(&e));
        Ok(e)
    }

    /// The access token to inject for the OAuth secret `name`, installed from a sealed value
    /// of digest `digest` with `usage` and plaintext `value`: the cached one while it is
    /// fresh, else a new one from the token endpoint (one request per secret at a time).
    ///
    /// Refusals: [`OAUTH_USAGE`] (not an OAuth secret), [`EXPIRED`], [`OAUTH_VALUE`],
    /// [`OAUTH_REFUSED`], [`OAUTH_UNAVAILABLE`], [`OAUTH_TOKEN_TYPE`]; none of their messages
    /// carries a token or the client secret.
    pub async fn credential(
        &self,
        name: &str,
        digest: &str,
        usage: &SecretUsage,
        value: &[u8],
    ) -> Result<Zeroizing<String>, EnclaveError> {
        let SecretKind::OAuth(oauth) = &usage.kind else {
            return Err(refused(
                OAUTH_USAGE,
                format!("secret {name} is not an OAuth secret"),
            ));
        };
        let slot = self.slot(name)?;
        // Single flight: whoever holds the lock refreshes; the others wait here and then find
        // the fresh token.
        let mut e = slot.lock().await;
        if e.digest != digest {
            *e = Entry::new(digest);
        }
        let now = self.clock.now();
        if usage.expired_at(now) {
            e.cached = None;
            return Err(refused(
                EXPIRED,
                format!(
                    "secret {name} expired at {} (unix); seal it again",
                    usage.expires_at
                ),
            ));
        }
        if let Some(c) = e.cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(c.token.clone());
        }
        if let Some(m) = &e.refused {
            return Err(refused(OAUTH_REFUSED, m.clone()));
        }
        if let Some((until, m)) = &e.failed {
            if now < *until {
                return match e.cached.as_ref().filter(|c| now < c.expires_at) {
                    Some(c) => Ok(c.token.clone()),
                    None => Err(refused(OAUTH_UNAVAILABLE, m.clone())),
                };
            }
        }
        if e.credentials.is_none() {
            e.credentials = Some(Credentials::parse(value, oauth.grant)?);
        }
        let Some(creds) = e.credentials.as_ref() else {
            return Err(refused(OAUTH_VALUE, "no credentials"));
        };
        let req = token_request(oauth, creds);
        let result = match self.transport.post_form(usage, req).await {
            Ok(answer) => read_answer(name, &answer),
            Err(err) => Err(Failure::Unavailable(format!(
                "secret {name}: the token endpoint {} could not be reached: {err}",
                oauth.token_endpoint
            ))),
        };
        // The clock again: the request may have taken a while.
        let now = self.clock.now().max(now);
        match result {
            Ok(fresh) => {
                if let (Some(new), Some(c)) = (fresh.refresh_token, e.credentials.as_mut()) {
                    // Rotation: the old refresh token is dropped (and wiped) here.
                    c.refresh_token = Some(new);
                }
                let lifetime = fresh.lifetime;
                let expires_at = now.saturating_add(lifetime).min(usage.expires_at);
                let refresh_at = expires_at.saturating_sub(refresh_margin(lifetime));
                e.failed = None;
                e.cached = Some(Cached {
                    token: fresh.token.clone(),
                    refresh_at,
                    expires_at,
                });
                Ok(fresh.token)
            }
            Err(Failure::Refused(m)) => {
                e.cached = None;
                e.refused = Some(m.clone());
                Err(refused(OAUTH_REFUSED, m))
            }
            Err(Failure::TokenType(m)) => {
                e.cached = None;
                e.refused = Some(m.clone());
                Err(refused(OAUTH_TOKEN_TYPE, m))
            }
            Err(Failure::Unavailable(m)) => {
                e.failed = Some((now.saturating_add(FAILURE_HOLD_SECS), m.clone()));
                match e.cached.as_ref().filter(|c| now < c.expires_at) {
                    Some(c) => Ok(c.token.clone()),
                    None => Err(refused(OAUTH_UNAVAILABLE, m)),
                }
            }
        }
    }
}

/// The form request for `oauth` (RFC 6749 §4.4.2 / §6, client authentication §2.3.1).
fn token_request(oauth: &OAuthUsage, creds: &Credentials) -> TokenRequest {
    use url::form_urlencoded::{byte_serialize, Serializer};
    let mut capacity =
        256 + oauth.client_id.len() * 3 + oauth.scope.as_ref().map_or(0, |s| s.len() * 3);
    for s in [&creds.client_secret, &creds.refresh_token]
        .into_iter()
        .flatten()
    {
        capacity += s.len() * 3;
    }
    // Sized up front so that the buffer holding the secrets is never reallocated (which would
    // leave an unwiped copy behind).
    let mut form = Serializer::new(String::with_capacity(capacity));
    match oauth.grant {
        OAuthGrant::RefreshToken => {
            form.append_pair("grant_type", "refresh_token");
            if let Some(rt) = &creds.refresh_token {
                form.append_pair("refresh_token", rt);
            }
        }
        OAuthGrant::ClientCredentials => {
            form.append_pair("grant_type", "client_credentials");
        }
    }
    if let Some(scope) = &oauth.scope {
        form.append_pair("scope", scope);
    }
    let mut headers = vec![
        (
            "content-type",
            Zeroizing::new("application/x-www-form-urlencoded".to_owned()),
        ),
        ("accept", Zeroizing::new("application/json".to_owned())),
    ];
    match (&creds.client_secret, oauth.client_auth) {
        (Some(secret), ClientAuth::Basic) => {
            // RFC 6749 §2.3.1: both parts form-encoded, then joined and base64-encoded.
            let mut pair = Zeroizing::new(String::with_capacity(
                (oauth.client_id.len() + secret.len()) * 3 + 1,
            ));
            pair.extend(byte_serialize(oauth.client_id.as_bytes()));
            pair.push(':');
            pair.extend(byte_serialize(secret.as_bytes()));
            let mut value = Zeroizing::new(String::with_capacity(pair.len() * 4 / 3 + 16));
            value.push_str("Basic ");
            base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut value);
            headers.push(("authorization", value));
        }
        (Some(secret), ClientAuth::Post) => {
            form.append_pair("client_id", &oauth.client_id);
            form.append_pair("client_secret", secret);
        }
        // A public client (refresh token only) names itself.
        (None, _) => {
            form.append_pair("client_id", &oauth.client_id);
        }
    }
    TokenRequest {
        url: oauth.token_endpoint.clone(),
        headers,
        body: Zeroizing::new(form.finish().into_bytes()),
        max_answer: MAX_TOKEN_ANSWER,
    }
}

/// Reads a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error).
fn read_answer(name: &str, answer: &TokenAnswer) -> Result<Fresh, Failure> {
    if answer.body.len() > MAX_TOKEN_ANSWER {
        return Err(Failure::Unavailable(format!(
            "secret {name}: the token endpoint answered more than {MAX_TOKEN_ANSWER} bytes"
        )));
    }
    let json = answer.content_type.as_deref().is_none_or(|t| {
        t.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
    });
    let parsed: Option<Answer> = if json {
        serde_json::from_slice(&answer.body).ok()
    } else {
        None
    };
    if answer.status != 200 {
        let error = parsed
            .as_ref()
            .and_then(|a| a.error.as_deref())
            .map(oauth_error_name);
        return match (answer.status, error) {
            (400 | 401, Some(err)) if err != "other" => Err(Failure::Refused(format!(
                "secret {name}: the token endpoint refused the grant ({err}, HTTP {}); \
                 authorize the client again and seal the new credentials",
                answer.status
            ))),
            (status, err) => Err(Failure::Unavailable(format!(
                "secret {name}: the token endpoint answered HTTP {status}{}",
                err.map(|e| format!(" ({e})")).unwrap_or_default()
            ))),
        };
    }
    let Some(a) = parsed else {
        return Err(Failure::Unavailable(format!(
            "secret {name}: the token endpoint's answer is not a JSON token response"
        )));
    };
    let Some(token) = a.access_token.map(|t| t.0) else {
        return Err(Failure::Unavailable(format!(
            "secret {name}: the token endpoint's answer has no access_token"
        )));
    };
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.bytes().all(is_token_byte) {
        return Err(Failure::Unavailable(format!(
            "secret {name}: the access token is not 1–{MAX_TOKEN_LEN} visible ASCII characters"
        )));
    }
    match a.token_type.as_deref() {
        // RFC 6749 makes token_type required; a few providers omit it for bearer tokens.
        None => {}
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            return Err(Failure::TokenType(format!(
                "secret {name}: the token endpoint issued a {} token; only Bearer tokens can be \
                 injected",
                oauth_error_name(t)
            )))
        }
    }
    let refresh_token = match a.refresh_token.map(|t| t.0) {
        Some(rt) if rt.is_empty() || rt.len() > MAX_TOKEN_LEN || !rt.bytes().all(is_token_byte) => {
            return Err(Failure::Unavailable(format!(
                "secret {name}: the new refresh token is not 1–{MAX_TOKEN_LEN} visible ASCII \
                 characters"
            )))
        }
        other => other,
    };
    let lifetime = match &a.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_LIFETIME_SECS,
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => secs,
            (None, Some(f)) if f.is_finite() && f >= 0.0 => whole_seconds(f),
            _ => return Err(bad_expiry(name)),
        },
        // Some providers send the number as a string.
        Some(serde_json::Value::String(s))
            if !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().map_err(|_| bad_expiry(name))?
        }
        Some(_) => return Err(bad_expiry(name)),
    }
    .min(MAX_LIFETIME_SECS);
    Ok(Fresh {
        token,
        lifetime,
        refresh_token,
    })
}

/// A non-negative finite number of seconds, cut to whole seconds and to the longest lifetime
/// believed.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the value is finite, not negative and at most MAX_LIFETIME_SECS"
)]
fn whole_seconds(f: f64) -> u64 {
    f.min(MAX_LIFETIME_SECS as f64) as u64
}

fn bad_expiry(name: &str) -> Failure {
    Failure::Unavailable(format!(
        "secret {name}: the token endpoint's expires_in is not a number of seconds"
    ))
}

/// An OAuth `error` (or token type) value fit to repeat: the RFC 6749 names are short
/// snake_case words; anything else is "other".
fn oauth_error_name(s: &str) -> &str {
    if !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        s
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::*;

    const CLIENT_SECRET: &str = "cs-9f8e7d6c5b4a39281706";
    const REFRESH_0: &str = "rt0-aaaaaaaaaaaaaaaaaaaaaaaa";
    const REFRESH_1: &str = "rt1-bbbbbbbbbbbbbbbbbbbbbbbb";

    struct TestClock(AtomicU64);
    impl Clock for TestClock {
        fn now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// What the fake saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        url: String,
        headers: Vec<(String, String)>,
        form: Vec<(String, String)>,
        max_answer: usize,
    }

    /// A scripted token endpoint: answers in order; optionally holds every request until
    /// released (to see concurrent callers wait).
    #[derive(Default)]
    struct Fake {
        answers: Mutex<VecDeque<Result<TokenAnswer, EnclaveError>>>,
        seen: Mutex<Vec<Seen>>,
        calls: AtomicUsize,
        gate: Option<tokio::sync::Semaphore>,
    }

    impl Fake {
        fn push(&self, status: u16, body: &str) {
            self.answers.lock().unwrap().push_back(Ok(TokenAnswer {
                status,
                content_type: Some("application/json; charset=utf-8".into()),
                body: Zeroizing::new(body.as_bytes().to_vec()),
            }));
        }
        fn push_err(&self, e: EnclaveError) {
            self.answers.lock().unwrap().push_back(Err(e));
        }
        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl TokenTransport for Fake {
        async fn post_form(
            &self,
            _usage: &SecretUsage,
            req: TokenRequest,
        ) -> Result<TokenAnswer, EnclaveError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if let Some(g) = &self.gate {
                let _permit = g.acquire().await.unwrap();
            }
            let form = url::form_urlencoded::parse(&req.body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            self.seen.lock().unwrap().push(Seen {
                url: req.url.clone(),
                headers: req
                    .headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_string()))
                    .collect(),
                form,
                max_answer: req.max_answer,
            });
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Err(refused("test.no_answer", "no scripted answer")))
        }
    }

    fn usage(grant: OAuthGrant, auth: ClientAuth) -> SecretUsage {
        SecretUsage {
            name: "linear".into(),
            upstream: "https://api.example.com".into(),
            path_prefix: "/".into(),
            header: "authorization".into(),
            format: "Bearer {}".into(),
            cas: vec![],
            expires_at: 2_000_000_000,
            credential_endpoints: vec![],
            kind: SecretKind::OAuth(OAuthUsage {
                token_endpoint: "https://idp.example.com/oauth/token".into(),
                client_id: "agent client".into(),
                grant,
                scope: Some("read write".into()),
                client_auth: auth,
            }),
        }
    }

    fn value_cc() -> Vec<u8> {
        format!(r#"{{"client_secret":"{CLIENT_SECRET}"}}"#).into_bytes()
    }

    fn value_rt() -> Vec<u8> {
        format!(r#"{{"client_secret":"{CLIENT_SECRET}","refresh_token":"{REFRESH_0}"}}"#)
            .into_bytes()
    }

    fn tokens(fake: Fake) -> (Arc<Fake>, Arc<TestClock>, Tokens<Fake>) {
        let fake = Arc::new(fake);
        let clock = Arc::new(TestClock(AtomicU64::new(1_000_000)));
        let t = Tokens::new(Arc::clone(&fake), Arc::clone(&clock) as Arc<dyn Clock>);
        (fake, clock, t)
    }

    fn code(e: &EnclaveError) -> &'static str {
        e.rule_code().unwrap_or("none")
    }

    /// No secret in any form in `text`.
    fn assert_clean(text: &str) {
        for s in [CLIENT_SECRET, REFRESH_0, REFRESH_1, "at-1", "at-2"] {
            assert!(!text.contains(s), "{s} leaked into {text}");
        }
    }

    #[tokio::test]
    async fn client_credentials_basic_is_fetched_once_and_cached_until_the_margin() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        fake.push(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        let s = &fake.seen()[0];
        assert_eq!(s.url, "https://idp.example.com/oauth/token");
        assert_eq!(s.max_answer, MAX_TOKEN_ANSWER);
        // RFC 6749 §2.3.1: id and secret form-encoded ("agent client" -> "agent+client").
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("agent+client:{CLIENT_SECRET}"));
        assert!(s
            .headers
            .contains(&("authorization".into(), format!("Basic {basic}"))));
        assert!(s
            .headers
            .contains(&("accept".into(), "application/json".into())));
        assert_eq!(
            s.form,
            vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "read write".into())
            ]
        );
        // One second before the margin: still cached; at it: refreshed.
        clock.0.fetch_add(3600 - 60 - 1, Ordering::SeqCst);
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        clock.0.fetch_add(1, Ordering::SeqCst);
        fake.push(
            200,
            r#"{"access_token":"at-2","token_type":"bearer","expires_in":"3600"}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-2"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn post_auth_puts_the_client_in_the_form_and_sends_no_authorization() {
        let (fake, _clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Post);
        fake.push(200, r#"{"access_token":"at-1","token_type":"Bearer"}"#);
        t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        let s = &fake.seen()[0];
        assert!(s.headers.iter().all(|(k, _)| k != "authorization"));
        assert!(s
            .form
            .contains(&("client_id".into(), "agent client".into())));
        assert!(s
            .form
            .contains(&("client_secret".into(), CLIENT_SECRET.into())));
    }

    #[tokio::test]
    async fn a_rotated_refresh_token_replaces_the_sealed_one() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::RefreshToken, ClientAuth::Basic);
        fake.push(
            200,
            &format!(r#"{{"access_token":"at-1","token_type":"Bearer","expires_in":600,"refresh_token":"{REFRESH_1}"}}"#),
        );
        fake.push(
            200,
            r#"{"access_token":"at-2","token_type":"Bearer","expires_in":600}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_rt())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        clock.0.fetch_add(600, Ordering::SeqCst);
        assert_eq!(
            t.credential("linear", "d1", &u, &value_rt())
                .await
                .unwrap()
                .as_str(),
            "at-2"
        );
        let seen = fake.seen();
        let rt = |i: usize| {
            seen[i]
                .form
                .iter()
                .find(|(k, _)| k == "refresh_token")
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            seen[0].form[0],
            ("grant_type".into(), "refresh_token".into())
        );
        assert_eq!(rt(0).as_deref(), Some(REFRESH_0));
        assert_eq!(
            rt(1).as_deref(),
            Some(REFRESH_1),
            "the rotated token is used next"
        );
        // A re-installed secret (another sealed value) starts from its own refresh token.
        clock.0.fetch_add(600, Ordering::SeqCst);
        fake.push(
            200,
            r#"{"access_token":"at-3","token_type":"Bearer","expires_in":600}"#,
        );
        t.credential("linear", "d2", &u, &value_rt()).await.unwrap();
        assert_eq!(fake.seen()[2].form[1].1, REFRESH_0);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_refresh() {
        let fake = Fake {
            gate: Some(tokio::sync::Semaphore::new(0)),
            ..Fake::default()
        };
        let (fake, _clock, t) = tokens(fake);
        let t = Arc::new(t);
        fake.push(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":600}"#,
        );
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (t, u) = (Arc::clone(&t), u.clone());
            tasks.push(tokio::spawn(async move {
                t.credential("linear", "d1", &u, &value_cc())
                    .await
                    .map(|z| z.to_string())
            }));
        }
        // The first request is in flight (held at the gate); let it finish.
        while fake.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        fake.gate.as_ref().unwrap().add_permits(16);
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "at-1");
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "one refresh for 16 callers"
        );
    }

    #[tokio::test]
    async fn invalid_grant_is_refused_with_its_code_and_not_retried_until_reinstalled() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::RefreshToken, ClientAuth::Basic);
        fake.push(
            400,
            &format!(
                r#"{{"error":"invalid_grant","error_description":"token {REFRESH_0} was used"}}"#
            ),
        );
        let e = t
            .credential("linear", "d1", &u, &value_rt())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_REFUSED);
        assert!(e.to_string().contains("invalid_grant"), "{e}");
        assert_clean(&e.to_string());
        assert_clean(&format!("{e:?}"));
        clock.0.fetch_add(3600, Ordering::SeqCst);
        let e = t
            .credential("linear", "d1", &u, &value_rt())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_REFUSED);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1, "no second request");
        fake.push(200, r#"{"access_token":"at-1","token_type":"Bearer"}"#);
        t.credential("linear", "d2", &u, &value_rt()).await.unwrap();
        // invalid_client too.
        let (fake, _clock, t) = tokens(Fake::default());
        fake.push(401, r#"{"error":"invalid_client"}"#);
        let e = t
            .credential(
                "linear",
                "d1",
                &usage(OAuthGrant::ClientCredentials, ClientAuth::Basic),
                &value_cc(),
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_REFUSED);
    }

    #[tokio::test]
    async fn transport_failures_are_held_briefly_and_a_valid_cached_token_still_serves() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        fake.push(503, "upstream down");
        let e = t
            .credential("linear", "d1", &u, &value_cc())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_UNAVAILABLE);
        assert!(e.to_string().contains("HTTP 503"), "{e}");
        let e = t
            .credential("linear", "d1", &u, &value_cc())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_UNAVAILABLE);
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            1,
            "held for FAILURE_HOLD_SECS"
        );
        clock.0.fetch_add(FAILURE_HOLD_SECS, Ordering::SeqCst);
        fake.push(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":600}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        // Past the margin the refresh fails: the token, still valid, is used meanwhile.
        clock.0.fetch_add(600 - 30, Ordering::SeqCst);
        fake.push_err(refused("secret.tls", "certificate refused"));
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-1"
        );
        // Once it has expired (and the hold is over), the next failure is the answer.
        clock.0.fetch_add(30, Ordering::SeqCst);
        fake.push_err(refused("secret.tls", "certificate refused"));
        let e = t
            .credential("linear", "d1", &u, &value_cc())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_UNAVAILABLE);
        assert!(e.to_string().contains("secret.tls"), "{e}");
    }

    #[tokio::test]
    async fn unusable_answers_are_refused_without_echoing_them() {
        let cases: [(u16, &str, &str); 9] = [
            (200, r#"{"token_type":"Bearer"}"#, OAUTH_UNAVAILABLE),
            (
                200,
                r#"{"access_token":"at-1\r\nX-Evil: 1","token_type":"Bearer"}"#,
                OAUTH_UNAVAILABLE,
            ),
            (
                200,
                r#"{"access_token":"at 1","token_type":"Bearer"}"#,
                OAUTH_UNAVAILABLE,
            ),
            (
                200,
                r#"{"access_token":"at-1","token_type":"DPoP"}"#,
                OAUTH_TOKEN_TYPE,
            ),
            (
                200,
                r#"{"access_token":"at-1","expires_in":-5}"#,
                OAUTH_UNAVAILABLE,
            ),
            (
                200,
                r#"{"access_token":"at-1","expires_in":"soon"}"#,
                OAUTH_UNAVAILABLE,
            ),
            (
                200,
                r#"{"access_token":"at-1","access_token":"at-2"}"#,
                OAUTH_UNAVAILABLE,
            ),
            (
                200,
                "access_token=at-1&token_type=bearer",
                OAUTH_UNAVAILABLE,
            ),
            (302, r#"{"access_token":"at-1"}"#, OAUTH_UNAVAILABLE),
        ];
        for (status, body, want) in cases {
            let (fake, _clock, t) = tokens(Fake::default());
            fake.push(status, body);
            let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
            let e = t
                .credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap_err();
            assert_eq!(code(&e), want, "{body}: {e}");
            assert_clean(&e.to_string());
        }
        // Oversized (a transport that ignored max_answer).
        let (fake, _clock, t) = tokens(Fake::default());
        let big = format!(
            r#"{{"access_token":"at-1","pad":"{}"}}"#,
            "x".repeat(MAX_TOKEN_ANSWER)
        );
        fake.push(200, &big);
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        let e = t
            .credential("linear", "d1", &u, &value_cc())
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_UNAVAILABLE);
        assert!(e.to_string().contains("more than"), "{e}");
    }

    /// Every truncation and every byte flip of a good answer and a good sealed value: a typed
    /// answer each time, never a panic, and an error never quotes the token.
    #[test]
    fn truncated_and_flipped_answers_never_panic() {
        let good = br#"{"access_token":"at-1abcdef","token_type":"Bearer","expires_in":3600,"refresh_token":"rt1-bbbbbbbbbbbbbbbbbbbbbbbb","scope":"a b"}"#;
        let check = |body: &[u8], status: u16| {
            let a = TokenAnswer {
                status,
                content_type: Some("application/json".into()),
                body: Zeroizing::new(body.to_vec()),
            };
            if let Err(Failure::Refused(m) | Failure::Unavailable(m) | Failure::TokenType(m)) =
                read_answer("x", &a)
            {
                assert!(!m.contains("at-1abcdef") && !m.contains(REFRESH_1), "{m}");
            }
        };
        for cut in 0..=good.len() {
            check(&good[..cut], 200);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.to_vec();
                b[i] ^= 1 << bit;
                check(&b, 200);
                check(&b, 400);
            }
        }
        let value = value_rt();
        for cut in 0..=value.len() {
            let _ = Credentials::parse(&value[..cut], OAuthGrant::RefreshToken);
        }
        for i in 0..value.len() {
            let mut b = value.clone();
            b[i] ^= 0x20;
            if let Err(e) = Credentials::parse(&b, OAuthGrant::RefreshToken) {
                assert_clean(&e.to_string());
            }
        }
    }

    #[tokio::test]
    async fn lifetimes_default_and_are_capped() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        fake.push(200, r#"{"access_token":"at-1","token_type":"Bearer"}"#);
        t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        clock.0.fetch_add(
            DEFAULT_LIFETIME_SECS - refresh_margin(DEFAULT_LIFETIME_SECS),
            Ordering::SeqCst,
        );
        fake.push(
            200,
            r#"{"access_token":"at-2","token_type":"Bearer","expires_in":99999999}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-2"
        );
        clock.0.fetch_add(MAX_LIFETIME_SECS - 60, Ordering::SeqCst);
        fake.push(
            200,
            r#"{"access_token":"at-3","token_type":"Bearer","expires_in":3600.9}"#,
        );
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-3"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        assert_eq!(refresh_margin(3600), 60);
        assert_eq!(refresh_margin(60), 30);
        assert_eq!(refresh_margin(0), 0);
    }

    #[tokio::test]
    async fn a_token_the_upstream_refused_is_fetched_again_once() {
        let (fake, _clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        fake.push(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#,
        );
        fake.push(
            200,
            r#"{"access_token":"at-2","token_type":"Bearer","expires_in":3600}"#,
        );
        let at1 = t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        // The upstream answered 401 to at-1 (twice, e.g. two calls in flight).
        t.invalidate("linear", &at1).await;
        let at2 = t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        assert_eq!(at2.as_str(), "at-2");
        t.invalidate("linear", &at1).await;
        t.invalidate("other", "at-2").await;
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-2",
            "a stale refusal does not drop the new token"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unauthorized_answers_drop_the_token_at_most_once_per_interval() {
        let (fake, clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        for i in 1..=3 {
            fake.push(
                200,
                &format!(r#"{{"access_token":"at-{i}","token_type":"Bearer","expires_in":3600}}"#),
            );
        }
        let at1 = t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        t.invalidate("linear", &at1).await;
        let at2 = t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        assert_eq!(at2.as_str(), "at-2");
        // Ten more 401s within the interval: the token stays, no token request.
        for _ in 0..10 {
            clock.0.fetch_add(2, Ordering::SeqCst);
            t.invalidate("linear", &at2).await;
            assert_eq!(
                t.credential("linear", "d1", &u, &value_cc())
                    .await
                    .unwrap()
                    .as_str(),
                "at-2"
            );
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        // After the interval, a 401 drops it again.
        clock
            .0
            .fetch_add(INVALIDATE_INTERVAL_SECS, Ordering::SeqCst);
        t.invalidate("linear", &at2).await;
        assert_eq!(
            t.credential("linear", "d1", &u, &value_cc())
                .await
                .unwrap()
                .as_str(),
            "at-3"
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn the_secret_expiry_bounds_every_token() {
        let (fake, clock, t) = tokens(Fake::default());
        let mut u = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        u.expires_at = 1_000_100;
        fake.push(
            200,
            r#"{"access_token":"at-1","token_type":"Bearer","expires_in":3600}"#,
        );
        t.credential("linear", "d1", &u, &value_cc()).await.unwrap();
        clock.0.store(1_000_100, Ordering::SeqCst);
        let e = t
            .credential("linear", "d1", &u, &value_cc())
            .await
            .unwrap_err();
        assert_eq!(code(&e), EXPIRED);
    }

    #[tokio::test]
    async fn bad_sealed_values_and_static_secrets_are_refused_without_a_request() {
        let (fake, _clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::RefreshToken, ClientAuth::Basic);
        for v in [
            value_cc(),                                                         // no refresh token
            b"not json".to_vec(),                                               // not JSON
            format!(r#"{{"refresh_token":"{REFRESH_0}","x":1}}"#).into_bytes(), // unknown field
            br#"{"refresh_token":""}"#.to_vec(),                                // empty
            br#"{"refresh_token":"a\nb"}"#.to_vec(),                            // control character
            vec![b' '; MAX_VALUE_LEN + 1],                                      // too large
        ] {
            let e = t.credential("linear", "d1", &u, &v).await.unwrap_err();
            assert_eq!(code(&e), OAUTH_VALUE, "{e}");
            assert_clean(&e.to_string());
            t.forget("linear");
        }
        let e = t
            .credential(
                "linear",
                "d1",
                &usage(OAuthGrant::ClientCredentials, ClientAuth::Basic),
                br#"{"refresh_token":"x"}"#,
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), OAUTH_VALUE);
        let mut st = usage(OAuthGrant::ClientCredentials, ClientAuth::Basic);
        st.kind = SecretKind::Static;
        let e = t.credential("linear", "d1", &st, b"key").await.unwrap_err();
        assert_eq!(code(&e), OAUTH_USAGE);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_public_client_names_itself_in_the_form() {
        let (fake, _clock, t) = tokens(Fake::default());
        let u = usage(OAuthGrant::RefreshToken, ClientAuth::Basic);
        fake.push(200, r#"{"access_token":"at-1","token_type":"Bearer"}"#);
        let v = format!(r#"{{"refresh_token":"{REFRESH_0}"}}"#);
        t.credential("linear", "d1", &u, v.as_bytes())
            .await
            .unwrap();
        let s = &fake.seen()[0];
        assert!(s.headers.iter().all(|(k, _)| k != "authorization"));
        assert!(s
            .form
            .contains(&("client_id".into(), "agent client".into())));
    }
}
