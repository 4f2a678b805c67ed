//! SEV-SNP revocation and the fail-closed defaults of the SNP path.
//!
//! A synthetic hierarchy is made here the way `sim-snp` makes its own (a P-384 root, an
//! ASK or ASVK, a VCEK or VLEK whose extensions match the report) and trusted explicitly;
//! its CRLs are built and signed here, so every rule can be reached: a revoked ASK, ASVK,
//! VCEK (through an indirect entry) and VLEK, stale and premature lists, lists signed by
//! another key or issued by another generation's root, declared slots awaiting a list,
//! roll-back, garbage. AMD's real CRLs (testdata/amd, see its README) are checked under the
//! pinned ARKs; the one real report that needs `$CADA_FIXTURES` is S01.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)] // test code: casts of generated values, no outside bytes
mod common;

use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use cada_attestation_verifier::chain::{TrustAnchor, TrustStore};
use cada_attestation_verifier::crl::{Crl, CrlSet, MAX_CRL_ENTRIES, MAX_CRL_LEN};
use cada_attestation_verifier::roots_amd::{amd_cert, AmdCert, Generation};
use cada_attestation_verifier::snp::{
    Revocation, SigningKey, SnpPolicy, SnpVerifier, VerifiedSnpReport,
};
use cada_attestation_verifier::{UnixTime, VerifyError};
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber as RcSerial, PKCS_ECDSA_P384_SHA384,
};
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::AlgorithmIdentifierOwned;
use x509_cert::time::Time;

/// The time every synthetic test verifies at (2027-01-15T08:00:00Z).
const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;
/// Milan-layout TCB: bootloader 4, tee 0, snp 22, microcode 213.
const TCB: [u8; 8] = [4, 0, 0, 0, 0, 0, 22, 213];

fn at(s: u64) -> UnixTime {
    UnixTime::from_secs(s)
}

fn p384() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap()
}

fn ca_params(cn: &str, serial: u64, from: u64) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.serial_number = Some(RcSerial::from(serial));
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from as i64).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + 3650 * DAY) as i64).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn der_uint(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![0x02, 0x01, v]
    } else {
        vec![0x02, 0x02, 0x00, v]
    }
}

/// A synthetic SEV-SNP hierarchy: root → ASK/ASVK → VCEK/VLEK, and a report signer.
struct Hierarchy {
    kind: SigningKey,
    root_key: KeyPair,
    root_der: Vec<u8>,
    mid_der: Vec<u8>,
    leaf_der: Vec<u8>,
    leaf_key: EcdsaKeyPair,
    chip_id: [u8; 64],
}

impl Hierarchy {
    fn new(kind: SigningKey) -> Self {
        Self::with_root_from(kind, NOW - 365 * DAY)
    }

