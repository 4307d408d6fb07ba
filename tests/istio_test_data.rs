//! Istio's own test data, unchanged (`tests/fixtures/istio/`, source and
//! commit in its README), through the real interfaces: `meshgate audit` on
//! the files, and the HTTPS webhook on the Deployments and the Pods they
//! create. istiod's gateway golden Deployments (every class, agentgateway
//! included) are admitted in sidecar and ambient namespaces; so is the
//! injector's output for a custom status port. Copies that only look like
//! them are not.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const ISTIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/istio");
/// Istio's test data sets no service account (a rule of its own), and one
/// golden gateway lives in `istio-system`, exempt by default.
const CONFIG: &str = "rules: {dedicated-service-account: \"off\"}\nexemptNamespaces: []\n";
const SIDECAR: &str = "istio-injection: enabled";
const AMBIENT: &str = "istio.io/dataplane-mode: ambient";
/// The status-port cases of the injector's test data: no finding expected.
const STATUS_PORT_CASES: &[&str] = &[
    "status_params",
    "status_annotations",
    "status_annotations_zeroport",
    "kubevirtInterfaces",
    "kubevirtInterfaces_list",
    "reroute-virtual-interfaces",
    "reroute-virtual-interfaces_list",
];

fn files_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(Path::new(ISTIO).join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn golden_files() -> Vec<PathBuf> {
    files_in("gateway-deployments")
}

fn injected_file(case: &str) -> PathBuf {
    Path::new(ISTIO).join(format!("injector/{case}.yaml.injected"))
}

/// The Deployments of a file, as JSON.
fn deployments(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    meshgate::manifest::parse_text(&path.to_string_lossy(), &text)
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "Deployment")
        .map(|m| m.value)
        .collect()
}

/// The Pod a Deployment's ReplicaSet creates: the template's metadata and
/// spec, in `namespace`.
fn pod_of(deployment: &Value, namespace: &str) -> Value {
    let template = &deployment["spec"]["template"];
    let name = deployment["metadata"]["name"].as_str().unwrap();
    let mut metadata = template["metadata"].clone();
    metadata["name"] = format!("{name}-7c9d8b6f5d-x2v9q").into();
    metadata["namespace"] = namespace.into();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]})
}

/// Namespaces `names` labelled `labels`, with a STRICT mesh-wide
/// PeerAuthentication and an allow-nothing policy in each, so only the
/// proxy model decides.
fn namespaces(names: &[&str], labels: &str) -> String {
    let mut out = String::from(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    );
    for name in names {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n\
             ---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: allow-nothing, namespace: {name}}}\nspec: {{}}\n"
        ));
    }
    out
}

