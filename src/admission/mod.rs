//! Review → subject → rules → policy → response, for one AdmissionReview.
//! Everything here is synchronous and free of I/O; the server wraps it.

use std::sync::Arc;

use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::config::{Config, WhileSyncing};
use crate::policy::{self, Decision};
use crate::posture::reflector::CacheSync;
use crate::posture::{PostureIndex, SharedPosture};
use crate::rules::{self, Context, RuleId};
use crate::subject::{self, Kind, Object};

pub mod mutate;
pub mod resources;
pub mod response;
pub mod review;

pub use review::ReviewError;

/// How a review ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    /// Allowed with warnings (audit mode or pre-existing violations).
    Warned,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
        }
    }
}

/// What the server logs and counts about one review. Never the object itself:
/// it may hold Secret data.
#[derive(Debug, Clone)]
pub struct Record {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub operation: &'static str,
    pub user: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    /// Violated rules and the mode each was reported at (`enforce`/`audit`).
    pub violations: Vec<(RuleId, &'static str)>,
    pub exempted: Vec<RuleId>,
    /// Set on a denial that rests on cached posture: the namespaces whose
    /// policies should be re-read from the API server before it is sent.
    pub confirm: Option<Vec<String>>,
    /// What `/mutate` did with the pod, when it looked at one.
    pub mutation: Option<&'static str>,
    /// Finding texts the bounded answer had to cut; the decision log
    /// carries them in full.
    pub omitted: response::Omitted,
}

impl Record {
    /// What is known of a review before it is judged.
    fn of(req: &review::Request) -> Record {
        Record {
            uid: req.uid.clone(),
            kind: req.kind.kind.clone(),
            namespace: req.namespace.clone().unwrap_or_default(),
            name: req.name.clone(),
            operation: req.operation_str(),
            user: req.username().to_owned(),
            dry_run: req.dry_run,
            outcome: Outcome::Allowed,
            violations: Vec::new(),
            exempted: Vec::new(),
            confirm: None,
            mutation: None,
            omitted: response::Omitted::default(),
        }
    }
}

pub struct Reviewed {
    pub review: AdmissionReview<DynamicObject>,
    pub record: Record,
}

impl Reviewed {
    /// The response body. The API server reads `patch` as base64 (Go's
    /// encoding of `[]byte`); kube-core serializes its `Vec<u8>` as an array
    /// of numbers (kube-rs/kube#1781), so it is re-encoded here.
    pub fn to_json(&self) -> serde_json::Value {
        use base64::Engine;
        let mut value = serde_json::to_value(&self.review).unwrap_or_default();
        if let Some(patch) = &self.review.response.as_ref().and_then(|r| r.patch.clone()) {
            value["response"]["patch"] = base64::engine::general_purpose::STANDARD
                .encode(patch)
                .into();
        }
        value
    }
}

/// The admission logic shared by `/validate` and `/mutate`.
pub struct Reviewer {
    pub config: Arc<Config>,
    pub posture: SharedPosture,
    /// Cache state when fed by watchers; `None` for complete state (files).
    pub sync: Option<Arc<CacheSync>>,
}

impl Reviewer {
    pub fn new(config: Arc<Config>, posture: SharedPosture) -> Self {
        Reviewer {
            config,
            posture,
            sync: None,
        }
    }

    pub fn with_sync(mut self, sync: Arc<CacheSync>) -> Self {
        self.sync = Some(sync);
        self
    }

    /// `POST /validate`, against the cached posture.
    pub fn validate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let posture = self.posture.read();
        self.validate_with(body, &posture)
    }

    /// `POST /validate` against a given posture (a fresh overlay when
    /// confirming a denial).
    pub fn validate_with(
        &self,
        body: &[u8],
        posture: &PostureIndex,
    ) -> Result<Reviewed, ReviewError> {
        let req = review::parse(body)?;
        let mut record = Record::of(&req);
        let response = self.decide(&req, &mut record, posture);
        record.outcome = if !response.allowed {
            Outcome::Denied
        } else if response.warnings.as_ref().is_some_and(|w| !w.is_empty()) {
            Outcome::Warned
        } else {
            Outcome::Allowed
        };
        Ok(Reviewed {
            review: response.into_review(),
            record,
        })
    }

