//! `meshgate serve`: wires the process. Each component registers its own
//! metric series; the posture comes from watchers (with the background
//! audit, PolicyReports and Events fed from it) or from files; then
//! [`crate::server`] serves the webhook over TLS, and `/metrics` on its own
//! port, until the shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::Reviewer;
use crate::background::{self, metrics::PostureMetrics};
use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::feeds;
use crate::leader::ElectionMetrics;
use crate::manifest::ManifestError;
use crate::native;
use crate::posture::confirm::Confirmer;
use crate::posture::reflector::{self, CacheSync};
use crate::posture::{files, SharedPosture};
use crate::server::conn::{self, Timeouts, Tracker};
use crate::server::metrics::ServerMetrics;
use crate::server::{routes, tls, Shutdown};

mod json;
pub mod log;

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

/// Every component's metric series, registered in one registry.
struct Series {
    registry: Registry,
    server: ServerMetrics,
    watches: crate::watch::WatchMetrics,
    election: ElectionMetrics,
    posture: Arc<PostureMetrics>,
    events: crate::events::EventMetrics,
}

impl Series {
    fn register(config: &Arc<Config>, posture_index: &SharedPosture) -> Series {
        let mut registry = Registry::default();
        let server = ServerMetrics::register(&mut registry);
        server.init_exemptions(config);
        let watches = crate::watch::WatchMetrics::register(&mut registry);
        let election = ElectionMetrics::register(&mut registry);
        let events = crate::events::EventMetrics::register(&mut registry);
        let posture = PostureMetrics::new(config.clone(), posture_index.clone());
        posture.register(&mut registry);
        crate::posture::exemption_metrics::register(&mut registry, config, posture_index);
        Series {
            registry,
            server,
            watches,
            election,
            posture,
            events,
        }
    }
}

pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let config = load_config(&args)?;
    let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
    let series = Series::register(&config, &posture);
    // Events need an API server: none with --state-from.
    let (admission_events, events) = crate::events::new(&config.events, series.events.clone())
        .filter(|_| args.state_from.is_empty())
        .unzip();
    let tracker = connection_tracker(&args, series.server.clone());
    let acceptor = start_tls(&args, series.server.clone())?;

    let feed = Feed {
        config: &config,
        posture: &posture,
        series: &series,
    };
    let (sync, confirmer, report_task) = if args.state_from.is_empty() {
        feed.watch_cluster(&args, events).await?
    } else {
        feed.read_files(&args.state_from)?
    };

    // The leader keeps the native policies applied (src/native/sync.rs).
    let native = args.native_policies && args.state_from.is_empty();
    let native =
        native::sync::start(native, &config, &args.own_namespace, (&posture, &sync)).await?;
    let listener = bind(args.listen).await?;
    log_listening("webhook", &listener);
    serve_metrics(&args, series.registry, series.server.clone(), sync.clone()).await?;

    let draining = Arc::new(AtomicBool::new(false));
    let reviewer = Reviewer::new(config, posture)
        .with_sync(sync.clone())
        .with_confirmer(confirmer);
    let app = routes::webhook(routes::AppState {
        reviewer: Arc::new(reviewer),
        metrics: series.server,
        sync,
        max_body_bytes: args.max_body_bytes,
        draining: draining.clone(),
        events: admission_events,
    });
    let stop = Shutdown {
        drain_delay: args.drain_delay,
        grace: args.shutdown_grace,
        draining,
    };
    let limits = (timeouts(&args), tracker);
    crate::server::serve(listener, acceptor, app, shutdown, stop, limits).await;
    if let Some(task) = report_task {
        task.stop().await;
    }
    if let Some(task) = native {
        task.stop().await;
    }
    Ok(())
}

/// The cap on open connections, from the flag or the file-descriptor
/// limit.
fn connection_tracker(args: &ServeArgs, metrics: ServerMetrics) -> Arc<Tracker> {
    let (cap, nofile) = conn::connection_cap(args.max_connections);
    tracing::info!(
        max_connections = cap,
        open_files_limit = nofile,
        "connection limit"
    );
    Tracker::new(cap, metrics)
}

/// The serving certificate, and the task that reloads it when its files
/// change.
fn start_tls(args: &ServeArgs, metrics: ServerMetrics) -> Result<TlsAcceptor, StartError> {
    let (key, loaded_pem) = tls::load_certified_key(&args.tls_cert, &args.tls_key)?;
    let cert = tls::ReloadingCert::new(key);
    let acceptor = TlsAcceptor::from(tls::server_config(cert.clone())?);
    tokio::spawn(tls::watch_files(
        cert,
        loaded_pem,
        args.tls_cert.clone(),
        args.tls_key.clone(),
        args.tls_reload_interval,
        metrics,
    ));
    Ok(acceptor)
}

fn timeouts(args: &ServeArgs) -> Timeouts {
    Timeouts {
        handshake: args.tls_handshake_timeout,
        request_head: args.request_head_timeout,
        request: args.request_timeout,
        idle: args.idle_timeout,
    }
}

/// `/metrics`, plain HTTP on its own port, served in the background.
async fn serve_metrics(
    args: &ServeArgs,
    registry: Registry,
    metrics: ServerMetrics,
    sync: Arc<CacheSync>,
) -> Result<(), StartError> {
    let listener = bind(args.metrics_listen).await?;
    log_listening("metrics", &listener);
    let app = routes::metrics(Arc::new(registry), metrics, sync);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
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

fn log_listening(endpoint: &'static str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(endpoint, %addr, "listening");
    }
}

/// Where the posture comes from, and what is fed from it.
struct Feed<'a> {
    config: &'a Arc<Config>,
    posture: &'a SharedPosture,
    series: &'a Series,
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
        let posture_metrics = &self.series.posture;
        let watches = &self.series.watches;
        if let Some(results) = feeds::spawn(&client, config, posture, &sync, watches) {
            posture_metrics.attach(results);
        }
        tracing::info!("watching the cluster");
        let report_task = match posture_metrics.results() {
            Some(results) if args.policy_reports => Some(crate::report::serve::spawn(
                client.clone(),
                self.config.clone(),
                results,
                args.own_namespace.clone(),
                args.policy_report_api,
                self.series.election.clone(),
            )),
            _ => None,
        };
        if let Some(events) = events {
            let results = posture_metrics.results();
            events.start(client.clone(), results, args.own_namespace.clone());
        }
        crate::report::exemption_status::spawn(
            client.clone(),
            self.posture.clone(),
            posture_metrics.results(),
            &args.own_namespace,
        );
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
            self.series.posture.attach(results);
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
