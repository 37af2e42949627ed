//! Parser: tokens → a tree of text, actions and control blocks.
//!
//! Follows Go's `text/template/parse` rules: functions and variables are checked
//! here (so a typo fails at load time), `{{else if}}` / `{{else with}}` become a
//! nested block in the else branch, and only the first command of a pipeline may
//! start with a constant.

use super::funcs::Func;
use super::lex::syntax;
use super::lex::{self, Kw, Tok, Token};
use super::{Error, MAX_DEPTH};

/// A node of the template tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    /// Literal text and its offset.
    Text(usize, String),
    /// `{{pipeline}}`: prints the value unless the pipeline declares a variable.
    Action(Pipe),
    /// `{{if}}`.
    If(Control),
    /// `{{range}}`.
    Range(Control),
    /// `{{with}}`.
    With(Control),
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub(super) struct Control {
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Option<Vec<Node>>,
}

/// A pipeline, with the variables it declares (`:=`) or assigns (`=`).
#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) decl: Vec<String>,
    pub(super) is_assign: bool,
    pub(super) cmds: Vec<Command>,
}

/// One `|`-separated stage: a function, method or value followed by arguments.
#[derive(Debug, Clone)]
pub(super) struct Command {
    pub(super) pos: usize,
    pub(super) args: Vec<Operand>,
}

/// An argument or the head of a command.
#[derive(Debug, Clone)]
pub(super) enum Operand {
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    Int(usize, i64),
    Str(usize, String),
    /// `.A.B`: fields of dot.
    Field {
        pos: usize,
        fields: Vec<String>,
    },
    /// `$x.A.B` (fields may be empty).
    Var {
        pos: usize,
        name: String,
        fields: Vec<String>,
    },
    /// A function name.
    Func {
        pos: usize,
        func: Func,
    },
    /// Fields or methods of a function result or parenthesised pipeline: `(…).Format`, `time.Now`.
    Chain {
        pos: usize,
        base: Box<Operand>,
        base_text: String,
        fields: Vec<String>,
    },
    /// `( pipeline )`, at the offset of its `(`.
    Pipe {
        pos: usize,
        pipe: Box<Pipe>,
    },
}

impl Operand {
    pub(super) fn pos(&self) -> usize {
        match self {
            Operand::Dot(p)
            | Operand::Nil(p)
            | Operand::Bool(p, _)
            | Operand::Int(p, _)
            | Operand::Str(p, _) => *p,
            Operand::Field { pos, .. }
            | Operand::Var { pos, .. }
            | Operand::Func { pos, .. }
            | Operand::Chain { pos, .. }
            | Operand::Pipe { pos, .. } => *pos,
        }
    }
}

/// Why an item list stopped.
enum Stop {
    Eof,
    End(usize),
    /// `{{else}}`, or `{{else if}}` / `{{else with}}` with the keyword still pending.
    Else {
        pos: usize,
        chained: Option<Kw>,
    },
}

/// What one `{{ }}` produced.
enum Act {
    Node(Node),
    End(usize),
    Else { pos: usize, chained: Option<Kw> },
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    vars: Vec<String>,
    depth: usize,
}

/// Parses a whole template.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, Error> {
    let toks = lex::lex(src)?;
    let mut p = Parser {
        src,
        toks,
        i: 0,
        vars: vec!["$".to_owned()],
        depth: 0,
    };
    let (list, stop) = p.item_list()?;
    match stop {
        Stop::Eof => Ok(list),
        Stop::End(pos) => Err(syntax(pos, "unexpected {{end}}")),
        Stop::Else { pos, .. } => Err(syntax(pos, "unexpected {{else}}")),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Text(_) => "text".into(),
        Tok::Left => "{{".into(),
        Tok::Right => "}}".into(),
        Tok::Space => "space".into(),
        Tok::Pipe => "|".into(),
        Tok::LParen => "(".into(),
        Tok::RParen => ")".into(),
        Tok::Declare => ":=".into(),
        Tok::Assign => "=".into(),
        Tok::Comma => ",".into(),
        Tok::Char(c) => format!("{c:?}"),
        Tok::Dot => ".".into(),
        Tok::Field(f) => format!(".{f}"),
        Tok::Var(v) => v.clone(),
        Tok::Ident(i) => i.clone(),
        Tok::Keyword(k) => format!("<{}>", k.word()),
        Tok::Bool(b) => b.to_string(),
        Tok::Int(n) => n.to_string(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::Eof => "end of input".into(),
    }
}

