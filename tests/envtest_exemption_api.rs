//! The exemption API on a real kube-apiserver, without meshgate running:
//! what the chart's CRDs (charts/meshgate/files/crds/meshgate-exemptions.yaml)
//! and ClusterRoles make the API server enforce by itself.
//!
//! - Invalid exemptions are refused with a message naming the field: no or a
//!   trivial reason, no or a malformed expires, an unknown rule, the baseline
//!   guard in a namespaced exemption, an empty match. A ClusterMeshExemption
//!   may lift the baseline guard.
//! - Who may exempt is RBAC: a namespace admin (the built-in `admin` role)
//!   cannot create a MeshExemption, nor grant themselves the right; with the
//!   chart's `meshgate-exemptions-edit` they can; `view` shows them.
//! - meshgate's ServiceAccount may write their status, not their spec.
//!
//! An expiry too far ahead is refused by meshgate's own webhook, not by the
//! API server (CEL sees neither the clock nor creationTimestamp): the engine's
//! envtest tests cover that.

mod envtest;

use std::collections::BTreeSet;
use std::process::Command;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::{json, Value};

const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/meshgate/files/crds/meshgate-exemptions.yaml"
);
const NS: &str = "shop";
const RELEASE_NS: &str = "meshgate";
const GOOD_REASON: &str = "Vendor image cannot run with a sidecar until v4 (SEC-1234)";

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("meshgate.io", "v1alpha1", kind))
}

fn namespaced(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &resource("MeshExemption"))
}

fn cluster(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &resource("ClusterMeshExemption"))
}

/// A valid MeshExemption `name`, with `edit` applied to its spec (a null
/// removes the field).
fn exemption(kind: &str, name: &str, edit: Value) -> DynamicObject {
    let mut spec = json!({
        "rules": ["sidecar-required", "no-interception-bypass"],
        "match": {"names": ["billing", "batch-*"], "selector": {"matchLabels": {"app": "billing"}}},
        "reason": GOOD_REASON,
        "expires": "2027-01-31T00:00:00Z",
        "ticket": "SEC-1234",
        "owner": "team-billing",
    });
    for (key, value) in edit.as_object().unwrap() {
        if value.is_null() {
            spec.as_object_mut().unwrap().remove(key);
        } else {
            spec[key] = value.clone();
        }
    }
    let metadata = if kind == "MeshExemption" {
        json!({"name": name, "namespace": NS})
    } else {
        json!({"name": name})
    };
    serde_json::from_value(json!({
        "apiVersion": "meshgate.io/v1alpha1", "kind": kind,
        "metadata": metadata, "spec": spec,
    }))
    .unwrap()
}

/// The API server's refusal of `object`, as text.
async fn refusal(api: &Api<DynamicObject>, object: &DynamicObject) -> String {
    match api.create(&PostParams::default(), object).await {
        Ok(_) => panic!("accepted: {:?}", object.data),
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            e.message
        }
        Err(e) => panic!("{e}"),
    }
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(ref e)) if e.code == 403)
}

