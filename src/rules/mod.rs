//! The rules: pure functions from a typed object and the cluster posture to
//! findings. No I/O, no clock, no globals: the webhook, `meshgate audit` and
//! the tests call the very same functions. Each rule lives in a file named
//! after its id and reports every problem it sees, never just the first.

use std::fmt;
use std::str::FromStr;

use crate::certmanager::Certificate;
use crate::config::{Config, Mode};
use crate::istio::{AuthorizationPolicy, DestinationRule, PeerAuthentication, Sidecar};
use crate::posture::PostureIndex;
use crate::subject::{NamespaceObject, Object, Workload};

pub mod authorization_no_allow_all;
pub mod baseline_protected;
pub mod dedicated_service_account;
pub mod default_deny_required;
pub mod deny_all_overrides_allow;
pub mod destination_rule_mtls;
pub mod namespace_mesh_enrolled;
pub mod no_host_network;
pub mod no_interception_bypass;
pub mod peer_authentication_strict;
pub mod short_lived_certificates;
pub mod sidecar_egress_locked;
pub mod sidecar_required;
pub mod strict_mtls_required;

#[cfg(test)]
pub(crate) mod testing;

/// Every rule meshgate knows, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleId {
    SidecarRequired,
    NoHostNetwork,
    NoInterceptionBypass,
    DedicatedServiceAccount,
    StrictMtlsRequired,
    DefaultDenyRequired,
    PeerAuthenticationStrict,
    AuthorizationNoAllowAll,
    DenyAllOverridesAllow,
    DestinationRuleMtls,
    BaselineProtected,
    NamespaceMeshEnrolled,
    SidecarEgressLocked,
    ShortLivedCertificates,
    /// The `/mutate` certificate mount: not a check, but modes and
    /// exemptions address it by this id.
    WorkloadCertificates,
}

impl RuleId {
    pub const ALL: &'static [RuleId] = &[
        RuleId::SidecarRequired,
        RuleId::NoHostNetwork,
        RuleId::NoInterceptionBypass,
        RuleId::DedicatedServiceAccount,
        RuleId::StrictMtlsRequired,
        RuleId::DefaultDenyRequired,
        RuleId::PeerAuthenticationStrict,
        RuleId::AuthorizationNoAllowAll,
        RuleId::DenyAllOverridesAllow,
        RuleId::DestinationRuleMtls,
        RuleId::BaselineProtected,
        RuleId::NamespaceMeshEnrolled,
        RuleId::SidecarEgressLocked,
        RuleId::ShortLivedCertificates,
        RuleId::WorkloadCertificates,
    ];

    /// The mode a rule runs at when the config does not name it: the global
    /// mode, capped for rules whose findings are advice rather than holes.
    pub fn default_cap(self) -> Mode {
        match self {
            RuleId::DenyAllOverridesAllow => Mode::Audit,
            _ => Mode::Enforce,
        }
    }

    /// Rules that read the cluster's mesh posture (PeerAuthentications and
    /// AuthorizationPolicies): their denials are confirmed against the API
    /// server before they are sent.
    pub fn reads_posture(self) -> bool {
        matches!(
            self,
            RuleId::StrictMtlsRequired | RuleId::DefaultDenyRequired | RuleId::BaselineProtected
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::SidecarRequired => "sidecar-required",
            RuleId::NoHostNetwork => "no-host-network",
            RuleId::NoInterceptionBypass => "no-interception-bypass",
            RuleId::DedicatedServiceAccount => "dedicated-service-account",
            RuleId::StrictMtlsRequired => "strict-mtls-required",
            RuleId::DefaultDenyRequired => "default-deny-required",
            RuleId::PeerAuthenticationStrict => "peer-authentication-strict",
            RuleId::AuthorizationNoAllowAll => "authorization-no-allow-all",
            RuleId::DenyAllOverridesAllow => "deny-all-overrides-allow",
            RuleId::DestinationRuleMtls => "destination-rule-mtls",
            RuleId::BaselineProtected => "baseline-protected",
            RuleId::NamespaceMeshEnrolled => "namespace-mesh-enrolled",
            RuleId::SidecarEgressLocked => "sidecar-egress-locked",
            RuleId::ShortLivedCertificates => "short-lived-certificates",
            RuleId::WorkloadCertificates => "workload-certificates",
        }
    }

    /// One line for catalogues and SARIF rule descriptions.
    pub fn summary(self) -> &'static str {
        match self {
            RuleId::SidecarRequired => {
                "workloads must run with an Istio sidecar (or in an ambient namespace)"
            }
            RuleId::NoHostNetwork => {
                "workloads must not use the host network, which no proxy intercepts"
            }
            RuleId::NoInterceptionBypass => {
                "workloads must not route traffic around the sidecar's interception"
            }
            RuleId::DedicatedServiceAccount => {
                "workloads need their own service account, hence their own mesh identity"
            }
            RuleId::StrictMtlsRequired => {
                "workloads must only accept mTLS: STRICT PeerAuthentication on every port"
            }
            RuleId::DefaultDenyRequired => {
                "workloads' namespaces must deny by default (allow-nothing AuthorizationPolicy)"
            }
            RuleId::PeerAuthenticationStrict => {
                "PeerAuthentications must not set PERMISSIVE or DISABLE, at any level"
            }
            RuleId::AuthorizationNoAllowAll => {
                "ALLOW AuthorizationPolicies must not allow everything"
            }
            RuleId::DenyAllOverridesAllow => {
                "a DENY-everything policy silently overrides every ALLOW policy"
            }
            RuleId::DestinationRuleMtls => {
                "DestinationRules to in-mesh hosts must keep ISTIO_MUTUAL"
            }
            RuleId::BaselineProtected => {
                "the baseline STRICT and deny-by-default policies cannot be deleted or weakened"
            }
            RuleId::NamespaceMeshEnrolled => "namespaces must be enrolled in the mesh",
            RuleId::SidecarEgressLocked => {
                "Sidecars must not allow egress to unregistered hosts (ALLOW_ANY)"
            }
            RuleId::ShortLivedCertificates => {
                "workload certificates (cert-manager) must be short-lived and not wildcards"
            }
            RuleId::WorkloadCertificates => {
                "/mutate mounts workload certificates into application containers"
            }
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct UnknownRule;

impl FromStr for RuleId {
    type Err = UnknownRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or(UnknownRule)
    }
}

