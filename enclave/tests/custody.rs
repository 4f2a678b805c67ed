//! Chain of custody (issue 24 §5): the signer signs the task and traceparent it is given
//! into `cada.task` / `cada.tp`, and refuses either when it is not in its strict form.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use cada_enclave::key::SigningKey;
use cada_enclave::signer::{DelegationPolicy, Signer};
use cada_protocol::jwk::SigAlg;
use cada_protocol::token::parse_compact;
use cada_protocol::wire::SignPopRequest;

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn signer() -> Signer {
    let key = SigningKey::generate(SigAlg::EdDSA).unwrap();
    let sim = cada_enclave::platform::sim::Sim::new(None).unwrap();
    Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap()
}

fn req(task: Option<&str>, tp: Option<&str>) -> SignPopRequest {
    SignPopRequest {
        htm: "GET".into(),
        htu: "https://api.example.com/x".into(),
        access_token: None,
        nonce: None,
        ctx: BTreeMap::new(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: task.map(str::to_owned),
        traceparent: tp.map(str::to_owned),
    }
}

#[test]
fn the_signer_signs_task_and_traceparent_and_refuses_malformed_ones() {
    let s = signer();
    let r = s.sign_pop(&req(Some("task-7"), Some(TP))).unwrap();
    let p = parse_compact(&r.dpop).unwrap();
    assert_eq!(p.claims.cada.task.as_deref(), Some("task-7"));
    assert_eq!(p.claims.cada.tp.as_deref(), Some(TP));
    let r = s.sign_pop(&req(None, None)).unwrap();
    let p = parse_compact(&r.dpop).unwrap();
    assert_eq!((p.claims.cada.task, p.claims.cada.tp), (None, None));
    for (task, tp, code) in [
        (Some("a b"), None, "trace.task"),
        (Some(""), None, "trace.task"),
        (
            None,
            Some(&TP.replace("00-", "01-")[..]),
            "trace.traceparent",
        ),
        (None, Some(&TP.to_uppercase()[..]), "trace.traceparent"),
    ] {
        let e = s.sign_pop(&req(task, tp)).unwrap_err();
        assert!(e.to_string().contains(code), "{task:?} {tp:?}: {e}");
    }
}
