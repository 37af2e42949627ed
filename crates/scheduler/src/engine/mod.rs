//! Running sync entries: list, compare, copy.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};

use regferry_config::template::SystemHost;
use regferry_config::{BackupTemplate, Config, Endpoint, RefFields, SyncEntry, SyncKind};
use regferry_registry::http::ManifestHead;
use regferry_registry::manifest::media_type;
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Digest, Error, Manifest, Reference, Result};
use regferry_transfer::{CopyOptions, Destination, GraphLimits, Slots, Transfer, select_platform};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clients::Clients;
use crate::report::{EntryReport, RunReport, State, TagReport};

mod extras;
mod prune;
mod require;
mod run_memo;

use run_memo::{RunMemo, TargetView};

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Compare only; write nothing.
    Check,
    /// Copy what is missing or different.
    Copy {
        /// Only copy tags the target lacks; leave stale ones (`once --missing`, the server's first pass).
        missing_only: bool,
    },
}

/// Options of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Check or copy.
    pub mode: Mode,
    /// Stop at the first failure.
    pub abort_on_error: bool,
    /// A scheduled run of `server`: it may trust what the entry's last clean run saw in the
    /// target (see [`TargetView`](run_memo::TargetView)) until `targetRecheck` has passed,
    /// and a clean full run leaves such a view for the next.
    pub trust_target: bool,
}

/// How many tags of one entry are compared at once (HEAD requests; each registry's own
/// `reqConcurrent` still applies). Comparisons waiting for a request slot keep each
/// registry's connections busy: at 16 a registry sat idle between one request and the next
/// often enough that distribution's scheduler spent more CPU parking and waking threads
/// than serving the HEADs (docs/performance.md, issue 11).
const CHECK_CONCURRENCY: usize = 64;

/// The sync engine for one configuration.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    clients: Clients,
    transfer: Arc<Transfer>,
    /// Image copies at once; shared with the engine a reload replaces (see
    /// [`Engine::succeeding`]).
    copy_slots: Arc<Slots>,
    tags_seen: AtomicUsize,
    tags_done: AtomicUsize,
    stopping: AtomicBool,
    cancelled: CancellationToken,
    /// Entries running at once (see [`entry_slots`]).
    entry_slots: Arc<Slots>,
    shard: Option<(u32, u32)>,
    /// What each entry's last clean full run saw in its target, by entry name. Not handed
    /// to the engine of a reloaded configuration: after a reload every target is read in
    /// full.
    views: std::sync::Mutex<HashMap<String, Arc<TargetView>>>,
    /// Tags being worked on at once, across all entries (see [`tag_slots`]).
    tag_slots: Arc<Slots>,
    /// Entries running now into each OCI layout, so that a prune collects a layout's
    /// blobs only while no other entry copies into it (see [`prune::LayoutWriters`]).
    layout_writers: prune::LayoutWriters,
}

/// Limits a run to what a webhook reported: one repository of a registry entry, one tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Only {
    /// The source repository (for `type: registry` entries).
    pub repository: Option<String>,
    /// The tag; it must still pass the entry's filters.
    pub tag: Option<String>,
}

/// One image to look at: where it comes from and where it goes.
struct Item {
    src: Repo,
    src_ref: String,
    dst: Repo,
    dst_tag: String,
    /// Which of the entry's targets `dst` belongs to (0 but with `targets`).
    to: usize,
}

/// A manifest read by digest, checked to be that digest: a registry must not answer a read
/// of one digest with other bytes. Signed schema 1 manifests are exempt (their digest is
/// over the bytes without the signatures), as everywhere in the client.
fn bound(m: Manifest, digest: &Digest) -> Result<Manifest> {
    if m.media_type != media_type::DOCKER_SCHEMA1_SIGNED && m.digest != *digest {
        return Err(Error::DigestMismatch {
            expected: digest.clone(),
            actual: m.digest,
        });
    }
    Ok(m)
}

/// How many entries run at once, for `copy_slots` image copies at once (64 per copy, at
/// least 256): enough that listings and comparisons keep the copies busy, few enough that
/// a file of thousands of entries never holds the state of all of them at once.
fn entry_slots(copy_slots: usize) -> usize {
    (copy_slots * 64).clamp(256, 4096)
}

impl Item {
    /// A report on this item, its source and target named, nothing found yet.
    fn report(&self) -> TagReport {
        TagReport::new(
            format!("{}:{}", self.src, self.src_ref).replace(":sha256:", "@sha256:"),
            format!("{}:{}", self.dst, self.dst_tag),
        )
    }
}

/// The images an entry covers in this run, and how many tags its filters selected before
/// `--missing` left out those the target has.
#[derive(Default)]
struct Selected {
    items: Vec<Item>,
    matched: usize,
    /// Source references that a `latest` count left out.
    outside_latest: Vec<String>,
    /// Per target repository, what `prune` deletes after the copies.
    prunes: Vec<prune::PrunePlan>,
}

/// A read shared by the targets of one source image: its result, or why it failed.
type Shared<T> = tokio::sync::OnceCell<std::result::Result<T, Arc<Error>>>;

/// What one source image's targets read from the source, read once for all of them.
#[derive(Default)]
struct SourceReads {
    /// The source tag's manifest: its HEAD, and the manifest when it was read whole.
    source: Shared<(Option<ManifestHead>, Option<Manifest>)>,
    /// What `platform`/`platforms` selected from it.
    selected: Shared<Manifest>,
}

impl Decision {
    /// Whether the target needs the image: it lacks the tag, or holds another digest.
    fn wants_copy(&self) -> bool {
        matches!(self.state, State::Missing | State::Changed)
    }
}

/// Items grouped by source image, in their order: one group per source tag, holding an
/// item per target (one, but with `targets`).
fn by_source(items: Vec<Item>) -> Vec<Vec<Item>> {
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    let mut groups: Vec<Vec<Item>> = Vec::new();
    for item in items {
        let key = (item.src.key(), item.src_ref.clone());
        match at.get(&key) {
            Some(&g) => groups[g].push(item),
            None => {
                at.insert(key, groups.len());
                groups.push(vec![item]);
            }
        }
    }
    groups
}

