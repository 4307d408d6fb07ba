//! The cluster feeder: kube-runtime watchers keep the posture index current,
//! reflector-style. A re-list (`Init` … `InitDone`) replaces the kind's whole
//! content at once, so objects deleted while the watch was down never linger.
//! Istio kinds are watched at the newest version the cluster serves; when no
//! version is served (the CRDs are not installed) the index says so and the
//! posture rules report "cannot be verified" instead of passing.
//!
//! When the API server goes away, the watch is lost: meshgate logs it once,
//! counts every failed call (`meshgate_watch_errors_total`), keeps answering
//! from the cache, and retries with kube-runtime's backoff. It then starts a
//! fresh watcher, whose first list replaces the cache, and logs and counts the
//! watch as re-established (`meshgate_watch_restarts_total`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::DynamicObject;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use parking_lot::RwLock;
use serde::de::DeserializeOwned;

use crate::istio::{
    AuthorizationPolicy, DestinationRule, PeerAuthentication, ServiceEntry, Sidecar,
};
use crate::metrics::{Metrics, WatchCounters};
use crate::reminder::Reminder;

use super::watch_link::{relists_by_itself, Failure, Messages, WatchLink};

use super::{Availability, PostureIndex, SharedPosture, Store};
use crate::kinds::{Kind, TableKind, TABLE};

/// Whether each watched resource has completed its first list, whether its
/// API exists, and whether its watch is down. `/readyz` turns ready only when
/// every one has synced.
#[derive(Debug)]
pub struct CacheSync {
    resources: Vec<ResourceState>,
}

#[derive(Debug)]
struct ResourceState {
    name: &'static str,
    synced: AtomicBool,
    availability: RwLock<Availability>,
    /// The synced watch is lost: the cache may be stale.
    lost: AtomicBool,
}

impl CacheSync {
    pub fn new(resources: &[&'static str]) -> Self {
        CacheSync {
            resources: resources
                .iter()
                .map(|name| ResourceState {
                    name,
                    synced: AtomicBool::new(false),
                    availability: RwLock::new(Availability::Present),
                    lost: AtomicBool::new(false),
                })
                .collect(),
        }
    }

    /// State loaded from files is complete from the start.
    pub fn all_synced(resources: &[&'static str]) -> Self {
        let sync = Self::new(resources);
        for state in &sync.resources {
            state.synced.store(true, Ordering::Release);
        }
        sync
    }

    fn state(&self, resource: &str) -> Option<&ResourceState> {
        self.resources.iter().find(|state| state.name == resource)
    }

    pub fn mark_synced(&self, resource: &str, availability: Availability) {
        if let Some(state) = self.state(resource) {
            *state.availability.write() = availability;
            state.synced.store(true, Ordering::Release);
        }
    }

    /// Records that the watch of `resource` was lost, or re-established.
    pub fn mark_lost(&self, resource: &str, lost: bool) {
        if let Some(state) = self.state(resource) {
            state.lost.store(lost, Ordering::Release);
        }
    }

    /// Whether a synced cache may be behind the API server because its watch
    /// is down: posture-based allows are then confirmed like denials.
    pub fn is_stale(&self) -> bool {
        self.resources
            .iter()
            .any(|state| state.lost.load(Ordering::Acquire))
    }

    pub fn is_ready(&self) -> bool {
        self.resources
            .iter()
            .all(|state| state.synced.load(Ordering::Acquire))
    }

    /// Each resource and whether it has synced.
    pub fn states(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.resources
            .iter()
            .map(|state| (state.name, state.synced.load(Ordering::Acquire)))
    }

    /// Resources whose API the cluster does not serve.
    pub fn missing(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.resources
            .iter()
            .filter(|state| *state.availability.read() == Availability::Missing)
            .map(|state| state.name)
    }
}

pub const NAMESPACES: &str = Kind::Namespace.row().resource;
pub const PEER_AUTHENTICATIONS: &str = Kind::PeerAuthentication.row().resource;

/// Every resource `serve` watches for the posture index (the table's
/// `posture` rows), for readiness.
pub fn all() -> Vec<&'static str> {
    TABLE
        .iter()
        .filter(|row| row.posture)
        .map(|row| row.resource)
        .collect()
}

/// An Istio kind the index holds; its API facts come from its row in the
/// kinds table.
pub trait IstioKind: TableKind + DeserializeOwned + Send + Sync + 'static {
    fn slot(index: &mut PostureIndex) -> &mut dyn Store<Self>;
    /// How readiness, logs and metrics name the resource.
    fn resource() -> &'static str {
        Self::KIND.row().resource
    }
    /// Records whether the API exists: the security kinds feed the posture
    /// rules, which say "cannot be verified" without them.
    fn set_availability(index: &mut PostureIndex, availability: Availability) {
        if Self::KIND.row().group == "security.istio.io" {
            index.security_api = availability;
        }
    }
}

