//! Garbage collection of a layout's blobs: what no manifest reachable from `index.json`
//! names is deleted, under the index lock, so that no index update of this or another
//! process interleaves with it.
//!
//! A blob written less than `keep_newer_than` ago is kept even when nothing names it yet:
//! another writer may be copying the image it belongs to, whose manifest lands in the
//! index last. Temporary files (`*.tmp`) are never touched.
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

use super::index;
use super::{BLOBS, MAX_MANIFEST};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::media_type;

/// The media type schema 1 layers are taken for (the manifest gives none): not a manifest.
const SCHEMA1_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What a collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Blob files deleted.
    pub blobs: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Deletes the blobs of the layout at `root` that nothing in its index reaches and that are
/// older than `keep_newer_than`.
pub(super) fn collect(root: &Path, keep_newer_than: SystemTime) -> Result<Collected> {
    let _lock = index::lock_index(root)?;
    let Some(idx) = index::read_index(root)? else {
        return Ok(Collected::default());
    };
    let mut reachable = HashSet::new();
    let mut opened = HashSet::new();
    let mut todo: Vec<(String, Option<String>)> = idx
        .manifests
        .iter()
        .map(|e| (e.digest.clone(), e.media_type.clone()))
        .collect();
    while let Some((digest, media)) = todo.pop() {
        reachable.insert(digest.clone());
        // Only manifests name other blobs; a layer is never opened. A digest named once as
        // a layer and once as a manifest is opened for the latter.
        if media
            .as_deref()
            .is_some_and(|m| !media_type::is_manifest(m))
            || !opened.insert(digest.clone())
        {
            continue;
        }
        // A digest from a manifest becomes a path only once it parses as one: `sha256:../x`
        // must not read outside `blobs/`.
        let Ok(parsed) = Digest::parse(&digest) else {
            continue;
        };
        let path = root
            .join(BLOBS)
            .join(parsed.algorithm())
            .join(parsed.encoded());
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        if meta.len() > MAX_MANIFEST {
            continue;
        }
        let bytes = fs::read(&path).map_err(|e| Error::io(&path, e))?;
        // Read as JSON rather than as a typed manifest, so that every kind names its blobs:
        // images and artifacts (`config`, `layers`, `blobs`), indexes (`manifests`), and
        // Docker schema 1 (`fsLayers[].blobSum`). Not JSON (a layer reached without a media
        // type): a leaf.
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        let mut named = |d: &Value| {
            if let Some(digest) = d.get("digest").and_then(Value::as_str) {
                let media = d
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                todo.push((digest.to_owned(), media));
            }
        };
        if let Some(c) = v.get("config") {
            named(c);
        }
        for list in ["manifests", "layers", "blobs"] {
            for d in v.get(list).and_then(Value::as_array).into_iter().flatten() {
                named(d);
            }
        }
        for l in v
            .get("fsLayers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(digest) = l.get("blobSum").and_then(Value::as_str) {
                todo.push((digest.to_owned(), Some(SCHEMA1_LAYER.to_owned())));
            }
        }
    }
    let mut out = Collected::default();
    let blobs = root.join(BLOBS);
    let algs = match fs::read_dir(&blobs) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(&blobs, e)),
    };
    for alg in algs {
        let alg = alg.map_err(|e| Error::io(&blobs, e))?;
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        let dir = alg.path();
        if !dir.is_dir() {
            continue;
        }
        for file in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let file = file.map_err(|e| Error::io(&dir, e))?;
            let name = file.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || reachable.contains(&format!("{alg_name}:{name}")) {
                continue;
            }
            let path = file.path();
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let fresh = meta.modified().map_or(true, |m| m >= keep_newer_than);
            if !meta.is_file() || fresh {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    out.blobs += 1;
                    out.bytes += meta.len();
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }
    tracing::debug!(layout = %root.display(), blobs = out.blobs, bytes = out.bytes, "Collected unreferenced blobs");
    Ok(out)
}
