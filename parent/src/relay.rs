//! The egress relay (`cada-parent serve --egress-listen`): the enclave's secret calls reach
//! their upstreams through it. The enclave dials it once per new upstream connection and
//! names the upstream in one bounded hello line (`CADA-EGRESS/1 host:port`,
//! [`cada_protocol::egress::parse_relay_hello`]); the relay connects that host over TCP,
//! answers `OK` (or `ERR <reason>`) and then copies bytes both ways. Those bytes are the
//! enclave's TLS session with the upstream: the parent sees the host, the port, the sizes
//! and the timing, never the credential, the request or the answer.
//!
//! The relay is not an open proxy (adversary22 finding 14): it resolves the hello's host
//! itself, refuses every loopback, link-local, private, unspecified, multicast, broadcast and
//! cloud-metadata address ([`forbidden_reason`]) unless `--egress-allow HOST:PORT` names that
//! exact destination, and connects the address it checked (no second resolution). A
//! refusal is logged and answered with the stable code `relay.destination`.
//!
//! Why its own port rather than a stream operation on the signing connection: a TLS stream
//! is a byte stream with its own flow control; carried in CBOR frames beside proofs it would
//! sit behind (or hold up) the signing traffic, add a framing copy per record and cap the
//! window at the 1 MiB frame. A socket per upstream connection lets the kernel (vsock or TCP)
//! do flow control, maps one pooled enclave connection to one relay connection, and leaves
//! the enclave's frame loop as it was.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
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

