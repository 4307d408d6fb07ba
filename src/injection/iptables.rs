//! Where the injector writes the traffic-interception settings. Under
//! Istio's CNI plugin they are pod annotations; with Istio's init container
//! they are `istio-iptables` flags in `istio-init`'s arguments (and the
//! flag's environment variable, which Istio's proxy metadata can set), and
//! an annotation may not be there at all: `istioctl kube-inject` and
//! mesh-wide values write only the flags. Flag names follow
//! `tools/istio-iptables/pkg/cmd/root.go`.

use crate::subject::ContainerView;

use super::{INIT_CONTAINER, PROXY_UID, VALIDATION_CONTAINER};
use crate::subject::Workload;

/// A setting that decides which traffic the proxy's iptables rules capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setting {
    ExcludeInboundPorts,
    ExcludeOutboundPorts,
    ExcludeOutboundIpRanges,
    ExcludeInterfaces,
    IncludeInboundPorts,
    IncludeOutboundIpRanges,
    InterceptionMode,
}

impl Setting {
    pub const ALL: &'static [Setting] = &[
        Setting::ExcludeInboundPorts,
        Setting::ExcludeOutboundPorts,
        Setting::ExcludeOutboundIpRanges,
        Setting::ExcludeInterfaces,
        Setting::IncludeInboundPorts,
        Setting::IncludeOutboundIpRanges,
        Setting::InterceptionMode,
    ];

    /// The pod annotation a user (or, under CNI, the injector) sets.
    pub fn annotation(self) -> &'static str {
        match self {
            Setting::ExcludeInboundPorts => "traffic.sidecar.istio.io/excludeInboundPorts",
            Setting::ExcludeOutboundPorts => "traffic.sidecar.istio.io/excludeOutboundPorts",
            Setting::ExcludeOutboundIpRanges => "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            Setting::ExcludeInterfaces => "traffic.sidecar.istio.io/excludeInterfaces",
            Setting::IncludeInboundPorts => "traffic.sidecar.istio.io/includeInboundPorts",
            Setting::IncludeOutboundIpRanges => "traffic.sidecar.istio.io/includeOutboundIPRanges",
            Setting::InterceptionMode => "sidecar.istio.io/interceptionMode",
        }
    }

    /// Whether the value lists ports (where the proxy's own ports are fine).
    pub fn is_ports(self) -> bool {
        matches!(
            self,
            Setting::ExcludeInboundPorts
                | Setting::ExcludeOutboundPorts
                | Setting::IncludeInboundPorts
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Setting(Setting),
    ProxyUid,
    ProxyGid,
    /// A flag that takes a value meshgate does not judge; known so that its
    /// value is not read as a flag.
    Other,
}

/// `istio-iptables` flags that take a value: (short, long, meaning).
const FLAGS: &[(Option<char>, &str, Key)] = &[
    (
        Some('i'),
        "istio-service-cidr",
        Key::Setting(Setting::IncludeOutboundIpRanges),
    ),
    (
        Some('x'),
        "istio-service-exclude-cidr",
        Key::Setting(Setting::ExcludeOutboundIpRanges),
    ),
    (
        Some('b'),
        "istio-inbound-ports",
        Key::Setting(Setting::IncludeInboundPorts),
    ),
    (
        Some('d'),
        "istio-local-exclude-ports",
        Key::Setting(Setting::ExcludeInboundPorts),
    ),
    (
        Some('o'),
        "istio-local-outbound-ports-exclude",
        Key::Setting(Setting::ExcludeOutboundPorts),
    ),
    (
        Some('c'),
        "istio-exclude-interfaces",
        Key::Setting(Setting::ExcludeInterfaces),
    ),
    (
        Some('m'),
        "istio-inbound-interception-mode",
        Key::Setting(Setting::InterceptionMode),
    ),
    (Some('u'), "proxy-uid", Key::ProxyUid),
    (Some('g'), "proxy-gid", Key::ProxyGid),
    // Included outbound ports (-q) only add to what is captured; the rest
    // are ports, marks and tables of the capture itself.
    (Some('q'), "istio-outbound-ports", Key::Other),
    (Some('p'), "envoy-port", Key::Other),
    (Some('z'), "inbound-capture-port", Key::Other),
    (Some('e'), "inbound-tunnel-port", Key::Other),
    (Some('k'), "kube-virt-interfaces", Key::Other),
    (Some('t'), "istio-inbound-tproxy-mark", Key::Other),
    (Some('r'), "istio-inbound-tproxy-route-table", Key::Other),
    (None, "iptables-probe-port", Key::Other),
    (None, "probe-timeout", Key::Other),
    (None, "network-namespace", Key::Other),
    (None, "force-iptables-binary", Key::Other),
];

/// Every flag as (short letter, long name, key) for the CEL form
/// (`super::cel`): the key is a setting's annotation, `proxy-uid`,
/// `proxy-gid` or `other`.
pub(super) fn flag_table() -> impl Iterator<Item = (Option<char>, &'static str, &'static str)> {
    FLAGS.iter().map(|(short, long, key)| {
        let key = match key {
            Key::Setting(setting) => setting.annotation(),
            Key::ProxyUid => "proxy-uid",
            Key::ProxyGid => "proxy-gid",
            Key::Other => "other",
        };
        (*short, *long, key)
    })
}

/// Where a setting was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Annotation,
    /// In an init container's arguments (`flag` as written) or environment.
    Container {
        container: String,
        flag: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub setting: Setting,
    pub value: String,
    pub source: Source,
}

/// Every interception setting of the pod: annotations first, then what
/// Istio's init containers are told.
pub fn interception_settings(w: &Workload) -> Vec<Found> {
    let mut found: Vec<Found> = Setting::ALL
        .iter()
        .filter_map(|&setting| {
            w.pod_annotation(setting.annotation()).map(|value| Found {
                setting,
                value: value.to_owned(),
                source: Source::Annotation,
            })
        })
        .collect();
    for c in istio_init_containers(w) {
        found.extend(
            parse(c)
                .into_iter()
                .filter_map(|(key, flag, value)| match key {
                    Key::Setting(setting) => Some(Found {
                        setting,
                        value,
                        source: Source::Container {
                            container: c.name.clone(),
                            flag,
                        },
                    }),
                    _ => None,
                }),
        );
    }
    found
}

/// The UIDs and GIDs whose traffic the iptables rules let through: Istio's
/// 1337, and whatever `-u`/`-g` tell `istio-init` (`-g` defaults to `-u`).
pub fn proxy_ids(w: &Workload) -> (Vec<i64>, Vec<i64>) {
    let mut uids = vec![PROXY_UID];
    let mut gids = vec![PROXY_UID];
    for c in istio_init_containers(w) {
        let parsed = parse(c);
        let id = |want: Key| {
            parsed
                .iter()
                .find(|(key, _, _)| *key == want)
                .and_then(|(_, _, v)| v.trim().parse::<i64>().ok())
        };
        let uid = id(Key::ProxyUid);
        uids.extend(uid);
        gids.extend(id(Key::ProxyGid).or(uid));
    }
    uids.sort_unstable();
    uids.dedup();
    gids.sort_unstable();
    gids.dedup();
    (uids, gids)
}

fn istio_init_containers(w: &Workload) -> impl Iterator<Item = &ContainerView> {
    w.spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.name == INIT_CONTAINER || c.name == VALIDATION_CONTAINER)
}

