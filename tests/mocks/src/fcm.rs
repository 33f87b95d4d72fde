//! Mock FCM: the HTTP v1 `projects.messages.send` method and the OAuth2 token endpoint named
//! by the service-account JSON's `token_uri`, on one TLS listener (h2 and http/1.1, as
//! Google's front ends offer both).
//!
//! Error bodies are `google.rpc.Status` objects as Google returns them: `code`, `message`,
//! `status`, and `details` carrying a `google.firebase.fcm.v1.FcmError` (`errorCode`), a
//! `google.rpc.BadRequest` (field violations) or a `google.rpc.ErrorInfo` (auth failures).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper::Method;
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clock::{Clock, real_unix_millis};
use crate::jwt;
use crate::oauth::{CLOUD_PLATFORM_SCOPE, FCM_SCOPE, OAuthServer, TokenCheck};
use crate::record::{Endpoint, RecordedRequest, Recorder, Service};
use crate::script::{Behavior, Scripts};
use crate::server::{
    ConnState, Handler, IncomingRequest, Resp, authority, header_list, json_response,
    spawn_tls_listener, version_text,
};
use crate::tls::TestCa;

/// The test-only service-account key shipped with the crate (see `fixtures/README.md`).
const FIXTURE_KEY: &str = include_str!("../fixtures/fcm-service-account-TEST-ONLY.pem");
/// Google: data payloads (keys and values) may not exceed 4096 bytes.
const MAX_PAYLOAD: usize = 4096;
/// Google: an Android TTL is at most four weeks.
const MAX_TTL_SECS: u64 = 28 * 24 * 3600;
/// The one queue of token-endpoint behaviours (it has no device tokens to key them by).
const TOKEN_ENDPOINT: &str = "token_uri";

/// Configuration of a [`MockFcm`].
#[derive(Debug, Clone)]
pub struct FcmOptions {
    /// The Firebase project the service account belongs to.
    pub project_id: String,
    /// `expires_in` of issued access tokens (Google: 3599).
    pub access_token_lifetime: Duration,
    /// The service account's `client_email`; `None` derives one from the project id.
    pub client_email: Option<String>,
    /// The service account's RSA key (PKCS#8 PEM); `None` uses the crate's test-only fixture.
    pub private_key_pem: Option<String>,
}

impl Default for FcmOptions {
    fn default() -> Self {
        FcmOptions {
            project_id: "res-push-test".into(),
            access_token_lifetime: Duration::from_secs(3599),
            client_email: None,
            private_key_pem: None,
        }
    }
}

/// The HTTP status Google documents for each FCM `errorCode` (FCM HTTP v1 `ErrorCode`).
pub fn status_for_error_code(error_code: &str) -> u16 {
    match error_code {
        "INVALID_ARGUMENT" => 400,
        "THIRD_PARTY_AUTH_ERROR" => 401,
        "SENDER_ID_MISMATCH" => 403,
        "UNREGISTERED" => 404,
        "QUOTA_EXCEEDED" => 429,
        "UNAVAILABLE" => 503,
        // INTERNAL and UNSPECIFIED_ERROR.
        _ => 500,
    }
}

/// The canonical `google.rpc.Code` name Google's front end reports for an HTTP status.
pub fn rpc_status_for_http(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// The `message` Google sends with each `errorCode`.
fn message_for_error_code(error_code: &str) -> &'static str {
    match error_code {
        "UNREGISTERED" => "Requested entity was not found.",
        "INVALID_ARGUMENT" => "The registration token is not a valid FCM registration token",
        "SENDER_ID_MISMATCH" => "SenderId mismatch",
        "QUOTA_EXCEEDED" => "Quota exceeded for sending messages to this device.",
        "UNAVAILABLE" => "The service is currently unavailable.",
        "THIRD_PARTY_AUTH_ERROR" => "Auth error from APNS or Web Push Service",
        _ => "Internal error encountered.",
    }
}

