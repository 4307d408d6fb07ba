//! The shared watch layer: one kube-runtime watcher per kind, whose events
//! feed every consumer (the posture index, the background audit) in the
//! order they happened, with the objects trimmed once on arrival.
//!
//! ```text
//! kinds::TABLE ─▶ one watcher per kind (default_backoff, served version)
//!                   │ trimmed objects (projection), one WatchLink per kind
//!                   ▼
//!                 sinks, in order: posture index first, then the background
//!                 engine, so a verdict never reads a posture older than the
//!                 event that asked for it
//! ```
//!
//! Also here: the one fallback to an older API version on 404 ([`served`]),
//! the log-and-count discipline of an outage ([`link`]), and the watch
//! counters (`meshgate_watch_errors_total`, `meshgate_watch_restarts_total`)
//! of every watched kind.

pub mod kind;
pub mod link;
pub mod projection;
pub mod served;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use kind::{watch, Seen, Sink};
pub use link::{Failure, Messages, WatchLink};
pub use served::{at_newest_served, served_resource};

/// The counters of one watched resource, handed to its watcher.
#[derive(Clone, Debug, Default)]
pub struct WatchCounters {
    /// Every failed list or watch call (API server gone, connection reset).
    pub errors: Counter,
    /// Watches re-established, with a fresh list, after being lost.
    pub restarts: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// The watch series of every watched resource.
#[derive(Clone, Debug, Default)]
pub struct WatchMetrics {
    errors: Family<ResourceLabels, Counter>,
    restarts: Family<ResourceLabels, Counter>,
}

impl WatchMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = WatchMetrics::default();
        let r = registry.sub_registry_with_prefix("meshgate");
        r.register(
            "watch_errors",
            "Failed list/watch calls to the API server, by watched resource",
            metrics.errors.clone(),
        );
        r.register(
            "watch_restarts",
            "Watches re-established (with a full re-list) after being lost, by watched resource",
            metrics.restarts.clone(),
        );
        metrics
    }

    /// The counters of `resource`, created at zero so that a rate or an
    /// increase() works from the first scrape.
    pub fn counters(&self, resource: &'static str) -> WatchCounters {
        let labels = ResourceLabels { resource };
        WatchCounters {
            errors: self.errors.get_or_create(&labels).clone(),
            restarts: self.restarts.get_or_create(&labels).clone(),
        }
    }
}
