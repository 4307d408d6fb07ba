//! Watches MeshExemptions and ClusterMeshExemptions into the posture index,
//! with the posture watchers' event handling (`reflector::apply_events`).
//! Unlike an Istio CRD, a missing exemption CRD is not a posture problem:
//! it means "no exemption objects", is logged once, and readiness does not
//! wait for it (the resource is marked synced and present); nor for an API
//! that cannot be probed (a 403 from RBAC that predates the CRDs).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::types::{ClusterMeshExemption, MeshExemption};
use crate::metrics::{Metrics, WatchCounters};
use crate::posture::reflector::{apply_events, typed, CacheSync, IstioKind};
use crate::posture::{Availability, PostureIndex, SharedPosture, Store};

impl IstioKind for MeshExemption {
    fn slot(index: &mut PostureIndex) -> &mut dyn Store<Self> {
        &mut index.exemptions
    }
}

impl IstioKind for ClusterMeshExemption {
    fn slot(index: &mut PostureIndex) -> &mut dyn Store<Self> {
        &mut index.exemptions
    }
}

/// How long to wait before looking again for a CRD that is not installed.
const MISSING_RETRY: Duration = Duration::from_secs(30);

pub fn spawn(client: &Client, posture: &SharedPosture, sync: &Arc<CacheSync>, metrics: &Metrics) {
    for_kind::<MeshExemption>(client, posture, sync, metrics);
    for_kind::<ClusterMeshExemption>(client, posture, sync, metrics);
}

fn for_kind<T: IstioKind>(
    client: &Client,
    posture: &SharedPosture,
    sync: &Arc<CacheSync>,
    metrics: &Metrics,
) {
    tokio::spawn(watch::<T>(
        client.clone(),
        posture.clone(),
        sync.clone(),
        metrics.watch_counters(T::resource()),
    ));
}

/// Watches one exemption kind once its CRD is served.
pub async fn watch<T: IstioKind>(
    client: Client,
    posture: SharedPosture,
    sync: Arc<CacheSync>,
    counters: WatchCounters,
) {
    let (mut said_missing, mut said_unreachable) = (false, false);
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
                    // Cluster-scoped objects have no namespace.
                    |index, obj| {
                        let ns = obj.metadata.namespace.as_deref().unwrap_or_default();
                        if let Some(name) = obj.metadata.name.as_deref() {
                            T::slot(index).delete(ns, name);
                        }
                    },
                    |index, all| {
                        T::slot(index).replace_from(&mut all.into_iter().filter_map(typed::<T>))
                    },
                )
                .await;
                return;
            }
            Ok(None) => {
                if !std::mem::replace(&mut said_missing, true) {
                    tracing::info!(
                        resource = T::resource(),
                        "exemption CRD not installed: no exemption objects apply (config-file exemptions still do); meshgate watches it as soon as it exists"
                    );
                }
                sync.mark_synced(T::resource(), Availability::Present);
                tokio::time::sleep(MISSING_RETRY).await;
            }
            Err(error) => {
                counters.errors.inc();
                if !std::mem::replace(&mut said_unreachable, true) {
                    tracing::warn!(resource = T::resource(), %error, "cannot probe the API (RBAC?); no exemption objects apply until it works; retrying");
                }
                // Readiness never waits for exemptions: without them the
                // judging is stricter, never looser (e.g. a chart whose RBAC
                // predates them answers 403 here).
                sync.mark_synced(T::resource(), Availability::Present);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}