/// The flags a container's `istio-iptables` sees: its environment first
/// (`FOO_BAR` for `--foo-bar`), then its command line, which overrides it.
/// Each entry: (meaning, flag as written, value).
fn parse(c: &ContainerView) -> Vec<(Key, String, String)> {
    let mut out = env_flags(c);
    let tokens: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut rest = tokens.as_slice();
    while let Some((token, tail)) = rest.split_first() {
        rest = tail;
        let Some((key, written, inline)) = split_flag(token) else {
            continue;
        };
        let value = match inline {
            Some(v) => v,
            None => {
                let Some((next, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                next
            }
        };
        out.push((key, written.to_owned(), value.to_owned()));
    }
    // The last word on a flag wins, as in pflag.
    let mut last: Vec<(Key, String, String)> = Vec::new();
    for entry in out.into_iter().rev() {
        if !last.iter().any(|(k, _, _)| *k == entry.0) {
            last.push(entry);
        }
    }
    last.reverse();
    last
}

fn env_flags(c: &ContainerView) -> Vec<(Key, String, String)> {
    c.env
        .iter()
        .flatten()
        .filter_map(|var| {
            let value = var.value.as_ref()?;
            let (_, _, key) = FLAGS
                .iter()
                .find(|(_, long, _)| long.to_ascii_uppercase().replace('-', "_") == var.name)?;
            Some((*key, var.name.clone(), value.clone()))
        })
        .collect()
}

/// A known flag in one token: (meaning, flag as written, value when inline).
/// pflag takes `--long v`, `--long=v`, `-x v`, `-x=v` and `-xv`.
fn split_flag(token: &str) -> Option<(Key, &str, Option<&str>)> {
    if let Some(long) = token.strip_prefix("--") {
        let (name, inline) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        return Some((lookup(None, name)?, &token[..2 + name.len()], inline));
    }
    let short = token.strip_prefix('-')?;
    let letter = short.chars().next()?;
    let rest = &short[letter.len_utf8()..];
    let inline = (!rest.is_empty()).then(|| rest.strip_prefix('=').unwrap_or(rest));
    let written = &token[..1 + letter.len_utf8()];
    Some((lookup(Some(letter), "")?, written, inline))
}

fn lookup(short: Option<char>, long: &str) -> Option<Key> {
    FLAGS
        .iter()
        .find(|(s, l, _)| match short {
            Some(letter) => *s == Some(letter),
            None => *l == long,
        })
        .map(|(_, _, key)| *key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    fn init(args: &[&str]) -> ContainerView {
        ContainerView {
            name: INIT_CONTAINER.into(),
            args: Some(args.iter().map(|a| (*a).to_owned()).collect()),
            ..Default::default()
        }
    }

    fn settings(c: &ContainerView) -> Vec<(Key, String, String)> {
        parse(c)
    }

    #[test]
    fn reads_short_long_and_inline_flag_forms() {
        let c = init(&[
            "istio-iptables",
            "-p",
            "15001",
            "-x",
            "10.0.0.0/8",
            "--istio-local-exclude-ports=15090,5432",
            "--istio-local-outbound-ports-exclude",
            "3306",
            "-b*",
            "-i=*",
            "--run-validation",
            "-m",
            "REDIRECT",
        ]);
        let p = settings(&c);
        let get = |s: Setting| {
            p.iter()
                .find(|(k, _, _)| *k == Key::Setting(s))
                .map(|(_, f, v)| (f.as_str(), v.as_str()))
        };
        assert_eq!(
            get(Setting::ExcludeOutboundIpRanges),
            Some(("-x", "10.0.0.0/8"))
        );
        assert_eq!(
            get(Setting::ExcludeInboundPorts),
            Some(("--istio-local-exclude-ports", "15090,5432"))
        );
        assert_eq!(
            get(Setting::ExcludeOutboundPorts),
            Some(("--istio-local-outbound-ports-exclude", "3306"))
        );
        assert_eq!(get(Setting::IncludeInboundPorts), Some(("-b", "*")));
        assert_eq!(get(Setting::IncludeOutboundIpRanges), Some(("-i", "*")));
        assert_eq!(get(Setting::InterceptionMode), Some(("-m", "REDIRECT")));
    }

    #[test]
    fn a_flag_value_is_never_read_as_a_flag() {
        // An empty -x value followed by -b: "" is the value, -b still counts.
        let p = settings(&init(&["-x", "", "-b", "8080", "-q", "-o"]));
        assert_eq!(
            p[0],
            (
                Key::Setting(Setting::ExcludeOutboundIpRanges),
                "-x".into(),
                "".into()
            )
        );
        assert_eq!(
            p[1],
            (
                Key::Setting(Setting::IncludeInboundPorts),
                "-b".into(),
                "8080".into()
            )
        );
        // -q takes "-o" as its value; nothing is excluded.
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn environment_sets_flags_the_command_line_does_not() {
        let mut c = init(&["istio-iptables", "-u", "1000"]);
        c.env = Some(vec![EnvVar {
            name: "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE".into(),
            value: Some("6379".into()),
            value_from: None,
        }]);
        let p = settings(&c);
        assert!(p.contains(&(
            Key::Setting(Setting::ExcludeOutboundPorts),
            "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE".into(),
            "6379".into()
        )));
    }
}
