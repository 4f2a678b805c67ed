//! Contract costs: cold verification (signature + parsing, once per contract and cache
//! entry) and the warm per-proof check a verifier or the enclave makes on a cached
//! contract (validity, subject, status bit, request rules).
//!
//! Also delegation chains (issue 24): `verify_chain` cold at depth 0, 1, 2 and 4 (each
//! link: its signature, parsing, linkage and attenuation), and `check_within` alone.
//!
//! Run: `nice -n 10 cargo bench -p cada-contract --bench contract`
use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use cada_contract::{
    Contract, Grant, OwnerAlg, OwnerKey, RequestView, StatusEntry, StatusList, Subject,
    TrustedOwners,
};
use cada_protocol::url::HttpUrl;
use criterion::{criterion_group, Criterion};

const NOW: u64 = 1_750_000_000;
const LIST: &str = "https://owner.example/status/1";

fn bench(c: &mut Criterion) {
    for alg in [OwnerAlg::Ed25519, OwnerAlg::Es256] {
        let owner = OwnerKey::generate(alg).unwrap();
        let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
        let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let mut g = Grant::new(
            Subject::Key(agent.did().to_owned()),
            vec![
                "https://api.example.com/v1".into(),
                "https://mcp.example.com/".into(),
            ],
            vec!["GET".into(), "POST".into()],
            NOW - 60,
            NOW + 3600,
        );
        g.scopes = vec!["docs:read".into()];
        g.tools = vec!["search".into()];
        g.required_ctx = vec!["task".into()];
        g.status = Some(StatusEntry::new(LIST, 42).unwrap());
        let jwt = g.issue(&owner, NOW).unwrap();
        let name = format!("{:?}", alg).to_lowercase();
        c.bench_function(&format!("contract_verify_cold_{name}"), |b| {
            b.iter(|| Contract::verify(black_box(&jwt), &trusted, NOW).unwrap());
        });
        if alg == OwnerAlg::Ed25519 {
            let list = StatusList::new(LIST, 0)
                .unwrap()
                .issue(&owner, NOW, None)
                .unwrap();
            c.bench_function("status_list_verify_16k", |b| {
                b.iter(|| StatusList::verify(black_box(&list), &trusted, NOW).unwrap());
            });
            let list = StatusList::verify(&list, &trusted, NOW).unwrap();
            let contract = Contract::verify(&jwt, &trusted, NOW).unwrap();
            let url = HttpUrl::parse_canonical("https://api.example.com/v1/docs/7").unwrap();
            let ctx = BTreeMap::from([("task".to_string(), "t-1".to_string())]);
            let scopes = vec!["docs:read".to_string()];
            let none = BTreeMap::new();
            let search = cada_protocol::mcp::McpCall {
                method: "tools/call".into(),
                target: Some("search".into()),
            };
            c.bench_function("contract_check_warm", |b| {
                b.iter(|| {
                    let c = black_box(&contract);
                    c.check_subject(black_box(agent.did()), &none).unwrap();
                    c.check_status(&list, NOW, NOW, 300).unwrap();
                    c.permits(
                        &RequestView {
                            method: "GET",
                            url: &url,
                            ctx: &ctx,
                            scopes: &scopes,
                            call: Some(&search),
                        },
                        NOW,
                    )
                    .unwrap();
                });
            });
        }
    }
}

/// A chain of `depth` delegations under an owner contract, each link signed by the
/// previous subject's key (Ed25519 keys standing in for enclave keys).
fn chain(depth: usize) -> (TrustedOwners, String) {
    use cada_contract::delegation::{split_chain, verify_chain, DelegationRules, Draft};
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let trusted = TrustedOwners::from_did_key(owner.did()).unwrap();
    let keys: Vec<OwnerKey> = (0..=depth)
        .map(|_| OwnerKey::generate(OwnerAlg::Ed25519).unwrap())
        .collect();
    let mut g = Grant::new(
        Subject::Key(keys[0].did().to_owned()),
        vec!["https://mcp.example.com/mcp".into()],
        vec!["GET".into(), "POST".into()],
        NOW - 60,
        NOW + 3600,
    );
    g.tools = vec!["search".into(), "fetch".into()];
    g.required_ctx = vec!["task".into()];
    g.budget = Some(1000);
    g.status = Some(StatusEntry::new(LIST, 42).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth: 8,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let mut text = g.issue(&owner, NOW).unwrap();
    for d in 1..=depth {
        let vc = verify_chain(&split_chain(&text).unwrap(), &trusted, NOW).unwrap();
        let index = 1000 + d as u64;
        let json = format!(
            r#"{{"tools": ["search"], "budget": {}, "delegation": {{"maxDepth": {}, "statusList": "{LIST}", "statusRange": [{}, 2000]}}}}"#,
            1000 - d,
            8 - d,
            index + 1
        );
        let mut next =
            cada_contract::narrow_grant(vc.leaf(), keys[d].did(), &json, NOW - 60, NOW + 600)
                .unwrap();
        next.status = Some(StatusEntry::new(LIST, index).unwrap());
        let draft = Draft::under(&vc, next, keys[d - 1].did(), NOW - 10).unwrap();
        draft.check(&vc).unwrap();
        let payload = draft.payload_bytes(&[7u8; 5000]).unwrap();
        let alg = cada_protocol::jwk::SigAlg::EdDSA;
        let input = draft
            .signing_input(&payload, alg, keys[d - 1].kid())
            .unwrap();
        let sig = keys[d - 1].sign_bytes(input.as_bytes()).unwrap();
        let link = draft
            .assemble(&payload, alg, keys[d - 1].kid(), &sig)
            .unwrap();
        text = format!("{text}~{link}");
    }
    (trusted, text)
}

fn bench_chain(c: &mut Criterion) {
    use cada_contract::delegation::{check_within, split_chain, verify_chain};
    for depth in [0, 1, 2, 4] {
        let (trusted, text) = chain(depth);
        c.bench_function(&format!("verify_chain_cold_depth_{depth}"), |b| {
            b.iter(|| {
                let parts = split_chain(black_box(&text)).unwrap();
                verify_chain(&parts, &trusted, NOW).unwrap()
            });
        });
        if depth == 1 {
            let vc = verify_chain(&split_chain(&text).unwrap(), &trusted, NOW).unwrap();
            c.bench_function("check_within", |b| {
                b.iter(|| check_within(black_box(&vc.root), black_box(vc.leaf())).unwrap());
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench, bench_chain
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
