//! regferry's extensions to the regsync format (`latest`, `prune`), end to end against
//! real registries (Debian's distribution 2.8, which deletes only by digest), verified with
//! skopeo.
use regferry_testkit::cli::{ConfigFile, RunOutput, registry_config, run_regferry};
use regferry_testkit::image;
use regferry_testkit::{
    Action, Content, FaultProxy, RawClient, Rule, TestRegistry, skopeo::assert_same_manifests,
    skopeo::skopeo, skopeo_digest, skopeo_list_tags,
};

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

/// The references listed under `key` (`outside_latest`, `pruned`) in the first entry of a
/// report, as tags, sorted.
fn listed(report: &serde_json::Value, key: &str) -> Vec<String> {
    let mut tags: Vec<String> = report["entries"][0][key]
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
    assert_eq!(listed(&plan, "outside_latest"), vec!["0.1", "1.9.0"]);
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
    assert_eq!(
        listed(&plan, "outside_latest"),
        vec!["0.1", "1.10.0", "1.9.0"]
    );
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

/// Removes a tag from the source the way a publisher would (skopeo deletes the manifest by
/// digest; each source tag here has an image of its own).
fn unpublish(reg: &TestRegistry, reference: &str) {
    skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}", reg.reference(reference)),
    ]);
}

/// `app` on `src` with one image of its own per tag.
fn publish(reg: &TestRegistry, tags: &[&str]) {
    for (i, tag) in tags.iter().enumerate() {
        push(reg, "app", tag, &image::image(300 + i as u64, 1, 100));
    }
}

#[test]
fn prune_deletes_only_what_left_the_source_within_the_entrys_scope() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    publish(&src, &["1.0", "1.1", "1.2", "edge"]);
    let c = entry(
        &src,
        &dst,
        "app",
        "    tags:\n      deny: [local]\n    prune: {maxDelete: 5}\n",
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    // Never pruned: a tag outside the entry's filters, here on the very image 1.0 has
    // (deleting 1.0 by digest would take it along), and a `sha256-…` tag (a referrers
    // fallback), which the filters would select.
    let old = skopeo_digest(&dst, "app:1.0");
    let dst_raw = RawClient::for_registry(&dst);
    let img = image::image(300, 1, 100);
    dst_raw.push("app", Some("local"), &img);
    let fallback = format!("sha256-{}", "a".repeat(64));
    dst_raw.push("app", Some(&fallback), &image::image(399, 1, 100));
    assert_eq!(skopeo_digest(&dst, "app:local"), old);

    unpublish(&src, "app:1.0");
    let plan = regferry(&["check", "--format", "json"], &c);
    assert_eq!(plan.code, 3, "drift: {}{}", plan.stdout, plan.stderr);
    assert_eq!(listed(&json(&plan), "pruned"), vec!["1.0"]);
    let table = regferry(&["check"], &c);
    assert!(
        table.stdout.contains("would prune") && table.stdout.contains("1 to prune"),
        "{}",
        table.stdout
    );
    assert_eq!(
        skopeo_list_tags(&dst, "app").len(),
        6,
        "check wrote nothing"
    );

    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("1 pruned"), "{}", o.stdout);
    let mut want = vec![
        "1.1".to_owned(),
        "1.2".to_owned(),
        "edge".to_owned(),
        "local".to_owned(),
        fallback,
    ];
    want.sort();
    assert_eq!(skopeo_list_tags(&dst, "app"), want);
    assert_eq!(
        skopeo_digest(&dst, "app:local"),
        old,
        "the shared image stays"
    );

    // `--missing` never prunes; the next full run does.
    unpublish(&src, "app:1.1");
    let o = regferry(&["once", "--missing"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(skopeo_list_tags(&dst, "app").contains(&"1.1".to_owned()));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(!skopeo_list_tags(&dst, "app").contains(&"1.1".to_owned()));
}

#[test]
fn prune_with_latest_keeps_a_rolling_window() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    publish(&src, &["1.0", "1.1", "1.2"]);
    let c = entry(
        &src,
        &dst,
        "app",
        "    tags:\n      latest: 2\n    prune: true\n",
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "app"), vec!["1.1", "1.2"]);
    push(&src, "app", "1.3", &image::image(310, 1, 100));
    // 10% of two tags rounds up to one: the window moves by one.
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "app"), vec!["1.2", "1.3"]);
}

