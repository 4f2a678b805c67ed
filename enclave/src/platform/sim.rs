//! `sim`: software evidence in exactly the Nitro format, signed by a P-384 CA chain made
//! here (root → CA → a fresh leaf per document). Its root is NOT trusted by any verifier
//! unless explicitly given to it, so sim evidence never passes a default policy.
//! PCR0 = SHA-384 of the running binary; module_id starts with `sim-`.
use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::digest::{self, SHA384};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use rcgen::{
    CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384,
};
use zeroize::Zeroizing;

use super::nitro_document::NitroDocument;
use super::softca::{self, SoftRoot};
use super::Platform;
use crate::EnclaveError;

const ROOT_CN: &str = "CADA sim root (NOT a hardware root of trust)";

fn err(detail: impl Into<String>) -> EnclaveError {
    softca::err("sim", detail)
}

/// The software platform.
pub struct Sim {
    root_der: Vec<u8>,
    ca_der: Vec<u8>,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    module_id: String,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl Sim {
    /// Creates the CA chain, or loads the root from `state_dir` (creating it there once), so
    /// that an exported root stays valid across restarts.
    pub fn new(state_dir: Option<&Path>) -> Result<Self, EnclaveError> {
        let root = SoftRoot::load_or_create(state_dir, "sim-root", ROOT_CN)?;
        let root_issuer = Issuer::from_params(&root.params, &root.key);
        let ca_key =
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| err(e.to_string()))?;
        let ca_params = softca::ca_params("CADA sim CA", 1)?;
        let ca = ca_params
            .signed_by(&ca_key, &root_issuer)
            .map_err(|e| err(e.to_string()))?;
        let mut pcrs: BTreeMap<u8, Vec<u8>> = (0u8..16).map(|i| (i, vec![0u8; 48])).collect();
        pcrs.insert(0, softca::own_binary_sha384()?);
        pcrs.insert(
            1,
            digest::digest(&SHA384, b"cada-sim kernel")
                .as_ref()
                .to_vec(),
        );
        pcrs.insert(
            2,
            digest::digest(&SHA384, b"cada-sim application")
                .as_ref()
                .to_vec(),
        );
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| EnclaveError::Crypto("random module id"))?;
        Ok(Sim {
            root_der: root.der,
            ca_der: ca.der().to_vec(),
            ca_params,
            ca_key,
            module_id: format!("sim-{}", hex::encode(id)),
            pcrs,
        })
    }

    /// DER of the root (give it to a verifier to trust sim evidence explicitly).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Writes the root as PEM.
    pub fn export_root(&self, path: &Path) -> Result<(), EnclaveError> {
        softca::export_pem(&self.root_der, path)
    }

    /// A fresh leaf valid for three hours (as Nitro's), with its signing key.
    fn leaf(&self) -> Result<(Vec<u8>, EcdsaKeyPair), EnclaveError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| err(e.to_string()))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
        p.distinguished_name
            .push(DnType::CommonName, &self.module_id);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::seconds(60);
        p.not_after = now + time::Duration::hours(3);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = p.signed_by(&key, &issuer).map_err(|e| err(e.to_string()))?;
        let pkcs8 = Zeroizing::new(key.serialize_der());
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .map_err(|_| EnclaveError::Crypto("sim leaf key"))?;
        Ok((cert.der().to_vec(), signer))
    }
}

impl Platform for Sim {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        Ok((0u8..3)
            .map(|i| (format!("PCR{i}"), hex::encode(&self.pcrs[&i])))
            .collect())
    }

    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        if binding.len() > 512 || nonce.len() > 512 {
            return Err(EnclaveError::BadRequest(
                "user_data and nonce are limited to 512 bytes".into(),
            ));
        }
        let (leaf_der, leaf_key) = self.leaf()?;
        let timestamp_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| err("the clock is before 1970"))?
            .as_millis();
        let doc = NitroDocument {
            module_id: self.module_id.clone(),
            digest: "SHA384".into(),
            timestamp_ms: u64::try_from(timestamp_ms).map_err(|_| err("clock out of range"))?,
            pcrs: self.pcrs.clone(),
            certificate: leaf_der,
            cabundle: vec![self.root_der.clone(), self.ca_der.clone()],
            public_key: None,
            user_data: Some(binding.to_vec()),
            nonce: Some(nonce.to_vec()),
        };
        let document = doc.sign_es384(&leaf_key)?;
        Ok(EvidenceEnvelope {
            platform: PlatformName::Sim,
            document,
            certs: vec![],
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}
