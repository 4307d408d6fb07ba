//! The confirmation path without an API server: one that cannot be reached.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use crate::admission::{Outcome, Reviewer};
use crate::config::Config;
use crate::posture::confirm::Confirmer;
use crate::posture::{PostureIndex, SharedPosture};
use crate::rules::testing::namespace;

/// JSON log lines, kept for the test to read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn entries(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

/// An enrolled `bookinfo` with no mesh policy at all: a workload there is
/// denied on posture (no STRICT mTLS), so the denial is confirmed.
fn reviewer_confirming_against_nothing() -> Reviewer {
    let mut index = PostureIndex::default();
    index.apply_namespace(&namespace("bookinfo", &[("istio-injection", "enabled")]));
    let posture: SharedPosture = Arc::new(RwLock::new(index));
    // Nothing listens on port 1: every read fails at once.
    let kube = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
    let client = kube::Client::try_from(kube).unwrap();
    let confirmer = Arc::new(Confirmer::new(client, Duration::from_secs(5)));
    Reviewer::new(Arc::new(Config::default()), posture).with_confirmer(Some(confirmer))
}

#[tokio::test(flavor = "current_thread")]
async fn an_unconfirmable_denial_stands_and_its_warning_is_in_the_reviews_span() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let body = include_bytes!("../../../tests/fixtures/admission/pod-create-injected.json");
    let reviewed = reviewer_confirming_against_nothing()
        .validate(body)
        .await
        .unwrap();
    assert_eq!(reviewed.record.outcome, Outcome::Denied);
    let message = reviewed.review.response.unwrap().result.message;
    assert!(message.contains("[strict-mtls-required]"), "{message}");

    let entries = lines.entries();
    let warning = entries
        .iter()
        .find(|e| e["message"] == "cannot confirm the denial; the cached posture stands")
        .unwrap_or_else(|| panic!("no warning in {entries:?}"));
    let span = &warning["span"];
    assert_eq!(span["name"], "review", "{warning}");
    assert_eq!(span["uid"], reviewed.record.uid, "{warning}");
    assert_eq!(span["kind"], "Pod", "{warning}");
    assert_eq!(
        span["object"],
        format!("bookinfo/{}", reviewed.record.name),
        "{warning}"
    );
    assert_eq!(span["operation"], "CREATE", "{warning}");
}

/// The review's future is moved (copied) several times on its way from the
/// router to the executor on every review; the confirmation against the API
/// server, which few reviews need, is boxed so that its large future is not
/// part of every review's.
#[tokio::test(flavor = "current_thread")]
async fn the_review_future_stays_small() {
    let reviewer = reviewer_confirming_against_nothing();
    let size = std::mem::size_of_val(&reviewer.validate(b"{}"));
    eprintln!("validate future: {size} bytes");
    assert!(size <= 1280, "the validate future is {size} bytes");
}
