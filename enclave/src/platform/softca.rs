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

/// The running binary, opened. On Linux `/proc/self/exe`: the image this process runs,
/// even once its file was removed or replaced (a binary rebuilt while it runs), where
/// [`std::env::current_exe`] names "PATH (deleted)" or the new file. Elsewhere (or without
/// /proc) the file `current_exe` names.
fn open_own_binary() -> Result<(std::fs::File, std::path::PathBuf), EnclaveError> {
    #[cfg(target_os = "linux")]
    {
        let proc_exe = std::path::PathBuf::from("/proc/self/exe");
        if let Ok(f) = std::fs::File::open(&proc_exe) {
            return Ok((f, proc_exe));
        }
    }
    let path = std::env::current_exe().map_err(|e| EnclaveError::io("locate own binary", e))?;
    let f = std::fs::File::open(&path)
        .map_err(|e| EnclaveError::io(format!("open {}", path.display()), e))?;
    Ok((f, path))
}

/// SHA-384 of the running binary, streamed (it can be tens of MiB).
pub(crate) fn own_binary_sha384() -> Result<Vec<u8>, EnclaveError> {
    use std::io::Read;
    let (mut f, path) = open_own_binary()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the copy of this test binary that the test below runs.
    const CHILD: &str = "CADA_TEST_OWN_BINARY_CHILD";

    /// A binary rebuilt while it runs (a test binary during `cargo build`) has lost its file:
    /// the measurement is still the running image's. Runs a copy of this test binary that
    /// removes its own file, then measures itself.
    #[test]
    fn the_measured_binary_is_the_running_one_once_its_file_is_gone() {
        if std::env::var_os(CHILD).is_some() {
            let me = std::env::current_exe().unwrap();
            // Only ever the copy the parent made, never a build's own test binary.
            let dir = me.parent().and_then(Path::file_name).unwrap_or_default();
            assert!(
                dir.to_string_lossy().starts_with("cada-own-binary-"),
                "{me:?}"
            );
            std::fs::remove_file(&me).unwrap();
            match own_binary_sha384() {
                Ok(d) => println!("sha384={}", hex::encode(d)),
                Err(e) => println!("error={e}"),
            }
            return;
        }
        if !cfg!(target_os = "linux") {
            return; // elsewhere the file current_exe names is all there is
        }
        let dir = std::env::temp_dir().join(format!("cada-own-binary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("copy");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let want = hex::encode(digest::digest(&SHA384, &std::fs::read(&copy).unwrap()));
        let out = std::process::Command::new(&copy)
            .args([
                "--exact",
                "platform::softca::tests::the_measured_binary_is_the_running_one_once_its_file_is_gone",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(!copy.exists(), "the child removed its own file");
        assert!(
            stdout.contains(&format!("sha384={want}")),
            "want sha384={want}, got:\n{stdout}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
