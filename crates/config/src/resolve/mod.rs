//! Raw structs → [`Config`]: defaults inherited exactly as regsync's `syncSetDefaults`,
//! templates expanded, every value parsed and checked. All errors name their place.
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use regferry_registry::{DOCKER_HUB, Platform, Reference, Secret, is_valid_registry};
use serde_saphyr::{Location, Spanned};

use crate::duration::{go_duration_string, parse_go_duration};
use crate::error::{ConfigError, EntryRef, ErrorKind, Position, Section, Warning, WarningKind};
use crate::filter::{Pattern, ReferrerFilter, RepoFilter, TagFilter, TagSet};
use crate::model::*;
use crate::parse::Parsed;
use crate::raw::*;
use crate::schedule::Schedule;
use crate::semver::RangeSet;
use crate::template::{self, Template, Value};

mod creds;
mod entry;
mod limits;
mod patterns;
mod sync_data;

use creds::resolve_creds;
use entry::resolve_entry;
use limits::{LimitsAt, resolve_limits};
use sync_data::SyncData;

/// A loaded configuration and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Problems that did not stop loading (unknown keys, deprecated keys, …).
    pub warnings: Vec<Warning>,
}

/// The same warning, at other places, shown in full at most this often.
const SAME_WARNING_SHOWN: usize = 3;

impl Loaded {
    /// The warnings as lines to log: each one in full, except that a warning repeated at
    /// many places (a generated file with `deny: ["*"]` in 181 entries) is shown
    /// [`SAME_WARNING_SHOWN`] times, then counted in one line.
    pub fn warning_lines(&self) -> Vec<String> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut lines = Vec::new();
        for w in &self.warnings {
            let n = seen.entry(w.kind.to_string()).or_default();
            *n += 1;
            if *n <= SAME_WARNING_SHOWN {
                lines.push(w.to_string());
            }
        }
        for w in &self.warnings {
            let kind = w.kind.to_string();
            if let Some(n) = seen.remove(&kind)
                && n > SAME_WARNING_SHOWN
            {
                lines.push(format!(
                    "{}: {} more times: {kind}",
                    self.config.file,
                    n - SAME_WARNING_SHOWN
                ));
            }
        }
        lines
    }
}

struct Ctx<'a> {
    file: &'a str,
    /// The file's text, to tell how a value was written (quoted or not).
    text: &'a str,
    host: &'a dyn template::Host,
    warnings: Vec<Warning>,
}

/// The entry and field an error is about, before the line is known.
#[derive(Clone)]
struct Scope {
    entry: Option<EntryRef>,
    prefix: String,
}

impl Scope {
    fn entry(section: Section, index: usize, label: Option<String>) -> Scope {
        Scope {
            entry: Some(EntryRef {
                section,
                index,
                label,
            }),
            prefix: String::new(),
        }
    }

    fn top(prefix: &str) -> Scope {
        Scope {
            entry: None,
            prefix: prefix.to_owned(),
        }
    }

