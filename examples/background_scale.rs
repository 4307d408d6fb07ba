//! Scale figures for the background audit, without a cluster: a generated
//! mesh (10,000 namespaces, 30,000 Istio policies, 50,000 pods owned by
//! 10,000 ReplicaSets of 10,000 Deployments) fed through the engine as watch
//! events. Prints the time to the first complete judgement, the peak RSS, the
//! time to re-judge after a root-namespace policy change, and the latency of
//! an admission review (`Reviewer::validate` of the captured injected pod,
//! response serialised) idle and while the engine re-judges the whole mesh in
//! a loop on another thread.
//!
//!   cargo run --release --example background_scale [-- NAMESPACES PODS_PER_NAMESPACE]
//!   taskset -c 0 target/release/examples/background_scale   # both on one core

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use k8s_openapi::api::core::v1::Namespace;
use meshgate::admission::Reviewer;
use meshgate::background::{Change, Engine};
use meshgate::config::Config;
use meshgate::istio::{AuthorizationPolicy, PeerAuthentication};
use meshgate::posture::{PostureIndex, SharedPosture};
use meshgate::subject::Kind;
use serde_json::{json, Value};

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"istio-injection": "enabled"}}})
}

fn peer_authentication(ns: &str, mode: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": "default", "namespace": ns, "uid": format!("pa-{ns}")},
           "spec": {"mtls": {"mode": mode}}})
}

fn deny_all(ns: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "deny-all", "namespace": ns, "uid": format!("ap-{ns}")}, "spec": {}})
}

fn allow_frontend(ns: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "allow-frontend", "namespace": ns, "uid": format!("ap2-{ns}")},
           "spec": {"action": "ALLOW", "selector": {"matchLabels": {"app": "web"}},
                    "rules": [{"from": [{"source": {"principals": [format!("cluster.local/ns/{ns}/sa/frontend")]}}]}]}})
}

fn pod_spec() -> Value {
    json!({"serviceAccountName": "web",
           "volumes": [{"name": "data", "emptyDir": {}}],
           "containers": [{"name": "app", "image": "shop:1", "ports": [{"containerPort": 8080}],
                           "env": [{"name": "A", "value": "1"}],
                           "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                          {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"],
                           "securityContext": {"runAsUser": 1337}}],
           "initContainers": [{"name": "istio-init", "image": "proxyv2",
                               "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337"],
                               "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}}}]})
}

fn owner(api_version: &str, kind: &str, name: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": "x", "controller": true}])
}

/// The allocator of the shipped binary (src/main.rs).
#[global_allocator]
static ALLOCATOR: meshgate::allocator::Allocator = meshgate::allocator::Allocator;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let namespaces = args.first().copied().unwrap_or(10_000);
    let pods_per_namespace = args.get(1).copied().unwrap_or(5);
    let config = Arc::new(Config::default());
    let posture: SharedPosture = Arc::new(RwLock::new(PostureIndex::default()));
    let mut engine = Engine::new(config.clone());

    let started = Instant::now();
    // Building the test objects (JSON values) is not meshgate's work: the
    // watcher hands it decoded objects. It is timed apart and left out.
    let mut generating = Duration::ZERO;
    let mut made = |build: &dyn Fn() -> Value| {
        let at = Instant::now();
        let value = build();
        generating += at.elapsed();
        value
    };
    let mut objects = 0usize;
    let mut apply = |engine: &mut Engine, kind: Kind, object: Value| {
        objects += 1;
        engine.apply(Change::Applied { kind, object });
    };
    for i in 0..namespaces {
        let ns = format!("ns-{i}");
        let mut index = posture.write();
        let ns_value = made(&|| namespace(&ns));
        index.apply_namespace(&serde_json::from_value::<Namespace>(ns_value.clone()).unwrap());
        let pa = made(&|| peer_authentication(&ns, "STRICT"));
        index
            .peer_authentications
            .apply(serde_json::from_value::<PeerAuthentication>(pa.clone()).unwrap());
        let (deny, allow) = (made(&|| deny_all(&ns)), made(&|| allow_frontend(&ns)));
        for ap in [&deny, &allow] {
            index
                .authorization_policies
                .apply(serde_json::from_value::<AuthorizationPolicy>(ap.clone()).unwrap());
        }
        drop(index);
        apply(&mut engine, Kind::Namespace, ns_value);
        apply(&mut engine, Kind::PeerAuthentication, pa);
        apply(&mut engine, Kind::AuthorizationPolicy, deny);
        apply(&mut engine, Kind::AuthorizationPolicy, allow);
        let template =
            made(&|| json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}));
        let deployment = made(&|| {
            json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "uid": format!("d-{ns}")},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}})
        });
        apply(&mut engine, Kind::Deployment, deployment);
        let replica_set = made(&|| {
            json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-5d", "namespace": ns, "uid": format!("rs-{ns}"),
                         "ownerReferences": owner("apps/v1", "Deployment", "web")},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}})
        });
        apply(&mut engine, Kind::ReplicaSet, replica_set);
        for p in 0..pods_per_namespace {
            let pod = made(&|| {
                json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("web-5d-{p}"), "namespace": ns, "uid": format!("p-{ns}-{p}"),
                             "labels": {"app": "web"}, "annotations": {"sidecar.istio.io/status": "{}"},
                             "managedFields": [{"manager": "kube-controller-manager"}],
                             "ownerReferences": owner("apps/v1", "ReplicaSet", "web-5d")},
                "spec": pod_spec(),
                "status": {"phase": "Running", "podIP": "10.0.0.1"}})
            });
            apply(&mut engine, Kind::Pod, pod);
        }
    }
    let fed = started.elapsed() - generating;
    engine.judge(&posture);
    let first = started.elapsed() - generating;
    let snapshot = engine.snapshot(true);
    let peak = rss_kib("VmHWM:") / 1024;
    meshgate::allocator::release_freed_memory();
    println!(
        "objects: {objects} ({namespaces} namespaces, {} policies, {} pods); reported verdicts: {}",
        namespaces * 3,
        namespaces * pods_per_namespace,
        snapshot.verdicts.len()
    );
    println!(
        "fed (decode, trim, index): {:.2?}; first complete judgement: {first:.2?} (building the test objects, {generating:.2?}, left out)",
        fed
    );
    println!(
        "RSS held (after returning freed heap) {} MiB, peak {peak} MiB",
        rss_kib("VmRSS:") / 1024,
    );

    // A mesh-wide PERMISSIVE policy in the root namespace: the whole mesh.
    let root = peer_authentication("istio-system", "PERMISSIVE");
    posture
        .write()
        .peer_authentications
        .apply(serde_json::from_value::<PeerAuthentication>(root.clone()).unwrap());
    let started = Instant::now();
    engine.apply(Change::Applied {
        kind: Kind::PeerAuthentication,
        object: root,
    });
    engine.judge(&posture);
    println!(
        "re-judge after a root-namespace policy change: {:.2?}",
        started.elapsed()
    );

    admission_while_judging(config, posture, &mut engine);
}

