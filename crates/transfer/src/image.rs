//! A manifest and everything it references, children first.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use regferry_registry::manifest::media_type;
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Descriptor, Digest, Error, Manifest, Platform, Result};

use crate::Transfer;
use crate::platform::selected;
use crate::stats::Stats;

/// How much of an image to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Copy layers that have `urls` (foreign layers); skipped otherwise, as registries
    /// serve them from elsewhere.
    pub include_external: bool,
    /// Re-walk children that the target already has.
    pub force_recursive: bool,
    /// Copy only these platforms of an index and push an index listing exactly them.
    pub platforms: Vec<Option<Platform>>,
    /// The target repository held no tags when the run began, so most of what is copied
    /// is absent: blobs are asked for with a mount from the repository itself (one request
    /// that answers "here" or opens the upload), and child manifests are pushed without
    /// asking first. Everything stays correct when it is wrong, only slower.
    pub new_target: bool,
    /// Bounds on the image's graph.
    pub limits: GraphLimits,
}

/// How many children of one manifest move at once.
const CHILD_CONCURRENCY: usize = 6;

/// Bounds on one image's graph, which a source is not trusted to keep small. The defaults
/// are far above what real images need; `defaults.limits` raises or lowers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphLimits {
    /// Deepest index nesting walked (an index of indexes is 2); registries never need
    /// more than 2 or 3, a hostile source could nest without end.
    pub index_depth: usize,
    /// Most child manifests read for one image, all levels of its indexes together; the
    /// largest real indexes list a few dozen.
    pub manifests: usize,
    /// Most referrers read for one image: every subject (the index and each platform) and
    /// every level (signatures of SBOMs) together.
    pub referrers: usize,
}

impl Default for GraphLimits {
    fn default() -> Self {
        GraphLimits {
            index_depth: 8,
            manifests: 1_000,
            referrers: 10_000,
        }
    }
}

/// Where a walk of one image's manifest graph is: how deep, and how many manifests it has
/// read so far (shared by every branch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk<'a> {
    depth: usize,
    read: &'a AtomicUsize,
    limits: GraphLimits,
}

impl<'a> Walk<'a> {
    /// The walk of a new image, counting into `read`.
    pub(crate) fn start(read: &'a AtomicUsize, limits: GraphLimits) -> Walk<'a> {
        Walk {
            depth: 0,
            read,
            limits,
        }
    }

    /// One level down, for a child manifest of `parent`; an error past either bound.
    fn child(self, parent: &str) -> Result<Walk<'a>> {
        let too_much = |reason: String| Error::Protocol {
            what: parent.to_owned(),
            reason,
        };
        let l = self.limits;
        if self.depth + 1 > l.index_depth {
            return Err(too_much(format!(
                "indexes nested more than {} deep (limits.indexDepth)",
                l.index_depth
            )));
        }
        if self.read.fetch_add(1, Ordering::Relaxed) >= l.manifests {
            return Err(too_much(format!(
                "more than {} manifests in one image (limits.manifestsPerImage)",
                l.manifests
            )));
        }
        Ok(Walk {
            depth: self.depth + 1,
            ..self
        })
    }
}

/// One target of [`Transfer::copy_manifest_to_all`].
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The repository.
    pub repo: &'a Repo,
    /// The tag to store the manifest under; `None`: by digest only.
    pub tag: Option<&'a str>,
    /// The repository held no tags when the run began (see [`CopyOptions::new_target`]).
    pub new_target: bool,
}

/// The targets of one walk, and the first error of each: a target that failed is left out
/// of the rest of the walk, the others go on.
pub(crate) struct Fan<'a> {
    dsts: &'a [(&'a Repo, bool)],
    failed: std::sync::Mutex<Vec<Option<Error>>>,
}

