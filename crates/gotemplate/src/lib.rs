//! A small evaluator for the subset of Go `text/template` that regsync configs use.
//!
//! regsync expands `source`, `target`, `backup` and credential fields with Go's
//! `text/template` plus the helpers of regclient's `pkg/template`. This crate
//! implements that language with Go's semantics (checked against Go 1.19's
//! `text/template`, see `tests/go_cases.rs`), except where noted below.
//!
//! Language: text; `{{ }}` actions with `{{- `/` -}}` trimming and `{{/* */}}`
//! comments; pipelines with `|` (the previous value becomes the *last*
//! argument); `( )`; `"…"` strings with Go escapes, raw `` `…` `` strings,
//! integer and character constants, `true`, `false`, `nil`; `.`, `.A.B`, `$`,
//! `$x := …`, `$x = …`, `$x.A`; `if`/`else if`/`else`, `range` (lists, maps in
//! key order, integers, with `$i, $v :=`), `with`/`else with`, `end`.
//!
//! Functions, with regclient's argument order (it registers Go's own functions):
//! - `env NAME`: the variable, or `""` when unset.
//! - `file PATH`: the contents with surrounding whitespace trimmed.
//! - `default DEF VAL`: VAL unless it is empty (nil, false, 0, `""`, an empty
//!   list or map, the zero time), else DEF; so `.X | default "d"` works.
//! - `join LIST SEP` (`strings.Join`) and `split STR SEP` (`strings.Split`).
//! - `lower`, `upper`, `trimSpace`; Go's `and or not len index print printf
//!   println eq ne lt le gt ge`.
//! - `time.Now` (from [`Host::now`]) and `time.Parse LAYOUT VALUE`, whose
//!   results have the methods `Format LAYOUT`, `Year`, `Month`, `Day`, `Hour`,
//!   `Minute`, `Second`, `Nanosecond`, `YearDay`, `Unix`, `UnixMilli`,
//!   `UnixNano`, `UTC`, `String`, `IsZero`, `AddDate Y M D`, `Before`,
//!   `After`, `Equal`, called like fields: `(time.Now).Format "20060102"`.
//!
//! Deliberate differences:
//! - `file` on an unreadable path is [`Error::File`]; regsync silently yields `""`.
//! - A missing field (`.Sync.Nope`) is [`Error::MissingField`], as it is for the
//!   Go structs regsync passes; `index` on a missing map key still gives nil.
//! - `$t.Month` is a [`Value::Int`]: `printf "%02d"` works as in Go, but a bare
//!   `{{ $t.Month }}` prints `3` where Go prints `March`.
//! - Times carry only an offset: `MST` formats as `UTC` or `+0130`, what Go
//!   prints for an unnamed zone, and an abbreviation parsed by `time.Parse`
//!   other than `UTC`/`GMT±h` becomes offset zero. `String` has no `m=±…` suffix.
//! - `join` accepts any list of strings (Go rejects a `[]interface{}` of them).
//! - Rejected at parse time: `define`, `template`, `block`, `break`,
//!   `continue`, floating-point and complex numbers, integers beyond `i64`,
//!   `\x` escapes that are not UTF-8, bare `time`, and the functions `call`,
//!   `html`, `js`, `urlquery`, `slice`, `json`, `jsonPretty`, `printPretty`.
//!   Unknown functions and undefined variables are parse errors too, as in Go.
//!
//! Rendering is bounded: at most [`MAX_OUTPUT`] bytes of output or of any one
//! string value, [`MAX_DEPTH`] levels of nesting and [`MAX_WORK`] units of
//! work, so no template can hang or exhaust memory, and no input panics.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod eval;
mod fmt;
mod funcs;
mod lex;
mod parse;
mod time;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};

/// Largest output, and largest string value, a render may produce (1 MiB).
pub const MAX_OUTPUT: usize = 1 << 20;
/// Deepest nesting of control blocks and parentheses a template may have.
pub const MAX_DEPTH: usize = 100;
/// Work units (evaluation steps plus bytes produced) one render may spend.
pub const MAX_WORK: usize = 10_000_000;

