//! The cluster resources the posture index watches, from the kinds table.
//! The chart's RBAC grants get/list/watch on exactly these (checked in
//! `tests/chart.rs`).

use crate::kinds::{KindRow, TABLE};

/// A watched resource: API group, version and plural name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedResource {
    pub api_group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
}

impl WatchedResource {
    /// Listed at the newest version; older served versions (`v1beta1`,
    /// `v1alpha3`) are the same resources to RBAC.
    pub fn of(row: &KindRow) -> Self {
        WatchedResource {
            api_group: row.group,
            version: row.versions[0],
            resource: row.plural,
        }
    }
}

/// What the posture index watches.
pub fn watched_resources() -> Vec<WatchedResource> {
    TABLE
        .iter()
        .filter(|row| row.posture)
        .map(WatchedResource::of)
        .collect()
}
