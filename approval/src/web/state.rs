//! In-memory state of the page: one-time registration codes, WebAuthn challenges (single
//! use, expiring) and sessions (random 256-bit ids, idle and absolute lifetimes). Nothing
//! here survives a restart: a restart signs the owner out and voids codes and challenges.
//! Time is passed in (Unix seconds).
//!
//! Challenges are **stateless** (review stepup-1, finding 1): a challenge carries what it
//! was issued for and until when, sealed with an HMAC-SHA256 under a key drawn at start
//! ([`CHALLENGE_LEN`] bytes: version ‖ ceremony ‖ 128-bit nonce ‖ expiry ‖ code generation
//! ‖ session binding ‖ tag). Issuing one stores nothing, so nobody can exhaust a table the
//! owner needs by asking for challenges. Single use still holds: a challenge is marked used
//! when a ceremony over it succeeds (a valid passkey signature, or a registration that
//! passed every check), and a used challenge is remembered until it expires — only
//! ceremonies of a registered passkey or a registration code can add to that set.

use std::collections::HashMap;

use aws_lc_rs::{constant_time, digest, hmac};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::error::WebError;
use super::webauthn::CHALLENGE_LEN;

/// A one-time registration code lives this long (seconds).
pub const CODE_TTL: u64 = 15 * 60;
/// A challenge lives this long (seconds): the browser's ceremony timeout.
pub const CHALLENGE_TTL: u64 = 5 * 60;
/// Most used challenges remembered at once (each until it expires). Only successful
/// ceremonies add to it — a passkey's valid signature, a registration with the code — so
/// only the owner's own passkeys could fill it (1024 sign-ins in 5 minutes).
pub const MAX_USED_CHALLENGES: usize = 1024;
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

/// What binds a registration challenge to the session that asked for it: the first 16
/// bytes of HMAC(challenge key, "session" ‖ the session's key) — it names the session
/// without revealing anything of its id.
pub type SessionBinding = [u8; 16];

/// What a challenge was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// A registration under code generation `code`, by the session `session` if any.
    Register {
        /// The code generation checked at begin.
        code: u64,
        /// The session that asked ([`State::bind_session`]), for a second passkey.
        session: Option<SessionBinding>,
    },
    /// A sign-in.
    SignIn,
}

/// The challenge's layout version.
const CHALLENGE_VERSION: u8 = 1;
/// Bytes of the random nonce in a challenge.
const NONCE_LEN: usize = 16;
/// Bytes of a challenge before its tag.
const CHALLENGE_BODY: usize = 1 + 1 + NONCE_LEN + 8 + 8 + 16;
/// Bytes of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
// The layout and the length the WebAuthn check reads agree.
const _: () = assert!(CHALLENGE_BODY + TAG_LEN == CHALLENGE_LEN);
const KIND_SIGN_IN: u8 = 1;
const KIND_REGISTER: u8 = 2;
const KIND_REGISTER_SESSION: u8 = 3;

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
pub struct State {
    code: Option<Code>,
    generation: u64,
    /// Seals challenges; drawn at start, never leaves the process.
    challenge_key: hmac::Key,
    /// Nonces of challenges a ceremony succeeded with, until they expire.
    used: HashMap<[u8; NONCE_LEN], u64>,
    sessions: HashMap<[u8; 32], Session>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.generation)
            .field("used_challenges", &self.used.len())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// The key a session is stored under: SHA-256 of its id, so that looking it up does not
/// compare the secret itself.
fn session_key(id: &str) -> [u8; 32] {
    let mut k = [0u8; 32];
    k.copy_from_slice(digest::digest(&digest::SHA256, id.as_bytes()).as_ref());
    k
}

impl State {
    /// Empty state with a fresh challenge key.
    ///
    /// # Errors
    /// `web.busy` without randomness.
    pub fn new() -> Result<Self, WebError> {
        let key: [u8; 32] = random()?;
        Ok(Self {
            code: None,
            generation: 0,
            challenge_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            used: HashMap::new(),
            sessions: HashMap::new(),
        })
    }

    /// What binds a registration challenge to the session of `key`.
    #[must_use]
    pub fn bind_session(&self, key: &[u8; 32]) -> SessionBinding {
        let mut ctx = hmac::Context::with_key(&self.challenge_key);
        ctx.update(b"cada-approval session binding\0");
        ctx.update(key);
        let tag = ctx.sign();
        let mut b = [0u8; 16];
        b.copy_from_slice(&tag.as_ref()[..16]);
        b
    }

