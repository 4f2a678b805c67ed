//! The token exchange itself, apart from HTTP: reading the RFC 8693 form, and minting the
//! RFC 9068 access token once the one decision accepted the exchange.
use cada_attestation_verifier::decide::Accepted;
use cada_attestation_verifier::UnixTime;
use cada_protocol::access_token::{
    measurement_digest, AccessTokenClaims, Actor, CadaAt, Confirmation, GRANT_TYPE_TOKEN_EXCHANGE,
    MAX_LIFETIME_SECS, TOKEN_TYPE_CONTRACT, TOKEN_TYPE_URI, TYP,
};
use cada_protocol::{b64, jws};

use crate::keys::KeySet;
use crate::oauth::OAuthError;

/// The subject token types accepted for a trust contract: CADA's own, or the generic JWT
/// type (a contract is a JWT).
pub const SUBJECT_TOKEN_TYPES: &[&str] =
    &[TOKEN_TYPE_CONTRACT, "urn:ietf:params:oauth:token-type:jwt"];

/// Most scopes one token may carry.
const MAX_SCOPES: usize = 64;
/// Longest scope token.
const MAX_SCOPE_LEN: usize = 128;

/// A token request, read from its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The RFC 8707 resource.
    pub resource: String,
    /// The scopes asked for (empty: all the contract grants).
    pub scopes: Vec<String>,
    /// The trust contract (compact `vc+jwt`).
    pub subject_token: String,
}

/// Reads an `application/x-www-form-urlencoded` token request: `grant_type` must be the
/// token exchange, `subject_token` a trust contract of a [`SUBJECT_TOKEN_TYPES`] type,
/// exactly one `resource`; `scope` optional; `requested_token_type`, when given, the access
/// token type. Each parameter at most once (RFC 6749 §3.2); `actor_token` and
/// `authorization_details` are refused as not supported, rather than ignored.
pub fn parse_form(body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let mut grant_type = None;
    let mut subject_token = None;
    let mut subject_token_type = None;
    let mut resource = None;
    let mut scope = None;
    let mut requested = None;
    for (k, v) in url::form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut grant_type,
            "subject_token" => &mut subject_token,
            "subject_token_type" => &mut subject_token_type,
            "resource" => {
                if resource.is_some() {
                    return Err(OAuthError::bad(
                        "invalid_target",
                        "request.resource",
                        "one resource per token: send a separate request for each resource",
                    ));
                }
                &mut resource
            }
            "scope" => &mut scope,
            "requested_token_type" => &mut requested,
            "actor_token" | "actor_token_type" | "authorization_details" | "audience" => {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} is not supported by this STS: name the resource with \
                     `resource` and the scopes with `scope`"
                )))
            }
            // RFC 6749 §3.2: unknown parameters are ignored (client_id, for instance).
            _ => continue,
        };
        if slot.is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} appears more than once"
            )));
        }
        *slot = Some(v.into_owned());
    }
    match grant_type.as_deref() {
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(OAuthError::bad(
                "unsupported_grant_type",
                "request.grant_type",
                format!(
                    "grant_type {:?} is not supported: use {GRANT_TYPE_TOKEN_EXCHANGE}",
                    clip(other)
                ),
            ))
        }
        None => return Err(OAuthError::invalid_request("grant_type is missing")),
    }
    let subject_token = subject_token.ok_or_else(|| {
        OAuthError::invalid_request(
            "subject_token is missing: send the owner's trust contract (the vc+jwt from \
             cada-owner grant)",
        )
    })?;
    match subject_token_type.as_deref() {
        Some(t) if SUBJECT_TOKEN_TYPES.contains(&t) => {}
        Some(t) => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {:?} is not accepted: use {TOKEN_TYPE_CONTRACT}",
                clip(t)
            )))
        }
        None => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type is missing: use {TOKEN_TYPE_CONTRACT}"
            )))
        }
    }
    if let Some(t) = requested.as_deref() {
        if t != TOKEN_TYPE_URI {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type {:?} is not issued: this STS issues {TOKEN_TYPE_URI}",
                clip(t)
            )));
        }
    }
    let resource = resource.ok_or_else(|| {
        OAuthError::bad(
            "invalid_target",
            "request.resource",
            "resource is missing: name the absolute URL the token is for (RFC 8707)",
        )
    })?;
    // RFC 8707 §2: the resource "MUST NOT include a query component" (nor a fragment). The
    // token's `aud` is the resource as written, and the audience rules drop a query, so a
    // query would be carried in the token but never matched.
    if resource.contains(['?', '#']) {
        return Err(OAuthError::bad(
            "invalid_target",
            "request.resource",
            format!(
                "resource {:?} carries a query or fragment, which a resource must not (RFC \
                 8707 §2): name the URL without it",
                clip(&resource)
            ),
        ));
    }
    let scopes = parse_scope(scope.as_deref().unwrap_or(""))?;
    Ok(TokenRequest {
        resource,
        scopes,
        subject_token,
    })
}

