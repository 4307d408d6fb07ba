//! Prometheus metrics. Label values come from fixed sets (kinds, operations,
//! decisions, rule ids, modes): never object names, namespaces or error text,
//! which would make series unbounded. The posture gauges
//! ([`crate::background::metrics`]) are the one exception: one series per
//! namespace, by design.

use std::fmt::Write;
use std::hash::{Hash, Hasher};

use kube::core::admission::Operation;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::{self, mutate, Record};
use crate::config::{Config, Mode};
use crate::rules::RuleId;
use crate::server::conn::Shed;
use crate::subject::Kind;

fn bad_request(endpoint: &'static str) -> RequestLabels {
    RequestLabels {
        endpoint,
        kind: KindLabel::Unknown,
        operation: OperationLabel(None),
        decision: DecisionLabel::Error,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: KindLabel,
    pub operation: OperationLabel,
    pub decision: DecisionLabel,
}

/// The `kind` label: a judged kind by name; any other kind is "other", so
/// a cluster full of custom resources cannot inflate the series count.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum KindLabel {
    Judged(Kind),
    Other,
    /// The body was not an AdmissionReview.
    Unknown,
}

impl From<Option<Kind>> for KindLabel {
    fn from(kind: Option<Kind>) -> Self {
        kind.map_or(KindLabel::Other, KindLabel::Judged)
    }
}

/// The `operation` label, as the API server spells it; "unknown" when the
/// body was not an AdmissionReview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationLabel(pub Option<Operation>);

// kube's Operation does not derive Hash; its name stands for it.
impl Hash for OperationLabel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0
            .as_ref()
            .map(admission::review::operation_str)
            .hash(state);
    }
}

/// The `decision` label: how the review ended; "error" when the body was
/// not an AdmissionReview.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DecisionLabel {
    Reviewed(admission::Outcome),
    Error,
}

impl EncodeLabelValue for KindLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            KindLabel::Judged(kind) => kind.as_str(),
            KindLabel::Other => "other",
            KindLabel::Unknown => "unknown",
        })
    }
}

impl EncodeLabelValue for OperationLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(
            self.0
                .as_ref()
                .map_or("unknown", admission::review::operation_str),
        )
    }
}

impl EncodeLabelValue for DecisionLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            DecisionLabel::Reviewed(outcome) => outcome.as_str(),
            DecisionLabel::Error => "error",
        })
    }
}

impl EncodeLabelValue for RuleId {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Mode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for mutate::Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub rule: RuleId,
    pub mode: Mode,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: RuleId,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// Upper bounds of the admission latency histogram, in seconds. Reviews take
/// tens to hundreds of microseconds, so the low end is fine; the top reaches
/// 30 s, the longest webhook timeout the API server allows, so a p99 that
/// creeps towards `timeoutSeconds` is still measured rather than lumped
/// into `+Inf`.
pub const ADMISSION_LATENCY_BUCKETS: [f64; 25] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 25.0, 30.0,
];

