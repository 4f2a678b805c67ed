//! CB-PoP proofs: `cada_protocol::token::parse_compact`, then `PopVerifier::check` and
//! `verify` (signature, key binding, method, URL, freshness, jti, ath, nonce, ctx, replay).
//! Three fixed keys (Ed25519, ES256, ES384) are admitted at start-up through emulator
//! evidence, so well-signed proofs reach every check after the signature.
//!
//! Two modes, by the first byte:
//! * anything but `0xff`: the input is the compact token, checked against a fixed request.
//! * `0xff`: structure-aware. The rest chooses header and claims (any JSON shape), signs them
//!   with one of the keys, optionally damages the signature, and checks the proof against a
//!   chosen request. Oracles: a damaged signature never verifies; what verifies matches the
//!   request's method and URL and is fresh; the same proof never verifies twice.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use cada_attestation_verifier::evidence::EvidenceVerifier;
use cada_attestation_verifier::nitro::NitroVerifier;
use cada_attestation_verifier::pop::{
    normalize_htu, ContextPolicy, PopConfig, PopRequest, PopVerifier,
};
use cada_attestation_verifier::replay::MemoryReplayStore;
use cada_attestation_verifier::UnixTime;
use cada_fuzz::pop_setup::{envelope_for, signers, Signer, EVIDENCE_AT_MS, METHOD, URL};
use cada_protocol::{b64, token};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

struct Setup {
    verifier: PopVerifier,
    signers: Vec<Signer>,
    atts: Vec<String>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let evidence = EvidenceVerifier::new(
            NitroVerifier::default().insecure_accept_emulator_documents(),
            Default::default(),
        );
        let mut config = PopConfig {
            context: ContextPolicy::default(),
            ..PopConfig::default()
        };
        config
            .context
            .allowed_values
            .insert("tenant".into(), vec!["a".into(), "b".into()]);
        let verifier = PopVerifier::new(evidence, config);
        let signers = signers();
        let at = UnixTime::from_millis(EVIDENCE_AT_MS);
        let atts = signers
            .iter()
            .map(|s| {
                let env = envelope_for(&s.jwk());
                verifier
                    .admit_evidence(&env, at)
                    .expect("emulator evidence admits");
                env.att_digest()
            })
            .collect();
        Setup {
            verifier,
            signers,
            atts,
        }
    })
}

fn now() -> UnixTime {
    UnixTime::from_millis(EVIDENCE_AT_MS + 60_000)
}

fn raw(text: &str) {
    let _ = token::parse_compact(text);
    let s = setup();
    let req = PopRequest {
        method: METHOD,
        url: URL,
        ..PopRequest::default()
    };
    let _ = s.verifier.check(text, &req, now());
}

#[derive(Arbitrary, Debug)]
enum Text {
    Given,
    Other(String),
    Absent,
    Number(i64),
}

#[derive(Arbitrary, Debug)]
enum Sig {
    Keep,
    Flip(u8, u8),
    Truncate(u8),
    Empty,
    OtherKey,
}

#[derive(Arbitrary, Debug)]
struct Structured {
    key: u8,
    typ: Text,
    alg: Text,
    jwk_from: Option<u8>,
    jwk_extra: Option<String>,
    header_extra: Option<(String, String)>,
    jti: Text,
    htm: Text,
    htu: Text,
    iat_delta: i16,
    lifetime: i16,
    ath: Text,
    nonce: Text,
    att: Text,
    ctx: Vec<(String, String)>,
    seq: Text,
    claims_extra: Option<(String, String)>,
    sig: Sig,
    req_method: Option<String>,
    req_url: Option<String>,
    access_token: Option<String>,
    expected_nonce: Option<String>,
    now_delta: i16,
    twice: bool,
}

/// Unique default `jti`s, so that proofs of different runs are no replays of each other.
static JTI: AtomicU64 = AtomicU64::new(0);

impl Structured {
    /// Whether every choice is the default one: a proof exactly as the enclave makes it,
    /// for the request it names, checked at a time inside its lifetime.
    fn untouched(&self) -> bool {
        let given = |t: &Text| matches!(t, Text::Given);
        [
            &self.typ,
            &self.alg,
            &self.jti,
            &self.htm,
            &self.htu,
            &self.ath,
            &self.nonce,
            &self.att,
            &self.seq,
        ]
        .into_iter()
        .all(given)
            && self.jwk_from.is_none()
            && self.jwk_extra.is_none()
            && self.header_extra.is_none()
            && self.claims_extra.is_none()
            && self.ctx.is_empty()
            && matches!(self.sig, Sig::Keep)
            && self.req_method.is_none()
            && self.req_url.is_none()
            && self.access_token.is_none()
            && self.expected_nonce.is_none()
            && self.iat_delta == 0
            && self.lifetime == 0
            && self.now_delta == 0
    }
}

fn put(map: &mut Map<String, Value>, key: &str, t: Text, given: Value) {
    match t {
        Text::Given => {
            map.insert(key.into(), given);
        }
        Text::Other(s) => {
            map.insert(key.into(), Value::String(s));
        }
        Text::Number(n) => {
            map.insert(key.into(), json!(n));
        }
        Text::Absent => {}
    }
}