/// What the comparison found for one item.
struct Decision {
    state: State,
    reason: Option<String>,
    source: Option<ManifestHead>,
    target: Option<ManifestHead>,
    /// The manifest to copy, when already fetched (platform selection needs it).
    manifest: Option<Manifest>,
}

impl Engine {
    /// An engine for `config`.
    pub fn new(config: Arc<Config>) -> Engine {
        Engine::with_clients(Clients::new(config.clone()), config)
    }

    fn with_clients(clients: Clients, config: Arc<Config>) -> Engine {
        let slots = config.globals.copy_slots();
        Engine {
            clients,
            // Blobs in flight: enough to fill the network, bounded so memory stays flat.
            transfer: Arc::new(Transfer::new(blob_slots(slots))),
            copy_slots: Slots::new(slots),
            tags_seen: AtomicUsize::new(0),
            tags_done: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            cancelled: CancellationToken::new(),
            entry_slots: Slots::new(entry_slots(slots)),
            shard: None,
            views: std::sync::Mutex::new(HashMap::new()),
            tag_slots: Slots::new(tag_slots(slots)),
            layout_writers: prune::LayoutWriters::default(),
            config,
        }
    }

    /// An engine that, for `type: registry` entries, syncs only the repositories this
    /// replica owns among `count` (rendezvous hashing, as for whole entries).
    pub fn with_shard(config: Arc<Config>, shard: Option<(u32, u32)>) -> Engine {
        Engine {
            shard,
            ..Engine::new(config)
        }
    }

    /// An engine for a reloaded configuration, taking over from `previous`, whose runs
    /// may still be finishing: both draw on one set of copy slots and one copy engine (its
    /// blob slots and de-duplication), resized to the new `parallel`, so together they never
    /// do more at once than the new configuration allows; and one memory of tags written,
    /// referrers-API answers and index locks, so that the two never lose each other's
    /// entries in a referrers index. Needs a Tokio runtime (a shrink waits for slots to
    /// come back).
    pub fn succeeding(config: Arc<Config>, shard: Option<(u32, u32)>, previous: &Engine) -> Engine {
        let slots = config.globals.copy_slots();
        previous.copy_slots.resize(slots);
        previous.transfer.resize(blob_slots(slots));
        let clients = Clients::sharing(config.clone(), previous.clients.memory().clone());
        Engine {
            copy_slots: previous.copy_slots.clone(),
            transfer: previous.transfer.clone(),
            layout_writers: previous.layout_writers.clone(),
            shard,
            ..Engine::with_clients(clients, config)
        }
    }

    /// Tags listed so far, and tags finished (compared, and copied when needed).
    pub fn progress(&self) -> (usize, usize) {
        (
            self.tags_seen.load(Ordering::Relaxed),
            self.tags_done.load(Ordering::Relaxed),
        )
    }

    /// Stops starting new images; those in flight go on. For a graceful shutdown.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Stops at once: no new images, and the work in flight is dropped where it is (each
    /// tag reported as not finished). The upload sessions that work leaves open are
    /// cancelled by [`Clients::cancel_abandoned_uploads`]. For an interrupted `once`.
    pub fn cancel(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.cancelled.cancel();
    }

    /// Bounds on one image's graph: the defaults, with `defaults.limits` over them.
    pub(crate) fn graph_limits(&self) -> GraphLimits {
        let l = &self.config.globals.limits;
        let d = GraphLimits::default();
        GraphLimits {
            index_depth: l.index_depth.unwrap_or(d.index_depth),
            manifests: l.manifests_per_image.unwrap_or(d.manifests),
            referrers: l.referrers_per_image.unwrap_or(d.referrers),
        }
    }

    /// How many entries run at once.
    pub fn entry_slots(&self) -> usize {
        entry_slots(self.config.globals.copy_slots())
    }

