//! A manifest and everything it references, children first.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use regferry_registry::manifest::media_type;
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Descriptor, Error, Manifest, Platform, Result};

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
        let read = AtomicUsize::new(0);
        let pushed = self
            .copy_children(src, dst, m, opts, true, Walk::start(&read, opts.limits))
            .await?;
        dst.put_manifest(tag, &pushed).await?;
        Stats::add(&self.stats.manifests_pushed, 1);
        self.record_manifest(dst, &pushed.digest).await;
        Ok(pushed)
    }

    pub(crate) fn copy_children<'a>(
        &'a self,
        src: &'a Repo,
        dst: &'a Repo,
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
                        jobs.push(self.copy_child(src, dst, d, opts, walk, &reference));
                    }
                    run_bounded(jobs).await?;
                    if keep.len() == manifests.len() {
                        Ok(m.clone())
                    } else {
                        filtered_index(m, &keep, &reference)
                    }
                }
                Content::Image { config, layers, .. } => {
                    let mut jobs = vec![self.copy_blob(
                        src,
                        dst,
                        &config.digest,
                        Some(config.size),
                        opts.new_target,
                    )];
                    for l in &layers {
                        if !l.urls.is_empty() && !opts.include_external {
                            tracing::debug!(digest = %l.digest, "Skipping foreign layer");
                            continue;
                        }
                        jobs.push(self.copy_blob(
                            src,
                            dst,
                            &l.digest,
                            Some(l.size),
                            opts.new_target,
                        ));
                    }
                    run_bounded(jobs).await?;
                    Ok(m.clone())
                }
                Content::Schema1 { layers } => {
                    let mut jobs = Vec::with_capacity(layers.len());
                    for d in &layers {
                        jobs.push(self.copy_blob(src, dst, d, None, opts.new_target));
                    }
                    run_bounded(jobs).await?;
                    Ok(m.clone())
                }
            }
        })
    }

    /// One entry of an index: a manifest (recursively, then pushed by digest) or a blob.
    /// A child manifest already being copied to `dst` (listed twice, or by two images at
    /// once) is waited for, not copied again.
    async fn copy_child(
        &self,
        src: &Repo,
        dst: &Repo,
        d: &Descriptor,
        opts: &CopyOptions,
        walk: Walk<'_>,
        parent: &str,
    ) -> Result<()> {
        if !media_type::is_manifest(&d.media_type) {
            self.copy_blob(src, dst, &d.digest, Some(d.size), opts.new_target)
                .await?;
            return Ok(());
        }
        self.manifests_inflight
            .run((dst.key(), d.digest.clone()), || {
                self.copy_child_manifest(src, dst, d, opts, walk, parent)
            })
            .await
    }

    async fn copy_child_manifest(
        &self,
        src: &Repo,
        dst: &Repo,
        d: &Descriptor,
        opts: &CopyOptions,
        walk: Walk<'_>,
        parent: &str,
    ) -> Result<()> {
        let digest = d.digest.to_string();
        // In a new repository a child is asked about only when this run already pushed it
        // (an index shared by several tags, or children shared by several indexes).
        let ask = !opts.new_target || self.manifest_pushed(dst, &d.digest).await;
        if !opts.force_recursive && ask && dst.head_manifest(&digest).await?.is_some() {
            return Ok(());
        }
        let walk = walk.child(parent)?;
        let child = src.get_manifest(&digest).await?;
        if child.digest != d.digest {
            return Err(Error::DigestMismatch {
                expected: d.digest.clone(),
                actual: child.digest,
            });
        }
        let child = self
            .copy_children(src, dst, &child, opts, false, walk)
            .await?;
        dst.put_manifest(None, &child).await?;
        Stats::add(&self.stats.manifests_pushed, 1);
        self.record_manifest(dst, &child.digest).await;
        Ok(())
    }
}

/// Runs futures with at most `CHILD_CONCURRENCY` at once; the first error wins.
async fn run_bounded<T, F: Future<Output = Result<T>>>(jobs: Vec<F>) -> Result<()> {
    stream::iter(jobs)
        .buffer_unordered(CHILD_CONCURRENCY)
        .try_for_each(|_| futures_util::future::ready(Ok(())))
        .await
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
