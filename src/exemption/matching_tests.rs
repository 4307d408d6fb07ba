use super::*;
use crate::config::Config;
use crate::policy::{judge, Exempted};
use crate::rules::testing::*;
use crate::rules::Context;
use crate::rules::Operation;
use k8s_openapi::jiff::SignedDuration;

fn mex(ns: &str, name: &str, spec: serde_json::Value) -> MeshExemption {
    crate::strict::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

fn cmex(name: &str, spec: serde_json::Value) -> ClusterMeshExemption {
    crate::strict::from_value(serde_json::json!({"metadata": {"name": name}, "spec": spec}))
        .unwrap()
}

const REASON: &str = "node agent needs the host network (SEC-1234)";
const EXPIRES: &str = "2026-12-07T10:00:20Z";

fn spec(rules: &[&str], names: &[&str]) -> serde_json::Value {
    serde_json::json!({"rules": rules, "match": {"names": names}, "reason": REASON, "expires": EXPIRES})
}

fn world() -> World {
    World::with_namespaces(&[
        namespace("shop", &[("istio-injection", "enabled"), ("team", "infra")]),
        namespace("other", &[("istio-injection", "enabled")]),
    ])
    .with_baseline()
}

fn lifted(world: &World, w: crate::subject::Workload, at: &str) -> Vec<Exempted> {
    let ctx = Context {
        now: at.parse().unwrap(),
        ..world.ctx()
    };
    judge(&Object::Workload(w), &ctx).exempted
}

#[test]
fn a_mesh_exemption_lifts_its_rules_in_its_namespace_until_it_expires() {
    let mut world = world();
    world.posture.exemptions.apply_namespaced(&mex(
        "shop",
        "agent",
        spec(&["no-host-network"], &["agent*"]),
    ));
    let exempted = lifted(&world, deployment("agent-1").host_network(), TEST_NOW);
    assert_eq!(exempted.len(), 1);
    assert_eq!(exempted[0].source, "MeshExemption/shop/agent");
    assert_eq!(exempted[0].reason, REASON);
    assert_eq!(exempted[0].expires, Some(EXPIRES.parse().unwrap()));
    // Another name, another namespace: not covered.
    assert!(lifted(&world, deployment("web").host_network(), TEST_NOW).is_empty());
    let elsewhere = deployment("agent-1").in_ns("other").host_network();
    assert!(lifted(&world, elsewhere, TEST_NOW).is_empty());
}

#[test]
fn expiry_boundary_is_exclusive() {
    let mut world = world();
    world.posture.exemptions.apply_namespaced(&mex(
        "shop",
        "agent",
        spec(&["no-host-network"], &["agent"]),
    ));
    let expires: k8s_openapi::jiff::Timestamp = EXPIRES.parse().unwrap();
    let just_before = (expires - SignedDuration::from_nanos(1)).to_string();
    assert_eq!(
        lifted(&world, deployment("agent").host_network(), &just_before).len(),
        1
    );
    assert!(lifted(&world, deployment("agent").host_network(), EXPIRES).is_empty());
    assert_eq!(
        world
            .posture
            .exemptions
            .next_expiry(TEST_NOW.parse().unwrap()),
        Some(expires)
    );
    assert_eq!(world.posture.exemptions.next_expiry(expires), None);
}

#[test]
fn a_cluster_exemption_reaches_namespaces_its_selector_matches() {
    let mut world = world();
    let mut s = spec(&["no-host-network"], &["agent"]);
    s["namespaceSelector"] = serde_json::json!({"matchLabels": {"team": "infra"}});
    world.posture.exemptions.apply_cluster(&cmex("agents", s));
    let exempted = lifted(&world, deployment("agent").host_network(), TEST_NOW);
    assert_eq!(exempted[0].source, "ClusterMeshExemption/agents");
    let other = deployment("agent").in_ns("other").host_network();
    assert!(lifted(&world, other, TEST_NOW).is_empty());
    // Without a selector: every namespace.
    world
        .posture
        .exemptions
        .apply_cluster(&cmex("agents", spec(&["no-host-network"], &["agent"])));
    let other = deployment("agent").in_ns("other").host_network();
    assert_eq!(lifted(&world, other, TEST_NOW).len(), 1);
    // Deleted: gone.
    crate::posture::Store::<ClusterMeshExemption>::delete(
        &mut world.posture.exemptions,
        "",
        "agents",
    );
    assert!(world.posture.exemptions.is_empty());
}

#[test]
fn the_pod_template_selector_matches_and_config_exemptions_come_first() {
    let mut world = world();
    let s = serde_json::json!({"rules": ["no-host-network"], "match": {"selector": {"matchLabels": {"app": "agent"}}},
                               "reason": REASON, "expires": EXPIRES});
    world
        .posture
        .exemptions
        .apply_namespaced(&mex("shop", "by-label", s));
    let labelled = deployment("x").host_network().with_label("app", "agent");
    assert_eq!(
        lifted(&world, labelled.clone(), TEST_NOW)[0].source,
        "MeshExemption/shop/by-label"
    );
    world.config = Config::from_yaml(
        "exemptions:\n- {rules: [no-host-network], namespace: shop, reason: cfg, expires: '2027-01-01T00:00:00Z'}\n",
    )
    .unwrap();
    let e = &lifted(&world, labelled, TEST_NOW)[0];
    assert_eq!(
        (e.source.as_str(), e.reason.as_str()),
        ("config:exemptions[0]", "cfg")
    );
}

#[test]
fn a_namespaced_exemption_cannot_lift_a_baseline_guard_but_a_cluster_one_can() {
    let mut world = world();
    let guard = spec(&["baseline-protected"], &["default"]);
    world
        .posture
        .exemptions
        .apply_namespaced(&mex("istio-system", "weaken", guard.clone()));
    assert!(world.posture.exemptions.is_empty(), "refused when indexed");
    assert!(
        ExemptionObject::from_namespaced(&mex("istio-system", "weaken", guard.clone()))
            .unwrap_err()
            .contains("spec.rules[0]")
    );
    world
        .posture
        .exemptions
        .apply_cluster(&cmex("baseline-change", guard));
    let pa: crate::istio::PeerAuthentication = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "default", "namespace": "istio-system"},
        "spec": {"mtls": {"mode": "STRICT"}}
    }))
    .unwrap();
    let ctx = Context {
        operation: Operation::Delete,
        ..world.ctx()
    };
    let j = judge(&Object::PeerAuthentication(pa), &ctx);
    assert_eq!(j.exempted.len(), 1, "{j:?}");
    assert!(j.findings.is_empty());
}

