//! Referrers (SBOMs, signatures, provenance, VEX) of a copied manifest, from one or more
//! source repositories into a target repository, recursively (signatures of SBOMs), with
//! loop detection. Each referrer is copied like any manifest, children first; then, on
//! registries without the referrers API, the subject's fallback index is updated.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regferry_registry::referrers::Listing;
use regferry_registry::repo::Repo;
use regferry_registry::{Descriptor, Digest, Error, Result, TagList};

use crate::Transfer;
use crate::image::CopyOptions;
use crate::stats::Stats;

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

impl Transfer {
    /// Copies the referrers of `subject` that `filter` selects, and their referrers in turn,
    /// from `sources` (merged) to `target`. Referrers the target already lists are skipped.
    /// With `dry_run` nothing is written; the result lists what would be copied.
    /// `known_tags` holds repositories' tag listings (by [`Repo::key`]) this run made; a
    /// repository without the referrers API whose listing lacks a subject's `sha256-<hex>`
    /// tag is known to have no referrers for it, and is not asked.
    pub async fn copy_referrers(
        &self,
        sources: &[Repo],
        target: &Repo,
        subject: &Digest,
        filter: ReferrerFilterFn<'_>,
        known_tags: &HashMap<String, Arc<TagList>>,
        dry_run: bool,
    ) -> Result<Vec<ReferrerCopy>> {
        let mut out = Vec::new();
        let mut visited: HashSet<Digest> = HashSet::from([subject.clone()]);
        let mut queue = vec![subject.clone()];
        let hint = |r: &Repo| known_tags.get(&r.key()).map(|t| &**t);
        let opts = CopyOptions {
            new_target: hint(target).is_some_and(|t| t.is_empty()),
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
                let listing = match src.referrers_listing(&s, hint(src)).await {
                    Ok(l) => l,
                    Err(e) if e.is_not_found() => Listing::default(),
                    Err(e) => return Err(e),
                };
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
                        let m = src.get_manifest(&d.digest.to_string()).await?;
                        if m.digest != d.digest {
                            return Err(Error::DigestMismatch {
                                expected: d.digest.clone(),
                                actual: m.digest,
                            });
                        }
                        let read = std::sync::atomic::AtomicUsize::new(0);
                        let walk = crate::image::Walk::start(&read);
                        let m = self
                            .copy_children(src, target, &m, &opts, false, walk)
                            .await?;
                        let result = target.put_manifest(None, &m).await?;
                        Stats::add(&self.stats.manifests_pushed, 1);
                        Stats::add(&self.stats.referrers_copied, 1);
                        tracing::info!(subject = %s, referrer = %d.digest, artifact_type = ?d.artifact_type, target = %target, "Copied referrer");
                        pushed.push((m, result));
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
