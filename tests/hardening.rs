//! Hostile and oversized reviews through the real HTTPS server: objects the
//! API server would never send are refused (never an accidental allow), and
//! answers stay bounded however many violations an object has. The reviews
//! are the captures in tests/fixtures/admission, edited.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

/// Asserts a 400 denial whose message contains `why`.
fn assert_refused(name: &str, response: &Value, why: &str) {
    assert_eq!(response["allowed"], false, "{name}: {response}");
    assert_eq!(response["status"]["code"], 400, "{name}: {response}");
    assert!(
        message(response).contains(why),
        "{name}: {:?} lacks {why:?}",
        message(response)
    );
}

/// Every captured CREATE or UPDATE of a judged kind (the ones /validate
/// reads `object` from).
const OBJECT_REVIEWS: &[&str] = &[
    "authorizationpolicy-create-allow-all.json",
    "authorizationpolicy-create-allow-nothing.json",
    "certificate-create-long.json",
    "cronjob-create.json",
    "daemonset-create.json",
    "deployment-create.json",
    "destinationrule-create-disable.json",
    "job-create.json",
    "namespace-create.json",
    "namespace-label-update.json",
    "peerauthentication-create-permissive-v1beta1.json",
    "peerauthentication-create-strict-v1.json",
    "peerauthentication-update-to-permissive.json",
    "pod-create-injected.json",
    "pod-create-plain.json",
    "sidecar-create-allow-any.json",
    "statefulset-create.json",
];

/// The deny-worthy Istio objects that went through when sent as an array.
const DENY_WORTHY_ISTIO: &[&str] = &[
    "authorizationpolicy-create-allow-all.json",
    "destinationrule-create-disable.json",
    "peerauthentication-create-permissive-v1beta1.json",
    "peerauthentication-update-to-permissive.json",
    "sidecar-create-allow-any.json",
];

#[tokio::test]
async fn deny_worthy_istio_objects_are_denied_as_captured() {
    // The baseline for the array test below: each capture is denied as is.
    let server = Server::start(Options::default());
    for name in DENY_WORTHY_ISTIO {
        let response = server.review(fixture(name)).await;
        assert_eq!(response["allowed"], false, "{name}: {response}");
        assert_eq!(response["status"]["code"], 403, "{name}: {response}");
    }
}

#[tokio::test]
async fn an_object_that_is_not_a_json_object_is_refused_for_every_kind() {
    let server = Server::start(Options::default());
    for name in OBJECT_REVIEWS {
        let review = fixture(name);
        let object = json(&review)["request"]["object"].clone();
        for shape in [json!([object]), json!([]), json!("pod"), json!(7)] {
            let response = server
                .review(edit(&review, |v| v["request"]["object"] = shape.clone()))
                .await;
            assert_refused(
                &format!("{name} with object {shape:.20}"),
                &response,
                "the object is not a JSON object",
            );
        }
    }
}

#[tokio::test]
async fn an_old_object_that_is_not_a_json_object_is_refused() {
    let server = Server::start(Options::default());
    for name in [
        "peerauthentication-update-to-permissive.json",
        "pod-update-label.json",
        "namespace-label-update.json",
        "peerauthentication-delete.json",
        "authorizationpolicy-delete.json",
    ] {
        let review = fixture(name);
        let old = json(&review)["request"]["oldObject"].clone();
        let response = server
            .review(edit(&review, |v| v["request"]["oldObject"] = json!([old])))
            .await;
        assert_refused(name, &response, "the oldObject is not a JSON object");
    }
}

#[tokio::test]
async fn the_request_namespace_decides_and_a_different_object_namespace_is_refused() {
    let server = Server::start(Options::default());
    // A pod for bookinfo that says kube-system (exempt) inside.
    for name in [
        "pod-create-plain.json",
        "deployment-create.json",
        "peerauthentication-create-permissive-v1beta1.json",
        "authorizationpolicy-create-allow-all.json",
    ] {
        let review = edit(&fixture(name), |v| {
            v["request"]["object"]["metadata"]["namespace"] = "kube-system".into()
        });
        let response = server.review(review).await;
        assert_refused(
            name,
            &response,
            "the object names namespace \"kube-system\" but the request is for namespace \"bookinfo\"",
        );
    }
    // The same for the old object of an update.
    let review = edit(&fixture("pod-update-label.json"), |v| {
        v["request"]["oldObject"]["metadata"]["namespace"] = "kube-system".into()
    });
    assert_refused(
        "pod update",
        &server.review(review).await,
        "the oldObject names namespace \"kube-system\"",
    );
    // An object that leaves its namespace out takes the request's.
    let review = edit(&fixture("pod-create-plain.json"), |v| {
        v["request"]["object"]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
    });
    let response = server.review(review).await;
    assert_eq!(response["status"]["code"], 403, "{response}");
    assert!(message(&response).contains("pod bookinfo/plain-nginx"));
}

