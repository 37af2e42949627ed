//! `creds`: one host entry per registry, as regsync reads them.
use super::*;

/// The hosts of `creds`; an entry in error is left out and its error added to `errors`, so
/// that one load reports every broken entry.
pub(super) fn resolve_creds(
    ctx: &mut Ctx<'_>,
    raw: Vec<Spanned<RawHost>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<Host> {
    let mut hosts: Vec<Host> = Vec::new();
    for (index, spanned) in raw.into_iter().enumerate() {
        if let Err(e) = resolve_host(ctx, index, spanned, &mut hosts) {
            errors.extend(e);
        }
    }
    hosts
}

/// One `creds` entry, added to `hosts` (replacing an earlier one for the same registry).
fn resolve_host(
    ctx: &mut Ctx<'_>,
    index: usize,
    spanned: Spanned<RawHost>,
    hosts: &mut Vec<Host>,
) -> Result<(), Vec<ConfigError>> {
    {
        let entry_loc = spanned.defined;
        let h = spanned.value;
        let mut scope = Scope::entry(
            Section::Creds,
            index,
            h.registry.as_ref().map(|r| r.value.clone()),
        );
        let nil = Value::Nil;
        let Some(reg) = &h.registry else {
            return Err(vec![ctx.error(
                &scope,
                "registry",
                Some(entry_loc),
                ErrorKind::Missing,
            )]);
        };
        let written = ctx
            .expand(&scope, "registry", reg, &nil)
            .map_err(|e| vec![e])?;
        // A path after the host (`….amazonaws.com.cn/cloak`): regclient keys the creds by
        // the host alone, for every repository on it, and hands the whole name to a
        // credential helper. So does regferry, and says so.
        let (registry, path) = match written.split_once('/') {
            Some((host, path)) if !path.is_empty() && is_valid_registry(host) => {
                (host.to_owned(), Some(path.to_owned()))
            }
            _ => (written.clone(), None),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_owned(),
            r => r.to_owned(),
        };
        if registry.is_empty() {
            return Err(vec![ctx.error(
                &scope,
                "registry",
                Some(reg.defined),
                ErrorKind::Missing,
            )]);
        }
        if !is_valid_registry(&registry) {
            return Err(vec![ctx.error(
                &scope,
                "registry",
                Some(reg.defined),
                ErrorKind::Endpoint {
                    value: registry,
                    reason: "is not a registry host[:port]",
                },
            )]);
        }
        if let Some(e) = scope.entry.as_mut() {
            e.label = Some(registry.clone());
        }
        // Every other field is checked whatever the others hold: one load reports each error.
        let mut errs = Errors::default();
        let mut host = Host::with_defaults(&registry);
        if let Some(path) = &path {
            host.cred_host = Some(written.clone());
            ctx.warn(
                &scope,
                "registry",
                Some(reg.defined),
                WarningKind::RegistryPath {
                    host: registry.clone(),
                    path: path.clone(),
                },
            );
        }
        if let Some(hn) = &h.hostname {
            if is_valid_registry(&hn.value) {
                host.hostname = hn.value.clone();
            } else {
                errs.keep(ctx.err::<()>(
                    &scope,
                    "hostname",
                    Some(hn.defined),
                    ErrorKind::Endpoint {
                        value: hn.value.clone(),
                        reason: "is not a host[:port]",
                    },
                ));
            }
        }
        if let Some(u) = &h.user {
            host.user = errs
                .keep(ctx.expand(&scope, "user", u, &nil))
                .unwrap_or_default();
        }
        if let Some(p) = &h.pass {
            host.pass = Secret::new(
                errs.keep(ctx.expand(&scope, "pass", p, &nil))
                    .unwrap_or_default(),
            );
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
            host.cred_expire = errs
                .keep(ctx.duration(&scope, "credExpire", e))
                .unwrap_or(host.cred_expire);
        }
        if let Some(c) = h.cred_host.as_ref().filter(|s| !s.value.is_empty()) {
            host.cred_host = Some(c.value.clone());
        }
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
                    errs.keep(ctx.err::<()>(
                        &scope,
                        "tls",
                        Some(t.defined),
                        ErrorKind::Tls {
                            value: other.to_owned(),
                        },
                    ));
                    host.tls
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
        host.regcert = errs.keep(pem("regcert", &h.regcert)).flatten();
        host.client_cert = errs.keep(pem("clientCert", &h.client_cert)).flatten();
        host.client_key = Secret::new(
            errs.keep(pem("clientKey", &h.client_key))
                .flatten()
                .unwrap_or_default(),
        );
        let loc_of = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.defined);
        match (&host.client_cert, host.client_key.is_empty()) {
            (Some(_), true) => {
                errs.keep(ctx.err::<()>(
                    &scope,
                    "clientCert",
                    loc_of(&h.client_cert),
                    ErrorKind::Incomplete { other: "clientKey" },
                ));
            }
            (None, false) => {
                errs.keep(ctx.err::<()>(
                    &scope,
                    "clientKey",
                    loc_of(&h.client_key),
                    ErrorKind::Incomplete {
                        other: "clientCert",
                    },
                ));
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
                errs.keep(ctx.err::<()>(
                    &scope,
                    &format!("mirrors[{i}]"),
                    Some(m.defined),
                    ErrorKind::Endpoint {
                        value: m.value.clone(),
                        reason: "is not a registry host[:port]",
                    },
                ));
                continue;
            }
            host.mirrors.push(m.value.clone());
        }
        host.priority = h.priority.as_ref().map_or(0, |p| p.value);
        host.repo_auth = h.repo_auth.unwrap_or(false);
        if let Some(r) = &h.req_per_sec {
            if !r.value.is_finite() || r.value < 0.0 {
                errs.keep(ctx.err::<()>(
                    &scope,
                    "reqPerSec",
                    Some(r.defined),
                    ErrorKind::OutOfRange {
                        value: r.value.to_string(),
                        expected: "a number >= 0 (0 is unlimited)",
                    },
                ));
            } else {
                host.req_per_sec = (r.value > 0.0).then_some(r.value);
            }
        }
        if let Some(c) = &h.req_concurrent {
            host.req_concurrent = match c.value {
                0 => None,
                n @ 1..=1024 => Some(n as u32),
                n => {
                    errs.keep(ctx.err::<()>(
                        &scope,
                        "reqConcurrent",
                        Some(c.defined),
                        ErrorKind::OutOfRange {
                            value: n.to_string(),
                            expected: "1 to 1024 (0 or unset: a limit that adapts to the registry)",
                        },
                    ));
                    None
                }
            };
        }
        if let Some(c) = &h.blob_chunk {
            host.blob_chunk = match c.value {
                0 => DEFAULT_BLOB_CHUNK,
                n if n > 0 => n as u64,
                n => {
                    errs.keep(ctx.err::<()>(
                        &scope,
                        "blobChunk",
                        Some(c.defined),
                        ErrorKind::OutOfRange {
                            value: n.to_string(),
                            expected: "a size in bytes > 0",
                        },
                    ));
                    DEFAULT_BLOB_CHUNK
                }
            };
        }
        if let Some(m) = &h.blob_max {
            host.blob_max = (m.value > 0).then_some(m.value as u64);
        }
        if let Some(opts) = &h.api_opts {
            host.api_opts = opts.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        }
        if let Some(l) = &h.limits {
            host.limits = resolve_limits(ctx, &scope, l, LimitsAt::Host, &mut errs);
        }
        errs.finish()?;
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
    Ok(())
}
