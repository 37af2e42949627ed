//! Go time layouts: `Time.Format` and `time.Parse` with Go's reference-time elements.
//!
//! A layout is text in which Go's reference time `Mon Jan 2 15:04:05 MST 2006`
//! marks the elements (`2006` year, `01` month, `_2` space-padded day, `.000`
//! fixed fraction, `Z07:00` ISO offset, …). Element recognition and the parsing
//! rules (spaces match runs of spaces, month names are case-insensitive, a
//! fraction may follow seconds even when the layout has none) mirror Go's
//! `time` package. Zone abbreviations are the exception: this module only has
//! fixed offsets, so `MST` formats as `UTC` or `+hhmm`, and parsing an
//! abbreviation other than `UTC`/`GMT±h` yields a zero offset (which is also
//! what Go does for an abbreviation it does not know).

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeDelta, TimeZone, Timelike};

/// Go's reference-time elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    UpperPm,
    LowerPm,
    ZoneName,
    /// Numeric offset: `z` = ISO form (`Z` for UTC), `colon`, and which parts appear.
    Offset {
        iso: bool,
        colon: bool,
        minutes: bool,
        seconds: bool,
    },
    /// Fraction of a second: separator, digit count, and whether trailing zeros are trimmed (`.999`).
    Frac {
        sep: u8,
        digits: usize,
        trim: bool,
    },
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The offset elements, longest first so `-0700` is not read as `-07` + `00`.
const OFFSETS: [(&[u8], bool, bool, bool); 5] = [
    (b"070000", false, true, true),
    (b"07:00:00", true, true, true),
    (b"0700", false, true, false),
    (b"07:00", true, true, false),
    (b"07", false, false, false),
];

/// Splits `layout` at its first element: (literal prefix, element, rest).
fn next_chunk(layout: &[u8]) -> (&[u8], Option<Std>, &[u8]) {
    let n = layout.len();
    let at = |i: usize, s: &[u8]| layout[i..].starts_with(s);
    let lower_after = |i: usize| layout.get(i).is_some_and(u8::is_ascii_lowercase);
    for i in 0..n {
        let found: Option<(Std, usize)> = match layout[i] {
            b'J' if at(i, b"January") => Some((Std::LongMonth, 7)),
            b'J' if at(i, b"Jan") && !lower_after(i + 3) => Some((Std::Month, 3)),
            b'M' if at(i, b"Monday") => Some((Std::LongWeekDay, 6)),
            b'M' if at(i, b"Mon") && !lower_after(i + 3) => Some((Std::WeekDay, 3)),
            b'M' if at(i, b"MST") => Some((Std::ZoneName, 3)),
            b'0' if layout.get(i + 1).is_some_and(|d| (b'1'..=b'6').contains(d)) => {
                let std = [
                    Std::ZeroMonth,
                    Std::ZeroDay,
                    Std::ZeroHour12,
                    Std::ZeroMinute,
                    Std::ZeroSecond,
                    Std::Year,
                ][usize::from(layout[i + 1] - b'1')];
                Some((std, 2))
            }
            b'0' if at(i, b"002") => Some((Std::ZeroYearDay, 3)),
            b'1' if at(i, b"15") => Some((Std::Hour, 2)),
            b'1' => Some((Std::NumMonth, 1)),
            b'2' if at(i, b"2006") => Some((Std::LongYear, 4)),
            b'2' => Some((Std::Day, 1)),
            // `_2006` is a literal underscore followed by the year.
            b'_' if at(i, b"_2006") => {
                return (&layout[..i + 1], Some(Std::LongYear), &layout[i + 5..]);
            }
            b'_' if at(i, b"_2") => Some((Std::UnderDay, 2)),
            b'_' if at(i, b"__2") => Some((Std::UnderYearDay, 3)),
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if at(i, b"PM") => Some((Std::UpperPm, 2)),
            b'p' if at(i, b"pm") => Some((Std::LowerPm, 2)),
            c @ (b'-' | b'Z') => OFFSETS.iter().find(|(pat, ..)| at(i + 1, pat)).map(
                |&(pat, colon, minutes, seconds)| {
                    let std = Std::Offset {
                        iso: c == b'Z',
                        colon,
                        minutes,
                        seconds,
                    };
                    (std, pat.len() + 1)
                },
            ),
            sep @ (b'.' | b',') if matches!(layout.get(i + 1), Some(b'0' | b'9')) => {
                let digit = layout[i + 1];
                let end = layout[i + 1..]
                    .iter()
                    .position(|&b| b != digit)
                    .map_or(n, |p| i + 1 + p);
                // The run must end the number: `.000` is a fraction, `.0001` is not.
                if layout.get(end).is_some_and(u8::is_ascii_digit) {
                    None
                } else {
                    let std = Std::Frac {
                        sep,
                        digits: end - i - 1,
                        trim: digit == b'9',
                    };
                    Some((std, end - i))
                }
            }
            _ => None,
        };
        if let Some((std, len)) = found {
            return (&layout[..i], Some(std), &layout[i + len..]);
        }
    }
    (layout, None, &[])
}

