//! The enclave's HPKE key (RFC 9180): DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
//! ChaCha20-Poly1305 — the COSE-HPKE ciphersuite `HPKE-4` (COSE `alg` 42 in
//! draft-ietf-cose-hpke-23).
//!
//! The primitives are the `hpke` crate's (rozbb/rust-hpke over RustCrypto); this module only
//! names the one suite CADA uses. The private key lives in an `x25519_dalek::StaticSecret`,
//! which is wiped on drop, and this module has no operation that exports it.
use aws_lc_rs::digest::{digest, SHA256};
use cada_protocol::b64;
use hpke::kem::Kem as _;
use hpke::{Deserializable as _, Serializable as _};
use zeroize::Zeroizing;

use crate::SecretsError;

type Kem = hpke::kem::X25519HkdfSha256;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

/// The COSE-HPKE ciphersuite name.
pub const HPKE_SUITE: &str = "HPKE-4";
/// Its COSE `alg` value (draft-ietf-cose-hpke-23, "Assumed: 42").
pub const COSE_ALG_HPKE_4: i64 = 42;
/// Length of an X25519 public key and of the encapsulated key `enc`.
pub const HPKE_PUBLIC_KEY_LEN: usize = 32;

/// The public HPKE key of an enclave: the raw 32-byte X25519 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HpkePublicKey([u8; HPKE_PUBLIC_KEY_LEN]);

impl HpkePublicKey {
    /// Reads a raw X25519 public key (exactly 32 bytes).
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SecretsError> {
        let arr: [u8; HPKE_PUBLIC_KEY_LEN] = raw.try_into().map_err(|_| {
            SecretsError::Key(format!(
                "an HPKE-4 public key is 32 bytes (X25519), not {}",
                raw.len()
            ))
        })?;
        // The hpke crate accepts every 32-byte string; check it once here anyway.
        <Kem as hpke::Kem>::PublicKey::from_bytes(&arr)
            .map_err(|_| SecretsError::Key("not an X25519 public key".into()))?;
        Ok(HpkePublicKey(arr))
    }

    /// Reads the base64url (no padding) form.
    pub fn from_b64(s: &str) -> Result<Self, SecretsError> {
        let raw = b64::decode("hpke", s, HPKE_PUBLIC_KEY_LEN)
            .map_err(|e| SecretsError::Key(e.to_string()))?;
        Self::from_bytes(&raw)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; HPKE_PUBLIC_KEY_LEN] {
        &self.0
    }

    /// base64url (no padding) of the raw key, as `/v1/identity` and evidence output show it.
    pub fn to_b64(&self) -> String {
        b64::encode(self.0)
    }

    /// The key id envelopes carry (COSE `kid`): SHA-256 of the raw public key.
    pub fn kid(&self) -> Vec<u8> {
        digest(&SHA256, &self.0).as_ref().to_vec()
    }

    fn to_hpke(self) -> Result<<Kem as hpke::Kem>::PublicKey, SecretsError> {
        <Kem as hpke::Kem>::PublicKey::from_bytes(&self.0)
            .map_err(|_| SecretsError::Key("not an X25519 public key".into()))
    }
}

/// An HPKE key pair. Generated inside the enclave; no operation exports the private key.
pub struct HpkeKeyPair {
    sk: <Kem as hpke::Kem>::PrivateKey,
    pk: HpkePublicKey,
}

impl std::fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints private material.
        write!(f, "HpkeKeyPair({HPKE_SUITE}, {})", self.pk.to_b64())
    }
}

impl HpkeKeyPair {
    /// A fresh key pair from the operating system's random generator.
    pub fn generate() -> Self {
        let (sk, pk) = Kem::gen_keypair();
        let mut raw = [0u8; HPKE_PUBLIC_KEY_LEN];
        raw.copy_from_slice(&pk.to_bytes());
        HpkeKeyPair {
            sk,
            pk: HpkePublicKey(raw),
        }
    }

