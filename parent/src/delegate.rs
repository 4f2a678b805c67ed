//! Delegation on the agent side (issue 24): a planner agent hands a subtask to a worker
//! agent by having its enclave sign, for the worker enclave's key, a delegated contract
//! narrower than one it holds (docs/delegation.md).
//!
//! * `POST /v1/delegate` `{"parent": <cada.dtc of an installed contract>, "subject":
//!   <worker did:key>, "grant": {…narrowing…}, "minutes" | "valid_until", "status_index",
//!   "task"}` → the enclave's `delegate` op; the answer `{"chain": "C0~…~D", "digest",
//!   "status_index"}`. The enclave refuses anything wider than the parent (its message
//!   starts with the stable code, `delegation.*`), the daemon only relays.
//! * `cada-parent delegate --to DID --contract DTC …`: the same from a shell, the narrowing
//!   built from flags (and `--grant FILE`), the chain printed for the worker's host to
//!   install with `cada-parent contract install`.
//!
//! The worker's daemon installs the chain like a contract (`POST /v1/contracts`) and from
//! then on sends the whole chain wherever it sends a contract (`CADA-Contract`, the STS
//! exchange's subject token): [`crate::api`] keeps it under the leaf's digest.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cada_protocol::wire::{ops, DelegateRequest, DelegateResponse};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{error_response, json_body, ok, problem_response, AppState, Problem};

/// Longest delegation, in minutes, the CLI and the route accept (the verifiers' default
/// cap on a link's lifetime is one hour; a policy may allow more, the parent's end bounds
/// it anyway).
pub const MAX_MINUTES: u64 = 30 * 24 * 60;

