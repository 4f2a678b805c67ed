//! Adversarial review of TPM evidence verification (review tpm-1, `docs/reviews/tpm-1.md`):
//! one test per attack, each asserting the SECURE behaviour. Attacks that succeed are
//! `#[ignore = "finding N: …"]`. A small software TPM model of its own (P-256 AK and key,
//! TPMS_ATTEST built and signed here) so that every structure can be forged field by field.
mod common;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use cada_attestation_verifier::snp::{SnpPolicy, SnpVerifier};
use cada_attestation_verifier::tpm::structs::{
    alg, curve, ST_ATTEST_CERTIFY, ST_ATTEST_QUOTE, TPM_GENERATED_VALUE,
};
use cada_attestation_verifier::tpm::{TpmPolicy, TpmRoots, TpmVerifier, VerifiedTpm};
use cada_attestation_verifier::{UnixTime, VerifyError};
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::jwk::{Jwk, SigAlg};
use cada_protocol::tpm::{self as fmt, attrs, AkBinding, SessionKey, TpmDocument};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

const T0: u64 = 1_800_000_000;
const NONCE: &[u8] = b"verifier nonce";

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

    /// `TPMT_SIGNATURE` ECDSA/SHA-256 over `msg` (what `TPM2_Sign` of its digest returns).
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

fn sha1(b: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
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

/// TPMS_ATTEST with clockInfo.safe = `safe`.
fn attest(magic: u32, kind: u16, signer: &[u8], extra: &[u8], safe: u8, body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    out.extend_from_slice(&kind.to_be_bytes());
    tpm2b(&mut out, signer);
    tpm2b(&mut out, extra);
    out.extend_from_slice(&123_456u64.to_be_bytes());
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(safe);
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

/// A quote body over `banks` (hash, select bitmap) whose digest (SHA-256, the AK's scheme)
/// covers `values` in order.
fn quote_body(banks: &[(u16, Vec<u8>)], values: &[Vec<u8>]) -> Vec<u8> {
    let mut b = u32::try_from(banks.len()).unwrap().to_be_bytes().to_vec();
    for (h, sel) in banks {
        b.extend_from_slice(&h.to_be_bytes());
        b.push(u8::try_from(sel.len()).unwrap());
        b.extend_from_slice(sel);
    }
    tpm2b(&mut b, &sha256(&values.concat()));
    b
}

fn sel_0_to_7() -> Vec<(u16, Vec<u8>)> {
    vec![(alg::SHA256, vec![0xff, 0, 0])]
}

fn default_pcrs() -> Vec<Vec<u8>> {
    (0u8..8).map(|i| vec![i; 32]).collect()
}

const AK_ATTRS: u32 = attrs::RESTRICTED
    | attrs::SIGN
    | attrs::FIXED_TPM
    | attrs::FIXED_PARENT
    | attrs::SENSITIVE_DATA_ORIGIN
    | attrs::USER_WITH_AUTH;
const KEY_ATTRS: u32 = attrs::SIGN
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

fn ek_params(cn: &str) -> CertificateParams {
    let mut p = ca_params(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    p
}

fn spki_of(cert: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(cert).unwrap();
    c.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .unwrap()
}

/// A TPM, its manufacturer CA and the owner's enrollment CA.
struct Model {
    ak: Key,
    key: Key,
    mfr_key: KeyPair,
    mfr_params: CertificateParams,
    mfr_root: Vec<u8>,
    enroll_key: KeyPair,
    enroll_root: Vec<u8>,
    ek_cert: Vec<u8>,
    ak_cert: Vec<u8>,
}

impl Model {
    fn new() -> Self {
        let mfr_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mfr_params = ca_params("Attack TPM Manufacturer Root");
        let mfr_root = mfr_params.self_signed(&mfr_key).unwrap().der().to_vec();
        let enroll_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let enroll_root = ca_params("Attack Enrollment CA")
            .self_signed(&enroll_key)
            .unwrap()
            .der()
            .to_vec();
        let ek = Key::new();
        let ek_cert = ek_params("ek")
            .signed_by(&ek.rc, &Issuer::from_params(&mfr_params, &mfr_key))
            .unwrap()
            .der()
            .to_vec();
        let mut m = Model {
            ak: Key::new(),
            key: Key::new(),
            mfr_key,
            mfr_params,
            mfr_root,
            enroll_key,
            enroll_root,
            ek_cert,
            ak_cert: Vec::new(),
        };
        m.ak_cert = m.issue_ak(
            &m.ak.rc,
            &name_of(&m.ak.public(AK_ATTRS, alg::ECDSA)),
            &spki_of(&m.ek_cert),
        );
        m
    }

    /// The enrollment CA's AK certificate for `ak` (SKI = `ak_name`) naming the EK `ek_spki`.
    fn issue_ak(&self, ak: &KeyPair, ak_name: &[u8], ek_spki: &[u8]) -> Vec<u8> {
        let mut p = ca_params("tpm ak");
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ak_name.to_vec());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 3])];
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[2, 5, 29, 17],
            fmt::ek_binding_san(ek_spki),
        )];
        let ca = ca_params("Attack Enrollment CA");
        let issuer = Issuer::from_params(&ca, &self.enroll_key);
        p.signed_by(ak, &issuer).unwrap().der().to_vec()
    }

    fn verifier(&self) -> TpmVerifier {
        let mut roots = TpmRoots::pinned();
        roots.add_ek_root("attack mfr", &self.mfr_root).unwrap();
        roots
            .add_ak_root("attack enroll", &self.enroll_root, false)
            .unwrap();
        TpmVerifier::new(roots, TpmPolicy::default())
    }

    fn binding_for(jwk: &Jwk) -> Vec<u8> {
        KeyBinding {
            v: 1,
            jkt: jwk.thumbprint(),
            did: jwk.did_key().unwrap(),
            hpke: None,
            owner: None,
        }
        .to_cbor()
    }

    fn binding(&self) -> Vec<u8> {
        Self::binding_for(&Jwk::ec(SigAlg::ES256, self.key.point()).unwrap())
    }

    fn evidence(&self, edit: impl FnOnce(&mut Forge)) -> EvidenceEnvelope {
        let binding = self.binding();
        let q = fmt::qualifying_data(&binding, NONCE).to_vec();
        let ak_pub = self.ak.public(AK_ATTRS, alg::ECDSA);
        let key_pub = self.key.public(KEY_ATTRS, alg::NULL);
        let mut f = Forge {
            binding,
            signer_name: name_of(&ak_pub),
            certified_name: name_of(&key_pub),
            ak_pub,
            key_pub,
            certify_extra: q.clone(),
            quote_extra: q,
            magic: TPM_GENERATED_VALUE,
            certify_kind: ST_ATTEST_CERTIFY,
            quote_kind: ST_ATTEST_QUOTE,
            safe: 1,
            selection: sel_0_to_7(),
            quoted: default_pcrs(),
            pcrs: default_pcrs(),
            certify: None,
            quote: None,
            signer: None,
            certs: vec![self.ak_cert.clone(), self.ek_cert.clone()],
            ak_certs: 1,
            log: None,
            session: None,
            session_signer: None,
        };
        edit(&mut f);
        let certify = f.certify.clone().unwrap_or_else(|| {
            attest(
                f.magic,
                f.certify_kind,
                &f.signer_name,
                &f.certify_extra,
                f.safe,
                &certify_body(&f.certified_name),
            )
        });
        let quote = f.quote.clone().unwrap_or_else(|| {
            attest(
                f.magic,
                f.quote_kind,
                &f.signer_name,
                &f.quote_extra,
                f.safe,
                &quote_body(&f.selection, &f.quoted),
            )
        });
        let signer = f.signer.as_ref().unwrap_or(&self.ak);
        let qd = fmt::qualifying_data(&f.binding, NONCE);
        let session = f.session.map(|(nbf, exp)| SessionKey {
            nbf,
            exp,
            sig: f
                .session_signer
                .as_ref()
                .unwrap_or(&self.key)
                .tpm_sign(&fmt::session_message(&qd, nbf, exp)),
        });
        let doc = TpmDocument {
            ak: f.ak_pub.clone(),
            ak_binding: AkBinding::Certificate {
                ak_certs: f.ak_certs,
            },
            key: f.key_pub.clone(),
            certify_sig: signer.tpm_sign(&certify),
            certify,
            quote_sig: signer.tpm_sign(&quote),
            quote,
            pcrs: f.pcrs.clone(),
            log: f.log.clone(),
            session,
        };
        envelope(doc, &f.certs, f.binding)
    }
}

