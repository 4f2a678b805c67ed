//! The in-enclave secret store: sealed secrets the locked owner installed
//! (`secret_install`), held in zeroizing memory for the life of the process, and the open
//! counters of data envelopes (`open`).
//!
//! Nothing here is ever serialized, logged or sent: the only way out of the store is
//! [`SecretStore::get`], which the egress code uses to build one upstream request inside the
//! enclave. A restarted enclave starts empty, with new keys: the owner re-seals
//! (`cada-owner seal --reseal`).
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use aws_lc_rs::digest::{digest, SHA256};
use cada_protocol::sealed::{OpenRequest, OpenResponse, SecretInstallResponse};
use cada_secrets::data::open_data;
use cada_secrets::{open_bundle, OpenedSecret, Recipient, SecretUsage, SecretsError};
use zeroize::Zeroizing;

use crate::signer::Signer;
use crate::EnclaveError;

/// Most secrets one enclave holds.
pub const MAX_SECRETS: usize = 64;

/// One installed secret.
pub struct InstalledSecret {
    /// The owner-signed usage.
    pub usage: SecretUsage,
    /// The value (wiped when the last reference is dropped).
    pub value: Zeroizing<Vec<u8>>,
    /// base64url SHA-256 of the bundle's `COSE_Encrypt0` (as chained).
    pub digest: String,
    /// The owner's DID.
    pub owner: String,
    /// When the owner sealed it (unix seconds).
    pub iat: u64,
}

impl std::fmt::Debug for InstalledSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the value.
        write!(f, "InstalledSecret({}, {})", self.usage.name, self.digest)
    }
}

impl From<OpenedSecret> for InstalledSecret {
    fn from(o: OpenedSecret) -> Self {
        InstalledSecret {
            usage: o.usage,
            value: o.value,
            digest: o.digest,
            owner: o.owner,
            iat: o.iat,
        }
    }
}

/// The installed secrets by name, and the open counters.
#[derive(Default)]
pub struct SecretStore {
    secrets: RwLock<BTreeMap<String, Arc<InstalledSecret>>>,
    /// Opens per (contract digest, label).
    opens: Mutex<BTreeMap<(String, String), u64>>,
}

impl std::fmt::Debug for SecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretStore({:?})", self.names())
    }
}

impl SecretStore {
    /// The secret `name`, if installed.
    pub fn get(&self, name: &str) -> Option<Arc<InstalledSecret>> {
        self.secrets.read().ok()?.get(name).cloned()
    }

