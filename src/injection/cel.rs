//! The proxy model in CEL, for the rules' native forms (`crate::native`):
//! each variable mirrors one function of [`crate::injection`], and the
//! rules that need it list it in their `NATIVE` row. The workload
//! variables (`spec`, `labels`, `annotations`, `containers`,
//! `initContainers`) are declared by the compiler before these.
//! `tests/envtest_native_diff.rs` runs them against the Rust functions.

use super::iptables::{flag_table, Setting};
use super::proxy_config;

type Variable = (&'static str, &'static str);

pub const HOST_NETWORK: Variable = ("hostNetwork", "variables.spec.?hostNetwork.orValue(false)");
/// `has_native_sidecar`
pub const NATIVE_SIDECAR: Variable = (
    "nativeSidecar",
    "variables.initContainers.exists(c, c.?restartPolicy.orValue('') == 'Always')",
);
/// `gateway_role`: one container, its command and args.
pub const ONLY: Variable = (
    "only",
    "size(variables.containers) == 1 && !variables.nativeSidecar",
);
pub const COMMAND: Variable = (
    "command",
    "variables.only ? variables.containers[0].?command.orValue([]) : []",
);
pub const ARGS: Variable = (
    "args",
    "variables.only ? variables.containers[0].?args.orValue([]) : []",
);
pub const GATEWAY: Variable = (
    "gateway",
    "variables.only && ((variables.containers[0].name == 'istio-proxy' && (size(variables.command) == 0 || (size(variables.command) == 1 && (variables.command[0] == 'pilot-agent' || variables.command[0].endsWith('/pilot-agent')))) && size(variables.args) >= 2 && variables.args[0] == 'proxy' && variables.args[1] in ['router', 'waypoint']) || (variables.containers[0].name == 'agentgateway' && (size(variables.command) == 0 || (size(variables.command) == 1 && (variables.command[0] == 'agentgateway' || variables.command[0].endsWith('/agentgateway')))) && size(variables.args) >= 1 && variables.args[0] == '--config'))",
);
/// `is_marked`
pub const MARKED: Variable = (
    "marked",
    "'sidecar.istio.io/status' in variables.annotations || (object.kind == 'CronJob' && 'sidecar.istio.io/status' in object.spec.jobTemplate.?metadata.?annotations.orValue({}))",
);
/// `templates`
pub const TEMPLATES: Variable = (
    "templates",
    "variables.annotations[?'inject.istio.io/templates'].orValue('').split(',').map(t, t.trim()).filter(t, t != '')",
);
/// `templated`'s OffPath
pub const OFF_PATH: Variable = (
    "offPath",
    "variables.templates.exists(t, t in ['grpc-simple', 'grpc-agent']) || ('gateway' in variables.templates && !('sidecar' in variables.templates) && !(size(variables.containers) > 0 && variables.containers.all(c, c.name == 'istio-proxy')))",
);
/// `carried`'s Sidecar: the proxy container, marked or beside istio-init.
pub const SIDECAR: Variable = (
    "sidecar",
    "(variables.containers.exists(c, c.name == 'istio-proxy') || variables.initContainers.exists(c, c.name == 'istio-proxy' && c.?restartPolicy.orValue('') == 'Always')) && (variables.marked || variables.initContainers.exists(c, c.name == 'istio-init'))",
);

/// Every variable `carried` needs, in order.
pub const CARRIED: [Variable; 9] = [
    NATIVE_SIDECAR,
    ONLY,
    COMMAND,
    ARGS,
    GATEWAY,
    MARKED,
    TEMPLATES,
    OFF_PATH,
    SIDECAR,
];

/// `carried` is Sidecar or OffPath: Istio's containers are Istio's.
pub const PROXY_TRUSTED: Variable = (
    "proxyTrusted",
    "!variables.gateway && ((variables.marked && variables.offPath) || variables.sidecar)",
);
/// `istio_containers`
pub const ISTIO_NAMES: Variable = (
    "istioNames",
    "variables.gateway ? [variables.containers[0].name] : variables.proxyTrusted ? ['istio-proxy', 'istio-init', 'istio-validation'] : []",
);

/// A port number (`ports::port`), or -1. The size check keeps `int()` in range.
macro_rules! port_of {
    ($x:literal) => {
        concat!(
            "(",
            $x,
            ".matches('^[+]?[0-9]+$') && size(",
            $x,
            ".find('[1-9][0-9]*')) <= 5 && int(",
            $x,
            ") <= 65535 ? int(",
            $x,
            ") : -1)"
        )
    };
}
// The bypass rule's port lists read ports the same way.
pub(crate) use port_of;

