//! One blob, source to targets: HEAD each target, mount when both sides share a registry,
//! else stream GET → PUT with the digest verified on the way; to several targets at once,
//! one source read feeds them all. De-duplicated per target repository within a run,
//! retried per target on transient failures.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use regferry_registry::blob::verify;
use regferry_registry::http::{Mount, UploadMode, UploadSession};
use regferry_registry::repo::Repo;
use regferry_registry::{Blob, ByteStream, Digest, Error, Result};
use tokio::sync::mpsc;

use crate::stats::Stats;
use crate::{BlobOutcome, Transfer};

/// How many blobs' target repositories are remembered for mounting.
const LANDED_LIMIT: usize = 100_000;

/// Tries per blob and target when the failure is transient (a reset, a 5xx, a corrupt
/// stream).
const ATTEMPTS: u32 = 3;

/// Chunks queued for each target of a shared source read. The read waits for the slowest
/// target, so memory stays a few chunks however many targets there are (the chunks
/// themselves are shared, not copied). One is enough to keep the targets busy: on the lab
/// set with three targets, 4 cost 3.5 MiB more peak RSS for the same wall time.
const TEE_DEPTH: usize = 1;

/// How long a shared read waits for one target to take a chunk before it goes on without
/// it. A target waiting for a request slot that another upload of the same read holds (two
/// targets on a registry with `reqConcurrent: 1`, or every slot of two registries taken by
/// half-started reads) would otherwise stall the read until the idle timeout; the target
/// left behind is sent the blob again on its own once the read is done.
const STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// What a target needs after its first look.
enum Look {
    /// Nothing: it has the blob.
    Here(BlobOutcome),
    /// A mount first, from this repository (`true`: the target's own, as a probe), or the
    /// bytes at once (`None`).
    Ask(Option<(String, bool)>),
}

/// What a target needs after the mount.
enum Next {
    Done(BlobOutcome),
    /// The bytes, into the upload session the mount opened, if it did.
    Send(Option<UploadSession>),
}

