use super::*;
use crate::policy::Judged;
use crate::rules::Finding;
use crate::subject::Kind;

fn verdict(uid: &str, rules: &[RuleId]) -> Arc<Verdict> {
    Arc::new(Verdict {
        object: Arc::new(ObjectRef {
            api_version: "apps/v1".into(),
            kind: Kind::Deployment,
            namespace: "shop".into(),
            name: "web".into(),
            uid: uid.into(),
        }),
        judgement: Arc::new(Judgement {
            findings: rules
                .iter()
                .map(|r| Judged {
                    finding: Finding::new(*r, format!("{r} broken"), "fix it"),
                    mode: Mode::Enforce,
                })
                .collect(),
            exempted: Vec::new(),
            exempt_namespace: false,
        }),
        through_owner: false,
    })
}

fn map(entries: &[(&str, Arc<Verdict>)]) -> BTreeMap<String, Arc<Verdict>> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn kinds(changes: &[(Arc<Verdict>, Transition)]) -> Vec<&Transition> {
    changes.iter().map(|(_, t)| t).collect()
}

#[test]
fn only_transitions_are_told() {
    let (host, sidecar) = (RuleId::NoHostNetwork, RuleId::SidecarRequired);
    let failing = map(&[("d", verdict("u1", &[host]))]);
    // New and failing: Warning. New and passing: nothing.
    let changes = transitions(&BTreeMap::new(), &failing);
    assert_eq!(kinds(&changes), [&Transition::Failing]);
    assert!(transitions(&BTreeMap::new(), &map(&[("d", verdict("u1", &[]))])).is_empty());
    // Judged again, same rules: nothing (not on every pass).
    let again = map(&[("d", verdict("u1", &[host]))]);
    assert!(transitions(&failing, &again).is_empty());
    // Fewer rules but still failing: nothing; one more rule: Warning.
    let two = map(&[("d", verdict("u1", &[host, sidecar]))]);
    assert!(transitions(&two, &failing).is_empty());
    assert_eq!(kinds(&transitions(&failing, &two)), [&Transition::Failing]);
    // Fixed: Normal, naming what it was.
    let fixed = map(&[("d", verdict("u1", &[]))]);
    assert_eq!(
        kinds(&transitions(&two, &fixed)),
        [&Transition::Passing {
            was: BTreeSet::from([host, sidecar])
        }]
    );
    // Gone (deleted, or now reported through its owner): nothing.
    assert!(transitions(&failing, &BTreeMap::new()).is_empty());
    // Recreated under the same name: a new object, failing anew.
    let recreated = map(&[("d", verdict("u2", &[host]))]);
    assert_eq!(
        kinds(&transitions(&failing, &recreated)),
        [&Transition::Failing]
    );
}

#[test]
fn notes_name_the_rules_and_stay_within_the_api_limit() {
    let v = verdict("u1", &[RuleId::NoHostNetwork]);
    let note = background_note(&v.judgement, &Transition::Failing);
    assert_eq!(
        note,
        "meshgate: no-host-network (enforce): no-host-network broken"
    );
    let was = BTreeSet::from([RuleId::NoHostNetwork, RuleId::SidecarRequired]);
    let note = background_note(&v.judgement, &Transition::Passing { was });
    // In the rule table's order.
    assert!(
        note.ends_with("(was: sidecar-required, no-host-network)"),
        "{note}"
    );

    let long = admission_note(&["é".repeat(2000)]);
    assert!(long.len() <= NOTE_LIMIT, "{}", long.len());
    assert!(long.ends_with("..."));
}

#[test]
fn an_admitted_create_is_referenced_by_the_uid_the_api_server_assigned() {
    // As the API server sends it to a validating webhook: a generated name
    // and the uid are already set.
    let body = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "req-1", "operation": "CREATE", "name": "",
            "namespace": "shop",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web-x7k2p", "generateName": "web-",
                                    "namespace": "shop", "uid": "0b7e-41"}},
        }
    });
    let reference = admitted_reference(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(reference.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(reference.kind.as_deref(), Some("Deployment"));
    assert_eq!(reference.namespace.as_deref(), Some("shop"));
    assert_eq!(reference.name.as_deref(), Some("web-x7k2p"));
    assert_eq!(reference.uid.as_deref(), Some("0b7e-41"));

    // A core kind; no uid in the object: named without one.
    let body = serde_json::json!({"request": {
        "name": "shop", "kind": {"group": "", "version": "v1", "kind": "Namespace"},
        "object": {"metadata": {"name": "shop"}},
    }});
    let reference = admitted_reference(&serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(reference.api_version.as_deref(), Some("v1"));
    assert_eq!(reference.namespace, None);
    assert_eq!(reference.uid, None);

    // Nothing to name: no Event.
    assert!(admitted_reference(
        b"{\"request\": {\"kind\": {\"group\": \"\", \"version\": \"v1\", \"kind\": \"Pod\"}}}"
    )
    .is_none());
    assert!(admitted_reference(b"not json").is_none());
}

#[test]
fn a_recorded_review_names_its_object() {
    for fixture in ["deployment-create.json", "pod-create-hostnetwork.json"] {
        let path = format!(
            "{}/tests/fixtures/admission/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(path).unwrap();
        let reference = admitted_reference(&body);
        assert!(
            reference.as_ref().is_some_and(|r| r.name.is_some()),
            "{fixture}: {reference:?}"
        );
    }
}
