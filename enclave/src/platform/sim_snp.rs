//! `sim-snp`: software evidence in exactly the SEV-SNP format — a version 3 Milan-layout
//! report with report_data = SHA-512(binding ‖ nonce), signed by a software VCEK whose hwID
//! and TCB extensions match the report, chained to a software ASK and root. The root is NOT
//! trusted by any verifier unless explicitly given to it.
use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use cada_protocol::binding::snp_report_data;
use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use rcgen::{
    CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use serde_bytes::ByteBuf;
use zeroize::Zeroizing;

use super::softca::{self, SoftRoot};
use super::Platform;
use crate::EnclaveError;

const ROOT_CN: &str = "CADA sim-snp ARK (NOT an AMD root)";
/// Milan-layout TCB: bootloader 4, tee 0, snp 22, microcode 213.
const TCB: [u8; 8] = [4, 0, 0, 0, 0, 0, 22, 213];

fn err(detail: impl Into<String>) -> EnclaveError {
    softca::err("sim-snp", detail)
}

/// The software SEV-SNP platform.
pub struct SimSnp {
    root_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    vcek: EcdsaKeyPair,
    chip_id: [u8; 64],
    measurement: [u8; 48],
}

/// DER INTEGER of a small unsigned value (the TCB extensions' encoding).
fn der_uint(v: u8) -> Vec<u8> {
    if v < 0x80 {
        vec![0x02, 0x01, v]
    } else {
        vec![0x02, 0x02, 0x00, v]
    }
}

impl SimSnp {
    /// Creates the chain (root loaded from or kept in `state_dir`) and a VCEK for a random chip.
    pub fn new(state_dir: Option<&Path>) -> Result<Self, EnclaveError> {
        let root = SoftRoot::load_or_create(state_dir, "sim-snp-root", ROOT_CN)?;
        let root_issuer = Issuer::from_params(&root.params, &root.key);
        let ask_key =
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| err(e.to_string()))?;
        let ask_params = softca::ca_params("CADA sim-snp ASK", 1)?;
        let ask = ask_params
            .signed_by(&ask_key, &root_issuer)
            .map_err(|e| err(e.to_string()))?;
        let mut chip_id = [0u8; 64];
        aws_lc_rs::rand::fill(&mut chip_id).map_err(|_| EnclaveError::Crypto("random chip id"))?;
        let vcek_key =
            KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).map_err(|e| err(e.to_string()))?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(e.to_string()))?;
        p.distinguished_name.push(DnType::CommonName, "SEV-VCEK");
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
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
        let ask_issuer = Issuer::from_params(&ask_params, &ask_key);
        let vcek_cert = p
            .signed_by(&vcek_key, &ask_issuer)
            .map_err(|e| err(e.to_string()))?;
        let pkcs8 = Zeroizing::new(vcek_key.serialize_der());
        let vcek = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .map_err(|_| EnclaveError::Crypto("sim VCEK key"))?;
        let mut measurement = [0u8; 48];
        measurement.copy_from_slice(&softca::own_binary_sha384()?);
        Ok(SimSnp {
            root_der: root.der,
            ask_der: ask.der().to_vec(),
            vcek_der: vcek_cert.der().to_vec(),
            vcek,
            chip_id,
            measurement,
        })
    }

    /// DER of the root (give it to a verifier to trust sim-snp evidence explicitly).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// Writes the root as PEM.
    pub fn export_root(&self, path: &Path) -> Result<(), EnclaveError> {
        softca::export_pem(&self.root_der, path)
    }

    /// A signed report carrying `report_data`.
    fn report(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, EnclaveError> {
        let mut r = vec![0u8; 0x4A0];
        r[0x00..0x04].copy_from_slice(&3u32.to_le_bytes());
        r[0x08..0x10].copy_from_slice(&0x3_0000u64.to_le_bytes()); // SMT allowed, bit 17
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384/SHA-384
        r[0x38..0x40].copy_from_slice(&TCB);
        r[0x40..0x48].copy_from_slice(&1u64.to_le_bytes());
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&self.measurement);
        aws_lc_rs::rand::fill(&mut r[0x140..0x160])
            .map_err(|_| EnclaveError::Crypto("report id"))?;
        r[0x180..0x188].copy_from_slice(&TCB);
        r[0x188..0x18B].copy_from_slice(&[0x19, 0x01, 0x01]); // Milan CPUID
        r[0x1A0..0x1E0].copy_from_slice(&self.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&TCB);
        r[0x1E8..0x1EB].copy_from_slice(&[22, 55, 1]);
        r[0x1EC..0x1EF].copy_from_slice(&[22, 55, 1]);
        r[0x1F0..0x1F8].copy_from_slice(&TCB);
        let sig = self
            .vcek
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &r[..0x2A0])
            .map_err(|_| EnclaveError::Crypto("sim report signing"))?;
        let sig = sig.as_ref();
        // r and s: big-endian 48 bytes → little-endian in 72-byte fields.
        for i in 0..48 {
            r[0x2A0 + i] = sig[47 - i];
            r[0x2E8 + i] = sig[95 - i];
        }
        Ok(r)
    }
}

impl Platform for SimSnp {
    fn name(&self) -> &'static str {
        "sim-snp"
    }

    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        Ok(BTreeMap::from([(
            "MEASUREMENT".to_string(),
            hex::encode(self.measurement),
        )]))
    }

    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        if binding.len() > 512 || nonce.len() > 512 {
            return Err(EnclaveError::BadRequest(
                "binding and nonce are limited to 512 bytes".into(),
            ));
        }
        let document = self.report(&snp_report_data(binding, nonce))?;
        Ok(EvidenceEnvelope {
            platform: PlatformName::SimSnp,
            document,
            certs: vec![
                ByteBuf::from(self.vcek_der.clone()),
                ByteBuf::from(self.ask_der.clone()),
                ByteBuf::from(self.root_der.clone()),
            ],
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}