/// A `google.rpc.Status` error body with an FcmError detail.
pub fn fcm_error_body(status: u16, error_code: &str, message: &str) -> Value {
    json!({"error": {
        "code": status,
        "message": message,
        "status": rpc_status_for_http(status),
        "details": [{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": error_code,
        }],
    }})
}

fn bad_request_body(field: &str, description: &str) -> Value {
    json!({"error": {
        "code": 400,
        "message": description,
        "status": "INVALID_ARGUMENT",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": description}],
        }],
    }})
}

fn error_info_body(status: u16, message: &str, reason: &str, method: &str) -> Value {
    json!({"error": {
        "code": status,
        "message": message,
        "status": rpc_status_for_http(status),
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": "googleapis.com",
            "metadata": {"method": method, "service": "fcm.googleapis.com"},
        }],
    }})
}

const SEND_METHOD: &str = "google.firebase.fcm.v1.FcmService.SendMessage";

/// A rejection: status, body, and the short reason recorded for tests.
struct Reject {
    status: u16,
    body: Value,
    reason: String,
}

impl Reject {
    fn fcm(error_code: &str, message: &str) -> Reject {
        let status = status_for_error_code(error_code);
        Reject {
            status,
            body: fcm_error_body(status, error_code, message),
            reason: error_code.to_owned(),
        }
    }

    fn field(field: &str, description: &str) -> Reject {
        Reject {
            status: 400,
            body: bad_request_body(field, description),
            reason: "INVALID_ARGUMENT".into(),
        }
    }
}

/// A JSON object's entries in document order; Google reports data violations by index
/// (`message.data[0].value`), and the shared `serde_json` is built without `preserve_order`.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, Value>()? {
                    v.push(e);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct OrderProbe {
    message: Option<MessageProbe>,
}

#[derive(Deserialize)]
struct MessageProbe {
    data: Option<Ordered>,
    android: Option<AndroidProbe>,
    apns: Option<ApnsProbe>,
}

#[derive(Deserialize)]
struct AndroidProbe {
    data: Option<Ordered>,
}

#[derive(Deserialize)]
struct ApnsProbe {
    headers: Option<Ordered>,
}

struct FcmState {
    project_id: String,
    oauth: OAuthServer,
    private_key_pem: String,
    clock: Clock,
    scripts: Scripts,
    /// Behaviours of the token endpoint, under [`TOKEN_ENDPOINT`].
    token_scripts: Scripts,
    recorder: Recorder,
    token_owners: Mutex<HashMap<String, String>>,
    connections: Arc<AtomicU64>,
    base_url: Mutex<String>,
}

/// A running mock FCM (send API and token endpoint). Stops serving when dropped.
pub struct MockFcm {
    state: Arc<FcmState>,
    ca: TestCa,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl fmt::Debug for MockFcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockFcm")
            .field("addr", &self.addr)
            .field("project_id", &self.state.project_id)
            .finish_non_exhaustive()
    }
}

impl Drop for MockFcm {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl MockFcm {
    /// Starts the listener with a new [`TestCa`].
    pub async fn start(opts: FcmOptions) -> anyhow::Result<MockFcm> {
        Self::start_with_ca(opts, &TestCa::new()?).await
    }

    /// Starts the listener presenting a certificate from `ca`.
    pub async fn start_with_ca(opts: FcmOptions, ca: &TestCa) -> anyhow::Result<MockFcm> {
        Self::start_with_clock(opts, ca, Clock::new()).await
    }

