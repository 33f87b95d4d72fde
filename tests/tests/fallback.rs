//! Fallback (issue 12, item 5): `Dial(Push/alice)` tells the caller's dialplan why no device
//! woke (`PUSHSTATUS`, `PUSH_REASONS`), and the operator guide's dialplan then rings the user's
//! mobile number through a trunk (a SIPp UAS here), alone or after the XiVO-style
//! `Dial(PJSIP/desk&Push/alice)`.

use std::time::Duration;

use res_push_itests::push_env::{Mocks, setup_with};
use res_push_itests::{Asterisk, Options, Register, SippRun, free_udp_port, wait_for};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);
const MOBILE: &str = "0611223344";

const CALLER: &str = include_str!("../sipp/caller.xml");
/// The trunk to the mobile network: answers the fallback INVITE.
const TRUNK: &str = include_str!("../sipp/phone.xml");
/// The desk phone: rings until cancelled.
const DESK: &str = include_str!("../sipp/late-phone.xml");

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

/// Asterisk with a `trunk` endpoint to a SIPp UAS at `trunk_port` and a `desk` endpoint at
/// `desk_port`.
fn start(
    name: &str,
    general: &str,
    trunk_port: u16,
    desk_port: u16,
) -> (Mocks, Asterisk, res_push_itests::Sidecar) {
    let endpoint = |n: &str, contact: String| {
        format!(
            "\n[{n}]\ntype = endpoint\ncontext = default\ndisallow = all\nallow = ulaw\naors = {n}\n\
             \n[{n}]\ntype = aor\ncontact = {contact}\n"
        )
    };
    setup_with(
        name,
        general,
        Options {
            pjsip_append: endpoint("trunk", format!("sip:127.0.0.1:{trunk_port}"))
                + &endpoint("desk", format!("sip:desk@127.0.0.1:{desk_port}")),
            ..Options::default()
        },
    )
}

fn bind(a: &Asterisk) -> String {
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
    a.cli("push show binding alice")
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "ID").then(|| v.trim().to_string())
        })
        .expect("binding id")
}

/// The dialplan's NoOp line `<exten> DIALSTATUS=.. PUSHSTATUS=.. PUSH_REASONS=..`.
fn outcome(a: &Asterisk, exten: &str) -> String {
    let marker = format!("{exten} DIALSTATUS=");
    wait_for(WAIT, || {
        a.log().lines().find(|l| l.contains(&marker)).map(|l| {
            let from = &l[l.find(&marker).unwrap_or(0)..];
            // `Executing [...] NoOp("<channel>", "<text>") in new stack`
            from.split("\")").next().unwrap_or(from).to_string()
        })
    })
    .unwrap_or_else(|| panic!("no '{marker}' in the log\n{}", a.log()))
}

fn assert_fallback_invite(trunk: SippRun, caller: SippRun, a: &Asterisk) {
    let (trunk, caller) = (trunk.wait(), caller.wait());
    assert!(
        trunk.ok,
        "the trunk got no fallback call:\n{}\n{}",
        trunk.trace,
        a.log()
    );
    assert!(caller.ok, "caller:\n{}", caller.trace);
    let invite = trunk
        .trace
        .lines()
        .find(|l| l.starts_with("INVITE sip:"))
        .expect("INVITE");
    assert!(
        invite.starts_with(&format!("INVITE sip:{MOBILE}@127.0.0.1")),
        "{invite}"
    );
}

#[test]
fn push_that_fails_falls_back_to_the_mobile_number() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    // No live contact to ring: the failed push is all there is.
    let (mocks, a, _sidecar) = start(
        "fallback-failed",
        "ring_live_contact = no",
        trunk_port,
        desk_port,
    );
    mocks
        .apns
        .script(TOKEN, vec![res_push_mocks::Behavior::Unregistered]);
    let id = bind(&a);
    let trunk = a.sipp("trunk", TRUNK, trunk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "fallback"]);
    assert_fallback_invite(trunk, caller, &a);
    assert_eq!(
        outcome(&a, "fallback"),
        format!(
            "fallback DIALSTATUS=CHANUNAVAIL PUSHSTATUS=FAILED PUSH_REASONS={id}:push-failed:invalid-token"
        )
    );
}

#[test]
fn device_that_never_registers_falls_back_to_the_mobile_number() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (_mocks, a, _sidecar) = start(
        "fallback-timeout",
        "ring_live_contact = no\nwake_timeout = 2",
        trunk_port,
        desk_port,
    );
    let id = bind(&a);
    let trunk = a.sipp("trunk", TRUNK, trunk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "fallback"]);
    assert_fallback_invite(trunk, caller, &a);
    assert_eq!(
        outcome(&a, "fallback"),
        format!("fallback DIALSTATUS=NOANSWER PUSHSTATUS=TIMEOUT PUSH_REASONS={id}:timeout")
    );
}

#[test]
fn desk_and_mobile_fall_back_to_the_mobile_number() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (_mocks, a, _sidecar) = start(
        "fallback-desk",
        "ring_live_contact = no\nwake_timeout = 2",
        trunk_port,
        desk_port,
    );
    let id = bind(&a);
    let desk = a.sipp("desk", DESK, desk_port, &[]);
    let trunk = a.sipp("trunk", TRUNK, trunk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "desk-mobile"]);
    assert_fallback_invite(trunk, caller, &a);
    let desk = desk.wait();
    assert!(
        desk.ok,
        "the desk rang until the Dial gave up:\n{}",
        desk.trace
    );
    assert_eq!(
        outcome(&a, "desk-mobile"),
        format!("desk-mobile DIALSTATUS=NOANSWER PUSHSTATUS=TIMEOUT PUSH_REASONS={id}:timeout")
    );
}

