//! What a provider's answer means for the push: sent, dead token, retry, or give up (and why).
//!
//! The tables follow Apple's "Handling notification responses from APNs" and Google's FCM v1
//! `ErrorCode` reference. Anything not recognised keeps the provider's words verbatim, so that a
//! new reason shows up in logs and outcomes instead of being squashed into "unknown".

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

/// Why a push failed, as the provider put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reason {
    /// Short machine-readable code (`BadDeviceToken`, `UNREGISTERED`, `HTTP 502`): a metric label
    /// and the key for "log this cause once".
    pub(crate) code: String,
    /// The full reason, verbatim, for logs and the outcome.
    pub(crate) text: String,
}

impl Reason {
    /// A reason whose text is its code.
    pub(crate) fn code(code: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            text: code.clone(),
            code,
        }
    }

    /// A reason with a code and a longer text.
    pub(crate) fn new(code: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            text: text.into(),
        }
    }
}

/// What to do after one HTTP attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Accepted; the provider's id for the notification when it gave one.
    Sent { provider_id: Option<String> },
    /// The token is dead: tell the module to drop the binding.
    InvalidToken(Reason),
    /// A passing problem (throttled, server error, connection lost): try again, not before
    /// `retry_after` when the provider said so.
    Retry {
        reason: Reason,
        retry_after: Option<Duration>,
    },
    /// Our credential was refused as expired: get a fresh one and try once more.
    RefreshAuth(Reason),
    /// Our configuration is wrong: not retried, logged once per cause.
    Config(Reason),
    /// The payload was refused.
    Payload(Reason),
    /// Anything else: not retried, reason verbatim.
    Other(Reason),
}

/// The result of one HTTP attempt.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) verdict: Verdict,
    /// Which credential was used, so that an "expired" answer expires that one only.
    pub(crate) auth_generation: Option<u64>,
}

/// Describes an HTTP client error with its causes: the top message is often just "error
/// sending request", and the cause (refused, GOAWAY, certificate) is what an operator needs.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Longest `Retry-After` taken at face value; a larger one is treated as this (the deadline cuts
/// it short anyway).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The `Retry-After` header as a delay. Only the delta-seconds form is read: both providers send
/// that, and an HTTP date would need a wall clock that agrees with theirs.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: u64 = value.parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[derive(Deserialize)]
struct ApnsError {
    reason: Option<String>,
}

/// APNs reasons that mean our setup (credentials, topic, environment) is wrong.
const APNS_CONFIG_REASONS: &[&str] = &[
    "BadCertificate",
    "BadCertificateEnvironment",
    "BadEnvironmentKeyIdInToken",
    "BadPath",
    "BadTopic",
    "DeviceTokenNotForTopic",
    "Forbidden",
    "InvalidProviderToken",
    "MissingProviderToken",
    "MissingTopic",
    "TopicDisallowed",
    "UnrelatedKeyIdInToken",
];

/// APNs reasons worth another try after a pause.
const APNS_RETRY_REASONS: &[&str] = &[
    "IdleTimeout",
    "InternalServerError",
    "ServiceUnavailable",
    "Shutdown",
    "TooManyProviderTokenUpdates",
    "TooManyRequests",
];

/// Classifies an APNs response that was not a 200.
pub(crate) fn apns(status: u16, body: &[u8], retry_after: Option<Duration>) -> Verdict {
    let reason = serde_json::from_slice::<ApnsError>(body)
        .ok()
        .and_then(|e| e.reason)
        .filter(|r| !r.is_empty());
    let Some(code) = reason else {
        return by_status(status, http_reason(status, body), retry_after);
    };
    let reason = Reason::code(code.as_str());
    match code.as_str() {
        "Unregistered" | "BadDeviceToken" | "ExpiredToken" => Verdict::InvalidToken(reason),
        "ExpiredProviderToken" => Verdict::RefreshAuth(reason),
        "PayloadTooLarge" | "PayloadEmpty" => Verdict::Payload(reason),
        c if APNS_CONFIG_REASONS.contains(&c) => Verdict::Config(reason),
        c if APNS_RETRY_REASONS.contains(&c) => Verdict::Retry {
            reason,
            retry_after,
        },
        _ => by_status(status, reason, retry_after),
    }
}

