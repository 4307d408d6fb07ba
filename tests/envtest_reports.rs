//! PolicyReports against a real kube-apiserver: the writer creates one
//! report per object, updates it in place only when its content changes,
//! writes nothing for an unchanged pass, deletes the reports of objects no
//! longer judged; of two electors on one Lease one leads, and the other
//! takes over once it stops.

mod common;
mod envtest;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::Client;
use meshgate::background::ObjectRef;
use meshgate::leader::{ElectionMetrics, Elector, Lease};
use meshgate::report::writer::{Reconciled, Writer};
use meshgate::report::{build, Flavor, ObjectVerdict, Outcome, RuleResult};
use meshgate::rules::RuleId;
use meshgate::subject::Kind;

fn verdict(namespace: &str, kind: Kind, name: &str, outcome: Outcome) -> ObjectVerdict {
    let rule = if kind == Kind::Namespace {
        RuleId::NamespaceMeshEnrolled
    } else {
        RuleId::SidecarRequired
    };
    ObjectVerdict {
        reference: ObjectRef {
            api_version: "v1".into(),
            kind,
            namespace: namespace.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        },
        results: vec![RuleResult {
            rule,
            outcome,
            message: format!("{name}: {}", outcome.as_str()),
            fix: "add the sidecar".into(),
            exemption: None,
        }],
    }
}

fn policy_reports(client: &Client, cluster: bool) -> Api<DynamicObject> {
    let (kind, plural) = Flavor::Wgpolicy.kind(cluster);
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn namespaced_reports(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("wgpolicyk8s.io", "v1alpha2", "PolicyReport");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "policyreports");
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Every stored report: (namespace, name, resource version), sorted.
async fn stored(client: &Client) -> Vec<(Option<String>, String, String)> {
    let mut found = Vec::new();
    for cluster in [true, false] {
        for object in policy_reports(client, cluster)
            .list(&ListParams::default())
            .await
            .unwrap()
        {
            found.push((
                object.metadata.namespace.clone(),
                object.metadata.name.clone().unwrap(),
                object.metadata.resource_version.clone().unwrap(),
            ));
        }
    }
    found.sort();
    found
}

fn build(verdicts: &[ObjectVerdict], seconds: i64) -> Vec<meshgate::report::Report> {
    let now = meshgate::report::types::Timestamp { seconds, nanos: 0 };
    build::reports(verdicts, Flavor::Wgpolicy, now)
}

#[tokio::test]
async fn writer_creates_updates_in_place_and_deletes_reports() {
    let Some(env) = envtest::start("writer_creates_updates_in_place_and_deletes_reports") else {
        return;
    };
    let client = env.client().await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    for ns in ["shop", "pay"] {
        envtest::create_namespace(&client, ns, serde_json::json!({})).await;
    }
    let writer = Writer::new(client.clone(), Flavor::Wgpolicy);
    let mut verdicts = vec![
        verdict("", Kind::Namespace, "shop", Outcome::Pass),
        verdict("shop", Kind::Pod, "web", Outcome::Fail),
        verdict("shop", Kind::Pod, "db", Outcome::Pass),
        verdict("pay", Kind::Pod, "api", Outcome::Pass),
    ];

    let done = writer.reconcile(&build(&verdicts, 100)).await.unwrap();
    assert_eq!(
        done,
        Reconciled {
            created: 4,
            ..Reconciled::default()
        }
    );
    let first = stored(&client).await;
    let names: Vec<_> = first
        .iter()
        .map(|r| (r.0.as_deref(), r.1.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            (None, "meshgate-uid-shop"),
            (Some("pay"), "meshgate-uid-api"),
            (Some("shop"), "meshgate-uid-db"),
            (Some("shop"), "meshgate-uid-web"),
        ]
    );
    let web = namespaced_reports(&client, "shop")
        .get("meshgate-uid-web")
        .await
        .unwrap();
    assert_eq!(web.data["summary"]["fail"], 1);
    assert_eq!(web.data["scope"]["kind"], "Pod");
    assert_eq!(web.data["scope"]["name"], "web");
    assert_eq!(web.data["scope"]["uid"], "uid-web");
    let results = web.data["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one result per rule");
    assert_eq!(results[0]["policy"], "sidecar-required");
    assert_eq!(
        results[0]["resources"],
        serde_json::json!([web.data["scope"]])
    );
    assert_eq!(results[0]["properties"]["fix"], "add the sidecar");
    assert_eq!(
        web.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
        "meshgate"
    );
    let owner = &web.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("Pod", "web", "uid-web")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(false), Some(false))
    );

    // Same content, later time: nothing is written, listed or not.
    let done = writer.reconcile(&build(&verdicts, 200)).await.unwrap();
    assert_eq!(
        done,
        Reconciled {
            unchanged: 4,
            ..Reconciled::default()
        }
    );
    let mut known = writer.list().await.unwrap();
    assert_eq!(known.len(), 4);
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 250))
        .await
        .unwrap();
    assert!(!done.wrote(), "{done:?}");
    assert_eq!(stored(&client).await, first);

    // web fixed: its report is updated in place, the rest untouched.
    verdicts[1] = verdict("shop", Kind::Pod, "web", Outcome::Pass);
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 300))
        .await
        .unwrap();
    assert_eq!(
        done,
        Reconciled {
            updated: 1,
            unchanged: 3,
            ..Reconciled::default()
        }
    );
    let after = namespaced_reports(&client, "shop")
        .get("meshgate-uid-web")
        .await
        .unwrap();
    assert_eq!(
        after.metadata.uid, web.metadata.uid,
        "updated, not recreated"
    );
    assert_eq!(after.data["summary"]["pass"], 1);
    assert_eq!(after.data["summary"]["fail"], 0);

    // api deleted: its report goes. db deleted and its report already gone
    // (the garbage collector follows the owner reference): no error.
    namespaced_reports(&client, "shop")
        .delete("meshgate-uid-db", &Default::default())
        .await
        .unwrap();
    verdicts.retain(|v| v.reference.name != "api" && v.reference.name != "db");
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 400))
        .await
        .unwrap();
    assert_eq!(
        done,
        Reconciled {
            unchanged: 2,
            deleted: 2,
            ..Reconciled::default()
        }
    );
    let names: Vec<_> = stored(&client).await.into_iter().map(|r| r.1).collect();
    assert_eq!(names, ["meshgate-uid-shop", "meshgate-uid-web"]);
}

