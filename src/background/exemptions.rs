//! Expiry without a restart, in the background audit: every tick, the
//! objects whose current judgement rests on an exemption that has expired
//! since are judged again (their reports turn `fail` within a tick), and a
//! change to the exemption objects re-judges the namespaces it can reach
//! (all of them for a ClusterMeshExemption). The webhook needs none of
//! this: it judges with the clock of each review.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::engine::Engine;
use crate::posture::SharedPosture;

/// How often the background audit looks for expired exemptions and changed
/// exemption objects.
pub const TICK: Duration = Duration::from_secs(1);

/// One tick: marks what must be judged again; the runner's pass follows.
pub fn tick(engine: &mut Engine, posture: &SharedPosture, now: Timestamp) {
    let touched = posture.write().exemptions.take_touched();
    if touched.all {
        engine.mark_all();
    } else {
        engine.mark_namespaces(touched.namespaces);
    }
    engine.mark_exempted_until(now);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::RwLock;
    use serde_json::json;

    use super::*;
    use crate::background::engine::Change;
    use crate::config::Config;
    use crate::posture::PostureIndex;
    use crate::subject::Kind;

    fn host_network_deployment() -> Change {
        Change::Applied {
            kind: Kind::Deployment,
            object: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "agent", "namespace": "shop"},
                "spec": {"selector": {}, "template": {"spec": {
                    "hostNetwork": true, "containers": [{"name": "app", "image": "a"}]}}}
            }),
        }
    }

    fn exempted(engine: &Engine) -> usize {
        let snapshot = engine.snapshot(true);
        snapshot
            .verdicts
            .values()
            .map(|v| v.judgement.exempted.len())
            .sum()
    }

    /// The engine judges with the wall clock: an exemption expiring a
    /// second from now lifts the finding, and after it expired a tick
    /// re-judges the object, which then fails.
    #[test]
    fn a_tick_after_expiry_rejudges_what_the_exemption_covered() {
        let expires = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_millis(1500);
        let config = Config::from_yaml(&format!(
            "mode: off\nrules: {{no-host-network: enforce}}\nexemptions:\n- {{rules: [no-host-network], namespace: shop, reason: r, expires: '{expires}'}}\n"
        ))
        .unwrap();
        let posture: SharedPosture = Arc::new(RwLock::new(PostureIndex::default()));
        let mut engine = Engine::new(Arc::new(config));
        engine.apply(host_network_deployment());
        engine.judge(&posture);
        assert_eq!(exempted(&engine), 1);

        tick(&mut engine, &posture, Timestamp::now());
        assert!(!engine.has_work(), "nothing expired yet");
        std::thread::sleep(std::time::Duration::from_millis(1600));
        tick(&mut engine, &posture, Timestamp::now());
        assert!(engine.has_work());
        engine.judge(&posture);
        assert_eq!(exempted(&engine), 0);
        let snapshot = engine.snapshot(true);
        let verdict = snapshot.verdicts.values().next().unwrap();
        assert_eq!(verdict.judgement.findings.len(), 1);
    }

    #[test]
    fn a_changed_exemption_object_rejudges_its_namespace() {
        let posture: SharedPosture = Arc::new(RwLock::new(PostureIndex::default()));
        let mut engine = Engine::new(Arc::new(Config::default()));
        engine.apply(host_network_deployment());
        engine.judge(&posture);
        assert!(!engine.has_work());
        let e: crate::exemption::MeshExemption = crate::strict::from_value(json!({
            "metadata": {"name": "agent", "namespace": "shop", "generation": 1},
            "spec": {"rules": ["no-host-network"], "match": {"names": ["agent"]},
                     "reason": "node agent reads host interfaces", "expires": "2999-01-01T00:00:00Z"}
        }))
        .unwrap();
        posture.write().exemptions.apply_namespaced(&e);
        tick(&mut engine, &posture, Timestamp::now());
        assert!(engine.has_work());
        engine.judge(&posture);
        assert_eq!(exempted(&engine), 1);
        // Its own status write (same generation) changes nothing.
        posture.write().exemptions.apply_namespaced(&e);
        tick(&mut engine, &posture, Timestamp::now());
        assert!(!engine.has_work());
    }
}
