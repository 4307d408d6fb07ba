//! `/validate`'s decision: the decoded subject (see [`super::decode`])
//! judged against the cached posture, and a denial that rests on that cache
//! confirmed against the API server.

use kube::core::admission::AdmissionResponse;

use crate::config::WhileSyncing;
use crate::policy::{self, Decision};
use crate::posture::confirm::ConfirmError;
use crate::posture::PostureIndex;
use crate::rules::{self, Context};
use crate::subject::{Kind, Object};

use super::decode::{refuse, Judged, Subject};
use super::{response, review, Record, Reviewer};

impl Reviewer {
    /// The answer to a review: its subject judged against the cached
    /// posture, a denial on it confirmed against the API server. What the
    /// decision was (violations, exemptions, what the answer cut) goes
    /// into `record`.
    pub(super) async fn decide(
        &self,
        req: &review::Request<'_>,
        subject: Judged,
        record: &mut Record,
    ) -> AdmissionResponse {
        // Exemption objects are checked and logged, not judged.
        if let Some(kind) = crate::admission::exemption::kind_of(req) {
            let now = k8s_openapi::jiff::Timestamp::now();
            return crate::admission::exemption::review(req, kind, &self.config, now);
        }
        let subject = match subject {
            Ok(Some(subject)) => subject,
            Ok(None) => return response::allow(&req.uid),
            Err((kind, why)) => return refuse(req, kind, &why),
        };
        record.locate(&subject.object);
        if let Some(response) = self.while_syncing(&req.uid, subject.kind, &subject.object) {
            return response;
        }
        let cached = {
            let posture = self.posture.read();
            let decision = self.judge(&subject, &posture);
            // `status.lastApplied` of exemption objects.
            let now = k8s_openapi::jiff::Timestamp::now();
            crate::report::exemption_status::record_applied(&posture, &decision.exempted, now);
            decision
        };
        let (decision, unverified) = match self.to_confirm(&subject, &cached) {
            // Boxed: its future (an API request) is large, and would
            // otherwise be part of, and copied with, every review's.
            Some(namespaces) => {
                Box::pin(self.confirm(&req.uid, &subject, namespaces, cached)).await
            }
            None => (cached, false),
        };
        record.violations = decision
            .denied
            .iter()
            .chain(decision.warned.iter().map(|w| &w.judged))
            .map(|j| (j.finding.rule, j.mode))
            .collect();
        record.exempted = decision.exempted.iter().map(|e| e.rule).collect();
        let response = response::from_decision(
            &req.uid,
            &subject.object.to_string(),
            &decision,
            &mut record.omitted,
        );
        if unverified {
            self.unverified(&subject.object, response)
        } else {
            response
        }
    }

    /// The namespaces whose policies are re-read from the API server before
    /// the cached decision on a workload is sent: when it denies on posture,
    /// or when a watch is down and the cache may be behind (see the
    /// reflector). `None` when the cached decision stands as it is.
    fn to_confirm(&self, subject: &Subject, cached: &Decision) -> Option<[String; 2]> {
        self.confirmer.as_ref()?;
        let stale = self.sync.as_ref().is_some_and(|s| s.is_stale())
            && !self.config.is_exempt_namespace(subject.object.namespace());
        let on_posture = cached.denied.iter().any(|j| j.finding.rule.reads_posture());
        (subject.kind.is_workload() && (stale || on_posture)).then(|| {
            [
                subject.object.namespace().to_owned(),
                self.config.mesh_root_namespace.clone(),
            ]
        })
    }

    /// Re-judges the subject against the policies the API server holds right
    /// now. On timeout or error a cached denial stands, and a cached allow
    /// is unverified (the `bool`). The lines logged here name the `uid` as
    /// well as their span, as the decision line does, so a search by uid
    /// finds them without span support.
    async fn confirm(
        &self,
        uid: &str,
        subject: &Subject,
        namespaces: [String; 2],
        cached: Decision,
    ) -> (Decision, bool) {
        let Some(confirmer) = &self.confirmer else {
            return (cached, false);
        };
        let fresh = match confirmer.read(&namespaces).await {
            Ok(fresh) => fresh,
            Err(error) => {
                let stands = cached_stands(uid, &cached, &error);
                return (cached, !stands);
            }
        };
        let confirmed = {
            let overlay = self.posture.read().overlay(fresh);
            self.judge(subject, &overlay)
        };
        let overturned = confirmed.allowed() != cached.allowed();
        tracing::info!(
            uid,
            overturned,
            "posture denial confirmed against the API server"
        );
        (confirmed, false)
    }

    /// A workload allowed from a cache whose watch is down, which could not
    /// be confirmed against the API server either: answered per
    /// `whileSyncing`, like a review before the caches first synced.
    fn unverified(&self, object: &Object, mut response: AdmissionResponse) -> AdmissionResponse {
        let why = format!(
            "meshgate lost its watch of the API server and cannot read the current mesh policies, so {object} cannot be verified"
        );
        match self.config.while_syncing {
            WhileSyncing::Deny => {
                response::deny(&response.uid, 403, &format!("{why}; retry shortly"))
            }
            WhileSyncing::Allow => {
                response.warnings.get_or_insert_with(Vec::new).push(format!(
                    "[meshgate] {why}; admitted unverified (whileSyncing: allow)"
                ));
                response
            }
        }
    }

    /// While the caches fill after start-up, reviews that need the posture
    /// are answered per `whileSyncing`, saying why.
    fn while_syncing(&self, uid: &str, kind: Kind, object: &Object) -> Option<AdmissionResponse> {
        let sync = self.sync.as_ref()?;
        let needs_posture = !matches!(
            kind,
            Kind::Namespace | Kind::DestinationRule | Kind::Sidecar
        );
        if sync.is_ready() || !needs_posture || self.config.is_exempt_namespace(object.namespace())
        {
            return None;
        }
        let why = format!(
            "meshgate has not finished loading the cluster's mesh posture since it started, so {object} cannot be verified yet"
        );
        Some(match self.config.while_syncing {
            WhileSyncing::Deny => {
                response::deny(uid, 403, &format!("{why}; retry in a few seconds"))
            }
            WhileSyncing::Allow => {
                let mut allowed = response::allow(uid);
                allowed.warnings = Some(vec![format!(
                    "[meshgate] {why}; admitted unverified (whileSyncing: allow)"
                )]);
                allowed
            }
        })
    }

    fn judge(&self, subject: &Subject, posture: &PostureIndex) -> Decision {
        let ctx = Context {
            posture,
            config: &self.config,
            operation: subject.operation(),
            // Exemptions apply strictly before `expires`.
            now: k8s_openapi::jiff::Timestamp::now(),
        };
        let new = policy::judge(&subject.object, &ctx);
        // The old object is judged as if created, so only what it already
        // violated counts as pre-existing.
        let old = subject.old.as_ref().map(|o| {
            policy::judge(
                o,
                &Context {
                    operation: rules::Operation::Create,
                    ..ctx
                },
            )
        });
        Decision::from_judgements(new, old.as_ref())
    }
}

/// Whether the cached decision stands when it cannot be confirmed: a
/// denial does; an allow from a cache whose watch is down does not.
fn cached_stands(uid: &str, cached: &Decision, error: &ConfirmError) -> bool {
    if cached.allowed() {
        tracing::warn!(uid, %error, "cannot confirm an allow from a stale cache");
        false
    } else {
        tracing::warn!(uid, %error, "cannot confirm the denial; the cached posture stands");
        true
    }
}

#[cfg(test)]
mod tests;
