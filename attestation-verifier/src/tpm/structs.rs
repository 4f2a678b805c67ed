//! Bounded parsers of the TPM 2.0 structures evidence carries (TPM 2.0 Library, Part 2):
//! `TPMS_ATTEST`, `TPMT_PUBLIC`, `TPMT_SIGNATURE`, `TPML_PCR_SELECTION` and the `TPM2B_*`
//! sized buffers inside them. Big-endian, no padding; every length is checked against the
//! bytes left and a hard limit before anything is allocated, trailing bytes are refused,
//! and each failure is a [`TpmParseError`] naming the structure and field.
use std::fmt;

/// `TPM_GENERATED_VALUE`: the magic of every structure the TPM itself produced.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY`.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
/// `TPM_ST_ATTEST_QUOTE`.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;

/// Largest structure parsed (a TPMT_PUBLIC of RSA-4096 is about 550 bytes).
pub const MAX_STRUCT_LEN: usize = 2048;
/// Largest `TPM2B` payload accepted (an RSA-4096 modulus or signature).
pub const MAX_TPM2B: usize = 512;
/// Most banks in a `TPML_PCR_SELECTION`.
pub const MAX_BANKS: u32 = 8;
/// Longest `sizeofSelect` (32 PCRs).
pub const MAX_SELECT: u8 = 4;

/// `TPM_ALG_ID` values this verifier knows.
pub mod alg {
    /// TPM_ALG_RSA.
    pub const RSA: u16 = 0x0001;
    /// TPM_ALG_SHA1.
    pub const SHA1: u16 = 0x0004;
    /// TPM_ALG_HMAC.
    pub const HMAC: u16 = 0x0005;
    /// TPM_ALG_AES.
    pub const AES: u16 = 0x0006;
    /// TPM_ALG_KEYEDHASH.
    pub const KEYEDHASH: u16 = 0x0008;
    /// TPM_ALG_XOR.
    pub const XOR: u16 = 0x000a;
    /// TPM_ALG_SHA256.
    pub const SHA256: u16 = 0x000b;
    /// TPM_ALG_SHA384.
    pub const SHA384: u16 = 0x000c;
    /// TPM_ALG_SHA512.
    pub const SHA512: u16 = 0x000d;
    /// TPM_ALG_NULL.
    pub const NULL: u16 = 0x0010;
    /// TPM_ALG_SM3_256.
    pub const SM3_256: u16 = 0x0012;
    /// TPM_ALG_RSASSA.
    pub const RSASSA: u16 = 0x0014;
    /// TPM_ALG_RSAES.
    pub const RSAES: u16 = 0x0015;
    /// TPM_ALG_RSAPSS.
    pub const RSAPSS: u16 = 0x0016;
    /// TPM_ALG_OAEP.
    pub const OAEP: u16 = 0x0017;
    /// TPM_ALG_ECDSA.
    pub const ECDSA: u16 = 0x0018;
    /// TPM_ALG_ECDH.
    pub const ECDH: u16 = 0x0019;
    /// TPM_ALG_ECDAA.
    pub const ECDAA: u16 = 0x001a;
    /// TPM_ALG_SM2.
    pub const SM2: u16 = 0x001b;
    /// TPM_ALG_ECSCHNORR.
    pub const ECSCHNORR: u16 = 0x001c;
    /// TPM_ALG_ECMQV.
    pub const ECMQV: u16 = 0x001d;
    /// TPM_ALG_KDF1_SP800_56A.
    pub const KDF1_SP800_56A: u16 = 0x0020;
    /// TPM_ALG_KDF2.
    pub const KDF2: u16 = 0x0021;
    /// TPM_ALG_KDF1_SP800_108.
    pub const KDF1_SP800_108: u16 = 0x0022;
    /// TPM_ALG_ECC.
    pub const ECC: u16 = 0x0023;
    /// TPM_ALG_SYMCIPHER.
    pub const SYMCIPHER: u16 = 0x0025;
    /// TPM_ALG_CFB.
    pub const CFB: u16 = 0x0043;
}

/// `TPM_ECC_CURVE` values.
pub mod curve {
    /// TPM_ECC_NIST_P256.
    pub const NIST_P256: u16 = 0x0003;
    /// TPM_ECC_NIST_P384.
    pub const NIST_P384: u16 = 0x0004;
    /// TPM_ECC_NIST_P521.
    pub const NIST_P521: u16 = 0x0005;
}

