//! The CB-PoP token: a compact JWS in the DPoP profile (RFC 9449) with a `cada` claim.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::jwk::{Jwk, SigAlg};
use crate::{b64, ProtocolError};

/// Largest compact token accepted.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest lifetime a token may state (`exp - iat`).
pub const MAX_LIFETIME_SECS: u64 = 30;
/// The `typ` of every CB-PoP.
pub const TYP: &str = "dpop+jwt";

/// The JOSE header.
///
/// Parsing ([`parse_compact`]) refuses a header with `crit` (no extension is understood, RFC
/// 7515 §4.1.11) or with a repeated member, and ignores other members it does not know
/// (RFC 7515 §4: they are not critical; RFC 9449 allows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopHeader {
    /// Always `dpop+jwt`.
    pub typ: String,
    /// `EdDSA`, `Ed25519`, `ES256` or `ES384`.
    pub alg: String,
    /// The public key that signed the token.
    pub jwk: Jwk,
}

/// The header as received: [`PopHeader`] plus `crit`, whose mere presence (even `null`)
/// refuses the proof.
#[derive(Deserialize)]
struct ReceivedHeader {
    typ: String,
    alg: String,
    jwk: Jwk,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
}

/// `Some(value)` for a member that is present, whatever its value (so `null` counts).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The `cada` claim: evidence digest, context digests, and the enclave's signature counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CadaClaim {
    /// base64url SHA-384 of the evidence document that binds the key.
    pub att: String,
    /// Context digests (model state hash, input digest, task id …), name → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ctx: BTreeMap<String, String>,
    /// Sequence number of this signature in the enclave's audit chain (starts at 1).
    pub seq: u64,
    /// base64url head of the enclave's signature hash chain after this signature.
    pub chain: String,
    /// base64url SHA-256 of the owner-signed trust contract that authorized this proof
    /// (present once the enclave is locked to an owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtc: Option<String>,
    /// base64url SHA-256 of the request body (the RFC 9530 `Content-Digest` mirrored), when
    /// the proof is bound to the body it came with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bd: Option<String>,
    /// The MCP JSON-RPC calls of that body, in order (method and tool, prompt or resource):
    /// the enclave checked them against the contract before it signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp: Vec<crate::mcp::McpCall>,
    /// The delegation chain above the contract `dtc` names, when that contract is a
    /// delegation (issue 24): base64url SHA-256 digests of every link before it, root (the
    /// owner's contract) first, its parent last. Absent when `dtc` is an owner contract. At
    /// most [`MAX_DCH`] digests of at most [`MAX_DIGEST_LEN`] characters.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "bounded_dch"
    )]
    pub dch: Vec<String>,
    /// The task this proof's request is part of (chain of custody; 1 to 128 bytes of
    /// `[A-Za-z0-9._:-]`, checked at decode: `trace.task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The W3C `traceparent` of the request (version 00, checked at decode:
    /// `trace.traceparent`): its trace id joins every hop's logs and spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp: Option<String>,
}

/// Most digests in `cada.dch` (a chain holds at most 8 delegations after the root).
pub const MAX_DCH: usize = 8;
/// Longest digest in `cada.dch` (a base64url SHA-256 is 43 characters).
pub const MAX_DIGEST_LEN: usize = 64;

/// `cada.dch` read with its bounds: at most [`MAX_DCH`] strings of at most
/// [`MAX_DIGEST_LEN`] characters, refused (not truncated) beyond.
fn bounded_dch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Dch;
    impl<'de> serde::de::Visitor<'de> for Dch {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "an array of at most {MAX_DCH} digests of at most {MAX_DIGEST_LEN} characters"
            )
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                if out.len() >= MAX_DCH || s.len() > MAX_DIGEST_LEN {
                    return Err(serde::de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Dch)
}

/// The claims of a CB-PoP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopClaims {
    /// Unique token id.
    pub jti: String,
    /// HTTP method.
    pub htm: String,
    /// HTTP target URI without query and fragment.
    pub htu: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expiry, seconds since the epoch, at most `iat + 30`.
    pub exp: u64,
    /// base64url SHA-256 of the access token, when one is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ath: Option<String>,
    /// The server-provided nonce, when the server demands one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// CADA extension.
    pub cada: CadaClaim,
}

/// `ath`: base64url SHA-256 of the access token (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    b64::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        access_token.as_bytes(),
    ))
}

/// `header_b64.claims_b64`, the bytes a JWS signature covers.
pub fn signing_input(header: &PopHeader, claims: &PopClaims) -> Result<String, ProtocolError> {
    let json = |what: &'static str, r: serde_json::Result<Vec<u8>>| {
        r.map_err(|e| ProtocolError::Json {
            what,
            detail: e.to_string(),
        })
    };
    let h = json("JWS header", serde_json::to_vec(header))?;
    let c = json("JWS claims", serde_json::to_vec(claims))?;
    let mut s = b64::encode(h);
    s.push('.');
    s.push_str(&b64::encode(c));
    Ok(s)
}

