//! What a REGISTER costs Asterisk with res_push loaded, against the same Asterisk without it,
//! measured side by side, for REGISTERs with RFC 8599 push parameters (`pn`) and without
//! (`plain`).
//!
//! Two identical Asterisks run at once, res_push loaded in one of them, each driven by its own
//! SIPp offering far more REGISTERs than it can take, over the same window of wall time. The
//! main figure is Asterisk's CPU time per REGISTER: utime + stime of each Asterisk process
//! (`/proc/<pid>/stat`) over the window, divided by the REGISTERs it answered 200 OK. Measured
//! one after the other, the same figure moved by up to 1.9x between phases seconds apart on a
//! shared machine (other virtual machines on the host, frequency, cache), with or without
//! res_push alike; side by side, whatever slows the machine slows both. The throughput ratio
//! (REGISTERs answered in the same window) is kept beside it. Both Asterisks are pinned to CPU
//! 0 and both SIPps to CPU 1, so the two Asterisks compete for one core on equal terms.
//!
//! A round is one window per kind; rounds alternate which Asterisk has res_push and the order
//! of the kinds (ABBA), so a difference between the two processes or a drift cancels. Figures
//! are the median and the spread (min–max) of the per-window with/without ratios. Targets: CPU
//! ratio <= 1.05, throughput ratio >= 0.95. Prints figures; asserts nothing about time. The
//! last line is machine-readable:
//!
//! `BENCH register cpu_ratio_pn=… cpu_ratio_plain=… throughput_ratio_pn=… throughput_ratio_plain=… …`
//!
//! SIPp binds a new port per window, so each user's first REGISTER of a window comes from a new
//! address: about 1 REGISTER in 30 takes the moved-device path (stale contact listed and
//! removed), the rest are refreshes.
//!
//! `res-push-bench-register [--full] [--nice N] [--no-pin] [--perf DIR] [window-seconds] [rounds]`
//! (short by default: 3 s windows, 6 rounds, about a minute; `--full`: 10 s windows, 10 rounds).

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
/// The push parameters of the `pn` REGISTERs (removed for `plain`).
const PN_PARAMS: &str =
    ";pn-provider=apns;pn-param=DEF123GHIJ.com.example.phone.voip;pn-prid=[field1]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pn,
    Plain,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pn => "pn",
            Kind::Plain => "plain",
        }
    }
}