    fn field(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

impl Ctx<'_> {
    fn pos(&self, scope: &Scope, field: &str, loc: Option<Location>) -> Position {
        let loc = loc.filter(|l| *l != Location::UNKNOWN);
        Position {
            file: self.file.to_owned(),
            line: loc.map(|l| l.line()),
            column: loc.map(|l| l.column()),
            entry: scope.entry.clone(),
            field: (!field.is_empty()).then(|| scope.field(field)),
        }
    }

    fn err<T>(
        &self,
        scope: &Scope,
        field: &str,
        loc: Option<Location>,
        kind: ErrorKind,
    ) -> Result<T, ConfigError> {
        Err(self.error(scope, field, loc, kind))
    }

    fn error(
        &self,
        scope: &Scope,
        field: &str,
        loc: Option<Location>,
        kind: ErrorKind,
    ) -> ConfigError {
        ConfigError::new(self.pos(scope, field, loc), kind)
    }

    /// A warning; one without a position gets the position of its key when loading ends
    /// (see [`Ctx::place_warnings`]).
    fn warn(&mut self, scope: &Scope, field: &str, loc: Option<Location>, kind: WarningKind) {
        let at = self.pos(scope, field, loc);
        self.warnings.push(Warning { at, kind });
    }

    /// Gives each warning without a line the position of the key it names (for unknown
    /// keys, the key's path as `unknown_keys` lists it by warning index).
    fn place_warnings(&mut self, unknown_keys: &[(usize, String)]) {
        let paths: HashMap<usize, &String> = unknown_keys.iter().map(|(i, p)| (*i, p)).collect();
        let (mut explicit, mut rest) = (Vec::new(), Vec::new());
        for (i, w) in self.warnings.iter_mut().enumerate() {
            match paths.get(&i) {
                Some(path) => explicit.push((&mut w.at, (*path).clone())),
                None => rest.push(&mut w.at),
            }
        }
        place_at(self.text, explicit, rest);
    }

    /// Expands a template; `sync` becomes `.Sync` (regsync passes the entry as `.Sync`).
    fn expand(
        &self,
        scope: &Scope,
        field: &str,
        s: &Spanned<String>,
        sync: &Value,
    ) -> Result<String, ConfigError> {
        let loc = Some(s.defined);
        let data = match sync {
            Value::Nil => Value::Nil,
            v => Value::Map(BTreeMap::from([("Sync".to_owned(), v.clone())])),
        };
        let data = &data;
        let t = Template::parse(&s.value)
            .or_else(|source| self.err(scope, field, loc, ErrorKind::Template { source }))?;
        if t.is_literal() {
            return Ok(s.value.clone());
        }
        t.render(data, self.host)
            .or_else(|source| self.err(scope, field, loc, ErrorKind::Template { source }))
    }

    fn duration(
        &self,
        scope: &Scope,
        field: &str,
        s: &Spanned<Scalar>,
    ) -> Result<Duration, ConfigError> {
        parse_go_duration(&s.value.0).or_else(|source| {
            self.err(
                scope,
                field,
                Some(s.defined),
                ErrorKind::Duration { source },
            )
        })
    }
}

pub(crate) fn resolve(
    parsed: Parsed,
    text: &str,
    file: &str,
    host: &dyn template::Host,
) -> Result<Loaded, ConfigError> {
    let mut ctx = Ctx {
        file,
        text,
        host,
        warnings: Vec::new(),
    };
    let Parsed {
        mut raw,
        unknown_keys,
    } = parsed;
    let unknown_keys = report_unknown_keys(&mut ctx, text, &unknown_keys);

    if let Some(v) = &raw.version
        && !(0..=1).contains(&v.value)
    {
        return ctx.err(
            &Scope::top(""),
            "version",
            Some(v.defined),
            ErrorKind::UnsupportedVersion { version: v.value },
        );
    }

    // Each part is checked whatever the others hold, so that one load reports every error.
    let mut errors = Vec::new();
    let creds = resolve_creds(&mut ctx, std::mem::take(&mut raw.creds), &mut errors);
    let globals = resolve_globals(&mut ctx, &raw.defaults).unwrap_or_else(|e| {
        errors.extend(e);
        Globals::default()
    });
    let defaults_scope = Scope::top("defaults");
    let defaults = raw.defaults.take_inheritable();
    check_inheritable_notes(&mut ctx, &defaults_scope, &defaults);
    let mut sync = Vec::with_capacity(raw.sync.len());
    // Names taken so far: a set, so that a file of many entries loads in linear time.
    let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (index, entry) in raw.sync.into_iter().enumerate() {
        let mut e = match resolve_entry(&mut ctx, index, entry, &defaults) {
            Ok(e) => e,
            Err(errs) => {
                errors.extend(errs);
                continue;
            }
        };
        if names.contains(&e.name) {
            if e.name == default_entry_name(&e.source.to_string(), &e.targets_text()) {
                // Two entries with the same source and target (valid in regsync): keep both,
                // told apart by index.
                e.name = format!("{}-{index}", e.name);
            } else {
                let scope = Scope::entry(Section::Sync, index, Some(e.source.to_string()));
                errors.push(ConfigError::new(
                    ctx.pos(&scope, "name", None),
                    ErrorKind::Endpoint {
                        value: e.name.clone(),
                        reason: "is already the name of an earlier entry",
                    },
                ));
                continue;
            }
        }
        names.insert(e.name.clone());
        sync.push(e);
    }
    if !errors.is_empty() {
        place(text, errors.iter_mut().map(|e| &mut *e.at));
        if let Some(all) = ConfigError::all(errors) {
            return Err(all);
        }
    }
    if sync.is_empty() {
        ctx.warn(
            &Scope::top(""),
            "sync",
            None,
            WarningKind::Ignored {
                reason: "the configuration has no sync entries, so nothing will be copied",
            },
        );
    }
    ctx.place_warnings(&unknown_keys);
    Ok(Loaded {
        config: Config {
            file: file.to_owned(),
            creds,
            globals,
            sync,
        },
        warnings: ctx.warnings,
    })
}

/// Warns about each key no struct reads; returns each warning's index and its key's path,
/// for [`Ctx::place_warnings`].
/// Gives each position without a line the position of the key its entry and field name,
/// found in one more parse of the text (only when there is such a position).
fn place<'a>(text: &str, positions: impl Iterator<Item = &'a mut Position>) {
    place_at(text, Vec::new(), positions.collect());
}

