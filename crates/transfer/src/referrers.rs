//! Referrers (SBOMs, signatures, provenance, VEX) of a copied manifest, from one or more
//! source repositories into a target repository, recursively (signatures of SBOMs), with
//! loop detection. Each referrer is copied like any manifest, children first; then, on
//! registries without the referrers API, the subject's fallback index is updated.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use regferry_registry::manifest::Content;
use regferry_registry::referrers::{Listing, referrer_descriptor};
use regferry_registry::repo::Repo;
use regferry_registry::{Descriptor, Digest, Error, Result, TagList};

use futures_util::future::join_all;
use regferry_registry::http::PushedManifest;

use crate::image::{CopyOptions, Fan, GraphLimits};
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
        let mut all = self
            .copy_referrers_to_all(sources, &[target], subject, walk)
            .await;
        all.pop().unwrap_or(Err(Error::Cancelled))
    }

    /// [`Transfer::copy_referrers`] into several targets at once: the sources are listed
    /// once, and each referrer some target lacks is read once and copied into every target
    /// that lacks it. One result per target, in order; a target that fails is left out of
    /// the rest of the walk, and the others go on.
    pub async fn copy_referrers_to_all(
        &self,
        sources: &[Repo],
        targets: &[&Repo],
        subject: &Digest,
        walk: &ReferrerWalk<'_>,
    ) -> Vec<Result<Vec<ReferrerCopy>>> {
        let (filter, known_tags, dry_run) = (walk.filter, walk.known_tags, walk.dry_run);
        let hint = |r: &Repo| known_tags.get(&r.key()).map(|t| &**t);
        let dsts: Vec<(&Repo, bool)> = targets
            .iter()
            .map(|t| (*t, hint(t).is_some_and(|l| l.is_empty())))
            .collect();
        let fan = Fan::new(&dsts);
        let opts = CopyOptions {
            limits: walk.limits,
            ..CopyOptions::default()
        };
        let mut out: Vec<Vec<ReferrerCopy>> = targets.iter().map(|_| Vec::new()).collect();
        let mut visited: HashSet<Digest> = HashSet::from([subject.clone()]);
        let mut queue = vec![subject.clone()];
        while let Some(s) = queue.pop() {
            let (places, alive) = fan.alive();
            if alive.is_empty() {
                break;
            }
            // What each target lists already; a target that cannot list (a new repository)
            // has none.
            let seen = join_all(alive.iter().map(|(t, _)| async {
                match t.referrers_listing(&s, hint(t)).await {
                    Err(e) if e.is_not_found() => Ok(Listing::default()),
                    other => other,
                }
            }))
            .await;
            let mut listings: Vec<Option<Listing>> = targets.iter().map(|_| None).collect();
            let mut failures = Vec::new();
            for (&i, l) in places.iter().zip(seen) {
                match l {
                    Ok(l) => listings[i] = Some(l),
                    Err(e) => failures.push(Err::<(), _>(e)),
                }
            }
            let failed_at: Vec<usize> = places
                .iter()
                .copied()
                .filter(|&i| listings[i].is_none())
                .collect();
            fan.record(&failed_at, failures);
            let mut pushed: Vec<Vec<(Descriptor, PushedManifest)>> =
                targets.iter().map(|_| Vec::new()).collect();
            // With one source whose index passes the filter whole, the targets' indexes can
            // become the same bytes.
            let mut whole_index = None;
            for src in sources {
                let listing = match self.source_listing(src, &s, walk, hint(src)).await {
                    Ok(l) => l,
                    Err(e) => {
                        fan.fail_all(e);
                        break;
                    }
                };
                let total = listing.descriptors.len();
                let fallback = listing.fallback_index;
                let selected: Vec<Descriptor> = listing
                    .descriptors
                    .into_iter()
                    .filter(|d| filter(d))
                    .collect();
                if sources.len() == 1 && selected.len() == total {
                    whole_index = fallback;
                }
                for d in selected {
                    if !visited.insert(d.digest.clone()) {
                        // A loop (or the same referrer in two sources): already handled, and
                        // not again under this subject, so the source's index is not reused.
                        whole_index = None;
                        continue;
                    }
                    if let Err(e) = walk.count(&s) {
                        fan.fail_all(e);
                        break;
                    }
                    queue.push(d.digest.clone());
                    let (places, _) = fan.alive();
                    let lacking: Vec<usize> = places
                        .into_iter()
                        .filter(|&i| {
                            listings[i].as_ref().is_some_and(|l| {
                                !l.descriptors.iter().any(|x| x.digest == d.digest)
                            })
                        })
                        .collect();
                    if lacking.is_empty() {
                        continue;
                    }
                    let record = ReferrerCopy {
                        subject: s.clone(),
                        digest: d.digest.clone(),
                        artifact_type: d.artifact_type.clone(),
                        source: src.to_string(),
                    };
                    if !dry_run {
                        let results = match self
                            .copy_referrer(src, &dsts, &lacking, (&s, &d), walk, &opts)
                            .await
                        {
                            Copied::Results(results) => results,
                            Copied::NotAReferrer(why) => {
                                // Not the subject's: neither copied nor listed, nor walked;
                                // and the source's index, which lists it, is not reused.
                                tracing::warn!(subject = %s, referrer = %d.digest, source = %src, reason = %why, "Listed as a referrer but is not one; skipped");
                                queue.retain(|q| *q != d.digest);
                                // It may still be a referrer of the subject it names, met later
                                // in the walk.
                                visited.remove(&d.digest);
                                whole_index = None;
                                continue;
                            }
                        };
                        let mut failures = Vec::new();
                        let mut failed_at = Vec::new();
                        for (&i, r) in lacking.iter().zip(results) {
                            match r {
                                Ok(p) => {
                                    tracing::info!(subject = %s, referrer = %d.digest, artifact_type = %d.artifact_type.as_deref().unwrap_or("none"), target = %targets[i], "Copied referrer");
                                    pushed[i].push(p);
                                }
                                Err(e) => {
                                    failed_at.push(i);
                                    failures.push(Err::<(), _>(e));
                                }
                            }
                        }
                        fan.record(&failed_at, failures);
                    }
                    for &i in &lacking {
                        out[i].push(record.clone());
                    }
                }
            }
            if !dry_run {
                let (places, _) = fan.alive();
                let published = join_all(places.iter().map(|&i| {
                    let seen = listings[i].as_ref().and_then(|l| l.fallback_index.as_ref());
                    targets[i].publish_referrers(&s, &pushed[i], whole_index.as_ref(), seen)
                }))
                .await;
                fan.record(&places, published);
            }
        }
        fan.finish(&())
            .into_iter()
            .zip(out)
            .map(|(r, copies)| r.map(|()| copies))
            .collect()
    }

    /// The referrers of `subject` in one source; with `referrerSlow`, also those a source
    /// layout lists without a `sha256-<hex>` index.
    async fn source_listing(
        &self,
        src: &Repo,
        subject: &Digest,
        walk: &ReferrerWalk<'_>,
        hint: Option<&TagList>,
    ) -> Result<Listing> {
        let mut listing = match src.referrers_listing(subject, hint).await {
            Ok(l) => l,
            Err(e) if e.is_not_found() => Listing::default(),
            Err(e) => return Err(e),
        };
        if let (true, Repo::Layout(layout)) = (walk.scan_layouts, src) {
            for d in layout.referrers_by_scan(subject).await? {
                if !listing.descriptors.iter().any(|l| l.digest == d.digest) {
                    listing.descriptors.push(d);
                    // The index no longer lists them all.
                    listing.fallback_index = None;
                }
            }
        }
        Ok(listing)
    }

    /// One referrer of `subject` into the targets at `lacking` (places in `dsts`): read from
    /// `src` once, checked to name `subject` as its own (a listing is the source's word, the
    /// manifest is what the targets will list), its blobs copied, then pushed by digest. Each
    /// target's descriptor and push result for its referrers index, or why it failed; or
    /// that it is not a referrer of `subject` at all.
    async fn copy_referrer(
        &self,
        src: &Repo,
        dsts: &[(&Repo, bool)],
        lacking: &[usize],
        (subject, d): (&Digest, &Descriptor),
        walk: &ReferrerWalk<'_>,
        opts: &CopyOptions,
    ) -> Copied {
        let all_fail = |e: Error| Copied::Results(e.for_each(lacking.len()));
        let _slot = match walk.slots {
            Some(s) => match s.acquire().await {
                Some(slot) => Some(slot),
                None => return all_fail(Error::Cancelled),
            },
            None => None,
        };
        let m = match src.get_manifest(&d.digest.to_string()).await {
            Ok(m) if m.digest == d.digest => m,
            Ok(m) => {
                return all_fail(Error::DigestMismatch {
                    expected: d.digest.clone(),
                    actual: m.digest,
                });
            }
            Err(e) => return all_fail(e),
        };
        let named = match m.content(&format!("{src}@{}", d.digest)) {
            Ok(Content::Image { subject, .. } | Content::Index { subject, .. }) => {
                subject.map(|s| s.digest)
            }
            Ok(_) => None,
            Err(e) => return all_fail(e),
        };
        if named.as_ref() != Some(subject) {
            return Copied::NotAReferrer(match named {
                Some(other) => format!("its subject is {other}"),
                None => "it names no subject".to_owned(),
            });
        }
        let targets: Vec<(&Repo, bool)> = lacking.iter().map(|&i| dsts[i]).collect();
        let fan = Fan::new(&targets);
        let read = AtomicUsize::new(0);
        let children = crate::image::Walk::start(&read, walk.limits);
        let m = match self
            .copy_children_all(src, &fan, &m, opts, false, children)
            .await
        {
            Ok(m) => m,
            Err(e) => return all_fail(e),
        };
        let (places, _) = fan.alive();
        let pushes = join_all(places.iter().map(|&k| targets[k].0.put_manifest(None, &m))).await;
        let mut results: Vec<Option<Result<(Descriptor, PushedManifest)>>> =
            targets.iter().map(|_| None).collect();
        for (&k, r) in places.iter().zip(pushes) {
            results[k] = Some(r.map(|p| {
                Stats::add(&self.stats.manifests_pushed, 1);
                Stats::add(&self.stats.referrers_copied, 1);
                // Only the descriptor is kept until the index is published: the manifests
                // themselves may be many and large.
                (referrer_descriptor(&m), p)
            }));
        }
        Copied::Results(
            fan.finish(&())
                .into_iter()
                .zip(results)
                .map(|(failed, r)| match (failed, r) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Some(r)) => r,
                    (Ok(()), None) => Err(Error::Cancelled),
                })
                .collect(),
        )
    }
}

/// What became of one listed referrer.
enum Copied {
    /// Each target's descriptor and push result for its referrers index, or why it failed.
    Results(Vec<Result<(Descriptor, PushedManifest)>>),
    /// The manifest does not name the subject it was listed under (why, in words).
    NotAReferrer(String),
}