/// Digest length of a TPM hash algorithm, `None` for an unknown one.
pub fn digest_len(hash: u16) -> Option<usize> {
    match hash {
        alg::SHA1 => Some(20),
        alg::SHA256 | alg::SM3_256 => Some(32),
        alg::SHA384 => Some(48),
        alg::SHA512 => Some(64),
        _ => None,
    }
}

/// Short name of a hash algorithm, for messages and measurement names.
pub fn hash_name(hash: u16) -> String {
    match hash {
        alg::SHA1 => "sha1".into(),
        alg::SHA256 => "sha256".into(),
        alg::SHA384 => "sha384".into(),
        alg::SHA512 => "sha512".into(),
        alg::SM3_256 => "sm3_256".into(),
        other => format!("alg 0x{other:04x}"),
    }
}

/// A structure that does not parse: which one, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmParseError {
    /// The structure (`TPMS_ATTEST`, `TPMT_PUBLIC`, …).
    pub what: &'static str,
    /// What is wrong, naming the field.
    pub detail: String,
}

impl fmt::Display for TpmParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

/// A cursor over bytes that never reads past the end.
pub(crate) struct Reader<'a> {
    what: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { what, buf, pos: 0 }
    }

    pub(crate) fn err(&self, detail: impl Into<String>) -> TpmParseError {
        TpmParseError {
            what: self.what,
            detail: detail.into(),
        }
    }

    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], TpmParseError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.err(format!(
                "{field}: {n} bytes needed at offset {}, {} left",
                self.pos,
                self.buf.len() - self.pos
            )));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, TpmParseError> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, TpmParseError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, TpmParseError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, TpmParseError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A `TPM2B_*`: u16 size, then that many bytes (at most `max`).
    pub(crate) fn tpm2b(&mut self, field: &str, max: usize) -> Result<&'a [u8], TpmParseError> {
        let n = usize::from(self.u16(field)?);
        if n > max {
            return Err(self.err(format!("{field}: size {n} is over the limit of {max}")));
        }
        self.take(n, field)
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn finish(&self) -> Result<(), TpmParseError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.err(format!(
                "{} trailing bytes after the structure",
                self.remaining()
            )))
        }
    }
}

fn check_len(what: &'static str, b: &[u8]) -> Result<(), TpmParseError> {
    if b.len() > MAX_STRUCT_LEN {
        return Err(TpmParseError {
            what,
            detail: format!("{} bytes is over the limit of {MAX_STRUCT_LEN}", b.len()),
        });
    }
    Ok(())
}

/// One bank of a `TPML_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    /// Hash algorithm of the bank.
    pub hash: u16,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u8>,
}

/// Parses a `TPML_PCR_SELECTION` from the reader.
pub(crate) fn pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrBank>, TpmParseError> {
    let count = r.u32("pcrSelect.count")?;
    if count > MAX_BANKS {
        return Err(r.err(format!(
            "pcrSelect.count {count} is over the limit of {MAX_BANKS}"
        )));
    }
    let mut banks: Vec<PcrBank> = Vec::new();
    for _ in 0..count {
        let hash = r.u16("pcrSelections.hash")?;
        if digest_len(hash).is_none() {
            return Err(r.err(format!(
                "pcrSelections.hash 0x{hash:04x} is not a hash algorithm"
            )));
        }
        if banks.iter().any(|b| b.hash == hash) {
            return Err(r.err(format!("the {} bank is selected twice", hash_name(hash))));
        }
        let size = r.u8("pcrSelections.sizeofSelect")?;
        if !(1..=MAX_SELECT).contains(&size) {
            return Err(r.err(format!(
                "pcrSelections.sizeofSelect {size} is not 1..={MAX_SELECT}"
            )));
        }
        let bits = r.take(usize::from(size), "pcrSelections.pcrSelect")?;
        let mut pcrs = Vec::new();
        for (byte, v) in bits.iter().enumerate() {
            for bit in 0..8u8 {
                if v & (1 << bit) != 0 {
                    let idx = u8::try_from(byte)
                        .unwrap_or(u8::MAX)
                        .saturating_mul(8)
                        .saturating_add(bit);
                    pcrs.push(idx);
                }
            }
        }
        banks.push(PcrBank { hash, pcrs });
    }
    Ok(banks)
}

