//! Expiry without a restart, in the background audit: every tick, the
//! objects whose current judgement rests on an exemption that has expired
//! since are judged again (their reports turn `fail` within a tick), and a
//! change to the exemption objects re-judges the namespaces it can reach
//! (all of them for a ClusterMeshExemption). The webhook needs none of
//! this: it judges with the clock of each review.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::background::engine::{Engine, PostureChange};
use crate::posture::SharedPosture;

/// How often the background audit looks for expired exemptions and changed
/// exemption objects.
pub const TICK: Duration = Duration::from_secs(1);

/// One tick: marks what must be judged again; the runner's pass follows.
pub fn tick(engine: &mut Engine, posture: &SharedPosture, now: Timestamp) {
    let touched = posture.write().exemptions.take_touched();
    if touched.all {
        engine.mark(&PostureChange::All);
    } else if !touched.namespaces.is_empty() {
        engine.mark(&PostureChange::Namespaces(touched.namespaces));
    }
    engine.mark_exempted_until(now);
}