/// A report changed behind the writer's back: the replace with the
/// remembered resource version conflicts, and a listing reconcile repairs it.
#[tokio::test]
async fn a_report_changed_behind_the_writer_is_repaired_after_a_listing() {
    let Some(env) = envtest::start("a_report_changed_behind_the_writer_is_repaired") else {
        return;
    };
    let client = env.client().await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "shop", serde_json::json!({})).await;
    let writer = Writer::new(client.clone(), Flavor::Wgpolicy);
    let mut verdicts = vec![verdict("shop", Kind::Pod, "web", Outcome::Fail)];
    let mut known = writer.list().await.unwrap();
    writer
        .reconcile_known(&mut known, &build(&verdicts, 100))
        .await
        .unwrap();
    let reports = namespaced_reports(&client, "shop");
    let mut edited = reports.get("meshgate-uid-web").await.unwrap();
    edited.data["summary"]["fail"] = 7.into();
    reports
        .replace("meshgate-uid-web", &PostParams::default(), &edited)
        .await
        .unwrap();

    verdicts[0] = verdict("shop", Kind::Pod, "web", Outcome::Pass);
    let error = writer
        .reconcile_known(&mut known, &build(&verdicts, 200))
        .await
        .expect_err("a stale resource version conflicts");
    assert!(
        error.to_string().contains("409") || error.to_string().contains("modified"),
        "{error}"
    );
    let done = writer.reconcile(&build(&verdicts, 300)).await.unwrap();
    assert_eq!(done.updated, 1, "{done:?}");
    let repaired = reports.get("meshgate-uid-web").await.unwrap();
    assert_eq!(repaired.data["summary"]["pass"], 1);
    assert_eq!(repaired.data["summary"]["fail"], 0);
}

