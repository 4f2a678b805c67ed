//! Issue 24: delegation signed inside the enclave — the `delegate` op of a planner
//! enclave, the install of the chain by a worker enclave locked to the same owner, and the
//! proofs the worker signs under it. The attenuation rule itself is the contract crate's
//! (`cada_contract::check_within`, tested there in every dimension); these tests check that
//! the enclave applies it before it signs, and what the enclave adds: the parent must be
//! installed and live, status indexes are never given twice, the chain must reach the
//! locked owner and name this key, and proofs name the chain (`cada.dch`).
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use cada_contract::{
    DelegationRules, Grant, OwnerAlg, OwnerKey, OwnerLock, StatusEntry, StatusList, Subject,
};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::token;
use cada_protocol::wire::{DelegateRequest, SignPopRequest};

use crate::authority::{Authority, DEFAULT_STATUS_MAX_AGE_SECS};
use crate::key::SigningKey;
use crate::signer::{DelegationPolicy, Signer};
use crate::EnclaveError;

const LIST: &str = "https://owner.example/status/1";
const API: &str = "https://api.example.com/";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signer() -> Signer {
    let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let sim = crate::platform::sim::Sim::new(None).unwrap();
    Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap()
}

fn lock(s: &Signer, owner: &OwnerKey) {
    let lock = OwnerLock::issue(owner, s.key().did(), now(), 300).unwrap();
    s.lock_owner(&lock).unwrap();
}

fn code<T: std::fmt::Debug>(r: Result<T, EnclaveError>) -> &'static str {
    match r {
        Err(EnclaveError::ContractDenied { code, .. }) => code,
        other => panic!("expected a contract refusal, got {other:?}"),
    }
}

/// The owner, its status list, a planner and a worker enclave locked to it, and the
/// planner's contract: GET and POST under API, tools search and fetch, a budget of 100,
/// status index 7, delegation `max_depth` levels in indexes 1000..2000.
struct Fleet {
    owner: OwnerKey,
    planner: Signer,
    worker: Signer,
    root: String,
    list: String,
}

