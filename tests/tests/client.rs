//! A real softphone against the real Asterisk: Debian's linphonec registers with RFC 8599
//! parameters (as a mobile Linphone does once it has a push token), gets a push binding and
//! Feature-Caps, answers a `Dial(Push/alice)` call while awake, and removes its binding when it
//! quits (it unregisters with `Expires: 0`).

use std::time::{Duration, Instant};

use res_push_itests::linphone::{Linphone, LinphoneOptions, Transport, header};
use res_push_itests::push_env::{setup, setup_with};
use res_push_itests::{Asterisk, Options, binding_count, free_tcp_port, free_udp_port, wait_for};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const PN: &str = "pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid=00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(10);
/// The caller: INVITE `[service]` as bob, expect an answer, hold 1 s, hang up.
const CALLER: &str = include_str!("../sipp/caller.xml");

/// Starts Linphone as alice on `a`, waits until it is registered and its binding is listed.
fn registered_linphone(name: &str, a: &Asterisk) -> Linphone {
    let mut phone = Linphone::start(name, LinphoneOptions::new("alice", a.sip_port, PN));
    assert!(
        phone.wait_registered(WAIT),
        "Linphone did not register\n{}",
        a.cli("pjsip show contacts")
    );
    let suffix = &TOKEN[TOKEN.len() - 6..];
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains(&format!("…{suffix}"))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no binding:\n{}", a.cli("push show bindings")));
    phone
}

/// The REGISTER requests a message list holds (by CSeq method), oldest first.
fn registers(messages: Vec<String>) -> Vec<String> {
    messages
        .into_iter()
        .filter(|m| header(m, "CSeq").is_some_and(|c| c.ends_with("REGISTER")))
        .collect()
}

#[test]
fn linphone_registers_with_push_parameters_and_gets_feature_caps() {
    let (_mocks, a, _sidecar) = setup("client-register", "");
    let phone = registered_linphone("client-register", &a);

    // One binding for the device, the token shown by its last 6 characters.
    let listing = a.cli("push show bindings alice");
    assert_eq!(binding_count(&listing), 1, "{listing}");
    assert!(listing.contains("apns"), "{listing}");

    // Linphone sent the RFC 8599 parameters in its Contact URI, with its +sip.instance.
    let sent = registers(phone.sent());
    let contact = header(sent.first().expect("a REGISTER"), "Contact").expect("Contact");
    assert!(contact.contains(&format!(";{PN}")), "{contact}");
    assert!(contact.contains("+sip.instance="), "{contact}");

    // The registrar's 200 OK advertised push support for the provider (RFC 8599 §6).
    let ok = registers(phone.received())
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .unwrap_or_else(|| panic!("no 200 OK to REGISTER in Linphone's log"));
    assert_eq!(
        header(&ok, "Feature-Caps").as_deref(),
        Some("*;+sip.pns=\"apns\""),
        "{ok}"
    );
}

#[test]
fn awake_linphone_answers_a_push_call_within_two_seconds() {
    // wake_timeout bounds how long a failing run waits; an awake phone answers long before.
    let (_mocks, a, _sidecar) = setup("client-call", "wake_timeout = 5");
    let phone = registered_linphone("client-call", &a);

    let t0 = Instant::now();
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "mobile"]);
    // linphonec auto-answers (-a) and prints "Call <n> with <peer> connected.".
    let answered = wait_for(WAIT, || {
        phone
            .output()
            .lines()
            .any(|l| l.contains(" connected."))
            .then(|| t0.elapsed())
    });
    let caller = caller.wait();
    let answered = answered.unwrap_or_else(|| {
        panic!(
            "Linphone never answered (an awake device must be rung at its registered contact \
             at once: ring_live_contact)\ncaller:\n{}\nlinphonec:\n{}",
            caller.trace,
            phone.output()
        )
    });
    assert!(
        answered <= Duration::from_secs(2),
        "answered after {answered:?}, not within 2 s of the INVITE"
    );
    assert!(caller.ok, "caller:\n{}", caller.trace);
    // Distinct INVITE transactions (a UDP retransmission is the same INVITE).
    let mut invites: Vec<_> = phone
        .received()
        .into_iter()
        .filter(|m| m.starts_with("INVITE "))
        .map(|m| (header(&m, "Call-ID"), header(&m, "CSeq")))
        .collect();
    invites.dedup();
    assert_eq!(
        invites.len(),
        1,
        "exactly one INVITE reached Linphone: {invites:?}"
    );
    // strip_pn_params: the Request-URI carries no push parameters, its other ones stay.
    let invite = phone
        .received()
        .into_iter()
        .find(|m| m.starts_with("INVITE "))
        .expect("INVITE");
    let request_line = invite.lines().next().unwrap_or_default();
    assert!(!request_line.contains("pn-"), "{request_line}");
    assert!(request_line.contains("transport=udp"), "{request_line}");
    println!("answered {} ms after the call", answered.as_millis());
}

