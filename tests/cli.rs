//! `meshgate audit` through the built binary, on real files and stdin.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{run_cli, run_cli_with_input, Exited};

/// An audit of a few files takes milliseconds; this only catches a hang.
const BOUND: Duration = Duration::from_secs(30);

fn meshgate(args: &[&str]) -> Exited {
    run_cli(args, BOUND)
}

fn with_stdin(args: &[&str], input: &str) -> Exited {
    run_cli_with_input(args, &[], input.as_bytes(), BOUND)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const SHOP_NS: &str = concat!(
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: shop}\nspec: {}\n",
);
const CLEAN_DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      serviceAccountName: web\n      containers: [{name: web, image: nginx}]\n";

#[test]
fn bundled_examples_report_grouped_findings_with_fixes_and_exit_1() {
    let o = meshgate(&[
        "audit",
        "--config",
        "examples/meshgate.yaml",
        "examples/manifests",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    let out = o.stdout;
    assert!(
        out.contains("Deployment shop/payments (examples/manifests/shop.yaml:"),
        "{out}"
    );
    assert!(out.contains("DENY [no-interception-bypass]"), "{out}");
    assert!(out.contains("WARN [dedicated-service-account]"), "{out}");
    assert!(
        out.contains("fix: label namespace \"legacy\" with istio-injection=enabled"),
        "{out}"
    );
    // The exempted node agent and the clean frontend have no findings.
    assert!(!out.contains("node-exporter ("), "{out}");
    assert!(!out.contains("shop/frontend"), "{out}");
    assert!(out.contains("DENY [strict-mtls-required] would accept plaintext: port 8081 is PERMISSIVE (set by PeerAuthentication shop/payments-legacy-port)"), "{out}");
    // The group header names the object; its findings do not repeat it.
    assert_eq!(
        out.to_lowercase()
            .matches("deployment shop/payments ")
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("Namespace legacy (examples/manifests/namespaces.yaml:"),
        "{out}"
    );
    // The per-namespace posture summary.
    assert!(out.contains("Namespace posture:"), "{out}");
    assert!(out.contains("legacy      WEAK enrolled: no"), "{out}");
    assert!(out.contains("shop        ok   enrolled: sidecar mTLS: STRICT (set by PeerAuthentication istio-system/default)  deny-by-default: AuthorizationPolicy shop/allow-nothing"), "{out}");
    assert!(
        out.contains(
            "14 objects checked: 9 enforce-level findings, 1 audit-level findings, 2 exempted"
        ),
        "{out}"
    );
}

#[test]
fn clean_input_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "ok.yaml",
        &format!("{SHOP_NS}---\n{CLEAN_DEPLOYMENT}"),
    );
    let o = meshgate(&["audit", &file]);
    assert_eq!(o.status.code(), Some(0), "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("4 objects checked: 0 enforce-level findings"),
        "{}",
        o.stdout
    );
}

#[test]
fn audit_level_findings_alone_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "c.yaml", "mode: audit\n");
    let file = write(dir.path(), "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec:\n  hostNetwork: true\n  containers: [{name: c, image: x}]\n");
    let o = meshgate(&["audit", "--config", &config, &file]);
    assert_eq!(o.status.code(), Some(0), "{}", o.stdout);
    assert!(o.stdout.contains("WARN [no-host-network]"));
}

