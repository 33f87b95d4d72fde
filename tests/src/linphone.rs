//! A real softphone: Debian's `linphonec` (package `linphone-cli`), headless, driven through a
//! pipe on its stdin.
//!
//! It runs in a Debian 12 chroot of its own (`RES_PUSH_CLIENT_CHROOT`, built by
//! `asterisk-headers/prepare.sh`): sid's liblinphone12 cannot be installed (nor loaded) while
//! sid is half-way through the soci 4.1 transition. The chroot shares the host's network, so
//! linphonec reaches the test Asterisk on 127.0.0.1 like SIPp does.
//!
//! Each [`Linphone`] gets a directory of its own in that chroot (its `linphonerc`, `HOME` with
//! the databases liblinphone insists on, its log at debug level 6, which carries every SIP
//! message sent and received), its own SIP and RTP ports, and auto-answer (`-a`). `Drop` kills
//! it and, when the test is failing, prints its output and log.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{free_tcp_port, free_udp_port, wait_for};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The chroot holding linphonec.
pub fn linphone_chroot() -> PathBuf {
    let p = std::env::var_os("RES_PUSH_CLIENT_CHROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/res-push/client-chroot"));
    assert!(
        p.join("usr/bin/linphonec").exists(),
        "no linphonec in chroot {} (run asterisk-headers/prepare.sh, or tests/run-tests.sh)",
        p.display()
    );
    p
}

/// SIP transport linphonec registers over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (the registrar must have a TCP transport on the port given).
    Tcp,
}

impl Transport {
    fn param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// How to start a Linphone.
#[derive(Debug, Clone)]
pub struct LinphoneOptions {
    /// User (and AOR) registering.
    pub user: String,
    /// The registrar's port on 127.0.0.1 (for the chosen transport).
    pub registrar_port: u16,
    /// Transport of the registration (and of linphonec's only listening socket).
    pub transport: Transport,
    /// `contact_uri_parameters` of the account, without a leading `;` (e.g.
    /// `pn-provider=apns;pn-param=...;pn-prid=...`); empty for none.
    pub contact_uri_parameters: String,
    /// Registration expiry (seconds).
    pub expires: u32,
    /// Answer incoming calls at once (`linphonec -a`).
    pub auto_answer: bool,
}

impl LinphoneOptions {
    /// `user` over UDP to `registrar_port`, with `contact_uri_parameters`, auto-answering.
    pub fn new(user: &str, registrar_port: u16, contact_uri_parameters: &str) -> Self {
        Self {
            user: user.into(),
            registrar_port,
            transport: Transport::Udp,
            contact_uri_parameters: contact_uri_parameters.into(),
            expires: 600,
            auto_answer: true,
        }
    }
}

/// The linphonerc for `o`, listening on `sip_port` and sending audio from `rtp_port`.
///
/// What makes linphonec 5.1 work headless: video is off unless asked for (`-V`/`-C`/`-D`); with
/// no sound card at all (the chroot has no `/dev/snd`) mediastreamer registers a capability-less
/// "ALSA Unknown: default" card and calls still connect (no audio, which tests do not need).
/// `register_only_when_network_is_up=0`: never wait for its network-reachability guess.
/// Ports: `sip_port` for the chosen transport, 0 (= disabled) for the others.
pub fn linphonerc(o: &LinphoneOptions, sip_port: u16, rtp_port: u16) -> String {
    let (udp, tcp) = match o.transport {
        Transport::Udp => (sip_port, 0),
        Transport::Tcp => (0, sip_port),
    };
    format!(
        "[sip]\n\
         sip_port={udp}\n\
         sip_tcp_port={tcp}\n\
         sip_tls_port=0\n\
         default_proxy=0\n\
         register_only_when_network_is_up=0\n\
         ping_with_options=0\n\
         inc_timeout=30\n\
         \n\
         [rtp]\n\
         audio_rtp_port={rtp_port}\n\
         video_rtp_port=0\n\
         \n\
         [video]\n\
         enabled=0\n\
         capture=0\n\
         display=0\n\
         \n\
         [proxy_0]\n\
         reg_proxy=<sip:127.0.0.1:{port};transport={tr}>\n\
         reg_identity=sip:{user}@127.0.0.1\n\
         reg_expires={expires}\n\
         reg_sendregister=1\n\
         publish=0\n\
         push_notification_allowed=0\n\
         remote_push_notification_allowed=0\n\
         contact_uri_parameters={params}\n",
        port = o.registrar_port,
        tr = o.transport.param(),
        user = o.user,
        expires = o.expires,
        params = o.contact_uri_parameters,
    )
}

/// A running linphonec.
#[derive(Debug)]
pub struct Linphone {
    /// Its directory as seen from the host.
    pub host_dir: PathBuf,
    /// The same directory inside the linphone chroot.
    pub dir: String,
    /// Its SIP port (on the chosen transport).
    pub sip_port: u16,
    /// How it was started.
    pub options: LinphoneOptions,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl Linphone {
    /// Writes its linphonerc and starts linphonec (it registers at once; see
    /// [`Linphone::wait_registered`]).
    pub fn start(name: &str, options: LinphoneOptions) -> Linphone {
        let root = linphone_chroot();
        let id = format!(
            "{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = format!("/tmp/res-push-tests/linphone-{id}");
        let host_dir = root.join(dir.trim_start_matches('/'));
        let _ = fs::remove_dir_all(&host_dir);
        // liblinphone opens its databases under $HOME/.local/share/linphone and does not create
        // the folder; without it the databases fail to open (logged, not fatal).
        fs::create_dir_all(host_dir.join(".local/share/linphone")).expect("linphone dir");
        let sip_port = match options.transport {
            Transport::Udp => free_udp_port(),
            Transport::Tcp => free_tcp_port(),
        };
        let rtp_port = free_udp_port();
        fs::write(
            host_dir.join("linphonerc"),
            linphonerc(&options, sip_port, rtp_port),
        )
        .expect("write linphonerc");
        let mut cmd = Command::new("chroot");
        cmd.arg(&root).args([
            "/usr/bin/env",
            &format!("HOME={dir}"),
            "/usr/bin/linphonec",
            "-c",
            &format!("{dir}/linphonerc"),
            "-d",
            "6",
            "-l",
            &format!("{dir}/linphonec.log"),
        ]);
        if options.auto_answer {
            cmd.arg("-a");
        }
        let out = fs::File::create(host_dir.join("stdout")).expect("linphonec stdout");
        // Commands go through a pipe: linphonec reads lines from a non-terminal stdin, and
        // exits when told `quit` (or at end of input).
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("start linphonec");
        let stdin = child.stdin.take();
        Linphone {
            host_dir,
            dir,
            sip_port,
            options,
            child: Some(child),
            stdin,
        }
    }

    /// Sends one command line to linphonec.
    pub fn command(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("linphonec stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("linphonec command '{line}': {e}"));
    }

    /// What linphonec printed (its console: prompts, call and registration notices).
    pub fn output(&self) -> String {
        fs::read_to_string(self.host_dir.join("stdout")).unwrap_or_default()
    }

    /// linphonec's debug log (level 6: every SIP message it sent or received, in full).
    pub fn log(&self) -> String {
        fs::read_to_string(self.host_dir.join("linphonec.log")).unwrap_or_default()
    }

    /// The SIP messages linphonec received so far, oldest first, as text.
    pub fn received(&self) -> Vec<String> {
        sip_messages(&self.log(), "new bytes from")
    }

    /// The SIP messages linphonec sent so far, oldest first, as text.
    pub fn sent(&self) -> Vec<String> {
        sip_messages(&self.log(), "message sent to")
    }

    /// How many times its account reached the registered state so far (refreshes included).
    pub fn registrations(&self) -> usize {
        self.log().matches("to [LinphoneRegistrationOk]").count()
    }

    /// Waits until its account is registered; `false` on timeout. Panics if linphonec exited.
    pub fn wait_registered(&mut self, timeout: Duration) -> bool {
        wait_for(timeout, || {
            self.assert_running();
            (self.registrations() > 0).then_some(())
        })
        .is_some()
    }

    /// Whether linphonec is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn assert_running(&mut self) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "linphonec exited ({status})\n{}\n{}",
                self.output(),
                self.log_tail()
            );
        }
    }

