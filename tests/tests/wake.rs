//! Call wake-up end to end: a caller (SIPp) dials a mobile user; res_push pushes the sleeping
//! phone through the sidecar to mock APNs; when the mock records the push, the simulated phone
//! (SIPp) registers from a new address and answers; the call connects and ends cleanly.

use std::time::{Duration, Instant};

use res_push_itests::push_env::setup;
use res_push_itests::{Register, field, free_udp_port, wait_for};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

/// The caller: INVITE `[service]` as bob, expect an answer, hold 1 s, hang up.
const CALLER: &str = include_str!("../sipp/caller.xml");
/// The woken phone's SIP stack: answers one INVITE, then takes the BYE.
const PHONE: &str = include_str!("../sipp/phone.xml");

#[test]
fn sleeping_phone_is_woken_and_answers() {
    let (mocks, a, _sidecar) = setup("wake-mobile", "");
    let mut ami = a.ami();
    // The phone registers with push parameters, then sleeps (nothing listens on that port).
    let sleeping = Register::new("alice", &pn(TOKEN));
    assert!(a.register(&sleeping).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");

    let t0 = Instant::now();
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);

    // The push arrives at the (mock) APNs: a VoIP push carrying the caller and a call UUID.
    let push = mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(TOKEN))
        .expect("call push");
    let pushed_at = t0.elapsed();
    assert_eq!(push.header("apns-push-type"), Some("voip"));
    let payload = push.json.clone().expect("payload");
    assert!(
        payload.to_string().contains("bob") || payload.to_string().contains("Bob"),
        "{payload}"
    );

    // The phone wakes: its SIP stack listens on a new port and registers from there.
    let phone_port = free_udp_port();
    let phone = a.sipp("phone", PHONE, phone_port, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut wake = Register::new("alice", &pn(TOKEN));
    wake.contact_port = Some(phone_port);
    assert!(a.register(&wake).ok);
    let registered_at = t0.elapsed();

    let phone = phone.wait();
    let caller = caller.wait();
    assert!(phone.ok, "phone:\n{}", phone.trace);
    assert!(caller.ok, "caller:\n{}\n{}", caller.trace, a.log());
    assert_eq!(
        phone.trace.matches("INVITE sip:").count(),
        1,
        "exactly one INVITE reached the phone"
    );

    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushWakeRegistered"))
        .expect("PushWakeRegistered");
    assert_eq!(field(&ev, "Endpoint"), Some("alice"));
    println!(
        "timeline: call in 0 ms, push sent {} ms, REGISTER in {} ms, answered and hung up {} ms; waited {} ms",
        pushed_at.as_millis(),
        registered_at.as_millis(),
        t0.elapsed().as_millis(),
        field(&ev, "WaitMs").unwrap_or("?")
    );
    let status = a.cli("push show status");
    assert_eq!(
        res_push_itests::status_field(&status, "Woken and rung").as_deref(),
        Some("1"),
        "{status}"
    );
    assert_eq!(
        res_push_itests::status_field(&status, "Cancel pushes").as_deref(),
        Some("0"),
        "{status}"
    );
    // The device answered: no cancel push.
    std::thread::sleep(Duration::from_millis(500));
    let pushes: Vec<_> = mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| r.device_token.as_deref() == Some(TOKEN))
        .collect();
    assert_eq!(
        pushes.len(),
        1,
        "{:?}",
        pushes
            .iter()
            .map(|r| r.header("apns-push-type"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn unanswered_wake_times_out_and_cancels() {
    let (mocks, a, _sidecar) = setup("wake-timeout", "wake_timeout = 2");
    let mut ami = a.ami();
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");

    // The caller expects the call to fail (no answer): SIPp gets a final error, not a 200.
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushWakeTimeout"))
        .expect("PushWakeTimeout");
    assert_eq!(field(&ev, "Timeout"), Some("2"));
    let caller = caller.wait();
    assert!(!caller.ok, "nobody answered, the caller must not see a 200");
    // The dialplan reads the outcome like any unanswered call.
    let log = wait_for(WAIT, || {
        let l = a.log();
        l.contains("mobile DIALSTATUS=").then_some(l)
    })
    .unwrap_or_default();
    assert!(log.contains("mobile DIALSTATUS=NOANSWER"), "{log}");
    // Cancel as an alert push, never a second VoIP push.
    let cancel = mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("cancel push");
    assert_eq!(cancel.device_token.as_deref(), Some(TOKEN));
    let voip = mocks
        .apns
        .requests()
        .iter()
        .filter(|r| r.header("apns-push-type") == Some("voip"))
        .count();
    assert_eq!(voip, 1);
}

#[test]
fn invalid_token_fails_fast_and_removes_the_binding() {
    let (mocks, a, _sidecar) = setup("wake-invalid", "wake_timeout = 20");
    let mut ami = a.ami();
    mocks
        .apns
        .script(TOKEN, vec![res_push_mocks::Behavior::Unregistered]);
    // A phone asleep long enough for its contact to expire: only the push could reach it
    // (with a live contact, a failed push does not end the leg ringing it: see live.rs).
    let mut short = Register::new("alice", &pn(TOKEN));
    short.expires = 1;
    assert!(a.register(&short).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
    wait_for(WAIT, || {
        (!a.cli("pjsip show contacts").contains("alice/")).then_some(())
    })
    .expect("contact expired");

    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let ev = ami.wait_event(WAIT, |p| {
        matches!(
            field(p, "Event"),
            Some("PushWakeFailed") | Some("PushWakeTimeout")
        )
    });
    // Given up on the push's failure, not by waiting out wake_timeout.
    let ev = ev.expect("a wake outcome");
    assert_eq!(field(&ev, "Event"), Some("PushWakeFailed"), "{ev:?}");
    assert!(
        field(&ev, "Reason").is_some_and(|r| r.contains("Unregistered")),
        "{ev:?}"
    );
    let caller = caller.wait();
    assert!(!caller.ok);
    let log = wait_for(WAIT, || {
        let l = a.log();
        l.contains("mobile DIALSTATUS=").then_some(l)
    })
    .unwrap_or_default();
    assert!(log.contains("mobile DIALSTATUS=CHANUNAVAIL"), "{log}");
    let gone = wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("0 push binding(s)")
            .then_some(())
    });
    assert!(gone.is_some(), "{}", a.cli("push show bindings alice"));
}

const DESK: &str = include_str!("../sipp/desk.xml");
const CALLER_CANCEL: &str = include_str!("../sipp/caller-cancel.xml");
const TOKEN2: &str = "22fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

fn pushes(mocks: &res_push_itests::push_env::Mocks, token: &str, kind: &str) -> usize {
    mocks
        .apns
        .requests()
        .iter()
        .filter(|r| {
            r.device_token.as_deref() == Some(token) && r.header("apns-push-type") == Some(kind)
        })
        .count()
}

/// The woken phone: its SIP stack listens on a new port, then it registers with that contact.
fn wake_phone(a: &res_push_itests::Asterisk, token: &str) -> res_push_itests::SippRun {
    let port = free_udp_port();
    let phone = a.sipp("phone", PHONE, port, &[]);
    // Give SIPp a moment to bind before the REGISTER makes Asterisk send the INVITE there.
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Register::new("alice", &pn(token));
    r.contact_port = Some(port);
    assert!(a.register(&r).ok);
    phone
}

fn voip_pushed(mocks: &res_push_itests::push_env::Mocks) -> bool {
    mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("voip"))
        .is_some()
}

fn bind(a: &res_push_itests::Asterisk, token: &str) {
    assert!(a.register(&Register::new("alice", &pn(token))).ok);
    let tail = &token[token.len() - 6..];
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains(tail)
            .then_some(())
    })
    .expect("binding");
}

