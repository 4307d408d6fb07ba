//! A fake Kubernetes API server on loopback (plain HTTP), enough for
//! kube-rs clients and kube-runtime watchers: LIST (full and
//! metadata-only), WATCH as a kept-open stream of newline-delimited events,
//! and Kubernetes-style `Status` errors. Its objects live in memory and the
//! test changes them while clients watch. It counts requests per path, can
//! answer 404 for whole API groups or versions (CRDs not installed), and can
//! hold or slow down LISTs of a path.
//!
//! What it does not do: paging (`limit` is ignored and everything is
//! returned without `continue`), label/field selectors, writes, and GETs of
//! single objects.

#![allow(dead_code)] // not every test binary uses every helper

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use meshgate::kinds::{KindRow, TABLE};

/// The kinds this server knows, and the versions each serves unless
/// switched off: meshgate's own table, so a kind added there is served here
/// with no second list to keep.
fn rows() -> impl Iterator<Item = &'static KindRow> {
    TABLE.iter()
}

/// The versions rows of `group` serve.
fn versions_of(group: &str) -> BTreeSet<&'static str> {
    rows()
        .filter(|row| row.group == group)
        .flat_map(|row| row.versions.iter().copied())
        .collect()
}

/// The metadata-only list `Api::list_metadata` asks for.
const METADATA_LIST: &str = "as=PartialObjectMetadataList";

type Key = (&'static str, &'static str); // (group, plural)

#[derive(Clone)]
struct Change {
    resource_version: u64,
    kind: &'static str, // ADDED, MODIFIED, DELETED
    object: Value,
}

struct Store {
    kind: &'static str,
    /// By (namespace, name); cluster-scoped objects have namespace "".
    objects: BTreeMap<(String, String), Value>,
    /// Every change, so a watch from resourceVersion N can be replayed.
    log: Vec<Change>,
    changes: broadcast::Sender<Change>,
}

#[derive(Default)]
struct Inner {
    stores: HashMap<Key, Store>,
    /// etcd's revision: one counter for every kind.
    revision: u64,
    /// Watches from versions older than this get 410 Gone.
    compacted: u64,
    /// (group, version) pairs that answer 404.
    missing: HashSet<(String, String)>,
    /// LISTs of these paths sleep first.
    delays: HashMap<String, Duration>,
    /// Requests by "LIST <path>" / "WATCH <path>".
    requests: BTreeMap<String, usize>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// LISTs of the paths in this set wait until they leave it.
    held: watch::Sender<HashSet<String>>,
}

