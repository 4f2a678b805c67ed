//! In-memory state of the page: one-time registration codes, WebAuthn challenges (single
//! use, expiring) and sessions (random 256-bit ids, idle and absolute lifetimes). Nothing
//! here survives a restart: a restart signs the owner out and voids codes and challenges.
//! Time is passed in (Unix seconds).

use std::collections::HashMap;

use aws_lc_rs::{constant_time, digest};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::error::WebError;
use super::webauthn::CHALLENGE_LEN;

/// A one-time registration code lives this long (seconds).
pub const CODE_TTL: u64 = 15 * 60;
/// A challenge lives this long (seconds): the browser's ceremony timeout.
pub const CHALLENGE_TTL: u64 = 5 * 60;
/// Most challenges outstanding at once.
pub const MAX_CHALLENGES: usize = 256;
/// A session ends after this long without a request (seconds).
pub const SESSION_IDLE: u64 = 15 * 60;
/// A session ends this long after sign-in, used or not (seconds).
pub const SESSION_ABSOLUTE: u64 = 8 * 60 * 60;
/// Most sessions at once (the oldest is ended to make room).
pub const MAX_SESSIONS: usize = 64;

/// Crockford's base32 alphabet (no I, L, O, U): easy to read and type.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a code: 20 × 5 bits = 100 bits.
const CODE_CHARS: usize = 20;

fn random<const N: usize>() -> Result<[u8; N], WebError> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| WebError::Busy("no randomness".into()))?;
    Ok(b)
}

/// A registration code as issued: print it where only the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationCode {
    /// The code, in groups of four, e.g. `7K2M-…`.
    pub code: String,
    /// When it expires, Unix seconds.
    pub expires_at: u64,
    /// Whether registering with it also needs a signed-in session (a passkey exists).
    pub needs_session: bool,
}

impl std::fmt::Display for RegistrationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "approval page: one-time passkey registration code {} (single use, valid {} minutes{})",
            self.code,
            CODE_TTL / 60,
            if self.needs_session {
                "; type it on the \"Add a passkey\" page while signed in"
            } else {
                "; type it on the sign-in page to register the first passkey"
            }
        )
    }
}

#[derive(Debug)]
struct Code {
    normalized: Vec<u8>,
    expires_at: u64,
    generation: u64,
}

/// Normalizes a typed code: case, separators and the look-alike letters Crockford maps.
fn normalize(code: &str) -> Vec<u8> {
    code.bytes()
        .filter(|b| !matches!(b, b'-' | b' ' | b'\t'))
        .take(64)
        .map(|b| match b.to_ascii_uppercase() {
            b'O' => b'0',
            b'I' | b'L' => b'1',
            u => u,
        })
        .collect()
}

/// What a challenge was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A registration under code generation `code`, by the session `session` if any.
    Register {
        /// The code generation checked at begin.
        code: u64,
        /// The session (its key) that asked, for a second passkey.
        session: Option<[u8; 32]>,
    },
    /// A sign-in.
    SignIn,
}

#[derive(Debug)]
struct Challenge {
    purpose: Purpose,
    expires_at: u64,
}

/// A signed-in owner.
#[derive(Debug, Clone)]
pub struct Session {
    /// The passkey that signed in (credential id, base64url).
    pub credential: String,
    /// The CSRF token of every form of this session.
    pub csrf: String,
    created_at: u64,
    last_seen: u64,
}

/// The page's in-memory state.
#[derive(Debug, Default)]
pub struct State {
    code: Option<Code>,
    generation: u64,
    challenges: HashMap<[u8; CHALLENGE_LEN], Challenge>,
    sessions: HashMap<[u8; 32], Session>,
}

/// The key a session is stored under: SHA-256 of its id, so that looking it up does not
/// compare the secret itself.
fn session_key(id: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest::digest(&digest::SHA256, id.as_bytes()).as_ref());
    k
}

