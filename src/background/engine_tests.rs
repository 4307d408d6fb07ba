use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::RwLock;

use serde_json::{json, Value};

use super::*;
use crate::config::Config;
use crate::manifest;
use crate::posture::{files, PostureIndex};
use crate::rules::RuleId;

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
"#;
const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop, uid: pa-1}
spec: {mtls: {mode: STRICT}}
"#;
const DENY_ALL: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: shop}
spec: {}
"#;

fn posture(docs: &[&str]) -> RwLock<PostureIndex> {
    let manifests = manifest::parse_text("test", &docs.join("\n---\n")).unwrap();
    RwLock::new(files::index(&manifests, "default").unwrap())
}

fn value(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn applied(kind: Kind, yaml: &str) -> Change {
    Change::Applied {
        kind,
        object: value(yaml),
    }
}

fn deployment(name: &str, host_network: bool) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"serviceAccountName": name, "hostNetwork": host_network,
                     "containers": [{"name": "app", "image": "shop:1"}]}
        }}
    })
}

fn owned(mut object: Value, kind: &str, owner: &str) -> Value {
    let api_version = if kind == "ReplicaSet" || kind == "Deployment" {
        "apps/v1"
    } else {
        "batch/v1"
    };
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": api_version, "kind": kind, "name": owner, "uid": "x", "controller": true
    }]);
    object
}

fn replica_set(name: &str, owner: &str, host_network: bool) -> Value {
    let mut rs = deployment(name, host_network);
    rs["kind"] = json!("ReplicaSet");
    owned(rs, "Deployment", owner)
}

fn pod(name: &str, owner: Option<&str>, host_network: bool) -> Value {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": "web"},
                     "managedFields": [{"manager": "x"}]},
        "spec": {"serviceAccountName": "web", "hostNetwork": host_network,
                 "volumes": [{"name": "v", "emptyDir": {}}],
                 "containers": [{"name": "app", "image": "shop:1"}]},
        "status": {"phase": "Pending"}
    });
    match owner {
        Some(owner) => owned(pod, "ReplicaSet", owner),
        None => pod,
    }
}

fn rules_of(engine: &Engine, k: &str) -> Option<BTreeSet<RuleId>> {
    engine.snapshot(true).verdicts.get(k).map(|v| {
        v.judgement
            .findings
            .iter()
            .map(|j| j.finding.rule)
            .collect()
    })
}

fn engine() -> Engine {
    Engine::new(Arc::new(Config::default()))
}

#[test]
fn deleting_a_strict_peer_authentication_rejudges_the_namespace() {
    let mut engine = engine();
    engine.apply(applied(Kind::Namespace, NAMESPACE));
    engine.apply(applied(Kind::PeerAuthentication, STRICT));
    engine.apply(Change::Applied {
        kind: Kind::Deployment,
        object: deployment("web", false),
    });
    let strict = posture(&[NAMESPACE, STRICT, DENY_ALL]);
    engine.judge(&strict);
    let web = key(Kind::Deployment, "shop", "web");
    assert!(!rules_of(&engine, &web)
        .unwrap()
        .contains(&RuleId::StrictMtlsRequired));
    let generation = engine.snapshot(true).generation;

    // The posture index loses the policy; the engine hears of it only as a
    // PeerAuthentication deletion, and re-judges the Deployment too.
    let weak = posture(&[NAMESPACE, DENY_ALL]);
    engine.apply(Change::Deleted {
        kind: Kind::PeerAuthentication,
        namespace: "shop".into(),
        name: "default".into(),
    });
    engine.judge(&weak);
    assert!(rules_of(&engine, &web)
        .unwrap()
        .contains(&RuleId::StrictMtlsRequired));
    assert!(engine.snapshot(true).generation > generation);
    assert!(!engine.has_work());
}

#[test]
fn a_root_namespace_policy_change_rejudges_the_whole_mesh() {
    let mut engine = engine();
    engine.apply(Change::Applied {
        kind: Kind::Deployment,
        object: deployment("web", false),
    });
    let index = posture(&[NAMESPACE]);
    engine.judge(&index);
    engine.apply(applied(
        Kind::PeerAuthentication,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n",
    ));
    // The Deployment is judged again against the mesh-wide STRICT policy.
    let root_strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    assert!(rules_of(&engine, "Deployment/shop/web")
        .unwrap()
        .contains(&RuleId::StrictMtlsRequired));
    let strict = posture(&[NAMESPACE, root_strict]);
    engine.judge(&strict);
    assert!(!rules_of(&engine, "Deployment/shop/web")
        .unwrap()
        .contains(&RuleId::StrictMtlsRequired));
}

