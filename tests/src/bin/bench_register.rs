//! REGISTER throughput of one Asterisk with and without res_push loaded, measured side by side
//! in one run (after a warm-up, rounds alternate the order: without/with, with/without, ...)
//! with SIPp at a fixed high offered rate. The REGISTERs carry RFC 8599 parameters (or none,
//! with `plain`) in both phases; only the module differs. Target: with/without ≥ 0.95.
//! Prints figures; asserts nothing about time.
//!
//! `res-push-bench-register [registers-per-phase] [rounds] [plain]`

use std::fmt::Write as _;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use res_push_itests::{Asterisk, Options, free_udp_port, module_running, wait_for};

const USERS: usize = 200;
/// Offered rate: far above what Asterisk can take, so the figure is Asterisk's capacity, not
/// SIPp's pacing; the in-flight limit keeps it from drowning in retransmissions.
const RATE: u32 = 20000;
const CONCURRENT: u32 = 50;

fn main() {
    let mut args = std::env::args().skip(1);
    let per_phase: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(6000);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    // `plain`: REGISTERs without push parameters, to see what the hooks cost on their own.
    let plain = args.next().as_deref() == Some("plain");

    let mut pjsip = String::new();
    for i in 0..USERS {
        let _ = write!(
            pjsip,
            "\n[u{i}]\ntype = endpoint\ncontext = default\nallow = ulaw\naors = u{i}\n\n[u{i}]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\nminimum_expiration = 1\n"
        );
    }
    let a = Asterisk::start(
        "bench-register",
        Options {
            load_res_push: true,
            // No sidecar and no refresh pushes: this measures the REGISTER path only.
            push_conf: Some(
                "[general]\nsidecar_socket = /tmp/res-push-bench-none.sock\nrefresh_before = 0\n"
                    .into(),
            ),
            pjsip_append: pjsip,
            ..Options::default()
        },
    );
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..USERS {
        let _ = writeln!(csv, "u{i};{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
    }
    fs::write(a.host_dir.join("run/users.csv"), csv).expect("users.csv");
    let scenario = if plain {
        SCENARIO.replace(
            ";pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid=[field1]",
            "",
        )
    } else {
        SCENARIO.to_string()
    };
    fs::write(a.host_dir.join("run/bench.xml"), scenario).expect("scenario");

    println!(
        "REGISTER throughput ({}), {per_phase} REGISTERs per phase, offered {RATE}/s, {CONCURRENT} in flight, {USERS} users",
        if plain {
            "plain REGISTERs"
        } else {
            "RFC 8599 REGISTERs"
        }
    );
    // Warm-up (discarded): the first phase pays for caches and astdb pages either way.
    set_loaded(&a, false);
    let _ = phase(&a, per_phase / 2);
    // Each round measures both, in alternating order (ABBA) so slow drifts of the machine
    // cancel; the figure is the median of the per-round ratios, robust to one noisy phase.
    let (mut with, mut without, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut pair = [0.0f64; 2];
        for loaded in order {
            set_loaded(&a, loaded);
            let (rate, ok, failed) = phase(&a, per_phase);
            println!(
                "round {round} {:<16}: {rate:>8.0} REGISTER/s ({ok} ok, {failed} failed)",
                if loaded {
                    "with res_push"
                } else {
                    "without res_push"
                }
            );
            pair[loaded as usize] = rate;
        }
        without.push(pair[0]);
        with.push(pair[1]);
        ratios.push(pair[1] / pair[0]);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "REGISTER throughput with/without res_push: {:.0}/{:.0} REGISTER/s (means); per-round ratios {:.3}..{:.3}, median ratio {median:.3} (target >= 0.95)",
        mean(&with),
        mean(&without),
        ratios[0],
        ratios[ratios.len() - 1]
    );
    let bindings = a.cli("push show bindings");
    println!(
        "bindings at the end: {}",
        bindings.lines().last().unwrap_or("")
    );
}

fn set_loaded(a: &Asterisk, loaded: bool) {
    if module_running(a) != loaded {
        a.cli(if loaded {
            "module load res_push.so"
        } else {
            "module unload res_push.so"
        });
    }
    assert!(
        wait_for(Duration::from_secs(10), || (module_running(a) == loaded)
            .then_some(()))
        .is_some()
    );
}

/// Runs SIPp for one phase; returns (REGISTERs per second, successes, failures).
fn phase(a: &Asterisk, count: u32) -> (f64, u64, u64) {
    let stat = a.host_dir.join("run/stat.csv");
    let _ = fs::remove_file(&stat);
    let start = Instant::now();
    let status = Command::new("chroot")
        .arg(a.root())
        .args(["/usr/bin/sipp", &format!("127.0.0.1:{}", a.sip_port)])
        .args([
            "-sf",
            &format!("{}/run/bench.xml", a.dir),
            "-inf",
            &format!("{}/run/users.csv", a.dir),
        ])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args([
            "-r",
            &RATE.to_string(),
            "-l",
            &CONCURRENT.to_string(),
            "-m",
            &count.to_string(),
        ])
        .args([
            "-nostdin",
            "-timeout",
            "120s",
            "-trace_stat",
            "-stf",
            &format!("{}/run/stat.csv", a.dir),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run sipp");
    let elapsed = start.elapsed().as_secs_f64();
    let text = fs::read_to_string(&stat).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(';').collect();
    let last: Vec<&str> = lines.last().unwrap_or("").split(';').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (ok, failed) = (col("SuccessfulCall(C)"), col("FailedCall(C)"));
    if !status.success() && ok == 0 {
        eprintln!("sipp failed ({status}); Asterisk log:\n{}", a.log());
    }
    (ok as f64 / elapsed, ok, failed)
}

const SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench-register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port];transport=udp;pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid=[field1]>;expires=600
      Max-Forwards: 70
      Expires: 600
      User-Agent: res-push-bench
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;
