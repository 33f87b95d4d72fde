//! Late wake-ups (issue 12, item 1): a phone pushed for a call that ended before it registered
//! gets, when it registers within `late_wake_window`, an INVITE from the same caller followed at
//! once by a CANCEL whose RFC 3326 Reason says how the call ended, and never a second VoIP push.

use std::time::Duration;

use res_push_itests::push_env::{Mocks, setup};
use res_push_itests::{Asterisk, Register, SipExchange, field, free_udp_port, wait_for};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);

const CALLER: &str = include_str!("../sipp/caller.xml");
const CALLER_CANCEL: &str = include_str!("../sipp/caller-cancel.xml");
const DESK: &str = include_str!("../sipp/desk.xml");
/// The woken app's SIP stack: takes an INVITE with 180 and records the CANCEL that follows.
const LATE_PHONE: &str = include_str!("../sipp/late-phone.xml");
/// The same, answering with 100 Trying only.
const LATE_PHONE_TRYING: &str = include_str!("../sipp/late-phone-trying.xml");

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

/// alice's phone registers with push parameters, then sleeps (nothing listens at its contact).
fn sleeping_phone(a: &Asterisk) {
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
}

/// The phone wakes after the call: its SIP stack listens on a new port and registers there.
fn wake_late(a: &Asterisk, phone_args: &[&str]) -> SipExchange {
    wake_late_with(a, LATE_PHONE, phone_args)
}

fn wake_late_with(a: &Asterisk, scenario: &str, phone_args: &[&str]) -> SipExchange {
    let port = free_udp_port();
    let phone = a.sipp("late", scenario, port, phone_args);
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Register::new("alice", &pn(TOKEN));
    r.contact_port = Some(port);
    assert!(a.register(&r).ok);
    phone.wait()
}

/// The message block of `ex`'s trace whose first line starts with `start`.
fn message<'a>(ex: &'a SipExchange, start: &str) -> Option<&'a str> {
    ex.trace
        .split("----------------------------------------------- ")
        .find(|b| {
            b.lines()
                .skip(1)
                .find(|l| !l.trim().is_empty() && !l.contains("message "))
                .is_some_and(|l| l.trim_start().starts_with(start))
        })
}

fn header<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

fn pushes(mocks: &Mocks, kind: &str) -> usize {
    mocks
        .apns
        .requests()
        .iter()
        .filter(|r| {
            r.device_token.as_deref() == Some(TOKEN) && r.header("apns-push-type") == Some(kind)
        })
        .count()
}

/// INVITE then CANCEL, From the original caller, the CANCEL's SIP Reason exactly `reason`.
fn assert_invite_then_cancel(phone: &SipExchange, reason: &str, a: &Asterisk) {
    assert!(
        phone.ok,
        "late INVITE/CANCEL:\n{}\n{}",
        phone.trace,
        a.log()
    );
    let invite = message(phone, "INVITE sip:").expect("INVITE");
    let from = header(invite, "From");
    assert!(
        from.len() == 1 && from[0].contains("\"Bob\"") && from[0].contains("<sip:bob@"),
        "From of the late INVITE: {from:?}\n{invite}"
    );
    let cancel = message(phone, "CANCEL sip:").expect("CANCEL");
    let sip_reasons: Vec<&str> = header(cancel, "Reason")
        .into_iter()
        .filter(|r| r.starts_with("SIP"))
        .collect();
    assert_eq!(sip_reasons, [reason], "{cancel}");
    let (invited, cancelled) = (
        phone.logged_at("INVITE sip:").expect("INVITE time"),
        phone.logged_at("CANCEL sip:").expect("CANCEL time"),
    );
    assert!(invited <= cancelled);
    // Followed at once: the app never sees a ringing call that waits for anything.
    assert!(
        cancelled.duration_since(invited).unwrap_or_default() < Duration::from_secs(5),
        "CANCEL {cancelled:?} long after INVITE {invited:?}"
    );
    assert_eq!(
        phone.trace.matches("INVITE sip:").count(),
        1,
        "{}",
        phone.trace
    );
}

