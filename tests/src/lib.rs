//! Test harness: a real Asterisk 22 (Debian sid's package, in the chroot that
//! `asterisk-headers/prepare.sh` builds) running the freshly built `res_push.so`, and a real
//! `res-push-sidecar`.
//!
//! Each [`Asterisk`] gets its own directory inside the chroot (configuration, modules, run,
//! log, db), its own SIP and RTP ports, and its own mount namespace: `/proc` and `/dev` are
//! mounted inside a namespace that dies with the process, so nothing stays mounted whatever
//! happens to the test. `Drop` stops Asterisk (then kills it) and, when the test is failing,
//! prints Asterisk's log.
//!
//! Inputs (set by `tests/run-tests.sh`): `RES_PUSH_CHROOT`, `RES_PUSH_MODULE` (the built
//! `libres_push.so`), `RES_PUSH_SIDECAR_BIN`.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};

pub mod linphone;
pub mod postgres;
pub mod push_env;
use nix::unistd::Pid;

const CONFIG_TEMPLATES: &[&str] = &[
    "asterisk.conf",
    "modules.conf",
    "logger.conf",
    "pjsip.conf",
    "rtp.conf",
    "extensions.conf",
    "manager.conf",
    "queues.conf",
    "push.conf",
    "voicemail.conf",
];
/// Where Debian's package installs modules, as seen inside the chroot.
const SYSTEM_MODULES: &str = "/usr/lib/x86_64-linux-gnu/asterisk/modules";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn env_path(var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(default)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The sid chroot holding Asterisk.
pub fn chroot() -> PathBuf {
    let p = env_path("RES_PUSH_CHROOT", || {
        PathBuf::from("/var/lib/res-push/sid-chroot")
    });
    assert!(
        p.join("usr/sbin/asterisk").exists(),
        "no Asterisk in chroot {} (run asterisk-headers/prepare.sh, or tests/run-tests.sh)",
        p.display()
    );
    p
}

/// A build artifact under test: `var` when set, else `target/debug/<file>`.
fn artifact(var: &str, file: &str, package: &str) -> PathBuf {
    let p = env_path(var, || workspace().join("target/debug").join(file));
    assert!(
        p.exists(),
        "{} not built (cargo build -p {package})",
        p.display()
    );
    p
}

/// The module under test.
pub fn module_path() -> PathBuf {
    artifact("RES_PUSH_MODULE", "libres_push.so", "res_push")
}

/// The sidecar binary under test.
pub fn sidecar_bin() -> PathBuf {
    artifact(
        "RES_PUSH_SIDECAR_BIN",
        "res-push-sidecar",
        "res-push-sidecar",
    )
}

/// The number of bindings a `push show bindings` listing ends with.
pub fn binding_count(listing: &str) -> usize {
    listing
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    unused_port(|| {
        UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free UDP port")
    })
}

/// A port this test process has not handed out before. The kernel gives a just-freed port
/// out again, and a test's new phone on the port of its earlier, dead phone would receive
/// Asterisk's retransmissions to that one (seen: a late-wake test got the first call's INVITE
/// retransmitted to its new phone).
fn unused_port(mut pick: impl FnMut() -> u16) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..100 {
        let port = pick();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    pick()
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    unused_port(|| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("free TCP port")
    })
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes. Used to wait for
/// asynchronous effects; never to assert on timing.
pub fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        sleep(Duration::from_millis(100));
    }
}

