//! A software model of a TPM (P-256 AK and key, TPMS_ATTEST built and signed here), its
//! manufacturer and enrollment CAs, and the evidence it produces — then every rule of
//! [`super`] against it, including every byte flip of the evidence.
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::tpm::{self as fmt, attrs, AkBinding, SessionKey, TpmDocument};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use super::*;

const T0: u64 = 1_800_000_000;

pub(crate) struct Key {
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

    /// A `TPMT_SIGNATURE` (ECDSA, SHA-256) over `msg`.
    fn tpm_sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig = self.sign.sign(&SystemRandom::new(), msg).unwrap();
        let rs = sig.as_ref();
        let mut out = Vec::new();
        out.extend_from_slice(&alg::ECDSA.to_be_bytes());
        out.extend_from_slice(&alg::SHA256.to_be_bytes());
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&rs[..32]);
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&rs[32..]);
        out
    }

    /// Its `TPMT_PUBLIC` with these attributes and scheme.
    fn public(&self, attributes: u32, scheme: u16) -> Vec<u8> {
        let p = self.point();
        let mut out = Vec::new();
        out.extend_from_slice(&alg::ECC.to_be_bytes());
        out.extend_from_slice(&alg::SHA256.to_be_bytes());
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes()); // authPolicy
        out.extend_from_slice(&alg::NULL.to_be_bytes()); // symmetric
        out.extend_from_slice(&scheme.to_be_bytes());
        if scheme != alg::NULL {
            out.extend_from_slice(&alg::SHA256.to_be_bytes());
        }
        out.extend_from_slice(&curve::NIST_P256.to_be_bytes());
        out.extend_from_slice(&alg::NULL.to_be_bytes()); // kdf
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&p[1..33]);
        out.extend_from_slice(&32u16.to_be_bytes());
        out.extend_from_slice(&p[33..]);
        out
    }
}

fn name_of(public: &[u8]) -> Vec<u8> {
    let mut n = alg::SHA256.to_be_bytes().to_vec();
    n.extend_from_slice(&crate::chain::sha256(public));
    n
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u16::try_from(b.len()).unwrap().to_be_bytes());
    out.extend_from_slice(b);
}

