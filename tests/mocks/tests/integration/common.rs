//! Client-side helpers shared by the tests.

use std::time::Duration;

use reqwest::Client;
use serde_json::Value;

/// A client that trusts exactly `ca_pem`, negotiating h2 (or http/1.1) by ALPN.
pub fn client(ca_pem: &str) -> Client {
    builder(ca_pem).build().expect("building the client")
}

/// The client builder, for tests that need extra settings.
pub fn builder(ca_pem: &str) -> reqwest::ClientBuilder {
    // reqwest is built without a bundled crypto provider; the process-wide default is ring,
    // like the sidecar's. Installing twice is harmless (the second call just fails).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
    Client::builder()
        .tls_certs_only([cert])
        .timeout(Duration::from_secs(10))
}

/// Status and JSON body (Null when the body is empty or not JSON).
pub async fn status_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("reading the body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
