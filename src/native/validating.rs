//! ValidatingAdmissionPolicies and their bindings, one policy per rule with
//! a native form (a second, `-advisory`, for its advisory checks, which run
//! at audit level at most, as in the webhook).
//!
//! The policy says what the rule checks; its bindings say how hard, from
//! the running configuration: enforce is `[Deny, Audit]` where the
//! namespace is not labelled `meshgate.io/mode=audit` and `[Warn, Audit]`
//! where it is, audit is `[Warn, Audit]` everywhere, off is no policy at
//! all. Exempt namespaces are outside every binding; the config file's
//! exemptions are match conditions of the policies they lift.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation, Variable,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};

use super::exemptions::{exemption_conditions, objects_covering, subject};
use super::{NativeCheck, NativeError, NativeRule, Target, MANAGED_BY, NAME_PREFIX, NATIVE_LABEL};
use crate::config::{Config, Mode, NAMESPACE_MODE_LABEL};
use crate::exemption::ExemptionObject;
use crate::kinds::{Kind, KindRow, TABLE};
use crate::rules::{RuleId, RULES};

/// The namespace label the API server sets to the namespace's name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Operations the native policies judge: what `/validate` judges for the
/// per-object rules (DELETE guards need other objects).
const OPERATIONS: &[&str] = &["CREATE", "UPDATE"];

/// Every policy and binding for `config`, policies first.
pub fn compile(
    config: &Config,
    objects: &[ExemptionObject],
) -> Result<Vec<serde_json::Value>, NativeError> {
    let mut policies = Vec::new();
    let mut bindings = Vec::new();
    for row in RULES {
        let Some(native) = row.native else { continue };
        let mode = row.id.mode_in(config);
        for advisory in [false, true] {
            let checks: Vec<&NativeCheck> = native
                .checks
                .iter()
                .filter(|c| c.advisory == advisory)
                .collect();
            let mode = if advisory {
                mode.min(Mode::Audit)
            } else {
                mode
            };
            if checks.is_empty() || mode == Mode::Off {
                continue;
            }
            let name = policy_name(row.id, advisory);
            policies.push(to_value(
                &name,
                &policy((config, objects), row.id, native, &checks, &name),
            )?);
            for binding in bindings_for(config, native.target, &name, mode) {
                bindings.push(to_value(&name, &binding)?);
            }
        }
    }
    policies.extend(bindings);
    Ok(policies)
}

/// `meshgate-<rule>`, and `meshgate-<rule>-advisory` for advisory checks.
pub fn policy_name(rule: RuleId, advisory: bool) -> String {
    let suffix = if advisory { "-advisory" } else { "" };
    format!("{NAME_PREFIX}{rule}{suffix}")
}

fn to_value<T: serde::Serialize>(name: &str, object: &T) -> Result<serde_json::Value, NativeError> {
    serde_json::to_value(object).map_err(|source| NativeError::Serialise {
        name: name.to_owned(),
        source,
    })
}

