//! Kubernetes label selector matching (`matchLabels` and `matchExpressions`),
//! with the API server's semantics: all terms must hold; an empty selector
//! matches everything.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, PartialEq, Eq)]
pub struct SelectorError(pub String);

pub fn validate(selector: &LabelSelector) -> Result<(), SelectorError> {
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(SelectorError(format!(
                    "matchExpressions[{i}]: operator {} needs values",
                    expr.operator
                )))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(SelectorError(format!(
                    "matchExpressions[{i}]: operator {} takes no values",
                    expr.operator
                )))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(SelectorError(format!(
                    "matchExpressions[{i}]: unknown operator `{other}` (In, NotIn, Exists, DoesNotExist)"
                )))
            }
        }
        if expr.key.is_empty() {
            return Err(SelectorError(format!("matchExpressions[{i}]: empty key")));
        }
    }
    Ok(())
}

pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_match
        && selector.match_expressions.iter().flatten().all(|expr| {
            let value = labels.get(&expr.key);
            let values = expr.values.as_deref().unwrap_or_default();
            match expr.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // Unknown operators are rejected by `validate`; never match on them.
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(matches(&LabelSelector::default(), &labels(&[])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "edge"]),
                expr("legacy", "DoesNotExist", &[]),
                expr("team", "NotIn", &["red"]),
                expr("owner", "Exists", &[]),
            ]),
        };
        let ok = labels(&[("app", "web"), ("tier", "edge"), ("owner", "a")]);
        assert!(matches(&selector, &ok));
        let mut red = ok.clone();
        red.insert("team".into(), "red".into());
        assert!(!matches(&selector, &red));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), "".into());
        assert!(!matches(&selector, &legacy));
        assert!(!matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
    }

    #[test]
    fn validate_rejects_bad_operators_and_values() {
        let bad = |e| LabelSelector {
            match_expressions: Some(vec![e]),
            ..Default::default()
        };
        assert!(validate(&bad(expr("a", "Has", &[]))).is_err());
        assert!(validate(&bad(expr("a", "In", &[]))).is_err());
        assert!(validate(&bad(expr("a", "Exists", &["x"]))).is_err());
        assert!(validate(&bad(expr("a", "NotIn", &["x"]))).is_ok());
    }
}
