//! AMD SEV-SNP through `/dev/sev-guest` (the `sev` crate's guest firmware API):
//! report_data = SHA-512(binding ‖ nonce); the extended report's certificates (VCEK or
//! VLEK, and ASK/ARK when the host provides them) travel in the envelope.
use std::collections::BTreeMap;
use std::sync::Mutex;

use cada_protocol::binding::snp_report_data;
use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use serde_bytes::ByteBuf;
use sev::firmware::guest::Firmware;
use sev::firmware::host::CertType;

use super::Platform;
use crate::EnclaveError;

/// The SEV guest device.
pub struct SevSnp {
    fw: Mutex<Firmware>,
    measurement: String,
}

fn err(detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform: "sev-snp",
        detail: detail.into(),
    }
}

impl SevSnp {
    /// Opens `/dev/sev-guest` and reads the launch measurement once.
    pub fn open() -> Result<Self, EnclaveError> {
        let mut fw = Firmware::open().map_err(|e| {
            err(format!(
                "cannot open /dev/sev-guest (is this an SEV-SNP guest?): {e}"
            ))
        })?;
        let report = fw
            .get_report(None, Some([0u8; 64]), Some(0))
            .map_err(|e| err(format!("report: {e}")))?;
        let measurement = report
            .get(0x90..0xC0)
            .map(hex::encode)
            .ok_or_else(|| err("short report"))?;
        Ok(SevSnp {
            fw: Mutex::new(fw),
            measurement,
        })
    }
}

impl Platform for SevSnp {
    fn name(&self) -> &'static str {
        "sev-snp"
    }

    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        Ok(BTreeMap::from([(
            "MEASUREMENT".to_string(),
            self.measurement.clone(),
        )]))
    }

    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        let data = snp_report_data(binding, nonce);
        let mut fw = self.fw.lock().map_err(|_| err("device lock poisoned"))?;
        let (report, certs) = fw
            .get_ext_report(None, Some(data), Some(0))
            .map_err(|e| err(format!("extended report: {e}")))?;
        // Signing key first, then ASK/ASVK and ARK when the host supplied them.
        let mut ordered = Vec::new();
        for want in [CertType::VCEK, CertType::VLEK, CertType::ASK, CertType::ARK] {
            for c in certs.iter().flatten().filter(|c| c.cert_type == want) {
                ordered.push(ByteBuf::from(c.data.clone()));
            }
        }
        if ordered.is_empty() {
            return Err(err(
                "the host supplied no VCEK/VLEK in the extended report; configure the host's certificate table (snphost import)",
            ));
        }
        Ok(EvidenceEnvelope {
            platform: PlatformName::SevSnp,
            document: report,
            certs: ordered,
            binding: binding.to_vec(),
            nonce: nonce.to_vec(),
        })
    }
}
