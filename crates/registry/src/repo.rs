//! One repository to read from or write to: on a registry, or an OCI layout directory.
//! The copy engine sees only this type; an enum rather than a trait object, because the
//! two kinds are all there is and async methods stay simple.
use std::fmt;

use crate::blob::Blob;
use crate::digest::Digest;
use crate::error::Result;
use crate::http::{ManifestHead, Mount, PushedManifest, RegistryClient, UploadMode, UploadSession};
use crate::manifest::Manifest;
use crate::memory::Memory;
use crate::ocidir::OciLayout;

/// A repository on a registry, or an OCI layout.
#[derive(Debug, Clone)]
pub enum Repo {
    /// `registry/name`.
    Registry {
        /// The registry's client (all writes go here).
        client: RegistryClient,
        /// The repository path.
        name: String,
        /// Where reads go, in order: pull-only mirrors and the registry itself, by priority.
        /// Empty means the registry alone.
        reads: Vec<RegistryClient>,
    },
    /// `ocidir://path`.
    Layout(OciLayout),
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repo::Registry { client, name, .. } => write!(f, "{}/{name}", client.registry()),
            Repo::Layout(l) => write!(f, "ocidir://{}", l.root().display()),
        }
    }
}

impl Repo {
    /// A key that is equal for the same repository, for de-duplicating work.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The memory of the clients and layouts this repository was made with.
    pub(crate) fn memory(&self) -> &Memory {
        match self {
            Repo::Registry { client, .. } => client.memory(),
            Repo::Layout(l) => l.memory(),
        }
    }

    /// The repository's resolved host, as its memory is keyed: `scheme://host[:port]`, or
    /// `ocidir://` and the directory.
    pub(crate) fn host_key(&self) -> String {
        match self {
            Repo::Registry { client, .. } => client.origin().to_owned(),
            Repo::Layout(l) => format!("ocidir://{}", l.root().display()),
        }
    }

    /// A tag of this repository, as its memory is keyed: the resolved host, the path the
    /// client sends (path prefix included) and the tag.
    pub(crate) fn tag_key(&self, tag: &str) -> String {
        match self {
            Repo::Registry { client, name, .. } => {
                let prefix = &client.options().path_prefix;
                format!("{}/{prefix}/{name}:{tag}", client.origin())
            }
            Repo::Layout(_) => format!("{}:{tag}", self.host_key()),
        }
    }

    /// The digest, type and size of a manifest (by tag or digest); `None` when absent.
    pub async fn head_manifest(&self, reference: &str) -> Result<Option<ManifestHead>> {
        match self {
            Repo::Registry {
                client,
                name,
                reads,
            } => {
                let mut last = None;
                for c in mirrors_then(client, reads) {
                    match c.head_manifest(name, reference).await {
                        Ok(Some(h)) => return Ok(Some(h)),
                        Ok(None) if is_mirror(c) => {}
                        Err(e) if is_mirror(c) => {
                            tracing::debug!(mirror = c.registry(), error = %e, "Mirror failed; trying the next");
                            last = Some(e);
                        }
                        other => return other,
                    }
                }
                match last {
                    Some(e) => Err(e),
                    None => Ok(None),
                }
            }
            Repo::Layout(l) => Ok(l.head_manifest(reference).await?.map(|h| ManifestHead {
                digest: h.digest,
                media_type: h.media_type,
                size: h.size,
                rate_limit: None,
            })),
        }
    }

    /// A manifest's exact bytes.
    pub async fn get_manifest(&self, reference: &str) -> Result<Manifest> {
        match self {
            Repo::Registry {
                client,
                name,
                reads,
            } => first_ok(client, reads, |c| c.get_manifest(name, reference)).await,
            Repo::Layout(l) => l.get_manifest(reference).await,
        }
    }

    /// Stores a manifest under a tag, or by digest when `tag` is `None`.
    pub async fn put_manifest(&self, tag: Option<&str>, m: &Manifest) -> Result<PushedManifest> {
        match self {
            Repo::Registry { client, name, .. } => {
                let reference = tag.map_or_else(|| m.digest.to_string(), str::to_owned);
                let pushed = client.put_manifest(name, &reference, m).await;
                if let Some(tag) = tag {
                    // Even a failed PUT may have landed; listings must not hide it.
                    crate::tags::note_write(self, tag);
                }
                pushed
            }
            Repo::Layout(l) => {
                let pushed = l.put_manifest(tag, m).await;
                if let Some(tag) = tag {
                    crate::tags::note_write(self, tag);
                }
                pushed?;
                Ok(PushedManifest {
                    digest: Some(m.digest.clone()),
                    subject: None,
                })
            }
        }
    }