/// How to start an Asterisk.
#[derive(Debug, Clone)]
pub struct Options {
    /// Load res_push from modules.conf at startup (otherwise the test loads it by command).
    pub load_res_push: bool,
    /// Extra or replacement lines for push.conf (replaces the template when set).
    pub push_conf: Option<String>,
    /// Appended to pjsip.conf (more endpoints, for benchmarks).
    pub pjsip_append: String,
    /// Appended to modules.conf's `[modules]` (e.g. `load = app_voicemail.so`).
    pub modules_append: String,
    /// RTP ports of its own. A call INVITEd to a dead contact keeps its RTP ports until the
    /// INVITE transaction times out (32 s), so back-to-back calls (benchmarks) need more.
    pub rtp_ports: u32,
    /// `systemname` in asterisk.conf (default `res-push-test`): nodes sharing a store need
    /// names of their own.
    pub system_name: Option<String>,
    /// More files for the etc directory (`sorcery.conf`, `extconfig.conf`...), `@DIR@`
    /// replaced as in the templates.
    pub extra_conf: Vec<(String, String)>,
    /// Environment of the Asterisk process (e.g. `ODBCINI` for a DSN of the test's own).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load_res_push: true,
            push_conf: None,
            pjsip_append: String::new(),
            modules_append: String::new(),
            rtp_ports: 20,
            system_name: None,
            extra_conf: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running Asterisk in the chroot.
#[derive(Debug)]
pub struct Asterisk {
    /// The test directory as seen from the host.
    pub host_dir: PathBuf,
    /// The same directory as seen inside the chroot.
    pub dir: String,
    /// SIP port of the UDP transport.
    pub sip_port: u16,
    /// AMI port.
    pub ami_port: u16,
    root: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Asterisk {
    /// Starts Asterisk with the test configuration and waits until it is fully booted.
    pub fn start(name: &str, opts: Options) -> Asterisk {
        let root = chroot();
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = format!("/tmp/res-push-tests/{id}");
        let host_dir = root.join(dir.trim_start_matches('/'));
        let _ = fs::remove_dir_all(&host_dir);
        for sub in ["etc", "modules", "run", "log", "lib", "spool", "cache"] {
            fs::create_dir_all(host_dir.join(sub)).expect("create test dir");
        }
        let sip_port = free_udp_port();
        let ami_port = free_tcp_port();
        // RTP ranges must not overlap between concurrent tests: derive them from the SIP port.
        let ports = opts.rtp_ports.clamp(20, 4000) & !1;
        let rtp_start = 20000 + (u32::from(sip_port) % (40000 / ports)) * ports;
        let vars: HashMap<&str, String> = HashMap::from([
            ("@DIR@", dir.clone()),
            ("@SIP_PORT@", sip_port.to_string()),
            ("@AMI_PORT@", ami_port.to_string()),
            ("@RTP_START@", rtp_start.to_string()),
            ("@RTP_END@", (rtp_start + ports - 1).to_string()),
            ("@SOCKET@", format!("{dir}/run/sidecar.sock")),
            (
                "@RES_PUSH@",
                if opts.load_res_push {
                    "load = res_push.so".into()
                } else {
                    String::new()
                },
            ),
        ]);
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for file in CONFIG_TEMPLATES {
            let mut text = fs::read_to_string(templates.join(file)).expect("read config template");
            if let (true, Some(custom)) = (*file == "push.conf", &opts.push_conf) {
                text = custom.clone();
            }
            if *file == "pjsip.conf" {
                text.push_str(&opts.pjsip_append);
            }
            if *file == "modules.conf" {
                text.push('\n');
                text.push_str(&opts.modules_append);
            }
            if let (true, Some(name)) = (*file == "asterisk.conf", &opts.system_name) {
                text = text.replace(
                    "systemname => res-push-test",
                    &format!("systemname => {name}"),
                );
            }
            for (k, v) in &vars {
                text = text.replace(k, v);
            }
            fs::write(host_dir.join("etc").join(file), text).expect("write config");
        }
        for (file, text) in &opts.extra_conf {
            let mut text = text.clone();
            for (k, v) in &vars {
                text = text.replace(k, v);
            }
            fs::write(host_dir.join("etc").join(file), text).expect("write extra config");
        }
        // Every packaged module, plus ours: the module directory is the test's own, so the
        // chroot is never modified and concurrent tests can run different builds.
        for entry in
            fs::read_dir(root.join(SYSTEM_MODULES.trim_start_matches('/'))).expect("module dir")
        {
            let entry = entry.expect("module entry");
            let target = Path::new(SYSTEM_MODULES).join(entry.file_name());
            std::os::unix::fs::symlink(target, host_dir.join("modules").join(entry.file_name()))
                .expect("symlink");
        }
        let env = opts
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("@DIR@", &dir)))
            .collect();
        let mut a = Asterisk {
            host_dir,
            dir,
            sip_port,
            ami_port,
            root,
            child: None,
            env,
        };
        a.install_module();
        a.boot();
        a
    }

