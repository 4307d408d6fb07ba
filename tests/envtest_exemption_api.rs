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

use std::process::Command;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
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

/// Invalid exemptions: (what, spec edit as JSON, what the refusal says).
const INVALID: &[(&str, &str, &str)] = &[
    (
        "no reason",
        r#"{"reason": null}"#,
        "spec.reason: Required value",
    ),
    (
        "blank reason",
        r#"{"reason": "  because  "}"#,
        "spec.reason must say why, in at least 20 characters",
    ),
    (
        "placeholder",
        r#"{"reason": "TODO todo todo n/a tbd"}"#,
        "spec.reason must not be a placeholder",
    ),
    (
        "no expires",
        r#"{"expires": null}"#,
        "spec.expires: Required value",
    ),
    (
        "bad expires",
        r#"{"expires": "next tuesday"}"#,
        "spec.expires in body must be of type date-time",
    ),
    (
        "date only",
        r#"{"expires": "2027-01-31"}"#,
        "spec.expires in body must be of type date-time",
    ),
    (
        "unknown rule",
        r#"{"rules": ["sidecar-requird"]}"#,
        r#"spec.rules[0]: Unsupported value: "sidecar-requird""#,
    ),
    (
        "no rules",
        r#"{"rules": []}"#,
        "spec.rules in body should have at least 1 items",
    ),
    (
        "guard",
        r#"{"rules": ["no-host-network", "baseline-protected"]}"#,
        "may not list baseline-protected in spec.rules",
    ),
    (
        "empty match",
        r#"{"match": {}}"#,
        "spec.match needs names or a non-empty selector",
    ),
    (
        "empty selector",
        r#"{"match": {"names": [], "selector": {"matchLabels": {}}}}"#,
        "spec.match needs names or a non-empty selector",
    ),
    (
        "no match",
        r#"{"match": null}"#,
        "spec.match: Required value",
    ),
    (
        "bare star",
        r#"{"match": {"names": ["*"]}}"#,
        "spec.match.names holds exact names or prefixes ending in *",
    ),
    (
        "inner star",
        r#"{"match": {"names": ["a*b"]}}"#,
        "spec.match.names holds exact names or prefixes ending in *",
    ),
];

#[tokio::test]
async fn the_api_server_refuses_invalid_exemptions_naming_the_field() {
    let Some(env) = envtest::start("envtest_exemption_api") else {
        return;
    };
    let client = env.client().await;
    envtest::install_crds(&client, CRDS).await;
    envtest::create_namespace(&client, NS, json!({})).await;
    let api = namespaced(&client);
    for (i, (what, edit, expected)) in INVALID.iter().enumerate() {
        let edit: Value = serde_json::from_str(edit).unwrap();
        let name = format!("bad-{i}");
        let message = refusal(&api, &exemption("MeshExemption", &name, edit)).await;
        assert!(message.contains(expected), "{what}: {message}");
    }
    valid_ones_are_stored_with_printer_columns(&env, &api).await;
    the_cluster_kind_may_lift_the_baseline_guard(&env, &client).await;
}

async fn valid_ones_are_stored_with_printer_columns(
    env: &envtest::Envtest,
    api: &Api<DynamicObject>,
) {
    let valid = exemption("MeshExemption", "legacy-billing", json!({}));
    api.create(&PostParams::default(), &valid).await.unwrap();
    // Names alone (a prefix); offsets and fractions are RFC 3339 too.
    let batch = json!({"match": {"names": ["batch-*"]}, "expires": "2027-01-31T10:00:00.5+01:00"});
    let batch = exemption("MeshExemption", "batch", batch);
    api.create(&PostParams::default(), &batch).await.unwrap();
    let table = env.kubectl(&["get", "mex", "-n", NS, "legacy-billing"], "");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "RULES", "EXPIRES", "STATE", "COVERED", "AGE"],
        "{table}"
    );
    assert!(table.contains("2027-01-31T00:00:00Z"), "{table}");
}

/// The platform team's ClusterMeshExemption may lift the baseline guard, in
/// the namespaces its selector picks; the other schema checks still apply.
async fn the_cluster_kind_may_lift_the_baseline_guard(env: &envtest::Envtest, client: &Client) {
    let cmex = cluster(client);
    let platform = json!({
        "rules": ["baseline-protected"],
        "namespaceSelector": {"matchLabels": {"team": "infra"}},
    });
    let platform = exemption("ClusterMeshExemption", "legacy-agents", platform);
    cmex.create(&PostParams::default(), &platform)
        .await
        .unwrap();
    let lazy = exemption("ClusterMeshExemption", "lazy", json!({"reason": "n/a"}));
    let message = refusal(&cmex, &lazy).await;
    assert!(message.contains("spec.reason"), "{message}");
    let table = env.kubectl(&["get", "cmex"], "");
    assert!(
        table.contains("legacy-agents") && table.contains("baseline-protected"),
        "{table}"
    );
}

// ------------------------------------------------------- meshgate down

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

/// The chart's ValidatingWebhookConfiguration, every webhook pointed at a
/// loopback port where nothing listens: meshgate is down.
fn webhooks_of_a_stopped_meshgate(ca_pem: &str) -> Value {
    let text = chart_template("templates/webhook.yaml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        if doc["kind"] != "ValidatingWebhookConfiguration" {
            continue;
        }
        for hook in doc["webhooks"].as_array_mut().unwrap() {
            hook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}/validate"),
                "caBundle": BASE64.encode(ca_pem),
            });
        }
        return doc;
    }
    panic!("no ValidatingWebhookConfiguration in {text}");
}

/// While meshgate is down, creating or changing an exemption is refused
/// (else its maxDuration check and audit log could be skipped by knocking
/// it over); deleting one, which only tightens, goes through.
#[tokio::test]
async fn while_meshgate_is_down_changes_fail_closed_and_deletions_open() {
    let Some(env) = envtest::start("envtest_exemption_api down") else {
        return;
    };
    let client = env.client().await;
    envtest::install_crds(&client, CRDS).await;
    envtest::create_namespace(&client, NS, json!({})).await;
    let api = namespaced(&client);
    let old = exemption("MeshExemption", "old", json!({}));
    api.create(&PostParams::default(), &old).await.unwrap();

    let config = webhooks_of_a_stopped_meshgate(&env.ca_pem());
    let params = PatchParams::apply("meshgate-test").force();
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch("meshgate", &params, &Patch::Apply(&config))
        .await
        .unwrap();
    // The API server loads webhook configurations asynchronously.
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let new = exemption("MeshExemption", "new", json!({}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let refused = loop {
        match api.create(&dry_run, &new).await {
            Err(kube::Error::Api(e)) => break e.message,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "never refused"),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let by = r#"failed calling webhook "exemptions.validate.meshgate.io""#;
    assert!(refused.contains(by), "{refused}");
    let longer = json!({"spec": {"expires": "2099-01-01T00:00:00Z"}});
    match api
        .patch("old", &PatchParams::default(), &Patch::Merge(&longer))
        .await
    {
        Err(kube::Error::Api(e)) => assert!(e.message.contains(by), "{e:?}"),
        other => panic!("an update went through while meshgate is down: {other:?}"),
    }
    api.delete("old", &Default::default()).await.unwrap();
}

// RBAC: who may exempt, and what meshgate itself may write.
#[path = "envtest_exemption_api/rbac.rs"]
mod rbac;
