//! The `statusPort` of `istio-proxy`'s `PROXY_CONFIG`, read the one way
//! both meshgate and the API server's CEL can: one regular expression (RE2
//! and the `regex` crate agree on it) that walks the top-level members of
//! the JSON object, containers nested up to [`DEPTH`] + 1 deep, and stops at
//! the last top-level `"statusPort"` key; then the same string steps in
//! Rust here and in CEL (`crate::injection::cel`). Where this differs from
//! a JSON decoder (a key written with escapes, containers nested deeper,
//! text that is not JSON), the injector never writes it, and the reading
//! falls back to the drain hook or 15020: stricter, never an accidental
//! allow.

use std::sync::LazyLock;

use regex::Regex;

/// Levels of nesting inside the outermost walked container (so `DEPTH + 1`
/// levels in all): the injector's deepest
/// (`tracing.custom_tags.<tag>.literal`) is 4.
pub const DEPTH: usize = 6;

/// The key, quotes included.
pub const KEY: &str = "\"statusPort\"";

const STRING: &str = r#""(?:[^"\\]|\\.)*""#;
/// Anything but a string or a container.
const PLAIN: &str = r#"[^"{}\[\]]"#;
const WS: &str = r"[ \t\n\r]*";

/// Up to the value of the last top-level `"statusPort"`.
pub fn pattern() -> String {
    let mut container = format!(r"[{{\[](?:{STRING}|{PLAIN})*[}}\]]");
    for _ in 0..DEPTH {
        container = format!(r"[{{\[](?:{STRING}|{PLAIN}|{container})*[}}\]]");
    }
    format!(
        r#"^{WS}\{{(?:{STRING}|{PLAIN}|{container})*{KEY}{WS}:{WS}(?:{STRING}|-?[0-9][0-9.eE+-]*|true|false|null|[{{\[])"#
    )
}

static PATTERN: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(&pattern()).ok());

/// What `PROXY_CONFIG` says the status port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusPort<'a> {
    /// A number or a string: the text to read as a port.
    Said(&'a str),
    /// No top-level `statusPort` with a number or a string.
    Unsaid,
}

pub fn status_port(config: &str) -> StatusPort<'_> {
    let Some(found) = PATTERN.as_ref().and_then(|p| p.find(config)) else {
        return StatusPort::Unsaid;
    };
    let text = found.as_str();
    let Some(at) = text.rfind(KEY) else {
        return StatusPort::Unsaid;
    };
    let rest = text[at + KEY.len()..].trim();
    let value = rest.strip_prefix(':').map_or(rest, str::trim);
    if value.len() >= 2 && value.starts_with('"') {
        return StatusPort::Said(&value[1..value.len() - 1]);
    }
    if value.starts_with(|c: char| c.is_ascii_digit()) || value.starts_with('-') {
        return StatusPort::Said(value);
    }
    StatusPort::Unsaid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_compiles() {
        assert!(PATTERN.is_some(), "{}", pattern());
    }

    #[test]
    fn reads_the_last_top_level_key() {
        for (config, want) in [
            (r#"{"statusPort":15555}"#, StatusPort::Said("15555")),
            (r#" { "statusPort" : "15555" } "#, StatusPort::Said("15555")),
            (
                r#"{"proxyMetadata":{"statusPort":"1"},"tracing":{"zipkin":{"address":"z:9411"}},"statusPort":15555}"#,
                StatusPort::Said("15555"),
            ),
            (
                r#"{"statusPort":15555,"statusPort":15020}"#,
                StatusPort::Said("15020"),
            ),
            (
                r#"{"a":"{\"statusPort\":1}","statusPort":2}"#,
                StatusPort::Said("2"),
            ),
            (r#"{"statusPort":15555.0}"#, StatusPort::Said("15555.0")),
            (r#"{"statusPort":-1}"#, StatusPort::Said("-1")),
            (r#"{"statusPort":""}"#, StatusPort::Said("")),
            (r#"{"statusPort":null}"#, StatusPort::Unsaid),
            (r#"{"statusPort":1,"statusPort":true}"#, StatusPort::Unsaid),
            (
                r#"{"proxyMetadata":{"statusPort":"15555"}}"#,
                StatusPort::Unsaid,
            ),
            (r#"{"status\u0050ort":15555}"#, StatusPort::Unsaid),
            (r#"{"statusPort":"x\"statusPort"}"#, StatusPort::Unsaid),
            ("statusPort: 15555", StatusPort::Unsaid),
            ("", StatusPort::Unsaid),
        ] {
            assert_eq!(status_port(config), want, "{config}");
        }
    }

    #[test]
    fn nesting_deeper_than_the_walk_hides_the_key() {
        let deep = |n: usize| {
            format!(
                r#"{{"a":{}1{},"statusPort":15555}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        assert_eq!(status_port(&deep(DEPTH + 1)), StatusPort::Said("15555"));
        assert_eq!(status_port(&deep(DEPTH + 2)), StatusPort::Unsaid);
    }
}
