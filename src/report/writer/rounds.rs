//! The writer's rounds: when to write (on becoming leader, on a change,
//! on a resync), and what to do when a write fails.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{log_write_error, now, Known, Reconciled, WriteError, Writer};
use crate::background::Results;
use crate::config::Config;
use crate::reminder::Reminder;
use crate::report::types::Report;
use crate::report::{build, ObjectVerdict};

/// Changes are gathered this long before a write, so a burst of re-judges
/// makes one write.
const SETTLE: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(10);
/// The writer lists the stored reports again this often, to repair what was
/// changed or deleted behind its back (by hand, by another replica).
const RESYNC: Duration = Duration::from_secs(600);

/// Writes the background audit's results while `leader` is true: once on
/// becoming leader, then on every change, and a full resync every `RESYNC`.
/// Returns when the results stop.
pub async fn run(
    writer: Writer,
    config: Arc<Config>,
    mut results: Results,
    mut leader: watch::Receiver<bool>,
) {
    // What the server holds, and when it was last listed.
    let mut known: Option<(Known, Instant)> = None;
    let mut missing_api = Reminder::default();
    loop {
        let snapshot = results.snapshot();
        if *leader.borrow_and_update() && snapshot.complete {
            let verdicts: Vec<ObjectVerdict> = snapshot
                .verdicts
                .values()
                .map(|v| ObjectVerdict::from_background(v, &config))
                .collect();
            let desired = build::reports(&verdicts, writer.flavor, now());
            if !write_desired(&writer, &desired, &mut known, &mut missing_api).await {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        } else if !*leader.borrow() {
            // Another replica may write meanwhile: list again when this one
            // leads again.
            known = None;
        }
        let resync = known
            .as_ref()
            .map_or(Instant::now() + RESYNC, |(_, at)| *at + RESYNC);
        tokio::select! {
            changed = results.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(resync) => {}
        }
    }
}

/// Writes `desired`, listing the stored reports first when `known` is
/// missing or older than `RESYNC`; `false` when the write failed (logged).
async fn write_desired(
    writer: &Writer,
    desired: &[Report],
    known: &mut Option<(Known, Instant)>,
    missing_api: &mut Reminder,
) -> bool {
    if known.as_ref().is_some_and(|(_, at)| at.elapsed() >= RESYNC) {
        *known = None;
    }
    match write_known(writer, known.take(), desired).await {
        Ok((done, state)) => {
            if missing_api.said() {
                tracing::info!("PolicyReport CRDs found");
                missing_api.clear();
            }
            if done.wrote() {
                tracing::info!(?done, reports = desired.len(), "policy reports written");
            }
            *known = Some(state);
            true
        }
        Err(error) => {
            log_write_error(&error, writer.flavor, missing_api);
            false
        }
    }
}

/// Writes `desired` against `known` (listing first when there is none).
async fn write_known(
    writer: &Writer,
    known: Option<(Known, Instant)>,
    desired: &[Report],
) -> Result<(Reconciled, (Known, Instant)), WriteError> {
    let (mut state, listed_at) = match known {
        Some(known) => known,
        None => (writer.list().await?, Instant::now()),
    };
    let done = writer.reconcile_known(&mut state, desired).await?;
    Ok((done, (state, listed_at)))
}
