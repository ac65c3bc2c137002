//! The endpoint certificates the gateway holds, and the TLS client
//! verifier that accepts exactly those.
//!
//! The product accepts "only endpoints whose certificate it holds": trusting
//! the issuing CA would admit every endpoint that CA ever signed, including
//! ones Central has since removed. So the pin is the certificate itself, the
//! SHA-256 of its DER ([`CertFingerprint`]), plus its validity dates. The
//! store is shared by the verifier (new handshakes) and the live sessions:
//! [`PinnedCertStore::remove`] cancels the session of that certificate and
//! every later handshake with it fails.
//!
//! An endpoint's [`EndpointId`] is derived from its fingerprint, so an
//! endpoint cannot claim another's identity whatever its Hello says.

use hbgw_shared::endpoint::EndpointId;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    /// The fingerprint of `der`.
    pub fn of(der: &[u8]) -> Self {
        CertFingerprint(Sha256::digest(der).into())
    }

    /// The endpoint id for this certificate: the first 8 bytes, top bit
    /// cleared (ids with the top bit set name MACs without a heartbeat, see
    /// [`super::missing::no_heartbeat_id`]).
    pub fn endpoint_id(&self) -> EndpointId {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        EndpointId(u64::from_be_bytes(b) & !(1 << 63))
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

impl Serialize for CertFingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for CertFingerprint {
    type Err = CertError;

    /// 64 hex digits, optionally separated by colons (`openssl x509 -fingerprint -sha256`).
    fn from_str(s: &str) -> Result<Self, CertError> {
        let hex: String = s.trim().trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
        let bad = || CertError::BadFingerprint(s.chars().take(100).collect());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
        }
        Ok(CertFingerprint(out))
    }
}

/// A certificate or PEM file the store cannot take.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}: check the path and its permissions")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not PEM, or no CERTIFICATE block.
    #[error("{0}: no PEM CERTIFICATE block found: give the endpoint certificate in PEM form")]
    NoCertificate(String),
    /// DER that is not an X.509 certificate.
    #[error("not an X.509 certificate ({0}): give the endpoint certificate, not a key or CSR")]
    BadDer(String),
    /// A fingerprint string that is not 64 hex digits.
    #[error("bad certificate fingerprint `{0}`: write the SHA-256 as 64 hex digits")]
    BadFingerprint(String),
}

/// What the store knows of one pinned certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedCert {
    /// SHA-256 of the DER.
    pub fingerprint: CertFingerprint,
    /// The subject's common name (or the whole subject when it has none).
    pub subject: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

impl PinnedCert {
    /// The id the endpoint with this certificate gets.
    pub fn endpoint_id(&self) -> EndpointId {
        self.fingerprint.endpoint_id()
    }
}

/// Why a client certificate was refused in the handshake.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertRefusal {
    /// Not in the store (never added, or removed).
    #[error("client certificate sha256:{0} is not pinned: add the endpoint's certificate to the gateway (Central sync or PinnedCertStore::add)")]
    NotPinned(CertFingerprint),
    /// Before its validity.
    #[error("client certificate sha256:{fingerprint} ({subject}) is not valid before {not_before} (Unix time): check the endpoint's and the gateway's clocks")]
    NotYetValid {
        /// Which.
        fingerprint: CertFingerprint,
        /// Its subject.
        subject: String,
        /// Start of validity.
        not_before: i64,
    },
    /// After its validity.
    #[error("client certificate sha256:{fingerprint} ({subject}) expired at {not_after} (Unix time): issue the endpoint a new certificate")]
    Expired {
        /// Which.
        fingerprint: CertFingerprint,
        /// Its subject.
        subject: String,
        /// End of validity.
        not_after: i64,
    },
}

#[derive(Debug)]
struct Entry {
    cert: PinnedCert,
    revoked: CancellationToken,
}

/// The endpoint certificates the gateway accepts; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct PinnedCertStore {
    entries: Arc<RwLock<HashMap<CertFingerprint, Entry>>>,
}