/// A compact JWS split into its parts, header and claims decoded.
#[derive(Debug, Clone)]
pub struct ParsedPop<'a> {
    /// The signing input (`header.claims`) as received.
    pub signing_input: &'a str,
    /// Decoded header.
    pub header: PopHeader,
    /// The algorithm the header names (already checked to be supported).
    pub alg: SigAlg,
    /// Decoded claims.
    pub claims: PopClaims,
    /// Raw signature bytes.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact CB-PoP, checking sizes, `crit` (refused), `typ`, and that
/// `alg` is supported and is the algorithm of the header's `jwk`. It does not verify the
/// signature.
pub fn parse_compact(token: &str) -> Result<ParsedPop<'_>, ProtocolError> {
    let jws = crate::jws::split_compact("DPoP proof", token, MAX_TOKEN_LEN)?;
    let received: ReceivedHeader =
        serde_json::from_slice(&jws.header).map_err(|e| ProtocolError::Json {
            what: "DPoP header",
            detail: e.to_string(),
        })?;
    crate::jws::refuse_crit(received.crit.as_ref())?;
    let header = PopHeader {
        typ: received.typ,
        alg: received.alg,
        jwk: received.jwk,
    };
    if header.typ != TYP {
        return Err(ProtocolError::invalid(
            "DPoP header",
            format!("typ must be {TYP:?}"),
        ));
    }
    let alg = SigAlg::parse(&header.alg)?;
    header.jwk.check_alg(alg)?;
    let claims: PopClaims =
        serde_json::from_slice(&jws.payload).map_err(|e| ProtocolError::Json {
            what: "DPoP claims",
            detail: e.to_string(),
        })?;
    crate::trace::check_pair(claims.cada.task.as_deref(), claims.cada.tp.as_deref())?;
    Ok(ParsedPop {
        signing_input: jws.signing_input,
        header,
        alg,
        claims,
        signature: jws.signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (PopHeader, PopClaims) {
        (
            PopHeader {
                typ: TYP.into(),
                alg: "EdDSA".into(),
                jwk: Jwk::ed25519(&[3u8; 32]),
            },
            PopClaims {
                jti: "j".into(),
                htm: "GET".into(),
                htu: "https://a.example/x".into(),
                iat: 10,
                exp: 40,
                ath: None,
                nonce: None,
                cada: CadaClaim::default(),
            },
        )
    }

    #[test]
    fn parse_round_trip_and_rejections() {
        let (h, c) = sample();
        let token = format!(
            "{}.{}",
            signing_input(&h, &c).unwrap(),
            b64::encode([0u8; 64])
        );
        let p = parse_compact(&token).unwrap();
        assert_eq!(p.claims, c);
        assert_eq!(p.alg, SigAlg::EdDSA);
        assert!(parse_compact("a.b").is_err());
        assert!(parse_compact(&format!("{token}.x")).is_err());
        let mut bad = h.clone();
        bad.alg = "none".into();
        assert!(parse_compact(&format!("{}.AA", signing_input(&bad, &c).unwrap())).is_err());
        let mut bad = h;
        bad.alg = "ES256".into();
        assert_eq!(
            parse_compact(&format!("{}.AA", signing_input(&bad, &c).unwrap()))
                .unwrap_err()
                .code(),
            "jws.alg_key_mismatch"
        );
        assert!(parse_compact(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    /// A token whose header is `header` (raw JSON) and claims are the sample's.
    fn with_header(header: &serde_json::Value) -> String {
        let (_, c) = sample();
        format!(
            "{}.{}.{}",
            b64::encode(header.to_string()),
            b64::encode(serde_json::to_vec(&c).unwrap()),
            b64::encode([0u8; 64])
        )
    }

    fn ed_header() -> serde_json::Value {
        serde_json::json!({"typ": TYP, "alg": "EdDSA", "jwk": Jwk::ed25519(&[3u8; 32])})
    }

    /// Issue 24: `cada.dch` is absent for an owner contract, round-trips when present, and
    /// is refused beyond its bounds when read.
    #[test]
    fn the_delegation_chain_claim_is_optional_and_bounded() {
        let (_, mut c) = sample();
        let plain = serde_json::to_value(&c).unwrap();
        assert!(plain["cada"].get("dch").is_none());
        c.cada.dch = vec!["a".repeat(43), "b".repeat(43)];
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PopClaims>(&json).unwrap(), c);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["cada"]["dch"] = serde_json::json!(vec!["d".repeat(43); MAX_DCH]);
        assert!(serde_json::from_value::<PopClaims>(v.clone()).is_ok());
        v["cada"]["dch"] = serde_json::json!(vec!["d".repeat(43); MAX_DCH + 1]);
        assert!(serde_json::from_value::<PopClaims>(v.clone()).is_err());
        v["cada"]["dch"] = serde_json::json!(["d".repeat(MAX_DIGEST_LEN + 1)]);
        assert!(serde_json::from_value::<PopClaims>(v.clone()).is_err());
        v["cada"]["dch"] = serde_json::json!("not an array");
        assert!(serde_json::from_value::<PopClaims>(v).is_err());
    }

    /// Issue 24: `cada.task` and `cada.tp` are optional, round-trip, and a proof whose task
    /// or traceparent is not in its strict form is refused at decode with its code.
    #[test]
    fn task_and_traceparent_are_checked_at_decode() {
        let (h, mut c) = sample();
        let plain = serde_json::to_value(&c).unwrap();
        assert!(plain["cada"].get("task").is_none() && plain["cada"].get("tp").is_none());
        let token = |c: &PopClaims| {
            format!(
                "{}.{}",
                signing_input(&h, c).unwrap(),
                b64::encode([0u8; 64])
            )
        };
        c.cada.task = Some("task-1".into());
        c.cada.tp = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        assert_eq!(parse_compact(&token(&c)).unwrap().claims, c);
        let mut bad = c.clone();
        bad.cada.task = Some("task 1".into());
        assert_eq!(
            parse_compact(&token(&bad)).unwrap_err().code(),
            "trace.task"
        );
        let mut bad = c.clone();
        bad.cada.tp = Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        assert_eq!(
            parse_compact(&token(&bad)).unwrap_err().code(),
            "trace.traceparent"
        );
    }

    #[test]
    fn crit_is_refused_whatever_it_holds() {
        for crit in [
            serde_json::json!(["exp"]),
            serde_json::json!(["b64"]),
            serde_json::json!([]),
            serde_json::json!(null),
            serde_json::json!("exp"),
        ] {
            let mut h = ed_header();
            h["crit"] = crit.clone();
            if crit == serde_json::json!(["exp"]) {
                h["exp"] = 5.into();
            }
            let err = parse_compact(&with_header(&h)).unwrap_err();
            assert_eq!(err.code(), "jws.crit", "{crit}: {err}");
        }
        let mut h = ed_header();
        h["crit"] = serde_json::json!(["exp", "b64"]);
        assert_eq!(
            parse_compact(&with_header(&h)).unwrap_err(),
            ProtocolError::CriticalHeader {
                names: vec!["exp".into(), "b64".into()]
            }
        );
    }

    #[test]
    fn unknown_members_are_ignored_but_repeated_ones_refused() {
        let mut h = ed_header();
        h["kid"] = "k1".into();
        h["x-extra"] = serde_json::json!({"a": [1, 2]});
        let token = with_header(&h);
        let p = parse_compact(&token).unwrap();
        assert_eq!(p.header.alg, "EdDSA");
        // Two `alg` members: refused, whichever a lax parser would pick.
        let jwk = serde_json::to_string(&Jwk::ed25519(&[3u8; 32])).unwrap();
        let raw = format!(r#"{{"typ":"dpop+jwt","alg":"EdDSA","alg":"ES256","jwk":{jwk}}}"#);
        let (_, c) = sample();
        let dup = format!(
            "{}.{}.AA",
            b64::encode(raw),
            b64::encode(serde_json::to_vec(&c).unwrap())
        );
        assert_eq!(parse_compact(&dup).unwrap_err().code(), "json");
        // A jwk carrying private material is refused (RFC 9449 §4.2).
        let mut h = ed_header();
        h["jwk"]["d"] = "AAAA".into();
        assert_eq!(parse_compact(&with_header(&h)).unwrap_err().code(), "json");
    }

    #[test]
    fn the_fully_specified_ed25519_name_is_accepted_and_must_match_the_key() {
        let mut h = ed_header();
        h["alg"] = "Ed25519".into();
        let token = with_header(&h);
        let p = parse_compact(&token).unwrap();
        assert_eq!(p.alg, SigAlg::Ed25519);
        // Ed25519 / EdDSA with an EC key, and ES256 with a P-384 key: refused.
        let mut p256 = vec![4u8];
        p256.extend_from_slice(&[1u8; 64]);
        let mut p384 = vec![4u8];
        p384.extend_from_slice(&[1u8; 96]);
        for (alg, jwk) in [
            ("Ed25519", Jwk::ec(SigAlg::ES256, &p256).unwrap()),
            ("EdDSA", Jwk::ec(SigAlg::ES256, &p256).unwrap()),
            ("ES256", Jwk::ec(SigAlg::ES384, &p384).unwrap()),
            ("ES384", Jwk::ec(SigAlg::ES256, &p256).unwrap()),
            ("ES256", Jwk::ed25519(&[3u8; 32])),
        ] {
            let h = serde_json::json!({"typ": TYP, "alg": alg, "jwk": jwk});
            assert_eq!(
                parse_compact(&with_header(&h)).unwrap_err().code(),
                "jws.alg_key_mismatch",
                "{alg} with {}",
                jwk.crv
            );
        }
    }
}
