//! Serving the wire protocol: length-prefixed CBOR frames, several requests in flight per
//! connection, typed errors for every bad frame. A malformed or unknown frame gets an error
//! answer and the connection keeps serving; an oversized frame gets an error answer and the
//! connection is closed (its bytes cannot be skipped safely). The process always keeps
//! serving other and new connections.
use std::sync::Arc;

use cada_protocol::wire::{
    self, ops, AttestRequest, AttestResponse, DelegateRequest, ErrorCode, InstallContractRequest,
    LockOwnerRequest, Request, Response, SignPopRequest, WireError,
};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
    WriteHalf,
};
use tokio::sync::Semaphore;

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
                .install_contracts(
                    &body.contract,
                    body.status_list.as_deref(),
                    &body.status_lists,
                )
                .map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
        ops::CONTRACTS => signer.contracts().map(|r| wire::to_value(&r)),
        ops::DELEGATE => match wire::body::<DelegateRequest>(&req.body) {
            Ok(body) => signer.delegate(&body).map(|r| wire::to_value(&r)),
            Err(e) => return error_response(req.id, ErrorCode::BadRequest, e.to_string()),
        },
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
                     install_contract, contracts, secret_call, secret_install, open, delegate",
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

/// The write half of a connection, shared by the frame loop and the platform calls it
/// hands to the blocking pool.
type Writer<S> = Arc<tokio::sync::Mutex<BufWriter<WriteHalf<S>>>>;

/// Writes `resp`; flushes unless `more` (another request is already buffered, whose answer
/// can share the write).
async fn answer<S: AsyncWrite>(wr: &Writer<S>, resp: &Response, more: bool) -> bool {
    let Ok(frame) = wire::encode_frame(resp) else {
        return true;
    };
    let mut w = wr.lock().await;
    w.write_all(&frame).await.is_ok() && (more || w.flush().await.is_ok())
}

/// Whether `buffered` holds a whole frame (a request that is answered next without reading).
fn holds_frame(buffered: &[u8]) -> bool {
    match buffered.first_chunk::<4>() {
        Some(hdr) => wire::frame_len(*hdr).is_ok_and(|len| buffered.len() - 4 >= len),
        None => false,
    }
}

