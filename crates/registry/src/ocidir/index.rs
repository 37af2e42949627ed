//! `index.json` and `oci-layout`: their on-disk model, atomic replacement, and the lock
//! that serializes read-modify-write cycles between tasks and processes.
//!
//! Everything here is blocking `std::fs` I/O, called from `spawn_blocking`: an index
//! update is one short critical section, and a blocking file lock cannot be awaited.
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::manifest::media_type;

/// The index of the layout.
pub(super) const INDEX: &str = "index.json";
/// The layout marker file.
pub(super) const LAYOUT: &str = "oci-layout";
/// The lock file held across an index update. Not part of the spec; other tools ignore it.
pub(super) const LOCK: &str = "index.json.lock";
/// The annotation that names a tag (image-spec `annotations.md`).
pub(super) const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// What `oci-layout` holds when regferry creates it.
const LAYOUT_JSON: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// `index.json`. Only what regferry reads is modelled; every other field (top-level
/// `annotations`, `subject`, …) passes through `other` untouched.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Index {
    #[serde(
        rename = "schemaVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    pub(super) manifests: Vec<Entry>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// A descriptor in `index.json`. Fields other tools add (`platform`, `artifactType`, …)
/// pass through `other`; `mediaType` and `size` are optional because some writers omit them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Entry {
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub(super) media_type: Option<String>,
    pub(super) digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) annotations: Option<BTreeMap<String, String>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl Entry {
    /// A descriptor for a manifest regferry stores under `tag`.
    pub(super) fn tagged(media_type: &str, digest: String, size: u64, tag: &str) -> Entry {
        Entry {
            media_type: Some(media_type.to_owned()),
            digest,
            size: Some(size),
            annotations: Some(BTreeMap::from([(REF_NAME.to_owned(), tag.to_owned())])),
            other: Map::new(),
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub(super) fn ref_name(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }
}

impl Index {
    /// The index of a layout that has none yet.
    pub(super) fn empty() -> Index {
        Index {
            schema_version: Some(2),
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            other: Map::new(),
        }
    }

    /// Parses `index.json` (read from `path`).
    pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Index> {
        let index: Index =
            serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
        match index.schema_version {
            Some(2) | None => Ok(index),
            Some(v) => Err(corrupt(path, format!("schemaVersion {v} is not 2"))),
        }
    }

    /// The entry tagged `tag`. An exact `ref.name` match wins; failing that, one written by
    /// a tool that stores full names (`docker.io/library/busybox:latest` for `latest`), if
    /// all such entries agree on the digest, as regclient's `indexGet` falls back to.
    pub(super) fn find_tag(&self, tag: &str) -> Option<&Entry> {
        if let Some(e) = self.manifests.iter().find(|e| e.ref_name() == Some(tag)) {
            return Some(e);
        }
        if tag.contains([':', '/', '@']) {
            return None;
        }
        let suffix = format!(":{tag}");
        let mut named = self
            .manifests
            .iter()
            .filter(|e| e.ref_name().is_some_and(|n| n.ends_with(&suffix)));
        let first = named.next()?;
        named.all(|e| e.digest == first.digest).then_some(first)
    }

    /// Removes every entry whose `ref.name` `names` the tag; returns whether any was there.
    pub(super) fn remove_tag(&mut self, names: impl Fn(&str) -> bool) -> bool {
        let before = self.manifests.len();
        self.manifests.retain(|e| !e.ref_name().is_some_and(&names));
        self.manifests.len() != before
    }

    /// Points `tag` at `entry`: the first entry with that `ref.name` is replaced in place
    /// (kept as is if it already names the same digest, so its annotations survive), later
    /// duplicates are dropped, and a new tag is appended. Returns whether anything changed.
    pub(super) fn set_tag(&mut self, tag: &str, entry: Entry) -> bool {
        let mut changed = false;
        let mut seen = false;
        let mut kept = Vec::with_capacity(self.manifests.len() + 1);
        for e in self.manifests.drain(..) {
            if e.ref_name() != Some(tag) {
                kept.push(e);
            } else if seen {
                changed = true;
            } else {
                seen = true;
                if e.digest == entry.digest {
                    kept.push(e);
                } else {
                    kept.push(entry.clone());
                    changed = true;
                }
            }
        }
        if !seen {
            kept.push(entry);
            changed = true;
        }
        self.manifests = kept;
        changed
    }
}

/// A corrupt `index.json` or `oci-layout`.
pub(super) fn corrupt(path: &Path, reason: String) -> Error {
    Error::Protocol {
        what: path.display().to_string(),
        reason,
    }
}

/// Checks `oci-layout`. Any 1.x version is accepted: a minor version may only add.
pub(super) fn check_layout(path: &Path, bytes: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Layout {
        #[serde(rename = "imageLayoutVersion")]
        version: String,
    }
    let layout: Layout = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e.to_string()))?;
    if layout.version == "1" || layout.version.starts_with("1.") {
        Ok(())
    } else {
        Err(corrupt(
            path,
            format!(
                "imageLayoutVersion {:?} is not supported (expected 1.0.0)",
                layout.version
            ),
        ))
    }
}

