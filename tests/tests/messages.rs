//! Messages to sleeping phones end to end: bob sends SIP MESSAGEs to alice; the dialplan
//! (`[messages]` in tests/config/extensions.conf) runs `MessageSend(push:alice)` and announces
//! `MESSAGE_SEND_STATUS` and `PUSH_MESSAGE_STATUS()` in a UserEvent. An awake phone gets the
//! MESSAGE at once; a sleeping one (its registration expired, its binding kept) gets an alert
//! push at the mock APNs, and the MESSAGEs when it registers again: in order, exactly once.
//!
//! The phones here are plain UDP sockets speaking just enough SIP (REGISTER, MESSAGE, 200 OK):
//! a MESSAGE from Asterisk comes in its own transaction, which a SIPp client scenario would
//! discard as belonging to no call of its own.

use std::collections::VecDeque;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use res_push_itests::push_env::{Mocks, setup};
use res_push_itests::{Ami, Asterisk, field, wait_for};
use res_push_mocks::RecordedRequest;

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);

fn pn(token: &str) -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={token}")
}

/// A SIP request or response as text.
#[derive(Debug, Clone)]
struct Sip(String);

impl Sip {
    fn first_line(&self) -> &str {
        self.0.lines().next().unwrap_or("")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .split("\r\n\r\n")
            .next()?
            .lines()
            .skip(1)
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
    }

    fn body(&self) -> &str {
        self.0.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }
}

/// A minimal SIP phone on its own UDP port.
struct Phone {
    sock: UdpSocket,
    user: String,
    port: u16,
    pbx: String,
    seq: u32,
    /// Requests read while waiting for a response.
    pending: VecDeque<Sip>,
    /// Every MESSAGE body received, in arrival order (retransmissions once).
    received: Vec<String>,
    seen_call_ids: Vec<String>,
}

impl Phone {
    fn new(user: &str, a: &Asterisk) -> Phone {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = sock.local_addr().expect("addr").port();
        Phone {
            sock,
            user: user.into(),
            port,
            pbx: format!("127.0.0.1:{}", a.sip_port),
            seq: 0,
            pending: VecDeque::new(),
            received: Vec::new(),
            seen_call_ids: Vec::new(),
        }
    }

    fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), &self.pbx).expect("send");
    }

    fn read(&mut self, until: Instant) -> Option<Sip> {
        let mut buf = vec![0u8; 65536];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let sip = Sip(String::from_utf8_lossy(&buf[..n]).into_owned());
                    if sip.first_line().is_empty() {
                        continue; // keepalive
                    }
                    return Some(sip);
                }
                Err(_) => return None,
            }
        }
    }

    /// Answers a request Asterisk sent us (200 OK); records MESSAGE bodies.
    fn answer(&mut self, req: &Sip) {
        let h = |n: &str| req.header(n).unwrap_or("").to_string();
        let to = h("To");
        let to = if to.contains("tag=") {
            to
        } else {
            format!("{to};tag=phone{}", self.port)
        };
        self.send(&format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("Call-ID"),
            h("CSeq")
        ));
        if req.is_request("MESSAGE") {
            let id = format!("{} {}", h("Call-ID"), h("CSeq"));
            if !self.seen_call_ids.contains(&id) {
                self.seen_call_ids.push(id);
                self.received.push(req.body().to_string());
            }
        }
    }

    /// Sends a request and waits for its final response; requests arriving meanwhile are
    /// answered (and MESSAGEs recorded) after it.
    fn request(&mut self, method: &str, ruri: &str, extra: &str, body: &str) -> Option<Sip> {
        self.seq += 1;
        let call_id = format!("{method}-{}-{}@test", self.port, self.seq);
        let text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};rport;branch=z9hG4bK{seq}x{port}\r\n\
             From: <sip:{user}@127.0.0.1>;tag=t{seq}\r\nTo: <{to}>\r\nCall-ID: {call_id}\r\nCSeq: {seq} {method}\r\n\
             Max-Forwards: 70\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            port = self.port,
            seq = self.seq,
            user = self.user,
            len = body.len(),
            // A REGISTER's To is the AOR being registered; other requests go to their target.
            to = if method == "REGISTER" {
                format!("sip:{}@127.0.0.1", self.user)
            } else {
                ruri.to_string()
            },
        );
        let end = Instant::now() + Duration::from_secs(10);
        let mut next_retransmit = Instant::now();
        let mut interval = Duration::from_millis(500);
        loop {
            if Instant::now() >= next_retransmit {
                self.send(&text);
                next_retransmit = Instant::now() + interval;
                interval = (interval * 2).min(Duration::from_secs(4));
            }
            let until = next_retransmit.min(end);
            match self.read(until) {
                Some(s) if s.first_line().starts_with("SIP/2.0") => {
                    if s.header("Call-ID") != Some(call_id.as_str()) {
                        continue;
                    }
                    let code: u16 = s
                        .first_line()
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0);
                    if code >= 200 {
                        for r in std::mem::take(&mut self.pending) {
                            self.answer(&r);
                        }
                        return Some(s);
                    }
                }
                Some(req) => self.pending.push_back(req),
                None if Instant::now() >= end => return None,
                None => {}
            }
        }
    }

    /// REGISTERs with `params` on the Contact URI; the final status code.
    fn register(&mut self, params: &str, expires: u32) -> u16 {
        let ruri = format!("sip:{}", self.pbx);
        let contact = format!(
            "Contact: <sip:{}@127.0.0.1:{};transport=udp{params}>\r\nExpires: {expires}\r\n",
            self.user, self.port
        );
        let r = self
            .request("REGISTER", &ruri, &contact, "")
            .expect("REGISTER answered");
        r.first_line()
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Sends a MESSAGE to `to` through the PBX; the final status code.
    fn message(&mut self, to: &str, body: &str) -> u16 {
        let ruri = format!("sip:{to}@{}", self.pbx);
        let r = self
            .request("MESSAGE", &ruri, "Content-Type: text/plain\r\n", body)
            .expect("MESSAGE answered");
        r.first_line()
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// Answers whatever arrives for `for_at_least`, or until `want` MESSAGEs are in; returns
    /// the bodies received so far.
    fn listen(&mut self, want: usize, for_at_least: Duration) -> Vec<String> {
        for r in std::mem::take(&mut self.pending) {
            self.answer(&r);
        }
        let end = Instant::now() + for_at_least;
        while self.received.len() < want {
            match self.read(end) {
                Some(s) if !s.first_line().starts_with("SIP/2.0") => self.answer(&s),
                Some(_) => {}
                None => break,
            }
        }
        self.received.clone()
    }
}

/// What the dialplan saw for one MessageSend: (MESSAGE_SEND_STATUS, PUSH_MESSAGE_STATUS()).
fn sent_status(ami: &mut Ami) -> (String, String) {
    let ev = ami
        .wait_event(WAIT, |p| field(p, "UserEvent") == Some("PushMessageSent"))
        .expect("PushMessageSent user event");
    // The global variable says the same as the function (messages here are sent one by one).
    assert_eq!(field(&ev, "Push"), field(&ev, "PushVar"), "{ev:?}");
    (
        field(&ev, "Status").unwrap_or("").to_string(),
        field(&ev, "Push").unwrap_or("").to_string(),
    )
}

fn alerts(mocks: &Mocks) -> Vec<RecordedRequest> {
    mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| {
            r.device_token.as_deref() == Some(TOKEN) && r.header("apns-push-type") == Some("alert")
        })
        .collect()
}

