//! The workload-certificate mount. The loopback hop between an application
//! and its sidecar is plaintext, and applications hold no certificate of
//! their own to speak mTLS on it. `/mutate` gives them one: a shared
//! in-memory volume, mounted read-only into every application container, that
//! the sidecar fills with its certificate, key and root (Istio's
//! `OUTPUT_CERTS`), or a named Secret (cert-manager, SPIFFE CSI) instead.
//!
//! Planning is pure: the pod in, RFC 6902 operations and warnings out. A pod
//! already patched yields no operations, so the webhook can be reinvoked.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, SecretVolumeSource, Volume, VolumeMount,
};
use serde_json::{json, Value};

use crate::config::{CertificateSource, WorkloadCertificates};
use crate::injection::PROXY_CONTAINER;
use crate::subject::{ContainerView, Workload};

pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
pub const MARKER: &str = "meshgate.io/cert-mount";
const OUTPUT_CERTS: &str = "OUTPUT_CERTS";

mod annotations;
mod policy;

use annotations::{annotation_op, annotation_ops};
pub(super) use policy::review;

/// What `/mutate` did with a pod, for metrics
/// (`meshgate_mutations_total{outcome}`). A [`Plan`] ends in one of the
/// first three; the policy in front of it in the last three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Patched,
    /// Everything was already in place.
    Unchanged,
    /// Something in the pod is in the way; nothing was patched.
    Conflict,
    /// Not eligible (namespace not enrolled, no sidecar to fill the
    /// volume) or the rule is off.
    Skipped,
    /// A configured exemption lifts the rule for this pod.
    Exempted,
    /// Audit mode: reported in a warning, not patched.
    Audit,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Conflict => "conflict",
            Outcome::Skipped => "skipped",
            Outcome::Exempted => "exempted",
            Outcome::Audit => "audit",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub operations: Vec<PatchOperation>,
    /// Single-line texts for admission warnings.
    pub warnings: Vec<String>,
    pub outcome: Outcome,
}

impl Plan {
    fn conflict(warning: String) -> Self {
        Plan {
            operations: Vec::new(),
            warnings: vec![warning],
            outcome: Outcome::Conflict,
        }
    }
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    // k8s-openapi types always serialize.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Plans the patch for a pod (its pod view from subject extraction).
pub fn plan(pod: &Workload, settings: &WorkloadCertificates) -> Plan {
    let subject = format!("pod {}/{}", pod.namespace, pod.name);
    let warn = |what: String| format!("[meshgate] workload-certificates: {subject}: {what}");
    let name = settings.volume_name.as_str();
    let path = settings.mount_path.as_str();

    let mut ops = match volume_ops(pod, settings) {
        Ok(ops) => ops,
        Err(problem) => return Plan::conflict(warn(problem)),
    };
    // The sidecar writes its certificates into the volume.
    if settings.source == CertificateSource::Sidecar {
        match sidecar_ops(pod, name, path) {
            Ok(sidecar) => ops.extend(sidecar),
            Err(problem) => return Plan::conflict(warn(problem)),
        }
    }
    let mut problems = Vec::new();
    ops.extend(mount_ops(pod, name, path, &mut problems));
    let warnings: Vec<String> = problems.into_iter().map(warn).collect();

    if !ops.is_empty() && pod.pod_annotation(MARKER).is_none() {
        ops.push(annotation_op(pod, MARKER, path.to_owned(), &ops));
    }
    let outcome = match (ops.is_empty(), warnings.is_empty()) {
        (false, _) => Outcome::Patched,
        (true, true) => Outcome::Unchanged,
        (true, false) => Outcome::Conflict,
    };
    Plan {
        operations: ops,
        warnings,
        outcome,
    }
}

/// The volume the certificates are in, as `settings` describe it.
fn desired_volume(settings: &WorkloadCertificates) -> Volume {
    Volume {
        name: settings.volume_name.clone(),
        empty_dir: matches!(settings.source, CertificateSource::Sidecar).then(|| {
            EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..Default::default()
            }
        }),
        secret: match &settings.source {
            CertificateSource::Secret(secret) => Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                ..Default::default()
            }),
            CertificateSource::Sidecar => None,
        },
        ..Default::default()
    }
}

/// Adds the volume unless it is there; a different volume of the same name
/// is a conflict.
fn volume_ops(
    pod: &Workload,
    settings: &WorkloadCertificates,
) -> Result<Vec<PatchOperation>, String> {
    let desired = desired_volume(settings);
    let name = &desired.name;
    match pod.spec.volumes.as_ref() {
        None => Ok(vec![add(&["spec", "volumes"], json!([to_value(&desired)]))]),
        Some(volumes) => match volumes.iter().find(|v| v.name == *name) {
            Some(existing) if existing.decoded().is_ok_and(|v| v == desired) => Ok(Vec::new()),
            Some(_) => Err(format!(
                "a different volume named \"{name}\" already exists; workload certificates not mounted"
            )),
            None => Ok(vec![add(&["spec", "volumes", "-"], to_value(&desired))]),
        },
    }
}

