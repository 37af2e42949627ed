//! Hostile upstreams: a source (or a host it names) that tries to get credentials, write
//! outside the configured repository, or exhaust memory. Each test puts the fault proxy in
//! front of a real registry, or a [`HostileServer`] where the registry cannot be made to
//! answer so, and shows what regferry sent and wrote.
use regferry_testkit::cli::{ConfigFile, RunOutput, registry_config, run_regferry};
use regferry_testkit::image;
use regferry_testkit::{
    Action, Auth, FaultProxy, HostileServer, RawClient, RegistryOptions, Reply, Rule, TestRegistry,
    skopeo_digest, skopeo_list_tags,
};

const BIN: &str = env!("CARGO_BIN_EXE_regferry");
const USER: &str = "alice";
const PASS: &str = "s3cret-alice";

fn regferry(args: &[&str], c: &ConfigFile) -> RunOutput {
    run_regferry(BIN, args, c)
}

fn with_login() -> TestRegistry {
    TestRegistry::start_with(RegistryOptions {
        auth: Auth::Htpasswd {
            user: USER,
            pass: PASS,
        },
        ..RegistryOptions::default()
    })
}

/// Which side of an entry logs in (as `alice`).
#[derive(Clone, Copy, PartialEq)]
enum Login {
    Neither,
    Source,
    Target,
}

/// One `repository` entry from `src/app` to `dst/mirror/app`, with `defaults` lines after
/// `parallel: 2` and `extra` lines in the entry.
fn entry_with(src: &str, dst: &str, login: Login, defaults: &str, extra: &str) -> ConfigFile {
    let side = |s: Login| (login == s).then_some((USER, PASS));
    registry_config(
        &[
            (src.to_owned(), side(Login::Source)),
            (dst.to_owned(), side(Login::Target)),
        ],
        &format!("  parallel: 2\n{defaults}"),
        &format!(
            "  - source: {src}/app\n    target: {dst}/mirror/app\n    type: repository\n{extra}"
        ),
    )
}

fn entry(src: &str, dst: &str, login: Login, extra: &str) -> ConfigFile {
    entry_with(src, dst, login, "", extra)
}

/// An answer of 200 with this JSON, in place of the registry's.
fn json_answer(value: serde_json::Value) -> Action {
    Action::Respond {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: value.to_string().into_bytes(),
    }
}

fn assert_no_credentials(host: &HostileServer) {
    for r in host.received() {
        assert_eq!(
            r.authorization(),
            None,
            "{} {} reached another host with credentials",
            r.method,
            r.path
        );
    }
}

/// The registry was sent no manifest (no tag, no image by digest).
fn assert_no_manifest_written(reg: &TestRegistry) {
    let puts: Vec<String> = reg
        .access_log()
        .into_iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/manifests/"))
        .map(|e| e.path)
        .collect();
    assert!(puts.is_empty(), "manifests written: {puts:?}");
}

/// Every write the target registry served stayed under `/v2/<repo>/`.
fn assert_writes_only_under(reg: &TestRegistry, repo: &str) {
    let prefix = format!("/v2/{repo}/");
    for e in reg.access_log().iter().filter(|e| e.is_write()) {
        assert!(
            e.path.starts_with(&prefix),
            "{} {} is outside {prefix}",
            e.method,
            e.path
        );
    }
}

#[test]
fn a_link_page_on_another_host_is_refused_and_gets_no_credentials() {
    let src = with_login();
    let dst = TestRegistry::start();
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(900, 1, 100));
    let elsewhere = HostileServer::start(|_, _| {
        Reply::json(&serde_json::json!({"name": "app", "tags": ["2"]}))
    });
    let proxy = FaultProxy::start(&src);
    proxy.add_rule(Rule::new(
        "GET",
        "/tags/list",
        Action::AddHeaders(vec![(
            "Link".into(),
            format!(
                "<{}/v2/app/tags/list?last=1>; rel=\"next\"",
                elsewhere.url()
            ),
        )]),
    ));
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Source, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains(&elsewhere.host()) && o.all().contains(&proxy.host()),
        "the error names both hosts: {}",
        o.all()
    );
    assert!(
        elsewhere.received().is_empty(),
        "{:?}",
        elsewhere.received()
    );
    assert_eq!(dst.writes(), 0, "a listing that failed copies nothing");
    assert!(!o.all().contains(PASS));
}

