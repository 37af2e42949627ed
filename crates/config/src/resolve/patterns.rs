//! Tag and repository patterns: compiled as regsync compiles them, with a warning where
//! what regsync's loader does with the text is likely not what its author meant.
use super::*;

/// Tags that any pattern meant to select something would leave out at least one of.
const PROBES: &[&str] = &["latest", "1.0.0", "v2", "a", "0", "x-y_z.9"];

impl Ctx<'_> {
    pub(super) fn patterns(
        &mut self,
        scope: &Scope,
        field: &str,
        list: &[Spanned<Scalar>],
        errs: &mut Errors,
    ) -> Vec<Pattern> {
        let mut out = Vec::with_capacity(list.len());
        for (i, p) in list.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let Scalar(text, null) = &p.value;
            let pattern = match Pattern::new(text) {
                Ok(pattern) => pattern,
                Err(e) => {
                    errs.keep(self.err::<()>(
                        scope,
                        &field,
                        Some(p.defined),
                        ErrorKind::Regex {
                            pattern: text.clone(),
                            source: Box::new(e),
                        },
                    ));
                    continue;
                }
            };
            let reason = if *null {
                Some(
                    "a blank item (YAML null) is read as \"\", as regsync reads it, and matches \
                     no tag; remove it, or write the tag you meant"
                        .to_owned(),
                )
            } else if let Some(go) = go_yaml_number(text).filter(|n| n != text)
                && !self.quoted_at(p.defined)
            {
                Some(format!(
                    "an unquoted number: regferry reads it as written, \"{text}\", but regsync \
                     reads it as \"{go}\"; quote it ('{text}') so both read the same"
                ))
            } else if PROBES.iter().all(|t| pattern.is_match(t)) {
                let effect = if field.contains(".deny[") {
                    ", so this entry copies nothing"
                } else {
                    ""
                };
                Some(format!(
                    "matches every tag{effect} (in regsync too, which compiles it as ^pattern$); \
                     if it was meant as a glob, write the regular expression, such as .* or \
                     v1\\..*"
                ))
            } else if pattern.unanchored_start() {
                Some(format!(
                    "starts with a repetition operator, which regsync's regex applies to its ^: \
                     the start is unanchored, so this matches any tag ending in what follows \
                     (write .{text} to say so)"
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                self.warn(
                    scope,
                    &field,
                    Some(p.defined),
                    WarningKind::Pattern {
                        pattern: text.clone(),
                        reason,
                    },
                );
            }
            out.push(pattern);
        }
        out
    }

    /// Whether the value at `loc` was written in quotes.
    fn quoted_at(&self, loc: Location) -> bool {
        let Some(offset) = loc.span().byte_offset() else {
            return false;
        };
        matches!(
            self.text.as_bytes().get(offset as usize),
            Some(b'\'' | b'"')
        )
    }
}

/// What goccy/go-yaml (regsync's YAML library) makes of an unquoted scalar that it reads
/// as a number, when it is then read into a string: its canonical number text (`1.0` →
/// `1`, `3.10` → `3.1`, `010` → `8`, `0x10` → `16`); `None` for anything that is no
/// number to it.
pub(crate) fn go_yaml_number(text: &str) -> Option<String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let radix = |prefix: &str, radix: u32| {
        let d = digits.strip_prefix(prefix)?.replace('_', "");
        let v = i128::from_str_radix(&d, radix).ok()?;
        Some(format!("{sign}{v}"))
    };
    if let Some(n) = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
    {
        return Some(n);
    }
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        let d = digits.replace('_', "");
        // A leading 0 is octal, as in YAML 1.1.
        let v = if d.len() > 1 && d.starts_with('0') {
            i128::from_str_radix(&d, 8).ok()?
        } else {
            d.parse::<i128>().ok()?
        };
        return Some(format!("{sign}{v}"));
    }
    let is_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-' | b'_'))
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits.contains(['.', 'e', 'E'])
        && !digits.starts_with(['e', 'E']);
    if !is_float {
        return None;
    }
    let v: f64 = digits.replace('_', "").parse().ok()?;
    Some(format!("{sign}{v}"))
}

#[cfg(test)]
mod tests {
    use super::go_yaml_number;

    #[test]
    fn numbers_read_as_goccy_reads_them() {
        for (text, go) in [
            ("1.0", Some("1")),
            ("3.10", Some("3.1")),
            ("4.14", Some("4.14")),
            ("010", Some("8")),
            ("0x10", Some("16")),
            ("3", Some("3")),
            ("1e3", Some("1000")),
            ("v1.0", None),
            ("1.0.0", None),
            ("latest", None),
            ("1.2-alpine", None),
            ("", None),
        ] {
            assert_eq!(go_yaml_number(text).as_deref(), go, "{text}");
        }
    }
}