macro_rules! istio_kind {
    ($($t:ty => $field:ident),* $(,)?) => {$(
        impl IstioKind for $t {
            fn slot(index: &mut PostureIndex) -> &mut dyn Store<Self> {
                &mut index.$field
            }
        }
    )*};
}

istio_kind!(
    PeerAuthentication => peer_authentications,
    AuthorizationPolicy => authorization_policies,
    DestinationRule => destination_rules,
    ServiceEntry => service_entries,
    Sidecar => sidecars,
);

/// Starts every watcher.
pub fn spawn_all(client: Client, posture: SharedPosture, sync: Arc<CacheSync>, metrics: &Metrics) {
    tokio::spawn(watch_namespaces(
        client.clone(),
        posture.clone(),
        sync.clone(),
        metrics.watch_counters(NAMESPACES),
    ));
    spawn_istio::<PeerAuthentication>(&client, &posture, &sync, metrics);
    spawn_istio::<AuthorizationPolicy>(&client, &posture, &sync, metrics);
    spawn_istio::<DestinationRule>(&client, &posture, &sync, metrics);
    spawn_istio::<ServiceEntry>(&client, &posture, &sync, metrics);
    spawn_istio::<Sidecar>(&client, &posture, &sync, metrics);
    // Issue 21 hook: the exemption objects (their own watcher: a missing
    // CRD means "no exemption objects", not an unverifiable posture).
    crate::exemption::watch::spawn(&client, &posture, &sync, metrics);
}

fn spawn_istio<T: IstioKind>(
    client: &Client,
    posture: &SharedPosture,
    sync: &Arc<CacheSync>,
    metrics: &Metrics,
) {
    tokio::spawn(watch_istio::<T>(
        client.clone(),
        posture.clone(),
        sync.clone(),
        metrics.watch_counters(T::resource()),
    ));
}

/// Watches Namespaces into the index; errors are retried with backoff.
pub async fn watch_namespaces(
    client: Client,
    posture: SharedPosture,
    sync: Arc<CacheSync>,
    counters: WatchCounters,
) {
    let api: Api<Namespace> = Api::all(client);
    let connect = || {
        watcher::watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed()
    };
    apply_namespace_events(connect, &posture, &sync, &counters).await;
}

/// Feeds Namespace watch events into the index (see [`apply_events`]).
async fn apply_namespace_events<S>(
    connect: impl FnMut() -> S,
    posture: &SharedPosture,
    sync: &CacheSync,
    counters: &WatchCounters,
) where
    S: Stream<Item = Result<Event<Namespace>, watcher::Error>> + Unpin,
{
    apply_events(
        connect,
        posture,
        sync,
        counters,
        NAMESPACES,
        |index, ns| index.apply_namespace(&ns),
        |index, ns| {
            if let Some(name) = ns.metadata.name.as_deref() {
                index.delete_namespace(name);
            }
        },
        |index, all| index.replace_namespaces(&all),
    )
    .await;
}

/// What the posture watches log (`tests/envtest_outage.rs` counts them).
const POSTURE_WATCH: Messages = Messages {
    cannot_list: "cannot list; retrying",
    lost: "watch lost; answering from the cache until it is re-established",
    back: "watch re-established; cache re-listed",
    synced: "cache synced",
};

/// How long to wait before looking again for CRDs that were not installed.
const MISSING_RETRY: Duration = Duration::from_secs(30);

