//! The exemption objects' `status`, written by one replica: the holder of
//! the Lease `meshgate-exemption-status` (the report writer's election
//! pattern, `crate::leader`). Every [`TICK`] it computes each object's
//! status (state, objects covered in the background audit's latest results,
//! last time it lifted a finding, observed generation) and patches the
//! status subresource with server-side apply only when that changed; the
//! `lastApplied` of an exemption in continuous use advances at most every
//! [`APPLIED_STEP`], so the write rate stays bounded whatever the traffic.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::json;

use crate::background::{Results, Snapshot};
use crate::exemption::{ExemptionObject, Source};
use crate::kinds::Kind;
use crate::policy::Exempted;
use crate::posture::{PostureIndex, SharedPosture};

pub const STATUS_LEASE: &str = "meshgate-exemption-status";
const TICK: Duration = Duration::from_secs(5);
/// `lastApplied` is rewritten at most this often for one exemption.
const APPLIED_STEP: i64 = 600;
const FIELD_MANAGER: &str = "meshgate-exemption-status";

/// One exemption object's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub active: bool,
    pub covered: usize,
    /// Unix seconds; `None`: never applied since this replica started.
    pub last_applied: Option<i64>,
    pub observed_generation: Option<i64>,
}

impl Status {
    fn to_json(&self) -> serde_json::Value {
        let mut status = json!({
            "state": if self.active { "Active" } else { "Expired" },
            "covered": self.covered,
        });
        if let Some(at) = self
            .last_applied
            .and_then(|s| Timestamp::from_second(s).ok())
        {
            status["lastApplied"] = at.to_string().into();
        }
        if let Some(generation) = self.observed_generation {
            status["observedGeneration"] = generation.into();
        }
        status
    }
}

/// Records that the webhook lifted findings with these exemptions at `now`
/// (an atomic on the indexed object: no write lock on the review path).
pub fn record_applied(index: &PostureIndex, exempted: &[Exempted], now: Timestamp) {
    for e in exempted {
        if let Some(object) = index.exemptions.by_source(&e.source) {
            object
                .last_applied
                .fetch_max(now.as_second(), Ordering::Relaxed);
        }
    }
}

/// How many objects each exemption covers in the background audit's results.
pub fn covered(snapshot: &Snapshot) -> HashMap<String, usize> {
    let mut covered = HashMap::new();
    for verdict in snapshot.verdicts.values() {
        let mut sources: Vec<&str> = verdict
            .judgement
            .exempted
            .iter()
            .map(|e| e.source.as_str())
            .collect();
        sources.sort_unstable();
        sources.dedup();
        for source in sources {
            *covered.entry(source.to_owned()).or_default() += 1;
        }
    }
    covered
}

/// The status each exemption object should have at `now`; `previous` is
/// what was last written, so `lastApplied` moves in [`APPLIED_STEP`]s.
pub fn desired(
    objects: &[&ExemptionObject],
    covered: &HashMap<String, usize>,
    previous: &BTreeMap<Source, Status>,
    now: Timestamp,
) -> BTreeMap<Source, Status> {
    let mut out = BTreeMap::new();
    for e in objects {
        let name = e.source.to_string();
        let active = e.is_active(now);
        let count = if active {
            covered.get(&name).copied().unwrap_or(0)
        } else {
            0
        };
        let recorded = e.last_applied.load(Ordering::Relaxed);
        // Covered in the background audit: applied at its latest pass.
        let latest = match (recorded, count) {
            (_, c) if c > 0 => Some(now.as_second()),
            (0, _) => None,
            (at, _) => Some(at),
        };
        let before = previous.get(&e.source).and_then(|s| s.last_applied);
        let last_applied = match (before, latest) {
            (Some(b), Some(l)) if l - b < APPLIED_STEP => Some(b),
            (b, l) => l.or(b),
        };
        let status = Status {
            active,
            covered: count,
            last_applied,
            observed_generation: e.generation,
        };
        out.insert(e.source.clone(), status);
    }
    out
}

/// `serve`'s hook: the exemption objects' status, written by the replica
/// that holds the [`STATUS_LEASE`] Lease.
pub fn spawn(client: Client, posture: SharedPosture, results: Option<Results>, namespace: &str) {
    let lease = crate::leader::Lease {
        namespace: namespace.to_owned(),
        name: STATUS_LEASE.to_owned(),
        identity: crate::leader::identity(),
        duration: Duration::from_secs(15),
        purpose: "exemption status",
    };
    let elector = crate::leader::Elector::spawn(client.clone(), lease, Default::default());
    let leading = elector.leading();
    tokio::spawn(async move {
        // The elector lives as long as the writer.
        let _elector = elector;
        run(client, posture, results, leading).await;
    });
}