/// One problem with one object: what is wrong and how to fix it. The
/// message describes the field, never the object: the answer (denial,
/// audit output) names the object once, beside all its findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: RuleId,
    pub message: String,
    pub fix: String,
    /// Advice rather than a hole: reported at audit level at most.
    pub advisory: bool,
}

impl Finding {
    pub fn new(rule: RuleId, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            rule,
            message: message.into(),
            fix: fix.into(),
            advisory: false,
        }
    }

    pub fn advisory(rule: RuleId, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            advisory: true,
            ..Finding::new(rule, message, fix)
        }
    }
}

/// For rules that read the Istio security policies: a finding saying the
/// posture cannot be verified when the cluster does not serve their CRDs
/// (never a silent pass).
pub fn unverifiable_without_istio(rule: RuleId, ctx: &Context, what: &str) -> Option<Finding> {
    (ctx.posture.security_api == crate::posture::Availability::Missing).then(|| {
        Finding::new(
            rule,
            format!(
                "{what} posture cannot be verified: the security.istio.io CRDs are not installed"
            ),
            "install Istio's CRDs, then apply the mesh baseline (deploy/baseline/)",
        )
    })
}

/// What the request does to the object.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    Create,
    Update {
        old: &'a Object,
    },
    /// The object judged is the one being deleted.
    Delete,
}

/// What every rule may read besides the object.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub posture: &'a PostureIndex,
    pub config: &'a Config,
    pub operation: Operation<'a>,
}

/// A rule's check, by the kind of object it reads.
#[derive(Clone, Copy)]
pub enum Check {
    Workload(fn(&Workload, &Context) -> Vec<Finding>),
    Namespace(fn(&NamespaceObject, &Context) -> Vec<Finding>),
    PeerAuthentication(fn(&PeerAuthentication, &Context) -> Vec<Finding>),
    AuthorizationPolicy(fn(&AuthorizationPolicy, &Context) -> Vec<Finding>),
    DestinationRule(fn(&DestinationRule, &Context) -> Vec<Finding>),
    Sidecar(fn(&Sidecar, &Context) -> Vec<Finding>),
    Certificate(fn(&Certificate, &Context) -> Vec<Finding>),
    /// Rules that read several kinds.
    Any(fn(&Object, &Context) -> Vec<Finding>),
}

pub struct Rule {
    pub id: RuleId,
    pub check: Check,
    /// Whether the rule judges DELETE requests (it receives the old object).
    pub on_delete: bool,
}

const fn rule(id: RuleId, check: Check) -> Rule {
    Rule {
        id,
        check,
        on_delete: false,
    }
}

