//! Command-line interface. Server settings are flags with `MESHGATE_*`
//! environment fallbacks; policy lives in the YAML config file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::duration::parse_go_duration;
use crate::vocab::RuleId;

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "Zero-trust admission webhook for Istio meshes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// One value, parsed once at start: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook server.
    Serve(ServeArgs),
    /// Run the rules on manifest files or a live cluster (CI); exit 1 on
    /// findings at the --fail-on level.
    #[command(after_help = AUDIT_EXIT_CODES)]
    Audit(AuditArgs),
    /// List the rule catalogue: id, severity, category, where it runs, docs.
    Rules(RulesArgs),
    /// Delete meshgate's webhook configurations and, with `--policy-reports`,
    /// the reports meshgate wrote (the chart's uninstall hook).
    RemoveWebhooks(RemoveWebhooksArgs),
    /// Print the native policies (ValidatingAdmissionPolicies and bindings)
    /// compiled from the config, for applying them yourself (GitOps).
    Policies(PoliciesArgs),
}

#[derive(Debug, clap::Args)]
pub struct PoliciesArgs {
    /// YAML policy config, the same file the server uses.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "yaml")]
    pub output: PoliciesOutput,
    /// meshgate's own namespace, exempt as in `serve`.
    #[arg(long, env = "MESHGATE_NAMESPACE", default_value = "meshgate")]
    pub own_namespace: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoliciesOutput {
    /// Multi-document YAML, for `kubectl apply -f -`.
    Yaml,
    /// A JSON `List`.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct RemoveWebhooksArgs {
    /// Name of the Validating- and MutatingWebhookConfiguration.
    #[arg(long)]
    pub name: String,
    /// Also delete every PolicyReport, ClusterPolicyReport, Report and
    /// ClusterReport labelled `app.kubernetes.io/managed-by=meshgate`, and no
    /// other tool's.
    #[arg(long)]
    pub policy_reports: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "MESHGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP metrics listener (GET /metrics).
    #[arg(long, env = "MESHGATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// PEM certificate chain; re-read when it changes on disk.
    #[arg(long, env = "MESHGATE_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key; re-read when it changes on disk.
    #[arg(long, env = "MESHGATE_TLS_KEY")]
    pub tls_key: PathBuf,
    /// YAML policy config (modes, rules, exemptions). Defaults apply without it.
    #[arg(long, env = "MESHGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Build the cluster state from these manifests (file or directory,
    /// repeatable) instead of watching an API server.
    #[arg(long = "state-from", value_name = "PATH")]
    pub state_from: Vec<PathBuf>,
    #[arg(long, env = "MESHGATE_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// meshgate's own namespace, always exempt so it can never block itself.
    #[arg(long, env = "MESHGATE_NAMESPACE", default_value = "meshgate")]
    pub own_namespace: String,
    /// Write PolicyReports from the background audit (one replica writes,
    /// elected on a Lease in the own namespace).
    #[arg(long, env = "MESHGATE_POLICY_REPORTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub policy_reports: bool,
    /// The report API: wgpolicy (wgpolicyk8s.io/v1alpha2) or open-reports
    /// (openreports.io/v1alpha1).
    #[arg(
        long,
        env = "MESHGATE_POLICY_REPORT_API",
        value_enum,
        default_value = "wgpolicy"
    )]
    pub policy_report_api: crate::report::Flavor,
    /// Keep the native admission policies (the stateless rules as CEL the
    /// API server evaluates itself) applied, from the elected replica.
    #[arg(long, env = "MESHGATE_NATIVE_POLICIES", default_value_t = false, action = clap::ArgAction::Set)]
    pub native_policies: bool,
    /// Larger request bodies get HTTP 413.
    #[arg(long, env = "MESHGATE_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// How often the certificate files are checked for changes (e.g. 5s, 500ms).
    #[arg(long, env = "MESHGATE_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,
    /// How long a posture-based denial waits for the API server's current
    /// policies before the cached answer stands.
    #[arg(long, env = "MESHGATE_CONFIRM_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub confirm_timeout: Duration,
    /// How long shutdown waits for in-flight reviews.
    #[arg(long, env = "MESHGATE_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// After SIGTERM: how long /readyz reports unready while reviews are
    /// still served, so the endpoint is removed before the listener closes.
    #[arg(long, env = "MESHGATE_DRAIN_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// Longest TLS handshake.
    #[arg(long, env = "MESHGATE_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Longest wait for a request head: the first one after the handshake
    /// (HTTP/2 preface included) and every later HTTP/1 one.
    #[arg(long, env = "MESHGATE_REQUEST_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_head_timeout: Duration,
    /// Longest request, from its head to the answer (body included); longer
    /// ones get 408.
    #[arg(long, env = "MESHGATE_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "MESHGATE_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Open connections at most; past it the connection longest in its
    /// current phase (silent, idle or in one request) is shed. 0 derives it from the open-files limit (raised to the hard
    /// limit at start): limit - 128, at most 4096.
    #[arg(long, env = "MESHGATE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
}