    /// A hierarchy whose root becomes valid at `root_from`.
    fn with_root_from(kind: SigningKey, root_from: u64) -> Self {
        let root_key = p384();
        // Each hierarchy's root has its own name, as two real roots would.
        let mut tag = [0u8; 4];
        aws_lc_rs::rand::fill(&mut tag).unwrap();
        let root_cn = format!("CADA test ARK {} (not AMD)", hex::encode(tag));
        let root_params = ca_params(&root_cn, 0x01_0000, root_from);
        let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
        let mid_key = p384();
        let mid_cn = match kind {
            SigningKey::Vcek => "CADA test ASK",
            SigningKey::Vlek => "CADA test ASVK",
        };
        let mid_params = ca_params(mid_cn, 0x01_0001, NOW - 365 * DAY);
        let mid_der = mid_params
            .signed_by(&mid_key, &Issuer::from_params(&root_params, &root_key))
            .unwrap()
            .der()
            .to_vec();
        let mut chip_id = [0u8; 64];
        aws_lc_rs::rand::fill(&mut chip_id).unwrap();
        let leaf = p384();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let leaf_cn = match kind {
            SigningKey::Vcek => "SEV-VCEK",
            SigningKey::Vlek => "SEV-VLEK",
        };
        p.distinguished_name.push(DnType::CommonName, leaf_cn);
        // Like AMD's: every VCEK and VLEK has serial number 0.
        p.serial_number = Some(RcSerial::from(0u64));
        p.not_before = time::OffsetDateTime::from_unix_timestamp((NOW - DAY) as i64).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp((NOW + 365 * DAY) as i64).unwrap();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let amd = |tail: &[u64]| [&[1u64, 3, 6, 1, 4, 1, 3704, 1][..], tail].concat();
        p.custom_extensions = vec![
            CustomExtension::from_oid_content(&amd(&[4]), chip_id.to_vec()),
            CustomExtension::from_oid_content(&amd(&[3, 1]), der_uint(TCB[0])),
            CustomExtension::from_oid_content(&amd(&[3, 2]), der_uint(TCB[1])),
            CustomExtension::from_oid_content(&amd(&[3, 3]), der_uint(TCB[6])),
            CustomExtension::from_oid_content(&amd(&[3, 8]), der_uint(TCB[7])),
        ];
        let leaf_der = p
            .signed_by(&leaf, &Issuer::from_params(&mid_params, &mid_key))
            .unwrap()
            .der()
            .to_vec();
        let leaf_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &leaf.serialize_der())
                .unwrap();
        Hierarchy {
            kind,
            root_key,
            root_der,
            mid_der,
            leaf_der,
            leaf_key,
            chip_id,
        }
    }

    fn store(&self) -> TrustStore {
        let mut s = TrustStore::empty();
        s.add(TrustAnchor::from_der("CADA test ARK", &self.root_der).unwrap());
        s
    }

    fn verifier(&self) -> SnpVerifier {
        SnpVerifier::new(self.store())
    }

    /// A version 3 Milan-layout report at `vmpl`, signed by the leaf.
    fn report(&self, vmpl: u32) -> Vec<u8> {
        let mut r = vec![0u8; 0x4A0];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x30..0x34].copy_from_slice(&vmpl.to_le_bytes());
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes());
        r[0x38..0x40].copy_from_slice(&TCB);
        r[0x40..0x48].copy_from_slice(&1u64.to_le_bytes());
        if self.kind == SigningKey::Vlek {
            r[0x48..0x4C].copy_from_slice(&(1u32 << 2).to_le_bytes());
        }
        r[0x50..0x90].copy_from_slice(&[0x5a; 64]);
        r[0x90..0xC0].copy_from_slice(&[0x11; 48]);
        r[0x180..0x188].copy_from_slice(&TCB);
        r[0x188..0x18B].copy_from_slice(&[0x19, 0x01, 0x01]);
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&TCB);
        r[0x1E8..0x1EB].copy_from_slice(&[22, 55, 1]);
        r[0x1EC..0x1EF].copy_from_slice(&[22, 55, 1]);
        r[0x1F0..0x1F8].copy_from_slice(&TCB);
        let sig = self
            .leaf_key
            .sign(&SystemRandom::new(), &r[..0x2A0])
            .unwrap();
        let sig = sig.as_ref();
        for i in 0..48 {
            r[0x2A0 + i] = sig[47 - i];
            r[0x2E8 + i] = sig[95 - i];
        }
        r
    }

    fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.mid_der.clone(), self.root_der.clone()]
    }

    fn verify(
        &self,
        v: &SnpVerifier,
        policy: &SnpPolicy,
        t: u64,
    ) -> Result<VerifiedSnpReport, VerifyError> {
        v.verify(
            &self.report(0),
            &self.leaf_der,
            &self.chain(),
            policy,
            at(t),
        )
    }

    fn subject(der: &[u8]) -> Name {
        x509_cert::Certificate::from_der(der)
            .unwrap()
            .tbs_certificate()
            .subject()
            .clone()
    }

    fn serial(der: &[u8]) -> Vec<u8> {
        x509_cert::Certificate::from_der(der)
            .unwrap()
            .tbs_certificate()
            .serial_number()
            .as_bytes()
            .to_vec()
    }

    /// A CRL in this root's name, signed by its key.
    fn crl(&self) -> CrlBuilder {
        CrlBuilder {
            issuer: Self::subject(&self.root_der),
            this_update: NOW - DAY,
            next_update: Some(NOW + 30 * DAY),
            entries: vec![],
            extensions: vec![],
            version: x509_cert::Version::V2,
        }
    }

    fn sign(&self, b: &CrlBuilder) -> Vec<u8> {
        b.sign(&self.root_key)
    }
}

