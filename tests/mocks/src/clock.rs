//! The mocks' notion of "now", which tests can move forward.
//!
//! Every time rule the mocks enforce (APNs provider-token age, OAuth2 assertion time frame,
//! access-token expiry, the `timestamp` of a 410 answer) reads this clock, so a test can cross
//! an hour-long boundary in microseconds instead of waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time plus an offset that only tests change. Clones share the offset.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicU64>,
}

impl Clock {
    /// A clock that starts at the real time.
    pub fn new() -> Clock {
        Clock::default()
    }

    /// Moves "now" forward by `by` (cumulative).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Back to the real time (offset zero).
    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::SeqCst);
    }

    /// Whether `other` is a clone of this clock (shares its offset).
    pub fn same_as(&self, other: &Clock) -> bool {
        Arc::ptr_eq(&self.offset_ms, &other.offset_ms)
    }

    /// How far ahead of the real time this clock is.
    pub fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::SeqCst))
    }

    /// The shifted "now".
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.offset()
    }

    /// The shifted "now" in whole seconds since the Unix epoch (JWT `iat`/`exp` unit).
    pub fn unix_secs(&self) -> u64 {
        self.unix_millis() / 1000
    }

    /// The shifted "now" in milliseconds since the Unix epoch (APNs 410 `timestamp` unit).
    pub fn unix_millis(&self) -> u64 {
        let since = self.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The real (unshifted) time in milliseconds since the Unix epoch.
pub(crate) fn real_unix_millis() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_accumulates_and_reset_clears() {
        let c = Clock::new();
        let before = c.unix_secs();
        c.advance(Duration::from_secs(3600));
        c.advance(Duration::from_secs(60));
        let shifted = c.clone().unix_secs();
        assert!(
            shifted >= before + 3660 && shifted <= before + 3662,
            "{shifted} vs {before}"
        );
        c.reset();
        assert_eq!(c.offset(), Duration::ZERO);
    }
}
