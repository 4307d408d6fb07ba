//! Feeds the engine from the cluster and runs its passes: watchers per kind,
//! a debounce, a settle re-check after posture changes, and the periodic
//! full re-judge.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::posture::reflector::CacheSync;
use crate::posture::watched::WatchedResource;
use crate::posture::SharedPosture;
use crate::subject::Kind;

use super::engine::{key, project, Change, Engine, PostureChange};
use super::{Results, Snapshot};

/// Changes arriving within this window are judged in one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The posture index is fed by its own watchers; a pass after a posture
/// change may have run before the index saw it, so it runs once more then.
pub const SETTLE: Duration = Duration::from_secs(1);
const MISSING_RETRY: Duration = Duration::from_secs(30);

/// A kind the background audit watches, at the versions it tries in order.
struct Watched {
    kind: Kind,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
}

const fn w(
    kind: Kind,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
) -> Watched {
    Watched {
        kind,
        group,
        versions,
        plural,
    }
}

const WATCHED: &[Watched] = &[
    w(Kind::Pod, "", &["v1"], "pods"),
    w(
        Kind::ReplicationController,
        "",
        &["v1"],
        "replicationcontrollers",
    ),
    w(Kind::Deployment, "apps", &["v1"], "deployments"),
    w(Kind::StatefulSet, "apps", &["v1"], "statefulsets"),
    w(Kind::DaemonSet, "apps", &["v1"], "daemonsets"),
    w(Kind::ReplicaSet, "apps", &["v1"], "replicasets"),
    w(Kind::Job, "batch", &["v1"], "jobs"),
    w(Kind::CronJob, "batch", &["v1"], "cronjobs"),
    w(Kind::Namespace, "", &["v1"], "namespaces"),
    w(
        Kind::PeerAuthentication,
        "security.istio.io",
        &["v1", "v1beta1"],
        "peerauthentications",
    ),
    w(
        Kind::AuthorizationPolicy,
        "security.istio.io",
        &["v1", "v1beta1"],
        "authorizationpolicies",
    ),
    w(
        Kind::DestinationRule,
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "destinationrules",
    ),
    w(
        Kind::Sidecar,
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "sidecars",
    ),
    w(
        Kind::Certificate,
        "cert-manager.io",
        &["v1"],
        "certificates",
    ),
];

/// What the background audit reads: the chart's RBAC grants get/list/watch
/// on each (checked in `tests/chart.rs`).
pub const BACKGROUND_RESOURCES: &[WatchedResource] = &[
    WatchedResource {
        api_group: "",
        version: "v1",
        resource: "pods",
    },
    WatchedResource {
        api_group: "",
        version: "v1",
        resource: "replicationcontrollers",
    },
    WatchedResource {
        api_group: "apps",
        version: "v1",
        resource: "deployments",
    },
    WatchedResource {
        api_group: "apps",
        version: "v1",
        resource: "statefulsets",
    },
    WatchedResource {
        api_group: "apps",
        version: "v1",
        resource: "daemonsets",
    },
    WatchedResource {
        api_group: "apps",
        version: "v1",
        resource: "replicasets",
    },
    WatchedResource {
        api_group: "batch",
        version: "v1",
        resource: "jobs",
    },
    WatchedResource {
        api_group: "batch",
        version: "v1",
        resource: "cronjobs",
    },
    WatchedResource {
        api_group: "cert-manager.io",
        version: "v1",
        resource: "certificates",
    },
];

fn api_resource(watched: &Watched, version: &str) -> ApiResource {
    ApiResource {
        group: watched.group.into(),
        version: version.into(),
        api_version: if watched.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", watched.group)
        },
        kind: watched.kind.as_str().into(),
        plural: watched.plural.into(),
    }
}

/// Starts the watchers and the engine; the results follow the cluster.
pub fn spawn(
    client: Client,
    config: Arc<Config>,
    posture: SharedPosture,
    posture_sync: Arc<CacheSync>,
) -> Results {
    let (changes, receiver) = mpsc::channel(1024);
    for watched in WATCHED {
        tokio::spawn(watch_kind(client.clone(), watched, changes.clone()));
    }
    let (results_tx, results_rx) = watch::channel(Arc::new(Snapshot::default()));
    let runner = Runner {
        interval: config.background_audit.interval,
        engine: Engine::new(config),
        posture,
        ready: Box::new(move |synced: &HashSet<Kind>| {
            synced.len() == WATCHED.len() && posture_sync.is_ready()
        }),
    };
    tokio::spawn(runner.run(receiver, results_tx));
    Results::new(results_rx)
}

