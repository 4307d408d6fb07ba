//! A real Kubernetes control plane for tests: etcd and kube-apiserver v1.36
//! on loopback, started by `shared/envtest/start.sh` (see its README).
//!
//! Each test gets its own state directory and ports and stops its processes
//! when the [`Envtest`] is dropped. Where the control plane is absent (a fresh
//! clone without `../shared/envtest`, or no `etcd` on PATH) the test is
//! skipped with a message, unless `MESHGATE_REQUIRE_ENVTEST=1` (set by
//! `.ci/run`) turns that into a failure.
//!
//! The directory is `MESHGATE_ENVTEST_DIR`, or the first `shared/envtest`
//! found walking up from the repository.

#![allow(dead_code)] // each test binary uses a different part of it

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The API server is ready in about 3 s; a loaded 2-core machine gets room.
const READY_BOUND: Duration = Duration::from_secs(90);

pub struct Envtest {
    dir: tempfile::TempDir,
    script: PathBuf,
    pub apiserver_port: u16,
    /// The API server's command line, to start it again after a stop.
    apiserver_command: Vec<OsString>,
}

/// Finds the envtest directory.
pub fn envtest_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESHGATE_ENVTEST_DIR") {
        return Some(PathBuf::from(dir));
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/envtest"))
        .find(|d| d.join("start.sh").is_file())
}

fn required() -> bool {
    std::env::var("MESHGATE_REQUIRE_ENVTEST").is_ok_and(|v| v == "1")
}

fn skip(test: &str, why: &str) -> Option<Envtest> {
    if required() {
        panic!("{test}: MESHGATE_REQUIRE_ENVTEST=1 but {why}");
    }
    eprintln!("SKIPPED {test}: {why} (set MESHGATE_ENVTEST_DIR to shared/envtest and install etcd-server to run it)");
    None
}

/// Starts a fresh control plane, or returns `None` (test skipped).
pub fn start(test: &str) -> Option<Envtest> {
    let Some(dir) = envtest_dir() else {
        return skip(test, "no shared/envtest directory found");
    };
    let script = dir.join("start.sh");
    if !script.is_file() {
        return skip(test, &format!("{} does not exist", script.display()));
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        return skip(test, "etcd is not on PATH (apt-get install -y etcd-server)");
    }
    // Ports are picked free just before the start; a rare clash is retried.
    let mut last_error = String::new();
    for _ in 0..3 {
        match try_start(&script) {
            Ok(env) => return Some(env),
            Err(e) => last_error = e,
        }
    }
    panic!("{test}: the envtest control plane did not start:\n{last_error}");
}

fn try_start(script: &Path) -> Result<Envtest, String> {
    let state = tempfile::Builder::new()
        .prefix("meshgate-envtest-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    link_cached_apiserver(script, state.path());
    let (apiserver_port, etcd_port) = free_ports();
    let out = Command::new("bash")
        .arg(script)
        .arg(state.path())
        .env("APISERVER_PORT", apiserver_port.to_string())
        .env("ETCD_PORT", etcd_port.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let mut env = Envtest {
        dir: state,
        script: script.to_owned(),
        apiserver_port,
        apiserver_command: Vec::new(),
    };
    if !out.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let pid = env.apiserver_pid().ok_or("no apiserver.pid")?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|e| e.to_string())?;
    env.apiserver_command = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| OsString::from(String::from_utf8_lossy(a).into_owned()))
        .collect();
    Ok(env)
}