#[test]
fn desk_phone_rings_at_once_and_its_answer_cancels_the_mobile() {
    let (mocks, a, _sidecar) = setup("wake-desk", "");
    let mut ami = a.ami();
    bind(&a, TOKEN);
    // A desk phone: plain contact, no push parameters; it answers after 1.5 s of ringing.
    let desk_port = free_udp_port();
    let desk = a.sipp("desk", DESK, desk_port, &[]);
    let mut reg = Register::new("alice", "");
    reg.contact_port = Some(desk_port);
    assert!(a.register(&reg).ok);

    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    // The mobile is pushed while the desk rings; it never wakes.
    assert!(voip_pushed(&mocks));
    let (desk, caller) = (desk.wait(), caller.wait());
    assert!(desk.ok, "desk:\n{}", desk.trace);
    assert!(caller.ok, "caller:\n{}", caller.trace);
    // Answered elsewhere: the mobile gets a cancel, as an alert push.
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    assert_eq!(field(&ev, "Endpoint"), Some("alice"));
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
            .is_some()
    );
    assert_eq!(pushes(&mocks, TOKEN, "voip"), 1);
}

#[test]
fn caller_hanging_up_cancels_the_pushed_device() {
    let (mocks, a, _sidecar) = setup("wake-caller-cancel", "");
    let mut ami = a.ami();
    bind(&a, TOKEN);
    let caller = a.sipp("caller", CALLER_CANCEL, free_udp_port(), &["-s", "mobile"]);
    assert!(voip_pushed(&mocks));
    let caller = caller.wait();
    assert!(caller.ok, "caller:\n{}", caller.trace);
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushCancel"))
        .expect("PushCancel");
    assert_eq!(field(&ev, "Reason"), Some("hangup"));
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
            .is_some()
    );
    assert_eq!(pushes(&mocks, TOKEN, "voip"), 1);
}

