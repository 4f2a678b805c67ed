//! Rule 13 for delegation chains (issue 24): every refusal only a verifier can make, with
//! real `sim` evidence from the enclave's platform and delegations signed by the
//! delegator's enclave key as the enclave signs them (`Draft` → evidence for its nonce →
//! `assemble`).
use cada_attestation_verifier::chain::TrustAnchor;
use cada_attestation_verifier::decide::{Decision, Exchange, Request, Stores, RULES};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_contract::delegation::{verify_chain, DelegationRules, Draft};
use cada_contract::{
    Grant, OwnerAlg, OwnerKey, OwnerLock, PublicKey, StatusEntry, StatusList, Subject,
    TrustedOwners,
};
use cada_enclave::key::SigningKey;
use cada_enclave::platform::sim::Sim;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::SigAlg;
use cada_protocol::token::{CadaClaim, PopClaims, PopHeader};

const URL: &str = "https://api.example.com/v1/orders";
const LIST: &str = "https://owner.example/status/1";

fn now() -> UnixTime {
    UnixTime::now()
}

fn secs() -> u64 {
    now().as_secs()
}

/// One enclave on the `sim` platform, locked to an owner.
struct Agent {
    signer: Signer,
    env: EvidenceEnvelope,
    root: Vec<u8>,
    /// `PCR0` (sim) or `MEASUREMENT` (sim-snp).
    pcr0: String,
    snp: bool,
}

impl Agent {
    fn new(owner: &OwnerKey) -> Self {
        let sim = Sim::new(None).unwrap();
        let root = sim.root_der().to_vec();
        Self::locked(owner, Box::new(sim), root, false)
    }

    /// An enclave on the `sim-snp` platform (SEV-SNP reports: no time in them).
    fn new_snp(owner: &OwnerKey) -> Self {
        let snp = cada_enclave::platform::sim_snp::SimSnp::new(None).unwrap();
        let root = snp.root_der().to_vec();
        Self::locked(owner, Box::new(snp), root, true)
    }

    fn locked(
        owner: &OwnerKey,
        platform: Box<dyn cada_enclave::platform::Platform>,
        root: Vec<u8>,
        snp: bool,
    ) -> Self {
        let signer = Signer::new(
            SigningKey::generate(SigAlg::EdDSA).unwrap(),
            platform,
            DelegationPolicy::default(),
        )
        .unwrap();
        let lock = OwnerLock::issue(owner, signer.key().did(), secs(), 300).unwrap();
        let env = EvidenceEnvelope::from_cbor(&signer.lock_owner(&lock).unwrap().envelope).unwrap();
        let name = if snp { "MEASUREMENT" } else { "PCR0" };
        let pcr0 = signer.measurements().unwrap()[name].clone();
        Agent {
            signer,
            env,
            root,
            pcr0,
            snp,
        }
    }

    fn did(&self) -> &str {
        self.signer.key().did()
    }

    /// A proof for `POST URL` under contract `dtc` naming the chain `dch` above it.
    fn proof(&self, dtc: &str, dch: &[String]) -> String {
        self.proof_for(URL, dtc, dch)
    }

