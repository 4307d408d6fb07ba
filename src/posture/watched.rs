//! The cluster resources the posture index watches. The chart's RBAC grants
//! get/list/watch on exactly these (checked in `tests/chart.rs`).

/// A watched resource: API group, version and plural name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedResource {
    pub api_group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
}

pub const WATCHED_RESOURCES: &[WatchedResource] = &[WatchedResource {
    api_group: "",
    version: "v1",
    resource: "namespaces",
}];