#[test]
fn prune_deletes_nothing_beyond_max_delete_or_without_both_listings() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    publish(&src, &["1", "2", "3", "4"]);
    let with = |extra: &str, s: &str, d: &str| {
        let hosts = vec![(s.to_owned(), None), (d.to_owned(), None)];
        registry_config(
            &hosts,
            "  parallel: 2\n",
            &format!("  - source: {s}/app\n    target: {d}/app\n    type: repository\n{extra}"),
        )
    };
    let o = regferry(&["once"], &with("", &src.host(), &dst.host()));
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    for t in ["1", "2", "3"] {
        unpublish(&src, &format!("app:{t}"));
    }
    let all = vec!["1", "2", "3", "4"];

    // Three of four would go: more than maxDelete 2 allows, so none go, and the run fails.
    let c = with("    prune: {maxDelete: 2}\n", &src.host(), &dst.host());
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("3 of the 4 tags in scope") && o.stdout.contains("prune.maxDelete"),
        "{}",
        o.stdout
    );
    assert_eq!(skopeo_list_tags(&dst, "app"), all);

    // The source's listing fails: the entry fails before anything is compared or deleted.
    let src_proxy = FaultProxy::start(&src);
    src_proxy.add_rule(Rule::new("GET", "/tags/list", Action::respond(403, &[])));
    let c = with(
        "    prune: {maxDelete: '100%'}\n",
        &src_proxy.host(),
        &dst.host(),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "app"), all);

    // The target's listing fails: what the source no longer has is unknown there.
    let dst_proxy = FaultProxy::start(&dst);
    dst_proxy.add_rule(Rule::new("GET", "/tags/list", Action::respond(403, &[])));
    let c = with(
        "    prune: {maxDelete: '100%'}\n",
        &src.host(),
        &dst_proxy.host(),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("could not be listed"), "{}", o.stdout);
    assert_eq!(skopeo_list_tags(&dst, "app"), all);

    // Backups written into the target repository look like tags the source lacks.
    let c = with(
        "    backup: 'bkp-{{ .Ref.Tag }}'\n    prune: {maxDelete: '100%'}\n",
        &src.host(),
        &dst.host(),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("backup writes into"), "{}", o.stdout);
    assert_eq!(skopeo_list_tags(&dst, "app"), all);

    // A tag failed in this run (a new one the target refused): nothing is deleted.
    push(&src, "app", "5", &image::image(320, 1, 100));
    let refusing = FaultProxy::start(&dst);
    refusing.add_rule(Rule::new("PUT", "/manifests/5", Action::respond(403, &[])));
    let c = with(
        "    prune: {maxDelete: '100%'}\n",
        &src.host(),
        &refusing.host(),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "app"), all);

    // With the limit raised, the three go.
    let c = with("    prune: {maxDelete: '75%'}\n", &src.host(), &dst.host());
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_list_tags(&dst, "app"), vec!["4", "5"]);
}

