//! `meshgate audit`: the server's rules, modes and exemptions, run offline on
//! manifests. Cluster state (namespaces) comes from the same input; a workload
//! whose namespace is not in the input is reported as unverifiable.

use std::process::ExitCode;

use crate::cli::{AuditArgs, OutputFormat};
use k8s_openapi::jiff::Timestamp;

use crate::config::Config;
use crate::manifest::{self, Manifest, ManifestError, Origin};
use crate::policy;
use crate::posture::{files, PostureIndex};
use crate::report::Flavor;
use crate::rules::Context;
use crate::subject::{self, Kind};

pub mod cluster;
pub mod output;
pub mod select;
mod types;

pub use types::{Membership, NamespacePosture, Report, Reported};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    /// Re-encoding a parsed document; cannot happen for parsed JSON.
    #[error("cannot keep a document: {0}")]
    Keep(#[from] serde_json::Error),
    #[error("{file}, document {document}: {source}")]
    Decode {
        file: String,
        document: usize,
        source: subject::DecodeError,
    },
}

pub fn run(args: &AuditArgs) -> ExitCode {
    match audit(args) {
        Ok(mut report) => {
            if !args.quiet {
                for note in &report.skipped {
                    eprintln!("meshgate audit: note: {note}");
                }
            }
            select::Selection::of(args).apply(&mut report);
            let text = match args.output {
                OutputFormat::Text => output::text(&report, output::TextStyle::of(args)),
                OutputFormat::Json => output::json(&report),
                OutputFormat::Sarif => output::sarif(&report),
                OutputFormat::Policyreport => {
                    crate::report::yaml::policy_reports(&report.verdicts, Flavor::Wgpolicy)
                }
                OutputFormat::Openreports => {
                    crate::report::yaml::policy_reports(&report.verdicts, Flavor::OpenReports)
                }
            };
            print!("{text}");
            let status = select::exit_status(&report, args.fail_on);
            if report.objects_checked == 0 {
                eprintln!(
                    "meshgate audit: checked 0 objects: the input holds no object of a kind meshgate judges"
                );
            }
            ExitCode::from(status)
        }
        Err(error) => {
            eprintln!("meshgate audit: {error}");
            ExitCode::from(2)
        }
    }
}

pub fn audit(args: &AuditArgs) -> Result<Report, AuditError> {
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    }
    .with_own_namespace(&args.own_namespace);
    let namespace = args.namespace.as_deref().unwrap_or("default");
    let now = args.now.unwrap_or_else(Timestamp::now);
    match (args.cluster, args.paths.is_empty()) {
        (true, true) => cluster::audit(args, &config, now),
        (true, false) => {
            let live = cluster::read(args, &config)?;
            let change = manifest::load_paths(&args.paths)?;
            judge_change(live, change, &config, (namespace, now))
        }
        (false, _) => {
            let (judged, posture, skipped) = read_paths(&args.paths, namespace)?;
            let mut report = judge(&judged, &posture, &config, (namespace, now))?;
            report.skipped = skipped;
            Ok(report)
        }
    }
}

/// `--cluster` with files: the files' objects judged against the live
/// state, each replacing the live object it names (as `kubectl apply`
/// would), so a change that removes a namespace's STRICT policy is judged
/// without it.
fn judge_change(
    live: Vec<Manifest>,
    change: Vec<Manifest>,
    config: &Config,
    (namespace, now): (&str, Timestamp),
) -> Result<Report, AuditError> {
    let identity = |m: &Manifest| {
        (
            m.kind.clone(),
            m.namespace().unwrap_or(namespace).to_owned(),
            m.name().to_owned(),
        )
    };
    let replaced: std::collections::HashSet<_> = change.iter().map(identity).collect();
    let mut state: Vec<Manifest> = live
        .into_iter()
        .filter(|m| !replaced.contains(&identity(m)))
        .collect();
    state.extend(change.iter().cloned());
    let posture = files::index(&state, namespace)?;
    judge_manifests_at(&change, &posture, config, namespace, now)
}

/// One pass over the files: cluster state goes into the posture index, and
/// each object of a kind meshgate judges is kept trimmed to what the rules
/// read (the background audit's projection: no managedFields, last-applied
/// copies, status, resources or probes), so memory follows the judged
/// objects' trimmed size, not the input's. Other documents are dropped as
/// they are read. Also returns what the reading skipped.
fn read_paths(
    paths: &[std::path::PathBuf],
    namespace: &str,
) -> Result<(Vec<Kept>, PostureIndex, Vec<manifest::Note>), AuditError> {
    let mut posture = PostureIndex::default();
    let mut judged = Vec::new();
    let skipped = manifest::map_paths(paths, crate::parallel::cores(), &read, &mut |read| {
        if let Some(m) = read.posture {
            files::add(&mut posture, m, namespace)?;
        }
        judged.extend(read.judged);
        Ok(())
    })?;
    Ok((judged, posture, skipped))
}

/// What the audit keeps of one manifest: cluster state for the index, the
/// trimmed object to judge, or both.
struct Read {
    posture: Option<Manifest>,
    judged: Option<Kept>,
}

