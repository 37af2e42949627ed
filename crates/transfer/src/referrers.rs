//! Referrers (SBOMs, signatures, provenance, VEX) of a copied manifest, from one or more
//! source repositories into a target repository, recursively (signatures of SBOMs), with
//! loop detection. Each referrer is copied like any manifest, children first; then, on
//! registries without the referrers API, the subject's fallback index is updated.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use regferry_registry::referrers::{Listing, referrer_descriptor};
use regferry_registry::repo::Repo;
use regferry_registry::{Descriptor, Digest, Error, Result, TagList};

use crate::image::{CopyOptions, GraphLimits};
use crate::stats::Stats;
use crate::{Slots, Transfer};

/// A referrer found (and copied, unless it was a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrerCopy {
    /// What it refers to.
    pub subject: Digest,
    /// The referrer manifest.
    pub digest: Digest,
    /// Its artifact type, when it has one.
    pub artifact_type: Option<String>,
    /// Where it was read from.
    pub source: String,
}

/// Which referrers to copy.
pub type ReferrerFilterFn<'a> = &'a (dyn Fn(&Descriptor) -> bool + Send + Sync);

/// How the referrers of one image are walked: shared by all its subjects (the index and
/// each platform manifest), so the image's bounds hold for all of them together.
pub struct ReferrerWalk<'a> {
    filter: ReferrerFilterFn<'a>,
    known_tags: &'a HashMap<String, Arc<TagList>>,
    dry_run: bool,
    limits: GraphLimits,
    /// Also read every manifest a source layout lists (`referrerSlow`).
    scan_layouts: bool,
    /// Held while a referrer is copied (the image-copy slots).
    slots: Option<&'a Slots>,
    /// Referrers read so far.
    read: AtomicUsize,
}

impl std::fmt::Debug for ReferrerWalk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferrerWalk")
            .field("dry_run", &self.dry_run)
            .field("limits", &self.limits)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl<'a> ReferrerWalk<'a> {
    /// The walk of one image's referrers: those `filter` selects. `known_tags` holds
    /// repositories' tag listings (by [`Repo::key`]) this run made; a repository without
    /// the referrers API whose listing lacks a subject's `sha256-<hex>` tag is known to
    /// have no referrers for it, and is not asked. With `dry_run` nothing is written.
    pub fn new(
        filter: ReferrerFilterFn<'a>,
        known_tags: &'a HashMap<String, Arc<TagList>>,
        dry_run: bool,
        limits: GraphLimits,
    ) -> ReferrerWalk<'a> {
        ReferrerWalk {
            filter,
            known_tags,
            dry_run,
            limits,
            scan_layouts: false,
            slots: None,
            read: AtomicUsize::new(0),
        }
    }

    /// Also finds, in source OCI layouts, referrers listed in `index.json` without a
    /// `sha256-<hex>` index (as ORAS leaves them), by reading every manifest listed there:
    /// regsync's `referrerSlow`.
    pub fn scanning_layouts(mut self, scan: bool) -> Self {
        self.scan_layouts = scan;
        self
    }

    /// Copies each referrer holding one of `slots` (the image-copy slots): only copies wait
    /// for one, not the listings that find most images have nothing to copy.
    pub fn holding(mut self, slots: &'a Slots) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Counts one more referrer read; an error past the image's bound.
    fn count(&self, subject: &Digest) -> Result<()> {
        if self.read.fetch_add(1, Ordering::Relaxed) >= self.limits.referrers {
            return Err(Error::Protocol {
                what: format!("referrers of {subject}"),
                reason: format!(
                    "more than {} referrers in one image (limits.referrersPerImage)",
                    self.limits.referrers
                ),
            });
        }
        Ok(())
    }
}

