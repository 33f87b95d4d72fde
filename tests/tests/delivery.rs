//! Pushes end to end: Asterisk + res_push.so → res-push-sidecar → mock APNs/FCM (HTTP/2, TLS,
//! test CA), with apps configured in push.conf only.

use std::path::Path;
use std::time::Duration;

use res_push_itests::push_env::{Mocks, setup};
use res_push_itests::{
    Asterisk, Options, Register, Sidecar, binding_count, field, status_field, wait_for,
};
use res_push_mocks::Behavior;

const APNS_TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const DEAD_TOKEN: &str = "dead0000ff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(15);

fn apns_binding(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

#[test]
fn push_send_call_is_a_voip_push_at_mock_apns() {
    let (mocks, a, _sidecar) = setup("send-call", "");
    assert!(
        a.register(&Register::new("alice", &apns_binding(APNS_TOKEN)))
            .ok
    );
    wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings alice")) == 1).then_some(())
    })
    .expect("binding");

    let out = a.cli("push send alice call");
    assert!(out.contains(": sent (id "), "{out}");
    let req = mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(APNS_TOKEN))
        .expect("APNs request");
    assert_eq!(req.path, format!("/3/device/{APNS_TOKEN}"));
    assert_eq!(req.header("apns-push-type"), Some("voip"));
    assert_eq!(req.header("apns-topic"), Some("com.example.phone.voip"));
    assert_eq!(req.header("apns-priority"), Some("10"));
    assert_eq!(req.status, 200);
    let claims = &req.jwt.as_ref().expect("bearer JWT").claims;
    assert_eq!(claims["iss"], "TEAM123456");

    // A cancel is an alert push, never a second VoIP push.
    let out = a.cli("push send alice cancel");
    assert!(out.contains(": sent"), "{out}");
    let cancel = mocks
        .wait_apns(WAIT, |r| r.seq > req.seq)
        .expect("cancel request");
    assert_eq!(cancel.header("apns-push-type"), Some("alert"));
    assert_eq!(cancel.header("apns-topic"), Some("com.example.phone"));
}

#[test]
fn dead_token_drops_the_binding() {
    let (mocks, a, _sidecar) = setup("dead-token", "");
    let mut ami = a.ami();
    mocks.apns.script(DEAD_TOKEN, vec![Behavior::Unregistered]);
    assert!(
        a.register(&Register::new("alice", &apns_binding(DEAD_TOKEN)))
            .ok
    );
    wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings alice")) == 1).then_some(())
    })
    .expect("binding");

    let out = a.cli("push send alice hello there");
    assert!(out.contains("invalid token (Unregistered)"), "{out}");
    let gone = wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings alice")) == 0).then_some(())
    });
    assert!(gone.is_some(), "{}", a.cli("push show bindings alice"));
    let ev = ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushBindingRemoved"));
    assert_eq!(
        ev.as_ref().and_then(|p| field(p, "Reason")),
        Some("invalid-token")
    );
}

#[test]
fn refresh_push_before_expiry_is_a_background_push() {
    // Registration of 30 s, refresh asked 40 s ahead: due at once.
    let (mocks, a, _sidecar) = setup("refresh", "refresh_before = 40");
    let mut r = Register::new("alice", &apns_binding(APNS_TOKEN));
    r.expires = 30;
    assert!(a.register(&r).ok);
    let req = mocks
        .wait_apns(WAIT, |r| r.device_token.as_deref() == Some(APNS_TOKEN))
        .expect("refresh push");
    assert_eq!(req.header("apns-push-type"), Some("background"));
    assert_eq!(req.header("apns-priority"), Some("5"));
    assert_eq!(req.header("apns-topic"), Some("com.example.phone"));
    // One refresh per registration.
    std::thread::sleep(Duration::from_secs(2));
    let n = mocks
        .apns
        .requests()
        .iter()
        .filter(|r| r.device_token.as_deref() == Some(APNS_TOKEN))
        .count();
    assert_eq!(n, 1);
}

#[test]
fn push_test_reaches_mock_fcm_and_ami_push_send_reports() {
    let (mocks, a, _sidecar) = setup("fcm", "");
    let token = "fcmTokenAAA:APA91bTEST";
    let out = a.cli(&format!("push test fcm {} {token}", mocks.fcm.project_id()));
    assert!(out.contains(": sent (id projects/"), "{out}");
    let req = mocks
        .rt
        .block_on(
            mocks
                .fcm
                .wait_for_request(|r| r.path.ends_with("messages:send"), WAIT),
        )
        .expect("FCM request");
    let msg = &req.json.as_ref().expect("json")["message"];
    assert_eq!(msg["token"], token);
    assert_eq!(msg["android"]["priority"], "high");
    assert_eq!(mocks.fcm.token_requests(), 1);

    let fcm_binding = format!(
        ";pn-provider=fcm;pn-param={};pn-prid={token}",
        mocks.fcm.project_id()
    );
    assert!(a.register(&Register::new("bob", &fcm_binding)).ok);
    wait_for(WAIT, || {
        (binding_count(&a.cli("push show bindings bob")) == 1).then_some(())
    })
    .expect("binding");
    let mut ami = a.ami();
    let r = ami.action(
        "PushSend",
        &[("AOR", "bob"), ("Kind", "alert"), ("Text", "hi")],
    );
    let result = r
        .iter()
        .find(|p| field(p, "Event") == Some("PushSendResult"))
        .expect("result event");
    assert_eq!(field(result, "Status"), Some("sent"), "{r:?}");
    assert_eq!(mocks.fcm.token_requests(), 1, "the OAuth token is reused");
}

#[test]
fn app_errors_are_shown_in_status() {
    let mocks = Mocks::start("app-error");
    let a = Asterisk::start("app-error", Options::default());
    let socket = format!("{}/run/sidecar.sock", a.dir);
    let conf = mocks.push_conf(&socket, "").replace(".p8", ".missing.p8");
    std::fs::write(a.etc("push.conf"), conf).unwrap();
    a.cli("module reload res_push");
    let _sidecar = Sidecar::start(&a.socket_host_path());
    let status = wait_for(WAIT, || {
        let s = a.cli("push show status");
        s.contains("App error").then_some(s)
    })
    .unwrap_or_else(|| a.cli("push show status"));
    assert_eq!(
        status_field(&status, "Apps").as_deref(),
        Some("android"),
        "{status}"
    );
    let err = status_field(&status, "App error").unwrap_or_default();
    assert!(
        err.contains("ios") && err.contains("key_file") && err.contains(".missing.p8"),
        "{status}"
    );
    assert!(Path::new(&mocks.dir).exists());
}
