//! The engine's loop: debounce, the first pass once every cache has synced,
//! the periodic full re-judge, and publishing the results. No pass needs
//! re-checking: the posture index is fed by the same watches, before the
//! engine.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::posture::SharedPosture;
use crate::subject::Kind;

use super::engine::{Change, Engine};
use super::{Results, Snapshot};

/// Changes arriving within this window are judged in one pass.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Judges the objects fed to `engine` once (`serve --state-from`).
pub fn spawn_static(mut engine: Engine, posture: SharedPosture) -> Results {
    engine.judge(&posture);
    let (tx, rx) = watch::channel(Arc::new(engine.snapshot(true)));
    Results::fixed(rx, tx)
}

pub type Ready = Box<dyn Fn(&HashSet<Kind>) -> bool + Send>;

/// The engine's loop, separate from the watchers so tests can drive it.
pub struct Runner {
    pub engine: Engine,
    pub posture: SharedPosture,
    pub interval: Duration,
    /// Whether every cache has synced, given the kinds the engine listed.
    pub ready: Ready,
}

impl Runner {
    pub fn new(engine: Engine, posture: SharedPosture, interval: Duration, ready: Ready) -> Self {
        Runner {
            engine,
            posture,
            interval,
            ready,
        }
    }

    pub async fn run(
        mut self,
        mut changes: mpsc::Receiver<Change>,
        results: watch::Sender<Arc<Snapshot>>,
    ) {
        let mut listed = HashSet::new();
        let mut complete = false;
        let mut full = tokio::time::interval(self.interval);
        full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        full.tick().await;
        // Expired exemptions and changed exemption objects.
        let mut exemptions = tokio::time::interval(crate::background::exemptions::TICK);
        exemptions.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    self.take(change, &mut listed);
                    self.debounce(&mut changes, &mut listed).await;
                }
                _ = full.tick() => self.engine.mark_all(),
                _ = exemptions.tick(), if complete => crate::background::exemptions::tick(
                    &mut self.engine,
                    &self.posture,
                    k8s_openapi::jiff::Timestamp::now(),
                ),
                _ = tokio::time::sleep(DEBOUNCE), if !complete => {}
            }
            if !complete {
                if !(self.ready)(&listed) {
                    continue;
                }
                complete = true;
                self.engine.mark_all();
                tracing::info!(
                    objects = self.engine.len(),
                    "background audit: caches synced, judging everything"
                );
            }
            // A deletion alone changes the verdicts without a pass.
            if self.engine.has_work() {
                match pass(self.engine, self.posture.clone()).await {
                    Some(engine) => self.engine = engine,
                    None => return,
                }
            }
            publish(&results, self.engine.snapshot(true));
        }
    }

    /// Takes the changes arriving within [`DEBOUNCE`], for one pass.
    async fn debounce(&mut self, changes: &mut mpsc::Receiver<Change>, listed: &mut HashSet<Kind>) {
        let deadline = Instant::now() + DEBOUNCE;
        while let Ok(Some(change)) = tokio::time::timeout_at(deadline, changes.recv()).await {
            self.take(change, listed);
        }
    }
}

/// Judges what is dirty on a blocking thread; `None` if the pass panicked.
async fn pass(mut engine: Engine, posture: SharedPosture) -> Option<Engine> {
    let started = std::time::Instant::now();
    let judged = tokio::task::spawn_blocking(move || {
        engine.judge(&posture);
        // This blocking-pool thread may idle next: its garbage goes back to
        // the OS now.
        crate::allocator::release_freed_memory();
        engine
    })
    .await;
    match judged {
        Ok(engine) => {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "background audit pass"
            );
            Some(engine)
        }
        Err(error) => {
            tracing::error!(%error, "background audit: a pass panicked; stopping");
            None
        }
    }
}

/// Publishes `snapshot` when a verdict, completeness or the earliest
/// certificate expiry changed.
fn publish(results: &watch::Sender<Arc<Snapshot>>, snapshot: Snapshot) {
    results.send_if_modified(|old| {
        let modified = old.generation != snapshot.generation
            || !old.complete
            || old.earliest_certificate_expiry != snapshot.earliest_certificate_expiry;
        if modified {
            *old = Arc::new(snapshot);
        }
        modified
    });
}

impl Runner {
    /// Applies a change; a completed list marks its kind synced (it comes
    /// after the listed objects on the same channel).
    fn take(&mut self, change: Change, listed: &mut HashSet<Kind>) {
        if let Change::Listed { kind, .. } = &change {
            listed.insert(*kind);
        }
        self.engine.apply(change);
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::RwLock;

    use crate::config::Config;

    use serde_json::json;

    use std::collections::BTreeSet;

    use super::*;
    use crate::background::engine::key;
    use crate::posture::PostureIndex;

    fn deployment() -> Change {
        Change::Applied {
            kind: Kind::Deployment,
            object: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"selector": {}, "template": {"spec": {
                    "hostNetwork": true, "containers": [{"name": "app", "image": "a"}]}}}
            }),
        }
    }

    #[tokio::test]
    async fn the_runner_judges_once_synced_then_follows_changes() {
        let posture = Arc::new(RwLock::new(PostureIndex::default()));
        let engine = Engine::new(Arc::new(Config::default()));
        let ready: Ready = Box::new(|listed| listed.contains(&Kind::Deployment));
        let runner = Runner::new(engine, posture, Duration::from_secs(600), ready);
        let (changes, receiver) = mpsc::channel(16);
        let (results_tx, results_rx) = watch::channel(Arc::new(Snapshot::default()));
        let mut results = Results::new(results_rx);
        tokio::spawn(runner.run(receiver, results_tx));

        changes.send(deployment()).await.unwrap();
        // Nothing is published before the kind has listed.
        tokio::time::sleep(DEBOUNCE * 3).await;
        assert!(!results.snapshot().complete);

        let listed = Change::Listed {
            kind: Kind::Deployment,
            present: BTreeSet::from([key(Kind::Deployment, "shop", "web")]),
        };
        changes.send(listed).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), results.changed())
            .await
            .unwrap()
            .unwrap();
        let snapshot = results.snapshot();
        assert!(snapshot.complete);
        assert_eq!(snapshot.verdicts.len(), 1);

        changes
            .send(Change::Deleted {
                kind: Kind::Deployment,
                namespace: "shop".into(),
                name: "web".into(),
            })
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), results.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(results.snapshot().verdicts.is_empty());
    }
}
