//! The per-run test certificate authority and the servers' TLS configuration.
//!
//! A fresh CA per mock set means nothing on the machine trusts the mocks by accident: a client
//! only reaches them when it was told to trust exactly this `ca.pem`, which is also what the
//! sidecar has to support to talk to a private APNs/FCM endpoint at all.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::{
    self, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
};

/// A certificate authority generated at start, and the one server certificate it issued
/// (SAN `127.0.0.1` and `localhost`) that every mock listener presents.
///
/// Cheap to clone; clones share the same CA, so one `ca.pem` trusts every mock started with it.
#[derive(Clone)]
pub struct TestCa {
    inner: Arc<CaInner>,
}

struct CaInner {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key_pkcs8: Vec<u8>,
    /// The CA's key and name, to issue client certificates on demand.
    issuer: Issuer<'static, KeyPair>,
}

/// The object identifier of the `UID` (userId) attribute, 0.9.2342.19200300.100.1.1, where
/// Apple's push certificates carry the bundle id in their subject.
pub const UID_OID: &[u64] = &[0, 9, 2342, 19200300, 100, 1, 1];

/// A client certificate and its private key, PEM-encoded, as [`TestCa::issue_apns_client_cert`]
/// issues them.
#[derive(Clone)]
pub struct ClientCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The certificate (DER).
    pub cert_der: Vec<u8>,
    /// The private key (PKCS#8 DER).
    pub key_der: Vec<u8>,
}

impl ClientCert {
    /// Certificate then key in one PEM text, as a combined `cert_file` holds them.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys stay out of logs; the CA certificate is public anyway.
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates a new CA (ECDSA P-256) and a server certificate for `127.0.0.1`/`localhost`.
    pub fn new() -> anyhow::Result<TestCa> {
        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "res_push test CA (mock APNs/FCM)");
        dn.push(DnType::OrganizationName, "res_push tests");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA")?;
        let ca_pem = ca_cert.pem();
        let ca_der = ca_cert.der().clone();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::DnsName("localhost".try_into().context("SAN localhost")?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params
            .signed_by(&server_key, &issuer)
            .context("issuing the server certificate")?;

        Ok(TestCa {
            inner: Arc::new(CaInner {
                ca_pem,
                ca_der,
                server_cert: server_cert.der().clone(),
                server_key_pkcs8: server_key.serialize_der(),
                issuer,
            }),
        })
    }

    /// The CA certificate, PEM-encoded: the only root a client needs to trust the mocks.
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem.clone()
    }

    /// The CA certificate, DER-encoded (for clients that build a root store by hand).
    pub fn ca_der(&self) -> Vec<u8> {
        self.inner.ca_der.to_vec()
    }

    /// Writes `ca.pem` into `dir` and returns its path.
    ///
    /// # Panics
    /// When the file cannot be written; this is test support, use [`TestCa::try_write_ca`]
    /// to handle the error instead.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        self.try_write_ca(dir)
            .unwrap_or_else(|e| panic!("writing ca.pem into {}: {e:#}", dir.display()))
    }

    /// Writes `ca.pem` into `dir` and returns its path.
    pub fn try_write_ca(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.inner.ca_pem)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Issues a client certificate shaped like Apple's push certificates for `bundle_id`: the
    /// bundle id as the subject's `UID` ([`UID_OID`]) and CN `Apple Push Services: <bundle>`,
    /// extended key usage client authentication, with a fresh P-256 key.
    pub fn issue_apns_client_cert(&self, bundle_id: &str) -> anyhow::Result<ClientCert> {
        let key = KeyPair::generate().context("generating the client key")?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CustomDnType(UID_OID.to_vec()), bundle_id);
        dn.push(
            DnType::CommonName,
            format!("Apple Push Services: {bundle_id}"),
        );
        dn.push(DnType::OrganizationName, "res_push tests");
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.inner.issuer)
            .context("issuing the client certificate")?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        })
    }

    /// A rustls server configuration that also asks for a client certificate and verifies it
    /// against this CA. Connections without one are still accepted (APNs serves token and
    /// certificate clients on the same hosts); what a certificate allows is up to the handler.
    pub(crate) fn server_config_with_client_auth(
        &self,
        alpn: &[&[u8]],
    ) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.inner.ca_der.clone())
            .context("adding the CA as client root")?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("client certificate verifier")?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.inner.server_key_pkcs8.clone(),
        ));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.inner.server_cert.clone()], key)
            .context("server certificate")?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// A rustls server configuration presenting the CA-issued certificate and offering `alpn`.
    pub(crate) fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            self.inner.server_key_pkcs8.clone(),
        ));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(vec![self.inner.server_cert.clone()], key)
            .context("server certificate")?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The subject's `UID` attribute of a DER certificate (the bundle id in an Apple push
/// certificate); `None` when the certificate does not parse or has none.
pub fn subject_uid(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let oid = x509_parser::der_parser::oid::Oid::from(UID_OID).ok()?;
    cert.subject()
        .iter_by_oid(&oid)
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}
