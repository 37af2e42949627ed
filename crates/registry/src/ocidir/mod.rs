//! `ocidir://`: an OCI image layout directory used as one repository, so images can go
//! registry → directory → registry for air-gapped transfer (regsync's `ocidir` scheme).
//!
//! The layout is the image-spec's (`image-layout.md`): `oci-layout`, an `index.json`
//! whose descriptors name tags with the `org.opencontainers.image.ref.name` annotation,
//! and content under `blobs/<alg>/<encoded>`. Nothing exists until the first write, so a
//! fresh target directory reads as an empty repository.
//!
//! Crash safety: every file is written under a temporary name in its final directory,
//! fsynced, renamed into place, and the directory fsynced. Blobs (manifests included) are
//! written before the `index.json` entry that names them, so after a crash the index is
//! the old one or the new one, and never points at a missing blob. A crash may leave
//! `*.tmp` files behind; they are never read.
//!
//! Concurrency: `index.json` updates are read-modify-write cycles serialized by a fair
//! in-process mutex (shared by clones) and an exclusive lock on `index.json.lock` (other
//! processes, other `OciLayout` values for the same directory). Readers take no lock.
//! Blobs need none: two writers of one digest each rename identical content into place.
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufWriter};
use tokio::sync::Mutex;
use tokio_util::io::ReaderStream;

use crate::blob::{Blob, Hasher, verify};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Content, Descriptor, Manifest};
use crate::memory::Memory;
use crate::reference::Reference;

use self::index::{Entry, INDEX, TempPath};

mod gc;
mod index;
#[cfg(test)]
mod tests;

pub use gc::Collected;

/// Largest manifest read from a layout (the HTTP client's bound too, and regclient's).
const MAX_MANIFEST: u64 = 8 << 20;
/// Bytes per chunk when streaming a blob from disk.
const READ_CHUNK: usize = 256 << 10;
/// Write buffer for blobs: network chunks are small, and each tokio file write is a
/// round trip to the blocking pool.
const WRITE_BUFFER: usize = 256 << 10;
/// The directory under the root that holds content.
const BLOBS: &str = "blobs";

/// An OCI image layout directory, used as one repository (`ocidir://path`).
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
    /// Queues this process's `index.json` updates fairly, so they do not pile up in the
    /// blocking pool waiting for the file lock.
    index_update: Arc<Mutex<()>>,
    memory: Memory,
}

/// What a HEAD tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A manifest found by tag or digest, before its blob is looked at.
#[derive(Debug)]
struct Target {
    digest: Digest,
    /// From the descriptor; `None` when it gave none (the blob is sniffed then).
    media_type: Option<String>,
    /// From the descriptor, when it gave one.
    size: Option<u64>,
}

impl OciLayout {
    /// A layout at `root`, with a memory of its own. No I/O: the directory is created by
    /// the first write.
    pub fn new(root: impl Into<PathBuf>) -> OciLayout {
        OciLayout::sharing(root, Memory::new())
    }

    /// A layout at `root` that shares `memory` with the clients and layouts made with it.
    pub fn sharing(root: impl Into<PathBuf>, memory: Memory) -> OciLayout {
        OciLayout {
            root: root.into(),
            index_update: Arc::new(Mutex::new(())),
            memory,
        }
    }

    /// The memory this layout shares.
    pub(crate) fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Whether there is a layout here (its `index.json`), as a source needs one.
    pub async fn exists(&self) -> Result<bool> {
        let path = self.root.join("index.json");
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The layout's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Digest, media type and size of a manifest by tag or digest; `None` if absent.
    ///
    /// A descriptor whose blob is missing or has another size than the descriptor says
    /// (a truncated copy) also reads as absent, so a sync writes it again.
    pub async fn head_manifest(&self, reference: &str) -> Result<Option<ManifestHead>> {
        let Some(target) = self.resolve(reference).await? else {
            return Ok(None);
        };
        let path = self.blob_path(&target.digest);
        let len = match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        if let Some(expected) = target.size
            && expected != len
        {
            tracing::warn!(
                path = %path.display(),
                expected,
                actual = len,
                "Manifest blob has the wrong size; treating it as absent"
            );
            return Ok(None);
        }
        let media_type = match target.media_type {
            Some(m) => m,
            None => match self.read_manifest_blob(&target.digest, reference).await? {
                Some(bytes) => Manifest::new(bytes, None).media_type,
                None => return Ok(None),
            },
        };
        Ok(Some(ManifestHead {
            digest: target.digest,
            media_type,
            size: len,
        }))
    }

    /// The manifest bytes exactly as stored, by tag or digest; [`Error::NotFound`] if absent.
    ///
    /// The blob is checked against its descriptor: [`Error::SizeMismatch`] or
    /// [`Error::DigestMismatch`] when the file is corrupt.
    pub async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        let not_found = || Error::NotFound {
            what: format!("manifest {reference} in ocidir://{}", self.root.display()),
        };
        let target = self.resolve(reference).await?.ok_or_else(not_found)?;
        let bytes = self
            .read_manifest_blob(&target.digest, reference)
            .await?
            .ok_or_else(not_found)?;
        if let Some(expected) = target.size
            && expected != bytes.len() as u64
        {
            return Err(Error::SizeMismatch {
                digest: target.digest,
                expected,
                actual: bytes.len() as u64,
            });
        }
        let mut hasher = Hasher::for_digest(&target.digest)?;
        hasher.update(&bytes);
        let actual = hasher.finish();
        if actual != target.digest {
            return Err(Error::DigestMismatch {
                expected: target.digest,
                actual,
            });
        }
        Ok(Manifest::new(bytes, target.media_type.as_deref()))
    }

