//! The egress relay (`cada-parent serve --egress-listen`): the enclave's secret calls reach
//! their upstreams through it. The enclave dials it once per new upstream connection and
//! names the upstream in one bounded hello line (`CADA-EGRESS/1 host:port`,
//! [`cada_protocol::egress::parse_relay_hello`]); the relay connects that host over TCP,
//! answers `OK` (or `ERR <reason>`) and then copies bytes both ways. Those bytes are the
//! enclave's TLS session with the upstream: the parent sees the host, the port, the sizes
//! and the timing, never the credential, the request or the answer.
//!
//! Why its own port rather than a stream operation on the signing connection: a TLS stream
//! is a byte stream with its own flow control; carried in CBOR frames beside proofs it would
//! sit behind (or hold up) the signing traffic, add a framing copy per record and cap the
//! window at the 1 MiB frame. A socket per upstream connection lets the kernel (vsock or TCP)
//! do flow control, maps one pooled enclave connection to one relay connection, and leaves
//! the enclave's frame loop as it was.
use std::path::PathBuf;
use std::time::Duration;

use cada_protocol::egress::{parse_relay_hello, MAX_RELAY_HELLO};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where the relay listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressListen {
    /// AF_VSOCK on this port, any CID (Nitro: the enclave dials CID 3, the parent).
    Vsock(u32),
    /// A unix socket (mode 0600), for development or an emulator.
    Unix(PathBuf),
    /// Loopback TCP, for `sim` only.
    Tcp(std::net::SocketAddr),
}

impl std::str::FromStr for EgressListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("vsock:") {
            return p
                .parse()
                .map(EgressListen::Vsock)
                .map_err(|_| format!("{s}: expected vsock:PORT"));
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(format!("{s}: expected unix:PATH"));
            }
            return Ok(EgressListen::Unix(PathBuf::from(p)));
        }
        let a = s.strip_prefix("tcp:").unwrap_or(s);
        let addr: std::net::SocketAddr = a
            .parse()
            .map_err(|_| format!("{s}: expected vsock:PORT, unix:PATH or tcp:127.0.0.1:PORT"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s}: only loopback: whoever reaches the relay can have the parent open TCP \
                 connections"
            ));
        }
        Ok(EgressListen::Tcp(addr))
    }
}

/// Time a new relay connection gets to send its hello and have the upstream connected.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the hello byte by byte up to its newline (so that no TLS byte is read ahead).
async fn read_hello<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, String> {
    let mut line = Vec::with_capacity(64);
    loop {
        let b = s.read_u8().await.map_err(|e| format!("hello: {e}"))?;
        line.push(b);
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_RELAY_HELLO {
            return Err(format!("hello longer than {MAX_RELAY_HELLO} bytes"));
        }
    }
}

/// Relays one enclave connection: hello, connect, `OK`, then bytes both ways until either
/// side closes. Logs the host, the port and the byte counts only.
pub async fn relay_one<S>(mut s: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = tokio::time::timeout(HELLO_TIMEOUT, async {
        let line = read_hello(&mut s).await?;
        let (host, port) = parse_relay_hello(&line)?;
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host)
            .to_owned();
        let up = tokio::net::TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect {host}:{port}: {e}"))?;
        let _ = up.set_nodelay(true);
        Ok::<_, String>((host, port, up))
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let (host, port, mut up) = match target {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "egress relay: refused");
            let msg: String = e.chars().filter(|c| !c.is_control()).take(200).collect();
            let _ = s.write_all(format!("ERR {msg}\n").as_bytes()).await;
            return;
        }
    };
    if s.write_all(b"OK\n").await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional(&mut s, &mut up).await {
        Ok((out, back)) => {
            tracing::info!(%host, port, bytes_out = out, bytes_back = back, "egress relay: closed");
        }
        Err(e) => tracing::debug!(%host, port, error = %e, "egress relay: ended"),
    }
}

/// Serves the relay on `listen` until the task is dropped.
pub async fn serve(listen: EgressListen) -> Result<(), String> {
    match listen {
        EgressListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            tracing::info!(%addr, "egress relay listening on loopback TCP");
            loop {
                if let Ok((c, _)) = l.accept().await {
                    let _ = c.set_nodelay(true);
                    tokio::spawn(relay_one(c));
                }
            }
        }
        EgressListen::Unix(path) => {
            let l = bind_private(&path)?;
            tracing::info!(path = %path.display(), "egress relay listening on a unix socket");
            loop {
                if let Ok((c, _)) = l.accept().await {
                    tokio::spawn(relay_one(c));
                }
            }
        }
        EgressListen::Vsock(port) => {
            let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
            let l = tokio_vsock::VsockListener::bind(addr)
                .map_err(|e| format!("bind vsock port {port}: {e}"))?;
            tracing::info!(port, "egress relay listening on vsock");
            loop {
                if let Ok((c, _)) = l.accept().await {
                    tokio::spawn(relay_one(c));
                }
            }
        }
    }
}

/// Binds a unix socket with mode 0600 (bind at a temporary name, chmod, rename).
fn bind_private(path: &std::path::Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let l =
        tokio::net::UnixListener::bind(&tmp).map_err(|e| format!("bind {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod: {e}"))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "vsock:8001".parse::<EgressListen>().unwrap(),
            EgressListen::Vsock(8001)
        );
        assert!("tcp:127.0.0.1:1".parse::<EgressListen>().is_ok());
        assert!("0.0.0.0:1".parse::<EgressListen>().is_err());
        assert!("unix:".parse::<EgressListen>().is_err());
    }

    #[tokio::test]
    async fn the_relay_connects_the_named_upstream_and_copies_bytes() {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = up.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut c, _) = up.accept().await.unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).await.unwrap();
            c.write_all(&b).await.unwrap();
        });
        let (a, b) = tokio::io::duplex(4096);
        tokio::spawn(relay_one(b));
        let mut a = tokio::io::BufReader::new(a);
        a.get_mut()
            .write_all(cada_protocol::egress::relay_hello("127.0.0.1", port).as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        a.read_line(&mut line).await.unwrap();
        assert_eq!(line, "OK\n");
        a.get_mut().write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        a.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
    }

    #[tokio::test]
    async fn a_bad_hello_or_unreachable_upstream_gets_err() {
        for hello in [
            b"CONNECT x:1\n".to_vec(),
            cada_protocol::egress::relay_hello("127.0.0.1", 1).into_bytes(),
        ] {
            let (a, b) = tokio::io::duplex(4096);
            tokio::spawn(relay_one(b));
            let mut a = tokio::io::BufReader::new(a);
            a.get_mut().write_all(&hello).await.unwrap();
            let mut line = String::new();
            a.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("ERR "), "{line}");
        }
    }
}