/// Splits a `scope` value (RFC 6749 §3.3), refusing bad characters, duplicates and excess.
fn parse_scope(scope: &str) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let ok = s.len() <= MAX_SCOPE_LEN
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if !ok {
            return Err(OAuthError::bad(
                "invalid_scope",
                "request.scope",
                format!("{:?} is not a scope token (RFC 6749 §3.3)", clip(s)),
            ));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
        if out.len() > MAX_SCOPES {
            return Err(OAuthError::bad(
                "invalid_scope",
                "request.scope",
                format!("more than {MAX_SCOPES} scopes"),
            ));
        }
    }
    Ok(out)
}

/// The STS's identity and signing keys: mints tokens and checks its own.
#[derive(Debug)]
pub struct Minter {
    /// The issuer identifier (`iss`, and the base of the endpoints).
    pub issuer: String,
    /// Token lifetime (at most [`MAX_LIFETIME_SECS`]).
    pub ttl_secs: u64,
    /// Signing keys.
    pub keys: KeySet,
}

impl Minter {
    /// The token endpoint URL: the `htu` of token-endpoint proofs.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer.trim_end_matches('/'))
    }

    /// Mints the access token for an accepted exchange: `scopes` asked for (all the
    /// contract grants when empty), `exp` = the earliest of now + TTL, the contract's end
    /// and the evidence's end.
    pub fn mint(
        &self,
        accepted: &Accepted,
        req: &TokenRequest,
        now: UnixTime,
    ) -> Result<(String, AccessTokenClaims), OAuthError> {
        let Some(contract) = &accepted.contract else {
            return Err(OAuthError::bad(
                "invalid_grant",
                "contract.missing",
                "no contract was checked for this exchange",
            ));
        };
        let now_s = now.as_secs();
        let exp = (now_s + self.ttl_secs.min(MAX_LIFETIME_SECS))
            .min(now_s + contract.remaining_secs)
            .min(accepted.key.expires.as_secs());
        if exp <= now_s {
            return Err(OAuthError::bad(
                "invalid_grant",
                "token.lifetime",
                "the contract or the evidence ends now: no token can outlive them (renew the \
                 evidence or ask the owner for a new contract)",
            ));
        }
        let scopes = if req.scopes.is_empty() {
            contract.scopes.clone()
        } else {
            req.scopes.clone()
        };
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: accepted.key.did.clone(),
            client_id: accepted.key.did.clone(),
            aud: req.resource.clone(),
            scope: scopes.join(" "),
            iat: now_s,
            exp,
            jti: random_id(),
            cnf: Confirmation {
                jkt: accepted.key.jkt.clone(),
            },
            act: Actor {
                sub: contract.owner.clone(),
            },
            cada: CadaAt {
                platform: accepted.key.platform.to_string(),
                msr: measurement_digest(&accepted.key.measurements),
                att: accepted.key.att.clone(),
                dtc: contract.digest.clone(),
                tools: contract.tools.clone(),
                resources: contract.resources.clone(),
                prompts: contract.prompts.clone(),
                required_ctx: contract.required_ctx.clone(),
                dtc_exp: None,
            },
            authorization_details: None,
        };
        let token = self
            .keys
            .active()
            .sign_jwt(TYP, &claims)
            .map_err(|e| OAuthError {
                status: 500,
                error: "server_error",
                description: format!("[sts.sign] {e}"),
            })?;
        if token.len() > cada_protocol::access_token::MAX_TOKEN_LEN {
            return Err(OAuthError::bad(
                "invalid_scope",
                "token.too_large",
                format!(
                    "the token would be {} bytes, more than resource servers accept ({}): ask \
                     for fewer scopes",
                    token.len(),
                    cada_protocol::access_token::MAX_TOKEN_LEN
                ),
            ));
        }
        Ok((token, claims))
    }

    /// Reads one of this STS's own tokens: signature by one of its keys, `typ`, `iss`.
    /// Expiry is the caller's (introspection reports an expired token as inactive).
    pub fn read_own(&self, token: &str) -> Result<AccessTokenClaims, String> {
        if token.len() > cada_protocol::access_token::MAX_TOKEN_LEN {
            return Err("token too large".into());
        }
        let parts = jws::split_compact(
            "access token",
            token,
            cada_protocol::access_token::MAX_TOKEN_LEN,
        )
        .map_err(|e| e.to_string())?;
        let header: serde_json::Value =
            serde_json::from_slice(&parts.header).map_err(|e| format!("header: {e}"))?;
        if header["typ"] != TYP || header["alg"] != "ES256" {
            return Err("not an access token of this STS (typ at+jwt, alg ES256)".into());
        }
        let kid = header["kid"].as_str().ok_or("no kid")?;
        let key = self
            .keys
            .by_kid(kid)
            .ok_or("signed by a key this STS does not hold")?;
        if !key.verify(parts.signing_input.as_bytes(), &parts.signature) {
            return Err("bad signature".into());
        }
        let claims: AccessTokenClaims =
            serde_json::from_slice(&parts.payload).map_err(|e| format!("claims: {e}"))?;
        if claims.iss != self.issuer {
            return Err("issued by another STS".into());
        }
        Ok(claims)
    }
}