#[test]
fn an_upload_location_on_another_host_gets_no_credentials_and_no_query_is_printed() {
    let src = TestRegistry::start();
    let dst = with_login();
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(901, 1, 2000));
    let elsewhere = HostileServer::start(|_, _| Reply::new(500, &[], "no"));
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new(
        "POST",
        "/blobs/uploads/",
        Action::Respond {
            status: 202,
            headers: vec![(
                "Location".into(),
                format!("{}/upload/1?_state=upload-state-secret", elsewhere.url()),
            )],
            body: Vec::new(),
        },
    ));
    let c = entry(&src.host(), &proxy.host(), Login::Target, "");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        !elsewhere.received().is_empty(),
        "the upload went to the Location the registry named"
    );
    assert_no_credentials(&elsewhere);
    assert!(
        !o.all().contains("upload-state-secret"),
        "upload URLs are printed without their query: {}",
        o.all()
    );
    assert!(!o.all().contains(PASS));
}

#[test]
fn a_blob_redirect_to_storage_gets_no_credentials_and_its_challenge_changes_nothing() {
    let src = with_login();
    let dst = TestRegistry::start();
    let img = image::image(902, 2, 5000);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    // Storage serves the first layer, and challenges for the second with a realm of its own.
    let first = img.layers[0].clone();
    let storage = HostileServer::start(move |r, _| {
        if r.path.starts_with("/good") {
            Reply::new(200, &[], first.data.clone())
        } else {
            Reply::new(
                401,
                &[(
                    "WWW-Authenticate",
                    "Bearer realm=\"http://127.0.0.1:9/token\",service=\"storage\"",
                )],
                "{}",
            )
        }
    });
    let proxy = FaultProxy::start(&src);
    // Each layer's GET redirects to `<host>/good` (first layer) or `<host>/bad` (second).
    let redirect_layers = |host: &HostileServer, query: &str| {
        for (blob, path) in [(&img.layers[0], "good"), (&img.layers[1], "bad")] {
            proxy.add_rule(Rule::new(
                "GET",
                &format!("/blobs/{}", blob.digest()),
                Action::Respond {
                    status: 307,
                    headers: vec![("Location".into(), format!("{}/{path}?{query}", host.url()))],
                    body: Vec::new(),
                },
            ));
        }
    };
    redirect_layers(&storage, "X-Signature=presigned-secret");
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Source, ""),
    );
    assert_eq!(o.code, 1, "the second layer cannot be read: {}", o.all());
    let paths: Vec<String> = storage.received().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p.starts_with("/good")) && paths.iter().any(|p| p.starts_with("/bad")),
        "both redirects were followed: {paths:?}"
    );
    assert_no_credentials(&storage);
    assert!(!o.all().contains("presigned-secret"), "{}", o.all());
    assert!(
        o.all().contains("401"),
        "the storage's 401 is the error, not a new login: {}",
        o.all()
    );
    assert_no_manifest_written(&dst);

    // With storage serving both layers, the same redirects copy the image.
    let good = HostileServer::start({
        let layers = img.layers.clone();
        move |r, _| {
            let i = usize::from(r.path.starts_with("/bad"));
            Reply::new(200, &[], layers[i].data.clone())
        }
    });
    proxy.clear_rules();
    redirect_layers(&good, "sig=x");
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Source, ""),
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_no_credentials(&good);
    assert_eq!(skopeo_digest(&dst, "mirror/app:1"), img.digest());
}

