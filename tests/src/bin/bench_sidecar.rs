//! Sidecar throughput and latency, with the machine's ceiling measured side by side.
//!
//! Starts the mock APNs and mock FCM in-process (loopback, TLS with a per-run CA) and the real
//! `res-push-sidecar` binary, then drives the sidecar through its Unix socket the way
//! `res_push.so` does: `Hello`, a `Configure` job carrying the apps of push.conf, then `Push`
//! jobs on a blocking socket, the jobs found queued written together (up to `MAX_BATCH_FRAMES`
//! per write, as the module's link thread writes them) and outcomes read through a buffer, as
//! its reader thread reads them. Jobs are kept at 1, 64 and 256 in flight (closed loop: an
//! outcome received lets the next job go), for APNs and for FCM.
//! Latency is job written → outcome read.
//!
//! The ceiling: the same mock driven by a bare HTTP/2 client (hyper over tokio-rustls with
//! ring, as in the sidecar) without the sidecar, on one connection with 256 streams in flight,
//! replaying the exact request (path, headers, body, bearer) the sidecar sent during warm-up.
//! At 256 in flight sidecar and ceiling phases alternate (ABBA) over a few rounds; the ratio is
//! the median of the per-round ratios.
//!
//! Also printed: the sidecar's peak RSS (`VmHWM`) and its CPU time (utime+stime) per push over
//! the measured phases. Targets: ≥ 10,000 pushes/s, p99 ≤ 20 ms, RSS ≤ 64 MiB, ratio ≥ 0.8;
//! nothing is asserted on time. The run fails only if a push is not accepted.
//!
//! The last line is machine-readable: `BENCH sidecar pushes_per_s= p50_ms= p99_ms= rss_mib=
//! ceiling_ratio=` at 256 in flight, the worse of APNs and FCM for each figure, then
//! `cpu_us_per_push=` and `ceiling_p99_ms=` (the bare client's own p99: when it is above the
//! 20 ms target, the machine rather than the sidecar sets the sidecar's p99), followed by the
//! per-provider figures.
//!
//! Fairness: both sides use one HTTP/2 connection per origin (the sidecar opens one per APNs
//! environment and one for FCM sends, as in production), the same TLS (rustls on ring, the
//! same CA), and the same request bytes. The sidecar's side also pays the module's half of the
//! Unix socket (this process's frame encoding and decoding), which is part of a push's path.
//!
//! `res-push-bench-sidecar [--full]`. The sidecar binary is `RES_PUSH_SIDECAR_BIN`, else the
//! `res-push-sidecar` next to this binary (build both with `--release` for real figures).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use res_push_itests::push_env::Mocks;
use res_push_mocks::{Endpoint, TestCa};
use res_push_proto::{
    AppConfig, ClientFrame, Job, MAX_BATCH_BYTES, MAX_BATCH_FRAMES, MIN_PROTOCOL_VERSION, Outcome,
    PROTOCOL_VERSION, Provider, PushData, PushKind, PushRequest, PushTarget, ServerFrame,
    encode_frame_into, read_frame, write_frame,
};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// The module's default `job_deadline_ms`.
const DEADLINE_MS: u64 = 10_000;
/// Distinct device tokens cycled through (the mocks accept any well-formed one).
const TOKENS: usize = 1024;
/// The levels of jobs in flight; the last one is the headline and is compared to the ceiling.
const LEVELS: [usize; 3] = [1, 64, 256];
const HEADLINE: usize = 256;

/// How many pushes each phase sends.
struct Counts {
    warmup: usize,
    /// Pushes at each level below the headline (1, 64).
    low: [usize; 2],
    /// Pushes per phase at the headline level, sidecar and ceiling alike.
    headline: usize,
    /// Sidecar/ceiling rounds at the headline level.
    rounds: usize,
}

const SHORT: Counts = Counts {
    warmup: 500,
    low: [300, 3000],
    headline: 4000,
    rounds: 4,
};
const FULL: Counts = Counts {
    warmup: 2000,
    low: [3000, 30_000],
    headline: 40_000,
    rounds: 4,
};

/// What one phase measured.
#[derive(Debug, Clone, Default)]
struct Phase {
    pushes: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// Sidecar CPU time over the phase (zero for the ceiling).
    cpu: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.pushes as f64 / self.elapsed.as_secs_f64()
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1].as_secs_f64() * 1000.0
    }
}