    /// The registry clients, for their request counters.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The copy engine, for live counters.
    pub fn transfer(&self) -> &Transfer {
        &self.transfer
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration, shared.
    pub fn config_arc(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// Runs every entry. With `parallel` > 0 entries start together (as in regsync) and
    /// share the copy slots; otherwise one after another.
    pub async fn run(&self, opts: RunOptions) -> RunReport {
        let started = Instant::now();
        let abort = AtomicBool::new(false);
        let entries = &self.config.sync;
        let width = if self.config.globals.parallel > 0 {
            entries.len().max(1)
        } else {
            1
        };
        let mut reports: Vec<EntryReport> =
            stream::iter(entries.iter().map(|e| self.run_entry(e, opts, &abort)))
                .buffered(width)
                .collect()
                .await;
        reports.sort_by_key(|r| r.index);
        RunReport {
            entries: reports,
            stats: self.transfer.stats().snapshot(),
            duration: started.elapsed(),
        }
    }

    /// Runs one entry.
    pub async fn run_entry(
        &self,
        entry: &SyncEntry,
        opts: RunOptions,
        abort: &AtomicBool,
    ) -> EntryReport {
        self.run_entry_only(entry, opts, abort, &Only::default())
            .await
    }

    /// Runs one entry, limited to one repository and/or tag (a webhook's push).
    pub async fn run_entry_only(
        &self,
        entry: &SyncEntry,
        opts: RunOptions,
        abort: &AtomicBool,
        only: &Only,
    ) -> EntryReport {
        let mut report = EntryReport {
            index: entry.index,
            name: entry.name.clone(),
            display_name: entry.display_name(),
            label: format!("{} -> {}", entry.source, entry.targets_text()),
            tags: Vec::new(),
            outside_latest: Vec::new(),
            pruned: Vec::new(),
            error: None,
        };
        if abort.load(Ordering::Relaxed) {
            report.error = Some("not run: an earlier failure aborted the run".into());
            return report;
        }
        // Entries run a bounded number at a time, and an entry's state (listings, requests
        // and their retries, a large future) is allocated only once it runs: a file of
        // thousands of entries never holds all of them at once.
        let _running = tokio::select! {
            slot = self.entry_slots.acquire() => slot,
            () = self.cancelled.cancelled() => None,
        };
        if self.cancelled.is_cancelled() {
            report.error = Some("not finished: the run was interrupted".into());
            return report;
        }
        Box::pin(self.run_entry_body(entry, opts, abort, only, report)).await
    }

    async fn run_entry_body(
        &self,
        entry: &SyncEntry,
        opts: RunOptions,
        abort: &AtomicBool,
        only: &Only,
        report: EntryReport,
    ) -> EntryReport {
        let started = Instant::now();
        let steady = opts.trust_target
            && opts.mode == (Mode::Copy { missing_only: false })
            && *only == Only::default()
            // A backup depends on what the tag holds right now.
            && entry.backup.is_none()
            && !self.config.globals.target_recheck.is_zero();
        let view = steady.then(|| self.view(entry, started)).flatten();
        let memo = RunMemo::new(entry.kind != SyncKind::Image && only.tag.is_none())
            .trusting(view.clone());
        let _writing: Vec<prune::Writing> = entry
            .targets()
            .map(|t| self.layout_writers.enter(t))
            .collect();
        let report = self
            .run_entry_with(entry, opts, abort, only, report, &memo)
            .await;
        // A run that changed nothing and failed nothing leaves what it saw for the next
        // scheduled run; any other run leaves nothing (the next one reads the target).
        // (A tag skipped on purpose, its media type not selected, changes nothing either.)
        let clean = report.error.is_none()
            && report.pruned.is_empty()
            && report.tags.iter().all(|t| {
                matches!(t.state, State::UpToDate | State::Skipped)
                    && !t.copied
                    && t.referrers.is_empty()
                    && t.digest_tags.is_empty()
            });
        if let Ok(mut views) = self.views.lock() {
            if !clean {
                views.remove(&entry.name);
            } else if steady && view.is_none() {
                views.insert(entry.name.clone(), Arc::new(memo.into_view(started)));
            }
        }
        report
    }

    /// The entry's view of its target, while younger than `targetRecheck`.
    fn view(&self, entry: &SyncEntry, now: Instant) -> Option<Arc<TargetView>> {
        let views = self.views.lock().ok()?;
        let v = views.get(&entry.name)?;
        (now.duration_since(v.read_at) < self.config.globals.target_recheck).then(|| v.clone())
    }

    async fn run_entry_with(
        &self,
        entry: &SyncEntry,
        opts: RunOptions,
        abort: &AtomicBool,
        only: &Only,
        mut report: EntryReport,
        memo: &RunMemo,
    ) -> EntryReport {
        let listing = tokio::select! {
            r = self.items(entry, opts.mode, only, memo) => r,
            () = self.cancelled.cancelled() => Err(Error::Cancelled),
        };
        let Selected {
            items,
            matched,
            outside_latest,
            prunes,
        } = match listing {
            Ok(selected) => selected,
            Err(e) if e.is_cancelled() => {
                report.error = Some("not finished: the run was interrupted".into());
                return report;
            }
            Err(e) => {
                tracing::error!(entry = %entry.name, source = %entry.source, error = %e, "Entry failed before copying (listing the source, or setting up a registry)");
                report.error = Some(e.to_string());
                if opts.abort_on_error {
                    abort.store(true, Ordering::Relaxed);
                }
                return report;
            }
        };
        report.outside_latest = outside_latest;
        if matched == 0 {
            tracing::warn!(entry = %entry.name, source = %entry.source, "No tags matched the filters");
        } else if items.is_empty() {
            tracing::info!(entry = %entry.name, source = %entry.source, tags = matched, "Nothing missing: every selected tag is in the target");
        }
        self.tags_seen.fetch_add(items.len(), Ordering::Relaxed);
        // A tag's work (its comparison, copy and referrers: a large state) is allocated only
        // once it holds one of the engine's tag slots, so memory is bounded across entries,
        // however many run at once. With `targets`, one source image and all its targets
        // are one piece of work: compared each, copied from one read of the source.
        let done: Vec<Vec<(usize, TagReport)>> =
            stream::iter(by_source(items).into_iter().map(|group| async move {
                let _slot = self.tag_slots.acquire().await;
                Box::pin(self.process(entry, group, opts, abort, memo)).await
            }))
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect()
            .await;
        let mut failed = vec![0; 1 + entry.more_targets.len()];
        for (to, tag) in done.into_iter().flatten() {
            if tag.state == State::Failed {
                failed[to] += 1;
            }
            report.tags.push(tag);
        }
        report.tags.sort_by(|a, b| a.target.cmp(&b.target));
        self.prune(entry, opts, prunes, &failed, &mut report).await;
        report
    }

    /// The images an entry covers, after listing and filtering.
    async fn items(
        &self,
        entry: &SyncEntry,
        mode: Mode,
        only: &Only,
        memo: &RunMemo,
    ) -> Result<Selected> {
        match entry.kind {
            SyncKind::Image => {
                if let Some(tag) = &only.tag
                    && tag_of(&entry.source).as_deref() != Some(tag.as_str())
                {
                    return Ok(Selected::default());
                }
                let src = self.clients.repo(&entry.source, None)?;
                let src_ref = reference_of(&entry.source);
                let mut items = Vec::new();
                for (to, target) in entry.targets().enumerate() {
                    items.push(Item {
                        src: src.clone(),
                        src_ref: src_ref.clone(),
                        dst: self.clients.repo(target, None)?,
                        dst_tag: tag_of(target)
                            .or_else(|| tag_of(&entry.source))
                            .unwrap_or_else(|| "latest".to_owned()),
                        to,
                    });
                }
                Ok(Selected {
                    items,
                    matched: 1,
                    outside_latest: Vec::new(),
                    prunes: Vec::new(),
                })
            }
            SyncKind::Repository => {
                let src = self.clients.repo(&entry.source, None)?;
                let dsts = entry
                    .targets()
                    .map(|t| self.clients.repo(t, None))
                    .collect::<Result<Vec<_>>>()?;
                self.repo_items(entry, src, dsts, mode, only, memo).await
            }
            SyncKind::Registry => {
                let Endpoint::Namespace { registry, prefix } = &entry.source else {
                    return Err(Error::Protocol {
                        what: entry.source.to_string(),
                        reason: "type registry needs a registry source".into(),
                    });
                };
                let client = self.clients.registry(registry)?;
                let mut repos = match &only.repository {
                    Some(r) => vec![r.clone()],
                    None => client.catalog().await?,
                };
                repos.retain(|r| prefix.is_empty() || r.starts_with(&format!("{prefix}/")));
                repos.retain(|r| entry.repos.matches(r));
                if let Some((index, count)) = self.shard {
                    repos.retain(|r| {
                        crate::shard::owns(
                            &crate::shard::repository_key(&entry.name, r),
                            index,
                            count,
                        )
                    });
                }
                repos.sort();
                let mut all = Selected::default();
                for repo in repos {
                    let src = self.clients.repo(&entry.source, Some(&repo))?;
                    // With a source prefix, the target gets the path below it.
                    let rel = if prefix.is_empty() {
                        repo.as_str()
                    } else {
                        repo.strip_prefix(&format!("{prefix}/")).unwrap_or(&repo)
                    };
                    let dsts = entry
                        .targets()
                        .map(|t| self.clients.repo(t, Some(rel)))
                        .collect::<Result<Vec<_>>>()?;
                    let one = self.repo_items(entry, src, dsts, mode, only, memo).await?;
                    all.items.extend(one.items);
                    all.matched += one.matched;
                    all.outside_latest.extend(one.outside_latest);
                    all.prunes.extend(one.prunes);
                }
                Ok(all)
            }
        }
    }

    async fn repo_items(
        &self,
        entry: &SyncEntry,
        src: Repo,
        dsts: Vec<Repo>,
        mode: Mode,
        only: &Only,
        memo: &RunMemo,
    ) -> Result<Selected> {
        if let Repo::Layout(layout) = &src
            && !layout.exists().await?
        {
            // Listing a directory that is not there would find no tags, and report success.
            return Err(Error::NotFound {
                what: format!(
                    "OCI layout {} (no index.json there; a relative path is read from {})",
                    layout.root().display(),
                    std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|_| "the working directory".into())
                ),
            });
        }
        // One listing of each target replaces a HEAD for each tag it lacks, and tells a new
        // repository (no tags) from one that has most blobs already. A webhook's single tag
        // costs one HEAD instead. The source is listed once, for all targets.
        let list_target = only.tag.is_none() || mode == (Mode::Copy { missing_only: true });
        let listed_at = Instant::now();
        // Which versions are the `latest` depends on every tag, so a webhook's tag is judged
        // against the whole listing.
        let whole_listing = only.tag.is_none() || entry.tags.has_latest();
        let (listed, haves) = tokio::join!(
            async {
                match &only.tag {
                    Some(t) if !whole_listing => Ok(vec![t.clone()]),
                    _ => src.list_tags().await,
                }
            },
            futures_util::future::join_all(dsts.iter().map(|dst| async move {
                if list_target {
                    Some(memo.target_tags(dst).await)
                } else {
                    None
                }
            }))
        );
        let listed = listed?;
        if only.tag.is_none() {
            memo.put(&src, &listed, listed_at).await;
        }
        let names: Vec<&str> = listed.iter().map(String::as_str).collect();
        let (selected, left_out) = entry.tags.select_explained(&names);
        // A webhook's run is about its one tag, whatever else the listing held.
        let wanted = |t: &&str| only.tag.as_deref().is_none_or(|o| *t == o);
        let mut tags: Vec<String> = selected
            .into_iter()
            .filter(wanted)
            .map(str::to_owned)
            .collect();
        let outside_latest: Vec<String> = left_out
            .into_iter()
            .filter(wanted)
            .map(|t| format!("{src}:{t}"))
            .collect();
        if entry.referrers {
            // A `sha256-<hex>` referrers index is the referrers copy's to merge and filter;
            // copied as an image it would replace the target's index with the source's.
            tags.retain(|t| !Digest::is_referrers_tag(t));
        }
        tags.sort();
        let matched = tags.len();
        let mut selected = Selected {
            items: Vec::new(),
            matched,
            outside_latest,
            prunes: Vec::new(),
        };
        for (to, (dst, have)) in dsts.into_iter().zip(haves).enumerate() {
            let mut tags = tags.clone();
            // Only a full run prunes: not `--missing`, not a webhook's single tag.
            if let Some(p) = entry.prune
                && mode != (Mode::Copy { missing_only: true })
                && only.tag.is_none()
            {
                let plan = if self.backs_up_into(entry, &dst) {
                    prune::PrunePlan {
                        dst: dst.clone(),
                        to,
                        tags: Err(format!(
                            "not pruned: the entry's backup writes into {dst} itself, where backups cannot be told from tags the source no longer has; write backups to another repository"
                        )),
                    }
                } else {
                    let chosen: std::collections::HashSet<&str> =
                        tags.iter().map(String::as_str).collect();
                    let listing = match &have {
                        Some(Ok(Some(h))) => Some(&**h),
                        _ => None,
                    };
                    prune::plan(entry, p, &dst, to, &chosen, listing)
                };
                selected.prunes.push(plan);
            }
            // A target that cannot be listed (some registries allow HEAD but not listing) is
            // asked tag by tag, and counts as empty for --missing.
            match have {
                Some(Ok(Some(have))) => {
                    if let Mode::Copy { missing_only: true } = mode {
                        // "Exists" means the tag exists, even if stale.
                        tags.retain(|t| !have.contains(t));
                    }
                }
                Some(Ok(None)) => {
                    tracing::warn!(target = %dst, "The target cannot be listed; comparing tag by tag");
                }
                Some(Err(e)) => {
                    tracing::warn!(target = %dst, error = %e, "Listing the target failed; comparing tag by tag");
                    memo.unlisted(&dst).await;
                }
                None => {}
            }
            selected.items.extend(tags.into_iter().map(|t| Item {
                src: src.clone(),
                src_ref: t.clone(),
                dst: dst.clone(),
                dst_tag: t,
                to,
            }));
        }
        Ok(selected)
    }

    /// One source image into each of its targets (one, but with `targets`): each report
    /// with the target it is about.
    async fn process(
        &self,
        entry: &SyncEntry,
        items: Vec<Item>,
        opts: RunOptions,
        abort: &AtomicBool,
        memo: &RunMemo,
    ) -> Vec<(usize, TagReport)> {
        // A cancelled run drops the tag's work wherever it is (a retry's backoff, a blob
        // half streamed); the upload sessions it leaves open are cancelled by the caller.
        let reports = tokio::select! {
            r = self.process_inner(entry, &items, opts, abort, memo) => r,
            () = self.cancelled.cancelled() => items.iter().map(|item| {
                let mut r = item.report();
                r.state = State::Skipped;
                r.reason = Some("not finished: the run was interrupted".into());
                r
            }).collect(),
        };
        self.tags_done.fetch_add(items.len(), Ordering::Relaxed);
        items.iter().map(|i| i.to).zip(reports).collect()
    }

    async fn process_inner(
        &self,
        entry: &SyncEntry,
        items: &[Item],
        opts: RunOptions,
        abort: &AtomicBool,
        memo: &RunMemo,
    ) -> Vec<TagReport> {
        let mut reports: Vec<TagReport> = items.iter().map(Item::report).collect();
        if abort.load(Ordering::Relaxed) {
            for r in &mut reports {
                r.reason = Some("not run: an earlier failure aborted the run".into());
            }
            return reports;
        }
        if self.stopping.load(Ordering::Relaxed) {
            for r in &mut reports {
                r.state = State::Skipped;
                r.reason = Some("not run: shutting down".into());
            }
            return reports;
        }
        // Each target is compared on its own; the source is read once for all of them.
        let reads = SourceReads::default();
        let decisions = futures_util::future::join_all(
            items
                .iter()
                .map(|item| self.decide(entry, item, opts.mode, memo, &reads)),
        )
        .await;
        // What is left to do for each target; `None` once its report is final.
        let mut work: Vec<Option<Decision>> = Vec::with_capacity(items.len());
        for (report, decision) in reports.iter_mut().zip(decisions) {
            match decision {
                Ok(d) => {
                    report.state = d.state;
                    report.reason.clone_from(&d.reason);
                    report.source_digest = d.source.as_ref().map(|h| h.digest.to_string());
                    report.target_digest = d.target.as_ref().map(|h| h.digest.to_string());
                    if let Some(m) = &d.manifest {
                        report.source_digest = Some(m.digest.to_string());
                    }
                    work.push(Some(d));
                }
                Err(e) => {
                    self.failed(report, e, opts, abort);
                    work.push(None);
                }
            }
        }
        if let Some(req) = &entry.require {
            self.require_all(entry, items, req, &mut work, &mut reports, opts, abort)
                .await;
        }
        let dry_run = opts.mode == Mode::Check;
        // Referrers and digest tags are refreshed for copied images, and for unchanged ones
        // unless fastCheck says a matching digest is enough.
        let mut tag_last = vec![false; items.len()];
        // Whether the source may keep referrers for the image: the same for every target.
        let mut source_referrers = None;
        for (i, d) in work.iter_mut().enumerate() {
            let Some(decision) = d else { continue };
            let copy = decision.wants_copy();
            if copy && dry_run {
                tracing::info!(source = %reports[i].source, target = %reports[i].target, state = %decision.state.as_str(), "Image sync needed");
            }
            let refresh = matches!(decision.state, State::UpToDate) && !entry.fast_check;
            if (!copy && !refresh) || (!entry.referrers && !entry.digest_tags && !copy) {
                *d = None;
                continue;
            }
            // Image first, tag last: with referrers or digest tags to copy, the image is pushed
            // by digest, then those, then the tag. A tag whose referrers failed keeps its old
            // image, so a consumer verifying signatures never sees the new one without them.
            // An image the source is known to keep no referrers for is pushed with its tag at
            // once: one manifest PUT instead of two.
            tag_last[i] = entry.digest_tags
                || (entry.referrers
                    && copy
                    && match source_referrers {
                        Some(may) => may,
                        None => {
                            let may = self
                                .may_have_referrers(entry, &items[i], decision, memo)
                                .await;
                            *source_referrers.insert(may)
                        }
                    });
        }
        let mut copied: Vec<Option<Manifest>> = work
            .iter()
            .map(|d| d.as_ref().and_then(|d| d.manifest.clone()))
            .collect();
        let mut untagged: Vec<Option<Manifest>> = vec![None; items.len()];
        let copying: Vec<usize> = (0..items.len())
            .filter(|&i| !dry_run && work[i].as_ref().is_some_and(Decision::wants_copy))
            .collect();
        if !copying.is_empty() {
            let results = self
                .copy(entry, items, &copying, &work, memo, &tag_last)
                .await;
            for (&i, result) in copying.iter().zip(results) {
                let report = &mut reports[i];
                match result {
                    Ok((m, backup)) => {
                        report.backup = backup;
                        if tag_last[i] {
                            untagged[i] = Some(m.clone());
                        } else {
                            report.copied = true;
                            tracing::info!(source = %report.source, target = %report.target, "Copied");
                        }
                        copied[i] = Some(m);
                    }
                    Err(e) if e.is_cancelled() && self.stopping.load(Ordering::Relaxed) => {
                        report.state = State::Skipped;
                        report.reason = Some("not run: shutting down".into());
                        work[i] = None;
                    }
                    Err(e) => {
                        self.failed(report, e, opts, abort);
                        work[i] = None;
                    }
                }
            }
        }
        if entry.referrers || entry.digest_tags {
            let live: Vec<usize> = (0..items.len()).filter(|&i| work[i].is_some()).collect();
            let live_items: Vec<&Item> = live.iter().map(|&i| &items[i]).collect();
            let live_decisions: Vec<&Decision> =
                live.iter().filter_map(|&i| work[i].as_ref()).collect();
            let live_copied: Vec<Option<&Manifest>> =
                live.iter().map(|&i| copied[i].as_ref()).collect();
            let extras = self
                .extras(
                    entry,
                    &live_items,
                    &live_decisions,
                    &live_copied,
                    dry_run,
                    memo,
                )
                .await;
            for (&i, extra) in live.iter().zip(extras) {
                match extra {
                    Ok((referrers, digest_tags)) => {
                        reports[i].referrers = referrers;
                        reports[i].digest_tags = digest_tags;
                    }
                    Err(e) => {
                        self.failed(&mut reports[i], e, opts, abort);
                        work[i] = None;
                    }
                }
            }
        }
        let tagging: Vec<(usize, Manifest)> = (0..items.len())
            .filter(|&i| work[i].is_some())
            .filter_map(|i| untagged[i].take().map(|m| (i, m)))
            .collect();
        let tagged = futures_util::future::join_all(
            tagging
                .iter()
                .map(|(i, m)| items[*i].dst.put_manifest(Some(&items[*i].dst_tag), m)),
        )
        .await;
        for ((i, _), result) in tagging.iter().zip(tagged) {
            let report = &mut reports[*i];
            match result {
                Ok(_) => {
                    report.copied = true;
                    tracing::info!(source = %report.source, target = %report.target, "Copied");
                }
                Err(e) => self.failed(report, e, opts, abort),
            }
        }
        reports
    }

    /// `require` for the targets about to be copied: judged once (they all hold the same
    /// source image), and each of them held, or failed, by the verdict.
    #[allow(clippy::too_many_arguments)]
    async fn require_all(
        &self,
        entry: &SyncEntry,
        items: &[Item],
        req: &regferry_config::Require,
        work: &mut [Option<Decision>],
        reports: &mut [TagReport],
        opts: RunOptions,
        abort: &AtomicBool,
    ) {
        let wanting: Vec<usize> = (0..items.len())
            .filter(|&i| work[i].as_ref().is_some_and(Decision::wants_copy))
            .collect();
        let Some(&first) = wanting.first() else {
            return;
        };
        let verdict = match work[first].as_ref().and_then(|d| d.source.as_ref()) {
            None => Err(Error::Protocol {
                what: format!("{}:{}", items[first].src, items[first].src_ref),
                reason: "no source digest to check `require` against".into(),
            }),
            Some(head) => self.unmet(entry, &items[first], req, head).await,
        };
        let verdict = verdict.map_err(Arc::new);
        for i in wanting {
            let report = &mut reports[i];
            match &verdict {
                Ok(None) => continue,
                Ok(Some(reason)) => {
                    tracing::warn!(source = %report.source, target = %report.target, reason = %reason, "Held: the image does not meet the entry's require");
                    report.state = State::Held;
                    report.reason = Some(reason.clone());
                    if opts.abort_on_error {
                        abort.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) => self.failed(report, Error::Shared(e.clone()), opts, abort),
            }
            work[i] = None;
        }
    }

    fn failed(&self, report: &mut TagReport, e: Error, opts: RunOptions, abort: &AtomicBool) {
        tracing::error!(source = %report.source, target = %report.target, error = %e, "Failed to sync");
        report.state = State::Failed;
        report.reason = Some(e.to_string());
        if opts.abort_on_error {
            abort.store(true, Ordering::Relaxed);
        }
    }

    async fn decide(
        &self,
        entry: &SyncEntry,
        item: &Item,
        mode: Mode,
        memo: &RunMemo,
        reads: &SourceReads,
    ) -> Result<Decision> {
        // A tag the run's listing of the target lacks needs no HEAD to know it is missing;
        // unless a backup or `--missing` depends on what the tag holds right now (it may
        // have appeared since the listing).
        let listed = match mode {
            Mode::Copy { missing_only: true } => None,
            _ if entry.backup.is_some() => None,
            _ => memo.listed(&item.dst).await,
        };
        let target = async {
            match &listed {
                Some(tags) if !tags.contains(&item.dst_tag) => Ok(None),
                _ => memo.target_head(&item.dst, &item.dst_tag).await,
            }
        };
        // A tag the target lacks will be copied: read the source manifest now rather than
        // HEAD it and read it after. Not in a dry run, nor where a read is a counted pull
        // that a HEAD is not (Docker Hub, `ratelimit`): an image `mediaTypes` then skips
        // would spend a pull on every run.
        let counts_pulls = matches!(&item.src, Repo::Registry { client, .. }
            if client.registry() == regferry_registry::DOCKER_HUB);
        let fetch = listed.as_ref().is_some_and(|t| !t.contains(&item.dst_tag))
            && matches!(mode, Mode::Copy { .. })
            && entry.ratelimit.min == 0
            && !counts_pulls;
        // With `targets`, the first target to ask reads the source for all of them.
        let source = reads.source.get_or_init(|| async {
            if !fetch {
                let head = item.src.head_manifest(&item.src_ref).await;
                return head.map(|h| (h, None)).map_err(Arc::new);
            }
            let m = match item.src.get_manifest(&item.src_ref).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => return Ok((None, None)),
                Err(e) => return Err(Arc::new(e)),
            };
            let head = ManifestHead {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
                rate_limit: None,
            };
            Ok((Some(head), Some(m)))
        });
        let (source, target) = tokio::join!(source, target);
        let (source, mut fetched) = source.clone().map_err(Error::Shared)?;
        let source = source.ok_or_else(|| Error::NotFound {
            what: format!("{}:{}", item.src, item.src_ref),
        })?;
        // Only "not found" means missing (regsync takes any error for it). A 401, 403,
        // 429 or 5xx says nothing about the tag: treating it as missing would skip the
        // backup and let `--missing` overwrite a tag it promised to leave.
        let target = target?;
        let mut d = Decision {
            state: State::Missing,
            reason: None,
            source: Some(source.clone()),
            target: target.clone(),
            manifest: None,
        };
        if !entry.media_types.contains(&source.media_type) {
            d.state = State::Skipped;
            d.reason = Some(format!(
                "media type {} is not in mediaTypes",
                source.media_type
            ));
            return Ok(d);
        }
        // The digest the target should end up with.
        let mut want = source.digest.clone();
        let is_index = regferry_registry::manifest::media_type::is_index(&source.media_type);
        if is_index && (entry.platform.is_some() || !entry.platforms.is_empty()) {
            let selected = reads
                .selected
                .get_or_init(|| async {
                    self.select_platforms(entry, item, &source, fetched.take())
                        .await
                        .map_err(Arc::new)
                })
                .await;
            let m = selected.clone().map_err(Error::Shared)?;
            want = m.digest.clone();
            d.manifest = Some(m);
        } else {
            d.manifest = fetched;
        }
        match &target {
            Some(t) if t.digest == want && !entry.force_recursive => {
                d.state = State::UpToDate;
            }
            Some(t) if t.digest == want => {
                d.state = State::Changed;
                d.reason = Some("forceRecursive: re-checking every child".into());
            }
            Some(_) if mode == (Mode::Copy { missing_only: true }) => {
                d.state = State::Skipped;
                d.reason = Some("the target has the tag (--missing leaves it)".into());
            }
            Some(t) => {
                d.state = State::Changed;
                d.reason = Some(format!("target has {}", t.digest));
            }
            None => d.state = State::Missing,
        }
        Ok(d)
    }

    /// What `platform` or `platforms` make of a source index: the platform's manifest, or
    /// the index with only the selected platforms.
    async fn select_platforms(
        &self,
        entry: &SyncEntry,
        item: &Item,
        source: &ManifestHead,
        fetched: Option<Manifest>,
    ) -> Result<Manifest> {
        let index = match fetched {
            Some(m) => m,
            None => bound(
                item.src.get_manifest(&source.digest.to_string()).await?,
                &source.digest,
            )?,
        };
        Ok(match &entry.platform {
            Some(p) => {
                let Content::Index { manifests, .. } = index.content(&item.src_ref)? else {
                    return Err(Error::InvalidManifest {
                        reference: item.src_ref.clone(),
                        reason: "not an index".into(),
                    });
                };
                let child = select_platform(&manifests, p).ok_or_else(|| Error::NotFound {
                    what: format!("platform {p} in {}:{}", item.src, item.src_ref),
                })?;
                bound(
                    item.src.get_manifest(&child.digest.to_string()).await?,
                    &child.digest,
                )?
            }
            None => regferry_transfer::filter_index(&index, &entry.platforms, &item.src_ref)?,
        })
    }

    /// Copies the source image of `items` into the targets at `copying` (places in
    /// `items`), from one read of the source: each target's pushed manifest and backup, or
    /// why that target failed. `tag_last` says which targets get the image by digest only.
    async fn copy(
        &self,
        entry: &SyncEntry,
        items: &[Item],
        copying: &[usize],
        work: &[Option<Decision>],
        memo: &RunMemo,
        tag_last: &[bool],
    ) -> Vec<Result<(Manifest, Option<String>)>> {
        let all_fail = |e: Error| e.for_each(copying.len());
        let first = &items[copying[0]];
        let decisions: Vec<&Decision> = copying.iter().filter_map(|&i| work[i].as_ref()).collect();
        let Some(decision) = decisions.first() else {
            return all_fail(Error::Cancelled);
        };
        let _slot = match self
            .slot_within_rate_limit(entry, first, decision.source.as_ref())
            .await
        {
            Ok(slot) => slot,
            Err(e) => return all_fail(e),
        };
        if self.stopping.load(Ordering::Relaxed) {
            return all_fail(Error::Cancelled);
        }
        let manifest = match decisions.iter().find_map(|d| d.manifest.clone()) {
            Some(m) => m,
            None => {
                let read = match &decision.source {
                    // What is copied is what was compared (and, with `require`, verified).
                    Some(h) => first
                        .src
                        .get_manifest(&h.digest.to_string())
                        .await
                        .and_then(|m| bound(m, &h.digest)),
                    None => first.src.get_manifest(&first.src_ref).await,
                };
                match read {
                    Ok(m) => m,
                    Err(e) => return all_fail(e),
                }
            }
        };
        if entry.require.is_some() && manifest.media_type == media_type::DOCKER_SCHEMA1_SIGNED {
            return all_fail(Error::Protocol {
                what: format!("{}:{}", first.src, first.src_ref),
                reason: "a signed schema 1 manifest's bytes do not hash to its digest, so it cannot be bound to what `require` verified".into(),
            });
        }
        let backups = futures_util::future::join_all(copying.iter().map(|&i| {
            let item = &items[i];
            let target = work[i].as_ref().and_then(|d| match &d.target {
                Some(old) if d.state == State::Changed && old.digest != manifest.digest => {
                    Some(old)
                }
                _ => None,
            });
            async move {
                match (&entry.backup, target) {
                    (Some(b), Some(old)) => self.backup(entry, b, item, old).await,
                    _ => None,
                }
            }
        }))
        .await;
        let opts = CopyOptions {
            include_external: entry.include_external,
            force_recursive: entry.force_recursive,
            // `platforms` was applied while deciding; the manifest is already the filtered index.
            platforms: Vec::new(),
            new_target: false,
            limits: self.graph_limits(),
        };
        let mut dests = Vec::with_capacity(copying.len());
        for &i in copying {
            let item = &items[i];
            dests.push(Destination {
                repo: &item.dst,
                tag: (!tag_last[i]).then_some(item.dst_tag.as_str()),
                new_target: memo.listed(&item.dst).await.is_some_and(|t| t.is_empty()),
            });
        }
        let pushed = self
            .transfer
            .copy_manifest_to_all(&first.src, &dests, &manifest, &opts)
            .await;
        pushed
            .into_iter()
            .zip(backups)
            .map(|(p, backup)| p.map(|m| (m, backup)))
            .collect()
    }

    /// Keeps the image a tag points at before it is overwritten. A failed backup warns and
    /// the sync goes on (regsync PR #121: a broken target must not block the sync).
    async fn backup(
        &self,
        entry: &SyncEntry,
        b: &BackupTemplate,
        item: &Item,
        old: &ManifestHead,
    ) -> Option<String> {
        let fields = RefFields {
            reference: format!("{}:{}", item.dst, item.dst_tag),
            registry: match &item.dst {
                Repo::Registry { client, .. } => client.registry().to_owned(),
                Repo::Layout(_) => String::new(),
            },
            repository: match &item.dst {
                Repo::Registry { name, .. } => name.clone(),
                Repo::Layout(l) => l.root().display().to_string(),
            },
            tag: item.dst_tag.clone(),
            digest: old.digest.to_string(),
        };
        let result: Result<String> = async {
            let name =
                b.render_fields(&fields, entry, &SystemHost)
                    .map_err(|e| Error::Protocol {
                        what: format!("backup template {:?}", b.as_str()),
                        reason: e.to_string(),
                    })?;
            let (repo, tag) = if name.contains(':') || name.contains('/') {
                let r = Reference::parse(&name).map_err(|e| Error::Protocol {
                    what: format!("backup reference {name:?}"),
                    reason: e.to_string(),
                })?;
                let repo = self.clients.repo(&Endpoint::Registry(r.clone()), None)?;
                (repo, r.tag().unwrap_or("latest").to_owned())
            } else {
                (item.dst.clone(), name)
            };
            let m = item.dst.get_manifest(&old.digest.to_string()).await?;
            self.transfer
                .copy_manifest(&item.dst, &repo, &m, Some(&tag), &CopyOptions::default())
                .await?;
            Ok(format!("{repo}:{tag}"))
        }
        .await;
        match result {
            Ok(to) => {
                tracing::info!(target = %format!("{}:{}", item.dst, item.dst_tag), backup = %to, "Backed up the old image");
                Some(to)
            }
            Err(e) => {
                tracing::warn!(target = %format!("{}:{}", item.dst, item.dst_tag), error = %e, "Backup failed; syncing anyway");
                None
            }
        }
    }

    /// regsync's `ratelimit`: while the source reports fewer pulls left than `min`, wait
    /// `retry` and look again.
    async fn slot_within_rate_limit(
        &self,
        entry: &SyncEntry,
        item: &Item,
        head: Option<&ManifestHead>,
    ) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let mut remaining = head.and_then(|h| h.rate_limit).map(|r| r.remaining);
        loop {
            let slot = self.copy_slots.acquire().await.ok_or(Error::Cancelled)?;
            let Some(left) =
                remaining.filter(|left| entry.ratelimit.min > 0 && *left < entry.ratelimit.min)
            else {
                return Ok(slot);
            };
            // Wait without holding a copy slot, so entries on other registries go on.
            drop(slot);
            tracing::warn!(
                source = %item.src,
                remaining = left,
                min = entry.ratelimit.min,
                wait = %regferry_config::duration::humanize(entry.ratelimit.retry),
                "Delaying for rate limit"
            );
            tokio::time::sleep(entry.ratelimit.retry.max(Duration::from_secs(1))).await;
            // regsync relies on Docker Hub not counting HEADs as pulls; so do we.
            remaining = item
                .src
                .head_manifest(&item.src_ref)
                .await?
                .and_then(|h| h.rate_limit)
                .map(|r| r.remaining);
        }
    }
}