fn structured(data: &[u8]) {
    let Ok(input) = Structured::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let untouched = input.untouched();
    let s = setup();
    let k = usize::from(input.key) % s.signers.len();
    let signer = &s.signers[k];
    let jwk_signer = &s.signers[usize::from(input.jwk_from.unwrap_or(input.key)) % s.signers.len()];
    let mut jwk = serde_json::to_value(jwk_signer.jwk()).expect("jwk to JSON");
    if let (Some(extra), Value::Object(m)) = (input.jwk_extra, &mut jwk) {
        m.insert(extra, json!("x"));
    }
    let mut header = Map::new();
    put(&mut header, "typ", input.typ, json!(token::TYP));
    put(&mut header, "alg", input.alg, json!(signer.alg().as_str()));
    header.insert("jwk".into(), jwk);
    if let Some((k, v)) = input.header_extra {
        header.insert(k, json!(v));
    }
    let now_ms = now()
        .as_millis()
        .saturating_add_signed(i64::from(input.now_delta) * 1000);
    let now = UnixTime::from_millis(now_ms);
    let iat = now
        .as_secs()
        .saturating_add_signed(i64::from(input.iat_delta));
    // The default (0) is a 20-second lifetime, which is valid.
    let exp = iat.saturating_add_signed(20 + i64::from(input.lifetime));
    let access_token = input.access_token;
    let mut claims = Map::new();
    put(
        &mut claims,
        "jti",
        input.jti,
        json!(format!("fuzz-{}", JTI.fetch_add(1, Ordering::Relaxed))),
    );
    put(&mut claims, "htm", input.htm, json!(METHOD));
    put(&mut claims, "htu", input.htu, json!(URL));
    claims.insert("iat".into(), json!(iat));
    claims.insert("exp".into(), json!(exp));
    let ath = access_token.as_deref().map(token::access_token_hash);
    put(&mut claims, "ath", input.ath, json!(ath));
    put(
        &mut claims,
        "nonce",
        input.nonce,
        json!(input.expected_nonce),
    );
    let mut cada = Map::new();
    put(
        &mut cada,
        "att",
        input.att,
        json!(s.atts[usize::from(input.jwk_from.unwrap_or(input.key)) % s.atts.len()]),
    );
    if !input.ctx.is_empty() {
        cada.insert(
            "ctx".into(),
            json!(input
                .ctx
                .into_iter()
                .take(4)
                .collect::<std::collections::BTreeMap<_, _>>()),
        );
    }
    match input.seq {
        Text::Given => {
            cada.insert("seq".into(), json!(1));
        }
        other => put(&mut cada, "seq", other, json!(1)),
    }
    cada.insert("chain".into(), json!(b64::encode([0u8; 32])));
    claims.insert("cada".into(), Value::Object(cada));
    if let Some((k, v)) = input.claims_extra {
        claims.insert(k, json!(v));
    }
    let signing_input = format!(
        "{}.{}",
        b64::encode(serde_json::to_vec(&header).expect("JSON")),
        b64::encode(serde_json::to_vec(&claims).expect("JSON"))
    );
    let mut sig = signer.sign(signing_input.as_bytes());
    let damaged = match input.sig {
        Sig::Keep => false,
        Sig::Flip(p, x) => {
            let l = sig.len();
            sig[usize::from(p) % l] ^= x;
            x != 0
        }
        Sig::Truncate(n) => {
            let n = usize::from(n) % sig.len();
            sig.truncate(n);
            true
        }
        Sig::Empty => {
            sig.clear();
            true
        }
        Sig::OtherKey => {
            let other = &s.signers[(k + 1) % s.signers.len()];
            sig = other.sign(signing_input.as_bytes());
            true
        }
    };
    let compact = format!("{signing_input}.{}", b64::encode(&sig));
    let method = input.req_method.as_deref().unwrap_or(METHOD);
    let url = input.req_url.as_deref().unwrap_or(URL);
    let req = PopRequest {
        method,
        url,
        access_token: access_token.as_deref(),
        expected_nonce: input.expected_nonce.as_deref(),
        evidence: None,
    };
    // A fresh store per input: a shared one fills with live entries (time never advances
    // here) and then refuses every proof, failing closed, as it should.
    let replay = MemoryReplayStore::new(16);
    let result = s.verifier.verify(&compact, &req, &replay, now);
    // The harness must reach the checks after the signature: a proof made exactly as the
    // enclave makes it verifies.
    assert!(
        !untouched || result.is_ok(),
        "an unmodified proof failed: {result:?}"
    );
    if let Ok(p) = &result {
        assert!(!damaged, "a damaged signature verified");
        assert_eq!(p.claims.htm, method);
        assert_eq!(
            normalize_htu(&p.claims.htu).ok(),
            normalize_htu(url).ok(),
            "URL mismatch accepted"
        );
        assert!(p.claims.iat <= now.as_secs() + 10 && p.claims.exp + 10 >= now.as_secs());
        assert!(p.claims.exp > p.claims.iat && p.claims.exp - p.claims.iat <= 30);
        let again = s.verifier.verify(&compact, &req, &replay, now);
        assert!(again.is_err(), "a proof verified twice");
    } else if input.twice {
        let _ = s.verifier.check(&compact, &req, now);
    }
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("jws_pop");
    },
    |data: &[u8]| {
        match data.split_first() {
            Some((0xff, rest)) => structured(rest),
            _ => {
                if let Ok(t) = std::str::from_utf8(data) {
                    raw(t);
                }
            }
        }
    }
);