    /// A proof for `POST htu` under contract `dtc` naming the chain `dch` above it.
    fn proof_for(&self, htu: &str, dtc: &str, dch: &[String]) -> String {
        let header = PopHeader {
            typ: "dpop+jwt".into(),
            alg: "EdDSA".into(),
            jwk: self.signer.key().jwk().clone(),
        };
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).unwrap();
        let claims = PopClaims {
            jti: hex::encode(jti),
            htm: "POST".into(),
            htu: htu.into(),
            iat: secs(),
            exp: secs() + 30,
            ath: None,
            nonce: None,
            cada: CadaClaim {
                att: self.env.att_digest(),
                seq: 1,
                chain: "AAAA".into(),
                dtc: Some(dtc.into()),
                dch: dch.to_vec(),
                ..CadaClaim::default()
            },
        };
        let input = cada_protocol::token::signing_input(&header, &claims).unwrap();
        let sig = self.signer.key().sign(input.as_bytes()).unwrap();
        format!("{input}.{}", cada_protocol::b64::encode(&sig))
    }

    /// Delegates `grant` (its subject the delegatee) under the leaf of `chain` (`C0~…`),
    /// signed by this enclave with evidence made for `nonce_of(draft)` at `iat`; returns
    /// the longer chain.
    fn delegate(
        &self,
        owner: &OwnerKey,
        chain: &str,
        grant: Grant,
        iat: u64,
        nonce_of: impl FnOnce(&Draft) -> Vec<u8>,
    ) -> String {
        let parts: Vec<&str> = chain.split('~').collect();
        let verified = verify_chain(&parts, &owners(owner), secs()).unwrap();
        let draft = Draft::under(&verified, grant, self.did(), iat).unwrap();
        let env = self.signer.attest(&nonce_of(&draft)).unwrap();
        let payload = draft.payload_bytes(&env.to_cbor()).unwrap();
        let kid = PublicKey::from_did_key(self.did()).unwrap().did_key_url();
        let input = draft.signing_input(&payload, SigAlg::EdDSA, &kid).unwrap();
        let sig = self.signer.key().sign(input.as_bytes()).unwrap();
        let d = draft.assemble(&payload, SigAlg::EdDSA, &kid, &sig).unwrap();
        format!("{chain}~{d}")
    }

    /// [`Agent::delegate`] with evidence for the draft's own nonce, issued now.
    fn delegate_now(&self, owner: &OwnerKey, chain: &str, grant: Grant) -> String {
        self.delegate(owner, chain, grant, secs(), |d| {
            d.evidence_nonce().unwrap().to_vec()
        })
    }
}

fn owners(owner: &OwnerKey) -> TrustedOwners {
    TrustedOwners::from_did_key(owner.did()).unwrap()
}

/// The owner's contract for `agent`, which may delegate `max_depth` levels from the
/// status range [1000, 2000).
fn root_contract(owner: &OwnerKey, agent: &Agent, max_depth: u8) -> String {
    let mut g = Grant::new(
        Subject::Key(agent.did().into()),
        vec!["https://api.example.com/v1".into()],
        vec!["POST".into(), "GET".into()],
        secs() - 10,
        secs() + 3000,
    );
    g.status = Some(StatusEntry::new(LIST, 9).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    g.issue(owner, secs()).unwrap()
}

/// A narrower grant for `to` under the leaf of `chain`: POST only, valid 600 s, status
/// index `index`; `deeper`: it may delegate once more, from [1500, 1600).
fn narrower(owner: &OwnerKey, chain: &str, to: &Agent, index: u64, deeper: bool) -> Grant {
    let parts: Vec<&str> = chain.split('~').collect();
    let v = verify_chain(&parts, &owners(owner), secs()).unwrap();
    let mut g = Grant::from_verified(v.leaf());
    g.subject = Subject::Key(to.did().into());
    g.methods = vec!["POST".into()];
    g.valid_until = secs() + 600;
    g.status = Some(StatusEntry::new(LIST, index).unwrap());
    g.delegation = deeper.then(|| DelegationRules {
        max_depth: 1,
        status_list: LIST.into(),
        status_range: [1500, 1600],
    });
    g
}

/// A verifier for the audience `https://api.example.com/v1`, trusting the agents' sim roots
/// and `owner`, with `extra` audience keys; the owner's status list (with `revoked`) held.
fn verifier(owner: &OwnerKey, agents: &[&Agent], extra: &str, revoked: &[u64]) -> Verifier {
    let mut p = Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n{extra}\n",
            agents[0].pcr0,
            owner.did()
        ),
        std::path::Path::new("."),
        "test",
    )
    .unwrap();
    for a in agents {
        if a.snp {
            p.snp_roots
                .add(TrustAnchor::from_der("sim-snp", &a.root).unwrap());
        } else {
            p.nitro_roots
                .add(TrustAnchor::from_der("sim", &a.root).unwrap());
        }
    }
    let v = Verifier::new(p, VerifierOptions::default());
    let mut list = StatusList::new(LIST, 131_072).unwrap();
    for i in revoked {
        list.revoke(*i).unwrap();
    }
    let compact = list.issue(owner, secs(), None).unwrap();
    v.install_status_list(&compact, secs(), now()).unwrap();
    v
}

fn decide(v: &Verifier, agent: &Agent, dpop: &str, chain: Option<&str>) -> Decision {
    let replay = MemoryReplayStore::new(64);
    let nonces = NonceIssuer::new(&[7u8; 32]);
    v.decide(
        &Request {
            method: "POST",
            url: URL,
            dpop,
            access_token: None,
            evidence: Some(&agent.env),
            contract: chain,
            body: None,
        },
        now(),
        Stores {
            replay: &replay,
            nonces: Some(&nonces),
        },
    )
}

