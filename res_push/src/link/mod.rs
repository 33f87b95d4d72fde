//! The link to res-push-sidecar.
//!
//! Asterisk threads call [`Link::submit`], which only `try_send`s into a bounded crossbeam
//! queue: they never wait on the sidecar, and a full queue is refused and counted, not waited
//! out. One link thread owns the socket: it connects, handshakes, writes queued jobs, matches
//! outcomes to jobs, keeps the connection alive with heartbeats, and reconnects with backoff.
//! While the sidecar is unreachable, queued jobs fail at once with [`LinkError::Down`] so callers
//! can give up instead of waiting out their deadlines.

mod connection;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use res_push_core::backoff::Backoff;
use res_push_core::config::General;
use res_push_core::status::{Counters, LinkState, StatusSnapshot};
use res_push_proto::{AppConfig, Job, Outcome};

use crate::ast::thread::{self, Thread};

/// Why a job got no outcome from the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The sidecar is not connected.
    #[error("sidecar not connected ({0})")]
    Down(String),
    /// The connection dropped while the job was in flight; it may or may not have run.
    #[error("connection to the sidecar lost: {0}")]
    Lost(String),
    /// No outcome before the job's deadline.
    #[error("no answer from the sidecar before the deadline")]
    TimedOut,
    /// The job could not be put into a frame (too large); nothing was sent.
    #[error("job not sent: {0}")]
    Unsendable(String),
    /// The queue to the link thread is full.
    #[error("queue to the sidecar is full")]
    QueueFull,
    /// The module is unloading.
    #[error("res_push is shutting down")]
    ShuttingDown,
}

/// Called once with the job's result, on the link thread: it must be quick and never block.
pub type Done = Box<dyn FnOnce(Result<Outcome, LinkError>) + Send + 'static>;

/// A queued job.
pub(crate) struct Request {
    job: Job,
    deadline: Instant,
    done: Done,
}

/// Messages from the module to the link thread besides jobs. Dropping the sender means shutdown.
pub(crate) enum Control {
    /// The socket path changed: drop the connection and connect to the new one.
    Reconnect,
}

/// State shared between the link thread and the threads reading status.
#[derive(Debug)]
pub(crate) struct Shared {
    config: Mutex<General>,
    state: Mutex<LinkState>,
    capacity: usize,
    submitted: AtomicU64,
    queue_full: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    connects: AtomicU64,
    disconnects: AtomicU64,
    in_flight: AtomicUsize,
    /// push.conf's app sections, sent to the sidecar after each handshake and on reload.
    apps: Mutex<Vec<AppConfig>>,
    /// What the sidecar answered to the last configuration: (active apps, errors).
    configured: Mutex<Option<(Vec<String>, Vec<String>)>>,
}

