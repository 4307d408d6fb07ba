//! What the engine keeps of each object: its trimmed text, decoded again
//! for each judgement, and what indexes it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;

use crate::policy::Judgement;
use crate::subject::{self, Kind};
use crate::watch::projection::{controller_of, project};

use super::engine::key;
use super::ObjectRef;

/// One object. Held as its trimmed JSON text and decoded again for each
/// judgement: a decoded pod (its security contexts are k8s-openapi types,
/// mostly empty options inline) takes several times the memory of its
/// text, and clusters hold many pods. The `spec` of a pod or controller is
/// held apart and shared ([`Specs`]): a controller's replicas have the same
/// trimmed spec, so 50,000 pods hold a few thousand spec texts.
///
/// The reference and the judgement are shared with the reported verdict
/// (`Arc`), not copied into it: most objects are reported as judged.
pub(super) struct Stored {
    /// The trimmed JSON text, without `spec` when that is in `spec`.
    pub source: Box<str>,
    pub spec: Option<Arc<str>>,
    pub reference: Arc<ObjectRef>,
    /// The key of the controlling owner, when it is a judged kind.
    pub controller: Option<Arc<str>>,
    pub raw: Option<Arc<Judgement>>,
}

impl Stored {
    /// The object's trimmed JSON text, `spec` put back.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.spec {
            None => Cow::Borrowed(&self.source),
            Some(spec) => Cow::Owned(with_spec(&self.source, spec)),
        }
    }

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

/// `object` (JSON object text) with `"spec": spec` added as its last field.
fn with_spec(object: &str, spec: &str) -> String {
    let body = object.strip_suffix('}').unwrap_or(object);
    let comma = if body.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    let mut text = String::with_capacity(object.len() + spec.len() + 9);
    text.extend([body, comma, "\"spec\":", spec, "}"]);
    text
}

/// The spec texts the stored objects share, each held once.
#[derive(Default)]
pub(super) struct Specs(HashSet<Arc<str>>);

impl Specs {
    fn intern(&mut self, text: String) -> Arc<str> {
        if let Some(shared) = self.0.get(text.as_str()) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.0.insert(shared.clone());
        shared
    }

    /// Forgets what a dropped object held, when no other object shares it.
    pub fn release(&mut self, old: Stored) {
        if let Some(spec) = old.spec {
            if Arc::strong_count(&spec) == 2 {
                self.0.remove(&*spec);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// What the engine keeps of `value` (trimmed first), and a Certificate's
/// expiry; `None`, logged, when it cannot be judged.
/// A Certificate's `status.notAfter`, in seconds.
fn certificate_not_after(kind: Kind, value: &Value) -> Option<i64> {
    (kind == Kind::Certificate)
        .then(|| value.pointer("/status/notAfter").cloned())
        .flatten()
        .and_then(|v| serde_json::from_value::<Time>(v).ok())
        .map(|t| t.0.as_second())
}

pub(super) fn stored(
    kind: Kind,
    mut value: Value,
    specs: &mut Specs,
) -> Option<(Stored, Option<i64>)> {
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
    let not_after = certificate_not_after(kind, &value);
    let reference = ObjectRef {
        api_version: str_at(&value, "/apiVersion").to_owned(),
        kind,
        namespace,
        name,
        uid: str_at(&value, "/metadata/uid").to_owned(),
    };
    let (namespace, name) = (&reference.namespace, &reference.name);
    let spec = kind
        .row()
        .pod_spec
        .and_then(|_| value.as_object_mut()?.remove("spec"));
    let encoded = serde_json::to_string(&value).and_then(|source| {
        let spec = spec.map(|s| serde_json::to_string(&s)).transpose()?;
        Ok((source.into_boxed_str(), spec))
    });
    let (source, spec) = encoded
        .inspect_err(|error| {
            tracing::warn!(%kind, %namespace, %name, %error, "background audit: cannot encode; skipped");
        })
        .ok()?;
    let mut stored = Stored {
        source,
        spec: None,
        reference: Arc::new(reference),
        controller,
        raw: None,
    };
    stored.spec = spec.map(|text| specs.intern(text));
    // Decoded once here, from the text a pass decodes, so that an object
    // that cannot be judged is logged once, not on every pass.
    let r = &stored.reference;
    let object = subject::decode(kind, &*stored.text(), &r.namespace, &r.name)
        .inspect_err(|error| {
            tracing::warn!(%kind, namespace = %r.namespace, name = %r.name, %error, "background audit: cannot decode; skipped");
        })
        .ok()?;
    debug_assert_eq!(stored.scope(), object.namespace());
    Some((stored, not_after))
}
