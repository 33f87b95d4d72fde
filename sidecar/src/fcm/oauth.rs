//! OAuth2 access tokens for FCM, from a service-account key: the JWT-bearer grant (RFC 7523)
//! Google documents for server-to-server use.
//!
//! The assertion is signed here (RS256 with ring) and exchanged at the key's `token_uri`, as
//! written, over the same reqwest client (and trust roots) as the sends. Caching, refreshing
//! ahead of expiry in a task of its own and single flight are the [`CredentialCache`]'s; this
//! module only fetches.
//!
//! yup-oauth2 was the first choice and was dropped: its cache ages tokens by the system clock
//! and refreshes in the caller's future (so it needed wrapping anyway), and it brings a second
//! HTTP client stack (hyper-util's legacy client with hyper-rustls) next to reqwest. Its
//! assertion is base64url *with* padding, which RFC 7515 does not allow but Google's token
//! endpoint accepts (and so does the project's mock, as it must to stand in for Google); ours
//! is unpadded, as the RFC asks.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use reqwest::header::CONTENT_TYPE;
use res_push_proto::Provider;
use ring::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use serde_json::json;

use crate::{
    classify::describe,
    clock::Clock,
    credential::{CredentialCache, Lost, Mint, Minted, Owner, Policy, Refresh},
};

/// The one scope FCM's send API needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, form-encoded.
const GRANT: &str = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// Lifetime of the signed assertion; Google accepts at most an hour.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);
/// The assertion's `iat` is set this far in the past: Google refuses one issued in its future,
/// and our clock may be a little ahead of Google's (Google's Go client does the same).
const ASSERTION_BACKDATE: Duration = Duration::from_secs(10);
/// Lifetime assumed when the token endpoint does not say (Google's tokens last an hour).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest a token request may take. The refresh runs apart from any push, so it needs a bound
/// of its own; pushes waiting for it still give up at their own deadlines.
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The cached access token of one service account.
pub(crate) type AccessTokens = CredentialCache<Fetcher>;

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

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(text) | Self::Refused(text) => f.write_str(text),
        }
    }
}

impl From<Lost> for TokenError {
    fn from(lost: Lost) -> Self {
        Self::Transient(lost.into())
    }
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

/// Fetches the access tokens of one service account.
#[derive(Debug)]
pub(crate) struct Fetcher {
    key: RsaKeyPair,
    key_id: Option<String>,
    client_email: String,
    token_uri: String,
    http: reqwest::Client,
    clock: Clock,
    rng: SystemRandom,
    /// For the `oauth` endpoint's connection state.
    owner: Owner,
}

impl Fetcher {
    /// Sets up the flow for `key`, fetching through `http`. Fails on a key that cannot sign.
    pub(crate) fn new(
        key: &ServiceAccountKey,
        http: reqwest::Client,
        clock: Clock,
        owner: Owner,
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
            owner,
        })
    }

    /// The cache handing out this account's tokens.
    pub(crate) fn into_cache(self) -> AccessTokens {
        let (clock, owner) = (self.clock.clone(), self.owner.clone());
        let policy = Policy {
            refresh: Refresh::Ahead,
            min_replace_age: Duration::ZERO,
        };
        CredentialCache::new(self, policy, clock, owner)
    }

    fn assertion(&self) -> Result<String, TokenError> {
        let iat = self
            .clock
            .unix_seconds()
            .saturating_sub(ASSERTION_BACKDATE.as_secs());
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

    async fn fetch(&self) -> Result<(String, Duration), TokenError> {
        let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
        // base64url text needs no form escaping.
        let body = format!("{GRANT}&assertion={}", self.assertion()?);
        let request = self
            .http
            .post(&self.token_uri)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send();
        let response = match tokio::time::timeout_at(deadline, request).await {
            Err(_) => {
                return Err(TokenError::Transient(format!(
                    "no answer from the OAuth2 token endpoint within {FETCH_TIMEOUT:?}"
                )));
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

impl Mint for Fetcher {
    type Error = TokenError;

    async fn mint(&self) -> Result<Minted, TokenError> {
        let result = self.fetch().await;
        let (provider, app) = (Provider::Fcm, &self.owner.app);
        match &result {
            Ok(_) => self
                .owner
                .metrics
                .connection_state(provider, app, "oauth", true),
            Err(TokenError::Transient(_)) => {
                self.owner
                    .metrics
                    .connection_state(provider, app, "oauth", false);
            }
            Err(TokenError::Refused(_)) => {}
        }
        let (access, lifetime) = result?;
        Ok(Minted {
            header: Arc::from(format!("Bearer {access}")),
            lifetime,
        })
    }
}