fn parse_cert(der: &[u8]) -> Result<PinnedCert, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| CertError::BadDer(e.to_string()))?;
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.subject().to_string());
    Ok(PinnedCert {
        fingerprint: CertFingerprint::of(der),
        subject,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

impl PinnedCertStore {
    /// An empty store: every client is refused until certificates are added.
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<CertFingerprint, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CertFingerprint, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Pins one DER certificate; adding one already held changes nothing.
    pub fn add_der(&self, der: &[u8]) -> Result<PinnedCert, CertError> {
        let cert = parse_cert(der)?;
        let mut entries = self.write();
        let entry = entries
            .entry(cert.fingerprint)
            .or_insert_with(|| Entry { cert: cert.clone(), revoked: CancellationToken::new() });
        tracing::info!(fingerprint = %cert.fingerprint, subject = %entry.cert.subject, "endpoint certificate pinned");
        Ok(cert)
    }

    /// Pins every certificate in a PEM text (`origin` names it in errors).
    pub fn add_pem(&self, pem: &[u8], origin: &str) -> Result<Vec<PinnedCert>, CertError> {
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| CertError::BadDer(format!("{origin}: {e}")))?;
        if ders.is_empty() {
            return Err(CertError::NoCertificate(origin.to_owned()));
        }
        ders.iter().map(|d| self.add_der(d)).collect()
    }

    /// Pins every certificate in a PEM file.
    pub fn add_pem_file(&self, path: &Path) -> Result<Vec<PinnedCert>, CertError> {
        let text = std::fs::read(path).map_err(|source| CertError::Read { path: path.display().to_string(), source })?;
        self.add_pem(&text, &path.display().to_string())
    }

    /// Unpins a certificate: its live session is closed and every later
    /// handshake with it refused. Returns whether it was held.
    pub fn remove(&self, fingerprint: &CertFingerprint) -> bool {
        let removed = self.write().remove(fingerprint);
        match removed {
            Some(entry) => {
                entry.revoked.cancel();
                tracing::info!(%fingerprint, subject = %entry.cert.subject, "endpoint certificate removed: its session is closed");
                true
            }
            None => false,
        }
    }

    /// Whether the certificate is pinned.
    pub fn contains(&self, fingerprint: &CertFingerprint) -> bool {
        self.read().contains_key(fingerprint)
    }

    /// The pinned certificate with this fingerprint.
    pub fn get(&self, fingerprint: &CertFingerprint) -> Option<PinnedCert> {
        self.read().get(fingerprint).map(|e| e.cert.clone())
    }

    /// Certificates pinned.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none is pinned.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every pinned certificate, by fingerprint.
    pub fn list(&self) -> Vec<PinnedCert> {
        let mut v: Vec<_> = self.read().values().map(|e| e.cert.clone()).collect();
        v.sort_by_key(|c| c.fingerprint);
        v
    }

    /// Checks a presented certificate against the pins and its dates.
    pub fn check(&self, der: &[u8], now_unix: i64) -> Result<PinnedCert, CertRefusal> {
        let fingerprint = CertFingerprint::of(der);
        let entries = self.read();
        let entry = entries.get(&fingerprint).ok_or(CertRefusal::NotPinned(fingerprint))?;
        let c = &entry.cert;
        if now_unix < c.not_before {
            return Err(CertRefusal::NotYetValid { fingerprint, subject: c.subject.clone(), not_before: c.not_before });
        }
        if now_unix > c.not_after {
            return Err(CertRefusal::Expired { fingerprint, subject: c.subject.clone(), not_after: c.not_after });
        }
        Ok(c.clone())
    }

    /// A token cancelled when this certificate is removed; `None` when it
    /// is not pinned (removed between the handshake and now).
    pub fn revocation(&self, fingerprint: &CertFingerprint) -> Option<CancellationToken> {
        self.read().get(fingerprint).map(|e| e.revoked.clone())
    }
}

/// A rustls client verifier that accepts exactly the certificates in a
/// [`PinnedCertStore`], within their validity dates, and checks the
/// handshake signature against the certificate's key.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    store: PinnedCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    /// A verifier over `store`, verifying signatures with `algorithms`
    /// (the crypto provider's `signature_verification_algorithms`).
    pub fn new(store: PinnedCertStore, algorithms: WebPkiSupportedAlgorithms) -> Self {
        PinnedCertVerifier { store, algorithms }
    }
}

impl ClientCertVerifier for PinnedCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No CA hints: the pin is the certificate, and each endpoint has one.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        match self.store.check(end_entity, now) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            // `Other` carries our one-line reason into the handshake error
            // the server logs with the peer's address.
            Err(refusal) => Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refusal))))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(cn: &str, not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn fingerprint_parses_openssl_form_and_derives_ids() {
        let der = self_signed("ep1", (2020, 1, 1), (2090, 1, 1));
        let fp = CertFingerprint::of(&der);
        let colon: String = fp.to_string().as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap().to_uppercase()).collect::<Vec<_>>().join(":");
        assert_eq!(colon.parse::<CertFingerprint>().unwrap(), fp);
        assert!("abcd".parse::<CertFingerprint>().is_err());
        assert_eq!(fp.endpoint_id().0 >> 63, 0);
    }

    #[test]
    fn check_pins_dates_and_removal() {
        let store = PinnedCertStore::new();
        let good = self_signed("ep1", (2020, 1, 1), (2090, 1, 1));
        let old = self_signed("ep2", (2001, 1, 1), (2002, 1, 1));
        let other = self_signed("ep3", (2020, 1, 1), (2090, 1, 1));
        let pinned = store.add_der(&good).unwrap();
        assert_eq!(pinned.subject, "ep1");
        store.add_der(&old).unwrap();
        let now = 1_800_000_000; // 2027
        assert!(store.check(&good, now).is_ok());
        assert!(matches!(store.check(&old, now), Err(CertRefusal::Expired { .. })));
        assert!(matches!(store.check(&good, 1_000_000_000), Err(CertRefusal::NotYetValid { .. })));
        assert!(matches!(store.check(&other, now), Err(CertRefusal::NotPinned(_))));
        let token = store.revocation(&pinned.fingerprint).unwrap();
        assert!(!token.is_cancelled());
        assert!(store.remove(&pinned.fingerprint));
        assert!(token.is_cancelled());
        assert!(matches!(store.check(&good, now), Err(CertRefusal::NotPinned(_))));
        assert!(!store.remove(&pinned.fingerprint));
        // Pinned again: a fresh token, not the cancelled one.
        store.add_der(&good).unwrap();
        assert!(!store.revocation(&pinned.fingerprint).unwrap().is_cancelled());
    }

    #[test]
    fn pem_errors_name_the_fix() {
        let store = PinnedCertStore::new();
        let err = store.add_pem(b"hello", "x.pem").unwrap_err().to_string();
        assert!(err.contains("x.pem") && err.contains("PEM"), "{err}");
        let err = store.add_pem_file(Path::new("/nonexistent/ep.pem")).unwrap_err().to_string();
        assert!(err.contains("check the path"), "{err}");
    }
}