/// `meshgate audit --help` ends with these.
const AUDIT_EXIT_CODES: &str = "\
Exit codes:
  0  no finding at the --fail-on level (or --fail-on none)
  1  at least one finding at the --fail-on level: an enforce-level finding
     by default, any finding with --fail-on audit
  2  the audit could not run: unreadable input, an invalid config, a
     malformed object, or an input with no object of a kind meshgate judges";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Sarif,
    /// wgpolicyk8s.io PolicyReports as multi-document YAML, for `kubectl apply`.
    Policyreport,
    /// openreports.io Reports as multi-document YAML.
    Openreports,
}

/// Which findings fail the run (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Findings of rules in enforce mode (what the webhook would deny).
    Enforce,
    /// Any finding, audit-mode ones included (what the webhook would warn about).
    Audit,
    /// None: report only.
    None,
}

/// Colour in the text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Only when stdout is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

/// A minimum severity, for `--severity`.
pub use crate::vocab::Severity as SeverityArg;

#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// text (a table) or json.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: RulesOutput,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RulesOutput {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// YAML policy config, the same file the server uses.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Which findings fail the run with exit status 1.
    #[arg(long, value_enum, default_value = "enforce")]
    pub fail_on: FailOn,
    /// Report (and fail on) only these rules; repeatable.
    #[arg(long = "rule", value_name = "RULE", value_parser = parse_rule)]
    pub rules: Vec<RuleId>,
    /// Report (and fail on) only findings of rules at this severity or above.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub severity: Option<SeverityArg>,
    /// Text output: the findings only, without the namespace posture and
    /// the summary line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Colour in the text output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// On files: the namespace of objects that do not name one (default:
    /// `default`). With `--cluster`: audit only this namespace (default: all).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Read the objects from a live cluster (read-only). With files: judge
    /// the files' objects against the cluster's state, each file object
    /// replacing the live object of the same kind, namespace and name (the
    /// change as it would be applied).
    #[arg(long)]
    pub cluster: bool,
    /// The kubeconfig for `--cluster` (default: KUBECONFIG, ~/.kube/config,
    /// or in-cluster).
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context for `--cluster`.
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// The instant exemptions are judged at (RFC 3339, e.g.
    /// `2027-01-31T00:00:00Z`; default: now): an exemption applies strictly
    /// before its `expires`. For reproducible CI runs.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<k8s_openapi::jiff::Timestamp>,
    /// meshgate's own namespace, exempt as in `serve`, so auditing the
    /// chart's own output reports nothing on meshgate itself.
    #[arg(long, env = "MESHGATE_NAMESPACE", default_value = "meshgate")]
    pub own_namespace: String,
    /// Manifest files or directories; `-` reads stdin.
    #[arg(required_unless_present = "cluster", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// `--now`: an RFC 3339 instant.
fn parse_now(text: &str) -> Result<k8s_openapi::jiff::Timestamp, String> {
    text.parse()
        .map_err(|e| format!("not an RFC 3339 time like 2027-01-31T00:00:00Z: {e}"))
}

/// A rule id of the catalogue (`meshgate rules`).
fn parse_rule(text: &str) -> Result<RuleId, String> {
    text.parse().map_err(|_| {
        let known: Vec<&str> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown rule; the rules are {}", known.join(", "))
    })
}

/// A flag's Go duration (`500ms`, `5s`, `2m`, `1m30s`), read by the same
/// parser as the config file.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_go_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