/// Runs on the reading threads: the trimming and serialising of judged
/// objects is spread with the parsing.
fn read(m: Manifest) -> Result<Read, ManifestError> {
    let Some(kind) = Kind::from_api_version(&m.api_version, &m.kind) else {
        return Ok(Read {
            posture: Some(m),
            judged: None,
        });
    };
    let posture = kind.row().posture.then(|| m.clone());
    let origin = m.origin.clone();
    let kept = Kept::new(m, kind).map_err(|e| ManifestError::Parse {
        file: origin.file,
        document: origin.document,
        problem: e.to_string(),
    })?;
    Ok(Read {
        posture,
        judged: Some(kept),
    })
}

/// Judges every manifest of a kind meshgate judges; others are skipped.
/// Exemptions are judged at the current time.
pub fn judge_manifests(
    manifests: &[Manifest],
    posture: &PostureIndex,
    config: &Config,
    default_namespace: &str,
) -> Result<Report, AuditError> {
    judge_manifests_at(
        manifests,
        posture,
        config,
        default_namespace,
        Timestamp::now(),
    )
}

/// As [`judge_manifests`], with exemptions judged at `now` (`--now`).
pub fn judge_manifests_at(
    manifests: &[Manifest],
    posture: &PostureIndex,
    config: &Config,
    default_namespace: &str,
    now: Timestamp,
) -> Result<Report, AuditError> {
    let kept = manifests
        .iter()
        .filter_map(|m| {
            let kind = Kind::from_api_version(&m.api_version, &m.kind)?;
            Some(Kept::new(m.clone(), kind))
        })
        .collect::<Result<Vec<_>, _>>()?;
    judge(&kept, posture, config, (default_namespace, now))
}

/// A judged object as the audit keeps it until the posture is complete:
/// where it came from, its identity, and its trimmed JSON text (a few KiB,
/// where the parsed `serde_json::Value` tree of the same object took tens).
pub struct Kept {
    origin: Origin,
    kind: Kind,
    api_version: String,
    kind_name: String,
    namespace: Option<String>,
    name: String,
    uid: String,
    text: Box<serde_json::value::RawValue>,
}

impl Kept {
    /// Trims `m` to what the rules read (the background audit's projection:
    /// no managedFields, last-applied copies, status, resources, probes).
    pub fn new(mut m: Manifest, kind: Kind) -> Result<Kept, serde_json::Error> {
        crate::background::engine::project(kind, &mut m.value);
        let at = |pointer| m.value.pointer(pointer).and_then(serde_json::Value::as_str);
        Ok(Kept {
            namespace: m.namespace().map(str::to_owned),
            name: m.name().to_owned(),
            uid: at("/metadata/uid").unwrap_or_default().to_owned(),
            text: serde_json::value::to_raw_value(&m.value)?,
            origin: m.origin,
            kind,
            api_version: m.api_version,
            kind_name: m.kind,
        })
    }
}

fn judge(
    kept: &[Kept],
    posture: &PostureIndex,
    config: &Config,
    (default_namespace, now): (&str, Timestamp),
) -> Result<Report, AuditError> {
    let ctx = Context {
        posture,
        config,
        operation: crate::rules::Operation::Create,
        now,
    };
    // Objects are judged independently, on every core, in input order.
    let judged = crate::parallel::map_in_order(kept, crate::parallel::cores(), &|k| {
        judge_one(k, &ctx, default_namespace)
    });
    let mut report = Report::default();
    let mut seen_namespaces = std::collections::BTreeSet::new();
    for judged in judged {
        let judged = judged?;
        report.objects_checked += 1;
        report.exempted += judged.exempted;
        report.verdicts.push(judged.verdict);
        report.findings.extend(judged.findings);
        seen_namespaces.insert(judged.namespace);
    }
    seen_namespaces.extend(posture.namespaces().map(|(name, _)| name.to_owned()));
    report.namespaces = seen_namespaces
        .into_iter()
        .filter(|ns| !config.is_exempt_namespace(ns))
        .map(|ns| namespace_posture(posture, config, ns))
        .collect();
    Ok(report)
}

/// One object's share of the report.
struct JudgedObject {
    namespace: String,
    verdict: crate::report::ObjectVerdict,
    findings: Vec<Reported>,
    exempted: usize,
}

fn judge_one(
    k: &Kept,
    ctx: &Context<'_>,
    default_namespace: &str,
) -> Result<JudgedObject, AuditError> {
    let namespace = k.namespace.as_deref().unwrap_or(default_namespace);
    let object =
        subject::decode(k.kind, k.text.as_ref(), namespace, &k.name).map_err(|source| {
            AuditError::Decode {
                file: k.origin.file.clone(),
                document: k.origin.document,
                source,
            }
        })?;
    let judgement = policy::judge(&object, ctx);
    let verdict =
        crate::report::yaml::verdict(&k.api_version, &k.uid, &object, &judgement, ctx.config);
    let findings = judgement
        .findings
        .into_iter()
        .map(|judged| Reported {
            rule: judged.finding.rule,
            mode: judged.mode,
            api_version: k.api_version.clone(),
            kind: k.kind_name.clone(),
            namespace: object.namespace().to_owned(),
            name: object.name().to_owned(),
            message: judged.finding.message,
            fix: judged.finding.fix,
            file: k.origin.file.clone(),
            document: k.origin.document,
            line: k.origin.line,
        })
        .collect();
    Ok(JudgedObject {
        namespace: object.namespace().to_owned(),
        verdict,
        findings,
        exempted: judgement.exempted.len(),
    })
}

