//! `regferry server` as an operator runs it: a real process, a real registry, the admin
//! listener, webhooks, metrics and a graceful stop.
// These tests drive a separate process from plain threads; there is no tokio runtime to
// pause, so the daemon-oriented bans on std's Instant and thread::sleep do not apply.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regferry_testkit::cli::ConfigFile;
use regferry_testkit::image;
use regferry_testkit::{RawClient, TestRegistry, skopeo_digest};

struct Server {
    child: Child,
    admin: RawClient,
    cfg: ConfigFile,
}

impl Server {
    fn start(yaml: &str, extra: &[&str]) -> Server {
        Server::start_logging_to(yaml, extra, Stdio::piped())
    }

    /// [`Server::start`], with the log going to `stderr`.
    fn start_logging_to(yaml: &str, extra: &[&str], stderr: Stdio) -> Server {
        let s = Server::spawn(yaml, extra, stderr);
        s.wait_for(|s| s.get("/readyz").0 == 200, "ready");
        s
    }

    /// Starts the server and returns as soon as it answers (its first pass may still run).
    fn start_answering(yaml: &str) -> Server {
        let s = Server::spawn(yaml, &[], Stdio::piped());
        s.wait_for(|s| s.get("/healthz").0 == 200, "answering");
        s
    }

    fn spawn(yaml: &str, extra: &[&str], stderr: Stdio) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = ConfigFile::new(yaml);
        let child = Command::new(env!("CARGO_BIN_EXE_regferry"))
            .args(["server", "-c"])
            .arg(cfg.path())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--webhook-token",
                "hook-s3cret",
                "--grace",
                "5s",
            ])
            .args(extra)
            .env("REGFERRY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let admin = RawClient::new(&format!("http://127.0.0.1:{port}"));
        Server { child, admin, cfg }
    }

    fn get(&self, path: &str) -> (u16, String) {
        match self.admin.send("GET", path, &[], &[]) {
            Ok(r) => (r.status, String::from_utf8_lossy(&r.body).into_owned()),
            Err(_) => (0, String::new()),
        }
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let r = self
            .admin
            .send("POST", path, headers, body.as_bytes())
            .unwrap();
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    fn wait_for(&self, f: impl Fn(&Server) -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (_, metrics) = self.get("/metrics");
        let runs: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("regferry_entry_runs"))
            .collect();
        panic!("timed out waiting for: {what}; runs so far: {runs:?}");
    }

    fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// SIGTERM, then the exit code and everything it logged.
    fn stop(mut self) -> (i32, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut log).unwrap();
        }
        (status.code().unwrap_or(-1), log)
    }
}

/// The tags of a repository; none when it does not exist (yet).
fn tags(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let r = RawClient::for_registry(reg)
        .send("GET", &format!("/v2/{repo}/tags/list"), &[], &[])
        .unwrap();
    if r.status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let mut t: Vec<String> = v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

impl Drop for Server {
    /// A test that fails midway must not leave its server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn yaml(src: &TestRegistry, dst: &TestRegistry, entries: &str) -> String {
    format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - {{registry: '{s}', tls: disabled}}\n  - {{registry: '{d}', tls: disabled}}\nsync:\n{entries}",
        s = src.host(),
        d = dst.host()
    )
}

/// One entry `hub` from `docker.io/team/app` to `dst/app`, run only by triggers, with
/// `extra` lines appended. The source is named like a Docker Hub repository through a creds
/// alias: `docker.io` is served by `src`, so a Docker Hub webhook payload matches it.
fn hub_yaml(src: &TestRegistry, dst: &TestRegistry, extra: &str) -> String {
    let entries = format!(
        "  - name: hub\n    source: docker.io/team/app\n    target: {}/app\n    type: repository\n    schedule: '0 0 1 1 *'\n{extra}",
        dst.host()
    );
    yaml(src, dst, &entries).replace(
        "creds:\n",
        &format!(
            "creds:\n  - {{registry: docker.io, hostname: '{}', tls: disabled}}\n",
            src.host()
        ),
    )
}

