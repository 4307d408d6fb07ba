//! Helpers for tests that run the real `meshgate serve` binary and talk to it
//! the way the API server does: certificates, the server process and its
//! logs, HTTPS clients (reqwest, hyper on one connection, raw bytes),
//! Prometheus text, and Kubernetes-style Secret volumes.

#![allow(dead_code)] // not every test binary uses every helper

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub mod prometheus;

pub const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Upper bound for anything the server should do "at once".
pub const PROMPTLY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- fixtures

/// A captured AdmissionReview request body, byte for byte.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{FIXTURES}/admission/{name}");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("fixture is JSON")
}

/// A copy of a review with `change` applied to its JSON.
pub fn edit(review: &[u8], change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value = json(review);
    change(&mut value);
    serde_json::to_vec(&value).unwrap()
}

/// The same review for an object in namespace `ns`.
pub fn with_namespace(review: &[u8], ns: &str) -> Vec<u8> {
    edit(review, |v| {
        let request = &mut v["request"];
        request["namespace"] = ns.into();
        for object in ["object", "oldObject"] {
            if request[object].is_object() {
                request[object]["metadata"]["namespace"] = ns.into();
            }
        }
    })
}

pub fn uid_of(review: &[u8]) -> String {
    json(review)["request"]["uid"]
        .as_str()
        .expect("request.uid")
        .to_owned()
}

// ------------------------------------------------------------ certificates

/// A throw-away certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pub pem: String,
}

/// A serving certificate for `127.0.0.1` and `localhost`.
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    pub fn issue(&self) -> ServingCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "meshgate.meshgate.svc");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        ServingCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A Secret mounted the way the kubelet does it: the files live in a
/// timestamped directory, `..data` points at it, and `tls.crt`/`tls.key`
/// point through `..data`. An update writes a new directory and swaps the
/// `..data` symlink atomically.
pub struct SecretVolume {
    pub dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    pub fn new(dir: &Path, cert_pem: &str, key_pem: &str) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume {
            dir: dir.to_owned(),
            generation: 0,
        };
        volume.update(cert_pem, key_pem);
        for file in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
        volume
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join("tls.key")
    }

    /// Writes `..2026_data_N`, swaps `..data` to it, removes the old one.
    pub fn update(&mut self, cert_pem: &str, key_pem: &str) {
        self.generation += 1;
        let data = format!("..2026_data_{}", self.generation);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join("tls.crt"), cert_pem).unwrap();
        std::fs::write(self.dir.join(&data).join("tls.key"), key_pem).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            let old = format!("..2026_data_{}", self.generation - 1);
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

// ------------------------------------------------------------------ server

/// Files to serve instead of a fresh certificate, and the CA that signed them.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: String,
}

#[derive(Clone, Default)]
pub struct Options {
    config: Option<String>,
    max_body_bytes: Option<usize>,
    tls: Option<TlsFiles>,
    drain_delay: Option<String>,
    extra_args: Vec<String>,
    kubeconfig: Option<PathBuf>,
}

impl Options {
    /// Policy config YAML (written to a file and passed with `--config`).
    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.to_owned());
        self
    }

    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = Some(limit);
        self
    }

    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// `--drain-delay` (tests default to `0s`, so SIGTERM stops at once).
    pub fn drain_delay(mut self, delay: &str) -> Self {
        self.drain_delay = Some(delay.to_owned());
        self
    }

    /// Watch the API server of this kubeconfig instead of reading the
    /// cluster state from tests/fixtures/state (`--state-from`).
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// More `serve` arguments, e.g. `["--idle-timeout", "2s"]`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }
}

/// The `serve` arguments every test uses, around a certificate pair, with
/// the cluster state from tests/fixtures/state.
pub fn serve_args(cert: &Path, key: &Path, config: Option<&Path>) -> Vec<OsString> {
    let mut args = serve_args_without_state(cert, key, config);
    args.extend([
        "--state-from".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/state").into(),
    ]);
    args
}