/// Appends `x` in decimal, zero-padded to `width` digits, with a leading `-` when negative.
fn push_int(out: &mut Vec<u8>, x: i64, width: usize) {
    if x < 0 {
        out.push(b'-');
    }
    let digits = x.unsigned_abs().to_string();
    out.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    out.extend_from_slice(digits.as_bytes());
}

/// Formats `t` with a Go layout, like Go's `Time.Format`.
pub(super) fn format(t: &DateTime<FixedOffset>, layout: &str) -> String {
    let mut out = Vec::with_capacity(layout.len() + 10);
    let mut rest = layout.as_bytes();
    let offset = i64::from(t.offset().local_minus_utc());
    let hour = i64::from(t.hour());
    loop {
        let (prefix, std, suffix) = next_chunk(rest);
        out.extend_from_slice(prefix);
        let Some(std) = std else { break };
        rest = suffix;
        match std {
            Std::Year => push_int(&mut out, i64::from(t.year()).abs() % 100, 2),
            Std::LongYear => push_int(&mut out, i64::from(t.year()), 4),
            Std::Month => out.extend_from_slice(&MONTHS[t.month0() as usize].as_bytes()[..3]),
            Std::LongMonth => out.extend_from_slice(MONTHS[t.month0() as usize].as_bytes()),
            Std::NumMonth => push_int(&mut out, i64::from(t.month()), 0),
            Std::ZeroMonth => push_int(&mut out, i64::from(t.month()), 2),
            Std::WeekDay => {
                let d = DAYS[t.weekday().num_days_from_sunday() as usize];
                out.extend_from_slice(&d.as_bytes()[..3]);
            }
            Std::LongWeekDay => {
                out.extend_from_slice(DAYS[t.weekday().num_days_from_sunday() as usize].as_bytes())
            }
            Std::Day => push_int(&mut out, i64::from(t.day()), 0),
            Std::UnderDay => {
                if t.day() < 10 {
                    out.push(b' ');
                }
                push_int(&mut out, i64::from(t.day()), 0);
            }
            Std::ZeroDay => push_int(&mut out, i64::from(t.day()), 2),
            Std::UnderYearDay => {
                let yday = t.ordinal();
                let pad = if yday < 10 {
                    2
                } else {
                    usize::from(yday < 100)
                };
                out.extend(std::iter::repeat_n(b' ', pad));
                push_int(&mut out, i64::from(yday), 0);
            }
            Std::ZeroYearDay => push_int(&mut out, i64::from(t.ordinal()), 3),
            Std::Hour => push_int(&mut out, hour, 2),
            Std::Hour12 | Std::ZeroHour12 => {
                // Noon is 12PM, midnight is 12AM.
                let h = if hour % 12 == 0 { 12 } else { hour % 12 };
                push_int(&mut out, h, if std == Std::ZeroHour12 { 2 } else { 0 });
            }
            Std::Minute => push_int(&mut out, i64::from(t.minute()), 0),
            Std::ZeroMinute => push_int(&mut out, i64::from(t.minute()), 2),
            Std::Second => push_int(&mut out, i64::from(t.second()), 0),
            Std::ZeroSecond => push_int(&mut out, i64::from(t.second()), 2),
            Std::UpperPm => out.extend_from_slice(if hour >= 12 { b"PM" } else { b"AM" }),
            Std::LowerPm => out.extend_from_slice(if hour >= 12 { b"pm" } else { b"am" }),
            Std::Offset {
                iso,
                colon,
                minutes,
                seconds,
            } => {
                if iso && offset == 0 {
                    out.push(b'Z');
                    continue;
                }
                out.push(if offset < 0 { b'-' } else { b'+' });
                let abs = offset.abs();
                push_int(&mut out, abs / 3600, 2);
                if minutes {
                    if colon {
                        out.push(b':');
                    }
                    push_int(&mut out, abs / 60 % 60, 2);
                }
                if seconds {
                    if colon {
                        out.push(b':');
                    }
                    push_int(&mut out, abs % 60, 2);
                }
            }
            Std::ZoneName => {
                // No abbreviations are known for fixed offsets; Go prints an
                // unnamed zone as -0700, and UTC by name.
                if offset == 0 {
                    out.extend_from_slice(b"UTC");
                } else {
                    out.push(if offset < 0 { b'-' } else { b'+' });
                    let minutes = offset.abs() / 60;
                    push_int(&mut out, minutes / 60, 2);
                    push_int(&mut out, minutes % 60, 2);
                }
            }
            Std::Frac { sep, digits, trim } => {
                let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
                let mut frac = &nanos.as_bytes()[..digits.min(9)];
                if trim {
                    while let [head @ .., b'0'] = frac {
                        frac = head;
                    }
                    if frac.is_empty() {
                        continue;
                    }
                }
                out.push(sep);
                out.extend_from_slice(frac);
            }
        }
    }
    // Elements are ASCII and split only at ASCII bytes, so this is valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's `Time.String`: `2006-01-02 15:04:05.999999999 -0700 MST` (without Go's monotonic-clock suffix).
pub(super) fn to_string(t: &DateTime<FixedOffset>) -> String {
    format(t, "2006-01-02 15:04:05.999999999 -0700 MST")
}

fn digit(v: &[u8], i: usize) -> Option<u32> {
    v.get(i)
        .filter(|b| b.is_ascii_digit())
        .map(|b| u32::from(b - b'0'))
}

/// One or two digits (exactly two when `fixed`).
fn getnum(v: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    let d0 = digit(v, 0)?;
    match digit(v, 1) {
        Some(d1) => Some((d0 * 10 + d1, &v[2..])),
        None if fixed => None,
        None => Some((d0, &v[1..])),
    }
}

/// One to three digits (exactly three when `fixed`).
fn getnum3(v: &[u8], fixed: bool) -> Option<(u32, &[u8])> {
    let len = v.iter().take(3).take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || (fixed && len != 3) {
        return None;
    }
    let n = v[..len].iter().fold(0, |n, b| n * 10 + u32::from(b - b'0'));
    Some((n, &v[len..]))
}

/// Matches a literal layout prefix; a space matches any run of spaces.
fn skip<'v>(mut value: &'v [u8], mut prefix: &[u8]) -> Option<&'v [u8]> {
    let cut = |s: &[u8]| -> usize { s.iter().take_while(|&&b| b == b' ').count() };
    while let Some(&p) = prefix.first() {
        if p == b' ' {
            if value.first().is_some_and(|&b| b != b' ') {
                return None;
            }
            prefix = &prefix[cut(prefix)..];
            value = &value[cut(value)..];
            continue;
        }
        if value.first() != Some(&p) {
            return None;
        }
        prefix = &prefix[1..];
        value = &value[1..];
    }
    Some(value)
}

