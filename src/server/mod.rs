//! The webhook server: TLS, connections, deadlines, shutdown. Thin plumbing
//! around the [`crate::admission::Reviewer`] (see [`routes`]); it never
//! decides anything itself. `meshgate serve`'s process wiring (`serve/`)
//! sits above it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use conn::{Shed, Timeouts, Tracker};

mod closing;
pub mod conn;
pub mod metrics;
pub mod routes;
pub mod tls;

/// The server's side of a shutdown: drain (ready no more, still serving),
/// then stop (no new connections, in-flight reviews finish within a grace).
pub struct Shutdown {
    pub drain_delay: Duration,
    pub grace: Duration,
    pub draining: Arc<AtomicBool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Stopping,
}

/// Accepts TLS connections until `signal` resolves. Then `/readyz` turns
/// unready and HTTP/1 answers carry `Connection: close` for the drain delay,
/// while new connections are still accepted: the API server keeps sending
/// reviews until the endpoint removal reaches it. After the delay the
/// listener stops completing handshakes, the connections already queued are
/// taken, and it closes; idle connections are closed, HTTP/2 ones get
/// GOAWAY, connections that have not had a request yet get that one answered
/// first, and in-flight reviews get the grace period to finish.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    signal: impl Future<Output = ()>,
    shutdown: Shutdown,
    limits: (Timeouts, Arc<Tracker>),
) {
    let (timeouts, tracker) = limits;
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let accept = Accept {
        acceptor,
        app,
        builder: builder(&timeouts),
        timeouts,
        tracker,
        draining: shutdown.draining.clone(),
        phase: phase_rx,
    };
    let stop = drain(signal, shutdown.draining.clone(), shutdown.drain_delay);
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        accept.spawn(stream, peer);
    }
    close(listener, accept);
    tracing::info!("shutting down: no new connections, finishing in-flight reviews");
    let _ = phase.send(Phase::Stopping);
    tokio::select! {
        () = phase.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(shutdown.grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}

/// Closes the listener without dropping a connection the kernel completed:
/// new handshakes stop, the queued connections are served, then the socket
/// closes.
fn close(listener: TcpListener, accept: Accept) {
    if closing::stop_handshakes(&listener) {
        let queued = closing::queued(&listener);
        tracing::debug!(
            connections = queued.len(),
            "queued connections taken before closing"
        );
        for (stream, peer) in queued {
            accept.spawn(stream, peer);
        }
    }
}

/// The HTTP/1 and HTTP/2 connection builder.
fn builder(timeouts: &Timeouts) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No hyper header read timeout: hyper runs it on idle keep-alive
    // connections too. The connection's watchdog bounds the first head with
    // the request-head timeout and later ones with the idle timeout.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    // Pings find dead peers; the idle deadline closes live but silent ones.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeouts.idle / 2)
        .keep_alive_timeout(timeouts.request_head);
    builder
}

/// Resolves once the drain delay after `signal` is over; `/readyz` is
/// unready from the signal on.
async fn drain(signal: impl Future<Output = ()>, draining: Arc<AtomicBool>, delay: Duration) {
    signal.await;
    draining.store(true, Ordering::Release);
    tracing::info!(
        drain_delay_ms = delay.as_millis() as u64,
        "draining: /readyz unready, still serving until the delay is over"
    );
    tokio::time::sleep(delay).await;
}

/// What every accepted connection is served with. Dropping it drops the
/// listener's receiver of the phase, so the phase's sender sees when the
/// last connection is gone.
struct Accept {
    acceptor: TlsAcceptor,
    app: axum::Router,
    builder: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
    tracker: Arc<Tracker>,
    draining: Arc<AtomicBool>,
    phase: watch::Receiver<Phase>,
}

