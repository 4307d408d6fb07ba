//! Leader election on a `coordination.k8s.io` Lease, through
//! `kube-lease-manager`: only the leader writes PolicyReports.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease meshgate's replicas compete for, in the release namespace.
pub const LEASE_NAME: &str = "meshgate-reports";

#[derive(Debug, thiserror::Error)]
#[error("leader election: {0}")]
pub struct ElectionError(#[from] LeaseManagerError);

/// Whether this replica leads. Dropping it (or [`Elector::stop`]) releases
/// the lease so another replica takes over at once.
pub struct Elector {
    leading: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

impl Elector {
    /// Starts competing for `lease` in `namespace` (creating the Lease if
    /// needed). `duration` is how long a silent leader holds it.
    pub async fn start(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
        duration: std::time::Duration,
    ) -> Result<Self, ElectionError> {
        let seconds = duration.as_secs().max(2);
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(seconds)
            // Renewed well before it runs out.
            .with_grace((seconds / 3).max(1))
            .with_field_manager("meshgate")
            .build()
            .await?;
        let (leading, task) = manager.watch().await;
        Ok(Elector { leading, task })
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A receiver that sees every change of leadership.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops competing and releases the lease if held.
    pub async fn stop(self) -> Result<(), ElectionError> {
        drop(self.leading);
        match self.task.await {
            Ok(result) => result.map(drop).map_err(ElectionError::from),
            // The task panicked or was cancelled: the lease runs out alone.
            Err(_) => Ok(()),
        }
    }
}

/// This replica's identity in the lease: the pod name where there is one.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "meshgate".to_owned());
    format!("{host}-{}", std::process::id())
}
