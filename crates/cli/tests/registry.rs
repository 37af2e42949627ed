//! `regferry check` and `once` against real registries (Debian's distribution), verified
//! with skopeo, the independent client. Faults come from a proxy in front of a real registry.
use regferry_testkit::cli::{ConfigFile, RunOutput, registry_config, run_regferry};
use regferry_testkit::image::{self, ImageBuilder, Platform};
use regferry_testkit::{
    Action, Auth, Content, FaultProxy, RawClient, RegistryOptions, Rule, TestRegistry, TokenIssuer,
    oci_client_manifest, skopeo_digest, skopeo_inspect_raw, skopeo_list_tags,
};

const BIN: &str = env!("CARGO_BIN_EXE_regferry");

/// A config file: `hosts` get `tls: disabled` (with credentials when given), `parallel: 2`,
/// then the sync entries, written as YAML by the caller.
fn cfg(hosts: &[(&str, Option<(&str, &str)>)], sync: &str) -> ConfigFile {
    let hosts: Vec<(String, Option<(&str, &str)>)> =
        hosts.iter().map(|(h, l)| ((*h).to_owned(), *l)).collect();
    registry_config(&hosts, "  parallel: 2\n", sync)
}

/// A config with one entry of `kind` from `src_host/src` to `dst_host/dst`, both plain HTTP
/// without logins.
fn one_entry(src_host: &str, src: &str, dst_host: &str, dst: &str, kind: &str) -> ConfigFile {
    cfg(
        &[(src_host, None), (dst_host, None)],
        &format!("  - source: {src_host}/{src}\n    target: {dst_host}/{dst}\n    type: {kind}\n"),
    )
}

fn regferry(args: &[&str], c: &ConfigFile) -> RunOutput {
    run_regferry(BIN, args, c)
}

fn push(reg: &TestRegistry, repo: &str, tag: &str, content: &dyn Content) -> String {
    RawClient::for_registry(reg).push(repo, Some(tag), content)
}

/// Every manifest a tag reaches exists in `dst` with the same bytes as in `src`.
fn assert_same(src: &TestRegistry, dst: &TestRegistry, src_ref: &str, dst_ref: &str) {
    let a = skopeo_inspect_raw(src, src_ref);
    let b = skopeo_inspect_raw(dst, dst_ref);
    assert_eq!(a, b, "{dst_ref}: manifest bytes differ from {src_ref}");
    let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
    if let Some(children) = v["manifests"].as_array() {
        let repo = dst_ref.split([':', '@']).next().unwrap();
        for c in children {
            let d = c["digest"].as_str().unwrap();
            let child = skopeo_inspect_raw(dst, &format!("{repo}@{d}"));
            assert_eq!(image::sha256_digest(&child), d, "child {d} in {repo}");
        }
    }
}