/// The part of a `TPMS_ATTEST` that depends on its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    /// `TPMS_CERTIFY_INFO`.
    Certify {
        /// Name of the certified object.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
    /// `TPMS_QUOTE_INFO`.
    Quote {
        /// The selected PCRs.
        selection: Vec<PcrBank>,
        /// Digest of the selected PCR values (hash of the signing scheme).
        pcr_digest: Vec<u8>,
    },
}

/// `TPMS_CLOCK_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its clock was last set.
    pub clock: u64,
    /// TPM resets (reboots) — obfuscated unless the AK is in the endorsement or platform
    /// hierarchy.
    pub reset_count: u32,
    /// TPM restarts (resume from hibernation) since the last reset — obfuscated likewise.
    pub restart_count: u32,
    /// Whether the clock was not lost since it was last set.
    pub safe: bool,
}

/// A parsed `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    /// `TPM_ST_ATTEST_*`.
    pub kind: u16,
    /// Qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// `extraData`: the caller's `qualifyingData`.
    pub extra_data: Vec<u8>,
    /// The TPM's clock.
    pub clock: ClockInfo,
    /// Firmware version (vendor-specific; obfuscated like the counters).
    pub firmware_version: u64,
    /// The certify or quote information.
    pub attested: Attested,
}

/// Parses a `TPMS_ATTEST` of type certify or quote. The magic must be
/// `TPM_GENERATED_VALUE` (checked here: a structure without it was not made by a TPM).
pub fn parse_attest(b: &[u8]) -> Result<Attest, TpmParseError> {
    const W: &str = "TPMS_ATTEST";
    check_len(W, b)?;
    let mut r = Reader::new(W, b);
    let magic = r.u32("magic")?;
    if magic != TPM_GENERATED_VALUE {
        return Err(r.err(format!(
            "magic is 0x{magic:08x}, not TPM_GENERATED_VALUE 0xff544347: the TPM did not produce it"
        )));
    }
    let kind = r.u16("type")?;
    let qualified_signer = r.tpm2b("qualifiedSigner", 2 + 64)?.to_vec();
    let extra_data = r.tpm2b("extraData", 64)?.to_vec();
    let clock = ClockInfo {
        clock: r.u64("clockInfo.clock")?,
        reset_count: r.u32("clockInfo.resetCount")?,
        restart_count: r.u32("clockInfo.restartCount")?,
        safe: match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => return Err(r.err(format!("clockInfo.safe is {v}, not a TPMI_YES_NO"))),
        },
    };
    let firmware_version = r.u64("firmwareVersion")?;
    let attested = match kind {
        ST_ATTEST_CERTIFY => Attested::Certify {
            name: r.tpm2b("attested.certify.name", 2 + 64)?.to_vec(),
            qualified_name: r.tpm2b("attested.certify.qualifiedName", 2 + 64)?.to_vec(),
        },
        ST_ATTEST_QUOTE => Attested::Quote {
            selection: pcr_selection(&mut r)?,
            pcr_digest: r.tpm2b("attested.quote.pcrDigest", 64)?.to_vec(),
        },
        other => {
            return Err(r.err(format!(
                "type 0x{other:04x} is neither TPM_ST_ATTEST_CERTIFY nor TPM_ST_ATTEST_QUOTE"
            )))
        }
    };
    r.finish()?;
    Ok(Attest {
        kind,
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        attested,
    })
}

/// The key of a `TPMT_PUBLIC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA: modulus and exponent (0 in the structure means 65537, stored here as 65537).
    Rsa {
        /// Modulus, big-endian.
        n: Vec<u8>,
        /// Public exponent.
        e: u32,
        /// keyBits.
        bits: u16,
    },
    /// ECC: curve and point.
    Ecc {
        /// `TPM_ECC_CURVE`.
        curve: u16,
        /// X coordinate.
        x: Vec<u8>,
        /// Y coordinate.
        y: Vec<u8>,
    },
}

/// A signing scheme (`TPMT_*_SCHEME`): algorithm and hash; `alg::NULL` when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// `TPM_ALG_*` of the scheme.
    pub alg: u16,
    /// Hash of the scheme (`alg::NULL` when the scheme is NULL).
    pub hash: u16,
}

