//! Referrers of a manifest, wherever a registry keeps them: through the OCI 1.1 referrers
//! API where the registry has it, else through the referrers tag schema, a tag
//! `sha256-<hex>` holding an OCI index of the referrers (distribution-spec "Referrers Tag
//! Schema"). Writing keeps that index up to date on registries without the API.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use tokio::sync::Mutex;

use crate::digest::Digest;
use crate::error::Result;
use crate::http::PushedManifest;
use crate::manifest::{Content, Descriptor, Manifest, media_type};
use crate::repo::Repo;

/// Whether a repository answered the referrers API, remembered per repository so that
/// registries without it cost one extra request per repository, not per image.
static API_SUPPORT: LazyLock<std::sync::Mutex<HashMap<String, bool>>> =
    LazyLock::new(|| std::sync::Mutex::new(HashMap::new()));

/// Locks for fallback tags (so that concurrent copies in this process never lose each
/// other's entries while they read, merge and write an index) and for API probes. A fixed
/// set, picked by hash: a daemon publishes to ever new tags, and a map of one lock per tag
/// would grow for as long as it runs. Two keys sharing a lock only wait for each other.
static KEYED_LOCKS: LazyLock<Vec<Arc<Mutex<()>>>> =
    LazyLock::new(|| (0..256).map(|_| Arc::new(Mutex::new(()))).collect());

fn api_known(repo: &Repo) -> Option<bool> {
    API_SUPPORT.lock().ok()?.get(&repo.key()).copied()
}

fn remember_api(repo: &Repo, supported: bool) {
    if let Ok(mut m) = API_SUPPORT.lock() {
        m.insert(repo.key(), supported);
    }
}

fn keyed_lock(key: &str) -> Arc<Mutex<()>> {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    KEYED_LOCKS[(h % KEYED_LOCKS.len() as u64) as usize].clone()
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

impl Repo {
    /// The referrers of `subject` in this repository.
    pub async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        self.referrers_hinted(subject, None).await
    }

    /// [`Repo::referrers`], given this repository's tags when known: through the tag
    /// schema, a subject whose `sha256-<hex>` tag is not among them has no referrers, and
    /// no request is sent.
    pub async fn referrers_hinted(
        &self,
        subject: &Digest,
        tags: Option<&std::collections::HashSet<String>>,
    ) -> Result<Vec<Descriptor>> {
        if let Repo::Registry { client, name, .. } = self {
            // Many images of one repository are checked at once: let one of them find out
            // whether the API exists, and the others wait for the answer.
            let _probing = match api_known(self) {
                Some(_) => None,
                None => Some(keyed_lock(&format!("probe {self}")).lock_owned().await),
            };
            let known = api_known(self);
            if known == Some(false) {
                return self.fallback_hinted(subject, tags).await;
            }
            match client.referrers_api(name, subject).await? {
                Some(list) => {
                    remember_api(self, true);
                    return Ok(list);
                }
                None => remember_api(self, false),
            }
        }
        self.fallback_hinted(subject, tags).await
    }

    async fn fallback_hinted(
        &self,
        subject: &Digest,
        tags: Option<&std::collections::HashSet<String>>,
    ) -> Result<Vec<Descriptor>> {
        if let Some(tags) = tags
            && !tags.contains(&subject.referrers_tag())
        {
            return Ok(Vec::new());
        }
        self.fallback_referrers(subject).await
    }

    /// The referrers listed in the fallback tag of `subject`; none when the tag is absent.
    pub async fn fallback_referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let tag = subject.referrers_tag();
        match self.get_manifest(&tag).await {
            Ok(m) if m.is_index() => match m.content(&format!("{self}:{tag}"))? {
                Content::Index { manifests, .. } => Ok(manifests),
                _ => Ok(Vec::new()),
            },
            // A tag of that name that is not an index is not a referrers list.
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Makes a referrer just pushed here discoverable: when the registry did not confirm
    /// with `OCI-Subject` that it indexed the subject, adds the referrer to the subject's
    /// fallback index, keeping every entry already there. Returns whether the index changed.
    pub async fn publish_referrer(
        &self,
        subject: &Digest,
        referrer: &Manifest,
        pushed: &PushedManifest,
    ) -> Result<bool> {
        if pushed.subject.as_ref() == Some(subject) {
            remember_api(self, true);
            return Ok(false);
        }
        let tag = subject.referrers_tag();
        let lock = keyed_lock(&format!("{self}:{tag}"));
        let _held = lock.lock().await;
        let entry = referrer_descriptor(referrer);
        let existing = match self.get_manifest(&tag).await {
            Ok(m) if m.is_index() => Some(m),
            Ok(_) => None,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
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
        let digest = entry.digest.to_string();
        if list
            .iter()
            .any(|e| e.get("digest").and_then(|d| d.as_str()) == Some(digest.as_str()))
        {
            return Ok(false);
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
        let bytes = serde_json::to_vec(&doc).map_err(|e| crate::error::Error::Protocol {
            what: format!("{self}:{tag}"),
            reason: e.to_string(),
        })?;
        let index = Manifest::new(Bytes::from(bytes), Some(media_type::OCI_INDEX));
        self.put_manifest(Some(&tag), &index).await?;
        Ok(true)
    }
}

fn empty_index() -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_INDEX,
        "manifests": []
    })
}
