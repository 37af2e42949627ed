//! Referrers of a manifest, wherever a registry keeps them: through the OCI 1.1 referrers
//! API where the registry has it, else through the referrers tag schema, a tag
//! `sha256-<hex>` holding an OCI index of the referrers (distribution-spec "Referrers Tag
//! Schema"). Writing keeps that index up to date on registries without the API.
use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::digest::Digest;
use crate::error::Result;
use crate::http::PushedManifest;
use crate::manifest::{Content, Descriptor, Manifest, media_type};
use crate::repo::Repo;
use crate::tags::TagList;

/// What is known of whether `repo`'s host has the referrers API: remembered per host (it
/// is a property of the registry's software, not of a repository), so that registries
/// without it cost one extra request per process, not one per repository or image; a
/// long-running server asks again after an hour, so an upgraded registry is noticed. An OCI
/// layout never has the API.
fn api_known(repo: &Repo) -> Option<bool> {
    match repo {
        Repo::Registry { .. } => repo.memory().api_known(&repo.host_key()),
        Repo::Layout(_) => None,
    }
}

fn remember_api(repo: &Repo, supported: bool) {
    if let Repo::Registry { .. } = repo {
        repo.memory().remember_api(&repo.host_key(), supported);
    }
}

/// The lock for `key` among `repo`'s locks: for fallback tags (so that concurrent copies in
/// this process never lose each other's entries while they read, merge and write an index)
/// and for API probes.
fn keyed_lock(repo: &Repo, key: &str) -> std::sync::Arc<Mutex<()>> {
    repo.memory().lock(key)
}

/// The descriptor that lists `m` as a referrer: its artifact type (or its config's media
/// type) and its annotations, as the spec asks.
pub fn referrer_descriptor(m: &Manifest) -> Descriptor {
    #[derive(serde::Deserialize, Default)]
    struct Probe {
        #[serde(rename = "artifactType", default)]
        artifact_type: Option<String>,
        #[serde(default)]
        config: Option<ProbeConfig>,
        #[serde(default)]
        annotations: BTreeMap<String, String>,
    }
    #[derive(serde::Deserialize, Default)]
    struct ProbeConfig {
        #[serde(rename = "mediaType", default)]
        media_type: String,
    }
    let p: Probe = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let artifact_type = p
        .artifact_type
        .filter(|t| !t.is_empty())
        .or_else(|| p.config.map(|c| c.media_type).filter(|t| !t.is_empty()));
    Descriptor {
        media_type: m.media_type.clone(),
        digest: m.digest.clone(),
        size: m.bytes.len() as u64,
        urls: Vec::new(),
        platform: None,
        artifact_type,
        annotations: p.annotations,
    }
}

/// The referrers of a subject in one repository, and where they were found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The referrers.
    pub descriptors: Vec<Descriptor>,
    /// The `sha256-<hex>` index they were read from, when the registry has no referrers
    /// API and the tag exists. A copy can push these exact bytes, so that the target's
    /// index has the source's digest and a later run compares the two with a HEAD each.
    pub fallback_index: Option<Manifest>,
}

