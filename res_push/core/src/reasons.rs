//! Why a device did not wake: the vocabulary of `PUSH_REASONS` and `PUSHSTATUS`, defined once.
//!
//! `Dial(Push/alice)` and `PushWake(alice)` leave, on the caller's channel, `PUSHSTATUS` (one
//! word for the whole endpoint) and `PUSH_REASONS` (`<binding id>:<reason>,...`, one entry per
//! device; `<endpoint>:no-binding` when it has none), so a dialplan can fall back to the
//! user's mobile number when no device woke in time (what Wazo does).

use std::fmt;

use res_push_proto::{FailureClass, Outcome as PushOutcome};

use crate::wake::Outcome;

/// Why a push was not delivered, by class (the `<class>` of `push-failed:<class>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushFailure {
    /// The provider says the token is dead (the binding is removed).
    InvalidToken,
    /// Our configuration (credentials, topic, sender id).
    Config,
    /// No app section serves the device's app id.
    NoApp,
    /// The provider kept failing (throttled, unavailable).
    Provider,
    /// The payload was refused.
    Payload,
    /// The job's deadline passed before it could run.
    Expired,
    /// The sidecar is not connected, lost the job, did not answer in time, or the queue to it
    /// is full.
    Sidecar,
    /// Anything else.
    Other,
}

impl PushFailure {
    /// Its name in `push-failed:<class>`.
    pub fn name(self) -> &'static str {
        match self {
            PushFailure::InvalidToken => "invalid-token",
            PushFailure::Config => "config",
            PushFailure::NoApp => "no-app",
            PushFailure::Provider => "provider",
            PushFailure::Payload => "payload",
            PushFailure::Expired => "expired",
            PushFailure::Sidecar => "sidecar",
            PushFailure::Other => "other",
        }
    }

    /// The class of a sidecar outcome; `None` when the push was sent.
    pub fn of(outcome: &PushOutcome) -> Option<Self> {
        Some(match outcome {
            PushOutcome::Sent { .. } => return None,
            PushOutcome::InvalidToken { .. } => PushFailure::InvalidToken,
            PushOutcome::Expired => PushFailure::Expired,
            PushOutcome::Failed { class, .. } => match class {
                FailureClass::Config => PushFailure::Config,
                FailureClass::NoApp => PushFailure::NoApp,
                FailureClass::Provider => PushFailure::Provider,
                FailureClass::Payload => PushFailure::Payload,
                FailureClass::Other => PushFailure::Other,
            },
            PushOutcome::Unsupported { .. }
            | PushOutcome::Pong
            | PushOutcome::Configured { .. } => PushFailure::Other,
        })
    }
}

/// A push that was not delivered: its class and the reason, verbatim, for logs and AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushError {
    /// The class.
    pub class: PushFailure,
    /// Why, as the provider or the link said it.
    pub why: String,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.why)
    }
}

impl From<&str> for PushError {
    fn from(why: &str) -> Self {
        PushError {
            class: PushFailure::Other,
            why: why.to_string(),
        }
    }
}

impl From<String> for PushError {
    fn from(why: String) -> Self {
        PushError {
            class: PushFailure::Other,
            why,
        }
    }
}

/// What became of one device of a call (or of a `PushWake`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It answered.
    Answered,
    /// It registered in time (`PushWake`).
    Woken,
    /// It woke and rang, and nobody answered it.
    NotAnswered,
    /// It refused the call (busy, decline).
    Declined,
    /// Another device or destination answered first.
    AnsweredElsewhere,
    /// The caller hung up.
    Hangup,
    /// Neither an answer nor a REGISTER in time; also what a device reads as while its call
    /// is still under way, so a `Dial` that gives up first reports it.
    Timeout,
    /// Its push could not be delivered.
    PushFailed(PushFailure),
    /// The endpoint has no push binding (the entry is named after the endpoint).
    NoBinding,
}