    /// Like [`MockFcm::start_with_ca`] with a caller-provided (possibly shared) clock.
    pub async fn start_with_clock(
        opts: FcmOptions,
        ca: &TestCa,
        clock: Clock,
    ) -> anyhow::Result<MockFcm> {
        let private_key_pem = match opts.private_key_pem {
            Some(k) => k,
            // Explanatory text may precede a PEM block; Google's JSON carries the block only.
            None => FIXTURE_KEY[FIXTURE_KEY.find("-----BEGIN").unwrap_or(0)..].to_owned(),
        };
        let public_key =
            jwt::rsa_public_key(&private_key_pem).context("FCM service-account key")?;
        let client_email = opts.client_email.unwrap_or_else(|| {
            format!(
                "firebase-adminsdk-mock@{}.iam.gserviceaccount.com",
                opts.project_id
            )
        });
        let state = Arc::new(FcmState {
            project_id: opts.project_id,
            oauth: OAuthServer::new(
                client_email,
                jwt::random_hex(20),
                public_key,
                opts.access_token_lifetime.as_secs(),
            ),
            private_key_pem,
            clock,
            scripts: Scripts::default(),
            token_scripts: Scripts::default(),
            recorder: Recorder::default(),
            token_owners: Mutex::default(),
            connections: Arc::new(AtomicU64::new(0)),
            base_url: Mutex::default(),
        });
        let tls = ca.server_config(&[b"h2", b"http/1.1"])?;
        let (shutdown, rx) = watch::channel(false);
        let addr = spawn_tls_listener(
            tls,
            false,
            None,
            state.clone(),
            state.connections.clone(),
            rx,
        )
        .await?;
        *state.base_url.lock().unwrap_or_else(|e| e.into_inner()) = format!("https://{addr}");
        Ok(MockFcm {
            state,
            ca: ca.clone(),
            addr,
            shutdown,
        })
    }

    /// Base URL, `https://127.0.0.1:PORT`; the send URL is
    /// `{url}/v1/projects/{project_id}/messages:send`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The full send URL for this mock's project.
    pub fn send_url(&self) -> String {
        format!(
            "{}/v1/projects/{}/messages:send",
            self.url(),
            self.state.project_id
        )
    }

