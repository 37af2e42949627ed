//! Tokenizer: splits template text into text runs and action tokens.
//!
//! Trim markers (`{{- ` and ` -}}`) and comments are resolved here, as in Go's
//! lexer, so the parser never sees them. Inside actions, Go treats space, tab,
//! CR and LF alike, and requires an ASCII space-class character next to the
//! `-` of a trim marker so that `{{-3}}` stays the number -3.

use super::Error;

/// One token kind.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Literal text outside actions (already trimmed).
    Text(String),
    /// `{{`
    Left,
    /// `}}`
    Right,
    /// A run of spaces inside an action.
    Space,
    /// `|`
    Pipe,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    /// `,`
    Comma,
    /// Any other printable ASCII character; always a syntax error later.
    Char(char),
    /// `.` on its own.
    Dot,
    /// `.Name`, stored without the dot.
    Field(String),
    /// `$` or `$name`, stored with the `$`.
    Var(String),
    /// A bare name: a function.
    Ident(String),
    /// A keyword.
    Keyword(Kw),
    /// `true` or `false`.
    Bool(bool),
    /// An integer or character constant.
    Int(i64),
    /// A quoted or raw string, unquoted.
    Str(String),
    /// End of input.
    Eof,
}

/// Go template keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kw {
    Block,
    Break,
    Continue,
    Define,
    Else,
    End,
    If,
    Nil,
    Range,
    Template,
    With,
}

impl Kw {
    fn from_word(w: &str) -> Option<Kw> {
        Some(match w {
            "block" => Kw::Block,
            "break" => Kw::Break,
            "continue" => Kw::Continue,
            "define" => Kw::Define,
            "else" => Kw::Else,
            "end" => Kw::End,
            "if" => Kw::If,
            "nil" => Kw::Nil,
            "range" => Kw::Range,
            "template" => Kw::Template,
            "with" => Kw::With,
            _ => return None,
        })
    }