#[test]
fn repository_sync_is_byte_exact_and_a_second_run_writes_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let multi = image::multi_arch(1, 2, 4096);
    let single = image::image(2, 3, 70_000);
    let docker = ImageBuilder::new(3).layers(2, 1000).docker().build();
    push(&src, "team/app", "1.0", &multi);
    push(&src, "team/app", "latest", &multi);
    push(&src, "team/app", "1.1", &single);
    push(&src, "team/app", "2.0", &docker);
    let c = one_entry(
        &src.host(),
        "team/app",
        &dst.host(),
        "mirror/app",
        "repository",
    );

    let o = regferry(&["check"], &c);
    assert_eq!(o.code, 3, "check reports drift\n{}{}", o.stdout, o.stderr);
    assert_eq!(
        o.stdout.matches("missing (would copy)").count(),
        4,
        "{}",
        o.stdout
    );
    assert_eq!(dst.writes(), 0, "check must write nothing");

    let src_before = src.access_log().len();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("4 copied"), "{}", o.stdout);
    // The target's listing shows all four missing: each source tag is read once, not
    // HEAD first and read after.
    let by_tag: Vec<_> = src.access_log()[src_before..]
        .iter()
        .filter(|e| {
            ["1.0", "latest", "1.1", "2.0"]
                .iter()
                .any(|t| e.path.ends_with(&format!("/manifests/{t}")))
        })
        .map(|e| e.method.clone())
        .collect();
    assert_eq!(by_tag, vec!["GET"; 4], "source reads by tag");
    for tag in ["1.0", "latest", "1.1", "2.0"] {
        assert_same(
            &src,
            &dst,
            &format!("team/app:{tag}"),
            &format!("mirror/app:{tag}"),
        );
        // A second independent reader, oci-client, gets the same bytes and digest.
        let (want, want_digest) = oci_client_manifest(&src, &format!("team/app:{tag}"));
        let (got, got_digest) = oci_client_manifest(&dst, &format!("mirror/app:{tag}"));
        assert_eq!(got, want, "{tag}: oci-client reads other bytes");
        assert_eq!(got_digest, want_digest, "{tag}");
        assert_eq!(got_digest, image::sha256_digest(&got), "{tag}");
    }
    let blob_puts = dst
        .access_log()
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/blobs/uploads/"))
        .count();
    let unique_blobs = {
        let mut all: Vec<String> = [&multi as &dyn Content, &single, &docker]
            .iter()
            .flat_map(|c| {
                c.blobs()
                    .into_iter()
                    .map(|b| b.digest())
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort();
        all.dedup();
        all.len()
    };
    assert_eq!(
        blob_puts, unique_blobs,
        "each blob is uploaded exactly once"
    );

    // A no-op resync: nothing written, one tag list and one HEAD per tag on each side.
    let (src_before, dst_before) = (src.access_log().len(), dst.access_log().len());
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("0 copied") && o.stdout.contains("4 up-to-date"),
        "{}",
        o.stdout
    );
    let src_log = &src.access_log()[src_before..];
    let dst_log = &dst.access_log()[dst_before..];
    assert!(
        dst_log.iter().all(|e| !e.is_write()),
        "no-op run wrote: {dst_log:?}"
    );
    let heads = |log: &[regferry_testkit::AccessLogEntry]| {
        log.iter().filter(|e| e.method == "HEAD").count()
    };
    assert_eq!(heads(src_log), 4, "{src_log:?}");
    assert_eq!(heads(dst_log), 4, "{dst_log:?}");
    let lists = |log: &[regferry_testkit::AccessLogEntry]| {
        log.iter().filter(|e| e.path.contains("/tags/list")).count()
    };
    assert_eq!(lists(src_log), 1, "{src_log:?}");
    assert_eq!(lists(dst_log), 1, "{dst_log:?}");
    assert!(
        dst_log
            .iter()
            .all(|e| e.method == "HEAD" || e.path.contains("/tags/list") || e.path == "/v2/"),
        "{dst_log:?}"
    );
    assert!(
        src_log
            .iter()
            .all(|e| e.method != "GET" || e.path.contains("/tags/list") || e.path == "/v2/"),
        "{src_log:?}"
    );
    let o = regferry(&["check"], &c);
    assert_eq!(o.code, 0, "in sync\n{}", o.stdout);
}

#[test]
fn tag_filters_select_what_regsync_would() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(10, 1, 100);
    for tag in [
        "1.0.0",
        "1.2.3",
        "v1.3.0-rc1",
        "1.4",
        "2.0.0",
        "latest",
        "edge",
        "alpha1",
    ] {
        push(&src, "app", tag, &img);
    }
    let c = cfg(
        &[(&src.host(), None), (&dst.host(), None)],
        &format!(
            "  - source: {s}/app\n    target: {d}/app\n    type: repository\n    tagSets:\n      - semverRange: ['>=1.2 <2']\n        deny: ['.*-rc.*']\n      - allow: [latest, 'alpha|edge']\n        deny: [edge]\n",
            s = src.host(),
            d = dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        skopeo_list_tags(&dst, "app"),
        vec!["1.2.3", "1.4", "latest"]
    );
}

