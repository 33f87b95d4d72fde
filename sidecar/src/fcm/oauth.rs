//! OAuth2 access tokens for FCM, from a service-account key: the JWT-bearer grant (RFC 7523)
//! Google documents for server-to-server use.
//!
//! The assertion is signed here (RS256 with ring) and exchanged at the key's `token_uri`, as
//! written, over the same reqwest client (and trust roots) as the sends. The token is cached
//! and replaced ahead of its expiry as judged by the sidecar's [`Clock`], so tests can age it;
//! concurrent pushes that find it stale wait for one fetch rather than each making their own.
//!
//! yup-oauth2 was the first choice and was dropped: its assertion is base64url *with* padding
//! (RFC 7515 forbids it; the project's mock token endpoint, faithful to the RFC, refuses it),
//! its cache ages tokens by the system clock (so it needed wrapping anyway), and it brings a
//! second HTTP client stack (hyper-util's legacy client with hyper-rustls) next to reqwest.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::header::CONTENT_TYPE;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};

use crate::{classify::describe, clock::Clock};

/// The one scope FCM's send API needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const GRANT: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// Lifetime of the signed assertion; Google accepts at most an hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// Replace a token this long before it expires, so a push never carries one that dies in flight.
const REFRESH_AHEAD: Duration = Duration::from_secs(120);
/// Lifetime assumed when the token endpoint does not say (Google's tokens last an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The parts of a Google service-account JSON key the flow uses.
#[derive(Clone, Deserialize)]
pub(crate) struct ServiceAccountKey {
    #[serde(rename = "type")]
    pub(crate) key_type: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) private_key_id: Option<String>,
    pub(crate) private_key: String,
    pub(crate) client_email: String,
    pub(crate) token_uri: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    // By hand, so the private key can never end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Why no access token could be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// The endpoint could not be reached or failed: worth retrying.
    Transient(String),
    /// The endpoint refused us (bad key, revoked account, clock off): an operator must act.
    Refused(String),
}

/// A bearer credential to send, and which token it was.
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    pub(crate) header: Arc<str>,
    pub(crate) generation: u64,
    pub(crate) fresh: bool,
}

#[derive(Debug)]
struct Cached {
    header: Arc<str>,
    /// When to stop using it, by the sidecar's clock.
    stale_at: SystemTime,
    generation: u64,
    /// Fetched because the previous one was refused; if this one is refused too, fetching more
    /// will not help.
    forced: bool,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Cached>,
    generation: u64,
    force_next: bool,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// The access tokens of one service account.
#[derive(Debug)]
pub(crate) struct AccessTokens {
    key: RsaKeyPair,
    key_id: Option<String>,
    client_email: String,
    token_uri: String,
    http: reqwest::Client,
    clock: Clock,
    rng: SystemRandom,
    state: Mutex<State>,
}

impl AccessTokens {
    /// Sets up the flow for `key`, fetching through `http`. Fails on a key that cannot sign.
    pub(crate) fn new(
        key: &ServiceAccountKey,
        http: reqwest::Client,
        clock: Clock,
    ) -> Result<Self, String> {
        if let Some(kind) = key.key_type.as_deref().filter(|t| *t != "service_account") {
            return Err(format!("a {kind:?} key, not a \"service_account\" key"));
        }
        if key.client_email.is_empty() {
            return Err("client_email is empty".to_owned());
        }
        reqwest::Url::parse(&key.token_uri)
            .map_err(|e| format!("token_uri {:?} is not a URL: {e}", key.token_uri))?;
        let der = PrivateKeyDer::from_pem_slice(key.private_key.as_bytes())
            .map_err(|e| format!("private_key is not a PEM private key: {e}"))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = der else {
            return Err("private_key is not a PKCS#8 key as Google issues them".to_owned());
        };
        let rsa = RsaKeyPair::from_pkcs8(pkcs8.secret_pkcs8_der())
            .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
        Ok(Self {
            key: rsa,
            key_id: key.private_key_id.clone().filter(|k| !k.is_empty()),
            client_email: key.client_email.clone(),
            token_uri: key.token_uri.clone(),
            http,
            clock,
            rng: SystemRandom::new(),
            state: Mutex::new(State::default()),
        })
    }

