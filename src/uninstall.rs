//! `meshgate remove-webhooks`: the chart's uninstall hook. It deletes the
//! webhook configurations before Helm deletes anything else, so no Helm
//! version's delete order can leave the API server calling a webhook whose
//! pods are gone (and, failing closed, rejecting what meshgate judges).
//!
//! It also deletes the native admission policies and bindings meshgate
//! labelled (`src/native/`): they would otherwise keep judging and mutating
//! after meshgate is gone.
//!
//! With `--policy-reports` it also deletes the reports meshgate wrote, found
//! by the label the report writer sets: the report CRDs are kept on
//! uninstall (other tools' reports live in them), so meshgate's own reports
//! would otherwise stay behind, stale.

use std::process::ExitCode;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ResourceExt,
};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::cli::RemoveWebhooksArgs;
use crate::report::{Flavor, MANAGED_BY_LABEL, SOURCE};

pub async fn run(args: &RemoveWebhooksArgs) -> ExitCode {
    let client = match Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            eprintln!("meshgate: cannot reach the API server: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = remove(&client, &args.name).await {
        eprintln!(
            "meshgate: cannot remove the webhook configurations {}: {error}",
            args.name
        );
        return ExitCode::FAILURE;
    }
    // The native policies hold without meshgate: they go with it.
    match crate::native::sync::remove_all(&client).await {
        Ok(deleted) => tracing::info!(deleted, "meshgate's native policies removed"),
        Err(error) => {
            eprintln!("meshgate: cannot remove meshgate's native policies: {error}");
            return ExitCode::FAILURE;
        }
    }
    if args.policy_reports {
        if let Err(error) = remove_reports(&client).await {
            eprintln!("meshgate: cannot remove meshgate's policy reports: {error}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Deletes both configurations named `name`; one already gone is fine, so
/// a retried hook succeeds.
pub async fn remove(client: &Client, name: &str) -> Result<(), kube::Error> {
    delete::<ValidatingWebhookConfiguration>(client, name).await?;
    delete::<MutatingWebhookConfiguration>(client, name).await
}

async fn delete<K>(client: &Client, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let api: Api<K> = Api::all(client.clone());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(%kind, name, "deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(%kind, name, "already gone");
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Deletes meshgate's reports of both APIs (a release may have switched
/// API), namespaced and cluster-scoped. An API that is not served has no
/// reports to delete.
pub async fn remove_reports(client: &Client) -> Result<usize, kube::Error> {
    let mut deleted = 0;
    for flavor in [Flavor::Wgpolicy, Flavor::OpenReports] {
        for cluster_scoped in [false, true] {
            deleted += remove_reports_of(client, flavor, cluster_scoped).await?;
        }
    }
    tracing::info!(deleted, "meshgate's policy reports removed");
    Ok(deleted)
}

async fn remove_reports_of(
    client: &Client,
    flavor: Flavor,
    cluster_scoped: bool,
) -> Result<usize, kube::Error> {
    let (kind, plural) = flavor.kind(cluster_scoped);
    let gvk = GroupVersionKind::gvk(flavor.group(), flavor.version(), kind);
    let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    // Only what meshgate's writer labelled: other tools' reports (Kyverno's,
    // Policy Reporter's) in the same CRDs are never touched.
    let mine = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={SOURCE}"));
    let reports = match all.list_metadata(&mine).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(0),
        Err(error) => return Err(error),
    };
    let mut deleted = 0;
    for report in reports {
        let name = report.name_any();
        let api: Api<DynamicObject> = match report.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), &ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
    }
    if deleted > 0 {
        tracing::info!(kind, deleted, "deleted");
    }
    Ok(deleted)
}
