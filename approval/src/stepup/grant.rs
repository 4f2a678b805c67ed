//! The grant an approval signs: a one-transaction contract (schema 2) for the enclave key
//! that asked, whose only authority is one RFC 9396 `mcp_tool_call` detail.
//!
//! * subject: the enclave key's `did:key` (from its verified proof, never from the body);
//! * **no audiences**; methods: `POST` (a `tools/call` is a POST); no tools, scopes,
//!   resources or prompts — so the grant admits nothing but the call its detail covers
//!   (review stepup-1, finding 2: audiences copied from the agent's `audience` let the
//!   enclave sign any POST without tool calls under that prefix for the grant's minutes);
//!   what the MCP session needs besides (`initialize`, `notifications/initialized`,
//!   `ping`) is for `cada-contract`'s rules of details-only grants and the standing
//!   contract (`docs/contracts.md`);
//! * `authorization_details`: one detail — locations `[audience]`, the tool, an `eq`
//!   constraint for every argument the agent asked with (its exact value), no other
//!   arguments (`additional_arguments: false`), a fresh `urn:uuid` identifier;
//! * approve once: `single_use: true`, valid [`ONCE_SECS`] (5 minutes); approve for N
//!   minutes: the same tool within the same argument limits, not single use, valid N
//!   minutes (1..=[`MAX_MINUTES`]);
//! * the revocation entry the service was started with (`--status-list` and the next index
//!   of `--status-index-file`), or none (`--no-revocation`: the grant only expires), as the
//!   owner's CLI requires one or the other.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use cada_contract::{
    ArgConstraint, ArgValue, AuthorizationDetail, Contract, Grant, OwnerKey, StatusEntry, Subject,
    TrustedOwners,
};
use cada_protocol::stepup::StepUpRequest;

use super::error::StepUpError;

/// Validity of an "approve once" grant: 5 minutes.
pub const ONCE_SECS: u64 = 300;
/// Longest "approve for N minutes": 24 hours.
pub const MAX_MINUTES: u32 = 24 * 60;
/// Largest status-index file read.
const MAX_INDEX_FILE: u64 = 64;

/// How grants can be revoked.
#[derive(Debug)]
pub enum Revocation {
    /// Grants carry no status entry: they only expire (`--no-revocation`).
    None,
    /// Each grant gets the next index of this status list (`--status-list URL
    /// --status-index-file FILE`): the file holds the next free index as decimal text and
    /// is rewritten (written aside, synced, renamed) before each grant is signed, so an index
    /// is never handed out twice, across restarts too.
    List {
        /// The status list URL (as `cada-owner status-list new --url`).
        url: String,
        /// The file holding the next free index.
        index_file: PathBuf,
        /// Serializes allocations.
        lock: Mutex<()>,
    },
}

impl Revocation {
    /// A status list and its index file; the URL is checked now, and the file is created
    /// with `0` when missing.
    pub fn list(url: &str, index_file: PathBuf) -> Result<Self, StepUpError> {
        StatusEntry::new(url, 0).map_err(|e| StepUpError::Config(format!("--status-list: {e}")))?;
        if !index_file.exists() {
            write_index(&index_file, 0)?;
        }
        read_index(&index_file)?;
        Ok(Revocation::List {
            url: url.to_owned(),
            index_file,
            lock: Mutex::new(()),
        })
    }

    /// The next status entry (none without a list).
    fn next(&self) -> Result<Option<StatusEntry>, StepUpError> {
        match self {
            Revocation::None => Ok(None),
            Revocation::List {
                url,
                index_file,
                lock,
            } => {
                let _held = lock
                    .lock()
                    .map_err(|_| StepUpError::Grant("the status index lock is poisoned".into()))?;
                let i = read_index(index_file)?;
                let next = i
                    .checked_add(1)
                    .ok_or_else(|| StepUpError::Grant("the status index overflowed".into()))?;
                write_index(index_file, next)?;
                StatusEntry::new(url, i)
                    .map(Some)
                    .map_err(|e| StepUpError::Grant(format!("status entry {i}: {e}")))
            }
        }
    }
}

