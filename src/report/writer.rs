//! Writes the desired reports to the API server: creates missing ones,
//! replaces those whose content changed (timestamps aside: no churn), and
//! deletes meshgate's reports (found by the managed-by label) of namespaces
//! that no longer have judged objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::Client;
use tokio::sync::watch;

use super::types::{Flavor, Report, Timestamp};
use super::{build, ObjectVerdict, MANAGED_BY_LABEL, SOURCE};
use crate::background::Results;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("report API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("report does not serialise: {0}")]
    Json(#[from] serde_json::Error),
}

/// What one reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
}

pub struct Writer {
    client: Client,
    flavor: Flavor,
}

impl Writer {
    pub fn new(client: Client, flavor: Flavor) -> Self {
        Writer { client, flavor }
    }

    fn api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let (kind, plural) = self.flavor.kind(namespace.is_none());
        let gvk = GroupVersionKind::gvk(self.flavor.group(), self.flavor.version(), kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Makes the API server hold exactly `desired` among meshgate's reports.
    pub async fn reconcile(&self, desired: &[Report]) -> Result<Reconciled, WriteError> {
        let mut existing = self.existing().await?;
        let mut done = Reconciled::default();
        for report in desired {
            let namespace = report.metadata.namespace.clone();
            let key = (namespace.clone(), report.metadata.name.clone());
            let api = self.api(namespace.as_deref());
            match existing.remove(&key) {
                Some((stored, _)) if stored.same_content(report) => done.unchanged += 1,
                Some((_, resource_version)) => {
                    let mut object: DynamicObject =
                        serde_json::from_value(serde_json::to_value(report)?)?;
                    object.metadata.resource_version = resource_version;
                    api.replace(&report.metadata.name, &PostParams::default(), &object)
                        .await?;
                    done.updated += 1;
                }
                None => {
                    let object: DynamicObject =
                        serde_json::from_value(serde_json::to_value(report)?)?;
                    api.create(&PostParams::default(), &object).await?;
                    done.created += 1;
                }
            }
        }
        for (namespace, name) in existing.into_keys() {
            let api = self.api(namespace.as_deref());
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => done.deleted += 1,
                // Gone already (its namespace was deleted): nothing to do.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(done)
    }

    /// meshgate's stored reports by (namespace, name), with their resource
    /// versions.
    async fn existing(
        &self,
    ) -> Result<BTreeMap<(Option<String>, String), (Report, Option<String>)>, WriteError> {
        let selector = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={SOURCE}"));
        let mut found = BTreeMap::new();
        for api in [self.api(None), self.namespaced_all()] {
            for object in api.list(&selector).await? {
                let resource_version = object.metadata.resource_version.clone();
                let name = object.metadata.name.clone().unwrap_or_default();
                let namespace = object.metadata.namespace.clone();
                // A report that does not parse as ours is replaced.
                let report = serde_json::from_value::<Report>(serde_json::to_value(&object)?)
                    .unwrap_or_else(|_| Report::empty(self.flavor, namespace.as_deref()));
                found.insert((namespace, name), (report, resource_version));
            }
        }
        Ok(found)
    }

    fn namespaced_all(&self) -> Api<DynamicObject> {
        let (kind, plural) = self.flavor.kind(false);
        let gvk = GroupVersionKind::gvk(self.flavor.group(), self.flavor.version(), kind);
        Api::all_with(
            self.client.clone(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    }
}

/// The current time as a report timestamp.
pub fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

/// Changes are gathered this long before a write, so a burst of re-judges
/// makes one write.
const SETTLE: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(10);

/// Writes the background audit's results while `leader` is true: once on
/// becoming leader, then on every change. Returns when the results stop.
pub async fn run(
    writer: Writer,
    config: Arc<Config>,
    mut results: Results,
    mut leader: watch::Receiver<bool>,
) {
    let mut last_written: Option<Vec<Report>> = None;
    loop {
        let snapshot = results.snapshot();
        if *leader.borrow_and_update() && snapshot.complete {
            let verdicts: Vec<ObjectVerdict> = snapshot
                .verdicts
                .values()
                .map(|v| ObjectVerdict::from_background(v, &config))
                .collect();
            let desired = build::reports(&verdicts, writer.flavor, now(), build::Bounds::default());
            let unchanged = last_written
                .as_ref()
                .is_some_and(|last| same_reports(last, &desired));
            if !unchanged {
                match writer.reconcile(&desired).await {
                    Ok(done) => {
                        tracing::info!(?done, reports = desired.len(), "policy reports written");
                        last_written = Some(desired);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot write policy reports; retrying");
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
        } else if !*leader.borrow() {
            // Another replica may write meanwhile: check the server again
            // when this one leads again.
            last_written = None;
        }
        tokio::select! {
            changed = results.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
            }
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

fn same_reports(a: &[Report], b: &[Report]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.metadata.namespace == b.metadata.namespace && a.same_content(b))
}
