//! What one entry run learns once and reuses (a memo for the run, not a cache kept across
//! runs): tag listings, and how the referrers indexes of a source and a target compare.
//! In `server`, what a clean run saw in its targets ([`TargetView`]) is the exception: the
//! next scheduled runs trust it instead of reading the target again.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use regferry_registry::http::ManifestHead;
use regferry_registry::repo::Repo;
use regferry_registry::{Digest, Error, Result, TagList};
use tokio::time::Instant;

use super::CHECK_CONCURRENCY;

/// A repository's tag list, filled by the first task that needs it.
/// `None` when the registry would not list it (a 404 that does not say the repository is
/// missing): then nothing is known from a listing, and requests are made tag by tag.
type TagCell = Arc<tokio::sync::OnceCell<Option<Arc<TagList>>>>;

/// How the `sha256-<hex>` referrers indexes of a source repository compare with the
/// target's, found once per run with a HEAD of each such tag on both sides.
type FallbackCell = Arc<tokio::sync::OnceCell<Option<Arc<FallbackSync>>>>;

/// Listings of one entry run, so that each repository is listed at most once per run (and
/// never reused by a later run, which must see new tags).
#[derive(Debug, Default)]
pub(super) struct RunMemo {
    tags: tokio::sync::Mutex<HashMap<String, TagCell>>,
    fallback: tokio::sync::Mutex<HashMap<(String, String), FallbackCell>>,
    /// The run covers whole repositories (a `repository` or `registry` entry, not limited
    /// to one tag).
    pub(super) whole_repositories: bool,
    /// What the entry's last clean run saw in its targets, trusted by this run.
    trusted: Option<Arc<TargetView>>,
    /// What this run saw in its targets.
    seen: std::sync::Mutex<HashMap<String, SeenRepo>>,
}

/// What a run saw in an entry's target repositories: each one's tag listing, the manifest
/// each tag it looked at held, and whether the registry has the referrers API. After a run
/// of `server` that read its targets in full, changed nothing and failed nothing, the next
/// scheduled runs trust it, and read the source alone (one HEAD per tag), until
/// `targetRecheck` has passed since `read_at`, a run fails or changes something, or the
/// configuration is reloaded. Triggered runs (webhooks, `POST /v1/sync`) never trust it.
#[derive(Debug)]
pub(crate) struct TargetView {
    /// When the target was read in full.
    pub(super) read_at: Instant,
    repos: HashMap<String, SeenRepo>,
}

#[derive(Debug, Default)]
struct SeenRepo {
    /// The listing as this run made it (the time it was requested included).
    tags: Option<Arc<TagList>>,
    heads: HashMap<String, ManifestHead>,
    api: Option<bool>,
}

/// The source's `sha256-<hex>` tags, split by whether the target holds the same index.
#[derive(Debug)]
pub(super) struct FallbackSync {
    source: HashSet<String>,
    differing: usize,
}

impl FallbackSync {
    /// Whether the referrers of an unchanged image whose top manifest is `top` are known to
    /// be in the target already. Every referrers index of the source is the same in the
    /// target: then so are all referrers, of the image, of its children and of referrers.
    /// Otherwise an image whose top has no referrers index, and no children, is in sync
    /// (its referrers would be in that index); any other needs a look.
    pub(super) fn covers(&self, top: &Digest, is_index: bool) -> bool {
        self.differing == 0 || (!is_index && !self.source.contains(&top.referrers_tag()))
    }
}

impl RunMemo {
    /// The memo of a run that covers whole repositories or not.
    pub(super) fn new(whole_repositories: bool) -> RunMemo {
        RunMemo {
            whole_repositories,
            ..RunMemo::default()
        }
    }

    /// A memo that answers from `view` what it says of the targets.
    pub(super) fn trusting(mut self, view: Option<Arc<TargetView>>) -> RunMemo {
        if let Some(v) = &view {
            let cells = self.tags.get_mut();
            for (key, repo) in &v.repos {
                if let Some(tags) = &repo.tags {
                    cells.insert(
                        key.clone(),
                        Arc::new(tokio::sync::OnceCell::new_with(Some(Some(tags.clone())))),
                    );
                }
            }
        }
        self.trusted = view;
        self
    }

    /// What this run saw in its targets, as a view for the next runs.
    pub(super) fn into_view(self, read_at: Instant) -> TargetView {
        TargetView {
            read_at,
            repos: self.seen.into_inner().unwrap_or_default(),
        }
    }

    fn saw(&self, dst: &Repo, f: impl FnOnce(&mut SeenRepo)) {
        if let Ok(mut seen) = self.seen.lock() {
            f(seen.entry(dst.key()).or_default());
        }
    }

    fn trusted(&self, dst: &Repo) -> Option<&SeenRepo> {
        self.trusted.as_ref()?.repos.get(&dst.key())
    }

    /// [`RunMemo::tags`] of a target repository, remembered for the view.
    pub(super) async fn target_tags(&self, dst: &Repo) -> Result<Option<Arc<TagList>>> {
        let tags = self.tags(dst).await?;
        if let Some(t) = &tags {
            self.saw(dst, |r| r.tags = Some(t.clone()));
        }
        Ok(tags)
    }

