//! X.509 certificates as this verifier needs them: DER parsing (x509-cert), the exact
//! to-be-signed bytes, public keys, and signature verification (aws-lc-rs).
use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::name::Name;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

/// Largest certificate accepted (Nitro: 1024; AMD VCEK/ARK: under 2 KiB).
pub const MAX_CERT_LEN: usize = 4096;

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const ECDSA_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.4");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const RSASSA_PSS: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// The kind of a subject public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// ECDSA on P-521 (some TPM manufacturers' roots).
    EcP521,
    /// RSA (rsaEncryption or RSASSA-PSS SPKI).
    Rsa,
}

/// A subject public key, ready for verification.
#[derive(Clone)]
pub struct PublicKey {
    kind: KeyKind,
    /// SEC1 point (EC) or PKCS#1 RSAPublicKey (RSA).
    bytes: Vec<u8>,
    /// Pre-parsed for the algorithm this key is most used with.
    parsed: Option<ParsedPublicKey>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({:?}, {})",
            self.kind,
            hex::encode(&self.bytes)
        )
    }
}

impl PublicKey {
    pub(crate) fn new(kind: KeyKind, bytes: Vec<u8>) -> Option<Self> {
        let alg: &'static dyn VerificationAlgorithm = match kind {
            KeyKind::EcP256 => &signature::ECDSA_P256_SHA256_ASN1,
            KeyKind::EcP384 => &signature::ECDSA_P384_SHA384_ASN1,
            KeyKind::EcP521 => &signature::ECDSA_P521_SHA512_ASN1,
            KeyKind::Rsa => &signature::RSA_PSS_2048_8192_SHA384,
        };
        // A key that does not parse (point not on the curve, bad modulus) is refused here.
        let parsed = ParsedPublicKey::new(alg, &bytes).ok()?;
        Some(PublicKey {
            kind,
            bytes,
            parsed: Some(parsed),
        })
    }

    /// The key kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Raw key bytes (SEC1 point or PKCS#1).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies a raw `r ‖ s` ECDSA P-384/SHA-384 signature (COSE ES384, SNP reports).
    pub fn verify_es384_fixed(&self, message: &[u8], sig: &[u8]) -> bool {
        self.kind == KeyKind::EcP384
            && signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &self.bytes)
                .verify(message, sig)
                .is_ok()
    }

    /// Verifies an X.509 signature made with `sig_alg` (OID) over `message`.
    pub(crate) fn verify_x509(&self, sig_alg: SigAlgorithm, message: &[u8], sig: &[u8]) -> bool {
        let alg: &'static dyn VerificationAlgorithm = match (self.kind, sig_alg) {
            (KeyKind::EcP384, SigAlgorithm::EcdsaSha384)
            | (KeyKind::Rsa, SigAlgorithm::RsaPssSha384) => {
                // The pre-parsed key was made for exactly this pairing.
                return self
                    .parsed
                    .as_ref()
                    .is_some_and(|k| k.verify_sig(message, sig).is_ok());
            }
            (KeyKind::EcP384, SigAlgorithm::EcdsaSha256) => &signature::ECDSA_P384_SHA256_ASN1,
            (KeyKind::EcP256, SigAlgorithm::EcdsaSha256) => &signature::ECDSA_P256_SHA256_ASN1,
            (KeyKind::EcP256, SigAlgorithm::EcdsaSha384) => &signature::ECDSA_P256_SHA384_ASN1,
            (KeyKind::EcP256, SigAlgorithm::EcdsaSha512) => &signature::ECDSA_P256_SHA512_ASN1,
            (KeyKind::EcP384, SigAlgorithm::EcdsaSha512) => &signature::ECDSA_P384_SHA512_ASN1,
            (KeyKind::EcP521, SigAlgorithm::EcdsaSha256) => &signature::ECDSA_P521_SHA256_ASN1,
            (KeyKind::EcP521, SigAlgorithm::EcdsaSha384) => &signature::ECDSA_P521_SHA384_ASN1,
            (KeyKind::EcP521, SigAlgorithm::EcdsaSha512) => &signature::ECDSA_P521_SHA512_ASN1,
            (KeyKind::Rsa, SigAlgorithm::RsaPkcs1Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (KeyKind::Rsa, SigAlgorithm::RsaPkcs1Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (KeyKind::Rsa, SigAlgorithm::RsaPkcs1Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return false,
        };
        signature::UnparsedPublicKey::new(alg, &self.bytes)
            .verify(message, sig)
            .is_ok()
    }
}

/// Signature algorithms accepted in certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlgorithm {
    /// ecdsa-with-SHA256.
    EcdsaSha256,
    /// ecdsa-with-SHA384.
    EcdsaSha384,
    /// ecdsa-with-SHA512 (TPM manufacturers' P-521 roots).
    EcdsaSha512,
    /// RSASSA-PSS with SHA-384 (AMD's KDS certificates).
    RsaPssSha384,
    /// sha256WithRSAEncryption (PKCS #1 v1.5): TPM manufacturers' and clouds' EK and AK
    /// certificate chains.
    RsaPkcs1Sha256,
    /// sha384WithRSAEncryption (PKCS #1 v1.5).
    RsaPkcs1Sha384,
    /// sha512WithRSAEncryption (PKCS #1 v1.5).
    RsaPkcs1Sha512,
}

