//! The engine's marks for exemption objects: a changed exemption re-judges
//! the namespaces it can reach, an expired one what it covered.

use std::sync::Arc;

use super::Engine;

impl Engine {
    /// Re-judges on the next pass every object whose
    /// judgement rests on an exemption expired at `now`.
    pub fn mark_exempted_until(&mut self, now: k8s_openapi::jiff::Timestamp) {
        let expired = self.objects.iter().filter(|(_, stored)| {
            stored.raw.as_ref().is_some_and(|raw| {
                raw.exempted
                    .iter()
                    .any(|e| e.expires.is_some_and(|at| at <= now))
            })
        });
        let keys: Vec<Arc<str>> = expired.map(|(k, _)| k.clone()).collect();
        self.dirty.extend(keys);
    }

    /// Re-judges these namespaces on the next pass (exemption objects there
    /// changed).
    pub fn mark_namespaces(&mut self, namespaces: impl IntoIterator<Item = String>) {
        for ns in namespaces {
            if let Some(keys) = self.by_namespace.get(&ns) {
                self.dirty.extend(keys.iter().cloned());
            }
        }
    }
}
