//! The wake-up of one device for one call, as a pure state machine.
//!
//! A device leg of `Dial(Push/alice)` pushes the device and, when the device still has a
//! registered contact, rings that contact at once (an awake phone does not re-register just
//! because it was pushed). What happens next depends on what arrives first: an answer, the
//! device's REGISTER (from the same contact: the ringing leg goes on; from a new one: the new
//! contact rings and the stale leg is cancelled), a failed push (the device is given up only
//! when no leg still rings a live contact), the wake timeout, or the caller going away.
//!
//! The module's side (`res_push/src/wake.rs`) feeds [`Event`]s in from whichever thread sees
//! them and carries out what [`Device::next`] and [`Effect`] say; every decision is here, so
//! each transition has a unit test and none needs a multi-second SIP scenario.

use std::time::Duration;

use crate::reasons::PushError;

/// A contact as far as "is it the same phone at the same place" goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    /// The contact URI (what a leg dials).
    pub uri: String,
    /// `+sip.instance`, when the device sent one.
    pub instance: Option<String>,
}

/// Host (lower case), port and transport of a SIP URI; `None` when it does not parse.
fn address(uri: &str) -> Option<(String, u16, String)> {
    let (scheme, rest) = uri.split_once(':')?;
    let secure = scheme.eq_ignore_ascii_case("sips");
    let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostpart = hostpart.split('?').next()?;
    let mut parts = hostpart.split(';');
    let hostport = parts.next()?;
    let transport = parts
        .filter_map(|p| p.split_once('='))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("transport"))
        .map(|(_, v)| v.trim().to_ascii_lowercase())
        .unwrap_or_else(|| if secure { "tls" } else { "udp" }.to_string());
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let default = if secure || transport == "tls" {
        5061
    } else {
        5060
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host.to_ascii_lowercase(), port, transport))
}

impl ContactRef {
    /// A contact from its URI and instance.
    pub fn new(uri: impl Into<String>, instance: Option<String>) -> Self {
        Self {
            uri: uri.into(),
            instance,
        }
    }

    /// The same contact: same address (host, port, transport), and the same `+sip.instance`
    /// when both carry one. A REGISTER from the same contact reaches the phone a leg already
    /// rings, so that leg goes on.
    pub fn same_as(&self, other: &ContactRef) -> bool {
        let same_address = match (address(&self.uri), address(&other.uri)) {
            (Some(a), Some(b)) => a == b,
            _ => self.uri == other.uri,
        };
        let same_instance = match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        same_address && same_instance
    }
}

/// How the device's wake-up starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The device's registered, unexpired contact, to ring at once (`ring_live_contact`).
    pub live: Option<ContactRef>,
    /// Send the call push (false: the device registered within `push_skip_recent`, so it is
    /// rung without one; a push still goes if that contact turns out unreachable).
    pub push: bool,
    /// The wake timeout: how long the device may take to answer its live contact or to
    /// register.
    pub timeout: Duration,
}

/// How a leg's Dial ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegEnd {
    /// The device answered.
    Answered,
    /// It refused (busy, decline).
    Busy,
    /// The contact could not be reached (transport error, 408, 503...).
    Unreachable,
    /// It rang until the leg's own timeout.
    NoAnswer,
    /// This device leg itself was hung up (the caller left, or another device answered).
    Hangup,
}

/// Something that happened to the device or its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The provider accepted the push.
    PushSent,
    /// The push could not be delivered.
    PushFailed(PushError),
    /// The registrar accepted a REGISTER of this device.
    Registered(ContactRef),
    /// The current leg's Dial returned.
    LegEnded(LegEnd),
    /// The device leg was hung up while no leg was ringing.
    Hangup,
}

/// How the device's part of the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It answered.
    Answered,
    /// It refused the call.
    Declined,
    /// A fresh contact rang and the call ended without its answer.
    NotAnswered,
    /// Neither an answer nor a REGISTER within the wake timeout.
    TimedOut,
    /// The caller left or another device answered.
    Hangup,
    /// The push failed and no contact of the device could be rung.
    Failed(PushError),
}

