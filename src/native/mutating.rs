//! The certificate mount as a `MutatingAdmissionPolicy` (JSONPatch): the
//! API server mounts the workload certificates itself, with the semantics of
//! `/mutate` ([`crate::admission::mutate::plan`]), while meshgate is down.
//!
//! The same decisions, in CEL: only pod CREATEs in enrolled namespaces (and,
//! with the sidecar as the source, pods that have or will get a sidecar, per
//! [`crate::injection::will_have_sidecar`]); only application containers;
//! nothing when something is in the way (a different volume of the same
//! name, OUTPUT_CERTS already elsewhere); and no operation on a pod already
//! patched, so reinvocation adds nothing. Where CEL cannot do what the
//! webhook does, the policy patches nothing and leaves the pod to the
//! webhook: a pod that brings its own `proxy.istio.io/config` or
//! `sidecar.istio.io/userVolumeMount` annotation before injection (CEL
//! cannot parse YAML to merge into it).
//!
//! Modes: enforce patches; audit and off compile to nothing (an admission
//! policy cannot warn, and audit must not patch). The namespace label
//! `meshgate.io/mode=audit` and the exempt namespaces are left out by the
//! namespace selector; exemptions become one CEL condition each.

use serde_json::{json, Value};

use super::exemptions::{lift, objects_covering};
use super::{metadata, NativeError};
use crate::config::{Config, Mode, NAMESPACE_MODE_LABEL};
use crate::exemption::ExemptionObject;
use crate::rules::RuleId;

pub const POLICY_NAME: &str = "meshgate-workload-certificates";
const RULE: RuleId = RuleId::WorkloadCertificates;

/// The policy and its binding, or nothing when the rule is not enforced.
pub fn compile(config: &Config, objects: &[ExemptionObject]) -> Result<Vec<Value>, NativeError> {
    if RULE.mode_in(config) != Mode::Enforce {
        return Ok(Vec::new());
    }
    let settings = &config.workload_certificates;
    let cel = Cel {
        name: quote(&settings.volume_name),
        path: quote(&settings.mount_path),
        source: &settings.source,
    };
    let mut variables = common_variables();
    variables.extend(cel.decision_variables());
    variables.push(("eligible", cel.eligible()));
    variables.push(("exempt", exemptions(config, objects)));
    variables.extend(cel.plan_variables());
    let variables: Vec<Value> = variables
        .into_iter()
        .map(|(name, expression)| json!({"name": name, "expression": expression}))
        .collect();
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicy",
        "metadata": metadata(POLICY_NAME),
        "spec": {
            // A patch that cannot be computed admits the pod unchanged, as
            // the webhook does when something is in the way.
            "failurePolicy": "Ignore",
            // Istio's injector may add istio-proxy after this ran.
            "reinvocationPolicy": "IfNeeded",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                }],
                "namespaceSelector": namespace_selector(config),
            },
            "variables": variables,
            "mutations": [{
                "patchType": "JSONPatch",
                "jsonPatch": {"expression": cel.patch()},
            }],
        },
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": metadata(POLICY_NAME),
        "spec": {"policyName": POLICY_NAME},
    });
    Ok(vec![policy, binding])
}

/// Exempt namespaces and namespaces capped at audit are not patched.
fn namespace_selector(config: &Config) -> Value {
    let mut expressions = vec![json!({
        "key": NAMESPACE_MODE_LABEL, "operator": "NotIn", "values": ["audit"],
    })];
    if !config.exempt_namespaces.is_empty() {
        expressions.push(json!({
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": config.exempt_namespaces,
        }));
    }
    json!({"matchExpressions": expressions})
}

/// A CEL (and JSON) string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// RFC 6901: `~` and `/` in a JSON Pointer token.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn common_variables() -> Vec<(&'static str, String)> {
    let map = |of: &str| format!("has({of}.labels) ? {of}.labels : {{}}");
    vec![
        ("ns", map("namespaceObject.metadata")),
        ("labels", map("object.metadata")),
        (
            "annotations",
            "has(object.metadata.annotations) ? object.metadata.annotations : {}".into(),
        ),
        (
            "name",
            "has(object.metadata.name) && object.metadata.name != '' ? object.metadata.name \
             : request.name != '' ? request.name \
             : has(object.metadata.generateName) && object.metadata.generateName != '' \
             ? object.metadata.generateName + '*' : '<unnamed>'"
                .into(),
        ),
    ]
}

