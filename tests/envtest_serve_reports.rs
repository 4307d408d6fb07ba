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
    logged(server, "policy reports written")
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
    // Log lines reach stdout in batches (serve::log), a moment later.
    eventually(
        "the other replica to log its write",
        REPORT_BOUND,
        || async { (writes(&serves[follower]) > 0).then_some(()) },
    )
    .await;
}

const ELECTION_FAILING: &str = "leader election failing: no policy reports from this replica until it works; retrying with backoff (needs the namespace, and get/create/patch on leases there)";
const ELECTION_WORKS: &str = "leader election works again; competing to write policy reports";

fn logged(server: &Server, message: &str) -> usize {
    server
        .log_entries()
        .iter()
        .filter(|v| v["message"] == message)
        .count()
}

/// The Lease's namespace does not exist when `serve` starts (the issue: one
/// error, then no reports for good while `/readyz` said ready). The
/// election retries with backoff, the metrics say it fails, and once the
/// namespace exists the reports appear without a restart.
#[tokio::test]
async fn reports_start_once_the_lease_namespace_exists_without_a_restart() {
    let Some(env) = envtest::start("envtest_serve_reports_lease_namespace") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &pod("agent", true))
        .await
        .unwrap();

    let mut serve = start(&env.kubeconfig());
    eventually("the election to fail", REPORT_BOUND, || async {
        let metrics = serve.metrics().await;
        (metrics.value("meshgate_leader_election_failing", &[]) == 1.0
            && metrics.value("meshgate_leader_election_failures_total", &[]) >= 2.0)
            .then_some(())
    })
    .await;
    // Still no report a few retries later: nothing writes them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(host_network_fails(&client).await.is_none());
    let metrics = serve.metrics().await;
    assert_eq!(metrics.value("meshgate_leader_election_leading", &[]), 0.0);
    let failures = metrics.value("meshgate_leader_election_failures_total", &[]);
    assert_eq!(
        logged(&serve, ELECTION_FAILING),
        1,
        "said once, not per retry"
    );

    envtest::create_namespace(&client, "meshgate", json!({})).await;
    // The longest backoff (30 s, jittered) plus the writer's settling.
    eventually(
        "the shop report after the namespace appeared",
        Duration::from_secs(30) + REPORT_BOUND,
        || async {
            host_network_fails(&client)
                .await
                .filter(|(fails, _)| *fails == 1)
        },
    )
    .await;
    assert!(serve.is_running(), "the same process, not a restart");
    let metrics = serve.metrics().await;
    assert_eq!(metrics.value("meshgate_leader_election_failing", &[]), 0.0);
    assert_eq!(metrics.value("meshgate_leader_election_leading", &[]), 1.0);
    assert!(metrics.value("meshgate_leader_election_failures_total", &[]) >= failures);
    assert_eq!(logged(&serve, ELECTION_FAILING), 1);
    assert_eq!(logged(&serve, ELECTION_WORKS), 1, "recovery logged once");
    eprintln!(
        "lease namespace: {failures} failed attempts before it existed, {} error line",
        logged(&serve, ELECTION_FAILING)
    );
}

/// The envtest kubeconfig, acting as `user` (RBAC applies to it).
fn kubeconfig_as(env: &envtest::Envtest, user: &str) -> std::path::PathBuf {
    let admin = std::fs::read_to_string(env.kubeconfig()).unwrap();
    assert!(admin.contains("\n  user:\n"), "{admin}");
    let path = env.state_dir().join(format!("kubeconfig-{user}"));
    std::fs::write(
        &path,
        admin.replacen("\n  user:\n", &format!("\n  user:\n    as: {user}\n"), 1),
    )
    .unwrap();
    path
}

