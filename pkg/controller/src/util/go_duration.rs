//! Go's `time.ParseDuration` syntax, for flags and Machine fields written for Go
//! (`2h0m0s`, `1.5h`, `90s`, `300ms`). Negative durations are refused: nothing here may be
//! negative, which is what MCM's option validation enforces after parsing.
//!
//! And Go's `time.Duration.String()`, since MCM prints durations into Machine descriptions
//! and annotations with `%s`, and tools read those texts.

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

/// A duration as Go's `Duration.String()` prints it: `0s`, `1.5s`, `1m30.5s`, `20m0s`,
/// `1h2m5s`; below a second in the largest of ms, µs, ns that fits (`1.5ms`, `250µs`).
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    let (whole_unit, unit) = match nanos {
        n if n < 1_000 => return format!("{n}ns"),
        n if n < 1_000_000 => (1_000, "µs"),
        n if n < 1_000_000_000 => (1_000_000, "ms"),
        _ => (1_000_000_000, "s"),
    };
    let mut text = String::new();
    let mut whole = nanos / whole_unit;
    if unit == "s" {
        let (hours, minutes) = (whole / 3600, whole / 60 % 60);
        if hours > 0 {
            text.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            text.push_str(&format!("{minutes}m"));
        }
        whole %= 60;
    }
    text.push_str(&whole.to_string());
    text.push_str(&fraction(nanos % whole_unit, whole_unit));
    text.push_str(unit);
    text
}

/// `.5` for 500 of 1000: the remainder's decimal digits, trailing zeros dropped.
fn fraction(remainder: u128, of: u128) -> String {
    if remainder == 0 {
        return String::new();
    }
    let width = of.ilog10() as usize;
    let digits = format!("{remainder:0width$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_go_prints() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(20 * 60), "20m0s"),
            (Duration::from_secs(10 * 60), "10m0s"),
            (Duration::from_secs(3725), "1h2m5s"),
            (Duration::from_secs(2 * 3600), "2h0m0s"),
            (Duration::from_secs(3600 + 5), "1h0m5s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_nanos(192_345_678_901), "3m12.345678901s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
            (Duration::from_millis(1), "1ms"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_micros(250), "250µs"),
            (Duration::from_nanos(1_050), "1.05µs"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_secs(100 * 3600), "100h0m0s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn formatted_durations_parse_back() {
        for duration in [
            Duration::from_secs(3725),
            Duration::from_millis(90_500),
            Duration::from_micros(1_500),
        ] {
            let parsed = parse_go_duration(&format_go_duration(duration)).unwrap();
            assert!((parsed.as_secs_f64() - duration.as_secs_f64()).abs() < 1e-9);
        }
    }

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