impl Reason {
    /// Its text in `PUSH_REASONS`.
    pub fn text(&self) -> String {
        match self {
            Reason::Answered => "answered".into(),
            Reason::Woken => "woken".into(),
            Reason::NotAnswered => "not-answered".into(),
            Reason::Declined => "declined".into(),
            Reason::AnsweredElsewhere => "answered-elsewhere".into(),
            Reason::Hangup => "hangup".into(),
            Reason::Timeout => "timeout".into(),
            Reason::PushFailed(c) => format!("push-failed:{}", c.name()),
            Reason::NoBinding => "no-binding".into(),
        }
    }

    /// How a device leg's outcome reads; `answered_elsewhere`: it was hung up because another
    /// destination answered; `push_failure`: its push failed (a device whose live contact
    /// rang on until the timeout did not wake because of that).
    pub fn of(
        outcome: &Outcome,
        answered_elsewhere: bool,
        push_failure: Option<&PushError>,
    ) -> Reason {
        match outcome {
            Outcome::Answered => Reason::Answered,
            Outcome::NotAnswered => Reason::NotAnswered,
            Outcome::Declined => Reason::Declined,
            Outcome::TimedOut => match push_failure {
                Some(e) => Reason::PushFailed(e.class),
                None => Reason::Timeout,
            },
            Outcome::Hangup if answered_elsewhere => Reason::AnsweredElsewhere,
            Outcome::Hangup => Reason::Hangup,
            Outcome::Failed(e) => Reason::PushFailed(e.class),
        }
    }
}

/// One device's entry: its label (binding id, or the endpoint for `no-binding`), what became
/// of it, and whether it registered during the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceReport {
    /// Binding id, or the endpoint name.
    pub label: String,
    /// What became of it.
    pub reason: Reason,
    /// It registered while the call waited for it.
    pub woken: bool,
}