/// Every blob file of an OCI layout, made two days old (as if written by an earlier run).
fn age_blobs(layout: &std::path::Path) -> Vec<String> {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
    let dir = layout.join("blobs/sha256");
    let mut names = Vec::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap();
        std::fs::File::options()
            .write(true)
            .open(f.path())
            .unwrap()
            .set_modified(old)
            .unwrap();
        names.push(f.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    names
}

#[test]
fn prune_into_an_oci_layout_removes_the_tag_and_the_blobs_only_it_used() {
    let src = TestRegistry::start();
    // Two images that share nothing but are alike in size; a third tag on the first image.
    push(&src, "app", "1.0", &image::image(330, 2, 1000));
    push(&src, "app", "1.1", &image::image(331, 2, 1000));
    push(&src, "app", "same", &image::image(331, 2, 1000));
    let dir = regferry_testkit::temp_dir();
    let layout = dir.path().join("layout");
    let c = registry_config(
        &[(src.host(), None)],
        "  parallel: 2\n",
        &format!(
            "  - source: {s}/app\n    target: ocidir://{l}\n    type: repository\n    prune: {{maxDelete: '50%'}}\n",
            s = src.host(),
            l = layout.display()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let before = age_blobs(&layout);
    // 1.0's image: manifest, config and two layers.
    assert_eq!(before.len(), 8, "{before:?}");

    unpublish(&src, "app:1.0");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("1 pruned"), "{}", o.stdout);
    let tags = String::from_utf8(skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}:1.1", layout.display()),
    ]))
    .unwrap();
    assert!(tags.contains("schemaVersion"), "1.1 still reads: {tags}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{index}");
    assert!(
        !names.contains(&"1.0") && names.contains(&"same"),
        "{names:?}"
    );
    let after = age_blobs(&layout);
    assert_eq!(after.len(), 4, "1.0's four blobs are collected: {after:?}");
    assert!(after.iter().all(|b| before.contains(b)));
}

#[test]
fn prune_deletes_nothing_when_the_source_selects_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    publish(&src, &["1", "2"]);
    let c = entry(&src, &dst, "app", "    prune: {maxDelete: '100%'}\n");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    unpublish(&src, "app:1");
    unpublish(&src, "app:2");
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("selected no tags"), "{}", o.stdout);
    assert_eq!(skopeo_list_tags(&dst, "app"), vec!["1", "2"]);
}

#[test]
fn require_holds_an_image_without_the_referrers_it_names_and_the_target_keeps_its_own() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let with_sbom = image::image(340, 1, 100);
    let without = image::image(341, 1, 100);
    let raw = RawClient::for_registry(&src);
    raw.push("app", Some("1"), &with_sbom);
    raw.push("app", Some("2"), &without);
    let sbom = image::sbom(&with_sbom.descriptor(), 1);
    raw.publish_referrers("app", &with_sbom.digest(), &[&sbom]);
    // The target has an older image under 2: a held tag leaves it there.
    let old = image::image(342, 1, 100);
    RawClient::for_registry(&dst).push("app", Some("2"), &old);
    let old_digest = skopeo_digest(&dst, "app:2");
    // From `defaults`, as a policy for every entry.
    let c = registry_config(
        &[(src.host(), None), (dst.host(), None)],
        "  parallel: 2\n  referrers: true\n  require:\n    referrers:\n      - artifactType: application/spdx+json\n",
        &format!(
            "  - source: {s}/app\n    target: {d}/app\n    type: repository\n",
            s = src.host(),
            d = dst.host()
        ),
    );
    let plan = json(&regferry(&["check", "--format", "json"], &c));
    let tags = plan["entries"][0]["tags"].as_array().unwrap();
    let state = |t: &str| {
        tags.iter()
            .find(|x| x["target"].as_str().unwrap().ends_with(&format!(":{t}")))
            .unwrap()
            .clone()
    };
    assert_eq!(state("1")["state"], "missing");
    assert_eq!(state("2")["state"], "held", "{plan}");
    assert!(
        state("2")["reason"]
            .as_str()
            .unwrap()
            .contains("no referrer of type application/spdx+json"),
        "{plan}"
    );

    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "held is not a failure: {}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("1 held"), "{}", o.stdout);
    assert_eq!(skopeo_digest(&dst, "app:1"), with_sbom.digest());
    assert_eq!(
        skopeo_digest(&dst, "app:2"),
        old_digest,
        "the target keeps its image"
    );
    // With --abort-on-error a held tag fails the run.
    let o = regferry(&["once", "--abort-on-error"], &c);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_digest(&dst, "app:2"), old_digest);

    // Once the referrer is there, the image goes.
    let late = image::sbom(&without.descriptor(), 2);
    raw.publish_referrers("app", &without.digest(), &[&late]);
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(skopeo_digest(&dst, "app:2"), without.digest());
}