/// A target still waiting for the bytes.
struct Pending<'a> {
    /// Its place in the caller's list.
    at: usize,
    dst: &'a Repo,
    session: Option<UploadSession>,
    mode: UploadMode,
}

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
        let mut all = self
            .copy_blob_to_all(src, &[(dst, likely_absent)], digest, size)
            .await;
        all.pop().unwrap_or(Err(Error::Cancelled))
    }

    /// [`Transfer::copy_blob`] into each of `dsts` (with its `likely_absent`), reading the
    /// source once for all targets that need the bytes. One result per target, in order:
    /// a target that fails does not stop the others.
    pub(crate) async fn copy_blob_to_all(
        &self,
        src: &Repo,
        dsts: &[(&Repo, bool)],
        digest: &Digest,
        size: Option<u64>,
    ) -> Vec<Result<BlobOutcome>> {
        // Each target's copy of this blob is this caller's, or joins the one already under
        // way there (another image needing the same layer).
        let keys = dsts
            .iter()
            .map(|(d, _)| (d.key(), digest.clone()))
            .collect();
        self.blobs_inflight
            .run_all(
                keys,
                |mine| async move {
                    let owned: Vec<(&Repo, bool)> = mine.iter().map(|&i| dsts[i]).collect();
                    self.copy_owned(src, &owned, digest, size).await
                },
                |at| {
                    let (dst, absent) = dsts[at];
                    Box::pin(self.copy_blob(src, dst, digest, size, absent))
                },
            )
            .await
    }

    /// The copies this caller claimed: look, mount, then stream what is still missing.
    async fn copy_owned(
        &self,
        src: &Repo,
        dsts: &[(&Repo, bool)],
        digest: &Digest,
        size: Option<u64>,
    ) -> Vec<Result<BlobOutcome>> {
        let mut out: Vec<Option<Result<BlobOutcome>>> = dsts.iter().map(|_| None).collect();
        let looks = join_all(
            dsts.iter()
                .map(|(dst, absent)| self.look(src, dst, digest, *absent)),
        )
        .await;
        let mut asks = Vec::new();
        for (i, look) in looks.into_iter().enumerate() {
            match look {
                Ok(Look::Here(o)) => out[i] = Some(Ok(o)),
                Ok(Look::Ask(from)) => asks.push((i, from)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !asks.is_empty() {
            // One blob slot for one source read, however many targets it feeds.
            match self.blob_slots.acquire().await {
                Some(_slot) => {
                    for (i, r) in self.mount_and_send(src, dsts, &asks, digest, size).await {
                        out[i] = Some(r);
                    }
                }
                None => {
                    for (i, _) in asks {
                        out[i] = Some(Err(Error::Cancelled));
                    }
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(Error::Cancelled)))
            .collect()
    }

    /// Whether `dst` has the blob, and else how to ask it: mount from the source when it
    /// shares the target's registry, or else from a target repository this run already put
    /// the blob in (a base layer shared by many images is then read from the source once per
    /// target registry, not once per repository).
    async fn look(
        &self,
        src: &Repo,
        dst: &Repo,
        digest: &Digest,
        likely_absent: bool,
    ) -> Result<Look> {
        let landed = self.landed_near(dst, digest).await;
        let from = dst.mount_from(src).map(str::to_owned).or(landed);
        // A blob this run already put in `dst` is most likely still there: a HEAD says so.
        let probe = likely_absent && !self.landed_in(dst, digest).await && self.probes(dst).await;
        if !probe && dst.blob_size(digest).await?.is_some() {
            dst.keep_blob(digest).await;
            return Ok(Look::Here(self.existed(dst, digest).await));
        }
        // A mount answers "already here" too, so on a new repository it replaces the HEAD:
        // from another repository when there is one, else from `dst` itself (201: it is
        // here; 202: it is not, and here is the upload session).
        Ok(Look::Ask(match (from, probe) {
            (Some(from), _) => Some((from, false)),
            (None, true) => dst.own_name().map(|n| (n.to_owned(), true)),
            (None, false) => None,
        }))
    }

    /// Mounts where asked, then streams the blob to every target that still lacks it,
    /// retrying each target on its own. Results by the index into `dsts`.
    async fn mount_and_send(
        &self,
        src: &Repo,
        dsts: &[(&Repo, bool)],
        asks: &[(usize, Option<(String, bool)>)],
        digest: &Digest,
        size: Option<u64>,
    ) -> Vec<(usize, Result<BlobOutcome>)> {
        let mut done = Vec::new();
        // The source's answer, when its read started early.
        let mut early = None;
        let nexts: Vec<Result<Next>> = match asks {
            // A probe of a repository this run created almost always opens an upload
            // session: the source read starts at the same time, so that the copy waits for
            // one round trip to the source rather than one to each side in turn. When the
            // blob is there after all, the read is dropped unread.
            [(i, Some((from, true)))] => {
                let dst = dsts[*i].0;
                let (mount, blob) =
                    tokio::join!(dst.mount_blob(digest, from), src.get_blob(digest, size));
                early = Some(blob);
                vec![self.mounted(dst, digest, true, mount).await]
            }
            _ => {
                join_all(asks.iter().map(|(i, from)| async move {
                    let dst = dsts[*i].0;
                    match from {
                        Some((from, itself)) => {
                            let mount = dst.mount_blob(digest, from).await;
                            self.mounted(dst, digest, *itself, mount).await
                        }
                        None => Ok(Next::Send(None)),
                    }
                }))
                .await
            }
        };
        let mut pending = Vec::new();
        for ((i, _), next) in asks.iter().zip(nexts) {
            match next {
                Ok(Next::Done(o)) => done.push((*i, Ok(o))),
                Ok(Next::Send(session)) => pending.push(Pending {
                    at: *i,
                    dst: dsts[*i].0,
                    session,
                    mode: UploadMode::Monolithic,
                }),
                Err(e) => done.push((*i, Err(e))),
            }
        }
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let results = self
                .send(src, &mut pending, digest, size, early.take())
                .await;
            let mut again = Vec::new();
            for (mut p, (result, behind)) in pending.into_iter().zip(results) {
                match result {
                    // Left behind by the shared read (it waited for a request slot, or was
                    // much slower than the others): sent again, which is no failure of it.
                    Err(e) if behind && attempt < ATTEMPTS => {
                        tracing::debug!(%digest, target = %p.dst, error = %e, "Sending the blob again to a target a shared read left behind");
                        again.push(p);
                    }
                    Ok(n) => {
                        Stats::add(&self.stats.blobs_copied, 1);
                        self.record_landing(p.dst, digest).await;
                        done.push((p.at, Ok(BlobOutcome::Copied(n))));
                    }
                    Err(e) if attempt < ATTEMPTS && (e.is_retryable() || wants_chunked(&e)) => {
                        if wants_chunked(&e) {
                            p.mode = UploadMode::Chunked;
                        }
                        tracing::warn!(%digest, target = %p.dst, attempt, error = %e, "Retrying blob copy");
                        again.push(p);
                    }
                    Err(e) => {
                        if let Some(s) = p.session.take() {
                            p.dst.cancel_upload(s).await;
                        }
                        done.push((p.at, Err(e)));
                    }
                }
            }
            pending = again;
        }
        done
    }

    /// What a mount's answer leaves to do.
    async fn mounted(
        &self,
        dst: &Repo,
        digest: &Digest,
        itself: bool,
        mount: Result<Mount>,
    ) -> Result<Next> {
        match mount {
            Ok(Mount::Mounted) if itself => Ok(Next::Done(self.existed(dst, digest).await)),
            Ok(Mount::Mounted) => {
                Stats::add(&self.stats.blobs_mounted, 1);
                self.record_landing(dst, digest).await;
                Ok(Next::Done(BlobOutcome::Mounted))
            }
            Ok(Mount::Upload(url)) => Ok(Next::Send(Some(url))),
            Ok(Mount::Unsupported) => Ok(Next::Send(None)),
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
                        return Ok(Next::Done(self.existed(dst, digest).await));
                    }
                }
                Ok(Next::Send(None))
            }
        }
    }

    /// One attempt: one verified read of the source, streamed to every pending target at
    /// once. For each target, the bytes it took or why it failed, and whether the read went
    /// on without it (see [`STALL`]).
    async fn send(
        &self,
        src: &Repo,
        pending: &mut [Pending<'_>],
        digest: &Digest,
        size: Option<u64>,
        early: Option<Result<Blob>>,
    ) -> Vec<(Result<u64>, bool)> {
        let read = async {
            let blob = match early {
                Some(blob) => blob?,
                None => src.get_blob(digest, size).await?,
            };
            let size = size.or(blob.size);
            Ok::<_, Error>((size, verify(digest, size, blob.stream)?))
        };
        let (size, stream) = match read.await {
            Ok(r) => r,
            Err(e) => {
                return e
                    .for_each(pending.len())
                    .into_iter()
                    .map(|r| (r, false))
                    .collect();
            }
        };
        let read_bytes = Arc::new(AtomicU64::new(0));
        let counted = read_bytes.clone();
        let stream: ByteStream = Box::pin(stream.map(move |item: Result<Bytes>| {
            if let Ok(b) = &item {
                Stats::add(&counted, b.len() as u64);
            }
            item
        }));
        // What each target took, failed attempts included.
        let mut taken = Vec::with_capacity(pending.len());
        let mut left_behind = Vec::with_capacity(pending.len());
        let results: Vec<Result<()>> = if let [p] = pending {
            // One target: the stream itself, no queue between.
            taken.push(read_bytes.clone());
            // A read of its own never leaves it behind.
            left_behind.push(Arc::new(AtomicBool::new(false)));
            let blob = Blob { size, stream };
            vec![p.dst.put_blob(digest, blob, p.mode, p.session.take()).await]
        } else {
            let mut senders = Vec::with_capacity(pending.len());
            let mut puts = Vec::with_capacity(pending.len());
            for p in pending.iter_mut() {
                let (tx, rx) = mpsc::channel::<Result<Bytes>>(TEE_DEPTH);
                let count = Arc::new(AtomicU64::new(0));
                taken.push(count.clone());
                let behind = Arc::new(AtomicBool::new(false));
                left_behind.push(behind.clone());
                let stream: ByteStream =
                    Box::pin(tee_receiver(rx, behind.clone(), p.dst.to_string()).map(
                        move |item: Result<Bytes>| {
                            if let Ok(b) = &item {
                                Stats::add(&count, b.len() as u64);
                            }
                            item
                        },
                    ));
                senders.push((tx, behind));
                let blob = Blob { size, stream };
                puts.push(p.dst.put_blob(digest, blob, p.mode, p.session.take()));
            }
            tokio::join!(tee(stream, senders), join_all(puts)).1
        };
        Stats::add(&self.stats.bytes_read, read_bytes.load(Ordering::Relaxed));
        results
            .into_iter()
            .zip(taken)
            .zip(left_behind)
            .map(|((r, n), behind)| {
                let n = n.load(Ordering::Relaxed);
                Stats::add(&self.stats.bytes_copied, n);
                (r.map(|()| n), behind.load(Ordering::Relaxed))
            })
            .collect()
    }
}