#[test]
fn hostile_tags_from_a_listing_write_nothing_outside_the_entry() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(903, 1, 100);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let proxy = FaultProxy::start(&src);
    proxy.add_rule(Rule::new(
        "GET",
        "/v2/app/tags/list",
        json_answer(serde_json::json!({"name": "app", "tags": [
            "1",
            "../../../victim/manifests/pwn",
            "..%2f..%2fvictim",
            "a?b",
            "x#y",
            ".hidden",
        ]})),
    ));
    // Whatever the source answers for a hostile name, it would be an image.
    proxy.add_rule(Rule::regex(
        "*",
        "/manifests/(\\.|%2e|%2E|a%3Fb|x%23y)",
        Action::Respond {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            body: Vec::new(),
        },
    ));
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 0, "the valid tag is copied: {}", o.all());
    assert!(
        o.all().contains("not a valid tag"),
        "one warning names the skipped names: {}",
        o.all()
    );
    assert_eq!(skopeo_list_tags(&dst, "mirror/app"), vec!["1"]);
    assert_writes_only_under(&dst, "mirror/app");
    for r in proxy.requests() {
        assert!(
            r.path.starts_with("/v2/app/") || r.path == "/v2/" || r.path.starts_with("/v2/?"),
            "{} {} left /v2/app/",
            r.method,
            r.path
        );
    }
}

#[test]
fn a_hostile_catalog_name_reaches_no_repository() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(904, 1, 100);
    RawClient::for_registry(&src).push("ok/app", Some("1"), &img);
    RawClient::for_registry(&src).push("victim", Some("1"), &img);
    let proxy = FaultProxy::start(&src);
    proxy.add_rule(Rule::new(
        "GET",
        "/v2/_catalog",
        json_answer(
            serde_json::json!({"repositories": ["ok/app", "ok/../../victim", "ok/%2e%2e/victim"]}),
        ),
    ));
    let c = registry_config(
        &[(proxy.host(), None), (dst.host(), None)],
        "",
        &format!(
            "  - source: {}\n    target: {}/mirror\n    type: registry\n    repos:\n      allow: ['ok/.*']\n",
            proxy.host(),
            dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(o.all().contains("not a valid repository"), "{}", o.all());
    assert_eq!(skopeo_list_tags(&dst, "mirror/ok/app"), vec!["1"]);
    assert_writes_only_under(&dst, "mirror/ok/app");
    for r in proxy.requests() {
        assert!(
            !r.path.contains("victim"),
            "{} {} reached the victim",
            r.method,
            r.path
        );
    }
}

#[test]
fn an_oversized_manifest_is_refused_before_it_is_read_whole() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(905, 1, 100));
    let proxy = FaultProxy::start(&src);
    let mut huge = b"{\"schemaVersion\":2,\"pad\":\"".to_vec();
    huge.resize(5 << 20, b'a');
    huge.extend_from_slice(b"\"}");
    proxy.add_rule(Rule::new(
        "GET",
        "/manifests/",
        Action::Respond {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            body: huge,
        },
    ));
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains(&format!("larger than {} bytes", 4 << 20)),
        "{}",
        o.all()
    );
    assert_eq!(dst.writes(), 0);
}

