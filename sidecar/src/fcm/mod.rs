//! FCM HTTP v1 client: `POST {fcm_url}/v1/projects/{project}/messages:send` with an OAuth2
//! bearer token from the app's service account.

pub(crate) mod oauth;

use std::sync::Arc;

use http::{
    HeaderValue, Method, Request, Uri,
    header::{AUTHORIZATION, CONTENT_TYPE},
};
use http_body_util::BodyExt;
use reqwest::Url;
use res_push_proto::Provider;
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::time::Instant;

use crate::{
    classify::{self, Attempt, Reason, Verdict},
    clock::Clock,
    credential::Owner,
    h2::{self, Origin},
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
    send_uri: Uri,
    /// The sends' HTTP/2 connection. The token endpoint is reached through reqwest (rarely,
    /// and at whatever URL and HTTP version the key's `token_uri` needs).
    origin: Origin,
    tokens: AccessTokens,
    metrics: Arc<Metrics>,
}

impl FcmClient {
    /// Builds the client; no token is fetched and nothing connected until the first push or
    /// [`prewarm`](Self::prewarm).
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
        let tokens = Fetcher::new(&settings.key, http, clock, owner)?.into_cache();
        let base = settings.fcm_url.as_str().trim_end_matches('/');
        let send_url = Url::parse(&format!(
            "{base}/v1/projects/{}/messages:send",
            settings.project
        ))
        .map_err(|e| format!("fcm_url {base}: {e}"))?;
        let origin = Origin::new(
            &send_url,
            tls::client_config(&settings.extra_roots, None, tls::ALPN_H2)?,
        )
        .map_err(|e| format!("fcm_url {base}: {e}"))?;
        let send_uri = origin
            .uri(send_url.path())
            .map_err(|e| format!("fcm_url {base}: {e}"))?;
        Ok(Self {
            app,
            send_uri,
            origin,
            tokens,
            metrics,
        })
    }

    /// Fetches the access token and opens the sends' connection, ahead of the first push.
    pub(crate) async fn prewarm(&self) -> Result<String, String> {
        self.tokens
            .bearer()
            .await
            .map_err(|e| format!("access token: {e}"))?;
        match self.origin.connect().await {
            Ok(_) => {
                self.metrics
                    .connection_state(Provider::Fcm, &self.app, "fcm", true);
                Ok("connection open, access token ready".to_owned())
            }
            Err(e) => {
                self.metrics
                    .connection_state(Provider::Fcm, &self.app, "fcm", false);
                Err(format!("connection: {e}"))
            }
        }
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
        let mut request = Request::new(h2::Body::from(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.send_uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Attempt {
            verdict: self.exchange(request, deadline).await,
            auth_generation: Some(bearer.generation),
        }
    }

    async fn exchange(&self, request: Request<h2::Body>, deadline: Instant) -> Verdict {
        let started = Instant::now();
        let response = match tokio::time::timeout_at(deadline, self.origin.send(request)).await {
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
                    reason: Reason::new("ConnectionError", format!("connection error: {e}")),
                    retry_after: None,
                };
            }
            Ok(Ok(response)) => response,
        };
        self.metrics
            .connection_state(Provider::Fcm, &self.app, "fcm", true);
        let status = response.status().as_u16();
        let retry_after = classify::retry_after(response.headers());
        let body = tokio::time::timeout_at(deadline, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.metrics
            .request_took(Provider::Fcm, &self.app, started.elapsed());
        if status == 200 {
            // Only the message name is wanted: no tree of the whole answer per push.
            #[derive(serde::Deserialize)]
            struct Sent<'a> {
                #[serde(borrow)]
                name: Option<std::borrow::Cow<'a, str>>,
            }
            let provider_id = serde_json::from_slice::<Sent>(&body)
                .ok()
                .and_then(|s| s.name)
                .map(std::borrow::Cow::into_owned);
            return Verdict::Sent { provider_id };
        }
        classify::fcm(status, &body, retry_after)
    }
}