/// Index of the name in `names` (case-insensitive) that starts `v`, using `len` bytes of each name.
fn lookup<'v>(v: &'v [u8], names: &[&str], len: Option<usize>) -> Option<(usize, &'v [u8])> {
    names.iter().enumerate().find_map(|(i, name)| {
        let name = &name.as_bytes()[..len.unwrap_or(name.len())];
        let head = v.get(..name.len())?;
        head.eq_ignore_ascii_case(name)
            .then(|| (i, &v[name.len()..]))
    })
}

/// Parses `.ddd` (first `nbytes` bytes of `v`, separator included) into nanoseconds.
fn nanos(v: &[u8], nbytes: usize) -> Option<u32> {
    if !matches!(v.first(), Some(b'.' | b',')) {
        return None;
    }
    let digits = v.get(1..nbytes.min(10))?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Some(n * 10u32.pow(9 - digits.len() as u32))
}

/// Length of a zone abbreviation at the start of `v`, by Go's rules (`MST`, `CEST`, `GMT+3`, `+03`).
fn zone_name_len(v: &[u8]) -> Option<usize> {
    if v.len() < 3 {
        return None;
    }
    if v.starts_with(b"ChST") || v.starts_with(b"MeST") {
        return Some(4);
    }
    if v.starts_with(b"GMT") {
        return Some(3 + signed_offset_len(&v[3..]).unwrap_or(0));
    }
    if matches!(v[0], b'+' | b'-') {
        return signed_offset_len(v);
    }
    let upper = v
        .iter()
        .take(6)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    match upper {
        3 => Some(3),
        4 if v[3] == b'T' || v.starts_with(b"WITA") => Some(4),
        5 if v[4] == b'T' => Some(5),
        _ => None,
    }
}