#[test]
fn platform_copies_one_manifest_and_platforms_rebuild_the_index() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let idx = ImageBuilder::new(20).layers(1, 500).build_index(&[
        Platform::linux_amd64(),
        Platform::linux_arm64(),
        Platform::new("linux", "arm").with_variant("v7"),
    ]);
    push(&src, "app", "1", &idx);
    let c = cfg(
        &[(&src.host(), None), (&dst.host(), None)],
        &format!(
            "  - source: {s}/app:1\n    target: {d}/arm/app:1\n    type: image\n    platform: linux/arm64\n  - source: {s}/app:1\n    target: {d}/two/app:1\n    type: image\n    platforms: [linux/amd64, linux/arm/v7]\n",
            s = src.host(),
            d = dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let arm = idx.child(&Platform::linux_arm64()).unwrap();
    assert_eq!(
        skopeo_digest(&dst, "arm/app:1"),
        arm.digest(),
        "the tag is the arm64 manifest itself"
    );
    let two: serde_json::Value =
        serde_json::from_slice(&skopeo_inspect_raw(&dst, "two/app:1")).unwrap();
    let archs: Vec<&str> = two["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(
        archs,
        vec!["amd64", "arm"],
        "exactly the selected platforms"
    );
    for m in two["manifests"].as_array().unwrap() {
        let d = m["digest"].as_str().unwrap();
        assert_eq!(
            image::sha256_digest(&skopeo_inspect_raw(&dst, &format!("two/app@{d}"))),
            d
        );
    }
    // Up to date on the second run, although the index digest differs from the source's.
    let o = regferry(&["check"], &c);
    assert_eq!(o.code, 0, "{}", o.stdout);
}

#[test]
fn blobs_are_mounted_within_one_registry() {
    let reg = TestRegistry::start();
    let img = image::image(30, 2, 50_000);
    push(&reg, "a/app", "1", &img);
    let before = reg.access_log().len();
    let c = cfg(
        &[(&reg.host(), None)],
        &format!(
            "  - source: {h}/a/app:1\n    target: {h}/b/app:1\n    type: image\n",
            h = reg.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("3 mounted"), "{}", o.stdout);
    let log = &reg.access_log()[before..];
    let mounts = log
        .iter()
        .filter(|e| e.method == "POST" && e.path.contains("mount=") && e.status == 201)
        .count();
    assert_eq!(mounts, 3, "{log:?}");
    assert!(
        !log.iter()
            .any(|e| e.method == "PATCH" || (e.method == "PUT" && e.path.contains("/blobs/"))),
        "{log:?}"
    );
    assert_eq!(skopeo_digest(&reg, "b/app:1"), img.digest());
}

#[test]
fn missing_only_leaves_stale_tags_and_a_full_run_updates_them() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let old = image::image(40, 1, 100);
    let new = image::image(41, 1, 100);
    push(&src, "app", "1", &old);
    let c = one_entry(&src.host(), "app", &dst.host(), "app", "repository");
    assert_eq!(regferry(&["once"], &c).code, 0);
    push(&src, "app", "1", &new);
    push(&src, "app", "2", &new);
    let o = regferry(&["once", "--missing"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(
        skopeo_digest(&dst, "app:1"),
        old.digest(),
        "--missing leaves an existing tag"
    );
    assert_eq!(skopeo_digest(&dst, "app:2"), new.digest());
    let o = regferry(&["check", "--format", "json"], &c);
    assert_eq!(o.code, 3);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["entries"][0]["tags"][0]["state"], "changed");
    assert_eq!(regferry(&["once"], &c).code, 0);
    assert_eq!(skopeo_digest(&dst, "app:1"), new.digest());
}

/// A new repository (no tags) is asked about each blob with a mount from itself: one
/// request that finds blobs an interrupted run left (201) or opens the upload (202). A
/// registry that refuses such mounts still gets a complete copy, asked with HEADs.
#[test]
fn a_new_repository_reuses_blobs_an_interrupted_run_left_and_survives_refused_mounts() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(45, 15, 2000);
    push(&src, "app", "1", &img);
    // An interrupted run: some blobs made it, the manifest and tag did not.
    let left: Vec<String> = img.layers[..5]
        .iter()
        .map(|l| RawClient::for_registry(&dst).push_blob("app", &l.data))
        .collect();
    let before = dst.access_log().len();
    let c = one_entry(&src.host(), "app", &dst.host(), "app", "repository");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same(&src, &dst, "app:1", "app:1");
    let log = &dst.access_log()[before..];
    let uploaded: Vec<&str> = log
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/blobs/uploads/"))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(uploaded.len(), 16 - left.len(), "{uploaded:?}");
    for d in &left {
        assert!(
            !uploaded.iter().any(|p| p.contains(&d.replace(':', "%3A"))),
            "{d} was uploaded again"
        );
    }
    let self_mounts = |log: &[regferry_testkit::AccessLogEntry], status: u16| {
        log.iter()
            .filter(|e| e.method == "POST" && e.path.contains("from=app") && e.status == status)
            .count()
    };
    assert_eq!(self_mounts(log, 201), left.len(), "{log:?}");
    assert_eq!(self_mounts(log, 202), 16 - left.len(), "{log:?}");
    // The session a 202 opened is the one the upload used: no other POST.
    let posts = log
        .iter()
        .filter(|e| e.method == "POST" && e.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(posts, 16, "{log:?}");
    assert!(
        !log.iter()
            .any(|e| e.method == "HEAD" && e.path.contains("/blobs/")),
        "no blob HEADs in a new repository: {log:?}"
    );

    // A registry that refuses them: the copy goes on with HEADs (which find what an
    // interrupted run left), and stops asking.
    let left: Vec<String> = img.layers[5..8]
        .iter()
        .map(|l| RawClient::for_registry(&dst).push_blob("other", &l.data))
        .collect();
    let before = dst.access_log().len();
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new("POST", "from=other", Action::respond(400, &[])));
    let c = one_entry(&src.host(), "app", &proxy.host(), "other", "repository");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same(&src, &dst, "app:1", "other:1");
    let refused = proxy.count("POST", "from=other");
    assert!(
        (1..=8).contains(&refused),
        "refused mounts are not asked for again: {refused}"
    );
    let uploads = dst.access_log()[before..]
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/blobs/uploads/"))
        .count();
    assert_eq!(
        uploads,
        16 - left.len(),
        "blobs already there are not uploaded"
    );
}

/// A target that will not list its tags (a proxy answering a plain 404) is compared tag by
/// tag: taken for a new, empty repository, it would be rewritten on every run, and its
/// referrers copied again.
#[test]
fn a_target_that_hides_its_tag_list_is_compared_tag_by_tag() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(46, 2, 1000);
    push(&src, "app", "1", &img);
    push(&src, "app", "2", &img);
    let sbom = image::sbom(&img.descriptor(), 1);
    let client = RawClient::for_registry(&src);
    client.push("app", None, &sbom);
    client.push_manifest(
        "app",
        &image::referrers_tag(&img.digest()),
        &image::referrers_index(&[&sbom]),
    );
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new(
        "GET",
        "/tags/list",
        Action::Respond {
            status: 404,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"404 page not found".to_vec(),
        },
    ));
    let c = cfg(
        &[(&src.host(), None), (&proxy.host(), None)],
        &format!(
            "  - source: {}/app\n    target: {}/app\n    type: repository\n    referrers: true\n",
            src.host(),
            proxy.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("2 copied"), "{}", o.stdout);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    assert_eq!(skopeo_digest(&dst, "app:2"), img.digest());
    let before = dst.access_log().len();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("2 up-to-date"), "{}", o.stdout);
    assert!(o.stdout.contains("0 referrers copied"), "{}", o.stdout);
    let log = &dst.access_log()[before..];
    assert!(log.iter().all(|e| !e.is_write()), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|e| e.method == "HEAD"
                && (e.path.ends_with("/manifests/1") || e.path.ends_with("/manifests/2")))
            .count(),
        2,
        "one HEAD per tag: {log:?}"
    );
}