fn read_index(path: &std::path::Path) -> Result<u64, StepUpError> {
    let bad = |m: String| StepUpError::Grant(format!("{}: {m}", path.display()));
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_INDEX_FILE {
        return Err(bad("larger than a status index".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    text.trim()
        .parse()
        .map_err(|_| bad(format!("{:?} is not a status index", text.trim())))
}

fn write_index(path: &std::path::Path, i: u64) -> Result<(), StepUpError> {
    use std::io::Write;
    let bad = |e: std::io::Error| StepUpError::Grant(format!("{}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(bad)?;
    f.write_all(format!("{i}\n").as_bytes()).map_err(bad)?;
    f.sync_all().map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(bad)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// A signed grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    /// The compact `vc+jwt`.
    pub jwt: String,
    /// Its digest (`cada.dtc`).
    pub digest: String,
    /// Its credential id.
    pub id: String,
    /// The detail's identifier (the single-use key).
    pub identifier: String,
    /// End of validity (Unix seconds, exclusive).
    pub valid_until: u64,
}

/// Signs the grant for request `id` of enclave key `subject_did`, asking `req`: `minutes`
/// `None` for approve once, `Some(n)` for n minutes. `now` is Unix seconds.
pub fn mint(
    key: &OwnerKey,
    revocation: &Revocation,
    id: &str,
    subject_did: &str,
    req: &StepUpRequest,
    minutes: Option<u32>,
    now: u64,
) -> Result<Minted, StepUpError> {
    let secs = match minutes {
        None => ONCE_SECS,
        Some(n) if (1..=MAX_MINUTES).contains(&n) => u64::from(n) * 60,
        Some(n) => return Err(StepUpError::Minutes(n)),
    };
    let call = &req.request;
    let arguments: BTreeMap<String, ArgConstraint> = call
        .arguments
        .iter()
        .map(|(k, v)| {
            ArgValue::from_json(v)
                .map(|v| (k.clone(), ArgConstraint::Eq(v)))
                .map_err(|e| StepUpError::Grant(format!("argument {:?}: {e}", clip(k))))
        })
        .collect::<Result<_, _>>()?;
    let identifier = cada_contract::new_urn_uuid()
        .map_err(|e| StepUpError::Grant(format!("the detail identifier: {e}")))?;
    let detail = AuthorizationDetail {
        locations: vec![call.audience.clone()],
        tool: call.tool.clone(),
        arguments,
        additional_arguments: false,
        single_use: minutes.is_none(),
        identifier: identifier.clone(),
    };
    let valid_until = now.saturating_add(secs);
    // Its only authority is the detail: no audiences (review stepup-1, finding 2).
    let mut g = Grant::new(
        Subject::Key(subject_did.to_owned()),
        Vec::new(),
        vec!["POST".to_owned()],
        now,
        valid_until,
    );
    g.authorization_details = vec![detail];
    g.name = Some(format!("step-up {id}"));
    g.status = revocation.next()?;
    let jwt = g
        .issue(key, now)
        .map_err(|e| StepUpError::Grant(format!("[{}] {e}", e.code())))?;
    // What was signed verifies under the owner's own key, or it is not handed out.
    let mut trust = TrustedOwners::new();
    trust
        .add_jwk(key.did(), key.kid(), &key.public_key().jwk())
        .map_err(|e| StepUpError::Grant(e.to_string()))?;
    let c = Contract::verify(&jwt, &trust, now).map_err(|e| {
        StepUpError::Grant(format!("the grant does not verify: [{}] {e}", e.code()))
    })?;
    Ok(Minted {
        digest: c.digest().to_owned(),
        id: c.id().to_owned(),
        identifier,
        valid_until,
        jwt,
    })
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_contract::{OwnerAlg, RequestView};
    use cada_protocol::url::HttpUrl;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    fn request() -> StepUpRequest {
        StepUpRequest::parse(
            json!({
                "contract": "dtc",
                "request": {"audience": "https://mcp.example/mcp", "method": "POST",
                            "tool": "transfer",
                            "arguments": {"amount": 500, "currency": "USD", "to": "alice",
                                          "meta": {"memo": "inv-1", "tags": [1, 2]}}},
                "refusal": {"code": "contract.not_permitted.tool", "by": "enclave",
                            "server": "https://mcp.example/mcp"},
                "want": "once"
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    fn verified(m: &Minted, key: &OwnerKey) -> cada_contract::VerifiedContract {
        let mut trust = TrustedOwners::new();
        trust
            .add_jwk(key.did(), key.kid(), &key.public_key().jwk())
            .unwrap();
        Contract::verify(&m.jwt, &trust, NOW + 1).unwrap()
    }

    #[test]
    fn approve_once_permits_exactly_that_call_with_exactly_those_arguments() {
        let key = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let m = mint(
            &key,
            &Revocation::None,
            "id1",
            agent.did(),
            &request(),
            None,
            NOW,
        )
        .unwrap();
        let c = verified(&m, &key);
        assert_eq!(c.schema(), 2);
        assert_eq!(c.owner(), key.did());
        assert_eq!(c.valid_until(), NOW + ONCE_SECS);
        assert!(c.tools().is_empty(), "its only authority is the detail");
        assert!(c.status_entry().is_none());
        c.check_subject(agent.did(), &BTreeMap::new()).unwrap();
        assert!(
            c.check_subject(key.did(), &BTreeMap::new()).is_err(),
            "only for the asking key"
        );
        let [d] = c.authorization_details() else {
            panic!("one detail")
        };
        assert!(d.single_use);
        assert!(!d.additional_arguments);
        assert_eq!(d.identifier, m.identifier);
        let mcp = HttpUrl::parse_canonical("https://mcp.example/mcp").unwrap();
        assert!(d.permits_call(&mcp, "transfer"));
        assert!(!d.permits_call(&mcp, "delete_all"), "another tool");
        let other = HttpUrl::parse_canonical("https://other.example/mcp").unwrap();
        assert!(!d.permits_call(&other, "transfer"), "another server");
        // Exactly the arguments asked with (member order does not matter).
        d.check_arguments(&args(
            json!({"to": "alice", "currency": "USD", "amount": 500,
                                        "meta": {"tags": [1, 2], "memo": "inv-1"}}),
        ))
        .unwrap();
        for (bad, code) in [
            (
                json!({"amount": 501, "currency": "USD", "to": "alice",
                       "meta": {"memo": "inv-1", "tags": [1, 2]}}),
                "grant.arguments.eq",
            ),
            (
                json!({"amount": "500", "currency": "USD", "to": "alice",
                       "meta": {"memo": "inv-1", "tags": [1, 2]}}),
                "grant.arguments.eq",
            ),
            (
                json!({"amount": 500, "currency": "USD", "to": "alice",
                       "meta": {"memo": "inv-1", "tags": [1, 2, 3]}}),
                "grant.arguments.eq",
            ),
            (
                json!({"amount": 500, "currency": "USD",
                       "meta": {"memo": "inv-1", "tags": [1, 2]}}),
                "grant.arguments.missing",
            ),
            (
                json!({"amount": 500, "currency": "USD", "to": "alice", "fee": 0,
                       "meta": {"memo": "inv-1", "tags": [1, 2]}}),
                "grant.arguments.unlisted",
            ),
        ] {
            let e = d.check_arguments(&args(bad.clone())).unwrap_err();
            assert_eq!(e.code(), code, "{bad}");
        }
        // Nothing but the call: no audiences, so no request without a covered tools/call —
        // not a POST to the server itself, nor a REST call under it (review stepup-1,
        // finding 2).
        assert!(c.audiences().is_empty(), "its only authority is the detail");
        let post = |url: &str, method: &str| {
            c.permits(
                &RequestView {
                    method,
                    url: &HttpUrl::parse_canonical(url).unwrap(),
                    scopes: &[],
                    ctx: &BTreeMap::new(),
                    call: None,
                },
                NOW + 1,
            )
        };
        for (url, method) in [
            ("https://mcp.example/mcp", "GET"),
            ("https://mcp.example/mcp", "POST"),
            ("https://mcp.example/mcp/api/transfer", "POST"),
            ("https://other.example/mcp", "POST"),
        ] {
            assert_eq!(
                post(url, method).unwrap_err().code(),
                "grant.tool",
                "{method} {url}"
            );
        }
        // Expired after five minutes.
        assert!(c.check_time(NOW + ONCE_SECS).is_err());
    }

    #[test]
    fn approve_for_minutes_keeps_the_limits_without_single_use() {
        let key = OwnerKey::generate(OwnerAlg::Es256).unwrap();
        let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let m = mint(
            &key,
            &Revocation::None,
            "id2",
            agent.did(),
            &request(),
            Some(30),
            NOW,
        )
        .unwrap();
        let c = verified(&m, &key);
        assert_eq!(c.valid_until(), NOW + 1800);
        let [d] = c.authorization_details() else {
            panic!("one detail")
        };
        assert!(!d.single_use);
        assert!(d.has_argument_limits());
        assert_eq!(
            d.check_arguments(&args(json!({"amount": 1})))
                .unwrap_err()
                .code(),
            "grant.arguments.eq"
        );
        for bad in [0, MAX_MINUTES + 1] {
            assert_eq!(
                mint(
                    &key,
                    &Revocation::None,
                    "id3",
                    agent.did(),
                    &request(),
                    Some(bad),
                    NOW
                )
                .unwrap_err()
                .code(),
                "stepup.minutes"
            );
        }
        assert!(mint(
            &key,
            &Revocation::None,
            "id4",
            agent.did(),
            &request(),
            Some(MAX_MINUTES),
            NOW
        )
        .is_ok());
    }

    #[test]
    fn each_grant_gets_the_next_status_index_across_restarts() {
        let dir = std::env::temp_dir().join(format!("cada-approval-idx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("next-index");
        let key = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let agent = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let url = "https://owner.example/status/1";
        let r = Revocation::list(url, file.clone()).unwrap();
        let index = |m: &Minted| {
            let c = verified(m, &key);
            let e = c.status_entry().unwrap();
            (e.list.clone(), e.index)
        };
        let a = mint(&key, &r, "a", agent.did(), &request(), None, NOW).unwrap();
        let b = mint(&key, &r, "b", agent.did(), &request(), None, NOW).unwrap();
        assert_eq!(index(&a), (url.to_owned(), 0));
        assert_eq!(index(&b), (url.to_owned(), 1));
        drop(r);
        let r = Revocation::list(url, file.clone()).unwrap();
        let c = mint(&key, &r, "c", agent.did(), &request(), None, NOW).unwrap();
        assert_eq!(index(&c).1, 2);
        std::fs::write(&file, "not a number").unwrap();
        assert_eq!(
            mint(&key, &r, "d", agent.did(), &request(), None, NOW)
                .unwrap_err()
                .code(),
            "stepup.grant"
        );
        assert!(Revocation::list("ftp://x", dir.join("other")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
