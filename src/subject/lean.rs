//! What decoding a workload builds: its metadata without `managedFields`
//! (k8s-openapi decodes them into `serde_json::Value` trees no rule reads,
//! about half the decoding time of a pod a real API server sends) and its
//! pod template as a [`PodSpecView`]. Every other field is skipped by serde
//! without being built.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::pod::PodSpecView;
use super::Kind;

/// kubectl's copy of the whole object as last applied: as large as the
/// object, full of escaped quotes, and read by no rule. Neither the decode
/// nor the background projection keeps it.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The metadata fields a workload's judgement reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "annotations_read_by_rules")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// The annotations without [`LAST_APPLIED`], whose value is skipped unbuilt.
fn annotations_read_by_rules<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Annotations;
    impl<'de> Visitor<'de> for Annotations {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of strings to strings")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut annotations = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if key == LAST_APPLIED {
                    map.next_value::<IgnoredAny>()?;
                } else {
                    annotations.insert(key, map.next_value()?);
                }
            }
            Ok(Some(annotations))
        }
    }
    deserializer.deserialize_option(Annotations)
}

impl From<LeanMeta> for ObjectMeta {
    fn from(meta: LeanMeta) -> Self {
        ObjectMeta {
            name: meta.name,
            generate_name: meta.generate_name,
            namespace: meta.namespace,
            labels: meta.labels,
            annotations: meta.annotations,
            ..ObjectMeta::default()
        }
    }
}

/// A workload object: its type, metadata and spec.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lean<S> {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: LeanMeta,
    pub spec: Option<S>,
}

impl<S> Lean<S> {
    /// k8s-openapi types refuse a stated `apiVersion` or `kind` other than
    /// their own; so does this.
    pub fn checked<E: serde::de::Error>(self, kind: Kind) -> Result<Self, E> {
        if self.api_version.is_some() || self.kind.is_some() {
            let row = kind.row();
            let own_api_version = match row.group {
                "" => row.versions[0].to_owned(),
                group => format!("{group}/{}", row.versions[0]),
            };
            let api_version = self.api_version.as_deref().unwrap_or(&own_api_version);
            let stated = self.kind.as_deref().unwrap_or(row.kind.as_str());
            if Kind::from_api_version(api_version, stated) != Some(kind) {
                return Err(serde::de::Error::custom(format_args!(
                    "the object is a {stated} of apiVersion {api_version:?}, not a {}",
                    kind.as_str()
                )));
            }
        }
        Ok(self)
    }
}

/// A pod template: the pod's metadata and spec.
#[derive(Debug, Default, Deserialize)]
pub struct TemplateView {
    #[serde(default)]
    pub metadata: Option<LeanMeta>,
    pub spec: Option<PodSpecView>,
}

/// A controller's spec: the pod template is required (Deployment,
/// StatefulSet, DaemonSet, Job), as k8s-openapi has it.
#[derive(Debug, Deserialize)]
pub struct WithTemplate {
    pub template: TemplateView,
}

