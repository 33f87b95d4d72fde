//! What `push show status` prints, computed from a snapshot so it is testable without Asterisk.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::identity::Identity;

/// State of the link to the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Handshake done; jobs flow.
    Connected {
        /// When the handshake completed.
        since: SystemTime,
        /// Negotiated protocol version.
        protocol: u32,
        /// The sidecar's software version.
        sidecar_version: String,
    },
    /// No usable connection.
    Disconnected {
        /// When the link was lost (or the module started).
        since: SystemTime,
        /// Why the last attempt failed, if one did.
        last_error: Option<String>,
    },
}

/// Monotonic counters since module load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs accepted into the queue.
    pub submitted: u64,
    /// Jobs refused because the queue was full.
    pub queue_full: u64,
    /// Jobs answered by the sidecar, whatever the outcome.
    pub completed: u64,
    /// Jobs that got no answer: link down, or lost with a dropped connection.
    pub failed: u64,
    /// Successful handshakes.
    pub connects: u64,
    /// Connections lost after a handshake.
    pub disconnects: u64,
}

/// Call wake-up counters since module load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WakeCounters {
    /// Device legs started (one per pushed device per call).
    pub started: u64,
    /// Devices that registered in time and were rung.
    pub registered: u64,
    /// Devices that did not register within the wait.
    pub timeouts: u64,
    /// Devices given up because their push failed.
    pub failed: u64,
    /// Cancel pushes sent (answered elsewhere, caller hung up, timeout).
    pub cancels: u64,
}

/// Everything `push show status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// res_push's version.
    pub module_version: String,
    /// The Asterisk and pjproject the module was built for (`None`: not filled in).
    pub built_for: Option<Identity>,
    /// The Asterisk and pjproject it runs in.
    pub running_in: Option<Identity>,
    /// Where the sidecar is expected.
    pub socket: PathBuf,
    /// The link.
    pub link: LinkState,
    /// Jobs waiting in the queue.
    pub queue_depth: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Jobs sent and not yet answered.
    pub in_flight: usize,
    /// Counters.
    pub counters: Counters,
    /// Apps the sidecar accepted at the last configuration, `None` before any.
    pub apps: Option<Vec<String>>,
    /// Problems the sidecar reported with app sections.
    pub app_errors: Vec<String>,
    /// Call wake-up counters.
    pub wake: WakeCounters,
    /// The time the snapshot was taken, for "ago" figures.
    pub now: SystemTime,
}

fn when(t: SystemTime, now: SystemTime) -> String {
    let ago = now.duration_since(t).unwrap_or(Duration::ZERO);
    let ago = Duration::from_secs(ago.as_secs());
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(t),
        humantime::format_duration(ago)
    )
}

impl StatusSnapshot {
    /// The text of `push show status`, aligned like Asterisk's own `show` commands.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(o, "{k:<20}: {v}");
        };
        line("Module version", &self.module_version);
        if let Some(b) = &self.built_for {
            line("Built for", b);
        }
        if let Some(r) = &self.running_in {
            line("Running in", r);
        }
        line("Sidecar socket", &self.socket.display());
        match &self.link {
            LinkState::Connected {
                since,
                protocol,
                sidecar_version,
            } => {
                line("Sidecar link", &"connected");
                line("Connected since", &when(*since, self.now));
                line("Protocol version", protocol);
                line("Sidecar version", sidecar_version);
            }
            LinkState::Disconnected { since, last_error } => {
                line("Sidecar link", &"disconnected");
                line("Disconnected since", &when(*since, self.now));
                line("Last error", &last_error.as_deref().unwrap_or("-"));
            }
        }
        match &self.apps {
            None => line("Apps", &"(not sent to the sidecar yet)"),
            Some(a) if a.is_empty() => line("Apps", &"none configured"),
            Some(a) => line("Apps", &a.join(", ")),
        }
        for e in &self.app_errors {
            line("App error", e);
        }
        line(
            "Queue depth",
            &format!("{}/{}", self.queue_depth, self.queue_capacity),
        );
        line("Jobs in flight", &self.in_flight);
        let c = &self.counters;
        line("Jobs submitted", &c.submitted);
        line("Jobs completed", &c.completed);
        line("Jobs failed", &c.failed);
        line("Queue full drops", &c.queue_full);
        line("Link connects", &c.connects);
        line("Link disconnects", &c.disconnects);
        let w = &self.wake;
        line("Wake-ups started", &w.started);
        line("Woken and rung", &w.registered);
        line("Wake timeouts", &w.timeouts);
        line("Wake failures", &w.failed);
        line("Cancel pushes", &w.cancels);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn snapshot(link: LinkState) -> StatusSnapshot {
        StatusSnapshot {
            module_version: "0.1.0".into(),
            built_for: Some(Identity {
                asterisk: "22.10.1".into(),
                pjproject: "2.17".into(),
            }),
            running_in: Some(Identity {
                asterisk: "22.10.1+dfsg-1".into(),
                pjproject: "2.17".into(),
            }),
            socket: "/run/res-push/sidecar.sock".into(),
            link,
            queue_depth: 3,
            queue_capacity: 1024,
            in_flight: 1,
            counters: Counters {
                submitted: 10,
                queue_full: 2,
                completed: 7,
                failed: 1,
                connects: 1,
                disconnects: 0,
            },
            now: UNIX_EPOCH + Duration::from_secs(1_800_000_100),
            apps: Some(vec!["ios".into(), "android".into()]),
            app_errors: vec!["ios: key_file: not found".into()],
            wake: WakeCounters {
                started: 4,
                registered: 2,
                timeouts: 1,
                failed: 1,
                cancels: 2,
            },
        }
    }

    #[test]
    fn connected() {
        let s = snapshot(LinkState::Connected {
            since: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            protocol: 1,
            sidecar_version: "0.1.0".into(),
        })
        .render();
        assert!(s.contains("Sidecar link        : connected\n"), "{s}");
        assert!(
            s.contains("Built for           : Asterisk 22.10.1, pjproject 2.17\n"),
            "{s}"
        );
        assert!(
            s.contains("Running in          : Asterisk 22.10.1+dfsg-1, pjproject 2.17\n"),
            "{s}"
        );
        assert!(
            s.contains("Connected since     : 2027-01-15T08:00:00Z (1m 40s ago)\n"),
            "{s}"
        );
        assert!(s.contains("Protocol version    : 1\n"), "{s}");
        assert!(s.contains("Apps                : ios, android\n"), "{s}");
        assert!(
            s.contains("App error           : ios: key_file: not found\n"),
            "{s}"
        );
        assert!(s.contains("Queue depth         : 3/1024\n"), "{s}");
        assert!(s.contains("Queue full drops    : 2\n"), "{s}");
        assert!(s.contains("Woken and rung      : 2\n"), "{s}");
    }

    #[test]
    fn disconnected_shows_the_error() {
        let s = snapshot(LinkState::Disconnected {
            since: UNIX_EPOCH + Duration::from_secs(1_800_000_099),
            last_error: Some("connect: No such file or directory".into()),
        })
        .render();
        assert!(s.contains("Sidecar link        : disconnected\n"), "{s}");
        assert!(
            s.contains("Last error          : connect: No such file or directory\n"),
            "{s}"
        );
    }
}
