//! RFC 8599 in the registrar: REGISTERs from SIPp against the real Asterisk, asserting the SIP
//! responses, `push show bindings` and the AMI events.

use std::time::Duration;

use res_push_itests::{Asterisk, Options, Register, binding_count, field, wait_for};

const APNS_TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const FCM_TOKEN: &str = "dXf3k2JrT0y:APA91bHun4MxP5egoKMwt2KZFBaFUH-1RYqx";
const WAIT: Duration = Duration::from_secs(10);

fn rfc_apns(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid={token}")
}

fn start(name: &str) -> Asterisk {
    Asterisk::start(name, Options::default())
}

fn start_with(name: &str, general: &str) -> Asterisk {
    let conf = format!("[general]\nsidecar_socket = /tmp/none.sock\n{general}\n");
    Asterisk::start(
        name,
        Options {
            push_conf: Some(conf),
            ..Options::default()
        },
    )
}

/// Waits until `push show bindings <aor>` satisfies `pred`, returning the listing.
fn bindings_until(a: &Asterisk, aor: &str, pred: impl Fn(&str) -> bool) -> String {
    wait_for(WAIT, || {
        let out = a.cli(&format!("push show bindings {aor}"));
        pred(&out).then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "bindings of {aor} never matched:\n{}",
            a.cli("push show bindings")
        )
    })
}

#[test]
fn rfc8599_apns_binding_gets_feature_caps() {
    let a = start("rfc-apns");
    let mut ami = a.ami();
    let x = a.register(&Register::new("alice", &rfc_apns(APNS_TOKEN)));
    assert!(x.ok, "{}", x.trace);
    assert_eq!(
        x.header("Feature-Caps").as_deref(),
        Some("*;+sip.pns=\"apns\""),
        "{}",
        x.response
    );

    let list = bindings_until(&a, "alice", |l| binding_count(l) == 1);
    assert!(list.contains("apns"), "{list}");
    assert!(list.contains("DEF123GHIJ.com.example.phone.voip"), "{list}");
    assert!(list.contains("…1de8f0"), "token shown redacted: {list}");
    assert!(
        !list.contains(APNS_TOKEN),
        "full token must not be shown: {list}"
    );

    let event = ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushBindingAdded"));
    let event = event.expect("PushBindingAdded event");
    assert_eq!(field(&event, "AOR"), Some("alice"));
    assert_eq!(field(&event, "Provider"), Some("apns"));
    assert_eq!(field(&event, "Token"), Some("…1de8f0"));

    let detail = a.cli("push show binding alice");
    assert!(
        detail.contains("User-Agent      : res-push-test/1.0"),
        "{detail}"
    );
    assert!(
        detail.contains("pn-prid=…1de8f0"),
        "contact URI kept with its parameters, token redacted: {detail}"
    );
    assert!(!detail.contains(APNS_TOKEN), "{detail}");
}

#[test]
fn fcm_legacy_and_flexisip_forms_make_bindings() {
    let a = start("forms");
    let cases = [
        (
            format!(";pn-provider=fcm;pn-param=my-project;pn-prid={FCM_TOKEN}"),
            "fcm",
            "my-project",
            "default",
        ),
        (
            format!(";pn-type=apple;app-id=org.linphone.phone.dev;pn-tok={APNS_TOKEN}"),
            "apns",
            "org.linphone.phone",
            "sandbox",
        ),
        (
            ";push-token-type=fcm;push-token-app=com.example.softphone;push-token-id=tokAAA111"
                .to_string(),
            "fcm",
            "com.example.softphone",
            "default",
        ),
        (
            format!(
                ";pn-provider=apns.dev;pn-param=ABCD1234.org.linphone.phone.voip&remote;pn-prid={}:voip&aa11bb:remote",
                &APNS_TOKEN.replace("00fc", "11fc")
            ),
            "apns",
            "ABCD1234.org.linphone.phone.voip",
            "sandbox",
        ),
    ];
    for (i, (params, provider, app, env)) in cases.iter().enumerate() {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let x = a.register(&Register::new(user, params));
        assert!(x.ok, "{params}: {}", x.trace);
        assert!(
            x.header("Feature-Caps")
                .is_some_and(|f| f.contains(&format!("\"{provider}\""))),
            "{params}: {}",
            x.response
        );
        let list = bindings_until(&a, user, |l| l.contains(app));
        let line = list.lines().find(|l| l.contains(app)).unwrap();
        assert!(
            line.contains(provider) && line.contains(env),
            "{params}: {line}"
        );
    }
    // The Flexisip multi-token value keeps the VoIP token only.
    let detail = a.cli("push show binding bob");
    assert!(detail.contains("Token           : …1de8f0"), "{detail}");
    assert!(
        !detail.contains(&APNS_TOKEN[..20].replace("00fc", "11fc")),
        "tokens never shown in full: {detail}"
    );
}

