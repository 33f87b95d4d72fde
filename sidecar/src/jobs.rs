//! Running the jobs that `res_push.so` submits.
//!
//! [`Dispatcher`] is the one place that knows job kinds. It is shared by every connection; what
//! belongs to one connection (the apps it configured) lives in its [`Session`].

use std::{sync::Arc, time::Duration};

use res_push_proto::{FailureClass, Job, Outcome, PushRequest, PushTarget, VoicemailPush, redact};
use tokio::{
    sync::{OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock, Semaphore},
    time::Instant,
};
use tracing::{debug, info, warn};

use crate::{
    Config,
    apps::{self, App, AppSet, BuildContext, Prepared, Registry, Route},
    classify::Verdict,
    metrics::{GaugeGuard, Metrics, provider_label},
    retry::{RetryPolicy, jitter},
};

/// Longest deadline honoured. A client asking for more is buggy; capping keeps
/// `Instant + deadline` from overflowing (which would panic) on a hostile `u64::MAX`.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Turns a frame's `deadline_ms`, counted from when the frame was received, into an instant.
pub fn deadline_from(received: Instant, deadline_ms: u64) -> Instant {
    received + Duration::from_millis(deadline_ms).min(MAX_DEADLINE)
}

/// What one connection has configured.
#[derive(Debug, Default)]
pub struct Session {
    apps: Arc<RwLock<Arc<AppSet>>>,
}

impl Session {
    /// A connection with no apps yet.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A job's place in its connection's order, taken by [`Dispatcher::admit`] when the job is read.
///
/// Jobs run concurrently, yet a `Push` sent after a `Configure` must see the new apps: the
/// `Configure` takes the apps' write lock at admission, in frame order, and pushes read behind it.
#[derive(Debug)]
pub struct Ticket(Option<OwnedRwLockWriteGuard<Arc<AppSet>>>);

/// Runs jobs. One instance serves every connection, so it must stay cheap to share.
#[derive(Debug)]
pub struct Dispatcher {
    registry: Registry,
    ctx: BuildContext,
    /// Sending slots shared by every push of the sidecar (`--max-inflight`).
    slots: Arc<Semaphore>,
    retry: RetryPolicy,
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self::new(&Config::default(), Arc::new(Metrics::new()))
    }
}

/// The permits a push holds while its request is out.
type Permits = (Option<OwnedSemaphorePermit>, OwnedSemaphorePermit);