    /// Quits linphonec cleanly (it unregisters, `Expires: 0`, before exiting) and waits for
    /// it to exit; `true` when it exited successfully within 15 s.
    pub fn quit(&mut self) -> bool {
        if self.stdin.is_some() {
            self.command("quit");
        }
        self.stdin = None;
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let status = wait_for(Duration::from_secs(15), || child.try_wait().ok().flatten());
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status.is_some_and(|s| s.success())
    }

    /// The end of its log (what a failing test prints).
    fn log_tail(&self) -> String {
        let log = self.log();
        const MAX: usize = 60_000;
        if log.len() <= MAX {
            return log;
        }
        let mut cut = log.len() - MAX;
        while !log.is_char_boundary(cut) {
            cut += 1;
        }
        format!("[... {cut} bytes cut ...]\n{}", &log[cut..])
    }

    /// The app goes to sleep: the process dies without unregistering (its contact stays
    /// registered, its TCP connection, if any, is gone).
    pub fn sleep(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            // `chroot` execs env, which execs linphonec: the child's pid is linphonec's.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host path of a file in its directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.host_dir.join(name)
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== linphonec output ({}) =====\n{}\n===== linphonec log =====\n{}\n===== end of linphonec log =====",
                self.host_dir.display(),
                self.output(),
                self.log_tail()
            );
        } else if std::env::var_os("RES_PUSH_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.host_dir);
        }
    }
}

/// SIP messages from a belle-sip debug log: each follows a line containing `marker` and ends
/// at the first empty line (the end of the headers; tests look at headers, not bodies).
fn sip_messages(log: &str, marker: &str) -> Vec<String> {
    // A log record starts with its timestamp; what follows a marker record up to the next
    // record is what went over the wire, which over TCP may hold several messages.
    let is_record = |l: &str| {
        let b = l.as_bytes();
        b.len() > 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-'
    };
    let is_start = |l: &str| {
        l.starts_with("SIP/2.0 ")
            || l.split_once(' ').is_some_and(|(m, rest)| {
                !m.is_empty()
                    && m.bytes().all(|c| c.is_ascii_uppercase())
                    && rest.ends_with(" SIP/2.0")
            })
    };
    let mut out = Vec::new();
    let mut lines = log.lines().peekable();
    while let Some(l) = lines.next() {
        if !l.contains(marker) {
            continue;
        }
        let mut current: Vec<&str> = Vec::new();
        while let Some(next) = lines.peek() {
            if is_record(next) {
                break;
            }
            let next = lines.next().unwrap_or_default();
            if is_start(next.trim_end()) && !current.is_empty() {
                out.push(current.join("\n").trim_end().to_string());
                current.clear();
            }
            if !current.is_empty() || is_start(next.trim_end()) {
                current.push(next.trim_end());
            }
        }
        if !current.is_empty() {
            out.push(current.join("\n").trim_end().to_string());
        }
    }
    out
}

/// A header of a SIP message (first match, case-insensitive name).
pub fn header(message: &str, name: &str) -> Option<String> {
    message.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}