/// [`place`], with some positions' key paths given.
fn place_at<'a>(
    text: &str,
    mut paths: Vec<(&'a mut Position, String)>,
    rest: Vec<&'a mut Position>,
) {
    for at in rest {
        if at.line.is_some() {
            continue;
        }
        let mut path = match &at.entry {
            Some(e) => format!("{}.{}", e.section.key(), e.index),
            None => String::new(),
        };
        if let Some(field) = &at.field {
            // `tags.allow[0]` is the path `tags.allow.0`.
            let field = field.replace('[', ".").replace(']', "");
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&field);
        }
        if !path.is_empty() {
            paths.push((at, path));
        }
    }
    if paths.is_empty() {
        return;
    }
    let keys: Vec<String> = paths.iter().map(|(_, p)| p.clone()).collect();
    let found = crate::parse::key_positions(text, &keys);
    for ((at, _), loc) in paths.into_iter().zip(found) {
        if let Some(l) = loc.filter(|l| *l != Location::UNKNOWN) {
            at.line = Some(l.line());
            at.column = Some(l.column());
        }
    }
}

fn report_unknown_keys(ctx: &mut Ctx<'_>, text: &str, keys: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut labels: Option<crate::parse::EntryLabels> = None;
    for path in keys {
        // Top-level x-* keys are the documented extension namespace (anchors live there).
        if !path.contains('.') && path.starts_with("x-") {
            continue;
        }
        // serde_ignored names values inside Spanned as `?` and `value`; they are not keys.
        let segs: Vec<&str> = path
            .split('.')
            .filter(|s| *s != "?" && *s != "value")
            .collect();
        let (entry, rest) = match segs.as_slice() {
            [list @ ("sync" | "creds"), idx, rest @ ..] if idx.parse::<usize>().is_ok() => {
                let section = if *list == "sync" {
                    Section::Sync
                } else {
                    Section::Creds
                };
                let index = idx.parse().unwrap_or_default();
                (
                    Some(EntryRef {
                        section,
                        index,
                        label: labels
                            .get_or_insert_with(|| crate::parse::EntryLabels::read(text))
                            .get(section, index),
                    }),
                    rest.to_vec(),
                )
            }
            _ => (None, segs.clone()),
        };
        // Keys inside `hooks` and `api` are accepted wholesale (and warned about once).
        if matches!(rest.first(), Some(&"hooks" | &"api")) || matches!(rest.get(1), Some(&"hooks"))
        {
            continue;
        }
        found.push((segs.join("."), entry, rest.join(".")));
    }
    let mut placed = Vec::new();
    for (path, entry, key) in found {
        let scope = Scope {
            entry,
            prefix: String::new(),
        };
        placed.push((ctx.warnings.len(), path));
        ctx.warn(&scope, "", None, WarningKind::UnknownKey { key });
    }
    placed
}

