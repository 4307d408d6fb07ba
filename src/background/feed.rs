//! Feeds the engine from the cluster: a watcher per judged kind, the
//! objects trimmed before they are queued (and the same from state files).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::metrics::{Metrics, WatchCounters};
use crate::posture::reflector::CacheSync;
use crate::posture::watch_link::{relists_by_itself, Failure, Messages, WatchLink};
use crate::posture::watched::WatchedResource;
use crate::posture::SharedPosture;
use crate::subject::Kind;

use super::engine::{key, project, Change, Engine};
use super::runner::Runner;
use super::{Results, Snapshot};

const MISSING_RETRY: Duration = Duration::from_secs(30);

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

/// Starts the watchers and the engine; the results follow the cluster.
pub fn spawn(
    client: Client,
    config: Arc<Config>,
    posture: SharedPosture,
    posture_sync: Arc<CacheSync>,
    metrics: &Metrics,
) -> Results {
    let (changes, receiver) = mpsc::channel(1024);
    for kind in watched_kinds() {
        let counters = metrics.background_watch_counters(kind.row().resource);
        tokio::spawn(watch_kind(client.clone(), kind, changes.clone(), counters));
    }
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
    Results::new(results_rx)
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

/// What the background audit's watches log: one line when a watch is lost
/// and one when it is back, as the posture watches do.
const BACKGROUND_WATCH: Messages = Messages {
    cannot_list: "background audit: cannot list; retrying",
    lost: "background audit: watch lost; verdicts kept until it is re-established",
    back: "background audit: watch re-established; objects re-listed",
    synced: "background audit: objects listed",
};

/// Watches one kind into `changes`; tells the engine after each full list.
async fn watch_kind(
    client: Client,
    kind: Kind,
    changes: mpsc::Sender<Change>,
    counters: WatchCounters,
) {
    let mut said_missing = false;
    let mut said_unreachable = false;
    loop {
        let resource = match kind.served_resource(&client).await {
            Ok(Some(resource)) => resource,
            Ok(None) => {
                // Said once: a cluster without cert-manager stays without it.
                if !std::mem::replace(&mut said_missing, true) {
                    tracing::info!(kind = %kind, "background audit: API not served; looking again every 30s");
                }
                let listed = Change::Listed {
                    kind,
                    present: BTreeSet::new(),
                };
                if changes.send(listed).await.is_err() {
                    return;
                }
                tokio::time::sleep(MISSING_RETRY).await;
                continue;
            }
            Err(error) => {
                counters.errors.inc();
                // Said once: the API server may be away for a while.
                if !std::mem::replace(&mut said_unreachable, true) {
                    tracing::warn!(kind = %kind, %error, "background audit: cannot probe the API; retrying");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let connect = || {
            watcher::watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .boxed()
        };
        let mut link = WatchLink::new(kind.row().resource, counters.clone(), BACKGROUND_WATCH);
        if !feed_events(kind, &resource, connect, &mut link, &changes).await {
            return;
        }
    }
}

/// Feeds one kind's watch events to the engine until the stream ends
/// (true) or the engine is gone (false). A lost watch is replaced by a
/// fresh one, whose list tells the engine what is present now.
async fn feed_events<S>(
    kind: Kind,
    resource: &ApiResource,
    mut connect: impl FnMut() -> S,
    link: &mut WatchLink,
    changes: &mpsc::Sender<Change>,
) -> bool
where
    S: futures::Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Unpin,
{
    let mut stream = connect();
    let mut present = BTreeSet::new();
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(Event::Init) => {
                present.clear();
                continue;
            }
            Ok(Event::InitApply(object)) => {
                let change = applied(kind, resource, object);
                if let Some(Change::Applied { object, .. }) = &change {
                    present.insert(key_of(kind, object));
                }
                change
            }
            Ok(Event::InitDone) => {
                link.listed(present.len());
                Some(Change::Listed {
                    kind,
                    present: std::mem::take(&mut present),
                })
            }
            Ok(Event::Apply(object)) => applied(kind, resource, object),
            Ok(Event::Delete(object)) => Some(Change::Deleted {
                kind,
                namespace: object.metadata.namespace.clone().unwrap_or_default(),
                name: object.metadata.name.clone().unwrap_or_default(),
            }),
            Err(error) => {
                if link.failed(&error) == Failure::Lost && !relists_by_itself(&error) {
                    stream = connect();
                    present.clear();
                }
                continue;
            }
        };
        if let Some(change) = change {
            if changes.send(change).await.is_err() {
                return false;
            }
        }
    }
    true
}

fn key_of(kind: Kind, object: &Value) -> String {
    let at = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    match kind {
        Kind::Namespace => key(kind, "", at("/metadata/name")),
        _ => key(kind, at("/metadata/namespace"), at("/metadata/name")),
    }
}

/// The watched object as the engine takes it: typed header set (list items
/// come without one) and trimmed before it is queued.
fn applied(kind: Kind, resource: &ApiResource, object: DynamicObject) -> Option<Change> {
    let mut value = serde_json::to_value(object).ok()?;
    let map = value.as_object_mut()?;
    map.insert(
        "apiVersion".into(),
        Value::String(resource.api_version.clone()),
    );
    map.insert("kind".into(), Value::String(resource.kind.clone()));
    project(kind, &mut value);
    Some(Change::Applied {
        kind,
        object: value,
    })
}