impl Dispatcher {
    /// A dispatcher configured by `config`, recording into `metrics`.
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        Self {
            registry: Registry::default(),
            ctx: BuildContext {
                clock: config.clock.clone(),
                metrics,
                prewarm: true,
            },
            slots: Arc::new(Semaphore::new(
                config.max_inflight.clamp(1, Semaphore::MAX_PERMITS),
            )),
            retry: config.retry.clone(),
        }
    }

    /// The metrics this dispatcher records.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.ctx.metrics
    }

    /// Takes `job`'s place in `session`'s order; call in the order jobs were received.
    pub async fn admit(&self, session: &Session, job: &Job) -> Ticket {
        match job {
            Job::Configure { .. } => Ticket(Some(Arc::clone(&session.apps).write_owned().await)),
            _ => Ticket(None),
        }
    }

    /// Runs `job` and says how it went. `deadline` is when the client stops caring: a job not yet
    /// started by then is answered [`Outcome::Expired`] without doing anything, because an
    /// incoming-call push that arrives after the caller gave up only confuses the phone.
    pub async fn run(
        &self,
        session: &Session,
        job: Job,
        ticket: Ticket,
        deadline: Instant,
    ) -> Outcome {
        // `>=` so that a zero deadline always expires, whatever the clock resolution.
        if Instant::now() >= deadline {
            return Outcome::Expired;
        }
        match job {
            Job::Ping => Outcome::Pong,
            Job::Configure { apps } => {
                let mut current = match ticket.0 {
                    Some(guard) => guard,
                    None => Arc::clone(&session.apps).write_owned().await,
                };
                // Boxed, as a rare and large future: inline, every push's task would be its size.
                let (set, errors) = Box::pin(self.registry.configure(apps, &self.ctx)).await;
                let names = set.names();
                info!(apps = ?names, errors = errors.len(), "configured");
                *current = Arc::new(set);
                Outcome::Configured {
                    apps: names,
                    errors,
                }
            }
            Job::Push(req) => self.push(session, Send::Push(&req), deadline).await,
            Job::Voicemail(vm) => self.push(session, Send::Voicemail(&vm), deadline).await,
            Job::Unknown => Outcome::Unsupported {
                detail: format!(
                    "job kind not supported by res-push-sidecar {}",
                    env!("CARGO_PKG_VERSION")
                ),
            },
        }
    }

    async fn push(&self, session: &Session, req: Send<'_>, deadline: Instant) -> Outcome {
        let metrics = &self.ctx.metrics;
        let provider = provider_label(req.target().provider);
        // Waits only while a Configure admitted before this push is being applied. The lock is
        // released at once: holding it through delivery would hold up the next Configure.
        let apps = match tokio::time::timeout_at(deadline, session.apps.read()).await {
            Ok(current) => Arc::clone(&*current),
            Err(_) => {
                metrics.push_finished(provider, "", "expired", "");
                return Outcome::Expired;
            }
        };
        let Some(route) = apps.route(req.target()) else {
            let outcome = apps::no_app(req.target(), !apps.is_empty());
            metrics.push_finished(provider, "", "failed_no_app", "");
            if let Outcome::Failed { reason, .. } = &outcome {
                info!(token = %redact(&req.target().token), "{reason}");
            }
            return outcome;
        };
        let app = &route.app;
        let (outcome, code) = self.deliver(&route, &req, deadline).await;
        let token = redact(&req.target().token);
        let kind = req.kind();
        let (result, reason) = match &outcome {
            Outcome::Sent {
                attempts,
                provider_id,
            } => {
                debug!(app = %app.name, %kind, %token, attempts, ?provider_id, "sent");
                ("sent".to_owned(), String::new())
            }
            Outcome::InvalidToken { reason } => {
                info!(app = %app.name, %kind, %token, %reason, "device token is dead");
                ("invalid_token".to_owned(), code)
            }
            Outcome::Expired => {
                info!(app = %app.name, %kind, %token, "deadline passed before a sending slot was free; not sent");
                ("expired".to_owned(), String::new())
            }
            Outcome::Failed { class, reason } => {
                // Config problems are logged once by the app itself.
                if *class != FailureClass::Config {
                    warn!(app = %app.name, %kind, %token, ?class, %reason, "push failed");
                }
                (format!("failed_{}", class_label(*class)), code)
            }
            other => (format!("{other:?}"), code),
        };
        metrics.push_finished(provider, &app.name, &result, &reason);
        outcome
    }

    /// Sends a matched push, retrying passing failures until it succeeds, fails for good, or
    /// the deadline comes. Returns the outcome and the provider's reason code, for metrics.
    async fn deliver(&self, route: &Route, req: &Send<'_>, deadline: Instant) -> (Outcome, String) {
        let app = &route.app;
        let metrics = &self.ctx.metrics;
        let ttl = deadline.saturating_duration_since(Instant::now()).as_secs();
        let prepared = match req.prepare(route, ttl, self.ctx.clock.unix_seconds()) {
            Ok(prepared) => prepared,
            Err(outcome) => return (outcome, "RejectedBeforeSending".to_owned()),
        };
        let mut attempts = 0u32;
        let mut refreshed = false;
        let mut last = None;
        loop {
            let Some(permits) = self.acquire(app, deadline).await else {
                return match last {
                    None => {
                        metrics.expired_in_queue();
                        (Outcome::Expired, String::new())
                    }
                    Some(reason) => failed(FailureClass::Provider, reason),
                };
            };
            let inflight = GaugeGuard::inc(metrics.inflight());
            attempts += 1;
            let attempt = app.attempt(&prepared, deadline).await;
            drop((inflight, permits));
            match attempt.verdict {
                Verdict::Sent { provider_id } => {
                    return (
                        Outcome::Sent {
                            provider_id,
                            attempts,
                        },
                        String::new(),
                    );
                }
                Verdict::InvalidToken(reason) => {
                    return (
                        Outcome::InvalidToken {
                            reason: reason.text,
                        },
                        reason.code,
                    );
                }
                Verdict::Payload(reason) => return failed(FailureClass::Payload, reason),
                Verdict::Other(reason) => return failed(FailureClass::Other, reason),
                Verdict::Config(reason) => {
                    app.config_problem(metrics, &reason);
                    return failed(FailureClass::Config, reason);
                }
                Verdict::RefreshAuth(reason) => {
                    let renewed = match attempt.auth_generation {
                        Some(generation) if !refreshed => app.expire_credential(generation).await,
                        _ => false,
                    };
                    if renewed && Instant::now() < deadline {
                        info!(app = %app.name, reason = %reason.text, "credential refused as expired; retrying with a fresh one");
                        refreshed = true;
                        metrics.retried(app.provider, &app.name);
                        last = Some(reason);
                        continue;
                    }
                    app.config_problem(metrics, &reason);
                    return failed(FailureClass::Config, reason);
                }
                Verdict::Retry {
                    reason,
                    retry_after,
                } => {
                    let Some(at) = self.retry.next_attempt(
                        Instant::now(),
                        deadline,
                        attempts,
                        retry_after,
                        jitter(),
                    ) else {
                        // An attempt cut short by the deadline says less than the provider's
                        // refusal before it.
                        let reason = match last {
                            Some(refused) if reason.code == "Timeout" => refused,
                            _ => reason,
                        };
                        return failed(FailureClass::Provider, reason);
                    };
                    debug!(app = %app.name, attempts, reason = %reason.text, wait = ?at.saturating_duration_since(Instant::now()), "retrying");
                    metrics.retried(app.provider, &app.name);
                    last = Some(reason);
                    tokio::time::sleep_until(at).await;
                }
            }
        }
    }

    /// Waits for the app's slot (if it has a limit), then a sidecar slot, until `deadline`.
    /// The app's comes first so that pushes queued behind a busy app hold no sidecar slot that
    /// another app's push could use.
    async fn acquire(&self, app: &App, deadline: Instant) -> Option<Permits> {
        let _queued = GaugeGuard::inc(self.ctx.metrics.queued());
        let wait = async {
            let own = match &app.limit {
                Some(limit) => Some(Arc::clone(limit).acquire_owned().await.ok()?),
                None => None,
            };
            let shared = Arc::clone(&self.slots).acquire_owned().await.ok()?;
            Some((own, shared))
        };
        let permits = tokio::time::timeout_at(deadline, wait)
            .await
            .ok()
            .flatten()?;
        (Instant::now() < deadline).then_some(permits)
    }
}

