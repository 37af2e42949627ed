//! Executes a parsed template: walks nodes, evaluates pipelines, fields and methods.
//!
//! Values borrow from the caller's data wherever they can (`Cow::Borrowed`), so
//! `.Sync.Source` or `range .Big` never copies the data it walks. Every step and
//! every byte produced is charged to a work budget, so no template can run for
//! long, and output is capped at [`MAX_OUTPUT`] bytes.

use std::borrow::Cow;

use super::fmt::{self, FmtError};
use super::parse::{Command, Control, Node, Operand, Pipe};
use super::time;
use super::{Error, Host, Value};
use super::{MAX_DEPTH, MAX_OUTPUT, MAX_WORK};

/// A value during evaluation: borrowed from the data, or computed.
pub(super) type Val<'d> = Cow<'d, Value>;

/// Evaluation state for one render.
pub(super) struct State<'t, 'd> {
    pub(super) host: &'d dyn Host,
    vars: Vec<(&'t str, Val<'d>)>,
    out: String,
    work: usize,
}

/// Renders `nodes` with `data` as dot and `$`.
pub(super) fn render<'d>(
    nodes: &[Node],
    data: &'d Value,
    host: &'d dyn Host,
) -> Result<String, Error> {
    let mut s = State {
        host,
        vars: vec![("$", Cow::Borrowed(data))],
        out: String::new(),
        work: 0,
    };
    s.walk(&Cow::Borrowed(data), nodes)?;
    Ok(s.out)
}

/// Go's notion of truth: false, 0, nil and empty strings, lists and maps are false.
pub(super) fn truth(v: &Value) -> bool {
    match v {
        Value::Nil => false,
        Value::Bool(b) => *b,
        Value::Int(n) => *n != 0,
        Value::Str(s) => !s.is_empty(),
        Value::List(l) => !l.is_empty(),
        Value::Map(m) => !m.is_empty(),
        Value::Time(_) => true,
    }
}

/// A short name of the value's kind for error messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Str(_) => "string",
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Time(_) => "time",
    }
}

/// Approximate cost in bytes of copying a value.
fn size(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        Value::List(l) => l.iter().map(size).sum::<usize>() + l.len(),
        Value::Map(m) => m.iter().map(|(k, v)| k.len() + size(v)).sum::<usize>() + m.len(),
        _ => 1,
    }
}

/// Maps a formatting limit to the render error it stands for.
pub(super) fn limit_error(e: FmtError, offset: usize) -> Error {
    match e {
        FmtError::TooLong => Error::LimitExceeded {
            what: "output bytes",
            limit: MAX_OUTPUT,
            offset,
        },
        FmtError::TooDeep => Error::LimitExceeded {
            what: "nesting depth",
            limit: MAX_DEPTH,
            offset,
        },
    }
}

impl<'t, 'd> State<'t, 'd> {
    /// Charges `units` of work; fails once the budget is spent.
    pub(super) fn charge(&mut self, units: usize, offset: usize) -> Result<(), Error> {
        self.work = self.work.saturating_add(units);
        if self.work > MAX_WORK {
            return Err(Error::LimitExceeded {
                what: "work",
                limit: MAX_WORK,
                offset,
            });
        }
        Ok(())
    }

