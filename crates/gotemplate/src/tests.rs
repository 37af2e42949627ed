//! End-to-end tests of the public API, with a fake host for env, files and clock.

mod go_cases;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use proptest::prelude::*;

use super::expand;
use super::{Error, Host, Template, Value};

/// Env, files and clock from fixed tables.
struct FakeHost {
    env: BTreeMap<&'static str, &'static str>,
    files: BTreeMap<&'static str, &'static str>,
    now: DateTime<FixedOffset>,
}

impl FakeHost {
    fn new() -> Self {
        FakeHost {
            env: [("USER", "alice"), ("HOME", "/home/alice")].into(),
            files: [("/run/secrets/pass", "  s3cret\n")].into(),
            now: at("2024-03-05T07:08:09.0123+01:30"),
        }
    }
}

impl Host for FakeHost {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).map(|v| (*v).to_owned())
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        path.to_str()
            .and_then(|p| self.files.get(p))
            .map(|v| (*v).to_owned())
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    fn now(&self) -> DateTime<FixedOffset> {
        self.now
    }
}

fn at(rfc3339: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(rfc3339).expect("test timestamp")
}

fn s(x: &str) -> Value {
    Value::from(x)
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// regsync-shaped data: `.Sync` (the entry), `.Ref` (the target being backed up), and a few extras.
fn data() -> Value {
    map(vec![
        (
            "Sync",
            map(vec![
                ("Source", s("gcr.io/proj/app")),
                ("Target", s("reg:5000/x")),
                ("Type", s("repository")),
                ("Tags", Value::List(vec![s("a"), s("b")])),
                ("Empty", s("")),
                ("Num", Value::Int(3)),
                ("Zero", Value::Int(0)),
                ("Flag", Value::Bool(false)),
                ("True", Value::Bool(true)),
                ("Nested", map(vec![("K", s("v"))])),
                ("List", Value::List(vec![])),
                ("Map", map(vec![])),
            ]),
        ),
        (
            "Ref",
            map(vec![
                ("Tag", s("v1.2")),
                ("Registry", s("docker.io")),
                ("Repository", s("library/alpine")),
                ("Digest", s("")),
            ]),
        ),
        ("Items", Value::List(vec![s("x"), s("y"), s("z")])),
        ("N", Value::Int(2)),
        ("Nil", Value::Nil),
    ])
}

fn render(src: &str) -> Result<String, Error> {
    expand(src, &data(), &FakeHost::new())
}

fn ok(src: &str) -> String {
    render(src).unwrap_or_else(|e| panic!("{src:?} failed: {e}"))
}

#[test]
fn regsync_gcr_mirror_example() {
    assert_eq!(
        ok(r#"reg:5000/gcr/{{ index (split .Sync.Source "gcr.io/") 1 }}"#),
        "reg:5000/gcr/proj/app"
    );
    // A source outside gcr.io has no second part: an error, not a wrong target.
    let src = r#"{{ index (split .Ref.Registry "gcr.io/") 1 }}"#;
    assert!(matches!(
        render(src),
        Err(Error::IndexOutOfRange {
            index: 1,
            len: 1,
            offset: 3
        })
    ));
}

#[test]
fn file_reads_trimmed_contents_and_fails_loudly() {
    assert_eq!(
        ok(r#"pass={{ file "/run/secrets/pass" }};"#),
        "pass=s3cret;"
    );
    match render(r#"{{ file "/run/secrets/nope" }}"#) {
        Err(Error::File {
            path,
            offset,
            source,
        }) => {
            assert_eq!(path, PathBuf::from("/run/secrets/nope"));
            assert_eq!(offset, 3);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Error::File, got {other:?}"),
    }
    let message = render(r#"{{ file "/run/secrets/nope" }}"#).map_err(|e| e.to_string());
    assert!(message.is_err_and(|m| m.contains("/run/secrets/nope")));
}

#[test]
fn env_reads_the_host_and_unset_is_empty() {
    assert_eq!(ok(r#"{{ env "USER" }}@{{ env "UNSET" }}."#), "alice@.");
    assert_eq!(ok(r#"{{ "HOME" | env }}"#), "/home/alice");
}

#[test]
fn backup_tags() {
    assert_eq!(ok("bkup-{{.Ref.Tag}}"), "bkup-v1.2");
    assert_eq!(
        ok(r#"{{ printf "%s-%s" .Ref.Tag ((time.Now).Format "20060102") }}"#),
        "v1.2-20240305"
    );
}

#[test]
fn time_now_comes_from_the_host() {
    assert_eq!(
        ok(r#"{{ $t := time.Now }}{{printf "%d%02d%02d" $t.Year $t.Month $t.Day}}"#),
        "20240305"
    );
    assert_eq!(
        ok(r#"{{ (time.Now).Format "2006-01-02T15:04:05Z07:00" }}"#),
        "2024-03-05T07:08:09+01:30"
    );
    let mut host = FakeHost::new();
    host.now = at("1999-12-31T23:59:59Z");
    let out = expand(
        r#"{{ time.Now.Format "2006-01-02T15:04:05Z07:00" }}"#,
        &Value::Nil,
        &host,
    );
    assert_eq!(out.as_deref().ok(), Some("1999-12-31T23:59:59Z"));
    assert_eq!(
        ok(r#"{{ ((time.Now).AddDate 0 0 -5).Format "Jan _2" }}"#),
        "Feb 29"
    );
}

#[test]
fn time_parse_and_methods() {
    assert_eq!(
        ok(
            r#"{{ (time.Parse "2006-01-02 15:04 -0700" "2024-02-29 13:14 -0500").UTC.Format "2006-01-02T15:04Z07:00" }}"#
        ),
        "2024-02-29T18:14Z"
    );
    assert!(matches!(
        render(r#"{{ time.Parse "2006-01-02" "2024-13-01" }}"#),
        Err(Error::TimeParse { offset: 3, .. })
    ));
    assert!(matches!(
        render("{{ time.Now.Format 1 }}"),
        Err(Error::WrongArguments { .. })
    ));
    assert!(
        matches!(render("{{ time.Now.Nope }}"), Err(Error::MissingField { chain, .. }) if chain == "time.Now.Nope")
    );
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(ok("a  \n {{- .Ref.Tag -}} \n\t b"), "av1.2b");
    assert_eq!(ok("a {{ .Ref.Tag -}}  b"), "a v1.2b");
    assert_eq!(ok("a {{- /* gone */ -}} b"), "ab");
    assert_eq!(ok("a{{/* gone */}} b"), "a b");
    assert_eq!(ok("{{-3}}"), "-3");
}

#[test]
fn control_structures() {
    assert_eq!(
        ok("{{if .Sync.Flag}}a{{else if .Sync.True}}b{{else}}c{{end}}"),
        "b"
    );
    assert_eq!(ok("{{if .Sync.Empty}}a{{else}}c{{end}}"), "c");
    assert_eq!(
        ok("{{range $i, $v := .Items}}{{$i}}{{$v}}{{end}}"),
        "0x1y2z"
    );
    assert_eq!(ok("{{range .Sync.List}}x{{else}}none{{end}}"), "none");
    assert_eq!(
        ok("{{range $k, $v := .Sync.Nested}}{{$k}}={{$v}}{{end}}"),
        "K=v"
    );
    assert_eq!(
        ok("{{with .Sync.Nested}}{{.K}}{{$.Ref.Tag}}{{end}}"),
        "vv1.2"
    );
    assert_eq!(
        ok("{{with .Sync.Empty}}x{{else with .Ref.Tag}}{{.}}{{end}}"),
        "v1.2"
    );
    assert_eq!(
        ok("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}"),
        "2"
    );
}

#[test]
fn pipelines() {
    assert_eq!(ok("{{ .Sync.Source | lower }}"), "gcr.io/proj/app");
    assert_eq!(
        ok("{{ .Sync.Source | upper | printf \"[%s]\" }}"),
        "[GCR.IO/PROJ/APP]"
    );
    assert_eq!(ok(r#"{{ .Sync.Empty | default "latest" }}"#), "latest");
    assert_eq!(ok(r#"{{ join (split "a/b/c" "/") "-" }}"#), "a-b-c");
}

#[test]
fn errors_carry_offsets() {
    let cases: Vec<(&str, usize)> = vec![
        ("ab {{ .Sync.Nope }}", 6),
        ("{{ .Ref.Tag.Deeper }}", 3),
        ("{{ .Nil.Field }}", 3),
        ("x {{ nope 1 }}", 5),
        ("{{ $undefined }}", 3),
        ("{{ if 1 }}", 10),
        ("abc {{ end }}", 7),
        ("{{ \"unterminated }}", 3),
        ("{{ define \"x\" }}{{ end }}", 3),
        ("{{ lower 1 }}", 3),
        ("{{ 1.5 }}", 3),
    ];
    for (src, offset) in cases {
        match render(src) {
            Err(e) => assert_eq!(e.offset(), offset, "{src}: {e}"),
            Ok(out) => panic!("{src:?} rendered {out:?}"),
        }
    }
    match render("{{ .Sync.Nope }}") {
        Err(Error::MissingField { chain, .. }) => assert_eq!(chain, ".Sync.Nope"),
        other => panic!("{other:?}"),
    }
    match render("{{ .Nil.Field }}") {
        Err(Error::NotAMap { chain, kind, .. }) => {
            assert_eq!((chain.as_str(), kind), (".Nil.Field", "nil"))
        }
        other => panic!("{other:?}"),
    }
    let e = render("a\nb {{ nope }}").err();
    assert_eq!(e.map(|e| e.line_col("a\nb {{ nope }}")), Some((2, 6)));
}

#[test]
fn parse_errors_are_reported_before_render() {
    for src in [
        "{{ nope }}",
        "{{ $x }}",
        "{{ if }}{{ end }}",
        "{{ template \"t\" }}",
        "{{ json . }}",
    ] {
        assert!(Template::parse(src).is_err_and(|e| e.is_syntax()), "{src}");
    }
    // A missing field is only known with the data.
    assert!(Template::parse("{{ .Nope }}").is_ok());
}

#[test]
fn literal_detection() {
    let lit = Template::parse("docker.io/library/alpine").map(|t| t.is_literal());
    assert_eq!(lit.ok(), Some(true));
    let tmpl = Template::parse("a{{/* c */}}").map(|t| t.is_literal());
    assert_eq!(tmpl.ok(), Some(false));
}

#[test]
fn limits_stop_runaway_templates() {
    let big = "x".repeat(super::MAX_OUTPUT / 2 + 1);
    let data = map(vec![("Big", Value::Str(big))]);
    let host = FakeHost::new();
    let out = expand("{{ .Big }}{{ .Big }}", &data, &host);
    assert!(matches!(
        out,
        Err(Error::LimitExceeded {
            what: "output bytes",
            ..
        })
    ));
    let out = expand(r#"{{ printf "%s%s" .Big .Big }}"#, &data, &host);
    assert!(matches!(
        out,
        Err(Error::LimitExceeded {
            what: "output bytes",
            ..
        })
    ));
    let nested = "{{ range 100000 }}{{ range 100000 }}{{ end }}{{ end }}";
    assert!(matches!(
        render(nested),
        Err(Error::LimitExceeded { what: "work", .. })
    ));
    // Nesting up to the limit still works, on a test thread's small stack.
    let parens = format!("{{{{ {}1{} }}}}", "(".repeat(99), ")".repeat(99));
    assert_eq!(ok(&parens), "1");
    let blocks = format!(
        "{}{}",
        "{{ with $ }}{{ range .N }}".repeat(50),
        "{{ end }}{{ end }}".repeat(50)
    );
    let r = render(&blocks);
    assert!(
        matches!(r, Err(Error::LimitExceeded { what: "work", .. })),
        "{r:?}"
    );
    let blocks = format!(
        "{}x{}",
        "{{ with $ }}{{ if .N }}".repeat(50),
        "{{ end }}{{ end }}".repeat(50)
    );
    assert_eq!(ok(&blocks), "x");
    let deep = format!("{}x{}", "{{ if 1 }}".repeat(200), "{{ end }}".repeat(200));
    assert!(matches!(
        render(&deep),
        Err(Error::LimitExceeded {
            what: "nesting depth",
            ..
        })
    ));
}

#[test]
fn system_host_reads_real_env_and_files() {
    let host = super::SystemHost;
    assert_eq!(host.env(""), None);
    assert_eq!(host.env("A=B"), None);
    let err = expand(
        r#"{{ file "/nonexistent/regferry-test" }}"#,
        &Value::Nil,
        &host,
    );
    assert!(matches!(err, Err(Error::File { .. })));
    let path = std::env::temp_dir().join(format!("regferry-template-{}", std::process::id()));
    std::fs::write(&path, "  secret \n").expect("write temp file");
    let src = format!("{{{{ file {:?} }}}}", path.display().to_string());
    let out = expand(&src, &Value::Nil, &host);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.ok().as_deref(), Some("secret"));
}

/// Pieces that make syntactically interesting action soup.
#[rustfmt::skip]
const SOUP: &[&str] = &[
    "{{", "}}", "{{-", "-}}", " ", "\n", ".", ".Sync", ".Source", ".Items", "$", "$x", "$i", ":=", "=", ",",
    "|", "(", ")", "\"s\"", "`r`", "'c'", "1", "-1", "0x1F", "if", "else", "end", "range", "with", "nil",
    "true", "index", "split", "join", "printf", "\"%d%s%v\"", "print", "len", "eq", "lt", "and", "or", "not",
    "default", "env", "\"USER\"", "file", "lower", "time.Now", "time.Parse", ".Format", "\"2006\"", ".Year",
    ".Month", "/*", "*/", "define", "break", "é", "}", "{", "\\", "\"",
];

/// Operands that parse, of every kind the data and functions produce.
#[rustfmt::skip]
const OPERANDS: &[&str] = &[
    ".", ".Sync.Source", ".Items", ".N", ".Nil", ".Sync.Nested", "$", "$.Ref.Tag", "\"a,b\"", "\"2006\"",
    "\"%v-%d\"", "1", "-1", "0", "true", "nil", "(time.Now)", "time.Now", "(split .Sync.Source \"/\")",
    "9223372036854775807", "-9223372036854775808", "\"Jan _2 15:04:05.000 MST Z07:00\"",
];

/// Heads of commands: every function, plus field chains and methods.
#[rustfmt::skip]
const HEADS: &[&str] = &[
    "and", "or", "not", "len", "index", "print", "printf", "println", "eq", "ne", "lt", "le", "gt", "ge", "env",
    "file", "default", "join", "split", "lower", "upper", "trimSpace", "time.Parse", "(time.Now).Format",
    "time.Now.AddDate", ".Sync.Nested.K", "time.Now.Year",
];

fn action() -> impl Strategy<Value = String> {
    let command = (
        prop::sample::select(HEADS),
        prop::collection::vec(prop::sample::select(OPERANDS), 0..4),
    )
        .prop_map(|(head, args)| format!("{head} {}", args.join(" ")));
    prop::collection::vec(command, 1..3).prop_map(|cmds| cmds.join(" | "))
}

proptest! {
    #[test]
    fn well_formed_actions_never_panic(
        first in action(),
        second in action(),
        shape in 0..5usize,
    ) {
        let src = match shape {
            0 => format!("{{{{ {first} }}}}"),
            1 => format!("{{{{ if {first} }}}}a{{{{ else }}}}{{{{ {second} }}}}{{{{ end }}}}"),
            2 => format!("{{{{ range $i, $v := {first} }}}}{{{{ {second} }}}}{{{{ end }}}}"),
            3 => format!("{{{{ with $x := {first} }}}}{{{{ {second} }}}}{{{{ $x }}}}{{{{ end }}}}"),
            _ => format!("{{{{ $y := {first} }}}}{{{{ $y = {second} }}}}{{{{ $y }}}}"),
        };
        let t = Template::parse(&src).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        let _ = t.render(&data(), &FakeHost::new());
    }

    #[test]
    fn printf_never_panics(format in "[%a-zA-Z0-9.*#+ \\-\\[\\]é]{0,24}", n in any::<i64>()) {
        let src = format!("{{{{ printf {format:?} {n} \"s\" .Items .Nil (time.Now) }}}}");
        if let Ok(t) = Template::parse(&src) {
            let _ = t.render(&data(), &FakeHost::new());
        }
    }

    #[test]
    fn parse_never_panics(src in any::<String>()) {
        let _ = Template::parse(&src);
    }

    #[test]
    fn token_soup_never_panics(parts in prop::collection::vec(prop::sample::select(SOUP), 0..40)) {
        let src = parts.concat();
        if let Ok(t) = Template::parse(&src) {
            let _ = t.render(&data(), &FakeHost::new());
            let _ = t.render(&Value::Nil, &FakeHost::new());
        }
    }

    #[test]
    fn text_without_actions_renders_to_itself(src in "[^{]*(\\{[^{]+)*\\{?") {
        let t = Template::parse(&src).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(t.is_literal());
        prop_assert_eq!(t.render(&data(), &FakeHost::new()).ok(), Some(src));
    }
}
