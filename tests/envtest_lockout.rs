//! meshgate is DOWN: what does the real API server still admit?
//!
//! The chart's webhook configurations, rendered by `helm template`, are
//! pointed at a loopback port where nothing listens (the only edit: a `url:`
//! client config instead of the Service, which envtest cannot reach) and
//! applied to a real kube-apiserver. Then the control plane and the mesh must
//! keep working (infrastructure namespaces and their pods, Namespace
//! objects named like them, namespace deletion) while application workloads
//! and the mesh-wide policies stay guarded. This is the table "When meshgate
//! is down" of the README.

mod common;
mod envtest;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, ResourceExt};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

const RELEASE_NAMESPACE: &str = "meshgate";
const WORKLOADS: &str = "workloads.validate.meshgate.io";
const POLICIES: &str = "mesh-policies.validate.meshgate.io";
/// The API server version of envtest (chart features such as matchConditions
/// depend on it).
const KUBE_VERSION: &str = "1.36.2";

/// `helm template` of the chart's `template` with `values`, as rendered for
/// the release namespace and the envtest API server's version.
fn helm_template(template: &str, values: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, values).unwrap();
    let out = Command::new("helm")
        .args(["template", "meshgate"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/meshgate"))
        .args([
            "--namespace",
            RELEASE_NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ])
        .args(["--show-only", template, "--values"])
        .arg(&values_file)
        .output()
        .expect("helm is needed (scripts/install-test-tools.sh installs it)");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The chart's webhook configurations, pointed at `port` on loopback.
fn render_webhooks(values: &str, port: u16, ca_pem: &str) -> Vec<Value> {
    let text = helm_template("templates/webhook.yaml", values);
    let mut configs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !doc["kind"]
            .as_str()
            .unwrap_or("")
            .ends_with("WebhookConfiguration")
        {
            continue;
        }
        for hook in doc["webhooks"].as_array_mut().unwrap() {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap()
                .to_owned();
            hook["clientConfig"] = json!({
                "url": format!("https://127.0.0.1:{port}{path}"),
                "caBundle": BASE64.encode(ca_pem),
            });
        }
        configs.push(doc);
    }
    assert_eq!(
        configs.len(),
        2,
        "a validating and a mutating configuration"
    );
    configs
}

async fn apply_webhooks(client: &Client, configs: &[Value]) {
    let params = PatchParams::apply("meshgate-test").force();
    for config in configs {
        let name = config["metadata"]["name"].as_str().unwrap();
        if config["kind"] == "ValidatingWebhookConfiguration" {
            let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
            api.patch(name, &params, &Patch::Apply(config))
                .await
                .unwrap();
        } else {
            let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
            api.patch(name, &params, &Patch::Apply(config))
                .await
                .unwrap();
        }
    }
}

/// A port on loopback where nothing listens: meshgate is stopped.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap()
}

fn namespace(name: &str, labels: Value) -> Namespace {
    object(json!({"metadata": {"name": name, "labels": labels}}))
}

fn pod(name: &str) -> Pod {
    object(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    }))
}

fn peer_authentication(name: &str, mode: &str) -> DynamicObject {
    object(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": name}, "spec": {"mtls": {"mode": mode}}
    }))
}

fn peer_authentications(client: &Client, ns: &str) -> Api<DynamicObject> {
    envtest::istio_api(client, ns, "security.istio.io", "PeerAuthentication")
}

fn destination_rules(client: &Client, ns: &str) -> Api<DynamicObject> {
    envtest::istio_api(client, ns, "networking.istio.io", "DestinationRule")
}

/// The request went through: admitted.
fn admitted<T>(what: &str, result: Result<T, kube::Error>) {
    if let Err(e) = result {
        panic!("{what} should be admitted while meshgate is down, got: {e}");
    }
}

/// The request failed because the API server could not call `webhook`.
fn rejected_by<T: std::fmt::Debug>(what: &str, webhook: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(status)) => assert!(
            status
                .message
                .contains(&format!("failed calling webhook \"{webhook}\"")),
            "{what}: rejected, but not for failing to call {webhook}: {}",
            status.message
        ),
        other => panic!("{what} should be rejected: {webhook} is down; got {other:?}"),
    }
}