    /// Stops Asterisk and starts it again on the same directory (same config, astdb, ports).
    pub fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    fn boot(&mut self) {
        let a = self;
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.host_dir.join("log/console.log"))
            .expect("console log");
        let script = format!(
            "mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && exec chroot {r} /usr/sbin/asterisk -C {d}/etc/asterisk.conf -f -n -vvv",
            r = a.root.display(),
            d = a.dir
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .envs(a.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("dup"))
            .stderr(console)
            .spawn()
            .expect("start asterisk");
        a.child = Some(child);
        let booted = wait_for(Duration::from_secs(60), || {
            if let Some(status) = a.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Asterisk exited during startup ({status})\n{}", a.log());
            }
            a.try_cli("core waitfullybooted")
                .filter(|o| o.contains("fully booted"))
                .map(|_| ())
        });
        assert!(
            booted.is_some(),
            "Asterisk did not finish booting\n{}",
            a.log()
        );
    }

    /// Copies the module under test into the test's module directory (as res_push.so).
    pub fn install_module(&self) {
        let dest = self.host_dir.join("modules/res_push.so");
        let _ = fs::remove_file(&dest);
        fs::copy(module_path(), &dest).expect("copy module");
    }

    /// The chroot this Asterisk runs in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Host path of a file in the test's etc directory.
    pub fn etc(&self, file: &str) -> PathBuf {
        self.host_dir.join("etc").join(file)
    }

    /// Host path of the sidecar socket the default push.conf names.
    pub fn socket_host_path(&self) -> PathBuf {
        self.host_dir.join("run/sidecar.sock")
    }

    /// PID of the Asterisk process (the child of `unshare`'s `sh -c`, exec'd into chroot then asterisk).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Runs a CLI command; `None` if the console could not connect.
    pub fn try_cli(&self, command: &str) -> Option<String> {
        // Bounded: a CLI handler that hangs must fail the test, not stall the suite.
        let out = Command::new("timeout")
            .arg("20")
            .arg("chroot")
            .arg(&self.root)
            .args([
                "/usr/sbin/asterisk",
                "-C",
                &format!("{}/etc/asterisk.conf", self.dir),
                "-rx",
                command,
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() && text.is_empty() {
            return None;
        }
        Some(text)
    }

    /// Runs a CLI command and returns its output; panics (with the log) if Asterisk is unreachable.
    pub fn cli(&self, command: &str) -> String {
        self.try_cli(command)
            .unwrap_or_else(|| panic!("Asterisk CLI unreachable for '{command}'\n{}", self.log()))
    }

    /// Asterisk's messages log so far.
    pub fn log(&self) -> String {
        let mut s = fs::read_to_string(self.host_dir.join("log/messages.log")).unwrap_or_default();
        if s.is_empty() {
            s = fs::read_to_string(self.host_dir.join("log/console.log")).unwrap_or_default();
        }
        s
    }

    /// Names of the Asterisk process's threads.
    pub fn thread_names(&self) -> Vec<String> {
        // The child is `unshare`; Asterisk is its descendant through exec, so same PID.
        let Ok(tasks) = fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    }

    /// Whether a file whose path contains `needle` is mapped into Asterisk's memory.
    pub fn maps_contain(&self, needle: &str) -> bool {
        fs::read_to_string(format!("/proc/{}/maps", self.pid()))
            .unwrap_or_default()
            .contains(needle)
    }

    /// Whether the Asterisk process is still alive.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = self.try_cli("core stop now");
            let gone = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
            if gone.is_none() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "===== Asterisk log ({}) =====\n{}\n===== end of log =====",
                self.host_dir.display(),
                self.log()
            );
        } else if std::env::var_os("RES_PUSH_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.host_dir);
        }
    }
}

/// One REGISTER sent by SIPp.
#[derive(Debug, Clone)]
pub struct Register {
    /// User (and AOR) registering.
    pub user: String,
    /// Local UDP port SIPp sends from (the contact's port).
    pub port: u16,
    /// Appended to the Contact URI, e.g. `;pn-provider=apns;pn-param=...;pn-prid=...`.
    pub uri_params: String,
    /// Appended after the Contact's `>`, e.g. `;+sip.instance="<urn:uuid:1>"`.
    pub header_params: String,
    /// `Expires` header.
    pub expires: u32,
    /// Extra header lines.
    pub headers: Vec<String>,
    /// The response code SIPp must receive.
    pub expect: u16,
    /// Port in the Contact, when it differs from the source port (a phone whose SIP stack
    /// listens on another socket than it sends REGISTER from).
    pub contact_port: Option<u16>,
}

impl Register {
    /// A REGISTER of `user` from a fresh port, expecting 200.
    pub fn new(user: &str, uri_params: &str) -> Register {
        Register {
            user: user.into(),
            port: free_udp_port(),
            uri_params: uri_params.into(),
            header_params: String::new(),
            expires: 600,
            headers: Vec::new(),
            expect: 200,
            contact_port: None,
        }
    }
}

/// What SIPp saw.
#[derive(Debug, Clone)]
pub struct SipExchange {
    /// SIPp's exit status was success (the expected response arrived).
    pub ok: bool,
    /// The response received, as SIPp logged it.
    pub response: String,
    /// SIPp's full message trace and errors, for failure messages.
    pub trace: String,
}