/// One `--egress-allow HOST:PORT`: a destination the relay connects even though it resolves
/// to an address it refuses otherwise (a loopback upstream in tests, an internal API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressAllow {
    /// The host as the enclave names it (lower case, IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::str::FromStr for EgressAllow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s}: expected HOST:PORT (IPv6 as [ADDR]:PORT)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || port == 0 || host.contains(['[', ']', '/', ' ', '*']) {
            return Err(bad());
        }
        Ok(EgressAllow {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Which destinations the relay connects.
#[derive(Debug, Clone, Default)]
pub struct RelayPolicy {
    /// Destinations allowed although their addresses are refused otherwise.
    pub allow: Vec<EgressAllow>,
}

impl RelayPolicy {
    /// A policy allowing exactly these destinations besides public addresses.
    #[must_use]
    pub fn new(allow: Vec<EgressAllow>) -> Self {
        RelayPolicy { allow }
    }

    fn allows(&self, host: &str, port: u16) -> bool {
        self.allow
            .iter()
            .any(|a| a.port == port && a.host.eq_ignore_ascii_case(host))
    }
}

/// Why the relay refuses to connect `ip` (unless an `--egress-allow` names the destination):
/// loopback, unspecified, "this network", link-local (169.254/16 — the cloud metadata
/// service 169.254.169.254 among them —, fe80::/10), private (RFC 1918, 100.64/10 shared
/// address space — Alibaba's metadata 100.100.100.200 —, fc00::/7 — AWS's fd00:ec2::254 —,
/// deprecated site-local fec0::/10), multicast, broadcast; IPv4-mapped, -compatible and
/// NAT64 (64:ff9b::/96) IPv6 addresses by the IPv4 address they carry.
#[must_use]
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some("private")
    } else if ip.is_multicast() || o[0] >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if s[0..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible ::a.b.c.d (deprecated): judged by the IPv4 address.
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        forbidden_v4(Ipv4Addr::new(a, b, c, d))
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site-local")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private (unique local, cloud metadata)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The addresses `host:port` resolves to that the policy lets the relay connect, or the
/// `relay.destination` refusal naming what was refused.
async fn destinations(
    policy: &RelayPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if policy.allows(host, port) {
        return Ok(addrs);
    }
    let mut refused = None;
    let ok: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match forbidden_reason(a.ip()) {
            Some(why) => {
                refused = Some((a.ip(), why));
                false
            }
            None => true,
        })
        .collect();
    match (ok.is_empty(), refused) {
        (true, Some((ip, why))) => Err(format!(
            "{DESTINATION_REFUSED}: {host}:{port} resolves to {ip}, a {why} address; the relay \
             connects only public addresses unless `cada-parent serve --egress-allow \
             {host}:{port}` names this destination"
        )),
        (true, None) => Err(format!("cannot resolve {host}: no address")),
        (false, _) => Ok(ok),
    }
}

/// The stable code of a destination the relay refuses.
pub const DESTINATION_REFUSED: &str = "relay.destination";

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

/// Relays one enclave connection: hello, the destination checked ([`RelayPolicy`]), connect,
/// `OK`, then bytes both ways until either side closes. Logs the host, the port and the byte
/// counts only.
pub async fn relay_one<S>(mut s: S, policy: Arc<RelayPolicy>)
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
        let addrs = destinations(&policy, &bare, port).await?;
        // The checked addresses themselves: no second resolution between check and connect.
        let mut last = String::from("no address");
        let mut up = None;
        for a in addrs {
            match tokio::net::TcpStream::connect(a).await {
                Ok(c) => {
                    up = Some(c);
                    break;
                }
                Err(e) => last = e.to_string(),
            }
        }
        let up = up.ok_or_else(|| format!("cannot connect {host}:{port}: {last}"))?;
        let _ = up.set_nodelay(true);
        Ok::<_, String>((host, port, up))
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    let (host, port, mut up) = match target {
        Ok(t) => t,
        Err(e) => {
            if e.starts_with(DESTINATION_REFUSED) {
                tracing::warn!(code = DESTINATION_REFUSED, error = %e, "egress relay: refused");
            } else {
                tracing::warn!(error = %e, "egress relay: refused");
            }
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

/// Serves the relay on `listen` until the task is dropped, connecting what `policy` allows.
pub async fn serve(listen: EgressListen, policy: RelayPolicy) -> Result<(), String> {
    let policy = Arc::new(policy);
    match listen {
        EgressListen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            tracing::info!(%addr, "egress relay listening on loopback TCP");
            loop {
                if let Ok((c, _)) = l.accept().await {
                    let _ = c.set_nodelay(true);
                    tokio::spawn(relay_one(c, Arc::clone(&policy)));
                }
            }
        }
        EgressListen::Unix(path) => {
            let l = bind_private(&path)?;
            tracing::info!(path = %path.display(), "egress relay listening on a unix socket");
            loop {
                if let Ok((c, _)) = l.accept().await {
                    tokio::spawn(relay_one(c, Arc::clone(&policy)));
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
                    tokio::spawn(relay_one(c, Arc::clone(&policy)));
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
        let allow = vec![format!("127.0.0.1:{port}").parse().unwrap()];
        tokio::spawn(relay_one(b, Arc::new(RelayPolicy::new(allow))));
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
            let allow = vec!["127.0.0.1:1".parse().unwrap()];
            tokio::spawn(relay_one(b, Arc::new(RelayPolicy::new(allow))));
            let mut a = tokio::io::BufReader::new(a);
            a.get_mut().write_all(&hello).await.unwrap();
            let mut line = String::new();
            a.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("ERR "), "{line}");
        }
    }

    #[test]
    fn forbidden_addresses() {
        for a in [
            "127.0.0.1",
            "127.8.9.1",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.100.100.200",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(forbidden_reason(ip).is_some(), "{a} passes");
        }
        for a in [
            "1.1.1.1",
            "140.82.112.5",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(forbidden_reason(ip), None, "{a}");
        }
    }

    #[test]
    fn allow_entries() {
        let a: EgressAllow = "LocalHost:8443".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 8443));
        let a: EgressAllow = "[::1]:443".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 443));
        for bad in ["localhost", "localhost:0", ":443", "x:y", "*:443", "a/b:1"] {
            assert!(bad.parse::<EgressAllow>().is_err(), "{bad}");
        }
        let p = RelayPolicy::new(vec!["localhost:8443".parse().unwrap()]);
        assert!(p.allows("LOCALHOST", 8443));
        assert!(!p.allows("localhost", 8444));
        assert!(!p.allows("127.0.0.1", 8443));
    }

    /// Finding 14: a loopback service, the metadata address and a private one are refused
    /// with `relay.destination` (and nothing connects); the same loopback port is relayed
    /// once `--egress-allow` names it.
    #[tokio::test]
    async fn internal_destinations_are_refused_unless_allowed() {
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = up.local_addr().unwrap().port();
        for (host, p) in [
            ("127.0.0.1", port),
            ("localhost", port),
            ("169.254.169.254", 80),
            ("10.0.0.1", 443),
            ("[::1]", port),
            ("[::ffff:127.0.0.1]", port),
        ] {
            let (a, b) = tokio::io::duplex(4096);
            let other = vec![format!("127.0.0.1:{}", port.wrapping_add(1))
                .parse()
                .unwrap()];
            tokio::spawn(relay_one(b, Arc::new(RelayPolicy::new(other))));
            let mut a = tokio::io::BufReader::new(a);
            a.get_mut()
                .write_all(cada_protocol::egress::relay_hello(host, p).as_bytes())
                .await
                .unwrap();
            let mut line = String::new();
            a.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("ERR relay.destination"), "{host}: {line}");
        }
        let accepted = tokio::time::timeout(Duration::from_millis(50), up.accept()).await;
        assert!(accepted.is_err(), "a refused destination was connected");
    }
}