fn envelope(doc: TpmDocument, certs: &[Vec<u8>], binding: Vec<u8>) -> EvidenceEnvelope {
    EvidenceEnvelope {
        platform: Platform::Tpm,
        document: doc.to_cbor(),
        certs: certs
            .iter()
            .map(|c| serde_bytes::ByteBuf::from(c.clone()))
            .collect(),
        binding,
        nonce: NONCE.to_vec(),
    }
}

/// Every field an attacker may forge.
struct Forge {
    binding: Vec<u8>,
    ak_pub: Vec<u8>,
    key_pub: Vec<u8>,
    signer_name: Vec<u8>,
    certified_name: Vec<u8>,
    certify_extra: Vec<u8>,
    quote_extra: Vec<u8>,
    magic: u32,
    certify_kind: u16,
    quote_kind: u16,
    safe: u8,
    selection: Vec<(u16, Vec<u8>)>,
    quoted: Vec<Vec<u8>>,
    pcrs: Vec<Vec<u8>>,
    certify: Option<Vec<u8>>,
    quote: Option<Vec<u8>>,
    signer: Option<Key>,
    certs: Vec<Vec<u8>>,
    ak_certs: usize,
    log: Option<Vec<u8>>,
    session: Option<(u64, u64)>,
    session_signer: Option<Key>,
}

fn at() -> UnixTime {
    UnixTime::from_secs(T0)
}