/// A TPMS_ATTEST of `kind` with `body` (the type-specific part).
fn attest(kind: u16, signer: &[u8], extra: &[u8], reset: u32, body: &[u8]) -> Vec<u8> {
    let mut out = structs::TPM_GENERATED_VALUE.to_be_bytes().to_vec();
    out.extend_from_slice(&kind.to_be_bytes());
    tpm2b(&mut out, signer);
    tpm2b(&mut out, extra);
    out.extend_from_slice(&123_456u64.to_be_bytes());
    out.extend_from_slice(&reset.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(1);
    out.extend_from_slice(&0x2023_0101_0000_0001u64.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn certify_body(name: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    tpm2b(&mut b, name);
    tpm2b(&mut b, name);
    b
}

fn quote_body(pcrs: &[Vec<u8>]) -> Vec<u8> {
    let mut b = 1u32.to_be_bytes().to_vec();
    b.extend_from_slice(&alg::SHA256.to_be_bytes());
    b.push(3);
    // PCRs 0..pcrs.len()
    let mut sel = [0u8; 3];
    for i in 0..pcrs.len() {
        sel[i / 8] |= 1 << (i % 8);
    }
    b.extend_from_slice(&sel);
    tpm2b(&mut b, &pcr_digest(alg::SHA256, pcrs).unwrap());
    b
}

pub(crate) const AK_ATTRS: u32 = attrs::RESTRICTED
    | attrs::SIGN
    | attrs::FIXED_TPM
    | attrs::FIXED_PARENT
    | attrs::SENSITIVE_DATA_ORIGIN
    | attrs::USER_WITH_AUTH;
pub(crate) const KEY_ATTRS: u32 = attrs::SIGN
    | attrs::FIXED_TPM
    | attrs::FIXED_PARENT
    | attrs::SENSITIVE_DATA_ORIGIN
    | attrs::USER_WITH_AUTH;

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p
}

fn leaf_params(cn: &str) -> CertificateParams {
    let mut p = ca_params(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p
}

/// A TPM, its manufacturer CA (EK certificate) and the operator's enrollment CA (AK
/// certificate naming the EK), and what they produce.
pub(crate) struct Model {
    pub(crate) ak: Key,
    pub(crate) key: Key,
    pub(crate) ek: Key,
    pub(crate) mfr_root: Vec<u8>,
    pub(crate) enroll_root: Vec<u8>,
    pub(crate) ek_cert: Vec<u8>,
    pub(crate) ak_cert: Vec<u8>,
    pub(crate) ak_attrs: u32,
    pub(crate) key_attrs: u32,
    mfr_key: KeyPair,
    enroll_key: KeyPair,
}

impl Model {
    pub(crate) fn new() -> Self {
        let (ak, key, ek) = (Key::new(), Key::new(), Key::new());
        let mfr_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let enroll_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mfr_params = ca_params("Test TPM Manufacturer Root");
        let mfr_root = mfr_params.self_signed(&mfr_key).unwrap().der().to_vec();
        let enroll_params = ca_params("Test Enrollment CA");
        let enroll_root = enroll_params
            .self_signed(&enroll_key)
            .unwrap()
            .der()
            .to_vec();
        let mut m = Model {
            ak,
            key,
            ek,
            mfr_root,
            enroll_root,
            ek_cert: Vec::new(),
            ak_cert: Vec::new(),
            ak_attrs: AK_ATTRS,
            key_attrs: KEY_ATTRS,
            mfr_key,
            enroll_key,
        };
        m.ek_cert = m.issue_ek(&m.ek.rc);
        let spki = spki_of(&m.ek_cert);
        m.ak_cert = m.issue_ak(&m.ak, Some(&spki), true);
        m
    }

    fn issue_ek(&self, ek: &KeyPair) -> Vec<u8> {
        let mut p = leaf_params("");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
        let ca = ca_params("Test TPM Manufacturer Root");
        let issuer = Issuer::from_params(&ca, &self.mfr_key);
        p.signed_by(ek, &issuer).unwrap().der().to_vec()
    }

    /// An AK certificate for `ak`, naming the EK with SPKI `ek_spki` when given.
    pub(crate) fn issue_ak(&self, ak: &Key, ek_spki: Option<&[u8]>, eku: bool) -> Vec<u8> {
        let mut p = leaf_params("tpm ak");
        p.key_identifier_method =
            rcgen::KeyIdMethod::PreSpecified(name_of(&ak.public(AK_ATTRS, alg::ECDSA)));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if eku {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 3])];
        }
        if let Some(spki) = ek_spki {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[2, 5, 29, 17],
                fmt::ek_binding_san(spki),
            )];
        }
        let ca = ca_params("Test Enrollment CA");
        let issuer = Issuer::from_params(&ca, &self.enroll_key);
        p.signed_by(&ak.rc, &issuer).unwrap().der().to_vec()
    }

    pub(crate) fn verifier(&self) -> TpmVerifier {
        let mut roots = TpmRoots::pinned();
        roots
            .add_ek_root("test manufacturer", &self.mfr_root)
            .unwrap();
        roots
            .add_ak_root("test enrollment", &self.enroll_root, false)
            .unwrap();
        TpmVerifier::new(roots, TpmPolicy::default())
    }

    pub(crate) fn binding(&self) -> Vec<u8> {
        let jwk = Jwk::ec(SigAlg::ES256, self.key.point()).unwrap();
        KeyBinding {
            v: 1,
            jkt: jwk.thumbprint(),
            did: jwk.did_key().unwrap(),
            hpke: None,
            owner: None,
        }
        .to_cbor()
    }

    /// Evidence for `binding` and `nonce` with these PCR values; `edit` may change the
    /// document's parts before it is signed and encoded.
    pub(crate) fn evidence_with(
        &self,
        binding: &[u8],
        nonce: &[u8],
        pcrs: &[Vec<u8>],
        edit: impl FnOnce(&mut Parts),
    ) -> EvidenceEnvelope {
        let q = fmt::qualifying_data(binding, nonce);
        let ak_pub = self.ak.public(self.ak_attrs, alg::ECDSA);
        let key_pub = self.key.public(self.key_attrs, alg::NULL);
        let mut parts = Parts {
            ak_pub,
            certify_extra: q.to_vec(),
            quote_extra: q.to_vec(),
            certified_name: name_of(&key_pub),
            key_pub,
            pcrs: pcrs.to_vec(),
            quoted_pcrs: pcrs.to_vec(),
            quote_reset: 7,
            session: None,
            log: None,
            certs: vec![self.ak_cert.clone(), self.ek_cert.clone()],
            ak_certs: 1,
            signer: None,
        };
        edit(&mut parts);
        let signer_name = name_of(&parts.ak_pub);
        let certify = attest(
            structs::ST_ATTEST_CERTIFY,
            &signer_name,
            &parts.certify_extra,
            7,
            &certify_body(&parts.certified_name),
        );
        let quote = attest(
            structs::ST_ATTEST_QUOTE,
            &signer_name,
            &parts.quote_extra,
            parts.quote_reset,
            &quote_body(&parts.quoted_pcrs),
        );
        let signer = parts.signer.as_ref().unwrap_or(&self.ak);
        let session = parts.session.map(|(nbf, exp)| SessionKey {
            nbf,
            exp,
            sig: self.key.tpm_sign(&fmt::session_message(&q, nbf, exp)),
        });
        let doc = TpmDocument {
            ak: parts.ak_pub.clone(),
            ak_binding: AkBinding::Certificate {
                ak_certs: parts.ak_certs,
            },
            key: parts.key_pub.clone(),
            certify_sig: signer.tpm_sign(&certify),
            certify,
            quote_sig: signer.tpm_sign(&quote),
            quote,
            pcrs: parts.pcrs.clone(),
            log: parts.log.clone(),
            session,
        };
        EvidenceEnvelope {
            platform: Platform::Tpm,
            document: doc.to_cbor(),
            certs: parts
                .certs
                .iter()
                .map(|c| serde_bytes::ByteBuf::from(c.clone()))
                .collect(),
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        }
    }

    pub(crate) fn evidence(&self) -> EvidenceEnvelope {
        self.evidence_with(&self.binding(), b"verifier nonce", &default_pcrs(), |_| {})
    }
}

