//! The background audit's state: every judged object, what must be judged
//! again, and the verdicts. Pure and synchronous, so tests drive it with
//! fake events; [`super::feed`] feeds it from the cluster.
//!
//! Owned objects: an object whose controlling `ownerReference` points at an
//! object the engine also holds (a pod's ReplicaSet, a ReplicaSet's
//! Deployment, a Job's CronJob, ...) is reported through that owner. It is
//! still judged, and reported itself only with the findings its owner does
//! not have (drift from the template: a pod without the sidecar its template
//! gets, a pod edited in place). So one violation is reported once, at the
//! top-most object that carries it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;

use serde_json::Value;

use crate::config::Config;
use crate::policy::{self, Judgement};
use crate::posture::PostureIndex;
use crate::rules::{Context, Operation};
use crate::subject::{self, Kind};

use super::stored::{stored, Specs, Stored};
use super::{Snapshot, Verdict};
pub use crate::watch::projection::project;

/// Objects judged per hold of the posture read lock, so the watchers'
/// writes (and the admission reads queued behind them) never wait long.
const JUDGE_CHUNK: usize = 1000;

/// A watch event, as the engine takes it.
#[derive(Debug, Clone)]
pub enum Change {
    Applied {
        kind: Kind,
        object: Value,
    },
    Deleted {
        kind: Kind,
        namespace: String,
        name: String,
    },
    /// A (re-)list of `kind` completed: objects not in it are gone. Also
    /// sent, empty, when the kind's API is not served.
    Listed {
        kind: Kind,
        present: BTreeSet<String>,
    },
}

/// Keys are `Arc<str>`: one allocation per object, shared by every index
/// (and by the pass's target list) rather than copied into each.
pub struct Engine {
    config: Arc<Config>,
    objects: HashMap<Arc<str>, Stored>,
    by_namespace: HashMap<String, BTreeSet<Arc<str>>>,
    children: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    certificate_expiry: BTreeMap<Arc<str>, i64>,
    dirty: BTreeSet<Arc<str>>,
    specs: Specs,
    posture_dirty: BTreeSet<String>,
    all_dirty: bool,
    verdicts: Arc<BTreeMap<String, Arc<Verdict>>>,
    generation: u64,
}

/// `Kind/namespace/name`: unique across kinds, and sorts by kind.
pub fn key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{namespace}/{name}", kind.as_str())
}

/// Kinds whose objects a verdict in their namespace rests on: what the
/// posture index holds.
fn shapes_posture(kind: Kind) -> bool {
    kind.row().posture
}

