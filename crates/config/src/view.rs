//! `regferry config`: the resolved configuration as YAML with regsync's key names, defaults
//! applied into every entry, durations in Go syntax, and secrets masked (regsync prints
//! them in clear).
use std::collections::BTreeMap;

use serde::Serialize;

use crate::duration::format_go_duration;
use crate::filter::{Pattern, ReferrerFilter, TagSet};
use crate::model::{Config, Endpoint, Host, LimitSettings, SyncEntry, SyncKind, Trigger};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct View {
    version: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    creds: Vec<HostView>,
    defaults: DefaultsView,
    sync: Vec<SyncView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HostView {
    registry: String,
    hostname: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pass: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    token: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cred_helper: Option<String>,
    cred_expire: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cred_host: Option<String>,
    tls: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    regcert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cert: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    client_key: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    path_prefix: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirrors: Vec<String>,
    priority: u32,
    repo_auth: bool,
    req_per_sec: f64,
    /// Unset: the adaptive limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    req_concurrent: Option<u32>,
    blob_chunk: u64,
    blob_max: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    api_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsView>,
}

/// The `limits` keys set; the others keep their documented defaults.
#[derive(Serialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
struct LimitsView {
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_speed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listing_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pages: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_depth: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifests_per_image: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrers_per_image: Option<usize>,
}

fn limits_view(l: &LimitSettings) -> Option<LimitsView> {
    let d = |v: Option<std::time::Duration>| v.map(format_go_duration);
    let view = LimitsView {
        connect_timeout: d(l.connect_timeout),
        response_timeout: d(l.response_timeout),
        idle_timeout: d(l.idle_timeout),
        request_timeout: d(l.request_timeout),
        min_speed: l.min_speed,
        token_size: l.token_size,
        manifest_size: l.manifest_size,
        page_size: l.page_size,
        listing_size: l.listing_size,
        pages: l.pages,
        names: l.names,
        index_depth: l.index_depth,
        manifests_per_image: l.manifests_per_image,
        referrers_per_image: l.referrers_per_image,
    };
    (view != LimitsView::default()).then_some(view)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DefaultsView {
    parallel: u32,
    skip_docker_config: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blob_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsView>,
    target_recheck: String,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct TagsView {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    semver_range: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest: Option<usize>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RatelimitView {
    min: u64,
    retry: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrerFilterView {
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SyncView {
    name: String,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    /// regferry extension: shown instead of `target` when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    targets: Vec<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tag_sets: Vec<TagsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repos: Option<TagsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    platforms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<String>,
    ratelimit: RatelimitView,
    media_types: Vec<String>,
    include_external: bool,
    digest_tags: bool,
    referrers: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrer_filters: Vec<ReferrerFilterView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrer_source: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    referrer_target: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    referrer_slow: bool,
    fast_check: bool,
    force_recursive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prune: Option<PruneView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    require: Option<RequireView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequireView {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    referrers: Vec<ReferrerFilterView>,
    /// The keys' fingerprints, not the keys.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signature_keys: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneView {
    max_delete: MaxDeleteView,
}

/// A count prints as a number, a percentage as text (`10%`).
#[derive(Serialize)]
#[serde(untagged)]
enum MaxDeleteView {
    Count(usize),
    Percent(String),
}

fn texts(p: &[Pattern]) -> Vec<String> {
    p.iter().map(|p| p.as_str().to_owned()).collect()
}

fn filter_views(filters: &[ReferrerFilter]) -> Vec<ReferrerFilterView> {
    filters
        .iter()
        .map(|f| ReferrerFilterView {
            artifact_type: f.artifact_type.clone(),
            annotations: f.annotations.clone(),
        })
        .collect()
}

fn tags_view(t: &TagSet) -> TagsView {
    TagsView {
        allow: texts(&t.allow),
        deny: texts(&t.deny),
        semver_range: t
            .semver_range
            .as_ref()
            .map(|r| r.ranges().iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        latest: t.latest,
    }
}

fn host_view(h: &Host) -> HostView {
    HostView {
        registry: h.registry.clone(),
        hostname: h.hostname.clone(),
        user: h.user.clone(),
        pass: h.pass.masked(),
        token: h.token.masked(),
        cred_helper: h.cred_helper.clone(),
        cred_expire: format_go_duration(h.cred_expire),
        cred_host: h.cred_host.clone(),
        tls: h.tls.as_str(),
        regcert: h.regcert.clone(),
        client_cert: h.client_cert.clone(),
        client_key: h.client_key.masked(),
        path_prefix: h.path_prefix.clone(),
        mirrors: h.mirrors.clone(),
        priority: h.priority,
        repo_auth: h.repo_auth,
        req_per_sec: h.req_per_sec.unwrap_or(0.0),
        req_concurrent: h.req_concurrent,
        blob_chunk: h.blob_chunk,
        blob_max: h
            .blob_max
            .map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX)),
        api_opts: h.api_opts.clone(),
        limits: limits_view(&h.limits),
    }
}

fn sync_view(e: &SyncEntry) -> SyncView {
    let (interval, schedule) = match &e.trigger {
        Some(Trigger::Interval(d)) => (Some(format_go_duration(*d)), None),
        Some(Trigger::Schedule(s)) => (None, Some(s.as_str().to_owned())),
        None => (None, None),
    };
    SyncView {
        name: e.name.clone(),
        source: e.source.to_string(),
        target: e.more_targets.is_empty().then(|| e.target.to_string()),
        targets: if e.more_targets.is_empty() {
            Vec::new()
        } else {
            e.targets().map(ToString::to_string).collect()
        },
        kind: e.kind.as_str(),
        tag_sets: e.tags.sets.iter().map(tags_view).collect(),
        repos: (e.kind == SyncKind::Registry).then(|| TagsView {
            allow: texts(&e.repos.allow),
            deny: texts(&e.repos.deny),
            semver_range: Vec::new(),
            latest: None,
        }),
        platform: e.platform.as_ref().map(ToString::to_string),
        platforms: e
            .platforms
            .iter()
            .map(|p| p.as_ref().map(ToString::to_string).unwrap_or_default())
            .collect(),
        interval,
        schedule,
        backup: e.backup.as_ref().map(|b| b.as_str().to_owned()),
        ratelimit: RatelimitView {
            min: e.ratelimit.min,
            retry: format_go_duration(e.ratelimit.retry),
        },
        media_types: e.media_types.clone(),
        include_external: e.include_external,
        digest_tags: e.digest_tags,
        referrers: e.referrers,
        referrer_filters: filter_views(&e.referrer_filters),
        referrer_source: e.referrer_sources.iter().map(Endpoint::to_string).collect(),
        referrer_target: e.referrer_target.as_ref().map(ToString::to_string),
        referrer_slow: e.referrer_slow,
        fast_check: e.fast_check,
        force_recursive: e.force_recursive,
        require: e.require.as_ref().map(|r| RequireView {
            referrers: filter_views(&r.referrers),
            signature_keys: r.keys.iter().map(|k| k.fingerprint.clone()).collect(),
        }),
        prune: e.prune.map(|p| PruneView {
            max_delete: match p.max_delete {
                crate::MaxDelete::Count(n) => MaxDeleteView::Count(n),
                m @ crate::MaxDelete::Percent(_) => MaxDeleteView::Percent(m.to_string()),
            },
        }),
    }
}

/// The resolved configuration as YAML; every secret is printed as `***`.
pub fn to_yaml(config: &Config) -> String {
    let g = &config.globals;
    let view = View {
        version: 1,
        creds: config.creds.iter().map(host_view).collect(),
        defaults: DefaultsView {
            parallel: g.parallel,
            skip_docker_config: g.skip_docker_config,
            user_agent: g.user_agent.clone(),
            blob_limit: g.blob_limit,
            limits: limits_view(&g.limits),
            target_recheck: crate::duration::format_go_duration(g.target_recheck),
        },
        sync: config.sync.iter().map(sync_view).collect(),
    };
    // Serialising plain structs of strings, numbers and lists cannot fail; fall back to an
    // explanatory comment rather than panicking if a future field type ever does.
    serde_saphyr::to_string(&view)
        .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
}
