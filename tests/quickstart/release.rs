//! The chart's meshgate pod, played by the built binary on loopback: envtest
//! has no kubelet, so after `helm install` the test runs `meshgate serve`
//! with the installed Deployment's arguments and environment and the
//! installed ConfigMap's config, and points the installed webhook
//! configurations at it (`url:` instead of the Service, which the API server
//! cannot reach here).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod as ApiPod};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use crate::{common, envtest};

/// The release name and namespace of the page's `helm install`.
pub const RELEASE: &str = "meshgate";
/// Start-up and webhook registration on a loaded 2-core machine.
const START_BOUND: Duration = Duration::from_secs(60);

/// The built binary in the role of the chart's pod.
pub struct Pod {
    child: Child,
    log: common::Lines,
}

impl Pod {
    pub fn log_tail(&self) -> String {
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
pub async fn start_pod(client: &Client, env: &envtest::Envtest, port: u16, dir: &Path) -> Pod {
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
    let mut command = local_command(&spec.containers[0], port, dir, &config);
    command.env("KUBECONFIG", env.kubeconfig());
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

/// The pod's container as a local command: the same arguments and
/// environment, but loopback addresses and local files.
fn local_command(container: &Container, port: u16, dir: &Path, config: &Path) -> Command {
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
    // Only what a pod would see: no KUBECONFIG, proxy or MESHGATE_* of ours.
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
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
    command
}

/// Waits, as `helm install --wait` would, until the pod is ready (caches
/// synced).
pub async fn wait_ready(pod: &mut Pod, port: u16, ca_pem: &str) {
    let client = common::https_client(ca_pem);
    let deadline = Instant::now() + START_BOUND;
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
pub async fn point_webhooks_at(client: &Client, port: u16, ca_pem: &str) {
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
    let deadline = Instant::now() + START_BOUND;
    loop {
        match namespaces.create(&dry_run, &probe).await {
            Err(kube::Error::Api(e)) if e.message.contains("meshgate denied") => return,
            other => assert!(Instant::now() < deadline, "webhooks not called: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the API server enforces the native policies the pod applies
/// (on by default): a pod that opts out of injection, and breaks no other
/// rule (a Deny stops at the first policy that fails), dry run in
/// `default`, is refused by `meshgate-sidecar-required` before any webhook
/// is called.
/// A user's cluster gets there a few seconds after `helm install --wait`;
/// the page shows that steady state.
pub async fn wait_native_policies(client: &Client) {
    let probe: ApiPod = serde_json::from_value(json!({
        "metadata": {"name": "probe", "labels": {"sidecar.istio.io/inject": "false"}},
        "spec": {"serviceAccountName": "probe", "containers": [{"name": "app", "image": "nginx:1.27"}]},
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let pods: Api<ApiPod> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + START_BOUND;
    loop {
        match pods.create(&dry_run, &probe).await {
            Err(kube::Error::Api(e))
                if e.message
                    .contains("ValidatingAdmissionPolicy 'meshgate-sidecar-required'") =>
            {
                return
            }
            other => assert!(
                Instant::now() < deadline,
                "native policies not enforced: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