#[test]
fn mpush_header_when_enabled() {
    let a = start_with("mpush", "mpush = yes");
    let mut r = Register::new("alice", "");
    r.headers = vec![format!("X-MPUSH: s:i:com.voip.phone:{APNS_TOKEN}")];
    let x = a.register(&r);
    assert!(x.ok, "{}", x.trace);
    assert_eq!(
        x.header("Feature-Caps").as_deref(),
        Some("*;+sip.pns=\"apns\"")
    );
    let list = bindings_until(&a, "alice", |l| binding_count(l) == 1);
    assert!(
        list.contains("com.voip.phone") && list.contains("sandbox"),
        "{list}"
    );

    // X-MPUSH: null unbinds.
    let mut r = Register::new("alice", "");
    r.headers = vec!["X-MPUSH: null".into()];
    assert!(a.register(&r).ok);
    bindings_until(&a, "alice", |l| binding_count(l) == 0);
}

#[test]
fn mpush_header_ignored_when_disabled() {
    let a = start("mpush-off");
    let mut r = Register::new("alice", "");
    r.headers = vec![format!("X-MPUSH: i:com.voip.phone:{APNS_TOKEN}")];
    let x = a.register(&r);
    assert!(x.ok, "{}", x.trace);
    assert_eq!(x.header("Feature-Caps"), None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(binding_count(&a.cli("push show bindings")), 0);
}

#[test]
fn capability_query_answers_without_binding() {
    let a = start_with("query", "pnsreg = 600");
    let x = a.register(&Register::new("alice", ";pn-provider=fcm"));
    assert!(x.ok, "{}", x.trace);
    assert_eq!(
        x.header("Feature-Caps").as_deref(),
        Some("*;+sip.pns=\"fcm\";+sip.pnsreg=\"600\"")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(binding_count(&a.cli("push show bindings")), 0);
}

#[test]
fn unsupported_provider_is_555_or_accepted_as_configured() {
    let a = start("unsupported");
    let mut r = Register::new("alice", ";pn-provider=webpush;pn-param=x;pn-prid=abc");
    r.expect = 555;
    let x = a.register(&r);
    assert!(x.ok, "{}", x.trace);
    assert!(x.status_line().contains("555"), "{}", x.response);
    assert!(
        !a.cli("pjsip show contacts")
            .contains(&format!("127.0.0.1:{}", r.port)),
        "no contact may be registered"
    );

    let b = start_with("unsupported-accept", "unsupported_provider = accept");
    let r = Register::new("alice", ";pn-provider=webpush;pn-param=x;pn-prid=abc");
    let x = b.register(&r);
    assert!(x.ok, "{}", x.trace);
    assert_eq!(x.header("Feature-Caps"), None);
    let contact = format!("127.0.0.1:{}", r.port);
    assert!(
        wait_for(WAIT, || b
            .cli("pjsip show contacts")
            .contains(&contact)
            .then_some(()))
        .is_some()
    );
    assert_eq!(binding_count(&b.cli("push show bindings")), 0);
}

#[test]
fn malformed_parameters_are_400_with_a_reason_and_leave_nothing() {
    let a = start("malformed");
    let long = "ab".repeat(150);
    let cases = [
        (
            ";pn-provider=apns;pn-param=a.b.voip;pn-prid=zz-not-hex",
            "pn-prid is not an APNs device token (hex expected)",
        ),
        (
            &format!(";pn-provider=apns;pn-param=a.b.voip;pn-prid={long}") as &str,
            "pn-prid longer than 256 characters",
        ),
        (
            &format!(";pn-provider=apns;pn-prid={APNS_TOKEN}"),
            "Missing pn-param",
        ),
        (
            ";pn-provider=fcm;pn-param=p;pn-prid=bad%22quote",
            "Invalid character in pn-prid",
        ),
        (
            &format!(";pn-prid={APNS_TOKEN}"),
            "pn-prid or pn-param without pn-provider",
        ),
    ];
    for (params, reason) in cases {
        let mut r = Register::new("alice", params);
        r.expect = 400;
        let x = a.register(&r);
        assert!(x.ok, "{params}: {}", x.trace);
        assert_eq!(x.status_line(), format!("SIP/2.0 400 {reason}"), "{params}");
    }
    assert!(a.cli("core show version").contains("Asterisk 22"));
    assert!(
        !a.cli("pjsip show contacts").contains("alice/sip:"),
        "{}",
        a.cli("pjsip show contacts")
    );
    assert_eq!(binding_count(&a.cli("push show bindings")), 0);
}

#[test]
fn unbind_by_null_token_and_by_expires_zero() {
    let a = start("unbind");
    assert!(
        a.register(&Register::new("alice", &rfc_apns(APNS_TOKEN)))
            .ok
    );
    let fcm = format!(";pn-provider=fcm;pn-param=proj;pn-prid={FCM_TOKEN}");
    let mut fcm_reg = Register::new("alice", &fcm);
    assert!(a.register(&fcm_reg).ok);
    bindings_until(&a, "alice", |l| binding_count(l) == 2);

    // pn-prid=null forgets the app's binding.
    assert!(
        a.register(&Register::new(
            "alice",
            ";pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid=null"
        ))
        .ok
    );
    let list = bindings_until(&a, "alice", |l| binding_count(l) == 1);
    assert!(list.contains("fcm"), "{list}");

    // Expires: 0 on the contact removes that binding.
    fcm_reg.expires = 0;
    let x = a.register(&fcm_reg);
    assert!(x.ok, "{}", x.trace);
    bindings_until(&a, "alice", |l| binding_count(l) == 0);
}

#[test]
fn new_address_updates_the_binding_and_removes_the_stale_contact() {
    let a = start("dedup");
    let first = Register::new("alice", &rfc_apns(APNS_TOKEN));
    assert!(a.register(&first).ok);
    bindings_until(&a, "alice", |l| binding_count(l) == 1);
    let old = format!("127.0.0.1:{}", first.port);
    assert!(
        wait_for(WAIT, || a
            .cli("pjsip show contacts")
            .contains(&old)
            .then_some(()))
        .is_some()
    );

    let second = Register::new("alice", &rfc_apns(APNS_TOKEN));
    assert!(a.register(&second).ok);
    let new = format!("127.0.0.1:{}", second.port);
    let moved = wait_for(WAIT, || {
        let contacts = a.cli("pjsip show contacts");
        (contacts.contains(&new) && !contacts.contains(&old)).then_some(())
    });
    assert!(
        moved.is_some(),
        "stale contact must go:\n{}",
        a.cli("pjsip show contacts")
    );
    let list = a.cli("push show bindings alice");
    assert_eq!(binding_count(&list), 1, "{list}");
    assert!(a.cli("push show binding alice").contains(&new));
}

#[test]
fn binding_survives_restart_and_contact_expiry() {
    let mut a = start("persist");
    let mut r = Register::new("alice", &rfc_apns(APNS_TOKEN));
    r.expires = 2;
    assert!(a.register(&r).ok);
    bindings_until(&a, "alice", |l| binding_count(l) == 1);
    let contact = format!("127.0.0.1:{}", r.port);

    // The contact expires (2 s) and Asterisk prunes it; the push binding stays.
    let gone = wait_for(WAIT, || {
        (!a.cli("pjsip show contacts").contains(&contact)).then_some(())
    });
    assert!(gone.is_some(), "{}", a.cli("pjsip show contacts"));
    let list = a.cli("push show bindings alice");
    assert_eq!(binding_count(&list), 1, "{list}");
    assert!(list.contains("expired"), "{list}");

    a.restart();
    let list = bindings_until(&a, "alice", |l| binding_count(l) == 1);
    assert!(list.contains("DEF123GHIJ.com.example.phone.voip"), "{list}");
    assert!(a.log().contains("restored 1 push binding(s)"));
}

#[test]
fn operator_cli_and_ami_manage_bindings() {
    let a = start("operator");
    let mut ami = a.ami();
    // Provisioning without SIP, as XiVO does through its own API.
    let r = ami.action(
        "PushBindingAdd",
        &[
            ("AOR", "bob"),
            ("Provider", "fcm"),
            ("AppID", "proj"),
            ("Token", FCM_TOKEN),
            ("Expires", "3600"),
        ],
    );
    assert_eq!(field(&r[0], "Response"), Some("Success"), "{r:?}");
    let r = ami.action(
        "PushBindingAdd",
        &[
            ("AOR", "bob"),
            ("Provider", "apns"),
            ("AppID", "a.b"),
            ("Token", "nothex"),
        ],
    );
    assert_eq!(field(&r[0], "Response"), Some("Error"));
    assert_eq!(
        field(&r[0], "Message"),
        Some("pn-prid is not an APNs device token (hex expected)")
    );

    assert!(
        a.register(&Register::new("alice", &rfc_apns(APNS_TOKEN)))
            .ok
    );
    bindings_until(&a, "alice", |l| binding_count(l) == 1);

    let list = ami.action("PushBindingList", &[]);
    let entries: Vec<_> = list
        .iter()
        .filter(|p| field(p, "Event") == Some("PushBindingEntry"))
        .collect();
    assert_eq!(entries.len(), 2, "{list:?}");
    assert!(
        entries
            .iter()
            .all(|p| field(p, "Token").is_some_and(|t| t.starts_with('…')))
    );
    let list = ami.action("PushBindingList", &[("AOR", "bob")]);
    let complete = list.last().unwrap();
    assert_eq!(field(complete, "ListItems"), Some("1"), "{list:?}");

    let r = ami.action("PushBindingRemove", &[("AOR", "bob")]);
    assert_eq!(field(&r[0], "Response"), Some("Success"));
    let removed = ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushBindingRemoved"));
    assert_eq!(
        removed.as_ref().and_then(|p| field(p, "Reason")),
        Some("operator")
    );

    let id = a
        .cli("push show binding alice")
        .lines()
        .find_map(|l| l.strip_prefix("ID              : ").map(str::to_string))
        .unwrap();
    assert!(
        a.cli("push delete binding alice nope")
            .contains("0 push binding(s)")
    );
    assert!(
        a.cli(&format!("push delete binding alice {id}"))
            .contains("1 push binding(s)")
    );
    assert_eq!(binding_count(&a.cli("push show bindings")), 0);
}
