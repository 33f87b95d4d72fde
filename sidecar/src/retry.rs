//! When to try a push again: exponential backoff with jitter, at least as long as the provider's
//! `Retry-After`, and never past the job's deadline (a call push that lands after the caller
//! gave up only rings a phone for nothing).

use std::time::Duration;

use tokio::time::Instant;

/// How pushes are retried after passing failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// Longest delay between two attempts, unless the provider's `Retry-After` asks for more.
    pub max_delay: Duration,
    /// Most HTTP attempts for one push, the first included.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The pause after `attempts` failed attempts. `jitter` in `[0, 1)` spreads retries of many
    /// pushes that failed together ("equal jitter": between half and all of the exponential
    /// delay), so they do not come back as one burst.
    pub fn delay(&self, attempts: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let exponential = self
            .base_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let jitter = jitter.clamp(0.0, 1.0);
        let jittered = exponential / 2 + exponential.mul_f64(jitter) / 2;
        retry_after.map_or(jittered, |after| after.max(jittered))
    }

    /// When to make the next attempt after `attempts` failed ones, or `None` when no attempt may
    /// be made: the attempt budget is spent, or the pause would end at or after `deadline`.
    pub fn next_attempt(
        &self,
        now: Instant,
        deadline: Instant,
        attempts: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Option<Instant> {
        if attempts >= self.max_attempts {
            return None;
        }
        let at = now.checked_add(self.delay(attempts, retry_after, jitter))?;
        (at < deadline).then_some(at)
    }
}

/// A number in `[0, 1)` from the system's random source, for jitter.
pub(crate) fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    // The system RNG does not fail on Linux once booted; no jitter is a fine fallback if it does.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_attempts: 5,
        }
    }

    #[test]
    fn delay_doubles_and_is_capped() {
        let p = policy();
        assert_eq!(p.delay(1, None, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, None, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(400));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay(u32::MAX, None, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn jitter_keeps_at_least_half() {
        let p = policy();
        assert_eq!(p.delay(3, None, 0.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, None, 0.5), Duration::from_millis(300));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
            let d = p.delay(3, None, j);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = policy();
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3)), 0.0),
            Duration::from_secs(3)
        );
        // A Retry-After shorter than the backoff does not make us hurry.
        assert_eq!(
            p.delay(3, Some(Duration::from_millis(10)), 1.0),
            Duration::from_millis(400)
        );
    }

    #[test]
    fn no_attempt_past_the_deadline_or_the_budget() {
        let p = policy();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        assert_eq!(
            p.next_attempt(now, deadline, 1, None, 1.0),
            Some(now + Duration::from_millis(100))
        );
        // Retry-After beyond the deadline: give up now rather than wait for nothing.
        assert_eq!(
            p.next_attempt(now, deadline, 1, Some(Duration::from_secs(2)), 0.0),
            None
        );
        // Landing exactly on the deadline is too late as well.
        assert_eq!(
            p.next_attempt(now, deadline, 1, Some(Duration::from_secs(1)), 0.0),
            None
        );
        assert_eq!(
            p.next_attempt(now, now + Duration::from_secs(60), 5, None, 0.0),
            None
        );
    }
}
