//! Go duration syntax (`2160h`, `90m`, `1h30m`, `1.5h`, `300ms`), as
//! cert-manager and Kubernetes tools write durations. One parser for the
//! config, the command line and the Certificates the webhook reviews.
//!
//! Not `kube::core::Duration`: its `FromStr` panics when the total overflows
//! (`99999999999999999999999h`, a Certificate's `spec.duration` is request
//! input) and reads an empty string as zero. The test
//! `kube_core_parser_is_unsafe_on_request_input` shows both; switch when it
//! fails.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration like 24h, 90m or 1h30m")]
pub struct DurationError(pub String);

pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError(text.to_owned());
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(err());
    }
    rest = rest.strip_prefix('+').unwrap_or(rest);
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| err())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += number * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| err())
}

/// `36h`, `1h30m`, `45m`: the shortest faithful Go-style rendering.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(
            parse_go_duration("2160h"),
            Ok(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_go_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1h0m0s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "24", "1d", "-1h", "h", "1h30", "abc"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(parse_go_duration("99999999999999999999999h").is_err());
    }

    #[test]
    fn kube_core_parser_is_unsafe_on_request_input() {
        let overflow =
            std::panic::catch_unwind(|| "99999999999999999999999h".parse::<kube::core::Duration>());
        assert!(overflow.is_err(), "kube-core no longer panics: use it");
        let empty = "".parse::<kube::core::Duration>();
        assert_eq!(empty.map(std::time::Duration::from), Ok(Duration::ZERO));
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(2160 * 3600)), "2160h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