/// An unknown or unbound user falls back at once.
#[test]
fn user_without_binding_falls_back_to_the_mobile_number() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (_mocks, a, _sidecar) = start("fallback-nobinding", "", trunk_port, desk_port);
    let trunk = a.sipp("trunk", TRUNK, trunk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "fallback"]);
    assert_fallback_invite(trunk, caller, &a);
    let line = outcome(&a, "fallback");
    assert!(
        line.ends_with("PUSHSTATUS=NOBINDING PUSH_REASONS=alice:no-binding"),
        "{line}"
    );
}

/// `PushWake` tells why too: here the push fails, so the dialplan can ring elsewhere at once.
#[test]
fn pushwake_sets_the_reasons() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (mocks, a, _sidecar) = start("fallback-pushwake", "", trunk_port, desk_port);
    mocks
        .apns
        .script(TOKEN, vec![res_push_mocks::Behavior::Unregistered]);
    let id = bind(&a);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "wake"]);
    assert!(!caller.wait().ok, "nobody woke: no answer");
    let marker = "wake PUSHSTATUS=";
    let line = wait_for(WAIT, || {
        a.log().lines().find(|l| l.contains(marker)).map(|l| {
            let from = &l[l.find(marker).unwrap_or(0)..];
            from.split("\")").next().unwrap_or(from).to_string()
        })
    })
    .unwrap_or_else(|| panic!("no PushWake outcome\n{}", a.log()));
    assert_eq!(
        line,
        format!("wake PUSHSTATUS=FAILED PUSH_REASONS={id}:push-failed:invalid-token")
    );
}

/// Two `Push/` destinations in one `Dial`: the reasons of both endpoints' devices.
#[test]
fn two_push_destinations_report_every_device() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (_mocks, a, _sidecar) = start(
        "fallback-two",
        "ring_live_contact = no\nwake_timeout = 2",
        trunk_port,
        desk_port,
    );
    let id = bind(&a);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "two-users"]);
    assert!(!caller.wait().ok);
    assert_eq!(
        outcome(&a, "two-users"),
        format!(
            "two-users DIALSTATUS=NOANSWER PUSHSTATUS=TIMEOUT PUSH_REASONS={id}:timeout,bob:no-binding"
        )
    );
}

/// The default `ring_live_contact = yes` with a sleeping phone whose contact has not expired:
/// its stale contact rings on after the push failed, until the wake timeout; the reason is
/// still the failed push, and the call falls back.
#[test]
fn failed_push_beside_a_stale_contact_reads_as_push_failed_and_falls_back() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (mocks, a, _sidecar) = start("fallback-stale", "wake_timeout = 2", trunk_port, desk_port);
    mocks.apns.script(
        TOKEN,
        vec![res_push_mocks::Behavior::Error {
            status: 400,
            reason: "BadDeviceToken".into(),
            retry_after: None,
        }],
    );
    let id = bind(&a);
    let trunk = a.sipp("trunk", TRUNK, trunk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "fallback"]);
    assert_fallback_invite(trunk, caller, &a);
    let line = outcome(&a, "fallback");
    assert!(
        line.starts_with("fallback DIALSTATUS=NOANSWER PUSHSTATUS=FAILED")
            && line.ends_with(&format!("PUSH_REASONS={id}:push-failed:invalid-token")),
        "{line}"
    );
}

/// A phone that woke and rang but was not answered is no reason to ring the mobile number:
/// the caller's dialplan reads `WOKEN` although the device's leg ended with the caller's Dial.
#[test]
fn woken_phone_that_rang_unanswered_does_not_fall_back() {
    let (trunk_port, desk_port) = (free_udp_port(), free_udp_port());
    let (mocks, a, _sidecar) = start(
        "fallback-woken",
        "ring_live_contact = no\nwake_timeout = 6",
        trunk_port,
        desk_port,
    );
    let id = bind(&a);
    let desk = a.sipp("desk", DESK, desk_port, &[]);
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "desk-mobile"]);
    wait_for(WAIT, || (!mocks.apns.requests().is_empty()).then_some(())).expect("the push");
    // The woken phone registers at a new contact, rings there and is never answered.
    let port = free_udp_port();
    let phone = a.sipp("woken", DESK, port, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let mut r = Register::new("alice", &pn(TOKEN));
    r.contact_port = Some(port);
    assert!(a.register(&r).ok);
    let phone = phone.wait();
    assert!(
        phone.ok,
        "the woken phone rang until the Dial gave up:\n{}",
        phone.trace
    );
    let _ = (caller.wait(), desk.wait());
    assert_eq!(
        outcome(&a, "desk-mobile"),
        format!("desk-mobile DIALSTATUS=NOANSWER PUSHSTATUS=WOKEN PUSH_REASONS={id}:not-answered")
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !a.log().contains(&format!("PJSIP/{MOBILE}@trunk")),
        "no fallback call:\n{}",
        a.log()
    );
}