/// The digests of a chain's links, root first.
fn digests(chain: &str) -> Vec<String> {
    chain.split('~').map(cada_contract::digest_of).collect()
}

/// The proof `agent` makes under the leaf of `chain`, naming the links above it.
fn proof_under(agent: &Agent, chain: &str) -> String {
    let mut d = digests(chain);
    let leaf = d.pop().unwrap();
    agent.proof(&leaf, &d)
}

/// `agent` presents `chain` with its proof under the chain's leaf (a cold request).
fn decide_under(v: &Verifier, agent: &Agent, chain: &str) -> Decision {
    decide(v, agent, &proof_under(agent, chain), Some(chain))
}

/// Owner → planner (C0, depth 2) → worker (D1, index 1001): the chain most tests start from,
/// as `(owner, planner, worker, c0, chain)`.
fn two_links() -> (OwnerKey, Agent, Agent, String, String) {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1001, false));
    (owner, planner, worker, c0, chain)
}

#[track_caller]
fn refused(d: &Decision, code: &str) -> String {
    match d {
        Decision::Refuse(r) => {
            assert_eq!(r.code(), code, "{r}");
            assert_eq!(r.rule(), 13, "{r}");
            let family = code.split('.').next().unwrap_or(code);
            assert!(RULES[12].1.contains(family), "rule 13 does not list {code}");
            r.to_string()
        }
        Decision::Accept(a) => panic!("accepted, wanted {code}: {:?}", a.contract),
    }
}

const DEPTH_2: &str = "max_delegation_depth = 2";

/// Owner → planner (C0) → worker (D1): accepted within the policy's depth; the chain is
/// reported root first; a warm proof needs no header.
#[test]
fn a_delegated_chain_is_accepted_reported_and_cached() {
    let (owner, planner, worker, _, chain) = two_links();
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    let d = decide_under(&v, &worker, &chain);
    let a = d.accepted().unwrap_or_else(|| panic!("{:?}", d.refusal()));
    let info = a.contract.as_ref().unwrap();
    assert_eq!(info.digest, digests(&chain)[1]);
    assert_eq!(info.owner, owner.did());
    let links: Vec<(&str, &str, &str)> = info
        .chain
        .iter()
        .map(|l| (l.digest.as_str(), l.issuer.as_str(), l.subject.as_str()))
        .collect();
    let ds = digests(&chain);
    assert_eq!(
        links,
        vec![
            (ds[0].as_str(), owner.did(), planner.did()),
            (ds[1].as_str(), planner.did(), worker.did())
        ]
    );
    // Warm: found by the leaf's digest.
    let d = decide(&v, &worker, &proof_under(&worker, &chain), None);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
}

/// `max_delegation_depth` defaults to 0 (opt-in), and bounds deeper chains.
#[test]
fn a_chain_deeper_than_the_policy_allows_is_refused() {
    let (owner, planner, worker, _, chain) = two_links();
    let v = verifier(&owner, &[&worker, &planner], "", &[]);
    let m = refused(&decide_under(&v, &worker, &chain), "delegation.depth");
    assert!(m.contains("max_delegation_depth"), "{m}");
}

/// The delegator's evidence must carry the link's own nonce (parent, subject, id, iat).
#[test]
fn evidence_made_for_another_delegation_is_refused() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    let g = narrower(&owner, &c0, &worker, 1001, false);
    let chain = planner.delegate(&owner, &c0, g, secs(), |_| vec![7u8; 32]);
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    refused(&decide_under(&v, &worker, &chain), "delegation.evidence");
}