/// `meshgate audit --output json` on a directory holding `files` (copied
/// unchanged), `extra` documents and the namespaces; the report.
fn audit(labels: &str, files: &[PathBuf], extra: &[Value]) -> Value {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("meshgate.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ns = namespaces(&["default", "istio-system"], labels);
    std::fs::write(dir.path().join("00-namespaces.yaml"), ns).unwrap();
    for f in files {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    for (i, object) in extra.iter().enumerate() {
        std::fs::write(
            dir.path().join(format!("zz-{i:02}.yaml")),
            object.to_string(),
        )
        .unwrap();
    }
    let dir_arg = dir.path().to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let out = run_cli(
        &[
            "audit",
            "--config",
            &config_arg,
            "--output",
            "json",
            &dir_arg,
        ],
        Duration::from_secs(60),
    );
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    let enforce = report["summary"]["enforce"].as_u64().unwrap();
    assert_eq!(out.status.code(), Some(i32::from(enforce > 0)), "{report}");
    report
}

/// (object name, rule, message) of every finding.
fn findings(report: &Value) -> Vec<(String, String, String)> {
    let field = |f: &Value, k: &str| f[k].as_str().unwrap_or_default().to_owned();
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (field(f, "name"), field(f, "rule"), field(f, "message")))
        .collect()
}

#[test]
fn audit_admits_every_deployment_istiod_renders_for_a_gateway_and_its_pods() {
    let files = golden_files();
    let pods: Vec<Value> = files
        .iter()
        .flat_map(|f| deployments(f))
        .map(|d| {
            let ns = d["metadata"]["namespace"].as_str().unwrap().to_owned();
            pod_of(&d, &ns)
        })
        .collect();
    // 28 files; illegal_customizations.yaml renders no Deployment.
    assert_eq!((files.len(), pods.len()), (28, 27));
    for labels in [SIDECAR, AMBIENT] {
        let report = audit(labels, &files, &pods);
        assert_eq!(findings(&report), [], "{labels}");
        // 27 Deployments, 27 Pods, 2 Namespaces and 3 policies.
        assert_eq!(report["summary"]["objectsChecked"], 59, "{labels}");
    }
}

/// An application Deployment that copies the agentgateway Deployment's
/// labels, owner and security context but runs its own container.
fn agentgateway_copy() -> Value {
    let mut d =
        deployments(&Path::new(ISTIO).join("gateway-deployments/agentgateway.yaml")).remove(0);
    d["metadata"]["name"] = "copy".into();
    let c = &mut d["spec"]["template"]["spec"]["containers"][0];
    c["name"] = "app".into();
    c["image"] = "example.com/shop/api:1.4".into();
    c["args"] = json!(["serve", "--port", "8080"]);
    d
}

#[test]
fn audit_denies_an_application_that_copies_the_agentgateway_labels() {
    for (labels, opt_out) in [
        (
            SIDECAR,
            "it opts out with the label sidecar.istio.io/inject=false",
        ),
        (
            AMBIENT,
            "opts out of the ambient mesh with label istio.io/dataplane-mode=none",
        ),
    ] {
        let report = audit(labels, &[], &[agentgateway_copy()]);
        let found = findings(&report);
        let rules: Vec<&str> = found.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(
            rules,
            [
                "sidecar-required",
                "no-interception-bypass",
                "no-interception-bypass"
            ],
            "{found:?}"
        );
        assert!(found[0].2.contains(opt_out), "{found:?}");
        assert!(
            found[1].2.contains("container \"app\" runs as UID 1337"),
            "{found:?}"
        );
    }
}

#[test]
fn audit_accepts_the_injectors_output_for_any_status_port() {
    // Several cases share a name; each is judged under its own.
    let mut objects = Vec::new();
    for case in STATUS_PORT_CASES {
        let mut d = deployments(&injected_file(case)).remove(0);
        d["metadata"]["name"] = case.replace('_', "-").to_lowercase().into();
        objects.push(pod_of(&d, "default"));
        objects.push(d);
    }
    let report = audit(SIDECAR, &[], &objects);
    assert_eq!(findings(&report), [], "{report}");
    // 7 Deployments, 7 Pods, 2 Namespaces and 3 policies.
    assert_eq!(report["summary"]["objectsChecked"], 19);

    // The injector's own case with real exclusions still fails, on them only.
    let traffic_params = deployments(&injected_file("traffic-params"));
    let report = audit(SIDECAR, &[], &traffic_params);
    let messages: Vec<String> = findings(&report).into_iter().map(|f| f.2).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(
        messages.iter().any(|m| m.ends_with("flag -d 4,5,6")),
        "{messages:?}"
    );
}

/// `status_params` (status port 123 mesh-wide) edited by hand.
fn status_params_edited(change: impl FnOnce(&mut Value)) -> Value {
    let mut d = deployments(&injected_file("status_params")).remove(0);
    change(&mut d["spec"]["template"]);
    d
}

fn istio_init_args(template: &mut Value) -> &mut Vec<Value> {
    template["spec"]["initContainers"][0]["args"]
        .as_array_mut()
        .unwrap()
}

#[test]
fn audit_finds_a_port_smuggled_beside_the_status_port() {
    // A second port after the status port is not the proxy's.
    let extra_port = status_params_edited(|t| {
        let args = istio_init_args(t);
        let at = args.iter().position(|a| a == "-d").unwrap();
        args[at + 1] = "15090,15021,123,5432".into();
    });
    // The pod names another status port than the one -d excludes: the
    // agent listens on 124, so 123 is the application's.
    let other_status_port = status_params_edited(|t| {
        t["metadata"]["annotations"]["status.sidecar.istio.io/port"] = "124".into();
    });
    let report = audit(SIDECAR, &[], &[extra_port, other_status_port]);
    let messages: Vec<String> = findings(&report).into_iter().map(|f| f.2).collect();
    assert_eq!(
        messages,
        [
            "container \"istio-init\" excludes traffic from the sidecar with flag -d 5432",
            "container \"istio-init\" excludes traffic from the sidecar with flag -d 123",
        ]
    );
}

// ------------------------------------------------------------- HTTPS

/// Namespaces `gw-sidecar` and `gw-ambient` beside the test cluster state.
fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let state = format!(
        "{}---\n{}",
        namespaces(&["gw-sidecar"], SIDECAR),
        namespaces(&["gw-ambient"], AMBIENT)
    );
    let path = dir.path().join("namespaces.yaml");
    std::fs::write(&path, state).unwrap();
    let path = path.to_string_lossy().into_owned();
    (
        Server::start(
            Options::default()
                .config(CONFIG)
                .args(&["--state-from", &path]),
        ),
        dir,
    )
}

