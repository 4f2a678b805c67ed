//! Access tokens of a trusted issuer (`cada_attestation_verifier::access_token`): the JWKS
//! reader, and the token check a resource server runs before it lets a token attest a key —
//! compact JWS limits, header rules, the signature under the issuer's key, every claim.
//!
//! Input: one selector byte, then: (0) a compact token; (1) a JWKS; (2) a claims payload
//! the harness signs with the fixed issuer key (so mutations reach the claim checks past
//! the signature). Oracle: a token that verifies names the trusted issuer, is not expired,
//! and its audience covers the URL.
#![no_main]

use cada_attestation_verifier::access_token::{is_jwt_access_token, parse_jwks, verify};
use cada_attestation_verifier::UnixTime;
use cada_fuzz::token_setup::{issuers, sign, ISSUER, KID, TOKEN_AT};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use libfuzzer_sys::fuzz_target;

fn check(token: &str) {
    let _ = is_jwt_access_token(token);
    for u in [
        "https://api.example.com/v1/orders",
        "https://api.example.com/v10",
    ] {
        let Ok(url) = HttpUrl::parse_normalized(u) else {
            continue;
        };
        if let Ok((claims, key)) = verify(token, issuers(), &url, UnixTime::from_secs(TOKEN_AT), 10)
        {
            assert_eq!(claims.iss, ISSUER);
            assert!(claims.exp > TOKEN_AT - 10);
            assert!(UrlPrefix::parse(&claims.aud).is_ok_and(|p| p.matches(&url)));
            assert_eq!(key.jkt, claims.cnf.jkt);
        }
    }
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("access_token");
    },
    |data: &[u8]| {
        let Some((&kind, rest)) = data.split_first() else {
            return;
        };
        match kind % 3 {
            0 => {
                if let Ok(text) = std::str::from_utf8(rest) {
                    check(text);
                }
            }
            1 => {
                let _ = parse_jwks(rest);
            }
            _ => {
                let header = serde_json::to_vec(
                    &serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": KID}),
                )
                .unwrap_or_default();
                check(&sign(&header, rest));
            }
        }
    }
);
