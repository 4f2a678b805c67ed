//! One-transaction grants (RFC 9396 `authorization_details` of a contract or an access
//! token) as a verifier applies them: the arguments of each `tools/call` against the detail
//! that covers it (rule 13), and single use across a fleet (rule 14).
//!
//! * **Arguments.** Only a caller holding the body can check them (the gate in proxy mode,
//!   `cada-verify` given the body): [`tool_arguments`] finds the `params.arguments` of each
//!   `tools/call`, which the contract's exact reader then checks
//!   ([`cada_contract::CallArguments`]: exact numbers, a member repeated at any depth
//!   refused, since the MCP server behind might read the other copy). A call the
//!   contract grants only through a detail that limits arguments, made where the arguments
//!   are unknown (forward auth, a resource server sending only the body's digest), is
//!   refused `grant.arguments_unchecked`: nobody on the path reads them.
//! * **Single use.** An accepted request whose call only `single_use` details admit consumes
//!   one of their identifiers in the replay store the fleet shares ([`SingleUse::store_key`],
//!   kept until the grant ends plus the policy's clock skew, and never before a token
//!   carrying it stops being accepted): a second acceptance anywhere in the fleet is refused
//!   `grant.used`. Each such call names every single-use detail that admits it
//!   ([`GrantChoice`]); rule 14 takes, call by call, the first not used before nor taken by
//!   an earlier call, and takes all of a request's or none ([`consume_all`]: a refused
//!   request gives back what it took). It is consumed when the request is accepted, before
//!   it is forwarded, and stays used even if the upstream then fails: a transfer may have
//!   happened (at most once), and the agent asks its owner again.
use cada_contract::{AuthorizationDetail, CallArguments, ContractError, VerifiedContract};
use cada_protocol::access_token::RawDetails;
use cada_protocol::mcp::McpCall;
use cada_protocol::url::HttpUrl;
use cada_protocol::ProtocolError;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The `params.arguments` of one `tools/call` of a body, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolArguments {
    /// The tool (`params.name`).
    pub tool: String,
    /// The JSON text of `params.arguments`; `None` when the call sends none (absent or
    /// `null`: read as no arguments at all).
    pub json: Option<String>,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawParams<'a> {
    #[serde(default)]
    name: Option<String>,
    #[serde(borrow, default)]
    arguments: Option<&'a RawValue>,
}

/// The arguments of every `tools/call` of a JSON-RPC body, in the order of the body's calls
/// ([`cada_protocol::mcp::Body::calls`] holds one call per `tools/call` message). Meant for a
/// body [`cada_protocol::mcp::parse_body`] accepted, which bounds its size, batch and
/// members; an error for anything else.
pub fn tool_arguments(bytes: &[u8]) -> Result<Vec<ToolArguments>, ProtocolError> {
    let json = |e: serde_json::Error| ProtocolError::Json {
        what: "JSON-RPC body",
        detail: e.to_string(),
    };
    if bytes.len() > cada_protocol::mcp::MAX_BODY {
        return Err(ProtocolError::TooLarge {
            what: "JSON-RPC body",
            len: bytes.len(),
            max: cada_protocol::mcp::MAX_BODY,
        });
    }
    let messages: Vec<&RawValue> = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(bytes).map_err(json)?,
        _ => vec![serde_json::from_slice(bytes).map_err(json)?],
    };
    let mut out = Vec::new();
    for m in messages {
        let Ok(msg) = serde_json::from_str::<RawMessage<'_>>(m.get()) else {
            continue;
        };
        if msg.method.as_deref() != Some("tools/call") {
            continue;
        }
        let Some(params) = msg.params else {
            return Err(ProtocolError::Invalid {
                what: "JSON-RPC message",
                detail: "tools/call needs params".into(),
            });
        };
        let p: RawParams<'_> = serde_json::from_str(params.get()).map_err(json)?;
        let tool = p.name.ok_or_else(|| ProtocolError::Invalid {
            what: "JSON-RPC message",
            detail: "tools/call names no name".into(),
        })?;
        out.push(ToolArguments {
            tool,
            json: p.arguments.map(|a| a.get().to_owned()),
        });
    }
    Ok(out)
}

