//! The client side of `scripts/hostile-load.sh`: legitimate reviews over
//! keep-alive HTTPS (as the API server sends them), first on a quiet server,
//! then while hostile clients hold connections open: `--idle` connections that
//! finish the TLS handshake and send nothing, and `--drip` connections whose
//! request body arrives one byte every 3 s. A hostile connection the server
//! closes is opened again at once, so the attack keeps its size. Prints the
//! latency (p50/p99/max) and errors of both phases, how long the server took
//! to close each kind of hostile connection, and the server's RSS.
//!
//! Loopback only; every phase is bounded in time.
//!
//! ```text
//! cargo run --release --example hostile_load -- --addr 127.0.0.1:18443 \
//!     --ca tls.crt --review review.json --pid $SERVER_PID
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

struct Args {
    addr: SocketAddr,
    ca: PathBuf,
    review: PathBuf,
    pid: u32,
    idle: usize,
    drip: usize,
    workers: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:18443".parse().unwrap(),
        ca: PathBuf::new(),
        review: PathBuf::new(),
        pid: 0,
        idle: 1000,
        drip: 1000,
        workers: 4,
        seconds: 20,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--addr" => args.addr = value.parse().expect("--addr"),
            "--ca" => args.ca = value.into(),
            "--review" => args.review = value.into(),
            "--pid" => args.pid = value.parse().expect("--pid"),
            "--idle" => args.idle = value.parse().expect("--idle"),
            "--drip" => args.drip = value.parse().expect("--drip"),
            "--workers" => args.workers = value.parse().expect("--workers"),
            "--seconds" => args.seconds = value.parse().expect("--seconds"),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn connector(ca: &PathBuf, alpn: &[u8]) -> TlsConnector {
    let pem = std::fs::read(ca).expect("read --ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("PEM")).expect("CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Default)]
struct Latencies {
    samples: Mutex<Vec<Duration>>,
    errors: AtomicUsize,
}

impl Latencies {
    fn report(&self, phase: &str) {
        let mut s = self.samples.lock().unwrap().clone();
        s.sort();
        let at = |q: f64| s.get(((s.len() as f64 * q) as usize).min(s.len().saturating_sub(1)));
        let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        println!(
            "{phase}: {} reviews, {} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            s.len(),
            self.errors.load(Ordering::Relaxed),
            ms(at(0.50)),
            ms(at(0.99)),
            ms(s.last())
        );
    }
}

/// One keep-alive HTTP/1.1 connection sending reviews back to back; a new
/// connection when the server closes it.
async fn legit_worker(args: Arc<Args>, body: Bytes, stop: Arc<AtomicBool>, out: Arc<Latencies>) {
    let tls = connector(&args.ca, b"http/1.1");
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(args.addr).await else {
            out.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let stream = match tls.connect(ServerName::from(args.addr.ip()), tcp).await {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("legit TLS handshake failed: {error}");
                out.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            out.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            if sender.ready().await.is_err() {
                continue 'connect; // closed by the server between requests
            }
            let request = hyper::Request::post("/validate?timeout=5s")
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .unwrap();
            let started = Instant::now();
            let ok =
                match tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
                    .await
                {
                    Ok(Ok(response)) => {
                        response.status() == 200 && response.into_body().collect().await.is_ok()
                    }
                    _ => false,
                };
            if ok {
                out.samples.lock().unwrap().push(started.elapsed());
            } else {
                out.errors.fetch_add(1, Ordering::Relaxed);
                continue 'connect;
            }
        }
    }
}

/// How long the server let each hostile connection live.
#[derive(Default)]
struct Closures {
    lifetimes: Mutex<Vec<Duration>>,
    opened: AtomicUsize,
    open_now: AtomicUsize,
}

impl Closures {
    fn report(&self, kind: &str) {
        let mut s = self.lifetimes.lock().unwrap().clone();
        s.sort();
        let secs = |d: Option<&Duration>| d.map_or(f64::NAN, Duration::as_secs_f64);
        println!(
            "{kind}: {} connections opened, {} closed by the server: lifetime min {:.1} s, p50 {:.1} s, max {:.1} s",
            self.opened.load(Ordering::Relaxed),
            s.len(),
            secs(s.first()),
            secs(s.get(s.len() / 2)),
            secs(s.last())
        );
    }
}

/// Holds one hostile connection open, reopening it whenever the server
/// closes it, until `stop`.
async fn hostile(args: Arc<Args>, drip: bool, stop: Arc<AtomicBool>, out: Arc<Closures>) {
    let tls = connector(&args.ca, b"http/1.1");
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = TcpStream::connect(args.addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(stream) = tls.connect(ServerName::from(args.addr.ip()), tcp).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let opened = Instant::now();
        out.opened.fetch_add(1, Ordering::Relaxed);
        out.open_now.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = tokio::io::split(stream);
        let dripper = drip.then(|| {
            tokio::spawn(async move {
                let head = "POST /validate?timeout=5s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
                writer.write_all(head.as_bytes()).await?;
                loop {
                    writer.write_all(b" ").await?;
                    writer.flush().await?;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                #[allow(unreachable_code)]
                Ok::<_, std::io::Error>(())
            })
        });
        let mut buf = [0u8; 1024];
        let closed = loop {
            tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_millis(250)) => {
                    if stop.load(Ordering::Relaxed) { break false; }
                }
            }
        };
        if let Some(dripper) = dripper {
            dripper.abort();
        }
        out.open_now.fetch_sub(1, Ordering::Relaxed);
        if closed {
            out.lifetimes.lock().unwrap().push(opened.elapsed());
        }
    }
}