#[test]
fn server_syncs_on_its_interval_and_serves_health_and_metrics() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let one = image::image(200, 1, 100);
    let two = image::image(201, 1, 100);
    RawClient::for_registry(&src).push("app", Some("1"), &one);
    let entries = format!(
        "  - name: app\n    source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1s\n  - name: manual-only\n    source: {}/app\n    target: {}/other\n    type: repository\n",
        src.host(),
        dst.host(),
        src.host(),
        dst.host()
    );
    let s = Server::start(&yaml(&src, &dst, &entries), &[]);
    // Ready means the first (missing-only) pass is done: the tag is there.
    assert_eq!(skopeo_digest(&dst, "app:1"), one.digest());
    assert_eq!(s.get("/healthz"), (200, "ok\n".to_owned()));
    // A changed source tag is picked up by a scheduled run.
    RawClient::for_registry(&src).push("app", Some("1"), &two);
    s.wait_for(
        |_| skopeo_digest(&dst, "app:1") == two.digest(),
        "the changed tag to be copied",
    );
    s.wait_for(
        |s| {
            s.metric("regferry_entry_runs_total{entry=\"app\",result=\"success\"}")
                .unwrap_or(0.0)
                >= 2.0
        },
        "run metrics",
    );
    let (_, metrics) = s.get("/metrics");
    assert!(
        metrics.contains("regferry_entry_last_success_timestamp_seconds{entry=\"app\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("regferry_registry_requests_total{registry=\""),
        "{metrics}"
    );
    // Each registry's request limit, adaptive here (no reqConcurrent): 2 to 32.
    let limits: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("regferry_registry_concurrency{registry=\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(limits.len(), 2, "{metrics}");
    assert!(
        limits.iter().all(|n| (2.0..=32.0).contains(n)),
        "{limits:?}"
    );
    assert!(
        !metrics.contains("manual-only"),
        "an entry without interval or schedule is not run"
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("has no interval or schedule"), "{log}");
    assert!(log.contains("Server stopped"), "{log}");
}

#[test]
fn webhooks_and_manual_triggers_start_a_sync_and_bad_tokens_run_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(210, 1, 100);
    let s = Server::start(
        &hub_yaml(&src, &dst, "    tags:\n      allow: ['1\\..*']\n"),
        &[],
    );
    RawClient::for_registry(&src).push("team/app", Some("1.0"), &img);
    RawClient::for_registry(&src).push("team/app", Some("2.0"), &img);
    let writes_before = dst.writes();
    // A wrong token or a malformed body starts nothing.
    let payload = r#"{"repository":{"repo_name":"team/app"},"push_data":{"tag":"1.0"}}"#;
    assert_eq!(s.post("/v1/webhooks/dockerhub/wrong", &[], payload).0, 404);
    assert_eq!(
        s.post("/v1/webhooks/dockerhub/hook-s3cret", &[], "{not json")
            .0,
        400
    );
    assert_eq!(
        s.post(
            "/v1/webhooks/dockerhub/hook-s3cret",
            &[],
            r#"{"repository":{"repo_name":"other/app"}}"#
        )
        .0,
        404
    );
    assert_eq!(
        s.post("/v1/sync/hub", &[("Authorization", "Bearer wrong")], "")
            .0,
        401
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dst.writes(), writes_before, "nothing ran");
    // The right token: the pushed tag is synced within seconds, and only that tag.
    let (code, body) = s.post("/v1/webhooks/dockerhub/hook-s3cret", &[], payload);
    assert_eq!(code, 202, "{body}");
    s.wait_for(|_| tags(&dst, "app") == vec!["1.0"], "the pushed tag");
    // A manual trigger runs the whole entry (still filtered: 2.0 does not match).
    assert_eq!(
        s.post(
            "/v1/sync/hub",
            &[("Authorization", "Bearer hook-s3cret")],
            ""
        )
        .0,
        202
    );
    assert_eq!(
        s.post(
            "/v1/sync/nope",
            &[("Authorization", "Bearer hook-s3cret")],
            ""
        )
        .0,
        404
    );
    // The first pass failed (the repository did not exist yet); the webhook's run and the
    // manual one succeed.
    s.wait_for(
        |s| {
            s.metric("regferry_entry_runs_total{entry=\"hub\",result=\"success\"}")
                .unwrap_or(0.0)
                >= 2.0
        },
        "the runs in /metrics",
    );
    assert_eq!(tags(&dst, "app"), vec!["1.0"]);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("hook-s3cret"), "the token is never logged");
}

