//! YAML text → raw structs, with merge keys applied, unknown keys collected, and errors
//! that carry the line, column and field path.
use serde_saphyr::{DuplicateKeyPolicy, Location, SnippetMode, Spanned};

use crate::error::{ConfigError, EntryRef, ErrorKind, Position, Section};
use crate::raw::{RawConfig, Scalar};

/// The raw document and the paths of keys no struct knows.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) raw: RawConfig,
    pub(crate) unknown_keys: Vec<String>,
}

const SPANNED_MARKER: &str = "__serde_saphyr_private_spanned";

pub(crate) fn parse(text: &str, file: &str) -> Result<Parsed, ConfigError> {
    parse_within(text, file, max_nodes())
}

/// [`parse`], reading at most `max_nodes` YAML nodes.
fn parse_within(text: &str, file: &str, max_nodes: usize) -> Result<Parsed, ConfigError> {
    if is_blank(text) {
        return Ok(Parsed {
            raw: RawConfig::default(),
            unknown_keys: Vec::new(),
        });
    }
    let mut unknown = Vec::new();
    // Duplicate keys: the later one wins, as in regsync (goccy/go-yaml with duplicates allowed).
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::LastWins,
        budget: Some(budget(max_nodes)),
    };
    let outcome = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(de, &mut record);
        Ok(serde_path_to_error::deserialize::<_, RawConfig>(de))
    });
    let result = match outcome {
        Ok(r) => r,
        Err(e) => return Err(yaml_error(text, file, &e, None, max_nodes)),
    };
    match result {
        Ok(raw) => Ok(Parsed {
            raw,
            unknown_keys: unknown
                .into_iter()
                .filter(|p| !p.contains(SPANNED_MARKER))
                .collect(),
        }),
        Err(e) => {
            let path = clean_path(&e.path().to_string());
            Err(yaml_error(text, file, e.inner(), Some(path), max_nodes))
        }
    }
}

/// YAML nodes (values, lists and mappings) read from one file, by default: a generated
/// config of 100,000 plain entries has about 800,000. The limit, with the alias limits that
/// stay at the parser's defaults, refuses alias bombs (a few lines that expand to billions
/// of nodes) before they take the memory.
const DEFAULT_MAX_NODES: usize = 4_000_000;

/// The environment variable that raises (or lowers) [`DEFAULT_MAX_NODES`].
const MAX_NODES_ENV: &str = "REGFERRY_CONFIG_MAX_NODES";

fn max_nodes() -> usize {
    std::env::var(MAX_NODES_ENV)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_NODES)
}

/// The parser's limits, scaled to `nodes`.
fn budget(nodes: usize) -> serde_saphyr::Budget {
    let mut b = serde_saphyr::Budget::default();
    b.max_nodes = nodes;
    b.max_events = nodes.saturating_mul(2);
    b.max_merge_keys = nodes / 4;
    b
}

/// A breached parser limit, said in YAML's terms with the way to raise it.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach, max_nodes: usize) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let raise = format!("; a file this big is allowed with {MAX_NODES_ENV}=N (now {max_nodes})");
    match breach {
        B::Nodes { .. } | B::Events { .. } => format!(
            "the file has more than {max_nodes} YAML values, lists and mappings (after expanding \
             aliases): regferry's limit against alias bombs{raise}"
        ),
        B::MergeKeys { .. } => format!(
            "the file has more than {} merge keys (<<){raise}",
            max_nodes / 4
        ),
        B::Aliases { .. } | B::Anchors { .. } => {
            "the file has more than 50,000 aliases or anchors, regferry's limit against alias \
             bombs"
                .to_owned()
        }
        B::Depth { .. } => "the file nests lists and mappings more than 64 deep".to_owned(),
        B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. }
        | B::AliasAnchorRatio { .. } => {
            "the file's aliases (*name) would expand its anchors (&name) beyond what regferry \
             reads: an alias bomb, or an anchor reused far more often than a config needs"
                .to_owned()
        }
        other => format!(
            "the file is beyond what regferry reads: {}",
            breach_name(other)
        ),
    }
}