/// Unpacking the 100 MB API server takes seconds: do it once per target
/// directory and link it into each state directory (start.sh checks its
/// checksum and unpacks again if it does not match).
fn link_cached_apiserver(script: &Path, state: &Path) {
    let envtest = script.parent().unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("envtest-bin");
    let cached = cache.join("kube-apiserver");
    let verified = || {
        Command::new("sha256sum")
            .args(["-c", "--status"])
            .arg(envtest.join("kube-apiserver.sha256"))
            .current_dir(&cache)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !cached.is_file() || !verified() {
        let _ = std::fs::create_dir_all(&cache);
        // Unpacked under a unique name and renamed: concurrent tests never
        // see a half-written binary.
        let tmp = cache.join(format!("kube-apiserver.{}", std::process::id()));
        let unpacked = std::fs::File::create(&tmp).ok().and_then(|file| {
            Command::new("xz")
                .arg("-dc")
                .arg(envtest.join("kube-apiserver.xz"))
                .stdout(file)
                .status()
                .ok()
        });
        if unpacked.is_some_and(|s| s.success()) {
            let _ = Command::new("chmod").arg("+x").arg(&tmp).status();
            let _ = std::fs::rename(&tmp, &cached);
        } else {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
    }
    let bin = state.join("bin");
    let _ = std::fs::create_dir_all(&bin);
    let _ = std::os::unix::fs::symlink(&cached, bin.join("kube-apiserver"));
}

/// An API server port, and an etcd client port whose successor (the peer
/// port) is free too.
fn free_ports() -> (u16, u16) {
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    for _ in 0..100 {
        let apiserver = TcpListener::bind("127.0.0.1:0").unwrap();
        let etcd = TcpListener::bind("127.0.0.1:0").unwrap();
        let etcd_port = port(&etcd);
        if etcd_port < u16::MAX && TcpListener::bind(("127.0.0.1", etcd_port + 1)).is_ok() {
            return (port(&apiserver), etcd_port);
        }
    }
    panic!("no free loopback ports for envtest");
}

impl Envtest {
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// PEM of the cluster CA; it also signs webhook serving certificates.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap()
    }

    pub fn ca_key_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ca.key")).unwrap()
    }

    /// An admin client (group system:masters).
    pub async fn client(&self) -> Client {
        Client::try_from(self.config().await).unwrap()
    }

    /// A client that impersonates `user` (RBAC applies to it).
    pub async fn client_as(&self, user: &str) -> Client {
        let mut config = self.config().await;
        config.auth_info.impersonate = Some(user.to_owned());
        Client::try_from(config).unwrap()
    }

    async fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).unwrap();
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap()
    }

    fn apiserver_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("apiserver.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
    }

    /// Stops the API server only; etcd and its data stay.
    pub fn stop_apiserver(&self) {
        let Some(pid) = self.apiserver_pid() else {
            return;
        };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Self::alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Self::alive(pid) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_file(self.dir.path().join("apiserver.pid"));
    }

    /// Starts the API server again on the same etcd, port and certificates,
    /// and waits until it is ready.
    pub fn start_apiserver(&self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.path().join("apiserver.log"))
            .unwrap();
        let child = Command::new(&self.apiserver_command[0])
            .args(&self.apiserver_command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart kube-apiserver");
        std::fs::write(
            self.dir.path().join("apiserver.pid"),
            child.id().to_string(),
        )
        .unwrap();
        // Reaped by a thread so it never lingers as a zombie after a stop.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        self.wait_ready();
    }

    /// Stops and starts the API server.
    pub fn restart_apiserver(&self) {
        self.stop_apiserver();
        self.start_apiserver();
    }

    fn is_ready(&self) -> bool {
        let pki = self.dir.path().join("pki");
        Command::new("curl")
            .args(["-fsS", "--max-time", "2", "--cacert"])
            .arg(self.dir.path().join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("https://127.0.0.1:{}/readyz", self.apiserver_port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + READY_BOUND;
        while !self.is_ready() {
            if Instant::now() > deadline {
                panic!(
                    "kube-apiserver not ready within {READY_BOUND:?}; log tail:\n{}",
                    self.apiserver_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn apiserver_log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs `kubectl` against this cluster with `stdin` as input and fails
    /// the test unless it succeeds within a minute; returns its stdout.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--request-timeout=20s")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl on PATH");
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_owned();
        std::thread::spawn(move || {
            let _ = input.write_all(stdin.as_bytes());
        });
        let pid = child.id();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        let out = match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.expect("kubectl ran"),
            Err(_) => {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!("kubectl {args:?} still runs after 60 s");
            }
        };
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Envtest {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ------------------------------------------------------------ cluster helpers

/// The `v1` Istio custom resources of `kind` (in `group`) in `ns`.
pub fn istio_api(client: &Client, ns: &str, group: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind));
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Installs Istio's CRDs (tests/fixtures/istio-crds.yaml) and waits until the
/// API server serves them.
pub async fn install_istio_crds(client: &Client) {
    install_crds(
        client,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/istio-crds.yaml"
        ),
    )
    .await;
}

/// Installs meshgate's exemption CRDs (the chart's own file), as the chart
/// always does.
pub async fn install_exemption_crds(client: &Client) {
    install_crds(
        client,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/meshgate/files/crds/meshgate-exemptions.yaml"
        ),
    )
    .await;
}

/// Installs the chart's PolicyReport CRDs (`file` under
/// charts/meshgate/files/crds/) and waits until the API server serves them.
pub async fn install_report_crds(client: &Client, file: &str) {
    let path = format!(
        "{}/charts/meshgate/files/crds/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    install_crds(client, &path).await;
}

/// Creates the CRDs of a multi-document YAML file and waits until each is
/// established.
pub async fn install_crds(client: &Client, path: &str) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::PostParams;

    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        names.push(crd.metadata.name.clone().unwrap());
        api.create(&PostParams::default(), &crd).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for name in names {
        loop {
            let crd = api.get(&name).await.unwrap();
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(Instant::now() < deadline, "CRD {name} not established");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Creates namespace `name` with `labels`.
pub async fn create_namespace(client: &Client, name: &str, labels: serde_json::Value) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::PostParams;

    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}