/// The fallback when the reason says nothing we know: the status class decides.
fn by_status(status: u16, reason: Reason, retry_after: Option<Duration>) -> Verdict {
    match status {
        410 => Verdict::InvalidToken(reason),
        401 | 403 => Verdict::Config(reason),
        413 => Verdict::Payload(reason),
        408 | 429 | 500..=599 => Verdict::Retry {
            reason,
            retry_after,
        },
        _ => Verdict::Other(reason),
    }
}

/// A reason for a response without a usable error body: the status, plus the body's start.
fn http_reason(status: u16, body: &[u8]) -> Reason {
    let code = format!("HTTP {status}");
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    if text.is_empty() {
        Reason::code(code)
    } else {
        Reason::new(code.clone(), format!("{code}: {text}"))
    }
}

#[derive(Deserialize)]
struct FcmErrorBody {
    error: FcmError,
}

#[derive(Deserialize)]
struct FcmError {
    #[serde(default)]
    message: String,
    status: Option<String>,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl FcmError {
    /// The FCM-specific code (`UNREGISTERED`, ...) from the `FcmError` detail.
    fn error_code(&self) -> Option<&str> {
        self.details.iter().find_map(|d| {
            let ty = d.get("@type")?.as_str()?;
            ty.ends_with("google.firebase.fcm.v1.FcmError")
                .then(|| d.get("errorCode")?.as_str())
                .flatten()
        })
    }

    /// Fields named by `google.rpc.BadRequest` details.
    fn violated_fields(&self) -> impl Iterator<Item = &str> {
        self.details
            .iter()
            .filter_map(|d| d.get("fieldViolations")?.as_array())
            .flatten()
            .filter_map(|v| v.get("field")?.as_str())
    }

    /// Whether an `INVALID_ARGUMENT` is about the registration token rather than the message.
    fn blames_token(&self) -> bool {
        self.message
            .to_ascii_lowercase()
            .contains("registration token")
            || self.violated_fields().any(|f| f == "message.token")
    }
}

/// Classifies an FCM v1 response that was not a 200.
pub(crate) fn fcm(status: u16, body: &[u8], retry_after: Option<Duration>) -> Verdict {
    let Ok(FcmErrorBody { error }) = serde_json::from_slice::<FcmErrorBody>(body) else {
        return by_status(status, http_reason(status, body), retry_after);
    };
    let code = error
        .error_code()
        .or(error.status.as_deref())
        .map_or_else(|| format!("HTTP {status}"), str::to_owned);
    let reason = if error.message.is_empty() {
        Reason::code(code.as_str())
    } else {
        Reason::new(code.as_str(), format!("{code}: {}", error.message))
    };
    match code.as_str() {
        "UNREGISTERED" => Verdict::InvalidToken(reason),
        "INVALID_ARGUMENT" if error.blames_token() => Verdict::InvalidToken(reason),
        "INVALID_ARGUMENT" => Verdict::Payload(reason),
        "SENDER_ID_MISMATCH" | "THIRD_PARTY_AUTH_ERROR" | "PERMISSION_DENIED" => {
            Verdict::Config(reason)
        }
        // The access token itself was refused (revoked, or expired early): fetch another once.
        "UNAUTHENTICATED" => Verdict::RefreshAuth(reason),
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED" => Verdict::Retry {
            reason,
            retry_after,
        },
        _ => by_status(status, reason, retry_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apns_reason(status: u16, reason: &str) -> Verdict {
        apns(
            status,
            format!(r#"{{"reason":"{reason}"}}"#).as_bytes(),
            None,
        )
    }

    #[test]
    fn apns_dead_tokens() {
        assert_eq!(
            apns(410, br#"{"reason":"Unregistered","timestamp":1}"#, None),
            Verdict::InvalidToken(Reason::code("Unregistered"))
        );
        assert_eq!(
            apns_reason(400, "BadDeviceToken"),
            Verdict::InvalidToken(Reason::code("BadDeviceToken"))
        );
        assert_eq!(
            apns_reason(410, "ExpiredToken"),
            Verdict::InvalidToken(Reason::code("ExpiredToken"))
        );
    }

    #[test]
    fn apns_configuration_errors_are_not_retried() {
        for reason in [
            "InvalidProviderToken",
            "BadCertificate",
            "BadTopic",
            "DeviceTokenNotForTopic",
            "TopicDisallowed",
        ] {
            let status = if reason.starts_with("Bad") || reason.starts_with("Device") {
                400
            } else {
                403
            };
            assert_eq!(
                apns_reason(status, reason),
                Verdict::Config(Reason::code(reason)),
                "{reason}"
            );
        }
        assert_eq!(
            apns_reason(403, "ExpiredProviderToken"),
            Verdict::RefreshAuth(Reason::code("ExpiredProviderToken"))
        );
        // An unknown 403 is still about our credentials.
        assert!(matches!(
            apns_reason(403, "SomethingNew"),
            Verdict::Config(r) if r.text == "SomethingNew"
        ));
    }

    #[test]
    fn apns_throttling_and_server_errors_retry_with_their_delay() {
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            apns(429, br#"{"reason":"TooManyRequests"}"#, after),
            Verdict::Retry {
                reason: Reason::code("TooManyRequests"),
                retry_after: after
            }
        );
        assert!(matches!(
            apns_reason(500, "InternalServerError"),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            apns_reason(503, "ServiceUnavailable"),
            Verdict::Retry { .. }
        ));
        // A proxy's HTML error page: status decides, and the text survives.
        assert!(matches!(
            apns(502, b"<html>bad gateway</html>", None),
            Verdict::Retry { reason, .. } if reason.code == "HTTP 502" && reason.text.contains("bad gateway")
        ));
    }

    #[test]
    fn apns_payload_and_unknown_reasons() {
        assert_eq!(
            apns(413, br#"{"reason":"PayloadTooLarge"}"#, None),
            Verdict::Payload(Reason::code("PayloadTooLarge"))
        );
        assert_eq!(
            apns_reason(400, "BrandNewReason"),
            Verdict::Other(Reason::code("BrandNewReason"))
        );
        assert_eq!(
            apns(400, b"", None),
            Verdict::Other(Reason::code("HTTP 400"))
        );
    }

    fn fcm_error(status: u16, code: &str, error_code: Option<&str>, message: &str) -> Vec<u8> {
        let details = match error_code {
            Some(c) => serde_json::json!([{
                "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                "errorCode": c
            }]),
            None => serde_json::json!([]),
        };
        serde_json::to_vec(&serde_json::json!({
            "error": {"code": status, "message": message, "status": code, "details": details}
        }))
        .unwrap()
    }

    #[test]
    fn fcm_dead_tokens() {
        let v = fcm(
            404,
            &fcm_error(
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "Requested entity was not found.",
            ),
            None,
        );
        assert!(
            matches!(&v, Verdict::InvalidToken(r) if r.code == "UNREGISTERED" && r.text.contains("not found")),
            "{v:?}"
        );
        let v = fcm(
            400,
            &fcm_error(
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "The registration token is not a valid FCM registration token",
            ),
            None,
        );
        assert!(matches!(v, Verdict::InvalidToken(_)), "{v:?}");
    }

    #[test]
    fn fcm_invalid_message_is_a_payload_error() {
        let body = serde_json::to_vec(&serde_json::json!({"error": {
            "code": 400, "status": "INVALID_ARGUMENT",
            "message": "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{"field": "message.data[0].value", "description": "x"}]}]
        }}))
        .unwrap();
        assert!(matches!(fcm(400, &body, None), Verdict::Payload(_)));
    }

    #[test]
    fn fcm_configuration_and_retry_classes() {
        let v = fcm(
            403,
            &fcm_error(
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "mismatch",
            ),
            None,
        );
        assert!(
            matches!(&v, Verdict::Config(r) if r.code == "SENDER_ID_MISMATCH"),
            "{v:?}"
        );
        let v = fcm(
            401,
            &fcm_error(
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "apns",
            ),
            None,
        );
        assert!(
            matches!(&v, Verdict::Config(r) if r.code == "THIRD_PARTY_AUTH_ERROR"),
            "{v:?}"
        );
        let v = fcm(
            401,
            &fcm_error(401, "UNAUTHENTICATED", None, "expired"),
            None,
        );
        assert!(matches!(v, Verdict::RefreshAuth(_)), "{v:?}");
        for (status, code) in [
            (429, "QUOTA_EXCEEDED"),
            (503, "UNAVAILABLE"),
            (500, "INTERNAL"),
        ] {
            let after = Some(Duration::from_secs(2));
            let v = fcm(status, &fcm_error(status, "X", Some(code), ""), after);
            assert_eq!(
                v,
                Verdict::Retry {
                    reason: Reason::code(code),
                    retry_after: after
                }
            );
        }
        let v = fcm(409, &fcm_error(409, "ABORTED", None, "odd"), None);
        assert_eq!(v, Verdict::Other(Reason::new("ABORTED", "ABORTED: odd")));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "99999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