fn namespace_posture(posture: &PostureIndex, config: &Config, name: String) -> NamespacePosture {
    let root = &config.mesh_root_namespace;
    NamespacePosture {
        enrolled: Membership::of(posture.namespace(&name)),
        mtls: posture.effective_mtls(&name, None, root).workload,
        deny_by_default: posture.deny_by_default(&name, root).map(|p| p.to_string()),
        name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::manifest::parse_text;
    use crate::rules::RuleId;

    fn report(yaml: &str, config: &str) -> Report {
        let manifests = parse_text("t.yaml", yaml).unwrap();
        let posture = files::index(&manifests, "default").unwrap();
        judge_manifests(
            &manifests,
            &posture,
            &Config::from_yaml(config).unwrap(),
            "default",
        )
        .unwrap()
    }

    const SHOP: &str = concat!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {istio-injection: enabled}\n---\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n---\n",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: istio-system}\nspec: {}\n---\n",
    );

    #[test]
    fn clean_workload_has_no_findings() {
        let r = report(&format!("{SHOP}apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      serviceAccountName: web\n      containers: [{{name: web, image: nginx}}]\n"), "");
        assert_eq!(
            r.objects_checked, 4,
            "namespace, two baseline policies, deployment"
        );
        assert!(r.findings.is_empty(), "{:?}", r.findings);
    }

    #[test]
    fn missing_namespace_is_unverifiable_and_default_namespace_applies() {
        let r = report(&format!("{SHOP}apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  serviceAccountName: p\n  containers: [{{name: c, image: x}}]\n"), "");
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].namespace, "default");
        assert!(r.findings[0].message.contains("cannot be verified"));
        assert_eq!(r.findings[0].mode, Mode::Enforce);
    }

    #[test]
    fn namespace_posture_summary_marks_weak_namespaces() {
        let r = report(
            &format!("{SHOP}apiVersion: v1\nkind: Namespace\nmetadata: {{name: legacy}}\n"),
            "",
        );
        let shop = r.namespaces.iter().find(|n| n.name == "shop").unwrap();
        assert_eq!(shop.enrolled, Membership::Sidecar);
        assert_eq!(shop.mtls.mode, crate::istio::MtlsMode::Strict);
        assert_eq!(
            shop.deny_by_default.as_deref(),
            Some("AuthorizationPolicy istio-system/allow-nothing")
        );
        assert!(!shop.is_weak());
        let legacy = r.namespaces.iter().find(|n| n.name == "legacy").unwrap();
        assert_eq!(legacy.enrolled, Membership::No);
        assert!(legacy.is_weak());
        // Exempt namespaces are not summarised.
        assert!(!r.namespaces.iter().any(|n| n.name == "istio-system"));
    }

    #[test]
    fn membership_names_ambient_and_namespaces_missing_from_the_input() {
        let r = report(
            &format!("{SHOP}apiVersion: v1\nkind: Namespace\nmetadata: {{name: mesh, labels: {{istio.io/dataplane-mode: ambient}}}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: elsewhere}}\nspec: {{containers: [{{name: c, image: x}}]}}\n"),
            "",
        );
        let enrolled = |name: &str| {
            r.namespaces
                .iter()
                .find(|n| n.name == name)
                .unwrap()
                .enrolled
        };
        assert_eq!(enrolled("mesh"), Membership::Ambient);
        assert_eq!(enrolled("elsewhere"), Membership::Unknown);
        assert!(r
            .namespaces
            .iter()
            .find(|n| n.name == "elsewhere")
            .unwrap()
            .is_weak());
    }

    #[test]
    fn modes_and_exemptions_match_the_server() {
        let yaml = format!("{SHOP}apiVersion: v1\nkind: Pod\nmetadata: {{name: agent, namespace: shop}}\nspec:\n  hostNetwork: true\n  containers: [{{name: c, image: x}}]\n");
        let r = report(&yaml, "rules: {dedicated-service-account: audit}\nexemptions:\n- {rules: [no-host-network], namespace: shop, names: [agent], reason: node agent}\n");
        let rules: Vec<_> = r.findings.iter().map(|f| (f.rule, f.mode)).collect();
        assert!(rules.contains(&(RuleId::SidecarRequired, Mode::Enforce)));
        assert!(rules.contains(&(RuleId::DedicatedServiceAccount, Mode::Audit)));
        assert!(!rules.iter().any(|(r, _)| *r == RuleId::NoHostNetwork));
        assert_eq!(r.exempted, 1);
    }
}