fn time(s: u64) -> Time {
    Time::try_from(SystemTime::UNIX_EPOCH + Duration::from_secs(s)).unwrap()
}

/// The parts of a CRL a test varies.
#[derive(Clone)]
struct CrlBuilder {
    issuer: Name,
    this_update: u64,
    next_update: Option<u64>,
    /// (serial, certificateIssuer extension, critical unknown extension)
    entries: Vec<(Vec<u8>, Option<Name>)>,
    extensions: Vec<Extension>,
    version: x509_cert::Version,
}

impl CrlBuilder {
    fn revoke(mut self, serial: &[u8]) -> Self {
        self.entries.push((serial.to_vec(), None));
        self
    }

    fn revoke_issued_by(mut self, issuer: Name, serial: &[u8]) -> Self {
        self.entries.push((serial.to_vec(), Some(issuer)));
        self
    }

    fn sign(&self, key: &KeyPair) -> Vec<u8> {
        let alg = AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_384,
            parameters: None,
        };
        let revoked: Vec<RevokedCert> = self
            .entries
            .iter()
            .map(|(serial, issuer)| RevokedCert {
                serial_number: SerialNumber::new(serial).unwrap(),
                revocation_date: time(NOW - 2 * DAY),
                crl_entry_extensions: issuer.as_ref().map(|n| {
                    let names = vec![GeneralName::DirectoryName(n.clone())];
                    vec![Extension {
                        extn_id: const_oid::db::rfc5280::ID_CE_CERTIFICATE_ISSUER,
                        critical: true,
                        extn_value: OctetString::new(names.to_der().unwrap()).unwrap(),
                    }]
                }),
            })
            .collect();
        let tbs = TbsCertList {
            version: self.version,
            signature: alg.clone(),
            issuer: self.issuer.clone(),
            this_update: time(self.this_update),
            next_update: self.next_update.map(time),
            revoked_certificates: (!revoked.is_empty()).then_some(revoked),
            crl_extensions: (!self.extensions.is_empty()).then(|| self.extensions.clone()),
        };
        let tbs_der = tbs.to_der().unwrap();
        let signer =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &key.serialize_der())
                .unwrap();
        let sig = signer.sign(&SystemRandom::new(), &tbs_der).unwrap();
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
            signature: BitString::from_bytes(sig.as_ref()).unwrap(),
        }
        .to_der()
        .unwrap()
    }
}

fn set(kind: SigningKey, der: &[u8]) -> CrlSet {
    let mut s = CrlSet::new();
    s.insert(
        Generation::Milan,
        kind,
        Crl::from_pem_or_der(der, "test CRL").unwrap(),
    )
    .unwrap();
    s
}

fn code<T: std::fmt::Debug>(r: Result<T, VerifyError>) -> &'static str {
    r.unwrap_err().code()
}

// ---- revocation of each certificate of the chain ----

#[test]
fn a_current_crl_listing_nothing_is_checked_and_recorded() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let der = h.sign(&h.crl());
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .unwrap();
    let ok = h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
    match &ok.revocation {
        Revocation::Checked(s) => {
            assert_eq!(s.source, "test CRL");
            assert_eq!(s.root, "CADA test ARK");
            assert_eq!(s.entries, 0);
            assert_eq!(s.next_update, at(NOW + 30 * DAY).to_string());
        }
        other => panic!("{other:?}"),
    }
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["revocation"]["status"], "checked");
    // Without CRLs the chain is accepted and the report says it was not checked.
    let ok = h.verify(&h.verifier(), &SnpPolicy::default(), NOW).unwrap();
    assert_eq!(ok.revocation, Revocation::NotChecked);
    assert_eq!(
        serde_json::to_value(&ok).unwrap()["revocation"]["status"],
        "not_checked"
    );
}

