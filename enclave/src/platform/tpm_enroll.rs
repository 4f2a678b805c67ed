//! Enrollment of a TPM (`cada-enclave tpm enroll`): an attestation key (AK) is created in the
//! TPM and an enrollment CA issues its AK certificate only after **credential activation**
//! proved that the AK lives in the same TPM as the endorsement key (EK) of the EK certificate.
//!
//! The two sides, as [`cada_protocol::tpm`] fixes them:
//!
//! * **TPM side** ([`tpm_request`], [`tpm_activate`]): the EK (the TCG default RSA 2048
//!   template) and its certificate from NV index `0x01c00002`; an AK under the EK (ECC P-256,
//!   ECDSA/SHA-256, `restricted`, `sign`, `fixedTPM`, `fixedParent`, `sensitiveDataOrigin`,
//!   `userWithAuth`), whose TPM-wrapped private part is stored in the state directory; then
//!   `TPM2_ActivateCredential` with the CA's challenge.
//! * **CA side** ([`make_credential`], [`issue_ak_certificate`]): checks the AK's public area
//!   (a restricted signing key fixed to its TPM), computes its name, runs
//!   `TPM2_MakeCredential` **in software** against the public key of the EK *certificate* (so
//!   only the holder of that EK's private key, inside that TPM, and only for an object with
//!   that name loaded beside it, can recover the secret — a CA that let the enrolling TPM make
//!   the challenge would prove nothing), and, when the secret comes back, issues an X.509
//!   AK certificate: SubjectPublicKeyInfo = the AK, subjectKeyIdentifier = the AK's TPM name
//!   (nameAlg ‖ H(TPMT_PUBLIC), which covers its attributes), EKU tcg-kp-AIKCertificate, SAN
//!   `hardwareModuleName` = SHA-256 of the EK's SubjectPublicKeyInfo
//!   ([`cada_protocol::tpm::ek_binding_san`]).
//!
//! The CA does not judge the EK certificate's issuer: every verifier checks the EK chain to
//! its pinned manufacturer roots (or those its policy adds) each time it verifies evidence,
//! and the AK certificate only says "this AK is in the TPM of that EK". A CA run by another
//! party calls the same two functions with the request's bytes; here both sides run in one
//! process for an operator who is also the CA (and for the tests).
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::hmac;
use rcgen::{
    CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, PublicKeyData, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::AuthHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{EncryptedSecret, IdObject, Private, Public, SymmetricDefinition};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

use super::softca::{self, SoftRoot};
use super::tpm::{err, files, load_ak, p256_point, read_pem_certs, tss, write_pem_certs, Worker};
use crate::EnclaveError;

/// Name of the enrollment CA's files in its directory (`<name>.key`, `.der`, `.pem`).
pub const CA_NAME: &str = "tpm-enroll-ca";
const CA_CN: &str = "CADA TPM enrollment CA (operator)";
const CA_ORG: &str = "CADA TPM enrollment";
/// TPM_ALG_SHA256.
const ALG_SHA256: u16 = 0x000B;
/// Largest certificate read from the TPM's NV or a file.
const MAX_CERT: usize = 8 * 1024;

/// What `cada-enclave tpm enroll` is given.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The TCTI of the TPM to enroll.
    pub tcti: String,
    /// Where the AK (wrapped by the TPM) and the certificate chains are written.
    pub state_dir: PathBuf,
    /// The enrollment CA's directory (its key and certificate are created there once).
    pub ca_dir: PathBuf,
    /// Intermediates of the EK certificate (PEM), sent after it in evidence.
    pub ek_intermediates: Option<PathBuf>,
    /// Validity of the AK certificate, days.
    pub days: u32,
}

/// What enrollment produced.
#[derive(Debug, Clone)]
pub struct EnrollReport {
    /// SHA-256 of the EK's SubjectPublicKeyInfo (hex): the TPM's identity.
    pub ek_spki_sha256: String,
    /// The AK's name (hex).
    pub ak_name: String,
    /// The enrollment CA's certificate (PEM file): a verifier's `[tpm]` AK root.
    pub ca_pem: PathBuf,
}

