//! `meshgate_exemptions{state, scope}` and
//! `meshgate_exemption_next_expiry_seconds`, computed from the posture
//! index and the config at scrape time (bounded: 2 states x 3 scopes).

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};

use super::SharedPosture;
use crate::config::Config;

use crate::exemption::Source;

#[derive(Debug)]
pub struct ExemptionMetrics {
    config: Arc<Config>,
    posture: SharedPosture,
}

impl ExemptionMetrics {
    pub fn new(config: Arc<Config>, posture: SharedPosture) -> Self {
        ExemptionMetrics { config, posture }
    }
}

/// Registers the exemption gauges, computed at scrape time.
pub fn register(
    registry: &mut prometheus_client::registry::Registry,
    config: &Arc<Config>,
    posture: &SharedPosture,
) {
    registry.register_collector(Box::new(ExemptionMetrics::new(
        config.clone(),
        posture.clone(),
    )));
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct Labels {
    state: &'static str,
    scope: &'static str,
}

/// Exemptions counted by (state, scope).
pub type Counts = Vec<((&'static str, &'static str), i64)>;

/// Counts by (state, scope), and the next expiry of an active exemption.
pub fn summarize(
    config: &Config,
    objects: impl Iterator<Item = (Source, Timestamp)>,
    now: Timestamp,
) -> (Counts, Option<Timestamp>) {
    let mut counts = std::collections::BTreeMap::new();
    for state in ["active", "expired"] {
        for scope in ["namespaced", "cluster", "config"] {
            counts.insert((state, scope), 0i64);
        }
    }
    let mut next: Option<Timestamp> = None;
    let config_expiries = config.exemptions.iter().map(|e| ("config", e.expires));
    let object_expiries = objects.map(|(source, at)| {
        let scope = match source {
            Source::Cluster { .. } => "cluster",
            _ => "namespaced",
        };
        (scope, Some(at))
    });
    for (scope, expires) in config_expiries.chain(object_expiries) {
        let active = expires.is_none_or(|at| now < at);
        let state = if active { "active" } else { "expired" };
        *counts.entry((state, scope)).or_default() += 1;
        if let Some(at) = expires.filter(|_| active) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (counts.into_iter().collect(), next)
}

impl Collector for ExemptionMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let (counts, next) = {
            let posture = self.posture.read();
            let objects = posture
                .exemptions
                .all()
                .map(|e| (e.source.clone(), e.expires));
            summarize(&self.config, objects, now)
        };
        let family = Family::<Labels, Gauge>::default();
        for ((state, scope), count) in counts {
            family.get_or_create(&Labels { state, scope }).set(count);
        }
        let metric = encoder.encode_descriptor(
            "meshgate_exemptions",
            "Exemptions (config file and objects) by state and scope",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)?;
        // Absent when no active exemption has an expiry: no +Inf, no NaN.
        if let Some(at) = next {
            let seconds = at.duration_since(now).as_secs_f64();
            let gauge = ConstGauge::new(seconds);
            let metric = encoder.encode_descriptor(
                "meshgate_exemption_next_expiry_seconds",
                "Seconds until the next active exemption expires",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_state_and_scope_and_finds_the_next_expiry() {
        let config = Config::from_yaml(concat!(
            "exemptions:\n- {rules: [no-host-network], namespace: a, reason: r}\n",
            "- {rules: [no-host-network], namespace: a, reason: r, expires: '2026-01-01T00:00:00Z'}\n",
        ))
        .unwrap();
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let soon: Timestamp = "2026-12-08T10:00:00Z".parse().unwrap();
        let later: Timestamp = "2027-01-08T10:00:00Z".parse().unwrap();
        let objects = vec![
            (Source::Cluster { name: "c".into() }, later),
            (
                Source::Namespaced {
                    namespace: "shop".into(),
                    name: "n".into(),
                },
                soon,
            ),
            (Source::Cluster { name: "old".into() }, now),
        ];
        let (counts, next) = summarize(&config, objects.into_iter(), now);
        let count = |state, scope| {
            counts
                .iter()
                .find(|(k, _)| *k == (state, scope))
                .map(|(_, v)| *v)
        };
        assert_eq!(count("active", "config"), Some(1));
        assert_eq!(count("expired", "config"), Some(1));
        assert_eq!(count("active", "cluster"), Some(1));
        assert_eq!(count("expired", "cluster"), Some(1), "expired at `now`");
        assert_eq!(count("active", "namespaced"), Some(1));
        assert_eq!(counts.len(), 6);
        assert_eq!(next, Some(soon));
    }
}
