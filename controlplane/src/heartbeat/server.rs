//! The TLS listener and the heartbeat sessions.
//!
//! Admission, in order, each refusal logged with the peer and the reason:
//!
//! 1. at most `max_connections` connections (sessions and handshakes), and
//!    at most `max_handshakes` handshakes in progress: beyond either, the
//!    TCP connection is closed at once (a flood costs an accept and a close);
//! 2. the TLS handshake (TLS 1.3; 1.2 if allowed) within `handshake_timeout`,
//!    with a client certificate that is pinned and within its dates
//!    ([`super::certs::PinnedCertVerifier`]); session resumption is off, so
//!    every connection presents its certificate again;
//! 3. a `hello` as the first frame within `hello_timeout`.
//!
//! A session then reads frames (bounded by `max_frame_len`) and writes what
//! the registry queues for it (a bounded queue, so a slow endpoint cannot
//! make the gateway buffer without limit). Any protocol error gets an
//! `error` frame and the connection is closed; other sessions never notice.
//! A session with no message for `missed_limit + 1` intervals is closed.
//! When the heartbeat settings change (from Central), every open session
//! follows at once: its idle limit is recomputed from its last message, and
//! when the interval changed its endpoint is sent a new `welcome` with it.

use super::certs::{CertFingerprint, PinnedCertStore, PinnedCertVerifier};
use super::codec::{CodecError, Encoded, FrameCodec};
use super::protocol::{EndpointMessage, ErrorCode, GatewayMessage};
use super::{HeartbeatConfig, HeartbeatError, SessionHandle, Shared};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, timeout, Instant};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Frames queued for one session at most (lists, IoC queries).
const SESSION_QUEUE: usize = 16;

/// Time allowed to write one frame to a slow endpoint.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type ServerFramed = Framed<TlsStream<TcpStream>, FrameCodec<EndpointMessage, GatewayMessage>>;

