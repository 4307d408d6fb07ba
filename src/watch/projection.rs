//! The trimmed projection of a watched object, made once on arrival for
//! every consumer (and by `meshgate audit` and `serve --state-from` for
//! what they read from files). Clusters hold many pods, so only what the
//! rules read is kept: metadata without `managedFields` or
//! kubectl's last-applied copy, and of the pod spec only the fields of
//! [`crate::subject::PodSpecView`] a rule reads (the same lists, so a field
//! added to the view for a rule is kept here too). Environment variables
//! are kept where [`rules_read_env`] says (`istio-iptables`' flags, the
//! proxy's `PROXY_CONFIG`), lifecycle hooks on `istio-proxy` only.

use kube::api::DynamicObject;
use serde_json::{Map, Value};

use crate::kinds::Kind;
use crate::subject::{
    rules_read_env, rules_read_lifecycle_of, CONTAINER_FIELDS_READ_BY_RULES, LAST_APPLIED,
    POD_SPEC_FIELDS_READ_BY_RULES,
};

/// Trims what no rule reads of `object`: a workload's status and the pod
/// spec fields no rule reads, every kind's `managedFields` and kubectl's
/// last-applied copy.
pub fn project(kind: Kind, object: &mut Value) {
    match kind.row().pod_spec {
        Some(path) => trim(object, path),
        None => trim_metadata_only(object),
    }
}

/// [`project`] for a watched object, whose metadata is typed.
pub fn project_dynamic(kind: Kind, object: &mut DynamicObject) {
    let meta = &mut object.metadata;
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
    if let Some(path) = kind.row().pod_spec {
        // `data` is the object without its type and metadata.
        trim(&mut object.data, path);
    }
}

/// Trims a pod or controller in place. `spec_path` leads from the object to
/// its pod spec (`["spec"]` for a pod, `["spec", "template", "spec"]` for a
/// controller, one level deeper for a CronJob).
pub fn trim(object: &mut Value, spec_path: &[&str]) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            trim_metadata(meta);
        }
    }
    let mut spec = Some(&mut *object);
    for key in spec_path {
        spec = spec.and_then(|v| v.get_mut(*key));
    }
    if let Some(spec) = spec.and_then(Value::as_object_mut) {
        trim_pod_spec(spec);
    }
}

/// Drops only the metadata no rule reads; for kinds whose status matters
/// (a Certificate's `notAfter`) or that are few.
pub fn trim_metadata_only(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        trim_metadata(meta);
    }
}

fn trim_metadata(meta: &mut Map<String, Value>) {
    meta.remove("managedFields");
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        annotations.remove(LAST_APPLIED);
    }
}

fn trim_pod_spec(spec: &mut Map<String, Value>) {
    spec.retain(|key, _| POD_SPEC_FIELDS_READ_BY_RULES.contains(&key.as_str()));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers
                .iter_mut()
                .filter_map(Value::as_object_mut)
                .for_each(trim_container);
        }
    }
}

fn trim_container(container: &mut Map<String, Value>) {
    container.retain(|key, _| CONTAINER_FIELDS_READ_BY_RULES.contains(&key.as_str()));
    let name = container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !rules_read_lifecycle_of(&name) {
        container.remove("lifecycle");
    }
    let Some(env) = container.get_mut("env").and_then(Value::as_array_mut) else {
        container.remove("env");
        return;
    };
    env.retain(|var| {
        let var = var.get("name").and_then(Value::as_str).unwrap_or_default();
        rules_read_env(&name, var)
    });
    if env.is_empty() {
        container.remove("env");
    }
}

