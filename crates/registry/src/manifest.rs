//! Manifests as bytes: pushed exactly as pulled, so every digest in a mirror equals the
//! source's. Parsing (with `oci-spec` types) only finds what a manifest references.
use std::collections::BTreeMap;

use bytes::Bytes;
use oci_spec::image::{Descriptor as OciDescriptor, ImageIndex, ImageManifest};

use crate::blob::sha256;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::platform::Platform;

/// Media types regferry knows by name.
pub mod media_type {
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker schema 1 (signed).
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    /// Docker schema 1.
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    /// The OCI 1.1 empty descriptor (`{}`).
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// The `Accept` header for manifest requests: indexes, manifests, and schema 1 so that
    /// old images are at least seen (the default `mediaTypes` filter skips them).
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.docker.distribution.manifest.v1+prettyjws, \
        application/vnd.docker.distribution.manifest.v1+json, \
        application/vnd.oci.artifact.manifest.v1+json";

    /// Whether a media type is a manifest (something fetched from `/manifests/`).
    pub fn is_manifest(mt: &str) -> bool {
        matches!(
            mt,
            OCI_INDEX
                | OCI_MANIFEST
                | DOCKER_LIST
                | DOCKER_MANIFEST
                | DOCKER_SCHEMA1
                | DOCKER_SCHEMA1_SIGNED
        ) || mt == "application/vnd.oci.artifact.manifest.v1+json"
    }

    /// Whether a media type is an index or list.
    pub fn is_index(mt: &str) -> bool {
        mt == OCI_INDEX || mt == DOCKER_LIST
    }
}

/// What a manifest references: enough to copy it children-first, and its bytes to push.
#[derive(Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The exact bytes.
    pub bytes: Bytes,
    /// The media type it is served with.
    pub media_type: String,
    /// The sha256 digest of `bytes`.
    pub digest: Digest,
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("media_type", &self.media_type)
            .field("digest", &self.digest)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A reference from a manifest to something it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// External URLs (foreign layers).
    pub urls: Vec<String>,
    /// The platform, for index entries.
    pub platform: Option<Platform>,
    /// The artifact type, for referrers.
    pub artifact_type: Option<String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Whether `m` is a media type as RFC 6838 (which the OCI specs require) writes one:
/// `type/subtype`, each 1–127 letters, digits and `!#$&-^_.+`, starting with a letter or
/// digit. A registry's media types end up in headers, logs and `index.json`; nothing else
/// is let through.
pub(crate) fn is_valid_media_type(m: &str) -> bool {
    let name = |n: &str| {
        (1..=127).contains(&n.len())
            && n.starts_with(|c: char| c.is_ascii_alphanumeric())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    m.split_once('/')
        .is_some_and(|(t, sub)| name(t) && name(sub))
}

impl Descriptor {
    fn from_oci(d: &OciDescriptor, reference: &str) -> Result<Descriptor> {
        let invalid = |reason: String| Error::InvalidManifest {
            reference: reference.to_owned(),
            reason,
        };
        let digest = Digest::parse(d.digest().as_ref()).map_err(|e| invalid(e.to_string()))?;
        let media_type = d.media_type().to_string();
        let artifact_type = d.artifact_type().as_ref().map(ToString::to_string);
        for t in std::iter::once(&media_type).chain(artifact_type.as_ref()) {
            if !t.is_empty() && !is_valid_media_type(t) {
                return Err(invalid(format!("{t:?} is not a media type (RFC 6838)")));
            }
        }
        let platform = d.platform().as_ref().map(|p| Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone().unwrap_or_default(),
            os_version: p.os_version().clone().unwrap_or_default(),
        });
        Ok(Descriptor {
            media_type,
            digest,
            size: d.size(),
            urls: d.urls().clone().unwrap_or_default(),
            platform,
            artifact_type,
            annotations: d
                .annotations()
                .as_ref()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }
}

/// The parts of a manifest that matter for copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An index or manifest list: child manifests.
    Index {
        /// The children.
        manifests: Vec<Descriptor>,
        /// The subject, for referrers.
        subject: Option<Box<Descriptor>>,
    },
    /// An image (or artifact) manifest: a config and layers.
    Image {
        /// The config blob.
        config: Box<Descriptor>,
        /// The layers.
        layers: Vec<Descriptor>,
        /// The subject, for referrers.
        subject: Option<Box<Descriptor>>,
        /// `artifactType`, for referrers.
        artifact_type: Option<String>,
    },
    /// Docker schema 1: layers only, by `blobSum`.
    Schema1 {
        /// The layer digests.
        layers: Vec<Digest>,
    },
}

impl Manifest {
    /// A manifest from bytes, with its digest computed. The media type is the one the
    /// registry sent, else the document's own `mediaType`, else inferred from its shape.
    pub fn new(bytes: Bytes, media_type: Option<&str>) -> Manifest {
        let digest = sha256(&bytes);
        let media_type = media_type
            .and_then(declared_media_type)
            .unwrap_or_else(|| sniff_media_type(&bytes));
        Manifest {
            bytes,
            media_type,
            digest,
        }
    }

    /// Whether this is an index or manifest list.
    pub fn is_index(&self) -> bool {
        media_type::is_index(&self.media_type)
    }

    /// Parses what the manifest references. `reference` names it in errors.
    pub fn content(&self, reference: &str) -> Result<Content> {
        let invalid = |reason: String| Error::InvalidManifest {
            reference: reference.to_owned(),
            reason,
        };
        match self.media_type.as_str() {
            media_type::DOCKER_SCHEMA1 | media_type::DOCKER_SCHEMA1_SIGNED => {
                #[derive(serde::Deserialize)]
                struct FsLayer {
                    #[serde(rename = "blobSum")]
                    blob_sum: String,
                }
                #[derive(serde::Deserialize)]
                struct Schema1 {
                    #[serde(rename = "fsLayers", default)]
                    fs_layers: Vec<FsLayer>,
                }
                let m: Schema1 =
                    serde_json::from_slice(&self.bytes).map_err(|e| invalid(e.to_string()))?;
                let mut layers = Vec::new();
                for l in m.fs_layers {
                    let d = Digest::parse(&l.blob_sum).map_err(|e| invalid(e.to_string()))?;
                    if !layers.contains(&d) {
                        layers.push(d);
                    }
                }
                Ok(Content::Schema1 { layers })
            }
            mt if media_type::is_index(mt) => {
                let idx: ImageIndex =
                    serde_json::from_slice(&self.bytes).map_err(|e| invalid(e.to_string()))?;
                if let Some(t) = idx.artifact_type().as_ref().map(ToString::to_string)
                    && !t.is_empty()
                    && !is_valid_media_type(&t)
                {
                    return Err(invalid(format!("{t:?} is not a media type (RFC 6838)")));
                }
                let manifests = idx
                    .manifests()
                    .iter()
                    .map(|d| Descriptor::from_oci(d, reference))
                    .collect::<Result<Vec<_>>>()?;
                let subject = idx
                    .subject()
                    .as_ref()
                    .map(|d| Descriptor::from_oci(d, reference).map(Box::new))
                    .transpose()?;
                Ok(Content::Index { manifests, subject })
            }
            _ => {
                let m: ImageManifest =
                    serde_json::from_slice(&self.bytes).map_err(|e| invalid(e.to_string()))?;
                if let Some(t) = m.artifact_type().as_ref().map(ToString::to_string)
                    && !t.is_empty()
                    && !is_valid_media_type(&t)
                {
                    return Err(invalid(format!("{t:?} is not a media type (RFC 6838)")));
                }
                let config = Box::new(Descriptor::from_oci(m.config(), reference)?);
                let layers = m
                    .layers()
                    .iter()
                    .map(|d| Descriptor::from_oci(d, reference))
                    .collect::<Result<Vec<_>>>()?;
                let subject = m
                    .subject()
                    .as_ref()
                    .map(|d| Descriptor::from_oci(d, reference).map(Box::new))
                    .transpose()?;
                Ok(Content::Image {
                    config,
                    layers,
                    subject,
                    artifact_type: m.artifact_type().as_ref().map(ToString::to_string),
                })
            }
        }
    }
}

/// The manifest media type a registry's `Content-Type` declares: without parameters, and
/// none when it is not a media type or only a generic one (`application/json`,
/// `text/plain`), so that the document's own type is used instead.
pub(crate) fn declared_media_type(content_type: &str) -> Option<String> {
    let m = content_type
        .split(';')
        .next()
        .unwrap_or(content_type)
        .trim();
    (is_valid_media_type(m) && m != "application/json" && m != "text/plain").then(|| m.to_owned())
}

/// The media type of a manifest from its JSON, for layouts and registries that do not say.
fn sniff_media_type(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        manifests: Option<serde_json::Value>,
        signatures: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        // Only a media type that is one: this one reaches messages and layouts.
        Ok(Probe {
            media_type: Some(m),
            ..
        }) if is_valid_media_type(&m) => m,
        Ok(Probe {
            schema_version: Some(1),
            signatures,
            ..
        }) => if signatures.is_some() {
            media_type::DOCKER_SCHEMA1_SIGNED
        } else {
            media_type::DOCKER_SCHEMA1
        }
        .to_owned(),
        Ok(Probe {
            manifests: Some(_), ..
        }) => media_type::OCI_INDEX.to_owned(),
        _ => media_type::OCI_MANIFEST.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    const L1: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image_json(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{CFG}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{L1}","size":0,"urls":["https://example.com/l"]}}]{extra}}}"#
        )
    }

    #[test]
    fn a_sniffed_media_type_must_be_one() {
        let bad = br#"{"schemaVersion":2,"mediaType":"x/\u001b[31mred","layers":[]}"#;
        assert_eq!(sniff_media_type(bad), media_type::OCI_MANIFEST);
        let good = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert_eq!(sniff_media_type(good), media_type::OCI_INDEX);
    }

    #[test]
    fn a_media_type_from_a_registry_must_be_one() {
        // A layer type that would break a header, a log line or a path.
        for bad in [
            "a/b\r\nX-Injected: 1",
            "text/\u{1b}[31mred",
            "../../x",
            "nosubtype",
            "/x",
        ] {
            let json = image_json("").replace(
                "\"application/vnd.oci.image.layer.v1.tar+gzip\"",
                &serde_json::to_string(bad).unwrap(),
            );
            let m = Manifest::new(Bytes::from(json), None);
            let e = m.content("r").unwrap_err();
            assert!(e.to_string().contains("not a media type"), "{bad}: {e}");
        }
        // An artifact type is checked as well.
        let json = image_json(r#","artifactType":"x/y\r\nz""#);
        assert!(json.contains(r"\r\n"), "escaped in the JSON");
        assert!(Manifest::new(Bytes::from(json), None).content("r").is_err());
        // A Content-Type that is not a media type is not trusted; the document says.
        let m = Manifest::new(Bytes::from(image_json("")), Some("text/\u{1b}[31m; x"));
        assert_eq!(m.media_type, media_type::OCI_MANIFEST);
        for good in [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.in-toto+json",
            "application/spdx+json",
        ] {
            assert!(is_valid_media_type(good), "{good}");
        }
    }

    #[test]
    fn image_manifest_children_and_subject() {
        let json = image_json(&format!(
            r#","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CFG}","size":7}},"artifactType":"application/spdx+json""#
        ));
        let m = Manifest::new(Bytes::from(json.clone()), None);
        assert_eq!(m.media_type, media_type::OCI_MANIFEST);
        assert_eq!(m.digest, sha256(json.as_bytes()));
        match m.content("x").unwrap() {
            Content::Image {
                config,
                layers,
                subject,
                artifact_type,
            } => {
                assert_eq!(config.digest.to_string(), CFG);
                assert_eq!(layers[0].urls, vec!["https://example.com/l".to_owned()]);
                assert_eq!(subject.unwrap().size, 7);
                assert_eq!(artifact_type.as_deref(), Some("application/spdx+json"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn index_children_with_platforms() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{CFG}","size":10,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let m = Manifest::new(
            Bytes::from(json),
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
        );
        assert!(m.is_index());
        match m.content("x").unwrap() {
            Content::Index { manifests, subject } => {
                assert!(subject.is_none());
                let p = manifests[0].platform.as_ref().unwrap();
                assert_eq!(
                    (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
                    ("linux", "arm64", "v8")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sniffs_types_and_rejects_garbage() {
        assert_eq!(
            Manifest::new(
                Bytes::from_static(b"{\"schemaVersion\":2,\"manifests\":[]}"),
                None
            )
            .media_type,
            media_type::OCI_INDEX
        );
        assert_eq!(
            Manifest::new(
                Bytes::from_static(b"{\"schemaVersion\":1,\"fsLayers\":[]}"),
                Some("application/json")
            )
            .media_type,
            media_type::DOCKER_SCHEMA1
        );
        let bad = Manifest::new(
            Bytes::from_static(b"not json"),
            Some(media_type::OCI_MANIFEST),
        );
        assert!(matches!(
            bad.content("r"),
            Err(Error::InvalidManifest { .. })
        ));
    }
}