/// `POST /v1/delegate` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateBody {
    /// `cada.dtc` of the installed contract to delegate from (owner contract or delegated
    /// leaf).
    pub parent: String,
    /// The delegatee's `did:key`.
    pub subject: String,
    /// The narrowing: a `credentialSubject`-like JSON object (members left out are the
    /// parent's; `delegation` left out: the delegatee may not delegate further).
    #[serde(default)]
    pub grant: Option<Box<serde_json::value::RawValue>>,
    /// Lifetime from now, minutes (at most the parent's remaining time).
    #[serde(default)]
    pub minutes: Option<u64>,
    /// End of validity, seconds since the epoch (instead of `minutes`).
    #[serde(default)]
    pub valid_until: Option<u64>,
    /// The index in the owner's status list (default: the next free one of the parent's
    /// range).
    #[serde(default)]
    pub status_index: Option<u64>,
    /// The task the delegation is for (chained in the enclave's `delegate` event).
    #[serde(default)]
    pub task: Option<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The end of validity `minutes` or `valid_until` ask for: 0 (the enclave's default: the
/// parent's end, at most one hour from now) when neither is given.
pub fn valid_until(minutes: Option<u64>, valid_until: Option<u64>) -> Result<u64, String> {
    match (minutes, valid_until) {
        (Some(_), Some(_)) => Err("give minutes or valid_until, not both".into()),
        (Some(m), None) if m == 0 || m > MAX_MINUTES => Err(format!(
            "minutes must be 1..={MAX_MINUTES} (the delegation also ends with its parent)"
        )),
        (Some(m), None) => Ok(now_secs() + m * 60),
        (None, Some(0)) => Err("valid_until must be a time in the future".into()),
        (None, Some(t)) => Ok(t),
        (None, None) => Ok(0),
    }
}

/// `POST /v1/delegate`: has the enclave sign a delegation within an installed contract.
pub(crate) async fn delegate(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(_permit) = st.queue.try_acquire() else {
        return error_response("delegate", &st, crate::ParentError::Overloaded);
    };
    let body: DelegateBody = match json_body(&headers, body) {
        Ok(b) => b,
        Err(p) => return problem_response("delegate", &st, p),
    };
    let bad = |detail: String| Problem::new(StatusCode::BAD_REQUEST, "invalid-body", detail);
    let grant = match &body.grant {
        None => "{}".to_owned(),
        Some(g) => {
            let text = g.get();
            if !text.starts_with('{') || text.len() > DelegateRequest::MAX_GRANT_LEN {
                return problem_response(
                    "delegate",
                    &st,
                    bad(format!(
                        "grant is a JSON object (the narrowing, docs/delegation.md) of at most \
                         {} bytes",
                        DelegateRequest::MAX_GRANT_LEN
                    )),
                );
            }
            text.to_owned()
        }
    };
    let valid_until = match valid_until(body.minutes, body.valid_until) {
        Ok(t) => t,
        Err(e) => return problem_response("delegate", &st, bad(e)),
    };
    let req = DelegateRequest {
        parent: body.parent,
        subject: body.subject,
        grant,
        valid_until,
        status_index: body.status_index,
        task: body.task,
    };
    match st
        .client
        .call::<_, DelegateResponse>(ops::DELEGATE, &req)
        .await
    {
        Ok(r) => {
            ok("delegate", &st);
            Json(serde_json::json!({
                "chain": r.chain, "digest": r.digest, "status_index": r.status_index,
            }))
            .into_response()
        }
        Err(e) => error_response("delegate", &st, e),
    }
}

/// Delegate a narrower contract to another agent's enclave (issue 24)
///
/// The enclave signs, with its own key and inside its attested boundary, a delegated
/// contract for the worker enclave's key (--to, its did:key from the worker's
/// `GET /v1/identity`) that is within the installed contract --contract in every dimension:
/// audiences (on path segment boundaries), methods, scopes, tools, resources, prompts,
/// secrets, opens, authorization details, required context, time, budget and rate,
/// behaviour limits, audit level. Anything wider is refused with a stable code
/// (delegation.wider.<dimension>); so is a parent that may not delegate
/// (delegation.not_allowed: the owner's contract needs `cada-owner grant --max-depth`) or
/// a chain already as deep as allowed (delegation.depth).
///
/// Each flag narrows one member; a member not given is the parent's. --grant FILE gives
/// the narrowing as JSON (a credentialSubject-like object, docs/delegation.md); flags
/// override its members.
///
///   cada-parent delegate --to did:key:z6Mk…worker --contract <dtc> \
///       --tool search --minutes 15 --budget 100 --task T-42 > worker.chain
///   # on the worker's host:
///   cada-parent contract install worker.chain --status-list owner-status.jwt
///
/// Prints the chain (root~…~delegation, one line) — what the worker installs and then
/// sends as CADA-Contract. The delegation takes an index in the owner's status list (the
/// next free one of the parent's range, or --status-index), so the owner revokes it, and
/// every delegation below it, with `cada-owner revoke`. Budgets and rates hold for the
/// whole tree at the verifiers: a worker's call counts against every link above it.
#[derive(clap::Args, Debug)]
#[command(verbatim_doc_comment)]
pub struct DelegateArgs {
    /// The daemon's unix socket [default: /run/cada/agent.sock for root, else
    /// $XDG_RUNTIME_DIR/cada/agent.sock].
    #[arg(long = "socket", env = "CADA_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The worker enclave's did:key (the delegation's subject).
    #[arg(long, value_name = "DID")]
    pub to: String,
    /// The installed contract to delegate from: its digest (cada.dtc, as `cada-parent
    /// contract list` shows). A digest is base64url: it may begin with '-'.
    #[arg(long, value_name = "DTC", allow_hyphen_values = true)]
    pub contract: String,
    /// An audience URL prefix (repeatable), within one of the parent's.
    #[arg(long = "audience", value_name = "URL")]
    pub audiences: Vec<String>,
    /// An HTTP method (repeatable), among the parent's.
    #[arg(long = "method", value_name = "METHOD")]
    pub methods: Vec<String>,
    /// An OAuth scope (repeatable), among the parent's.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// An MCP tool (repeatable), among the parent's.
    #[arg(long = "tool", value_name = "NAME")]
    pub tools: Vec<String>,
    /// An MCP prompt (repeatable), among the parent's.
    #[arg(long = "prompt", value_name = "NAME")]
    pub prompts: Vec<String>,
    /// Lifetime from now [default: the parent's end, at most 60 minutes].
    #[arg(long, value_name = "N")]
    pub minutes: Option<u64>,
    /// Most proofs under the delegation (at most the parent's budget).
    #[arg(long, value_name = "N")]
    pub budget: Option<u64>,
    /// Most proofs per second (at most the parent's rate).
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// Let the worker delegate further, at most K more levels (fewer than the parent
    /// allows); without it the worker may not delegate.
    #[arg(long, value_name = "K")]
    pub max_depth: Option<u32>,
    /// With --max-depth: the owner's status-list indexes A..B (half-open) the worker's own
    /// delegations take, inside the parent's range [default: the enclave takes a free
    /// block of the parent's range].
    #[arg(long, value_name = "A..B", requires = "max_depth")]
    pub status_range: Option<String>,
    /// The delegation's index in the owner's status list [default: the next free index of
    /// the parent's range; an index this enclave gave before is refused].
    #[arg(long, value_name = "N")]
    pub status_index: Option<u64>,
    /// The narrowing as JSON (a credentialSubject-like object: audiences, methods, scopes,
    /// tools, resources, prompts, secrets, opens, requiredCtx, budget, ratePerSecond, audit,
    /// limits, authorization_details, stepUp, delegation, name); flags override members.
    #[arg(long, value_name = "FILE")]
    pub grant: Option<PathBuf>,
    /// The task the delegation is for (recorded in the enclave's hash chain).
    #[arg(long, value_name = "ID", allow_hyphen_values = true)]
    pub task: Option<String>,
    /// A name for the delegation (shown by `contract list`).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the daemon's JSON answer ({"chain", "digest", "status_index"}) instead of the
    /// chain alone.
    #[arg(long)]
    pub json: bool,
}

/// Parses `A..B` (half-open).
fn parse_range(s: &str) -> Result<[u64; 2], String> {
    let bad = || format!("--status-range {s:?}: expected A..B, e.g. 1000..2000");
    let (a, b) = s.split_once("..").ok_or_else(bad)?;
    let a: u64 = a.trim().parse().map_err(|_| bad())?;
    let b: u64 = b.trim().parse().map_err(|_| bad())?;
    if a >= b {
        return Err(bad());
    }
    Ok([a, b])
}

/// The narrowing object of `a`: the `--grant` file's object (if any) with each flag given
/// replacing its member.
pub fn grant_of(a: &DelegateArgs, file: Option<&str>) -> Result<Map<String, Value>, String> {
    let mut g = match file {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("--grant: the file must hold one JSON object".into()),
            Err(e) => return Err(format!("--grant: not JSON: {e}")),
        },
    };
    let mut set = |k: &str, v: Value| {
        g.insert(k.to_owned(), v);
    };
    for (k, v) in [
        ("audiences", &a.audiences),
        ("methods", &a.methods),
        ("scopes", &a.scopes),
        ("tools", &a.tools),
        ("prompts", &a.prompts),
    ] {
        if !v.is_empty() {
            set(k, Value::from(v.clone()));
        }
    }
    if let Some(b) = a.budget {
        set("budget", b.into());
    }
    if let Some(r) = a.rate {
        set("ratePerSecond", r.into());
    }
    if let Some(n) = &a.name {
        set("name", n.clone().into());
    }
    if let Some(k) = a.max_depth {
        let mut d = Map::new();
        d.insert("maxDepth".into(), k.into());
        if let Some(r) = &a.status_range {
            d.insert("statusRange".into(), Value::from(parse_range(r)?.to_vec()));
        }
        set("delegation", Value::Object(d));
    }
    Ok(g)
}