/// A parsed certificate plus the byte ranges verification needs.
pub struct ParsedCert<'a> {
    /// The whole DER.
    pub der: &'a [u8],
    /// The decoded certificate.
    pub cert: Certificate,
    tbs: &'a [u8],
}

/// Why a certificate could not be used; the chain module adds the position.
#[derive(Debug)]
pub(crate) enum CertProblem {
    Parse(String),
    Algorithm(String),
}

impl<'a> ParsedCert<'a> {
    /// Parses strict DER X.509 v3 (bounded by [`MAX_CERT_LEN`]).
    pub(crate) fn parse(der: &'a [u8]) -> Result<Self, CertProblem> {
        if der.len() > MAX_CERT_LEN {
            return Err(CertProblem::Parse(format!(
                "{} bytes is over the {MAX_CERT_LEN}-byte limit",
                der.len()
            )));
        }
        let cert = Certificate::from_der(der).map_err(|e| CertProblem::Parse(e.to_string()))?;
        if cert.tbs_certificate().version() != x509_cert::certificate::Version::V3 {
            return Err(CertProblem::Parse("not an X.509 v3 certificate".into()));
        }
        if cert.signature_algorithm() != cert.tbs_certificate().signature() {
            return Err(CertProblem::Parse(
                "outer and inner signature algorithms differ".into(),
            ));
        }
        let tbs = tbs_slice(der)
            .ok_or_else(|| CertProblem::Parse("cannot locate TBSCertificate".into()))?;
        Ok(ParsedCert { der, cert, tbs })
    }

    /// Subject name.
    pub fn subject(&self) -> &Name {
        self.cert.tbs_certificate().subject()
    }

    /// Issuer name.
    pub fn issuer(&self) -> &Name {
        self.cert.tbs_certificate().issuer()
    }

