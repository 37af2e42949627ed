//! Referrers (SBOMs, provenance, VEX, signatures), digest tags and backups, end to end:
//! `regferry once`, `check` and `artifact list` against real registries (Debian's
//! distribution 2.8, which has no referrers API, so the `sha256-<hex>` fallback tags are
//! used), against the fault proxy scripted to serve the OCI 1.1 referrers API in front of one
//! ([`ReferrersApi`]), and through OCI layouts. What arrived is read back with skopeo and raw
//! HTTP reads, never with regferry itself, except `artifact list`, which is under test.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use regferry_testkit::cli::{ConfigFile, RunOutput, registry_config, run_regferry};
use regferry_testkit::image::{
    self, ACCEPT_ALL, Image, Platform, referrers_index, referrers_tag, sha256_digest,
};
use regferry_testkit::{
    Action, Auth, Content, FaultProxy, RawClient, ReferrersApi, RegistryOptions, Rule,
    TestRegistry, TokenIssuer, assert_same_manifests, skopeo_digest, skopeo_inspect_raw,
    skopeo_list_tags,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_regferry");
const SPDX: &str = image::SPDX;
const IN_TOTO: &str = "application/vnd.in-toto+json";
const VEX: &str = "application/vnd.openvex+json";
const SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

fn htpasswd<'a>(user: &'a str, pass: &'a str) -> RegistryOptions<'a> {
    RegistryOptions {
        auth: Auth::Htpasswd { user, pass },
        ..RegistryOptions::default()
    }
}

/// A config: `hosts` get `tls: disabled` (and a login when given); `defaults` are extra lines
/// under `defaults:` (indented by two spaces); `sync` is the list of entries.
fn config(hosts: &[(String, Option<(&str, &str)>)], defaults: &str, sync: &str) -> ConfigFile {
    registry_config(hosts, defaults, sync)
}

/// Plain hosts without logins.
fn plain(regs: &[&str]) -> Vec<(String, Option<(&'static str, &'static str)>)> {
    regs.iter().map(|h| ((*h).to_owned(), None)).collect()
}

fn run(args: &[&str], c: &ConfigFile) -> RunOutput {
    run_regferry(BIN, args, c)
}

/// `once`, which must succeed.
fn once_ok(c: &ConfigFile) -> RunOutput {
    let o = run(&["once"], c);
    assert_eq!(o.code, 0, "once failed:\n{}", o.all());
    o
}

/// `regferry artifact list --format json REF` (with the config's creds), which must succeed.
fn artifact_list(c: &ConfigFile, reference: &str) -> Value {
    let o = run(&["artifact", "list", "--format", "json", reference], c);
    assert_eq!(o.code, 0, "artifact list {reference}:\n{}", o.all());
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("artifact list JSON ({e}):\n{}", o.stdout))
}

/// Every (subject, referrer) pair an `artifact list` shows, nested ones included.
fn edges(list: &Value) -> BTreeSet<(String, String)> {
    fn walk(subject: &str, refs: &Value, out: &mut BTreeSet<(String, String)>) {
        for r in refs.as_array().into_iter().flatten() {
            let d = r["digest"].as_str().expect("referrer digest");
            assert!(
                out.insert((subject.to_owned(), d.to_owned())),
                "{d} listed twice under {subject}"
            );
            walk(d, &r["referrers"], out);
        }
    }
    let mut out = BTreeSet::new();
    for s in list.as_array().expect("a list of subjects") {
        walk(
            s["digest"].as_str().expect("subject digest"),
            &s["referrers"],
            &mut out,
        );
    }
    out
}

/// Artifact type of every referrer an `artifact list` shows.
fn artifact_types(list: &Value) -> BTreeMap<String, String> {
    fn walk(refs: &Value, out: &mut BTreeMap<String, String>) {
        for r in refs.as_array().into_iter().flatten() {
            out.insert(
                r["digest"].as_str().expect("digest").to_owned(),
                r["artifact_type"].as_str().unwrap_or("").to_owned(),
            );
            walk(&r["referrers"], out);
        }
    }
    let mut out = BTreeMap::new();
    for s in list.as_array().expect("a list of subjects") {
        walk(&s["referrers"], &mut out);
    }
    out
}

fn edge(subject: &str, referrer: &str) -> (String, String) {
    (subject.to_owned(), referrer.to_owned())
}

/// The digests `reg`'s fallback tag for `subject` lists, read raw; empty without the tag.
fn fallback(reg: &TestRegistry, repo: &str, subject: &str) -> Vec<String> {
    let r = RawClient::for_registry(reg).get_manifest(repo, &referrers_tag(subject));
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(
        r.status,
        200,
        "{repo}:{}: {}",
        referrers_tag(subject),
        r.text()
    );
    let v: Value = serde_json::from_slice(&r.body).expect("fallback index JSON");
    assert_eq!(v["mediaType"], image::OCI_INDEX, "{v}");
    v["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|d| d["digest"].as_str().expect("digest").to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn digests(list: &[&Image]) -> Vec<String> {
    sorted(list.iter().map(|i| i.digest()).collect())
}

/// Whether `repo` on `reg` has the manifest `digest` (a raw HEAD).
fn has(reg: &TestRegistry, repo: &str, digest: &str) -> bool {
    let path = format!("/v2/{repo}/manifests/{digest}");
    let r = RawClient::for_registry(reg)
        .request("HEAD", &path, &[("Accept", ACCEPT_ALL)], &[])
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
    assert!(matches!(r.status, 200 | 404), "HEAD {path}: {}", r.status);
    r.status == 200
}

/// Manifest PUTs `reg` served for exactly this path.
fn puts(reg: &TestRegistry, path: &str) -> usize {
    reg.access_log()
        .iter()
        .filter(|e| e.method == "PUT" && e.path == path)
        .count()
}

/// The referrer `digest` in `dst_repo` on `dst` has exactly the bytes it has in `src_repo` on
/// `src`, and they hash to the digest; its layers are there too.
fn assert_same_referrer(
    src: &TestRegistry,
    src_repo: &str,
    dst: &TestRegistry,
    dst_repo: &str,
    referrer: &Image,
) {
    let d = referrer.digest();
    let copied = skopeo_inspect_raw(dst, &format!("{dst_repo}@{d}"));
    assert_eq!(
        sha256_digest(&copied),
        d,
        "{dst_repo}@{d} hashes differently"
    );
    assert_eq!(
        copied,
        skopeo_inspect_raw(src, &format!("{src_repo}@{d}")),
        "{dst_repo}@{d}: bytes differ from the source"
    );
    for blob in referrer.blobs() {
        let path = format!("/v2/{dst_repo}/blobs/{}", blob.digest());
        let head = RawClient::for_registry(dst)
            .request("HEAD", &path, &[], &[])
            .unwrap();
        assert_eq!(head.status, 200, "{path}");
    }
}

/// An SLSA provenance statement about `subject` (an in-toto attestation).
fn provenance(subject: &image::Descriptor, builder: &str) -> Image {
    let doc = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"digest": {"sha256": subject.digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {"runDetails": {"builder": {"id": builder}}},
    });
    image::artifact(
        subject,
        IN_TOTO,
        doc.to_string().as_bytes(),
        &[("org.opencontainers.image.created", "2024-01-01T00:00:00Z")],
    )
}