/// Waits until the API server calls the (unreachable) webhooks: it loads
/// webhook configurations asynchronously.
async fn wait_until_pods_in(client: &Client, ns: &str, blocked: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    loop {
        let result = pods.create(&dry_run, &pod("probe")).await;
        if result.is_err() == blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pods in {ns} never became {}: {result:?}",
            if blocked { "blocked" } else { "admitted" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_meshgate_locks_out_neither_the_control_plane_nor_the_mesh() {
    let Some(env) =
        envtest::start("a_stopped_meshgate_locks_out_neither_the_control_plane_nor_the_mesh")
    else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;

    // Before meshgate's webhooks exist: an enrolled application namespace, the
    // mesh root namespace with its mesh-wide STRICT baseline.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let create = PostParams::default();
    for (name, labels) in [
        ("shop", json!({"istio-injection": "enabled"})),
        ("istio-system", json!({})),
    ] {
        namespaces
            .create(&create, &namespace(name, labels))
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = peer_authentications(&client, "istio-system")
        .create(&create, &peer_authentication("default", "STRICT"))
        .await
    {
        // The CRD is established, but discovery may lag a moment.
        assert!(Instant::now() < deadline, "cannot create the baseline: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // meshgate installed in enforce mode (failurePolicy Fail), and stopped.
    let port = closed_port();
    apply_webhooks(&client, &render_webhooks("", port, &env.ca_pem())).await;
    wait_until_pods_in(&client, "shop", true).await;

    // Guarded: application workloads, namespaces and policies.
    let shop_pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    rejected_by(
        "a pod in shop",
        WORKLOADS,
        shop_pods.create(&create, &pod("web")).await,
    );
    rejected_by(
        "a new application namespace",
        WORKLOADS,
        namespaces
            .create(&create, &namespace("payments", json!({})))
            .await,
    );
    let relabel = json!({"metadata": {"labels": {"istio-injection": "disabled"}}});
    rejected_by(
        "relabelling shop out of the mesh",
        WORKLOADS,
        namespaces
            .patch("shop", &PatchParams::default(), &Patch::Merge(&relabel))
            .await,
    );
    rejected_by(
        "a PeerAuthentication in shop",
        POLICIES,
        peer_authentications(&client, "shop")
            .create(&create, &peer_authentication("default", "PERMISSIVE"))
            .await,
    );
    // The mesh root namespace's policies stay guarded, deletion included.
    rejected_by(
        "a PeerAuthentication in istio-system",
        POLICIES,
        peer_authentications(&client, "istio-system")
            .create(&create, &peer_authentication("permissive", "PERMISSIVE"))
            .await,
    );
    rejected_by(
        "deleting the mesh-wide baseline",
        POLICIES,
        peer_authentications(&client, "istio-system")
            .delete("default", &DeleteParams::default())
            .await,
    );

    // Not blocked: the infrastructure namespaces, created now and named like
    // the ones meshgate exempts, and what runs in them.
    for name in ["cert-manager", RELEASE_NAMESPACE] {
        admitted(
            &format!("creating namespace {name}"),
            namespaces
                .create(&create, &namespace(name, json!({})))
                .await,
        );
    }
    for ns in [
        "istio-system",
        "cert-manager",
        "kube-system",
        RELEASE_NAMESPACE,
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        admitted(
            &format!("a pod in {ns}"),
            pods.create(&create, &pod("infra")).await,
        );
    }
    let istiod: Deployment = object(json!({
        "metadata": {"name": "istiod"},
        "spec": {
            "selector": {"matchLabels": {"app": "istiod"}},
            "template": {
                "metadata": {"labels": {"app": "istiod"}},
                "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.24.0"}]}
            }
        }
    }));
    admitted(
        "the istiod Deployment",
        Api::<Deployment>::namespaced(client.clone(), "istio-system")
            .create(&create, &istiod)
            .await,
    );
    admitted(
        "a ConfigMap in istio-system",
        Api::<ConfigMap>::namespaced(client.clone(), "istio-system")
            .create(&create, &object(json!({"metadata": {"name": "istio"}})))
            .await,
    );
    admitted(
        "a Service in istio-system",
        Api::<Service>::namespaced(client.clone(), "istio-system")
            .create(
                &create,
                &object(json!({
                    "metadata": {"name": "istiod"},
                    "spec": {"ports": [{"name": "grpc-xds", "port": 15010}]}
                })),
            )
            .await,
    );
    admitted(
        "a DestinationRule in istio-system",
        destination_rules(&client, "istio-system")
            .create(
                &create,
                &object(json!({
                    "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                    "metadata": {"name": "istiod"}, "spec": {"host": "istiod.istio-system.svc.cluster.local"}
                })),
            )
            .await,
    );
    admitted(
        "a PeerAuthentication in cert-manager (exempt, not the root namespace)",
        peer_authentications(&client, "cert-manager")
            .create(&create, &peer_authentication("default", "PERMISSIVE"))
            .await,
    );
    let label = json!({"metadata": {"labels": {"topology.istio.io/network": "net1"}}});
    admitted(
        "labelling istio-system",
        namespaces
            .patch(
                "istio-system",
                &PatchParams::default(),
                &Patch::Merge(&label),
            )
            .await,
    );
    // The namespace controller empties a namespace being deleted, policies
    // included; that must not wait for meshgate.
    let controller = env
        .client_as("system:serviceaccount:kube-system:namespace-controller")
        .await;
    admitted(
        "the namespace controller deleting the baseline of a namespace being deleted",
        peer_authentications(&controller, "istio-system")
            .delete("default", &DeleteParams::default())
            .await,
    );
    admitted(
        "deleting namespace cert-manager",
        namespaces
            .delete("cert-manager", &DeleteParams::default())
            .await,
    );
    admitted(
        "deleting namespace shop",
        namespaces.delete("shop", &DeleteParams::default()).await,
    );

    // Audit mode fails open: nothing is blocked any more.
    apply_webhooks(
        &client,
        &render_webhooks("mode: audit", port, &env.ca_pem()),
    )
    .await;
    namespaces
        .create(&create, &namespace("orders", json!({})))
        .await
        .map(|ns| ns.name_any())
        .unwrap_or_else(|e| panic!("audit mode: a new namespace is admitted: {e}"));
    wait_until_pods_in(&client, "orders", false).await;
    admitted(
        "audit mode: a PeerAuthentication in istio-system",
        peer_authentications(&client, "istio-system")
            .create(&create, &peer_authentication("permissive", "PERMISSIVE"))
            .await,
    );
}

/// The chart's pre-delete hook, with the hook's own RBAC: `meshgate
/// remove-webhooks` deletes this release's two configurations (again
/// without error when they are gone) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uninstall_hook_removes_exactly_the_webhook_configurations() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    let Some(env) = envtest::start("the_uninstall_hook_removes_exactly_the_webhook_configurations")
    else {
        return;
    };
    let client = env.client().await;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &namespace(RELEASE_NAMESPACE, json!({})),
        )
        .await
        .unwrap();
    let configs = render_webhooks("", closed_port(), &env.ca_pem());
    apply_webhooks(&client, &configs).await;
    let mut other = configs
        .iter()
        .find(|c| c["kind"] == "ValidatingWebhookConfiguration")
        .unwrap()
        .clone();
    other["metadata"]["name"] = "someone-else".into();
    apply_webhooks(&client, &[other]).await;

    // The hook's ServiceAccount, ClusterRole and binding, as rendered.
    let text = helm_template("templates/uninstall-hook.yaml", "{}\n");
    let params = PatchParams::apply("meshgate-test").force();
    let mut account = String::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc: Value = serde::Deserialize::deserialize(doc).unwrap();
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        match doc["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                account = format!("system:serviceaccount:{RELEASE_NAMESPACE}:{name}");
                Api::<ServiceAccount>::namespaced(client.clone(), RELEASE_NAMESPACE)
                    .patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .unwrap();
            }
            "ClusterRole" => {
                Api::<ClusterRole>::all(client.clone())
                    .patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .unwrap();
            }
            "ClusterRoleBinding" => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&name, &params, &Patch::Apply(&doc))
                    .await
                    .unwrap();
            }
            "Job" => {
                let args = &doc["spec"]["template"]["spec"]["containers"][0]["args"];
                assert_eq!(
                    args,
                    &json!(["remove-webhooks", "--name", "meshgate", "--policy-reports"])
                );
            }
            other => panic!("unexpected {other} in the hook"),
        }
    }
    assert!(!account.is_empty());

    // A kubeconfig that acts as the hook's ServiceAccount.
    let mut kubeconfig: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(env.kubeconfig()).unwrap()).unwrap();
    kubeconfig["users"][0]["user"]["as"] = account.into();
    let dir = tempfile::tempdir().unwrap();
    let hook_kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &hook_kubeconfig,
        serde_yaml_ng::to_string(&kubeconfig).unwrap(),
    )
    .unwrap();
    let hook_kubeconfig = hook_kubeconfig.to_string_lossy().into_owned();
    let remove = |name: &str| {
        common::run_cli_with_input(
            &["remove-webhooks", "--name", name],
            &[("KUBECONFIG", &hook_kubeconfig)],
            b"",
            Duration::from_secs(60),
        )
    };

    let out = remove("meshgate");
    assert!(out.status.success(), "{}", out.stderr);
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    assert!(validating.get_opt("meshgate").await.unwrap().is_none());
    assert!(mutating.get_opt("meshgate").await.unwrap().is_none());
    // A retried hook finds nothing to do and still succeeds.
    let out = remove("meshgate");
    assert!(out.status.success(), "{}", out.stderr);
    // Its RBAC reaches no other configuration.
    let out = remove("someone-else");
    assert!(!out.status.success());
    assert!(out.stderr.contains("forbidden"), "{}", out.stderr);
    assert!(validating.get_opt("someone-else").await.unwrap().is_some());
}
