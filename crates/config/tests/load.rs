//! Loading regsync configs: fixtures for every rule (merge keys, inheritance, clamping,
//! templates with an injected environment, files and clock) and for every error class.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use regferry_config::template::Host;
use regferry_config::{Endpoint, ErrorKind, SyncKind, Trigger, WarningKind, load_file, load_str};
use regferry_registry::Reference;
use regferry_testkit::fixture;

/// A template host with a fixed environment, in-memory files and a fixed clock.
struct FakeHost {
    env: BTreeMap<&'static str, &'static str>,
    files: BTreeMap<String, String>,
}

impl FakeHost {
    fn new() -> Self {
        FakeHost {
            env: BTreeMap::from([("REGFERRY_TEST_USER", "robot$mirror")]),
            files: BTreeMap::from([(
                "secrets/registry-pass".to_owned(),
                "  s3cret-from-file\n\n".to_owned(),
            )]),
        }
    }
}

impl Host for FakeHost {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).map(|v| (*v).to_owned())
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        self.files
            .get(&path.display().to_string())
            .cloned()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
    fn now(&self) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-29T10:20:30+01:00").unwrap()
    }
}

fn full() -> regferry_config::Loaded {
    let text = std::fs::read_to_string(fixture("config/full.yaml")).unwrap();
    load_str(&text, "full.yaml", &FakeHost::new()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn merge_keys_and_entry_overrides() {
    let c = full().config;
    let e = &c.sync[0];
    assert_eq!(
        e.kind,
        SyncKind::Image,
        "the entry's own type overrides the anchor's"
    );
    assert_eq!(
        e.target.to_string(),
        "registry.example.org:5000/hub/busybox",
        "target came from the merged anchor and saw the raw .Sync.Source"
    );
    assert_eq!(e.source.to_string(), "docker.io/library/busybox");
    // The anchor's interval blocks the default schedule and interval.
    assert_eq!(
        e.trigger,
        Some(Trigger::Interval(Duration::from_secs(3600)))
    );
    let e = &c.sync[1];
    assert_eq!(e.kind, SyncKind::Repository);
    assert_eq!(
        e.target.to_string(),
        "registry.example.org:5000/hub/library/alpine"
    );
}

#[test]
fn defaults_are_inherited_exactly_as_regsync() {
    let c = full().config;
    // sync[2] sets its own schedule: no default applies.
    match &c.sync[2].trigger {
        Some(Trigger::Schedule(s)) => assert_eq!(s.as_str(), "@hourly"),
        other => panic!("{other:?}"),
    }
    // sync[3] sets neither: the default schedule wins over the default interval.
    match &c.sync[3].trigger {
        Some(Trigger::Schedule(s)) => assert_eq!(s.as_str(), "CRON_TZ=UTC 15 3 * * 1-5"),
        other => panic!("{other:?}"),
    }
    // ratelimit: min inherited (entry min is 0), retry from the entry, default 1m raised to 5m.
    assert_eq!(c.sync[3].ratelimit.min, 100);
    assert_eq!(c.sync[3].ratelimit.retry, Duration::from_secs(600));
    assert_eq!(
        c.sync[2].ratelimit.retry,
        Duration::from_secs(300),
        "1m is raised to 5m"
    );
    // Tri-state booleans: unset inherits the default, an explicit false does not.
    assert!(c.sync[2].digest_tags);
    assert!(!c.sync[3].digest_tags);
    assert!(!c.sync[0].referrers);
    // referrerFilters: [] means no filters; the anchor's list is kept where merged.
    assert_eq!(c.sync[2].referrer_filters.len(), 2);
    assert!(c.sync[3].referrer_filters.is_empty());
    // fastCopy is read as fastCheck.
    assert!(c.sync[2].fast_check);
    assert!(!c.sync[1].fast_check);
    // An empty backup inherits the default, as an empty string does in regsync.
    assert_eq!(
        c.sync[4].backup.as_ref().map(|b| b.as_str()),
        Some("bkp-{{ .Ref.Tag }}")
    );
    // mediaTypes: entry list, else the built-in four.
    assert_eq!(
        c.sync[5].media_types,
        vec!["application/vnd.oci.image.index.v1+json".to_owned()]
    );
    assert_eq!(c.sync[0].media_types.len(), 4);
    assert_eq!(c.globals.parallel, 4);
    assert_eq!(c.globals.copy_slots(), 4);
}

#[test]
fn filters_are_compiled_and_applied_in_order() {
    let c = full().config;
    let tags = [
        "3.18.4",
        "3.19.0",
        "3.19.0-rc1",
        "3.12.0",
        "4.0.0",
        "latest",
        "alpha1",
        "edge",
    ];
    // sync[1]: anchor deny (alpha.*) is replaced by the entry's own tags block.
    assert_eq!(
        c.sync[1].tags.select(tags),
        vec!["3.18.4", "3.19.0", "3.12.0"]
    );
    // sync[2]: two tagSets unioned.
    let tags = ["1.1.0", "1.2.0", "v2.0.0", "latest", "stable", "edge"];
    assert_eq!(
        c.sync[2].tags.select(tags),
        vec!["1.2.0", "v2.0.0", "latest", "stable"]
    );
    // sync[3]: repository filter.
    assert!(c.sync[3].repos.matches("team-a/app"));
    assert!(!c.sync[3].repos.matches("team-x/tmp-1"));
    assert!(!c.sync[3].repos.matches("other/app"));
}

#[test]
fn templates_use_injected_env_files_and_clock() {
    let loaded = full();
    let c = &loaded.config;
    let h = c.host("registry.example.org:5000").unwrap();
    assert_eq!(h.user, "robot$mirror");
    assert_eq!(
        h.pass.expose(),
        "s3cret-from-file",
        "file contents are trimmed"
    );
    // referrerSource list, the second one templated with the already-expanded target.
    let e = &c.sync[2];
    let rs: Vec<String> = e.referrer_sources.iter().map(ToString::to_string).collect();
    assert_eq!(
        rs,
        vec![
            "ghcr.io/example/app-attestations",
            "localhost:5001/attestations/ghcr.io/example/app"
        ]
    );
    // sync[5]: index/split from regsync's own tests.
    assert_eq!(
        c.sync[5].target.to_string(),
        "localhost:5001/gcr/proj/tool:v2"
    );
    // Backup templates are expanded at copy time with .Ref and the injected clock.
    let t = Reference::parse("registry.example.org:5000/hub/busybox:1.36").unwrap();
    let b = c.sync[0].backup.as_ref().unwrap();
    assert_eq!(
        b.render(&t, &c.sync[0], &FakeHost::new()).unwrap(),
        "bkp-1.36"
    );
    let yaml = "sync:\n- source: a/b\n  target: c/d\n  type: image\n  backup: '{{ printf \"%s-%s\" .Ref.Tag ((time.Now).Format \"20060102\") }}'\n";
    let l = load_str(yaml, "t.yaml", &FakeHost::new()).unwrap();
    let e = &l.config.sync[0];
    assert_eq!(
        e.backup
            .as_ref()
            .unwrap()
            .render(&t, e, &FakeHost::new())
            .unwrap(),
        "1.36-20261129"
    );
}

#[test]
fn endpoints_by_type() {
    let c = full().config;
    assert!(
        matches!(&c.sync[3].source, Endpoint::Namespace { registry, prefix } if registry == "localhost:5001" && prefix.is_empty())
    );
    assert!(matches!(&c.sync[3].target, Endpoint::Namespace { prefix, .. } if prefix == "mirror"));
    match &c.sync[4].target {
        Endpoint::OciDir { path, tag } => {
            assert_eq!(path, Path::new("out/app"));
            assert_eq!(tag.as_deref(), Some("1.2.3"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.sync[4].platform.as_ref().unwrap().to_string(),
        "linux/arm64"
    );
    assert_eq!(c.sync[5].platforms.len(), 2);
}

#[test]
fn warnings_name_unknown_keys_and_entries() {
    let yaml = "x-anchor: {a: 1}\nbogus: 1\ndefaults:\n  paralel: 3\nsync:\n- source: busybox\n  target: localhost:5000/busybox\n  type: image\n  fastChek: true\n  hooks: {pre: {type: exec}}\n";
    let l = load_str(yaml, "w.yaml", &FakeHost::new()).unwrap();
    let text: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    // Every warning has its file:line:column.
    assert!(all.contains("w.yaml:2:1: unknown key `bogus`"), "{all}");
    assert!(
        all.contains("w.yaml:4:3: unknown key `defaults.paralel`"),
        "{all}"
    );
    assert!(
        all.contains("w.yaml:9:3: sync[0] (source \"busybox\"): unknown key `fastChek`"),
        "{all}"
    );
    assert!(
        all.contains("w.yaml:10:3: sync[0] (source \"busybox\"): field `hooks`"),
        "{all}"
    );
    assert!(
        !all.contains("x-anchor"),
        "x-* keys are the extension namespace: {all}"
    );
    assert_eq!(
        l.warnings
            .iter()
            .filter(|w| matches!(w.kind, WarningKind::UnknownKey { .. }))
            .count(),
        3
    );
}

/// Every file in tests/fixtures/config/bad is refused with the fragments its
/// `# expect:` lines name (file, line, entry, field, reason).
#[test]
fn bad_configs_name_file_line_entry_and_field() {
    let dir = fixture("config/bad");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "expected the bad-config fixtures, found {}",
        files.len()
    );
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} has no # expect: lines",
            path.display()
        );
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let err = match load_str(&text, &name, &regferry_config::template::SystemHost) {
            Ok(_) => panic!("{name}: loaded, but it must be refused"),
            Err(e) => e,
        };
        let msg = err.to_string();
        for want in expects {
            assert!(
                msg.contains(want),
                "{name}: error\n  {msg}\ndoes not contain\n  {want}"
            );
        }
    }
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let err = load_file(Path::new("/nonexistent/regsync.yaml"), &FakeHost::new()).unwrap_err();
    assert!(matches!(*err.kind, ErrorKind::Read { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/regsync.yaml: cannot read"),
        "{err}"
    );
}

#[test]
fn version_zero_and_absent_are_version_one() {
    for v in ["", "version: 0\n", "version: 1\n"] {
        let yaml = format!("{v}sync:\n- {{source: a/b, target: c/d, type: image}}\n");
        assert!(load_str(&yaml, "v.yaml", &FakeHost::new()).is_ok(), "{v:?}");
    }
}

#[test]
fn yaml_floats_in_tag_patterns_keep_their_text() {
    // A bare 3.10 is a YAML float; Go reads it into a string as written, and so does regferry.
    let yaml =
        "sync:\n- source: a/b\n  target: c/d\n  type: repository\n  tags:\n    allow: [3.10]\n";
    let l = load_str(yaml, "f.yaml", &FakeHost::new()).unwrap();
    assert_eq!(l.config.sync[0].tags.select(["3.10", "3.1"]), vec!["3.10"]);
}

#[test]
fn limits_under_defaults_and_creds_are_resolved_and_shown() {
    let yaml = "creds:\n- registry: slow.example.com\n  limits: {responseTimeout: 10m, names: 500000}\n\
                defaults:\n  limits:\n    connectTimeout: 5s\n    names: 200000\n    \
                manifestSize: 8MiB\n    referrersPerImage: 50\n\
                sync:\n- {source: a/b, target: slow.example.com/b, type: image}\n";
    let l = load_str(yaml, "l.yaml", &FakeHost::new()).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let g = l.config.globals.limits;
    assert_eq!(g.connect_timeout, Some(Duration::from_secs(5)));
    assert_eq!(g.manifest_size, Some(8 << 20));
    assert_eq!(g.referrers_per_image, Some(50));
    let host = l.config.host("slow.example.com").unwrap();
    // Key by key: the host's own keys win, the others come from defaults, the rest default.
    let client = host
        .limits
        .over(g)
        .client_limits(regferry_config::Limits::default());
    assert_eq!(client.response_timeout, Duration::from_secs(600));
    assert_eq!(client.names, 500_000);
    assert_eq!(client.connect_timeout, Duration::from_secs(5));
    assert_eq!(client.manifest_bytes, 8 << 20);
    assert_eq!(
        client.page_bytes,
        regferry_config::Limits::default().page_bytes
    );
    let shown = regferry_config::to_yaml(&l.config);
    for want in [
        "responseTimeout: 10m",
        "names: 500000",
        "connectTimeout: 5s",
        "manifestSize: 8388608",
    ] {
        assert!(shown.contains(want), "{want} in:\n{shown}");
    }
}

/// What regsync's loader accepts in tag patterns, regferry accepts with the same meaning,
/// and says where the meaning is likely not what was meant (real files: rancher/charts).
#[test]
fn patterns_regsync_accepts_load_with_a_warning_where_they_surprise() {
    let yaml = "sync:\n- source: a/b\n  target: c/d\n  type: repository\n  tags:\n    allow:\n      - \n      - v0.1.1\n      - 1.0\n      - '2.0'\n    deny: [\"*\"]\n\
                - source: a/e\n  target: c/e\n  type: repository\n  tags:\n    allow: ['*-alpine']\n";
    let l = load_str(yaml, "p.yaml", &FakeHost::new()).unwrap();
    let all: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    // The blank item: regsync's "" (matches nothing), with line, entry and field.
    assert!(
        all.contains("p.yaml:7:")
            && all.contains("sync[0] (source \"a/b\"): field `tags.allow[0]`"),
        "{all}"
    );
    assert!(all.contains("blank"), "{all}");
    // An unquoted 1.0: kept as written, with regsync's reading named.
    assert!(
        all.contains("field `tags.allow[2]`") && all.contains("\"1\""),
        "{all}"
    );
    assert!(
        !all.contains("tags.allow[3]"),
        "a quoted '2.0' is text to both: {all}"
    );
    // `*` as Go compiles `^*$`: every tag; a likely glob, so said.
    assert!(
        all.contains("field `tags.deny[0]`") && all.contains("every tag"),
        "{all}"
    );
    let tags = ["v0.1.1", "1.0", "2.0", "latest"];
    assert_eq!(
        l.config.sync[0].tags.select(tags),
        Vec::<&str>::new(),
        "deny * denies all"
    );
    // A leading `*` is an unanchored start in Go: `*-alpine` is any tag ending in -alpine.
    assert_eq!(
        l.config.sync[1]
            .tags
            .select(["3.20-alpine", "alpine", "x-alpine-1"]),
        vec!["3.20-alpine"]
    );
    assert!(
        all.contains("sync[1] (source \"a/e\"): field `tags.allow[0]`"),
        "{all}"
    );
    // No Rust type name reaches a user.
    for rust in ["Option<", "i64", "u32", "scalar", "sequence start"] {
        assert!(!all.contains(rust), "{rust}: {all}");
    }
}

/// regclient keys creds by host: a path after it (`…amazonaws.com.cn/cloak`) scopes
/// nothing, and only reaches a credential helper (as `credHost`).
#[test]
fn a_path_after_the_creds_registry_is_the_helpers_name_not_a_scope() {
    let yaml = "creds:\n- registry: 1234.dkr.ecr.cn-north-1.amazonaws.com.cn/cloak\n  user: AWS\n  pass: pw\n\
                sync:\n- {source: alpine, target: 1234.dkr.ecr.cn-north-1.amazonaws.com.cn/cloak/alpine, type: image}\n";
    let l = load_str(yaml, "c.yaml", &FakeHost::new()).unwrap();
    let host = l
        .config
        .host("1234.dkr.ecr.cn-north-1.amazonaws.com.cn")
        .expect("the creds are the host's");
    assert_eq!(host.user, "AWS");
    assert_eq!(
        host.cred_host.as_deref(),
        Some("1234.dkr.ecr.cn-north-1.amazonaws.com.cn/cloak")
    );
    let all: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(
        all.contains("c.yaml:2:13: creds[0]") && all.contains("every repository"),
        "{all}"
    );
}

/// regsync's manifest cache has nothing to cache in regferry: accepted (a bad value is still
/// refused), warned about where it is written, and not shown as if in force.
#[test]
fn the_manifest_cache_settings_are_warned_about_and_not_shown() {
    let yaml = "defaults:\n  cacheCount: 500\n  cacheTime: 5m\nsync:\n- {source: a/b, target: c/d, type: image}\n";
    let l = load_str(yaml, "m.yaml", &FakeHost::new()).unwrap();
    let all: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    let all = all.join("\n");
    assert!(
        all.contains("m.yaml:2:15: field `defaults.cacheCount`") && all.contains("no effect"),
        "{all}"
    );
    let shown = regferry_config::to_yaml(&l.config);
    assert!(!shown.contains("cache"), "{shown}");
    let bad = "defaults:\n  cacheCount: 5\n  cacheTime: 5 minutes\nsync: []\n";
    assert!(load_str(bad, "m.yaml", &FakeHost::new()).is_err());
}

/// One run reports every broken entry, each with its place, not only the first.
#[test]
fn every_error_of_a_file_is_reported_at_once() {
    let yaml = "creds:\n- registry: x.io\n  tls: sometimes\n\
                defaults:\n  parallel: -1\n\
                sync:\n\
                - {source: a/b, target: c/d, type: image}\n\
                - {source: a/b, target: c/d, type: picture}\n\
                - {source: a/b, target: C/D, type: image}\n\
                - {source: a/b, target: c/e, type: repository, tags: {allow: ['(']}}\n\
                - {source: a/b, target: c/f, type: image, interval: 1d}\n";
    let err = load_str(yaml, "e.yaml", &FakeHost::new()).unwrap_err();
    let text = err.to_string();
    for want in [
        "e.yaml:3:8: creds[0] (registry \"x.io\"): field `tls`",
        "e.yaml:5:13: field `defaults.parallel`",
        "sync[1] (source \"a/b\"): field `type`: unknown type \"picture\"",
        "sync[2] (source \"a/b\"): field `target`",
        "sync[3] (source \"a/b\"): field `tags.allow[0]`",
        "sync[4] (source \"a/b\"): field `interval`",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert!(!text.contains("sync[0]"), "sync[0] is fine:\n{text}");
    assert_eq!(err.count(), 6, "{text}");
}

/// Each error of one entry is reported too, not only its first.
#[test]
fn every_error_of_one_entry_is_reported_at_once() {
    let yaml = "creds:\n- registry: x.io\n  tls: sometimes\n  hostname: 'not a host!'\n  credExpire: 1d\n\
                defaults:\n  parallel: -1\n  limits: {pages: 0, idleTimeout: 1d}\n\
                sync:\n\
                - source: a/b\n  target: c/d\n  type: picture\n  interval: 1d\n\
                \x20 name: 'bad name'\n  platform: 'a/b/c/d/e'\n\
                \x20 ratelimit: {min: -1, retry: 1y}\n\
                \x20 tags: {allow: ['(', ')'], semverRange: ['>=x']}\n\
                - {source: a/b, target: C/D, type: image, schedule: '1 2 3'}\n";
    let err = load_str(yaml, "e.yaml", &FakeHost::new()).unwrap_err();
    let text = err.to_string();
    for want in [
        "e.yaml:3:8: creds[0] (registry \"x.io\"): field `tls`",
        "e.yaml:4:13: creds[0] (registry \"x.io\"): field `hostname`",
        "e.yaml:5:15: creds[0] (registry \"x.io\"): field `credExpire`",
        "e.yaml:7:13: field `defaults.parallel`",
        "field `defaults.limits.pages`",
        "field `defaults.limits.idleTimeout`",
        "e.yaml:12:9: sync[0] (source \"a/b\"): field `type`",
        "e.yaml:13:13: sync[0] (source \"a/b\"): field `interval`",
        "sync[0] (source \"a/b\"): field `name`",
        "e.yaml:15:13: sync[0] (source \"a/b\"): field `platform`",
        "sync[0] (source \"a/b\"): field `ratelimit.min`",
        "sync[0] (source \"a/b\"): field `ratelimit.retry`",
        "sync[0] (source \"a/b\"): field `tags.allow[0]`",
        "sync[0] (source \"a/b\"): field `tags.allow[1]`",
        "sync[0] (source \"a/b\"): field `tags.semverRange[0]`",
        "sync[1] (source \"a/b\"): field `schedule`",
        "sync[1] (source \"a/b\"): field `target`",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    assert_eq!(err.count(), 17, "{text}");
    // In file order: by line, then column.
    let places: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let mut p = l.strip_prefix("e.yaml:")?.splitn(3, ':');
            Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
        })
        .collect();
    assert!(places.len() > 10, "{text}");
    assert!(places.is_sorted(), "{places:?}\n{text}");
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "version",
        "creds",
        "defaults",
        "sync",
        "source",
        "target",
        "type",
        "tags",
        "allow",
        "deny",
        "semverRange",
        "tagSets",
        "schedule",
        "interval",
        "registry",
        "tls",
        "pass",
        "backup",
        "platform",
        "platforms",
        "referrerSource",
        "ratelimit",
        "min",
        "retry",
        "<<",
        "x-a",
        "parallel",
        "limits",
        "pageSize",
        "idleTimeout",
        "referrersPerImage",
    ];
    const VALUES: &[&str] = &[
        "image",
        "repository",
        "registry",
        "busybox",
        "ocidir://x:1",
        "a/B",
        "1h",
        "-1",
        "0",
        "@hourly",
        "* * * * *",
        "'{{ env \"X\" }}'",
        "'{{ file \"/x\" }}'",
        "'{{'",
        "[a, b]",
        "{}",
        "~",
        "*a",
        "&a x",
        ">=1.0",
        "(",
        "true",
        "linux/amd64",
        "99999999999999999999",
    ];

    fn yamlish() -> impl Strategy<Value = String> {
        let line = (
            0usize..4,
            prop::sample::select(KEYS),
            prop::sample::select(VALUES),
            any::<bool>(),
        )
            .prop_map(|(indent, k, v, dash)| {
                format!(
                    "{}{}{k}: {v}",
                    "  ".repeat(indent),
                    if dash { "- " } else { "" }
                )
            });
        prop::collection::vec(line, 0..14).prop_map(|l| l.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn loader_never_panics_on_yamlish_input(text in yamlish()) {
            let _ = load_str(&text, "p.yaml", &FakeHost::new());
        }

        #[test]
        fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
            let _ = load_str(&text, "p.yaml", &FakeHost::new());
        }
    }
}

#[test]
fn prune_is_on_with_a_limit_only_where_it_can_work() {
    use regferry_config::{MaxDelete, Prune};
    let yaml = "sync:\n\
                - {source: a/b, target: r.example.com/b, type: repository, prune: true}\n\
                - {source: a/c, target: r.example.com/c, type: repository, prune: {maxDelete: 3}}\n\
                - {source: a/d, target: r.example.com/d, type: repository, prune: {maxDelete: '25%'}}\n\
                - {source: a/e, target: r.example.com/e, type: repository, prune: false}\n\
                - {source: a/f, target: r.example.com/f, type: repository}\n";
    let l = load_str(yaml, "p.yaml", &FakeHost::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let prunes: Vec<Option<Prune>> = l.config.sync.iter().map(|e| e.prune).collect();
    let p = |m| Some(Prune { max_delete: m });
    assert_eq!(
        prunes,
        vec![
            p(MaxDelete::Percent(10)),
            p(MaxDelete::Count(3)),
            p(MaxDelete::Percent(25)),
            None,
            None
        ]
    );
    // A percentage rounds up, so that a window of a few tags can move by one.
    assert_eq!(MaxDelete::Percent(10).limit(6), 1);
    assert_eq!(MaxDelete::Percent(10).limit(0), 0);
    assert_eq!(MaxDelete::Percent(25).limit(8), 2);
    assert_eq!(MaxDelete::Count(3).limit(1000), 3);
    let shown = regferry_config::to_yaml(&l.config);
    for want in ["maxDelete: 10%", "maxDelete: 3\n", "maxDelete: 25%"] {
        assert!(shown.contains(want), "{want} in:\n{shown}");
    }

    // Each error names its entry and field, all in one load.
    let yaml = "sync:\n\
                - {source: a/b:1, target: r.example.com/b:1, type: image, prune: true}\n\
                - {source: a/d, target: r.example.com/d, type: repository, prune: {maxDelete: '0%'}}\n\
                - {source: a/e, target: r.example.com/e, type: repository, prune: {maxDelete: -1}}\n";
    let err = load_str(yaml, "p.yaml", &FakeHost::new()).unwrap_err();
    let text = err.to_string();
    for want in [
        "p.yaml:2:",
        "sync[0]",
        "nothing to prune",
        "sync[1]",
        "prune.maxDelete",
        "\"0%\"",
        "sync[2]",
        "\"-1\"",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    // A value of the wrong shape is a parse error at its place.
    for (value, want) in [("{maxDelet: 2}", "maxDelet"), ("sometimes", "maxDelete")] {
        let yaml = format!(
            "sync:\n- source: a/b\n  target: r.example.com/b\n  type: repository\n  prune: {value}\n"
        );
        let text = load_str(&yaml, "p.yaml", &FakeHost::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("p.yaml:5:") && text.contains(want),
            "{want:?} in:\n{text}"
        );
    }
}

#[test]
fn targets_lists_several_targets_each_templated_and_checked_at_its_place() {
    let yaml = "sync:\n\
                - source: a/b\n  \
                  targets:\n  \
                  - r1.example.com/{{ .Sync.Source }}\n  \
                  - r2.example.com/mirror/b\n  \
                  - ocidir://out/b\n  \
                  type: repository\n\
                - {source: a/c, target: r1.example.com/c, type: repository}\n";
    let l = load_str(yaml, "t.yaml", &FakeHost::new()).unwrap_or_else(|e| panic!("{e}"));
    let e = &l.config.sync[0];
    let all: Vec<String> = e.targets().map(ToString::to_string).collect();
    assert_eq!(
        all,
        [
            "r1.example.com/a/b",
            "r2.example.com/mirror/b",
            "ocidir://out/b"
        ]
    );
    assert_eq!(e.target.to_string(), "r1.example.com/a/b");
    assert!(l.config.sync[1].more_targets.is_empty());
    // `regferry config` shows the list for the first entry, `target` for the second.
    let shown = regferry_config::to_yaml(&l.config);
    assert!(
        shown.contains("targets:\n  - r1.example.com/a/b\n  - r2.example.com/mirror/b"),
        "{shown}"
    );
    assert!(shown.contains("target: r1.example.com/c"), "{shown}");

    // Each mistake names its entry and field, all in one load.
    let yaml = "sync:\n\
                - {source: a/b, target: r1.example.com/b, targets: [r2.example.com/b], type: repository}\n\
                - {source: a/c, targets: [], type: repository}\n\
                - {source: a/d, targets: [r1.example.com/d, 'r1.example.com/d'], type: repository}\n\
                - {source: a/e, targets: [r1.example.com/e, 'Bad Name/x'], type: repository}\n";
    let text = load_str(yaml, "t.yaml", &FakeHost::new())
        .unwrap_err()
        .to_string();
    for want in [
        "t.yaml:2:",
        "sync[0] (source \"a/b\"): field `targets`: set either target or targets",
        "t.yaml:3:",
        "sync[1] (source \"a/c\"): field `targets`: \"[]\" is not a list of one or more targets",
        "sync[2] (source \"a/d\"): field `targets[1]`: \"r1.example.com/d\": is listed twice",
        "sync[3] (source \"a/e\"): field `targets[1]`: \"Bad Name/x\"",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}
