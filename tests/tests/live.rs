//! Phones in every state: awake devices ring at once beside their push, a REGISTER from the
//! same contact keeps the ringing leg, one from a new contact cancels the stale leg first, a
//! failed push does not end a live leg, `Contact: *` logs a user out, a moved device fits in a
//! full AOR, and INVITEs carry no push parameters in their Request-URI.

use std::time::{Duration, Instant};

use res_push_itests::push_env::{Mocks, setup};
use res_push_itests::{
    Asterisk, Options, Register, SipExchange, SippRun, binding_count, field, free_udp_port,
    wait_for,
};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

const CALLER: &str = include_str!("../sipp/caller.xml");
const PHONE: &str = include_str!("../sipp/phone.xml");
const PHONE_SLOW: &str = include_str!("../sipp/phone-slow.xml");
const PHONE_STALE: &str = include_str!("../sipp/phone-stale.xml");

/// Registers `user`'s device with its Contact at `contact_port` (where a SIPp phone listens).
fn register_at(a: &Asterisk, user: &str, contact_port: u16) {
    let mut r = Register::new(user, &pn(TOKEN));
    r.contact_port = Some(contact_port);
    let ex = a.register(&r);
    assert!(ex.ok, "REGISTER:\n{}", ex.trace);
}

fn wait_binding(a: &Asterisk, user: &str) {
    wait_for(WAIT, || {
        a.cli(&format!("push show bindings {user}"))
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
}

/// An awake phone: SIPp runs `scenario` on a port of its own, registered there with push
/// parameters; then bob calls `exten`. Returns the running phone and caller.
fn awake_phone_called(
    a: &Asterisk,
    scenario: &str,
    phone_args: &[&str],
    exten: &str,
) -> (SippRun, SippRun, u16) {
    let port = free_udp_port();
    let phone = a.sipp("phone", scenario, port, phone_args);
    register_at(a, "alice", port);
    wait_binding(a, "alice");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", exten]);
    (phone, caller, port)
}

fn call_pushes(mocks: &Mocks) -> usize {
    mocks
        .apns
        .requests()
        .iter()
        .filter(|r| {
            r.device_token.as_deref() == Some(TOKEN) && r.header("apns-push-type") == Some("voip")
        })
        .count()
}

/// The first line of each INVITE a SIPp phone received (retransmissions included).
fn invites(ex: &SipExchange) -> Vec<String> {
    ex.trace
        .lines()
        .filter(|l| l.starts_with("INVITE sip:"))
        .map(str::to_string)
        .collect()
}

fn assert_no_push_params(invite: &str) {
    assert!(
        !invite.contains("pn-") && !invite.contains("push-token"),
        "push parameters left in the Request-URI: {invite}"
    );
    assert!(
        invite.contains("transport=udp"),
        "other URI parameters stay: {invite}"
    );
}

#[test]
fn awake_phone_rings_at_once_beside_its_push() {
    let (mocks, a, _sidecar) = setup("live-awake", "wake_timeout = 20");
    let mut ami = a.ami();
    let port = free_udp_port();
    let phone = a.sipp("phone", PHONE, port, &[]);
    register_at(&a, "alice", port);
    wait_binding(&a, "alice");

    let t0 = Instant::now();
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let phone = phone.wait();
    let answered = t0.elapsed();
    let caller = caller.wait();
    assert!(phone.ok, "phone:\n{}\n{}", phone.trace, a.log());
    assert!(caller.ok, "caller:\n{}", caller.trace);
    // Rung without waiting for a REGISTER the awake phone never sends.
    assert!(
        answered < Duration::from_secs(5),
        "answered after {answered:?}"
    );
    let inv = invites(&phone);
    assert_eq!(inv.len(), 1, "{inv:?}");
    assert_no_push_params(&inv[0]);
    // The push went too, in parallel: a sleeping phone with the same contact would wake.
    assert!(
        mocks
            .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(TOKEN))
            .is_some()
    );
    assert!(
        ami.wait_event(Duration::from_millis(500), |p| field(p, "Event")
            == Some("PushWakeRegistered"))
            .is_none(),
        "no REGISTER happened"
    );
}

#[test]
fn failed_push_does_not_end_a_leg_ringing_a_live_contact() {
    let (mocks, a, _sidecar) = setup("live-failed-push", "wake_timeout = 20");
    mocks
        .apns
        .script(TOKEN, vec![res_push_mocks::Behavior::Unregistered]);
    let (phone, caller, _) = awake_phone_called(&a, PHONE_SLOW, &[], "mobile");
    let phone = phone.wait();
    let caller = caller.wait();
    assert!(phone.ok, "phone:\n{}\n{}", phone.trace, a.log());
    assert!(caller.ok, "caller:\n{}\n{}", caller.trace, a.log());
    assert!(
        a.log().contains("failed: invalid token"),
        "the push did fail"
    );
}

#[test]
fn register_from_the_same_contact_keeps_the_ringing_leg() {
    let (_mocks, a, _sidecar) = setup("live-same", "wake_timeout = 20");
    let (phone, caller, port) = awake_phone_called(&a, PHONE_SLOW, &[], "mobile");
    // The push woke the phone, which registers again: same contact, while it rings.
    std::thread::sleep(Duration::from_millis(800));
    register_at(&a, "alice", port);
    let phone = phone.wait();
    let caller = caller.wait();
    assert!(phone.ok, "phone:\n{}\n{}", phone.trace, a.log());
    assert!(caller.ok, "caller:\n{}", caller.trace);
    assert_eq!(
        invites(&phone).len(),
        1,
        "no second INVITE:\n{}",
        phone.trace
    );
}

#[test]
fn register_from_a_new_contact_cancels_the_stale_leg_then_rings_the_new_one() {
    let (_mocks, a, _sidecar) = setup("live-moved", "wake_timeout = 20");
    let old_port = free_udp_port();
    let old = a.sipp("old", PHONE_STALE, old_port, &[]);
    register_at(&a, "alice", old_port);
    wait_binding(&a, "alice");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    std::thread::sleep(Duration::from_millis(800));
    let new_port = free_udp_port();
    let new = a.sipp("new", PHONE, new_port, &[]);
    std::thread::sleep(Duration::from_millis(200));
    register_at(&a, "alice", new_port);
    let (old, new, caller) = (old.wait(), new.wait(), caller.wait());
    assert!(
        old.ok,
        "stale leg not cancelled:\n{}\n{}",
        old.trace,
        a.log()
    );
    assert!(new.ok, "new contact:\n{}\n{}", new.trace, a.log());
    assert!(caller.ok, "caller:\n{}", caller.trace);
    assert_eq!(invites(&new).len(), 1);
    assert_no_push_params(&invites(&new)[0]);
    // At most one ringing leg per device: the stale one was cancelled before the new rang.
    let cancelled = old.logged_at("CANCEL sip:").expect("CANCEL time");
    let rung = new.logged_at("INVITE sip:").expect("INVITE time");
    assert!(
        cancelled <= rung,
        "CANCEL {cancelled:?} after INVITE {rung:?}"
    );
}

#[test]
fn recently_registered_device_is_rung_without_a_push() {
    let (mocks, a, _sidecar) = setup("live-skip", "push_skip_recent = 60");
    let (phone, caller, _) = awake_phone_called(&a, PHONE, &[], "mobile");
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(phone.ok, "phone:\n{}\n{}", phone.trace, a.log());
    assert!(caller.ok, "caller:\n{}", caller.trace);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        call_pushes(&mocks),
        0,
        "pushed although it registered just now"
    );
}

