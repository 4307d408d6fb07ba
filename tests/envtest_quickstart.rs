//! The Quickstart (docs/src/quickstart.md), run as a newcomer would: every
//! command of the page, in order and verbatim, against a real kube-apiserver
//! (envtest) with the built `meshgate` serving the webhooks.
//!
//! The page's convention is in `quickstart/page.rs`: every line of a
//! ```` ```sh ```` block is run with `bash -c` from the repository root, and
//! a ```` ```text ```` block after one is compared with its real output. What
//! prepares the cluster (kind, `istioctl install`) sits in a
//! ```` ```console ```` block, which is not run: envtest gets Istio's CRDs
//! (tests/fixtures/istio-crds.yaml) and an `istio-system` namespace instead.
//!
//! envtest has no kubelet, so the chart's pods never run. The one adaptation,
//! to the `helm install` command only (and asserted here, so the page's
//! command cannot change shape unnoticed): `--wait` is dropped, and the
//! certificate values make the webhooks trust a certificate for 127.0.0.1.
//! Then the test does what the pods would (`quickstart/release.rs`).

mod common;
mod envtest;
mod quickstart;

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use quickstart::page::{expects_failure, shows, steps, Step};
use quickstart::release;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/quickstart.md");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The page's install command, as this test expects it.
const HELM_INSTALL: &str = "helm install meshgate charts/meshgate -n meshgate --create-namespace --set policyReports.installCRDs=true --wait";
/// Where the page's commands may take a while on a loaded 2-core machine.
const COMMAND_BOUND: Duration = Duration::from_secs(60);
/// Reports are written about a second after a change; room for load.
const REPORT_BOUND: Duration = Duration::from_secs(30);

/// The page's `helm install`, adapted for envtest (module documentation).
fn adapted_helm_install(command: &str, ca_file: &Path) -> String {
    assert_eq!(
        command, HELM_INSTALL,
        "the page's helm install changed: update HELM_INSTALL and the adaptation"
    );
    let without_wait = command.strip_suffix(" --wait").unwrap();
    format!(
        "{without_wait} --set certificates.mode=existingSecret \
         --set certificates.existingSecret.name=meshgate-envtest-tls \
         --set-file certificates.existingSecret.caBundle={}",
        ca_file.display()
    )
}

/// Runs `command` with bash from the repository root against `kubeconfig`;
/// returns whether it succeeded and its output (stdout and stderr in the
/// order written, as on a terminal).
fn run(command: &str, kubeconfig: &Path, home: &Path) -> (bool, String) {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let out = out_file.reopen().unwrap();
    let mut child = Command::new("bash")
        .args(["-c", command])
        .current_dir(REPO)
        .env("KUBECONFIG", kubeconfig)
        // Helm's cache and config stay in the test's directory.
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("bash");
    let deadline = Instant::now() + COMMAND_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} still runs after {COMMAND_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    out_file
        .reopen()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status.success(), output)
}

/// What the page says after the switch: a new workload like web is now
/// denied in legacy too (server-side dry run, so the page's state stays).
async fn assert_new_web_denied_in_legacy(client: &Client) {
    let text = std::fs::read_to_string(format!("{REPO}/examples/quickstart/web.yaml")).unwrap();
    let mut deployment: Deployment = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .find(|doc: &serde_json::Value| doc["kind"] == "Deployment")
        .map(|doc| serde_json::from_value(doc).unwrap())
        .expect("a Deployment in web.yaml");
    deployment.metadata.name = Some("web-2".to_owned());
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    match Api::<Deployment>::namespaced(client.clone(), "legacy")
        .create(&dry_run, &deployment)
        .await
    {
        Err(kube::Error::Api(e)) => assert!(
            // The webhook's denial, or the native policy's when the API
            // server evaluates it first (the chart turns them on).
            e.code == 403
                && (e.message
                    .contains("meshgate denied deployment legacy/web-2: [sidecar-required]")
                    || e.message.contains(
                        "ValidatingAdmissionPolicy 'meshgate-sidecar-required' with binding 'meshgate-sidecar-required' denied request: [sidecar-required]"
                    )),
            "{e:?}"
        ),
        other => panic!("a new web in legacy should be denied now: {other:?}"),
    }
}

