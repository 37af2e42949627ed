//! Go `fmt` for template values: action output, `print`, `println` and `printf`.
//!
//! Reproduces Go's visible behaviour for the verbs templates use (`%v %s %d %q
//! %x %X %o %O %b %c %U %t %T %%`), flags (`+ - # 0 space`), width, precision,
//! `*` and `[n]` argument indexes, and Go's in-band error forms
//! (`%!d(string=x)`, `%!s(MISSING)`, `%!(EXTRA int=1)`, `%!(NOVERB)`).
//! Floating-point verbs have no float values to act on and print the
//! bad-verb form, as Go does for an int.

use super::Value;
use super::{MAX_DEPTH, MAX_OUTPUT};

/// Formatting stopped at a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FmtError {
    /// The result would exceed [`MAX_OUTPUT`].
    TooLong,
    /// The value is nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

type Res = Result<(), FmtError>;

fn check(out: &str) -> Res {
    if out.len() > MAX_OUTPUT {
        Err(FmtError::TooLong)
    } else {
        Ok(())
    }
}

/// Go's verb flags, width and precision.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    sharp_v: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's type name for a value, as `%T` and the error forms print it.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Str(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Time(_) => "time.Time",
    }
}

/// How `{{ pipeline }}` prints its value: `<no value>` for nil, else like `print`.
pub(super) fn action_string(v: &Value) -> Result<String, FmtError> {
    if matches!(v, Value::Nil) {
        return Ok("<no value>".to_owned());
    }
    let mut out = String::new();
    print_arg(&mut out, v, 'v', Flags::default(), 0)?;
    Ok(out)
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
pub(super) fn sprint(args: &[&Value]) -> Result<String, FmtError> {
    let mut out = String::new();
    let mut prev_str = false;
    for (i, a) in args.iter().enumerate() {
        let is_str = matches!(a, Value::Str(_));
        if i > 0 && !is_str && !prev_str {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', Flags::default(), 0)?;
        prev_str = is_str;
    }
    Ok(out)
}

/// Go's `fmt.Sprintln`: spaces between all operands and a trailing newline.
pub(super) fn sprintln(args: &[&Value]) -> Result<String, FmtError> {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', Flags::default(), 0)?;
    }
    out.push('\n');
    check(&out)?;
    Ok(out)
}

/// Go's "too large" bound on widths and precisions.
const MAX_NUM: usize = 1_000_000;

/// Parses decimal digits at `i`; a number over 10^6 consumes the rest of the format, as in Go.
fn parse_num(b: &[u8], mut i: usize) -> (usize, bool, usize) {
    let mut num = 0usize;
    let mut present = false;
    while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
        if num > MAX_NUM {
            return (0, false, b.len());
        }
        num = num * 10 + usize::from(d - b'0');
        present = true;
        i += 1;
    }
    (num, present, i)
}

/// State of one `printf` run.
struct Printf<'a> {
    fmt: &'a [u8],
    args: &'a [&'a Value],
    argn: usize,
    reordered: bool,
    good_arg: bool,
}

impl Printf<'_> {
    /// An explicit `[n]` argument index at `i`: returns the new position and whether one was found.
    fn arg_number(&mut self, i: usize) -> (usize, bool) {
        if self.fmt.get(i) != Some(&b'[') {
            return (i, false);
        }
        self.reordered = true;
        let rest = &self.fmt[i..];
        let Some(close) = rest
            .iter()
            .position(|&c| c == b']')
            .filter(|_| rest.len() >= 3)
        else {
            self.good_arg = false;
            return (i + 1, false);
        };
        let (n, present, end) = parse_num(rest, 1);
        if !present || end != close {
            self.good_arg = false;
            return (i + close + 1, false);
        }
        if (1..=self.args.len()).contains(&n) {
            self.argn = n - 1;
        } else {
            self.good_arg = false;
        }
        (i + close + 1, true)
    }

    /// An int argument for `*`; None (with the argument consumed) when it is not a small int.
    fn int_arg(&mut self) -> Option<i64> {
        let a = self.args.get(self.argn)?;
        self.argn += 1;
        match a {
            Value::Int(n) if n.unsigned_abs() <= MAX_NUM as u64 => Some(*n),
            _ => None,
        }
    }
}

