//! The rules: pure functions from a typed object and the cluster posture to
//! findings. No I/O, no clock, no globals: the webhook, `meshgate audit` and
//! the tests call the very same functions. Each rule lives in a file named
//! after its id and reports every problem it sees, never just the first.
//!
//! Adding a rule: its file, its [`RuleId`] variant and one row in [`RULES`]
//! (name, summary, severity, category, check, DELETE, posture, cap). The
//! kinds a rule can read are rows of `crate::kinds`.

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

    /// The rule's row in [`RULES`] (rows are in the enum's order).
    pub fn row(self) -> &'static Rule {
        &RULES[self as usize]
    }

    /// The mode a rule runs at when the config does not name it: the global
    /// mode, capped for rules whose findings are advice rather than holes.
    pub fn default_cap(self) -> Mode {
        self.row().cap
    }

    /// Rules that read the cluster's mesh posture (PeerAuthentications and
    /// AuthorizationPolicies): their denials are confirmed against the API
    /// server before they are sent.
    pub fn reads_posture(self) -> bool {
        self.row().reads_posture
    }

    pub fn as_str(self) -> &'static str {
        self.row().name
    }

    /// One line for catalogues and SARIF rule descriptions.
    pub fn summary(self) -> &'static str {
        self.row().summary
    }

    /// For PolicyReports: `high` for traffic that bypasses mTLS or the
    /// proxy, `medium` for missing defence in depth, `low` for hygiene.
    pub fn severity(self) -> &'static str {
        self.row().severity.as_str()
    }

    pub fn category(self) -> &'static str {
        self.row().category
    }

    /// The rule's page in the documentation (`docs/src/rules/<id>.md`),
    /// linked from SARIF, denials and `meshgate rules`.
    pub fn doc_url(self) -> String {
        format!("{DOCS_URL}/rules/{}.html", self.as_str())
    }
}

/// Where the documentation book (`docs/`) is published.
pub const DOCS_URL: &str = "https://meshgate.github.io/meshgate";

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
    /// The id users write in configs and read in answers.
    pub name: &'static str,
    pub summary: &'static str,
    pub severity: Severity,
    pub category: &'static str,
    /// `None` for the `/mutate` certificate mount, which checks nothing.
    pub check: Option<Check>,
    /// Whether the rule judges DELETE requests (it receives the old object).
    pub on_delete: bool,
    /// Whether its findings rest on the posture index (see
    /// [`RuleId::reads_posture`]).
    pub reads_posture: bool,
    /// The highest mode it runs at unless the config names it.
    pub cap: Mode,
    /// Its CEL form, for the API server to run itself (`crate::native`):
    /// only rules whose verdict needs nothing but the object, its
    /// namespace's labels and the configuration.
    pub native: Option<&'static crate::native::NativeRule>,
}

/// PolicyReport severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    High,
    Medium,
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

const ENROLMENT: &str = "Mesh enrolment";
const MTLS: &str = "mTLS";
const AUTHORIZATION: &str = "Authorization";
const IDENTITY: &str = "Workload identity";