/// An OpenVEX document about `subject`.
fn vex(subject: &image::Descriptor, annotations: &[(&str, &str)]) -> Image {
    let doc = serde_json::json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://example.invalid/vex/{}", subject.digest),
        "statements": [],
    });
    image::artifact(subject, VEX, doc.to_string().as_bytes(), annotations)
}

/// A signature of `subject` (cosign's OCI 1.1 form).
fn signature(subject: &image::Descriptor, seed: u8) -> Image {
    image::artifact(
        subject,
        SIG,
        &[seed; 64],
        &[("dev.cosignproject.cosign/signature", "MEUCIQDtest")],
    )
}

/// The seed scenario: the image in one registry, its attestations in a second registry with
/// other credentials (token auth), mirrored into one target repository.
#[test]
fn attestations_from_a_separate_registry_arrive_under_every_subject() {
    let a = TestRegistry::start_with(htpasswd("alice", "alice-pw"));
    let issuer = TokenIssuer::for_user("bob", "bob-pw");
    let b = TestRegistry::start_with(RegistryOptions {
        auth: Auth::Token { issuer: &issuer },
        ..RegistryOptions::default()
    });
    let t = TestRegistry::start_with(htpasswd("carol", "carol-pw"));

    let idx = image::multi_arch(1000, 1, 2048);
    RawClient::for_registry(&a).push("app", Some("1"), &idx);
    let amd = idx.child(&Platform::linux_amd64()).unwrap();
    let arm = idx.child(&Platform::linux_arm64()).unwrap();
    let sbom = image::sbom(&idx.manifest.descriptor(), 1);
    let vex_doc = vex(&idx.manifest.descriptor(), &[]);
    let prov_amd = provenance(&amd.descriptor(), "builder-amd64");
    let prov_arm = provenance(&arm.descriptor(), "builder-arm64");
    let sig = signature(&sbom.descriptor(), 1);
    let attest = RawClient::for_registry(&b);
    attest.publish_referrers("attest/app", &idx.digest(), &[&sbom, &vex_doc]);
    attest.publish_referrers("attest/app", &amd.digest(), &[&prov_amd]);
    attest.publish_referrers("attest/app", &arm.digest(), &[&prov_arm]);
    attest.publish_referrers("attest/app", &sbom.digest(), &[&sig]);

    let c = config(
        &[
            (a.host(), Some(("alice", "alice-pw"))),
            (b.host(), Some(("bob", "bob-pw"))),
            (t.host(), Some(("carol", "carol-pw"))),
        ],
        "",
        &format!(
            "  - source: {a}/app:1\n    target: {t}/app:1\n    type: image\n    referrers: true\n    referrerSource: {b}/attest/app\n    referrerTarget: {t}/app\n",
            a = a.host(),
            b = b.host(),
            t = t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("5 referrers copied"), "{}", o.stdout);
    assert_same_manifests(&a, &t, "app:1", "app:1");
    // The missing API is found out once per repository, not once per manifest.
    for (reg, name) in [(&b, "attestation source"), (&t, "target")] {
        let probes = reg
            .access_log()
            .iter()
            .filter(|e| e.path.contains("/referrers/"))
            .count();
        assert_eq!(probes, 1, "{name}: {:?}", reg.access_log());
    }

    let list = artifact_list(&c, &t.reference("app:1"));
    let subjects: Vec<(&str, Option<&str>)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["digest"].as_str().unwrap(), s["platform"].as_str()))
        .collect();
    assert_eq!(
        subjects,
        vec![
            (idx.digest().as_str(), None),
            (amd.digest().as_str(), Some("linux/amd64")),
            (arm.digest().as_str(), Some("linux/arm64")),
        ],
        "the index and each platform"
    );
    assert_eq!(
        edges(&list),
        BTreeSet::from([
            edge(&idx.digest(), &sbom.digest()),
            edge(&idx.digest(), &vex_doc.digest()),
            edge(&amd.digest(), &prov_amd.digest()),
            edge(&arm.digest(), &prov_arm.digest()),
            edge(&sbom.digest(), &sig.digest()),
        ]),
        "{list:#}"
    );
    assert_eq!(
        artifact_types(&list),
        BTreeMap::from([
            (sbom.digest(), SPDX.to_owned()),
            (vex_doc.digest(), VEX.to_owned()),
            (prov_amd.digest(), IN_TOTO.to_owned()),
            (prov_arm.digest(), IN_TOTO.to_owned()),
            (sig.digest(), SIG.to_owned()),
        ])
    );
    let o = run(
        &[
            "artifact",
            "list",
            "--format",
            "json",
            "--platform",
            "linux/arm64",
            &t.reference("app:1"),
        ],
        &c,
    );
    assert_eq!(o.code, 0, "{}", o.all());
    let arm_only: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(
        edges(&arm_only),
        BTreeSet::from([edge(&arm.digest(), &prov_arm.digest())]),
        "--platform shows that platform's manifest only"
    );
    for r in [&sbom, &vex_doc, &prov_amd, &prov_arm, &sig] {
        assert_same_referrer(&b, "attest/app", &t, "app", r);
    }
    // What another client without the referrers API (oras, cosign) reads on the target.
    assert_eq!(
        sorted(fallback(&t, "app", &idx.digest())),
        digests(&[&sbom, &vex_doc])
    );
    assert_eq!(fallback(&t, "app", &sbom.digest()), vec![sig.digest()]);

    let writes = t.writes();
    let o = once_ok(&c);
    assert!(
        o.stdout.contains("0 referrers copied") && o.stdout.contains("1 up-to-date"),
        "{}",
        o.stdout
    );
    assert_eq!(t.writes(), writes, "{:?}", t.access_log());
}