impl SipExchange {
    /// A header of the response (first match, case-insensitive name).
    pub fn header(&self, name: &str) -> Option<String> {
        self.response.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// When SIPp logged the first message whose first line starts with `start` (e.g.
    /// `"INVITE sip:"`, `"CANCEL sip:"`): SIPp stamps each traced message with its wall-clock
    /// time, which is how tests and benchmarks time what a phone saw.
    pub fn logged_at(&self, start: &str) -> Option<std::time::SystemTime> {
        self.trace
            .split("----------------------------------------------- ")
            .find(|block| {
                block
                    .lines()
                    .skip(1)
                    .find(|l| !l.trim().is_empty() && !l.contains("message "))
                    .is_some_and(|l| l.trim_start().starts_with(start))
            })
            .and_then(|block| parse_utc(block.lines().next()?.trim()))
    }

    /// The status line of the response.
    pub fn status_line(&self) -> String {
        self.response
            .lines()
            .find(|l| l.starts_with("SIP/2.0"))
            .unwrap_or("")
            .to_string()
    }
}

impl Asterisk {
    /// Sends one REGISTER with SIPp (from the chroot's sip-tester) and returns the exchange.
    pub fn register(&self, r: &Register) -> SipExchange {
        let extra: String = r.headers.iter().map(|h| format!("      {h}\n")).collect();
        let scenario = format!(
            r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{user}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:{user}@[local_ip]:{cport};transport=udp{uri}>{hdr}
      Max-Forwards: 70
      Expires: {expires}
      User-Agent: res-push-test/1.0
{extra}      Content-Length: 0

    ]]>
  </send>
  <recv response="{expect}" timeout="5000"/>
</scenario>
"#,
            user = r.user,
            uri = r.uri_params,
            hdr = r.header_params,
            cport = r
                .contact_port
                .map_or("[local_port]".to_string(), |p| p.to_string()),
            expires = r.expires,
            expect = r.expect,
        );
        self.sipp("reg", &scenario, r.port, &[]).wait()
    }

    /// Starts SIPp on `scenario` (XML text) from `port` in the background; `args` are extra
    /// SIPp arguments (e.g. `-s` for the request user). Collect it with [`SippRun::wait`].
    pub fn sipp(&self, name: &str, scenario: &str, port: u16, args: &[&str]) -> SippRun {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{name}-{n}");
        let host = |f: &str| self.host_dir.join(format!("run/{stem}.{f}"));
        let inside = |f: &str| format!("{}/run/{stem}.{f}", self.dir);
        fs::write(host("xml"), scenario).expect("write scenario");
        let child = Command::new("chroot")
            .arg(&self.root)
            .args([
                "/usr/bin/sipp",
                &format!("127.0.0.1:{}", self.sip_port),
                "-sf",
                &inside("xml"),
            ])
            .args([
                "-m",
                "1",
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-nostdin",
                "-timeout",
                "60s",
            ])
            .args([
                "-trace_msg",
                "-message_file",
                &inside("msg"),
                "-trace_err",
                "-error_file",
                &inside("err"),
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A file, not a pipe: nobody reads SIPp's stderr while it runs.
            .stderr(fs::File::create(host("stderr")).expect("sipp stderr"))
            .spawn()
            .expect("run sipp");
        SippRun {
            child,
            msg: host("msg"),
            err: host("err"),
        }
    }

    /// Connects to this Asterisk's AMI and logs in.
    pub fn ami(&self) -> Ami {
        Ami::connect(self.ami_port)
    }
}

/// A SIPp run in the background.
#[derive(Debug)]
pub struct SippRun {
    child: Child,
    msg: PathBuf,
    err: PathBuf,
}

impl SippRun {
    /// Waits for SIPp to finish; `ok` when its scenario completed.
    pub fn wait(mut self) -> SipExchange {
        let status = self.child.wait().expect("sipp wait");
        let trace = format!(
            "{}{}\n{}",
            fs::read_to_string(&self.msg).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default(),
            fs::read_to_string(self.msg.with_extension("stderr")).unwrap_or_default()
        );
        // The last message SIPp received is the block after its "received" marker.
        let response = trace
            .split("----------------------------------------------- ")
            .filter(|b| b.contains("message received"))
            .map(|b| b.lines().skip(1).collect::<Vec<_>>().join("\n"))
            .last()
            .unwrap_or_default();
        SipExchange {
            ok: status.success(),
            response,
            trace,
        }
    }
}

/// One AMI packet: its `Key: value` lines.
pub type Packet = Vec<(String, String)>;

/// Looks a key up in a packet.
pub fn field<'a>(p: &'a Packet, key: &str) -> Option<&'a str> {
    p.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// A logged-in AMI connection. Events read while waiting for something else are kept.
