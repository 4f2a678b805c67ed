//! `grants.secrets` (issue 22): which sealed secret the enclave may use for which method
//! and URL, matched on segment boundaries under the strict-path rules; each refusal with its
//! stable code.
use cada_contract::{
    Contract, ContractError, Grant, OwnerAlg, OwnerKey, SecretGrant, Subject, TrustedOwners,
};
use cada_protocol::url::HttpUrl;

const NOW: u64 = 1_750_000_000;

fn secret(name: &str, prefix: &str, methods: &[&str]) -> SecretGrant {
    SecretGrant {
        name: name.into(),
        prefix: prefix.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
    }
}

fn issue(owner: &OwnerKey, secrets: Vec<SecretGrant>, audiences: Vec<String>) -> String {
    let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let mut g = Grant::new(
        Subject::Key(agent.did().to_owned()),
        audiences,
        vec!["GET".into()],
        NOW - 60,
        NOW + 3600,
    );
    g.secrets = secrets;
    g.issue(owner, NOW).unwrap()
}

fn url(s: &str) -> HttpUrl {
    HttpUrl::parse_canonical(s).unwrap()
}

fn code(r: Result<(), ContractError>) -> &'static str {
    r.map(|()| "ok").unwrap_or_else(|e| e.code())
}

#[test]
fn a_secret_is_granted_for_its_methods_under_its_prefix_only() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let owners = TrustedOwners::from_did_key(owner.did()).unwrap();
    // No audience at all: a contract may grant secrets only.
    let c = issue(
        &owner,
        vec![
            secret(
                "github",
                "https://api.github.com/repos/acme/",
                &["GET", "POST"],
            ),
            secret("stripe", "https://api.stripe.com/v1/charges", &["GET"]),
        ],
        vec![],
    );
    let v = Contract::verify(&c, &owners, NOW).unwrap();
    assert_eq!(v.secrets().count(), 2);
    let ok = |name: &str, m: &str, u: &str| code(v.permits_secret(name, m, &url(u), NOW));
    assert_eq!(
        ok(
            "github",
            "GET",
            "https://api.github.com/repos/acme/app/issues"
        ),
        "ok"
    );
    assert_eq!(
        ok(
            "github",
            "POST",
            "https://api.github.com/repos/acme/app/issues"
        ),
        "ok"
    );
    assert_eq!(
        ok("stripe", "GET", "https://api.stripe.com/v1/charges"),
        "ok"
    );
    assert_eq!(
        ok("stripe", "GET", "https://api.stripe.com/v1/charges/ch_1"),
        "ok"
    );
    for (name, method, u, want) in [
        (
            "gitlab",
            "GET",
            "https://api.github.com/repos/acme/x",
            "secret.not_granted",
        ),
        (
            "github",
            "DELETE",
            "https://api.github.com/repos/acme/x",
            "secret.method",
        ),
        // Another host, a lookalike host, another port, another scheme.
        (
            "github",
            "GET",
            "https://api.github.com.evil.net/repos/acme/x",
            "secret.path",
        ),
        (
            "github",
            "GET",
            "https://evil.net/repos/acme/x",
            "secret.path",
        ),
        (
            "github",
            "GET",
            "https://api.github.com:8443/repos/acme/x",
            "secret.path",
        ),
        (
            "github",
            "GET",
            "http://api.github.com/repos/acme/x",
            "secret.path",
        ),
        // Outside the path, or a sibling that shares the prefix's characters.
        (
            "github",
            "GET",
            "https://api.github.com/repos/other/x",
            "secret.path",
        ),
        (
            "github",
            "GET",
            "https://api.github.com/repos/acme",
            "secret.path",
        ),
        (
            "github",
            "GET",
            "https://api.github.com/repos/acmecorp/x",
            "secret.path",
        ),
        (
            "stripe",
            "GET",
            "https://api.stripe.com/v1/charges_all",
            "secret.path",
        ),
        // A grant's method does not carry over to another secret.
        (
            "stripe",
            "POST",
            "https://api.stripe.com/v1/charges",
            "secret.method",
        ),
    ] {
        assert_eq!(ok(name, method, u), want, "{name} {method} {u}");
    }
    // Expired: the time rule first.
    assert_eq!(
        code(v.permits_secret(
            "github",
            "GET",
            &url("https://api.github.com/repos/acme/x"),
            NOW + 3600
        )),
        "contract.expired"
    );
}

#[test]
fn the_path_tricks_never_reach_the_grant() {
    // The URL the enclave asks about is parsed under the strict rules first; each trick is
    // refused there with its own code, so no trick can be granted.
    for (path, want) in [
        ("/repos/acme/..%2Fother/x", "url.encoded_slash"),
        ("/repos/acme/..%5Cother", "url.encoded_slash"),
        ("/repos/acme/%2e%2e/other", "url.encoded_dot"),
        ("/repos/acme/%252e%252e/other", "url.double_encoding"),
        ("/repos/acme/..;/other", "url.path_parameter"),
        ("/repos/acme/%C0%AE%C0%AE/other", "url.bad_utf8"),
        ("/repos/acme/../other", "url.dot_segment"),
        ("/repos/acme//other", "url.empty_segment"),
        ("/repos/acme/%EF%BC%8F..", "url.lookalike"),
    ] {
        let e = HttpUrl::parse_canonical(&format!("https://api.github.com{path}")).unwrap_err();
        assert_eq!(e.code(), want, "{path}");
    }
}

#[test]
fn secret_grants_that_could_never_match_safely_are_refused_when_written() {
    let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
    let try_issue = |s: Vec<SecretGrant>, audiences: Vec<String>| {
        let mut g = Grant::new(
            Subject::Key(agent.did().to_owned()),
            audiences,
            vec!["GET".into()],
            NOW - 60,
            NOW + 3600,
        );
        g.secrets = s;
        g.issue(&owner, NOW).map(|_| ()).unwrap_err().to_string()
    };
    for (grant, want) in [
        (
            secret("github", "http://api.github.com/repos/", &["GET"]),
            "must be https",
        ),
        (
            secret("github", "https://api.github.com/repos/../x/", &["GET"]),
            "url.dot_segment",
        ),
        (
            secret("github", "https://API.github.com/repos/", &["GET"]),
            "url.not_normal",
        ),
        (
            secret("GitHub", "https://api.github.com/", &["GET"]),
            "secret name",
        ),
        (
            secret("github", "https://api.github.com/", &[]),
            "at least 1",
        ),
        (
            secret("github", "https://api.github.com/", &["get"]),
            "upper-case",
        ),
    ] {
        let e = try_issue(vec![grant.clone()], vec![]);
        assert!(e.contains(want), "{grant:?}: {e}");
    }
    let twice = secret("github", "https://api.github.com/", &["GET"]);
    assert!(try_issue(vec![twice.clone(), twice], vec![]).contains("appears twice"));
    // Neither an audience nor a secret: nothing is granted, so nothing is issued.
    assert!(try_issue(vec![], vec![]).contains("audiences"));
}