/// Config exemptions and exemption objects that lift the certificate
/// mount, as one condition ([`super::exemptions::lift`]: namespace, names,
/// pod labels).
fn exemptions(config: &Config, objects: &[ExemptionObject]) -> String {
    let (name, labels) = ("variables.name", "variables.labels");
    let mut alternatives: Vec<String> = config
        .exemptions
        .iter()
        .filter(|e| e.rules.contains(&RULE))
        .map(|e| {
            let namespace = format!("request.namespace == {}", quote(&e.namespace));
            format!(
                "({})",
                lift(namespace, &e.names, e.selector.as_ref(), name, labels)
            )
        })
        .collect();
    alternatives.extend(objects_covering(objects, RULE, name, labels));
    if alternatives.is_empty() {
        "false".into()
    } else {
        alternatives.join(" || ")
    }
}

mod cel;
use cel::Cel;

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(yaml: &str) -> Vec<Value> {
        compile(&Config::from_yaml(yaml).unwrap(), &[]).unwrap()
    }

    #[test]
    fn enforce_compiles_a_labelled_policy_and_its_binding() {
        let objects = compiled("");
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]
        );
        for object in &objects {
            assert_eq!(object["metadata"]["name"], POLICY_NAME);
            assert_eq!(
                object["metadata"]["labels"]["meshgate.io/native-policy"],
                "true"
            );
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/managed-by"],
                "meshgate"
            );
        }
        let mutation = &objects[0]["spec"]["mutations"][0];
        assert_eq!(mutation["patchType"], "JSONPatch");
    }

    #[test]
    fn audit_and_off_compile_to_nothing() {
        assert!(compiled("mode: audit\n").is_empty());
        assert!(compiled("rules:\n  workload-certificates: off\n").is_empty());
        assert!(!compiled("mode: audit\nrules:\n  workload-certificates: enforce\n").is_empty());
    }

    #[test]
    fn exempt_namespaces_and_the_audit_label_are_left_out() {
        let objects = compiled("exemptNamespaces: [istio-system, tools]\n");
        let selector = &objects[0]["spec"]["matchConstraints"]["namespaceSelector"];
        let expressions = selector["matchExpressions"].as_array().unwrap();
        assert!(expressions.contains(&json!({
            "key": "meshgate.io/mode", "operator": "NotIn", "values": ["audit"]})));
        assert!(expressions.contains(&json!({
            "key": "kubernetes.io/metadata.name", "operator": "NotIn",
            "values": ["istio-system", "tools"]})));
    }

    #[test]
    fn exemptions_of_the_rule_become_one_condition() {
        let objects = compiled(
            "exemptions:\n- rules: [workload-certificates]\n  namespace: shop\n  names: [legacy-*]\n  \
             selector: {matchLabels: {app: legacy}}\n  reason: no sidecar certificates there\n\
             - rules: [no-host-network]\n  namespace: other\n  reason: unrelated\n",
        );
        let variables = objects[0]["spec"]["variables"].as_array().unwrap();
        let exempt = variables.iter().find(|v| v["name"] == "exempt").unwrap();
        assert_eq!(
            exempt["expression"],
            "(request.namespace == \"shop\" && (variables.name.startsWith(\"legacy-\")) \
             && (\"app\" in variables.labels && variables.labels[\"app\"] == \"legacy\"))"
        );
    }

    #[test]
    fn config_values_reach_the_patch_quoted() {
        let objects =
            compiled("workloadCertificates:\n  volumeName: certs\n  mountPath: /var/run/\"odd\"\n");
        let patch = objects[0]["spec"]["mutations"][0]["jsonPatch"]["expression"]
            .as_str()
            .unwrap();
        assert!(patch.contains(r#"name: "certs""#), "{patch}");
        assert!(
            patch.contains(r#"mountPath: "/var/run/\"odd\"""#),
            "{patch}"
        );
    }
}
