//! `res-push-bench-wake`: what "the phone rings the moment it wakes, no polling" is worth,
//! measured side by side in one run on the real Asterisk + res_push.so + sidecar + mock APNs.
//!
//! Each call: bob dials alice, whose phone sleeps (its registered contact is dead). With
//! res_push (`Dial(Push/alice)`) the push reaches the mock APNs; the phone's SIP stack starts
//! on a new port and registers; Asterisk sends the INVITE there; the phone answers. The two
//! polling baselines are plain dialplan (`_poll-.` in tests/config/extensions.conf), checking
//! `PJSIP_DIAL_CONTACTS` every 250 ms (Wazo's dial_mobile) or every 5 s (XiVO's AGI) for a
//! contact the user did not have when the call came in; their "push" is a `UserEvent` at the
//! start of the loop (a free push, in their favour).
//!
//! Figures come from message timestamps, never from process start-up: SIPp's traces (µs wall
//! clock) for the caller's INVITE, the phone's REGISTER, the INVITE reaching the phone and the
//! caller's 200 OK; the mock's arrival time (ms) for the push.
//! - dial-to-push: the caller's INVITE → the push request reaches the mock;
//! - wake-to-ring: the phone's REGISTER → the INVITE reaches the phone's new contact;
//! - answer wait: the caller's INVITE → its 200 OK, with a phone that registers 800 ms after
//!   its push (APNs' mean delivery time).
//!
//! Short by default (what the README test command runs: figures printed, nothing asserted on
//! time); `--full` runs 200 calls per mode. Ends with one `BENCH wake ...` line; fails (after
//! printing it) when a call failed, as the figures then cover fewer calls than asked for.

use std::time::{Duration, Instant, SystemTime};

use res_push_itests::push_env::{Mocks, setup_with};
use res_push_itests::{Ami, Asterisk, Options, Register, SipExchange, field, free_udp_port};

const TOKEN: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";
const WAIT: Duration = Duration::from_secs(20);
/// APNs' mean delivery time: how long after its push the phone registers, for the answer wait.
const DELIVERY: Duration = Duration::from_millis(800);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ResPush,
    Poll250,
    Poll5s,
}

impl Mode {
    fn exten(self) -> &'static str {
        match self {
            Mode::ResPush => "mobile",
            Mode::Poll250 => "poll-0.25",
            Mode::Poll5s => "poll-5",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::ResPush => "res_push",
            Mode::Poll250 => "poll 250 ms",
            Mode::Poll5s => "poll 5 s",
        }
    }
}

/// One call's figures, in ms.
#[derive(Debug, Default)]
struct Sample {
    dial_to_push: Option<f64>,
    wake_to_ring: Option<f64>,
    answer_wait: Option<f64>,
}

fn ms_between(a: SystemTime, b: SystemTime) -> Option<f64> {
    b.duration_since(a).ok().map(|d| d.as_secs_f64() * 1000.0)
}

fn pn() -> String {
    format!(";pn-provider=apns;pn-param=TEAM123456.com.example.phone.voip;pn-prid={TOKEN}")
}

struct Bench {
    mocks: Mocks,
    a: Asterisk,
    ami: Ami,
    caller: String,
    phone: &'static str,
}

impl Bench {
    /// One call; `delay`: how long after its push (or poll start) the phone registers.
    fn call(&mut self, mode: Mode, delay: Duration) -> Result<Sample, String> {
        let seen = self.mocks.apns.requests().len();
        if mode != Mode::ResPush {
            // A fresh manager session per polling call, logged in before the call starts: one
            // left unread through the res_push calls (hundreds with --full) fills its socket,
            // and Asterisk drops a manager session it cannot write to.
            self.ami = self.a.ami();
        }
        let caller = self.a.sipp(
            "caller",
            &self.caller,
            free_udp_port(),
            &["-s", mode.exten()],
        );
        // The moment the phone would be woken: the push at the mock, or the poll loop's start.
        let pushed_ms = match mode {
            Mode::ResPush => {
                let push = self
                    .mocks
                    .wait_apns(WAIT, |r| {
                        r.seq as usize > seen && r.device_token.as_deref() == Some(TOKEN)
                    })
                    .ok_or("no push reached the mock")?;
                Some(push.real_received_at_ms)
            }
            _ => {
                self.ami
                    .wait_event(WAIT, |p| field(p, "UserEvent") == Some("PollStart"))
                    .ok_or("the poll loop did not start")?;
                None
            }
        };
        let woken = Instant::now();
        let port = free_udp_port();
        let phone = self.a.sipp("phone", self.phone, port, &["-timeout", "30s"]);
        // Its SIP stack is up (SIPp listens within a few ms; the INVITE comes after the REGISTER).
        std::thread::sleep(Duration::from_millis(50).max(delay.saturating_sub(woken.elapsed())));
        let mut reg = Register::new("alice", &pn());
        reg.contact_port = Some(port);
        let reg = self.a.register(&reg);
        if !reg.ok {
            return Err(format!("REGISTER failed:\n{}", reg.trace));
        }
        let (phone, caller) = (phone.wait(), caller.wait());
        if !(phone.ok && caller.ok) {
            return Err(format!("call failed:\n{}\n{}", caller.trace, phone.trace));
        }
        Ok(sample(&caller, &reg, &phone, pushed_ms))
    }
}