#[tokio::test]
async fn the_api_server_refuses_invalid_exemptions_naming_the_field() {
    let Some(env) = envtest::start("envtest_exemption_api") else {
        return;
    };
    let client = env.client().await;
    envtest::install_crds(&client, CRDS).await;
    envtest::create_namespace(&client, NS, json!({})).await;
    let api = namespaced(&client);

    let cases = [
        (
            "no reason",
            json!({"reason": null}),
            "spec.reason: Required value",
        ),
        (
            "blank reason",
            json!({"reason": "  because  "}),
            "spec.reason must say why, in at least 20 characters",
        ),
        (
            "placeholder reason",
            json!({"reason": "TODO todo todo n/a tbd"}),
            "spec.reason must not be a placeholder",
        ),
        (
            "no expires",
            json!({"expires": null}),
            "spec.expires: Required value",
        ),
        (
            "malformed expires",
            json!({"expires": "next tuesday"}),
            "spec.expires in body must be of type date-time",
        ),
        (
            "date without time",
            json!({"expires": "2027-01-31"}),
            "spec.expires in body must be of type date-time",
        ),
        (
            "unknown rule",
            json!({"rules": ["sidecar-requird"]}),
            "spec.rules[0]: Unsupported value: \"sidecar-requird\"",
        ),
        (
            "no rules",
            json!({"rules": []}),
            "spec.rules in body should have at least 1 items",
        ),
        (
            "baseline guard",
            json!({"rules": ["sidecar-required", "baseline-protected"]}),
            "may not list baseline-protected in spec.rules",
        ),
        (
            "empty match",
            json!({"match": {}}),
            "spec.match needs names or a non-empty selector",
        ),
        (
            "empty selector",
            json!({"match": {"names": [], "selector": {"matchLabels": {}}}}),
            "spec.match needs names or a non-empty selector",
        ),
        (
            "no match",
            json!({"match": null}),
            "spec.match: Required value",
        ),
    ];
    for (i, (what, edit, expected)) in cases.iter().enumerate() {
        let message = refusal(
            &api,
            &exemption("MeshExemption", &format!("bad-{i}"), edit.clone()),
        )
        .await;
        assert!(message.contains(expected), "{what}: {message}");
    }

    // Valid ones are stored, with the short names and printer columns.
    api.create(
        &PostParams::default(),
        &exemption("MeshExemption", "legacy-billing", json!({})),
    )
    .await
    .unwrap();
    let everything = json!({"match": {"names": ["*"]}, "expires": "2027-01-31T10:00:00.5+01:00"});
    api.create(
        &PostParams::default(),
        &exemption("MeshExemption", "all", everything),
    )
    .await
    .unwrap();
    let table = env.kubectl(&["get", "mex", "-n", NS, "legacy-billing"], "");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "RULES", "EXPIRES", "STATE", "COVERED", "AGE"],
        "{table}"
    );
    assert!(table.contains("2027-01-31T00:00:00Z"), "{table}");

    // The platform team's ClusterMeshExemption may lift the baseline guard,
    // in the namespaces its selector picks; the same schema checks apply.
    let cmex = cluster(&client);
    let platform = json!({
        "rules": ["baseline-protected"],
        "namespaceSelector": {"matchLabels": {"team": "infra"}},
    });
    cmex.create(
        &PostParams::default(),
        &exemption("ClusterMeshExemption", "legacy-agents", platform),
    )
    .await
    .unwrap();
    let message = refusal(
        &cmex,
        &exemption("ClusterMeshExemption", "lazy", json!({"reason": "n/a"})),
    )
    .await;
    assert!(message.contains("spec.reason"), "{message}");
    let table = env.kubectl(&["get", "cmex"], "");
    assert!(
        table.contains("legacy-agents") && table.contains("baseline-protected"),
        "{table}"
    );
}

// ---------------------------------------------------------------- RBAC

