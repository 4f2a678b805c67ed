//! `grants.opens` (issue 22 part 6): which labels of data sealed to the enclave it may open
//! for the agent, each with a budget; refusals with their stable codes.
use cada_contract::{Contract, Grant, OpenGrant, OwnerAlg, OwnerKey, Subject, TrustedOwners};

const NOW: u64 = 1_750_000_000;

fn grant(opens: Vec<OpenGrant>, audiences: Vec<String>) -> Grant {
    let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let mut g = Grant::new(
        Subject::Key(agent.did().to_owned()),
        audiences,
        vec!["GET".into()],
        NOW - 60,
        NOW + 3600,
    );
    g.opens = opens;
    g
}

fn open(label: &str, budget: u64) -> OpenGrant {
    OpenGrant {
        label: label.into(),
        budget,
    }
}

#[test]
fn a_label_is_granted_with_its_budget_only_while_the_contract_lives() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let owners = TrustedOwners::from_did_key(owner.did()).unwrap();
    // A contract that only grants opens needs no audience.
    let c = grant(vec![open("report", 2), open("keys", 1)], vec![])
        .issue(&owner, NOW)
        .unwrap();
    let v = Contract::verify(&c, &owners, NOW).unwrap();
    assert_eq!(v.permits_open("report", NOW), Ok(2));
    assert_eq!(v.permits_open("keys", NOW), Ok(1));
    assert_eq!(
        v.permits_open("other", NOW).unwrap_err().code(),
        "secret.open_not_granted"
    );
    assert_eq!(
        v.permits_open("report", NOW + 3600).unwrap_err().code(),
        "contract.expired"
    );
    // A contract without opens grants none.
    let plain = grant(vec![], vec!["https://api.example.com/".into()])
        .issue(&owner, NOW)
        .unwrap();
    let v = Contract::verify(&plain, &owners, NOW).unwrap();
    assert_eq!(
        v.permits_open("report", NOW).unwrap_err().code(),
        "secret.open_not_granted"
    );
}

#[test]
fn bad_open_grants_are_refused_when_written() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    for opens in [
        vec![open("Report", 1)],
        vec![open("report", 0)],
        vec![open("report", 1), open("report", 2)],
        (0..17).map(|i| open(&format!("l{i}"), 1)).collect(),
    ] {
        let e = grant(opens.clone(), vec![]).issue(&owner, NOW).unwrap_err();
        assert_eq!(e.code(), "contract.malformed", "{opens:?}");
    }
}
