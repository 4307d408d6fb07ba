//! Subject extraction: an object from a review or a manifest, parsed once into
//! a typed value the rules can read. Pods and the pod templates of every
//! controller kind become one [`Workload`] view, so each workload rule is
//! written once.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use crate::kinds::{KindSet, TableKind};
use kube::Resource;

pub use crate::kinds::Kind;

#[macro_use]
mod typed;
pub use typed::Judged;

mod lean;
mod pod;
mod workload;

pub use lean::LAST_APPLIED;
pub(crate) use pod::once;
pub use pod::{
    is_istio_container, rules_read_env, rules_read_lifecycle_of, ContainerView, PodSpecView,
    VolumeView, CONTAINER_FIELDS_READ_BY_RULES, POD_SPEC_FIELDS_READ_BY_RULES,
};
use workload::decode_workload;
pub use workload::{UnplacedWorkload, WorkloadSeed};

/// A pod, or the pod a controller's template will create.
#[derive(Debug, Clone)]
pub struct Workload {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// Labels and annotations of the pod (the template's, for controllers).
    pub pod_meta: ObjectMeta,
    /// A CronJob's `spec.jobTemplate.metadata`: `istioctl kube-inject`
    /// writes its injection mark there rather than on the pod template.
    /// Boxed: only CronJobs have one, and an `ObjectMeta` inline would make
    /// every workload, moved on each review, ~40% larger.
    pub job_template_meta: Option<Box<ObjectMeta>>,
    pub spec: PodSpecView,
}

impl Workload {
    /// Pods reach validation after the sidecar injector ran; templates never
    /// get injected themselves.
    pub fn is_pod(&self) -> bool {
        self.kind == Kind::Pod
    }