/// What the model puts in the evidence, editable by a test.
pub(crate) struct Parts {
    pub(crate) ak_pub: Vec<u8>,
    pub(crate) key_pub: Vec<u8>,
    pub(crate) certify_extra: Vec<u8>,
    pub(crate) quote_extra: Vec<u8>,
    pub(crate) certified_name: Vec<u8>,
    pub(crate) pcrs: Vec<Vec<u8>>,
    pub(crate) quoted_pcrs: Vec<Vec<u8>>,
    pub(crate) quote_reset: u32,
    pub(crate) session: Option<(u64, u64)>,
    pub(crate) log: Option<Vec<u8>>,
    pub(crate) certs: Vec<Vec<u8>>,
    pub(crate) ak_certs: usize,
    pub(crate) signer: Option<Key>,
}

pub(crate) fn default_pcrs() -> Vec<Vec<u8>> {
    (0u8..8).map(|i| vec![i; 32]).collect()
}

fn spki_of(cert: &[u8]) -> Vec<u8> {
    let c = ParsedCert::parse(cert).ok().unwrap();
    c.cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

fn at() -> UnixTime {
    UnixTime::from_secs(T0)
}

fn run(m: &Model, env: &EvidenceEnvelope) -> Result<VerifiedTpm, VerifyError> {
    m.verifier()
        .verify(env, &SnpVerifier::default(), &SnpPolicy::default(), at())
}

fn code(m: &Model, env: &EvidenceEnvelope) -> &'static str {
    run(m, env).map(|_| "ok").unwrap_or_else(|e| e.code())
}

#[test]
fn the_model_s_evidence_verifies() {
    let m = Model::new();
    let v = run(&m, &m.evidence()).unwrap();
    assert_eq!(v.pcrs.len(), 8);
    assert_eq!(v.measurements()["TPM_PCR3"], "03".repeat(32));
    assert!(
        v.measurements().contains_key("TPM_PCR0"),
        "zeros are quoted values too"
    );
    let AkBound::Certificate { ek: Some(ek), .. } = &v.ak else {
        panic!("{:?}", v.ak)
    };
    assert!(!ek.pinned_root);
    assert_eq!(v.tpm_id, format!("tpm-{}", &ek.spki_sha256[..16]));
    assert_eq!(
        v.key_jwk.thumbprint(),
        KeyBinding::from_cbor(&m.binding()).unwrap().jkt
    );
    assert!(v.session.is_none());
}