/// Everything `serve` reads and writes, but of Leases in `meshgate` only
/// `verbs`.
async fn grant(client: &Client, user: &str, lease_verbs: &[&str]) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use kube::api::{Patch, PatchParams};
    let apply = PatchParams::apply("meshgate-test").force();
    let everything_else: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "meshgate-but-leases"},
        "rules": [{"apiGroups": ["", "apps", "batch", "security.istio.io", "networking.istio.io",
                                 "wgpolicyk8s.io", "openreports.io", "cert-manager.io"],
                   "resources": ["*"], "verbs": ["*"]}]
    }))
    .unwrap();
    let subjects = json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]);
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "meshgate-but-leases"},
        "roleRef": {"kind": "ClusterRole", "name": "meshgate-but-leases", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": subjects
    }))
    .unwrap();
    let leases: Role = serde_json::from_value(json!({
        "metadata": {"name": "leases", "namespace": "meshgate"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": lease_verbs}]
    }))
    .unwrap();
    let lease_binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "leases", "namespace": "meshgate"},
        "roleRef": {"kind": "Role", "name": "leases", "apiGroup": "rbac.authorization.k8s.io"},
        "subjects": subjects
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch(
            "meshgate-but-leases",
            &apply,
            &Patch::Apply(&everything_else),
        )
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch("meshgate-but-leases", &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
    Api::<Role>::namespaced(client.clone(), "meshgate")
        .patch("leases", &apply, &Patch::Apply(&leases))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), "meshgate")
        .patch("leases", &apply, &Patch::Apply(&lease_binding))
        .await
        .unwrap();
}

/// RBAC lets `serve` create the Lease but not take it (no `patch`): every
/// attempt fails after a successful start, which must neither stop the
/// retries nor log a recovery and a failure per retry. Once the Role allows
/// it, the reports appear without a restart.
#[tokio::test]
async fn reports_start_once_rbac_lets_the_lease_be_taken_without_a_restart() {
    let Some(env) = envtest::start("envtest_serve_reports_lease_rbac") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "meshgate", json!({})).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &pod("agent", true))
        .await
        .unwrap();
    let user = "meshgate-lease-test";
    grant(&client, user, &["get", "create"]).await;

    let mut serve = Server::start(Options::default().kubeconfig(kubeconfig_as(&env, user)));
    eventually("a few refused attempts", REPORT_BOUND, || async {
        let metrics = serve.metrics().await;
        (metrics.value("meshgate_leader_election_failures_total", &[]) >= 3.0).then_some(())
    })
    .await;
    assert!(host_network_fails(&client).await.is_none());
    let metrics = serve.metrics().await;
    assert_eq!(metrics.value("meshgate_leader_election_failing", &[]), 1.0);
    assert_eq!(
        logged(&serve, ELECTION_FAILING),
        1,
        "said once, not per retry"
    );
    assert_eq!(
        logged(&serve, ELECTION_WORKS),
        0,
        "a Lease created but not taken is no recovery"
    );
    let failing = serve
        .log_entries()
        .into_iter()
        .find(|v| v["message"] == ELECTION_FAILING)
        .unwrap();
    assert!(
        failing["error"].as_str().unwrap().contains("forbidden"),
        "{failing}"
    );
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), "meshgate");
    let lease = leases.get_opt("meshgate-reports").await.unwrap();
    assert!(lease.is_some(), "created, just not taken");

    grant(&client, user, &["get", "create", "patch"]).await;
    eventually(
        "the shop report once the Lease can be taken",
        Duration::from_secs(30) + REPORT_BOUND,
        || async {
            host_network_fails(&client)
                .await
                .filter(|(fails, _)| *fails == 1)
        },
    )
    .await;
    assert!(serve.is_running(), "the same process, not a restart");
    let metrics = serve.metrics().await;
    assert_eq!(metrics.value("meshgate_leader_election_failing", &[]), 0.0);
    assert_eq!(logged(&serve, ELECTION_FAILING), 1);
    assert_eq!(logged(&serve, ELECTION_WORKS), 1, "recovery logged once");
}
