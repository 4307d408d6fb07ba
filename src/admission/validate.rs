//! `/validate`'s decision: what is judged, decoding it, judging it against
//! the cached posture, and confirming against the API server a denial that
//! rests on that cache.

use kube::core::admission::{AdmissionResponse, Operation};

use crate::config::WhileSyncing;
use crate::policy::{self, Decision};
use crate::posture::confirm::ConfirmError;
use crate::posture::PostureIndex;
use crate::rules::{self, Context};
use crate::subject::{self, Kind, Object};

use super::review::ObjectField;
use super::{response, review, Record, Reviewer};

/// The objects of a judged request, decoded.
pub(super) struct Subject {
    pub kind: Kind,
    pub object: Object,
    /// The object before an UPDATE, when it decodes.
    pub old: Option<Object>,
    pub deleting: bool,
}

impl Subject {
    fn operation(&self) -> rules::Operation<'_> {
        match (&self.old, self.deleting) {
            (_, true) => rules::Operation::Delete,
            (Some(old), false) => rules::Operation::Update { old },
            (None, false) => rules::Operation::Create,
        }
    }
}

impl Reviewer {
    pub(super) async fn decide(
        &self,
        req: &mut review::Request<'_>,
        record: &mut Record,
    ) -> AdmissionResponse {
        // Issue 21 hook: exemption objects are checked and logged, not judged.
        if let Some(kind) = crate::exemption::admission::kind_of(req) {
            let now = k8s_openapi::jiff::Timestamp::now();
            return crate::exemption::admission::review(req, kind, &self.config, now);
        }
        let subject = match judged_subject(req) {
            Ok(Some(subject)) => subject,
            Ok(None) => return response::allow(&req.uid),
            Err((kind, why)) => return refuse(req, kind, &why),
        };
        record.locate(&subject.object);
        if let Some(response) = self.while_syncing(&req.uid, subject.kind, &subject.object) {
            return response;
        }
        let cached = {
            let posture = self.posture.read();
            let decision = self.judge(&subject, &posture);
            // Issue 21 hook: `status.lastApplied` of exemption objects.
            let now = k8s_openapi::jiff::Timestamp::now();
            crate::exemption::status::record_applied(&posture, &decision.exempted, now);
            decision
        };
        let (decision, unverified) = match self.to_confirm(&subject, &cached) {
            Some(namespaces) => self.confirm(&req.uid, &subject, namespaces, cached).await,
            None => (cached, false),
        };
        record.violations = decision
            .denied
            .iter()
            .chain(decision.warned.iter().map(|w| &w.judged))
            .map(|j| (j.finding.rule, j.mode))
            .collect();
        record.exempted = decision.exempted.iter().map(|e| e.rule).collect();
        let response = response::from_decision(
            &req.uid,
            &subject.object.to_string(),
            &decision,
            &mut record.omitted,
        );
        if unverified {
            self.unverified(&subject.object, response)
        } else {
            response
        }
    }

    /// The namespaces whose policies are re-read from the API server before
    /// the cached decision on a workload is sent: when it denies on posture,
    /// or when a watch is down and the cache may be behind (see the
    /// reflector). `None` when the cached decision stands as it is.
    fn to_confirm(&self, subject: &Subject, cached: &Decision) -> Option<[String; 2]> {
        self.confirmer.as_ref()?;
        let stale = self.sync.as_ref().is_some_and(|s| s.is_stale())
            && !self.config.is_exempt_namespace(subject.object.namespace());
        let on_posture = cached.denied.iter().any(|j| j.finding.rule.reads_posture());
        (subject.kind.is_workload() && (stale || on_posture)).then(|| {
            [
                subject.object.namespace().to_owned(),
                self.config.mesh_root_namespace.clone(),
            ]
        })
    }

    /// Re-judges the subject against the policies the API server holds right
    /// now. On timeout or error a cached denial stands, and a cached allow
    /// is unverified (the `bool`). The lines logged here name the `uid` as
    /// well as their span, as the decision line does, so a search by uid
    /// finds them without span support.
    async fn confirm(
        &self,
        uid: &str,
        subject: &Subject,
        namespaces: [String; 2],
        cached: Decision,
    ) -> (Decision, bool) {
        let Some(confirmer) = &self.confirmer else {
            return (cached, false);
        };
        let fresh = match confirmer.read(&namespaces).await {
            Ok(fresh) => fresh,
            Err(error) => {
                let stands = cached_stands(uid, &cached, &error);
                return (cached, !stands);
            }
        };
        let confirmed = {
            let overlay = self.posture.read().overlay(fresh);
            self.judge(subject, &overlay)
        };
        let overturned = confirmed.allowed() != cached.allowed();
        tracing::info!(
            uid,
            overturned,
            "posture denial confirmed against the API server"
        );
        (confirmed, false)
    }

