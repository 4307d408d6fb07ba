//! The leader keeps the native policies in the cluster: it writes what
//! [`super::compile`] makes of the configuration with server-side apply
//! (field manager `meshgate`), deletes the native objects meshgate labelled
//! that are no longer compiled, and writes again every [`REAPPLY`], so an
//! object deleted or edited by hand comes back.
//!
//! The configuration is read once at start (serve has no reload): a changed
//! configuration reaches the policies with the rollout that restarts the
//! pods, and the new leader's first pass. Exemption objects are read from
//! the posture index: the leader recompiles every [`RECOMPILE`] with those
//! active at that instant and applies the policies when they differ, so a
//! new exemption lifts, and an expired one stops lifting, within seconds.
//! While meshgate is down nothing recompiles: an exemption that expires
//! then keeps lifting the native policies until a replica is back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{NativeError, NativePolicies, MANAGED_BY, NATIVE_LABEL};
use crate::config::Config;
use crate::exemption::ExemptionObject;
use crate::kinds::Kind;
use crate::leader::{self, ElectionMetrics, Elector, Lease};
use crate::posture::reflector::CacheSync;
use crate::posture::SharedPosture;

/// Its own Lease: the report writer's is only taken with reports enabled.
pub const LEASE_NAME: &str = "meshgate-native-policies";
pub const FIELD_MANAGER: &str = "meshgate";
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A pass while leading repairs what was deleted or edited by hand.
const REAPPLY: Duration = Duration::from_secs(300);
/// How often the leader recompiles with the exemption objects of the
/// moment: a new, changed or expired exemption reaches the policies within
/// this (plus the API server's reload, about a second).
const RECOMPILE: Duration = Duration::from_secs(2);
const MIN_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(60);
const RELEASE_BOUND: Duration = Duration::from_secs(3);

