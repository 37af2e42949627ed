//! One `sync` entry: defaults inherited as regsync's `syncSetDefaults` does, then each
//! field checked and compiled.
use super::*;

pub(super) fn resolve_entry(
    ctx: &mut Ctx<'_>,
    index: usize,
    spanned: Spanned<RawSync>,
    d: &RawInheritable,
) -> Result<SyncEntry, Vec<ConfigError>> {
    let entry_loc = spanned.defined;
    let mut s = spanned.value;
    let mut scope = Scope::entry(
        Section::Sync,
        index,
        s.source.as_ref().map(|x| x.value.clone()),
    );
    let own = s.take_inheritable();
    check_inheritable_notes(ctx, &scope, &own);
    // Every field is checked whatever the others hold, so that one load reports each error
    // of the entry; only what needs an earlier field (templates need the source) waits.
    let mut errs = Errors::default();

    let source = s.source.as_ref().filter(|x| !x.value.is_empty());
    if source.is_none() {
        errs.keep(ctx.err::<()>(&scope, "source", Some(entry_loc), ErrorKind::Missing));
    }
    // `target`, or (a regferry extension) `targets`: each with the field an error names.
    let single = s.target.as_ref().filter(|x| !x.value.is_empty());
    let mut targets: Vec<(String, &Spanned<String>)> = Vec::new();
    match (single, s.targets.as_ref()) {
        (Some(_), Some(list)) => {
            errs.keep(ctx.err::<()>(
                &scope,
                "targets",
                Some(list.defined),
                ErrorKind::Misplaced {
                    reason: "set either target or targets, not both",
                },
            ));
        }
        (Some(t), None) => targets.push(("target".to_owned(), t)),
        (None, Some(list)) if list.value.is_empty() => {
            errs.keep(ctx.err::<()>(
                &scope,
                "targets",
                Some(list.defined),
                ErrorKind::Invalid {
                    value: "[]".to_owned(),
                    expected: "a list of one or more targets",
                },
            ));
        }
        (None, Some(list)) => {
            for (i, t) in list.value.iter().enumerate() {
                let field = format!("targets[{i}]");
                if t.value.is_empty() {
                    errs.keep(ctx.err::<()>(&scope, &field, Some(t.defined), ErrorKind::Missing));
                } else {
                    targets.push((field, t));
                }
            }
        }
        (None, None) => {
            errs.keep(ctx.err::<()>(&scope, "target", Some(entry_loc), ErrorKind::Missing));
        }
    }
    let target = targets.first().map(|(_, t)| *t);
    let kind = match s.kind.as_ref().map(|k| (k, k.value.as_str())) {
        Some((_, "image")) => Some(SyncKind::Image),
        Some((_, "repository")) => Some(SyncKind::Repository),
        Some((_, "registry")) => Some(SyncKind::Registry),
        None => errs.keep(ctx.err(&scope, "type", Some(entry_loc), ErrorKind::Missing)),
        Some((k, other)) => errs.keep(ctx.err(
            &scope,
            "type",
            Some(k.defined),
            ErrorKind::UnknownType {
                value: other.to_owned(),
            },
        )),
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
    let interval = interval_s.and_then(|i| errs.keep(ctx.duration(&trigger_scope, "interval", i)));
    let schedule = schedule_s.and_then(|sch| {
        errs.keep(Schedule::parse(&sch.value).or_else(|source| {
            ctx.err(
                &trigger_scope,
                "schedule",
                Some(sch.defined),
                ErrorKind::Schedule { source },
            )
        }))
    });
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
        errs.keep(ctx.err::<()>(
            &rl_scope(own_min != 0),
            "ratelimit.min",
            None,
            ErrorKind::OutOfRange {
                value: min.to_string(),
                expected: "a number >= 0",
            },
        ));
    }
    let retry_of = |r: &Option<RawRateLimit>, sc: &Scope| -> Result<Duration, ConfigError> {
        match r.as_ref().and_then(|r| r.retry.as_ref()) {
            Some(v) => ctx.duration(sc, "ratelimit.retry", v),
            None => Ok(Duration::ZERO),
        }
    };
    let own_retry = errs
        .keep(retry_of(&own.ratelimit, &scope))
        .unwrap_or_default();
    let def_retry = errs
        .keep(retry_of(&d.ratelimit, &Scope::top("defaults")))
        .unwrap_or_default();
    let retry = if own_retry.is_zero() {
        def_retry
    } else {
        own_retry
    }
    .max(MIN_RATELIMIT_RETRY);
    let ratelimit = RateLimit {
        min: min.max(0) as u64,
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
        .map(|list| referrer_filter_list(list))
        .unwrap_or_default();

    let _ = filters_scope;

    // String options inherit when the entry leaves them empty (regsync's syncSetDefaults).
    let backup_raw = set_str(&own.backup).or(set_str(&d.backup));
    let referrer_source_raw = set_list(&own.referrer_source).or(set_list(&d.referrer_source));
    let referrer_target_raw = set_str(&own.referrer_target).or(set_str(&d.referrer_target));

    // Filters.
    let mut sets = Vec::new();
    for (i, t) in s.tag_sets.iter().flatten().enumerate() {
        sets.push(tag_set(ctx, &scope, &format!("tagSets[{i}]"), t, &mut errs));
    }
    if let Some(t) = &s.tags {
        let set = tag_set(ctx, &scope, "tags", t, &mut errs);
        if !set.is_empty() {
            sets.push(set);
        }
    }
    let tags = TagFilter { sets };
    let repos = match &s.repos {
        Some(r) => RepoFilter {
            allow: ctx.patterns(&scope, "repos.allow", &r.allow, &mut errs),
            deny: ctx.patterns(&scope, "repos.deny", &r.deny, &mut errs),
        },
        None => RepoFilter::default(),
    };
    if kind == Some(SyncKind::Image) && !tags.sets.is_empty() {
        ctx.warn(
            &scope,
            "tags",
            None,
            WarningKind::Ignored {
                reason: "tag filters apply to type repository and registry, not image",
            },
        );
    }
    if kind.is_some_and(|k| k != SyncKind::Registry) && s.repos.is_some() {
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
        Some(p) if !p.value.is_empty() => errs.keep(Platform::parse(&p.value).or_else(|source| {
            ctx.err(
                &scope,
                "platform",
                Some(p.defined),
                ErrorKind::Platform { source },
            )
        })),
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
        });
        platforms.push(errs.keep(parsed));
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

    let backup = match backup_raw {
        Some(b) if !b.value.trim().is_empty() => errs.keep(
            Template::parse(&b.value)
                .map(|t| BackupTemplate::new(b.value.clone(), t))
                .or_else(|source| {
                    ctx.err(
                        &scope,
                        "backup",
                        Some(b.defined),
                        ErrorKind::Template { source },
                    )
                }),
        ),
        _ => None,
    };
    let named = match &s.name {
        Some(n) if !n.value.trim().is_empty() => {
            let n = n.value.trim();
            if n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                Some(n.to_owned())
            } else {
                errs.keep(ctx.err(&scope, "name", None, ErrorKind::Endpoint {
                    value: n.to_owned(),
                    reason: "a name may only use letters, digits, '-', '_' and '.' (it appears in URLs and metrics)",
                }))
            }
        }
        _ => None,
    };
    let (Some(source), Some(target), Some(kind)) = (source, target, kind) else {
        return Err(errs.into_vec());
    };

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
    data.source = ctx
        .expand(&scope, "source", source, &data.value())
        .map_err(|e| errs.with(e))?;
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
            let expanded = ctx
                .expand(&scope, &field, &sp, &data.value())
                .map_err(|e| errs.with(e))?;
            referrer_source_strs.push((field, expanded, rs.defined));
        }
        data.referrer_source = referrer_source_strs
            .iter()
            .map(|x| x.1.clone())
            .collect::<Vec<_>>()
            .join(",");
    }
    // Each of `targets` sees itself as .Sync.Target; later templates see the first.
    let mut target_strs = Vec::with_capacity(targets.len());
    for (field, t) in &targets {
        data.target = t.value.clone();
        let expanded = ctx
            .expand(&scope, field, t, &data.value())
            .map_err(|e| errs.with(e))?;
        target_strs.push((field, expanded, t.defined));
    }
    data.target = target_strs[0].1.clone();
    let referrer_target_str = match referrer_target_raw {
        Some(rt) => {
            let v = ctx
                .expand(&scope, "referrerTarget", rt, &data.value())
                .map_err(|e| errs.with(e))?;
            data.referrer_target = v.clone();
            Some((v, rt.defined))
        }
        None => None,
    };

    let source_ep = errs.keep(endpoint(
        ctx,
        &scope,
        "source",
        &data.source,
        Some(source.defined),
        kind,
    ));
    let mut target_eps = Vec::with_capacity(target_strs.len());
    for (field, value, loc) in &target_strs {
        let Some(ep) = errs.keep(endpoint(ctx, &scope, field, value, Some(*loc), kind)) else {
            continue;
        };
        if target_eps.contains(&ep) {
            errs.keep(ctx.err::<()>(
                &scope,
                field,
                Some(*loc),
                ErrorKind::Endpoint {
                    value: value.clone(),
                    reason: "is listed twice in targets",
                },
            ));
        }
        target_eps.push(ep);
    }
    let mut referrer_sources = Vec::new();
    for (field, value, loc) in &referrer_source_strs {
        if value.is_empty() {
            continue;
        }
        referrer_sources.extend(errs.keep(endpoint(
            ctx,
            &scope,
            field,
            value,
            Some(*loc),
            SyncKind::Repository,
        )));
    }
    let referrer_target = match &referrer_target_str {
        Some((v, _)) if v.is_empty() => None,
        Some((v, loc)) => errs.keep(endpoint(
            ctx,
            &scope,
            "referrerTarget",
            v,
            Some(*loc),
            SyncKind::Repository,
        )),
        None => None,
    };
    // Kept only where a template reads it at run time (a backup template's `.Sync`): it is
    // the biggest part of an entry, and a generated file has thousands of entries.
    let template_data = if backup.is_some() {
        data.value()
    } else {
        Value::Nil
    };

    let prune = prune(ctx, &scope, &s, kind, &mut errs);
    let require = own
        .require
        .as_ref()
        .or(d.require.as_ref())
        .and_then(|r| require(ctx, &scope, r, &data.value(), &mut errs));

    let Some(source_ep) = source_ep else {
        return Err(errs.into_vec());
    };
    errs.finish()?;
    let mut target_eps = target_eps.into_iter();
    let Some(target_ep) = target_eps.next() else {
        return Err(errs.into_vec());
    };
    let more_targets: Vec<Endpoint> = target_eps.collect();
    let targets_text = std::iter::once(&target_ep)
        .chain(&more_targets)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let name = named.unwrap_or_else(|| default_entry_name(&source_ep.to_string(), &targets_text));
    Ok(SyncEntry {
        index,
        named: s.name.as_ref().is_some_and(|n| !n.value.trim().is_empty()),
        name,
        kind,
        source: source_ep,
        target: target_ep,
        more_targets,
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
        prune,
        require,
    })
}

