//! Trust roots pinned in the code. Configuration may add roots beside them, never replace them.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::chain::{TrustAnchor, TrustStore};

/// SHA-256 of the DER of AWS_NitroEnclaves_Root-G1, as AWS publishes it.
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// AWS_NitroEnclaves_Root-G1 (CN=aws.nitro-enclaves, P-384, valid 2019-10-28 to 2049-10-28),
/// base64 of the DER, as published by AWS for Nitro Enclaves attestation.
const AWS_NITRO_ROOT_G1_B64: &[&str] = &[
    "MIICETCCAZagAwIBAgIRAPkxdWgbkK/hHUbMtOTn+FYwCgYIKoZIzj0EAwMwSTELMAkGA1UEBhMC",
    "VVMxDzANBgNVBAoMBkFtYXpvbjEMMAoGA1UECwwDQVdTMRswGQYDVQQDDBJhd3Mubml0cm8tZW5j",
    "bGF2ZXMwHhcNMTkxMDI4MTMyODA1WhcNNDkxMDI4MTQyODA1WjBJMQswCQYDVQQGEwJVUzEPMA0G",
    "A1UECgwGQW1hem9uMQwwCgYDVQQLDANBV1MxGzAZBgNVBAMMEmF3cy5uaXRyby1lbmNsYXZlczB2",
    "MBAGByqGSM49AgEGBSuBBAAiA2IABPwCVOumCMHzaHDimtqQvkY4MpJzbolL//Zy2YlES1BR5TSk",
    "sfbb48C8WBoyt7F2Bw7eEtaaP+ohG2bnUs990d0JX28TcPQXCEPZ3BABIeTPYwEoCWZEh8l5YoQw",
    "TcU/9KNCMEAwDwYDVR0TAQH/BAUwAwEB/zAdBgNVHQ4EFgQUkCW1DdkFR+eWw5b6cp3PmanfS5Yw",
    "DgYDVR0PAQH/BAQDAgGGMAoGCCqGSM49BAMDA2kAMGYCMQCjfy+Rocm9Xue4YnwWmNJVA44fA0P5",
    "W2OpYow9OYCVRaEevL8uO1XYru5xtMPWrfMCMQCi85sWBbJwKKXdS6BptQFuZbT73o/gBh1qUxl/",
    "nNr12UO8Yfwr6wPLb+6NIwLz3/Y=",
];

/// DER of the AWS Nitro Enclaves root G1.
pub fn aws_nitro_root_g1_der() -> Vec<u8> {
    STANDARD
        .decode(AWS_NITRO_ROOT_G1_B64.concat())
        .unwrap_or_default()
}

/// A trust store holding exactly the pinned AWS Nitro root G1. The fingerprint is checked
/// against [`AWS_NITRO_ROOT_G1_SHA256`], so a corrupted constant can never become a root.
pub fn nitro_store() -> TrustStore {
    let mut store = TrustStore::empty();
    let der = aws_nitro_root_g1_der();
    if let Ok(anchor) = TrustAnchor::from_der("AWS Nitro Enclaves Root-G1", &der) {
        if anchor.fingerprint_hex() == AWS_NITRO_ROOT_G1_SHA256 {
            store.add(anchor);
        }
    }
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_root_matches_its_fingerprint() {
        let store = nitro_store();
        assert_eq!(store.anchors().len(), 1);
        assert_eq!(
            store.anchors()[0].fingerprint_hex(),
            AWS_NITRO_ROOT_G1_SHA256
        );
    }
}
