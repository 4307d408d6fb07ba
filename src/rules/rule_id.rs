//! What a rule id knows of its row in [`super::RULES`].

use super::{Mode, Rule, RuleId, DOCS_URL, RULES};
use crate::config::Config;

impl RuleId {
    /// The rule's row in [`RULES`] (rows are in the enum's order, checked
    /// when the crate compiles).
    pub fn row(self) -> &'static Rule {
        &RULES[self as usize]
    }

    /// The mode a rule runs at when the config does not name it: the global
    /// mode, capped for rules whose findings are advice rather than holes.
    pub fn default_cap(self) -> Mode {
        self.row().cap
    }

    /// The configured mode of the rule, before namespace labels: the
    /// config's own line for it, else the global mode capped by
    /// [`Self::default_cap`].
    pub fn mode_in(self, config: &Config) -> Mode {
        config
            .rules
            .get(&self)
            .copied()
            .unwrap_or_else(|| config.mode.min(self.default_cap()))
    }

    /// Rules that read the cluster's mesh posture (PeerAuthentications and
    /// AuthorizationPolicies): their denials are confirmed against the API
    /// server before they are sent.
    pub fn reads_posture(self) -> bool {
        self.row().reads_posture
    }

    /// One line for catalogues and SARIF rule descriptions.
    pub fn summary(self) -> &'static str {
        self.row().summary
    }

    /// For PolicyReports: see [`super::Severity`].
    pub fn severity(self) -> &'static str {
        self.row().severity.as_str()
    }

    pub fn category(self) -> &'static str {
        self.row().category
    }

    /// The rule's page in the documentation (`docs/src/rules/<id>.md`),
    /// linked from SARIF, denials and `meshgate rules`.
    pub fn doc_url(self) -> String {
        format!("{DOCS_URL}/rules/{}.html", self.as_str())
    }
}