/// The TPM's enrollment request: its EK certificate and the new AK's public area.
#[derive(Debug, Clone)]
pub struct EnrollRequest {
    /// The EK certificate (DER) from the TPM's NV.
    pub ek_cert: Vec<u8>,
    /// The AK's `TPMT_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// The AK's private part, wrapped by the TPM (stays with the TPM side).
    pub ak_private: Vec<u8>,
}

/// The CA's challenge: `TPM2_MakeCredential`'s output.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// `TPM2B_ID_OBJECT` contents: integrity HMAC (as a TPM2B) ‖ encrypted credential.
    pub id_object: Vec<u8>,
    /// `TPM2B_ENCRYPTED_SECRET` contents: the seed, RSA-OAEP encrypted to the EK.
    pub encrypted_secret: Vec<u8>,
}

// ---- DER (just enough to take a certificate apart) --------------------------------------------

/// One DER TLV at the start of `b`: (tag, header length, content length).
fn tlv(b: &[u8]) -> Option<(u8, usize, usize)> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (hdr, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (2 + n, len)
    };
    (b.len() >= hdr.checked_add(len)?).then_some((tag, hdr, len))
}

/// The DER SubjectPublicKeyInfo of a certificate (the exact bytes it carries).
pub fn cert_spki(cert: &[u8]) -> Result<Vec<u8>, EnclaveError> {
    let bad = || err("the EK certificate is not a DER X.509 certificate");
    if cert.len() > MAX_CERT {
        return Err(bad());
    }
    let (t, h, _) = tlv(cert).ok_or_else(bad)?;
    if t != 0x30 {
        return Err(bad());
    }
    let tbs = &cert[h..];
    let (t, h, len) = tlv(tbs).ok_or_else(bad)?;
    if t != 0x30 {
        return Err(bad());
    }
    let mut rest = &tbs[h..h + len];
    // [0] version (optional), serial, signature, issuer, validity, subject, then the SPKI.
    let mut skipped = 0;
    while skipped < 6 {
        let (t, h, len) = tlv(rest).ok_or_else(bad)?;
        if skipped == 0 && t != 0xa0 {
            skipped += 1; // v1: no version
        }
        rest = &rest[h + len..];
        skipped += 1;
    }
    let (t, h, len) = tlv(rest).ok_or_else(bad)?;
    if t != 0x30 {
        return Err(bad());
    }
    Ok(rest[..h + len].to_vec())
}

// ---- CA side ----------------------------------------------------------------------------------

/// The name of a TPM object: nameAlg (SHA-256) ‖ SHA-256(TPMT_PUBLIC).
pub fn object_name(public: &[u8]) -> Vec<u8> {
    let mut n = ALG_SHA256.to_be_bytes().to_vec();
    n.extend_from_slice(digest::digest(&SHA256, public).as_ref());
    n
}

/// Checks that `ak_public` is a restricted signing key fixed to its TPM with nameAlg
/// SHA-256, ECC P-256 (the AKs this tool makes); returns its SEC1 point.
pub fn check_ak_public(ak_public: &[u8]) -> Result<Vec<u8>, EnclaveError> {
    use cada_protocol::tpm::{AK_ATTRS_FORBIDDEN, AK_ATTRS_REQUIRED};
    let p = Public::unmarshall(ak_public).map_err(tss("the AK public area"))?;
    if p.marshall().map_err(tss("the AK public area"))? != ak_public {
        return Err(err("the AK public area has trailing bytes"));
    }
    let attrs = u32::from(p.object_attributes());
    if attrs & AK_ATTRS_REQUIRED != AK_ATTRS_REQUIRED || attrs & AK_ATTRS_FORBIDDEN != 0 {
        return Err(err(format!(
            "the AK's attributes 0x{attrs:08x} are not a restricted signing key's fixed to its TPM: refused"
        )));
    }
    if p.name_hashing_algorithm() != HashingAlgorithm::Sha256 {
        return Err(err("the AK's nameAlg is not SHA-256"));
    }
    p256_point(&p)
}

