//! The posture index's sinks of the shared watches ([`crate::watch`]): each
//! kind the index holds is typed from the watched object and applied,
//! reflector-style. A re-list replaces the kind's whole content at once, so
//! objects deleted while the watch was down never linger. When no version
//! of an Istio kind is served (the CRDs are not installed) the index says so
//! and the posture rules report "cannot be verified" instead of passing.
//! A lost watch marks the cache stale (`CacheSync::is_stale`) until it has
//! listed again; the watch logs and counts the outage, once for every sink.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use parking_lot::RwLock;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::exemption::types::{ClusterMeshExemption, MeshExemption};
use crate::istio::{
    AuthorizationPolicy, DestinationRule, PeerAuthentication, ServiceEntry, Sidecar,
};
use crate::kinds::{Kind, TableKind, TABLE};
use crate::watch::{Seen, Sink};

use super::{Availability, PostureIndex, SharedPosture, Store};

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

/// Every resource the posture index holds (the table's `posture` rows), for
/// readiness.
pub fn all() -> Vec<&'static str> {
    TABLE
        .iter()
        .filter(|row| row.posture)
        .map(|row| row.resource)
        .collect()
}

/// A kind the posture index holds, typed from the watched object.
pub trait Indexed: DeserializeOwned + Send + Sync + 'static {
    fn kind() -> Kind;
    fn apply(index: &mut PostureIndex, object: Self);
    fn delete(index: &mut PostureIndex, meta: &ObjectMeta);
    /// A re-list: `all` replaces the kind's content.
    fn replace(index: &mut PostureIndex, all: Vec<Self>);
    /// Records whether the API exists: the security kinds feed the posture
    /// rules, which say "cannot be verified" without them.
    fn set_availability(_index: &mut PostureIndex, _availability: Availability) {}
    /// What a kind whose API is not served counts as: missing (the posture
    /// rules cannot verify), unless its absence only makes judging stricter.
    fn when_missing() -> Availability {
        Availability::Missing
    }
}

impl Indexed for Namespace {
    fn kind() -> Kind {
        Kind::Namespace
    }
    fn apply(index: &mut PostureIndex, object: Self) {
        index.apply_namespace(&object);
    }
    fn delete(index: &mut PostureIndex, meta: &ObjectMeta) {
        if let Some(name) = meta.name.as_deref() {
            index.delete_namespace(name);
        }
    }
    fn replace(index: &mut PostureIndex, all: Vec<Self>) {
        index.replace_namespaces(&all);
    }
}

macro_rules! indexed_istio_kind {
    ($($t:ty => $field:ident),* $(,)?) => {$(
        impl Indexed for $t {
            fn kind() -> Kind {
                <$t as TableKind>::KIND
            }
            fn apply(index: &mut PostureIndex, object: Self) {
                Store::apply(&mut index.$field, object);
            }
            fn delete(index: &mut PostureIndex, meta: &ObjectMeta) {
                if let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) {
                    Store::<$t>::delete(&mut index.$field, ns, name);
                }
            }
            fn replace(index: &mut PostureIndex, all: Vec<Self>) {
                index.$field.replace_from(&mut all.into_iter());
            }
            fn set_availability(index: &mut PostureIndex, availability: Availability) {
                if Self::kind().row().group == "security.istio.io" {
                    index.security_api = availability;
                }
            }
        }
    )*};
}

indexed_istio_kind!(
    PeerAuthentication => peer_authentications,
    AuthorizationPolicy => authorization_policies,
    DestinationRule => destination_rules,
    ServiceEntry => service_entries,
    Sidecar => sidecars,
);

/// The posture index's sink of `kind`'s watch; `None` for a kind the index
/// does not hold.
pub fn sink(kind: Kind, posture: &SharedPosture, sync: &Arc<CacheSync>) -> Option<Box<dyn Sink>> {
    fn boxed<T: Indexed>(posture: &SharedPosture, sync: &Arc<CacheSync>) -> Option<Box<dyn Sink>> {
        Some(Box::new(PostureSink::<T>::new(
            posture.clone(),
            sync.clone(),
        )))
    }
    match kind {
        Kind::Namespace => boxed::<Namespace>(posture, sync),
        Kind::PeerAuthentication => boxed::<PeerAuthentication>(posture, sync),
        Kind::AuthorizationPolicy => boxed::<AuthorizationPolicy>(posture, sync),
        Kind::DestinationRule => boxed::<DestinationRule>(posture, sync),
        Kind::ServiceEntry => boxed::<ServiceEntry>(posture, sync),
        Kind::Sidecar => boxed::<Sidecar>(posture, sync),
        Kind::MeshExemption => boxed::<MeshExemption>(posture, sync),
        Kind::ClusterMeshExemption => boxed::<ClusterMeshExemption>(posture, sync),
        _ => None,
    }
}

/// Feeds one kind's watch into the index and the cache's readiness.
pub struct PostureSink<T> {
    posture: SharedPosture,
    sync: Arc<CacheSync>,
    /// The objects of a re-list in progress.
    relist: Vec<T>,
}

impl<T: Indexed> PostureSink<T> {
    pub fn new(posture: SharedPosture, sync: Arc<CacheSync>) -> Self {
        PostureSink {
            posture,
            sync,
            relist: Vec::new(),
        }
    }

