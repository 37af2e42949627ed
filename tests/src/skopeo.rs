//! skopeo (Debian's `skopeo` package, 1.9) as the independent client: pushing synthetic layouts
//! into a [`TestRegistry`] and reading back what regferry wrote.
//!
//! Every call runs `skopeo --insecure-policy --command-timeout 120s …` with
//! `--tls-verify=false` (plain HTTP, or HTTPS without verification) and either the registry's
//! credentials or `--no-creds`, so neither the machine's policy nor a user's auth file changes
//! the outcome. For an HTTPS registry it also passes `--cert-dir` with the registry's CA and,
//! when the registry requires one, its client certificate. All calls block.

use std::path::Path;
use std::process::Command;

use crate::image::{Content, OciLayout, sha256_digest};
use crate::registry::TestRegistry;

/// The skopeo binary; `REGFERRY_SKOPEO_BIN` overrides it.
pub const DEFAULT_SKOPEO_BIN: &str = "skopeo";

/// Runs skopeo with the harness's global flags; returns stdout.
///
/// # Panics
/// If skopeo cannot run or exits non-zero; the message has its stderr.
pub fn skopeo(args: &[&str]) -> Vec<u8> {
    let bin =
        std::env::var("REGFERRY_SKOPEO_BIN").unwrap_or_else(|_| DEFAULT_SKOPEO_BIN.to_owned());
    let out = Command::new(&bin)
        .args(["--insecure-policy", "--command-timeout", "120s"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); is the skopeo package installed?"));
    assert!(
        out.status.success(),
        "skopeo {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `--creds user:pass` or `--no-creds`, and `--cert-dir DIR` for an HTTPS registry, under the
/// given flag prefix (`""`, `"dest-"`, `"src-"`).
fn creds_args(reg: &TestRegistry, prefix: &str) -> Vec<String> {
    let mut args = match reg.credentials() {
        Some((u, p)) => vec![format!("--{prefix}creds"), format!("{u}:{p}")],
        None => vec![format!("--{prefix}no-creds")],
    };
    if let Some(tls) = reg.tls() {
        // Without a client certificate from here, skopeo cannot reach a registry that
        // requires one (`Tls::Mutual`): the handshake fails.
        args.push(format!("--{prefix}cert-dir"));
        args.push(tls.cert_dir().display().to_string());
    }
    args
}

/// `skopeo copy --all --preserve-digests oci:LAYOUT:TAG docker://HOST/DEST`, where `dest` is
/// `repo:tag` on `reg`.
///
/// # Panics
/// If the copy fails.
pub fn push_layout(layout_dir: &Path, tag: &str, reg: &TestRegistry, dest: &str) {
    let src = format!("oci:{}:{tag}", layout_dir.display());
    let dst = format!("docker://{}", reg.reference(dest));
    let creds = creds_args(reg, "dest-");
    let mut args = vec![
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ];
    args.extend(creds.iter().map(String::as_str));
    args.extend([src.as_str(), dst.as_str()]);
    skopeo(&args);
}

/// Writes `content` to a temporary OCI layout and pushes it with [`push_layout`] to `dest`
/// (`repo:tag`). skopeo 1.9 copies images and indexes; push artifacts with a `subject` with
/// [`crate::RawClient::push`] instead.
///
/// # Panics
/// If the copy fails.
pub fn skopeo_push(reg: &TestRegistry, dest: &str, content: &dyn Content) {
    let dir = crate::temp_dir();
    let mut layout = OciLayout::create(dir.path());
    layout.add(content, Some("push"));
    push_layout(layout.dir(), "push", reg, dest);
}

/// The manifest bytes exactly as the registry serves them (`skopeo inspect --raw`);
/// `reference` is `repo:tag` or `repo@sha256:…`.
///
/// # Panics
/// If skopeo fails (for instance, the manifest does not exist).
pub fn skopeo_inspect_raw(reg: &TestRegistry, reference: &str) -> Vec<u8> {
    let image = format!("docker://{}", reg.reference(reference));
    let creds = creds_args(reg, "");
    let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
    args.extend(creds.iter().map(String::as_str));
    args.push(&image);
    skopeo(&args)
}

/// The digest of the manifest `reference` points at: the sha256 of [`skopeo_inspect_raw`]'s
/// bytes. That is what `skopeo inspect --format {{.Digest}}` prints, without its need to pick a
/// platform image and parse its config (which fails for artifacts and for indexes without the
/// host's platform).
///
/// # Panics
/// If skopeo fails.
pub fn skopeo_digest(reg: &TestRegistry, reference: &str) -> String {
    sha256_digest(&skopeo_inspect_raw(reg, reference))
}

/// The tags of `repo` (`skopeo list-tags`), sorted.
///
/// # Panics
/// If skopeo fails (for instance, the repository does not exist).
pub fn skopeo_list_tags(reg: &TestRegistry, repo: &str) -> Vec<String> {
    let target = format!("docker://{}", reg.reference(repo));
    let creds = creds_args(reg, "");
    let mut args = vec!["list-tags", "--tls-verify=false"];
    args.extend(creds.iter().map(String::as_str));
    args.push(&target);
    let out = skopeo(&args);
    let json: serde_json::Value = serde_json::from_slice(&out).expect("list-tags JSON");
    let mut tags: Vec<String> = json["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Asserts that `dst_ref` on `dst` serves exactly the manifest bytes of `src_ref` on `src`, and,
/// for an index, that every child manifest it lists exists in `dst`'s repository with its digest.
///
/// # Panics
/// On a difference, or if skopeo fails.
pub fn assert_same_manifests(src: &TestRegistry, dst: &TestRegistry, src_ref: &str, dst_ref: &str) {
    let a = skopeo_inspect_raw(src, src_ref);
    let b = skopeo_inspect_raw(dst, dst_ref);
    assert_eq!(a, b, "{dst_ref}: manifest bytes differ from {src_ref}");
    let v: serde_json::Value = serde_json::from_slice(&a).expect("manifest JSON");
    if let Some(children) = v["manifests"].as_array() {
        let repo = dst_ref.split(['@', ':']).next().unwrap_or(dst_ref);
        for c in children {
            let d = c["digest"].as_str().expect("child digest");
            let child = skopeo_inspect_raw(dst, &format!("{repo}@{d}"));
            assert_eq!(sha256_digest(&child), d, "child {d} in {repo}");
        }
    }
}
