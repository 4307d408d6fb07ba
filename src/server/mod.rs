//! `meshgate serve`: TLS, connections, shutdown. Thin plumbing around the
//! [`Reviewer`]; it never decides anything itself.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::Reviewer;
use crate::cli::ServeArgs;
use crate::config::{Config, ConfigError};
use crate::manifest::ManifestError;
use crate::metrics::Metrics;
use crate::posture::confirm::Confirmer;
use crate::posture::reflector::{self, CacheSync};
use crate::posture::{files, SharedPosture};

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

/// A TLS handshake, or an HTTP/1 request head, that takes longer than this
/// is abandoned, so stalled clients cannot hold connections open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    }
    .with_own_namespace(&args.own_namespace);
    let config = Arc::new(config);

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);

    let (key, loaded_pem) = tls::load_certified_key(&args.tls_cert, &args.tls_key)?;
    let cert = tls::ReloadingCert::new(key);
    let acceptor = TlsAcceptor::from(tls::server_config(cert.clone())?);

    let posture: SharedPosture = Arc::new(RwLock::new(Default::default()));
    let (sync, confirmer) = if args.state_from.is_empty() {
        let client = kube::Client::try_default().await?;
        let sync = Arc::new(CacheSync::new(reflector::ALL));
        reflector::spawn_all(client.clone(), posture.clone(), sync.clone(), &metrics);
        tracing::info!("watching the cluster for posture");
        (
            sync,
            Some(Arc::new(Confirmer::new(client, args.confirm_timeout))),
        )
    } else {
        let index = files::index_paths(&args.state_from, "default")?;
        tracing::info!(
            namespaces = index.namespace_count(),
            peer_authentications = index.peer_authentications.len(),
            authorization_policies = index.authorization_policies.len(),
            "cluster state loaded from files; not contacting any API server"
        );
        *posture.write().unwrap_or_else(|e| e.into_inner()) = index;
        (Arc::new(CacheSync::all_synced(reflector::ALL)), None)
    };

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.listen,
            source,
        })?;
    let metrics_listener = TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.metrics_listen,
            source,
        })?;
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

    let app = routes::webhook(routes::AppState {
        reviewer: Arc::new(Reviewer::new(config, posture).with_sync(sync.clone())),
        metrics,
        sync,
        confirmer,
        max_body_bytes: args.max_body_bytes,
    });
    serve_tls(listener, acceptor, app, shutdown, args.shutdown_grace).await;
    Ok(())
}

fn log_listening(endpoint: &'static str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(endpoint, %addr, "listening");
    }
}

/// Accepts TLS connections until `shutdown` resolves, then stops accepting,
/// lets in-flight reviews finish, and closes idle keep-alive connections at
/// once (the API server keeps reusing connections to a terminating pod).
async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper only enforces the header read timeout with a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT);
    tokio::pin!(shutdown);
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
            () = &mut shutdown => break,
        };
        // Reviews are small request/response exchanges: send them at once.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, finishing in-flight reviews");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
}
