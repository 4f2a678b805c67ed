//! `GET /v1/identity` end to end: the enclave key's DID document is the did:key resolution
//! of the key the enclave reports (as `cada-verify did resolve` computes it), and the
//! evidence linked to it verifies and binds that same key — for Ed25519 and P-256 keys.
use std::process::Command;
use std::time::Duration;

use cada_attestation_verifier::UnixTime;
use cada_e2e::*;
use cada_protocol::envelope::EvidenceEnvelope;
use cada_protocol::jwk::Jwk;

fn identity(sock: &std::path::Path) -> serde_json::Value {
    let (st, body) = http(sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn identity_did_document_and_evidence_name_the_enclave_key() {
    for (alg, platform, prefix) in [("EdDSA", "sim", "z6Mk"), ("ES256", "sim-snp", "zDn")] {
        let dir = TempDir::new(&format!("identity-{alg}"));
        let _enclave = start_enclave_on(&dir.0, platform, &["--alg", alg]);
        let _parent = start_parent(&dir.0, &[]);
        let sock = dir.0.join("agent.sock");
        let id = identity(&sock);

        // The fields that were there before are unchanged.
        assert_eq!(id["platform"], platform);
        for f in ["did", "jkt", "jwk", "measurements", "signatures"] {
            assert!(!id[f].is_null(), "{f} missing: {id}");
        }
        let did = id["did"].as_str().unwrap();
        let multibase = did.strip_prefix("did:key:").unwrap();
        assert!(multibase.starts_with(prefix), "{alg}: {did}");

        // The JWK names the DID and the thumbprint (the protocol crate's own encoder, not
        // the one that built the document).
        let jwk: Jwk = serde_json::from_value(id["jwk"].clone()).unwrap();
        assert_eq!(jwk.did_key().unwrap(), did);
        assert_eq!(jwk.thumbprint(), id["jkt"].as_str().unwrap());

        // The document is the did:key resolution of that key.
        let doc = &id["did_document"];
        assert_eq!(doc["id"], did);
        let vms = doc["verificationMethod"].as_array().unwrap();
        assert_eq!(vms.len(), 1, "{doc}");
        let vm = &vms[0];
        assert_eq!(vm["type"], "Multikey");
        assert_eq!(vm["controller"], did);
        assert_eq!(vm["publicKeyMultibase"], multibase);
        assert_eq!(vm["id"], format!("{did}#{multibase}"));
        assert_eq!(doc["authentication"], serde_json::json!([vm["id"]]));
        assert_eq!(doc["assertionMethod"], serde_json::json!([vm["id"]]));
        // ... and exactly what the verifier's resolver computes from the DID alone.
        let out = Command::new(bin("cada-verify"))
            .args(["did", "resolve", did])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let resolved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(&resolved, doc);

        // The linked evidence verifies under the platform's root and binds the same key.
        let ev = &id["evidence"];
        assert_eq!(ev["platform"], platform);
        assert_eq!(ev["href"], "/v1/evidence");
        let env = EvidenceEnvelope::from_header(ev["value"].as_str().unwrap()).unwrap();
        assert_eq!(env.att_digest(), ev["att"].as_str().unwrap());
        let root = std::fs::read(dir.0.join(format!("state/{platform}-root.der"))).unwrap();
        let key = verifier_trusting(&[root], test_pop_config())
            .verify_evidence(&env, None, UnixTime::now())
            .expect("the linked evidence verifies");
        assert_eq!(key.did, did);
        assert_eq!(key.jkt, id["jkt"].as_str().unwrap());
        assert_eq!(
            key.measurements,
            serde_json::from_value(id["measurements"].clone()).unwrap()
        );

        // The key signs proofs: the header's JWK is the document's key.
        let ans = mint(&sock, "GET", "https://api.example.com/x", None, false);
        let header = ans["dpop"].as_str().unwrap().split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&cada_protocol::b64::decode("h", header, 4096).unwrap())
                .unwrap();
        let signer: Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        assert_eq!(signer.did_key().unwrap(), did);
        // A second answer links the same evidence (nothing new is made without a nonce).
        let again = identity(&sock);
        assert_eq!(again["evidence"]["att"], ev["att"]);
        assert_eq!(again["did_document"], *doc);
    }
}
