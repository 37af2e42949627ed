//! Deterministic synthetic images, so tests need neither Docker nor network: seeded random
//! layers, config blobs, image manifests, multi-arch indexes, artifacts with a `subject` (SBOM
//! referrers), and OCI layouts on disk for skopeo's `oci:` transport.
//!
//! The same seed gives the same bytes, so the same digests, on every run and machine: layers
//! come from a seeded xorshift generator and manifests are serialized from structs (field order
//! fixed, whatever `serde_json` features the workspace unifies).
//!
//! Layers are random bytes, not tarballs: registries never look inside. OCI layers use the
//! uncompressed `…layer.v1.tar` type so no client tries to decompress them, and the config's
//! `diff_ids` are the layers' own digests (true for uncompressed layers).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI empty descriptor (`{}`), the config of artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// SPDX SBOM, the artifact type of [`sbom`].
pub const SPDX: &str = "application/spdx+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer (gzip by name; synthetic layers are random bytes either way).
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// An `Accept` header for every manifest type above.
pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A small seeded PRNG (splitmix64-seeded xorshift64*): stable output for a seed, forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        // splitmix64 step, so nearby seeds give unrelated streams and the state is never 0.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// Mixes several numbers into one seed.
fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0xCBF2_9CE4_8422_2325, |acc, p| Rng::new(acc ^ p).next_u64())
}

/// An OS/architecture pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    /// `amd64`, `arm64`, ...
    pub architecture: String,
    /// `linux`, `windows`, ...
    pub os: String,
    /// `v7`, `v8`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// `os/arch`.
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant: None,
        }
    }

    /// `os/arch/variant`.
    pub fn with_variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_owned());
        self
    }

    /// linux/amd64.
    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64")
    }

    /// linux/arm64.
    pub fn linux_arm64() -> Self {
        Self::new("linux", "arm64")
    }

    /// `os/arch[/variant]`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An OCI descriptor, serialized in a fixed field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Platform (entries of an index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type (entries of a referrers list).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A blob and its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Media type used in descriptors.
    pub media_type: String,
    /// Content.
    pub data: Vec<u8>,
}

impl Blob {
    /// A blob with this content.
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            data,
        }
    }

    /// `size` random bytes from `seed`: the same seed gives the same layer (share layers
    /// between images by building them from the same seed).
    pub fn random(media_type: &str, seed: u64, size: usize) -> Self {
        Self::new(media_type, Rng::new(seed).bytes(size))
    }

    /// The 2-byte `{}` blob of type [`OCI_EMPTY`].
    pub fn empty() -> Self {
        Self::new(OCI_EMPTY, b"{}".to_vec())
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        sha256_digest(&self.data)
    }

    /// Its descriptor.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest(),
            size: self.data.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// A manifest's bytes exactly as pushed, and their media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// `Content-Type` for the PUT.
    pub media_type: String,
    /// The bytes (their digest is the manifest's digest).
    pub bytes: Vec<u8>,
}

impl Manifest {
    fn from_json(media_type: &str, value: &impl Serialize) -> Self {
        Self {
            media_type: media_type.to_owned(),
            bytes: serde_json::to_vec(value).expect("serialize manifest"),
        }
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        sha256_digest(&self.bytes)
    }

    /// Its descriptor.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest(),
            size: self.bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The manifest parsed, for assertions.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes).expect("manifest is JSON")
    }
}

/// Something pushable: a top manifest, the manifests it references, and every blob.
pub trait Content {
    /// The top manifest (what a tag points at).
    fn manifest(&self) -> &Manifest;
    /// Manifests the top one references (an index's children), to push first.
    fn children(&self) -> Vec<&Manifest>;
    /// Every blob of the top manifest and its children.
    fn blobs(&self) -> Vec<&Blob>;
}

/// A single image or artifact manifest with its config and layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The manifest.
    pub manifest: Manifest,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, in order.
    pub layers: Vec<Blob>,
    /// Its platform, carried into index entries.
    pub platform: Option<Platform>,
    /// `artifactType`, carried into referrers-list entries.
    pub artifact_type: Option<String>,
    /// The manifest's annotations, carried into referrers-list entries.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    created: &'a str,
    config: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

impl Image {
    /// The descriptor an index or a referrers list uses for it.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            platform: self.platform.clone(),
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
            ..self.manifest.descriptor()
        }
    }

    /// The manifest digest.
    pub fn digest(&self) -> String {
        self.manifest.digest()
    }
}

impl Content for Image {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn children(&self) -> Vec<&Manifest> {
        Vec::new()
    }
    fn blobs(&self) -> Vec<&Blob> {
        std::iter::once(&self.config).chain(&self.layers).collect()
    }
}