impl State {
    /// Issues a new one-time code (the previous one, if any, stops working).
    ///
    /// # Errors
    /// `web.busy` without randomness.
    pub fn issue_code(
        &mut self,
        now: u64,
        needs_session: bool,
    ) -> Result<RegistrationCode, WebError> {
        let raw: [u8; CODE_CHARS] = random()?;
        let chars: Vec<u8> = raw
            .iter()
            .map(|b| CODE_ALPHABET[usize::from(b & 31)])
            .collect();
        let mut shown = String::with_capacity(CODE_CHARS + CODE_CHARS / 4);
        for (i, c) in chars.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                shown.push('-');
            }
            shown.push(char::from(*c));
        }
        self.generation += 1;
        let expires_at = now.saturating_add(CODE_TTL);
        self.code = Some(Code {
            normalized: chars,
            expires_at,
            generation: self.generation,
        });
        Ok(RegistrationCode {
            code: shown,
            expires_at,
            needs_session,
        })
    }

    /// Checks a typed code (constant time) without using it up; returns its generation.
    ///
    /// # Errors
    /// `web.code`.
    pub fn check_code(&self, typed: &str, now: u64) -> Result<u64, WebError> {
        let Some(code) = &self.code else {
            return Err(WebError::Code(
                "no registration code is valid: it was used, or none was issued. Restart \
                 cada-owner serve (first passkey) or ask for a new one while signed in"
                    .into(),
            ));
        };
        if now >= code.expires_at {
            return Err(WebError::Code(
                "the registration code expired; ask for a new one".into(),
            ));
        }
        let typed = normalize(typed);
        if constant_time::verify_slices_are_equal(&typed, &code.normalized).is_err() {
            return Err(WebError::Code(
                "wrong registration code: type the code cada-owner serve printed".into(),
            ));
        }
        Ok(code.generation)
    }

    /// Checks that the code of `generation` is still the valid one (before using it up).
    ///
    /// # Errors
    /// `web.code` when it was used, replaced or expired meanwhile.
    pub fn check_code_generation(&self, generation: u64, now: u64) -> Result<(), WebError> {
        match &self.code {
            Some(c) if c.generation == generation && now < c.expires_at => Ok(()),
            _ => Err(WebError::Code(
                "the registration code was used, replaced or expired meanwhile".into(),
            )),
        }
    }

    /// Uses up the code of `generation` (at the end of a registration).
    ///
    /// # Errors
    /// `web.code` when it was used, replaced or expired meanwhile.
    pub fn use_code(&mut self, generation: u64, now: u64) -> Result<(), WebError> {
        match &self.code {
            Some(c) if c.generation == generation && now < c.expires_at => {
                self.code = None;
                Ok(())
            }
            _ => Err(WebError::Code(
                "the registration code was used, replaced or expired meanwhile".into(),
            )),
        }
    }

    /// Issues a challenge for `purpose`.
    ///
    /// # Errors
    /// `web.busy` when too many are outstanding.
    pub fn new_challenge(
        &mut self,
        purpose: Purpose,
        now: u64,
    ) -> Result<[u8; CHALLENGE_LEN], WebError> {
        self.challenges.retain(|_, c| c.expires_at > now);
        if self.challenges.len() >= MAX_CHALLENGES {
            return Err(WebError::Busy(
                "too many sign-ins under way; try again in a few minutes".into(),
            ));
        }
        let ch: [u8; CHALLENGE_LEN] = random()?;
        self.challenges.insert(
            ch,
            Challenge {
                purpose,
                expires_at: now.saturating_add(CHALLENGE_TTL),
            },
        );
        Ok(ch)
    }

    /// Takes a challenge (single use): it is gone afterwards whether it matches or not.
    ///
    /// # Errors
    /// `webauthn.challenge` when unknown, used, expired or for another ceremony.
    pub fn take_challenge(
        &mut self,
        ch: &[u8; CHALLENGE_LEN],
        sign_in: bool,
        now: u64,
    ) -> Result<Purpose, WebError> {
        let c = self.challenges.remove(ch).ok_or_else(|| {
            WebError::Challenge("unknown or already used challenge; start again".into())
        })?;
        if now >= c.expires_at {
            return Err(WebError::Challenge(
                "the challenge expired; start again".into(),
            ));
        }
        if matches!(c.purpose, Purpose::SignIn) != sign_in {
            return Err(WebError::Challenge(
                "the challenge was issued for another ceremony".into(),
            ));
        }
        Ok(c.purpose)
    }

    /// Starts a session for `credential`; returns its id (the cookie value).
    ///
    /// # Errors
    /// `web.busy` without randomness.
    pub fn new_session(&mut self, credential: String, now: u64) -> Result<String, WebError> {
        self.sessions.retain(|_, s| alive(s, now));
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
            {
                self.sessions.remove(&oldest);
            }
        }
        let id = URL_SAFE_NO_PAD.encode(random::<32>()?);
        let csrf = URL_SAFE_NO_PAD.encode(random::<32>()?);
        self.sessions.insert(
            session_key(&id),
            Session {
                credential,
                csrf,
                created_at: now,
                last_seen: now,
            },
        );
        Ok(id)
    }

    /// The session of a cookie value, refreshed; `None` when unknown or ended (then
    /// removed). Also returns its key.
    pub fn session(&mut self, id: &str, now: u64) -> Option<([u8; 32], Session)> {
        if id.len() != 43 {
            return None;
        }
        let key = session_key(id);
        let s = self.sessions.get_mut(&key)?;
        if !alive(s, now) {
            self.sessions.remove(&key);
            return None;
        }
        s.last_seen = now;
        Some((key, s.clone()))
    }

    /// Whether the session of `key` is still signed in (without refreshing it).
    #[must_use]
    pub fn session_alive(&self, key: &[u8; 32], now: u64) -> bool {
        self.sessions.get(key).is_some_and(|s| alive(s, now))
    }

    /// Ends a session.
    pub fn end_session(&mut self, key: &[u8; 32]) {
        self.sessions.remove(key);
    }
}

