//! An oracle for "arrays where objects belong", independent of meshgate's
//! decoding: the places of each judged kind that meshgate reads as an object
//! (a struct or a map), written from the kinds' schemas (Istio's CRDs, the
//! Kubernetes API) and the fields the README's rules read. A sequence at
//! one of them is a shape the API server's schema forbids; meshgate must
//! refuse it, never read it as a struct of its fields in order.

use meshgate::subject::Kind;
use serde_json::Value;

/// The object places every judged kind has.
const META: &[&str] = &["", "metadata", "metadata/labels", "metadata/annotations"];

/// The object places of a pod spec.
const POD_SPEC: &[&str] = &[
    "",
    "securityContext",
    "containers/[]",
    "containers/[]/securityContext",
    "initContainers/[]",
    "initContainers/[]/securityContext",
    "ephemeralContainers/[]",
    "ephemeralContainers/[]/securityContext",
    "volumes/[]",
];

const TRAFFIC_POLICY: &[&str] = &[
    "",
    "tls",
    "portLevelSettings/[]",
    "portLevelSettings/[]/port",
    "portLevelSettings/[]/tls",
];

/// Where a pod template sits in each workload kind.
fn pod_template(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::Pod => return None,
        Kind::CronJob => "spec/jobTemplate/spec/template",
        Kind::Deployment
        | Kind::StatefulSet
        | Kind::DaemonSet
        | Kind::ReplicaSet
        | Kind::Job
        | Kind::ReplicationController => "spec/template",
        _ => return None,
    })
}

/// The places of `kind` that meshgate reads as objects.
fn object_places(kind: Kind) -> Vec<String> {
    let mut places: Vec<String> = META.iter().map(|p| (*p).to_owned()).collect();
    let under = |prefix: &str, list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|p| match (prefix, *p) {
                (prefix, "") => prefix.to_owned(),
                ("", p) => p.to_owned(),
                (prefix, p) => format!("{prefix}/{p}"),
            })
            .collect()
    };
    let specific: Vec<String> = match kind {
        Kind::Namespace => vec!["spec".into()],
        Kind::PeerAuthentication => under(
            "spec",
            &[
                "",
                "selector",
                "selector/matchLabels",
                "mtls",
                "portLevelMtls",
                "portLevelMtls/*",
            ],
        ),
        Kind::AuthorizationPolicy => under(
            "spec",
            &[
                "",
                "selector",
                "selector/matchLabels",
                "rules/[]",
                "rules/[]/from/[]",
                "rules/[]/from/[]/source",
            ],
        ),
        Kind::DestinationRule => {
            let mut p = under("spec", &["", "subsets/[]"]);
            p.extend(under("spec/trafficPolicy", TRAFFIC_POLICY));
            p.extend(under("spec/subsets/[]/trafficPolicy", TRAFFIC_POLICY));
            p
        }
        Kind::Sidecar => under(
            "spec",
            &[
                "",
                "workloadSelector",
                "workloadSelector/matchLabels",
                "outboundTrafficPolicy",
            ],
        ),
        Kind::Certificate => under("spec", &["", "issuerRef"]),
        Kind::ServiceEntry => vec![],
        Kind::Pod => under("spec", POD_SPEC),
        workload => {
            let template = pod_template(workload).unwrap_or("spec/template");
            let mut p = vec!["spec".to_owned()];
            if workload == Kind::CronJob {
                p.extend(under(
                    "spec/jobTemplate",
                    &["", "metadata", "metadata/annotations", "spec"],
                ));
            }
            p.extend(under(
                template,
                &["", "metadata", "metadata/labels", "metadata/annotations"],
            ));
            p.extend(under(&format!("{template}/spec"), POD_SPEC));
            p
        }
    };
    places.extend(specific);
    places
}

/// The first place of `object` (JSON text of a `kind`) holding a sequence
/// where meshgate reads an object, as a path; `None` when there is none or
/// the text is not JSON serde_json's `Value` reads.
pub fn sequence_where_object_belongs(kind: Kind, object: &str) -> Option<String> {
    let value: Value = serde_json::from_str(object).ok()?;
    object_places(kind).iter().find_map(|place| {
        let segments: Vec<&str> = place.split('/').filter(|s| !s.is_empty()).collect();
        first_sequence(&value, &segments, String::new())
    })
}

/// Follows `segments` (`[]` any element, `*` any map value) through
/// `value`; the path of the first sequence at the end.
fn first_sequence(value: &Value, segments: &[&str], path: String) -> Option<String> {
    let Some((segment, rest)) = segments.split_first() else {
        return value
            .is_array()
            .then(|| format!("/{}", path.trim_start_matches('/')));
    };
    match (*segment, value) {
        ("[]", Value::Array(items)) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_sequence(item, rest, format!("{path}/{i}"))),
        ("*", Value::Object(map)) => map
            .iter()
            .find_map(|(k, v)| first_sequence(v, rest, format!("{path}/{k}"))),
        (key, Value::Object(map)) => map
            .get(key)
            .and_then(|v| first_sequence(v, rest, format!("{path}/{key}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_sequences_only_where_objects_belong() {
        let dr = |spec: Value| json!({"metadata": {"name": "r"}, "spec": spec}).to_string();
        let found = |kind, text: &str| sequence_where_object_belongs(kind, text);
        assert_eq!(
            found(
                Kind::DestinationRule,
                &dr(json!({"trafficPolicy": [{"tls": {}}]}))
            ),
            Some("/spec/trafficPolicy".into())
        );
        assert_eq!(
            found(
                Kind::DestinationRule,
                &dr(
                    json!({"subsets": [{"name": "a"}, {"trafficPolicy": {"portLevelSettings": [{"tls": []}]}}]})
                )
            ),
            Some("/spec/subsets/1/trafficPolicy/portLevelSettings/0/tls".into())
        );
        // Lists that are lists, and fields meshgate does not read.
        let fine =
            dr(json!({"subsets": [], "exportTo": ["."], "trafficPolicy": {"loadBalancer": []}}));
        assert_eq!(found(Kind::DestinationRule, &fine), None);
        let pa = json!({"spec": {"portLevelMtls": {"80": [null]}}}).to_string();
        assert_eq!(
            found(Kind::PeerAuthentication, &pa),
            Some("/spec/portLevelMtls/80".into())
        );
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [[]]}}}}}});
        assert_eq!(
            found(Kind::CronJob, &cron.to_string()),
            Some("/spec/jobTemplate/spec/template/spec/containers/0".into())
        );
        assert_eq!(found(Kind::Pod, "[1]"), Some("/".into()));
    }
}