/// Go's `fmt.Sprintf`.
pub(super) fn sprintf(format: &str, args: &[&Value]) -> Result<String, FmtError> {
    let mut out = String::new();
    let mut p = Printf {
        fmt: format.as_bytes(),
        args,
        argn: 0,
        reordered: false,
        good_arg: true,
    };
    let b = p.fmt;
    let mut i = 0;
    while i < b.len() {
        let lit_end = format[i..].find('%').map_or(b.len(), |off| i + off);
        out.push_str(&format[i..lit_end]);
        check(&out)?;
        if lit_end >= b.len() {
            break;
        }
        i = lit_end + 1;
        let mut f = Flags::default();
        while let Some(&c) = b.get(i) {
            match c {
                b'#' => f.sharp = true,
                b'0' => f.zero = !f.minus,
                b'+' => f.plus = true,
                b'-' => {
                    f.minus = true;
                    f.zero = false;
                }
                b' ' => f.space = true,
                _ => break,
            }
            i += 1;
        }
        p.good_arg = true;
        let (ni, mut after_index) = p.arg_number(i);
        i = ni;
        if b.get(i) == Some(&b'*') {
            i += 1;
            match p.int_arg() {
                Some(w) => {
                    if w < 0 {
                        f.minus = true;
                        f.zero = false;
                    }
                    f.width = Some(w.unsigned_abs() as usize);
                }
                None => out.push_str("%!(BADWIDTH)"),
            }
            after_index = false;
        } else {
            let (w, present, ni) = parse_num(b, i);
            i = ni;
            if present {
                f.width = Some(w);
                if after_index {
                    p.good_arg = false;
                }
            }
        }
        if i + 1 < b.len() && b[i] == b'.' {
            i += 1;
            if after_index {
                p.good_arg = false;
            }
            let (ni, found) = p.arg_number(i);
            i = ni;
            after_index = found;
            if b.get(i) == Some(&b'*') {
                i += 1;
                match p.int_arg() {
                    // A negative precision is as bad as a missing one.
                    Some(n) if n >= 0 => f.prec = Some(n as usize),
                    _ => out.push_str("%!(BADPREC)"),
                }
                after_index = false;
            } else {
                let (n, present, ni) = parse_num(b, i);
                i = ni;
                f.prec = Some(if present { n } else { 0 });
            }
        }
        if !after_index {
            i = p.arg_number(i).0;
        }
        let Some(verb) = format.get(i..).and_then(|s| s.chars().next()) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
        } else if !p.good_arg {
            out.push_str(&format!("%!{verb}(BADINDEX)"));
        } else if let Some(arg) = args.get(p.argn) {
            if verb == 'v' {
                // Go reads `#` and `+` with %v as "Go syntax" and "field names".
                f.sharp_v = f.sharp;
                f.sharp = false;
                f.plus = false;
            }
            print_arg(&mut out, arg, verb, f, 0)?;
            p.argn += 1;
        } else {
            out.push_str(&format!("%!{verb}(MISSING)"));
        }
        check(&out)?;
    }
    if !p.reordered && p.argn < args.len() {
        out.push_str("%!(EXTRA ");
        for (k, a) in args[p.argn..].iter().enumerate() {
            if k > 0 {
                out.push_str(", ");
            }
            if matches!(a, Value::Nil) {
                out.push_str("<nil>");
            } else {
                out.push_str(type_name(a));
                out.push('=');
                print_arg(&mut out, a, 'v', Flags::default(), 0)?;
            }
        }
        out.push(')');
    }
    check(&out)?;
    Ok(out)
}