async fn wait_for(what: &str, bound: Duration, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < bound, "{what} within {bound:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn of_two_electors_one_leads_and_the_other_takes_over_when_it_stops() {
    let Some(env) =
        envtest::start("of_two_electors_one_leads_and_the_other_takes_over_when_it_stops")
    else {
        return;
    };
    let client = env.client().await;
    envtest::create_namespace(&client, "meshgate", serde_json::json!({})).await;
    let lease_duration = Duration::from_secs(6);
    let start = |identity: &'static str| {
        let client = client.clone();
        async move {
            let lease = Lease {
                namespace: "meshgate".into(),
                name: "meshgate-reports".into(),
                identity: identity.into(),
                duration: lease_duration,
                purpose: "policy reports",
            };
            Elector::spawn(client, lease, ElectionMetrics::default())
        }
    };
    let (a, b) = tokio::join!(start("replica-a"), start("replica-b"));
    wait_for("a leader", lease_duration * 2, || {
        a.is_leader() || b.is_leader()
    })
    .await;
    // Both keep renewing or waiting for a while: never two leaders.
    for _ in 0..20 {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    leader.stop().await;
    // Within the lease duration (and a moment for a loaded machine).
    let took = wait_for(
        "the follower to take over",
        lease_duration + Duration::from_secs(2),
        || follower.is_leader(),
    )
    .await;
    eprintln!("takeover after {took:?}");
    follower.stop().await;
}

/// `meshgate audit --output policyreport|openreports` on fixture manifests:
/// one report per object, each result about that object only, the same
/// names on every run; the YAML is accepted by a real API server with the
/// chart's (upstream) CRDs installed (server-side dry run, so the CRD schema
/// validates it), and applies for real too.
#[tokio::test]
async fn audit_policyreport_output_applies_with_kubectl() {
    let Some(env) = envtest::start("audit_policyreport_output_applies_with_kubectl") else {
        return;
    };
    let client = env.client().await;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let namespaces = format!("{fixtures}state/namespaces.yaml");
    let workloads = format!("{fixtures}workloads");
    for (output, crds, kinds) in [
        (
            "policyreport",
            "wgpolicyk8s.yaml",
            ("ClusterPolicyReport", "PolicyReport"),
        ),
        (
            "openreports",
            "openreports.yaml",
            ("ClusterReport", "Report"),
        ),
    ] {
        envtest::install_report_crds(&client, crds).await;
        let audit = || {
            let run = common::run_cli(
                &["audit", "-o", output, &namespaces, &workloads],
                Duration::from_secs(60),
            );
            assert!(run.status.code().is_some_and(|c| c <= 1), "{}", run.stderr);
            run.stdout
        };
        let yaml = audit();
        let reports: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
            .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
            .collect();
        let mut scopes = std::collections::BTreeSet::new();
        for report in &reports {
            let scope = &report["scope"];
            assert!(
                report["kind"] == kinds.0 || report["kind"] == kinds.1,
                "{report}"
            );
            assert!(
                scopes.insert(scope.to_string()),
                "one report per object: {report}"
            );
            for result in report["results"].as_array().unwrap() {
                assert_eq!(result["resources"], serde_json::json!([scope]), "{report}");
            }
        }
        assert!(reports.len() > 5, "{yaml}");
        assert!(reports.iter().any(|r| r["kind"] == kinds.0), "{yaml}");
        let names = |yaml: &str| -> Vec<String> {
            yaml.lines()
                .filter(|l| l.starts_with("  name: meshgate-"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(names(&yaml), names(&audit()), "deterministic names");

        // The reports' namespaces must exist for namespaced objects.
        for report in &reports {
            if let Some(ns) = report["metadata"]["namespace"].as_str() {
                let _ = Api::<Namespace>::all(client.clone())
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))
                            .unwrap(),
                    )
                    .await;
            }
        }
        env.kubectl(&["apply", "--dry-run=server", "-f", "-"], &yaml);
        let applied = env.kubectl(&["apply", "-f", "-"], &yaml);
        assert_eq!(
            applied.matches(" created").count(),
            reports.len(),
            "{applied}"
        );
    }
}