fn run(v: &TpmVerifier, env: &EvidenceEnvelope) -> Result<VerifiedTpm, VerifyError> {
    v.verify(env, &SnpVerifier::default(), &SnpPolicy::default(), at())
}

fn code(m: &Model, env: &EvidenceEnvelope) -> &'static str {
    run(&m.verifier(), env)
        .map(|_| "ok")
        .unwrap_or_else(|e| e.code())
}

#[test]
fn baseline_the_model_verifies() {
    let m = Model::new();
    assert_eq!(code(&m, &m.evidence(|_| {})), "ok");
}

/// The classic forge: the attacker's own non-restricted key in the same TPM (TPM2_Sign
/// signs any digest) signs a crafted TPMS_ATTEST certifying a key of the attacker's choice.
#[test]
fn a_crafted_attest_signed_by_a_non_restricted_key_is_refused() {
    let m = Model::new();
    let outside = Key::new(); // a key that never was in a TPM
    let outside_pub = outside.public(KEY_ATTRS, alg::NULL);
    let jwk = Jwk::ec(SigAlg::ES256, outside.point()).unwrap();
    let forge = |f: &mut Forge, ak_pub: Vec<u8>, signer: Key| {
        f.binding = Model::binding_for(&jwk);
        let q = fmt::qualifying_data(&f.binding, NONCE).to_vec();
        f.certify_extra.clone_from(&q);
        f.quote_extra = q;
        f.key_pub.clone_from(&outside_pub);
        f.certified_name = name_of(&outside_pub);
        f.signer_name = name_of(&ak_pub);
        f.ak_pub = ak_pub;
        f.signer = Some(signer);
    };
    // (a) the enrolled AK's public area sent, signatures by the unrestricted key.
    let e = m.evidence(|f| forge(f, m.ak.public(AK_ATTRS, alg::ECDSA), Key::new()));
    assert_eq!(code(&m, &e), "tpm.certify_signature");
    // (b) the unrestricted key sent as the AK, honestly described: not restricted.
    let k = Key::new();
    let honest = k.public(AK_ATTRS & !attrs::RESTRICTED, alg::ECDSA);
    let e = m.evidence(|f| forge(f, honest, k));
    assert_eq!(code(&m, &e), "tpm.ak_attributes");
    // (c) the unrestricted key sent claiming `restricted`, with an AK certificate the CA
    // issued for that key's real (unrestricted) name: SKI ≠ the claimed public area's name.
    let k = Key::new();
    let real_name = name_of(&k.public(AK_ATTRS & !attrs::RESTRICTED, alg::ECDSA));
    let cert = m.issue_ak(&k.rc, &real_name, &spki_of(&m.ek_cert));
    let lying = k.public(AK_ATTRS, alg::ECDSA);
    let e = m.evidence(|f| {
        forge(f, lying, k);
        f.certs[0] = cert;
    });
    assert_eq!(code(&m, &e), "tpm.ak_cert_key");
}

#[test]
fn a_quote_presented_as_the_certify_and_vice_versa_is_refused() {
    let m = Model::new();
    let ok = TpmDocument::from_cbor(&m.evidence(|_| {}).document).unwrap();
    let mut swapped = ok.clone();
    swapped.certify.clone_from(&ok.quote);
    swapped.certify_sig.clone_from(&ok.quote_sig);
    swapped.quote.clone_from(&ok.certify);
    swapped.quote_sig.clone_from(&ok.certify_sig);
    let e = envelope(
        swapped,
        &[m.ak_cert.clone(), m.ek_cert.clone()],
        m.binding(),
    );
    assert_eq!(code(&m, &e), "tpm.attest_type");
    // The type field rewritten (and re-signed by the AK, as a TPM would never do).
    let e = m.evidence(|f| f.certify_kind = ST_ATTEST_QUOTE);
    assert!(code(&m, &e).starts_with("tpm."), "{}", code(&m, &e));
    assert_ne!(code(&m, &e), "ok");
    let e = m.evidence(|f| f.quote_kind = 0x8014); // TPM_ST_ATTEST_COMMAND_AUDIT
    assert_eq!(code(&m, &e), "tpm.attest_type");
}

#[test]
fn a_magic_other_than_tpm_generated_value_is_refused() {
    let m = Model::new();
    let e = m.evidence(|f| f.magic = 0xff54_4348);
    assert_eq!(code(&m, &e), "tpm.magic");
}

#[test]
fn truncated_and_overlong_tpm2b_sizes_are_refused() {
    let m = Model::new();
    let good = m.evidence(|_| {});
    let doc = TpmDocument::from_cbor(&good.document).unwrap();
    // extraData's size (offset 4+2+2+34 = 42) says 33 / 31 / 0xffff; re-signed by the AK.
    for size in [31u16, 33, 0xffff, 0] {
        let mut q = doc.quote.clone();
        q[42..44].copy_from_slice(&size.to_be_bytes());
        let e = m.evidence(|f| f.quote = Some(q));
        let c = code(&m, &e);
        assert!(
            c == "tpm.structure" || c == "tpm.nonce",
            "extraData size {size}: {c}"
        );
    }
    // A trailing byte after the structure.
    let mut q = doc.quote.clone();
    q.push(0);
    let e = m.evidence(|f| f.quote = Some(q));
    assert_eq!(code(&m, &e), "tpm.structure");
}

