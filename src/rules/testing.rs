//! Small builders for rule tests: `pod("web").in_ns("shop").host_network()`,
//! `object::<DestinationRule>("shop", "r", json!({...}))`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config::Config;
use crate::posture::PostureIndex;
use crate::rules::{Context, Finding, Operation, RuleId};
use crate::subject::{ContainerView, Kind, PodSpecView, Workload};

/// An Istio or cert-manager object `namespace/name` with `spec`, created at
/// a fixed time (Istio's tie-break between policies reads it).
pub fn object<T: DeserializeOwned>(namespace: &str, name: &str, spec: serde_json::Value) -> T {
    let value = json!({
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": spec
    });
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("not a valid {}: {e}", std::any::type_name::<T>()))
}

pub fn pod(name: &str) -> Workload {
    workload(Kind::Pod, name)
}

pub fn deployment(name: &str) -> Workload {
    workload(Kind::Deployment, name)
}

fn workload(kind: Kind, name: &str) -> Workload {
    Workload {
        kind,
        namespace: "shop".into(),
        name: name.into(),
        pod_meta: ObjectMeta::default(),
        job_template_meta: None,
        spec: PodSpecView {
            containers: vec![container("app")],
            service_account_name: Some(format!("{name}-sa")),
            ..Default::default()
        },
    }
}

/// A workload from `tests/fixtures/workloads/`, shaped like what Istio
/// produces; objects without a namespace land in `shop`.
pub fn fixture(file: &str) -> Workload {
    let path = format!(
        "{}/tests/fixtures/workloads/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut manifests = crate::manifest::parse_text(file, &text).expect("fixture parses");
    let m = manifests.remove(0);
    let kind = Kind::from_api_version(&m.api_version, &m.kind).expect("a judged kind");
    let namespace = m.namespace().unwrap_or("shop").to_owned();
    let name = m.name().to_owned();
    match crate::subject::decode(kind, m.value, &namespace, &name) {
        Ok(crate::subject::Object::Workload(w)) => w,
        other => panic!("{file} is not a workload: {other:?}"),
    }
}

/// Every workload in a file of Istio's own test data
/// (`tests/fixtures/istio/`, copied from istio/istio), in its own namespace
/// or `shop`. Other kinds (Gateways, Services) are skipped.
pub fn istio_test_data(path: &str) -> Vec<Workload> {
    let full = format!("{}/tests/fixtures/istio/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let manifests = crate::manifest::parse_text(path, &text).expect("Istio's test data parses");
    manifests
        .into_iter()
        .filter_map(|m| {
            let kind = Kind::from_api_version(&m.api_version, &m.kind)?;
            let namespace = m.namespace().unwrap_or("shop").to_owned();
            let name = m.name().to_owned();
            match crate::subject::decode(kind, m.value, &namespace, &name) {
                Ok(crate::subject::Object::Workload(w)) => Some(w),
                _ => None,
            }
        })
        .collect()
}

/// The pod a controller's template creates (what its ReplicaSet or Job
/// controller copies into the Pod).
pub fn pod_form(mut w: Workload) -> Workload {
    w.kind = Kind::Pod;
    // A CronJob's job-template metadata goes to the Job, not to its pods.
    w.job_template_meta = None;
    w
}

pub fn ambient_shop() -> World {
    World::with_namespaces(&[namespace("shop", &[("istio.io/dataplane-mode", "ambient")])])
}

pub fn container(name: &str) -> ContainerView {
    ContainerView {
        name: name.into(),
        ..Default::default()
    }
}

/// What the Istio 1.24 injector adds to a pod.
pub fn injected(mut w: Workload) -> Workload {
    let mut init = container("istio-init");
    init.security_context = Some(SecurityContext {
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities {
            add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
            drop: Some(vec!["ALL".into()]),
        }),
        run_as_user: Some(0),
        ..Default::default()
    });
    let mut proxy = container("istio-proxy");
    proxy.security_context = Some(SecurityContext {
        run_as_user: Some(1337),
        run_as_group: Some(1337),
        ..Default::default()
    });
    w.spec
        .init_containers
        .get_or_insert_with(Vec::new)
        .push(init);
    w.spec.containers.push(proxy);
    w.with_annotation(
        "sidecar.istio.io/status",
        r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"revision":"default"}"#,
    )
}

pub trait WorkloadBuilder: Sized {
    fn in_ns(self, ns: &str) -> Self;
    fn with_label(self, k: &str, v: &str) -> Self;
    fn with_annotation(self, k: &str, v: &str) -> Self;
    fn host_network(self) -> Self;
    fn service_account(self, sa: Option<&str>) -> Self;
    fn security_context(self, container: usize, sc: SecurityContext) -> Self;
}

impl WorkloadBuilder for Workload {
    fn in_ns(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }
    fn with_label(mut self, k: &str, v: &str) -> Self {
        self.pod_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    fn with_annotation(mut self, k: &str, v: &str) -> Self {
        self.pod_meta
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    fn host_network(mut self) -> Self {
        self.spec.host_network = Some(true);
        self
    }
    fn service_account(mut self, sa: Option<&str>) -> Self {
        self.spec.service_account_name = sa.map(Into::into);
        self
    }
    fn security_context(mut self, container: usize, sc: SecurityContext) -> Self {
        self.spec.containers[container].security_context = Some(sc);
        self
    }
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A posture with the given namespaces and the default config.
pub struct World {
    pub posture: PostureIndex,
    pub config: Config,
}

impl World {
    pub fn with_namespaces(namespaces: &[Namespace]) -> Self {
        let mut posture = PostureIndex::default();
        posture.replace_namespaces(namespaces);
        World {
            posture,
            config: Config::default(),
        }
    }

    /// The usual case: namespace `shop` enrolled with `istio-injection=enabled`.
    pub fn enrolled_shop() -> Self {
        Self::with_namespaces(&[namespace("shop", &[("istio-injection", "enabled")])])
    }

    /// With the mesh baseline in the root namespace: STRICT mTLS and
    /// allow-nothing, so only the rule under test reports anything.
    pub fn with_baseline(mut self) -> Self {
        self.add_peer_authentication(
            "istio-system",
            "default",
            json!({"mtls": {"mode": "STRICT"}}),
        );
        self.add_authorization_policy("istio-system", "allow-nothing", json!({}));
        self
    }

    pub fn add_peer_authentication(
        &mut self,
        namespace: &str,
        name: &str,
        spec: serde_json::Value,
    ) {
        self.posture
            .peer_authentications
            .apply(object(namespace, name, spec));
    }

    pub fn add_authorization_policy(
        &mut self,
        namespace: &str,
        name: &str,
        spec: serde_json::Value,
    ) {
        self.posture
            .authorization_policies
            .apply(object(namespace, name, spec));
    }

    pub fn ctx(&self) -> Context<'_> {
        Context {
            posture: &self.posture,
            config: &self.config,
            operation: Operation::Create,
            now: TEST_NOW.parse().expect("a valid instant"),
        }
    }
}

/// The instant `World::ctx` judges at.
pub const TEST_NOW: &str = "2026-12-07T10:00:00Z";

pub fn rule_ids(findings: &[Finding]) -> Vec<RuleId> {
    findings.iter().map(|f| f.rule).collect()
}

pub fn messages(findings: &[Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.message.as_str()).collect()
}