/// `ports::status_port` and `own_inbound_ports`, with
/// `proxy_config::status_port`'s steps on the match of `statusPattern`.
pub const OWN_PORTS: [Variable; 11] = [
    (
        "proxyContainer",
        "(variables.containers + variables.initContainers).filter(c, c.name == 'istio-proxy')",
    ),
    (
        "proxyConfig",
        "variables.proxyTrusted && size(variables.proxyContainer) > 0 ? variables.proxyContainer[0].?env.orValue([]).filter(e, e.name == 'PROXY_CONFIG').map(e, e.?value.orValue('')) : []",
    ),
    (
        "statusMatch",
        "size(variables.proxyConfig) > 0 ? variables.proxyConfig[0].find(variables.statusPattern) : ''",
    ),
    (
        "statusRest",
        "variables.statusMatch == '' ? '' : variables.statusMatch.substring(variables.statusMatch.lastIndexOf('\"statusPort\"') + 12).trim()",
    ),
    (
        "statusValue",
        "variables.statusRest.startsWith(':') ? variables.statusRest.substring(1).trim() : variables.statusRest",
    ),
    (
        "statusSaid",
        "size(variables.statusValue) >= 2 && variables.statusValue.startsWith('\"') ? [variables.statusValue.substring(1, size(variables.statusValue) - 1)] : variables.statusValue.matches('^[-0-9]') ? [variables.statusValue] : []",
    ),
    // `drain_hook_port`: pilot-agent request ... --debug-port[=]<port>
    (
        "drainCommand",
        "size(variables.proxyContainer) > 0 ? variables.proxyContainer[0].?lifecycle.?preStop.?exec.?command.orValue([]) : []",
    ),
    (
        "drainAt",
        "size(variables.drainCommand) >= 2 && (variables.drainCommand[0] == 'pilot-agent' || variables.drainCommand[0].endsWith('/pilot-agent')) && variables.drainCommand[1] == 'request' ? lists.range(size(variables.drainCommand)).filter(i, i >= 2 && (variables.drainCommand[i].startsWith('--debug-port=') || variables.drainCommand[i] == '--debug-port')) : []",
    ),
    (
        "drainPort",
        "size(variables.drainAt) == 0 ? [] : variables.drainCommand[variables.drainAt[0]] != '--debug-port' ? [variables.drainCommand[variables.drainAt[0]].substring(13)] : variables.drainAt[0] + 1 < size(variables.drainCommand) ? [variables.drainCommand[variables.drainAt[0] + 1]] : []",
    ),
    (
        "statusPort",
        concat!(
            "'status.sidecar.istio.io/port' in variables.annotations ? ",
            port_of!("variables.annotations['status.sidecar.istio.io/port'].trim()"),
            " : !variables.proxyTrusted || size(variables.proxyContainer) == 0 || size(variables.statusSaid) + size(variables.drainPort) == 0 ? 15020 : size(variables.statusSaid) > 0 ? ",
            port_of!("variables.statusSaid[0].trim()"),
            " : ",
            port_of!("variables.drainPort[0].trim()")
        ),
    ),
    (
        "ownPorts",
        "variables.statusPort > 0 ? [15090, 15021, variables.statusPort] : [15090, 15021]",
    ),
];

/// `istio-iptables`' flags, short, long or inline.
macro_rules! known_flag {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".startsWith('--') ? ",
            $t,
            ".substring(2).split('=')[0] in variables.iptablesLong : ",
            $t,
            ".startsWith('-') && size(",
            $t,
            ") >= 2 && ",
            $t,
            ".substring(1, 2) in variables.iptablesShort)"
        )
    };
}
/// A known flag whose value is the next token.
macro_rules! bare_flag {
    ($t:literal) => {
        concat!(
            "(",
            $t,
            ".startsWith('--') ? !",
            $t,
            ".contains('=') && ",
            $t,
            ".substring(2) in variables.iptablesLong : size(",
            $t,
            ") == 2 && ",
            $t,
            ".startsWith('-') && ",
            $t,
            ".substring(1) in variables.iptablesShort)"
        )
    };
}

