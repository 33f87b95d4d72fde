//! Running the jobs that `res_push.so` submits.
//!
//! [`Dispatcher`] is the one place that knows job kinds. Push delivery slots in here: a new
//! [`Job`] variant in the protocol crate, a match arm in [`Dispatcher::run`], and whatever
//! clients (APNs, FCM) the dispatcher needs as fields, shared by every connection.

use std::time::Duration;

use res_push_proto::{Job, Outcome};
use tokio::time::Instant;

/// Longest deadline honoured. A client asking for more is buggy; capping keeps
/// `Instant + deadline` from overflowing (which would panic) on a hostile `u64::MAX`.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// Turns a frame's `deadline_ms`, counted from when the frame was received, into an instant.
pub fn deadline_from(received: Instant, deadline_ms: u64) -> Instant {
    received + Duration::from_millis(deadline_ms).min(MAX_DEADLINE)
}

/// Runs jobs. One instance serves every connection, so it must stay cheap to share.
#[derive(Debug, Default)]
pub struct Dispatcher {
    _private: (),
}

impl Dispatcher {
    /// A dispatcher for the job kinds this build knows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `job` and says how it went. `deadline` is when the client stops caring: a job not yet
    /// started by then is answered [`Outcome::Expired`] without doing anything, because an
    /// incoming-call push that arrives after the caller gave up only confuses the phone.
    pub async fn run(&self, job: Job, deadline: Instant) -> Outcome {
        // `>=` so that a zero deadline always expires, whatever the clock resolution.
        if Instant::now() >= deadline {
            return Outcome::Expired;
        }
        match job {
            Job::Ping => Outcome::Pong,
            // Delivery lands with the APNs/FCM issue; until then these are honestly unsupported.
            Job::Configure { .. } | Job::Push(_) | Job::Unknown => Outcome::Unsupported {
                detail: format!(
                    "job kind not supported by res-push-sidecar {}",
                    env!("CARGO_PKG_VERSION")
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ping_pongs_before_its_deadline() {
        let d = Dispatcher::new();
        let outcome = d
            .run(Job::Ping, Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(outcome, Outcome::Pong);
    }

    #[tokio::test]
    async fn unknown_kind_is_unsupported_not_an_error() {
        let d = Dispatcher::new();
        let outcome = d
            .run(Job::Unknown, Instant::now() + Duration::from_secs(5))
            .await;
        assert!(
            matches!(&outcome, Outcome::Unsupported { detail } if detail.contains("not supported")),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn past_deadline_expires_without_running() {
        let d = Dispatcher::new();
        let now = Instant::now();
        assert_eq!(
            d.run(Job::Ping, deadline_from(now, 0)).await,
            Outcome::Expired
        );
        assert_eq!(d.run(Job::Unknown, now).await, Outcome::Expired);
    }

    #[tokio::test]
    async fn huge_deadline_is_capped_instead_of_overflowing() {
        let now = Instant::now();
        assert_eq!(deadline_from(now, u64::MAX), now + MAX_DEADLINE);
        assert_eq!(deadline_from(now, 1500), now + Duration::from_millis(1500));
    }
}
