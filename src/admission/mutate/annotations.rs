//! The mount for a sidecar Istio injects later: two pod annotations the
//! injector reads, each merged into what the pod already says.

use std::collections::BTreeMap;

use json_patch::{PatchOperation, ReplaceOperation};
use serde_json::{json, Map, Value};

use crate::subject::Workload;

use super::{add, pointer, OUTPUT_CERTS, PROXY_CONFIG, USER_VOLUME_MOUNT};

pub(super) fn annotation_ops(
    pod: &Workload,
    name: &str,
    path: &str,
) -> Result<Vec<PatchOperation>, String> {
    let mut ops = Vec::new();
    if let Some(text) = proxy_config(pod, path)? {
        ops.push(annotation_op(pod, PROXY_CONFIG, text, &ops));
    }
    if let Some(text) = user_volume_mount(pod, name, path)? {
        ops.push(annotation_op(pod, USER_VOLUME_MOUNT, text, &ops));
    }
    Ok(ops)
}

/// `proxy.istio.io/config` is ProxyConfig in YAML: OUTPUT_CERTS merged into
/// its proxyMetadata, keeping everything else; `None` when already there.
fn proxy_config(pod: &Workload, path: &str) -> Result<Option<String>, String> {
    let mut config: Map<String, Value> = match pod.pod_annotation(PROXY_CONFIG) {
        None => Map::new(),
        Some(text) if text.trim().is_empty() => Map::new(),
        Some(text) => match serde_yaml_ng::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(format!("the {PROXY_CONFIG} annotation is not a YAML mapping; not merging OUTPUT_CERTS into it")),
        },
    };
    let metadata = config
        .entry("proxyMetadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else {
        return Err(format!(
            "proxyMetadata in the {PROXY_CONFIG} annotation is not a mapping"
        ));
    };
    match metadata.get(OUTPUT_CERTS).and_then(Value::as_str) {
        Some(existing) if existing == path => Ok(None),
        Some(existing) => Err(format!(
            "the {PROXY_CONFIG} annotation already sets OUTPUT_CERTS to {existing:?}"
        )),
        None => {
            metadata.insert(OUTPUT_CERTS.into(), Value::String(path.into()));
            // JSON is YAML: Istio reads it back unchanged.
            text(&config).map(Some)
        }
    }
}

/// `sidecar.istio.io/userVolumeMount`: a JSON object of name -> VolumeMount,
/// with the mount added; `None` when already there.
fn user_volume_mount(pod: &Workload, name: &str, path: &str) -> Result<Option<String>, String> {
    let mut mounts: Map<String, Value> = match pod.pod_annotation(USER_VOLUME_MOUNT) {
        None => Map::new(),
        Some(text) if text.trim().is_empty() => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(format!(
                    "the {USER_VOLUME_MOUNT} annotation is not a JSON object"
                ))
            }
        },
    };
    let existing_path = mounts
        .get(name)
        .map(|m| m.get("mountPath").and_then(Value::as_str).unwrap_or(""));
    match existing_path {
        Some(p) if p == path => return Ok(None),
        Some(p) => {
            return Err(format!(
                "the {USER_VOLUME_MOUNT} annotation already mounts \"{name}\" at {p:?}"
            ))
        }
        None => {}
    }
    if let Some((other, _)) = mounts
        .iter()
        .find(|(_, m)| m.get("mountPath").and_then(Value::as_str) == Some(path))
    {
        return Err(format!(
            "the {USER_VOLUME_MOUNT} annotation already mounts \"{other}\" at {path}"
        ));
    }
    mounts.insert(name.into(), json!({"mountPath": path}));
    text(&mounts).map(Some)
}

/// A JSON map as text; says so rather than writing an empty annotation.
fn text(map: &Map<String, Value>) -> Result<String, String> {
    serde_json::to_string(map).map_err(|e| format!("cannot write the annotation: {e}"))
}

/// Sets one annotation, creating the map when the pod has none (and no
/// earlier operation of this patch created it already).
pub(super) fn annotation_op(
    pod: &Workload,
    key: &str,
    value: String,
    earlier: &[PatchOperation],
) -> PatchOperation {
    let annotations_path = pointer(&["metadata", "annotations"]);
    let map_created = earlier
        .iter()
        .any(|op| matches!(op, PatchOperation::Add(a) if a.path == annotations_path));
    match &pod.pod_meta.annotations {
        None if !map_created => add(
            &["metadata", "annotations"],
            Value::Object(
                BTreeMap::from([(key.to_owned(), Value::String(value))])
                    .into_iter()
                    .collect(),
            ),
        ),
        Some(existing) if existing.contains_key(key) => PatchOperation::Replace(ReplaceOperation {
            path: pointer(&["metadata", "annotations", key]),
            value: Value::String(value),
        }),
        _ => add(&["metadata", "annotations", key], Value::String(value)),
    }
}