/// On Docker Hub a manifest read is a counted pull and a HEAD is not: a tag the target lacks
/// is still HEADed first there, so an image that `mediaTypes` skips costs no pull.
#[test]
fn docker_hub_tags_are_headed_before_they_are_pulled() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(47, 1, 100);
    push(&src, "team/app", "1", &img);
    // `docker.io` is served by the test registry.
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - {{registry: docker.io, hostname: '{s}', tls: disabled}}\n  - {{registry: '{d}', tls: disabled}}\nsync:\n  - source: docker.io/team/app\n    target: {d}/app\n    type: repository\n",
        s = src.host(),
        d = dst.host()
    ));
    let before = src.access_log().len();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_digest(&dst, "app:1"), img.digest());
    let by_tag: Vec<String> = src.access_log()[before..]
        .iter()
        .filter(|e| e.path.ends_with("/manifests/1"))
        .map(|e| e.method.clone())
        .collect();
    assert_eq!(by_tag, vec!["HEAD"], "then the copy reads it by digest");
}

#[test]
fn registry_type_follows_the_catalog_and_repo_filters() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(50, 1, 100);
    for repo in ["team-a/app", "team-b/tool", "other/app"] {
        push(&src, repo, "1", &img);
    }
    let c = cfg(
        &[(&src.host(), None), (&dst.host(), None)],
        &format!(
            "  - source: {}\n    target: {}/mirror\n    type: registry\n    repos:\n      allow: ['team-.*/.*']\n",
            src.host(),
            dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "mirror/team-a/app"), vec!["1"]);
    assert_eq!(skopeo_list_tags(&dst, "mirror/team-b/tool"), vec!["1"]);
    let catalog = RawClient::for_registry(&dst).get("/v2/_catalog");
    let body = String::from_utf8_lossy(&catalog.body).into_owned();
    assert!(!body.contains("other"), "{body}");
}