fn main() {
    let full = std::env::args().skip(1).any(|a| a == "--full");
    let counts = if full { FULL } else { SHORT };

    // The mocks as the integration tests start them (one CA, a directory for credentials and
    // the sidecar's socket, removed on drop).
    let mocks = Mocks::start("bench-sidecar");
    let Mocks {
        rt,
        apns,
        fcm,
        dir,
        ca,
    } = &mocks;
    let creds = apns.write_credentials(dir).expect("APNs credentials");
    let service_account = fcm.write_service_account(dir);

    let sidecar = SidecarProcess::start(dir);
    let pid = sidecar.pid();
    let mut link = Link::open(&dir.join("sidecar.sock"), pid);
    let ca_file = creds.ca_path.display().to_string();
    let ios = AppConfig {
        name: "ios".into(),
        provider: Provider::Apns,
        app_ids: vec![apns.bundle_ids()[0].clone()],
        environment: None,
        options: options(&[
            ("key_file", &creds.key_path.display().to_string()),
            ("key_id", &creds.key_id),
            ("team_id", &creds.team_id),
            ("apns_url", &apns.production_url()),
            ("apns_sandbox_url", &apns.sandbox_url()),
            ("ca_file", &ca_file),
        ]),
    };
    let android = AppConfig {
        name: "android".into(),
        provider: Provider::Fcm,
        app_ids: vec![fcm.project_id().to_owned()],
        environment: None,
        options: options(&[
            (
                "service_account_file",
                &service_account.display().to_string(),
            ),
            ("fcm_url", &fcm.url()),
            ("ca_file", &ca_file),
        ]),
    };
    link.configure(vec![ios, android]);

    let apns_app = format!("{}.{}.voip", creds.team_id, apns.bundle_ids()[0]);
    let providers = [
        (Provider::Apns, "APNs", apns_app),
        (Provider::Fcm, "FCM", fcm.project_id().to_owned()),
    ];
    // Warm-up with recording on: opens the HTTP/2 connections, signs the APNs token, fetches
    // the OAuth2 token, and leaves one request of each kind to replay for the ceiling.
    for (provider, _, app_id) in &providers {
        link.run(*provider, app_id, 64, counts.warmup);
    }
    let apns_shape = Shape::capture(&apns.requests(), Endpoint::ApnsPush, &apns.production_url());
    let fcm_shape = Shape::capture(&fcm.requests(), Endpoint::FcmSend, &fcm.url());
    apns.set_recording(false);
    fcm.set_recording(false);
    apns.clear();
    fcm.clear();
    let tls = client_tls(ca);

    println!(
        "sidecar benchmark ({}): mock APNs and FCM on loopback, sidecar pid {pid}, {} cores",
        if full { "full" } else { "short" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut results = Vec::new();
    let mut total_cpu = Duration::ZERO;
    let mut total_pushes = 0usize;
    for ((provider, label, app_id), shape) in providers.iter().zip([&apns_shape, &fcm_shape]) {
        for (level, count) in LEVELS[..2].iter().zip(counts.low) {
            let p = link.run(*provider, app_id, *level, count);
            total_cpu += p.cpu;
            total_pushes += p.pushes;
            report(label, "sidecar", *level, &p);
        }
        let mut sidecar_rounds = Vec::new();
        let mut ceiling_rounds = Vec::new();
        for round in 0..counts.rounds {
            // ABBA: a slow drift of the shared machine hits both sides alike.
            for sidecar_first in [round % 2 == 0, round % 2 != 0] {
                if sidecar_first {
                    let p = link.run(*provider, app_id, HEADLINE, counts.headline);
                    total_cpu += p.cpu;
                    total_pushes += p.pushes;
                    report(label, "sidecar", HEADLINE, &p);
                    sidecar_rounds.push(p);
                } else {
                    let p = rt.block_on(ceiling(shape, &tls, HEADLINE, counts.headline));
                    report(label, "ceiling", HEADLINE, &p);
                    ceiling_rounds.push(p);
                }
            }
        }
        results.push(Summary::of(label, &sidecar_rounds, &ceiling_rounds));
    }
    let rss_mib = peak_rss_kib(pid) as f64 / 1024.0;
    let cpu_us = total_cpu.as_secs_f64() * 1e6 / total_pushes.max(1) as f64;
    drop(link);
    sidecar.stop();

    println!();
    for s in &results {
        println!(
            "{:<4} at {HEADLINE} in flight: sidecar {:>7.0} pushes/s (p50 {:.2} ms, p99 {:.2} ms), ceiling {:>7.0} pushes/s (p99 {:.2} ms), ratio {:.3} (per round {})",
            s.label,
            s.rate,
            s.p50_ms,
            s.p99_ms,
            s.ceiling_rate,
            s.ceiling_p99_ms,
            s.ratio,
            s.round_ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "sidecar peak RSS {rss_mib:.1} MiB; CPU {cpu_us:.1} us per push over {total_pushes} measured pushes"
    );
    println!(
        "targets: >= 10000 pushes/s, p99 <= 20 ms, RSS <= 64 MiB, ratio >= 0.8 (figures only; nothing asserted)"
    );
    let worst = |f: fn(&Summary) -> f64, max: bool| {
        results
            .iter()
            .map(f)
            .fold(if max { f64::MIN } else { f64::MAX }, |a, b| {
                if max { a.max(b) } else { a.min(b) }
            })
    };
    let mut line = format!(
        "BENCH sidecar pushes_per_s={:.0} p50_ms={:.2} p99_ms={:.2} rss_mib={rss_mib:.1} ceiling_ratio={:.3} cpu_us_per_push={cpu_us:.1} ceiling_p99_ms={:.2}",
        worst(|s| s.rate, false),
        worst(|s| s.p50_ms, true),
        worst(|s| s.p99_ms, true),
        worst(|s| s.ratio, false),
        worst(|s| s.ceiling_p99_ms, true),
    );
    for s in &results {
        let k = s.label.to_lowercase();
        line.push_str(&format!(
            " {k}_pushes_per_s={:.0} {k}_p50_ms={:.2} {k}_p99_ms={:.2} {k}_ceiling_pushes_per_s={:.0} {k}_ceiling_p99_ms={:.2} {k}_ceiling_ratio={:.3}",
            s.rate, s.p50_ms, s.p99_ms, s.ceiling_rate, s.ceiling_p99_ms, s.ratio
        ));
    }
    println!("{line}");
}

fn report(provider: &str, side: &str, level: usize, p: &Phase) {
    let cpu = if p.cpu.is_zero() {
        String::new()
    } else {
        format!(
            ", sidecar CPU {:.1} us/push",
            p.cpu.as_secs_f64() * 1e6 / p.pushes as f64
        )
    };
    println!(
        "{provider:<4} {side:<7} {level:>3} in flight: {:>6} pushes in {:>6.3} s = {:>7.0} pushes/s, p50 {:>6.2} ms, p99 {:>6.2} ms{cpu}",
        p.pushes,
        p.elapsed.as_secs_f64(),
        p.rate(),
        p.percentile_ms(0.50),
        p.percentile_ms(0.99),
    );
}

/// The headline figures of one provider.
struct Summary {
    label: &'static str,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    ceiling_rate: f64,
    ceiling_p99_ms: f64,
    ratio: f64,
    round_ratios: Vec<f64>,
}

impl Summary {
    fn of(label: &'static str, sidecar: &[Phase], ceiling: &[Phase]) -> Summary {
        let round_ratios: Vec<f64> = sidecar
            .iter()
            .zip(ceiling)
            .map(|(s, c)| s.rate() / c.rate())
            .collect();
        // Latency percentiles over every headline push of the sidecar, rates as medians.
        let merged = |phases: &[Phase]| {
            let mut all = Phase::default();
            for p in phases {
                all.latencies.extend_from_slice(&p.latencies);
            }
            all.latencies.sort_unstable();
            all
        };
        let (s, c) = (merged(sidecar), merged(ceiling));
        Summary {
            label,
            rate: median(sidecar.iter().map(Phase::rate).collect()),
            p50_ms: s.percentile_ms(0.50),
            p99_ms: s.percentile_ms(0.99),
            ceiling_rate: median(ceiling.iter().map(Phase::rate).collect()),
            ceiling_p99_ms: c.percentile_ms(0.99),
            ratio: median(round_ratios.clone()),
            round_ratios,
        }
    }
}

/// The median (mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The sidecar process

struct SidecarProcess {
    child: Child,
    log: PathBuf,
}

impl SidecarProcess {
    fn start(dir: &Path) -> SidecarProcess {
        let bin = std::env::var_os("RES_PUSH_SIDECAR_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.join("res-push-sidecar"))
            })
            .filter(|p| p.exists())
            .unwrap_or_else(res_push_itests::sidecar_bin);
        let socket = dir.join("sidecar.sock");
        let log = dir.join("sidecar.log");
        let out = std::fs::File::create(&log).expect("sidecar log");
        // The production default log level (info): nothing is logged per push.
        let child = Command::new(&bin)
            .arg("--socket")
            .arg(&socket)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let s = SidecarProcess { child, log };
        let up =
            res_push_itests::wait_for(Duration::from_secs(20), || socket.exists().then_some(()));
        assert!(
            up.is_some(),
            "sidecar {} did not create its socket:\n{}",
            bin.display(),
            s.log_text()
        );
        println!("sidecar binary: {}", bin.display());
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if std::thread::panicking() {
                eprintln!("===== sidecar log =====\n{}", self.log_text());
            }
        }
    }
}

/// utime + stime of `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces: state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&hz| hz > 0)
        .unwrap_or(100) as u64;
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz as f64)
}

