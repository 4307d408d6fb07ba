//! The token bucket that bounds the Events written (its settings are
//! `crate::config::EventSettings`).

use tokio::time::Instant;

use crate::config::EventSettings;

/// A token bucket: `burst` at once, then `per_minute` a minute.
#[derive(Debug)]
pub(super) struct Limiter {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Limiter {
    pub(super) fn new(settings: &EventSettings, now: Instant) -> Self {
        Limiter {
            capacity: f64::from(settings.burst),
            per_second: f64::from(settings.max_per_minute) / 60.0,
            tokens: f64::from(settings.burst),
            last: now,
        }
    }

    pub(super) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_the_rate() {
        let settings = EventSettings {
            enabled: true,
            max_per_minute: 60,
            burst: 3,
        };
        let start = Instant::now();
        let mut limiter = Limiter::new(&settings, start);
        let taken = (0..10).filter(|_| limiter.try_take(start)).count();
        assert_eq!(taken, 3);
        // One a second afterwards.
        assert!(!limiter.try_take(start + Duration::from_millis(500)));
        assert!(limiter.try_take(start + Duration::from_millis(1000)));
        assert!(!limiter.try_take(start + Duration::from_millis(1100)));
        // A long quiet spell refills the burst, no more.
        let later = start + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| limiter.try_take(later)).count(), 3);
    }
}
