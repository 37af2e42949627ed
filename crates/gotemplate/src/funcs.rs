//! Template functions: Go's builtins plus regclient's helpers.
//!
//! Argument orders follow the Go functions regclient registers
//! (`regclient/pkg/template/template.go`): `join` is `strings.Join(elems, sep)`,
//! so `join LIST SEP`; `split` is `strings.Split(s, sep)`, so `split STR SEP`;
//! `default` is `default(def, orig)`, so `default DEF VAL` and a piped value
//! (`.X | default "d"`) lands in VAL.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::eval::{self, kind, limit_error, truth, wrong_args};
use super::fmt::{self, FmtError};
use super::parse::Operand;
use super::time;
use super::{Error, Value};

/// A function a template may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    And,
    Or,
    Not,
    Len,
    Index,
    Print,
    Printf,
    Println,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Env,
    File,
    Default,
    Join,
    Split,
    Lower,
    Upper,
    TrimSpace,
    /// `time`, only usable as `time.Now` / `time.Parse`.
    Time,
}

const FUNCS: [(&str, Func); 23] = [
    ("and", Func::And),
    ("or", Func::Or),
    ("not", Func::Not),
    ("len", Func::Len),
    ("index", Func::Index),
    ("print", Func::Print),
    ("printf", Func::Printf),
    ("println", Func::Println),
    ("eq", Func::Eq),
    ("ne", Func::Ne),
    ("lt", Func::Lt),
    ("le", Func::Le),
    ("gt", Func::Gt),
    ("ge", Func::Ge),
    ("env", Func::Env),
    ("file", Func::File),
    ("default", Func::Default),
    ("join", Func::Join),
    ("split", Func::Split),
    ("lower", Func::Lower),
    ("upper", Func::Upper),
    ("trimSpace", Func::TrimSpace),
    ("time", Func::Time),
];

/// Functions Go or regclient define that this evaluator does not implement.
const UNSUPPORTED: [&str; 8] = [
    "call",
    "html",
    "js",
    "urlquery",
    "slice",
    "json",
    "jsonPretty",
    "printPretty",
];

impl Func {
    /// Resolves a function name at parse time.
    pub(super) fn lookup(name: &str, offset: usize) -> Result<Func, Error> {
        if let Some((_, f)) = FUNCS.iter().find(|(n, _)| *n == name) {
            return Ok(*f);
        }
        if UNSUPPORTED.contains(&name) {
            return Err(Error::Unsupported {
                offset,
                feature: format!("function {name}"),
            });
        }
        Err(Error::UnknownFunction {
            name: name.to_owned(),
            offset,
        })
    }

    /// The name templates call it by.
    pub(super) fn name(self) -> &'static str {
        FUNCS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }
}

/// regclient's `default` test: nil or Go's zero value; empty lists and maps count as empty too.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Time(t) => time::is_zero(t),
        other => !truth(other),
    }
}

/// Go's `eq` on two operands.
fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    Ok(match (a, b) {
        (Value::Nil, Value::Nil) => true,
        (Value::Nil, _) | (_, Value::Nil) => false,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Time(x), Value::Time(y)) => x == y && x.offset() == y.offset(),
        (Value::List(_), Value::List(_)) | (Value::Map(_), Value::Map(_)) => {
            return Err(format!("non-comparable type {}", kind(a)));
        }
        _ => {
            return Err(format!(
                "incompatible types for comparison: {} and {}",
                kind(a),
                kind(b)
            ));
        }
    })
}

/// Go's ordering for `lt`/`le`/`gt`/`ge`: integers and strings only.
fn order(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        _ if kind(a) == kind(b) => Err(format!("invalid type for comparison: {}", kind(a))),
        _ => Err(format!(
            "incompatible types for comparison: {} and {}",
            kind(a),
            kind(b)
        )),
    }
}

fn str_arg<'a>(
    argv: &'a [eval::Val<'_>],
    i: usize,
    function: &str,
    offset: usize,
) -> Result<&'a str, Error> {
    match argv.get(i).map(|v| &**v) {
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(wrong_args(
            function,
            offset,
            format!("argument {} must be a string, not {}", i + 1, kind(other)),
        )),
        None => Err(wrong_args(
            function,
            offset,
            format!("missing argument {}", i + 1),
        )),
    }
}