    /// Stores a manifest blob (verified), then points `tag` at it in `index.json`.
    ///
    /// With `tag` `None` only the blob is written: the children of an index are reached
    /// through their parent, and an untagged index entry per child would only clutter
    /// `index.json` (regclient does the same). `tag` may also be a digest string, which
    /// means the same as `None` but stores the blob under that digest (so a `sha512`
    /// reference works) after checking that the bytes match it.
    ///
    /// An existing entry with the same `ref.name` is replaced; if it already names this
    /// digest it is left as is, annotations and all.
    pub async fn put_manifest(&self, tag: Option<&str>, manifest: &Manifest) -> Result<()> {
        let (digest, tag) = match tag {
            None => (manifest.digest.clone(), None),
            Some(t) => match Digest::parse(t) {
                Ok(d) => (d, None),
                Err(_) => {
                    check_tag(t)?;
                    (manifest.digest.clone(), Some(t))
                }
            },
        };
        self.put_blob(&digest, Blob::from_bytes(manifest.bytes.clone()))
            .await?;
        let Some(tag) = tag else {
            return Ok(());
        };
        let entry = Entry::tagged(
            &manifest.media_type,
            digest.to_string(),
            manifest.bytes.len() as u64,
            tag,
        );
        let tag = tag.to_owned();
        let root = self.root.clone();
        let _queued = self.index_update.lock().await;
        blocking(&self.root, move || {
            index::update_index(&root, |index| index.set_tag(&tag, entry))
        })
        .await
    }

    /// Removes `tag` from `index.json` (the entries whose `ref.name` is exactly `tag`);
    /// `Ok(false)` when it was not there. The blobs stay until [`OciLayout::collect_garbage`].
    pub async fn delete_tag(&self, tag: &str) -> Result<bool> {
        let tag = tag.to_owned();
        let root = self.root.clone();
        let _queued = self.index_update.lock().await;
        blocking(&self.root, move || {
            if index::read_index(&root)?.is_none() {
                return Ok(false);
            }
            let mut removed = false;
            index::update_index(&root, |index| {
                // Only the exact name: a full name another tool wrote
                // (`quay.io/x/y:1.0`) is that tool's image, not this tag.
                removed = index.remove_tag(|name| name == tag);
                removed
            })?;
            Ok(removed)
        })
        .await
    }

    /// Deletes the blobs nothing in `index.json` reaches, except those written after
    /// `keep_newer_than` (another writer's image may still be on its way to the index).
    /// Holds the index lock throughout, so no index update interleaves.
    pub async fn collect_garbage(
        &self,
        keep_newer_than: std::time::SystemTime,
    ) -> Result<Collected> {
        let root = self.root.clone();
        let _queued = self.index_update.lock().await;
        blocking(&self.root, move || gc::collect(&root, keep_newer_than)).await
    }

    /// Tags in `index.json` (`ref.name` annotations), sorted, deduplicated.
    ///
    /// Some tools write full names (`docker.io/library/busybox:latest`); they are listed
    /// by their tag (`latest`), which [`OciLayout::head_manifest`] finds, as regclient
    /// does. A `ref.name` that yields no valid tag (a path, `..`) is left out with a
    /// warning: tags go into registry URLs and names.
    pub async fn list_tags(&self) -> Result<Vec<String>> {
        let root = self.root.clone();
        let Some(index) = blocking(&self.root, move || index::read_index(&root)).await? else {
            return Ok(Vec::new());
        };
        let mut tags = Vec::new();
        let mut bad = Vec::new();
        for name in index.manifests.iter().filter_map(|e| e.ref_name()) {
            match listed_tag(name) {
                Some(t) => tags.push(t.to_owned()),
                None => bad.push(name),
            }
        }
        if let Some(first) = bad.first() {
            let example: String = first.chars().take(100).collect();
            tracing::warn!(
                layout = %self.root.display(),
                count = bad.len(),
                example = ?example,
                "Skipping ref names in index.json that are not a valid tag"
            );
        }
        tags.sort_unstable();
        tags.dedup();
        Ok(tags)
    }

