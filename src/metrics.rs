//! The metrics registry's shared pieces. Each component registers and owns
//! its own series (the server's in `server/metrics.rs`, the posture gauges
//! in `background/metrics.rs`, the leader election's in `leader.rs`, the
//! Events' in `events/`); this module holds the label types that belong to
//! none of them, and the watch counters. It imports no component.
//! Label values come from fixed sets (kinds, operations, decisions, rule
//! ids, modes, resources): never object names, namespaces or error text,
//! which would make series unbounded. The posture gauges are the one
//! exception: one series per namespace, by design.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// The watch series of the posture reflectors and the background audit.
#[derive(Clone, Default)]
pub struct Metrics {
    watch_errors: Family<ResourceLabels, Counter>,
    watch_restarts: Family<ResourceLabels, Counter>,
    background_watch_errors: Family<ResourceLabels, Counter>,
    background_watch_restarts: Family<ResourceLabels, Counter>,
}

/// The counters of one watched resource, handed to its watcher.
#[derive(Clone, Debug, Default)]
pub struct WatchCounters {
    /// Every failed list or watch call (API server gone, connection reset).
    pub errors: Counter,
    /// Watches re-established, with a fresh list, after being lost.
    pub restarts: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        let r = registry.sub_registry_with_prefix("meshgate");
        r.register(
            "watch_errors",
            "Failed list/watch calls to the API server, by watched resource",
            metrics.watch_errors.clone(),
        );
        r.register(
            "watch_restarts",
            "Watches re-established (with a full re-list) after being lost, by watched resource",
            metrics.watch_restarts.clone(),
        );
        r.register(
            "background_watch_errors",
            "Failed list/watch calls of the background audit's watches, by watched resource",
            metrics.background_watch_errors.clone(),
        );
        r.register(
            "background_watch_restarts",
            "Background audit watches re-established (with a full re-list) after being lost, by watched resource",
            metrics.background_watch_restarts.clone(),
        );
        metrics
    }

    /// The watch counters of `resource`, created at zero so that a rate or
    /// an increase() works from the first scrape.
    pub fn watch_counters(&self, resource: &'static str) -> WatchCounters {
        let labels = ResourceLabels { resource };
        WatchCounters {
            errors: self.watch_errors.get_or_create(&labels).clone(),
            restarts: self.watch_restarts.get_or_create(&labels).clone(),
        }
    }

    /// The background audit's watch counters of `resource`, created at 0.
    pub fn background_watch_counters(&self, resource: &'static str) -> WatchCounters {
        let labels = ResourceLabels { resource };
        WatchCounters {
            errors: self.background_watch_errors.get_or_create(&labels).clone(),
            restarts: self
                .background_watch_restarts
                .get_or_create(&labels)
                .clone(),
        }
    }
}
