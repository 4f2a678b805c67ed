//! How the enclave may use a sealed secret: the owner writes it, signs it with the sealed
//! value, and the enclave enforces it on every call.
//!
//! The usage travels as the exact bytes the owner signed; [`SecretUsage::validate`] is run by
//! the owner before sealing and by the enclave after opening, so both refuse the same usages.
use base64::Engine as _;
use cada_protocol::url::{HttpUrl, UrlPrefix};
use serde::{Deserialize, Serialize};

use crate::SecretsError;

/// Longest secret name (`[a-z0-9][a-z0-9_-]{0,63}`).
pub const MAX_NAME_LEN: usize = 64;
/// Most CA certificates a usage may name.
pub const MAX_CAS: usize = 8;
/// Largest CA certificate (DER bytes).
pub const MAX_CA_LEN: usize = 8 * 1024;
/// Most owner-marked credential endpoints.
pub const MAX_CREDENTIAL_ENDPOINTS: usize = 16;
/// Shortest credential the enclave injects, and shortest part of a `Basic` credential it
/// searches answers for: a shorter string cannot be told apart from a chance match, so an
/// upstream that echoes it could not be caught (see docs/secrets.md, "Calls").
pub const MIN_CREDENTIAL_LEN: usize = 12;
/// Longest header value format.
const MAX_FORMAT_LEN: usize = 256;
/// Longest URL (upstream, prefix, token endpoint, credential endpoint).
const MAX_URL_LEN: usize = 2048;
/// Longest OAuth client id or scope.
const MAX_OAUTH_FIELD_LEN: usize = 1024;

/// Headers a secret may never be injected as: they frame the request or route it, so an
/// injected value there would change which request is sent or where.
const FORBIDDEN_HEADERS: [&str; 12] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "expect",
    "content-encoding",
];

/// How the enclave may use one secret. Serialized with `deny_unknown_fields` (JSON, TOML,
/// CBOR alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretUsage {
    /// The secret's name, `[a-z0-9][a-z0-9_-]{0,63}` (contracts grant it by this name).
    pub name: String,
    /// The upstream origin, `https://host[:port]` in normal form (https only, no path).
    pub upstream: String,
    /// The path prefix under the upstream, in `cada_protocol::url` normal form, matched on
    /// segment boundaries (`/repos/acme/`, or `/` for the whole origin).
    pub path_prefix: String,
    /// The header the credential goes in, lower case (e.g. `authorization`).
    pub header: String,
    /// The header value, with `{}` exactly once where the credential goes
    /// (`Bearer {}`, `token {}`, `Basic {}`).
    pub format: String,
    /// Base64 (standard alphabet) DER certificates of the CAs that may sign the upstream's
    /// certificate; empty means the built-in Mozilla roots (webpki-roots).
    #[serde(default)]
    pub cas: Vec<String>,
    /// Unix seconds after which the enclave no longer uses the secret.
    pub expires_at: u64,
    /// Paths under `path_prefix` whose answers may carry credentials (token endpoints), which
    /// the owner explicitly allows; every other such endpoint is refused.
    #[serde(default)]
    pub credential_endpoints: Vec<String>,
    /// What the sealed value is.
    #[serde(default)]
    pub kind: SecretKind,
}

/// What a sealed value is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum SecretKind {
    /// The value is the credential itself (an API key, a token).
    #[default]
    #[serde(rename = "static")]
    Static,
    /// The value is JSON `{"client_secret": .., "refresh_token": ..?}`; the enclave obtains
    /// access tokens from the token endpoint itself.
    #[serde(rename = "oauth")]
    OAuth(OAuthUsage),
}

/// An OAuth upstream: where and how the enclave refreshes access tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthUsage {
    /// The token endpoint, an https URL in normal form.
    pub token_endpoint: String,
    /// The OAuth client id.
    pub client_id: String,
    /// Which grant the enclave uses.
    pub grant: OAuthGrant,
    /// The scope to ask for, if any.
    #[serde(default)]
    pub scope: Option<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// The OAuth grant the enclave uses at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// `grant_type=refresh_token` (the sealed value carries the refresh token).
    RefreshToken,
    /// `grant_type=client_credentials`.
    ClientCredentials,
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, the default).
    #[default]
    Basic,
    /// Form parameters (`client_secret_post`).
    Post,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SecretsError {
    SecretsError::UsageInvalid {
        field,
        reason: reason.into(),
    }
}

