//! The CEL of the certificate-mount policy. Each variable mirrors one
//! decision of `/mutate`; the names say which.

use crate::admission::mutate::{MARKER, PROXY_CONFIG, USER_VOLUME_MOUNT};
use crate::config::CertificateSource;

use super::{pointer_token, quote};

/// An `istio-proxy` that runs beside the application: a container, or a
/// native sidecar (an init container with `restartPolicy: Always`).
const PROXY: &str = "c.name == 'istio-proxy'";
const NATIVE_PROXY: &str =
    "c.name == 'istio-proxy' && has(c.restartPolicy) && c.restartPolicy == 'Always'";

/// `crate::injection`'s proxy model: what the pod will run with once
/// Istio's injector has seen it (`expected(..) == Proxy::Sidecar`).
const SIDECAR_DECISION: &[(&str, &str)] = &[
    ("sidecarNs", "'istio-injection' in variables.ns ? variables.ns['istio-injection'] == 'enabled' : 'istio.io/rev' in variables.ns"),
    ("nativeSidecar", "has(object.spec.initContainers) && object.spec.initContainers.exists(c, has(c.restartPolicy) && c.restartPolicy == 'Always')"),
    ("gateway", "object.spec.containers.size() == 1 && !variables.nativeSidecar && object.spec.containers.all(c, \
        (c.name == 'istio-proxy' && (!has(c.command) || c.command.size() == 0 || (c.command.size() == 1 && (c.command[0] == 'pilot-agent' || c.command[0].endsWith('/pilot-agent')))) \
          && has(c.args) && c.args.size() >= 2 && c.args[0] == 'proxy' && c.args[1] in ['router', 'waypoint']) \
        || (c.name == 'agentgateway' && (!has(c.command) || c.command.size() == 0 || (c.command.size() == 1 && (c.command[0] == 'agentgateway' || c.command[0].endsWith('/agentgateway')))) \
          && has(c.args) && c.args.size() >= 1 && c.args[0] == '--config'))"),
    ("marked", "'sidecar.istio.io/status' in variables.annotations"),
    ("templates", "'inject.istio.io/templates' in variables.annotations ? variables.annotations['inject.istio.io/templates'].split(',').map(t, t.trim()).filter(t, t != '') : []"),
    ("tpl", "variables.templates.size() == 0 ? ['sidecar'] : variables.templates"),
    ("proxyless", "variables.tpl.exists(t, t in ['grpc-simple', 'grpc-agent'])"),
    ("gatewayTpl", "'gateway' in variables.tpl && !('sidecar' in variables.tpl)"),
    ("onlyProxy", "object.spec.containers.size() > 0 && object.spec.containers.all(c, c.name == 'istio-proxy')"),
    ("offPath", "variables.proxyless || (variables.gatewayTpl && !variables.onlyProxy)"),
    ("hasProxy", "object.spec.containers.exists(c, c.name == 'istio-proxy') || (has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == 'istio-proxy' && has(c.restartPolicy) && c.restartPolicy == 'Always'))"),
    ("hasInit", "has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == 'istio-init')"),
    ("carriedOther", "variables.gateway || (variables.marked && variables.offPath)"),
    ("carriedSidecar", "!variables.carriedOther && variables.hasProxy && (variables.marked || variables.hasInit)"),
    // The label wins over the annotation; a non-empty value that is not a
    // YAML true opts out.
    ("optOut", "'sidecar.istio.io/inject' in variables.labels \
        ? (variables.labels['sidecar.istio.io/inject'] != '' && !(variables.labels['sidecar.istio.io/inject'].lowerAscii() in ['y', 'yes', 'true', 'on'])) \
        : ('sidecar.istio.io/inject' in variables.annotations && variables.annotations['sidecar.istio.io/inject'] != '' \
           && !(variables.annotations['sidecar.istio.io/inject'].lowerAscii() in ['y', 'yes', 'true', 'on']))"),
    ("injected", "!(has(object.spec.hostNetwork) && object.spec.hostNetwork) && (variables.sidecarNs ? !variables.optOut \
        : (!('istio-injection' in variables.ns) && !('istio.io/rev' in variables.ns) \
           && (('sidecar.istio.io/inject' in variables.labels && variables.labels['sidecar.istio.io/inject'] == 'true') \
               || ('istio.io/rev' in variables.labels && !variables.optOut))))"),
    ("sidecar", "variables.carriedSidecar || (!variables.carriedOther && !(variables.hasProxy && (variables.marked || variables.hasInit)) \
        && variables.injected && !variables.proxyless && !variables.gatewayTpl)"),
];