/// `PUSH_REASONS`: `<label>:<reason>` for each device, comma-separated, in order.
pub fn reasons_var(reports: &[DeviceReport]) -> String {
    reports
        .iter()
        .map(|r| format!("{}:{}", r.label, r.reason.text()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `PUSHSTATUS` of a `Dial(Push/...)`, from its devices: `WOKEN` (a device registered in
/// time), `ANSWERED` (one answered at the contact it had), `DECLINED`, `TIMEOUT` (pushed, but
/// none registered or answered in time), `FAILED` (every push failed), `ANSWERED_ELSEWHERE`,
/// `HANGUP`, `NOBINDING` (no device). The first that applies, in that order; a fallback
/// dialplan rings the mobile number on `TIMEOUT`, `FAILED` and `NOBINDING`.
pub fn push_status(reports: &[DeviceReport]) -> &'static str {
    let any = |f: &dyn Fn(&DeviceReport) -> bool| reports.iter().any(f);
    if any(&|r| r.woken || r.reason == Reason::Woken) {
        "WOKEN"
    } else if any(&|r| r.reason == Reason::Answered) {
        "ANSWERED"
    } else if any(&|r| r.reason == Reason::Declined) {
        "DECLINED"
    } else if any(&|r| matches!(r.reason, Reason::Timeout | Reason::NotAnswered)) {
        "TIMEOUT"
    } else if any(&|r| matches!(r.reason, Reason::PushFailed(_))) {
        "FAILED"
    } else if any(&|r| r.reason == Reason::AnsweredElsewhere) {
        "ANSWERED_ELSEWHERE"
    } else if any(&|r| r.reason == Reason::Hangup) {
        "HANGUP"
    } else {
        "NOBINDING"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(label: &str, reason: Reason, woken: bool) -> DeviceReport {
        DeviceReport {
            label: label.into(),
            reason,
            woken,
        }
    }

    #[test]
    fn vocabulary() {
        let all = [
            (Reason::Answered, "answered"),
            (Reason::Woken, "woken"),
            (Reason::NotAnswered, "not-answered"),
            (Reason::Declined, "declined"),
            (Reason::AnsweredElsewhere, "answered-elsewhere"),
            (Reason::Hangup, "hangup"),
            (Reason::Timeout, "timeout"),
            (
                Reason::PushFailed(PushFailure::InvalidToken),
                "push-failed:invalid-token",
            ),
            (
                Reason::PushFailed(PushFailure::Sidecar),
                "push-failed:sidecar",
            ),
            (Reason::NoBinding, "no-binding"),
        ];
        for (r, text) in all {
            assert_eq!(r.text(), text);
        }
    }

    #[test]
    fn outcomes_read_as_reasons() {
        let failed = Outcome::Failed(PushError {
            class: PushFailure::Provider,
            why: "503".into(),
        });
        assert_eq!(
            Reason::of(&failed, false, None),
            Reason::PushFailed(PushFailure::Provider)
        );
        assert_eq!(
            Reason::of(&Outcome::Hangup, true, None),
            Reason::AnsweredElsewhere
        );
        assert_eq!(Reason::of(&Outcome::Hangup, false, None), Reason::Hangup);
        assert_eq!(Reason::of(&Outcome::TimedOut, false, None), Reason::Timeout);
        assert_eq!(
            Reason::of(&Outcome::Declined, false, None),
            Reason::Declined
        );
        // A live contact rang on after the push failed: the push is why it never woke.
        let e = PushError {
            class: PushFailure::InvalidToken,
            why: "410".into(),
        };
        assert_eq!(
            Reason::of(&Outcome::TimedOut, false, Some(&e)),
            Reason::PushFailed(PushFailure::InvalidToken)
        );
    }

    #[test]
    fn sidecar_outcomes_have_classes() {
        assert_eq!(
            PushFailure::of(&PushOutcome::InvalidToken {
                reason: "Unregistered".into()
            }),
            Some(PushFailure::InvalidToken)
        );
        assert_eq!(
            PushFailure::of(&PushOutcome::Failed {
                class: FailureClass::NoApp,
                reason: "x".into()
            }),
            Some(PushFailure::NoApp)
        );
        assert_eq!(
            PushFailure::of(&PushOutcome::Sent {
                provider_id: None,
                attempts: 1
            }),
            None
        );
    }

    #[test]
    fn reasons_list_every_device_in_order() {
        let r = [
            dev("d1", Reason::PushFailed(PushFailure::InvalidToken), false),
            dev("d2", Reason::Timeout, false),
        ];
        assert_eq!(reasons_var(&r), "d1:push-failed:invalid-token,d2:timeout");
        assert_eq!(reasons_var(&[]), "");
    }

    #[test]
    fn status_says_whether_anything_woke() {
        assert_eq!(push_status(&[]), "NOBINDING");
        assert_eq!(
            push_status(&[dev("alice", Reason::NoBinding, false)]),
            "NOBINDING"
        );
        assert_eq!(
            push_status(&[dev(
                "d1",
                Reason::PushFailed(PushFailure::InvalidToken),
                false
            )]),
            "FAILED"
        );
        // One device timed out, the other's push failed: nobody woke in time.
        assert_eq!(
            push_status(&[
                dev("d1", Reason::PushFailed(PushFailure::Provider), false),
                dev("d2", Reason::Timeout, false)
            ]),
            "TIMEOUT"
        );
        // A device that woke and rang unanswered: woken (no fallback to the mobile number).
        assert_eq!(
            push_status(&[
                dev("d1", Reason::NotAnswered, true),
                dev("d2", Reason::Timeout, false)
            ]),
            "WOKEN"
        );
        assert_eq!(
            push_status(&[dev("d1", Reason::Answered, false)]),
            "ANSWERED"
        );
        assert_eq!(
            push_status(&[dev("d1", Reason::Declined, false)]),
            "DECLINED"
        );
        assert_eq!(
            push_status(&[dev("d1", Reason::AnsweredElsewhere, false)]),
            "ANSWERED_ELSEWHERE"
        );
        assert_eq!(push_status(&[dev("d1", Reason::Hangup, false)]), "HANGUP");
    }
}
