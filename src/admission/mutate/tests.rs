use super::*;
use crate::config::Config;
use crate::subject::{self, Kind, Object};
use proptest::prelude::*;
use serde_json::json;

fn workload(pod: &Value) -> Workload {
    match subject::decode(Kind::Pod, pod.clone(), "shop", "") {
        Ok(Object::Workload(w)) => w,
        other => panic!("not a pod: {other:?}"),
    }
}

fn settings() -> WorkloadCertificates {
    Config::default().workload_certificates
}

/// Plans, applies the patch with json-patch, and returns the patched pod.
fn apply(pod: &Value, settings: &WorkloadCertificates) -> (Value, Plan) {
    let plan = plan(&workload(pod), settings);
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &plan.operations)
        .unwrap_or_else(|e| panic!("{e}: {:?}", plan.operations));
    (patched, plan)
}

fn plain_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "worker", "image": "w:1"}]}})
}

fn injected_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web", "namespace": "shop", "annotations": {"sidecar.istio.io/status": "{}"}},
    "spec": {
        "initContainers": [{"name": "istio-init", "image": "proxyv2"}],
        "containers": [
            {"name": "app", "image": "app:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            {"name": "istio-proxy", "image": "proxyv2", "env": [{"name": "ISTIO_META_X", "value": "1"}],
             "volumeMounts": [{"name": "istio-envoy", "mountPath": "/etc/istio/proxy"}]}
        ],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}]
    }})
}

#[test]
fn before_injection_adds_volume_mounts_and_istio_annotations() {
    let (patched, plan) = apply(&plain_pod(), &settings());
    assert_eq!(plan.outcome, Outcome::Patched);
    assert_eq!(
        patched["spec"]["volumes"],
        json!([{"name": "istio-certs", "emptyDir": {"medium": "Memory"}}])
    );
    for i in 0..2 {
        assert_eq!(
            patched["spec"]["containers"][i]["volumeMounts"],
            json!([{"name": "istio-certs", "mountPath": "/etc/istio-certs", "readOnly": true}])
        );
    }
    let annotations = &patched["metadata"]["annotations"];
    let config: Value = serde_json::from_str(annotations[PROXY_CONFIG].as_str().unwrap()).unwrap();
    assert_eq!(config["proxyMetadata"]["OUTPUT_CERTS"], "/etc/istio-certs");
    let mounts: Value =
        serde_json::from_str(annotations[USER_VOLUME_MOUNT].as_str().unwrap()).unwrap();
    assert_eq!(
        mounts,
        json!({"istio-certs": {"mountPath": "/etc/istio-certs"}})
    );
    assert_eq!(annotations[MARKER], "/etc/istio-certs");
}

#[test]
fn after_injection_patches_the_proxy_container_directly() {
    let (patched, plan) = apply(&injected_pod(), &settings());
    assert_eq!(plan.outcome, Outcome::Patched);
    let proxy = &patched["spec"]["containers"][1];
    assert_eq!(
        proxy["env"][1],
        json!({"name": "OUTPUT_CERTS", "value": "/etc/istio-certs"})
    );
    assert_eq!(
        proxy["volumeMounts"][1],
        json!({"name": "istio-certs", "mountPath": "/etc/istio-certs"})
    );
    let app = &patched["spec"]["containers"][0];
    assert_eq!(app["volumeMounts"][1]["readOnly"], true);
    assert!(patched["metadata"]["annotations"]
        .get(PROXY_CONFIG)
        .is_none());
    // istio-init is untouched.
    assert_eq!(
        patched["spec"]["initContainers"],
        injected_pod()["spec"]["initContainers"]
    );
}

#[test]
fn native_sidecar_proxy_is_patched_in_init_containers() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"initContainers": [{"name": "istio-proxy", "image": "p", "restartPolicy": "Always"}],
                 "containers": [{"name": "app", "image": "a"}]}});
    let (patched, _) = apply(&pod, &settings());
    assert_eq!(
        patched["spec"]["initContainers"][0]["env"][0]["name"],
        "OUTPUT_CERTS"
    );
    assert!(patched["metadata"]
        .get("annotations")
        .unwrap()
        .get(PROXY_CONFIG)
        .is_none());
}