impl Engine {
    pub fn new(config: Arc<Config>) -> Self {
        Engine {
            config,
            objects: HashMap::new(),
            by_namespace: HashMap::new(),
            children: HashMap::new(),
            certificate_expiry: BTreeMap::new(),
            dirty: BTreeSet::new(),
            specs: Specs::default(),
            posture_dirty: BTreeSet::new(),
            all_dirty: false,
            verdicts: Arc::default(),
            generation: 0,
        }
    }

    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Applied { kind, object } => self.applied(kind, object),
            Change::Deleted {
                kind,
                namespace,
                name,
            } => self.deleted(&key(kind, &namespace, &name)),
            Change::Listed { kind, present } => {
                let prefix = format!("{}/", kind.as_str());
                let gone: Vec<Arc<str>> = self
                    .objects
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && !present.contains(&***k))
                    .cloned()
                    .collect();
                for k in gone {
                    self.deleted(&k);
                }
            }
        }
    }

    fn applied(&mut self, kind: Kind, value: Value) {
        let Some((mut stored, not_after)) = stored(kind, value, &mut self.specs) else {
            return;
        };
        stored.controller = stored.controller.take().map(|c| self.shared_key(c));
        let r = &stored.reference;
        let k = self.shared_key(Arc::from(key(kind, &r.namespace, &r.name)));
        self.unlink(&k);
        if shapes_posture(kind) {
            self.posture_changed(stored.scope());
        }
        match self.by_namespace.get_mut(stored.scope()) {
            Some(keys) => {
                keys.insert(k.clone());
            }
            None => {
                let keys = BTreeSet::from([k.clone()]);
                self.by_namespace.insert(stored.scope().to_owned(), keys);
            }
        }
        if let Some(owner) = &stored.controller {
            self.children
                .entry(owner.clone())
                .or_default()
                .insert(k.clone());
        }
        match not_after {
            Some(at) => self.certificate_expiry.insert(k.clone(), at),
            None => self.certificate_expiry.remove(&k),
        };
        self.dirty.insert(k.clone());
        if let Some(old) = self.objects.insert(k, stored) {
            self.specs.release(old);
        }
    }

    /// The allocation of `fresh` the engine already holds, if any: an object
    /// seen before, or an owner its children name.
    fn shared_key(&self, fresh: Arc<str>) -> Arc<str> {
        let held = self.objects.get_key_value(&*fresh).map(|(k, _)| k);
        held.or_else(|| self.children.get_key_value(&*fresh).map(|(k, _)| k))
            .cloned()
            .unwrap_or(fresh)
    }

    /// Removes `k` from the indexes (not from `objects`).
    fn unlink(&mut self, k: &str) {
        let Some(old) = self.objects.get(k) else {
            return;
        };
        if let Some(keys) = self.by_namespace.get_mut(old.scope()) {
            keys.remove(k);
            if keys.is_empty() {
                self.by_namespace.remove(old.scope());
            }
        }
        if let Some(owner) = old.controller.clone() {
            if let Some(kids) = self.children.get_mut(&*owner) {
                kids.remove(k);
                if kids.is_empty() {
                    self.children.remove(&*owner);
                }
            }
        }
    }

    fn deleted(&mut self, k: &str) {
        self.unlink(k);
        let Some(old) = self.objects.remove(k) else {
            return;
        };
        let (kind, scope) = (old.reference.kind, old.scope().to_owned());
        self.specs.release(old);
        if shapes_posture(kind) {
            self.posture_changed(&scope);
        }
        self.certificate_expiry.remove(k);
        // Its children are now reported in full.
        if let Some(kids) = self.children.get(k) {
            self.dirty.extend(kids.iter().cloned());
        }
        if self.verdicts.contains_key(k) {
            Arc::make_mut(&mut self.verdicts).remove(k);
            self.generation += 1;
        }
    }

    fn posture_changed(&mut self, namespace: &str) {
        if namespace == self.config.mesh_root_namespace {
            self.all_dirty = true;
        }
        self.posture_dirty.insert(namespace.to_owned());
    }

    /// Re-judges everything on the next pass.
    pub fn mark_all(&mut self) {
        self.all_dirty = true;
    }

    pub fn has_work(&self) -> bool {
        self.all_dirty || !self.dirty.is_empty() || !self.posture_dirty.is_empty()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Judges what is dirty against `posture`. The index is fed by the same
    /// watches, before the engine, so it already holds every posture change
    /// the engine has seen.
    pub fn judge(&mut self, posture: &RwLock<PostureIndex>) {
        let targets = self.take_targets();
        let config = self.config.clone();
        // Most objects pass every rule: they share one empty judgement.
        let empty = Arc::new(Judgement::default());
        let shared = |judgement: Judgement| match judgement == *empty {
            true => empty.clone(),
            false => Arc::new(judgement),
        };
        for chunk in targets.chunks(JUDGE_CHUNK) {
            let index = posture.read();
            let ctx = Context {
                posture: &index,
                config: &config,
                operation: Operation::Create,
                // Exemptions are judged at the pass's time.
                now: k8s_openapi::jiff::Timestamp::now(),
            };
            for k in chunk {
                if let Some(stored) = self.objects.get_mut(k) {
                    let r = &stored.reference;
                    let text = stored.text();
                    let decoded = subject::decode(r.kind, &*text, &r.namespace, &r.name);
                    // It decoded when stored; the same text decodes again.
                    stored.raw = decoded
                        .ok()
                        .map(|object| shared(policy::judge(&object, &ctx)));
                }
            }
        }
        self.report(&targets);
    }

    /// The keys to judge on this pass; nothing is dirty after it.
    fn take_targets(&mut self) -> Vec<Arc<str>> {
        let targets = if self.all_dirty {
            self.objects.keys().cloned().collect()
        } else {
            let mut targets = std::mem::take(&mut self.dirty);
            for ns in &self.posture_dirty {
                if let Some(keys) = self.by_namespace.get(ns) {
                    targets.extend(keys.iter().cloned());
                }
            }
            targets.into_iter().collect()
        };
        self.all_dirty = false;
        self.dirty.clear();
        self.posture_dirty.clear();
        targets
    }

    /// Updates the verdicts of the judged `targets` and of their children:
    /// a verdict depends on its own judgement and its owner's.
    fn report(&mut self, targets: &[Arc<str>]) {
        let mut report: BTreeSet<&Arc<str>> = targets.iter().collect();
        for k in targets {
            if let Some(kids) = self.children.get(k) {
                report.extend(kids.iter());
            }
        }
        let mut updates = Vec::new();
        for k in report {
            let next = self.objects.get(&**k).and_then(|stored| {
                self.reported(stored).map(|judgement| Verdict {
                    object: stored.reference.clone(),
                    judgement,
                    through_owner: self.owner_judgement(stored).is_some(),
                })
            });
            let same = match (self.verdicts.get(&**k), &next) {
                (Some(old), Some(new)) => **old == *new,
                (None, None) => true,
                _ => false,
            };
            if !same {
                updates.push((k.clone(), next));
            }
        }
        if updates.is_empty() {
            return;
        }
        let verdicts = Arc::make_mut(&mut self.verdicts);
        for (k, next) in updates {
            match next {
                Some(v) => verdicts.insert(k.to_string(), Arc::new(v)),
                None => verdicts.remove(&*k),
            };
        }
        self.generation += 1;
    }

    /// What `stored` is reported with: its judgement less what its owner
    /// already reports; `None` when that leaves nothing.
    fn reported(&self, stored: &Stored) -> Option<Arc<Judgement>> {
        let raw = stored.raw.as_ref()?;
        let Some(owner_raw) = self.owner_judgement(stored) else {
            return Some(raw.clone());
        };
        let findings: Vec<_> = raw
            .findings
            .iter()
            .filter(|j| {
                !owner_raw
                    .findings
                    .iter()
                    .any(|o| o.finding.rule == j.finding.rule)
            })
            .cloned()
            .collect();
        let exempted: Vec<_> = raw
            .exempted
            .iter()
            .filter(|e| !owner_raw.exempted.iter().any(|o| o.rule == e.rule))
            .cloned()
            .collect();
        if findings.is_empty() && exempted.is_empty() {
            return None;
        }
        Some(Arc::new(Judgement {
            findings,
            exempted,
            exempt_namespace: raw.exempt_namespace,
        }))
    }

    /// The judgement of `stored`'s controller, when the engine holds it.
    fn owner_judgement(&self, stored: &Stored) -> Option<&Judgement> {
        stored
            .controller
            .as_deref()
            .and_then(|k| self.objects.get(k))
            .and_then(|owner| owner.raw.as_deref())
    }

    pub fn snapshot(&self, complete: bool) -> Snapshot {
        Snapshot {
            generation: self.generation,
            complete,
            verdicts: self.verdicts.clone(),
            earliest_certificate_expiry: self.certificate_expiry.values().min().copied(),
        }
    }
}

// What exemption objects and their expiry mark for the next pass.
#[path = "engine_marks.rs"]
mod marks;

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