    /// Copies a value, charging for owned data (borrowed data is free to share).
    pub(super) fn dup(&mut self, v: &Val<'d>, offset: usize) -> Result<Val<'d>, Error> {
        if let Cow::Owned(o) = v {
            self.charge(size(o), offset)?;
        }
        Ok(v.clone())
    }

    fn write(&mut self, s: &str, offset: usize) -> Result<(), Error> {
        self.charge(s.len(), offset)?;
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(limit_error(FmtError::TooLong, offset));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk(&mut self, dot: &Val<'d>, nodes: &'t [Node]) -> Result<(), Error> {
        for node in nodes {
            match node {
                Node::Text(pos, text) => self.write(text, *pos)?,
                Node::Action(pipe) => {
                    let v = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        let text = fmt::action_string(&v).map_err(|e| limit_error(e, pipe.pos))?;
                        self.write(&text, pipe.pos)?;
                    }
                }
                Node::If(c) | Node::With(c) => {
                    let mark = self.vars.len();
                    let v = self.eval_pipeline(dot, &c.pipe)?;
                    if truth(&v) {
                        let body_dot = if matches!(node, Node::With(_)) {
                            &v
                        } else {
                            dot
                        };
                        self.walk(body_dot, &c.list)?;
                    } else if let Some(else_list) = &c.else_list {
                        self.walk(dot, else_list)?;
                    }
                    self.vars.truncate(mark);
                }
                Node::Range(c) => self.walk_range(dot, c)?,
            }
        }
        Ok(())
    }

    fn walk_range(&mut self, dot: &Val<'d>, c: &'t Control) -> Result<(), Error> {
        let mark = self.vars.len();
        let pos = c.pipe.pos;
        let v = self.eval_pipeline(dot, &c.pipe)?;
        let iterated = match v {
            Cow::Borrowed(Value::List(l)) => {
                for (i, e) in l.iter().enumerate() {
                    self.iteration(c, index_value(i), Cow::Borrowed(e))?;
                }
                !l.is_empty()
            }
            Cow::Owned(Value::List(l)) => {
                let any = !l.is_empty();
                for (i, e) in l.into_iter().enumerate() {
                    self.iteration(c, index_value(i), Cow::Owned(e))?;
                }
                any
            }
            Cow::Borrowed(Value::Map(m)) => {
                for (k, e) in m {
                    self.iteration(c, Value::Str(k.clone()), Cow::Borrowed(e))?;
                }
                !m.is_empty()
            }
            Cow::Owned(Value::Map(m)) => {
                let any = !m.is_empty();
                for (k, e) in m {
                    self.iteration(c, Value::Str(k), Cow::Owned(e))?;
                }
                any
            }
            // Go 1.22: range over an integer n yields 0..n.
            Cow::Borrowed(&Value::Int(n)) | Cow::Owned(Value::Int(n)) if c.pipe.decl.len() < 2 => {
                for i in 0..n {
                    self.iteration(c, Value::Int(i), Cow::Owned(Value::Int(i)))?;
                }
                n > 0
            }
            Cow::Borrowed(Value::Nil) | Cow::Owned(Value::Nil) => false,
            other => {
                return Err(Error::Type {
                    offset: pos,
                    message: format!("range can't iterate over a {} value", kind(&other)),
                });
            }
        };
        if let Some(else_list) = c.else_list.as_ref().filter(|_| !iterated) {
            self.walk(dot, else_list)?;
        }
        self.vars.truncate(mark);
        Ok(())
    }

    fn iteration(&mut self, c: &'t Control, index: Value, elem: Val<'d>) -> Result<(), Error> {
        let pipe = &c.pipe;
        self.charge(1, pipe.pos)?;
        match (pipe.decl.as_slice(), pipe.is_assign) {
            ([v], true) => {
                let e = self.dup(&elem, pipe.pos)?;
                self.set_var(v, e, pipe.pos)?;
            }
            ([i, v], true) => {
                let e = self.dup(&elem, pipe.pos)?;
                self.set_var(i, Cow::Owned(index), pipe.pos)?;
                self.set_var(v, e, pipe.pos)?;
            }
            // Declared variables were pushed by the pipeline; the element is on top.
            ([_], false) => {
                let e = self.dup(&elem, pipe.pos)?;
                self.set_top(1, e);
            }
            ([_, _], false) => {
                let e = self.dup(&elem, pipe.pos)?;
                self.set_top(1, e);
                self.set_top(2, Cow::Owned(index));
            }
            _ => {}
        }
        let mark = self.vars.len();
        self.walk(&elem, &c.list)?;
        self.vars.truncate(mark);
        Ok(())
    }

    fn set_top(&mut self, n: usize, v: Val<'d>) {
        let len = self.vars.len();
        if let Some(slot) = len.checked_sub(n).and_then(|i| self.vars.get_mut(i)) {
            slot.1 = v;
        }
    }

    fn set_var(&mut self, name: &str, v: Val<'d>, offset: usize) -> Result<(), Error> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(Error::UndefinedVariable {
                name: name.to_owned(),
                offset,
            }),
        }
    }

    fn var(&mut self, name: &str, offset: usize) -> Result<Val<'d>, Error> {
        let found = self
            .vars
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone());
        match found {
            Some(v) => {
                if let Cow::Owned(o) = &v {
                    self.charge(size(o), offset)?;
                }
                Ok(v)
            }
            None => Err(Error::UndefinedVariable {
                name: name.to_owned(),
                offset,
            }),
        }
    }

    pub(super) fn eval_pipeline(
        &mut self,
        dot: &Val<'d>,
        pipe: &'t Pipe,
    ) -> Result<Val<'d>, Error> {
        let mut value: Option<Val<'d>> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value.take())?);
        }
        let value = value.unwrap_or(Cow::Owned(Value::Nil));
        for name in &pipe.decl {
            let copy = self.dup(&value, pipe.pos)?;
            if pipe.is_assign {
                self.set_var(name, copy, pipe.pos)?;
            } else {
                self.vars.push((name, copy));
            }
        }
        Ok(value)
    }

    fn eval_command(
        &mut self,
        dot: &Val<'d>,
        cmd: &'t Command,
        last: Option<Val<'d>>,
    ) -> Result<Val<'d>, Error> {
        self.charge(1, cmd.pos)?;
        let Some((first, rest)) = cmd.args.split_first() else {
            return Ok(Cow::Owned(Value::Nil));
        };
        self.eval_operand(dot, first, rest, last, true)
    }

    /// Evaluates an argument: like a command of one word with no arguments.
    pub(super) fn eval_arg(&mut self, dot: &Val<'d>, op: &'t Operand) -> Result<Val<'d>, Error> {
        self.eval_operand(dot, op, &[], None, false)
    }

    /// Evaluates `args` (then the piped value) for a function or method.
    pub(super) fn eval_args(
        &mut self,
        dot: &Val<'d>,
        args: &'t [Operand],
        last: Option<Val<'d>>,
    ) -> Result<Vec<Val<'d>>, Error> {
        let mut out = Vec::with_capacity(args.len() + 1);
        for a in args {
            out.push(self.eval_arg(dot, a)?);
        }
        out.extend(last);
        Ok(out)
    }

    fn eval_operand(
        &mut self,
        dot: &Val<'d>,
        op: &'t Operand,
        args: &'t [Operand],
        last: Option<Val<'d>>,
        command: bool,
    ) -> Result<Val<'d>, Error> {
        let pos = op.pos();
        let no_args = |args: &[Operand], last: &Option<Val<'d>>| {
            if args.is_empty() && last.is_none() {
                Ok(())
            } else {
                Err(Error::Type {
                    offset: pos,
                    message: "can't give arguments to a non-function".into(),
                })
            }
        };
        match op {
            Operand::Func { func, .. } => self.call(dot, *func, pos, args, last),
            Operand::Field { fields, .. } => {
                let recv = self.dup(dot, pos)?;
                self.eval_fields(dot, recv, "", fields, args, last, pos)
            }
            Operand::Var { name, fields, .. } => {
                let recv = self.var(name, pos)?;
                if fields.is_empty() {
                    no_args(args, &last)?;
                    return Ok(recv);
                }
                self.eval_fields(dot, recv, name, fields, args, last, pos)
            }
            Operand::Chain {
                base,
                base_text,
                fields,
                ..
            } => {
                if let Operand::Func {
                    func: super::funcs::Func::Time,
                    ..
                } = **base
                {
                    return self.eval_time_chain(dot, fields, args, last, pos);
                }
                let recv = self.eval_arg(dot, base)?;
                self.eval_fields(dot, recv, base_text, fields, args, last, pos)
            }
            Operand::Pipe { pipe, .. } => {
                no_args(args, &last)?;
                self.eval_pipeline(dot, pipe)
            }
            Operand::Nil(_) if command => Err(Error::Type {
                offset: pos,
                message: "nil is not a command".into(),
            }),
            Operand::Nil(_) => Ok(Cow::Owned(Value::Nil)),
            Operand::Dot(_) => {
                no_args(args, &last)?;
                self.dup(dot, pos)
            }
            Operand::Bool(_, b) => {
                no_args(args, &last)?;
                Ok(Cow::Owned(Value::Bool(*b)))
            }
            Operand::Int(_, n) => {
                no_args(args, &last)?;
                Ok(Cow::Owned(Value::Int(*n)))
            }
            Operand::Str(_, s) => {
                no_args(args, &last)?;
                self.charge(s.len(), pos)?;
                Ok(Cow::Owned(Value::Str(s.clone())))
            }
        }
    }

    /// `time.Now` / `time.Parse …`, then any further fields or methods.
    fn eval_time_chain(
        &mut self,
        dot: &Val<'d>,
        fields: &'t [String],
        args: &'t [Operand],
        last: Option<Val<'d>>,
        pos: usize,
    ) -> Result<Val<'d>, Error> {
        let Some((first, more)) = fields.split_first() else {
            return Err(Error::UnknownFunction {
                name: "time".into(),
                offset: pos,
            });
        };
        // Only the chain's last element takes the command's arguments.
        if more.is_empty() {
            let argv = self.eval_args(dot, args, last)?;
            return Ok(Cow::Owned(Value::Time(self.time_func(first, &argv, pos)?)));
        }
        let t = Cow::Owned(Value::Time(self.time_func(first, &[], pos)?));
        self.eval_fields(dot, t, &format!("time.{first}"), more, args, last, pos)
    }

    fn time_func(
        &mut self,
        name: &str,
        argv: &[Val<'d>],
        pos: usize,
    ) -> Result<chrono::DateTime<chrono::FixedOffset>, Error> {
        match name {
            "Now" => {
                if !argv.is_empty() {
                    return Err(wrong_args(
                        "time.Now",
                        pos,
                        format!("want 0 arguments, got {}", argv.len()),
                    ));
                }
                Ok(self.host.now())
            }
            "Parse" => match argv {
                [layout, value] => match (&**layout, &**value) {
                    (Value::Str(layout), Value::Str(value)) => {
                        self.charge(layout.len() + value.len(), pos)?;
                        time::parse(layout, value).map_err(|reason| Error::TimeParse {
                            layout: layout.clone(),
                            value: value.clone(),
                            offset: pos,
                            reason,
                        })
                    }
                    (l, v) => Err(wrong_args(
                        "time.Parse",
                        pos,
                        format!("want two strings, got {} and {}", kind(l), kind(v)),
                    )),
                },
                _ => Err(wrong_args(
                    "time.Parse",
                    pos,
                    format!("want 2 arguments, got {}", argv.len()),
                )),
            },
            other => Err(Error::UnknownFunction {
                name: format!("time.{other}"),
                offset: pos,
            }),
        }
    }

    /// Walks `fields` from `recv`: map keys, or time methods (the last one gets the arguments).
    #[allow(clippy::too_many_arguments)]
    fn eval_fields(
        &mut self,
        dot: &Val<'d>,
        recv: Val<'d>,
        base: &str,
        fields: &'t [String],
        args: &'t [Operand],
        mut last: Option<Val<'d>>,
        pos: usize,
    ) -> Result<Val<'d>, Error> {
        let mut v = recv;
        for (i, name) in fields.iter().enumerate() {
            self.charge(1, pos)?;
            let is_last = i + 1 == fields.len();
            let chain = || format!("{base}.{}", fields[..=i].join("."));
            let has_args = is_last && (!args.is_empty() || last.is_some());
            v = match v {
                Cow::Borrowed(Value::Map(_)) | Cow::Owned(Value::Map(_)) if has_args => {
                    return Err(wrong_args(
                        &chain(),
                        pos,
                        "a field is not a method and takes no arguments".into(),
                    ));
                }
                Cow::Borrowed(Value::Map(m)) => match m.get(name) {
                    Some(x) => Cow::Borrowed(x),
                    None => {
                        return Err(Error::MissingField {
                            chain: chain(),
                            offset: pos,
                        });
                    }
                },
                Cow::Owned(Value::Map(mut m)) => match m.remove(name) {
                    Some(x) => Cow::Owned(x),
                    None => {
                        return Err(Error::MissingField {
                            chain: chain(),
                            offset: pos,
                        });
                    }
                },
                Cow::Borrowed(&Value::Time(t)) | Cow::Owned(Value::Time(t)) => {
                    let argv = if is_last {
                        self.eval_args(dot, args, last.take())?
                    } else {
                        Vec::new()
                    };
                    Cow::Owned(self.time_method(&t, name, &argv, &chain, pos)?)
                }
                other => {
                    return Err(Error::NotAMap {
                        chain: chain(),
                        kind: kind(&other),
                        offset: pos,
                    });
                }
            };
        }
        Ok(v)
    }

    /// Methods of Go's `time.Time` that regsync templates use.
    fn time_method(
        &mut self,
        t: &chrono::DateTime<chrono::FixedOffset>,
        name: &str,
        argv: &[Val<'d>],
        chain: &dyn Fn() -> String,
        pos: usize,
    ) -> Result<Value, Error> {
        use chrono::{Datelike, Timelike};
        let method = || format!("Time.{name}");
        let no_args = || {
            if argv.is_empty() {
                Ok(())
            } else {
                Err(wrong_args(
                    &method(),
                    pos,
                    format!("want 0 arguments, got {}", argv.len()),
                ))
            }
        };
        let one_time = || match argv {
            [x] => match &**x {
                Value::Time(o) => Ok(*o),
                other => Err(wrong_args(
                    &method(),
                    pos,
                    format!("want a time, got {}", kind(other)),
                )),
            },
            _ => Err(wrong_args(
                &method(),
                pos,
                format!("want 1 argument, got {}", argv.len()),
            )),
        };
        let int = |n: u32| Ok(Value::Int(i64::from(n)));
        match name {
            "Format" => match argv {
                [x] => match &**x {
                    Value::Str(layout) => {
                        let s = time::format(t, layout);
                        self.charge(s.len(), pos)?;
                        if s.len() > MAX_OUTPUT {
                            return Err(limit_error(FmtError::TooLong, pos));
                        }
                        Ok(Value::Str(s))
                    }
                    other => Err(wrong_args(
                        &method(),
                        pos,
                        format!("want a string layout, got {}", kind(other)),
                    )),
                },
                _ => Err(wrong_args(
                    &method(),
                    pos,
                    format!("want 1 argument, got {}", argv.len()),
                )),
            },
            "Year" => no_args().map(|()| Value::Int(i64::from(t.year()))),
            "Month" => no_args().and_then(|()| int(t.month())),
            "Day" => no_args().and_then(|()| int(t.day())),
            "Hour" => no_args().and_then(|()| int(t.hour())),
            "Minute" => no_args().and_then(|()| int(t.minute())),
            "Second" => no_args().and_then(|()| int(t.second())),
            "Nanosecond" => no_args().and_then(|()| int(t.nanosecond() % 1_000_000_000)),
            "YearDay" => no_args().and_then(|()| int(t.ordinal())),
            "Unix" => no_args().map(|()| Value::Int(t.timestamp())),
            "UnixMilli" => no_args().map(|()| Value::Int(t.timestamp_millis())),
            "UnixNano" => {
                no_args()?;
                t.timestamp_nanos_opt()
                    .map(Value::Int)
                    .ok_or(Error::TimeRange { offset: pos })
            }
            "UTC" => no_args().map(|()| Value::Time(t.with_timezone(&chrono::Utc).fixed_offset())),
            "String" => no_args().map(|()| Value::Str(time::to_string(t))),
            "IsZero" => no_args().map(|()| Value::Bool(time::is_zero(t))),
            "Before" => one_time().map(|o| Value::Bool(t < &o)),
            "After" => one_time().map(|o| Value::Bool(t > &o)),
            "Equal" => one_time().map(|o| Value::Bool(t == &o)),
            "AddDate" => {
                let ints: Vec<i64> = argv
                    .iter()
                    .filter_map(|x| match &**x {
                        Value::Int(n) => Some(*n),
                        _ => None,
                    })
                    .collect();
                match ints.as_slice() {
                    [y, m, d] if argv.len() == 3 => time::add_date(t, *y, *m, *d)
                        .map(Value::Time)
                        .ok_or(Error::TimeRange { offset: pos }),
                    _ => Err(wrong_args(
                        &method(),
                        pos,
                        "want 3 integer arguments (years, months, days)".into(),
                    )),
                }
            }
            _ => Err(Error::MissingField {
                chain: chain(),
                offset: pos,
            }),
        }
    }
}

fn index_value(i: usize) -> Value {
    Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
}

/// An [`Error::WrongArguments`] for `function`.
pub(super) fn wrong_args(function: &str, offset: usize, message: String) -> Error {
    Error::WrongArguments {
        function: function.to_owned(),
        offset,
        message,
    }
}