/// A read-only mount in every application container; containers where
/// something is in the way are named in `problems` and left alone.
fn mount_ops(
    pod: &Workload,
    name: &str,
    path: &str,
    problems: &mut Vec<String>,
) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    for (i, container) in pod.spec.containers.iter().enumerate() {
        if container.name == PROXY_CONTAINER {
            continue;
        }
        match mount_state(container, name, path) {
            MountState::Present => {}
            MountState::Conflict(problem) => problems.push(format!(
                "container \"{}\" {problem}; workload certificates not mounted there",
                container.name
            )),
            MountState::Absent => {
                let mount = to_value(&VolumeMount {
                    name: name.to_owned(),
                    mount_path: path.to_owned(),
                    read_only: Some(true),
                    ..Default::default()
                });
                let index = i.to_string();
                ops.push(match container.volume_mounts {
                    None => add(
                        &["spec", "containers", &index, "volumeMounts"],
                        json!([mount]),
                    ),
                    Some(_) => add(&["spec", "containers", &index, "volumeMounts", "-"], mount),
                });
            }
        }
    }
    ops
}

enum MountState {
    Present,
    Absent,
    Conflict(String),
}

fn mount_state(container: &ContainerView, name: &str, path: &str) -> MountState {
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    if mounts
        .iter()
        .any(|m| m.name == name && m.mount_path == path)
    {
        return MountState::Present;
    }
    if let Some(m) = mounts.iter().find(|m| m.mount_path == path) {
        return MountState::Conflict(format!("already mounts volume \"{}\" at {path}", m.name));
    }
    if let Some(m) = mounts.iter().find(|m| m.name == name) {
        return MountState::Conflict(format!(
            "already mounts volume \"{name}\" at {}",
            m.mount_path
        ));
    }
    MountState::Absent
}

/// How the sidecar is told to write its certificates: on the `istio-proxy`
/// container itself when the injector already ran, else through Istio's own
/// pod annotations, which the injector applies.
fn sidecar_ops(pod: &Workload, name: &str, path: &str) -> Result<Vec<PatchOperation>, String> {
    let spec = &pod.spec;
    let proxy = spec
        .containers
        .iter()
        .position(|c| c.name == PROXY_CONTAINER)
        .map(|i| ("containers", i, &spec.containers[i]))
        .or_else(|| {
            spec.init_containers
                .iter()
                .flatten()
                .enumerate()
                .find_map(|(i, c)| {
                    (c.name == PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always"))
                        .then_some(("initContainers", i, c))
                })
        });
    match proxy {
        Some((list, index, container)) => proxy_container_ops(list, index, container, name, path),
        None => annotation_ops(pod, name, path),
    }
}

fn proxy_container_ops(
    list: &str,
    index: usize,
    proxy: &ContainerView,
    name: &str,
    path: &str,
) -> Result<Vec<PatchOperation>, String> {
    let index = index.to_string();
    let mut ops = Vec::new();
    let env = proxy.env.as_deref().unwrap_or_default();
    match env.iter().find(|e| e.name == OUTPUT_CERTS) {
        Some(e) if e.value.as_deref() == Some(path) => {}
        Some(e) => {
            return Err(format!(
                "istio-proxy already writes its certificates to {:?} (OUTPUT_CERTS)",
                e.value.as_deref().unwrap_or("")
            ))
        }
        None => {
            let var = to_value(&EnvVar {
                name: OUTPUT_CERTS.into(),
                value: Some(path.into()),
                value_from: None,
            });
            ops.push(match proxy.env {
                None => add(&["spec", list, &index, "env"], json!([var])),
                Some(_) => add(&["spec", list, &index, "env", "-"], var),
            });
        }
    }
    match mount_state(proxy, name, path) {
        MountState::Present => {}
        MountState::Conflict(problem) => return Err(format!("istio-proxy {problem}")),
        MountState::Absent => {
            // Writable: the proxy writes the files.
            let mount = to_value(&VolumeMount {
                name: name.into(),
                mount_path: path.into(),
                ..Default::default()
            });
            ops.push(match proxy.volume_mounts {
                None => add(&["spec", list, &index, "volumeMounts"], json!([mount])),
                Some(_) => add(&["spec", list, &index, "volumeMounts", "-"], mount),
            });
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests;
