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
use regferry_transfer::{CopyOptions, GraphLimits, Slots, Transfer, select_platform};
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
/// `reqConcurrent` still applies).
const CHECK_CONCURRENCY: usize = 16;

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
            label: format!("{} -> {}", entry.source, entry.target),
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
        let _writing = self.layout_writers.enter(&entry.target);
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
        // however many run at once.
        report.tags = stream::iter(items.into_iter().map(|item| async move {
            let _slot = self.tag_slots.acquire().await;
            Box::pin(self.process(entry, item, opts, abort, memo)).await
        }))
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
        report.tags.sort_by(|a, b| a.target.cmp(&b.target));
        self.prune(entry, opts, prunes, &mut report).await;
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
                let dst = self.clients.repo(&entry.target, None)?;
                let src_ref = reference_of(&entry.source);
                let dst_tag = tag_of(&entry.target)
                    .or_else(|| tag_of(&entry.source))
                    .unwrap_or_else(|| "latest".to_owned());
                Ok(Selected {
                    items: vec![Item {
                        src,
                        src_ref,
                        dst,
                        dst_tag,
                    }],
                    matched: 1,
                    outside_latest: Vec::new(),
                    prunes: Vec::new(),
                })
            }
            SyncKind::Repository => {
                let src = self.clients.repo(&entry.source, None)?;
                let dst = self.clients.repo(&entry.target, None)?;
                self.repo_items(entry, src, dst, mode, only, memo).await
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
                    let dst = self.clients.repo(&entry.target, Some(rel))?;
                    let one = self.repo_items(entry, src, dst, mode, only, memo).await?;
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
        dst: Repo,
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
        // One listing of the target replaces a HEAD for each tag it lacks, and tells a new
        // repository (no tags) from one that has most blobs already. A webhook's single tag
        // costs one HEAD instead.
        let list_target = only.tag.is_none() || mode == (Mode::Copy { missing_only: true });
        let listed_at = Instant::now();
        // Which versions are the `latest` depends on every tag, so a webhook's tag is judged
        // against the whole listing.
        let whole_listing = only.tag.is_none() || entry.tags.has_latest();
        let (listed, have) = tokio::join!(
            async {
                match &only.tag {
                    Some(t) if !whole_listing => Ok(vec![t.clone()]),
                    _ => src.list_tags().await,
                }
            },
            async {
                if list_target {
                    Some(memo.target_tags(&dst).await)
                } else {
                    None
                }
            }
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
        // Only a full run prunes: not `--missing`, not a webhook's single tag.
        let mut prunes = Vec::new();
        if let Some(p) = entry.prune
            && mode != (Mode::Copy { missing_only: true })
            && only.tag.is_none()
        {
            let plan = if self.backs_up_into(entry, &dst) {
                prune::PrunePlan {
                    dst: dst.clone(),
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
                prune::plan(entry, p, &dst, &chosen, listing)
            };
            prunes.push(plan);
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
        Ok(Selected {
            items: tags
                .into_iter()
                .map(|t| Item {
                    src: src.clone(),
                    src_ref: t.clone(),
                    dst: dst.clone(),
                    dst_tag: t,
                })
                .collect(),
            matched,
            outside_latest,
            prunes,
        })
    }

    async fn process(
        &self,
        entry: &SyncEntry,
        item: Item,
        opts: RunOptions,
        abort: &AtomicBool,
        memo: &RunMemo,
    ) -> TagReport {
        // A cancelled run drops the tag's work wherever it is (a retry's backoff, a blob
        // half streamed); the upload sessions it leaves open are cancelled by the caller.
        let report = tokio::select! {
            r = self.process_inner(entry, &item, opts, abort, memo) => r,
            () = self.cancelled.cancelled() => {
                let mut r = item.report();
                r.state = State::Skipped;
                r.reason = Some("not finished: the run was interrupted".into());
                r
            }
        };
        self.tags_done.fetch_add(1, Ordering::Relaxed);
        report
    }

    async fn process_inner(
        &self,
        entry: &SyncEntry,
        item: &Item,
        opts: RunOptions,
        abort: &AtomicBool,
        memo: &RunMemo,
    ) -> TagReport {
        let mut report = item.report();
        if abort.load(Ordering::Relaxed) {
            report.reason = Some("not run: an earlier failure aborted the run".into());
            return report;
        }
        if self.stopping.load(Ordering::Relaxed) {
            report.state = State::Skipped;
            report.reason = Some("not run: shutting down".into());
            return report;
        }
        let decision = match self.decide(entry, item, opts.mode, memo).await {
            Ok(d) => d,
            Err(e) => return self.failed(report, e, opts, abort),
        };
        report.state = decision.state;
        report.reason.clone_from(&decision.reason);
        report.source_digest = decision.source.as_ref().map(|h| h.digest.to_string());
        report.target_digest = decision.target.as_ref().map(|h| h.digest.to_string());
        if let Some(m) = &decision.manifest {
            report.source_digest = Some(m.digest.to_string());
        }
        let wants_copy = matches!(decision.state, State::Missing | State::Changed);
        if wants_copy && let Some(req) = &entry.require {
            let Some(head) = &decision.source else {
                let e = Error::Protocol {
                    what: format!("{}:{}", item.src, item.src_ref),
                    reason: "no source digest to check `require` against".into(),
                };
                return self.failed(report, e, opts, abort);
            };
            match self.unmet(entry, item, req, head).await {
                Ok(None) => {}
                Ok(Some(reason)) => {
                    tracing::warn!(source = %report.source, target = %report.target, reason = %reason, "Held: the image does not meet the entry's require");
                    report.state = State::Held;
                    report.reason = Some(reason);
                    if opts.abort_on_error {
                        abort.store(true, Ordering::Relaxed);
                    }
                    return report;
                }
                Err(e) => return self.failed(report, e, opts, abort),
            }
        }
        let dry_run = opts.mode == Mode::Check;
        if wants_copy && dry_run {
            tracing::info!(source = %report.source, target = %report.target, state = %decision.state.as_str(), "Image sync needed");
        }
        // Referrers and digest tags are refreshed for copied images, and for unchanged ones
        // unless fastCheck says a matching digest is enough.
        let refresh = matches!(decision.state, State::UpToDate) && !entry.fast_check;
        if !wants_copy && !refresh {
            return report;
        }
        if !entry.referrers && !entry.digest_tags && !wants_copy {
            return report;
        }
        let mut copied_manifest = decision.manifest.clone();
        // Image first, tag last: with referrers or digest tags to copy, the image is pushed
        // by digest, then those, then the tag. A tag whose referrers failed keeps its old
        // image, so a consumer verifying signatures never sees the new one without them.
        // An image the source is known to keep no referrers for is pushed with its tag at
        // once: one manifest PUT instead of two.
        let tag_last = entry.digest_tags
            || (entry.referrers
                && wants_copy
                && self.may_have_referrers(entry, item, &decision, memo).await);
        let mut untagged = None;
        if wants_copy && !dry_run {
            match self.copy(entry, item, &decision, memo, !tag_last).await {
                Ok((m, backup)) => {
                    report.backup = backup;
                    if tag_last {
                        untagged = Some(m.clone());
                    } else {
                        report.copied = true;
                        tracing::info!(source = %report.source, target = %report.target, "Copied");
                    }
                    copied_manifest = Some(m);
                }
                Err(e) if e.is_cancelled() && self.stopping.load(Ordering::Relaxed) => {
                    report.state = State::Skipped;
                    report.reason = Some("not run: shutting down".into());
                    return report;
                }
                Err(e) => return self.failed(report, e, opts, abort),
            }
        }
        if entry.referrers || entry.digest_tags {
            match self
                .extras(
                    entry,
                    item,
                    &decision,
                    copied_manifest.as_ref(),
                    dry_run,
                    memo,
                )
                .await
            {
                Ok((referrers, digest_tags)) => {
                    report.referrers = referrers;
                    report.digest_tags = digest_tags;
                }
                Err(e) => return self.failed(report, e, opts, abort),
            }
        }
        if let Some(m) = untagged {
            match item.dst.put_manifest(Some(&item.dst_tag), &m).await {
                Ok(_) => {
                    report.copied = true;
                    tracing::info!(source = %report.source, target = %report.target, "Copied");
                }
                Err(e) => return self.failed(report, e, opts, abort),
            }
        }
        report
    }

    fn failed(
        &self,
        mut report: TagReport,
        e: Error,
        opts: RunOptions,
        abort: &AtomicBool,
    ) -> TagReport {
        tracing::error!(source = %report.source, target = %report.target, error = %e, "Failed to sync");
        report.state = State::Failed;
        report.reason = Some(e.to_string());
        if opts.abort_on_error {
            abort.store(true, Ordering::Relaxed);
        }
        report
    }

    async fn decide(
        &self,
        entry: &SyncEntry,
        item: &Item,
        mode: Mode,
        memo: &RunMemo,
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
        let source = async {
            if !fetch {
                return Ok((item.src.head_manifest(&item.src_ref).await?, None));
            }
            let m = match item.src.get_manifest(&item.src_ref).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => return Ok((None, None)),
                Err(e) => return Err(e),
            };
            let head = ManifestHead {
                digest: m.digest.clone(),
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
                rate_limit: None,
            };
            Ok((Some(head), Some(m)))
        };
        let (source, target) = tokio::join!(source, target);
        let (source, mut fetched) = source?;
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
            let index = match fetched.take() {
                Some(m) => m,
                None => bound(
                    item.src.get_manifest(&source.digest.to_string()).await?,
                    &source.digest,
                )?,
            };
            let m = match &entry.platform {
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
            };
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

    async fn copy(
        &self,
        entry: &SyncEntry,
        item: &Item,
        decision: &Decision,
        memo: &RunMemo,
        tag_it: bool,
    ) -> Result<(Manifest, Option<String>)> {
        let _slot = self
            .slot_within_rate_limit(entry, item, decision.source.as_ref())
            .await?;
        if self.stopping.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let manifest = match &decision.manifest {
            Some(m) => m.clone(),
            None => match &decision.source {
                // What is copied is what was compared (and, with `require`, verified).
                Some(h) => bound(
                    item.src.get_manifest(&h.digest.to_string()).await?,
                    &h.digest,
                )?,
                None => item.src.get_manifest(&item.src_ref).await?,
            },
        };
        if entry.require.is_some() && manifest.media_type == media_type::DOCKER_SCHEMA1_SIGNED {
            return Err(Error::Protocol {
                what: format!("{}:{}", item.src, item.src_ref),
                reason: "a signed schema 1 manifest's bytes do not hash to its digest, so it cannot be bound to what `require` verified".into(),
            });
        }
        let backup = match (&entry.backup, &decision.target) {
            (Some(b), Some(old))
                if decision.state == State::Changed && old.digest != manifest.digest =>
            {
                self.backup(entry, b, item, old).await
            }
            _ => None,
        };
        let opts = CopyOptions {
            include_external: entry.include_external,
            force_recursive: entry.force_recursive,
            // `platforms` was applied while deciding; the manifest is already the filtered index.
            platforms: Vec::new(),
            new_target: memo.listed(&item.dst).await.is_some_and(|t| t.is_empty()),
            limits: self.graph_limits(),
        };
        let pushed = self
            .transfer
            .copy_manifest(
                &item.src,
                &item.dst,
                &manifest,
                tag_it.then_some(item.dst_tag.as_str()),
                &opts,
            )
            .await?;
        Ok((pushed, backup))
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
/// copy and for comparisons beside them (an entry compares up to 16 of its tags at once).
fn tag_slots(copies: usize) -> usize {
    (copies * 4).max(64)
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