    pub fn pod_labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.pod_meta.labels.as_ref().unwrap_or(&EMPTY)
    }

    pub fn pod_label(&self, key: &str) -> Option<&str> {
        self.pod_meta.labels.as_ref()?.get(key).map(String::as_str)
    }

    pub fn pod_annotation(&self, key: &str) -> Option<&str> {
        self.pod_meta
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// An annotation of the CronJob's job template (see `job_template_meta`).
    pub fn job_template_annotation(&self, key: &str) -> Option<&str> {
        self.job_template_meta
            .as_ref()?
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
}

/// A Namespace as the rules see it.
#[derive(Debug, Clone)]
pub struct NamespaceObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

crate::kinds::typed_kinds!(typed_objects! {});

impl Judged for Workload {
    const KINDS: KindSet = KindSet::WORKLOADS;
    fn of(object: &Object) -> Option<&Self> {
        match object {
            Object::Workload(w) => Some(w),
            _ => None,
        }
    }
}

impl Judged for NamespaceObject {
    const KINDS: KindSet = KindSet::of(Kind::Namespace);
    fn of(object: &Object) -> Option<&Self> {
        match object {
            Object::Namespace(n) => Some(n),
            _ => None,
        }
    }
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

impl Object {
    /// The namespace the object lives in; a Namespace is its own.
    pub fn namespace(&self) -> &str {
        match self {
            Object::Workload(w) => &w.namespace,
            Object::Namespace(n) => &n.name,
            _ => self
                .meta()
                .and_then(|m| m.namespace.as_deref())
                .unwrap_or(""),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::Workload(w) => &w.name,
            Object::Namespace(n) => &n.name,
            _ => self.meta().and_then(|m| m.name.as_deref()).unwrap_or(""),
        }
    }

    /// The labels exemption selectors match: the pod's labels for workloads, so
    /// one selector covers a Deployment and the pods it creates.
    pub fn selector_labels(&self) -> &BTreeMap<String, String> {
        match self {
            Object::Workload(w) => w.pod_labels(),
            Object::Namespace(n) => &n.labels,
            _ => self
                .meta()
                .and_then(|m| m.labels.as_ref())
                .unwrap_or(&NO_LABELS),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Namespace(n) => write!(f, "namespace {}", n.name),
            _ => write!(f, "{} {}/{}", self.kind(), self.namespace(), self.name()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot decode the {kind} object: {source}")]
pub struct DecodeError {
    pub kind: &'static str,
    #[source]
    pub source: serde_json::Error,
}

/// Something a typed object can be decoded from: a raw review payload, or a
/// manifest document already turned into JSON.
///
/// Both refuse anything but a JSON object before typed decoding, and decode
/// through [`crate::strict`]: derived `Deserialize` structs (the Istio and
/// cert-manager ones) accept a JSON array as a sequence of fields, so
/// `[{...}]` would otherwise decode to an object with an empty spec and pass
/// every rule, at the top or at any depth.
pub trait ObjectSource {
    fn decode<T: DeserializeOwned>(self) -> Result<T, serde_json::Error>;
    /// The object's own `apiVersion` and `kind`, when it states them.
    fn type_meta(&self) -> Result<TypeHeader, serde_json::Error>;
}

/// `apiVersion` and `kind` as an object states them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeHeader {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
}

fn not_an_object(found: serde::de::Unexpected<'_>) -> serde_json::Error {
    serde::de::Error::invalid_type(found, &"a JSON object")
}

impl ObjectSource for &serde_json::value::RawValue {
    fn decode<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        object_text(self.get())?;
        crate::strict::from_str(self.get())
    }

    fn type_meta(&self) -> Result<TypeHeader, serde_json::Error> {
        crate::strict::from_str(object_text(self.get())?)
    }
}

/// JSON text, as the background audit keeps it (reassembled from shared parts).
impl ObjectSource for &str {
    fn decode<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        crate::strict::from_str(object_text(self)?)
    }

    fn type_meta(&self) -> Result<TypeHeader, serde_json::Error> {
        crate::strict::from_str(object_text(self)?)
    }
}

/// `text` when it is a JSON object; the error names what it is instead.
pub fn object_text(text: &str) -> Result<&str, serde_json::Error> {
    use serde::de::Unexpected;
    let found = match text.trim_start().as_bytes().first() {
        Some(b'{') => return Ok(text),
        Some(b'[') => Unexpected::Seq,
        Some(b'"') => Unexpected::Other("a string"),
        Some(b'n') => Unexpected::Unit,
        Some(b't' | b'f') => Unexpected::Other("a boolean"),
        _ => Unexpected::Other("a number"),
    };
    Err(not_an_object(found))
}

impl ObjectSource for serde_json::Value {
    fn decode<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        self.type_meta()?;
        crate::strict::from_value(self)
    }

    fn type_meta(&self) -> Result<TypeHeader, serde_json::Error> {
        use serde::de::Unexpected;
        use serde_json::Value;
        let map = match self {
            Value::Object(map) => map,
            Value::Array(_) => return Err(not_an_object(Unexpected::Seq)),
            Value::Null => return Err(not_an_object(Unexpected::Unit)),
            _ => return Err(not_an_object(Unexpected::Other("a scalar"))),
        };
        let field = |name: &str| -> Result<Option<String>, serde_json::Error> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(serde::de::Error::invalid_type(
                    Unexpected::Other("a non-string"),
                    &"a string",
                )),
            }
        };
        Ok(TypeHeader {
            api_version: field("apiVersion")?,
            kind: field("kind")?,
        })
    }
}