impl<'t, 'd> eval::State<'t, 'd> {
    /// Calls `func` with `args` (and the piped value last).
    pub(super) fn call(
        &mut self,
        dot: &eval::Val<'d>,
        func: Func,
        pos: usize,
        args: &'t [Operand],
        last: Option<eval::Val<'d>>,
    ) -> Result<eval::Val<'d>, Error> {
        let name = func.name();
        if matches!(func, Func::And | Func::Or) {
            // Go 1.18+: evaluate left to right and stop at the deciding operand.
            if args.is_empty() && last.is_none() {
                return Err(wrong_args(
                    name,
                    pos,
                    "want at least 1 argument, got 0".into(),
                ));
            }
            let stop_on = func == Func::Or;
            let mut result = None;
            for a in args {
                let v = self.eval_arg(dot, a)?;
                if truth(&v) == stop_on {
                    return Ok(v);
                }
                result = Some(v);
            }
            return Ok(last.or(result).unwrap_or(Cow::Owned(Value::Nil)));
        }
        let mut argv = self.eval_args(dot, args, last)?;
        // Comparisons and string scans cost time in proportion to their input,
        // even when their result is small; charge for it so loops stay bounded.
        if matches!(
            func,
            Func::Eq
                | Func::Ne
                | Func::Lt
                | Func::Le
                | Func::Gt
                | Func::Ge
                | Func::Lower
                | Func::Upper
                | Func::TrimSpace
        ) {
            let input: usize = argv
                .iter()
                .map(|v| if let Value::Str(s) = &**v { s.len() } else { 1 })
                .sum();
            self.charge(input, pos)?;
        }
        let arity = |want: usize| {
            if argv.len() == want {
                Ok(())
            } else {
                Err(wrong_args(
                    name,
                    pos,
                    format!("want {want} arguments, got {}", argv.len()),
                ))
            }
        };
        let call_error = |message: String| Error::Type {
            offset: pos,
            message: format!("error calling {name}: {message}"),
        };
        let fmt_err = |e: FmtError| limit_error(e, pos);
        let result = match func {
            Func::Not => {
                arity(1)?;
                Value::Bool(!truth(&argv[0]))
            }
            Func::Len => {
                arity(1)?;
                let n = match &*argv[0] {
                    Value::Str(s) => s.len(),
                    Value::List(l) => l.len(),
                    Value::Map(m) => m.len(),
                    other => return Err(call_error(format!("len of {}", kind(other)))),
                };
                Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
            }
            Func::Index => {
                if argv.is_empty() {
                    return Err(wrong_args(
                        name,
                        pos,
                        "want at least 1 argument, got 0".into(),
                    ));
                }
                let keys = argv.split_off(1);
                let item = argv.pop().unwrap_or(Cow::Owned(Value::Nil));
                return index(item, keys, pos);
            }
            Func::Default => {
                arity(2)?;
                let val = argv.pop().unwrap_or(Cow::Owned(Value::Nil));
                let def = argv.pop().unwrap_or(Cow::Owned(Value::Nil));
                return Ok(if is_empty(&val) { def } else { val });
            }
            Func::Print | Func::Println => {
                let refs: Vec<&Value> = argv.iter().map(|v| &**v).collect();
                let s = if func == Func::Print {
                    fmt::sprint(&refs)
                } else {
                    fmt::sprintln(&refs)
                };
                Value::Str(s.map_err(fmt_err)?)
            }
            Func::Printf => {
                let format = str_arg(&argv, 0, name, pos)?;
                let refs: Vec<&Value> = argv[1..].iter().map(|v| &**v).collect();
                Value::Str(fmt::sprintf(format, &refs).map_err(fmt_err)?)
            }
            Func::Eq => {
                if argv.len() < 2 {
                    return Err(wrong_args(
                        name,
                        pos,
                        format!("want at least 2 arguments, got {}", argv.len()),
                    ));
                }
                let mut any = false;
                for other in &argv[1..] {
                    if equal(&argv[0], other).map_err(call_error)? {
                        any = true;
                        break;
                    }
                }
                Value::Bool(any)
            }
            Func::Ne => {
                arity(2)?;
                Value::Bool(!equal(&argv[0], &argv[1]).map_err(call_error)?)
            }
            Func::Lt | Func::Le | Func::Gt | Func::Ge => {
                arity(2)?;
                let o = order(&argv[0], &argv[1]).map_err(call_error)?;
                Value::Bool(match func {
                    Func::Lt => o.is_lt(),
                    Func::Le => o.is_le(),
                    Func::Gt => o.is_gt(),
                    _ => o.is_ge(),
                })
            }
            Func::Env => {
                arity(1)?;
                Value::Str(
                    self.host
                        .env(str_arg(&argv, 0, name, pos)?)
                        .unwrap_or_default(),
                )
            }
            Func::File => {
                arity(1)?;
                let path = str_arg(&argv, 0, name, pos)?;
                let text = self
                    .host
                    .read_file(Path::new(path))
                    .map_err(|source| Error::File {
                        path: PathBuf::from(path),
                        offset: pos,
                        source,
                    })?;
                Value::Str(text.trim().to_owned())
            }
            Func::Join => {
                arity(2)?;
                let sep = str_arg(&argv, 1, name, pos)?;
                let Value::List(items) = &*argv[0] else {
                    return Err(wrong_args(
                        name,
                        pos,
                        format!("argument 1 must be a list, not {}", kind(&argv[0])),
                    ));
                };
                self.charge(items.len(), pos)?;
                let mut out = String::new();
                for (i, item) in items.iter().enumerate() {
                    let Value::Str(s) = item else {
                        return Err(wrong_args(
                            name,
                            pos,
                            format!("list element {i} is a {}, not a string", kind(item)),
                        ));
                    };
                    if i > 0 {
                        out.push_str(sep);
                    }
                    out.push_str(s);
                    if out.len() > super::MAX_OUTPUT {
                        return Err(fmt_err(FmtError::TooLong));
                    }
                }
                Value::Str(out)
            }
            Func::Split => {
                arity(2)?;
                let s = str_arg(&argv, 0, name, pos)?;
                let sep = str_arg(&argv, 1, name, pos)?;
                // Go's strings.Split: an empty separator splits after each character.
                let parts: Vec<Value> = if sep.is_empty() {
                    s.chars().map(|c| Value::Str(c.to_string())).collect()
                } else {
                    s.split(sep).map(Value::from).collect()
                };
                self.charge(s.len() + parts.len(), pos)?;
                Value::List(parts)
            }
            Func::Lower | Func::Upper | Func::TrimSpace => {
                arity(1)?;
                let s = str_arg(&argv, 0, name, pos)?;
                Value::Str(match func {
                    Func::Lower => s.chars().map(lower_char).collect(),
                    Func::Upper => s.chars().map(upper_char).collect(),
                    _ => s.trim().to_owned(),
                })
            }
            Func::And | Func::Or | Func::Time => {
                return Err(Error::Unsupported {
                    offset: pos,
                    feature: format!("calling {name} here"),
                });
            }
        };
        if let Value::Str(s) = &result {
            self.charge(s.len(), pos)?;
            if s.len() > super::MAX_OUTPUT {
                return Err(fmt_err(FmtError::TooLong));
            }
        }
        Ok(Cow::Owned(result))
    }
}

