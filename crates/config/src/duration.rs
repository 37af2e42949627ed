//! Durations as Go writes them (`90s`, `1h30m`, `1.5h`, `500ms`), because regsync configs
//! are parsed with Go's `time.ParseDuration`. humantime accepts a different language
//! (`1d`, `2 hours`, no `µs` alias), so parsing is our own; humantime formats durations
//! for people in logs and `check` output.
use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not Go duration syntax.
    #[error("{text:?} is not a duration (use Go syntax such as 90s, 15m, 1h30m)")]
    Syntax {
        /// The rejected text.
        text: String,
    },
    /// A unit Go does not know (`d`, `w`, `y`, …).
    #[error("{text:?}: unknown unit {unit:?} (valid: ns, us, µs, ms, s, m, h)")]
    Unit {
        /// The rejected text.
        text: String,
        /// The unit.
        unit: String,
    },
    /// Negative durations make no sense for intervals, timeouts or expiries.
    #[error("{text:?}: must not be negative")]
    Negative {
        /// The rejected text.
        text: String,
    },
    /// Larger than this program can count.
    #[error("{text:?}: too large")]
    Overflow {
        /// The rejected text.
        text: String,
    },
}

/// Parses a Go duration. `0` alone is allowed, as in Go; other values need units.
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax {
        text: text.to_owned(),
    };
    let s = text.trim();
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(syntax());
    }
    let mut total: u128 = 0; // nanoseconds
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(syntax()),
            other => {
                return Err(DurationError::Unit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let overflow = || DurationError::Overflow {
            text: text.to_owned(),
        };
        let whole: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| overflow())?
        };
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        // Fractional part: keep at most 30 digits; beyond nanoseconds they cannot matter.
        let mut frac_scale = scale;
        for d in frac_part.bytes().take(30) {
            frac_scale /= 10;
            value = value
                .checked_add(u128::from(d - b'0') * frac_scale)
                .ok_or_else(overflow)?;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative {
            text: text.to_owned(),
        });
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow {
        text: text.to_owned(),
    })?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration compactly in Go syntax, dropping zero parts: `1h30m`, `5m`, `1m30s`,
/// `500ms`, `0s`. The result parses back to the same value here and in Go.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let total_secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if total_secs == 0 {
        return sub_second(nanos);
    }
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || nanos > 0 {
        out.push_str(&seconds_with_fraction(s, nanos));
    }
    out
}

/// Formats a duration exactly as Go's `time.Duration.String()` does (`1h30m0s`, `5m0s`),
/// for templates that print `.Sync.Interval`.
pub fn go_duration_string(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let total_secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if total_secs == 0 {
        return sub_second(nanos);
    }
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let secs = seconds_with_fraction(s, nanos);
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

fn seconds_with_fraction(s: u64, nanos: u32) -> String {
    if nanos == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{nanos:09}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    }
}

fn sub_second(nanos: u32) -> String {
    let (value, unit, width) = if nanos >= 1_000_000 {
        (nanos, "ms", 6)
    } else if nanos >= 1_000 {
        (nanos, "µs", 3)
    } else {
        return format!("{nanos}ns");
    };
    let div = 10u32.pow(width);
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        format!("{whole}{unit}")
    } else {
        let frac = format!("{frac:0w$}", w = width as usize);
        format!("{whole}.{}{unit}", frac.trim_end_matches('0'))
    }
}

/// A duration for people: `4m 59s`.
pub fn humanize(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Duration {
        parse_go_duration(s).unwrap()
    }

    #[test]
    fn go_syntax() {
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1h2m3s4ms"), Duration::from_millis(3_723_004));
        assert!(matches!(
            parse_go_duration("1d"),
            Err(DurationError::Unit { .. })
        ));
        assert!(matches!(
            parse_go_duration("60"),
            Err(DurationError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration(""),
            Err(DurationError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration("."),
            Err(DurationError::Syntax { .. })
        ));
        assert!(matches!(
            parse_go_duration("-5m"),
            Err(DurationError::Negative { .. })
        ));
        assert!(matches!(
            parse_go_duration("1 h"),
            Err(DurationError::Unit { .. })
        ));
        assert!(matches!(
            parse_go_duration("99999999999999999999999999999h"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats() {
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_go_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration_string(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(go_duration_string(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration_string(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration_string(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(humanize(Duration::from_secs(299)), "4m 59s");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn format_round_trips(secs in 0u64..10_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)).unwrap(), d);
            prop_assert_eq!(parse_go_duration(&go_duration_string(d)).unwrap(), d);
        }
    }
}
