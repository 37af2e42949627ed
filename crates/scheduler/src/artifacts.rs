//! `regferry artifact list`: the referrers attached to an image, per manifest (the index
//! and each platform), recursively, read the same way a sync reads them.
use std::collections::HashSet;

use regferry_registry::repo::Repo;
use regferry_registry::{Content, Digest, Error, Platform, Result};
use regferry_transfer::matches_platform;
use serde::Serialize;

/// One manifest of an image and the referrers attached to it.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    /// The manifest's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its platform, for the children of an index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// The referrers, each with its own referrers.
    pub referrers: Vec<Artifact>,
}

/// A referrer (SBOM, signature, provenance, …).
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// Its digest.
    pub digest: String,
    /// Its artifact type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its annotations.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Referrers of this referrer (signatures of an SBOM).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Artifact>,
}

/// The referrers of the image `reference` in `repo` (a tag or digest): of the top manifest
/// and, for an index, of each child, or only of the child matching `platform`.
pub async fn list(
    repo: &Repo,
    reference: &str,
    platform: Option<&Platform>,
) -> Result<Vec<Subject>> {
    let top = repo.get_manifest(reference).await?;
    let mut subjects = Vec::new();
    let mut children = Vec::new();
    if let Content::Index { manifests, .. } = top.content(reference)? {
        children = manifests;
    }
    if platform.is_none() {
        subjects.push((top.digest.clone(), top.media_type.clone(), None));
    }
    for c in children {
        let keep = match (platform, &c.platform) {
            (None, _) => true,
            (Some(want), Some(p)) => matches_platform(p, want),
            (Some(_), None) => false,
        };
        if keep {
            subjects.push((
                c.digest.clone(),
                c.media_type.clone(),
                c.platform.as_ref().map(ToString::to_string),
            ));
        }
    }
    if subjects.is_empty() {
        return Err(Error::NotFound {
            what: format!(
                "platform {} in {repo}:{reference}",
                platform.map(ToString::to_string).unwrap_or_default()
            ),
        });
    }
    let mut out = Vec::new();
    for (digest, media_type, platform) in subjects {
        let mut seen = HashSet::from([digest.clone()]);
        let referrers = tree(repo, &digest, &mut seen).await?;
        out.push(Subject {
            digest: digest.to_string(),
            media_type,
            platform,
            referrers,
        });
    }
    Ok(out)
}

fn tree<'a>(
    repo: &'a Repo,
    subject: &'a Digest,
    seen: &'a mut HashSet<Digest>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Artifact>>> + Send + 'a>> {
    Box::pin(async move {
        let mut out = Vec::new();
        for d in repo.referrers(subject).await? {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            let nested = tree(repo, &d.digest, seen).await?;
            out.push(Artifact {
                digest: d.digest.to_string(),
                artifact_type: d.artifact_type,
                media_type: d.media_type,
                size: d.size,
                annotations: d.annotations,
                referrers: nested,
            });
        }
        Ok(out)
    })
}