    /// The keyword as written.
    pub(super) fn word(self) -> &'static str {
        match self {
            Kw::Block => "block",
            Kw::Break => "break",
            Kw::Continue => "continue",
            Kw::Define => "define",
            Kw::Else => "else",
            Kw::End => "end",
            Kw::If => "if",
            Kw::Nil => "nil",
            Kw::Range => "range",
            Kw::Template => "template",
            Kw::With => "with",
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

/// A syntax error at `offset`.
pub(super) fn syntax(offset: usize, message: impl Into<String>) -> Error {
    Error::Syntax {
        offset,
        message: message.into(),
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

/// `{{- ` : the marker must be followed by a space character.
fn has_left_trim(after_delim: &[u8]) -> bool {
    after_delim.len() >= 2 && after_delim[0] == b'-' && is_space_byte(after_delim[1])
}

/// At `}}` (Some(false)) or ` -}}` (Some(true)), else None.
fn at_right_delim(rest: &[u8]) -> Option<bool> {
    if rest.starts_with(b"}}") {
        Some(false)
    } else if rest.len() >= 4 && is_space_byte(rest[0]) && rest[1] == b'-' && &rest[2..4] == b"}}" {
        Some(true)
    } else {
        None
    }
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    toks: Vec<Token>,
    parens: usize,
}

/// Tokenizes a whole template.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let mut l = Lexer {
        src,
        pos: 0,
        toks: Vec::new(),
        parens: 0,
    };
    let mut trim_leading = false;
    loop {
        let found = src[l.pos..].find("{{").map(|i| l.pos + i);
        let text_end = found.unwrap_or(src.len());
        let mut text_start = l.pos;
        if trim_leading {
            text_start = text_end - src[text_start..text_end].trim_start_matches(is_space).len();
        }
        let left_trim = found.is_some_and(|d| has_left_trim(&src.as_bytes()[d + 2..]));
        let mut text = &src[text_start..text_end];
        if left_trim {
            text = text.trim_end_matches(is_space);
        }
        if !text.is_empty() {
            l.push(Tok::Text(text.to_owned()), text_start);
        }
        let Some(delim) = found else {
            l.push(Tok::Eof, src.len());
            return Ok(l.toks);
        };
        let inner = delim + 2 + if left_trim { 2 } else { 0 };
        if src[inner..].starts_with("/*") {
            trim_leading = l.comment(delim, inner + 2)?;
            continue;
        }
        l.push(Tok::Left, delim);
        l.pos = inner;
        l.parens = 0;
        trim_leading = l.action()?;
    }
}

impl<'a> Lexer<'a> {
    fn push(&mut self, tok: Tok, pos: usize) {
        self.toks.push(Token { tok, pos });
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    /// Skips a comment whose body starts at `body`; returns whether it ends with a trim marker.
    fn comment(&mut self, delim: usize, body: usize) -> Result<bool, Error> {
        let Some(len) = self.src[body..].find("*/") else {
            return Err(syntax(delim, "unclosed comment"));
        };
        let end = body + len + 2;
        match at_right_delim(&self.src.as_bytes()[end..]) {
            Some(trim) => {
                self.pos = end + if trim { 4 } else { 2 };
                Ok(trim)
            }
            None => Err(syntax(end, "comment ends before closing delimiter")),
        }
    }

    /// Lexes one action after its `{{`; returns whether its `}}` carried a trim marker.
    fn action(&mut self) -> Result<bool, Error> {
        loop {
            let start = self.pos;
            if let Some(trim) = at_right_delim(&self.src.as_bytes()[start..]) {
                if self.parens > 0 {
                    return Err(syntax(start, "unclosed left paren"));
                }
                let delim = if trim { start + 2 } else { start };
                self.pos = delim + 2;
                self.push(Tok::Right, delim);
                return Ok(trim);
            }
            let Some(c) = self.peek_char() else {
                return Err(syntax(start, "unclosed action"));
            };
            match c {
                c if is_space(c) => {
                    while let Some(c) = self.peek_char() {
                        if !is_space(c)
                            || at_right_delim(&self.src.as_bytes()[self.pos..]).is_some()
                        {
                            break;
                        }
                        self.pos += 1;
                    }
                    self.push(Tok::Space, start);
                }
                ':' => {
                    if !self.src[start + 1..].starts_with('=') {
                        return Err(syntax(start, "expected :="));
                    }
                    self.pos += 2;
                    self.push(Tok::Declare, start);
                }
                '=' | ',' | '|' | '(' => {
                    self.pos += 1;
                    let tok = match c {
                        '=' => Tok::Assign,
                        ',' => Tok::Comma,
                        '|' => Tok::Pipe,
                        _ => {
                            self.parens += 1;
                            Tok::LParen
                        }
                    };
                    self.push(tok, start);
                }
                ')' => {
                    if self.parens == 0 {
                        return Err(syntax(start, "unexpected right paren"));
                    }
                    self.parens -= 1;
                    self.pos += 1;
                    self.push(Tok::RParen, start);
                }
                '"' => self.quoted()?,
                '`' => self.raw()?,
                '\'' => self.char_constant()?,
                '$' => {
                    self.pos += 1;
                    let name = self.alnum_run()?;
                    self.push(Tok::Var(format!("${name}")), start);
                }
                '.' if !self
                    .src
                    .as_bytes()
                    .get(start + 1)
                    .is_some_and(u8::is_ascii_digit) =>
                {
                    self.pos += 1;
                    let name = self.alnum_run()?;
                    let tok = if name.is_empty() {
                        Tok::Dot
                    } else {
                        Tok::Field(name.to_owned())
                    };
                    self.push(tok, start);
                }
                '.' | '+' | '-' | '0'..='9' => self.number()?,
                c if is_alnum(c) => {
                    let word = self.alnum_run()?;
                    let tok = match word {
                        "true" => Tok::Bool(true),
                        "false" => Tok::Bool(false),
                        w => match Kw::from_word(w) {
                            Some(kw) => Tok::Keyword(kw),
                            None => Tok::Ident(w.to_owned()),
                        },
                    };
                    self.push(tok, start);
                }
                c if c.is_ascii_graphic() => {
                    self.pos += 1;
                    self.push(Tok::Char(c), start);
                }
                c => {
                    return Err(syntax(
                        start,
                        format!("unrecognized character in action: {c:?}"),
                    ));
                }
            }
        }
    }

    /// Consumes letters, digits and `_`, which must end at a terminator (space, `.`, `|`, `)`, `}`, ...).
    fn alnum_run(&mut self) -> Result<&'a str, Error> {
        let src = self.src;
        let start = self.pos;
        let rest = &src[start..];
        let len = rest.find(|c| !is_alnum(c)).unwrap_or(rest.len());
        self.pos += len;
        match self.peek_char() {
            None => {}
            Some(c) if is_space(c) || matches!(c, '.' | ',' | '|' | ':' | ')' | '(' | '}') => {}
            Some(c) => return Err(syntax(self.pos, format!("bad character {c:?}"))),
        }
        Ok(&src[start..start + len])
    }

    fn quoted(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return Err(syntax(start, "unterminated quoted string")),
                Some(b'\\') => {
                    if matches!(bytes.get(i + 1), None | Some(b'\n')) {
                        return Err(syntax(start, "unterminated quoted string"));
                    }
                    i += 2;
                }
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        // `i` is at an ASCII quote, so both slice ends are char boundaries.
        let body = &self.src[start + 1..i];
        let s = unquote(body, '"').map_err(|m| syntax(start, m))?;
        self.pos = i + 1;
        self.push(Tok::Str(s), start);
        Ok(())
    }

    fn raw(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let Some(len) = self.src[start + 1..].find('`') else {
            return Err(syntax(start, "unterminated raw quoted string"));
        };
        // Go drops carriage returns from raw strings.
        let s = self.src[start + 1..start + 1 + len].replace('\r', "");
        self.pos = start + len + 2;
        self.push(Tok::Str(s), start);
        Ok(())
    }

    fn char_constant(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None | Some(b'\n') => return Err(syntax(start, "unterminated character constant")),
                Some(b'\\') => {
                    if matches!(bytes.get(i + 1), None | Some(b'\n')) {
                        return Err(syntax(start, "unterminated character constant"));
                    }
                    i += 2;
                }
                Some(b'\'') => break,
                Some(_) => i += 1,
            }
        }
        let body = &self.src[start + 1..i];
        let bad = || syntax(start, format!("malformed character constant: '{body}'"));
        let (ch, rest) = unquote_char(body, '\'').map_err(|_| bad())?;
        if !rest.is_empty() {
            return Err(bad());
        }
        self.pos = i + 1;
        self.push(Tok::Int(i64::from(ch.value())), start);
        Ok(())
    }