/// A write the API server refuses (here: a report for a namespace that does
/// not exist) does not stop the others; the error is returned once all were
/// tried, so the writer retries.
#[tokio::test]
async fn a_refused_write_does_not_stop_the_others() {
    let Some(env) = envtest::start("a_refused_write_does_not_stop_the_others") else {
        return;
    };
    let client = env.client().await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "shop", serde_json::json!({})).await;
    let verdicts = [
        verdict("no-such-namespace", Kind::Pod, "api", Outcome::Fail),
        verdict("shop", Kind::Pod, "web", Outcome::Fail),
    ];
    let now = meshgate::report::types::Timestamp {
        seconds: 100,
        nanos: 0,
    };
    let reports = build::reports(&verdicts, Flavor::Wgpolicy, now);
    let error = Writer::new(client.clone(), Flavor::Wgpolicy)
        .reconcile(&reports)
        .await
        .expect_err("the report of a missing namespace is refused");
    assert!(error.to_string().contains("no-such-namespace"), "{error}");
    let web = namespaced_reports(&client, "shop")
        .get("meshgate-uid-web")
        .await
        .unwrap();
    assert_eq!(web.data["summary"]["fail"], 1);
}

/// Issue 23 §5 at scale: one report per object for 10,000 objects (100
/// namespaces of 99 pods, and the namespaces) written to a real API server,
/// then an unchanged reconcile (listing, and from what the writer knows),
/// then one object's change. A benchmark, not a timed test: run it on
/// purpose and read the figures.
///
///   MESHGATE_REQUIRE_ENVTEST=1 cargo test --test envtest_reports \
///     -- --ignored --nocapture reports_for_ten_thousand_objects
///
/// `MESHGATE_SCALE_OBJECTS` changes the count.
#[tokio::test]
#[ignore = "benchmark: minutes of API-server writes"]
async fn reports_for_ten_thousand_objects() {
    let Some(env) = envtest::start("reports_for_ten_thousand_objects") else {
        return;
    };
    let objects: usize = std::env::var("MESHGATE_SCALE_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let client = env.client().await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    let namespaces = objects.div_ceil(100);
    let mut verdicts = Vec::new();
    for i in 0..namespaces {
        let ns = format!("ns-{i}");
        envtest::create_namespace(&client, &ns, serde_json::json!({})).await;
        verdicts.push(verdict("", Kind::Namespace, &ns, Outcome::Pass));
        for pod in 0..99 {
            let outcome = if pod == 0 {
                Outcome::Fail
            } else {
                Outcome::Pass
            };
            let mut v = verdict(&ns, Kind::Pod, &format!("web-{pod}"), outcome);
            v.reference.uid = format!("uid-{ns}-web-{pod}");
            verdicts.push(v);
        }
    }
    verdicts.truncate(objects);
    let writer = Writer::new(client.clone(), Flavor::Wgpolicy);

    let started = Instant::now();
    let reports = build(&verdicts, 100);
    let built = started.elapsed();
    let done = writer.reconcile(&reports).await.unwrap();
    let written = started.elapsed();
    assert_eq!(done.created, verdicts.len(), "{done:?}");
    println!(
        "{} reports for {} objects: built in {built:.1?}, created in {written:.1?} ({:.0}/s)",
        reports.len(),
        verdicts.len(),
        reports.len() as f64 / written.as_secs_f64()
    );

    let started = Instant::now();
    let mut known = writer.list().await.unwrap();
    let listed = started.elapsed();
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 200))
        .await
        .unwrap();
    assert_eq!(done.unchanged, verdicts.len(), "{done:?}");
    println!(
        "unchanged reconcile: list {listed:.1?}, list and compare {:.1?}",
        started.elapsed()
    );
    let started = Instant::now();
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 300))
        .await
        .unwrap();
    assert!(!done.wrote(), "{done:?}");
    println!(
        "unchanged reconcile from what the writer knows (build and compare, no request): {:.1?}",
        started.elapsed()
    );

    verdicts[1] = verdict("ns-0", Kind::Pod, "web-0", Outcome::Pass);
    verdicts[1].reference.uid = "uid-ns-0-web-0".into();
    let started = Instant::now();
    let done = writer
        .reconcile_known(&mut known, &build(&verdicts, 400))
        .await
        .unwrap();
    assert_eq!(done.updated, 1, "{done:?}");
    println!("one object changed: {:.1?}", started.elapsed());
}