    /// The manifest a target tag holds: from the trusted view, or a HEAD remembered for
    /// the next view.
    pub(super) async fn target_head(&self, dst: &Repo, tag: &str) -> Result<Option<ManifestHead>> {
        if let Some(h) = self.trusted(dst).and_then(|r| r.heads.get(tag)) {
            return Ok(Some(h.clone()));
        }
        let head = dst.head_manifest(tag).await?;
        if let Some(h) = &head {
            self.saw(dst, |r| {
                r.heads.insert(tag.to_owned(), h.clone());
            });
        }
        Ok(head)
    }

    async fn cell(&self, repo: &Repo) -> TagCell {
        self.tags
            .lock()
            .await
            .entry(repo.key())
            .or_default()
            .clone()
    }

    /// Records a listing of `repo` whose request went out at `at`.
    pub(super) async fn put(&self, repo: &Repo, tags: &[String], at: Instant) {
        let _ = self
            .cell(repo)
            .await
            .set(Some(Arc::new(TagList::requested_at(
                tags.iter().cloned(),
                at,
            ))));
    }

    /// Records that `repo` could not be listed.
    pub(super) async fn unlisted(&self, repo: &Repo) {
        let _ = self.cell(repo).await.set(None);
    }

    /// The tags of `repo` when this run has listed them already; never lists.
    pub(super) async fn listed(&self, repo: &Repo) -> Option<Arc<TagList>> {
        self.tags
            .lock()
            .await
            .get(&repo.key())
            .and_then(|c| c.get().cloned().flatten())
    }

    /// The tags of `repo`, listed now if this run has not yet (once, however many images
    /// ask at the same time); a repository that does not exist has none. `None` when the
    /// registry answers a listing with a 404 that does not say the repository is missing
    /// (a proxy hiding listings; an empty list would pass for a new repository), or refuses
    /// it (401/403: a credential allowed to push but not to list).
    pub(super) async fn tags(&self, repo: &Repo) -> Result<Option<Arc<TagList>>> {
        let cell = self.cell(repo).await;
        cell.get_or_try_init(|| async {
            let at = Instant::now();
            let list = match repo.list_tags().await {
                Ok(l) => l,
                Err(Error::NotFound { .. }) => Vec::new(),
                // Not allowed to list (a push-only credential), or a listing hidden: the
                // run goes on without one.
                Err(e) if e.is_not_found() || e.is_unauthorized() => {
                    tracing::debug!(repository = %repo, error = %e, "Cannot list tags; asking tag by tag");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            Ok(Some(Arc::new(TagList::requested_at(list, at))))
        })
        .await
        .cloned()
    }

    /// How `src`'s referrers indexes compare with `dst`'s; `None` when that tells nothing:
    /// either registry has the referrers API (or would not say), or asking failed. `probe`
    /// is a manifest both repositories hold, to ask about the API with.
    pub(super) async fn fallback_sync(
        &self,
        src: &Repo,
        dst: &Repo,
        probe: &Digest,
    ) -> Option<Arc<FallbackSync>> {
        let cell = self
            .fallback
            .lock()
            .await
            .entry((src.key(), dst.key()))
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            match self.compare_fallback(src, dst, probe).await {
                Ok(sync) => sync.map(Arc::new),
                Err(e) => {
                    tracing::debug!(source = %src, target = %dst, error = %e, "Comparing referrers indexes failed; reading them instead");
                    None
                }
            }
        })
        .await
        .clone()
    }

    async fn compare_fallback(
        &self,
        src: &Repo,
        dst: &Repo,
        probe: &Digest,
    ) -> Result<Option<FallbackSync>> {
        // With the API on either side, the indexes are not where the referrers live.
        let trusted_api = self.trusted(dst).and_then(|r| r.api);
        let (a, b) = tokio::join!(src.has_referrers_api(probe), async {
            match trusted_api {
                Some(known) => Ok(Some(known)),
                None => dst.has_referrers_api(probe).await,
            }
        });
        let b = b?;
        self.saw(dst, |r| r.api = b);
        if a? != Some(false) || b != Some(false) {
            return Ok(None);
        }
        let (have, want) = tokio::join!(self.target_tags(dst), self.tags(src));
        let (Some(have), Some(want)) = (have?, want?) else {
            return Ok(None);
        };
        let source: HashSet<String> = want
            .iter()
            .filter(|t| Digest::is_referrers_tag(t))
            .cloned()
            .collect();
        let same = |tag: String| {
            let have = have.clone();
            async move {
                if !have.contains(&tag) {
                    return false;
                }
                // Anything but two answers with one digest counts as different.
                match tokio::join!(src.head_manifest(&tag), self.target_head(dst, &tag)) {
                    (Ok(Some(a)), Ok(Some(b))) => a.digest == b.digest,
                    _ => false,
                }
            }
        };
        let differing = stream::iter(source.iter().cloned().map(same))
            .buffer_unordered(CHECK_CONCURRENCY)
            .filter(|same| futures_util::future::ready(!same))
            .count()
            .await;
        Ok(Some(FallbackSync { source, differing }))
    }
}
