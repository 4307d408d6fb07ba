//! `POST /mutate` through the real HTTPS server: the workload-certificate
//! mount, before and after Istio's injector, applied the way the API server
//! applies it.

mod common;

use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Posts to /mutate and returns the response, checked as the API server
/// checks it.
async fn mutate(server: &Server, review: &[u8]) -> Value {
    let (status, body) = server.post("/mutate?timeout=5s", review.to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["response"]["uid"], uid_of(review).as_str());
    assert_eq!(
        body["response"]["allowed"], true,
        "/mutate never denies: {body}"
    );
    body["response"].clone()
}

/// The patch decoded from base64 (a JSON array of numbers would be refused
/// by the API server) and applied to the request's object.
fn apply_patch(review: &[u8], response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let encoded = response["patch"]
        .as_str()
        .expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
    let mut pod = json(review)["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).expect("the patch applies");
    pod
}

/// The same request with `object` replaced, as a reinvocation would send it.
fn with_object(review: &[u8], object: &Value) -> Vec<u8> {
    edit(review, |v| v["request"]["object"] = object.clone())
}

/// The captured pod as it looks before the injector ran.
fn uninjected() -> Vec<u8> {
    edit(&fixture("mutate-pod-create.json"), |v| {
        let pod = &mut v["request"]["object"];
        pod["spec"]["initContainers"] = json!([]);
        pod["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .retain(|c| c["name"] != "istio-proxy");
        pod["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("sidecar.istio.io/status");
    })
}

fn app(pod: &Value) -> &Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "productpage")
        .unwrap()
}

fn proxy(pod: &Value) -> &Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .unwrap()
}

const CERTS: &str = "/etc/istio-certs";

fn has_mount(container: &Value, read_only: bool) -> bool {
    container["volumeMounts"].as_array().is_some_and(|mounts| {
        mounts.iter().any(|m| {
            m["name"] == "istio-certs"
                && m["mountPath"] == CERTS
                && m["readOnly"].as_bool().unwrap_or(false) == read_only
        })
    })
}

#[tokio::test]
async fn after_injection_the_proxy_writes_certificates_the_app_reads() {
    let server = Server::start(Options::default());
    let review = fixture("mutate-pod-create.json");
    let response = mutate(&server, &review).await;
    let pod = apply_patch(&review, &response);

    let volume = certs_volume(&pod);
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
    assert!(has_mount(app(&pod), true), "{}", app(&pod));
    assert!(has_mount(proxy(&pod), false), "{}", proxy(&pod));
    let env = proxy(&pod)["env"].as_array().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"] == "OUTPUT_CERTS" && e["value"] == CERTS));
    // istio-init is left exactly as the injector made it.
    let before = json(&review);
    assert_eq!(
        pod["spec"]["initContainers"],
        before["request"]["object"]["spec"]["initContainers"]
    );

    // Reinvocation: nothing more to do.
    let again = mutate(&server, &with_object(&review, &pod)).await;
    assert!(again.get("patch").is_none(), "{again}");

    // The validating webhook, called next, still admits the patched pod.
    let validate = edit(&fixture("pod-create-injected.json"), |v| {
        v["request"]["object"] = pod.clone()
    });
    let verdict = server.review(validate).await;
    assert_eq!(verdict["allowed"], true, "{verdict}");
}