fn queued(a: &Asterisk) -> usize {
    a.cli("push show messages alice")
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// Alice's phone registers with push parameters for a short time and falls asleep: the
/// registration expires, the binding stays.
fn fall_asleep(a: &Asterisk) {
    fall_asleep_with(a, &pn(TOKEN), "…1de8f0");
}

fn fall_asleep_with(a: &Asterisk, params: &str, redacted: &str) {
    let mut phone = Phone::new("alice", a);
    assert_eq!(phone.register(params, 2), 200);
    wait_for(WAIT, || {
        let b = a.cli("push show bindings alice");
        (b.contains(redacted) && b.contains("expired")).then_some(())
    })
    .expect("binding kept, registration expired");
    wait_for(WAIT, || {
        (!a.cli("pjsip show contacts").contains("alice/sip:")).then_some(())
    })
    .expect("contact pruned");
}

#[test]
fn awake_phone_gets_the_message_at_once() {
    let (mocks, a, _sidecar) = setup("msg-awake", "");
    let mut ami = a.ami();
    let mut bob = Phone::new("bob", &a);

    // Nobody to deliver to: refused.
    assert_eq!(bob.message("alice", "into the void"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("FAILURE".to_string(), "NO_DEVICE".to_string())
    );

    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    assert_eq!(bob.message("alice", "hello awake"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("SUCCESS".to_string(), "DELIVERED".to_string())
    );
    let got = phone.listen(1, WAIT);
    assert_eq!(got, ["hello awake"], "{}", a.log());

    // The AMI's MessageSend reaches the technology too.
    let r = ami.action(
        "MessageSend",
        &[
            ("Destination", "push:alice"),
            ("From", "sip:carol@127.0.0.1"),
            ("Body", "via AMI"),
        ],
    );
    assert_eq!(field(&r[0], "Response"), Some("Success"), "{r:?}");
    let got = phone.listen(2, WAIT);
    assert_eq!(got, ["hello awake", "via AMI"], "{}", a.log());
    assert!(alerts(&mocks).is_empty(), "an awake phone is not pushed");
    assert_eq!(queued(&a), 0);

    // The technology, the function and the worker go with the module, and the threads that
    // ran MessageSend (dialplan, AMI) keep nothing of it mapped.
    let out = a.cli("module unload res_push.so");
    assert!(out.contains("Unloaded res_push.so"), "{out}");
    assert!(!a.maps_contain("res_push.so"), "library still mapped");
    assert_eq!(bob.message("alice", "after unload"), 202);
    assert_eq!(sent_status(&mut ami).0, "INVALID_PROTOCOL");
    assert!(
        a.cli("core show functions like PUSH_MESSAGE")
            .contains("0 matching"),
        "{}",
        a.cli("core show functions like PUSH_MESSAGE")
    );
    let out = a.cli("module load res_push.so");
    assert!(out.contains("Loaded res_push.so"), "{out}");
    assert_eq!(bob.message("alice", "after reload"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("SUCCESS".to_string(), "DELIVERED".to_string())
    );
    assert_eq!(
        phone.listen(3, WAIT),
        ["hello awake", "via AMI", "after reload"]
    );
}

#[test]
fn without_message_live_contact_a_registered_device_gets_it_on_its_next_register() {
    let (mocks, a, _sidecar) = setup("msg-nolive", "message_live_contact = no");
    let mut ami = a.ami();
    // Registered, but the app's contact may be dead while it sleeps: pushed, not sent.
    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "wake up"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("SUCCESS".to_string(), "QUEUED".to_string())
    );
    mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("alert push");
    assert!(phone.listen(1, Duration::from_secs(2)).is_empty());
    // The push brings the app's REGISTER (same contact): now it gets the message.
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    assert_eq!(phone.listen(1, WAIT), ["wake up"], "{}", a.log());
    assert_eq!(queued(&a), 0);
}

#[test]
fn sleeping_phone_is_pushed_and_gets_its_messages_on_register_once() {
    let (mocks, a, _sidecar) = setup("msg-sleep", "");
    let mut ami = a.ami();
    fall_asleep(&a);

    let mut bob = Phone::new("bob", &a);
    for i in 1..=3 {
        assert_eq!(bob.message("alice", &format!("hello {i}")), 202);
        assert_eq!(
            sent_status(&mut ami),
            ("SUCCESS".to_string(), "QUEUED".to_string())
        );
    }
    assert_eq!(queued(&a), 3, "{}", a.cli("push show messages"));
    // One alert push per message: who sent it, and the start of the text.
    let pushes = wait_for(WAIT, || {
        let p = alerts(&mocks);
        (p.len() >= 3).then_some(p)
    })
    .expect("three alert pushes");
    // (The sidecar sends pushes concurrently: they may arrive in any order.)
    let payloads: Vec<String> = pushes
        .iter()
        .map(|p| p.json.clone().expect("payload").to_string())
        .collect();
    for p in &payloads {
        assert!(p.contains("Message from bob"), "{p}");
    }
    for i in 1..=3 {
        let text = format!("hello {i}");
        assert!(
            payloads.iter().any(|p| p.contains(&text)),
            "{text}: {payloads:?}"
        );
    }
    assert!(
        !mocks
            .apns
            .requests()
            .iter()
            .any(|r| r.header("apns-push-type") == Some("voip")),
        "a message never sends a VoIP push"
    );

    // The phone wakes up and registers from a new port: the three MESSAGEs, in order.
    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let got = phone.listen(3, WAIT);
    assert_eq!(got, ["hello 1", "hello 2", "hello 3"], "{}", a.log());
    assert_eq!(queued(&a), 0);

    // Registering again delivers nothing more.
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let got = phone.listen(4, Duration::from_secs(3));
    assert_eq!(got.len(), 3, "delivered exactly once: {got:?}");
}

#[test]
fn queued_messages_survive_a_restart() {
    let (_mocks, mut a, _sidecar) = setup("msg-restart", "");
    let mut ami = a.ami();
    fall_asleep(&a);
    let mut bob = Phone::new("bob", &a);
    for body in ["before restart 1", "before restart 2"] {
        assert_eq!(bob.message("alice", body), 202);
        assert_eq!(sent_status(&mut ami).1, "QUEUED");
    }
    assert_eq!(queued(&a), 2);
    drop(ami);

    a.restart();
    assert_eq!(queued(&a), 2, "{}", a.log());
    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let got = phone.listen(2, WAIT);
    assert_eq!(got, ["before restart 1", "before restart 2"], "{}", a.log());
    assert_eq!(queued(&a), 0);
}

#[test]
fn full_queue_refuses_the_new_message_and_keeps_the_old() {
    let (mocks, a, _sidecar) = setup(
        "msg-full",
        "message_queue_max = 2\npush_message_preview = no",
    );
    let mut ami = a.ami();
    fall_asleep(&a);
    let mut bob = Phone::new("bob", &a);
    for body in ["first secret", "second secret"] {
        assert_eq!(bob.message("alice", body), 202);
        assert_eq!(sent_status(&mut ami).1, "QUEUED");
    }
    assert_eq!(bob.message("alice", "third secret"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("FAILURE".to_string(), "FULL".to_string())
    );
    assert_eq!(queued(&a), 2);

    // push_message_preview = no: the alert names the sender, not the text.
    let pushes = wait_for(WAIT, || {
        let p = alerts(&mocks);
        (p.len() >= 2).then_some(p)
    })
    .expect("two alert pushes");
    for p in &pushes {
        let payload = p.json.clone().expect("payload").to_string();
        assert!(payload.contains("Message from bob"), "{payload}");
        assert!(!payload.contains("secret"), "preview leaked: {payload}");
    }

    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let got = phone.listen(3, Duration::from_secs(5));
    assert_eq!(got, ["first secret", "second secret"], "{}", a.log());
}

#[test]
fn expired_message_is_not_delivered() {
    let (mocks, a, _sidecar) = setup("msg-expiry", "message_max_age = 2\npush_caller_id = no");
    let mut ami = a.ami();
    fall_asleep(&a);
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "stale news"), 202);
    assert_eq!(sent_status(&mut ami).1, "QUEUED");

    // push_caller_id = no: neither the sender nor the text leaves the PBX.
    let push = mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("alert push");
    let payload = push.json.clone().expect("payload").to_string();
    assert!(payload.contains("New message"), "{payload}");
    assert!(
        !payload.contains("bob") && !payload.contains("stale"),
        "{payload}"
    );

    // Older than message_max_age by the time the phone is back.
    std::thread::sleep(Duration::from_secs(3));
    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&pn(TOKEN), 600), 200);
    let got = phone.listen(1, Duration::from_secs(3));
    assert!(got.is_empty(), "expired message delivered: {got:?}");
    assert!(
        ami.wait_event(WAIT, |p| field(p, "Event") == Some("PushMessageExpired"))
            .is_some()
    );
    assert_eq!(queued(&a), 0);
}