/// The rule table: adding a rule is one line here plus its file.
pub const RULES: &[Rule] = &[
    rule(
        RuleId::SidecarRequired,
        Check::Workload(sidecar_required::check),
    ),
    rule(
        RuleId::NoHostNetwork,
        Check::Workload(no_host_network::check),
    ),
    rule(
        RuleId::NoInterceptionBypass,
        Check::Workload(no_interception_bypass::check),
    ),
    rule(
        RuleId::DedicatedServiceAccount,
        Check::Workload(dedicated_service_account::check),
    ),
    rule(
        RuleId::StrictMtlsRequired,
        Check::Workload(strict_mtls_required::check),
    ),
    rule(
        RuleId::DefaultDenyRequired,
        Check::Workload(default_deny_required::check),
    ),
    rule(
        RuleId::PeerAuthenticationStrict,
        Check::PeerAuthentication(peer_authentication_strict::check),
    ),
    rule(
        RuleId::AuthorizationNoAllowAll,
        Check::AuthorizationPolicy(authorization_no_allow_all::check),
    ),
    rule(
        RuleId::DenyAllOverridesAllow,
        Check::AuthorizationPolicy(deny_all_overrides_allow::check),
    ),
    rule(
        RuleId::DestinationRuleMtls,
        Check::DestinationRule(destination_rule_mtls::check),
    ),
    Rule {
        id: RuleId::BaselineProtected,
        check: Check::Any(baseline_protected::check),
        on_delete: true,
    },
    rule(
        RuleId::NamespaceMeshEnrolled,
        Check::Namespace(namespace_mesh_enrolled::check),
    ),
    rule(
        RuleId::SidecarEgressLocked,
        Check::Sidecar(sidecar_egress_locked::check),
    ),
    rule(
        RuleId::ShortLivedCertificates,
        Check::Certificate(short_lived_certificates::check),
    ),
];

/// Runs every rule that applies to `object` and whose mode is not `off`
/// (`enabled` decides that, so rules that cannot matter never run).
pub fn evaluate(object: &Object, ctx: &Context, enabled: impl Fn(RuleId) -> bool) -> Vec<Finding> {
    let deleting = matches!(ctx.operation, Operation::Delete);
    let mut findings = Vec::new();
    for rule in RULES
        .iter()
        .filter(|r| r.on_delete || !deleting)
        .filter(|r| enabled(r.id))
    {
        findings.extend(match (rule.check, object) {
            (Check::Workload(check), Object::Workload(o)) => check(o, ctx),
            (Check::Namespace(check), Object::Namespace(o)) => check(o, ctx),
            (Check::PeerAuthentication(check), Object::PeerAuthentication(o)) => check(o, ctx),
            (Check::AuthorizationPolicy(check), Object::AuthorizationPolicy(o)) => check(o, ctx),
            (Check::DestinationRule(check), Object::DestinationRule(o)) => check(o, ctx),
            (Check::Sidecar(check), Object::Sidecar(o)) => check(o, ctx),
            (Check::Certificate(check), Object::Certificate(o)) => check(o, ctx),
            (Check::Any(check), o) => check(o, ctx),
            _ => Vec::new(),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_id_round_trips_and_is_in_the_table_once() {
        for id in RuleId::ALL {
            assert_eq!(id.as_str().parse::<RuleId>(), Ok(*id));
            let expected = usize::from(*id != RuleId::WorkloadCertificates);
            assert_eq!(
                RULES.iter().filter(|r| r.id == *id).count(),
                expected,
                "{id}"
            );
        }
        assert_eq!("Sidecar-Required".parse::<RuleId>(), Err(UnknownRule));
    }

    #[test]
    fn findings_describe_fields_and_leave_naming_the_object_to_the_answer() {
        use crate::rules::testing::*;
        use serde_json::json;
        let world = World::with_namespaces(&[namespace("shop", &[])]);
        let workload = deployment("web")
            .host_network()
            .service_account(None)
            .with_annotation("traffic.sidecar.istio.io/excludeInboundPorts", "8080");
        let objects = [
            Object::Workload(workload),
            Object::Namespace(NamespaceObject {
                name: "web".into(),
                labels: Default::default(),
            }),
            Object::PeerAuthentication(object("shop", "web", json!({"mtls": {"mode": "DISABLE"}}))),
            Object::AuthorizationPolicy(object("shop", "web", json!({"rules": [{}]}))),
            Object::DestinationRule(object(
                "shop",
                "web",
                json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}),
            )),
            Object::Sidecar(object(
                "shop",
                "web",
                json!({"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}),
            )),
            Object::Certificate(object(
                "shop",
                "web",
                json!({"issuerRef": {"name": "istio-ca", "kind": "ClusterIssuer"}}),
            )),
        ];
        let mut judged = 0;
        for o in &objects {
            for f in evaluate(o, &world.ctx(), |_| true) {
                judged += 1;
                assert!(!f.message.contains("shop/web"), "{o}: {}", f.message);
                assert!(!f.message.starts_with(&o.to_string()), "{o}: {}", f.message);
            }
        }
        assert!(judged >= objects.len() + 4, "{judged}");
    }
}
