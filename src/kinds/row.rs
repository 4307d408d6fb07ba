//! What a [`Kind`] reads from its row in [`super::TABLE`].

use kube::api::ApiResource;
use kube::core::admission::Operation;
use strum::{EnumCount, VariantArray};

use super::{Kind, KindRow, TABLE};

impl Kind {
    /// Every kind, in the table's order.
    pub const ALL: [Kind; Kind::COUNT] = {
        let mut all = [Kind::Pod; Kind::COUNT];
        let mut index = 0;
        while index < Kind::COUNT {
            all[index] = Kind::VARIANTS[index];
            index += 1;
        }
        all
    };

    pub const fn row(self) -> &'static KindRow {
        &TABLE[self as usize]
    }

    /// Maps an API group, version and kind to a kind meshgate judges.
    /// Versions other than the ones listed are not served by current
    /// clusters.
    pub fn from_gvk(group: &str, version: &str, kind: &str) -> Option<Kind> {
        TABLE
            .iter()
            .find(|row| {
                row.kind.as_str() == kind
                    && row.group == group
                    && row.versions.contains(&version)
                    && !row.judged_on.is_empty()
                    && !row.kind.is_exemption()
            })
            .map(|row| row.kind)
    }

    /// Any kind in the table, judged or only watched, at a version it
    /// serves: what the posture index takes from manifests.
    pub fn known(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        TABLE
            .iter()
            .find(|row| {
                row.kind.as_str() == kind && row.group == group && row.versions.contains(&version)
            })
            .map(|row| row.kind)
    }

    /// Parses an `apiVersion` string (`apps/v1`, `v1`) and a kind.
    pub fn from_api_version(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self::from_gvk(group, version, kind)
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Pods and the controllers whose templates create them.
    pub const fn is_workload(self) -> bool {
        self.row().pod_spec.is_some()
    }

    /// Whether `/validate` judges the kind at all (ServiceEntry is only
    /// watched).
    pub fn is_judged(self) -> bool {
        !self.row().judged_on.is_empty() && !self.is_exemption()
    }

    /// MeshExemption and ClusterMeshExemption: reviewed by `/validate`
    /// (expiry bound, audit log) on the path of `crate::admission::exemption`,
    /// never decoded as a subject nor judged by a rule, so [`Kind::from_gvk`]
    /// and [`Kind::is_judged`] leave them out.
    pub const fn is_exemption(self) -> bool {
        matches!(self, Kind::MeshExemption | Kind::ClusterMeshExemption)
    }

    /// An exemption kind by group, version and kind.
    pub fn exemption_from_gvk(group: &str, version: &str, kind: &str) -> Option<Kind> {
        TABLE
            .iter()
            .find(|row| {
                row.kind.is_exemption()
                    && row.kind.as_str() == kind
                    && row.group == group
                    && row.versions.contains(&version)
            })
            .map(|row| row.kind)
    }

    /// Whether `/validate` judges `operation` on this kind.
    pub fn is_judged_on(self, operation: &Operation) -> bool {
        self.row().judged_on.contains(operation)
    }

    /// The kind's resource at `version`, for dynamic API calls.
    pub fn api_resource(self, version: &str) -> ApiResource {
        let row = self.row();
        ApiResource {
            group: row.group.into(),
            version: version.into(),
            api_version: if row.group.is_empty() {
                version.to_owned()
            } else {
                format!("{}/{version}", row.group)
            },
            kind: self.as_str().into(),
            plural: row.plural.into(),
        }
    }
}