/// Writes the statuses while this replica holds the Lease.
pub async fn run(
    client: Client,
    posture: SharedPosture,
    results: Option<Results>,
    leading: tokio::sync::watch::Receiver<bool>,
) {
    let mut written: BTreeMap<Source, Status> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        if !*leading.borrow() {
            written.clear();
            continue;
        }
        let now = Timestamp::now();
        let covered = results
            .as_ref()
            .map(|r| covered(&r.snapshot()))
            .unwrap_or_default();
        let wanted = {
            let index = posture.read();
            let objects: Vec<&ExemptionObject> = index.exemptions.all().collect();
            desired(&objects, &covered, &written, now)
        };
        written.retain(|source, _| wanted.contains_key(source));
        for (source, status) in wanted {
            if written.get(&source) == Some(&status) {
                continue;
            }
            match patch(&client, &source, &status).await {
                Ok(()) => {
                    written.insert(source, status);
                }
                Err(error) => {
                    tracing::warn!(exemption = %source, %error, "cannot write the exemption's status; retrying");
                }
            }
        }
    }
}

async fn patch(client: &Client, source: &Source, status: &Status) -> Result<(), kube::Error> {
    let (kind, namespace, name) = match source {
        Source::Namespaced { namespace, name } => (Kind::MeshExemption, Some(namespace), name),
        Source::Cluster { name } => (Kind::ClusterMeshExemption, None, name),
        Source::Config(_) => return Ok(()),
    };
    let row = kind.row();
    let resource = kind.api_resource(row.versions[0]);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let body = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "status": status.to_json(),
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(name, &params, &Patch::Apply(&body))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exemption::MeshExemption;

    fn object(expires: &str) -> ExemptionObject {
        let e: MeshExemption = crate::strict::from_value(json!({
            "metadata": {"name": "agent", "namespace": "shop", "generation": 3},
            "spec": {"rules": ["no-host-network"], "match": {"names": ["agent"]},
                     "reason": "node agent reads host interfaces", "expires": expires}
        }))
        .unwrap();
        ExemptionObject::from_namespaced(&e).unwrap()
    }

    #[test]
    fn state_covered_and_a_bounded_last_applied() {
        let e = object("2026-12-07T11:00:00Z");
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let covered = HashMap::from([("MeshExemption/shop/agent".to_owned(), 2)]);
        let first = desired(&[&e], &covered, &BTreeMap::new(), now);
        let status = &first[&e.source];
        assert_eq!((status.active, status.covered), (true, 2));
        assert_eq!(status.last_applied, Some(now.as_second()));
        assert_eq!(status.observed_generation, Some(3));
        // A minute later: unchanged, so nothing is written.
        let later = now + k8s_openapi::jiff::SignedDuration::from_secs(60);
        assert_eq!(desired(&[&e], &covered, &first, later), first);
        // At expiry: Expired, covering nothing.
        let expired = desired(&[&e], &covered, &first, e.expires);
        assert!(!expired[&e.source].active);
        assert_eq!(expired[&e.source].covered, 0);
        assert_eq!(status.to_json()["state"], "Active");
    }

    #[test]
    fn the_webhook_records_when_it_applied() {
        let mut index = PostureIndex::default();
        let e: MeshExemption = crate::strict::from_value(json!({
            "metadata": {"name": "agent", "namespace": "shop"},
            "spec": {"rules": ["no-host-network"], "match": {"names": ["agent"]},
                     "reason": "node agent reads host interfaces", "expires": "2027-01-01T00:00:00Z"}
        }))
        .unwrap();
        index.exemptions.apply_namespaced(&e);
        let exempted = Exempted {
            rule: crate::rules::RuleId::NoHostNetwork,
            reason: String::new(),
            source: "MeshExemption/shop/agent".into(),
            expires: None,
        };
        let now: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        record_applied(&index, &[exempted], now);
        let object = index.exemptions.all().next().unwrap();
        let status = &desired(&[object], &HashMap::new(), &BTreeMap::new(), now)[&object.source];
        assert_eq!(status.last_applied, Some(now.as_second()));
        assert_eq!(status.covered, 0);
    }
}