fn resolve_globals(ctx: &mut Ctx<'_>, d: &RawDefaults) -> Result<Globals, Vec<ConfigError>> {
    let mut errs = Errors::default();
    let globals = read_globals(ctx, d, &mut errs);
    errs.finish()?;
    let scope = Scope::top("defaults");
    for (field, at) in [
        ("cacheCount", d.cache_count.as_ref().map(|v| v.defined)),
        ("cacheTime", d.cache_time.as_ref().map(|v| v.defined)),
    ] {
        if let Some(at) = at {
            ctx.warn(
                &scope,
                field,
                Some(at),
                WarningKind::Ignored {
                    reason: "has no effect in regferry: it reads a manifest only to copy it, once \
                             per run however many tags share it, and compares tags with a HEAD \
                             each run, which a cache could only answer stale",
                },
            );
        }
    }
    Ok(globals)
}

fn read_globals(ctx: &Ctx<'_>, d: &RawDefaults, errs: &mut Errors) -> Globals {
    let scope = Scope::top("defaults");
    let non_negative =
        |field: &str, v: &Option<Spanned<i64>>| -> Result<Option<u64>, ConfigError> {
            match v {
                Some(s) if s.value < 0 => ctx.err(
                    &scope,
                    field,
                    Some(s.defined),
                    ErrorKind::OutOfRange {
                        value: s.value.to_string(),
                        expected: "a number >= 0",
                    },
                ),
                Some(s) => Ok(Some(s.value as u64)),
                None => Ok(None),
            }
        };
    let parallel = errs
        .keep(non_negative("parallel", &d.parallel))
        .flatten()
        .map_or(DEFAULT_PARALLEL, |p| p.min(u64::from(u32::MAX)) as u32);
    // regsync's manifest cache: read, so that a bad value is still refused, but it has no
    // effect in regferry (see WarningKind::Ignored below).
    errs.keep(non_negative("cacheCount", &d.cache_count));
    if let Some(t) = &d.cache_time {
        errs.keep(ctx.duration(&scope, "cacheTime", t));
    }
    Globals {
        parallel,
        skip_docker_config: d.skip_docker_config.unwrap_or(false),
        user_agent: d
            .user_agent
            .as_ref()
            .map(|s| s.value.clone())
            .filter(|s| !s.is_empty()),
        blob_limit: errs
            .keep(non_negative("blobLimit", &d.blob_limit))
            .flatten()
            .filter(|b| *b > 0),
        limits: match &d.limits {
            Some(l) => resolve_limits(ctx, &scope, l, LimitsAt::Defaults, errs),
            None => LimitSettings::default(),
        },
        target_recheck: d
            .target_recheck
            .as_ref()
            .and_then(|t| errs.keep(ctx.duration(&scope, "targetRecheck", t)))
            .unwrap_or(DEFAULT_TARGET_RECHECK),
    }
}

fn check_inheritable_notes(ctx: &mut Ctx<'_>, scope: &Scope, i: &RawInheritable) {
    if i.hooks.is_some() {
        ctx.warn(
            scope,
            "hooks",
            None,
            WarningKind::Ignored {
                reason: "regsync parses hooks but never runs them; regferry does the same",
            },
        );
    }
    if i.fast_copy.is_some() && i.fast_check.is_none() {
        ctx.warn(scope, "fastCopy", None, WarningKind::FastCopyAlias);
    }
}

fn bool_of(entry: Option<bool>, default: Option<bool>) -> bool {
    entry.or(default).unwrap_or(false)
}

/// The errors of one entry (or of `defaults`), gathered so that one load reports each of
/// them rather than the first.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    /// The value of `r`, or `None` with its error kept.
    pub(super) fn keep<T>(&mut self, r: Result<T, ConfigError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// All errors so far and `last`: for a check that later ones depend on.
    pub(super) fn with(&mut self, last: ConfigError) -> Vec<ConfigError> {
        let mut all = std::mem::take(&mut self.0);
        all.push(last);
        all
    }

    /// The errors kept.
    pub(super) fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }

    /// `Err` with the errors kept, if any.
    pub(super) fn finish(&mut self) -> Result<(), Vec<ConfigError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(std::mem::take(&mut self.0))
        }
    }
}
