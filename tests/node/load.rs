//! A steady apply loop through the webhook: server-side applies of one
//! Deployment (0 replicas: nothing is scheduled) whose annotation changes
//! each time, so every apply is an UPDATE the API server sends to meshgate.
//! Bounded in time and count; every failure is kept with its message.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// What the loop did: each failure with when it was sent (from the loop's
/// start) and its error.
#[derive(Debug, Default)]
pub struct Applied {
    pub applies: u64,
    pub failures: Vec<(Duration, String)>,
}

pub struct ApplyLoop {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Applied>,
    started: Instant,
}

/// One apply may take the webhook's 5 s timeout and a retry; never longer.
const APPLY_BOUND: Duration = Duration::from_secs(15);

impl ApplyLoop {
    /// Applies `deployment` (a manifest with `metadata.name`/`namespace`)
    /// every `period` until [`ApplyLoop::stop`], for at most `bound`.
    pub fn start(
        kubeconfig: PathBuf,
        deployment: serde_json::Value,
        period: Duration,
        bound: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let timing = Timing {
                started,
                period,
                bound,
            };
            runtime.block_on(run(kubeconfig, deployment, timing, stopped))
        });
        ApplyLoop {
            stop,
            handle,
            started,
        }
    }

    /// `at` as the failures' times count it.
    pub fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.started)
    }

    pub fn stop(self) -> Applied {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("apply loop panicked")
    }
}

struct Timing {
    started: Instant,
    period: Duration,
    bound: Duration,
}

async fn run(
    kubeconfig: PathBuf,
    mut deployment: serde_json::Value,
    Timing {
        started,
        period,
        bound,
    }: Timing,
    stop: Arc<AtomicBool>,
) -> Applied {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    let client = Client::try_from(config).expect("client");
    let name = deployment["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let namespace = deployment["metadata"]["namespace"]
        .as_str()
        .expect("namespace")
        .to_owned();
    let api: Api<Deployment> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("meshgate-node-test").force();
    let max_applies = (bound.as_millis() / period.as_millis().max(1)) as u64 + 1;
    let mut ticker = tokio::time::interval(period);
    let mut applied = Applied::default();
    while !stop.load(Ordering::Relaxed)
        && started.elapsed() < bound
        && applied.applies < max_applies
    {
        ticker.tick().await;
        applied.applies += 1;
        deployment["metadata"]["annotations"]["meshgate.io/node-test-seq"] =
            serde_json::Value::String(applied.applies.to_string());
        let at = started.elapsed();
        match tokio::time::timeout(
            APPLY_BOUND,
            api.patch(&name, &params, &Patch::Apply(&deployment)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => applied.failures.push((at, error.to_string())),
            Err(_) => applied
                .failures
                .push((at, format!("no answer within {APPLY_BOUND:?}"))),
        }
    }
    applied
}