    /// The OAuth2 token endpoint (`token_uri` in the service-account JSON).
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url())
    }

    /// The project id.
    pub fn project_id(&self) -> &str {
        &self.state.project_id
    }

    /// The service account's `client_email`.
    pub fn client_email(&self) -> &str {
        &self.state.oauth.client_email
    }

    /// The CA certificate (PEM) that issued the listener's certificate.
    pub fn ca_pem(&self) -> String {
        self.ca.ca_pem()
    }

    /// The CA.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The service-account JSON in Google's format, `token_uri` pointing at this mock.
    pub fn service_account_json(&self) -> Value {
        let base = self.url();
        let email = &self.state.oauth.client_email;
        json!({
            "type": "service_account",
            "project_id": self.state.project_id,
            "private_key_id": self.state.oauth.private_key_id,
            "private_key": self.state.private_key_pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": format!("{base}/o/oauth2/auth"),
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": format!("{base}/oauth2/v1/certs"),
            "client_x509_cert_url": format!("{base}/robot/v1/metadata/x509/{}", email.replace('@', "%40")),
            "universe_domain": "googleapis.com",
        })
    }

    /// Writes `fcm-service-account.json` into `dir` and returns its path.
    ///
    /// # Panics
    /// When the file cannot be written; use [`MockFcm::try_write_service_account`] to handle
    /// the error instead.
    pub fn write_service_account(&self, dir: &Path) -> PathBuf {
        self.try_write_service_account(dir)
            .unwrap_or_else(|e| panic!("writing the service account into {}: {e:#}", dir.display()))
    }

    /// Writes `fcm-service-account.json` into `dir` and returns its path.
    pub fn try_write_service_account(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join("fcm-service-account.json");
        let text = serde_json::to_string_pretty(&self.service_account_json())?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// A valid RS256 assertion for this mock's service account, issued at the mock's "now".
    pub fn assertion(&self) -> String {
        jwt::google_assertion(&self.service_account_json(), self.state.clock.unix_secs())
            .unwrap_or_else(|e| panic!("signing with the mock's own key failed: {e:#}"))
    }

    /// Requests made to the token endpoint so far (successful or not).
    pub fn token_requests(&self) -> usize {
        self.state.oauth.requests()
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> usize {
        self.state.oauth.issued()
    }

    /// Changes `expires_in` (and the real expiry) of tokens issued from now on.
    pub fn set_access_token_lifetime(&self, lifetime: Duration) {
        *self
            .state
            .oauth
            .lifetime_secs
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = lifetime.as_secs();
    }

    /// Invalidates every issued access token (next send: 401 UNAUTHENTICATED).
    pub fn revoke_access_tokens(&self) {
        self.state.oauth.revoke_all();
    }

    /// Declares that `token` was registered by another sender (project): sends to it from
    /// this project answer 403 `SENDER_ID_MISMATCH`.
    pub fn set_token_owner(&self, token: &str, project_id: &str) {
        self.state
            .token_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_owned(), project_id.to_owned());
    }

    /// Queues behaviours for sends to `token`, consumed in order; afterwards: success.
    pub fn script(&self, token: &str, behaviours: Vec<Behavior>) {
        self.state.scripts.push(token, behaviours);
    }

    /// Queues behaviours for requests to the token endpoint, consumed in order; afterwards the
    /// endpoint answers normally. `Delay` holds the answer ([`token_requests`](Self::token_requests)
    /// counts the request on arrival, the token is issued when the answer goes); `Error` answers an OAuth2
    /// error with `reason` as the `error` code; `Unregistered` is Google's answer for a deleted
    /// service account; `Disconnect` drops the connection; `GoAway` answers, then closes.
    pub fn script_token_endpoint(&self, behaviours: Vec<Behavior>) {
        self.state.token_scripts.push(TOKEN_ENDPOINT, behaviours);
    }

    /// Forgets all queued scripts (the token endpoint's too).
    pub fn clear_scripts(&self) {
        self.state.scripts.clear();
        self.state.token_scripts.clear();
    }

    /// Every request answered so far (token endpoint included), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.all()
    }

    /// Forgets recorded requests (counters and scripts stay).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// Stops (`false`) or resumes keeping a record of every request. Answers do not change;
    /// benchmarks turn recording off so the mock's cost per request stays flat. On by default.
    pub fn set_recording(&self, on: bool) {
        self.state.recorder.set_enabled(on);
    }

    /// The first request, already recorded or arriving within `timeout`, matching `pred`.
    pub async fn wait_for_request(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        self.state.recorder.wait_for(pred, timeout).await
    }

    /// TLS connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Moves the mock's "now" forward (access-token expiry, assertion time frame).
    pub fn advance_clock(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    /// The mock's clock (clones share the offset).
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    /// The mock's "now".
    pub fn now(&self) -> SystemTime {
        self.state.clock.now()
    }
}

fn string_map_violation(entries: &[(String, Value)], field: &str) -> Option<Reject> {
    entries.iter().enumerate().find_map(|(i, (_, v))| {
        (!v.is_string()).then(|| {
            Reject::field(
                &format!("{field}[{i}].value"),
                &format!("Invalid value at '{field}[{i}].value' (TYPE_STRING), {v}"),
            )
        })
    })
}

fn unknown_field(
    obj: &serde_json::Map<String, Value>,
    allowed: &[&str],
    at: &str,
) -> Option<Reject> {
    obj.keys().find(|k| !allowed.contains(&k.as_str())).map(|k| {
        let where_ = if at.is_empty() {
            String::new()
        } else {
            format!(" at '{at}'")
        };
        Reject::field(
            at,
            &format!("Invalid JSON payload received. Unknown name \"{k}\"{where_}: Cannot find field."),
        )
    })
}

/// `google.protobuf.Duration` in JSON: seconds with up to nine fractional digits and an `s`.
fn parse_duration_secs(s: &str) -> Option<u64> {
    let num = s.strip_suffix('s')?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    int.parse().ok()
}