/// Appends `s` padded to the width (in characters), with zeros when the `0` flag is set.
fn pad(out: &mut String, s: &str, f: Flags) -> Res {
    let fill = f.width.unwrap_or(0).saturating_sub(s.chars().count());
    let c = if f.zero { '0' } else { ' ' };
    if f.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(c, fill));
    } else {
        out.extend(std::iter::repeat_n(c, fill));
        out.push_str(s);
    }
    check(out)
}

fn bad_verb(out: &mut String, v: &Value, verb: char, f: Flags, depth: usize) -> Res {
    out.push_str("%!");
    out.push(verb);
    out.push('(');
    if matches!(v, Value::Nil) {
        out.push_str("<nil>");
    } else {
        out.push_str(type_name(v));
        out.push('=');
        print_arg(out, v, 'v', f, depth + 1)?;
    }
    out.push(')');
    check(out)
}

/// Formats one operand with one verb, recursing into lists and maps like Go.
fn print_arg(out: &mut String, v: &Value, verb: char, f: Flags, depth: usize) -> Res {
    if depth > MAX_DEPTH {
        return Err(FmtError::TooDeep);
    }
    if verb == 'T' {
        return pad(out, type_name(v), f);
    }
    match v {
        Value::Nil if verb == 'v' => pad(out, "<nil>", f),
        Value::Bool(b) if matches!(verb, 'v' | 't') => {
            pad(out, if *b { "true" } else { "false" }, f)
        }
        Value::Int(n) => fmt_int(out, *n, verb, f, depth),
        Value::Str(s) => fmt_str(out, s, verb, f, depth, v),
        Value::Time(t) if matches!(verb, 'v' | 's' | 'q' | 'x' | 'X') => {
            // time.Time is a Stringer: these verbs format its String().
            let f = Flags {
                sharp_v: false,
                ..f
            };
            fmt_str(out, &super::time::to_string(t), verb, f, depth, v)
        }
        Value::List(items) => {
            if f.sharp_v {
                out.push_str("[]interface {}{");
            } else {
                out.push('[');
            }
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if f.sharp_v { ", " } else { " " });
                }
                print_elem(out, item, verb, f, depth)?;
            }
            out.push(if f.sharp_v { '}' } else { ']' });
            check(out)
        }
        Value::Map(m) => {
            out.push_str(if f.sharp_v {
                "map[string]interface {}{"
            } else {
                "map["
            });
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(if f.sharp_v { ", " } else { " " });
                }
                fmt_str(out, k, verb, f, depth + 1, &Value::Nil)?;
                out.push(':');
                print_elem(out, item, verb, f, depth)?;
            }
            out.push(if f.sharp_v { '}' } else { ']' });
            check(out)
        }
        _ => bad_verb(out, v, verb, f, depth),
    }
}

/// A list or map element; Go shows a nil element as `<nil>` (or `interface {}(nil)` for `%#v`).
fn print_elem(out: &mut String, item: &Value, verb: char, f: Flags, depth: usize) -> Res {
    match item {
        Value::Nil if f.sharp_v => pad(out, "interface {}(nil)", f),
        _ => print_arg(out, item, verb, f, depth + 1),
    }
}