    /// Scans a number the way Go's lexer does, then accepts only integers.
    fn number(&mut self) -> Result<(), Error> {
        let start = self.pos;
        let b = self.src.as_bytes();
        let mut i = start;
        let accept = |i: &mut usize, set: &[u8]| {
            if b.get(*i).is_some_and(|c| set.contains(c)) {
                *i += 1;
                true
            } else {
                false
            }
        };
        let run = |i: &mut usize, set: &[u8]| {
            while b.get(*i).is_some_and(|c| set.contains(c)) {
                *i += 1;
            }
        };
        accept(&mut i, b"+-");
        let mut digits: &[u8] = b"0123456789_";
        let mut hex = false;
        if accept(&mut i, b"0") {
            if accept(&mut i, b"xX") {
                digits = b"0123456789abcdefABCDEF_";
                hex = true;
            } else if accept(&mut i, b"oO") {
                digits = b"01234567_";
            } else if accept(&mut i, b"bB") {
                digits = b"01_";
            }
        }
        run(&mut i, digits);
        let mut float = false;
        if accept(&mut i, b".") {
            float = true;
            run(&mut i, digits);
        }
        if (!hex && accept(&mut i, b"eE")) || (hex && accept(&mut i, b"pP")) {
            float = true;
            accept(&mut i, b"+-");
            run(&mut i, b"0123456789_");
        }
        if accept(&mut i, b"i") {
            float = true;
        }
        let text = &self.src[start..i];
        self.pos = i;
        let next_alnum = self.peek_char().is_some_and(is_alnum);
        // Complex constants like 1+2i are another Go number form.
        if next_alnum || matches!(self.peek_char(), Some('+' | '-')) {
            return Err(syntax(start, format!("bad number syntax: {text:?}")));
        }
        if float {
            return Err(Error::Unsupported {
                offset: start,
                feature: format!("floating-point or complex number {text}"),
            });
        }
        let n =
            parse_int(text).ok_or_else(|| syntax(start, format!("bad number syntax: {text:?}")))?;
        self.push(Tok::Int(n), start);
        Ok(())
    }
}

/// Parses a Go integer literal (base prefixes, leading-0 octal, `_` separators) into an i64.
fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    // An underscore must sit between digits, or between a base prefix and a digit.
    let mut prev_digit = prefixed;
    let mut clean = String::with_capacity(digits.len());
    for c in digits.chars() {
        if c == '_' {
            if !prev_digit {
                return None;
            }
            prev_digit = false;
        } else {
            clean.push(c);
            prev_digit = true;
        }
    }
    if !prev_digit || clean.is_empty() {
        return None;
    }
    let magnitude = u64::from_str_radix(&clean, radix).ok()?;
    if neg {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// One unquoted element: a whole character, or a single byte from `\x` / octal escapes.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Char(char),
    Byte(u8),
}

