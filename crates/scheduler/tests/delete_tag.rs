//! Deleting one tag from a real registry (Debian's distribution 2.8, which deletes only by
//! digest) without touching the other tags of its image, verified with skopeo.
use std::time::Duration;

use regferry_registry::http::{HostOptions, RegistryClient, TlsMode};
use regferry_testkit::image;
use regferry_testkit::{
    Action, FaultProxy, RawClient, RegistryOptions, Rule, TestRegistry, skopeo_digest,
    skopeo_list_tags,
};

fn client(reg: &TestRegistry) -> RegistryClient {
    client_at(&reg.host())
}

fn client_at(host: &str) -> RegistryClient {
    let mut opts = HostOptions::new(host);
    opts.tls = TlsMode::Disabled;
    RegistryClient::new(opts).expect("client")
}

/// Tags `a` and `b` on one image, `c` on another.
fn seed(reg: &TestRegistry) -> (String, String) {
    let raw = RawClient::for_registry(reg);
    let shared = image::image(90, 1, 100);
    let x = raw.push("app", Some("a"), &shared);
    raw.push("app", Some("b"), &shared);
    let y = raw.push("app", Some("c"), &image::image(91, 1, 100));
    (x, y)
}

#[tokio::test]
async fn a_deleted_tag_leaves_the_other_tags_of_its_image() {
    let reg = TestRegistry::start();
    let (x, y) = seed(&reg);
    let c = client(&reg);
    assert!(c.delete_tag("app", "a").await.expect("delete a"));
    assert_eq!(skopeo_list_tags(&reg, "app"), vec!["b", "c"]);
    assert_eq!(skopeo_digest(&reg, "app:b"), x, "b still names its image");
    assert_eq!(skopeo_digest(&reg, "app:c"), y);
    // Gone already: nothing to do, and no error.
    assert!(!c.delete_tag("app", "a").await.expect("delete a again"));
    assert!(
        !c.delete_tag("app", "never")
            .await
            .expect("delete a tag never there")
    );
    assert_eq!(skopeo_list_tags(&reg, "app"), vec!["b", "c"]);
}

#[tokio::test]
async fn a_registry_that_refuses_deletes_keeps_the_tag_where_it_was() {
    let reg = TestRegistry::start_with(RegistryOptions {
        no_delete: true,
        ..RegistryOptions::default()
    });
    let (x, _) = seed(&reg);
    let err = client(&reg)
        .delete_tag("app", "a")
        .await
        .expect_err("deletes are disabled");
    assert!(err.to_string().contains("405"), "{err}");
    assert_eq!(skopeo_list_tags(&reg, "app"), vec!["a", "b", "c"]);
    assert_eq!(skopeo_digest(&reg, "app:a"), x, "a was not moved");
}

#[tokio::test]
async fn a_placeholder_that_cannot_be_deleted_gives_the_tag_back() {
    let reg = TestRegistry::start();
    let (x, _) = seed(&reg);
    let proxy = FaultProxy::start(&reg);
    // The check (the placeholder deleted untagged) passes; the delete after the move fails.
    proxy.add_rule(
        Rule::new(
            "DELETE",
            "/manifests/sha256:",
            Action::Delay(Duration::ZERO),
        )
        .times(1),
    );
    proxy.add_rule(Rule::new(
        "DELETE",
        "/manifests/sha256:",
        Action::respond(403, &[]),
    ));
    let err = client_at(&proxy.host())
        .delete_tag("app", "a")
        .await
        .expect_err("the second delete is refused");
    assert!(err.to_string().contains("put back"), "{err}");
    assert_eq!(skopeo_list_tags(&reg, "app"), vec!["a", "b", "c"]);
    assert_eq!(skopeo_digest(&reg, "app:a"), x, "a names its image again");
}
