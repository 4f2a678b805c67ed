//! Sealed secrets and sealed data end to end (issue 22 parts 1, 2 and 6, helper S): the real
//! `cada-enclave` (sim), `cada-parent serve`, `cada-owner seal`, `cada-parent secret install`,
//! `cada-verify seal` and `cada-parent open`, plus the interoperability of the envelope with
//! an independent COSE-HPKE implementation (python-cwt 3.3.0, draft-ietf-cose-hpke-23).
//!
//! What each test proves:
//! * `sealed_secret_lifecycle_on_sim`: the HPKE key is in `/v1/identity` and in the verified
//!   evidence; the owner's seal is refused for measurements its policy rejects
//!   (`secret.measurement`), for an enclave not locked to it (`secret.other_owner`), for sim
//!   evidence without the development flag (`secret.sim_platform`), for an OAuth value that
//!   is not the refresher's JSON (`secret.usage_invalid`); a sealed bundle installs
//!   and the chain names the secret and its digest; the enclave refuses another owner's
//!   bundle (`secret.other_owner`), a flipped byte (`secret.tampered`), an expired usage
//!   (`secret.expired`), a bundle sealed for another enclave
//!   (`secret.sealed_for_other_enclave`) and, without `--dev-secrets`, any bundle
//!   (`secret.sim_platform`); after an enclave restart the old bundle is refused and one
//!   command (`cada-owner seal --like … --install`) re-seals and installs; the secret appears
//!   nowhere the host can read it (daemon and enclave logs, every CLI output: raw, base64,
//!   base64url, hex, percent-encoded).
//! * `sealed_data_opens_under_a_grant_within_its_budget`: `cada-verify seal` encrypts to the
//!   attested key only after the evidence and measurements pass (sim only with the flag);
//!   `cada-parent open` decrypts under a contract's `opens` grant until its budget is spent
//!   (`secret.open_budget`), refuses an ungranted label (`secret.open_not_granted`), and
//!   chains every open.
//! * `cada_owner_seal_on_sim_snp`: the same owner path on SEV-SNP-format evidence (policy
//!   naming the sim-snp root and MEASUREMENT; another MEASUREMENT is `secret.measurement`).
//! * `the_evidence_binds_the_hpke_key_on_both_formats` (in process): the owner's check
//!   returns the HPKE key the sim and sim-snp evidence binds, and refuses the same evidence
//!   with another HPKE key in its binding (Nitro `user_data`, SNP `report_data`), a policy
//!   audience that does not cover the upstream, and sim without the development flag.
//! * `cose_hpke_interoperates_with_python_cwt`: python-cwt opens CADA's envelopes (data and
//!   the owner-signed bundle: its COSE_Sign1 verifies and its COSE_Encrypt0 opens with the
//!   bundle context as external_aad), CADA opens python-cwt's, and both refuse another
//!   context.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cada_contract::OwnerKey;
use cada_e2e::{
    bin, http, keygen, owner, parent, start_enclave, start_enclave_on, start_parent, Proc, TempDir,
};
use cada_secrets::data::{data_context, open_data, seal_data};
use cada_secrets::{seal_bundle, HpkeKeyPair, HpkePublicKey, SealTarget, SecretKind, SecretUsage};

const T: Duration = Duration::from_secs(20);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret_value() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sk_live_Seal{n:x}Q+/={:x}", std::process::id())
}

/// Every spelling of `secret` an agent or an operator might decode.
fn spellings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let pct: String = b
        .iter()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-._~".contains(c) {
                char::from(*c).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect();
    vec![
        secret.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        hex::encode(b),
        hex::encode_upper(b),
        pct,
    ]
}

fn assert_absent(what: &str, text: &str, secret: &str) {
    for s in spellings(secret) {
        assert!(!text.contains(&s), "{what} holds the secret (as {s:?})");
    }
}

/// One enclave (sim or sim-snp) with its daemon.
struct Node {
    dir: PathBuf,
    platform: &'static str,
    sock: PathBuf,
    enclave: Proc,
    _parent: Proc,
}

