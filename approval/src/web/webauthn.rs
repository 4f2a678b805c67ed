//! The WebAuthn relying party: the checks of a registration and of an assertion (W3C Web
//! Authentication Level 3, §7.1 and §7.2), without I/O. The ceremonies' state (challenges,
//! the credential file) lives in `state` and `credentials`.
//!
//! Choices: attestation is not verified (the page asks for `none`; trust in a new passkey
//! comes from the one-time code, not from a vendor certificate), so any `fmt` is taken and its
//! `attStmt` ignored. Keys: ES256 (P-256) and EdDSA (Ed25519) COSE_Keys. User verification
//! (UV) is required as well as presence (UP): the passkey alone lets its holder sign grants
//! with the owner key, so it must be "something you have" unlocked by "something you know or
//! are". Backed-up (synced) passkeys are accepted.

use aws_lc_rs::{digest, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use coset::iana::{self, EnumI64 as _};
use coset::{CborSerializable as _, CoseKey, KeyType, Label};
use serde::Deserialize;

use super::error::WebError;

/// Largest clientDataJSON taken.
pub const MAX_CLIENT_DATA: usize = 4 * 1024;
/// Largest attestation object taken.
pub const MAX_ATTESTATION_OBJECT: usize = 16 * 1024;
/// Largest authenticatorData taken (assertions).
pub const MAX_AUTH_DATA: usize = 4 * 1024;
/// Longest credential id (the spec's limit).
pub const MAX_CREDENTIAL_ID: usize = 1023;
/// Largest signature taken (a DER ECDSA P-256 signature is ≤ 72 bytes, Ed25519 64).
pub const MAX_SIGNATURE: usize = 256;
/// Challenge length in bytes: a sealed, stateless challenge (`state`).
pub const CHALLENGE_LEN: usize = 82;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

/// The relying party: the rp id (the host of the public URL) and the exact origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    id: String,
    origin: String,
    host: String,
    base: String,
    secure: bool,
}

impl RelyingParty {
    /// From `--public-url`: `https://HOST[:PORT]`, or `http://localhost[:PORT]` (browsers
    /// treat localhost as a secure context; no other http host can use WebAuthn). An IP
    /// literal is refused: WebAuthn refuses IP addresses as rp ids. An optional path is the
    /// base a reverse proxy strips before the page (`https://owner.example/approval`): plain
    /// segments of letters, digits, `-`, `.`, `_`, `~` only. No query, fragment or user info.
    ///
    /// # Errors
    /// [`WebError::PublicUrl`] naming what to fix.
    pub fn from_public_url(public_url: &str) -> Result<Self, WebError> {
        let bad = |why: &str| WebError::PublicUrl(format!("{public_url:?}: {why}"));
        // The project's strict URL rules first (normal form, no dot segments, no encoded
        // separators), as the step-up API applies them to the same flag.
        cada_protocol::url::UrlPrefix::parse(public_url).map_err(|e| bad(&e.to_string()))?;
        let url = url::Url::parse(public_url).map_err(|e| bad(&e.to_string()))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
                return Err(bad(
                    "an IP address cannot be a WebAuthn relying party id; use a host name \
                     such as http://localhost:8470 (and --listen 127.0.0.1:8470)",
                ))
            }
            None => return Err(bad("no host")),
        };
        let secure = match url.scheme() {
            "https" => true,
            "http" if host == "localhost" || host.ends_with(".localhost") => false,
            "http" => {
                return Err(bad(
                    "plain http works for WebAuthn only on localhost; use https://",
                ))
            }
            _ => return Err(bad("the scheme must be https (or http for localhost)")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("no user info"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment"));
        }
        let base = url.path().trim_end_matches('/');
        for seg in base.split('/').skip(1) {
            let plain = seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if seg.is_empty() || seg == "." || seg == ".." || !plain {
                return Err(bad(
                    "the path (the base a proxy strips) may hold only plain segments of \
                     letters, digits, '-', '.', '_' and '~'",
                ));
            }
        }
        let base = base.to_owned();
        let origin = url.origin().ascii_serialization();
        let host_port = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Self {
            id: host,
            origin,
            host: host_port,
            base,
            secure,
        })
    }

    /// The rp id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The origin, e.g. `http://localhost:8470`.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `host[:port]` as a browser sends it in `Host`.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The public URL's path without its trailing slash (`""` at the root, else e.g.
    /// `/approval`): every link and redirect of the page starts with it.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the page is served over https (the cookie gets `Secure` and `__Host-`).
    #[must_use]
    pub fn secure(&self) -> bool {
        self.secure
    }
}

