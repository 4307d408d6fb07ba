//! Exemptions as match conditions: a policy does not apply to the objects
//! an exemption of its rule covers, with [`Exemption::covers`]'s semantics
//! (its namespace, its names with `*` prefixes, its selector on the pod
//! labels of a workload and the object's own labels otherwise). Exemption
//! objects (issue 21) will go through the same function, as `Exemption`
//! values.

pub use crate::rules::native_form::quote;
use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use kube::core::Expression;

use super::validating::pod_template;
use super::Target;
use crate::config::{Config, Exemption};
use crate::rules::RuleId;

/// One match condition per config-file exemption of `rule`: the policy does
/// not apply to the objects it covers. Exemption objects (issue 21) will be
/// added here the same way, from `Exemption` values.
pub fn exemption_conditions(config: &Config, rule: RuleId, target: Target) -> Vec<MatchCondition> {
    config
        .exemptions
        .iter()
        .enumerate()
        .filter(|(_, e)| e.rules.contains(&rule))
        .map(|(i, e)| MatchCondition {
            name: format!("not-exemption-{i}"),
            expression: format!("!({})", covers(e, target)),
        })
        .collect()
}

/// CEL for [`Exemption::covers`]: its namespace, names and selector, on
/// the pod labels of a workload and the object's labels otherwise.
fn covers(e: &Exemption, target: Target) -> String {
    let mut terms = vec![format!("request.namespace == {}", quote(&e.namespace))];
    if !e.names.is_empty() {
        let name = "object.?metadata.?name.orValue('')";
        let names: Vec<String> = e
            .names
            .iter()
            .map(|n| match n.strip_suffix('*') {
                Some(prefix) => format!("{name}.startsWith({})", quote(prefix)),
                None => format!("{name} == {}", quote(n)),
            })
            .collect();
        terms.push(format!("({})", names.join(" || ")));
    }
    let labels = match target {
        // Match conditions cannot read variables: the path is spelled out.
        Target::Workloads => format!(
            "({}).?metadata.?labels.orValue({{}})",
            pod_template("object")
        ),
        Target::One(_) => "object.?metadata.?labels.orValue({})".to_owned(),
    };
    for expression in e.selector.clone().into_iter().flatten() {
        terms.push(selector_term(&labels, &expression));
    }
    terms.join(" && ")
}

fn selector_term(labels: &str, expression: &Expression) -> String {
    let list = |values: &BTreeSet<String>| {
        let quoted: Vec<String> = values.iter().map(|v| quote(v)).collect();
        format!("[{}]", quoted.join(", "))
    };
    match expression {
        Expression::In(k, values) => {
            format!(
                "({k} in {labels} && {labels}[{k}] in {})",
                list(values),
                k = quote(k)
            )
        }
        Expression::NotIn(k, values) => format!(
            "(!({k} in {labels}) || !({labels}[{k}] in {}))",
            list(values),
            k = quote(k)
        ),
        Expression::Equal(k, v) => {
            format!(
                "({k} in {labels} && {labels}[{k}] == {})",
                quote(v),
                k = quote(k)
            )
        }
        Expression::NotEqual(k, v) => format!(
            "(!({k} in {labels}) || {labels}[{k}] != {})",
            quote(v),
            k = quote(k)
        ),
        Expression::Exists(k) => format!("({} in {labels})", quote(k)),
        Expression::DoesNotExist(k) => format!("!({} in {labels})", quote(k)),
    }
}