/// The enrolled-namespace test of `NamespaceInfo::is_enrolled`.
const ENROLLED: &str = "(variables.sidecarNs || (!('istio-injection' in variables.ns && variables.ns['istio-injection'] == 'disabled') \
    && 'istio.io/dataplane-mode' in variables.ns && variables.ns['istio.io/dataplane-mode'] == 'ambient'))";

pub(super) struct Cel<'a> {
    /// Quoted volume name and mount path.
    pub name: String,
    pub path: String,
    pub source: &'a CertificateSource,
}

impl Cel<'_> {
    fn sidecar_source(&self) -> bool {
        *self.source == CertificateSource::Sidecar
    }

    /// The proxy model's variables, which [`Self::eligible`] reads: the
    /// sidecar decision is only needed when the sidecar is the source.
    pub fn decision_variables(&self) -> Vec<(&'static str, String)> {
        let mut vars = vec![("sidecarNs", SIDECAR_DECISION[0].1.to_owned())];
        if self.sidecar_source() {
            vars.extend(
                SIDECAR_DECISION[1..]
                    .iter()
                    .map(|(n, e)| (*n, (*e).to_owned())),
            );
        }
        vars
    }

    /// Whether the webhook would patch at all (before conflicts).
    pub fn eligible(&self) -> String {
        if self.sidecar_source() {
            format!("{ENROLLED} && variables.sidecar")
        } else {
            ENROLLED.to_owned()
        }
    }

    /// A container already mounts the volume at the path.
    fn mounted(&self) -> String {
        let (name, path) = (&self.name, &self.path);
        format!("(has(c.volumeMounts) && c.volumeMounts.exists(m, m.name == {name} && m.mountPath == {path}))")
    }

    /// Something else is mounted at the path, or the volume elsewhere.
    fn mount_in_the_way(&self) -> String {
        let (name, path) = (&self.name, &self.path);
        format!("(!{} && has(c.volumeMounts) && c.volumeMounts.exists(m, m.name == {name} || m.mountPath == {path}))", self.mounted())
    }

    fn mount_absent(&self) -> String {
        let (name, path) = (&self.name, &self.path);
        format!("(!has(c.volumeMounts) || !c.volumeMounts.exists(m, m.name == {name} || m.mountPath == {path}))")
    }

    /// The same volume as `desired_volume` makes.
    fn same_volume(&self) -> String {
        match self.source {
            CertificateSource::Sidecar => "(has(v.emptyDir) && has(v.emptyDir.medium) && v.emptyDir.medium == 'Memory' && !has(v.emptyDir.sizeLimit))".into(),
            CertificateSource::Secret(secret) => format!(
                "(has(v.secret) && has(v.secret.secretName) && v.secret.secretName == {} && !has(v.secret.items) && !(has(v.secret.optional) && v.secret.optional))",
                quote(secret)
            ),
        }
    }

    /// The variables the patch reads: the sidecar decision, then what is
    /// missing and what is in the way.
    pub fn plan_variables(&self) -> Vec<(&'static str, String)> {
        let name = &self.name;
        let mut vars: Vec<(&'static str, String)> = Vec::new();
        vars.push(("volumeClash", format!("has(object.spec.volumes) && object.spec.volumes.exists(v, v.name == {name} && !{})", self.same_volume())));
        vars.push((
            "needVolume",
            format!(
                "!(has(object.spec.volumes) && object.spec.volumes.exists(v, v.name == {name}))"
            ),
        ));
        vars.push(("mountIdx", format!("object.spec.containers.filter(c, c.name != 'istio-proxy' && {}).map(c, object.spec.containers.indexOf(c))", self.mount_absent())));
        let mut needs = vec![
            "variables.needVolume".to_owned(),
            "variables.mountIdx.size() > 0".to_owned(),
        ];
        let mut conflict = "variables.volumeClash".to_owned();
        if self.sidecar_source() {
            vars.extend(self.proxy_variables());
            needs.extend(
                [
                    "variables.needEnv",
                    "variables.needProxyMount",
                    "variables.needCfg",
                    "variables.needUvm",
                ]
                .map(String::from),
            );
            conflict.push_str(" || (variables.proxyIn != '' ? (variables.envClash || variables.proxyMountClash) : (variables.cfgOther || variables.uvmOther))");
        }
        vars.push(("conflict", conflict));
        vars.push((
            "needMarker",
            format!(
                "({}) && !({} in variables.annotations)",
                needs.join(" || "),
                quote(MARKER)
            ),
        ));
        vars.push((
            "applies",
            "variables.eligible && !variables.exempt && !variables.conflict".into(),
        ));
        vars
    }

    /// Where `istio-proxy` is and what it lacks; without one, the two Istio
    /// annotations the injector reads.
    fn proxy_variables(&self) -> Vec<(&'static str, String)> {
        let path = &self.path;
        let on_proxy = |what: String| {
            format!("(variables.proxyIn == 'containers' ? object.spec.containers.exists(c, {PROXY} && {what}) \
                : variables.proxyIn == 'initContainers' && object.spec.initContainers.exists(c, {NATIVE_PROXY} && {what}))")
        };
        let annotation = |key: &str, value: String| {
            let key = quote(key);
            (
                format!("!({key} in variables.annotations) || variables.annotations[{key}].trim() == ''"),
                format!("!variables.{}Blank && variables.annotations[{key}] != {}", if key.contains("config") { "cfg" } else { "uvm" }, quote(&value)),
            )
        };
        let config = annotation(PROXY_CONFIG, self.config_annotation());
        let uvm = annotation(USER_VOLUME_MOUNT, self.uvm_annotation());
        vec![
            ("proxyIn", format!("object.spec.containers.exists(c, {PROXY}) ? 'containers' \
                : has(object.spec.initContainers) && object.spec.initContainers.exists(c, {NATIVE_PROXY}) ? 'initContainers' : ''")),
            ("proxyIdx", format!("variables.proxyIn == 'containers' ? object.spec.containers.map(c, {PROXY}).indexOf(true) \
                : variables.proxyIn == 'initContainers' ? object.spec.initContainers.map(c, {NATIVE_PROXY}).indexOf(true) : -1")),
            ("envClash", on_proxy(format!("has(c.env) && c.env.exists(e, e.name == 'OUTPUT_CERTS' && !(has(e.value) && e.value == {path}))"))),
            ("needEnv", format!("variables.proxyIn != '' && !{}", on_proxy("has(c.env) && c.env.exists(e, e.name == 'OUTPUT_CERTS')".into()))),
            ("proxyHasEnv", on_proxy("has(c.env)".into())),
            ("proxyMountClash", on_proxy(self.mount_in_the_way())),
            ("needProxyMount", format!("variables.proxyIn != '' && {}", on_proxy(self.mount_absent()))),
            ("proxyHasMounts", on_proxy("has(c.volumeMounts)".into())),
            ("cfgBlank", config.0),
            ("cfgOther", config.1),
            ("needCfg", "variables.proxyIn == '' && variables.cfgBlank".into()),
            ("uvmBlank", uvm.0),
            ("uvmOther", uvm.1),
            ("needUvm", "variables.proxyIn == '' && variables.uvmBlank".into()),
        ]
    }

    /// `proxy.istio.io/config` as the webhook writes it on a pod without one.
    fn config_annotation(&self) -> String {
        let path: String = serde_json::from_str(&self.path).unwrap_or_default();
        serde_json::json!({"proxyMetadata": {"OUTPUT_CERTS": path}}).to_string()
    }

    fn uvm_annotation(&self) -> String {
        let name: String = serde_json::from_str(&self.name).unwrap_or_default();
        let path: String = serde_json::from_str(&self.path).unwrap_or_default();
        let mut map = serde_json::Map::new();
        map.insert(name, serde_json::json!({"mountPath": path}));
        serde_json::Value::Object(map).to_string()
    }

    /// The JSONPatch: the webhook's operations, in its order.
    pub fn patch(&self) -> String {
        let (name, path) = (&self.name, &self.path);
        let volume = match self.source {
            CertificateSource::Sidecar => format!("Object.spec.volumes{{name: {name}, emptyDir: Object.spec.volumes.emptyDir{{medium: 'Memory'}}}}"),
            CertificateSource::Secret(s) => format!("Object.spec.volumes{{name: {name}, secret: Object.spec.volumes.secret{{secretName: {}}}}}", quote(s)),
        };
        let mut parts = vec![
            "(variables.needVolume && !has(object.spec.volumes) ? [JSONPatch{op: 'add', path: '/spec/volumes', value: []}] : [])".to_owned(),
            format!("(variables.needVolume ? [JSONPatch{{op: 'add', path: '/spec/volumes/-', value: {volume}}}] : [])"),
        ];
        if self.sidecar_source() {
            for list in ["containers", "initContainers"] {
                parts.push(proxy_patch(list, name, path));
            }
        }
        parts.push(format!("object.spec.containers.filter(c, c.name != 'istio-proxy' && {} && !has(c.volumeMounts)).map(c, \
            JSONPatch{{op: 'add', path: '/spec/containers/' + string(object.spec.containers.indexOf(c)) + '/volumeMounts', value: []}})", self.mount_absent()));
        parts.push(format!("variables.mountIdx.map(i, JSONPatch{{op: 'add', path: '/spec/containers/' + string(i) + '/volumeMounts/-', \
            value: Object.spec.containers.volumeMounts{{name: {name}, mountPath: {path}, readOnly: true}}}})"));
        parts.extend(self.annotation_patches());
        format!("!variables.applies ? [] : {}", parts.join(" + "))
    }

    fn annotation_patches(&self) -> Vec<String> {
        let mut any = vec!["variables.needMarker"];
        let mut sets = Vec::new();
        let set = |need: &str, key: &str, value: String| {
            format!(
                "({need} ? [JSONPatch{{op: 'add', path: {}, value: {value}}}] : [])",
                quote(&format!("/metadata/annotations/{}", pointer_token(key)))
            )
        };
        if self.sidecar_source() {
            any.extend(["variables.needCfg", "variables.needUvm"]);
            sets.push(set(
                "variables.needCfg",
                PROXY_CONFIG,
                quote(&self.config_annotation()),
            ));
            sets.push(set(
                "variables.needUvm",
                USER_VOLUME_MOUNT,
                quote(&self.uvm_annotation()),
            ));
        }
        sets.push(set("variables.needMarker", MARKER, self.path.clone()));
        let create = format!("(!has(object.metadata.annotations) && ({}) ? [JSONPatch{{op: 'add', path: '/metadata/annotations', value: {{}}}}] : [])", any.join(" || "));
        std::iter::once(create).chain(sets).collect()
    }
}

/// OUTPUT_CERTS and a writable mount on the proxy in `list`.
fn proxy_patch(list: &str, name: &str, path: &str) -> String {
    let at = format!("'/spec/{list}/' + string(variables.proxyIdx)");
    format!("(variables.proxyIn == '{list}' ? \
        (variables.needEnv && !variables.proxyHasEnv ? [JSONPatch{{op: 'add', path: {at} + '/env', value: []}}] : []) \
        + (variables.needEnv ? [JSONPatch{{op: 'add', path: {at} + '/env/-', value: Object.spec.{list}.env{{name: 'OUTPUT_CERTS', value: {path}}}}}] : []) \
        + (variables.needProxyMount && !variables.proxyHasMounts ? [JSONPatch{{op: 'add', path: {at} + '/volumeMounts', value: []}}] : []) \
        + (variables.needProxyMount ? [JSONPatch{{op: 'add', path: {at} + '/volumeMounts/-', value: Object.spec.{list}.volumeMounts{{name: {name}, mountPath: {path}}}}}] : []) \
        : [])")
}