/// `cada-parent delegate`: asks the daemon at `socket`, prints the chain (or the answer).
pub async fn delegate_cli(socket: &Path, a: &DelegateArgs) -> Result<(), String> {
    let file = match &a.grant {
        None => None,
        Some(p) => {
            let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
            if !meta.is_file() || meta.len() > DelegateRequest::MAX_GRANT_LEN as u64 {
                return Err(format!(
                    "{}: expected a regular file of at most {} bytes",
                    p.display(),
                    DelegateRequest::MAX_GRANT_LEN
                ));
            }
            Some(std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?)
        }
    };
    let grant = grant_of(a, file.as_deref())?;
    valid_until(a.minutes, None)?;
    let body = serde_json::json!({
        "parent": a.contract, "subject": a.to, "grant": grant, "minutes": a.minutes,
        "status_index": a.status_index, "task": a.task,
    });
    let out = crate::daemon::call(socket, "POST", "/v1/delegate", Some(body)).await?;
    if a.json {
        println!("{}", String::from_utf8_lossy(&out));
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&out).map_err(|e| e.to_string())?;
    let chain = v["chain"]
        .as_str()
        .ok_or("the daemon's answer has no chain")?;
    eprintln!(
        "delegated {} to {} (status index {}, {} link(s) after the owner's contract)",
        v["digest"].as_str().unwrap_or("?"),
        a.to,
        v["status_index"],
        chain.matches('~').count()
    );
    println!("{chain}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: DelegateArgs,
    }

    fn args(extra: &[&str]) -> DelegateArgs {
        let mut all = vec!["x", "--to", "did:key:zW", "--contract", "dtc"];
        all.extend_from_slice(extra);
        Cli::try_parse_from(all).unwrap().a
    }

    #[test]
    fn flags_narrow_members_and_override_the_grant_file() {
        let a = args(&[
            "--tool",
            "search",
            "--tool",
            "fetch",
            "--budget",
            "10",
            "--max-depth",
            "1",
            "--status-range",
            "1100..1200",
        ]);
        let g = grant_of(&a, Some(r#"{"tools":["all"],"requiredCtx":["task"]}"#)).unwrap();
        assert_eq!(
            Value::Object(g),
            serde_json::json!({
                "tools": ["search", "fetch"], "requiredCtx": ["task"], "budget": 10,
                "delegation": {"maxDepth": 1, "statusRange": [1100, 1200]},
            })
        );
        // Nothing given: an empty narrowing (every member the parent's).
        assert!(grant_of(&args(&[]), None).unwrap().is_empty());
        assert!(grant_of(&args(&[]), Some("[1]")).is_err());
        assert!(grant_of(&args(&[]), Some("{")).is_err());
        for bad in ["5..5", "6..5", "x..2", "12"] {
            assert!(
                grant_of(&args(&["--max-depth", "1", "--status-range", bad]), None).is_err(),
                "{bad}"
            );
        }
        // A range without --max-depth means nothing: refused by clap.
        let mut all = vec![
            "x",
            "--to",
            "d",
            "--contract",
            "c",
            "--status-range",
            "1..2",
        ];
        assert!(Cli::try_parse_from(all.drain(..)).is_err());
    }

    /// One digest in 64 begins with '-' (base64url), and a task id may: both are values.
    #[test]
    fn a_digest_or_task_beginning_with_a_dash_is_a_value() {
        let dtc = "-7DI0cPbbB7bS0n8hQ3vVJx3mNq2zXWm7lS9yQeJ4Kk";
        for all in [
            vec![
                "x",
                "--contract",
                dtc,
                "--to",
                "did:key:zW",
                "--task",
                "-t1",
            ],
            vec!["x", "--to", "did:key:zW", "--task=-t1", "--contract", dtc],
        ] {
            let a = Cli::try_parse_from(all).unwrap().a;
            assert_eq!((a.contract.as_str(), a.task.as_deref()), (dtc, Some("-t1")));
        }
    }

    #[test]
    fn validity_is_minutes_or_an_end_never_both() {
        assert_eq!(valid_until(None, None), Ok(0));
        assert!(valid_until(Some(1), Some(5)).is_err());
        assert!(valid_until(Some(0), None).is_err());
        assert!(valid_until(Some(MAX_MINUTES + 1), None).is_err());
        assert!(valid_until(None, Some(0)).is_err());
        let t = valid_until(Some(15), None).unwrap();
        assert!(t >= now_secs() + 15 * 60 - 1 && t <= now_secs() + 15 * 60);
        assert_eq!(valid_until(None, Some(42)), Ok(42));
    }
}
