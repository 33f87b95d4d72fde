//! Time for provider credentials, injectable so tests can age tokens without waiting.
//!
//! Credentials read two clocks here: the wall clock for what goes on the wire (a JWT's `iat`,
//! a template's `timestamp`), and a monotonic one for their age, so that an NTP step or an
//! operator setting the date neither keeps an APNs token past Apple's hour nor throws a good
//! one away. Deadlines, retries and timeouts use Tokio's clock: they are about elapsed time,
//! and must not move when a test ages credentials.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

/// A source of wall-clock and monotonic time.
pub trait TimeSource: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The current monotonic time, for measuring credential ages.
    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn monotonic(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that follows the system clocks plus an offset that only moves when told to, so a test
/// can make an hour pass in an instant while real requests (whose TLS and HTTP need real time)
/// keep working. The wall clock can also be stepped alone, as NTP or an operator would.
#[derive(Debug, Default)]
pub struct ManualClock {
    offsets: Mutex<Offsets>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Offsets {
    /// Time passed, on both clocks.
    elapsed: Duration,
    /// Wall clock stepped forward, beyond `elapsed`.
    wall_ahead: Duration,
    /// Wall clock stepped back.
    wall_behind: Duration,
}

impl ManualClock {
    /// A clock that starts at the system time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn offsets(&self) -> std::sync::MutexGuard<'_, Offsets> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets `by` pass: both the wall clock and the monotonic clock move forward.
    pub fn advance(&self, by: Duration) {
        self.offsets().elapsed += by;
    }

    /// Steps the wall clock forward by `by` without time passing (the monotonic clock stays).
    pub fn step_wall_forward(&self, by: Duration) {
        self.offsets().wall_ahead += by;
    }

    /// Steps the wall clock back by `by` without time passing (the monotonic clock stays).
    pub fn step_wall_back(&self, by: Duration) {
        self.offsets().wall_behind += by;
    }
}

impl TimeSource for ManualClock {
    fn now(&self) -> SystemTime {
        let o = *self.offsets();
        SystemTime::now() + o.elapsed + o.wall_ahead - o.wall_behind
    }

    fn monotonic(&self) -> Instant {
        Instant::now() + self.offsets().elapsed
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

    /// The current wall-clock time.
    pub fn now(&self) -> SystemTime {
        self.0.now()
    }

    /// The current monotonic time (credential ages).
    pub fn monotonic(&self) -> Instant {
        self.0.monotonic()
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
    fn wall_steps_leave_the_monotonic_clock_alone() {
        let manual = ManualClock::new();
        let clock = Clock::from(Arc::clone(&manual));
        let (wall, mono) = (clock.now(), clock.monotonic());
        manual.step_wall_back(Duration::from_secs(7200));
        assert!(clock.now() + Duration::from_secs(7100) < wall);
        assert!(clock.monotonic() - mono < Duration::from_secs(60));
        manual.advance(Duration::from_secs(600));
        let moved = clock.monotonic() - mono;
        assert!(moved >= Duration::from_secs(600), "{moved:?}");
        assert!(moved < Duration::from_secs(660), "{moved:?}");
    }

    #[test]
    fn handles_compare_by_source() {
        let a = Clock::system();
        assert_eq!(a, a.clone());
        assert_ne!(a, Clock::system());
    }
}