#[test]
fn a_revoked_ask_is_refused() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let ask_serial = Hierarchy::serial(&h.mid_der);
    let der = h.sign(&h.crl().revoke(&[0x7f]).revoke(&ask_serial));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .unwrap();
    let err = h.verify(&v, &SnpPolicy::default(), NOW).unwrap_err();
    match &err {
        VerifyError::Revoked {
            index,
            subject,
            serial,
            crl,
        } => {
            assert_eq!(*index, 1);
            assert!(subject.contains("CADA test ASK"), "{subject}");
            assert_eq!(serial, &hex::encode(&ask_serial));
            assert_eq!(crl, "test CRL");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "snp.revoked");
    // The same list without the ASK's serial accepts the chain.
    let der = h.sign(&h.crl().revoke(&[0x7f]));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .unwrap();
    h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
}

#[test]
fn a_revoked_vcek_is_refused_through_an_entry_naming_its_ask() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let ask = Hierarchy::subject(&h.mid_der);
    let vcek_serial = Hierarchy::serial(&h.leaf_der);
    assert_eq!(vcek_serial, vec![0], "AMD-like VCEK serial");
    let der = h.sign(&h.crl().revoke_issued_by(ask, &vcek_serial));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .unwrap();
    let err = h.verify(&v, &SnpPolicy::default(), NOW).unwrap_err();
    assert!(
        matches!(err, VerifyError::Revoked { index: 2, .. }),
        "{err:?}"
    );
    // An entry for serial 0 in the root's own name is a certificate the root issued, not the
    // VCEK: it must not revoke every chip whose VCEK has serial 0.
    let der = h.sign(&h.crl().revoke(&vcek_serial));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .unwrap();
    h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
}

#[test]
fn vlek_chains_use_the_vlek_slot() {
    let h = Hierarchy::new(SigningKey::Vlek);
    let asvk_serial = Hierarchy::serial(&h.mid_der);
    let listed = h.sign(&h.crl().revoke(&asvk_serial));
    // A VCEK-hierarchy list does not speak for the VLEK hierarchy.
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &listed))
        .unwrap();
    let ok = h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
    assert_eq!(ok.signer, SigningKey::Vlek);
    assert_eq!(ok.revocation, Revocation::NotChecked);
    // The VLEK list revoking the ASVK refuses it.
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vlek, &listed))
        .unwrap();
    let err = h.verify(&v, &SnpPolicy::default(), NOW).unwrap_err();
    assert!(
        matches!(err, VerifyError::Revoked { index: 1, .. }),
        "{err:?}"
    );
    // And a VLEK listed through an entry naming the ASVK.
    let asvk = Hierarchy::subject(&h.mid_der);
    let der = h.sign(&h.crl().revoke_issued_by(asvk, &[0]));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vlek, &der))
        .unwrap();
    let err = h.verify(&v, &SnpPolicy::default(), NOW).unwrap_err();
    assert!(
        matches!(err, VerifyError::Revoked { index: 2, .. }),
        "{err:?}"
    );
}

// ---- freshness ----

#[test]
fn stale_and_premature_crls_are_refused_at_their_boundaries() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let b = CrlBuilder {
        this_update: NOW,
        next_update: Some(NOW + 10),
        ..h.crl()
    };
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &h.sign(&b)))
        .unwrap();
    let grace = SnpPolicy::default().crl_grace_secs;
    assert_eq!(grace, 7 * DAY);
    let p = SnpPolicy::default();
    // thisUpdate: one second before is premature; the second itself is fine.
    let err = h.verify(&v, &p, NOW - 1).unwrap_err();
    assert_eq!(err.code(), "snp.crl_not_yet_valid", "{err}");
    h.verify(&v, &p, NOW).unwrap();
    // nextUpdate + grace is the last good second; one more is stale.
    h.verify(&v, &p, NOW + 10 + grace).unwrap();
    let err = h.verify(&v, &p, NOW + 10 + grace + 1).unwrap_err();
    assert_eq!(err.code(), "snp.crl_stale", "{err}");
    assert!(err.to_string().contains("fetch a fresh CRL"), "{err}");
    // With no grace, nextUpdate itself is the limit.
    let strict = SnpPolicy {
        crl_grace_secs: 0,
        ..SnpPolicy::default()
    };
    h.verify(&v, &strict, NOW + 10).unwrap();
    assert_eq!(code(h.verify(&v, &strict, NOW + 11)), "snp.crl_stale");
}