/// Length of `+h`/`-hh` (hours 1..=23) at the start of `v`.
fn signed_offset_len(v: &[u8]) -> Option<usize> {
    if !matches!(v.first(), Some(b'+' | b'-')) {
        return None;
    }
    let len = v[1..].iter().take_while(|b| b.is_ascii_digit()).count();
    let hours: u32 = std::str::from_utf8(&v[1..1 + len]).ok()?.parse().ok()?;
    (len > 0 && hours <= 23).then_some(1 + len)
}

/// Parses `value` with a Go layout, like Go's `time.Parse`; the error is the reason.
pub(super) fn parse(layout: &str, value: &str) -> Result<DateTime<FixedOffset>, String> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut layout_rest = layout.as_bytes();
    let mut v = value.as_bytes();
    let (mut year, mut month, mut day, mut yday) = (0i32, None::<u32>, None::<u32>, None::<u32>);
    let (mut hour, mut min, mut sec, mut nsec) = (0u32, 0u32, 0u32, 0u32);
    let (mut pm, mut am) = (false, false);
    let mut utc = false;
    let mut offset: Option<i32> = None;
    let mut zone: Option<Vec<u8>> = None;
    loop {
        let (prefix, std, suffix) = next_chunk(layout_rest);
        let elem = &layout_rest[prefix.len()..layout_rest.len() - suffix.len()];
        v = skip(v, prefix)
            .ok_or_else(|| format!("cannot parse {:?} as {:?}", lossy(v), lossy(prefix)))?;
        let Some(std) = std else {
            if !v.is_empty() {
                return Err(format!("extra text: {:?}", lossy(v)));
            }
            break;
        };
        layout_rest = suffix;
        let bad = |at: &[u8]| format!("cannot parse {:?} as {:?}", lossy(at), lossy(elem));
        let range = |what: &str| format!("{what} out of range");
        let before = v;
        match std {
            Std::Year => {
                let (n, rest) = getnum(v, true).ok_or_else(|| bad(v))?;
                year = if n >= 69 {
                    1900 + n as i32
                } else {
                    2000 + n as i32
                };
                v = rest;
            }
            Std::LongYear => {
                let digits = v
                    .get(..4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit))
                    .ok_or_else(|| bad(v))?;
                year = digits.iter().fold(0, |n, b| n * 10 + i32::from(b - b'0'));
                v = &v[4..];
            }
            Std::Month | Std::LongMonth => {
                let len = (std == Std::Month).then_some(3);
                let (i, rest) = lookup(v, &MONTHS, len).ok_or_else(|| bad(v))?;
                month = Some(i as u32 + 1);
                v = rest;
            }
            Std::NumMonth | Std::ZeroMonth => {
                let (n, rest) = getnum(v, std == Std::ZeroMonth).ok_or_else(|| bad(v))?;
                if !(1..=12).contains(&n) {
                    return Err(range("month"));
                }
                month = Some(n);
                v = rest;
            }
            Std::WeekDay | Std::LongWeekDay => {
                // Go checks the weekday's spelling, not that it matches the date.
                let len = (std == Std::WeekDay).then_some(3);
                v = lookup(v, &DAYS, len).ok_or_else(|| bad(v))?.1;
            }
            Std::Day | Std::UnderDay | Std::ZeroDay => {
                if std == Std::UnderDay && v.first() == Some(&b' ') {
                    v = &v[1..];
                }
                let (n, rest) = getnum(v, std == Std::ZeroDay).ok_or_else(|| bad(before))?;
                day = Some(n);
                v = rest;
            }
            Std::UnderYearDay | Std::ZeroYearDay => {
                for _ in 0..2 {
                    if std == Std::UnderYearDay && v.first() == Some(&b' ') {
                        v = &v[1..];
                    }
                }
                let (n, rest) = getnum3(v, std == Std::ZeroYearDay).ok_or_else(|| bad(before))?;
                yday = Some(n);
                v = rest;
            }
            Std::Hour => {
                let (n, rest) = getnum(v, false).ok_or_else(|| bad(v))?;
                if n >= 24 {
                    return Err(range("hour"));
                }
                hour = n;
                v = rest;
            }
            Std::Hour12 | Std::ZeroHour12 => {
                let (n, rest) = getnum(v, std == Std::ZeroHour12).ok_or_else(|| bad(v))?;
                if n > 12 {
                    return Err(range("hour"));
                }
                hour = n;
                v = rest;
            }
            Std::Minute | Std::ZeroMinute => {
                let (n, rest) = getnum(v, std == Std::ZeroMinute).ok_or_else(|| bad(v))?;
                if n >= 60 {
                    return Err(range("minute"));
                }
                min = n;
                v = rest;
            }
            Std::Second | Std::ZeroSecond => {
                let (n, rest) = getnum(v, std == Std::ZeroSecond).ok_or_else(|| bad(v))?;
                if n >= 60 {
                    return Err(range("second"));
                }
                sec = n;
                v = rest;
                // A fraction may follow the seconds even when the layout has none.
                let layout_has_frac = matches!(next_chunk(layout_rest).1, Some(Std::Frac { .. }));
                if !layout_has_frac
                    && matches!(v.first(), Some(b'.' | b','))
                    && digit(v, 1).is_some()
                {
                    let n = 1 + v[1..].iter().take_while(|b| b.is_ascii_digit()).count();
                    nsec = nanos(v, n).ok_or_else(|| bad(v))?;
                    v = &v[n..];
                }
            }
            Std::UpperPm | Std::LowerPm => {
                let (am_s, pm_s): (&[u8], &[u8]) = if std == Std::UpperPm {
                    (b"AM", b"PM")
                } else {
                    (b"am", b"pm")
                };
                match v.get(..2) {
                    Some(p) if p == pm_s => pm = true,
                    Some(p) if p == am_s => am = true,
                    _ => return Err(bad(v)),
                }
                v = &v[2..];
            }
            Std::Offset {
                iso,
                colon,
                minutes,
                seconds,
            } => {
                if iso && !seconds && v.first() == Some(&b'Z') {
                    v = &v[1..];
                    utc = true;
                    continue;
                }
                // sign, hh, then optional [:]mm and [:]ss as the element asks;
                // `starts` holds where each two-digit field begins.
                let sep = usize::from(colon);
                let mut starts = vec![1];
                let mut len = 3;
                for wanted in [minutes, seconds] {
                    if wanted {
                        starts.push(len + sep);
                        len += sep + 2;
                    }
                }
                let text = v.get(..len).ok_or_else(|| bad(v))?;
                if colon && starts.iter().skip(1).any(|&s| text[s - 1] != b':') {
                    return Err(bad(v));
                }
                let mut secs = 0i32;
                for (unit, &start) in [3600, 60, 1].iter().zip(&starts) {
                    let (n, _) = getnum(&text[start..start + 2], true).ok_or_else(|| bad(v))?;
                    secs += unit * n as i32;
                }
                offset = Some(match text[0] {
                    b'+' => secs,
                    b'-' => -secs,
                    _ => return Err(bad(v)),
                });
                v = &v[len..];
            }
            Std::ZoneName => {
                if v.starts_with(b"UTC") {
                    utc = true;
                    v = &v[3..];
                    continue;
                }
                let n = zone_name_len(v).ok_or_else(|| bad(v))?;
                zone = Some(v[..n].to_vec());
                v = &v[n..];
            }
            Std::Frac { digits, trim, .. } => {
                if trim {
                    if !matches!(v.first(), Some(b'.' | b',')) || digit(v, 1).is_none() {
                        continue; // The fraction is optional with `.999`.
                    }
                    let n = 1 + v[1..]
                        .iter()
                        .take(9)
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    nsec = nanos(v, n).ok_or_else(|| bad(v))?;
                    v = &v[n..];
                } else {
                    let n = 1 + digits;
                    if v.len() < n {
                        return Err(bad(v));
                    }
                    nsec = nanos(v, n).ok_or_else(|| bad(v))?;
                    v = &v[n..];
                }
            }
        }
    }
    if pm && hour < 12 {
        hour += 12;
    } else if am && hour == 12 {
        hour = 0;
    }
    let date = match yday {
        Some(yd) => {
            let d = NaiveDate::from_yo_opt(year, yd).ok_or("day-of-year out of range")?;
            if month.is_some_and(|m| m != d.month()) {
                return Err("day-of-year does not match month".into());
            }
            if day.is_some_and(|x| x != d.day()) {
                return Err("day-of-year does not match day".into());
            }
            d
        }
        None => NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))
            .ok_or("day out of range")?,
    };
    let naive = date
        .and_hms_nano_opt(hour, min, sec, nsec)
        .ok_or("time of day out of range")?;
    let secs = if utc {
        0
    } else if let Some(o) = offset {
        o
    } else if let Some(z) = zone {
        // GMT+3 is an offset; other abbreviations get Go's "unknown zone" zero offset.
        match z.strip_prefix(b"GMT") {
            Some(rest) if !rest.is_empty() => {
                let hours: i32 = String::from_utf8_lossy(rest)
                    .parse()
                    .map_err(|_| "bad GMT offset")?;
                hours * 3600
            }
            _ => 0,
        }
    } else {
        0
    };
    let tz = FixedOffset::east_opt(secs).ok_or("time zone offset out of range")?;
    tz.from_local_datetime(&naive)
        .single()
        .ok_or_else(|| "time out of range".to_owned())
}