/// A response head (status line and headers) whose end is not within a connection's 64 KiB
/// read buffer is refused, on the connections that read manifests and on those that read
/// blobs (hyper's default buffer, about 400 KiB, takes a head of 300 KiB). The same bound
/// keeps the buffers of many blob downloads small.
#[test]
fn a_response_head_that_overflows_the_read_buffer_is_refused() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(907, 1, 100));
    let proxy = FaultProxy::start(&src);
    let c = entry(&proxy.host(), &dst.host(), Login::Neither, "");
    let padding = || Action::AddHeaders(vec![("X-Padding".into(), "a".repeat(300 << 10))]);
    for path in ["/manifests/", "/blobs/sha256:"] {
        proxy.clear_rules();
        proxy.add_rule(Rule::new("GET", path, padding()));
        let o = regferry(&["once"], &c);
        assert_eq!(o.code, 1, "GET {path}: {}", o.all());
        // Said once, not retried: the same registry would send the same head again.
        assert!(
            o.all()
                .contains("response head is too large (more than 64 KiB")
                && !o.all().contains("Retrying"),
            "GET {path}: {}",
            o.all()
        );
        assert_no_manifest_written(&dst);
    }
    // The same answers with a head of 50 KiB copy the image.
    proxy.clear_rules();
    proxy.add_rule(Rule::new(
        "GET",
        "/",
        Action::AddHeaders(vec![("X-Padding".into(), "a".repeat(50 << 10))]),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(skopeo_list_tags(&dst, "mirror/app"), vec!["1"]);
}

#[test]
fn a_chunk_size_demand_above_the_limit_fails_the_upload_instead_of_buffering() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(906, 1, 3000));
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new(
        "POST",
        "/blobs/uploads/",
        Action::AddHeaders(vec![("OCI-Chunk-Min-Length".into(), "10737418240".into())]),
    ));
    let o = regferry(
        &["once"],
        &entry(&src.host(), &proxy.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains("OCI-Chunk-Min-Length") && o.all().contains("blobLimit"),
        "{}",
        o.all()
    );
    assert_no_manifest_written(&dst);
    // A blobLimit above the demand lets the same upload through.
    proxy.clear_rules();
    proxy.add_rule(Rule::new(
        "POST",
        "/blobs/uploads/",
        Action::AddHeaders(vec![("OCI-Chunk-Min-Length".into(), "2000000".into())]),
    ));
    let c = entry_with(
        &src.host(),
        &proxy.host(),
        Login::Neither,
        "  blobLimit: 4000000\n",
        "",
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(skopeo_list_tags(&dst, "mirror/app"), vec!["1"]);
}

/// A source whose tag list never ends: every page adds 100 new tags and links to the next.
#[test]
fn an_endless_tag_list_ends_with_an_error_within_bounded_memory() {
    let dst = TestRegistry::start();
    let endless = HostileServer::start(|r, n| {
        if !r.path.contains("/tags/list") {
            return Reply::new(200, &[("Content-Type", "application/json")], "{}");
        }
        let tags: Vec<String> = (0..100)
            .map(|i| format!("t{n}-{i}-{}", "x".repeat(60)))
            .collect();
        Reply::new(
            200,
            &[
                ("Content-Type", "application/json"),
                (
                    "Link",
                    &format!("</v2/app/tags/list?last=p{n}>; rel=\"next\""),
                ),
            ],
            serde_json::json!({"name": "app", "tags": tags}).to_string(),
        )
    });
    let o = regferry(
        &["check"],
        &entry(&endless.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("more than 100000 names"), "{}", o.all());
    let pages = endless.received().len();
    assert!(pages <= 1_002, "{pages} pages were read");
    // 100,000 names of ~70 bytes are ~7 MiB; a normal run peaks near 30 MiB.
    assert!(
        o.peak_rss_kib < 64 * 1024,
        "peak RSS {} KiB",
        o.peak_rss_kib
    );
    // The bounds are the operator's: a listing of all pages together above `listingSize`.
    let o = regferry(
        &["check"],
        &entry_with(
            &endless.host(),
            &dst.host(),
            Login::Neither,
            "  limits:\n    listingSize: 1MiB\n",
            "",
        ),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains("listing is larger than 1048576 bytes"),
        "{}",
        o.all()
    );
}

/// The target's HEAD answers 403 or 503: that is an error for the tag, not "missing". The
/// tag keeps its image, `--missing` does not overwrite it, and a backup is not skipped.
#[test]
fn a_refused_or_failing_target_head_is_an_error_not_a_copy() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let old = image::image(910, 1, 100);
    let new = image::image(911, 1, 100);
    RawClient::for_registry(&src).push("app", Some("1"), &new);
    RawClient::for_registry(&dst).push("mirror/app", Some("1"), &old);
    let proxy = FaultProxy::start(&dst);
    let writes_before = dst.writes();
    for (status, args) in [(403, &["once"][..]), (503, &["once", "--missing"][..])] {
        proxy.clear_rules();
        proxy.add_rule(Rule::new(
            "HEAD",
            "/v2/mirror/app/manifests/1",
            Action::respond(status, &[]),
        ));
        // A listing refused too: the tag must then be asked about, and the HEAD decides.
        proxy.add_rule(Rule::new(
            "GET",
            "/v2/mirror/app/tags/list",
            Action::respond(403, &[]),
        ));
        let o = regferry(
            args,
            &entry(
                &src.host(),
                &proxy.host(),
                Login::Neither,
                "    backup: 'old-{{.Tag}}'\n",
            ),
        );
        assert_eq!(o.code, 1, "HTTP {status}: {}", o.all());
        assert!(o.all().contains(&status.to_string()), "{}", o.all());
        assert_eq!(
            skopeo_digest(&dst, "mirror/app:1"),
            old.digest(),
            "HTTP {status} on HEAD must not let the tag be overwritten"
        );
        assert_eq!(
            dst.writes(),
            writes_before,
            "HTTP {status}: nothing written"
        );
    }
}

/// A referrer that cannot be copied leaves the tag where it was: a consumer that verifies
/// signatures never sees the new image under the tag without them.
#[test]
fn a_tag_moves_only_after_its_referrers_are_copied() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let old = image::image(912, 1, 100);
    let new = image::image(913, 1, 100);
    let sbom = image::sbom(&new.descriptor(), 1);
    let s = RawClient::for_registry(&src);
    s.push("app", Some("1"), &new);
    s.publish_referrers("app", &new.digest(), &[&sbom]);
    RawClient::for_registry(&dst).push("mirror/app", Some("1"), &old);
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new(
        "PUT",
        &format!("/manifests/{}", sbom.digest()),
        Action::respond(500, &[]),
    ));
    let c = entry(
        &src.host(),
        &proxy.host(),
        Login::Neither,
        "    referrers: true\n",
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert_eq!(
        skopeo_digest(&dst, "mirror/app:1"),
        old.digest(),
        "the tag keeps its old image while the new one lacks its SBOM"
    );
    // Once the referrer can be written, the same run moves the tag.
    proxy.clear_rules();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(skopeo_digest(&dst, "mirror/app:1"), new.digest());
    assert_eq!(
        skopeo_digest(&dst, &format!("mirror/app@{}", sbom.digest())),
        sbom.digest()
    );
}