#[test]
fn qualifying_data_of_another_nonce_or_binding_is_refused() {
    let m = Model::new();
    let other = Model::binding_for(&Jwk::ec(SigAlg::ES256, Key::new().point()).unwrap());
    let e = m.evidence(|f| f.quote_extra = fmt::qualifying_data(&other, NONCE).to_vec());
    assert_eq!(code(&m, &e), "tpm.nonce");
    let e = m.evidence(|f| f.certify_extra = fmt::qualifying_data(&f.binding, b"old").to_vec());
    assert_eq!(code(&m, &e), "tpm.nonce");
    // The nonce alone carried in extraData (not hashed with the binding).
    let e = m.evidence(|f| {
        f.quote_extra = NONCE.to_vec();
        f.certify_extra = NONCE.to_vec();
    });
    assert_eq!(code(&m, &e), "tpm.nonce");
}

#[test]
fn a_binding_whose_jkt_is_not_the_certified_key_is_refused() {
    let m = Model::new();
    let other = Jwk::ec(SigAlg::ES256, Key::new().point()).unwrap();
    let e = m.evidence(|f| {
        f.binding = Model::binding_for(&other);
        let q = fmt::qualifying_data(&f.binding, NONCE).to_vec();
        f.certify_extra.clone_from(&q);
        f.quote_extra = q;
    });
    assert_eq!(code(&m, &e), "tpm.key_binding");
}

#[test]
fn a_key_created_outside_or_duplicable_is_refused_even_when_certified() {
    let m = Model::new();
    for (a, want) in [
        (
            KEY_ATTRS & !attrs::SENSITIVE_DATA_ORIGIN,
            "tpm.key_not_tpm_generated",
        ), // Import / LoadExternal
        (KEY_ATTRS & !attrs::FIXED_TPM, "tpm.key_duplicable"),
        (KEY_ATTRS & !attrs::FIXED_PARENT, "tpm.key_duplicable"),
        (
            KEY_ATTRS | attrs::ENCRYPTED_DUPLICATION,
            "tpm.key_duplicable",
        ),
        (KEY_ATTRS | attrs::X509_SIGN, "tpm.key_attributes"),
        (KEY_ATTRS | 0x0000_0001, "tpm.key_attributes"), // reserved bit 0
    ] {
        let e = m.evidence(|f| {
            f.key_pub = m.key.public(a, alg::NULL);
            f.certified_name = name_of(&f.key_pub);
        });
        assert_eq!(code(&m, &e), want, "attributes 0x{a:08x}");
    }
}

#[test]
fn pcr_values_that_do_not_hash_to_the_quote_are_refused() {
    let m = Model::new();
    // Values reordered: same multiset, other order.
    let e = m.evidence(|f| f.pcrs.reverse());
    assert_eq!(code(&m, &e), "tpm.pcr_digest");
    // One extra value appended.
    let e = m.evidence(|f| f.pcrs.push(vec![0; 32]));
    assert_eq!(code(&m, &e), "tpm.pcr_values");
}

/// A quote of the SHA-1 bank only, with "PCR 7" values an attacker chose to look like a
/// policy's: no SHA-256 measurement comes out of it.
#[test]
fn a_sha1_bank_quote_yields_no_sha256_measurements() {
    let m = Model::new();
    let sha1_vals: Vec<Vec<u8>> = (0u8..8).map(|i| vec![i; 20]).collect();
    let e = m.evidence(|f| {
        f.selection = vec![(alg::SHA1, vec![0xff, 0, 0])];
        f.quoted.clone_from(&sha1_vals);
        f.pcrs = sha1_vals;
    });
    let v = run(&m.verifier(), &e).unwrap();
    assert!(v.measurements().is_empty(), "{:?}", v.measurements());
    // The same bank selected twice is refused; an algorithm that is not a hash too.
    let e = m.evidence(|f| {
        f.selection = vec![(alg::SHA256, vec![1, 0, 0]), (alg::SHA256, vec![2, 0, 0])];
        f.quoted = vec![vec![0; 32], vec![1; 32]];
        f.pcrs.clone_from(&f.quoted);
    });
    assert_eq!(code(&m, &e), "tpm.structure");
    let e = m.evidence(|f| {
        f.selection = vec![(alg::AES, vec![1, 0, 0])];
    });
    assert_eq!(code(&m, &e), "tpm.structure");
    // A select bitmap of 5 bytes (PCRs 32–39, which no TPM has).
    let e = m.evidence(|f| {
        f.selection = vec![(alg::SHA256, vec![0, 0, 0, 0, 1])];
        f.quoted = vec![vec![0; 32]];
        f.pcrs.clone_from(&f.quoted);
    });
    assert_eq!(code(&m, &e), "tpm.structure");
}

