//! Policy: turns the rules' findings into what happens to them. Exempt
//! namespaces skip judging altogether; exemptions from the config lift single
//! rules for matching objects; modes (global, per rule, capped by the
//! namespace label `meshgate.io/mode=audit`) decide between deny and report.

use crate::config::{Mode, NAMESPACE_MODE_LABEL};
use crate::rules::{self, Context, Finding, RuleId};
use crate::subject::Object;

/// A finding and the mode it is reported at (`enforce` or `audit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub finding: Finding,
    pub mode: Mode,
}

/// An exemption that lifted a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exempted {
    pub rule: RuleId,
    pub reason: String,
    /// Which exemption: `config:exemptions[i]`, `MeshExemption/<ns>/<name>`
    /// or `ClusterMeshExemption/<name>`.
    pub source: String,
    /// When it stops applying (`None`: a config exemption without one).
    pub expires: Option<k8s_openapi::jiff::Timestamp>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Judgement {
    pub findings: Vec<Judged>,
    pub exempted: Vec<Exempted>,
    /// The namespace is exempt: no rule ran.
    pub exempt_namespace: bool,
}

impl Judgement {
    pub fn has_enforced(&self) -> bool {
        self.findings.iter().any(|j| j.mode == Mode::Enforce)
    }
}

/// Whether `object` is skipped because its namespace is exempt. The mesh-wide
/// policies in the root namespace are judged even though the root namespace
/// is exempt by default: exempt namespaces hold infrastructure *workloads*
/// (gateways, istiod), but the policies there govern the whole mesh.
fn in_exempt_namespace(ctx: &Context, object: &Object) -> bool {
    let namespace = object.namespace();
    let mesh_wide_policy = namespace == ctx.config.mesh_root_namespace
        && matches!(
            object,
            Object::PeerAuthentication(_) | Object::AuthorizationPolicy(_)
        );
    ctx.config.is_exempt_namespace(namespace) && !mesh_wide_policy
}

/// Judges one object.
pub fn judge(object: &Object, ctx: &Context) -> Judgement {
    let config = ctx.config;
    let namespace = object.namespace();
    if in_exempt_namespace(ctx, object) {
        return Judgement {
            exempt_namespace: true,
            ..Judgement::default()
        };
    }
    let cap = namespace_cap(ctx, namespace);
    let mode_of = |rule: RuleId| rule.mode_in(config).min(cap);
    let mut judgement = Judgement::default();
    for finding in rules::evaluate(object, ctx, |rule| mode_of(rule) != Mode::Off) {
        match exemption(ctx, finding.rule, object) {
            Some(e) => judgement.exempted.push(e),
            None => judgement.findings.push(Judged {
                mode: if finding.advisory {
                    mode_of(finding.rule).min(Mode::Audit)
                } else {
                    mode_of(finding.rule)
                },
                finding,
            }),
        }
    }
    judgement
}

/// The mode `rule` runs at for `object`: off in exempt namespaces, else the
/// configured mode capped by the namespace label.
pub fn mode(ctx: &Context, rule: RuleId, object: &Object) -> Mode {
    let namespace = object.namespace();
    if ctx.config.is_exempt_namespace(namespace) {
        return Mode::Off;
    }
    rule.mode_in(ctx.config).min(namespace_cap(ctx, namespace))
}

/// The exemption (config file or exemption object) that lifts `rule` for
/// `object` at `ctx.now`, if any.
pub fn exemption(ctx: &Context, rule: RuleId, object: &Object) -> Option<Exempted> {
    let now = ctx.now;
    let from_config = ctx.config.exemptions.iter().enumerate().find(|(_, e)| {
        e.is_active(now)
            && e.covers(
                rule,
                object.namespace(),
                object.name(),
                object.selector_labels(),
            )
    });
    if let Some((i, e)) = from_config {
        return Some(Exempted {
            rule,
            reason: e.reason.clone(),
            source: crate::exemption::Source::Config(i).to_string(),
            expires: e.expires,
        });
    }
    let labels = ctx
        .posture
        .namespace(object.namespace())
        .map(|ns| &ns.labels);
    ctx.posture
        .exemptions
        .candidates(object.namespace())
        .find(|e| e.is_active(now) && e.covers(rule, object, labels))
        .map(|e| Exempted {
            rule,
            reason: e.reason.clone(),
            source: e.source.to_string(),
            expires: Some(e.expires),
        })
}

/// The namespace label can only lower enforcement to audit: turning meshgate
/// off for a namespace takes an exemption with a reason.
fn namespace_cap(ctx: &Context, namespace: &str) -> Mode {
    match ctx
        .posture
        .namespace(namespace)
        .and_then(|ns| ns.label(NAMESPACE_MODE_LABEL))
    {
        Some("audit") => Mode::Audit,
        _ => Mode::Enforce,
    }
}

