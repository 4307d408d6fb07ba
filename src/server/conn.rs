//! Connection limits. Any pod that reaches the webhook port could otherwise
//! hold connections open for ever (silent after the TLS handshake, a partial
//! HTTP/2 preface, a body that drips in) until the file descriptors run out,
//! and with `failurePolicy: Fail` every deploy in the cluster would stop. So
//! every phase of a connection has a deadline, and the number of open
//! connections has a cap: past it the connection that has been in its current
//! phase (silent, idle or in one request) the longest is shed, so connections
//! in active use keep working.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::metrics::ServerMetrics;

/// Deadlines of each phase of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake.
    pub handshake: Duration,
    /// From the end of the handshake to the first complete request head
    /// (HTTP/2 preface or HTTP/1 head); also each later HTTP/1 head.
    pub request_head: Duration,
    /// One request, from its head to its response (body read included).
    pub request: Duration,
    /// A connection with no request in flight.
    pub idle: Duration,
}

/// Descriptors kept free for the metrics listener, the certificate files and
/// the Kubernetes client.
const RESERVED_FDS: u64 = 128;
/// Upper bound of the derived cap: about 40 KiB per connection keeps 4,096 of
/// them well inside the chart's 256 MiB memory limit.
const MAX_DERIVED_CAP: u64 = 4096;

/// Raises the soft file-descriptor limit to the hard one and returns the cap
/// on connections: `configured` when non-zero, else derived from the limit.
pub fn connection_cap(configured: usize) -> (usize, Option<u64>) {
    let soft = rlimit::increase_nofile_limit(u64::MAX).ok();
    if configured > 0 {
        return (configured, soft);
    }
    let derived = match soft {
        Some(soft) => soft.saturating_sub(RESERVED_FDS).clamp(16, MAX_DERIVED_CAP),
        None => 512,
    };
    (usize::try_from(derived).unwrap_or(512), soft)
}

/// Why a connection was closed by the server before the client closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    HandshakeTimeout,
    RequestHeadTimeout,
    RequestTimeout,
    IdleTimeout,
    Evicted,
}

impl Shed {
    pub const ALL: &'static [Shed] = &[
        Shed::HandshakeTimeout,
        Shed::RequestHeadTimeout,
        Shed::RequestTimeout,
        Shed::IdleTimeout,
        Shed::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shed::HandshakeTimeout => "handshake_timeout",
            Shed::RequestHeadTimeout => "request_head_timeout",
            Shed::RequestTimeout => "request_timeout",
            Shed::IdleTimeout => "idle_timeout",
            Shed::Evicted => "evicted",
        }
    }
}

/// What the watchdog of one connection reads: requests in flight and since
/// when the connection has been in its current phase.
#[derive(Debug, Default)]
pub struct ConnState {
    in_flight: AtomicUsize,
    since_ms: AtomicU64,
    served: AtomicBool,
    evict: Notify,
    /// Told when the first request begins.
    first_request: Notify,
}

/// Every open connection, for the cap.
pub struct Tracker {
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
    cap: usize,
    metrics: ServerMetrics,
}

impl Tracker {
    pub fn new(cap: usize, metrics: ServerMetrics) -> Arc<Self> {
        Arc::new(Tracker {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            cap,
            metrics,
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn instant(&self, ms: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_millis(ms))
    }

    /// Registers a new connection; at the cap, sheds another one first.
    pub fn register(self: &Arc<Self>) -> Registration {
        let state = Arc::new(ConnState::default());
        state.since_ms.store(self.now_ms(), Ordering::Relaxed);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut open = self.open.lock();
        while open.len() >= self.cap {
            let Some(victim) = victim(&open) else { break };
            if let Some(evicted) = open.remove(&victim) {
                evicted.evict.notify_one();
            }
        }
        open.insert(id, state.clone());
        self.metrics.connections_open(open.len());
        Registration {
            tracker: self.clone(),
            id,
            state,
        }
    }

    pub fn shed(&self, why: Shed) {
        self.metrics.connection_shed(why.as_str());
    }
}

/// The connection whose current phase began first: silent since it was
/// opened, idle since its last answer, or in the same request (legitimate
/// reviews take milliseconds, so a request that has run for seconds is a
/// slow or hostile client). A connection in active use is never the victim.
fn victim(open: &HashMap<u64, Arc<ConnState>>) -> Option<u64> {
    open.iter()
        .min_by_key(|(_, s)| s.since_ms.load(Ordering::Relaxed))
        .map(|(id, _)| *id)
}

/// One open connection; unregisters itself when dropped.
pub struct Registration {
    tracker: Arc<Tracker>,
    id: u64,
    pub state: Arc<ConnState>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.tracker.open.lock();
        open.remove(&self.id);
        self.tracker.metrics.connections_open(open.len());
    }
}

impl Registration {
    /// Marks a request in flight until the guard is dropped.
    pub fn begin(&self) -> RequestGuard {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        if !self.state.served.swap(true, Ordering::AcqRel) {
            self.state.first_request.notify_one();
        }
        self.state
            .since_ms
            .store(self.tracker.now_ms(), Ordering::Relaxed);
        RequestGuard {
            state: self.state.clone(),
            tracker: self.tracker.clone(),
        }
    }

