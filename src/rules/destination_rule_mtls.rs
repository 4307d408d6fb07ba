//! `destination-rule-mtls`: client-side TLS settings override Istio's
//! automatic mTLS. DISABLE sends plaintext; SIMPLE and MUTUAL replace the
//! workload's mesh identity with other certificates. To an in-mesh host the
//! mode must stay ISTIO_MUTUAL (or be left out); TLS origination to hosts
//! outside the mesh is none of this rule's business.
//!
//! "In the mesh" is read from the cluster state, not guessed from the name:
//! a Service host is in the mesh when its namespace is enrolled (sidecar or
//! ambient), any other host when a MESH_INTERNAL ServiceEntry declares it.

use crate::istio::{
    ClientTls, ClientTlsMode, DestinationRule, Location, ServiceEntry, TrafficPolicy,
};
use crate::posture::PostureIndex;
use crate::rules::{Context, Finding, RuleId};

const ID: RuleId = RuleId::DestinationRuleMtls;

pub fn check(dr: &DestinationRule, ctx: &Context) -> Vec<Finding> {
    let host = dr.spec.host.as_str();
    let namespace = dr.metadata.namespace.as_deref().unwrap_or_default();
    let Some(why) = in_mesh(host, namespace, ctx) else {
        return vec![];
    };
    let mut findings = Vec::new();
    let mut check_policy = |policy: &TrafficPolicy, place: &str| {
        let mut check_tls = |tls: &Option<ClientTls>, at: String| {
            let Some(mode) = tls.as_ref().and_then(|t| t.mode) else {
                return;
            };
            // MUTUAL counts too: its own client certificate replaces the
            // workload's SPIFFE identity, which the server's STRICT sidecar
            // and principal-based AuthorizationPolicies rely on.
            if mode != ClientTlsMode::IstioMutual {
                let setting = match mode {
                    ClientTlsMode::Unknown => format!("{at}tls.mode to {}", mode.as_str()),
                    _ => format!("{at}tls.mode: {}", mode.as_str()),
                };
                findings.push(Finding::new(
                    ID,
                    format!("sets {setting} for in-mesh host {host} ({why}), replacing the mesh's mTLS"),
                    format!("set {at}tls.mode: ISTIO_MUTUAL, or remove it to keep Istio's automatic mTLS"),
                ));
            }
        };
        check_tls(&policy.tls, format!("{place}trafficPolicy."));
        for (i, port) in policy.port_level_settings.iter().enumerate() {
            let number = port
                .port
                .as_ref()
                .and_then(|p| p.number)
                .map(|n| format!(" (port {n})"))
                .unwrap_or_default();
            check_tls(
                &port.tls,
                format!("{place}trafficPolicy.portLevelSettings[{i}]{number}."),
            );
        }
    };
    if let Some(policy) = &dr.spec.traffic_policy {
        check_policy(policy, "");
    }
    for subset in &dr.spec.subsets {
        if let Some(policy) = &subset.traffic_policy {
            check_policy(policy, &format!("subset {} ", subset.name));
        }
    }
    findings
}

/// What a DestinationRule host names, as far as Kubernetes Services go.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    /// Services of one namespace.
    Namespace(String),
    /// Services of every namespace: `*`, `*.svc.cluster.local`, `*.local`.
    AllNamespaces,
    /// Not a Service name: only a ServiceEntry can put it in the mesh.
    Other,
}

