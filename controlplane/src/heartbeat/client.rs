//! The endpoint side of a heartbeat session: a TLS client with the
//! endpoint's certificate, speaking the framed protocol. Used by the
//! simulator (`hbgw-endpoint-sim`) and the tests; a reference for agents.

use super::codec::{CodecError, FrameCodec, DEFAULT_MAX_FRAME_LEN};
use super::protocol::{EndpointMessage, GatewayMessage};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::Framed;

/// Why a client could not be set up or connect.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A PEM input did not parse.
    #[error("bad PEM for {what}: {detail}: give a PEM certificate and a PKCS#8/PKCS#1/SEC1 key")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// rustls refused the configuration (for instance a key not matching the certificate).
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The server name is not a DNS name or IP address.
    #[error("bad server name `{0}`: give a DNS name or IP address in the gateway's certificate")]
    ServerName(String),
    /// TCP or TLS failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The gateway.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A TLS client configuration for one endpoint: trusts `ca_pem` for the
/// gateway and presents `cert_pem`/`key_pem`. TLS 1.3 only unless `tls12`.
pub fn client_config(ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8], tls12: bool) -> Result<Arc<ClientConfig>, ClientError> {
    let pem_err = |what| move |e: rustls::pki_types::pem::Error| ClientError::Pem { what, detail: e.to_string() };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.map_err(pem_err("CA"))?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(pem_err("certificate"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem_err("key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        if tls12 { &[&rustls::version::TLS13, &rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A live session, endpoint side.
#[derive(Debug)]
pub struct EndpointConnection {
    framed: Framed<TlsStream<TcpStream>, FrameCodec<GatewayMessage, EndpointMessage>>,
}

impl EndpointConnection {
    /// Connects and completes the TLS handshake. (With TLS 1.3 the server
    /// checks the client certificate after the client considers the
    /// handshake done: a refused certificate shows as the first read failing.)
    pub async fn connect(addr: SocketAddr, server_name: &str, config: Arc<ClientConfig>) -> Result<Self, ClientError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
        let tcp = TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr, source })?;
        let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(|source| ClientError::Connect { addr, source })?;
        Ok(EndpointConnection { framed: Framed::new(tls, FrameCodec::new(DEFAULT_MAX_FRAME_LEN)) })
    }

    /// Sends one message.
    pub async fn send(&mut self, message: EndpointMessage) -> Result<(), CodecError> {
        self.framed.send(message).await
    }

    /// The next message; `None` when the gateway closed the session.
    pub async fn recv(&mut self) -> Option<Result<GatewayMessage, CodecError>> {
        self.framed.next().await
    }

    /// The TLS stream, for tests that write raw bytes.
    pub fn get_mut(&mut self) -> &mut TlsStream<TcpStream> {
        self.framed.get_mut()
    }
}
