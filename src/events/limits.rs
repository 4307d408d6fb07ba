//! The `events` settings and the token bucket that bounds the Events
//! written.

use serde::Deserialize;
use tokio::time::Instant;

use crate::config::ConfigError;

/// `events` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEvents {
    enabled: Option<bool>,
    max_per_minute: Option<u32>,
    burst: Option<u32>,
}

/// Validated `events` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    pub enabled: bool,
    /// Events written per minute at most, on average (token bucket).
    pub max_per_minute: u32,
    /// Events written at once after a quiet spell.
    pub burst: u32,
}

impl RawEvents {
    pub(crate) fn validate(self) -> Result<EventSettings, ConfigError> {
        let max_per_minute = self.max_per_minute.unwrap_or(60);
        if !(1..=6000).contains(&max_per_minute) {
            return Err(ConfigError::invalid(
                "events.maxPerMinute",
                "must be 1 to 6000",
            ));
        }
        let burst = self.burst.unwrap_or(20);
        if !(1..=1000).contains(&burst) {
            return Err(ConfigError::invalid("events.burst", "must be 1 to 1000"));
        }
        Ok(EventSettings {
            enabled: self.enabled.unwrap_or(true),
            max_per_minute,
            burst,
        })
    }
}

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

    #[test]
    fn events_are_on_by_default_and_configurable() {
        use crate::config::Config;
        let config = Config::from_yaml("").unwrap();
        assert_eq!(
            config.events,
            EventSettings {
                enabled: true,
                max_per_minute: 60,
                burst: 20
            }
        );
        let config =
            Config::from_yaml("events: {enabled: false, maxPerMinute: 600, burst: 5}\n").unwrap();
        assert!(!config.events.enabled);
        assert_eq!(config.events.max_per_minute, 600);
        let err = |yaml: &str| Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(err("events: {maxPerMinute: 0}\n").contains("events.maxPerMinute"));
        assert!(err("events: {burst: 100000}\n").contains("events.burst"));
        assert!(err("events: {rate: 1}\n").contains("rate"));
    }
}