/// A source registry with the referrers API: regferry lists through it, following every
/// `Link` page, and never needs the fallback tags (the source has none).
#[test]
fn a_source_with_the_referrers_api_is_listed_through_it_page_by_page() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let api = ReferrersApi::start(&src);
    api.set_page_size(1);
    let through = RawClient::new(&api.url());
    let img = image::image(2000, 1, 1024);
    through.push("app", Some("1"), &img);
    let sboms: Vec<Image> = (1..=3).map(|i| image::sbom(&img.descriptor(), i)).collect();
    for s in &sboms {
        through.push("app", None, s);
    }
    let sig = signature(&sboms[0].descriptor(), 2);
    through.push("app", None, &sig);
    assert_eq!(api.referrers("app", &img.digest()).len(), 3, "arranged");

    let c = config(
        &plain(&[&api.host(), &t.host()]),
        "",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n    referrers: true\n",
            api.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("4 referrers copied"), "{}", o.stdout);
    let all: Vec<&Image> = sboms.iter().collect();
    assert_eq!(sorted(fallback(&t, "app", &img.digest())), digests(&all));
    assert_eq!(fallback(&t, "app", &sboms[0].digest()), vec![sig.digest()]);
    for r in sboms.iter().chain([&sig]) {
        assert_eq!(
            skopeo_digest(&t, &format!("app@{}", r.digest())),
            r.digest()
        );
    }
    let listing = format!("/v2/app/referrers/{}", img.digest());
    let pages: Vec<String> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&listing))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        pages,
        vec![
            listing.clone(),
            format!("{listing}?page=1"),
            format!("{listing}?page=2")
        ],
        "one request per page"
    );
    let tag_reads: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/manifests/sha256-"))
        .collect();
    assert!(
        tag_reads.is_empty(),
        "the API was remembered; no fallback tag read: {tag_reads:?}"
    );
}

/// A target with the referrers API confirms each referrer with `OCI-Subject`, so no fallback
/// tag is written there, and `artifact list` reads the referrers back through the API.
#[test]
fn a_target_with_the_referrers_api_gets_no_fallback_tags() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let api = ReferrersApi::start(&t);
    let img = image::image(2100, 1, 1024);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let sbom = image::sbom(&img.descriptor(), 1);
    let prov = provenance(&img.descriptor(), "builder");
    let sig = signature(&sbom.descriptor(), 3);
    client.publish_referrers("app", &img.digest(), &[&sbom, &prov]);
    client.publish_referrers("app", &sbom.digest(), &[&sig]);

    let c = config(
        &plain(&[&src.host(), &api.host()]),
        "",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n    referrers: true\n",
            src.host(),
            api.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("3 referrers copied"), "{}", o.stdout);
    assert_eq!(
        skopeo_list_tags(&t, "app"),
        vec!["1"],
        "no sha256-<hex> tag on a registry that confirmed OCI-Subject"
    );
    assert_eq!(
        sorted(api.referrers("app", &img.digest())),
        digests(&[&sbom, &prov])
    );
    assert_eq!(api.referrers("app", &sbom.digest()), vec![sig.digest()]);
    for r in [&sbom, &prov, &sig] {
        assert_same_referrer(&src, "app", &t, "app", r);
    }

    api.proxy().clear_requests();
    let list = artifact_list(&c, &format!("{}/app:1", api.host()));
    assert_eq!(
        edges(&list),
        BTreeSet::from([
            edge(&img.digest(), &sbom.digest()),
            edge(&img.digest(), &prov.digest()),
            edge(&sbom.digest(), &sig.digest()),
        ])
    );
    assert!(
        api.proxy()
            .count("GET", &format!("/v2/app/referrers/{}", img.digest()))
            >= 1,
        "listed through the API: {:?}",
        api.requests()
    );
    // Up to date: the target's API already lists everything.
    let o = once_ok(&c);
    assert!(o.stdout.contains("0 referrers copied"), "{}", o.stdout);
}

/// `referrerFilters`: filters are ORed, fields within one ANDed, an empty annotation value only
/// asks for the key; an entry without the key inherits `defaults`, `[]` means no filter.
#[test]
fn referrer_filters_choose_exactly_which_referrers_arrive() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(3000, 1, 512);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let sbom = image::sbom(&img.descriptor(), 1);
    let prov = image::artifact(
        &img.descriptor(),
        IN_TOTO,
        b"{\"predicateType\":\"https://slsa.dev/provenance/v1\"}",
        &[("com.example.reviewed", "alice")],
    );
    let vex_doc = vex(&img.descriptor(), &[("com.example.team", "security")]);
    client.publish_referrers("app", &img.digest(), &[&sbom, &prov, &vex_doc]);

    let entry = |repo: &str, filters: &str| {
        format!(
            "  - source: {}/app:1\n    target: {}/{repo}/app:1\n    type: image\n{filters}",
            src.host(),
            t.host()
        )
    };
    let sync = [
        entry("inherit", ""),
        entry("all", "    referrerFilters: []\n"),
        entry(
            "sbom",
            &format!("    referrerFilters:\n      - artifactType: {SPDX}\n"),
        ),
        entry(
            "key",
            "    referrerFilters:\n      - annotations:\n          com.example.reviewed: \"\"\n",
        ),
        entry(
            "or-and",
            &format!(
                "    referrerFilters:\n      - artifactType: {SPDX}\n      - artifactType: {VEX}\n        annotations:\n          com.example.reviewed: \"\"\n"
            ),
        ),
    ]
    .concat();
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        &format!(
            "  parallel: 2\n  referrers: true\n  referrerFilters:\n    - artifactType: {VEX}\n"
        ),
        &sync,
    );
    once_ok(&c);
    let expected: [(&str, Vec<&Image>); 5] = [
        ("inherit", vec![&vex_doc]),
        ("all", vec![&sbom, &prov, &vex_doc]),
        ("sbom", vec![&sbom]),
        ("key", vec![&prov]),
        ("or-and", vec![&sbom]),
    ];
    for (repo, want) in expected {
        let repo = format!("{repo}/app");
        let present: Vec<String> = [&sbom, &prov, &vex_doc]
            .iter()
            .filter(|r| has(&t, &repo, &r.digest()))
            .map(|r| r.digest())
            .collect();
        assert_eq!(sorted(present), digests(&want), "manifests in {repo}");
        assert_eq!(
            sorted(fallback(&t, &repo, &img.digest())),
            digests(&want),
            "referrers listed in {repo}"
        );
    }
}