/// Renders one chart template for release `meshgate` in `meshgate`.
fn chart_template(template: &str) -> String {
    let out = Command::new("helm")
        .args([
            "template",
            "meshgate",
            "charts/meshgate",
            "--namespace",
            RELEASE_NS,
        ])
        .args(["--show-only", template])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("helm is needed (scripts/install-test-tools.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What kube-controller-manager's clusterrole-aggregation controller does
/// (envtest runs no controller manager): each role with an aggregationRule
/// gets the union of the rules of the roles its selectors match, until
/// nothing changes (view feeds edit, edit feeds admin).
async fn aggregate_cluster_roles(client: &Client) {
    let api: Api<ClusterRole> = Api::all(client.clone());
    loop {
        let roles = api.list(&ListParams::default()).await.unwrap().items;
        let mut changed = false;
        for role in roles.iter().filter(|r| r.aggregation_rule.is_some()) {
            let selectors = role
                .aggregation_rule
                .as_ref()
                .unwrap()
                .cluster_role_selectors
                .clone()
                .unwrap_or_default();
            let mut rules: Vec<PolicyRule> = Vec::new();
            for other in &roles {
                let labels = other.metadata.labels.clone().unwrap_or_default();
                let matched = selectors.iter().any(|s| {
                    s.match_labels
                        .as_ref()
                        .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
                });
                for rule in other.rules.iter().flatten().filter(|_| matched) {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
            if role.rules.clone().unwrap_or_default() != rules {
                let patch = json!({"rules": rules});
                let name = role.metadata.name.as_deref().unwrap();
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                changed = true;
            }
        }
        if !changed {
            return;
        }
    }
}

async fn bind(client: &Client, user: &str, role: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{user}-{role}"), "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_the_edit_role_may_exempt_and_view_shows_exemptions() {
    let Some(env) = envtest::start("envtest_exemption_api rbac") else {
        return;
    };
    let client = env.client().await;
    envtest::install_crds(&client, CRDS).await;
    envtest::create_namespace(&client, NS, json!({})).await;
    envtest::create_namespace(&client, RELEASE_NS, json!({})).await;
    env.kubectl(
        &["apply", "-f", "-"],
        &chart_template("templates/exemption-rbac.yaml"),
    );
    aggregate_cluster_roles(&client).await;

    // The chart binds nobody to its roles.
    let rendered = chart_template("templates/exemption-rbac.yaml");
    assert!(!rendered.contains("Binding"), "{rendered}");

    // A namespace admin sees exemptions (view aggregates into admin) but
    // cannot create one, nor bind themselves the edit role (RBAC refuses to
    // grant rights one does not hold).
    bind(&client, "alice", "admin").await;
    let alice = env.client_as("alice").await;
    namespaced(&alice)
        .list(&ListParams::default())
        .await
        .unwrap();
    let created = namespaced(&alice)
        .create(
            &PostParams::default(),
            &exemption("MeshExemption", "mine", json!({})),
        )
        .await;
    assert!(forbidden(created), "a namespace admin created an exemption");
    let escalation: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "alice-exempts", "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "meshgate-exemptions-edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    let granted = Api::<RoleBinding>::namespaced(alice.clone(), NS)
        .create(&PostParams::default(), &escalation)
        .await;
    assert!(
        forbidden(granted),
        "a namespace admin granted themselves the edit role"
    );

    // Security binds the edit role to an approver: now they can.
    bind(&client, "bob", "admin").await;
    bind(&client, "bob", "meshgate-exemptions-edit").await;
    let bob = env.client_as("bob").await;
    namespaced(&bob)
        .create(
            &PostParams::default(),
            &exemption("MeshExemption", "approved", json!({})),
        )
        .await
        .unwrap();
    // ... but not a ClusterMeshExemption: those stay with cluster admins.
    let platform = cluster(&bob)
        .create(
            &PostParams::default(),
            &exemption("ClusterMeshExemption", "wide", json!({})),
        )
        .await;
    assert!(
        forbidden(platform),
        "the edit role created a ClusterMeshExemption"
    );

    // A viewer lists them and changes nothing.
    bind(&client, "carol", "view").await;
    let carol = env.client_as("carol").await;
    let names: BTreeSet<String> = namespaced(&carol)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, BTreeSet::from(["approved".to_owned()]));
    let deleted = namespaced(&carol)
        .delete("approved", &Default::default())
        .await;
    assert!(forbidden(deleted), "a viewer deleted an exemption");

    meshgate_writes_status_only(&env, &client).await;
}

/// meshgate's ServiceAccount (the chart's rbac.yaml) reads exemptions and
/// writes their status subresource, never their spec.
async fn meshgate_writes_status_only(env: &envtest::Envtest, client: &Client) {
    env.kubectl(
        &["apply", "-f", "-"],
        &chart_template("templates/rbac.yaml"),
    );
    let meshgate = env
        .client_as(&format!("system:serviceaccount:{RELEASE_NS}:meshgate"))
        .await;
    let api = namespaced(&meshgate);
    api.list(&ListParams::default()).await.unwrap();
    let status = json!({"status": {"state": "Active", "covered": 3, "observedGeneration": 1}});
    api.patch_status("approved", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    let spec = json!({"spec": {"expires": "2099-01-01T00:00:00Z"}});
    let widened = api
        .patch("approved", &PatchParams::default(), &Patch::Merge(&spec))
        .await;
    assert!(forbidden(widened), "meshgate changed an exemption's spec");
    let stored = namespaced(client).get("approved").await.unwrap();
    assert_eq!(stored.data["status"]["covered"], 3);
    assert_eq!(stored.data["spec"]["expires"], "2027-01-31T00:00:00Z");
    let table = env.kubectl(
        &[
            "get",
            "meshexemptions",
            "-n",
            NS,
            "approved",
            "--no-headers",
        ],
        "",
    );
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(columns[3..5], ["Active", "3"], "{table}");
}
