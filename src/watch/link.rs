//! The log-and-count discipline of one watch: when the API server goes away
//! a kind's watch logs one line when it is lost and one when it is back
//! (with how long it was down), and counts every failed call in between,
//! instead of a line per retry. One watch feeds every consumer, so that is
//! one warning per outage per resource in all. kube-runtime's backoff
//! spaces the retries.

use std::time::Instant;

use kube::runtime::watcher;

use super::WatchCounters;

/// What each kind of watcher says at each change, so that its lines can be
/// told apart (and counted) in the log.
#[derive(Debug, Clone, Copy)]
pub struct Messages {
    /// The first list failed (nothing to answer from yet).
    pub cannot_list: &'static str,
    /// A synced watch failed.
    pub lost: &'static str,
    /// A lost watch listed again.
    pub back: &'static str,
    /// The first list completed.
    pub synced: &'static str,
}

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Before the first list: retried, nothing is stale.
    BeforeSync,
    /// A synced watch is lost now: what it feeds may be behind.
    Lost,
    /// Already down; counted only.
    StillDown,
}

/// One watched resource's state: synced or not, down since when.
#[derive(Debug)]
pub struct WatchLink {
    resource: &'static str,
    counters: WatchCounters,
    messages: Messages,
    synced: bool,
    down_since: Option<Instant>,
}

impl WatchLink {
    pub fn new(resource: &'static str, counters: WatchCounters, messages: Messages) -> Self {
        WatchLink {
            resource,
            counters,
            messages,
            synced: false,
            down_since: None,
        }
    }

    /// Counts a failed list or watch call; logs only the first of an outage.
    pub fn failed(&mut self, error: &watcher::Error) -> Failure {
        let resource = self.resource;
        self.counters.errors.inc();
        if self.down_since.is_some() {
            tracing::debug!(%error, resource, "watch still down, retrying");
            return Failure::StillDown;
        }
        self.down_since = Some(Instant::now());
        if !self.synced {
            tracing::warn!(%error, resource, "{}", self.messages.cannot_list);
            return Failure::BeforeSync;
        }
        tracing::warn!(%error, resource, "{}", self.messages.lost);
        Failure::Lost
    }

    /// A complete list of `objects`: the watch is up (again).
    pub fn listed(&mut self, objects: usize) {
        let resource = self.resource;
        match self.down_since.take() {
            Some(since) if self.synced => {
                self.counters.restarts.inc();
                tracing::info!(
                    resource,
                    objects,
                    down_seconds = since.elapsed().as_secs_f64(),
                    "{}",
                    self.messages.back
                );
            }
            _ => tracing::info!(resource, objects, "{}", self.messages.synced),
        }
        self.synced = true;
    }
}

/// Whether the watcher re-lists by itself after `error`: on 410 Gone (the
/// API server no longer has the resourceVersion: compaction, or a restarted
/// API server) it does, on this very stream. After any other loss, resuming
/// from the last resourceVersion could miss what was compacted meanwhile,
/// and a quiet resource would never say it is back: the caller starts a
/// fresh watcher, whose first list replaces what it fed.
pub fn relists_by_itself(error: &watcher::Error) -> bool {
    matches!(error, watcher::Error::WatchError(status) if status.code == 410)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGES: Messages = Messages {
        cannot_list: "cannot list",
        lost: "lost",
        back: "back",
        synced: "synced",
    };

    #[test]
    fn an_outage_is_one_loss_and_one_return_with_every_failure_counted() {
        let counters = WatchCounters::default();
        let mut link = WatchLink::new("pods", counters.clone(), MESSAGES);
        assert_eq!(
            link.failed(&watcher::Error::NoResourceVersion),
            Failure::BeforeSync
        );
        link.listed(3);
        assert_eq!(counters.restarts.get(), 0, "a first sync is no restart");
        let failures: Vec<Failure> = (0..4)
            .map(|_| link.failed(&watcher::Error::NoResourceVersion))
            .collect();
        assert_eq!(
            failures,
            [
                Failure::Lost,
                Failure::StillDown,
                Failure::StillDown,
                Failure::StillDown
            ]
        );
        link.listed(3);
        assert_eq!((counters.errors.get(), counters.restarts.get()), (5, 1));
        assert_eq!(
            link.failed(&watcher::Error::NoResourceVersion),
            Failure::Lost,
            "the next outage is said again"
        );
    }
}