impl<'a> Fan<'a> {
    pub(crate) fn new(dsts: &'a [(&'a Repo, bool)]) -> Fan<'a> {
        Fan {
            dsts,
            failed: std::sync::Mutex::new(dsts.iter().map(|_| None).collect()),
        }
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Vec<Option<Error>>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The places of the targets still going, and those targets.
    pub(crate) fn alive(&self) -> (Vec<usize>, Vec<(&'a Repo, bool)>) {
        let failed = self.failed();
        (0..self.dsts.len())
            .filter(|&i| failed[i].is_none())
            .map(|i| (i, self.dsts[i]))
            .unzip()
    }

    /// Records `results` of the targets at `places`; the first error of each stays.
    pub(crate) fn record<T>(&self, places: &[usize], results: Vec<Result<T>>) {
        let mut failed = self.failed();
        for (&i, r) in places.iter().zip(results) {
            if let Err(e) = r
                && failed[i].is_none()
            {
                failed[i] = Some(e);
            }
        }
    }

    /// Fails every target still going.
    pub(crate) fn fail_all(&self, e: Error) {
        let e = std::sync::Arc::new(e);
        for f in self.failed().iter_mut().filter(|f| f.is_none()) {
            *f = Some(Error::Shared(e.clone()));
        }
    }

    pub(crate) fn all_failed(&self) -> bool {
        self.failed().iter().all(Option::is_some)
    }

    /// Each target's outcome: `ok` for those that never failed.
    pub(crate) fn finish<T: Clone>(self, ok: &T) -> Vec<Result<T>> {
        self.failed
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|f| match f {
                Some(e) => Err(e),
                None => Ok(ok.clone()),
            })
            .collect()
    }
}

impl Transfer {
    /// Copies `m` (read from `src`) and everything it references to `dst`, then stores it
    /// under `tag` (or by digest when `tag` is `None`). Returns the manifest pushed, which
    /// differs from `m` only when `opts.platforms` removed entries from an index.
    pub async fn copy_manifest(
        &self,
        src: &Repo,
        dst: &Repo,
        m: &Manifest,
        tag: Option<&str>,
        opts: &CopyOptions,
    ) -> Result<Manifest> {
        let one = Destination {
            repo: dst,
            tag,
            new_target: opts.new_target,
        };
        let mut all = self.copy_manifest_to_all(src, &[one], m, opts).await;
        all.pop().unwrap_or(Err(Error::Cancelled))
    }

    /// [`Transfer::copy_manifest`] into several targets at once, reading each manifest and
    /// blob from `src` once for all of them (blobs stream to every target that lacks them
    /// at the same time). One result per target, in order: a target that fails is left
    /// out of the rest of the walk, and the others go on.
    pub async fn copy_manifest_to_all(
        &self,
        src: &Repo,
        dsts: &[Destination<'_>],
        m: &Manifest,
        opts: &CopyOptions,
    ) -> Vec<Result<Manifest>> {
        let read = AtomicUsize::new(0);
        let targets: Vec<(&Repo, bool)> = dsts.iter().map(|d| (d.repo, d.new_target)).collect();
        let fan = Fan::new(&targets);
        let pushed = self
            .copy_children_all(src, &fan, m, opts, true, Walk::start(&read, opts.limits))
            .await;
        let pushed = match pushed {
            Ok(p) => p,
            Err(e) => {
                fan.fail_all(e);
                m.clone()
            }
        };
        let (places, _) = fan.alive();
        let pushed = &pushed;
        let puts = join_all(places.iter().map(|&i| async move {
            let d = &dsts[i];
            d.repo.put_manifest(d.tag, pushed).await?;
            Stats::add(&self.stats.manifests_pushed, 1);
            self.record_manifest(d.repo, &pushed.digest).await;
            Ok(())
        }))
        .await;
        fan.record(&places, puts);
        fan.finish(pushed)
    }

    /// Copies everything `m` references into each target of `fan` still going, children
    /// first, and returns the manifest to push there (`m`, or a filtered index at the top).
    /// An error returned is about `m` itself and so every target; a target's own failures
    /// are kept in `fan`.
    pub(crate) fn copy_children_all<'a>(
        &'a self,
        src: &'a Repo,
        fan: &'a Fan<'a>,
        m: &'a Manifest,
        opts: &'a CopyOptions,
        top: bool,
        walk: Walk<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<Manifest>> + Send + 'a>> {
        Box::pin(async move {
            let reference = format!("{src}@{}", m.digest);
            match m.content(&reference)? {
                Content::Index { manifests, .. } => {
                    let keep: Vec<&Descriptor> = if top {
                        manifests
                            .iter()
                            .filter(|d| selected(d, &opts.platforms))
                            .collect()
                    } else {
                        manifests.iter().collect()
                    };
                    let mut jobs = Vec::with_capacity(keep.len());
                    for d in &keep {
                        jobs.push(self.copy_child(src, fan, d, opts, walk, &reference));
                    }
                    run_bounded(fan, jobs).await;
                    if keep.len() == manifests.len() {
                        Ok(m.clone())
                    } else {
                        filtered_index(m, &keep, &reference)
                    }
                }
                Content::Image { config, layers, .. } => {
                    let mut jobs = vec![self.blob_job(src, fan, &config.digest, Some(config.size))];
                    for l in &layers {
                        if !l.urls.is_empty() && !opts.include_external {
                            tracing::debug!(digest = %l.digest, "Skipping foreign layer");
                            continue;
                        }
                        jobs.push(self.blob_job(src, fan, &l.digest, Some(l.size)));
                    }
                    run_bounded(fan, jobs).await;
                    Ok(m.clone())
                }
                Content::Schema1 { layers } => {
                    let mut jobs = Vec::with_capacity(layers.len());
                    for d in &layers {
                        jobs.push(self.blob_job(src, fan, d, None));
                    }
                    run_bounded(fan, jobs).await;
                    Ok(m.clone())
                }
            }
        })
    }