fn referrer_filter_list(list: &[Spanned<RawReferrerFilter>]) -> Vec<ReferrerFilter> {
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
}

/// `require`: referrer requirements as filters, and cosign public keys (templates expanded,
/// so `{{ file "/etc/regferry/cosign.pub" }}` works).
fn require(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    r: &Spanned<RawRequire>,
    data: &Value,
    errs: &mut Errors,
) -> Option<Require> {
    let mut keys = Vec::new();
    if let Some(sig) = &r.value.signature {
        let Some(list) = &sig.value.key else {
            errs.keep(ctx.err::<()>(
                scope,
                "require.signature.key",
                Some(sig.defined),
                ErrorKind::Missing,
            ));
            return None;
        };
        let many = list.value.0.len() > 1;
        for (i, text) in list.value.0.iter().enumerate() {
            let field = if many {
                format!("require.signature.key[{i}]")
            } else {
                "require.signature.key".to_owned()
            };
            let sp = Spanned {
                value: text.clone(),
                referenced: list.referenced,
                defined: list.defined,
            };
            let Some(pem) = errs.keep(ctx.expand(scope, &field, &sp, data)) else {
                continue;
            };
            match SignatureKey::from_pem(&pem) {
                Some(k) => keys.push(k),
                None => {
                    errs.keep(ctx.err::<()>(
                        scope,
                        &field,
                        Some(list.defined),
                        ErrorKind::Invalid {
                            value: pem.lines().next().unwrap_or_default().chars().take(40).collect(),
                            expected: "a PEM public key of ECDSA P-256 (cosign.pub: -----BEGIN PUBLIC KEY-----)",
                        },
                    ));
                }
            }
        }
        if keys.is_empty() {
            return None;
        }
    }
    let out = Require {
        referrers: referrer_filter_list(&r.value.referrers),
        keys,
    };
    (!out.referrers.is_empty() || !out.keys.is_empty()).then_some(out)
}

