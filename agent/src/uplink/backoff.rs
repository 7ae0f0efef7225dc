//! Delay between failed connection attempts. rumqttc's `EventLoop::poll` retries at once after an
//! error, which against a dead broker is a hot loop; the uplink sleeps this long between attempts.

use rand::Rng;
use std::time::Duration;

/// Capped exponential backoff with jitter: the n-th consecutive failure waits a random time in
/// `[max(min, base/2), base]`, where `base = min * 2^n` capped at `max`. The jitter keeps a fleet
/// of agents that lost the same broker from reconnecting in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
        }
    }

    /// A connection was established: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay before the next attempt, after one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self
            .min
            .checked_mul(1u32.checked_shl(self.failures).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let low = (base / 2).max(self.min);
        if low >= base {
            return base;
        }
        let ms = rng.random_range(low.as_millis()..=base.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn grows_within_bounds_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(5_000));
        let mut b = Backoff::new(min, max);
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..40).map(|_| b.next_delay(&mut rng)).collect();
        assert_eq!(delays[0], min, "first retry waits the minimum");
        for (n, d) in delays.iter().enumerate() {
            assert!(*d >= min && *d <= max, "attempt {n}: {d:?}");
        }
        // After enough failures every delay is in the top half of the cap.
        assert!(delays[10..].iter().all(|d| *d >= max / 2), "{delays:?}");
        // Jitter: not every capped delay is the same.
        assert!(delays[10..].iter().any(|d| *d != delays[10]), "{delays:?}");
        b.reset();
        assert_eq!(b.next_delay(&mut rng), min);
    }

    #[test]
    fn min_above_max_uses_min() {
        let mut b = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.next_delay(&mut rng), Duration::from_secs(2));
        assert_eq!(b.next_delay(&mut rng), Duration::from_secs(2));
    }
}
