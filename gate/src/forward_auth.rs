//! Forward auth, for those who already run a reverse proxy: the proxy asks the gate about
//! each request and forwards it itself. The gate answers 200 with the `CADA-Agent` headers
//! (copy them upstream) or the same refusal it would answer as a proxy.
//!
//! * nginx `auth_request /_cada/auth;` with `proxy_set_header X-Original-Method
//!   $request_method; proxy_set_header X-Original-URI $request_uri;` (and `X-Forwarded-Proto`
//!   / `X-Forwarded-Host`), and `proxy_pass` without a URI part, so that nginx forwards the
//!   very target it reported (`docs/gate.md` has the tested configuration);
//! * Traefik `forwardAuth` (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`);
//! * Envoy `ext_authz` (HTTP service) with `path_prefix: /_cada/auth`: the check request
//!   carries the original method, path (after the prefix) and headers.
//!
//! Only peers listed in `--trusted-proxy` may ask (others: 403), since the answer trusts the
//! URL they report. That URL is held to the same normal form as a proxied target
//! ([`crate::target`]); when it arrives from several sources they must agree.
//!
//! The body does not travel with these checks, so the gate cannot read the calls it makes.
//! Where calls are governed ([`cada_attestation_verifier::calls`]: the audience names
//! owners, whose contracts grant tools, resources and prompts, or an access token carries
//! such grants), the proof must name its calls (`cada.mcp`, checked against the grants by
//! the library's decision) and the body's digest (`cada.bd`), and the request's
//! `Content-Digest` must be that digest: the proxy passes it on with the body, so the
//! server can check that the body is the one the proof names. The rule is the library's
//! ([`cada_attestation_verifier::calls::require_named_calls`]), checked here first to answer
//! with this module's codes, and again by the pipeline on what the decision accepts. `Mcp-Method`/`Mcp-Name`, sent with a proof that names its calls, must name its
//! one call. A policy with `require_body_digest` refuses every check (the gate never sees
//! the body: use it as the proxy instead).
//!
//! The headers that tell the server how to read the body are held to proxy mode's rule
//! ([`cada_protocol::mcp::headers`]): `Content-Type` exactly `application/json` (or with
//! `charset=utf-8`) whenever sent, and required when the proof names a body;
//! `Content-Encoding` absent or `identity`; no `Mcp-Param-*` header (the gate cannot compare
//! it with a body it does not see).
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cada_attestation_verifier::calls;
use cada_attestation_verifier::decide::RequestBody;
use cada_attestation_verifier::VerifyError;
use cada_protocol::mcp;
use cada_protocol::url::HttpUrl;

use crate::metadata::metadata_url;
use crate::proxy::{
    audit_early, custody_headers, decide, header_pairs, header_status, identity_headers,
    is_identity_header, is_lookalike, routing_headers_match, single, Checked, IDENTITY_HEADER,
    LOOKALIKE_HEADER, OVERRIDE_HEADER, OVERRIDE_HEADERS,
};
use crate::refusal::Refused;
use crate::server::GateState;
use crate::target;

/// Stable code: the original method or URI arrived from several sources that disagree.
pub const CONFLICT: &str = "forward_auth.conflict";
/// Stable code: no original URI was reported.
pub const NO_URI: &str = "forward_auth.uri";
/// Stable code: calls are governed here, but the proof names no calls or no body digest.
pub const CALLS_REQUIRED: &str = "forward_auth.calls_required";
/// Stable code: `Content-Digest` is missing or is not the proof's `cada.bd`.
pub const CONTENT_DIGEST: &str = "forward_auth.content_digest";

/// The one value the present `sources` agree on (each the single value of a header, or a
/// value the check request itself carries); a refusal when they disagree. Also the rule for
/// the values of one `X-Forwarded-*` header ([`crate::public`]).
pub(crate) fn agreed<'a>(sources: &[(&str, Option<&'a str>)]) -> Result<Option<&'a str>, Refused> {
    let present: Vec<(&str, &str)> = sources
        .iter()
        .filter_map(|(n, v)| v.map(|v| (*n, v)))
        .collect();
    match present.split_first() {
        None => Ok(None),
        Some(((_, first), rest)) => match rest.iter().find(|(_, v)| v != first) {
            None => Ok(Some(*first)),
            Some((other, v)) => Err(Refused::gate(
                StatusCode::BAD_REQUEST,
                CONFLICT,
                format!(
                    "{} says {:?} but {other} says {:?}: the proxy must report one request (a \
                     client may have sent one of these headers itself)",
                    present[0].0,
                    first.chars().take(200).collect::<String>(),
                    v.chars().take(200).collect::<String>()
                ),
            )),
        },
    }
}

