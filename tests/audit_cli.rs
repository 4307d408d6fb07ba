//! `meshgate audit` and the server's logs through the built binary: the
//! own-namespace exemption, runs that checked nothing, big inputs, and no
//! colour codes where no terminal reads them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn audit_stdin(args: &[&str], envs: &[(&str, &str)], input: &[u8]) -> Exited {
    let args: Vec<&str> = std::iter::once("audit")
        .chain(args.iter().copied())
        .collect();
    run_cli_with_input(&args, envs, input, Duration::from_secs(60))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template mg charts/meshgate -n meshgate`, as the issue ran it.
fn rendered_chart() -> Vec<u8> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/meshgate");
    let out = Command::new("helm")
        .args(["template", "mg", chart, "-n", "meshgate"])
        .output()
        .expect("helm (scripts/install-test-tools.sh installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

#[test]
fn auditing_the_chart_reports_nothing_on_meshgate_itself() {
    let chart = rendered_chart();
    let o = audit_stdin(&["-"], &[], &chart);
    let stdout = o.stdout.clone();
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", o.stderr.clone());
    assert!(!stdout.contains("DENY"), "{stdout}");
    assert!(stdout.contains("0 enforce-level findings"), "{stdout}");

    // Installed elsewhere, the flag or MESHGATE_NAMESPACE names it;
    // `meshgate` is then an ordinary namespace and its pods are judged.
    for (args, envs) in [
        (&["--own-namespace", "tools", "-"][..], &[][..]),
        (&["-"][..], &[("MESHGATE_NAMESPACE", "tools")][..]),
    ] {
        let o = audit_stdin(args, envs, &chart);
        let stdout = o.stdout.clone();
        assert_eq!(o.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains("DENY"), "{stdout}");
        assert!(
            stdout.contains("Deployment meshgate/mg-meshgate"),
            "{stdout}"
        );
    }
}

#[test]
fn a_run_that_checked_no_object_says_so_and_exits_2() {
    let configmap = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n";
    for input in [&b""[..], &b"# only a comment\n---\n"[..], &configmap[..]] {
        let o = audit_stdin(&["-"], &[], input);
        assert_eq!(o.status.code(), Some(2), "{}", o.stdout.clone());
        assert!(
            o.stderr.clone().contains("checked 0 objects"),
            "{}",
            o.stderr.clone()
        );
        assert!(o.stdout.clone().contains("0 objects checked"));
    }
    // JSON output too: the report is printed, the status still says it.
    let o = audit_stdin(&["--output", "json", "-"], &[], configmap);
    assert_eq!(o.status.code(), Some(2));
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["summary"]["objectsChecked"], 0);
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("meshgate test CA");
    let serving = ca.issue();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &serving.cert_pem).unwrap();
    std::fs::write(&key, &serving.key_pem).unwrap();
    let mut args = serve_args(&cert, &key, None);
    let format = args.iter().position(|a| a == "json").unwrap();
    args[format] = "text".into();
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("MESHGATE_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.contains("listening"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match receive.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join("\n");
    assert!(log.contains("listening"), "no listening line in {log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a pipe: {log:?}");
    assert!(log.contains(" INFO "), "text format expected: {log}");
}

#[test]
fn yaml_line_numbers_stay_linear_in_the_number_of_documents() {
    // 80,000 lines of comments and separators (240 KB) took 25 s when each
    // separator re-read the lines before it.
    let mut input = "#\n".repeat(40_000);
    input.push_str(&"---\n".repeat(40_000));
    input.push_str("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let started = Instant::now();
    let o = audit_stdin(&["--output", "json", "-"], &[], input.as_bytes());
    let elapsed = started.elapsed();
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        report["summary"]["objectsChecked"],
        1,
        "{}",
        o.stderr.clone()
    );
    assert_eq!(report["findings"][0]["line"], 80_001, "{report}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A directory of manifests as a repository holds them: an enrolled
/// namespace with a workload, plus what is not a Kubernetes object.
fn manifest_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("app")).unwrap();
    std::fs::write(
        root.join("app/namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
    )
    .unwrap();
    // Helm values, a kustomization without apiVersion/kind, meshgate's
    // own config: none is a Kubernetes object.
    std::fs::write(
        root.join("values.yaml"),
        "replicaCount: 2\nimage: {tag: v1}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("app/kustomization.yaml"),
        "resources: [namespace.yaml, deployment.yaml]\n",
    )
    .unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/meshgate.yaml"),
        root.join("meshgate.yaml"),
    )
    .unwrap();
    dir
}

fn objects_checked(o: &Exited) -> serde_json::Value {
    let report: serde_json::Value = serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", o.stdout, o.stderr));
    report["summary"]["objectsChecked"].clone()
}

#[test]
fn a_directory_with_symlink_loops_is_read_once() {
    let tree = manifest_tree();
    let root = tree.path();
    std::os::unix::fs::symlink(".", root.join("x")).unwrap();
    std::os::unix::fs::symlink("..", root.join("app/up")).unwrap();
    let o = run_cli(
        &["audit", "--output", "json", root.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(objects_checked(&o), 2, "{}", o.stderr);
    // 1: the workload's findings; a failed read would be 2.
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    for skipped in [
        "app/up: directory already read",
        "/x: directory already read",
        "values.yaml: document 1: not a Kubernetes object",
        "kustomization.yaml: document 1: not a Kubernetes object",
        "meshgate.yaml: document 1: not a Kubernetes object",
    ] {
        assert!(o.stderr.contains(skipped), "{skipped:?} in\n{}", o.stderr);
    }
    assert_eq!(o.stderr.lines().count(), 5, "{}", o.stderr);
}

#[test]
fn a_fifo_in_a_directory_is_skipped_not_waited_on() {
    let tree = manifest_tree();
    let fifo = tree.path().join("app/pipe.yaml");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // run_cli fails the test if the audit still runs after the timeout:
    // before, it blocked forever opening the FIFO.
    let o = run_cli(
        &["audit", "--output", "json", tree.path().to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(objects_checked(&o), 2, "{}", o.stderr);
    // 1: the workload's findings; a failed read would be 2.
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("pipe.yaml: not a regular file (a FIFO, socket or device)"),
        "{}",
        o.stderr
    );
}

#[test]
fn what_is_named_or_claims_to_be_an_object_is_still_an_error() {
    let tree = manifest_tree();
    // Named on the command line, a values file is a mistake: exit 2.
    let values = tree.path().join("values.yaml");
    let o = run_cli(
        &["audit", values.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(2), "{}", o.stdout);
    assert!(
        o.stderr
            .contains("values.yaml, document 1: not a Kubernetes object"),
        "{}",
        o.stderr
    );
    // In a directory, a document with a kind but no apiVersion claims to be
    // an object: it is not skipped, or a broken Deployment would pass.
    std::fs::write(
        tree.path().join("app/broken.yaml"),
        "kind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  template:\n    spec: {hostNetwork: true, containers: [{name: web, image: nginx}]}\n",
    )
    .unwrap();
    let o = run_cli(
        &["audit", tree.path().to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(o.status.code(), Some(2), "{}", o.stdout);
    assert!(
        o.stderr.contains(
            "broken.yaml, document 1: not a Kubernetes object: apiVersion and kind are required"
        ),
        "{}",
        o.stderr
    );
}
