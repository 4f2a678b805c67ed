//! Seed corpora, per target, from the fixtures and from the production encoders.
use std::path::Path;

use cada_attestation_verifier::{cose, nitro, UnixTime};
use cada_image::eif;
use cada_protocol::binding::KeyBinding;
use cada_protocol::envelope::{EvidenceEnvelope, Platform};
use cada_protocol::wire::{self, ops};
use der::Decode;

use crate::pop_setup::{envelope_at, proof, signers, EVIDENCE_AT_MS};
use crate::{amd_chain, nitro_fixtures, snp_fixtures, NITRO_AT, SNP_AT, SNP_AT_VLEK};

/// Writes the seeds of `target` into `dir`; returns how many.
pub fn write(target: &str, dir: &Path) -> usize {
    let seeds = match target {
        "nitro_document" => nitro_document(),
        "snp_report" => snp_report(),
        "x509_chain" => x509_chain(),
        "envelope" => envelope(),
        "jws_pop" => jws_pop(),
        "wire_frame" => wire_frame(),
        "eif" => eif_images(),
        "policy_toml" => policy_toml(),
        "decide" => decide(),
        "contract" => contracts(),
        "access_token" => access_tokens(),
        "mcp_body" => mcp_bodies(),
        "url_prefix" => url_prefixes(),
        "sealed_envelope" => sealed_envelopes(),
        "grant_arguments" => grant_arguments(),
        "tpm_attest" => tpm_attest(),
        "tpm_public" => tpm_public(),
        "tpm_eventlog" => tpm_eventlog(),
        "delegation_chain" => crate::delegation_setup::seeds(),
        _ => Vec::new(),
    };
    if std::fs::create_dir_all(dir).is_err() {
        return 0;
    }
    seeds
        .iter()
        .enumerate()
        .filter(|(i, s)| std::fs::write(dir.join(format!("seed-{i:03}")), s).is_ok())
        .count()
}

fn nitro_document() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = nitro_fixtures().iter().map(|f| f.bytes.clone()).collect();
    // Structure-aware mode: each fixture unchanged, then one that drops a field.
    for i in 0..nitro_fixtures().len() as u8 {
        out.push(vec![0xff, i]);
    }
    out.push(vec![0xff, 2, 1, 0, 0]);
    out
}

fn snp_report() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let milan = amd_chain("milan");
    for f in snp_fixtures() {
        let mut s = vec![u8::from(f.at_vlek_time)];
        s.extend_from_slice(&f.report);
        s.extend_from_slice(&f.signer);
        for c in &f.chain {
            s.extend_from_slice(c);
        }
        out.push(s.clone());
        if let Some((ark, ask, asvk)) = &milan {
            s.extend_from_slice(if f.at_vlek_time { asvk } else { ask });
            s.extend_from_slice(ark);
            s[0] |= 2;
            out.push(s);
        }
    }
    out
}

fn not_before(der: &[u8]) -> Option<u64> {
    let c = x509_cert::Certificate::from_der(der).ok()?;
    Some(
        c.tbs_certificate()
            .validity()
            .not_before
            .to_unix_duration()
            .as_secs(),
    )
}

fn chain_seed(flags: u8, certs: &[&[u8]], at: UnixTime) -> Option<Vec<u8>> {
    let leaf = certs.last()?;
    let offset = i32::try_from(at.as_secs() as i64 - not_before(leaf)? as i64).ok()?;
    let mut s = vec![flags];
    s.extend_from_slice(&offset.to_be_bytes());
    for c in certs {
        s.extend_from_slice(c);
    }
    Some(s)
}

