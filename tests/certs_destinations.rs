//! `short-lived-certificates` scope and `destination-rule-mtls` "in the mesh"
//! through the real HTTPS server and the real `meshgate audit` binary.
//! Server state: tests/fixtures/state (`bookinfo` enrolled, `legacy` not,
//! ServiceEntries `bookinfo/ratings-vm` MESH_INTERNAL and `bookinfo/orders-db`
//! MESH_EXTERNAL).

mod common;

use std::ffi::OsString;

use common::*;
use serde_json::{json, Value};

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

fn assert_allowed(response: &Value, what: &str) {
    assert_eq!(response["allowed"], true, "{what}: {response}");
    assert!(response["warnings"].is_null(), "{what}: {response}");
}

fn assert_denied_with(response: &Value, what: &str, text: &str) {
    assert_eq!(response["allowed"], false, "{what}: {response}");
    assert!(
        message(response).contains(text),
        "{what}: {text}\n{response}"
    );
}

/// The captured Certificate review with `spec` in place of the captured one.
fn certificate(name: &str, spec: Value) -> Vec<u8> {
    edit(&fixture("certificate-create-long.json"), |v| {
        v["request"]["name"] = name.into();
        v["request"]["object"]["metadata"]["name"] = name.into();
        v["request"]["object"]["spec"] = spec;
    })
}

/// A Let's Encrypt ingress certificate as cert-manager's ingress-shim writes
/// it: no duration (ACME decides, 90 days) and an ACME ClusterIssuer.
fn letsencrypt_ingress() -> Vec<u8> {
    certificate(
        "bookinfo-example-com-tls",
        json!({
            "dnsNames": ["bookinfo.example.com"],
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "letsencrypt-prod"},
            "secretName": "bookinfo-example-com-tls",
            "usages": ["digital signature", "key encipherment"]
        }),
    )
}

/// The captured workload certificate without its `duration`.
fn workload_without_duration() -> Vec<u8> {
    edit(&fixture("certificate-create-long.json"), |v| {
        let spec = v["request"]["object"]["spec"].as_object_mut().unwrap();
        spec.remove("duration");
    })
}

/// The captured DestinationRule review (namespace bookinfo) with `spec`.
fn destination_rule(name: &str, spec: Value) -> Vec<u8> {
    edit(&fixture("destinationrule-create-disable.json"), |v| {
        v["request"]["name"] = name.into();
        v["request"]["object"]["metadata"]["name"] = name.into();
        v["request"]["object"]["spec"] = spec;
    })
}

#[tokio::test]
async fn only_workload_certificates_are_judged() {
    let server = Server::start(Options::default());

    let response = server.review(letsencrypt_ingress()).await;
    assert_allowed(&response, "ACME ingress certificate without duration");

    // The same certificate from the mesh CA is a workload certificate.
    let response = server.review(workload_without_duration()).await;
    assert_denied_with(
        &response,
        "workload certificate without duration",
        "meshgate denied certificate bookinfo/productpage-workload: [short-lived-certificates] sets no duration, so cert-manager issues it for 90 days (2160h), over the 24h maximum",
    );

    // Another issuer, but a SPIFFE identity of the mesh: still in scope.
    let response = server
        .review(certificate(
            "ratings-workload",
            json!({
                "duration": "8760h", "renewBefore": "1h", "secretName": "ratings-workload-tls",
                "uris": ["spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings"],
                "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "vault-pki"}
            }),
        ))
        .await;
    assert_denied_with(
        &response,
        "SPIFFE certificate",
        "meshgate denied certificate bookinfo/ratings-workload: [short-lived-certificates] is valid for 8760h",
    );
}

#[tokio::test]
async fn no_duration_passes_when_max_duration_allows_90_days() {
    let server = Server::start(Options::default().config("certificates: {maxDuration: 2400h}\n"));
    let response = server.review(workload_without_duration()).await;
    assert_eq!(response["allowed"], true, "{response}");
    // Only the advice about its wildcard name is left.
    let warnings = response["warnings"].to_string();
    assert!(
        warnings.contains("wildcard *.bookinfo.svc.cluster.local"),
        "{response}"
    );
    assert!(!warnings.contains("duration"), "{response}");
    // The captured 8760h certificate is still too long.
    let response = server.review(fixture("certificate-create-long.json")).await;
    assert_denied_with(
        &response,
        "8760h",
        "is valid for 8760h, over the 2400h maximum",
    );
}

#[tokio::test]
async fn configured_issuer_refs_replace_the_default_scope() {
    let server = Server::start(
        Options::default()
            .config("certificates:\n  issuerRefs:\n  - {name: mesh-ca, kind: ClusterIssuer}\n"),
    );
    // istio-ca is no longer a workload issuer (the capture has no SPIFFE
    // URI once `uris` is dropped).
    let istio_ca = edit(&fixture("certificate-create-long.json"), |v| {
        v["request"]["object"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("uris");
    });
    assert_allowed(&server.review(istio_ca).await, "istio-ca out of scope");
    let response = server
        .review(certificate(
            "reviews-workload",
            json!({"duration": "720h", "renewBefore": "1h", "secretName": "reviews-tls",
                   "issuerRef": {"name": "mesh-ca", "kind": "ClusterIssuer"}}),
        ))
        .await;
    assert_denied_with(
        &response,
        "mesh-ca",
        "meshgate denied certificate bookinfo/reviews-workload: [short-lived-certificates] is valid for 720h, over the 24h maximum",
    );
}

#[test]
fn bad_issuer_refs_are_a_config_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "certificates:\n  issuerRefs:\n  - {name: istio-ca, kind: CA}\n",
    )
    .unwrap();
    let exited = run_to_exit(&[
        OsString::from("audit"),
        OsString::from("--config"),
        config.into_os_string(),
        OsString::from(format!("{FIXTURES}/state")),
    ]);
    assert!(!exited.status.success(), "{}", exited.stdout);
    assert!(
        exited
            .stderr
            .contains("config field `certificates.issuerRefs[0].kind`"),
        "{}",
        exited.stderr
    );
}

