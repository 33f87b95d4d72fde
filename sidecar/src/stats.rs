//! Counters kept while the sidecar runs, reported when it stops.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use res_push_proto::Outcome;

/// Live counters shared by every connection. Relaxed ordering is enough: they are only ever
/// read as a whole after the connections are gone, or as an approximate figure.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    connections: AtomicU64,
    jobs: AtomicU64,
    jobs_expired: AtomicU64,
    jobs_unsupported: AtomicU64,
    jobs_failed: AtomicU64,
    protocol_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Relaxed);
    }

    pub(crate) fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    pub(crate) fn job_finished(&self, outcome: &Outcome) {
        self.jobs.fetch_add(1, Relaxed);
        let counter = match outcome {
            Outcome::Pong | Outcome::Configured { .. } | Outcome::Sent { .. } => return,
            Outcome::InvalidToken { .. } => &self.jobs_failed,
            Outcome::Expired => &self.jobs_expired,
            Outcome::Unsupported { .. } => &self.jobs_unsupported,
            Outcome::Failed { .. } => &self.jobs_failed,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            connections: self.connections.load(Relaxed),
            jobs: self.jobs.load(Relaxed),
            jobs_expired: self.jobs_expired.load(Relaxed),
            jobs_unsupported: self.jobs_unsupported.load(Relaxed),
            jobs_failed: self.jobs_failed.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
        }
    }
}

/// What a [`run`](crate::run) did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Jobs answered with an outcome, whatever it was.
    pub jobs: u64,
    /// Jobs answered [`Outcome::Expired`] because their deadline had passed before they ran.
    pub jobs_expired: u64,
    /// Jobs answered [`Outcome::Unsupported`].
    pub jobs_unsupported: u64,
    /// Jobs answered [`Outcome::Failed`].
    pub jobs_failed: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
}