#[test]
fn without_ring_live_contact_the_device_waits_for_its_register() {
    let (mocks, a, _sidecar) = setup("live-off", "ring_live_contact = no\nwake_timeout = 2");
    let (phone, caller, _) = awake_phone_called(&a, PHONE, &["-timeout", "6s"], "mobile");
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(!caller.ok, "nobody re-registered: no answer");
    assert!(invites(&phone).is_empty(), "{}", phone.trace);
    assert_eq!(call_pushes(&mocks), 1);
}

#[test]
fn plain_dial_sends_no_push_parameters_in_the_request_uri() {
    let (_mocks, a, _sidecar) = setup("live-plain-strip", "");
    let (phone, caller, _) = awake_phone_called(&a, PHONE, &[], "plain");
    let (phone, caller) = (phone.wait(), caller.wait());
    assert!(phone.ok, "phone:\n{}\n{}", phone.trace, a.log());
    assert!(caller.ok);
    assert_no_push_params(&invites(&phone)[0]);
}

#[test]
fn strip_pn_params_off_keeps_them() {
    let (_mocks, a, _sidecar) = setup("live-nostrip", "strip_pn_params = no");
    let (phone, caller, _) = awake_phone_called(&a, PHONE, &[], "plain");
    let (phone, _caller) = (phone.wait(), caller.wait());
    assert!(invites(&phone)[0].contains("pn-prid="), "{}", phone.trace);
}

