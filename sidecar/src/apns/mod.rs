//! APNs provider API client (HTTP/2), on reqwest rather than `a2`: `a2` can only reach Apple's
//! two hosts and trusts only built-in roots, so it could neither be tested against a mock nor
//! sent through a gateway.
//!
//! One client per app and environment, each a reqwest `Client` holding one long-lived HTTP/2
//! connection that all of the app's pushes to that environment share as streams. hyper drops a
//! connection that received GOAWAY or failed and dials a new one for the next request, and the
//! retry loop in [`jobs`](crate::jobs) covers the request that was caught in between.

pub(crate) mod token;

use std::{sync::Arc, time::Duration};

use reqwest::{
    Url,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use res_push_proto::{Environment, Provider};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;

use crate::{
    classify::{self, Attempt, Reason, Verdict, describe},
    clock::Clock,
    credential::Owner,
    metrics::Metrics,
    tls::{self, Identity},
};
use token::{ProviderToken, Signer};

/// Apple's production endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development endpoint.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// How an app authenticates to APNs.
pub(crate) enum Auth {
    /// Token-based: a `.p8` key signs a JWT sent with every request.
    Token {
        /// The key, PKCS#8 DER.
        pkcs8: Vec<u8>,
        key_id: String,
        team_id: String,
        /// Age after which the JWT is replaced.
        refresh_after: Duration,
    },
    /// Certificate-based: the TLS client certificate is the credential.
    Certificate(Identity),
}

impl std::fmt::Debug for Auth {
    // By hand, so key material can never end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token {
                key_id,
                team_id,
                refresh_after,
                ..
            } => f
                .debug_struct("Token")
                .field("key_id", key_id)
                .field("team_id", team_id)
                .field("refresh_after", refresh_after)
                .finish_non_exhaustive(),
            Self::Certificate(_) => f.write_str("Certificate"),
        }
    }
}

/// Everything needed to build an [`ApnsClient`], already read and checked.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) auth: Auth,
    pub(crate) production_url: Url,
    pub(crate) sandbox_url: Url,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
}

/// One APNs request, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) device_token: String,
    pub(crate) environment: Environment,
    pub(crate) topic: String,
    pub(crate) push_type: &'static str,
    pub(crate) priority: u8,
    /// `apns-expiration`; `None` leaves APNs' default (store and deliver once).
    pub(crate) expiration: Option<u64>,
    pub(crate) collapse_id: Option<String>,
    pub(crate) payload: Vec<u8>,
}

#[derive(Debug)]
struct Endpoint {
    /// Base URL, parsed once: each push only sets the path (parsing a whole URL per push was a
    /// visible share of the sidecar's CPU time).
    base: Url,
    /// The base URL's path without a trailing slash, which the request path goes under.
    prefix: String,
    http: reqwest::Client,
    label: &'static str,
}

/// The APNs client of one app.
#[derive(Debug)]
pub(crate) struct ApnsClient {
    app: Arc<str>,
    token: Option<ProviderToken>,
    production: Endpoint,
    sandbox: Endpoint,
    metrics: Arc<Metrics>,
}

fn endpoint(url: &Url, tls: rustls::ClientConfig, label: &'static str) -> Result<Endpoint, String> {
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        // APNs speaks HTTP/2 only; this also makes plain-http (h2c) test endpoints work.
        .http2_prior_knowledge()
        // Apple asks providers to keep connections open rather than reconnect per burst;
        // PINGs find a connection that died silently before a call push has to.
        .pool_idle_timeout(None)
        .http2_keep_alive_interval(Duration::from_secs(60))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .http2_keep_alive_while_idle(true)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("res-push-sidecar/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(Endpoint {
        base: url.clone(),
        prefix: url.path().trim_end_matches('/').to_owned(),
        http,
        label,
    })
}