/// A single-use authorization detail an accepted request may use: what the fleet's store
/// consumes (rule 14) before the request goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SingleUse {
    /// The detail's `identifier`.
    pub identifier: String,
    /// The owner who granted it (the contract's signer, the root owner of a chain; a
    /// token's principal, [`cada_protocol::access_token::AccessTokenClaims::owner`]).
    pub owner: String,
    /// Until when (Unix seconds) the use is remembered: as long as anything carrying the
    /// grant may still be accepted — the contract's end, or for a token the later of its
    /// grant's end (`cada.dtc_exp`) and its `exp`, plus the policy's clock skew
    /// (`token.skew_secs`: a token is accepted that long past its `exp`, and a gate whose
    /// clock lags by as much still accepts the grant).
    pub until: u64,
    /// When the grant was given (Unix seconds): its contract's `iat`; 0 when the carrier
    /// (an access token) does not say, and the caller uses the token's `iat`. After the
    /// shared store lost its memory, a grant given before the new epoch may have been used
    /// already (docs/stores.md).
    pub issued: u64,
}

/// The single-use grants one `tools/call` of a request may use (rule 13): every
/// single-use detail that admits it (covers its tool at the URL and its argument limits
/// the arguments meet), in the contract's or token's order. A call that a reusable detail
/// or the `tools` list admits uses none and has no choice. Rule 14 consumes the first of
/// `choices` not used before in the fleet nor taken by an earlier call of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantChoice {
    /// The tool called.
    pub tool: String,
    /// The single-use details that admit the call, in order (never empty).
    pub choices: Vec<SingleUse>,
}

/// Why [`consume_all`] consumed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotConsumed {
    /// Every choice of this call was used before (`grant.used`).
    Used(GrantChoice),
    /// The store failed (its message); whatever was taken has been given back, as far as
    /// the store answered.
    Store(String),
}

/// Rule 14 for the single-use grants of one accepted request, **all or nothing**: call by
/// call, the first choice not taken by an earlier call is claimed (`claim`: `Ok(Some(c))`
/// when this request set it, `Ok(None)` when it was used before — then the next choice is
/// tried); when a call finds every choice used, or the store fails, everything this
/// request claimed is given back (`release`, in reverse order) and nothing is consumed.
///
/// Keys of a request may live in different shards of the store (Redis Cluster slots), so
/// this is claims then compensation, not one transaction: while a request that is about to
/// be refused holds a claim, a concurrent request for the same grant is refused
/// `grant.used` although the grant ends up unused (never the other way round: no grant is
/// used twice). A give-back the store does not answer leaves that grant used (fails
/// closed).
pub fn consume_all<C>(
    uses: &[GrantChoice],
    mut claim: impl FnMut(&SingleUse) -> Result<Option<C>, String>,
    mut release: impl FnMut(&SingleUse, C),
) -> Result<(), NotConsumed> {
    let mut taken: Vec<(&SingleUse, C)> = Vec::new();
    let mut failed = None;
    'calls: for call in uses {
        for u in &call.choices {
            if taken.iter().any(|(t, _)| t.store_key() == u.store_key()) {
                continue;
            }
            match claim(u) {
                Ok(Some(c)) => {
                    taken.push((u, c));
                    continue 'calls;
                }
                Ok(None) => {}
                Err(e) => {
                    failed = Some(NotConsumed::Store(e));
                    break 'calls;
                }
            }
        }
        failed = Some(NotConsumed::Used(call.clone()));
        break;
    }
    match failed {
        None => Ok(()),
        Some(why) => {
            while let Some((u, c)) = taken.pop() {
                release(u, c);
            }
            Err(why)
        }
    }
}

impl SingleUse {
    /// The key consumed in the shared store: `cada:grant:` and the hex SHA-256 of the
    /// owner's DID, a NUL and the identifier. Scoped by owner, so that one owner trusted by
    /// the fleet cannot use up another's grants by reusing their identifiers.
    pub fn store_key(&self) -> String {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(self.owner.as_bytes());
        ctx.update(&[0]);
        ctx.update(self.identifier.as_bytes());
        format!("cada:grant:{}", hex::encode(ctx.finish().as_ref()))
    }
}

/// Rule 13 for a contract's authorization details: each `tools/call` among `calls` that
/// the contract's `tools` list does not grant must be admitted by a detail at `url`: one
/// whose argument limits the call's arguments meet, or, where the arguments are unknown
/// (`args` `None`), one without limits ([`VerifiedContract::details_admitting`]: else
/// `grant.arguments_unchecked`). Returns, per call only single-use details admit, those
/// details ([`GrantChoice`], remembered `until`). A contract without details costs nothing
/// here.
pub(crate) fn check_contract_calls(
    contract: &VerifiedContract,
    url: &HttpUrl,
    calls: &[&McpCall],
    args: Option<&[ToolArguments]>,
    until: u64,
) -> Result<Vec<GrantChoice>, ContractError> {
    if contract.authorization_details().is_empty() {
        return Ok(Vec::new());
    }
    let mut uses = Vec::new();
    for (call, a) in pair_arguments(calls, args) {
        let Some(tool) = call.target.as_deref() else {
            continue;
        };
        let parsed = a.map(read_arguments).transpose()?;
        let admitting = contract.details_admitting(url, tool, parsed.as_ref())?;
        note_choices(
            &mut uses,
            tool,
            &admitting,
            (contract.owner(), contract.issued_at()),
            until,
        );
    }
    enough_for_every_call(&uses)?;
    Ok(uses)
}

