//! Timestamps: ISO-8601 UTC with milliseconds (`2026-11-22T09:30:00.000Z`) in answers; in
//! requests either that form (any offset) or Unix milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// `millis` since the Unix epoch as ISO-8601 UTC with milliseconds.
pub fn iso_millis(millis: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(millis)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds since the epoch from a request value: a number of milliseconds or an
/// ISO-8601/RFC 3339 text.
pub fn parse_timestamp(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .filter(|millis| *millis >= 0)
            .ok_or_else(|| format!("{number} is not a non-negative whole number of milliseconds")),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|time| time.timestamp_millis())
            .map_err(|error| format!("'{text}' is not an ISO-8601 timestamp ({error})")),
        other => Err(format!(
            "{other} is not a timestamp (milliseconds since the epoch or ISO-8601 text)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_with_milliseconds_and_parse_both_forms() {
        assert_eq!(iso_millis(1_763_800_000_123), "2025-11-22T08:26:40.123Z");
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_timestamp(&Value::from("2025-11-22T09:26:40.123+01:00")),
            Ok(1_763_800_000_123)
        );
        assert_eq!(parse_timestamp(&Value::from(5)), Ok(5));
        assert!(parse_timestamp(&Value::from(-5)).is_err());
        assert!(parse_timestamp(&Value::from("yesterday")).is_err());
    }
}