/// Go's `Time.AddDate`: adds years, months and days, normalising overflow (Oct 31 + 1 month = Dec 1).
pub(super) fn add_date(
    t: &DateTime<FixedOffset>,
    years: i64,
    months: i64,
    days: i64,
) -> Option<DateTime<FixedOffset>> {
    let m0 = i64::from(t.month0()).checked_add(months)?;
    let y = i64::from(t.year())
        .checked_add(years)?
        .checked_add(m0.div_euclid(12))?;
    let first = NaiveDate::from_ymd_opt(
        i32::try_from(y).ok()?,
        u32::try_from(m0.rem_euclid(12) + 1).ok()?,
        1,
    )?;
    let delta = TimeDelta::try_days(days.checked_add(i64::from(t.day()) - 1)?)?;
    let date = first.checked_add_signed(delta)?;
    t.offset()
        .from_local_datetime(&date.and_time(t.time()))
        .single()
}

/// Go's `Time.IsZero`: the instant January 1, year 1, 00:00:00 UTC.
pub(super) fn is_zero(t: &DateTime<FixedOffset>) -> bool {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .is_some_and(|zero| t.naive_utc() == zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("test timestamp")
    }

    #[test]
    fn formats_go_reference_elements() {
        let t = at("2024-03-05T07:08:09.012300+01:30");
        let cases = [
            ("2006-01-02T15:04:05Z07:00", "2024-03-05T07:08:09+01:30"),
            ("20060102", "20240305"),
            ("Mon Jan _2 3:4:5 PM 06", "Tue Mar  5 7:8:9 AM 24"),
            ("Monday, January 2", "Tuesday, March 5"),
            ("15:04:05.000 .999 ,999999 .9|", "07:08:09.012 .012 ,0123 |"),
            (
                "-0700 -07 -07:00:00 Z0700 MST",
                "+0130 +01 +01:30:00 +0130 +0130",
            ),
            ("002 __2 pm", "065  65 am"),
            ("_2006 Janx", "_2024 Janx"),
        ];
        for (layout, want) in cases {
            assert_eq!(format(&t, layout), want, "{layout}");
        }
        assert_eq!(
            format(&at("2024-03-05T00:00:00Z"), "Z07:00 MST 3PM"),
            "Z UTC 12AM"
        );
        assert_eq!(
            to_string(&at("2024-03-05T07:08:09Z")),
            "2024-03-05 07:08:09 +0000 UTC"
        );
    }

    #[test]
    fn parses_go_layouts() {
        let ok = |layout: &str, value: &str| parse(layout, value).map(|t| t.to_rfc3339());
        assert_eq!(
            ok("2006-01-02", "2024-02-29").as_deref(),
            Ok("2024-02-29T00:00:00+00:00")
        );
        assert_eq!(
            ok("2006-01-02T15:04:05Z07:00", "2024-02-29T13:14:15-05:00").as_deref(),
            Ok("2024-02-29T13:14:15-05:00")
        );
        assert_eq!(
            ok("Jan _2 2006 3:04PM", "feb  9 2024 3:04PM").as_deref(),
            Ok("2024-02-09T15:04:00+00:00")
        );
        assert_eq!(
            ok("15:04:05", "01:02:03.25").as_deref(),
            Ok("0000-01-01T01:02:03.250+00:00")
        );
        assert_eq!(
            ok("2006 002", "2024 060").as_deref(),
            Ok("2024-02-29T00:00:00+00:00")
        );
        assert_eq!(
            ok("06 MST", "99 GMT+3").as_deref(),
            Ok("1999-01-01T00:00:00+03:00")
        );
        assert!(parse("2006-01-02", "2023-02-29").is_err_and(|e| e.contains("day out of range")));
        assert!(parse("2006", "2024x").is_err_and(|e| e.contains("extra text")));
        assert!(parse("15", "24").is_err());
        assert!(parse("2006-01-02", "é").is_err());
    }

    #[test]
    fn add_date_normalises_like_go() {
        let t = at("2023-10-31T12:00:00+02:00");
        assert_eq!(
            add_date(&t, 0, 1, 0).map(|t| t.to_rfc3339()).as_deref(),
            Some("2023-12-01T12:00:00+02:00")
        );
        assert_eq!(
            add_date(&t, 0, 0, -31).map(|t| t.to_rfc3339()).as_deref(),
            Some("2023-09-30T12:00:00+02:00")
        );
        assert_eq!(add_date(&t, i64::MAX, 0, 0), None);
        assert_eq!(add_date(&t, 0, i64::MAX, 0), None);
        assert_eq!(add_date(&t, 0, 0, i64::MAX), None);
        assert_eq!(add_date(&t, 0, 0, i64::MIN), None);
    }
}
