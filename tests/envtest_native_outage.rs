//! Issue 22's outage: with the native policies in the cluster and
//! meshgate's process stopped, the API server itself still mounts the
//! workload certificates (and, once the validating policies are compiled,
//! refuses what the stateless rules refuse).
//!
//! `meshgate serve --native-policies true` writes the policies as the
//! elected replica; the test stops it before creating any pod, so every
//! answer below comes from the API server alone. `remove-webhooks` takes
//! them away again.

mod common;
mod envtest;
mod native_common;

use std::time::Duration;

use serde_json::{json, Value};

use native_common::{dry_run, injected, mounts, namespaces, native_objects, pod, sync_then_stop};

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_mounts_the_workload_certificates_while_meshgate_is_down() {
    let Some(env) = envtest::start("envtest_native_outage") else {
        return;
    };
    let client = env.client().await;
    namespaces(&client).await;
    sync_then_stop(&env, &client).await;

    injected_pod_gets_the_mount_once(&env);
    the_pod_before_injection_tells_the_injector(&env);
    pods_the_webhook_leaves_alone_are_left_alone(&env);
    the_next_leader_deletes_what_is_no_longer_compiled(&env, &client).await;

    // Uninstall takes them away.
    let out = tokio::task::spawn_blocking({
        let kubeconfig = env.kubeconfig();
        move || {
            common::run_cli_with_input(
                &["remove-webhooks", "--name", "meshgate"],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
                b"",
                Duration::from_secs(60),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(native_objects(&client).await, Vec::<String>::new());
}

/// A native object meshgate labelled but no longer compiles (a rule turned
/// off since) goes at the next leader's first pass; the compiled ones stay.
async fn the_next_leader_deletes_what_is_no_longer_compiled(
    env: &envtest::Envtest,
    client: &kube::Client,
) {
    let stale = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": "meshgate-retired", "labels": {
            "app.kubernetes.io/managed-by": "meshgate", "meshgate.io/native-policy": "true"}},
        "spec": {"policyName": "meshgate-retired"},
    });
    env.kubectl(&["apply", "-f", "-"], &stale.to_string());
    let before = native_objects(client).await;
    assert!(before.contains(&"MutatingAdmissionPolicyBinding/meshgate-retired".to_owned()));
    sync_then_stop(env, client).await;
    let after = native_objects(client).await;
    assert_eq!(after.len(), before.len() - 1, "{after:?}");
    assert!(!after.iter().any(|o| o.ends_with("meshgate-retired")));
}

/// The volume, a read-only mount in the application only, OUTPUT_CERTS and
/// a writable mount on the proxy, the marker; and nothing more the second
/// time.
fn injected_pod_gets_the_mount_once(env: &envtest::Envtest) {
    let stored = dry_run(env, &injected("web")).unwrap();
    let volumes = stored["spec"]["volumes"].as_array().unwrap();
    let ours: Vec<&Value> = volumes
        .iter()
        .filter(|v| v["name"] == "istio-certs")
        .collect();
    assert_eq!(ours.len(), 1, "{volumes:?}");
    assert_eq!(ours[0]["emptyDir"]["medium"], "Memory");
    let path = "/etc/istio-certs".to_owned();
    assert_eq!(
        mounts(&stored, 0),
        vec![("istio-certs".into(), path.clone(), true)]
    );
    assert_eq!(
        mounts(&stored, 1),
        vec![("istio-certs".into(), path.clone(), false)]
    );
    let env_vars = &stored["spec"]["containers"][1]["env"];
    assert_eq!(env_vars, &json!([{"name": "OUTPUT_CERTS", "value": path}]));
    assert_eq!(
        stored["metadata"]["annotations"]["meshgate.io/cert-mount"],
        path
    );
    // The init container is not an application container.
    assert!(stored["spec"]["initContainers"][0]["volumeMounts"].is_null());

    // Idempotent: what it stored goes through unchanged.
    let mut again = stored.clone();
    for field in [
        "uid",
        "creationTimestamp",
        "resourceVersion",
        "managedFields",
    ] {
        again["metadata"].as_object_mut().unwrap().remove(field);
    }
    let twice = dry_run(env, &again).unwrap();
    assert_eq!(twice["spec"], stored["spec"]);
    assert_eq!(
        twice["metadata"]["annotations"],
        stored["metadata"]["annotations"]
    );
}

/// Before injection: Istio's own annotations tell the injector.
fn the_pod_before_injection_tells_the_injector(env: &envtest::Envtest) {
    let path = "/etc/istio-certs".to_owned();
    let plain = pod(
        "api",
        json!({"containers": [{"name": "app", "image": "shop:1"}]}),
        json!({}),
    );
    let stored = dry_run(env, &plain).unwrap();
    let annotations = &stored["metadata"]["annotations"];
    assert_eq!(
        annotations["proxy.istio.io/config"],
        r#"{"proxyMetadata":{"OUTPUT_CERTS":"/etc/istio-certs"}}"#
    );
    assert_eq!(
        annotations["sidecar.istio.io/userVolumeMount"],
        r#"{"istio-certs":{"mountPath":"/etc/istio-certs"}}"#
    );
    assert_eq!(
        mounts(&stored, 0),
        vec![("istio-certs".into(), path.clone(), true)]
    );
}

/// A pod that opts out of injection, one in a namespace outside the mesh,
/// one in a namespace capped at audit, and one whose volume name is taken.
fn pods_the_webhook_leaves_alone_are_left_alone(env: &envtest::Envtest) {
    let opted_out = pod(
        "batch",
        json!({"containers": [{"name": "app", "image": "shop:1"}]}),
        json!({"sidecar.istio.io/inject": "false"}),
    );
    let mut elsewhere = injected("web");
    elsewhere["metadata"]["namespace"] = json!("plain");
    let mut audited = injected("web");
    audited["metadata"]["namespace"] = json!("audited");
    let mut taken = injected("taken");
    taken["spec"]["volumes"] = json!([{"name": "istio-certs", "hostPath": {"path": "/x"}}]);
    for untouched in [opted_out, elsewhere, audited, taken] {
        let stored = dry_run(env, &untouched).unwrap();
        assert_eq!(mounts(&stored, 0), vec![], "{}", untouched["metadata"]);
        assert!(stored["metadata"]["annotations"]["meshgate.io/cert-mount"].is_null());
    }
}