#[derive(Debug)]
pub struct Ami {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    backlog: Vec<Packet>,
    seq: u32,
}

impl Ami {
    /// Connects and logs in as the test user.
    pub fn connect(port: u16) -> Ami {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("AMI connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut ami = Ami {
            reader: BufReader::new(stream.try_clone().expect("dup")),
            writer: stream,
            backlog: Vec::new(),
            seq: 0,
        };
        let mut banner = String::new();
        ami.reader.read_line(&mut banner).expect("AMI banner");
        let r = ami.action("Login", &[("Username", "test"), ("Secret", "test")]);
        assert_eq!(
            field(&r[0], "Response"),
            Some("Success"),
            "AMI login: {r:?}"
        );
        ami
    }

    fn read_packet(&mut self) -> Option<Packet> {
        let mut p = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                if p.is_empty() {
                    continue;
                }
                return Some(p);
            }
            if let Some((k, v)) = line.split_once(':') {
                p.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }

    /// Sends an action and returns its response, plus list entries up to the list's end.
    pub fn action(&mut self, name: &str, headers: &[(&str, &str)]) -> Vec<Packet> {
        self.seq += 1;
        let id = format!("t{}", self.seq);
        let mut text = format!("Action: {name}\r\nActionID: {id}\r\n");
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        self.writer.write_all(text.as_bytes()).expect("AMI write");
        let mut out = Vec::new();
        let mut listing = false;
        while let Some(p) = self.read_packet() {
            if field(&p, "ActionID") != Some(id.as_str()) {
                self.backlog.push(p);
                continue;
            }
            if field(&p, "EventList") == Some("start") {
                listing = true;
            }
            let done = !listing || field(&p, "EventList") == Some("Complete");
            out.push(p);
            if done {
                break;
            }
        }
        out
    }

    /// Waits for an event matching `pred` (looking at already-read events first).
    pub fn wait_event(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Packet) -> bool,
    ) -> Option<Packet> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|p| field(p, "Event").is_some() && pred(p))
        {
            return Some(self.backlog.remove(i));
        }
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let p = self.read_packet()?;
            if field(&p, "Event").is_some() && pred(&p) {
                return Some(p);
            }
        }
        None
    }
}

/// A running res-push-sidecar.
#[derive(Debug)]
pub struct Sidecar {
    socket: PathBuf,
    child: Option<Child>,
}

impl Sidecar {
    /// Starts the sidecar on `socket` (a host path) and waits for the socket to appear.
    pub fn start(socket: &Path) -> Sidecar {
        let _ = fs::remove_file(socket);
        let log = fs::File::create(socket.with_extension("log")).expect("sidecar log");
        let child = Command::new(sidecar_bin())
            .arg("--socket")
            .arg(socket)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("start sidecar");
        let s = Sidecar {
            socket: socket.to_path_buf(),
            child: Some(child),
        };
        assert!(
            wait_for(Duration::from_secs(20), || s.socket.exists().then_some(())).is_some(),
            "sidecar did not create {}",
            s.socket.display()
        );
        s
    }

    /// Kills the sidecar abruptly (SIGKILL), as a crash would.
    pub fn crash(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the sidecar with SIGTERM and returns whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        wait_for(Duration::from_secs(10), || c.try_wait().ok().flatten())
            .is_some_and(|s| s.success())
    }

    /// The sidecar's own log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.socket.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if std::thread::panicking() {
                eprintln!("===== sidecar log =====\n{}\n===== end =====", self.log());
            }
        }
    }
}

/// Reads one field of `push show status` (e.g. `Sidecar link`).
pub fn status_field(status: &str, field: &str) -> Option<String> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().to_string())
    })
}

/// Whether `res_push` is listed as Running by `module show like res_push`.
pub fn module_running(a: &Asterisk) -> bool {
    // The status column reads "Running" or "Not Running".
    a.cli("module show like res_push").lines().any(|l| {
        l.starts_with("res_push.so") && l.contains(" Running ") && !l.contains("Not Running")
    })
}

/// `2026-12-02T01:12:11.395043Z` (SIPp's trace stamps) as a `SystemTime`.
pub fn parse_utc(stamp: &str) -> Option<std::time::SystemTime> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    let micros: u64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}