/// An index (or Docker manifest list) and its child images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The index manifest.
    pub manifest: Manifest,
    /// The children, in index order.
    pub children: Vec<Image>,
}

impl Index {
    /// The index digest.
    pub fn digest(&self) -> String {
        self.manifest.digest()
    }

    /// The child for `platform`.
    pub fn child(&self, platform: &Platform) -> Option<&Image> {
        self.children
            .iter()
            .find(|c| c.platform.as_ref() == Some(platform))
    }
}

impl Content for Index {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    fn children(&self) -> Vec<&Manifest> {
        self.children.iter().map(|c| &c.manifest).collect()
    }
    fn blobs(&self) -> Vec<&Blob> {
        self.children.iter().flat_map(Content::blobs).collect()
    }
}

/// OCI or Docker schema 2 media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaStyle {
    /// OCI image manifest / index.
    #[default]
    Oci,
    /// Docker schema 2 manifest / manifest list.
    Docker,
}

/// Builds synthetic images: `ImageBuilder::new(7).layers(2, 1024).build()`.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    seed: u64,
    layers: usize,
    layer_size: usize,
    platform: Platform,
    style: MediaStyle,
    annotations: BTreeMap<String, String>,
}

impl ImageBuilder {
    /// One 1 KiB layer, linux/amd64, OCI media types.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            layers: 1,
            layer_size: 1024,
            platform: Platform::linux_amd64(),
            style: MediaStyle::Oci,
            annotations: BTreeMap::new(),
        }
    }

    /// `count` layers of `size` bytes each.
    pub fn layers(mut self, count: usize, size: usize) -> Self {
        self.layers = count;
        self.layer_size = size;
        self
    }

    /// The platform of a single image (an index sets each child's).
    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Docker schema 2 media types instead of OCI.
    pub fn docker(mut self) -> Self {
        self.style = MediaStyle::Docker;
        self
    }

    /// An annotation on the top manifest (OCI only; Docker schema 2 has none).
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The image for the builder's platform. Its layers depend on the seed and the platform, so
    /// the children of an index share no layers.
    pub fn build(&self) -> Image {
        let (config_type, layer_type, manifest_type) = match self.style {
            MediaStyle::Oci => (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST),
            MediaStyle::Docker => (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST),
        };
        let platform_seed = mix(&[self.seed, fnv(&self.platform.name())]);
        let layers: Vec<Blob> = (0..self.layers)
            .map(|i| Blob::random(layer_type, mix(&[platform_seed, i as u64]), self.layer_size))
            .collect();
        let config = ConfigJson {
            architecture: &self.platform.architecture,
            os: &self.platform.os,
            variant: self.platform.variant.as_deref(),
            created: "2024-01-01T00:00:00Z",
            config: BTreeMap::from([(
                "Labels",
                BTreeMap::from([("org.regferry.testkit.seed", self.seed.to_string())]),
            )]),
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(Blob::digest).collect(),
            },
        };
        let config = Blob::new(
            config_type,
            serde_json::to_vec(&config).expect("serialize config"),
        );
        image_from_parts(
            manifest_type,
            config,
            layers,
            None,
            None,
            &self.annotations,
            Some(self.platform.clone()),
        )
    }

    /// An index with one child per platform (each built like [`Self::build`]).
    pub fn build_index(&self, platforms: &[Platform]) -> Index {
        let children: Vec<Image> = platforms
            .iter()
            .map(|p| {
                Self {
                    platform: p.clone(),
                    annotations: BTreeMap::new(),
                    ..self.clone()
                }
                .build()
            })
            .collect();
        let media_type = match self.style {
            MediaStyle::Oci => OCI_INDEX,
            MediaStyle::Docker => DOCKER_LIST,
        };
        let index = IndexJson {
            schema_version: 2,
            media_type,
            manifests: children.iter().map(Image::descriptor).collect(),
            annotations: &self.annotations,
        };
        Index {
            manifest: Manifest::from_json(media_type, &index),
            children,
        }
    }

    /// A linux/amd64 + linux/arm64 index.
    pub fn build_multi_arch(&self) -> Index {
        self.build_index(&[Platform::linux_amd64(), Platform::linux_arm64()])
    }
}