/// `prune`: on only for entries that list tags; `maxDelete` a count or a percentage.
fn prune(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    s: &RawSync,
    kind: SyncKind,
    errs: &mut Errors,
) -> Option<Prune> {
    let p = s.prune.as_ref().filter(|p| p.value.enabled)?;
    let mut fail = |field: &str, kind: ErrorKind| {
        errs.keep(ctx.err::<()>(scope, field, Some(p.defined), kind));
        None
    };
    if kind == SyncKind::Image {
        return fail(
            "prune",
            ErrorKind::Misplaced {
                reason: "prune needs type repository or registry: an image entry has one tag, nothing to prune",
            },
        );
    }
    let max_delete = match &p.value.max_delete {
        None => MaxDelete::default(),
        Some(m) => match parse_max_delete(&m.0) {
            Some(v) => v,
            None => {
                return fail(
                    "prune.maxDelete",
                    ErrorKind::Invalid {
                        value: m.0.clone(),
                        expected: "a count of tags (0 or more) or a percentage from 1% to 100%",
                    },
                );
            }
        },
    };
    Some(Prune { max_delete })
}

fn parse_max_delete(text: &str) -> Option<MaxDelete> {
    let text = text.trim();
    match text.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(MaxDelete::Percent),
        None => text.parse::<usize>().ok().map(MaxDelete::Count),
    }
}

