//! What `serve` watches and what each watch feeds: one watch per kind of
//! the table that the posture index holds or the background audit judges
//! ([`crate::watch`]). Each watch feeds the posture index first, then the
//! background engine, so the engine never judges an object against a
//! posture older than the events that came before it.

use std::sync::Arc;

use kube::Client;

use crate::background::{self, Results};
use crate::config::Config;
use crate::kinds::Kind;
use crate::posture::reflector::{self, CacheSync};
use crate::posture::SharedPosture;
use crate::watch::{self, Sink, WatchMetrics};

/// Starts the watches (and the background audit when it is on); returns
/// the audit's results.
pub fn spawn(
    client: &Client,
    config: &Arc<Config>,
    posture: &SharedPosture,
    sync: &Arc<CacheSync>,
    metrics: &WatchMetrics,
) -> Option<Results> {
    let audit = config
        .background_audit
        .enabled
        .then(|| background::feed::spawn(config.clone(), posture.clone(), sync.clone()));
    for kind in Kind::ALL {
        let sinks: Vec<Box<dyn Sink>> = reflector::sink(kind, posture, sync)
            .into_iter()
            .chain(
                audit
                    .as_ref()
                    .and_then(|(_, changes)| background::feed::sink(kind, changes)),
            )
            .collect();
        if sinks.is_empty() {
            continue;
        }
        let counters = metrics.counters(kind.row().resource);
        tokio::spawn(watch::watch(client.clone(), kind, sinks, counters));
    }
    audit.map(|(results, _)| results)
}

/// The kinds `serve` watches with the background audit on or off.
pub fn watched(background_audit: bool) -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(move |kind| kind.row().posture || (background_audit && kind.is_judged()))
}
