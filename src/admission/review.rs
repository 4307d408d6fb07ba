//! Review decoding: the body is read once. A pod or pod controller is
//! decoded into its [`crate::subject`] view as the parser reaches it; any
//! other object is borrowed raw and decoded as its kind when judged.

use std::fmt;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube::core::admission::Operation;
use kube::core::GroupVersionKind;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::subject::{once, Kind, UnplacedWorkload, WorkloadSeed};

use super::decode::{self, Judged};

pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
pub const REVIEW_KIND: &str = "AdmissionReview";

/// Bodies that cannot be read as an AdmissionReview; answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON is UTF-8; the fields the parser skips would not be checked.
    #[error("malformed JSON: the body is not UTF-8 ({0})")]
    NotUtf8(#[from] std::str::Utf8Error),
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
#[derive(Debug)]
pub struct Request<'a> {
    pub uid: String,
    pub kind: GroupVersionKind,
    /// `kind` as one meshgate judges, resolved once as it is read; `None`
    /// for any other kind.
    pub judged: Option<Kind>,
    pub sub_resource: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub operation: Operation,
    pub user_info: UserInfo,
    pub object: Option<ObjectField<'a>>,
    pub old_object: Option<ObjectField<'a>>,
    pub dry_run: bool,
}

/// A request's `object` or `oldObject`.
#[derive(Debug)]
pub enum ObjectField<'a> {
    /// Kept as written, decoded as its kind when judged.
    Raw(&'a RawValue),
    /// A pod or pod controller, decoded as the body was read: the API server
    /// writes `kind` before `object`, so the parser knows what it reads.
    Workload(Box<UnplacedWorkload>),
}

impl<'a> ObjectField<'a> {
    /// The object as written, when it was kept raw.
    pub fn raw(&self) -> Option<&'a RawValue> {
        match self {
            ObjectField::Raw(raw) => Some(raw),
            ObjectField::Workload(_) => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Request<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        RequestSeed {
            decode_workloads: true,
        }
        .deserialize(deserializer)
    }
}

/// Reads a request; with `decode_workloads`, a workload object is decoded in
/// the same pass, otherwise every object stays raw (the second parse of a
/// body whose object did not decode, so the denial can say why).
#[derive(Clone, Copy)]
struct RequestSeed {
    decode_workloads: bool,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Uid,
    Kind,
    SubResource,
    Name,
    Namespace,
    Operation,
    UserInfo,
    Object,
    OldObject,
    DryRun,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for RequestSeed {
    type Value = Request<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Request<'de>, D::Error> {
        deserializer.deserialize_map(RequestVisitor(self))
    }
}

struct RequestVisitor(RequestSeed);

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = Request<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AdmissionRequest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request<'de>, A::Error> {
        let (mut uid, mut kind, mut sub_resource, mut name, mut namespace) =
            (None, None, None, None, None);
        let mut judged = None;
        let (mut operation, mut user_info, mut object, mut old_object, mut dry_run) =
            (None, None, None, None, None);
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Uid => once(&mut uid, map.next_value()?, "uid")?,
                Field::Kind => {
                    once(&mut kind, map.next_value()?, "kind")?;
                    judged = kind.as_ref().and_then(resolve);
                }
                Field::SubResource => once(&mut sub_resource, map.next_value()?, "subResource")?,
                Field::Name => once(&mut name, map.next_value()?, "name")?,
                Field::Namespace => once(&mut namespace, map.next_value()?, "namespace")?,
                Field::Operation => once(&mut operation, map.next_value()?, "operation")?,
                Field::UserInfo => once(&mut user_info, map.next_value()?, "userInfo")?,
                Field::DryRun => once(&mut dry_run, map.next_value()?, "dryRun")?,
                Field::Object | Field::OldObject => {
                    // No workload rule reads an object being deleted.
                    let deleting = operation == Some(Operation::Delete);
                    let workload =
                        judged.filter(|k| self.0.decode_workloads && !deleting && k.is_workload());
                    let value = map.next_value_seed(ObjectSeed(workload))?;
                    match field {
                        Field::Object => once(&mut object, value, "object")?,
                        _ => once(&mut old_object, value, "oldObject")?,
                    }
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Request {
            uid: uid.ok_or_else(|| de::Error::missing_field("uid"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("kind"))?,
            judged,
            sub_resource: sub_resource.flatten(),
            name: name.flatten().unwrap_or_default(),
            namespace: namespace.flatten(),
            operation: operation.ok_or_else(|| de::Error::missing_field("operation"))?,
            user_info: user_info.unwrap_or_default(),
            object: object.flatten(),
            old_object: old_object.flatten(),
            dry_run: dry_run.unwrap_or_default(),
        })
    }
}

/// The judged kind a `kind` names: the one place a review's kind is
/// resolved.
fn resolve(gvk: &GroupVersionKind) -> Option<Kind> {
    Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind)
}

/// `object` or `oldObject`: null, a workload of the given kind, or raw.
struct ObjectSeed(Option<Kind>);

impl<'de> DeserializeSeed<'de> for ObjectSeed {
    type Value = Option<ObjectField<'de>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed {
    type Value = Option<ObjectField<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Ok(Some(match self.0 {
            Some(kind) => ObjectField::Workload(Box::new(WorkloadSeed(kind).deserialize(d)?)),
            None => ObjectField::Raw(<&RawValue>::deserialize(d)?),
        }))
    }
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