/// FNV-1a, to turn a platform name into seed material.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// An image manifest over these blobs.
fn image_from_parts(
    media_type: &str,
    config: Blob,
    layers: Vec<Blob>,
    artifact_type: Option<&str>,
    subject: Option<&Descriptor>,
    annotations: &BTreeMap<String, String>,
    platform: Option<Platform>,
) -> Image {
    let json = ImageManifestJson {
        schema_version: 2,
        media_type,
        artifact_type,
        config: config.descriptor(),
        layers: layers.iter().map(Blob::descriptor).collect(),
        subject,
        annotations,
    };
    Image {
        manifest: Manifest::from_json(media_type, &json),
        config,
        layers,
        platform,
        artifact_type: artifact_type.map(str::to_owned),
        annotations: annotations.clone(),
    }
}

/// A single linux/amd64 OCI image with `layers` layers of `size` bytes.
pub fn image(seed: u64, layers: usize, size: usize) -> Image {
    ImageBuilder::new(seed).layers(layers, size).build()
}

/// A linux/amd64 + linux/arm64 OCI index whose children have `layers` layers of `size` bytes.
pub fn multi_arch(seed: u64, layers: usize, size: usize) -> Index {
    ImageBuilder::new(seed)
        .layers(layers, size)
        .build_multi_arch()
}

/// An SBOM referrer of `subject`: an OCI image manifest with `artifactType:
/// application/spdx+json`, the empty config (`application/vnd.oci.empty.v1+json`, `{}`), one
/// SPDX JSON layer, and `subject`. distribution 2.8 stores it like any manifest (it predates the
/// referrers API); see [`referrers_index`] for the tag-schema fallback.
pub fn sbom(subject: &Descriptor, seed: u64) -> Image {
    let doc = serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("regferry-testkit-{seed}"),
        "documentNamespace": format!("https://example.invalid/spdx/{}", subject.digest),
        "creationInfo": {"created": "2024-01-01T00:00:00Z", "creators": ["Tool: regferry-testkit"]},
        "packages": [],
    });
    let payload = serde_json::to_vec(&doc).expect("serialize SPDX");
    artifact(
        subject,
        SPDX,
        &payload,
        &[("org.opencontainers.image.created", "2024-01-01T00:00:00Z")],
    )
}

/// A referrer of `subject` of any kind (SLSA provenance, VEX, a signature, ...): an OCI image
/// manifest with `artifactType`, the empty config, one layer of type `artifact_type` holding
/// `payload`, these annotations, and `subject`. [`sbom`] is the SPDX case with a generated
/// document.
pub fn artifact(
    subject: &Descriptor,
    artifact_type: &str,
    payload: &[u8],
    annotations: &[(&str, &str)],
) -> Image {
    let layer = Blob::new(artifact_type, payload.to_vec());
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let subject = Descriptor {
        platform: None,
        artifact_type: None,
        annotations: BTreeMap::new(),
        ..subject.clone()
    };
    image_from_parts(
        OCI_MANIFEST,
        Blob::empty(),
        vec![layer],
        Some(artifact_type),
        Some(&subject),
        &annotations,
        None,
    )
}

/// The OCI 1.1 referrers tag-schema fallback for a registry without the referrers API (such as
/// distribution 2.8): an index listing `referrers`, to be pushed under
/// [`referrers_tag`]`(subject digest)`.
pub fn referrers_index(referrers: &[&Image]) -> Manifest {
    let index = IndexJson {
        schema_version: 2,
        media_type: OCI_INDEX,
        manifests: referrers.iter().map(|r| r.descriptor()).collect(),
        annotations: &BTreeMap::new(),
    };
    Manifest::from_json(OCI_INDEX, &index)
}

