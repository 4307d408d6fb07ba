//! Every PromQL query of the Grafana dashboard and every alert rule of the
//! chart, run by a real Prometheus scraping a running `meshgate serve`: each
//! dashboard query must parse and return data, each alert rule must load and
//! evaluate without error, and each metric an alert selects must exist with
//! the labels the alert selects on.
//!
//! The server runs on `--state-from` files (a mesh with a weak namespace, a
//! violating Deployment and a Certificate), so the background audit and the
//! posture metrics have something to say. Prometheus comes from Debian's
//! `prometheus` package (`scripts/install-test-tools.sh`); without it the test
//! skips with a message, unless `MESHGATE_REQUIRE_PROMETHEUS=1` (`.ci/run`).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::prometheus::{tool_present, write_chart_rules, NAMESPACE, RELEASE};
use common::*;
use serde_json::Value;

const STATE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
# An active exemption, so the next-expiry gauge (absent when nothing will
# expire) has a value for its panel and alert.
apiVersion: meshgate.io/v1alpha1
kind: MeshExemption
metadata: {name: legacy-agent, namespace: shop}
spec:
  rules: [no-host-network]
  match: {names: [agent]}
  reason: "node agent reads host interfaces until v4 (SEC-1)"
  expires: "2099-01-01T00:00:00Z"
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      hostNetwork: true
      containers: [{name: app, image: shop:1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: old, namespace: legacy}
spec:
  selector: {matchLabels: {app: old}}
  template:
    metadata: {labels: {app: old}}
    spec:
      containers: [{name: app, image: old:1}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web-tls, namespace: shop}
spec:
  secretName: web-tls
  duration: 1h
  issuerRef: {name: mesh-workload-ca, kind: ClusterIssuer}
status: {notAfter: "2035-01-01T00:00:00Z"}
"#;

/// Every query of the dashboard, with Grafana's variables filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/meshgate/dashboards/meshgate.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", RELEASE);
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &Path, target: std::net::SocketAddr, rules: &Path) -> Prometheus {
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": [{
            "job_name": RELEASE,
            "static_configs": [{
                "targets": [target.to_string()],
                "labels": {"namespace": NAMESPACE, "pod": "meshgate-test"},
            }],
        }],
    });
    let config_path = dir.join("prometheus.yml");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

async fn api(client: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> Option<Value> {
    let response = client.get(url).query(query).send().await.ok()?;
    response.json().await.ok()
}

/// The result of an instant query; panics when Prometheus rejects it.
async fn query(client: &reqwest::Client, prometheus: &Prometheus, expr: &str) -> Vec<Value> {
    let url = format!("{}/api/v1/query", prometheus.url);
    let body = api(client, &url, &[("query", expr)])
        .await
        .unwrap_or_else(|| panic!("no answer from Prometheus for {expr}"));
    assert_eq!(body["status"], "success", "query {expr}: {body}");
    body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Metric names an expression selects (`meshgate_*` and `up`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("meshgate_").or_else(|| rest.find("up{")) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn dashboard_queries_and_alert_rules_work_against_a_real_prometheus() {
    if !tool_present("prometheus", "the dashboard and alerts against it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yaml");
    std::fs::write(&state, STATE).unwrap();
    let server = Server::start(Options::default().args(&["--state-from", state.to_str().unwrap()]));
    // Admission traffic: a denied pod (host network) and allowed ones, so
    // the rate, latency and violation series exist.
    for _ in 0..3 {
        server.review(fixture("pod-create-hostnetwork.json")).await;
        server.review(fixture("pod-create-injected.json")).await;
    }

    let rules = dir.path().join("rules.json");
    let spec = write_chart_rules(&rules);
    let prometheus = start_prometheus(dir.path(), server.metrics_addr, &rules);
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = format!("{}/-/ready", prometheus.url);
    eventually("Prometheus ready", Duration::from_secs(30), || async {
        let response = client.get(&ready).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    // Rates need two scrapes of each series after the reviews.
    eventually("two scrapes", Duration::from_secs(30), || async {
        let samples = query(&client, &prometheus, "count_over_time(up[1m])").await;
        let count = samples.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
        (count >= 3.0).then_some(())
    })
    .await;

    for (title, expr) in dashboard_queries() {
        let result = eventually(
            &format!("data for panel {title:?}: {expr}"),
            Duration::from_secs(20),
            || {
                let (client, prometheus, expr) = (&client, &prometheus, &expr);
                async move {
                    let result = query(client, prometheus, expr).await;
                    (!result.is_empty()).then_some(result)
                }
            },
        )
        .await;
        assert!(!result.is_empty());
    }

    // The posture metrics say what the state files hold.
    let weak = query(
        &client,
        &prometheus,
        "meshgate_namespace_weakness{k8s_namespace=\"legacy\",reason=\"not_enrolled\"}",
    )
    .await;
    let all = query(&client, &prometheus, "meshgate_namespace_weakness").await;
    assert_eq!(
        weak.len(),
        1,
        "legacy is weak because not enrolled: {all:?}"
    );
    let host_network = query(
        &client,
        &prometheus,
        "meshgate_background_violations{rule=\"no-host-network\"}",
    )
    .await;
    assert!(
        !host_network.is_empty(),
        "the shop/web Deployment uses the host network"
    );

    // Every alert rule loads and evaluates cleanly.
    let rules_url = format!("{}/api/v1/rules", prometheus.url);
    let groups = eventually("alert rules evaluated", Duration::from_secs(20), || async {
        let body = api(&client, &rules_url, &[]).await?;
        let groups = body["data"]["groups"].as_array()?.clone();
        let evaluated = groups.iter().all(|g| {
            g["rules"].as_array().is_some_and(|rules| {
                rules.iter().all(|r| {
                    r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
            })
        });
        (!groups.is_empty() && evaluated).then_some(groups)
    })
    .await;
    let expected = spec["groups"][0]["rules"].as_array().unwrap().len();
    let loaded: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert_eq!(loaded.len(), expected, "every alert rule loaded");
    for rule in loaded {
        assert_eq!(
            rule["health"], "ok",
            "alert {}: {}",
            rule["name"], rule["lastError"]
        );
        // The series the alert watches exist under the labels it selects.
        for name in metric_names(rule["query"].as_str().unwrap()) {
            let selector = format!("{name}{{job=\"{RELEASE}\",namespace=\"{NAMESPACE}\"}}");
            let found = query(&client, &prometheus, &selector).await;
            assert!(
                !found.is_empty(),
                "alert {}: no series {selector}",
                rule["name"]
            );
        }
    }
}
