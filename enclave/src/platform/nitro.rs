//! AWS Nitro Enclaves through `/dev/nsm` (aws-nitro-enclaves-nsm-api).
//! `user_data` = the binding, `nonce` = the caller's nonce, `public_key` stays free.
use std::collections::BTreeMap;

use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use cada_protocol::envelope::{EvidenceEnvelope, Platform as PlatformName};
use serde_bytes::ByteBuf;

use super::Platform;
use crate::EnclaveError;

/// The NSM device.
pub struct Nitro {
    fd: i32,
}

fn err(detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform: "nitro",
        detail: detail.into(),
    }
}

impl Nitro {
    /// Opens `/dev/nsm`.
    pub fn open() -> Result<Self, EnclaveError> {
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(err(
                "cannot open /dev/nsm (is this a Nitro enclave with the nsm driver loaded?)",
            ));
        }
        Ok(Nitro { fd })
    }
}

impl Drop for Nitro {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}

impl Platform for Nitro {
    fn name(&self) -> &'static str {
        "nitro"
    }

    fn measurements(&self) -> Result<BTreeMap<String, String>, EnclaveError> {
        let mut out = BTreeMap::new();
        for index in [0u16, 1, 2, 3, 4, 8] {
            match driver::nsm_process_request(self.fd, Request::DescribePCR { index }) {
                Response::DescribePCR { data, .. } => {
                    out.insert(format!("PCR{index}"), hex::encode(data));
                }
                other => return Err(err(format!("DescribePCR {index}: {other:?}"))),
            }
        }
        Ok(out)
    }

    fn attest(&self, binding: &[u8], nonce: &[u8]) -> Result<EvidenceEnvelope, EnclaveError> {
        let req = Request::Attestation {
            user_data: Some(ByteBuf::from(binding.to_vec())),
            nonce: Some(ByteBuf::from(nonce.to_vec())),
            public_key: None,
        };
        match driver::nsm_process_request(self.fd, req) {
            Response::Attestation { document } => Ok(EvidenceEnvelope {
                platform: PlatformName::Nitro,
                document,
                certs: vec![],
                binding: binding.to_vec(),
                nonce: nonce.to_vec(),
            }),
            other => Err(err(format!("Attestation: {other:?}"))),
        }
    }
}
