//! AuthorizationPolicies in the posture index: the slim stored form, plus
//! per-namespace summaries kept up to date on every change, so the reviews of
//! mesh-wide (root namespace) policies answer from counters and a short sorted
//! sample instead of scanning the whole cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::istio::{AuthorizationPolicy, StoredAuthorizationPolicy as Stored};

#[derive(Debug, Clone, Default)]
pub struct AuthzIndex {
    /// Sorted by name; a Vec, not a BTreeMap, whose first node alone costs
    /// about a kilobyte in each of thousands of small namespaces.
    by_namespace: HashMap<String, Vec<Stored>>,
    len: usize,
    /// Live ALLOW policies per namespace, sorted for a deterministic sample.
    live_allows: BTreeMap<String, usize>,
    live_allow_total: usize,
    /// Namespaces the index knows to be enrolled (fed by `PostureIndex`).
    enrolled: HashSet<String>,
    /// Enrolled namespaces without a deny-by-default policy of their own.
    exposed: BTreeSet<String>,
}

impl AuthzIndex {
    pub fn in_namespace(&self, namespace: &str) -> impl Iterator<Item = &Stored> + '_ {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.iter())
    }

    pub fn all(&self) -> impl Iterator<Item = &Stored> + '_ {
        self.by_namespace.values().flat_map(|m| m.iter())
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Stored> {
        let objects = self.by_namespace.get(namespace)?;
        let at = objects
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()?;
        objects.get(at)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn apply(&mut self, object: AuthorizationPolicy) {
        let stored = Stored::of(&object);
        if object.metadata.namespace.is_none() || object.metadata.name.is_none() {
            return;
        }
        let ns = stored.namespace.clone();
        let live = stored.is_live_allow();
        let objects = self.by_namespace.entry(ns.clone()).or_default();
        let previous = match objects.binary_search_by(|p| p.name.cmp(&stored.name)) {
            Ok(at) => Some(std::mem::replace(&mut objects[at], stored)),
            Err(at) => {
                objects.insert(at, stored);
                None
            }
        };
        match previous {
            None => self.len += 1,
            Some(old) if old.is_live_allow() => self.count_live(&ns, false),
            Some(_) => {}
        }
        if live {
            self.count_live(&ns, true);
        }
        self.refresh_exposed(&ns);
    }

    pub fn delete(&mut self, namespace: &str, name: &str) {
        let Some(objects) = self.by_namespace.get_mut(namespace) else {
            return;
        };
        let removed = objects
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()
            .map(|at| objects.remove(at));
        if objects.is_empty() {
            self.by_namespace.remove(namespace);
        }
        if let Some(old) = removed {
            self.len -= 1;
            if old.is_live_allow() {
                self.count_live(namespace, false);
            }
        }
        self.refresh_exposed(namespace);
    }

    /// A re-list: the new content replaces every policy; enrolment stays.
    pub fn replace(&mut self, objects: impl IntoIterator<Item = AuthorizationPolicy>) {
        let enrolled = std::mem::take(&mut self.enrolled);
        *self = AuthzIndex::default();
        self.exposed = enrolled.iter().cloned().collect();
        self.enrolled = enrolled;
        for object in objects {
            self.apply(object);
        }
    }

    /// Records whether `namespace` is in the mesh (its labels changed).
    pub fn set_enrolled(&mut self, namespace: &str, enrolled: bool) {
        if enrolled {
            self.enrolled.insert(namespace.to_owned());
        } else {
            self.enrolled.remove(namespace);
        }
        self.refresh_exposed(namespace);
    }

    /// Forgets every namespace's enrolment (a namespace re-list follows).
    pub fn clear_enrolled(&mut self) {
        self.enrolled.clear();
        self.exposed.clear();
    }

    /// Live ALLOW policies in the whole cluster.
    pub fn live_allow_count(&self) -> usize {
        self.live_allow_total
    }

    /// Live ALLOW policies in name order, namespace by namespace; lazy, so
    /// taking the first few costs only the namespaces they are in.
    pub fn live_allows(&self) -> impl Iterator<Item = &Stored> + '_ {
        self.live_allows
            .keys()
            .flat_map(|ns| self.in_namespace(ns).filter(|p| p.is_live_allow()))
    }

    /// Enrolled namespaces without their own deny-by-default, sorted.
    pub fn exposed(&self) -> &BTreeSet<String> {
        &self.exposed
    }

    fn count_live(&mut self, namespace: &str, added: bool) {
        if added {
            self.live_allow_total += 1;
            *self.live_allows.entry(namespace.to_owned()).or_default() += 1;
        } else if let Some(n) = self.live_allows.get_mut(namespace) {
            self.live_allow_total -= 1;
            *n -= 1;
            if *n == 0 {
                self.live_allows.remove(namespace);
            }
        }
    }

    /// Costs the namespace's own policies, never the cluster's.
    fn refresh_exposed(&mut self, namespace: &str) {
        let exposed = self.enrolled.contains(namespace)
            && !self.in_namespace(namespace).any(Stored::is_deny_by_default);
        if exposed {
            if !self.exposed.contains(namespace) {
                self.exposed.insert(namespace.to_owned());
            }
        } else {
            self.exposed.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ap(ns: &str, name: &str, spec: serde_json::Value) -> AuthorizationPolicy {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}))
            .unwrap()
    }

    fn live(ns: &str, name: &str) -> AuthorizationPolicy {
        ap(
            ns,
            name,
            json!({"rules": [{"from": [{"source": {"namespaces": ["a"]}}]}]}),
        )
    }

    fn names<'a>(it: impl Iterator<Item = &'a Stored>) -> Vec<String> {
        it.map(|p| format!("{}/{}", p.namespace, p.name)).collect()
    }

    #[test]
    fn live_allows_are_counted_through_updates_deletes_and_relists() {
        let mut index = AuthzIndex::default();
        index.apply(live("b", "x"));
        index.apply(live("a", "y"));
        index.apply(live("a", "x"));
        index.apply(ap("a", "nothing", json!({})));
        assert_eq!(index.live_allow_count(), 3);
        assert_eq!(names(index.live_allows()), ["a/x", "a/y", "b/x"]);
        // An update that turns a live ALLOW into allow-nothing uncounts it.
        index.apply(ap("a", "x", json!({})));
        index.delete("b", "x");
        index.delete("b", "x");
        assert_eq!(index.live_allow_count(), 1);
        assert_eq!(names(index.live_allows()), ["a/y"]);
        index.replace(vec![live("c", "z")]);
        assert_eq!(names(index.live_allows()), ["c/z"]);
        assert_eq!((index.len(), index.live_allow_count()), (1, 1));
    }

    #[test]
    fn exposed_follows_enrolment_and_own_baselines() {
        let mut index = AuthzIndex::default();
        index.set_enrolled("shop", true);
        index.set_enrolled("bank", true);
        index.set_enrolled("legacy", false);
        assert_eq!(index.exposed().len(), 2);
        index.apply(ap("shop", "allow-nothing", json!({})));
        assert!(!index.exposed().contains("shop"));
        index.replace(vec![ap(
            "bank",
            "deny",
            json!({"action": "DENY", "rules": [{}]}),
        )]);
        assert_eq!(
            index.exposed().iter().collect::<Vec<_>>(),
            [&"shop".to_owned()]
        );
        index.set_enrolled("shop", false);
        index.delete("bank", "deny");
        assert_eq!(
            index.exposed().iter().collect::<Vec<_>>(),
            [&"bank".to_owned()]
        );
        index.clear_enrolled();
        assert!(index.exposed().is_empty());
    }
}
