//! `exemptionObjects`: limits meshgate's own webhook puts on exemption
//! objects (what the CRD's CEL cannot check: it has no clock).

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::duration::parse_go_duration;

/// Default `exemptionObjects.maxDuration`: 90 days.
pub const DEFAULT_MAX_EXEMPTION_DURATION: Duration = Duration::from_secs(2160 * 3600);

/// `exemptionObjects` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawExemptionObjects {
    max_duration: Option<String>,
}

/// `exemptionObjects`: limits on exemption objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptionObjects {
    /// `spec.expires` may be at most this far after the create/update.
    pub max_duration: Duration,
}

impl Default for ExemptionObjects {
    fn default() -> Self {
        ExemptionObjects {
            max_duration: DEFAULT_MAX_EXEMPTION_DURATION,
        }
    }
}

impl RawExemptionObjects {
    pub(super) fn validate(self) -> Result<ExemptionObjects, ConfigError> {
        let max_duration = match self.max_duration {
            None => DEFAULT_MAX_EXEMPTION_DURATION,
            Some(text) => parse_go_duration(&text)
                .map_err(|e| ConfigError::invalid("exemptionObjects.maxDuration", e.to_string()))?,
        };
        if max_duration.is_zero() {
            return Err(ConfigError::invalid(
                "exemptionObjects.maxDuration",
                "must be positive",
            ));
        }
        Ok(ExemptionObjects { max_duration })
    }
}