fn x509_chain() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for f in nitro_fixtures() {
        let Ok(s) = cose::decode(&f.bytes, usize::MAX) else {
            continue;
        };
        let Ok(doc) = nitro::AttestationDocument::from_payload(&s.payload) else {
            continue;
        };
        let mut certs: Vec<&[u8]> = doc.cabundle.iter().map(Vec::as_slice).collect();
        certs.push(&doc.certificate);
        out.extend(chain_seed(1, &certs, f.at));
    }
    for gen in ["milan", "genoa", "turin"] {
        let Some((ark, ask, asvk)) = amd_chain(gen) else {
            continue;
        };
        for f in snp_fixtures() {
            let at = if f.at_vlek_time { SNP_AT_VLEK } else { SNP_AT };
            let mid: &[u8] = if f.at_vlek_time { &asvk } else { &ask };
            out.extend(chain_seed(1, &[&ark, mid, &f.signer], at));
        }
    }
    out
}

fn envelope() -> Vec<Vec<u8>> {
    let mut envs = Vec::new();
    for f in nitro_fixtures() {
        let Ok(s) = cose::decode(&f.bytes, usize::MAX) else {
            continue;
        };
        let Ok(doc) = nitro::AttestationDocument::from_payload(&s.payload) else {
            continue;
        };
        envs.push(EvidenceEnvelope {
            platform: Platform::Nitro,
            document: f.bytes.clone(),
            certs: vec![],
            binding: doc.user_data.unwrap_or_default(),
            nonce: doc.nonce.unwrap_or_default(),
        });
    }
    for f in snp_fixtures() {
        let mut certs = vec![serde_bytes::ByteBuf::from(f.signer.clone())];
        certs.extend(f.chain.iter().cloned().map(serde_bytes::ByteBuf::from));
        envs.push(EvidenceEnvelope {
            platform: Platform::SevSnp,
            document: f.report.clone(),
            certs,
            binding: vec![],
            nonce: vec![],
        });
    }
    for s in signers() {
        envs.push(envelope_at(&s.jwk(), NITRO_AT.as_millis() - 1000));
    }
    let mut out: Vec<Vec<u8>> = envs.iter().map(EvidenceEnvelope::to_cbor).collect();
    for e in envs.iter().take(3) {
        let mut h = vec![0xff];
        h.extend_from_slice(e.to_header().as_bytes());
        out.push(h);
    }
    out
}

fn jws_pop() -> Vec<Vec<u8>> {
    let now_s = (EVIDENCE_AT_MS + 60_000) / 1000;
    let mut out: Vec<Vec<u8>> = signers()
        .iter()
        .enumerate()
        .map(|(i, s)| proof(s, &format!("seed-{i}"), now_s - 1).into_bytes())
        .collect();
    for k in 0..3u8 {
        out.push(vec![0xff, k]);
    }
    out
}

fn wire_frame() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let req = |op: &str, body: ciborium::Value| wire::Request {
        id: 7,
        op: op.into(),
        body,
    };
    let attest = wire::to_value(&wire::AttestRequest {
        nonce: vec![1, 2, 3],
    })
    .expect("body");
    let sign = wire::to_value(&wire::SignPopRequest {
        htm: "GET".into(),
        htu: "https://api.example/x".into(),
        access_token: Some("tok".into()),
        nonce: Some("n".into()),
        ctx: [("task".to_string(), "abc".to_string())].into(),
        bd: None,
        mcp: vec![],
        exchange: None,
        task: None,
        traceparent: None,
    })
    .expect("body");
    for r in [
        req(ops::ATTEST, attest),
        req(ops::SIGN_POP, sign),
        req(ops::DESCRIBE, ciborium::Value::Map(vec![])),
        req(
            ops::INSTALL_CONTRACT,
            ciborium::Value::Map(vec![(
                ciborium::Value::Text("contract".into()),
                ciborium::Value::Text("a.b.c".into()),
            )]),
        ),
    ] {
        out.extend(wire::encode_frame(&r).ok());
    }
    let ok = wire::to_value(&wire::SignPopResponse {
        dpop: "a.b.c".into(),
        att: "att".into(),
        dtc: Some("dtc".into()),
    })
    .expect("body");
    out.extend(
        wire::encode_frame(&wire::Response {
            id: 7,
            ok: Some(ok),
            err: None,
        })
        .ok(),
    );
    out.extend(
        wire::encode_frame(&wire::Response {
            id: 0,
            ok: None,
            err: Some(wire::WireError {
                code: wire::ErrorCode::Malformed,
                message: "bad".into(),
            }),
        })
        .ok(),
    );
    let binding = KeyBinding {
        v: 1,
        jkt: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".into(),
        did: "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp".into(),
        hpke: None,
        owner: None,
    }
    .to_cbor();
    let mut f = (binding.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&binding);
    out.push(f);
    out
}