#[test]
fn existing_proxy_config_is_merged_not_replaced() {
    let mut pod = plain_pod();
    pod["metadata"]["annotations"] = json!({
        PROXY_CONFIG: "holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\n",
        USER_VOLUME_MOUNT: "{\"extra\":{\"mountPath\":\"/extra\"}}"
    });
    let (patched, _) = apply(&pod, &settings());
    let annotations = &patched["metadata"]["annotations"];
    let config: Value =
        serde_yaml_ng::from_str(annotations[PROXY_CONFIG].as_str().unwrap()).unwrap();
    assert_eq!(config["holdApplicationUntilProxyStarts"], true);
    assert_eq!(config["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"], "true");
    assert_eq!(config["proxyMetadata"]["OUTPUT_CERTS"], "/etc/istio-certs");
    let mounts: Value =
        serde_json::from_str(annotations[USER_VOLUME_MOUNT].as_str().unwrap()).unwrap();
    assert_eq!(mounts["extra"]["mountPath"], "/extra");
    assert_eq!(mounts["istio-certs"]["mountPath"], "/etc/istio-certs");
}

#[test]
fn a_second_call_returns_no_patch() {
    for pod in [plain_pod(), injected_pod()] {
        let (once, _) = apply(&pod, &settings());
        let (twice, plan) = apply(&once, &settings());
        assert!(plan.operations.is_empty(), "{:?}", plan.operations);
        assert_eq!(plan.outcome, Outcome::Unchanged);
        assert_eq!(once, twice);
    }
}

#[test]
fn annotation_keys_are_escaped_in_json_pointers() {
    let mut pod = plain_pod();
    pod["metadata"]["annotations"] = json!({"team": "shop"});
    let plan = plan(&workload(&pod), &settings());
    let paths: Vec<String> = plan
        .operations
        .iter()
        .filter_map(|op| match op {
            PatchOperation::Add(a) => Some(a.path.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        paths.contains(&"/metadata/annotations/proxy.istio.io~1config".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/metadata/annotations/sidecar.istio.io~1userVolumeMount".to_owned()),
        "{paths:?}"
    );
}

#[test]
fn conflicting_mount_path_skips_that_container_with_a_warning() {
    let mut pod = plain_pod();
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "mine", "mountPath": "/etc/istio-certs"}]);
    let (patched, plan) = apply(&pod, &settings());
    assert_eq!(plan.outcome, Outcome::Patched);
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"],
        pod["spec"]["containers"][0]["volumeMounts"]
    );
    assert_eq!(
        patched["spec"]["containers"][1]["volumeMounts"][0]["name"],
        "istio-certs"
    );
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0]
            .contains("container \"app\" already mounts volume \"mine\" at /etc/istio-certs"),
        "{}",
        plan.warnings[0]
    );
    assert!(!plan.warnings[0].contains('\n'));
}

#[test]
fn conflicting_volume_name_means_no_patch_at_all() {
    let mut pod = plain_pod();
    pod["spec"]["volumes"] = json!([{"name": "istio-certs", "configMap": {"name": "x"}}]);
    let plan = plan(&workload(&pod), &settings());
    assert!(plan.operations.is_empty());
    assert_eq!(plan.outcome, Outcome::Conflict);
    assert!(plan.warnings[0].contains("a different volume named \"istio-certs\""));
}

#[test]
fn proxy_already_writing_elsewhere_is_a_conflict() {
    let mut pod = injected_pod();
    pod["spec"]["containers"][1]["env"] = json!([{"name": "OUTPUT_CERTS", "value": "/elsewhere"}]);
    let plan = plan(&workload(&pod), &settings());
    assert!(plan.operations.is_empty());
    assert!(plan.warnings[0].contains("OUTPUT_CERTS"));
    let mut pod = plain_pod();
    pod["metadata"]["annotations"] = json!({PROXY_CONFIG: "- not\n- a mapping\n"});
    assert_eq!(
        super::plan(&workload(&pod), &settings()).outcome,
        Outcome::Conflict
    );
}

#[test]
fn secret_source_mounts_the_secret_and_leaves_the_proxy_alone() {
    let settings =
        Config::from_yaml("workloadCertificates: {secretName: web-tls, mountPath: /var/run/tls}\n")
            .unwrap()
            .workload_certificates;
    let (patched, _) = apply(&injected_pod(), &settings);
    assert_eq!(
        patched["spec"]["volumes"][2],
        json!({"name": "istio-certs", "secret": {"secretName": "web-tls"}})
    );
    assert_eq!(
        patched["spec"]["containers"][1],
        injected_pod()["spec"]["containers"][1]
    );
    assert_eq!(
        patched["spec"]["containers"][0]["volumeMounts"][1]["mountPath"],
        "/var/run/tls"
    );
}