#[test]
fn two_devices_are_pushed_and_the_one_that_answers_wins() {
    let (mocks, a, _sidecar) = setup("wake-two", "");
    bind(&a, TOKEN);
    bind(&a, TOKEN2);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    for t in [TOKEN, TOKEN2] {
        assert!(
            mocks
                .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(t))
                .is_some(),
            "push to {t}"
        );
    }
    // Only the second device wakes; it does not wait for the first.
    let phone = wake_phone(&a, TOKEN2);
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(
        phone.ok && caller.ok,
        "phone:\n{}\ncaller:\n{}",
        phone.trace,
        caller.trace
    );
    // The device that did not answer gets its cancel; the one that answered does not.
    let cancel = mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("cancel");
    assert_eq!(cancel.device_token.as_deref(), Some(TOKEN));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pushes(&mocks, TOKEN2, "alert"), 0);
    assert_eq!(
        (
            pushes(&mocks, TOKEN, "voip"),
            pushes(&mocks, TOKEN2, "voip")
        ),
        (1, 1)
    );
}

#[test]
fn three_registers_make_exactly_one_invite() {
    let (mocks, a, _sidecar) = setup("wake-three", "");
    bind(&a, TOKEN);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    assert!(voip_pushed(&mocks));
    let port = free_udp_port();
    let phone = a.sipp("phone", PHONE, port, &[]);
    std::thread::sleep(Duration::from_millis(300));
    // Apps often register several times on wake-up (network change, app start, refresh).
    for _ in 0..3 {
        let mut r = Register::new("alice", &pn(TOKEN));
        r.contact_port = Some(port);
        assert!(a.register(&r).ok);
    }
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(
        phone.ok && caller.ok,
        "phone:\n{}\ncaller:\n{}",
        phone.trace,
        caller.trace
    );
    assert_eq!(
        phone.trace.matches("INVITE sip:").count(),
        1,
        "{}",
        phone.trace
    );
}

#[test]
fn pushwake_application_sets_status_and_contacts() {
    let (mocks, a, _sidecar) = setup("wake-app", "");
    bind(&a, TOKEN);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "wake"]);
    assert!(voip_pushed(&mocks));
    let phone = wake_phone(&a, TOKEN);
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(
        phone.ok && caller.ok,
        "phone:\n{}\ncaller:\n{}\n{}",
        phone.trace,
        caller.trace,
        a.log()
    );
    assert!(a.log().contains("alice: woken after"), "{}", a.log());
}

#[test]
fn queue_rings_a_sleeping_mobile_member() {
    let (mocks, a, _sidecar) = setup("wake-queue", "");
    // No binding yet: nothing can wake alice, so her Push/ device is as unavailable as PJSIP.
    let state = |a: &res_push_itests::Asterisk| {
        let mut ami = a.ami();
        let r = ami.action("Getvar", &[("Variable", "DEVICE_STATE(Push/alice)")]);
        field(&r[0], "Value").unwrap_or("").to_string()
    };
    assert_eq!(state(&a), "UNAVAILABLE");
    bind(&a, TOKEN);
    // With a binding and no contact registered (she is asleep), the queue sees her available.
    assert!(
        a.register(&{
            let mut r = Register::new("alice", &pn(TOKEN));
            r.expires = 0;
            r
        })
        .ok
    );
    bind(&a, TOKEN);
    assert_eq!(state(&a), "NOT_INUSE");

    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "queue"]);
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("voip"))
            .is_some(),
        "{}",
        a.log()
    );
    let phone = wake_phone(&a, TOKEN);
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(
        phone.ok && caller.ok,
        "phone:\n{}\ncaller:\n{}",
        phone.trace,
        caller.trace
    );
}

#[test]
fn plain_dial_pushes_the_contact_when_enabled() {
    let (mocks, a, _sidecar) = setup("wake-plain", "push_on_plain_dial = yes");
    // The phone's SIP stack is reachable at its registered contact (still awake, or woken by
    // the push in time): the INVITE goes there, and the push goes out for it.
    let port = free_udp_port();
    let phone = a.sipp("phone", PHONE, port, &[]);
    let mut r = Register::new("alice", &pn(TOKEN));
    r.contact_port = Some(port);
    assert!(a.register(&r).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");

    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "plain"]);
    let push = mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(TOKEN))
        .expect("push for the INVITE");
    assert_eq!(push.header("apns-push-type"), Some("voip"));
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(
        phone.ok && caller.ok,
        "phone:\n{}\ncaller:\n{}",
        phone.trace,
        caller.trace
    );
    assert_eq!(pushes(&mocks, TOKEN, "voip"), 1, "one push per call");
}
