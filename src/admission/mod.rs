//! Review → subject → rules → policy → response, for one AdmissionReview.
//! The admission module owns the whole decision: a denial (or an allow from
//! a stale cache) that rests on cached posture is confirmed here against the
//! API server before it is answered. The server only reads bodies and
//! answers.

use std::sync::Arc;

use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use tracing::Instrument;

use crate::config::{Config, Mode};
use crate::posture::confirm::Confirmer;
use crate::posture::reflector::CacheSync;
use crate::posture::SharedPosture;
use crate::rules::RuleId;
use crate::subject::{Kind, Object};

pub mod decode;
pub mod exemption;
pub mod mutate;
pub mod resources;
pub mod response;
pub mod review;
mod validate;

pub use review::{operation_str, ReviewError};

/// How a review ended, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// The outcome an answer stands for.
    fn of(response: &AdmissionResponse) -> Outcome {
        if !response.allowed {
            Outcome::Denied
        } else if response.warnings.as_ref().is_some_and(|w| !w.is_empty()) {
            Outcome::Warned
        } else {
            Outcome::Allowed
        }
    }
}

/// What the server logs and counts about one review. Never the object itself:
/// it may hold Secret data.
#[derive(Debug, Clone)]
pub struct Record {
    pub uid: String,
    /// `None` for kinds meshgate does not judge.
    pub kind: Option<Kind>,
    pub namespace: String,
    pub name: String,
    /// As the API server spells it (`CREATE`, ...).
    pub operation: &'static str,
    pub user: String,
    pub dry_run: bool,
    pub outcome: Outcome,
    /// Violated rules and the mode each was reported at.
    pub violations: Vec<(RuleId, Mode)>,
    pub exempted: Vec<RuleId>,
    /// What `/mutate` did with the pod, when it looked at one.
    pub mutation: Option<mutate::Outcome>,
    /// Finding texts the bounded answer had to cut; the decision log
    /// carries them in full.
    pub omitted: response::Omitted,
}

impl Record {
    /// What is known of a review before it is judged.
    fn of(req: &review::Request) -> Record {
        Record {
            uid: req.uid.clone(),
            kind: req.judged,
            namespace: req.namespace.clone().unwrap_or_default(),
            name: req.name.clone(),
            operation: req.operation_str(),
            user: req.username().to_owned(),
            dry_run: req.dry_run,
            outcome: Outcome::Allowed,
            violations: Vec::new(),
            exempted: Vec::new(),
            mutation: None,
            omitted: response::Omitted::default(),
        }
    }

    /// The span every log line of this review is tied to. The object is
    /// `namespace/name` in one field: JSON logs give the span's own name
    /// the key `name`.
    fn span(&self, req: &review::Request) -> tracing::Span {
        tracing::info_span!(
            "review",
            uid = %self.uid,
            kind = %req.kind.kind,
            object = %format_args!("{}/{}", self.namespace, self.name),
            operation = self.operation,
        )
    }

    /// Names the decoded object (a generated name is only known from it).
    fn locate(&mut self, object: &Object) {
        if self.namespace != object.namespace() || self.name != object.name() {
            self.namespace = object.namespace().to_owned();
            self.name = object.name().to_owned();
            tracing::Span::current().record(
                "object",
                tracing::field::display(format_args!("{}/{}", self.namespace, self.name)),
            );
        }
    }
}

/// A review answered: the body to send, with what is logged and counted
/// about it.
pub struct Reviewed {
    /// The AdmissionReview answered, already serialised. The API server
    /// reads `patch` as base64 (Go's encoding of `[]byte`); kube-core
    /// serialises its `Vec<u8>` as an array of numbers (kube-rs/kube#1781),
    /// so a patch is re-encoded. An answer that does not serialise is an
    /// error for the server to answer 500 with (the API server then applies
    /// the failurePolicy), never an empty body.
    pub body: Result<Vec<u8>, serde_json::Error>,
    /// The same answer as a value, for the Events of admitted findings and
    /// for tests. Boxed: it is 2 KB, moved with every answer.
    pub review: Box<AdmissionReview<DynamicObject>>,
    pub record: Record,
    /// The review's span, for the log lines written about it afterwards.
    pub span: tracing::Span,
}

impl Reviewed {
    fn new(response: AdmissionResponse, record: Record, span: tracing::Span) -> Reviewed {
        let review = Box::new(response.into_review());
        Reviewed {
            body: serialise(&review),
            review,
            record,
            span,
        }
    }
}

/// The wire form of an answer; see [`Reviewed::body`].
fn serialise(review: &AdmissionReview<DynamicObject>) -> Result<Vec<u8>, serde_json::Error> {
    use base64::Engine;
    let patch = review.response.as_ref().and_then(|r| r.patch.as_ref());
    let Some(patch) = patch else {
        // Room for a typical answer (a denial's message and annotations)
        // from the start, instead of growing from serde_json's 128 bytes.
        let mut body = Vec::with_capacity(2048);
        serde_json::to_writer(&mut body, review)?;
        return Ok(body);
    };
    let mut value = serde_json::to_value(review)?;
    value["response"]["patch"] = base64::engine::general_purpose::STANDARD
        .encode(patch)
        .into();
    serde_json::to_vec(&value)
}

/// The admission logic shared by `/validate` and `/mutate`.
pub struct Reviewer {
    pub config: Arc<Config>,
    pub posture: SharedPosture,
    /// Cache state when fed by watchers; `None` for complete state (files).
    pub sync: Option<Arc<CacheSync>>,
    /// Reads policies from the API server to confirm posture denials; `None`
    /// when the state comes from files.
    pub confirmer: Option<Arc<Confirmer>>,
}

impl Reviewer {
    pub fn new(config: Arc<Config>, posture: SharedPosture) -> Self {
        Reviewer {
            config,
            posture,
            sync: None,
            confirmer: None,
        }
    }

    pub fn with_sync(mut self, sync: Arc<CacheSync>) -> Self {
        self.sync = Some(sync);
        self
    }

    pub fn with_confirmer(mut self, confirmer: Option<Arc<Confirmer>>) -> Self {
        self.confirmer = confirmer;
        self
    }

    /// `POST /validate`: parses and decodes once, judges against the cached
    /// posture, and confirms a denial that rests on it against the API
    /// server.
    pub async fn validate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let (req, subject) = review::read(body)?;
        let mut record = Record::of(&req);
        let span = record.span(&req);
        let response = self
            .decide(&req, subject, &mut record)
            .instrument(span.clone())
            .await;
        record.outcome = Outcome::of(&response);
        Ok(Reviewed::new(response, record, span))
    }

    /// `POST /mutate`: mounts workload certificates into application
    /// containers. It never denies: validation is `/validate`'s job.
    pub fn mutate(&self, body: &[u8]) -> Result<Reviewed, ReviewError> {
        let (req, subject) = review::read(body)?;
        let mut record = Record::of(&req);
        let span = record.span(&req);
        let response = span.in_scope(|| mutate::review(self, &req, subject, &mut record));
        if response.warnings.as_ref().is_some_and(|w| !w.is_empty()) {
            record.outcome = Outcome::Warned;
        }
        Ok(Reviewed::new(response, record, span))
    }
}
