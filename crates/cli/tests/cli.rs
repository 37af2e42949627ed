//! The `regferry` binary as a user runs it: exit codes, golden output, errors on stderr.
use std::path::Path;

use assert_cmd::Command;
use regferry_testkit::{assert_golden, fixture};

fn regferry() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_regferry"));
    c.env_remove("REGFERRY_CONFIG").env_remove("REGFERRY_LOG");
    c
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("run regferry");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn config_full(args: &[&str]) -> Out {
    run(regferry()
        .current_dir(fixture("config"))
        .env("REGFERRY_TEST_USER", "robot$mirror")
        .args(args))
}

#[test]
fn config_prints_the_resolved_config_with_secrets_masked() {
    let o = config_full(&["config", "-c", "full.yaml"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_golden("config-full.yaml", &o.stdout);
    for secret in ["s3cret-from-file", "hubpass"] {
        assert!(!o.stdout.contains(secret), "secret {secret} printed");
        assert!(!o.stderr.contains(secret), "secret {secret} logged");
    }
    assert!(
        o.stdout.contains("pass: '***'") || o.stdout.contains("pass: \"***\""),
        "{}",
        o.stdout
    );
}

#[test]
fn config_flag_goes_before_or_after_the_subcommand_or_reads_stdin() {
    let after = config_full(&["config", "-c", "full.yaml"]);
    let before = config_full(&["-c", "full.yaml", "config"]);
    assert_eq!(after.code, 0);
    assert_eq!(after.stdout, before.stdout);
    let text = std::fs::read_to_string(fixture("config/full.yaml")).unwrap();
    let stdin = run(regferry()
        .current_dir(fixture("config"))
        .env("REGFERRY_TEST_USER", "robot$mirror")
        .args(["config", "-c", "-"])
        .write_stdin(text));
    assert_eq!(stdin.code, 0, "{}", stdin.stderr);
    assert_eq!(stdin.stdout, after.stdout);
}

#[test]
fn every_bad_config_exits_2_with_its_place_and_no_panic() {
    let dir = fixture("config/bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for sub in ["check", "once", "server", "config"] {
            let o = run(regferry().current_dir(&dir).args([sub, "-c", &name]));
            assert_eq!(o.code, 2, "{sub} {name}: exit {}\n{}", o.code, o.stderr);
            assert!(
                o.stdout.is_empty(),
                "{sub} {name}: wrote to stdout: {}",
                o.stdout
            );
            assert!(o.stderr.contains(&name), "{sub} {name}: {}", o.stderr);
            assert!(!o.stderr.contains("panicked"), "{sub} {name}: {}", o.stderr);
            for want in text.lines().filter_map(|l| l.strip_prefix("# expect: ")) {
                assert!(
                    o.stderr.contains(want),
                    "{sub} {name}: stderr lacks {want:?}:\n{}",
                    o.stderr
                );
            }
        }
        n += 1;
    }
    assert!(n >= 15);
}

#[test]
fn missing_config_flag_and_missing_file_exit_2() {
    let o = run(regferry().arg("check"));
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("--config FILE is required"),
        "{}",
        o.stderr
    );
    let o = run(regferry().args(["once", "-c", "/nonexistent/regsync.yaml"]));
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("/nonexistent/regsync.yaml: cannot read"),
        "{}",
        o.stderr
    );
    let o = run(regferry().args(["once", "--bogus-flag"]));
    assert_eq!(o.code, 2, "clap usage errors are exit 2 too");
}

