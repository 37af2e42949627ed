//! A 429 is about the registry, not the one request: after it, every request to that
//! registry waits out `Retry-After`, not only the one that got it. Against a real registry
//! behind the fault proxy. Only lower bounds on time are asserted: a wait that happened
//! cannot have been shorter, however busy the machine.
use std::time::Duration;

use regferry_registry::http::{HostOptions, RegistryClient, TlsMode};
use regferry_testkit::image;
use regferry_testkit::{Action, FaultProxy, RawClient, Rule, TestRegistry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_429_other_requests_to_the_registry_wait_too() {
    let reg = TestRegistry::start();
    let img = image::image(71, 1, 100);
    RawClient::for_registry(&reg).push("app", Some("1"), &img);
    RawClient::for_registry(&reg).push("other", Some("1"), &img);
    let proxy = FaultProxy::start(&reg);
    proxy.add_rule(
        Rule::new(
            "GET",
            "/v2/app/tags/list",
            Action::respond(429, &[("Retry-After", "2")]),
        )
        .times(1),
    );
    let mut opts = HostOptions::new(&proxy.host());
    opts.tls = TlsMode::Disabled;
    let client = RegistryClient::new(opts).expect("client");

    let started = tokio::time::Instant::now();
    let lister = {
        let client = client.clone();
        tokio::spawn(async move { client.list_tags("app").await })
    };
    // Wait until the client has had the 429, then ask something else of the same registry.
    while client.stats().rate_limited() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let head = client
        .head_manifest("other", "1")
        .await
        .expect("HEAD after the pause");
    let head_done = started.elapsed();
    assert_eq!(
        head.expect("manifest exists").digest.to_string(),
        img.digest()
    );
    let tags = lister.await.expect("task").expect("tags after the pause");
    assert_eq!(tags, vec!["1".to_owned()]);
    assert!(
        head_done >= Duration::from_millis(1900),
        "the other request waited for the registry's pause: {head_done:?}"
    );
    let other: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/other/"))
        .collect();
    assert_eq!(
        other.len(),
        1,
        "no request was sent during the pause and refused: {other:?}"
    );
    assert_eq!(other[0].status, 200);
}