/// Decodes `source` as `kind`. `namespace` and `name` fill in what the object
/// itself may leave out (the API server passes them beside the object; a
/// manifest may omit the namespace).
pub fn decode(
    kind: Kind,
    source: impl ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<Object, DecodeError> {
    let decoded = match kind {
        Kind::Namespace => source.decode().map(|ns: Namespace| {
            Object::Namespace(NamespaceObject {
                name: display_name(&ns.metadata, name),
                labels: ns.metadata.labels.unwrap_or_default(),
            })
        }),
        _ if kind.is_workload() => {
            decode_workload(kind, source, namespace, name).map(Object::Workload)
        }
        _ => decode_typed(kind, source, namespace, name),
    };
    decoded.map_err(|source| DecodeError {
        kind: kind.as_str(),
        source,
    })
}

/// Decodes an object with standard metadata, filling in the namespace and
/// name the API server passes beside the object (a manifest may leave the
/// namespace out). k8s-openapi types check their own `apiVersion` and
/// `kind`; these serde structs do not, so a stated kind must be `kind`.
fn placed<T: Resource + DeserializeOwned>(
    kind: Kind,
    source: impl ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<T, serde_json::Error> {
    let header = source.type_meta()?;
    if let Some(stated) = header.kind.as_deref() {
        let api_version = header.api_version.as_deref().unwrap_or_default();
        if Kind::from_api_version(api_version, stated) != Some(kind) {
            return Err(serde::de::Error::custom(format_args!(
                "the object is a {stated} of apiVersion {api_version:?}, not a {}",
                kind.as_str()
            )));
        }
    }
    let mut object: T = source.decode()?;
    let m = object.meta_mut();
    if m.namespace.as_deref().is_none_or(str::is_empty) {
        m.namespace = Some(namespace.to_owned());
    }
    if m.name.as_deref().is_none_or(str::is_empty) && !name.is_empty() {
        m.name = Some(name.to_owned());
    }
    Ok(object)
}

/// The object's name; for objects named by the API server (`generateName`),
/// the prefix followed by `*`.
fn display_name(meta: &ObjectMeta, fallback: &str) -> String {
    if let Some(name) = meta.name.as_deref().filter(|n| !n.is_empty()) {
        return name.to_owned();
    }
    if !fallback.is_empty() {
        return fallback.to_owned();
    }
    match meta.generate_name.as_deref() {
        Some(prefix) if !prefix.is_empty() => format!("{prefix}*"),
        _ => "<unnamed>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cronjob_template_becomes_a_workload() {
        let cj = json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 0 * * *", "jobTemplate": {
                "metadata": {"annotations": {"sidecar.istio.io/status": "{}"}},
                "spec": {"template": {
                "metadata": {"labels": {"app": "report"}},
                "spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Never"}
            }}}}
        });
        let Ok(Object::Workload(w)) = decode(Kind::CronJob, cj, "shop", "") else {
            panic!("a CronJob decodes to a workload");
        };
        assert_eq!(w.namespace, "shop");
        assert_eq!(w.name, "nightly");
        assert_eq!(w.pod_label("app"), Some("report"));
        assert_eq!(w.spec.containers[0].name, "c");
        assert!(!w.is_pod());
        // kube-inject marks the job template, not the pod template.
        assert_eq!(
            w.job_template_annotation("sidecar.istio.io/status"),
            Some("{}")
        );
        assert_eq!(w.pod_annotation("sidecar.istio.io/status"), None);
    }

    #[test]
    fn generated_names_show_their_prefix() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "web-7d9f-", "namespace": "shop"},
            "spec": {"containers": []}});
        let object = decode(Kind::Pod, pod, "", "").unwrap();
        assert_eq!(object.to_string(), "pod shop/web-7d9f-*");
    }

    #[test]
    fn a_wrong_shape_is_an_error_not_an_empty_object() {
        let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": "nope"}}}});
        let e = decode(Kind::Deployment, bad, "shop", "x").unwrap_err();
        assert!(e.to_string().contains("Deployment"), "{e}");
    }

    #[test]
    fn istio_objects_take_the_request_namespace_when_they_omit_it() {
        let pa = json!({"apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
            "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "STRICT"}}});
        let object = decode(Kind::PeerAuthentication, pa, "shop", "default").unwrap();
        assert_eq!(object.to_string(), "peerauthentication shop/default");
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"a": "b"}}});
        let object = decode(Kind::Namespace, ns, "", "shop").unwrap();
        assert_eq!(object.to_string(), "namespace shop");
        assert_eq!(object.namespace(), "shop");
        assert_eq!(object.selector_labels()["a"], "b");
    }

    #[test]
    fn arrays_and_other_kinds_never_decode_as_istio_objects() {
        let pa = json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default"}, "spec": {"mtls": {"mode": "PERMISSIVE"}}});
        let raw = serde_json::value::to_raw_value(&json!([pa.clone()])).unwrap();
        let e = decode(Kind::PeerAuthentication, raw.as_ref(), "shop", "").unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let e = decode(Kind::AuthorizationPolicy, json!([pa.clone()]), "shop", "").unwrap_err();
        assert!(e.to_string().contains("expected a JSON object"), "{e}");
        let e = decode(Kind::AuthorizationPolicy, pa, "shop", "").unwrap_err();
        assert!(e.to_string().contains("not a AuthorizationPolicy"), "{e}");
    }

    #[test]
    fn kinds_map_from_api_version_strings() {
        assert_eq!(
            Kind::from_api_version("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_api_version("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(Kind::from_api_version("v1", "Service"), None);
        assert_eq!(Kind::from_api_version("apps/v1beta1", "Deployment"), None);
    }
}