fn eif_images() -> Vec<Vec<u8>> {
    use ciborium::Value;
    let cert = b"DER of the signing certificate";
    let sig = Value::Array(vec![Value::Map(vec![
        (
            Value::Text("signing_certificate".into()),
            Value::Array(cert.iter().map(|b| Value::Integer((*b).into())).collect()),
        ),
        (Value::Text("signature".into()), Value::Array(vec![])),
    ])]);
    let mut sig_bytes = Vec::new();
    ciborium::ser::into_writer(&sig, &mut sig_bytes).expect("CBOR into a Vec");
    let k = eif::SectionType::Kernel;
    let c = eif::SectionType::Cmdline;
    let r = eif::SectionType::Ramdisk;
    [
        vec![
            (k, &b"kernel"[..]),
            (c, b"console=ttyS0"),
            (r, b"bootstrap"),
            (r, b"app"),
        ],
        vec![
            (k, &b"k"[..]),
            (c, b"c"),
            (r, b"r"),
            (eif::SectionType::Signature, &sig_bytes),
            (eif::SectionType::Metadata, b"{}"),
        ],
    ]
    .iter()
    .filter_map(|s| eif::write(s, 512, 2).ok())
    .collect()
}

/// Every policy the repository shows (the `policy.rs` header, README, `demo.sh`, the unit and
/// `decide` tests), then hand-written ones that together use every key of every section.
fn policy_toml() -> Vec<Vec<u8>> {
    let h48 = |b: &str| b.repeat(48);
    let (a, b, z) = (h48("aa"), h48("bb"), h48("00"));
    let host = "cd".repeat(32);
    let t32 = "ee".repeat(32);
    let texts = vec![
        // TPM evidence: pinned-root files of testdata/tpm as extra roots, TPM PCR sets.
        format!(
            r#"[tpm]
roots = ["tpm/roots/keylime_NTC1.der"]
ak_roots = ["tpm/roots/GOOGLE_EK_AK_CA_Root.der"]
ak_roots_without_ek = ["sev-snp/amd/milan/ark.pem"]
freshness = "first_seen"
session_keys = false
max_session_secs = 60

[[audience]]
prefix = "https://tpm.example.com/"
measurements = [ {{ TPM_PCR0 = "{t32}", TPM_PCR7 = "{t32}" }} ]
"#
        ),
        // attestation-verifier/src/policy.rs module header.
        format!(
            r#"[roots]
nitro = ["nitro/aws-nitro-root-g1.pem"]
sev_snp = ["sev-snp/amd/milan/ark.pem"]

[evidence]
allow_debug = false
max_age_secs = 3600

[snp]
freshness = "verifier_nonce"
min_tcb = {{ bootloader = 3, tee = 0, snp = 8, microcode = 115 }}
max_vmpl = 0
allow_smt = true
allow_migration_agent = false
require_single_socket = false

[token]
skew_secs = 10
require_nonce = false
nonce_ttl_secs = 120

[context]
required = ["task"]
allowed = {{ model = ["m-2026-10"] }}

[[audience]]
prefix = "https://api.example.com/v1"
measurements = [
  {{ PCR0 = "{a}", PCR1 = "{b}", PCR2 = "{z}" }},
  {{ MEASUREMENT = "{b}" }},
]
"#
        ),
        // README and scripts/demo.sh.
        format!(
            "[roots]\nnitro = [\"nitro/aws-nitro-root-g1.pem\"]\n\n[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [ {{ PCR0 = \"{a}\" }} ]\n"
        ),
        // Unit tests: two audiences, roll-out sets, the pcr_sets alias, zero PCRs.
        format!(
            "[[audience]]\nprefix = \"https://api.example.com/\"\nmeasurements = [ {{ PCR0 = \"{a}\" }}, {{ PCR0 = \"{b}\" }}, {{ MEASUREMENT = \"{a}\" }} ]\n[[audience]]\nprefix = \"https://api.example.com/admin\"\nmeasurements = [ {{ PCR0 = \"{b}\" }} ]\n"
        ),
        format!("[[audience]]\nprefix = \"https://h.example/\"\npcr_sets = [{{ MEASUREMENT = \"{a}\" }}]"),
        format!("[[audience]]\nprefix = \"https://h.example\"\nmeasurements = [{{ PCR0 = \"{a}\", PCR8 = \"{z}\" }}]"),
        "[snp]\nmin_tcb = { microcode = 115 }\nmax_vmpl = 2\nallow_smt = false\nfreshness = \"first_seen\"".into(),
        String::new(),
        // decide tests: nonce and context rules.
        format!("[token]\nrequire_nonce = true\nnonce_ttl_secs = 60\n[context]\nrequired = [\"tenant\"]\nallowed = {{ tenant = [\"a\", \"b\"] }}\n[[audience]]\nprefix = \"https://api.example.com/v1\"\nmeasurements = [{{ PCR0 = \"{a}\" }}]\n"),
        // Hand-written: every SNP key, HOST_DATA, several roots, high PCR numbers, ports.
        format!(
            r#"[roots]
nitro = ["nitro/aws-nitro-root-g1.pem"]
sev_snp = ["sev-snp/amd/genoa/ark.pem", "sev-snp/amd/turin/ark.pem", "sev-snp/amd/milan/ask.pem"]
[evidence]
allow_debug = true
max_age_secs = 604800
[snp]
freshness = "first_seen"
min_tcb = {{ fmc = 1, bootloader = 2, tee = 3, snp = 4, microcode = 255 }}
max_vmpl = 3
allow_smt = false
allow_migration_agent = true
require_single_socket = true
[token]
skew_secs = 300
require_nonce = true
nonce_ttl_secs = 3600
[context]
required = ["task", "tenant"]
allowed = {{ tenant = ["a"], "model.v" = ["x", "y"] }}
[[audience]]
prefix = "http://127.0.0.1:8080/a/b"
measurements = [{{ MEASUREMENT = "{a}", HOST_DATA = "{host}" }}]
[[audience]]
prefix = "https://[::1]/"
measurements = [{{ PCR31 = "{b}", PCR10 = "{a}" }}, {{ PCR4 = "{z}" }}]
"#
        ),
        // Errors that name a line: each a near miss of a valid file.
        "[token]\nskew_secs = 301".into(),
        "[evidence]\nmax_age_secs = 604801".into(),
        "extra_roots = [\"a.pem\"]".into(),
        "[snp]\nmeasurements = []".into(),
        format!("[[audience]]\nprefix = \"https://u@x/\"\nmeasurements = [{{PCR0 = \"{a}\"}}]"),
        format!("[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{PCR0 = \"{a}\", MEASUREMENT = \"{a}\"}}]"),
        format!("[[audience]]\nprefix = \"https://x/\"\nmeasurements = [{{HOST_DATA = \"{host}\"}}]"),
        "[roots]\nnitro = [\"nitro/README.md\"]".into(),
    ];
    texts.into_iter().map(String::into_bytes).collect()
}