/// The controller that owns an object, as (apiVersion, kind, name), from its
/// `ownerReferences` entry with `controller: true`.
pub fn controller_of(object: &Value) -> Option<(String, String, String)> {
    let owners = object.pointer("/metadata/ownerReferences")?.as_array()?;
    owners
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
        .and_then(|o| {
            Some((
                o.get("apiVersion")?.as_str()?.to_owned(),
                o.get("kind")?.as_str()?.to_owned(),
                o.get("name")?.as_str()?.to_owned(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-1", "namespace": "shop",
                "labels": {"app": "web"},
                "annotations": {
                    "sidecar.istio.io/inject": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}"
                },
                "managedFields": [{"manager": "kubectl"}],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d", "uid": "1", "controller": true}
                ]
            },
            "spec": {
                "serviceAccountName": "web",
                "hostNetwork": false,
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k"}],
                "securityContext": {"runAsUser": 1000},
                "initContainers": [{
                    "name": "istio-init", "image": "proxyv2",
                    "args": ["istio-iptables", "-p", "15001"],
                    "env": [{"name": "INBOUND_PORTS_EXCLUDE", "value": "22"}],
                    "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}
                }],
                "containers": [{
                    "name": "app", "image": "shop:1",
                    "env": [{"name": "SECRET", "value": "x"}],
                    "resources": {"limits": {"cpu": "1"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                    "ports": [{"containerPort": 8080}],
                    "securityContext": {"runAsUser": 1337}
                }]
            },
            "status": {"phase": "Running"}
        })
    }

    #[test]
    fn trims_what_no_rule_reads_and_keeps_what_they_do() {
        let mut pod = pod();
        trim(&mut pod, &["spec"]);
        assert!(pod.get("status").is_none());
        assert!(pod.pointer("/metadata/managedFields").is_none());
        assert!(pod
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration")
            .is_none());
        assert!(pod.pointer("/spec/volumes").is_none());
        assert!(pod.pointer("/spec/tolerations").is_none());
        assert!(pod.pointer("/spec/containers/0/env").is_none());
        assert!(pod.pointer("/spec/containers/0/resources").is_none());
        // Kept: what the rules read.
        assert_eq!(
            pod.pointer("/metadata/annotations/sidecar.istio.io~1inject"),
            Some(&json!("true"))
        );
        assert_eq!(pod.pointer("/spec/serviceAccountName"), Some(&json!("web")));
        assert_eq!(
            pod.pointer("/spec/initContainers/0/env/0/value"),
            Some(&json!("22"))
        );
        assert_eq!(
            pod.pointer("/spec/initContainers/0/securityContext/capabilities/add/0"),
            Some(&json!("NET_ADMIN"))
        );
        assert_eq!(
            pod.pointer("/spec/containers/0/securityContext/runAsUser"),
            Some(&json!(1337))
        );
        assert!(pod.pointer("/spec/containers/0/ports").is_none());
        assert!(pod.pointer("/spec/containers/0/image").is_none());
        assert!(pod.pointer("/metadata/ownerReferences").is_some());
    }

    #[test]
    fn trims_a_controllers_template() {
        let mut deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "managedFields": []},
            "spec": {"template": {"spec": {
                "volumes": [{"name": "v"}],
                "containers": [{"name": "app", "env": [{"name": "A", "value": "1"}]}]
            }}}
        });
        trim(&mut deployment, &["spec", "template", "spec"]);
        assert!(deployment.pointer("/spec/template/spec/volumes").is_none());
        assert!(deployment
            .pointer("/spec/template/spec/containers/0/env")
            .is_none());
        assert_eq!(
            deployment.pointer("/spec/template/spec/containers/0/name"),
            Some(&json!("app"))
        );
    }

    /// Decoding the projection of what a real API server sends gives the
    /// rules the same view as decoding the whole object.
    #[test]
    fn the_projection_keeps_everything_the_rules_read() {
        use crate::subject::{decode, Kind, Object, Workload};
        let decoded = |kind, object: Value| match decode(kind, object, "default", "") {
            Ok(Object::Workload(w)) => w,
            other => panic!("{other:?}"),
        };
        // What only the mutation reads is not projected.
        let read_by_rules = |mut w: Workload| {
            w.spec.volumes = None;
            let spec = &mut w.spec;
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers.chain(spec.ephemeral_containers.iter_mut().flatten()) {
                c.volume_mounts = None;
                let name = c.name.clone();
                c.env = c.env.take().and_then(|env| {
                    let read: Vec<_> = env
                        .into_iter()
                        .filter(|v| rules_read_env(&name, &v.name))
                        .collect();
                    (!read.is_empty()).then_some(read)
                });
                if !rules_read_lifecycle_of(&name) {
                    c.lifecycle = None;
                }
            }
            format!("{w:?}")
        };
        for (file, kind) in [
            ("pod-create-injected.json", Kind::Pod),
            ("pod-create-server-side-apply.json", Kind::Pod),
            ("deployment-create.json", Kind::Deployment),
            ("statefulset-create.json", Kind::StatefulSet),
            ("daemonset-create.json", Kind::DaemonSet),
            ("job-create.json", Kind::Job),
            ("cronjob-create.json", Kind::CronJob),
        ] {
            let path = format!(
                "{}/tests/fixtures/admission/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let review: Value =
                serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            let object = review["request"]["object"].clone();
            let mut projected = object.clone();
            trim(&mut projected, kind.row().pod_spec.unwrap());
            assert!(
                projected.to_string().len() < object.to_string().len() / 2,
                "{file}"
            );
            assert_eq!(
                read_by_rules(decoded(kind, projected)),
                read_by_rules(decoded(kind, object)),
                "{file}"
            );
        }
    }

    #[test]
    fn a_watched_object_is_trimmed_as_its_json_would_be() {
        let mut dynamic: DynamicObject = serde_json::from_value(pod()).unwrap();
        project_dynamic(Kind::Pod, &mut dynamic);
        let mut value = pod();
        project(Kind::Pod, &mut value);
        assert_eq!(serde_json::to_value(&dynamic).unwrap(), value);
    }

    #[test]
    fn finds_the_controlling_owner_only() {
        let pod = pod();
        assert_eq!(
            controller_of(&pod),
            Some(("apps/v1".into(), "ReplicaSet".into(), "web-5d".into()))
        );
        let not_controller = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "2"}
        ]}});
        assert_eq!(controller_of(&not_controller), None);
    }
}
