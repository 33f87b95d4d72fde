//! What a REGISTER costs Asterisk with res_push loaded, against the same Asterisk without it,
//! measured side by side in one run, for REGISTERs with RFC 8599 push parameters (`pn`) and
//! without (`plain`).
//!
//! The main figure is Asterisk's CPU time per REGISTER: utime + stime of the Asterisk process
//! (`/proc/<pid>/stat`) over each phase, divided by the REGISTERs answered 200 OK. Unlike
//! throughput, it hardly moves when the other core is busy with someone else's work, so it can
//! show a 5% cost on a shared 2-core machine. Throughput (SIPp at a fixed high offered rate)
//! is kept beside it.
//!
//! One round is four phases, {without, with} res_push × {pn, plain}, the two phases of each
//! ratio back to back; rounds mirror each other (ABBA: without-pn, with-pn, with-plain,
//! without-plain, then without-plain, with-plain, with-pn, without-pn) so slow drifts of the
//! machine cancel. The module is unloaded and loaded between phases. Figures are the median
//! and the spread (min–max) of the per-round with/without ratios. Targets: CPU ratio ≤ 1.05,
//! throughput ratio ≥ 0.95. Prints figures; asserts nothing about time. The last line is machine-readable:
//!
//! `BENCH register cpu_ratio_pn=… cpu_ratio_plain=… throughput_ratio_pn=… throughput_ratio_plain=… …`
//!
//! SIPp binds a new port per phase, so each user's first REGISTER of a phase comes from a new
//! address: with the defaults 1 REGISTER in 30 takes the moved-device path (stale contact
//! listed and removed), the rest are refreshes.
//!
//! `res-push-bench-register [--full] [--nice N] [--perf DIR] [registers-per-phase] [rounds]`
//! (short by default: 6000 per phase, 5 rounds, about a minute; `--full`: 20000 per phase,
//! 10 rounds).

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

