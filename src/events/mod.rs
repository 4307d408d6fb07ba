//! Kubernetes Events (`events.k8s.io/v1`, through kube-runtime's
//! [`Recorder`], which aggregates repeats into a series) on what meshgate
//! finds, so `kubectl describe` and event exporters see it, not only the log.
//!
//! ```text
//! /validate (admitted with audit-mode findings) ─ try_send ─┐ bounded queue:
//!                                                          │ full = dropped, counted
//! background audit results ─ transitions (leader only) ────┤
//!                                                          ▼
//!                            token bucket (events.maxPerMinute, burst) ─▶ Recorder
//! ```
//!
//! The webhook never waits on an Event: it queues the review's body (a
//! reference-counted buffer, no copy) and answers. The worker reads the
//! object's name and uid from it. Background Events are told by one replica,
//! the holder of the Lease `meshgate-events`, and only on a transition:
//! newly failing (a rule the object did not violate before) or newly passing
//! (no violation left).

pub mod describe;
mod limits;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::admission::{Outcome, Reviewed};
use crate::background::{Results, Verdict};
use crate::config::Mode;
use crate::leader::{self, Elector};

pub use crate::config::EventSettings;
use describe::Transition;
use limits::Limiter;

/// The Lease whose holder tells the background audit's transitions.
pub const EVENTS_LEASE: &str = "meshgate-events";
/// Admitted reviews waiting for their Event; past it they are dropped.
const QUEUE: usize = 256;
/// Bytes of review bodies waiting at most: a queue of 4 MiB bodies must not
/// hold a gigabyte.
const QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Bound on one Event write (create, or patch of a series).
const WRITE_BOUND: Duration = Duration::from_secs(5);
const LEASE_DURATION: Duration = Duration::from_secs(15);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EmittedLabels {
    source: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    reason: &'static str,
}

const SOURCES: [&str; 2] = ["admission", "background"];
const DROP_REASONS: [&str; 3] = ["queue_full", "rate_limited", "write_failed"];

/// `meshgate_events_emitted_total` and `meshgate_events_dropped_total`,
/// every series at 0 from start-up.
#[derive(Clone, Debug, Default)]
pub struct EventMetrics {
    emitted: Family<EmittedLabels, Counter>,
    dropped: Family<DroppedLabels, Counter>,
}

impl EventMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = EventMetrics::default();
        for source in SOURCES {
            for r#type in ["Warning", "Normal"] {
                let _ = metrics
                    .emitted
                    .get_or_create(&EmittedLabels { source, r#type });
            }
        }
        for reason in DROP_REASONS {
            let _ = metrics.dropped.get_or_create(&DroppedLabels { reason });
        }
        let r = registry.sub_registry_with_prefix("meshgate");
        r.register(
            "events_emitted",
            "Kubernetes Events written, by source (admission, background) and type",
            metrics.emitted.clone(),
        );
        r.register(
            "events_dropped",
            "Events not written: queue full, over the rate limit, or the write failed",
            metrics.dropped.clone(),
        );
        metrics
    }

    fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&DroppedLabels { reason }).inc();
    }
}

/// An admitted review waiting for its Event.
struct Admitted {
    body: Bytes,
    warnings: Vec<String>,
}

/// The webhook's side: queues admitted reviews with audit-mode findings.
#[derive(Clone)]
pub struct AdmissionEvents {
    queue: mpsc::Sender<Admitted>,
    /// Body bytes queued and not yet handled by the worker.
    queued_bytes: Arc<AtomicUsize>,
    metrics: EventMetrics,
}

impl AdmissionEvents {
    /// Queues an Event for `reviewed` if it was admitted with audit-mode
    /// findings; never waits (a full queue drops it, counted). Dry runs get
    /// none: their object is never stored.
    pub fn offer(&self, body: &Bytes, reviewed: &Reviewed) {
        let record = &reviewed.record;
        let wanted = record.outcome == Outcome::Warned
            && !record.dry_run
            && record.kind.is_some()
            && record
                .violations
                .iter()
                .any(|(_, mode)| *mode == Mode::Audit);
        if !wanted {
            return;
        }
        let warnings = reviewed
            .review
            .response
            .as_ref()
            .and_then(|r| r.warnings.clone())
            .unwrap_or_default();
        let size = body.len();
        if self.queued_bytes.fetch_add(size, Ordering::AcqRel) + size > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.metrics.dropped("queue_full");
            return;
        }
        let admitted = Admitted {
            body: body.clone(),
            warnings,
        };
        if self.queue.try_send(admitted).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.metrics.dropped("queue_full");
        }
    }
}

/// The worker, waiting for a client: created before the cluster is reached
/// so the webhook's handle exists from the start.
pub struct Starter {
    settings: EventSettings,
    metrics: EventMetrics,
    admitted: mpsc::Receiver<Admitted>,
    queued_bytes: Arc<AtomicUsize>,
}

/// The webhook's handle and the worker to start, when Events are enabled.
pub fn new(settings: &EventSettings, metrics: EventMetrics) -> Option<(AdmissionEvents, Starter)> {
    if !settings.enabled {
        return None;
    }
    let (queue, admitted) = mpsc::channel(QUEUE);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let handle = AdmissionEvents {
        queue,
        queued_bytes: queued_bytes.clone(),
        metrics: metrics.clone(),
    };
    let starter = Starter {
        settings: settings.clone(),
        metrics,
        admitted,
        queued_bytes,
    };
    Some((handle, starter))
}