/// The original method and URI the proxy reports.
fn original(req: &Request) -> Result<(String, String), Refused> {
    let h = req.headers();
    // Envoy: the original path follows the prefix (`/_cada/auth/mcp`); nginx and Traefik
    // ask `/_cada/auth` itself.
    let own = target::origin_form(req.uri())?;
    let envoy = own
        .strip_prefix("/_cada/auth")
        .filter(|rest| !rest.is_empty());
    let uri = agreed(&[
        ("X-Original-URI", single(h, "x-original-uri")?),
        ("X-Forwarded-Uri", single(h, "x-forwarded-uri")?),
        ("the path after /_cada/auth", envoy),
    ])?
    .ok_or_else(|| {
        Refused::gate(
            StatusCode::BAD_REQUEST,
            NO_URI,
            "the original URI is missing: send X-Original-URI (nginx: $request_uri), \
             X-Forwarded-Uri (Traefik) or the path after /_cada/auth (Envoy path_prefix)",
        )
    })?;
    let method = agreed(&[
        ("X-Original-Method", single(h, "x-original-method")?),
        ("X-Forwarded-Method", single(h, "x-forwarded-method")?),
    ])?
    .unwrap_or(req.method().as_str());
    Ok((method.to_owned(), uri.to_owned()))
}

/// Refuses what the proxy in front would forward and the gate cannot remove: a header that
/// reads as a `CADA-Agent` identity header, a method or URL override, and a `_` look-alike
/// of a header the gate checks (`Mcp_Name`, `X_Forwarded_For`).
fn client_headers(h: &HeaderMap) -> Result<(), Refused> {
    let refuse = |code: &str, msg: String| Err(Refused::gate(StatusCode::BAD_REQUEST, code, msg));
    if let Some(n) = h.keys().find(|k| is_identity_header(k.as_str())) {
        return refuse(
            IDENTITY_HEADER,
            format!(
                "the request carries {n}, which reads as a CADA-Agent identity header: only the \
                 gate's answer may set those; remove it"
            ),
        );
    }
    if let Some(n) = h.keys().find(|k| OVERRIDE_HEADERS.contains(&k.as_str())) {
        return refuse(
            OVERRIDE_HEADER,
            format!(
                "the request carries {n}, with which some servers act on another method or URL \
                 than the one the proof is for; remove it"
            ),
        );
    }
    if let Some(n) = h.keys().find(|k| is_lookalike(k.as_str())) {
        return refuse(
            LOOKALIKE_HEADER,
            format!(
                "the request carries {n}, which servers that read `_` as `-` (CGI, WSGI, PHP) \
                 take for a header the gate checks or sets; remove it"
            ),
        );
    }
    Ok(())
}

/// The headers that say how the server reads the body, held to proxy mode's rule
/// ([`mcp::headers`]): `Content-Encoding` absent or `identity`; `Content-Type` exactly
/// `application/json` (or `; charset=utf-8`) whenever it is sent, and required when the
/// proof names a body (calls, or the digest of a non-empty body): the reverse proxy forwards
/// the client's header with the body, which the gate does not see. No `Mcp-Param-*` header
/// passes, since the gate cannot compare it with the body.
fn body_headers(h: &HeaderMap) -> Result<(), Refused> {
    let names_a_body = single(h, "dpop")?
        .and_then(|p| cada_protocol::token::parse_compact(p).ok())
        .is_some_and(|p| {
            let c = &p.claims.cada;
            !c.mcp.is_empty() || c.bd.as_ref().is_some_and(|d| *d != mcp::body_digest(b""))
        });
    let refused =
        |e: cada_protocol::ProtocolError| Refused::gate(header_status(&e), e.code(), e.to_string());
    mcp::headers::check_body_headers(header_pairs(h), names_a_body).map_err(refused)?;
    mcp::headers::check_param_headers(header_pairs(h), None).map_err(refused)
}

