//! `prune` (regferry extension): after a run that read the source's tag list completely,
//! delete the target tags in the entry's scope that the source no longer has.
//!
//! What is never deleted: tags outside the entry's tag filters (other tags of the repository
//! are not the entry's), `sha256-…` tags (referrers fallback indexes, `digestTags`), any tag
//! when the target could not be listed, and anything at all in a repository where more than
//! `maxDelete` would go. Backups written into the target repository itself cannot be told
//! from the tags to delete, so such an entry does not prune.
//!
//! In an OCI layout, a deleted tag leaves its blobs; they are collected right after, under
//! the layout's index lock, but only while no other entry of this process is copying into
//! the same layout (its blobs may be on disk before its manifest is in the index), and
//! never a blob younger than [`KEEP_FRESH`] (another process may be copying; a copy that
//! reuses a blob touches it).
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use regferry_config::template::SystemHost;
use regferry_config::{Endpoint, Prune, RefFields, SyncEntry};
use regferry_registry::ocidir::OciLayout;
use regferry_registry::repo::Repo;
use regferry_registry::{Reference, TagList};

use super::{Engine, Mode, RunOptions};
use crate::report::EntryReport;

/// What one repository's prune will do: the tags to delete, or why none are.
pub(super) struct PrunePlan {
    pub(super) dst: Repo,
    /// Which of the entry's targets `dst` belongs to.
    pub(super) to: usize,
    pub(super) tags: Result<Vec<String>, String>,
}

/// The plan for `dst`, given the tags the source's listing selected and the target's listing
/// (`None` when the target could not be listed).
pub(super) fn plan(
    entry: &SyncEntry,
    prune: Prune,
    dst: &Repo,
    to: usize,
    selected: &HashSet<&str>,
    have: Option<&TagList>,
) -> PrunePlan {
    let tags = match have {
        None => Err(format!(
            "not pruned: the tags of {dst} could not be listed, so what the source no longer has is unknown"
        )),
        Some(have) => {
            let in_scope: Vec<&String> = have
                .iter()
                .filter(|t| !is_digest_tag(t) && entry.tags.matches(t))
                .collect();
            let mut delete: Vec<String> = in_scope
                .iter()
                .filter(|t| !selected.contains(t.as_str()))
                .map(|t| (*t).clone())
                .collect();
            delete.sort();
            let limit = prune.max_delete.limit(in_scope.len());
            if selected.is_empty() && !delete.is_empty() {
                // A source that suddenly selects nothing (a permission problem answering an
                // empty list, a migration) would otherwise drain the target a few tags a run.
                Err(format!(
                    "not pruned: the source selected no tags at all, while {dst} has {} in scope; nothing was deleted",
                    in_scope.len()
                ))
            } else if delete.len() > limit {
                Err(format!(
                    "not pruned: {} of the {} tags in scope in {dst} are gone from the source, more than prune.maxDelete {} allows ({limit}); nothing was deleted. Raise prune.maxDelete to let the run delete them",
                    delete.len(),
                    in_scope.len(),
                    prune.max_delete,
                ))
            } else {
                Ok(delete)
            }
        }
    };
    PrunePlan {
        dst: dst.clone(),
        to,
        tags,
    }
}

/// `sha256-…` and `sha512-…` tags: referrers fallback indexes and `digestTags`
/// (`sha256-<hex>.sig`), which go with images, not with the source's tag list.
fn is_digest_tag(tag: &str) -> bool {
    tag.starts_with("sha256-") || tag.starts_with("sha512-")
}

