//! Review → subject → rules → policy → response, for one AdmissionReview.
//! Everything here is synchronous and free of I/O; the server wraps it.

use std::sync::Arc;

use kube::core::admission::{AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;

use crate::config::Config;
use crate::policy::{self, Decision};
use crate::posture::SharedPosture;
use crate::rules::{Context, RuleId};
use crate::subject::{self, Kind, Object};

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
}

pub struct Reviewed {
    pub review: AdmissionReview<DynamicObject>,
    pub record: Record,
}

/// The admission logic shared by `/validate` and `/mutate`.
pub struct Reviewer {
    pub config: Arc<Config>,
    pub posture: SharedPosture,
}

impl Reviewer {
    pub fn new(config: Arc<Config>, posture: SharedPosture) -> Self {
        Reviewer { config, posture }
    }

    /// `POST /validate`.
    pub fn validate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let req = review::parse(body)?;
        let mut record = Record {
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
        };
        let response = self.decide(&req, &mut record);
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

    /// `POST /mutate`: for now every pod is admitted unchanged; validation is
    /// `/validate`'s job.
    pub fn mutate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let req = review::parse(body)?;
        let record = Record {
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
        };
        Ok(Reviewed {
            review: response::allow(&req.uid).into_review(),
            record,
        })
    }

    fn decide(&self, req: &review::Request, record: &mut Record) -> AdmissionResponse {
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
        if !matches!(req.operation, Operation::Create | Operation::Update) {
            return response::allow(&req.uid);
        }
        let namespace = req.namespace.as_deref().unwrap_or_default();
        let Some(raw) = req.object else {
            return response::deny(
                &req.uid,
                400,
                &format!(
                    "meshgate denied {} {namespace}/{}: the {} request carries no object to judge",
                    kind.as_str().to_ascii_lowercase(),
                    req.name,
                    req.operation_str()
                ),
            );
        };
        let object = match subject::decode(kind, raw, namespace, &req.name) {
            Ok(object) => object,
            Err(e) => {
                return response::deny(
                    &req.uid,
                    400,
                    &format!(
                        "meshgate denied {} {namespace}/{}: {e}",
                        kind.as_str().to_ascii_lowercase(),
                        req.name
                    ),
                )
            }
        };
        // An old object that cannot be read only means nothing counts as
        // pre-existing: stricter, never looser.
        let old_object = match req.operation {
            Operation::Update => req
                .old_object
                .and_then(|raw| subject::decode(kind, raw, namespace, &req.name).ok()),
            _ => None,
        };
        record.namespace = object.namespace().to_owned();
        record.name = object.name().to_owned();
        let decision = self.judge(&object, old_object.as_ref());
        record.violations = decision
            .denied
            .iter()
            .chain(decision.warned.iter().map(|w| &w.judged))
            .map(|j| (j.finding.rule, j.mode.as_str()))
            .collect();
        record.exempted = decision.exempted.iter().map(|e| e.rule).collect();
        response::from_decision(&req.uid, &object.to_string(), &decision)
    }

    fn judge(&self, object: &Object, old: Option<&Object>) -> Decision {
        // A poisoned lock means a feeder panicked mid-update; the data is
        // still the last consistent state it wrote, so keep serving.
        let posture = self.posture.read().unwrap_or_else(|e| e.into_inner());
        let ctx = Context {
            posture: &posture,
            config: &self.config,
        };
        let new = policy::judge(object, &ctx);
        let old = old.map(|o| policy::judge(o, &ctx));
        Decision::from_judgements(new, old.as_ref())
    }
}