/// Resolves `host` as Istio does: a short name (`reviews`) lives in the
/// rule's namespace; `reviews.shop.svc.<clusterDomain>`, `reviews.shop.svc`
/// and `reviews.shop` (when `shop` is a namespace) in `shop`.
fn target(host: &str, dr_namespace: &str, cluster_domain: &str, posture: &PostureIndex) -> Target {
    if host == "*" {
        return Target::AllNamespaces;
    }
    if !host.contains('.') {
        return Target::Namespace(dr_namespace.to_owned());
    }
    let svc_domain = format!(".svc.{cluster_domain}");
    if let Some(rest) = host
        .strip_suffix(svc_domain.as_str())
        .or_else(|| host.strip_suffix(".svc"))
    {
        let namespace = rest.rsplit_once('.').map_or(rest, |(_, ns)| ns);
        return match namespace {
            "*" => Target::AllNamespaces,
            ns => Target::Namespace(ns.to_owned()),
        };
    }
    // `*.local` and `*.cluster.local` cover every Service.
    if host
        .strip_prefix('*')
        .is_some_and(|suffix| svc_domain.ends_with(suffix))
    {
        return Target::AllNamespaces;
    }
    match host.split_once('.') {
        Some((_, ns)) if !ns.contains('.') && posture.namespace(ns).is_some() => {
            Target::Namespace(ns.to_owned())
        }
        _ => Target::Other,
    }
}