#[test]
fn ocidir_round_trip_keeps_every_digest() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let multi = image::multi_arch(60, 2, 3000);
    push(&src, "app", "1", &multi);
    push(&src, "app", "2", &image::image(61, 1, 100));
    let dir = regferry_testkit::temp_dir();
    let layout = dir.path().join("layout");
    // parallel: 0 runs the entries in order, as an air-gap transfer would.
    let c = registry_config(
        &[(src.host(), None), (dst.host(), None)],
        "  parallel: 0\n",
        &format!(
            "  - source: {s}/app\n    target: ocidir://{l}\n    type: repository\n  - source: ocidir://{l}\n    target: {d}/app\n    type: repository\n",
            s = src.host(),
            d = dst.host(),
            l = layout.display()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    for tag in ["1", "2"] {
        assert_same(&src, &dst, &format!("app:{tag}"), &format!("app:{tag}"));
        let via_skopeo = regferry_testkit::skopeo::skopeo(&[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", layout.display()),
        ]);
        assert_eq!(
            via_skopeo,
            skopeo_inspect_raw(&src, &format!("app:{tag}")),
            "layout tag {tag}"
        );
    }
}

#[test]
fn basic_and_token_auth() {
    let src = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Htpasswd {
            user: "alice",
            pass: "s3cret-alice",
        },
        ..RegistryOptions::default()
    });
    let issuer = TokenIssuer::for_user("bob", "s3cret-bob");
    let dst = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..RegistryOptions::default()
    });
    let img = image::multi_arch(70, 1, 1000);
    push(&src, "app", "1", &img);
    let entry = format!(
        "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n",
        src.host(),
        dst.host()
    );
    let c = cfg(
        &[
            (&src.host(), Some(("alice", "s3cret-alice"))),
            (&dst.host(), Some(("bob", "s3cret-bob"))),
        ],
        &entry,
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same(&src, &dst, "app:1", "app:1");
    assert!(
        issuer.fetched_scope("repository:app:pull,push"),
        "{:?}",
        issuer.requests()
    );
    for secret in ["s3cret-alice", "s3cret-bob"] {
        assert!(!o.stderr.contains(secret) && !o.stdout.contains(secret));
    }
    // A wrong password fails clearly, without printing it.
    let bad = cfg(
        &[
            (&src.host(), Some(("alice", "wrong-pass"))),
            (&dst.host(), Some(("bob", "s3cret-bob"))),
        ],
        &entry,
    );
    let o = regferry(&["check"], &bad);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("401") || o.stdout.to_lowercase().contains("auth"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("wrong-pass") && !o.stderr.contains("wrong-pass"));
}

