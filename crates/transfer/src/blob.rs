//! One blob, source to target: HEAD the target, mount when both sides share a registry,
//! else stream GET → PUT with the digest verified on the way. De-duplicated per target
//! repository within a run, retried on transient failures.
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use futures_util::StreamExt;
use regferry_registry::blob::verify;
use regferry_registry::http::{Mount, UploadMode};
use regferry_registry::repo::Repo;
use regferry_registry::{Blob, Digest, Error, Result};

use crate::stats::Stats;
use crate::{BlobOutcome, Transfer};

/// How many blobs' target repositories are remembered for mounting.
const LANDED_LIMIT: usize = 100_000;

/// Tries per blob when the failure is transient (a reset, a 5xx, a corrupt stream).
const ATTEMPTS: u32 = 3;

impl Transfer {
    /// Makes sure `digest` exists in `dst`, copying it from `src` if needed. `likely_absent`
    /// (a repository that had no tags) asks the target with a mount instead of a HEAD, which
    /// saves a request per blob when it is indeed absent.
    pub async fn copy_blob(
        &self,
        src: &Repo,
        dst: &Repo,
        digest: &Digest,
        size: Option<u64>,
        likely_absent: bool,
    ) -> Result<BlobOutcome> {
        self.blobs_inflight
            .run((dst.key(), digest.clone()), || {
                self.copy_blob_once(src, dst, digest, size, likely_absent)
            })
            .await
    }