/// A `type: repository` sync lists the source's `sha256-<hex>` referrers index among its tags.
/// That tag is the referrers copy's business: copying it as an image would overwrite the
/// target's index with the source's, dropping entries only the target had, and bring every
/// referrer it lists along as its "children", past `referrerFilters`.
#[test]
fn a_repository_sync_leaves_the_referrers_index_to_the_referrers_copy() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(3500, 1, 512);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let sbom = image::sbom(&img.descriptor(), 1);
    let vex_doc = vex(&img.descriptor(), &[]);
    client.publish_referrers("app", &img.digest(), &[&sbom, &vex_doc]);
    let theirs = provenance(&img.descriptor(), "someone-else");
    RawClient::for_registry(&t).publish_referrers("app", &img.digest(), &[&theirs]);

    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "",
        &format!(
            "  - source: {}/app\n    target: {}/app\n    type: repository\n    referrers: true\n    referrerFilters:\n      - artifactType: {SPDX}\n",
            src.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    assert_eq!(
        sorted(fallback(&t, "app", &img.digest())),
        digests(&[&sbom, &theirs]),
        "the SBOM added, their entry kept, the VEX filtered out"
    );
    assert!(!has(&t, "app", &vex_doc.digest()), "filtered out");
    assert_eq!(
        skopeo_list_tags(&t, "app"),
        vec!["1".to_owned(), referrers_tag(&img.digest())]
    );
    let o = run(&["check"], &c);
    assert_eq!(o.code, 0, "in sync:\n{}", o.all());
}

/// Fallback indexes that form loops (a referrer listing its subject, itself, its parent):
/// regferry terminates and copies each referrer once.
#[test]
fn referrer_loops_terminate_and_copy_each_referrer_once() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(4000, 1, 512);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let r1 = image::sbom(&img.descriptor(), 1);
    let r2 = signature(&r1.descriptor(), 4);
    client.publish_referrers("app", &img.digest(), &[&r1]);
    client.publish_referrers("app", &r1.digest(), &[&r2]);
    // r2's fallback index lists its own subject r1, itself, and the image.
    client.push_manifest(
        "app",
        &referrers_tag(&r2.digest()),
        &referrers_index(&[&r1, &r2, &img]),
    );

    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n    referrers: true\n",
            src.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("2 referrers copied"), "{}", o.stdout);
    for r in [&r1, &r2] {
        assert_eq!(
            puts(&t, &format!("/v2/app/manifests/{}", r.digest())),
            1,
            "{} pushed once: {:?}",
            r.digest(),
            t.access_log()
        );
    }
    assert_eq!(
        puts(&t, &format!("/v2/app/manifests/{}", img.digest())),
        1,
        "the image is pushed once by digest (image first, tag last), not again as a referrer"
    );
    assert_eq!(fallback(&t, "app", &img.digest()), vec![r1.digest()]);
    assert_eq!(fallback(&t, "app", &r1.digest()), vec![r2.digest()]);
    let o = once_ok(&c);
    assert!(o.stdout.contains("0 referrers copied"), "{}", o.stdout);

    // Listing the looped source terminates too, each referrer shown once.
    let list = artifact_list(&c, &src.reference("app:1"));
    assert_eq!(
        edges(&list),
        BTreeSet::from([
            edge(&img.digest(), &r1.digest()),
            edge(&r1.digest(), &r2.digest())
        ])
    );
}

/// An image the source is known to keep no referrers for is pushed with its tag in one
/// PUT; one with referrers still goes image first, tag last.
#[test]
fn an_image_without_referrers_is_pushed_with_its_tag_at_once() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let client = RawClient::for_registry(&src);
    let signed = image::image(4100, 1, 512);
    client.push("signed", Some("1"), &signed);
    let sbom = image::sbom(&signed.descriptor(), 1);
    client.publish_referrers("signed", &signed.digest(), &[&sbom]);
    let unsigned = image::image(4200, 1, 512);
    client.push("unsigned", Some("1"), &unsigned);
    // `parallel: 0` runs the entries one after another: the first one's referrers teach the
    // run that the source has no referrers API.
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "  parallel: 0\n  referrers: true\n",
        &format!(
            "  - source: {s}/signed\n    target: {d}/signed\n    type: repository\n\
             \x20 - source: {s}/unsigned\n    target: {d}/unsigned\n    type: repository\n",
            s = src.host(),
            d = t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    let by_digest = |repo: &str, img: &image::Image| {
        puts(&t, &format!("/v2/{repo}/manifests/{}", img.digest()))
    };
    assert_eq!(
        by_digest("signed", &signed),
        1,
        "image first: {:?}",
        t.access_log()
    );
    assert_eq!(puts(&t, "/v2/signed/manifests/1"), 1, "tag last");
    assert_eq!(
        by_digest("unsigned", &unsigned),
        0,
        "no push by digest: {:?}",
        t.access_log()
    );
    assert_eq!(puts(&t, "/v2/unsigned/manifests/1"), 1);
    assert_eq!(
        skopeo_digest(&t, "unsigned:1"),
        unsigned.digest().to_string()
    );
    assert_eq!(
        fallback(&t, "signed", &signed.digest()),
        vec![sbom.digest()]
    );
}

