//! `meshgate audit --cluster`: one read-only pass over a live cluster. Every
//! kind meshgate judges (and ServiceEntries, which the posture index reads)
//! is listed and turned into manifests, so the rest is the audit on files.

use kube::api::{Api, DynamicObject, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config as KubeConfig};

use crate::kinds::Kind;
use crate::manifest::{Manifest, Origin};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot read the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("cannot configure the client: {0}")]
    Client(#[from] kube::Error),
    #[error("cannot list {kind}: {source}")]
    List {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read a listed object: {0}")]
    Json(#[from] serde_json::Error),
}

/// A client from `kubeconfig` (or the usual lookup: KUBECONFIG, ~/.kube,
/// in-cluster) and `context`.
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Client, ClusterError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            KubeConfig::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?
        }
        None if context.is_some() => KubeConfig::from_kubeconfig(&options).await?,
        None => KubeConfig::infer()
            .await
            .map_err(kube::Error::InferConfig)?,
    };
    Ok(Client::try_from(config)?)
}

/// Every listed object as a manifest. `namespace` limits namespaced kinds
/// to it (and Namespaces to it); kinds the cluster does not serve (no Istio,
/// no cert-manager) are reported on stderr and skipped.
pub async fn manifests(
    client: &Client,
    namespace: Option<&str>,
) -> Result<Vec<Manifest>, ClusterError> {
    let mut manifests = Vec::new();
    // Every kind in the table: the judged ones and what the posture reads.
    for kind in Kind::ALL {
        let row = kind.row();
        let Some(objects) = list(client, kind, namespace).await? else {
            eprintln!(
                "meshgate audit: the cluster does not serve {} ({}): skipped",
                row.kind.as_str(),
                row.group
            );
            continue;
        };
        for object in objects {
            let document = manifests.len() + 1;
            manifests.push(manifest(kind, object, document)?);
        }
    }
    Ok(manifests)
}

/// The objects of `listed` at the first served version; `None` if none is.
async fn list(
    client: &Client,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<Option<Vec<DynamicObject>>, ClusterError> {
    let listed = crate::watch::at_newest_served(kind, |resource| {
        let mut params = ListParams::default();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) if kind == Kind::Namespace => {
                params = params.fields(&format!("metadata.name={ns}"));
                Api::all_with(client.clone(), &resource)
            }
            // ClusterMeshExemptions apply in `ns` too.
            Some(ns) if kind.row().namespaced => {
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            Some(_) => Api::all_with(client.clone(), &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        async move {
            let list = api.list(&params).await?;
            // Lists leave the items' types out.
            let types = kube::api::TypeMeta {
                api_version: resource.api_version.clone(),
                kind: resource.kind.clone(),
            };
            Ok(list
                .items
                .into_iter()
                .map(|mut o| {
                    o.types = Some(types.clone());
                    o
                })
                .collect())
        }
    })
    .await;
    listed.map_err(|source| ClusterError::List {
        kind: kind.as_str(),
        source,
    })
}

/// The audit of a live cluster: the objects read, the posture index built
/// from them, then the same judging as on files.
pub fn audit(
    args: &crate::cli::AuditArgs,
    config: &crate::config::Config,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<super::Report, super::AuditError> {
    let manifests = read(args, config)?;
    let posture = crate::posture::files::index(&manifests, "default")?;
    let judged: Vec<Manifest> = match args.namespace.as_deref() {
        Some(ns) => manifests
            .into_iter()
            .filter(|m| m.namespace() == Some(ns) || (m.kind == "Namespace" && m.name() == ns))
            .collect(),
        None => manifests,
    };
    super::judge_manifests_at(&judged, &posture, config, "default", now)
}

/// Every object of the cluster (of `-n` and the mesh root namespace, with
/// `-n`) that meshgate judges or indexes.
pub fn read(
    args: &crate::cli::AuditArgs,
    config: &crate::config::Config,
) -> Result<Vec<Manifest>, ClusterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    let namespace = args.namespace.as_deref();
    runtime.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let mut manifests = manifests(&client, namespace).await?;
        // Mesh-wide policies in the root namespace decide a namespace's
        // posture: read them too, but judge only the namespace asked for.
        if namespace.is_some_and(|ns| ns != config.mesh_root_namespace) {
            let root = manifests_in_root(&client, &config.mesh_root_namespace).await?;
            manifests.extend(root);
        }
        Ok(manifests)
    })
}

/// The Istio policies of the mesh root namespace.
async fn manifests_in_root(client: &Client, root: &str) -> Result<Vec<Manifest>, ClusterError> {
    let mut found = Vec::new();
    for kind in Kind::ALL
        .into_iter()
        .filter(|k| k.row().group.ends_with("istio.io"))
    {
        for object in list(client, kind, Some(root)).await?.unwrap_or_default() {
            found.push(manifest(kind, object, 0)?);
        }
    }
    Ok(found)
}

/// A listed object as a manifest, its origin naming the resource and object.
fn manifest(kind: Kind, object: DynamicObject, document: usize) -> Result<Manifest, ClusterError> {
    let (api_version, kind_name) = object
        .types
        .as_ref()
        .map(|t| (t.api_version.clone(), t.kind.clone()))
        .unwrap_or_default();
    Ok(Manifest {
        origin: Origin {
            file: format!(
                "cluster:{}/{}",
                kind.row().plural,
                object.metadata.name.as_deref().unwrap_or_default()
            ),
            document,
            line: 1,
        },
        api_version,
        kind: kind_name,
        value: serde_json::to_value(&object)?,
    })
}
