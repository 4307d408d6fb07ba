//! The resources and operations the webhooks judge. The Helm chart's webhook
//! configurations are checked against these lists in `tests/chart.rs`, so the
//! API server never sends meshgate something it ignores, nor skips something
//! it should judge.

/// One `rules` entry of a webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookRule {
    pub api_group: &'static str,
    pub api_versions: &'static [&'static str],
    /// Plural resource names, subresources as `pods/ephemeralcontainers`.
    pub resources: &'static [&'static str],
    pub operations: &'static [&'static str],
}

const CREATE_UPDATE: &[&str] = &["CREATE", "UPDATE"];
/// DELETE too: deleting a baseline policy can re-open a namespace.
const CREATE_UPDATE_DELETE: &[&str] = &["CREATE", "UPDATE", "DELETE"];
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// What `POST /validate` judges.
pub const VALIDATING_RULES: &[WebhookRule] = &[
    WebhookRule {
        api_group: "",
        api_versions: &["v1"],
        resources: &["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
        operations: CREATE_UPDATE,
    },
    WebhookRule {
        api_group: "apps",
        api_versions: &["v1"],
        resources: &["deployments", "statefulsets", "daemonsets", "replicasets"],
        operations: CREATE_UPDATE,
    },
    WebhookRule {
        api_group: "batch",
        api_versions: &["v1"],
        resources: &["jobs", "cronjobs"],
        operations: CREATE_UPDATE,
    },
    WebhookRule {
        api_group: "",
        api_versions: &["v1"],
        resources: &["namespaces"],
        operations: CREATE_UPDATE,
    },
    WebhookRule {
        api_group: "security.istio.io",
        api_versions: SECURITY_VERSIONS,
        resources: &["peerauthentications", "authorizationpolicies"],
        operations: CREATE_UPDATE_DELETE,
    },
    WebhookRule {
        api_group: "networking.istio.io",
        api_versions: NETWORKING_VERSIONS,
        resources: &["destinationrules", "sidecars"],
        operations: CREATE_UPDATE,
    },
    WebhookRule {
        api_group: "cert-manager.io",
        api_versions: &["v1"],
        resources: &["certificates"],
        operations: CREATE_UPDATE,
    },
];

/// What `POST /mutate` judges.
pub const MUTATING_RULES: &[WebhookRule] = &[WebhookRule {
    api_group: "",
    api_versions: &["v1"],
    resources: &["pods"],
    operations: &["CREATE"],
}];
