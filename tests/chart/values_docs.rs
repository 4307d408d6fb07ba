//! The chart's values documentation kept in step with the schema: the values
//! table in `charts/meshgate/README.md` is generated from `values.schema.json`
//! (descriptions) and `values.yaml` (defaults), every value is in all three,
//! and the schema's Kubernetes shapes list exactly the fields of the
//! Kubernetes OpenAPI schemas that `kubernetes-validate` ships.
//!
//! `UPDATE_CHART_README=1 cargo test --test chart values_docs` rewrites the
//! table.

use super::*;

const TABLE_START: &str =
    "<!-- values-table:start (generated from values.schema.json by tests/chart/values_docs.rs) -->";
const TABLE_END: &str = "<!-- values-table:end -->";

/// A default longer than this is left to values.yaml, which explains it.
const DEFAULT_WIDTH: usize = 40;

fn chart_file(name: &str) -> String {
    let path = chart_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&chart_file("values.schema.json")).expect("values.schema.json is JSON")
}

fn default_values() -> Value {
    serde_yaml_ng::from_str(&chart_file("values.yaml")).expect("values.yaml is YAML")
}

/// One row of the values table: a value users set as a whole.
struct Row {
    path: String,
    description: Option<String>,
}

/// Whether the table goes inside this schema node (one row per property)
/// rather than giving it one row: inline objects with known keys, unless
/// marked `x-doc-row` (e.g. per-rule modes, probe timings).
fn has_rows_inside(node: &Value) -> bool {
    node["properties"].is_object() && node["x-doc-row"] != true
}

fn collect_rows(node: &Value, prefix: &str, rows: &mut Vec<Row>) {
    let Some(properties) = node["properties"].as_object() else {
        return;
    };
    for (key, child) in properties {
        // Set by Helm for parent charts, never by users of this chart.
        if prefix.is_empty() && key == "global" {
            continue;
        }
        let path = format!("{prefix}{key}");
        if has_rows_inside(child) {
            collect_rows(child, &format!("{path}."), rows);
        } else {
            let description = child["description"].as_str().map(str::to_owned);
            rows.push(Row { path, description });
        }
    }
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    collect_rows(&schema(), "", &mut rows);
    rows
}

fn lookup<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

fn format_default(value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "unset".into();
    };
    let shown = match value {
        Value::String(s) if s.is_empty() => r#""""#.to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if shown.len() > DEFAULT_WIDTH {
        "see `values.yaml`".into()
    } else {
        format!("`{shown}`")
    }
}

fn generated_table() -> String {
    let values = default_values();
    let mut missing = Vec::new();
    let mut table = String::from("| value | default | meaning |\n|---|---|---|\n");
    for row in rows() {
        let description = row.description.unwrap_or_else(|| {
            missing.push(row.path.clone());
            String::new()
        });
        table.push_str(&format!(
            "| `{}` | {} | {} |\n",
            row.path,
            format_default(lookup(&values, &row.path)),
            description.replace('|', "\\|")
        ));
    }
    assert!(
        missing.is_empty(),
        "values.schema.json: these values have no description: {missing:?}"
    );
    table
}