/// `delegator_measurements`: a delegator whose image the policy does not list.
#[test]
fn a_delegator_image_the_policy_rejects_is_refused() {
    let (owner, planner, worker, _, chain) = two_links();
    let other = "ab".repeat(48);
    let v = verifier(
        &owner,
        &[&worker, &planner],
        &format!("{DEPTH_2}\ndelegator_measurements = [{{ PCR0 = \"{other}\" }}]"),
        &[],
    );
    refused(
        &decide_under(&v, &worker, &chain),
        "delegation.delegator_image",
    );
    // The same chain where the policy lists the delegator's image.
    let ok = verifier(
        &owner,
        &[&worker, &planner],
        &format!(
            "{DEPTH_2}\ndelegator_measurements = [{{ PCR0 = \"{}\" }}]",
            planner.pcr0
        ),
        &[],
    );
    let d = decide_under(&ok, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
}

/// A Nitro-format delegator's document must be made at the link's iat (within the skew);
/// and no link is trusted longer than `max_delegation_lifetime_secs` after its iat.
#[test]
fn stale_delegator_evidence_and_overlong_links_are_refused() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    // Evidence made now for a link that says it was issued 8 s ago, under a policy
    // allowing 2 s between the two.
    let g = narrower(&owner, &c0, &worker, 1001, false);
    let chain = planner.delegate(&owner, &c0, g, secs() - 8, |d| {
        d.evidence_nonce().unwrap().to_vec()
    });
    let v = verifier(
        &owner,
        &[&worker, &planner],
        &format!("{DEPTH_2}\ndelegation_evidence_skew_secs = 2"),
        &[],
    );
    let m = refused(&decide_under(&v, &worker, &chain), "delegation.stale");
    assert!(m.contains("delegation_evidence_skew_secs"), "{m}");
    // A link valid for 600 s, under a policy trusting delegators for 300 s.
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1002, false));
    let v = verifier(
        &owner,
        &[&worker, &planner],
        &format!("{DEPTH_2}\nmax_delegation_lifetime_secs = 300"),
        &[],
    );
    let m = refused(&decide_under(&v, &worker, &chain), "delegation.stale");
    assert!(m.contains("max_delegation_lifetime_secs"), "{m}");
}

/// A delegator locked to another owner than the chain's root owner.
#[test]
fn a_delegator_of_another_owner_is_refused() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let mallory = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let planner = Agent::new(&mallory);
    let worker = Agent::new(&owner);
    let c0 = root_contract(&owner, &planner, 2);
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1001, false));
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    refused(&decide_under(&v, &worker, &chain), "delegation.owner");
}

/// Owner → planner → middle → worker; the owner revokes the middle link's status entry:
/// the worker's chain is refused (also warm, from the cache).
#[test]
fn a_revoked_middle_link_revokes_the_chain_below_it() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, middle, worker) = (Agent::new(&owner), Agent::new(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    let d1 = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &middle, 1001, true));
    let chain = middle.delegate_now(&owner, &d1, narrower(&owner, &d1, &worker, 1501, false));
    let v = verifier(&owner, &[&worker, &planner, &middle], DEPTH_2, &[]);
    let d = decide_under(&v, &worker, &chain);
    let a = d.accepted().unwrap_or_else(|| panic!("{:?}", d.refusal()));
    assert_eq!(a.contract.as_ref().unwrap().chain.len(), 3);
    // The owner revokes entry 1001 (the middle link); the verifier fetches the new list.
    let mut list = StatusList::new(LIST, 131_072).unwrap();
    list.revoke(1001).unwrap();
    let revoked = list.issue(&owner, secs() + 1, None).unwrap();
    v.install_status_list(&revoked, secs(), now()).unwrap();
    let m = refused(
        &decide(&v, &worker, &proof_under(&worker, &chain), None),
        "contract.revoked",
    );
    assert!(m.contains("link 1"), "{m}");
    // Too deep for a policy of depth 1.
    let v1 = verifier(
        &owner,
        &[&worker, &planner, &middle],
        "max_delegation_depth = 1",
        &[],
    );
    refused(&decide_under(&v1, &worker, &chain), "delegation.depth");
}

/// The proof key must be the leaf's subject: a worker presenting the planner's contract as
/// its own, or a planner signing under the worker's delegation.
#[test]
fn a_proof_key_other_than_the_leafs_subject_is_refused() {
    let (owner, planner, worker, c0, chain) = two_links();
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    // The worker names the planner's contract.
    refused(
        &decide(&v, &worker, &worker.proof(&digests(&c0)[0], &[]), Some(&c0)),
        "contract.subject",
    );
    // The planner names the worker's delegation.
    refused(&decide_under(&v, &planner, &chain), "contract.subject");
}