/// Runs one step; read-only `kubectl get` steps are run again until they
/// show what the page shows (the background audit writes its reports a
/// moment after a change, and a reader would run them again too).
fn run_step(step: &Step, command: &str, kubeconfig: &Path, home: &Path) -> Result<(), String> {
    let retried = command.starts_with("kubectl get ") && step.shown.is_some();
    let deadline = Instant::now() + REPORT_BOUND;
    loop {
        let (succeeded, output) = run(command, kubeconfig, home);
        eprintln!("$ {command}\n{output}");
        let matches = step
            .shown
            .as_ref()
            .is_none_or(|shown| shows(shown, &output));
        if succeeded != expects_failure(step) && matches {
            return Ok(());
        }
        if !retried || Instant::now() > deadline {
            return Err(format!(
                "{command:?} {} and its output differs from the page's.\npage:\n{}\nreal:\n{output}",
                if succeeded { "succeeded" } else { "failed" },
                step.shown.as_deref().unwrap_or_default().join("\n"),
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_of_the_quickstart_runs_and_shows_what_the_page_shows() {
    let page = std::fs::read_to_string(PAGE).unwrap();
    let steps = steps(&page);
    check_claims(&steps);
    if let Some(tool) = missing_tool() {
        let why = format!("{tool} is not on PATH (scripts/install-test-tools.sh)");
        if std::env::var("MESHGATE_REQUIRE_ENVTEST").is_ok_and(|v| v == "1") {
            panic!("envtest_quickstart: MESHGATE_REQUIRE_ENVTEST=1 but {why}");
        }
        eprintln!("SKIPPED envtest_quickstart: {why}");
        return;
    }
    let Some(env) = envtest::start("envtest_quickstart") else {
        return;
    };
    let client = env.client().await;
    // What `istioctl install` leaves behind, as far as meshgate can tell.
    envtest::install_istio_crds(&client).await;
    envtest::create_namespace(&client, "istio-system", json!({})).await;

    let dir = tempfile::tempdir().unwrap();
    let ca = common::Ca::new("meshgate quickstart CA");
    let serving = ca.issue();
    std::fs::write(dir.path().join("tls.crt"), &serving.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &serving.key_pem).unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let started = Instant::now();
    let mut pod = None;
    for step in &steps {
        let command = if step.command.starts_with("helm install ") {
            adapted_helm_install(&step.command, &ca_file)
        } else {
            step.command.clone()
        };
        if let Err(failure) = run_step(step, &command, &env.kubeconfig(), dir.path()) {
            let log = pod.as_ref().map(release::Pod::log_tail).unwrap_or_default();
            panic!("{failure}\nmeshgate's log (last lines):\n{log}");
        }
        if step.command.starts_with("helm install ") {
            let mut meshgate = release::start_pod(&client, &env, port, dir.path()).await;
            release::wait_ready(&mut meshgate, port, &ca.pem).await;
            release::point_webhooks_at(&client, port, &ca.pem).await;
            release::wait_native_policies(&client).await;
            pod = Some(meshgate);
        }
    }
    assert!(pod.is_some(), "the page installs meshgate");
    assert_new_web_denied_in_legacy(&client).await;
    eprintln!(
        "the quickstart's {} commands ran in {:?}",
        steps.len(),
        started.elapsed()
    );
}

/// The page's tools, if one is missing.
fn missing_tool() -> Option<&'static str> {
    [("helm", "version"), ("kubectl", "version --client")]
        .into_iter()
        .find(|(tool, args)| {
            !Command::new(tool)
                .args(args.split(' '))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(tool, _)| tool)
}

/// What the page promises, whatever its wording: fewer than ten commands, a
/// denial, an audit warning, a PolicyReport result, and the switch of a
/// namespace to enforce with the result it changes.
fn check_claims(steps: &[Step]) {
    assert!(
        !steps.is_empty() && steps.len() < 10,
        "{} commands",
        steps.len()
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.command.starts_with("helm install "))
            .count(),
        1
    );
    let shown = |needle: &str| {
        steps
            .iter()
            .any(|s| s.shown.iter().flatten().any(|l| l.contains(needle)))
    };
    // The denial: the native policy's (on by default, evaluated before the
    // webhooks), or the webhook's when the page is run with them off.
    assert!(
        shown("ValidatingAdmissionPolicy 'meshgate-sidecar-required' with binding 'meshgate-sidecar-required' denied request: [sidecar-required]")
            || shown("admission webhook \"workloads.validate.meshgate.io\" denied the request: meshgate denied")
    );
    assert!(shown("Warning: [meshgate audit]"));
    assert!(steps
        .iter()
        .any(|s| s.command.starts_with("kubectl get policyreport")));
    assert!(shown("warn sidecar-required Deployment/web"));
    assert!(
        steps
            .iter()
            .any(|s| s.command == "kubectl label namespace legacy meshgate.io/mode-"),
        "the page switches legacy to enforce"
    );
    assert!(shown("fail sidecar-required Deployment/web"));
}
