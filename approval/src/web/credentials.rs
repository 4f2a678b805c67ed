//! The owner's registered passkeys, persisted in `webauthn-credentials.json` in the
//! service's state directory (mode 0600, replaced atomically: written to a temporary file
//! beside it, synced, renamed, the directory synced), so a restart keeps them.
//!
//! Format (version 1):
//! ```json
//! {"version": 1, "rp_id": "localhost", "user_id": "<16 random bytes, base64url>",
//!  "credentials": [{"id": "<credential id, base64url>", "cose_key": "<COSE_Key, base64url>",
//!                   "alg": -7, "sign_count": 3, "backup_eligible": false, "fmt": "none",
//!                   "created_at": 1760000000, "last_used_at": 1760000100}]}
//! ```
//! The file is bound to the rp id: a page started under another public host refuses to use
//! it (the passkeys would not work there anyway).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::WebError;
use super::webauthn::{CredentialKey, RelyingParty, MAX_CREDENTIAL_ID};

/// The file's name in the state directory.
pub const FILE_NAME: &str = "webauthn-credentials.json";
/// Largest credential file read.
pub const MAX_FILE: u64 = 256 * 1024;
/// Most passkeys registered at once.
pub const MAX_CREDENTIALS: usize = 32;

/// One registered passkey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredential {
    /// Credential id, base64url.
    pub id: String,
    /// The COSE_Key bytes, base64url.
    pub cose_key: String,
    /// COSE algorithm (informational; the key says it too).
    pub alg: i64,
    /// The last signature counter seen.
    pub sign_count: u32,
    /// Whether the authenticator said the passkey may be synced.
    pub backup_eligible: bool,
    /// The attestation format at registration (not verified).
    pub fmt: String,
    /// Registered at, Unix seconds.
    pub created_at: u64,
    /// Last sign-in, Unix seconds.
    pub last_used_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    rp_id: String,
    user_id: String,
    credentials: Vec<StoredCredential>,
}

/// The registered passkeys and their file.
#[derive(Debug)]
pub struct CredentialStore {
    path: PathBuf,
    file: FileV1,
    user_id: Vec<u8>,
}

impl CredentialStore {
    /// Opens (or starts empty) the store in `state_dir` for `rp`.
    ///
    /// # Errors
    /// [`WebError::Store`] when the file is unreadable, too large, malformed, for another rp
    /// id, or holds a key that does not parse.
    pub fn open(state_dir: &Path, rp: &RelyingParty) -> Result<Self, WebError> {
        let path = state_dir.join(FILE_NAME);
        let store_err = |what: String| WebError::Store(format!("{}: {what}", path.display()));
        let file = match std::fs::File::open(&path) {
            Ok(f) => {
                let meta = f.metadata().map_err(|e| store_err(e.to_string()))?;
                if meta.len() > MAX_FILE {
                    return Err(store_err(format!("larger than {MAX_FILE} bytes")));
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "the passkey file is readable by others; it should be 0600");
                }
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_FILE), &mut bytes)
                    .map_err(|e| store_err(e.to_string()))?;
                let file: FileV1 =
                    serde_json::from_slice(&bytes).map_err(|e| store_err(e.to_string()))?;
                if file.version != 1 {
                    return Err(store_err(format!(
                        "version {} (this service reads version 1)",
                        file.version
                    )));
                }
                if file.rp_id != rp.id() {
                    return Err(store_err(format!(
                        "its passkeys are for {:?}, the page is now served as {:?}: start with \
                         the old --public-url, or move the file away and register again",
                        file.rp_id,
                        rp.id()
                    )));
                }
                if file.credentials.len() > MAX_CREDENTIALS {
                    return Err(store_err(format!("more than {MAX_CREDENTIALS} passkeys")));
                }
                for c in &file.credentials {
                    decode_id(&c.id).map_err(|_| store_err(format!("bad id {:?}", c.id)))?;
                    let cose = URL_SAFE_NO_PAD
                        .decode(&c.cose_key)
                        .map_err(|_| store_err(format!("bad key for {:?}", c.id)))?;
                    CredentialKey::from_cose(&cose)
                        .map_err(|e| store_err(format!("key of {:?}: {e}", c.id)))?;
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut uid = [0u8; 16];
                aws_lc_rs::rand::fill(&mut uid).map_err(|_| store_err("no randomness".into()))?;
                FileV1 {
                    version: 1,
                    rp_id: rp.id().to_owned(),
                    user_id: URL_SAFE_NO_PAD.encode(uid),
                    credentials: Vec::new(),
                }
            }
            Err(e) => return Err(store_err(e.to_string())),
        };
        let user_id = URL_SAFE_NO_PAD
            .decode(&file.user_id)
            .ok()
            .filter(|u| !u.is_empty() && u.len() <= 64)
            .ok_or_else(|| store_err("bad user_id".into()))?;
        Ok(Self {
            path,
            file,
            user_id,
        })
    }

    /// Whether no passkey is registered yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.file.credentials.is_empty()
    }

    /// The WebAuthn user handle of the owner.
    #[must_use]
    pub fn user_id(&self) -> &[u8] {
        &self.user_id
    }

    /// The registered credential ids, base64url.
    #[must_use]
    pub fn ids(&self) -> Vec<String> {
        self.file.credentials.iter().map(|c| c.id.clone()).collect()
    }

    /// The key and counter of a registered credential.
    #[must_use]
    pub fn get(&self, id_b64: &str) -> Option<(CredentialKey, u32)> {
        let c = self.file.credentials.iter().find(|c| c.id == id_b64)?;
        let cose = URL_SAFE_NO_PAD.decode(&c.cose_key).ok()?;
        Some((CredentialKey::from_cose(&cose).ok()?, c.sign_count))
    }

    /// Registers a credential and writes the file.
    ///
    /// # Errors
    /// `webauthn.duplicate_credential`, `web.busy` when full, `webauthn.store` on I/O.
    pub fn add(&mut self, cred: StoredCredential) -> Result<(), WebError> {
        if self.file.credentials.iter().any(|c| c.id == cred.id) {
            return Err(WebError::DuplicateCredential);
        }
        if self.file.credentials.len() >= MAX_CREDENTIALS {
            return Err(WebError::Busy(format!(
                "{MAX_CREDENTIALS} passkeys are registered; remove one from {}",
                self.path.display()
            )));
        }
        let mut next = self.file.clone();
        next.credentials.push(cred);
        self.write(&next)?;
        self.file = next;
        Ok(())
    }

    /// Records a sign-in's counter and time, and writes the file.
    ///
    /// # Errors
    /// `webauthn.unknown_credential`, `webauthn.store` on I/O.
    pub fn used(&mut self, id_b64: &str, sign_count: u32, now: u64) -> Result<(), WebError> {
        let mut next = self.file.clone();
        let c = next
            .credentials
            .iter_mut()
            .find(|c| c.id == id_b64)
            .ok_or(WebError::UnknownCredential)?;
        c.sign_count = sign_count;
        c.last_used_at = Some(now);
        self.write(&next)?;
        self.file = next;
        Ok(())
    }

    fn write(&self, file: &FileV1) -> Result<(), WebError> {
        let bytes = serde_json::to_vec_pretty(file)
            .map_err(|e| WebError::Store(format!("encoding: {e}")))?;
        write_atomic(&self.path, &bytes)
            .map_err(|e| WebError::Store(format!("{}: {e}", self.path.display())))
    }
}