/// Rule 13 for a token exchange that asks for one-transaction grants (`wanted`): the
/// contract is valid at `now`; each wanted detail lies within one of the contract's
/// ([`AuthorizationDetail::is_within`]) and every one of its locations under the `resource`
/// the token is for (`grant.not_within`); a detail that limits arguments or is single use
/// needs `checks_arguments` on the resource's policy audience — a CADA gate there, since
/// a stock resource server reading the token checks neither (`grant.arguments_unchecked`);
/// scopes asked for beside them are granted as for any token
/// ([`VerifiedContract::permits_token`]), and the contract's required `ctx` keys are on
/// the exchange proof.
pub(crate) fn permits_token_details(
    contract: &VerifiedContract,
    resource: &HttpUrl,
    scopes: &[String],
    wanted: &[AuthorizationDetail],
    checks_arguments: bool,
    ctx: &std::collections::BTreeMap<String, String>,
    now: u64,
) -> Result<(), ContractError> {
    contract.check_time(now)?;
    if !scopes.is_empty() {
        contract.permits_token(resource, scopes, ctx, now)?;
    }
    if let Some(k) = contract
        .required_ctx()
        .iter()
        .find(|k| !ctx.contains_key(*k))
    {
        return Err(ContractError::not_permitted(
            cada_contract::Denied::Ctx,
            format!("the proof must carry ctx key {k:?}"),
        ));
    }
    let under = cada_protocol::url::UrlPrefix::parse(resource.as_str()).map_err(|e| {
        ContractError::Grant {
            code: "grant.not_within",
            detail: format!("the resource is not a URL prefix: {e}"),
        }
    })?;
    for d in wanted {
        if !contract
            .authorization_details()
            .iter()
            .any(|w| d.is_within(w))
        {
            return Err(ContractError::Grant {
                code: "grant.not_within",
                detail: format!(
                    "the requested grant for {:?} ({}) is not within any grant of the \
                     contract ({}): ask for the contract's own details, or narrower ones",
                    clip(&d.tool),
                    clip(&d.identifier),
                    list_details(contract.authorization_details())
                ),
            });
        }
        if let Some(l) = d.locations.iter().find(|l| {
            !cada_protocol::url::UrlPrefix::parse(l).is_ok_and(|p| under.matches(p.url()))
        }) {
            return Err(ContractError::Grant {
                code: "grant.not_within",
                detail: format!(
                    "the requested grant for {:?} names the location {}, which is not under \
                     the token's resource {}: ask for a token for a resource covering it",
                    clip(&d.tool),
                    clip(l),
                    resource.as_str()
                ),
            });
        }
        if (d.has_argument_limits() || d.single_use) && !checks_arguments {
            return Err(ContractError::Grant {
                code: "grant.arguments_unchecked",
                detail: format!(
                    "the grant for {:?} {} and no CADA gate checks that at {}: the policy \
                     audience of the resource does not say checks_arguments = true, so a \
                     token carrying it is not issued",
                    clip(&d.tool),
                    if d.has_argument_limits() {
                        "limits its arguments"
                    } else {
                        "is single use"
                    },
                    resource.as_str()
                ),
            });
        }
    }
    Ok(())
}

fn list_details(d: &[AuthorizationDetail]) -> String {
    if d.is_empty() {
        return "it has none".to_owned();
    }
    d.iter()
        .take(8)
        .map(|d| format!("{} at {}", clip(&d.tool), clip(&d.locations.join(" "))))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The details an access token carries (its `authorization_details` claim), read with the
/// contract's exact reader: an error names what is wrong (an STS never writes such a token).
pub(crate) fn token_details(raw: &RawDetails) -> Result<Vec<AuthorizationDetail>, String> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|e| format!("authorization_details is not a JSON array: {e}"))?;
    if items.len() > cada_contract::details::MAX_DETAILS {
        return Err(format!(
            "authorization_details holds {} details, more than {}",
            items.len(),
            cada_contract::details::MAX_DETAILS
        ));
    }
    items
        .iter()
        .map(|i| AuthorizationDetail::parse(i.get()).map_err(|e| e.to_string()))
        .collect()
}