fn unexpected(t: &Token, context: &str) -> Error {
    syntax(
        t.pos,
        format!("unexpected {} in {context}", describe(&t.tok)),
    )
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The lexer always ends the stream with Eof, and `next` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn skip_spaces(&mut self) {
        while self.peek().tok == Tok::Space {
            self.i += 1;
        }
    }

    fn next_non_space(&mut self) -> Token {
        self.skip_spaces();
        self.next()
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn enter(&mut self, pos: usize) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::LimitExceeded {
                what: "nesting depth",
                limit: MAX_DEPTH,
                offset: pos,
            });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn item_list(&mut self) -> Result<(Vec<Node>, Stop), Error> {
        let mut list = Vec::new();
        loop {
            let t = self.next();
            match t.tok {
                Tok::Eof => return Ok((list, Stop::Eof)),
                Tok::Text(s) => list.push(Node::Text(t.pos, s)),
                Tok::Left => match self.action()? {
                    Act::Node(n) => list.push(n),
                    Act::End(pos) => return Ok((list, Stop::End(pos))),
                    Act::Else { pos, chained } => return Ok((list, Stop::Else { pos, chained })),
                },
                _ => return Err(unexpected(&t, "input")),
            }
        }
    }

    fn action(&mut self) -> Result<Act, Error> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Keyword(
                kw @ (Kw::Block | Kw::Define | Kw::Template | Kw::Break | Kw::Continue),
            ) => Err(Error::Unsupported {
                offset: t.pos,
                feature: format!("{{{{{}}}}}", kw.word()),
            }),
            Tok::Keyword(Kw::Else) => {
                self.skip_spaces();
                match self.peek().tok {
                    Tok::Keyword(kw @ (Kw::If | Kw::With)) => Ok(Act::Else {
                        pos: t.pos,
                        chained: Some(kw),
                    }),
                    _ => {
                        self.expect_right("else")?;
                        Ok(Act::Else {
                            pos: t.pos,
                            chained: None,
                        })
                    }
                }
            }
            Tok::Keyword(Kw::End) => {
                self.expect_right("end")?;
                Ok(Act::End(t.pos))
            }
            Tok::Keyword(kw @ (Kw::If | Kw::Range | Kw::With)) => {
                Ok(Act::Node(self.control(kw, t.pos)?))
            }
            _ => {
                self.backup();
                Ok(Act::Node(Node::Action(self.pipeline("command", true)?)))
            }
        }
    }

    fn expect_right(&mut self, context: &str) -> Result<(), Error> {
        let t = self.next_non_space();
        if t.tok == Tok::Right {
            Ok(())
        } else {
            Err(unexpected(&t, context))
        }
    }

    fn control(&mut self, kw: Kw, pos: usize) -> Result<Node, Error> {
        self.enter(pos)?;
        let mark = self.vars.len();
        let context = kw.word();
        let pipe = self.pipeline(context, true)?;
        let (list, stop) = self.item_list()?;
        let eof = || {
            syntax(
                self.src.len(),
                format!(
                    "unexpected end of input: {{{{{context}}}}} at byte {pos} has no {{{{end}}}}"
                ),
            )
        };
        let else_list = match stop {
            Stop::End(_) => None,
            Stop::Eof => return Err(eof()),
            Stop::Else { chained: None, .. } => match self.item_list()? {
                (l, Stop::End(_)) => Some(l),
                (_, Stop::Eof) => return Err(eof()),
                (_, Stop::Else { pos, .. }) => {
                    return Err(syntax(pos, "expected {{end}}; found {{else}}"));
                }
            },
            Stop::Else {
                pos: else_pos,
                chained: Some(chained),
            } => {
                if chained != kw {
                    let w = chained.word();
                    return Err(syntax(
                        else_pos,
                        format!("{{{{else {w}}}}} is only allowed inside {{{{{w}}}}}"),
                    ));
                }
                self.skip_spaces();
                let t = self.next();
                Some(vec![self.control(kw, t.pos)?])
            }
        };
        self.vars.truncate(mark);
        self.leave();
        let c = Control {
            pipe,
            list,
            else_list,
        };
        Ok(match kw {
            Kw::If => Node::If(c),
            Kw::Range => Node::Range(c),
            _ => Node::With(c),
        })
    }

    fn check_var(&self, name: &str, pos: usize) -> Result<(), Error> {
        if self.vars.iter().any(|v| v == name) {
            Ok(())
        } else {
            Err(Error::UndefinedVariable {
                name: name.to_owned(),
                offset: pos,
            })
        }
    }

    /// Parses `$x :=`, `$x =` or (range only) `$i, $v :=` at the start of a pipeline.
    fn decls(&mut self, context: &str) -> Result<(Vec<String>, bool), Error> {
        let save = self.i;
        self.skip_spaces();
        let first = self.next();
        let Tok::Var(name) = first.tok else {
            self.i = save;
            return Ok((Vec::new(), false));
        };
        self.skip_spaces();
        let mut names = vec![(name, first.pos)];
        let op = self.next();
        match op.tok {
            Tok::Declare | Tok::Assign => {}
            Tok::Comma if context != "range" => {
                return Err(syntax(
                    op.pos,
                    format!("too many declarations in {context}"),
                ));
            }
            Tok::Comma => {
                let second = self.next_non_space();
                let Tok::Var(name2) = second.tok else {
                    return Err(syntax(second.pos, "range can only initialize variables"));
                };
                names.push((name2, second.pos));
                let op2 = self.next_non_space();
                match op2.tok {
                    Tok::Declare | Tok::Assign => return self.bind(names, op2.tok == Tok::Assign),
                    Tok::Comma => return Err(syntax(op2.pos, "too many declarations in range")),
                    _ => return Err(syntax(op2.pos, "range can only initialize variables")),
                }
            }
            _ => {
                self.i = save;
                return Ok((Vec::new(), false));
            }
        }
        self.bind(names, op.tok == Tok::Assign)
    }

    fn bind(
        &mut self,
        names: Vec<(String, usize)>,
        assign: bool,
    ) -> Result<(Vec<String>, bool), Error> {
        if assign {
            for (name, pos) in &names {
                self.check_var(name, *pos)?;
            }
        } else {
            // Declared before the pipeline runs, as in Go: `$x := $x` parses
            // (and fails at run time).
            self.vars.extend(names.iter().map(|(n, _)| n.clone()));
        }
        Ok((names.into_iter().map(|(n, _)| n).collect(), assign))
    }

    /// Parses a pipeline up to `}}` (`at_delim`) or `)`.
    fn pipeline(&mut self, context: &str, at_delim: bool) -> Result<Pipe, Error> {
        self.skip_spaces();
        let pos = self.peek().pos;
        let (decl, is_assign) = self.decls(context)?;
        let mut cmds: Vec<Command> = Vec::new();
        loop {
            let t = self.next_non_space();
            match t.tok {
                // Go accepts a trailing `|` before the closing delimiter, so do we.
                Tok::Right | Tok::RParen if (t.tok == Tok::Right) == at_delim => break,
                Tok::Bool(_)
                | Tok::Int(_)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Keyword(Kw::Nil)
                | Tok::Str(_)
                | Tok::Var(_)
                | Tok::LParen => {
                    self.backup();
                    cmds.push(self.command()?);
                }
                _ => return Err(unexpected(&t, context)),
            }
        }
        if cmds.is_empty() {
            return Err(syntax(pos, format!("missing value for {context}")));
        }
        for (i, c) in cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args[0],
                Operand::Bool(..)
                    | Operand::Dot(_)
                    | Operand::Nil(_)
                    | Operand::Int(..)
                    | Operand::Str(..)
            ) {
                return Err(syntax(
                    c.pos,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        Ok(Pipe {
            pos,
            decl,
            is_assign,
            cmds,
        })
    }

    /// Parses one command, up to and including a `|`, or up to the closing `}}` or `)`.
    fn command(&mut self) -> Result<Command, Error> {
        self.skip_spaces();
        let pos = self.peek().pos;
        let mut args = Vec::new();
        loop {
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let t = self.next();
            match t.tok {
                Tok::Space => continue,
                Tok::Right | Tok::RParen => {
                    self.backup();
                    break;
                }
                Tok::Pipe => break,
                _ => return Err(unexpected(&t, "operand")),
            }
        }
        if args.is_empty() {
            return Err(syntax(pos, "empty command"));
        }
        Ok(Command { pos, args })
    }

    fn operand(&mut self) -> Result<Option<Operand>, Error> {
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            fields.push(f.clone());
            self.i += 1;
        }
        if fields.is_empty() {
            if let Operand::Func {
                pos,
                func: Func::Time,
            } = term
            {
                return Err(Error::Unsupported {
                    offset: pos,
                    feature: "time without .Now or .Parse".into(),
                });
            }
            return Ok(Some(term));
        }
        Ok(Some(match term {
            Operand::Field { pos, fields: mut f } => {
                f.extend(fields);
                Operand::Field { pos, fields: f }
            }
            Operand::Var {
                pos,
                name,
                fields: mut f,
            } => {
                f.extend(fields);
                Operand::Var {
                    pos,
                    name,
                    fields: f,
                }
            }
            Operand::Func { pos, func } => {
                if func == Func::Time && !matches!(fields[0].as_str(), "Now" | "Parse") {
                    return Err(Error::UnknownFunction {
                        name: format!("time.{}", fields[0]),
                        offset: pos,
                    });
                }
                Operand::Chain {
                    pos,
                    base: Box::new(Operand::Func { pos, func }),
                    base_text: func.name().to_owned(),
                    fields,
                }
            }
            Operand::Pipe { pos, pipe } => {
                // The token before the first field is the closing `)`.
                let end = self.toks[self.i - fields.len() - 1].pos + 1;
                Operand::Chain {
                    pos,
                    base_text: self.src.get(pos..end).unwrap_or("(…)").to_owned(),
                    base: Box::new(Operand::Pipe { pos, pipe }),
                    fields,
                }
            }
            other => return Err(syntax(other.pos(), "unexpected . after term")),
        }))
    }

    fn term(&mut self) -> Result<Option<Operand>, Error> {
        let t = self.next_non_space();
        let pos = t.pos;
        Ok(Some(match t.tok {
            Tok::Ident(name) => Operand::Func {
                pos,
                func: Func::lookup(&name, pos)?,
            },
            Tok::Dot => Operand::Dot(pos),
            Tok::Keyword(Kw::Nil) => Operand::Nil(pos),
            Tok::Var(name) => {
                self.check_var(&name, pos)?;
                Operand::Var {
                    pos,
                    name,
                    fields: Vec::new(),
                }
            }
            Tok::Field(f) => Operand::Field {
                pos,
                fields: vec![f],
            },
            Tok::Bool(b) => Operand::Bool(pos, b),
            Tok::Int(n) => Operand::Int(pos, n),
            Tok::Str(s) => Operand::Str(pos, s),
            Tok::LParen => {
                self.enter(pos)?;
                let pipe = Box::new(self.pipeline("parenthesized pipeline", false)?);
                self.leave();
                Operand::Pipe { pos, pipe }
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> Error {
        match parse(src) {
            Ok(n) => panic!("{src:?} parsed: {n:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for src in [
            "{{end}}",
            "{{else}}",
            "{{if .}}",
            "{{}}",
            "{{ ( ) }}",
            "{{12|false}}",
            "{{true.any}}",
            "{{$a,$b := 1}}",
            "{{range $k, .}}{{end}}",
            "{{range $k, $v := }}{{end}}",
            "{{ \"a\"\"b\" }}",
            "{{range .}}{{else if .}}{{end}}",
        ] {
            assert!(matches!(err(src), Error::Syntax { .. }), "{src}");
        }
    }

    #[test]
    fn checks_names_at_parse_time() {
        assert!(matches!(
            err("{{ nope 1 }}"),
            Error::UnknownFunction { offset: 3, .. }
        ));
        assert!(matches!(
            err("x {{ $a }}"),
            Error::UndefinedVariable { offset: 5, .. }
        ));
        assert!(matches!(
            err("{{ $a = 1 }}"),
            Error::UndefinedVariable { .. }
        ));
        assert!(matches!(
            err("{{ time.Later }}"),
            Error::UnknownFunction { .. }
        ));
        assert!(matches!(err("{{ time }}"), Error::Unsupported { .. }));
    }

    #[test]
    fn variables_scope_to_their_block() {
        assert!(parse("{{if 1}}{{$x := 1}}{{$x}}{{end}}").is_ok());
        assert!(matches!(
            err("{{if 1}}{{$x := 1}}{{end}}{{$x}}"),
            Error::UndefinedVariable { .. }
        ));
        assert!(parse("{{with $x := 1}}{{else with $y := 2}}{{$x}}{{$y}}{{end}}").is_ok());
        assert!(parse("{{range $i, $v := .}}{{$i}}{{$v}}{{end}}").is_ok());
    }

    #[test]
    fn unsupported_constructs() {
        for src in [
            "{{define \"x\"}}{{end}}",
            "{{template \"x\"}}",
            "{{block \"x\" .}}{{end}}",
            "{{range .}}{{break}}{{end}}",
        ] {
            assert!(matches!(err(src), Error::Unsupported { .. }), "{src}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{{{{{}1{}}}}}", "(".repeat(500), ")".repeat(500));
        assert!(matches!(err(&deep), Error::LimitExceeded { .. }));
    }
}
