//! Building the AdmissionResponse: one denial message that names the object
//! and every violated rule with its fix; admission warnings that kubectl
//! prints (single-line, within the API server's 4,096-byte budget); audit
//! annotations that land in the API server's audit log.

use std::collections::BTreeMap;

use kube::core::admission::AdmissionResponse;
use kube::core::{Status, TypeMeta};

use crate::policy::{Decision, Judged, Warned};

use super::review::{REVIEW_API_VERSION, REVIEW_KIND};

/// The API server keeps all warnings of one response only while their total
/// stays within 4,096 bytes; past that it truncates and drops them.
pub const WARNING_BUDGET: usize = 4096;
const OVERFLOW_RESERVE: usize = 120;

/// An allowing response that echoes the request's uid.
pub fn allow(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: REVIEW_API_VERSION.into(),
        kind: REVIEW_KIND.into(),
    };
    response.uid = uid.to_owned();
    response.allowed = true;
    response.result = Status::default();
    response
}

/// A denial with an HTTP-style code (403 for policy, 400 for unusable objects).
pub fn deny(uid: &str, code: u16, message: &str) -> AdmissionResponse {
    let reason = if code == 403 {
        "Forbidden"
    } else {
        "BadRequest"
    };
    let mut response = allow(uid);
    response.allowed = false;
    response.result = Status::failure(message, reason).with_code(code);
    response
}

/// The response for a decided review of `subject` (e.g. `pod shop/web`).
pub fn from_decision(uid: &str, subject: &str, decision: &Decision) -> AdmissionResponse {
    let mut response = if decision.allowed() {
        allow(uid)
    } else {
        deny(uid, 403, &denial_message(subject, &decision.denied))
    };
    let warnings: Vec<String> = decision.warned.iter().map(warning_text).collect();
    if !warnings.is_empty() {
        response.warnings = Some(budget_warnings(warnings));
    }
    response.audit_annotations = audit_annotations(decision);
    response
}

fn denial_message(subject: &str, denied: &[Judged]) -> String {
    let parts: Vec<String> = denied
        .iter()
        .map(|j| {
            format!(
                "[{}] {}; fix: {}",
                j.finding.rule, j.finding.message, j.finding.fix
            )
        })
        .collect();
    single_line(&format!("meshgate denied {subject}: {}", parts.join(" | ")))
}

fn warning_text(w: &Warned) -> String {
    let f = &w.judged.finding;
    let tag = if w.pre_existing {
        "[meshgate] pre-existing, not blocked on update:"
    } else {
        "[meshgate audit]"
    };
    single_line(&format!("{tag} {}: {}; fix: {}", f.rule, f.message, f.fix))
}

/// The API server silently drops warnings that contain control characters.
fn single_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Keeps warnings within the budget; what does not fit is summarised in a
/// last warning rather than cut off silently by the API server.
pub fn budget_warnings(warnings: Vec<String>) -> Vec<String> {
    let total = warnings.len();
    let mut used = 0;
    let mut kept = Vec::new();
    for (i, warning) in warnings.into_iter().enumerate() {
        let last = i + 1 == total;
        let room = WARNING_BUDGET - used - if last { 0 } else { OVERFLOW_RESERVE };
        if warning.len() <= room {
            used += warning.len();
            kept.push(warning);
            continue;
        }
        let room = WARNING_BUDGET - used - OVERFLOW_RESERVE;
        let omitted = if room >= 200 {
            kept.push(truncate(&warning, room));
            total - i - 1
        } else {
            total - i
        };
        if omitted > 0 {
            kept.push(format!(
                "[meshgate] {omitted} more violation(s) not shown here; see meshgate's log and the audit annotations"
            ));
        }
        break;
    }
    kept
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(text: &str, max: usize) -> String {
    const MARK: &str = "...";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// One annotation per violated rule, keyed by rule id (a valid key once the
/// API server prefixes it with the webhook's name).
fn audit_annotations(decision: &Decision) -> std::collections::HashMap<String, String> {
    let mut by_rule: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let denied = decision.denied.iter().map(|j| (j, "denied"));
    let warned = decision.warned.iter().map(|w| {
        (
            &w.judged,
            if w.pre_existing {
                "pre-existing"
            } else {
                "audit"
            },
        )
    });
    for (judged, how) in denied.chain(warned) {
        by_rule
            .entry(judged.finding.rule.as_str())
            .or_default()
            .push(format!("{how}: {}", judged.finding.message));
    }
    by_rule
        .into_iter()
        .map(|(rule, messages)| (rule.to_owned(), single_line(&messages.join("; "))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::rules::{Finding, RuleId};

    fn judged(rule: RuleId, message: &str, mode: Mode) -> Judged {
        Judged {
            finding: Finding::new(rule, message, "do the fix"),
            mode,
        }
    }

    #[test]
    fn denial_names_object_every_rule_and_fix_on_one_line() {
        let decision = Decision {
            denied: vec![
                judged(RuleId::SidecarRequired, "no sidecar", Mode::Enforce),
                judged(RuleId::NoHostNetwork, "host\nnetwork", Mode::Enforce),
            ],
            ..Default::default()
        };
        let r = from_decision("uid-1", "pod shop/web", &decision);
        assert!(!r.allowed);
        assert_eq!(r.uid, "uid-1");
        assert_eq!(r.result.code, 403);
        assert_eq!(r.result.reason, "Forbidden");
        let m = &r.result.message;
        assert!(
            m.starts_with(
                "meshgate denied pod shop/web: [sidecar-required] no sidecar; fix: do the fix"
            ),
            "{m}"
        );
        assert!(m.contains("[no-host-network] host network"), "{m}");
        assert!(!m.contains('\n'));
        assert_eq!(
            r.audit_annotations["sidecar-required"],
            "denied: no sidecar"
        );
    }

    #[test]
    fn audit_findings_become_warnings_and_annotations() {
        let decision = Decision {
            warned: vec![Warned {
                judged: judged(RuleId::NoHostNetwork, "uses\thost", Mode::Audit),
                pre_existing: false,
            }],
            ..Default::default()
        };
        let r = from_decision("u", "pod shop/web", &decision);
        assert!(r.allowed);
        let w = r.warnings.unwrap();
        assert_eq!(
            w,
            ["[meshgate audit] no-host-network: uses host; fix: do the fix"]
        );
        assert_eq!(r.audit_annotations["no-host-network"], "audit: uses host");
    }

    #[test]
    fn warnings_stay_within_the_api_servers_budget() {
        let many: Vec<String> = (0..40)
            .map(|i| format!("{i:02} {}", "x".repeat(300)))
            .collect();
        let kept = budget_warnings(many);
        let total: usize = kept.iter().map(String::len).sum();
        assert!(total <= WARNING_BUDGET, "{total}");
        assert!(
            kept.last().unwrap().contains("more violation(s) not shown"),
            "{kept:?}"
        );
        assert!(kept[0].starts_with("00 "));
        // One huge warning is cut on a character boundary, not dropped.
        let kept = budget_warnings(vec!["ü".repeat(5000)]);
        assert!(kept[0].len() <= WARNING_BUDGET && kept[0].ends_with("..."));
    }

    #[test]
    fn small_warning_sets_pass_unchanged() {
        let w = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(budget_warnings(w.clone()), w);
    }
}