/// `decide`: the untouched request, then one seed per kind of mutation (see the target).
fn decide() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0],
        vec![1, 0, 0, 0, 0, 1],
        vec![2, 1, 0, 0, 3, 0, 7, 0],
        vec![3, 2, 2, 1, 0, 0, 4, 0, 0, 9],
        vec![0xff; 16],
        (0u8..64).collect(),
    ]
}

/// Genuine contracts (by key and by image, every optional field), status lists (clear and
/// with revocations) and owner locks of the fixed test owner, each behind its selector.
fn contracts() -> Vec<Vec<u8>> {
    use crate::contract_setup::{owner, CONTRACT_AT, ENCLAVE_DID};
    use cada_contract::{
        BehaviourLimits, Grant, OwnerLock, StatusEntry, StatusList, Subject, WindowLimit,
    };
    let at = CONTRACT_AT;
    let list_url = "https://owner.example/status/1";
    let mut full = Grant::new(
        Subject::Key(ENCLAVE_DID.into()),
        vec![
            "https://api.example.com/v1".into(),
            "https://mcp.example.com/".into(),
        ],
        vec!["GET".into(), "POST".into()],
        at - 60,
        at + 3600,
    );
    full.scopes = vec!["orders:read".into()];
    full.tools = vec!["search".into()];
    full.required_ctx = vec!["task".into()];
    full.budget = Some(1000);
    full.rate_per_second = Some(20);
    full.limits = BehaviourLimits {
        requests: Some(WindowLimit {
            max: 600,
            window_seconds: 60,
        }),
        refusals: Some(WindowLimit {
            max: 5,
            window_seconds: 300,
        }),
    };
    full.status = StatusEntry::new(list_url, 7).ok();
    full.name = Some("fuzz".into());
    let mut by_image = Grant::new(
        Subject::Measurements(vec![[("PCR0".to_string(), "ab".repeat(48))]
            .into_iter()
            .collect()]),
        vec!["https://api.example.com/".into()],
        vec![],
        at - 60,
        at + 60,
    );
    by_image.name = None;
    let mut out = Vec::new();
    for g in [&full, &by_image] {
        if let Ok(c) = g.issue(owner(), at) {
            out.push([&[0u8][..], c.as_bytes()].concat());
        }
    }
    if let Ok(mut list) = StatusList::new(list_url, 131_072) {
        if let Ok(l) = list.issue(owner(), at - 10, None) {
            out.push([&[1u8][..], l.as_bytes()].concat());
        }
        let _ = list.revoke(7);
        if let Ok(l) = list.issue(owner(), at - 5, Some(at + 600)) {
            out.push([&[1u8][..], l.as_bytes()].concat());
        }
    }
    if let Ok(l) = OwnerLock::issue(owner(), ENCLAVE_DID, at - 5, 600) {
        out.push([&[2u8][..], l.as_bytes()].concat());
    }
    out
}