fn is_reserved_data_key(k: &str) -> bool {
    // Google: keys FCM uses internally ("from", "gcm", anything prefixed "google").
    matches!(k, "from" | "gcm" | "message_type") || k.starts_with("google")
}

const MESSAGE_FIELDS: &[&str] = &[
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
    "token",
    "topic",
    "condition",
];

/// Fields of `AndroidConfig` (FCM HTTP v1).
const ANDROID_FIELDS: &[&str] = &[
    "collapse_key",
    "priority",
    "ttl",
    "restricted_package_name",
    "data",
    "notification",
    "fcm_options",
    "direct_boot_ok",
];

impl FcmState {
    fn authorize(&self, req: &IncomingRequest) -> Result<(), Reject> {
        let auth = req
            .parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = auth.and_then(|a| {
            a.split_once(' ')
                .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        });
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Reject {
                status: 401,
                body: error_info_body(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 \
                     access token, login cookie or other valid authentication credential. See \
                     https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    "CREDENTIALS_MISSING",
                    SEND_METHOD,
                ),
                reason: "UNAUTHENTICATED".into(),
            });
        };
        let invalid = |reason: Option<&str>| {
            let message = "Request had invalid authentication credentials. Expected OAuth 2 \
                           access token, login cookie or other valid authentication credential. \
                           See https://developers.google.com/identity/sign-in/web/devconsole-project.";
            Reject {
                status: 401,
                body: match reason {
                    Some(r) => error_info_body(401, message, r, SEND_METHOD),
                    None => {
                        json!({"error": {"code": 401, "message": message, "status": "UNAUTHENTICATED"}})
                    }
                },
                reason: "UNAUTHENTICATED".into(),
            }
        };
        match self.oauth.check(token, &self.clock) {
            TokenCheck::Unknown => Err(invalid(None)),
            TokenCheck::Expired => Err(invalid(Some("ACCESS_TOKEN_EXPIRED"))),
            TokenCheck::Valid(t) => {
                if t.scopes
                    .iter()
                    .any(|s| s == FCM_SCOPE || s == CLOUD_PLATFORM_SCOPE)
                {
                    Ok(())
                } else {
                    Err(Reject {
                        status: 403,
                        body: error_info_body(
                            403,
                            "Request had insufficient authentication scopes.",
                            "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                            SEND_METHOD,
                        ),
                        reason: "PERMISSION_DENIED".into(),
                    })
                }
            }
        }
    }

    /// Validates a send request; returns the target token and whether it is a dry run.
    fn validate_send(
        &self,
        project: &str,
        req: &IncomingRequest,
        rec: &mut RecordedRequest,
    ) -> Result<(String, bool), Reject> {
        self.authorize(req)?;
        if project != self.project_id {
            // The service account has no role on another project (or it does not exist).
            return Err(Reject {
                status: 403,
                body: json!({"error": {
                    "code": 403,
                    "message": format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."),
                    "status": "PERMISSION_DENIED",
                    "details": [{
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "IAM_PERMISSION_DENIED",
                        "domain": "cloudresourcemanager.googleapis.com",
                        "metadata": {"permission": "cloudmessaging.messages.create",
                                     "resource": format!("projects/{project}")},
                    }],
                }}),
                reason: "PERMISSION_DENIED".into(),
            });
        }
        let Some(Value::Object(top)) = rec.json.clone() else {
            return Err(Reject::field(
                "",
                "Invalid JSON payload received. Expected an object at the top level.",
            ));
        };
        if let Some(r) = unknown_field(&top, &["message", "validate_only", "validateOnly"], "") {
            return Err(r);
        }
        let validate_only = top
            .get("validate_only")
            .or_else(|| top.get("validateOnly"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let Some(Value::Object(msg)) = top.get("message") else {
            return Err(Reject::fcm(
                "INVALID_ARGUMENT",
                "Request contains an invalid argument.",
            ));
        };
        if let Some(r) = unknown_field(msg, MESSAGE_FIELDS, "message") {
            return Err(r);
        }
        // The ordered view is only for reporting violations by index; shape errors were
        // caught above, so a failure here just means there is nothing to index.
        let probe = serde_json::from_slice::<OrderProbe>(&rec.body)
            .ok()
            .and_then(|p| p.message);
        let data = probe.as_ref().and_then(|m| m.data.as_ref());
        let android_data = probe
            .as_ref()
            .and_then(|m| m.android.as_ref())
            .and_then(|a| a.data.as_ref());
        for (entries, field) in [
            (data, "message.data"),
            (android_data, "message.android.data"),
            (
                probe
                    .as_ref()
                    .and_then(|m| m.apns.as_ref())
                    .and_then(|a| a.headers.as_ref()),
                "message.apns.headers",
            ),
        ] {
            if let Some(r) = entries.and_then(|e| string_map_violation(&e.0, field)) {
                return Err(r);
            }
        }
        for (k, _) in data.iter().flat_map(|d| d.0.iter()) {
            if is_reserved_data_key(k) {
                return Err(Reject::fcm(
                    "INVALID_ARGUMENT",
                    &format!("Invalid data payload key: {k}"),
                ));
            }
        }
        if let Some(android) = msg.get("android") {
            let Some(android) = android.as_object() else {
                return Err(Reject::field(
                    "message.android",
                    "Invalid value at 'message.android' (type.googleapis.com/google.firebase.fcm.v1.AndroidConfig)",
                ));
            };
            if let Some(reject) = unknown_field(android, ANDROID_FIELDS, "message.android") {
                return Err(reject);
            }
            if let Some(key) = android.get("collapse_key") {
                if !key.is_string() {
                    return Err(Reject::field(
                        "message.android.collapse_key",
                        &format!(
                            "Invalid value at 'message.android.collapse_key' (TYPE_STRING), {key}"
                        ),
                    ));
                }
            }
            if let Some(p) = android.get("priority") {
                let ok = match p {
                    Value::String(s) => {
                        s.eq_ignore_ascii_case("high") || s.eq_ignore_ascii_case("normal")
                    }
                    Value::Number(n) => matches!(n.as_u64(), Some(0 | 1)),
                    _ => false,
                };
                if !ok {
                    return Err(Reject::field(
                        "message.android.priority",
                        &format!(
                            "Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), {p}"
                        ),
                    ));
                }
            }
            if let Some(ttl) = android.get("ttl") {
                match ttl.as_str().and_then(parse_duration_secs) {
                    None => {
                        return Err(Reject::field(
                            "message.android.ttl",
                            &format!(
                                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration), {ttl}"
                            ),
                        ));
                    }
                    Some(secs) if secs > MAX_TTL_SECS => {
                        return Err(Reject::fcm(
                            "INVALID_ARGUMENT",
                            "Invalid TTL: it must be at most 2419200s (4 weeks).",
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        let targets: Vec<&str> = ["token", "topic", "condition"]
            .into_iter()
            .filter(|k| msg.contains_key(*k))
            .collect();
        if targets.len() != 1 {
            return Err(Reject::fcm(
                "INVALID_ARGUMENT",
                "Exactly one of message.token, message.topic or message.condition must be set.",
            ));
        }
        let token = match msg.get("token") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => {
                return Err(Reject::field(
                    "message.token",
                    &format!("Invalid value at 'message.token' (TYPE_STRING), {other}"),
                ));
            }
            // Topic and condition sends have no device token to script on.
            None => String::new(),
        };
        if msg.contains_key("token") {
            rec.device_token = Some(token.clone());
            let well_formed = !token.is_empty()
                && token.len() <= 4096
                && token
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b':'));
            if !well_formed {
                return Err(Reject::fcm(
                    "INVALID_ARGUMENT",
                    message_for_error_code("INVALID_ARGUMENT"),
                ));
            }
        }
        let mut size = 0usize;
        for (k, v) in data
            .iter()
            .chain(android_data.iter())
            .flat_map(|d| d.0.iter())
        {
            size += k.len() + v.as_str().map_or(0, str::len);
        }
        if let Some(Value::Object(n)) = msg.get("notification") {
            size += n
                .values()
                .filter_map(Value::as_str)
                .map(str::len)
                .sum::<usize>();
        }
        if size > MAX_PAYLOAD {
            return Err(Reject::fcm(
                "INVALID_ARGUMENT",
                "Android message is too big",
            ));
        }
        if let Some(owner) = self
            .token_owners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
        {
            if owner != &self.project_id {
                return Err(Reject::fcm(
                    "SENDER_ID_MISMATCH",
                    message_for_error_code("SENDER_ID_MISMATCH"),
                ));
            }
        }
        Ok((token, validate_only))
    }

    fn message_name(&self) -> String {
        format!(
            "projects/{}/messages/0:{}%{}",
            self.project_id,
            real_unix_millis() * 1000,
            jwt::random_hex(8)
        )
    }
}

impl Handler for FcmState {
    async fn handle(self: Arc<Self>, req: IncomingRequest, conn: Arc<ConnState>) -> Resp {
        let path = req.parts.uri.path().to_owned();
        let send_project = path
            .strip_prefix("/v1/projects/")
            .and_then(|r| r.strip_suffix("/messages:send"))
            .filter(|p| !p.is_empty() && !p.contains('/'))
            .map(str::to_owned);
        let endpoint = if path == "/token" {
            Endpoint::OAuthToken
        } else if send_project.is_some() {
            Endpoint::FcmSend
        } else {
            Endpoint::Other
        };
        let mut rec = RecordedRequest {
            seq: 0,
            service: Service::Fcm,
            environment: None,
            endpoint,
            connection_id: conn.id,
            http_version: version_text(&req.parts),
            method: req.parts.method.to_string(),
            path: req
                .parts
                .uri
                .path_and_query()
                .map_or(path.clone(), |p| p.to_string()),
            authority: authority(&req.parts),
            headers: header_list(&req.parts),
            body: req.body.to_vec(),
            body_text: String::from_utf8_lossy(&req.body).into_owned(),
            json: serde_json::from_slice(&req.body).ok(),
            device_token: None,
            jwt: None,
            client_cert_uid: None,
            status: 0,
            reason: None,
            response_body: String::new(),
            response_headers: Vec::new(),
            scripted: None,
            received_at_ms: self.clock.unix_millis(),
            real_received_at_ms: real_unix_millis(),
        };
        let post = req.parts.method == Method::POST;

        let (status, body, headers) = match (endpoint, post) {
            (Endpoint::OAuthToken, true) => {
                self.oauth.arrived();
                let (mut behavior, scripted) = self.token_scripts.next(TOKEN_ENDPOINT);
                if scripted {
                    rec.scripted = Some(behavior.clone());
                }
                while let Behavior::Delay { ms, then } = behavior {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    behavior = *then;
                }
                match behavior {
                    Behavior::Error {
                        status,
                        reason,
                        retry_after,
                    } => {
                        let headers = retry_after
                            .map(|s| vec![("retry-after".to_owned(), s.to_string())])
                            .unwrap_or_default();
                        let body =
                            json!({"error": reason, "error_description": "scripted failure"});
                        rec.reason = Some(reason);
                        (status, body.to_string(), headers)
                    }
                    Behavior::Unregistered => {
                        let body = json!({"error": "invalid_grant", "error_description": "Invalid grant: account not found"});
                        rec.reason = Some("invalid_grant".into());
                        (400, body.to_string(), vec![])
                    }
                    Behavior::Disconnect => {
                        rec.reason = Some("disconnect".into());
                        self.recorder.push(rec);
                        conn.disconnect().await;
                        return json_response(500, "", &[]);
                    }
                    // Success and GoAway (Delay cannot be left after the loop).
                    other => {
                        let base = self
                            .base_url
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .clone();
                        let a = self.oauth.token_request(
                            &req.body,
                            &format!("{base}/token"),
                            &self.clock,
                        );
                        if other == Behavior::GoAway {
                            conn.go_away().await;
                        }
                        rec.jwt = a.jwt;
                        rec.reason = a.error;
                        (a.status, a.body.to_string(), vec![])
                    }
                }
            }
            (Endpoint::FcmSend, true) => {
                let project = send_project.unwrap_or_default();
                match self.validate_send(&project, &req, &mut rec) {
                    Err(r) => {
                        rec.reason = Some(r.reason);
                        (r.status, r.body.to_string(), vec![])
                    }
                    Ok((_, true)) => (
                        200,
                        json!({"name": format!("projects/{}/messages/fake_message_id", self.project_id)})
                            .to_string(),
                        vec![],
                    ),
                    Ok((token, false)) => {
                        let (mut behavior, scripted) = self.scripts.next(&token);
                        if scripted {
                            rec.scripted = Some(behavior.clone());
                        }
                        loop {
                            match behavior {
                                Behavior::Success => {
                                    break (200, json!({"name": self.message_name()}).to_string(), vec![]);
                                }
                                Behavior::GoAway => {
                                    conn.go_away().await;
                                    break (200, json!({"name": self.message_name()}).to_string(), vec![]);
                                }
                                Behavior::Unregistered => {
                                    rec.reason = Some("UNREGISTERED".into());
                                    break (
                                        404,
                                        fcm_error_body(404, "UNREGISTERED", message_for_error_code("UNREGISTERED")).to_string(),
                                        vec![],
                                    );
                                }
                                Behavior::Error { status, reason, retry_after } => {
                                    let headers = retry_after
                                        .map(|s| vec![("retry-after".to_owned(), s.to_string())])
                                        .unwrap_or_default();
                                    let body = fcm_error_body(status, &reason, message_for_error_code(&reason));
                                    rec.reason = Some(reason);
                                    break (status, body.to_string(), headers);
                                }
                                Behavior::Delay { ms, then } => {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                    behavior = *then;
                                }
                                Behavior::Disconnect => {
                                    rec.reason = Some("disconnect".into());
                                    self.recorder.push(rec);
                                    conn.disconnect().await;
                                    return json_response(500, "", &[]);
                                }
                            }
                        }
                    }
                }
            }
            (Endpoint::OAuthToken | Endpoint::FcmSend, false) => {
                rec.reason = Some("METHOD_NOT_ALLOWED".into());
                (
                    405,
                    json!({"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}}).to_string(),
                    vec![],
                )
            }
            _ => {
                rec.reason = Some("NOT_FOUND".into());
                (
                    404,
                    json!({"error": {"code": 404, "message": format!("The requested URL {path} was not found on this server."), "status": "NOT_FOUND"}}).to_string(),
                    vec![],
                )
            }
        };
        rec.status = status;
        rec.response_body = body.clone();
        rec.response_headers = headers.clone();
        self.recorder.push(rec);
        json_response(status, &body, &headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_statuses() {
        for (code, status) in [
            ("UNREGISTERED", 404),
            ("INVALID_ARGUMENT", 400),
            ("QUOTA_EXCEEDED", 429),
            ("UNAVAILABLE", 503),
            ("INTERNAL", 500),
            ("SENDER_ID_MISMATCH", 403),
            ("THIRD_PARTY_AUTH_ERROR", 401),
        ] {
            assert_eq!(status_for_error_code(code), status, "{code}");
        }
        assert_eq!(rpc_status_for_http(429), "RESOURCE_EXHAUSTED");
        assert_eq!(rpc_status_for_http(404), "NOT_FOUND");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30s"), Some(30));
        assert_eq!(parse_duration_secs("3.5s"), Some(3));
        assert_eq!(parse_duration_secs("30"), None);
        assert_eq!(parse_duration_secs("s"), None);
        assert_eq!(parse_duration_secs("-1s"), None);
    }
}
