//! The rules: pure functions from a typed object and the cluster posture to
//! findings. No I/O, no clock, no globals: the webhook, `meshgate audit` and
//! the tests call the very same functions. Each rule lives in a file named
//! after its id and reports every problem it sees, never just the first.

use std::fmt;
use std::str::FromStr;

use crate::config::Config;
use crate::posture::PostureIndex;
use crate::subject::{Object, Workload};

pub mod dedicated_service_account;
pub mod no_host_network;
pub mod no_interception_bypass;
pub mod sidecar_required;

#[cfg(test)]
pub(crate) mod testing;

/// Every rule meshgate knows, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    SidecarRequired,
    NoHostNetwork,
    NoInterceptionBypass,
    DedicatedServiceAccount,
}

impl RuleId {
    pub const ALL: &'static [RuleId] = &[
        RuleId::SidecarRequired,
        RuleId::NoHostNetwork,
        RuleId::NoInterceptionBypass,
        RuleId::DedicatedServiceAccount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::SidecarRequired => "sidecar-required",
            RuleId::NoHostNetwork => "no-host-network",
            RuleId::NoInterceptionBypass => "no-interception-bypass",
            RuleId::DedicatedServiceAccount => "dedicated-service-account",
        }
    }

    /// One line for catalogues and SARIF rule descriptions.
    pub fn summary(self) -> &'static str {
        match self {
            RuleId::SidecarRequired => {
                "workloads must run with an Istio sidecar (or in an ambient namespace)"
            }
            RuleId::NoHostNetwork => {
                "workloads must not use the host network, which no proxy intercepts"
            }
            RuleId::NoInterceptionBypass => {
                "workloads must not route traffic around the sidecar's interception"
            }
            RuleId::DedicatedServiceAccount => {
                "workloads need their own service account, hence their own mesh identity"
            }
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct UnknownRule;

impl FromStr for RuleId {
    type Err = UnknownRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or(UnknownRule)
    }
}

/// One problem with one object: what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(rule: RuleId, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            rule,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// What every rule may read besides the object.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub posture: &'a PostureIndex,
    pub config: &'a Config,
}

/// A rule's check, by the kind of object it reads.
#[derive(Clone, Copy)]
pub enum Check {
    Workload(fn(&Workload, &Context) -> Vec<Finding>),
}

pub struct Rule {
    pub id: RuleId,
    pub check: Check,
}

/// The rule table: adding a rule is one line here plus its file.
pub const RULES: &[Rule] = &[
    Rule {
        id: RuleId::SidecarRequired,
        check: Check::Workload(sidecar_required::check),
    },
    Rule {
        id: RuleId::NoHostNetwork,
        check: Check::Workload(no_host_network::check),
    },
    Rule {
        id: RuleId::NoInterceptionBypass,
        check: Check::Workload(no_interception_bypass::check),
    },
    Rule {
        id: RuleId::DedicatedServiceAccount,
        check: Check::Workload(dedicated_service_account::check),
    },
];

/// Runs every rule that applies to `object` and whose mode is not `off`
/// (`enabled` decides that, so rules that cannot matter never run).
pub fn evaluate(object: &Object, ctx: &Context, enabled: impl Fn(RuleId) -> bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rule in RULES.iter().filter(|r| enabled(r.id)) {
        match (rule.check, object) {
            (Check::Workload(check), Object::Workload(w)) => findings.extend(check(w, ctx)),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_id_round_trips_and_is_in_the_table_once() {
        for id in RuleId::ALL {
            assert_eq!(id.as_str().parse::<RuleId>(), Ok(*id));
            assert_eq!(RULES.iter().filter(|r| r.id == *id).count(), 1, "{id}");
        }
        assert_eq!("Sidecar-Required".parse::<RuleId>(), Err(UnknownRule));
    }
}