fn serve_args_without_state(cert: &Path, key: &Path, config: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--tls-reload-interval",
        "200ms",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(["--tls-cert".into(), cert.into()]);
    args.extend(["--tls-key".into(), key.into()]);
    if let Some(config) = config {
        args.extend(["--config".into(), config.into()]);
    }
    args
}

/// How long `meshgate serve` may take to log its addresses (a loaded
/// machine, or a kubeconfig's API server to reach).
const START_BOUND: Duration = Duration::from_secs(30);

/// The child sees no `MESHGATE_*` setting, proxy or in-cluster config of the
/// caller: only what the test passes.
fn isolate_environment(command: &mut Command) {
    command
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("KUBECONFIG");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("MESHGATE_") || name.to_ascii_lowercase().ends_with("_proxy") {
            command.env_remove(&*name);
        }
    }
}

/// Runs a blocking wait; inside a multi-thread runtime, its other tasks (a
/// fake API server, say) move to another worker meanwhile.
fn off_the_runtime<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Lines a child wrote, collected by a reader thread.
pub type Lines = Arc<Mutex<Vec<String>>>;

pub fn collect_lines(source: impl Read + Send + 'static) -> Lines {
    let lines: Lines = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            match line {
                Ok(line) => sink.lock().unwrap().push(line),
                Err(_) => break,
            }
        }
    });
    lines
}

/// A running `meshgate serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The CA clients trust.
    pub ca_pem: String,
    /// The leaf certificate the server started with (when generated here).
    pub leaf: Option<CertificateDer<'static>>,
    stdout: Lines,
    stderr: Lines,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(options: Options) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (tls, leaf) = match options.tls {
            Some(files) => (files, None),
            None => {
                let ca = Ca::new("meshgate test CA");
                let serving = ca.issue();
                let files = TlsFiles {
                    cert: dir.path().join("tls.crt"),
                    key: dir.path().join("tls.key"),
                    ca_pem: ca.pem.clone(),
                };
                std::fs::write(&files.cert, &serving.cert_pem).unwrap();
                std::fs::write(&files.key, &serving.key_pem).unwrap();
                (files, Some(serving.der))
            }
        };
        let config = options.config.map(|yaml| {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, yaml).unwrap();
            path
        });
        let mut args = match options.kubeconfig {
            None => serve_args(&tls.cert, &tls.key, config.as_deref()),
            Some(_) => serve_args_without_state(&tls.cert, &tls.key, config.as_deref()),
        };
        if let Some(limit) = options.max_body_bytes {
            args.extend(["--max-body-bytes".into(), limit.to_string().into()]);
        }
        let drain_delay = options.drain_delay.unwrap_or_else(|| "0s".to_owned());
        args.extend(["--drain-delay".into(), drain_delay.into()]);
        args.extend(options.extra_args.into_iter().map(OsString::from));
        let mut command = Command::new(BIN);
        command.args(&args);
        isolate_environment(&mut command);
        if let Some(kubeconfig) = &options.kubeconfig {
            command.env("KUBECONFIG", kubeconfig);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meshgate");
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());

        let listening = |endpoint: &str| {
            stdout.lock().unwrap().iter().find_map(|line| {
                let v: Value = serde_json::from_str(line).ok()?;
                (v["message"] == "listening" && v["endpoint"] == endpoint)
                    .then(|| v["addr"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            })
        };
        let deadline = Instant::now() + START_BOUND;
        let wait_for_addresses = || loop {
            if let (Some(a), Some(m)) = (listening("webhook"), listening("metrics")) {
                break (a, m);
            }
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "meshgate exited during start-up with {status}\nstderr:\n{}\nstdout:\n{}",
                    stderr.lock().unwrap().join("\n"),
                    stdout.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "meshgate did not log both listening addresses within {START_BOUND:?}; stdout:\n{}",
                    stdout.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let (addr, metrics_addr) = off_the_runtime(wait_for_addresses);
        Server {
            child,
            addr,
            metrics_addr,
            client: https_client(&tls.ca_pem),
            ca_pem: tls.ca_pem,
            leaf,
            stdout,
            stderr,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// POSTs `body` with the API server's headers; the body is parsed as JSON
    /// when it is JSON, else returned as a string.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .header("user-agent", "kube-apiserver-admission")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        let bytes = response.bytes().await.unwrap();
        (status, body_value(&bytes))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        (response.status(), response.text().await.unwrap())
    }

    /// Sends a review to `/validate` and returns its `response`, after
    /// checking what the API server checks: HTTP 200, `admission.k8s.io/v1`
    /// `AdmissionReview`, and the request's uid echoed.
    pub async fn review(&self, review: Vec<u8>) -> Value {
        let uid = uid_of(&review);
        let (status, body) = self.post("/validate", review).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_valid_answer(&body, &uid);
        body["response"].clone()
    }

    pub async fn metrics(&self) -> Metrics {
        let response = reqwest::Client::builder()
            .no_proxy()
            .timeout(PROMPTLY)
            .build()
            .unwrap()
            .get(format!("http://{}/metrics", self.metrics_addr))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        Metrics(response.text().await.unwrap())
    }

    /// Every stdout line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Every stdout line so far, parsed; panics on a line that is not JSON.
    pub fn log_entries(&self) -> Vec<Value> {
        self.log_lines()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("log line {line:?}: {e}"))
            })
            .collect()
    }

    /// Waits (bounded) for a log entry that matches.
    pub async fn wait_for_log(&self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        eventually(what, PROMPTLY, || async {
            self.log_entries().into_iter().find(|e| matches(e))
        })
        .await
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM, as the kubelet does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("meshgate to exit", timeout, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: show what the server said.
            eprintln!(
                "--- meshgate stdout ---\n{}\n--- meshgate stderr ---\n{}",
                self.log_lines().join("\n"),
                self.stderr()
            );
        }
    }
}

