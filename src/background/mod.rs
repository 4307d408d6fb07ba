//! Background audit: judges what already runs, not only what is applied.
//!
//! ```text
//! one watch per kind (crate::watch: objects trimmed on arrival; the posture
//!     │ index is fed first, then this engine)
//!     │ Change
//!     ▼
//! engine: objects by key ─ dirty keys / dirty namespaces ─▶ policy::judge
//!     │ (Operation::Create, shared posture index, config modes/exemptions)
//!     ▼
//! Snapshot (watch channel) ─▶ posture metrics, report writers
//! ```
//!
//! A change to an object re-judges that object; a change to what a verdict
//! rests on (a namespace, its PeerAuthentications, AuthorizationPolicies,
//! DestinationRules, Sidecars) re-judges the whole namespace, and one in the
//! mesh root namespace the whole mesh. Changes are debounced and a full
//! re-judge runs every `backgroundAudit.interval` as a safety net. The
//! posture index and the engine are fed by the same watch, the index first,
//! so a pass never reads a posture older than the changes it judges.
//!
//! Owned objects are reported through their controller (see [`engine`]).

pub mod engine;
pub mod exemptions;
pub mod feed;
pub mod metrics;
pub mod runner;
mod stored;

/// The projection moved to the shared watch layer, which trims on arrival.
pub use crate::watch::projection;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::policy::Judgement;
use crate::subject::Kind;

pub use engine::{Change, Engine};

/// The object a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: Kind,
    /// Empty for cluster-scoped objects (Namespaces).
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One object's judgement, as the webhook would give it on creation.
#[derive(Debug, Clone, PartialEq)]
///
/// Both parts are shared with the engine's stored object (`Arc`) rather
/// than copied: at scale there are tens of thousands of verdicts.
pub struct Verdict {
    pub object: Arc<ObjectRef>,
    pub judgement: Arc<Judgement>,
    /// Reported through its controller: `judgement` holds only what the
    /// owner does not report, so the rest is neither pass nor fail here.
    pub through_owner: bool,
}

/// Every reported verdict at one moment. Cheap to clone: the map is shared.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bumped whenever a verdict changed.
    pub generation: u64,
    /// Every cache has synced and everything in it has been judged once.
    pub complete: bool,
    /// By object key (`Kind/namespace/name`).
    pub verdicts: Arc<BTreeMap<String, Arc<Verdict>>>,
    /// The earliest `status.notAfter` among the Certificates seen, in Unix
    /// seconds.
    pub earliest_certificate_expiry: Option<i64>,
}

/// The engine's results, as a report writer or the metrics read them.
#[derive(Debug, Clone)]
pub struct Results {
    receiver: watch::Receiver<Arc<Snapshot>>,
    /// For results that never change: keeps `changed()` waiting rather than
    /// reporting a stopped engine.
    _fixed: Option<Arc<watch::Sender<Arc<Snapshot>>>>,
}

impl Results {
    pub fn new(receiver: watch::Receiver<Arc<Snapshot>>) -> Self {
        Results {
            receiver,
            _fixed: None,
        }
    }

    pub fn fixed(
        receiver: watch::Receiver<Arc<Snapshot>>,
        sender: watch::Sender<Arc<Snapshot>>,
    ) -> Self {
        Results {
            receiver,
            _fixed: Some(Arc::new(sender)),
        }
    }

    /// The latest results (an `Arc` clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.receiver.borrow().clone()
    }

    /// Resolves when the results change; `Err` once the engine stopped.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.receiver.changed().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn background_audit_is_on_by_default_and_configurable() {
        let config = Config::from_yaml("").unwrap();
        assert!(config.background_audit.enabled);
        assert_eq!(config.background_audit.interval, Duration::from_secs(600));

        let config =
            Config::from_yaml("backgroundAudit: {enabled: false, interval: 2m}\n").unwrap();
        assert!(!config.background_audit.enabled);
        assert_eq!(config.background_audit.interval, Duration::from_secs(120));
    }

    #[test]
    fn background_audit_settings_are_validated() {
        let err = |yaml: &str| Config::from_yaml(yaml).unwrap_err().to_string();
        assert!(err("backgroundAudit: {interval: 1s}\n").contains("backgroundAudit.interval"));
        assert!(err("backgroundAudit: {interval: soon}\n").contains("backgroundAudit.interval"));
        assert!(err("backgroundAudit: {every: 1m}\n").contains("every"));
    }
}