#[tokio::test]
async fn an_istio_object_of_another_kind_than_the_request_is_refused() {
    let server = Server::start(Options::default());
    // The request says AuthorizationPolicy; the body is a harmless-looking
    // PeerAuthentication, which would decode to an allow-all policy.
    let review = edit(&fixture("authorizationpolicy-create-allow-all.json"), |v| {
        v["request"]["object"]["kind"] = "PeerAuthentication".into();
    });
    assert_refused(
        "kind",
        &server.review(review).await,
        "the object is a PeerAuthentication of apiVersion \"security.istio.io/v1\", not a AuthorizationPolicy",
    );
    let review = edit(&fixture("sidecar-create-allow-any.json"), |v| {
        v["request"]["object"]["apiVersion"] = "example.com/v1".into();
    });
    assert_refused("apiVersion", &server.review(review).await, "not a Sidecar");
    // k8s-openapi checks its own kinds.
    let review = edit(&fixture("pod-create-plain.json"), |v| {
        v["request"]["object"]["kind"] = "Deployment".into();
    });
    assert_refused(
        "pod",
        &server.review(review).await,
        "cannot decode the Pod object",
    );
}

#[tokio::test]
async fn mutate_refuses_a_pod_create_it_cannot_read() {
    let server = Server::start(Options::default());
    let review = fixture("mutate-pod-create.json");
    let object = json(&review)["request"]["object"].clone();
    let cases = [
        (
            "no object",
            Value::Null,
            "the CREATE request carries no object",
        ),
        (
            "an array",
            json!([object]),
            "the object is not a JSON object",
        ),
        (
            "a broken spec",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "nope"}}),
            "cannot decode the Pod object",
        ),
    ];
    for (what, replacement, why) in cases {
        let body = edit(&review, |v| {
            if replacement.is_null() {
                v["request"].as_object_mut().unwrap().remove("object");
            } else {
                v["request"]["object"] = replacement.clone();
            }
        });
        let uid = uid_of(&body);
        let (status, answer) = server.post("/mutate", body).await;
        assert_eq!(status, StatusCode::OK, "{what}: {answer}");
        assert_valid_answer(&answer, &uid);
        assert_refused(what, &answer["response"], why);
    }
    // Other operations and kinds are still passed through untouched.
    let (_, answer) = server
        .post("/mutate", fixture("deployment-create.json"))
        .await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
}

// ------------------------------------------------------------ bounded answers

/// The captured plain pod with 40 containers that each run privileged, as
/// root with the proxy's UID, and with NET_ADMIN and NET_RAW.
fn pod_with_40_bad_containers(ns: &str) -> Vec<u8> {
    let review = with_namespace(&fixture("pod-create-plain.json"), ns);
    edit(&review, |v| {
        let template = v["request"]["object"]["spec"]["containers"][0].clone();
        let containers: Vec<Value> = (0..40)
            .map(|i| {
                let mut c = template.clone();
                c["name"] = format!("app-{i:02}").into();
                c["securityContext"] = json!({
                    "privileged": true,
                    "runAsUser": 1337,
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}
                });
                c
            })
            .collect();
        v["request"]["object"]["spec"]["containers"] = containers.into();
    })
}

#[tokio::test]
async fn a_denial_with_many_violations_is_bounded_and_the_log_keeps_what_was_cut() {
    let server = Server::start(Options::default());
    let review = pod_with_40_bad_containers("bookinfo");
    let uid = uid_of(&review);
    let response = server.review(review).await;
    assert_eq!(response["allowed"], false);
    let m = message(&response);
    assert!(m.len() <= 4096, "{} bytes", m.len());
    // Every violated rule is named up front, then details, then a count.
    assert!(
        m.starts_with("meshgate denied pod bookinfo/plain-nginx: "),
        "{m}"
    );
    let head = &m[..m.find(": [").expect("details follow the rule list")];
    for rule in [
        "no-interception-bypass",
        "sidecar-required",
        "dedicated-service-account",
    ] {
        assert!(head.contains(rule), "{rule} missing from {head:?}");
    }
    assert!(m.contains("more not shown; see meshgate's log"), "{m}");
    let annotations = response["auditAnnotations"].as_object().unwrap();
    for (rule, value) in annotations {
        let value = value.as_str().unwrap();
        assert!(value.len() <= 1024, "{rule}: {} bytes", value.len());
    }
    assert!(annotations["no-interception-bypass"]
        .as_str()
        .unwrap()
        .ends_with(" more"));
    // The decision log line carries the details the answer cut.
    let line = server
        .wait_for_log("the decision", |e| {
            e["message"] == "admission review" && e["uid"] == uid.as_str()
        })
        .await;
    let omitted = line["omitted"].as_str().unwrap();
    assert!(
        omitted.contains("container \"app-39\" runs as UID 1337"),
        "{omitted:.300}"
    );
    assert!(!m.contains("app-39"), "app-39 was expected to be cut");
}

#[tokio::test]
async fn audit_mode_warnings_stay_within_the_api_servers_budget() {
    let server = Server::start(Options::default());
    let response = server.review(pod_with_40_bad_containers("audited")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let warnings: Vec<&str> = response["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let total: usize = warnings.iter().map(|w| w.len()).sum();
    assert!(total <= 4096, "{total} bytes");
    assert!(
        warnings
            .last()
            .unwrap()
            .contains("more violation(s) not shown here"),
        "{warnings:?}"
    );
    for value in response["auditAnnotations"].as_object().unwrap().values() {
        assert!(value.as_str().unwrap().len() <= 1024);
    }
}
