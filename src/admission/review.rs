//! Review decoding: the AdmissionReview envelope is parsed once, borrowing the
//! object bytes, which are then decoded straight into their typed Kubernetes
//! value (no detour through `serde_json::Value`).

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::GroupVersionKind;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
pub const REVIEW_KIND: &str = "AdmissionReview";

/// Bodies that cannot be read as an AdmissionReview; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not an admission.k8s.io/v1 AdmissionReview (got apiVersion {api_version:?}, kind {kind:?})")]
    NotAReview { api_version: String, kind: String },
    #[error("the AdmissionReview has no request")]
    MissingRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    /// Parsed only once the envelope is known to be a v1 review.
    #[serde(borrow)]
    request: Option<&'a RawValue>,
}

/// The whole review in one pass: what nearly every body is. Anything this
/// does not accept is parsed again by [`Envelope`] first, for a precise
/// error.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnePass<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// The fields of an `AdmissionRequest` meshgate reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(borrow, default)]
    pub object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub old_object: Option<&'a RawValue>,
    #[serde(default)]
    pub dry_run: bool,
}

impl Request<'_> {
    pub fn operation_str(&self) -> &'static str {
        operation_str(&self.operation)
    }

    pub fn username(&self) -> &str {
        self.user_info.username.as_deref().unwrap_or("")
    }
}

/// The operation as the API server spells it.
pub fn operation_str(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Parses a request body. Only bodies that are not an AdmissionReview at all
/// are errors; everything about the object is decided later.
pub fn parse(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    // One scan of the body for a well-formed v1 review (the object stays
    // raw until it is decoded as its kind).
    if let Ok(OnePass {
        api_version,
        kind,
        request: Some(request),
    }) = serde_json::from_slice::<OnePass>(body)
    {
        if api_version == REVIEW_API_VERSION && kind == REVIEW_KIND {
            return Ok(request);
        }
    }
    // Otherwise the envelope first, so a body of another version is named as
    // such rather than reported as a field error deep inside the request.
    let envelope: Envelope = serde_json::from_slice(body)?;
    if envelope.api_version != REVIEW_API_VERSION || envelope.kind != REVIEW_KIND {
        return Err(ReviewError::NotAReview {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    }
    let raw = envelope.request.ok_or(ReviewError::MissingRequest)?;
    if raw.get() == "null" {
        return Err(ReviewError::MissingRequest);
    }
    Ok(serde_json::from_str(raw.get())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_review_and_borrows_the_object() {
        let body = include_bytes!("../../tests/fixtures/admission/pod-create-injected.json");
        let req = parse(body).unwrap();
        assert_eq!(req.kind.kind, "Pod");
        assert_eq!(req.operation, Operation::Create);
        assert_eq!(req.namespace.as_deref(), Some("bookinfo"));
        assert!(req.object.unwrap().get().starts_with('{'));
        assert!(req.old_object.is_none());
        assert_eq!(req.username(), "admin");
    }

    #[test]
    fn rejects_other_versions_kinds_and_missing_request() {
        let v1beta1 =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
        assert!(matches!(
            parse(v1beta1),
            Err(ReviewError::NotAReview { .. })
        ));
        let pod = br#"{"apiVersion":"v1","kind":"Pod"}"#;
        assert!(matches!(parse(pod), Err(ReviewError::NotAReview { .. })));
        let empty = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(parse(empty), Err(ReviewError::MissingRequest)));
        assert!(matches!(parse(b"{not json"), Err(ReviewError::Json(_))));
    }
}
