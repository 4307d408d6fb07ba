//! Writes a large manifest set for `scripts/audit-throughput.sh`: a cluster
//! export of many namespaces, each a directory of multi-document YAML files.
//!
//! ```text
//! cargo run --release --example gen_manifests -- --objects 100000 --out /tmp/manifests
//! ```
//!
//! Every namespace holds 50 objects (the last one fewer when `--objects` is
//! not a multiple of 50), in three files:
//!
//! - `mesh.yaml`: the Namespace (`istio-injection: enabled`, except every
//!   10th), a PeerAuthentication (STRICT, every 7th PERMISSIVE; the first
//!   namespace is `istio-system` and its PeerAuthentication is mesh-wide), an
//!   allow-nothing and an ALLOW AuthorizationPolicy, two DestinationRules
//!   (ISTIO_MUTUAL, every 20th namespace's second one DISABLE);
//! - `deployments.yaml`: 12 Deployments, 8 as `istioctl kube-inject` writes
//!   them (tests/fixtures/workloads/kube-inject-deployment.yaml) and 4 plain
//!   (the same with what the injector added removed);
//! - `pods.yaml`: 32 Pods, 24 injected (kube-inject-pod.yaml) and 8 plain,
//!   half of those without a serviceAccountName.
//!
//! Every object is of a kind `meshgate audit` judges, so it should report
//! exactly `--objects` objects checked. The output is deterministic.

use std::error::Error;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

const OBJECTS_PER_NAMESPACE: usize = 50;
const DEPLOYMENTS: usize = 12;
const INJECTED_DEPLOYMENTS: usize = 8;
const PODS: usize = 32;
const INJECTED_PODS: usize = 24;

const INJECTED_POD: &str = include_str!("../tests/fixtures/workloads/kube-inject-pod.yaml");
const INJECTED_DEPLOYMENT: &str =
    include_str!("../tests/fixtures/workloads/kube-inject-deployment.yaml");

// Placeholders replaced per object; chosen so YAML leaves them unquoted.
const NAME: &str = "MGNAME";
const NAMESPACE: &str = "MGNS";
const APP: &str = "MGAPP";

/// The YAML text of every object shape, with placeholders.
struct Templates {
    injected_pod: String,
    plain_pod: String,
    plain_pod_default_account: String,
    injected_deployment: String,
    plain_deployment: String,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("gen_manifests: {error}");
        eprintln!("usage: gen_manifests --objects N --out DIR");
        std::process::exit(2);
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let (objects, out) = parse_args()?;
    let templates = templates()?;
    let mut written = 0;
    let mut files = 0;
    let mut namespace_index = 0;
    while written < objects {
        let budget = (objects - written).min(OBJECTS_PER_NAMESPACE);
        let namespace = if namespace_index == 0 {
            "istio-system".to_owned()
        } else {
            format!("team-{namespace_index:05}")
        };
        let dir = out.join(&namespace);
        fs::create_dir_all(&dir)?;
        let mut left = budget;
        for (file, group) in namespace_documents(&templates, namespace_index, &namespace) {
            if left == 0 {
                break;
            }
            let taken: Vec<String> = group.into_iter().take(left).collect();
            left -= taken.len();
            written += taken.len();
            files += 1;
            write_documents(&dir.join(file), &taken)?;
        }
        namespace_index += 1;
    }
    println!(
        "gen_manifests: {written} objects in {files} files, {namespace_index} namespaces, under {}",
        out.display()
    );
    Ok(())
}

fn parse_args() -> Result<(usize, PathBuf), Box<dyn Error>> {
    let mut objects = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag}: missing value"))?;
        match flag.as_str() {
            "--objects" => objects = Some(value.parse::<usize>()?),
            "--out" => out = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok((
        objects.ok_or("--objects is required")?,
        out.ok_or("--out is required")?,
    ))
}

/// One namespace's objects, grouped by the file they go to.
fn namespace_documents(
    templates: &Templates,
    index: usize,
    namespace: &str,
) -> Vec<(&'static str, Vec<String>)> {
    let fill = |template: &str, name: &str, app: &str| {
        template
            .replace(NAME, name)
            .replace(NAMESPACE, namespace)
            .replace(APP, app)
    };
    let app = |i: usize| format!("svc-{:02}", i % DEPLOYMENTS);

    let mesh = vec![
        fill(
            if index % 10 == 9 {
                NAMESPACE_PLAIN
            } else {
                NAMESPACE_ENROLLED
            },
            namespace,
            "",
        ),
        fill(
            if index % 7 == 6 {
                PEER_AUTHENTICATION_PERMISSIVE
            } else {
                PEER_AUTHENTICATION_STRICT
            },
            "default",
            "",
        ),
        fill(AUTHORIZATION_ALLOW_NOTHING, "allow-nothing", ""),
        fill(
            AUTHORIZATION_ALLOW_FROM_GATEWAY,
            "svc-00-from-gateway",
            &app(0),
        ),
        fill(DESTINATION_RULE_MUTUAL, "svc-00", &app(0)),
        fill(
            if index % 20 == 19 {
                DESTINATION_RULE_DISABLE
            } else {
                DESTINATION_RULE_MUTUAL
            },
            "svc-01",
            &app(1),
        ),
    ];
    let deployments = (0..DEPLOYMENTS)
        .map(|i| {
            let template = if i < INJECTED_DEPLOYMENTS {
                &templates.injected_deployment
            } else {
                &templates.plain_deployment
            };
            fill(template, &app(i), &app(i))
        })
        .collect();
    let pods = (0..PODS)
        .map(|i| {
            let template = match i {
                i if i < INJECTED_PODS => &templates.injected_pod,
                i if i % 2 == 0 => &templates.plain_pod,
                _ => &templates.plain_pod_default_account,
            };
            let name = format!("{}-5d8f7c9b4-{:05x}", app(i), index * PODS + i);
            fill(template, &name, &app(i))
        })
        .collect();
    vec![
        ("mesh.yaml", mesh),
        ("deployments.yaml", deployments),
        ("pods.yaml", pods),
    ]
}