#[test]
fn invalid_objects_are_left_out_naming_the_field() {
    let bad =
        |s: serde_json::Value| ExemptionObject::from_namespaced(&mex("shop", "x", s)).unwrap_err();
    let mut s = spec(&["no-host-network"], &["a"]);
    s["reason"] = "because".into();
    assert!(bad(s).contains("spec.reason"));
    let mut s = spec(&["no-host-network"], &["a"]);
    s.as_object_mut().unwrap().remove("expires");
    assert!(bad(s).contains("spec.expires"));
    assert!(bad(spec(&["nope"], &["a"])).contains("unknown rule"));
    assert!(bad(spec(&[], &["a"])).contains("spec.rules"));
    assert!(bad(spec(&["no-host-network"], &[])).contains("spec.match"));
    assert!(bad(spec(&["no-host-network"], &["*"])).contains("spec.match.names"));
}

/// `meshgate audit` on files: exemption objects among the manifests are
/// applied like the webhook applies them, at `--now`.
#[test]
fn audit_on_files_honours_exemption_objects_at_its_now() {
    let yaml = concat!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio-injection: enabled}}\n---\n",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: agent, namespace: shop}\n",
        "spec: {selector: {}, template: {spec: {hostNetwork: true, serviceAccountName: agent, containers: [{name: a, image: a}]}}}\n---\n",
        "apiVersion: meshgate.io/v1alpha1\nkind: MeshExemption\nmetadata: {name: agent, namespace: shop}\n",
        "spec: {rules: [no-host-network], match: {names: [agent]}, reason: 'node agent reads host interfaces', expires: '2026-12-07T10:00:20Z'}\n",
    );
    let manifests = crate::manifest::parse_text("t.yaml", yaml).unwrap();
    let posture = crate::posture::files::index(&manifests, "default").unwrap();
    let config = Config::from_yaml("mode: off\nrules: {no-host-network: enforce}\n").unwrap();
    let at = |now: &str| {
        crate::audit::judge_manifests_at(
            &manifests,
            &posture,
            &config,
            "default",
            now.parse().unwrap(),
        )
        .unwrap()
    };
    let before = at("2026-12-07T10:00:19Z");
    assert_eq!((before.exempted, before.findings.len()), (1, 0));
    let after = at(EXPIRES);
    assert_eq!((after.exempted, after.findings.len()), (0, 1));
}