fn metadata(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(BTreeMap::from([
            (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
            (NATIVE_LABEL.0.to_owned(), NATIVE_LABEL.1.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn policy(
    (config, objects): (&Config, &[ExemptionObject]),
    rule: RuleId,
    native: &NativeRule,
    checks: &[&NativeCheck],
    name: &str,
) -> ValidatingAdmissionPolicy {
    let variables = variables(native);
    let (object_name, object_labels) = subject(native.target);
    let lifted = objects_covering(objects, rule, &object_name, &object_labels);
    let validations = checks
        .iter()
        .map(|check| Validation {
            expression: match lifted {
                Some(_) => format!(
                    "variables.exemptionObjects || ({})",
                    update_tolerant(check.expression)
                ),
                None => update_tolerant(check.expression),
            },
            message_expression: Some(message(rule, check)),
            reason: Some(
                if check.advisory {
                    "Invalid"
                } else {
                    "Forbidden"
                }
                .to_owned(),
            ),
            message: Some(format!("[{rule}] violated ({})", rule.doc_url())),
        })
        .collect();
    let mut all_variables = configured(config, native);
    all_variables.extend(variables.iter().cloned());
    all_variables.extend(variables.iter().map(|v| Variable {
        name: format!("old_{}", v.name),
        expression: on_old_object(&v.expression),
    }));
    all_variables.extend(lifted.map(|expression| Variable {
        name: "exemptionObjects".to_owned(),
        expression,
    }));
    let conditions = exemption_conditions(config, rule, native.target);
    ValidatingAdmissionPolicy {
        metadata: metadata(name),
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".to_owned()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(resource_rules(native.target)),
                ..MatchResources::default()
            }),
            match_conditions: (!conditions.is_empty()).then_some(conditions),
            variables: Some(all_variables),
            validations: Some(validations),
            ..ValidatingAdmissionPolicySpec::default()
        }),
        status: None,
    }
}

/// The rule id, the field and the fix, like the webhook's denial detail.
fn message(rule: RuleId, check: &NativeCheck) -> String {
    format!(
        "'[{rule}] ' + ({}) + '; fix: ' + ({}) + ' ({})'",
        check.message,
        check.fix,
        rule.doc_url()
    )
}

/// An UPDATE is refused only for a problem the old object did not have,
/// as in the webhook, so scaling or relabelling an object that predates
/// the rule never gets stuck.
fn update_tolerant(expression: &str) -> String {
    let old = on_old_object(expression);
    format!("({expression}) || (request.operation == 'UPDATE' && !({old}))")
}

/// The same CEL on `oldObject`, with the `old_` variables: every
/// identifier `object` (not `namespaceObject`, not a field `.object`)
/// becomes `oldObject`.
fn on_old_object(expression: &str) -> String {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expression.len() + 16);
    let mut rest = expression;
    while let Some(at) = rest.find("object") {
        let before = rest[..at].chars().next_back();
        let after = rest[at + "object".len()..].chars().next();
        let whole = !before.is_some_and(|c| ident(c) || c == '.') && !after.is_some_and(ident);
        out.push_str(&rest[..at]);
        out.push_str(if whole { "oldObject" } else { "object" });
        rest = &rest[at + "object".len()..];
    }
    out.push_str(rest);
    out.replace("variables.", "variables.old_")
}

/// The rule's configured values: literals, the same for `oldObject`.
fn configured(config: &Config, native: &NativeRule) -> Vec<Variable> {
    let values = native.config.map(|values| values(config));
    values
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(name, expression)| {
            ["", "old_"].map(|prefix| Variable {
                name: format!("{prefix}{name}"),
                expression: expression.clone(),
            })
        })
        .collect()
}

fn variables(native: &NativeRule) -> Vec<Variable> {
    let mut out = Vec::new();
    if native.target == Target::Workloads {
        out.push(Variable {
            name: "template".to_owned(),
            expression: pod_template("object"),
        });
        for (name, expression) in WORKLOAD_VARIABLES {
            out.push(Variable {
                name: (*name).to_owned(),
                expression: (*expression).to_owned(),
            });
        }
    }
    out.extend(native.variables.iter().map(|(name, expression)| Variable {
        name: (*name).to_owned(),
        expression: (*expression).to_owned(),
    }));
    out
}

/// What every workload rule reads, wherever its kind keeps it.
const WORKLOAD_VARIABLES: &[(&str, &str)] = &[
    ("spec", "variables.template.spec"),
    ("labels", "variables.template.?metadata.?labels.orValue({})"),
    (
        "annotations",
        "variables.template.?metadata.?annotations.orValue({})",
    ),
    ("containers", "variables.spec.?containers.orValue([])"),
    (
        "initContainers",
        "variables.spec.?initContainers.orValue([])",
    ),
];

