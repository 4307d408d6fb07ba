//! Whether `/mutate` patches a pod: only pod CREATEs, only in enrolled
//! namespaces (with a sidecar to fill the volume when it is the source), per
//! the rule's mode and exemptions. The patch itself is [`super::plan`]'s.

use kube::core::admission::{AdmissionResponse, Operation};

use crate::config::{CertificateSource, Mode};
use crate::injection;
use crate::policy;
use crate::rules::{self, Context, RuleId};
use crate::subject::{Kind, Object, Workload};

use super::super::decode::{refuse, Judged};
use super::super::{response, review, Record, Reviewer};
use super::Outcome;

/// The answer to a `/mutate` review: always an allow, with a patch when one
/// is due. A pod CREATE that cannot be read is refused, as on /validate: an
/// allow here would let it through where /validate is not installed.
pub(in crate::admission) fn review(
    reviewer: &Reviewer,
    req: &review::Request,
    subject: Judged,
    record: &mut Record,
) -> AdmissionResponse {
    let allow = response::allow(&req.uid);
    let is_pod_create = record.kind == Some(Kind::Pod)
        && req.operation == Operation::Create
        && req.sub_resource.as_deref().is_none_or(str::is_empty);
    if !is_pod_create {
        return allow;
    }
    // A pod CREATE is judged: its object was decoded with the request.
    let object = match subject {
        Ok(Some(subject)) => subject.object,
        Ok(None) => return allow,
        Err((kind, why)) => return refuse(req, kind, &why),
    };
    let Object::Workload(pod) = &object else {
        return allow;
    };
    record.locate(&object);
    let (outcome, response) = mount(reviewer, &object, pod, record, allow);
    record.mutation = Some(outcome);
    response
}

/// Mounts the workload certificates into `pod`, or says why not.
/// The pod's namespace is enrolled and, for the sidecar source, the pod
/// will have a sidecar.
fn eligible(
    posture: &crate::posture::PostureIndex,
    settings: &crate::config::WorkloadCertificates,
    pod: &Workload,
) -> bool {
    posture.namespace(&pod.namespace).is_some_and(|ns| {
        ns.is_enrolled()
            && (settings.source != CertificateSource::Sidecar
                || injection::will_have_sidecar(pod, ns))
    })
}

fn mount(
    reviewer: &Reviewer,
    object: &Object,
    pod: &Workload,
    record: &mut Record,
    allow: AdmissionResponse,
) -> (Outcome, AdmissionResponse) {
    let config = &reviewer.config;
    let settings = &config.workload_certificates;
    let rule = RuleId::WorkloadCertificates;
    let posture = reviewer.posture.read();
    let ctx = Context {
        posture: &posture,
        config,
        operation: rules::Operation::Create,
        now: k8s_openapi::jiff::Timestamp::now(),
    };
    let eligible = eligible(&posture, settings, pod);
    let mode = policy::mode(&ctx, rule, object);
    if !eligible || mode == Mode::Off {
        return (Outcome::Skipped, allow);
    }
    if policy::exemption(&ctx, rule, object).is_some() {
        record.exempted.push(rule);
        return (Outcome::Exempted, allow);
    }
    drop(posture);
    let plan = super::plan(pod, settings);
    let mut response = allow;
    let mut warnings = plan.warnings;
    let outcome = if mode == Mode::Audit {
        if !plan.operations.is_empty() {
            warnings.push(format!(
                "[meshgate audit] {object}: workload-certificates: would get volume \"{}\" mounted at {} (audit mode: not patched)",
                settings.volume_name, settings.mount_path
            ));
        }
        Outcome::Audit
    } else {
        if !plan.operations.is_empty() {
            match response
                .clone()
                .with_patch(json_patch::Patch(plan.operations))
            {
                Ok(patched) => response = patched,
                Err(error) => {
                    tracing::error!(%error, "cannot serialize the patch; admitting unchanged")
                }
            }
        }
        plan.outcome
    };
    if !warnings.is_empty() {
        response.warnings = Some(response::bounded_warnings(warnings, &mut record.omitted));
    }
    (outcome, response)
}