#[tokio::test]
async fn before_injection_istio_annotations_tell_the_injector() {
    let server = Server::start(Options::default());
    let review = uninjected();
    let pod = apply_patch(&review, &mutate(&server, &review).await);
    let annotations = &pod["metadata"]["annotations"];
    let config: Value =
        serde_json::from_str(annotations["proxy.istio.io/config"].as_str().unwrap()).unwrap();
    assert_eq!(config["proxyMetadata"]["OUTPUT_CERTS"], CERTS);
    let mounts: Value = serde_json::from_str(
        annotations["sidecar.istio.io/userVolumeMount"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(mounts["istio-certs"]["mountPath"], CERTS);
    assert!(has_mount(app(&pod), true));
    // Unrelated annotations survive.
    assert_eq!(
        annotations["kubectl.kubernetes.io/default-container"],
        "productpage"
    );

    let again = mutate(&server, &with_object(&review, &pod)).await;
    assert!(again.get("patch").is_none(), "{again}");
}

#[tokio::test]
async fn a_stripped_native_sidecar_is_treated_as_not_yet_injected() {
    // v1.24 dropped restartPolicy: istio-proxy is then a plain init container.
    let server = Server::start(Options::default());
    let review = fixture("mutate-pod-create-native-sidecar-stripped.json");
    let pod = apply_patch(&review, &mutate(&server, &review).await);
    assert!(pod["metadata"]["annotations"]["proxy.istio.io/config"].is_string());
}

#[tokio::test]
async fn conflicting_mounts_get_a_warning_and_no_patch_for_that_container() {
    let server = Server::start(Options::default());
    let review = edit(&uninjected(), |v| {
        let containers = v["request"]["object"]["spec"]["containers"]
            .as_array_mut()
            .unwrap();
        let app = containers
            .iter_mut()
            .find(|c| c["name"] == "productpage")
            .unwrap();
        app["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "tmp", "mountPath": CERTS}));
    });
    let response = mutate(&server, &review).await;
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0].as_str().unwrap().contains(
            "container \"productpage\" already mounts volume \"tmp\" at /etc/istio-certs"
        ),
        "{warnings:?}"
    );
    let pod = apply_patch(&review, &response);
    let mounts = app(&pod)["volumeMounts"].as_array().unwrap();
    assert_eq!(mounts.iter().filter(|m| m["mountPath"] == CERTS).count(), 1);
}

#[tokio::test]
async fn modes_exempt_namespaces_and_unenrolled_namespaces_leave_pods_alone() {
    let off = Server::start(Options::default().config("rules: {workload-certificates: off}\n"));
    let response = mutate(&off, &uninjected()).await;
    assert!(response.get("patch").is_none(), "{response}");

    let audit = Server::start(Options::default().config("rules: {workload-certificates: audit}\n"));
    let response = mutate(&audit, &uninjected()).await;
    assert!(response.get("patch").is_none(), "{response}");
    let pod = &json(&uninjected())["request"]["object"]["metadata"];
    let warning = response["warnings"][0].as_str().unwrap();
    let named = format!(
        "[meshgate audit] pod {}/{}: workload-certificates: would get volume",
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap()
    );
    assert!(warning.starts_with(&named), "{warning}");

    let server = Server::start(Options::default());
    for ns in ["legacy", "kube-system"] {
        let response = mutate(&server, &with_namespace(&uninjected(), ns)).await;
        assert!(response.get("patch").is_none(), "{ns}: {response}");
    }
    // DELETE and other kinds are never patched.
    let response = mutate(&server, &fixture("pod-delete.json")).await;
    assert!(response.get("patch").is_none());

    let metrics = server.metrics().await;
    assert!(metrics.value("meshgate_mutations_total", &[("outcome", "skipped")]) >= 2.0);
}

#[tokio::test]
async fn a_configured_secret_is_mounted_instead_of_the_sidecars_output() {
    let server =
        Server::start(Options::default().config(
            "workloadCertificates: {secretName: productpage-tls, mountPath: /var/run/tls}\n",
        ));
    let review = fixture("mutate-pod-create.json");
    let pod = apply_patch(&review, &mutate(&server, &review).await);
    let volume = certs_volume(&pod);
    assert_eq!(volume["secret"]["secretName"], "productpage-tls");
    assert!(proxy(&pod)["env"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["name"] != "OUTPUT_CERTS"));
    assert!(app(&pod)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/var/run/tls"));
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.value("meshgate_mutations_total", &[("outcome", "patched")]),
        1.0
    );
}

/// The `istio-certs` volume the patch added.
fn certs_volume(pod: &Value) -> &Value {
    pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "istio-certs")
        .expect("the patch adds the istio-certs volume")
}
