//! TPM evidence verifications per second on one core (`TpmVerifier::verify`): cold (a new
//! verifier per evidence, so no cached CA prefix) and warm (one verifier). The evidence is a
//! software model's (P-256 AK and certified key, an enrollment CA's AK certificate naming the
//! EK, the EK certificate under a manufacturer's intermediate and root, a quote of eight SHA-256 PCRs): the same
//! checks real evidence gets. Not a test: figures for docs/tpm.md.
//!
//!   cargo bench -p cada-attestation-verifier --bench tpm_verify
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::tpm::structs::{
    alg, curve, ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE, TPM_GENERATED_VALUE,
};
use cada_attestation_verifier::tpm::{TpmPolicy, TpmRoots, TpmVerifier};
use cada_attestation_verifier::UnixTime;
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::tpm::{self as fmt, attrs, AkBinding, TpmDocument};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

const NONCE: &[u8] = b"bench nonce";

struct Key {
    rc: KeyPair,
    sign: EcdsaKeyPair,
}

impl Key {
    fn new() -> Self {
        let rc = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let sign = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rc.serialize_der())
            .unwrap();
        Key { rc, sign }
    }

    fn point(&self) -> &[u8] {
        self.sign.public_key().as_ref()
    }

    fn tpm_sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.sign.sign(&SystemRandom::new(), msg).unwrap();
        let rs = sig.as_ref();
        let mut out = alg::ECDSA.to_be_bytes().to_vec();
        out.extend_from_slice(&alg::SHA256.to_be_bytes());
        tpm2b(&mut out, &rs[..32]);
        tpm2b(&mut out, &rs[32..]);
        out
    }

    fn public(&self, attributes: u32, scheme: u16) -> Vec<u8> {
        let p = self.point();
        let mut out = alg::ECC.to_be_bytes().to_vec();
        out.extend_from_slice(&alg::SHA256.to_be_bytes());
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&alg::NULL.to_be_bytes());
        out.extend_from_slice(&scheme.to_be_bytes());
        if scheme != alg::NULL {
            out.extend_from_slice(&alg::SHA256.to_be_bytes());
        }
        out.extend_from_slice(&curve::NIST_P256.to_be_bytes());
        out.extend_from_slice(&alg::NULL.to_be_bytes());
        tpm2b(&mut out, &p[1..33]);
        tpm2b(&mut out, &p[33..]);
        out
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

fn name_of(public: &[u8]) -> Vec<u8> {
    let mut n = alg::SHA256.to_be_bytes().to_vec();
    n.extend_from_slice(&sha256(public));
    n
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u16::try_from(b.len()).unwrap().to_be_bytes());
    out.extend_from_slice(b);
}

fn attest(kind: u16, signer: &[u8], extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
    out.extend_from_slice(&kind.to_be_bytes());
    tpm2b(&mut out, signer);
    tpm2b(&mut out, extra);
    out.extend_from_slice(&123_456u64.to_be_bytes());
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&0x2023_0101_0000_0001u64.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p
}

