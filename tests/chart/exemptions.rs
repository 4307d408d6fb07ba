//! The exemption objects' side of the chart: the two CRDs (their rule-id
//! enum is meshgate's rule table), the webhooks that send them to meshgate,
//! the RBAC roles, and `exemptionObjects.maxDuration`. What the API server
//! makes of the CRDs and roles: tests/envtest_exemption_api.rs.

use super::*;
use meshgate::rules::{RuleId, RULES};

const CRD_FILE: &str = "files/crds/meshgate-exemptions.yaml";
const VIEW: &str = "meshgate-exemptions-view";
const EDIT: &str = "meshgate-exemptions-edit";
const GROUP: &str = "meshgate.io";
const KINDS: [&str; 2] = ["meshexemptions", "clustermeshexemptions"];

/// The rules a namespaced exemption may not lift: the mesh-root baseline
/// guards. Only `baseline-protected` guards the root namespace's baseline
/// (the other policy rules judge any namespace's own policies).
const BASELINE_GUARDS: [RuleId; 1] = [RuleId::BaselineProtected];

pub(crate) fn is_exemption_role(doc: &Value) -> bool {
    [VIEW, EDIT].contains(&doc["metadata"]["name"].as_str().unwrap_or_default())
}

/// What meshgate's own ClusterRole grants on exemption objects: read them,
/// write their status.
pub(crate) fn meshgate_grants() -> BTreeMap<(String, String), BTreeSet<String>> {
    let verbs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    KINDS
        .iter()
        .flat_map(|kind| {
            [
                (
                    (GROUP.into(), kind.to_string()),
                    verbs(&["get", "list", "watch"]),
                ),
                (
                    (GROUP.into(), format!("{kind}/status")),
                    verbs(&["update", "patch"]),
                ),
            ]
        })
        .collect()
}

fn crds(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition" && d["spec"]["group"] == GROUP)
        .collect()
}

fn crd<'a>(docs: &'a [Value], plural: &str) -> &'a Value {
    crds(docs)
        .into_iter()
        .find(|d| d["spec"]["names"]["plural"] == plural)
        .unwrap_or_else(|| panic!("no CRD {plural}"))
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1);
    &versions[0]
}

fn spec_schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

#[test]
fn exemption_crds_are_always_installed_verbatim_and_kept_on_uninstall() {
    let file = std::fs::read_to_string(chart_dir().join(CRD_FILE)).unwrap();
    assert!(
        !file.contains("{{"),
        "tests read the file directly: no templating"
    );
    let from_file: Vec<Value> = split_documents(&file).iter().map(|d| parse(d)).collect();
    for values in ["", AUDIT, "policyReports: {enabled: false}", EVERYTHING] {
        let docs = render(values, NEWER);
        let rendered: Vec<Value> = crds(&docs).into_iter().cloned().collect();
        assert_eq!(rendered, from_file, "{values}");
    }
    for (plural, kind, short, scope) in [
        ("meshexemptions", "MeshExemption", "mex", "Namespaced"),
        (
            "clustermeshexemptions",
            "ClusterMeshExemption",
            "cmex",
            "Cluster",
        ),
    ] {
        let crd = crd(&from_file, plural);
        assert_eq!(crd["metadata"]["name"], format!("{plural}.{GROUP}"));
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(crd["spec"]["names"]["kind"], kind);
        assert_eq!(crd["spec"]["names"]["shortNames"], json!([short]));
        assert_eq!(crd["spec"]["scope"], scope);
        let version = version(crd);
        assert_eq!(
            (&version["name"], &version["served"], &version["storage"]),
            (&json!("v1alpha1"), &json!(true), &json!(true))
        );
        assert_eq!(version["subresources"], json!({"status": {}}));
        let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Rules", ".spec.rules"),
                ("Expires", ".spec.expires"),
                ("State", ".status.state"),
                ("Covered", ".status.covered"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
        let spec = spec_schema(crd);
        assert_eq!(
            spec["required"],
            json!(["rules", "match", "reason", "expires"])
        );
        assert_eq!(spec["properties"]["expires"]["format"], "date-time");
    }
}

/// A new rule cannot drift: the CRDs' enum is the rule table, in its order.
#[test]
fn the_rule_id_enum_is_meshgates_rule_table() {
    let file = std::fs::read_to_string(chart_dir().join(CRD_FILE)).unwrap();
    let docs: Vec<Value> = split_documents(&file).iter().map(|d| parse(d)).collect();
    let ids: Vec<&str> = RULES.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), RuleId::ALL.len());
    for plural in KINDS {
        let rules = &spec_schema(crd(&docs, plural))["properties"]["rules"];
        assert_eq!(
            strings(&rules["items"]["enum"]),
            ids,
            "{plural}: edit {CRD_FILE}"
        );
        assert_eq!(rules["minItems"], 1);
        assert_eq!(rules["maxItems"], ids.len());
        assert_eq!(rules["x-kubernetes-list-type"], "set");
    }
}

