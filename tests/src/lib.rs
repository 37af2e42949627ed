//! Shared test harness: where fixtures live, golden-file comparison with readable diffs, and real
//! registries to test against.
//!
//! - [`TestRegistry`]: Debian's `docker-registry` (distribution 2.8) on a free loopback port
//!   with its own temp storage, plain or with htpasswd or token auth, over HTTP or HTTPS
//!   (optionally requiring client certificates, [`Tls`]); killed on drop.
//! - [`tls`]: throwaway CAs, server and client certificates for HTTPS registries.
//! - [`TokenIssuer`]: the token server for a token-auth registry.
//! - [`FaultProxy`]: a streaming reverse proxy in front of a registry that injects faults
//!   (status codes, resets, short reads, corrupt bytes, delays) by rule.
//! - [`image`]: deterministic synthetic images, indexes and SBOM referrers, OCI layouts.
//! - [`skopeo`]: pushing with and reading back through skopeo, the independent client.
//! - [`ReferrersApi`]: the fault proxy scripted to serve the OCI 1.1 referrers API in front of
//!   a registry without it (an emulation for tests only).
//! - [`RawClient`]: a small blocking HTTP client for arranging state skopeo cannot (plain HTTP
//!   registries only).
//! - [`HostileServer`]: a scripted host that records what it receives (credentials above all),
//!   for the hosts a registry names (storage, `Location`, `Link`, realms) and for answers the
//!   real registry cannot be made to give.
//! - [`cli`]: running the `regferry` binary on a config file, and checking what it copied.
//!
//! Everything is blocking and owns its own threads (servers run on private tokio runtimes), so
//! the same calls work from `#[test]` and from `#[tokio::test]`, paused time included. In a
//! current-thread `#[tokio::test]` a blocking helper also stalls that runtime while it waits:
//! when the code under test runs on it and must answer meanwhile (say, regferry's admin
//! server), call helpers through `spawn_blocking` or use the multi-thread flavour. Only
//! 127.0.0.1 is ever used. Needs the Debian packages `docker-registry` and `skopeo`, and `curl`
//! for HTTPS registries.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

pub mod cli;
pub mod client;
pub mod hostile;
pub mod image;
pub mod oci;
pub mod proxy;
pub mod referrers_api;
pub mod registry;
mod server;
pub mod skopeo;
pub mod tls;
pub mod token;
mod wait;

#[cfg(test)]
mod harness_tests;

pub use client::{RawClient, RawResponse, TransportError};
pub use hostile::{HostileServer, Received, Reply};
pub use image::{
    Blob, Content, Descriptor, Image, ImageBuilder, Index, Manifest, OciLayout, Platform,
};
pub use oci::oci_client_manifest;
pub use proxy::{Action, FaultKind, FaultProxy, ProxiedRequest, Rule};
pub use referrers_api::ReferrersApi;
pub use registry::{AccessLogEntry, Auth, RegistryOptions, TestRegistry};
pub use skopeo::{
    assert_same_manifests, push_layout, skopeo_digest, skopeo_inspect_raw, skopeo_list_tags,
    skopeo_push,
};
pub use tls::{CertAndKey, TestCa, Tls, TlsMaterial};
pub use token::{TokenIssuer, TokenOptions, TokenRequest, TokenUser};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(rel)
}

/// Compares `actual` with `tests/golden/<name>`. With `REGFERRY_UPDATE_GOLDEN=1` the golden
/// file is rewritten instead (an on-purpose update, reviewed in the diff of the commit).
///
/// # Panics
/// When the output differs from the golden file, with a unified diff.
pub fn assert_golden(name: &str, actual: &str) {
    let path = workspace_root().join("tests").join("golden").join(name);
    if std::env::var_os("REGFERRY_UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden dir");
        }
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} missing ({e}); run with REGFERRY_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("expected (golden)", "actual")
            .to_string();
        panic!("output differs from {}:\n{diff}", path.display());
    }
}

/// A temporary directory that is removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}