    /// The referrers of `subject` found by reading every manifest `index.json` lists and
    /// keeping those whose `subject` it is: how ORAS leaves referrers in a layout (untagged
    /// entries, no `sha256-<hex>` index). Slow, so only on request (`referrerSlow`). A
    /// listed manifest that is missing or unreadable is skipped.
    pub async fn referrers_by_scan(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let root = self.root.clone();
        let Some(index) = blocking(&self.root, move || index::read_index(&root)).await? else {
            return Ok(Vec::new());
        };
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for entry in &index.manifests {
            let Ok(digest) = Digest::parse(&entry.digest) else {
                continue;
            };
            if digest == *subject || !seen.insert(digest.clone()) {
                continue;
            }
            let Ok(m) = self.get_manifest(&digest.to_string()).await else {
                continue;
            };
            let names = match m.content(&format!("ocidir://{}@{digest}", self.root.display())) {
                Ok(Content::Image { subject: s, .. } | Content::Index { subject: s, .. }) => s,
                _ => None,
            };
            if names.is_some_and(|s| s.digest == *subject) {
                out.push(crate::referrers::referrer_descriptor(&m));
            }
        }
        Ok(out)
    }

    /// Size of a blob if present.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Marks a blob a copy reuses as used now (its modification time), so that a garbage
    /// collection by another process, which keeps young blobs, leaves it while the image
    /// that reuses it is on its way into the index. Best effort: a layout on read-only
    /// media, or a blob gone meanwhile, is left as it is.
    pub async fn keep_blob(&self, digest: &Digest) {
        let path = self.blob_path(digest);
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        })
        .await;
    }

    /// Streams a blob from disk in bounded chunks; [`Error::NotFound`] if absent.
    ///
    /// The bytes are not verified here: like a registry download, the consumer verifies
    /// (the copy engine wraps every blob stream in [`crate::blob::verify`]).
    pub async fn get_blob(&self, digest: &Digest) -> Result<Blob> {
        let path = self.blob_path(digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    what: format!("blob {digest} in ocidir://{}", self.root.display()),
                });
            }
            Err(e) => return Err(Error::io(path, e)),
        };
        let size = file
            .metadata()
            .await
            .map_err(|e| Error::io(&path, e))?
            .len();
        let stream = ReaderStream::with_capacity(file, READ_CHUNK)
            .map(move |chunk| chunk.map_err(|e| Error::io(path.clone(), e)));
        Ok(Blob {
            size: Some(size),
            stream: Box::pin(stream),
        })
    }

    /// Streams `blob` into `blobs/<alg>/<encoded>`, verifying its size (when known) and
    /// digest on the way; nothing appears under the final name unless both match.
    ///
    /// The bytes go to a temporary file beside the final one, which is fsynced and renamed
    /// into place; on any error, or if the future is dropped, the temporary file is removed.
    /// A blob already present (with the expected size, when known) is not read at all.
    pub async fn put_blob(&self, digest: &Digest, blob: Blob) -> Result<()> {
        let Blob { size, stream } = blob;
        // Before any I/O, so an unsupported algorithm leaves no trace.
        let mut stream = verify(digest, size, stream)?;
        let dir = self.root.join(BLOBS).join(digest.algorithm());
        let target = dir.join(digest.encoded());
        match tokio::fs::metadata(&target).await {
            Ok(m) if m.is_file() && size.is_none_or(|s| s == m.len()) => {
                self.keep_blob(digest).await;
                return Ok(());
            }
            Ok(m) if m.is_file() => tracing::warn!(
                path = %target.display(),
                expected = size,
                actual = m.len(),
                "Replacing a blob file of the wrong size"
            ),
            // Not a file (a directory?): the rename below fails and says so.
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(target, e)),
        }
        let (root, blob_dir) = (self.root.clone(), dir.clone());
        blocking(&dir, move || {
            index::init_layout(&root)?;
            index::create_dir_durable(&blob_dir)
        })
        .await?;

        // Declared before the file, so it is dropped (and unlinks) after the file closes.
        let tmp = TempPath::new(dir.join(format!(
            "{}.{:016x}.tmp",
            digest.encoded(),
            fastrand::u64(..)
        )));
        let io_err = |e| Error::io(tmp.path(), e);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .await
            .map_err(io_err)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        while let Some(chunk) = stream.next().await {
            out.write_all(&chunk?).await.map_err(io_err)?;
        }
        out.flush().await.map_err(io_err)?;
        let file = out.into_inner();
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        if let Err(e) = tokio::fs::rename(tmp.path(), &target).await {
            // Another writer of the same digest got there first and the platform would not
            // replace a file in use (Windows): what is there is the same content.
            // `tmp` is dropped, and removed, either way.
            return match self.blob_size(digest).await {
                Ok(Some(s)) if size.is_none_or(|want| want == s) => Ok(()),
                _ => Err(Error::io(target, e)),
            };
        }
        tmp.disarm();
        blocking(&target, move || index::sync_dir(&dir)).await
    }

    /// Where a blob lives. Safe as a path: a parsed digest's algorithm and encoded part
    /// contain no `/` and cannot be `.` or `..`.
    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join(BLOBS)
            .join(digest.algorithm())
            .join(digest.encoded())
    }

    /// Finds what `reference` (a tag or a digest) names. A digest need not be in the index
    /// (an index's children are not); its descriptor is used when it is.
    async fn resolve(&self, reference: &str) -> Result<Option<Target>> {
        let root = self.root.clone();
        let index = blocking(&self.root, move || index::read_index(&root)).await?;
        if let Ok(digest) = Digest::parse(reference) {
            let entry = index
                .as_ref()
                .and_then(|i| i.manifests.iter().find(|e| e.digest == reference));
            return Ok(Some(Target {
                digest,
                media_type: entry.and_then(|e| descriptor_media_type(e.media_type.as_deref())),
                size: entry.and_then(descriptor_size),
            }));
        }
        let Some(entry) = index.as_ref().and_then(|i| i.find_tag(reference)) else {
            return Ok(None);
        };
        let digest = Digest::parse(&entry.digest).map_err(|e| {
            index::corrupt(
                &self.root.join(INDEX),
                format!("entry for {reference}: {e}"),
            )
        })?;
        Ok(Some(Target {
            digest,
            media_type: descriptor_media_type(entry.media_type.as_deref()),
            size: descriptor_size(entry),
        }))
    }

    /// Reads a manifest blob whole (bounded by [`MAX_MANIFEST`]); `None` if absent.
    async fn read_manifest_blob(&self, digest: &Digest, reference: &str) -> Result<Option<Bytes>> {
        let path = self.blob_path(digest);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let too_large = |len: u64| Error::InvalidManifest {
            reference: reference.to_owned(),
            reason: format!(
                "{len} bytes is more than the {MAX_MANIFEST} bytes a manifest may have"
            ),
        };
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::io(&path, e))?
            .len();
        if len > MAX_MANIFEST {
            return Err(too_large(len));
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        (&mut file)
            .take(MAX_MANIFEST + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| Error::io(&path, e))?;
        if buf.len() as u64 > MAX_MANIFEST {
            return Err(too_large(buf.len() as u64));
        }
        Ok(Some(Bytes::from(buf)))
    }
}