/// A credential key algorithm the page takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256 (COSE -7).
    Es256,
    /// Ed25519 (COSE -8).
    EdDsa,
}

impl Alg {
    /// The COSE algorithm number.
    #[must_use]
    pub fn cose(self) -> i64 {
        match self {
            Self::Es256 => iana::Algorithm::ES256.to_i64(),
            Self::EdDsa => iana::Algorithm::EdDSA.to_i64(),
        }
    }

    fn verification(self) -> &'static dyn signature::VerificationAlgorithm {
        match self {
            Self::Es256 => &signature::ECDSA_P256_SHA256_ASN1,
            Self::EdDsa => &signature::ED25519,
        }
    }
}

/// A credential public key: the algorithm and the raw key (an uncompressed P-256 point or
/// an Ed25519 key), checked to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialKey {
    /// The algorithm.
    pub alg: Alg,
    /// The raw public key.
    pub raw: Vec<u8>,
}

impl CredentialKey {
    /// Reads a COSE_Key (RFC 9052 §7, RFC 9053): EC2/P-256/ES256 or OKP/Ed25519/EdDSA, with
    /// its `alg` present.
    ///
    /// # Errors
    /// [`WebError::Key`] naming what is wrong.
    pub fn from_cose(bytes: &[u8]) -> Result<Self, WebError> {
        // Duplicate map keys and depth are refused by the one bounded CBOR decoder first.
        cada_protocol::cbor::decode_value("COSE_Key", bytes, 1024)
            .map_err(|e| WebError::Key(e.to_string()))?;
        let key = CoseKey::from_slice(bytes).map_err(|e| WebError::Key(format!("{e:?}")))?;
        let param = |label: i64| -> Option<&ciborium::Value> {
            key.params
                .iter()
                .find(|(l, _)| *l == Label::Int(label))
                .map(|(_, v)| v)
        };
        let bytes_of = |label: i64, what: &str| -> Result<Vec<u8>, WebError> {
            match param(label) {
                Some(ciborium::Value::Bytes(b)) if b.len() == 32 => Ok(b.clone()),
                Some(_) => Err(WebError::Key(format!("{what} is not 32 bytes"))),
                None => Err(WebError::Key(format!("{what} is missing"))),
            }
        };
        let crv = match param(-1) {
            Some(ciborium::Value::Integer(i)) => i64::try_from(*i).ok(),
            _ => None,
        };
        let alg = match &key.alg {
            Some(coset::Algorithm::Assigned(a)) => Some(*a),
            _ => None,
        };
        let (alg, raw) = match (&key.kty, alg, crv) {
            (KeyType::Assigned(iana::KeyType::EC2), Some(iana::Algorithm::ES256), Some(c))
                if c == iana::EllipticCurve::P_256.to_i64() =>
            {
                let x = bytes_of(-2, "x")?;
                let y = bytes_of(-3, "y")?;
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                (Alg::Es256, point)
            }
            (KeyType::Assigned(iana::KeyType::OKP), Some(iana::Algorithm::EdDSA), Some(c))
                if c == iana::EllipticCurve::Ed25519.to_i64() =>
            {
                (Alg::EdDsa, bytes_of(-2, "x")?)
            }
            _ => {
                return Err(WebError::Key(
                    "only ES256 (EC2, P-256) and EdDSA (OKP, Ed25519) keys with their alg \
                     are taken"
                        .into(),
                ))
            }
        };
        signature::ParsedPublicKey::new(alg.verification(), &raw)
            .map_err(|e| WebError::Key(format!("the public key does not parse: {e}")))?;
        Ok(Self { alg, raw })
    }

