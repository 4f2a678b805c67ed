//! The policy loader: `Policy::from_toml` (the function behind `Policy::load` and
//! `cada-verify policy check`), with root paths relative to the fixture directory so that
//! `[roots]` entries naming fixture certificates load.
//!
//! Input: the policy text (inputs that are not UTF-8 are skipped: `Policy::load` reads text).
//! Oracles beyond "no panic":
//! * a refused policy names a line inside the text (or none);
//! * a loaded policy prints: `describe()` (what `policy check` prints), `Debug`, and
//!   `check_startable` never panic;
//! * loading is deterministic, and a loaded policy written back as TOML (the library offers
//!   no writer, so this target writes every effective field: roots by path, evidence, snp,
//!   tpm, token, context, audiences in their sorted order) loads to the same effective policy;
//! * every audience's own prefix URL is governed by an audience at least as specific.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cada_attestation_verifier::tpm::TpmRootUse;
use cada_attestation_verifier::Policy;
use cada_protocol::url::HttpUrl;
use libfuzzer_sys::fuzz_target;
use toml::{Table, Value};

const SOURCE: &str = "fuzz.toml";

fn base() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| cada_fuzz::fixtures_dir().unwrap_or_else(|| PathBuf::from("/nonexistent")))
}

/// How many Nitro roots every policy starts with (the pinned AWS root).
fn pinned_nitro() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| Policy::builtin().nitro_roots.anchors().len())
}

fn int(v: u64) -> Value {
    Value::Integer(i64::try_from(v).expect("policy limits keep values below 2^63"))
}

/// The effective policy as TOML, in the file format.
fn to_toml(p: &Policy) -> String {
    let names = |a: &[cada_attestation_verifier::chain::TrustAnchor]| {
        Value::Array(a.iter().map(|a| Value::String(a.name.clone())).collect())
    };
    let mut roots = Table::new();
    roots.insert(
        "nitro".into(),
        names(&p.nitro_roots.anchors()[pinned_nitro()..]),
    );
    roots.insert("sev_snp".into(), names(p.snp_roots.anchors()));

    let mut evidence = Table::new();
    evidence.insert("allow_debug".into(), Value::Boolean(p.nitro.allow_debug));
    evidence.insert("max_age_secs".into(), int(p.evidence_max_age_ms / 1000));

    let mut tcb = Table::new();
    let t = &p.snp.min_tcb;
    for (k, v) in [
        ("fmc", t.fmc),
        ("bootloader", t.bootloader),
        ("tee", t.tee),
        ("snp", t.snp),
        ("microcode", t.microcode),
    ] {
        if let Some(v) = v {
            tcb.insert(k.into(), int(u64::from(v)));
        }
    }
    let mut snp = Table::new();
    let freshness = serde_json::to_value(p.snp_freshness).expect("freshness serializes");
    snp.insert(
        "freshness".into(),
        Value::String(freshness.as_str().expect("a string").into()),
    );
    snp.insert("min_tcb".into(), Value::Table(tcb));
    snp.insert(
        "max_vmpl".into(),
        int(u64::from(
            p.snp.max_vmpl.expect("the loader always sets max_vmpl"),
        )),
    );
    snp.insert("allow_smt".into(), Value::Boolean(p.snp.allow_smt));
    snp.insert(
        "allow_migration_agent".into(),
        Value::Boolean(p.snp.allow_migration_agent),
    );
    snp.insert(
        "require_single_socket".into(),
        Value::Boolean(p.snp.require_single_socket),
    );

    let mut token = Table::new();
    token.insert("skew_secs".into(), int(p.token.skew_secs));
    token.insert(
        "require_nonce".into(),
        Value::Boolean(p.token.require_nonce),
    );
    token.insert("nonce_ttl_secs".into(), int(p.token.nonce_ttl_secs));

    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let mut context = Table::new();
    context.insert("required".into(), strings(&p.context.required));
    context.insert(
        "allowed".into(),
        Value::Table(
            p.context
                .allowed_values
                .iter()
                .map(|(k, v)| (k.clone(), strings(v)))
                .collect(),
        ),
    );

    let audiences = p
        .audiences
        .iter()
        .map(|a| {
            let mut t = Table::new();
            t.insert("prefix".into(), Value::String(a.prefix.to_string()));
            t.insert(
                "measurements".into(),
                Value::Array(
                    a.measurements
                        .iter()
                        .map(|set| {
                            Value::Table(
                                set.iter()
                                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            );
            Value::Table(t)
        })
        .collect();

    let mut tpm = Table::new();
    for (key, want) in [
        ("roots", TpmRootUse::Ek),
        ("ak_roots", TpmRootUse::Ak),
        ("ak_roots_without_ek", TpmRootUse::AkWithoutEk),
    ] {
        let list = p
            .tpm_roots
            .added()
            .iter()
            .filter(|(u, _)| *u == want)
            .map(|(_, n)| Value::String(n.clone()))
            .collect();
        tpm.insert(key.into(), Value::Array(list));
    }
    let tpm_freshness = serde_json::to_value(p.tpm_freshness).expect("freshness serializes");
    tpm.insert(
        "freshness".into(),
        Value::String(tpm_freshness.as_str().expect("a string").into()),
    );
    tpm.insert(
        "session_keys".into(),
        Value::Boolean(p.tpm.allow_session_keys),
    );
    tpm.insert("max_session_secs".into(), int(p.tpm.max_session_secs));

    let mut doc = Table::new();
    doc.insert("roots".into(), Value::Table(roots));
    doc.insert("tpm".into(), Value::Table(tpm));
    doc.insert("evidence".into(), Value::Table(evidence));
    doc.insert("snp".into(), Value::Table(snp));
    doc.insert("token".into(), Value::Table(token));
    doc.insert("context".into(), Value::Table(context));
    doc.insert("audience".into(), Value::Array(audiences));
    toml::to_string(&doc).expect("a TOML table serializes")
}

fn check(text: &str) {
    let p = match Policy::from_toml(text, base(), SOURCE) {
        Ok(p) => p,
        Err(e) => {
            let lines = text.bytes().filter(|b| *b == b'\n').count() + 1;
            assert!(
                e.line.is_none_or(|l| (1..=lines).contains(&l)),
                "line {:?} outside a {lines}-line text: {e}",
                e.line
            );
            assert!(!e.message.is_empty());
            let _ = e.to_string();
            return;
        }
    };
    // What `cada-verify policy check` prints, and the other renderings.
    let described = p.describe();
    let _ = serde_json::to_string_pretty(&described).expect("describe() is JSON");
    let _ = format!("{p:?}");
    let _ = p.check_startable();

    let again = Policy::from_toml(text, base(), SOURCE).expect("the same text loads twice");
    assert_eq!(again.describe(), described, "loading is not deterministic");

    let written = to_toml(&p);
    let reloaded = match Policy::from_toml(&written, base(), SOURCE) {
        Ok(r) => r,
        Err(e) => panic!("the effective policy, written back, does not load: {e}\n{written}"),
    };
    assert_eq!(
        reloaded.describe(),
        described,
        "written back and reloaded, the policy changed:\n{written}"
    );

    for a in &p.audiences {
        if let Ok(u) = HttpUrl::parse_normalized(&a.prefix.to_string()) {
            let governing = p
                .audience_for(&u)
                .expect("an audience's own prefix URL is covered");
            assert!(governing.prefix.specificity() >= a.prefix.specificity());
        }
    }
}

fuzz_target!(
    init: {
        cada_fuzz::write_seeds_if_asked("policy_toml");
    },
    |data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            check(text);
        }
    }
);
