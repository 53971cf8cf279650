//! Go's `time.ParseDuration` syntax, for flags and Machine fields written for Go
//! (`2h0m0s`, `1.5h`, `90s`, `300ms`). Negative durations are refused: nothing here may be
//! negative, which is what MCM's option validation enforces after parsing.

use std::time::Duration;

const UNITS: [(&str, f64); 8] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("μs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

/// Parses a Go duration string into a non-negative [`Duration`].
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid =
        || format!("invalid duration {text:?} (expected Go syntax such as 90s, 20m, 2h0m0s)");
    let mut rest = text.trim();
    if let Some(unsigned) = rest.strip_prefix('+') {
        rest = unsigned;
    } else if let Some(magnitude) = rest.strip_prefix('-') {
        return if !magnitude.is_empty() && magnitude.chars().all(|c| c == '0') {
            Ok(Duration::ZERO)
        } else {
            Err(format!("invalid duration {text:?}: must not be negative"))
        };
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (_, scale) = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .ok_or_else(invalid)?;
        seconds += number * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_forms() {
        let cases = [
            ("0", 0.0),
            ("0s", 0.0),
            ("90s", 90.0),
            ("20m", 1200.0),
            ("2h0m0s", 7200.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("300ms", 0.3),
            ("+5s", 5.0),
            ("1m0.5s", 60.5),
        ];
        for (text, seconds) in cases {
            let parsed = parse_go_duration(text).unwrap();
            assert!(
                (parsed.as_secs_f64() - seconds).abs() < 1e-9,
                "{text}: {parsed:?}"
            );
        }
    }

    #[test]
    fn rejects_what_go_rejects_and_negatives() {
        for text in ["", "20", "m", "1x", "1.2.3s", "s1", "-5s", "1 h"] {
            assert!(parse_go_duration(text).is_err(), "{text:?} accepted");
        }
    }
}
