//! `prune` (regferry extension): after a run that read the source's tag list completely,
//! delete the target tags in the entry's scope that the source no longer has.
//!
//! What is never deleted: tags outside the entry's tag filters (other tags of the repository
//! are not the entry's), `sha256-…` tags (referrers fallback indexes, `digestTags`), any tag
//! when the target could not be listed, and anything at all in a repository where more than
//! `maxDelete` would go. Backups written into the target repository itself cannot be told
//! from the tags to delete, so such an entry does not prune.
use std::collections::HashSet;

use regferry_config::template::SystemHost;
use regferry_config::{Endpoint, Prune, RefFields, SyncEntry};
use regferry_registry::repo::Repo;
use regferry_registry::{Reference, TagList};

use super::Engine;

/// What one repository's prune will do: the tags to delete, or why none are.
pub(super) struct PrunePlan {
    pub(super) dst: Repo,
    pub(super) tags: Result<Vec<String>, String>,
}

/// The plan for `dst`, given the tags the source's listing selected and the target's listing
/// (`None` when the target could not be listed).
pub(super) fn plan(
    entry: &SyncEntry,
    prune: Prune,
    dst: &Repo,
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
                .filter(|t| !t.starts_with("sha256-") && entry.tags.matches(t))
                .collect();
            let mut delete: Vec<String> = in_scope
                .iter()
                .filter(|t| !selected.contains(t.as_str()))
                .map(|t| (*t).clone())
                .collect();
            delete.sort();
            let limit = prune.max_delete.limit(in_scope.len());
            if delete.len() > limit {
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
        tags,
    }
}

impl Engine {
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