/// One target's end of a shared read, and whether the read left it behind.
type TeeSender = (mpsc::Sender<Result<Bytes>>, Arc<AtomicBool>);

/// Feeds every chunk of `stream` to each of `senders`, waiting for the slowest, but no
/// longer than [`STALL`] for one chunk: a target that stopped taking (its upload failed) or
/// stalled is left out from then on, and the read stops when none is left. An error in the
/// stream (a corrupt or short read) reaches every target before its stream ends, so no
/// target completes an upload of bad bytes.
async fn tee(mut stream: ByteStream, senders: Vec<TeeSender>) {
    let mut senders: Vec<Option<TeeSender>> = senders.into_iter().map(Some).collect();
    while let Some(item) = stream.next().await {
        let (chunk, last) = match item {
            Ok(chunk) => (Ok(chunk), false),
            Err(e) => (Err(Arc::new(e)), true),
        };
        for slot in &mut senders {
            let Some((tx, behind)) = slot else { continue };
            let item = match &chunk {
                Ok(c) => Ok(c.clone()),
                Err(e) => Err(Error::Shared(e.clone())),
            };
            match tokio::time::timeout(STALL, tx.send(item)).await {
                Ok(Ok(())) => {}
                // Its upload ended.
                Ok(Err(_)) => *slot = None,
                Err(_) => {
                    behind.store(true, Ordering::Relaxed);
                    *slot = None;
                }
            }
        }
        if last || senders.iter().all(Option::is_none) {
            return;
        }
    }
}