impl Shared {
    /// The job that hands the sidecar our app configuration.
    pub(crate) fn configure_job(&self) -> Job {
        Job::Configure {
            apps: self.apps.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// Completion of a configuration job: logged once, kept for `push show status`.
    pub(crate) fn configure_done(self: &Arc<Self>) -> Done {
        let shared = self.clone();
        Box::new(move |r| {
            let result = match r {
                Ok(Outcome::Configured { apps, errors }) => {
                    if !apps.is_empty() {
                        tracing::info!("sidecar serves apps: {}", apps.join(", "));
                    }
                    for e in &errors {
                        tracing::error!("push.conf app not usable: {e}");
                    }
                    (apps, errors)
                }
                Ok(other) => (
                    Vec::new(),
                    vec![format!("sidecar answered the configuration with {other:?}")],
                ),
                Err(e) => (
                    Vec::new(),
                    vec![format!("configuration not delivered: {e}")],
                ),
            };
            *shared.configured.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        })
    }

    fn config(&self) -> General {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_state(&self, state: LinkState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn state(&self) -> LinkState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn finish(&self, done: Done, result: Result<Outcome, LinkError>) {
        let counter = if result.is_ok() {
            &self.completed
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        done(result);
    }
}

/// Handle owned by the module: submit jobs, read status, reconfigure, stop.
#[derive(Debug)]
pub struct Link {
    jobs: Sender<Request>,
    control: Mutex<Option<Sender<Control>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<Thread>>,
}

impl Link {
    /// Starts the link thread. The queue capacity is fixed for the life of the link.
    pub fn start(config: General, apps: Vec<AppConfig>) -> std::io::Result<Link> {
        let (jobs, jobs_rx) = bounded(config.queue_size);
        let (control, control_rx) = bounded(4);
        let shared = Arc::new(Shared {
            capacity: config.queue_size,
            config: Mutex::new(config),
            state: Mutex::new(LinkState::Disconnected {
                since: SystemTime::now(),
                last_error: None,
            }),
            submitted: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            apps: Mutex::new(apps),
            configured: Mutex::new(None),
        });
        let for_thread = shared.clone();
        let t = thread::spawn(c"res_push link", move || {
            run(&for_thread, &jobs_rx, &control_rx)
        })?;
        Ok(Link {
            jobs,
            control: Mutex::new(Some(control)),
            shared,
            thread: Mutex::new(Some(t)),
        })
    }

    /// Queues a job without blocking. `deadline` defaults to `job_deadline_ms`.
    ///
    /// On `Err` the job was not queued and `done` will not be called.
    pub fn submit(
        &self,
        job: Job,
        deadline: Option<Duration>,
        done: Done,
    ) -> Result<(), LinkError> {
        let deadline =
            Instant::now() + deadline.unwrap_or_else(|| self.shared.config().job_deadline);
        match self.jobs.try_send(Request {
            job,
            deadline,
            done,
        }) {
            Ok(()) => {
                self.shared.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                let n = self.shared.queue_full.fetch_add(1, Ordering::Relaxed);
                // The first drop and then every 1000th: enough to notice, not enough to flood.
                if n % 1000 == 0 {
                    tracing::warn!(
                        "queue to the sidecar is full ({} jobs); job refused ({} refused so far)",
                        self.shared.capacity,
                        n + 1
                    );
                }
                Err(LinkError::QueueFull)
            }
            Err(TrySendError::Disconnected(_)) => Err(LinkError::ShuttingDown),
        }
    }

    /// Applies a reloaded `[general]`; reconnects when the socket path changed.
    pub fn reconfigure(&self, new: General) {
        let old = std::mem::replace(
            &mut *self.shared.config.lock().unwrap_or_else(|p| p.into_inner()),
            new.clone(),
        );
        if old.queue_size != new.queue_size {
            tracing::warn!(
                "queue_size changed to {}; it takes effect at the next module load",
                new.queue_size
            );
        }
        if old.sidecar_socket != new.sidecar_socket {
            tracing::info!(
                "sidecar socket changed to {}; reconnecting",
                new.sidecar_socket.display()
            );
            if let Some(c) = self
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = c.try_send(Control::Reconnect);
            }
        }
    }

    /// Replaces the app sections and sends them to the sidecar (when connected; otherwise they
    /// go after the next handshake).
    pub fn set_apps(&self, apps: Vec<AppConfig>) {
        *self.shared.apps.lock().unwrap_or_else(|p| p.into_inner()) = apps;
        if matches!(self.shared.state(), LinkState::Connected { .. }) {
            let job = self.shared.configure_job();
            if let Err(e) = self.submit(job, None, self.shared.configure_done()) {
                tracing::warn!("app configuration not sent to the sidecar: {e}");
            }
        }
    }

    /// A snapshot for `push show status`.
    pub fn status(&self, module_version: &str) -> StatusSnapshot {
        let s = &self.shared;
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // One lock, released before the snapshot is built: a guard created inside the struct
        // literal would live to the end of the statement, and a second lock() would deadlock.
        let (apps, app_errors) = match &*s.configured.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((apps, errors)) => (Some(apps.clone()), errors.clone()),
            None => (None, Vec::new()),
        };
        StatusSnapshot {
            module_version: module_version.to_string(),
            built_for: None,
            running_in: None,
            socket: s.config().sidecar_socket,
            link: s.state(),
            queue_depth: self.jobs.len(),
            queue_capacity: s.capacity,
            in_flight: s.in_flight.load(Ordering::Relaxed),
            counters: Counters {
                submitted: c(&s.submitted),
                queue_full: c(&s.queue_full),
                completed: c(&s.completed),
                failed: c(&s.failed),
                connects: c(&s.connects),
                disconnects: c(&s.disconnects),
            },
            now: SystemTime::now(),
            apps,
            app_errors,
            wake: Default::default(),
        }
    }

    /// Stops the link thread and waits for it; queued and in-flight jobs fail with
    /// [`LinkError::ShuttingDown`]. Idempotent.
    pub fn stop(&self) {
        drop(
            self.control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    Shutdown,
    Reconnect,
    Lost(String),
}

fn run(shared: &Arc<Shared>, jobs: &Receiver<Request>, control: &Receiver<Control>) {
    let cfg = shared.config();
    let mut backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
    let mut last_error: Option<String> = None;
    loop {
        let cfg = shared.config();
        match connection::Connection::open(&cfg.sidecar_socket) {
            Ok(conn) => {
                backoff.reset();
                last_error = None;
                shared.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    "connected to res-push-sidecar {} at {} (protocol {})",
                    conn.server_version,
                    cfg.sidecar_socket.display(),
                    conn.version
                );
                shared.set_state(LinkState::Connected {
                    since: SystemTime::now(),
                    protocol: conn.version,
                    sidecar_version: conn.server_version.clone(),
                });
                let end = conn.serve(shared, jobs, control);
                let reason = match &end {
                    End::Shutdown => "module unloading".to_string(),
                    End::Reconnect => "socket path changed".to_string(),
                    End::Lost(why) => why.clone(),
                };
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                shared.set_state(LinkState::Disconnected {
                    since: SystemTime::now(),
                    last_error: Some(reason.clone()),
                });
                match end {
                    End::Shutdown => return drain(shared, jobs),
                    End::Reconnect => continue,
                    End::Lost(_) => tracing::warn!("lost the sidecar link: {reason}; reconnecting"),
                }
            }
            Err(e) => {
                // Logged when the reason changes, not on every retry: a sidecar that is down
                // for an hour must not fill the log.
                if last_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(
                        "cannot reach res-push-sidecar at {}: {e}; retrying",
                        cfg.sidecar_socket.display()
                    );
                }
                shared.set_state(LinkState::Disconnected {
                    since: match shared.state() {
                        LinkState::Disconnected { since, .. } => since,
                        LinkState::Connected { .. } => SystemTime::now(),
                    },
                    last_error: Some(e.clone()),
                });
                last_error = Some(e);
            }
        }
        if !wait_before_retry(
            shared,
            jobs,
            control,
            backoff.next_delay(),
            last_error.as_deref(),
        ) {
            return drain(shared, jobs);
        }
    }
}

/// Waits out a reconnect delay, failing jobs at once meanwhile. Returns false on shutdown.
fn wait_before_retry(
    shared: &Shared,
    jobs: &Receiver<Request>,
    control: &Receiver<Control>,
    delay: Duration,
    why: Option<&str>,
) -> bool {
    let timer = crossbeam_channel::after(delay);
    loop {
        select! {
            recv(control) -> msg => return msg.is_ok(),
            recv(jobs) -> req => match req {
                Ok(req) => shared.finish(req.done, Err(LinkError::Down(why.unwrap_or("connecting").to_string()))),
                Err(_) => return false,
            },
            recv(timer) -> _ => return true,
        }
    }
}

/// Fails whatever is still queued at shutdown, so every accepted job hears back exactly once.
fn drain(shared: &Shared, jobs: &Receiver<Request>) {
    for req in jobs.try_iter() {
        shared.finish(req.done, Err(LinkError::ShuttingDown));
    }
}