/// The API server's checks on a webhook answer.
pub fn assert_valid_answer(body: &Value, uid: &str) {
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1", "{body}");
    assert_eq!(body["kind"], "AdmissionReview", "{body}");
    assert_eq!(body["response"]["uid"], uid, "uid not echoed: {body}");
    assert!(body["response"]["allowed"].is_boolean(), "{body}");
    assert!(body["response"].get("patch").is_none(), "{body}");
}

fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// How a process that was expected to stop ended.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs meshgate with `args` and waits (bounded) for it to exit on its own.
pub fn run_to_exit(args: &[OsString]) -> Exited {
    run_cli(args, Duration::from_secs(10))
}

/// Runs the meshgate binary with `args` (from the crate's directory, stdin
/// empty) and fails the test if it has not exited after `timeout`.
pub fn run_cli<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Exited {
    run_cli_with_input(args, &[], b"", timeout)
}

/// [`run_cli`] with `input` on stdin and `envs` set.
pub fn run_cli_with_input<S: AsRef<OsStr>>(
    args: &[S],
    envs: &[(&str, &str)],
    input: &[u8],
    timeout: Duration,
) -> Exited {
    let mut command = Command::new(BIN);
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    isolate_environment(&mut command);
    command.envs(envs.iter().copied());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshgate");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // Written and read from threads so a large input or output cannot
    // deadlock on full pipes.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read_all = |mut source: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = source.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meshgate {:?} still runs after {timeout:?}",
                command.get_args().collect::<Vec<_>>()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Exited {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Polls `probe` until it yields a value; fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bounds any single network step, so a hung server fails the test quickly.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PROMPTLY, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {PROMPTLY:?}: {what}"))
}

// ----------------------------------------------------------------- clients

fn reqwest_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .no_proxy()
        .timeout(PROMPTLY)
}

/// An HTTP/1.1 client trusting only `ca_pem`.
pub fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest_builder(ca_pem).http1_only().build().unwrap()
}

/// An HTTP/2 client (ALPN h2) trusting only `ca_pem`.
pub fn h2_client(ca_pem: &str) -> reqwest::Client {
    reqwest_builder(ca_pem)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
pub const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
pub const ANY_TLS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// A rustls client config trusting the CAs in `roots`.
pub fn tls_config(
    roots: &[&str],
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to an IP address: rustls sends no SNI for IPs, like the
/// API server with an IP webhook URL.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    within(
        "TLS handshake",
        TlsConnector::from(config).connect(ServerName::from(addr.ip()), tcp),
    )
    .await
}