/// A genuine token of the fixed issuer (valid, expired, for another audience, another
/// issuer), its claims alone (the harness signs them), and JWKS documents.
fn access_tokens() -> Vec<Vec<u8>> {
    use crate::token_setup::{jwks, sign, ISSUER, KID, TOKEN_AT};
    // The RFC 8693 §4.1 shape (issue 24): the owner in `sub`, the agent in `act`; under a
    // chain (`iss` = "chain") the delegator nested below it and two digests in `cada_dch`.
    let claims = |iss: &str, aud: &str, exp: u64| {
        let (act, dch) = if iss == "chain" {
            (
                serde_json::json!({"sub": "did:key:z6MkkRU1nimx7bbcK8FMRMp62iCKNN4oo4RdvdQF72W7QgB3",
                    "act": {"sub": "did:key:z6MkkRU1nimx7bbcK8FMRMp62iCKNN4oo4RdvdQF72W7QgB4"}}),
                serde_json::json!(["r", "d"]),
            )
        } else {
            (
                serde_json::json!({"sub": "did:key:z6MkkRU1nimx7bbcK8FMRMp62iCKNN4oo4RdvdQF72W7QgB3"}),
                serde_json::json!(["d"]),
            )
        };
        let iss = if iss == "chain" { ISSUER } else { iss };
        serde_json::to_vec(&serde_json::json!({
            "iss": iss, "sub": "did:key:z6Mkn3apKGWN7VnQS7sciqfTr3VyN1rzXyn2iP6zvjCr4RGh",
            "client_id": "did:key:z6MkkRU1nimx7bbcK8FMRMp62iCKNN4oo4RdvdQF72W7QgB3",
            "aud": aud, "scope": "orders:read", "iat": TOKEN_AT - 5, "exp": exp, "jti": "j",
            "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
            "act": act, "cada_dch": dch,
            "cada": {"platform": "sim", "msr": "m", "att": "a", "dtc": "d"},
        }))
        .unwrap_or_default()
    };
    let header =
        serde_json::to_vec(&serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": KID}))
            .unwrap_or_default();
    let mut out = Vec::new();
    for c in [
        claims(ISSUER, "https://api.example.com/v1", TOKEN_AT + 300),
        claims(ISSUER, "https://api.example.com/v1", TOKEN_AT - 60),
        claims(ISSUER, "https://api.example.com/v2", TOKEN_AT + 300),
        claims(
            "https://evil.example.com",
            "https://api.example.com/v1",
            TOKEN_AT + 300,
        ),
        claims("chain", "https://api.example.com/v1", TOKEN_AT + 300),
    ] {
        let mut t = vec![0u8];
        t.extend_from_slice(sign(&header, &c).as_bytes());
        out.push(t);
        let mut p = vec![2u8];
        p.extend_from_slice(&c);
        out.push(p);
    }
    let mut j = vec![1u8];
    j.extend_from_slice(&jwks());
    out.push(j);
    out.push(b"\x01{\"keys\": [{\"kty\": \"OKP\", \"crv\": \"Ed25519\", \"x\": \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\", \"kid\": \"e\"}]}".to_vec());
    out
}

/// The path-confusion spellings of issue 21, as a mode byte, a prefix and a candidate (see
/// `fuzz_targets/url_prefix.rs`): http(s) prefixes with the request paths that escaped
/// them, resource grants with the URIs that escaped them, and completion templates.
fn url_prefixes() -> Vec<Vec<u8>> {
    let http_suffixes = [
        "/a.txt",
        "/..%2Fsecret.txt",
        "/..%2fsecret.txt",
        "/..%5Csecret.txt",
        "/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/..;/secret.txt",
        "/../secret.txt",
        "//secret.txt",
        "/%C0%AE%C0%AE/secret.txt",
        "/%EF%BC%8E%EF%BC%8E%EF%BC%8Fsecret.txt",
        "/..%20/secret.txt",
        "/a%00b",
        "/caf%C3%A9/x",
        "/a%20b?x=/../../secret",
        "\\..\\secret.txt",
        "/x%3F/../../secret",
    ];
    let mut out = Vec::new();
    for s in http_suffixes {
        out.push(format!("\x02http://127.0.0.1:18408/pub\n{s}").into_bytes());
    }
    for (p, c) in [
        (
            "http://127.0.0.1:18407/mcp",
            "http://127.0.0.1:18407/admin/../mcp",
        ),
        (
            "http://127.0.0.1:18407/mcp",
            "http://127.0.0.1:18407/admin/%2e%2e/mcp",
        ),
        (
            "http://127.0.0.1:18407/mcp",
            "http://127.0.0.1:18407/../../mcp",
        ),
        (
            "https://api.example.com/v1",
            "HTTPS://API.example.com:443/v1/x?q=1",
        ),
        (
            "https://api.example.com",
            "https://api.example.com.evil.net/x",
        ),
    ] {
        out.push(format!("\x00{p}\n{c}").into_bytes());
    }
    for s in [
        "a.txt",
        "../secret/key",
        "%2e%2e/%2e%2e/etc/shadow",
        "..%2Fsecret",
        "x?/../../etc/shadow",
        "..?x",
        "a/b?rev=2",
    ] {
        out.push(format!("\x03file:///srv/public/\n{s}").into_bytes());
    }
    out.push(b"\x01urn:isbn:0451450523\nurn:isbn:0451450523".to_vec());
    out.push(b"\x05file:///srv/public/\nfile:///srv/public/{path}".to_vec());
    out.push(b"\x05file:///srv/public\nfile:///srv/public{x}".to_vec());
    out
}

/// One-transaction grants: call arguments (mode 0) inside and outside the fixed detail's
/// limits, details (mode 1) with every constraint kind, number pairs (mode 2) around 2^53,
/// 2^64 and the digits of a double.
fn grant_arguments() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for args in [
        r#"{"amount":500,"currency":"USD","to":"bob","memo":"inv-1"}"#,
        r#"{"amount":500.0000000000000001,"currency":"USD","to":{"iban":"DE00"},"memo":"inv-é"}"#,
        r#"{"amount":"500","currency":"USD","to":"alice","memo":"inv-","x":[1,{"a":null}]}"#,
        r#"{"amount":1,"amount":2,"currency":"USD","to":"bob","memo":"inv-1"}"#,
        r#"{"amount":-1e400,"currency":"usd","to":"carol","memo":"INV"}"#,
        "[]",
    ] {
        out.push([&[0u8][..], args.as_bytes()].concat());
    }
    for detail in [
        r#"{"type":"mcp_tool_call","locations":["https://mcp.example/mcp","http://127.0.0.1:8080/"],"actions":["tools/call"],"tool":"transfer","arguments":{"amount":{"min":-5,"max":9007199254740993},"currency":{"eq":{"code":"USD","n":[1,2.5e3,null,true]}},"to":{"one_of":["alice",3,null]},"memo":{"prefix":"inv-
"}},"additional_arguments":false,"single_use":true,"identifier":"urn:uuid:2"}"#,
        r#"{"type":"mcp_tool_call","locations":["https://a.example/"],"tool":"t","additional_arguments":true,"identifier":"urn:x"}"#,
    ] {
        out.push([&[1u8][..], detail.as_bytes()].concat());
    }
    for pair in [
        "9007199254740993
9007199254740992",
        "18446744073709551617
1.8446744073709551616e19",
        "0.30000000000000001
0.3",
        "-0
0e7",
        "500
5e2",
        "-1e400
1e-400",
    ] {
        out.push([&[2u8][..], pair.as_bytes()].concat());
    }
    out
}