/// `sha256:abc…` -> `sha256-abc…`, the referrers fallback tag.
pub fn referrers_tag(subject_digest: &str) -> String {
    subject_digest.replacen(':', "-", 1)
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`), for skopeo's
/// `oci:DIR:TAG` transport.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    refs: Vec<Descriptor>,
}

impl OciLayout {
    /// Creates (or reuses) a layout at `dir`, starting with an empty `index.json`.
    ///
    /// # Panics
    /// On an I/O error.
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs").join("sha256")).expect("create layout dirs");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let layout = Self {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a blob under `blobs/sha256/`; returns its digest.
    ///
    /// # Panics
    /// On an I/O error.
    pub fn write_blob(&self, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs").join("sha256").join(hex), data)
            .expect("write layout blob");
        digest
    }

    /// Writes `content` (every blob and manifest) and, with a tag, lists it in `index.json`
    /// under `org.opencontainers.image.ref.name`.
    ///
    /// # Panics
    /// On an I/O error.
    pub fn add(&mut self, content: &dyn Content, tag: Option<&str>) -> String {
        for blob in content.blobs() {
            self.write_blob(&blob.data);
        }
        for child in content.children() {
            self.write_blob(&child.bytes);
        }
        let top = content.manifest();
        let digest = self.write_blob(&top.bytes);
        if let Some(tag) = tag {
            let mut desc = top.descriptor();
            desc.annotations.insert(
                "org.opencontainers.image.ref.name".to_owned(),
                tag.to_owned(),
            );
            self.refs.retain(|d| {
                d.annotations.get("org.opencontainers.image.ref.name") != Some(&tag.to_owned())
            });
            self.refs.push(desc);
            self.write_index();
        }
        digest
    }

    /// Writes `content` and lists its manifest in `index.json` without a tag, as ORAS
    /// stores a referrer in a layout (no `sha256-<hex>` index).
    ///
    /// # Panics
    /// On an I/O error.
    pub fn add_untagged(&mut self, content: &dyn Content) -> String {
        let digest = self.add(content, None);
        self.refs.push(content.manifest().descriptor());
        self.write_index();
        digest
    }

    fn write_index(&self) {
        let index = IndexJson {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: self.refs.clone(),
            annotations: &BTreeMap::new(),
        };
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialize index.json"),
        )
        .expect("write index.json");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_digests_and_platforms_differ() {
        let a = multi_arch(42, 2, 512);
        let b = multi_arch(42, 2, 512);
        assert_eq!(a, b);
        assert_ne!(a.digest(), multi_arch(43, 2, 512).digest());
        let amd = a.child(&Platform::linux_amd64()).expect("amd64 child");
        let arm = a.child(&Platform::linux_arm64()).expect("arm64 child");
        assert_ne!(amd.layers[0].data, arm.layers[0].data);
        assert_eq!(amd.layers.len(), 2);
        assert_eq!(amd.layers[1].data.len(), 512);
        let index = a.manifest.json();
        assert_eq!(index["mediaType"], OCI_INDEX);
        assert_eq!(index["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(index["manifests"][0]["digest"], amd.digest().as_str());
    }

    #[test]
    fn digests_are_pinned_across_runs() {
        // Pinned on purpose: a change here changes every synthetic digest tests may rely on.
        assert_eq!(hex::encode(Rng::new(0).bytes(8)), "d08206550db4bc7b");
        assert_eq!(
            image(1, 1, 16).digest(),
            "sha256:43762052d5b4fd03c4292562539a060d5335eab740f4a2b0e5ba1ca6cd097a25"
        );
        assert_eq!(
            multi_arch(1, 2, 1024).digest(),
            "sha256:06eaffab1d60e559bfdb04a4173ad0c748dcc142c5f1102e2e33d2e60dce8693"
        );
    }

    #[test]
    fn sbom_has_subject_empty_config_and_artifact_type() {
        let subject = image(5, 1, 64);
        let s = sbom(&subject.descriptor(), 1);
        let json = s.manifest.json();
        assert_eq!(json["artifactType"], SPDX);
        assert_eq!(json["config"]["mediaType"], OCI_EMPTY);
        assert_eq!(json["config"]["size"], 2);
        assert_eq!(
            json["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(json["subject"]["digest"], subject.digest().as_str());
        assert!(json["subject"].get("platform").is_none());
        let referrers = referrers_index(&[&s]).json();
        assert_eq!(referrers["manifests"][0]["artifactType"], SPDX);
        assert_eq!(
            referrers_tag(&subject.digest()),
            subject.digest().replace("sha256:", "sha256-")
        );
    }

    #[test]
    fn artifact_carries_type_payload_annotations_and_subject() {
        let subject = image(6, 1, 64);
        let a = artifact(
            &subject.descriptor(),
            "application/vnd.in-toto+json",
            b"{\"predicateType\":\"https://slsa.dev/provenance/v1\"}",
            &[("com.example.k", "v")],
        );
        let json = a.manifest.json();
        assert_eq!(json["artifactType"], "application/vnd.in-toto+json");
        assert_eq!(
            json["layers"][0]["mediaType"],
            "application/vnd.in-toto+json"
        );
        assert_eq!(json["subject"]["digest"], subject.digest().as_str());
        assert_eq!(json["annotations"]["com.example.k"], "v");
        assert_eq!(a.descriptor().annotations["com.example.k"], "v");
        assert_ne!(a.digest(), sbom(&subject.descriptor(), 1).digest());
    }

    #[test]
    fn docker_style_uses_docker_media_types() {
        let list = ImageBuilder::new(3).docker().build_multi_arch();
        assert_eq!(list.manifest.media_type, DOCKER_LIST);
        let child = &list.children[0];
        assert_eq!(child.manifest.json()["mediaType"], DOCKER_MANIFEST);
        assert_eq!(
            child.manifest.json()["layers"][0]["mediaType"],
            DOCKER_LAYER
        );
    }
}
