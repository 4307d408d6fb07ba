//! The differential test's corpus (tests/envtest_native_diff.rs): every
//! object of the repository's fixtures of a kind some native rule reads,
//! and how it is placed in a test namespace.

pub mod verdicts;

use meshgate::kinds::Kind;
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The corpus: every object of a kind some native rule reads.
pub fn corpus() -> Vec<(String, Value)> {
    let mut files = vec![format!("{ROOT}/tests/fixtures/native/corpus.yaml")];
    for dir in [
        "tests/fixtures/workloads",
        "tests/fixtures/istio/gateway-deployments",
        "tests/fixtures/istio/injector",
        "tests/fixtures/admission",
        "examples/manifests",
    ] {
        let mut names: Vec<_> = std::fs::read_dir(format!("{ROOT}/{dir}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file() && !p.ends_with("README.md"))
            .collect();
        names.sort();
        files.extend(names.iter().map(|p| p.display().to_string()));
    }
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let Ok(manifests) = meshgate::manifest::parse_text(&file, &text) else {
            continue;
        };
        for (i, m) in manifests.into_iter().enumerate() {
            // Captured AdmissionReviews carry the object in the request.
            let value = match m.value.pointer("/request/object") {
                Some(o) if m.kind == "AdmissionReview" => o.clone(),
                _ => m.value,
            };
            if judged_kind(&value).is_some() {
                out.push((format!("{}#{i}", file.trim_start_matches(ROOT)), value));
            }
        }
    }
    out
}

pub fn judged_kind(value: &Value) -> Option<Kind> {
    let kind = Kind::from_api_version(value["apiVersion"].as_str()?, value["kind"].as_str()?)?;
    let targets = [
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Sidecar,
        Kind::Certificate,
    ];
    (kind.row().pod_spec.is_some() || targets.contains(&kind)).then_some(kind)
}

/// The object as it would be created in `ns`: server-set fields dropped.
pub fn placed(value: &Value, ns: &str) -> Value {
    let mut v = value.clone();
    let meta = v["metadata"].as_object_mut().unwrap();
    for field in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "managedFields",
        "ownerReferences",
        "generation",
    ] {
        meta.remove(field);
    }
    // Istio's injector test data names some Deployments in camel case,
    // which the API server refuses before admission.
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("generated");
    let name = if name.is_empty() {
        "generated".to_owned()
    } else {
        name.to_ascii_lowercase()
    };
    meta.insert("name".into(), json!(name));
    meta.remove("generateName");
    meta.insert("namespace".into(), json!(ns));
    v.as_object_mut().unwrap().remove("status");
    v
}
