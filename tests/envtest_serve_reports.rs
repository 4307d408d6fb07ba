//! Two `meshgate serve` processes against a real kube-apiserver: one wins
//! the Lease and writes the PolicyReports, one per object; a new object gets
//! its own report and the others stay untouched; when the writer goes, the
//! other takes over and the reports stay right.

mod common;
mod envtest;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::Client;
use serde_json::json;

use common::{eventually, Options, Server};

/// The background audit settles and the writer waits 1 s; the takeover
/// waits for the 15 s lease at most. A loaded machine gets room.
const REPORT_BOUND: Duration = Duration::from_secs(40);

fn start(kubeconfig: &std::path::Path) -> Server {
    Server::start(Options::default().kubeconfig(kubeconfig))
}

/// How many times `server` wrote the PolicyReports.
fn writes(server: &Server) -> usize {
    server
        .log_entries()
        .iter()
        .filter(|v| v["message"] == "policy reports written")
        .count()
}

fn shop_reports(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "policyreports");
    Api::namespaced_with(client.clone(), "shop", &resource)
}

/// The `no-host-network` fails over shop's reports, and the resource
/// version of the first pod's report (`agent`), once it exists.
async fn host_network_fails(client: &Client) -> Option<(usize, String)> {
    let reports = shop_reports(client).list(&Default::default()).await.ok()?;
    let mut fails = 0;
    let mut agent = None;
    for report in &reports {
        let results = report.data["results"].as_array()?;
        fails += results
            .iter()
            .filter(|r| r["policy"] == "no-host-network" && r["result"] == "fail")
            .count();
        if report.data["scope"]["name"] == "agent" {
            assert_eq!(
                report.metadata.name,
                Some(format!(
                    "meshgate-{}",
                    report.data["scope"]["uid"].as_str()?
                ))
            );
            // Owned by the pod, so the garbage collector deletes it with it.
            let owner = &report.metadata.owner_references.as_ref()?[0];
            assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Pod", "agent"));
            assert_eq!(
                Some(owner.uid.as_str()),
                report.data["scope"]["uid"].as_str()
            );
            agent = report.metadata.resource_version.clone();
        }
    }
    Some((fails, agent?))
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
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;
    let pods = Api::<Pod>::namespaced(client.clone(), "shop");
    pods.create(&PostParams::default(), &pod("agent", true))
        .await
        .unwrap();

    let serves = [start(&env.kubeconfig()), start(&env.kubeconfig())];
    let (_, version) = eventually(
        "the shop report with the host-network pod",
        REPORT_BOUND,
        || async {
            host_network_fails(&client)
                .await
                .filter(|(fails, _)| *fails == 1)
        },
    )
    .await;

    // A second violating pod: its own report; the first one's is untouched.
    pods.create(&PostParams::default(), &pod("agent-2", true))
        .await
        .unwrap();
    let (_, same_version) = eventually("the reports to show both pods", REPORT_BOUND, || async {
        host_network_fails(&client)
            .await
            .filter(|(fails, _)| *fails == 2)
    })
    .await;
    assert_eq!(same_version, version, "an unchanged report is not written");

    let writers: Vec<usize> = serves.iter().map(writes).collect();
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
    assert!(writes(&serves[follower]) > 0);
}
