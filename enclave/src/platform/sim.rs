//! `sim`: software evidence in exactly the Nitro format, signed by a P-384 CA chain made
//! here (root → CA → a fresh leaf per document). Its root is NOT trusted by any verifier
//! unless explicitly given to it, so sim evidence never passes a default policy.
//! PCR0 = SHA-384 of the running binary; module_id starts with `sim-`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aws_lc_rs::digest::{self, SHA384};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use cada_attestation_verifier::nitro::{build, AttestationDocument};
use cada_attestation_verifier::UnixTime;
use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use zeroize::Zeroizing;

use super::Platform;
use crate::EnclaveError;

const ROOT_CN: &str = "CADA sim root (NOT a hardware root of trust)";

fn err(detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform: "sim",
        detail: detail.into(),
    }
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

fn ca_params(cn: &str, years: i64) -> Result<CertificateParams, EnclaveError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "CADA sim");
    p.not_before =
        time::OffsetDateTime::from_unix_timestamp(1_700_000_000).map_err(|e| err(e.to_string()))?;
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365 * years);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), EnclaveError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| EnclaveError::io(format!("write {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| EnclaveError::io(format!("write {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| EnclaveError::io(format!("rename to {}", path.display()), e))
}

impl Sim {
    /// Creates the CA chain, or loads the root from `state_dir` (creating it there once), so
    /// that an exported root stays valid across restarts.
    pub fn new(state_dir: Option<&Path>) -> Result<Self, EnclaveError> {
        let root_params = ca_params(ROOT_CN, 20)?;
        let (root_key, root_der) = match state_dir {
            Some(dir) if dir.join("sim-root.der").is_file() => {
                let key_der = Zeroizing::new(
                    std::fs::read(dir.join("sim-root.key"))
                        .map_err(|e| EnclaveError::io("read sim-root.key", e))?,
                );
                let key = KeyPair::try_from(key_der.as_slice())
                    .map_err(|e| err(format!("sim-root.key: {e}")))?;
                let der = std::fs::read(dir.join("sim-root.der"))
                    .map_err(|e| EnclaveError::io("read sim-root.der", e))?;
                (key, der)
            }
            _ => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
                    .map_err(|e| err(e.to_string()))?;
                let cert = root_params
                    .self_signed(&key)
                    .map_err(|e| err(e.to_string()))?;
                let der = cert.der().to_vec();
                if let Some(dir) = state_dir {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| EnclaveError::io(format!("create {}", dir.display()), e))?;
                    write_private(
                        &dir.join("sim-root.key"),
                        &Zeroizing::new(key.serialize_der()),
                    )?;
                    write_private(&dir.join("sim-root.der"), &der)?;
                }
                (key, der)
            }
        };
        let root_issuer = Issuer::from_params(&root_params, &root_key);
        let ca_key =
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| err(e.to_string()))?;
        let ca_params = ca_params("CADA sim CA", 1)?;
        let ca = ca_params
            .signed_by(&ca_key, &root_issuer)
            .map_err(|e| err(e.to_string()))?;

        let exe = std::env::current_exe().map_err(|e| EnclaveError::io("locate own binary", e))?;
        let mut pcrs: BTreeMap<u8, Vec<u8>> = (0u8..16).map(|i| (i, vec![0u8; 48])).collect();
        pcrs.insert(0, sha384_file(&exe)?);
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
            root_der,
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
    pub fn export_root(&self, path: &PathBuf) -> Result<(), EnclaveError> {
        let text = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            pem_body(&self.root_der)
        );
        std::fs::write(path, text)
            .map_err(|e| EnclaveError::io(format!("write {}", path.display()), e))
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

/// SHA-384 of a file, streamed (the binary can be tens of MiB).
fn sha384_file(path: &Path) -> Result<Vec<u8>, EnclaveError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| EnclaveError::io(format!("open {}", path.display()), e))?;
    let mut ctx = digest::Context::new(&SHA384);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| EnclaveError::io(format!("read {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().to_vec())
}

fn pem_body(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
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
        let doc = AttestationDocument {
            module_id: self.module_id.clone(),
            digest: "SHA384".into(),
            timestamp: UnixTime::now(),
            pcrs: self.pcrs.clone(),
            certificate: leaf_der,
            cabundle: vec![self.root_der.clone(), self.ca_der.clone()],
            public_key: None,
            user_data: Some(binding.to_vec()),
            nonce: Some(nonce.to_vec()),
        };
        let document = build::sign_es384(&build::encode_payload(&doc), &leaf_key)
            .map_err(|_| EnclaveError::Crypto("sim document signing"))?;
        Ok(EvidenceEnvelope {
            platform: PlatformName::Sim,
            document,
            certs: vec![],
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}