impl Unit {
    fn value(self) -> u32 {
        match self {
            Unit::Char(c) => c as u32,
            Unit::Byte(b) => u32::from(b),
        }
    }
}

/// Decodes one (possibly escaped) character from the front of `s`, Go's `strconv.UnquoteChar`.
fn unquote_char(s: &str, quote: char) -> Result<(Unit, &str), String> {
    let mut chars = s.chars();
    let c = chars.next().ok_or("empty character")?;
    if c == quote {
        return Err(format!("unescaped {quote}"));
    }
    if c != '\\' {
        return Ok((Unit::Char(c), chars.as_str()));
    }
    let e = chars.next().ok_or("trailing backslash")?;
    let rest = chars.as_str();
    let simple = match e {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        '\\' => Some('\\'),
        '\'' | '"' if e == quote => Some(e),
        _ => None,
    };
    if let Some(c) = simple {
        return Ok((Unit::Char(c), rest));
    }
    let hex = |n: usize| -> Result<(u32, &str), String> {
        let digits = rest.get(..n).ok_or("short escape")?;
        let v =
            u32::from_str_radix(digits, 16).map_err(|_| format!("invalid escape \\{e}{digits}"))?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("invalid escape \\{e}{digits}"));
        }
        Ok((v, &rest[n..]))
    };
    match e {
        'x' => {
            let (v, r) = hex(2)?;
            Ok((Unit::Byte(v as u8), r))
        }
        'u' | 'U' => {
            let (v, r) = hex(if e == 'u' { 4 } else { 8 })?;
            let c = char::from_u32(v).ok_or_else(|| format!("invalid Unicode escape {v:#x}"))?;
            Ok((Unit::Char(c), r))
        }
        '0'..='7' => {
            let digits = s.get(1..4).ok_or("short octal escape")?;
            if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err(format!("invalid octal escape \\{digits}"));
            }
            let v = u32::from_str_radix(digits, 8).map_err(|_| "invalid octal escape")?;
            let b = u8::try_from(v).map_err(|_| format!("octal escape \\{digits} out of range"))?;
            Ok((Unit::Byte(b), &s[4..]))
        }
        _ => Err(format!("unknown escape sequence \\{e}")),
    }
}

/// Unquotes the body of a `"…"` string with Go escapes; the bytes must form UTF-8.
fn unquote(mut body: &str, quote: char) -> Result<String, String> {
    let mut out = Vec::with_capacity(body.len());
    while !body.is_empty() {
        let (unit, rest) = unquote_char(body, quote)?;
        match unit {
            Unit::Char(c) => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            Unit::Byte(b) => out.push(b),
        }
        body = rest;
    }
    String::from_utf8(out).map_err(|_| "string literal is not valid UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        lex(src)
            .map(|t| t.into_iter().map(|t| t.tok).collect())
            .unwrap_or_default()
    }

    #[test]
    fn trim_markers_need_a_space() {
        assert_eq!(
            kinds("a {{- 3 -}} b"),
            vec![
                Tok::Text("a".into()),
                Tok::Left,
                Tok::Int(3),
                Tok::Right,
                Tok::Text("b".into()),
                Tok::Eof
            ]
        );
        assert_eq!(kinds("{{-3}}")[1], Tok::Int(-3));
    }

    #[test]
    fn integer_forms() {
        assert_eq!(parse_int("0x1F"), Some(31));
        assert_eq!(parse_int("0755"), Some(493));
        assert_eq!(parse_int("0o17"), Some(15));
        assert_eq!(parse_int("-0b101"), Some(-5));
        assert_eq!(parse_int("1_000"), Some(1000));
        assert_eq!(parse_int("1__0"), None);
        assert_eq!(parse_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int("9223372036854775808"), None);
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            unquote(r"a\tb\x41\u00e9\101\\", '"').as_deref(),
            Ok("a\tbAéA\\")
        );
        assert_eq!(unquote(r"\xc3\xa9", '"').as_deref(), Ok("é"));
        assert!(unquote(r"\xff", '"').is_err());
        assert!(unquote(r"\q", '"').is_err());
        assert!(unquote(r"\'", '"').is_err());
    }

    #[test]
    fn fields_and_variables() {
        assert_eq!(
            kinds("{{$x.A.B}}")[1..4],
            [
                Tok::Var("$x".into()),
                Tok::Field("A".into()),
                Tok::Field("B".into())
            ]
        );
        assert!(lex("{{.A\"x\"}}").is_err());
        assert!(lex("{{ 1.5 }}").is_err());
    }
}
