//! The resources and operations the webhooks judge, derived from the kinds
//! table (`crate::kinds`). The Helm chart's webhook configurations are
//! checked against these in `tests/chart.rs`, so the API server never sends
//! meshgate something it ignores, nor skips something it should judge.

use kube::core::admission::Operation;

use super::review::operation_str;
use crate::kinds::{KindRow, TABLE};

/// One `rules` entry of a webhook configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRule {
    pub api_group: &'static str,
    pub api_versions: &'static [&'static str],
    /// Plural resource names, subresources as `pods/ephemeralcontainers`.
    pub resources: Vec<String>,
    pub operations: Vec<&'static str>,
}

/// What `POST /validate` judges with the rules (the chart's workload and
/// policy webhooks).
pub fn validating_rules() -> Vec<WebhookRule> {
    rules(|row| judged_if(row, false), true)
}

/// Meshgate's own exemption objects, also sent to `POST /validate` but by
/// webhooks of their own (the chart's `exemptions` list): their CREATE and
/// UPDATE fail closed whatever the workload webhooks do.
pub fn exemption_rules() -> Vec<WebhookRule> {
    rules(|row| judged_if(row, true), true)
}

/// The row's `/validate` operations if it is (or is not) an exemption kind.
fn judged_if(row: &KindRow, exemption: bool) -> &'static [Operation] {
    if row.kind.is_exemption() == exemption {
        row.judged_on
    } else {
        &[]
    }
}

/// What `POST /mutate` judges.
pub fn mutating_rules() -> Vec<WebhookRule> {
    rules(|row| row.mutated_on, false)
}

/// Rows with the same group, versions and operations share one rule.
fn rules(
    operations_of: impl Fn(&KindRow) -> &'static [Operation],
    with_subresources: bool,
) -> Vec<WebhookRule> {
    let mut rules: Vec<WebhookRule> = Vec::new();
    for row in TABLE {
        let operations: Vec<&'static str> = operations_of(row).iter().map(operation_str).collect();
        if operations.is_empty() {
            continue;
        }
        let subresources = row
            .subresources
            .iter()
            .filter(|_| with_subresources)
            .map(|sub| format!("{}/{sub}", row.plural));
        let resources = std::iter::once(row.plural.to_owned()).chain(subresources);
        match rules.iter_mut().find(|rule| {
            rule.api_group == row.group
                && rule.api_versions == row.versions
                && rule.operations == operations
        }) {
            Some(rule) => rule.resources.extend(resources),
            None => rules.push(WebhookRule {
                api_group: row.group,
                api_versions: row.versions,
                resources: resources.collect(),
                operations,
            }),
        }
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_validated_with_their_ephemeral_containers_and_mutated_on_create() {
        let validating = validating_rules();
        let core = validating
            .iter()
            .find(|r| r.api_group.is_empty() && r.resources.contains(&"pods".to_owned()))
            .unwrap();
        assert!(core
            .resources
            .contains(&"pods/ephemeralcontainers".to_owned()));
        assert_eq!(
            mutating_rules(),
            [WebhookRule {
                api_group: "",
                api_versions: &["v1"],
                resources: vec!["pods".into()],
                operations: vec!["CREATE"],
            }]
        );
    }

    #[test]
    fn only_the_baseline_policies_are_judged_on_delete_and_service_entries_never() {
        let validating = validating_rules();
        let deleted: Vec<&String> = validating
            .iter()
            .filter(|r| r.operations.contains(&"DELETE"))
            .flat_map(|r| &r.resources)
            .collect();
        assert_eq!(deleted, ["peerauthentications", "authorizationpolicies"]);
        assert!(!validating
            .iter()
            .any(|r| r.resources.contains(&"serviceentries".to_owned())));
    }

    /// Exemption objects go to their own webhooks: DELETE too, where it is
    /// only logged with the requester.
    #[test]
    fn exemption_objects_have_rules_of_their_own() {
        let exemptions = exemption_rules();
        assert_eq!(exemptions.len(), 1);
        assert_eq!(exemptions[0].api_group, "meshgate.io");
        assert_eq!(
            exemptions[0].resources,
            ["meshexemptions", "clustermeshexemptions"]
        );
        assert_eq!(exemptions[0].operations, ["CREATE", "UPDATE", "DELETE"]);
        assert!(validating_rules()
            .iter()
            .all(|r| r.api_group != "meshgate.io"));
    }
}