fn alive(s: &Session, now: u64) -> bool {
    now < s.last_seen.saturating_add(SESSION_IDLE)
        && now < s.created_at.saturating_add(SESSION_ABSOLUTE)
}

/// Compares a posted CSRF token with the session's, in constant time.
#[must_use]
pub fn csrf_matches(session: &Session, posted: &str) -> bool {
    constant_time::verify_slices_are_equal(session.csrf.as_bytes(), posted.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_single_use_and_expires() {
        let mut s = State::default();
        let c = s.issue_code(1000, false).unwrap();
        assert_eq!(c.code.len(), 24);
        assert_eq!(c.expires_at, 1000 + CODE_TTL);
        assert_eq!(s.check_code("WRONG", 1000).unwrap_err().code(), "web.code");
        // Lower case and without dashes is the same code.
        let g = s
            .check_code(&c.code.to_lowercase().replace('-', ""), 1001)
            .unwrap();
        assert_eq!(
            s.check_code(&c.code, 1000 + CODE_TTL).unwrap_err().code(),
            "web.code"
        );
        s.use_code(g, 1002).unwrap();
        assert_eq!(s.check_code(&c.code, 1003).unwrap_err().code(), "web.code");
        assert_eq!(s.use_code(g, 1003).unwrap_err().code(), "web.code");
        // A newer code voids the older generation.
        let c1 = s.issue_code(2000, true).unwrap();
        let g1 = s.check_code(&c1.code, 2000).unwrap();
        let c2 = s.issue_code(2001, true).unwrap();
        assert_ne!(c1.code, c2.code);
        assert_eq!(s.use_code(g1, 2002).unwrap_err().code(), "web.code");
    }

    #[test]
    fn a_challenge_is_single_use_expires_and_keeps_its_ceremony() {
        let mut s = State::default();
        let ch = s.new_challenge(Purpose::SignIn, 10).unwrap();
        assert_eq!(s.take_challenge(&ch, true, 11).unwrap(), Purpose::SignIn);
        assert_eq!(
            s.take_challenge(&ch, true, 11).unwrap_err().code(),
            "webauthn.challenge"
        );
        let ch = s.new_challenge(Purpose::SignIn, 10).unwrap();
        assert_eq!(
            s.take_challenge(&ch, true, 10 + CHALLENGE_TTL)
                .unwrap_err()
                .code(),
            "webauthn.challenge"
        );
        let ch = s
            .new_challenge(
                Purpose::Register {
                    code: 1,
                    session: None,
                },
                10,
            )
            .unwrap();
        assert_eq!(
            s.take_challenge(&ch, true, 11).unwrap_err().code(),
            "webauthn.challenge"
        );
        for _ in 0..MAX_CHALLENGES {
            s.new_challenge(Purpose::SignIn, 20).unwrap();
        }
        assert_eq!(
            s.new_challenge(Purpose::SignIn, 20).unwrap_err().code(),
            "web.busy"
        );
        // Expired ones make room.
        assert!(s.new_challenge(Purpose::SignIn, 20 + CHALLENGE_TTL).is_ok());
    }

    #[test]
    fn sessions_end_when_idle_and_at_their_absolute_limit() {
        let mut s = State::default();
        let id = s.new_session("cred".into(), 0).unwrap();
        assert_eq!(id.len(), 43, "256 bits, base64url");
        assert!(s.session(&id, SESSION_IDLE - 1).is_some());
        // Refreshed at SESSION_IDLE - 1: still alive just before twice that.
        assert!(s.session(&id, 2 * SESSION_IDLE - 2).is_some());
        assert!(s.session(&id, 3 * SESSION_IDLE).is_none(), "idle");
        assert!(s.session(&id, 3 * SESSION_IDLE).is_none(), "and removed");
        let id = s.new_session("cred".into(), 0).unwrap();
        let mut t = 0;
        while t + 600 < SESSION_ABSOLUTE {
            t += 600;
            assert!(s.session(&id, t).is_some());
        }
        assert!(s.session(&id, SESSION_ABSOLUTE).is_none(), "absolute");
        assert!(s.session("x", 0).is_none());
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let mut s = State::default();
        let id = s.new_session("c".into(), 0).unwrap();
        let (_, sess) = s.session(&id, 1).unwrap();
        assert!(csrf_matches(&sess, &sess.csrf.clone()));
        assert!(!csrf_matches(&sess, ""));
        assert!(!csrf_matches(&sess, &sess.csrf[..10]));
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let mut s = State::default();
        let first = s.new_session("c".into(), 0).unwrap();
        for i in 1..=MAX_SESSIONS {
            s.new_session("c".into(), u64::try_from(i).unwrap())
                .unwrap();
        }
        assert!(s.session(&first, 100).is_none());
    }
}