    /// A key pair from a raw X25519 private key (32 bytes): for published test vectors and
    /// for the other side of interoperability tests. The enclave never imports a key.
    pub fn from_private_bytes(raw: &[u8]) -> Result<Self, SecretsError> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(raw)
            .map_err(|_| SecretsError::Key("an X25519 private key is 32 bytes".into()))?;
        let pk = Kem::sk_to_pk(&sk);
        let mut arr = [0u8; HPKE_PUBLIC_KEY_LEN];
        arr.copy_from_slice(&pk.to_bytes());
        Ok(HpkeKeyPair {
            sk,
            pk: HpkePublicKey(arr),
        })
    }

    /// The public key.
    pub fn public(&self) -> HpkePublicKey {
        self.pk
    }

    /// HPKE `Open` in base mode (RFC 9180 §6.1 single shot). A wrong key, `enc`, `info`,
    /// `aad` or ciphertext is `secret.tampered`.
    pub fn open(
        &self,
        enc: &[u8],
        info: &[u8],
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| {
            SecretsError::Malformed {
                what: "ek",
                detail: "the encapsulated key is 32 bytes (X25519)".into(),
            }
        })?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &hpke::OpModeR::Base,
            &self.sk,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            SecretsError::Tampered(
                "the HPKE ciphertext does not open under this enclave's key with this context \
                 (changed ciphertext or context, or sealed to another key)"
                    .into(),
            )
        })
    }
}

/// HPKE `Seal` in base mode to `pk`: returns (`enc`, ciphertext).
pub fn seal(
    pk: &HpkePublicKey,
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), SecretsError> {
    let (enc, ct) = hpke::single_shot_seal::<Aead, Kdf, Kem>(
        &hpke::OpModeS::Base,
        &pk.to_hpke()?,
        info,
        plaintext,
        aad,
    )
    .map_err(|_| SecretsError::Key("HPKE seal failed".into()))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9180 Appendix A.2.1 (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305,
    /// base mode), the first encryption: the crate under this module opens the RFC's
    /// ciphertext and derives the RFC's public key from its private key.
    #[test]
    fn rfc9180_a_2_1_vector_opens() {
        let kp = HpkeKeyPair::from_private_bytes(&unhex(
            "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        ))
        .unwrap();
        assert_eq!(
            kp.public().as_bytes().to_vec(),
            unhex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
        );
        let pt = kp
            .open(
                &unhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"),
                &unhex("4f6465206f6e2061204772656369616e2055726e"),
                &unhex("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"),
                &unhex("436f756e742d30"),
            )
            .unwrap();
        assert_eq!(
            pt.as_slice(),
            unhex("4265617574792069732074727574682c20747275746820626561757479")
        );
        // One flipped bit of the aad: refused.
        assert_eq!(
            kp.open(
                &unhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a"),
                &unhex("4f6465206f6e2061204772656369616e2055726e"),
                &unhex("1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28"),
                &unhex("436f756e742d31"),
            )
            .unwrap_err()
            .code(),
            "secret.tampered"
        );
    }

    #[test]
    fn seal_open_round_trip_and_other_key_refused() {
        let kp = HpkeKeyPair::generate();
        let (enc, ct) = seal(&kp.public(), b"info", b"value", b"aad").unwrap();
        assert_eq!(
            kp.open(&enc, b"info", &ct, b"aad").unwrap().as_slice(),
            b"value"
        );
        let other = HpkeKeyPair::generate();
        assert_eq!(
            other.open(&enc, b"info", &ct, b"aad").unwrap_err().code(),
            "secret.tampered"
        );
        // Debug shows the suite and the public key only.
        assert_eq!(
            format!("{kp:?}"),
            format!("HpkeKeyPair(HPKE-4, {})", kp.public().to_b64())
        );
        assert_eq!(
            HpkePublicKey::from_b64(&kp.public().to_b64()).unwrap(),
            kp.public()
        );
        assert!(HpkePublicKey::from_bytes(&[0u8; 31]).is_err());
    }
}
