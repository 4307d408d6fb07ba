//! The comparison point for `scripts/load.sh`: the cheapest webhook that still
//! does the unavoidable work. Same TLS and connection setup as `meshgate
//! serve` (rustls with ring, TLS 1.2/1.3, ALPN h2 + http/1.1, TCP_NODELAY,
//! hyper-util's auto builder, axum router). It parses the whole body into a
//! `serde_json::Value`, the cheapest generic parse, and answers
//! `allowed: true` with the request's uid without looking at the object, on
//! `/validate` and `/mutate` alike (no patch).
//!
//! ```text
//! cargo run --release --example baseline_server -- \
//!     --listen 127.0.0.1:8443 --tls-cert tls.crt --tls-key tls.key
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

struct Args {
    listen: SocketAddr,
    tls_cert: PathBuf,
    tls_key: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut listen = None;
    let mut cert = None;
    let mut key = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--tls-cert" => cert = Some(PathBuf::from(value)),
            "--tls-key" => key = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443))),
        tls_cert: cert.ok_or("--tls-cert is required")?,
        tls_key: key.ok_or("--tls-key is required")?,
    })
}

fn tls_config(cert: &PathBuf, key: &PathBuf) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Parses the review and allows it, unseen.
async fn validate(body: Bytes) -> Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Some(uid) = review.pointer("/request/uid").and_then(Value::as_str) else {
        return (StatusCode::BAD_REQUEST, "request.uid is missing").into_response();
    };
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    }))
    .into_response()
}

/// The allocator `meshgate serve` uses (see src/main.rs), so the comparison
/// measures the work each server does, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("baseline_server: {e}");
            eprintln!("usage: baseline_server --listen ADDR --tls-cert FILE --tls-key FILE");
            std::process::exit(2);
        }
    };
    let acceptor = match tls_config(&args.tls_cert, &args.tls_key) {
        Ok(config) => TlsAcceptor::from(config),
        Err(e) => {
            eprintln!("baseline_server: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("baseline_server: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    println!("baseline_server listening on {addr}");

    // `/mutate` answers the same: a no-op mutation patches nothing.
    let app = Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(validate));
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("baseline_server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
        });
    }
}