/// Selection bitmaps select PCR indices 24–31 (sizeofSelect 4), which TPM 2.0 PC-client
/// TPMs do not have: they come out as `TPM_PCR24…`, names a policy cannot hold — harmless,
/// asserted so that a change to the policy namespace would notice.
#[test]
fn pcr_indices_above_23_cannot_match_a_policy_name() {
    let m = Model::new();
    let e = m.evidence(|f| {
        f.selection = vec![(alg::SHA256, vec![0, 0, 0, 0x80])];
        f.quoted = vec![vec![0xaa; 32]];
        f.pcrs.clone_from(&f.quoted);
    });
    let v = run(&m.verifier(), &e).unwrap();
    assert_eq!(
        v.measurements().keys().collect::<Vec<_>>(),
        vec!["TPM_PCR31"]
    );
    let err = cada_attestation_verifier::Policy::from_toml(
        &format!(
            "[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{TPM_PCR31 = \"{}\"}}]",
            "aa".repeat(32)
        ),
        std::path::Path::new("."),
        "t",
    )
    .unwrap_err();
    assert!(err.to_string().contains("TPM_PCR0..TPM_PCR23"), "{err}");
}

#[test]
fn an_ak_certificate_naming_another_ek_or_another_ak_is_refused() {
    let m = Model::new();
    let other_ek = Key::new();
    let other_ek_cert = ek_params("ek2")
        .signed_by(
            &other_ek.rc,
            &Issuer::from_params(&m.mfr_params, &m.mfr_key),
        )
        .unwrap()
        .der()
        .to_vec();
    // AK certificate names the EK of another (genuine) TPM; that TPM's EK chain is sent.
    let e = m.evidence(|f| f.certs[1] = other_ek_cert.clone());
    assert_eq!(code(&m, &e), "tpm.ak_not_bound");
    // AK certificate whose SKI is another AK's name.
    let other_name = name_of(&Key::new().public(AK_ATTRS, alg::ECDSA));
    let cert = m.issue_ak(&m.ak.rc, &other_name, &spki_of(&m.ek_cert));
    let e = m.evidence(|f| f.certs[0] = cert);
    assert_eq!(code(&m, &e), "tpm.ak_cert_key");
    // The AK certificate counted as part of the EK chain and vice versa.
    let e = m.evidence(|f| f.ak_certs = 2);
    assert_ne!(code(&m, &e), "ok");
}

