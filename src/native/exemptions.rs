//! Exemptions in the native policies: a policy does not hold for the
//! objects an exemption of its rule covers, with the webhook's semantics
//! (its namespace, its names with `*` prefixes, its selector on the pod
//! labels of a workload and the object's own labels otherwise).
//! Config-file exemptions are match conditions. Exemption objects
//! (MeshExemption, ClusterMeshExemption) active when the policies are
//! compiled are one CEL variable the policy's validations are ORed with: a
//! ClusterMeshExemption's namespace selector reads `namespaceObject`, which
//! match conditions cannot. The leader recompiles when they change or
//! expire (`super::sync`).

pub use crate::rules::native_form::quote;
use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::MatchCondition;
use kube::core::Expression;

use super::validating::pod_template;
use super::Target;
use crate::config::{Config, Exemption};
use crate::exemption::matching::{ExemptionObject, Scope};
use crate::rules::RuleId;

/// One match condition per config-file exemption of `rule`: the policy does
/// not apply to the objects it covers.
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
    let (name, labels) = subject(target);
    let namespace = format!("request.namespace == {}", quote(&e.namespace));
    lift(namespace, &e.names, e.selector.as_ref(), &name, &labels)
}

/// CEL true when an exemption object of `rule` in `objects` covers the
/// object (`ExemptionObject::covers`); `None` when none lists the rule.
pub fn objects_covering(
    objects: &[ExemptionObject],
    rule: RuleId,
    name: &str,
    labels: &str,
) -> Option<String> {
    let lifts: Vec<String> = objects
        .iter()
        .filter(|e| e.rules.contains(&rule))
        .map(|e| {
            let scope = match &e.scope {
                Scope::Namespace(ns) => format!("request.namespace == {}", quote(ns)),
                Scope::Cluster(None) => "true".to_owned(),
                Scope::Cluster(Some(selector)) => {
                    let ns_labels = "namespaceObject.?metadata.?labels.orValue({})";
                    let terms: Vec<String> = selector
                        .clone()
                        .into_iter()
                        .map(|x| selector_term(ns_labels, &x))
                        .collect();
                    if terms.is_empty() {
                        "true".to_owned()
                    } else {
                        terms.join(" && ")
                    }
                }
            };
            format!(
                "({})",
                lift(scope, &e.names, e.selector.as_ref(), name, labels)
            )
        })
        .collect();
    (!lifts.is_empty()).then(|| lifts.join(" || "))
}

/// The object's name and labels for `target`: match conditions cannot read
/// variables, so the pod template's path is spelled out.
pub fn subject(target: Target) -> (String, String) {
    let labels = match target {
        Target::Workloads => format!(
            "({}).?metadata.?labels.orValue({{}})",
            pod_template("object")
        ),
        Target::One(_) => "object.?metadata.?labels.orValue({})".to_owned(),
    };
    ("object.?metadata.?name.orValue('')".to_owned(), labels)
}

/// An exemption's terms, all of which must hold: the namespace term, any
/// of the names (`*` a prefix), every requirement of the selector.
pub fn lift(
    namespace: String,
    names: &[String],
    selector: Option<&kube::core::Selector>,
    name: &str,
    labels: &str,
) -> String {
    let mut terms = vec![namespace];
    if !names.is_empty() {
        let names: Vec<String> = names
            .iter()
            .map(|n| match n.strip_suffix('*') {
                Some(prefix) => format!("{name}.startsWith({})", quote(prefix)),
                None => format!("{name} == {}", quote(n)),
            })
            .collect();
        terms.push(format!("({})", names.join(" || ")));
    }
    for expression in selector.cloned().into_iter().flatten() {
        terms.push(selector_term(labels, &expression));
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