    /// Serial number: the DER INTEGER content bytes.
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate().serial_number().as_bytes()
    }

    /// notBefore, seconds since the epoch.
    pub fn not_before(&self) -> u64 {
        self.cert
            .tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs()
    }

    /// notAfter, seconds since the epoch.
    pub fn not_after(&self) -> u64 {
        self.cert
            .tbs_certificate()
            .validity()
            .not_after
            .to_unix_duration()
            .as_secs()
    }

    /// The signature algorithm, if supported.
    pub(crate) fn sig_algorithm(&self) -> Result<SigAlgorithm, CertProblem> {
        sig_algorithm_of(self.cert.signature_algorithm())
    }

    /// The subject public key.
    pub(crate) fn public_key(&self) -> Result<PublicKey, CertProblem> {
        let spki = self.cert.tbs_certificate().subject_public_key_info();
        let bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| CertProblem::Parse("public key bit string has unused bits".into()))?
            .to_vec();
        let kind = match spki.algorithm.oid {
            ID_EC_PUBLIC_KEY => {
                let curve: ObjectIdentifier = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as().ok())
                    .ok_or_else(|| CertProblem::Algorithm("EC key without a named curve".into()))?;
                match curve {
                    SECP384R1 => KeyKind::EcP384,
                    PRIME256V1 => KeyKind::EcP256,
                    SECP521R1 => KeyKind::EcP521,
                    other => return Err(CertProblem::Algorithm(format!("curve {other}"))),
                }
            }
            RSA_ENCRYPTION | RSASSA_PSS => KeyKind::Rsa,
            other => return Err(CertProblem::Algorithm(other.to_string())),
        };
        PublicKey::new(kind, bytes)
            .ok_or_else(|| CertProblem::Parse("public key is malformed".into()))
    }

    /// Checks this certificate's signature under `issuer_key`.
    pub(crate) fn signed_by(&self, issuer_key: &PublicKey, alg: SigAlgorithm) -> bool {
        match self.cert.signature().as_bytes() {
            Some(sig) => issuer_key.verify_x509(alg, self.tbs, sig),
            None => false,
        }
    }

    /// Basic constraints: `(is_ca, path_len)`, `None` if absent.
    pub(crate) fn basic_constraints(&self) -> Result<Option<(bool, Option<u8>)>, CertProblem> {
        match self.extension(BASIC_CONSTRAINTS) {
            None => Ok(None),
            Some(v) => {
                let bc =
                    BasicConstraints::from_der(v).map_err(|e| CertProblem::Parse(e.to_string()))?;
                Ok(Some((bc.ca, bc.path_len_constraint)))
            }
        }
    }

    /// Key usage, `None` if absent.
    pub(crate) fn key_usage(&self) -> Result<Option<KeyUsage>, CertProblem> {
        match self.extension(KEY_USAGE) {
            None => Ok(None),
            Some(v) => KeyUsage::from_der(v)
                .map(Some)
                .map_err(|e| CertProblem::Parse(e.to_string())),
        }
    }

    /// The first critical extension not in `understood` (basic constraints and key usage
    /// are always understood).
    pub(crate) fn unknown_critical(
        &self,
        understood: &[ObjectIdentifier],
    ) -> Option<ObjectIdentifier> {
        self.cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .filter(|e| e.critical)
            .map(|e| e.extn_id)
            .find(|id| *id != BASIC_CONSTRAINTS && *id != KEY_USAGE && !understood.contains(id))
    }

    /// The value of an extension, by OID.
    pub fn extension(&self, oid: ObjectIdentifier) -> Option<&[u8]> {
        self.cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == oid)
            .map(|e| e.extn_value.as_bytes())
    }
}

/// The supported signature algorithm an AlgorithmIdentifier names (certificates and CRLs).
pub(crate) fn sig_algorithm_of(
    alg: &x509_cert::spki::AlgorithmIdentifierOwned,
) -> Result<SigAlgorithm, CertProblem> {
    match alg.oid {
        ECDSA_SHA256 => Ok(SigAlgorithm::EcdsaSha256),
        ECDSA_SHA384 => Ok(SigAlgorithm::EcdsaSha384),
        ECDSA_SHA512 => Ok(SigAlgorithm::EcdsaSha512),
        SHA256_WITH_RSA => Ok(SigAlgorithm::RsaPkcs1Sha256),
        SHA384_WITH_RSA => Ok(SigAlgorithm::RsaPkcs1Sha384),
        SHA512_WITH_RSA => Ok(SigAlgorithm::RsaPkcs1Sha512),
        RSASSA_PSS => {
            let params = alg
                .parameters
                .as_ref()
                .ok_or_else(|| CertProblem::Algorithm("RSASSA-PSS without parameters".into()))?
                .to_der()
                .map_err(|e| CertProblem::Parse(e.to_string()))?;
            if pss_uses_sha384(&params) {
                Ok(SigAlgorithm::RsaPssSha384)
            } else {
                Err(CertProblem::Algorithm(
                    "RSASSA-PSS with a hash other than SHA-384".into(),
                ))
            }
        }
        other => Err(CertProblem::Algorithm(other.to_string())),
    }
}

