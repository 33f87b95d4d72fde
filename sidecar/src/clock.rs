//! Wall-clock time for provider credentials, injectable so tests can age tokens without waiting.
//!
//! Only credential lifetimes (the APNs provider token, the FCM access token) read this clock.
//! Deadlines, retries and timeouts use Tokio's monotonic clock: they are about elapsed time, and
//! must not jump when an operator (or a test) moves the wall clock.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

/// A source of wall-clock time.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that follows the system clock plus an offset that only moves when told to, so a test
/// can make an hour pass in an instant while real requests (whose TLS and HTTP need real time)
/// keep working.
#[derive(Debug, Default)]
pub struct ManualClock {
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock that starts at the system time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        SystemTime::now() + *self.offset.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared handle on a [`TimeSource`]. Two handles are equal when they share the same source,
/// which keeps [`Config`](crate::Config) comparable.
#[derive(Debug, Clone)]
pub struct Clock(Arc<dyn TimeSource>);

impl Clock {
    /// The operating system's clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemTimeSource))
    }

    /// A handle on `source`.
    pub fn new(source: Arc<dyn TimeSource>) -> Self {
        Self(source)
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        self.0.now()
    }

    /// Seconds since the Unix epoch (0 for a clock set before 1970).
    pub fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Clock {}

impl From<Arc<ManualClock>> for Clock {
    fn from(clock: Arc<ManualClock>) -> Self {
        Self(clock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let manual = ManualClock::new();
        let clock = Clock::from(Arc::clone(&manual));
        let before = clock.now();
        manual.advance(Duration::from_secs(3600));
        let after = clock.now();
        let moved = after.duration_since(before).expect("forward");
        assert!(moved >= Duration::from_secs(3600), "{moved:?}");
        assert!(moved < Duration::from_secs(3700), "{moved:?}");
    }

    #[test]
    fn handles_compare_by_source() {
        let a = Clock::system();
        assert_eq!(a, a.clone());
        assert_ne!(a, Clock::system());
    }
}