/// Serves one connection until the peer closes it or sends an oversized frame.
///
/// The loop writes each answer itself as soon as it has it (a writer task fed by a queue
/// cost a task wake-up per answer), and flushes once no further whole request is already
/// buffered: answers to pipelined requests share one write.
pub async fn serve_connection<S>(stream: S, signer: Arc<Signer>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let wr: Writer<S> = Arc::new(tokio::sync::Mutex::new(BufWriter::with_capacity(
        64 * 1024,
        wr,
    )));
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
                let _ = answer(
                    &wr,
                    &error_response(0, ErrorCode::TooLarge, e.to_string()),
                    false,
                )
                .await;
                break;
            }
        };
        payload.resize(len, 0);
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let more = holds_frame(rd.buffer());
        let req: Request = match wire::decode_payload(&payload) {
            Ok(r) => r,
            Err(e) => {
                let resp =
                    error_response(0, ErrorCode::Malformed, format!("not a request frame: {e}"));
                if !answer(&wr, &resp, more).await {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let resp = error_response(req.id, ErrorCode::Busy, "too many requests in flight");
            if !answer(&wr, &resp, more).await {
                break;
            }
            continue;
        };
        if req.op == ops::SECRET_CALL {
            // A secret call waits on the upstream: its own task, so that proofs and other
            // calls on this connection go on meanwhile (issue 22, egress).
            let (signer, task_wr) = (signer.clone(), wr.clone());
            tokio::spawn(async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let resp = crate::egress::handle_call(&signer, &req, now).await;
                answer(&task_wr, &resp, false).await;
                drop(permit);
            });
            // Answers written before this request must not wait for the upstream.
            if !more && wr.lock().await.flush().await.is_err() {
                break;
            }
            continue;
        }
        if req.op == ops::ATTEST || req.op == ops::DELEGATE {
            // Platform calls (NSM ioctl, certificate generation; a delegation carries fresh
            // evidence) may block: keep them off the reactor.
            let (signer, task_wr) = (signer.clone(), wr.clone());
            tokio::spawn(async move {
                if let Ok(resp) = tokio::task::spawn_blocking(move || handle(&signer, &req)).await {
                    answer(&task_wr, &resp, false).await;
                }
                drop(permit);
            });
            // Answers written before this request must not wait for the platform call.
            if !more && wr.lock().await.flush().await.is_err() {
                break;
            }
        } else {
            let resp = handle(&signer, &req);
            drop(permit);
            if !answer(&wr, &resp, more).await {
                break;
            }
        }
    }
    // Platform calls still running answer before the connection is shut.
    let _ = in_flight
        .acquire_many(u32::try_from(MAX_IN_FLIGHT).unwrap_or(u32::MAX))
        .await;
    let mut w = wr.lock().await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::SigningKey;
    use crate::signer::DelegationPolicy;
    use std::time::Duration;
    use tokio::io::{duplex, DuplexStream};

    fn signer() -> Arc<Signer> {
        let key = SigningKey::generate(cada_protocol::jwk::SigAlg::EdDSA).unwrap();
        let sim = crate::platform::sim::Sim::new(None).unwrap();
        Arc::new(Signer::new(key, Box::new(sim), DelegationPolicy::default()).unwrap())
    }

    fn frame(id: u64) -> Vec<u8> {
        wire::encode_frame(&Request {
            id,
            op: ops::DESCRIBE.into(),
            body: ciborium::Value::Null,
        })
        .unwrap()
    }

    async fn answer_of(s: &mut DuplexStream) -> std::io::Result<Response> {
        let mut hdr = [0u8; 4];
        s.read_exact(&mut hdr).await?;
        let mut payload = vec![0u8; wire::frame_len(hdr).unwrap()];
        s.read_exact(&mut payload).await?;
        Ok(wire::decode_payload(&payload).unwrap())
    }

    /// Answers to requests that arrived together may share a write, but none waits for a
    /// request that has only partly arrived. (The outer timeout only turns a hang into a
    /// failure.)
    #[tokio::test]
    async fn pipelined_requests_are_answered_and_a_partial_next_frame_holds_no_answer_back() {
        let run = async {
            let (mut client, server) = duplex(1 << 20);
            tokio::spawn(serve_connection(server, signer()));
            let mut bytes = Vec::new();
            for id in 1..=5 {
                bytes.extend(frame(id));
            }
            let sixth = frame(6);
            bytes.extend(&sixth[..3]);
            client.write_all(&bytes).await.unwrap();
            for id in 1..=5 {
                let r = answer_of(&mut client).await.unwrap();
                assert_eq!(r.id, id);
                assert!(r.ok.is_some(), "{:?}", r.err);
            }
            client.write_all(&sixth[3..]).await.unwrap();
            assert_eq!(answer_of(&mut client).await.unwrap().id, 6);
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("an answer was held back");
    }

    #[tokio::test]
    async fn an_oversized_frame_is_answered_too_large_and_the_connection_closed() {
        let run = async {
            let (mut client, server) = duplex(1 << 20);
            tokio::spawn(serve_connection(server, signer()));
            let mut bytes = frame(1);
            let len = u32::try_from(wire::MAX_FRAME_LEN + 1).unwrap();
            bytes.extend(len.to_be_bytes());
            client.write_all(&bytes).await.unwrap();
            assert_eq!(answer_of(&mut client).await.unwrap().id, 1);
            let r = answer_of(&mut client).await.unwrap();
            assert_eq!(r.err.map(|e| e.code), Some(ErrorCode::TooLarge));
            assert!(answer_of(&mut client).await.is_err(), "closed after it");
        };
        tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("no answer");
    }
}
