//! The software CA shared by the `sim` and `sim-snp` platforms: a P-384 root kept in the
//! state directory (so an exported root stays valid across restarts), CA parameters, PEM
//! export, and streaming file hashing for measurements. None of it is ever trusted by a
//! verifier unless that verifier is given the root explicitly.
use std::path::Path;

use aws_lc_rs::digest::{self, SHA384};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P384_SHA384,
};
use zeroize::Zeroizing;

use crate::EnclaveError;

pub(crate) fn err(platform: &'static str, detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform,
        detail: detail.into(),
    }
}

/// CA parameters: P-384, CA, valid from 2023 for `years`.
pub(crate) fn ca_params(cn: &str, years: i64) -> Result<CertificateParams, EnclaveError> {
    ca_params_of(cn, "CADA sim", years)
}

/// CA parameters of organization `org` (e.g. the TPM enrollment CA, which is not a sim CA).
pub(crate) fn ca_params_of(
    cn: &str,
    org: &str,
    years: i64,
) -> Result<CertificateParams, EnclaveError> {
    let e = |x: String| err("sim", x);
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|x| e(x.to_string()))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.not_before =
        time::OffsetDateTime::from_unix_timestamp(1_700_000_000).map_err(|x| e(x.to_string()))?;
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365 * years);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// A root CA: loaded from `state_dir/<name>.{key,der}` or created (and saved there).
pub(crate) struct SoftRoot {
    pub(crate) key: KeyPair,
    pub(crate) der: Vec<u8>,
    pub(crate) params: CertificateParams,
}

impl SoftRoot {
    pub(crate) fn load_or_create(
        state_dir: Option<&Path>,
        name: &str,
        cn: &str,
    ) -> Result<Self, EnclaveError> {
        Self::load_or_create_of(state_dir, name, cn, "CADA sim")
    }

    /// [`SoftRoot::load_or_create`] for a root of organization `org`.
    pub(crate) fn load_or_create_of(
        state_dir: Option<&Path>,
        name: &str,
        cn: &str,
        org: &str,
    ) -> Result<Self, EnclaveError> {
        let params = ca_params_of(cn, org, 20)?;
        let (key_path, der_path) = match state_dir {
            Some(d) => (
                Some(d.join(format!("{name}.key"))),
                Some(d.join(format!("{name}.der"))),
            ),
            None => (None, None),
        };
        if let (Some(kp), Some(dp)) = (&key_path, &der_path) {
            if dp.is_file() {
                let key_der = Zeroizing::new(
                    std::fs::read(kp)
                        .map_err(|e| EnclaveError::io(format!("read {}", kp.display()), e))?,
                );
                let key = KeyPair::try_from(key_der.as_slice())
                    .map_err(|e| err("sim", format!("{}: {e}", kp.display())))?;
                let der = std::fs::read(dp)
                    .map_err(|e| EnclaveError::io(format!("read {}", dp.display()), e))?;
                return Ok(SoftRoot { key, der, params });
            }
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
            .map_err(|e| err("sim", e.to_string()))?;
        let der = params
            .self_signed(&key)
            .map_err(|e| err("sim", e.to_string()))?
            .der()
            .to_vec();
        if let (Some(kp), Some(dp), Some(dir)) = (&key_path, &der_path, state_dir) {
            std::fs::create_dir_all(dir)
                .map_err(|e| EnclaveError::io(format!("create {}", dir.display()), e))?;
            write_private(kp, &Zeroizing::new(key.serialize_der()))?;
            write_private(dp, &der)?;
        }
        Ok(SoftRoot { key, der, params })
    }
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

/// Writes a DER certificate as PEM.
pub(crate) fn export_pem(der: &[u8], path: &Path) -> Result<(), EnclaveError> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body = b64
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
    std::fs::write(path, text).map_err(|e| EnclaveError::io(format!("write {}", path.display()), e))
}

/// SHA-384 of the running binary, streamed (it can be tens of MiB).
pub(crate) fn own_binary_sha384() -> Result<Vec<u8>, EnclaveError> {
    use std::io::Read;
    let path = std::env::current_exe().map_err(|e| EnclaveError::io("locate own binary", e))?;
    let mut f = std::fs::File::open(&path)
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
