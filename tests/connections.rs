//! Hostile and stalled connections against the real binary: every phase of a
//! connection is bounded, and past the connection cap the server sheds old
//! connections so a new one from the API server is still served.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines so each test takes seconds.
const SHORT: &[&str] = &[
    "--tls-handshake-timeout",
    "1s",
    "--request-head-timeout",
    "1s",
    "--request-timeout",
    "2s",
    "--idle-timeout",
    "2s",
];

/// Slack for a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(5);

fn start_short() -> Server {
    Server::start(Options::default().args(SHORT))
}

/// Reads until the server closes the connection; returns what it sent and
/// how long that took, or fails after `limit`.
async fn read_until_closed(
    mut stream: impl AsyncRead + Unpin,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let result = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "the server kept the connection open for {limit:?}"
    );
    (received, started.elapsed())
}

fn trusting(server: &Server, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    tls_config(&[&server.ca_pem], ANY_TLS, alpn)
}

/// Waits until exactly one connection is counted as shed for `reason`. The
/// count can follow the close by a moment (the handshake's timeout drops
/// the socket first), so a loaded machine may see the close before it.
async fn assert_shed_once(server: &Server, reason: &str) {
    let count = || async {
        server
            .metrics()
            .await
            .value("meshgate_connections_shed_total", &[("reason", reason)])
    };
    let settled = eventually(&format!("a {reason} shed counted"), PROMPTLY, || async {
        let n = count().await;
        (n >= 1.0).then_some(n)
    })
    .await;
    assert_eq!(settled, 1.0, "{reason}");
}

#[tokio::test]
async fn closes_a_connection_that_never_finishes_the_tls_handshake() {
    let server = start_short();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (_, took) = read_until_closed(tcp, Duration::from_secs(1) + SLACK).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed before its deadline: {took:?}"
    );
    assert_shed_once(&server, "handshake_timeout").await;
}

#[tokio::test]
async fn closes_a_connection_silent_after_the_tls_handshake() {
    let server = start_short();
    let tls = tls_connect(server.addr, trusting(&server, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    let (_, took) = read_until_closed(tls, Duration::from_secs(1) + SLACK).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed before its deadline: {took:?}"
    );
    assert_shed_once(&server, "request_head_timeout").await;
}

#[tokio::test]
async fn closes_a_connection_that_sends_only_part_of_the_http2_preface() {
    let server = start_short();
    let mut tls = tls_connect(server.addr, trusting(&server, &[b"h2"]))
        .await
        .unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tls.flush().await.unwrap();
    read_until_closed(tls, Duration::from_secs(1) + SLACK).await;
    assert_shed_once(&server, "request_head_timeout").await;
}

#[tokio::test]
async fn answers_408_and_closes_when_a_body_drips_in() {
    let server = start_short();
    let tls = tls_connect(server.addr, trusting(&server, &[b"http/1.1"]))
        .await
        .unwrap();
    let (reader, mut writer) = tokio::io::split(tls);
    let dripper = tokio::spawn(async move {
        writer
            .write_all(&post_head("/validate?timeout=10s", Some(1000), &[]))
            .await?;
        // One byte every 300 ms: far slower than any real client.
        for _ in 0..1000 {
            writer.write_all(b" ").await?;
            writer.flush().await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok::<_, std::io::Error>(())
    });
    let (received, took) = read_until_closed(reader, Duration::from_secs(2) + SLACK).await;
    dripper.abort();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "answered before the deadline: {took:?}"
    );
    assert_shed_once(&server, "request_timeout").await;
}

#[tokio::test]
async fn closes_an_idle_http1_keep_alive_connection() {
    let server = start_short();
    let mut conn = Http1::connect(server.addr, trusting(&server, &[b"http/1.1"])).await;
    assert_eq!(conn.get("/healthz").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Still open halfway through the idle timeout, and reusable.
    assert_eq!(conn.get("/healthz").await.0, StatusCode::OK);
    let started = Instant::now();
    assert!(conn.closed_within(Duration::from_secs(2) + SLACK).await);
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_shed_once(&server, "idle_timeout").await;
}

#[tokio::test]
async fn closes_an_idle_http2_connection() {
    let server = start_short();
    let tls = tls_connect(server.addr, trusting(&server, &[b"h2"]))
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(format!("https://{}/healthz", server.addr))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let response = within("GET /healthz over HTTP/2", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2) + SLACK, connection)
        .await
        .expect("the idle HTTP/2 connection was kept open")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(1900));
    assert_shed_once(&server, "idle_timeout").await;
}

#[tokio::test]
async fn past_the_connection_cap_a_new_client_is_still_served() {
    // Long deadlines: only the cap can free the places.
    let server = Server::start(Options::default().args(&[
        "--max-connections",
        "20",
        "--request-head-timeout",
        "60s",
        "--idle-timeout",
        "60s",
    ]));
    let config = trusting(&server, &[b"http/1.1"]);
    let mut hostile = Vec::new();
    for _ in 0..30 {
        hostile.push(tls_connect(server.addr, config.clone()).await.unwrap());
    }
    let review = fixture("pod-create-injected.json");
    for _ in 0..3 {
        // A fresh client each time: a new connection, as after a restart.
        let client = https_client(&server.ca_pem);
        let response = client
            .post(server.url("/validate?timeout=10s"))
            .header("content-type", "application/json")
            .body(review.clone())
            .send()
            .await
            .expect("a new connection is served at the cap");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let metrics = server.metrics().await;
    let evicted = metrics.value("meshgate_connections_shed_total", &[("reason", "evicted")]);
    assert!(evicted >= 11.0, "{evicted} connections shed");
    assert!(metrics.value("meshgate_connections_open", &[]) <= 20.0);
    // The oldest silent connections were the ones shed.
    let (_, took) = read_until_closed(hostile.remove(0), PROMPTLY).await;
    assert!(took < PROMPTLY);
}
