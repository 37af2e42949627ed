//! How many requests go to a registry at once: without `reqConcurrent` a limit that grows
//! while the registry keeps up and backs off when it refuses; with it, a hard limit.
//! Against a real registry, behind the fault proxy that delays or refuses requests and
//! counts how many were in flight at once.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use regferry_registry::http::{HostOptions, RegistryClient, TlsMode};
use regferry_testkit::image;
use regferry_testkit::{Action, FaultProxy, RawClient, Rule, TestRegistry};

/// A client for the proxy, with `reqConcurrent` when given.
fn client(proxy: &FaultProxy, fixed: Option<u32>) -> RegistryClient {
    let mut opts = HostOptions::new(&proxy.host());
    opts.tls = TlsMode::Disabled;
    opts.req_concurrent = fixed;
    RegistryClient::new(opts).expect("client")
}

/// Sends `n` HEADs at once, `rounds` times; returns the most that were in flight together.
async fn heads(client: &RegistryClient, n: usize, rounds: usize) -> usize {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    for _ in 0..rounds {
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (client, in_flight, most) = (client.clone(), in_flight.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let r = client.head_manifest("app", "1").await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                r
            }));
        }
        for t in tasks {
            let head = t.await.expect("task").expect("HEAD");
            assert!(head.is_some(), "the manifest is there");
        }
    }
    most.load(Ordering::SeqCst)
}

fn registry_with_an_image() -> TestRegistry {
    let reg = TestRegistry::start();
    RawClient::for_registry(&reg).push("app", Some("1"), &image::image(81, 1, 100));
    reg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_grows_while_the_registry_keeps_up_and_halves_when_it_refuses() {
    let reg = registry_with_an_image();
    let proxy = FaultProxy::start(&reg);
    // A slow link: every HEAD takes 50 ms, whatever else is in flight.
    proxy.add_rule(Rule::new(
        "HEAD",
        "/manifests/",
        Action::Delay(Duration::from_millis(50)),
    ));
    let c = client(&proxy, None);
    assert_eq!(c.concurrency_limit(), 6, "it starts at 6");
    heads(&c, 40, 4).await;
    let grown = c.concurrency_limit();
    assert!(
        grown >= 24,
        "grown to {grown} while answers stayed at 50 ms"
    );
    assert!(grown <= 32, "never above 32: {grown}");

    // A burst of 503s: one halving, not one per refusal.
    proxy.clear_rules();
    proxy.add_rule(Rule::new("HEAD", "/manifests/", Action::respond(503, &[])).times(8));
    let refused: Vec<_> = (0..8).map(|_| c.head_manifest("app", "1")).collect();
    for r in futures_util::future::join_all(refused).await {
        assert!(r.is_ok(), "retried after the 503s: {r:?}");
    }
    let cut = c.concurrency_limit();
    assert!(
        cut >= grown / 2 - 1 && cut <= grown / 2 + 1,
        "halved once: {grown} -> {cut}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_concurrent_is_a_hard_limit() {
    let reg = registry_with_an_image();
    let proxy = FaultProxy::start(&reg);
    proxy.add_rule(Rule::new(
        "HEAD",
        "/manifests/",
        Action::Delay(Duration::from_millis(30)),
    ));
    let c = client(&proxy, Some(3));
    heads(&c, 20, 3).await;
    assert_eq!(c.concurrency_limit(), 3);
    // What the registry saw: never more than three at once.
    let most = proxy.max_in_flight();
    assert!(most <= 3, "{most} requests reached the registry at once");
    assert!(most >= 2, "requests did overlap: {most}");
}
