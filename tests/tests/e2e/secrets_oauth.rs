//! OAuth upstreams (issue 22 part 4) against a real authorization server: npm
//! `oidc-provider` (pinned below, installed by the test), serving its token and
//! introspection endpoints over HTTPS with a throwaway CA on loopback, and a resource server
//! that accepts a bearer token only when the provider's RFC 7662 introspection says it is
//! active (tests/interop/oauth/server.mjs).
//!
//! The enclave's own code does every step: the refresher (`cada_enclave::egress::oauth`)
//! over the enclave's HTTPS client (`cada_enclave::egress::Client`: TLS made and verified
//! inside against the CA named in the usage) through a relay that, like the parent's, sees
//! only the TLS bytes — the test records them and finds no token or client secret in them.
//! Only the wire op and the contract check are left out here (the `secret_call` path is
//! E's and is tested in `secrets*.rs` with static secrets).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cada_e2e::{npm_package, TempDir};
use cada_enclave::egress::oauth::{self, Clock, Tokens};
use cada_enclave::egress::{Client, Relay};
use cada_secrets::{ClientAuth, OAuthGrant, OAuthUsage, SecretKind, SecretUsage};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// The pinned authorization server.
const OIDC_PROVIDER: &str = "oidc-provider@9.13.3";
/// The Node.js it supports (an LTS from 22 "Jod" on; it warns on the machine's Node 20),
/// pinned, from the npm registry's `node` package.
const NODE: &str = "node@22.23.3";
const CC_SECRET: &str = "cc-secret-7d1f0a9c3b5e4f60a2b8c4d6e8f01234";
const RT_SECRET: &str = "rt-secret-5a3c1e9b7d5f3a1c9e7b5d3f1a2b4c6d";
const BAD_SECRET: &str = "bad-secret-00112233445566778899aabbccddeeff";
const RS_SECRET: &str = "rs-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

