//! Writes the desired reports to the API server: creates missing ones,
//! replaces those whose content changed (timestamps aside: no churn), and
//! deletes meshgate's reports (found by the managed-by label) of namespaces
//! that no longer have judged objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::Client;
use tokio::sync::watch;

use super::types::{Flavor, Report, Timestamp};
use super::{build, ObjectVerdict, MANAGED_BY_LABEL, SOURCE};
use crate::background::Results;
use crate::config::Config;
use crate::reminder::Reminder;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("report API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("report does not serialise: {0}")]
    Json(#[from] serde_json::Error),
}

impl WriteError {
    /// The report API is not served: its CRDs are not installed. The API
    /// server answers an unknown resource with a plain-text "404 page not
    /// found" (not a Status), which kube reports as "Failed to parse error
    /// data"; a missing object or namespace is a Status with reason NotFound.
    pub fn is_api_missing(&self) -> bool {
        matches!(self, WriteError::Kube(kube::Error::Api(status))
            if status.code == 404 && status.reason != "NotFound")
    }
}

/// Logs a failed reconcile. A missing CRD is said once, with what to do,
/// then every 10 minutes (the reconcile is still retried every 10 s, so the
/// reports appear as soon as the CRD does); other errors on every retry.
fn log_write_error(error: &WriteError, flavor: Flavor, missing: &mut Reminder) {
    if !error.is_api_missing() {
        tracing::warn!(%error, "cannot write policy reports; retrying");
        return;
    }
    if missing.due(Instant::now()) {
        let crds =
            [true, false].map(|cluster| format!("{}.{}", flavor.kind(cluster).1, flavor.group()));
        tracing::warn!(
            crds = %crds.join(", "),
            "PolicyReport CRDs not installed: no policy reports are written until they are. Install them (Helm chart: --set policyReports.installCRDs=true; or with Kyverno or Policy Reporter); meshgate writes the reports as soon as they exist (checked every 10s; this line repeats every 10 min)"
        );
    }
}

/// Report writes in flight at once: enough to write thousands of namespaces'
/// reports in seconds, few enough that the API server's priority and
/// fairness never sees meshgate as a flood.
const WRITES_IN_FLIGHT: usize = 16;

enum Write<'a> {
    Create(&'a Report),
    /// With the stored report's resource version.
    Replace(&'a Report, Option<String>),
    Delete(Option<String>, String),
}

enum Written {
    Created,
    Replaced,
    Deleted,
    AlreadyGone,
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
    /// Writes run `WRITES_IN_FLIGHT` at a time (one namespace's report each;
    /// 10,000 namespaces one after the other would take minutes). A failed
    /// write does not stop the others; the first error is returned once all
    /// were tried, and the next reconcile re-lists and writes only what
    /// still differs.
    pub async fn reconcile(&self, desired: &[Report]) -> Result<Reconciled, WriteError> {
        let mut existing = self.existing().await?;
        let mut writes = Vec::new();
        let mut done = Reconciled::default();
        for report in desired {
            let key = (
                report.metadata.namespace.clone(),
                report.metadata.name.clone(),
            );
            match existing.remove(&key) {
                Some((stored, _)) if stored.same_content(report) => done.unchanged += 1,
                Some((_, resource_version)) => {
                    writes.push(Write::Replace(report, resource_version))
                }
                None => writes.push(Write::Create(report)),
            }
        }
        writes.extend(
            existing
                .into_keys()
                .map(|(namespace, name)| Write::Delete(namespace, name)),
        );
        // Collected first: a closure inside the stream makes the future
        // too general for tokio::spawn (rust-lang/rust#102211).
        let pending: Vec<_> = writes.into_iter().map(|write| self.write(write)).collect();
        let mut outcomes = futures::stream::iter(pending).buffer_unordered(WRITES_IN_FLIGHT);
        let mut first_error = None;
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Ok(Written::Created) => done.created += 1,
                Ok(Written::Replaced) => done.updated += 1,
                Ok(Written::Deleted) => done.deleted += 1,
                Ok(Written::AlreadyGone) => {}
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(done),
        }
    }

    async fn write(&self, write: Write<'_>) -> Result<Written, WriteError> {
        match write {
            Write::Create(report) => {
                let object: DynamicObject = serde_json::from_value(serde_json::to_value(report)?)?;
                self.api(report.metadata.namespace.as_deref())
                    .create(&PostParams::default(), &object)
                    .await?;
                Ok(Written::Created)
            }
            Write::Replace(report, resource_version) => {
                let mut object: DynamicObject =
                    serde_json::from_value(serde_json::to_value(report)?)?;
                object.metadata.resource_version = resource_version;
                self.api(report.metadata.namespace.as_deref())
                    .replace(&report.metadata.name, &PostParams::default(), &object)
                    .await?;
                Ok(Written::Replaced)
            }
            Write::Delete(namespace, name) => {
                match self
                    .api(namespace.as_deref())
                    .delete(&name, &DeleteParams::default())
                    .await
                {
                    Ok(_) => Ok(Written::Deleted),
                    // Gone already (its namespace was deleted): nothing to do.
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(Written::AlreadyGone),
                    Err(e) => Err(e.into()),
                }
            }
        }
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
    let mut missing_api = Reminder::default();
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
                        if missing_api.said() {
                            tracing::info!("PolicyReport CRDs found");
                            missing_api.clear();
                        }
                        tracing::info!(?done, reports = desired.len(), "policy reports written");
                        last_written = Some(desired);
                    }
                    Err(error) => {
                        log_write_error(&error, writer.flavor, &mut missing_api);
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(status: Status) -> WriteError {
        WriteError::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn an_unserved_resource_is_a_missing_api() {
        // What kube makes of the API server's plain-text answer for a
        // resource it does not serve.
        let unserved =
            Status::failure("404 page not found\n", "Failed to parse error data").with_code(404);
        assert!(api_error(unserved).is_api_missing());
    }

    #[test]
    fn a_missing_object_or_other_errors_are_not() {
        let gone = Status::failure(r#"namespaces "shop" not found"#, "NotFound").with_code(404);
        assert!(!api_error(gone).is_api_missing());
        let forbidden = Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!api_error(forbidden).is_api_missing());
    }
}
