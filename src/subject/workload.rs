//! Decoding pods and pod controllers into a [`Workload`]: from a manifest or
//! a raw review object ([`ObjectSource`]), or in place while the review body
//! is parsed ([`WorkloadSeed`]).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;

use super::lean::{
    CronJobSpec, Lean, LeanMeta, LeanPod, TemplateView, WithOptionalTemplate, WithTemplate,
};
use super::{display_name, Kind, ObjectSource, Workload};

/// A pod, or a controller as the pod its template makes.
pub(super) fn decode_workload(
    kind: Kind,
    source: impl ObjectSource,
    namespace: &str,
    name: &str,
) -> Result<Workload, serde_json::Error> {
    let of = template_of(kind, source)?;
    Ok(UnplacedWorkload { kind, of }.place(namespace, name))
}

/// A workload decoded before the namespace and name the review passes
/// beside it are known to fill in what it leaves out: what the review parser
/// builds from the `object` field as it reads the body ([`WorkloadSeed`]).
#[derive(Debug)]
pub struct UnplacedWorkload {
    kind: Kind,
    of: TemplateOf,
}

impl UnplacedWorkload {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The workload in `namespace`, named `name` unless it names itself.
    pub fn place(self, namespace: &str, name: &str) -> Workload {
        let TemplateOf {
            meta,
            template,
            job_template_meta,
        } = self.of;
        let template = template.unwrap_or_default();
        let namespace = meta
            .namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| namespace.to_owned());
        let name = display_name(&meta, name);
        let pod_meta = if self.kind == Kind::Pod {
            meta
        } else {
            template.metadata.unwrap_or_default().into()
        };
        Workload {
            kind: self.kind,
            name,
            namespace,
            pod_meta,
            job_template_meta,
            spec: template.spec.unwrap_or_default(),
        }
    }
}

/// Decodes a workload of `kind` straight from a deserializer positioned at
/// it: the review parser decodes the object in the same pass as the
/// envelope instead of keeping it raw and scanning it again. Its
/// deserializer is [`crate::strict::Strict`] (the review parser's), so the
/// workload's structs refuse sequences too.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadSeed(pub Kind);

impl<'de> serde::de::DeserializeSeed<'de> for WorkloadSeed {
    type Value = UnplacedWorkload;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let of = template_of(self.0, InPlace(d, std::marker::PhantomData))?;
        Ok(UnplacedWorkload { kind: self.0, of })
    }
}

/// Where a workload is decoded from: an [`ObjectSource`], or a deserializer
/// in the middle of a review ([`InPlace`]).
trait WorkloadSource {
    type Error: serde::de::Error;
    fn read<T: DeserializeOwned>(self) -> Result<T, Self::Error>;
}

impl<S: ObjectSource> WorkloadSource for S {
    type Error = serde_json::Error;

    fn read<T: DeserializeOwned>(self) -> Result<T, serde_json::Error> {
        self.decode()
    }
}

/// A deserializer positioned at an object. Like [`ObjectSource`], it takes
/// nothing but a JSON object (a derived struct would also read an array).
struct InPlace<'de, D>(D, std::marker::PhantomData<&'de ()>);

impl<'de, D: serde::Deserializer<'de>> WorkloadSource for InPlace<'de, D> {
    type Error = D::Error;

    fn read<T: DeserializeOwned>(self) -> Result<T, D::Error> {
        struct ObjectOnly<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        self.0.deserialize_map(ObjectOnly(std::marker::PhantomData))
    }
}

/// A workload's own metadata and the pod template it carries.
#[derive(Debug)]
struct TemplateOf {
    meta: ObjectMeta,
    /// A pod is its own template (its metadata stays in `meta`).
    template: Option<TemplateView>,
    /// A CronJob's `spec.jobTemplate.metadata`.
    job_template_meta: Option<Box<ObjectMeta>>,
}

fn template_of<S: WorkloadSource>(kind: Kind, source: S) -> Result<TemplateOf, S::Error> {
    let of = |meta: LeanMeta, template| TemplateOf {
        meta: meta.into(),
        template,
        job_template_meta: None,
    };
    let with_template = |spec: Option<WithTemplate>| spec.map(|s| s.template);
    let with_optional = |spec: Option<WithOptionalTemplate>| spec.and_then(|s| s.template);
    Ok(match kind {
        Kind::Pod => {
            let pod: LeanPod = source.read::<LeanPod>()?.checked(kind)?;
            let template = TemplateView {
                metadata: None,
                spec: pod.spec,
            };
            of(pod.metadata, Some(template))
        }
        Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::Job => {
            let object: Lean<WithTemplate> = source.read::<Lean<_>>()?.checked(kind)?;
            of(object.metadata, with_template(object.spec))
        }
        Kind::ReplicaSet | Kind::ReplicationController => {
            let object: Lean<WithOptionalTemplate> = source.read::<Lean<_>>()?.checked(kind)?;
            of(object.metadata, with_optional(object.spec))
        }
        Kind::CronJob => {
            let cron: Lean<CronJobSpec> = source.read::<Lean<_>>()?.checked(kind)?;
            let (job_template_meta, spec) = cron
                .spec
                .map(|s| (s.job_template.metadata, s.job_template.spec))
                .unwrap_or_default();
            TemplateOf {
                meta: cron.metadata.into(),
                template: with_template(spec),
                job_template_meta: job_template_meta.map(|meta| Box::new(meta.into())),
            }
        }
        other => {
            return Err(serde::de::Error::custom(format!(
                "{} is not a workload",
                other.as_str()
            )))
        }
    })
}
