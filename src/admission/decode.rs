//! What a review asks to judge, decoded once: the request's kind (resolved
//! by the parser), the subresources and operations the kinds table lets
//! through unread, and the object (and old object) as their kind's view, in
//! the namespace the request names.

use kube::core::admission::{AdmissionResponse, Operation};

use crate::rules;
use crate::subject::{self, Kind, Object};

use super::response;
use super::review::{self, ObjectField};

/// The objects of a judged request, decoded.
pub struct Subject {
    pub kind: Kind,
    pub object: Object,
    /// The object before an UPDATE, when it decodes. Boxed: an `Object` is
    /// over 1 KB, and most reviews have none.
    pub old: Option<Box<Object>>,
    pub deleting: bool,
}

impl Subject {
    pub(super) fn operation(&self) -> rules::Operation<'_> {
        match (&self.old, self.deleting) {
            (_, true) => rules::Operation::Delete,
            (Some(old), false) => rules::Operation::Update { old },
            (None, false) => rules::Operation::Create,
        }
    }
}

/// What a request asks to judge: `None` for kinds, subresources and
/// operations meshgate lets through unread; the kind and why when its object
/// cannot be judged. Boxed: the two `Object`s are large, and a subject moved
/// by value from [`review::read`] into the decision (and its future) was
/// copied at every step.
pub type Judged = Result<Option<Box<Subject>>, (Kind, Unusable)>;

/// The subject of a parsed request, its objects taken out of it.
pub(super) fn subject(req: &mut review::Request) -> Judged {
    let Some(kind) = req.judged else {
        return Ok(None);
    };
    // Status, scale, binding and other subresources do not change the pod
    // spec; ephemeral containers do, and may carry NET_ADMIN.
    if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        if !kind.row().subresources.contains(&sub) {
            return Ok(None);
        }
    }
    // Only the baseline policies are judged on DELETE (the kinds table).
    let deleting = req.operation == Operation::Delete;
    if !kind.is_judged_on(&req.operation) {
        return Ok(None);
    }
    let target = if deleting {
        (req.old_object.take(), "oldObject")
    } else {
        (req.object.take(), "object")
    };
    let object = under_review(req, kind, target).map_err(|why| (kind, why))?;
    let old = old_object(req, kind).map_err(|why| (kind, why))?;
    Ok(Some(Box::new(Subject {
        kind,
        object,
        old,
        deleting,
    })))
}

/// An old object that does not decode only means nothing counts as
/// pre-existing: stricter, never looser. One the API server would never
/// send (not an object, another namespace) is refused.
fn old_object(req: &mut review::Request, kind: Kind) -> Result<Option<Box<Object>>, Unusable> {
    if req.operation != Operation::Update || req.old_object.is_none() {
        return Ok(None);
    }
    let old = req.old_object.take();
    match under_review(req, kind, (old, "oldObject")) {
        Ok(old) => Ok(Some(Box::new(old))),
        Err(why @ (Unusable::NotAnObject(_) | Unusable::Misplaced(_))) => Err(why),
        Err(_) => Ok(None),
    }
}

/// Why a review's object cannot be judged; always a denial with code 400.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("the {0} request carries no {1} to judge")]
    Missing(&'static str, &'static str),
    #[error("the {0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error(transparent)]
    Undecodable(#[from] subject::DecodeError),
    /// The object names another namespace than the request; the API
    /// server never sends that, and the request's namespace is the one
    /// the object would be stored in.
    #[error("{0}")]
    Misplaced(String),
}

/// Decodes the request's `field` (object or oldObject) as `kind`, in the
/// namespace the request names.
fn under_review(
    req: &review::Request,
    kind: Kind,
    (value, field): (Option<ObjectField>, &'static str),
) -> Result<Object, Unusable> {
    let value = value.ok_or(Unusable::Missing(req.operation_str(), field))?;
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let object = match value {
        ObjectField::Raw(raw) => {
            if subject::object_text(raw.get()).is_err() {
                return Err(Unusable::NotAnObject(field));
            }
            subject::decode(kind, raw, namespace, &req.name)?
        }
        // Both kinds come from the request's `kind`.
        ObjectField::Workload(workload) if workload.kind() == kind => {
            Object::Workload(workload.place(namespace, &req.name))
        }
        ObjectField::Workload(workload) => {
            return Err(Unusable::Misplaced(format!(
                "the {field} was read as a {}, not a {}",
                workload.kind().as_str(),
                kind.as_str()
            )))
        }
    };
    if kind != Kind::Namespace && object.namespace() != namespace {
        return Err(Unusable::Misplaced(format!(
            "the {field} names namespace {:?} but the request is for namespace {namespace:?}",
            object.namespace()
        )));
    }
    Ok(object)
}

/// The 400 denial for an object that cannot be judged.
pub(super) fn refuse(req: &review::Request, kind: Kind, why: &Unusable) -> AdmissionResponse {
    let namespace = req.namespace.as_deref().unwrap_or_default();
    response::deny(
        &req.uid,
        400,
        &format!(
            "meshgate denied {} {namespace}/{}: {why}",
            kind.as_str().to_ascii_lowercase(),
            req.name
        ),
    )
}