impl Node {
    fn start(dir: &Path, enclave_flags: &[&str]) -> Node {
        Self::start_on(dir, "sim", enclave_flags)
    }

    fn start_on(dir: &Path, platform: &'static str, enclave_flags: &[&str]) -> Node {
        std::fs::create_dir_all(dir).unwrap();
        let enclave = start_enclave_on(dir, platform, enclave_flags);
        let parent = start_parent(dir, &[]);
        Node {
            dir: dir.to_owned(),
            platform,
            sock: dir.join("agent.sock"),
            enclave,
            _parent: parent,
        }
    }

    fn identity(&self) -> serde_json::Value {
        let (status, body) = http(&self.sock, "GET", "/v1/identity", None, T).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn did(&self) -> String {
        self.identity()["did"].as_str().unwrap().to_owned()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Locks the enclave to the owner of `key`.
    fn lock(&self, key: &str) {
        let did = self.did();
        let (code, out, err) = owner(&["lock", "--key", key, "--enclave", &did]);
        assert_eq!(code, 0, "{err}");
        std::fs::write(self.dir.join("lock.jwt"), out).unwrap();
        let (code, _, err) = parent(&self.sock, &["owner", "lock", &self.path("lock.jwt")]);
        assert_eq!(code, 0, "{err}");
    }

    /// A policy trusting this node's software root whose audience `prefix` accepts its
    /// measurement (PCR0 on sim, MEASUREMENT on sim-snp; or `measurement` when given).
    fn policy(&self, file: &str, prefix: &str, measurement: Option<&str>) -> String {
        let id = self.identity();
        let (name, roots) = if self.platform == "sim" {
            ("PCR0", "[roots]\nnitro")
        } else {
            (
                "MEASUREMENT",
                "[snp]\nfreshness = \"first_seen\"\n[roots]\nsev_snp",
            )
        };
        let value = measurement
            .map(str::to_owned)
            .unwrap_or_else(|| id["measurements"][name].as_str().unwrap().to_owned());
        let text = format!(
            "{roots} = [{:?}]\n\n[[audience]]\nprefix = {prefix:?}\nmeasurements = [{{ {name} = \"{value}\" }}]\n",
            self.dir
                .join(format!("state/{}-root.der", self.platform))
                .display()
                .to_string()
        );
        let path = self.dir.join(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for f in ["enclave.log", "parent.log"] {
            s.push_str(&std::fs::read_to_string(self.dir.join(f)).unwrap_or_default());
        }
        s
    }
}

/// `cada-owner seal` with the usage flags of the test's GitHub secret.
fn seal(
    key: &str,
    policy: &str,
    node: &Node,
    value_file: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "seal",
        "--key",
        key,
        "--policy",
        policy,
        "--socket",
        node.sock.to_str().unwrap(),
        "--name",
        "github",
        "--upstream",
        "https://api.github.com",
        "--path-prefix",
        "/repos/acme/",
        "--format",
        "token {}",
        "--expires-in",
        "1h",
        "--value-file",
        value_file,
    ];
    args.extend_from_slice(extra);
    owner(&args)
}

fn install(node: &Node, file: &str) -> (i32, String, String) {
    parent(&node.sock, &["secret", "install", file])
}

#[test]
fn sealed_secret_lifecycle_on_sim() {
    let tmp = TempDir::new("sealing");
    let d = &tmp.0;
    let a = Node::start(&d.join("a"), &["--dev-secrets"]);
    let b = Node::start(&d.join("b"), &[]);
    let secret = secret_value();
    let value_file = d.join("value.txt");
    std::fs::write(&value_file, format!("{secret}\n")).unwrap();
    let vf = value_file.to_str().unwrap();
    let mut outputs = String::new();
    let mut keep = |(code, out, err): (i32, String, String)| {
        outputs.push_str(&out);
        outputs.push_str(&err);
        (code, out, err)
    };

    // The HPKE key: in the identity, with the platform's honesty about host memory.
    let id = a.identity();
    let hpke = id["hpke"]["key"].as_str().unwrap().to_owned();
    assert_eq!(id["hpke"]["suite"], "HPKE-4");
    assert_eq!(HpkePublicKey::from_b64(&hpke).unwrap().as_bytes().len(), 32);
    assert_eq!(id["secrets"]["keys_in_host_memory"], true);
    assert_eq!(id["secrets"]["dev_secrets"], true);
    assert_eq!(b.identity()["secrets"]["accepted"], false);

    let (owner_did, key) = keygen(d, "owner");
    let (_, mallory_key) = keygen(d, "mallory");
    let policy = a.policy("policy.toml", "https://api.github.com/repos/acme/", None);
    let wrong = a.policy(
        "wrong.toml",
        "https://api.github.com/repos/acme/",
        Some(&"ab".repeat(48)),
    );

    // Refused by the owner's own checks, before anything is sealed.
    let (code, _, err) = keep(seal(&key, &wrong, &a, vf, &["--allow-dev-platform"]));
    assert_eq!(code, 1);
    assert!(err.contains("secret.measurement"), "{err}");
    let (code, _, err) = keep(seal(&key, &policy, &a, vf, &["--allow-dev-platform"]));
    assert_eq!(code, 1);
    assert!(err.contains("secret.other_owner"), "not locked yet: {err}");
    a.lock(&key);
    let (code, _, err) = keep(seal(&key, &policy, &a, vf, &[]));
    assert_eq!(code, 1);
    assert!(err.contains("secret.sim_platform"), "{err}");

    // An OAuth usage whose value is not the refresher's JSON: refused before sealing.
    let (code, _, err) = keep(seal(
        &key,
        &policy,
        &a,
        vf,
        &[
            "--allow-dev-platform",
            "--oauth-token-endpoint",
            "https://api.github.com/login/oauth/access_token",
            "--oauth-client-id",
            "cid",
        ],
    ));
    assert_eq!(code, 1);
    assert!(err.contains("secret.usage_invalid"), "{err}");

    // Sealed and installed; the chain names the secret and the ciphertext digest.
    let bundle = a.path("github.sealed");
    let (code, _, err) = keep(seal(
        &key,
        &policy,
        &a,
        vf,
        &["--allow-dev-platform", "--out", &bundle],
    ));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = keep(install(&a, &bundle));
    assert_eq!(code, 0, "{err}");
    let installed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(installed["name"], "github");
    let digest = installed["digest"].as_str().unwrap().to_owned();
    let (_, chain, _) = keep(parent(&a.sock, &["contract", "list"]));
    assert!(chain.contains(&format!("github {digest}")), "{chain}");

    // The enclave's refusals.
    let raw = std::fs::read(&bundle).unwrap();
    let mut flipped = raw.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x40;
    std::fs::write(d.join("flipped.sealed"), &flipped).unwrap();
    let (code, _, err) = keep(install(&a, d.join("flipped.sealed").to_str().unwrap()));
    assert_eq!(code, 1);
    assert!(err.contains("secret.tampered"), "{err}");

    let target = SealTarget {
        hpke: HpkePublicKey::from_b64(&hpke).unwrap(),
        jkt: a.identity()["jkt"].as_str().unwrap().to_owned(),
    };
    let usage = SecretUsage {
        name: "github".into(),
        upstream: "https://api.github.com".into(),
        path_prefix: "/repos/acme/".into(),
        header: "authorization".into(),
        format: "token {}".into(),
        cas: vec![],
        expires_at: now() + 3600,
        credential_endpoints: vec![],
        kind: SecretKind::Static,
    };
    let mallory = OwnerKey::from_key_file(&std::fs::read_to_string(&mallory_key).unwrap()).unwrap();
    let evil = seal_bundle(&mallory, &target, &usage, b"evil", now()).unwrap();
    std::fs::write(d.join("mallory.sealed"), &evil.bytes).unwrap();
    let (code, _, err) = keep(install(&a, d.join("mallory.sealed").to_str().unwrap()));
    assert_eq!(code, 1);
    assert!(err.contains("secret.other_owner"), "{err}");

    let owner_key = OwnerKey::from_key_file(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(owner_key.did(), owner_did);
    let mut short = usage.clone();
    short.expires_at = now() - 60;
    let expired = seal_bundle(&owner_key, &target, &short, b"old", now() - 120).unwrap();
    std::fs::write(d.join("expired.sealed"), &expired.bytes).unwrap();
    let (code, _, err) = keep(install(&a, d.join("expired.sealed").to_str().unwrap()));
    assert_eq!(code, 1);
    assert!(err.contains("secret.expired"), "{err}");

    // Sealed for enclave b (same owner): a refuses it; b refuses every secret on sim without
    // --dev-secrets.
    b.lock(&key);
    let policy_b = b.policy("policy.toml", "https://api.github.com/repos/acme/", None);
    let bundle_b = b.path("github.sealed");
    let (code, _, err) = keep(seal(
        &key,
        &policy_b,
        &b,
        vf,
        &["--allow-dev-platform", "--out", &bundle_b],
    ));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = keep(install(&a, &bundle_b));
    assert_eq!(code, 1);
    assert!(err.contains("secret.sealed_for_other_enclave"), "{err}");
    let (code, _, err) = keep(install(&b, &bundle_b));
    assert_eq!(code, 1);
    assert!(err.contains("secret.sim_platform"), "{err}");

    // Restart: new keys. The old bundle is refused; one command re-seals and installs.
    let mut logs = a.logs();
    let mut a = a;
    a.enclave.kill();
    a.enclave = start_enclave(&a.dir, &["--dev-secrets"]);
    let mut id2 = serde_json::Value::Null;
    for _ in 0..100 {
        if let Ok((200, body)) = http(&a.sock, "GET", "/v1/identity", None, T) {
            id2 = serde_json::from_str(&body).unwrap();
            if id2["hpke"]["key"].as_str() != Some(hpke.as_str()) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(
        id2["hpke"]["key"].as_str(),
        Some(hpke.as_str()),
        "a new HPKE key"
    );
    a.lock(&key);
    let (code, _, err) = keep(install(&a, &bundle));
    assert_eq!(code, 1);
    assert!(err.contains("secret.sealed_for_other_enclave"), "{err}");
    let policy2 = a.policy("policy2.toml", "https://api.github.com/repos/acme/", None);
    let resealed = d.join("resealed.sealed");
    let mut reseal = |like: &str, name: &str, out: &Path| {
        keep(owner(&[
            "seal",
            "--key",
            &key,
            "--policy",
            &policy2,
            "--socket",
            a.sock.to_str().unwrap(),
            "--like",
            like,
            "--name",
            name,
            "--yes",
            "--value-file",
            vf,
            "--allow-dev-platform",
            "--out",
            out.to_str().unwrap(),
            "--install",
        ]))
    };
    // Finding 12: --like must name the bundle's own secret (a swapped file is refused).
    let (code, _, err) = reseal(&bundle, "stripe", &resealed);
    assert_ne!(code, 0);
    assert!(err.contains("not of --name"), "{err}");
    let (code, out, err) = reseal(&bundle, "github", &resealed);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\":\"github\""), "{out}");
    assert!(err.contains("re-sealing secret \"github\""), "{err}");
    assert!(err.contains("https://api.github.com/repos/acme/"), "{err}");
    // Finding 5: re-sealing again at once (same second) seals a later iat, so the enclave
    // takes it (a same-second bundle would be secret.replayed).
    let (code, out, err) = reseal(
        resealed.to_str().unwrap(),
        "github",
        &d.join("again.sealed"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\":\"github\""), "{out}");

    // Nothing the host can read holds the secret.
    logs.push_str(&a.logs());
    logs.push_str(&b.logs());
    assert_absent("the daemon and enclave logs", &logs, &secret);
    assert_absent("the CLI outputs", &outputs, &secret);
    assert_absent("the sealed bundle", &String::from_utf8_lossy(&raw), &secret);
}

#[test]
fn sealed_data_opens_under_a_grant_within_its_budget() {
    let tmp = TempDir::new("sealed-data");
    let d = &tmp.0;
    let a = Node::start(&d.join("a"), &["--dev-secrets"]);
    let (_, key) = keygen(d, "owner");
    a.lock(&key);
    let did = a.did();
    let (code, contract, err) = owner(&[
        "grant",
        "--key",
        &key,
        "--subject",
        &did,
        "--open",
        "report=2",
        "--method",
        "GET",
        "--valid-for",
        "1h",
        "--no-revocation",
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(d.join("contract.jwt"), contract).unwrap();
    let (code, _, err) = parent(
        &a.sock,
        &[
            "contract",
            "install",
            d.join("contract.jwt").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");

    let policy = a.policy("policy.toml", "https://reports.example/", None);
    let (status, ev) = http(&a.sock, "GET", "/v1/evidence", None, T).unwrap();
    assert_eq!(status, 200);
    let ev: serde_json::Value = serde_json::from_str(&ev).unwrap();
    std::fs::write(d.join("evidence.b64"), ev["evidence"].as_str().unwrap()).unwrap();
    let data = format!("quarterly numbers {}", secret_value());
    std::fs::write(d.join("data.txt"), &data).unwrap();
    let verify_seal = |label: &str, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "seal".into(),
            "--evidence".into(),
            d.join("evidence.b64").display().to_string(),
            "--policy".into(),
            policy.clone(),
            "--audience".into(),
            "https://reports.example/q3".into(),
            "--label".into(),
            label.into(),
            "--in".into(),
            d.join("data.txt").display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let out = Command::new(bin("cada-verify"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    // Sim evidence only with the development flag; another audience is not accepted.
    let (code, out) = verify_seal("report", &[]);
    assert_eq!(code, 1);
    assert!(out.contains("secret.sim_platform"), "{out}");
    let (code, env) = verify_seal("report", &["--allow-dev-platform"]);
    assert_eq!(code, 0, "{env}");
    assert!(!env.contains("quarterly"));
    std::fs::write(d.join("report.env"), &env).unwrap();
    let (code, other) = verify_seal("other", &["--allow-dev-platform"]);
    assert_eq!(code, 0);
    std::fs::write(d.join("other.env"), &other).unwrap();

    let open = |label: &str, file: &str| {
        parent(
            &a.sock,
            &["open", "--label", label, d.join(file).to_str().unwrap()],
        )
    };
    let (code, out, err) = open("report", "report.env");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, data);
    assert!(err.contains("1 of 2"), "{err}");
    // The envelope names its label: opened as another label, the AEAD refuses.
    let (code, _, err) = open("report", "other.env");
    assert_eq!(code, 1);
    assert!(err.contains("secret.tampered"), "{err}");
    let (code, _, err) = open("other", "other.env");
    assert_eq!(code, 1);
    assert!(err.contains("secret.open_not_granted"), "{err}");
    let (code, out, _) = open("report", "report.env");
    assert_eq!((code, out.as_str()), (0, data.as_str()));
    let (code, _, err) = open("report", "report.env");
    assert_eq!(code, 1);
    assert!(err.contains("secret.open_budget"), "{err}");
    let (_, chain, _) = parent(&a.sock, &["contract", "list"]);
    assert_eq!(chain.matches("\"open\"").count(), 2, "{chain}");
    assert!(chain.contains("secret.open_budget open report"), "{chain}");
}

/// python-cwt, installed pinned into a directory this test owns.
fn cwt_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cose-python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/cose/install.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "installing python-cwt failed (the interop test needs PyPI; it does not skip):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("bin/python")
}

fn py(python: &Path, args: &[String]) -> Result<Vec<u8>, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/cose/cose_hpke.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(hex::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn cose_hpke_interoperates_with_python_cwt() {
    let python = cwt_python();
    let mut d = [0u8; 32];
    aws_lc_rs::rand::fill(&mut d).unwrap();
    let kp = HpkeKeyPair::from_private_bytes(&d).unwrap();
    let target = SealTarget {
        hpke: kp.public(),
        jkt: "interop-jkt".into(),
    };
    let x = hex::encode(kp.public().as_bytes());
    let kid = hex::encode(kp.public().kid());
    let aad = hex::encode(data_context(&target, "report"));

    // python-cwt seals (HPKE-4 COSE_Encrypt0 with our context as external_aad); CADA opens.
    let msg = py(
        &python,
        &[
            "seal".into(),
            x.clone(),
            kid.clone(),
            aad.clone(),
            hex::encode(b"from python"),
        ],
    )
    .unwrap();
    assert_eq!(
        open_data(&kp, &target.jkt, "report", &msg)
            .unwrap()
            .as_slice(),
        b"from python"
    );
    assert_eq!(
        open_data(&kp, &target.jkt, "other", &msg)
            .unwrap_err()
            .code(),
        "secret.tampered"
    );

    // CADA seals; python-cwt opens with the same context, and not with another.
    let env = seal_data(&target, "report", b"from rust").unwrap();
    let args = |aad: &str| {
        vec![
            "open".to_owned(),
            hex::encode(d),
            x.clone(),
            kid.clone(),
            aad.to_owned(),
            hex::encode(&env),
        ]
    };
    assert_eq!(py(&python, &args(&aad)).unwrap(), b"from rust");
    let other = hex::encode(data_context(&target, "other"));
    let err = py(&python, &args(&other)).unwrap_err();
    assert!(err.contains("Failed to open"), "{err}");

    // The owner-signed bundle: python-cwt verifies the COSE_Sign1 (Ed25519) and opens the
    // inner COSE_Encrypt0 with the bundle's context as external_aad.
    let owner = OwnerKey::generate(cada_contract::OwnerAlg::Ed25519).unwrap();
    let usage = SecretUsage {
        name: "github".into(),
        upstream: "https://api.github.com".into(),
        path_prefix: "/".into(),
        header: "authorization".into(),
        format: "Bearer {}".into(),
        cas: vec![],
        expires_at: now() + 600,
        credential_endpoints: vec![],
        kind: SecretKind::Static,
    };
    let bundle = seal_bundle(&owner, &target, &usage, b"ghp_interop", now()).unwrap();
    let owner_x = hex::encode(owner.public_key().raw());
    let owner_kid = hex::encode(owner.kid());
    let opened = py(
        &python,
        &[
            "bundle".into(),
            owner_x.clone(),
            owner_kid.clone(),
            hex::encode(d),
            x.clone(),
            hex::encode(&bundle.bytes),
        ],
    )
    .unwrap();
    assert_eq!(opened, b"ghp_interop");
    let mut bad = bundle.bytes.clone();
    let at = bad.len() - 3;
    bad[at] ^= 1;
    assert!(py(
        &python,
        &[
            "bundle".into(),
            owner_x,
            hex::encode(d),
            x,
            hex::encode(&bad)
        ]
    )
    .is_err());
}

/// The evidence binds the HPKE key like the signing key, on both evidence formats: the
/// owner's check (`attested_target`) accepts the enclave's own evidence and returns its HPKE
/// key, and refuses the same evidence whose binding names another HPKE key — Nitro-format
/// `user_data` (sim) and SEV-SNP `report_data` = SHA-512(binding ‖ nonce) (sim-snp) both
/// cover it (in process: the same code as the binaries).
#[test]
fn the_evidence_binds_the_hpke_key_on_both_formats() {
    use cada_attestation_verifier::chain::TrustAnchor;
    use cada_attestation_verifier::seal::attested_target;
    use cada_attestation_verifier::{Policy, UnixTime, Verifier, VerifierOptions};
    use cada_enclave::key::SigningKey;
    use cada_enclave::platform::{sim::Sim, sim_snp::SimSnp, Platform};
    use cada_enclave::signer::{DelegationPolicy, Signer};
    use cada_protocol::binding::KeyBinding;

    for snp in [false, true] {
        let (platform, root): (Box<dyn Platform>, Vec<u8>) = if snp {
            let p = SimSnp::new(None).unwrap();
            let r = p.root_der().to_vec();
            (Box::new(p), r)
        } else {
            let p = Sim::new(None).unwrap();
            let r = p.root_der().to_vec();
            (Box::new(p), r)
        };
        let signer = Signer::new(
            SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap(),
            platform,
            DelegationPolicy::default(),
        )
        .unwrap();
        let m = signer.measurements().unwrap();
        let (name, value) = if snp {
            ("MEASUREMENT", m["MEASUREMENT"].clone())
        } else {
            ("PCR0", m["PCR0"].clone())
        };
        let mut policy = Policy::from_toml(
            &format!(
                "[snp]\nfreshness = \"first_seen\"\n[[audience]]\nprefix = \"https://api.github.com/\"\nmeasurements = [{{ {name} = \"{value}\" }}]\n"
            ),
            Path::new("."),
            "test",
        )
        .unwrap();
        let anchor = TrustAnchor::from_der("sim", &root).unwrap();
        if snp {
            policy.snp_roots.add(anchor);
        } else {
            policy.nitro_roots.add(anchor);
        }
        let v = Verifier::new(policy, VerifierOptions::default());
        let env = signer.attest(b"nonce-1").unwrap();
        let at = UnixTime::now();
        let (key, target) = attested_target(
            &v,
            &env,
            Some(b"nonce-1"),
            "https://api.github.com/x",
            at,
            true,
        )
        .unwrap();
        assert_eq!(target.hpke, signer.hpke().public(), "snp={snp}");
        assert_eq!(target.jkt, key.jkt);
        // Without the development flag, a sim platform is refused.
        let e = attested_target(
            &v,
            &env,
            Some(b"nonce-1"),
            "https://api.github.com/x",
            at,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code(), "secret.sim_platform");
        // Another HPKE key in the binding: the document no longer covers it.
        let mut b = KeyBinding::from_cbor(&env.binding).unwrap();
        b.hpke = Some(HpkeKeyPair::generate().public().as_bytes().to_vec());
        let mut forged = env.clone();
        forged.binding = b.to_cbor();
        let e = attested_target(
            &v,
            &forged,
            Some(b"nonce-1"),
            "https://api.github.com/x",
            at,
            true,
        )
        .unwrap_err();
        assert_eq!(e.code(), "secret.measurement", "snp={snp}: {e}");
        assert!(e.to_string().contains("binding"), "snp={snp}: {e}");
        // An audience the policy does not cover: refused.
        let e = attested_target(
            &v,
            &env,
            Some(b"nonce-1"),
            "https://evil.example/",
            at,
            true,
        )
        .unwrap_err();
        assert_eq!(e.code(), "secret.measurement");
    }
}

/// The owner's whole path on sim-snp: `cada-owner seal` verifies the SEV-SNP evidence (the
/// report's `report_data` covers the binding with the HPKE key) under a policy naming the
/// sim-snp root and the MEASUREMENT, seals, and the enclave installs it; a policy with
/// another MEASUREMENT is refused (`secret.measurement`).
#[test]
fn cada_owner_seal_on_sim_snp() {
    let tmp = TempDir::new("sealing-snp");
    let d = &tmp.0;
    let a = Node::start_on(&d.join("a"), "sim-snp", &["--dev-secrets"]);
    let secret = secret_value();
    std::fs::write(d.join("value.txt"), &secret).unwrap();
    let vf = d.join("value.txt").display().to_string();
    let (_, key) = keygen(d, "owner");
    a.lock(&key);
    let wrong = a.policy(
        "wrong.toml",
        "https://api.github.com/repos/acme/",
        Some(&"cd".repeat(48)),
    );
    let (code, _, err) = seal(&key, &wrong, &a, &vf, &["--allow-dev-platform"]);
    assert_eq!(code, 1);
    assert!(err.contains("secret.measurement"), "{err}");
    let policy = a.policy("policy.toml", "https://api.github.com/repos/acme/", None);
    let bundle = a.path("github.sealed");
    let (code, _, err) = seal(
        &key,
        &policy,
        &a,
        &vf,
        &["--allow-dev-platform", "--out", &bundle],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = install(&a, &bundle);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\":\"github\""), "{out}");
    assert_absent("the daemon and enclave logs", &a.logs(), &secret);
}