/// A parsed `TPMT_PUBLIC` (RSA or ECC objects only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public {
    /// `TPM_ALG_RSA` or `TPM_ALG_ECC`.
    pub kind: u16,
    /// Name algorithm.
    pub name_alg: u16,
    /// `TPMA_OBJECT`.
    pub attributes: u32,
    /// authPolicy digest (empty when none).
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm of a storage key (`alg::NULL` for signing keys).
    pub symmetric: u16,
    /// Signing scheme.
    pub scheme: Scheme,
    /// The public key.
    pub key: PublicKey,
}

impl Public {
    /// The object's name: nameAlg (u16, big-endian) ‖ H_nameAlg(TPMT_PUBLIC bytes).
    /// `None` for a name algorithm this verifier does not compute.
    pub fn name(&self, marshalled: &[u8]) -> Option<Vec<u8>> {
        let d = match self.name_alg {
            alg::SHA256 => &aws_lc_rs::digest::SHA256,
            alg::SHA384 => &aws_lc_rs::digest::SHA384,
            alg::SHA512 => &aws_lc_rs::digest::SHA512,
            _ => return None,
        };
        let mut out = self.name_alg.to_be_bytes().to_vec();
        out.extend_from_slice(aws_lc_rs::digest::digest(d, marshalled).as_ref());
        Some(out)
    }
}

fn scheme(r: &mut Reader<'_>, field: &str) -> Result<Scheme, TpmParseError> {
    let a = r.u16(field)?;
    if a == alg::NULL {
        return Ok(Scheme {
            alg: a,
            hash: alg::NULL,
        });
    }
    let hash = r.u16(field)?;
    if a == alg::ECDAA {
        r.u16("scheme.count")?;
    }
    Ok(Scheme { alg: a, hash })
}

/// Parses a marshalled `TPMT_PUBLIC` (without the `TPM2B_PUBLIC` size). Only RSA and ECC
/// objects are accepted: attestation and signing keys are never anything else.
pub fn parse_public(b: &[u8]) -> Result<Public, TpmParseError> {
    const W: &str = "TPMT_PUBLIC";
    check_len(W, b)?;
    let mut r = Reader::new(W, b);
    let kind = r.u16("type")?;
    let name_alg = r.u16("nameAlg")?;
    if digest_len(name_alg).is_none() {
        return Err(r.err(format!("nameAlg 0x{name_alg:04x} is not a hash algorithm")));
    }
    let attributes = r.u32("objectAttributes")?;
    let auth_policy = r.tpm2b("authPolicy", 64)?.to_vec();
    // TPMT_SYM_DEF_OBJECT: algorithm, then keyBits and mode unless NULL.
    let symmetric = r.u16("parameters.symmetric.algorithm")?;
    if symmetric != alg::NULL {
        r.u16("parameters.symmetric.keyBits")?;
        r.u16("parameters.symmetric.mode")?;
    }
    let (scheme, key) = match kind {
        alg::RSA => {
            let s = scheme(&mut r, "parameters.scheme")?;
            let bits = r.u16("parameters.keyBits")?;
            let e = match r.u32("parameters.exponent")? {
                0 => 65537,
                e => e,
            };
            let n = r.tpm2b("unique.rsa", MAX_TPM2B)?.to_vec();
            if n.is_empty() || n.len() * 8 != usize::from(bits) {
                return Err(r.err(format!(
                    "unique.rsa is {} bytes, keyBits says {bits}",
                    n.len()
                )));
            }
            (s, PublicKey::Rsa { n, e, bits })
        }
        alg::ECC => {
            let s = scheme(&mut r, "parameters.scheme")?;
            let curve = r.u16("parameters.curveID")?;
            let kdf = r.u16("parameters.kdf.scheme")?;
            if kdf != alg::NULL {
                r.u16("parameters.kdf.hashAlg")?;
            }
            let x = r.tpm2b("unique.ecc.x", 66)?.to_vec();
            let y = r.tpm2b("unique.ecc.y", 66)?.to_vec();
            (s, PublicKey::Ecc { curve, x, y })
        }
        other => {
            return Err(r.err(format!(
                "type 0x{other:04x} is not an RSA (0x0001) or ECC (0x0023) key"
            )))
        }
    };
    r.finish()?;
    Ok(Public {
        kind,
        name_alg,
        attributes,
        auth_policy,
        symmetric,
        scheme,
        key,
    })
}

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// RSASSA-PKCS1-v1_5 or RSASSA-PSS.
    Rsa {
        /// `alg::RSASSA` or `alg::RSAPSS`.
        scheme: u16,
        /// Hash algorithm.
        hash: u16,
        /// The signature.
        sig: Vec<u8>,
    },
    /// ECDSA.
    Ecdsa {
        /// Hash algorithm.
        hash: u16,
        /// r.
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
}

