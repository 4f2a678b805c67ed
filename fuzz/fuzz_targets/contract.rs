//! Trust contracts, status lists and owner locks (`cada-contract`): the compact JWS
//! splitter, the header rules, the signature check under the trusted owner, every field of
//! the credential, the GZIP bitstring, then the checks a verifier and an enclave run on
//! what verified.
//!
//! Input: one selector byte (contract, status list, lock), then the compact text. Seeds
//! are genuine documents of a fixed test owner, so mutations reach past the signature only
//! where they leave it intact. Oracle: whatever verifies is the fixed owner's.
#![no_main]

use std::collections::BTreeMap;

use cada_contract::{Contract, OwnerLock, RequestView, StatusList, MAX_CONTRACT_LEN};
use cada_fuzz::contract_setup::{owner, owners, CONTRACT_AT, ENCLAVE_DID};
use cada_protocol::url::HttpUrl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("contract");
    },
    |data: &[u8]| {
        let Some((&kind, rest)) = data.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let _ = Contract::decode_unverified(text);
        match kind % 3 {
            0 => {
                if let Ok(c) = Contract::verify(text, owners(), CONTRACT_AT) {
                    assert_eq!(c.owner(), owner().did());
                    let _ = c.check_subject(ENCLAVE_DID, &BTreeMap::new());
                    let ctx = BTreeMap::from([("task".to_string(), "t".to_string())]);
                    let search = cada_protocol::mcp::McpCall {
                        method: "tools/call".into(),
                        target: Some("search".into()),
                    };
                    for u in ["https://api.example.com/v1/x", "https://api.example.com.evil.net/"] {
                        if let Ok(url) = HttpUrl::parse_normalized(u) {
                            let view = RequestView {
                                method: "GET",
                                url: &url,
                                ctx: &ctx,
                                scopes: &[],
                                call: Some(&search),
                            };
                            let _ = c.permits(&view, CONTRACT_AT);
                        }
                    }
                    assert!(text.len() <= MAX_CONTRACT_LEN);
                }
            }
            1 => {
                if let Ok(l) = StatusList::verify(text, owners(), CONTRACT_AT) {
                    assert_eq!(l.issuer(), owner().did());
                    for i in [0, 1, 7, l.entries().saturating_sub(1), l.entries()] {
                        let _ = l.is_revoked(i);
                    }
                    let _ = l.check_fresh(l.valid_from(), CONTRACT_AT, 300);
                }
            }
            _ => {
                if let Ok(v) = OwnerLock::verify(text, ENCLAVE_DID, None, CONTRACT_AT) {
                    assert_eq!(v.owner(), owner().did());
                }
            }
        }
    }
);