/// `VmHWM` of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// The module's side of the Unix socket

/// One connection to the sidecar, spoken as `res_push.so` speaks it: blocking socket, each
/// frame written whole, outcomes matched to jobs by id in whatever order they come.
struct Link {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    /// Whose CPU time the phases measure.
    sidecar_pid: u32,
}

impl Link {
    fn open(path: &Path, sidecar_pid: u32) -> Link {
        let stream = UnixStream::connect(path).expect("connect to the sidecar");
        let mut link = Link {
            reader: BufReader::with_capacity(64 * 1024, stream.try_clone().expect("dup")),
            writer: stream,
            next_id: 1,
            sidecar_pid,
        };
        link.send(&ClientFrame::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client: "res_push".into(),
            client_version: env!("CARGO_PKG_VERSION").into(),
            node: "bench".into(),
        });
        match link.recv() {
            ServerFrame::Welcome { .. } => {}
            other => panic!("handshake answered {other:?}"),
        }
        link
    }

    fn send(&mut self, frame: &ClientFrame) {
        write_frame(&mut self.writer, frame).expect("write to the sidecar");
    }

    fn recv(&mut self) -> ServerFrame {
        read_frame(&mut self.reader).expect("read from the sidecar")
    }

    fn submit(&mut self, job: Job) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&ClientFrame::Submit {
            id,
            deadline_ms: DEADLINE_MS,
            job,
        });
        id
    }

    fn configure(&mut self, apps: Vec<AppConfig>) {
        let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
        let id = self.submit(Job::Configure { apps });
        match self.recv() {
            ServerFrame::Outcome {
                id: got,
                outcome: Outcome::Configured { apps, errors },
            } if got == id && errors.is_empty() && apps == names => {}
            other => panic!("Configure answered {other:?}"),
        }
    }

    /// Writes `jobs` as the module's link thread writes what it found queued: up to
    /// `MAX_BATCH_FRAMES` frames (and `MAX_BATCH_BYTES`) per write.
    fn submit_batch(&mut self, jobs: Vec<Job>, sent_at: &mut HashMap<u64, Instant>) {
        let mut batch = Vec::new();
        let mut in_batch = 0;
        for job in jobs {
            let id = self.next_id;
            self.next_id += 1;
            let frame = ClientFrame::Submit {
                id,
                deadline_ms: DEADLINE_MS,
                job,
            };
            encode_frame_into(&mut batch, &frame).expect("encode a job");
            sent_at.insert(id, Instant::now());
            in_batch += 1;
            if in_batch == MAX_BATCH_FRAMES || batch.len() >= MAX_BATCH_BYTES {
                self.writer.write_all(&batch).expect("write to the sidecar");
                batch.clear();
                in_batch = 0;
            }
        }
        if !batch.is_empty() {
            self.writer.write_all(&batch).expect("write to the sidecar");
        }
    }

    /// Sends `count` call pushes keeping `level` in flight; panics on any outcome but `Sent`.
    /// Each outcome lets the next job go; the jobs let go by the outcomes read in one go are
    /// written together, as the module writes the jobs it finds queued.
    fn run(&mut self, provider: Provider, app_id: &str, level: usize, count: usize) -> Phase {
        let pid = self.sidecar_pid;
        let mut sent_at: HashMap<u64, Instant> = HashMap::with_capacity(level * 2);
        let mut latencies = Vec::with_capacity(count);
        let mut failures: BTreeMap<String, usize> = BTreeMap::new();
        let cpu0 = cpu_time(pid);
        let start = Instant::now();
        let first: Vec<Job> = (0..level.min(count))
            .map(|n| push_job(provider, app_id, n))
            .collect();
        let mut sent = first.len();
        self.submit_batch(first, &mut sent_at);
        while latencies.len() + failures.values().sum::<usize>() < count {
            let mut freed = 0;
            // One blocking read, then whatever else has already arrived.
            loop {
                let (id, outcome) = match self.recv() {
                    ServerFrame::Outcome { id, outcome } => (id, outcome),
                    other => panic!("unexpected frame {other:?}"),
                };
                let now = Instant::now();
                let Some(at) = sent_at.remove(&id) else {
                    panic!("outcome for unknown job {id}: {outcome:?}");
                };
                match outcome {
                    Outcome::Sent { .. } => latencies.push(now - at),
                    other => *failures.entry(format!("{other:?}")).or_default() += 1,
                }
                freed += 1;
                if self.reader.buffer().is_empty() {
                    break;
                }
            }
            let next: Vec<Job> = (sent..count.min(sent + freed))
                .map(|n| push_job(provider, app_id, n))
                .collect();
            sent += next.len();
            self.submit_batch(next, &mut sent_at);
        }
        let elapsed = start.elapsed();
        let cpu = cpu_time(pid).saturating_sub(cpu0);
        assert!(
            failures.is_empty(),
            "{provider:?} at {level} in flight: pushes not accepted: {failures:?}"
        );
        latencies.sort_unstable();
        Phase {
            pushes: count,
            elapsed,
            latencies,
            cpu,
        }
    }
}

