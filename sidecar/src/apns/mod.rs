//! APNs provider API client (HTTP/2), on reqwest rather than `a2`: `a2` can only reach Apple's
//! two hosts and trusts only built-in roots, so it could neither be tested against a mock nor
//! sent through a gateway.
//!
//! One client per app and environment, each an [`Origin`] holding one long-lived HTTP/2
//! connection that all of the app's pushes to that environment share as streams. A connection
//! that received GOAWAY or failed is dropped and a new one dialled for the next request, and the
//! retry loop in [`jobs`](crate::jobs) covers the request that was caught in between.

pub(crate) mod token;

use std::{sync::Arc, time::Duration};

use http::{
    HeaderName, HeaderValue, Method, Request as HttpRequest,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use http_body_util::BodyExt;
use reqwest::Url;
use res_push_proto::{Environment, Provider};
use rustls_pki_types::CertificateDer;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;

use crate::{
    classify::{self, Attempt, Reason, Verdict},
    clock::Clock,
    credential::Owner,
    h2::{self, Origin},
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
    /// Shared, so that a retry does not copy it.
    pub(crate) payload: Bytes,
}

const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

#[derive(Debug)]
struct Endpoint {
    /// The base URL's path without a trailing slash, which the request path goes under.
    prefix: String,
    origin: Origin,
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
    Ok(Endpoint {
        prefix: url.path().trim_end_matches('/').to_owned(),
        origin: Origin::new(url, tls)?,
        label,
    })
}

impl ApnsClient {
    /// Builds the client: signs nothing and connects nowhere yet (see [`prewarm`](Self::prewarm)).
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

    /// Signs the provider token (token-based auth) and opens the connection of each
    /// environment in `environments`, ahead of the first push. Returns what was opened.
    pub(crate) async fn prewarm(&self, environments: &[Environment]) -> Result<String, String> {
        if let Some(token) = &self.token {
            token
                .bearer()
                .await
                .map_err(|e| format!("signing the provider token: {e}"))?;
        }
        let mut opened = Vec::new();
        for &env in environments {
            let endpoint = self.endpoint(env);
            match endpoint.origin.connect().await {
                Ok(_) => {
                    self.metrics
                        .connection_state(Provider::Apns, &self.app, endpoint.label, true);
                    opened.push(endpoint.label);
                }
                Err(e) => {
                    self.metrics
                        .connection_state(Provider::Apns, &self.app, endpoint.label, false);
                    return Err(format!("{} connection: {e}", endpoint.label));
                }
            }
        }
        Ok(format!(
            "{} connection{} open{}",
            opened.join(" and "),
            if opened.len() == 1 { "" } else { "s" },
            if self.token.is_some() {
                ", provider token signed"
            } else {
                ""
            }
        ))
    }

    fn endpoint(&self, environment: Environment) -> &Endpoint {
        match environment {
            Environment::Production => &self.production,
            Environment::Sandbox => &self.sandbox,
        }
    }

    /// Sends `req` once, giving up at `deadline`.
    pub(crate) async fn send(&self, req: &Request, deadline: Instant) -> Attempt {
        let endpoint = self.endpoint(req.environment);
        let mut auth_generation = None;
        let invalid = |what: &str| Attempt {
            verdict: Verdict::Config(Reason::new(
                "InvalidRequest",
                format!("{what} is not valid in an HTTP/2 request"),
            )),
            auth_generation: None,
        };
        let Ok(uri) = endpoint.origin.uri(&format!(
            "{}/3/device/{}",
            endpoint.prefix, req.device_token
        )) else {
            return invalid("the request path");
        };
        let Ok(topic) = HeaderValue::from_str(&req.topic) else {
            return invalid("the topic");
        };
        let mut request = HttpRequest::new(h2::Body::new(req.payload.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, APPLICATION_JSON);
        headers.insert(APNS_PUSH_TYPE, HeaderValue::from_static(req.push_type));
        headers.insert(APNS_TOPIC, topic);
        headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(req.priority)));
        if let Some(expiration) = req.expiration {
            headers.insert(APNS_EXPIRATION, HeaderValue::from(expiration));
        }
        if let Some(collapse_id) = &req.collapse_id {
            let Ok(value) = HeaderValue::from_str(collapse_id) else {
                return invalid("the collapse id");
            };
            headers.insert(APNS_COLLAPSE_ID, value);
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
                Ok(value) => {
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
                Err(_) => {
                    return Attempt {
                        verdict: Verdict::Config(Reason::code("ProviderTokenSigning")),
                        auth_generation,
                    };
                }
            }
        }
        let verdict = self.exchange(endpoint, request, deadline).await;
        Attempt {
            verdict,
            auth_generation,
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        request: HttpRequest<h2::Body>,
        deadline: Instant,
    ) -> Verdict {
        let started = Instant::now();
        let sent = tokio::time::timeout_at(deadline, endpoint.origin.send(request)).await;
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
                    reason: Reason::new("ConnectionError", format!("connection error: {e}")),
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
        let body = tokio::time::timeout_at(deadline, response.into_body().collect()).await;
        self.metrics
            .request_took(Provider::Apns, &self.app, started.elapsed());
        if status == 200 {
            return Verdict::Sent { provider_id };
        }
        let body = match body {
            Ok(Ok(body)) => body.to_bytes(),
            // The status alone still classifies; the reason text is what is lost.
            _ => Default::default(),
        };
        classify::apns(status, &body, retry_after)
    }
}
