//! The Quickstart (docs/src/quickstart.md), run as a newcomer would: every
//! command of the page, in order and verbatim, against a real kube-apiserver
//! (envtest) with the built `meshgate` serving the webhooks.
//!
//! The page's convention, which this test relies on:
//! - every non-blank line of a ```` ```sh ```` block is one command, run with
//!   `bash -c` from the repository root;
//! - a ```` ```text ```` block right after a ```` ```sh ```` block shows the
//!   output of that block's last command (stdout and stderr, as a terminal
//!   shows them): each of its lines must be a line of the real output, in
//!   order (the page may leave lines out; ages such as `3s` match any age).
//!   A shown `Error from server` means the command must fail; otherwise it
//!   must succeed;
//! - what prepares the cluster (kind, `istioctl install`) sits in a
//!   ```` ```console ```` block, which is not run: envtest has Istio's CRDs
//!   (tests/fixtures/istio-crds.yaml) and an `istio-system` namespace instead.
//!
//! envtest has no kubelet, so the chart's pods never run. The one adaptation,
//! to the `helm install` command only (and asserted here, so the page's
//! command cannot change shape unnoticed): `--wait` is dropped, and the
//! certificate values make the webhooks trust a certificate for 127.0.0.1.
//! Then the test does what the pods would: it runs the built binary with the
//! installed Deployment's arguments and environment and the installed
//! ConfigMap's config, on loopback, and points the installed webhook
//! configurations at it (`url:` instead of the Service, which the API server
//! cannot reach here).

mod common;
mod envtest;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/quickstart.md");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The page's install command, as this test expects it.
const HELM_INSTALL: &str = "helm install meshgate charts/meshgate -n meshgate --create-namespace --set policyReports.installCRDs=true --wait";
const RELEASE: &str = "meshgate";
/// Where the page's commands may take a while on a loaded 2-core machine.
const COMMAND_BOUND: Duration = Duration::from_secs(60);
/// Reports are written about a second after a change; room for load.
const REPORT_BOUND: Duration = Duration::from_secs(30);

/// One command of the page and the output it shows, if any.
#[derive(Debug, PartialEq)]
struct Step {
    command: String,
    shown: Option<Vec<String>>,
}

/// The page's steps, by the convention in the module documentation.
fn steps(page: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut fence: Option<String> = None;
    // Whether the last block closed was a sh block, with only blank lines since.
    let mut after_sh = false;
    for line in page.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            match fence.take() {
                Some(closed) => after_sh = closed == "sh",
                None => {
                    let info = info.trim().to_owned();
                    if info == "text" && after_sh {
                        let last = steps.last_mut().expect("a sh block before");
                        assert!(last.shown.is_none(), "two outputs for {:?}", last.command);
                        last.shown = Some(Vec::new());
                    }
                    if info != "text" || !after_sh {
                        after_sh = false;
                    }
                    fence = Some(info);
                }
            }
            continue;
        }
        match fence.as_deref() {
            Some("sh") if !line.trim().is_empty() => {
                assert!(!line.ends_with('\\'), "one command per line: {line}");
                steps.push(Step {
                    command: line.trim().to_owned(),
                    shown: None,
                });
            }
            Some("text") if after_sh => {
                if let Some(shown) = steps.last_mut().and_then(|s| s.shown.as_mut()) {
                    shown.push(line.to_owned());
                }
            }
            None if !line.trim().is_empty() => after_sh = false,
            _ => {}
        }
    }
    assert!(fence.is_none(), "an unclosed code block in the page");
    steps
}

