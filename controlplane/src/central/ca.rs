//! Central's certificate authority: it issues Central's own HTTPS server
//! certificate, each endpoint's client certificate (which gateways then pin),
//! and gateways' heartbeat server certificates (which endpoints trust through
//! this CA). Keys are ECDSA P-256.
//!
//! The CA key lives in Central's data directory (`ca.key`, mode 0600) and is
//! never sent anywhere; issued endpoint keys are handed out once and never
//! stored.

use crate::heartbeat::pki::IssuedCert;
use crate::heartbeat::CertFingerprint;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// The CA's common name (issued certificates name it as issuer).
const CA_NAME: &str = "hbgw Central CA";

/// Central's CA.
pub struct CentralCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for CentralCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CentralCa")
    }
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

impl CentralCa {
    /// Creates a new CA and writes `ca.pem` and `ca.key` into `dir`.
    pub fn create(dir: &Path) -> Result<Self, String> {
        let mut params = ca_params().map_err(|e| e.to_string())?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).map_err(|e| format!("cannot write {}/ca.pem: {e}", dir.display()))?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())
            .map_err(|e| format!("cannot write {}/ca.key: {e}", dir.display()))?;
        Ok(Self { params, key, ca_pem })
    }

    /// Loads the CA from `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let ca_pem = std::fs::read_to_string(dir.join("ca.pem"))
            .map_err(|e| format!("cannot read {}/ca.pem: {e}: run `hbgw-central init --data {}` first", dir.display(), dir.display()))?;
        let key_pem = std::fs::read_to_string(dir.join("ca.key"))
            .map_err(|e| format!("cannot read {}/ca.key: {e}: run `hbgw-central init` first", dir.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}/ca.key: {e}: restore the CA key", dir.display()))?;
        // The issuer is named by its DN and key; the stored certificate has both.
        let params = ca_params().map_err(|e| e.to_string())?;
        Ok(Self { params, key, ca_pem })
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }

    fn issue(&self, name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose, days: i64) -> Result<IssuedCert, String> {
        let mut params = CertificateParams::new(sans).map_err(|e| format!("certificate for {name:?}: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(days);
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = params.signed_by(&key, &self.issuer()).map_err(|e| e.to_string())?;
        Ok(IssuedCert {
            name: name.to_owned(),
            fingerprint: CertFingerprint::of(cert.der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// An endpoint's client certificate (valid a year).
    pub fn issue_endpoint(&self, name: &str) -> Result<IssuedCert, String> {
        self.issue(name, vec![name.to_owned()], ExtendedKeyUsagePurpose::ClientAuth, 365)
    }

    /// A server certificate for `name` (also valid for loopback addresses).
    pub fn issue_server(&self, name: &str) -> Result<IssuedCert, String> {
        let mut sans = vec![name.to_owned()];
        for a in ["localhost", "127.0.0.1", "::1"] {
            if a != name {
                sans.push(a.to_owned());
            }
        }
        self.issue(name, sans, ExtendedKeyUsagePurpose::ServerAuth, 825)
    }

    /// Writes an issued certificate and key as `dir/NAME.pem`, `dir/NAME.key`.
    pub fn write_issued(dir: &Path, file_stem: &str, issued: &IssuedCert) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::write(dir.join(format!("{file_stem}.pem")), &issued.cert_pem)
            .map_err(|e| format!("cannot write {}/{file_stem}.pem: {e}", dir.display()))?;
        write_private(&dir.join(format!("{file_stem}.key")), &issued.key_pem)
            .map_err(|e| format!("cannot write {}/{file_stem}.key: {e}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heartbeat::PinnedCertStore;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_stored_one() {
        let dir = tempfile::tempdir().unwrap();
        CentralCa::create(dir.path()).unwrap();
        let ca = CentralCa::load(dir.path()).unwrap();
        let ep = ca.issue_endpoint("ep0").unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(ep.cert_pem.as_bytes()).unwrap();
        let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(ca.ca_pem.as_bytes()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier.verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now()).unwrap();
        let store = PinnedCertStore::new();
        store.add_pem(ep.cert_pem.as_bytes(), "ep0").unwrap();
        assert!(store.contains(&ep.fingerprint));
    }
}