impl Transfer {
    /// Copies the referrers of `subject` that the walk selects, and their referrers in
    /// turn, from `sources` (merged) to `target`. Referrers the target already lists are
    /// skipped. In a dry run nothing is written; the result lists what would be copied.
    pub async fn copy_referrers(
        &self,
        sources: &[Repo],
        target: &Repo,
        subject: &Digest,
        walk: &ReferrerWalk<'_>,
    ) -> Result<Vec<ReferrerCopy>> {
        let (filter, known_tags, dry_run) = (walk.filter, walk.known_tags, walk.dry_run);
        let mut out = Vec::new();
        let mut visited: HashSet<Digest> = HashSet::from([subject.clone()]);
        let mut queue = vec![subject.clone()];
        let hint = |r: &Repo| known_tags.get(&r.key()).map(|t| &**t);
        let opts = CopyOptions {
            new_target: hint(target).is_some_and(|t| t.is_empty()),
            limits: walk.limits,
            ..CopyOptions::default()
        };
        while let Some(s) = queue.pop() {
            let seen = match target.referrers_listing(&s, hint(target)).await {
                Ok(l) => l,
                // A target that cannot list (a new repository) has none.
                Err(e) if e.is_not_found() => Listing::default(),
                Err(e) => return Err(e),
            };
            let present: HashSet<Digest> =
                seen.descriptors.iter().map(|d| d.digest.clone()).collect();
            let mut pushed = Vec::new();
            // With one source whose index passes the filter whole, the target's index can
            // become the same bytes.
            let mut whole_index = None;
            for src in sources {
                let mut listing = match src.referrers_listing(&s, hint(src)).await {
                    Ok(l) => l,
                    Err(e) if e.is_not_found() => Listing::default(),
                    Err(e) => return Err(e),
                };
                if let (true, Repo::Layout(layout)) = (walk.scan_layouts, src) {
                    for d in layout.referrers_by_scan(&s).await? {
                        if !listing.descriptors.iter().any(|l| l.digest == d.digest) {
                            listing.descriptors.push(d);
                            // The index no longer lists them all.
                            listing.fallback_index = None;
                        }
                    }
                }
                let total = listing.descriptors.len();
                let selected: Vec<Descriptor> = listing
                    .descriptors
                    .into_iter()
                    .filter(|d| filter(d))
                    .collect();
                if sources.len() == 1 && selected.len() == total {
                    whole_index = listing.fallback_index;
                }
                for d in selected {
                    if !visited.insert(d.digest.clone()) {
                        // A loop (or the same referrer in two sources): already handled.
                        continue;
                    }
                    walk.count(&s)?;
                    queue.push(d.digest.clone());
                    if present.contains(&d.digest) {
                        continue;
                    }
                    let record = ReferrerCopy {
                        subject: s.clone(),
                        digest: d.digest.clone(),
                        artifact_type: d.artifact_type.clone(),
                        source: src.to_string(),
                    };
                    if !dry_run {
                        let _slot = match walk.slots {
                            Some(s) => Some(s.acquire().await.ok_or(Error::Cancelled)?),
                            None => None,
                        };
                        let m = src.get_manifest(&d.digest.to_string()).await?;
                        if m.digest != d.digest {
                            return Err(Error::DigestMismatch {
                                expected: d.digest.clone(),
                                actual: m.digest,
                            });
                        }
                        let read = AtomicUsize::new(0);
                        let children = crate::image::Walk::start(&read, walk.limits);
                        let m = self
                            .copy_children(src, target, &m, &opts, false, children)
                            .await?;
                        let result = target.put_manifest(None, &m).await?;
                        Stats::add(&self.stats.manifests_pushed, 1);
                        Stats::add(&self.stats.referrers_copied, 1);
                        tracing::info!(subject = %s, referrer = %d.digest, artifact_type = %d.artifact_type.as_deref().unwrap_or("none"), target = %target, "Copied referrer");
                        // Only the descriptor is kept until the index is published: the
                        // manifests themselves may be many and large.
                        pushed.push((referrer_descriptor(&m), result));
                    }
                    out.push(record);
                }
            }
            if !dry_run {
                target
                    .publish_referrers(
                        &s,
                        &pushed,
                        whole_index.as_ref(),
                        seen.fallback_index.as_ref(),
                    )
                    .await?;
            }
        }
        Ok(out)
    }
}
