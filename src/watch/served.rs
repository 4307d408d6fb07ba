//! The fallback to an older API version, written once: Istio serves its
//! kinds at `v1`, `v1beta1` or `v1alpha3` depending on its release, so a
//! call that answers 404 at one version of the kinds table is tried at the
//! next. Used by the watches, confirm-on-deny and `audit --cluster`.

use std::future::Future;

use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::{Api, Client};

use crate::kinds::Kind;

/// Runs `call` at each version of `kind`, newest first, until one is
/// served; `Ok(None)` when every version answers 404 (the CRD is not
/// installed). Any other error ends the search.
pub async fn at_newest_served<T, F, Fut>(kind: Kind, mut call: F) -> Result<Option<T>, kube::Error>
where
    F: FnMut(ApiResource) -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    for version in kind.row().versions {
        match call(kind.api_resource(version)).await {
            Ok(found) => return Ok(Some(found)),
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// The kind's resource at the newest version the API server serves, or
/// `None` when none is.
pub async fn served_resource(
    client: &Client,
    kind: Kind,
) -> Result<Option<ApiResource>, kube::Error> {
    at_newest_served(kind, |resource| async move {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        api.list_metadata(&ListParams::default().limit(1)).await?;
        Ok(resource)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    fn not_found() -> kube::Error {
        status(404)
    }

    #[tokio::test]
    async fn a_404_tries_the_next_version_and_other_errors_stop() {
        let mut tried = Vec::new();
        let found = at_newest_served(Kind::Sidecar, |resource| {
            tried.push(resource.version.clone());
            let served = resource.version == "v1alpha3";
            async move {
                if served {
                    Ok(resource.api_version)
                } else {
                    Err(not_found())
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(found.as_deref(), Some("networking.istio.io/v1alpha3"));
        assert_eq!(tried, ["v1", "v1beta1", "v1alpha3"]);

        let none = at_newest_served(Kind::PeerAuthentication, |_| async {
            Err::<(), _>(not_found())
        });
        assert!(none.await.unwrap().is_none(), "no version served");

        let mut calls = 0;
        let failed = at_newest_served(Kind::Sidecar, |_| {
            calls += 1;
            async { Err::<(), _>(status(500)) }
        });
        assert!(failed.await.is_err());
        assert_eq!(calls, 1);
    }
}