/// The review a real kube-apiserver sends after Istio's injector ran.
const INJECTED_POD_REVIEW: &[u8] = include_bytes!("../benches/fixtures/pod-injected.json");
/// Between two reviews: requests arrive, the webhook's worker waits for
/// them rather than spinning, as a server at a few thousand reviews/s does.
const BETWEEN_REVIEWS: Duration = Duration::from_micros(250);
const REVIEWS: usize = 5_000;

/// Review latency idle, then while the engine re-judges every object in a
/// loop (at least two full passes overlap the reviews): what a full pass
/// costs the webhook's latency.
fn admission_while_judging(config: Arc<Config>, posture: SharedPosture, engine: &mut Engine) {
    // The fixture's namespace, enrolled, STRICT and deny-by-default as in
    // the generated mesh, so the review takes the allowed path.
    {
        let mut index = posture.write();
        let namespace = serde_json::from_value::<Namespace>(namespace("bookinfo"));
        index.apply_namespace(&namespace.expect("namespace"));
        index.peer_authentications.apply(
            serde_json::from_value(peer_authentication("bookinfo", "STRICT")).expect("policy"),
        );
        index
            .authorization_policies
            .apply(serde_json::from_value(deny_all("bookinfo")).expect("policy"));
    }
    let reviewer = Reviewer::new(config, posture.clone());
    let passes = AtomicUsize::new(0);
    review_latencies(&reviewer, 1_000, &passes, 0); // warm-up
    let idle = review_latencies(&reviewer, REVIEWS, &passes, 0);
    let stop = AtomicUsize::new(0);
    let busy = std::thread::scope(|scope| {
        scope.spawn(|| {
            while stop.load(Ordering::Relaxed) == 0 {
                engine.mark_all();
                engine.judge(&posture);
                passes.fetch_add(1, Ordering::Relaxed);
            }
        });
        let busy = review_latencies(&reviewer, REVIEWS, &passes, 2);
        stop.store(1, Ordering::Relaxed);
        busy
    });
    let p99 = |times: &[Duration]| times[times.len() * 99 / 100];
    let p50 = |times: &[Duration]| times[times.len() / 2];
    println!(
        "admission review (injected pod), idle: p50 {:.1?} p99 {:.1?} (n={})",
        p50(&idle),
        p99(&idle),
        idle.len()
    );
    println!(
        "admission review while full passes run ({} passes): p50 {:.1?} p99 {:.1?} (n={}); p99 ratio {:.2}",
        passes.load(Ordering::Relaxed),
        p50(&busy),
        p99(&busy),
        busy.len(),
        p99(&busy).as_secs_f64() / p99(&idle).as_secs_f64()
    );
}

/// Times at least `reviews` reviews, and more until `min_passes` background
/// passes have completed; returns the sorted latencies.
fn review_latencies(
    reviewer: &Reviewer,
    reviews: usize,
    passes: &AtomicUsize,
    min_passes: usize,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(reviews);
    while times.len() < reviews || passes.load(Ordering::Relaxed) < min_passes {
        let started = Instant::now();
        let reviewed = futures::executor::block_on(reviewer.validate(INJECTED_POD_REVIEW))
            .expect("the fixture is a valid AdmissionReview");
        let body = serde_json::to_vec(&reviewed.review).expect("serialisable response");
        std::hint::black_box(body);
        times.push(started.elapsed());
        std::thread::sleep(BETWEEN_REVIEWS);
    }
    times.sort();
    times
}