/// `cada.dch` must be exactly the chain above the leaf, root first.
#[test]
fn a_proof_naming_another_chain_is_refused() {
    let (owner, planner, worker, c0, chain) = two_links();
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    let leaf = digests(&chain)[1].clone();
    for dch in [
        vec![],
        vec![leaf.clone()],
        vec![digests(&c0)[0].clone(), leaf.clone()],
    ] {
        refused(
            &decide(&v, &worker, &worker.proof(&leaf, &dch), Some(&chain)),
            "delegation.link",
        );
    }
    // An owner contract used directly with a dch.
    refused(
        &decide(
            &v,
            &planner,
            &planner.proof(&digests(&c0)[0], &[leaf]),
            Some(&c0),
        ),
        "delegation.link",
    );
}

/// A token exchange at an STS takes the chain the same way (the exchange's contract), and
/// the accepted exchange reports it (what the token's nested `act` and `cada_dch` are
/// made from); a verifier holding no status list yet wants every link's list fetched.
#[test]
fn a_token_exchange_takes_a_chain_and_every_links_list_is_wanted() {
    let (owner, planner, worker, _, chain) = two_links();
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    let token_url = "https://sts.example/token";
    let mut d = digests(&chain);
    let leaf = d.pop().unwrap();
    let dpop = worker.proof_for(token_url, &leaf, &d);
    let nonces = NonceIssuer::new(&[7u8; 32]);
    let pending = v
        .evaluate_exchange(
            &Request {
                method: "POST",
                url: token_url,
                dpop: &dpop,
                access_token: None,
                evidence: Some(&worker.env),
                contract: Some(&chain),
                body: None,
            },
            &Exchange {
                resource: "https://api.example.com/v1/orders",
                scopes: &[],
                authorization_details: &[],
            },
            now(),
            Some(&nonces),
        )
        .unwrap_or_else(|r| panic!("{r}"));
    let info = pending.accepted().contract.clone().unwrap();
    assert_eq!(info.digest, leaf);
    assert_eq!(
        info.chain
            .iter()
            .map(|l| l.issuer.as_str())
            .collect::<Vec<_>>(),
        vec![owner.did(), planner.did()]
    );
    // No list held yet: refused (fails closed) and the list is wanted.
    let mut p = Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n{DEPTH_2}\n",
            worker.pcr0,
            owner.did()
        ),
        std::path::Path::new("."),
        "test",
    )
    .unwrap();
    for a in [&worker, &planner] {
        p.nitro_roots
            .add(TrustAnchor::from_der("sim", &a.root).unwrap());
    }
    let fresh = Verifier::new(p, VerifierOptions::default());
    refused(
        &decide_under(&fresh, &worker, &chain),
        "contract.status_stale",
    );
    assert_eq!(fresh.wanted_status_lists(), vec![LIST.to_string()]);
}

/// The SEV-SNP freshness rule: a report carries no time, so a `sim-snp` delegator's report
/// is bound to its link by the nonce alone and counted as of the link's `iat` — a link
/// issued some seconds before its report was made is accepted where a Nitro document's
/// time would refuse it — and is relied on only for the link's lifetime, at most
/// `max_delegation_lifetime_secs`.
#[test]
fn an_snp_delegator_is_bound_by_its_nonce_and_trusted_for_the_links_lifetime() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new_snp(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    let g = narrower(&owner, &c0, &worker, 1001, false);
    let chain = planner.delegate(&owner, &c0, g, secs() - 8, |d| {
        d.evidence_nonce().unwrap().to_vec()
    });
    let sets = format!(
        "{DEPTH_2}\ndelegation_evidence_skew_secs = 2\ndelegator_measurements = [{{ MEASUREMENT = \"{}\" }}]",
        planner.pcr0
    );
    let v = verifier(&owner, &[&worker, &planner], &sets, &[]);
    let d = decide_under(&v, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
    // Over the lifetime cap: refused, whatever the platform.
    let v = verifier(
        &owner,
        &[&worker, &planner],
        &format!("{sets}\nmax_delegation_lifetime_secs = 300"),
        &[],
    );
    refused(&decide_under(&v, &worker, &chain), "delegation.stale");
    // A report for another nonce binds nothing.
    let g = narrower(&owner, &c0, &worker, 1002, false);
    let chain = planner.delegate(&owner, &c0, g, secs(), |_| vec![1u8; 32]);
    let v = verifier(&owner, &[&worker, &planner], &sets, &[]);
    refused(&decide_under(&v, &worker, &chain), "delegation.evidence");
}

/// A root contract made for an image (measurements), not a key: any enclave of that image
/// may delegate under it, and the verifier holds the delegator's evidence to the set.
#[test]
fn a_parent_made_for_measurements_is_met_by_the_delegators_evidence() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new(&owner), Agent::new(&owner));
    let for_image = |pcr0: &str| {
        let mut g = Grant::new(
            Subject::Measurements(vec![std::collections::BTreeMap::from([(
                "PCR0".to_string(),
                pcr0.to_string(),
            )])]),
            vec!["https://api.example.com/v1".into()],
            vec!["POST".into()],
            secs() - 10,
            secs() + 3000,
        );
        g.delegation = Some(DelegationRules {
            max_depth: 1,
            status_list: LIST.into(),
            status_range: [1000, 2000],
        });
        g.issue(&owner, secs()).unwrap()
    };
    let v = verifier(&owner, &[&worker, &planner], DEPTH_2, &[]);
    let c0 = for_image(&planner.pcr0);
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1001, false));
    let d = decide_under(&v, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
    // Made for another image: the planner's evidence does not meet it.
    let c0 = for_image(&"ab".repeat(48));
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1002, false));
    refused(
        &decide_under(&v, &worker, &chain),
        "delegation.delegator_image",
    );
}

