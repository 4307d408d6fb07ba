//! Leader election on a `coordination.k8s.io` Lease, through
//! `kube-lease-manager`: only the leader writes PolicyReports.
//!
//! Taking part can fail at any time: at start-up the Lease's namespace may
//! not exist yet or RBAC may refuse the Lease, later the Lease may be
//! deleted or the API server may be away. None of these is final: the
//! elector retries for ever, with capped, jittered exponential backoff,
//! from a fresh manager (which creates the Lease again). It says so once
//! when election starts failing and once when it works again, and counts
//! every failure in between ([`ElectionMetrics`]).

use std::time::{Duration, Instant};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The Lease meshgate's replicas compete for, in the release namespace.
pub const LEASE_NAME: &str = "meshgate-reports";

/// First wait after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between attempts: a namespace created later is picked up
/// within this (plus jitter), without a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The Lease to compete for, and as whom.
#[derive(Debug, Clone)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a silent leader holds it.
    pub duration: Duration,
    /// What the leader writes, for the log lines ("policy reports").
    pub purpose: &'static str,
}

/// What the elector exposes (`meshgate_leader_election_*`).
#[derive(Debug, Clone, Default)]
pub struct ElectionMetrics {
    /// 1 while this replica cannot take part in the election.
    pub failing: Gauge,
    /// Every failed attempt to create, read or renew the Lease.
    pub failures: Counter,
    /// 1 while this replica leads (writes the reports).
    pub leading: Gauge,
}

impl ElectionMetrics {
    /// Registers the election's series under `meshgate_`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Self {
        let metrics = ElectionMetrics::default();
        let r = registry.sub_registry_with_prefix("meshgate");
        r.register(
            "leader_election_failing",
            "1 while this replica cannot take part in the PolicyReport writer's leader election (Lease namespace missing, Lease refused, API server away); it retries with backoff",
            metrics.failing.clone(),
        );
        r.register(
            "leader_election_failures",
            "Failed attempts to create, read or renew the PolicyReport writer's Lease",
            metrics.failures.clone(),
        );
        r.register(
            "leader_election_leading",
            "1 while this replica leads and writes the PolicyReports",
            metrics.leading.clone(),
        );
        metrics
    }
}