#[test]
fn report_mode_lists_staleness_and_revocation_together() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let b = CrlBuilder {
        next_update: Some(NOW - 30 * DAY),
        this_update: NOW - 40 * DAY,
        ..h.crl()
    }
    .revoke(&Hierarchy::serial(&h.mid_der));
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &h.sign(&b)))
        .unwrap();
    let out = v.report(
        &h.report(0),
        &h.leaf_der,
        &h.chain(),
        &SnpPolicy::default(),
        at(NOW),
    );
    let codes: Vec<&str> = out
        .failures
        .iter()
        .map(cada_attestation_verifier::VerifyError::code)
        .collect();
    assert_eq!(codes, ["snp.crl_stale", "snp.revoked"]);
}

// ---- whose list it is ----

#[test]
fn a_crl_signed_by_another_key_is_refused() {
    let h = Hierarchy::new(SigningKey::Vcek);
    // Same issuer name, another key.
    let der = h.crl().sign(&p384());
    let err = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .err()
        .unwrap();
    assert_eq!(err.code(), "snp.crl_signature", "{err}");
    // A list whose issuer is no trusted root.
    let other = Hierarchy::new(SigningKey::Vcek);
    let der = other.sign(&other.crl());
    let err = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &der))
        .err()
        .unwrap();
    assert_eq!(err.code(), "snp.crl_issuer", "{err}");
    // A byte of the signed part flipped.
    let mut der = h.sign(&h.crl().revoke(&[9]));
    let i = der.len() / 3;
    der[i] ^= 0x01;
    let err = match Crl::from_pem_or_der(&der, "flipped") {
        Err(e) => e,
        Ok(c) => {
            let mut s = CrlSet::new();
            s.insert(Generation::Milan, SigningKey::Vcek, c).unwrap();
            h.verifier().with_crls(&s).err().unwrap()
        }
    };
    assert!(
        matches!(
            err.code(),
            "snp.crl_signature" | "snp.crl_malformed" | "snp.crl_issuer"
        ),
        "{err}"
    );
}

#[test]
fn a_crl_of_another_generation_is_refused_or_not_consulted() {
    let genoa = Crl::from_der(GENOA_CRL, "genoa").unwrap();
    // Filed under the wrong generation: refused when it is put in the set.
    let mut s = CrlSet::new();
    let err = s
        .insert(Generation::Milan, SigningKey::Vcek, genoa.clone())
        .unwrap_err();
    assert_eq!(err.code(), "snp.crl_issuer");
    assert!(err.to_string().contains("Genoa CRL"), "{err}");
    assert!(s.is_empty());
    // Filed right, it is not consulted for a chain under another root.
    s.insert(Generation::Genoa, SigningKey::Vcek, genoa)
        .unwrap();
    let h = Hierarchy::new(SigningKey::Vcek);
    let v = h.verifier().with_crls(&s).unwrap();
    let ok = h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
    assert_eq!(ok.revocation, Revocation::NotChecked);
}

// ---- required lists, declared slots, updates ----

#[test]
fn require_crl_refuses_a_chain_without_one() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let p = SnpPolicy {
        require_crl: true,
        ..SnpPolicy::default()
    };
    let err = h.verify(&h.verifier(), &p, NOW).unwrap_err();
    assert_eq!(err.code(), "snp.crl_missing");
    assert!(
        err.to_string().contains("VCEK chain under CADA test ARK"),
        "{err}"
    );
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &h.sign(&h.crl())))
        .unwrap();
    h.verify(&v, &p, NOW).unwrap();
}

