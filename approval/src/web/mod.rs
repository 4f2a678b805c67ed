//! The owner's approval page: passkey (WebAuthn) sign-in, sessions, CSRF, safe rendering.