/// `digestTags`: cosign-style `sha256-<hex>.sig|.att` tags come with the image; without it
/// they stay behind. The bare `sha256-<hex>` referrers index is never a digest tag.
#[test]
fn digest_tags_follow_the_image_only_when_asked() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(5000, 1, 512);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let bare = referrers_tag(&img.digest());
    let (sig_tag, att_tag) = (format!("{bare}.sig"), format!("{bare}.att"));
    let sig_img = image::image(5001, 1, 128);
    let att_img = image::image(5002, 1, 128);
    client.push("app", Some(&sig_tag), &sig_img);
    client.push("app", Some(&att_tag), &att_img);
    let sbom = image::sbom(&img.descriptor(), 1);
    client.publish_referrers("app", &img.digest(), &[&sbom]);

    let entry = |repo: &str, extra: &str| {
        format!(
            "  - source: {}/app:1\n    target: {}/{repo}/app:1\n    type: image\n{extra}",
            src.host(),
            t.host()
        )
    };
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "  parallel: 2\n",
        &[
            entry("both", "    digestTags: true\n    referrers: true\n"),
            entry("tags", "    digestTags: true\n"),
            entry("none", ""),
        ]
        .concat(),
    );
    let o = run(&["once", "--format", "json"], &c);
    assert_eq!(o.code, 0, "{}", o.all());
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    let copied_tags = |i: usize| {
        sorted(
            report["entries"][i]["tags"][0]["digest_tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect(),
        )
    };
    let want = vec![att_tag.clone(), sig_tag.clone()];
    assert_eq!(copied_tags(0), want, "{report:#}");
    assert_eq!(copied_tags(1), want, "{report:#}");
    assert_eq!(copied_tags(2), Vec::<String>::new(), "{report:#}");

    assert_eq!(
        skopeo_list_tags(&t, "both/app"),
        sorted(vec![
            "1".into(),
            bare.clone(),
            att_tag.clone(),
            sig_tag.clone()
        ])
    );
    assert_eq!(
        skopeo_list_tags(&t, "tags/app"),
        sorted(vec!["1".into(), att_tag.clone(), sig_tag.clone()]),
        "without referrers the bare referrers tag is not copied as a digest tag"
    );
    assert_eq!(skopeo_list_tags(&t, "none/app"), vec!["1"]);
    assert_eq!(
        skopeo_digest(&t, &format!("both/app:{sig_tag}")),
        sig_img.digest()
    );
    assert_eq!(
        skopeo_digest(&t, &format!("tags/app:{att_tag}")),
        att_img.digest()
    );
    assert_eq!(
        puts(&t, &format!("/v2/both/app/manifests/{bare}")),
        1,
        "the referrers index is written once, by the referrers copy"
    );
    assert_eq!(fallback(&t, "both/app", &img.digest()), vec![sbom.digest()]);

    let writes = t.writes();
    once_ok(&c);
    assert_eq!(
        t.writes(),
        writes,
        "nothing left to copy: {:?}",
        t.access_log()
    );
}

/// The current year as the local clock gives it (what `(time.Now).Format "2006"` prints).
fn year() -> String {
    let out = Command::new("date").arg("+%Y").output().expect("run date");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `backup`: a tag, a templated tag with the time, a full reference; a failing backup warns and
/// the sync goes on; an unchanged image is never backed up.
#[test]
fn backups_keep_the_overwritten_image() {
    let (src, t, refusing) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let proxy = FaultProxy::start(&refusing);
    proxy.add_rule(Rule::new("PUT", "", Action::respond(403, &[])));
    proxy.add_rule(Rule::new("POST", "", Action::respond(403, &[])));
    let (old, new) = (image::image(6000, 1, 700), image::image(6001, 1, 700));
    RawClient::for_registry(&src).push("app", Some("1"), &new);
    let target = RawClient::for_registry(&t);
    for repo in ["plain", "dated", "full", "failing"] {
        target.push(&format!("{repo}/app"), Some("1"), &old);
    }
    let entry = |repo: &str, backup: &str| {
        format!(
            "  - source: {}/app:1\n    target: {}/{repo}/app:1\n    type: image\n    backup: '{backup}'\n",
            src.host(),
            t.host()
        )
    };
    let c = config(
        &plain(&[&src.host(), &t.host(), &proxy.host()]),
        "  parallel: 2\n",
        &[
            entry("plain", "bkp-{{ .Ref.Tag }}"),
            entry("dated", "{{ .Ref.Tag }}-{{ (time.Now).Format \"2006\" }}"),
            entry("full", &format!("{}/backups/app:old", t.host())),
            entry("failing", &format!("{}/backups/app:old", proxy.host())),
        ]
        .concat(),
    );
    let before = year();
    let o = run(&["once"], &c);
    let after = year();
    assert_eq!(
        o.code,
        0,
        "a failed backup does not fail the run:\n{}",
        o.all()
    );
    assert!(
        o.stderr.contains("Backup failed"),
        "the failed backup is warned about:\n{}",
        o.stderr
    );
    for repo in ["plain", "dated", "full", "failing"] {
        assert_eq!(
            skopeo_digest(&t, &format!("{repo}/app:1")),
            new.digest(),
            "{repo}: synced"
        );
    }
    assert_eq!(skopeo_list_tags(&t, "plain/app"), vec!["1", "bkp-1"]);
    assert_eq!(skopeo_digest(&t, "plain/app:bkp-1"), old.digest());
    let dated = skopeo_list_tags(&t, "dated/app");
    let dated_tag = dated
        .iter()
        .find(|x| *x != "1")
        .cloned()
        .unwrap_or_default();
    assert!(
        dated.len() == 2 && [format!("1-{before}"), format!("1-{after}")].contains(&dated_tag),
        "{dated:?}"
    );
    assert_eq!(
        skopeo_digest(&t, &format!("dated/app:{dated_tag}")),
        old.digest()
    );
    assert_eq!(skopeo_list_tags(&t, "full/app"), vec!["1"]);
    assert_eq!(skopeo_digest(&t, "backups/app:old"), old.digest());
    assert!(
        !has(&refusing, "backups/app", "old"),
        "the refusing registry holds no backup"
    );
    assert!(
        proxy.count("*", "/v2/backups/app/") >= 1,
        "the backup was tried"
    );

    // Unchanged: no backups, nothing written anywhere.
    let writes = t.writes();
    proxy.clear_requests();
    let o = once_ok(&c);
    assert!(o.stdout.contains("4 up-to-date"), "{}", o.stdout);
    assert_eq!(t.writes(), writes, "{:?}", t.access_log());
    assert_eq!(proxy.requests(), Vec::new());
    assert_eq!(skopeo_list_tags(&t, "plain/app"), vec!["1", "bkp-1"]);
}

/// Two entries write the same subject's fallback index in the target at the same time, each
/// merging referrers from two sources; the index also has an entry only the target had. None
/// is lost.
///
/// Each entry selects a disjoint half of the 12 SBOMs (by annotation), so an entry lost to a
/// read-merge-write race is never re-added by the other writer, and reads of the index are
/// slowed down so that the two writers' read-merge-write windows overlap.
#[test]
fn concurrent_fallback_index_updates_lose_no_entry() {
    let (src, b, t) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let slow = FaultProxy::start(&t);
    slow.add_rule(Rule::new(
        "GET",
        "/manifests/sha256-",
        Action::Delay(std::time::Duration::from_millis(40)),
    ));
    let img = image::image(7000, 1, 512);
    RawClient::for_registry(&src).push("app", Some("1"), &img);
    let sboms: Vec<Image> = (0..12)
        .map(|i| {
            let doc = format!("{{\"spdxVersion\":\"SPDX-2.3\",\"name\":\"part-{i}\"}}");
            let half = if i % 2 == 0 { "a" } else { "b" };
            image::artifact(
                &img.descriptor(),
                SPDX,
                doc.as_bytes(),
                &[("com.example.half", half)],
            )
        })
        .collect();
    let attest = RawClient::for_registry(&b);
    let (first, second): (Vec<&Image>, Vec<&Image>) =
        (sboms[..6].iter().collect(), sboms[6..].iter().collect());
    attest.publish_referrers("att1/app", &img.digest(), &first);
    attest.publish_referrers("att2/app", &img.digest(), &second);
    // Someone else's referrer, known only to the target.
    let theirs = vex(&img.descriptor(), &[("com.example.owner", "someone-else")]);
    RawClient::for_registry(&t).publish_referrers("app", &img.digest(), &[&theirs]);

    let (b1, b2) = (
        format!("{}/att1/app", b.host()),
        format!("{}/att2/app", b.host()),
    );
    let entry = |tag: &str, sources: &str, half: &str| {
        format!(
            "  - source: {s}/app:1\n    target: {t}/app:{tag}\n    type: image\n    referrers: true\n    referrerSource: [{sources}]\n    referrerTarget: {t}/app\n    referrerFilters:\n      - annotations:\n          com.example.half: {half}\n",
            s = src.host(),
            t = slow.host()
        )
    };
    let c = config(
        &plain(&[&src.host(), &b.host(), &slow.host()]),
        "  parallel: 4\n",
        &[
            entry("1", &format!("{b1}, {b2}"), "a"),
            entry("latest", &format!("{b2}, {b1}"), "b"),
        ]
        .concat(),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("12 referrers copied"), "{}", o.stdout);
    let listed = fallback(&t, "app", &img.digest());
    let mut want: Vec<&Image> = sboms.iter().collect();
    want.push(&theirs);
    assert_eq!(listed.len(), 13, "no duplicates: {listed:?}");
    assert_eq!(sorted(listed), digests(&want), "all 12 and theirs");
    for s in &sboms {
        assert!(has(&t, "app", &s.digest()));
    }
    // Their entry is kept as they wrote it, annotations included.
    let index: Value = serde_json::from_slice(
        &RawClient::for_registry(&t)
            .get_manifest("app", &referrers_tag(&img.digest()))
            .body,
    )
    .unwrap();
    let kept = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["digest"] == theirs.digest().as_str())
        .unwrap();
    assert_eq!(kept["annotations"]["com.example.owner"], "someone-else");
    assert_eq!(kept["artifactType"], VEX);
}

