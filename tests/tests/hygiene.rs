//! Binding hygiene end to end: real failure counts (`push show binding`), `binding_max_failures`,
//! `max_push_devices` and `token_exclusive`, with the real Asterisk, sidecar and mock APNs.

use std::time::Duration;

use res_push_itests::push_env::setup;
use res_push_itests::{
    Asterisk, Register, Sidecar, binding_count, field, free_udp_port, status_field, wait_for,
};
use res_push_mocks::Behavior;

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const OTHER: &str = "11aa22bb33cc44dd55ee66ff77889900aabbccddeeff00112233445566778899";
const WAIT: Duration = Duration::from_secs(20);

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

fn bindings(a: &Asterisk, aor: &str) -> usize {
    binding_count(&a.cli(&format!("push show bindings {aor}")))
}

/// The `Push failures` line of `push show binding <aor>` (its only binding).
fn failures(a: &Asterisk, aor: &str) -> Option<u32> {
    a.cli(&format!("push show binding {aor}"))
        .lines()
        .find_map(|l| l.trim().strip_prefix("Push failures")?.split(':').nth(1))
        .and_then(|n| n.trim().parse().ok())
}

fn wait_failures(a: &Asterisk, aor: &str, n: u32) {
    let seen = wait_for(WAIT, || (failures(a, aor) == Some(n)).then_some(()));
    assert!(
        seen.is_some(),
        "expected {n} failure(s):\n{}",
        a.cli(&format!("push show binding {aor}"))
    );
}

#[test]
fn failed_pushes_are_counted_reset_on_success_and_drop_the_binding_at_the_limit() {
    let (mocks, a, sidecar) = setup("hygiene-failures", "binding_max_failures = 3");
    let mut ami = a.ami();
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || (bindings(&a, "alice") == 1).then_some(())).expect("binding");
    assert_eq!(failures(&a, "alice"), Some(0));

    // A refusal APNs gives no known reason for counts against the binding (`failed: other`).
    mocks
        .apns
        .script(TOKEN, vec![Behavior::error(400, "SomethingOdd")]);
    let out = a.cli("push send alice alert one");
    assert!(out.contains("failed (Other)"), "{out}");
    wait_failures(&a, "alice", 1);

    // The sidecar gone is our fault, not the binding's: not counted either.
    sidecar.crash();
    let down = wait_for(WAIT, || {
        let out = a.cli("push send alice alert lost");
        out.contains("not connected").then_some(out)
    });
    assert!(down.is_some(), "{}", a.cli("push show status"));
    let _sidecar = Sidecar::start(&a.socket_host_path());
    let back = wait_for(WAIT, || {
        let s = a.cli("push show status");
        (status_field(&s, "Sidecar link").as_deref() == Some("connected")
            && status_field(&s, "Apps").as_deref() == Some("ios, android"))
        .then_some(())
    });
    assert!(back.is_some(), "{}", a.cli("push show status"));

    // Our credentials refused (`failed: config`) is not the binding's fault: not counted. (Had
    // this or the link failure counted, the next failure would be the third or fourth, and
    // the binding would be gone.)
    mocks
        .apns
        .script(TOKEN, vec![Behavior::error(403, "InvalidProviderToken")]);
    let out = a.cli("push send alice alert two");
    assert!(out.contains("failed (Config)"), "{out}");
    mocks
        .apns
        .script(TOKEN, vec![Behavior::error(400, "SomethingOdd")]);
    a.cli("push send alice alert three");
    wait_failures(&a, "alice", 2);
    assert_eq!(bindings(&a, "alice"), 1);

    // A delivered push resets the count.
    let out = a.cli("push send alice alert four");
    assert!(out.contains(": sent"), "{out}");
    wait_failures(&a, "alice", 0);

    // Three in a row: the binding goes, and the log and AMI say why. The first is the
    // provider failing for good (throttled, asking to come back after the push's deadline):
    // from the binding's side the push failed, so it counts.
    for n in 1..=3u32 {
        let behavior = if n == 1 {
            Behavior::error_retry_after(429, "TooManyRequests", 3600)
        } else {
            Behavior::error(400, "SomethingOdd")
        };
        mocks.apns.script(TOKEN, vec![behavior]);
        a.cli("push send alice alert again");
        if n < 3 {
            wait_failures(&a, "alice", n);
        }
    }
    let gone = wait_for(WAIT, || (bindings(&a, "alice") == 0).then_some(()));
    assert!(gone.is_some(), "{}", a.cli("push show binding alice"));
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushBindingRemoved"))
        .expect("PushBindingRemoved");
    assert_eq!(field(&ev, "Reason"), Some("max-failures"));
    assert!(
        a.log()
            .contains("pushes failed in a row (binding_max_failures)"),
        "{}",
        a.log()
    );
}