impl Accept {
    fn spawn(&self, stream: TcpStream, peer: SocketAddr) {
        // Reviews are small request/response exchanges: send them at once.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            registration: self.tracker.register(),
            tracker: self.tracker.clone(),
            timeouts: self.timeouts,
            draining: self.draining.clone(),
            peer,
        };
        tokio::spawn(conn.serve(
            self.acceptor.clone(),
            stream,
            self.app.clone(),
            self.builder.clone(),
            self.phase.clone(),
        ));
    }
}

/// One accepted connection and the deadlines it lives under.
struct Conn {
    registration: conn::Registration,
    tracker: Arc<Tracker>,
    timeouts: Timeouts,
    draining: Arc<AtomicBool>,
    peer: SocketAddr,
}

impl Conn {
    async fn serve(
        self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        app: axum::Router,
        builder: auto::Builder<TokioExecutor>,
        mut phase: watch::Receiver<Phase>,
    ) {
        let Some(tls) = self.handshake(acceptor, stream).await else {
            return;
        };
        let (peer, this) = (self.peer, Arc::new(self));
        let served = this.clone();
        let service =
            hyper::service::service_fn(move |request| served.clone().request(app.clone(), request));
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        // A connection is closed at shutdown only once it has had its first
        // request: one accepted just before the listener closed carries a
        // request its client already sent, and closing it unread would lose
        // that review. A silent one is bounded by the request-head timeout.
        let mut stopping = *phase.borrow_and_update() == Phase::Stopping;
        let mut close_after_first = stopping;
        loop {
            let (deadline, why) = this.registration.deadline(&this.timeouts);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = this.registration.evicted() => {
                    tracing::debug!(%peer, "connection limit reached; shedding this connection");
                    this.tracker.shed(Shed::Evicted);
                    return;
                }
                changed = phase.changed(), if !stopping => {
                    if changed.is_err() || *phase.borrow() == Phase::Stopping {
                        stopping = true;
                        close_after_first = true;
                    }
                }
                () = this.registration.first_request(), if close_after_first => {
                    // HTTP/1: no keep-alive after this answer; HTTP/2: a
                    // GOAWAY that still covers the streams already read.
                    conn.as_mut().graceful_shutdown();
                    close_after_first = false;
                }
                () = tokio::time::sleep_until(deadline) => {
                    // The phase may have moved on while the timer ran.
                    if this.registration.deadline(&this.timeouts).0 <= tokio::time::Instant::now() {
                        tracing::debug!(%peer, reason = why.as_str(), "closing connection");
                        this.tracker.shed(why);
                        return;
                    }
                }
            }
        }
    }

    /// The TLS handshake, within its deadline; `None` when it failed, timed
    /// out or the connection was evicted meanwhile.
    async fn handshake(
        &self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = self.peer;
        tokio::select! {
            tls = tokio::time::timeout(self.timeouts.handshake, acceptor.accept(stream)) => match tls {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    self.tracker.shed(Shed::HandshakeTimeout);
                    None
                }
            },
            () = self.registration.evicted() => {
                self.tracker.shed(Shed::Evicted);
                None
            }
        }
    }

    /// Runs one request under the whole-request deadline. HTTP/1 answers
    /// close the connection while draining, so clients reconnect (to another
    /// replica once the endpoint is gone) at a response boundary, never in
    /// the middle of a request.
    async fn request(
        self: Arc<Self>,
        app: axum::Router,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<axum::response::Response, Infallible> {
        let _guard = self.registration.begin();
        let http1 = request.version() < hyper::Version::HTTP_2;
        // hyper-util's tower glue (clone + oneshot) runs the axum router.
        let response = TowerToHyperService::new(app).call(request);
        let (mut response, timed_out) =
            match tokio::time::timeout(self.timeouts.request, response).await {
                Ok(Ok(response)) => (response, false),
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "request not completed in time");
                    self.tracker.shed(Shed::RequestTimeout);
                    (routes::request_timeout(self.timeouts.request), true)
                }
            };
        if http1 && (timed_out || self.draining.load(Ordering::Acquire)) {
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
        }
        Ok(response)
    }
}