/// Whether this replica leads. [`Elector::stop`] releases the lease so
/// another replica takes over at once.
pub struct Elector {
    leading: watch::Receiver<bool>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts competing for `lease` in the background, for as long as it
    /// takes to succeed.
    pub fn spawn(client: Client, lease: Lease, metrics: ElectionMetrics) -> Self {
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(compete(client, lease, metrics, leading_tx, stopped));
        Elector {
            leading,
            stop,
            task,
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// A receiver that sees every change of leadership.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Stops competing and releases the lease if held.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        // A panicked task has nothing to release: the lease runs out alone.
        let _ = self.task.await;
    }
}

/// The election loop: a manager per attempt, kept while it works.
async fn compete(
    client: Client,
    lease: Lease,
    metrics: ElectionMetrics,
    leading: watch::Sender<bool>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut health = Health::new(&lease, metrics.clone());
    let mut backoff = MIN_BACKOFF;
    loop {
        let built = tokio::select! {
            _ = &mut stopped => return,
            built = manager(client.clone(), &lease) => built,
        };
        match built {
            Ok(manager) => {
                let mut follower = Follower {
                    manager: &manager,
                    leading: &leading,
                    metrics: &metrics,
                    health: &mut health,
                    settle: lease.duration,
                };
                let outcome = follower.follow(&mut stopped, &mut backoff).await;
                // Failing or stopped, this replica no longer writes.
                let _ = leading.send(false);
                metrics.leading.set(0);
                match outcome {
                    Err(error) => health.fails(&error),
                    Ok(()) => {
                        if let Err(error) = manager.release().await {
                            tracing::warn!(%error, "cannot release the lease; it runs out by itself");
                        }
                        return;
                    }
                }
            }
            Err(error) => health.fails(&error),
        }
        let wait = jittered(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One manager's run.
struct Follower<'a> {
    manager: &'a LeaseManager,
    leading: &'a watch::Sender<bool>,
    metrics: &'a ElectionMetrics,
    health: &'a mut Health,
    /// How long a manager must run without error to count as working when
    /// leadership does not change meanwhile (a follower's usual state).
    settle: Duration,
}

impl Follower<'_> {
    /// Publishes every change of leadership until the manager fails (`Err`)
    /// or the elector is stopped (`Ok`). Election counts as working at the
    /// first change or after `settle` without error, not when the manager
    /// is built: a Lease that can be created but not renewed would
    /// otherwise log a recovery and a failure on every retry.
    async fn follow(
        &mut self,
        stopped: &mut oneshot::Receiver<()>,
        backoff: &mut Duration,
    ) -> Result<(), kube_lease_manager::LeaseManagerError> {
        let settled = tokio::time::sleep(self.settle);
        tokio::pin!(settled);
        let mut works = false;
        loop {
            tokio::select! {
                _ = &mut *stopped => return Ok(()),
                () = &mut settled, if !works => {
                    works = true;
                    self.health.works();
                }
                changed = self.manager.changed() => {
                    let leads = changed?;
                    if !std::mem::replace(&mut works, true) {
                        self.health.works();
                    }
                    *backoff = MIN_BACKOFF;
                    self.metrics.leading.set(i64::from(leads));
                    let _ = self.leading.send(leads);
                }
            }
        }
    }
}

/// A manager for `lease`; building it creates the Lease if it is missing.
async fn manager(
    client: Client,
    lease: &Lease,
) -> Result<LeaseManager, kube_lease_manager::LeaseManagerError> {
    let seconds = lease.duration.as_secs().max(2);
    LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(seconds)
        // Renewed well before it runs out.
        .with_grace((seconds / 3).max(1))
        // One field manager per replica: the Lease is taken with
        // server-side apply, and apply conflicts exist only between
        // different managers. A manager shared by the replicas let each one
        // overwrite the holder and believe it leads (two writers at once).
        .with_field_manager(format!("meshgate-{}", lease.identity))
        .build()
        .await
}

/// Whether election works, logged on each change only.
struct Health {
    namespace: String,
    name: String,
    purpose: &'static str,
    metrics: ElectionMetrics,
    failing_since: Option<Instant>,
}

impl Health {
    fn new(lease: &Lease, metrics: ElectionMetrics) -> Self {
        Health {
            namespace: lease.namespace.clone(),
            name: lease.name.clone(),
            purpose: lease.purpose,
            metrics,
            failing_since: None,
        }
    }

    fn fails(&mut self, error: &kube_lease_manager::LeaseManagerError) {
        self.metrics.failures.inc();
        self.metrics.failing.set(1);
        if self.failing_since.is_some() {
            tracing::debug!(%error, "leader election still failing; retrying");
            return;
        }
        self.failing_since = Some(Instant::now());
        tracing::error!(
            %error,
            namespace = %self.namespace,
            lease = %self.name,
            "leader election failing: no {} from this replica until it works; retrying with backoff (needs the namespace, and get/create/patch on leases there)",
            self.purpose
        );
    }

    fn works(&mut self) {
        self.metrics.failing.set(0);
        match self.failing_since.take() {
            Some(since) => tracing::info!(
                namespace = %self.namespace,
                lease = %self.name,
                failing_seconds = since.elapsed().as_secs_f64(),
                "leader election works again; competing to write {}",
                self.purpose
            ),
            None => tracing::info!(
                namespace = %self.namespace,
                lease = %self.name,
                "competing to write {}",
                self.purpose
            ),
        }
    }
}

/// `base` scaled by a random factor in [0.5, 1.0]: replicas that failed
/// together do not retry together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// This replica's identity in the lease: the pod name where there is one.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "meshgate".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_and_the_whole_of_the_backoff() {
        for _ in 0..1000 {
            let wait = jittered(MAX_BACKOFF);
            assert!(wait >= MAX_BACKOFF / 2 && wait <= MAX_BACKOFF, "{wait:?}");
        }
    }
}