/// `whole` is the value being printed, for the bad-verb form (Nil when `s` is a map key).
fn fmt_str(out: &mut String, s: &str, verb: char, f: Flags, depth: usize, whole: &Value) -> Res {
    let truncated = match f.prec {
        Some(p) => s.char_indices().nth(p).map_or(s, |(end, _)| &s[..end]),
        None => s,
    };
    match verb {
        'v' if f.sharp_v => pad(out, &quote(s, '"', false), f),
        'v' | 's' => pad(out, truncated, f),
        'q' => {
            if f.sharp && can_backquote(truncated) {
                pad(out, &format!("`{truncated}`"), f)
            } else {
                pad(out, &quote(truncated, '"', f.plus), f)
            }
        }
        'x' | 'X' => {
            let bytes = &s.as_bytes()[..f.prec.unwrap_or(usize::MAX).min(s.len())];
            let mut hex = String::with_capacity(bytes.len() * 3);
            for (i, byte) in bytes.iter().enumerate() {
                if i > 0 && f.space {
                    hex.push(' ');
                }
                if f.sharp && (f.space || i == 0) {
                    hex.push_str(if verb == 'x' { "0x" } else { "0X" });
                }
                if verb == 'x' {
                    hex.push_str(&format!("{byte:02x}"));
                } else {
                    hex.push_str(&format!("{byte:02X}"));
                }
            }
            pad(out, &hex, f)
        }
        _ => match whole {
            Value::Nil => bad_verb(out, &Value::Str(s.to_owned()), verb, f, depth),
            w => bad_verb(out, w, verb, f, depth),
        },
    }
}

fn fmt_int(out: &mut String, n: i64, verb: char, f: Flags, depth: usize) -> Res {
    let (base, upper) = match verb {
        'v' | 'd' => (10, false),
        'b' => (2, false),
        'o' | 'O' => (8, false),
        'x' => (16, false),
        'X' => (16, true),
        'c' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            return pad(out, c.encode_utf8(&mut [0; 4]), f);
        }
        'q' => {
            let c = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}');
            let q = if f.sharp && is_print(c) && c != '\'' {
                format!("'{c}'")
            } else {
                quote(c.encode_utf8(&mut [0; 4]), '\'', f.plus)
            };
            return pad(out, &q, f);
        }
        'U' => {
            let mut u = format!("U+{:04X}", n as u64);
            if let Some(c) = u32::try_from(n)
                .ok()
                .and_then(char::from_u32)
                .filter(|c| f.sharp && is_print(*c))
            {
                u.push_str(&format!(" '{c}'"));
            }
            return pad(out, &u, Flags { zero: false, ..f });
        }
        _ => return bad_verb(out, &Value::Int(n), verb, f, depth),
    };
    let negative = n < 0;
    let mag = n.unsigned_abs();
    let mut digits = match (base, upper) {
        (2, _) => format!("{mag:b}"),
        (8, _) => format!("{mag:o}"),
        (16, false) => format!("{mag:x}"),
        (16, true) => format!("{mag:X}"),
        _ => mag.to_string(),
    };
    // Two ways to ask for leading zeros: %.3d, or %03d (when no precision is given).
    let min = match (f.prec, f.width) {
        (Some(0), _) if n == 0 => return pad(out, "", Flags { zero: false, ..f }),
        (Some(p), _) => p,
        (None, Some(w)) if f.zero => w.saturating_sub(usize::from(negative || f.plus || f.space)),
        _ => 0,
    };
    if digits.len() < min {
        digits.insert_str(0, &"0".repeat(min - digits.len()));
    }
    let mut prefix = String::new();
    if negative {
        prefix.push('-');
    } else if f.plus {
        prefix.push('+');
    } else if f.space {
        prefix.push(' ');
    }
    if f.sharp {
        match base {
            2 => prefix.push_str("0b"),
            8 if !digits.starts_with('0') => prefix.push('0'),
            16 => prefix.push_str(if upper { "0X" } else { "0x" }),
            _ => {}
        }
    }
    if verb == 'O' {
        prefix.push_str("0o");
    }
    prefix.push_str(&digits);
    pad(out, &prefix, Flags { zero: false, ..f })
}

/// Go's `strconv.IsPrint`, approximately: no controls, no spaces other than U+0020, no format characters.
fn is_print(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'))
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c == '\t' || (c != '`' && c != '\u{FEFF}' && !c.is_control()))
}

