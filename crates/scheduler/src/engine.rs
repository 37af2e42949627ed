//! Running sync entries: list, compare, copy.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use regferry_config::{Config, Endpoint, SyncEntry, SyncKind};
use regferry_registry::http::ManifestHead;
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Error, Manifest, Result};
use regferry_transfer::{CopyOptions, Transfer, select_platform};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::clients::Clients;
use crate::report::{EntryReport, RunReport, State, TagReport};

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
    copy_slots: Semaphore,
}

/// One image to look at: where it comes from and where it goes.
struct Item {
    src: Repo,
    src_ref: String,
    dst: Repo,
    dst_tag: String,
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
        let slots = config.globals.copy_slots();
        Engine {
            clients: Clients::new(config.clone()),
            // Blobs in flight: enough to fill the network, bounded so memory stays flat.
            transfer: Arc::new(Transfer::new((slots * 4).clamp(4, 32))),
            copy_slots: Semaphore::new(slots),
            config,
        }
    }

    /// The copy engine, for live counters.
    pub fn transfer(&self) -> &Transfer {
        &self.transfer
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
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
        let mut report = EntryReport {
            index: entry.index,
            label: format!("{} -> {}", entry.source, entry.target),
            tags: Vec::new(),
            error: None,
        };
        if abort.load(Ordering::Relaxed) {
            report.error = Some("not run: an earlier failure aborted the run".into());
            return report;
        }
        let items = match self.items(entry, opts.mode).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(entry = entry.index, source = %entry.source, error = %e, "Listing the source failed");
                report.error = Some(e.to_string());
                if opts.abort_on_error {
                    abort.store(true, Ordering::Relaxed);
                }
                return report;
            }
        };
        if items.is_empty() {
            tracing::warn!(entry = entry.index, source = %entry.source, "No tags matched the filters");
        }
        report.tags = stream::iter(
            items
                .into_iter()
                .map(|item| self.process(entry, item, opts, abort)),
        )
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
        report.tags.sort_by(|a, b| a.target.cmp(&b.target));
        report
    }

    /// The images an entry covers, after listing and filtering.
    async fn items(&self, entry: &SyncEntry, mode: Mode) -> Result<Vec<Item>> {
        match entry.kind {
            SyncKind::Image => {
                let src = self.clients.repo(&entry.source, None)?;
                let dst = self.clients.repo(&entry.target, None)?;
                let src_ref = reference_of(&entry.source);
                let dst_tag = tag_of(&entry.target)
                    .or_else(|| tag_of(&entry.source))
                    .unwrap_or_else(|| "latest".to_owned());
                Ok(vec![Item {
                    src,
                    src_ref,
                    dst,
                    dst_tag,
                }])
            }
            SyncKind::Repository => {
                let src = self.clients.repo(&entry.source, None)?;
                let dst = self.clients.repo(&entry.target, None)?;
                self.repo_items(entry, src, dst, mode).await
            }
            SyncKind::Registry => {
                let Endpoint::Namespace { registry, prefix } = &entry.source else {
                    return Err(Error::Protocol {
                        what: entry.source.to_string(),
                        reason: "type registry needs a registry source".into(),
                    });
                };
                let client = self.clients.registry(registry)?;
                let mut repos = client.catalog().await?;
                repos.retain(|r| prefix.is_empty() || r.starts_with(&format!("{prefix}/")));
                repos.retain(|r| entry.repos.matches(r));
                repos.sort();
                let mut items = Vec::new();
                for repo in repos {
                    let src = self.clients.repo(&entry.source, Some(&repo))?;
                    // With a source prefix, the target gets the path below it.
                    let rel = if prefix.is_empty() {
                        repo.as_str()
                    } else {
                        repo.strip_prefix(&format!("{prefix}/")).unwrap_or(&repo)
                    };
                    let dst = self.clients.repo(&entry.target, Some(rel))?;
                    items.extend(self.repo_items(entry, src, dst, mode).await?);
                }
                Ok(items)
            }
        }
    }

    async fn repo_items(
        &self,
        entry: &SyncEntry,
        src: Repo,
        dst: Repo,
        mode: Mode,
    ) -> Result<Vec<Item>> {
        let mut tags = src.list_tags().await?;
        tags.retain(|t| entry.tags.matches(t));
        tags.sort();
        if let Mode::Copy { missing_only: true } = mode {
            // "Exists" means the tag exists, even if stale; a failed target listing counts as empty.
            match dst.list_tags().await {
                Ok(have) => {
                    let have: std::collections::HashSet<String> = have.into_iter().collect();
                    tags.retain(|t| !have.contains(t));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(target = %dst, error = %e, "Listing the target failed; treating it as empty")
                }
            }
        }
        Ok(tags
            .into_iter()
            .map(|t| Item {
                src: src.clone(),
                src_ref: t.clone(),
                dst: dst.clone(),
                dst_tag: t,
            })
            .collect())
    }

    async fn process(
        &self,
        entry: &SyncEntry,
        item: Item,
        opts: RunOptions,
        abort: &AtomicBool,
    ) -> TagReport {
        let mut report = TagReport {
            source: format!("{}:{}", item.src, item.src_ref).replace(":sha256:", "@sha256:"),
            target: format!("{}:{}", item.dst, item.dst_tag),
            state: State::Failed,
            copied: false,
            reason: None,
            source_digest: None,
            target_digest: None,
        };
        if abort.load(Ordering::Relaxed) {
            report.reason = Some("not run: an earlier failure aborted the run".into());
            return report;
        }
        let decision = match self.decide(entry, &item, opts.mode).await {
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
        if !wants_copy || opts.mode == Mode::Check {
            if wants_copy {
                tracing::info!(source = %report.source, target = %report.target, state = decision.state.as_str(), "Image sync needed");
            }
            return report;
        }
        match self.copy(entry, &item, decision).await {
            Ok(()) => {
                report.copied = true;
                tracing::info!(source = %report.source, target = %report.target, "Copied");
                report
            }
            Err(e) => self.failed(report, e, opts, abort),
        }
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

    async fn decide(&self, entry: &SyncEntry, item: &Item, mode: Mode) -> Result<Decision> {
        let (source, target) = tokio::join!(
            item.src.head_manifest(&item.src_ref),
            item.dst.head_manifest(&item.dst_tag)
        );
        let source = source?.ok_or_else(|| Error::NotFound {
            what: format!("{}:{}", item.src, item.src_ref),
        })?;
        // As in regsync, any error reading the target counts as "not there"; the copy will
        // report a real problem.
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(target = %item.dst, error = %e, "Target HEAD failed; treating as missing");
                None
            }
        };
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
            let index = item.src.get_manifest(&source.digest.to_string()).await?;
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
                    item.src.get_manifest(&child.digest.to_string()).await?
                }
                None => regferry_transfer::filter_index(&index, &entry.platforms, &item.src_ref)?,
            };
            want = m.digest.clone();
            d.manifest = Some(m);
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

    async fn copy(&self, entry: &SyncEntry, item: &Item, decision: Decision) -> Result<()> {
        let _slot = self
            .copy_slots
            .acquire()
            .await
            .map_err(|_| Error::Cancelled)?;
        self.wait_for_rate_limit(entry, item, decision.source.as_ref())
            .await?;
        let manifest = match decision.manifest {
            Some(m) => m,
            None => {
                let digest = decision.source.as_ref().map(|h| h.digest.to_string());
                item.src
                    .get_manifest(digest.as_deref().unwrap_or(&item.src_ref))
                    .await?
            }
        };
        let opts = CopyOptions {
            include_external: entry.include_external,
            force_recursive: entry.force_recursive,
            // `platforms` was applied while deciding; the manifest is already the filtered index.
            platforms: Vec::new(),
        };
        self.transfer
            .copy_manifest(&item.src, &item.dst, &manifest, Some(&item.dst_tag), &opts)
            .await?;
        Ok(())
    }

    /// regsync's `ratelimit`: while the source reports fewer pulls left than `min`, wait
    /// `retry` and look again.
    async fn wait_for_rate_limit(
        &self,
        entry: &SyncEntry,
        item: &Item,
        head: Option<&ManifestHead>,
    ) -> Result<()> {
        if entry.ratelimit.min == 0 {
            return Ok(());
        }
        let mut remaining = head.and_then(|h| h.rate_limit).map(|r| r.remaining);
        while let Some(left) = remaining
            && left < entry.ratelimit.min
        {
            tracing::warn!(
                source = %item.src,
                remaining = left,
                min = entry.ratelimit.min,
                wait = %regferry_config::duration::humanize(entry.ratelimit.retry),
                "Delaying for rate limit"
            );
            tokio::time::sleep(entry.ratelimit.retry.max(Duration::from_secs(1))).await;
            remaining = item
                .src
                .head_manifest(&item.src_ref)
                .await?
                .and_then(|h| h.rate_limit)
                .map(|r| r.remaining);
        }
        Ok(())
    }
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