impl ApnsClient {
    /// Builds the client: signs nothing and connects nowhere yet (the first push does).
    pub(crate) fn new(
        app: Arc<str>,
        settings: Settings,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let (token, identity) = match settings.auth {
            Auth::Token {
                pkcs8,
                key_id,
                team_id,
                refresh_after,
            } => {
                let owner = Owner {
                    provider: Provider::Apns,
                    app: Arc::clone(&app),
                    metrics: Arc::clone(&metrics),
                };
                let signer = Signer::new(&pkcs8, &key_id, &team_id, refresh_after, clock)?;
                (Some(signer.into_cache(owner)), None)
            }
            Auth::Certificate(identity) => (None, Some(identity)),
        };
        let tls = tls::client_config(&settings.extra_roots, identity, tls::ALPN_H2)?;
        Ok(Self {
            app,
            token,
            production: endpoint(&settings.production_url, tls.clone(), "production")?,
            sandbox: endpoint(&settings.sandbox_url, tls, "sandbox")?,
            metrics,
        })
    }

    /// APNs refused credential `generation` as expired; see
    /// [`CredentialCache::expire`](crate::credential::CredentialCache::expire).
    pub(crate) fn expire_token(&self, generation: u64) -> bool {
        self.token.as_ref().is_some_and(|t| t.expire(generation))
    }

    /// Sends `req` once, giving up at `deadline`.
    pub(crate) async fn send(&self, req: &Request, deadline: Instant) -> Attempt {
        let endpoint = match req.environment {
            Environment::Production => &self.production,
            Environment::Sandbox => &self.sandbox,
        };
        let mut auth_generation = None;
        let mut url = endpoint.base.clone();
        url.set_path(&format!(
            "{}/3/device/{}",
            endpoint.prefix, req.device_token
        ));
        let mut builder = endpoint
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header("apns-push-type", req.push_type)
            .header("apns-topic", &req.topic)
            .header("apns-priority", req.priority.to_string());
        if let Some(expiration) = req.expiration {
            builder = builder.header("apns-expiration", expiration.to_string());
        }
        if let Some(collapse_id) = &req.collapse_id {
            builder = builder.header("apns-collapse-id", collapse_id);
        }
        if let Some(token) = &self.token {
            let bearer = match token.bearer().await {
                Ok(bearer) => bearer,
                Err(e) => {
                    return Attempt {
                        verdict: Verdict::Config(Reason::new("ProviderTokenSigning", e)),
                        auth_generation,
                    };
                }
            };
            auth_generation = Some(bearer.generation);
            match HeaderValue::from_str(&bearer.header) {
                Ok(value) => builder = builder.header(AUTHORIZATION, value),
                Err(_) => {
                    return Attempt {
                        verdict: Verdict::Config(Reason::code("ProviderTokenSigning")),
                        auth_generation,
                    };
                }
            }
        }
        let verdict = self
            .exchange(endpoint, builder.body(req.payload.clone()), deadline)
            .await;
        Attempt {
            verdict,
            auth_generation,
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Verdict {
        let started = Instant::now();
        let sent = tokio::time::timeout_at(deadline, request.send()).await;
        let response = match sent {
            Err(_) => {
                return Verdict::Retry {
                    reason: Reason::new("Timeout", "no answer from APNs before the deadline"),
                    retry_after: None,
                };
            }
            Ok(Err(e)) => {
                self.metrics
                    .connection_state(Provider::Apns, &self.app, endpoint.label, false);
                return Verdict::Retry {
                    reason: Reason::new(
                        "ConnectionError",
                        format!("connection error: {}", describe(&e)),
                    ),
                    retry_after: None,
                };
            }
            Ok(Ok(response)) => response,
        };
        self.metrics
            .connection_state(Provider::Apns, &self.app, endpoint.label, true);
        let status = response.status().as_u16();
        // Only what is needed, rather than a copy of every header per push.
        let provider_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let retry_after = classify::retry_after(response.headers());
        let body = tokio::time::timeout_at(deadline, response.bytes()).await;
        self.metrics
            .request_took(Provider::Apns, &self.app, started.elapsed());
        if status == 200 {
            return Verdict::Sent { provider_id };
        }
        let body = match body {
            Ok(Ok(body)) => body,
            // The status alone still classifies; the reason text is what is lost.
            _ => Default::default(),
        };
        classify::apns(status, &body, retry_after)
    }
}
