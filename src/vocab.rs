//! The shared words: rule ids, modes and severities. A leaf: it imports
//! nothing from the crate, so `config`, `rules`, `policy` and the report
//! can all name a rule without importing each other.
//!
//! Names, parsing and the lists of variants are derived (strum), never
//! spelled a second time: a rule id's text is its variant in kebab-case.
//! What a rule *is* (summary, severity, check, kinds) is its row in
//! `rules::RULES`.

use serde::Deserialize;
use strum::{EnumString, IntoStaticStr, VariantArray};

/// Every rule meshgate knows, by id; `RuleId::VARIANTS` lists them in the
/// order of `rules::RULES`.
#[derive(EnumString, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "kebab-case")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    SidecarRequired,
    NoHostNetwork,
    NoInterceptionBypass,
    DedicatedServiceAccount,
    StrictMtlsRequired,
    DefaultDenyRequired,
    PeerAuthenticationStrict,
    AuthorizationNoAllowAll,
    DenyAllOverridesAllow,
    DestinationRuleMtls,
    BaselineProtected,
    NamespaceMeshEnrolled,
    SidecarEgressLocked,
    ShortLivedCertificates,
    /// The `/mutate` certificate mount: not a check, but modes and
    /// exemptions address it by this id.
    WorkloadCertificates,
}

impl RuleId {
    /// Every rule, in the rule table's order.
    pub const ALL: &'static [RuleId] = Self::VARIANTS;

    /// The id users write in configs and read in answers.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for RuleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a rule's violations are treated. Ordered from weakest to strongest.
#[derive(Deserialize, EnumString, IntoStaticStr, VariantArray)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The rule does not run.
    Off,
    /// Violations are allowed and reported (warnings, audit annotations, logs, metrics).
    Audit,
    /// Violations are denied.
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// PolicyReport severity: `high` for traffic that bypasses mTLS or the
/// proxy, `medium` for missing defence in depth, `low` for hygiene. Ordered
/// from lowest to highest; also `meshgate audit --severity`'s values.
#[derive(IntoStaticStr, VariantArray, clap::ValueEnum)]
#[strum(serialize_all = "lowercase")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether a finding of `severity` reaches this floor.
    pub fn admits(self, severity: Severity) -> bool {
        severity >= self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_and_round_trip() {
        for id in RuleId::ALL {
            assert_eq!(id.as_str().parse::<RuleId>(), Ok(*id));
            assert!(id
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-'));
        }
        assert_eq!(RuleId::SidecarRequired.as_str(), "sidecar-required");
        assert!("Sidecar-Required".parse::<RuleId>().is_err());
        assert_eq!(Mode::Enforce.as_str(), "enforce");
        assert_eq!("audit".parse::<Mode>(), Ok(Mode::Audit));
        assert!(Mode::Off < Mode::Audit && Mode::Audit < Mode::Enforce);
        assert_eq!(Severity::High.as_str(), "high");
        assert!(Severity::Medium.admits(Severity::High));
        assert!(!Severity::High.admits(Severity::Low));
    }
}
