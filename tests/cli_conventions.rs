//! The audit CLI's conventions, through the built binary: `-o`,
//! `--fail-on`, `--rule`/`--severity`, `--quiet`, `--color`, the SARIF that
//! code-scanning UIs read, `--output openreports`, `meshgate rules`, and the
//! exit codes in `--help`.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::{run_cli, run_cli_with_input, Exited};

const BOUND: Duration = Duration::from_secs(30);

fn meshgate(args: &[&str]) -> Exited {
    run_cli(args, BOUND)
}

/// Enrolled, STRICT and deny-by-default; `lonely` runs on the `default`
/// service account (medium severity), `nosidecar` has no sidecar to be
/// (high), and the ALLOW-with-an-empty-rule under DENY is only advice.
const INPUT: &str = concat!(
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: shop}\nspec: {}\n---\n",
    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: lonely, namespace: shop}\nspec:\n  selector: {matchLabels: {app: lonely}}\n  template:\n    metadata: {labels: {app: lonely}}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
);

const ADVICE_ONLY: &str = concat!(
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: shop}\nspec: {}\n---\n",
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {action: DENY, rules: [{}]}\n",
);

fn stdin(args: &[&str], input: &str) -> Exited {
    run_cli_with_input(args, &[], input.as_bytes(), BOUND)
}

fn findings(o: &Exited) -> Vec<String> {
    let report: Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", o.stdout, o.stderr));
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn fail_on_decides_the_exit_status() {
    // Audit-level advice only: passes by default, fails with --fail-on audit.
    let default = stdin(&["audit", "-o", "json", "-"], ADVICE_ONLY);
    assert_eq!(findings(&default), ["deny-all-overrides-allow"]);
    assert_eq!(default.status.code(), Some(0), "{}", default.stderr);
    let audit = stdin(&["audit", "--fail-on", "audit", "-"], ADVICE_ONLY);
    assert_eq!(audit.status.code(), Some(1));
    // Enforce-level findings fail unless --fail-on none.
    assert_eq!(stdin(&["audit", "-"], INPUT).status.code(), Some(1));
    let none = stdin(&["audit", "--fail-on", "none", "-"], INPUT);
    assert_eq!(none.status.code(), Some(0));
    assert!(
        none.stdout.contains("DENY [dedicated-service-account]"),
        "{}",
        none.stdout
    );
    // An input with nothing to judge still fails, whatever --fail-on says.
    let empty = stdin(
        &["audit", "--fail-on", "none", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn rule_and_severity_filters_select_what_is_reported_and_failed_on() {
    let all = findings(&stdin(&["audit", "-o", "json", "-"], INPUT));
    assert!(
        all.contains(&"dedicated-service-account".to_owned()),
        "{all:?}"
    );
    // dedicated-service-account is medium: --severity high drops it, and
    // with it the only enforce-level finding.
    let high = stdin(&["audit", "-o", "json", "--severity", "high", "-"], INPUT);
    assert!(findings(&high).is_empty(), "{}", high.stdout);
    assert_eq!(high.status.code(), Some(0));
    let one = stdin(
        &["audit", "-o", "json", "--rule", "no-host-network", "-"],
        INPUT,
    );
    assert!(findings(&one).is_empty());
    assert_eq!(one.status.code(), Some(0));
    let unknown = stdin(&["audit", "--rule", "no-such-rule", "-"], INPUT);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        unknown.stderr.contains("sidecar-required"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn quiet_and_colour() {
    let quiet = stdin(&["audit", "-q", "-"], INPUT);
    assert!(quiet.stdout.contains("[dedicated-service-account]"));
    assert!(
        !quiet.stdout.contains("objects checked"),
        "{}",
        quiet.stdout
    );
    assert!(
        !quiet.stdout.contains("Namespace posture"),
        "{}",
        quiet.stdout
    );
    // Not a terminal: no colour unless asked.
    let plain = stdin(&["audit", "-"], INPUT);
    assert!(!plain.stdout.contains('\x1b'), "{}", plain.stdout);
    assert!(plain.stdout.contains("objects checked"));
    let always = stdin(&["audit", "--color", "always", "-"], INPUT);
    assert!(
        always.stdout.contains("\x1b[1;31mDENY\x1b[0m"),
        "{}",
        always.stdout
    );
    let never = stdin(&["audit", "--color", "never", "-"], INPUT);
    assert!(!never.stdout.contains('\x1b'));
}

#[test]
fn sarif_has_version_security_severity_docs_and_relative_paths() {
    let dir = tempfile::Builder::new()
        .prefix("sarif-")
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, INPUT).unwrap();
    let o = meshgate(&["audit", "-o", "sarif", file.to_str().unwrap()]);
    let sarif: Value = serde_json::from_str(&o.stdout).unwrap();
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["version"], env!("CARGO_PKG_VERSION"));
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let dsa = rules
        .iter()
        .find(|r| r["id"] == "dedicated-service-account")
        .unwrap();
    assert_eq!(dsa["properties"]["security-severity"], "5.5");
    assert_eq!(
        dsa["helpUri"],
        "https://meshgate.github.io/meshgate/rules/dedicated-service-account.html"
    );
    let sidecar = rules
        .iter()
        .find(|r| r["id"] == "sidecar-required")
        .unwrap();
    assert_eq!(sidecar["properties"]["security-severity"], "8.0");
    // The absolute path under the working directory comes out relative.
    let location = &run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
    let name = dir.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(location["uri"], format!("{name}/app.yaml"));
    assert_eq!(location["uriBaseId"], "%SRCROOT%");
}

#[test]
fn openreports_output() {
    let o = stdin(&["audit", "-o", "openreports", "-"], INPUT);
    assert!(
        o.stdout.contains("apiVersion: openreports.io/v1alpha1"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("kind: Report"), "{}", o.stdout);
    assert!(o.stdout.contains("policy: dedicated-service-account"));
    let wg = stdin(&["audit", "--output", "policyreport", "-"], INPUT);
    assert!(wg.stdout.contains("apiVersion: wgpolicyk8s.io/v1alpha2"));
}

#[test]
fn rules_lists_the_catalogue_and_help_documents_exit_codes() {
    let table = meshgate(&["rules"]);
    assert!(table.status.success());
    assert!(table.stdout.contains("sidecar-required"));
    assert!(table
        .stdout
        .contains("https://meshgate.github.io/meshgate/rules/no-host-network.html"));
    let json: Value = serde_json::from_str(&meshgate(&["rules", "-o", "json"]).stdout).unwrap();
    let ids: Vec<&str> = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 15, "{ids:?}");
    let help = meshgate(&["audit", "--help"]);
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    assert!(help.stdout.contains("--fail-on"));
}