/// One Asterisk's figures over one window.
#[derive(Clone, Copy, Default)]
struct Phase {
    /// REGISTERs answered 200 OK per second of the window.
    rate: f64,
    /// Asterisk CPU seconds (user + system) per REGISTER answered, in µs.
    cpu_us: f64,
    ok: u64,
    /// REGISTERs SIPp counts as failed: those still in flight when the window closed (at
    /// most `CONCURRENT`), and any that really failed.
    failed: u64,
    /// CPUs this Asterisk kept busy over the window.
    asterisk_busy: f64,
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full");
    args.retain(|a| a != "--full");
    // `--perf DIR`: record a CPU profile of each Asterisk (perf, cpu-clock, DWARF call graphs)
    // during each window, into DIR/<kind>-<with|without>-<round>.data (the figures of such a
    // run include perf's own overhead).
    let perf_dir = args.iter().position(|a| a == "--perf").map(|i| {
        let dir = args.get(i + 1).cloned().expect("--perf DIR");
        args.drain(i..i + 2);
        dir
    });
    // `--nice N`: Asterisk and SIPp run at this nice value (default -10), so other work on a
    // shared machine disturbs the windows less; `--nice 0` leaves them alone.
    let nice: i32 = match args.iter().position(|a| a == "--nice") {
        Some(i) => {
            let n = args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .expect("--nice N");
            args.drain(i..i + 2);
            n
        }
        None => -10,
    };
    // `--no-pin`: leave the Asterisks and SIPps to the scheduler.
    let no_pin = args.iter().any(|a| a == "--no-pin");
    args.retain(|a| a != "--no-pin");
    let (default_window, default_rounds) = if full { (10, 10) } else { (3, 6) };
    let window: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_window)
        .max(1);
    let rounds: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_rounds)
        .max(1);

    let mut pjsip = String::new();
    for i in 0..USERS {
        let _ = write!(
            pjsip,
            "\n[u{i}]\ntype = endpoint\ncontext = default\nallow = ulaw\naors = u{i}\n\n[u{i}]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\nminimum_expiration = 1\n"
        );
    }
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..USERS {
        let _ = writeln!(csv, "u{i};{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
    }
    let nodes: Vec<Asterisk> = ["bench-register-a", "bench-register-b"]
        .into_iter()
        .map(|name| {
            let start = || {
                Asterisk::start(
                    name,
                    Options {
                        load_res_push: true,
                        // No sidecar and no refresh pushes: this measures the REGISTER path
                        // only.
                        push_conf: Some(
                            "[general]\nsidecar_socket = /tmp/res-push-bench-none.sock\nrefresh_before = 0\n"
                                .into(),
                        ),
                        pjsip_append: pjsip.clone(),
                        ..Options::default()
                    },
                )
            };
            // The port picked for one Asterisk can be taken by a socket of the other before it
            // binds it (the kernel hands out the same ephemeral ports); such an Asterisk runs
            // without its SIP transport, so it is started again.
            let mut a = start();
            for _ in 0..3 {
                if a.cli("pjsip show transports").contains("transport-udp") {
                    break;
                }
                a = start();
            }
            fs::write(a.host_dir.join("run/users.csv"), &csv).expect("users.csv");
            fs::write(a.host_dir.join("run/pn.xml"), SCENARIO).expect("scenario");
            fs::write(
                a.host_dir.join("run/plain.xml"),
                SCENARIO.replace(PN_PARAMS, ""),
            )
            .expect("scenario");
            a
        })
        .collect();
    let tck = clock_ticks();
    let pinned = !no_pin && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    for a in &nodes {
        if nice != 0 {
            let tids: Vec<String> = fs::read_dir(format!("/proc/{}/task", a.pid()))
                .expect("tasks")
                .filter_map(|t| Some(t.ok()?.file_name().to_string_lossy().into_owned()))
                .collect();
            // Every thread: on Linux a nice value is per thread (new ones inherit their
            // creator's).
            let _ = Command::new("renice")
                .args(["-n", &nice.to_string(), "-p"])
                .args(&tids)
                .stdout(Stdio::null())
                .status();
        }
        if pinned {
            let ok = Command::new("taskset")
                .args(["-a", "-p", "-c", "0"])
                .arg(a.pid().to_string())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "taskset could not pin Asterisk to CPU 0");
        }
    }

    println!(
        "REGISTER cost with/without res_push, side by side: two Asterisks (pids {} and {}), res_push in one, each offered {RATE}/s by its own SIPp ({CONCURRENT} in flight, {USERS} users), {window} s windows, {rounds} ABBA rounds; CPU from /proc/<pid>/stat ({tck} ticks/s){}{}{}",
        nodes[0].pid(),
        nodes[1].pid(),
        if full { ", --full" } else { "" },
        if nice != 0 {
            format!(", Asterisk and SIPp at nice {nice}")
        } else {
            String::new()
        },
        if pinned {
            ", both Asterisks pinned to CPU 0 and both SIPps to CPU 1"
        } else {
            ""
        }
    );
    // Warm-up (discarded): the first windows pay for caches and astdb pages either way.
    for with in [0, 1] {
        roles(&nodes, with);
        for kind in [Kind::Pn, Kind::Plain] {
            let _ = duel(&nodes, kind, 1, tck, nice, pinned, None);
        }
    }
    // [kind] -> per-window (with, without).
    let mut seen: [Vec<(Phase, Phase)>; 2] = Default::default();
    for round in 0..rounds {
        // Which Asterisk has res_push, and the order of the kinds, alternate.
        let with = round % 2;
        roles(&nodes, with);
        let mut kinds = vec![Kind::Pn, Kind::Plain];
        if (round / 2) % 2 == 1 {
            kinds.reverse();
        }
        for kind in kinds {
            let perf = perf_dir
                .as_ref()
                .map(|dir| (dir.as_str(), format!("{}-{{}}-{round}", kind.name())));
            let [p0, p1] = duel(&nodes, kind, window, tck, nice, pinned, perf);
            let (w, wo) = if with == 0 { (p0, p1) } else { (p1, p0) };
            for (label, p) in [("with res_push", w), ("without res_push", wo)] {
                println!(
                    "round {round} {:<5} {label:<16}: {:>6.0} REGISTER/s, {:>6.1} µs CPU per REGISTER ({} ok, {} unanswered when the window closed; Asterisk {:.2} cores)",
                    kind.name(),
                    p.rate,
                    p.cpu_us,
                    p.ok,
                    p.failed,
                    p.asterisk_busy
                );
            }
            seen[kind as usize].push((w, wo));
        }
        if round == 0 {
            let bindings = nodes[with].cli("push show bindings");
            println!(
                "  (bindings held by res_push: {})",
                bindings.lines().last().unwrap_or("").trim()
            );
        }
    }

    // (kind, CPU ratio, throughput ratio, µs with, µs without).
    let mut results = Vec::new();
    for kind in [Kind::Pn, Kind::Plain] {
        let pairs = &seen[kind as usize];
        let cpu = Stats::of(pairs.iter().map(|(w, wo)| w.cpu_us / wo.cpu_us));
        let thr = Stats::of(pairs.iter().map(|(w, wo)| w.rate / wo.rate));
        let us_with = Stats::of(pairs.iter().map(|(w, _)| w.cpu_us));
        let us_without = Stats::of(pairs.iter().map(|(_, wo)| wo.cpu_us));
        // Up to CONCURRENT per window are cut off by its end; more means real failures.
        let failed: u64 = pairs
            .iter()
            .map(|(w, wo)| {
                w.failed.saturating_sub(u64::from(CONCURRENT))
                    + wo.failed.saturating_sub(u64::from(CONCURRENT))
            })
            .sum();
        println!(
            "{:<5}: CPU per REGISTER {:.1} µs with, {:.1} µs without (medians); CPU ratio median {:.3} ({:.3}–{:.3}, target <= 1.05); throughput ratio median {:.3} ({:.3}–{:.3}, target >= 0.95){}",
            kind.name(),
            us_with.median,
            us_without.median,
            cpu.median,
            cpu.min,
            cpu.max,
            thr.median,
            thr.min,
            thr.max,
            if failed > 0 {
                format!("; {failed} REGISTERs failed beyond those the windows cut off")
            } else {
                String::new()
            }
        );
        results.push((kind.name(), cpu, thr, us_with, us_without));
    }
    let mut bench = String::from("BENCH register");
    for (k, cpu, ..) in &results {
        let _ = write!(bench, " cpu_ratio_{k}={:.3}", cpu.median);
    }
    for (k, _, thr, ..) in &results {
        let _ = write!(bench, " throughput_ratio_{k}={:.3}", thr.median);
    }
    for (k, cpu, thr, us_with, us_without) in &results {
        let _ = write!(
            bench,
            " cpu_ratio_{k}_min={:.3} cpu_ratio_{k}_max={:.3} throughput_ratio_{k}_min={:.3} throughput_ratio_{k}_max={:.3} cpu_us_{k}_with={:.1} cpu_us_{k}_without={:.1}",
            cpu.min, cpu.max, thr.min, thr.max, us_with.median, us_without.median
        );
    }
    println!("{bench} rounds={rounds} window_s={window}");
}