/// An image already in sync still gets referrers added to its source later, unless
/// `fastCheck` (or `fastCopy`) says a matching digest is enough.
#[test]
fn unchanged_images_still_get_new_referrers_unless_fast_check() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(8000, 1, 512);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    let s1 = image::sbom(&img.descriptor(), 1);
    client.publish_referrers("app", &img.digest(), &[&s1]);
    let cfg = |extra: &str| {
        config(
            &plain(&[&src.host(), &t.host()]),
            "",
            &format!(
                "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n    referrers: true\n{extra}",
                src.host(),
                t.host()
            ),
        )
    };
    let c = cfg("");
    once_ok(&c);
    assert_eq!(fallback(&t, "app", &img.digest()), vec![s1.digest()]);

    let s2 = image::sbom(&img.descriptor(), 2);
    client.publish_referrers("app", &img.digest(), &[&s1, &s2]);
    let o = run(&["check", "--format", "json"], &c);
    assert_eq!(o.code, 3, "a missing referrer is drift:\n{}", o.all());
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    let tag = &report["entries"][0]["tags"][0];
    assert_eq!(tag["state"], "up-to-date", "{report:#}");
    let missing: Vec<&str> = tag["referrers"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["digest"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(missing, vec![s2.digest().as_str()], "{report:#}");
    assert!(!has(&t, "app", &s2.digest()), "check wrote nothing");
    let o = once_ok(&c);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    assert_eq!(
        sorted(fallback(&t, "app", &img.digest())),
        digests(&[&s1, &s2])
    );

    let s3 = image::sbom(&img.descriptor(), 3);
    client.publish_referrers("app", &img.digest(), &[&s1, &s2, &s3]);
    for fast in ["    fastCheck: true\n", "    fastCopy: true\n"] {
        let f = cfg(fast);
        let writes = t.writes();
        let o = once_ok(&f);
        assert!(
            o.stdout.contains("0 referrers copied"),
            "{fast}{}",
            o.stdout
        );
        assert_eq!(t.writes(), writes, "{fast}");
        let o = run(&["check"], &f);
        assert_eq!(o.code, 0, "{fast}{}", o.all());
    }
    assert!(!has(&t, "app", &s3.digest()));
    // Without it, the third one comes (so the runs above had something to skip).
    let o = once_ok(&c);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    assert!(has(&t, "app", &s3.digest()));
}

/// Registry → OCI layout → registry (an air gap): the referrers survive both hops.
#[test]
fn referrers_survive_an_ocidir_hop() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let idx = image::multi_arch(9000, 1, 1500);
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &idx);
    let amd = idx.child(&Platform::linux_amd64()).unwrap();
    let sbom = image::sbom(&idx.manifest.descriptor(), 1);
    let prov = provenance(&amd.descriptor(), "builder");
    let sig = signature(&sbom.descriptor(), 5);
    client.publish_referrers("app", &idx.digest(), &[&sbom]);
    client.publish_referrers("app", &amd.digest(), &[&prov]);
    client.publish_referrers("app", &sbom.digest(), &[&sig]);
    let expected = BTreeSet::from([
        edge(&idx.digest(), &sbom.digest()),
        edge(&amd.digest(), &prov.digest()),
        edge(&sbom.digest(), &sig.digest()),
    ]);

    let dir = regferry_testkit::temp_dir();
    let layout = dir.path().join("layout");
    let c = config(
        &plain(&[&src.host(), &dst.host()]),
        // One entry after the other, as an air-gap transfer would run.
        "  parallel: 0\n  referrers: true\n",
        &format!(
            "  - source: {s}/app:1\n    target: ocidir://{l}:1\n    type: image\n  - source: ocidir://{l}:1\n    target: {d}/app:1\n    type: image\n",
            s = src.host(),
            d = dst.host(),
            l = layout.display()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("6 referrers copied"), "{}", o.stdout);

    let in_layout = artifact_list(&c, &format!("ocidir://{}:1", layout.display()));
    assert_eq!(edges(&in_layout), expected, "{in_layout:#}");
    for r in [&sbom, &prov, &sig] {
        let hex = r.digest().trim_start_matches("sha256:").to_owned();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(&hex)).unwrap();
        assert_eq!(bytes, r.manifest.bytes, "{} in the layout", r.digest());
    }
    let final_list = artifact_list(&c, &dst.reference("app:1"));
    assert_eq!(edges(&final_list), expected, "{final_list:#}");
    assert_same_manifests(&src, &dst, "app:1", "app:1");
    for r in [&sbom, &prov, &sig] {
        assert_same_referrer(&src, "app", &dst, "app", r);
    }
}

