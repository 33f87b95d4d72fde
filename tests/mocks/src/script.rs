//! Per-device-token behaviour scripts.
//!
//! A script only decides the fate of a request that the mock has already found valid
//! (authenticated, well-formed): a client bug still gets the real service's answer even while
//! a script is queued, and a script is never consumed by a request that failed validation.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What the mock does with one valid request. Deserializable so the admin API can take
/// scripts as JSON, e.g. `{"type":"error","status":503,"reason":"ServiceUnavailable"}`,
/// `{"type":"delay","ms":500,"then":{"type":"success"}}`, `{"type":"go_away"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Behavior {
    /// Answer as the real service does for a delivered notification.
    Success,
    /// Answer with an error. APNs: `status` and `{"reason": reason}` (a 410 gets the
    /// `timestamp` too). FCM: `reason` is the FcmError `errorCode` and the body is a
    /// `google.rpc.Status` whose `status` text follows `status`.
    Error {
        /// HTTP status code.
        status: u16,
        /// APNs `reason` string or FCM `errorCode`.
        reason: String,
        /// Adds a `Retry-After: <seconds>` header.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u32>,
    },
    /// Wait `ms` milliseconds, then behave as `then`.
    Delay {
        /// How long to hold the response.
        ms: u64,
        /// The behaviour after the wait.
        then: Box<Behavior>,
    },
    /// Answer successfully, then close the connection gracefully (HTTP/2 GOAWAY; HTTP/1.1
    /// `Connection: close`), so the client must reconnect for its next request.
    GoAway,
    /// The token is gone: APNs 410 `{"reason":"Unregistered","timestamp":<ms>}`, FCM 404
    /// `UNREGISTERED`.
    Unregistered,
    /// Drop the connection without answering (a network failure mid-request).
    Disconnect,
}

impl Behavior {
    /// An error answer without `Retry-After`.
    pub fn error(status: u16, reason: &str) -> Behavior {
        Behavior::Error {
            status,
            reason: reason.to_owned(),
            retry_after: None,
        }
    }

    /// An error answer with `Retry-After: secs`.
    pub fn error_retry_after(status: u16, reason: &str, secs: u32) -> Behavior {
        Behavior::Error {
            status,
            reason: reason.to_owned(),
            retry_after: Some(secs),
        }
    }

    /// An FCM error with the HTTP status Google documents for `error_code`
    /// (see [`crate::fcm::status_for_error_code`]).
    pub fn fcm_error(error_code: &str) -> Behavior {
        Behavior::error(crate::fcm::status_for_error_code(error_code), error_code)
    }

    /// `then` after `ms` milliseconds.
    pub fn delay(ms: u64, then: Behavior) -> Behavior {
        Behavior::Delay {
            ms,
            then: Box::new(then),
        }
    }
}

/// Queues of behaviours per device token, consumed in order; an empty queue means success.
#[derive(Debug, Default)]
pub(crate) struct Scripts {
    queues: Mutex<HashMap<String, VecDeque<Behavior>>>,
}

impl Scripts {
    /// Appends `behaviors` to the token's queue.
    pub(crate) fn push(&self, token: &str, behaviors: Vec<Behavior>) {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        q.entry(token.to_owned()).or_default().extend(behaviors);
    }

    /// The next behaviour for `token`, or `Success` once its script is used up.
    pub(crate) fn next(&self, token: &str) -> (Behavior, bool) {
        let mut q = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        match q.get_mut(token).and_then(VecDeque::pop_front) {
            Some(b) => (b, true),
            None => (Behavior::Success, false),
        }
    }

    /// Forgets every queued behaviour.
    pub(crate) fn clear(&self) {
        self.queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_in_order_then_success() {
        let s = Scripts::default();
        s.push("t", vec![Behavior::error(500, "X"), Behavior::GoAway]);
        assert_eq!(s.next("t"), (Behavior::error(500, "X"), true));
        assert_eq!(s.next("t"), (Behavior::GoAway, true));
        assert_eq!(s.next("t"), (Behavior::Success, false));
        assert_eq!(s.next("other"), (Behavior::Success, false));
    }

    #[test]
    fn json_shape() {
        let b: Behavior = serde_json::from_str(
            r#"{"type":"delay","ms":5,"then":{"type":"error","status":429,"reason":"QUOTA_EXCEEDED","retry_after":3}}"#,
        )
        .unwrap();
        assert_eq!(
            b,
            Behavior::delay(5, Behavior::error_retry_after(429, "QUOTA_EXCEEDED", 3))
        );
        let u: Behavior = serde_json::from_str(r#"{"type":"unregistered"}"#).unwrap();
        assert_eq!(u, Behavior::Unregistered);
    }
}
