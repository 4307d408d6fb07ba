//! Writes the desired reports to the API server: creates missing ones,
//! replaces those whose content changed (timestamps aside: no churn), and
//! deletes meshgate's reports (found by the managed-by label) of objects
//! that are no longer judged.
//!
//! API-server load: with one report per object a cluster holds thousands.
//! A full reconcile lists them (in pages); after that the writer remembers
//! what the server holds (name, content fingerprint, resource version) and
//! writes only the difference, so an unchanged pass sends no request at all.
//! Replaces carry the remembered resource version: a report changed behind
//! the writer's back fails with a conflict, and the next round lists again.

use std::collections::BTreeMap;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use kube::Client;

use super::types::{Flavor, Report, Timestamp};
use super::{MANAGED_BY_LABEL, SOURCE};
use crate::reminder::Reminder;

mod rounds;
pub use rounds::run;

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
    if missing.due(std::time::Instant::now()) {
        let crds =
            [true, false].map(|cluster| format!("{}.{}", flavor.kind(cluster).1, flavor.group()));
        tracing::warn!(
            crds = %crds.join(", "),
            "PolicyReport CRDs not installed: no policy reports are written until they are. Install them (Helm chart: --set policyReports.installCRDs=true; or with Kyverno or Policy Reporter); meshgate writes the reports as soon as they exist (checked every 10s; this line repeats every 10 min)"
        );
    }
}

/// Report writes in flight at once: enough to write thousands of reports in
/// seconds, few enough that the API server's priority and fairness never
/// sees meshgate as a flood.
const WRITES_IN_FLIGHT: usize = 16;
/// Reports per list page: bounds the size of one response.
const LIST_PAGE: u32 = 500;

/// A report's (namespace, name).
type Key = (Option<String>, String);

/// What the API server holds of meshgate's reports, as the writer last
/// listed or wrote them: content fingerprint and resource version by key.
#[derive(Debug, Default)]
pub struct Known(BTreeMap<Key, (u64, Option<String>)>);

impl Known {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

enum Write<'a> {
    Create(&'a Report),
    /// With the stored report's resource version.
    Replace(&'a Report, Option<String>),
    Delete(Key),
}

enum Written {
    /// With the new resource version.
    Created(Key, u64, Option<String>),
    Replaced(Key, u64, Option<String>),
    Deleted(Key),
}

/// What one reconciliation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
}

impl Reconciled {
    /// Whether anything was written.
    pub fn wrote(&self) -> bool {
        self.created + self.updated + self.deleted > 0
    }
}

pub struct Writer {
    client: Client,
    flavor: Flavor,
}

fn key(report: &Report) -> Key {
    (
        report.metadata.namespace.clone(),
        report.metadata.name.clone(),
    )
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

    /// Makes the API server hold exactly `desired` among meshgate's reports,
    /// after listing what it holds.
    pub async fn reconcile(&self, desired: &[Report]) -> Result<Reconciled, WriteError> {
        let mut known = self.list().await?;
        self.reconcile_known(&mut known, desired).await
    }

    /// Writes the difference between `known` and `desired`, without
    /// listing, and updates `known` with what it wrote. Writes run
    /// `WRITES_IN_FLIGHT` at a time. A failed write does not stop the
    /// others; the first error is returned once all were tried, and `known`
    /// is then unreliable: the caller lists again.
    pub async fn reconcile_known(
        &self,
        known: &mut Known,
        desired: &[Report],
    ) -> Result<Reconciled, WriteError> {
        let mut done = Reconciled::default();
        let mut stale: BTreeMap<&Key, ()> = known.0.keys().map(|k| (k, ())).collect();
        let mut writes = Vec::new();
        let keys: Vec<Key> = desired.iter().map(key).collect();
        for (report, key) in desired.iter().zip(&keys) {
            stale.remove(key);
            match known.0.get(key) {
                Some((fingerprint, _)) if *fingerprint == report.fingerprint() => {
                    done.unchanged += 1
                }
                Some((_, resource_version)) => {
                    writes.push(Write::Replace(report, resource_version.clone()))
                }
                None => writes.push(Write::Create(report)),
            }
        }
        writes.extend(stale.into_keys().map(|k| Write::Delete(k.clone())));
        // Collected first: a closure inside the stream makes the future
        // too general for tokio::spawn (rust-lang/rust#102211).
        let pending: Vec<_> = writes.into_iter().map(|write| self.write(write)).collect();
        let mut outcomes = futures::stream::iter(pending).buffer_unordered(WRITES_IN_FLIGHT);
        let mut first_error = None;
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Ok(Written::Created(key, fingerprint, version)) => {
                    done.created += 1;
                    known.0.insert(key, (fingerprint, version));
                }
                Ok(Written::Replaced(key, fingerprint, version)) => {
                    done.updated += 1;
                    known.0.insert(key, (fingerprint, version));
                }
                Ok(Written::Deleted(key)) => {
                    done.deleted += 1;
                    known.0.remove(&key);
                }
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
                let created = self
                    .api(report.metadata.namespace.as_deref())
                    .create(&PostParams::default(), &object)
                    .await?;
                let version = created.metadata.resource_version;
                Ok(Written::Created(key(report), report.fingerprint(), version))
            }
            Write::Replace(report, resource_version) => {
                let mut object: DynamicObject =
                    serde_json::from_value(serde_json::to_value(report)?)?;
                object.metadata.resource_version = resource_version;
                let replaced = self
                    .api(report.metadata.namespace.as_deref())
                    .replace(&report.metadata.name, &PostParams::default(), &object)
                    .await?;
                let version = replaced.metadata.resource_version;
                Ok(Written::Replaced(
                    key(report),
                    report.fingerprint(),
                    version,
                ))
            }
            Write::Delete(key) => {
                match self
                    .api(key.0.as_deref())
                    .delete(&key.1, &DeleteParams::default())
                    .await
                {
                    Ok(_) => Ok(Written::Deleted(key)),
                    // Gone already (the garbage collector deleted it with
                    // its object, or its namespace went): nothing to do.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        Ok(Written::Deleted(key))
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// meshgate's stored reports, listed in pages of `LIST_PAGE`.
    pub async fn list(&self) -> Result<Known, WriteError> {
        let mut found = Known::default();
        for api in [self.api(None), self.namespaced_all()] {
            let mut params = ListParams::default()
                .labels(&format!("{MANAGED_BY_LABEL}={SOURCE}"))
                .limit(LIST_PAGE);
            loop {
                let page = api.list(&params).await?;
                for object in &page.items {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    let namespace = object.metadata.namespace.clone();
                    // A report that does not parse as ours gets a
                    // fingerprint nothing matches: it is replaced.
                    let fingerprint = serde_json::to_value(object)
                        .ok()
                        .and_then(|value| crate::strict::from_value::<Report>(value).ok())
                        .map_or(0, |report| report.fingerprint());
                    let version = object.metadata.resource_version.clone();
                    found.0.insert((namespace, name), (fingerprint, version));
                }
                match page.metadata.continue_.filter(|token| !token.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
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