/// Signs each payload the way cosign does (ECDSA P-256 over SHA-256, ASN.1 DER, base64),
/// with Python's `cryptography`: an implementation independent of regferry's. Returns the
/// signing key's public PEM, and per payload its signature by that key and by another key.
fn cosign_sign(payloads: &[String]) -> (String, Vec<String>, Vec<String>) {
    use std::io::Write as _;
    let script = r#"
import sys, json, base64
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives import hashes, serialization
payloads = [p.encode() for p in json.load(sys.stdin)]
key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
sign = lambda k, p: base64.b64encode(k.sign(p, ec.ECDSA(hashes.SHA256()))).decode()
pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
print(json.dumps({"pub": pem, "sigs": [sign(key, p) for p in payloads], "other": [sign(other, p) for p in payloads]}))
"#;
    // The `python3` on PATH may be another interpreter than Debian's (pyenv, say), without
    // the python3-cryptography package that scripts/setup installs for /usr/bin/python3.
    let python = ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .args(["-c", "import cryptography"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect(
            "a python3 with the cryptography package (scripts/setup installs python3-cryptography)",
        );
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with the cryptography package) signs the test images");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(payloads).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "python3 cryptography failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    (
        v["pub"].as_str().unwrap().to_owned(),
        list("sigs"),
        list("other"),
    )
}

/// cosign's simple-signing payload for the image `digest`.
fn simple_signing(repo: &str, digest: &str) -> String {
    serde_json::json!({
        "critical": {
            "identity": {"docker-reference": repo},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    })
    .to_string()
}

/// Pushes a cosign signature of the image `subject` (`payload` and its base64 `sig`) into
/// `app`: as the `sha256-<hex>.sig` tag, or as an OCI 1.1 referrer (with its fallback index,
/// distribution 2.8 having no referrers API).
fn push_signature(
    raw: &RawClient,
    subject: &image::Descriptor,
    payload: &str,
    sig: &str,
    referrer: bool,
) {
    let config = raw.push_blob("app", b"{}");
    let layer = raw.push_blob("app", payload.as_bytes());
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": layer,
            "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": sig}
        }]
    });
    let fallback = image::referrers_tag(&subject.digest);
    if !referrer {
        let m = image::Manifest {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes: m.to_string().into_bytes(),
        };
        raw.push_manifest("app", &format!("{fallback}.sig"), &m);
        return;
    }
    m["artifactType"] = "application/vnd.dev.cosign.artifact.sig.v1+json".into();
    m["subject"] = serde_json::json!({
        "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size
    });
    let m = image::Manifest {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        bytes: m.to_string().into_bytes(),
    };
    let digest = raw.push_manifest("app", &m.digest(), &m);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": m.bytes.len(),
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json"
        }]
    });
    let index = image::Manifest {
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        bytes: index.to_string().into_bytes(),
    };
    raw.push_manifest("app", &fallback, &index);
}

