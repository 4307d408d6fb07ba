//! `meshgate serve`: TLS, connections, shutdown. Thin plumbing around the
//! [`Reviewer`]; it never decides anything itself.

use parking_lot::RwLock;
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
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admission::Reviewer;
use crate::background::{self, metrics::PostureMetrics};
use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::feeds;
use crate::manifest::ManifestError;
use crate::metrics::Metrics;
use crate::posture::confirm::Confirmer;
use crate::posture::reflector::{self, CacheSync};
use crate::posture::{files, SharedPosture};
use conn::{Shed, Timeouts, Tracker};

mod closing;
pub mod conn;
pub mod routes;
pub mod tls;

/// Why the server could not start. Each names the file, address or setting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("--tls-cert/--tls-key: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("--state-from: {0}")]
    State(#[from] ManifestError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot reach the Kubernetes API (in-cluster config or kubeconfig): {0}")]
    Kube(#[from] kube::Error),
}

pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let config = load_config(&args)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let watch_metrics = crate::watch::WatchMetrics::register(&mut registry);
    let event_metrics = crate::events::EventMetrics::register(&mut registry);
    // Events need an API server: none with --state-from.
    let (admission_events, events) = crate::events::new(&config.events, event_metrics)
        .filter(|_| args.state_from.is_empty())
        .unzip();
    metrics.init_exemptions(&config);
    let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
    let posture_metrics = PostureMetrics::new(config.clone(), posture.clone());
    crate::metrics::register_posture(&mut registry, posture_metrics.clone());
    // Issue 21 hook: exemption gauges, computed at scrape time.
    registry.register_collector(Box::new(crate::exemption::metrics::ExemptionMetrics::new(
        config.clone(),
        posture.clone(),
    )));
    let registry = Arc::new(registry);
    let (cap, nofile) = conn::connection_cap(args.max_connections);
    tracing::info!(
        max_connections = cap,
        open_files_limit = nofile,
        "connection limit"
    );

    let (key, loaded_pem) = tls::load_certified_key(&args.tls_cert, &args.tls_key)?;
    let cert = tls::ReloadingCert::new(key);
    let acceptor = TlsAcceptor::from(tls::server_config(cert.clone())?);

    let feed = Feed {
        config: &config,
        posture: &posture,
        metrics: &metrics,
        posture_metrics: &posture_metrics,
        watch_metrics: &watch_metrics,
    };
    let (sync, confirmer, report_task) = if args.state_from.is_empty() {
        feed.watch_cluster(&args, events).await?
    } else {
        feed.read_files(&args.state_from)?
    };

    // The leader keeps the native policies applied (src/native/sync.rs).
    let cluster = args.native_policies && args.state_from.is_empty();
    let native = crate::native::sync::start(cluster, &config, &args.own_namespace).await?;
    let listener = bind(args.listen).await?;
    let metrics_listener = bind(args.metrics_listen).await?;
    log_listening("webhook", &listener);
    log_listening("metrics", &metrics_listener);

    tokio::spawn(tls::watch_files(
        cert,
        loaded_pem,
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_reload_interval,
        metrics.clone(),
    ));

    let metrics_app = routes::metrics(registry, metrics.clone(), sync.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });

    let draining = Arc::new(AtomicBool::new(false));
    let tracker = Tracker::new(cap, metrics.clone());
    let app = routes::webhook(routes::AppState {
        reviewer: Arc::new(
            Reviewer::new(config, posture)
                .with_sync(sync.clone())
                .with_confirmer(confirmer),
        ),
        metrics,
        sync,
        max_body_bytes: args.max_body_bytes,
        draining: draining.clone(),
        events: admission_events,
    });
    let timeouts = Timeouts {
        handshake: args.tls_handshake_timeout,
        request_head: args.request_head_timeout,
        request: args.request_timeout,
        idle: args.idle_timeout,
    };
    let stop = Shutdown {
        drain_delay: args.drain_delay,
        grace: args.shutdown_grace,
        draining,
    };
    serve_tls(listener, acceptor, app, shutdown, stop, (timeouts, tracker)).await;
    if let Some(task) = report_task {
        task.stop().await;
    }
    if let Some(task) = native {
        task.stop().await;
    }
    Ok(())
}

fn load_config(args: &ServeArgs) -> Result<Arc<Config>, StartError> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    }
    .with_own_namespace(&args.own_namespace);
    Ok(Arc::new(config))
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Where the posture comes from, and what is fed from it.
struct Feed<'a> {
    config: &'a Arc<Config>,
    posture: &'a SharedPosture,
    metrics: &'a Metrics,
    posture_metrics: &'a Arc<PostureMetrics>,
    watch_metrics: &'a crate::watch::WatchMetrics,
}

/// The cache state, the confirmer of denials, and the PolicyReport writer.
type Source = (
    Arc<CacheSync>,
    Option<Arc<Confirmer>>,
    Option<crate::report::serve::ReportTask>,
);

