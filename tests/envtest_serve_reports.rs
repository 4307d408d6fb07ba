//! Two `meshgate serve` processes against a real kube-apiserver: one wins
//! the Lease and writes the PolicyReports; the report follows a change in
//! place; when the writer goes, the other takes over and the reports stay
//! right.

mod common;
mod envtest;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::{json, Value};

use common::{collect_lines, eventually, Ca, Lines};

/// The background audit settles and the writer waits 1 s; the takeover
/// waits for the 15 s lease at most. A loaded machine gets room.
const REPORT_BOUND: Duration = Duration::from_secs(40);

struct Serve {
    child: Child,
    stdout: Lines,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(kubeconfig: &std::path::Path) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let serving = Ca::new("meshgate reports test CA").issue();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, &serving.cert_pem).unwrap();
        std::fs::write(&key, &serving.key_pem).unwrap();
        let mut command = Command::new(common::BIN);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--metrics-listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBERNETES_SERVICE_PORT");
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("MESHGATE_") || name.to_ascii_lowercase().ends_with("_proxy") {
                command.env_remove(&*name);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meshgate");
        let stdout = collect_lines(child.stdout.take().unwrap());
        Serve {
            child,
            stdout,
            _dir: dir,
        }
    }

    fn writes(&self) -> usize {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "policy reports written")
            .count()
    }

    /// SIGTERM, as the kubelet sends: the writer releases the lease.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- meshgate stdout ---\n{}",
                self.stdout.lock().unwrap().join("\n")
            );
        }
    }
}

async fn install_report_crds(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/meshgate/files/crds/wgpolicyk8s.yaml"
    ))
    .unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
}

fn shop_report(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "policyreports");
    Api::namespaced_with(client.clone(), "shop", &resource)
}

/// The shop report's `no-host-network` fail count, once it exists.
async fn host_network_fails(client: &Client) -> Option<(usize, String)> {
    let report = shop_report(client).get_opt("meshgate").await.ok()??;
    let fails = report.data["results"]
        .as_array()?
        .iter()
        .filter(|r| r["policy"] == "no-host-network" && r["result"] == "fail")
        .count();
    Some((fails, report.metadata.uid.clone()?))
}

fn pod(name: &str, host_network: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {"serviceAccountName": name, "hostNetwork": host_network,
                 "containers": [{"name": "app", "image": "shop:1"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn one_of_two_serve_processes_writes_the_reports_and_the_other_takes_over() {
    let Some(env) = envtest::start("envtest_serve_reports") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    install_report_crds(&client).await;
    for (name, labels) in [
        ("meshgate", json!({})),
        ("shop", json!({"istio-injection": "enabled"})),
    ] {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }
    let pods = Api::<Pod>::namespaced(client.clone(), "shop");
    pods.create(&PostParams::default(), &pod("agent", true))
        .await
        .unwrap();

    let mut serves = [
        Serve::start(&env.kubeconfig()),
        Serve::start(&env.kubeconfig()),
    ];
    let (_, uid) = eventually(
        "the shop report with the host-network pod",
        REPORT_BOUND,
        || async {
            host_network_fails(&client)
                .await
                .filter(|(fails, _)| *fails == 1)
        },
    )
    .await;

    // A second violating pod: the same report, updated in place.
    pods.create(&PostParams::default(), &pod("agent-2", true))
        .await
        .unwrap();
    let (_, same_uid) = eventually("the report to show both pods", REPORT_BOUND, || async {
        host_network_fails(&client)
            .await
            .filter(|(fails, _)| *fails == 2)
    })
    .await;
    assert_eq!(same_uid, uid, "updated in place, not recreated");

    let writers: Vec<usize> = serves.iter().map(Serve::writes).collect();
    assert_eq!(
        writers.iter().filter(|w| **w > 0).count(),
        1,
        "exactly one writer: {writers:?}"
    );
    let leader = writers.iter().position(|w| *w > 0).unwrap();
    let follower = 1 - leader;

    // The writer goes; the other takes over and follows the next change.
    serves[leader].terminate();
    pods.create(&PostParams::default(), &pod("agent-3", true))
        .await
        .unwrap();
    eventually(
        "the other replica to write the third pod",
        REPORT_BOUND,
        || async {
            host_network_fails(&client)
                .await
                .filter(|(fails, _)| *fails == 3)
        },
    )
    .await;
    assert!(serves[follower].writes() > 0);
}
