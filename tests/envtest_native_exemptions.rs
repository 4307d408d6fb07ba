//! Issue 22: exemption objects reach the native policies. The leader
//! compiles the MeshExemptions and ClusterMeshExemptions active at the
//! moment into the policies of the rules they lift, so with meshgate's
//! process stopped the API server admits what they cover, and nothing else;
//! an exemption that expires while meshgate runs stops lifting within
//! seconds.

mod common;
mod envtest;
mod native_common;

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use common::{eventually, Options, Server};
use native_common::{dry_run, native_api, SYNC_BOUND};

const CONFIG: &str = "mode: off\nrules: {no-host-network: enforce}\n";
const REASON: &str = "the node agent needs the host network (SEC-1234)";

fn host_pod(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"hostNetwork": true, "containers": [{"name": "agent", "image": "agent:1"}]},
    })
}

fn exemption(kind: &str, namespace: Option<&str>, expires: Timestamp, extra: Value) -> Value {
    let mut spec = json!({"rules": ["no-host-network"], "match": {"names": ["agent*"]},
        "reason": REASON, "expires": expires.to_string()});
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let mut metadata = json!({"name": "agents"});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "meshgate.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

/// The exemption expression compiled into the no-host-network policy.
async fn lifted(client: &kube::Client) -> String {
    let api = native_api(
        client,
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
    );
    let Ok(policy) = api.get("meshgate-no-host-network").await else {
        return String::new();
    };
    policy.data["spec"]["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "exemptionObjects")
        .and_then(|v| v["expression"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn serve(env: &envtest::Envtest) -> Server {
    Server::start(
        Options::default()
            .kubeconfig(env.kubeconfig())
            .config(CONFIG)
            .args(&["--native-policies", "true"]),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn exemption_objects_lift_the_native_policies_and_stop_when_they_expire() {
    let Some(env) = envtest::start("envtest_native_exemptions") else {
        return;
    };
    let client = env.client().await;
    envtest::install_exemption_crds(&client).await;
    for (ns, labels) in [
        ("meshgate", json!({})),
        ("shop", json!({})),
        ("infra", json!({"team": "infra"})),
        ("other", json!({})),
    ] {
        envtest::create_namespace(&client, ns, labels).await;
    }
    let hour = Timestamp::now() + SignedDuration::from_hours(1);
    env.kubectl(
        &["apply", "-f", "-"],
        &exemption("MeshExemption", Some("shop"), hour, json!({})).to_string(),
    );
    let by_label = json!({"namespaceSelector": {"matchLabels": {"team": "infra"}}});
    env.kubectl(
        &["apply", "-f", "-"],
        &exemption("ClusterMeshExemption", None, hour, by_label).to_string(),
    );

    let mut meshgate = serve(&env);
    eventually("both exemptions compiled in", SYNC_BOUND, || async {
        let lifted = lifted(&client).await;
        (lifted.contains("\"shop\"") && lifted.contains("\"infra\"")).then_some(())
    })
    .await;
    meshgate.terminate();
    let status = meshgate.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", meshgate.stderr());
    tokio::time::sleep(Duration::from_secs(3)).await;

    // meshgate is down: the API server alone answers.
    for ns in ["shop", "infra"] {
        let answer = dry_run(&env, &host_pod("agent-1", ns));
        assert!(answer.is_ok(), "{ns}: {answer:?}");
    }
    for (name, ns) in [("agent-1", "other"), ("web", "shop"), ("web", "infra")] {
        let refusal = dry_run(&env, &host_pod(name, ns)).unwrap_err();
        assert!(
            refusal.contains("[no-host-network]"),
            "{name} in {ns}: {refusal}"
        );
    }

    // An exemption that expires while meshgate runs stops lifting.
    let mut meshgate = serve(&env);
    let soon = Timestamp::now() + SignedDuration::from_secs(20);
    env.kubectl(
        &["apply", "-f", "-"],
        &exemption("MeshExemption", Some("other"), soon, json!({})).to_string(),
    );
    eventually("the new exemption compiled in", SYNC_BOUND, || async {
        lifted(&client).await.contains("\"other\"").then_some(())
    })
    .await;
    // The API server takes about a second to load a changed policy.
    eventually(
        "the API server admits what it covers",
        Duration::from_secs(10),
        || async {
            dry_run(&env, &host_pod("agent-1", "other"))
                .is_ok()
                .then_some(())
        },
    )
    .await;
    let until = soon + SignedDuration::from_secs(10);
    eventually(
        "the expired exemption compiled out",
        Duration::from_secs(40),
        || async {
            let gone = !lifted(&client).await.contains("\"other\"");
            gone.then(Timestamp::now)
        },
    )
    .await;
    let expired_at = Timestamp::now();
    eprintln!(
        "exemption compiled out of the native policy {} after it expired",
        expired_at.duration_since(soon)
    );
    assert!(
        expired_at <= until,
        "compiled out {} after the expiry",
        expired_at.duration_since(soon)
    );
    eventually(
        "the API server refuses again",
        Duration::from_secs(10),
        || async {
            dry_run(&env, &host_pod("agent-1", "other"))
                .is_err()
                .then_some(())
        },
    )
    .await;
    meshgate.terminate();
    let _ = meshgate.wait_exit(Duration::from_secs(30)).await;
}