/// A chain verified under one audience is checked again under another one's rules, from
/// the chain the verifier holds (no header needed): here a shorter lifetime cap.
#[test]
fn a_cached_chain_meets_each_audiences_own_rules() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, worker) = (Agent::new(&owner), Agent::new(&owner));
    let mut g = Grant::new(
        Subject::Key(planner.did().into()),
        vec!["https://api.example.com/".into()],
        vec!["POST".into()],
        secs() - 10,
        secs() + 3000,
    );
    g.status = Some(StatusEntry::new(LIST, 9).unwrap());
    g.delegation = Some(DelegationRules {
        max_depth: 1,
        status_list: LIST.into(),
        status_range: [1000, 2000],
    });
    let c0 = g.issue(&owner, secs()).unwrap();
    let chain = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &worker, 1001, false));
    let v = verifier(
        &owner,
        &[&worker, &planner],
        &format!(
            "{DEPTH_2}\n[[audience]]\nprefix = \"https://api.example.com/v2\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\nowners = [\"{}\"]\n{DEPTH_2}\nmax_delegation_lifetime_secs = 300",
            worker.pcr0,
            owner.did()
        ),
        &[],
    );
    let d = decide_under(&v, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
    let mut ds = digests(&chain);
    let leaf = ds.pop().unwrap();
    let v2 = "https://api.example.com/v2/orders";
    let replay = MemoryReplayStore::new(64);
    let d = v.decide(
        &Request {
            method: "POST",
            url: v2,
            dpop: &worker.proof_for(v2, &leaf, &ds),
            access_token: None,
            evidence: Some(&worker.env),
            contract: None,
            body: None,
        },
        now(),
        Stores {
            replay: &replay,
            nonces: None,
        },
    );
    refused(&d, "delegation.stale");
}

/// A verifier that has a chain cached must refuse a request whose header carries that leaf
/// under other links, as a verifier that has not seen the chain does (the e2e test
/// `delegation_refusals::a_warm_verifier_refuses_a_chain_whose_upper_links_are_not_the_ones_the_proof_names`
/// found it accepted).
#[test]
fn a_warm_verifier_decides_a_chain_sent_under_other_links_as_a_cold_one() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let (planner, middle, worker) = (Agent::new(&owner), Agent::new(&owner), Agent::new(&owner));
    let c0 = root_contract(&owner, &planner, 2);
    let d1 = planner.delegate_now(&owner, &c0, narrower(&owner, &c0, &middle, 1001, true));
    let chain = middle.delegate_now(&owner, &d1, narrower(&owner, &d1, &worker, 1501, false));
    let v = verifier(&owner, &[&worker, &planner, &middle], DEPTH_2, &[]);
    let d = decide_under(&v, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
    let parts: Vec<&str> = chain.split('~').collect();
    // The leaf moved up under the root: refused, warm as cold.
    let moved = format!("{}~{}", parts[0], parts[2]);
    refused(
        &decide(&v, &worker, &proof_under(&worker, &chain), Some(&moved)),
        "delegation.link",
    );
    // The same chain again: accepted (warm).
    let d = decide_under(&v, &worker, &chain);
    assert!(d.accepted().is_some(), "{:?}", d.refusal());
}
