//! The metrics registry's shared pieces. Each component registers and owns
//! its own series (the server's in `server/metrics.rs`, the posture gauges
//! in `background/metrics.rs`, the leader election's in `leader.rs`, the
//! Events' in `events/`); this module holds the label types that belong to
//! none of them (the watch counters are `crate::watch`'s). It imports no
//! component.
//! Label values come from fixed sets (kinds, operations, decisions, rule
//! ids, modes, resources): never object names, namespaces or error text,
//! which would make series unbounded. The posture gauges are the one
//! exception: one series per namespace, by design.

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}
