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
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CONFIG_TEMPLATES: &[&str] = &[
    "asterisk.conf",
    "modules.conf",
    "logger.conf",
    "pjsip.conf",
    "rtp.conf",
    "extensions.conf",
    "push.conf",
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

/// The module under test.
pub fn module_path() -> PathBuf {
    let p = env_path("RES_PUSH_MODULE", || {
        workspace().join("target/debug/libres_push.so")
    });
    assert!(
        p.exists(),
        "module {} not built (cargo build -p res_push)",
        p.display()
    );
    p
}

/// The sidecar binary under test.
pub fn sidecar_bin() -> PathBuf {
    let p = env_path("RES_PUSH_SIDECAR_BIN", || {
        workspace().join("target/debug/res-push-sidecar")
    });
    assert!(
        p.exists(),
        "sidecar {} not built (cargo build -p res-push-sidecar)",
        p.display()
    );
    p
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free UDP port")
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            load_res_push: true,
            push_conf: None,
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
    root: PathBuf,
    child: Option<Child>,
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
        // RTP ranges must not overlap between concurrent tests: derive them from the SIP port.
        let rtp_start = 20000 + (u32::from(sip_port) % 2000) * 20;
        let vars: HashMap<&str, String> = HashMap::from([
            ("@DIR@", dir.clone()),
            ("@SIP_PORT@", sip_port.to_string()),
            ("@RTP_START@", rtp_start.to_string()),
            ("@RTP_END@", (rtp_start + 19).to_string()),
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
            for (k, v) in &vars {
                text = text.replace(k, v);
            }
            fs::write(host_dir.join("etc").join(file), text).expect("write config");
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
        let mut a = Asterisk {
            host_dir,
            dir,
            sip_port,
            root,
            child: None,
        };
        a.install_module();
        let console = fs::File::create(a.host_dir.join("log/console.log")).expect("console log");
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
        a
    }

    /// Copies the module under test into the test's module directory (as res_push.so).
    pub fn install_module(&self) {
        let dest = self.host_dir.join("modules/res_push.so");
        let _ = fs::remove_file(&dest);
        fs::copy(module_path(), &dest).expect("copy module");
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
        let out = Command::new("chroot")
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