/// Go's `unicode.ToLower`: one character in, one out (Rust's full mapping turns `İ` into two).
fn lower_char(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Go's `unicode.ToUpper`: one character in, one out, so `ß` stays `ß` rather than becoming `SS`.
fn upper_char(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Go's `index ITEM KEY…`: list and string positions, map keys (a missing key gives nil, as in Go).
fn index<'d>(
    mut item: eval::Val<'d>,
    keys: Vec<eval::Val<'d>>,
    pos: usize,
) -> Result<eval::Val<'d>, Error> {
    let type_error = |message: String| Error::Type {
        offset: pos,
        message: format!("error calling index: {message}"),
    };
    for key in keys {
        let len = match &*item {
            Value::List(l) => l.len(),
            Value::Str(s) => s.len(),
            _ => 0,
        };
        let position =
            |key: &Value| -> Result<usize, Error> {
                match key {
                    Value::Int(i) => usize::try_from(*i).ok().filter(|&i| i < len).ok_or(
                        Error::IndexOutOfRange {
                            index: *i,
                            len,
                            offset: pos,
                        },
                    ),
                    Value::Nil => Err(type_error("cannot index slice/array with nil".into())),
                    other => Err(type_error(format!(
                        "cannot index slice/array with type {}",
                        kind(other)
                    ))),
                }
            };
        item = match item {
            Cow::Borrowed(Value::List(l)) => Cow::Borrowed(&l[position(&key)?]),
            Cow::Owned(Value::List(mut l)) => {
                let i = position(&key)?;
                Cow::Owned(l.swap_remove(i))
            }
            Cow::Borrowed(Value::Str(s)) => {
                Cow::Owned(Value::Int(i64::from(s.as_bytes()[position(&key)?])))
            }
            Cow::Owned(Value::Str(s)) => {
                Cow::Owned(Value::Int(i64::from(s.as_bytes()[position(&key)?])))
            }
            Cow::Borrowed(Value::Map(m)) => match &*key {
                Value::Str(k) => m.get(k).map_or(Cow::Owned(Value::Nil), Cow::Borrowed),
                other => {
                    return Err(type_error(format!(
                        "value has type {}; should be string",
                        kind(other)
                    )));
                }
            },
            Cow::Owned(Value::Map(mut m)) => match &*key {
                Value::Str(k) => Cow::Owned(m.remove(k).unwrap_or(Value::Nil)),
                other => {
                    return Err(type_error(format!(
                        "value has type {}; should be string",
                        kind(other)
                    )));
                }
            },
            Cow::Borrowed(Value::Nil) | Cow::Owned(Value::Nil) => {
                return Err(type_error("index of untyped nil".into()));
            }
            other => {
                return Err(type_error(format!(
                    "can't index item of type {}",
                    kind(&other)
                )));
            }
        };
    }
    Ok(item)
}
