//! What `meshgate audit` reports and fails on: the `--rule` and `--severity`
//! filters, applied to the findings and the report results alike, and the
//! exit status that `--fail-on` asks for.

use crate::cli::{AuditArgs, FailOn, SeverityArg};
use crate::config::Mode;
use crate::rules::RuleId;

use super::Report;

/// The rules a run reports on.
#[derive(Debug, Default)]
pub struct Selection {
    rules: Vec<RuleId>,
    severity: Option<SeverityArg>,
}

impl Selection {
    pub fn of(args: &AuditArgs) -> Self {
        Selection {
            rules: args.rules.clone(),
            severity: args.severity,
        }
    }

    pub fn admits(&self, rule: RuleId) -> bool {
        (self.rules.is_empty() || self.rules.contains(&rule))
            && self
                .severity
                .is_none_or(|floor| floor.admits(rule.row().severity))
    }

    /// Drops the findings and report results of rules not selected.
    pub fn apply(&self, report: &mut Report) {
        report.findings.retain(|f| self.admits(f.rule));
        for verdict in &mut report.verdicts {
            verdict.results.retain(|r| self.admits(r.rule));
        }
    }
}

/// 1 when a finding reaches the `--fail-on` level, else 0; an input with no
/// judged object is 2 (an empty or mistyped input must not pass a CI gate).
pub fn exit_status(report: &Report, fail_on: FailOn) -> u8 {
    if report.objects_checked == 0 {
        return 2;
    }
    let failing = match fail_on {
        FailOn::Enforce => report.count(Mode::Enforce),
        FailOn::Audit => report.count(Mode::Enforce) + report.count(Mode::Audit),
        FailOn::None => 0,
    };
    u8::from(failing > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Reported;

    fn finding(rule: RuleId, mode: Mode) -> Reported {
        Reported {
            rule,
            mode,
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: "p".into(),
            message: "m".into(),
            fix: "f".into(),
            file: "f.yaml".into(),
            document: 1,
            line: 1,
        }
    }

    fn report(findings: Vec<Reported>) -> Report {
        Report {
            findings,
            objects_checked: 1,
            ..Report::default()
        }
    }

    #[test]
    fn fail_on_sets_the_threshold() {
        let audit_only = report(vec![finding(RuleId::DenyAllOverridesAllow, Mode::Audit)]);
        assert_eq!(exit_status(&audit_only, FailOn::Enforce), 0);
        assert_eq!(exit_status(&audit_only, FailOn::Audit), 1);
        assert_eq!(exit_status(&audit_only, FailOn::None), 0);
        let enforced = report(vec![finding(RuleId::SidecarRequired, Mode::Enforce)]);
        assert_eq!(exit_status(&enforced, FailOn::Enforce), 1);
        assert_eq!(exit_status(&enforced, FailOn::Audit), 1);
        assert_eq!(exit_status(&enforced, FailOn::None), 0);
        let empty = Report::default();
        assert_eq!(exit_status(&empty, FailOn::None), 2, "no object judged");
    }

    #[test]
    fn rule_and_severity_filters_combine() {
        let selection = Selection {
            rules: vec![],
            severity: Some(SeverityArg::High),
        };
        assert!(selection.admits(RuleId::SidecarRequired));
        assert!(!selection.admits(RuleId::DedicatedServiceAccount));
        let selection = Selection {
            rules: vec![RuleId::DedicatedServiceAccount, RuleId::NoHostNetwork],
            severity: None,
        };
        let mut r = report(vec![
            finding(RuleId::SidecarRequired, Mode::Enforce),
            finding(RuleId::NoHostNetwork, Mode::Enforce),
        ]);
        selection.apply(&mut r);
        let left: Vec<_> = r.findings.iter().map(|f| f.rule).collect();
        assert_eq!(left, [RuleId::NoHostNetwork]);
    }
}
