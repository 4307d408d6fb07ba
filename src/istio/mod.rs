//! The Istio resources meshgate reads: only the fields the rules need, unknown
//! fields tolerated, every version (`v1`, `v1beta1`, `v1alpha3`) alike since
//! they share one schema.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;

pub mod names;
mod networking;

pub use names::{Enrollment, NamespaceInfo};
pub use networking::*;

/// `selector` / `workloadSelector`: an empty one selects the whole namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Whether a policy targets Gateway API resources or waypoints instead of
/// sidecar workloads; such policies do not govern a pod's own proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    pub target_ref: Option<serde_json::Value>,
    #[serde(default)]
    pub target_refs: Vec<serde_json::Value>,
}

impl Targets {
    pub fn is_targeted(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}

// ---------------------------------------------------------------- PeerAuthentication

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum MtlsMode {
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Mtls {
    pub mode: Option<MtlsMode>,
}

impl Mtls {
    /// A missing mode is `UNSET`: inherit from the parent.
    pub fn mode(&self) -> MtlsMode {
        self.mode.unwrap_or(MtlsMode::Unset)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<Mtls>,
    /// Keyed by port number (as a string in YAML/JSON).
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, Mtls>,
    #[serde(flatten)]
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PeerAuthentication {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

impl PeerAuthentication {
    pub fn mode(&self) -> MtlsMode {
        self.spec
            .mtls
            .as_ref()
            .map(Mtls::mode)
            .unwrap_or(MtlsMode::Unset)
    }

    /// Namespace-wide (or mesh-wide in the root namespace): no selector, or
    /// one with no labels.
    pub fn is_namespace_wide(&self) -> bool {
        self.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    }
}

// ---------------------------------------------------------------- AuthorizationPolicy

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthzAction {
    Allow,
    Deny,
    Audit,
    Custom,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub principals: Vec<String>,
    #[serde(default)]
    pub not_principals: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub not_namespaces: Vec<String>,
    #[serde(default)]
    pub request_principals: Vec<String>,
    #[serde(default)]
    pub ip_blocks: Vec<String>,
    #[serde(default)]
    pub remote_ip_blocks: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct From {
    pub source: Option<Source>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Vec<From>,
    #[serde(default)]
    pub to: Vec<serde_json::Value>,
    #[serde(default)]
    pub when: Vec<serde_json::Value>,
}

impl AuthzRule {
    /// `{}`: matches every request.
    pub fn is_empty(&self) -> bool {
        self.from.is_empty() && self.to.is_empty() && self.when.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub selector: Option<WorkloadSelector>,
    pub action: Option<AuthzAction>,
    /// `None` and `Some([])` differ only in YAML; both mean "no rules".
    pub rules: Option<Vec<AuthzRule>>,
    #[serde(flatten)]
    pub targets: Targets,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AuthorizationPolicy {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

impl AuthorizationPolicy {
    /// `action` defaults to ALLOW.
    pub fn action(&self) -> AuthzAction {
        self.spec.action.unwrap_or(AuthzAction::Allow)
    }

    pub fn rules(&self) -> &[AuthzRule] {
        self.spec.rules.as_deref().unwrap_or_default()
    }

    /// Applies to every workload of its namespace (mesh-wide in the root
    /// namespace): no selector, no target reference.
    pub fn is_namespace_wide(&self) -> bool {
        !self.spec.targets.is_targeted()
            && self
                .spec
                .selector
                .as_ref()
                .is_none_or(|s| s.match_labels.is_empty())
    }

    /// ALLOW with no rules: allows nothing, the deny-by-default baseline.
    pub fn is_allow_nothing(&self) -> bool {
        self.action() == AuthzAction::Allow && self.rules().is_empty()
    }

    /// DENY with a rule `{}`: denies everything; no ALLOW can override it.
    pub fn is_deny_everything(&self) -> bool {
        self.action() == AuthzAction::Deny && self.rules().iter().any(AuthzRule::is_empty)
    }

    /// Either form of deny-by-default.
    pub fn is_deny_by_default(&self) -> bool {
        self.is_namespace_wide() && (self.is_allow_nothing() || self.is_deny_everything())
    }
}

/// What the posture index keeps of an AuthorizationPolicy: identity, action
/// and the precomputed facts the index-reading rules ask, not the `rules`
/// tree, which at 30,000 policies held half the index's heap. Rules that judge
/// a reviewed policy read the full `AuthorizationPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuthorizationPolicy {
    pub namespace: String,
    pub name: String,
    pub created: Option<Time>,
    pub action: AuthzAction,
    pub namespace_wide: bool,
    pub allow_nothing: bool,
    pub deny_everything: bool,
}

impl StoredAuthorizationPolicy {
    pub fn of(ap: &AuthorizationPolicy) -> Self {
        StoredAuthorizationPolicy {
            namespace: ap.metadata.namespace.clone().unwrap_or_default(),
            name: ap.metadata.name.clone().unwrap_or_default(),
            created: ap.metadata.creation_timestamp.clone(),
            action: ap.action(),
            namespace_wide: ap.is_namespace_wide(),
            allow_nothing: ap.is_allow_nothing(),
            deny_everything: ap.is_deny_everything(),
        }
    }

    /// As `AuthorizationPolicy::is_deny_by_default`.
    pub fn is_deny_by_default(&self) -> bool {
        self.namespace_wide && (self.allow_nothing || self.deny_everything)
    }

    /// Namespace-wide DENY with a rule `{}`: no ALLOW beside it takes effect.
    pub fn is_deny_all(&self) -> bool {
        self.namespace_wide && self.deny_everything
    }

    /// ALLOW with rules: something a DENY-everything policy would kill.
    pub fn is_live_allow(&self) -> bool {
        self.action == AuthzAction::Allow && !self.allow_nothing
    }

    /// Istio's tie-break, as `older` on the metadata.
    pub fn is_older_than(&self, other: &Self) -> bool {
        match (&self.created, &other.created) {
            (Some(Time(a)), Some(Time(b))) => (a, &self.name) < (b, &other.name),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => self.name < other.name,
        }
    }
}

/// Istio's tie-break when several policies match at one level: the oldest
/// wins; equal timestamps fall back to the name.
pub fn older(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let key = |m: &ObjectMeta| {
        (
            m.creation_timestamp.clone().map(|Time(t)| t),
            m.name.clone(),
        )
    };
    match (key(a), key(b)) {
        // An object without a timestamp (not yet created) is the newest.
        ((Some(ta), na), (Some(tb), nb)) => (ta, na) < (tb, nb),
        ((Some(_), _), (None, _)) => true,
        ((None, _), (Some(_), _)) => false,
        ((None, na), (None, nb)) => na < nb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_v1beta1_fixture_with_port_level_and_unknown_fields() {
        let pa: PeerAuthentication = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "mtls": {"mode": "PERMISSIVE"},
                     "portLevelMtls": {"9080": {"mode": "DISABLE"}}, "futureField": 1}
        }))
        .unwrap();
        assert_eq!(pa.mode(), MtlsMode::Permissive);
        assert_eq!(pa.spec.port_level_mtls["9080"].mode(), MtlsMode::Disable);
        assert!(!pa.is_namespace_wide());
    }

    #[test]
    fn authorization_policy_shapes() {
        let ap = |spec: serde_json::Value| -> AuthorizationPolicy {
            serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": spec})).unwrap()
        };
        assert!(ap(json!({})).is_deny_by_default());
        assert!(ap(json!({"action": "DENY", "rules": [{}]})).is_deny_by_default());
        assert!(!ap(
            json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["x"]}}]}]})
        )
        .is_deny_by_default());
        assert!(!ap(json!({"selector": {"matchLabels": {"app": "a"}}})).is_deny_by_default());
        assert!(
            !ap(json!({"targetRefs": [{"kind": "Gateway", "name": "gw"}]})).is_deny_by_default()
        );
        assert!(ap(json!({"selector": {}})).is_deny_by_default());
        assert!(!ap(json!({"action": "ALLOW", "rules": [{}]})).is_allow_nothing());
        assert!(!ap(json!({"action": "CUSTOM", "provider": {"name": "x"}})).is_deny_by_default());
    }

    #[test]
    fn service_entry_location_defaults_to_mesh_external() {
        let se = |spec: serde_json::Value| -> ServiceEntry {
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": spec})).unwrap()
        };
        let external = se(json!({"hosts": ["db.example.com"], "ports": [{"number": 5432}]}));
        assert_eq!(external.spec.location, Location::MeshExternal);
        assert_eq!(external.spec.hosts, ["db.example.com"]);
        let internal = se(json!({"hosts": ["vm.shop.internal"], "location": "MESH_INTERNAL"}));
        assert_eq!(internal.spec.location, Location::MeshInternal);
        assert!(serde_json::from_value::<ServiceEntry>(
            json!({"metadata": {}, "spec": {"location": "ELSEWHERE"}})
        )
        .is_err());
    }
}