/// res_push loaded in `nodes[with]` only.
fn roles(nodes: &[Asterisk], with: usize) {
    for (i, a) in nodes.iter().enumerate() {
        set_loaded(a, i == with);
    }
}

/// Median and spread of a few figures.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Stats {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Stats {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// USER_HZ, the unit of utime and stime in `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on
/// every Linux architecture Asterisk runs on).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in clock ticks (all its threads, live and exited).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let field = |i: usize| fields[i - 3].parse::<u64>().expect("stat field");
    field(14) + field(15)
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

/// One window: both SIPps at once, each at its own Asterisk, for `window` seconds. With
/// `perf = (dir, name)`, each Asterisk is profiled into `dir/<name with|without>.data` (the `{}`
/// of `name` becomes the Asterisk's role).
fn duel(
    nodes: &[Asterisk],
    kind: Kind,
    window: u32,
    tck: f64,
    nice: i32,
    pinned: bool,
    perf: Option<(&str, String)>,
) -> [Phase; 2] {
    for a in nodes {
        let _ = fs::remove_file(a.host_dir.join("run/stat.csv"));
    }
    // Let what the module load or the CLI started settle, so the window holds REGISTERs only.
    std::thread::sleep(Duration::from_millis(300));
    let profilers: Vec<_> = perf
        .iter()
        .flat_map(|(dir, name)| {
            nodes.iter().map(move |a| {
                let role = if module_running(a) { "with" } else { "without" };
                Command::new("perf")
                    .args(["record", "-q", "-e", "cpu-clock", "-F", "4000"])
                    .args(["--call-graph", "dwarf,16384", "-p"])
                    .arg(a.pid().to_string())
                    .arg("-o")
                    .arg(format!("{dir}/{}.data", name.replace("{}", role)))
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("run perf")
            })
        })
        .collect();
    let before: Vec<u64> = nodes.iter().map(|a| cpu_ticks(a.pid())).collect();
    let start = Instant::now();
    let sipps: Vec<_> = nodes
        .iter()
        .map(|a| {
            let mut c = if pinned {
                let mut c = Command::new("taskset");
                c.args(["-c", "1", "nice"]);
                c
            } else {
                Command::new("nice")
            };
            c.args(["-n", &nice.to_string(), "chroot"])
                .arg(a.root())
                .args(["/usr/bin/sipp", &format!("127.0.0.1:{}", a.sip_port)])
                .args([
                    "-sf",
                    &format!("{}/run/{}.xml", a.dir, kind.name()),
                    "-inf",
                    &format!("{}/run/users.csv", a.dir),
                ])
                .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
                .args(["-r", &RATE.to_string(), "-l", &CONCURRENT.to_string()])
                // Ends after the window, however many it answered.
                .args(["-timeout", &format!("{window}s")])
                .args([
                    "-nostdin",
                    "-trace_stat",
                    "-stf",
                    &format!("{}/run/stat.csv", a.dir),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("run sipp")
        })
        .collect();
    for mut sipp in sipps {
        let _ = sipp.wait();
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Work the REGISTERs queued (the registry's worker, astdb writes) belongs to them too.
    std::thread::sleep(Duration::from_millis(100));
    let after: Vec<u64> = nodes.iter().map(|a| cpu_ticks(a.pid())).collect();
    for mut p in profilers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = p.wait();
    }
    let phase = |i: usize| {
        let a = &nodes[i];
        let text = fs::read_to_string(a.host_dir.join("run/stat.csv")).unwrap_or_default();
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
        assert!(
            ok > 0,
            "SIPp got no REGISTER answered by {}; Asterisk log:\n{}",
            a.dir,
            a.log()
        );
        let cpu = (after[i] - before[i]) as f64 / tck;
        Phase {
            rate: ok as f64 / elapsed,
            cpu_us: cpu * 1e6 / ok as f64,
            ok,
            failed,
            asterisk_busy: cpu / elapsed,
        }
    };
    [phase(0), phase(1)]
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
