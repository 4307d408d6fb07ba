//! Arrays where objects belong, at any depth: serde's derive would read a
//! sequence as a struct (`trafficPolicy: [{tls: {mode: DISABLE}}]` as a
//! policy without TLS settings, `mtls: [null]` as UNSET). meshgate refuses
//! them with one decoding setting (`src/strict.rs`), through every
//! interface: the webhook answers a clear 400 denial, `meshgate audit`
//! exits 2 naming the file, `serve --state-from` and `--config` refuse to
//! start.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const BOUND: Duration = Duration::from_secs(30);

/// DestinationRule specs of host `reviews` (in the mesh) that turn TLS off
/// inside a sequence, at each place a traffic policy can sit.
fn sequence_specs() -> Vec<(&'static str, Value)> {
    let host = "reviews.bookinfo.svc.cluster.local";
    let disable = json!({"tls": {"mode": "DISABLE"}});
    vec![
        (
            "top level",
            json!({"host": host, "trafficPolicy": [disable]}),
        ),
        (
            "subset",
            json!({"host": host, "subsets": [{"name": "v1", "labels": {"v": "1"}, "trafficPolicy": [disable]}]}),
        ),
        (
            "portLevelSettings",
            json!({"host": host, "trafficPolicy": {"portLevelSettings": [[{"number": 9080}, {"mode": "DISABLE"}]]}}),
        ),
        (
            "tls",
            json!({"host": host, "trafficPolicy": {"tls": ["DISABLE"]}}),
        ),
    ]
}

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_webhook_denies_sequences_where_objects_belong() {
    let server = Server::start(Options::default());
    let review = fixture("destinationrule-create-disable.json");
    for (place, spec) in sequence_specs() {
        let body = edit(&review, |v| v["request"]["object"]["spec"] = spec.clone());
        let response = server.review(body).await;
        assert_eq!(response["allowed"], false, "{place}: {response}");
        assert_eq!(response["status"]["code"], 400, "{place}: {response}");
        let m = message(&response);
        assert!(
            m.contains("cannot decode the DestinationRule"),
            "{place}: {m}"
        );
        assert!(m.contains("expected an object"), "{place}: {m}");
    }
    // `mtls: [null]` is not UNSET; a port-level `[PERMISSIVE]` not unset.
    let pa = fixture("peerauthentication-create-strict-v1.json");
    for spec in [
        json!({"mtls": [null]}),
        json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": ["PERMISSIVE"]}}),
    ] {
        let body = edit(&pa, |v| v["request"]["object"]["spec"] = spec.clone());
        let response = server.review(body).await;
        assert_eq!(response["allowed"], false, "{spec}: {response}");
        assert!(
            message(&response).contains("expected an object"),
            "{spec}: {response}"
        );
    }
    // Workloads are decoded in the same pass as the review: the same rule.
    let pod = edit(&fixture("pod-create-injected.json"), |v| {
        let c = &mut v["request"]["object"]["spec"]["containers"][0];
        c["securityContext"] = json!([false, null, null, null, 1337]);
    });
    let response = server.review(pod).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        message(&response).contains("cannot decode the Pod"),
        "{response}"
    );
    // The well-formed original is still judged (and denied) on its merits.
    let response = server.review(review).await;
    assert_eq!(response["status"]["code"], 403, "{response}");
}

#[test]
fn audit_and_serve_refuse_sequences_where_objects_belong() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: bookinfo, labels: {istio-injection: enabled}}\n---\n";
    for (place, spec) in sequence_specs() {
        let object = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "bookinfo"}, "spec": spec});
        let file = dir.path().join("rule.yaml");
        std::fs::write(&file, format!("{namespace}{object}\n")).unwrap();
        let file = file.to_string_lossy().into_owned();
        let out = run_cli(&["audit", &file], BOUND);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{place}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains("rule.yaml, document 2"),
            "{place}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("expected an object"),
            "{place}: {}",
            out.stderr
        );
    }
    // The cluster state of `serve --state-from` is decoded the same way.
    let state = dir.path().join("state.yaml");
    std::fs::write(
        &state,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: default, namespace: istio-system}\nspec: {mtls: [null]}\n",
    )
    .unwrap();
    let state = state.to_string_lossy().into_owned();
    let out = run_cli(&["audit", &state], BOUND);
    assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("expected an object"), "{}", out.stderr);
    let serving = Ca::new("shapes").issue();
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    let serve = [
        "serve",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--state-from",
        &state,
    ];
    let out = run_cli(&serve, BOUND);
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(
            "cannot decode the PeerAuthentication: invalid type: sequence, expected an object"
        ),
        "{}",
        out.stderr
    );
    // And the config: a sequence for `certificates` is not its defaults.
    let config = dir.path().join("meshgate.yaml");
    std::fs::write(&config, "certificates: [8760h]\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let out = run_cli(&["audit", "--config", &config, &state], BOUND);
    assert_eq!(out.status.code(), Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("certificates: invalid type: sequence"),
        "{}",
        out.stderr
    );
}