/// An EK certificate (not a CA, keyAgreement + digitalSignature) used to issue another "EK
/// certificate": a leaf is not an issuer.
#[test]
fn an_ek_certificate_used_as_a_ca_is_refused() {
    let m = Model::new();
    let ek1 = Key::new();
    let mut p1 = ek_params("ek issuer");
    p1.key_usages = vec![
        KeyUsagePurpose::KeyAgreement,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ek1_cert = p1
        .signed_by(&ek1.rc, &Issuer::from_params(&m.mfr_params, &m.mfr_key))
        .unwrap()
        .der()
        .to_vec();
    let forged_ek = Key::new();
    let forged_cert = ek_params("forged ek")
        .signed_by(&forged_ek.rc, &Issuer::from_params(&p1, &ek1.rc))
        .unwrap()
        .der()
        .to_vec();
    let ak_cert = m.issue_ak(
        &m.ak.rc,
        &name_of(&m.ak.public(AK_ATTRS, alg::ECDSA)),
        &spki_of(&forged_cert),
    );
    let e = m.evidence(|f| f.certs = vec![ak_cert, forged_cert, ek1_cert]);
    assert_eq!(code(&m, &e), "tpm.ek_chain");
}

/// Manufacturer root with pathLenConstraint 0 → intermediate CA → intermediate CA → EK.
#[test]
fn an_ek_chain_violating_the_roots_path_length_is_refused() {
    deep_chain(true);
}

/// Root → intermediate with pathLenConstraint 0 → intermediate CA → EK: RFC 5280's rule.
#[test]
fn an_ek_chain_violating_an_intermediates_path_length_is_refused() {
    deep_chain(false);
}

fn deep_chain(root_constrained: bool) {
    let mfr_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_p = ca_params("PathLen Root");
    if root_constrained {
        root_p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    }
    let root = root_p.self_signed(&mfr_key).unwrap().der().to_vec();
    let i1_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut i1_p = ca_params("Intermediate 1");
    if !root_constrained {
        i1_p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    }
    let i1 = i1_p
        .signed_by(&i1_key, &Issuer::from_params(&root_p, &mfr_key))
        .unwrap()
        .der()
        .to_vec();
    let i2_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let i2_p = ca_params("Intermediate 2");
    let i2 = i2_p
        .signed_by(&i2_key, &Issuer::from_params(&i1_p, &i1_key))
        .unwrap()
        .der()
        .to_vec();
    let ek = Key::new();
    let ek_cert = ek_params("ek deep")
        .signed_by(&ek.rc, &Issuer::from_params(&i2_p, &i2_key))
        .unwrap()
        .der()
        .to_vec();
    let m = Model::new();
    let ak_cert = m.issue_ak(
        &m.ak.rc,
        &name_of(&m.ak.public(AK_ATTRS, alg::ECDSA)),
        &spki_of(&ek_cert),
    );
    let mut roots = TpmRoots::pinned();
    roots.add_ek_root("pathlen root", &root).unwrap();
    roots
        .add_ak_root("attack enroll", &m.enroll_root, false)
        .unwrap();
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    let e = m.evidence(|f| f.certs = vec![ak_cert, ek_cert, i2, i1]);
    let err = run(&v, &e).unwrap_err();
    assert_eq!(err.code(), "tpm.ek_chain", "{err}");
}

#[test]
fn an_ek_chain_to_an_unknown_root_or_given_as_an_ak_root_is_refused() {
    let m = Model::new();
    // The manufacturer root trusted only as an AK root (roots kept apart).
    let mut roots = TpmRoots::pinned();
    roots.add_ak_root("mfr as ak", &m.mfr_root, false).unwrap();
    roots
        .add_ak_root("attack enroll", &m.enroll_root, false)
        .unwrap();
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    assert_eq!(
        run(&v, &m.evidence(|_| {})).unwrap_err().code(),
        "tpm.ek_untrusted_root"
    );
    // The enrollment CA trusted only as an EK root.
    let mut roots = TpmRoots::pinned();
    roots.add_ek_root("attack mfr", &m.mfr_root).unwrap();
    roots.add_ek_root("enroll as ek", &m.enroll_root).unwrap();
    let v = TpmVerifier::new(roots, TpmPolicy::default());
    assert_eq!(
        run(&v, &m.evidence(|_| {})).unwrap_err().code(),
        "tpm.ak_untrusted_root"
    );
    // The default (pinned) roots: the model, like swtpm, is refused.
    assert_eq!(
        run(&TpmVerifier::default(), &m.evidence(|_| {}))
            .unwrap_err()
            .code(),
        "tpm.ak_untrusted_root"
    );
}

/// An Azure HCL report (real, AZ01) whose runtime claims hold another AK than the one that
/// signed the quote and certify.
#[test]
fn an_hcl_report_whose_ak_is_not_the_signer_is_refused() {
    let m = Model::new();
    let good = TpmDocument::from_cbor(&m.evidence(|_| {}).document).unwrap();
    let doc = TpmDocument {
        ak_binding: AkBinding::AzureHcl {
            report: common::read("sev-snp/azure-vtpm/AZ01_hcl-report.bin"),
        },
        ..good
    };
    let certs = common::certs("sev-snp/azure-vtpm/AZ01_vcek-chain.pem");
    let env = envelope(doc, &certs, m.binding());
    let policy = SnpPolicy {
        max_vmpl: Some(0),
        ..SnpPolicy::default()
    };
    let err = m
        .verifier()
        .verify(
            &env,
            &SnpVerifier::default(),
            &policy,
            UnixTime::parse_rfc3339("2026-11-01T00:00:00Z").unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.code(), "tpm.hcl_ak", "{err}");
}

fn session_model() -> (Model, Jwk) {
    (Model::new(), Jwk::ed25519(&[9; 32]))
}

fn with_session(m: &Model, jwk: &Jwk, nbf: u64, exp: u64, signer: Option<Key>) -> EvidenceEnvelope {
    m.evidence(|f| {
        f.binding = Model::binding_for(jwk);
        let q = fmt::qualifying_data(&f.binding, NONCE).to_vec();
        f.certify_extra.clone_from(&q);
        f.quote_extra = q;
        f.session = Some((nbf, exp));
        f.session_signer = signer;
    })
}

#[test]
fn session_key_tricks_are_refused() {
    let (m, jwk) = session_model();
    assert_eq!(
        code(&m, &with_session(&m, &jwk, T0 - 10, T0 + 600, None)),
        "ok"
    );
    // Signed by a key the TPM did not certify (the attacker's own, e.g. the AK's holder
    // cannot sign it: only a non-restricted key can, and it must be the certified one).
    assert_eq!(
        code(
            &m,
            &with_session(&m, &jwk, T0 - 10, T0 + 600, Some(Key::new()))
        ),
        "tpm.session_signature"
    );
    // Longer than the policy allows, even if still "now".
    assert_eq!(
        code(&m, &with_session(&m, &jwk, T0 - 10, T0 + 1000, None)),
        "tpm.session_too_long"
    );
    // Not yet valid.
    assert_eq!(
        code(&m, &with_session(&m, &jwk, T0 + 10, T0 + 600, None)),
        "tpm.session_expired"
    );
    // Beyond the format's maximum.
    let e = with_session(&m, &jwk, T0 - 10, T0 + 24 * 3600 + 1, None);
    assert_eq!(code(&m, &e), "tpm.document");
}

/// The session statement signed by the certified key, replayed under a new nonce: the
/// statement covers the qualifying data, so it does not carry over.
#[test]
fn a_session_statement_does_not_carry_over_to_another_nonce() {
    let (m, jwk) = session_model();
    let e1 = with_session(&m, &jwk, T0 - 10, T0 + 600, None);
    let sess = TpmDocument::from_cbor(&e1.document).unwrap().session;
    let mut e2 = with_session(&m, &jwk, T0 - 10, T0 + 600, None);
    e2.nonce = b"second nonce".to_vec();
    let binding = e2.binding.clone();
    let q = fmt::qualifying_data(&binding, &e2.nonce).to_vec();
    // Fresh quote/certify for the new nonce, old session statement.
    let mut fresh = m.evidence(|f| {
        f.binding = binding.clone();
        f.certify_extra.clone_from(&q);
        f.quote_extra.clone_from(&q);
    });
    fresh.nonce = b"second nonce".to_vec();
    let mut doc = TpmDocument::from_cbor(&fresh.document).unwrap();
    doc.session = sess;
    fresh.document = doc.to_cbor();
    assert_eq!(code(&m, &fresh), "tpm.session_signature");
}

/// clockInfo.safe = 0: freshness comes from the nonce, never from the clock, so accepting
/// is right; the verifier reports it.
#[test]
fn clock_safe_zero_is_reported_not_trusted() {
    let m = Model::new();
    let v = run(&m.verifier(), &m.evidence(|f| f.safe = 0)).unwrap();
    assert!(!v.clock.safe);
    let e = m.evidence(|f| f.safe = 2);
    assert_eq!(code(&m, &e), "tpm.structure");
}

/// One log event: PCR, (bank, digest) pairs, event data.
type LogEvent<'a> = (u32, Vec<(u16, Vec<u8>)>, &'a [u8]);

