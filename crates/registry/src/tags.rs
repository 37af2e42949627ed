//! A repository's tags as one listing saw them, so that a run can skip requests about tags
//! a repository lacks. Tags this process writes after the listing are remembered, so the
//! listing never hides them (other processes' writes are not seen, as with any listing).
use std::collections::HashSet;

use tokio::time::Instant;

use crate::repo::Repo;

/// Notes that this process wrote `tag` in `repo` (every tag write goes through here).
pub(crate) fn note_write(repo: &Repo, tag: &str) {
    repo.memory().note_write(repo.tag_key(tag));
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
        !self.tags.contains(tag)
            && !repo
                .memory()
                .written_since(&repo.tag_key(tag), self.listed_at)
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

    #[tokio::test]
    async fn a_write_to_one_host_says_nothing_of_another_of_the_same_name() {
        let repo_at = |hostname: &str| {
            let mut o = crate::http::HostOptions::new("mirror.example");
            o.hostname = hostname.to_owned();
            Repo::Registry {
                client: crate::http::RegistryClient::new(o).unwrap(),
                name: "app".into(),
                reads: Vec::new(),
            }
        };
        let (a, b) = (repo_at("a.example:5000"), repo_at("b.example:5000"));
        let list = TagList::new(Vec::new());
        note_write(&a, "t");
        assert!(!list.lacks(&a, "t"), "written to a");
        assert!(list.lacks(&b, "t"), "b was not written");
    }
}