#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    violations: Family<ViolationLabels, Counter>,
    exemptions: Family<RuleLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    cache_synced: Family<ResourceLabels, Gauge>,
    mutations: Family<OutcomeLabels, Counter>,
    connections_open: Gauge,
    connections_shed: Family<ReasonLabels, Counter>,
    election: crate::leader::ElectionMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: mutate::Outcome,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(ADMISSION_LATENCY_BUCKETS.iter().copied())
            }),
            violations: Family::default(),
            exemptions: Family::default(),
            tls_reloads: Family::default(),
            cache_synced: Family::default(),
            mutations: Family::default(),
            connections_open: Gauge::default(),
            connections_shed: Family::default(),
            election: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("meshgate");
        r.register(
            "admission_requests",
            "Admission reviews by endpoint, kind, operation and decision",
            metrics.requests.clone(),
        );
        r.register(
            "admission_duration_seconds",
            "Time to decode, judge and answer one review",
            metrics.duration.clone(),
        );
        r.register(
            "violations",
            "Rule violations found, by rule and the mode they were handled in",
            metrics.violations.clone(),
        );
        r.register(
            "exemptions_applied",
            "Findings lifted by a configured exemption, by rule",
            metrics.exemptions.clone(),
        );
        r.register(
            "tls_reloads",
            "Serving certificate reloads, by result",
            metrics.tls_reloads.clone(),
        );
        r.register(
            "cache_synced",
            "1 once the cache of a watched resource has completed its first list",
            metrics.cache_synced.clone(),
        );
        r.register(
            "mutations",
            "Pods seen by /mutate, by outcome (patched, unchanged, conflict, skipped, exempted, audit)",
            metrics.mutations.clone(),
        );
        r.register(
            "connections_open",
            "Open webhook connections",
            metrics.connections_open.clone(),
        );
        r.register(
            "connections_shed",
            "Connections the server closed, by reason (a timeout of one phase, or evicted at the connection cap)",
            metrics.connections_shed.clone(),
        );
        r.register(
            "leader_election_failing",
            "1 while this replica cannot take part in the PolicyReport writer's leader election (Lease namespace missing, Lease refused, API server away); it retries with backoff",
            metrics.election.failing.clone(),
        );
        r.register(
            "leader_election_failures",
            "Failed attempts to create, read or renew the PolicyReport writer's Lease",
            metrics.election.failures.clone(),
        );
        r.register(
            "leader_election_leading",
            "1 while this replica leads and writes the PolicyReports",
            metrics.election.leading.clone(),
        );
        metrics.init_series();
        metrics
    }

    /// The leader election's series, handed to the elector.
    pub fn election(&self) -> crate::leader::ElectionMetrics {
        self.election.clone()
    }

    /// Creates every bounded series of errors and failures at 0, so that
    /// `increase()` sees the first one (a series that appears at 1 has no
    /// increase).
    fn init_series(&self) {
        for result in ["success", "failure"] {
            self.tls_reloads
                .get_or_create(&ResultLabels { result })
                .inc_by(0);
        }
        for endpoint in ["validate", "mutate"] {
            self.requests
                .get_or_create(&bad_request(endpoint))
                .inc_by(0);
        }
        for &rule in RuleId::ALL {
            for mode in [Mode::Audit, Mode::Enforce] {
                self.violations
                    .get_or_create(&ViolationLabels { rule, mode })
                    .inc_by(0);
            }
        }
        for reason in Shed::ALL {
            self.connections_shed
                .get_or_create(&ReasonLabels {
                    reason: reason.as_str(),
                })
                .inc_by(0);
        }
    }

    /// Creates the exemption series of every rule a configured exemption
    /// names, at 0.
    pub fn init_exemptions(&self, config: &Config) {
        for exemption in &config.exemptions {
            for rule in &exemption.rules {
                self.exemptions
                    .get_or_create(&RuleLabels { rule: *rule })
                    .inc_by(0);
            }
        }
    }

    pub fn connections_open(&self, open: usize) {
        self.connections_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub fn connection_shed(&self, reason: &'static str) {
        self.connections_shed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn observe_review(&self, endpoint: &'static str, record: &Record, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                kind: record.kind.into(),
                operation: OperationLabel(Some(record.operation.clone())),
                decision: DecisionLabel::Reviewed(record.outcome),
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
        for &(rule, mode) in &record.violations {
            self.violations
                .get_or_create(&ViolationLabels { rule, mode })
                .inc();
        }
        if let Some(outcome) = record.mutation {
            self.mutations
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
        for &rule in &record.exempted {
            self.exemptions.get_or_create(&RuleLabels { rule }).inc();
        }
    }

    /// A body that was not an AdmissionReview at all.
    pub fn observe_bad_request(&self, endpoint: &'static str) {
        self.requests.get_or_create(&bad_request(endpoint)).inc();
    }

    pub fn tls_reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn cache_synced(&self, resource: &'static str, synced: bool) {
        self.cache_synced
            .get_or_create(&ResourceLabels { resource })
            .set(i64::from(synced));
    }
}

/// Registers the posture gauges and `meshgate_build_info`, computed at
/// scrape time (see [`crate::background::metrics`]).
pub fn register_posture(
    registry: &mut Registry,
    collector: std::sync::Arc<crate::background::metrics::PostureMetrics>,
) {
    registry
        .sub_registry_with_prefix("meshgate")
        .register_collector(Box::new(collector));
}