fn sample(
    caller: &SipExchange,
    reg: &SipExchange,
    phone: &SipExchange,
    pushed_ms: Option<u64>,
) -> Sample {
    let invite_out = caller.logged_at("INVITE sip:");
    let answer = caller.logged_at("SIP/2.0 200");
    let register = reg.logged_at("REGISTER sip:");
    let rung = phone.logged_at("INVITE sip:");
    let epoch_ms = |t: SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1000.0)
            .ok()
    };
    Sample {
        dial_to_push: match (invite_out.and_then(epoch_ms), pushed_ms) {
            (Some(i), Some(p)) => Some(p as f64 - i),
            _ => None,
        },
        wake_to_ring: register.zip(rung).and_then(|(r, i)| ms_between(r, i)),
        answer_wait: invite_out.zip(answer).and_then(|(i, a)| ms_between(i, a)),
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn collect(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
    samples.iter().filter_map(f).collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--full");
    let (calls, slow_calls, wait_calls) = if full { (200, 200, 20) } else { (20, 4, 3) };
    let (mocks, a, sidecar) = setup_with(
        "bench-wake",
        "wake_timeout = 15",
        Options {
            rtp_ports: 2000,
            ..Options::default()
        },
    );
    let ami = a.ami();
    // A short call: the hold is not what is measured.
    let caller = include_str!("../../sipp/caller.xml").replace(
        "<pause milliseconds=\"1000\"/>",
        "<pause milliseconds=\"100\"/>",
    );
    let mut b = Bench {
        mocks,
        a,
        ami,
        caller,
        phone: include_str!("../../sipp/phone.xml"),
    };
    // The phone registers once from an address nobody listens on, then sleeps; every call
    // wakes it to a new port, so every call starts with a dead contact.
    let asleep = b.a.register(&Register::new("alice", &pn()));
    assert!(asleep.ok, "first REGISTER: {}", asleep.trace);

    println!(
        "res-push-bench-wake: {calls} calls with res_push and with polling every 250 ms, {slow_calls} polling every 5 s, \
         {wait_calls} per mode with the phone registering {} ms after its push{}",
        DELIVERY.as_millis(),
        if full {
            ""
        } else {
            " (short run; --full for 200 calls)"
        }
    );
    // The first call after start: its push must not pay for a cold connection or token.
    let first = b.call(Mode::ResPush, Duration::ZERO).expect("first call");
    let first_push = first.dial_to_push.unwrap_or(f64::NAN);

    let mut results = Vec::new();
    let mut failed = 0usize;
    for (mode, n) in [
        (Mode::ResPush, calls),
        (Mode::Poll250, calls),
        (Mode::Poll5s, slow_calls),
    ] {
        let started = Instant::now();
        let mut fast = Vec::new();
        for _ in 0..n {
            match b.call(mode, Duration::ZERO) {
                Ok(s) => fast.push(s),
                Err(e) => {
                    failed += 1;
                    eprintln!("{}: call failed: {e}", mode.name());
                }
            }
        }
        let mut waits = Vec::new();
        for _ in 0..wait_calls {
            match b.call(mode, DELIVERY) {
                Ok(s) => waits.push(s),
                Err(e) => {
                    failed += 1;
                    eprintln!("{}: call failed: {e}", mode.name());
                }
            }
        }
        let wake = collect(&fast, |s| s.wake_to_ring);
        let dial = collect(&fast, |s| s.dial_to_push);
        let answer = collect(&waits, |s| s.answer_wait);
        println!(
            "{:<12} {:>3} calls in {:>5.1} s: wake-to-ring p50 {:>7.1} ms p99 {:>7.1} ms; dial-to-push p50 {:>5.1} ms p99 {:>5.1} ms; answer wait (register {} ms after push) p50 {:>7.1} ms",
            mode.name(),
            fast.len(),
            started.elapsed().as_secs_f64(),
            percentile(&wake, 50.0),
            percentile(&wake, 99.0),
            percentile(&dial, 50.0),
            percentile(&dial, 99.0),
            DELIVERY.as_millis(),
            percentile(&answer, 50.0),
        );
        results.push((mode, wake, dial, answer));
    }
    let get = |m: Mode| results.iter().find(|r| r.0 == m).expect("mode ran");
    let (_, wake, dial, answer) = get(Mode::ResPush);
    let (_, wake250, _, answer250) = get(Mode::Poll250);
    let (_, wake5, _, answer5) = get(Mode::Poll5s);
    let p50 = |v: &Vec<f64>| percentile(v, 50.0);
    println!(
        "first push after start: dial-to-push {first_push:.1} ms (p50 of the others {:.1} ms)",
        p50(dial)
    );
    println!(
        "targets: wake-to-ring p99 <= 10 ms, dial-to-push p99 <= 10 ms; sidecar: {}",
        if sidecar.log().contains("prewarm") {
            "prewarmed"
        } else {
            "no prewarm logged"
        }
    );
    println!(
        "BENCH wake wake_to_ring_p50_ms={:.1} wake_to_ring_p99_ms={:.1} dial_to_push_p50_ms={:.1} dial_to_push_p99_ms={:.1} \
         poll250_ratio={:.1} poll5s_ratio={:.1} answer_wait_ms={:.0} poll250_answer_wait_ms={:.0} poll5s_answer_wait_ms={:.0} \
         first_push_ms={:.1} calls={}",
        p50(wake),
        percentile(wake, 99.0),
        p50(dial),
        percentile(dial, 99.0),
        p50(wake250) / p50(wake),
        p50(wake5) / p50(wake),
        p50(answer),
        p50(answer250),
        p50(answer5),
        first_push,
        wake.len(),
    );
    // Figures over fewer calls than asked for (or none: NaN) are not the figures asked for.
    if failed > 0 {
        eprintln!("res-push-bench-wake: {failed} call(s) failed; the figures above are incomplete");
        std::process::exit(1);
    }
}