#[tokio::test]
async fn tls_origination_outside_the_mesh_is_allowed() {
    let server = Server::start(Options::default());
    let cases = [
        (
            "MESH_EXTERNAL ServiceEntry",
            json!({"host": "orders.postgres.example.com",
                   "trafficPolicy": {"tls": {"mode": "SIMPLE", "sni": "orders.postgres.example.com"}}}),
        ),
        (
            "unknown external host",
            json!({"host": "api.stripe.com", "trafficPolicy": {"tls": {"mode": "MUTUAL", "credentialName": "stripe-client"}}}),
        ),
        (
            "Service in a namespace outside the mesh",
            json!({"host": "inventory-db.legacy.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}),
        ),
        (
            "ISTIO_MUTUAL in the mesh",
            json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}),
        ),
    ];
    for (what, spec) in cases {
        let response = server.review(destination_rule("egress", spec)).await;
        assert_allowed(&response, what);
    }
}

#[tokio::test]
async fn plaintext_to_in_mesh_hosts_is_denied_saying_why() {
    let server = Server::start(Options::default());
    let cases = [
        (
            json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}),
            "sets trafficPolicy.tls.mode: DISABLE for in-mesh host reviews (namespace bookinfo is in the mesh)",
        ),
        (
            json!({"host": "reviews.bookinfo.svc", "subsets": [{"name": "v1", "labels": {"version": "v1"},
                   "trafficPolicy": {"portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "SIMPLE"}}]}}]}),
            "sets subset v1 trafficPolicy.portLevelSettings[0] (port 9080).tls.mode: SIMPLE for in-mesh host reviews.bookinfo.svc (namespace bookinfo is in the mesh)",
        ),
        (
            json!({"host": "*.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}),
            "sets trafficPolicy.tls.mode: DISABLE for in-mesh host *.svc.cluster.local (it covers namespace bookinfo, which is in the mesh)",
        ),
        (
            json!({"host": "ratings.vm.bookinfo.internal", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}),
            "sets trafficPolicy.tls.mode: SIMPLE for in-mesh host ratings.vm.bookinfo.internal (ServiceEntry bookinfo/ratings-vm declares it MESH_INTERNAL)",
        ),
    ];
    for (spec, text) in cases {
        let response = server.review(destination_rule("plaintext", spec)).await;
        assert_denied_with(
            &response,
            text,
            &format!("meshgate denied destinationrule bookinfo/plaintext: [destination-rule-mtls] {text}"),
        );
    }
}

const STATE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {istio-injection: enabled}
---
apiVersion: v1
kind: Namespace
metadata:
  name: databases
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: inventory-vm, namespace: shop}
spec:
  hosts: [inventory.vms.shop.internal]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: payments-db, namespace: shop}
spec:
  hosts: [payments.db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: DNS
"#;

const POLICIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments-db, namespace: shop}
spec:
  host: payments.db.example.com
  trafficPolicy: {tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: postgres, namespace: shop}
spec:
  host: postgres.databases.svc.cluster.local
  trafficPolicy: {tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory-vm, namespace: shop}
spec:
  host: inventory.vms.shop.internal
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: shop-example-com, namespace: shop}
spec:
  secretName: shop-example-com-tls
  dnsNames: [shop.example.com]
  issuerRef: {name: letsencrypt-prod, kind: ClusterIssuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: web-workload, namespace: shop}
spec:
  secretName: web-workload-tls
  duration: 24h
  renewBefore: 8h
  uris: [spiffe://cluster.local/ns/shop/sa/web]
  issuerRef: {name: istio-ca, kind: ClusterIssuer, group: cert-manager.io}
"#;

#[test]
fn audit_reads_service_entries_and_scopes_certificates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.yaml"), STATE).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), POLICIES).unwrap();
    let exited = run_to_exit(&[
        OsString::from("audit"),
        OsString::from("--output"),
        OsString::from("json"),
        dir.path().as_os_str().to_owned(),
    ]);
    assert_eq!(exited.status.code(), Some(1), "{}", exited.stderr);
    let report: Value = serde_json::from_str(&exited.stdout).expect("JSON report");
    let findings = report["findings"].as_array().expect("findings");
    // (`databases` itself is reported by namespace-mesh-enrolled.)
    let named: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["name"].as_str().unwrap()))
        .filter(|(rule, _)| *rule != "namespace-mesh-enrolled")
        .collect();
    assert_eq!(
        named,
        [("destination-rule-mtls", "inventory-vm")],
        "{}",
        exited.stdout
    );
    assert!(
        findings.iter().any(|f| f["message"]
            .as_str()
            .unwrap()
            .contains("(ServiceEntry shop/inventory-vm declares it MESH_INTERNAL)")),
        "{}",
        exited.stdout
    );
}