impl Feed<'_> {
    /// Watchers fill the posture; denials on it are confirmed against the
    /// API server; the background audit's results become PolicyReports.
    async fn watch_cluster(
        &self,
        args: &ServeArgs,
        events: Option<crate::events::Starter>,
    ) -> Result<Source, StartError> {
        let client = kube::Client::try_default().await?;
        let sync = Arc::new(CacheSync::new(&reflector::all()));
        // One watch per kind, feeding the posture index and the background audit.
        let (config, posture) = (self.config, self.posture);
        let watch_metrics = self.watch_metrics;
        if let Some(results) = feeds::spawn(&client, config, posture, &sync, watch_metrics) {
            self.posture_metrics.attach(results);
        }
        tracing::info!("watching the cluster");
        let report_task = match self.posture_metrics.results() {
            Some(results) if args.policy_reports => Some(crate::report::serve::spawn(
                client.clone(),
                self.config.clone(),
                results,
                args.own_namespace.clone(),
                args.policy_report_api,
                self.metrics.election(),
            )),
            _ => None,
        };
        if let Some(events) = events {
            let results = self.posture_metrics.results();
            events.start(client.clone(), results, args.own_namespace.clone());
        }
        // Issue 21 hook: the exemption objects' status, written by one replica.
        let lease = crate::leader::Lease {
            namespace: args.own_namespace.clone(),
            name: crate::exemption::status::STATUS_LEASE.to_owned(),
            identity: crate::leader::identity(),
            duration: std::time::Duration::from_secs(15),
            purpose: "exemption status",
        };
        let elector = crate::leader::Elector::spawn(client.clone(), lease, Default::default());
        let (c, p, r) = (
            client.clone(),
            self.posture.clone(),
            self.posture_metrics.results(),
        );
        let leading = elector.leading();
        tokio::spawn(async move {
            // The elector lives as long as the writer.
            let _elector = elector;
            crate::exemption::status::run(c, p, r, leading).await;
        });
        let confirmer = Arc::new(Confirmer::new(client, args.confirm_timeout));
        Ok((sync, Some(confirmer), report_task))
    }

    /// The complete state, read once; nothing to confirm against.
    fn read_files(&self, paths: &[std::path::PathBuf]) -> Result<Source, StartError> {
        let index = files::index_paths(paths, "default")?;
        tracing::info!(
            namespaces = index.namespace_count(),
            peer_authentications = index.peer_authentications.len(),
            authorization_policies = index.authorization_policies.len(),
            "cluster state loaded from files; not contacting any API server"
        );
        *self.posture.write() = index;
        if self.config.background_audit.enabled {
            let mut engine = background::Engine::new(self.config.clone());
            background::feed::apply_files(&mut engine, paths)?;
            let results = background::runner::spawn_static(engine, self.posture.clone());
            self.posture_metrics.attach(results);
        }
        // The parse garbage of the whole state goes back to the OS now: this
        // thread serves next, and may not allocate much for a while.
        crate::allocator::release_freed_memory();
        Ok((
            Arc::new(CacheSync::all_synced(&reflector::all())),
            None,
            None,
        ))
    }
}

fn log_listening(endpoint: &'static str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(endpoint, %addr, "listening");
    }
}

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
async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    signal: impl Future<Output = ()>,
    shutdown: Shutdown,
    limits: (Timeouts, Arc<Tracker>),
) {
    let (timeouts, tracker) = limits;
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
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let draining = shutdown.draining.clone();
    let drain_delay = shutdown.drain_delay;
    let stop = async move {
        signal.await;
        draining.store(true, Ordering::Release);
        tracing::info!(
            drain_delay_ms = drain_delay.as_millis() as u64,
            "draining: /readyz unready, still serving until the delay is over"
        );
        tokio::time::sleep(drain_delay).await;
    };
    tokio::pin!(stop);
    let accepted = |stream: TcpStream, peer: SocketAddr| {
        // Reviews are small request/response exchanges: send them at once.
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            registration: tracker.register(),
            tracker: tracker.clone(),
            timeouts,
            draining: shutdown.draining.clone(),
            peer,
        };
        tokio::spawn(conn.serve(
            acceptor.clone(),
            stream,
            app.clone(),
            builder.clone(),
            phase_rx.clone(),
        ));
    };
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
        accepted(stream, peer);
    }
    // No connection the kernel completed is dropped: new handshakes stop,
    // the queued connections are served, then the socket closes.
    if closing::stop_handshakes(&listener) {
        let queued = closing::queued(&listener);
        tracing::debug!(
            connections = queued.len(),
            "queued connections taken before closing"
        );
        for (stream, peer) in queued {
            accepted(stream, peer);
        }
    }
    drop(listener);
    drop(phase_rx);
    tracing::info!("shutting down: no new connections, finishing in-flight reviews");
    let _ = phase.send(Phase::Stopping);
    tokio::select! {
        () = phase.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(shutdown.grace) => tracing::warn!("grace period over; closing remaining connections"),
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
        let peer = self.peer;
        let tls = tokio::select! {
            tls = tokio::time::timeout(self.timeouts.handshake, acceptor.accept(stream)) => match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    self.tracker.shed(Shed::HandshakeTimeout);
                    return;
                }
            },
            () = self.registration.evicted() => {
                self.tracker.shed(Shed::Evicted);
                return;
            }
        };
        let this = Arc::new(self);
        let service = {
            let this = this.clone();
            hyper::service::service_fn(move |request| this.clone().request(app.clone(), request))
        };
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