/// The judged objects among the state files (`serve --state-from`);
/// namespaced objects without a namespace land in `default`, as for the
/// posture index.
pub fn changes_from_files(
    paths: &[std::path::PathBuf],
) -> Result<Vec<Change>, crate::manifest::ManifestError> {
    let mut changes = Vec::new();
    crate::manifest::visit_paths(paths, &mut |m| {
        if let Some(kind) = Kind::from_api_version(&m.api_version, &m.kind) {
            let mut object = m.value;
            if kind != Kind::Namespace && m_namespace_missing(&object) {
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("namespace".into(), Value::String("default".into()));
                }
            }
            project(kind, &mut object);
            changes.push(Change::Applied { kind, object });
        }
        Ok(())
    })?;
    Ok(changes)
}

fn m_namespace_missing(object: &Value) -> bool {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
}

/// Judges a fixed set of objects once (`serve --state-from`).
pub fn spawn_static(config: Arc<Config>, posture: SharedPosture, changes: Vec<Change>) -> Results {
    let mut engine = Engine::new(config);
    for change in changes {
        engine.apply(change);
    }
    engine.judge(&posture);
    let (tx, rx) = watch::channel(Arc::new(engine.snapshot(true)));
    Results::fixed(rx, tx)
}

type Ready = Box<dyn Fn(&HashSet<Kind>) -> bool + Send>;

/// The engine's loop, separate from the watchers so tests can drive it.
pub struct Runner {
    pub engine: Engine,
    pub posture: SharedPosture,
    pub interval: Duration,
    /// Whether every cache has synced, given the kinds the engine listed.
    pub ready: Ready,
}

impl Runner {
    pub fn new(engine: Engine, posture: SharedPosture, interval: Duration, ready: Ready) -> Self {
        Runner {
            engine,
            posture,
            interval,
            ready,
        }
    }

    pub async fn run(
        mut self,
        mut changes: mpsc::Receiver<Change>,
        results: watch::Sender<Arc<Snapshot>>,
    ) {
        let mut listed = HashSet::new();
        let mut complete = false;
        let mut settle: Option<(Instant, PostureChange)> = None;
        let mut full = tokio::time::interval(self.interval);
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        full.tick().await;
        loop {
            let settle_at = settle.as_ref().map(|(at, _)| *at);
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    self.take(change, &mut listed);
                    let deadline = Instant::now() + DEBOUNCE;
                    while let Ok(Some(change)) =
                        tokio::time::timeout_at(deadline, changes.recv()).await
                    {
                        self.take(change, &mut listed);
                    }
                }
                _ = full.tick() => self.engine.mark_all(),
                _ = sleep_until_or_forever(settle_at) => {
                    if let Some((_, change)) = settle.take() {
                        self.engine.mark(&change);
                    }
                }
                _ = tokio::time::sleep(DEBOUNCE), if !complete => {}
            }
            let first_pass = !complete;
            if !complete {
                if !(self.ready)(&listed) {
                    continue;
                }
                complete = true;
                self.engine.mark_all();
                tracing::info!(
                    objects = self.engine.len(),
                    "background audit: caches synced, judging everything"
                );
            }
            // A deletion alone changes the verdicts without a pass.
            if self.engine.has_work() {
                let started = std::time::Instant::now();
                let posture = self.posture.clone();
                let mut engine = self.engine;
                let (engine, change) = match tokio::task::spawn_blocking(move || {
                    let change = engine.judge(&posture);
                    (engine, change)
                })
                .await
                {
                    Ok(done) => done,
                    Err(error) => {
                        tracing::error!(%error, "background audit: a pass panicked; stopping");
                        return;
                    }
                };
                self.engine = engine;
                tracing::debug!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "background audit pass"
                );
                // The first pass judged everything on synced caches already.
                if let Some(change) = change.filter(|_| !first_pass) {
                    settle = Some((Instant::now() + SETTLE, change));
                }
            }
            let snapshot = self.engine.snapshot(true);
            results.send_if_modified(|old| {
                let modified = old.generation != snapshot.generation
                    || !old.complete
                    || old.earliest_certificate_expiry != snapshot.earliest_certificate_expiry;
                if modified {
                    *old = Arc::new(snapshot);
                }
                modified
            });
        }
    }
}