/// A job that ends in one provider request.
#[derive(Debug, Clone, Copy)]
enum Send<'a> {
    Push(&'a PushRequest),
    Voicemail(&'a VoicemailPush),
}

impl Send<'_> {
    fn target(&self) -> &PushTarget {
        match self {
            Send::Push(req) => &req.target,
            Send::Voicemail(vm) => &vm.target,
        }
    }

    /// For logs.
    fn kind(&self) -> &'static str {
        match self {
            Send::Push(req) => crate::payload::kind_name(req.kind),
            Send::Voicemail(vm) if vm.background => "voicemail (background)",
            Send::Voicemail(_) => crate::payload::VOICEMAIL,
        }
    }

    fn prepare(&self, route: &Route, ttl: u64, now_unix: u64) -> Result<Prepared, Outcome> {
        match self {
            Send::Push(req) => route.app.prepare(route, req, ttl, now_unix),
            Send::Voicemail(vm) => route.app.prepare_voicemail(route, vm, ttl, now_unix),
        }
    }
}

fn failed(class: FailureClass, reason: crate::classify::Reason) -> (Outcome, String) {
    (
        Outcome::Failed {
            class,
            reason: reason.text,
        },
        reason.code,
    )
}

fn class_label(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Config => "config",
        FailureClass::NoApp => "no_app",
        FailureClass::Provider => "provider",
        FailureClass::Payload => "payload",
        FailureClass::Other => "other",
    }
}

impl AppSet {
    /// The names of the apps, in order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.iter().map(|app| app.name.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use res_push_proto::{Provider, PushKind, PushTarget};

    async fn run(d: &Dispatcher, job: Job, deadline: Instant) -> Outcome {
        let session = Session::new();
        let ticket = d.admit(&session, &job).await;
        d.run(&session, job, ticket, deadline).await
    }

    #[tokio::test]
    async fn ping_pongs_before_its_deadline() {
        let d = Dispatcher::default();
        let outcome = run(&d, Job::Ping, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(outcome, Outcome::Pong);
    }

    #[tokio::test]
    async fn unknown_kind_is_unsupported_not_an_error() {
        let d = Dispatcher::default();
        let outcome = run(&d, Job::Unknown, Instant::now() + Duration::from_secs(5)).await;
        assert!(
            matches!(&outcome, Outcome::Unsupported { detail } if detail.contains("not supported")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn past_deadline_expires_without_running() {
        let d = Dispatcher::default();
        let now = Instant::now();
        assert_eq!(
            run(&d, Job::Ping, deadline_from(now, 0)).await,
            Outcome::Expired
        );
        assert_eq!(run(&d, Job::Unknown, now).await, Outcome::Expired);
    }

    #[tokio::test]
    async fn huge_deadline_is_capped_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(deadline_from(now, u64::MAX), now + MAX_DEADLINE);
        assert_eq!(deadline_from(now, 1500), now + Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn push_without_apps_is_no_app() {
        let d = Dispatcher::default();
        let job = Job::Push(PushRequest {
            target: PushTarget {
                provider: Provider::Apns,
                app_id: "com.example".into(),
                token: "ab".into(),
                environment: None,
            },
            kind: PushKind::Call,
            data: Default::default(),
        });
        let outcome = run(&d, job, Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                class: FailureClass::NoApp,
                reason: "no apps configured on this connection".into()
            }
        );
        assert!(d.metrics().render().contains(r#"result="failed_no_app""#));
    }

    #[tokio::test]
    async fn configure_with_nothing_is_configured_empty() {
        let d = Dispatcher::default();
        let outcome = run(
            &d,
            Job::Configure { apps: vec![] },
            Instant::now() + Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            outcome,
            Outcome::Configured {
                apps: vec![],
                errors: vec![]
            }
        );
    }

    #[test]
    fn tokens_are_redacted() {
        assert_eq!(redact("0123456789abcdef"), "…abcdef");
        assert_eq!(redact("short"), "…short");
    }
}
