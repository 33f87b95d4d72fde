//! Late wake-ups: a device that was pushed for a call and registers only after the call ended
//! for it.
//!
//! An iOS app must report every VoIP push to CallKit, so a phone pushed for a call that was
//! answered elsewhere, or given up by the caller, before the phone registered shows a call
//! that no INVITE will ever end. Flexisip closes it by sending the late device an INVITE from
//! the same caller followed at once by a CANCEL whose RFC 3326 Reason says how the call ended:
//! the app then shows "answered elsewhere" or "missed". res_push does the same; this module
//! decides who gets such an INVITE and with which Reason, the module carries it out. Never a
//! second VoIP push: the device is awake, it registered.

use std::time::{Duration, Instant};

use crate::wake::Outcome;

/// How a call ended for a device that was pushed for it and never rung at a fresh contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Another device (or destination) answered.
    AnsweredElsewhere,
    /// The caller hung up, or nobody answered in time.
    Terminated,
}

/// The `Reason` of a CANCEL saying the call was answered elsewhere (RFC 3326; what
/// res_pjsip_rfc3326 writes for `ANSWERED_ELSEWHERE`).
pub const REASON_COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";
/// The `Reason` of a CANCEL for a call the caller gave up or nobody answered.
pub const REASON_TERMINATED: &str = "SIP;cause=487;text=\"Request Terminated\"";

/// Q.850 `ANSWERED_ELSEWHERE`.
pub const CAUSE_ANSWERED_ELSEWHERE: i32 = 26;
/// Q.850 `NORMAL_CLEARING`.
pub const CAUSE_NORMAL_CLEARING: i32 = 16;

impl Ending {
    /// The name used in AMI events and logs.
    pub fn name(self) -> &'static str {
        match self {
            Ending::AnsweredElsewhere => "answered-elsewhere",
            Ending::Terminated => "terminated",
        }
    }

    /// The `Reason` header value the CANCEL carries.
    pub fn reason(self) -> &'static str {
        match self {
            Ending::AnsweredElsewhere => REASON_COMPLETED_ELSEWHERE,
            Ending::Terminated => REASON_TERMINATED,
        }
    }

    /// The hangup cause the late INVITE's channel ends with. Asterisk's res_pjsip_rfc3326
    /// turns `ANSWERED_ELSEWHERE` into [`REASON_COMPLETED_ELSEWHERE`] by itself (and adds a
    /// `Q.850` Reason for any cause).
    pub fn hangup_cause(self) -> i32 {
        match self {
            Ending::AnsweredElsewhere => CAUSE_ANSWERED_ELSEWHERE,
            Ending::Terminated => CAUSE_NORMAL_CLEARING,
        }
    }

    /// The `Reason` res_push must add itself to the CANCEL: the "completed elsewhere" one only
    /// when res_pjsip_rfc3326 is not there to write it (else it would appear twice).
    pub fn reason_to_add(self, rfc3326_loaded: bool) -> Option<&'static str> {
        match self {
            Ending::AnsweredElsewhere if rfc3326_loaded => None,
            e => Some(e.reason()),
        }
    }
}

/// The Reason res_push adds to a CANCEL of a `Push/` call's leg (a device, or a plain contact
/// `PushDial` rings) hung up with `hangup_cause`: "completed elsewhere" for
/// `ANSWERED_ELSEWHERE` when res_pjsip_rfc3326, which normally writes it, is not loaded.
pub fn leg_cancel_reason(hangup_cause: i32, rfc3326_loaded: bool) -> Option<&'static str> {
    (hangup_cause == CAUSE_ANSWERED_ELSEWHERE && !rfc3326_loaded)
        .then_some(REASON_COMPLETED_ELSEWHERE)
}

/// How a pushed device's part of a call ended, as a late INVITE sees it: `None` when the device
/// needs none (it answered or declined, so it saw the call; `reached`: it registered during the
/// call and was rung at its fresh contact, or its live contact answered the INVITE with a
/// provisional response, so Dial's own CANCEL closed the call on it; it was not pushed, or its
/// push failed, so it never showed the call).
pub fn ending(
    outcome: &Outcome,
    pushed: bool,
    reached: bool,
    answered_elsewhere: bool,
) -> Option<Ending> {
    if !pushed || reached {
        return None;
    }
    match outcome {
        Outcome::Hangup if answered_elsewhere => Some(Ending::AnsweredElsewhere),
        Outcome::Hangup | Outcome::TimedOut | Outcome::NotAnswered => Some(Ending::Terminated),
        Outcome::Answered | Outcome::Declined | Outcome::Failed(_) => None,
    }
}