/// The stream a target's upload reads from a shared read: the chunks, then its end; or,
/// when the read left the target behind, an error instead of the end, so that the upload
/// fails rather than completes short.
fn tee_receiver(
    rx: mpsc::Receiver<Result<Bytes>>,
    behind: Arc<AtomicBool>,
    target: String,
) -> impl futures_util::Stream<Item = Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let behind = behind.clone();
        let target = target.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(item) => Some((item, Some(rx))),
                None if behind.load(Ordering::Relaxed) => {
                    let e = Error::Protocol {
                        what: target,
                        reason: format!(
                            "took no data for {}s of a shared read; sent again on its own",
                            STALL.as_secs()
                        ),
                    };
                    Some((Err(e), None))
                }
                None => None,
            }
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver(rx: mpsc::Receiver<Result<Bytes>>) -> ByteStream {
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    fn source(items: Vec<Result<Bytes>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(items))
    }

    #[tokio::test]
    async fn a_tee_feeds_every_target_the_same_bytes_and_goes_on_without_one_that_stopped() {
        let chunks: Vec<Result<Bytes>> =
            (0..20u8).map(|i| Ok(Bytes::from(vec![i; 1000]))).collect();
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel(TEE_DEPTH)).unzip();
        let txs: Vec<TeeSender> = txs.into_iter().map(|t| (t, Arc::default())).collect();
        let mut rxs = rxs.into_iter();
        let (a, b, c) = (
            rxs.next().unwrap(),
            rxs.next().unwrap(),
            rxs.next().unwrap(),
        );
        let whole = |rx| async move {
            let items: Vec<Result<Bytes>> = receiver(rx).collect().await;
            items
                .into_iter()
                .map(|i| i.unwrap().to_vec())
                .collect::<Vec<_>>()
                .concat()
        };
        // The third target takes two chunks and stops (its upload failed).
        let stops = async move {
            let mut s = receiver(c);
            s.next().await.unwrap().unwrap();
            s.next().await.unwrap().unwrap();
        };
        let ((), a, b, ()) = tokio::join!(tee(source(chunks), txs), whole(a), whole(b), stops);
        let want: Vec<u8> = (0..20u8).flat_map(|i| vec![i; 1000]).collect();
        assert_eq!(a, want);
        assert_eq!(b, want);
    }

    #[tokio::test]
    async fn a_bad_read_reaches_every_target_before_its_stream_ends() {
        let items = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(Error::Cancelled),
            Ok(Bytes::from_static(b"never sent")),
        ];
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| mpsc::channel(TEE_DEPTH)).unzip();
        let txs: Vec<TeeSender> = txs.into_iter().map(|t| (t, Arc::default())).collect();
        let read = |rx| async move { receiver(rx).collect::<Vec<Result<Bytes>>>().await };
        let mut rxs = rxs.into_iter();
        let (a, b) = (rxs.next().unwrap(), rxs.next().unwrap());
        let ((), a, b) = tokio::join!(tee(source(items), txs), read(a), read(b));
        for got in [a, b] {
            assert_eq!(got.len(), 2, "one chunk, then the error, then the end");
            assert!(got[0].is_ok());
            assert!(got[1].as_ref().is_err_and(|e| e.is_cancelled()));
        }
    }
}
