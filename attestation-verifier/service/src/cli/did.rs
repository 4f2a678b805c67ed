//! `cada-verify did resolve`.
use std::time::Duration;

use cada_verify::did::{self, DEFAULT_TIMEOUT};
use cada_verify::ServiceError;
use clap::Args;

use super::UsageError;

/// Arguments of `cada-verify did resolve`.
#[derive(Args)]
pub struct ResolveArgs {
    /// The DID to resolve: `did:key:z…` (Ed25519 `z6Mk…`, P-256 `zDn…`, P-384 `z82…`) or
    /// `did:web:host[%3Aport][:path…]`.
    pub did: String,
    /// Seconds allowed for a whole did:web fetch (connect, answer, body).
    #[arg(long, default_value_t = DEFAULT_TIMEOUT.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub timeout: u64,
    /// Print the DID document as JSON (the default; kept for symmetry with the other
    /// subcommands).
    #[arg(long, conflicts_with = "text")]
    pub json: bool,
    /// Print a short human summary instead of JSON.
    #[arg(long)]
    pub text: bool,
    /// Roots for the did:web HTTPS fetch.
    #[command(flatten)]
    pub fetch: cada_net::cli::FetchArgs,
}

/// Resolves the DID and prints its document; `Ok(false)` when the DID is refused.
pub fn run(a: ResolveArgs) -> Result<bool, UsageError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| UsageError(format!("cannot start the async runtime: {e}")))?;
    let fetcher = a.fetch.fetcher().map_err(|e| UsageError(e.to_string()))?;
    let res = rt.block_on(did::resolve(
        &a.did,
        &fetcher,
        Duration::from_secs(a.timeout),
    ));
    match res {
        Ok(r) => {
            if a.text {
                println!("RESOLVED {}", a.did);
                match &r.url {
                    Some(u) => println!("  from:  {u}"),
                    None => println!("  from:  the DID itself (did:{}, offline)", r.method),
                }
                let vms = r.document["verificationMethod"].as_array();
                for vm in vms.into_iter().flatten() {
                    println!(
                        "  key:   {} ({})",
                        vm["id"].as_str().unwrap_or("?"),
                        vm["type"].as_str().unwrap_or("?")
                    );
                }
            } else {
                super::print_json(&r.document);
            }
            Ok(true)
        }
        Err(e @ ServiceError::DidRefused { .. }) => {
            let code = e.did_code().unwrap_or("did");
            if a.text {
                println!("REJECTED {e}");
            } else {
                let message = match &e {
                    ServiceError::DidRefused { detail, .. } => detail.clone(),
                    other => other.to_string(),
                };
                super::print_json(&serde_json::json!({
                    "valid": false, "did": a.did,
                    "errors": [{"code": code, "message": message}],
                }));
            }
            Ok(false)
        }
        Err(e) => Err(UsageError(e.to_string())),
    }
}