/// What the device leg's thread does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the call push (its outcome comes back as [`Event::PushSent`]/[`Event::PushFailed`]).
    Push,
    /// Dial this contact; `timeout` bounds a live contact's ringing by the wake timeout, a
    /// freshly registered contact rings for as long as the call does.
    Ring {
        /// The contact to dial.
        uri: String,
        /// Dial timeout.
        timeout: Option<Duration>,
    },
    /// Wait for an event (at most this long).
    Wait(Duration),
    /// Done.
    Finish(Outcome),
}

/// What the thread that fed an event must do at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Effect {
    /// Hang up the ringing leg (a REGISTER came from another contact).
    pub cancel_leg: bool,
    /// Wake the device leg's thread: [`Device::next`] has something new.
    pub wake: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Push {
    /// Not sent (yet): the device is rung without one.
    Skipped,
    /// To send at the next step.
    Due,
    /// Sent, no outcome yet.
    InFlight,
    Sent,
    Failed(PushError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Leg {
    Idle,
    Ringing {
        contact: ContactRef,
        fresh: bool,
    },
    /// Hung up by us for a newer contact; its end is not the device's end.
    Cancelling,
}

/// One device of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    push: Push,
    leg: Leg,
    /// The live contact, until it has been rung.
    live: Option<ContactRef>,
    /// A freshly registered contact to ring once no leg rings.
    queued: Option<ContactRef>,
    outcome: Option<Outcome>,
    timeout: Duration,
    registered: bool,
}

impl Device {
    /// A device about to be woken.
    pub fn new(start: Start) -> Self {
        let push = if start.push || start.live.is_none() {
            Push::Due
        } else {
            Push::Skipped
        };
        Self {
            push,
            leg: Leg::Idle,
            live: start.live,
            queued: None,
            outcome: None,
            timeout: start.timeout,
            registered: false,
        }
    }

    /// Whether a call push went out (so a cancel push is due if the device does not answer).
    pub fn pushed(&self) -> bool {
        matches!(self.push, Push::InFlight | Push::Sent)
    }

    /// Why its push failed, if it did.
    pub fn push_failure(&self) -> Option<&PushError> {
        match &self.push {
            Push::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the device registered during the call.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Whether a leg is ringing a contact right now.
    pub fn ringing(&self) -> bool {
        matches!(self.leg, Leg::Ringing { .. })
    }

    /// Applies an event.
    pub fn on(&mut self, event: Event) -> Effect {
        if self.outcome.is_some() {
            return Effect::default();
        }
        match event {
            Event::PushSent => {
                if self.push == Push::InFlight {
                    self.push = Push::Sent;
                }
                Effect::default()
            }
            Event::PushFailed(why) => {
                self.push = Push::Failed(why);
                // A ringing leg or a contact still to ring keeps the device in the call.
                Effect {
                    cancel_leg: false,
                    wake: self.leg == Leg::Idle,
                }
            }
            Event::Registered(contact) => {
                self.registered = true;
                match &self.leg {
                    Leg::Ringing { contact: rung, .. } if rung.same_as(&contact) => {
                        Effect::default()
                    }
                    Leg::Ringing { .. } => {
                        self.leg = Leg::Cancelling;
                        self.queued = Some(contact);
                        Effect {
                            cancel_leg: true,
                            wake: false,
                        }
                    }
                    Leg::Cancelling => {
                        self.queued = Some(contact);
                        Effect::default()
                    }
                    Leg::Idle => {
                        // Not rung yet: ring what it registered from, not what it had.
                        self.live = None;
                        self.queued = Some(contact);
                        Effect {
                            cancel_leg: false,
                            wake: true,
                        }
                    }
                }
            }
            Event::LegEnded(end) => {
                let leg = std::mem::replace(&mut self.leg, Leg::Idle);
                match (leg, end) {
                    (_, LegEnd::Answered) => self.outcome = Some(Outcome::Answered),
                    (_, LegEnd::Hangup) => self.outcome = Some(Outcome::Hangup),
                    // We hung it up for a newer contact: that one rings next.
                    (Leg::Cancelling, _) => {}
                    (Leg::Ringing { .. }, LegEnd::Busy) => self.outcome = Some(Outcome::Declined),
                    (Leg::Ringing { fresh: true, .. }, LegEnd::NoAnswer) => {
                        self.outcome = Some(Outcome::NotAnswered)
                    }
                    // A dead live contact: the push is what can still reach the device.
                    (Leg::Ringing { fresh: false, .. }, LegEnd::Unreachable) => {
                        if self.push == Push::Skipped {
                            self.push = Push::Due;
                        }
                    }
                    (Leg::Ringing { .. }, _) | (Leg::Idle, _) => {}
                }
                Effect::default()
            }
            Event::Hangup => {
                self.outcome = Some(Outcome::Hangup);
                Effect {
                    cancel_leg: false,
                    wake: true,
                }
            }
        }
    }

    /// What to do now, `elapsed` after the wake-up started. Called by the device leg's
    /// thread whenever it is free (at the start, after each leg, when woken).
    pub fn next(&mut self, elapsed: Duration) -> Step {
        if let Some(o) = &self.outcome {
            return Step::Finish(o.clone());
        }
        if self.push == Push::Due {
            self.push = Push::InFlight;
            return Step::Push;
        }
        if self.leg != Leg::Idle {
            // Only reached if the thread asks while a leg rings; nothing to start.
            return Step::Wait(self.timeout.saturating_sub(elapsed));
        }
        if let Some(c) = self.queued.take() {
            let uri = c.uri.clone();
            self.leg = Leg::Ringing {
                contact: c,
                fresh: true,
            };
            return Step::Ring { uri, timeout: None };
        }
        let remaining = self.timeout.saturating_sub(elapsed);
        if remaining.is_zero() {
            return self.finish(Outcome::TimedOut);
        }
        if let Some(c) = self.live.take() {
            let uri = c.uri.clone();
            self.leg = Leg::Ringing {
                contact: c,
                fresh: false,
            };
            return Step::Ring {
                uri,
                timeout: Some(remaining),
            };
        }
        match &self.push {
            Push::Failed(why) => {
                let why = why.clone();
                self.finish(Outcome::Failed(why))
            }
            _ => Step::Wait(remaining),
        }
    }

    fn finish(&mut self, o: Outcome) -> Step {
        self.outcome = Some(o.clone());
        Step::Finish(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);
    const S: Duration = Duration::from_secs(1);

    fn c(uri: &str) -> ContactRef {
        ContactRef::new(uri, None)
    }

    fn live(push: bool) -> Device {
        Device::new(Start {
            live: Some(c("sip:a@192.0.2.1:5060")),
            push,
            timeout: T,
        })
    }

    fn asleep() -> Device {
        Device::new(Start {
            live: None,
            push: true,
            timeout: T,
        })
    }

    fn ring(uri: &str, timeout: Option<Duration>) -> Step {
        Step::Ring {
            uri: uri.into(),
            timeout,
        }
    }

    #[test]
    fn same_contact_by_address_and_instance() {
        let a = ContactRef::new("sip:a@192.0.2.1:5060;pn-prid=1", Some("urn:1".into()));
        assert!(a.same_as(&c("sip:a@192.0.2.1;transport=UDP")));
        assert!(a.same_as(&ContactRef::new(
            "sip:b@192.0.2.1:5060",
            Some("urn:1".into())
        )));
        assert!(!a.same_as(&ContactRef::new(
            "sip:a@192.0.2.1:5060",
            Some("urn:2".into())
        )));
        assert!(!a.same_as(&c("sip:a@192.0.2.1:5062")));
        assert!(!a.same_as(&c("sip:a@192.0.2.1:5060;transport=tcp")));
        assert!(c("sips:a@[2001:db8::1]").same_as(&c("sip:a@[2001:DB8::1]:5061;transport=tls")));
        assert!(!c("garbage").same_as(&c("other garbage")));
    }

    #[test]
    fn awake_device_is_pushed_and_rung_at_once() {
        let mut d = live(true);
        assert_eq!(d.next(Duration::ZERO), Step::Push);
        assert!(d.pushed());
        assert_eq!(
            d.next(Duration::ZERO),
            ring("sip:a@192.0.2.1:5060", Some(T))
        );
        assert!(d.ringing());
        assert_eq!(d.on(Event::LegEnded(LegEnd::Answered)), Effect::default());
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
    }

    #[test]
    fn live_leg_is_bounded_by_what_is_left_of_the_timeout() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        assert_eq!(
            d.next(Duration::from_secs(4)),
            ring("sip:a@192.0.2.1:5060", Some(Duration::from_secs(26)))
        );
        d.on(Event::LegEnded(LegEnd::NoAnswer));
        assert_eq!(d.next(T), Step::Finish(Outcome::TimedOut));
    }

    #[test]
    fn register_from_the_same_contact_keeps_the_ringing_leg() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        let e = d.on(Event::Registered(ContactRef::new(
            "sip:a@192.0.2.1:5060;pn-prid=x",
            Some("urn:1".into()),
        )));
        assert_eq!(e, Effect::default(), "no cancel, no second INVITE");
        assert!(d.ringing());
        assert!(d.registered());
        d.on(Event::LegEnded(LegEnd::Answered));
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
    }

    #[test]
    fn register_from_a_new_contact_cancels_the_stale_leg_then_rings_it() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        let e = d.on(Event::Registered(c("sip:a@192.0.2.7:6000")));
        assert!(e.cancel_leg);
        assert!(
            !d.ringing(),
            "at most one ringing leg: the stale one is going"
        );
        // A second REGISTER while the stale leg ends: the newest contact wins.
        assert_eq!(
            d.on(Event::Registered(c("sip:a@192.0.2.8:6000"))),
            Effect::default()
        );
        // Whatever the cancelled leg reports is not the device's end.
        d.on(Event::LegEnded(LegEnd::Unreachable));
        assert_eq!(d.next(S), ring("sip:a@192.0.2.8:6000", None));
        d.on(Event::LegEnded(LegEnd::Answered));
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
    }

    #[test]
    fn cancelled_leg_that_answered_anyway_wins() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        d.on(Event::Registered(c("sip:a@192.0.2.7:6000")));
        d.on(Event::LegEnded(LegEnd::Answered));
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
    }

    #[test]
    fn failed_push_does_not_end_a_ringing_live_leg() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        assert_eq!(d.on(Event::PushFailed("no app".into())), Effect::default());
        assert!(d.ringing());
        d.on(Event::LegEnded(LegEnd::Answered));
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
    }

    #[test]
    fn failed_push_before_the_live_leg_still_rings_it() {
        let mut d = live(true);
        assert_eq!(d.next(Duration::ZERO), Step::Push);
        let e = d.on(Event::PushFailed("no app".into()));
        assert!(e.wake);
        assert_eq!(
            d.next(Duration::ZERO),
            ring("sip:a@192.0.2.1:5060", Some(T))
        );
    }

    #[test]
    fn failed_push_and_dead_live_contact_give_up() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        d.on(Event::PushFailed("no app".into()));
        d.on(Event::LegEnded(LegEnd::Unreachable));
        assert_eq!(d.next(S), Step::Finish(Outcome::Failed("no app".into())));
    }

    #[test]
    fn dead_live_contact_waits_for_the_register() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        d.on(Event::PushSent);
        d.on(Event::LegEnded(LegEnd::Unreachable));
        assert_eq!(d.next(S), Step::Wait(T - S));
        let e = d.on(Event::Registered(c("sip:a@192.0.2.7:6000")));
        assert_eq!(
            e,
            Effect {
                cancel_leg: false,
                wake: true
            }
        );
        assert_eq!(d.next(2 * S), ring("sip:a@192.0.2.7:6000", None));
    }

    #[test]
    fn sleeping_device_is_pushed_waits_and_rings_its_register() {
        let mut d = asleep();
        assert_eq!(d.next(Duration::ZERO), Step::Push);
        assert_eq!(d.next(Duration::ZERO), Step::Wait(T));
        d.on(Event::PushSent);
        assert!(d.on(Event::Registered(c("sip:a@192.0.2.7:6000"))).wake);
        assert_eq!(d.next(S), ring("sip:a@192.0.2.7:6000", None));
        d.on(Event::LegEnded(LegEnd::NoAnswer));
        assert_eq!(d.next(S), Step::Finish(Outcome::NotAnswered));
        assert!(d.pushed());
    }

    #[test]
    fn a_failed_push_is_remembered_while_the_live_leg_rings_on() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        assert_eq!(d.push_failure(), None);
        d.on(Event::PushFailed("no app".into()));
        d.on(Event::LegEnded(LegEnd::NoAnswer));
        assert_eq!(d.next(T), Step::Finish(Outcome::TimedOut));
        assert_eq!(d.push_failure(), Some(&"no app".into()));
    }

    #[test]
    fn sleeping_device_failed_push_gives_up_at_once() {
        let mut d = asleep();
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        assert!(d.on(Event::PushFailed("invalid token".into())).wake);
        assert_eq!(
            d.next(S),
            Step::Finish(Outcome::Failed("invalid token".into()))
        );
    }

    #[test]
    fn sleeping_device_times_out() {
        let mut d = asleep();
        d.next(Duration::ZERO);
        assert_eq!(d.next(T), Step::Finish(Outcome::TimedOut));
        // Late events change nothing.
        assert_eq!(
            d.on(Event::Registered(c("sip:a@192.0.2.7:6000"))),
            Effect::default()
        );
        assert_eq!(d.next(T + S), Step::Finish(Outcome::TimedOut));
    }

    #[test]
    fn register_before_the_live_leg_starts_rings_the_new_contact() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.on(Event::Registered(c("sip:a@192.0.2.7:6000")));
        assert_eq!(d.next(S), ring("sip:a@192.0.2.7:6000", None));
        d.on(Event::LegEnded(LegEnd::Unreachable));
        assert_eq!(
            d.next(S),
            Step::Wait(T - S),
            "the stale live contact is never rung"
        );
    }

    #[test]
    fn recent_device_is_rung_without_push_and_pushed_if_unreachable() {
        let mut d = live(false);
        assert_eq!(
            d.next(Duration::ZERO),
            ring("sip:a@192.0.2.1:5060", Some(T))
        );
        assert!(!d.pushed());
        d.on(Event::LegEnded(LegEnd::Unreachable));
        assert_eq!(d.next(S), Step::Push);
        assert_eq!(d.next(S), Step::Wait(T - S));
    }

    #[test]
    fn recent_device_that_answers_is_never_pushed() {
        let mut d = live(false);
        d.next(Duration::ZERO);
        d.on(Event::LegEnded(LegEnd::Answered));
        assert_eq!(d.next(S), Step::Finish(Outcome::Answered));
        assert!(!d.pushed());
    }

    #[test]
    fn skip_without_a_live_contact_still_pushes() {
        let mut d = Device::new(Start {
            live: None,
            push: false,
            timeout: T,
        });
        assert_eq!(d.next(Duration::ZERO), Step::Push);
    }

    #[test]
    fn busy_declines_and_hangup_ends() {
        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        d.on(Event::LegEnded(LegEnd::Busy));
        assert_eq!(d.next(S), Step::Finish(Outcome::Declined));

        let mut d = live(true);
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        d.on(Event::LegEnded(LegEnd::Hangup));
        assert_eq!(d.next(S), Step::Finish(Outcome::Hangup));

        let mut d = asleep();
        d.next(Duration::ZERO);
        d.next(Duration::ZERO);
        assert!(d.on(Event::Hangup).wake);
        assert_eq!(d.next(S), Step::Finish(Outcome::Hangup));
    }

    #[test]
    fn push_sent_after_failure_or_skip_changes_nothing() {
        let mut d = live(false);
        d.on(Event::PushSent);
        assert!(!d.pushed());
        let mut d = asleep();
        d.next(Duration::ZERO);
        d.on(Event::PushSent);
        assert!(d.pushed());
    }
}