/// A running fake API server; stops with the test's runtime.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    /// Holds the kubeconfig.
    dir: tempfile::TempDir,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let mut stores = HashMap::new();
        for row in rows() {
            stores.insert(
                (row.group, row.plural),
                Store {
                    kind: row.kind.as_str(),
                    objects: BTreeMap::new(),
                    log: Vec::new(),
                    changes: broadcast::channel(256).0,
                },
            );
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                stores,
                revision: 100,
                ..Inner::default()
            }),
            held: watch::channel(HashSet::new()).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake API server");
        });
        let server = FakeApiServer {
            addr,
            shared,
            task,
            dir: tempfile::tempdir().unwrap(),
        };
        server.write_kubeconfig();
        server
    }

    /// A kubeconfig for this server, as `envtest::Envtest::kubeconfig`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn write_kubeconfig(&self) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: tester\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(self.kubeconfig(), text).unwrap();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces an object (by its apiVersion, kind, namespace and
    /// name) and tells every watcher (ADDED or MODIFIED).
    pub fn apply(&self, object: Value) {
        self.lock().put(object, true);
    }

    /// Creates or replaces an object without telling any watcher: a LIST
    /// sees it, a running watch never will.
    pub fn apply_unwatched(&self, object: Value) {
        self.lock().put(object, false);
    }

    /// Deletes an object and tells every watcher (DELETED).
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) {
        self.lock()
            .remove(key_of(api_version, kind), namespace, name, true);
    }

    /// Deletes an object without telling any watcher, as if it went while
    /// the watch was down.
    pub fn delete_unwatched(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        self.lock()
            .remove(key_of(api_version, kind), namespace, name, false);
    }

    /// Compacts history, like etcd: every open watch gets an ERROR event
    /// with a 410 Gone Status and ends, and watches from older versions are
    /// refused the same way, so clients must re-list.
    pub fn expire_watches(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.revision;
        for store in inner.stores.values() {
            let _ = store.changes.send(Change {
                resource_version: u64::MAX,
                kind: "ERROR",
                object: gone(),
            });
        }
    }

    /// `missing = true`: every version of `group` answers 404, as when its
    /// CRDs are not installed.
    pub fn set_group_missing(&self, group: &str, missing: bool) {
        let versions = versions_of(group);
        assert!(!versions.is_empty(), "unknown group {group}");
        for version in versions {
            self.set_version_missing(group, version, missing);
        }
    }

    /// `missing = true`: `group/version` answers 404.
    pub fn set_version_missing(&self, group: &str, version: &str, missing: bool) {
        let mut inner = self.lock();
        let pair = (group.to_owned(), version.to_owned());
        if missing {
            inner.missing.insert(pair);
        } else {
            inner.missing.remove(&pair);
        }
    }

    /// LISTs of `path` (e.g. `/api/v1/namespaces`) wait until released.
    pub fn hold_lists(&self, path: &str) {
        self.shared.held.send_modify(|held| {
            held.insert(path.to_owned());
        });
    }

    pub fn release_lists(&self, path: &str) {
        self.shared.held.send_modify(|held| {
            held.remove(path);
        });
    }

    /// LISTs of `path` sleep `delay` before answering.
    pub fn delay_lists(&self, path: &str, delay: Duration) {
        self.lock().delays.insert(path.to_owned(), delay);
    }

    /// How many LISTs of `path` (no query) were received, including held,
    /// delayed and 404 ones.
    pub fn lists(&self, path: &str) -> usize {
        self.count(&format!("LIST {path}"))
    }

    /// How many WATCHes of `path` were received.
    pub fn watches(&self, path: &str) -> usize {
        self.count(&format!("WATCH {path}"))
    }

    fn count(&self, key: &str) -> usize {
        self.lock().requests.get(key).copied().unwrap_or(0)
    }

    /// Every request so far, counted, for failure messages.
    pub fn request_log(&self) -> String {
        self.lock()
            .requests
            .iter()
            .map(|(k, n)| format!("{n:>4} {k}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Inner {
    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn put(&mut self, mut object: Value, notify: bool) {
        let api_version = object["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .to_owned();
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let key = key_of(&api_version, &kind);
        let revision = self.next_revision();
        let metadata = &mut object["metadata"];
        let id = (
            metadata["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            metadata["name"].as_str().expect("metadata.name").to_owned(),
        );
        metadata["resourceVersion"] = revision.to_string().into();
        if metadata.get("uid").is_none() {
            metadata["uid"] = format!("00000000-0000-0000-0000-{revision:012}").into();
        }
        if metadata.get("creationTimestamp").is_none() {
            metadata["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        let store = self.stores.get_mut(&key).unwrap();
        let existed = store.objects.insert(id, object.clone()).is_some();
        if notify {
            store.record(Change {
                resource_version: revision,
                kind: if existed { "MODIFIED" } else { "ADDED" },
                object,
            });
        }
    }
}

impl Inner {
    fn remove(&mut self, key: Key, namespace: Option<&str>, name: &str, notify: bool) {
        let revision = self.next_revision();
        let store = self.stores.get_mut(&key).unwrap();
        let id = (namespace.unwrap_or_default().to_owned(), name.to_owned());
        let mut object = store
            .objects
            .remove(&id)
            .unwrap_or_else(|| panic!("delete {} {id:?}: no such object", store.kind));
        object["metadata"]["resourceVersion"] = revision.to_string().into();
        if notify {
            store.record(Change {
                resource_version: revision,
                kind: "DELETED",
                object,
            });
        }
    }
}

impl Store {
    fn record(&mut self, change: Change) {
        self.log.push(change.clone());
        // No receiver is fine: nobody watches yet.
        let _ = self.changes.send(change);
    }
}

fn key_of(api_version: &str, kind: &str) -> Key {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    rows()
        .find(|row| row.group == group && row.kind.as_str() == kind)
        .map(|row| (row.group, row.plural))
        .unwrap_or_else(|| panic!("the fake API server does not know {api_version} {kind}"))
}

/// What a request path names.
struct Target {
    group: &'static str,
    version: String,
    plural: &'static str,
    namespace: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let (namespace, plural) = match rest {
            [plural] => (None, *plural),
            ["namespaces", ns, plural] => (Some((*ns).to_owned()), *plural),
            _ => return None,
        };
        let row = rows().find(|row| row.group == group && row.plural == plural)?;
        let (group, plural) = (row.group, row.plural);
        if namespace.is_some() && !row.namespaced {
            return None;
        }
        Some(Target {
            group,
            version: version.to_owned(),
            plural,
            namespace,
        })
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn selects(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
    }

    /// The stored object as served at this version.
    fn render(&self, object: &Value) -> Value {
        let mut object = object.clone();
        object["apiVersion"] = self.api_version().into();
        object
    }
}

fn query(request: &Request) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16(),
        })
        .to_string(),
    )
        .into_response()
}

/// The Status of a watch whose resourceVersion was compacted away.
fn gone() -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": "too old resource version", "reason": "Expired",
        "code": 410,
    })
}