fn workload_rows() -> impl Iterator<Item = (&'static KindRow, &'static [&'static str])> {
    TABLE
        .iter()
        .filter_map(|row| row.pod_spec.map(|path| (row, path)))
}

/// CEL for the object holding a workload's pod metadata and spec (the
/// pod spec's parent, from `kinds::TABLE`), on `subject` (`object`).
pub fn pod_template(subject: &str) -> String {
    let path = |pod_spec: &[&str]| {
        let parent = &pod_spec[..pod_spec.len().saturating_sub(1)];
        std::iter::once(subject)
            .chain(parent.iter().copied())
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut rows: Vec<_> = workload_rows().collect();
    // The most common path is the fallback; the others are tested by kind.
    let fallback = rows
        .iter()
        .position(|(row, _)| row.kind == Kind::Deployment)
        .map(|i| rows.remove(i));
    let mut out = String::new();
    for (row, pod_spec) in rows
        .iter()
        .filter(|(_, p)| fallback.is_none_or(|(_, f)| *p != f))
    {
        out.push_str(&format!(
            "{subject}.kind == '{}' ? {} : ",
            row.kind.as_str(),
            path(pod_spec)
        ));
    }
    out.push_str(&fallback.map_or_else(|| subject.to_owned(), |(_, p)| path(p)));
    out
}

fn resource_rules(target: Target) -> Vec<NamedRuleWithOperations> {
    let rows: Vec<&KindRow> = match target {
        Target::Workloads => workload_rows().map(|(row, _)| row).collect(),
        Target::One(kind) => vec![kind.row()],
    };
    let mut rules: Vec<NamedRuleWithOperations> = Vec::new();
    for row in rows {
        let versions: Vec<String> = row.versions.iter().map(|v| (*v).to_owned()).collect();
        match rules.iter_mut().find(|r| {
            r.api_groups.as_deref() == Some(&[row.group.to_owned()][..])
                && r.api_versions.as_ref() == Some(&versions)
        }) {
            Some(rule) => rule
                .resources
                .get_or_insert_with(Vec::new)
                .push(row.plural.to_owned()),
            None => rules.push(NamedRuleWithOperations {
                api_groups: Some(vec![row.group.to_owned()]),
                api_versions: Some(versions),
                resources: Some(vec![row.plural.to_owned()]),
                operations: Some(OPERATIONS.iter().map(|o| (*o).to_owned()).collect()),
                ..NamedRuleWithOperations::default()
            }),
        }
    }
    rules
}

/// One binding per validation-action set: enforce splits on the namespace
/// audit label.
fn bindings_for(
    config: &Config,
    target: Target,
    policy: &str,
    mode: Mode,
) -> Vec<ValidatingAdmissionPolicyBinding> {
    let exempt = exempt_namespaces(config, target);
    let binding = |name: String, actions: &[&str], audit_label: Option<&str>| {
        let mut expressions = Vec::new();
        if !exempt.is_empty() {
            expressions.push(requirement(NAMESPACE_NAME_LABEL, "NotIn", exempt.clone()));
        }
        if let Some(operator) = audit_label {
            expressions.push(requirement(
                NAMESPACE_MODE_LABEL,
                operator,
                vec!["audit".to_owned()],
            ));
        }
        ValidatingAdmissionPolicyBinding {
            metadata: metadata(&name),
            spec: Some(ValidatingAdmissionPolicyBindingSpec {
                policy_name: Some(policy.to_owned()),
                validation_actions: Some(actions.iter().map(|a| (*a).to_owned()).collect()),
                match_resources: Some(MatchResources {
                    namespace_selector: Some(LabelSelector {
                        match_expressions: (!expressions.is_empty()).then_some(expressions),
                        match_labels: None,
                    }),
                    ..MatchResources::default()
                }),
                param_ref: None,
            }),
        }
    };
    match mode {
        Mode::Off => vec![],
        Mode::Audit => vec![binding(policy.to_owned(), &["Warn", "Audit"], None)],
        Mode::Enforce => vec![
            binding(policy.to_owned(), &["Deny", "Audit"], Some("NotIn")),
            binding(format!("{policy}-audit"), &["Warn", "Audit"], Some("In")),
        ],
    }
}

fn requirement(key: &str, operator: &str, values: Vec<String>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: Some(values),
    }
}

/// The exempt namespaces, less the mesh root namespace for the mesh-wide
/// policy kinds, which are judged there (see `policy::in_exempt_namespace`).
fn exempt_namespaces(config: &Config, target: Target) -> Vec<String> {
    let mesh_wide = matches!(
        target,
        Target::One(Kind::PeerAuthentication | Kind::AuthorizationPolicy)
    );
    config
        .exempt_namespaces
        .iter()
        .filter(|ns| !(mesh_wide && **ns == config.mesh_root_namespace))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn compiled(yaml: &str) -> Vec<Value> {
        compile(&Config::from_yaml(yaml).unwrap(), &[]).unwrap()
    }

    fn named<'a>(objects: &'a [Value], name: &str) -> Option<&'a Value> {
        objects.iter().find(|o| o["metadata"]["name"] == name)
    }

    fn actions(objects: &[Value], binding: &str) -> Vec<String> {
        serde_json::from_value(
            named(objects, binding).unwrap()["spec"]["validationActions"].clone(),
        )
        .unwrap()
    }

    fn selector_values(binding: &Value, key: &str) -> Option<(String, Vec<String>)> {
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
            .as_array()?
            .iter()
            .find(|e| e["key"] == key)
            .map(|e| {
                (
                    e["operator"].as_str().unwrap().to_owned(),
                    serde_json::from_value(e["values"].clone()).unwrap(),
                )
            })
    }

    #[test]
    fn every_native_rule_gets_a_labelled_policy_before_its_bindings() {
        let objects = compiled("");
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        let first_binding = kinds.iter().position(|k| k.ends_with("Binding")).unwrap();
        assert!(kinds[..first_binding]
            .iter()
            .all(|k| *k == "ValidatingAdmissionPolicy"));
        assert!(kinds[first_binding..]
            .iter()
            .all(|k| *k == "ValidatingAdmissionPolicyBinding"));
        for rule in RULES.iter().filter(|r| r.native.is_some()) {
            assert!(
                named(&objects, &policy_name(rule.id, false)).is_some(),
                "{}",
                rule.id
            );
        }
        assert!(named(&objects, "meshgate-authorization-no-allow-all-advisory").is_some());
        for o in &objects {
            let name = o["metadata"]["name"].as_str().unwrap();
            assert!(name.starts_with(NAME_PREFIX), "{name}");
            assert_eq!(o["metadata"]["labels"][MANAGED_BY.0], MANAGED_BY.1);
            assert_eq!(o["metadata"]["labels"][NATIVE_LABEL.0], NATIVE_LABEL.1);
        }
    }

    #[test]
    fn enforce_denies_except_in_audit_labelled_namespaces() {
        let objects = compiled("");
        let bindings: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
            .collect();
        let deny = bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "meshgate-no-host-network")
            .unwrap();
        let audit = bindings
            .iter()
            .find(|b| b["metadata"]["name"] == "meshgate-no-host-network-audit")
            .unwrap();
        assert_eq!(
            deny["spec"]["validationActions"],
            serde_json::json!(["Deny", "Audit"])
        );
        assert_eq!(
            audit["spec"]["validationActions"],
            serde_json::json!(["Warn", "Audit"])
        );
        assert_eq!(
            selector_values(deny, NAMESPACE_MODE_LABEL),
            Some(("NotIn".into(), vec!["audit".into()]))
        );
        assert_eq!(
            selector_values(audit, NAMESPACE_MODE_LABEL),
            Some(("In".into(), vec!["audit".into()]))
        );
        // Advisory checks never deny.
        assert_eq!(
            actions(
                &bindings.iter().map(|b| (*b).clone()).collect::<Vec<_>>(),
                "meshgate-authorization-no-allow-all-advisory"
            ),
            ["Warn", "Audit"]
        );
    }

    #[test]
    fn modes_map_to_validation_actions_and_off_compiles_nothing() {
        let objects =
            compiled("mode: audit\nrules: {no-host-network: enforce, sidecar-egress-locked: off}");
        let bindings: Vec<Value> = objects
            .iter()
            .filter(|o| o["kind"] == "ValidatingAdmissionPolicyBinding")
            .cloned()
            .collect();
        assert_eq!(
            actions(&bindings, "meshgate-sidecar-required"),
            ["Warn", "Audit"]
        );
        assert!(named(&bindings, "meshgate-sidecar-required-audit").is_none());
        assert_eq!(
            actions(&bindings, "meshgate-no-host-network"),
            ["Deny", "Audit"]
        );
        assert!(!objects.iter().any(|o| o["metadata"]["name"]
            .as_str()
            .unwrap()
            .contains("sidecar-egress-locked")));
    }

    #[test]
    fn exempt_namespaces_are_outside_every_binding_but_the_root_keeps_mesh_wide_policies() {
        let objects = compiled("exemptNamespaces: [kube-system, istio-system, tools]");
        let binding = |name: &str| {
            objects
                .iter()
                .find(|o| {
                    o["kind"] == "ValidatingAdmissionPolicyBinding" && o["metadata"]["name"] == name
                })
                .unwrap()
        };
        let (op, values) =
            selector_values(binding("meshgate-sidecar-required"), NAMESPACE_NAME_LABEL).unwrap();
        assert_eq!(
            (op.as_str(), values),
            (
                "NotIn",
                vec!["kube-system".into(), "istio-system".into(), "tools".into()]
            )
        );
        let (_, values) = selector_values(
            binding("meshgate-peer-authentication-strict"),
            NAMESPACE_NAME_LABEL,
        )
        .unwrap();
        assert_eq!(values, ["kube-system", "tools"]);
    }

    #[test]
    fn config_exemptions_become_match_conditions_of_the_rules_they_lift() {
        let objects = compiled(
            "exemptions:\n- namespace: shop\n  names: [agent*, exact]\n  selector: {matchLabels: {app: agent}, matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}\n  rules: [no-host-network]\n  reason: node agent\n",
        );
        let conditions =
            &named(&objects, "meshgate-no-host-network").unwrap()["spec"]["matchConditions"];
        let expression = conditions[0]["expression"].as_str().unwrap();
        assert!(
            expression.starts_with("!(request.namespace == \"shop\""),
            "{expression}"
        );
        assert!(
            expression.contains(".startsWith(\"agent\")") && expression.contains("== \"exact\""),
            "{expression}"
        );
        assert!(
            expression.contains("[\"app\"] == \"agent\"")
                && expression.contains("[\"tier\"] in [\"web\"]))"),
            "{expression}"
        );
        assert!(
            expression.contains("object.kind == 'Pod' ? object"),
            "pod labels by kind: {expression}"
        );
        assert!(
            named(&objects, "meshgate-sidecar-required").unwrap()["spec"]
                .get("matchConditions")
                .is_none()
        );
    }

    #[test]
    fn exemption_objects_lift_the_validations_of_their_rules() {
        let spec = |extra: serde_json::Value| {
            let mut spec = serde_json::json!({"rules": ["no-host-network"],
                "match": {"names": ["agent*"]}, "reason": "node agent needs the host network",
                "expires": "2030-01-01T00:00:00Z"});
            spec.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            spec
        };
        let namespaced: crate::exemption::MeshExemption = crate::strict::from_value(serde_json::json!(
            {"metadata": {"name": "agents", "namespace": "shop"}, "spec": spec(serde_json::json!({}))}))
        .unwrap();
        let cluster: crate::exemption::ClusterMeshExemption = crate::strict::from_value(serde_json::json!(
            {"metadata": {"name": "agents"},
             "spec": spec(serde_json::json!({"namespaceSelector": {"matchLabels": {"team": "infra"}}}))}))
        .unwrap();
        let objects = [
            ExemptionObject::from_namespaced(&namespaced).unwrap(),
            ExemptionObject::from_cluster(&cluster).unwrap(),
        ];
        let compiled = compile(&Config::default(), &objects).unwrap();
        let spec = &named(&compiled, "meshgate-no-host-network").unwrap()["spec"];
        let lifted = spec["variables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "exemptionObjects")
            .unwrap()["expression"]
            .as_str()
            .unwrap();
        assert!(
            lifted.starts_with("(request.namespace == \"shop\" && (object.?metadata.?name.orValue('').startsWith(\"agent\")))"),
            "{lifted}"
        );
        assert!(
            lifted.contains("|| ((\"team\" in namespaceObject.?metadata.?labels.orValue({}) && namespaceObject.?metadata.?labels.orValue({})[\"team\"] == \"infra\")"),
            "{lifted}"
        );
        for validation in spec["validations"].as_array().unwrap() {
            let expression = validation["expression"].as_str().unwrap();
            assert!(
                expression.starts_with("variables.exemptionObjects || ("),
                "{expression}"
            );
        }
        // Other rules' policies are untouched.
        let other = &named(&compiled, "meshgate-sidecar-required").unwrap()["spec"];
        assert!(!other.to_string().contains("exemptionObjects"));
    }

    #[test]
    fn updates_are_refused_only_for_problems_the_old_object_did_not_have() {
        let expression =
            update_tolerant("!variables.spec.?hostNetwork.orValue(false) && object.kind != 'x'");
        assert_eq!(
            expression,
            "(!variables.spec.?hostNetwork.orValue(false) && object.kind != 'x') || (request.operation == 'UPDATE' && !(!variables.old_spec.?hostNetwork.orValue(false) && oldObject.kind != 'x'))"
        );
        assert_eq!(
            on_old_object("namespaceObject.metadata == object ? object.a : x.object"),
            "namespaceObject.metadata == oldObject ? oldObject.a : x.object"
        );
    }

    #[test]
    fn the_pod_template_path_comes_from_the_kind_table() {
        assert_eq!(
            pod_template("object"),
            "object.kind == 'Pod' ? object : object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template : object.spec.template"
        );
    }

    #[test]
    fn cel_strings_are_quoted() {
        assert_eq!(super::super::exemptions::quote("a\"b\\c"), r#""a\"b\\c""#);
    }
}
