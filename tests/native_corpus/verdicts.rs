//! The differential test's verdicts (tests/envtest_native_diff.rs): what
//! the API server said about a dry-run create, what `policy::judge` says,
//! and the tally of both over the corpus.

use std::collections::BTreeSet;

use http_body_util::BodyExt;
use kube::Client;
use meshgate::config::Config;
use meshgate::kinds::Kind;
use meshgate::posture::PostureIndex;
use meshgate::rules::{Context, Finding, Operation, RuleId};
use serde_json::{json, Value};

use super::{judged_kind, placed};

/// Namespaces of every enrolment kind the injector model distinguishes.
pub fn namespaces() -> Vec<(&'static str, Value)> {
    vec![
        ("n-sidecar", json!({"istio-injection": "enabled"})),
        ("n-rev", json!({"istio.io/rev": "canary"})),
        ("n-ambient", json!({"istio.io/dataplane-mode": "ambient"})),
        ("n-disabled", json!({"istio-injection": "disabled"})),
        ("n-unrecognised", json!({"istio-injection": "yes"})),
        ("n-bare", json!({})),
    ]
}

pub fn native_rules() -> Vec<RuleId> {
    RuleId::ALL
        .iter()
        .copied()
        .filter(|r| r.row().native.is_some())
        .collect()
}

/// A dry-run create's HTTP status, returned object (or Status) and warnings.
pub type Answer = (u16, Value, Vec<String>);

/// A dry-run create.
pub async fn dry_run(client: &Client, kind: Kind, value: &Value, ns: &str) -> Answer {
    let row = kind.row();
    let api_version = value["apiVersion"].as_str().unwrap();
    let prefix = if row.group.is_empty() {
        "/api".to_owned()
    } else {
        "/apis".to_owned()
    };
    let url = format!(
        "{prefix}/{api_version}/namespaces/{ns}/{}?dryRun=All",
        row.plural
    );
    let request = axum::http::Request::post(url)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
        warnings,
    )
}

pub fn named_rules(warnings: &[String]) -> BTreeSet<RuleId> {
    native_rules()
        .into_iter()
        .filter(|r| warnings.iter().any(|w| w.contains(&format!("[{r}]"))))
        .collect()
}

/// Rule ids with their level: advisory, or a hole.
pub type Verdicts = BTreeSet<(RuleId, bool)>;

/// The rules the warnings name, advisory when the `-advisory` policy did.
pub fn named_verdicts(warnings: &[String]) -> Verdicts {
    let mut out = Verdicts::new();
    for w in warnings {
        for r in named_rules(std::slice::from_ref(w)) {
            let advisory = format!("'{}'", meshgate::native::validating::policy_name(r, true));
            out.insert((r, w.contains(&advisory)));
        }
    }
    out
}

/// What `policy::judge` finds in `object` (as created in `ns`).
fn findings(
    kind: Kind,
    object: &Value,
    ns: &str,
    posture: &PostureIndex,
    config: &Config,
) -> Vec<Finding> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let subject = meshgate::subject::decode(kind, object.clone(), ns, name).unwrap();
    let ctx = Context {
        posture,
        config,
        operation: Operation::Create,
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    meshgate::policy::judge(&subject, &ctx)
        .findings
        .into_iter()
        .map(|j| j.finding)
        .collect()
}

/// The rules with a native form among `found`, with their level.
fn verdicts(found: &[Finding]) -> Verdicts {
    found
        .iter()
        .map(|f| (f.rule, f.advisory))
        .filter(|(r, _)| r.row().native.is_some())
        .collect()
}

/// What the corpus run counts.
#[derive(Default)]
pub struct Tally {
    pub judged: usize,
    pub refused: usize,
    pub findings: usize,
    pub covered: BTreeSet<RuleId>,
    pub disagreements: Vec<String>,
}

impl Tally {
    /// One dry-run answer against `policy::judge` on the returned object:
    /// the same rule ids and levels, and the words where the CEL says them.
    pub fn compare(
        &mut self,
        at: String,
        answer: Answer,
        judge: impl FnOnce(&Value) -> Vec<Finding>,
    ) {
        let (status, body, warnings) = answer;
        if status >= 300 {
            // Invalid for the API server itself (schema, immutable fields):
            // no admission policy ever sees it.
            self.refused += 1;
            if std::env::var_os("NATIVE_DIFF_VERBOSE").is_some() {
                eprintln!("refused {at}: {status} {}", body["message"]);
            }
            return;
        }
        // A CEL error is a warning too, naming no rule: never a pass.
        for w in &warnings {
            if named_rules(std::slice::from_ref(w)).is_empty() {
                self.disagreements
                    .push(format!("{at}: warning from no rule: {w}"));
            }
        }
        self.judged += 1;
        let found = judge(&body);
        self.compare_words(&at, &warnings, &worded(&found));
        let native = named_verdicts(&warnings);
        let rust = verdicts(&found);
        self.findings += rust.len();
        self.covered.extend(rust.iter().map(|(r, _)| *r));
        if native != rust {
            self.disagreements.push(format!(
                "{at}: native {native:?}, webhook {rust:?}; {warnings:?}"
            ));
        }
    }
}

/// The webhook's detail (`[rule] message; fix: fix`) of the findings whose
/// CEL form says the same words: sidecar-required's injector decisions.
/// Its two forms the CEL words generically (an injection template it does
/// not name, a container merely named istio-proxy) are left out.
fn worded(found: &[Finding]) -> Vec<String> {
    found
        .iter()
        .filter(|f| {
            f.rule == RuleId::SidecarRequired
                && !f.message.contains("in its traffic path")
                && !f.message.contains("not Istio's sidecar")
        })
        .map(|f| format!("[{}] {}; fix: {}", f.rule, f.message, f.fix))
        .collect()
}

impl Tally {
    /// Each worded finding must appear verbatim in a warning.
    fn compare_words(&mut self, at: &str, warnings: &[String], words: &[String]) {
        for text in words {
            // The Warning header quotes the text's double quotes.
            let said = |w: &String| w.replace("\\\"", "\"").contains(text.as_str());
            if !warnings.iter().any(said) {
                self.disagreements
                    .push(format!("{at}: webhook says {text:?}; native {warnings:?}"));
            }
        }
    }

    /// Every object of `corpus` in every test namespace.
    pub async fn run(
        &mut self,
        client: &Client,
        corpus: &[(String, Value)],
        posture: &PostureIndex,
        config: &Config,
    ) {
        for (origin, value) in corpus {
            let kind = judged_kind(value).unwrap();
            for (ns, _) in namespaces() {
                let answer = dry_run(client, kind, &placed(value, ns), ns).await;
                self.compare(format!("{origin} in {ns}"), answer, |body| {
                    findings(kind, body, ns, posture, config)
                });
            }
        }
    }
}