fn not_found(path: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("the server could not find the requested resource ({path})"),
    )
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let params = query(&request);
    let watching = params.get("watch").is_some_and(|v| v == "true" || v == "1");
    {
        let mut inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        let counted = format!("{} {path}", if watching { "WATCH" } else { "LIST" });
        *inner.requests.entry(counted).or_default() += 1;
    }
    if request.method() != axum::http::Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake API server only serves GET",
        );
    }
    let Some(target) = Target::parse(&path) else {
        return not_found(&path);
    };
    {
        let inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        let served = versions_of(target.group).contains(target.version.as_str());
        let pair = (target.group.to_owned(), target.version.clone());
        if !served || inner.missing.contains(&pair) {
            return not_found(&path);
        }
    }
    if watching {
        watch_response(&shared, target, &params)
    } else {
        list_response(&shared, &path, target, request.headers()).await
    }
}

async fn list_response(
    shared: &Shared,
    path: &str,
    target: Target,
    headers: &HeaderMap,
) -> Response {
    let mut held = shared.held.subscribe();
    let _ = held.wait_for(|held| !held.contains(path)).await;
    let delay = shared
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .delays
        .get(path)
        .copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let metadata_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(METADATA_LIST));
    let inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
    let store = &inner.stores[&(target.group, target.plural)];
    let items: Vec<Value> = store
        .objects
        .values()
        .filter(|o| target.selects(o))
        .map(|o| {
            if metadata_only {
                json!({
                    "apiVersion": "meta.k8s.io/v1",
                    "kind": "PartialObjectMetadata",
                    "metadata": o["metadata"],
                })
            } else {
                target.render(o)
            }
        })
        .collect();
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_owned(),
            "PartialObjectMetadataList".to_owned(),
        )
    } else {
        (target.api_version(), format!("{}List", store.kind))
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": inner.revision.to_string()},
        "items": items,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A kept-open stream of newline-delimited watch events: the changes after
/// `resourceVersion` from the log, then live ones, until `timeoutSeconds`.
fn watch_response(shared: &Shared, target: Target, params: &HashMap<String, String>) -> Response {
    let since: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = Duration::from_secs(
        params
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290),
    );
    let bookmarks = params
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    // Subscribe and copy the log under one lock: nothing is missed or doubled.
    let (replay, mut live, revision, expired) = {
        let inner = shared.inner.lock().unwrap_or_else(|e| e.into_inner());
        let expired = since != 0 && since < inner.compacted;
        let store = &inner.stores[&(target.group, target.plural)];
        let replay: Vec<Change> = if since == 0 {
            Vec::new()
        } else {
            store
                .log
                .iter()
                .filter(|c| c.resource_version > since)
                .cloned()
                .collect()
        };
        (replay, store.changes.subscribe(), inner.revision, expired)
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let line = move |change: &Change| -> Option<Bytes> {
        if change.kind == "ERROR" {
            let event = json!({"type": "ERROR", "object": change.object});
            return Some(Bytes::from(format!("{event}\n")));
        }
        if !target.selects(&change.object) {
            return None;
        }
        let event = json!({"type": change.kind, "object": target.render(&change.object)});
        Some(Bytes::from(format!("{event}\n")))
    };
    tokio::spawn(async move {
        if expired {
            let gone = Change {
                resource_version: u64::MAX,
                kind: "ERROR",
                object: gone(),
            };
            let _ = tx.send(line(&gone).unwrap()).await;
            return;
        }
        // Without a version the watch starts now.
        let mut last = if since == 0 { revision } else { since };
        for change in &replay {
            last = change.resource_version;
            if let Some(bytes) = line(change) {
                if tx.send(bytes).await.is_err() {
                    return;
                }
            }
        }
        if bookmarks {
            // Like the API server: a bookmark tells the client where it is.
            let bookmark = json!({
                "type": "BOOKMARK",
                "object": {"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": last.to_string()}},
            });
            if tx.send(Bytes::from(format!("{bookmark}\n"))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = tx.closed() => return,
                change = live.recv() => match change {
                    Ok(change) if change.kind == "ERROR" => {
                        let _ = tx.send(line(&change).unwrap()).await;
                        return;
                    }
                    Ok(change) if change.resource_version > last => {
                        last = change.resource_version;
                        if let Some(bytes) = line(&change) {
                            if tx.send(bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    // Too far behind, or the server is going away: end the
                    // watch; the client re-watches from its last version.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}