// ------------------------------------------------------------ properties

fn container_strategy() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["app", "worker", "cache", "istio-proxy"]),
        prop::option::of(prop::collection::vec(
            (
                prop::sample::select(vec!["data", "istio-certs", "other"]),
                prop::sample::select(vec!["/data", "/etc/istio-certs", "/x"]),
            ),
            0..3,
        )),
        prop::option::of(prop::collection::vec(
            prop::sample::select(vec!["A", "OUTPUT_CERTS"]),
            0..2,
        )),
    )
        .prop_map(|(name, mounts, env)| {
            let mut c = json!({"name": name, "image": "i"});
            if let Some(mounts) = mounts {
                let mut seen = std::collections::BTreeSet::new();
                c["volumeMounts"] = mounts
                    .into_iter()
                    .filter(|(_, p)| seen.insert(*p))
                    .map(|(n, p)| json!({"name": n, "mountPath": p}))
                    .collect();
            }
            if let Some(env) = env {
                c["env"] = env
                    .into_iter()
                    .map(|n| json!({"name": n, "value": "/etc/istio-certs"}))
                    .collect();
            }
            c
        })
}

fn pod_strategy() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(container_strategy(), 1..4),
        prop::option::of(prop::collection::vec(prop::sample::select(vec!["data", "istio-certs-alt", "istio-certs"]), 0..3)),
        prop::option::of(prop::sample::select(vec![
            json!({}),
            json!({"team": "a/b~c"}),
            json!({PROXY_CONFIG: "concurrency: 2\n"}),
            json!({USER_VOLUME_MOUNT: "{\"x\":{\"mountPath\":\"/x2\"}}"}),
        ])),
    )
        .prop_map(|(containers, volumes, annotations)| {
            // Container names are unique in a real pod.
            let mut seen = std::collections::BTreeSet::new();
            let containers: Vec<Value> = containers
                .into_iter()
                .filter(|c| seen.insert(c["name"].as_str().unwrap_or("").to_owned()))
                .collect();
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}});
            if let Some(volumes) = volumes {
                let mut seen = std::collections::BTreeSet::new();
                pod["spec"]["volumes"] = volumes
                    .into_iter()
                    .filter(|v| seen.insert(*v))
                    .map(|v| json!({"name": v, "emptyDir": {"medium": "Memory"}}))
                    .collect();
            }
            if let Some(annotations) = annotations {
                pod["metadata"]["annotations"] = annotations;
            }
            pod
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn patches_apply_cleanly_are_idempotent_and_spare_the_proxy(pod in pod_strategy()) {
        let settings = settings();
        let first = plan(&workload(&pod), &settings);
        let mut patched = pod.clone();
        prop_assert!(json_patch::patch(&mut patched, &first.operations).is_ok(), "{:?}", first.operations);
        // The patched pod is still a valid pod, and a second call changes nothing.
        let second = plan(&workload(&patched), &settings);
        prop_assert!(second.operations.is_empty(), "second patch: {:?}", second.operations);
        // istio-proxy only ever gains the OUTPUT_CERTS env var and the mount.
        let proxy = |p: &Value| p["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "istio-proxy").cloned();
        if let (Some(before), Some(after)) = (proxy(&pod), proxy(&patched)) {
            let mut after = after;
            if let Some(env) = after.get_mut("env").and_then(Value::as_array_mut) {
                env.retain(|e| e["name"] != "OUTPUT_CERTS" || before["env"].as_array().is_some_and(|b| b.contains(e)));
                if env.is_empty() && before.get("env").is_none() { after.as_object_mut().unwrap().remove("env"); }
            }
            if let Some(mounts) = after.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                mounts.retain(|m| before["volumeMounts"].as_array().is_some_and(|b| b.contains(m)));
                if mounts.is_empty() && before.get("volumeMounts").is_none() { after.as_object_mut().unwrap().remove("volumeMounts"); }
            }
            prop_assert_eq!(before, after);
        }
        // Every application container either has the mount or was warned about.
        for c in patched["spec"]["containers"].as_array().unwrap() {
            if c["name"] == "istio-proxy" || first.outcome == Outcome::Conflict && first.operations.is_empty() { continue; }
            let mounted = c["volumeMounts"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == "istio-certs" && m["mountPath"] == "/etc/istio-certs"));
            let warned = first.warnings.iter().any(|w| w.contains(&format!("container {}", c["name"])));
            prop_assert!(mounted || warned, "{c}");
        }
    }
}
