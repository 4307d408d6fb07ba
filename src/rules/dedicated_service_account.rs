//! `dedicated-service-account`: Istio derives a workload's SPIFFE identity
//! from its service account. Workloads on `default` share one identity, so
//! AuthorizationPolicies cannot tell them apart.

use super::native_form::{NativeCheck, NativeRule, Target};
use crate::rules::{Context, Finding, RuleId};
use crate::subject::Workload;

pub fn check(w: &Workload, _ctx: &Context) -> Vec<Finding> {
    // `serviceAccount` is the deprecated alias the API server still honours.
    let account = w
        .spec
        .service_account_name
        .as_deref()
        .or(w.spec.service_account.as_deref())
        .filter(|sa| !sa.is_empty());
    if account.is_some_and(|sa| sa != "default") {
        return vec![];
    }
    let how = if account.is_some() {
        "sets serviceAccountName: default"
    } else {
        "sets no serviceAccountName"
    };
    vec![Finding::new(
        RuleId::DedicatedServiceAccount,
        format!(
            "{how}, so it shares the identity spiffe://<trust-domain>/ns/{}/sa/default with every other such workload",
            w.namespace
        ),
        format!(
            "create a ServiceAccount for this workload in \"{}\" and set spec.serviceAccountName",
            w.namespace
        ),
    )]
}

/// The CEL form (`crate::native`): `serviceAccountName`, else the alias.
pub const NATIVE: NativeRule = NativeRule {
    target: Target::Workloads,
    variables: &[(
        "account",
        "variables.spec.?serviceAccountName.orValue(variables.spec.?serviceAccount.orValue(''))",
    )],
    config: None,
    checks: &[NativeCheck {
        expression: "!(variables.account in ['', 'default'])",
        message: "(variables.account == '' ? 'sets no serviceAccountName' : 'sets serviceAccountName: default') + ', so it shares the identity spiffe://<trust-domain>/ns/' + request.namespace + '/sa/default with every other such workload'",
        fix: "'create a ServiceAccount for this workload in \"' + request.namespace + '\" and set spec.serviceAccountName'",
        advisory: false,
    }],
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::*;

    #[test]
    fn rejects_missing_and_default_service_account() {
        let world = World::enrolled_shop();
        for sa in [None, Some("default"), Some("")] {
            let f = check(&deployment("web").service_account(sa), &world.ctx());
            assert_eq!(rule_ids(&f), [RuleId::DedicatedServiceAccount], "{sa:?}");
        }
        let f = check(&deployment("web").service_account(None), &world.ctx());
        assert!(f[0].message.contains("sets no serviceAccountName"));
    }

    #[test]
    fn accepts_dedicated_service_account_and_the_deprecated_alias() {
        let world = World::enrolled_shop();
        assert!(check(
            &deployment("web").service_account(Some("web")),
            &world.ctx()
        )
        .is_empty());
        let mut alias = deployment("web").service_account(None);
        alias.spec.service_account = Some("web".into());
        assert!(check(&alias, &world.ctx()).is_empty());
    }
}