/// `Contact: *` with `Expires: 0` (a user logging out) removes every binding of the AOR.
#[test]
fn star_contact_unregisters_every_binding() {
    let a = Asterisk::start("live-star", Options::default());
    let token2 = "22fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    assert!(a.register(&Register::new("alice", &pn(token2))).ok);
    wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings alice")) == 2).then_some(())
    })
    .expect("two bindings");
    for compact in [false, true] {
        let header = if compact { "m" } else { "Contact" };
        let scenario = format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="unregister-all">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:alice@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:alice@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      {header}: *
      Max-Forwards: 70
      Expires: 0
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="5000"/>
</scenario>
"#
        );
        assert!(a.sipp("star", &scenario, free_udp_port(), &[]).wait().ok);
        let gone = wait_for(WAIT, || {
            (binding_count(&a.cli("push show bindings alice")) == 0).then_some(())
        });
        assert!(gone.is_some(), "{}", a.cli("push show bindings alice"));
        // Again with the compact form.
        assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
        wait_for(WAIT, || {
            (binding_count(&a.cli("push show bindings alice")) == 1).then_some(())
        })
        .expect("bound again");
    }
}

fn full_aor(name: &str, remove_existing: &str) -> Asterisk {
    Asterisk::start(
        name,
        Options {
            pjsip_append: format!(
                "\n[carol]\ntype = endpoint\ncontext = default\ndisallow = all\nallow = ulaw\naors = carol\n\
                 \n[carol]\ntype = aor\nmax_contacts = 1\nremove_existing = {remove_existing}\nminimum_expiration = 1\n"
            ),
            ..Options::default()
        },
    )
}

/// A woken phone registers from a new address with the same push parameters into an AOR
/// whose one contact slot its stale contact holds.
fn moved_device_fits(remove_existing: &str) {
    let a = full_aor(&format!("live-full-{remove_existing}"), remove_existing);
    let first = Register::new("carol", &pn(TOKEN));
    assert!(a.register(&first).ok);
    wait_binding(&a, "carol");
    let moved = Register::new("carol", &pn(TOKEN));
    let ex = a.register(&moved);
    assert!(
        ex.ok,
        "woken phone refused: {}\n{}",
        ex.status_line(),
        a.log()
    );
    let contacts = a.cli("pjsip show contacts");
    assert!(
        contacts.contains(&format!(":{}", moved.port))
            && !contacts.contains(&format!(":{}", first.port)),
        "{contacts}"
    );
    assert_eq!(binding_count(&a.cli("push show bindings carol")), 1);

    // A stale contact the registry no longer knows (an operator removed the binding) is the
    // same device too.
    a.cli("push delete binding carol");
    let again = Register::new("carol", &pn(TOKEN));
    let ex = a.register(&again);
    assert!(ex.ok, "{}\n{}", ex.status_line(), a.log());
    // Another device is still refused by max_contacts when remove_existing = no.
    if remove_existing == "no" {
        let other = Register::new(
            "carol",
            &pn("33fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"),
        );
        let mut other = other;
        other.expect = 403;
        assert!(
            a.register(&other).ok,
            "a second device must not push the first out"
        );
    }
}

#[test]
fn moved_device_fits_a_full_aor_without_remove_existing() {
    moved_device_fits("no");
}

#[test]
fn moved_device_fits_a_full_aor_with_remove_existing() {
    moved_device_fits("yes");
}

