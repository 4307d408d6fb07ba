//! `/validate` on exemption objects: what the CRD's CEL cannot check (it
//! sees no clock), and the audit trail. CREATE and UPDATE are refused when
//! `spec.expires` is not in the future or lies beyond now +
//! `exemptionObjects.maxDuration`; an UPDATE that leaves `spec.expires` as
//! it was is let through (relabelling or removing a finalizer from an
//! expired exemption must not get stuck). DELETE is always allowed. Every
//! create, change and delete is logged with the requester.

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::admission::{AdmissionResponse, Operation};
use serde_json::value::RawValue;

use crate::admission::response;
use crate::admission::review::Request;
use crate::config::Config;
use crate::exemption::types::ExemptionSpec;
use crate::kinds::Kind;

/// The exemption kind a request is about, when it is one.
pub fn kind_of(req: &Request) -> Option<Kind> {
    let gvk = &req.kind;
    let kind = Kind::exemption_from_gvk(&gvk.group, &gvk.version, &gvk.kind)?;
    // The status subresource is meshgate's own write.
    req.sub_resource
        .as_deref()
        .is_none_or(str::is_empty)
        .then_some(kind)
}

#[derive(serde::Deserialize)]
struct Spec {
    #[serde(default)]
    spec: ExemptionSpec,
}

fn spec_of(raw: Option<&RawValue>) -> Option<ExemptionSpec> {
    raw.and_then(|raw| crate::strict::from_str::<Spec>(raw.get()).ok())
        .map(|s| s.spec)
}

/// The answer to a review of an exemption object, logged.
pub fn review(req: &Request, kind: Kind, config: &Config, now: Timestamp) -> AdmissionResponse {
    let new = spec_of(req.object.as_ref().and_then(|o| o.raw()));
    let old = spec_of(req.old_object.as_ref().and_then(|o| o.raw()));
    let logged = new.as_ref().or(old.as_ref());
    let refusal = match req.operation {
        Operation::Create | Operation::Update => check_expires(
            new.as_ref().and_then(|s| s.expires.as_ref()).map(|t| t.0),
            old.as_ref().and_then(|s| s.expires.as_ref()).map(|t| t.0),
            config.exemption_objects.max_duration,
            now,
        )
        .err(),
        _ => None,
    };
    tracing::info!(
        operation = ?req.operation,
        exemption = %describe(kind, req),
        user = req.user_info.username.as_deref().unwrap_or_default(),
        groups = ?req.user_info.groups.clone().unwrap_or_default(),
        rules = ?logged.map(|s| s.rules.clone()).unwrap_or_default(),
        expires = logged.and_then(|s| s.expires.as_ref()).map(|t| t.0.to_string()).unwrap_or_default(),
        refused = refusal.as_deref().unwrap_or_default(),
        dry_run = req.dry_run,
        "exemption object reviewed"
    );
    match refusal {
        Some(why) => response::deny(
            &req.uid,
            422,
            &format!("meshgate denied {}: {why}", describe(kind, req)),
        ),
        None => response::allow(&req.uid),
    }
}

/// `MeshExemption/<ns>/<name>` or `ClusterMeshExemption/<name>`.
fn describe(kind: Kind, req: &Request) -> String {
    match (kind, req.namespace.as_deref()) {
        (Kind::MeshExemption, Some(ns)) => format!("MeshExemption/{ns}/{}", req.name),
        _ => format!("{}/{}", kind.as_str(), req.name),
    }
}

/// `spec.expires` must be after `now` and at most `max` later; an update
/// that keeps the old value is not re-checked.
pub fn check_expires(
    new: Option<Timestamp>,
    old: Option<Timestamp>,
    max: std::time::Duration,
    now: Timestamp,
) -> Result<(), String> {
    let Some(expires) = new else {
        return Err("spec.expires is required (an RFC 3339 date-time)".into());
    };
    if old == Some(expires) {
        return Ok(());
    }
    if expires <= now {
        return Err(format!(
            "spec.expires {expires} is not in the future (now {now})"
        ));
    }
    let max = SignedDuration::try_from(max).unwrap_or(SignedDuration::MAX);
    let limit = now.checked_add(max).unwrap_or(Timestamp::MAX);
    if expires > limit {
        return Err(format!(
            "spec.expires {expires} is more than exemptionObjects.maxDuration ({}) after now ({now}); the latest allowed is {limit}",
            crate::duration::format_duration(max.unsigned_abs())
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn expires_must_be_future_and_within_max_duration() {
        let now = at("2026-12-07T10:00:00Z");
        let ok = |e: &str| check_expires(Some(at(e)), None, 90 * DAY, now);
        assert!(ok("2026-12-07T10:00:01Z").is_ok());
        assert!(ok("2027-03-07T10:00:00Z").is_ok(), "exactly 90 days");
        let e = ok("2027-03-07T10:00:01Z").unwrap_err();
        assert!(e.contains("spec.expires") && e.contains("2160h"), "{e}");
        let e = ok("2026-12-07T10:00:00Z").unwrap_err();
        assert!(
            e.contains("spec.expires") && e.contains("not in the future"),
            "{e}"
        );
        let e = check_expires(None, None, DAY, now).unwrap_err();
        assert!(e.contains("spec.expires"), "{e}");
    }

    #[test]
    fn an_update_that_keeps_expires_is_not_rechecked() {
        let now = at("2027-06-01T00:00:00Z");
        let past = at("2027-01-01T00:00:00Z");
        assert!(check_expires(Some(past), Some(past), DAY, now).is_ok());
        assert!(check_expires(Some(past), Some(at("2026-12-31T00:00:00Z")), DAY, now).is_err());
    }
}