struct TestClock(AtomicU64);
impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A throwaway CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`; returns
/// the CA's DER (for the usage's `cas`) and the paths (CA, cert, key).
fn throwaway_ca(dir: &Path) -> (Vec<u8>, PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "CADA OAuth test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca_pem, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca_cert.der().to_vec(), ca_pem, cert, key)
}

/// The running provider and resource server.
struct Provider {
    child: std::process::Child,
    issuer: String,
    resource: String,
    /// The refresh token the provider issued for `agent-rt`.
    refresh: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pinned packages, installed once per target dir (the tests of this module share them:
/// npm_package's partial directory is per process, so two installs at once would collide),
/// and the server script beside oidc-provider; returns (node, script).
fn packages() -> &'static (PathBuf, PathBuf) {
    static PACKAGES: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    PACKAGES.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let pkgs = npm_package(tmp, "node-interop-oidc-provider-9.13.3", OIDC_PROVIDER);
        // ESM resolves oidc-provider from the script's own directory.
        let script = pkgs.join("oauth-server.mjs");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/oauth/server.mjs"),
            &script,
        )
        .unwrap();
        let node =
            npm_package(tmp, "node-interop-node-22.23.3", NODE).join("node_modules/.bin/node");
        (node, script)
    })
}

fn start_provider(dir: &Path) -> (Provider, Vec<u8>) {
    let (node, script) = packages();
    let (ca_der, ca, cert, key) = throwaway_ca(dir);
    let cfg = serde_json::json!({
        "cert": cert, "key": key, "ca": ca, "rs_secret": RS_SECRET,
        "clients": [
            {"client_id": "agent-cc", "client_secret": CC_SECRET,
             "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_basic",
             "scope": "api:read"},
            {"client_id": "agent-rt", "client_secret": RT_SECRET,
             "grant_types": ["authorization_code", "refresh_token"],
             "token_endpoint_auth_method": "client_secret_post"}
        ],
        "access_token_ttl": 3600,
        "refresh_for": ["agent-rt"],
    });
    let cfg_path = dir.join("oauth.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let mut child = Command::new(node)
        .arg(script)
        .arg(&cfg_path)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("oauth-server.log")).unwrap())
        .spawn()
        .expect("the pinned node from npm (the interop test does not skip)");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let Some(json) = line.trim().strip_prefix("ready ") else {
        let _ = child.kill();
        panic!(
            "oidc-provider did not start: {line}\n{}",
            std::fs::read_to_string(dir.join("oauth-server.log")).unwrap_or_default()
        );
    };
    let ready: serde_json::Value = serde_json::from_str(json).unwrap();
    let p = Provider {
        child,
        issuer: ready["issuer"].as_str().unwrap().to_owned(),
        resource: ready["resource"].as_str().unwrap().to_owned(),
        refresh: ready["refresh"]["agent-rt"].as_str().unwrap().to_owned(),
    };
    // The parent's relay connects these loopback origins only when allowed (finding 14).
    for url in [&p.issuer, &p.resource] {
        let authority = url
            .trim_start_matches("https://")
            .split('/')
            .next()
            .unwrap();
        if let Some(port) = authority.rsplit_once(':').and_then(|(_, p)| p.parse().ok()) {
            cada_e2e::allow_egress(port);
        }
    }
    (p, ca_der)
}

/// A relay like the parent's: reads the enclave's hello, connects, answers OK, copies bytes
/// both ways, and keeps every byte it relayed (what the host sees) in `seen`.
async fn relay(seen: Arc<Mutex<Vec<u8>>>) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut rd = tokio::io::BufReader::new(s);
                let mut hello = Vec::new();
                rd.read_until(b'\n', &mut hello).await.unwrap();
                let (host, port) = cada_protocol::egress::parse_relay_hello(&hello).unwrap();
                assert!(
                    host == "127.0.0.1",
                    "the relay only reaches loopback: {host}"
                );
                let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let mut s = rd.into_inner();
                s.write_all(b"OK\n").await.unwrap();
                let (mut ar, mut aw) = s.into_split();
                let (mut ur, mut uw) = up.into_split();
                let seen2 = Arc::clone(&seen);
                let a = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = ar.read(&mut buf).await {
                        if n == 0 || uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        seen2.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = uw.shutdown().await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = ur.read(&mut buf).await {
                    if n == 0 || aw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = aw.shutdown().await;
                let _ = a.await;
            });
        }
    });
    addr
}

fn usage(
    p: &Provider,
    ca_der: &[u8],
    client_id: &str,
    grant: OAuthGrant,
    auth: ClientAuth,
) -> SecretUsage {
    use base64::Engine as _;
    let u = SecretUsage {
        name: "api".into(),
        upstream: p.resource.clone(),
        path_prefix: "/api/".into(),
        header: "authorization".into(),
        format: "Bearer {}".into(),
        cas: vec![base64::engine::general_purpose::STANDARD.encode(ca_der)],
        expires_at: unix_now() + 30 * 24 * 3600,
        credential_endpoints: vec![],
        kind: SecretKind::OAuth(OAuthUsage {
            token_endpoint: format!("{}/token", p.issuer),
            client_id: client_id.into(),
            grant,
            scope: (grant == OAuthGrant::ClientCredentials).then(|| "api:read".into()),
            client_auth: auth,
        }),
    };
    u.validate().unwrap();
    u
}

/// GET `path` on the resource server through the enclave's client with `token` injected as
/// the usage says; (status, JSON).
async fn call(
    client: &Client,
    u: &SecretUsage,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let host = u.upstream.strip_prefix("https://").unwrap();
    let mut b = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", host);
    if let Some(t) = token {
        b = b.header("authorization", u.header_value(t).as_str());
    }
    let resp = client
        .send(u, b.body(hyper::body::Bytes::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null),
    )
}

fn code(e: &cada_enclave::EnclaveError) -> &'static str {
    e.rule_code().unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enclave_refresher_against_oidc_provider() {
    let tmp = TempDir::new("secrets-oauth");
    let (p, ca_der) = start_provider(&tmp.0);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let relay_addr = relay(Arc::clone(&seen)).await;
    let client = Arc::new(Client::new(
        Relay::Tcp(relay_addr),
        Client::DEFAULT_MAX_IDLE,
        Duration::from_secs(20),
    ));
    let clock = Arc::new(TestClock(AtomicU64::new(unix_now())));
    let tokens = Tokens::new(Arc::clone(&client), Arc::clone(&clock) as Arc<dyn Clock>);
    let stats = |u: SecretUsage| {
        let client = Arc::clone(&client);
        async move { call(&client, &u, "/stats", None).await.1 }
    };
    let mut secrets: Vec<String> = vec![CC_SECRET.into(), RT_SECRET.into(), p.refresh.clone()];

    // 1. client_credentials (client_secret_basic): one token request, then the cache.
    let cc = usage(
        &p,
        &ca_der,
        "agent-cc",
        OAuthGrant::ClientCredentials,
        ClientAuth::Basic,
    );
    let cc_value = format!(r#"{{"client_secret":"{CC_SECRET}"}}"#);
    let at = tokens
        .credential("api", "cc-1", &cc, cc_value.as_bytes())
        .await
        .unwrap();
    secrets.push(at.to_string());
    let (status, who) = call(&client, &cc, "/api/whoami", Some(&at)).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["client_id"], "agent-cc");
    assert_eq!(who["scope"], "api:read");
    let again = tokens
        .credential("api", "cc-1", &cc, cc_value.as_bytes())
        .await
        .unwrap();
    assert_eq!(again.as_str(), at.as_str(), "cached");
    assert_eq!(stats(cc.clone()).await["by_grant"]["client_credentials"], 1);
    // A tampered access token is refused by the resource server (it really checks).
    let (status, _) = call(&client, &cc, "/api/whoami", Some("not-the-token")).await;
    assert_eq!(status, 401);

    // 2. Single flight: 12 concurrent callers of a fresh refresher, one token request.
    let fresh = Arc::new(Tokens::new(
        Arc::clone(&client),
        Arc::clone(&clock) as Arc<dyn Clock>,
    ));
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (fresh, cc, v) = (Arc::clone(&fresh), cc.clone(), cc_value.clone());
        tasks.push(tokio::spawn(async move {
            fresh
                .credential("api", "cc-1", &cc, v.as_bytes())
                .await
                .map(|t| t.to_string())
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    assert!(
        got.iter().all(|t| *t == got[0]),
        "one token for all callers"
    );
    secrets.push(got[0].clone());
    assert_eq!(
        stats(cc.clone()).await["by_grant"]["client_credentials"],
        2,
        "12 callers, one token request"
    );

    // 3. Past the refresh margin (the refresher's clock moves; the provider's does not need
    //    to): a new token.
    clock.0.fetch_add(3600 - 59, Ordering::SeqCst);
    let at2 = tokens
        .credential("api", "cc-1", &cc, cc_value.as_bytes())
        .await
        .unwrap();
    assert_ne!(at2.as_str(), at.as_str());
    secrets.push(at2.to_string());
    assert_eq!(call(&client, &cc, "/api/whoami", Some(&at2)).await.0, 200);

    // 4. A wrong client secret: invalid_client, refused with its code, nothing leaked.
    let wrong = r#"{"client_secret":"wrong-secret-000000000000000000"}"#;
    let e = tokens
        .credential("api", "cc-wrong", &cc, wrong.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(code(&e), oauth::OAUTH_REFUSED, "{e}");
    assert!(e.to_string().contains("invalid_client"), "{e}");

    // 5. refresh_token (client_secret_post) with rotation: the provider rotates on every use
    //    and treats a rotated token used again as theft (invalid_grant, grant revoked).
    let rt = usage(
        &p,
        &ca_der,
        "agent-rt",
        OAuthGrant::RefreshToken,
        ClientAuth::Post,
    );
    let rt_value = format!(
        r#"{{"client_secret":"{RT_SECRET}","refresh_token":"{}"}}"#,
        p.refresh
    );
    let rt_tokens = Tokens::new(Arc::clone(&client), Arc::clone(&clock) as Arc<dyn Clock>);
    let a1 = rt_tokens
        .credential("api", "rt-1", &rt, rt_value.as_bytes())
        .await
        .unwrap();
    secrets.push(a1.to_string());
    let (status, who) = call(&client, &rt, "/api/whoami", Some(&a1)).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["sub"], "alice");
    assert_eq!(who["client_id"], "agent-rt");
    clock.0.fetch_add(3600, Ordering::SeqCst);
    // Works only with the rotated refresh token: the sealed one is spent.
    let a2 = rt_tokens
        .credential("api", "rt-1", &rt, rt_value.as_bytes())
        .await
        .unwrap();
    assert_ne!(a2.as_str(), a1.as_str());
    secrets.push(a2.to_string());
    assert_eq!(call(&client, &rt, "/api/whoami", Some(&a2)).await.0, 200);
    let s = stats(cc.clone()).await;
    assert_eq!(s["by_grant"]["refresh_token"], 2, "{s}");

    // 6. An enclave restart re-installing the same sealed value holds the spent refresh
    //    token: invalid_grant → secret.oauth_refused (the docs: re-authorize and re-seal).
    let restarted = Tokens::new(Arc::clone(&client), Arc::clone(&clock) as Arc<dyn Clock>);
    let e = restarted
        .credential("api", "rt-1", &rt, rt_value.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(code(&e), oauth::OAUTH_REFUSED, "{e}");
    assert!(e.to_string().contains("invalid_grant"), "{e}");
    for s in &secrets {
        assert!(!e.to_string().contains(s.as_str()));
    }
    // The provider revoked the whole grant on that reuse: the latest token is dead too.
    assert_eq!(call(&client, &rt, "/api/whoami", Some(&a2)).await.0, 401);

    // 7. A usage that does not name the provider's CA: the built-in roots do not know the
    //    throwaway CA, so TLS fails inside (no fallback) and no token is fetched.
    let mut other_ca = cc.clone();
    other_ca.cas.clear();
    let e = Tokens::new(Arc::clone(&client), Arc::clone(&clock) as Arc<dyn Clock>)
        .credential("api", "cc-1", &other_ca, cc_value.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(code(&e), oauth::OAUTH_UNAVAILABLE, "{e}");
    assert!(e.to_string().contains("secret.tls"), "{e}");

    // 8. What the host relayed is TLS only: no secret, token or form field in clear.
    let relayed = seen.lock().unwrap().clone();
    assert!(relayed.len() > 1000, "the relay carried the calls");
    for needle in secrets
        .iter()
        .map(String::as_str)
        .chain(["grant_type", "Bearer", "api:read"])
    {
        assert!(
            !relayed
                .windows(needle.len())
                .any(|w| w == needle.as_bytes()),
            "{needle} crossed the relay in clear"
        );
    }
}

/// `/stats` of the provider's resource server (token requests per grant), read with Python
/// trusting the throwaway CA.
fn provider_stats(p: &Provider, ca: &Path) -> serde_json::Value {
    let code = format!(
        "import ssl, urllib.request; ctx = ssl.create_default_context(cafile={:?}); \
         print(urllib.request.urlopen('{}/stats', context=ctx, timeout=30).read().decode())",
        ca.display().to_string(),
        p.resource
    );
    let out = Command::new("python3")
        .args(["-c", &code])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stats: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The whole path with the real binaries on `sim`: the owner seals two OAuth secrets (a
/// client_credentials client and a refresh token) to the enclave's attested key; a plain
/// Python agent under `cada-parent run` calls the protected resource with placeholders;
/// the enclave obtains the access tokens from oidc-provider itself, injects them, and the
/// resource server accepts them (introspection). No secret or placeholder is anywhere the
/// agent or the host's logs can see, and the second call reuses the enclave's cached token.
/// A third secret, sealed with a client secret the provider does not know, reaches the agent
/// as `secret.oauth_refused` naming `invalid_client`.
#[test]
fn an_agent_under_run_reaches_an_oauth_protected_resource_through_the_enclave() {
    use cada_e2e::{http, keygen, owner_to, parent, start_enclave_on, start_parent};
    let tmp = TempDir::new("secrets-oauth-run");
    let d = &tmp.0;
    let (p, ca_der) = start_provider(d);
    let relay = format!("unix:{}", d.join("relay.sock").display());
    let _enclave = start_enclave_on(d, "sim", &["--egress", &relay, "--dev-secrets"]);
    let _parent = start_parent(d, &["--egress-listen", &relay]);
    let sock = d.join("agent.sock");
    let (_, id) = http(&sock, "GET", "/v1/identity", None, Duration::from_secs(5)).unwrap();
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let did = id["did"].as_str().unwrap().to_owned();
    let (_, key) = keygen(d, "owner");
    owner_to(d, "lock.jwt", &["lock", "--key", &key, "--enclave", &did]);
    let (c, _, err) = parent(
        &sock,
        &["owner", "lock", d.join("lock.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{err}");
    let target = cada_secrets::SealTarget {
        hpke: cada_secrets::HpkePublicKey::from_b64(id["hpke"]["key"].as_str().unwrap()).unwrap(),
        jkt: id["jkt"].as_str().unwrap().to_owned(),
    };
    let owner =
        cada_contract::OwnerKey::from_key_file(&std::fs::read_to_string(&key).unwrap()).unwrap();
    let rt_value = format!(
        r#"{{"client_secret":"{RT_SECRET}","refresh_token":"{}"}}"#,
        p.refresh
    );
    let cc_value = format!(r#"{{"client_secret":"{CC_SECRET}"}}"#);
    let sealed = [
        (
            "api",
            usage(
                &p,
                &ca_der,
                "agent-cc",
                OAuthGrant::ClientCredentials,
                ClientAuth::Basic,
            ),
            cc_value,
        ),
        (
            "api-rt",
            usage(
                &p,
                &ca_der,
                "agent-rt",
                OAuthGrant::RefreshToken,
                ClientAuth::Post,
            ),
            rt_value,
        ),
        (
            "api-bad",
            usage(
                &p,
                &ca_der,
                "agent-cc",
                OAuthGrant::ClientCredentials,
                ClientAuth::Basic,
            ),
            format!(r#"{{"client_secret":"{BAD_SECRET}"}}"#),
        ),
    ];
    for (name, mut u, value) in sealed {
        u.name = name.into();
        let b =
            cada_secrets::seal_bundle(&owner, &target, &u, value.as_bytes(), unix_now()).unwrap();
        let f = d.join(format!("{name}.sealed"));
        std::fs::write(&f, &b.bytes).unwrap();
        let (c, out, err) = parent(&sock, &["secret", "install", f.to_str().unwrap()]);
        assert_eq!(c, 0, "{out}{err}");
    }
    let prefix = format!("{}/api/", p.resource);
    owner_to(
        d,
        "grant.jwt",
        &[
            "grant",
            "--key",
            &key,
            "--subject",
            &did,
            "--secret",
            &format!("api={prefix}"),
            "--secret",
            &format!("api-rt={prefix}"),
            "--secret",
            &format!("api-bad={prefix}"),
            "--method",
            "GET",
            "--valid-for",
            "1h",
            "--no-revocation",
        ],
    );
    let (c, out, err) = parent(
        &sock,
        &["contract", "install", d.join("grant.jwt").to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}{err}");

    let env_file = d.join(".env.cada");
    std::fs::write(
        &env_file,
        "API_URL={{cada.url:api}}\nAPI_TOKEN={{cada.placeholder:api}}\n\
         RT_URL={{cada.url:api-rt}}\nRT_TOKEN={{cada.placeholder:api-rt}}\n\
         BAD_URL={{cada.url:api-bad}}\nBAD_TOKEN={{cada.placeholder:api-bad}}\n",
    )
    .unwrap();
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/agents/agent.py");
    let run = |url: &str, token: &str, paths: &[&str]| {
        let out = Command::new(cada_e2e::bin("cada-parent"))
            .args(["run", "--env-file", env_file.to_str().unwrap(), "--socket"])
            .arg(&sock)
            .args(["--", "python3", agent.to_str().unwrap(), "get", url, token])
            .args(paths)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
        let v: serde_json::Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("agent output ({e}): {stdout}{stderr}"));
        (v, format!("{stdout}{stderr}"))
    };

    // client_credentials: two calls, one token request at the provider.
    let (v, seen_cc) = run("API_URL", "API_TOKEN", &["/api/whoami", "/api/whoami"]);
    for call in v.as_array().unwrap() {
        assert_eq!(call["status"], 200, "{v}");
        let who: serde_json::Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
        assert_eq!(who["client_id"], "agent-cc", "{who}");
        assert_eq!(who["scope"], "api:read");
        assert_eq!(who["auth_header_scheme"], "Bearer");
    }
    let ca_pem = d.join("ca.pem");
    assert_eq!(
        provider_stats(&p, &ca_pem)["by_grant"]["client_credentials"],
        1
    );

    // refresh_token with rotation: the enclave refreshes; the resource sees alice.
    let (v, seen_rt) = run("RT_URL", "RT_TOKEN", &["/api/whoami"]);
    assert_eq!(v[0]["status"], 200, "{v}");
    let who: serde_json::Value = serde_json::from_str(v[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(who["sub"], "alice");
    assert_eq!(who["client_id"], "agent-rt");
    assert_eq!(provider_stats(&p, &ca_pem)["by_grant"]["refresh_token"], 1);

    // A client secret the provider does not know: the agent gets the refusal with its code
    // and the OAuth error, not the secret.
    let (v, seen_bad) = run("BAD_URL", "BAD_TOKEN", &["/api/whoami"]);
    assert_eq!(v[0]["status"], 403, "{v}");
    let problem: serde_json::Value = serde_json::from_str(v[0]["body"].as_str().unwrap()).unwrap();
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("secret.oauth_refused"),
        "{problem}"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("invalid_client"),
        "{problem}"
    );
    assert!(!seen_bad.contains(BAD_SECRET));

    // Nothing the agent, run, the endpoint, the daemon or the enclave printed holds the
    // client secrets or the refresh token.
    let logs = ["parent.log", "enclave.log"]
        .iter()
        .map(|f| std::fs::read_to_string(d.join(f)).unwrap_or_default())
        .collect::<String>();
    for text in [&seen_cc, &seen_rt, &seen_bad, &logs] {
        for s in [CC_SECRET, RT_SECRET, BAD_SECRET, p.refresh.as_str()] {
            assert!(!text.contains(s), "a secret leaked: {s}");
        }
    }
}
