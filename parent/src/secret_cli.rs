//! Sealed secrets and sealed data through the daemon (issue 22 parts 2 and 6):
//!
//! * `POST /v1/secrets/install` `{"bundle": base64url}` → `secret_install`: the enclave
//!   verifies the owner-sealed bundle and keeps the secret; the answer names it and its
//!   ciphertext digest. The daemon only relays ciphertext: it cannot open a bundle.
//! * `POST /v1/open` `{"envelope": base64url, "label": …}` → `open`: the enclave decrypts
//!   data a service sealed to it, under a contract's `opens` grant and budget, and answers
//!   the plaintext — which the host then sees (see docs/secrets.md, "What the host sees").
//! * the CLI: `cada-parent secret install FILE`, `cada-parent open --label L FILE`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cada_net::problem::Problem;
use cada_protocol::b64;
use cada_protocol::sealed::{
    OpenRequest, OpenResponse, SecretInstallRequest, SecretInstallResponse,
};
use cada_protocol::wire::ops;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::EnclaveClient;

/// Largest bundle or envelope file the CLI reads and the daemon accepts (decoded).
pub const MAX_SEALED_LEN: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallJson {
    bundle: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenJson {
    envelope: String,
    label: String,
}

/// `POST /v1/open` answer.
#[derive(Serialize)]
struct OpenedJson {
    /// base64url of the plaintext.
    plaintext: String,
    dtc: String,
    used: u64,
    budget: u64,
    seq: u64,
}

/// The daemon's `POST /v1/secrets/install` and `POST /v1/open` over `client`.
pub fn daemon_router(client: Arc<EnclaveClient>) -> Router {
    Router::new()
        .route("/v1/secrets/install", post(install))
        .route("/v1/open", post(open))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SEALED_LEN * 2))
        .with_state(client)
}

fn bad(detail: impl Into<String>) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-body", detail).into_response()
}

fn decode_b64(what: &'static str, s: &str) -> Result<Vec<u8>, Box<Response>> {
    b64::decode(what, s.trim(), MAX_SEALED_LEN).map_err(|e| Box::new(bad(e.to_string())))
}

async fn install(State(client): State<Arc<EnclaveClient>>, body: Bytes) -> Response {
    let j: InstallJson = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return bad(format!(
                "a secret install is {{\"bundle\": base64url}}: {e}"
            ))
        }
    };
    let bundle = match decode_b64("bundle", &j.bundle) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    match client
        .call::<_, SecretInstallResponse>(ops::SECRET_INSTALL, &SecretInstallRequest { bundle })
        .await
    {
        Ok(r) => {
            tracing::info!(secret = %r.name, digest = %r.digest, seq = r.seq, "secret installed");
            axum::Json(r).into_response()
        }
        Err(e) => crate::api::problem_of(&e).into_response(),
    }
}

async fn open(State(client): State<Arc<EnclaveClient>>, body: Bytes) -> Response {
    let j: OpenJson = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => {
            return bad(format!(
                "an open is {{\"envelope\": base64url, \"label\": text}}: {e}"
            ))
        }
    };
    let envelope = match decode_b64("envelope", &j.envelope) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let req = OpenRequest {
        envelope,
        label: j.label,
    };
    match client.call::<_, OpenResponse>(ops::OPEN, &req).await {
        Ok(r) => {
            tracing::info!(label = %req.label, dtc = %r.dtc, used = r.used, budget = r.budget, "data opened");
            axum::Json(OpenedJson {
                plaintext: b64::encode(&r.plaintext),
                dtc: r.dtc,
                used: r.used,
                budget: r.budget,
                seq: r.seq,
            })
            .into_response()
        }
        Err(e) => crate::api::problem_of(&e).into_response(),
    }
}

/// Reads a bundle or envelope file (`-`: stdin): raw CBOR, or its base64url text.
pub fn read_sealed(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let mut raw = Vec::new();
    let limit = u64::try_from(MAX_SEALED_LEN * 2 + 1).unwrap_or(u64::MAX);
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(limit)
            .read_to_end(&mut raw)
            .map_err(|e| format!("reading stdin: {e}"))?;
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut raw))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if raw.len() > MAX_SEALED_LEN * 2 {
        return Err(format!(
            "{} is larger than {} bytes",
            path.display(),
            MAX_SEALED_LEN * 2
        ));
    }
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return b64::decode("sealed file", text, MAX_SEALED_LEN).map_err(|e| e.to_string());
    }
    if raw.len() > MAX_SEALED_LEN {
        return Err(format!(
            "{} is larger than {MAX_SEALED_LEN} bytes",
            path.display()
        ));
    }
    Ok(raw)
}

/// `cada-parent secret install FILE`: prints the daemon's answer (name, digest, expiry,
/// chain sequence number).
pub async fn install_cli(socket: &Path, file: &Path) -> Result<(), String> {
    let bundle = read_sealed(file)?;
    let body = serde_json::json!({ "bundle": b64::encode(bundle) });
    let out = crate::daemon::call(socket, "POST", "/v1/secrets/install", Some(body)).await?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(())
}

/// `cada-parent open --label L FILE`: writes the plaintext to `out` (`-`: stdout) and the
/// grant's count to stderr.
pub async fn open_cli(
    socket: &Path,
    label: &str,
    file: &Path,
    out: &PathBuf,
) -> Result<(), String> {
    let envelope = read_sealed(file)?;
    let body = serde_json::json!({ "envelope": b64::encode(envelope), "label": label });
    let answer = crate::daemon::call(socket, "POST", "/v1/open", Some(body)).await?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| format!("the daemon's answer: {e}"))?;
    let pt = v["plaintext"]
        .as_str()
        .ok_or("the daemon's answer has no plaintext")?;
    let pt = b64::decode("plaintext", pt, MAX_SEALED_LEN).map_err(|e| e.to_string())?;
    eprintln!(
        "opened {label}: {} of {} opens granted by contract {} (chain seq {})",
        v["used"],
        v["budget"],
        v["dtc"].as_str().unwrap_or(""),
        v["seq"]
    );
    if out.as_os_str() == "-" {
        use std::io::Write as _;
        std::io::stdout()
            .write_all(&pt)
            .map_err(|e| format!("stdout: {e}"))?;
    } else {
        std::fs::write(out, &pt).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}
