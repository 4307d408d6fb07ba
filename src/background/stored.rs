//! What the engine keeps of each object: its trimmed text, decoded again
//! for each judgement, and what indexes it.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::policy::Judgement;
use crate::subject::{self, Kind};
use crate::watch::projection::{controller_of, project};

use super::engine::key;
use super::ObjectRef;

/// One object. Held as its trimmed JSON text and decoded again for each
/// judgement: a decoded pod (its security contexts are k8s-openapi types,
/// mostly empty options inline) takes several times the memory of its
/// text, and clusters hold many pods.
///
/// The reference and the judgement are shared with the reported verdict
/// (`Arc`), not copied into it: most objects are reported as judged.
pub(super) struct Stored {
    pub source: Box<RawValue>,
    pub reference: Arc<ObjectRef>,
    /// The key of the controlling owner, when it is a judged kind.
    pub controller: Option<Arc<str>>,
    pub raw: Option<Arc<Judgement>>,
}

impl Stored {
    /// The namespace the object is judged in (a Namespace's own name), as
    /// `subject::Object::namespace` gives it; derived rather than stored.
    pub fn scope(&self) -> &str {
        let r = &self.reference;
        match r.kind {
            Kind::Namespace => &r.name,
            _ => &r.namespace,
        }
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// What the engine keeps of `value` (trimmed first), and a Certificate's
/// expiry; `None`, logged, when it cannot be judged.
pub(super) fn stored(kind: Kind, mut value: Value) -> Option<(Stored, Option<i64>)> {
    project(kind, &mut value);
    let name = str_at(&value, "/metadata/name").to_owned();
    let namespace = match kind {
        Kind::Namespace => String::new(),
        _ => str_at(&value, "/metadata/namespace").to_owned(),
    };
    let controller = controller_of(&value).and_then(|(api_version, owner_kind, owner)| {
        Kind::from_api_version(&api_version, &owner_kind)
            .filter(|k| k.is_workload())
            .map(|k| Arc::from(key(k, &namespace, &owner)))
    });
    let not_after = (kind == Kind::Certificate)
        .then(|| value.pointer("/status/notAfter").cloned())
        .flatten()
        .and_then(|v| serde_json::from_value::<Time>(v).ok())
        .map(|t| t.0.as_second());
    let reference = ObjectRef {
        api_version: str_at(&value, "/apiVersion").to_owned(),
        kind,
        namespace,
        name,
        uid: str_at(&value, "/metadata/uid").to_owned(),
    };
    let (namespace, name) = (&reference.namespace, &reference.name);
    let source = serde_json::value::to_raw_value(&value)
        .inspect_err(|error| {
            tracing::warn!(%kind, %namespace, %name, %error, "background audit: cannot encode; skipped");
        })
        .ok()?;
    // Decoded once here so that an object that cannot be judged is logged
    // once, not on every pass.
    let object = subject::decode(kind, value, namespace, name)
        .inspect_err(|error| {
            tracing::warn!(%kind, %namespace, %name, %error, "background audit: cannot decode; skipped");
        })
        .ok()?;
    let stored = Stored {
        source,
        reference: Arc::new(reference),
        controller,
        raw: None,
    };
    debug_assert_eq!(stored.scope(), object.namespace());
    Some((stored, not_after))
}
