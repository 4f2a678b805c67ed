//! Contract costs: cold verification (signature + parsing, once per contract and cache
//! entry) and the warm per-proof check a verifier or the enclave makes on a cached
//! contract (validity, subject, status bit, request rules).
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