    /// The names of the installed secrets.
    pub fn names(&self) -> Vec<String> {
        self.secrets
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Installs `secret`, replacing one of the same name sealed strictly later
    /// (`secret.replayed`, [`check_not_replayed`]: an older bundle, or another bundle of
    /// the same second, must not roll back a rotated credential; re-installing the very
    /// same bundle is accepted). At most [`MAX_SECRETS`] names (`secret.too_large`).
    pub fn insert(&self, secret: InstalledSecret) -> Result<(), SecretsError> {
        let mut m = self
            .secrets
            .write()
            .map_err(|_| SecretsError::Key("secret store lock".into()))?;
        if let Some(old) = m.get(&secret.usage.name) {
            check_not_replayed(old, &secret)?;
        } else if m.len() >= MAX_SECRETS {
            return Err(SecretsError::TooLarge {
                what: "installed secrets",
                len: m.len() + 1,
                max: MAX_SECRETS,
            });
        }
        m.insert(secret.usage.name.clone(), Arc::new(secret));
        Ok(())
    }

    /// Counts one open of `label` under the contract `dtc` whose grant allows `budget`;
    /// the number of opens so far, this one included, or `secret.open_budget` when spent.
    pub fn count_open(&self, dtc: &str, label: &str, budget: u64) -> Result<u64, SecretsError> {
        let mut m = self
            .opens
            .lock()
            .map_err(|_| SecretsError::Key("open counter lock".into()))?;
        let used = m.entry((dtc.to_owned(), label.to_owned())).or_insert(0);
        if *used >= budget {
            return Err(SecretsError::OpenBudget(format!(
                "the {budget} opens of {label:?} granted by contract {dtc} are spent"
            )));
        }
        *used += 1;
        Ok(*used)
    }
}

fn refused(e: &SecretsError) -> EnclaveError {
    // `EnclaveError::Secret` prints `code: message`; the error's own text starts with the code.
    let text = e.to_string();
    let message = text
        .strip_prefix(e.code())
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(&text);
    EnclaveError::secret(e.code(), message)
}

/// Secrets are refused on a platform whose keys live in host memory unless `--dev-secrets`.
fn check_platform(signer: &Signer) -> Result<(), SecretsError> {
    if signer.keys_in_host_memory() && !signer.dev_secrets() {
        return Err(SecretsError::SimPlatform(
            "this platform keeps its keys in host memory, where the host can read every \
             secret; run on nitro or sev-snp, or start cada-enclave with --dev-secrets for \
             development"
                .into(),
        ));
    }
    Ok(())
}

/// `secret_install` (see [`Signer::install_secret`]).
pub(crate) fn install(
    signer: &Signer,
    bundle: &[u8],
    now: u64,
) -> Result<SecretInstallResponse, EnclaveError> {
    let digest_of_bundle = || cada_protocol::b64::encode(digest(&SHA256, bundle));
    let result = check_platform(signer).and_then(|()| {
        let owner = signer
            .locked_owner()
            .map_err(|e| SecretsError::Key(e.to_string()))?;
        let opened = open_bundle(
            bundle,
            &Recipient {
                keys: signer.hpke(),
                jkt: signer.key().jkt(),
                owner: owner.as_deref(),
            },
            now,
        )?;
        // A value too short to be searched for in answers (adversary22 finding 3).
        opened.usage.check_value(&opened.value)?;
        let name = opened.usage.name.clone();
        let digest = opened.digest.clone();
        let expires_at = opened.usage.expires_at;
        signer.secrets().insert(opened.into())?;
        Ok((name, digest, expires_at))
    });
    match result {
        Ok((name, digest, expires_at)) => {
            // The chain names the secret and its ciphertext digest, never the value.
            let seq = signer.secret_event("secret_install", &format!("{name} {digest}"), now)?;
            tracing::info!(secret = %name, %digest, "sealed secret installed");
            Ok(SecretInstallResponse {
                name,
                digest,
                expires_at,
                seq,
            })
        }
        Err(e) => {
            signer.secret_event(
                "refusal",
                &format!("{} secret_install {}", e.code(), digest_of_bundle()),
                now,
            )?;
            Err(refused(&e))
        }
    }
}

/// An open that succeeded: contract digest, budget, opens so far, plaintext.
type Opened = (String, u64, u64, Zeroizing<Vec<u8>>);

/// `open` (see [`Signer::open_data`]).
pub(crate) fn open(
    signer: &Signer,
    req: &OpenRequest,
    now: u64,
) -> Result<OpenResponse, EnclaveError> {
    let env_digest = cada_protocol::b64::encode(digest(&SHA256, &req.envelope));
    let label: String = req.label.chars().take(64).collect();
    let step = || -> Result<Opened, EnclaveError> {
        check_platform(signer).map_err(|e| refused(&e))?;
        if !cada_secrets::data::valid_label(&req.label) {
            return Err(refused(&SecretsError::UsageInvalid {
                field: "label",
                reason: "a label is 1–64 characters of a-z, 0-9, '_' and '-'".into(),
            }));
        }
        let (dtc, budget) = signer.open_grant(&req.label, now)?;
        // Decrypt before counting: an envelope that does not open spends no budget.
        let plaintext = open_data(signer.hpke(), signer.key().jkt(), &req.label, &req.envelope)
            .map_err(|e| refused(&e))?;
        let used = signer
            .secrets()
            .count_open(&dtc, &req.label, budget)
            .map_err(|e| refused(&e))?;
        Ok((dtc, budget, used, plaintext))
    };
    match step() {
        Ok((dtc, budget, used, plaintext)) => {
            let seq = signer.secret_event(
                "open",
                &format!("{label} {env_digest} {dtc} {used}/{budget}"),
                now,
            )?;
            Ok(OpenResponse {
                plaintext: plaintext.to_vec(),
                dtc,
                used,
                budget,
                seq,
            })
        }
        Err(e) => {
            let code = e.rule_code().unwrap_or("secret.open");
            signer.secret_event("refusal", &format!("{code} open {label} {env_digest}"), now)?;
            Err(e)
        }
    }
}

/// The rollback rule of [`SecretStore::insert`]: `new` may replace `old` (same name) only
/// if it was sealed strictly later, or if it is the very same bundle (same ciphertext
/// digest: a re-install). `iat` has one-second resolution, so two different bundles of the
/// same second are indistinguishable in age: accepting either after the other would let the
/// host swap them back and forth (adversary22 finding 5). `cada-owner seal --like` never
/// seals at or below the earlier bundle's `iat`.
fn check_not_replayed(old: &InstalledSecret, new: &InstalledSecret) -> Result<(), SecretsError> {
    if new.iat > old.iat || (new.iat == old.iat && new.digest == old.digest) {
        return Ok(());
    }
    let when = if new.iat == old.iat {
        "sealed in the same second but is another bundle"
    } else {
        "is older"
    };
    Err(SecretsError::Replayed(format!(
        "secret {} installed here was sealed at {}; this bundle ({}) {when}. \
         Seal the current value again (cada-owner seal --like seals it later)",
        new.usage.name, old.iat, new.iat
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_secrets::SecretKind;

    fn secret(name: &str, iat: u64) -> InstalledSecret {
        InstalledSecret {
            usage: SecretUsage {
                name: name.into(),
                upstream: "https://api.example.com".into(),
                path_prefix: "/".into(),
                header: "authorization".into(),
                format: "Bearer {}".into(),
                cas: vec![],
                expires_at: 2_000_000_000,
                credential_endpoints: vec![],
                kind: SecretKind::Static,
            },
            value: Zeroizing::new(b"v".to_vec()),
            digest: format!("d{iat}"),
            owner: "did:key:o".into(),
            iat,
        }
    }

    #[test]
    fn newer_bundles_replace_older_ones_never_the_reverse() {
        let s = SecretStore::default();
        s.insert(secret("a", 10)).unwrap();
        s.insert(secret("a", 10)).unwrap();
        // Another bundle of the same second: refused, the installed one stays.
        let mut twin = secret("a", 10);
        twin.digest = "other".into();
        assert_eq!(s.insert(twin).unwrap_err().code(), "secret.replayed");
        assert_eq!(s.get("a").unwrap().digest, "d10");
        s.insert(secret("a", 20)).unwrap();
        assert_eq!(s.get("a").unwrap().digest, "d20");
        assert_eq!(
            s.insert(secret("a", 15)).unwrap_err().code(),
            "secret.replayed"
        );
        assert_eq!(s.get("a").unwrap().digest, "d20");
        assert!(s.get("b").is_none());
        assert!(!format!("{:?}", s.get("a").unwrap()).contains("value"));
    }

    #[test]
    fn the_store_is_bounded() {
        let s = SecretStore::default();
        for i in 0..MAX_SECRETS {
            s.insert(secret(&format!("s{i}"), 1)).unwrap();
        }
        assert_eq!(
            s.insert(secret("one-more", 1)).unwrap_err().code(),
            "secret.too_large"
        );
        // Replacing an installed name is still possible.
        s.insert(secret("s0", 2)).unwrap();
    }

    #[test]
    fn opens_are_counted_per_contract_and_label() {
        let s = SecretStore::default();
        assert_eq!(s.count_open("c1", "l", 2).unwrap(), 1);
        assert_eq!(s.count_open("c1", "l", 2).unwrap(), 2);
        assert_eq!(
            s.count_open("c1", "l", 2).unwrap_err().code(),
            "secret.open_budget"
        );
        assert_eq!(s.count_open("c2", "l", 1).unwrap(), 1);
        assert_eq!(s.count_open("c1", "m", 1).unwrap(), 1);
    }

    mod through_the_signer {
        use super::*;
        use crate::key::SigningKey;
        use crate::signer::{DelegationPolicy, Signer};
        use cada_contract::{Grant, OpenGrant, OwnerAlg, OwnerKey, OwnerLock, Subject};
        use cada_protocol::binding::KeyBinding;
        use cada_protocol::envelope::EvidenceEnvelope;
        use cada_secrets::{seal_bundle, SealTarget};

        const VALUE: &[u8] = b"tok-SECRET-4242-value";

        fn now() -> u64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        }

        fn signer(dev: bool) -> Signer {
            let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
            let sim = crate::platform::sim::Sim::new(None).unwrap();
            let s = Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap();
            if dev {
                s.allow_dev_secrets();
            }
            s
        }

        fn lock(s: &Signer) -> OwnerKey {
            let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
            let lock = OwnerLock::issue(&owner, s.key().did(), now(), 300).unwrap();
            s.lock_owner(&lock).unwrap();
            owner
        }

        fn target(s: &Signer) -> SealTarget {
            // What the owner reads from the evidence: the binding's HPKE key and jkt.
            let env = s.attest(b"").unwrap();
            let b = KeyBinding::from_cbor(&env.binding).unwrap();
            SealTarget {
                hpke: cada_secrets::HpkePublicKey::from_bytes(&b.hpke.unwrap()).unwrap(),
                jkt: b.jkt,
            }
        }

        fn usage() -> SecretUsage {
            secret("github", 0).usage
        }

        fn code(r: Result<impl Sized, EnclaveError>) -> &'static str {
            match r {
                Ok(_) => "ok",
                Err(e) => e.rule_code().unwrap_or_else(|| panic!("{e}")),
            }
        }

        #[test]
        fn the_hpke_key_is_in_the_binding_and_in_describe() {
            let s = signer(false);
            let env: EvidenceEnvelope = s.attest(b"n").unwrap();
            let b = KeyBinding::from_cbor(&env.binding).unwrap();
            assert_eq!(
                b.hpke.as_deref(),
                Some(s.hpke().public().as_bytes().as_slice())
            );
            let d = s.describe().unwrap();
            assert_eq!(d.hpke, Some(s.hpke().public().to_b64()));
            assert!(d.keys_in_host_memory && !d.dev_secrets);
            // Locking keeps the HPKE key in the new binding.
            lock(&s);
            let b = KeyBinding::from_cbor(&s.attest(b"m").unwrap().binding).unwrap();
            assert!(b.owner.is_some());
            assert_eq!(
                b.hpke.as_deref(),
                Some(s.hpke().public().as_bytes().as_slice())
            );
        }

        #[test]
        fn install_only_from_the_locked_owner_and_chain_name_and_digest_never_the_value() {
            let s = signer(true);
            let t = target(&s);
            let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
            let b = seal_bundle(&owner, &t, &usage(), VALUE, now()).unwrap();
            // Not locked yet: refused.
            assert_eq!(code(s.install_secret(&b.bytes)), "secret.other_owner");
            let owner = lock(&s);
            // Sealed by someone else than the locked owner: refused.
            assert_eq!(code(s.install_secret(&b.bytes)), "secret.other_owner");
            let good = seal_bundle(&owner, &t, &usage(), VALUE, now()).unwrap();
            let r = s.install_secret(&good.bytes).unwrap();
            assert_eq!(
                (r.name.as_str(), r.digest.as_str()),
                ("github", good.digest.as_str())
            );
            assert_eq!(s.secrets().get("github").unwrap().value.as_slice(), VALUE);
            // Sealed for another enclave: refused, the installed one untouched.
            let other = signer(true);
            let elsewhere = seal_bundle(&owner, &target(&other), &usage(), b"x", now()).unwrap();
            assert_eq!(
                code(s.install_secret(&elsewhere.bytes)),
                "secret.sealed_for_other_enclave"
            );
            let mut flipped = good.bytes.clone();
            let at = flipped.len() - 10;
            flipped[at] ^= 1;
            assert_eq!(code(s.install_secret(&flipped)), "secret.tampered");
            // The chain: one install naming the secret and the digest; refusals with codes;
            // the value nowhere (raw, hex, base64url).
            let events = s.contracts().unwrap().events;
            let installs: Vec<_> = events
                .iter()
                .filter(|e| e.kind == "secret_install")
                .collect();
            assert_eq!(installs.len(), 1);
            assert_eq!(installs[0].detail, format!("github {}", good.digest));
            assert!(events.iter().any(|e| e.kind == "refusal"
                && e.detail
                    .starts_with("secret.sealed_for_other_enclave secret_install ")));
            let all = format!("{events:?}");
            for needle in [
                String::from_utf8(VALUE.to_vec()).unwrap(),
                hex::encode(VALUE),
                cada_protocol::b64::encode(VALUE),
            ] {
                assert!(!all.contains(&needle), "{needle} in the chain");
            }
        }

        #[test]
        fn sim_refuses_secrets_without_the_dev_flag() {
            let s = signer(false);
            let owner = lock(&s);
            let b = seal_bundle(&owner, &target(&s), &usage(), VALUE, now()).unwrap();
            assert_eq!(code(s.install_secret(&b.bytes)), "secret.sim_platform");
            assert!(s.secrets().get("github").is_none());
            let req = OpenRequest {
                envelope: vec![],
                label: "report".into(),
            };
            assert_eq!(code(s.open_data(&req)), "secret.sim_platform");
        }

        #[test]
        fn opens_need_a_grant_and_stop_at_its_budget() {
            let s = signer(true);
            let t = target(&s);
            let env = cada_secrets::data::seal_data(&t, "report", b"for the agent").unwrap();
            let req = |label: &str, envelope: &[u8]| OpenRequest {
                envelope: envelope.to_vec(),
                label: label.into(),
            };
            assert_eq!(
                code(s.open_data(&req("report", &env))),
                "secret.open_not_granted"
            );
            let owner = lock(&s);
            assert_eq!(code(s.open_data(&req("report", &env))), "contract.none");
            let mut g = Grant::new(
                Subject::Key(s.key().did().to_owned()),
                vec![],
                vec!["GET".into()],
                now() - 10,
                now() + 600,
            );
            g.opens = vec![OpenGrant {
                label: "report".into(),
                budget: 2,
            }];
            s.install_contract(&g.issue(&owner, now()).unwrap(), None)
                .unwrap();
            assert_eq!(
                code(s.open_data(&req("other", &env))),
                "secret.open_not_granted"
            );
            // Another label than sealed for: the AEAD refuses, and no budget is spent.
            let other_label = cada_secrets::data::seal_data(&t, "other", b"x").unwrap();
            assert_eq!(
                code(s.open_data(&req("report", &other_label))),
                "secret.tampered"
            );
            let first = s.open_data(&req("report", &env)).unwrap();
            assert_eq!(first.plaintext, b"for the agent");
            assert_eq!((first.used, first.budget), (1, 2));
            assert_eq!(s.open_data(&req("report", &env)).unwrap().used, 2);
            assert_eq!(
                code(s.open_data(&req("report", &env))),
                "secret.open_budget"
            );
            let events = s.contracts().unwrap().events;
            assert_eq!(events.iter().filter(|e| e.kind == "open").count(), 2);
            assert!(events
                .iter()
                .any(|e| e.detail.starts_with("secret.open_budget open report ")));
        }
    }
}