/// A layout written by ORAS keeps referrers as untagged entries of `index.json`, with no
/// `sha256-<hex>` index. `referrerSlow` (regsync's name) finds them by reading every
/// manifest the layout lists; without it they are not seen.
#[test]
fn referrer_slow_finds_referrers_a_layout_lists_without_an_index() {
    let dst = TestRegistry::start();
    let dir = regferry_testkit::temp_dir();
    let mut layout = image::OciLayout::create(&dir.path().join("layout"));
    let img = image::image(9100, 1, 800);
    layout.add(&img, Some("1"));
    let sbom = image::sbom(&img.descriptor(), 1);
    layout.add_untagged(&sbom);
    let run_with = |slow: bool| {
        let c = config(
            &plain(&[&dst.host()]),
            "",
            &format!(
                concat!(
                    "  - source: ocidir://{l}:1\n    target: {d}/{repo}:1\n    type: image\n",
                    "    referrers: true\n    referrerSlow: {slow}\n"
                ),
                l = layout.dir().display(),
                d = dst.host(),
                repo = if slow { "slow" } else { "fast" },
                slow = slow,
            ),
        );
        once_ok(&c)
    };
    run_with(false);
    assert!(
        !has(&dst, "fast", &sbom.digest()),
        "without referrerSlow the untagged referrer is not seen"
    );
    let o = run_with(true);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    let d = sbom.digest();
    let copied = skopeo_inspect_raw(&dst, &format!("slow@{d}"));
    assert_eq!(copied, sbom.manifest.bytes, "byte for byte");
    // Published where a reader without the referrers API looks: the fallback index.
    let listed = skopeo_inspect_raw(&dst, &format!("slow:{}", referrers_tag(&img.digest())));
    assert!(String::from_utf8_lossy(&listed).contains(&d));
}

/// The raw digest `reg` serves for `repo:reference` (a HEAD, as skopeo would read it).
fn served_digest(reg: &TestRegistry, repo: &str, reference: &str) -> Option<String> {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = RawClient::for_registry(reg)
        .request("HEAD", &path, &[("Accept", ACCEPT_ALL)], &[])
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
    (r.status == 200).then(|| {
        r.header("docker-content-digest")
            .expect("Docker-Content-Digest")
            .to_owned()
    })
}