/// Whether one of `details` covers `call` (a `tools/call` of its tool at one of its
/// locations).
pub(crate) fn covers(details: &[AuthorizationDetail], url: &HttpUrl, call: &McpCall) -> bool {
    call.method == "tools/call"
        && call
            .target
            .as_deref()
            .is_some_and(|t| details.iter().any(|d| d.permits_call(url, t)))
}

/// Rule 13 for the details an access token carries: as [`check_contract_calls`], with the
/// token's `cada.tools` as the tools granted outright, `owner` its principal (`sub`) and
/// `until` how long a single use is remembered. Calls no detail covers were refused before
/// (`token.tool`).
pub(crate) fn check_token_calls(
    details: &[AuthorizationDetail],
    tools: &[String],
    url: &HttpUrl,
    calls: &[&McpCall],
    args: Option<&[ToolArguments]>,
    owner: &str,
    until: u64,
) -> Result<Vec<GrantChoice>, ContractError> {
    if details.is_empty() {
        return Ok(Vec::new());
    }
    let mut uses = Vec::new();
    for (call, a) in pair_arguments(calls, args) {
        let Some(tool) = call.target.as_deref() else {
            continue;
        };
        if tools.iter().any(|t| t == tool) {
            continue;
        }
        let covering: Vec<&AuthorizationDetail> = details
            .iter()
            .filter(|d| d.permits_call(url, tool))
            .collect();
        if covering.is_empty() {
            return Err(not_covered(tool, url));
        }
        let parsed = a.map(read_arguments).transpose()?;
        let admitting = cada_contract::details::admitting(&covering, tool, parsed.as_ref())?;
        note_choices(&mut uses, tool, &admitting, (owner, 0), until);
    }
    enough_for_every_call(&uses)?;
    Ok(uses)
}

fn not_covered(tool: &str, url: &HttpUrl) -> ContractError {
    ContractError::Grant {
        code: "grant.tool",
        detail: format!(
            "no authorization detail covers {:?} at {}",
            clip(tool),
            clip(url.as_str())
        ),
    }
}

/// The arguments of one call, read exactly (absent: none).
fn read_arguments(a: &ToolArguments) -> Result<CallArguments, ContractError> {
    match &a.json {
        None => Ok(CallArguments::empty()),
        Some(j) => CallArguments::parse(j),
    }
}

/// Records what one call may use: nothing when a reusable detail (or the `tools` list:
/// `admitting` empty) admits it, else every single-use detail that does, in order.
fn note_choices(
    uses: &mut Vec<GrantChoice>,
    tool: &str,
    admitting: &[&AuthorizationDetail],
    (owner, issued): (&str, u64),
    until: u64,
) {
    if admitting.is_empty() || admitting.iter().any(|d| !d.single_use) {
        return;
    }
    uses.push(GrantChoice {
        tool: tool.to_owned(),
        choices: admitting
            .iter()
            .map(|d| SingleUse {
                identifier: d.identifier.clone(),
                owner: owner.to_owned(),
                until,
                issued,
            })
            .collect(),
    });
}