#[test]
fn desk_phone_gets_it_now_and_the_sleeping_mobile_when_it_registers() {
    let (mocks, a, _sidecar) = setup("msg-mixed", "");
    let mut ami = a.ami();
    fall_asleep(&a);
    // A desk phone of the same user, no push parameters: always reachable.
    let mut desk = Phone::new("alice", &a);
    assert_eq!(desk.register("", 600), 200);
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "for every device"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("SUCCESS".to_string(), "DELIVERED".to_string())
    );
    assert_eq!(desk.listen(1, WAIT), ["for every device"]);
    // The mobile was pushed and has it queued.
    mocks
        .wait_apns(WAIT, |r| r.header("apns-push-type") == Some("alert"))
        .expect("alert push to the mobile");
    assert_eq!(queued(&a), 1);
    let mut mobile = Phone::new("alice", &a);
    assert_eq!(mobile.register(&pn(TOKEN), 600), 200);
    assert_eq!(mobile.listen(1, WAIT), ["for every device"], "{}", a.log());
    assert_eq!(queued(&a), 0);
    // The desk phone got it once.
    assert_eq!(desk.listen(2, Duration::from_secs(2)).len(), 1);
}

#[test]
fn a_dead_token_stops_holding_queued_messages() {
    let (mocks, a, _sidecar) = setup("msg-dead", "");
    let mut ami = a.ami();
    // Scripted once asleep: the refresh push of the short registration must get through.
    fall_asleep(&a);
    mocks
        .apns
        .script(TOKEN, vec![res_push_mocks::Behavior::Unregistered]);
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "to an uninstalled app"), 202);
    assert_eq!(sent_status(&mut ami).1, "QUEUED");
    // APNs says the app is gone: the binding is removed, and its message with it. (Read from
    // the CLI: the removal's AMI event may come before the dialplan's UserEvent, which
    // `sent_status` reads past.)
    wait_for(WAIT, || {
        (!a.cli("push show bindings alice").contains("…1de8f0")).then_some(())
    })
    .unwrap_or_else(|| panic!("binding not removed: {}", a.log()));
    wait_for(WAIT, || (queued(&a) == 0).then_some(()))
        .unwrap_or_else(|| panic!("{}", a.cli("push show messages")));
    // With no device left, the next message is refused.
    assert_eq!(bob.message("alice", "again"), 202);
    assert_eq!(
        sent_status(&mut ami),
        ("FAILURE".to_string(), "NO_DEVICE".to_string())
    );
}

