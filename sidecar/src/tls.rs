//! TLS client configuration shared by the APNs, FCM and OAuth2 clients.
//!
//! Every client gets a rustls config built here, on the ring provider, trusting the operating
//! system's roots plus an app's `ca_file` (so a private gateway or a test server can be used
//! without touching the system store), optionally with a client certificate (certificate-based
//! APNs). Files are read by the caller, so that what was validated is what is used.

use std::sync::Arc;

use rustls::{ClientConfig, crypto::CryptoProvider};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer,
    pem::{self, PemObject},
};

/// ALPN for APNs: HTTP/2 only, as Apple requires.
pub(crate) const ALPN_H2: &[&[u8]] = &[b"h2"];
/// ALPN for Google endpoints: HTTP/2 preferred, HTTP/1.1 accepted.
pub(crate) const ALPN_H2_H1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A client certificate chain and its private key.
pub(crate) struct Identity {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    // By hand, so the key can never end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client config trusting the system roots plus `extra_roots`, presenting `identity`
/// when given, and offering `alpn`.
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
    identity: Option<Identity>,
    alpn: &[&[u8]],
) -> Result<ClientConfig, String> {
    let provider = provider();
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots.iter().cloned(),
        Arc::clone(&provider),
    )
    .map_err(|e| format!("cannot set up certificate verification: {e}"))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        // Not dangerous: this is the platform verifier, which does full WebPKI validation.
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| format!("unusable client certificate or key: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::NoItemsFound => "no PEM block of the expected kind found".to_owned(),
        other => format!("not valid PEM: {other}"),
    }
}

/// Every certificate in a PEM file's contents; at least one is required.
pub(crate) fn certificates_from_pem(data: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_problem)?;
    if certs.is_empty() {
        return Err("contains no PEM certificate".to_owned());
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file's contents.
pub(crate) fn private_key_from_pem(data: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(data).map_err(|e| match e {
        pem::Error::NoItemsFound => "contains no PEM private key".to_owned(),
        other => pem_problem(other),
    })
}

/// A certificate chain and key from a PKCS#12 (`.p12`/`.pfx`) file's contents.
pub(crate) fn identity_from_pkcs12(data: &[u8], password: &str) -> Result<Identity, String> {
    let store = p12_keystore::KeyStore::from_pkcs12(
        data,
        password,
        p12_keystore::Pkcs12ImportPolicy::Strict,
    )
    .map_err(|e| format!("cannot open PKCS#12 (wrong cert_password?): {e}"))?;
    let (_alias, chain) = store
        .private_key_chain()
        .ok_or_else(|| "PKCS#12 holds no private key with its certificate".to_owned())?;
    if chain.certs().is_empty() {
        return Err("PKCS#12 private key comes without a certificate".to_owned());
    }
    Ok(Identity {
        certs: chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec())),
    })
}

/// Whether a file's contents look like PEM rather than DER (PKCS#12 is DER).
pub(crate) fn looks_like_pem(data: &[u8]) -> bool {
    data.windows(11).any(|w| w == b"-----BEGIN ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_or_garbage_pem_is_explained() {
        assert!(certificates_from_pem(b"").unwrap_err().contains("no PEM"));
        assert!(
            private_key_from_pem(b"hello")
                .unwrap_err()
                .contains("no PEM private key")
        );
        assert!(!looks_like_pem(b"\x30\x82\x01"));
        assert!(looks_like_pem(b"junk\n-----BEGIN CERTIFICATE-----\n"));
    }

    #[test]
    fn garbage_pkcs12_is_refused() {
        let err = identity_from_pkcs12(b"\x30\x03\x02\x01\x03", "pw").unwrap_err();
        assert!(err.contains("PKCS#12"), "{err}");
    }

    #[test]
    fn config_offers_the_alpn_asked() {
        let config = client_config(&[], None, ALPN_H2).expect("system roots");
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
    }
}