#[test]
fn require_signature_copies_only_images_a_key_verifies_wherever_cosign_put_the_signature() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let raw = RawClient::for_registry(&src);
    let images: Vec<image::Image> = (0..7).map(|i| image::image(350 + i, 1, 100)).collect();
    for (i, img) in images.iter().enumerate() {
        raw.push("app", Some(&(i + 1).to_string()), img);
    }
    let repo = format!("{}/app", src.host());
    let d = |i: usize| images[i].digest();
    // 1: a `.sig` tag; 2: an OCI referrer; 3: signed by another key; 4: a payload naming
    // another image; 5: a payload changed after signing; 6: no signature at all; 7: a
    // payload of another kind than an image signature (a `sign-blob` with the same key).
    let payloads = vec![
        simple_signing(&repo, &d(0)),
        simple_signing(&repo, &d(1)),
        simple_signing(&repo, &d(2)),
        simple_signing(&repo, &d(0)),
        simple_signing(&repo, &d(4)),
        simple_signing(&repo, &d(6)).replace("cosign container image signature", "blob"),
    ];
    let (public, sigs, others) = cosign_sign(&payloads);
    push_signature(&raw, &images[0].descriptor(), &payloads[0], &sigs[0], false);
    push_signature(&raw, &images[1].descriptor(), &payloads[1], &sigs[1], true);
    push_signature(
        &raw,
        &images[2].descriptor(),
        &payloads[2],
        &others[2],
        false,
    );
    push_signature(&raw, &images[3].descriptor(), &payloads[3], &sigs[3], false);
    let tampered = payloads[4].replace(
        "cosign container image signature",
        "cosign container image signaturE",
    );
    push_signature(&raw, &images[4].descriptor(), &tampered, &sigs[4], true);
    push_signature(&raw, &images[6].descriptor(), &payloads[5], &sigs[5], false);

    let dir = regferry_testkit::temp_dir();
    let key = dir.path().join("cosign.pub");
    std::fs::write(&key, public).unwrap();
    let c = entry(
        &src,
        &dst,
        "app",
        &format!(
            "    tags:\n      allow: ['[0-9]+']\n    referrers: true\n    require:\n      signature:\n        key: '{{{{ file \"{}\" }}}}'\n",
            key.display()
        ),
    );
    let shown = regferry(&["config"], &c);
    assert!(
        shown.stdout.contains("signatureKeys:\n    - sha256:"),
        "{}",
        shown.stdout
    );

    let plan = json(&regferry(&["check", "--format", "json"], &c));
    let tags = plan["entries"][0]["tags"].as_array().unwrap();
    let find = |t: usize| {
        tags.iter()
            .find(|x| x["target"].as_str().unwrap().ends_with(&format!(":{t}")))
            .unwrap_or_else(|| panic!("tag {t} in {plan}"))
            .clone()
    };
    for t in [1, 2] {
        assert_eq!(find(t)["state"], "missing", "{}", find(t));
    }
    for t in [3, 4, 5, 7] {
        assert_eq!(find(t)["state"], "held", "{}", find(t));
        assert!(
            find(t)["reason"]
                .as_str()
                .unwrap()
                .contains("verified by key sha256:")
        );
    }
    assert_eq!(find(6)["state"], "held");
    assert!(
        find(6)["reason"]
            .as_str()
            .unwrap()
            .contains("no cosign signature")
    );

    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("5 held"), "{}", o.stdout);
    let copied: Vec<String> = skopeo_list_tags(&dst, "app")
        .into_iter()
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    assert_eq!(copied, vec!["1", "2"]);
    assert_eq!(skopeo_digest(&dst, "app:1"), d(0));
    assert_eq!(skopeo_digest(&dst, "app:2"), d(1));
}

#[test]
fn a_signature_key_that_is_not_a_p256_public_key_is_refused() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let c = entry(
        &src,
        &dst,
        "app",
        "    require:\n      signature:\n        key: 'not a key'\n",
    );
    let o = regferry(&["check"], &c);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("require.signature.key") && o.stderr.contains("PEM public key"),
        "{}",
        o.stderr
    );
}

/// GETs of blobs and manifests the source answered, by path.
fn source_reads(proxy: &FaultProxy) -> std::collections::BTreeMap<String, usize> {
    let mut reads = std::collections::BTreeMap::new();
    for r in proxy.requests() {
        if r.method == "GET" && (r.path.contains("/blobs/") || r.path.contains("/manifests/")) {
            *reads.entry(r.path).or_insert(0) += 1;
        }
    }
    reads
}

