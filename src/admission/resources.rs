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
];

/// What `POST /mutate` judges.
pub const MUTATING_RULES: &[WebhookRule] = &[WebhookRule {
    api_group: "",
    api_versions: &["v1"],
    resources: &["pods"],
    operations: &["CREATE"],
}];