/// A captured CREATE review carrying `object` in `namespace`.
fn review(object: &Value, namespace: &str) -> Vec<u8> {
    let mut object = object.clone();
    object["metadata"]["namespace"] = namespace.into();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    let pod = object["kind"] == "Pod";
    let captured = fixture(if pod {
        "pod-create-injected.json"
    } else {
        "deployment-create.json"
    });
    edit(&captured, |v| {
        let request = &mut v["request"];
        request["namespace"] = namespace.into();
        request["name"] = name.into();
        if pod {
            request["userInfo"]["username"] =
                "system:serviceaccount:kube-system:replicaset-controller".into();
        }
        request["object"] = object;
    })
}

/// Reviews each object as its Deployment and as its Pod, in both
/// namespaces; the number admitted.
async fn admitted(server: &Server, deployments: &[Value]) -> usize {
    let mut admitted = 0;
    for namespace in ["gw-sidecar", "gw-ambient"] {
        for d in deployments {
            for object in [d.clone(), pod_of(d, namespace)] {
                let response = server.review(review(&object, namespace)).await;
                let warnings = response["warnings"].to_string();
                assert!(!warnings.contains("[sidecar-required]"), "{response}");
                assert!(!warnings.contains("[no-interception-bypass]"), "{response}");
                if response["allowed"] != true {
                    eprintln!("{response}");
                }
                admitted += usize::from(response["allowed"] == true);
            }
        }
    }
    admitted
}

#[tokio::test]
async fn the_server_admits_istiods_gateways_and_the_injectors_status_ports() {
    let (server, _dir) = server();
    let goldens: Vec<Value> = golden_files().iter().flat_map(|f| deployments(f)).collect();
    // 27 Deployments and their Pods, in a sidecar and an ambient namespace.
    assert_eq!(admitted(&server, &goldens).await, 27 * 4);
    let injected: Vec<Value> = STATUS_PORT_CASES
        .iter()
        .flat_map(|c| deployments(&injected_file(c)))
        .collect();
    assert_eq!(admitted(&server, &injected).await, 7 * 4);
}

#[tokio::test]
async fn the_server_denies_copies_and_smuggled_ports() {
    let (server, _dir) = server();
    let copy = agentgateway_copy();
    for namespace in ["gw-sidecar", "gw-ambient"] {
        for object in [copy.clone(), pod_of(&copy, namespace)] {
            let response = server.review(review(&object, namespace)).await;
            assert_eq!(response["allowed"], false, "{response}");
            let m = response["status"]["message"].as_str().unwrap();
            assert!(m.contains("[sidecar-required]"), "{m}");
            assert!(m.contains("container \"app\" runs as UID 1337"), "{m}");
        }
    }
    let smuggled = status_params_edited(|t| {
        let args = istio_init_args(t);
        let at = args.iter().position(|a| a == "-d").unwrap();
        args[at + 1] = "15090,15021,123,5432".into();
    });
    let response = server
        .review(review(&pod_of(&smuggled, "gw-sidecar"), "gw-sidecar"))
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    let m = response["status"]["message"].as_str().unwrap();
    assert!(m.contains("with flag -d 5432"), "{m}");
}