    /// One blob into every target of `fan` still going.
    async fn blob_job(&self, src: &Repo, fan: &Fan<'_>, digest: &Digest, size: Option<u64>) {
        let (places, targets) = fan.alive();
        if targets.is_empty() {
            return;
        }
        let results = self.copy_blob_to_all(src, &targets, digest, size).await;
        fan.record(&places, results);
    }

    /// One entry of an index into every target of `fan` still going: a manifest
    /// (recursively, then pushed by digest) or a blob. A child manifest already being
    /// copied to a target (listed twice, or by two images at once) is waited for, not
    /// copied again.
    async fn copy_child(
        &self,
        src: &Repo,
        fan: &Fan<'_>,
        d: &Descriptor,
        opts: &CopyOptions,
        walk: Walk<'_>,
        parent: &str,
    ) {
        if !media_type::is_manifest(&d.media_type) {
            return self.blob_job(src, fan, &d.digest, Some(d.size)).await;
        }
        let (places, targets) = fan.alive();
        if targets.is_empty() {
            return;
        }
        let keys = targets
            .iter()
            .map(|(dst, _)| (dst.key(), d.digest.clone()))
            .collect();
        let results = self
            .manifests_inflight
            .run_all(
                keys,
                |mine| {
                    let owned: Vec<(&Repo, bool)> = mine.iter().map(|&i| targets[i]).collect();
                    async move {
                        self.copy_child_manifest(src, &owned, d, opts, walk, parent)
                            .await
                    }
                },
                |at| {
                    let one = [targets[at]];
                    async move {
                        let fan = Fan::new(&one);
                        Box::pin(self.copy_child(src, &fan, d, opts, walk, parent)).await;
                        fan.finish(&()).pop().unwrap_or(Err(Error::Cancelled))
                    }
                },
            )
            .await;
        fan.record(&places, results);
    }