/// KDFa of TPM 2.0 Part 1 §11.4.10.2 (SP 800-108 counter mode, HMAC-SHA-256).
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let want = usize::try_from(bits / 8).unwrap_or(0);
    let mut out = Vec::with_capacity(want + 32);
    let mut counter = 1u32;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&k);
        ctx.update(&counter.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        counter += 1;
    }
    out.truncate(want);
    out
}

/// `TPM2_MakeCredential` in software for an RSA EK (TPM 2.0 Part 1 §24): a random seed,
/// RSA-OAEP(SHA-256, label "IDENTITY") to the EK's public key; the credential (`secret`)
/// encrypted with AES-128-CFB under KDFa(seed, "STORAGE", AK name) and protected by an HMAC
/// under KDFa(seed, "INTEGRITY") over it and the AK name.
pub fn make_credential(
    ek_spki: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<Challenge, EnclaveError> {
    use aws_lc_rs::cipher::{EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128};
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256};
    if secret.len() > 32 {
        return Err(err("a credential is at most 32 bytes"));
    }
    let ek = PublicEncryptingKey::from_der(ek_spki).map_err(|_| {
        err("the EK certificate's key is not an RSA key (only RSA EKs are enrolled)")
    })?;
    let ek = OaepPublicEncryptingKey::new(ek).map_err(|_| err("the EK's RSA key"))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| EnclaveError::Crypto("random seed"))?;
    let mut encrypted = vec![0u8; ek.ciphertext_size()];
    let n = ek
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            seed.as_ref(),
            &mut encrypted,
            Some(b"IDENTITY\0"),
        )
        .map_err(|_| err("RSA-OAEP to the EK"))?
        .len();
    encrypted.truncate(n);
    let sym = Zeroizing::new(kdfa(seed.as_ref(), "STORAGE", ak_name, &[], 128));
    let mut enc_identity = u16::try_from(secret.len())
        .map_err(|_| err("credential length"))?
        .to_be_bytes()
        .to_vec();
    enc_identity.extend_from_slice(secret);
    let key = UnboundCipherKey::new(&AES_128, &sym).map_err(|_| err("AES key"))?;
    EncryptingKey::cfb128(key)
        .and_then(|k| {
            k.less_safe_encrypt(
                &mut enc_identity,
                EncryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16])),
            )
        })
        .map_err(|_| err("AES-CFB"))?;
    let hmac_key = Zeroizing::new(kdfa(seed.as_ref(), "INTEGRITY", &[], &[], 256));
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key));
    ctx.update(&enc_identity);
    ctx.update(ak_name);
    let integrity = ctx.sign();
    let mut id_object = 32u16.to_be_bytes().to_vec();
    id_object.extend_from_slice(integrity.as_ref());
    id_object.extend_from_slice(&enc_identity);
    Ok(Challenge {
        id_object,
        encrypted_secret: encrypted,
    })
}

/// The AK's public key as rcgen sees a key to certify.
struct AkKey(Vec<u8>);

impl PublicKeyData for AkKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Issues the AK certificate (CA side, after the activated secret came back): the AK's key,
/// digitalSignature, EKU tcg-kp-AIKCertificate, SAN hardwareModuleName naming the EK.
/// Its subjectKeyIdentifier is the AK's TPM name (`ak_name`), as the format requires, so the
/// attributes a verifier checks are those of the AK the CA activated.
pub(crate) fn issue_ak_certificate(
    ca: &SoftRoot,
    ak_point: &[u8],
    ak_name: &[u8],
    ek_spki: &[u8],
    days: u32,
) -> Result<Vec<u8>, EnclaveError> {
    let e = |x: rcgen::Error| err(format!("AK certificate: {x}"));
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    let ek_id = hex::encode(digest::digest(&SHA256, ek_spki).as_ref());
    p.distinguished_name.push(
        DnType::CommonName,
        format!("CADA TPM AK of EK {}", &ek_id[..16]),
    );
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::days(i64::from(days.max(1)));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(ak_name.to_vec());
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(vec![2, 23, 133, 8, 3])];
    p.custom_extensions = vec![CustomExtension::from_oid_content(
        &[2, 5, 29, 17],
        cada_protocol::tpm::ek_binding_san(ek_spki),
    )];
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    Ok(p.signed_by(&AkKey(ak_point.to_vec()), &issuer)
        .map_err(e)?
        .der()
        .to_vec())
}

