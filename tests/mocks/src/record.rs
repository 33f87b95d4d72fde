//! The record of every request a mock answered, for tests to assert on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::jwt::DecodedJwt;

/// Which mock answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The mock APNs.
    Apns,
    /// The mock FCM (token endpoint included).
    Fcm,
}

/// The APNs environment, i.e. which of the two listeners was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// `api.sandbox.push.apple.com`'s stand-in.
    Sandbox,
    /// `api.push.apple.com`'s stand-in.
    Production,
}

/// Which endpoint a request was routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// APNs `POST /3/device/<token>`.
    ApnsPush,
    /// FCM `POST /v1/projects/<p>/messages:send`.
    FcmSend,
    /// The OAuth2 token endpoint (`token_uri`).
    OAuthToken,
    /// Anything else (answered 404/405).
    Other,
}

/// One request as the mock saw it and answered it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    /// Sequence number within its mock, from 1.
    pub seq: u64,
    /// Which mock.
    pub service: Service,
    /// APNs only: the environment (listener) the request arrived on.
    pub environment: Option<Environment>,
    /// Routing result.
    pub endpoint: Endpoint,
    /// Identifies the TLS connection within its mock (GOAWAY tests compare these).
    pub connection_id: u64,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub http_version: String,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// `:authority` / `Host`.
    pub authority: Option<String>,
    /// Every header, names lowercase, in arrival order (repeats kept).
    pub headers: Vec<(String, String)>,
    /// The raw body.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// The body as text (lossy UTF-8), for the admin API and failure messages.
    pub body_text: String,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// The device token (APNs path segment, FCM `message.token`).
    pub device_token: Option<String>,
    /// The decoded JWT: the APNs provider token, or the OAuth2 assertion at the token endpoint.
    pub jwt: Option<DecodedJwt>,
    /// APNs only: the subject `UID` (bundle id) of the verified TLS client certificate the
    /// connection presented (certificate-based authentication), `None` without one.
    pub client_cert_uid: Option<String>,
    /// The answer's status code.
    pub status: u16,
    /// APNs `reason`, FCM `errorCode` (or `google.rpc` status), OAuth2 `error`; `None` on success.
    pub reason: Option<String>,
    /// The answer's body.
    pub response_body: String,
    /// The answer's headers that matter to clients (`apns-id`, `retry-after`, ...).
    pub response_headers: Vec<(String, String)>,
    /// The scripted behaviour used, when the answer came from a script.
    pub scripted: Option<crate::script::Behavior>,
    /// Mock-clock time of arrival, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// Real time of arrival, ms since the Unix epoch.
    pub real_received_at_ms: u64,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of response header `name` (case-insensitive).
    pub fn response_header(&self, name: &str) -> Option<&str> {
        self.response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Append-only log with a change signal for waiters.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Off for benchmarks: requests are still answered the same way, just not kept.
    enabled: AtomicBool,
    entries: Mutex<Vec<RecordedRequest>>,
    seq: Mutex<u64>,
    changed: watch::Sender<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            enabled: AtomicBool::new(true),
            entries: Mutex::default(),
            seq: Mutex::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Recorder {
    /// Whether requests are being kept (see [`Recorder::set_enabled`]).
    pub(crate) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Starts or stops keeping requests; a benchmark turns it off so that a growing log of
    /// every request does not weigh on what is measured.
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    pub(crate) fn push(&self, mut r: RecordedRequest) {
        if !self.enabled() {
            return;
        }
        {
            let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            *seq += 1;
            r.seq = *seq;
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn find(&self, pred: &impl Fn(&RecordedRequest) -> bool) -> Option<RecordedRequest> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| pred(r))
            .cloned()
    }

    /// The first recorded request (already there or arriving within `timeout`) matching `pred`.
    pub(crate) async fn wait_for(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Marking seen before searching means a push between the search and the wait still
            // wakes us.
            rx.borrow_and_update();
            if let Some(r) = self.find(&pred) {
                return Some(r);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return self.find(&pred),
            }
        }
    }
}
