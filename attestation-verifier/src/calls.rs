//! Rule 6 for a caller that does not read the body's MCP calls.
//!
//! Where calls are governed — the audience covering the URL names owners, whose contracts
//! grant tools, resources and prompts, or an access token of a trusted issuer carries such
//! grants — rule 13 checks every call the request makes: the body's, when the caller parsed
//! it ([`RequestBody::calls`]), else the calls the proof names (`cada.mcp`). A caller that
//! knows only the body's digest (a forward-auth check, which carries no body; a resource
//! server asking `cada-verify serve` with `body_digest`), or nothing at all, has no calls of
//! its own to check; a proof that names none would then admit a body calling any tool. So,
//! where calls are governed and the caller does not know them:
//!
//! * the caller must know the body's digest ([`RequestBody::digest`], which rule 6 holds
//!   `cada.bd` to); a body whose digest is the empty body's makes no calls, and is known;
//! * the proof must name the body's digest (`cada.bd`) and its calls (`cada.mcp`); a proof
//!   for an empty body may name none.
//!
//! The refusal is `pop.calls_required` (rule 6). Servers that call the library's decision
//! with such a caller apply [`check_unread_calls`] to what it accepted (`cada-pipeline`
//! does, for `cada-verify serve` and `cada-gate`'s forward auth); forward auth also applies
//! [`governs_calls`] and [`require_named_calls`] before the decision, to answer early with
//! its own code.
use cada_protocol::mcp;
use cada_protocol::token::CadaClaim;
use cada_protocol::url::HttpUrl;

use crate::decide::{Accepted, RequestBody};
use crate::{Policy, VerifyError};

/// What a caller holding the body knows of it: its digest, its MCP calls (none for an
/// empty body), read with the one bounded parser ([`mcp::parse_body`]), and the arguments of
/// its `tools/call`s ([`crate::grants::tool_arguments`], for one-transaction grants). An
/// error for a body that is not a JSON-RPC message or batch that parser reads: an MCP
/// server must not run it, since it might read other calls in it.
pub fn read_body(bytes: &[u8]) -> Result<RequestBody, cada_protocol::ProtocolError> {
    let (calls, tool_arguments) = if bytes.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let calls = mcp::parse_body(bytes)?.calls();
        (calls, crate::grants::tool_arguments(bytes)?)
    };
    Ok(RequestBody {
        digest: mcp::body_digest(bytes),
        calls: Some(calls),
        tool_arguments: Some(tool_arguments),
    })
}

/// Whether rule 13 would check the MCP calls of a request to `url` against grants: the
/// audience covering it names owners, or the request carries an access token (with
/// `with_access_token`) and the policy trusts issuers, whose tokens carry the contract's
/// grants. Decided before the proof is verified, so it errs on the side of governing (any
/// access token counts where issuers are trusted).
pub fn governs_calls(policy: &Policy, url: &HttpUrl, with_access_token: bool) -> bool {
    policy.audience_for(url).is_some_and(|a| a.owners.is_some())
        || (with_access_token && !policy.issuers.is_empty())
}

/// Whether rule 13 checked an accepted request's MCP calls against grants: a contract
/// authorized it, or an access token attested its key.
pub fn governed(accepted: &Accepted) -> bool {
    accepted.contract.is_some() || accepted.token.is_some()
}

/// The proof's part of the rule: it names the body's digest (`cada.bd`) and its calls
/// (`cada.mcp`), or the empty body's digest and no calls.
pub fn require_named_calls(cada: &CadaClaim) -> Result<(), VerifyError> {
    let Some(bd) = cada.bd.as_deref() else {
        return Err(VerifyError::CallsRequired(
            "the proof names no body digest (cada.bd)".into(),
        ));
    };
    if cada.mcp.is_empty() && bd != mcp::body_digest(b"") {
        return Err(VerifyError::CallsRequired(
            "the proof names a body (cada.bd) but none of its calls (cada.mcp)".into(),
        ));
    }
    Ok(())
}