#[test]
fn updates_replace_the_list_and_refuse_rollback() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let v = h
        .verifier()
        .with_crls(&set(SigningKey::Vcek, &h.sign(&h.crl())))
        .unwrap();
    h.verify(&v, &SnpPolicy::default(), NOW).unwrap();
    // A newer list revoking the ASK takes effect at once.
    let newer = CrlBuilder {
        this_update: NOW - 10,
        ..h.crl()
    }
    .revoke(&Hierarchy::serial(&h.mid_der));
    let newer = Crl::from_der(&h.sign(&newer), "newer").unwrap();
    v.update_crl(Generation::Milan, SigningKey::Vcek, newer)
        .unwrap();
    assert_eq!(
        code(h.verify(&v, &SnpPolicy::default(), NOW)),
        "snp.revoked"
    );
    // Replaying the older list cannot undo that.
    let old = Crl::from_der(&h.sign(&h.crl()), "old").unwrap();
    let err = v
        .update_crl(Generation::Milan, SigningKey::Vcek, old)
        .unwrap_err();
    assert_eq!(err.code(), "snp.crl_rollback");
    // Nor can a forged one; the held list stays.
    let forged = Crl::from_der(&h.crl().sign(&p384()), "forged").unwrap();
    assert_eq!(
        code(v.update_crl(Generation::Milan, SigningKey::Vcek, forged)),
        "snp.crl_signature"
    );
    assert_eq!(
        code(h.verify(&v, &SnpPolicy::default(), NOW)),
        "snp.revoked"
    );
    let status = v.crl_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].crl.as_ref().unwrap().source, "newer");
}

// ---- what the parser refuses ----

#[test]
fn garbage_oversized_and_uninterpretable_crls_are_typed_errors() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let malformed = |der: &[u8]| {
        let err = Crl::from_pem_or_der(der, "x").unwrap_err();
        assert_eq!(err.code(), "snp.crl_malformed", "{err}");
        err.to_string()
    };
    malformed(b"not a CRL at all");
    malformed(&vec![0u8; MAX_CRL_LEN + 1]);
    // Every truncation of a valid list.
    let good = h.sign(&h.crl().revoke(&[1]));
    for n in 0..good.len() {
        malformed(&good[..n]);
    }
    // Trailing bytes.
    let mut long = good.clone();
    long.push(0);
    malformed(&long);
    // No nextUpdate: staleness cannot be bounded.
    let msg = malformed(&h.sign(&CrlBuilder {
        next_update: None,
        ..h.crl()
    }));
    assert!(msg.contains("nextUpdate"), "{msg}");
    // A version 1 list.
    malformed(&h.sign(&CrlBuilder {
        version: x509_cert::Version::V1,
        ..h.crl()
    }));
    // A critical extension (a delta CRL indicator).
    let delta = Extension {
        extn_id: const_oid::db::rfc5280::ID_CE_DELTA_CRL_INDICATOR,
        critical: true,
        extn_value: OctetString::new(vec![0x02, 0x01, 0x01]).unwrap(),
    };
    let msg = malformed(&h.sign(&CrlBuilder {
        extensions: vec![delta],
        ..h.crl()
    }));
    assert!(msg.contains("2.5.29.27"), "{msg}");
    // Too many entries.
    let mut many = h.crl();
    for i in 0..=MAX_CRL_ENTRIES as u32 {
        many = many.revoke(&(i + 1).to_be_bytes());
    }
    let msg = malformed(&h.sign(&many));
    assert!(msg.contains("entries"), "{msg}");
    // PEM is accepted as well as DER.
    use base64::Engine;
    let pem = format!(
        "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        base64::engine::general_purpose::STANDARD.encode(&good)
    );
    let c = Crl::from_pem_or_der(pem.as_bytes(), "pem").unwrap();
    assert_eq!(c.der(), good.as_slice());
    assert_eq!(c.len(), 1);
}

// ---- AMD's real CRLs ----

const MILAN_CRL: &[u8] = include_bytes!("../../testdata/amd/milan_vcek.crl");
const GENOA_CRL: &[u8] = include_bytes!("../../testdata/amd/genoa_vcek.crl");
const TURIN_CRL: &[u8] = include_bytes!("../../testdata/amd/turin_vcek.crl");

