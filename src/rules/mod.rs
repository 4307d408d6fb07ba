//! The rules: pure functions from a typed object and the cluster posture to
//! findings. No I/O, no clock, no globals: the webhook, `meshgate audit` and
//! the tests call the very same functions. Each rule lives in a file named
//! after its id and reports every problem it sees, never just the first.
//!
//! Adding a rule is exactly: its file here (a `check` taking the typed
//! object it judges), its [`RuleId`] variant in `crate::vocab`, its `pub
//! mod` line and one row in [`RULES`] (summary, severity, category, check;
//! DELETE, posture, cap when not the defaults), its page in the book
//! (`docs/src/rules/<id>.md`, linked from `docs/src/SUMMARY.md` and
//! `docs/src/rules/index.md`: `tests/docs.rs` checks), and its id in the
//! chart's `values.schema.json`, twice (`tests/chart/drift.rs` checks). The
//! kinds it judges come from the type its check takes; config parsing,
//! `meshgate rules`, SARIF and the reports follow from the row.

use crate::config::Config;
use crate::kinds::KindSet;
use crate::posture::PostureIndex;
use crate::subject::{Judged, Object};

pub use crate::vocab::{Mode, RuleId, Severity};

pub mod authorization_no_allow_all;
pub mod baseline_protected;
pub mod dedicated_service_account;
pub mod default_deny_required;
pub mod deny_all_overrides_allow;
pub mod destination_rule_mtls;
pub mod namespace_mesh_enrolled;
pub mod native_form;
pub mod no_host_network;
pub mod no_interception_bypass;
pub mod peer_authentication_strict;
mod rule_id;
pub mod short_lived_certificates;
pub mod sidecar_egress_locked;
pub mod sidecar_required;
pub mod strict_mtls_required;

#[cfg(test)]
pub(crate) mod testing;

/// Where the documentation book (`docs/`) is published.
pub const DOCS_URL: &str = "https://meshgate.github.io/meshgate";

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
    /// When the judgement is made: exemptions apply strictly before their
    /// `expires`. The rules stay pure: the caller passes the clock (the
    /// webhook the time of the review, the background audit the time of
    /// the pass, `meshgate audit` the current time or `--now`).
    pub now: k8s_openapi::jiff::Timestamp,
}

/// A rule's check and the kinds it judges, read by [`evaluate`] and by the
/// report's verdict mapping alike.
#[derive(Clone, Copy)]
pub struct Check {
    pub kinds: KindSet,
    pub run: fn(&Object, &Context) -> Vec<Finding>,
}

/// The [`Check`] of a rule whose function takes one typed object
/// ([`Judged`]: a `Workload`, a `NamespaceObject`, an Istio or
/// cert-manager type): the kinds are the type's, and other objects are
/// never passed to it.
macro_rules! typed {
    ($check:path) => {
        Check {
            kinds: kinds_of($check),
            run: |object, ctx| match Judged::of(object) {
                Some(typed) => $check(typed, ctx),
                None => Vec::new(),
            },
        }
    };
}

const fn kinds_of<T: Judged>(_: fn(&T, &Context) -> Vec<Finding>) -> KindSet {
    T::KINDS
}

pub struct Rule {
    pub id: RuleId,
    pub summary: &'static str,
    pub severity: Severity,
    pub category: &'static str,
    /// `None` for the `/mutate` certificate mount, which checks nothing.
    pub check: Option<Check>,
    /// Whether the rule judges DELETE requests (it receives the old object).
    pub on_delete: bool,
    /// Whether it judges objects at rest (created, audited); `false` for a
    /// rule that only judges a change, which never passes or fails an
    /// object in a report.
    pub at_rest: bool,
    /// Whether its findings rest on the posture index (see
    /// [`RuleId::reads_posture`]).
    pub reads_posture: bool,
    /// The highest mode it runs at unless the config names it.
    pub cap: Mode,
    /// Its CEL form, for the API server to run itself (`crate::native`):
    /// only rules whose verdict needs nothing but the object, its
    /// namespace's labels and the configuration.
    pub native: Option<&'static native_form::NativeRule>,
}

impl Rule {
    /// Whether the rule judges objects of `kind` at rest.
    pub fn judges_at_rest(&self, kind: crate::kinds::Kind) -> bool {
        self.at_rest && self.check.is_some_and(|c| c.kinds.contains(kind))
    }
}

const ENROLMENT: &str = "Mesh enrolment";
const MTLS: &str = "mTLS";
const AUTHORIZATION: &str = "Authorization";
const IDENTITY: &str = "Workload identity";

