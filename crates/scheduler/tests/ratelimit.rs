//! regsync's `ratelimit`: while the source reports fewer pulls left than `min`, a copy waits
//! `retry` and asks again with a HEAD (which Docker Hub does not count as a pull). Against a
//! real registry behind the fault proxy, which adds Docker Hub's `RateLimit-*` headers.
//! The engine is driven in-process, because the config floor for `retry` (5m, as regsync)
//! is too long for a test; the wait itself is the engine's, not the loader's.
use std::sync::Arc;
use std::time::Duration;

use regferry_config::template::SystemHost;
use regferry_scheduler::{Engine, Mode, RunOptions, State};
use regferry_testkit::image;
use regferry_testkit::{Action, FaultProxy, RawClient, Rule, TestRegistry, skopeo_digest};

fn limit_headers(remaining: u64) -> Action {
    Action::AddHeaders(vec![
        ("RateLimit-Limit".into(), "100;w=21600".into()),
        ("RateLimit-Remaining".into(), format!("{remaining};w=21600")),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waits_while_the_source_reports_too_few_pulls_left() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(70, 2, 1000);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let proxy = FaultProxy::start(&src);
    // Two answers say 3 pulls left (below min: 10); the third says nothing, as a registry
    // without limits.
    proxy.add_rule(Rule::new("HEAD", "/manifests/1", limit_headers(3)).times(2));
    let yaml = format!(
        "creds:\n  - registry: {p}\n    tls: disabled\n  - registry: {d}\n    tls: disabled\n\
         defaults:\n  skipDockerConfig: true\n  ratelimit:\n    min: 10\n    retry: 5m\n\
         sync:\n  - source: {p}/app\n    target: {d}/app\n    type: repository\n",
        p = proxy.host(),
        d = dst.host()
    );
    let mut config = regferry_config::load_str(&yaml, "ratelimit.yaml", &SystemHost)
        .expect("config loads")
        .config;
    assert_eq!(config.sync[0].ratelimit.min, 10);
    config.sync[0].ratelimit.retry = Duration::from_millis(200);
    let engine = Engine::new(Arc::new(config));

    let started = tokio::time::Instant::now();
    let report = engine
        .run(RunOptions {
            mode: Mode::Copy {
                missing_only: false,
            },
            abort_on_error: false,
            trust_target: false,
        })
        .await;
    let waited = started.elapsed();

    assert_eq!(report.failures(), 0, "{report:#?}");
    let tag = &report.entries[0].tags[0];
    assert_eq!(tag.state, State::Missing, "{tag:#?}");
    assert!(tag.copied, "{tag:#?}");
    assert_eq!(skopeo_digest(&dst, "app:1"), img.digest());
    // The deciding HEAD, then one more after each wait: the second still low, the third clear.
    let requests = proxy.requests();
    let heads: Vec<usize> = requests
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method == "HEAD" && r.path.ends_with("/manifests/1"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(heads.len(), 3, "{requests:#?}");
    // Nothing was pulled before the limit cleared.
    let first_pull = requests
        .iter()
        .position(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .expect("the manifest was read");
    assert!(first_pull > heads[2], "pulled while limited: {requests:#?}");
    // Each wait lasts at least a second (the engine's own floor).
    assert!(waited >= Duration::from_secs(2), "waited only {waited:?}");
}
