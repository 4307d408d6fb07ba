//! One kind's watch: a kube-runtime watcher at the newest version the
//! cluster serves, its objects trimmed on arrival, its events handed to
//! every sink in turn. A re-list (`Relisting` … `Listed`) is the kind's
//! whole content, so objects deleted while the watch was down never linger.
//!
//! When the API server goes away the watch is lost: it is logged once and
//! every failed call is counted ([`WatchLink`]); the sinks hear `Lost` and
//! keep what they hold. A fresh watcher then lists again (after a 410 the
//! watcher re-lists by itself), and the sinks hear the new list.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject, TypeMeta};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};

use crate::kinds::Kind;
use crate::reminder::Reminder;

use super::link::{relists_by_itself, Failure, Messages, WatchLink};
use super::{projection, served_resource, WatchCounters};

/// What a kind's watch tells each sink, in the order it happened.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// A (re-)list starts: what follows until `Listed` is the whole content.
    Relisting,
    /// One object of the list.
    Listing(&'a DynamicObject),
    /// The list is complete.
    Listed,
    Applied(&'a DynamicObject),
    Deleted(&'a DynamicObject),
    /// The kind's API is not served (its CRD is not installed): nothing of
    /// the kind exists. Said again every [`MISSING_RETRY`].
    Missing,
    /// A synced watch was lost: what it fed may be behind until `Listed`.
    Lost,
}

/// A consumer of one kind's events (the posture index, the background
/// audit).
pub trait Sink: Send {
    /// Takes one event; resolves to false once the consumer is gone.
    fn take<'a>(&'a mut self, seen: Seen<'a>) -> BoxFuture<'a, bool>;
}

/// What every watch logs (`tests/envtest_outage.rs` counts them).
pub const MESSAGES: Messages = Messages {
    cannot_list: "cannot list; retrying",
    lost: "watch lost; answering from the cache until it is re-established",
    back: "watch re-established; cache re-listed",
    synced: "cache synced",
};

/// How long to wait before looking again for an API that was not served.
pub const MISSING_RETRY: Duration = Duration::from_secs(30);
const PROBE_RETRY: Duration = Duration::from_secs(2);

/// Watches `kind` into `sinks` until every sink is gone.
pub async fn watch(
    client: Client,
    kind: Kind,
    mut sinks: Vec<Box<dyn Sink>>,
    counters: WatchCounters,
) {
    let resource_name = kind.row().resource;
    let mut probe = Probe::default();
    loop {
        match served_resource(&client, kind).await {
            Ok(Some(resource)) => {
                tracing::info!(resource = resource_name, version = %resource.version, "watching");
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                let connect = || {
                    watcher::watcher(api.clone(), watcher::Config::default())
                        .default_backoff()
                        .boxed()
                };
                let link = WatchLink::new(resource_name, counters, MESSAGES);
                feed(connect, Arrival { kind, resource }, link, &mut sinks).await;
                return;
            }
            Ok(None) => {
                probe.missing(kind);
                if !deliver(&mut sinks, Seen::Missing).await {
                    return;
                }
                tokio::time::sleep(MISSING_RETRY).await;
            }
            Err(error) => {
                counters.errors.inc();
                probe.unreachable(kind, &error);
                // Without exemption objects judging is only stricter: an
                // API that cannot be probed (a 403 from RBAC older than the
                // exemption CRDs) must not hold readiness back.
                if kind.is_exemption() && !deliver(&mut sinks, Seen::Missing).await {
                    return;
                }
                tokio::time::sleep(PROBE_RETRY).await;
            }
        }
    }
}

/// What the probe for the served version has said already.
#[derive(Default)]
struct Probe {
    said_unreachable: bool,
    said_missing: bool,
    missing: Reminder,
}

impl Probe {
    fn missing(&mut self, kind: Kind) {
        let resource = kind.row().resource;
        if kind.is_exemption() {
            // Said once: no exemption objects is a valid state.
            if !std::mem::replace(&mut self.said_missing, true) {
                tracing::info!(resource, "exemption CRD not installed: no exemption objects apply (config-file exemptions still do); looking again every 30s");
            }
            return;
        }
        if !kind.row().posture {
            // Said once: a cluster without cert-manager stays without it.
            if !std::mem::replace(&mut self.said_missing, true) {
                tracing::info!(resource, "API not served; looking again every 30s");
            }
            return;
        }
        // Said every 10 min: a cluster without Istio stays without it until
        // someone installs it.
        if self.missing.due(Instant::now()) {
            tracing::error!(
                resource,
                "Istio CRD not installed (is Istio installed?): posture rules report the mesh posture as unverifiable until it is; meshgate looks for it every 30s and watches it as soon as it exists (this line repeats every 10 min)"
            );
        }
    }

    fn unreachable(&mut self, kind: Kind, error: &kube::Error) {
        // Said once: the API server may be away for a while.
        if !std::mem::replace(&mut self.said_unreachable, true) {
            let resource = kind.row().resource;
            tracing::warn!(resource, %error, "cannot probe the API; retrying");
        }
    }
}

/// How a watched object is made ready for the sinks.
pub struct Arrival {
    pub kind: Kind,
    pub resource: ApiResource,
}

impl Arrival {
    /// Sets the type (list items come without one) and trims what no
    /// consumer reads, once for all of them.
    fn prepare(&self, object: &mut DynamicObject) {
        object.types = Some(TypeMeta {
            api_version: self.resource.api_version.clone(),
            kind: self.resource.kind.clone(),
        });
        projection::project_dynamic(self.kind, object);
    }
}

/// Feeds one kind's watch events to `sinks` until the stream ends or every
/// sink is gone. `connect` makes a new watcher; it is called again, for a
/// full re-list, when a synced watch is lost.
pub async fn feed<S>(
    mut connect: impl FnMut() -> S,
    arrival: Arrival,
    mut link: WatchLink,
    sinks: &mut Vec<Box<dyn Sink>>,
) where
    S: Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Unpin,
{
    let mut stream = connect();
    let mut listed = 0usize;
    while let Some(event) = stream.next().await {
        let mut event = match event {
            Ok(event) => event,
            Err(error) => {
                if link.failed(&error) == Failure::Lost {
                    if !deliver(sinks, Seen::Lost).await {
                        return;
                    }
                    if !relists_by_itself(&error) {
                        stream = connect();
                    }
                }
                continue;
            }
        };
        if let Event::InitApply(object) | Event::Apply(object) | Event::Delete(object) = &mut event
        {
            arrival.prepare(object);
        }
        let seen = match &event {
            Event::Init => {
                listed = 0;
                Seen::Relisting
            }
            Event::InitApply(object) => {
                listed += 1;
                Seen::Listing(object)
            }
            Event::InitDone => {
                link.listed(listed);
                Seen::Listed
            }
            Event::Apply(object) => Seen::Applied(object),
            Event::Delete(object) => Seen::Deleted(object),
        };
        if !deliver(sinks, seen).await {
            return;
        }
    }
}

/// Hands `seen` to every sink in order; drops the sinks that are gone.
/// False once none is left.
async fn deliver(sinks: &mut Vec<Box<dyn Sink>>, seen: Seen<'_>) -> bool {
    let mut gone = Vec::new();
    for (at, sink) in sinks.iter_mut().enumerate() {
        if !sink.take(seen).await {
            gone.push(at);
        }
    }
    for at in gone.into_iter().rev() {
        sinks.remove(at);
    }
    !sinks.is_empty()
}

#[cfg(test)]
#[path = "kind_tests.rs"]
mod tests;