    async fn copy_blob_once(
        &self,
        src: &Repo,
        dst: &Repo,
        digest: &Digest,
        size: Option<u64>,
        likely_absent: bool,
    ) -> Result<BlobOutcome> {
        // Mount from the source when it shares the target's registry, or else from a target
        // repository this run already put the blob in (a base layer shared by many images is
        // then read from the source once per target registry, not once per repository).
        let landed = self.landed_near(dst, digest).await;
        let from = dst.mount_from(src).map(str::to_owned).or(landed);
        // A blob this run already put in `dst` is most likely still there: a HEAD says so.
        let probe = likely_absent && !self.landed_in(dst, digest).await && self.probes(dst).await;
        if !probe && dst.blob_size(digest).await?.is_some() {
            dst.keep_blob(digest).await;
            return Ok(self.existed(dst, digest).await);
        }
        let _slot = self.blob_slots.acquire().await.ok_or(Error::Cancelled)?;
        let mut session = None;
        // A mount answers "already here" too, so on a new repository it replaces the HEAD:
        // from another repository when there is one, else from `dst` itself (201: it is
        // here; 202: it is not, and here is the upload session).
        let ask = match (&from, probe) {
            (Some(from), _) => Some((from.clone(), false)),
            (None, true) => dst.own_name().map(|n| (n.to_owned(), true)),
            (None, false) => None,
        };
        // The source's answer, when its read started early.
        let mut early = None;
        if let Some((from, itself)) = ask {
            let mount = if itself {
                // A probe of a repository this run created almost always opens an upload
                // session: the source read starts at the same time, so that the copy waits
                // for one round trip to the source rather than one to each side in turn.
                // When the blob is there after all, the read is dropped unread.
                let (mount, blob) =
                    tokio::join!(dst.mount_blob(digest, &from), src.get_blob(digest, size));
                early = Some(blob);
                mount
            } else {
                dst.mount_blob(digest, &from).await
            };
            match mount {
                Ok(Mount::Mounted) if itself => return Ok(self.existed(dst, digest).await),
                Ok(Mount::Mounted) => {
                    Stats::add(&self.stats.blobs_mounted, 1);
                    self.record_landing(dst, digest).await;
                    return Ok(BlobOutcome::Mounted);
                }
                Ok(Mount::Upload(url)) => session = Some(url),
                Ok(Mount::Unsupported) => {}
                // A refused mount is not fatal: copy the bytes instead. A registry that
                // refuses mounts from a repository itself (a 4xx other than 429) is asked
                // with HEADs from now on; after any other failure, only this blob is.
                Err(e) => {
                    tracing::debug!(%digest, error = %e, "Mount failed; copying instead");
                    if itself {
                        if matches!(
                            e,
                            Error::Status {
                                status: 400..=499,
                                ..
                            }
                        ) && !e.is_rate_limited()
                        {
                            self.no_probes(dst).await;
                        }
                        if dst.blob_size(digest).await?.is_some() {
                            return Ok(self.existed(dst, digest).await);
                        }
                    }
                }
            }
        }
        let mut mode = UploadMode::Monolithic;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let counted = Arc::new(AtomicU64::new(0));
            let result = async {
                let blob = match early.take() {
                    Some(blob) => blob?,
                    None => src.get_blob(digest, size).await?,
                };
                let stream = verify(digest, size.or(blob.size), blob.stream)?;
                let stats_bytes = counted.clone();
                let stream = stream.map(move |item: Result<Bytes>| {
                    if let Ok(b) = &item {
                        Stats::add(&stats_bytes, b.len() as u64);
                    }
                    item
                });
                let blob = Blob {
                    size: size.or(blob.size),
                    stream: Box::pin(stream),
                };
                dst.put_blob(digest, blob, mode, session.take()).await
            }
            .await;
            let n = counted.load(std::sync::atomic::Ordering::Relaxed);
            Stats::add(&self.stats.bytes_copied, n);
            match result {
                Ok(()) => {
                    Stats::add(&self.stats.blobs_copied, 1);
                    self.record_landing(dst, digest).await;
                    return Ok(BlobOutcome::Copied(n));
                }
                Err(e) if attempt < ATTEMPTS && (e.is_retryable() || wants_chunked(&e)) => {
                    if wants_chunked(&e) {
                        mode = UploadMode::Chunked;
                    }
                    tracing::warn!(%digest, target = %dst, attempt, error = %e, "Retrying blob copy");
                }
                Err(e) => {
                    if let Some(s) = session.take() {
                        dst.cancel_upload(s).await;
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Where a blob landed: a repository on a registry host, by name only, so that the hint
/// does not keep a replaced configuration's clients alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landing {
    /// The host and TLS mode (what makes two clients the same registry for a mount).
    host: String,
    /// The repository.
    name: String,
}

impl Landing {
    fn of(repo: &Repo) -> Option<Landing> {
        match repo {
            Repo::Registry { client, name, .. } => {
                let o = client.options();
                Some(Landing {
                    host: format!("{}|{}", o.hostname, o.tls.as_str()),
                    name: name.clone(),
                })
            }
            Repo::Layout(_) => None,
        }
    }
}

impl Transfer {
    /// Counts and remembers a blob `dst` already had.
    async fn existed(&self, dst: &Repo, digest: &Digest) -> BlobOutcome {
        Stats::add(&self.stats.blobs_existing, 1);
        self.record_landing(dst, digest).await;
        BlobOutcome::Existed
    }

    async fn record_landing(&self, dst: &Repo, digest: &Digest) {
        let Some(here) = Landing::of(dst) else { return };
        let mut map = self.landed.lock().await;
        // Only a hint for mounting: forget it all rather than grow without bound.
        if map.len() >= LANDED_LIMIT && !map.contains_key(digest) {
            map.clear();
        }
        let list = map.entry(digest.clone()).or_default();
        if !list.contains(&here) {
            list.push(here);
        }
    }

    /// Notes that manifest `digest` is in `dst`.
    pub(crate) async fn record_manifest(&self, dst: &Repo, digest: &Digest) {
        let mut set = self.pushed.lock().await;
        if set.len() >= LANDED_LIMIT {
            set.clear();
        }
        set.insert((dst.key(), digest.clone()));
    }

    /// Whether manifest `digest` was pushed to `dst` by this process.
    pub(crate) async fn manifest_pushed(&self, dst: &Repo, digest: &Digest) -> bool {
        self.pushed
            .lock()
            .await
            .contains(&(dst.key(), digest.clone()))
    }

    /// Whether this run (or process) put `digest` in `dst` already.
    async fn landed_in(&self, dst: &Repo, digest: &Digest) -> bool {
        let Some(here) = Landing::of(dst) else {
            return false;
        };
        let map = self.landed.lock().await;
        map.get(digest).is_some_and(|l| l.contains(&here))
    }

    /// Whether `dst`'s registry may be asked about blobs with a mount from the repository itself.
    async fn probes(&self, dst: &Repo) -> bool {
        match dst {
            Repo::Registry { client, .. } => !self
                .refuses_self_mount
                .lock()
                .await
                .contains(client.registry()),
            Repo::Layout(_) => false,
        }
    }

    async fn no_probes(&self, dst: &Repo) {
        if let Repo::Registry { client, .. } = dst {
            self.refuses_self_mount
                .lock()
                .await
                .insert(client.registry().to_owned());
        }
    }

    /// A repository on `dst`'s registry that already holds `digest`, to mount from.
    async fn landed_near(&self, dst: &Repo, digest: &Digest) -> Option<String> {
        let here = Landing::of(dst)?;
        let map = self.landed.lock().await;
        map.get(digest)?
            .iter()
            .find(|l| l.host == here.host && l.name != here.name)
            .map(|l| l.name.clone())
    }
}

/// A registry that refuses a single-request upload (some proxies limit request sizes)
/// may take the same blob in chunks.
fn wants_chunked(e: &Error) -> bool {
    matches!(e, Error::Status { method, status: 400 | 413 | 415 | 416, .. } if method == "PUT")
}
