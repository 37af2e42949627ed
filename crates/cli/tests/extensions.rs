//! regferry's extensions to the regsync format (`latest`, …), end to end against real
//! registries (Debian's distribution), verified with skopeo.
use regferry_testkit::cli::{ConfigFile, RunOutput, registry_config, run_regferry};
use regferry_testkit::image;
use regferry_testkit::{Content, RawClient, TestRegistry, skopeo_list_tags};

const BIN: &str = env!("CARGO_BIN_EXE_regferry");

/// One `type: repository` entry from `src/repo` to `dst/repo`, with `extra` YAML (indented
/// for the entry) after its type.
fn entry(src: &TestRegistry, dst: &TestRegistry, repo: &str, extra: &str) -> ConfigFile {
    let hosts = vec![(src.host(), None), (dst.host(), None)];
    registry_config(
        &hosts,
        "  parallel: 2\n",
        &format!(
            "  - source: {s}/{repo}\n    target: {d}/{repo}\n    type: repository\n{extra}",
            s = src.host(),
            d = dst.host()
        ),
    )
}

fn regferry(args: &[&str], c: &ConfigFile) -> RunOutput {
    run_regferry(BIN, args, c)
}

fn push(reg: &TestRegistry, repo: &str, tag: &str, content: &dyn Content) -> String {
    RawClient::for_registry(reg).push(repo, Some(tag), content)
}

/// The report of a `check --format json` (exit 3 when the target differs, 0 when not).
fn json(o: &RunOutput) -> serde_json::Value {
    assert!(o.code == 0 || o.code == 3, "{}{}", o.stdout, o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

/// The `outside_latest` references of the first entry, as tags.
fn outside_latest(report: &serde_json::Value) -> Vec<String> {
    let mut tags: Vec<String> = report["entries"][0]["outside_latest"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r.as_str().unwrap().rsplit(':').next().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

#[test]
fn latest_mirrors_a_rolling_window_of_versions_and_check_names_the_rest() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(40, 1, 100);
    for tag in [
        "0.1",
        "1.9.0",
        "1.10.0",
        "v1.10.1",
        "2.0.0-rc.1",
        "latest",
        "edge",
    ] {
        push(&src, "app", tag, &img);
    }
    // The two newest releases (numeric order, `v` and partial versions as regsync reads
    // them, prereleases denied), plus `latest` from a second set.
    let c = entry(
        &src,
        &dst,
        "app",
        "    tagSets:\n      - latest: 2\n        deny: ['.*-.*']\n      - allow: [latest]\n",
    );

    let plan = json(&regferry(&["check", "--format", "json"], &c));
    assert_eq!(outside_latest(&plan), vec!["0.1", "1.9.0"]);
    let looked_at: Vec<&str> = plan["entries"][0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap().rsplit(':').next().unwrap())
        .collect();
    assert_eq!(looked_at, vec!["1.10.0", "latest", "v1.10.1"]);
    let table = regferry(&["check"], &c);
    assert!(
        table
            .stdout
            .contains("2 tags left out by `latest` (older versions): "),
        "{}",
        table.stdout
    );

    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        skopeo_list_tags(&dst, "app"),
        vec!["1.10.0", "latest", "v1.10.1"]
    );

    // A new release moves the window: it is copied, and 1.10.0 is now outside it (kept on
    // the target, as nothing is deleted without `prune`).
    push(&src, "app", "1.11.0", &img);
    let plan = json(&regferry(&["check", "--format", "json"], &c));
    assert_eq!(outside_latest(&plan), vec!["0.1", "1.10.0", "1.9.0"]);
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        skopeo_list_tags(&dst, "app"),
        vec!["1.10.0", "1.11.0", "latest", "v1.10.1"]
    );
}

#[test]
fn a_latest_of_zero_is_refused_with_its_place() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let c = entry(&src, &dst, "app", "    tags:\n      latest: 0\n");
    let o = regferry(&["check"], &c);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("tags.latest") && o.stderr.contains("1 or more"),
        "{}",
        o.stderr
    );
}