#[test]
fn late_register_after_an_answer_elsewhere_gets_invite_and_cancel_completed_elsewhere() {
    let (mocks, a, _sidecar) = setup("late-elsewhere", "");
    let mut ami = a.ami();
    sleeping_phone(&a);
    // A desk phone answers while the mobile sleeps.
    let desk_port = free_udp_port();
    let desk = a.sipp("desk", DESK, desk_port, &[]);
    let mut reg = Register::new("alice", "");
    reg.contact_port = Some(desk_port);
    assert!(a.register(&reg).ok);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("voip"))
            .is_some()
    );
    let (desk, caller) = (desk.wait(), caller.wait());
    assert!(desk.ok && caller.ok, "{}\n{}", desk.trace, caller.trace);
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("the mobile's part of the call ended");

    // The app, woken by the push, registers only now.
    let phone = wake_late(&a, &[]);
    assert_invite_then_cancel(
        &phone,
        "SIP;cause=200;text=\"Call completed elsewhere\"",
        &a,
    );
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushLateWake"))
        .expect("PushLateWake");
    assert_eq!(field(&ev, "Reason"), Some("answered-elsewhere"));
    // Never a second VoIP push: the call push, and the cancel as an alert.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pushes(&mocks, "voip"), 1);
    assert_eq!(pushes(&mocks, "alert"), 1);

    // At most once per call and device: a second REGISTER brings nothing.
    let again = wake_late(&a, &["-timeout", "4s"]);
    assert!(
        message(&again, "INVITE sip:").is_none(),
        "second late INVITE:\n{}",
        again.trace
    );
}