fn tag_set(
    ctx: &mut Ctx<'_>,
    scope: &Scope,
    field: &str,
    t: &RawTagFilter,
    errs: &mut Errors,
) -> TagSet {
    let semver_range = if t.semver_range.is_empty() {
        None
    } else {
        for (i, r) in t.semver_range.iter().enumerate() {
            if let Err(source) = RangeSet::parse(&[r.value.0.as_str()]) {
                errs.keep(ctx.err::<()>(
                    scope,
                    &format!("{field}.semverRange[{i}]"),
                    Some(r.defined),
                    ErrorKind::SemverRange { source },
                ));
            }
        }
        let all: Vec<&str> = t.semver_range.iter().map(|r| r.value.0.as_str()).collect();
        RangeSet::parse(&all).ok()
    };
    let latest = t
        .latest
        .as_ref()
        .and_then(|n| match usize::try_from(n.value) {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                errs.keep(ctx.err::<()>(
                    scope,
                    &format!("{field}.latest"),
                    Some(n.defined),
                    ErrorKind::OutOfRange {
                        value: n.value.to_string(),
                        expected: "a count of versions, 1 or more",
                    },
                ));
                None
            }
        });
    TagSet {
        semver_range,
        allow: ctx.patterns(scope, &format!("{field}.allow"), &t.allow, errs),
        deny: ctx.patterns(scope, &format!("{field}.deny"), &t.deny, errs),
        latest,
    }
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

/// A string option counts as set when non-empty (regsync compares with "").
pub(super) fn set_str(v: &Option<Spanned<String>>) -> Option<&Spanned<String>> {
    v.as_ref().filter(|x| !x.value.trim().is_empty())
}

/// A duration counts as set when non-empty and not zero (regsync compares with 0). An
/// unparsable value counts as set, so that its error is reported.
pub(super) fn set_dur(v: &Option<Spanned<Scalar>>) -> Option<&Spanned<Scalar>> {
    v.as_ref().filter(|x| {
        !x.value.0.trim().is_empty() && parse_go_duration(&x.value.0).map_or(true, |d| !d.is_zero())
    })
}

/// A reference list counts as set when any item is non-empty.
pub(super) fn set_list(v: &Option<Spanned<OneOrMany>>) -> Option<&Spanned<OneOrMany>> {
    v.as_ref()
        .filter(|x| x.value.0.iter().any(|s| !s.is_empty()))
}