const fn rule(
    id: RuleId,
    summary: &'static str,
    (severity, category): (Severity, &'static str),
    check: Option<Check>,
) -> Rule {
    Rule {
        id,
        summary,
        severity,
        category,
        check,
        on_delete: false,
        at_rest: true,
        reads_posture: false,
        cap: Mode::Enforce,
        native: None,
    }
}

/// The rule table, in [`RuleId`]'s order: adding a rule is its file, its
/// `RuleId` variant (`crate::vocab`), one row here and its page in the book
/// (`docs/src/rules/<id>.md`, listed in `docs/src/SUMMARY.md` and the rules
/// index); see the book's development page.
pub const RULES: &[Rule] = &[
    Rule {
        native: Some(&sidecar_required::NATIVE),
        ..rule(
            RuleId::SidecarRequired,
            "workloads must run with an Istio sidecar (or in an ambient namespace)",
            (Severity::High, ENROLMENT),
            Some(typed!(sidecar_required::check)),
        )
    },
    Rule {
        native: Some(&no_host_network::NATIVE),
        ..rule(
            RuleId::NoHostNetwork,
            "workloads must not use the host network, which no proxy intercepts",
            (Severity::High, ENROLMENT),
            Some(typed!(no_host_network::check)),
        )
    },
    Rule {
        native: Some(&no_interception_bypass::NATIVE),
        ..rule(
            RuleId::NoInterceptionBypass,
            "workloads must not route traffic around the sidecar's interception",
            (Severity::High, ENROLMENT),
            Some(typed!(no_interception_bypass::check)),
        )
    },
    Rule {
        native: Some(&dedicated_service_account::NATIVE),
        ..rule(
            RuleId::DedicatedServiceAccount,
            "workloads need their own service account, hence their own mesh identity",
            (Severity::Medium, IDENTITY),
            Some(typed!(dedicated_service_account::check)),
        )
    },
    Rule {
        reads_posture: true,
        ..rule(
            RuleId::StrictMtlsRequired,
            "workloads must only accept mTLS: STRICT PeerAuthentication on every port",
            (Severity::High, MTLS),
            Some(typed!(strict_mtls_required::check)),
        )
    },
    Rule {
        reads_posture: true,
        ..rule(
            RuleId::DefaultDenyRequired,
            "workloads' namespaces must deny by default (allow-nothing AuthorizationPolicy)",
            (Severity::Medium, AUTHORIZATION),
            Some(typed!(default_deny_required::check)),
        )
    },
    Rule {
        native: Some(&peer_authentication_strict::NATIVE),
        ..rule(
            RuleId::PeerAuthenticationStrict,
            "PeerAuthentications must not set PERMISSIVE or DISABLE, at any level",
            (Severity::High, MTLS),
            Some(typed!(peer_authentication_strict::check)),
        )
    },
    Rule {
        native: Some(&authorization_no_allow_all::NATIVE),
        ..rule(
            RuleId::AuthorizationNoAllowAll,
            "ALLOW AuthorizationPolicies must not allow everything",
            (Severity::High, AUTHORIZATION),
            Some(typed!(authorization_no_allow_all::check)),
        )
    },
    Rule {
        cap: Mode::Audit,
        ..rule(
            RuleId::DenyAllOverridesAllow,
            "a DENY-everything policy silently overrides every ALLOW policy",
            (Severity::Low, AUTHORIZATION),
            Some(typed!(deny_all_overrides_allow::check)),
        )
    },
    rule(
        RuleId::DestinationRuleMtls,
        "DestinationRules to in-mesh hosts must keep ISTIO_MUTUAL",
        (Severity::Medium, MTLS),
        Some(typed!(destination_rule_mtls::check)),
    ),
    // Reads the old object of an UPDATE too, hence untyped.
    Rule {
        reads_posture: true,
        on_delete: true,
        at_rest: false,
        ..rule(
            RuleId::BaselineProtected,
            "the baseline STRICT and deny-by-default policies cannot be deleted or weakened",
            (Severity::High, AUTHORIZATION),
            Some(Check {
                kinds: baseline_protected::KINDS,
                run: baseline_protected::check,
            }),
        )
    },
    rule(
        RuleId::NamespaceMeshEnrolled,
        "namespaces must be enrolled in the mesh",
        (Severity::Medium, ENROLMENT),
        Some(typed!(namespace_mesh_enrolled::check)),
    ),
    Rule {
        native: Some(&sidecar_egress_locked::NATIVE),
        ..rule(
            RuleId::SidecarEgressLocked,
            "Sidecars must not allow egress to unregistered hosts (ALLOW_ANY)",
            (Severity::Low, ENROLMENT),
            Some(typed!(sidecar_egress_locked::check)),
        )
    },
    Rule {
        native: Some(&short_lived_certificates::NATIVE),
        ..rule(
            RuleId::ShortLivedCertificates,
            "workload certificates (cert-manager) must be short-lived and not wildcards",
            (Severity::Low, IDENTITY),
            Some(typed!(short_lived_certificates::check)),
        )
    },
    rule(
        RuleId::WorkloadCertificates,
        "/mutate mounts workload certificates into application containers",
        (Severity::Low, IDENTITY),
        None,
    ),
];

// A variant without its row, or rows out of order, does not compile.
const _: () = {
    assert!(RULES.len() == RuleId::ALL.len());
    let mut index = 0;
    while index < RULES.len() {
        assert!(RULES[index].id as usize == index);
        index += 1;
    }
};

/// Runs every rule that judges `object`'s kind and whose mode is not `off`
/// (`enabled` decides that, so rules that cannot matter never run).
pub fn evaluate(object: &Object, ctx: &Context, enabled: impl Fn(RuleId) -> bool) -> Vec<Finding> {
    let deleting = matches!(ctx.operation, Operation::Delete);
    let kind = object.kind();
    RULES
        .iter()
        .filter(|r| r.on_delete || !deleting)
        .filter_map(|r| r.check.filter(|c| c.kinds.contains(kind)).map(|c| (r, c)))
        .filter(|(r, _)| enabled(r.id))
        .flat_map(|(_, check)| (check.run)(object, ctx))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::NamespaceObject;

    #[test]
    fn every_rule_id_round_trips_and_has_its_row_in_order() {
        assert_eq!(RULES.len(), RuleId::ALL.len());
        for (index, id) in RuleId::ALL.iter().enumerate() {
            assert_eq!(*id as usize, index);
            assert_eq!(RULES[index].id, *id);
            assert_eq!(
                RULES[index].check.is_none(),
                *id == RuleId::WorkloadCertificates
            );
        }
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