/// Whether `s` is a secret name: `[a-z0-9][a-z0-9_-]{0,63}`.
pub(crate) fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl SecretUsage {
    /// Checks every field against its rule; the first broken rule is refused with code
    /// `secret.usage_invalid`, naming the field.
    pub fn validate(&self) -> Result<(), SecretsError> {
        if !valid_name(&self.name) {
            return Err(invalid(
                "name",
                "a secret name is 1–64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
            ));
        }
        self.validate_upstream()?;
        let prefix = self.prefix()?;
        self.validate_header()?;
        self.validate_cas()?;
        if self.expires_at == 0 {
            return Err(invalid("expires_at", "give an expiry (unix seconds)"));
        }
        if self.credential_endpoints.len() > MAX_CREDENTIAL_ENDPOINTS {
            return Err(invalid(
                "credential_endpoints",
                format!("at most {MAX_CREDENTIAL_ENDPOINTS} endpoints"),
            ));
        }
        for p in &self.credential_endpoints {
            let url = self.url_of("credential_endpoints", p)?;
            if !prefix.matches(&url) {
                return Err(invalid(
                    "credential_endpoints",
                    format!("{p} is not under the path prefix {}", self.path_prefix),
                ));
            }
        }
        if let SecretKind::OAuth(o) = &self.kind {
            o.validate()?;
        }
        Ok(())
    }

    /// The upstream and path prefix as one [`UrlPrefix`] (segment-bounded matching).
    pub fn prefix(&self) -> Result<UrlPrefix, SecretsError> {
        if !self.path_prefix.starts_with('/') || self.path_prefix.len() > MAX_URL_LEN {
            return Err(invalid(
                "path_prefix",
                "the path prefix starts with '/' (use '/' for the whole origin)",
            ));
        }
        let whole = format!("{}{}", self.upstream, self.path_prefix);
        let prefix = UrlPrefix::parse(&whole)
            .map_err(|e| invalid("path_prefix", format!("{whole}: {e}")))?;
        if prefix.as_str() != whole {
            return Err(invalid(
                "path_prefix",
                format!("not in normal form; write {}", prefix.as_str()),
            ));
        }
        Ok(prefix)
    }

    /// Whether the secret has expired at `now` (unix seconds): it is usable while
    /// `now < expires_at`.
    pub fn expired_at(&self, now: u64) -> bool {
        now >= self.expires_at
    }

    /// The header value with the credential put in place of `{}`.
    pub fn header_value(&self, credential: &str) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(self.format.replacen("{}", credential, 1))
    }

    /// Whether the credential goes in as HTTP Basic (`Basic {}`, any case): the value is then
    /// the base64 of `user:password`.
    pub fn is_basic(&self) -> bool {
        self.format
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("basic "))
            && self.format[6..].trim() == "{}"
    }

    /// What answers are searched for when `credential` is injected under this usage: the
    /// credential itself and, for `Basic {}`, the decoded `user:password` and its secret part
    /// (the password, or the user name when the password is empty, as Stripe takes its key).
    /// Each is at least [`MIN_CREDENTIAL_LEN`] bytes, else `secret.usage_invalid` (field
    /// `value`): a shorter one could not be found reliably.
    pub fn searched_parts(
        &self,
        credential: &[u8],
    ) -> Result<Vec<zeroize::Zeroizing<Vec<u8>>>, SecretsError> {
        let short = |what: &str, len: usize| {
            invalid(
                "value",
                format!(
                    "{what} is {len} bytes; at least {MIN_CREDENTIAL_LEN} are needed so that the \
                     enclave can tell an upstream echoing it from a chance match"
                ),
            )
        };
        if credential.len() < MIN_CREDENTIAL_LEN {
            return Err(short("the credential", credential.len()));
        }
        let mut parts = vec![zeroize::Zeroizing::new(credential.to_vec())];
        if self.is_basic() {
            let b64 = base64::engine::general_purpose::STANDARD;
            let nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
            let decoded = zeroize::Zeroizing::new(
                b64.decode(credential)
                    .or_else(|_| nopad.decode(credential))
                    .map_err(|_| {
                        invalid(
                            "value",
                            "with the format `Basic {}` the value is the base64 of user:password",
                        )
                    })?,
            );
            let Some(colon) = decoded.iter().position(|b| *b == b':') else {
                return Err(invalid(
                    "value",
                    "with the format `Basic {}` the value is the base64 of user:password (no ':')",
                ));
            };
            let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
            let secret = if password.is_empty() {
                if user.len() < MIN_CREDENTIAL_LEN {
                    return Err(short(
                        "the Basic user name (the key, as the password is empty)",
                        user.len(),
                    ));
                }
                user
            } else {
                if password.len() < MIN_CREDENTIAL_LEN {
                    return Err(short("the Basic password", password.len()));
                }
                password
            };
            parts.push(zeroize::Zeroizing::new(secret.to_vec()));
            parts.push(zeroize::Zeroizing::new(decoded.to_vec()));
        }
        Ok(parts)
    }

    /// Refuses, at seal and at install, a sealed value the enclave could not search answers
    /// for ([`Self::searched_parts`]): a static credential, or a part of a `Basic` one,
    /// shorter than [`MIN_CREDENTIAL_LEN`] bytes (`secret.usage_invalid`, field `value`).
    /// OAuth values are not injected (the access tokens are, and are checked at each call).
    pub fn check_value(&self, value: &[u8]) -> Result<(), SecretsError> {
        match self.kind {
            SecretKind::Static => self.searched_parts(value).map(drop),
            SecretKind::OAuth(_) => Ok(()),
        }
    }

    fn validate_upstream(&self) -> Result<(), SecretsError> {
        if self.upstream.len() > MAX_URL_LEN {
            return Err(invalid("upstream", "too long"));
        }
        let url = HttpUrl::parse_normalized(&self.upstream)
            .map_err(|e| invalid("upstream", e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid(
                "upstream",
                "secrets are sent over https only; write https://host[:port]",
            ));
        }
        if url.origin() != self.upstream {
            return Err(invalid(
                "upstream",
                format!("give the origin only, in normal form: {}", url.origin()),
            ));
        }
        Ok(())
    }

    fn validate_header(&self) -> Result<(), SecretsError> {
        let h = self.header.as_bytes();
        if h.is_empty() || h.len() > 64 || !h.iter().all(|c| is_tchar(*c)) {
            return Err(invalid(
                "header",
                "a header name in lower case (e.g. authorization, x-api-key)",
            ));
        }
        if FORBIDDEN_HEADERS.contains(&self.header.as_str()) {
            return Err(invalid(
                "header",
                format!(
                    "{} frames or routes the request; choose another header",
                    self.header
                ),
            ));
        }
        if self.format.len() > MAX_FORMAT_LEN
            || has_control(&self.format)
            || self.format.matches("{}").count() != 1
        {
            return Err(invalid(
                "format",
                "a header value with {} exactly once and no control characters, e.g. \"Bearer {}\"",
            ));
        }
        Ok(())
    }

    fn validate_cas(&self) -> Result<(), SecretsError> {
        if self.cas.len() > MAX_CAS {
            return Err(invalid("cas", format!("at most {MAX_CAS} CA certificates")));
        }
        for (i, ca) in self.cas.iter().enumerate() {
            if ca.len() > MAX_CA_LEN * 2 {
                return Err(invalid("cas", format!("CA {i} is too large")));
            }
            let der = base64::engine::general_purpose::STANDARD
                .decode(ca)
                .map_err(|_| invalid("cas", format!("CA {i} is not standard base64 of DER")))?;
            if der.len() > MAX_CA_LEN || der.first() != Some(&0x30) {
                return Err(invalid("cas", format!("CA {i} is not a DER certificate")));
            }
        }
        Ok(())
    }

    fn url_of(&self, field: &'static str, path: &str) -> Result<HttpUrl, SecretsError> {
        if !path.starts_with('/') || path.len() > MAX_URL_LEN {
            return Err(invalid(field, format!("{path}: a path starting with '/'")));
        }
        let whole = format!("{}{}", self.upstream, path);
        HttpUrl::parse_canonical(&whole).map_err(|e| invalid(field, format!("{whole}: {e}")))
    }
}

