//! FCM HTTP v1 client: `POST {fcm_url}/v1/projects/{project}/messages:send` with an OAuth2
//! bearer token from the app's service account.

pub(crate) mod oauth;

use std::sync::Arc;

use reqwest::{
    Url,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
};
use res_push_proto::Provider;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    classify::{self, Attempt, Reason, Verdict, describe},
    clock::Clock,
    credential::Owner,
    metrics::Metrics,
    tls,
};
use oauth::{AccessTokens, Fetcher, ServiceAccountKey, TokenError};

/// Google's endpoint.
pub const FCM_URL: &str = "https://fcm.googleapis.com";

/// Everything needed to build an [`FcmClient`], already read and checked.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) key: ServiceAccountKey,
    pub(crate) project: String,
    pub(crate) fcm_url: Url,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
}

/// The FCM client of one app.
#[derive(Debug)]
pub(crate) struct FcmClient {
    app: Arc<str>,
    /// Parsed once, not per push.
    send_url: Url,
    http: reqwest::Client,
    tokens: AccessTokens,
    metrics: Arc<Metrics>,
}

impl FcmClient {
    /// Builds the client; no token is fetched until the first push.
    pub(crate) fn new(
        app: Arc<str>,
        settings: Settings,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let tls = tls::client_config(&settings.extra_roots, None, tls::ALPN_H2_H1)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .pool_idle_timeout(None)
            .http2_keep_alive_interval(std::time::Duration::from_secs(60))
            .http2_keep_alive_timeout(std::time::Duration::from_secs(20))
            .http2_keep_alive_while_idle(true)
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("res-push-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let owner = Owner {
            provider: Provider::Fcm,
            app: Arc::clone(&app),
            metrics: Arc::clone(&metrics),
        };
        let tokens = Fetcher::new(&settings.key, http.clone(), clock, owner)?.into_cache();
        let base = settings.fcm_url.as_str().trim_end_matches('/');
        Ok(Self {
            app,
            send_url: Url::parse(&format!(
                "{base}/v1/projects/{}/messages:send",
                settings.project
            ))
            .map_err(|e| format!("fcm_url {base}: {e}"))?,
            http,
            tokens,
            metrics,
        })
    }

    /// FCM refused credential `generation`; see
    /// [`CredentialCache::expire`](crate::credential::CredentialCache::expire).
    pub(crate) fn expire_token(&self, generation: u64) -> bool {
        self.tokens.expire(generation)
    }

    /// Sends `message` (the v1 `message` object) once, giving up at `deadline`.
    pub(crate) async fn send(&self, message: &Value, deadline: Instant) -> Attempt {
        // A push that gives up here leaves the refresh running for the pushes after it.
        let bearer = match tokio::time::timeout_at(deadline, self.tokens.bearer()).await {
            Err(_) => {
                return Attempt {
                    verdict: Verdict::Retry {
                        reason: Reason::new("Timeout", "no access token before the deadline"),
                        retry_after: None,
                    },
                    auth_generation: None,
                };
            }
            Ok(Err(TokenError::Transient(text))) => {
                return Attempt {
                    verdict: Verdict::Retry {
                        reason: Reason::new("OAuthUnavailable", text),
                        retry_after: None,
                    },
                    auth_generation: None,
                };
            }
            Ok(Err(TokenError::Refused(text))) => {
                return Attempt {
                    verdict: Verdict::Config(Reason::new("OAuthRefused", text)),
                    auth_generation: None,
                };
            }
            Ok(Ok(bearer)) => bearer,
        };
        let Ok(auth) = HeaderValue::from_str(&bearer.header) else {
            return Attempt {
                verdict: Verdict::Config(Reason::new(
                    "OAuthRefused",
                    "access token is not a valid header value",
                )),
                auth_generation: Some(bearer.generation),
            };
        };
        // Serialized straight from the prepared message: `json!` would copy it first.
        #[derive(serde::Serialize)]
        struct SendRequest<'a> {
            message: &'a Value,
        }
        let body = serde_json::to_vec(&SendRequest { message }).unwrap_or_default();
        let request = self
            .http
            .post(self.send_url.clone())
            .header(AUTHORIZATION, auth)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        Attempt {
            verdict: self.exchange(request, deadline).await,
            auth_generation: Some(bearer.generation),
        }
    }

    async fn exchange(&self, request: reqwest::RequestBuilder, deadline: Instant) -> Verdict {
        let started = Instant::now();
        let response = match tokio::time::timeout_at(deadline, request.send()).await {
            Err(_) => {
                return Verdict::Retry {
                    reason: Reason::new("Timeout", "no answer from FCM before the deadline"),
                    retry_after: None,
                };
            }
            Ok(Err(e)) => {
                self.metrics
                    .connection_state(Provider::Fcm, &self.app, "fcm", false);
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
            .connection_state(Provider::Fcm, &self.app, "fcm", true);
        let status = response.status().as_u16();
        let retry_after = classify::retry_after(response.headers());
        let body = tokio::time::timeout_at(deadline, response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        self.metrics
            .request_took(Provider::Fcm, &self.app, started.elapsed());
        if status == 200 {
            let provider_id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("name")?.as_str().map(str::to_owned));
            return Verdict::Sent { provider_id };
        }
        classify::fcm(status, &body, retry_after)
    }
}
