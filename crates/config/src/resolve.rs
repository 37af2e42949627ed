//! Raw structs → [`Config`]: defaults inherited exactly as regsync's `syncSetDefaults`,
//! templates expanded, every value parsed and checked. All errors name their place.
use std::collections::BTreeMap;
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

/// A loaded configuration and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Problems that did not stop loading (unknown keys, deprecated keys, …).
    pub warnings: Vec<Warning>,
}

struct Ctx<'a> {
    file: &'a str,
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
        Err(ConfigError::new(self.pos(scope, field, loc), kind))
    }

    fn warn(&mut self, scope: &Scope, field: &str, loc: Option<Location>, kind: WarningKind) {
        let at = self.pos(scope, field, loc);
        self.warnings.push(Warning { at, kind });
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

    fn patterns(
        &self,
        scope: &Scope,
        field: &str,
        list: &[Spanned<Scalar>],
    ) -> Result<Vec<Pattern>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, p)| {
                Pattern::new(&p.value.0).or_else(|e| {
                    self.err(
                        scope,
                        &format!("{field}[{i}]"),
                        Some(p.defined),
                        ErrorKind::Regex {
                            pattern: p.value.0.clone(),
                            source: Box::new(e),
                        },
                    )
                })
            })
            .collect()
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
        host,
        warnings: Vec::new(),
    };
    let Parsed {
        mut raw,
        unknown_keys,
    } = parsed;
    report_unknown_keys(&mut ctx, text, &unknown_keys);

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

    let creds = resolve_creds(&mut ctx, std::mem::take(&mut raw.creds))?;
    let globals = resolve_globals(&ctx, &raw.defaults)?;
    let defaults_scope = Scope::top("defaults");
    let defaults = raw.defaults.take_inheritable();
    check_inheritable_notes(&mut ctx, &defaults_scope, &defaults);
    let mut sync = Vec::with_capacity(raw.sync.len());
    for (index, entry) in raw.sync.into_iter().enumerate() {
        let mut e = resolve_entry(&mut ctx, index, entry, &defaults)?;
        if sync.iter().any(|o: &SyncEntry| o.name == e.name) {
            if e.name == default_entry_name(&e.source.to_string(), &e.target.to_string()) {
                // Two entries with the same source and target (valid in regsync): keep both,
                // told apart by index.
                e.name = format!("{}-{index}", e.name);
            } else {
                let scope = Scope::entry(Section::Sync, index, Some(e.source.to_string()));
                return ctx.err(
                    &scope,
                    "name",
                    None,
                    ErrorKind::Endpoint {
                        value: e.name.clone(),
                        reason: "is already the name of an earlier entry",
                    },
                );
            }
        }
        sync.push(e);
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

fn report_unknown_keys(ctx: &mut Ctx<'_>, text: &str, keys: &[String]) {
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
                        label: crate::parse::entry_label(text, section, index),
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
        let key = rest.join(".");
        let scope = Scope {
            entry,
            prefix: String::new(),
        };
        ctx.warn(&scope, "", None, WarningKind::UnknownKey { key });
    }
}