/// Tags worked on at once across entries, for `copies` image copies at once: room for every
/// copy and for comparisons beside them (an entry compares up to [`CHECK_CONCURRENCY`] of
/// its tags at once, so at least two entries compare at once).
fn tag_slots(copies: usize) -> usize {
    (copies * 4).max(2 * CHECK_CONCURRENCY)
}

/// Blobs in flight for `copies` image copies: enough to fill the network, bounded so
/// memory stays flat.
fn blob_slots(copies: usize) -> usize {
    (copies * 4).clamp(4, 32)
}

fn reference_of(e: &Endpoint) -> String {
    match e {
        Endpoint::Registry(r) => r.manifest_reference(),
        Endpoint::OciDir { tag, .. } => tag.clone().unwrap_or_else(|| "latest".into()),
        Endpoint::Namespace { .. } => "latest".into(),
    }
}

fn tag_of(e: &Endpoint) -> Option<String> {
    match e {
        Endpoint::Registry(r) => r.tag().map(str::to_owned),
        Endpoint::OciDir { tag, .. } => tag.clone(),
        Endpoint::Namespace { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regferry_config::template::SystemHost;

    fn config(parallel: u32) -> Arc<Config> {
        let yaml = format!(
            "defaults:\n  parallel: {parallel}\nsync:\n  - source: localhost:5000/a\n    target: localhost:5001/a\n    type: repository\n    interval: 1h\n"
        );
        let loaded = regferry_config::load_str(&yaml, "t.yaml", &SystemHost).expect("config");
        Arc::new(loaded.config)
    }

    #[tokio::test]
    async fn a_reloaded_engine_shares_the_slots_and_copy_engine_resized() {
        let first = Engine::new(config(4));
        let second = Engine::succeeding(config(6), None, &first);
        assert!(Arc::ptr_eq(&first.copy_slots, &second.copy_slots));
        assert!(Arc::ptr_eq(&first.transfer, &second.transfer));
        assert_eq!(second.copy_slots.available(), 6);
    }
}