/// JSON-RPC bodies as MCP clients send them, and `Content-Digest` values after a newline.
fn mcp_bodies() -> Vec<Vec<u8>> {
    [
        &br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#[..],
        br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        br#"{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"x"}}"#,
        br#"{"jsonrpc":"2.0","id":"3","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","n":[1,2,{"a":null}]},"_meta":{"progressToken":3}}}"#,
        br#"[{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"file:///a"}},{"jsonrpc":"2.0","id":5,"result":{}},{"jsonrpc":"2.0","id":6,"method":"prompts/get","params":{"name":"p"}}]"#,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\nsha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        br#"{"jsonrpc":"2.0","id":7,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"x"}}}"#,
        br#"{"jsonrpc":"2.0","id":8,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///srv/{path}"},"argument":{"name":"path","value":"x"}}}"#,
        br#"{"jsonrpc":"2.0","id":9,"method":"subscriptions/listen","params":{"notifications":{"toolsListChanged":true,"resourceSubscriptions":["file:///a","file:///b"]}}}"#,
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect()
}

/// Sealed bundles of the fixed owner to the fixed enclave (static and OAuth usages, both
/// opened by mode 0), each also for modes 1 and 2 (its inner COSE_Encrypt0), a data
/// envelope for mode 3.
fn sealed_envelopes() -> Vec<Vec<u8>> {
    use crate::sealed_setup::{target, usage, SEAL_AT};
    use cada_secrets::{seal_bundle, ClientAuth, OAuthGrant, OAuthUsage, SecretKind};
    let owner = crate::contract_setup::owner();
    let oauth = SecretKind::OAuth(OAuthUsage {
        token_endpoint: "https://api.github.com/login/oauth/access_token".into(),
        client_id: "cid".into(),
        grant: OAuthGrant::RefreshToken,
        scope: Some("repo".into()),
        client_auth: ClientAuth::Post,
    });
    let mut out = Vec::new();
    for (kind, value) in [
        (SecretKind::Static, b"ghp_fuzz".as_slice()),
        (
            oauth,
            br#"{"client_secret":"s","refresh_token":"r"}"#.as_slice(),
        ),
    ] {
        let Ok(b) = seal_bundle(owner, &target(), &usage(kind), value, SEAL_AT) else {
            continue;
        };
        for mode in [0u8, 1] {
            let mut s = vec![mode];
            s.extend_from_slice(&b.bytes);
            out.push(s);
        }
        if let Ok(s1) = cada_secrets::cose::Sign1::decode(&b.bytes, 1 << 20) {
            if let Ok(ciborium::Value::Map(m)) =
                ciborium::de::from_reader::<ciborium::Value, _>(s1.payload.as_slice())
            {
                if let Some((_, ciborium::Value::Bytes(ct))) = m.first() {
                    let mut s = vec![2u8];
                    s.extend_from_slice(ct);
                    out.push(s);
                }
            }
        }
    }
    if let Ok(env) = cada_secrets::data::seal_data(&target(), "report", b"for the agent") {
        let mut s = vec![3u8];
        s.extend_from_slice(&env);
        out.push(s);
    }
    out
}

/// The real TPMS_ATTEST structures and signatures of `testdata/tpm` (mode 0: the quote;
/// mode 1: the signature; mode 2: length byte, quote, TPMT_SIGNATURE).
fn tpm_attest() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (msg, sig) in [
        ("tpm/libtpms/L01_quote.msg", "tpm/libtpms/L01_quote.sig"),
        ("tpm/azure/AZ01_quote.msg", "tpm/azure/AZ01_quote.sig"),
        ("tpm/azure/AZ02_quote.msg", "tpm/azure/AZ02_quote.sig"),
        ("tpm/gcp/G01_quote.msg", "tpm/gcp/G01_quote.sig.der"),
        ("tpm/gcp/G02_quote.msg", "tpm/gcp/G02_quote.sig.der"),
    ] {
        let (Some(m), Some(s)) = (crate::read(msg), crate::read(sig)) else {
            continue;
        };
        out.push([&[0u8][..], &m].concat());
        out.push([&[1u8][..], &s].concat());
        if let Ok(len) = u8::try_from(m.len()) {
            out.push([&[2u8, len][..], &m, &s].concat());
        }
    }
    out
}