#[test]
fn json_output_has_the_documented_shape() {
    let o = meshgate(&[
        "audit",
        "--output",
        "json",
        "--config",
        "examples/meshgate.yaml",
        "examples/manifests",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 10);
    let f = findings
        .iter()
        .find(|f| f["rule"] == "dedicated-service-account")
        .unwrap();
    assert_eq!(f["mode"], "audit");
    assert_eq!(f["apiVersion"], "apps/v1");
    assert_eq!(f["kind"], "Deployment");
    assert_eq!(f["namespace"], "shop");
    assert_eq!(f["name"], "payments");
    assert_eq!(f["file"], "examples/manifests/shop.yaml");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains("no serviceAccountName"));
    assert_eq!(v["summary"]["enforce"], 9);
    assert_eq!(v["summary"]["audit"], 1);
    assert_eq!(v["summary"]["exempted"], 2);
    assert_eq!(v["summary"]["objectsChecked"], 14);
    assert_eq!(v["summary"]["weakNamespaces"], 1);
    let legacy = v["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "legacy")
        .unwrap();
    assert_eq!(legacy["enrolled"], "no");
    assert_eq!(legacy["mtls"], "STRICT");
    assert_eq!(
        legacy["mtlsDecidedBy"],
        "PeerAuthentication istio-system/default"
    );
    assert_eq!(legacy["denyByDefault"], Value::Null);
    assert_eq!(legacy["weak"], true);
}

#[test]
fn sarif_output_is_sarif_2_1_0() {
    let o = meshgate(&["audit", "--output", "sarif", "examples/manifests"]);
    let v: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(v["version"], "2.1.0");
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "meshgate");
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"sidecar-required"));
    let result = &run["results"][0];
    let index = result["ruleIndex"].as_u64().unwrap() as usize;
    assert_eq!(rules[index], result["ruleId"].as_str().unwrap());
    assert!(matches!(
        result["level"].as_str(),
        Some("error" | "warning")
    ));
    let location = &result["locations"][0]["physicalLocation"];
    assert!(location["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .starts_with("examples/manifests/"));
    assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
}

#[test]
fn reads_stdin_json_and_lists_with_default_namespace_flag() {
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team","labels":{"istio-injection":"enabled"}}},
        {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"serviceAccountName":"p","containers":[{"name":"c","image":"x"}]}}]}"#;
    // Injected pods carry istio-proxy; this one does not.
    let o = with_stdin(
        &["audit", "--namespace", "team", "--output", "json", "-"],
        list,
    );
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["findings"][0]["namespace"], "team");
    assert_eq!(v["findings"][0]["file"], "-");
    assert!(v["findings"][0]["message"]
        .as_str()
        .unwrap()
        .contains("has no istio-proxy sidecar"));
}

#[test]
fn workload_in_a_namespace_missing_from_the_input_is_unverifiable() {
    let o = with_stdin(&["audit", "-"], CLEAN_DEPLOYMENT);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stdout
            .contains("cannot be verified: namespace \"shop\" is not known"),
        "{}",
        o.stdout
    );
}

#[test]
fn directories_are_read_recursively_yaml_and_json_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    write(dir.path(), "ns.yaml", SHOP_NS);
    write(&dir.path().join("a/b"), "deep.yml", "apiVersion: v1\nkind: Pod\nmetadata: {name: deep, namespace: shop}\nspec:\n  hostNetwork: true\n  serviceAccountName: d\n  containers: [{name: c, image: x}]\n");
    write(dir.path(), "notes.txt", "not: [yaml");
    let o = meshgate(&["audit", "--output", "json", dir.path().to_str().unwrap()]);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    let rules: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert!(rules.contains(&"no-host-network"), "{rules:?}");
}

#[test]
fn parse_errors_exit_2_naming_file_and_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.yaml",
        &format!("{SHOP_NS}---\nkind: [oops\n"),
    );
    let o = meshgate(&["audit", &file]);
    assert_eq!(o.status.code(), Some(2));
    let err = o.stderr;
    assert!(err.contains("broken.yaml, document 4"), "{err}");

    let bad_shape = write(
        dir.path(),
        "shape.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: oops}\n",
    );
    let o = meshgate(&["audit", &bad_shape]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        o.stderr
            .contains("shape.yaml, document 1: cannot decode the Pod"),
        "{}",
        o.stderr
    );

    let o = meshgate(&["audit", "/no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("/no/such/file.yaml"));
}

#[test]
fn usage_and_config_errors_exit_2() {
    let o = meshgate(&["audit"]);
    assert_eq!(o.status.code(), Some(2));
    let o = meshgate(&["audit", "--output", "xml", "examples/manifests"]);
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "c.yaml",
        "exemptions:\n- rules: [no-host-network]\n  namespace: shop\n",
    );
    let o = meshgate(&["audit", "--config", &config, "examples/manifests"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stderr.contains("exemptions[0].reason"), "{}", o.stderr);
}