/// Pushes `levels` indexes to `src/app` above `img`, each listing the one below six times
/// (a diamond: few manifests, 6^levels paths through them), and tags the top `tag`.
fn push_nested(src: &TestRegistry, img: &image::Image, levels: usize, tag: &str) {
    let client = RawClient::for_registry(src);
    client.push("app", None, img);
    let mut below = img.descriptor();
    for level in 0..levels {
        let index = image::Manifest {
            media_type: image::OCI_INDEX.to_owned(),
            bytes: serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": image::OCI_INDEX,
                "manifests": vec![below.clone(); 6],
            }))
            .unwrap(),
        };
        let reference = if level + 1 == levels {
            tag.to_owned()
        } else {
            index.digest()
        };
        client.push_manifest("app", &reference, &index);
        below = index.descriptor();
    }
}

/// A source's index graph is walked once per distinct manifest, and only so deep: nested
/// indexes that list the same child many times cost one read each, and nesting past 8
/// levels is an error before anything is written, not a walk of 6^depth paths.
#[test]
fn nested_indexes_are_walked_once_per_manifest_and_only_so_deep() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(920, 1, 100);
    push_nested(&src, &img, 5, "wide");
    let proxy = FaultProxy::start(&src);
    let o = regferry(
        &["once"],
        &entry(
            &proxy.host(),
            &dst.host(),
            Login::Neither,
            "    tags:\n      allow: [wide]\n",
        ),
    );
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(
        skopeo_digest(&dst, "mirror/app:wide"),
        skopeo_digest(&src, "app:wide")
    );
    let reads = proxy.count("GET", "/manifests/");
    assert!(
        reads <= 10,
        "{reads} manifest reads for 6 distinct manifests"
    );

    // Another image: the target has the first one's levels, which need no walk.
    let deep = TestRegistry::start();
    push_nested(&deep, &image::image(921, 1, 100), 12, "deep");
    let writes_before = dst.writes();
    let o = regferry(
        &["once"],
        &entry(&deep.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("nested more than 8"), "{}", o.all());
    assert_eq!(
        dst.writes(),
        writes_before,
        "nothing is written for a refused image"
    );
}