    /// Removes a tag and nothing else (other tags on its image stay); `Ok(false)` when the
    /// tag was not there. See [`RegistryClient::delete_tag`].
    pub async fn delete_tag(&self, tag: &str) -> Result<bool> {
        match self {
            Repo::Registry { client, name, .. } => {
                let deleted = client.delete_tag(name, tag).await;
                // Even a failed delete may have moved the tag; listings must not hide it.
                crate::tags::note_write(self, tag);
                deleted
            }
            Repo::Layout(l) => {
                let deleted = l.delete_tag(tag).await;
                crate::tags::note_write(self, tag);
                deleted
            }
        }
    }

    /// All tags.
    pub async fn list_tags(&self) -> Result<Vec<String>> {
        match self {
            Repo::Registry {
                client,
                name,
                reads,
            } => first_ok(client, reads, |c| c.list_tags(name)).await,
            Repo::Layout(l) => l.list_tags().await,
        }
    }

    /// A blob's size; `None` when absent.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self {
            Repo::Registry { client, name, .. } => client.blob_size(name, digest).await,
            Repo::Layout(l) => l.blob_size(digest).await,
        }
    }

    /// Streams a blob (unverified; the copy verifies).
    pub async fn get_blob(&self, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        match self {
            Repo::Registry {
                client,
                name,
                reads,
            } => first_ok(client, reads, |c| c.get_blob(name, digest, size)).await,
            Repo::Layout(l) => l.get_blob(digest).await,
        }
    }

    /// Tells the target that a copy reuses a blob it has: an OCI layout marks it as used
    /// now, so that another process's garbage collection keeps it; a registry needs nothing.
    pub async fn keep_blob(&self, digest: &Digest) {
        if let Repo::Layout(l) = self {
            l.keep_blob(digest).await;
        }
    }

    /// Stores a blob whose stream is already verified.
    pub async fn put_blob(
        &self,
        digest: &Digest,
        blob: Blob,
        mode: UploadMode,
        session: Option<UploadSession>,
    ) -> Result<()> {
        match self {
            Repo::Registry { client, name, .. } => {
                client.put_blob(name, digest, blob, mode, session).await
            }
            Repo::Layout(l) => l.put_blob(digest, blob).await,
        }
    }

    /// The repository name to mount blobs from, when `source` lives on the same registry.
    pub fn mount_from<'a>(&self, source: &'a Repo) -> Option<&'a str> {
        match (self, source) {
            (
                Repo::Registry {
                    client: a,
                    name: an,
                    ..
                },
                Repo::Registry {
                    client: b,
                    name: bn,
                    ..
                },
            ) if a.same_host(b) && an != bn => Some(bn.as_str()),
            _ => None,
        }
    }

    /// Cancels an upload session that will not be used.
    pub async fn cancel_upload(&self, session: UploadSession) {
        if let Repo::Registry { client, name, .. } = self {
            client.cancel_upload(name, session).await;
        }
    }

    /// The repository path on its registry; `None` for a layout.
    pub fn own_name(&self) -> Option<&str> {
        match self {
            Repo::Registry { name, .. } => Some(name),
            Repo::Layout(_) => None,
        }
    }

    /// Links a blob from another repository of the same registry.
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<Mount> {
        match self {
            Repo::Registry { client, name, .. } => client.mount_blob(name, digest, from).await,
            Repo::Layout(_) => Ok(Mount::Unsupported),
        }
    }
}

/// The clients to read from, in order; the registry alone when it has no mirrors.
fn mirrors_then<'a>(
    client: &'a RegistryClient,
    reads: &'a [RegistryClient],
) -> Vec<&'a RegistryClient> {
    if reads.is_empty() {
        vec![client]
    } else {
        reads.iter().collect()
    }
}

fn is_mirror(c: &RegistryClient) -> bool {
    c.options().mirror_of.is_some()
}

/// Tries mirrors in order; a mirror that fails or lacks the content passes the request on.
/// The registry's own answer (error included) is final.
async fn first_ok<'a, T, F, Fut>(
    client: &'a RegistryClient,
    reads: &'a [RegistryClient],
    op: F,
) -> Result<T>
where
    F: Fn(&'a RegistryClient) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let order = mirrors_then(client, reads);
    let mut last = None;
    for c in order {
        match op(c).await {
            Ok(v) => return Ok(v),
            Err(e) if is_mirror(c) => {
                tracing::debug!(mirror = c.registry(), error = %e, "Mirror failed; trying the next");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(crate::error::Error::Cancelled))
}
