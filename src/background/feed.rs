//! Feeds the engine from the cluster: its sink of each judged kind's
//! watch ([`crate::watch`], the objects already trimmed there), and the same
//! from state files.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use kube::api::DynamicObject;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::posture::reflector::CacheSync;
use crate::posture::watched::WatchedResource;
use crate::posture::SharedPosture;
use crate::subject::Kind;
use crate::watch::{Seen, Sink};

use super::engine::{key, Change, Engine};
use super::runner::Runner;
use super::{Results, Snapshot};

/// The kinds the background audit watches: every kind `/validate` judges.
fn watched_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().filter(|kind| kind.is_judged())
}

/// What the background audit reads beyond the posture index's resources:
/// the chart's RBAC grants get/list/watch on each while the audit is on
/// (checked in `tests/chart.rs`).
pub fn background_resources() -> Vec<WatchedResource> {
    watched_kinds()
        .map(Kind::row)
        .filter(|row| !row.posture)
        .map(WatchedResource::of)
        .collect()
}

/// Starts the engine; it judges once every judged kind has listed into
/// `changes` (see [`sink`]) and the posture index has synced.
pub fn spawn(
    config: Arc<Config>,
    posture: SharedPosture,
    posture_sync: Arc<CacheSync>,
) -> (Results, mpsc::Sender<Change>) {
    let (changes, receiver) = mpsc::channel(1024);
    let watched = watched_kinds().count();
    let (results_tx, results_rx) = watch::channel(Arc::new(Snapshot::default()));
    let runner = Runner {
        interval: config.background_audit.interval,
        engine: Engine::new(config),
        posture,
        ready: Box::new(move |synced: &HashSet<Kind>| {
            synced.len() == watched && posture_sync.is_ready()
        }),
    };
    tokio::spawn(runner.run(receiver, results_tx));
    (Results::new(results_rx), changes)
}

/// The engine's sink of `kind`'s watch; `None` for a kind it does not judge.
pub fn sink(kind: Kind, changes: &mpsc::Sender<Change>) -> Option<Box<dyn Sink>> {
    kind.is_judged().then(|| {
        Box::new(EngineSink {
            kind,
            changes: changes.clone(),
            present: BTreeSet::new(),
        }) as Box<dyn Sink>
    })
}

/// Queues one kind's changes for the engine; tells it after each full list
/// which objects are present.
struct EngineSink {
    kind: Kind,
    changes: mpsc::Sender<Change>,
    /// The keys of a re-list in progress.
    present: BTreeSet<String>,
}

impl EngineSink {
    fn change(&mut self, seen: Seen<'_>) -> Option<Change> {
        let kind = self.kind;
        match seen {
            Seen::Relisting => {
                self.present.clear();
                None
            }
            Seen::Listing(object) => {
                self.present.insert(key_of(kind, object));
                applied(kind, object)
            }
            Seen::Listed => Some(Change::Listed {
                kind,
                present: std::mem::take(&mut self.present),
            }),
            Seen::Applied(object) => applied(kind, object),
            Seen::Deleted(object) => Some(Change::Deleted {
                kind,
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                name: object.metadata.name.clone().unwrap_or_default(),
            }),
            // Nothing of the kind exists.
            Seen::Missing => Some(Change::Listed {
                kind,
                present: BTreeSet::new(),
            }),
            // Verdicts are kept until the re-list says what is gone.
            Seen::Lost => None,
        }
    }
}

impl Sink for EngineSink {
    fn take<'a>(&'a mut self, seen: Seen<'a>) -> BoxFuture<'a, bool> {
        let change = self.change(seen);
        Box::pin(async move {
            match change {
                Some(change) => self.changes.send(change).await.is_ok(),
                None => true,
            }
        })
    }
}

/// Feeds the judged objects among the state files (`serve --state-from`)
/// to `engine` one document at a time, so only the engine's trimmed text
/// stays in memory, never the whole parsed input (at 10,000 namespaces that
/// was a 207 MiB peak). Namespaced objects without a namespace land in
/// `default`, as for the posture index.
pub fn apply_files(
    engine: &mut super::Engine,
    paths: &[std::path::PathBuf],
) -> Result<(), crate::manifest::ManifestError> {
    crate::manifest::visit_paths(paths, &mut |m| {
        if let Some(kind) = Kind::from_api_version(&m.api_version, &m.kind) {
            let mut object = m.value;
            if kind != Kind::Namespace && m_namespace_missing(&object) {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String("default".into()));
                }
            }
            engine.apply(Change::Applied { kind, object });
        }
        Ok(())
    })
}

fn m_namespace_missing(object: &Value) -> bool {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

fn key_of(kind: Kind, object: &DynamicObject) -> String {
    let name = object.metadata.name.as_deref().unwrap_or("");
    match kind {
        Kind::Namespace => key(kind, "", name),
        _ => key(
            kind,
            object.metadata.namespace.as_deref().unwrap_or(""),
            name,
        ),
    }
}

/// The watched object (typed and trimmed on arrival) as the engine takes it.
fn applied(kind: Kind, object: &DynamicObject) -> Option<Change> {
    let object = serde_json::to_value(object).ok()?;
    Some(Change::Applied { kind, object })
}
