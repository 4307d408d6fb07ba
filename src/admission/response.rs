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
/// A denial message past this is cut: kubectl prints it whole, and the API
/// server stores it in events and audit logs.
pub const MESSAGE_BUDGET: usize = 4096;
/// Each audit annotation value past this is cut: every one is stored with
/// every audit event of the request.
pub const ANNOTATION_BUDGET: usize = 1024;

/// The finding texts an answer had to cut, each once, for the decision log.
#[derive(Debug, Default, Clone)]
pub struct Omitted {
    pub texts: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl Omitted {
    pub fn push(&mut self, text: &str) {
        if self.seen.insert(text.to_owned()) {
            self.texts.push(text.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
}

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
/// What the bounded message, warnings and annotations leave out is added
/// to `omitted`.
pub fn from_decision(
    uid: &str,
    subject: &str,
    decision: &Decision,
    omitted: &mut Omitted,
) -> AdmissionResponse {
    let mut response = if decision.allowed() {
        allow(uid)
    } else {
        deny(
            uid,
            403,
            &denial_message(subject, &decision.denied, omitted),
        )
    };
    let warnings: Vec<String> = decision
        .warned
        .iter()
        .map(|w| warning_text(subject, w))
        .collect();
    if !warnings.is_empty() {
        response.warnings = Some(bounded_warnings(warnings, omitted));
    }
    response.audit_annotations = audit_annotations(decision, omitted);
    response
}

/// One line naming every violated rule; the details of each violation
/// (with the rule's documentation page) follow while they fit in
/// [`MESSAGE_BUDGET`], then a count of the rest.
fn denial_message(subject: &str, denied: &[Judged], omitted: &mut Omitted) -> String {
    let parts: Vec<String> = denied.iter().map(|j| detail(&j.finding)).collect();
    let subject = single_line(subject.to_owned());
    let full = format!("meshgate denied {subject}: {}", parts.join(" | "));
    if full.len() <= MESSAGE_BUDGET {
        return full;
    }
    let mut rules: Vec<&str> = Vec::new();
    for j in denied {
        if !rules.contains(&j.finding.rule.as_str()) {
            rules.push(j.finding.rule.as_str());
        }
    }
    let mut out = format!(
        "meshgate denied {subject}: {} violations of {}: ",
        parts.len(),
        rules.join(", ")
    );
    let mut shown = 0;
    for part in &parts {
        let separator = if shown == 0 { "" } else { " | " };
        let room = MESSAGE_BUDGET.saturating_sub(out.len() + separator.len() + OVERFLOW_RESERVE);
        if part.len() <= room {
            out.push_str(separator);
            out.push_str(part);
            shown += 1;
        } else if shown == 0 && room >= 200 {
            out.push_str(&truncate(part, room));
            omitted.push(part);
            shown += 1;
        } else {
            omitted.push(part);
        }
    }
    // Once one did not fit, the later ones are omitted too, to keep order.
    let rest = parts.len() - shown;
    if rest > 0 {
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(" | ... {rest} more not shown; see meshgate's log"),
        );
    }
    out
}

/// Names the object once, as the denial does; the finding describes the
/// field.
fn warning_text(subject: &str, w: &Warned) -> String {
    let f = &w.judged.finding;
    let tag = if w.pre_existing {
        "[meshgate] pre-existing, not blocked on update:"
    } else {
        "[meshgate audit]"
    };
    single_line(format!(
        "{tag} {subject}: {}: {}; fix: {}",
        f.rule, f.message, f.fix
    ))
}

/// One violation in full, as the denial shows it and the log keeps what
/// was cut: the rule, the field, the fix and the rule's documentation page.
fn detail(f: &crate::rules::Finding) -> String {
    single_line(format!(
        "[{}] {}; fix: {} ({})",
        f.rule,
        f.message,
        f.fix,
        f.rule.doc_url()
    ))
}

/// The API server silently drops warnings that contain control characters.
/// Texts almost never hold one, so the text is kept as it is (no copy)
/// unless it does.
fn single_line(text: String) -> String {
    if !has_control(&text) {
        return text;
    }
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether `text` holds a control character (`char::is_control`: U+0000 to
/// U+001F and U+007F to U+009F), found on the bytes rather than decoding
/// every character. The ASCII scan has no early exit so that it vectorises;
/// U+0080 to U+009F all start with the byte 0xC2, looked for with memchr.
fn has_control(text: &str) -> bool {
    let bytes = text.as_bytes();
    let ascii = bytes
        .iter()
        .fold(false, |found, &b| found | (b < 0x20) | (b == 0x7f));
    ascii || (bytes.contains(&0xc2) && text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)))
}

/// Keeps warnings within the budget; what does not fit is summarised in a
/// last warning rather than cut off silently by the API server.
pub fn budget_warnings(warnings: Vec<String>) -> Vec<String> {
    bounded_warnings(warnings, &mut Omitted::default())
}

/// [`budget_warnings`], adding what it cut to `omitted`.
pub fn bounded_warnings(warnings: Vec<String>, omitted: &mut Omitted) -> Vec<String> {
    let total = warnings.len();
    let mut used = 0;
    let mut kept = Vec::new();
    for (i, warning) in warnings.iter().enumerate() {
        let last = i + 1 == total;
        let room = WARNING_BUDGET - used - if last { 0 } else { OVERFLOW_RESERVE };
        if warning.len() <= room {
            used += warning.len();
            kept.push(warning.clone());
            continue;
        }
        let room = WARNING_BUDGET - used - OVERFLOW_RESERVE;
        let rest = if room >= 200 {
            kept.push(truncate(warning, room));
            omitted.push(warning);
            &warnings[i + 1..]
        } else {
            &warnings[i..]
        };
        rest.iter().for_each(|w| omitted.push(w));
        if !rest.is_empty() {
            kept.push(format!(
                "[meshgate] {} more violation(s) not shown here; see meshgate's log and the audit annotations",
                rest.len()
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
/// API server prefixes it with the webhook's name), each value within
/// [`ANNOTATION_BUDGET`].
fn audit_annotations(
    decision: &Decision,
    omitted: &mut Omitted,
) -> std::collections::HashMap<String, String> {
    let mut by_rule: BTreeMap<&str, Vec<(String, &Judged)>> = BTreeMap::new();
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
            .push((
                single_line(format!("{how}: {}", judged.finding.message)),
                judged,
            ));
    }
    by_rule
        .into_iter()
        .map(|(rule, messages)| (rule.to_owned(), annotation_value(&messages, omitted)))
        .collect()
}

/// Messages joined with `; ` while they fit, then a count of the rest.
fn annotation_value(messages: &[(String, &Judged)], omitted: &mut Omitted) -> String {
    let mut value = String::new();
    for (i, (message, _)) in messages.iter().enumerate() {
        let separator = if i == 0 { "" } else { "; " };
        let last = i + 1 == messages.len();
        let reserve = if last { 0 } else { 40 };
        if value.len() + separator.len() + message.len() + reserve <= ANNOTATION_BUDGET {
            value.push_str(separator);
            value.push_str(message);
            continue;
        }
        for (_, judged) in &messages[i..] {
            omitted.push(&detail(&judged.finding));
        }
        if i == 0 {
            value = truncate(message, ANNOTATION_BUDGET - 40);
        }
        let rest = messages.len() - i - usize::from(i == 0);
        if rest > 0 {
            let _ = std::fmt::Write::write_fmt(&mut value, format_args!("; ... {rest} more"));
        }
        break;
    }
    value
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
        let r = from_decision("uid-1", "pod shop/web", &decision, &mut Omitted::default());
        assert!(!r.allowed);
        assert_eq!(r.uid, "uid-1");
        assert_eq!(r.result.code, 403);
        assert_eq!(r.result.reason, "Forbidden");
        let m = &r.result.message;
        assert!(
            m.starts_with(
                "meshgate denied pod shop/web: [sidecar-required] no sidecar; fix: do the fix (https://meshgate.github.io/meshgate/rules/sidecar-required.html)"
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
        let r = from_decision("u", "pod shop/web", &decision, &mut Omitted::default());
        assert!(r.allowed);
        let w = r.warnings.unwrap();
        assert_eq!(
            w,
            ["[meshgate audit] pod shop/web: no-host-network: uses host; fix: do the fix"]
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
    fn long_denials_and_annotations_are_cut_with_a_count_and_every_rule_named() {
        let mut denied: Vec<Judged> = (0..40)
            .map(|i| {
                judged(
                    RuleId::NoInterceptionBypass,
                    &format!("container app-{i:02} {}", "x".repeat(900)),
                    Mode::Enforce,
                )
            })
            .collect();
        denied.push(judged(RuleId::SidecarRequired, "no sidecar", Mode::Enforce));
        let decision = Decision {
            denied,
            ..Default::default()
        };
        let mut omitted = Omitted::default();
        let r = from_decision("u", "pod shop/web", &decision, &mut omitted);
        let m = &r.result.message;
        assert!(m.len() <= MESSAGE_BUDGET, "{}", m.len());
        assert!(
            m.starts_with("meshgate denied pod shop/web: 41 violations of no-interception-bypass, sidecar-required: [no-interception-bypass] container app-00"),
            "{m}"
        );
        // Every violation shown carries its fix.
        let shown = m.matches("; fix: ").count();
        assert!(
            m.ends_with(&format!(
                "| ... {} more not shown; see meshgate's log",
                41 - shown
            )),
            "{m}"
        );
        let annotation = &r.audit_annotations["no-interception-bypass"];
        assert!(
            annotation.len() <= ANNOTATION_BUDGET,
            "{}",
            annotation.len()
        );
        assert!(annotation.ends_with(" more"), "{annotation}");
        assert_eq!(
            r.audit_annotations["sidecar-required"],
            "denied: no sidecar"
        );
        // What either channel cut is kept, once each, for the log: the
        // annotation keeps only app-00, the message the first few.
        let unique: std::collections::BTreeSet<_> = omitted.texts.iter().collect();
        assert_eq!(unique.len(), omitted.texts.len(), "each cut text once");
        for i in 3..40 {
            let app = format!("[no-interception-bypass] container app-{i:02}");
            assert!(omitted.texts.iter().any(|t| t.starts_with(&app)), "{app}");
        }
        assert!(omitted
            .texts
            .iter()
            .any(|t| t.starts_with("[no-interception-bypass] container app-39")));
        // The short violation is shown or kept, never lost.
        assert!(
            m.contains("[sidecar-required] no sidecar")
                || omitted
                    .texts
                    .iter()
                    .any(|t| t.starts_with("[sidecar-required] no sidecar"))
        );
        assert!(!omitted.texts.iter().any(|t| t.contains("app-00")));
    }

    #[test]
    fn control_characters_are_found_and_replaced_and_other_text_kept() {
        for c in ('\u{0}'..='\u{10ffff}').filter(|c| c.is_control() || c.len_utf8() <= 2) {
            let text = format!("a{c}b");
            assert_eq!(has_control(&text), c.is_control(), "{:?}", c);
        }
        assert_eq!(single_line("a\nb\u{85}c\u{7f}é€".into()), "a b c é€");
        assert_eq!(single_line("plain é text".into()), "plain é text");
    }

    #[test]
    fn small_warning_sets_pass_unchanged() {
        let w = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(budget_warnings(w.clone()), w);
    }
}