/// Decodes a base64url credential id, bounded.
///
/// # Errors
/// `web.request` when it is not base64url or too long.
pub fn decode_id(id: &str) -> Result<Vec<u8>, WebError> {
    if id.len() > MAX_CREDENTIAL_ID * 4 / 3 + 4 {
        return Err(WebError::Request("credential id too long".into()));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(id)
        .map_err(|_| WebError::Request("credential id is not base64url".into()))?;
    if bytes.is_empty() || bytes.len() > MAX_CREDENTIAL_ID {
        return Err(WebError::Request("credential id length".into()));
    }
    Ok(bytes)
}

/// Writes `bytes` to `path` atomically with mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut rnd = [0u8; 8];
    aws_lc_rs::rand::fill(&mut rnd).map_err(|_| std::io::Error::other("no randomness"))?;
    let tmp = dir.join(format!(".{FILE_NAME}.{}.tmp", URL_SAFE_NO_PAD.encode(rnd)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::webauthn::tests::SoftKey;
    use crate::web::webauthn::Alg;

    fn cred(k: &SoftKey, id: &str) -> StoredCredential {
        StoredCredential {
            id: id.into(),
            cose_key: URL_SAFE_NO_PAD.encode(k.cose()),
            alg: k.alg.cose(),
            sign_count: 0,
            backup_eligible: false,
            fmt: "none".into(),
            created_at: 1,
            last_used_at: None,
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cada-web-cred-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn passkeys_survive_a_restart_in_a_0600_file() {
        let dir = tmpdir("restart");
        let rp = RelyingParty::from_public_url("http://localhost:8470").unwrap();
        let mut s = CredentialStore::open(&dir, &rp).unwrap();
        assert!(s.is_empty());
        let uid = s.user_id().to_vec();
        let k = SoftKey::new(Alg::Es256);
        s.add(cred(&k, "AAEC")).unwrap();
        assert_eq!(
            s.add(cred(&k, "AAEC")).unwrap_err().code(),
            "webauthn.duplicate_credential"
        );
        s.used("AAEC", 7, 99).unwrap();
        let mode = std::fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s = CredentialStore::open(&dir, &rp).unwrap();
        assert_eq!(s.user_id(), uid.as_slice());
        assert_eq!(s.ids(), vec!["AAEC".to_string()]);
        let (key, count) = s.get("AAEC").unwrap();
        assert_eq!(count, 7);
        assert_eq!(key.alg, Alg::Es256);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        // Another rp id refuses the file.
        let other = RelyingParty::from_public_url("https://approve.example.com").unwrap();
        assert_eq!(
            CredentialStore::open(&dir, &other).unwrap_err().code(),
            "webauthn.store"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_refused() {
        let dir = tmpdir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let rp = RelyingParty::from_public_url("http://localhost:8470").unwrap();
        for bad in [
            "not json".to_string(),
            r#"{"version":2,"rp_id":"localhost","user_id":"AAAA","credentials":[]}"#.into(),
            r#"{"version":1,"rp_id":"localhost","user_id":"AAAA","credentials":[{"id":"AA","cose_key":"oA","alg":-7,"sign_count":0,"backup_eligible":false,"fmt":"none","created_at":1,"last_used_at":null}]}"#.into(),
            "x".repeat(300 * 1024),
        ] {
            std::fs::write(dir.join(FILE_NAME), bad).unwrap();
            assert_eq!(
                CredentialStore::open(&dir, &rp).unwrap_err().code(),
                "webauthn.store"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