/// A value in the template's data model.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Go's untyped `nil`; prints as `<no value>` from an action.
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer (Go templates have no other integer width worth modelling).
    Int(i64),
    /// A UTF-8 string.
    Str(String),
    /// A list, like a Go slice.
    List(Vec<Value>),
    /// A map with string keys; Go field access `.Name` looks up key `Name`.
    Map(BTreeMap<String, Value>),
    /// A point in time with its offset, like Go's `time.Time`.
    Time(DateTime<FixedOffset>),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

impl From<BTreeMap<String, Value>> for Value {
    fn from(m: BTreeMap<String, Value>) -> Self {
        Value::Map(m)
    }
}

impl From<DateTime<FixedOffset>> for Value {
    fn from(t: DateTime<FixedOffset>) -> Self {
        Value::Time(t)
    }
}

/// What a template may reach outside itself; injectable so tests need no real env, files or clock.
pub trait Host {
    /// The value of environment variable `name`, or `None` when unset.
    fn env(&self, name: &str) -> Option<String>;
    /// The whole contents of the file at `path`.
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
    /// The current time.
    fn now(&self) -> DateTime<FixedOffset>;
}

/// The process's real environment, filesystem and clock (local time zone).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

impl Host for SystemHost {
    fn env(&self, name: &str) -> Option<String> {
        // Go's os.Getenv hands back raw bytes; a lossy conversion is the closest
        // a String can get, and an empty or odd name is simply "unset".
        if name.is_empty() || name.contains(['=', '\0']) {
            return None;
        }
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        // Read one byte past the limit so an oversized secret is an error, not
        // a silently truncated password.
        let file = std::fs::File::open(path)?;
        let mut buf = String::new();
        file.take(MAX_OUTPUT as u64 + 1).read_to_string(&mut buf)?;
        if buf.len() > MAX_OUTPUT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("file is larger than {MAX_OUTPUT} bytes"),
            ));
        }
        Ok(buf)
    }

    fn now(&self) -> DateTime<FixedOffset> {
        chrono::Local::now().fixed_offset()
    }
}

/// Why a template failed to parse or render; offsets are bytes into the template text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The template text is not valid template syntax.
    #[error("template syntax error at byte {offset}: {message}")]
    Syntax {
        /// Byte offset of the offending token.
        offset: usize,
        /// What is wrong.
        message: String,
    },
    /// Valid Go template syntax that this evaluator deliberately does not support.
    #[error("unsupported template feature at byte {offset}: {feature}")]
    Unsupported {
        /// Byte offset of the construct.
        offset: usize,
        /// The construct, e.g. `{{define}}`.
        feature: String,
    },
    /// A function name that is not defined.
    #[error("template function {name:?} is not defined (at byte {offset})")]
    UnknownFunction {
        /// The function name as written.
        name: String,
        /// Byte offset of the name.
        offset: usize,
    },
    /// A `$variable` used or assigned where none is declared.
    #[error("undefined template variable {name} at byte {offset}")]
    UndefinedVariable {
        /// The variable, with its `$`.
        name: String,
        /// Byte offset of the variable.
        offset: usize,
    },
    /// A field chain names a key the data does not have.
    #[error("template field {chain} does not exist (at byte {offset})")]
    MissingField {
        /// The chain up to and including the missing field, e.g. `.Sync.Nope`.
        chain: String,
        /// Byte offset of the chain.
        offset: usize,
    },
    /// A field was looked up on a value that has no fields (nil, a string, ...).
    #[error("template field {chain} can't be evaluated on a {kind} value (at byte {offset})")]
    NotAMap {
        /// The chain up to and including the field.
        chain: String,
        /// Kind of the value the field was looked up on.
        kind: &'static str,
        /// Byte offset of the chain.
        offset: usize,
    },
    /// A function or method got the wrong number or types of arguments.
    #[error("wrong arguments to {function} at byte {offset}: {message}")]
    WrongArguments {
        /// The function or method, e.g. `split` or `Time.Format`.
        function: String,
        /// Byte offset of the call.
        offset: usize,
        /// What was wrong with them.
        message: String,
    },
    /// A value of one kind was used where another is needed (`range` over a string, `lt` on lists).
    #[error("template type error at byte {offset}: {message}")]
    Type {
        /// Byte offset of the expression.
        offset: usize,
        /// What did not fit.
        message: String,
    },
    /// `index` past the end of a list or string.
    #[error("index {index} out of range for length {len} (at byte {offset})")]
    IndexOutOfRange {
        /// The index asked for.
        index: i64,
        /// The length of the collection.
        len: usize,
        /// Byte offset of the `index` call.
        offset: usize,
    },
    /// `file` could not read its file.
    #[error("template function file could not read {path} (at byte {offset}): {source}")]
    File {
        /// The path as given to `file`.
        path: PathBuf,
        /// Byte offset of the `file` call.
        offset: usize,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `time.Parse` could not parse its value with its layout.
    #[error("time.Parse could not parse {value:?} as {layout:?} (at byte {offset}): {reason}")]
    TimeParse {
        /// The Go layout.
        layout: String,
        /// The text being parsed.
        value: String,
        /// Byte offset of the call.
        offset: usize,
        /// What did not match.
        reason: String,
    },
    /// A time outside what the formatter can represent (e.g. `UnixNano` past 2262).
    #[error("time value out of range at byte {offset}")]
    TimeRange {
        /// Byte offset of the expression.
        offset: usize,
    },
    /// A size, nesting or work limit was hit.
    #[error("template {what} limit of {limit} exceeded at byte {offset}")]
    LimitExceeded {
        /// Which limit: `output bytes`, `nesting depth` or `work`.
        what: &'static str,
        /// The limit's value.
        limit: usize,
        /// Byte offset where evaluation stood.
        offset: usize,
    },
}