/// An image with more referrers, all subjects and levels together, than
/// `defaults.limits.referrersPerImage` allows: the run fails naming the bound and the tag
/// is not written; with the bound raised, the same image and all its referrers copy.
#[test]
fn the_referrers_of_one_image_are_bounded_across_levels() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(920, 1, 100);
    let sbom = image::sbom(&img.descriptor(), 1);
    let vex = image::sbom(&img.descriptor(), 2);
    // A referrer of a referrer (the SBOM's signature): the second level counts too.
    let sig = image::sbom(&sbom.descriptor(), 3);
    let s = RawClient::for_registry(&src);
    s.push("app", Some("1"), &img);
    s.publish_referrers("app", &img.digest(), &[&sbom, &vex]);
    s.publish_referrers("app", &sbom.digest(), &[&sig]);
    let run = |bound: usize| {
        regferry(
            &["once"],
            &entry_with(
                &src.host(),
                &dst.host(),
                Login::Neither,
                &format!("  limits:\n    referrersPerImage: {bound}\n"),
                "    referrers: true\n",
            ),
        )
    };
    let o = run(2);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all()
            .contains("more than 2 referrers in one image (limits.referrersPerImage)"),
        "{}",
        o.all()
    );
    assert!(
        !skopeo_list_tags(&dst, "mirror/app").contains(&"1".to_owned()),
        "the tag waits for the image's referrers"
    );
    let o = run(3);
    assert_eq!(o.code, 0, "{}", o.all());
    assert_eq!(skopeo_digest(&dst, "mirror/app:1"), img.digest());
    assert_eq!(
        skopeo_digest(&dst, &format!("mirror/app@{}", sig.digest())),
        sig.digest()
    );
}

/// A source that accepts connections and never answers is given up after the
/// `responseTimeout` its `creds` entry sets, not the default two minutes per try.
#[test]
fn a_silent_source_is_given_up_after_its_configured_response_timeout() {
    let dst = TestRegistry::start();
    let silent = HostileServer::start(|_, _| Reply::Silence(std::time::Duration::from_secs(20)));
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {src}\n    tls: disabled\n    \
         limits:\n      responseTimeout: 1s\n  - registry: {dst}\n    tls: disabled\nsync:\n  \
         - source: {src}/app:1\n    target: {dst}/mirror/app:1\n    type: image\n",
        src = silent.host(),
        dst = dst.host(),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("no response within 1s"), "{}", o.all());
    assert_no_manifest_written(&dst);
}

/// A source that sends a blob a byte at a time is never silent long enough for the idle
/// timeout, and would hold the copy for as long as it likes: below `minSpeed` over an
/// `idleTimeout` window the download is given up (after its resumes), and nothing is tagged.
#[test]
fn a_trickling_source_is_given_up_below_the_minimum_speed() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(930, 1, 3000);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let proxy = FaultProxy::start(&src);
    proxy.add_rule(Rule::new(
        "GET",
        "/blobs/",
        Action::Trickle(std::time::Duration::from_millis(100)),
    ));
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {src}\n    tls: disabled\n    \
         limits:\n      idleTimeout: 1s\n      minSpeed: 1KiB\n  - registry: {dst}\n    \
         tls: disabled\nsync:\n  - source: {src}/app:1\n    target: {dst}/mirror/app:1\n    \
         type: image\n",
        src = proxy.host(),
        dst = dst.host(),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("limits.minSpeed"), "{}", o.all());
    assert_no_manifest_written(&dst);
}

/// A source that falls silent in the middle of a blob is resumed after `idleTimeout`, then
/// given up; it never holds the copy for longer.
#[test]
fn a_source_that_falls_silent_mid_blob_is_given_up_after_the_idle_timeout() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(931, 1, 3000);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let proxy = FaultProxy::start(&src);
    proxy.add_rule(Rule::new(
        "GET",
        &format!("/blobs/{}", img.layers[0].digest()),
        Action::Trickle(std::time::Duration::from_secs(300)),
    ));
    // The same idle timeout on both sides: the upload, which waits for the source, must
    // not give up before the download is resumed.
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\n  limits: {{idleTimeout: 1s}}\ncreds:\n  \
         - registry: {src}\n    tls: disabled\n  - registry: {dst}\n    tls: disabled\nsync:\n  \
         - source: {src}/app:1\n    target: {dst}/mirror/app:1\n    type: image\n",
        src = proxy.host(),
        dst = dst.host(),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("Resuming blob download"), "{}", o.all());
    assert!(o.all().contains("limits.idleTimeout"), "{}", o.all());
    assert!(o.all().contains("after 5 resumes"), "{}", o.all());
    assert!(
        !o.all().contains("took no data") && !o.all().contains("no response within"),
        "the upload waited for the source: {}",
        o.all()
    );
    assert_no_manifest_written(&dst);
}