/// The calls a proof names, and the routing headers: `Mcp-Method`/`Mcp-Name`, when sent
/// with a proof that names its calls, must name its one call (a server routing by header
/// would otherwise run a call the proof does not name). Then, where calls are `governed`,
/// the proof must name its calls and its body's digest, and the request's `Content-Digest`
/// must be that digest. The proof is read here without being verified, only to refuse; the
/// decision that follows verifies it (and refuses a proof that is missing or does not
/// parse).
fn named_calls(h: &HeaderMap, governed: bool) -> Result<(), Refused> {
    let Some(dpop) = single(h, "dpop")? else {
        return Ok(());
    };
    let Ok(proof) = cada_protocol::token::parse_compact(dpop) else {
        return Ok(());
    };
    let cada = &proof.claims.cada;
    if !cada.mcp.is_empty() {
        routing_headers_match(h, &cada.mcp)
            .map_err(|msg| Refused::gate(StatusCode::BAD_REQUEST, "request.mcp_headers", msg))?;
    }
    if !governed {
        return Ok(());
    }
    let required = |why: &str| {
        let mut r = Refused::gate(
            StatusCode::UNAUTHORIZED,
            CALLS_REQUIRED,
            format!(
                "{why}: forward auth cannot read the body, so where contracts or tokens grant \
                 tools, resources and prompts the proof must name the body's calls (cada.mcp) \
                 and digest (cada.bd); ask the enclave for a proof bound to the body (e.g. \
                 through cada-parent proxy)"
            ),
        );
        r.challenge = Some("invalid_dpop_proof");
        r
    };
    // The library's rule, which the pipeline applies again to what the decision accepts.
    match calls::require_named_calls(cada) {
        Ok(()) => {}
        Err(VerifyError::CallsRequired(why)) => return Err(required(&why)),
        Err(e) => return Err(required(&e.to_string())),
    }
    if content_digest(h)?.is_none_or(|d| cada.bd.as_deref() != Some(d.as_str())) {
        return Err(Refused::gate(
            StatusCode::BAD_REQUEST,
            CONTENT_DIGEST,
            "send Content-Digest: sha-256=:…: of the body, alone (no other algorithm beside \
             it) and equal to the proof's cada.bd: the proxy passes it on with the body, so \
             the server can check the body is the one the proof names",
        ));
    }
    Ok(())
}

/// The body digest the request's `Content-Digest` names: its sha-256 member, alone (beside
/// it, a member of another algorithm, which the server may check instead, RFC 9530, could
/// name another body); `None` when absent, malformed or not alone.
fn content_digest(h: &HeaderMap) -> Result<Option<String>, Refused> {
    let sent = single(h, "content-digest")?;
    Ok(sent
        .filter(|v| !v.contains(','))
        .and_then(|v| mcp::content_digest_sha256(v).ok().flatten()))
}