#[test]
fn a_quote_or_certify_over_another_nonce_is_refused() {
    let m = Model::new();
    let env = m.evidence();
    let mut other = env.clone();
    other.nonce = b"another nonce".to_vec();
    assert_eq!(code(&m, &other), "tpm.nonce");
    let other_q = fmt::qualifying_data(&m.binding(), b"x").to_vec();
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.quote_extra = other_q.clone();
    });
    assert_eq!(code(&m, &e), "tpm.nonce");
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certify_extra = other_q;
    });
    assert_eq!(code(&m, &e), "tpm.nonce");
}

#[test]
fn a_non_restricted_ak_is_refused() {
    let mut m = Model::new();
    m.ak_attrs &= !attrs::RESTRICTED;
    let e = m.evidence();
    let err = run(&m, &e).unwrap_err();
    assert_eq!(err.code(), "tpm.ak_attributes");
    assert!(err.to_string().contains("restricted"), "{err}");
    m.ak_attrs = AK_ATTRS | attrs::DECRYPT;
    assert_eq!(code(&m, &m.evidence()), "tpm.ak_attributes");
}

#[test]
fn a_key_that_may_leave_the_tpm_or_was_imported_is_refused() {
    let mut m = Model::new();
    for (clear, want) in [
        (attrs::FIXED_TPM, "tpm.key_duplicable"),
        (attrs::FIXED_PARENT, "tpm.key_duplicable"),
        (attrs::SENSITIVE_DATA_ORIGIN, "tpm.key_not_tpm_generated"),
        (attrs::SIGN, "tpm.key_attributes"),
    ] {
        m.key_attrs = KEY_ATTRS & !clear;
        assert_eq!(code(&m, &m.evidence()), want, "cleared 0x{clear:x}");
    }
    for (set, want) in [
        (attrs::ENCRYPTED_DUPLICATION, "tpm.key_duplicable"),
        (attrs::RESTRICTED, "tpm.key_attributes"),
        (attrs::DECRYPT, "tpm.key_attributes"),
    ] {
        m.key_attrs = KEY_ATTRS | set;
        assert_eq!(code(&m, &m.evidence()), want, "set 0x{set:x}");
    }
}

#[test]
fn a_certify_of_another_key_is_refused() {
    let m = Model::new();
    let other = Key::new();
    // The certify names another object than the key sent.
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certified_name = name_of(&other.public(KEY_ATTRS, alg::NULL));
    });
    assert_eq!(code(&m, &e), "tpm.certify_name");
    // The key sent differs from the one the binding names (a software key bound instead).
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.key_pub = other.public(KEY_ATTRS, alg::NULL);
        p.certified_name = name_of(&p.key_pub);
    });
    assert_eq!(code(&m, &e), "tpm.key_binding");
    // Same key, other attributes claimed than those certified: the name changes.
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.key_pub = m.key.public(KEY_ATTRS | attrs::ST_CLEAR, alg::NULL);
    });
    assert_eq!(code(&m, &e), "tpm.certify_name");
}

#[test]
fn pcr_values_must_be_the_quoted_ones() {
    let m = Model::new();
    let mut wrong = default_pcrs();
    wrong[2] = vec![9; 32];
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.pcrs = wrong;
    });
    assert_eq!(code(&m, &e), "tpm.pcr_digest");
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.pcrs.pop();
    });
    assert_eq!(code(&m, &e), "tpm.pcr_values");
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.pcrs[0] = vec![0; 20];
    });
    assert_eq!(code(&m, &e), "tpm.pcr_values");
}

#[test]
fn attestations_signed_by_another_key_are_refused() {
    let m = Model::new();
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.signer = Some(Key::new());
    });
    assert_eq!(code(&m, &e), "tpm.certify_signature");
    // An AK whose certificate certifies another key.
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        let other = Key::new();
        p.ak_pub = other.public(AK_ATTRS, alg::ECDSA);
        p.signer = Some(other);
    });
    assert_eq!(code(&m, &e), "tpm.ak_cert_key");
}