/// The two kinds differ only where the spec says: the cluster one has a
/// namespaceSelector, and only the namespaced one refuses the baseline guards.
#[test]
fn the_cluster_kind_differs_only_by_namespace_selector_and_baseline_guard() {
    let file = std::fs::read_to_string(chart_dir().join(CRD_FILE)).unwrap();
    let docs: Vec<Value> = split_documents(&file).iter().map(|d| parse(d)).collect();
    let mut namespaced = spec_schema(crd(&docs, "meshexemptions")).clone();
    let mut cluster = spec_schema(crd(&docs, "clustermeshexemptions")).clone();

    let guard = namespaced["properties"]["rules"]
        .as_object_mut()
        .unwrap()
        .remove("x-kubernetes-validations")
        .expect("MeshExemption refuses the baseline guards");
    let rule = guard[0]["rule"].as_str().unwrap();
    let names: Vec<&str> = BASELINE_GUARDS.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        rule,
        format!("!self.exists(r, r in ['{}'])", names.join("', '"))
    );
    let message = guard[0]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.rules") && message.contains("baseline-protected"),
        "{message}"
    );

    let selector = cluster["properties"]
        .as_object_mut()
        .unwrap()
        .remove("namespaceSelector")
        .expect("ClusterMeshExemption has a namespaceSelector");
    assert_eq!(selector["type"], "object");
    assert_eq!(namespaced, cluster);
    // Every CEL message names its field.
    for (field, schema) in namespaced["properties"].as_object().unwrap() {
        for check in schema["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let message = check["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("spec.{field}")),
                "{field}: {message}"
            );
        }
    }
}

#[test]
fn exemption_objects_go_to_validate_creates_fail_closed_deletes_open() {
    for values in [
        "",
        AUDIT,
        "mode: 'off'",
        "webhook: {objectSelector: {matchLabels: {a: b}}}\nnativePolicies: {enabled: false}",
    ] {
        let docs = render(values, NEWER);
        for (name, operations, policy) in [
            (EXEMPTIONS, json!(["CREATE", "UPDATE"]), "Fail"),
            (EXEMPTION_DELETIONS, json!(["DELETE"]), "Ignore"),
        ] {
            let hook = webhook(&docs, name);
            assert_eq!(hook["failurePolicy"], policy, "{name}, {values}");
            assert_eq!(hook["clientConfig"]["service"]["path"], "/validate");
            assert_eq!(
                hook["rules"],
                json!([{"apiGroups": [GROUP], "apiVersions": ["v1alpha1"],
                        "resources": KINDS, "operations": operations}]),
                "{name}"
            );
            assert!(hook.get("objectSelector").is_none(), "{name}, {values}");
            let skipped = skipped_namespaces(hook);
            assert_eq!(
                skipped,
                ["kube-system", "kube-public", "kube-node-lease", NAMESPACE]
            );
        }
    }
}

#[test]
fn exemption_roles_view_aggregates_edit_does_not_and_nothing_is_bound() {
    let docs = render("", NEWER);
    let view = find(&docs, "ClusterRole", VIEW);
    let edit = find(&docs, "ClusterRole", EDIT);
    let labels = |role: &Value| {
        role["metadata"]["labels"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        labels(view),
        [(
            "rbac.authorization.k8s.io/aggregate-to-view".to_owned(),
            json!("true")
        )]
    );
    assert!(
        labels(edit).is_empty(),
        "a namespace admin must not get the edit role"
    );
    let read: BTreeSet<String> = ["get", "list", "watch"].map(String::from).into();
    assert_eq!(
        granted(view),
        KINDS
            .map(|k| ((GROUP.to_owned(), k.to_owned()), read.clone()))
            .into()
    );
    let write: BTreeSet<String> = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        granted(edit),
        [((GROUP.to_owned(), "meshexemptions".to_owned()), write)].into()
    );
    for doc in &docs {
        if doc["kind"].as_str().is_some_and(|k| k.ends_with("Binding")) {
            let role = doc["roleRef"]["name"].as_str().unwrap();
            assert!(![VIEW, EDIT].contains(&role), "the chart binds {role}");
        }
    }
    let meshgate = granted(find(&docs, "ClusterRole", FULLNAME));
    for (resource, verbs) in meshgate_grants() {
        assert_eq!(meshgate.get(&resource), Some(&verbs), "{resource:?}");
    }
}

#[test]
fn max_duration_reaches_the_config_as_exemption_objects() {
    let docs = render("", NEWER);
    assert_eq!(
        rendered_config(&docs)["exemptionObjects"],
        json!({"maxDuration": "2160h"})
    );
    let docs = render("exemptionObjects: {maxDuration: 168h}", NEWER);
    assert_eq!(
        rendered_config(&docs)["exemptionObjects"],
        json!({"maxDuration": "168h"})
    );
    let err = render_error("exemptionObjects: {maxDuration: 90d}");
    assert!(err.contains("exemptionObjects/maxDuration"), "{err}");
    let err = render_error("exemptionObjects: {maxDays: 90}");
    assert!(err.contains("maxDays"), "{err}");
}
