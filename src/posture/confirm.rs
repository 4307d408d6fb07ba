//! Confirm-on-deny. `kubectl apply -f dir/`, Helm and GitOps tools send a
//! namespace's baseline policies and its workloads within milliseconds, faster
//! than a watch delivers them. Before a posture-based denial is sent, the
//! namespace's policies are read from the API server directly (bounded by a
//! short timeout); on timeout or error the cached answer stands.

use std::time::Duration;

use futures::future::try_join_all;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};

use crate::istio::{AuthorizationPolicy, PeerAuthentication};

use super::reflector::{typed, Indexed};
use super::PostureIndex;

#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("reading policies from the API server took longer than {0:?}")]
    Timeout(Duration),
    #[error("reading policies from the API server: {0}")]
    Kube(#[from] kube::Error),
}

pub struct Confirmer {
    client: Client,
    timeout: Duration,
}

impl Confirmer {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Confirmer { client, timeout }
    }

    /// The current PeerAuthentications and AuthorizationPolicies of
    /// `namespaces`, straight from the API server.
    pub async fn read(&self, namespaces: &[String]) -> Result<Fresh, ConfirmError> {
        let read = async {
            let (pas, aps) = futures::try_join!(
                try_join_all(
                    namespaces
                        .iter()
                        .map(|ns| self.list::<PeerAuthentication>(ns))
                ),
                try_join_all(
                    namespaces
                        .iter()
                        .map(|ns| self.list::<AuthorizationPolicy>(ns))
                ),
            )?;
            Ok::<_, kube::Error>(Fresh {
                namespaces: namespaces.to_vec(),
                peer_authentications: pas.into_iter().flatten().collect(),
                authorization_policies: aps.into_iter().flatten().collect(),
            })
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConfirmError::Timeout(self.timeout)),
        }
    }

    async fn list<T: Indexed>(&self, namespace: &str) -> Result<Vec<T>, kube::Error> {
        let listed = crate::watch::at_newest_served(T::kind(), |resource| async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &resource);
            api.list(&ListParams::default()).await
        })
        .await?;
        match listed {
            Some(list) => Ok(list.items.iter().filter_map(typed::<T>).collect()),
            // No version served: the CRDs are gone; nothing to confirm with.
            None => Err(kube::Error::Api(Box::new(kube::core::Status {
                code: 404,
                message: format!("{} is not served", T::kind().row().resource),
                ..Default::default()
            }))),
        }
    }
}

/// Policies read directly from the API server.
#[derive(Debug, Default)]
pub struct Fresh {
    pub namespaces: Vec<String>,
    pub peer_authentications: Vec<PeerAuthentication>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
}

impl PostureIndex {
    /// A small index for re-judging a workload: the cached namespaces named in
    /// `fresh`, with their policies replaced by the fresh ones.
    pub fn overlay(&self, fresh: Fresh) -> PostureIndex {
        let mut index = PostureIndex::default();
        for ns in &fresh.namespaces {
            if let Some(info) = self.namespace(ns) {
                index.set_namespace(ns.clone(), info.clone());
            }
        }
        index
            .peer_authentications
            .replace(fresh.peer_authentications);
        index
            .authorization_policies
            .replace(fresh.authorization_policies);
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::namespace;

    #[test]
    fn overlay_keeps_namespace_labels_and_uses_fresh_policies() {
        let mut index = PostureIndex::default();
        index.apply_namespace(&namespace("shop", &[("istio-injection", "enabled")]));
        index.apply_namespace(&namespace("other", &[]));
        let pa: PeerAuthentication = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "default", "namespace": "shop"}, "spec": {"mtls": {"mode": "STRICT"}}
        }))
        .unwrap();
        let overlay = index.overlay(Fresh {
            namespaces: vec!["shop".into(), "istio-system".into()],
            peer_authentications: vec![pa],
            authorization_policies: vec![],
        });
        assert_eq!(
            overlay.namespace("shop").unwrap().label("istio-injection"),
            Some("enabled")
        );
        assert!(overlay.namespace("other").is_none());
        assert!(overlay
            .effective_mtls("shop", None, "istio-system")
            .is_strict());
    }
}