/// Go's `strconv.Quote` (or `QuoteToASCII` when `ascii`), with `q` as the quote character.
fn quote(s: &str, q: char, ascii: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        if c == q || c == '\\' {
            out.push('\\');
            out.push(c);
        } else if is_print(c) && (c.is_ascii() || !ascii) {
            out.push(c);
        } else {
            match c {
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push_str(&format!("\\U{:08x}", c as u32)),
            }
        }
    }
    out.push(q);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    fn printf(format: &str, args: &[Value]) -> String {
        let refs: Vec<&Value> = args.iter().collect();
        sprintf(format, &refs).unwrap_or_else(|e| format!("{e:?}"))
    }

    #[test]
    fn verbs_match_go() {
        let i = Value::Int;
        let cases: Vec<(&str, Vec<Value>, &str)> = vec![
            ("%d%02d%02d", vec![i(2024), i(3), i(5)], "20240305"),
            (
                "%s-%v|%5s|%-5s|%.2s",
                vec![s("a"), i(1), s("ab"), s("ab"), s("héllo")],
                "a-1|   ab|ab   |hé",
            ),
            (
                "%q %q %#q",
                vec![s("a\"b\n"), i(65), s("x")],
                r#""a\"b\n" 'A' `x`"#,
            ),
            (
                "%x %X %#x %o %#o %b %O",
                vec![i(255), s("hi"), i(255), i(8), i(8), i(5), i(8)],
                "ff 6869 0xff 10 010 101 0o10",
            ),
            (
                "%+d % d %05d %-5d| %.3d %08.3d",
                vec![i(5), i(5), i(-42), i(7), i(7), i(7)],
                "+5  5 -0042 7    | 007      007",
            ),
            (
                "%c %U %#U",
                vec![i(0x263A), i(0x263A), i(0x41)],
                "☺ U+263A U+0041 'A'",
            ),
            (
                "%t %v %T",
                vec![Value::Bool(true), Value::Nil, Value::List(vec![])],
                "true <nil> []interface {}",
            ),
            ("%d %s", vec![s("x"), i(3)], "%!d(string=x) %!s(int=3)"),
            ("%s %d", vec![s("x")], "x %!d(MISSING)"),
            (
                "%s",
                vec![s("x"), i(1), Value::Nil],
                "x%!(EXTRA int=1, <nil>)",
            ),
            (
                "%[2]s %[1]s %[3]s",
                vec![s("a"), s("b")],
                "b a %!s(BADINDEX)",
            ),
            (
                "%*d|%-*d|%.*s",
                vec![i(4), i(1), i(3), i(2), i(2), s("abc")],
                "   1|2  |ab",
            ),
            ("100%% %", vec![], "100% %!(NOVERB)"),
            (
                "%v %d",
                vec![
                    Value::List(vec![s("a"), i(1)]),
                    Value::List(vec![i(1), s("b")]),
                ],
                "[a 1] [1 %!d(string=b)]",
            ),
            ("%f %s", vec![i(1), Value::Nil], "%!f(int=1) %!s(<nil>)"),
        ];
        for (format, args, want) in cases {
            assert_eq!(printf(format, &args), want, "{format}");
        }
    }

    #[test]
    fn print_spacing_matches_go() {
        let (a, one, two) = (s("a"), Value::Int(1), Value::Int(2));
        assert_eq!(sprint(&[&a, &one, &two, &a]).as_deref(), Ok("a1 2a"));
        assert_eq!(sprintln(&[&a, &one]).as_deref(), Ok("a 1\n"));
        assert_eq!(action_string(&Value::Nil).as_deref(), Ok("<no value>"));
    }

    #[test]
    fn huge_widths_are_bounded() {
        assert_eq!(
            printf("%99999999999d", &[Value::Int(1)]),
            "%!(NOVERB)%!(EXTRA int=1)"
        );
        let many = "%1000000d".repeat(3);
        assert_eq!(
            printf(&many, &[Value::Int(1), Value::Int(1), Value::Int(1)]),
            "TooLong"
        );
    }
}
