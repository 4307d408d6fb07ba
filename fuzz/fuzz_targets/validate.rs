//! `POST /validate` on raw bytes: never a panic; a body that is not an
//! AdmissionReview is an error (HTTP 400); every answer echoes the uid; an
//! object under review that is missing, not a JSON object, undecodable as its
//! kind or in another namespace is never allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate::admission::review;
use meshgate::subject::Kind;
use meshgate_fuzz::{check_envelope, raw, reviewer, unusable, Judged};

fuzz_target!(|data: &[u8]| {
    // Without a confirmer the review never waits: one poll completes it.
    let Ok(reviewed) = futures::executor::block_on(reviewer().validate(data)) else {
        return;
    };
    let allowed = check_envelope(data, &reviewed);
    let req = review::parse_raw(data).expect("an answered body parses");
    if let Judged::Field(kind, object) = judged(&req) {
        if let Some(why) = unusable(&req, kind, object) {
            assert!(!allowed, "allowed a {kind:?} whose object is {why}");
        }
        // An UPDATE's old object the API server would never send (not an
        // object) is refused too; one that merely fails to decode is not.
        if req.operation_str() == "UPDATE" {
            if let Some(old) = raw(&req.old_object) {
                if !old.get().trim_start().starts_with('{') {
                    assert!(
                        !allowed,
                        "allowed an UPDATE whose oldObject is not an object"
                    );
                }
            }
        }
    }
});

/// What `/validate` judges, per the README: CREATE and UPDATE of every kind
/// meshgate knows, DELETE of the two baseline policy kinds; no subresource
/// but a pod's ephemeral containers.
fn judged<'a>(req: &review::Request<'a>) -> Judged<'a> {
    let gvk = &req.kind;
    let Some(kind) = Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind) else {
        return Judged::Nothing;
    };
    if let Some(sub) = req.sub_resource.as_deref().filter(|s| !s.is_empty()) {
        if !(kind == Kind::Pod && sub == "ephemeralcontainers") {
            return Judged::Nothing;
        }
    }
    match req.operation_str() {
        "CREATE" | "UPDATE" => Judged::Field(kind, raw(&req.object)),
        "DELETE" if matches!(kind, Kind::PeerAuthentication | Kind::AuthorizationPolicy) => {
            Judged::Field(kind, raw(&req.old_object))
        }
        _ => Judged::Nothing,
    }
}