/// The parser limit `e` reports, also when it is wrapped (a snippet, an alias).
fn budget_breach(e: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    match e {
        serde_saphyr::Error::Budget { breach, .. } => Some(breach),
        serde_saphyr::Error::WithSnippet { error, .. }
        | serde_saphyr::Error::AliasError { error, .. } => budget_breach(error),
        _ => None,
    }
}

/// A breach's kind without Rust formatting.
fn breach_name(b: &serde_saphyr::budget::BudgetBreach) -> String {
    let debug = format!("{b:?}");
    debug
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    })
}

/// serde_path_to_error prints `?` for values it cannot name, and sees the inside of
/// `Spanned` (its marker and its `value` field); none of that is a user's key.
fn clean_path(path: &str) -> String {
    path.split('.')
        .filter(|seg| *seg != "?" && *seg != "value" && !seg.contains(SPANNED_MARKER))
        .collect::<Vec<_>>()
        .join(".")
}

fn yaml_error(
    text: &str,
    file: &str,
    e: &serde_saphyr::Error,
    path: Option<String>,
    max_nodes: usize,
) -> ConfigError {
    let loc = e.location().unwrap_or(Location::UNKNOWN);
    let options = serde_saphyr::render_options! { snippets: SnippetMode::Off };
    let rendered = e.render_with_options(options);
    let message = match budget_breach(e) {
        Some(breach) => budget_message(breach, max_nodes),
        None => in_yaml_terms(&strip_location(&rendered), value_at(text, loc)),
    };
    let (entry, field) = match path.as_deref() {
        Some(p) => split_entry(text, p),
        None => (None, None),
    };
    ConfigError::new(
        Position {
            file: file.to_owned(),
            line: Some(loc.line()),
            column: Some(loc.column()),
            entry,
            field,
        },
        ErrorKind::Yaml { message },
    )
}

/// The deserializer's message, said in YAML's terms: no Rust type names. `found` is the
/// value as written at the error's position, when there is one on that line.
fn in_yaml_terms(message: &str, found: Option<&str>) -> String {
    let found = found.map(|f| format!(", found `{f}`")).unwrap_or_default();
    let m = message.trim();
    if m.contains("Option<") || m.contains("null into") {
        "a value is required here, found nothing (a blank value is a YAML null)".to_owned()
    } else if let Some(t) = m.strip_prefix("invalid ").filter(|t| is_rust_integer(t)) {
        if t.starts_with('u') {
            format!("expected a whole number, 0 or more{found}")
        } else {
            format!("expected a whole number{found}")
        }
    } else if m == "invalid floating point" || m == "invalid f64" || m == "invalid f32" {
        format!("expected a number{found}")
    } else if m == "invalid boolean" {
        format!("expected true or false{found}")
    } else if m.contains("sequence start") {
        "expected a list (`- item` lines, or [a, b])".to_owned()
    } else if m.contains("mapping start") {
        "expected a mapping (`key: value` lines, or {key: value})".to_owned()
    } else if m.contains("string scalar") || m.contains("expected scalar") {
        "expected a single value, not a list or a mapping".to_owned()
    } else {
        m.to_owned()
    }
}

fn is_rust_integer(t: &str) -> bool {
    matches!(
        t,
        "i8" | "i16"
            | "i32"
            | "i64"
            | "i128"
            | "isize"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "u128"
            | "usize"
    )
}

/// The plain value written at `loc`: the rest of its line, without a comment, when short.
fn value_at(text: &str, loc: Location) -> Option<&str> {
    let line = text
        .lines()
        .nth(usize::try_from(loc.line()).ok()?.checked_sub(1)?)?;
    let col = usize::try_from(loc.column()).ok()?.checked_sub(1)?;
    let rest = line.get(col..)?;
    let value = rest.split(" #").next()?.trim();
    (!value.is_empty() && value.chars().count() <= 60 && !value.starts_with(['[', '{']))
        .then_some(value)
}

/// saphyr renders "error: line 3 column 15: invalid u32"; the position is printed by us.
fn strip_location(rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or(rendered).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(first, |(_, msg)| msg),
        None => first,
    };
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_owned(),
        None => first.to_owned(),
    }
}

