//! `POST /mutate` on raw bytes: never a panic; a body that is not an
//! AdmissionReview is an error (HTTP 400); every answer echoes the uid. It
//! never denies, except a pod CREATE whose object cannot be read (missing,
//! not a JSON object, undecodable, in another namespace), which it always
//! denies; only a pod CREATE is ever patched. A sequence where an object
//! belongs ([`meshgate_fuzz::shapes`]) makes the object unreadable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshgate::admission::review;
use meshgate::subject::Kind;
use meshgate_fuzz::{check_envelope, raw, reviewer, unusable};

fuzz_target!(|data: &[u8]| {
    let Ok(reviewed) = reviewer().mutate(data) else {
        return;
    };
    let allowed = check_envelope(data, &reviewed);
    let req = review::parse_raw(data).expect("an answered body parses");
    let gvk = &req.kind;
    let pod_create = Kind::from_gvk(&gvk.group, &gvk.version, &gvk.kind) == Some(Kind::Pod)
        && req.operation_str() == "CREATE"
        && req.sub_resource.as_deref().is_none_or(str::is_empty);
    let why = if pod_create {
        unusable(&req, Kind::Pod, raw(&req.object))
    } else {
        None
    };
    assert_eq!(
        allowed,
        why.is_none(),
        "pod create: {pod_create}, unusable: {why:?}"
    );
    let patched = reviewed
        .review
        .response
        .as_ref()
        .is_some_and(|r| r.patch.is_some());
    assert!(
        !patched || (pod_create && allowed),
        "patched something other than a readable pod CREATE"
    );
});