const fn rule(
    (id, name): (RuleId, &'static str),
    summary: &'static str,
    (severity, category): (Severity, &'static str),
    check: Option<Check>,
) -> Rule {
    Rule {
        id,
        name,
        summary,
        severity,
        category,
        check,
        on_delete: false,
        reads_posture: false,
        cap: Mode::Enforce,
        native: None,
    }
}

/// The rule table, in [`RuleId`]'s order: adding a rule is its file, its
/// `RuleId` variant and one row here.
pub const RULES: &[Rule] = &[
    Rule {
        native: Some(&sidecar_required::NATIVE),
        ..rule(
            (RuleId::SidecarRequired, "sidecar-required"),
            "workloads must run with an Istio sidecar (or in an ambient namespace)",
            (Severity::High, ENROLMENT),
            Some(Check::Workload(sidecar_required::check)),
        )
    },
    Rule {
        native: Some(&no_host_network::NATIVE),
        ..rule(
            (RuleId::NoHostNetwork, "no-host-network"),
            "workloads must not use the host network, which no proxy intercepts",
            (Severity::High, ENROLMENT),
            Some(Check::Workload(no_host_network::check)),
        )
    },
    rule(
        (RuleId::NoInterceptionBypass, "no-interception-bypass"),
        "workloads must not route traffic around the sidecar's interception",
        (Severity::High, ENROLMENT),
        Some(Check::Workload(no_interception_bypass::check)),
    ),
    Rule {
        native: Some(&dedicated_service_account::NATIVE),
        ..rule(
            (RuleId::DedicatedServiceAccount, "dedicated-service-account"),
            "workloads need their own service account, hence their own mesh identity",
            (Severity::Medium, IDENTITY),
            Some(Check::Workload(dedicated_service_account::check)),
        )
    },
    Rule {
        reads_posture: true,
        ..rule(
            (RuleId::StrictMtlsRequired, "strict-mtls-required"),
            "workloads must only accept mTLS: STRICT PeerAuthentication on every port",
            (Severity::High, MTLS),
            Some(Check::Workload(strict_mtls_required::check)),
        )
    },
    Rule {
        reads_posture: true,
        ..rule(
            (RuleId::DefaultDenyRequired, "default-deny-required"),
            "workloads' namespaces must deny by default (allow-nothing AuthorizationPolicy)",
            (Severity::Medium, AUTHORIZATION),
            Some(Check::Workload(default_deny_required::check)),
        )
    },
    Rule {
        native: Some(&peer_authentication_strict::NATIVE),
        ..rule(
            (
                RuleId::PeerAuthenticationStrict,
                "peer-authentication-strict",
            ),
            "PeerAuthentications must not set PERMISSIVE or DISABLE, at any level",
            (Severity::High, MTLS),
            Some(Check::PeerAuthentication(peer_authentication_strict::check)),
        )
    },
    Rule {
        native: Some(&authorization_no_allow_all::NATIVE),
        ..rule(
            (
                RuleId::AuthorizationNoAllowAll,
                "authorization-no-allow-all",
            ),
            "ALLOW AuthorizationPolicies must not allow everything",
            (Severity::High, AUTHORIZATION),
            Some(Check::AuthorizationPolicy(
                authorization_no_allow_all::check,
            )),
        )
    },
    Rule {
        cap: Mode::Audit,
        ..rule(
            (RuleId::DenyAllOverridesAllow, "deny-all-overrides-allow"),
            "a DENY-everything policy silently overrides every ALLOW policy",
            (Severity::Low, AUTHORIZATION),
            Some(Check::AuthorizationPolicy(deny_all_overrides_allow::check)),
        )
    },
    rule(
        (RuleId::DestinationRuleMtls, "destination-rule-mtls"),
        "DestinationRules to in-mesh hosts must keep ISTIO_MUTUAL",
        (Severity::Medium, MTLS),
        Some(Check::DestinationRule(destination_rule_mtls::check)),
    ),
    Rule {
        reads_posture: true,
        on_delete: true,
        ..rule(
            (RuleId::BaselineProtected, "baseline-protected"),
            "the baseline STRICT and deny-by-default policies cannot be deleted or weakened",
            (Severity::High, AUTHORIZATION),
            Some(Check::Any(baseline_protected::check)),
        )
    },
    rule(
        (RuleId::NamespaceMeshEnrolled, "namespace-mesh-enrolled"),
        "namespaces must be enrolled in the mesh",
        (Severity::Medium, ENROLMENT),
        Some(Check::Namespace(namespace_mesh_enrolled::check)),
    ),
    Rule {
        native: Some(&sidecar_egress_locked::NATIVE),
        ..rule(
            (RuleId::SidecarEgressLocked, "sidecar-egress-locked"),
            "Sidecars must not allow egress to unregistered hosts (ALLOW_ANY)",
            (Severity::Low, ENROLMENT),
            Some(Check::Sidecar(sidecar_egress_locked::check)),
        )
    },
    Rule {
        native: Some(&short_lived_certificates::NATIVE),
        ..rule(
            (RuleId::ShortLivedCertificates, "short-lived-certificates"),
            "workload certificates (cert-manager) must be short-lived and not wildcards",
            (Severity::Low, IDENTITY),
            Some(Check::Certificate(short_lived_certificates::check)),
        )
    },
    rule(
        (RuleId::WorkloadCertificates, "workload-certificates"),
        "/mutate mounts workload certificates into application containers",
        (Severity::Low, IDENTITY),
        None,
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
        let Some(check) = rule.check else { continue };
        findings.extend(match (check, object) {
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
    fn every_rule_id_round_trips_and_has_its_row_in_order() {
        assert_eq!(RULES.len(), RuleId::ALL.len());
        for (index, id) in RuleId::ALL.iter().enumerate() {
            assert_eq!(id.as_str().parse::<RuleId>(), Ok(*id));
            assert_eq!(*id as usize, index);
            assert_eq!(RULES[index].id, *id);
            assert_eq!(
                RULES[index].check.is_none(),
                *id == RuleId::WorkloadCertificates
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
