//! Posture metrics, computed at scrape time from the posture index and the
//! background audit's latest results, so they are never stale and series of
//! deleted namespaces disappear with them. Unlike the request metrics these
//! carry the namespace they describe, as `k8s_namespace`: a `namespace` label
//! would collide with the target label scrapers add (meshgate's own
//! namespace) and be renamed. The series count is bounded by the number of
//! (non-exempt) namespaces times small fixed sets (mTLS modes, three
//! weaknesses), and by rules × modes for the violation counts.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Config;
use crate::posture::{PostureIndex, SharedPosture};
use crate::subject::Kind;

use super::Results;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    k8s_namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    k8s_namespace: String,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeaknessLabels {
    k8s_namespace: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleModeLabels {
    rule: &'static str,
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Why a namespace is weak: the reasons `meshgate_namespace_weakness` uses.
pub const NOT_ENROLLED: &str = "not_enrolled";
pub const MTLS_NOT_STRICT: &str = "mtls_not_strict";
pub const NO_DENY_BY_DEFAULT: &str = "no_deny_by_default";

/// The posture collector. The background results are attached once the
/// engine runs; until then (and when the audit is off) only the namespace
/// gauges and the build info are exported.
#[derive(Debug)]
pub struct PostureMetrics {
    config: Arc<Config>,
    posture: SharedPosture,
    results: OnceLock<Results>,
}

type Gauges<L> = Family<L, Gauge>;

impl PostureMetrics {
    pub fn new(config: Arc<Config>, posture: SharedPosture) -> Arc<Self> {
        Arc::new(PostureMetrics {
            config,
            posture,
            results: OnceLock::new(),
        })
    }

    /// Registers the posture gauges and `meshgate_build_info`, computed at
    /// scrape time.
    pub fn register(self: &Arc<Self>, registry: &mut prometheus_client::registry::Registry) {
        registry
            .sub_registry_with_prefix("meshgate")
            .register_collector(Box::new(self.clone()));
    }

    pub fn attach(&self, results: Results) {
        let _ = self.results.set(results);
    }

    /// The attached results, for other readers (a report writer).
    pub fn results(&self) -> Option<Results> {
        self.results.get().cloned()
    }

    fn namespace_gauges(&self, index: &PostureIndex, out: &mut NamespaceGauges) {
        let root = &self.config.mesh_root_namespace;
        for (name, info) in index.namespaces() {
            if self.config.is_exempt_namespace(name) {
                continue;
            }
            let ns = || NamespaceLabels {
                k8s_namespace: name.to_owned(),
            };
            let enrolled = info.is_enrolled();
            let mtls = index.effective_mtls(name, None, root);
            let strict = mtls.is_strict();
            let deny = index.deny_by_default(name, root).is_some();
            out.enrolled.get_or_create(&ns()).set(i64::from(enrolled));
            out.strict.get_or_create(&ns()).set(i64::from(strict));
            out.mode
                .get_or_create(&ModeLabels {
                    k8s_namespace: name.to_owned(),
                    mode: mtls.workload.mode.as_str(),
                })
                .set(1);
            out.deny.get_or_create(&ns()).set(i64::from(deny));
            out.weak
                .get_or_create(&ns())
                .set(i64::from(!(enrolled && strict && deny)));
            for (weak, reason) in [
                (!enrolled, NOT_ENROLLED),
                (!strict, MTLS_NOT_STRICT),
                (!deny, NO_DENY_BY_DEFAULT),
            ] {
                if weak {
                    out.weakness
                        .get_or_create(&WeaknessLabels {
                            k8s_namespace: name.to_owned(),
                            reason,
                        })
                        .set(1);
                }
            }
        }
    }
}

#[derive(Default)]
struct NamespaceGauges {
    enrolled: Gauges<NamespaceLabels>,
    strict: Gauges<NamespaceLabels>,
    mode: Gauges<ModeLabels>,
    deny: Gauges<NamespaceLabels>,
    weak: Gauges<NamespaceLabels>,
    weakness: Gauges<WeaknessLabels>,
}

fn emit(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

impl Collector for PostureMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_build(&mut encoder)?;
        self.encode_namespaces(&mut encoder)?;
        let Some(results) = self.results.get() else {
            return Ok(());
        };
        let snapshot = results.snapshot();
        encode_background(&mut encoder, &snapshot)?;
        encode_certificate_expiry(&mut encoder, &snapshot)
    }
}

fn encode_build(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let build = Gauges::<VersionLabels>::default();
    build
        .get_or_create(&VersionLabels {
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    emit(
        encoder,
        "build_info",
        "Always 1; the version label says which meshgate runs",
        &build,
    )
}

impl PostureMetrics {
    fn encode_namespaces(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut ns = NamespaceGauges::default();
        {
            let index = self.posture.read();
            self.namespace_gauges(&index, &mut ns);
        }
        emit(
            encoder,
            "namespace_enrolled",
            "1 when the namespace is enrolled in the mesh (sidecar injection or ambient)",
            &ns.enrolled,
        )?;
        emit(
            encoder,
            "namespace_mtls_strict",
            "1 when the namespace's effective mTLS mode is STRICT on every port",
            &ns.strict,
        )?;
        emit(
            encoder,
            "namespace_mtls_mode",
            "The namespace's effective mTLS mode (one series per namespace, value 1)",
            &ns.mode,
        )?;
        emit(encoder, "namespace_deny_by_default", "1 when a deny-by-default AuthorizationPolicy covers the namespace (its own or the root namespace's)", &ns.deny)?;
        emit(
            encoder,
            "namespace_weak",
            "1 when the namespace is not enrolled, not STRICT, or not deny-by-default",
            &ns.weak,
        )?;
        emit(
            encoder,
            "namespace_weakness",
            "Why a namespace is weak: not_enrolled, mtls_not_strict, no_deny_by_default (value 1)",
            &ns.weakness,
        )?;
        Ok(())
    }
}

/// The background audit's series, from one snapshot of its verdicts.
fn encode_background(
    encoder: &mut DescriptorEncoder,
    snapshot: &super::Snapshot,
) -> Result<(), std::fmt::Error> {
    let complete = Gauge::<i64>::default();
    complete.set(i64::from(snapshot.complete));
    emit(
        encoder,
        "background_audit_complete",
        "1 once every object has been judged after the caches synced",
        &complete,
    )?;

    let objects = Gauges::<KindLabels>::default();
    let violations = Gauges::<RuleModeLabels>::default();
    for verdict in snapshot.verdicts.values() {
        objects
            .get_or_create(&KindLabels {
                kind: verdict.object.kind.as_str(),
            })
            .inc();
        for judged in &verdict.judgement.findings {
            violations
                .get_or_create(&RuleModeLabels {
                    rule: judged.finding.rule.as_str(),
                    mode: judged.mode.as_str(),
                })
                .inc();
        }
    }
    // Workload kinds at zero, so shares of workloads compute from the start.
    for kind in [Kind::Pod, Kind::Deployment] {
        drop(objects.get_or_create(&KindLabels {
            kind: kind.as_str(),
        }));
    }
    emit(encoder, "background_objects", "Objects the background audit reports, by kind (owned objects count through their controller)", &objects)?;
    emit(
        encoder,
        "background_violations",
        "Objects violating each rule now, by rule and mode, from the background audit",
        &violations,
    )?;
    Ok(())
}

fn encode_certificate_expiry(
    encoder: &mut DescriptorEncoder,
    snapshot: &super::Snapshot,
) -> Result<(), std::fmt::Error> {
    if let Some(not_after) = snapshot.earliest_certificate_expiry {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let seconds = Gauge::<i64>::default();
        seconds.set(not_after - now);
        emit(encoder, "certificate_expiry_seconds", "Seconds until the earliest cert-manager Certificate expiry (status.notAfter) meshgate sees", &seconds)?;
    }
    Ok(())
}