/// A registry behind a fault proxy: transient faults are retried and the copy completes;
/// persistent corruption fails the tag and leaves no tag pointing at anything incomplete.
#[test]
fn faults_are_retried_or_reported_never_corrupt() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(80, 2, 300_000);
    push(&src, "app", "1", &img);
    let proxy = FaultProxy::start(&src);
    let layer = img.layers[0].digest();
    proxy.add_rule(
        Rule::new(
            "*",
            "/manifests/1",
            Action::respond(429, &[("Retry-After", "1")]),
        )
        .times(1),
    );
    proxy.add_rule(Rule::new("GET", "/tags/list", Action::respond(503, &[])).times(2));
    proxy.add_rule(
        Rule::new(
            "GET",
            &format!("/blobs/{layer}"),
            Action::ResetAfter(70_000),
        )
        .times(1),
    );
    proxy.add_rule(
        Rule::new(
            "GET",
            &format!("/blobs/{}", img.layers[1].digest()),
            Action::TruncateAfter(1000),
        )
        .times(1),
    );
    proxy.add_rule(
        Rule::new(
            "GET",
            &format!("/blobs/{}", img.config.digest()),
            Action::CorruptAt(3),
        )
        .times(1),
    );
    let c = one_entry(&proxy.host(), "app", &dst.host(), "app", "repository");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same(&src, &dst, "app:1", "app:1");
    assert!(
        proxy.count("*", "/manifests/1") >= 2,
        "{:?}",
        proxy.requests()
    );
    assert!(proxy.count("GET", "/tags/list") >= 3);

    // Corrupt every time: the tag fails, and the target never gets the tag.
    let img2 = image::image(81, 1, 50_000);
    push(&src, "app", "2", &img2);
    proxy.clear_rules();
    proxy.add_rule(Rule::new(
        "GET",
        &format!("/blobs/{}", img2.layers[0].digest()),
        Action::CorruptAt(10),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("failed"), "{}", o.stdout);
    assert!(
        o.stdout.contains("hashes to"),
        "the reason names the digest mismatch: {}",
        o.stdout
    );
    assert_eq!(
        skopeo_list_tags(&dst, "app"),
        vec!["1"],
        "no tag for the incomplete image"
    );
    let head = RawClient::for_registry(&dst)
        .send(
            "HEAD",
            &format!("/v2/app/blobs/{}", img2.layers[0].digest()),
            &[],
            &[],
        )
        .unwrap();
    assert_eq!(head.status, 404, "the corrupt blob was never committed");
}

#[test]
fn a_target_that_refuses_writes_fails_the_tag_and_the_run() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src, "app", "1", &image::image(90, 1, 100));
    let proxy = FaultProxy::start(&dst);
    proxy.add_rule(Rule::new("PUT", "/manifests/", Action::respond(503, &[])));
    let c = one_entry(&src.host(), "app:1", &proxy.host(), "app:1", "image");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("503"), "{}", o.stdout);
    assert!(
        proxy.count("PUT", "/manifests/") >= 2,
        "retried before giving up"
    );
    let head = RawClient::for_registry(&dst)
        .send("HEAD", "/v2/app/manifests/1", &[], &[])
        .unwrap();
    assert_eq!(head.status, 404);
}

#[test]
fn pull_only_mirrors_serve_reads_with_the_upstream_named() {
    let (upstream, mirror, dst) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let img = image::image(100, 2, 20_000);
    // The image exists only on the mirror; the upstream is empty.
    push(&mirror, "library/app", "1", &img);
    let c = cfg(
        &[
            (&upstream.host(), None),
            (&mirror.host(), None),
            (&dst.host(), None),
        ],
        &format!(
            "  - source: {}/library/app:1\n    target: {}/app:1\n    type: image\n",
            upstream.host(),
            dst.host()
        ),
    );
    let text = std::fs::read_to_string(c.path()).unwrap().replacen(
        &format!("  - registry: {}\n    tls: disabled\n", upstream.host()),
        &format!(
            "  - registry: {}\n    tls: disabled\n    mirrors: ['{}']\n",
            upstream.host(),
            mirror.host()
        ),
        1,
    );
    std::fs::write(c.path(), text).unwrap();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_digest(&dst, "app:1"), img.digest());
    let ns = format!("ns={}", upstream.host().replace(':', "%3A"));
    let mirror_reads = mirror
        .access_log()
        .into_iter()
        .filter(|e| e.path.contains(&ns))
        .count();
    assert!(
        mirror_reads >= 4,
        "mirror reads carry ?ns=: {:?}",
        mirror.access_log()
    );
    assert!(upstream.access_log().iter().all(|e| !e.is_write()));
}

#[test]
fn blob_max_sends_blobs_in_chunks() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(110, 1, 300_000);
    push(&src, "app", "1", &img);
    let c = one_entry(&src.host(), "app:1", &dst.host(), "app:1", "image");
    let text = std::fs::read_to_string(c.path()).unwrap().replacen(
        &format!("  - registry: {}\n    tls: disabled\n", dst.host()),
        &format!(
            "  - registry: {}\n    tls: disabled\n    blobMax: 1\n    blobChunk: 65536\n",
            dst.host()
        ),
        1,
    );
    std::fs::write(c.path(), text).unwrap();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same(&src, &dst, "app:1", "app:1");
    let patches = dst
        .access_log()
        .iter()
        .filter(|e| e.method == "PATCH")
        .count();
    // 300000 bytes in 64 KiB chunks is 5 PATCHes, plus one for the config blob.
    assert_eq!(patches, 6, "{:?}", dst.access_log());
}

