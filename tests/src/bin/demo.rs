//! `tests/demo.sh`: the whole story on a real Asterisk 22 with res_push.so, res-push-sidecar
//! and the mock APNs: a phone registers with RFC 8599 push parameters and goes to sleep, a call
//! comes in, the push goes out, the phone wakes, registers from a new address and answers.
//! Prints the timeline and checks it (push sent, REGISTER in, INVITE out, answered, in that
//! order): it exits non-zero when a step is missing, so the README test command runs it too.
//! `--keep` leaves everything running until Ctrl-C.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use res_push_itests::push_env::setup;
use res_push_itests::{Register, field, free_udp_port, status_field, wait_for};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    let t0 = Instant::now();
    let step = |what: &str| println!("\n[{:>6.2}s] {what}", t0.elapsed().as_secs_f64());

    step(
        "starting Asterisk 22 (Debian sid chroot) with res_push.so, res-push-sidecar, mock APNs and FCM",
    );
    let (mocks, a, _sidecar) = setup("demo", "wake_timeout = 15");
    print!("{}", a.cli("module show like res_push"));
    let status = a.cli("push show status");
    println!(
        "sidecar link: {}, apps: {}",
        status_field(&status, "Sidecar link").unwrap_or_default(),
        status_field(&status, "Apps").unwrap_or_default()
    );
    let mut ami = a.ami();

    step("alice's phone registers with RFC 8599 push parameters, then goes to sleep");
    let pn =
        format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={TOKEN}");
    let sleeping = Register::new("alice", &pn);
    let reg = a.register(&sleeping);
    println!("REGISTER answered: {}", reg.status_line());
    println!(
        "Feature-Caps: {}",
        reg.header("Feature-Caps").unwrap_or_default()
    );
    wait_for(Duration::from_secs(10), || {
        a.cli("push show bindings alice")
            .contains("…1de8f0")
            .then_some(())
    });
    print!("{}", a.cli("push show bindings alice"));

    step("bob calls alice: Dial(Push/alice)");
    let caller = a.sipp(
        "caller",
        include_str!("../../sipp/caller.xml"),
        free_udp_port(),
        &["-s", "mobile"],
    );

    let Some(push) = mocks.wait_apns(Duration::from_secs(15), |r| {
        r.device_token.as_deref() == Some(TOKEN)
    }) else {
        eprintln!("no push reached the mock APNs:\n{}", a.log());
        std::process::exit(1);
    };
    step(&format!(
        "APNs (mock) received a {} push, topic {}",
        push.header("apns-push-type").unwrap_or("?"),
        push.header("apns-topic").unwrap_or("?"),
    ));
    println!(
        "payload: {}",
        push.json.map(|j| j.to_string()).unwrap_or_default()
    );

    step("the phone wakes, registers from a new address and waits for the INVITE");
    let phone_port = free_udp_port();
    let phone = a.sipp(
        "phone",
        include_str!("../../sipp/phone.xml"),
        phone_port,
        &[],
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut wake = Register::new("alice", &pn);
    wake.contact_port = Some(phone_port);
    let reg = a.register(&wake);
    println!(
        "REGISTER from port {} (contact port {phone_port}): {}",
        wake.port,
        reg.status_line()
    );

    let woken = ami.wait_event(Duration::from_secs(10), |p| {
        field(p, "Event") == Some("PushWakeRegistered")
    });
    let phone = phone.wait();
    let caller = caller.wait();

    // The timeline from the messages themselves (SIPp's trace stamps, the mock's arrival
    // time), relative to the caller's INVITE.
    let call_in = caller.logged_at("INVITE sip:");
    let at = |t: Option<SystemTime>| -> Option<f64> {
        Some(t?.duration_since(call_in?).ok()?.as_secs_f64() * 1000.0)
    };
    let pushed = at(Some(
        UNIX_EPOCH + Duration::from_millis(push.real_received_at_ms),
    ));
    let registered = at(reg.logged_at("REGISTER sip:"));
    let invited = at(phone.logged_at("INVITE sip:"));
    let answered = at(caller.logged_at("SIP/2.0 200"));
    let show = |v: Option<f64>| v.map_or("     ?".to_string(), |v| format!("{v:>6.1}"));
    step("timeline (from message timestamps)");
    println!("  {:>6.1} ms  call in (INVITE from bob)", 0.0);
    println!("  {} ms  push at the (mock) APNs", show(pushed));
    println!("  {} ms  REGISTER from the woken phone", show(registered));
    println!(
        "  {} ms  INVITE at its fresh contact (the device waited {} ms for its REGISTER)",
        show(invited),
        woken
            .as_ref()
            .and_then(|p| field(p, "WaitMs"))
            .unwrap_or("?")
    );
    println!("  {} ms  answered (200 OK at bob)", show(answered));
    print!("{}", a.cli("push show bindings alice"));
    let mut wrong = Vec::new();
    if !reg.status_line().contains("200") {
        wrong.push("the woken phone's REGISTER was not accepted".to_string());
    }
    if woken.is_none() {
        wrong.push("no PushWakeRegistered event".to_string());
    }
    match (pushed, registered, invited, answered) {
        (Some(p), Some(r), Some(i), Some(a)) if p <= r && r <= i && i <= a => {}
        steps => wrong.push(format!(
            "timeline out of order or incomplete (push, REGISTER, INVITE, answer): {steps:?}"
        )),
    }
    if !(caller.ok && phone.ok) {
        wrong.push(format!(
            "call failed:\ncaller:\n{}\nphone:\n{}",
            caller.trace, phone.trace
        ));
    }
    if !wrong.is_empty() {
        eprintln!("demo FAILED:\n{}\n{}", wrong.join("\n"), a.log());
        std::process::exit(1);
    }
    println!("demo timeline ok: push, REGISTER, INVITE, answer");

    if keep {
        step(&format!(
            "running; try: chroot {} asterisk -C {}/etc/asterisk.conf -r   (Ctrl-C stops everything)",
            res_push_itests::chroot().display(),
            a.dir
        ));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    step("stopping");
}