// ---- TPM side ---------------------------------------------------------------------------------

fn create_ek(ctx: &mut Context) -> Result<tss_esapi::handles::KeyHandle, EnclaveError> {
    ek::create_ek_object_2(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
        None,
    )
    .map_err(tss("create the EK"))
}

/// TPM side, step 1: the EK certificate and a new AK under the EK.
pub fn tpm_request(ctx: &mut Context) -> Result<EnrollRequest, EnclaveError> {
    let ek_cert =
        ek::retrieve_ek_pubcert(ctx, AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048))
            .map_err(|e| {
                err(format!(
            "no RSA EK certificate in NV index 0x01c00002 ({e}): this TPM has no EK certificate \
             (common for firmware TPMs), so it cannot be enrolled by credential activation \
             against a manufacturer's certificate; see docs/tpm.md"
        ))
            })?;
    let ek = create_ek(ctx)?;
    let made = ak::create_ak(
        ctx,
        ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    );
    let _ = ctx.flush_context(ek.into());
    let made = made.map_err(tss("create the AK"))?;
    Ok(EnrollRequest {
        ek_cert,
        ak_public: made.out_public.marshall().map_err(tss("marshal the AK"))?,
        ak_private: made.out_private.value().to_vec(),
    })
}

/// TPM side, step 2: `TPM2_ActivateCredential` — the TPM releases the CA's secret only to
/// the EK's holder and only for the AK of that name, loaded beside it.
pub fn tpm_activate(
    ctx: &mut Context,
    req: &EnrollRequest,
    ch: &Challenge,
) -> Result<Zeroizing<Vec<u8>>, EnclaveError> {
    let public = Public::unmarshall(&req.ak_public).map_err(tss("the AK public area"))?;
    let private = Private::try_from(req.ak_private.clone()).map_err(tss("the AK private"))?;
    let ak = load_ak(ctx, public, private)?;
    let ek = create_ek(ctx)?;
    let res = (|| {
        // The EK's policy: PolicySecret(endorsement hierarchy).
        let session = ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(tss("start the EK policy session"))?
            .ok_or_else(|| err("the TPM returned no session"))?;
        let AuthSession::PolicySession(policy) = session else {
            return Err(err("the TPM returned no policy session"));
        };
        ctx.execute_with_nullauth_session(|c| {
            c.policy_secret(
                PolicySession::try_from(session)?,
                AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .map_err(tss("PolicySecret(endorsement)"))?;
        let id = IdObject::try_from(ch.id_object.clone()).map_err(tss("credential blob"))?;
        let secret = EncryptedSecret::try_from(ch.encrypted_secret.clone())
            .map_err(tss("encrypted secret"))?;
        let out = ctx
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::PolicySession(policy)),
                    None,
                ),
                |c| c.activate_credential(ak, ek, id, secret),
            )
            .map_err(|e| {
                err(format!(
                    "TPM2_ActivateCredential: {e} (the challenge was not made for this TPM's EK and this AK)"
                ))
            });
        let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
        out
    })();
    let _ = ctx.flush_context(ek.into());
    let _ = ctx.flush_context(ak.into());
    Ok(Zeroizing::new(res?.value().to_vec()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnclaveError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| EnclaveError::io(format!("write {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| EnclaveError::io(format!("write {}", path.display()), e))
}

/// Runs both sides: request, challenge, activation, AK certificate; writes the AK and the
/// chains to the state directory and the CA's certificate to `ca_dir/tpm-enroll-ca.pem`.
pub fn enroll(opts: &EnrollOptions) -> Result<EnrollReport, EnclaveError> {
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| EnclaveError::io(format!("create {}", opts.state_dir.display()), e))?;
    std::fs::create_dir_all(&opts.ca_dir)
        .map_err(|e| EnclaveError::io(format!("create {}", opts.ca_dir.display()), e))?;
    let intermediates = match &opts.ek_intermediates {
        Some(p) => read_pem_certs(p)?,
        None => Vec::new(),
    };
    let worker = Worker::open(&opts.tcti)?;
    let tcti = opts.tcti.clone();
    let req = worker.call(move |ctx| {
        super::tpm::flush_stale_objects(ctx, &tcti)?;
        tpm_request(ctx)
    })?;
    // CA side: check the AK, challenge the EK of the certificate.
    let ek_spki = cert_spki(&req.ek_cert)?;
    let ak_point = check_ak_public(&req.ak_public)?;
    let ak_name = object_name(&req.ak_public);
    let mut secret = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| EnclaveError::Crypto("random secret"))?;
    let ch = make_credential(&ek_spki, &ak_name, secret.as_ref())?;
    // TPM side: activate.
    let req2 = req.clone();
    let got = worker.call(move |ctx| tpm_activate(ctx, &req2, &ch))?;
    // CA side: the secret came back, so the AK is in the EK's TPM.
    if got.as_slice() != secret.as_ref() {
        return Err(err(
            "credential activation returned another secret: the AK is not bound to this EK",
        ));
    }
    let ca = SoftRoot::load_or_create_of(Some(&opts.ca_dir), CA_NAME, CA_CN, CA_ORG)?;
    let ak_cert = issue_ak_certificate(&ca, &ak_point, &ak_name, &ek_spki, opts.days)?;
    let dir = &opts.state_dir;
    std::fs::write(dir.join(files::AK_PUBLIC), &req.ak_public)
        .map_err(|e| EnclaveError::io("write the AK public", e))?;
    write_private(&dir.join(files::AK_PRIVATE), &req.ak_private)?;
    write_pem_certs(&dir.join(files::AK_CERTS), &[ak_cert])?;
    let mut ek_chain = vec![req.ek_cert.clone()];
    ek_chain.extend(intermediates);
    write_pem_certs(&dir.join(files::EK_CERTS), &ek_chain)?;
    let ca_pem = opts.ca_dir.join(format!("{CA_NAME}.pem"));
    softca::export_pem(&ca.der, &ca_pem)?;
    Ok(EnrollReport {
        ek_spki_sha256: hex::encode(digest::digest(&SHA256, &ek_spki).as_ref()),
        ak_name: hex::encode(ak_name),
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_counts_from_one_and_truncates() {
        // Two blocks for 512 bits; the first 256 bits of a 512-bit output are not the
        // 256-bit output (the length is part of every block).
        let a = kdfa(b"k", "STORAGE", b"u", b"", 512);
        let b = kdfa(b"k", "STORAGE", b"u", b"", 256);
        assert_eq!(a.len(), 64);
        assert_eq!(b.len(), 32);
        assert_ne!(&a[..32], &b[..]);
        assert_eq!(kdfa(b"k", "STORAGE", b"u", b"", 128).len(), 16);
    }

    #[test]
    fn spki_is_taken_from_a_certificate() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let spki = cert_spki(cert.der()).unwrap();
        assert_eq!(spki, key.subject_public_key_info());
        for n in 0..cert.der().len() {
            let _ = cert_spki(&cert.der()[..n]);
        }
        assert!(cert_spki(&[0x30, 0x84, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn names_hash_the_public_area() {
        let n = object_name(b"abc");
        assert_eq!(&n[..2], &[0x00, 0x0B]);
        assert_eq!(n.len(), 34);
    }
}