/// Splits `sync[2].tags.allow[0]` into the entry `sync[2]` (with its source, found by a
/// lenient second parse) and the field `tags.allow[0]`.
fn split_entry(text: &str, path: &str) -> (Option<EntryRef>, Option<String>) {
    for (prefix, section) in [("sync[", Section::Sync), ("creds[", Section::Creds)] {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let Some((index, field)) = rest.split_once(']') else {
            continue;
        };
        let Ok(index) = index.parse::<usize>() else {
            continue;
        };
        let field = field.trim_start_matches('.');
        let entry = EntryRef {
            section,
            index,
            label: EntryLabels::read(text).get(section, index),
        };
        return (Some(entry), (!field.is_empty()).then(|| field.to_owned()));
    }
    (
        None,
        (!path.is_empty() && path != ".").then(|| path.to_owned()),
    )
}

#[derive(serde::Deserialize, Default)]
struct Loose {
    #[serde(default)]
    sync: Vec<LooseEntry>,
    #[serde(default)]
    creds: Vec<LooseEntry>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct LooseEntry {
    source: Option<Scalar>,
    registry: Option<Scalar>,
}

/// What identifies each entry to a person (a sync entry's source, a creds entry's
/// registry), read leniently from the text once, however many messages name entries.
#[derive(Default)]
pub(crate) struct EntryLabels {
    sync: Vec<Option<String>>,
    creds: Vec<Option<String>>,
}

impl EntryLabels {
    pub(crate) fn read(text: &str) -> EntryLabels {
        let options = serde_saphyr::options! {
            duplicate_keys: DuplicateKeyPolicy::LastWins,
            budget: Some(budget(max_nodes())),
        };
        let Ok(loose) = serde_saphyr::from_str_with_options::<Loose>(text, options) else {
            return EntryLabels::default();
        };
        EntryLabels {
            sync: loose
                .sync
                .into_iter()
                .map(|e| e.source.map(|s| s.0))
                .collect(),
            creds: loose
                .creds
                .into_iter()
                .map(|e| e.registry.map(|s| s.0))
                .collect(),
        }
    }

