//! When a sync entry runs in server mode: regsync's robfig/cron language.
//!
//! robfig/cron v3's default parser reads 5 fields (minute hour day-of-month month
//! day-of-week, Sunday = 0 or 7, day-of-month and day-of-week ORed when both are
//! restricted), the descriptors `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/
//! `@midnight`/`@hourly`, `@every <duration>`, and an optional `CRON_TZ=` or `TZ=` prefix.
//! The `cron` crate needs a seconds field and numbers Sunday as 1, so a 5-field
//! expression given to it fires on the wrong days; croner reads 5 fields as written.
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::duration::{DurationError, parse_go_duration};

/// A parsed `schedule` (or an `interval`, which regsync runs as `@every`).
#[derive(Clone)]
pub struct Schedule {
    text: String,
    zone: Option<Tz>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    Every(Duration),
}

/// Why a schedule was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// `CRON_TZ=`/`TZ=` names no IANA time zone.
    #[error("schedule {schedule:?}: unknown time zone {zone:?}")]
    TimeZone {
        /// The whole schedule.
        schedule: String,
        /// The zone name.
        zone: String,
    },
    /// Not 5 fields, or a field out of range.
    #[error(
        "schedule {schedule:?}: {reason} (expected 5 fields: minute hour day-of-month month day-of-week)"
    )]
    Cron {
        /// The whole schedule.
        schedule: String,
        /// What the cron parser said.
        reason: String,
    },
    /// A descriptor robfig/cron does not know (`@reboot`).
    #[error("schedule {schedule:?}: unknown descriptor {descriptor:?}")]
    Descriptor {
        /// The whole schedule.
        schedule: String,
        /// The descriptor.
        descriptor: String,
    },
    /// `@every` with a bad duration.
    #[error("schedule {schedule:?}: {source}")]
    Every {
        /// The whole schedule.
        schedule: String,
        /// The duration error.
        source: DurationError,
    },
    /// `@every 0s` or an `interval` of zero would spin.
    #[error("schedule {schedule:?}: the interval must be positive")]
    ZeroInterval {
        /// The whole schedule.
        schedule: String,
    },
}

impl Schedule {
    /// Parses a `schedule` value.
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        let (zone, spec) = split_zone(text, trimmed)?;
        let kind = if let Some(rest) = spec.strip_prefix('@') {
            let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            match word.to_ascii_lowercase().as_str() {
                "every" => {
                    let d =
                        parse_go_duration(arg.trim()).map_err(|source| ScheduleError::Every {
                            schedule: text.to_owned(),
                            source,
                        })?;
                    every(text, d)?
                }
                w @ ("yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight"
                | "hourly")
                    if arg.trim().is_empty() =>
                {
                    let w = if w == "midnight" { "daily" } else { w };
                    Kind::Cron(Box::new(cron(text, &format!("@{w}"))?))
                }
                _ => {
                    return Err(ScheduleError::Descriptor {
                        schedule: text.to_owned(),
                        descriptor: format!("@{word}"),
                    });
                }
            }
        } else {
            Kind::Cron(Box::new(cron(text, spec)?))
        };
        Ok(Schedule {
            text: trimmed.to_owned(),
            zone,
            kind,
        })
    }

    /// An `interval`: runs every `d`, as regsync's `@every`.
    pub fn every(d: Duration) -> Result<Schedule, ScheduleError> {
        let text = format!("@every {}", crate::duration::format_go_duration(d));
        let kind = every(&text, d)?;
        Ok(Schedule {
            text,
            zone: None,
            kind,
        })
    }

    /// The schedule as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The fixed period, for `@every` and intervals.
    pub fn period(&self) -> Option<Duration> {
        match self.kind {
            Kind::Every(d) => Some(d),
            Kind::Cron(_) => None,
        }
    }

    /// The first run strictly after `after`, or `None` if the expression never fires again.
    /// Cron expressions without a zone use the process's local time zone, as robfig/cron does.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(d) => {
                // robfig/cron rounds @every to whole seconds, at least one.
                let d = chrono::Duration::from_std(*d).ok()?;
                after.checked_add_signed(d)
            }
            Kind::Cron(c) => match self.zone {
                Some(tz) => next_in(c, &after.with_timezone(&tz)),
                None => next_in(c, &after.with_timezone(&Local)),
            },
        }
    }
}