/// An incoming-call push to the `n`th device token, as the module sends it.
fn push_job(provider: Provider, app_id: &str, n: usize) -> Job {
    let token = match provider {
        Provider::Apns => format!("{:064x}", 0x1000 + n % TOKENS),
        // FCM registration tokens are longer and not hex; the shape matters little.
        Provider::Fcm => format!("bench-device-{:04}:APA91b{:0>140}", n % TOKENS, n % TOKENS),
    };
    Job::Push(PushRequest {
        target: PushTarget {
            provider,
            app_id: app_id.to_owned(),
            token,
            environment: None,
        },
        kind: PushKind::Call,
        data: PushData {
            caller_number: Some("1000".into()),
            caller_name: Some("Alice".into()),
            call_uuid: Some(format!("6f1c1b3a-54d4-4b1c-9a4e-{:012x}", n)),
            call_id: Some(format!("{n:x}a84b4c76e66710@pbx")),
            endpoint: Some("bob".into()),
            text: None,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// The ceiling: a bare HTTP/2 client

/// A request the sidecar sent, to be replayed as is.
#[derive(Clone)]
struct Shape {
    authority: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Shape {
    fn capture(
        requests: &[res_push_mocks::RecordedRequest],
        endpoint: Endpoint,
        url: &str,
    ) -> Shape {
        let r = requests
            .iter()
            .rev()
            .find(|r| r.endpoint == endpoint && r.status == 200)
            .unwrap_or_else(|| panic!("no successful {endpoint:?} request recorded in warm-up"));
        Shape {
            authority: url.trim_start_matches("https://").to_owned(),
            path: r.path.clone(),
            headers: r
                .headers
                .iter()
                // Set by the client library from the request itself.
                .filter(|(n, _)| !matches!(n.as_str(), "content-length" | "host"))
                .cloned()
                .collect(),
            body: Bytes::from(r.body.clone()),
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut b = Request::post(format!("https://{}{}", self.authority, self.path));
        for (n, v) in &self.headers {
            b = b.header(n.as_str(), v.as_str());
        }
        b.body(Full::new(self.body.clone())).expect("request")
    }
}

fn client_tls(ca: &TestCa) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca_der().into()).expect("CA root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// `count` requests of `shape` on one fresh HTTP/2 connection, `level` streams in flight.
async fn ceiling(
    shape: &Shape,
    tls: &Arc<rustls::ClientConfig>,
    level: usize,
    count: usize,
) -> Phase {
    let tcp = tokio::net::TcpStream::connect(&shape.authority)
        .await
        .expect("connect to the mock");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    let stream = TlsConnector::from(Arc::clone(tls))
        .connect(name, tcp)
        .await
        .expect("TLS handshake with the mock");
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    // One warm request, so that the measured phase starts on an open connection.
    let mut warm = sender.clone();
    let response = warm
        .send_request(shape.request())
        .await
        .expect("warm request");
    assert_eq!(response.status(), 200, "ceiling warm request refused");

    let shape = Arc::new(shape.clone());
    let left = Arc::new(AtomicUsize::new(count));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..level.min(count) {
        let (mut sender, shape, left) = (sender.clone(), Arc::clone(&shape), Arc::clone(&left));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let at = Instant::now();
                let response = sender.send_request(shape.request()).await.expect("request");
                let status = response.status();
                let _ = response.into_body().collect().await;
                assert_eq!(status, 200, "ceiling request refused");
                latencies.push(at.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.extend(t.await.expect("ceiling task"));
    }
    let elapsed = start.elapsed();
    drop(sender);
    drop(warm);
    conn.abort();
    latencies.sort_unstable();
    Phase {
        pushes: count,
        elapsed,
        latencies,
        cpu: Duration::ZERO,
    }
}
