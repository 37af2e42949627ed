//! regsync configs that other people wrote (tests/fixtures/regsync-corpus, origins and
//! regsync's verdict in its SOURCES.md): each loads as regsync loads it, or is refused as
//! listed, every warning says where, and the resolved view of a few is pinned.
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use regferry_config::template::Host;
use regferry_config::{Loaded, load_str, to_yaml};
use regferry_testkit::{assert_golden, fixture};

/// The environment each file templates, with plausible values, and every `{{file}}` path
/// readable.
struct CorpusHost;

impl Host for CorpusHost {
    fn env(&self, name: &str) -> Option<String> {
        let value = if name.contains("VERSION") || name.contains("VERISON") {
            "1.2.3"
        } else if matches!(name, "REGISTRY_ENDPOINT" | "HUB_URL" | "MIRROR") {
            "registry.example.com:5000"
        } else if name.contains("ORG") {
            "myorg"
        } else if name.contains("PROJECT") {
            "my-project"
        } else {
            "value-of-the-secret"
        };
        Some(value.to_owned())
    }
    fn read_file(&self, _: &Path) -> std::io::Result<String> {
        Ok("token-from-a-file\n".to_owned())
    }
    fn now(&self) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339("2026-11-29T10:20:30+01:00").unwrap()
    }
}

/// Files regferry refuses, and what the refusal must say.
const REFUSED: &[(&str, &[&str])] = &[(
    "19-trunk-based-dev-dhi-placeholders.yaml",
    &[
        "19-trunk-based-dev-dhi-placeholders.yaml:15:13",
        "sync[0] (source \"dhi.io/node\")",
        "field `target`",
        "must be lower case",
    ],
)];

fn corpus() -> Vec<(String, String)> {
    let dir = fixture("regsync-corpus");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 26, "the corpus has {} files", files.len());
    files
}

fn load(name: &str, text: &str) -> Loaded {
    load_str(text, name, &CorpusHost).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn warnings(l: &Loaded) -> String {
    let lines: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

#[test]
fn every_real_config_loads_or_is_refused_as_listed() {
    for (name, text) in corpus() {
        if let Some((_, wants)) = REFUSED.iter().find(|(n, _)| *n == name) {
            let err = load_str(&text, &name, &CorpusHost)
                .err()
                .unwrap_or_else(|| panic!("{name} loaded, but it must be refused"))
                .to_string();
            for want in *wants {
                assert!(err.contains(want), "{name}: {err}\ndoes not say {want}");
            }
            continue;
        }
        let l = load(&name, &text);
        assert!(
            !l.config.sync.is_empty() || name.contains("creds-only"),
            "{name}: no entries"
        );
        // Every warning says where, except the one about a file with no entries at all.
        for w in &l.warnings {
            if w.at.field.as_deref() != Some("sync") {
                assert!(w.at.line.is_some(), "{name}: {w}");
            }
            for rust in ["Option<", "i64", "u32", "scalar"] {
                assert!(!w.to_string().contains(rust), "{name}: {w}");
            }
        }
    }
}

#[test]
fn what_regsync_reads_differently_is_warned_about_where_it_is() {
    let files = corpus();
    let get = |prefix: &str| {
        let (name, text) = files.iter().find(|(n, _)| n.starts_with(prefix)).unwrap();
        warnings(&load(name, text))
    };
    let w = get("20-");
    assert!(
        w.contains("20-rancher-charts-null-allow.yaml:349:7: sync[30]") && w.contains("blank item"),
        "{w}"
    );
    assert!(
        w.contains(":754:7: ") && w.contains("regsync reads it as \"1\""),
        "{w}"
    );
    let w = get("21-");
    assert!(
        w.contains(":21:9: sync[0]") && w.contains("copies nothing"),
        "{w}"
    );
    let w = get("24-");
    assert!(w.contains("scopes nothing"), "{w}");
    let w = get("06-");
    assert!(
        w.contains("field `scheme`") && w.contains("deprecated"),
        "{w}"
    );
    let w = get("09-");
    assert!(
        w.contains(":6:3: unknown key `defaults.cleanupTags`"),
        "{w}"
    );
    let w = get("27-");
    assert!(w.contains("x- key is silent only at the top"), "{w}");
    let w = get("33-");
    assert!(w.contains("`fastCopy` is read as `fastCheck`"), "{w}");
}

#[test]
fn the_resolved_view_of_a_few_is_pinned() {
    for (name, text) in corpus() {
        let pinned = ["01-", "07-", "17-", "24-", "29-"];
        if pinned.iter().any(|p| name.starts_with(p)) {
            let l = load(&name, &text);
            assert_golden(&format!("corpus/{name}"), &to_yaml(&l.config));
        }
    }
}
