//! The bearer token that guards `cada-parent`'s TCP listener.
//!
//! A TCP port on loopback is open to every local user, unlike the 0600 unix socket, and
//! whoever reaches the daemon can have the enclave sign proofs. So the TCP listener takes
//! requests only with `Authorization: Bearer <token>`, the token read from a file that only
//! the daemon's user can read: a regular file owned by the effective user, with no group or
//! other permission bits (mode 0600 or 0400).
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aws_lc_rs::digest::{digest, SHA256};

use crate::ParentError;

/// Shortest token accepted (e.g. `openssl rand -hex 32` gives 64 characters).
pub const MIN_TOKEN_LEN: usize = 32;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 1024;

/// A bearer token, kept only as its SHA-256 digest.
pub struct BearerToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

/// RFC 6750 `b64token` characters.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

impl BearerToken {
    /// A token from its text: [`MIN_TOKEN_LEN`]..=[`MAX_TOKEN_LEN`] RFC 6750 token
    /// characters (surrounding whitespace, such as a final newline, is ignored).
    pub fn new(text: &str) -> Result<Self, ParentError> {
        let t = text.trim();
        if t.len() < MIN_TOKEN_LEN || t.len() > MAX_TOKEN_LEN {
            return Err(ParentError::Config(format!(
                "the token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters (it has {}); \
                 make one with `openssl rand -hex 32`",
                t.len()
            )));
        }
        if !t.bytes().all(is_token_char) {
            return Err(ParentError::Config(
                "the token may hold only letters, digits and -._~+/= (RFC 6750)".into(),
            ));
        }
        Ok(BearerToken {
            digest: sha256(t.as_bytes()),
        })
    }

    /// Reads the token from `path`, which must be a regular file owned by the effective
    /// user with no group or other permissions; every refusal says how to fix it.
    pub fn from_file(path: &Path) -> Result<Self, ParentError> {
        let shown = path.display();
        let err =
            |detail: String| ParentError::Config(format!("--auth-token-file {shown}: {detail}"));
        let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        // Checked on the opened file, so what is checked is what is read.
        let meta = f.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(err(format!(
                "owned by uid {}, not by this daemon's user (uid {euid}); another user could \
                 replace the token (chown it)",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {mode:04o} lets other users read or change the token; chmod 600 {shown}"
            )));
        }
        let mut text = String::new();
        f.by_ref()
            .take(MAX_TOKEN_LEN as u64 + 64)
            .read_to_string(&mut text)
            .map_err(|e| err(format!("not readable as text: {e}")))?;
        BearerToken::new(&text).map_err(|e| match e {
            ParentError::Config(d) => err(d),
            other => other,
        })
    }

    /// Whether `presented` is the token. Both sides are hashed first, so the comparison
    /// takes the same time whatever the presented length, and is constant-time over the
    /// digests.
    pub fn matches(&self, presented: &str) -> bool {
        let p = sha256(presented.as_bytes());
        aws_lc_rs::constant_time::verify_slices_are_equal(&p, &self.digest).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef";

    fn file(tag: &str, content: &str, mode: u32) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cada-parent-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(tag);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn refusal(p: &Path) -> String {
        match BearerToken::from_file(p) {
            Err(ParentError::Config(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_private_file_gives_a_token_that_matches_only_itself() {
        for mode in [0o600, 0o400] {
            let t = BearerToken::from_file(&file("ok", &format!("{TOKEN}\n"), mode)).unwrap();
            assert!(t.matches(TOKEN));
            assert!(!t.matches(&TOKEN[1..]));
            assert!(!t.matches(&format!("{TOKEN}x")));
            assert!(!t.matches(""));
        }
    }

    #[test]
    fn loose_modes_short_tokens_and_odd_files_are_refused_saying_why() {
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            let m = refusal(&file("loose", TOKEN, mode));
            assert!(m.contains("chmod 600"), "{mode:o}: {m}");
        }
        assert!(refusal(&file("short", "abc\n", 0o600)).contains("openssl rand"));
        assert!(refusal(&file("space", &format!("{TOKEN} x"), 0o600)).contains("RFC 6750"));
        let dir = std::env::temp_dir();
        assert!(
            refusal(&dir).contains("not a regular file") || refusal(&dir).contains("directory")
        );
        assert!(refusal(Path::new("/nonexistent/cada-token")).contains("--auth-token-file"));
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        let p = file("other", TOKEN, 0o600);
        let me = nix::unistd::geteuid().as_raw();
        // Only root can give a file away; elsewhere the owner check is the same code path
        // as above with a matching owner.
        if me == 0 {
            std::os::unix::fs::chown(&p, Some(4242), None).unwrap();
            assert!(refusal(&p).contains("owned by uid 4242"));
        } else {
            assert!(BearerToken::from_file(&p).is_ok());
        }
    }
}