impl Error {
    /// The byte offset in the template text this error points at.
    pub fn offset(&self) -> usize {
        match self {
            Error::Syntax { offset, .. }
            | Error::Unsupported { offset, .. }
            | Error::UnknownFunction { offset, .. }
            | Error::UndefinedVariable { offset, .. }
            | Error::MissingField { offset, .. }
            | Error::NotAMap { offset, .. }
            | Error::WrongArguments { offset, .. }
            | Error::Type { offset, .. }
            | Error::IndexOutOfRange { offset, .. }
            | Error::File { offset, .. }
            | Error::TimeParse { offset, .. }
            | Error::TimeRange { offset }
            | Error::LimitExceeded { offset, .. } => *offset,
        }
    }

    /// 1-based line and column (in characters) of [`Error::offset`] within `src`.
    pub fn line_col(&self, src: &str) -> (usize, usize) {
        let mut end = self.offset().min(src.len());
        while !src.is_char_boundary(end) {
            end -= 1;
        }
        let before = &src[..end];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// True when the template text itself is at fault (found at parse time).
    pub fn is_syntax(&self) -> bool {
        matches!(
            self,
            Error::Syntax { .. }
                | Error::Unsupported { .. }
                | Error::UnknownFunction { .. }
                | Error::UndefinedVariable { .. }
        )
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<parse::Node>,
    literal: bool,
}

impl Template {
    /// Parses `src`, reporting syntax errors and unsupported constructs now rather than at render time.
    pub fn parse(src: &str) -> Result<Template, Error> {
        let nodes = parse::parse(src)?;
        Ok(Template {
            nodes,
            literal: !src.contains("{{"),
        })
    }

    /// Executes the template with `data` as `.` and `$`, reaching env, files and clock only through `host`.
    pub fn render(&self, data: &Value, host: &dyn Host) -> Result<String, Error> {
        eval::render(&self.nodes, data, host)
    }

    /// True when the text has no `{{ }}` actions (nor comments), so it renders to itself.
    pub fn is_literal(&self) -> bool {
        self.literal
    }
}

/// Convenience: parse + render.
pub fn expand(src: &str, data: &Value, host: &dyn Host) -> Result<String, Error> {
    Template::parse(src)?.render(data, host)
}
