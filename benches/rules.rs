//! The cost of one `/validate` review without the network: decode the
//! AdmissionReview, judge the object, build the response and serialise it
//! (`Reviewer::validate`, which answers with the body), and the same through
//! the whole handler (`handler/*`: metrics, the decision log line, the span).
//!
//! Inputs are the captured fixtures, minified (`benches/fixtures/`, made by
//! `scripts/gen-bench-fixtures.py`). Run with `cargo bench --bench rules`;
//! figures are in `docs/src/operations/benchmarks.md`.

use parking_lot::RwLock;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::executor::block_on;
use kube::core::admission::AdmissionReview;
use kube::core::DynamicObject;
use meshgate::admission::{review, Outcome, Reviewer};
use meshgate::config::Config;
use meshgate::posture::SharedPosture;
use meshgate::subject::{self, Kind};

/// The cluster state the fixtures were captured against, plus the mesh
/// baseline the posture rules ask for: `bookinfo` is sidecar-injected, mTLS is
/// STRICT mesh-wide and `bookinfo` is deny-by-default. `scripts/load.sh`
/// serves the same file.
const STATE: &str = include_str!("fixtures/state.yaml");

struct Case {
    name: &'static str,
    body: &'static [u8],
    expect: Outcome,
}

const CASES: &[Case] = &[
    Case {
        name: "pod_injected_allowed",
        body: include_bytes!("fixtures/pod-injected.json"),
        expect: Outcome::Allowed,
    },
    Case {
        name: "pod_plain_denied",
        body: include_bytes!("fixtures/pod-plain.json"),
        expect: Outcome::Denied,
    },
    Case {
        name: "pod_large_env_allowed",
        body: include_bytes!("fixtures/pod-large-env.json"),
        expect: Outcome::Allowed,
    },
    Case {
        name: "deployment",
        body: include_bytes!("fixtures/deployment.json"),
        // Whatever the rules say about the productpage Deployment; checked
        // below only for being a decision, not a 400.
        expect: Outcome::Allowed,
    },
];

fn reviewer() -> Reviewer {
    let manifests = meshgate::manifest::parse_text("state.yaml", STATE).expect("state manifests");
    let index = meshgate::posture::files::index(&manifests, "default").expect("posture index");
    let posture: SharedPosture = Arc::new(RwLock::new(index));
    Reviewer::new(Arc::new(Config::default()), posture)
}

/// One review as the handler runs it; returns the response bytes. Without
/// a confirmer the review never waits, so polling it once on this thread
/// costs what the handler's await does.
fn review(reviewer: &Reviewer, body: &[u8]) -> Vec<u8> {
    let reviewed = block_on(reviewer.validate(body)).expect("a valid AdmissionReview");
    reviewed.body.expect("serialisable response")
}

fn validate(c: &mut Criterion) {
    let reviewer = reviewer();
    let mut group = c.benchmark_group("validate");
    for case in CASES {
        // A benchmark of the wrong path measures nothing useful: check first.
        let outcome = block_on(reviewer.validate(case.body))
            .expect("fixture parses")
            .record
            .outcome;
        if case.name == "deployment" {
            assert_ne!(
                outcome,
                Outcome::Denied,
                "{}: unexpectedly denied",
                case.name
            );
        } else {
            assert_eq!(outcome, case.expect, "{}: unexpected outcome", case.name);
        }
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| review(&reviewer, black_box(case.body)))
        });
    }
    group.finish();
}

/// Where one review's time goes, stage by stage, for the two allowed pod
/// inputs. Judging and building the response take well under a microsecond,
/// so they are not broken out: they are `validate` minus these stages.
/// Diagnostic, so shorter runs than `validate`.
fn stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("stages");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    for case in CASES
        .iter()
        .filter(|c| c.name.starts_with("pod_") && c.name.ends_with("_allowed"))
    {
        let input = case.name.trim_end_matches("_allowed");
        let body = case.body;
        // The object as written, for the decode a manifest or a review
        // parsed the slow way (its object did not decode in place) goes
        // through.
        let review_value: serde_json::Value = serde_json::from_slice(body).expect("json");
        let request = &review_value["request"];
        let object_text = serde_json::to_string(&request["object"]).expect("json");
        let raw: &serde_json::value::RawValue = serde_json::from_str(&object_text).expect("json");
        let ns = request["namespace"].as_str().unwrap_or_default();
        let name = request["name"].as_str().unwrap_or_default();

        // What examples/baseline_server.rs does with the body: the whole
        // review into serde_json::Value-backed DynamicObject.
        group.bench_function(format!("{input}/baseline_parse_dynamic"), |b| {
            b.iter(|| {
                serde_json::from_slice::<AdmissionReview<DynamicObject>>(black_box(body))
                    .expect("a review")
            })
        });
        // Envelope, request and the pod's view, in one pass.
        group.bench_function(format!("{input}/parse_review"), |b| {
            b.iter(|| review::parse(black_box(body)).expect("a review").uid.len())
        });
        // The raw object into the Workload view (lean metadata, PodSpecView).
        group.bench_function(format!("{input}/decode_object"), |b| {
            b.iter(|| subject::decode(Kind::Pod, black_box(raw), ns, name).expect("a pod"))
        });
        // The same object without metadata.managedFields, which the view
        // skips unbuilt: what scanning past them still costs.
        let stripped = {
            let mut value: serde_json::Value = serde_json::from_str(raw.get()).expect("json");
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("managedFields");
            }
            serde_json::to_string(&value).expect("json")
        };
        let stripped: &serde_json::value::RawValue = serde_json::from_str(&stripped).expect("json");
        group.bench_function(
            format!("{input}/decode_object_without_managed_fields"),
            |b| {
                b.iter(|| subject::decode(Kind::Pod, black_box(stripped), ns, name).expect("a pod"))
            },
        );
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// The whole `/validate` handler without the network: the webhook router
/// (body read, review, metrics, the decision log line in meshgate's JSON
/// format written to a sink, the review span, the answer's body), as
/// `meshgate serve` runs it. What this adds to `validate/*` is the fixed
/// cost per review that the no-op webhook does not pay.
fn handler(c: &mut Criterion) {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    // meshgate serve's subscriber (JSON, the default filter), writing to a
    // sink: the cost of formatting the lines, not of the write(2).
    let subscriber = meshgate::serve::log::subscriber(
        meshgate::cli::LogFormat::Json,
        tracing_subscriber::EnvFilter::new(meshgate::serve::log::DEFAULT_FILTER),
        false,
        std::io::sink,
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut registry = prometheus_client::registry::Registry::default();
    let app = meshgate::server::routes::webhook(meshgate::server::routes::AppState {
        reviewer: Arc::new(reviewer()),
        metrics: meshgate::server::metrics::ServerMetrics::register(&mut registry),
        sync: Arc::new(meshgate::posture::reflector::CacheSync::all_synced(
            &meshgate::posture::reflector::all(),
        )),
        max_body_bytes: 3 << 20,
        draining: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        events: None,
    });
    let call = |body: &'static [u8]| {
        let request = axum::http::Request::post("/validate")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body))
            .expect("a request");
        block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
            response
                .into_body()
                .collect()
                .await
                .expect("a body")
                .to_bytes()
        })
    };
    let mut group = c.benchmark_group("handler");
    for case in CASES.iter().filter(|c| c.name != "pod_large_env_allowed") {
        group.bench_function(case.name, |b| b.iter(|| call(black_box(case.body))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = validate, stages, handler
}
criterion_main!(benches);