/// Inside the three lists' window (thisUpdate 2026-08-19, nextUpdate 2026-10-04).
fn in_window() -> UnixTime {
    UnixTime::parse_rfc3339("2026-09-01T00:00:00Z").unwrap()
}

fn amd_set() -> CrlSet {
    let mut s = CrlSet::new();
    for (g, der) in [
        (Generation::Milan, MILAN_CRL),
        (Generation::Genoa, GENOA_CRL),
        (Generation::Turin, TURIN_CRL),
    ] {
        let c = Crl::from_der(der, format!("KDS /vcek/v1/{}/crl", g.name())).unwrap();
        s.insert(g, SigningKey::Vcek, c).unwrap();
    }
    s
}

#[test]
fn amd_crls_verify_under_the_pinned_arks() {
    let v = SnpVerifier::default().with_crls(&amd_set()).unwrap();
    let status = v.crl_status();
    let got: Vec<(Generation, String, usize, String)> = status
        .iter()
        .map(|s| {
            let c = s.crl.as_ref().unwrap();
            (
                s.generation,
                c.root.clone(),
                c.entries,
                c.number.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Generation::Milan, "ARK-Milan".into(), 0, "0b".into()),
            (Generation::Genoa, "ARK-Genoa".into(), 1, "0a".into()),
            (Generation::Turin, "ARK-Turin".into(), 0, "07".into()),
        ]
    );
    for s in &status {
        let c = s.crl.as_ref().unwrap();
        assert_eq!(c.this_update[..10], *"2026-08-19");
        assert_eq!(c.next_update, "2026-10-04T00:00:00Z");
    }
    // The Genoa list revokes the retired Genoa ASK 0x020001, not the pinned 0x020002.
    let genoa = Crl::from_der(GENOA_CRL, "genoa").unwrap();
    let ark = amd_cert(Generation::Genoa, AmdCert::Ark).unwrap();
    let ask = amd_cert(Generation::Genoa, AmdCert::Ask).unwrap();
    let ark_name = Hierarchy::subject(&ark);
    assert_eq!(genoa.issuer(), &ark_name);
    assert!(genoa.is_revoked(&ark_name, &[0x02, 0x00, 0x01]));
    assert_eq!(Hierarchy::serial(&ask), vec![0x02, 0x00, 0x02]);
    assert!(!genoa.is_revoked(&ark_name, &Hierarchy::serial(&ask)));
    // Every pinned ASK and ASVK is absent from its generation's list.
    for (g, der) in [
        (Generation::Milan, MILAN_CRL),
        (Generation::Genoa, GENOA_CRL),
        (Generation::Turin, TURIN_CRL),
    ] {
        let c = Crl::from_der(der, "x").unwrap();
        let ark = Hierarchy::subject(&amd_cert(g, AmdCert::Ark).unwrap());
        for which in [AmdCert::Ask, AmdCert::Asvk] {
            let serial = Hierarchy::serial(&amd_cert(g, which).unwrap());
            assert!(!c.is_revoked(&ark, &serial), "{g:?} {which:?}");
        }
        assert!(c.check_current(in_window(), 0).is_ok());
    }
}

#[test]
fn a_tampered_amd_crl_is_refused() {
    let mut der = MILAN_CRL.to_vec();
    der[200] ^= 0x01; // inside the issuer name (its CN)
    let c = Crl::from_der(&der, "tampered").unwrap();
    let mut s = CrlSet::new();
    s.insert(Generation::Milan, SigningKey::Vcek, c).unwrap();
    let err = SnpVerifier::default().with_crls(&s).err().unwrap();
    // The name no longer matches ARK-Milan's: no trusted root issued it.
    assert_eq!(err.code(), "snp.crl_issuer", "{err}");
    let mut der = MILAN_CRL.to_vec();
    let n = der.len();
    der[n - 5] ^= 0x01; // inside the signature
    let c = Crl::from_der(&der, "tampered").unwrap();
    let mut s = CrlSet::new();
    s.insert(Generation::Milan, SigningKey::Vcek, c).unwrap();
    let err = SnpVerifier::default().with_crls(&s).err().unwrap();
    assert_eq!(err.code(), "snp.crl_signature", "{err}");
}