#[test]
fn late_register_after_the_caller_hung_up_gets_invite_and_cancel_487() {
    let (mocks, a, _sidecar) = setup("late-hangup", "");
    let mut ami = a.ami();
    sleeping_phone(&a);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("voip"))
            .is_some()
    );
    assert!(caller.wait().ok);
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    assert_eq!(field(&ev, "Reason"), Some("hangup"));

    let phone = wake_late(&a, &[]);
    assert_invite_then_cancel(&phone, "SIP;cause=487;text=\"Request Terminated\"", &a);
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushLateWake"))
        .expect("PushLateWake");
    assert_eq!(field(&ev, "Reason"), Some("terminated"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(pushes(&mocks, "voip"), 1, "never a second VoIP push");
}

#[test]
fn register_after_the_late_wake_window_gets_no_invite() {
    let (mocks, a, _sidecar) = setup("late-window", "late_wake_window = 2");
    let mut ami = a.ami();
    sleeping_phone(&a);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    assert!(caller.wait().ok);
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    // The window (2 s after the call ended) passes before the phone registers.
    std::thread::sleep(Duration::from_secs(3));
    let phone = wake_late(&a, &["-timeout", "4s"]);
    assert!(
        message(&phone, "INVITE sip:").is_none(),
        "INVITE after the window:\n{}",
        phone.trace
    );
    assert!(
        ami.wait_event(Duration::from_millis(500), |p| field(p, "Event")
            == Some("PushLateWake"))
            .is_none()
    );
    assert_eq!(pushes(&mocks, "voip"), 1);
}

#[test]
fn late_wake_window_0_sends_nothing() {
    let (_mocks, a, _sidecar) = setup("late-off", "late_wake_window = 0");
    let mut ami = a.ami();
    sleeping_phone(&a);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    assert!(caller.wait().ok);
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    let phone = wake_late(&a, &["-timeout", "4s"]);
    assert!(
        message(&phone, "INVITE sip:").is_none(),
        "INVITE with the window off:\n{}",
        phone.trace
    );
}

/// An awake phone rung at its live contact saw the call and its CANCEL: when the caller gives
/// up, that CANCEL does not claim "completed elsewhere", and the phone's next REGISTER brings no
/// late INVITE.
#[test]
fn phone_that_rang_needs_no_late_invite_and_its_cancel_is_not_completed_elsewhere() {
    let (_mocks, a, _sidecar) = setup("late-rang", "");
    let mut ami = a.ami();
    let port = free_udp_port();
    let phone = a.sipp("awake", LATE_PHONE, port, &[]);
    let mut r = Register::new("alice", &pn(TOKEN));
    r.contact_port = Some(port);
    assert!(a.register(&r).ok);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(phone.ok && caller.ok, "{}\n{}", phone.trace, caller.trace);
    let cancel = message(&phone, "CANCEL sip:").expect("CANCEL");
    assert!(
        !cancel.contains("cause=200"),
        "the caller gave up; nothing was answered:\n{cancel}"
    );
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    let again = a.sipp("again", LATE_PHONE, port, &["-timeout", "4s"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.register(&r).ok);
    let again = again.wait();
    assert!(
        message(&again, "INVITE sip:").is_none(),
        "late INVITE to a phone that rang:\n{}",
        again.trace
    );
}

/// A phone that answers the late INVITE with 100 Trying only gets the CANCEL at once too
/// (chan_pjsip makes no frame of a 100; the INVITE response hook sees it).
#[test]
fn late_invite_answered_with_100_trying_is_cancelled_at_once() {
    let (_mocks, a, _sidecar) = setup("late-trying", "");
    let mut ami = a.ami();
    sleeping_phone(&a);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    assert!(caller.wait().ok);
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    let phone = wake_late_with(&a, LATE_PHONE_TRYING, &[]);
    assert!(phone.ok, "{}\n{}", phone.trace, a.log());
    let cancel = message(&phone, "CANCEL sip:").expect("CANCEL");
    assert!(
        header(cancel, "Reason").contains(&"SIP;cause=487;text=\"Request Terminated\""),
        "{cancel}"
    );
    let (invited, cancelled) = (
        phone.logged_at("INVITE sip:").expect("INVITE time"),
        phone.logged_at("CANCEL sip:").expect("CANCEL time"),
    );
    assert!(
        cancelled.duration_since(invited).unwrap_or_default() < Duration::from_secs(5),
        "CANCEL {cancelled:?} long after INVITE {invited:?}"
    );
}

/// Without res_pjsip_rfc3326 (an `autoload = no` configuration that does not load it), res_push
/// writes the "completed elsewhere" Reason itself: on the CANCEL of the leg that lost, and on
/// the late INVITE's CANCEL.
#[test]
fn without_res_pjsip_rfc3326_the_reasons_are_still_there() {
    let (_mocks, a, _sidecar) = setup("late-no3326", "");
    let mut ami = a.ami();
    let out = a.cli("module unload res_pjsip_rfc3326.so");
    assert!(
        !a.cli("module show like rfc3326").contains("Running"),
        "{out}"
    );
    sleeping_phone(&a);
    // The desk phone answers; a second, awake desk (plain contact) rings and is cancelled.
    let (desk_port, other_port) = (free_udp_port(), free_udp_port());
    let desk = a.sipp("desk", DESK, desk_port, &[]);
    let other = a.sipp("other", LATE_PHONE, other_port, &[]);
    for port in [desk_port, other_port] {
        let mut reg = Register::new("alice", "");
        reg.contact_port = Some(port);
        assert!(a.register(&reg).ok);
    }
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let (desk, other, caller) = (desk.wait(), other.wait(), caller.wait());
    assert!(desk.ok && caller.ok, "{}\n{}", desk.trace, caller.trace);
    assert!(other.ok, "{}\n{}", other.trace, a.log());
    let cancel = message(&other, "CANCEL sip:").expect("CANCEL");
    assert_eq!(
        header(cancel, "Reason"),
        ["SIP;cause=200;text=\"Call completed elsewhere\""],
        "{cancel}"
    );
    ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    let phone = wake_late(&a, &[]);
    assert_invite_then_cancel(
        &phone,
        "SIP;cause=200;text=\"Call completed elsewhere\"",
        &a,
    );
}