/// Single use is one call, not one request: the calls of a request must each find a
/// single-use detail of their own among their choices, taken in call order as rule 14 will
/// take them (before any store is asked); else `grant.used`.
fn enough_for_every_call(uses: &[GrantChoice]) -> Result<(), ContractError> {
    let mut taken: Vec<&str> = Vec::new();
    for call in uses {
        match call
            .choices
            .iter()
            .find(|u| !taken.contains(&u.identifier.as_str()))
        {
            Some(u) => taken.push(&u.identifier),
            None => {
                return Err(ContractError::Grant {
                    code: "grant.used",
                    detail: format!(
                        "single use is one call: this request makes more calls of {:?} than \
                         the single-use grants that admit them ({}): send one call per \
                         grant, or ask the owner for a grant per call",
                        clip(&call.tool),
                        list_ids(&call.choices),
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The identifiers of `choices`, for messages.
pub(crate) fn list_ids(choices: &[SingleUse]) -> String {
    choices
        .iter()
        .take(8)
        .map(|u| clip(&u.identifier))
        .collect::<Vec<_>>()
        .join(", ")
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// The `tools/call`s among `calls` paired with their arguments: `None` for every call when
/// the arguments are unknown, or when they do not line up with the calls (a caller that
/// read them from another body).
pub(crate) fn pair_arguments<'c>(
    calls: &[&'c McpCall],
    args: Option<&'c [ToolArguments]>,
) -> Vec<(&'c McpCall, Option<&'c ToolArguments>)> {
    let tool_calls: Vec<&McpCall> = calls
        .iter()
        .copied()
        .filter(|c| c.method == "tools/call")
        .collect();
    let lined_up = args.filter(|a| {
        a.len() == tool_calls.len()
            && a.iter()
                .zip(&tool_calls)
                .all(|(a, c)| c.target.as_deref() == Some(a.tool.as_str()))
    });
    match lined_up {
        Some(a) => tool_calls.into_iter().zip(a.iter().map(Some)).collect(),
        None => tool_calls.into_iter().map(|c| (c, None)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_of_each_tool_call_in_order() {
        let body = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"transfer","arguments":{"amount":5,"to":"alice"}}},
                        {"jsonrpc":"2.0","method":"notifications/initialized"},
                        {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo"}},
                        {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":null}},
                        {"jsonrpc":"2.0","id":"r","result":{}}]"#;
        let a = tool_arguments(body).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].tool, "transfer");
        assert_eq!(a[0].json.as_deref(), Some(r#"{"amount":5,"to":"alice"}"#));
        assert_eq!((a[1].tool.as_str(), a[1].json.as_deref()), ("echo", None));
        assert_eq!(a[2].json, None);
        let one = tool_arguments(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
        )
        .unwrap();
        assert_eq!(one[0].json.as_deref(), Some("{}"));
        assert!(tool_arguments(b"").is_err());
    }

    use cada_contract::{Contract, Grant, OwnerAlg, OwnerKey, Subject, TrustedOwners};

    const MCP: &str = "https://mcp.example/mcp";
    const NOW: u64 = 1_800_000_000;

    fn detail(json: &str) -> AuthorizationDetail {
        AuthorizationDetail::parse(json).unwrap()
    }

    /// The issue's transfer: amount ≤ 500, currency USD, to alice or bob, memo "inv-…";
    /// single use.
    fn transfer() -> AuthorizationDetail {
        detail(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example/mcp"],"tool":"transfer",
                "arguments":{"amount":{"max":500,"min":1},"currency":{"eq":"USD"},
                             "to":{"one_of":["alice","bob"]},"memo":{"prefix":"inv-"}},
                "single_use":true,"identifier":"urn:uuid:t-1"}"#,
        )
    }

    /// A contract of a new owner: `tools` granted outright, and `details`.
    fn contract(tools: &[&str], details: Vec<AuthorizationDetail>) -> VerifiedContract {
        let owner = OwnerKey::generate(OwnerAlg::Ed25519).unwrap();
        let mut g = Grant::new(
            Subject::Key("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK".into()),
            if tools.is_empty() {
                vec![]
            } else {
                vec![MCP.into()]
            },
            vec!["POST".into()],
            NOW - 10,
            NOW + 600,
        );
        g.tools = tools.iter().map(|t| (*t).to_owned()).collect();
        g.authorization_details = details;
        let compact = g.issue(&owner, NOW - 10).unwrap();
        let mut trusted = TrustedOwners::new();
        trusted.add_did_key(owner.did()).unwrap();
        Contract::verify(&compact, &trusted, NOW).unwrap()
    }

    fn call(tool: &str) -> McpCall {
        McpCall {
            method: "tools/call".into(),
            target: Some(tool.into()),
        }
    }

    fn args(tool: &str, json: &str) -> ToolArguments {
        ToolArguments {
            tool: tool.into(),
            json: Some(json.into()),
        }
    }

    const GOOD: &str = r#"{"amount":500,"currency":"USD","to":"alice","memo":"inv-42"}"#;

    /// Issue 23 deliver 1: the gate checks each constraint kind against the body's
    /// arguments, with the detail's stable code; the single-use detail used is returned for
    /// rule 14, with the owner and the contract's end.
    #[test]
    fn a_contracts_grant_checks_each_argument_against_its_constraint() {
        let c = contract(&[], vec![transfer()]);
        let url = HttpUrl::parse_canonical(MCP).unwrap();
        let t = call("transfer");
        let check = |json: &str| {
            check_contract_calls(&c, &url, &[&t], Some(&[args("transfer", json)]), NOW + 610)
                .map_err(|e| e.code())
        };
        let used = check(GOOD).unwrap();
        assert_eq!(
            used,
            vec![GrantChoice {
                tool: "transfer".into(),
                choices: vec![SingleUse {
                    identifier: "urn:uuid:t-1".into(),
                    owner: c.owner().to_owned(),
                    until: NOW + 610,
                    issued: c.issued_at(),
                }]
            }]
        );
        // 500 written otherwise is 500.
        assert!(check(&GOOD.replace("500", "5e2")).is_ok());
        for (json, code) in [
            (GOOD.replace("500", "500.01"), "grant.arguments.max"),
            (GOOD.replace("500", "0"), "grant.arguments.min"),
            (GOOD.replace("500", "\"500\""), "grant.arguments.type"),
            (GOOD.replace("USD", "EUR"), "grant.arguments.eq"),
            (GOOD.replace("alice", "mallory"), "grant.arguments.one_of"),
            (GOOD.replace("inv-42", "INV-42"), "grant.arguments.prefix"),
            (
                GOOD.replace(r#","memo":"inv-42""#, ""),
                "grant.arguments.missing",
            ),
            (
                GOOD.replace("}", r#","note":"x"}"#),
                "grant.arguments.unlisted",
            ),
            (
                GOOD.replace(r#""amount":500"#, r#""amount":500,"amount":5000"#),
                "grant.arguments.malformed",
            ),
            ("[1]".to_owned(), "grant.arguments.type"),
        ] {
            assert_eq!(check(&json), Err(code), "{json}");
        }
        // No arguments at all: the constrained ones are missing.
        assert_eq!(
            check_contract_calls(
                &c,
                &url,
                &[&t],
                Some(&[ToolArguments {
                    tool: "transfer".into(),
                    json: None
                }]),
                NOW + 610
            )
            .map_err(|e| e.code()),
            Err("grant.arguments.missing")
        );
        // Unknown arguments (forward auth, a digest only): refused, nobody reads them.
        assert_eq!(
            check_contract_calls(&c, &url, &[&t], None, NOW + 610).map_err(|e| e.code()),
            Err("grant.arguments_unchecked")
        );
        // Two calls under one single-use grant in one batch: one call only.
        let two = [args("transfer", GOOD), args("transfer", GOOD)];
        assert_eq!(
            check_contract_calls(&c, &url, &[&t, &t], Some(&two), NOW + 610).map_err(|e| e.code()),
            Err("grant.used")
        );
    }

    #[test]
    fn tools_granted_outright_and_details_without_limits_need_no_arguments() {
        let open = detail(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example/"],"tool":"lookup",
                "additional_arguments":true,"identifier":"urn:uuid:l-1"}"#,
        );
        assert!(!open.has_argument_limits());
        let c = contract(&["echo"], vec![transfer(), open]);
        let url = HttpUrl::parse_canonical(MCP).unwrap();
        let (echo, lookup) = (call("echo"), call("lookup"));
        // Neither needs the arguments; nothing single use was used.
        assert_eq!(
            check_contract_calls(&c, &url, &[&echo, &lookup], None, NOW).unwrap(),
            vec![]
        );
        // A contract without details costs nothing and asks nothing.
        let plain = contract(&["echo"], vec![]);
        assert!(check_contract_calls(&plain, &url, &[&echo], None, NOW)
            .unwrap()
            .is_empty());
    }

    /// The same rules for the details an STS token carries (read exactly from the claim);
    /// a call no detail covers is not this check's (token.tool refuses it first).
    #[test]
    fn a_tokens_details_are_checked_alike() {
        let raw: RawDetails =
            serde_json::from_str(&format!("[{}]", transfer().to_json_text())).unwrap();
        let details = token_details(&raw).unwrap();
        assert_eq!(details, vec![transfer()]);
        let url = HttpUrl::parse_canonical(MCP).unwrap();
        let other = HttpUrl::parse_canonical("https://other.example/mcp").unwrap();
        let t = call("transfer");
        assert!(covers(&details, &url, &t));
        assert!(!covers(&details, &other, &t));
        assert!(!covers(&details, &url, &call("delete_all")));
        let check = |json: Option<&str>| {
            check_token_calls(
                &details,
                &[],
                &url,
                &[&t],
                json.map(|j| vec![args("transfer", j)]).as_deref(),
                "did:key:zOwner",
                NOW + 60,
            )
            .map_err(|e| e.code())
        };
        assert_eq!(check(Some(GOOD)).unwrap()[0].choices[0].until, NOW + 60);
        assert_eq!(
            check(Some(&GOOD.replace("500", "501"))),
            Err("grant.arguments.max")
        );
        assert_eq!(check(None), Err("grant.arguments_unchecked"));
        for bad in ["{}", "[{}]", r#"[{"type":"other"}]"#] {
            let raw: RawDetails = serde_json::from_str(bad).unwrap();
            assert!(token_details(&raw).is_err(), "{bad}");
        }
    }

    /// What an STS may mint: details within the contract's, located under the resource,
    /// and argument-limited or single-use ones only where a CADA gate checks them.
    #[test]
    fn a_token_exchange_asks_only_for_details_within_the_contract() {
        let c = contract(&[], vec![transfer()]);
        let res = HttpUrl::parse_canonical("https://mcp.example/").unwrap();
        let ctx = std::collections::BTreeMap::new();
        let code = |wanted: &[AuthorizationDetail], res: &HttpUrl, checks: bool| {
            permits_token_details(&c, res, &[], wanted, checks, &ctx, NOW).map_err(|e| e.code())
        };
        assert_eq!(code(&[transfer()], &res, true), Ok(()));
        // Narrower: a lower bound and one currency, still single use with its identifier.
        let narrower = detail(
            r#"{"type":"mcp_tool_call","locations":["https://mcp.example/mcp"],"tool":"transfer",
                "arguments":{"amount":{"max":100,"min":1},"currency":{"eq":"USD"},
                             "to":{"eq":"alice"},"memo":{"prefix":"inv-4"}},
                "single_use":true,"identifier":"urn:uuid:t-1"}"#,
        );
        assert_eq!(code(std::slice::from_ref(&narrower), &res, true), Ok(()));
        for wider in [
            narrower.to_json_text().replace("100", "1000"),
            narrower
                .to_json_text()
                .replace("\"single_use\":true", "\"single_use\":false"),
            narrower.to_json_text().replace("transfer", "refund"),
            narrower
                .to_json_text()
                .replace("https://mcp.example/mcp", "https://evil.example/mcp"),
        ] {
            assert_eq!(
                code(&[detail(&wider)], &res, true),
                Err("grant.not_within"),
                "{wider}"
            );
        }
        // A resource that does not cover the detail's location.
        let elsewhere = HttpUrl::parse_canonical("https://mcp.example/other").unwrap();
        assert_eq!(
            code(&[transfer()], &elsewhere, true),
            Err("grant.not_within")
        );
        // No CADA gate there: a stock resource server would check neither.
        assert_eq!(
            code(&[transfer()], &res, false),
            Err("grant.arguments_unchecked")
        );
        // Expired contracts mint nothing.
        assert_eq!(
            permits_token_details(&c, &res, &[], &[transfer()], true, &ctx, NOW + 600)
                .map_err(|e| e.code()),
            Err("contract.expired")
        );
    }

    #[test]
    fn the_single_use_key_is_scoped_by_owner() {
        let u = |owner: &str, id: &str| SingleUse {
            identifier: id.into(),
            owner: owner.into(),
            until: 0,
            issued: 0,
        };
        let k = u("did:key:a", "urn:uuid:1").store_key();
        assert!(k.starts_with("cada:grant:") && k.len() == "cada:grant:".len() + 64);
        assert_eq!(k, u("did:key:a", "urn:uuid:1").store_key());
        assert_ne!(k, u("did:key:b", "urn:uuid:1").store_key());
        assert_ne!(k, u("did:key:a", "urn:uuid:2").store_key());
        // The separator keeps owner and identifier apart.
        assert_ne!(u("a", "bc").store_key(), u("ab", "c").store_key());
    }

    #[test]
    fn arguments_pair_with_their_calls_or_not_at_all() {
        let c = |m: &str, t: &str| McpCall {
            method: m.into(),
            target: Some(t.into()),
        };
        let calls = [
            c("tools/call", "a"),
            c("prompts/get", "p"),
            c("tools/call", "b"),
        ];
        let refs: Vec<&McpCall> = calls.iter().collect();
        let args = vec![
            ToolArguments {
                tool: "a".into(),
                json: None,
            },
            ToolArguments {
                tool: "b".into(),
                json: Some("{}".into()),
            },
        ];
        let p = pair_arguments(&refs, Some(&args));
        assert_eq!(p.len(), 2);
        assert!(p.iter().all(|(_, a)| a.is_some()));
        let swapped = vec![args[1].clone(), args[0].clone()];
        assert!(pair_arguments(&refs, Some(&swapped))
            .iter()
            .all(|(_, a)| a.is_none()));
        assert!(pair_arguments(&refs, None).iter().all(|(_, a)| a.is_none()));
    }

    /// `transfer()` under another identifier, single use or not.
    fn transfer_as(id: &str, single_use: bool) -> AuthorizationDetail {
        let mut d = transfer();
        d.identifier = id.into();
        d.single_use = single_use;
        d
    }

    /// Review grants-1, finding 5: every single-use detail that admits a call is a choice,
    /// in contract order (not merely the first); one whose limits the arguments miss is
    /// not; a reusable detail that admits the call takes nothing.
    #[test]
    fn every_single_use_detail_admitting_a_call_is_a_choice() {
        let url = HttpUrl::parse_canonical(MCP).unwrap();
        let t = call("transfer");
        let ids = |c: &VerifiedContract, json: &str, calls: usize| {
            let all = vec![t.clone(); calls];
            let refs: Vec<&McpCall> = all.iter().collect();
            let a = vec![args("transfer", json); calls];
            check_contract_calls(c, &url, &refs, Some(&a), NOW + 600).map(|u| {
                u.iter()
                    .map(|g| {
                        g.choices
                            .iter()
                            .map(|u| u.identifier.as_str().to_owned())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
        };
        let two = contract(
            &[],
            vec![transfer_as("urn:a", true), transfer_as("urn:b", true)],
        );
        assert_eq!(ids(&two, GOOD, 1).unwrap(), vec![vec!["urn:a", "urn:b"]]);
        // Two calls, two details: each call may take either; three calls are one too many.
        assert_eq!(ids(&two, GOOD, 2).unwrap().len(), 2);
        assert_eq!(ids(&two, GOOD, 3).map_err(|e| e.code()), Err("grant.used"));
        // A detail the arguments do not meet is no choice.
        let mut small = transfer_as("urn:small", true);
        small.arguments.insert(
            "amount".into(),
            cada_contract::ArgConstraint::Range {
                min: None,
                max: Some(cada_contract::JsonNumber::parse("10").unwrap()),
            },
        );
        let mixed = contract(&[], vec![small, transfer_as("urn:big", true)]);
        assert_eq!(ids(&mixed, GOOD, 1).unwrap(), vec![vec!["urn:big"]]);
        // A reusable detail admitting the call: nothing to consume.
        let reusable = contract(
            &[],
            vec![transfer_as("urn:once", true), transfer_as("urn:any", false)],
        );
        assert!(ids(&reusable, GOOD, 2).unwrap().is_empty());
    }

    fn choice(tool: &str, ids: &[&str]) -> GrantChoice {
        GrantChoice {
            tool: tool.into(),
            choices: ids
                .iter()
                .map(|id| SingleUse {
                    identifier: (*id).into(),
                    owner: "did:key:zOwner".into(),
                    until: NOW + 60,
                    issued: 0,
                })
                .collect(),
        }
    }

    /// Review grants-1, findings 5 and 6: rule 14 takes, call by call, the first choice
    /// not used (nor taken by an earlier call), and takes all of a request's or none.
    #[test]
    fn consumption_takes_the_first_unused_choice_and_all_or_nothing() {
        use crate::replay::{MemoryReplayStore, ReplayStore};
        use crate::UnixTime;
        let store = MemoryReplayStore::new(64);
        let now = UnixTime::from_secs(NOW);
        let run = |uses: &[GrantChoice]| {
            consume_all(
                uses,
                |u| {
                    store
                        .insert_new(u.store_key().as_bytes(), UnixTime::from_secs(u.until), now)
                        .map(|f| f.then_some(()))
                },
                |u, ()| store.remove(u.store_key().as_bytes()).unwrap(),
            )
        };
        let used = |id: &str| {
            store
                .contains(choice("t", &[id]).choices[0].store_key().as_bytes(), now)
                .unwrap()
        };
        // Two details for one tool: two uses, then none.
        let ab = [choice("transfer", &["a", "b"])];
        assert_eq!(run(&ab), Ok(()));
        assert!(used("a") && !used("b"));
        assert_eq!(run(&ab), Ok(()));
        assert!(used("b"));
        assert_eq!(run(&ab), Err(NotConsumed::Used(ab[0].clone())));
        // [transfer T, refund R] with R spent: refused, and T is not consumed.
        assert_eq!(run(&[choice("refund", &["r"])]), Ok(()));
        let batch = [choice("transfer", &["t"]), choice("refund", &["r"])];
        assert_eq!(run(&batch), Err(NotConsumed::Used(batch[1].clone())));
        assert!(!used("t"), "a refused request consumed a grant");
        assert_eq!(run(&[choice("transfer", &["t"])]), Ok(()));
        // Two calls that may each take x or y: one each, never the same twice.
        let xy = [choice("t", &["x", "y"]), choice("t", &["x", "y"])];
        assert_eq!(run(&xy), Ok(()));
        assert!(used("x") && used("y"));
        // A store failing on the second claim: the first is given back.
        let mut n = 0;
        let failing = consume_all(
            &[choice("t", &["p"]), choice("t", &["q"])],
            |u| {
                n += 1;
                if n == 2 {
                    return Err("store.unavailable: down".into());
                }
                store
                    .insert_new(u.store_key().as_bytes(), UnixTime::from_secs(u.until), now)
                    .map(|f| f.then_some(()))
            },
            |u, ()| store.remove(u.store_key().as_bytes()).unwrap(),
        );
        assert_eq!(
            failing,
            Err(NotConsumed::Store("store.unavailable: down".into()))
        );
        assert!(!used("p") && !used("q"));
    }
}