impl Signature {
    /// The scheme as a [`Scheme`].
    pub fn scheme(&self) -> Scheme {
        match self {
            Signature::Rsa { scheme, hash, .. } => Scheme {
                alg: *scheme,
                hash: *hash,
            },
            Signature::Ecdsa { hash, .. } => Scheme {
                alg: alg::ECDSA,
                hash: *hash,
            },
        }
    }
}

/// Parses a `TPMT_SIGNATURE` (RSASSA, RSAPSS or ECDSA; NULL and the rest are refused).
pub fn parse_signature(b: &[u8]) -> Result<Signature, TpmParseError> {
    const W: &str = "TPMT_SIGNATURE";
    check_len(W, b)?;
    let mut r = Reader::new(W, b);
    let sig_alg = r.u16("sigAlg")?;
    let out = match sig_alg {
        alg::RSASSA | alg::RSAPSS => {
            let hash = r.u16("signature.hash")?;
            let sig = r.tpm2b("signature.sig", MAX_TPM2B)?.to_vec();
            Signature::Rsa {
                scheme: sig_alg,
                hash,
                sig,
            }
        }
        alg::ECDSA => {
            let hash = r.u16("signature.hash")?;
            let rr = r.tpm2b("signature.signatureR", 66)?.to_vec();
            let s = r.tpm2b("signature.signatureS", 66)?.to_vec();
            Signature::Ecdsa { hash, r: rr, s }
        }
        other => {
            return Err(r.err(format!(
                "sigAlg 0x{other:04x} is not RSASSA (0x0014), RSAPSS (0x0016) or ECDSA (0x0018)"
            )))
        }
    };
    if digest_len(match &out {
        Signature::Rsa { hash, .. } | Signature::Ecdsa { hash, .. } => *hash,
    })
    .is_none()
    {
        return Err(r.err("signature.hash is not a hash algorithm"));
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quote from libtpms (trustee `deps/verifier/test_data/tpm_evidence.json`).
    const QUOTE: &str = "ff54434780180022000b3081a4cbbe307f3de1456f9875a3c2632528a70d91fcf578ccf092465e4e8e090040a04182b506878d4f29b91ee606a71a0d3361ccf1b22db20c98adcaa537bea393ef0e41a18b3569ab678f1497fbc5c1200000000000000000000000000000000000000000720e6e2b000000020000000001201910230016363600000001000b03ffffff0020019de64c9318655e422c3d03831169896e31f02a1d74e4d8fef575bf4e0d75fa";

    #[test]
    fn parses_a_real_quote() {
        let a = parse_attest(&hex::decode(QUOTE).unwrap()).unwrap();
        assert_eq!(a.kind, ST_ATTEST_QUOTE);
        assert_eq!(a.extra_data.len(), 64);
        assert_eq!(a.firmware_version, 0x2019_1023_0016_3636);
        let Attested::Quote {
            selection,
            pcr_digest,
        } = &a.attested
        else {
            panic!()
        };
        assert_eq!(selection.len(), 1);
        assert_eq!(selection[0].hash, alg::SHA256);
        assert_eq!(selection[0].pcrs, (0..24).collect::<Vec<u8>>());
        assert_eq!(pcr_digest.len(), 32);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_refused() {
        let q = hex::decode(QUOTE).unwrap();
        for n in 0..q.len() {
            assert!(parse_attest(&q[..n]).is_err(), "prefix {n}");
        }
        let mut long = q.clone();
        long.push(0);
        assert!(parse_attest(&long).unwrap_err().detail.contains("trailing"));
        let mut bad = q;
        bad[0] = 0;
        assert!(parse_attest(&bad).unwrap_err().detail.contains("magic"));
    }

    #[test]
    fn oversized_lengths_do_not_allocate() {
        let mut b = vec![0xff, 0x54, 0x43, 0x47, 0x80, 0x18, 0xff, 0xff];
        b.extend_from_slice(&[0; 16]);
        assert!(parse_attest(&b).unwrap_err().detail.contains("limit"));
        assert!(parse_attest(&vec![0; MAX_STRUCT_LEN + 1])
            .unwrap_err()
            .detail
            .contains("limit"));
    }
}
