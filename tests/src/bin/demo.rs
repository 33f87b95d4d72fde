//! `tests/demo.sh`: the whole story on a real Asterisk 22 with res_push.so, res-push-sidecar
//! and the mock APNs: a phone registers with RFC 8599 push parameters and goes to sleep, a call
//! comes in, the push goes out, the phone wakes, registers from a new address and answers.
//! Prints the timeline and checks it (push sent, REGISTER in, INVITE out, answered, in that
//! order): it exits non-zero when a step is missing, so the README test command runs it too.
//! `--keep` leaves everything running until Ctrl-C.

use std::time::{Duration, Instant, SystemTime};

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
    let call_start = Instant::now();
    let call_wall = SystemTime::now();
    let caller = a.sipp(
        "caller",
        include_str!("../../sipp/caller.xml"),
        free_udp_port(),
        &["-s", "mobile"],
    );
    let ms = |i: Instant| i.duration_since(call_start).as_millis();

    let Some(push) = mocks.wait_apns(Duration::from_secs(15), |r| {
        r.device_token.as_deref() == Some(TOKEN)
    }) else {
        eprintln!("no push reached the mock APNs:\n{}", a.log());
        std::process::exit(1);
    };
    let pushed = Instant::now();
    step(&format!(
        "APNs (mock) received a {} push, topic {}, {} ms after the call came in",
        push.header("apns-push-type").unwrap_or("?"),
        push.header("apns-topic").unwrap_or("?"),
        ms(pushed)
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
    let registered = Instant::now();
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
    let done = Instant::now();
    // When the INVITE reached the woken phone, from its SIPp trace (wall clock).
    let invite_ms = phone
        .logged_at("INVITE sip:")
        .and_then(|t| t.duration_since(call_wall).ok())
        .map(|d| d.as_millis());

    step("timeline");
    println!("  {:>6} ms  call in (INVITE from bob)", 0);
    println!(
        "  {:>6} ms  push sent (recorded by the mock APNs)",
        ms(pushed)
    );
    println!(
        "  {:>6} ms  REGISTER in from the woken phone",
        ms(registered)
    );
    println!(
        "  {:>6} ms  INVITE out to the fresh contact (the device waited {} ms for its REGISTER)",
        invite_ms.map_or("?".to_string(), |m| m.to_string()),
        woken
            .as_ref()
            .and_then(|p| field(p, "WaitMs"))
            .unwrap_or("?")
    );
    println!(
        "  {:>6} ms  answered, talked 1 s, hung up ({})",
        ms(done),
        if caller.ok && phone.ok {
            "ok"
        } else {
            "FAILED"
        }
    );
    print!("{}", a.cli("push show bindings alice"));
    let mut wrong = Vec::new();
    if !reg.status_line().contains("200") {
        wrong.push("the woken phone's REGISTER was not accepted".to_string());
    }
    if woken.is_none() {
        wrong.push("no PushWakeRegistered event".to_string());
    }
    match invite_ms {
        None => wrong.push("no INVITE reached the woken phone".to_string()),
        Some(i) if i < ms(pushed).min(ms(registered)) => wrong.push(format!(
            "INVITE at {i} ms, before the push ({} ms) and the REGISTER ({} ms)",
            ms(pushed),
            ms(registered)
        )),
        Some(_) => {}
    }
    if ms(registered) < ms(pushed) {
        wrong.push("REGISTER before the push".to_string());
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