/// Builds the rustls server configuration: the gateway's certificate, the
/// pinned-certificate client verifier, TLS 1.3 (and 1.2 when allowed), no
/// session resumption.
pub fn build_tls(config: &HeartbeatConfig, certs: &PinnedCertStore) -> Result<Arc<ServerConfig>, HeartbeatError> {
    let tls_err = |what, path: &std::path::Path, detail: String| HeartbeatError::Tls { what, path: path.display().to_string(), detail };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.server_cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| tls_err("certificate", &config.server_cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls_err("certificate", &config.server_cert, "no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.server_key).map_err(|e| tls_err("key", &config.server_key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCertVerifier::new(certs.clone(), provider.signature_verification_algorithms));
    let versions: &[&rustls::SupportedProtocolVersion] = if config.allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| tls_err("certificate", &config.server_cert, e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_err("key", &config.server_key, format!("{e} (does the key match the certificate?)")))?;
    // A resumed session would skip the client certificate: a removed
    // certificate must not get back in through a ticket.
    tls.session_storage = Arc::new(NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(Arc::new(tls))
}

fn refuse(peer: SocketAddr, reason: &dyn std::fmt::Display) {
    tracing::warn!(%peer, %reason, "heartbeat connection refused");
}

/// Accepts connections until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let connections = Arc::new(Semaphore::new(shared.config.max_connections));
    let handshakes = Arc::new(Semaphore::new(shared.config.max_handshakes));
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("heartbeat accept failed: {e}: check the open-files limit");
                sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(connection) = Arc::clone(&connections).try_acquire_owned() else {
            refuse(peer, &format_args!("{} connections open (max_connections)", shared.config.max_connections));
            continue;
        };
        let Ok(handshake) = Arc::clone(&handshakes).try_acquire_owned() else {
            refuse(peer, &format_args!("{} TLS handshakes in progress (max_handshakes)", shared.config.max_handshakes));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let s = Arc::clone(&shared);
        shared.tasks.spawn(async move {
            connection_task(s, stream, peer, handshake).await;
            drop(connection);
        });
    }
}

async fn connection_task(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr, handshake: OwnedSemaphorePermit) {
    let acceptor = TlsAcceptor::from(shared.tls.load_full());
    let tls = tokio::select! {
        _ = shared.shutdown.cancelled() => return,
        r = timeout(shared.config.handshake_timeout, acceptor.accept(stream)) => r,
    };
    drop(handshake);
    let tls = match tls {
        Err(_) => {
            return refuse(peer, &format_args!("TLS handshake not finished within {:?}", shared.config.handshake_timeout))
        }
        Ok(Err(e)) => return refuse(peer, &format_args!("TLS handshake failed: {}", handshake_reason(&e))),
        Ok(Ok(tls)) => tls,
    };
    let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        return refuse(peer, &"no client certificate");
    };
    let fingerprint = CertFingerprint::of(cert);
    // The certificate may have been removed while the handshake ran.
    let Some(revoked) = shared.certs.revocation(&fingerprint) else {
        return refuse(peer, &format_args!("client certificate sha256:{fingerprint} was removed"));
    };
    let subject = shared.certs.get(&fingerprint).map(|c| c.subject).unwrap_or_default();
    let framed = Framed::new(tls, FrameCodec::new(shared.config.max_frame_len));
    Session { shared, peer, fingerprint, subject, framed, revoked }.run().await;
}

struct Session {
    shared: Arc<Shared>,
    peer: SocketAddr,
    fingerprint: CertFingerprint,
    subject: String,
    framed: ServerFramed,
    revoked: CancellationToken,
}

/// How a session ended.
enum End {
    /// Send this error frame, log at warn.
    Refuse(ErrorCode, String),
    /// Send this error frame, log at info (not the peer's fault).
    Close(ErrorCode, String),
    /// The peer closed or the connection broke.
    Gone(String),
}

impl Session {
    async fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let id = self.fingerprint.endpoint_id();
        let hello = match self.await_hello().await {
            Ok(h) => h,
            Err(end) => return self.finish(end, None).await,
        };
        let (tx, mut rx) = mpsc::channel::<Encoded>(SESSION_QUEUE);
        let close = CancellationToken::new();
        let conn = shared.next_conn();
        let handle = SessionHandle { conn, peer: self.peer, tx, close: close.clone() };
        if let Some(old) = shared.on_hello(id, self.fingerprint, &hello, Some(handle)) {
            old.close.cancel();
        }
        tracing::info!(
            endpoint = %id,
            name = %hello.name,
            agent = %hello.endpoint_id,
            certificate = %self.subject,
            peer = %self.peer,
            health = %hello.health,
            "heartbeat session up"
        );
        for user in &hello.users {
            shared.sign_in(id, user.clone());
        }
        let welcome = GatewayMessage::Welcome {
            heartbeat_interval_ms: u64::try_from(shared.live_settings().interval.as_millis()).unwrap_or(u64::MAX),
            gateway: shared.config.gateway_name.clone(),
            endpoint_id: id.0,
        };
        let end = match self.write(welcome).await {
            Err(e) => End::Gone(e),
            Ok(()) => match self.write_encoded(shared.current_list()).await {
                Err(e) => End::Gone(e),
                Ok(()) => self.serve(id, &mut rx, &close).await,
            },
        };
        shared.on_session_end(id, conn);
        self.finish(end, Some((id, hello.name))).await;
    }

    async fn await_hello(&mut self) -> Result<super::protocol::Hello, End> {
        let first = tokio::select! {
            _ = self.shared.shutdown.cancelled() => return Err(End::Close(ErrorCode::ShuttingDown, "gateway stopping".into())),
            _ = self.revoked.cancelled() => return Err(End::Refuse(ErrorCode::CertificateRevoked, "certificate removed".into())),
            r = timeout(self.shared.config.hello_timeout, self.framed.next()) => r,
        };
        match first {
            Err(_) => Err(End::Refuse(
                ErrorCode::HelloTimeout,
                format!("no hello within {:?} of the handshake", self.shared.config.hello_timeout),
            )),
            Ok(None) => Err(End::Gone("closed before hello".into())),
            Ok(Some(Err(e))) => Err(codec_end(e)),
            Ok(Some(Ok(EndpointMessage::Hello(hello)))) => Ok(hello),
            Ok(Some(Ok(other))) => Err(End::Refuse(
                ErrorCode::HelloExpected,
                format!("first message was `{}`, expected `hello`", other.type_name()),
            )),
        }
    }

    async fn serve(&mut self, id: hbgw_shared::endpoint::EndpointId, rx: &mut mpsc::Receiver<Encoded>, close: &CancellationToken) -> End {
        let mut live_rx = self.shared.live.subscribe();
        let mut live = *live_rx.borrow_and_update();
        let mut idle_limit = live.interval * (live.missed_limit + 1);
        let mut last_message = Instant::now();
        let idle = sleep(idle_limit);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                biased;
                _ = self.revoked.cancelled() => {
                    return End::Close(ErrorCode::CertificateRevoked, "the endpoint's certificate was removed from the gateway".into());
                }
                _ = close.cancelled() => return End::Close(ErrorCode::Replaced, "a newer session of this endpoint replaced this one".into()),
                _ = self.shared.shutdown.cancelled() => return End::Close(ErrorCode::ShuttingDown, "gateway stopping".into()),
                _ = &mut idle => return End::Refuse(ErrorCode::IdleTimeout, format!("no message for {idle_limit:?}")),
                Ok(()) = live_rx.changed() => {
                    let now = *live_rx.borrow_and_update();
                    idle_limit = now.interval * (now.missed_limit + 1);
                    idle.as_mut().reset(last_message + idle_limit);
                    if now.interval != live.interval {
                        let welcome = GatewayMessage::Welcome {
                            heartbeat_interval_ms: u64::try_from(now.interval.as_millis()).unwrap_or(u64::MAX),
                            gateway: self.shared.config.gateway_name.clone(),
                            endpoint_id: id.0,
                        };
                        if let Err(e) = self.write(welcome).await {
                            return End::Gone(e);
                        }
                    }
                    live = now;
                }
                Some(frame) = rx.recv() => {
                    if let Err(e) = self.write_encoded(frame).await {
                        return End::Gone(e);
                    }
                }
                msg = self.framed.next() => {
                    let msg = match msg {
                        None => return End::Gone("closed by the endpoint".into()),
                        Some(Err(e)) => return codec_end(e),
                        Some(Ok(m)) => m,
                    };
                    last_message = Instant::now();
                    idle.as_mut().reset(last_message + idle_limit);
                    self.handle(id, msg);
                }
            }
        }
    }

    fn handle(&self, id: hbgw_shared::endpoint::EndpointId, msg: EndpointMessage) {
        let shared = &self.shared;
        match msg {
            EndpointMessage::Hello(hello) => {
                // A repeated hello re-reports interfaces (an address changed).
                shared.on_hello(id, self.fingerprint, &hello, None);
                for user in hello.users {
                    shared.sign_in(id, user);
                }
            }
            EndpointMessage::Heartbeat { health } => shared.on_health(id, health, None),
            EndpointMessage::HealthChange { health, reason } => shared.on_health(id, health, reason.as_deref()),
            EndpointMessage::SignIn(account) => shared.sign_in(id, account),
            EndpointMessage::SignOut(account) => shared.sign_out(id, &account),
            EndpointMessage::IocAnswer(answer) => shared.on_ioc_answer(id, answer),
        }
    }

    async fn write(&mut self, msg: GatewayMessage) -> Result<(), String> {
        match timeout(WRITE_TIMEOUT, self.framed.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write not done within {WRITE_TIMEOUT:?}")),
        }
    }

    async fn write_encoded(&mut self, frame: Encoded) -> Result<(), String> {
        match timeout(WRITE_TIMEOUT, self.framed.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write not done within {WRITE_TIMEOUT:?}")),
        }
    }

    /// Logs the end, sends the error frame if any, and closes TLS.
    async fn finish(mut self, end: End, who: Option<(hbgw_shared::endpoint::EndpointId, String)>) {
        let (endpoint, name) = match &who {
            Some((id, name)) => (id.to_string(), name.as_str()),
            None => (self.fingerprint.endpoint_id().to_string(), ""),
        };
        let peer = self.peer;
        let code = match &end {
            End::Refuse(code, reason) => {
                if who.is_some() {
                    tracing::warn!(%peer, %endpoint, %name, %reason, "heartbeat session closed");
                } else {
                    refuse(peer, &format_args!("{reason}"));
                }
                Some((*code, reason.clone()))
            }
            End::Close(code, reason) => {
                tracing::info!(%peer, %endpoint, %name, %reason, "heartbeat session closed");
                Some((*code, reason.clone()))
            }
            End::Gone(reason) => {
                tracing::info!(%peer, %endpoint, %name, %reason, "heartbeat session ended");
                None
            }
        };
        if let Some((code, message)) = code {
            let _ = timeout(Duration::from_secs(1), self.framed.send(GatewayMessage::Error { code, message })).await;
        }
        let _ = timeout(Duration::from_secs(1), self.framed.get_mut().shutdown()).await;
    }
}

/// The handshake error in one line: our own refusal text when the pinned
/// verifier refused (rustls would print its debug form).
fn handshake_reason(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error as TlsError, OtherError};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>()) {
        Some(TlsError::InvalidCertificate(CertificateError::Other(OtherError(reason)))) => reason.to_string(),
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

fn codec_end(e: CodecError) -> End {
    match e.code() {
        Some(code) => End::Refuse(code, e.to_string()),
        None => End::Gone(e.to_string()),
    }
}
