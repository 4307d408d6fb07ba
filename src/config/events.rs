//! `events` in the config file: Kubernetes Events on findings. Parsed
//! here, beside the rest of the config; the events module uses them.

use serde::Deserialize;

use super::ConfigError;

/// `events` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawEvents {
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
    pub(super) fn validate(self) -> Result<EventSettings, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