/// The call a device was pushed for, as the device would have seen it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCall {
    /// The call UUID its push carried.
    pub call_uuid: String,
    /// The PJSIP endpoint the call was for (the late INVITE goes through it).
    pub endpoint: String,
    /// Caller number and name (the From of the INVITE it would have got).
    pub caller_number: Option<String>,
    /// See `caller_number`.
    pub caller_name: Option<String>,
    /// How the call ended for the device.
    pub ending: Ending,
}

#[derive(Debug, Clone)]
struct Entry {
    device: String,
    /// When the device was pushed for the call: the window runs from the push, as RFC 8599
    /// apps see it (the push is what made the app report a call), not from the call's end.
    pushed_at: Instant,
    /// `None` once its late INVITE went out: kept until the window passes so that a second
    /// end of the same call (a dialplan retrying the device) does not send a second one.
    call: Option<MissedCall>,
    call_uuid: String,
}

/// The calls pushed devices missed, each remembered until `window` after its push.
#[derive(Debug, Clone, Default)]
pub struct LateWakes {
    window: Duration,
    entries: Vec<Entry>,
}

impl LateWakes {
    /// Remembers calls for `window` (zero: never).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            entries: Vec::new(),
        }
    }

    /// A new window (reload); entries already kept expire by the new one.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Nothing remembered: a REGISTER needs no look-up.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let window = self.window;
        self.entries
            .retain(|e| now.saturating_duration_since(e.pushed_at) < window);
    }

    /// `device`, pushed for `call` at `pushed_at`, saw its part of the call end at `now`
    /// without reaching it.
    pub fn ended(&mut self, device: &str, call: MissedCall, pushed_at: Instant, now: Instant) {
        self.expire(now);
        if now.saturating_duration_since(pushed_at) >= self.window {
            return;
        }
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.device == device && e.call_uuid == call.call_uuid)
        {
            // Already sent for this call: at most once per call and device.
            if e.call.is_some() {
                e.call = Some(call);
            }
            return;
        }
        self.entries.push(Entry {
            device: device.to_string(),
            pushed_at,
            call_uuid: call.call_uuid.clone(),
            call: Some(call),
        });
    }

    /// `device` registered at `now`. `ringing`: a call is waking it right now, which the
    /// REGISTER serves; a late INVITE then would ring beside it, so the missed calls wait for
    /// a later REGISTER within their window. Returns the calls to close, oldest first; each is
    /// handed out once.
    pub fn registered(&mut self, device: &str, now: Instant, ringing: bool) -> Vec<MissedCall> {
        self.expire(now);
        if ringing {
            return Vec::new();
        }
        self.entries
            .iter_mut()
            .filter(|e| e.device == device)
            .filter_map(|e| e.call.take())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn call(uuid: &str, ending: Ending) -> MissedCall {
        MissedCall {
            call_uuid: uuid.into(),
            endpoint: "alice".into(),
            caller_number: Some("bob".into()),
            caller_name: Some("Bob".into()),
            ending,
        }
    }

    #[test]
    fn who_needs_a_late_invite() {
        use Outcome::*;
        // Pushed, never registered: closed with how the call ended.
        assert_eq!(
            ending(&Hangup, true, false, true),
            Some(Ending::AnsweredElsewhere)
        );
        assert_eq!(
            ending(&Hangup, true, false, false),
            Some(Ending::Terminated)
        );
        assert_eq!(
            ending(&TimedOut, true, false, false),
            Some(Ending::Terminated)
        );
        // Saw the call: nothing to close.
        assert_eq!(ending(&Answered, true, false, false), None);
        assert_eq!(ending(&Declined, true, false, false), None);
        // Reached during the call (rung at a fresh contact after its REGISTER, or its live
        // contact answered with 1xx): Dial's CANCEL closed it.
        assert_eq!(ending(&Hangup, true, true, true), None);
        assert_eq!(ending(&NotAnswered, true, true, false), None);
        // Never pushed (rung without a push) or its push failed: no CallKit call to close.
        assert_eq!(ending(&Hangup, false, false, true), None);
        assert_eq!(
            ending(&Failed("dead token".into()), true, false, false),
            None
        );
    }

    #[test]
    fn reasons_follow_rfc_3326() {
        assert_eq!(
            Ending::AnsweredElsewhere.reason(),
            "SIP;cause=200;text=\"Call completed elsewhere\""
        );
        assert!(Ending::Terminated.reason().starts_with("SIP;cause=487"));
        assert_eq!(Ending::AnsweredElsewhere.hangup_cause(), 26);
        // res_pjsip_rfc3326 writes the "completed elsewhere" Reason itself.
        assert_eq!(Ending::AnsweredElsewhere.reason_to_add(true), None);
        assert_eq!(
            Ending::AnsweredElsewhere.reason_to_add(false),
            Some(REASON_COMPLETED_ELSEWHERE)
        );
        assert_eq!(
            Ending::Terminated.reason_to_add(true),
            Some(REASON_TERMINATED)
        );
    }

    #[test]
    fn push_legs_say_completed_elsewhere_without_rfc3326() {
        assert_eq!(
            leg_cancel_reason(CAUSE_ANSWERED_ELSEWHERE, false),
            Some(REASON_COMPLETED_ELSEWHERE)
        );
        assert_eq!(leg_cancel_reason(CAUSE_ANSWERED_ELSEWHERE, true), None);
        assert_eq!(leg_cancel_reason(CAUSE_NORMAL_CLEARING, false), None);
    }

    #[test]
    fn register_within_the_window_gets_the_call_once() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(W);
        l.ended("dev1", call("u1", Ending::AnsweredElsewhere), t0, t0);
        assert!(l.registered("dev2", t0, false).is_empty(), "other device");
        let got = l.registered("dev1", t0 + Duration::from_secs(5), false);
        assert_eq!(got, vec![call("u1", Ending::AnsweredElsewhere)]);
        assert!(
            l.registered("dev1", t0 + Duration::from_secs(6), false)
                .is_empty(),
            "at most once per call and device"
        );
        // The same call ending again for the device (a dialplan retry) sends nothing more.
        l.ended(
            "dev1",
            call("u1", Ending::Terminated),
            t0 + Duration::from_secs(7),
            t0 + Duration::from_secs(7),
        );
        assert!(
            l.registered("dev1", t0 + Duration::from_secs(8), false)
                .is_empty()
        );
    }

    #[test]
    fn register_after_the_window_gets_nothing() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(W);
        l.ended("dev1", call("u1", Ending::Terminated), t0, t0);
        assert!(l.registered("dev1", t0 + W, false).is_empty());
        assert!(l.is_empty(), "expired entries are dropped");
    }

    #[test]
    fn the_window_runs_from_the_push_not_from_the_end_of_the_call() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(Duration::from_secs(10));
        // Rang for 6 s, registered 5 s after the end: 11 s after its push.
        l.ended(
            "dev1",
            call("u1", Ending::Terminated),
            t0,
            t0 + Duration::from_secs(6),
        );
        assert!(
            l.registered("dev1", t0 + Duration::from_secs(11), false)
                .is_empty()
        );
        // A call that outlasted the window leaves nothing to close.
        l.ended(
            "dev1",
            call("u2", Ending::Terminated),
            t0,
            t0 + Duration::from_secs(12),
        );
        assert!(l.is_empty());
        l.ended(
            "dev1",
            call("u3", Ending::AnsweredElsewhere),
            t0 + Duration::from_secs(20),
            t0 + Duration::from_secs(26),
        );
        assert_eq!(
            l.registered("dev1", t0 + Duration::from_secs(29), false),
            vec![call("u3", Ending::AnsweredElsewhere)]
        );
    }

    #[test]
    fn zero_window_remembers_nothing() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(Duration::ZERO);
        l.ended("dev1", call("u1", Ending::Terminated), t0, t0);
        assert!(l.is_empty());
        assert!(l.registered("dev1", t0, false).is_empty());
    }

    #[test]
    fn a_device_rung_for_another_call_keeps_its_missed_call_for_later() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(W);
        l.ended("dev1", call("u1", Ending::Terminated), t0, t0);
        assert!(
            l.registered("dev1", t0 + Duration::from_secs(1), true)
                .is_empty()
        );
        assert_eq!(
            l.registered("dev1", t0 + Duration::from_secs(2), false),
            vec![call("u1", Ending::Terminated)]
        );
    }

    #[test]
    fn several_missed_calls_come_oldest_first() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(W);
        l.ended("dev1", call("u1", Ending::Terminated), t0, t0);
        l.ended(
            "dev1",
            call("u2", Ending::AnsweredElsewhere),
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(1),
        );
        let got = l.registered("dev1", t0 + Duration::from_secs(2), false);
        assert_eq!(
            got.iter().map(|c| c.call_uuid.as_str()).collect::<Vec<_>>(),
            ["u1", "u2"]
        );
    }

    #[test]
    fn a_shorter_window_on_reload_applies_to_kept_calls() {
        let t0 = Instant::now();
        let mut l = LateWakes::new(W);
        l.ended("dev1", call("u1", Ending::Terminated), t0, t0);
        l.set_window(Duration::from_secs(2));
        assert!(
            l.registered("dev1", t0 + Duration::from_secs(3), false)
                .is_empty()
        );
    }
}