    fn seal(&self, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.challenge_key);
        ctx.update(b"cada-approval challenge\0");
        ctx.update(body);
        ctx.sign()
    }

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

    /// Issues a challenge for `purpose`, valid [`CHALLENGE_TTL`]. Stores nothing: any
    /// number can be outstanding.
    ///
    /// # Errors
    /// `web.busy` without randomness.
    pub fn new_challenge(
        &self,
        purpose: &Purpose,
        now: u64,
    ) -> Result<[u8; CHALLENGE_LEN], WebError> {
        let nonce: [u8; NONCE_LEN] = random()?;
        let (kind, code, binding) = match purpose {
            Purpose::SignIn => (KIND_SIGN_IN, 0, [0u8; 16]),
            Purpose::Register {
                code,
                session: None,
            } => (KIND_REGISTER, *code, [0u8; 16]),
            Purpose::Register {
                code,
                session: Some(b),
            } => (KIND_REGISTER_SESSION, *code, *b),
        };
        let mut ch = [0u8; CHALLENGE_LEN];
        ch[0] = CHALLENGE_VERSION;
        ch[1] = kind;
        ch[2..18].copy_from_slice(&nonce);
        ch[18..26].copy_from_slice(&now.saturating_add(CHALLENGE_TTL).to_be_bytes());
        ch[26..34].copy_from_slice(&code.to_be_bytes());
        ch[34..CHALLENGE_BODY].copy_from_slice(&binding);
        let tag = self.seal(&ch[..CHALLENGE_BODY]);
        ch[CHALLENGE_BODY..].copy_from_slice(tag.as_ref());
        Ok(ch)
    }

    /// Opens a challenge: issued by this process (its tag), not expired, for this ceremony,
    /// not used by a ceremony that succeeded. It stays usable until [`Self::use_challenge`].
    ///
    /// # Errors
    /// `webauthn.challenge` when forged, from before a restart, used, expired or for
    /// another ceremony.
    pub fn check_challenge(
        &self,
        ch: &[u8; CHALLENGE_LEN],
        sign_in: bool,
        now: u64,
    ) -> Result<Purpose, WebError> {
        let (body, tag) = ch.split_at(CHALLENGE_BODY);
        let expected = self.seal(body);
        if body[0] != CHALLENGE_VERSION
            || constant_time::verify_slices_are_equal(expected.as_ref(), tag).is_err()
        {
            return Err(WebError::Challenge(
                "not a challenge of this page (or from before a restart); start again".into(),
            ));
        }
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[r]);
            u64::from_be_bytes(b)
        };
        let expires_at = word(18..26);
        let code = word(26..34);
        let mut binding = [0u8; 16];
        binding.copy_from_slice(&body[34..CHALLENGE_BODY]);
        if now >= expires_at {
            return Err(WebError::Challenge(
                "the challenge expired; start again".into(),
            ));
        }
        if self.used.contains_key(&body[2..18]) {
            return Err(WebError::Challenge(
                "unknown or already used challenge; start again".into(),
            ));
        }
        let purpose = match body[1] {
            KIND_SIGN_IN => Purpose::SignIn,
            KIND_REGISTER => Purpose::Register {
                code,
                session: None,
            },
            _ => Purpose::Register {
                code,
                session: Some(binding),
            },
        };
        if matches!(purpose, Purpose::SignIn) != sign_in {
            return Err(WebError::Challenge(
                "the challenge was issued for another ceremony".into(),
            ));
        }
        Ok(purpose)
    }

    /// Marks a challenge used (single use), once a ceremony over it succeeded; opens it
    /// again first ([`Self::check_challenge`]).
    ///
    /// # Errors
    /// `webauthn.challenge` as [`Self::check_challenge`]; `web.busy` when
    /// [`MAX_USED_CHALLENGES`] unexpired challenges were used (only passkey holders can).
    pub fn use_challenge(
        &mut self,
        ch: &[u8; CHALLENGE_LEN],
        sign_in: bool,
        now: u64,
    ) -> Result<(), WebError> {
        self.check_challenge(ch, sign_in, now)?;
        self.used.retain(|_, expires_at| *expires_at > now);
        if self.used.len() >= MAX_USED_CHALLENGES {
            return Err(WebError::Busy(
                "too many sign-ins in the last few minutes; try again in a few minutes".into(),
            ));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&ch[2..18]);
        let mut b = [0u8; 8];
        b.copy_from_slice(&ch[18..26]);
        self.used.insert(nonce, u64::from_be_bytes(b));
        Ok(())
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
        let mut s = State::new().unwrap();
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
        let mut s = State::new().unwrap();
        let ch = s.new_challenge(&Purpose::SignIn, 10).unwrap();
        // Usable until a ceremony over it succeeds (a failed one does not use it up).
        assert_eq!(s.check_challenge(&ch, true, 11).unwrap(), Purpose::SignIn);
        assert_eq!(s.check_challenge(&ch, true, 11).unwrap(), Purpose::SignIn);
        s.use_challenge(&ch, true, 11).unwrap();
        for code in [
            s.check_challenge(&ch, true, 12).unwrap_err().code(),
            s.use_challenge(&ch, true, 12).unwrap_err().code(),
        ] {
            assert_eq!(code, "webauthn.challenge");
        }
        let ch = s.new_challenge(&Purpose::SignIn, 10).unwrap();
        assert_eq!(
            s.check_challenge(&ch, true, 10 + CHALLENGE_TTL)
                .unwrap_err()
                .code(),
            "webauthn.challenge"
        );
        let reg = Purpose::Register {
            code: 7,
            session: Some(s.bind_session(&[5u8; 32])),
        };
        let ch = s.new_challenge(&reg, 10).unwrap();
        assert_eq!(
            s.check_challenge(&ch, true, 11).unwrap_err().code(),
            "webauthn.challenge",
            "another ceremony"
        );
        assert_eq!(s.check_challenge(&ch, false, 11).unwrap(), reg);
        assert_ne!(s.bind_session(&[5u8; 32]), s.bind_session(&[6u8; 32]));
        let first = Purpose::Register {
            code: 3,
            session: None,
        };
        let ch = s.new_challenge(&first, 10).unwrap();
        assert_eq!(s.check_challenge(&ch, false, 11).unwrap(), first);
        // Any byte changed, or another process's key: not a challenge of this page.
        for i in 0..CHALLENGE_LEN {
            let mut bad = ch;
            bad[i] ^= 1;
            assert_eq!(
                s.check_challenge(&bad, false, 11).unwrap_err().code(),
                "webauthn.challenge",
                "byte {i}"
            );
        }
        let other = State::new().unwrap();
        assert_eq!(
            other.check_challenge(&ch, false, 11).unwrap_err().code(),
            "webauthn.challenge"
        );
    }

    #[test]
    fn issuing_challenges_stores_nothing_and_only_successes_are_remembered() {
        let mut s = State::new().unwrap();
        // Anyone may ask for any number: nothing is kept (review stepup-1, finding 1).
        for _ in 0..10_000 {
            s.new_challenge(&Purpose::SignIn, 20).unwrap();
        }
        assert!(s.used.is_empty());
        let mut chs = Vec::new();
        for _ in 0..MAX_USED_CHALLENGES {
            let ch = s.new_challenge(&Purpose::SignIn, 20).unwrap();
            s.use_challenge(&ch, true, 21).unwrap();
            chs.push(ch);
        }
        let ch = s.new_challenge(&Purpose::SignIn, 20).unwrap();
        assert_eq!(
            s.use_challenge(&ch, true, 21).unwrap_err().code(),
            "web.busy"
        );
        // Used ones are forgotten when they expire, and stay refused (expired) after.
        let later = 20 + CHALLENGE_TTL;
        let ch = s.new_challenge(&Purpose::SignIn, later).unwrap();
        s.use_challenge(&ch, true, later).unwrap();
        assert_eq!(s.used.len(), 1);
        assert_eq!(
            s.check_challenge(&chs[0], true, later).unwrap_err().code(),
            "webauthn.challenge"
        );
    }

    #[test]
    fn sessions_end_when_idle_and_at_their_absolute_limit() {
        let mut s = State::new().unwrap();
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
        let mut s = State::new().unwrap();
        let id = s.new_session("c".into(), 0).unwrap();
        let (_, sess) = s.session(&id, 1).unwrap();
        assert!(csrf_matches(&sess, &sess.csrf.clone()));
        assert!(!csrf_matches(&sess, ""));
        assert!(!csrf_matches(&sess, &sess.csrf[..10]));
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let mut s = State::new().unwrap();
        let first = s.new_session("c".into(), 0).unwrap();
        for i in 1..=MAX_SESSIONS {
            s.new_session("c".into(), u64::try_from(i).unwrap())
                .unwrap();
        }
        assert!(s.session(&first, 100).is_none());
    }
}