async fn legit_phase(args: &Arc<Args>, body: &Bytes, seconds: u64) -> Arc<Latencies> {
    let out = Arc::new(Latencies::default());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..args.workers)
        .map(|_| {
            tokio::spawn(legit_worker(
                args.clone(),
                body.clone(),
                stop.clone(),
                out.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    }
    out
}

#[tokio::main]
async fn main() {
    let args = Arc::new(parse_args());
    let body = Bytes::from(std::fs::read(&args.review).expect("read --review"));
    println!("RSS before: {} KiB", rss_kib(args.pid));

    legit_phase(&args, &body, args.seconds)
        .await
        .report("quiet");
    println!("RSS after the quiet run: {} KiB", rss_kib(args.pid));

    let stop = Arc::new(AtomicBool::new(false));
    let (idle, drip) = (Arc::new(Closures::default()), Arc::new(Closures::default()));
    let mut tasks = Vec::new();
    for i in 0..args.idle + args.drip {
        let (kind, out) = if i < args.idle {
            (false, idle.clone())
        } else {
            (true, drip.clone())
        };
        tasks.push(tokio::spawn(hostile(args.clone(), kind, stop.clone(), out)));
        if i % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(20)).await; // spread the handshakes
        }
    }
    // Wait until the attack has its size.
    let ramp = Instant::now();
    while idle.open_now.load(Ordering::Relaxed) + drip.open_now.load(Ordering::Relaxed)
        < (args.idle + args.drip) * 95 / 100
        && ramp.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "attack: {} idle and {} dripping connections open after {:.1} s",
        idle.open_now.load(Ordering::Relaxed),
        drip.open_now.load(Ordering::Relaxed),
        ramp.elapsed().as_secs_f64()
    );
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (peak, pid) = (peak.clone(), args.pid);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid) as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let attacked = legit_phase(&args, &body, args.seconds).await;
    println!(
        "attack at the end: {} idle and {} dripping connections open",
        idle.open_now.load(Ordering::Relaxed),
        drip.open_now.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    sampler.abort();
    attacked.report("under attack");
    idle.report("idle hostile");
    drip.report("dripping hostile");
    println!(
        "RSS peak under attack: {} KiB",
        peak.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!("RSS after the attack: {} KiB", rss_kib(args.pid));
}
