//! `meshgate audit --cluster`: one read-only pass over a live cluster. Every
//! kind meshgate judges (and ServiceEntries, which the posture index reads)
//! is listed and turned into manifests, so the rest is the audit on files.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config as KubeConfig};

use crate::manifest::{Manifest, Origin};

/// A listed kind: group, the versions tried in order, kind, plural.
struct Listed {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
}

const fn l(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
) -> Listed {
    Listed {
        group,
        versions,
        kind,
        plural,
    }
}

const LISTED: &[Listed] = &[
    l("", &["v1"], "Namespace", "namespaces"),
    l("", &["v1"], "Pod", "pods"),
    l(
        "",
        &["v1"],
        "ReplicationController",
        "replicationcontrollers",
    ),
    l("apps", &["v1"], "Deployment", "deployments"),
    l("apps", &["v1"], "StatefulSet", "statefulsets"),
    l("apps", &["v1"], "DaemonSet", "daemonsets"),
    l("apps", &["v1"], "ReplicaSet", "replicasets"),
    l("batch", &["v1"], "Job", "jobs"),
    l("batch", &["v1"], "CronJob", "cronjobs"),
    l(
        "security.istio.io",
        &["v1", "v1beta1"],
        "PeerAuthentication",
        "peerauthentications",
    ),
    l(
        "security.istio.io",
        &["v1", "v1beta1"],
        "AuthorizationPolicy",
        "authorizationpolicies",
    ),
    l(
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "DestinationRule",
        "destinationrules",
    ),
    l(
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "Sidecar",
        "sidecars",
    ),
    l(
        "networking.istio.io",
        &["v1", "v1beta1", "v1alpha3"],
        "ServiceEntry",
        "serviceentries",
    ),
    l("cert-manager.io", &["v1"], "Certificate", "certificates"),
];

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
    for listed in LISTED {
        let Some(objects) = list(client, listed, namespace).await? else {
            eprintln!(
                "meshgate audit: the cluster does not serve {} ({}): skipped",
                listed.kind, listed.group
            );
            continue;
        };
        for object in objects {
            let (api_version, kind) = object
                .types
                .as_ref()
                .map(|t| (t.api_version.clone(), t.kind.clone()))
                .unwrap_or_default();
            let origin = Origin {
                file: format!(
                    "cluster:{}/{}",
                    listed.plural,
                    object.metadata.name.as_deref().unwrap_or_default()
                ),
                document: manifests.len() + 1,
                line: 1,
            };
            let value = serde_json::to_value(&object)?;
            manifests.push(Manifest {
                origin,
                api_version,
                kind,
                value,
            });
        }
    }
    Ok(manifests)
}

/// The objects of `listed` at the first served version; `None` if none is.
async fn list(
    client: &Client,
    listed: &Listed,
    namespace: Option<&str>,
) -> Result<Option<Vec<DynamicObject>>, ClusterError> {
    for version in listed.versions {
        let gvk = GroupVersionKind::gvk(listed.group, version, listed.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, listed.plural);
        let mut params = ListParams::default();
        let api: Api<DynamicObject> = match namespace {
            Some(ns) if listed.kind == "Namespace" => {
                params = params.fields(&format!("metadata.name={ns}"));
                Api::all_with(client.clone(), &resource)
            }
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        match api.list(&params).await {
            Ok(list) => {
                let items = list
                    .items
                    .into_iter()
                    .map(|mut o| {
                        // Lists leave the items' types out.
                        o.types = Some(kube::api::TypeMeta {
                            api_version: resource.api_version.clone(),
                            kind: resource.kind.clone(),
                        });
                        o
                    })
                    .collect();
                return Ok(Some(items));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(source) => {
                return Err(ClusterError::List {
                    kind: listed.kind,
                    source,
                })
            }
        }
    }
    Ok(None)
}

/// The audit of a live cluster: the objects read, the posture index built
/// from them, then the same judging as on files.
pub fn audit(
    args: &crate::cli::AuditArgs,
    config: &crate::config::Config,
) -> Result<super::Report, super::AuditError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    let namespace = args.namespace.as_deref();
    let manifests = runtime.block_on(async {
        let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
        let mut manifests = manifests(&client, namespace).await?;
        // Mesh-wide policies in the root namespace decide a namespace's
        // posture: read them too, but judge only the namespace asked for.
        if namespace.is_some_and(|ns| ns != config.mesh_root_namespace) {
            let root = manifests_in_root(&client, &config.mesh_root_namespace).await?;
            manifests.extend(root);
        }
        Ok::<_, ClusterError>(manifests)
    })?;
    let posture = crate::posture::files::index(&manifests, "default")?;
    let judged: Vec<Manifest> = match namespace {
        Some(ns) => manifests
            .into_iter()
            .filter(|m| m.namespace() == Some(ns) || (m.kind == "Namespace" && m.name() == ns))
            .collect(),
        None => manifests,
    };
    super::judge_manifests(&judged, &posture, config, "default")
}

/// The Istio policies of the mesh root namespace.
async fn manifests_in_root(client: &Client, root: &str) -> Result<Vec<Manifest>, ClusterError> {
    let mut found = Vec::new();
    for listed in LISTED.iter().filter(|l| l.group.ends_with("istio.io")) {
        for object in list(client, listed, Some(root)).await?.unwrap_or_default() {
            let (api_version, kind) = object
                .types
                .as_ref()
                .map(|t| (t.api_version.clone(), t.kind.clone()))
                .unwrap_or_default();
            found.push(Manifest {
                origin: Origin {
                    file: format!("cluster:{}/{root}", listed.plural),
                    document: 0,
                    line: 1,
                },
                api_version,
                kind,
                value: serde_json::to_value(&object)?,
            });
        }
    }
    Ok(found)
}