/// A crypto-agile log declaring SHA-1 and SHA-256 (TCG_EfiSpecIDEvent with two banks).
fn two_bank_log(events: &[LogEvent<'_>]) -> Vec<u8> {
    let mut spec = b"Spec ID Event03\0".to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&2u32.to_le_bytes());
    spec.extend_from_slice(&alg::SHA1.to_le_bytes());
    spec.extend_from_slice(&20u16.to_le_bytes());
    spec.extend_from_slice(&alg::SHA256.to_le_bytes());
    spec.extend_from_slice(&32u16.to_le_bytes());
    spec.push(0);
    let mut out = Vec::new();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&[0; 20]);
    out.extend_from_slice(&u32::try_from(spec.len()).unwrap().to_le_bytes());
    out.extend_from_slice(&spec);
    for (pcr, digests, data) in events {
        out.extend_from_slice(&pcr.to_le_bytes());
        out.extend_from_slice(&0x8000_0008u32.to_le_bytes());
        out.extend_from_slice(&u32::try_from(digests.len()).unwrap().to_le_bytes());
        for (h, d) in digests {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(d);
        }
        out.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

fn extend(pcr: &[u8], d: &[u8], sha: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    sha(&[pcr, d].concat())
}

/// An event log whose SHA-256 digests replay to the quoted SHA-256 PCR, but whose SHA-1
/// digests (a bank the quote also selected) are hostile and do not replay to the quoted
/// SHA-1 value: the log contradicts the TPM and must be refused.
#[test]
fn an_event_log_with_a_hostile_extra_bank_is_refused() {
    let m = Model::new();
    let d256 = sha256(b"good boot loader");
    let d1_real = sha1(b"good boot loader");
    let d1_evil = sha1(b"evil boot loader");
    let log = two_bank_log(&[(
        4,
        vec![(alg::SHA1, d1_evil), (alg::SHA256, d256.clone())],
        b"evil.efi",
    )]);
    let p256 = extend(&[0; 32], &d256, sha256);
    let p1 = extend(&[0; 20], &d1_real, sha1);
    let e = m.evidence(|f| {
        f.selection = vec![
            (alg::SHA1, vec![0x10, 0, 0]),
            (alg::SHA256, vec![0x10, 0, 0]),
        ];
        f.quoted = vec![p1, p256];
        f.pcrs.clone_from(&f.quoted);
        f.log = Some(log);
    });
    assert_eq!(code(&m, &e), "tpm.eventlog_mismatch");
}

/// An event without a SHA-256 digest (only SHA-1) in a log that declares both banks: a TPM
/// extends every active bank, so such an event cannot have happened; the SHA-256 replay
/// skips it silently.
#[test]
fn an_event_missing_a_declared_bank_is_refused() {
    let m = Model::new();
    let d256 = sha256(b"good");
    let log = two_bank_log(&[
        (
            4,
            vec![(alg::SHA1, sha1(b"good")), (alg::SHA256, d256.clone())],
            b"good.efi",
        ),
        (4, vec![(alg::SHA1, sha1(b"evil"))], b"evil.efi"),
    ]);
    let p256 = extend(&[0; 32], &d256, sha256);
    let e = m.evidence(|f| {
        f.selection = vec![(alg::SHA256, vec![0x10, 0, 0])];
        f.quoted = vec![p256];
        f.pcrs.clone_from(&f.quoted);
        f.log = Some(log);
    });
    assert_eq!(code(&m, &e), "tpm.eventlog");
}

/// Every single-byte change of the TPM structures, re-signed by the AK (what a compromised
/// or buggy TPM could sign, not what an outsider can): each is either refused or verifies to
/// the same key and the same SHA-256 PCR values — no edit yields another key or other PCRs.
#[test]
fn resigned_edits_of_the_certify_never_certify_another_key() {
    let m = Model::new();
    let base = TpmDocument::from_cbor(&m.evidence(|_| {}).document).unwrap();
    let want = run(&m.verifier(), &m.evidence(|_| {})).unwrap();
    for i in 0..base.certify.len() {
        let mut c = base.certify.clone();
        c[i] ^= 0x01;
        let e = m.evidence(|f| f.certify = Some(c));
        if let Ok(v) = run(&m.verifier(), &e) {
            assert_eq!(v.key_jkt, want.key_jkt, "certify byte {i}");
        }
    }
}

/// The certified key's `TPMT_PUBLIC` with `attributes` and `auth_policy`.
fn key_public_with_policy(m: &Model, attributes: u32, auth_policy: &[u8]) -> Vec<u8> {
    let p = m.key.public(attributes, alg::NULL);
    let mut out = p[..8].to_vec();
    tpm2b(&mut out, auth_policy);
    out.extend_from_slice(&p[10..]);
    out
}

/// Review tpm-1 informational I3: `[tpm] require_key_policy` refuses a certified key that can
/// sign outside the quoted boot state — no authPolicy, an authPolicy other than PolicyPCR over
/// the quoted SHA-256 PCRs, or userWithAuth set (the authValue alone then suffices) — and
/// accepts the key `cada-enclave --tpm-key-policy pcr` makes. The default leaves all accepted.
#[test]
fn require_key_policy_refuses_keys_not_bound_to_the_quoted_pcrs() {
    let m = Model::new();
    // PolicyPCR over SHA-256 PCRs 0–7 with the quoted values, computed here from the spec.
    let mut sel = 1u32.to_be_bytes().to_vec();
    sel.extend_from_slice(&alg::SHA256.to_be_bytes());
    sel.extend_from_slice(&[3, 0xff, 0, 0]);
    let good = sha256(
        &[
            &[0u8; 32][..],
            &0x0000_017Fu32.to_be_bytes(),
            &sel,
            &sha256(&default_pcrs().concat()),
        ]
        .concat(),
    );
    let policy_pcr = KEY_ATTRS & !attrs::USER_WITH_AUTH;
    let mut other_pcrs = default_pcrs();
    other_pcrs[7][0] ^= 1;
    let stale = sha256(
        &[
            &[0u8; 32][..],
            &0x0000_017Fu32.to_be_bytes(),
            &sel,
            &sha256(&other_pcrs.concat()),
        ]
        .concat(),
    );
    let with = |attributes: u32, auth: &[u8]| {
        let key_pub = key_public_with_policy(&m, attributes, auth);
        m.evidence(|f| {
            f.certified_name = name_of(&key_pub);
            f.key_pub = key_pub;
        })
    };
    let strict = {
        let mut roots = TpmRoots::pinned();
        roots.add_ek_root("attack mfr", &m.mfr_root).unwrap();
        roots
            .add_ak_root("attack enroll", &m.enroll_root, false)
            .unwrap();
        TpmVerifier::new(
            roots,
            TpmPolicy {
                require_key_policy: true,
                ..TpmPolicy::default()
            },
        )
    };
    let strict_code =
        |e: &EvidenceEnvelope| run(&strict, e).map(|_| "ok").unwrap_or_else(|e| e.code());
    // PolicyPCR then PolicyAuthValue: the key `cada-enclave` makes since review tpm-2.
    let good_with_auth = sha256(&[&good[..], &0x0000_016Bu32.to_be_bytes()].concat());
    let stale_with_auth = sha256(&[&stale[..], &0x0000_016Bu32.to_be_bytes()].concat());
    let cases: [(&str, EvidenceEnvelope, &str); 7] = [
        ("no authPolicy", with(KEY_ATTRS, &[]), "tpm.key_policy"),
        (
            "PolicyPCR but userWithAuth",
            with(KEY_ATTRS, &good),
            "tpm.key_policy",
        ),
        (
            "another policy",
            with(policy_pcr, &[7; 32]),
            "tpm.key_policy",
        ),
        (
            "PolicyPCR of other values",
            with(policy_pcr, &stale),
            "tpm.key_policy",
        ),
        (
            "PolicyPCR of the quoted values",
            with(policy_pcr, &good),
            "ok",
        ),
        (
            "PolicyPCR of the quoted values then PolicyAuthValue",
            with(policy_pcr, &good_with_auth),
            "ok",
        ),
        (
            "PolicyPCR of other values then PolicyAuthValue",
            with(policy_pcr, &stale_with_auth),
            "tpm.key_policy",
        ),
    ];
    for (what, e, want) in &cases {
        assert_eq!(strict_code(e), *want, "{what}");
        assert_eq!(
            code(&m, e),
            "ok",
            "{what}: the default does not require a policy"
        );
    }
    let v = run(&strict, &cases[4].1).unwrap();
    assert_eq!(v.key_auth_policy, hex::encode(&good));
}