fn fleet(max_depth: u8) -> Fleet {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (signer(), signer());
    lock(&planner, &owner);
    lock(&worker, &owner);
    let t = now();
    let mut g = Grant::new(
        Subject::Key(planner.key().did().into()),
        vec![API.into()],
        vec!["GET".into(), "POST".into()],
        t - 10,
        t + 600,
    );
    g.tools = vec!["search".into(), "fetch".into()];
    g.budget = Some(100);
    g.status = Some(StatusEntry::new(LIST, 7).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let root = g.issue(&owner, t - 10).unwrap();
    let list = revoking(&owner, &[], t - 5);
    planner.install_contract(&root, Some(&list)).unwrap();
    Fleet {
        owner,
        planner,
        worker,
        root,
        list,
    }
}

/// The owner's list with `revoked` set, issued at `at`.
fn revoking(owner: &OwnerKey, revoked: &[u64], at: u64) -> String {
    let mut l = StatusList::new(LIST, 4096).unwrap();
    for i in revoked {
        l.revoke(*i).unwrap();
    }
    l.issue(owner, at, None).unwrap()
}

fn ask(parent: &str, subject: &str, grant: serde_json::Value) -> DelegateRequest {
    DelegateRequest {
        parent: parent.into(),
        subject: subject.into(),
        grant: grant.to_string(),
        valid_until: 0,
        status_index: None,
        task: None,
    }
}

fn pop(htm: &str, htu: &str) -> SignPopRequest {
    SignPopRequest {
        htm: htm.into(),
        htu: htu.into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    }
}

fn payload(compact: &str) -> serde_json::Value {
    let p = compact.split('.').nth(1).unwrap();
    serde_json::from_slice(&cada_protocol::b64::decode("payload", p, 1 << 20).unwrap()).unwrap()
}

#[test]
fn a_delegation_is_signed_in_the_enclave_installed_by_the_worker_and_named_in_its_proofs() {
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let mut req = ask(
        &root_dtc,
        f.worker.key().did(),
        serde_json::json!({"audiences": ["https://api.example.com/v1"], "methods": ["GET"],
                           "tools": ["search"], "budget": 10}),
    );
    req.task = Some("T-42".into());
    let d = f.planner.delegate(&req).unwrap();
    let links: Vec<&str> = d.chain.split('~').collect();
    assert_eq!(links.len(), 2);
    assert_eq!(links[0], f.root);
    assert_eq!(d.digest, cada_contract::digest_of(links[1]));
    assert_eq!(
        d.status_index, 1000,
        "the first index of the parent's range"
    );
    // What the enclave signed: issued by its own key, for the worker, naming the parent,
    // carrying evidence of the planner's key (bound to the owner it is locked to).
    let p = payload(links[1]);
    assert_eq!(p["iss"], f.planner.key().did());
    assert_eq!(p["sub"], f.worker.key().did());
    assert_eq!(p["cadaDelegation"]["parent"], root_dtc.as_str());
    assert_eq!(p["cadaDelegation"]["depth"], 1);
    assert_eq!(p["credentialStatus"]["statusListIndex"], "1000");
    let ev = cada_protocol::b64::decode(
        "evidence",
        p["cadaDelegation"]["evidence"].as_str().unwrap(),
        1 << 16,
    )
    .unwrap();
    let env = EvidenceEnvelope::from_cbor(&ev).unwrap();
    let binding = KeyBinding::from_cbor(&env.binding).unwrap();
    assert_eq!(binding.did, f.planner.key().did());
    assert_eq!(binding.owner.as_deref(), Some(f.owner.did()));
    // Chained: `delegate digest subject parent task`.
    let events = f.planner.contracts().unwrap().events;
    let e = events.iter().rfind(|e| e.kind == "delegate").unwrap();
    assert_eq!(
        e.detail,
        format!("{} {} {root_dtc} T-42", d.digest, f.worker.key().did())
    );
    // The worker installs the chain with the owner's list; its summary names the chain.
    let s = f
        .worker
        .install_contracts(&d.chain, Some(&f.list), &[])
        .unwrap();
    assert_eq!(s.digest, d.digest);
    assert_eq!(s.chain, vec![root_dtc.clone()]);
    // Proofs under it: the leaf in cada.dtc, the links above it in cada.dch.
    let r = f
        .worker
        .sign_pop(&pop("GET", "https://api.example.com/v1/x"))
        .unwrap();
    let claims = token::parse_compact(&r.dpop).unwrap().claims;
    assert_eq!(claims.cada.dtc.as_deref(), Some(d.digest.as_str()));
    assert_eq!(claims.cada.dch, vec![root_dtc.clone()]);
    // Only within the delegation: another path and another method are the parent's only.
    assert_eq!(
        code(
            f.worker
                .sign_pop(&pop("GET", "https://api.example.com/v2/x"))
        ),
        "contract.not_permitted.audience"
    );
    assert_eq!(
        code(
            f.worker
                .sign_pop(&pop("POST", "https://api.example.com/v1/x"))
        ),
        "contract.not_permitted.method"
    );
    // The planner's own proofs, under the owner's contract, carry no chain.
    let r = f
        .planner
        .sign_pop(&pop("POST", "https://api.example.com/v2/x"))
        .unwrap();
    let claims = token::parse_compact(&r.dpop).unwrap().claims;
    assert_eq!(claims.cada.dtc.as_deref(), Some(root_dtc.as_str()));
    assert!(claims.cada.dch.is_empty());
}

#[test]
fn the_enclave_refuses_to_sign_anything_wider_than_its_parent() {
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let worker = f.worker.key().did();
    for (grant, want) in [
        (
            serde_json::json!({"audiences": ["https://other.example.com/"]}),
            "delegation.wider.audience",
        ),
        // A prefix of the parent's that is not on a segment boundary.
        (
            serde_json::json!({"audiences": ["https://api.example.com.evil.net/"]}),
            "delegation.wider.audience",
        ),
        (
            serde_json::json!({"methods": ["GET", "DELETE"]}),
            "delegation.wider.method",
        ),
        (
            serde_json::json!({"tools": ["search", "shell"]}),
            "delegation.wider.tool",
        ),
        (
            serde_json::json!({"budget": 1000}),
            "delegation.wider.budget",
        ),
        (
            serde_json::json!({"budget": null}),
            "delegation.wider.budget",
        ),
        (
            serde_json::json!({"delegation": {"maxDepth": 2}}),
            "delegation.depth",
        ),
    ] {
        assert_eq!(
            code(f.planner.delegate(&ask(&root_dtc, worker, grant.clone()))),
            want,
            "{grant}"
        );
    }
    // Longer than the parent lives.
    let mut long = ask(&root_dtc, worker, serde_json::json!({}));
    long.valid_until = now() + 3600;
    assert_eq!(code(f.planner.delegate(&long)), "delegation.wider.time");
    // Not a key.
    assert_eq!(
        code(
            f.planner
                .delegate(&ask(&root_dtc, "https://not.a.did/", serde_json::json!({})))
        ),
        "delegation.subject"
    );
    // Nothing signed, every refusal chained with its code.
    let events = f.planner.contracts().unwrap().events;
    assert!(!events.iter().any(|e| e.kind == "delegate"));
    assert!(events
        .iter()
        .any(|e| e.kind == "refusal" && e.detail.starts_with("delegation.wider.tool delegate ")));
}

#[test]
fn depth_is_bounded_by_every_contract_above() {
    // The owner lets the planner delegate two levels: the worker may delegate one more.
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let d1 = f
        .planner
        .delegate(&ask(
            &root_dtc,
            f.worker.key().did(),
            serde_json::json!({"delegation": {"maxDepth": 1}}),
        ))
        .unwrap();
    // The worker's own range: a block of the planner's that excludes its index.
    let p1 = payload(d1.chain.split('~').next_back().unwrap());
    let range = &p1["credentialSubject"]["delegation"]["statusRange"];
    assert_eq!(range, &serde_json::json!([1001, 1257]));
    f.worker
        .install_contracts(&d1.chain, Some(&f.list), &[])
        .unwrap();
    let third = signer();
    lock(&third, &f.owner);
    // One level more than the worker may give: refused.
    assert_eq!(
        code(f.worker.delegate(&ask(
            &d1.digest,
            third.key().did(),
            serde_json::json!({"delegation": {"maxDepth": 1}}),
        ))),
        "delegation.depth"
    );
    let d2 = f
        .worker
        .delegate(&ask(&d1.digest, third.key().did(), serde_json::json!({})))
        .unwrap();
    assert_eq!(d2.chain.split('~').count(), 3);
    assert_eq!(
        d2.status_index, 1001,
        "the first index of the worker's range"
    );
    let s = third
        .install_contracts(&d2.chain, Some(&f.list), &[])
        .unwrap();
    assert_eq!(
        s.chain,
        vec![root_dtc, d1.digest.clone()],
        "cada.dch: root and the middle link"
    );
    // The leaf may not delegate at all.
    let fourth = signer();
    assert_eq!(
        code(third.delegate(&ask(&d2.digest, fourth.key().did(), serde_json::json!({})))),
        "delegation.not_allowed"
    );
}

/// Review delegation-1, finding 1: an enclave refuses to delegate to its own key or to any
/// key already in the chain (`delegation.cycle`). Such a delegation, installed, would be a
/// fresh contract digest in the same enclave, so the budgets only an enclave counts (opens,
/// secret calls, signatures) would start again under it.
#[test]
fn the_enclave_refuses_to_delegate_to_a_key_already_in_the_chain() {
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let (planner, worker) = (f.planner.key().did(), f.worker.key().did());
    assert_eq!(
        code(
            f.planner
                .delegate(&ask(&root_dtc, planner, serde_json::json!({})))
        ),
        "delegation.cycle",
        "the planner to itself"
    );
    let d1 = f
        .planner
        .delegate(&ask(
            &root_dtc,
            worker,
            serde_json::json!({"delegation": {"maxDepth": 1}}),
        ))
        .unwrap();
    f.worker
        .install_contracts(&d1.chain, Some(&f.list), &[])
        .unwrap();
    for (to, who) in [
        (planner, "back to the planner"),
        (worker, "the worker to itself"),
    ] {
        assert_eq!(
            code(
                f.worker
                    .delegate(&ask(&d1.digest, to, serde_json::json!({})))
            ),
            "delegation.cycle",
            "{who}"
        );
    }
    // Nothing signed under the refusals, each chained with its code.
    let planner_events = f.planner.contracts().unwrap().events;
    assert_eq!(
        planner_events
            .iter()
            .filter(|e| e.kind == "delegate")
            .count(),
        1
    );
    assert!(planner_events
        .iter()
        .any(|e| e.kind == "refusal" && e.detail.starts_with("delegation.cycle delegate ")));
    let worker_events = f.worker.contracts().unwrap().events;
    assert!(!worker_events.iter().any(|e| e.kind == "delegate"));
    // Another key is still accepted below the worker.
    let third = signer();
    lock(&third, &f.owner);
    f.worker
        .delegate(&ask(&d1.digest, third.key().did(), serde_json::json!({})))
        .unwrap();
}

#[test]
fn status_indexes_are_never_given_twice() {
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let worker = f.worker.key().did();
    let with_index = |n: u64| {
        let mut r = ask(&root_dtc, worker, serde_json::json!({}));
        r.status_index = Some(n);
        r
    };
    assert_eq!(
        f.planner.delegate(&with_index(1005)).unwrap().status_index,
        1005
    );
    assert_eq!(
        code(f.planner.delegate(&with_index(1005))),
        "delegation.status"
    );
    // Outside the parent's range, or the parent's own index.
    assert_eq!(
        code(f.planner.delegate(&with_index(2000))),
        "delegation.status"
    );
    assert_eq!(
        code(f.planner.delegate(&with_index(7))),
        "delegation.status"
    );
    // The next free ones skip what was given, a delegatee's range included.
    let next = |g: serde_json::Value| {
        f.planner
            .delegate(&ask(&root_dtc, worker, g))
            .unwrap()
            .status_index
    };
    assert_eq!(next(serde_json::json!({})), 1000);
    // 1001..1005 becomes the delegatee's range, 1005 was given: its own index is 1006.
    assert_eq!(
        next(serde_json::json!({"delegation": {"maxDepth": 1, "statusRange": [1001, 1005]}})),
        1006
    );
    assert_eq!(
        code(f.planner.delegate(&with_index(1003))),
        "delegation.status"
    );
    // A delegatee's range over indexes given before.
    assert_eq!(
        code(f.planner.delegate(&ask(
            &root_dtc,
            worker,
            serde_json::json!({"delegation": {"maxDepth": 1, "statusRange": [1000, 1100]}}),
        ))),
        "delegation.status"
    );
    assert_eq!(next(serde_json::json!({})), 1007);
}

#[test]
fn the_parent_must_be_installed_live_and_unrevoked() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let planner = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let worker = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let t = now();
    let mut a = Authority::new(None, DEFAULT_STATUS_MAX_AGE_SECS).unwrap();
    a.lock(
        &OwnerLock::issue(&owner, planner.did(), t, 300).unwrap(),
        planner.did(),
        t,
    )
    .unwrap();
    let mut g = Grant::new(
        Subject::Key(planner.did().into()),
        vec![API.into()],
        vec!["GET".into()],
        t - 10,
        t + 600,
    );
    g.status = Some(StatusEntry::new(LIST, 7).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let root = g.issue(&owner, t - 10).unwrap();
    let root_dtc = cada_contract::digest_of(&root);
    let draft = |a: &mut Authority, parent: &str, at: u64| {
        a.delegation_draft(
            &ask(parent, worker.did(), serde_json::json!({})),
            planner.did(),
            at,
        )
        .map(|(d, _)| d)
    };
    // Not installed.
    assert_eq!(code(draft(&mut a, &root_dtc, t)), "contract.none");
    let clear = revoking(&owner, &[], t - 5);
    a.install(&root, Some(&clear), &[], planner.did(), &BTreeMap::new(), t)
        .unwrap();
    let d = draft(&mut a, &root_dtc, t).unwrap();
    assert_eq!(d.parent, root_dtc);
    assert_eq!(d.depth, 1);
    assert_eq!(
        d.grant.valid_until,
        t + 600,
        "the parent's end, within the hour"
    );
    assert!(d.grant.valid_from >= t - 60 && d.grant.valid_from <= t);
    // Expired.
    assert_eq!(code(draft(&mut a, &root_dtc, t + 600)), "contract.expired");
    // Revoked by a newer list the host installed with another contract: the parent stays
    // installed, but its status refuses.
    let mut g2 = g.clone();
    g2.status = Some(StatusEntry::new(LIST, 8).unwrap());
    g2.delegation = None;
    let other = g2.issue(&owner, t - 10).unwrap();
    let revoked = revoking(&owner, &[7], t - 1);
    a.install(
        &other,
        Some(&revoked),
        &[],
        planner.did(),
        &BTreeMap::new(),
        t,
    )
    .unwrap();
    assert_eq!(code(draft(&mut a, &root_dtc, t)), "contract.revoked");
    // Re-installed with that list: taken out, so no longer there.
    assert_eq!(
        code(a.install(&root, None, &[], planner.did(), &BTreeMap::new(), t)),
        "contract.revoked"
    );
    assert_eq!(code(draft(&mut a, &root_dtc, t)), "contract.none");
}

#[test]
fn a_chain_installs_only_for_its_own_key_below_the_locked_owner_and_unrevoked() {
    let f = fleet(2);
    let root_dtc = cada_contract::digest_of(&f.root);
    let d1 = f
        .planner
        .delegate(&ask(
            &root_dtc,
            f.worker.key().did(),
            serde_json::json!({"delegation": {"maxDepth": 1}}),
        ))
        .unwrap();
    // The planner presenting a chain to the worker's key as its own.
    assert_eq!(
        code(f.planner.install_contracts(&d1.chain, Some(&f.list), &[])),
        "contract.subject"
    );
    // An enclave locked to another owner.
    let other = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let stranger = signer();
    lock(&stranger, &other);
    assert_eq!(
        code(stranger.install_contracts(&d1.chain, None, &[])),
        "delegation.owner"
    );
    // Spliced: the link moved under another root of the same owner.
    let t = now();
    let mut g = Grant::new(
        Subject::Key(f.planner.key().did().into()),
        vec![API.into()],
        vec!["GET".into()],
        t - 10,
        t + 600,
    );
    g.delegation = Some(DelegationRules {
        max_depth: 2,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let other_root = g.issue(&f.owner, t - 10).unwrap();
    let leaf = d1.chain.split('~').next_back().unwrap();
    assert_eq!(
        code(
            f.worker
                .install_contracts(&format!("{other_root}~{leaf}"), Some(&f.list), &[])
        ),
        "delegation.link"
    );
    // Without the owner's list the links name: fails closed.
    assert_eq!(
        code(f.worker.install_contracts(&d1.chain, None, &[])),
        "contract.status_stale"
    );
    f.worker
        .install_contracts(&d1.chain, Some(&f.list), &[])
        .unwrap();
    // The worker delegates on; the owner revokes the middle link (the worker's): the
    // chain below it installs nowhere, and the worker's own proofs stop.
    let third = signer();
    lock(&third, &f.owner);
    let d2 = f
        .worker
        .delegate(&ask(&d1.digest, third.key().did(), serde_json::json!({})))
        .unwrap();
    let revoked = revoking(&f.owner, &[d1.status_index], now());
    let e = third
        .install_contracts(&d2.chain, Some(&revoked), &[])
        .unwrap_err();
    match e {
        EnclaveError::ContractDenied { code, message } => {
            assert_eq!(code, "contract.revoked");
            assert!(message.contains("depth 1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(f.worker.install_contracts(&d1.chain, Some(&revoked), &[])),
        "contract.revoked"
    );
    assert_eq!(
        code(f.worker.sign_pop(&pop("GET", "https://api.example.com/x"))),
        "contract.none"
    );
    // A chain too long for the format.
    let long = [d1.chain.as_str(); 10].join("~");
    assert_eq!(
        code(f.worker.install_contracts(&long, None, &[])),
        "delegation.too_large"
    );
}

#[test]
fn the_boot_flags_bound_what_an_enclave_delegates() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let policy = DelegationPolicy {
        url_prefixes: vec![
            cada_protocol::url::UrlPrefix::parse("https://api.example.com/v1").unwrap(),
        ],
        methods: vec!["GET".into()],
        ..DelegationPolicy::default()
    };
    let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let sim = crate::platform::sim::Sim::new(None).unwrap();
    let planner = Signer::new(key, Box::new(sim), policy).unwrap();
    lock(&planner, &owner);
    let t = now();
    let mut g = Grant::new(
        Subject::Key(planner.key().did().into()),
        vec![API.into()],
        vec!["GET".into(), "POST".into()],
        t - 10,
        t + 600,
    );
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let root = g.issue(&owner, t - 10).unwrap();
    planner.install_contract(&root, None).unwrap();
    let root_dtc = cada_contract::digest_of(&root);
    let worker = signer();
    let refused = |grant: serde_json::Value| {
        matches!(
            planner.delegate(&ask(&root_dtc, worker.key().did(), grant)),
            Err(EnclaveError::PolicyDenied(_))
        )
    };
    // The owner's contract is wider than the boot flags: so is a delegation of all of it.
    assert!(refused(serde_json::json!({})));
    assert!(refused(
        serde_json::json!({"audiences": ["https://api.example.com/v1"]})
    ));
    assert!(refused(serde_json::json!({"methods": ["GET"]})));
    assert!(!refused(serde_json::json!({
        "audiences": ["https://api.example.com/v1/items"], "methods": ["GET"]
    })));
}

/// A platform whose full evidence carries 40 KiB of optional bulk (a TPM's TCG event log)
/// and whose delegation evidence leaves it out, as [`crate::platform::tpm::Tpm`] does.
struct Bulky(crate::platform::sim::Sim);

impl crate::platform::Platform for Bulky {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        self.0.measurements()
    }
    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        let mut e = self.0.attest(binding, nonce)?;
        e.certs
            .push(serde_bytes::ByteBuf::from(vec![0x5a; 40 * 1024]));
        Ok(e)
    }
    fn attest_for_delegation(
        &self,
        binding: &[u8],
        nonce: &[u8],
    ) -> Result<EvidenceEnvelope, EnclaveError> {
        self.0.attest(binding, nonce)
    }
}

/// Issue 24: a delegator whose evidence carries an event log (a TPM: 40–48 KiB on real
/// machines) still delegates — the enclave attests a delegation without the optional bulk
/// (`Platform::attest_for_delegation`), so the evidence fits `MAX_EVIDENCE_LEN` (24 KiB)
/// inside a 48 KiB link. Before, the delegate op attested with the full evidence and every
/// TPM delegator with an event log was refused.
#[test]
fn a_delegator_with_bulky_evidence_attests_its_delegations_without_it() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
    let planner = Signer::new(
        key,
        Box::new(Bulky(crate::platform::sim::Sim::new(None).unwrap())),
        DelegationPolicy::default(),
    )
    .unwrap();
    let worker = signer();
    lock(&planner, &owner);
    lock(&worker, &owner);
    let t = now();
    let mut g = Grant::new(
        Subject::Key(planner.key().did().into()),
        vec![API.into()],
        vec!["GET".into()],
        t - 10,
        t + 600,
    );
    g.status = Some(StatusEntry::new(LIST, 7).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let root = g.issue(&owner, t - 10).unwrap();
    let list = revoking(&owner, &[], t - 5);
    planner.install_contract(&root, Some(&list)).unwrap();
    // Its proofs' evidence keeps everything.
    assert!(planner.attest(&[]).unwrap().to_cbor().len() > 40 * 1024);
    let d = planner
        .delegate(&ask(
            &cada_contract::digest_of(&root),
            worker.key().did(),
            serde_json::json!({}),
        ))
        .expect("a delegation with the compact evidence");
    let link = d.chain.split('~').nth(1).unwrap();
    assert!(
        link.len() <= cada_contract::MAX_DELEGATION_LEN,
        "{}",
        link.len()
    );
    worker.install_contract(&d.chain, Some(&list)).unwrap();
}