#[test]
fn abort_on_error_stops_the_run_and_without_it_the_rest_goes_on() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src, "good", "1", &image::image(120, 1, 100));
    let entries = format!(
        "  - source: {s}/missing:1\n    target: {d}/missing:1\n    type: image\n  - source: {s}/good:1\n    target: {d}/good:1\n    type: image\n",
        s = src.host(),
        d = dst.host()
    );
    let c = cfg(&[(&src.host(), None), (&dst.host(), None)], &entries);
    let sequential = std::fs::read_to_string(c.path())
        .unwrap()
        .replace("parallel: 2", "parallel: 0");
    std::fs::write(c.path(), sequential).unwrap();
    let o = regferry(&["once", "--abort-on-error"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("not found"), "{}", o.stdout);
    let head = RawClient::for_registry(&dst)
        .send("HEAD", "/v2/good/manifests/1", &[], &[])
        .unwrap();
    assert_eq!(head.status, 404, "aborted before the second entry");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "a failure still fails the run");
    assert_eq!(
        skopeo_list_tags(&dst, "good"),
        vec!["1"],
        "the other entry was copied"
    );
}

/// `repoAuth: true` keeps auth state per repository, as regclient does: each repository
/// learns its own challenge (one 401 each), for registries whose challenge differs by
/// repository. Without it, what the first repository learned is used for the next (one 401
/// in all).
#[test]
fn repo_auth_keeps_a_challenge_per_repository() {
    let issuer = TokenIssuer::for_user("bob", "bob-pw");
    let src = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..RegistryOptions::default()
    });
    let client = RawClient::for_registry(&src);
    for repo in ["one/app", "two/app"] {
        client.push(repo, Some("1"), &image::image(5100, 1, 200));
    }
    let dst = TestRegistry::start();
    let unauthorized = |repo_auth: bool| {
        let before = src.access_log().len();
        let c = ConfigFile::new(&format!(
            "defaults:\n  skipDockerConfig: true\n  parallel: 0\ncreds:\n  - registry: {s}\n    \
             tls: disabled\n    user: bob\n    pass: bob-pw\n    repoAuth: {repo_auth}\n  - \
             registry: {d}\n    tls: disabled\nsync:\n  - source: {s}/one/app:1\n    target: \
             {d}/{repo_auth}/one:1\n    type: image\n  - source: {s}/two/app:1\n    target: \
             {d}/{repo_auth}/two:1\n    type: image\n",
            s = src.host(),
            d = dst.host(),
        ));
        let o = regferry(&["once"], &c);
        assert_eq!(o.code, 0, "{}", o.all());
        let mut repos: Vec<String> = src.access_log()[before..]
            .iter()
            .filter(|e| e.status == 401 && e.user_agent.starts_with("regferry"))
            .map(|e| {
                e.path
                    .split("/manifests/")
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        repos.sort();
        repos
    };
    assert_eq!(unauthorized(false), ["/v2/one/app"]);
    assert_eq!(unauthorized(true), ["/v2/one/app", "/v2/two/app"]);
}

/// A plain-HTTP registry configured without `tls: disabled` is told at once, in words that
/// say what to change, without retrying a request that cannot succeed.
#[test]
fn a_plain_http_registry_without_tls_disabled_is_named_at_once() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(&src, "app", "1", &image::image(5200, 1, 100));
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\ncreds:\n  - registry: {d}\n    tls: disabled\n\
         sync:\n  - source: {s}/app:1\n    target: {d}/app:1\n    type: image\n",
        s = src.host(),
        d = dst.host(),
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}", o.all());
    assert!(
        o.all().contains(&format!(
            "answered plain HTTP to an HTTPS request: set `tls: disabled` for {}",
            src.host()
        )),
        "{}",
        o.all()
    );
    assert!(!o.all().contains("Retrying request"), "{}", o.all());
    assert!(!o.all().contains("InvalidContentType"), "{}", o.all());
}

