//! A real one-node cluster for tests: kubelet, containerd, scheduler and
//! controller-manager around the envtest API server, started by
//! `shared/cluster/start.sh` (see its README), with the meshgate image built
//! from the Dockerfile by `scripts/build-image.sh` imported into containerd.
//!
//! One cluster per machine (one containerd socket, one `cni0`, port 10250):
//! each test binary holds one [`Node`] at a time, and cargo runs test
//! binaries one after the other. The cluster is stopped when the [`Node`] is
//! dropped, also when the test panics.
//!
//! Skipped with a message where it cannot run (no `shared/cluster`, not
//! root, no image), unless `MESHGATE_REQUIRE_NODE=1` (set by `.ci/run` where
//! `../shared/cluster` exists and it runs as root) turns that into a failure.

#![allow(dead_code)] // each test binary uses a different part of it

pub mod load;
pub mod replicas;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The meshgate image scripts/build-image.sh builds and names.
pub const IMAGE_REPOSITORY: &str = "localhost/meshgate";
pub const IMAGE_TAG: &str = "node-test";
/// The release namespace and name every test installs the chart with.
pub const RELEASE: &str = "meshgate";
pub const NAMESPACE: &str = "meshgate";
/// Every kubectl/helm call is bounded; helm's own `--timeout` is shorter.
const COMMAND_BOUND: Duration = Duration::from_secs(200);

pub struct Node {
    state: tempfile::TempDir,
    script: PathBuf,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `MESHGATE_NODE_DIR`, or the first `shared/cluster` above the repository.
pub fn cluster_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESHGATE_NODE_DIR") {
        return Some(PathBuf::from(dir));
    }
    repo()
        .ancestors()
        .map(|a| a.join("shared/cluster"))
        .find(|d| d.join("start.sh").is_file())
}

/// The image archive of scripts/build-image.sh.
pub fn image_archive() -> PathBuf {
    std::env::var_os("MESHGATE_NODE_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/node-image/meshgate.tar"))
}

fn required() -> bool {
    std::env::var("MESHGATE_REQUIRE_NODE").is_ok_and(|v| v == "1")
}

pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    if required() {
        panic!("{test}: MESHGATE_REQUIRE_NODE=1 but {why}");
    }
    eprintln!("SKIPPED {test}: {why} (needs root, shared/cluster beside the repository and scripts/build-image.sh run first)");
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Starts a fresh cluster with the meshgate image imported, or returns
/// `None` (test skipped).
pub fn start(test: &str) -> Option<Node> {
    let Some(dir) = cluster_dir() else {
        return skip(test, "no shared/cluster directory found");
    };
    if !is_root() {
        return skip(test, "not root (the kubelet and containerd need it)");
    }
    let archive = image_archive();
    if !archive.is_file() {
        return skip(
            test,
            &format!(
                "no image archive {} (scripts/build-image.sh)",
                archive.display()
            ),
        );
    }
    // Ports are picked free just before the start; another engineer's
    // envtest can take one in between: a failed start is stopped and retried.
    let mut last_error = String::new();
    for _ in 0..3 {
        let started = Instant::now();
        match try_start(&dir) {
            Ok(node) => {
                eprintln!(
                    "{test}: node Ready in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                node.import_image(&archive);
                return Some(node);
            }
            Err(error) => last_error = error,
        }
    }
    panic!("{test}: start.sh failed three times; last:\n{last_error}");
}

fn try_start(dir: &Path) -> Result<Node, String> {
    let state = tempfile::Builder::new()
        .prefix("meshgate-node-")
        .tempdir()
        .map_err(|e| format!("state directory: {e}"))?;
    // Built before the start: a failed start is stopped when it is dropped.
    let node = Node {
        state,
        script: dir.join("start.sh"),
    };
    let (apiserver, etcd) = free_ports();
    let out = run_bounded(
        Command::new("bash")
            .arg(&node.script)
            .arg(node.state.path())
            .env("APISERVER_PORT", apiserver.to_string())
            .env("ETCD_PORT", etcd.to_string())
            // images.sh packages no host binary: the image under test is the
            // Dockerfile's.
            .env("MESHGATE_BIN", "/nonexistent"),
        "",
    );
    if out.status.success() {
        Ok(node)
    } else {
        Err(show(&out))
    }
}

/// An API server port, and an etcd client port whose successor (the peer
/// port) is free too: other engineers' envtest clusters use random ports.
fn free_ports() -> (u16, u16) {
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    for _ in 0..100 {
        let (Ok(apiserver), Ok(etcd)) = (
            TcpListener::bind("127.0.0.1:0"),
            TcpListener::bind("127.0.0.1:0"),
        ) else {
            continue;
        };
        let etcd_port = port(&etcd);
        if etcd_port < u16::MAX && TcpListener::bind(("127.0.0.1", etcd_port + 1)).is_ok() {
            return (port(&apiserver), etcd_port);
        }
    }
    panic!("no free loopback ports for the node's API server and etcd");
}

/// Runs `command` with `stdin`, killed after [`COMMAND_BOUND`].
pub fn run_bounded(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin piped");
    let stdin = stdin.to_owned();
    std::thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(COMMAND_BOUND) {
        Ok(out) => out.expect("command ran"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{command:?} still runs after {COMMAND_BOUND:?}");
        }
    }
}

pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Node {
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.state.path().join("kubeconfig")
    }

    fn import_image(&self, archive: &Path) {
        let out = run_bounded(
            Command::new("ctr")
                .args(["-a", "/run/containerd/containerd.sock", "-n", "k8s.io"])
                .args(["images", "import"])
                .arg(archive),
            "",
        );
        assert!(out.status.success(), "ctr images import: {}", show(&out));
        let listed = run_bounded(
            Command::new("ctr").args([
                "-a",
                "/run/containerd/containerd.sock",
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ]),
            "",
        );
        let image = format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}");
        assert!(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .any(|l| l == image),
            "{image} not in containerd after the import: {}",
            show(&listed)
        );
    }

    /// `kubectl args` with `stdin`; the whole output, whatever the exit.
    pub fn kubectl_output(&self, args: &[&str], stdin: &str) -> Output {
        run_bounded(
            Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .arg("--request-timeout=30s")
                // Its own discovery cache: ~/.kube/cache is keyed by
                // host:port, and other engineers' API servers reuse ports.
                .arg("--cache-dir")
                .arg(self.state.path().join("kube-cache"))
                .args(args),
            stdin,
        )
    }

    /// `kubectl args`, which must succeed; its stdout.
    pub fn kubectl(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(out.status.success(), "kubectl {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm args` against this cluster; the whole output.
    pub fn helm_output(&self, args: &[&str]) -> Output {
        run_bounded(
            Command::new("helm")
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                // Caches and config of this cluster only (see kubectl_output);
                // --debug, so that a failure shows what helm was waiting for.
                .env("HOME", self.state.path())
                .env("HELM_CACHE_HOME", self.state.path().join("helm-cache"))
                .env("HELM_CONFIG_HOME", self.state.path().join("helm-config"))
                .env("HELM_DATA_HOME", self.state.path().join("helm-data"))
                .arg("--debug")
                .args(args),
            "",
        )
    }

    pub fn helm(&self, args: &[&str]) -> String {
        let out = self.helm_output(args);
        assert!(out.status.success(), "helm {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm install` of the chart as release [`RELEASE`] in [`NAMESPACE`]
    /// with the local image and `extra` arguments (`--set ...`); does not
    /// wait for the pods.
    pub fn install_chart(&self, extra: &[&str]) {
        let chart = repo().join("charts/meshgate");
        let mut args = vec![
            "install",
            RELEASE,
            chart.to_str().expect("UTF-8 path"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--set",
            "image.repository=localhost/meshgate",
            "--set",
            "image.tag=node-test",
        ];
        args.extend_from_slice(extra);
        self.helm(&args);
    }

    /// Applies a manifest (YAML, several documents allowed).
    pub fn apply(&self, manifest: &str) {
        self.kubectl(&["apply", "-f", "-"], manifest);
    }

    /// Polls `check` every 250 ms until it is true; fails after `bound`.
    /// Returns the time it took.
    pub fn wait_for(
        &self,
        what: &str,
        bound: Duration,
        mut check: impl FnMut() -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > bound {
                panic!(
                    "{what}: not within {bound:?}\n{}\n{}\n{}",
                    self.kubectl_text(&["get", "pods,leases", "-A", "-o", "wide"]),
                    self.kubectl_text(&["get", "events", "-n", NAMESPACE]),
                    self.kubectl_text(&[
                        "get",
                        "pods",
                        "-n",
                        NAMESPACE,
                        "-o",
                        "jsonpath={.items[*].status.containerStatuses}"
                    ])
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        start.elapsed()
    }

    /// kubectl's stdout and stderr, for failure messages.
    pub fn kubectl_text(&self, args: &[&str]) -> String {
        show(&self.kubectl_output(args, ""))
    }

    /// Names of the meshgate pods that are Ready (not terminating).
    pub fn ready_pods(&self) -> Vec<String> {
        let out = self.kubectl_output(
            &[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                "app.kubernetes.io/name=meshgate",
                "-o",
                "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}-{.metadata.name}{\"\\n\"}{end}{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ],
            "",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let terminating: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix('-')).collect();
        text.lines()
            .filter_map(|l| l.strip_suffix(" True"))
            .filter(|name| !terminating.contains(name))
            .map(str::to_owned)
            .collect()
    }

    /// The logs of every container of every meshgate pod ever seen by
    /// `kubectl logs` now (current and previous instances).
    pub fn meshgate_logs(&self) -> String {
        let mut all = String::new();
        for previous in ["--previous=false", "--previous=true"] {
            let out = self.kubectl_output(
                &[
                    "logs",
                    "-n",
                    NAMESPACE,
                    "-l",
                    "app.kubernetes.io/name=meshgate",
                    "--tail=-1",
                    "--prefix",
                    previous,
                ],
                "",
            );
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        all
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(self.state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One measured figure: printed for the run's log and appended to
/// `target/node-figures.txt` (docs/src/operations/real-node.md quotes them).
pub fn figure(test: &str, name: &str, value: impl std::fmt::Display) {
    let line = format!("{test}: {name} = {value}");
    eprintln!("FIGURE {line}");
    let path = repo().join("target/node-figures.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}