    /// The token to send now: the cached one while fresh, else a newly fetched one.
    pub(crate) async fn bearer(&self, deadline: Instant) -> Result<Bearer, TokenError> {
        // Held across the fetch on purpose: whoever comes meanwhile gets the new token.
        let mut state = self.state.lock().await;
        let now = self.clock.now();
        if let Some(cached) = &state.current {
            if now < cached.stale_at && !state.force_next {
                return Ok(Bearer {
                    header: Arc::clone(&cached.header),
                    generation: cached.generation,
                    fresh: false,
                });
            }
        }
        let (access, lifetime) = self.fetch(now, deadline).await?;
        state.generation += 1;
        let cached = Cached {
            header: format!("Bearer {access}").into(),
            stale_at: now + lifetime.saturating_sub(REFRESH_AHEAD),
            generation: state.generation,
            forced: std::mem::take(&mut state.force_next),
        };
        let bearer = Bearer {
            header: Arc::clone(&cached.header),
            generation: cached.generation,
            fresh: true,
        };
        state.current = Some(cached);
        Ok(bearer)
    }

    /// FCM refused token `generation` as unauthenticated. Returns whether a retry with another
    /// token makes sense (not when that token was itself fetched after such a refusal).
    pub(crate) async fn expire(&self, generation: u64) -> bool {
        let mut state = self.state.lock().await;
        match &state.current {
            Some(cached) if cached.generation == generation => {
                if cached.forced {
                    return false;
                }
                state.current = None;
                state.force_next = true;
                true
            }
            _ => true,
        }
    }

    fn assertion(&self, now: SystemTime) -> Result<String, TokenError> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key_id {
            header["kid"] = kid.as_str().into();
        }
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME.as_secs(),
        });
        let mut jwt = String::new();
        URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut jwt);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PKCS1_SHA256, &self.rng, jwt.as_bytes(), &mut signature)
            .map_err(|_| TokenError::Refused("signing the OAuth2 assertion failed".to_owned()))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    async fn fetch(
        &self,
        now: SystemTime,
        deadline: Instant,
    ) -> Result<(String, Duration), TokenError> {
        // base64url text needs no form escaping.
        let body = format!("{GRANT}&assertion={}", self.assertion(now)?);
        let request = self
            .http
            .post(&self.token_uri)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send();
        let response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => {
                return Err(TokenError::Transient(
                    "no answer from the OAuth2 token endpoint before the deadline".to_owned(),
                ));
            }
            Ok(Err(e)) => {
                return Err(TokenError::Transient(format!(
                    "OAuth2 token endpoint unreachable: {}",
                    describe(&e)
                )));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let body = tokio::time::timeout_at(deadline, response.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        if status.is_success() {
            let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                TokenError::Transient(format!("OAuth2 token endpoint answered garbage: {e}"))
            })?;
            let access = parsed
                .access_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    TokenError::Refused(
                        "OAuth2 token endpoint answered without an access_token".to_owned(),
                    )
                })?;
            let lifetime = parsed
                .expires_in
                .map_or(DEFAULT_LIFETIME, Duration::from_secs);
            return Ok((access, lifetime));
        }
        let detail = match serde_json::from_slice::<TokenErrorResponse>(&body) {
            Ok(TokenErrorResponse {
                error: Some(error),
                error_description,
            }) => match error_description {
                Some(description) => format!("{error}: {description}"),
                None => error,
            },
            _ => String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned(),
        };
        let text = format!(
            "OAuth2 token request refused (HTTP {}): {detail}",
            status.as_u16()
        );
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            Err(TokenError::Transient(text))
        } else {
            Err(TokenError::Refused(text))
        }
    }
}
