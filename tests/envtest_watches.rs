//! `meshgate serve` opens exactly one watch per kind: the posture index and
//! the background audit are fed by the same watch (issue 20 §1). The API
//! server runs with an audit policy that logs every watch request, and the
//! test counts the ones meshgate made, by resource.

mod common;
mod envtest;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use common::{eventually, Options, Server};
use meshgate::kinds::Kind;

const POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [ResponseStarted, ResponseComplete]
rules:
- level: Metadata
  verbs: [watch]
- level: None
";

/// Watch requests by the test's (and meshgate's) user, by `group/resource`.
fn watches(log: &std::path::Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for event in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        if event["verb"] != "watch" || event["user"]["username"] != "e2e-admin" {
            continue;
        }
        let object = &event["objectRef"];
        let group = object["apiGroup"].as_str().unwrap_or("");
        let resource = object["resource"].as_str().unwrap_or("");
        *counts.entry(format!("{group}/{resource}")).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn serve_opens_exactly_one_watch_per_kind() {
    let audit = tempfile::tempdir().unwrap();
    let policy = audit.path().join("policy.yaml");
    let log = audit.path().join("audit.log");
    std::fs::write(&policy, POLICY).unwrap();
    // Read by envtest's start.sh; this test file is its own process and
    // starts one API server.
    std::env::set_var(
        "EXTRA_APISERVER_ARGS",
        format!(
            "--audit-policy-file={} --audit-log-path={}",
            policy.display(),
            log.display()
        ),
    );
    let Some(env) = envtest::start("serve_opens_exactly_one_watch_per_kind") else {
        return;
    };
    let client = env.client().await;
    envtest::install_istio_crds(&client).await;
    envtest::install_exemption_crds(&client).await;
    envtest::create_namespace(&client, "shop", json!({"istio-injection": "enabled"})).await;

    let meshgate = Server::start(Options::default().kubeconfig(env.kubeconfig()));
    eventually(
        "the first complete judgement",
        Duration::from_secs(60),
        || async {
            let metrics = meshgate.metrics().await;
            (metrics.value("meshgate_background_audit_complete", &[]) == 1.0).then_some(())
        },
    )
    .await;
    // Every watch is open once the audit is complete; a second one would
    // come within the same moment, so give it room.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let counts = watches(&log);
    let expected: BTreeMap<String, usize> = meshgate::feeds::watched(true)
        // No cert-manager here: its API is probed, not watched.
        .filter(|kind| *kind != Kind::Certificate)
        .map(|kind| (format!("{}/{}", kind.row().group, kind.row().plural), 1))
        .collect();
    assert!(expected.len() >= 13, "{expected:?}");
    assert_eq!(counts, expected, "watch requests by resource");
    eprintln!("watch requests: {counts:?}");
}
