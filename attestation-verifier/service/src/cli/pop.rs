//! `cada-verify pop`: the same decision as `serve`, from the command line, with the same
//! policy and replay-store options.

use cada_attestation_verifier::calls;
use cada_attestation_verifier::decide::{Accepted, Decision, Refusal, Request, RequestBody};
use cada_attestation_verifier::{Verifier, VerifierOptions};
use cada_pipeline::replay::Replay;
use cada_protocol::envelope::EvidenceEnvelope;
use clap::Args;

use super::policy::{read_nonce_key, PolicyArgs};
use super::{arg_value, parse_time, UsageError};

/// Arguments of `cada-verify pop`.
#[derive(Args)]
pub struct PopArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// HTTP method of the request the proof came with.
    #[arg(long)]
    pub method: String,
    /// Full URL of that request.
    #[arg(long)]
    pub url: String,
    /// The `DPoP` header value (compact JWS); `@FILE` reads it from a file. Repeatable:
    /// proofs are decided in order by one verifier (one replay store), so a repeated
    /// proof shows as a replay.
    #[arg(long, required = true)]
    pub dpop: Vec<String>,
    /// The `CADA-Evidence` header value (base64url envelope); `@FILE` reads it from a file.
    #[arg(long)]
    pub evidence: String,
    /// The access token the request carried (then `ath` must match).
    #[arg(long, allow_hyphen_values = true)]
    pub access_token: Option<String>,
    /// The `CADA-Contract` header value (the owner's compact trust contract); `@FILE` reads
    /// it from a file. Needed where the policy's audience names `owners`.
    #[arg(long)]
    pub contract: Option<String>,
    /// The request's body, exactly as received (`@FILE` reads it from a file; `""` for a
    /// request without one): its digest is checked against the proof's `cada.bd` and its
    /// MCP calls against `cada.mcp` and the contract or token (as `serve`'s `body`). Where
    /// contracts or tokens govern calls, give it or --body-digest.
    #[arg(long, conflicts_with = "body_digest")]
    pub body: Option<String>,
    /// base64url SHA-256 of the request's body, when the body itself is not given: where
    /// calls are governed, the proof must then name the body's calls (`cada.mcp`).
    /// One digest in 64 begins with '-': still the value.
    #[arg(long, allow_hyphen_values = true)]
    pub body_digest: Option<String>,
    /// An owner's status list (compact `vc+jwt`), taken as fetched at --at; `@FILE` reads
    /// it from a file. Repeatable. Contracts with a status entry need theirs.
    #[arg(long)]
    pub status_list: Vec<String>,
    /// Replay store: `memory` (this process only) or the store a fleet of `serve`
    /// instances shares (`redis://HOST:PORT`, `rediss://…`, `unix:///PATH`,
    /// `redis+cluster://HOST:PORT,…`; docs/stores.md), so a proof already used there is a
    /// replay here too.
    #[arg(long, default_value = "memory")]
    pub replay_store: String,
    /// Replica acknowledgement, in-flight bound and deadline of the shared store.
    #[command(flatten)]
    pub store: cada_pipeline::store::cli::StoreArgs,
    /// File holding the fleet's nonce key (as `serve --nonce-key-file`), to check DPoP
    /// nonces and SEV-SNP evidence nonces.
    #[arg(long)]
    pub nonce_key_file: Option<std::path::PathBuf>,
    /// Verification time (RFC 3339 or `now`).
    #[arg(long, default_value = "now")]
    pub at: String,
    /// INSECURE, for emulator tests only: accept QEMU's unsigned Nitro documents.
    #[arg(long)]
    pub insecure_emulator: bool,
    /// Print JSON (RFC 7662 introspection shape).
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand; `Ok(true)` when every proof is accepted.
pub fn run(a: PopArgs) -> Result<bool, UsageError> {
    let at = parse_time(&a.at)?;
    let policy = a.policy.load()?;
    if a.insecure_emulator {
        super::warn_emulator();
    }
    let store = a
        .store
        .open(&a.replay_store)
        .map_err(|e| UsageError(e.to_string()))?;
    let replay = Replay::new(&store, 1 << 16);
    let nonces = read_nonce_key(a.nonce_key_file.as_ref())?;
    let verifier = Verifier::new(
        policy,
        VerifierOptions {
            insecure_emulator: a.insecure_emulator,
        },
    );
    let env = match EvidenceEnvelope::from_header(&arg_value(&a.evidence)?) {
        Ok(env) => env,
        Err(e) => {
            let e: cada_attestation_verifier::VerifyError = e.into();
            print_rejected(&e.into(), a.json);
            return Ok(false);
        }
    };
    let contract = a.contract.as_deref().map(arg_value).transpose()?;
    let body =
        match (&a.body, &a.body_digest) {
            (Some(b), _) => Some(calls::read_body(arg_value(b)?.as_bytes()).map_err(|e| {
                UsageError(format!("--body is not a JSON-RPC message or batch: {e}"))
            })?),
            (None, Some(d)) => Some(RequestBody {
                digest: d.clone(),
                calls: None,
                tool_arguments: None,
            }),
            (None, None) => None,
        };
    for l in &a.status_list {
        if let Err(r) = verifier.install_status_list(arg_value(l)?.trim(), at.as_secs(), at) {
            print_rejected(&r, a.json);
            return Ok(false);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UsageError(e.to_string()))?;
    let mut all_ok = true;
    for d in &a.dpop {
        let dpop = arg_value(d)?;
        let req = Request {
            method: &a.method,
            url: &a.url,
            dpop: &dpop,
            access_token: a.access_token.as_deref(),
            evidence: Some(&env),
            contract: contract.as_deref().map(str::trim),
            body: body.as_ref(),
        };
        // Rules 1–13, then rule 6 for a body whose calls were not read (as `serve`).
        let evaluated = verifier.evaluate(&req, at, nonces.as_ref()).and_then(|p| {
            calls::check_unread_calls(req.body, p.accepted()).map_err(Refusal::from)?;
            Ok(p)
        });
        let decision = match evaluated {
            Err(r) => Decision::Refuse(r),
            Ok(p) => {
                let inserted =
                    rt.block_on(replay.insert_new(p.replay_key(), p.remember_until(), at));
                p.finish(inserted)
            }
        };
        match decision {
            Decision::Accept(v) => print_accepted(&v, a.json),
            Decision::Refuse(r) => {
                all_ok = false;
                print_rejected(&r, a.json);
            }
        }
    }
    Ok(all_ok)
}

fn print_accepted(v: &Accepted, json: bool) {
    if json {
        let out = serde_json::json!({
            "active": true, "jkt": v.key.jkt, "did": v.key.did, "platform": v.key.platform,
            "measurements": v.key.measurements, "exp": v.claims.exp, "iat": v.claims.iat,
            "jti": v.claims.jti, "htm": v.claims.htm, "htu": v.claims.htu, "cada": v.claims.cada,
            "admission": v.admission, "owner": v.key.owner, "contract": v.contract,
        });
        super::print_json(&out);
    } else {
        println!("ACCEPTED proof for {} {}", v.claims.htm, v.claims.htu);
        println!("  key:      {} ({})", v.key.jkt, v.key.did);
        println!(
            "  platform: {}  module: {}",
            v.key.platform, v.key.module_id
        );
        for (k, m) in &v.key.measurements {
            println!("  {k}:     {m}");
        }
        println!(
            "  seq:      {}  chain: {}",
            v.claims.cada.seq, v.claims.cada.chain
        );
        if let Some(owner) = &v.key.owner {
            println!("  owner:    {owner}");
        }
        if let Some(c) = &v.contract {
            println!(
                "  contract: {} ({}), {} s left, by {}",
                c.digest, c.id, c.remaining_secs, c.owner
            );
        }
    }
}

fn print_rejected(r: &Refusal, json: bool) {
    if json {
        let out = serde_json::json!({"active": false, "rule": r.rule(), "reasons": [{"code": r.code(), "message": r.error.to_string()}]});
        super::print_json(&out);
    } else {
        println!("REJECTED [{}] {}", r.code(), r.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: PopArgs,
    }

    /// A base64url digest begins with '-' one time in 64, an opaque token may: values.
    #[test]
    fn a_digest_or_token_beginning_with_a_dash_is_a_value() {
        let digest = "-47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU";
        let cli = Cli::try_parse_from([
            "pop",
            "--method",
            "GET",
            "--url",
            "https://api.example/x",
            "--dpop",
            "@p.jws",
            "--evidence",
            "@e.b64",
            "--body-digest",
            digest,
            "--access-token",
            "-t0ken",
        ])
        .unwrap();
        assert_eq!(cli.a.body_digest.as_deref(), Some(digest));
        assert_eq!(cli.a.access_token.as_deref(), Some("-t0ken"));
    }
}