    /// A workload allowed from a cache whose watch is down, which could not
    /// be confirmed against the API server either: answered per
    /// `whileSyncing`, like a review before the caches first synced.
    fn unverified(&self, object: &Object, mut response: AdmissionResponse) -> AdmissionResponse {
        let why = format!(
            "meshgate lost its watch of the API server and cannot read the current mesh policies, so {object} cannot be verified"
        );
        match self.config.while_syncing {
            WhileSyncing::Deny => {
                response::deny(&response.uid, 403, &format!("{why}; retry shortly"))
            }
            WhileSyncing::Allow => {
                response.warnings.get_or_insert_with(Vec::new).push(format!(
                    "[meshgate] {why}; admitted unverified (whileSyncing: allow)"
                ));
                response
            }
        }
    }

    /// While the caches fill after start-up, reviews that need the posture
    /// are answered per `whileSyncing`, saying why.
    fn while_syncing(&self, uid: &str, kind: Kind, object: &Object) -> Option<AdmissionResponse> {
        let sync = self.sync.as_ref()?;
        let needs_posture = !matches!(
            kind,
            Kind::Namespace | Kind::DestinationRule | Kind::Sidecar
        );
        if sync.is_ready() || !needs_posture || self.config.is_exempt_namespace(object.namespace())
        {
            return None;
        }
        let why = format!(
            "meshgate has not finished loading the cluster's mesh posture since it started, so {object} cannot be verified yet"
        );
        Some(match self.config.while_syncing {
            WhileSyncing::Deny => {
                response::deny(uid, 403, &format!("{why}; retry in a few seconds"))
            }
            WhileSyncing::Allow => {
                let mut allowed = response::allow(uid);
                allowed.warnings = Some(vec![format!(
                    "[meshgate] {why}; admitted unverified (whileSyncing: allow)"
                )]);
                allowed
            }
        })
    }

    fn judge(&self, subject: &Subject, posture: &PostureIndex) -> Decision {
        let ctx = Context {
            posture,
            config: &self.config,
            operation: subject.operation(),
            // Issue 21 hook: exemptions apply strictly before `expires`.
            now: k8s_openapi::jiff::Timestamp::now(),
        };
        let new = policy::judge(&subject.object, &ctx);
        // The old object is judged as if created, so only what it already
        // violated counts as pre-existing.
        let old = subject.old.as_ref().map(|o| {
            policy::judge(
                o,
                &Context {
                    operation: rules::Operation::Create,
                    ..ctx
                },
            )
        });
        Decision::from_judgements(new, old.as_ref())
    }
}

/// Whether the cached decision stands when it cannot be confirmed: a
/// denial does; an allow from a cache whose watch is down does not.
fn cached_stands(uid: &str, cached: &Decision, error: &ConfirmError) -> bool {
    if cached.allowed() {
        tracing::warn!(uid, %error, "cannot confirm an allow from a stale cache");
        false
    } else {
        tracing::warn!(uid, %error, "cannot confirm the denial; the cached posture stands");
        true
    }
}

/// What a request asks to judge: `None` for kinds, subresources and
/// operations meshgate lets through unread; an error for objects that cannot
/// be judged.
fn judged_subject(req: &mut review::Request) -> Result<Option<Subject>, (Kind, Unusable)> {
    let gvk = &req.kind;
    let Some(kind) = Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind) else {
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
    Ok(Some(Subject {
        kind,
        object,
        old,
        deleting,
    }))
}

/// An old object that does not decode only means nothing counts as
/// pre-existing: stricter, never looser. One the API server would never
/// send (not an object, another namespace) is refused.
fn old_object(req: &mut review::Request, kind: Kind) -> Result<Option<Object>, Unusable> {
    if req.operation != Operation::Update || req.old_object.is_none() {
        return Ok(None);
    }
    let old = req.old_object.take();
    match under_review(req, kind, (old, "oldObject")) {
        Ok(old) => Ok(Some(old)),
        Err(why @ (Unusable::NotAnObject(_) | Unusable::Misplaced(_))) => Err(why),
        Err(_) => Ok(None),
    }
}

/// Why a review's object cannot be judged; always a denial with code 400.
#[derive(Debug, thiserror::Error)]
pub(super) enum Unusable {
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
pub(super) fn under_review(
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

#[cfg(test)]
mod tests;