/// `/_cada/auth[/…]`.
pub async fn check(
    State(st): State<Arc<GateState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let configured = st.config.public.configured().to_owned();
    if !st.config.public.is_trusted(peer.ip()) {
        let r = Refused::gate(
            StatusCode::FORBIDDEN,
            "forward_auth.untrusted",
            format!(
                "{} is not a trusted proxy: list it with --trusted-proxy to use forward auth",
                peer.ip()
            ),
        );
        st.count(r.status, "reject", &r.code);
        return r.answer(None, &metadata_url(&configured, "/"));
    }
    let h = req.headers();
    // Refused before the decision: counted, audited, answered.
    let early = |r: Refused, method: &str, url: &str, base: &str| {
        st.count(r.status, "reject", &r.code);
        audit_early(&st, peer.ip(), "forward_auth", method, url, &r.code, None);
        r.answer(None, &metadata_url(base, "/"))
    };
    let (method, uri) = match original(&req) {
        Ok(o) => o,
        Err(r) => return early(r, req.method().as_str(), &configured, &configured),
    };
    let base = match st.config.public.for_request(peer.ip(), h) {
        Ok(b) => b,
        Err(e) => {
            let r = Refused::gate(StatusCode::BAD_REQUEST, "request.forwarded", e.0);
            return early(r, &method, &configured, &configured);
        }
    };
    let url = match target::request_url(&base, &uri) {
        Ok(u) => u,
        Err(r) => return early(r, &method, &format!("{base}{uri}"), &base),
    };
    // The proxy forwards the client's headers itself: a look-alike identity header would
    // reach the server beside the gate's, an override or look-alike header make it act on
    // another method, URL or call than the one checked.
    if let Err(r) = client_headers(h) {
        return early(r, &method, &url, &base);
    }
    // The server reads the body by the headers the proxy forwards with it: they must make
    // it read the JSON the proof names (cada_protocol::mcp::headers).
    if let Err(r) = body_headers(h) {
        return early(r, &method, &url, &base);
    }
    let governed = HttpUrl::parse_canonical(&url).is_ok_and(|u| {
        calls::governs_calls(
            st.verify.engine.load().policy(),
            &u,
            h.contains_key("authorization"),
        )
    });
    if let Err(r) = named_calls(h, governed) {
        return early(r, &method, &url, &base);
    }
    // What the gate knows of the body: the digest the proxy passes on with it. Rule 6 holds
    // the proof's cada.bd to it, and the pipeline asks the proof to name the calls where
    // they are governed (the rule checked above, applied to what the decision accepts).
    // Under `require_body_digest` the gate must see the body itself, so it says nothing of
    // it and the decision refuses (`pop.body`).
    let body = match content_digest(h) {
        Ok(_) if st.verify.engine.load().policy().token.require_body_digest => None,
        Ok(d) => d.map(|digest| RequestBody {
            digest,
            calls: None,
            tool_arguments: None,
        }),
        Err(r) => return early(r, &method, &url, &base),
    };
    let path = uri.split('?').next().unwrap_or("/").to_owned();
    let resource_metadata = metadata_url(&base, &path);
    match decide(
        &st,
        &Checked {
            method: &method,
            url: &url,
            resource_metadata: &resource_metadata,
            headers: h,
            body: body.as_ref(),
            rpc: None,
            kind: "forward_auth",
            peer: peer.ip(),
        },
    )
    .await
    {
        Ok(a) => {
            st.count(StatusCode::OK, "accept", "");
            let mut resp = StatusCode::OK.into_response();
            let (calls, bd) = (a.claims.cada.mcp.clone(), a.claims.cada.bd.clone());
            for (n, v) in identity_headers(&a, &calls, bd.as_deref()) {
                resp.headers_mut().insert(n, v);
            }
            // Chain of custody: `CADA-Task` and a child `traceparent` of the proof's, for
            // the reverse proxy to pass on (docs/audit.md).
            let _span = custody_headers(&a, resp.headers_mut());
            resp
        }
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn request(path: &str, pairs: &[(&str, &str)]) -> Request {
        let mut r = Request::new(axum::body::Body::empty());
        *r.uri_mut() = path.parse().unwrap();
        for (k, v) in pairs {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn the_original_request_comes_from_one_source_or_agreeing_ones() {
        let o = |path, pairs: &[(&str, &str)]| original(&request(path, pairs));
        assert_eq!(
            o(
                "/_cada/auth",
                &[("x-original-uri", "/mcp?x"), ("x-original-method", "POST")]
            )
            .unwrap(),
            ("POST".to_owned(), "/mcp?x".to_owned())
        );
        assert_eq!(
            o(
                "/_cada/auth",
                &[
                    ("x-forwarded-uri", "/mcp"),
                    ("x-forwarded-method", "DELETE")
                ]
            )
            .unwrap(),
            ("DELETE".to_owned(), "/mcp".to_owned())
        );
        // Envoy: the path after the prefix, the check's own method.
        assert_eq!(
            o("/_cada/auth/mcp?x", &[]).unwrap(),
            ("GET".to_owned(), "/mcp?x".to_owned())
        );
        assert_eq!(
            o("/_cada/auth/mcp", &[("x-original-uri", "/mcp")])
                .unwrap()
                .1,
            "/mcp"
        );
        // A second source that disagrees, e.g. a client's own X-Original-URI behind Traefik.
        for pairs in [
            &[("x-forwarded-uri", "/admin"), ("x-original-uri", "/mcp")][..],
            &[("x-original-uri", "/mcp"), ("x-original-uri", "/mcp")][..],
        ] {
            assert!(o("/_cada/auth", pairs).is_err(), "{pairs:?}");
        }
        assert_eq!(
            o("/_cada/auth/admin", &[("x-original-uri", "/mcp")])
                .unwrap_err()
                .code,
            CONFLICT
        );
        assert_eq!(
            o(
                "/_cada/auth",
                &[
                    ("x-original-uri", "/mcp"),
                    ("x-original-method", "GET"),
                    ("x-forwarded-method", "POST")
                ]
            )
            .unwrap_err()
            .code,
            CONFLICT
        );
        assert_eq!(o("/_cada/auth", &[]).unwrap_err().code, NO_URI);
    }

    #[test]
    fn identity_override_and_lookalike_headers_are_refused() {
        let code = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            client_headers(&h).map_err(|r| (r.status, r.code))
        };
        let bad = |c: &str| Err((StatusCode::BAD_REQUEST, c.to_owned()));
        assert_eq!(code(&[("cada_agent", "x")]), bad(IDENTITY_HEADER));
        for (k, v) in [
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-HTTP-Method", "DELETE"),
            ("X-Method-Override", "DELETE"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
        ] {
            assert_eq!(code(&[(k, v)]), bad(OVERRIDE_HEADER), "{k}");
        }
        for k in [
            "Mcp_Name",
            "mcp_method",
            "X_Forwarded_For",
            "Content_Digest",
            "x_real_ip",
            "Content_Type",
            "content_encoding",
            "Mcp_Param_Region",
            "CADA_Task",
            "cada_task",
        ] {
            assert_eq!(code(&[(k, "x")]), bad(LOOKALIKE_HEADER), "{k}");
        }
        // What the proxy itself sets, and other headers with `_`, pass.
        assert_eq!(
            code(&[
                ("X-Original-URI", "/mcp"),
                ("X-Forwarded-Host", "a.example"),
                ("Mcp-Name", "echo"),
                ("x_trace_id", "1"),
            ]),
            Ok(())
        );
    }

    #[test]
    fn body_headers_are_held_to_the_proxy_modes_rule() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        let with = |bd: &[u8], calls: serde_json::Value| {
            proof_with(serde_json::json!({"att": "a", "seq": 1, "chain": "c",
                "bd": mcp::body_digest(bd), "mcp": calls}))
        };
        let names_body = with(
            body,
            serde_json::json!([{"method": "tools/call", "target": "echo"}]),
        );
        let digest_only = with(body, serde_json::json!([]));
        let empty = with(b"", serde_json::json!([]));
        let check = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            body_headers(&h).map_err(|r| (r.status, r.code))
        };
        let unsupported = |c: &str| Err((StatusCode::UNSUPPORTED_MEDIA_TYPE, c.to_owned()));
        let ct = mcp::headers::CONTENT_TYPE;
        for p in [&names_body, &digest_only] {
            assert_eq!(
                check(&[("dpop", p), ("content-type", "application/json")]),
                Ok(())
            );
            assert_eq!(
                check(&[
                    ("dpop", p),
                    ("content-type", "application/json; charset=UTF-8")
                ]),
                Ok(())
            );
            // A body named, its Content-Type missing: the server would guess.
            assert_eq!(check(&[("dpop", p)]), unsupported(ct));
            for bad in [
                "application/json; charset=utf-7",
                "application/json;charset=\"UTF-7\"",
                "application/json; charset=utf-16le",
                "Application/JSON; Charset=UTF7",
                "application/json; charset=utf-8; x=y",
                "text/plain",
            ] {
                assert_eq!(
                    check(&[("dpop", p), ("content-type", bad)]),
                    unsupported(ct),
                    "{bad}"
                );
            }
            assert_eq!(
                check(&[
                    ("dpop", p),
                    ("content-type", "application/json"),
                    ("content-type", "application/json")
                ]),
                unsupported(ct)
            );
            assert_eq!(
                check(&[
                    ("dpop", p),
                    ("content-type", "application/json"),
                    ("content-encoding", "gzip")
                ]),
                unsupported(mcp::headers::CONTENT_ENCODING)
            );
        }
        // No body named (the empty body's digest, or no readable proof): Content-Type is
        // optional, and checked when sent.
        for p in [empty.as_str(), "not a proof"] {
            assert_eq!(check(&[("dpop", p)]), Ok(()));
            assert_eq!(
                check(&[
                    ("dpop", p),
                    ("content-type", "application/json; charset=utf-7")
                ]),
                unsupported(ct)
            );
        }
        assert_eq!(check(&[]), Ok(()));
        // Mcp-Param-* cannot be compared with a body the gate does not see.
        assert_eq!(
            check(&[
                ("dpop", &names_body),
                ("content-type", "application/json"),
                ("mcp-param-region", "us")
            ]),
            Err((
                StatusCode::BAD_REQUEST,
                mcp::headers::PARAM_HEADER.to_owned()
            ))
        );
    }

    fn proof_with(cada: serde_json::Value) -> String {
        let header = cada_protocol::b64::encode(
            serde_json::json!({"typ": "dpop+jwt", "alg": "EdDSA",
                "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}})
            .to_string(),
        );
        let claims = cada_protocol::b64::encode(
            serde_json::json!({"jti": "j", "htm": "POST", "htu": "http://g.example/mcp",
                "iat": 1, "exp": 2, "cada": cada})
            .to_string(),
        );
        format!("{header}.{claims}.AAAA")
    }

    #[test]
    fn governed_calls_need_named_calls_a_digest_and_the_same_content_digest() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
        let bd = mcp::body_digest(body);
        let calls = serde_json::json!([{"method": "tools/call", "target": "echo"}]);
        let base = serde_json::json!({"att": "a", "seq": 1, "chain": "c"});
        let with = |extra: serde_json::Value| {
            let mut c = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            proof_with(c)
        };
        let check = |dpop: &str, digest: Option<String>| {
            let mut h = HeaderMap::new();
            h.insert("dpop", HeaderValue::from_str(dpop).unwrap());
            if let Some(d) = digest {
                h.insert("content-digest", HeaderValue::from_str(&d).unwrap());
            }
            named_calls(&h, true).map_err(|r| (r.status, r.code))
        };
        let good = with(serde_json::json!({"bd": bd, "mcp": calls}));
        assert_eq!(check(&good, Some(mcp::content_digest(body))), Ok(()));
        // No calls, no digest: a host could send any call.
        for p in [
            with(serde_json::json!({"bd": bd})),
            with(serde_json::json!({"mcp": calls})),
            with(serde_json::json!({})),
        ] {
            assert_eq!(
                check(&p, Some(mcp::content_digest(body))),
                Err((StatusCode::UNAUTHORIZED, CALLS_REQUIRED.to_owned()))
            );
        }
        // A request without a body names no calls, and says so with the empty digest.
        let empty = with(serde_json::json!({"bd": mcp::body_digest(b"")}));
        assert_eq!(check(&empty, Some(mcp::content_digest(b""))), Ok(()));
        // Content-Digest missing, or another body's, or the proof's beside another
        // algorithm's (which a server may check instead, RFC 9530), or repeated.
        for d in [
            None,
            Some(mcp::content_digest(b"{}")),
            Some("garbage".into()),
            Some(format!(
                "sha-512=:{}:, {}",
                "A".repeat(86) + "==",
                mcp::content_digest(body)
            )),
            Some(format!("{}, sha-512=:AAAA:", mcp::content_digest(body))),
            Some(format!("{}, unixsum=:1:", mcp::content_digest(body))),
        ] {
            assert_eq!(
                check(&good, d),
                Err((StatusCode::BAD_REQUEST, CONTENT_DIGEST.to_owned()))
            );
        }
        // Missing or unreadable proofs are the decision's to refuse.
        assert_eq!(check("not a proof", None), Ok(()));
        assert_eq!(
            named_calls(&HeaderMap::new(), true).map_err(|r| r.code),
            Ok(())
        );
        // Where nothing governs calls, a proof naming none passes; one that names its calls
        // still binds the routing headers to them.
        let mut h = HeaderMap::new();
        h.insert(
            "dpop",
            HeaderValue::from_str(&with(serde_json::json!({}))).unwrap(),
        );
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        assert_eq!(named_calls(&h, false).map_err(|r| r.code), Ok(()));
        let mut h = HeaderMap::new();
        h.insert("dpop", HeaderValue::from_str(&good).unwrap());
        h.insert(
            "content-digest",
            HeaderValue::from_str(&mcp::content_digest(body)).unwrap(),
        );
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_static("echo"));
        assert_eq!(named_calls(&h, true).map_err(|r| r.code), Ok(()));
        for governed in [true, false] {
            h.insert("mcp-name", HeaderValue::from_static("delete_all"));
            assert_eq!(
                named_calls(&h, governed).map_err(|r| r.code),
                Err("request.mcp_headers".to_owned())
            );
        }
    }
}