/// Reads a request body: the request, and the subject it asks to judge,
/// decoded (see [`decode`]). Only bodies that are not an AdmissionReview
/// at all are errors; an object that cannot be judged is the subject's
/// error, answered with a denial.
pub fn read(body: &[u8]) -> Result<(Request<'_>, Judged), ReviewError> {
    let mut request = parse(body)?;
    let subject = decode::subject(&mut request);
    Ok((request, subject))
}

/// Parses a request body. Only bodies that are not an AdmissionReview at all
/// are errors; everything about the object is decided later.
pub fn parse(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    // serde_json checks UTF-8 only in the strings it builds; skipped ones
    // (most of a pod) would go unchecked.
    let text = std::str::from_utf8(body)?;
    // One scan of the body for a well-formed v1 review, a workload object
    // decoded on the way.
    if let Ok(OnePass {
        api_version,
        kind,
        request: Some(request),
    }) = crate::strict::from_str::<OnePass>(text)
    {
        if api_version == REVIEW_API_VERSION && kind == REVIEW_KIND {
            return Ok(request);
        }
    }
    parse_raw(body)
}

/// Parses a request body keeping every object raw: the envelope first, so a
/// body of another version is named as such rather than reported as a field
/// error deep inside the request, then the request. [`parse`] falls back to
/// this for a body it cannot read in one pass (an object that does not
/// decode as its kind is refused later, with the reason).
pub fn parse_raw(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let envelope: Envelope = crate::strict::from_slice(body)?;
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
    let mut parser = serde_json::Deserializer::from_str(raw.get());
    let request = RequestSeed {
        decode_workloads: false,
    }
    .deserialize(crate::strict::Strict(&mut parser))?;
    parser.end()?;
    Ok(request)
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
        assert!(req.old_object.is_none());
        assert_eq!(req.username(), "admin");
        let Some(ObjectField::Workload(pod)) = req.object else {
            panic!("a pod is decoded in the same pass");
        };
        let pod = pod.place("bookinfo", &req.name);
        assert_eq!(pod.name, "productpage-v1-7d6cfb7dfd-x7k2p");
        assert_eq!(pod.spec.containers[1].name, "istio-proxy");
    }

    /// The decoded-in-place pod is the pod the raw decode makes.
    #[test]
    fn in_place_and_raw_decoding_agree() {
        let body = include_bytes!("../../tests/fixtures/admission/pod-create-injected.json");
        let req = parse(body).unwrap();
        let Some(ObjectField::Workload(in_place)) = req.object else {
            panic!("decoded in place");
        };
        // The object's own bytes, as the raw path would see them.
        #[derive(Deserialize)]
        struct Review<'a> {
            #[serde(borrow)]
            request: Req<'a>,
        }
        #[derive(Deserialize)]
        struct Req<'a> {
            #[serde(borrow)]
            object: &'a RawValue,
        }
        let raw = serde_json::from_slice::<Review>(body)
            .unwrap()
            .request
            .object;
        let Ok(crate::subject::Object::Workload(decoded)) =
            crate::subject::decode(Kind::Pod, raw, "bookinfo", &req.name)
        else {
            panic!("decodes raw");
        };
        let placed = in_place.place("bookinfo", &req.name);
        assert_eq!(format!("{placed:?}"), format!("{decoded:?}"));
    }

    fn request(fields: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{{fields}}}}}"#
        )
    }

    const POD: &str = r#""kind":{"group":"","version":"v1","kind":"Pod"}"#;
    const OBJECT: &str = r#""object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c"}]}}"#;

    #[test]
    fn objects_stay_raw_when_the_parser_cannot_read_them_as_workloads() {
        // `kind` after `object`: not known in time.
        let body = request(&format!(r#""uid":"1",{OBJECT},{POD},"operation":"CREATE""#));
        assert!(matches!(
            parse(body.as_bytes()).unwrap().object,
            Some(ObjectField::Raw(_))
        ));
        // Not an object: parsed again raw, so the caller can refuse it.
        let body = request(&format!(
            r#""uid":"1",{POD},"operation":"CREATE","object":[1]"#
        ));
        let Some(ObjectField::Raw(raw)) = parse(body.as_bytes()).unwrap().object else {
            panic!("kept raw");
        };
        assert_eq!(raw.get(), "[1]");
        // Deleted: nothing reads it.
        let body = request(&format!(
            r#""uid":"1",{POD},"operation":"DELETE","oldObject":{}"#,
            &OBJECT["\"object\":".len()..]
        ));
        let req = parse(body.as_bytes()).unwrap();
        assert!(matches!(req.old_object, Some(ObjectField::Raw(_))));
        assert!(req.object.is_none());
    }

    #[test]
    fn a_repeated_or_missing_field_is_an_error() {
        let twice = request(&format!(
            r#""uid":"1",{POD},"operation":"CREATE",{OBJECT},{OBJECT}"#
        ));
        let error = parse(twice.as_bytes()).unwrap_err();
        assert!(
            error.to_string().contains("duplicate field `object`"),
            "{error}"
        );
        let no_uid = request(&format!(r#"{POD},"operation":"CREATE""#));
        let error = parse(no_uid.as_bytes()).unwrap_err();
        assert!(error.to_string().contains("missing field `uid`"), "{error}");
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
        // Invalid UTF-8 where nothing reads it is still not JSON.
        let mut body = request(&format!(r#""uid":"1",{POD},"operation":"CREATE",{OBJECT}"#))
            .replace(r#""name":"p""#, r#""name":"p","skipped":"?""#)
            .into_bytes();
        let question_mark = body.iter().position(|&b| b == b'?').unwrap();
        body[question_mark] = 0xff;
        assert!(matches!(parse(&body), Err(ReviewError::NotUtf8(_))));
    }
}