/// One phase's figures.
#[derive(Clone, Copy, Default)]
struct Phase {
    /// REGISTERs answered 200 OK per second of wall time.
    rate: f64,
    /// Asterisk CPU seconds (user + system) per REGISTER answered, in µs.
    cpu_us: f64,
    ok: u64,
    failed: u64,
    /// CPUs busy over the phase, all processes (Asterisk, SIPp and whoever else shares the
    /// machine), and Asterisk alone.
    machine_busy: f64,
    asterisk_busy: f64,
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full");
    args.retain(|a| a != "--full");
    // `--perf DIR`: record a CPU profile of Asterisk (perf, cpu-clock, DWARF call graphs)
    // during each phase, into DIR/<kind>-<with|without>-<round>.data (the figures of such a
    // run include perf's own overhead).
    let perf_dir = args.iter().position(|a| a == "--perf").map(|i| {
        let dir = args.get(i + 1).cloned().expect("--perf DIR");
        args.drain(i..i + 2);
        dir
    });
    // `--nice N`: Asterisk and SIPp run at this nice value (default -10), so other work on a
    // shared machine disturbs the phases less; `--nice 0` leaves them alone.
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
    let (default_count, default_rounds) = if full { (20000, 10) } else { (6000, 5) };
    let per_phase: u32 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(default_count);
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
    fs::write(a.host_dir.join("run/pn.xml"), SCENARIO).expect("scenario");
    fs::write(
        a.host_dir.join("run/plain.xml"),
        SCENARIO.replace(PN_PARAMS, ""),
    )
    .expect("scenario");
    let tck = clock_ticks();
    if nice != 0 {
        let tids: Vec<String> = fs::read_dir(format!("/proc/{}/task", a.pid()))
            .expect("tasks")
            .filter_map(|t| Some(t.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        // Every thread: on Linux a nice value is per thread (new ones inherit their creator's).
        let _ = Command::new("renice")
            .args(["-n", &nice.to_string(), "-p"])
            .args(&tids)
            .stdout(Stdio::null())
            .status();
    }

    println!(
        "REGISTER cost with/without res_push: {per_phase} REGISTERs per phase, {rounds} ABBA rounds of 4 phases, offered {RATE}/s, {CONCURRENT} in flight, {USERS} users; Asterisk pid {}, CPU from /proc/<pid>/stat ({tck} ticks/s){}{}",
        a.pid(),
        if full { ", --full" } else { "" },
        if nice != 0 {
            format!(", Asterisk and SIPp at nice {nice}")
        } else {
            String::new()
        }
    );
    // Warm-up (discarded): the first phases pay for caches and astdb pages either way.
    for loaded in [false, true] {
        set_loaded(&a, loaded);
        for kind in [Kind::Pn, Kind::Plain] {
            let _ = phase(&a, kind, per_phase / 2, tck, nice);
        }
    }
    // [kind][loaded] -> per-round phases.
    let mut seen: [[Vec<Phase>; 2]; 2] = Default::default();
    for round in 0..rounds {
        // The two phases of a ratio run back to back; the next round mirrors this one.
        let mut order = vec![
            (false, Kind::Pn),
            (true, Kind::Pn),
            (true, Kind::Plain),
            (false, Kind::Plain),
        ];
        if round % 2 == 1 {
            order.reverse();
        }
        for (loaded, kind) in order {
            set_loaded(&a, loaded);
            let perf = perf_dir.as_ref().map(|dir| {
                Command::new("perf")
                    .args(["record", "-q", "-e", "cpu-clock", "-F", "1000"])
                    .args(["--call-graph", "dwarf,16384", "-p"])
                    .arg(a.pid().to_string())
                    .arg("-o")
                    .arg(format!(
                        "{dir}/{}-{}-{round}.data",
                        kind.name(),
                        if loaded { "with" } else { "without" }
                    ))
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("run perf")
            });
            let p = phase(&a, kind, per_phase, tck, nice);
            if let Some(mut perf) = perf {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(perf.id() as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
                let _ = perf.wait();
            }
            println!(
                "round {round} {:<5} {:<16}: {:>6.0} REGISTER/s, {:>6.1} µs CPU per REGISTER ({} ok, {} failed; machine busy {:.2} cores, Asterisk {:.2})",
                kind.name(),
                if loaded {
                    "with res_push"
                } else {
                    "without res_push"
                },
                p.rate,
                p.cpu_us,
                p.ok,
                p.failed,
                p.machine_busy,
                p.asterisk_busy
            );
            seen[kind as usize][loaded as usize].push(p);
        }
        if round == 0 {
            set_loaded(&a, true);
            let bindings = a.cli("push show bindings");
            println!(
                "  (bindings held by res_push: {})",
                bindings.lines().last().unwrap_or("").trim()
            );
        }
    }

    // (kind, CPU ratio, throughput ratio, µs with, µs without).
    let mut results = Vec::new();
    for kind in [Kind::Pn, Kind::Plain] {
        let [without, with] = &seen[kind as usize];
        let cpu = Stats::of(with.iter().zip(without).map(|(w, wo)| w.cpu_us / wo.cpu_us));
        let thr = Stats::of(with.iter().zip(without).map(|(w, wo)| w.rate / wo.rate));
        let us_with = Stats::of(with.iter().map(|p| p.cpu_us));
        let us_without = Stats::of(without.iter().map(|p| p.cpu_us));
        let failed: u64 = with.iter().chain(without).map(|p| p.failed).sum();
        // Contention on a shared machine only ever adds CPU time per REGISTER: the least
        // disturbed phases (`_best`: min with / min without) are printed beside the medians.
        println!(
            "{:<5}: CPU per REGISTER {:.1} µs with, {:.1} µs without (medians; best phases {:.1} / {:.1}); CPU ratio median {:.3} ({:.3}–{:.3}, target <= 1.05); throughput ratio median {:.3} ({:.3}–{:.3}, target >= 0.95){}",
            kind.name(),
            us_with.median,
            us_without.median,
            us_with.min,
            us_without.min,
            cpu.median,
            cpu.min,
            cpu.max,
            thr.median,
            thr.min,
            thr.max,
            if failed > 0 {
                format!("; {failed} REGISTERs failed")
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
            " cpu_ratio_{k}_min={:.3} cpu_ratio_{k}_max={:.3} throughput_ratio_{k}_min={:.3} throughput_ratio_{k}_max={:.3} cpu_us_{k}_with={:.1} cpu_us_{k}_without={:.1} cpu_ratio_{k}_best={:.3}",
            cpu.min,
            cpu.max,
            thr.min,
            thr.max,
            us_with.median,
            us_without.median,
            us_with.min / us_without.min
        );
    }
    println!("{bench} rounds={rounds} per_phase={per_phase}");
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

/// Busy time of all CPUs (everything but idle and iowait), in clock ticks (`/proc/stat`).
fn machine_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let cpu = stat.lines().next().unwrap_or("");
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    cpu.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
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

/// Runs SIPp for one phase.
fn phase(a: &Asterisk, kind: Kind, count: u32, tck: f64, nice: i32) -> Phase {
    let stat = a.host_dir.join("run/stat.csv");
    let _ = fs::remove_file(&stat);
    // Let what the module load or the CLI started settle, so the window holds REGISTERs only.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_before = cpu_ticks(a.pid());
    let busy_before = machine_ticks();
    let start = Instant::now();
    let status = Command::new("nice")
        .args(["-n", &nice.to_string(), "chroot"])
        .arg(a.root())
        .args(["/usr/bin/sipp", &format!("127.0.0.1:{}", a.sip_port)])
        .args([
            "-sf",
            &format!("{}/run/{}.xml", a.dir, kind.name()),
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
    // Work the REGISTERs queued (the registry's worker, astdb writes) belongs to them too.
    std::thread::sleep(Duration::from_millis(100));
    let cpu = (cpu_ticks(a.pid()) - cpu_before) as f64 / tck;
    let busy = (machine_ticks() - busy_before) as f64 / tck;
    let window = start.elapsed().as_secs_f64();
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
    Phase {
        rate: ok as f64 / elapsed,
        cpu_us: cpu * 1e6 / ok as f64,
        ok,
        failed,
        machine_busy: busy / window,
        asterisk_busy: cpu / window,
    }
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
