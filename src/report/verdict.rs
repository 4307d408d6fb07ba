//! The builder's input: per judged object, one result per rule. Shared by
//! the webhook, `meshgate audit` and the background audit.

use crate::background::{ObjectRef, Verdict};
use crate::config::{Config, Mode};
use crate::policy::Judgement;
use crate::rules::{RuleId, RULES};
use crate::subject::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Outcome {
    Pass,
    /// An enforced violation.
    Fail,
    /// An audit-mode violation.
    Warn,
    /// An exempted violation.
    Skip,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleResult {
    pub rule: RuleId,
    pub outcome: Outcome,
    /// The finding's message, or the exemption's reason for a skip.
    pub message: String,
    pub fix: String,
    /// For a skip: the exemption that lifted the finding.
    pub exemption: Option<ExemptionNote>,
}

/// Which exemption lifted a finding: PolicyReport `properties`
/// `exemption`, `reason` and `expires`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExemptionNote {
    pub source: String,
    pub reason: String,
    /// RFC 3339; `None` for a config exemption without `expires`.
    pub expires: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVerdict {
    pub reference: ObjectRef,
    pub results: Vec<RuleResult>,
}

impl ObjectVerdict {
    /// Turns a judgement into results: enforced findings fail, audit-mode
    /// findings warn, exempted ones skip, and every other rule that ran on
    /// the object passes. Objects in exempt namespaces get no results.
    pub fn from_judgement(reference: ObjectRef, judgement: &Judgement, config: &Config) -> Self {
        let mut results = Vec::new();
        if judgement.exempt_namespace {
            return ObjectVerdict { reference, results };
        }
        for judged in &judgement.findings {
            results.push(RuleResult {
                rule: judged.finding.rule,
                outcome: match judged.mode {
                    Mode::Enforce => Outcome::Fail,
                    _ => Outcome::Warn,
                },
                message: judged.finding.message.clone(),
                fix: judged.finding.fix.clone(),
                exemption: None,
            });
        }
        for exempted in &judgement.exempted {
            results.push(RuleResult {
                rule: exempted.rule,
                outcome: Outcome::Skip,
                message: format!("exempted: {}", exempted.reason),
                fix: String::new(),
                exemption: Some(ExemptionNote {
                    source: exempted.source.clone(),
                    reason: exempted.reason.clone(),
                    expires: exempted.expires.map(|at| at.to_string()),
                }),
            });
        }
        for rule in rules_judging(reference.kind) {
            let reported = results.iter().any(|r| r.rule == rule);
            if !reported && rule.mode_in(config) != Mode::Off {
                results.push(RuleResult {
                    rule,
                    outcome: Outcome::Pass,
                    message: String::new(),
                    fix: String::new(),
                    exemption: None,
                });
            }
        }
        ObjectVerdict { reference, results }
    }

    /// As [`Self::from_judgement`]; an object reported through its
    /// controller (a pod that drifted from its template) gets only its own
    /// findings: what it passes, and what its owner fails, are reported at
    /// the owner, and a `pass` here would contradict the owner's `fail`.
    pub fn from_background(verdict: &Verdict, config: &Config) -> Self {
        let mut object = Self::from_judgement(
            ObjectRef::clone(&verdict.object),
            &verdict.judgement,
            config,
        );
        if verdict.through_owner {
            object.results.retain(|r| r.outcome != Outcome::Pass);
        }
        object
    }
}

/// The rules that judge a newly created object of `kind` (rules that only
/// judge updates and deletions, `baseline-protected`, never pass or fail an
/// object at rest).
pub fn rules_judging(kind: Kind) -> impl Iterator<Item = RuleId> {
    RULES
        .iter()
        .filter(move |rule| rule.judges_at_rest(kind))
        .map(|rule| rule.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Exempted, Judged};
    use crate::rules::Finding;
    use std::sync::Arc;

    pub(crate) fn pod(namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: Kind::Pod,
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    #[test]
    fn enforced_fail_audit_warn_exempted_skip_and_the_rest_pass() {
        let judgement = Judgement {
            findings: vec![
                Judged {
                    finding: Finding::new(RuleId::SidecarRequired, "no sidecar", "inject"),
                    mode: Mode::Enforce,
                },
                Judged {
                    finding: Finding::new(RuleId::NoHostNetwork, "host network", "drop it"),
                    mode: Mode::Audit,
                },
            ],
            exempted: vec![Exempted {
                rule: RuleId::DedicatedServiceAccount,
                reason: "legacy app, ticket 42".into(),
                source: "MeshExemption/shop/legacy".into(),
                expires: Some("2027-01-31T00:00:00Z".parse().unwrap()),
            }],
            exempt_namespace: false,
        };
        let config = Config::default();
        let verdict = ObjectVerdict::from_judgement(pod("shop", "web"), &judgement, &config);
        let outcome = |rule| {
            verdict
                .results
                .iter()
                .find(|r| r.rule == rule)
                .map(|r| r.outcome)
        };
        assert_eq!(outcome(RuleId::SidecarRequired), Some(Outcome::Fail));
        assert_eq!(outcome(RuleId::NoHostNetwork), Some(Outcome::Warn));
        assert_eq!(
            outcome(RuleId::DedicatedServiceAccount),
            Some(Outcome::Skip)
        );
        assert_eq!(outcome(RuleId::StrictMtlsRequired), Some(Outcome::Pass));
        assert_eq!(outcome(RuleId::PeerAuthenticationStrict), None);
        let skip = verdict.results.iter().find(|r| r.outcome == Outcome::Skip);
        assert!(skip.is_some_and(|r| r.message.contains("ticket 42")));
        assert_eq!(
            skip.and_then(|r| r.exemption.clone()),
            Some(ExemptionNote {
                source: "MeshExemption/shop/legacy".into(),
                reason: "legacy app, ticket 42".into(),
                expires: Some("2027-01-31T00:00:00Z".into()),
            })
        );
    }

    #[test]
    fn an_object_reported_through_its_owner_has_its_own_findings_and_no_passes() {
        let judgement = Judgement {
            findings: vec![Judged {
                finding: Finding::new(RuleId::SidecarRequired, "no sidecar", "inject"),
                mode: Mode::Enforce,
            }],
            ..Judgement::default()
        };
        let config = Config::default();
        let mut verdict = Verdict {
            object: Arc::new(pod("shop", "web-7d9c8b6f5-x2x4q")),
            judgement: Arc::new(judgement),
            through_owner: true,
        };
        let drifted = ObjectVerdict::from_background(&verdict, &config);
        let outcomes: Vec<_> = drifted
            .results
            .iter()
            .map(|r| (r.rule, r.outcome))
            .collect();
        assert_eq!(outcomes, [(RuleId::SidecarRequired, Outcome::Fail)]);

        verdict.through_owner = false;
        let standalone = ObjectVerdict::from_background(&verdict, &config);
        assert!(standalone
            .results
            .iter()
            .any(|r| r.outcome == Outcome::Pass));
    }

    #[test]
    fn rules_turned_off_do_not_pass_and_exempt_namespaces_have_no_results() {
        let config = Config::from_yaml("rules: {no-host-network: off}\n").unwrap();
        let verdict =
            ObjectVerdict::from_judgement(pod("shop", "web"), &Judgement::default(), &config);
        assert!(verdict
            .results
            .iter()
            .all(|r| r.rule != RuleId::NoHostNetwork));
        assert!(!verdict.results.is_empty());

        let exempt = Judgement {
            exempt_namespace: true,
            ..Judgement::default()
        };
        let verdict = ObjectVerdict::from_judgement(pod("kube-system", "x"), &exempt, &config);
        assert!(verdict.results.is_empty());
    }
}