    fn seen(&mut self, seen: Seen<'_>) {
        let resource = T::kind().row().resource;
        match seen {
            Seen::Relisting => self.relist.clear(),
            Seen::Listing(object) => self.relist.extend(typed::<T>(object)),
            Seen::Listed => {
                let all = std::mem::take(&mut self.relist);
                let mut index = self.posture.write();
                // Available only once listed: until then the index would
                // look empty rather than unverifiable.
                T::set_availability(&mut index, Availability::Present);
                T::replace(&mut index, all);
                drop(index);
                self.sync.mark_synced(resource, Availability::Present);
                self.sync.mark_lost(resource, false);
            }
            Seen::Applied(object) => {
                if let Some(object) = typed::<T>(object) {
                    T::apply(&mut self.posture.write(), object);
                }
            }
            Seen::Deleted(object) => T::delete(&mut self.posture.write(), &object.metadata),
            Seen::Missing => {
                let mut index = self.posture.write();
                T::replace(&mut index, Vec::new());
                T::set_availability(&mut index, T::when_missing());
                drop(index);
                self.sync.mark_synced(resource, T::when_missing());
            }
            Seen::Lost => self.sync.mark_lost(resource, true),
        }
    }
}

impl<T: Indexed> Sink for PostureSink<T> {
    fn take<'a>(&'a mut self, seen: Seen<'a>) -> BoxFuture<'a, bool> {
        self.seen(seen);
        Box::pin(std::future::ready(true))
    }
}

/// A watched object as its typed struct; one that does not parse is logged
/// and skipped (it could only come from a broken CRD schema). Watching
/// `Api<T>` directly would fail the whole list on such an object, and the
/// cache would never sync.
pub fn typed<T: Indexed>(object: &DynamicObject) -> Option<T> {
    match serde_json::to_value(object).and_then(crate::strict::from_value) {
        Ok(typed) => Some(typed),
        Err(error) => {
            let name = object.metadata.name.as_deref().unwrap_or_default();
            let resource = T::kind().row().resource;
            tracing::warn!(resource, %name, %error, "cannot decode; ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::namespace;

    fn dynamic<T: serde::Serialize>(object: &T) -> DynamicObject {
        serde_json::from_value(serde_json::to_value(object).unwrap()).unwrap()
    }

    fn fresh() -> (SharedPosture, Arc<CacheSync>) {
        let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
        let sync = Arc::new(CacheSync::new(&[NAMESPACES, PEER_AUTHENTICATIONS]));
        (posture, sync)
    }

    #[test]
    fn relist_is_a_full_reset_and_marks_synced() {
        let (posture, sync) = fresh();
        posture.write().apply_namespace(&namespace("gone", &[]));
        let mut sink = PostureSink::<Namespace>::new(posture.clone(), sync.clone());
        let shop = dynamic(&namespace("shop", &[("istio-injection", "enabled")]));
        let (plain, new) = (
            dynamic(&namespace("shop", &[])),
            dynamic(&namespace("new", &[])),
        );
        for seen in [
            Seen::Relisting,
            Seen::Listing(&shop),
            Seen::Listed,
            Seen::Applied(&plain),
            Seen::Applied(&new),
            Seen::Deleted(&new),
        ] {
            sink.seen(seen);
        }
        let index = posture.read();
        assert!(index.namespace("gone").is_none());
        assert!(index.namespace("new").is_none());
        assert_eq!(
            index.namespace("shop").unwrap().label("istio-injection"),
            None
        );
        assert!(sync.states().any(|(r, synced)| r == NAMESPACES && synced));
    }

    #[test]
    fn a_lost_watch_is_stale_until_listed_again() {
        let (posture, sync) = fresh();
        let mut sink = PostureSink::<Namespace>::new(posture.clone(), sync.clone());
        let shop = dynamic(&namespace("shop", &[]));
        sink.seen(Seen::Relisting);
        sink.seen(Seen::Listing(&shop));
        sink.seen(Seen::Listed);
        sink.seen(Seen::Lost);
        assert!(sync.is_stale());
        assert!(
            posture.read().namespace("shop").is_some(),
            "kept while lost"
        );
        sink.seen(Seen::Relisting);
        sink.seen(Seen::Listed);
        assert!(!sync.is_stale(), "fresh again after the re-list");
        assert!(posture.read().namespace("shop").is_none(), "a full reset");
    }

    #[test]
    fn a_missing_api_is_unverifiable_until_listed() {
        let (posture, sync) = fresh();
        let mut sink = PostureSink::<PeerAuthentication>::new(posture.clone(), sync.clone());
        sink.seen(Seen::Missing);
        assert_eq!(posture.read().security_api, Availability::Missing);
        assert_eq!(sync.missing().collect::<Vec<_>>(), [PEER_AUTHENTICATIONS]);
        sink.seen(Seen::Relisting);
        sink.seen(Seen::Listed);
        assert_eq!(posture.read().security_api, Availability::Present);
        assert!(sink_for_every_posture_kind());
    }

    fn sink_for_every_posture_kind() -> bool {
        let (posture, sync) = fresh();
        Kind::ALL
            .into_iter()
            .all(|kind| sink(kind, &posture, &sync).is_some() == kind.row().posture)
    }

    #[test]
    fn dynamic_objects_become_typed_policies() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "shop"},
            "spec": {"mtls": {"mode": "STRICT"}}
        }))
        .unwrap();
        let pa = typed::<PeerAuthentication>(&object).unwrap();
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