/// What a review answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Enforced findings new in this request: the request is denied.
    pub denied: Vec<Judged>,
    /// Audit-mode findings, and enforced findings the object already had.
    pub warned: Vec<Warned>,
    pub exempted: Vec<Exempted>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warned {
    pub judged: Judged,
    /// An enforced finding the old object already had: reported, not denied,
    /// so scaling, relabelling and finalizer removal never get stuck.
    pub pre_existing: bool,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.denied.is_empty()
    }

    /// Decides a CREATE (`old` is `None`) or an UPDATE.
    pub fn from_judgements(new: Judgement, old: Option<&Judgement>) -> Decision {
        let mut decision = Decision {
            exempted: new.exempted,
            ..Decision::default()
        };
        for judged in new.findings {
            let pre_existing =
                old.is_some_and(|old| old.findings.iter().any(|o| o.finding == judged.finding));
            match judged.mode {
                Mode::Enforce if !pre_existing => decision.denied.push(judged),
                _ => decision.warned.push(Warned {
                    pre_existing: pre_existing && judged.mode == Mode::Enforce,
                    judged,
                }),
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::rules::testing::*;

    fn judge_with(
        config: &str,
        w: crate::subject::Workload,
        namespaces: &[k8s_openapi::api::core::v1::Namespace],
    ) -> Judgement {
        let mut world = World::with_namespaces(namespaces).with_baseline();
        world.config = Config::from_yaml(config).unwrap();
        judge(&Object::Workload(w), &world.ctx())
    }

    fn shop(extra: &[(&str, &str)]) -> Vec<k8s_openapi::api::core::v1::Namespace> {
        let mut labels = vec![("istio-injection", "enabled")];
        labels.extend_from_slice(extra);
        vec![namespace("shop", &labels)]
    }

    #[test]
    fn exempt_namespaces_skip_every_rule() {
        let j = judge_with("", deployment("x").in_ns("kube-system").host_network(), &[]);
        assert!(j.exempt_namespace && j.findings.is_empty());
    }

    #[test]
    fn mesh_wide_policies_in_the_exempt_root_namespace_are_still_judged() {
        let world = World::with_namespaces(&[]).with_baseline();
        let mesh: crate::istio::PeerAuthentication = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "default", "namespace": "istio-system"},
            "spec": {"mtls": {"mode": "STRICT"}}
        }))
        .unwrap();
        let ctx = Context {
            operation: crate::rules::Operation::Delete,
            ..world.ctx()
        };
        let j = judge(&Object::PeerAuthentication(mesh), &ctx);
        assert!(!j.exempt_namespace);
        assert_eq!(j.findings[0].finding.rule, RuleId::BaselineProtected);
        // Workloads there stay exempt.
        let j = judge(
            &Object::Workload(deployment("istiod").in_ns("istio-system")),
            &world.ctx(),
        );
        assert!(j.exempt_namespace);
    }

    #[test]
    fn modes_global_per_rule_and_off() {
        let j = judge_with(
            "mode: audit\nrules: {no-host-network: enforce, dedicated-service-account: off}\n",
            deployment("x").host_network().service_account(None),
            &shop(&[]),
        );
        let modes: Vec<_> = j
            .findings
            .iter()
            .map(|j| (j.finding.rule, j.mode))
            .collect();
        assert!(modes.contains(&(RuleId::NoHostNetwork, Mode::Enforce)));
        assert!(modes.contains(&(RuleId::SidecarRequired, Mode::Audit)));
        assert!(!modes
            .iter()
            .any(|(r, _)| *r == RuleId::DedicatedServiceAccount));
    }

    #[test]
    fn namespace_label_lowers_to_audit_but_cannot_turn_off() {
        let j = judge_with(
            "",
            deployment("x").host_network(),
            &shop(&[("meshgate.io/mode", "audit")]),
        );
        assert!(j.findings.iter().all(|f| f.mode == Mode::Audit) && !j.findings.is_empty());
        let j = judge_with(
            "",
            deployment("x").host_network(),
            &shop(&[("meshgate.io/mode", "off")]),
        );
        assert!(j.findings.iter().all(|f| f.mode == Mode::Enforce) && !j.findings.is_empty());
    }

    #[test]
    fn exemptions_lift_only_their_rules_and_are_recorded() {
        let config =
            "exemptions:\n- rules: [no-host-network]\n  namespace: shop\n  reason: node agent\n";
        let j = judge_with(config, deployment("agent").host_network(), &shop(&[]));
        assert_eq!(
            j.exempted,
            [Exempted {
                rule: RuleId::NoHostNetwork,
                reason: "node agent".into(),
                source: "config:exemptions[0]".into(),
                expires: None,
            }]
        );
        // sidecar-required still fires: hostNetwork pods are never injected.
        assert_eq!(
            j.findings
                .iter()
                .map(|f| f.finding.rule)
                .collect::<Vec<_>>(),
            [RuleId::SidecarRequired]
        );
    }

    #[test]
    fn update_keeps_pre_existing_violations_as_warnings_and_denies_new_ones() {
        let old = judge_with("", deployment("x").host_network(), &shop(&[]));
        let new = judge_with(
            "",
            deployment("x")
                .host_network()
                .with_annotation("sidecar.istio.io/interceptionMode", "NONE"),
            &shop(&[]),
        );
        let d = Decision::from_judgements(new, Some(&old));
        assert_eq!(
            d.denied.iter().map(|j| j.finding.rule).collect::<Vec<_>>(),
            [RuleId::NoInterceptionBypass]
        );
        assert!(d.warned.iter().all(|w| w.pre_existing));
        assert_eq!(d.warned.len(), 2);
    }

    #[test]
    fn create_denies_enforced_and_warns_audited() {
        let j = judge_with(
            "rules: {dedicated-service-account: audit}\n",
            deployment("x").service_account(None),
            &shop(&[]),
        );
        let d = Decision::from_judgements(j, None);
        assert!(d.allowed());
        assert_eq!(d.warned.len(), 1);
        assert!(!d.warned[0].pre_existing);
    }
}