/// Ctrl-C in the middle of `once`: the copies in flight stop within seconds (not when a
/// slow source finishes), the upload sessions they opened on the target are cancelled, the
/// summary is printed, no tag is written, and the exit code is 130 (143 for SIGTERM).
#[test]
// A separate process driven from a plain thread: there is no tokio clock to pause here.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn an_interrupted_once_cancels_its_uploads_prints_its_summary_and_exits_130() {
    use std::process::{Command, Stdio};
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let (src, dst) = (TestRegistry::start(), TestRegistry::start());
        push(&src, "app", "1", &image::image(5300, 1, 200_000));
        let proxy = FaultProxy::start(&src);
        // The source sends its blobs a byte at a time: the copy is under way for ages.
        proxy.add_rule(Rule::new(
            "GET",
            "/blobs/",
            Action::Trickle(std::time::Duration::from_millis(20)),
        ));
        let c = cfg(
            &[(&proxy.host(), None), (&dst.host(), None)],
            &format!(
                "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n",
                proxy.host(),
                dst.host()
            ),
        );
        let dir = regferry_testkit::temp_dir();
        let out = dir.path().join("stdout");
        let mut child = Command::new(BIN)
            .args(["once", "-c"])
            .arg(c.path())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let opened = || {
            dst.access_log().iter().any(|e| {
                e.method == "POST" && e.path.contains("/blobs/uploads/") && e.status == 202
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !opened() {
            assert!(std::time::Instant::now() < deadline, "no upload was opened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let sent = std::time::Instant::now();
        assert!(
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                sent.elapsed() < std::time::Duration::from_secs(30),
                "{signal}: still running"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(code), "{signal}");
        let summary = std::fs::read_to_string(&out).unwrap();
        assert!(summary.contains("interrupted"), "{signal}: {summary}");
        let log = dst.access_log();
        assert!(
            log.iter()
                .any(|e| e.method == "DELETE" && e.path.contains("/blobs/uploads/")),
            "{signal}: the open upload session was not cancelled: {log:?}"
        );
        assert!(
            !log.iter()
                .any(|e| e.method == "PUT" && e.path.contains("/manifests/")),
            "{signal}: nothing tagged"
        );
    }
}

/// `limits.idleTimeout` is the longest silence, not a total: an upload that streams for
/// longer than it (a slow source, a big layer on a slow link) completes while its bytes
/// keep flowing. reqwest's own read timeout runs from the start of a request until its
/// answer, which for an upload means the whole upload.
#[test]
fn an_upload_that_outlasts_the_idle_timeout_while_its_bytes_flow_completes() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(5400, 1, 3_000);
    push(&src, "app", "1", &img);
    let proxy = FaultProxy::start(&src);
    // About 3 s per layer, a byte every millisecond: never silent for long.
    proxy.add_rule(Rule::new(
        "GET",
        &format!("/blobs/{}", img.layers[0].digest()),
        Action::Trickle(std::time::Duration::from_millis(1)),
    ));
    let c = registry_config(
        &[(proxy.host(), None), (dst.host(), None)],
        "  limits: {idleTimeout: 1s, minSpeed: 100}\n",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n",
            proxy.host(),
            dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.all().contains("timed out"), "{}", o.all());
    assert_eq!(skopeo_digest(&dst, "app:1"), img.digest());
}

/// An upload that waits for a request slot (another upload holds the only one) is not
/// counted as silent while it waits: its idle timeout starts when it is sent.
#[test]
fn an_upload_waiting_for_a_request_slot_is_not_given_up_as_silent() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(5410, 2, 2_000);
    push(&src, "app", "1", &img);
    let proxy = FaultProxy::start(&src);
    // Each layer takes about 2 s to arrive, a byte a millisecond, and holds the target's
    // only request slot meanwhile; the other waits for it longer than the idle timeout.
    proxy.add_rule(Rule::regex(
        "GET",
        &format!(
            "/blobs/({}|{})",
            img.layers[0].digest(),
            img.layers[1].digest()
        ),
        Action::Trickle(std::time::Duration::from_millis(1)),
    ));
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\n  limits: {{idleTimeout: 1s, minSpeed: 100}}\ncreds:\n  - registry: {s}\n    tls: disabled\n  - registry: {d}\n    tls: disabled\n    reqConcurrent: 1\nsync:\n  - source: {s}/app:1\n    target: {d}/app:1\n    type: image\n",
        s = proxy.host(),
        d = dst.host()
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    assert!(!o.all().contains("Retrying"), "{}", o.all());
    assert_eq!(skopeo_digest(&dst, "app:1"), img.digest());
}
