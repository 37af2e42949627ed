//! `require` (regferry extension): a policy gate before an image is copied. Each
//! `require.referrers` item needs at least one referrer of the image that it matches,
//! looked up where the entry's referrers come from (`referrerSource`, else the source).
use regferry_config::{ReferrerFilter, Require, SyncEntry};
use regferry_registry::repo::Repo;
use regferry_registry::{Descriptor, Digest, Result};

use super::{Engine, Item};

impl Engine {
    /// Why the image `digest` of `item` does not meet `req`, or `None` when it does.
    pub(super) async fn unmet(
        &self,
        entry: &SyncEntry,
        item: &Item,
        req: &Require,
        digest: &Digest,
    ) -> Result<Option<String>> {
        let sources: Vec<Repo> = if entry.referrer_sources.is_empty() {
            vec![item.src.clone()]
        } else {
            entry
                .referrer_sources
                .iter()
                .map(|e| self.clients.repo(e, None))
                .collect::<Result<_>>()?
        };
        let mut found: Vec<Descriptor> = Vec::new();
        for repo in &sources {
            found.extend(repo.referrers(digest).await?);
        }
        let missing: Vec<String> = req
            .referrers
            .iter()
            .filter(|want| {
                !found.iter().any(|d| {
                    want.matches(
                        d.artifact_type.as_deref().unwrap_or_default(),
                        &d.annotations,
                    )
                })
            })
            .map(describe)
            .collect();
        if missing.is_empty() {
            return Ok(None);
        }
        let places: Vec<String> = sources.iter().map(ToString::to_string).collect();
        Ok(Some(format!(
            "{} among the referrers of {digest} in {}",
            missing.join("; "),
            places.join(", ")
        )))
    }
}

/// "no referrer of type X" (with the annotations it needs, if any).
fn describe(f: &ReferrerFilter) -> String {
    let mut s = match &f.artifact_type {
        Some(t) => format!("no referrer of type {t}"),
        None => "no referrer".to_owned(),
    };
    if !f.annotations.is_empty() {
        let pairs: Vec<String> = f
            .annotations
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        s.push_str(&format!(" with {}", pairs.join(", ")));
    }
    s
}
