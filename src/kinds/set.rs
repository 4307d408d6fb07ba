//! Sets of kinds, built in constant expressions: the kinds a rule judges.

use super::{Kind, TABLE};

/// A set of kinds, built in constant expressions: the kinds a rule judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KindSet(u32);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);

    pub const fn of(kind: Kind) -> KindSet {
        KindSet(1 << kind as u32)
    }

    pub const fn with(self, kind: Kind) -> KindSet {
        KindSet(self.0 | KindSet::of(kind).0)
    }

    /// Pods and the controllers whose templates create them.
    pub const WORKLOADS: KindSet = {
        let mut set = KindSet::EMPTY;
        let mut index = 0;
        while index < TABLE.len() {
            if TABLE[index].pod_spec.is_some() {
                set = set.with(TABLE[index].kind);
            }
            index += 1;
        }
        set
    };

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & KindSet::of(kind).0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL
            .into_iter()
            .filter(move |kind| self.contains(*kind))
    }
}