#[test]
fn targets_reads_the_source_once_for_every_target_and_each_target_stands_alone() {
    let src = TestRegistry::start();
    let (one, two) = (TestRegistry::start(), TestRegistry::start());
    let source = FaultProxy::start(&src);
    // The second target sits behind a proxy that can make it fail.
    let two_proxy = FaultProxy::start(&two);
    let layout = tempfile::tempdir().unwrap();
    let single = image::image(61, 3, 40_000);
    let multi = image::multi_arch(62, 2, 30_000);
    push(&src, "app", "1", &single);
    push(&src, "app", "2", &multi);
    let sbom = image::sbom(&single.manifest.descriptor(), 64);
    RawClient::for_registry(&src).publish_referrers("app", &single.digest(), &[&sbom]);
    // A cosign-style signature tag (`digestTags`).
    let sig_tag = format!("{}.sig", image::referrers_tag(&single.digest()));
    let sig = image::image(65, 1, 500);
    push(&src, "app", &sig_tag, &sig);
    let hosts = vec![
        (source.host(), None),
        (one.host(), None),
        (two_proxy.host(), None),
    ];
    let c = registry_config(
        &hosts,
        "  parallel: 2\n",
        &format!(
            "  - source: {s}/app\n    targets:\n      - {a}/app\n      - {b}/mirror/app\n      - ocidir://{l}/app\n    type: repository\n    referrers: true\n    digestTags: true\n    tags: {{deny: ['sha256-.*']}}\n",
            s = source.host(),
            a = one.host(),
            b = two_proxy.host(),
            l = layout.path().display(),
        ),
    );
    let shown = regferry(&["config"], &c);
    assert!(shown.stdout.contains("targets:"), "{}", shown.stdout);

    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    for tag in ["1", "2"] {
        assert_same_manifests(&src, &one, &format!("app:{tag}"), &format!("app:{tag}"));
        assert_same_manifests(
            &src,
            &two,
            &format!("app:{tag}"),
            &format!("mirror/app:{tag}"),
        );
        let want = skopeo_digest(&src, &format!("app:{tag}"));
        let got = String::from_utf8(skopeo(&[
            "inspect",
            "--format",
            "{{.Digest}}",
            &format!("oci:{}/app:{tag}", layout.path().display()),
        ]))
        .unwrap();
        assert_eq!(got.trim(), want, "the layout's app:{tag}");
    }
    // Each target has the SBOM, under the referrers fallback tag of the image.
    let fallback = image::referrers_tag(&single.digest());
    assert!(skopeo_list_tags(&one, "app").contains(&fallback));
    assert!(skopeo_list_tags(&two, "mirror/app").contains(&fallback));
    let index = String::from_utf8(skopeo(&[
        "inspect",
        "--raw",
        &format!("oci:{}/app:{fallback}", layout.path().display()),
    ]))
    .unwrap();
    assert!(index.contains(&sbom.digest()), "{index}");
    // And the signature tag.
    assert!(skopeo_list_tags(&one, "app").contains(&sig_tag));
    assert!(skopeo_list_tags(&two, "mirror/app").contains(&sig_tag));
    // Three targets, and each blob and each manifest (the SBOM, its fallback index and the
    // signature included) was read from the source once.
    let reads = source_reads(&source);
    let blobs = reads.keys().filter(|p| p.contains("/blobs/")).count();
    // single: config + 3 layers; multi: 2 platforms of config + 2 layers; the SBOM's
    // config and layer; the signature's config and layer.
    assert_eq!(blobs, 4 + 2 * 3 + 2 + 2, "{reads:#?}");
    assert!(reads.keys().any(|p| p.ends_with(&fallback)), "{reads:#?}");
    assert!(reads.values().all(|n| *n == 1), "{reads:#?}");

    // Targets already up to date cost no source read (a HEAD per tag).
    source.clear_requests();
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        source_reads(&source).is_empty(),
        "{:#?}",
        source_reads(&source)
    );

    // One target failing does not stop the others, and is reported on its own.
    let newer = image::image(63, 2, 20_000);
    push(&src, "app", "3", &newer);
    two_proxy.add_rule(Rule::new(
        "PUT",
        "/blobs/uploads/",
        Action::respond(500, &[]),
    ));
    source.clear_requests();
    let o = regferry(&["once", "--format", "json"], &c);
    assert_ne!(
        o.code, 0,
        "a failed target fails the run: {}{}",
        o.stdout, o.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let tags = report["entries"][0]["tags"].as_array().unwrap();
    let outcome = |target: &str| {
        tags.iter()
            .find(|t| t["target"].as_str().unwrap().ends_with(target))
            .map(|t| {
                (
                    t["state"].as_str().unwrap().to_owned(),
                    t["copied"].as_bool().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("{target} in {tags:#?}"))
    };
    assert_eq!(outcome("/mirror/app:3"), ("failed".to_owned(), false));
    let copied = ("missing".to_owned(), true);
    assert_eq!(outcome(&format!("{}/app:3", one.host())), copied);
    assert_eq!(
        outcome(&format!("{}/app:3", layout.path().display())),
        copied
    );
    assert_same_manifests(&src, &one, "app:3", "app:3");
    assert!(!skopeo_list_tags(&two, "mirror/app").contains(&"3".to_owned()));
    // The failing target's retries read again; the others were fed by the first read.
    let reads = source_reads(&source);
    let layer = format!("/blobs/{}", newer.layers[0].digest());
    let n = reads
        .iter()
        .filter(|(p, _)| p.contains(&layer))
        .map(|(_, n)| *n)
        .sum::<usize>();
    assert!((1..=3).contains(&n), "{reads:#?}");
}

#[test]
fn targets_into_two_tags_of_one_repository_share_its_blobs_without_waiting_on_themselves() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(71, 2, 30_000);
    push(&src, "app", "1", &img);
    let c = registry_config(
        &[(src.host(), None), (dst.host(), None)],
        "",
        &format!(
            "  - source: {s}/app:1\n    targets: [{d}/app:stable, {d}/app:v1]\n    type: image\n",
            s = src.host(),
            d = dst.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_same_manifests(&src, &dst, "app:1", "app:stable");
    assert_same_manifests(&src, &dst, "app:1", "app:v1");
}

#[test]
fn targets_on_a_registry_that_takes_one_request_at_a_time_do_not_stall_each_other() {
    // Two targets of one stream on a registry limited to one request at a time: the first
    // upload cannot finish while the stream waits for the second, which waits for the
    // first's request slot. The stream must go on without the stalled target (it gets its
    // own read), not wait for the idle timeout.
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let img = image::image(72, 1, 3_000_000);
    push(&src, "app", "1", &img);
    let c = ConfigFile::new(&format!(
        "defaults:\n  skipDockerConfig: true\n  limits: {{idleTimeout: 20s}}\ncreds:\n  - registry: {s}\n    tls: disabled\n  - registry: {d}\n    tls: disabled\n    reqConcurrent: 1\nsync:\n  - source: {s}/app\n    targets: [{d}/a/app, {d}/b/app]\n    type: repository\n",
        s = src.host(),
        d = dst.host()
    ));
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        !o.stderr.contains("Retrying") && !o.stderr.contains("timed out"),
        "no upload waited for the idle timeout: {}",
        o.stderr
    );
    assert_same_manifests(&src, &dst, "app:1", "a/app:1");
    assert_same_manifests(&src, &dst, "app:1", "b/app:1");
}

#[test]
fn targets_one_target_that_cannot_list_its_tags_does_not_fail_the_others_referrers() {
    let (src, one, two) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    let two_proxy = FaultProxy::start(&two);
    two_proxy.add_rule(Rule::new("GET", "/tags/list", Action::respond(500, &[])));
    let img = image::image(73, 1, 20_000);
    push(&src, "app", "1", &img);
    let sbom = image::sbom(&img.manifest.descriptor(), 74);
    RawClient::for_registry(&src).publish_referrers("app", &img.digest(), &[&sbom]);
    let c = registry_config(
        &[
            (src.host(), None),
            (one.host(), None),
            (two_proxy.host(), None),
        ],
        "",
        &format!(
            "  - source: {s}/app:1\n    targets: [{a}/app:1, {b}/app:1]\n    type: image\n    referrers: true\n",
            s = src.host(),
            a = one.host(),
            b = two_proxy.host()
        ),
    );
    let o = regferry(&["once"], &c);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let fallback = image::referrers_tag(&img.digest());
    for reg in [&one, &two] {
        assert_same_manifests(&src, reg, "app:1", "app:1");
        assert!(skopeo_list_tags(reg, "app").contains(&fallback));
    }
}