#[test]
fn warnings_are_logged_with_the_key_and_entry_and_json_logs_are_json() {
    let dir = regferry_testkit::temp_dir();
    let path = dir.path().join("w.yaml");
    std::fs::write(
        &path,
        "sync:\n- source: busybox\n  target: localhost:5000/busybox\n  type: image\n  fastChek: true\n",
    )
    .unwrap();
    let o = run(regferry().args(["config", "-c"]).arg(&path));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("WARN"), "{}", o.stderr);
    assert!(
        o.stderr.contains("sync[0] (source \\\"busybox\\\")")
            || o.stderr.contains("sync[0] (source \"busybox\")"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("fastChek"), "{}", o.stderr);
    let o = run(regferry()
        .args(["config", "--logopt", "json", "-c"])
        .arg(&path));
    assert_eq!(o.code, 0);
    let line = o
        .stderr
        .lines()
        .find(|l| l.contains("fastChek"))
        .expect("a warning line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "WARN");
    // -v error hides warnings.
    let o = run(regferry().args(["config", "-v", "error", "-c"]).arg(&path));
    assert!(!o.stderr.contains("fastChek"), "{}", o.stderr);
}

/// The demo config's source, mirrored into a temporary layout: `check` reports drift
/// (exit 3) and writes nothing, `once` copies, then `check` is clean (exit 0).
#[test]
fn demo_layout_syncs_and_check_tells_drift_from_in_sync() {
    let root = regferry_testkit::workspace_root();
    let dir = regferry_testkit::temp_dir();
    let target = dir.path().join("layout");
    let cfg = demo_config(dir.path());
    let o = run(regferry().args(["check", "-c"]).arg(&cfg));
    assert_eq!(o.code, 3, "drift is exit 3\n{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("missing (would copy)"), "{}", o.stdout);
    assert!(!target.exists(), "check must not write");
    let o = run(regferry().args(["once", "-c"]).arg(&cfg));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("5 copied"), "{}", o.stdout);
    // Every tag is byte-identical, read back by an independent tool when it is installed.
    let src_index = std::fs::read_to_string(root.join("config/demo-layout/index.json")).unwrap();
    for tag in ["v1.0", "v1.1", "v1.2"] {
        assert!(src_index.contains(tag));
        let dst = std::fs::read_to_string(target.join("index.json")).unwrap();
        assert!(dst.contains(tag), "{tag} missing in target index.json");
    }
    let o = run(regferry()
        .args(["check", "--format", "json", "-c"])
        .arg(&cfg));
    assert_eq!(o.code, 0, "in sync is exit 0\n{}{}", o.stdout, o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let states: Vec<&str> = v["entries"][0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["up-to-date"; 5]);
}

#[test]
fn version_names_version_commit_and_target() {
    let o = run(regferry().arg("version"));
    assert_eq!(o.code, 0);
    assert!(
        o.stdout
            .starts_with(&format!("regferry {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("commit:"), "{}", o.stdout);
    assert!(o.stdout.contains("linux"), "target triple: {}", o.stdout);
    let o = run(regferry().args(["version", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].as_str().is_some_and(|c| !c.is_empty()));
}

#[test]
fn help_is_golden_and_completions_are_generated() {
    let o = run(regferry().arg("--help"));
    assert_eq!(o.code, 0);
    assert_golden("help.txt", &o.stdout);
    for shell in ["bash", "zsh", "fish"] {
        let o = run(regferry().args(["completion", shell]));
        assert_eq!(o.code, 0, "{shell}");
        assert!(
            o.stdout.contains("regferry") && o.stdout.contains("once"),
            "{shell}"
        );
    }
    // Flags that mean nothing to a command are not offered by its help (still accepted).
    for cmd in ["version", "completion"] {
        let o = run(regferry().args([cmd, "--help"]));
        for flag in ["--config", "--verbosity", "--logopt"] {
            assert!(
                !o.stdout.contains(flag),
                "{cmd} --help offers {flag}:\n{}",
                o.stdout
            );
        }
    }
    assert_eq!(run(regferry().args(["version", "-c", "x.yaml"])).code, 0);
    let o = run(regferry().args(["check", "--help"]));
    assert!(o.stdout.contains("--config"), "{}", o.stdout);
}

#[test]
fn example_configs_all_load() {
    let dir = regferry_testkit::workspace_root().join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let o = run(regferry()
                .args(["config", "-c"])
                .arg(&path)
                .current_dir(Path::new(&dir).parent().unwrap()));
            assert_eq!(o.code, 0, "{}: {}", path.display(), o.stderr);
            n += 1;
        }
    }
    assert!(
        n >= 2,
        "config/ should hold the demo and an example regsync config"
    );
}

/// A demo config copying the repository's demo layout into `dir/layout`.
fn demo_config(dir: &Path) -> std::path::PathBuf {
    let demo = regferry_testkit::workspace_root().join("config/demo-layout");
    layout_config(dir, &demo, &dir.join("layout"))
}

/// `dir/c.yaml`: one `repository` entry from the layout `source` to the layout `target`.
fn layout_config(dir: &Path, source: &Path, target: &Path) -> std::path::PathBuf {
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "defaults: {{skipDockerConfig: true}}\nsync:\n- source: ocidir://{}\n  target: ocidir://{}\n  type: repository\n",
            source.display(),
            target.display()
        ),
    )
    .unwrap();
    cfg
}

/// Runs regferry with standard output and/or standard error going to a pipe whose reader
/// has gone (`| head -1` after head exits; a log shipper that died). Returns the exit code
/// and what the other stream, when kept, received.
fn run_into_closed_pipes(args: &[&str], close_stdout: bool, close_stderr: bool) -> (i32, String) {
    use std::process::Stdio;
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_regferry"));
    cmd.args(args).env_remove("REGFERRY_LOG");
    cmd.stdout(if close_stdout {
        closed()
    } else {
        Stdio::piped()
    });
    cmd.stderr(if close_stderr {
        closed()
    } else {
        Stdio::piped()
    });
    let o = cmd.output().unwrap();
    let kept = if close_stdout { &o.stderr } else { &o.stdout };
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(kept).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_a_printing_command_quietly() {
    let dir = regferry_testkit::temp_dir();
    let cfg = demo_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    for args in [
        &["version"][..],
        &["completion", "bash"],
        &["config", "-c", cfg],
    ] {
        let (code, stderr) = run_into_closed_pipes(args, true, false);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?} says nothing about the pipe");
    }
}

#[test]
fn closed_output_never_stops_a_sync() {
    let dir = regferry_testkit::temp_dir();
    let cfg = demo_config(dir.path());
    let cfg = cfg.to_str().unwrap();
    // Logs (-v) and the table both go nowhere; the work and the exit code are the same.
    let (code, _) = run_into_closed_pipes(&["check", "-v", "info", "-c", cfg], true, true);
    assert_eq!(code, 3, "check still reports drift");
    let (code, _) = run_into_closed_pipes(&["once", "-v", "info", "-c", cfg], true, true);
    assert_eq!(code, 0);
    let index = std::fs::read_to_string(dir.path().join("layout/index.json")).unwrap();
    for tag in ["v1.0", "v1.1", "v1.2"] {
        assert!(index.contains(tag), "{tag} was copied: {index}");
    }
    let (code, stdout) = run_into_closed_pipes(&["check", "-v", "info", "-c", cfg], false, true);
    assert_eq!(code, 0, "in sync: {stdout}");
}

#[test]
fn logs_carry_no_colour_codes_off_a_terminal() {
    let dir = regferry_testkit::temp_dir();
    let cfg = demo_config(dir.path());
    let o = run(regferry().args(["check", "-v", "info", "-c"]).arg(&cfg));
    assert!(o.stderr.contains("INFO"), "{}", o.stderr);
    assert!(!o.stderr.contains('\u{1b}'), "{}", o.stderr);
}

#[test]
fn a_missing_layout_source_is_a_failure_naming_its_path() {
    let dir = regferry_testkit::temp_dir();
    let gone = dir.path().join("no-such-layout");
    let cfg = layout_config(dir.path(), &gone, &dir.path().join("out"));
    for cmd in ["check", "once"] {
        let o = run(regferry().args([cmd, "-c"]).arg(&cfg));
        assert_eq!(o.code, 1, "{cmd}: {}{}", o.stdout, o.stderr);
        let all = format!("{}{}", o.stdout, o.stderr);
        assert!(all.contains(&gone.display().to_string()), "{cmd}: {all}");
        assert!(!all.contains("No tags matched"), "{cmd}: {all}");
    }
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn an_up_to_date_entry_says_nothing_is_missing_not_that_no_tag_matched() {
    let dir = regferry_testkit::temp_dir();
    let cfg = demo_config(dir.path());
    let o = run(regferry().args(["once", "-c"]).arg(&cfg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(regferry()
        .args(["once", "--missing", "-v", "info", "-c"])
        .arg(&cfg));
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stderr.contains("No tags matched"), "{}", o.stderr);
    assert!(o.stderr.contains("Nothing missing"), "{}", o.stderr);
    assert!(!o.stderr.contains("WARN"), "{}", o.stderr);
}

/// A bad `--shard` (as Kubernetes renders `$(POD_INDEX)/3` without the label) is a command
/// line error: exit 2, naming the flag, so `RestartPreventExitStatus=2` stops the loop.
#[test]
fn a_bad_shard_exits_2_naming_the_flag() {
    let dir = regferry_testkit::temp_dir();
    let cfg = demo_config(dir.path());
    for (how, value) in [
        ("flag", "/3"),
        ("flag", "3/3"),
        ("env", "/3"),
        ("flag", "a/b"),
    ] {
        let mut cmd = regferry();
        cmd.args(["server", "-c"]).arg(&cfg);
        if how == "flag" {
            cmd.args(["--shard", value]);
        } else {
            cmd.env("REGFERRY_SHARD", value);
        }
        let o = run(&mut cmd);
        assert_eq!(o.code, 2, "{how} {value}: {}", o.stderr);
        assert!(o.stderr.contains("--shard"), "{how} {value}: {}", o.stderr);
        assert!(!o.stderr.contains("cannot parse integer"), "{}", o.stderr);
    }
}
