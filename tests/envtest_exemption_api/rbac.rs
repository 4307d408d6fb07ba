//! Who may exempt is RBAC (the chart's meshgate-exemptions-* ClusterRoles);
//! meshgate's ServiceAccount writes status only.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, RoleBinding};
use kube::api::ListParams;

use super::*;

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

    a_namespace_admin_cannot_exempt(&env, &client).await;
    an_approver_can(&env, &client).await;
    a_viewer_only_lists(&env, &client).await;
    meshgate_writes_status_only(&env, &client).await;
}

/// A namespace admin sees exemptions (view aggregates into admin) but cannot
/// create one, nor bind themselves the edit role (RBAC refuses to grant
/// rights the granter does not hold).
async fn a_namespace_admin_cannot_exempt(env: &envtest::Envtest, client: &Client) {
    bind(client, "alice", "admin").await;
    let alice = env.client_as("alice").await;
    namespaced(&alice)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mine = exemption("MeshExemption", "mine", json!({}));
    let created = namespaced(&alice)
        .create(&PostParams::default(), &mine)
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
}

/// Security binds the edit role to an approver: now they can, in the
/// namespace, but not a ClusterMeshExemption (those stay with cluster admins).
async fn an_approver_can(env: &envtest::Envtest, client: &Client) {
    bind(client, "bob", "admin").await;
    bind(client, "bob", "meshgate-exemptions-edit").await;
    let bob = env.client_as("bob").await;
    let approved = exemption("MeshExemption", "approved", json!({}));
    namespaced(&bob)
        .create(&PostParams::default(), &approved)
        .await
        .unwrap();
    let wide = exemption("ClusterMeshExemption", "wide", json!({}));
    let platform = cluster(&bob).create(&PostParams::default(), &wide).await;
    assert!(
        forbidden(platform),
        "the edit role created a ClusterMeshExemption"
    );
}

/// A viewer (the built-in view role) lists them and changes nothing.
async fn a_viewer_only_lists(env: &envtest::Envtest, client: &Client) {
    bind(client, "carol", "view").await;
    let carol = env.client_as("carol").await;
    let listed = namespaced(&carol)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: BTreeSet<String> = listed
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    assert_eq!(names, BTreeSet::from(["approved".to_owned()]));
    let deleted = namespaced(&carol)
        .delete("approved", &Default::default())
        .await;
    assert!(forbidden(deleted), "a viewer deleted an exemption");
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