impl OAuthUsage {
    fn validate(&self) -> Result<(), SecretsError> {
        if self.token_endpoint.len() > MAX_URL_LEN {
            return Err(invalid("token_endpoint", "too long"));
        }
        let url = HttpUrl::parse_canonical(&self.token_endpoint)
            .map_err(|e| invalid("token_endpoint", e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid("token_endpoint", "an https URL"));
        }
        if self.client_id.is_empty()
            || self.client_id.len() > MAX_OAUTH_FIELD_LEN
            || has_control(&self.client_id)
        {
            return Err(invalid(
                "client_id",
                "1–1024 characters, no control characters",
            ));
        }
        if let Some(s) = &self.scope {
            if s.len() > MAX_OAUTH_FIELD_LEN || has_control(s) {
                return Err(invalid(
                    "scope",
                    "at most 1024 characters, no control characters",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage() -> SecretUsage {
        SecretUsage {
            name: "github".into(),
            upstream: "https://api.github.com".into(),
            path_prefix: "/repos/acme/".into(),
            header: "authorization".into(),
            format: "Bearer {}".into(),
            cas: vec![],
            expires_at: 2_000_000_000,
            credential_endpoints: vec![],
            kind: SecretKind::Static,
        }
    }

    fn field_of(e: &SecretsError) -> &'static str {
        match e {
            SecretsError::UsageInvalid { field, .. } => field,
            _ => "",
        }
    }

    #[test]
    fn a_good_usage_validates_and_round_trips() {
        let u = usage();
        u.validate().unwrap();
        let json = serde_json::to_string(&u).unwrap();
        assert_eq!(serde_json::from_str::<SecretUsage>(&json).unwrap(), u);
        assert!(!u.expired_at(1_999_999_999));
        assert!(u.expired_at(2_000_000_000));
        assert_eq!(u.header_value("abc").as_str(), "Bearer abc");
    }

    #[test]
    fn toml_usage_with_oauth() {
        let t = r#"
name = "linear"
upstream = "https://api.linear.app"
path_prefix = "/"
header = "authorization"
format = "Bearer {}"
expires_at = 2000000000
[kind.oauth]
token_endpoint = "https://api.linear.app/oauth/token"
client_id = "abc"
grant = "refresh_token"
"#;
        let u: SecretUsage = toml::from_str(t).unwrap();
        u.validate().unwrap();
        match &u.kind {
            SecretKind::OAuth(o) => {
                assert_eq!(o.grant, OAuthGrant::RefreshToken);
                assert_eq!(o.client_auth, ClientAuth::Basic);
            }
            SecretKind::Static => panic!("oauth expected"),
        }
        let t2 = "name='a'\nupstream='https://x.example'\npath_prefix='/'\nheader='x-api-key'\nformat='{}'\nexpires_at=5\nkind='static'\n";
        toml::from_str::<SecretUsage>(t2)
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v = serde_json::to_value(usage()).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<SecretUsage>(v).is_err());
    }

    #[test]
    fn each_broken_rule_names_its_field() {
        type Edit = Box<dyn Fn(&mut SecretUsage)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("name", Box::new(|u| u.name = "GitHub".into())),
            ("name", Box::new(|u| u.name = "-x".into())),
            ("name", Box::new(|u| u.name = "a".repeat(65))),
            ("name", Box::new(|u| u.name = String::new())),
            (
                "upstream",
                Box::new(|u| u.upstream = "http://api.github.com".into()),
            ),
            (
                "upstream",
                Box::new(|u| u.upstream = "https://api.github.com/x".into()),
            ),
            (
                "upstream",
                Box::new(|u| u.upstream = "https://API.github.com".into()),
            ),
            (
                "upstream",
                Box::new(|u| u.upstream = "https://u@api.github.com".into()),
            ),
            ("path_prefix", Box::new(|u| u.path_prefix = "repos/".into())),
            (
                "path_prefix",
                Box::new(|u| u.path_prefix = "/repos/../admin/".into()),
            ),
            (
                "path_prefix",
                Box::new(|u| u.path_prefix = "/repos%2facme/".into()),
            ),
            ("path_prefix", Box::new(|u| u.path_prefix = "/a?b".into())),
            ("header", Box::new(|u| u.header = "Authorization".into())),
            ("header", Box::new(|u| u.header = "host".into())),
            ("header", Box::new(|u| u.header = "x y".into())),
            ("format", Box::new(|u| u.format = "Bearer".into())),
            ("format", Box::new(|u| u.format = "{} {}".into())),
            (
                "format",
                Box::new(|u| u.format = "Bearer {}\r\nX: y".into()),
            ),
            ("cas", Box::new(|u| u.cas = vec!["!!".into()])),
            ("cas", Box::new(|u| u.cas = vec!["AAAA".into()])),
            ("expires_at", Box::new(|u| u.expires_at = 0)),
            (
                "credential_endpoints",
                Box::new(|u| u.credential_endpoints = vec!["/orgs/x/token".into()]),
            ),
            (
                "token_endpoint",
                Box::new(|u| {
                    u.kind = SecretKind::OAuth(OAuthUsage {
                        token_endpoint: "http://idp.example/token".into(),
                        client_id: "c".into(),
                        grant: OAuthGrant::ClientCredentials,
                        scope: None,
                        client_auth: ClientAuth::Post,
                    });
                }),
            ),
            (
                "client_id",
                Box::new(|u| {
                    u.kind = SecretKind::OAuth(OAuthUsage {
                        token_endpoint: "https://idp.example/token".into(),
                        client_id: String::new(),
                        grant: OAuthGrant::ClientCredentials,
                        scope: None,
                        client_auth: ClientAuth::Post,
                    });
                }),
            ),
        ];
        for (field, f) in cases {
            let mut u = usage();
            f(&mut u);
            let e = u.validate().expect_err(field);
            assert_eq!(e.code(), "secret.usage_invalid");
            assert_eq!(field_of(&e), field, "{e}");
        }
    }

    #[test]
    fn credential_endpoint_under_prefix_is_accepted() {
        let mut u = usage();
        u.credential_endpoints = vec!["/repos/acme/tokens".into()];
        u.validate().unwrap();
    }

    #[test]
    fn values_too_short_to_be_searched_for_are_refused() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let u = usage();
        u.check_value(b"ghp_0123456789").unwrap();
        let e = u.check_value(b"Zq7x9").unwrap_err();
        assert_eq!((e.code(), field_of(&e)), ("secret.usage_invalid", "value"));
        assert!(!e.to_string().contains("Zq7x9"), "{e}");
        let mut basic = usage();
        basic.format = "Basic {}".into();
        // Stripe: the key as the user name, an empty password.
        let parts = basic
            .searched_parts(b64("sk_live_0123456789:").as_bytes())
            .unwrap();
        assert!(parts.iter().any(|p| p.as_slice() == b"sk_live_0123456789"));
        assert!(parts.iter().any(|p| p.as_slice() == b"sk_live_0123456789:"));
        // A name and a long password: the password is searched for, not the name.
        let parts = basic
            .searched_parts(b64("octocat:pw-0123456789ab").as_bytes())
            .unwrap();
        assert!(parts.iter().any(|p| p.as_slice() == b"pw-0123456789ab"));
        assert!(!parts.iter().any(|p| p.as_slice() == b"octocat"));
        for bad in [
            b64("sk_live_1:"),
            b64("octocat-enterprise:hunter2"),
            b64("no-colon-in-this-value"),
            "not base64 at all!!".to_owned(),
        ] {
            let e = basic.check_value(bad.as_bytes()).expect_err(&bad);
            assert_eq!(field_of(&e), "value", "{e}");
        }
        basic.format = "basic {}".into();
        assert!(basic.is_basic());
        basic.format = "Basic x{}".into();
        assert!(!basic.is_basic());
    }
}
