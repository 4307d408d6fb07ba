//! The server's own series: reviews answered (by kind, operation and
//! decision), their latency, the violations, exemptions and mutations they
//! carried, certificate reloads, cache readiness and connections. Label
//! values come from fixed sets, never object names, namespaces or error
//! text, which would make series unbounded.
//!
//! The label set of an answered review is built from its [`Record`] without
//! allocating; its counter is looked up once per review.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::{mutate, Outcome, Record};
use crate::config::{Config, Mode};
use crate::metrics::{EndpointLabels, ResourceLabels};
use crate::rules::RuleId;
use crate::subject::Kind;

use super::conn::Shed;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub kind: KindLabel,
    pub operation: OperationLabel,
    pub decision: DecisionLabel,
}

impl RequestLabels {
    /// A body that was not an AdmissionReview at all.
    fn bad_request(endpoint: &'static str) -> Self {
        RequestLabels {
            endpoint,
            kind: KindLabel::Unknown,
            operation: OperationLabel(None),
            decision: DecisionLabel::Error,
        }
    }
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

/// The `operation` label, as the API server spells it (the review's
/// record names it); "unknown" when the body was not an AdmissionReview.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct OperationLabel(pub Option<&'static str>);

/// The `decision` label: how the review ended; "error" when the body was
/// not an AdmissionReview (or its answer could not be written).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DecisionLabel {
    Reviewed(Outcome),
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
        encoder.write_str(self.0.unwrap_or("unknown"))
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
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: mutate::Outcome,
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
pub struct ServerMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<EndpointLabels, Histogram>,
    violations: Family<ViolationLabels, Counter>,
    exemptions: Family<RuleLabels, Counter>,
    mutations: Family<OutcomeLabels, Counter>,
    tls_reloads: Family<ResultLabels, Counter>,
    cache_synced: Family<ResourceLabels, Gauge>,
    connections_open: Gauge,
    connections_shed: Family<ReasonLabels, Counter>,
    /// The histograms of the two endpoints, looked up once.
    validate_duration: Histogram,
    mutate_duration: Histogram,
}

impl ServerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(ADMISSION_LATENCY_BUCKETS.iter().copied())
        });
        let endpoint = |endpoint| duration.get_or_create(&EndpointLabels { endpoint }).clone();
        let metrics = ServerMetrics {
            requests: Family::default(),
            validate_duration: endpoint("validate"),
            mutate_duration: endpoint("mutate"),
            duration,
            violations: Family::default(),
            exemptions: Family::default(),
            mutations: Family::default(),
            tls_reloads: Family::default(),
            cache_synced: Family::default(),
            connections_open: Gauge::default(),
            connections_shed: Family::default(),
        };
        metrics.register_reviews(registry.sub_registry_with_prefix("meshgate"));
        metrics.register_serving(registry.sub_registry_with_prefix("meshgate"));
        metrics.init_series();
        metrics
    }

    fn register_reviews(&self, r: &mut Registry) {
        r.register(
            "admission_requests",
            "Admission reviews by endpoint, kind, operation and decision",
            self.requests.clone(),
        );
        r.register(
            "admission_duration_seconds",
            "Time to decode, judge and answer one review",
            self.duration.clone(),
        );
        r.register(
            "violations",
            "Rule violations found, by rule and the mode they were handled in",
            self.violations.clone(),
        );
        r.register(
            "exemptions_applied",
            "Findings lifted by a configured exemption, by rule",
            self.exemptions.clone(),
        );
        r.register(
            "mutations",
            "Pods seen by /mutate, by outcome (patched, unchanged, conflict, skipped, exempted, audit)",
            self.mutations.clone(),
        );
    }

    fn register_serving(&self, r: &mut Registry) {
        r.register(
            "tls_reloads",
            "Serving certificate reloads, by result",
            self.tls_reloads.clone(),
        );
        r.register(
            "cache_synced",
            "1 once the cache of a watched resource has completed its first list",
            self.cache_synced.clone(),
        );
        r.register(
            "connections_open",
            "Open webhook connections",
            self.connections_open.clone(),
        );
        r.register(
            "connections_shed",
            "Connections the server closed, by reason (a timeout of one phase, or evicted at the connection cap)",
            self.connections_shed.clone(),
        );
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
                .get_or_create(&RequestLabels::bad_request(endpoint))
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

    /// Counts an answered review. Most reviews violate nothing and mutate
    /// nothing: then this is one counter and one histogram.
    pub fn observe_review(&self, endpoint: &'static str, record: &Record, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint,
                kind: record.kind.into(),
                operation: OperationLabel(Some(record.operation)),
                decision: DecisionLabel::Reviewed(record.outcome),
            })
            .inc();
        match endpoint {
            "validate" => &self.validate_duration,
            _ => &self.mutate_duration,
        }
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

    /// A body that was not an AdmissionReview at all, or an answer that
    /// could not be written.
    pub fn observe_bad_request(&self, endpoint: &'static str) {
        self.requests
            .get_or_create(&RequestLabels::bad_request(endpoint))
            .inc();
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