/// A descriptor's media type, without parameters; `None` when it says nothing useful, as
/// [`Manifest::new`] treats a registry's `Content-Type`.
fn descriptor_media_type(media_type: Option<&str>) -> Option<String> {
    let m = media_type?.split(';').next()?.trim();
    (!m.is_empty() && m != "application/json" && m != "text/plain").then(|| m.to_owned())
}

/// The tag a `ref.name` is listed as: itself when it is a tag, the tag of a full name
/// (`docker.io/library/busybox:latest`), else none.
fn listed_tag(name: &str) -> Option<&str> {
    if crate::reference::is_valid_tag(name) {
        return Some(name);
    }
    let reference = Reference::parse(name).ok()?;
    let (_, tag) = name.rsplit_once(':')?;
    (reference.tag() == Some(tag) && crate::reference::is_valid_tag(tag)).then_some(tag)
}

/// A descriptor's size; some writers put 0 for "unknown".
fn descriptor_size(entry: &Entry) -> Option<u64> {
    entry.size.filter(|s| *s > 0)
}

/// Refuses what can never be a `ref.name`. The annotation's grammar is broad (other tools
/// store full names), so only the empty string, whitespace and control characters are out.
fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Protocol {
            what: format!("tag {tag:?}"),
            reason: "not a valid tag for an OCI layout".to_owned(),
        });
    }
    Ok(())
}

/// Runs blocking file work off the async threads. A panic in `f` is resumed here.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::io(path, io::Error::other(e))),
    }
}