/// Watches one Istio kind at the newest version served.
pub async fn watch_istio<T: IstioKind>(
    client: Client,
    posture: SharedPosture,
    sync: Arc<CacheSync>,
    counters: WatchCounters,
) {
    let mut said_unreachable = false;
    let mut missing = Reminder::default();
    loop {
        match T::KIND.served_resource(&client).await {
            Ok(Some(resource)) => {
                tracing::info!(resource = T::resource(), version = %resource.version, "watching");
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                let connect = || {
                    watcher::watcher(api.clone(), watcher::Config::default())
                        .default_backoff()
                        .boxed()
                };
                apply_events(
                    connect,
                    &posture,
                    &sync,
                    &counters,
                    T::resource(),
                    |index, obj| {
                        if let Some(obj) = typed::<T>(obj) {
                            T::slot(index).apply(obj);
                        }
                    },
                    |index, obj| {
                        if let (Some(ns), Some(name)) = (
                            obj.metadata.namespace.as_deref(),
                            obj.metadata.name.as_deref(),
                        ) {
                            T::slot(index).delete(ns, name);
                        }
                    },
                    |index, all| {
                        // Available only once listed: until then the index
                        // would look empty rather than unverifiable.
                        T::set_availability(index, Availability::Present);
                        T::slot(index).replace_from(&mut all.into_iter().filter_map(typed::<T>))
                    },
                )
                .await;
                return;
            }
            Ok(None) => {
                // Retried every 30 s, said every 10 min: a cluster without
                // Istio stays without it until someone installs it.
                if missing.due(std::time::Instant::now()) {
                    tracing::error!(
                        resource = T::resource(),
                        "Istio CRD not installed (is Istio installed?): posture rules report the mesh posture as unverifiable until it is; meshgate looks for it every 30s and watches it as soon as it exists (this line repeats every 10 min)"
                    );
                }
                write(&posture, |index| {
                    T::slot(index).replace_from(&mut std::iter::empty());
                    T::set_availability(index, Availability::Missing);
                });
                sync.mark_synced(T::resource(), Availability::Missing);
                tokio::time::sleep(MISSING_RETRY).await;
            }
            Err(error) => {
                counters.errors.inc();
                // Said once: the API server may be away for a while.
                if !std::mem::replace(&mut said_unreachable, true) {
                    tracing::warn!(resource = T::resource(), %error, "cannot probe the API; retrying");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// A watched object as its typed struct; one that does not parse is logged
/// and skipped (it could only come from a broken CRD schema). Watching
/// `Api<T>` directly would fail the whole list on such an object, and the
/// cache would never sync.
pub fn typed<T: IstioKind>(object: DynamicObject) -> Option<T> {
    let name = object.metadata.name.clone().unwrap_or_default();
    match serde_json::to_value(object).and_then(crate::strict::from_value) {
        Ok(typed) => Some(typed),
        Err(error) => {
            tracing::warn!(resource = T::resource(), %name, %error, "cannot decode; ignored");
            None
        }
    }
}

fn write(posture: &SharedPosture, f: impl FnOnce(&mut PostureIndex)) {
    f(&mut posture.write());
}

/// Feeds one resource's watch events into the index until the stream ends.
/// `connect` makes a new watcher; it is called again, for a full re-list,
/// when a synced watch is lost.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn apply_events<K, S>(
    mut connect: impl FnMut() -> S,
    posture: &SharedPosture,
    sync: &CacheSync,
    counters: &WatchCounters,
    resource: &'static str,
    apply: impl Fn(&mut PostureIndex, K),
    delete: impl Fn(&mut PostureIndex, K),
    replace: impl Fn(&mut PostureIndex, Vec<K>),
) where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Unpin,
{
    let mut stream = connect();
    let mut relist: Vec<K> = Vec::new();
    let mut link = WatchLink::new(resource, counters.clone(), POSTURE_WATCH);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                if link.failed(&error) == Failure::Lost {
                    sync.mark_lost(resource, true);
                    if !relists_by_itself(&error) {
                        stream = connect();
                        relist.clear();
                    }
                }
                continue;
            }
        };
        match event {
            Event::Init => relist.clear(),
            Event::InitApply(object) => relist.push(object),
            Event::InitDone => {
                let objects = relist.len();
                write(posture, |index| replace(index, std::mem::take(&mut relist)));
                sync.mark_synced(resource, Availability::Present);
                sync.mark_lost(resource, false);
                link.listed(objects);
            }
            Event::Apply(object) => write(posture, |index| apply(index, object)),
            Event::Delete(object) => write(posture, |index| delete(index, object)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::namespace;
    use parking_lot::RwLock;

    #[tokio::test]
    async fn relist_is_a_full_reset_and_marks_synced() {
        let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
        let sync = CacheSync::new(&[NAMESPACES]);
        posture.write().apply_namespace(&namespace("gone", &[]));
        let events = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(namespace(
                "shop",
                &[("istio-injection", "enabled")],
            ))),
            Ok(Event::InitDone),
            Ok(Event::Apply(namespace("shop", &[]))),
            Ok(Event::Apply(namespace("new", &[]))),
            Ok(Event::Delete(namespace("new", &[]))),
        ];
        assert!(!sync.is_ready());
        let mut streams = vec![futures::stream::iter(events)];
        apply_namespace_events(
            || streams.pop().unwrap(),
            &posture,
            &sync,
            &WatchCounters::default(),
        )
        .await;
        let index = posture.read();
        assert!(index.namespace("gone").is_none());
        assert!(index.namespace("new").is_none());
        assert_eq!(
            index.namespace("shop").unwrap().label("istio-injection"),
            None
        );
        assert!(sync.is_ready());
    }

    #[tokio::test]
    async fn a_lost_watch_is_counted_and_replaced_by_a_full_relist() {
        let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
        let sync = CacheSync::new(&[NAMESPACES]);
        let counters = WatchCounters::default();
        let first = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(namespace("shop", &[]))),
            Ok(Event::InitDone),
            // The API server goes away: the rest of this stream is dropped.
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Apply(namespace("never-seen", &[]))),
        ];
        let second = vec![
            Err(watcher::Error::NoResourceVersion),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitApply(namespace("orders", &[]))),
            Ok(Event::InitDone),
        ];
        let mut streams = vec![futures::stream::iter(second), futures::stream::iter(first)];
        apply_namespace_events(
            || streams.pop().expect("connected twice at most"),
            &posture,
            &sync,
            &counters,
        )
        .await;
        assert!(streams.is_empty(), "a new watcher after the loss");
        assert!(!sync.is_stale(), "fresh again after the re-list");
        let index = posture.read();
        assert!(index.namespace("orders").is_some());
        assert!(
            index.namespace("shop").is_none(),
            "the re-list is a full reset"
        );
        assert!(index.namespace("never-seen").is_none());
        assert_eq!(counters.errors.get(), 3);
        assert_eq!(counters.restarts.get(), 1);
        assert!(sync.is_ready());
    }

    #[tokio::test]
    async fn failures_before_the_first_sync_are_errors_not_restarts() {
        let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
        let sync = CacheSync::new(&[NAMESPACES]);
        let counters = WatchCounters::default();
        let events = vec![
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitDone),
        ];
        let mut streams = vec![futures::stream::iter(events)];
        apply_namespace_events(|| streams.pop().unwrap(), &posture, &sync, &counters).await;
        assert_eq!((counters.errors.get(), counters.restarts.get()), (1, 0));
        assert!(sync.is_ready());
    }

    #[test]
    fn dynamic_objects_become_typed_policies() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {"mtls": {"mode": "STRICT"}}
        }))
        .unwrap();
        let pa = typed::<PeerAuthentication>(object).unwrap();
        assert_eq!(pa.mode(), crate::istio::MtlsMode::Strict);
        assert_eq!(
            Kind::Sidecar.api_resource("v1alpha3").api_version,
            "networking.istio.io/v1alpha3"
        );
    }

    #[test]
    fn sync_tracks_missing_apis() {
        let sync = CacheSync::new(&[NAMESPACES, PEER_AUTHENTICATIONS]);
        sync.mark_synced(NAMESPACES, Availability::Present);
        assert!(!sync.is_ready());
        sync.mark_synced(PEER_AUTHENTICATIONS, Availability::Missing);
        assert!(sync.is_ready());
        assert_eq!(sync.missing().collect::<Vec<_>>(), [PEER_AUTHENTICATIONS]);
    }
}