#[test]
fn the_chart_readme_values_table_is_generated_from_the_schema() {
    let path = chart_dir().join("README.md");
    let readme = chart_file("README.md");
    let (start, end) = match (readme.find(TABLE_START), readme.find(TABLE_END)) {
        (Some(s), Some(e)) if s < e => (s + TABLE_START.len(), e),
        _ => panic!("charts/meshgate/README.md lacks the {TABLE_START} ... {TABLE_END} markers"),
    };
    let fresh = format!("\n{}", generated_table());
    if readme[start..end] == fresh {
        return;
    }
    if std::env::var_os("UPDATE_CHART_README").is_some() {
        let updated = format!("{}{fresh}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "the values table in charts/meshgate/README.md is stale: run \
         `UPDATE_CHART_README=1 cargo test --test chart values_docs` and commit it"
    );
}

/// Paths of values.yaml, down to the rows of the table.
fn value_paths(values: &Value, schema: &Value, prefix: &str, out: &mut Vec<String>) {
    let Some(map) = values.as_object() else {
        return;
    };
    for (key, value) in map {
        let path = format!("{prefix}{key}");
        let node = &schema["properties"][key];
        if has_rows_inside(node) {
            value_paths(value, node, &format!("{path}."), out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_value_is_in_values_yaml_the_schema_and_the_docs() {
    let documented: BTreeSet<String> = rows().into_iter().map(|r| r.path).collect();
    let mut in_values = Vec::new();
    value_paths(&default_values(), &schema(), "", &mut in_values);
    let undocumented: Vec<&String> = in_values
        .iter()
        .filter(|p| !documented.contains(*p))
        .collect();
    assert!(
        undocumented.is_empty(),
        "values.yaml keys missing from values.schema.json (and so from the README table): \
         {undocumented:?}"
    );

    // The other way: every schema value has a default, or values.yaml shows
    // it as a commented-out example.
    let values_text = chart_file("values.yaml");
    let values = default_values();
    let absent: Vec<&String> = documented
        .iter()
        .filter(|path| lookup(&values, path).is_none())
        .filter(|path| {
            let leaf = path.rsplit('.').next().unwrap_or(path);
            !values_text
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("# {leaf}:")))
        })
        .collect();
    assert!(
        absent.is_empty(),
        "schema values neither set nor shown commented out in values.yaml: {absent:?}"
    );

    let readme = chart_file("README.md");
    for path in &documented {
        assert!(
            readme.contains(&format!("| `{path}` |")),
            "chart README lacks a row for {path}"
        );
    }
}

/// The newest Kubernetes schema directory `kubernetes-validate` ships.
fn kubernetes_schema_dir() -> PathBuf {
    let out = run(Command::new("python3").args([
        "-c",
        "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
    ]));
    assert!(
        out.status.success(),
        "cannot locate kubernetes-validate's schemas: {}",
        text(&out.stderr)
    );
    let root = PathBuf::from(text(&out.stdout).trim()).join("kubernetes-json-schema");
    let newest = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let version = name.strip_prefix('v')?.strip_suffix("-local-strict")?;
            let parts: Vec<u32> = version
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((parts, name))
        })
        .max()
        .expect("kubernetes-validate ships strict schemas");
    root.join(newest.1)
}

fn property_names(node: &Value) -> BTreeSet<String> {
    node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no properties in {node}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn kubernetes_shapes_in_the_schema_list_exactly_the_kubernetes_fields() {
    let dir = kubernetes_schema_dir();
    let schema = schema();
    let definitions = &schema["definitions"];
    let probes = &schema["properties"]["probes"]["properties"];
    // (our node, the Kubernetes type's file, subset allowed)
    let shapes: Vec<(&str, &Value, &str, bool)> = vec![
        (
            "SecurityContext",
            &definitions["k8s.SecurityContext"],
            "securitycontext-v1.json",
            false,
        ),
        (
            "PodSecurityContext",
            &definitions["k8s.PodSecurityContext"],
            "podsecuritycontext-v1.json",
            false,
        ),
        (
            "ResourceRequirements",
            &definitions["k8s.ResourceRequirements"],
            "resourcerequirements-v1.json",
            false,
        ),
        (
            "Toleration",
            &definitions["k8s.Toleration"],
            "toleration-v1.json",
            false,
        ),
        (
            "Affinity",
            &definitions["k8s.Affinity"],
            "affinity-v1.json",
            false,
        ),
        (
            "TopologySpreadConstraint",
            &definitions["k8s.TopologySpreadConstraint"],
            "topologyspreadconstraint-v1.json",
            false,
        ),
        (
            "DeploymentStrategy",
            &definitions["k8s.DeploymentStrategy"],
            "deploymentstrategy-apps-v1.json",
            false,
        ),
        (
            "RollingUpdateDeployment",
            &definitions["k8s.DeploymentStrategy"]["properties"]["rollingUpdate"],
            "rollingupdatedeployment-apps-v1.json",
            false,
        ),
        (
            "EnvVar",
            &definitions["k8s.EnvVar"],
            "envvar-v1.json",
            false,
        ),
        (
            "Volume",
            &definitions["k8s.Volume"],
            "volume-v1.json",
            false,
        ),
        (
            "VolumeMount",
            &definitions["k8s.VolumeMount"],
            "volumemount-v1.json",
            false,
        ),
        (
            "NetworkPolicyPeer",
            &definitions["k8s.NetworkPolicyPeer"],
            "networkpolicypeer-networking-v1.json",
            false,
        ),
        (
            "IPBlock",
            &definitions["k8s.NetworkPolicyPeer"]["properties"]["ipBlock"],
            "ipblock-networking-v1.json",
            false,
        ),
        (
            "MatchCondition",
            &definitions["k8s.MatchCondition"],
            "matchcondition-admissionregistration-v1.json",
            false,
        ),
        (
            "HorizontalPodAutoscalerBehavior",
            &definitions["k8s.HorizontalPodAutoscalerBehavior"],
            "horizontalpodautoscalerbehavior-autoscaling-v2.json",
            false,
        ),
        (
            "LabelSelector",
            &definitions["labelSelector"],
            "labelselector-meta-v1.json",
            false,
        ),
        (
            "LabelSelectorRequirement",
            &definitions["labelSelector"]["properties"]["matchExpressions"]["items"],
            "labelselectorrequirement-meta-v1.json",
            false,
        ),
        // The probe values set timings only: the handlers are meshgate's.
        ("liveness probe", &probes["liveness"], "probe-v1.json", true),
        (
            "readiness probe",
            &probes["readiness"],
            "probe-v1.json",
            true,
        ),
    ];
    for (name, ours, file, subset) in shapes {
        assert_eq!(
            ours["additionalProperties"], false,
            "{name} rejects unknown keys"
        );
        let theirs: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (ours, theirs) = (property_names(ours), property_names(&theirs));
        if subset {
            let extra: Vec<&String> = ours.difference(&theirs).collect();
            assert!(extra.is_empty(), "{name}: not Kubernetes fields: {extra:?}");
        } else {
            assert_eq!(ours, theirs, "{name}: the schema's keys differ from {file}");
        }
    }
}