/// A sleeping Linphone is woken by the push and answers from its new registration: over UDP
/// from a new port, over TCP on a new connection (the INVITE goes on that connection).
fn sleeping_linphone_wakes(transport: Transport) {
    let name = match transport {
        Transport::Udp => "client-wake-udp",
        Transport::Tcp => "client-wake-tcp",
    };
    let tcp_port = free_tcp_port();
    // dave: a mobile user behind NAT (rewrite_contact), reachable only through the
    // connection or address it registered from.
    let (mocks, a, _sidecar) = setup_with(
        name,
        "wake_timeout = 15",
        Options {
            pjsip_append: format!(
                "\n[transport-tcp]\ntype = transport\nprotocol = tcp\nbind = 127.0.0.1:{tcp_port}\n\
                 \n[dave]\ntype = endpoint\ncontext = default\ndisallow = all\nallow = ulaw\naors = dave\n\
                 rewrite_contact = yes\n\n[dave]\ntype = aor\nmax_contacts = 5\n"
            ),
            ..Options::default()
        },
    );
    let registrar_port = match transport {
        Transport::Udp => a.sip_port,
        Transport::Tcp => tcp_port,
    };
    let start = |tag: &str| {
        let mut o = LinphoneOptions::new("dave", registrar_port, PN);
        o.transport = transport;
        let mut p = Linphone::start(&format!("{name}-{tag}"), o);
        assert!(p.wait_registered(WAIT), "{}", a.cli("pjsip show contacts"));
        p
    };
    let mut asleep = start("before");
    wait_for(WAIT, || {
        a.cli("push show bindings dave")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
    asleep.sleep();

    a.cli("pjsip set logger on");
    let caller = a.sipp("caller", CALLER, free_udp_port(), &["-s", "push-dave"]);
    mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(TOKEN))
        .expect("call push");
    let awake = start("after");
    let caller = caller.wait();
    assert!(
        caller.ok,
        "caller:\n{}\nlinphonec:\n{}\n{}",
        caller.trace,
        awake.output(),
        a.log()
    );
    let invites: Vec<_> = awake
        .received()
        .into_iter()
        .filter(|m| m.starts_with("INVITE "))
        .map(|m| (header(&m, "Call-ID"), header(&m, "CSeq")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(invites.len(), 1, "{invites:?}");
    if transport == Transport::Tcp {
        // The INVITE came in on the connection the woken phone's REGISTER went out on
        // (belle-sip names each connection by its channel).
        let log = awake.log();
        let channel_of = |needle: &str, marker: &str| {
            let mut last = None;
            let mut lines = log.lines().peekable();
            while let Some(l) = lines.next() {
                if l.contains(marker) {
                    let ch = l.split("channel [").nth(1)?.split(']').next()?.to_string();
                    let chunk: Vec<&str> =
                        lines.clone().take_while(|n| !n.starts_with("20")).collect();
                    if chunk.iter().any(|n| n.starts_with(needle)) {
                        last.get_or_insert(ch);
                    }
                }
            }
            last
        };
        let register = channel_of("REGISTER sip:", "message sent to").expect("REGISTER sent");
        let invite = channel_of("INVITE sip:", "new bytes from").expect("INVITE received");
        assert_eq!(invite, register, "INVITE not on the REGISTER's connection");
    }
}

#[test]
fn sleeping_linphone_over_udp_is_woken_and_answers() {
    sleeping_linphone_wakes(Transport::Udp);
}

#[test]
fn sleeping_linphone_over_tcp_is_woken_on_its_new_connection() {
    sleeping_linphone_wakes(Transport::Tcp);
}

#[test]
fn quitting_linphone_unregisters_and_removes_its_binding() {
    let (_mocks, a, _sidecar) = setup("client-quit", "");
    let mut phone = registered_linphone("client-quit", &a);

    assert!(phone.quit(), "linphonec did not exit cleanly");
    // Its last REGISTER removed the contact (Expires: 0), and Asterisk accepted it.
    let unregister = registers(phone.sent()).pop().expect("a REGISTER");
    let expires_zero = header(&unregister, "Expires").as_deref() == Some("0")
        || header(&unregister, "Contact").is_some_and(|c| c.contains(";expires=0"));
    assert!(expires_zero, "{unregister}");
    let last_response = registers(phone.received()).pop().expect("a response");
    assert!(last_response.starts_with("SIP/2.0 200"), "{last_response}");

    let listing = wait_for(WAIT, || {
        let l = a.cli("push show bindings alice");
        (binding_count(&l) == 0).then_some(l)
    });
    assert!(
        listing.is_some(),
        "binding left behind:\n{}",
        a.cli("push show bindings alice")
    );
    let contacts = a.cli("pjsip show contacts");
    assert!(!contacts.contains("alice/"), "{contacts}");
}

#[test]
fn linphone_over_tcp_registers_gets_feature_caps_and_unregisters() {
    // No sidecar needed: bindings and Feature-Caps come from the registrar side alone.
    let tcp_port = free_tcp_port();
    let a = Asterisk::start(
        "client-tcp",
        Options {
            pjsip_append: format!(
                "\n[transport-tcp]\ntype = transport\nprotocol = tcp\nbind = 127.0.0.1:{tcp_port}\n"
            ),
            ..Options::default()
        },
    );
    let mut options = LinphoneOptions::new("alice", tcp_port, PN);
    options.transport = Transport::Tcp;
    let mut phone = Linphone::start("client-tcp", options);
    assert!(
        phone.wait_registered(WAIT),
        "Linphone did not register over TCP\n{}",
        a.cli("pjsip show contacts")
    );
    let listing = wait_for(WAIT, || {
        let l = a.cli("push show bindings alice");
        (binding_count(&l) == 1).then_some(l)
    })
    .unwrap_or_else(|| panic!("no binding:\n{}", a.cli("push show bindings")));
    assert!(listing.contains("…1de8f0"), "{listing}");
    let contact = header(&registers(phone.sent())[0], "Contact").expect("Contact");
    assert!(contact.contains("transport=tcp"), "{contact}");
    let ok = registers(phone.received())
        .into_iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .expect("a 200 OK to REGISTER");
    assert_eq!(
        header(&ok, "Feature-Caps").as_deref(),
        Some("*;+sip.pns=\"apns\""),
        "{ok}"
    );

    assert!(phone.quit(), "linphonec did not exit cleanly");
    assert!(
        wait_for(WAIT, || (binding_count(&a.cli("push show bindings alice"))
            == 0)
            .then_some(()))
        .is_some(),
        "binding left behind:\n{}",
        a.cli("push show bindings alice")
    );
}

#[test]
fn awake_linphone_gets_a_message_sent_to_push() {
    let (_mocks, a, _sidecar) = setup("client-message", "");
    let phone = registered_linphone("client-message", &a);
    let mut ami = a.ami();
    let r = ami.action(
        "MessageSend",
        &[
            ("Destination", "push:alice"),
            ("From", "\"Bob\" <sip:bob@127.0.0.1>"),
            ("Body", "hello Linphone"),
        ],
    );
    assert_eq!(
        res_push_itests::field(&r[0], "Response"),
        Some("Success"),
        "{r:?}"
    );
    let message = wait_for(WAIT, || {
        phone
            .received()
            .into_iter()
            .find(|m| m.starts_with("MESSAGE "))
    })
    .unwrap_or_else(|| panic!("no MESSAGE reached Linphone\n{}", a.log()));
    assert!(message.contains("hello Linphone"), "{message}");
    assert!(
        header(&message, "From").is_some_and(|f| f.contains("sip:bob@127.0.0.1")),
        "{message}"
    );
    // The Request-URI carries no push parameters (strip_pn_params).
    let ruri = message.lines().next().unwrap_or_default();
    assert!(!ruri.contains("pn-prid"), "{ruri}");
    // Linphone accepted it.
    wait_for(WAIT, || {
        phone
            .sent()
            .into_iter()
            .any(|m| {
                m.starts_with("SIP/2.0 200")
                    && header(&m, "CSeq").is_some_and(|c| c.ends_with("MESSAGE"))
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("Linphone did not accept the MESSAGE\n{}", phone.log()));
}

#[test]
fn linphone_gets_a_queued_message_with_its_next_register() {
    // message_live_contact = no: a registered push device gets messages only with its next
    // REGISTER (what the alert push brings about); Linphone refreshes every few seconds here.
    let (mocks, a, _sidecar) = setup("client-queued", "message_live_contact = no");
    let mut options = LinphoneOptions::new("alice", a.sip_port, PN);
    options.expires = 6;
    let mut phone = Linphone::start("client-queued", options);
    assert!(
        phone.wait_registered(WAIT),
        "{}",
        a.cli("pjsip show contacts")
    );
    wait_for(WAIT, || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    })
    .expect("binding");
    let mut ami = a.ami();
    let r = ami.action(
        "MessageSend",
        &[
            ("Destination", "push:alice"),
            ("From", "sip:bob@127.0.0.1"),
            ("Body", "waiting for you"),
        ],
    );
    assert_eq!(
        res_push_itests::field(&r[0], "Response"),
        Some("Success"),
        "{r:?}"
    );
    mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("alert push");
    let registers_before = phone.registrations();
    let message = wait_for(Duration::from_secs(30), || {
        phone
            .received()
            .into_iter()
            .find(|m| m.starts_with("MESSAGE "))
    })
    .unwrap_or_else(|| panic!("no MESSAGE reached Linphone\n{}", a.log()));
    assert!(message.contains("waiting for you"), "{message}");
    assert!(
        phone.registrations() > registers_before,
        "delivered only after a new REGISTER"
    );
    assert!(
        a.cli("push show messages alice")
            .contains("0 queued message(s)"),
        "{}",
        a.cli("push show messages alice")
    );
}
