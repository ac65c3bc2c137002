//! HTTPS for Central: a small client (the gateway's sync and uploads, the
//! admin CLI) and the server loop (`hbgw-central`), both HTTP/1.1 over
//! rustls with hyper.
//!
//! It owns TLS set-up and body limits: a client trusts exactly the CA it is
//! given (never the system roots), and every body read, on either side, is
//! capped before it is buffered. It must never interpret what it carries.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A request that did not get a usable answer; always one line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// The URL or CA could not be used.
    #[error("{0}")]
    Setup(String),
    /// Connecting, TLS, or the exchange failed.
    #[error("cannot reach Central at {url}: {detail}")]
    Unreachable {
        /// Where.
        url: String,
        /// Why.
        detail: String,
    },
    /// No answer in time.
    #[error("Central at {url} did not answer within {secs} s")]
    Timeout {
        /// Where.
        url: String,
        /// How long we waited.
        secs: u64,
    },
    /// The answer's body was over the limit.
    #[error("Central's answer is larger than {limit} bytes: raise the limit or check Central")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Central answered with an error status.
    #[error("Central answered {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// Its `error` field, or the body.
        message: String,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Fills `buf` from the system's secure random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), String> {
    provider().secure_random.fill(buf).map_err(|_| "the system random source failed".to_owned())
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    random_bytes(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// An HTTPS client for one Central (`https://host:port`).
#[derive(Clone)]
pub struct HttpsClient {
    url: String,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient").field("url", &self.url).finish()
    }
}

impl HttpsClient {
    /// A client for `url` trusting only the CA certificates in `ca_pem`.
    pub fn new(url: &str, ca_pem: &[u8]) -> Result<Self, HttpError> {
        let setup = |m: String| HttpError::Setup(m);
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            setup(format!("Central URL {url:?} is not https://HOST:PORT: write e.g. https://central.example:8443"))
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(setup(format!("Central URL {url:?} has a path: give only https://HOST:PORT")));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h.trim_start_matches('[').trim_end_matches(']').to_owned(), p),
                Err(_) => return Err(setup(format!("Central URL {url:?}: port {p:?} is not a number"))),
            },
            _ => (authority.to_owned(), 443),
        };
        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| setup(format!("Central URL {url:?}: {host:?} is not a host name or address")))?;
        let mut roots = rustls::RootCertStore::empty();
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| setup(format!("Central CA file: {e}: give the ca.pem from Central's data directory")))?;
            roots.add(cert).map_err(|e| setup(format!("Central CA certificate unusable: {e}: give Central's ca.pem")))?;
            n += 1;
        }
        if n == 0 {
            return Err(setup("Central CA file holds no certificate: give the ca.pem from Central's data directory".into()));
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            server_name,
            connector: TlsConnector::from(Arc::new(config)),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request on a fresh connection; returns the status and body.
    /// Non-2xx answers are [`HttpError::Status`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        match tokio::time::timeout(timeout, self.exchange(method, path_and_query, bearer, body, max_body)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout { url: self.url.clone(), secs: timeout.as_secs() }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
        max_body: usize,
    ) -> Result<(StatusCode, Bytes), HttpError> {
        let unreachable = |d: String| HttpError::Unreachable { url: self.url.clone(), detail: d };
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port));
        if let Some(b) = bearer {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {b}"));
        }
        let (ctype, bytes) = body.unwrap_or(("application/json", Vec::new()));
        let req = req
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| HttpError::Setup(format!("bad request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), max_body).collect().await.map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                HttpError::TooLarge { limit: max_body }
            } else {
                unreachable(e.to_string())
            }
        })?;
        conn.abort();
        let bytes = body.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<super::protocol::ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned());
            return Err(HttpError::Status { status: status.as_u16(), message });
        }
        Ok((status, bytes))
    }
}

/// A TLS server configuration from a PEM chain and key.
pub fn server_tls(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("server key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("server certificate and key do not match: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A boxed response future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// What serves one request.
pub type Handler = Arc<dyn Fn(Request<Incoming>) -> ResponseFuture + Send + Sync>;

/// Accepts TLS connections on `listener` and serves HTTP/1.1 with `handler`
/// until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, handler: Handler) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let h = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(h(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
}

/// Reads a request body up to `limit` bytes.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, String> {
    Limited::new(body, limit).collect().await.map(|b| b.to_bytes()).map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            format!("request body over {limit} bytes: split it into smaller requests")
        } else {
            format!("cannot read the request body: {e}")
        }
    })
}

/// A JSON response.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A pre-serialized JSON response.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// An error response (`{"error": ...}`).
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &super::protocol::ErrorBody { error: message.into() })
}

/// The bearer token of a request.
pub fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// `key=value` pairs of the query string (no percent-decoding beyond `%2F`-free values).
pub fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect()
}

/// Whether the method is one of the given.
pub fn is(req: &Request<Incoming>, m: &Method) -> bool {
    req.method() == m
}
