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
use crate::leader::{self, ElectionMetrics, Elector, Lease};

/// How long a leader that stopped renewing keeps the lease.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// Bound on releasing the lease at shutdown.
const RELEASE_BOUND: Duration = Duration::from_secs(3);

pub struct ReportTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Starts the writer in the background. `namespace` holds the Lease; the
/// election retries until it works (see [`crate::leader`]).
pub fn spawn(
    client: Client,
    config: Arc<Config>,
    results: Results,
    namespace: String,
    flavor: Flavor,
    metrics: ElectionMetrics,
) -> ReportTask {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let lease = Lease {
            namespace,
            name: leader::LEASE_NAME.to_owned(),
            identity: leader::identity(),
            duration: LEASE_DURATION,
            purpose: "policy reports",
        };
        let elector = Elector::spawn(client.clone(), lease, metrics);
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
        elector.stop().await;
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