/// ReplicaSets and ReplicationControllers may leave the template out.
#[derive(Debug, Deserialize)]
pub struct WithOptionalTemplate {
    pub template: Option<TemplateView>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJobSpec {
    pub job_template: JobTemplate,
}

#[derive(Debug, Deserialize)]
pub struct JobTemplate {
    pub metadata: Option<LeanMeta>,
    pub spec: Option<WithTemplate>,
}

pub type LeanPod = Lean<PodSpecView>;

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec};
    use serde_json::Value;

    use crate::subject::{decode, is_istio_container, ContainerView, Object, Workload};

    use super::*;

    /// The pod template k8s-openapi's full type decodes.
    type TemplateOfFull = fn(Value) -> Option<PodTemplateSpec>;

    /// The object of a review the API server sent.
    fn captured(file: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/admission/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let review: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        review["request"]["object"].clone()
    }

    fn workload(kind: Kind, object: &Value) -> Workload {
        let raw = serde_json::value::to_raw_value(object).unwrap();
        match decode(kind, raw.as_ref(), "default", "").unwrap() {
            Object::Workload(w) => w,
            other => panic!("{other:?}"),
        }
    }

    /// What the view should hold of a container k8s-openapi decoded in full.
    fn container_view(c: &Container) -> ContainerView {
        ContainerView {
            name: c.name.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c.env.clone().filter(|_| is_istio_container(&c.name)),
            lifecycle: c.lifecycle.clone().filter(|_| is_istio_container(&c.name)),
            security_context: c.security_context.clone(),
            restart_policy: c.restart_policy.clone(),
            volume_mounts: c.volume_mounts.clone(),
        }
    }

    /// The view holds what the rules read of `full`, the same values.
    fn assert_view_of(view: &PodSpecView, full: &PodSpec, file: &str) {
        let views = |list: &[Container]| list.iter().map(container_view).collect::<Vec<_>>();
        assert_eq!(view.containers, views(&full.containers), "{file}");
        assert_eq!(
            view.init_containers,
            full.init_containers.as_deref().map(views),
            "{file}"
        );
        assert_eq!(view.host_network, full.host_network, "{file}");
        assert_eq!(
            view.service_account_name, full.service_account_name,
            "{file}"
        );
        assert_eq!(view.service_account, full.service_account, "{file}");
        assert_eq!(view.security_context, full.security_context, "{file}");
        let volumes = view.volumes.as_ref().map(|list| {
            list.iter()
                .map(|v| v.decoded().expect("a volume decodes"))
                .collect::<Vec<_>>()
        });
        assert_eq!(volumes, full.volumes, "{file}");
        for (v, decoded) in view
            .volumes
            .iter()
            .flatten()
            .zip(full.volumes.iter().flatten())
        {
            assert_eq!(v.name, decoded.name, "{file}");
        }
    }

    /// The lean decode reads what the full k8s-openapi decode reads, on
    /// what a real API server sends (managedFields, last-applied copies,
    /// status and all).
    #[test]
    fn lean_decoding_matches_the_full_types_on_captured_objects() {
        for file in [
            "pod-create-injected.json",
            "pod-create-plain.json",
            "pod-create-server-side-apply.json",
            "mutate-pod-create.json",
        ] {
            let object = captured(file);
            assert!(object["metadata"]["managedFields"].is_array(), "{file}");
            let full: Pod = serde_json::from_value(object.clone()).unwrap();
            let lean = workload(Kind::Pod, &object);
            assert_eq!(lean.pod_meta.labels, full.metadata.labels, "{file}");
            let mut annotations = full.metadata.annotations.clone();
            if let Some(a) = annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
            assert_eq!(lean.pod_meta.annotations, annotations, "{file}");
            assert_view_of(&lean.spec, full.spec.as_ref().unwrap(), file);
            assert_eq!(Some(lean.name), full.metadata.name, "{file}");
        }
        let templates: [(&str, Kind, TemplateOfFull); 5] = [
            ("deployment-create.json", Kind::Deployment, |v| {
                serde_json::from_value::<Deployment>(v)
                    .unwrap()
                    .spec
                    .map(|s| s.template)
            }),
            ("statefulset-create.json", Kind::StatefulSet, |v| {
                serde_json::from_value::<StatefulSet>(v)
                    .unwrap()
                    .spec
                    .map(|s| s.template)
            }),
            ("daemonset-create.json", Kind::DaemonSet, |v| {
                serde_json::from_value::<DaemonSet>(v)
                    .unwrap()
                    .spec
                    .map(|s| s.template)
            }),
            ("job-create.json", Kind::Job, |v| {
                serde_json::from_value::<Job>(v)
                    .unwrap()
                    .spec
                    .map(|s| s.template)
            }),
            ("cronjob-create.json", Kind::CronJob, |v| {
                serde_json::from_value::<CronJob>(v)
                    .unwrap()
                    .spec
                    .and_then(|s| s.job_template.spec)
                    .map(|s| s.template)
            }),
        ];
        for (file, kind, full_template) in templates {
            let object = captured(file);
            let template = full_template(object.clone()).unwrap();
            let lean = workload(kind, &object);
            assert_view_of(&lean.spec, template.spec.as_ref().unwrap(), file);
            assert_eq!(Some(lean.pod_meta), template.metadata, "{file}");
        }
    }

    #[test]
    fn a_stated_type_must_be_the_decoded_kind() {
        let deployment = captured("deployment-create.json");
        let raw = serde_json::value::to_raw_value(&deployment).unwrap();
        let error = decode(Kind::Pod, raw.as_ref(), "default", "").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("is a Deployment of apiVersion \"apps/v1\", not a Pod"),
            "{error}"
        );
        let mut pod = captured("pod-create-plain.json");
        pod["apiVersion"] = "v2".into();
        let raw = serde_json::value::to_raw_value(&pod).unwrap();
        assert!(decode(Kind::Pod, raw.as_ref(), "default", "").is_err());
        // Neither stated (a manifest fragment): decoded as asked.
        let mut untyped = captured("pod-create-plain.json");
        let fields = untyped.as_object_mut().unwrap();
        fields.remove("apiVersion");
        fields.remove("kind");
        let raw = serde_json::value::to_raw_value(&untyped).unwrap();
        assert!(decode(Kind::Pod, raw.as_ref(), "default", "").is_ok());
    }
}