/// Reads `index.json`; `None` when the layout has none yet.
pub(super) fn read_index(root: &Path) -> Result<Option<Index>> {
    let path = root.join(INDEX);
    match fs::read(&path) {
        Ok(bytes) => {
            check_existing_layout(root)?;
            Index::parse(&path, &bytes).map(Some)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Checks `oci-layout` when there is one. A missing one is tolerated when reading, since
/// the index is what matters and some tools write it last.
fn check_existing_layout(root: &Path) -> Result<()> {
    let path = root.join(LAYOUT);
    match fs::read(&path) {
        Ok(bytes) => check_layout(&path, &bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Creates the layout's root and `oci-layout` if missing, and refuses an unknown version.
pub(super) fn ensure_layout(root: &Path) -> Result<()> {
    create_dir_durable(root)?;
    let path = root.join(LAYOUT);
    match fs::read(&path) {
        Ok(bytes) => check_layout(&path, &bytes),
        // Two writers may both get here; each renames identical content into place.
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(root, LAYOUT, LAYOUT_JSON),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Makes `root` a valid layout before content is written into it: the directory,
/// `oci-layout`, and an empty `index.json` (the spec requires one), so that a sync cut
/// short after its first blob still leaves a layout other tools can open.
pub(super) fn init_layout(root: &Path) -> Result<()> {
    ensure_layout(root)?;
    if root.join(INDEX).is_file() {
        return Ok(());
    }
    // Under the lock, so a concurrent tagging cannot be overwritten by an empty index.
    update_index(root, |_| false)
}

/// One read-modify-write of `index.json` under the layout's exclusive file lock. `change`
/// returns whether it modified the index; if not, nothing is written (unless there was no
/// index yet: then the empty one is).
///
/// Readers take no lock: the index is replaced by rename, so they see the old or the new one.
pub(super) fn update_index(root: &Path, change: impl FnOnce(&mut Index) -> bool) -> Result<()> {
    ensure_layout(root)?;
    let _lock = lock_index(root)?;
    let (mut index, fresh) = match read_index(root)? {
        Some(index) => (index, false),
        None => (Index::empty(), true),
    };
    if !change(&mut index) && !fresh {
        return Ok(());
    }
    let bytes =
        serde_json::to_vec(&index).map_err(|e| Error::io(root.join(INDEX), io::Error::other(e)))?;
    write_atomic(root, INDEX, &bytes)
}

/// The exclusive lock on `index.json.lock`, held until the returned file is dropped.
pub(super) fn lock_index(root: &Path) -> Result<File> {
    let lock_path = root.join(LOCK);
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    // flock on Unix, LockFileEx on Windows; released when `lock` is closed, also on a crash.
    lock.lock().map_err(|e| Error::io(&lock_path, e))?;
    Ok(lock)
}

/// Writes `dir/name` so that a crash leaves the old content or the new, never a mix:
/// a temporary file in the same directory, fsynced, renamed over, and the directory fsynced.
pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = TempPath::new(dir.join(format!("{name}.tmp-{:016x}", fastrand::u64(..))));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp.path())
        .map_err(|e| Error::io(tmp.path(), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(tmp.path(), e))?;
    file.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    drop(file);
    let target = dir.join(name);
    fs::rename(tmp.path(), &target).map_err(|e| Error::io(&target, e))?;
    tmp.disarm();
    sync_dir(dir)
}

/// Creates `dir` and missing parents, fsyncing each parent that gained an entry, so a
/// blob renamed into a new directory survives a crash along with the directory.
pub(super) fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another task or process created it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    }
    match parent {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Fsyncs a directory so that renames and creations in it are durable.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        // Some filesystems (FUSE, some network mounts) cannot fsync a directory; the data
        // files themselves were fsynced, which is the most they offer.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Directories cannot be opened for fsync on this platform; renames are durable once the
/// filesystem journals them (NTFS does).
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

/// A temporary file that is removed when dropped, unless disarmed after its rename: an
/// error, a panic or a cancelled future never leaves it behind.
#[derive(Debug)]
pub(super) struct TempPath {
    path: Option<PathBuf>,
}

impl TempPath {
    /// Guards `path` (not yet created).
    pub(super) fn new(path: PathBuf) -> TempPath {
        TempPath { path: Some(path) }
    }

    /// The path.
    pub(super) fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the file: it has been renamed into place.
    pub(super) fn disarm(mut self) {
        self.path = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // A blocking unlink in Drop: it is one metadata operation, and Drop cannot await.
            // Failure (already gone, never created) leaves nothing to clean up.
            let _ = fs::remove_file(path);
        }
    }
}
