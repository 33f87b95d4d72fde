//! The OAuth2 token endpoint of the mock FCM: the JWT-bearer grant (RFC 7523) that Google's
//! service-account flow uses, and the access tokens it issues.
//!
//! Error answers reuse Google's `error`/`error_description` texts where they are well known
//! ("Invalid JWT Signature.", the 60-minute rule), so a client logging them reads as it would
//! in production.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::clock::Clock;
use crate::jwt::{self, DecodedJwt};

/// The scope FCM's HTTP v1 API requires.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// A broader scope Google also accepts for FCM.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The grant type of RFC 7523 §2.1.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Google: an assertion may be valid for at most an hour.
const MAX_ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Clock skew tolerated on `iat`/`exp` (Google asks clients to allow for skew; mock choice
/// of the amount).
const SKEW_SECS: u64 = 300;

/// An access token the endpoint issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub(crate) expires_at: u64,
    pub(crate) scopes: Vec<String>,
}

/// What the FCM API finds when it looks an access token up.
pub(crate) enum TokenCheck {
    Valid(IssuedToken),
    Expired,
    Unknown,
}

/// The service-account identity the endpoint accepts assertions from.
#[derive(Debug)]
pub(crate) struct OAuthServer {
    pub(crate) client_email: String,
    pub(crate) private_key_id: String,
    pub(crate) public_key: Vec<u8>,
    pub(crate) lifetime_secs: Mutex<u64>,
    tokens: Mutex<HashMap<String, IssuedToken>>,
    requests: AtomicUsize,
    issued: AtomicUsize,
}

/// The endpoint's answer.
pub(crate) struct TokenAnswer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    /// OAuth2 `error` code on failure.
    pub(crate) error: Option<String>,
    pub(crate) jwt: Option<DecodedJwt>,
}

fn fail(error: &str, description: &str, jwt: Option<DecodedJwt>) -> TokenAnswer {
    TokenAnswer {
        status: 400,
        body: json!({"error": error, "error_description": description}),
        error: Some(error.to_owned()),
        jwt,
    }
}

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
     reasonable timeframe. Check your iat and exp values in the JWT claim.";

impl OAuthServer {
    pub(crate) fn new(
        client_email: String,
        private_key_id: String,
        public_key: Vec<u8>,
        lifetime_secs: u64,
    ) -> OAuthServer {
        OAuthServer {
            client_email,
            private_key_id,
            public_key,
            lifetime_secs: Mutex::new(lifetime_secs),
            tokens: Mutex::default(),
            requests: AtomicUsize::new(0),
            issued: AtomicUsize::new(0),
        }
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// Counts a request as it arrives, before any scripted delay, so a test can tell that a
    /// client's request is under way.
    pub(crate) fn arrived(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
    }

    /// Handles one `POST token_uri` with a form body.
    pub(crate) fn token_request(&self, body: &[u8], token_uri: &str, clock: &Clock) -> TokenAnswer {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        if grant != JWT_BEARER_GRANT {
            return fail(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant}"),
                None,
            );
        }
        let Some(assertion) = form.get("assertion") else {
            return fail(
                "invalid_request",
                "Missing required parameter: assertion",
                None,
            );
        };
        // Google takes `=`-padded segments too, though RFC 7515 leaves padding out, and clients
        // send them (yup-oauth2 does).
        let Ok(decoded) = jwt::decode_allowing_padding(assertion) else {
            return fail("invalid_grant", "Invalid JWT: could not be parsed.", None);
        };
        let d = Some(decoded.clone());
        if decoded.claim_str("iss") != Some(self.client_email.as_str()) {
            return fail("invalid_grant", "Invalid grant: account not found", d);
        }
        let kid_ok = decoded
            .kid()
            .is_none_or(|k| k == self.private_key_id.as_str());
        if decoded.alg() != Some("RS256") || !kid_ok || !decoded.verify_rs256(&self.public_key) {
            return fail("invalid_grant", "Invalid JWT Signature.", d);
        }
        if decoded.claim_str("aud") != Some(token_uri) {
            return fail(
                "invalid_grant",
                &format!("Invalid JWT: Failed audience check. The right audience is {token_uri}"),
                d,
            );
        }
        let now = clock.unix_secs();
        let (Some(iat), Some(exp)) = (decoded.claim_secs("iat"), decoded.claim_secs("exp")) else {
            return fail("invalid_grant", SHORT_LIVED, d);
        };
        if exp <= iat
            || exp - iat > MAX_ASSERTION_LIFETIME_SECS
            || iat > now + SKEW_SECS
            || exp + SKEW_SECS < now
        {
            return fail("invalid_grant", SHORT_LIVED, d);
        }
        let scopes: Vec<String> = decoded
            .claim_str("scope")
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if scopes.is_empty() {
            return fail("invalid_scope", "Empty or missing scope not allowed.", d);
        }
        let lifetime = *self.lifetime_secs.lock().unwrap_or_else(|e| e.into_inner());
        // Google's access tokens start with "ya29."; clients sometimes log that prefix.
        let access_token = format!("ya29.mock-{}", jwt::random_hex(24));
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                access_token.clone(),
                IssuedToken {
                    expires_at: now + lifetime,
                    scopes,
                },
            );
        self.issued.fetch_add(1, Ordering::SeqCst);
        TokenAnswer {
            status: 200,
            body: json!({
                "access_token": access_token,
                "expires_in": lifetime,
                "token_type": "Bearer",
            }),
            error: None,
            jwt: d,
        }
    }

    /// Looks up a bearer token presented to the FCM API.
    pub(crate) fn check(&self, access_token: &str, clock: &Clock) -> TokenCheck {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(access_token) {
            None => TokenCheck::Unknown,
            Some(t) if clock.unix_secs() >= t.expires_at => TokenCheck::Expired,
            Some(t) => TokenCheck::Valid(t.clone()),
        }
    }

    /// Forgets all issued tokens.
    pub(crate) fn revoke_all(&self) {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