#[test]
fn ak_and_ek_binding_rules() {
    let m = Model::new();
    // An AK certificate naming another TPM's EK.
    let other_ek = Key::new();
    let other_spki = spki_of(&m.issue_ek(&other_ek.rc));
    let cert = m.issue_ak(&m.ak, Some(&other_spki), true);
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certs[0] = cert;
    });
    assert_eq!(code(&m, &e), "tpm.ak_not_bound");
    // An enrollment CA's AK certificate that names no EK.
    let cert = m.issue_ak(&m.ak, None, true);
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certs[0] = cert;
    });
    assert_eq!(code(&m, &e), "tpm.ak_not_bound");
    // …that lacks the AIK extended key usage.
    let spki = spki_of(&m.ek_cert);
    let cert = m.issue_ak(&m.ak, Some(&spki), false);
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certs[0] = cert;
    });
    assert_eq!(code(&m, &e), "tpm.ak_cert_usage");
    // No EK certificate sent.
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.certs.truncate(1);
    });
    assert_eq!(code(&m, &e), "tpm.ak_not_bound");
    // The EK chain to an unknown root (the default roots: swtpm's or a test CA is not pinned).
    let mut roots = TpmRoots::pinned();
    roots
        .add_ak_root("test enrollment", &m.enroll_root, false)
        .unwrap();
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    let err = v
        .verify(
            &m.evidence(),
            &SnpVerifier::default(),
            &SnpPolicy::default(),
            at(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "tpm.ek_untrusted_root", "{err}");
    // The AK certificate from an untrusted CA: the default verifier trusts neither.
    let err = TpmVerifier::default()
        .verify(
            &m.evidence(),
            &SnpVerifier::default(),
            &SnpPolicy::default(),
            at(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "tpm.ak_untrusted_root", "{err}");
    // An expired chain.
    let late = UnixTime::from_secs(1_900_000_001);
    let err = m
        .verifier()
        .verify(
            &m.evidence(),
            &SnpVerifier::default(),
            &SnpPolicy::default(),
            late,
        )
        .unwrap_err();
    assert_eq!(err.code(), "tpm.ak_chain", "{err}");
}

#[test]
fn certify_and_quote_must_come_from_one_boot() {
    let m = Model::new();
    let e = m.evidence_with(&m.binding(), b"verifier nonce", &default_pcrs(), |p| {
        p.quote_reset = 8;
    });
    assert_eq!(code(&m, &e), "tpm.attest_mismatch");
}

#[test]
fn session_keys() {
    let m = Model::new();
    let session = Jwk::ed25519(&[7; 32]);
    let binding = KeyBinding {
        v: 1,
        jkt: session.thumbprint(),
        did: session.did_key().unwrap(),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    let ok = m.evidence_with(&binding, b"n", &default_pcrs(), |p| {
        p.session = Some((T0 - 10, T0 + 600));
    });
    let v = run(&m, &ok).unwrap();
    assert_eq!(v.session, Some((T0 - 10, T0 + 600)));
    // Without the session statement, a software key is not the certified key.
    let bare = m.evidence_with(&binding, b"n", &default_pcrs(), |_| {});
    assert_eq!(code(&m, &bare), "tpm.key_binding");
    let long = m.evidence_with(&binding, b"n", &default_pcrs(), |p| {
        p.session = Some((T0 - 10, T0 + 3600));
    });
    assert_eq!(code(&m, &long), "tpm.session_too_long");
    let expired = m.evidence_with(&binding, b"n", &default_pcrs(), |p| {
        p.session = Some((T0 - 700, T0 - 100));
    });
    assert_eq!(code(&m, &expired), "tpm.session_expired");
    let mut refusing = m.verifier();
    refusing.policy.allow_session_keys = false;
    let err = refusing
        .verify(&ok, &SnpVerifier::default(), &SnpPolicy::default(), at())
        .unwrap_err();
    assert_eq!(err.code(), "tpm.session_refused");
    // A session statement for another lifetime than the one claimed.
    let mut doc = TpmDocument::from_cbor(&ok.document).unwrap();
    doc.session.as_mut().unwrap().exp += 1;
    let mut forged = ok.clone();
    forged.document = doc.to_cbor();
    assert_eq!(code(&m, &forged), "tpm.session_signature");
}

#[test]
fn an_event_log_must_replay_to_the_quote() {
    let m = Model::new();
    let log = eventlog::tests::make_log(&[(1, [5; 32]), (1, [6; 32])]);
    let replayed = eventlog::parse_event_log(&log).unwrap().replay(alg::SHA256)[&1].clone();
    let mut pcrs = default_pcrs();
    pcrs[1] = replayed;
    let e = m.evidence_with(&m.binding(), b"n", &pcrs, |p| p.log = Some(log.clone()));
    let v = run(&m, &e).unwrap();
    assert_eq!(v.event_log.unwrap().matched, vec![1]);
    let e = m.evidence_with(&m.binding(), b"n", &default_pcrs(), |p| {
        p.log = Some(log.clone());
    });
    assert_eq!(code(&m, &e), "tpm.eventlog_mismatch");
    let e = m.evidence_with(&m.binding(), b"n", &pcrs, |p| p.log = Some(vec![1, 2, 3]));
    assert_eq!(code(&m, &e), "tpm.eventlog");
}

#[test]
fn every_byte_flip_of_the_evidence_is_refused() {
    let m = Model::new();
    let env = m.evidence();
    let v = m.verifier();
    let check =
        |e: &EvidenceEnvelope| v.verify(e, &SnpVerifier::default(), &SnpPolicy::default(), at());
    check(&env).unwrap();
    let mut codes = std::collections::BTreeSet::new();
    for i in 0..env.document.len() {
        for bit in [0x01u8, 0x80] {
            let mut e = env.clone();
            e.document[i] ^= bit;
            let err = check(&e).expect_err(&format!("document byte {i} ^ {bit:#x} accepted"));
            codes.insert(err.code());
        }
    }
    for c in 0..env.certs.len() {
        for i in 0..env.certs[c].len() {
            let mut e = env.clone();
            e.certs[c][i] ^= 0x01;
            assert!(check(&e).is_err(), "cert {c} byte {i} accepted");
        }
    }
    for i in 0..env.binding.len() {
        let mut e = env.clone();
        e.binding[i] ^= 0x01;
        assert!(check(&e).is_err(), "binding byte {i} accepted");
    }
    for i in 0..env.nonce.len() {
        let mut e = env.clone();
        e.nonce[i] ^= 0x01;
        assert_eq!(check(&e).unwrap_err().code(), "tpm.nonce");
    }
    assert!(codes.iter().all(|c| c.starts_with("tpm.")), "{codes:?}");
}

#[test]
fn through_the_evidence_verifier() {
    let m = Model::new();
    let ev = crate::evidence::EvidenceVerifier::new(Default::default(), Default::default())
        .with_tpm(m.verifier());
    let key = ev
        .verify_with(&m.evidence(), &Default::default(), at())
        .unwrap();
    assert_eq!(key.platform, Platform::Tpm);
    assert_eq!(key.measurements["TPM_PCR7"], "07".repeat(32));
    assert!(key.module_id.starts_with("tpm-"));
    assert_eq!(
        key.expires,
        UnixTime::from_millis(T0 * 1000 + 3 * 3600 * 1000)
    );
    // A TPM document labelled as another platform, and another platform's labelled tpm.
    let mut e = m.evidence();
    e.platform = Platform::Nitro;
    assert!(ev.verify_with(&e, &Default::default(), at()).is_err());
    let mut e = m.evidence();
    e.document = vec![0u8; crate::snp::REPORT_LEN];
    assert_eq!(
        ev.verify_with(&e, &Default::default(), at())
            .unwrap_err()
            .code(),
        "evidence.platform_mismatch"
    );
}

#[test]
fn through_the_policy_and_decide() {
    use crate::decide::{Verifier, VerifierOptions};
    use crate::policy::Policy;
    let m = Model::new();
    let dir = std::env::temp_dir().join(format!("cada-tpm-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mfr.der"), &m.mfr_root).unwrap();
    std::fs::write(dir.join("enroll.der"), &m.enroll_root).unwrap();
    let pcr7 = "07".repeat(32);
    let policy = |extra: &str| {
        Policy::from_toml(
            &format!(
                "[tpm]\nroots = [\"mfr.der\"]\nak_roots = [\"enroll.der\"]\nfreshness = \"first_seen\"\n{extra}\n\
                 [[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [{{ TPM_PCR7 = \"{pcr7}\" }}]\n\
                 [[audience]]\nprefix = \"https://strict.example.com/\"\nmeasurements = [{{ TPM_PCR7 = \"{pcr7}\", TPM_PCR9 = \"{}\" }}]\n",
                "00".repeat(32)
            ),
            &dir,
            "tpm-test.toml",
        )
        .unwrap()
    };
    let v = Verifier::new(policy(""), VerifierOptions::default());
    let env = m.evidence();
    let key = v.admit_evidence(&env, None, at(), None).unwrap();
    assert_eq!(key.platform, Platform::Tpm);
    assert!(v.check_audience("https://api.example.com/x", &key).is_ok());
    // PCR 9 was not quoted: a set naming it never matches, even for zeros.
    let r = v
        .check_audience("https://strict.example.com/x", &key)
        .unwrap_err();
    assert_eq!(r.code(), "policy.measurements");
    assert!(r.to_string().contains("not quoted"), "{r}");
    // A PCR outside the policy.
    let mut pcrs = default_pcrs();
    pcrs[7] = vec![0xee; 32];
    let other = m.evidence_with(&m.binding(), b"verifier nonce", &pcrs, |_| {});
    let key = v.admit_evidence(&other, None, at(), None).unwrap();
    assert_eq!(
        v.check_audience("https://api.example.com/x", &key)
            .unwrap_err()
            .code(),
        "policy.measurements"
    );
    // The default policy refuses: neither the test manufacturer nor the enrollment CA is
    // pinned (as swtpm's CA is not).
    let default = Verifier::new(Policy::builtin(), VerifierOptions::default());
    let r = default.admit_evidence(&env, None, at(), None).unwrap_err();
    assert_eq!(r.code(), "tpm.ak_untrusted_root");
    // With verifier-nonce freshness (the default), a nonce this verifier did not issue is
    // refused; one it issued is accepted.
    let strict = Verifier::new(
        Policy::from_toml(
            "[tpm]\nroots = [\"mfr.der\"]\nak_roots = [\"enroll.der\"]\n",
            &dir,
            "t",
        )
        .unwrap(),
        VerifierOptions::default(),
    );
    let nonces = crate::NonceIssuer::new(b"0123456789abcdef0123456789abcdef");
    assert_eq!(
        strict
            .admit_evidence(&env, None, at(), Some(&nonces))
            .unwrap_err()
            .code(),
        "evidence.not_fresh"
    );
    let issued = nonces.issue(T0);
    let fresh = m.evidence_with(&m.binding(), issued.as_bytes(), &default_pcrs(), |_| {});
    assert!(strict
        .admit_evidence(&fresh, None, at(), Some(&nonces))
        .is_ok());
    // Session keys refused by policy.
    let no_sessions = Verifier::new(policy("session_keys = false"), VerifierOptions::default());
    assert!(!no_sessions.policy().tpm.allow_session_keys);
    let binding = KeyBinding {
        v: 1,
        jkt: Jwk::ed25519(&[7; 32]).thumbprint(),
        did: Jwk::ed25519(&[7; 32]).did_key().unwrap(),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    let session = m.evidence_with(&binding, b"n", &default_pcrs(), |p| {
        p.session = Some((T0 - 10, T0 + 600));
    });
    assert_eq!(
        no_sessions
            .admit_evidence(&session, None, at(), None)
            .unwrap_err()
            .code(),
        "tpm.session_refused"
    );
    let key = v.admit_evidence(&session, None, at(), None).unwrap();
    assert_eq!(
        key.expires,
        UnixTime::from_secs(T0 + 600),
        "capped at the session's end"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tpm_policy_errors_name_the_line() {
    use crate::policy::Policy;
    for (text, want) in [
        ("[tpm]\nmax_session_secs = 0", "max_session_secs"),
        ("[tpm]\nroots = [\"/nonexistent.pem\"]", "nonexistent"),
        ("[tpm]\nfreshness = \"never\"", "unknown variant"),
        (
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{TPM_PCR24 = \"00\"}]",
            "TPM_PCR0..TPM_PCR23",
        ),
        (
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{TPM_PCR7 = \"00\"}]",
            "32 bytes",
        ),
    ] {
        let err = Policy::from_toml(text, std::path::Path::new("."), "t").unwrap_err();
        assert!(err.to_string().contains(want), "{text}: {err}");
    }
    let mixed = format!(
        "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{TPM_PCR7 = \"{}\", PCR0 = \"{}\"}}]",
        "00".repeat(32),
        "00".repeat(48)
    );
    let err = Policy::from_toml(&mixed, std::path::Path::new("."), "t").unwrap_err();
    assert!(err.message.contains("mixes"), "{err}");
}

/// Found by the `tpm_public` fuzz target (fuzz/artifacts/tpm_public/crash-f8db9cf4…): a
/// P-256 key whose x coordinate has 33 bytes passed `check_certified_key` and failed only
/// when its JWK was made.
#[test]
fn a_certified_key_whose_point_is_not_p256_is_refused() {
    let b = hex::decode(
        "0023000b0004007200000010001000030010002111111111111111111111111111111111111111111111111111e51111111111111100202222222222222222222222222222222222222222222222222222222222222222",
    )
    .unwrap();
    let p = structs::parse_public(&b).unwrap();
    assert_eq!(
        check_certified_key(&p).unwrap_err().code(),
        "tpm.key_algorithm"
    );
    // A valid point with the same attributes passes, and a point off the curve does not.
    let k = Key::new();
    let good = structs::parse_public(&k.public(KEY_ATTRS, alg::NULL)).unwrap();
    assert!(check_certified_key(&good).is_ok());
    let mut off = k.public(KEY_ATTRS, alg::NULL);
    let last = off.len() - 1;
    off[last] ^= 1;
    let off = structs::parse_public(&off).unwrap();
    assert_eq!(
        check_certified_key(&off).unwrap_err().code(),
        "tpm.key_algorithm"
    );
}

#[test]
fn a_ca_that_vouches_alone_needs_no_ek_and_takes_no_unnamed_one() {
    let m = Model::new();
    let mut roots = TpmRoots::pinned();
    roots
        .add_ak_root("cloud-like", &m.enroll_root, true)
        .unwrap();
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    let run = |e: &EvidenceEnvelope| {
        v.verify(e, &SnpVerifier::default(), &SnpPolicy::default(), at())
            .map(|t| t.tpm_id)
            .map_err(|e| e.code())
    };
    // No EK named and none sent: accepted, identified by the AK certificate.
    let cert = m.issue_ak(&m.ak, None, false);
    let alone = m.evidence_with(&m.binding(), b"n", &default_pcrs(), |p| {
        p.certs = vec![cert.clone()];
    });
    assert!(run(&alone).unwrap().starts_with("tpm-ak-"));
    // An EK chain the AK certificate does not name: refused, not reported as this TPM's.
    let with_ek = m.evidence_with(&m.binding(), b"n", &default_pcrs(), |p| {
        p.certs = vec![cert.clone(), m.ek_cert.clone()];
    });
    assert_eq!(run(&with_ek), Err("tpm.ak_not_bound"));
    // A named EK is still checked (here to a root the verifier does not trust).
    let named = m.evidence();
    assert_eq!(run(&named), Err("tpm.ek_untrusted_root"));
}

/// Review tpm-2 finding 3: a fake TPM's EK chain whose CA is named like a pinned root (as
/// swtpm's local CAs all are) but was not signed by it is refused as an untrusted root, not
/// as a broken chain — with the fake root sent or left out.
#[test]
fn an_ek_chain_to_another_root_of_a_pinned_name_is_an_untrusted_root() {
    let (real, fake) = (Model::new(), Model::new());
    let mut roots = TpmRoots::pinned();
    roots
        .add_ek_root("test manufacturer", &real.mfr_root)
        .unwrap();
    for (name, m) in [("real enrollment", &real), ("fake enrollment", &fake)] {
        roots.add_ak_root(name, &m.enroll_root, false).unwrap();
    }
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    let run = |e: &EvidenceEnvelope| {
        v.verify(e, &SnpVerifier::default(), &SnpPolicy::default(), at())
            .map(|_| ())
            .map_err(|e| e.code())
    };
    assert_eq!(run(&real.evidence()), Ok(()));
    assert_eq!(run(&fake.evidence()), Err("tpm.ek_untrusted_root"));
    let with_root = fake.evidence_with(&fake.binding(), b"n", &default_pcrs(), |p| {
        p.certs.push(fake.mfr_root.clone());
    });
    assert_eq!(run(&with_root), Err("tpm.ek_untrusted_root"));
    // A chain whose top the pinned root did sign, broken below it, stays a chain refusal:
    // an intermediate of the real manufacturer, an EK certificate naming it but signed by
    // another key.
    let ica_params = ca_params("Test TPM Manufacturer Intermediate");
    let ica_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let root_params = ca_params("Test TPM Manufacturer Root");
    let root = Issuer::from_params(&root_params, &real.mfr_key);
    let ica = ica_params
        .signed_by(&ica_key, &root)
        .unwrap()
        .der()
        .to_vec();
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = leaf_params("");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    let ek = p
        .signed_by(&real.ek.rc, &Issuer::from_params(&ica_params, &other))
        .unwrap()
        .der()
        .to_vec();
    let broken = real.evidence_with(&real.binding(), b"n", &default_pcrs(), |p| {
        p.certs = vec![real.ak_cert.clone(), ek, ica];
    });
    assert_eq!(run(&broken), Err("tpm.ek_chain"));
}
