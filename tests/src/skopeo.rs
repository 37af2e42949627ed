//! skopeo (Debian's `skopeo` package, 1.9) as the independent client: pushing synthetic layouts
//! into a [`TestRegistry`] and reading back what regferry wrote.
//!
//! Every call runs `skopeo --insecure-policy --command-timeout 120s …` with plain HTTP
//! (`--tls-verify=false`) and either the registry's credentials or `--no-creds`, so neither the
//! machine's policy nor a user's auth file changes the outcome. All calls block.

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

/// `--creds user:pass` or `--no-creds`, under the given flag prefix (`""`, `"dest-"`, `"src-"`).
fn creds_args(reg: &TestRegistry, prefix: &str) -> Vec<String> {
    match reg.credentials() {
        Some((u, p)) => vec![format!("--{prefix}creds"), format!("{u}:{p}")],
        None => vec![format!("--{prefix}no-creds")],
    }
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
