//! What a run found and did, per entry and per tag; rendered by the CLI as a table or JSON.
use std::time::Duration;

use regferry_transfer::StatsSnapshot;
use serde::Serialize;

/// The state of one tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The target does not have the tag.
    Missing,
    /// The target's tag points at different content.
    Changed,
    /// The target already has the same digest.
    UpToDate,
    /// Not copied on purpose (`--missing` with an existing tag, a media type not selected).
    Skipped,
    /// Not copied because the source image does not meet the entry's `require`; the
    /// target keeps what it had. Not a failure (unless `--abort-on-error`).
    Held,
    /// Checking or copying failed.
    Failed,
}

impl State {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Missing => "missing",
            State::Changed => "changed",
            State::UpToDate => "up-to-date",
            State::Skipped => "skipped",
            State::Held => "held",
            State::Failed => "failed",
        }
    }
}

/// One source image and its target.
#[derive(Debug, Clone, Serialize)]
pub struct TagReport {
    /// Source reference.
    pub source: String,
    /// Target reference.
    pub target: String,
    /// What was found.
    pub state: State,
    /// Whether it was copied in this run.
    pub copied: bool,
    /// Why (for skipped and failed tags, and changed digests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The source digest (for `platform`/`platforms`, the digest the target will have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// The target digest before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_digest: Option<String>,
    /// Referrers copied (or, for `check`, missing on the target).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<ReferrerReport>,
    /// Digest tags (`sha256-<hex>.sig` …) copied (or, for `check`, missing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub digest_tags: Vec<String>,
    /// Where the overwritten image was kept, when `backup` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
}

impl TagReport {
    /// A report for `source` → `target` that nothing has been found about yet: failed,
    /// until the run says otherwise.
    pub fn new(source: String, target: String) -> TagReport {
        TagReport {
            source,
            target,
            state: State::Failed,
            copied: false,
            reason: None,
            source_digest: None,
            target_digest: None,
            referrers: Vec::new(),
            digest_tags: Vec::new(),
            backup: None,
        }
    }
}

/// A referrer of an image.
#[derive(Debug, Clone, Serialize)]
pub struct ReferrerReport {
    /// The manifest it refers to.
    pub subject: String,
    /// The referrer's digest.
    pub digest: String,
    /// Its artifact type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The repository it was read from.
    pub source: String,
}

/// One sync entry.
#[derive(Debug, Clone, Serialize)]
pub struct EntryReport {
    /// Index in `sync`.
    pub index: usize,
    /// The entry's name (as in metrics and the admin API).
    pub name: String,
    /// What a person calls it: its `name` when the file gives one, else `sync[i]`.
    #[serde(skip)]
    pub display_name: String,
    /// Source → target.
    pub label: String,
    /// The tags looked at, sorted by target.
    pub tags: Vec<TagReport>,
    /// Source tags that passed the filters but not the `latest` count, so were not looked at.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outside_latest: Vec<String>,
    /// Target tags `prune` deleted (in `check`: would delete), as references.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
    /// An error that stopped the entry as a whole (listing the source failed), or its prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Per entry.
    pub entries: Vec<EntryReport>,
    /// What moved.
    #[serde(skip)]
    pub stats: StatsSnapshot,
    /// How long it took.
    #[serde(skip)]
    pub duration: Duration,
}

impl RunReport {
    /// Tags and entries that failed.
    pub fn failures(&self) -> usize {
        self.entries
            .iter()
            .map(|e| {
                usize::from(e.error.is_some())
                    + e.tags.iter().filter(|t| t.state == State::Failed).count()
            })
            .sum()
    }

    /// Tags whose target differs from the source (before this run), counting tags whose
    /// referrers or digest tags are missing, and target tags `prune` deletes.
    pub fn drift(&self) -> usize {
        self.count(|t| {
            matches!(t.state, State::Missing | State::Changed)
                || !t.referrers.is_empty()
                || !t.digest_tags.is_empty()
        }) + self.entries.iter().map(|e| e.pruned.len()).sum::<usize>()
    }

    /// Referrers copied (or missing, for `check`).
    pub fn referrers(&self) -> usize {
        self.entries
            .iter()
            .flat_map(|e| &e.tags)
            .map(|t| t.referrers.len())
            .sum()
    }

    /// Tags copied in this run.
    pub fn copied(&self) -> usize {
        self.count(|t| t.copied)
    }

    /// Tags in a given state.
    pub fn count(&self, f: impl Fn(&TagReport) -> bool) -> usize {
        self.entries
            .iter()
            .flat_map(|e| &e.tags)
            .filter(|t| f(t))
            .count()
    }
}
