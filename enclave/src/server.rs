//! Serving the wire protocol: length-prefixed CBOR frames, several requests in flight per
//! connection, typed errors for every bad frame. A malformed or unknown frame gets an error
//! answer and the connection keeps serving; an oversized frame gets an error answer and the
//! connection is closed (its bytes cannot be skipped safely). The process always keeps
//! serving other and new connections.
use std::sync::Arc;

use cada_protocol::wire::{
    self, ops, AttestRequest, AttestResponse, ErrorCode, InstallContractRequest, LockOwnerRequest,
    Request, Response, SignPopRequest, WireError,
};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::sync::{mpsc, Semaphore};

use crate::signer::Signer;

/// Requests in flight per connection before new ones are answered `busy`.
pub const MAX_IN_FLIGHT: usize = 256;

fn error_response(id: u64, code: ErrorCode, message: impl Into<String>) -> Response {
    Response {
        id,
        ok: None,
        err: Some(WireError {
            code,
            message: message.into(),
        }),
    }
}

/// Answers one request.
pub fn handle(signer: &Signer, req: &Request) -> Response {
    let result = match req.op.as_str() {
        ops::DESCRIBE => signer.describe().map(|d| wire::to_value(&d)),
        ops::SIGN_POP => match wire::body::<SignPopRequest>(&req.body) {
            Ok(body) => signer.sign_pop(&body).map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        ops::ATTEST => match wire::body::<AttestRequest>(&req.body) {
            Ok(body) => signer.attest(&body.nonce).map(|env| {
                wire::to_value(&AttestResponse {
                    envelope: env.to_cbor(),
                })
            }),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        ops::LOCK_OWNER => match wire::body::<LockOwnerRequest>(&req.body) {
            Ok(body) => signer.lock_owner(&body.lock).map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        ops::INSTALL_CONTRACT => match wire::body::<InstallContractRequest>(&req.body) {
            Ok(body) => signer
                .install_contract(&body.contract, body.status_list.as_deref())
                .map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        ops::CONTRACTS => signer.contracts().map(|r| wire::to_value(&r)),
        ops::SECRET_INSTALL => {
            match wire::body::<cada_protocol::sealed::SecretInstallRequest>(&req.body) {
                Ok(body) => signer
                    .install_secret(&body.bundle)
                    .map(|r| wire::to_value(&r)),
                Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
            }
        }
        ops::OPEN => match wire::body::<cada_protocol::sealed::OpenRequest>(&req.body) {
            Ok(body) => signer.open_data(&body).map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        other => {
            return error_response(
                req.id,
                ErrorCode::UnknownOp,
                format!(
                    "unknown op {:?}; known: describe, attest, sign_pop, lock_owner, \
                     install_contract, contracts, secret_call, secret_install, open",
                    other.chars().take(32).collect::<String>()
                ),
            )
        }
    };
    match result {
        Ok(Ok(value)) => Response {
            id: req.id,
            ok: Some(value),
            err: None,
        },
        Ok(Err(e)) => error_response(req.id, ErrorCode::Malformed, e.to_string()),
        Err(e) => {
            tracing::debug!(id = req.id, op = %req.op, error = %e, "request refused");
            error_response(req.id, e.code(), e.to_string())
        }
    }
}

/// Serves one connection until the peer closes it or sends an oversized frame.
pub async fn serve_connection<S>(stream: S, signer: Arc<Signer>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let (tx, mut rx) = mpsc::channel::<Response>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        let mut wr = BufWriter::with_capacity(64 * 1024, wr);
        while let Some(resp) = rx.recv().await {
            let Ok(frame) = wire::encode_frame(&resp) else {
                continue;
            };
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            // Write several ready answers with one syscall.
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut payload = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        if rd.read_exact(&mut hdr).await.is_err() {
            break;
        }
        let len = match wire::frame_len(hdr) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx
                    .send(error_response(0, ErrorCode::TooLarge, e.to_string()))
                    .await;
                break;
            }
        };
        payload.resize(len, 0);
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let req: Request = match wire::decode_payload(&payload) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx
                    .send(error_response(
                        0,
                        ErrorCode::Malformed,
                        format!("not a request frame: {e}"),
                    ))
                    .await;
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let _ = tx
                .send(error_response(
                    req.id,
                    ErrorCode::Busy,
                    "too many requests in flight",
                ))
                .await;
            continue;
        };
        let signer = signer.clone();
        let tx = tx.clone();
        if req.op == ops::SECRET_CALL {
            // A secret call waits on the upstream: its own task, so that proofs and other
            // calls on this connection go on meanwhile.
            tokio::spawn(async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let resp = crate::egress::handle_call(&signer, &req, now).await;
                let _ = tx.send(resp).await;
                drop(permit);
            });
            continue;
        }
        if req.op == ops::ATTEST {
            // Platform calls (NSM ioctl, certificate generation) may block: keep them off
            // the reactor.
            tokio::task::spawn_blocking(move || {
                let resp = handle(&signer, &req);
                let _ = tx.blocking_send(resp);
                drop(permit);
            });
        } else {
            let resp = handle(&signer, &req);
            let _ = tx.send(resp).await;
            drop(permit);
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The hybrid-vsock handshake a VMM (Firecracker, vhost-device-vsock) performs on its unix
/// socket: `CONNECT <port>\n` → `OK <port>\n`. The enclave listening on a unix socket itself
/// speaks the VMM's side, so clients are the same for emulators and for local runs.
pub async fn accept_hybrid<S>(stream: S, port: u32) -> std::io::Result<BufReader<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut rd = BufReader::new(stream);
    let mut line = Vec::with_capacity(32);
    let n = (&mut rd).take(64).read_until(b'\n', &mut line).await?;
    let text = std::str::from_utf8(&line[..n]).unwrap_or("");
    let want = format!("CONNECT {port}\n");
    if text != want {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("expected {want:?}, got {text:?}"),
        ));
    }
    rd.get_mut()
        .write_all(format!("OK {port}\n").as_bytes())
        .await?;
    Ok(rd)
}