/// A line as compared: whitespace collapsed, ages (`3s`, `2m10s`) as `AGE`.
fn normalized(line: &str) -> String {
    let is_age = |word: &str| {
        !word.is_empty()
            && word.chars().next().is_some_and(|c| c.is_ascii_digit())
            && word
                .chars()
                .all(|c| c.is_ascii_digit() || "smhd".contains(c))
            && word.chars().last().is_some_and(|c| "smhd".contains(c))
    };
    line.split_whitespace()
        .map(|word| if is_age(word) { "AGE" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether every shown line is a line of `output`, in order.
fn shows(shown: &[String], output: &str) -> bool {
    let mut actual = output.lines().map(normalized);
    shown
        .iter()
        .map(|l| normalized(l))
        .filter(|l| !l.is_empty())
        .all(|want| actual.any(|got| got == want))
}

fn expects_failure(step: &Step) -> bool {
    step.shown
        .as_ref()
        .is_some_and(|lines| lines.iter().any(|l| l.contains("Error from server")))
}

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

/// The built binary in the role of the chart's pod.
struct Pod {
    child: Child,
    log: common::Lines,
}

impl Pod {
    fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meshgate` with the installed Deployment's arguments and
/// environment, on `port` with the test's certificate and the installed
/// ConfigMap's config, as a pod of the release would run.
async fn start_pod(client: &Client, env: &envtest::Envtest, port: u16, dir: &Path) -> Pod {
    let deployment = Api::<Deployment>::namespaced(client.clone(), RELEASE)
        .get(RELEASE)
        .await
        .unwrap();
    let spec = deployment.spec.unwrap().template.spec.unwrap();
    // The ConfigMap the pod mounts as its config.
    let config_map = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "config")
        .and_then(|v| v.config_map.as_ref())
        .map(|c| c.name.clone())
        .expect("a config volume from a ConfigMap");
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), RELEASE)
        .get(&config_map)
        .await
        .unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, &config_map.data.unwrap()["config.yaml"]).unwrap();
    let container = &spec.containers[0];
    let mut command = Command::new(common::BIN);
    for arg in container.args.clone().unwrap_or_default() {
        let (flag, _) = arg.split_once('=').unwrap_or((&arg, ""));
        let local = match flag {
            "--listen" => format!("127.0.0.1:{port}"),
            "--metrics-listen" => "127.0.0.1:0".to_owned(),
            "--tls-cert" => dir.join("tls.crt").display().to_string(),
            "--tls-key" => dir.join("tls.key").display().to_string(),
            "--config" => config.display().to_string(),
            _ => {
                command.arg(arg);
                continue;
            }
        };
        command.arg(format!("{flag}={local}"));
    }
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap());
    command.env("KUBECONFIG", env.kubeconfig());
    for var in container.env.clone().unwrap_or_default() {
        let value = match (var.value, var.value_from) {
            (Some(value), _) => value,
            (None, Some(from)) => match from.field_ref.map(|f| f.field_path).as_deref() {
                Some("metadata.namespace") => RELEASE.to_owned(),
                Some("metadata.name") => "meshgate-envtest".to_owned(),
                other => panic!("env {} from {other:?}: teach the test", var.name),
            },
            (None, None) => String::new(),
        };
        command.env(var.name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start meshgate");
    let log = common::collect_lines(child.stdout.take().unwrap());
    let _stderr = common::collect_lines(child.stderr.take().unwrap());
    Pod { child, log }
}

/// Waits, as `helm install --wait` would, until the pod is ready (caches
/// synced).
async fn wait_ready(pod: &mut Pod, port: u16, ca_pem: &str) {
    let client = common::https_client(ca_pem);
    let deadline = Instant::now() + COMMAND_BOUND;
    loop {
        let ready = client
            .get(format!("https://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        if let Ok(Some(status)) = pod.child.try_wait() {
            panic!(
                "meshgate exited with {status}: {:?}",
                pod.log.lock().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "meshgate not ready in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The installed webhooks, pointed at the pod on loopback instead of the
/// Service. They keep the caBundle the adapted install gave them.
async fn point_webhooks_at(client: &Client, port: u16, ca_pem: &str) {
    let local = |config: &mut WebhookClientConfig| {
        let service = config.service.take().expect("a Service client config");
        assert_eq!(
            (service.namespace.as_str(), service.name.as_str()),
            (RELEASE, RELEASE)
        );
        let ca = config.ca_bundle.as_ref().map(|b| b.0.as_slice());
        assert_eq!(
            ca,
            Some(ca_pem.trim().as_bytes()),
            "the caBundle of --set-file"
        );
        config.url = Some(format!(
            "https://127.0.0.1:{port}{}",
            service.path.unwrap_or_default()
        ));
    };
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = validating.get(RELEASE).await.unwrap();
    config
        .webhooks
        .iter_mut()
        .flatten()
        .for_each(|w| local(&mut w.client_config));
    validating
        .replace(RELEASE, &PostParams::default(), &config)
        .await
        .unwrap();
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let mut config = mutating.get(RELEASE).await.unwrap();
    config
        .webhooks
        .iter_mut()
        .flatten()
        .for_each(|w| local(&mut w.client_config));
    mutating
        .replace(RELEASE, &PostParams::default(), &config)
        .await
        .unwrap();
    // The API server loads webhook configurations asynchronously: wait until
    // meshgate answers (an unenrolled namespace, dry run, is denied).
    let probe: Namespace = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deadline = Instant::now() + COMMAND_BOUND;
    loop {
        match namespaces.create(&dry_run, &probe).await {
            Err(kube::Error::Api(e)) if e.message.contains("meshgate denied") => return,
            other => assert!(Instant::now() < deadline, "webhooks not called: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
            e.code == 403
                && e.message
                    .contains("meshgate denied deployment legacy/web-2: [sidecar-required]"),
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
            let log = pod.as_ref().map(Pod::log_tail).unwrap_or_default();
            panic!("{failure}\nmeshgate's log (last lines):\n{log}");
        }
        if step.command.starts_with("helm install ") {
            let mut started = start_pod(&client, &env, port, dir.path()).await;
            wait_ready(&mut started, port, &ca.pem).await;
            point_webhooks_at(&client, port, &ca.pem).await;
            pod = Some(started);
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
    assert!(shown(
        "admission webhook \"workloads.validate.meshgate.io\" denied the request: meshgate denied"
    ));
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

#[test]
fn the_page_convention_is_read_as_documented() {
    let page = "Intro\n```console\nkind create cluster\n```\n\n```sh\nkubectl a\n\nkubectl b\n```\n\n\
                ```text\nout 1\n```\nProse.\n```sh\nkubectl c\n```\nProse.\n```text\nnot an output\n```\n";
    assert_eq!(
        steps(page),
        [
            Step {
                command: "kubectl a".into(),
                shown: None
            },
            Step {
                command: "kubectl b".into(),
                shown: Some(vec!["out 1".into()])
            },
            Step {
                command: "kubectl c".into(),
                shown: None
            },
        ]
    );
    assert!(shows(
        &["meshgate 1 0  5s".into()],
        "NAME PASS\nmeshgate   1   0   2m10s\n"
    ));
    assert!(!shows(&["b".into(), "a".into()], "a\nb\n"));
}