    /// A child manifest into each of `targets` that lacks it: read from the source once,
    /// its own children copied, then pushed by digest. One result per target.
    async fn copy_child_manifest(
        &self,
        src: &Repo,
        targets: &[(&Repo, bool)],
        d: &Descriptor,
        opts: &CopyOptions,
        walk: Walk<'_>,
        parent: &str,
    ) -> Vec<Result<()>> {
        let digest = d.digest.to_string();
        // In a new repository a child is asked about only when this run already pushed it
        // (an index shared by several tags, or children shared by several indexes).
        let has = join_all(targets.iter().map(|(dst, new_target)| async {
            let ask = !*new_target || self.manifest_pushed(dst, &d.digest).await;
            if opts.force_recursive || !ask {
                return Ok(false);
            }
            Ok(dst.head_manifest(&digest).await?.is_some())
        }))
        .await;
        let mut out: Vec<Option<Result<()>>> = targets.iter().map(|_| None).collect();
        let mut lacking = Vec::new();
        let mut places = Vec::new();
        for (i, h) in has.into_iter().enumerate() {
            match h {
                Ok(true) => out[i] = Some(Ok(())),
                Ok(false) => {
                    lacking.push(targets[i]);
                    places.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        if !lacking.is_empty() {
            let fan = Fan::new(&lacking);
            let copied = async {
                let walk = walk.child(parent)?;
                let child = src.get_manifest(&digest).await?;
                if child.digest != d.digest {
                    return Err(Error::DigestMismatch {
                        expected: d.digest.clone(),
                        actual: child.digest,
                    });
                }
                self.copy_children_all(src, &fan, &child, opts, false, walk)
                    .await
            }
            .await;
            match copied {
                Ok(child) => {
                    let (alive, _) = fan.alive();
                    let puts = join_all(alive.iter().map(|&i| {
                        let dst = lacking[i].0;
                        let child = &child;
                        async move {
                            dst.put_manifest(None, child).await?;
                            Stats::add(&self.stats.manifests_pushed, 1);
                            self.record_manifest(dst, &child.digest).await;
                            Ok(())
                        }
                    }))
                    .await;
                    fan.record(&alive, puts);
                }
                Err(e) => fan.fail_all(e),
            }
            for (place, r) in places.into_iter().zip(fan.finish(&())) {
                out[place] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or(Err(Error::Cancelled)))
            .collect()
    }
}

/// Runs `jobs` with at most `CHILD_CONCURRENCY` at once, each recording into `fan`; stops
/// (dropping those under way) once every target has failed.
async fn run_bounded<F: Future<Output = ()>>(fan: &Fan<'_>, jobs: Vec<F>) {
    let mut running = stream::iter(jobs).buffer_unordered(CHILD_CONCURRENCY);
    while running.next().await.is_some() {
        if fan.all_failed() {
            return;
        }
    }
}

/// The index with only the entries `platforms` selects; the same manifest when all are.
/// Pushed instead of the source index, so the target never lists children it lacks (the
/// digest then differs from the source's).
pub fn filter_index(
    index: &Manifest,
    platforms: &[Option<Platform>],
    reference: &str,
) -> Result<Manifest> {
    let Content::Index { manifests, .. } = index.content(reference)? else {
        return Ok(index.clone());
    };
    let keep: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| selected(d, platforms))
        .collect();
    if keep.len() == manifests.len() {
        Ok(index.clone())
    } else {
        filtered_index(index, &keep, reference)
    }
}

/// The index with only `keep` in `manifests`; everything else in the document is kept.
fn filtered_index(m: &Manifest, keep: &[&Descriptor], reference: &str) -> Result<Manifest> {
    let invalid = |reason: String| Error::InvalidManifest {
        reference: reference.to_owned(),
        reason,
    };
    let mut doc: serde_json::Value =
        serde_json::from_slice(&m.bytes).map_err(|e| invalid(e.to_string()))?;
    let wanted: Vec<String> = keep.iter().map(|d| d.digest.to_string()).collect();
    let list = doc
        .get_mut("manifests")
        .and_then(|v| v.as_array_mut())
        .ok_or_else(|| invalid("index without manifests".into()))?;
    list.retain(|e| {
        e.get("digest")
            .and_then(|d| d.as_str())
            .is_some_and(|d| wanted.iter().any(|w| w == d))
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| invalid(e.to_string()))?;
    Ok(Manifest::new(Bytes::from(bytes), Some(&m.media_type)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_ends_past_its_depth_or_its_manifest_count() {
        let limits = GraphLimits::default();
        let read = AtomicUsize::new(0);
        let mut walk = Walk::start(&read, limits);
        for _ in 0..limits.index_depth {
            walk = walk.child("parent").unwrap();
        }
        let e = walk.child("parent").unwrap_err();
        assert!(e.to_string().contains("nested more than 8 deep"), "{e}");

        // Siblings share one count: a wide image ends there however shallow it is.
        let read = AtomicUsize::new(0);
        let top = Walk::start(&read, limits);
        for _ in 0..limits.manifests {
            top.child("parent").unwrap();
        }
        let e = top.child("parent").unwrap_err();
        assert!(
            e.to_string()
                .contains("more than 1000 manifests in one image"),
            "{e}"
        );
    }
}