    /// `POST /mutate`: mounts workload certificates into application
    /// containers. It never denies: validation is `/validate`'s job.
    pub fn mutate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let req = review::parse(body)?;
        let mut record = Record::of(&req);
        let posture = self.posture.read();
        let response = self.mutation(&req, &mut record, &posture);
        if response.warnings.as_ref().is_some_and(|w| !w.is_empty()) {
            record.outcome = Outcome::Warned;
        }
        Ok(Reviewed {
            review: response.into_review(),
            record,
        })
    }

    fn mutation(
        &self,
        req: &review::Request,
        record: &mut Record,
        posture: &PostureIndex,
    ) -> AdmissionResponse {
        let allow = response::allow(&req.uid);
        let gvk = &req.kind;
        let is_pod_create = Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind) == Some(Kind::Pod)
            && req.operation == Operation::Create
            && req.sub_resource.as_deref().is_none_or(str::is_empty);
        if !is_pod_create {
            return allow;
        }
        // A pod CREATE that cannot be read is refused, as on /validate: an
        // allow here would let it through where /validate is not installed.
        let object = match under_review(req, Kind::Pod, (req.object, "object")) {
            Ok(object) => object,
            Err(why) => return refuse(req, Kind::Pod, &why),
        };
        let Object::Workload(pod) = &object else {
            return allow;
        };
        record.namespace = object.namespace().to_owned();
        record.name = object.name().to_owned();
        let ctx = Context {
            posture,
            config: &self.config,
            operation: rules::Operation::Create,
        };
        let rule = RuleId::WorkloadCertificates;
        let settings = &self.config.workload_certificates;
        let eligible = posture.namespace(&pod.namespace).is_some_and(|ns| {
            ns.is_enrolled()
                && (settings.source != crate::config::CertificateSource::Sidecar
                    || rules::sidecar_required::will_have_sidecar(pod, ns))
        });
        let mode = policy::mode(&ctx, rule, &object);
        if !eligible || mode == crate::config::Mode::Off {
            record.mutation = Some("skipped");
            return allow;
        }
        if policy::exemption(&ctx, rule, &object).is_some() {
            record.exempted.push(rule);
            record.mutation = Some("exempted");
            return allow;
        }
        let plan = mutate::plan(pod, settings);
        let mut response = allow;
        let mut warnings = plan.warnings;
        if mode == crate::config::Mode::Audit {
            if !plan.operations.is_empty() {
                warnings.push(format!(
                    "[meshgate audit] workload-certificates: {object} would get volume \"{}\" mounted at {} (audit mode: not patched)",
                    settings.volume_name, settings.mount_path
                ));
            }
            record.mutation = Some("audit");
        } else {
            record.mutation = Some(plan.outcome.as_str());
            if !plan.operations.is_empty() {
                match response
                    .clone()
                    .with_patch(json_patch::Patch(plan.operations))
                {
                    Ok(patched) => response = patched,
                    Err(error) => {
                        tracing::error!(%error, "cannot serialize the patch; admitting unchanged")
                    }
                }
            }
        }
        if !warnings.is_empty() {
            response.warnings = Some(response::bounded_warnings(warnings, &mut record.omitted));
        }
        response
    }

    fn decide(
        &self,
        req: &review::Request,
        record: &mut Record,
        posture: &PostureIndex,
    ) -> AdmissionResponse {
        let gvk = &req.kind;
        let Some(kind) = Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind) else {
            return response::allow(&req.uid);
        };
        // Status, scale, binding and other subresources do not change the pod
        // spec; ephemeral containers do, and may carry NET_ADMIN.
        if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
            if !(kind == Kind::Pod && sub == "ephemeralcontainers") {
                return response::allow(&req.uid);
            }
        }
        // Only the baseline policies are judged on DELETE.
        let deleting = req.operation == Operation::Delete;
        let judged_operation = match req.operation {
            Operation::Create | Operation::Update => true,
            Operation::Delete => {
                matches!(kind, Kind::PeerAuthentication | Kind::AuthorizationPolicy)
            }
            Operation::Connect => false,
        };
        if !judged_operation {
            return response::allow(&req.uid);
        }
        let target = if deleting {
            (req.old_object, "oldObject")
        } else {
            (req.object, "object")
        };
        let object = match under_review(req, kind, target) {
            Ok(object) => object,
            Err(why) => return refuse(req, kind, &why),
        };
        record.namespace = object.namespace().to_owned();
        record.name = object.name().to_owned();
        if let Some(response) = self.while_syncing(&req.uid, kind, &object) {
            return response;
        }
        // An old object that does not decode only means nothing counts as
        // pre-existing: stricter, never looser. One the API server would
        // never send (not an object, another namespace) is refused.
        let old_object = match (&req.operation, req.old_object) {
            (Operation::Update, Some(raw)) => {
                match under_review(req, kind, (Some(raw), "oldObject")) {
                    Ok(old) => Some(old),
                    Err(why @ (Unusable::NotAnObject(_) | Unusable::Misplaced(_))) => {
                        return refuse(req, kind, &why)
                    }
                    Err(_) => None,
                }
            }
            _ => None,
        };
        let operation = match (&old_object, deleting) {
            (_, true) => rules::Operation::Delete,
            (Some(old), false) => rules::Operation::Update { old },
            (None, false) => rules::Operation::Create,
        };
        let decision = self.judge(&object, old_object.as_ref(), operation, posture);
        record.violations = decision
            .denied
            .iter()
            .chain(decision.warned.iter().map(|w| &w.judged))
            .map(|j| (j.finding.rule, j.mode.as_str()))
            .collect();
        record.exempted = decision.exempted.iter().map(|e| e.rule).collect();
        // While a watch is down the cache may be behind: a workload it lets
        // in is confirmed against the API server too (see the reflector).
        let stale = self.sync.as_ref().is_some_and(|s| s.is_stale())
            && !self.config.is_exempt_namespace(object.namespace());
        if kind.is_workload()
            && (stale
                || decision
                    .denied
                    .iter()
                    .any(|j| j.finding.rule.reads_posture()))
        {
            record.confirm = Some(vec![
                object.namespace().to_owned(),
                self.config.mesh_root_namespace.clone(),
            ]);
        }
        response::from_decision(
            &req.uid,
            &object.to_string(),
            &decision,
            &mut record.omitted,
        )
    }

    /// A workload allowed from a cache whose watch is down, which could not
    /// be confirmed against the API server either: answered per
    /// `whileSyncing`, like a review before the caches first synced.
    pub fn unverified(&self, mut reviewed: Reviewed) -> Reviewed {
        let record = &mut reviewed.record;
        record.confirm = None;
        let why = format!(
            "meshgate lost its watch of the API server and cannot read the current mesh policies, so {} {}/{} cannot be verified",
            record.kind.to_lowercase(),
            record.namespace,
            record.name
        );
        match self.config.while_syncing {
            WhileSyncing::Deny => {
                record.outcome = Outcome::Denied;
                reviewed.review =
                    response::deny(&record.uid, 403, &format!("{why}; retry shortly"))
                        .into_review();
            }
            WhileSyncing::Allow => {
                record.outcome = Outcome::Warned;
                if let Some(response) = reviewed.review.response.as_mut() {
                    response.warnings.get_or_insert_with(Vec::new).push(format!(
                        "[meshgate] {why}; admitted unverified (whileSyncing: allow)"
                    ));
                }
            }
        }
        reviewed
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

    fn judge(
        &self,
        object: &Object,
        old: Option<&Object>,
        operation: rules::Operation,
        posture: &PostureIndex,
    ) -> Decision {
        let ctx = Context {
            posture,
            config: &self.config,
            operation,
        };
        let new = policy::judge(object, &ctx);
        // The old object is judged as if created, so only what it already
        // violated counts as pre-existing.
        let old = old.map(|o| {
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

/// Why a review's object cannot be judged; always a denial with code 400.
#[derive(Debug, thiserror::Error)]
enum Unusable {
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
    (raw, field): (Option<&serde_json::value::RawValue>, &'static str),
) -> Result<Object, Unusable> {
    let raw = raw.ok_or(Unusable::Missing(req.operation_str(), field))?;
    if subject::object_text(raw.get()).is_err() {
        return Err(Unusable::NotAnObject(field));
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let object = subject::decode(kind, raw, namespace, &req.name)?;
    if kind != Kind::Namespace && object.namespace() != namespace {
        return Err(Unusable::Misplaced(format!(
            "the {field} names namespace {:?} but the request is for namespace {namespace:?}",
            object.namespace()
        )));
    }
    Ok(object)
}

/// The 400 denial for an object that cannot be judged.
fn refuse(req: &review::Request, kind: Kind, why: &Unusable) -> AdmissionResponse {
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