/// `push_caller_id = no`: no caller number or name in any payload (issue 12's privacy item).
/// Calls alice through `exten` and checks that bob, the caller, is in no payload: the call
/// push and the missed-call push alike.
fn assert_caller_out_of_payloads(name: &str, general: &str, exten: &str) {
    let (mocks, a, _sidecar) = setup(name, general);
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_binding(&a, "alice");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", exten]);
    let push = mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(TOKEN))
        .expect("call push");
    assert!(!caller.wait().ok);
    std::thread::sleep(Duration::from_millis(500));
    let bodies: Vec<String> = mocks
        .apns
        .requests()
        .iter()
        .map(|r| r.body_text.clone())
        .collect();
    assert!(
        bodies.len() >= 2,
        "call and cancel/missed pushes: {bodies:?}"
    );
    for b in &bodies {
        assert!(!b.contains("bob") && !b.contains("Bob"), "{b}");
    }
    assert_eq!(push.json.as_ref().unwrap()["kind"], "call");
}

#[test]
fn push_caller_id_off_keeps_the_caller_out_of_payloads() {
    assert_caller_out_of_payloads(
        "live-privacy",
        "push_caller_id = no\nwake_timeout = 2\nmissed_call_push = yes",
        "mobile",
    );
}

/// A caller who withheld their identity (CLIR, `CALLERID(pres)=prohib`) stays out of every
/// payload although `push_caller_id` is on: the phone would have shown "anonymous".
#[test]
fn withheld_caller_id_stays_out_of_payloads() {
    assert_caller_out_of_payloads(
        "live-clir",
        "wake_timeout = 2\nmissed_call_push = yes",
        "clir-alice",
    );
}

/// When the mobile answers, the desk phone that `Push/` rang beside it is cancelled with
/// RFC 3326's "completed elsewhere" reason, so it does not show a missed call (part of issue
/// 12's first item: the contacts PushDial rings itself).
#[test]
fn answer_on_the_mobile_cancels_the_desk_as_completed_elsewhere() {
    let (_mocks, a, _sidecar) = setup("live-elsewhere", "wake_timeout = 20");
    let (mobile_port, desk_port) = (free_udp_port(), free_udp_port());
    let desk = a.sipp("desk", PHONE_STALE, desk_port, &[]);
    let mobile = a.sipp("mobile", PHONE_SLOW, mobile_port, &[]);
    register_at(&a, "alice", mobile_port);
    let mut r = Register::new("alice", "");
    r.contact_port = Some(desk_port);
    assert!(a.register(&r).ok);
    wait_binding(&a, "alice");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let (mobile, desk, caller) = (mobile.wait(), desk.wait(), caller.wait());
    assert!(mobile.ok, "{}\n{}", mobile.trace, a.log());
    assert!(caller.ok, "{}", caller.trace);
    assert!(desk.ok, "the desk phone was not cancelled:\n{}", desk.trace);
    let cancel = desk
        .trace
        .split("----------------------------------------------- ")
        .find(|b| b.contains("CANCEL sip:"))
        .expect("CANCEL");
    assert!(
        cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel}"
    );
}

/// The same between two devices of the user: each rung through its own device leg.
#[test]
fn answer_on_one_device_cancels_the_other_as_completed_elsewhere() {
    let (_mocks, a, _sidecar) = setup("live-elsewhere2", "wake_timeout = 20");
    let token2 = "44fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let other = a.sipp("other", PHONE_STALE, p2, &[]);
    let answering = a.sipp("answering", PHONE_SLOW, p1, &[]);
    register_at(&a, "alice", p1);
    let mut r = Register::new("alice", &pn(token2));
    r.contact_port = Some(p2);
    assert!(a.register(&r).ok);
    wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings alice")) == 2).then_some(())
    })
    .expect("two devices");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    let (answering, other, caller) = (answering.wait(), other.wait(), caller.wait());
    assert!(answering.ok, "{}\n{}", answering.trace, a.log());
    assert!(caller.ok, "{}", caller.trace);
    assert!(
        other.ok,
        "the other device was not cancelled:\n{}",
        other.trace
    );
    let cancel = other
        .trace
        .split("----------------------------------------------- ")
        .find(|b| b.contains("CANCEL sip:"))
        .expect("CANCEL");
    assert!(
        cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel}"
    );
}