impl Runner {
    /// Applies a change; a completed list marks its kind synced (it comes
    /// after the listed objects on the same channel).
    fn take(&mut self, change: Change, listed: &mut HashSet<Kind>) {
        if let Change::Listed { kind, .. } = &change {
            listed.insert(*kind);
        }
        self.engine.apply(change);
    }
}

async fn sleep_until_or_forever(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Watches one kind into `changes`; tells `synced` after each full list.
async fn watch_kind(client: Client, watched: &'static Watched, changes: mpsc::Sender<Change>) {
    let mut said_missing = false;
    loop {
        let resource = match served_version(&client, watched).await {
            Ok(Some(resource)) => resource,
            Ok(None) => {
                // Said once: a cluster without cert-manager stays without it.
                if !std::mem::replace(&mut said_missing, true) {
                    tracing::info!(kind = %watched.kind, "background audit: API not served; looking again every 30s");
                }
                let listed = Change::Listed {
                    kind: watched.kind,
                    present: BTreeSet::new(),
                };
                if changes.send(listed).await.is_err() {
                    return;
                }
                tokio::time::sleep(MISSING_RETRY).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(kind = %watched.kind, %error, "background audit: cannot probe the API; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut present = BTreeSet::new();
        while let Some(event) = stream.next().await {
            let change = match event {
                Ok(Event::Init) => {
                    present.clear();
                    continue;
                }
                Ok(Event::InitApply(object)) => {
                    let change = applied(watched.kind, &resource, object);
                    if let Some(Change::Applied { object, .. }) = &change {
                        present.insert(key_of(watched.kind, object));
                    }
                    change
                }
                Ok(Event::InitDone) => Some(Change::Listed {
                    kind: watched.kind,
                    present: std::mem::take(&mut present),
                }),
                Ok(Event::Apply(object)) => applied(watched.kind, &resource, object),
                Ok(Event::Delete(object)) => Some(Change::Deleted {
                    kind: watched.kind,
                    namespace: object.metadata.namespace.clone().unwrap_or_default(),
                    name: object.metadata.name.clone().unwrap_or_default(),
                }),
                Err(error) => {
                    tracing::warn!(kind = %watched.kind, %error, "background audit: watch error; retrying");
                    continue;
                }
            };
            if let Some(change) = change {
                if changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }
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

async fn served_version(
    client: &Client,
    watched: &Watched,
) -> Result<Option<ApiResource>, kube::Error> {
    for version in watched.versions {
        let resource = api_resource(watched, version);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(resource)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use serde_json::json;

    use super::*;
    use crate::posture::PostureIndex;

    fn deployment() -> Change {
        Change::Applied {
            kind: Kind::Deployment,
            object: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"selector": {}, "template": {"spec": {
                    "hostNetwork": true, "containers": [{"name": "app", "image": "a"}]}}}
            }),
        }
    }

    #[tokio::test]
    async fn the_runner_judges_once_synced_then_follows_changes() {
        let posture = Arc::new(RwLock::new(PostureIndex::default()));
        let engine = Engine::new(Arc::new(Config::default()));
        let ready: Ready = Box::new(|listed| listed.contains(&Kind::Deployment));
        let runner = Runner::new(engine, posture, Duration::from_secs(600), ready);
        let (changes, receiver) = mpsc::channel(16);
        let (results_tx, results_rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut results = Results::new(results_rx);
        tokio::spawn(runner.run(receiver, results_tx));

        changes.send(deployment()).await.unwrap();
        // Nothing is published before the kind has listed.
        tokio::time::sleep(DEBOUNCE * 3).await;
        assert!(!results.snapshot().complete);

        let listed = Change::Listed {
            kind: Kind::Deployment,
            present: BTreeSet::from([key(Kind::Deployment, "shop", "web")]),
        };
        changes.send(listed).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), results.changed())
            .await
            .unwrap()
            .unwrap();
        let snapshot = results.snapshot();
        assert!(snapshot.complete);
        assert_eq!(snapshot.verdicts.len(), 1);

        changes
            .send(Change::Deleted {
                kind: Kind::Deployment,
                namespace: "shop".into(),
                name: "web".into(),
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), results.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(results.snapshot().verdicts.is_empty());
    }
}
