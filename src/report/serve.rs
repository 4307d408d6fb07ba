//! `meshgate serve`'s report writer: competes for the lease, writes while
//! it leads, releases the lease on shutdown.

use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::types::Flavor;
use super::writer::{self, Writer};
use crate::background::Results;
use crate::config::Config;
use crate::leader::{self, Elector};

/// How long a leader that stopped renewing keeps the lease.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// Bound on releasing the lease at shutdown.
const RELEASE_BOUND: Duration = Duration::from_secs(3);

pub struct ReportTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the writer in the background. `namespace` holds the Lease.
pub fn spawn(
    client: Client,
    config: Arc<Config>,
    results: Results,
    namespace: String,
    flavor: Flavor,
) -> ReportTask {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let identity = leader::identity();
        let elector = match Elector::start(
            client.clone(),
            &namespace,
            leader::LEASE_NAME,
            &identity,
            LEASE_DURATION,
        )
        .await
        {
            Ok(elector) => elector,
            Err(error) => {
                tracing::error!(%error, "cannot take part in leader election; not writing policy reports");
                return;
            }
        };
        tracing::info!(%identity, lease = leader::LEASE_NAME, "competing to write policy reports");
        let writing = writer::run(
            Writer::new(client, flavor),
            config,
            results,
            elector.leading(),
        );
        tokio::select! {
            () = writing => {}
            _ = stopped => {}
        }
        if let Err(error) = elector.stop().await {
            tracing::warn!(%error, "cannot release the lease; it runs out by itself");
        }
    });
    ReportTask { stop, task }
}

impl ReportTask {
    /// Stops writing and releases the lease (bounded).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(RELEASE_BOUND, self.task).await;
    }
}
