//! The cluster feeder: kube-runtime watchers keep the posture index current,
//! reflector-style. A re-list (`Init` … `InitDone`) replaces the kind's whole
//! content at once, so objects deleted while the watch was down never linger.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use super::SharedPosture;

/// Which watched resources have completed their first list. `/readyz` turns
/// ready only when all have.
#[derive(Debug)]
pub struct CacheSync {
    resources: Vec<(&'static str, AtomicBool)>,
}

impl CacheSync {
    pub fn new(resources: &[&'static str]) -> Self {
        CacheSync {
            resources: resources
                .iter()
                .map(|r| (*r, AtomicBool::new(false)))
                .collect(),
        }
    }

    /// State loaded from files is complete from the start.
    pub fn all_synced(resources: &[&'static str]) -> Self {
        let sync = Self::new(resources);
        for (_, flag) in &sync.resources {
            flag.store(true, Ordering::Release);
        }
        sync
    }

    pub fn mark_synced(&self, resource: &str) {
        for (name, flag) in &self.resources {
            if *name == resource {
                flag.store(true, Ordering::Release);
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        self.resources
            .iter()
            .all(|(_, f)| f.load(Ordering::Acquire))
    }

    /// Each resource and whether it has synced, for readiness details and metrics.
    pub fn states(&self) -> impl Iterator<Item = (&'static str, bool)> + '_ {
        self.resources
            .iter()
            .map(|(name, f)| (*name, f.load(Ordering::Acquire)))
    }
}

pub const NAMESPACES: &str = "namespaces";

/// Watches Namespaces into the index until the stream ends (it does not:
/// errors are retried with backoff).
pub async fn watch_namespaces(client: Client, posture: SharedPosture, sync: Arc<CacheSync>) {
    let api: Api<Namespace> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    apply_events(stream, posture, sync).await;
}

async fn apply_events(
    mut stream: impl futures::Stream<Item = Result<Event<Namespace>, watcher::Error>> + Unpin,
    posture: SharedPosture,
    sync: Arc<CacheSync>,
) {
    let mut relist: Vec<Namespace> = Vec::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, resource = NAMESPACES, "watch failed, retrying");
                continue;
            }
        };
        let mut index = posture.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Init => relist.clear(),
            Event::InitApply(ns) => relist.push(ns),
            Event::InitDone => {
                index.replace_namespaces(&relist);
                relist = Vec::new();
                drop(index);
                sync.mark_synced(NAMESPACES);
                tracing::info!(resource = NAMESPACES, "cache synced");
            }
            Event::Apply(ns) => index.apply_namespace(&ns),
            Event::Delete(ns) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    index.delete_namespace(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::namespace;
    use std::sync::RwLock;

    #[tokio::test]
    async fn relist_is_a_full_reset_and_marks_synced() {
        let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
        let sync = Arc::new(CacheSync::new(&[NAMESPACES]));
        posture
            .write()
            .unwrap()
            .apply_namespace(&namespace("gone", &[]));
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
        apply_events(futures::stream::iter(events), posture.clone(), sync.clone()).await;
        let index = posture.read().unwrap();
        assert!(index.namespace("gone").is_none());
        assert!(index.namespace("new").is_none());
        assert_eq!(
            index.namespace("shop").unwrap().label("istio-injection"),
            None
        );
        assert!(sync.is_ready());
    }
}