#[test]
fn sleeping_android_phone_gets_an_fcm_alert_and_its_message() {
    let (mocks, a, _sidecar) = setup("msg-fcm", "");
    let mut ami = a.ami();
    let token = "fcm-token-for-messages-0123456789abcdef";
    let params = format!(
        ";pn-provider=fcm;pn-param={};pn-prid={token}",
        mocks.fcm.project_id()
    );
    fall_asleep_with(&a, &params, "…abcdef");
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "ping android"), 202);
    assert_eq!(sent_status(&mut ami).1, "QUEUED");
    let req = mocks
        .rt
        .block_on(mocks.fcm.wait_for_request(
            |r| {
                r.json
                    .as_ref()
                    .is_some_and(|j| j["message"]["data"]["kind"] == "message")
            },
            WAIT,
        ))
        .expect("FCM message push");
    let msg = &req.json.as_ref().expect("json")["message"];
    assert_eq!(msg["token"], token);
    assert_eq!(msg["data"]["title"], "Message from bob", "{msg}");
    assert_eq!(msg["data"]["body"], "ping android", "{msg}");
    assert_eq!(msg["android"]["priority"], "high");

    let mut phone = Phone::new("alice", &a);
    assert_eq!(phone.register(&params, 600), 200);
    assert_eq!(phone.listen(1, WAIT), ["ping android"], "{}", a.log());
}

#[test]
fn two_registers_racing_deliver_each_message_once() {
    let (_mocks, a, _sidecar) = setup("msg-race", "");
    let mut ami = a.ami();
    fall_asleep(&a);
    let mut bob = Phone::new("bob", &a);
    for i in 1..=3 {
        assert_eq!(bob.message("alice", &format!("race {i}")), 202);
        assert_eq!(sent_status(&mut ami).1, "QUEUED");
    }
    // The same device registers twice at once (from two sockets, as a phone switching
    // networks might): whichever REGISTER wins, each message arrives once in all.
    let phones: Vec<Phone> = (0..2).map(|_| Phone::new("alice", &a)).collect();
    let handles: Vec<_> = phones
        .into_iter()
        .map(|mut p| {
            std::thread::spawn(move || {
                assert_eq!(p.register(&pn(TOKEN), 600), 200);
                p.listen(3, Duration::from_secs(8))
            })
        })
        .collect();
    let mut got: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("phone thread"))
        .collect();
    got.sort();
    assert_eq!(got, ["race 1", "race 2", "race 3"], "{}", a.log());
    assert_eq!(queued(&a), 0);
}

/// Linphone for iOS registers two tokens (Flexisip's `pn-prid=VOIP:voip&REMOTE:remote`): calls
/// go to the PushKit one, the message alert to the remote one, which APNs takes for the
/// app's own topic (it refuses an alert to a PushKit token).
#[test]
fn ios_app_with_a_remote_token_gets_its_message_alert_there() {
    let (mocks, a, _sidecar) = setup("msg-remote-token", "");
    let mut ami = a.ami();
    let remote = "ab".repeat(32);
    let params = format!(
        ";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip&remote;pn-prid={TOKEN}:voip&{remote}:remote"
    );
    fall_asleep_with(&a, &params, "…1de8f0");
    let detail = a.cli("push show binding alice");
    assert!(detail.contains("Alert token     : …ababab"), "{detail}");
    let mut bob = Phone::new("bob", &a);
    assert_eq!(bob.message("alice", "to the remote token"), 202);
    assert_eq!(sent_status(&mut ami).1, "QUEUED");
    let alert = wait_for(WAIT, || {
        mocks.apns.requests().into_iter().find(|r| {
            r.header("apns-push-type") == Some("alert")
                && r.json.as_ref().is_some_and(|j| j["kind"] == "message")
        })
    })
    .expect("message alert");
    assert_eq!(alert.device_token.as_deref(), Some(remote.as_str()));
    assert_eq!(alert.header("apns-topic"), Some("com.example.phone"));
    assert!(alerts(&mocks).is_empty(), "nothing to the PushKit token");
}