impl Repo {
    /// The referrers of `subject` in this repository.
    pub async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        Ok(self.referrers_listing(subject, None).await?.descriptors)
    }

    /// Whether this repository's registry has the referrers API; `None` when it would not
    /// say. Asked once per registry (the answer is kept for an hour), about `subject`, a
    /// manifest this repository holds: a registry with the API must answer for a
    /// repository it has.
    pub async fn has_referrers_api(&self, subject: &Digest) -> Result<Option<bool>> {
        if api_known(self).is_none() {
            let _asking = self.wait_for_api_answer().await;
            if api_known(self).is_none() {
                return match self.ask_api(subject).await {
                    Ok(answer) => Ok(Some(answer.is_some())),
                    // The registry says the repository is missing: no answer about the API.
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) => Err(e),
                };
            }
        }
        Ok(api_known(self))
    }

    /// Whether `subject` is known to have no referrers here, without asking: the registry
    /// answered that it has no referrers API, and `tags` (this repository's listing) lacks
    /// the subject's `sha256-<hex>` tag.
    pub fn known_without_referrers(&self, subject: &Digest, tags: &TagList) -> bool {
        api_known(self) == Some(false) && tags.lacks(self, &subject.referrers_tag())
    }

    /// [`Repo::referrers`], given this repository's tags when known: through the tag
    /// schema, a subject whose `sha256-<hex>` tag the listing lacks has no referrers, and
    /// no request is sent.
    pub async fn referrers_listing(
        &self,
        subject: &Digest,
        tags: Option<&TagList>,
    ) -> Result<Listing> {
        let _asking = self.wait_for_api_answer().await;
        if api_known(self) != Some(false) {
            match self.ask_api(subject).await {
                Ok(Some(descriptors)) => {
                    return Ok(Listing {
                        descriptors,
                        fallback_index: None,
                    });
                }
                Ok(None) => {}
                // A 404 naming a missing repository says nothing about the API; after any
                // 404 the spec has clients read the tag schema.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(tags) = tags
            && tags.lacks(self, &subject.referrers_tag())
        {
            return Ok(Listing::default());
        }
        self.fallback_listing(subject).await
    }

    /// While nobody knows whether the registry has the API, many images may ask at once:
    /// one of them asks and the others wait for its answer. The guard, held while asking;
    /// `None` when the answer is known (or for a layout, which never has the API).
    async fn wait_for_api_answer(&self) -> Option<OwnedMutexGuard<()>> {
        if !matches!(self, Repo::Registry { .. }) || api_known(self).is_some() {
            return None;
        }
        Some(
            keyed_lock(self, &format!("probe {}", self.host_key()))
                .lock_owned()
                .await,
        )
    }

    /// The referrers API's answer about `subject`, remembering whether the registry has the
    /// API: `None` when it has not; `Err` not-found when it named the repository missing,
    /// which decides nothing. A layout has no API.
    async fn ask_api(&self, subject: &Digest) -> Result<Option<Vec<Descriptor>>> {
        let Repo::Registry { client, name, .. } = self else {
            return Ok(None);
        };
        let answer = client.referrers_api(name, subject).await?;
        remember_api(self, answer.is_some());
        Ok(answer)
    }

    /// The referrers listed in the fallback tag of `subject`; none when the tag is absent.
    async fn fallback_listing(&self, subject: &Digest) -> Result<Listing> {
        let tag = subject.referrers_tag();
        match self.get_manifest(&tag).await {
            Ok(m) if m.is_index() => match m.content(&format!("{self}:{tag}"))? {
                Content::Index { manifests, .. } => Ok(Listing {
                    descriptors: manifests,
                    fallback_index: Some(m),
                }),
                _ => Ok(Listing::default()),
            },
            // A tag of that name that is not an index is not a referrers list.
            Ok(_) => Ok(Listing::default()),
            Err(e) if e.is_not_found() => Ok(Listing::default()),
            Err(e) => Err(e),
        }
    }

    /// Makes referrers of `subject` just pushed here discoverable. A registry that
    /// confirmed with `OCI-Subject` indexes them itself. Otherwise the subject's fallback
    /// index gets them, keeping every entry already there; or, when `source_index` lists
    /// all of the target's entries and all of `pushed`, becomes exactly `source_index` (the
    /// same bytes and digest as the source's). The index is always read just before it is
    /// written, under a lock, so nothing another writer put there is lost. `target_seen` is
    /// the index as the caller just read it: when nothing was pushed and it already is the
    /// source's, there is nothing to do. Returns whether the index changed.
    pub async fn publish_referrers(
        &self,
        subject: &Digest,
        pushed: &[(Descriptor, PushedManifest)],
        source_index: Option<&Manifest>,
        target_seen: Option<&Manifest>,
    ) -> Result<bool> {
        if pushed
            .iter()
            .any(|(_, p)| p.subject.as_ref() == Some(subject))
        {
            remember_api(self, true);
            return Ok(false);
        }
        // Without a confirmation the index is written, as the spec asks of clients; that
        // alone does not prove the registry lacks the API (some omit the header).
        if pushed.is_empty()
            && (api_known(self) != Some(false)
                || source_index.is_none()
                || source_index.map(|m| &m.digest) == target_seen.map(|m| &m.digest))
        {
            return Ok(false);
        }
        let tag = subject.referrers_tag();
        let lock = keyed_lock(self, &self.tag_key(&tag));
        let _held = lock.lock().await;
        let existing = match self.get_manifest(&tag).await {
            Ok(m) if m.is_index() => Some(m),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        if let Some(src) = source_index {
            if existing.as_ref().is_some_and(|m| m.digest == src.digest) {
                return Ok(false);
            }
            let listed = index_digests(src);
            let kept = existing.as_ref().map(index_digests).unwrap_or_default();
            if kept.iter().all(|d| listed.contains(d))
                && pushed
                    .iter()
                    .all(|(d, _)| listed.contains(&d.digest.to_string()))
            {
                self.put_manifest(Some(&tag), src).await?;
                return Ok(true);
            }
        }
        if pushed.is_empty() {
            return Ok(false);
        }
        let mut doc: serde_json::Value = match &existing {
            Some(m) => serde_json::from_slice(&m.bytes).unwrap_or_else(|_| empty_index()),
            None => empty_index(),
        };
        if !doc
            .get("manifests")
            .is_some_and(serde_json::Value::is_array)
        {
            doc = empty_index();
        }
        let Some(list) = doc.get_mut("manifests").and_then(|v| v.as_array_mut()) else {
            return Err(crate::error::Error::Protocol {
                what: format!("{self}:{tag}"),
                reason: "fallback index without manifests".into(),
            });
        };
        let mut changed = false;
        for (entry, _) in pushed {
            let digest = entry.digest.to_string();
            if list
                .iter()
                .any(|e| e.get("digest").and_then(|d| d.as_str()) == Some(digest.as_str()))
            {
                continue;
            }
            let mut value = serde_json::json!({
                "mediaType": entry.media_type,
                "digest": digest,
                "size": entry.size,
            });
            if let Some(t) = &entry.artifact_type {
                value["artifactType"] = serde_json::Value::String(t.clone());
            }
            if !entry.annotations.is_empty() {
                value["annotations"] = serde_json::to_value(&entry.annotations).unwrap_or_default();
            }
            list.push(value);
            changed = true;
        }
        if !changed {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&doc).map_err(|e| crate::error::Error::Protocol {
            what: format!("{self}:{tag}"),
            reason: e.to_string(),
        })?;
        let index = Manifest::new(Bytes::from(bytes), Some(media_type::OCI_INDEX));
        self.put_manifest(Some(&tag), &index).await?;
        Ok(true)
    }
}

/// The digests an index lists.
fn index_digests(m: &Manifest) -> HashSet<String> {
    serde_json::from_slice::<serde_json::Value>(&m.bytes)
        .ok()
        .and_then(|v| {
            v.get("manifests")?.as_array().map(|l| {
                l.iter()
                    .filter_map(|e| e.get("digest")?.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn empty_index() -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{HostOptions, RegistryClient};

    fn repo_at(registry: &str, hostname: &str) -> Repo {
        let mut o = HostOptions::new(registry);
        o.hostname = hostname.to_owned();
        Repo::Registry {
            client: RegistryClient::new(o).unwrap(),
            name: "app".into(),
            reads: Vec::new(),
        }
    }

    #[test]
    fn what_one_host_answered_is_not_taken_for_another_of_the_same_name() {
        // A reload that points `mirror.example` at another host, or two tests that both
        // call their registry `mirror.example`: the answer belongs to the host asked.
        let a = repo_at("mirror.example", "a.example:5000");
        let b = repo_at("mirror.example", "b.example:5000");
        remember_api(&a, false);
        assert_eq!(api_known(&a), Some(false));
        assert_eq!(api_known(&b), None, "b was never asked");
    }
}