/// [key, value, where] of a flag token: `split_flag`'s inline forms.
macro_rules! flag_entry {
    ($t:literal, $next:literal) => {
        concat!(
            "[string(",
            $t,
            ".startsWith('--') ? variables.iptablesLong[",
            $t,
            ".substring(2).split('=')[0]] : variables.iptablesShort[",
            $t,
            ".substring(1, 2)]), ",
            "variables.iptablesBare[ci][i] ? string(",
            $next,
            ") : ",
            $t,
            ".startsWith('--') ? ",
            $t,
            ".substring(",
            $t,
            ".indexOf('=') + 1) : ",
            $t,
            ".substring(2).startsWith('=') ? ",
            $t,
            ".substring(3) : ",
            $t,
            ".substring(2), ",
            "'container \"' + string(variables.iptablesInits[ci].name) + '\" flag ' + (",
            $t,
            ".startsWith('--') ? '--' + ",
            $t,
            ".substring(2).split('=')[0] : ",
            $t,
            ".substring(0, 2)) + ' ']"
        )
    };
}

/// `iptables::parse` of each `istio-init`/`istio-validation` container:
/// [key, value, where] entries, environment first, the last word per key
/// winning. A token is a flag unless it is the value of the flag before it:
/// within a run of bare flags every other token is a value.
pub const IPTABLES: [Variable; 5] = [
    (
        "iptablesInits",
        "variables.initContainers.filter(c, c.name in ['istio-init', 'istio-validation'])",
    ),
    (
        "iptablesTokens",
        "variables.iptablesInits.map(c, c.?command.orValue([]) + c.?args.orValue([]))",
    ),
    ("iptablesBare", concat!("variables.iptablesTokens.map(T, T.map(t, ", bare_flag!("t"), "))")),
    (
        "iptablesEntries",
        concat!(
            "lists.range(size(variables.iptablesInits)).map(ci, ",
            "variables.iptablesInits[ci].?env.orValue([]).filter(e, e.name in variables.iptablesEnv && has(e.value))",
            ".map(e, [string(variables.iptablesEnv[e.name]), string(e.value), 'container \"' + string(variables.iptablesInits[ci].name) + '\" ' + e.name + '='])",
            " + lists.range(size(variables.iptablesTokens[ci])).filter(i, ",
            known_flag!("variables.iptablesTokens[ci][i]"),
            " && (i - 1 - (lists.range(i).filter(k, !variables.iptablesBare[ci][k]) + [-1]).max()) % 2 == 0",
            " && (!variables.iptablesBare[ci][i] || i + 1 < size(variables.iptablesTokens[ci])))",
            ".map(i, ",
            flag_entry!("variables.iptablesTokens[ci][i]", "variables.iptablesTokens[ci][i + 1]"),
            "))"
        ),
    ),
    (
        "iptablesFinal",
        "variables.iptablesEntries.map(E, E.transformList(i, p, !E.exists(j, q, j > i && q[0] == p[0]), p))",
    ),
];

/// The literals the variables above read, from meshgate's own tables:
/// `statusPattern`, `settingKinds` (annotation -> how its value bypasses),
/// `iptablesLong`/`iptablesShort`/`iptablesEnv` (flag -> key: a setting's
/// annotation, `proxy-uid`, `proxy-gid` or `other`).
pub fn literals() -> Vec<(&'static str, String)> {
    let map = |pairs: Vec<(String, &str)>| {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}: {}", quote(k), quote(v)))
            .collect();
        format!("{{{}}}", body.join(", "))
    };
    let kinds = Setting::ALL
        .iter()
        .map(|s| (s.annotation().to_owned(), setting_kind(*s)))
        .collect();
    let flags: Vec<_> = flag_table().collect();
    let long = flags
        .iter()
        .map(|(_, l, k)| ((*l).to_owned(), *k))
        .collect();
    let short = flags
        .iter()
        .filter_map(|(s, _, k)| s.map(|s| (s.to_string(), *k)))
        .collect();
    let env = flags
        .iter()
        .map(|(_, l, k)| (l.to_ascii_uppercase().replace('-', "_"), *k))
        .collect();
    vec![
        ("statusPattern", quote(&proxy_config::pattern())),
        ("settingKinds", map(kinds)),
        ("iptablesLong", map(long)),
        ("iptablesShort", map(short)),
        ("iptablesEnv", map(env)),
    ]
}

/// A CEL string literal: JSON's escapes are CEL's.
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// How a setting's value routes around the proxy (`bypass` in the rule).
fn setting_kind(setting: Setting) -> &'static str {
    match setting {
        Setting::IncludeInboundPorts => "includePorts",
        Setting::IncludeOutboundIpRanges => "includeRanges",
        Setting::InterceptionMode => "mode",
        s if s.is_ports() => "ports",
        _ => "list",
    }
}