/// 128 random bits, base64url.
pub fn random_id() -> String {
    let mut b = [0u8; 16];
    // aws-lc-rs's system RNG does not fail on supported platforms; an all-zero id would
    // only make this token's revocation collide, never grant anything.
    let _ = aws_lc_rs::rand::fill(&mut b);
    b64::encode(b)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    }

    type Pairs = Vec<(&'static str, &'static str)>;

    fn good() -> Pairs {
        vec![
            ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
            ("subject_token", "a.b.c"),
            ("subject_token_type", TOKEN_TYPE_CONTRACT),
            ("resource", "https://api.example.com/v1"),
            ("scope", "orders:read  orders:write orders:read"),
        ]
    }

    #[test]
    fn a_token_exchange_form_is_read() {
        let r = parse_form(&form(&good())).unwrap();
        assert_eq!(r.resource, "https://api.example.com/v1");
        assert_eq!(r.scopes, ["orders:read", "orders:write"]);
        assert_eq!(r.subject_token, "a.b.c");
        let mut g = good();
        g.retain(|(k, _)| *k != "scope");
        g.push(("client_id", "ignored"));
        assert!(parse_form(&form(&g)).unwrap().scopes.is_empty());
    }

    #[test]
    fn bad_forms_are_refused_with_their_error() {
        let err = |edit: &dyn Fn(&mut Pairs)| {
            let mut g = good();
            edit(&mut g);
            parse_form(&form(&g)).unwrap_err()
        };
        assert_eq!(
            err(&|g| g[0].1 = "client_credentials").error,
            "unsupported_grant_type"
        );
        assert_eq!(
            err(&|g| {
                g.remove(0);
            })
            .error,
            "invalid_request"
        );
        assert_eq!(
            err(&|g| {
                g.remove(1);
            })
            .error,
            "invalid_request"
        );
        assert_eq!(err(&|g| g[2].1 = "urn:x").error, "invalid_request");
        assert_eq!(
            err(&|g| {
                g.remove(3);
            })
            .error,
            "invalid_target"
        );
        assert_eq!(
            err(&|g| g.push(("resource", "https://other.example/"))).error,
            "invalid_target"
        );
        assert_eq!(err(&|g| g.push(("scope", "x"))).error, "invalid_request");
        // Issue 21 item 11: a resource with a query (or fragment) is refused, not turned
        // into an `aud` with a query.
        for r in [
            "http://127.0.0.1:9400/?q=1",
            "https://api.example.com/v1?",
            "https://api.example.com/v1#x",
        ] {
            let e = err(&|g| g[3].1 = r);
            assert_eq!(
                (e.error, e.code()),
                ("invalid_target", "request.resource"),
                "{r}"
            );
            assert!(e.description.contains("RFC 8707"), "{e:?}");
        }
        assert_eq!(err(&|g| g[4].1 = "bad\"scope").error, "invalid_scope");
        assert_eq!(
            err(&|g| g.push(("actor_token", "t"))).error,
            "invalid_request"
        );
        assert_eq!(
            err(&|g| g.push((
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:id_token"
            )))
            .error,
            "invalid_request"
        );
    }
}
