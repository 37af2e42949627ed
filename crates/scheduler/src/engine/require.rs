//! `require` (regferry extension): a policy gate before an image is copied. Each
//! `require.referrers` item needs at least one referrer of the image that it matches,
//! looked up where the entry's referrers come from (`referrerSource`, else the source).
//! `require.signature` needs a cosign signature that one of its keys verifies, found where
//! cosign puts them: the `sha256-<hex>.sig` tag, or an OCI 1.1 referrer of cosign's
//! signature type. A signature counts when the ECDSA P-256 signature over the payload
//! verifies, the payload's bytes match their digest, and the payload's
//! `critical.image.docker-manifest-digest` is the digest being copied.
use futures_util::StreamExt as _;
use p256::ecdsa::Signature;
use p256::ecdsa::signature::Verifier as _;

use regferry_config::{ReferrerFilter, Require, SignatureKey, SyncEntry};
use regferry_registry::http::ManifestHead;
use regferry_registry::manifest::media_type;
use regferry_registry::repo::Repo;
use regferry_registry::{Content, Descriptor, Digest, Result};

use super::{Engine, Item};

impl Engine {
    /// Why the image `digest` of `item` does not meet `req`, or `None` when it does.
    pub(super) async fn unmet(
        &self,
        entry: &SyncEntry,
        item: &Item,
        req: &Require,
        head: &ManifestHead,
    ) -> Result<Option<String>> {
        let digest = &head.digest;
        if head.media_type == media_type::DOCKER_SCHEMA1_SIGNED {
            return Ok(Some(format!(
                "{digest} is a signed schema 1 manifest, whose bytes do not hash to its digest: nothing can be verified about it"
            )));
        }
        let sources = self.referrer_sources(entry, item)?;
        let mut found: Vec<(usize, Descriptor)> = Vec::new();
        for (i, repo) in sources.iter().enumerate() {
            found.extend(repo.referrers(digest).await?.into_iter().map(|d| (i, d)));
        }
        let mut missing: Vec<String> = req
            .referrers
            .iter()
            .filter(|want| {
                !found.iter().any(|(_, d)| {
                    want.matches(
                        d.artifact_type.as_deref().unwrap_or_default(),
                        &d.annotations,
                    )
                })
            })
            .map(describe)
            .collect();
        if !req.keys.is_empty() {
            let signed = self
                .signature_verified(&sources, &found, &req.keys, digest)
                .await?;
            if let Some(why) = signed {
                missing.push(why);
            }
        }
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

/// cosign's artifact type for a signature stored as an OCI 1.1 referrer.
const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The layer annotation that holds a cosign signature (base64, ASN.1 DER).
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest payload read: a simple-signing document is a few hundred bytes.
const MAX_PAYLOAD: u64 = 64 << 10;
/// The most signature layers looked at per image, so a hostile source cannot make the
/// check read without end.
const MAX_SIGNATURES: usize = 64;

impl Engine {
    /// `None` when a signature over `digest` verifies with one of `keys`; else why not.
    /// Signature manifests are read one at a time, at most [`MAX_SIGNATURES`] of them, and
    /// the first that verifies ends the search.
    async fn signature_verified(
        &self,
        sources: &[Repo],
        referrers: &[(usize, Descriptor)],
        keys: &[SignatureKey],
        digest: &Digest,
    ) -> Result<Option<String>> {
        // Where cosign puts signatures: the `.sig` tag in each place referrers are read
        // from, and referrers of its artifact type.
        let tag = format!("{}.sig", digest.referrers_tag());
        let mut places: Vec<(&Repo, String)> = sources.iter().map(|r| (r, tag.clone())).collect();
        places.extend(
            referrers
                .iter()
                .filter(|(_, d)| d.artifact_type.as_deref() == Some(COSIGN_SIGNATURE))
                .map(|(i, d)| (&sources[*i], d.digest.to_string())),
        );
        let names: Vec<&str> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
        let (mut found, mut looked) = (false, 0);
        for (repo, reference) in places.into_iter().take(MAX_SIGNATURES) {
            // A `.sig` tag that is not there, or a referrer listed but gone, is no signature.
            let m = match repo.get_manifest(&reference).await {
                Ok(m) => m,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            found = true;
            let Ok(Content::Image { layers, .. }) = m.content(&reference) else {
                continue;
            };
            for layer in layers {
                let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
                    continue;
                };
                looked += 1;
                if looked > MAX_SIGNATURES || layer.size > MAX_PAYLOAD {
                    continue;
                }
                let Some(payload) = read_payload(repo, &layer).await? else {
                    continue;
                };
                if verifies(keys, &payload, sig) && names_digest(&payload, digest) {
                    return Ok(None);
                }
            }
            if looked > MAX_SIGNATURES {
                break;
            }
        }
        if !found {
            return Ok(Some(format!(
                "no cosign signature of {digest} (no {tag} tag, no referrer of type {COSIGN_SIGNATURE}) for key {}",
                names.join(", ")
            )));
        }
        Ok(Some(format!(
            "no signature of {digest} verified by key {}",
            names.join(", ")
        )))
    }
}

/// A payload's bytes, when they match their digest (else `None`: not a signature of
/// anything). A gone blob is no payload either; a transfer error fails the check, so the
/// tag fails and is looked at again next run, rather than being held.
async fn read_payload(repo: &Repo, layer: &Descriptor) -> Result<Option<Vec<u8>>> {
    let blob = match repo.get_blob(&layer.digest, Some(layer.size)).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Ok(mut stream) =
        regferry_registry::blob::verify(&layer.digest, Some(layer.size), blob.stream)
    else {
        return Ok(None);
    };
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => out.extend_from_slice(&chunk),
            // Other bytes than the digest says: not what was signed.
            Err(
                regferry_registry::Error::DigestMismatch { .. }
                | regferry_registry::Error::SizeMismatch { .. },
            ) => return Ok(None),
            Err(e) => return Err(e),
        }
        if out.len() as u64 > MAX_PAYLOAD {
            return Ok(None);
        }
    }
    Ok(Some(out))
}

/// Whether `sig` (base64 of an ASN.1 DER ECDSA signature, as cosign writes it) over
/// `payload` verifies with one of `keys`.
fn verifies(keys: &[SignatureKey], payload: &[u8], sig: &str) -> bool {
    use base64::Engine as _;
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(sig.trim()) else {
        return false;
    };
    let Ok(sig) = Signature::from_der(&der) else {
        return false;
    };
    keys.iter().any(|k| k.key.verify(payload, &sig).is_ok())
}

/// Whether a payload is a cosign image signature (not, say, a `sign-blob` made with the
/// same key) that names `digest` as the signed image.
fn names_digest(payload: &[u8], digest: &Digest) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    let field = |p: &str| v.pointer(p).and_then(serde_json::Value::as_str);
    field("/critical/type") == Some("cosign container image signature")
        && field("/critical/image/docker-manifest-digest") == Some(digest.to_string().as_str())
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
