//! A throw-away PKI for tests, the demo and load tests: a CA, the gateway's
//! server certificate, and one client certificate per simulated endpoint
//! (what Central issues in the product). Keys are ECDSA P-256.
//!
//! [`TestPki::write_to`] lays it out as the simulator and the gateway read it:
//!
//! ```text
//! ca.pem  ca.key              the CA (the simulator's trust anchor for the gateway)
//! gateway.pem  gateway.key    the gateway's server certificate and key
//! endpoints/<name>.pem/.key   each endpoint's certificate and key
//! pinned.pem                  every endpoint certificate: PinnedCertStore::add_pem_file
//! pinned.txt                  "<sha256 fingerprint> <name>" per endpoint
//! ```

use super::certs::CertFingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// Certificate generation or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused the parameters.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {source}: check the directory exists and is writable")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// One certificate with its key, in PEM.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The name (common name; also a DNS SAN).
    pub name: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER.
    pub fingerprint: CertFingerprint,
}

/// A CA and the certificates it issued.
pub struct TestPki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The gateway's server certificate (SANs: the names given, plus 127.0.0.1 and ::1).
    pub gateway: IssuedCert,
    /// One per endpoint, in the order named.
    pub endpoints: Vec<IssuedCert>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").field("gateway", &self.gateway.name).field("endpoints", &self.endpoints.len()).finish()
    }
}

fn issued(name: &str, cert: rcgen::Certificate, key: &KeyPair) -> IssuedCert {
    IssuedCert {
        name: name.to_owned(),
        fingerprint: CertFingerprint::of(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl TestPki {
    /// A new CA, a gateway certificate for `gateway_name` (plus loopback
    /// addresses), and one client certificate per name in `endpoints`.
    pub fn generate(gateway_name: &str, endpoints: &[String]) -> Result<Self, PkiError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "hbgw test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        ca_params.not_before = now - Duration::days(1);
        ca_params.not_after = now + Duration::days(3650);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let mut pki = TestPki {
            ca_pem: ca_cert.pem(),
            ca_params,
            ca_key,
            gateway: IssuedCert { name: String::new(), cert_pem: String::new(), key_pem: String::new(), fingerprint: CertFingerprint([0; 32]) },
            endpoints: Vec::new(),
        };
        pki.gateway = pki.issue_server(gateway_name)?;
        for name in endpoints {
            let ep = pki.issue_endpoint(name, now - Duration::days(1), now + Duration::days(365))?;
            pki.endpoints.push(ep);
        }
        Ok(pki)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.ca_params, &self.ca_key)
    }

    fn issue_server(&self, name: &str) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(vec![name.to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(issued(name, cert, &key))
    }

    /// Issues a client certificate for an endpoint with the given validity
    /// (an expired one for tests: `not_after` in the past).
    pub fn issue_endpoint(
        &self,
        name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer())?;
        Ok(issued(name, cert, &key))
    }

    /// Writes the layout in the module docs under `dir` (created if needed).
    pub fn write_to(&self, dir: &Path) -> Result<(), PkiError> {
        let write = |rel: &str, text: &str| {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| PkiError::Write { path: parent.display().to_string(), source })?;
            }
            std::fs::write(&path, text).map_err(|source| PkiError::Write { path: path.display().to_string(), source })
        };
        write("ca.pem", &self.ca_pem)?;
        write("ca.key", &self.ca_key.serialize_pem())?;
        write("gateway.pem", &self.gateway.cert_pem)?;
        write("gateway.key", &self.gateway.key_pem)?;
        let mut pinned_pem = String::new();
        let mut pinned_txt = String::new();
        for ep in &self.endpoints {
            write(&format!("endpoints/{}.pem", ep.name), &ep.cert_pem)?;
            write(&format!("endpoints/{}.key", ep.name), &ep.key_pem)?;
            pinned_pem.push_str(&ep.cert_pem);
            pinned_txt.push_str(&format!("{} {}\n", ep.fingerprint, ep.name));
        }
        write("pinned.pem", &pinned_pem)?;
        write("pinned.txt", &pinned_txt)?;
        Ok(())
    }
}