#[test]
fn owned_objects_are_reported_through_their_controller_once() {
    let mut engine = engine();
    engine.apply(applied(Kind::Namespace, NAMESPACE));
    for (kind, object) in [
        (Kind::Deployment, deployment("web", true)),
        (Kind::ReplicaSet, replica_set("web-5d", "web", true)),
        (Kind::Pod, pod("web-5d-a", Some("web-5d"), true)),
        (Kind::Pod, pod("lone", None, true)),
    ] {
        engine.apply(Change::Applied { kind, object });
    }
    engine.judge(&posture(&[NAMESPACE, STRICT, DENY_ALL]));

    let deployment_rules = rules_of(&engine, &key(Kind::Deployment, "shop", "web")).unwrap();
    assert!(deployment_rules.contains(&RuleId::NoHostNetwork));
    // The ReplicaSet carries nothing its Deployment does not: not reported.
    assert_eq!(
        rules_of(&engine, &key(Kind::ReplicaSet, "shop", "web-5d")),
        None
    );
    // The owned pod is reported only with what its owner lacks.
    if let Some(pod_rules) = rules_of(&engine, &key(Kind::Pod, "shop", "web-5d-a")) {
        assert!(
            pod_rules.is_disjoint(&deployment_rules) || !pod_rules.contains(&RuleId::NoHostNetwork)
        );
        assert!(!pod_rules.is_empty());
    }
    // A pod nobody owns is reported in full.
    assert!(rules_of(&engine, &key(Kind::Pod, "shop", "lone"))
        .unwrap()
        .contains(&RuleId::NoHostNetwork));

    // Once the ReplicaSet is gone its pod is reported in full.
    engine.apply(Change::Deleted {
        kind: Kind::ReplicaSet,
        namespace: "shop".into(),
        name: "web-5d".into(),
    });
    engine.judge(&posture(&[NAMESPACE, STRICT, DENY_ALL]));
    assert!(rules_of(&engine, &key(Kind::Pod, "shop", "web-5d-a"))
        .unwrap()
        .contains(&RuleId::NoHostNetwork));
}

#[test]
fn a_pod_that_drifted_from_its_template_is_reported_with_the_drift() {
    let mut engine = engine();
    engine.apply(applied(Kind::Namespace, NAMESPACE));
    engine.apply(Change::Applied {
        kind: Kind::ReplicaSet,
        object: replica_set("web-5d", "gone", false),
    });
    engine.apply(Change::Applied {
        kind: Kind::Pod,
        object: pod("web-5d-a", Some("web-5d"), true),
    });
    engine.judge(&posture(&[NAMESPACE, STRICT, DENY_ALL]));
    let pod_rules = rules_of(&engine, &key(Kind::Pod, "shop", "web-5d-a")).unwrap();
    assert!(pod_rules.contains(&RuleId::NoHostNetwork));
    let rs_rules = rules_of(&engine, &key(Kind::ReplicaSet, "shop", "web-5d")).unwrap_or_default();
    assert!(pod_rules.is_disjoint(&rs_rules));
    // Marked, so its report has the drift only (no passes).
    let verdicts = engine.snapshot(true).verdicts;
    assert!(verdicts[&key(Kind::Pod, "shop", "web-5d-a")].through_owner);
    assert!(!verdicts[&key(Kind::ReplicaSet, "shop", "web-5d")].through_owner);
}

#[test]
fn a_relist_drops_objects_deleted_while_the_watch_was_down() {
    let mut engine = engine();
    for name in ["a", "b"] {
        engine.apply(Change::Applied {
            kind: Kind::Deployment,
            object: deployment(name, true),
        });
    }
    engine.judge(&posture(&[NAMESPACE]));
    assert_eq!(engine.snapshot(true).verdicts.len(), 2);
    engine.apply(Change::Listed {
        kind: Kind::Deployment,
        present: BTreeSet::from([key(Kind::Deployment, "shop", "a")]),
    });
    assert_eq!(engine.len(), 1);
    assert!(engine
        .snapshot(true)
        .verdicts
        .contains_key(&key(Kind::Deployment, "shop", "a")));
}

#[test]
fn certificates_expiry_is_the_earliest_not_after() {
    let mut engine = engine();
    for (name, not_after) in [("a", "2030-01-01T00:00:00Z"), ("b", "2029-01-01T00:00:00Z")] {
        engine.apply(Change::Applied {
            kind: Kind::Certificate,
            object: json!({
                "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"secretName": name, "issuerRef": {"name": "ca"}},
                "status": {"notAfter": not_after}
            }),
        });
    }
    assert_eq!(
        engine.snapshot(true).earliest_certificate_expiry,
        Some(1_861_920_000)
    );
}

#[test]
fn undecodable_objects_are_skipped() {
    let mut engine = engine();
    engine.apply(Change::Applied {
        kind: Kind::Deployment,
        object: json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "x", "namespace": "shop"}, "spec": 5}),
    });
    assert!(engine.is_empty());
}

#[test]
fn replicas_share_one_spec_text_and_judge_as_before() {
    let posture = posture(&[NAMESPACE, STRICT, DENY_ALL]);
    let mut engine = engine();
    for name in ["web-1", "web-2", "web-3"] {
        engine.apply(Change::Applied {
            kind: Kind::Pod,
            object: pod(name, None, true),
        });
    }
    engine.apply(Change::Applied {
        kind: Kind::Pod,
        object: pod("other", None, false),
    });
    assert_eq!(engine.specs.len(), 2, "three replicas, one spec text");
    engine.judge(&posture);
    for name in ["web-1", "web-2", "web-3"] {
        let rules = rules_of(&engine, &format!("Pod/shop/{name}")).unwrap();
        assert!(rules.contains(&RuleId::NoHostNetwork), "{name}: {rules:?}");
    }
    let other = rules_of(&engine, "Pod/shop/other").unwrap_or_default();
    assert!(!other.contains(&RuleId::NoHostNetwork));

    // The text is the object with its spec put back.
    let text = engine.objects.get("Pod/shop/web-1").unwrap().text();
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(back["spec"]["hostNetwork"], json!(true));
    assert_eq!(back["metadata"]["name"], json!("web-1"));

    // A replaced or deleted object lets go of a spec no other object holds.
    engine.apply(Change::Applied {
        kind: Kind::Pod,
        object: pod("other", None, true),
    });
    assert_eq!(engine.specs.len(), 1);
    for name in ["web-1", "web-2", "web-3", "other"] {
        engine.apply(Change::Deleted {
            kind: Kind::Pod,
            namespace: "shop".into(),
            name: name.into(),
        });
    }
    assert_eq!(engine.specs.len(), 0);
}