#[test]
fn max_push_devices_one_lets_the_newest_device_replace_the_oldest() {
    let (_mocks, a, _sidecar) = setup("hygiene-max-devices", "max_push_devices = 1");
    let mut ami = a.ami();
    let first = Register::new("alice", &pn(TOKEN));
    assert!(a.register(&first).ok);
    wait_for(WAIT, || (bindings(&a, "alice") == 1).then_some(())).expect("first binding");
    let contacts = a.cli("pjsip show contacts");
    assert!(contacts.contains(&format!(":{}", first.port)), "{contacts}");

    // A second device logs in: it replaces the first, binding and SIP contact alike.
    let second = Register::new("alice", &pn(OTHER));
    assert!(a.register(&second).ok);
    let ev = ami
        .wait_event(WAIT, |p| field(p, "Event") == Some("PushBindingRemoved"))
        .expect("PushBindingRemoved");
    assert_eq!(field(&ev, "Reason"), Some("max-devices"));
    assert_eq!(field(&ev, "Token"), Some("…1de8f0"));
    let listing = a.cli("push show bindings alice");
    assert_eq!(binding_count(&listing), 1, "{listing}");
    assert!(listing.contains("…778899"), "the newest stays: {listing}");
    let gone = wait_for(WAIT, || {
        let c = a.cli("pjsip show contacts");
        (!c.contains(&format!(":{}", first.port)) && c.contains(&format!(":{}", second.port)))
            .then_some(())
    });
    assert!(gone.is_some(), "{}", a.cli("pjsip show contacts"));
}

#[test]
fn token_exclusive_moves_a_token_to_its_new_account_and_off_keeps_both() {
    let (mocks, a, _sidecar) = setup("hygiene-exclusive", "token_exclusive = yes");
    let mut ami = a.ami();
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || (bindings(&a, "alice") == 1).then_some(())).expect("alice");
    // The app switches account: the same token registers for bob.
    assert!(a.register(&Register::new("bob", &pn(TOKEN))).ok);
    let ev = ami
        .wait_event(WAIT, |p| {
            field(p, "Event") == Some("PushBindingRemoved") && field(p, "AOR") == Some("alice")
        })
        .expect("alice's binding removed");
    assert_eq!(field(&ev, "Reason"), Some("token-moved"));
    wait_for(WAIT, || (bindings(&a, "bob") == 1).then_some(())).expect("bob");
    assert_eq!(bindings(&a, "alice"), 0);

    // A call to alice wakes nobody: no push reaches bob's phone.
    let caller = a
        .sipp(
            "caller",
            include_str!("../sipp/caller.xml"),
            free_udp_port(),
            &["-s", "mobile"],
        )
        .wait();
    assert!(!caller.ok, "nothing can answer alice's call");
    assert!(
        mocks
            .apns
            .requests()
            .iter()
            .all(|r| r.device_token.as_deref() != Some(TOKEN)),
        "no push for alice's call"
    );

    // Off (the default): a multi-account app keeps one token in both accounts.
    let conf = std::fs::read_to_string(a.etc("push.conf")).unwrap();
    std::fs::write(
        a.etc("push.conf"),
        conf.replace("token_exclusive = yes", "token_exclusive = no"),
    )
    .unwrap();
    a.cli("module reload res_push");
    assert!(a.register(&Register::new("alice", &pn(TOKEN))).ok);
    wait_for(WAIT, || (bindings(&a, "alice") == 1).then_some(())).expect("alice again");
    assert_eq!(bindings(&a, "bob"), 1, "bob keeps his");
}