    /// Verifies `sig` over `msg`.
    ///
    /// # Errors
    /// [`WebError::Signature`].
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), WebError> {
        signature::UnparsedPublicKey::new(self.alg.verification(), &self.raw)
            .verify(msg, sig)
            .map_err(|_| WebError::Signature)
    }
}

/// Which ceremony a clientDataJSON belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    /// Registration (`webauthn.create`).
    Create,
    /// Assertion (`webauthn.get`).
    Get,
}

impl Ceremony {
    fn type_name(self) -> &'static str {
        match self {
            Self::Create => "webauthn.create",
            Self::Get => "webauthn.get",
        }
    }
}

#[derive(Deserialize)]
struct RawClientData {
    #[serde(rename = "type")]
    typ: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: Option<bool>,
    #[serde(rename = "topOrigin", default)]
    top_origin: Option<String>,
}

/// Checks clientDataJSON (§7.1 steps 7–10, §7.2 steps 11–14): its type, origin (exactly the
/// public origin) and crossOrigin (absent or false, no topOrigin), and returns the
/// challenge it carries, for the caller to take (single use) from its store.
///
/// # Errors
/// The `webauthn.*` refusal that applies.
pub fn check_client_data(
    rp: &RelyingParty,
    ceremony: Ceremony,
    client_data_json: &[u8],
) -> Result<[u8; CHALLENGE_LEN], WebError> {
    if client_data_json.len() > MAX_CLIENT_DATA {
        return Err(WebError::ClientData(format!(
            "{} bytes, at most {MAX_CLIENT_DATA}",
            client_data_json.len()
        )));
    }
    let cd: RawClientData = serde_json::from_slice(client_data_json)
        .map_err(|e| WebError::ClientData(e.to_string()))?;
    if cd.typ != ceremony.type_name() {
        return Err(WebError::Type {
            expected: ceremony.type_name(),
            got: cd.typ,
        });
    }
    if cd.origin != rp.origin {
        return Err(WebError::Origin {
            expected: rp.origin.clone(),
            got: cd.origin,
        });
    }
    if cd.cross_origin == Some(true) || cd.top_origin.is_some() {
        return Err(WebError::CrossOrigin);
    }
    let challenge = URL_SAFE_NO_PAD
        .decode(cd.challenge.as_bytes())
        .map_err(|_| WebError::Challenge("the challenge is not base64url".into()))?;
    <[u8; CHALLENGE_LEN]>::try_from(challenge.as_slice())
        .map_err(|_| WebError::Challenge("the challenge is not one of this page's".into()))
}

/// authenticatorData, parsed (§6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthData {
    /// The flags byte.
    pub flags: u8,
    /// The signature counter.
    pub sign_count: u32,
    /// The attested credential (registrations only).
    pub credential: Option<AttestedCredential>,
}

impl AuthData {
    /// Whether the credential may be backed up (synced).
    #[must_use]
    pub fn backup_eligible(&self) -> bool {
        self.flags & FLAG_BE != 0
    }
}

/// The attested credential data of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    /// The authenticator model (zero under `none` attestation).
    pub aaguid: [u8; 16],
    /// The credential id.
    pub id: Vec<u8>,
    /// The COSE_Key bytes as the authenticator sent them.
    pub cose_key: Vec<u8>,
    /// The key, parsed.
    pub key: CredentialKey,
}

fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], WebError> {
    if rest.len() < n {
        return Err(WebError::AuthData(format!("truncated in {what}")));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Parses authenticatorData and checks the rp id hash and the flags: UP and UV required,
/// BS only with BE, AT exactly when `ceremony` is `Create`.
///
/// # Errors
/// The `webauthn.*` refusal that applies.
pub fn check_auth_data(
    rp: &RelyingParty,
    ceremony: Ceremony,
    bytes: &[u8],
) -> Result<AuthData, WebError> {
    if bytes.len() > MAX_AUTH_DATA {
        return Err(WebError::AuthData(format!(
            "{} bytes, at most {MAX_AUTH_DATA}",
            bytes.len()
        )));
    }
    let mut rest = bytes;
    let rp_hash = take(&mut rest, 32, "rpIdHash")?;
    let flags = take(&mut rest, 1, "flags")?[0];
    let count = take(&mut rest, 4, "signCount")?;
    let sign_count = u32::from_be_bytes([count[0], count[1], count[2], count[3]]);
    if rp_hash != digest::digest(&digest::SHA256, rp.id.as_bytes()).as_ref() {
        return Err(WebError::RpId(rp.id.clone()));
    }
    if flags & FLAG_UP == 0 {
        return Err(WebError::UserPresent);
    }
    if flags & FLAG_UV == 0 {
        return Err(WebError::UserVerified);
    }
    if flags & FLAG_BS != 0 && flags & FLAG_BE == 0 {
        return Err(WebError::AuthData(
            "backup state set on a credential that is not backup eligible".into(),
        ));
    }
    let credential = match (ceremony, flags & FLAG_AT != 0) {
        (Ceremony::Create, true) => {
            let aaguid = take(&mut rest, 16, "aaguid")?;
            let len = take(&mut rest, 2, "credentialIdLength")?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            if len == 0 || len > MAX_CREDENTIAL_ID {
                return Err(WebError::AuthData(format!(
                    "credential id of {len} bytes (1..={MAX_CREDENTIAL_ID})"
                )));
            }
            let id = take(&mut rest, len, "credentialId")?.to_vec();
            // The COSE_Key is one CBOR item; the extensions (if ED) follow it.
            let before = rest;
            let _: ciborium::Value = ciborium::de::from_reader_with_recursion_limit(
                &mut rest,
                cada_protocol::cbor::MAX_DEPTH,
            )
            .map_err(|e| WebError::Key(format!("credentialPublicKey: {e}")))?;
            let used = before.len() - rest.len();
            let cose_key = before[..used].to_vec();
            let key = CredentialKey::from_cose(&cose_key)?;
            let mut aa = [0u8; 16];
            aa.copy_from_slice(aaguid);
            Some(AttestedCredential {
                aaguid: aa,
                id,
                cose_key,
                key,
            })
        }
        (Ceremony::Create, false) => {
            return Err(WebError::AuthData(
                "a registration without attested credential data".into(),
            ))
        }
        (Ceremony::Get, true) => {
            return Err(WebError::AuthData(
                "an assertion with attested credential data".into(),
            ))
        }
        (Ceremony::Get, false) => None,
    };
    if flags & FLAG_ED != 0 {
        let ext = cada_protocol::cbor::decode_value("extensions", rest, MAX_AUTH_DATA)
            .map_err(|e| WebError::AuthData(e.to_string()))?;
        if !ext.is_map() {
            return Err(WebError::AuthData("extensions are not a map".into()));
        }
    } else if !rest.is_empty() {
        return Err(WebError::AuthData(format!("{} trailing bytes", rest.len())));
    }
    Ok(AuthData {
        flags,
        sign_count,
        credential,
    })
}

/// A registration's outcome: the new credential to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The authenticator data (flags, counter, the credential).
    pub auth_data: AuthData,
    /// The attestation format the browser sent (not verified).
    pub fmt: String,
}

impl Registered {
    /// The attested credential (always present after [`check_registration`]).
    #[must_use]
    pub fn credential(&self) -> Option<&AttestedCredential> {
        self.auth_data.credential.as_ref()
    }
}

/// Checks an attestation object (§7.1 steps 11–21 without attestation verification): the
/// CBOR map `{fmt, attStmt, authData}`, then authData as [`check_auth_data`] does. The
/// caller has checked clientDataJSON and taken its challenge.
///
/// # Errors
/// The `webauthn.*` refusal that applies.
pub fn check_registration(
    rp: &RelyingParty,
    attestation_object: &[u8],
) -> Result<Registered, WebError> {
    let value = cada_protocol::cbor::decode_value(
        "attestation object",
        attestation_object,
        MAX_ATTESTATION_OBJECT,
    )
    .map_err(|e| WebError::Attestation(e.to_string()))?;
    let ciborium::Value::Map(entries) = value else {
        return Err(WebError::Attestation("not a CBOR map".into()));
    };
    let mut fmt = None;
    let mut auth_data = None;
    let mut att_stmt = false;
    for (k, v) in entries {
        match (k.as_text(), v) {
            (Some("fmt"), ciborium::Value::Text(t)) if !t.is_empty() && t.len() <= 32 => {
                fmt = Some(t);
            }
            (Some("authData"), ciborium::Value::Bytes(b)) => auth_data = Some(b),
            (Some("attStmt"), ciborium::Value::Map(_)) => att_stmt = true,
            (Some(k), _) => {
                return Err(WebError::Attestation(format!(
                    "member {k:?} is not expected or of the wrong type"
                )))
            }
            (None, _) => return Err(WebError::Attestation("a non-text key".into())),
        }
    }
    let (Some(fmt), Some(auth_data), true) = (fmt, auth_data, att_stmt) else {
        return Err(WebError::Attestation(
            "fmt, attStmt and authData are required".into(),
        ));
    };
    let auth_data = check_auth_data(rp, Ceremony::Create, &auth_data)?;
    Ok(Registered { auth_data, fmt })
}

/// Checks an assertion's authenticatorData and signature (§7.2 steps 15–21) against a
/// registered key, and the counter against the stored one: when either is non-zero the new
/// one must be greater (else a cloned authenticator: refused). Returns the new counter.
///
/// # Errors
/// The `webauthn.*` refusal that applies.
pub fn check_assertion(
    rp: &RelyingParty,
    key: &CredentialKey,
    stored_count: u32,
    client_data_json: &[u8],
    authenticator_data: &[u8],
    sig: &[u8],
) -> Result<u32, WebError> {
    if sig.len() > MAX_SIGNATURE {
        return Err(WebError::Signature);
    }
    let ad = check_auth_data(rp, Ceremony::Get, authenticator_data)?;
    let mut msg = Vec::with_capacity(authenticator_data.len() + 32);
    msg.extend_from_slice(authenticator_data);
    msg.extend_from_slice(digest::digest(&digest::SHA256, client_data_json).as_ref());
    key.verify(&msg, sig)?;
    if (stored_count != 0 || ad.sign_count != 0) && ad.sign_count <= stored_count {
        return Err(WebError::SignCount {
            stored: stored_count,
            got: ad.sign_count,
        });
    }
    Ok(ad.sign_count)
}

#[cfg(test)]
pub(crate) mod tests {
    //! A software authenticator (ES256 and Ed25519) that builds the bytes a browser would.
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
    use coset::CoseKeyBuilder;

    pub(crate) struct SoftKey {
        pub alg: Alg,
        es: Option<EcdsaKeyPair>,
        ed: Option<Ed25519KeyPair>,
        pub id: Vec<u8>,
        pub count: u32,
        pub flags: u8,
    }

    impl SoftKey {
        pub fn new(alg: Alg) -> Self {
            let rng = SystemRandom::new();
            let (es, ed) = match alg {
                Alg::Es256 => {
                    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        &rng,
                    )
                    .unwrap();
                    (
                        Some(
                            EcdsaKeyPair::from_pkcs8(
                                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                                pkcs8.as_ref(),
                            )
                            .unwrap(),
                        ),
                        None,
                    )
                }
                Alg::EdDsa => (None, Some(Ed25519KeyPair::generate().unwrap())),
            };
            Self {
                alg,
                es,
                ed,
                id: vec![7; 16],
                count: 0,
                flags: FLAG_UP | FLAG_UV,
            }
        }

        pub fn cose(&self) -> Vec<u8> {
            match self.alg {
                Alg::Es256 => {
                    let p = self.es.as_ref().unwrap().public_key().as_ref().to_vec();
                    CoseKeyBuilder::new_ec2_pub_key(
                        iana::EllipticCurve::P_256,
                        p[1..33].to_vec(),
                        p[33..65].to_vec(),
                    )
                    .algorithm(iana::Algorithm::ES256)
                    .build()
                    .to_vec()
                    .unwrap()
                }
                Alg::EdDsa => {
                    let p = self.ed.as_ref().unwrap().public_key().as_ref().to_vec();
                    CoseKeyBuilder::new_okp_key()
                        .param(-1, ciborium::Value::from(6))
                        .param(-2, ciborium::Value::Bytes(p))
                        .algorithm(iana::Algorithm::EdDSA)
                        .build()
                        .to_vec()
                        .unwrap()
                }
            }
        }

        pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
            match self.alg {
                Alg::Es256 => self
                    .es
                    .as_ref()
                    .unwrap()
                    .sign(&SystemRandom::new(), msg)
                    .unwrap()
                    .as_ref()
                    .to_vec(),
                Alg::EdDsa => self.ed.as_ref().unwrap().sign(msg).as_ref().to_vec(),
            }
        }

        pub fn auth_data(&self, rp_id: &str, attested: bool) -> Vec<u8> {
            let mut ad = digest::digest(&digest::SHA256, rp_id.as_bytes())
                .as_ref()
                .to_vec();
            ad.push(self.flags | if attested { FLAG_AT } else { 0 });
            ad.extend_from_slice(&self.count.to_be_bytes());
            if attested {
                ad.extend_from_slice(&[0; 16]);
                ad.extend_from_slice(&u16::try_from(self.id.len()).unwrap().to_be_bytes());
                ad.extend_from_slice(&self.id);
                ad.extend_from_slice(&self.cose());
            }
            ad
        }

        pub fn attestation_object(&self, rp_id: &str) -> Vec<u8> {
            let v = ciborium::Value::Map(vec![
                ("fmt".into(), "none".into()),
                ("attStmt".into(), ciborium::Value::Map(vec![])),
                (
                    "authData".into(),
                    ciborium::Value::Bytes(self.auth_data(rp_id, true)),
                ),
            ]);
            let mut out = Vec::new();
            ciborium::ser::into_writer(&v, &mut out).unwrap();
            out
        }

        /// clientDataJSON, authenticatorData and signature of an assertion.
        pub fn assert(
            &mut self,
            rp_id: &str,
            origin: &str,
            challenge: &[u8],
        ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
            self.count += 1;
            let cd = client_data("webauthn.get", challenge, origin);
            let ad = self.auth_data(rp_id, false);
            let mut msg = ad.clone();
            msg.extend_from_slice(digest::digest(&digest::SHA256, &cd).as_ref());
            let sig = self.sign(&msg);
            (cd, ad, sig)
        }
    }

    pub(crate) fn client_data(typ: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "type": typ,
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "origin": origin,
            "crossOrigin": false
        }))
        .unwrap()
    }

    fn rp() -> RelyingParty {
        RelyingParty::from_public_url("http://localhost:8470").unwrap()
    }

    #[test]
    fn the_public_url_gives_rp_id_and_origin() {
        let rp = rp();
        assert_eq!(rp.id(), "localhost");
        assert_eq!(rp.origin(), "http://localhost:8470");
        assert_eq!(rp.host(), "localhost:8470");
        assert!(!rp.secure());
        assert_eq!(rp.base(), "");
        let rp = RelyingParty::from_public_url("https://approve.example.com/").unwrap();
        assert_eq!(rp.id(), "approve.example.com");
        assert_eq!(rp.origin(), "https://approve.example.com");
        assert!(rp.secure());
        let rp = RelyingParty::from_public_url("https://owner.example:8443/approval/").unwrap();
        assert_eq!(rp.origin(), "https://owner.example:8443");
        assert_eq!(rp.host(), "owner.example:8443");
        assert_eq!(rp.base(), "/approval");
    }

    #[test]
    fn an_ip_literal_public_url_is_refused() {
        for u in [
            "http://127.0.0.1:8470",
            "https://[::1]:8470",
            "https://10.0.0.1",
        ] {
            let e = RelyingParty::from_public_url(u).unwrap_err();
            assert_eq!(e.code(), "web.public_url", "{u}");
            assert!(e.to_string().contains("IP address"), "{u}: {e}");
        }
        // Other spellings of an address are not in normal form.
        let e = RelyingParty::from_public_url("https://0x7f.1/").unwrap_err();
        assert_eq!(e.code(), "web.public_url");
    }

    #[test]
    fn plain_http_is_refused_off_localhost_and_paths_are_refused() {
        for u in [
            "http://approve.example.com",
            "ftp://localhost",
            "https://localhost/?x=1",
            "https://localhost/a#b",
            "https://localhost/a%2Fb",
            "https://localhost/a//b",
            "https://localhost/a/%2e%2e/b",
            "https://localhost/<x>",
            "https://user@localhost/",
            "https://Approve.Example.com/",
        ] {
            assert_eq!(
                RelyingParty::from_public_url(u).unwrap_err().code(),
                "web.public_url",
                "{u}"
            );
        }
    }

    #[test]
    fn registration_and_assertion_verify_for_both_algorithms() {
        let rp = rp();
        for alg in [Alg::Es256, Alg::EdDsa] {
            let mut k = SoftKey::new(alg);
            let reg = check_registration(&rp, &k.attestation_object("localhost")).unwrap();
            let cred = reg.credential().unwrap();
            assert_eq!(cred.id, k.id);
            assert_eq!(cred.key.alg, alg);
            assert_eq!(reg.fmt, "none");
            let challenge = [9u8; CHALLENGE_LEN];
            let (cd, ad, sig) = k.assert("localhost", "http://localhost:8470", &challenge);
            assert_eq!(
                check_client_data(&rp, Ceremony::Get, &cd).unwrap(),
                challenge
            );
            assert_eq!(
                check_assertion(&rp, &cred.key, 0, &cd, &ad, &sig).unwrap(),
                1
            );
            // A flipped byte of the signed data: refused.
            let mut bad = ad.clone();
            bad[36] ^= 1;
            assert_eq!(
                check_assertion(&rp, &cred.key, 0, &cd, &bad, &sig)
                    .unwrap_err()
                    .code(),
                "webauthn.signature"
            );
        }
    }

    #[test]
    fn a_counter_that_does_not_increase_is_refused() {
        let rp = rp();
        let mut k = SoftKey::new(Alg::Es256);
        let key = CredentialKey::from_cose(&k.cose()).unwrap();
        k.count = 4; // assert() makes it 5
        let (cd, ad, sig) = k.assert("localhost", rp.origin(), &[1; 32]);
        assert_eq!(check_assertion(&rp, &key, 4, &cd, &ad, &sig).unwrap(), 5);
        let e = check_assertion(&rp, &key, 5, &cd, &ad, &sig).unwrap_err();
        assert_eq!(e.code(), "webauthn.sign_count");
        let e = check_assertion(&rp, &key, 9, &cd, &ad, &sig).unwrap_err();
        assert_eq!(e.code(), "webauthn.sign_count");
        // An authenticator without a counter (always 0) is accepted.
        k.count = 0;
        let cd = client_data("webauthn.get", &[1; 32], rp.origin());
        let ad = k.auth_data("localhost", false);
        let mut msg = ad.clone();
        msg.extend_from_slice(digest::digest(&digest::SHA256, &cd).as_ref());
        let sig = k.sign(&msg);
        assert_eq!(check_assertion(&rp, &key, 0, &cd, &ad, &sig).unwrap(), 0);
    }

    #[test]
    fn client_data_is_checked() {
        let rp = rp();
        let ch = [3u8; CHALLENGE_LEN];
        let ok = client_data("webauthn.create", &ch, "http://localhost:8470");
        assert_eq!(check_client_data(&rp, Ceremony::Create, &ok).unwrap(), ch);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                client_data("webauthn.get", &ch, "http://localhost:8470"),
                "webauthn.type",
            ),
            (
                client_data("webauthn.create", &ch, "http://localhost:8471"),
                "webauthn.origin",
            ),
            (
                client_data("webauthn.create", &ch, "http://evil.localhost:8470"),
                "webauthn.origin",
            ),
            (
                client_data("webauthn.create", &[3; 16], "http://localhost:8470"),
                "webauthn.challenge",
            ),
            (
                br#"{"type":"webauthn.create","challenge":"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM","origin":"http://localhost:8470","crossOrigin":true}"#.to_vec(),
                "webauthn.cross_origin",
            ),
            (
                br#"{"type":"webauthn.create","challenge":"AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM","origin":"http://localhost:8470","topOrigin":"https://evil.example"}"#.to_vec(),
                "webauthn.cross_origin",
            ),
            (
                br#"{"type":"webauthn.create","type":"webauthn.create","challenge":"","origin":""}"#.to_vec(),
                "webauthn.client_data",
            ),
            (b"not json".to_vec(), "webauthn.client_data"),
            (vec![b' '; MAX_CLIENT_DATA + 1], "webauthn.client_data"),
        ];
        for (cd, code) in cases {
            assert_eq!(
                check_client_data(&rp, Ceremony::Create, &cd)
                    .unwrap_err()
                    .code(),
                code,
                "{}",
                String::from_utf8_lossy(&cd)
            );
        }
    }

    #[test]
    fn flags_and_rp_id_hash_are_checked() {
        let rp = rp();
        let mut k = SoftKey::new(Alg::EdDsa);
        let ao = |k: &SoftKey, rp_id: &str| k.attestation_object(rp_id);
        assert_eq!(
            check_registration(&rp, &ao(&k, "evil.example"))
                .unwrap_err()
                .code(),
            "webauthn.rp_id"
        );
        k.flags = FLAG_UP;
        assert_eq!(
            check_registration(&rp, &ao(&k, "localhost"))
                .unwrap_err()
                .code(),
            "webauthn.user_verified"
        );
        k.flags = FLAG_UV;
        assert_eq!(
            check_registration(&rp, &ao(&k, "localhost"))
                .unwrap_err()
                .code(),
            "webauthn.user_present"
        );
        k.flags = FLAG_UP | FLAG_UV | FLAG_BS;
        assert_eq!(
            check_registration(&rp, &ao(&k, "localhost"))
                .unwrap_err()
                .code(),
            "webauthn.auth_data"
        );
        k.flags = FLAG_UP | FLAG_UV | FLAG_BE | FLAG_BS;
        assert!(check_registration(&rp, &ao(&k, "localhost")).is_ok());
    }

    #[test]
    fn malformed_attestation_objects_and_auth_data_are_refused_without_panic() {
        let rp = rp();
        let k = SoftKey::new(Alg::Es256);
        let good = k.auth_data("localhost", true);
        // Every truncation of the authenticator data.
        for n in 0..good.len() {
            let r = check_auth_data(&rp, Ceremony::Create, &good[..n]);
            assert!(r.is_err(), "truncated at {n}");
        }
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            check_auth_data(&rp, Ceremony::Create, &long)
                .unwrap_err()
                .code(),
            "webauthn.auth_data"
        );
        // An attested credential in an assertion.
        assert_eq!(
            check_auth_data(&rp, Ceremony::Get, &good)
                .unwrap_err()
                .code(),
            "webauthn.auth_data"
        );
        // Not a map, missing members, oversize.
        for bad in [
            vec![0x80],
            vec![0xa0],
            vec![0xff; MAX_ATTESTATION_OBJECT + 1],
        ] {
            assert_eq!(
                check_registration(&rp, &bad).unwrap_err().code(),
                "webauthn.attestation"
            );
        }
        // Every single-byte corruption of a good attestation object fails cleanly or passes.
        let ao = k.attestation_object("localhost");
        for i in 0..ao.len() {
            let mut b = ao.clone();
            b[i] ^= 0x55;
            let _ = check_registration(&rp, &b);
        }
    }

    #[test]
    fn unsupported_and_malformed_keys_are_refused() {
        // RS256-like EC2 with a wrong alg, P-384, a 31-byte x, an off-curve point.
        let p256_xy = |x: Vec<u8>, y: Vec<u8>, alg: iana::Algorithm| {
            CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, x, y)
                .algorithm(alg)
                .build()
                .to_vec()
                .unwrap()
        };
        for bytes in [
            p256_xy(vec![1; 32], vec![2; 32], iana::Algorithm::ES384),
            p256_xy(vec![1; 31], vec![2; 32], iana::Algorithm::ES256),
            p256_xy(vec![1; 32], vec![2; 32], iana::Algorithm::ES256),
            CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_384, vec![1; 48], vec![2; 48])
                .algorithm(iana::Algorithm::ES384)
                .build()
                .to_vec()
                .unwrap(),
            CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, vec![1; 32], vec![2; 32])
                .build()
                .to_vec()
                .unwrap(),
            vec![0xa1, 0x01, 0x02, 0x01, 0x02],
        ] {
            assert_eq!(
                CredentialKey::from_cose(&bytes).unwrap_err().code(),
                "webauthn.key"
            );
        }
    }
}
