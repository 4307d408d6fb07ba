//! The cluster resources the posture index watches. The chart's RBAC grants
//! get/list/watch on exactly these (checked in `tests/chart.rs`).

/// A watched resource: API group, version and plural name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedResource {
    pub api_group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
}

const fn watched(
    api_group: &'static str,
    version: &'static str,
    resource: &'static str,
) -> WatchedResource {
    WatchedResource {
        api_group,
        version,
        resource,
    }
}

/// Istio kinds are listed at their newest version; older served versions
/// (`v1beta1`, `v1alpha3`) are the same resources to RBAC.
pub const WATCHED_RESOURCES: &[WatchedResource] = &[
    watched("", "v1", "namespaces"),
    watched("security.istio.io", "v1", "peerauthentications"),
    watched("security.istio.io", "v1", "authorizationpolicies"),
    watched("networking.istio.io", "v1", "destinationrules"),
    watched("networking.istio.io", "v1", "sidecars"),
    watched("networking.istio.io", "v1", "serviceentries"),
];