/// Each `sha256-<hex>` index arrives with the source's exact bytes, so a no-op resync
/// compares referrers with one HEAD per tag on each side and reads no index at all; a new
/// referrer (on a platform child, two levels down) still arrives, and a target index with
/// other bytes but no other entries is brought to the source's bytes.
#[test]
fn a_no_op_resync_compares_referrers_indexes_by_digest_and_reads_none() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let client = RawClient::for_registry(&src);
    let multi = image::multi_arch(9000, 1, 256);
    let single = image::image(9001, 1, 256);
    let plain_img = image::image(9002, 1, 256);
    // An index without referrers of its own, whose child gets one later.
    let bare = image::multi_arch(9003, 1, 256);
    client.push("app", Some("multi"), &multi);
    client.push("app", Some("single"), &single);
    client.push("app", Some("plain"), &plain_img);
    client.push("app", Some("bare"), &bare);
    let amd64 = multi.child(&Platform::linux_amd64()).expect("amd64 child");
    let top_sbom = image::sbom(&multi.manifest.descriptor(), 1);
    let child_sbom = image::sbom(&amd64.descriptor(), 2);
    let single_sbom = image::sbom(&single.descriptor(), 3);
    let sbom_sig = signature(&single_sbom.descriptor(), 4);
    client.publish_referrers("app", &multi.digest(), &[&top_sbom]);
    client.publish_referrers("app", &amd64.digest(), &[&child_sbom]);
    client.publish_referrers("app", &single.digest(), &[&single_sbom]);
    client.publish_referrers("app", &single_sbom.digest(), &[&sbom_sig]);
    let subjects = [
        multi.digest(),
        amd64.digest(),
        single.digest(),
        single_sbom.digest(),
    ];
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "  referrers: true\n",
        &format!(
            "  - source: {}/app\n    target: {}/app\n    type: repository\n",
            src.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("4 referrers copied"), "{}", o.stdout);
    for s in &subjects {
        let tag = referrers_tag(s);
        assert_eq!(
            served_digest(&t, "app", &tag),
            served_digest(&src, "app", &tag),
            "{tag}: the source's index, byte for byte"
        );
    }

    // The no-op: the image tags and the index tags, one HEAD each per side, one listing each.
    let no_op = |what: &str, tags: usize| {
        let (s0, t0) = (src.access_log().len(), t.access_log().len());
        let o = once_ok(&c);
        assert!(
            o.stdout.contains("0 referrers copied"),
            "{what}: {}",
            o.stdout
        );
        let (slog, tlog) = (&src.access_log()[s0..], &t.access_log()[t0..]);
        assert!(tlog.iter().all(|e| !e.is_write()), "{what}: wrote {tlog:?}");
        for (side, log) in [("source", slog), ("target", tlog)] {
            let count = |f: &dyn Fn(&regferry_testkit::AccessLogEntry) -> bool| {
                log.iter().filter(|e| f(e)).count()
            };
            assert_eq!(
                count(&|e| e.method == "HEAD"),
                tags,
                "{what}, {side}: {log:?}"
            );
            assert_eq!(
                count(&|e| e.path.contains("/tags/list")),
                1,
                "{what}, {side}: {log:?}"
            );
            assert_eq!(
                count(&|e| e.method == "GET" && e.path.contains("/manifests/")),
                0,
                "{what}, {side}: no index read: {log:?}"
            );
        }
        // One question per registry and process about the referrers API.
        for (side, log) in [("source", slog), ("target", tlog)] {
            assert!(
                log.iter()
                    .filter(|e| e.path.contains("/referrers/"))
                    .count()
                    <= 1,
                "{what}, {side}: {log:?}"
            );
        }
    };
    no_op("after the first copy", 4 + 4);

    // A signature of the platform child's SBOM: found below the index, two levels down;
    // and an SBOM of a platform of the index that had no referrers at all.
    let child_sig = signature(&child_sbom.descriptor(), 5);
    client.publish_referrers("app", &child_sbom.digest(), &[&child_sig]);
    let bare_arm = bare.child(&Platform::linux_arm64()).expect("arm64 child");
    let bare_sbom = image::sbom(&bare_arm.descriptor(), 6);
    client.publish_referrers("app", &bare_arm.digest(), &[&bare_sbom]);
    let o = once_ok(&c);
    assert!(o.stdout.contains("2 referrers copied"), "{}", o.stdout);
    assert_eq!(
        fallback(&t, "app", &child_sbom.digest()),
        vec![child_sig.digest()]
    );
    assert_eq!(
        fallback(&t, "app", &bare_arm.digest()),
        vec![bare_sbom.digest()]
    );

    // The same entries in other bytes (as an older regferry merged them): rewritten once.
    let tag = referrers_tag(&single.digest());
    let mut other = referrers_index(&[&single_sbom]);
    let v: Value = serde_json::from_slice(&other.bytes).unwrap();
    other.bytes = serde_json::to_vec_pretty(&v).unwrap();
    RawClient::for_registry(&t).push_manifest("app", &tag, &other);
    assert_ne!(
        served_digest(&t, "app", &tag),
        served_digest(&src, "app", &tag)
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("0 referrers copied"), "{}", o.stdout);
    assert_eq!(
        served_digest(&t, "app", &tag),
        served_digest(&src, "app", &tag)
    );
    no_op("after the rewrite", 4 + 6);
}

/// `platform:` copies one platform's manifest out of an index; that manifest's own
/// referrers come with it (they are about exactly what the target holds).
#[test]
fn a_platform_entry_brings_the_platform_manifests_referrers() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let client = RawClient::for_registry(&src);
    let multi = image::multi_arch(9100, 1, 256);
    client.push("app", Some("1"), &multi);
    let arm = multi.child(&Platform::linux_arm64()).expect("arm64 child");
    let amd = multi.child(&Platform::linux_amd64()).expect("amd64 child");
    let arm_sbom = image::sbom(&arm.descriptor(), 1);
    let amd_sbom = image::sbom(&amd.descriptor(), 2);
    client.publish_referrers("app", &arm.digest(), &[&arm_sbom]);
    client.publish_referrers("app", &amd.digest(), &[&amd_sbom]);
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:arm\n    type: image\n    platform: linux/arm64\n    referrers: true\n",
            src.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(o.stdout.contains("1 referrer copied"), "{}", o.stdout);
    assert_eq!(skopeo_digest(&t, "app:arm"), arm.digest());
    assert_eq!(fallback(&t, "app", &arm.digest()), vec![arm_sbom.digest()]);
    assert_same_referrer(&src, "app", &t, "app", &arm_sbom);
    assert!(
        !has(&t, "app", &amd_sbom.digest()),
        "other platforms' stay behind"
    );
}

/// A source's referrers listing is its word, not proof: a manifest listed under a subject
/// whose own `subject` names another image is not that subject's referrer. It is skipped
/// with a warning naming it (one stray must not keep the real referrers unlisted), the
/// subject's real referrers still arrive, and the target's listing for the subject holds
/// only them.
#[test]
fn a_listed_referrer_of_another_subject_is_refused() {
    let (src, t) = (TestRegistry::start(), TestRegistry::start());
    let (img, other) = (image::image(3010, 1, 512), image::image(3011, 1, 512));
    let client = RawClient::for_registry(&src);
    client.push("app", Some("1"), &img);
    client.push("app", Some("2"), &other);
    let sbom = image::sbom(&img.descriptor(), 1);
    let stray = image::sbom(&other.descriptor(), 2);
    client.publish_referrers("app", &img.digest(), &[&sbom, &stray]);
    let c = config(
        &plain(&[&src.host(), &t.host()]),
        "  referrers: true\n",
        &format!(
            "  - source: {}/app:1\n    target: {}/app:1\n    type: image\n",
            src.host(),
            t.host()
        ),
    );
    let o = once_ok(&c);
    assert!(
        o.all().contains("Listed as a referrer but is not one")
            && o.all().contains(&stray.digest())
            && o.all()
                .contains(&format!("its subject is {}", other.digest())),
        "{}",
        o.all()
    );
    assert!(!has(&t, "app", &stray.digest()), "the stray was copied");
    assert_same_referrer(&src, "app", &t, "app", &sbom);
    assert_eq!(fallback(&t, "app", &img.digest()), vec![sbom.digest()]);
}