impl Engine {
    /// Deletes what the plans say (in `check`, lists it), after the entry's copies. A run in
    /// which a tag failed deletes nothing in that target (`failed`: how many tags failed,
    /// by target): the source or the target may not be what they seem, and a deleted tag
    /// cannot be taken back. With `targets`, the other targets prune.
    pub(super) async fn prune(
        &self,
        entry: &SyncEntry,
        opts: RunOptions,
        plans: Vec<PrunePlan>,
        failed: &[usize],
        report: &mut EntryReport,
    ) {
        let mut errors = Vec::new();
        for plan in plans {
            let tags = match plan.tags {
                Ok(tags) => tags,
                Err(reason) => {
                    tracing::error!(entry = %entry.name, target = %plan.dst, "{reason}");
                    errors.push(reason);
                    continue;
                }
            };
            if tags.is_empty() {
                continue;
            }
            if opts.mode == Mode::Check {
                report
                    .pruned
                    .extend(tags.iter().map(|t| format!("{}:{t}", plan.dst)));
                continue;
            }
            let failed = failed.get(plan.to).copied().unwrap_or(0);
            if failed > 0 {
                tracing::warn!(entry = %entry.name, target = %plan.dst, failed, would_delete = tags.len(), "Not pruning: tags failed in this run");
                continue;
            }
            let mut deleted = 0;
            for tag in tags {
                if self.cancelled.is_cancelled() {
                    return;
                }
                match plan.dst.delete_tag(&tag).await {
                    // Gone already (another writer): nothing was deleted here.
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::info!(entry = %entry.name, target = %format!("{}:{tag}", plan.dst), "Pruned: the source no longer has the tag");
                        report.pruned.push(format!("{}:{tag}", plan.dst));
                        deleted += 1;
                    }
                    Err(e) => {
                        let reason = format!("pruning {}:{tag} failed: {e}", plan.dst);
                        tracing::error!(entry = %entry.name, "{reason}");
                        errors.push(reason);
                        break;
                    }
                }
            }
            if deleted > 0
                && let Repo::Layout(layout) = &plan.dst
            {
                self.collect_layout(entry, layout).await;
            }
        }
        if !errors.is_empty() {
            let joined = errors.join("; ");
            report.error = Some(match report.error.take() {
                Some(e) => format!("{e}; {joined}"),
                None => joined,
            });
        }
    }

    /// Whether the entry's `backup` writes into `dst` itself, where backups would look like
    /// tags the source does not have. A template that cannot be rendered counts as "yes".
    pub(super) fn backs_up_into(&self, entry: &SyncEntry, dst: &Repo) -> bool {
        let Some(b) = &entry.backup else {
            return false;
        };
        let (registry, repository) = match dst {
            Repo::Registry { client, name, .. } => (client.registry().to_owned(), name.clone()),
            Repo::Layout(l) => (String::new(), l.root().display().to_string()),
        };
        let fields = RefFields {
            reference: format!("{dst}:prune-check"),
            registry,
            repository,
            tag: "prune-check".to_owned(),
            digest: format!("sha256:{}", "0".repeat(64)),
        };
        let Ok(name) = b.render_fields(&fields, entry, &SystemHost) else {
            return true;
        };
        if !name.contains(':') && !name.contains('/') {
            return true;
        }
        let Ok(r) = Reference::parse(&name) else {
            return true;
        };
        self.clients
            .repo(&Endpoint::Registry(r), None)
            .map_or(true, |repo| repo.key() == dst.key())
    }
}

/// Blobs younger than this are never collected: a copy by another process may not have
/// put its manifest into the index yet. Copies touch a layout blob they reuse, so an old
/// blob another process's image is about to name is young again.
const KEEP_FRESH: Duration = Duration::from_secs(24 * 3600);

/// How many entries are running into each OCI layout directory right now.
#[derive(Debug, Clone, Default)]
pub(super) struct LayoutWriters(Arc<Mutex<HashMap<PathBuf, usize>>>);

/// One entry running into a layout; leaving it is dropping this.
pub(super) struct Writing {
    writers: LayoutWriters,
    root: Option<PathBuf>,
}

impl LayoutWriters {
    /// Counts an entry whose target is `target` as running, if that is an OCI layout.
    pub(super) fn enter(&self, target: &Endpoint) -> Writing {
        let root = match target {
            Endpoint::OciDir { path, .. } => Some(layout_key(path)),
            _ => None,
        };
        if let (Some(root), Ok(mut m)) = (&root, self.0.lock()) {
            *m.entry(root.clone()).or_insert(0) += 1;
        }
        Writing {
            writers: self.clone(),
            root,
        }
    }

    /// Whether at most one entry (the caller) is running into `root`.
    fn alone(&self, root: &std::path::Path) -> bool {
        self.0
            .lock()
            .map(|m| m.get(&layout_key(root)).copied().unwrap_or(0) <= 1)
            .unwrap_or(false)
    }
}

/// One key for one directory however it is written (`out`, `./out`, a symlink): its
/// canonical path, or its parent's joined with its name while it does not exist yet.
fn layout_key(path: &std::path::Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                parent
            };
            std::fs::canonicalize(parent)
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if let (Some(root), Ok(mut m)) = (&self.root, self.writers.0.lock())
            && let Some(n) = m.get_mut(root)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(root);
            }
        }
    }
}

impl Engine {
    /// Deletes the blobs of `layout` that its index no longer reaches, after a prune, when
    /// no other entry is copying into it. A failure only warns: the tags are gone, and the
    /// next prune collects again.
    pub(super) async fn collect_layout(&self, entry: &SyncEntry, layout: &OciLayout) {
        if !self.layout_writers.alone(layout.root()) {
            tracing::info!(entry = %entry.name, layout = %layout.root().display(), "Not collecting the pruned images' blobs: another entry is copying into this layout");
            return;
        }
        let keep = SystemTime::now()
            .checked_sub(KEEP_FRESH)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match layout.collect_garbage(keep).await {
            Ok(c) => {
                tracing::info!(entry = %entry.name, layout = %layout.root().display(), blobs = c.blobs, bytes = c.bytes, "Collected the blobs nothing references any more");
            }
            Err(e) => {
                tracing::warn!(entry = %entry.name, layout = %layout.root().display(), error = %e, "Collecting unreferenced blobs failed");
            }
        }
    }
}