    /// Resolves once the connection's first request has begun (at once if
    /// it has). The permit `notify_one` stores makes the check-then-wait
    /// race free.
    pub async fn first_request(&self) {
        if !self.state.served.load(Ordering::Acquire) {
            self.state.first_request.notified().await;
        }
    }

    /// Resolves when the cap sheds this connection.
    pub async fn evicted(&self) {
        self.state.evict.notified().await;
    }

    /// When the current phase ends, and what closing then would be counted
    /// as. A request in flight is bounded by the request timeout in the
    /// service; the watchdog is only a backstop for it.
    pub fn deadline(&self, t: &Timeouts) -> (tokio::time::Instant, Shed) {
        let since = self.state.since_ms.load(Ordering::Relaxed);
        let (limit, why) = if self.state.in_flight.load(Ordering::Relaxed) > 0 {
            (t.request + Duration::from_secs(2), Shed::RequestTimeout)
        } else if self.state.served.load(Ordering::Relaxed) {
            (t.idle, Shed::IdleTimeout)
        } else {
            (t.request_head, Shed::RequestHeadTimeout)
        };
        (self.tracker.instant(since) + limit, why)
    }
}

pub struct RequestGuard {
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.state
            .since_ms
            .store(self.tracker.now_ms(), Ordering::Relaxed);
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn tracker(cap: usize) -> Arc<Tracker> {
        Tracker::new(cap, ServerMetrics::register(&mut Registry::default()))
    }

    #[test]
    fn at_the_cap_a_long_silent_connection_is_shed_not_one_in_use() {
        let tracker = tracker(2);
        let silent = tracker.register();
        std::thread::sleep(Duration::from_millis(5));
        let used = tracker.register();
        drop(used.begin()); // answered just now
        let _new = tracker.register();
        let open = tracker.open.lock();
        assert!(
            open.contains_key(&used.id),
            "the connection in use was shed"
        );
        assert!(
            !open.contains_key(&silent.id),
            "the silent connection was kept"
        );
        assert_eq!(open.len(), 2);
    }

    #[test]
    fn with_every_connection_busy_the_oldest_request_is_shed() {
        let tracker = tracker(2);
        let old = tracker.register();
        let _a = old.begin();
        std::thread::sleep(Duration::from_millis(5));
        let young = tracker.register();
        let _b = young.begin();
        let _new = tracker.register();
        let open = tracker.open.lock();
        assert!(!open.contains_key(&old.id));
        assert!(open.contains_key(&young.id));
    }

    #[test]
    fn the_deadline_follows_the_phase() {
        let t = Timeouts {
            handshake: Duration::from_secs(1),
            request_head: Duration::from_secs(2),
            request: Duration::from_secs(3),
            idle: Duration::from_secs(4),
        };
        let tracker = tracker(8);
        let conn = tracker.register();
        assert_eq!(conn.deadline(&t).1, Shed::RequestHeadTimeout);
        let guard = conn.begin();
        assert_eq!(conn.deadline(&t).1, Shed::RequestTimeout);
        drop(guard);
        assert_eq!(conn.deadline(&t).1, Shed::IdleTimeout);
    }

    #[test]
    fn a_dropped_connection_frees_its_place() {
        let tracker = tracker(1);
        drop(tracker.register());
        let kept = tracker.register();
        assert!(tracker.open.lock().contains_key(&kept.id));
    }
}