fn next_in<Z: TimeZone>(c: &Cron, after: &DateTime<Z>) -> Option<DateTime<Utc>> {
    c.find_next_occurrence(after, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn every(text: &str, d: Duration) -> Result<Kind, ScheduleError> {
    if d.is_zero() {
        return Err(ScheduleError::ZeroInterval {
            schedule: text.to_owned(),
        });
    }
    // robfig/cron: "@every" durations below one second are raised to one second and
    // fractions of a second are dropped.
    Ok(Kind::Every(Duration::from_secs(d.as_secs().max(1))))
}

fn split_zone<'a>(text: &str, trimmed: &'a str) -> Result<(Option<Tz>, &'a str), ScheduleError> {
    for prefix in ["CRON_TZ=", "TZ="] {
        if let Some(rest) = trimmed.strip_prefix(prefix) {
            let (zone, spec) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let tz: Tz = zone.parse().map_err(|_| ScheduleError::TimeZone {
                schedule: text.to_owned(),
                zone: zone.to_owned(),
            })?;
            return Ok((Some(tz), spec.trim()));
        }
    }
    Ok((None, trimmed))
}

fn cron(text: &str, spec: &str) -> Result<Cron, ScheduleError> {
    let err = |reason: String| ScheduleError::Cron {
        schedule: text.to_owned(),
        reason,
    };
    if !spec.starts_with('@') {
        let fields = spec.split_whitespace().count();
        if fields != 5 {
            return Err(err(format!("{fields} fields")));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(spec)
        .map_err(|e| err(e.to_string()))
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike, Weekday};
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_fire_on_the_days_written() {
        // Friday 2026-11-27 03:00 UTC; "1-5" is Monday to Friday, so the next run is Monday.
        let s = Schedule::parse("CRON_TZ=UTC 0 2 * * 1-5").unwrap();
        let next = s.next_after(utc("2026-11-27T03:00:00Z")).unwrap();
        assert_eq!(next, utc("2026-11-30T02:00:00Z"));
        assert_eq!(next.weekday(), Weekday::Mon);
        // 0 and 7 are both Sunday.
        for spec in [
            "TZ=UTC 15 3 * * 0",
            "TZ=UTC 15 3 * * 7",
            "TZ=UTC 15 3 * * sun",
        ] {
            let n = Schedule::parse(spec)
                .unwrap()
                .next_after(utc("2026-11-27T00:00:00Z"))
                .unwrap();
            assert_eq!(n, utc("2026-11-29T03:15:00Z"), "{spec}");
        }
    }

    #[test]
    fn time_zones_descriptors_and_every() {
        let s = Schedule::parse("CRON_TZ=Europe/Berlin 30 4 * * *").unwrap();
        // 04:30 in Berlin (UTC+1 in November) is 03:30 UTC.
        assert_eq!(
            s.next_after(utc("2026-11-29T00:00:00Z")).unwrap(),
            utc("2026-11-29T03:30:00Z")
        );
        let h = Schedule::parse("@hourly").unwrap();
        let n = h.next_after(utc("2026-11-29T10:20:00Z")).unwrap();
        assert_eq!((n.minute(), n.second()), (0, 0));
        let m = Schedule::parse("TZ=UTC @midnight").unwrap();
        assert_eq!(
            m.next_after(utc("2026-11-29T10:20:00Z")).unwrap(),
            utc("2026-11-30T00:00:00Z")
        );
        let e = Schedule::parse("@every 1h30m").unwrap();
        assert_eq!(e.period(), Some(Duration::from_secs(5400)));
        assert_eq!(
            e.next_after(utc("2026-11-29T10:00:00Z")).unwrap(),
            utc("2026-11-29T11:30:00Z")
        );
        assert_eq!(
            Schedule::every(Duration::from_secs(90)).unwrap().as_str(),
            "@every 1m30s"
        );
        assert_eq!(
            Schedule::parse("@every 200ms").unwrap().period(),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_what_robfig_rejects() {
        let bad = |s: &str| Schedule::parse(s).unwrap_err();
        assert!(
            matches!(bad("0 0 2 * * 1-5"), ScheduleError::Cron { .. }),
            "six fields"
        );
        assert!(matches!(bad("* * *"), ScheduleError::Cron { .. }));
        assert!(matches!(bad("61 * * * *"), ScheduleError::Cron { .. }));
        assert!(matches!(bad("* 25 * * *"), ScheduleError::Cron { .. }));
        assert!(matches!(bad("@reboot"), ScheduleError::Descriptor { .. }));
        assert!(matches!(bad("@every 1d"), ScheduleError::Every { .. }));
        assert!(matches!(
            bad("@every 0s"),
            ScheduleError::ZeroInterval { .. }
        ));
        assert!(matches!(
            bad("CRON_TZ=Mars/Base 0 * * * *"),
            ScheduleError::TimeZone { .. }
        ));
        assert!(matches!(bad(""), ScheduleError::Cron { .. }));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = Schedule::parse(&s);
        }

        #[test]
        fn daily_times_land_on_the_written_minute(min in 0u32..60, hour in 0u32..24, start in 0i64..2_000_000_000) {
            let s = Schedule::parse(&format!("CRON_TZ=UTC {min} {hour} * * *")).unwrap();
            let after = Utc.timestamp_opt(start, 0).unwrap();
            let next = s.next_after(after).unwrap();
            prop_assert!(next > after);
            prop_assert!(next - after <= chrono::Duration::days(1));
            prop_assert_eq!((next.minute(), next.hour()), (min, hour));
        }
    }
}