fn write_documents(path: &Path, documents: &[String]) -> Result<(), Box<dyn Error>> {
    let mut out = BufWriter::new(File::create(path)?);
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.write_all(b"---\n")?;
        }
        out.write_all(document.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

fn templates() -> Result<Templates, Box<dyn Error>> {
    let mut pod = first_document(INJECTED_POD)?;
    name_object(&mut pod);
    label_pod(&mut pod)?;
    let mut plain_pod = pod.clone();
    strip_injection(&mut plain_pod)?;
    let mut plain_pod_default_account = plain_pod.clone();
    mapping(&mut plain_pod_default_account, &["spec"])?.remove("serviceAccountName");

    let mut deployment = first_document(INJECTED_DEPLOYMENT)?;
    name_object(&mut deployment);
    mapping(&mut deployment, &["spec", "selector", "matchLabels"])?
        .insert("app".into(), APP.into());
    label_pod(mapping_value(&mut deployment, &["spec", "template"])?)?;
    let mut plain_deployment = deployment.clone();
    strip_injection(mapping_value(&mut plain_deployment, &["spec", "template"])?)?;

    Ok(Templates {
        injected_pod: serde_yaml_ng::to_string(&pod)?,
        plain_pod: serde_yaml_ng::to_string(&plain_pod)?,
        plain_pod_default_account: serde_yaml_ng::to_string(&plain_pod_default_account)?,
        injected_deployment: serde_yaml_ng::to_string(&deployment)?,
        plain_deployment: serde_yaml_ng::to_string(&plain_deployment)?,
    })
}

/// The fixtures end with `---`, as `istioctl kube-inject` writes them.
fn first_document(text: &str) -> Result<Value, Box<dyn Error>> {
    let document = serde_yaml_ng::Deserializer::from_str(text)
        .next()
        .ok_or("empty template")?;
    Ok(Value::deserialize(document)?)
}

fn name_object(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_mapping_mut) {
        metadata.insert("name".into(), NAME.into());
        metadata.insert("namespace".into(), NAMESPACE.into());
    }
}

/// Labels a pod (or pod template) as its app and gives it the app's account.
fn label_pod(pod: &mut Value) -> Result<(), Box<dyn Error>> {
    let labels = mapping(pod, &["metadata", "labels"])?;
    labels.insert("app".into(), APP.into());
    if labels.contains_key("service.istio.io/canonical-name") {
        labels.insert("service.istio.io/canonical-name".into(), APP.into());
    }
    mapping(pod, &["spec"])?.insert("serviceAccountName".into(), APP.into());
    Ok(())
}

/// Removes what Istio's injector added: its containers, volumes, labels and
/// annotations, leaving the pod as it was written.
fn strip_injection(pod: &mut Value) -> Result<(), Box<dyn Error>> {
    let metadata = mapping(pod, &["metadata"])?;
    metadata.remove("annotations");
    if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_mapping_mut) {
        labels.retain(|key, _| key.as_str().is_some_and(|k| !k.contains("istio.io/")));
    }
    let spec = mapping(pod, &["spec"])?;
    spec.remove("initContainers");
    spec.remove("volumes");
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_sequence_mut) {
        containers.retain(|c| c.get("name").and_then(Value::as_str) != Some("istio-proxy"));
    }
    Ok(())
}

fn mapping<'a>(value: &'a mut Value, path: &[&str]) -> Result<&'a mut Mapping, Box<dyn Error>> {
    mapping_value(value, path)?
        .as_mapping_mut()
        .ok_or_else(|| format!("{}: not a mapping", path.join(".")).into())
}

fn mapping_value<'a>(value: &'a mut Value, path: &[&str]) -> Result<&'a mut Value, Box<dyn Error>> {
    let mut current = value;
    for key in path {
        current = current
            .get_mut(*key)
            .ok_or_else(|| format!("template has no {}", path.join(".")))?;
    }
    Ok(current)
}

const NAMESPACE_ENROLLED: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: MGNAME
  labels:
    istio-injection: enabled
    kubernetes.io/metadata.name: MGNAME
";

const NAMESPACE_PLAIN: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: MGNAME
  labels:
    kubernetes.io/metadata.name: MGNAME
";

const PEER_AUTHENTICATION_STRICT: &str = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: MGNAME
  namespace: MGNS
spec:
  mtls:
    mode: STRICT
";

const PEER_AUTHENTICATION_PERMISSIVE: &str = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: MGNAME
  namespace: MGNS
spec:
  mtls:
    mode: PERMISSIVE
";

const AUTHORIZATION_ALLOW_NOTHING: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: MGNAME
  namespace: MGNS
spec: {}
";

const AUTHORIZATION_ALLOW_FROM_GATEWAY: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: MGNAME
  namespace: MGNS
spec:
  selector:
    matchLabels:
      app: MGAPP
  action: ALLOW
  rules:
  - from:
    - source:
        principals:
        - cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account
    to:
    - operation:
        methods: [GET, POST]
        paths: [/api/*]
";

const DESTINATION_RULE_MUTUAL: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: MGNAME
  namespace: MGNS
spec:
  host: MGAPP.MGNS.svc.cluster.local
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
";

const DESTINATION_RULE_DISABLE: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: MGNAME
  namespace: MGNS
spec:
  host: MGAPP.MGNS.svc.cluster.local
  trafficPolicy:
    tls:
      mode: DISABLE
";
