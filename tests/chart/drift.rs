//! The chart's copies of the crate's tables, checked against them without
//! rendering: the schema's rule ids (two lists) and modes against
//! `meshgate::vocab`, and `files/resources.yaml` (RBAC, webhook rules)
//! against `meshgate::kinds::TABLE`. A rule or a kind added to the crate
//! fails here until the chart lists it.

use super::*;
use meshgate::kinds::{KindRow, TABLE};
use meshgate::vocab::{Mode, RuleId};
use strum::VariantArray;

fn chart_yaml(name: &str) -> Value {
    let path = chart_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rule_ids() -> Vec<&'static str> {
    RuleId::ALL.iter().map(|r| r.as_str()).collect()
}

#[test]
fn the_schema_lists_every_rule_id_in_the_table_s_order() {
    let schema = chart_yaml("values.schema.json");
    let enum_ids = strings(&schema["definitions"]["ruleId"]["enum"]);
    assert_eq!(enum_ids, rule_ids(), "definitions.ruleId.enum");
    let keyed: BTreeSet<&str> = schema["properties"]["rules"]["properties"]
        .as_object()
        .expect("properties.rules.properties")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = rule_ids().into_iter().collect();
    assert_eq!(keyed, expected, "properties.rules.properties");
}

#[test]
fn the_schema_lists_every_mode() {
    let schema = chart_yaml("values.schema.json");
    let modes = strings(&schema["definitions"]["mode"]["anyOf"][0]["enum"]);
    let mut expected: Vec<&str> = Mode::VARIANTS.iter().map(|m| m.as_str()).collect();
    expected.reverse();
    assert_eq!(modes, expected, "definitions.mode: strongest first");
}

/// (API group, resource) pairs of a `resources.yaml` list.
fn listed(resources: &Value, list: &str) -> BTreeSet<(String, String)> {
    let mut pairs = BTreeSet::new();
    for entry in resources[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
    {
        for group in strings(&entry["apiGroups"]) {
            for resource in strings(&entry["resources"]) {
                pairs.insert((group.to_owned(), resource.to_owned()));
            }
        }
    }
    pairs
}

/// (API group, plural) of the table's rows that `pick` selects.
pub(crate) fn table_resources(pick: impl Fn(&KindRow) -> bool) -> BTreeSet<(String, String)> {
    TABLE
        .iter()
        .filter(|row| pick(row))
        .map(|row| (row.group.to_owned(), row.plural.to_owned()))
        .collect()
}

/// What the posture index watches.
pub(crate) fn posture_resources() -> BTreeSet<(String, String)> {
    table_resources(|row| row.posture)
}

/// What the background audit reads besides: the judged kinds the index
/// does not store.
pub(crate) fn background_only_resources() -> BTreeSet<(String, String)> {
    table_resources(|row| !row.judged_on.is_empty() && !row.posture)
}

#[test]
fn resources_yaml_lists_exactly_the_table_s_kinds() {
    let resources = chart_yaml("files/resources.yaml");
    let hint = "edit charts/meshgate/files/resources.yaml";
    assert_eq!(
        listed(&resources, "watched"),
        posture_resources(),
        "watched: {hint}"
    );
    assert_eq!(
        listed(&resources, "background"),
        background_only_resources(),
        "background: {hint}"
    );
    // Exemption objects go to webhooks of their own (`exemptions`).
    let judged = table_resources(|row| !row.judged_on.is_empty() && !row.kind.is_exemption());
    let validated: BTreeSet<_> = listed(&resources, "validating")
        .into_iter()
        .filter(|(_, resource)| !resource.contains('/'))
        .collect();
    assert_eq!(validated, judged, "validating: {hint}");
    let exemptions = table_resources(|row| row.kind.is_exemption());
    assert_eq!(
        listed(&resources, "exemptions"),
        exemptions,
        "exemptions: {hint}"
    );
    let mutated = table_resources(|row| !row.mutated_on.is_empty());
    assert_eq!(listed(&resources, "mutating"), mutated, "mutating: {hint}");
}
