//! The one decision, `Verifier::decide`, driven by structure-aware mutations of a valid
//! request: evidence and CB-PoP proofs that the policy admits, then edited.
//!
//! Setup (once): three fixed keys (Ed25519, ES256, ES384), each bound by emulator evidence
//! (`pop_setup`: an unsigned Nitro-format document as QEMU's emulated NSM makes, accepted
//! through `VerifierOptions::insecure_emulator`; the `sim` platform's CA-signed documents
//! would need `cada-enclave` in this build and a P-384 chain check per input, and evidence
//! signatures are fuzzed by `nitro_document`), and a policy whose one audience
//! (`https://api.example/v1`) admits their PCR0 and whose context rule allows
//! `tenant = a | b`. Each input gets a fresh `Verifier` and fresh in-memory stores, then makes
//! one to four calls. Each call chooses: the signing key and the header `jwk`; edits of
//! header fields and claims (`typ`, `alg`, `jwk`, `crit`, `htm`, `htu`, `iat`, `exp`, `jti`,
//! `ath`, `nonce`, `cada.*`, extra members) before signing; byte edits of the signature or
//! of the whole compact JWS after signing; the evidence sent (none, another key's, or edited
//! bytes); the request method and URL, an access token, the decision time, and whether to
//! reuse the first call's `jti` or repeat the same request.
//!
//! Oracles: (a) no panic; (b) an accepted decision is one the rules allow: the JWS is exactly
//! what a key signed, that key is the accepted one and was bound by evidence sent in this
//! input (naming the accepted `cada.att`, with the admitted PCR0), method and URL are the
//! request's and inside the audience, `iat`/`exp` are inside the window at millisecond
//! resolution, evidence is not expired, `ath` and `ctx` satisfy the rules, and no
//! `(key, jti)` is accepted twice (a repeated request is `pop.replay`); (c) every refusal's
//! code is listed by `RULES` for the rule it names. An untouched first call is accepted, so
//! the harness reaches every rule.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cada_attestation_verifier::decide::{Decision, Refusal, Request, Stores, RULES};
use cada_attestation_verifier::nonce::NonceIssuer;
use cada_attestation_verifier::pop::normalize_htu;
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
use cada_fuzz::pop_setup::{envelope_for, signers, Signer, EVIDENCE_AT_MS, METHOD, URL};
use cada_protocol::b64;
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::token::{self, MAX_LIFETIME_SECS};
use cada_protocol::url::{HttpUrl, UrlPrefix};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const AUDIENCE: &str = "https://api.example/v1";
const SKEW_SECS: u64 = 10;
const MAX_AGE_SECS: u64 = 3600;
/// The decision time of an untouched call: a minute after the evidence was made.
const NOW_MS: u64 = EVIDENCE_AT_MS + 60_000;

struct Key {
    signer: Signer,
    jwk: Value,
    jkt: String,
    env: EvidenceEnvelope,
    att: String,
}

struct Setup {
    keys: Vec<Key>,
    policy: Policy,
    prefix: UrlPrefix,
    nonces: NonceIssuer,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let keys = signers()
            .into_iter()
            .map(|signer| {
                let jwk = signer.jwk();
                let env = envelope_for(&jwk);
                Key {
                    jwk: serde_json::to_value(&jwk).expect("JWK to JSON"),
                    jkt: jwk.thumbprint(),
                    att: env.att_digest(),
                    env,
                    signer,
                }
            })
            .collect();
        let policy = Policy::from_toml(
            &format!(
                "[evidence]\nmax_age_secs = {MAX_AGE_SECS}\n[token]\nskew_secs = {SKEW_SECS}\n\
                 [context]\nallowed = {{ tenant = [\"a\", \"b\"] }}\n\
                 [[audience]]\nprefix = \"{AUDIENCE}\"\nmeasurements = [{{ PCR0 = \"{}\" }}]\n",
                "01".repeat(48)
            ),
            std::path::Path::new("."),
            "fuzz-decide",
        )
        .expect("the fuzz policy loads");
        Setup {
            keys,
            policy,
            prefix: UrlPrefix::parse(AUDIENCE).expect("audience prefix"),
            nonces: NonceIssuer::new(&[9u8; 32]),
        }
    })
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum KeyChoice {
    Ed25519,
    Es256,
    Es384,
}