    pub(crate) fn get(&self, section: Section, index: usize) -> Option<String> {
        let list = match section {
            Section::Sync => &self.sync,
            Section::Creds => &self.creds,
        };
        list.get(index).cloned().flatten()
    }
}

/// A YAML document as keys with their positions, for pointing at keys that no struct
/// reads (unknown keys are found by path, without a position).
enum Node {
    Map(Vec<(Spanned<Scalar>, Node)>),
    Seq(Vec<Node>),
    Leaf,
}

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Spanned<Scalar>>()? {
                    out.push((k, m.next_value::<Node>()?));
                }
                Ok(Node::Map(out))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut q: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(n) = q.next_element::<Node>()? {
                    out.push(n);
                }
                Ok(Node::Seq(out))
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// Where each key named by a dotted path (`sync.3.cleanupTags`, list items by index) is
/// written; paths not found are left out. Parses the text a second time, so it is only
/// called when there is something to point at.
pub(crate) fn key_positions(text: &str, paths: &[String]) -> Vec<Option<Location>> {
    let options = serde_saphyr::options! { duplicate_keys: DuplicateKeyPolicy::LastWins };
    let Ok(root) = serde_saphyr::from_str_with_options::<Node>(text, options) else {
        return vec![None; paths.len()];
    };
    paths
        .iter()
        .map(|path| {
            let mut node = &root;
            let mut at = None;
            for seg in path.split('.') {
                match node {
                    Node::Map(entries) => {
                        let (k, v) = entries.iter().rev().find(|(k, _)| k.value.0 == seg)?;
                        at = Some(k.defined);
                        node = v;
                    }
                    Node::Seq(items) => node = items.get(seg.parse::<usize>().ok()?)?,
                    Node::Leaf => return None,
                }
            }
            at
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_reach_typed_structs() {
        // regsync's own pattern (cmd/regsync/testdata/config1.yml): a template entry under an
        // x- key, merged into each sync entry. serde_yaml would silently drop `target` here.
        let text = "x-sync-hub: &sync-hub\n  target: registry:5000/hub/{{ .Sync.Source }}\n  type: repository\n  interval: 60m\nsync:\n- <<: *sync-hub\n  source: busybox\n  type: image\n";
        let p = parse(text, "t.yaml").unwrap();
        let e = &p.raw.sync[0].value;
        assert_eq!(
            e.target.as_ref().unwrap().value,
            "registry:5000/hub/{{ .Sync.Source }}"
        );
        assert_eq!(
            e.kind.as_ref().unwrap().value,
            "image",
            "the entry's own key overrides the merge"
        );
        assert_eq!(e.interval.as_ref().unwrap().value.0, "60m");
        assert_eq!(p.unknown_keys, vec!["x-sync-hub".to_owned()]);
    }

    #[test]
    fn type_errors_name_line_entry_and_field() {
        let text = "sync:\n  - source: busybox\n    target: x/y\n    type: image\n  - source: alpine\n    target: x/z\n    type: image\n    tags:\n      allow: {a: 1}\n";
        let err = parse(text, "conf.yaml").unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.at.line, Some(9), "{msg}");
        assert!(msg.starts_with("conf.yaml:9:"), "{msg}");
        assert!(msg.contains("sync[1] (source \"alpine\")"), "{msg}");
        assert!(msg.contains("field `tags.allow`"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse("sync:\n  - source: [a\n", "c.yaml").unwrap_err();
        assert_eq!(err.at.line, Some(2));
        assert!(matches!(*err.kind, ErrorKind::Yaml { .. }));
    }

    #[test]
    fn type_errors_are_told_in_yaml_terms() {
        for (text, want) in [
            (
                "defaults:\n  parallel: abc\n",
                "expected a whole number, found `abc`",
            ),
            (
                "defaults:\n  parallel: 1.5\n",
                "expected a whole number, found `1.5`",
            ),
            (
                "creds:\n- registry: x.io\n  priority: -1\n",
                "a whole number, 0 or more",
            ),
            (
                "creds:\n- registry: x.io\n  reqPerSec: fast\n",
                "expected a number",
            ),
            (
                "sync:\n- source: a\n  referrers: maybe # no\n",
                "expected true or false, found `maybe`",
            ),
            (
                "sync:\n- source: a\n  tags:\n    allow: latest\n",
                "expected a list",
            ),
            ("sync:\n- source: a\n  tags: [x]\n", "expected a mapping"),
            ("sync:\n- source: [a]\n", "expected a single value"),
            ("sync: hello\n", "expected a list"),
            (
                "creds:\n- registry: x.io\n  mirrors: y.io\n",
                "expected a list",
            ),
        ] {
            let err = parse(text, "c.yaml").unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            for rust in [
                "i64",
                "u32",
                "f64",
                "Option<",
                "scalar",
                "sequence",
                "floating point",
            ] {
                assert!(!err.contains(rust), "{text:?}: {err}");
            }
        }
    }

    /// The default admits 100,000 plain entries (shown at a tenth of the scale, to stay
    /// quick in a debug build); an alias bomb is still refused; each refusal says what limit
    /// it hit in YAML's terms, and how to raise it where raising it is the answer.
    #[test]
    fn big_files_load_and_alias_bombs_are_refused_in_plain_words() {
        let entry = "- {source: a/b, target: c/d, type: image}\n";
        let tenth = format!("sync:\n{}", entry.repeat(10_000));
        assert_eq!(
            parse_within(&tenth, "big.yaml", DEFAULT_MAX_NODES / 10)
                .unwrap()
                .raw
                .sync
                .len(),
            10_000
        );
        let err = parse_within(&tenth, "big.yaml", 1_000)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("more than 1000 YAML values")
                && err.contains("REGFERRY_CONFIG_MAX_NODES=N (now 1000)"),
            "{err}"
        );

        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let refs = vec![format!("*{prev}"); 10].join(", ");
            bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        bomb.push_str("sync: []\n");
        let err = parse(&bomb, "bomb.yaml").unwrap_err().to_string();
        assert!(!err.contains("Budget") && !err.contains('{'), "{err}");
        assert!(err.contains("alias bomb"), "{err}");
    }

    #[test]
    fn blank_documents_are_empty_configs() {
        assert!(parse("# nothing\n---\n", "c").unwrap().raw.sync.is_empty());
    }
}