/// Why `host` is in the mesh, or `None` when it is not. A namespace meshgate
/// does not know counts as in the mesh: refusing a plaintext rule that
/// might be harmless is safer than letting one through that is not.
fn in_mesh(host: &str, dr_namespace: &str, ctx: &Context) -> Option<String> {
    let host = normalise(host);
    let posture = ctx.posture;
    match target(&host, dr_namespace, &ctx.config.cluster_domain, posture) {
        Target::Namespace(ns) => match posture.namespace(&ns) {
            Some(info) if info.is_enrolled() => {
                return Some(format!("namespace {ns} is in the mesh"))
            }
            None => {
                return Some(format!(
                    "namespace {ns} is unknown, so counted as in the mesh"
                ))
            }
            Some(_) => {}
        },
        Target::AllNamespaces => {
            // Name the rule's own namespace when it can, else the first.
            let own = posture
                .namespace(dr_namespace)
                .filter(|info| info.is_enrolled())
                .map(|_| dr_namespace);
            let enrolled = own.or_else(|| {
                posture
                    .namespaces()
                    .filter(|(_, info)| info.is_enrolled())
                    .map(|(name, _)| name)
                    .min()
            });
            if let Some(ns) = enrolled {
                return Some(format!("it covers namespace {ns}, which is in the mesh"));
            }
            if posture.namespace_count() == 0 {
                return Some("it covers every namespace, none of them known".into());
            }
        }
        Target::Other => {}
    }
    mesh_internal_entry(&host, posture).map(|se| {
        format!(
            "ServiceEntry {}/{} declares it MESH_INTERNAL",
            se.metadata.namespace.as_deref().unwrap_or_default(),
            se.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The first (by namespace and name) MESH_INTERNAL ServiceEntry with a host
/// overlapping `host`; MESH_EXTERNAL, the default, never puts a host in.
fn mesh_internal_entry<'a>(host: &str, posture: &'a PostureIndex) -> Option<&'a ServiceEntry> {
    posture
        .service_entries
        .all()
        .filter(|se| se.spec.location == Location::MeshInternal)
        .filter(|se| se.spec.hosts.iter().any(|h| overlaps(host, &normalise(h))))
        .min_by_key(|se| (se.metadata.namespace.clone(), se.metadata.name.clone()))
}

fn normalise(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Istio host matching, both ways: `*.example.com` and `db.example.com`
/// overlap, and so do two wildcards when one's suffix ends the other.
fn overlaps(a: &str, b: &str) -> bool {
    let covers = |pattern: &str, host: &str| {
        pattern == "*"
            || pattern
                .strip_prefix('*')
                .is_some_and(|suffix| host.ends_with(suffix))
    };
    a == b || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::testing::{messages, namespace, object, World};
    use serde_json::json;

    /// shop (sidecar) and payments (ambient) are in the mesh; databases and
    /// legacy (injection disabled) are not.
    fn cluster() -> World {
        let mut world = World::with_namespaces(&[
            namespace("shop", &[("istio-injection", "enabled")]),
            namespace("payments", &[("istio.io/dataplane-mode", "ambient")]),
            namespace("databases", &[]),
            namespace("legacy", &[("istio-injection", "disabled")]),
        ]);
        world.posture.service_entries.apply(object(
            "shop",
            "vm-inventory",
            json!({"hosts": ["inventory.vms.internal"], "location": "MESH_INTERNAL", "resolution": "STATIC",
                   "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}]}),
        ));
        world.posture.service_entries.apply(object(
            "databases",
            "orders-db",
            json!({"hosts": ["orders.db.example.com"], "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
                   "resolution": "DNS"}),
        ));
        world
    }

    /// The findings on DestinationRule shop/r with `spec`.
    fn findings(world: &World, spec: serde_json::Value) -> Vec<Finding> {
        check(&object("shop", "r", spec), &world.ctx())
    }

    fn why(world: &World, host: &str) -> Option<String> {
        in_mesh(host, "shop", &world.ctx())
    }

    #[test]
    fn hosts_in_enrolled_namespaces_are_in_the_mesh_in_every_spelling() {
        let world = cluster();
        for host in [
            "reviews",
            "reviews.shop",
            "reviews.shop.svc",
            "reviews.shop.svc.cluster.local",
            "Reviews.Shop.svc.cluster.local.",
            "*.shop.svc.cluster.local",
            "*.shop.svc",
        ] {
            assert_eq!(
                why(&world, host).as_deref(),
                Some("namespace shop is in the mesh"),
                "{host}"
            );
        }
        assert_eq!(
            why(&world, "ledger.payments.svc.cluster.local").as_deref(),
            Some("namespace payments is in the mesh")
        );
        for host in [
            "*",
            "*.svc.cluster.local",
            "*.cluster.local",
            "*.local",
            "*.svc",
        ] {
            assert_eq!(
                why(&world, host).as_deref(),
                Some("it covers namespace shop, which is in the mesh"),
                "{host}"
            );
            assert_eq!(
                in_mesh(host, "databases", &world.ctx()).as_deref(),
                Some("it covers namespace payments, which is in the mesh"),
                "{host}"
            );
        }
    }

    #[test]
    fn hosts_outside_enrolled_namespaces_are_not() {
        let world = cluster();
        for host in [
            "postgres.databases.svc.cluster.local",
            "postgres.databases",
            "*.databases.svc.cluster.local",
            "web.legacy.svc",
            "api.stripe.com",
            "*.example.com",
            "orders.db.example.com",
            "reviews.shop.svc.other.domain",
        ] {
            assert_eq!(why(&world, host), None, "{host}");
        }
        // `*` covers MESH_INTERNAL hosts too, but only MESH_EXTERNAL ones here.
        let mut world = World::with_namespaces(&[namespace("databases", &[])]);
        world.posture.service_entries = cluster().posture.service_entries;
        assert!(why(&world, "*").is_some());
        world.posture.service_entries.delete("shop", "vm-inventory");
        assert_eq!(why(&world, "*"), None);
    }

    #[test]
    fn mesh_internal_service_entries_put_their_hosts_in_the_mesh() {
        let world = cluster();
        let internal = Some("ServiceEntry shop/vm-inventory declares it MESH_INTERNAL".to_owned());
        assert_eq!(why(&world, "inventory.vms.internal"), internal);
        assert_eq!(why(&world, "*.vms.internal"), internal);
        assert_eq!(why(&world, "*.internal"), internal);
        assert_eq!(why(&world, "other.vms.internal"), None);
        let mut world = cluster();
        world.posture.service_entries.apply(object(
            "databases",
            "mesh-db",
            json!({"hosts": ["*.db.example.com"], "location": "MESH_INTERNAL"}),
        ));
        assert_eq!(
            why(&world, "orders.db.example.com").as_deref(),
            Some("ServiceEntry databases/mesh-db declares it MESH_INTERNAL")
        );
        // A MESH_INTERNAL entry can also vouch for a host of a namespace out of the mesh.
        world.posture.service_entries.apply(object(
            "databases",
            "pg",
            json!({"hosts": ["postgres.databases.svc.cluster.local"], "location": "MESH_INTERNAL"}),
        ));
        assert!(why(&world, "postgres.databases.svc.cluster.local").is_some());
    }

    #[test]
    fn unknown_namespaces_count_as_in_the_mesh() {
        let world = cluster();
        assert_eq!(
            why(&world, "reviews.bookinfo.svc.cluster.local").as_deref(),
            Some("namespace bookinfo is unknown, so counted as in the mesh")
        );
        let empty = World::with_namespaces(&[]);
        assert!(why(&empty, "reviews").is_some());
        assert!(why(&empty, "*").is_some());
        // Two labels name a namespace only when it exists.
        assert_eq!(why(&empty, "reviews.bookinfo"), None);
    }

    #[test]
    fn the_cluster_domain_is_configurable() {
        let mut world = cluster();
        world.config = crate::config::Config::from_yaml("clusterDomain: corp.internal\n").unwrap();
        assert!(why(&world, "reviews.shop.svc.corp.internal").is_some());
        assert_eq!(why(&world, "reviews.shop.svc.cluster.local"), None);
    }

    #[test]
    fn rejects_disable_simple_mutual_at_every_level() {
        let world = World::enrolled_shop();
        let f = findings(
            &world,
            json!({
                "host": "reviews.bookinfo.svc.cluster.local",
                "trafficPolicy": {"tls": {"mode": "DISABLE"}, "portLevelSettings": [{"port": {"number": 9080}, "tls": {"mode": "SIMPLE"}}]},
                "subsets": [{"name": "v2", "trafficPolicy": {"tls": {"mode": "MUTUAL"}}}, {"name": "v3", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}}]
            }),
        );
        assert_eq!(f.len(), 3);
        assert!(f[0].message.contains("sets trafficPolicy.tls.mode: DISABLE for in-mesh host reviews.bookinfo.svc.cluster.local"), "{}", f[0].message);
        assert!(
            f[1].message
                .contains("portLevelSettings[0] (port 9080).tls.mode: SIMPLE"),
            "{}",
            f[1].message
        );
        assert!(
            f[2].message
                .contains("subset v2 trafficPolicy.tls.mode: MUTUAL"),
            "{}",
            f[2].message
        );
    }

    #[test]
    fn a_mode_istio_does_not_define_is_weak_not_a_pass() {
        let world = World::enrolled_shop();
        let f = findings(
            &world,
            json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL_PLEASE"}}}),
        );
        assert_eq!(messages(&f), ["sets trafficPolicy.tls.mode to a value Istio does not define for in-mesh host reviews (namespace shop is in the mesh), replacing the mesh's mTLS"]);
    }

    #[test]
    fn says_why_the_host_is_in_the_mesh() {
        let world = cluster();
        let f = findings(
            &world,
            json!({"host": "inventory.vms.internal", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].message,
            "sets trafficPolicy.tls.mode: SIMPLE for in-mesh host inventory.vms.internal (ServiceEntry shop/vm-inventory declares it MESH_INTERNAL), replacing the mesh's mTLS"
        );
    }

    #[test]
    fn accepts_istio_mutual_no_tls_and_tls_origination_outside_the_mesh() {
        let world = cluster();
        let ok = |spec: serde_json::Value| findings(&world, spec).is_empty();
        assert!(ok(
            json!({"host": "reviews", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
        ));
        assert!(ok(json!({"host": "reviews"})));
        assert!(ok(json!({"host": "reviews", "trafficPolicy": {"tls": {}}})));
        assert!(ok(
            json!({"host": "api.stripe.com", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}})
        ));
        assert!(ok(
            json!({"host": "orders.db.example.com", "trafficPolicy": {"tls": {"mode": "MUTUAL", "credentialName": "orders-db-client"}}})
        ));
        assert!(ok(
            json!({"host": "postgres.databases.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}})
        ));
    }
}