/// The whole rule, for a request the decision accepted with `body` (what the caller knew
/// of the body): nothing to do where calls are not governed or the caller parsed the body's
/// calls; else the caller must know the body's digest and the proof must name the calls
/// ([`require_named_calls`]).
pub fn check_unread_calls(
    body: Option<&RequestBody>,
    accepted: &Accepted,
) -> Result<(), VerifyError> {
    if !governed(accepted) {
        return Ok(());
    }
    match body {
        Some(b) if b.calls.is_some() || b.digest == mcp::body_digest(b"") => Ok(()),
        Some(_) => require_named_calls(&accepted.claims.cada),
        None => Err(VerifyError::CallsRequired(
            "the request's body is unknown (neither the body nor its digest was given), so \
             its calls cannot be checked"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_protocol::mcp::McpCall;

    fn cada(bd: Option<&[u8]>, calls: &[(&str, Option<&str>)]) -> CadaClaim {
        CadaClaim {
            bd: bd.map(mcp::body_digest),
            mcp: calls
                .iter()
                .map(|(m, t)| McpCall {
                    method: (*m).to_owned(),
                    target: t.map(str::to_owned),
                })
                .collect(),
            ..CadaClaim::default()
        }
    }

    const BODY: &[u8] =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}"#;

    #[test]
    fn a_proof_names_its_body_and_calls_unless_the_body_is_empty() {
        let code = |c: &CadaClaim| require_named_calls(c).map_err(|e| e.code());
        // The issue's proof: no calls, whatever the body.
        assert_eq!(code(&cada(None, &[])), Err("pop.calls_required"));
        assert_eq!(code(&cada(Some(BODY), &[])), Err("pop.calls_required"));
        assert_eq!(
            code(&cada(None, &[("tools/call", Some("echo"))])),
            Err("pop.calls_required")
        );
        assert_eq!(
            code(&cada(Some(BODY), &[("tools/call", Some("delete_all"))])),
            Ok(())
        );
        assert_eq!(code(&cada(Some(b""), &[])), Ok(()));
        // A call without a target (tools/list) is a call the proof names.
        assert_eq!(code(&cada(Some(b"x"), &[("tools/list", None)])), Ok(()));
    }

    fn accepted(cada: CadaClaim, contract: bool) -> Accepted {
        use crate::decide::{Admission, ContractInfo};
        Accepted {
            key: crate::AttestedKey {
                jkt: "k".into(),
                did: "did:key:z".into(),
                hpke: None,
                owner: None,
                platform: cada_protocol::envelope::Platform::Nitro,
                measurements: std::collections::BTreeMap::new(),
                module_id: String::new(),
                att: String::new(),
                expires: crate::UnixTime::from_secs(1),
                emulated: false,
            },
            claims: cada_protocol::token::PopClaims {
                jti: "j".into(),
                htm: "POST".into(),
                htu: "https://api.example.com/mcp".into(),
                iat: 1,
                exp: 2,
                ath: None,
                nonce: None,
                cada,
            },
            admission: Admission::AnyMeasurement,
            contract: contract.then(|| ContractInfo {
                owner: "did:key:o".into(),
                id: "c".into(),
                digest: "d".into(),
                scopes: vec![],
                tools: vec!["echo".into()],
                resources: vec![],
                prompts: vec![],
                required_ctx: vec![],
                remaining_secs: 60,
                limits: cada_contract::BehaviourLimits::default(),
                authorization_details: vec![],
                chain: vec![],
            }),
            token: None,
            single_use: vec![],
        }
    }

    #[test]
    fn where_calls_are_governed_the_caller_knows_them_or_the_proof_names_them() {
        let code = |body: Option<&RequestBody>, a: &Accepted| {
            check_unread_calls(body, a).map_err(|e| e.code())
        };
        let digest = |b: &[u8]| RequestBody {
            digest: mcp::body_digest(b),
            calls: None,
            tool_arguments: None,
        };
        let parsed = RequestBody {
            digest: mcp::body_digest(BODY),
            calls: Some(vec![]),
            tool_arguments: None,
        };
        let silent = accepted(cada(None, &[]), true);
        // The issue's request: a digest of a delete_all body, a proof naming no calls.
        assert_eq!(
            code(Some(&digest(BODY)), &silent),
            Err("pop.calls_required")
        );
        // Nothing known of the body at all.
        assert_eq!(code(None, &silent), Err("pop.calls_required"));
        // The caller parsed the body (rule 13 checks those calls), or the body is empty.
        assert_eq!(code(Some(&parsed), &silent), Ok(()));
        assert_eq!(code(Some(&digest(b"")), &silent), Ok(()));
        // The proof names the body and its calls (rule 6 holds bd to the digest, rule 13
        // checks the calls).
        let named = accepted(
            cada(Some(BODY), &[("tools/call", Some("delete_all"))]),
            true,
        );
        assert_eq!(code(Some(&digest(BODY)), &named), Ok(()));
        // Still, the caller must say what the body is.
        assert_eq!(code(None, &named), Err("pop.calls_required"));
        // Where no contract or token governs calls, nothing is asked.
        assert_eq!(code(None, &accepted(cada(None, &[]), false)), Ok(()));
    }

    #[test]
    fn a_body_read_is_its_digest_and_calls() {
        let b = read_body(BODY).unwrap();
        assert_eq!(b.digest, mcp::body_digest(BODY));
        assert_eq!(
            b.calls,
            Some(vec![McpCall {
                method: "tools/call".into(),
                target: Some("delete_all".into()),
            }])
        );
        assert_eq!(read_body(b"").unwrap().calls, Some(vec![]));
        assert_eq!(
            b.tool_arguments,
            Some(vec![crate::grants::ToolArguments {
                tool: "delete_all".into(),
                json: None,
            }])
        );
        // Smuggling the parser refuses: a duplicate key, a BOM, not JSON at all.
        for bad in [
            &br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"params":{"name":"delete_all"}}"#[..],
            b"\xef\xbb\xbf{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
            b"name=delete_all",
        ] {
            assert!(read_body(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_refusal_names_rule_6_and_asks_for_the_calls() {
        let e = require_named_calls(&cada(Some(BODY), &[])).unwrap_err();
        let r: crate::Refusal = e.into();
        assert_eq!(r.code(), "pop.calls_required");
        assert_eq!(r.rule(), 6);
        assert_eq!(r.dpop_error(), "invalid_dpop_proof");
        assert!(r.error.to_string().contains("send the body"), "{}", r.error);
    }
}