/// A target that takes an upload and never answers it is given up `responseTimeout` after
/// the last byte went out, however long the upload itself took.
#[test]
fn a_target_that_never_answers_an_upload_is_given_up_after_its_response_timeout() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(932, 1, 3000);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Action::Delay(std::time::Duration::from_secs(300)),
    ));
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {src}\n    tls: disabled\n  \
         - registry: {dst}\n    tls: disabled\n    limits:\n      responseTimeout: 1s\nsync:\n  \
         - source: {src}/app:1\n    target: {dst}/mirror/app:1\n    type: image\n",
        src = src.host(),
        dst = proxy.host(),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(o.all().contains("PUT"), "{}", o.all());
    assert_no_manifest_written(&dst);
}

/// A registry's error text reaches the operator's terminal and logs. Control characters in
/// it (an escape sequence that retitles the terminal or rewrites the screen, a newline that
/// forges a log line) are shown escaped, and the text is cut short.
#[test]
fn registry_error_text_cannot_drive_the_terminal_or_forge_lines() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    RawClient::for_registry(&src).push("app", Some("1"), &image::image(908, 1, 100));
    let proxy = FaultProxy::start(&src);
    let message = format!(
        "denied\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nERROR Failed to sync FORGED\u{202e}{}",
        "x".repeat(2000)
    );
    let body = serde_json::json!({"errors": [{"code": "DENIED\u{1b}[31m", "message": message}]});
    proxy.add_rule(Rule::new(
        "GET",
        "/tags/list",
        Action::Respond {
            status: 403,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        },
    ));
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 1, "{}", o.all());
    let all = o.all();
    assert!(all.contains("HTTP 403 DENIED"), "{all}");
    for bad in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
        assert!(!all.contains(bad), "{bad:?} reached the output: {all:?}");
    }
    assert!(
        !all.lines()
            .any(|l| l.starts_with("ERROR Failed to sync FORGED")),
        "a forged line: {all}"
    );
    assert!(all.contains(r"\u{1b}]0;pwned"), "shown escaped: {all}");
    assert!(!all.contains(&"x".repeat(1000)), "cut short: {all}");
}

/// A `Content-Type` that is not a media type, or only a generic one, is ignored on a HEAD as
/// on a GET: the manifest is read and its own type used, instead of the registry's word
/// deciding (here, that the tag is skipped as a type outside `mediaTypes`).
#[test]
fn a_head_content_type_that_is_not_a_media_type_is_ignored() {
    for content_type in ["not a media type", "application/json; charset=utf-8"] {
        a_head_content_type_is_ignored(content_type);
    }
}

fn a_head_content_type_is_ignored(content_type: &str) {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(909, 1, 100);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    // The target holds an older image under the tag, so the source's HEAD decides.
    RawClient::for_registry(&dst).push("mirror/app", Some("1"), &image::image(910, 1, 100));
    let proxy = FaultProxy::start(&src);
    let size = img.manifest.descriptor().size.to_string();
    proxy.add_rule(Rule::new(
        "HEAD",
        "/manifests/1",
        Action::Respond {
            status: 200,
            headers: vec![
                ("Content-Type".into(), content_type.into()),
                ("Docker-Content-Digest".into(), img.digest()),
                ("Content-Length".into(), size),
            ],
            body: Vec::new(),
        },
    ));
    let o = regferry(
        &["once"],
        &entry(&proxy.host(), &dst.host(), Login::Neither, ""),
    );
    assert_eq!(o.code, 0, "{content_type}: {}", o.all());
    assert!(
        !o.all().contains("not in mediaTypes"),
        "{content_type}: {}",
        o.all()
    );
    assert_eq!(skopeo_digest(&dst, "mirror/app:1"), img.digest());
}
