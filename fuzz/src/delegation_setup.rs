//! Fixed enclave keys (Ed25519 from fixed seeds: test keys, not secrets) and a genuine chain
//! owner → planner → worker → helper for the `delegation_chain` target, so that seeds written
//! by one process verify in another, and the structure-aware mode can re-sign edited links
//! with the key each position's issuer holds.
use std::sync::OnceLock;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use cada_contract::delegation::{split_chain, verify_chain, DelegationRules, Draft};
use cada_contract::{
    AuditLevel, AuthorizationDetail, Grant, OpenGrant, PublicKey, SecretGrant, StatusEntry, Subject,
};
use cada_protocol::b64;

use crate::contract_setup::{owner, owners, CONTRACT_AT};

/// Verification time of the target (the `contract` target's).
pub const CHAIN_AT: u64 = CONTRACT_AT;
/// The owner's status list every link takes its entry from.
pub const LIST: &str = "https://owner.example/status/1";

/// One enclave key: 0 planner, 1 worker, 2 helper.
pub struct EnclaveKey {
    /// The key pair.
    pub pair: Ed25519KeyPair,
    /// Its public key.
    pub public: PublicKey,
}

/// The three enclave keys.
pub fn enclaves() -> &'static [EnclaveKey; 3] {
    static K: OnceLock<[EnclaveKey; 3]> = OnceLock::new();
    K.get_or_init(|| {
        [1u8, 2, 3].map(|n| {
            let pair = Ed25519KeyPair::from_seed_unchecked(&[n; 32]).expect("a 32-byte seed");
            let raw: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
            EnclaveKey {
                pair,
                public: PublicKey::ed25519(raw),
            }
        })
    })
}

impl EnclaveKey {
    /// Signs a delegation payload (JSON) under this key's delegation header.
    pub fn sign_payload(&self, payload: &[u8]) -> String {
        let header = serde_json::json!({
            "alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": self.public.did_key_url()
        });
        let input = format!(
            "{}.{}",
            b64::encode(header.to_string()),
            b64::encode(payload)
        );
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", b64::encode(sig.as_ref()))
    }
}

fn rules(max_depth: u8, start: u64, end: u64) -> Option<DelegationRules> {
    Some(DelegationRules {
        max_depth,
        status_list: LIST.into(),
        status_range: [start, end],
    })
}

/// The owner's contract for the planner: something in every dimension.
fn root_grant() -> Grant {
    let planner = enclaves()[0].public.did_key();
    let mut g = Grant::new(
        Subject::Key(planner),
        vec![
            "https://mcp.example.com/mcp".into(),
            "https://api.example.com/v1/".into(),
        ],
        vec!["GET".into(), "POST".into()],
        CHAIN_AT - 600,
        CHAIN_AT + 3600,
    );
    g.scopes = vec!["docs:read".into()];
    g.tools = vec!["search".into(), "fetch".into()];
    g.resources = vec!["file:///srv/public/".into()];
    g.prompts = vec!["plan".into()];
    g.secrets = vec![SecretGrant {
        name: "gh".into(),
        prefix: "https://api.github.com/repos/acme".into(),
        methods: vec!["GET".into()],
    }];
    g.opens = vec![OpenGrant {
        label: "notes".into(),
        budget: 10,
    }];
    g.required_ctx = vec!["task".into()];
    g.budget = Some(1000);
    g.rate_per_second = Some(10);
    g.audit = AuditLevel::Standard;
    g.status = StatusEntry::new(LIST, 5).ok();
    g.step_up = Some("https://approve.example.com/".into());
    g.authorization_details = AuthorizationDetail::parse(
        r#"{"type": "mcp_tool_call", "locations": ["https://ops.example.com/mcp"],
            "actions": ["tools/call"], "tool": "deploy", "arguments": {"env": {"eq": "staging"}},
            "identifier": "urn:uuid:00000000-0000-4000-8000-0000000000d1"}"#,
    )
    .ok()
    .into_iter()
    .collect();
    g.delegation = rules(2, 1000, 2000);
    g
}

/// Extends `chain` by one link from enclave `from` to enclave `to` with `narrow` (JSON).
fn extend(
    chain: &str,
    from: usize,
    to: usize,
    narrow: &str,
    index: u64,
    at: u64,
) -> Option<String> {
    let parts = split_chain(chain).ok()?;
    let vc = verify_chain(&parts, owners(), at).ok()?;
    let keys = enclaves();
    let mut g = cada_contract::narrow_grant(
        vc.leaf(),
        &keys[to].public.did_key(),
        narrow,
        CHAIN_AT - 300,
        CHAIN_AT + 1800,
    )
    .ok()?;
    g.status = StatusEntry::new(LIST, index).ok();
    let draft = Draft::under(&vc, g, &keys[from].public.did_key(), at).ok()?;
    draft.check(&vc).ok()?;
    let nonce = draft.evidence_nonce().ok()?;
    let payload = draft.payload_bytes(&nonce).ok()?;
    let kid = keys[from].public.did_key_url();
    let input = draft
        .signing_input(&payload, cada_protocol::jwk::SigAlg::EdDSA, &kid)
        .ok()?;
    let sig = keys[from].pair.sign(input.as_bytes());
    let link = draft
        .assemble(
            &payload,
            cada_protocol::jwk::SigAlg::EdDSA,
            &kid,
            sig.as_ref(),
        )
        .ok()?;
    Some(format!("{chain}~{link}"))
}

/// The genuine chains: the root alone, root~D1 (planner → worker, may delegate one more
/// level), root~D1~D2 (worker → helper).
pub fn chains() -> &'static [String] {
    static C: OnceLock<Vec<String>> = OnceLock::new();
    C.get_or_init(|| {
        let Ok(root) = root_grant().issue(owner(), CHAIN_AT - 900) else {
            return Vec::new();
        };
        let mut out = vec![root.clone()];
        let d1 = extend(
            &root,
            0,
            1,
            r#"{"tools": ["search"], "budget": 100, "audit": "full",
                "delegation": {"maxDepth": 1, "statusList": "https://owner.example/status/1",
                               "statusRange": [1600, 1700]}}"#,
            1500,
            CHAIN_AT - 200,
        );
        if let Some(d1) = d1 {
            out.push(d1.clone());
            if let Some(d2) = extend(
                &d1,
                1,
                2,
                r#"{"methods": ["POST"], "audiences": ["https://mcp.example.com/mcp/tools"]}"#,
                1650,
                CHAIN_AT - 100,
            ) {
                out.push(d2);
            }
        }
        out
    })
}

/// Seeds: each genuine chain as text (mode 0), and structure-aware edit lists (mode 1).
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = chains()
        .iter()
        .map(|c| [&[0u8][..], c.as_bytes()].concat())
        .collect();
    // Mode 1: no edit; each kind of edit once on each link; a few pairs.
    out.push(vec![1]);
    for link in 0..2u8 {
        for edit in 0..24u8 {
            out.push(vec![1, link, edit, 0]);
            out.push(vec![1, link | 0x80, edit, 3]);
        }
    }
    out.push(vec![1, 0, 2, 1, 1, 5, 2]);
    out
}