/// The certificates in `bytes`: every `CERTIFICATE` block of PEM text, or the bytes
/// themselves when they are not PEM (one DER certificate). `None` for PEM that does not decode.
pub fn certs_from_pem_or_der(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    use base64::Engine;
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN CERTIFICATE-----") => t,
        _ => return Some(vec![bytes.to_vec()]),
    };
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let b64: String = block
                .lines()
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .collect()
}

/// Whether DER RSASSA-PSS-params name SHA-384 as the hash. The params are
/// `SEQUENCE { [0] hashAlgorithm, [1] maskGenAlgorithm, [2] saltLength, … }`; the first
/// element must be SHA-384 (the default, SHA-1, is refused).
fn pss_uses_sha384(params: &[u8]) -> bool {
    #[derive(der::Sequence)]
    struct PssParams {
        #[asn1(context_specific = "0", optional = "true")]
        hash: Option<x509_cert::spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "1", optional = "true")]
        mgf: Option<x509_cert::spki::AlgorithmIdentifierOwned>,
        #[asn1(context_specific = "2", optional = "true")]
        salt_len: Option<u32>,
        #[asn1(context_specific = "3", optional = "true")]
        trailer: Option<u32>,
    }
    match PssParams::from_der(params) {
        Ok(p) => {
            p.hash.is_some_and(|h| h.oid == SHA384)
                && p.salt_len.unwrap_or(20) == 48
                && p.trailer.unwrap_or(1) == 1
        }
        Err(_) => false,
    }
}

/// The TBSCertificate TLV inside a certificate, as received: signatures cover these bytes.
pub(crate) fn tbs_slice(der: &[u8]) -> Option<&[u8]> {
    let (outer_hdr, _) = tlv_header(der)?;
    let rest = der.get(outer_hdr..)?;
    let (tbs_hdr, tbs_len) = tlv_header(rest)?;
    rest.get(..tbs_hdr.checked_add(tbs_len)?)
}

/// Parses a DER tag + length: `(header length, content length)`.
fn tlv_header(b: &[u8]) -> Option<(usize, usize)> {
    if *b.first()? != 0x30 {
        return None;
    }
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some((2, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*b.get(2 + i)?);
    }
    Some((2 + n, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlv_header_bounds() {
        assert_eq!(tlv_header(&[0x30, 0x03]), Some((2, 3)));
        assert_eq!(tlv_header(&[0x30, 0x82, 0x01, 0x00]), Some((4, 256)));
        assert_eq!(tlv_header(&[0x31, 0x03]), None);
        assert_eq!(tlv_header(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(tlv_header(&[0x30]), None);
        assert!(tbs_slice(&[0x30, 0x05, 0x30, 0x09, 0, 0, 0]).is_none());
    }

    #[test]
    fn pem_blocks_and_der_pass_through() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n";
        assert_eq!(
            certs_from_pem_or_der(pem.as_bytes()),
            Some(vec![vec![1, 2, 3], vec![4, 5]])
        );
        assert_eq!(
            certs_from_pem_or_der(&[0x30, 0x01]),
            Some(vec![vec![0x30, 0x01]])
        );
        assert_eq!(
            certs_from_pem_or_der(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
    }

    #[test]
    fn garbage_is_a_parse_error() {
        assert!(matches!(
            ParsedCert::parse(&[0x30, 0x00]),
            Err(CertProblem::Parse(_))
        ));
        assert!(matches!(
            ParsedCert::parse(&[0u8; 5000]),
            Err(CertProblem::Parse(_))
        ));
    }
}