impl KeyChoice {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Arbitrary, Debug, Clone)]
enum Edit {
    Remove,
    Str(String),
    Int(i64),
    Delta(i32),
    Null,
    Bool(bool),
    Object,
    Array,
}

#[derive(Arbitrary, Debug)]
enum HeaderField {
    Typ,
    Alg,
    Kid,
    Crit,
    Jwk,
    JwkKty,
    JwkCrv,
    JwkX,
    JwkY,
    Extra(String),
}

#[derive(Arbitrary, Debug)]
enum ClaimField {
    Jti,
    Htm,
    Htu,
    Iat,
    Exp,
    Ath,
    Nonce,
    Cada,
    Att,
    Ctx,
    Tenant,
    Seq,
    Chain,
    Extra(String),
}

#[derive(Arbitrary, Debug)]
enum ByteOp {
    Flip { at: u16, xor: u8 },
    Truncate(u16),
    Extend(Vec<u8>),
    Insert { at: u16, byte: u8 },
    Remove(u16),
}

impl ByteOp {
    fn apply(&self, b: &mut Vec<u8>) {
        let pos = |at: u16, len: usize| usize::from(at) % len.max(1);
        match self {
            ByteOp::Flip { at, xor } if !b.is_empty() => {
                let i = pos(*at, b.len());
                b[i] ^= xor;
            }
            ByteOp::Truncate(n) => b.truncate(pos(*n, b.len())),
            ByteOp::Extend(x) => b.extend(x.iter().take(64)),
            ByteOp::Insert { at, byte } => {
                let i = pos(*at, b.len() + 1);
                b.insert(i, *byte);
            }
            ByteOp::Remove(at) if !b.is_empty() => {
                let i = pos(*at, b.len());
                b.remove(i);
            }
            _ => {}
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Part {
    Signature,
    Whole,
}

#[derive(Arbitrary, Debug)]
enum Evidence {
    /// The signing key's own envelope.
    Own,
    Absent,
    OfKey(KeyChoice),
    Encoded(Vec<ByteOp>),
    Document(ByteOp),
    Binding(ByteOp),
    Nonce(Vec<u8>),
    Certs(Vec<Vec<u8>>),
    Platform(u8),
}

#[derive(Arbitrary, Debug)]
enum JwtId {
    /// `jti-<call number>`.
    Fresh,
    /// The first call's `jti` (a replay when the key is the same).
    First,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum UrlChoice {
    Same,
    Other(String),
    Upper,
    Fragment,
    DefaultPort,
    Query(String),
    Path(String),
}

#[derive(Arbitrary, Debug)]
struct Call {
    signer: KeyChoice,
    jwk_of: Option<KeyChoice>,
    header: Vec<(HeaderField, Edit)>,
    claims: Vec<(ClaimField, Edit)>,
    bytes: Vec<(Part, ByteOp)>,
    evidence: Evidence,
    jti: JwtId,
    method: Option<String>,
    url: UrlChoice,
    access_token: Option<String>,
    now_shift_ms: i32,
    again: bool,
}

impl Call {
    fn untouched(&self) -> bool {
        matches!(self.signer, KeyChoice::Ed25519)
            && self.jwk_of.is_none()
            && self.header.is_empty()
            && self.claims.is_empty()
            && self.bytes.is_empty()
            && matches!(self.evidence, Evidence::Own)
            && matches!(self.jti, JwtId::Fresh)
            && self.method.is_none()
            && matches!(self.url, UrlChoice::Same)
            && self.now_shift_ms == 0
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    first: Call,
    more: Vec<Call>,
}

fn apply(map: &mut Map<String, Value>, key: &str, edit: Edit) {
    let new = match edit {
        Edit::Remove => {
            map.remove(key);
            return;
        }
        Edit::Str(s) => json!(s),
        Edit::Int(n) => json!(n),
        Edit::Delta(d) => match map.get(key) {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(u) => json!(i128::from(u) + i128::from(d)),
                None => json!(d),
            },
            Some(Value::String(s)) => json!(format!("{s}{d}")),
            _ => json!(d),
        },
        Edit::Null => Value::Null,
        Edit::Bool(b) => json!(b),
        Edit::Object => json!({}),
        Edit::Array => json!([]),
    };
    map.insert(key.into(), new);
}

fn sub<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn request_url(choice: &UrlChoice) -> String {
    match choice {
        UrlChoice::Same => URL.into(),
        UrlChoice::Other(s) => s.clone(),
        UrlChoice::Upper => URL.replace("api.example", "API.example"),
        UrlChoice::Fragment => format!("{URL}#f"),
        UrlChoice::DefaultPort => URL.replace("api.example", "api.example:443"),
        UrlChoice::Query(q) => format!("https://api.example/v1/items?{q}"),
        UrlChoice::Path(p) => format!("https://api.example/v1/{p}"),
    }
}

/// Whether `code` is listed in a `RULES` entry (`x.*` covers every `x.` code).
fn listed(list: &str, code: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|p| match p.strip_suffix(".*") {
            Some(family) => code
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('.')),
            None => p == code,
        })
}

fn check_refusal(r: &Refusal) {
    let rule = r.rule();
    assert!(
        (1..=RULES.len()).contains(&rule),
        "rule {rule} of {r} is not in RULES"
    );
    assert!(
        listed(RULES[rule - 1].1, r.code()),
        "refusal {r} names rule {rule} ({:?}), which does not list {}",
        RULES[rule - 1],
        r.code()
    );
}

struct Made {
    compact: String,
    /// `header.payload` as signed and the signature bytes: what an untampered proof carries.
    signed_input: String,
    signature: Vec<u8>,
    signer_jkt: String,
}

fn make_proof(s: &Setup, call: &Call, index: usize) -> Made {
    let signer = &s.keys[call.signer.index()];
    let jwk_key = &s.keys[call.jwk_of.unwrap_or(call.signer).index()];
    let mut header = Map::new();
    header.insert("typ".into(), json!(token::TYP));
    header.insert("alg".into(), json!(signer.signer.alg().as_str()));
    header.insert("jwk".into(), jwk_key.jwk.clone());
    let iat = NOW_MS / 1000;
    let jti = match &call.jti {
        JwtId::Fresh => format!("jti-{index}"),
        JwtId::First => "jti-0".into(),
        JwtId::Other(s) => s.clone(),
    };
    let mut ctx = Map::new();
    ctx.insert("tenant".into(), json!("a"));
    let mut claims = Map::new();
    claims.insert("jti".into(), json!(jti));
    claims.insert("htm".into(), json!(METHOD));
    claims.insert("htu".into(), json!(URL));
    claims.insert("iat".into(), json!(iat));
    claims.insert("exp".into(), json!(iat + 20));
    if let Some(at) = &call.access_token {
        claims.insert("ath".into(), json!(token::access_token_hash(at)));
    }
    claims.insert(
        "cada".into(),
        json!({
            "att": jwk_key.att,
            "ctx": ctx,
            "seq": 1,
            "chain": b64::encode([0u8; 32]),
        }),
    );
    for (field, edit) in call.header.iter().take(6) {
        let edit = edit.clone();
        match field {
            HeaderField::Typ => apply(&mut header, "typ", edit),
            HeaderField::Alg => apply(&mut header, "alg", edit),
            HeaderField::Kid => apply(&mut header, "kid", edit),
            HeaderField::Crit => apply(&mut header, "crit", edit),
            HeaderField::Jwk => apply(&mut header, "jwk", edit),
            HeaderField::Extra(k) => apply(&mut header, k, edit),
            HeaderField::JwkKty | HeaderField::JwkCrv | HeaderField::JwkX | HeaderField::JwkY => {
                let name = match field {
                    HeaderField::JwkKty => "kty",
                    HeaderField::JwkCrv => "crv",
                    HeaderField::JwkX => "x",
                    _ => "y",
                };
                if let Some(jwk) = sub(&mut header, "jwk") {
                    apply(jwk, name, edit);
                }
            }
        }
    }
    for (field, edit) in call.claims.iter().take(6) {
        let edit = edit.clone();
        match field {
            ClaimField::Jti => apply(&mut claims, "jti", edit),
            ClaimField::Htm => apply(&mut claims, "htm", edit),
            ClaimField::Htu => apply(&mut claims, "htu", edit),
            ClaimField::Iat => apply(&mut claims, "iat", edit),
            ClaimField::Exp => apply(&mut claims, "exp", edit),
            ClaimField::Ath => apply(&mut claims, "ath", edit),
            ClaimField::Nonce => apply(&mut claims, "nonce", edit),
            ClaimField::Cada => apply(&mut claims, "cada", edit),
            ClaimField::Extra(k) => apply(&mut claims, k, edit),
            ClaimField::Att | ClaimField::Ctx | ClaimField::Seq | ClaimField::Chain => {
                let name = match field {
                    ClaimField::Att => "att",
                    ClaimField::Ctx => "ctx",
                    ClaimField::Seq => "seq",
                    _ => "chain",
                };
                if let Some(cada) = sub(&mut claims, "cada") {
                    apply(cada, name, edit);
                }
            }
            ClaimField::Tenant => {
                if let Some(ctx) = sub(&mut claims, "cada").and_then(|c| sub(c, "ctx")) {
                    apply(ctx, "tenant", edit);
                }
            }
        }
    }
    let signed_input = format!(
        "{}.{}",
        b64::encode(serde_json::to_vec(&header).expect("JSON")),
        b64::encode(serde_json::to_vec(&claims).expect("JSON"))
    );
    let signature = signer.signer.sign(signed_input.as_bytes());
    let mut sig = signature.clone();
    let mut whole_ops = Vec::new();
    for (part, op) in call.bytes.iter().take(6) {
        match part {
            Part::Signature => op.apply(&mut sig),
            Part::Whole => whole_ops.push(op),
        }
    }
    let mut compact = format!("{signed_input}.{}", b64::encode(&sig)).into_bytes();
    for op in whole_ops {
        op.apply(&mut compact);
    }
    Made {
        compact: String::from_utf8_lossy(&compact).into_owned(),
        signed_input,
        signature,
        signer_jkt: signer.jkt.clone(),
    }
}

fn evidence_for(s: &Setup, call: &Call) -> Option<EvidenceEnvelope> {
    let own = &s.keys[call.signer.index()].env;
    match &call.evidence {
        Evidence::Own => Some(own.clone()),
        Evidence::Absent => None,
        Evidence::OfKey(k) => Some(s.keys[k.index()].env.clone()),
        Evidence::Encoded(ops) => {
            let mut bytes = own.to_cbor();
            for op in ops.iter().take(6) {
                op.apply(&mut bytes);
            }
            EvidenceEnvelope::from_cbor(&bytes).ok()
        }
        Evidence::Document(op) => {
            let mut e = own.clone();
            op.apply(&mut e.document);
            Some(e)
        }
        Evidence::Binding(op) => {
            let mut e = own.clone();
            op.apply(&mut e.binding);
            Some(e)
        }
        Evidence::Nonce(n) => {
            let mut e = own.clone();
            e.nonce = n.iter().copied().take(128).collect();
            Some(e)
        }
        Evidence::Certs(c) => {
            let mut e = own.clone();
            e.certs = c
                .iter()
                .take(4)
                .map(|c| {
                    serde_bytes::ByteBuf::from(c.iter().copied().take(256).collect::<Vec<u8>>())
                })
                .collect();
            Some(e)
        }
        Evidence::Platform(p) => {
            let mut e = own.clone();
            e.platform = match p % 4 {
                0 => Platform::Nitro,
                1 => Platform::Sim,
                2 => Platform::SevSnp,
                _ => Platform::SimSnp,
            };
            Some(e)
        }
    }
}

fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let s = setup();
    let verifier = Verifier::new(
        s.policy.clone(),
        VerifierOptions {
            insecure_emulator: true,
        },
    );
    let replay = MemoryReplayStore::new(64);
    let stores = Stores {
        replay: &replay,
        nonces: Some(&s.nonces),
    };
    // (att, jkt) of every envelope sent so far, and (jkt, jti) of every accepted proof.
    let mut presented: BTreeSet<(String, String)> = BTreeSet::new();
    let mut accepted_ids: BTreeSet<(String, String)> = BTreeSet::new();
    let original_atts: BTreeMap<&str, ()> = s.keys.iter().map(|k| (k.att.as_str(), ())).collect();

    let calls = std::iter::once(&input.first).chain(input.more.iter().take(3));
    for (index, call) in calls.enumerate() {
        let now_ms = NOW_MS.saturating_add_signed(i64::from(call.now_shift_ms));
        let now = UnixTime::from_millis(now_ms);
        let made = make_proof(s, call, index);
        let evidence = evidence_for(s, call);
        if let Some(e) = &evidence {
            if let Ok(b) = KeyBinding::from_cbor(&e.binding) {
                presented.insert((e.att_digest(), b.jkt));
            }
        }
        let method = call.method.as_deref().unwrap_or(METHOD);
        let url = request_url(&call.url);
        let req = Request {
            method,
            url: &url,
            dpop: &made.compact,
            access_token: call.access_token.as_deref(),
            evidence: evidence.as_ref(),
            contract: None,
            body: None,
        };
        let decision = verifier.decide(&req, now, stores);
        let a = match &decision {
            Decision::Refuse(r) => {
                check_refusal(r);
                assert!(
                    !(index == 0 && call.untouched()),
                    "the untouched request was refused: {r}"
                );
                continue;
            }
            Decision::Accept(a) => a,
        };

        // (b) The proof is exactly what its key signed.
        let mut parts = made.compact.rsplitn(2, '.');
        let sig_text = parts.next().unwrap_or_default();
        let input_text = parts.next().unwrap_or_default();
        assert_eq!(
            input_text, made.signed_input,
            "a changed signing input was accepted"
        );
        let sig = b64::decode("signature", sig_text, 1024).expect("accepted signature decodes");
        assert_eq!(sig, made.signature, "a changed signature was accepted");
        assert_eq!(
            a.key.jkt, made.signer_jkt,
            "a key other than the signer's was accepted"
        );
        // … bound by evidence sent in this input, naming the accepted att.
        assert_eq!(
            a.key.att, a.claims.cada.att,
            "accepted under other evidence than named"
        );
        assert!(
            presented.contains(&(a.key.att.clone(), a.key.jkt.clone())),
            "accepted a key no evidence sent in this input binds"
        );
        assert_eq!(
            a.key.measurements.get("PCR0").map(String::as_str),
            Some("01".repeat(48).as_str()),
            "accepted measurements the audience does not allow"
        );
        if original_atts.contains_key(a.key.att.as_str()) {
            assert!(
                now_ms <= EVIDENCE_AT_MS + MAX_AGE_SECS * 1000,
                "accepted under expired evidence"
            );
            if evidence.is_some() {
                assert!(
                    now_ms + SKEW_SECS * 1000 >= EVIDENCE_AT_MS,
                    "accepted evidence from the future"
                );
            }
        }
        // Method and URL are the request's, and inside the audience.
        assert_eq!(a.claims.htm, method, "method mismatch accepted");
        let normalized = HttpUrl::parse_normalized(&url).expect("accepted URL parses");
        assert_eq!(
            normalize_htu(&a.claims.htu).ok(),
            normalize_htu(normalized.as_str()).ok(),
            "URL mismatch accepted"
        );
        assert!(
            s.prefix.matches(&normalized),
            "URL outside the audience accepted"
        );
        // Freshness at millisecond resolution.
        let skew_ms = SKEW_SECS * 1000;
        assert!(a.claims.exp > a.claims.iat && a.claims.exp - a.claims.iat <= MAX_LIFETIME_SECS);
        assert!(
            u128::from(a.claims.iat) * 1000 <= u128::from(now_ms) + u128::from(skew_ms),
            "proof from the future accepted"
        );
        assert!(
            u128::from(now_ms) <= u128::from(a.claims.exp) * 1000 + u128::from(skew_ms),
            "expired proof accepted"
        );
        assert!(!a.claims.jti.is_empty() && a.claims.jti.len() <= 128);
        if let Some(at) = &call.access_token {
            assert_eq!(
                a.claims.ath.as_deref(),
                Some(token::access_token_hash(at).as_str()),
                "ath mismatch accepted"
            );
        }
        if let Some(t) = a.claims.cada.ctx.get("tenant") {
            assert!(
                t == "a" || t == "b",
                "context value outside the rule accepted"
            );
        }
        // Replay: never twice the same (key, jti).
        assert!(
            accepted_ids.insert((a.key.jkt.clone(), a.claims.jti.clone())),
            "replay accepted: {}",
            a.claims.jti
        );
        if call.again {
            match verifier.decide(&req, now, stores) {
                Decision::Refuse(r) => assert_eq!(r.code(), "pop.replay", "{r}"),
                Decision::Accept(_) => panic!("the same request was accepted twice"),
            }
        }
    }
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("decide");
        let _ = setup();
    },
    |data: &[u8]| run(data)
);