/// kube-controller-manager running only the garbage collector against
/// `env` (from ../shared/cluster, unpacked there or here); stopped on drop.
struct GarbageCollector(std::process::Child);

impl GarbageCollector {
    fn start(env: &envtest::Envtest) -> Option<GarbageCollector> {
        let unpacked = std::fs::read_dir("/var/tmp/shared-cluster")
            .into_iter()
            .flatten()
            .flatten()
            .map(|dir| dir.path().join("kube-controller-manager"))
            .find(|binary| binary.is_file());
        let binary = match unpacked {
            Some(binary) => binary,
            None => {
                let packed = envtest::envtest_dir()?
                    .parent()?
                    .join("cluster/kube-controller-manager.xz");
                let binary = env.state_dir().join("kube-controller-manager");
                let file = std::fs::File::create(&binary).ok()?;
                let unpacked = std::process::Command::new("xz")
                    .arg("-dc")
                    .arg(&packed)
                    .stdout(file)
                    .status()
                    .ok()?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).ok()?;
                unpacked.success().then_some(binary)?
            }
        };
        let log = std::fs::File::create(env.state_dir().join("controller-manager.log")).ok()?;
        let child = std::process::Command::new(binary)
            .arg(format!("--kubeconfig={}", env.kubeconfig().display()))
            .args([
                "--secure-port=0",
                "--leader-elect=false",
                "--controllers=garbagecollector",
            ])
            .stdout(log.try_clone().ok()?)
            .stderr(log)
            .spawn()
            .ok()?;
        Some(GarbageCollector(child))
    }
}

impl Drop for GarbageCollector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The owner reference works: with meshgate not running, Kubernetes'
/// garbage collector deletes an object's report when the object goes.
#[tokio::test]
async fn the_garbage_collector_deletes_a_report_with_its_object() {
    use k8s_openapi::api::apps::v1::Deployment;

    let Some(env) = envtest::start("the_garbage_collector_deletes_a_report_with_its_object") else {
        return;
    };
    let Some(_collector) = GarbageCollector::start(&env) else {
        eprintln!("SKIPPED: no kube-controller-manager from ../shared/cluster");
        return;
    };
    let client = env.client().await;
    envtest::install_report_crds(&client, "wgpolicyk8s.yaml").await;
    envtest::create_namespace(&client, "shop", serde_json::json!({})).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), "shop");
    let web: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
    }))
    .unwrap();
    let web = deployments
        .create(&PostParams::default(), &web)
        .await
        .unwrap();
    let uid = web.metadata.uid.unwrap();
    let mut verdict = verdict("shop", Kind::Deployment, "web", Outcome::Fail);
    verdict.reference.api_version = "apps/v1".into();
    verdict.reference.uid = uid.clone();
    let writer = Writer::new(client.clone(), Flavor::Wgpolicy);
    let done = writer.reconcile(&build(&[verdict], 100)).await.unwrap();
    assert_eq!(done.created, 1);
    let reports = namespaced_reports(&client, "shop");
    let name = format!("meshgate-{uid}");
    assert!(reports.get_opt(&name).await.unwrap().is_some());

    deployments
        .delete("web", &Default::default())
        .await
        .unwrap();
    common::eventually(
        "the garbage collector to delete the report",
        Duration::from_secs(90),
        || async {
            reports
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
}
