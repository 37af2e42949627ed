//! A repository's tags as one listing saw them, so that a run can skip requests about tags
//! a repository lacks. Tags this process writes after the listing are remembered, so the
//! listing never hides them (other processes' writes are not seen, as with any listing).
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use tokio::time::Instant;

use crate::repo::Repo;

/// Tag writes remembered, at most; beyond that the log starts again and listings made
/// before that moment are no longer trusted about absent tags.
const WRITES_KEPT: usize = 50_000;

struct WriteLog {
    at: HashMap<String, Instant>,
    /// When the log last started again, if it did.
    cleared: Option<Instant>,
}

static WRITES: LazyLock<Mutex<WriteLog>> = LazyLock::new(|| {
    Mutex::new(WriteLog {
        at: HashMap::new(),
        cleared: None,
    })
});

fn write_key(repo: &Repo, tag: &str) -> String {
    format!("{}:{tag}", repo.key())
}

/// Notes that this process wrote `tag` in `repo` (every tag write goes through here).
pub(crate) fn note_write(repo: &Repo, tag: &str) {
    let Ok(mut log) = WRITES.lock() else { return };
    if log.at.len() >= WRITES_KEPT {
        log.at.clear();
        log.cleared = Some(Instant::now());
    }
    log.at.insert(write_key(repo, tag), Instant::now());
}

fn written_since(repo: &Repo, tag: &str, t: Instant) -> bool {
    let Ok(log) = WRITES.lock() else { return true };
    log.cleared.is_some_and(|c| c > t) || log.at.get(&write_key(repo, tag)).is_some_and(|w| *w >= t)
}

/// The tags of one repository, and when they were listed.
#[derive(Debug, Clone)]
pub struct TagList {
    tags: HashSet<String>,
    listed_at: Instant,
}

impl TagList {
    /// A listing taken now.
    pub fn new(tags: impl IntoIterator<Item = String>) -> TagList {
        TagList::requested_at(tags, Instant::now())
    }

    /// A listing whose (first) request was sent at `at`: writes from then on are not
    /// trusted to be in it.
    pub fn requested_at(tags: impl IntoIterator<Item = String>, at: Instant) -> TagList {
        TagList {
            tags: tags.into_iter().collect(),
            listed_at: at,
        }
    }

    /// Whether the listing had `tag`.
    pub fn contains(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// Whether the listing was empty (a new repository).
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tags listed.
    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.tags.iter()
    }

    /// Whether `repo` (the repository listed) is known to lack `tag`: the listing did not
    /// have it, and this process has not written it since.
    pub fn lacks(&self, repo: &Repo, tag: &str) -> bool {
        !self.tags.contains(tag) && !written_since(repo, tag, self.listed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocidir::OciLayout;

    #[tokio::test]
    async fn a_tag_written_after_the_listing_is_not_lacking() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::Layout(OciLayout::new(dir.path()));
        let list = TagList::new(["a".to_owned()]);
        assert!(!list.lacks(&repo, "a"), "listed");
        assert!(list.lacks(&repo, "b"), "not listed, not written");
        note_write(&repo, "b");
        assert!(!list.lacks(&repo, "b"), "written after the listing");
    }
}