/// `latest` depends on every tag, so a webhook for one tag is judged against the whole
/// source listing: an old version pushed late is not copied, a new one is. A webhook's run
/// never prunes; a run of the whole entry does.
#[test]
fn a_webhook_for_a_version_outside_latest_copies_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(211, 1, 100);
    for tag in ["1.0", "2.0"] {
        RawClient::for_registry(&src).push("team/app", Some(tag), &img);
    }
    let s = Server::start(
        &hub_yaml(
            &src,
            &dst,
            "    tags:\n      latest: 1\n    prune: {maxDelete: '100%'}\n",
        ),
        &[],
    );
    s.wait_for(|_| tags(&dst, "app") == vec!["2.0"], "the first pass");
    let runs = |s: &Server| {
        s.metric("regferry_entry_runs_total{entry=\"hub\",result=\"success\"}")
            .unwrap_or(0.0)
    };
    s.wait_for(|s| runs(s) >= 1.0, "the first pass in /metrics");
    let hook = |tag: &str| {
        let payload =
            format!(r#"{{"repository":{{"repo_name":"team/app"}},"push_data":{{"tag":"{tag}"}}}}"#);
        let (code, body) = s.post("/v1/webhooks/dockerhub/hook-s3cret", &[], &payload);
        assert_eq!(code, 202, "{body}");
    };
    RawClient::for_registry(&src).push("team/app", Some("1.5"), &img);
    hook("1.5");
    s.wait_for(|s| runs(s) >= 2.0, "the webhook's run");
    assert_eq!(
        tags(&dst, "app"),
        vec!["2.0"],
        "1.5 is not among the latest"
    );
    RawClient::for_registry(&src).push("team/app", Some("3.0"), &img);
    hook("3.0");
    s.wait_for(
        |_| tags(&dst, "app") == vec!["2.0", "3.0"],
        "the new version",
    );
    s.wait_for(|s| runs(s) >= 3.0, "the second webhook's run");
    assert_eq!(
        tags(&dst, "app"),
        vec!["2.0", "3.0"],
        "a webhook never prunes"
    );
    let trigger = s.post(
        "/v1/sync/hub",
        &[("Authorization", "Bearer hook-s3cret")],
        "",
    );
    assert_eq!(trigger.0, 202, "{}", trigger.1);
    s.wait_for(
        |_| tags(&dst, "app") == vec!["3.0"],
        "the whole entry's run to prune 2.0",
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// A webhook with the right token but hostile names (a tag or repository that would leave
/// the entry's repository in a URL) is refused before anything runs.
#[test]
fn a_webhook_with_hostile_names_writes_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(212, 1, 100);
    RawClient::for_registry(&src).push("team/app", Some("1"), &img);
    RawClient::for_registry(&dst).push("victim", Some("v1"), &img);
    // No tag filters: before names were checked, any tag string reached the URL.
    let s = Server::start(&hub_yaml(&src, &dst, ""), &[]);
    let writes_before = dst.writes();
    for payload in [
        r#"{"repository":{"repo_name":"team/app"},"push_data":{"tag":"../../../victim/manifests/v1"}}"#,
        r#"{"repository":{"repo_name":"team/app"},"push_data":{"tag":"..%2f..%2fvictim"}}"#,
        r#"{"repository":{"repo_name":"team/app/../../victim"},"push_data":{"tag":"1"}}"#,
    ] {
        let (code, body) = s.post("/v1/webhooks/dockerhub/hook-s3cret", &[], payload);
        assert_eq!(code, 400, "{payload}: {body}");
        assert!(body.contains("not a valid"), "{body}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dst.writes(), writes_before, "nothing ran");
    assert_eq!(
        skopeo_digest(&dst, "victim:v1"),
        img.digest(),
        "the victim tag is untouched"
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn sigterm_mid_copy_leaves_a_consistent_target_and_exits_0() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    for i in 0..6 {
        RawClient::for_registry(&src).push(
            "app",
            Some(&format!("{i}")),
            &image::image(220 + i, 2, 200_000),
        );
    }
    // Slow blob reads keep copies in flight past the grace period.
    let proxy = regferry_testkit::FaultProxy::start(&src);
    proxy.add_rule(regferry_testkit::Rule::new(
        "GET",
        "/blobs/",
        regferry_testkit::Action::Delay(Duration::from_secs(4)),
    ));
    let entries = format!(
        "  - source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1h\n",
        proxy.host(),
        dst.host()
    );
    let text = yaml(&src, &dst, &entries).replace(
        "creds:\n",
        &format!(
            "creds:\n  - {{registry: '{}', tls: disabled}}\n",
            proxy.host()
        ),
    );
    let cfg = ConfigFile::new(&text);
    let mut child = Command::new(env!("CARGO_BIN_EXE_regferry"))
        .args(["server", "--grace", "1s", "-c"])
        .arg(cfg.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stop comes while a blob read is held in the proxy's delay: a copy is in flight
    // for longer than the grace period, however many reads go at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.arrived("GET", "/blobs/") == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(proxy.arrived("GET", "/blobs/") > 0, "a copy started");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("Grace period over"),
        "copies were cancelled after the grace period: {log}"
    );
    // Every tag that exists is complete: its manifest and every blob it names are there.
    let present = tags(&dst, "app");
    assert!(
        present.len() < 6,
        "the stop came before every tag was copied: {present:?}"
    );
    let client = RawClient::for_registry(&dst);
    for tag in present {
        let raw = regferry_testkit::skopeo_inspect_raw(&dst, &format!("app:{tag}"));
        let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        for d in std::iter::once(&m["config"]).chain(m["layers"].as_array().unwrap()) {
            let digest = d["digest"].as_str().unwrap();
            let head = client
                .send("HEAD", &format!("/v2/app/blobs/{digest}"), &[], &[])
                .unwrap();
            assert_eq!(
                head.status, 200,
                "tag {tag} names blob {digest}, which must exist"
            );
        }
    }
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_broken() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("a", Some("1"), &image::image(230, 1, 100));
    RawClient::for_registry(&src).push("b", Some("1"), &image::image(231, 1, 100));
    let entry = |repo: &str| {
        format!(
            "  - name: {repo}\n    source: {}/{repo}\n    target: {}/{repo}\n    type: repository\n    interval: 1h\n",
            src.host(),
            dst.host()
        )
    };
    let s = Server::start(&yaml(&src, &dst, &entry("a")), &[]);
    assert_eq!(tags(&dst, "a"), vec!["1"]);
    let hup = |s: &Server| {
        assert!(
            Command::new("kill")
                .args(["-HUP", &s.child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    // A broken file: the server keeps running the old configuration.
    std::fs::write(s.cfg.path(), "sync: [this is: not valid\n").unwrap();
    hup(&s);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.get("/healthz").0, 200, "still alive");
    assert_eq!(
        s.post("/v1/sync/a", &[("Authorization", "Bearer hook-s3cret")], "")
            .0,
        202,
        "the old entry is still scheduled"
    );
    // A valid file adding an entry: the new entry runs at once.
    std::fs::write(
        s.cfg.path(),
        yaml(&src, &dst, &format!("{}{}", entry("a"), entry("b"))),
    )
    .unwrap();
    hup(&s);
    s.wait_for(
        |_| tags(&dst, "b") == vec!["1"],
        "the new entry to run after the reload",
    );
    // The admin API reloads too, and reports a broken file.
    std::fs::write(s.cfg.path(), "version: 7\n").unwrap();
    let (code, body) = s.post("/v1/reload", &[("Authorization", "Bearer hook-s3cret")], "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("unsupported config version 7"), "{body}");
    assert_eq!(s.post("/v1/reload", &[], "").0, 401);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Reload failed"), "{log}");
    assert!(log.contains("Configuration reloaded"), "{log}");
}

#[test]
fn three_shards_copy_every_tag_exactly_once() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(240, 1, 100);
    let mut entries = String::new();
    for i in 0..6 {
        let repo = format!("solo{i}");
        RawClient::for_registry(&src).push(&repo, Some("1"), &img);
        entries.push_str(&format!("  - name: {repo}\n    source: {}/{repo}\n    target: {}/{repo}\n    type: repository\n    interval: 1h\n", src.host(), dst.host()));
    }
    for i in 0..9 {
        RawClient::for_registry(&src).push(&format!("team/r{i}"), Some("1"), &img);
    }
    entries.push_str(&format!(
        "  - source: {}\n    target: {}/mirror\n    type: registry\n    interval: 1h\n    repos:\n      allow: ['team/.*']\n",
        src.host(),
        dst.host()
    ));
    let text = yaml(&src, &dst, &entries);
    let servers: Vec<Server> = (0..3)
        .map(|i| Server::start(&text, &["--shard", &format!("{i}/3")]))
        .collect();
    // Every replica is ready: each finished its share of the first pass.
    let puts: Vec<String> = dst
        .access_log()
        .into_iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/manifests/1"))
        .map(|e| e.path)
        .collect();
    let mut unique = puts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 15, "every tag copied: {unique:?}");
    assert_eq!(puts.len(), 15, "and each exactly once: {puts:?}");
    // A manual trigger sent to the wrong replica says which one owns the entry.
    let auth = [("Authorization", "Bearer hook-s3cret")];
    for i in 0..6 {
        let answers: Vec<(u16, String)> = servers
            .iter()
            .map(|s| s.post(&format!("/v1/sync/solo{i}"), &auth, ""))
            .collect();
        let owner = answers
            .iter()
            .position(|(code, _)| *code == 202)
            .unwrap_or_else(|| panic!("solo{i}: no owner: {answers:?}"));
        for (j, (code, body)) in answers.iter().enumerate() {
            if j != owner {
                assert_eq!(*code, 421, "solo{i} on shard {j}: {body}");
                assert!(
                    body.contains(&format!("shard {owner}")),
                    "solo{i} on shard {j} names the owner {owner}: {body}"
                );
            }
        }
    }
    for s in servers {
        assert_eq!(s.stop().0, 0);
    }
}

#[test]
fn failed_runs_keep_the_server_running_unless_abort_on_error() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("good", Some("1"), &image::image(250, 1, 100));
    let entries = format!(
        "  - name: broken\n    source: {s}/missing\n    target: {d}/missing\n    type: repository\n    interval: 1h\n  - name: good\n    source: {s}/good\n    target: {d}/good\n    type: repository\n    interval: 1h\n",
        s = src.host(),
        d = dst.host()
    );
    // Without --abort-on-error: the failure is counted, the other entry is synced, the
    // server stays up and exits 0 on SIGTERM.
    let s = Server::start(&yaml(&src, &dst, &entries), &[]);
    assert_eq!(tags(&dst, "good"), vec!["1"]);
    assert_eq!(
        s.metric("regferry_entry_runs_total{entry=\"broken\",result=\"failure\"}"),
        Some(1.0)
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
    // With it: the server stops on its own after the failed first pass, with exit 1.
    let cfg = ConfigFile::new(&yaml(&src, &dst, &entries));
    let mut child = Command::new(env!("CARGO_BIN_EXE_regferry"))
        .args(["server", "--abort-on-error", "-c"])
        .arg(cfg.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the server should stop by itself"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
}

#[test]
fn the_webhook_token_can_come_from_a_file() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let cfg = ConfigFile::new(&yaml(&src, &dst, "  []\n").replace("sync:\n  []\n", "sync: []\n"));
    let dir = regferry_testkit::temp_dir();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-a-file\n").unwrap();
    // An unreadable file is refused up front, naming it, with exit 2.
    let o = Command::new(env!("CARGO_BIN_EXE_regferry"))
        .args(["server", "--webhook-token-file", "/nonexistent/token", "-c"])
        .arg(cfg.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/token"));
    // A readable one is the token: the bearer from the file is accepted (404: no such
    // entry), a wrong one is not (401).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regferry"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--webhook-token-file",
        ])
        .arg(&token)
        .arg("-c")
        .arg(cfg.path())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let admin = RawClient::new(&format!("http://127.0.0.1:{port}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin
        .send("GET", "/readyz", &[], &[])
        .map(|r| r.status)
        .unwrap_or(0)
        != 200
    {
        assert!(Instant::now() < deadline, "server did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let post = |bearer: &str| {
        admin
            .send(
                "POST",
                "/v1/sync/x",
                &[("Authorization", &format!("Bearer {bearer}"))],
                &[],
            )
            .unwrap()
            .status
    };
    assert_eq!(post("from-a-file"), 404);
    assert_eq!(post("wrong"), 401);
    let _ = child.kill();
    let _ = child.wait();
}

/// A log reader that goes away (a restarted journald, a dead log shipper) takes nothing
/// down: the server goes on syncing and answering, and stops cleanly.
#[test]
fn a_closed_log_stream_never_stops_the_server() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let one = image::image(260, 1, 100);
    let two = image::image(261, 1, 100);
    RawClient::for_registry(&src).push("app", Some("1"), &one);
    let entries = format!(
        "  - name: app\n    source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1s\n",
        src.host(),
        dst.host(),
    );
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let s = Server::start_logging_to(&yaml(&src, &dst, &entries), &[], Stdio::from(writer));
    assert_eq!(skopeo_digest(&dst, "app:1"), one.digest());
    RawClient::for_registry(&src).push("app", Some("1"), &two);
    s.wait_for(
        |_| skopeo_digest(&dst, "app:1") == two.digest(),
        "the changed tag to be copied with nobody reading the log",
    );
    assert_eq!(s.get("/healthz").0, 200);
    let (code, _) = s.stop();
    assert_eq!(code, 0);
}

/// A trigger or a reload sent during the first pass waits for the pass to end (bounded),
/// as the docs promise, instead of a 503 that a CI job would have to retry.
#[test]
fn triggers_during_the_first_pass_wait_for_it() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(262, 1, 100));
    // The source answers slowly: the first pass takes a few seconds.
    let proxy = regferry_testkit::FaultProxy::start(&src);
    proxy.add_rule(regferry_testkit::Rule::new(
        "GET",
        "/tags/list",
        regferry_testkit::Action::Delay(Duration::from_secs(3)),
    ));
    let entries = format!(
        "  - name: app\n    source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1h\n",
        proxy.host(),
        dst.host(),
    );
    let mut yaml = yaml(&src, &dst, &entries);
    yaml = yaml.replace(
        "creds:\n",
        &format!(
            "creds:\n  - registry: {}\n    tls: disabled\n",
            proxy.host()
        ),
    );
    let s = Server::start_answering(&yaml);
    assert_eq!(s.get("/readyz").0, 503, "still in the first pass");
    let auth = [("Authorization", "Bearer hook-s3cret")];
    let (code, body) = s.post("/v1/sync/app", &auth, "");
    assert_eq!(code, 202, "{body}");
    assert_eq!(s.get("/readyz").0, 200, "answered when the pass had ended");
    let (code, body) = s.post("/v1/reload", &auth, "");
    assert_eq!(code, 200, "{body}");
    // A wrong token is refused at once, without waiting for anything.
    let (code, _) = s.post("/v1/sync/app", &[("Authorization", "Bearer nope")], "");
    assert_eq!(code, 401);
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// Requests as (method, path).
type Requests = Vec<(String, String)>;

/// Requests in `reg`'s access log from index `from` on.
fn requests_since(reg: &TestRegistry, from: usize) -> Requests {
    reg.access_log()
        .into_iter()
        .skip(from)
        .map(|e| (e.method, e.path))
        .collect()
}

/// Successful runs of entry `app` so far (the first pass counts).
fn app_runs(s: &Server) -> u64 {
    s.metric("regferry_entry_runs_total{entry=\"app\",result=\"success\"}")
        .unwrap_or(0.0) as u64
}

/// Waits for the first scheduled run of entry `app` after the first pass (which reads
/// both sides in full), then for two more; returns the requests `src` and `dst` saw
/// meanwhile, and how many runs that was.
fn requests_of_two_runs(
    s: &Server,
    src: &TestRegistry,
    dst: &TestRegistry,
) -> (Requests, Requests, u64) {
    s.wait_for(|s| app_runs(s) >= 2, "a full scheduled run");
    let (at_src, at_dst) = (src.access_log().len(), dst.access_log().len());
    let before = app_runs(s);
    s.wait_for(|s| app_runs(s) >= before + 2, "two more scheduled runs");
    let runs = app_runs(s) - before;
    (
        requests_since(src, at_src),
        requests_since(dst, at_dst),
        runs,
    )
}

/// In steady state a scheduled run reads the source alone: one HEAD per tag and one tag
/// list, nothing on the target, which the last clean run has seen. A trigger reads both.
#[test]
fn scheduled_no_op_runs_read_the_source_alone() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let client = RawClient::for_registry(&src);
    let images: Vec<_> = (0..3).map(|i| image::image(300 + i, 1, 100)).collect();
    for (i, img) in images.iter().enumerate() {
        client.push("app", Some(&(i + 1).to_string()), img);
    }
    let sbom = image::sbom(&images[0].descriptor(), 1);
    client.publish_referrers("app", &images[0].digest(), &[&sbom]);
    let entries = format!(
        "  - name: app\n    source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1s\n    referrers: true\n",
        src.host(),
        dst.host()
    );
    let s = Server::start(&yaml(&src, &dst, &entries), &[]);
    let (from_src, from_dst, seen_runs) = requests_of_two_runs(&s, &src, &dst);
    // Each run: the tag list, and a HEAD of each tag: 1, 2, 3 and the SBOM's sha256-<hex>
    // referrers index (compared, not copied, when unchanged). A run may have started
    // between the counts: at most one more.
    let lists = from_src
        .iter()
        .filter(|(m, p)| m == "GET" && p.ends_with("/tags/list"))
        .count();
    let heads = from_src.iter().filter(|(m, _)| m == "HEAD").count();
    assert!(
        lists as u64 >= seen_runs && lists as u64 <= seen_runs + 1,
        "{seen_runs} runs, {lists} listings: {from_src:?}"
    );
    assert_eq!(heads, 4 * lists, "one HEAD per tag: {from_src:?}");
    assert_eq!(
        from_src.len(),
        lists + heads,
        "nothing else on the source: {from_src:?}"
    );
    assert!(from_dst.is_empty(), "nothing on the target: {from_dst:?}");

    // A manual trigger never trusts the memory: it reads the target.
    let at_dst = dst.access_log().len();
    let (code, _) = s.post(
        "/v1/sync/app",
        &[("Authorization", "Bearer hook-s3cret")],
        "",
    );
    assert_eq!(code, 202);
    s.wait_for(
        |_| {
            requests_since(&dst, at_dst)
                .iter()
                .any(|(m, p)| m == "GET" && p.ends_with("/tags/list"))
        },
        "the triggered run to list the target",
    );
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// `targetRecheck: 0s`: every scheduled run reads the target too.
#[test]
fn target_recheck_zero_reads_the_target_every_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(310, 1, 100));
    let entries = format!(
        "  - name: app\n    source: {}/app\n    target: {}/app\n    type: repository\n    interval: 1s\n",
        src.host(),
        dst.host()
    );
    let yaml =
        yaml(&src, &dst, &entries).replace("defaults:\n", "defaults:\n  targetRecheck: 0s\n");
    let s = Server::start(&yaml, &[]);
    let (_, from_dst, _) = requests_of_two_runs(&s, &src, &dst);
    let lists = from_dst
        .iter()
        .filter(|(m, p)| m == "GET" && p.ends_with("/tags/list"))
        .count();
    assert!(lists >= 2, "the target listed each run: {lists}");
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}

/// With `targets`, a steady-state scheduled run still reads the source once for all of
/// them (one tag list, one HEAD per tag), and nothing on any target.
#[test]
fn scheduled_no_op_runs_of_several_targets_read_the_source_once_for_all() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let client = RawClient::for_registry(&src);
    for i in 0..3 {
        client.push(
            "app",
            Some(&(i + 1).to_string()),
            &image::image(320 + i, 1, 100),
        );
    }
    let entries = format!(
        "  - name: app\n    source: {s}/app\n    targets: [{d}/a/app, {d}/b/app]\n    type: repository\n    interval: 1s\n",
        s = src.host(),
        d = dst.host()
    );
    let s = Server::start(&yaml(&src, &dst, &entries), &[]);
    let (from_src, from_dst, _) = requests_of_two_runs(&s, &src, &dst);
    let lists = from_src
        .iter()
        .filter(|(m, p)| m == "GET" && p.ends_with("/tags/list"))
        .count();
    let heads = from_src.iter().filter(|(m, _)| m == "HEAD").count();
    assert!(lists >= 2, "{from_src:?}");
    assert_eq!(
        heads,
        3 * lists,
        "one HEAD per tag for both targets: {from_src:?}"
    );
    assert_eq!(from_src.len(), lists + heads, "nothing else: {from_src:?}");
    assert!(from_dst.is_empty(), "nothing on the targets: {from_dst:?}");
    for repo in ["a/app", "b/app"] {
        assert_eq!(tags(&dst, repo), vec!["1", "2", "3"], "{repo}");
    }
    let (code, log) = s.stop();
    assert_eq!(code, 0, "{log}");
}