/// S01 (a real Milan report) against the real Milan CRL.
#[test]
fn a_real_milan_report_is_checked_against_the_real_milan_crl() {
    let report = common::read("sev-snp/S01_milan_virtee_report.bin");
    let vcek = common::read("sev-snp/S01_milan_virtee_vcek.der");
    let p = SnpPolicy::default();
    let v = SnpVerifier::default().with_crls(&amd_set()).unwrap();
    let ok = v.verify(&report, &vcek, &[], &p, in_window()).unwrap();
    match &ok.revocation {
        Revocation::Checked(s) => assert_eq!(s.source, "KDS /vcek/v1/Milan/crl"),
        other => panic!("{other:?}"),
    }
    // Seven days after nextUpdate the list is still used; one second later it is stale.
    let last = UnixTime::parse_rfc3339("2026-10-11T00:00:00Z").unwrap();
    v.verify(&report, &vcek, &[], &p, last).unwrap();
    let err = v
        .verify(
            &report,
            &vcek,
            &[],
            &p,
            UnixTime::from_millis(last.as_millis() + 1000),
        )
        .unwrap_err();
    assert_eq!(err.code(), "snp.crl_stale");
    // A slot declared but not filled refuses the chain until a list arrives.
    let mut declared = CrlSet::new();
    declared.expect(Generation::Milan, SigningKey::Vcek);
    let v = SnpVerifier::default().with_crls(&declared).unwrap();
    let err = v.verify(&report, &vcek, &[], &p, in_window()).unwrap_err();
    assert_eq!(err.code(), "snp.crl_missing");
    assert!(err.to_string().contains("ARK-Milan"), "{err}");
    assert_eq!(v.crl_status()[0].crl, None);
    v.update_crl(
        Generation::Milan,
        SigningKey::Vcek,
        Crl::from_der(MILAN_CRL, "fetched").unwrap(),
    )
    .unwrap();
    v.verify(&report, &vcek, &[], &p, in_window()).unwrap();
}

// ---- fail-closed defaults and root validity on the SNP path ----

#[test]
fn the_default_policy_accepts_vmpl_0_only() {
    let h = Hierarchy::new(SigningKey::Vcek);
    let v = h.verifier();
    let p = SnpPolicy::default();
    assert_eq!(p.max_vmpl, Some(0));
    v.verify(&h.report(0), &h.leaf_der, &h.chain(), &p, at(NOW))
        .unwrap();
    for vmpl in 1..=3 {
        let err = v
            .verify(&h.report(vmpl), &h.leaf_der, &h.chain(), &p, at(NOW))
            .unwrap_err();
        assert_eq!(err.code(), "policy.guest", "{err}");
        assert!(err.to_string().contains(&format!("VMPL {vmpl}")), "{err}");
    }
    // A policy that allows more says so explicitly.
    let any = SnpPolicy {
        max_vmpl: None,
        ..SnpPolicy::default()
    };
    v.verify(&h.report(3), &h.leaf_der, &h.chain(), &any, at(NOW))
        .unwrap();
    let one = SnpPolicy {
        max_vmpl: Some(1),
        ..SnpPolicy::default()
    };
    v.verify(&h.report(1), &h.leaf_der, &h.chain(), &one, at(NOW))
        .unwrap();
}

#[test]
fn a_root_not_yet_valid_is_reported_as_such() {
    let h = Hierarchy::with_root_from(SigningKey::Vcek, NOW + 1);
    let err = h
        .verify(&h.verifier(), &SnpPolicy::default(), NOW)
        .unwrap_err();
    match &err {
        VerifyError::CertificateNotYetValid {
            index, not_before, ..
        } => {
            assert_eq!(*index, 0);
            assert_eq!(not_before, &at(NOW + 1).to_string());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.code(), "chain.not_yet_valid");
    // From its first second the chain is valid (the ASK's window starts earlier, so the
    // root's is what decides).
    h.verify(&h.verifier(), &SnpPolicy::default(), NOW + 1)
        .unwrap();
}