/// The four kinds meshgate writes, in apply order (a binding after its
/// policy); deletion goes the other way.
pub const KINDS: [(&str, &str); 4] = [
    ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
    (
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
    ),
    ("MutatingAdmissionPolicy", "mutatingadmissionpolicies"),
    (
        "MutatingAdmissionPolicyBinding",
        "mutatingadmissionpolicybindings",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("compiled object without kind or metadata.name: {0}")]
    Malformed(String),
    #[error("unknown native kind {0}")]
    UnknownKind(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

fn api(client: &Client, plural: &str, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn selector() -> String {
    format!(
        "{}={},{}={}",
        MANAGED_BY.0, MANAGED_BY.1, NATIVE_LABEL.0, NATIVE_LABEL.1
    )
}

/// (kind, name) of every compiled object.
pub fn wanted(policies: &NativePolicies) -> Result<BTreeSet<(String, String)>, SyncError> {
    policies
        .objects
        .iter()
        .map(
            |o| match (o["kind"].as_str(), o["metadata"]["name"].as_str()) {
                (Some(kind), Some(name)) => Ok((kind.to_owned(), name.to_owned())),
                _ => Err(SyncError::Malformed(o.to_string())),
            },
        )
        .collect()
}

/// Those of `existing` (labelled meshgate's) that are no longer wanted.
pub fn stale(
    wanted: &BTreeSet<(String, String)>,
    existing: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    existing
        .into_iter()
        .filter(|object| !wanted.contains(object))
        .collect()
}

/// One pass: apply everything compiled, then delete what is stale.
/// Returns (applied, deleted).
pub async fn apply(
    client: &Client,
    policies: &NativePolicies,
) -> Result<(usize, usize), SyncError> {
    let wanted = wanted(policies)?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied = 0;
    for object in &policies.objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (_, plural) = KINDS
            .iter()
            .find(|(k, _)| *k == kind)
            .ok_or_else(|| SyncError::UnknownKind(kind.to_owned()))?;
        match api(client, plural, kind)
            .patch(name, &params, &Patch::Apply(object))
            .await
        {
            Ok(_) => applied += 1,
            // An API server older than the kind (MutatingAdmissionPolicy v1
            // is 1.36): the rest still holds.
            Err(kube::Error::Api(status)) if status.code == 404 => {
                tracing::warn!(kind, name, "not served by this API server; skipped");
            }
            // An older API server's CEL may lack what a policy needs (the
            // bypass rule's two-variable comprehensions need 1.32): that
            // rule stays with the webhook; the others are still applied.
            Err(kube::Error::Api(status)) if status.code == 422 => {
                tracing::error!(
                    kind,
                    name,
                    reason = %status.message,
                    "refused by this API server; skipped, the webhook still enforces its rule"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
    let existing = list(client).await?;
    let mut deleted = 0;
    for (kind, name) in stale(&wanted, existing) {
        deleted += usize::from(delete(client, &kind, &name).await?);
    }
    Ok((applied, deleted))
}

/// Every native object meshgate labelled, bindings first.
async fn list(client: &Client) -> Result<Vec<(String, String)>, kube::Error> {
    let mut found = Vec::new();
    for (kind, plural) in KINDS.iter().rev() {
        let params = ListParams::default().labels(&selector());
        match api(client, plural, kind).list_metadata(&params).await {
            Ok(list) => found.extend(
                list.items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .map(|name| ((*kind).to_owned(), name)),
            ),
            // Not served (an older API server): nothing of that kind.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

/// Deletes one object; gone already is fine. True when it deleted it.
async fn delete(client: &Client, kind: &str, name: &str) -> Result<bool, kube::Error> {
    let plural = KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or("", |(_, p)| *p);
    match api(client, plural, kind)
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => {
            tracing::info!(kind, name, "native policy object deleted");
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Deletes every native object meshgate labelled (uninstall).
pub async fn remove_all(client: &Client) -> Result<usize, kube::Error> {
    let mut deleted = 0;
    for (kind, name) in list(client).await? {
        deleted += usize::from(delete(client, &kind, &name).await?);
    }
    Ok(deleted)
}

pub struct SyncTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl SyncTask {
    /// Stops syncing and releases the lease (bounded). The policies stay:
    /// they are what holds while meshgate is down.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(RELEASE_BOUND, self.task).await;
    }
}

/// Compiles the policies once and keeps them applied while this replica
/// leads (on a Lease in `namespace`).
pub fn spawn(
    client: Client,
    config: Arc<Config>,
    namespace: String,
    (posture, sync): (SharedPosture, Arc<CacheSync>),
) -> SyncTask {
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        if let Err(error) = super::compile(&config) {
            tracing::error!(%error, "cannot compile the native policies; not syncing them");
            return;
        }
        let lease = Lease {
            namespace,
            name: LEASE_NAME.to_owned(),
            identity: leader::identity(),
            duration: LEASE_DURATION,
            purpose: "native policies",
        };
        let elector = Elector::spawn(client.clone(), lease, ElectionMetrics::default());
        tokio::select! {
            () = keep_applied(&client, (&config, &posture, &sync), elector.leading()) => {}
            _ = stopped => {}
        }
        elector.stop().await;
    });
    SyncTask { stop, task }
}

/// Whether the exemption objects have been listed: before that, compiling
/// would drop the exemptions a previous leader applied.
fn exemptions_known(sync: &CacheSync) -> bool {
    let exemption_kinds =
        [Kind::MeshExemption, Kind::ClusterMeshExemption].map(|k| k.row().resource);
    sync.states()
        .filter(|(resource, _)| exemption_kinds.contains(resource))
        .all(|(_, synced)| synced)
}

/// The policies for the configuration and the exemption objects active now.
pub fn compiled(config: &Config, posture: &SharedPosture) -> Result<NativePolicies, NativeError> {
    let now = Timestamp::now();
    let active: Vec<ExemptionObject> = posture
        .read()
        .exemptions
        .all()
        .filter(|e| e.is_active(now))
        .cloned()
        .collect();
    super::compile_with(config, &active)
}

/// While leading: recompile every [`RECOMPILE`], apply what changed (and
/// everything every [`REAPPLY`]), back off on errors.
async fn keep_applied(
    client: &Client,
    (config, posture, sync): (&Config, &SharedPosture, &CacheSync),
    mut leading: watch::Receiver<bool>,
) {
    let mut retry = MIN_RETRY;
    let mut last: Option<(NativePolicies, Instant)> = None;
    loop {
        if !*leading.borrow_and_update() {
            last = None;
            if leading.changed().await.is_err() {
                return;
            }
            continue;
        }
        let wait = if exemptions_known(sync) {
            compile_and_apply(client, (config, posture), &mut last, &mut retry).await
        } else {
            // Not yet: compiling now would drop a predecessor's exemptions.
            RECOMPILE
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = leading.changed() => if changed.is_err() { return },
        }
    }
}

/// One round: compile, apply when changed; how long to wait until the next.
async fn compile_and_apply(
    client: &Client,
    (config, posture): (&Config, &SharedPosture),
    last: &mut Option<(NativePolicies, Instant)>,
    retry: &mut Duration,
) -> Duration {
    match compiled(config, posture) {
        Err(error) => {
            tracing::error!(%error, "cannot compile the native policies");
            MAX_RETRY
        }
        Ok(policies) if is_current(last.as_ref(), &policies) => RECOMPILE,
        Ok(policies) => match apply(client, &policies).await {
            Ok((applied, deleted)) => {
                *retry = MIN_RETRY;
                tracing::info!(applied, deleted, "native policies applied");
                *last = Some((policies, Instant::now()));
                RECOMPILE
            }
            Err(error) => {
                tracing::warn!(%error, "cannot apply the native policies; retrying");
                let wait = *retry;
                *retry = (*retry * 2).min(MAX_RETRY);
                wait
            }
        },
    }
}

/// Applied already, and recently enough that no hand edit needs repair.
fn is_current(last: Option<&(NativePolicies, Instant)>, policies: &NativePolicies) -> bool {
    last.is_some_and(|(applied, at)| applied == policies && at.elapsed() < REAPPLY)
}

pub async fn start(
    enabled: bool,
    config: &Arc<Config>,
    namespace: &str,
    (posture, sync): (&SharedPosture, &Arc<CacheSync>),
) -> Result<Option<SyncTask>, kube::Error> {
    if !enabled {
        return Ok(None);
    }
    let client = Client::try_default().await?;
    Ok(Some(spawn(
        client,
        config.clone(),
        namespace.to_owned(),
        (posture.clone(), sync.clone()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn policies_wait_for_the_exemption_objects_to_be_listed() {
        use crate::posture::Availability;
        let exemptions =
            [Kind::MeshExemption, Kind::ClusterMeshExemption].map(|k| k.row().resource);
        let sync = CacheSync::new(&[exemptions[0], exemptions[1], "namespaces"]);
        assert!(!exemptions_known(&sync));
        sync.mark_synced(exemptions[0], Availability::Present);
        assert!(!exemptions_known(&sync));
        sync.mark_synced(exemptions[1], Availability::Present);
        assert!(exemptions_known(&sync), "the other kinds do not matter");
    }

    fn object(kind: &str, name: &str) -> Value {
        json!({"kind": kind, "metadata": {"name": name}})
    }

    #[test]
    fn what_is_no_longer_compiled_is_stale_and_nothing_else() {
        let policies = NativePolicies {
            objects: vec![
                object("MutatingAdmissionPolicy", "meshgate-a"),
                object("MutatingAdmissionPolicyBinding", "meshgate-a"),
            ],
        };
        let wanted = wanted(&policies).unwrap();
        let existing = [
            ("MutatingAdmissionPolicy", "meshgate-a"),
            ("MutatingAdmissionPolicyBinding", "meshgate-a"),
            ("ValidatingAdmissionPolicy", "meshgate-a"),
            ("MutatingAdmissionPolicyBinding", "meshgate-old"),
        ]
        .map(|(k, n)| (k.to_owned(), n.to_owned()));
        assert_eq!(
            stale(&wanted, existing),
            vec![
                (
                    "ValidatingAdmissionPolicy".to_owned(),
                    "meshgate-a".to_owned()
                ),
                (
                    "MutatingAdmissionPolicyBinding".to_owned(),
                    "meshgate-old".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn an_object_without_a_name_is_refused() {
        let policies = NativePolicies {
            objects: vec![json!({"kind": "MutatingAdmissionPolicy"})],
        };
        assert!(matches!(wanted(&policies), Err(SyncError::Malformed(_))));
    }

    #[test]
    fn every_kind_compile_makes_is_one_sync_knows() {
        let compiled = crate::native::compile(&Config::default()).unwrap();
        for object in &compiled.objects {
            let kind = object["kind"].as_str().unwrap();
            assert!(KINDS.iter().any(|(k, _)| *k == kind), "{kind}");
        }
    }
}
