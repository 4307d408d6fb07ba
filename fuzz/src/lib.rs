//! What the review targets share: one Reviewer over the test cluster state,
//! and the contract every answer must keep whatever bytes came in.

use std::sync::{Arc, OnceLock};

pub mod shapes;

use meshgate::admission::{review, Reviewed, Reviewer};
use meshgate::config::Config;
use meshgate::subject::{self, Kind};
use serde_json::value::RawValue;

/// The cluster state the integration tests run against.
const STATE: &[(&str, &str)] = &[
    (
        "namespaces.yaml",
        include_str!("../../tests/fixtures/state/namespaces.yaml"),
    ),
    (
        "serviceentries.yaml",
        include_str!("../../tests/fixtures/state/serviceentries.yaml"),
    ),
];

/// Built once per process: the posture is read-only while fuzzing.
pub fn reviewer() -> &'static Reviewer {
    static REVIEWER: OnceLock<Reviewer> = OnceLock::new();
    REVIEWER.get_or_init(|| {
        let mut manifests = Vec::new();
        for (file, text) in STATE {
            manifests.extend(meshgate::manifest::parse_text(file, text).expect("state parses"));
        }
        let index = meshgate::posture::files::index(&manifests, "default").expect("state indexes");
        Reviewer::new(Arc::new(Config::default()), Arc::new(index.into()))
    })
}

/// Which of the request's objects the review judges, if any.
pub enum Judged<'a> {
    /// Nothing is judged: the answer is an allow.
    Nothing,
    /// This field of the request (`object` or `oldObject`) as this kind.
    Field(Kind, Option<&'a RawValue>),
}

/// Why the judged object cannot be used, read independently of the
/// reviewer's own decoding path (the review parsed with
/// [`review::parse_raw`], the object decoded alone, not in the same pass as
/// the review; a sequence where an object belongs found by
/// [`shapes`], not by meshgate's decoder); `None` when it decodes in place.
pub fn unusable(req: &review::Request, kind: Kind, raw: Option<&RawValue>) -> Option<String> {
    let Some(raw) = raw else {
        return Some("missing".into());
    };
    if !raw.get().trim_start().starts_with('{') {
        return Some(format!("not a JSON object: {:.40}", raw.get()));
    }
    if let Some(path) = shapes::sequence_where_object_belongs(kind, raw.get()) {
        return Some(format!("a sequence where an object belongs, at {path}"));
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    match subject::decode(kind, raw, namespace, &req.name) {
        Err(e) => Some(format!("undecodable: {e}")),
        Ok(object) if kind != Kind::Namespace && object.namespace() != namespace => {
            Some("in another namespace than the request".into())
        }
        Ok(_) => None,
    }
}

/// A field of a request parsed with [`review::parse_raw`]: always raw.
pub fn raw<'a>(field: &Option<review::ObjectField<'a>>) -> Option<&'a RawValue> {
    field
        .as_ref()
        .map(|f| f.raw().expect("parse_raw keeps objects raw"))
}

/// Checks what holds for every answer, `/validate` or `/mutate`: the body
/// the reviewer accepted has a string `request.uid`, and the answer (as sent
/// on the wire) echoes it.
pub fn check_envelope(data: &[u8], reviewed: &Reviewed) -> bool {
    // Not through serde_json::Value: it refuses numbers beyond f64 (valid
    // JSON, which the reviewer rightly accepts and skips).
    #[derive(serde::Deserialize)]
    struct Body {
        request: Request,
    }
    #[derive(serde::Deserialize)]
    struct Request {
        uid: String,
    }
    let body: Body =
        serde_json::from_slice(data).expect("an accepted body has a string request.uid");
    let uid = body.request.uid.as_str();
    let wire: serde_json::Value =
        serde_json::from_slice(reviewed.body.as_ref().expect("the answer serialises"))
            .expect("the answer is JSON");
    assert_eq!(wire["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(wire["kind"], "AdmissionReview");
    assert_eq!(
        wire["response"]["uid"].as_str(),
        Some(uid),
        "uid not echoed"
    );
    assert_eq!(reviewed.record.uid, uid);
    let allowed = wire["response"]["allowed"]
        .as_bool()
        .expect("the answer says allowed true or false");
    if !allowed {
        let code = wire["response"]["status"]["code"].as_u64();
        assert!(
            matches!(code, Some(400 | 403)),
            "a denial carries 400 or 403, got {code:?}"
        );
    }
    allowed
}