/// TPMT_PUBLIC areas of the shapes CADA meets (an ECC P-256 AK and proof key, an RSA-2048
/// AK) and the real SubjectPublicKeyInfo of L01's AK.
fn tpm_public() -> Vec<Vec<u8>> {
    fn ecc(attrs: u32, scheme: u16) -> Vec<u8> {
        let mut b = vec![0x00, 0x23, 0x00, 0x0b];
        b.extend_from_slice(&attrs.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0x00, 0x10]);
        b.extend_from_slice(&scheme.to_be_bytes());
        if scheme != 0x0010 {
            b.extend_from_slice(&[0x00, 0x0b]);
        }
        b.extend_from_slice(&[0x00, 0x03, 0x00, 0x10, 0, 32]);
        b.extend_from_slice(&[0x11; 32]);
        b.extend_from_slice(&[0, 32]);
        b.extend_from_slice(&[0x22; 32]);
        b
    }
    let mut rsa = vec![0x00, 0x01, 0x00, 0x0b];
    rsa.extend_from_slice(&0x0005_0072u32.to_be_bytes());
    rsa.extend_from_slice(&[0, 0, 0x00, 0x10, 0x00, 0x14, 0x00, 0x0b, 0x08, 0x00]);
    rsa.extend_from_slice(&[0, 0, 0, 0, 0x01, 0x00]);
    rsa.extend_from_slice(&[0xc5; 256]);
    let mut out = vec![ecc(0x0005_0072, 0x0018), ecc(0x0004_0072, 0x0010), rsa];
    out.extend(crate::read("tpm/libtpms/L01_ak.spki.der"));
    out
}

/// The real event logs of `testdata/tpm/eventlog`.
fn tpm_eventlog() -> Vec<Vec<u8>> {
    [
        "tpm/eventlog/EL01_binary_bios_measurements",
        "tpm/eventlog/EL02_binary_bios_measurements-secureboot",
    ]
    .iter()
    .filter_map(|f| crate::read(f))
    .collect()
}