/// What the TLS handshake settled on.
pub struct Negotiated {
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<Vec<u8>>,
    pub leaf: Option<CertificateDer<'static>>,
}

pub fn negotiated(stream: &TlsStream<TcpStream>) -> Negotiated {
    let conn = stream.get_ref().1;
    Negotiated {
        version: conn.protocol_version(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        leaf: conn.peer_certificates().and_then(|c| c.first().cloned()),
    }
}

/// One HTTP/1.1 keep-alive connection (hyper's client connection): every
/// request goes over the same TLS connection, or fails.
pub struct Http1 {
    sender: SendRequest<Full<Bytes>>,
    connection: JoinHandle<hyper::Result<()>>,
    host: String,
    pub tls: Negotiated,
}

impl Http1 {
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Http1 {
        let stream = tls_connect(addr, config).await.expect("TLS connect");
        let tls = negotiated(&stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
        Http1 {
            sender,
            connection: tokio::spawn(connection),
            host: addr.to_string(),
            tls,
        }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, Bytes) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/json")
            .header("user-agent", "kube-apiserver-admission")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        within(
            &format!("{method} {path} on the kept-alive connection"),
            async {
                self.sender.ready().await.expect("connection still usable");
                let response = self.sender.send_request(request).await.expect("response");
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            },
        )
        .await
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let (status, body) = self.send("POST", path, body).await;
        (status, body_value(&body))
    }

    pub async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let (status, body) = self.send("GET", path, Vec::new()).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    pub fn is_open(&self) -> bool {
        !self.connection.is_finished()
    }

    /// Whether the server closes the connection within `timeout`.
    pub async fn closed_within(self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.connection).await.is_ok()
    }
}

/// A response read from a raw HTTP/1.1 byte stream.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

/// HTTP/1.1 written by hand, for what clients do not let you do: a body that
/// arrives in pieces, chunked encoding, `Expect: 100-continue`.
pub struct RawConn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl RawConn<TlsStream<TcpStream>> {
    pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        RawConn {
            stream: tls_connect(addr, config).await.expect("TLS connect"),
            buf: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        within("write", async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = within("read", self.stream.read(&mut chunk)).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response: a 1xx interim one, or a final one whose body is
    /// delimited by Content-Length (or by the connection closing).
    pub async fn read_response(&mut self) -> RawResponse {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = self.fill().await.expect("read response head");
            assert!(n > 0, "connection closed before a response head");
        };
        let head = String::from_utf8(self.buf[..head_end].to_vec()).unwrap();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) {
            return response;
        }
        match response
            .header("content-length")
            .map(|v| v.parse().unwrap())
        {
            Some(len) => {
                while self.buf.len() < len {
                    let n = self.fill().await.expect("read response body");
                    assert!(n > 0, "connection closed inside the response body");
                }
                response.body = self.buf.drain(..len).collect();
            }
            None => {
                while self.fill().await.unwrap_or(0) > 0 {}
                response.body = std::mem::take(&mut self.buf);
            }
        }
        response
    }
}

/// Request head for a POST of `len` bytes (or chunked, when `len` is None).
pub fn post_head(path: &str, len: Option<usize>, extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-apiserver-admission\r\nContent-Type: application/json\r\nAccept: application/json, */*\r\n"
    );
    match len {
        Some(len) => head.push_str(&format!("Content-Length: {len}\r\n")),
        None => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// `body` in chunked transfer encoding, `size` bytes per chunk.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ----------------------------------------------------------------- metrics

/// A Prometheus/OpenMetrics text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of the samples named `name` whose labels include `labels`
    /// (0 when there is none, as for a counter never incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples(name)
            .filter(|(sample, _)| {
                labels
                    .iter()
                    .all(|(k, v)| sample.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples(name).next().is_some()
    }

    fn samples<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            if line.starts_with('#') {
                return None;
            }
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            Some((parse_labels(labels), value.parse().ok()?))
        })
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').trim().to_owned(), value));
        rest = &after[end..];
    }
    labels
}