fn spki_of(cert: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    x509_cert::Certificate::from_der(cert)
        .unwrap()
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// The evidence and the two roots a verifier must add for it.
fn model() -> (EvidenceEnvelope, Vec<u8>, Vec<u8>) {
    let ak_attrs = attrs::RESTRICTED
        | attrs::SIGN
        | attrs::FIXED_TPM
        | attrs::FIXED_PARENT
        | attrs::SENSITIVE_DATA_ORIGIN
        | attrs::USER_WITH_AUTH;
    let key_attrs = attrs::SIGN
        | attrs::FIXED_TPM
        | attrs::FIXED_PARENT
        | attrs::SENSITIVE_DATA_ORIGIN
        | attrs::USER_WITH_AUTH;
    let mfr_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mfr_params = ca_params("Bench TPM Manufacturer Root");
    let mfr_root = mfr_params.self_signed(&mfr_key).unwrap().der().to_vec();
    let enroll_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let enroll_params = ca_params("Bench Enrollment CA");
    let enroll_root = enroll_params
        .self_signed(&enroll_key)
        .unwrap()
        .der()
        .to_vec();
    // Root → intermediate → EK, as manufacturers issue them: the intermediate is the CA
    // prefix a warm verifier has cached.
    let ica_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let ica_params = ca_params("Bench TPM Manufacturer Intermediate");
    let ica = ica_params
        .signed_by(&ica_key, &Issuer::from_params(&mfr_params, &mfr_key))
        .unwrap()
        .der()
        .to_vec();
    let ek = Key::new();
    let mut ek_p = ca_params("ek");
    ek_p.is_ca = IsCa::ExplicitNoCa;
    ek_p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    let ek_cert = ek_p
        .signed_by(&ek.rc, &Issuer::from_params(&ica_params, &ica_key))
        .unwrap()
        .der()
        .to_vec();
    let (ak, key) = (Key::new(), Key::new());
    let ak_pub = ak.public(ak_attrs, alg::ECDSA);
    let key_pub = key.public(key_attrs, alg::NULL);
    let mut akp = ca_params("tpm ak");
    akp.is_ca = IsCa::ExplicitNoCa;
    akp.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(name_of(&ak_pub));
    akp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    akp.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 3])];
    akp.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        fmt::ek_binding_san(&spki_of(&ek_cert)),
    )];
    let ak_cert = akp
        .signed_by(&ak.rc, &Issuer::from_params(&enroll_params, &enroll_key))
        .unwrap()
        .der()
        .to_vec();
    let jwk = Jwk::ec(SigAlg::ES256, key.point()).unwrap();
    let binding = KeyBinding {
        v: 1,
        jkt: jwk.thumbprint(),
        did: jwk.did_key().unwrap(),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    let q = fmt::qualifying_data(&binding, NONCE).to_vec();
    let pcrs: Vec<Vec<u8>> = (0u8..8).map(|i| vec![i; 32]).collect();
    let signer = name_of(&ak_pub);
    let mut certify_body = Vec::new();
    tpm2b(&mut certify_body, &name_of(&key_pub));
    tpm2b(&mut certify_body, &name_of(&key_pub));
    let certify = attest(ST_ATTEST_CERTIFY, &signer, &q, &certify_body);
    let mut quote_body = 1u32.to_be_bytes().to_vec();
    quote_body.extend_from_slice(&alg::SHA256.to_be_bytes());
    quote_body.extend_from_slice(&[3, 0xff, 0, 0]);
    tpm2b(&mut quote_body, &sha256(&pcrs.concat()));
    let quote = attest(ST_ATTEST_QUOTE, &signer, &q, &quote_body);
    let doc = TpmDocument {
        ak: ak_pub,
        ak_binding: AkBinding::Certificate { ak_certs: 1 },
        key: key_pub,
        certify_sig: ak.tpm_sign(&certify),
        certify,
        quote_sig: ak.tpm_sign(&quote),
        quote,
        pcrs,
        log: None,
        session: None,
    };
    let env = EvidenceEnvelope {
        platform: Platform::Tpm,
        document: doc.to_cbor(),
        certs: [ak_cert, ek_cert, ica]
            .into_iter()
            .map(serde_bytes::ByteBuf::from)
            .collect(),
        binding,
        nonce: NONCE.to_vec(),
    };
    (env, mfr_root, enroll_root)
}

fn main() {
    let (env, mfr_root, enroll_root) = model();
    let verifier = || {
        let mut roots = TpmRoots::pinned();
        roots.add_ek_root("bench mfr", &mfr_root).unwrap();
        roots
            .add_ak_root("bench enroll", &enroll_root, false)
            .unwrap();
        TpmVerifier::new(roots, TpmPolicy::default())
    };
    let (snp, snp_policy) = (SnpVerifier::default(), SnpPolicy::default());
    let at = UnixTime::from_secs(1_800_000_000);
    verifier().verify(&env, &snp, &snp_policy, at).unwrap();
    let n = 2000u32;
    let rate = |d: Duration| f64::from(n) / d.as_secs_f64();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        // Verifiers are built outside the timed loop: only verification is measured.
        let fresh: Vec<TpmVerifier> = (0..n).map(|_| verifier()).collect();
        let t = Instant::now();
        for v in &fresh {
            v.verify(&env, &snp, &snp_policy, at).unwrap();
        }
        cold.push(rate(t.elapsed()));
        let v = verifier();
        let t = Instant::now();
        for _ in 0..n {
            v.verify(&env, &snp, &snp_policy, at).unwrap();
        }
        warm.push(rate(t.elapsed()));
    }
    for (what, v) in [
        ("cold (new verifier each)", &mut cold),
        ("warm (one verifier)", &mut warm),
    ] {
        v.sort_by(f64::total_cmp);
        println!(
            "TPM evidence verification, {what}: median {:.0}/s ({:.1} µs each), min {:.0}/s, max {:.0}/s over 5 runs of {n}",
            v[2],
            1e6 / v[2],
            v[0],
            v[4]
        );
    }
}
