//! `meshgate remove-webhooks`: the chart's pre-delete hook. It deletes the
//! webhook configurations before Helm deletes anything else, so no Helm
//! version's delete order can leave the API server calling a webhook whose
//! pods are gone (and, failing closed, rejecting what meshgate judges).

use std::process::ExitCode;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, DeleteParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::cli::RemoveWebhooksArgs;

pub async fn run(args: &RemoveWebhooksArgs) -> ExitCode {
    match remove(&args.name).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "meshgate: cannot remove the webhook configurations {}: {error}",
                args.name
            );
            ExitCode::FAILURE
        }
    }
}

/// Deletes both configurations named `name`; one already gone is fine, so
/// a retried hook succeeds.
pub async fn remove(name: &str) -> Result<(), kube::Error> {
    let client = Client::try_default().await?;
    delete::<ValidatingWebhookConfiguration>(&client, name).await?;
    delete::<MutatingWebhookConfiguration>(&client, name).await
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