fn resolve_creds(ctx: &mut Ctx<'_>, raw: Vec<Spanned<RawHost>>) -> Result<Vec<Host>, ConfigError> {
    let mut hosts: Vec<Host> = Vec::new();
    for (index, spanned) in raw.into_iter().enumerate() {
        let entry_loc = spanned.defined;
        let h = spanned.value;
        let mut scope = Scope::entry(
            Section::Creds,
            index,
            h.registry.as_ref().map(|r| r.value.clone()),
        );
        let nil = Value::Nil;
        let Some(reg) = &h.registry else {
            return ctx.err(&scope, "registry", Some(entry_loc), ErrorKind::Missing);
        };
        let registry = ctx.expand(&scope, "registry", reg, &nil)?;
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            r => r.to_owned(),
        };
        if registry.is_empty() {
            return ctx.err(&scope, "registry", Some(reg.defined), ErrorKind::Missing);
        }
        if !is_valid_registry(&registry) {
            return ctx.err(
                &scope,
                "registry",
                Some(reg.defined),
                ErrorKind::Endpoint {
                    value: registry,
                    reason: "is not a registry host[:port]",
                },
            );
        }
        if let Some(e) = scope.entry.as_mut() {
            e.label = Some(registry.clone());
        }
        let mut host = Host::with_defaults(&registry);
        if let Some(hn) = &h.hostname {
            if !is_valid_registry(&hn.value) {
                return ctx.err(
                    &scope,
                    "hostname",
                    Some(hn.defined),
                    ErrorKind::Endpoint {
                        value: hn.value.clone(),
                        reason: "is not a host[:port]",
                    },
                );
            }
            host.hostname = hn.value.clone();
        }
        if let Some(u) = &h.user {
            host.user = ctx.expand(&scope, "user", u, &nil)?;
        }
        if let Some(p) = &h.pass {
            host.pass = Secret::new(ctx.expand(&scope, "pass", p, &nil)?);
        }
        if let Some(t) = &h.token {
            host.token = Secret::new(t.value.clone());
        }
        host.cred_helper = h
            .cred_helper
            .as_ref()
            .map(|s| s.value.clone())
            .filter(|s| !s.is_empty());
        if let Some(e) = &h.cred_expire {
            host.cred_expire = ctx.duration(&scope, "credExpire", e)?;
        }
        host.cred_host = h
            .cred_host
            .as_ref()
            .map(|s| s.value.clone())
            .filter(|s| !s.is_empty());
        if let Some(s) = &h.scheme {
            ctx.warn(
                &scope,
                "scheme",
                Some(s.defined),
                WarningKind::Deprecated { instead: "tls" },
            );
            if s.value == "http" && h.tls.is_none() {
                host.tls = TlsMode::Disabled;
            }
        }
        if h.api.is_some() {
            ctx.warn(
                &scope,
                "api",
                None,
                WarningKind::Ignored {
                    reason: "deprecated and unused in regsync",
                },
            );
        }
        if let Some(t) = &h.tls {
            host.tls = match t.value.as_str() {
                "enabled" | "" => TlsMode::Enabled,
                "insecure" => TlsMode::Insecure,
                "disabled" => TlsMode::Disabled,
                other => {
                    return ctx.err(
                        &scope,
                        "tls",
                        Some(t.defined),
                        ErrorKind::Tls {
                            value: other.to_owned(),
                        },
                    );
                }
            };
        }
        let pem = |field: &str,
                   v: &Option<Spanned<String>>|
         -> Result<Option<String>, ConfigError> {
            match v {
                Some(s) => {
                    Ok(Some(ctx.expand(&scope, field, s, &nil)?).filter(|p| !p.trim().is_empty()))
                }
                None => Ok(None),
            }
        };
        host.regcert = pem("regcert", &h.regcert)?;
        host.client_cert = pem("clientCert", &h.client_cert)?;
        host.client_key = Secret::new(pem("clientKey", &h.client_key)?.unwrap_or_default());
        let loc_of = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.defined);
        match (&host.client_cert, host.client_key.is_empty()) {
            (Some(_), true) => {
                return ctx.err(
                    &scope,
                    "clientCert",
                    loc_of(&h.client_cert),
                    ErrorKind::Incomplete { other: "clientKey" },
                );
            }
            (None, false) => {
                return ctx.err(
                    &scope,
                    "clientKey",
                    loc_of(&h.client_key),
                    ErrorKind::Incomplete {
                        other: "clientCert",
                    },
                );
            }
            _ => {}
        }
        host.path_prefix = h
            .path_prefix
            .as_ref()
            .map(|s| s.value.trim_matches('/').to_owned())
            .unwrap_or_default();
        for (i, m) in h.mirrors.iter().flatten().enumerate() {
            if !is_valid_registry(&m.value) {
                return ctx.err(
                    &scope,
                    &format!("mirrors[{i}]"),
                    Some(m.defined),
                    ErrorKind::Endpoint {
                        value: m.value.clone(),
                        reason: "is not a registry host[:port]",
                    },
                );
            }
            host.mirrors.push(m.value.clone());
        }
        host.priority = h.priority.as_ref().map_or(0, |p| p.value);
        host.repo_auth = h.repo_auth.unwrap_or(false);
        if let Some(r) = &h.req_per_sec {
            if !r.value.is_finite() || r.value < 0.0 {
                return ctx.err(
                    &scope,
                    "reqPerSec",
                    Some(r.defined),
                    ErrorKind::OutOfRange {
                        value: r.value.to_string(),
                        expected: "a number >= 0 (0 is unlimited)",
                    },
                );
            }
            host.req_per_sec = (r.value > 0.0).then_some(r.value);
        }
        if let Some(c) = &h.req_concurrent {
            host.req_concurrent = match c.value {
                0 => DEFAULT_REQ_CONCURRENT,
                n @ 1..=1024 => n as u32,
                n => {
                    return ctx.err(
                        &scope,
                        "reqConcurrent",
                        Some(c.defined),
                        ErrorKind::OutOfRange {
                            value: n.to_string(),
                            expected: "1 to 1024 (0 means the default, 6)",
                        },
                    );
                }
            };
        }
        if let Some(c) = &h.blob_chunk {
            host.blob_chunk = match c.value {
                0 => DEFAULT_BLOB_CHUNK,
                n if n > 0 => n as u64,
                n => {
                    return ctx.err(
                        &scope,
                        "blobChunk",
                        Some(c.defined),
                        ErrorKind::OutOfRange {
                            value: n.to_string(),
                            expected: "a size in bytes > 0",
                        },
                    );
                }
            };
        }
        if let Some(m) = &h.blob_max {
            host.blob_max = (m.value > 0).then_some(m.value as u64);
        }
        if let Some(opts) = &h.api_opts {
            host.api_opts = opts.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        }
        if let Some(i) = hosts.iter().position(|x| x.registry == host.registry) {
            ctx.warn(
                &scope,
                "registry",
                Some(reg.defined),
                WarningKind::DuplicateCreds,
            );
            hosts[i] = host;
        } else {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

fn resolve_globals(ctx: &Ctx<'_>, d: &RawDefaults) -> Result<Globals, ConfigError> {
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
    let parallel = non_negative("parallel", &d.parallel)?
        .map_or(DEFAULT_PARALLEL, |p| p.min(u64::from(u32::MAX)) as u32);
    let cache_count = non_negative("cacheCount", &d.cache_count)?.unwrap_or(0);
    let cache_time = match &d.cache_time {
        Some(t) => ctx.duration(&scope, "cacheTime", t)?,
        None => Duration::ZERO,
    };
    Ok(Globals {
        parallel,
        skip_docker_config: d.skip_docker_config.unwrap_or(false),
        user_agent: d
            .user_agent
            .as_ref()
            .map(|s| s.value.clone())
            .filter(|s| !s.is_empty()),
        cache: (cache_count > 0 && !cache_time.is_zero()).then_some((cache_count, cache_time)),
        blob_limit: non_negative("blobLimit", &d.blob_limit)?.filter(|b| *b > 0),
    })
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

fn resolve_entry(
    ctx: &mut Ctx<'_>,
    index: usize,
    spanned: Spanned<RawSync>,
    d: &RawInheritable,
) -> Result<SyncEntry, ConfigError> {
    let entry_loc = spanned.defined;
    let mut s = spanned.value;
    let mut scope = Scope::entry(
        Section::Sync,
        index,
        s.source.as_ref().map(|x| x.value.clone()),
    );
    let own = s.take_inheritable();
    check_inheritable_notes(ctx, &scope, &own);

    let Some(source) = s.source.as_ref().filter(|x| !x.value.is_empty()) else {
        return ctx.err(&scope, "source", Some(entry_loc), ErrorKind::Missing);
    };
    let Some(target) = s.target.as_ref().filter(|x| !x.value.is_empty()) else {
        return ctx.err(&scope, "target", Some(entry_loc), ErrorKind::Missing);
    };
    let Some(kind_s) = &s.kind else {
        return ctx.err(&scope, "type", Some(entry_loc), ErrorKind::Missing);
    };
    let kind = match kind_s.value.as_str() {
        "image" => SyncKind::Image,
        "repository" => SyncKind::Repository,
        "registry" => SyncKind::Registry,
        other => {
            return ctx.err(
                &scope,
                "type",
                Some(kind_s.defined),
                ErrorKind::UnknownType {
                    value: other.to_owned(),
                },
            );
        }
    };

    // Schedule and interval: an entry that sets either takes neither default; otherwise a
    // default schedule wins over a default interval (regsync PR #904).
    // Like regsync, an empty string or a zero interval counts as unset.
    let (interval_s, schedule_s, from_defaults) =
        if set_dur(&own.interval).is_some() || set_str(&own.schedule).is_some() {
            (set_dur(&own.interval), set_str(&own.schedule), false)
        } else if set_str(&d.schedule).is_some() {
            (None, set_str(&d.schedule), true)
        } else {
            (set_dur(&d.interval), None, true)
        };
    let trigger_scope = if from_defaults {
        Scope::top("defaults")
    } else {
        scope.clone()
    };
    let interval = match interval_s {
        Some(i) => Some(ctx.duration(&trigger_scope, "interval", i)?),
        None => None,
    };
    let schedule = match schedule_s {
        Some(sch) => Some(Schedule::parse(&sch.value).or_else(|source| {
            ctx.err(
                &trigger_scope,
                "schedule",
                Some(sch.defined),
                ErrorKind::Schedule { source },
            )
        })?),
        None => None,
    };
    if schedule.is_some() && interval.is_some() {
        ctx.warn(
            &scope,
            "interval",
            None,
            WarningKind::Ignored {
                reason: "schedule is set too and wins, as in regsync",
            },
        );
    }
    let trigger = match (schedule, interval) {
        (Some(sch), _) => Some(Trigger::Schedule(sch)),
        (None, Some(i)) if i.is_zero() => None,
        (None, Some(i)) => Some(Trigger::Interval(i)),
        (None, None) => None,
    };

    // ratelimit: min inherited when 0; retry inherited when 0, then raised to at least 5m.
    let rl_scope = |own_set: bool| {
        if own_set {
            scope.clone()
        } else {
            Scope::top("defaults")
        }
    };
    let min_of = |r: &Option<RawRateLimit>| {
        r.as_ref()
            .and_then(|r| r.min.as_ref())
            .map_or(0, |m| m.value)
    };
    let (own_min, def_min) = (min_of(&own.ratelimit), min_of(&d.ratelimit));
    let min = if own_min != 0 { own_min } else { def_min };
    if min < 0 {
        return ctx.err(
            &rl_scope(own_min != 0),
            "ratelimit.min",
            None,
            ErrorKind::OutOfRange {
                value: min.to_string(),
                expected: "a number >= 0",
            },
        );
    }
    let retry_of = |r: &Option<RawRateLimit>, sc: &Scope| -> Result<Duration, ConfigError> {
        match r.as_ref().and_then(|r| r.retry.as_ref()) {
            Some(v) => ctx.duration(sc, "ratelimit.retry", v),
            None => Ok(Duration::ZERO),
        }
    };
    let own_retry = retry_of(&own.ratelimit, &scope)?;
    let def_retry = retry_of(&d.ratelimit, &Scope::top("defaults"))?;
    let retry = if own_retry.is_zero() {
        def_retry
    } else {
        own_retry
    }
    .max(MIN_RATELIMIT_RETRY);
    let ratelimit = RateLimit {
        min: min as u64,
        retry,
    };

    let media_types: Vec<String> = match own.media_types.as_ref().or(d.media_types.as_ref()) {
        Some(list) if !list.is_empty() => list.iter().map(|m| m.value.clone()).collect(),
        _ => DEFAULT_MEDIA_TYPES
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
    };
    let include_external = bool_of(own.include_external, d.include_external);
    let digest_tags = bool_of(own.digest_tags, d.digest_tags);
    let referrers = bool_of(own.referrers, d.referrers);
    let referrer_slow = bool_of(own.referrer_slow, d.referrer_slow);
    let fast_check = bool_of(
        own.fast_check.or(own.fast_copy),
        d.fast_check.or(d.fast_copy),
    );
    let force_recursive = bool_of(own.force_recursive, d.force_recursive);

    // referrerFilters: absent inherits; an explicit [] means "no filters".
    let (filters_raw, filters_scope) = match &own.referrer_filters {
        Some(f) => (Some(f), scope.clone()),
        None => (d.referrer_filters.as_ref(), Scope::top("defaults")),
    };
    let referrer_filters: Vec<ReferrerFilter> = filters_raw
        .map(|list| {
            list.iter()
                .map(|f| ReferrerFilter {
                    artifact_type: f.value.artifact_type.clone().filter(|t| !t.is_empty()),
                    annotations: f
                        .value
                        .annotations
                        .iter()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = filters_scope;

    // String options inherit when the entry leaves them empty (regsync's syncSetDefaults).
    let backup_raw = set_str(&own.backup).or(set_str(&d.backup));
    let referrer_source_raw = set_list(&own.referrer_source).or(set_list(&d.referrer_source));
    let referrer_target_raw = set_str(&own.referrer_target).or(set_str(&d.referrer_target));

    // Filters.
    let mut sets = Vec::new();
    for (i, t) in s.tag_sets.iter().flatten().enumerate() {
        sets.push(tag_set(ctx, &scope, &format!("tagSets[{i}]"), t)?);
    }
    if let Some(t) = &s.tags {
        let set = tag_set(ctx, &scope, "tags", t)?;
        if !set.is_empty() {
            sets.push(set);
        }
    }
    let tags = TagFilter { sets };
    let repos = match &s.repos {
        Some(r) => RepoFilter {
            allow: ctx.patterns(&scope, "repos.allow", &r.allow)?,
            deny: ctx.patterns(&scope, "repos.deny", &r.deny)?,
        },
        None => RepoFilter::default(),
    };
    if kind == SyncKind::Image && !tags.sets.is_empty() {
        ctx.warn(
            &scope,
            "tags",
            None,
            WarningKind::Ignored {
                reason: "tag filters apply to type repository and registry, not image",
            },
        );
    }
    if kind != SyncKind::Registry && s.repos.is_some() {
        ctx.warn(
            &scope,
            "repos",
            None,
            WarningKind::Ignored {
                reason: "repository filters apply to type registry only",
            },
        );
    }

    let platform = match &s.platform {
        Some(p) if !p.value.is_empty() => Some(Platform::parse(&p.value).or_else(|source| {
            ctx.err(
                &scope,
                "platform",
                Some(p.defined),
                ErrorKind::Platform { source },
            )
        })?),
        _ => None,
    };
    let mut platforms = Vec::new();
    for (i, p) in s.platforms.iter().flatten().enumerate() {
        if p.value.is_empty() {
            platforms.push(None);
            continue;
        }
        let parsed = Platform::parse(&p.value).or_else(|source| {
            ctx.err(
                &scope,
                &format!("platforms[{i}]"),
                Some(p.defined),
                ErrorKind::Platform { source },
            )
        })?;
        platforms.push(Some(parsed));
    }
    if platform.is_some() && !platforms.is_empty() {
        ctx.warn(
            &scope,
            "platforms",
            None,
            WarningKind::Ignored {
                reason: "platform is set too and selects a single manifest",
            },
        );
        platforms.clear();
    }

    // Templates: source, referrerSource, target, referrerTarget, in that order, each seeing
    // the previous expansions in .Sync (regsync cmd/regsync/config.go).
    let mut data = SyncData {
        s: &s,
        kind,
        interval,
        trigger: &trigger,
        ratelimit,
        media_types: &media_types,
        bools: [
            digest_tags,
            referrers,
            fast_check,
            force_recursive,
            include_external,
        ],
        backup: backup_raw.map(|b| b.value.clone()).unwrap_or_default(),
        source: source.value.clone(),
        target: target.value.clone(),
        referrer_source: referrer_source_raw
            .map(|r| r.value.0.join(","))
            .unwrap_or_default(),
        referrer_target: referrer_target_raw
            .map(|r| r.value.clone())
            .unwrap_or_default(),
    };
    data.source = ctx.expand(&scope, "source", source, &data.value())?;
    if let Some(e) = scope.entry.as_mut() {
        e.label = Some(data.source.clone());
    }
    let mut referrer_source_strs = Vec::new();
    if let Some(rs) = referrer_source_raw {
        for (i, one) in rs.value.0.iter().enumerate() {
            let field = if rs.value.0.len() > 1 {
                format!("referrerSource[{i}]")
            } else {
                "referrerSource".to_owned()
            };
            let sp = Spanned {
                value: one.clone(),
                referenced: rs.referenced,
                defined: rs.defined,
            };
            let expanded = ctx.expand(&scope, &field, &sp, &data.value())?;
            referrer_source_strs.push((field, expanded, rs.defined));
        }
        data.referrer_source = referrer_source_strs
            .iter()
            .map(|x| x.1.clone())
            .collect::<Vec<_>>()
            .join(",");
    }
    data.target = ctx.expand(&scope, "target", target, &data.value())?;
    let referrer_target_str = match referrer_target_raw {
        Some(rt) => {
            let v = ctx.expand(&scope, "referrerTarget", rt, &data.value())?;
            data.referrer_target = v.clone();
            Some((v, rt.defined))
        }
        None => None,
    };

    let source_ep = endpoint(
        ctx,
        &scope,
        "source",
        &data.source,
        Some(source.defined),
        kind,
    )?;
    let target_ep = endpoint(
        ctx,
        &scope,
        "target",
        &data.target,
        Some(target.defined),
        kind,
    )?;
    let mut referrer_sources = Vec::new();
    for (field, value, loc) in &referrer_source_strs {
        if value.is_empty() {
            continue;
        }
        referrer_sources.push(endpoint(
            ctx,
            &scope,
            field,
            value,
            Some(*loc),
            SyncKind::Repository,
        )?);
    }
    let referrer_target = match &referrer_target_str {
        Some((v, _)) if v.is_empty() => None,
        Some((v, loc)) => Some(endpoint(
            ctx,
            &scope,
            "referrerTarget",
            v,
            Some(*loc),
            SyncKind::Repository,
        )?),
        None => None,
    };
    let backup = match backup_raw {
        Some(b) if !b.value.trim().is_empty() => {
            let t = Template::parse(&b.value).or_else(|source| {
                ctx.err(
                    &scope,
                    "backup",
                    Some(b.defined),
                    ErrorKind::Template { source },
                )
            })?;
            Some(BackupTemplate::new(b.value.clone(), t))
        }
        _ => None,
    };
    let template_data = data.value();

    let name = match &s.name {
        Some(n) if !n.value.trim().is_empty() => {
            let n = n.value.trim();
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return ctx.err(&scope, "name", None, ErrorKind::Endpoint {
                    value: n.to_owned(),
                    reason: "a name may only use letters, digits, '-', '_' and '.' (it appears in URLs and metrics)",
                });
            }
            n.to_owned()
        }
        _ => default_entry_name(&source_ep.to_string(), &target_ep.to_string()),
    };
    Ok(SyncEntry {
        index,
        name,
        kind,
        source: source_ep,
        target: target_ep,
        tags,
        repos,
        platform,
        platforms,
        trigger,
        backup,
        ratelimit,
        media_types,
        include_external,
        digest_tags,
        referrers,
        referrer_filters,
        referrer_sources,
        referrer_target,
        referrer_slow,
        fast_check,
        force_recursive,
        template_data,
    })
}

fn tag_set(
    ctx: &Ctx<'_>,
    scope: &Scope,
    field: &str,
    t: &RawTagFilter,
) -> Result<TagSet, ConfigError> {
    let semver_range = if t.semver_range.is_empty() {
        None
    } else {
        for (i, r) in t.semver_range.iter().enumerate() {
            if let Err(source) = RangeSet::parse(&[r.value.0.as_str()]) {
                return ctx.err(
                    scope,
                    &format!("{field}.semverRange[{i}]"),
                    Some(r.defined),
                    ErrorKind::SemverRange { source },
                );
            }
        }
        let all: Vec<&str> = t.semver_range.iter().map(|r| r.value.0.as_str()).collect();
        RangeSet::parse(&all).ok()
    };
    Ok(TagSet {
        semver_range,
        allow: ctx.patterns(scope, &format!("{field}.allow"), &t.allow)?,
        deny: ctx.patterns(scope, &format!("{field}.deny"), &t.deny)?,
    })
}

fn endpoint(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    field: &str,
    value: &str,
    loc: Option<Location>,
    kind: SyncKind,
) -> Result<Endpoint, ConfigError> {
    if let Some(rest) = value.strip_prefix("ocidir://") {
        if kind == SyncKind::Registry {
            return ctx.err(
                scope,
                field,
                loc,
                ErrorKind::Endpoint {
                    value: value.to_owned(),
                    reason: "type registry needs a registry, not an OCI layout",
                },
            );
        }
        // A ':' after the last '/' separates the tag.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (path, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if path.is_empty() {
            return ctx.err(
                scope,
                field,
                loc,
                ErrorKind::Endpoint {
                    value: value.to_owned(),
                    reason: "ocidir:// needs a directory path",
                },
            );
        }
        if let Some(t) = tag {
            // Validate the tag with the reference grammar.
            Reference::parse(&format!("localhost/x:{t}"))
                .or_else(|source| ctx.err(scope, field, loc, ErrorKind::Reference { source }))?;
        }
        let tag = match (kind, tag) {
            (SyncKind::Image, t) => t.map(str::to_owned),
            (_, Some(_)) => {
                ctx.warn(
                    scope,
                    field,
                    loc,
                    WarningKind::Ignored {
                        reason: "the tag is ignored: this type copies every selected tag",
                    },
                );
                None
            }
            (_, None) => None,
        };
        return Ok(Endpoint::OciDir {
            path: PathBuf::from(path),
            tag,
        });
    }
    match kind {
        SyncKind::Registry => {
            let trimmed = value.trim_end_matches('/');
            let (registry, prefix) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            let registry = match registry {
                "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
                r => r,
            };
            if !is_valid_registry(registry) {
                return ctx.err(scope, field, loc, ErrorKind::Endpoint {
                    value: value.to_owned(),
                    reason: "type registry needs a registry host[:port], optionally with a path prefix",
                });
            }
            if !prefix.is_empty() {
                let r = Reference::parse(&format!("{registry}/{prefix}")).or_else(|source| {
                    ctx.err(scope, field, loc, ErrorKind::Reference { source })
                })?;
                if r.tag().is_some() || r.digest().is_some() {
                    return ctx.err(
                        scope,
                        field,
                        loc,
                        ErrorKind::Endpoint {
                            value: value.to_owned(),
                            reason: "type registry takes no tag or digest",
                        },
                    );
                }
            }
            Ok(Endpoint::Namespace {
                registry: registry.to_owned(),
                prefix: prefix.to_owned(),
            })
        }
        SyncKind::Image | SyncKind::Repository => {
            let r = Reference::parse(value)
                .or_else(|source| ctx.err(scope, field, loc, ErrorKind::Reference { source }))?;
            if kind == SyncKind::Repository && (r.tag().is_some() || r.digest().is_some()) {
                ctx.warn(
                    scope,
                    field,
                    loc,
                    WarningKind::Ignored {
                        reason: "the tag or digest is ignored: this type copies every selected tag",
                    },
                );
                return Ok(Endpoint::Registry(r.repository_only()));
            }
            Ok(Endpoint::Registry(r))
        }
    }
}

/// `.Sync` as regsync's templates see it: the entry with defaults applied, Go field names.
struct SyncData<'a> {
    s: &'a RawSync,
    kind: SyncKind,
    interval: Option<Duration>,
    trigger: &'a Option<Trigger>,
    ratelimit: RateLimit,
    media_types: &'a [String],
    bools: [bool; 5],
    backup: String,
    source: String,
    target: String,
    referrer_source: String,
    referrer_target: String,
}

impl SyncData<'_> {
    fn value(&self) -> Value {
        let strs = |v: &[Spanned<Scalar>]| {
            Value::List(v.iter().map(|x| Value::Str(x.value.0.clone())).collect())
        };
        let tags = |t: Option<&RawTagFilter>| {
            let empty = RawTagFilter::default();
            let t = t.unwrap_or(&empty);
            Value::Map(BTreeMap::from([
                ("Allow".to_owned(), strs(&t.allow)),
                ("Deny".to_owned(), strs(&t.deny)),
                ("SemverRange".to_owned(), strs(&t.semver_range)),
            ]))
        };
        let schedule = match self.trigger {
            Some(Trigger::Schedule(s)) => s.as_str().to_owned(),
            _ => String::new(),
        };
        let [
            digest_tags,
            referrers,
            fast_check,
            force_recursive,
            include_external,
        ] = self.bools;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("Source", Value::Str(self.source.clone()));
        put("Target", Value::Str(self.target.clone()));
        put("Type", Value::Str(self.kind.as_str().to_owned()));
        put("Tags", tags(self.s.tags.as_ref()));
        put(
            "TagSets",
            Value::List(
                self.s
                    .tag_sets
                    .iter()
                    .flatten()
                    .map(|t| tags(Some(t)))
                    .collect(),
            ),
        );
        let repos = self.s.repos.as_ref();
        put(
            "Repos",
            Value::Map(BTreeMap::from([
                (
                    "Allow".to_owned(),
                    repos.map_or(Value::List(vec![]), |r| strs(&r.allow)),
                ),
                (
                    "Deny".to_owned(),
                    repos.map_or(Value::List(vec![]), |r| strs(&r.deny)),
                ),
            ])),
        );
        put(
            "Platform",
            Value::Str(
                self.s
                    .platform
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or_default(),
            ),
        );
        put(
            "Platforms",
            Value::List(
                self.s
                    .platforms
                    .iter()
                    .flatten()
                    .map(|p| Value::Str(p.value.clone()))
                    .collect(),
            ),
        );
        put("DigestTags", Value::Bool(digest_tags));
        put("Referrers", Value::Bool(referrers));
        put("ReferrerSource", Value::Str(self.referrer_source.clone()));
        put("ReferrerTarget", Value::Str(self.referrer_target.clone()));
        put("FastCheck", Value::Bool(fast_check));
        put("ForceRecursive", Value::Bool(force_recursive));
        put("IncludeExternal", Value::Bool(include_external));
        put("Backup", Value::Str(self.backup.clone()));
        put(
            "Interval",
            Value::Str(
                self.interval
                    .map(go_duration_string)
                    .unwrap_or_else(|| "0s".to_owned()),
            ),
        );
        put("Schedule", Value::Str(schedule));
        put(
            "RateLimit",
            Value::Map(BTreeMap::from([
                ("Min".to_owned(), Value::Int(self.ratelimit.min as i64)),
                (
                    "Retry".to_owned(),
                    Value::Str(go_duration_string(self.ratelimit.retry)),
                ),
            ])),
        );
        put(
            "MediaTypes",
            Value::List(
                self.media_types
                    .iter()
                    .map(|t| Value::Str(t.clone()))
                    .collect(),
            ),
        );
        Value::Map(m)
    }
}

/// A string option counts as set when non-empty (regsync compares with "").
fn set_str(v: &Option<Spanned<String>>) -> Option<&Spanned<String>> {
    v.as_ref().filter(|x| !x.value.trim().is_empty())
}

/// A duration counts as set when non-empty and not zero (regsync compares with 0). An
/// unparsable value counts as set, so that its error is reported.
fn set_dur(v: &Option<Spanned<Scalar>>) -> Option<&Spanned<Scalar>> {
    v.as_ref().filter(|x| {
        !x.value.0.trim().is_empty() && parse_go_duration(&x.value.0).map_or(true, |d| !d.is_zero())
    })
}

/// A reference list counts as set when any item is non-empty.
fn set_list(v: &Option<Spanned<OneOrMany>>) -> Option<&Spanned<OneOrMany>> {
    v.as_ref()
        .filter(|x| x.value.0.iter().any(|s| !s.is_empty()))
}
