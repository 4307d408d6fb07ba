//! `meshgate serve` through the built binary: real TLS, HTTP/1.1 keep-alive
//! and HTTP/2 clients, and AdmissionReview requests captured from a real
//! kube-apiserver (see tests/fixtures/admission). Cluster state comes from
//! tests/fixtures/state: `bookinfo` (enrolled), `legacy` (not enrolled) and
//! `audited` (enrolled, `meshgate.io/mode: audit`).

mod common;

use std::time::Duration;

use common::*;
use hyper::{StatusCode, Version};
use rustls::ProtocolVersion;
use serde_json::{json, Value};
use tokio::net::TcpStream;

fn message(response: &Value) -> &str {
    response["status"]["message"].as_str().unwrap_or("")
}

fn warnings(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .map(|w| w.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn annotation_keys(response: &Value) -> Vec<String> {
    let mut keys: Vec<String> = response["auditAnnotations"]
        .as_object()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

fn assert_allowed_silently(response: &Value) {
    assert_eq!(response["allowed"], true, "{response}");
    assert!(warnings(response).is_empty(), "{response}");
    assert!(annotation_keys(response).is_empty(), "{response}");
}

// ------------------------------------------------------------- transport

#[tokio::test]
async fn answers_several_reviews_on_one_http1_keep_alive_connection() {
    let server = Server::start(Options::default());
    // Like the API server: TLS 1.3, ALPN http/1.1 only, an IP address (no SNI).
    let mut conn = Http1::connect(
        server.addr,
        tls_config(&[&server.ca_pem], TLS13, &[b"http/1.1"]),
    )
    .await;
    assert_eq!(conn.tls.alpn.as_deref(), Some(&b"http/1.1"[..]));

    let expected = [
        ("pod-create-injected.json", true),
        ("pod-create-plain.json", false),
        ("deployment-create.json", true),
        ("pod-create-hostnetwork.json", false),
    ];
    for (name, allowed) in expected {
        let review = fixture(name);
        let (status, body) = conn.post("/validate?timeout=5s", review.clone()).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_valid_answer(&body, &uid_of(&review));
        assert_eq!(body["response"]["allowed"], allowed, "{name}: {body}");
        assert!(
            conn.is_open(),
            "the server closed the connection after {name}"
        );
    }
    assert_eq!(conn.get("/healthz").await, (StatusCode::OK, "ok".into()));
}

#[tokio::test]
async fn serves_http2_to_clients_that_negotiate_it() {
    let server = Server::start(Options::default());
    let tls = tls_connect(
        server.addr,
        tls_config(&[&server.ca_pem], ANY_TLS, &[b"h2", b"http/1.1"]),
    )
    .await
    .unwrap();
    assert_eq!(negotiated(&tls).alpn.as_deref(), Some(&b"h2"[..]));

    // Two reviews multiplexed on one HTTP/2 connection.
    let client = h2_client(&server.ca_pem);
    let send = |name: &'static str| {
        let request = client.post(server.url("/validate")).body(fixture(name));
        async move {
            let response = request.send().await.expect("HTTP/2 request");
            let version = response.version();
            let body: Value = response.json().await.unwrap();
            (version, body)
        }
    };
    let ((v1, plain), (v2, injected)) = tokio::join!(
        send("pod-create-plain.json"),
        send("pod-create-injected.json")
    );
    assert_eq!((v1, v2), (Version::HTTP_2, Version::HTTP_2));
    assert_valid_answer(&plain, &uid_of(&fixture("pod-create-plain.json")));
    assert_eq!(plain["response"]["allowed"], false);
    assert_valid_answer(&injected, &uid_of(&fixture("pod-create-injected.json")));
    assert_eq!(injected["response"]["allowed"], true);
}

#[tokio::test]
async fn serves_its_certificate_to_clients_that_send_no_sni() {
    let server = Server::start(Options::default());
    // rustls sends no server_name extension when connecting to an IP address.
    let tls = tls_connect(server.addr, tls_config(&[&server.ca_pem], ANY_TLS, &[]))
        .await
        .expect("handshake without SNI");
    assert_eq!(negotiated(&tls).leaf, server.leaf);

    // reqwest with an IP URL does the same, and verifies the IP SAN.
    assert!(server.url("/").starts_with("https://127.0.0.1:"));
    assert_eq!(
        server.get("/healthz").await,
        (StatusCode::OK, "ok".to_owned())
    );
}

#[tokio::test]
async fn speaks_tls_1_2_and_tls_1_3() {
    let server = Server::start(Options::default());
    for (versions, expected) in [
        (TLS12, ProtocolVersion::TLSv1_2),
        (TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let mut conn = Http1::connect(
            server.addr,
            tls_config(&[&server.ca_pem], versions, &[b"http/1.1"]),
        )
        .await;
        assert_eq!(conn.tls.version, Some(expected));
        let review = fixture("pod-create-plain.json");
        let (status, body) = conn.post("/validate", review.clone()).await;
        assert_eq!(status, StatusCode::OK, "{expected:?}");
        assert_valid_answer(&body, &uid_of(&review));
    }
}

// ------------------------------------------------------------- decisions

#[tokio::test]
async fn admits_a_pod_the_sidecar_injector_has_handled() {
    let server = Server::start(Options::default());
    let response = server.review(fixture("pod-create-injected.json")).await;
    assert_allowed_silently(&response);
}

#[tokio::test]
async fn denies_a_plain_pod_naming_the_pod_every_rule_and_its_fix() {
    let server = Server::start(Options::default());
    let response = server.review(fixture("pod-create-plain.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    let m = message(&response);
    assert!(
        m.starts_with("meshgate denied pod bookinfo/plain-nginx: "),
        "{m}"
    );
    assert!(m.contains("[sidecar-required]"), "{m}");
    assert!(m.contains("[dedicated-service-account]"), "{m}");
    assert_eq!(m.matches("; fix: ").count(), 2, "one fix per rule: {m}");
    assert!(!m.contains('\n') && !m.contains('\t'), "{m:?}");
    assert_eq!(
        annotation_keys(&response),
        ["dedicated-service-account", "sidecar-required"]
    );
}

#[tokio::test]
async fn denies_a_pod_on_the_host_network() {
    let server = Server::start(Options::default());
    let response = server.review(fixture("pod-create-hostnetwork.json")).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let m = message(&response);
    assert!(m.contains("pod bookinfo/hostnet-debug"), "{m}");
    assert!(m.contains("[no-host-network]"), "{m}");
    assert!(m.contains("hostNetwork: true"), "{m}");
}

#[tokio::test]
async fn denies_a_daemonset_on_the_host_network_that_also_opts_out_of_injection() {
    let server = Server::start(Options::default());
    let daemonset = fixture("daemonset-create.json");
    let response = server.review(daemonset.clone()).await;
    assert_eq!(response["allowed"], false);
    let m = message(&response);
    assert!(
        m.starts_with("meshgate denied daemonset bookinfo/node-exporter"),
        "{m}"
    );
    assert!(m.contains("[no-host-network]"), "{m}");
    assert!(m.contains("[sidecar-required]"), "{m}");

    // Without hostNetwork the `sidecar.istio.io/inject: "false"` opt-out is
    // what keeps it out of the mesh.
    let without_host_network = edit(&daemonset, |v| {
        v["request"]["object"]["spec"]["template"]["spec"]["hostNetwork"] = false.into();
    });
    let response = server.review(without_host_network).await;
    assert_eq!(response["allowed"], false);
    let m = message(&response);
    assert!(!m.contains("[no-host-network]"), "{m}");
    assert!(m.contains("[sidecar-required]"), "{m}");
    assert!(m.contains("sidecar.istio.io/inject=false"), "{m}");
}

#[tokio::test]
async fn denies_a_cronjob_that_excludes_ports_from_the_sidecar() {
    let server = Server::start(Options::default());
    let response = server.review(fixture("cronjob-create.json")).await;
    assert_eq!(response["allowed"], false);
    let m = message(&response);
    assert!(m.contains("cronjob bookinfo/nightly-report"), "{m}");
    assert!(m.contains("[no-interception-bypass]"), "{m}");
    assert!(m.contains("excludeOutboundPorts"), "{m}");
    assert!(m.contains("5432"), "{m}");
}

#[tokio::test]
async fn admits_a_meshed_deployment_its_scale_and_a_pod_delete() {
    let server = Server::start(Options::default());
    for name in [
        "deployment-create.json",
        "deployment-scale.json",
        "pod-delete.json",
        "pod-delete-final.json",
    ] {
        let response = server.review(fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(warnings(&response).is_empty(), "{name}: {response}");
    }
}

#[tokio::test]
async fn admits_istio_policies_and_namespaces_that_keep_the_mesh_tight() {
    let server = Server::start(Options::default());
    for name in [
        "peerauthentication-create-strict-v1.json",
        "authorizationpolicy-create-allow-nothing.json",
        "namespace-create.json",
        // Deleting a PERMISSIVE policy weakens nothing; namespaces are not judged on DELETE.
        "peerauthentication-delete.json",
        "namespace-delete.json",
        // A kind it does not judge, and a subresource.
        "deployment-scale.json",
    ] {
        let response = server.review(fixture(name)).await;
        assert_allowed_silently(&response);
    }
}

#[tokio::test]
async fn denies_istio_policies_that_weaken_the_mesh_naming_rule_and_fix() {
    let server = Server::start(Options::default());
    // The answer names the object once; each finding describes the field.
    let cases = [
        (
            "peerauthentication-create-permissive-v1beta1.json",
            vec![
                "meshgate denied peerauthentication bookinfo/productpage-permissive: [peer-authentication-strict] sets mtls.mode: PERMISSIVE",
                "portLevelMtls[9080].mode: DISABLE",
            ],
        ),
        (
            "peerauthentication-update-to-permissive.json",
            vec![
                "[peer-authentication-strict]",
                "meshgate denied peerauthentication bookinfo/default: [peer-authentication-strict]",
                "[baseline-protected] this change would leave enrolled namespace \"bookinfo\" with mTLS PERMISSIVE",
            ],
        ),
        (
            "authorizationpolicy-create-allow-all.json",
            vec!["meshgate denied authorizationpolicy bookinfo/allow-all: [authorization-no-allow-all] allows every request"],
        ),
        (
            "authorizationpolicy-delete.json",
            vec!["meshgate denied authorizationpolicy bookinfo/allow-nothing: [baseline-protected] deleting it would leave enrolled namespace \"bookinfo\" without a deny-by-default AuthorizationPolicy"],
        ),
        (
            "destinationrule-create-disable.json",
            vec!["meshgate denied destinationrule bookinfo/reviews-plaintext: [destination-rule-mtls] sets trafficPolicy.tls.mode: DISABLE for in-mesh host reviews.bookinfo.svc.cluster.local"],
        ),
        (
            "sidecar-create-allow-any.json",
            vec!["meshgate denied sidecar bookinfo/default: [sidecar-egress-locked] sets outboundTrafficPolicy.mode: ALLOW_ANY"],
        ),
        (
            "certificate-create-long.json",
            vec!["meshgate denied certificate bookinfo/productpage-workload: [short-lived-certificates] is valid for 8760h, over the 24h maximum"],
        ),
        (
            "namespace-label-update.json",
            vec!["meshgate denied namespace legacy: [namespace-mesh-enrolled] is labelled istio-injection=disabled"],
        ),
    ];
    for (name, expected) in cases {
        let response = server.review(fixture(name)).await;
        assert_eq!(response["allowed"], false, "{name}: {response}");
        assert_eq!(response["status"]["code"], 403, "{name}");
        for text in expected {
            assert!(
                message(&response).contains(text),
                "{name}: {text}\n{}",
                message(&response)
            );
        }
        assert!(message(&response).contains("fix: "), "{name}");
    }
}

#[tokio::test]
async fn answers_a_dry_run_exactly_like_the_real_request() {
    let server = Server::start(Options::default());
    let dry_run = fixture("pod-create-dry-run.json");
    assert_eq!(json(&dry_run)["request"]["dryRun"], true);
    let real = edit(&dry_run, |v| v["request"]["dryRun"] = false.into());

    let dry = server.review(dry_run).await;
    let wet = server.review(real).await;
    assert_eq!(dry["allowed"], false);
    assert_eq!(dry["allowed"], wet["allowed"]);
    assert_eq!(dry["status"], wet["status"]);
    assert!(message(&dry).contains("pod bookinfo/dryrun-pod"));

    let uid = uid_of(&fixture("pod-create-dry-run.json"));
    for dry_run in [true, false] {
        server
            .wait_for_log("the decision log line with dry_run", |e| {
                e["message"] == "admission review"
                    && e["uid"] == uid.as_str()
                    && e["dry_run"] == dry_run
            })
            .await;
    }
}

#[tokio::test]
async fn lets_an_update_through_when_its_violations_pre_exist() {
    let server = Server::start(Options::default());
    let response = server.review(fixture("pod-update-label.json")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let w = warnings(&response);
    assert_eq!(w.len(), 2, "{w:?}");
    for rule in ["sidecar-required", "dedicated-service-account"] {
        assert!(
            w.iter()
                .any(|w| w.contains("pre-existing") && w.contains(&format!("{rule}:"))),
            "no pre-existing warning for {rule}: {w:?}"
        );
    }
    assert!(
        response["auditAnnotations"]["sidecar-required"]
            .as_str()
            .unwrap()
            .starts_with("pre-existing: "),
        "{response}"
    );
}

// --------------------------------------------------------- modes, exemptions

#[tokio::test]
async fn audit_mode_allows_and_reports_single_line_warnings_within_budget() {
    let server = Server::start(Options::default().config("mode: audit\n"));
    for (name, pod, rules) in [
        (
            "pod-create-plain.json",
            "pod bookinfo/plain-nginx",
            &["dedicated-service-account", "sidecar-required"][..],
        ),
        (
            "pod-create-hostnetwork.json",
            "pod bookinfo/hostnet-debug",
            &[
                "dedicated-service-account",
                "no-host-network",
                "sidecar-required",
            ][..],
        ),
    ] {
        let response = server.review(fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(response["status"].get("code").is_none(), "{response}");
        let w = warnings(&response);
        assert_eq!(w.len(), rules.len(), "{w:?}");
        for rule in rules {
            // The object is named once, before the rule.
            let prefix = format!("[meshgate audit] {pod}: {rule}:");
            assert!(
                w.iter().any(|w| w.starts_with(&prefix)),
                "{prefix} in {w:?}"
            );
            assert!(
                response["auditAnnotations"][rule]
                    .as_str()
                    .is_some_and(|a| a.starts_with("audit: ")),
                "{response}"
            );
        }
        for warning in &w {
            assert!(warning.starts_with("[meshgate audit] "), "{warning}");
            assert!(!warning.contains(['\n', '\t', '\r']), "{warning:?}");
        }
        assert!(w.iter().map(String::len).sum::<usize>() <= 4096);
        assert_eq!(annotation_keys(&response), rules);
    }
    let metrics = server.metrics().await;
    let audited = [("rule", "sidecar-required"), ("mode", "audit")];
    assert_eq!(metrics.value("meshgate_violations_total", &audited), 2.0);
    assert_eq!(
        metrics.value("meshgate_violations_total", &[("mode", "enforce")]),
        0.0
    );
}

#[tokio::test]
async fn namespace_label_lowers_enforcement_to_audit() {
    let server = Server::start(Options::default());
    let plain = fixture("pod-create-plain.json");

    let response = server.review(with_namespace(&plain, "audited")).await;
    assert_eq!(response["allowed"], true, "{response}");
    let w = warnings(&response);
    assert!(
        w.iter()
            .any(|w| w.starts_with(
                "[meshgate audit] pod audited/plain-nginx: sidecar-required: has no istio-proxy sidecar"
            )),
        "{w:?}"
    );
    assert!(
        w.iter().all(|w| w.starts_with("[meshgate audit] ")),
        "{w:?}"
    );

    // The same pod elsewhere is still denied: `legacy` is not even enrolled.
    let response = server.review(with_namespace(&plain, "legacy")).await;
    assert_eq!(response["allowed"], false);
    assert!(
        message(&response).contains("namespace \"legacy\" is not enrolled"),
        "{response}"
    );
}

#[tokio::test]
async fn an_exemption_lifts_its_rule_and_is_counted() {
    let server = Server::start(Options::default().config(
        "exemptions:\n\
         - rules: [no-host-network]\n  \
           namespace: bookinfo\n  \
           names: [hostnet-debug]\n  \
           reason: debugging pod that needs the node's network namespace\n",
    ));
    let metric = |m: &Metrics| {
        m.value(
            "meshgate_exemptions_applied_total",
            &[("rule", "no-host-network")],
        )
    };
    assert_eq!(metric(&server.metrics().await), 0.0);

    let review = fixture("pod-create-hostnetwork.json");
    let response = server.review(review.clone()).await;
    // hostNetwork pods still get no sidecar: that rule is not exempted.
    assert_eq!(response["allowed"], false);
    let m = message(&response);
    assert!(!m.contains("[no-host-network]"), "{m}");
    assert!(m.contains("[sidecar-required]"), "{m}");
    assert!(response["auditAnnotations"]
        .get("no-host-network")
        .is_none());
    assert_eq!(metric(&server.metrics().await), 1.0);

    let uid = uid_of(&review);
    let line = server
        .wait_for_log("the decision log line", |e| {
            e["message"] == "admission review" && e["uid"] == uid.as_str()
        })
        .await;
    assert_eq!(line["exempted"], "no-host-network");

    server.review(review).await;
    assert_eq!(metric(&server.metrics().await), 2.0);
}

// -------------------------------------------------------------- bad input

#[tokio::test]
async fn rejects_bodies_that_are_not_admission_reviews_with_400() {
    let server = Server::start(Options::default());
    let cases: [(&[u8], &str); 4] = [
        (
            b"{\"apiVersion\": \"admission.k8s.io/v1\", ",
            "malformed JSON",
        ),
        (
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#,
            "admission.k8s.io/v1beta1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "no request",
        ),
    ];
    for (body, problem) in cases {
        let (status, answer) = server.post("/validate", body.to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        let error = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(
            error.contains(problem),
            "{error:?} should mention {problem:?}"
        );
    }
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.value(
            "meshgate_admission_requests_total",
            &[("decision", "error")]
        ),
        4.0
    );
}

#[tokio::test]
async fn denies_a_create_that_carries_no_object() {
    let server = Server::start(Options::default());
    let plain = fixture("pod-create-plain.json");
    let without = edit(&plain, |v| {
        v["request"].as_object_mut().unwrap().remove("object");
    });
    let null = edit(&plain, |v| v["request"]["object"] = Value::Null);
    for review in [without, null] {
        let response = server.review(review).await;
        assert_eq!(response["allowed"], false, "{response}");
        assert_eq!(response["status"]["code"], 400);
        let m = message(&response);
        assert!(m.contains("pod bookinfo/plain-nginx"), "{m}");
        assert!(m.contains("carries no object"), "{m}");
    }
}

#[tokio::test]
async fn rejects_bodies_over_the_size_limit_with_413() {
    const LIMIT: usize = 64 * 1024;
    let server = Server::start(Options::default().max_body_bytes(LIMIT));
    let injected = fixture("pod-create-injected.json");
    assert!(injected.len() > 32 * 1024 && injected.len() < LIMIT);
    // The API server never pads, but a bigger object looks just like this.
    let mut padded = injected.clone();
    padded.resize(LIMIT + 4096, b' ');

    // Under the limit: judged as usual.
    let response = server.review(injected.clone()).await;
    assert_eq!(response["allowed"], true);

    // Over it, with Content-Length: refused before reading.
    let (status, body) = server.post("/validate", padded.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        body["error"],
        format!("request body exceeds the {LIMIT}-byte limit")
    );

    // Chunked, without Content-Length: under the limit works, over it is 413.
    let config = tls_config(&[&server.ca_pem], ANY_TLS, &[b"http/1.1"]);
    for (body, expected) in [(&injected, 200), (&padded, 413)] {
        let mut conn = RawConn::connect(server.addr, config.clone()).await;
        conn.write(&post_head("/validate?timeout=5s", None, &[]))
            .await
            .unwrap();
        // The server may answer and stop reading once the limit is crossed.
        let _ = conn.write(&chunked(body, 8192)).await;
        let response = conn.read_response().await;
        assert_eq!(response.status, expected, "{response:?}");
        let answer = response.json();
        if expected == 200 {
            assert_valid_answer(&answer, &uid_of(&injected));
        } else {
            assert!(answer["error"].as_str().unwrap().contains("limit"));
        }
    }
}

#[tokio::test]
async fn routes_on_the_path_and_method() {
    let server = Server::start(Options::default());
    // The API server appends `?timeout=<timeoutSeconds>s` to the webhook URL.
    let review = fixture("pod-create-plain.json");
    let (status, body) = server.post("/validate?timeout=5s", review.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_valid_answer(&body, &uid_of(&review));
    assert!(message(&body["response"]).contains("[sidecar-required]"));

    // The mutating endpoint answers its own requests (tests/mutate.rs has
    // what it answers).
    let mutate = fixture("mutate-pod-create.json");
    let (status, body) = server.post("/mutate?timeout=5s", mutate.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["uid"], uid_of(&mutate).as_str());
    assert_eq!(body["response"]["allowed"], true);

    let (status, _) = server.get("/validate").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = server.post("/no-such-path", review).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ------------------------------------------------------ health and metrics

#[tokio::test]
async fn reports_healthy_and_ready_with_state_from_files() {
    let server = Server::start(Options::default());
    assert_eq!(server.get("/healthz").await, (StatusCode::OK, "ok".into()));
    assert_eq!(
        server.get("/readyz").await,
        (StatusCode::OK, "ready".into())
    );
    let metrics = server.metrics().await;
    assert_eq!(
        metrics.value("meshgate_cache_synced", &[("resource", "namespaces")]),
        1.0
    );
}

#[tokio::test]
async fn metrics_count_requests_latency_and_violations() {
    let server = Server::start(Options::default());
    for name in [
        "pod-create-plain.json",
        "pod-create-hostnetwork.json",
        "pod-create-injected.json",
        "peerauthentication-create-strict-v1.json",
    ] {
        server.review(fixture(name)).await;
    }
    let m = server.metrics().await;
    let requests = |kind, decision| {
        m.value(
            "meshgate_admission_requests_total",
            &[
                ("endpoint", "validate"),
                ("kind", kind),
                ("operation", "CREATE"),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(requests("Pod", "denied"), 2.0, "{}", m.0);
    assert_eq!(requests("Pod", "allowed"), 1.0, "{}", m.0);
    assert_eq!(requests("PeerAuthentication", "allowed"), 1.0, "{}", m.0);

    let count = [("endpoint", "validate")];
    assert_eq!(
        m.value("meshgate_admission_duration_seconds_count", &count),
        4.0
    );
    let all = [("endpoint", "validate"), ("le", "+Inf")];
    assert_eq!(
        m.value("meshgate_admission_duration_seconds_bucket", &all),
        4.0
    );
    assert!(m.value("meshgate_admission_duration_seconds_sum", &count) > 0.0);

    let violations = |rule| {
        m.value(
            "meshgate_violations_total",
            &[("rule", rule), ("mode", "enforce")],
        )
    };
    assert_eq!(violations("sidecar-required"), 2.0);
    assert_eq!(violations("dedicated-service-account"), 2.0);
    assert_eq!(violations("no-host-network"), 1.0);
    // Label values never carry object names; namespaces appear only in the
    // posture gauges, one series per namespace by design (k8s_namespace).
    assert!(!m.0.contains("plain-nginx"));
    assert!(m
        .0
        .lines()
        .filter(|line| line.contains("bookinfo"))
        .all(|line| line.starts_with("meshgate_namespace_")
            && line.contains("k8s_namespace=\"bookinfo\"")));
}

// ------------------------------------------------------ certificate reload

/// Waits until a new connection is served `leaf`.
async fn wait_until_served(
    server: &Server,
    trusted: &[&str],
    leaf: &rustls::pki_types::CertificateDer<'_>,
) {
    let config = tls_config(trusted, ANY_TLS, &[]);
    eventually("the rotated certificate to be served", PROMPTLY, || {
        let config = config.clone();
        async move {
            let tls = tls_connect(server.addr, config).await.ok()?;
            (negotiated(&tls).leaf.as_ref() == Some(leaf)).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn reloads_a_rotated_kubelet_secret_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("CA one"), Ca::new("CA two"));
    let (old, new) = (ca1.issue(), ca2.issue());
    let mut secret = SecretVolume::new(&dir.path().join("certs"), &old.cert_pem, &old.key_pem);
    let server = Server::start(Options::default().tls(TlsFiles {
        cert: secret.cert_path(),
        key: secret.key_path(),
        ca_pem: ca1.pem.clone(),
    }));
    let http1 = tls_config(&[&ca1.pem], ANY_TLS, &[b"http/1.1"]);
    let review = fixture("pod-create-plain.json");

    let trusting_ca2 = https_client(&ca2.pem);
    assert!(trusting_ca2
        .get(server.url("/healthz"))
        .send()
        .await
        .is_err());
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);

    // A kept-alive connection, and a review whose body is still arriving.
    let mut kept = Http1::connect(server.addr, http1.clone()).await;
    assert_eq!(
        kept.post("/validate", review.clone()).await.0,
        StatusCode::OK
    );
    let mut in_flight = RawConn::connect(server.addr, http1).await;
    in_flight
        .write(&post_head(
            "/validate",
            Some(review.len()),
            &["Expect: 100-continue"],
        ))
        .await
        .unwrap();
    assert_eq!(in_flight.read_response().await.status, 100);
    let (first, rest) = review.split_at(review.len() / 2);
    in_flight.write(first).await.unwrap();

    secret.update(&new.cert_pem, &new.key_pem);
    wait_until_served(&server, &[&ca1.pem, &ca2.pem], &new.der).await;

    // New connections: only CA two's certificate now.
    let (status, answer) = {
        let response = trusting_ca2
            .post(server.url("/validate"))
            .body(review.clone())
            .send()
            .await
            .expect("a client trusting only the new CA connects");
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert_valid_answer(&answer, &uid_of(&review));
    assert!(https_client(&ca1.pem)
        .get(server.url("/healthz"))
        .send()
        .await
        .is_err());

    // Old connections carry on.
    in_flight.write(rest).await.unwrap();
    let response = in_flight.read_response().await;
    assert_eq!(response.status, 200);
    assert_valid_answer(&response.json(), &uid_of(&review));
    let (status, answer) = kept.post("/validate", review.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_valid_answer(&answer, &uid_of(&review));
    assert!(kept.is_open());

    let m = server.metrics().await;
    assert!(
        m.value("meshgate_tls_reloads_total", &[("result", "success")]) >= 1.0,
        "{}",
        m.0
    );
    server
        .wait_for_log("the reload log line", |e| {
            e["message"] == "serving certificate reloaded"
        })
        .await;
}

#[tokio::test]
async fn keeps_the_old_certificate_when_the_new_one_is_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, ca2) = (Ca::new("CA one"), Ca::new("CA two"));
    let (old, next) = (ca1.issue(), ca2.issue());
    let mut secret = SecretVolume::new(&dir.path().join("certs"), &old.cert_pem, &old.key_pem);
    let server = Server::start(Options::default().tls(TlsFiles {
        cert: secret.cert_path(),
        key: secret.key_path(),
        ca_pem: ca1.pem.clone(),
    }));
    let failures = |m: &Metrics| m.value("meshgate_tls_reloads_total", &[("result", "failure")]);
    let successes = |m: &Metrics| m.value("meshgate_tls_reloads_total", &[("result", "success")]);

    // Not a certificate at all, then a certificate with someone else's key.
    let stranger = ca2.issue();
    for (round, (cert, key)) in [
        (
            "-----BEGIN CERTIFICATE-----\ngarbage\n",
            old.key_pem.as_str(),
        ),
        (next.cert_pem.as_str(), stranger.key_pem.as_str()),
    ]
    .into_iter()
    .enumerate()
    {
        secret.update(cert, key);
        eventually("the failed reload to be counted", PROMPTLY, || async {
            (failures(&server.metrics().await) >= (round + 1) as f64).then_some(())
        })
        .await;
        let tls = tls_connect(server.addr, tls_config(&[&ca1.pem], ANY_TLS, &[]))
            .await
            .expect("the old certificate is still served");
        assert_eq!(negotiated(&tls).leaf.as_ref(), Some(&old.der));
        assert_eq!(
            server.review(fixture("pod-create-plain.json")).await["allowed"],
            false
        );
    }
    assert_eq!(successes(&server.metrics().await), 0.0);
    let error = server
        .wait_for_log("the failed reload log line", |e| e["level"] == "ERROR")
        .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot be used"),
        "{error}"
    );

    // A good certificate afterwards is picked up: nothing got stuck.
    secret.update(&next.cert_pem, &next.key_pem);
    wait_until_served(&server, &[&ca1.pem, &ca2.pem], &next.der).await;
    assert_eq!(successes(&server.metrics().await), 1.0);
}

// ---------------------------------------------------------------- start-up

fn start_up_failure(cert: &std::path::Path, key: &std::path::Path, config: Option<&str>) -> Exited {
    let dir = tempfile::tempdir().unwrap();
    let config = config.map(|yaml| {
        let path = dir.path().join("meshgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    });
    let exited = run_to_exit(&serve_args(cert, key, config.as_deref()));
    assert_eq!(exited.status.code(), Some(1), "stderr: {}", exited.stderr);
    exited
}

/// A valid certificate pair, so that only the config can be at fault.
fn valid_pair(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let serving = Ca::new("CA").issue();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert, serving.cert_pem).unwrap();
    std::fs::write(&key, serving.key_pem).unwrap();
    (cert, key)
}

#[test]
fn refuses_to_start_without_its_certificate_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = valid_pair(dir.path());
    let missing = dir.path().join("missing").join("tls.crt");
    let exited = start_up_failure(&missing, &key, None);
    assert!(
        exited.stderr.contains(&missing.display().to_string()),
        "{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("--tls-cert"), "{}", exited.stderr);
}

#[test]
fn refuses_to_start_with_an_exemption_that_gives_no_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = valid_pair(dir.path());
    let config = "exemptions:\n- rules: [no-host-network]\n  namespace: monitoring\n";
    let exited = start_up_failure(&cert, &key, Some(config));
    assert!(
        exited.stderr.contains("exemptions[0].reason"),
        "{}",
        exited.stderr
    );
}

#[test]
fn refuses_to_start_with_an_unknown_rule_id() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = valid_pair(dir.path());
    let exited = start_up_failure(&cert, &key, Some("rules:\n  no-such-rule: audit\n"));
    assert!(
        exited.stderr.contains("rules.no-such-rule"),
        "{}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains("unknown rule id"),
        "{}",
        exited.stderr
    );
    assert!(
        exited.stderr.contains("sidecar-required"),
        "lists the known ids: {}",
        exited.stderr
    );
}

#[test]
fn refuses_to_start_with_an_unknown_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = valid_pair(dir.path());
    let exited = start_up_failure(&cert, &key, Some("mode: block\n"));
    assert!(exited.stderr.contains("meshgate.yaml"), "{}", exited.stderr);
    assert!(exited.stderr.contains("block"), "{}", exited.stderr);
    assert!(exited.stderr.contains("enforce"), "{}", exited.stderr);
}

// ---------------------------------------------------------------- shutdown

#[tokio::test]
async fn sigterm_closes_idle_connections_and_finishes_reviews_in_flight() {
    let mut server = Server::start(Options::default());
    let config = tls_config(&[&server.ca_pem], TLS13, &[b"http/1.1"]);

    // An idle keep-alive connection, as the API server leaves them.
    let mut idle = Http1::connect(server.addr, config.clone()).await;
    assert_eq!(idle.get("/healthz").await.0, StatusCode::OK);

    // A review whose body is half sent. `100 Continue` shows that the
    // server has read the head and is waiting for the body.
    let review = fixture("pod-create-plain.json");
    let mut slow = RawConn::connect(server.addr, config).await;
    slow.write(&post_head(
        "/validate?timeout=5s",
        Some(review.len()),
        &["Expect: 100-continue"],
    ))
    .await
    .unwrap();
    assert_eq!(slow.read_response().await.status, 100);
    let (first, rest) = review.split_at(review.len() / 2);
    slow.write(first).await.unwrap();

    server.terminate();
    server
        .wait_for_log("shutdown to begin", |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutting down"))
        })
        .await;

    assert!(
        idle.closed_within(Duration::from_secs(2)).await,
        "the idle keep-alive connection was not closed"
    );
    let addr = server.addr;
    eventually(
        "new connections to be refused",
        Duration::from_secs(2),
        || async move { TcpStream::connect(addr).await.is_err().then_some(()) },
    )
    .await;
    assert!(server.is_running(), "exited with a review in flight");

    slow.write(rest).await.unwrap();
    let response = slow.read_response().await;
    assert_eq!(response.status, 200, "{response:?}");
    let answer = response.json();
    assert_valid_answer(&answer, &uid_of(&review));
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(response.header("connection"), Some("close"));

    let status = server.wait_exit(PROMPTLY).await;
    assert!(status.success(), "{status}; stderr: {}", server.stderr());
}

// ------------------------------------------------------------ decision log

#[tokio::test]
async fn logs_one_structured_line_per_decision_without_the_object() {
    let server = Server::start(Options::default());
    let plain = fixture("pod-create-plain.json");
    let injected = fixture("pod-create-injected.json");
    server.review(plain.clone()).await;
    server.review(injected.clone()).await;

    let uid = uid_of(&plain);
    let line = server
        .wait_for_log("the denial's log line", |e| {
            e["message"] == "admission review" && e["uid"] == uid.as_str()
        })
        .await;
    for (field, expected) in [
        ("level", json!("INFO")),
        ("decision", json!("denied")),
        ("kind", json!("Pod")),
        ("namespace", json!("bookinfo")),
        ("name", json!("plain-nginx")),
        ("operation", json!("CREATE")),
        ("user", json!("admin")),
        ("dry_run", json!(false)),
        ("endpoint", json!("validate")),
    ] {
        assert_eq!(line[field], expected, "{field} in {line}");
    }
    // The review's span: every line logged inside the review carries it.
    let span = &line["span"];
    for (field, expected) in [
        ("name", json!("review")),
        ("uid", json!(uid)),
        ("kind", json!("Pod")),
        ("object", json!("bookinfo/plain-nginx")),
        ("operation", json!("CREATE")),
    ] {
        assert_eq!(span[field], expected, "span {field} in {line}");
    }
    let rules = line["rules"].as_str().unwrap();
    assert!(
        rules.split(',').any(|r| r == "sidecar-required:enforce"),
        "{rules}"
    );
    assert!(
        rules
            .split(',')
            .any(|r| r == "dedicated-service-account:enforce"),
        "{rules}"
    );
    let latency = line["latency_ms"].as_f64().expect("numeric latency_ms");
    assert!((0.0..5000.0).contains(&latency), "{latency}");

    let allowed_uid = uid_of(&injected);
    let allowed = server
        .wait_for_log("the admission's log line", |e| {
            e["message"] == "admission review" && e["uid"] == allowed_uid.as_str()
        })
        .await;
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["rules"], "");

    // One line per decision, and never the object: no images, no
    // last-applied-configuration, no spec fields.
    let log = server.log_lines().join("\n");
    let decisions = server
        .log_entries()
        .into_iter()
        .filter(|e| e["message"] == "admission review")
        .count();
    assert_eq!(decisions, 2);
    for secret in [
        "nginx:1.27",
        "examples-bookinfo-productpage-v1:1.20.3",
        "proxyv2",
        "last-applied-configuration",
        "containerPort",
        "managedFields",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
}

#[tokio::test]
async fn the_mesh_wide_strict_policy_cannot_be_deleted_under_the_default_config() {
    // istio-system is an exempt namespace by default (its workloads run
    // without sidecars), but the mesh-wide policies there are still judged.
    let server = Server::start(Options::default());
    let delete = edit(&fixture("peerauthentication-delete.json"), |v| {
        v["request"]["namespace"] = "istio-system".into();
        let old = &mut v["request"]["oldObject"];
        old["metadata"]["namespace"] = "istio-system".into();
        old["spec"]["mtls"]["mode"] = "STRICT".into();
    });
    let response = server.review(delete).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(
        message(&response).starts_with("meshgate denied peerauthentication istio-system/default: [baseline-protected] deleting it would remove the mesh-wide STRICT mTLS baseline"),
        "{}",
        message(&response)
    );
}
