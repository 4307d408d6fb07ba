//! What an Event says, decided purely: which background verdicts changed
//! enough to be told (transitions only), the notes, and the object an
//! admitted review's Event is about.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use serde::Deserialize;

use crate::background::{ObjectRef, Verdict};
use crate::config::Mode;
use crate::policy::Judgement;
use crate::rules::RuleId;

/// events.k8s.io refuses a `note` over 1 kB.
pub const NOTE_LIMIT: usize = 1024;

/// `reason` of a Warning: a rule is violated.
pub const REASON_VIOLATION: &str = "PolicyViolation";
/// `reason` of a Normal: every violation is gone.
pub const REASON_RESOLVED: &str = "PolicyViolationResolved";
/// `action` of the background audit's Events.
pub const ACTION_AUDIT: &str = "Audit";
/// `action` of an admitted review's Event.
pub const ACTION_ADMIT: &str = "Admit";

/// A verdict change worth an Event.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A rule the object did not violate before now is (or the object is
    /// new and violates some).
    Failing,
    /// The object violated these rules and now violates none.
    Passing { was: BTreeSet<RuleId> },
}

fn violated(judgement: &Judgement) -> BTreeSet<RuleId> {
    judgement.findings.iter().map(|j| j.finding.rule).collect()
}

/// The transitions from `before` to `after` (the background audit's
/// verdicts by object key). An object absent from `after` (deleted, or now
/// reported through its owner) gets none; one recreated under the same name
/// (another uid) starts afresh.
pub fn transitions(
    before: &BTreeMap<String, Arc<Verdict>>,
    after: &BTreeMap<String, Arc<Verdict>>,
) -> Vec<(Arc<Verdict>, Transition)> {
    let mut changes = Vec::new();
    for (key, now) in after {
        let was = match before.get(key) {
            Some(old) if Arc::ptr_eq(old, now) => continue,
            Some(old) if old.object.uid == now.object.uid => violated(&old.judgement),
            _ => BTreeSet::new(),
        };
        let violates = violated(&now.judgement);
        if !violates.is_subset(&was) {
            changes.push((now.clone(), Transition::Failing));
        } else if violates.is_empty() && !was.is_empty() {
            changes.push((now.clone(), Transition::Passing { was }));
        }
    }
    changes
}

/// Cuts `text` to the API's limit, on a character boundary.
pub fn bounded(mut text: String) -> String {
    if text.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// The note of a background Event.
pub fn background_note(judgement: &Judgement, transition: &Transition) -> String {
    let text = match transition {
        Transition::Failing => {
            let findings: Vec<String> = judgement
                .findings
                .iter()
                .map(|j| {
                    let mode = mode_name(j.mode);
                    format!("{} ({mode}): {}", j.finding.rule, j.finding.message)
                })
                .collect();
            format!("meshgate: {}", findings.join("; "))
        }
        Transition::Passing { was } => {
            let rules: Vec<&str> = was.iter().map(|r| r.as_str()).collect();
            format!(
                "meshgate: no rule is violated any more (was: {})",
                rules.join(", ")
            )
        }
    };
    bounded(text)
}

/// A mode as the config spells it.
fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Off => "off",
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

/// The note of an admitted review's Event: the warnings it was answered with.
pub fn admission_note(warnings: &[String]) -> String {
    bounded(format!(
        "meshgate admitted this with violations (audit mode): {}",
        warnings.join("; ")
    ))
}

/// The object a background verdict is about.
pub fn reference(object: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some(object.api_version.clone()),
        kind: Some(object.kind.as_str().to_owned()),
        namespace: (!object.namespace.is_empty()).then(|| object.namespace.clone()),
        name: Some(object.name.clone()),
        uid: (!object.uid.is_empty()).then(|| object.uid.clone()),
        ..ObjectReference::default()
    }
}

#[derive(Deserialize)]
struct ReviewBody {
    request: RequestBody,
}

#[derive(Deserialize)]
struct RequestBody {
    kind: Gvk,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<ObjectBody>,
}

#[derive(Deserialize)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

#[derive(Deserialize)]
struct ObjectBody {
    #[serde(default)]
    metadata: MetadataBody,
}

#[derive(Deserialize, Default)]
struct MetadataBody {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
}

/// The object an admitted review is about, read from the review's body
/// (off the webhook's path). The API server assigns the name (from
/// `generateName`) and the uid before it calls validating webhooks, so a
/// CREATE's object carries the uid it will be stored under: the Event names
/// the object as `kubectl describe` will find it once it exists. `None` when
/// the body names no object.
pub fn admitted_reference(body: &[u8]) -> Option<ObjectReference> {
    let review: ReviewBody = serde_json::from_slice(body).ok()?;
    let request = review.request;
    let metadata = request.object.map(|o| o.metadata).unwrap_or_default();
    let name = metadata
        .name
        .filter(|n| !n.is_empty())
        .or_else(|| (!request.name.is_empty()).then_some(request.name))?;
    let api_version = match request.kind.group.as_str() {
        "" => request.kind.version,
        group => format!("{group}/{}", request.kind.version),
    };
    Some(ObjectReference {
        api_version: Some(api_version),
        kind: Some(request.kind.kind),
        namespace: request
            .namespace
            .or(metadata.namespace)
            .filter(|n| !n.is_empty()),
        name: Some(name),
        uid: metadata.uid.filter(|u| !u.is_empty()),
        ..ObjectReference::default()
    })
}

#[cfg(test)]
#[path = "describe_tests.rs"]
mod tests;