impl Starter {
    /// Starts writing Events: admitted reviews' at once, the background
    /// audit's (`results`) while this replica holds [`EVENTS_LEASE`] in
    /// `namespace`.
    pub fn start(self, client: Client, results: Option<Results>, namespace: String) {
        tokio::spawn(async move {
            let identity = leader::identity();
            let reporter = Reporter {
                controller: "meshgate".into(),
                instance: Some(identity.clone()),
            };
            // The election retries until it works and logs its failures
            // itself (crate::leader); its series are the report writer's
            // election's, so this one keeps its counts to itself.
            let leading = results.as_ref().map(|_| {
                let lease = leader::Lease {
                    namespace: namespace.clone(),
                    name: EVENTS_LEASE.to_owned(),
                    identity: identity.clone(),
                    duration: LEASE_DURATION,
                    purpose: "background audit events",
                };
                Elector::spawn(client.clone(), lease, leader::ElectionMetrics::default())
            });
            tracing::info!(
                background = leading.is_some(),
                lease = EVENTS_LEASE,
                "recording Kubernetes events"
            );
            let worker = Worker {
                recorder: Recorder::new(client, reporter),
                limiter: Limiter::new(&self.settings, Instant::now()),
                metrics: self.metrics,
                failing: false,
                queued_bytes: self.queued_bytes,
            };
            let background = results.zip(leading);
            worker.run(self.admitted, background).await;
        });
    }
}

struct Worker {
    recorder: Recorder,
    limiter: Limiter,
    metrics: EventMetrics,
    /// The last write failed (logged once until one works).
    failing: bool,
    queued_bytes: Arc<AtomicUsize>,
}

type Verdicts = Arc<std::collections::BTreeMap<String, Arc<Verdict>>>;

impl Worker {
    async fn run(
        mut self,
        mut admitted: mpsc::Receiver<Admitted>,
        background: Option<(Results, Elector)>,
    ) {
        let (mut results, leading, _elector) = match background {
            Some((results, elector)) => (Some(results), Some(elector.leading()), Some(elector)),
            None => (None, None, None),
        };
        // What was last told (or, while not leading, last seen): only
        // changes from it become Events.
        let mut baseline: Option<Verdicts> = None;
        loop {
            tokio::select! {
                next = admitted.recv() => match next {
                    Some(review) => self.admitted(review).await,
                    None => return,
                },
                changed = changed(&mut results) => {
                    if changed.is_err() {
                        results = None;
                        continue;
                    }
                    let Some(snapshot) = results.as_ref().map(Results::snapshot) else { continue };
                    if !snapshot.complete {
                        continue;
                    }
                    let is_leader = leading.as_ref().is_some_and(|l| *l.borrow());
                    if let (true, Some(before)) = (is_leader, &baseline) {
                        let before = before.clone();
                        self.transitions(&before, &snapshot.verdicts).await;
                    }
                    baseline = Some(snapshot.verdicts.clone());
                }
            }
        }
    }

    async fn admitted(&mut self, review: Admitted) {
        let reference = describe::admitted_reference(&review.body);
        self.queued_bytes
            .fetch_sub(review.body.len(), Ordering::AcqRel);
        drop(review.body);
        let Some(reference) = reference else {
            tracing::debug!("an admitted review names no object; no event");
            return;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: describe::REASON_VIOLATION.into(),
            note: Some(describe::admission_note(&review.warnings)),
            action: describe::ACTION_ADMIT.into(),
            secondary: None,
        };
        self.write("admission", event, &reference).await;
    }

    async fn transitions(&mut self, before: &Verdicts, after: &Verdicts) {
        for (verdict, transition) in describe::transitions(before, after) {
            let type_ = match transition {
                Transition::Failing => EventType::Warning,
                Transition::Passing { .. } => EventType::Normal,
            };
            let reason = match transition {
                Transition::Failing => describe::REASON_VIOLATION,
                Transition::Passing { .. } => describe::REASON_RESOLVED,
            };
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(describe::background_note(&verdict.judgement, &transition)),
                action: describe::ACTION_AUDIT.into(),
                secondary: None,
            };
            let reference = describe::reference(&verdict.object);
            self.write("background", event, &reference).await;
        }
    }

    /// Writes one Event within the rate limit and [`WRITE_BOUND`].
    async fn write(&mut self, source: &'static str, event: Event, reference: &ObjectReference) {
        if !self.limiter.try_take(Instant::now()) {
            self.metrics.dropped("rate_limited");
            return;
        }
        let written = tokio::time::timeout(WRITE_BOUND, self.recorder.publish(&event, reference));
        let error = match written.await {
            Ok(Ok(())) => {
                let r#type = match event.type_ {
                    EventType::Warning => "Warning",
                    EventType::Normal => "Normal",
                };
                let labels = EmittedLabels { source, r#type };
                self.metrics.emitted.get_or_create(&labels).inc();
                if std::mem::take(&mut self.failing) {
                    tracing::info!("writing events again");
                }
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {WRITE_BOUND:?}"),
        };
        self.metrics.dropped("write_failed");
        // One line when writes start failing, one when they work again:
        // an API server outage must not flood the log.
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(%error, "cannot write events; dropping them until a write works");
        }
    }
}

/// Resolves when the results change; never without results.
async fn changed(results: &mut Option<Results>) -> Result<(), watch::error::RecvError> {
    match results {
        Some(results) => results.changed().await,
        None => std::future::pending().await,
    }
}
