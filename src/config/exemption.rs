//! Exemptions: documented exceptions that lift named rules for some objects
//! of one namespace, picked by name and by a label selector.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};
use serde::Deserialize;

use super::{parse_rule_id, ConfigError};
use crate::vocab::RuleId;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RawExemption {
    #[serde(default)]
    rules: Vec<String>,
    namespace: Option<String>,
    selector: Option<LabelSelector>,
    #[serde(default)]
    names: Vec<String>,
    reason: Option<String>,
    /// RFC 3339; the exemption stops applying at this instant.
    expires: Option<String>,
}

/// A documented exception: these rules do not apply to the matching objects.
#[derive(Debug, Clone)]
pub struct Exemption {
    pub rules: Vec<RuleId>,
    pub namespace: String,
    /// Parsed at load, so a malformed selector is a config error.
    pub selector: Option<Selector>,
    /// Exact object names; an entry ending in `*` matches by prefix.
    pub names: Vec<String>,
    pub reason: String,
    /// When it stops applying (`None`: never).
    pub expires: Option<Timestamp>,
}

impl RawExemption {
    pub(super) fn validate(self, at: &str) -> Result<Exemption, ConfigError> {
        let Self {
            rules,
            namespace,
            selector,
            names,
            reason,
            expires,
        } = self;
        let expires = parse_expires(expires, at)?;
        let reason = reason.unwrap_or_default();
        if reason.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.reason"),
                "every exemption needs a reason: say why this exception is safe",
            ));
        }
        let namespace = namespace.unwrap_or_default();
        if namespace.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.namespace"),
                "every exemption is scoped to one namespace",
            ));
        }
        if rules.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.rules"),
                "list the rule ids this exemption lifts",
            ));
        }
        let rules = rules
            .iter()
            .enumerate()
            .map(|(j, id)| parse_rule_id(id, &format!("{at}.rules[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let selector = selector
            .map(parse_selector)
            .transpose()
            .map_err(|problem| ConfigError::invalid(format!("{at}.selector"), problem))?;
        for (j, name) in names.iter().enumerate() {
            if name.is_empty() || name == "*" {
                return Err(ConfigError::invalid(
                    format!("{at}.names[{j}]"),
                    "must name objects (a bare `*` would exempt the whole namespace; leave `names` out for that)",
                ));
            }
        }
        Ok(Exemption {
            rules,
            namespace,
            selector,
            names,
            reason,
            expires,
        })
    }
}

fn parse_expires(expires: Option<String>, at: &str) -> Result<Option<Timestamp>, ConfigError> {
    expires
        .map(|text| text.parse::<Timestamp>())
        .transpose()
        .map_err(|e| {
            ConfigError::invalid(
                format!("{at}.expires"),
                format!("not an RFC 3339 time like 2027-01-31T00:00:00Z: {e}"),
            )
        })
}

/// kube's `Selector` after the checks the API server makes and kube-core
/// leaves out: it accepts `In`/`NotIn` with an empty list (an exemption that
/// silently matches nothing, or everything), values on `Exists`, and an
/// empty key. Its error does not name the expression or the operator either.
pub(crate) fn parse_selector(selector: LabelSelector) -> Result<Selector, String> {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let has_values = expr.values.as_ref().is_some_and(|v| !v.is_empty());
        let problem = match expr.operator.as_str() {
            _ if expr.key.is_empty() => "empty key".to_owned(),
            "In" | "NotIn" if !has_values => format!("operator {} needs values", expr.operator),
            "Exists" | "DoesNotExist" if has_values => {
                format!("operator {} takes no values", expr.operator)
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => continue,
            other => {
                format!("unknown operator `{other}` (In, NotIn, Exists, DoesNotExist)")
            }
        };
        return Err(format!("matchExpressions[{i}]: {problem}"));
    }
    Selector::try_from(selector).map_err(|e| e.to_string())
}

impl Exemption {
    /// Whether this exemption covers `rule` for the object named `name` in
    /// `namespace` whose (pod) labels are `labels`.
    pub fn covers(
        &self,
        rule: RuleId,
        namespace: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        self.rules.contains(&rule)
            && self.namespace == namespace
            && (self.names.is_empty() || self.names.iter().any(|n| name_matches(n, name)))
            && self.selector.as_ref().is_none_or(|s| s.matches(labels))
    }

    /// Whether it still applies at `now` (it stops at its `expires` instant).
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires.is_none_or(|expires| now < expires)
    }
}

fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    fn with_expression(e: LabelSelectorRequirement) -> LabelSelector {
        LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_exemption_without_reason_naming_the_field() {
        let e = err("exemptions:\n- rules: [no-host-network]\n  namespace: monitoring\n");
        assert!(e.contains("exemptions[0].reason"), "{e}");
    }

    #[test]
    fn rejects_exemption_without_namespace_or_rules() {
        let e = err("exemptions:\n- rules: [no-host-network]\n  reason: r\n");
        assert!(e.contains("exemptions[0].namespace"), "{e}");
        let e = err("exemptions:\n- namespace: a\n  reason: r\n");
        assert!(e.contains("exemptions[0].rules"), "{e}");
    }

    #[test]
    fn rejects_malformed_selector() {
        let e = err(concat!(
            "exemptions:\n- rules: [no-host-network]\n  namespace: a\n  reason: r\n",
            "  selector:\n    matchExpressions:\n    - {key: app, operator: Has}\n"
        ));
        assert!(e.contains("exemptions[0].selector"), "{e}");
    }

    #[test]
    fn exemption_matches_namespace_names_and_selector() {
        let config = Config::from_yaml(concat!(
            "exemptions:\n- rules: [no-host-network]\n  namespace: monitoring\n",
            "  names: [node-exporter*]\n  selector: {matchLabels: {app: exporter}}\n",
            "  reason: node metrics need the host network\n"
        ))
        .unwrap();
        let e = &config.exemptions[0];
        let labels: BTreeMap<_, _> = [("app".to_owned(), "exporter".to_owned())].into();
        assert!(e.covers(
            RuleId::NoHostNetwork,
            "monitoring",
            "node-exporter-x1",
            &labels
        ));
        assert!(!e.covers(
            RuleId::SidecarRequired,
            "monitoring",
            "node-exporter",
            &labels
        ));
        assert!(!e.covers(RuleId::NoHostNetwork, "shop", "node-exporter", &labels));
        assert!(!e.covers(RuleId::NoHostNetwork, "monitoring", "other", &labels));
        assert!(!e.covers(
            RuleId::NoHostNetwork,
            "monitoring",
            "node-exporter",
            &BTreeMap::new()
        ));
    }

    #[test]
    fn expires_is_optional_rfc3339_and_ends_the_exemption_at_that_instant() {
        let config = Config::from_yaml(concat!(
            "exemptions:\n- rules: [no-host-network]\n  namespace: m\n  reason: r\n",
            "  expires: 2027-01-31T00:00:00Z\n"
        ))
        .unwrap();
        let e = &config.exemptions[0];
        let at: Timestamp = "2027-01-31T00:00:00Z".parse().unwrap();
        assert!(e.is_active(at - k8s_openapi::jiff::SignedDuration::from_nanos(1)));
        assert!(!e.is_active(at));
        let e = err("exemptions:\n- rules: [no-host-network]\n  namespace: m\n  reason: r\n  expires: soon\n");
        assert!(e.contains("exemptions[0].expires"), "{e}");
        let forever = Config::from_yaml(
            "exemptions:\n- {rules: [no-host-network], namespace: m, reason: r}\n",
        )
        .unwrap();
        assert!(forever.exemptions[0].is_active(Timestamp::MAX));
    }

    #[test]
    fn empty_selector_matches_everything() {
        let selector = parse_selector(LabelSelector::default()).unwrap();
        assert!(selector.matches(&labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = parse_selector(LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "edge"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("team", "NotIn", &["red"]),
                expr("owner", "Exists", &[]),
            ]),
        })
        .unwrap();
        let ok = labels(&[("app", "web"), ("tier", "edge"), ("owner", "a")]);
        assert!(selector.matches(&ok));
        let mut red = ok.clone();
        red.insert("team".into(), "red".into());
        assert!(!selector.matches(&red));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), "".into());
        assert!(!selector.matches(&legacy));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "edge")])));
    }

    #[test]
    fn rejects_what_the_api_server_rejects() {
        let problem = |e| parse_selector(with_expression(e)).unwrap_err();
        assert!(problem(expr("a", "Has", &[])).contains("unknown operator `Has`"));
        assert!(problem(expr("a", "In", &[])).contains("In needs values"));
        assert!(problem(expr("a", "Exists", &["x"])).contains("takes no values"));
        assert!(problem(expr("", "Exists", &[])).contains("empty key"));
        assert!(parse_selector(with_expression(expr("a", "NotIn", &["x"]))).is_ok());
    }

    /// Why `parse_selector` checks before kube-core: it takes these.
    #[test]
    fn kube_core_alone_accepts_selectors_the_api_server_rejects() {
        let empty_in = LabelSelectorRequirement {
            values: Some(vec![]),
            ..expr("a", "In", &[])
        };
        assert!(Selector::try_from(with_expression(empty_in.clone())).is_ok());
        assert!(Selector::try_from(with_expression(expr("a", "Exists", &["x"]))).is_ok());
        assert!(Selector::try_from(with_expression(expr("", "Exists", &[]))).is_ok());
        assert!(parse_selector(with_expression(empty_in)).is_err());
    }
}
