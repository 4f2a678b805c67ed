//! For tests only (feature `test-tls`): a throwaway CA and a certificate it issues for the
//! loopback names (`localhost`, `127.0.0.1`, `::1`), so a test can run a real HTTPS server
//! on loopback and point a [`crate::fetch::Fetcher`] at the CA.
use std::sync::Arc;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA (its PEM, for `--fetch-ca`) and a server configuration presenting a certificate it
/// issued for the loopback names.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// A rustls server configuration with the loopback certificate (ALPN `http/1.1`).
    pub server: Arc<rustls::ServerConfig>,
}

/// Makes a fresh CA and loopback server certificate; panics on failure (tests only).
pub fn loopback_ca() -> TestCa {
    issue(&["localhost", "127.0.0.1", "::1"])
}

/// Makes a fresh CA and a server certificate for `names` (DNS names or IP addresses);
/// panics on failure (tests only).
pub fn issue(names: &[&str]) -> TestCa {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "CADA test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("server key");
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
            .expect("server params")
            .signed_by(&leaf_key, &issuer)
            .expect("server certificate");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server configuration");
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    TestCa {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// Serves one accepted std TCP connection over TLS with `config`: the returned stream reads
/// and writes plaintext (the handshake happens on first use).
pub fn accept(
    config: &Arc<rustls::ServerConfig>,
    tcp: std::net::TcpStream,
) -> rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream> {
    let conn = rustls::ServerConnection::new(Arc::clone(config)).expect("TLS server connection");
    rustls::StreamOwned::new(conn, tcp)
}
