//! The validated configuration: concrete values only. The engine never sees an `Option`
//! that means "unset"; an `Option` here means "not configured", with a documented effect.
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use regferry_registry::{Platform, Reference, Secret};

use crate::filter::{ReferrerFilter, RepoFilter, TagFilter};
use crate::schedule::Schedule;
use crate::template::{self, Template, Value};

/// The media types copied when an entry lists none (regsync's built-in list).
pub const DEFAULT_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];
/// regsync's floor for `ratelimit.retry`.
pub const MIN_RATELIMIT_RETRY: Duration = Duration::from_secs(300);
/// Requests in flight per registry without `reqConcurrent`: a limit that starts at the
/// first and adapts up to the second. regsync's fixed default is 3, which caps a mirror at
/// three blob transfers per registry (set `reqConcurrent: 3` for regsync's behaviour).
pub const ADAPTIVE_REQ_CONCURRENT: (u32, u32) = regferry_registry::http::ADAPTIVE_REQ_CONCURRENT;
/// `parallel` when the file does not set it. regsync copies one image at a time by
/// default; regferry copies 4 at once (set `parallel: 1` for regsync's behaviour).
pub const DEFAULT_PARALLEL: u32 = 4;
/// Default `blobChunk`.
pub const DEFAULT_BLOB_CHUNK: u64 = regferry_registry::http::DEFAULT_BLOB_CHUNK;
/// Default `credExpire`.
pub const DEFAULT_CRED_EXPIRE: Duration = Duration::from_secs(3600);

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (`<stdin>` for `-`).
    pub file: String,
    /// Registry settings and logins, in file order (a later duplicate replaced an earlier one).
    pub creds: Vec<Host>,
    /// Options that apply to the whole process.
    pub globals: Globals,
    /// The sync entries, in file order.
    pub sync: Vec<SyncEntry>,
}

impl Config {
    /// The settings for a registry name, if `creds` has an entry for it.
    pub fn host(&self, registry: &str) -> Option<&Host> {
        self.creds.iter().find(|h| h.registry == registry)
    }
}

/// Process-wide options from `defaults`.
#[derive(Debug, Clone, PartialEq)]
pub struct Globals {
    /// `parallel`: concurrent image copies ([`DEFAULT_PARALLEL`] when not set); 0 runs
    /// entries one after another with one copy at a time, as in regsync.
    pub parallel: u32,
    /// Do not read `~/.docker/config.json` or run its credential helpers.
    pub skip_docker_config: bool,
    /// `User-Agent` header; `None` means regferry's own.
    pub user_agent: Option<String>,
    /// Largest chunk a registry may demand (`blobLimit`), when set.
    pub blob_limit: Option<u64>,
    /// `limits` under `defaults`: bounds for every registry, and on one image's graph.
    pub limits: LimitSettings,
    /// `targetRecheck` (a regferry extension): in `server`, how long an entry's scheduled
    /// runs may trust what its last clean run saw in the target, before one reads the
    /// target in full again. Zero: every run reads it.
    pub target_recheck: Duration,
}

/// `targetRecheck` when the file does not set it.
pub const DEFAULT_TARGET_RECHECK: Duration = Duration::from_secs(24 * 3600);

/// `limits` (a regferry extension; regsync ignores the key): bounds on what registries may
/// send and how long they may take, under `defaults` for every registry and in a `creds`
/// entry for one (which wins, key by key). A key not set keeps its default; the graph keys
/// (`indexDepth`, `manifestsPerImage`, `referrersPerImage`) are set under `defaults` only.
/// Sizes and counts are what this machine can hold: a larger value written is read as the
/// largest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    /// `connectTimeout`: to open a connection (TCP and TLS).
    pub connect_timeout: Option<Duration>,
    /// `responseTimeout`: from a request to its response headers.
    pub response_timeout: Option<Duration>,
    /// `idleTimeout`: the longest silence inside a response body.
    pub idle_timeout: Option<Duration>,
    /// `requestTimeout`: a whole answer read in full, headers included.
    pub request_timeout: Option<Duration>,
    /// `minSpeed`: the slowest a blob download may be, in bytes per second, over an
    /// `idleTimeout` window.
    pub min_speed: Option<u64>,
    /// `tokenSize`: the largest token answer, in bytes.
    pub token_size: Option<usize>,
    /// `manifestSize`: the largest manifest, in bytes.
    pub manifest_size: Option<usize>,
    /// `pageSize`: the largest page of a listing, in bytes.
    pub page_size: Option<usize>,
    /// `listingSize`: the largest listing, all its pages together, in bytes.
    pub listing_size: Option<usize>,
    /// `pages`: the most pages in one listing.
    pub pages: Option<usize>,
    /// `names`: the most names in one listing.
    pub names: Option<usize>,
    /// `indexDepth`: the deepest index nesting.
    pub index_depth: Option<usize>,
    /// `manifestsPerImage`: the most child manifests read for one image.
    pub manifests_per_image: Option<usize>,
    /// `referrersPerImage`: the most referrers read for one image, all subjects and levels
    /// together.
    pub referrers_per_image: Option<usize>,
}

impl LimitSettings {
    /// These settings over `base`: each key set here wins.
    pub fn over(self, base: LimitSettings) -> LimitSettings {
        LimitSettings {
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            response_timeout: self.response_timeout.or(base.response_timeout),
            idle_timeout: self.idle_timeout.or(base.idle_timeout),
            request_timeout: self.request_timeout.or(base.request_timeout),
            min_speed: self.min_speed.or(base.min_speed),
            token_size: self.token_size.or(base.token_size),
            manifest_size: self.manifest_size.or(base.manifest_size),
            page_size: self.page_size.or(base.page_size),
            listing_size: self.listing_size.or(base.listing_size),
            pages: self.pages.or(base.pages),
            names: self.names.or(base.names),
            index_depth: self.index_depth.or(base.index_depth),
            manifests_per_image: self.manifests_per_image.or(base.manifests_per_image),
            referrers_per_image: self.referrers_per_image.or(base.referrers_per_image),
        }
    }

    /// The registry client's bounds: its defaults, with the keys set here.
    pub fn client_limits(&self, mut l: Limits) -> Limits {
        l.connect_timeout = self.connect_timeout.unwrap_or(l.connect_timeout);
        l.response_timeout = self.response_timeout.unwrap_or(l.response_timeout);
        l.idle_timeout = self.idle_timeout.unwrap_or(l.idle_timeout);
        l.request_deadline = self.request_timeout.unwrap_or(l.request_deadline);
        l.min_speed = self.min_speed.unwrap_or(l.min_speed);
        l.token_bytes = self.token_size.unwrap_or(l.token_bytes);
        l.manifest_bytes = self.manifest_size.unwrap_or(l.manifest_bytes);
        l.page_bytes = self.page_size.unwrap_or(l.page_bytes);
        l.listing_bytes = self.listing_size.unwrap_or(l.listing_bytes);
        l.pages = self.pages.unwrap_or(l.pages);
        l.names = self.names.unwrap_or(l.names);
        l
    }
}

impl Default for Globals {
    fn default() -> Self {
        Globals {
            parallel: DEFAULT_PARALLEL,
            skip_docker_config: false,
            user_agent: None,
            blob_limit: None,
            limits: LimitSettings::default(),
            target_recheck: DEFAULT_TARGET_RECHECK,
        }
    }
}

impl Globals {
    /// How many image copies may run at once: `parallel`, at least 1.
    pub fn copy_slots(&self) -> usize {
        self.parallel.max(1) as usize
    }
}

use regferry_registry::http::HostOptions;
pub use regferry_registry::http::{Limits, TlsMode};

/// One `creds` entry: how to reach and log in to a registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// The name used in references (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// The host to connect to (`hostname`, else derived from `registry`).
    pub hostname: String,
    /// User name for basic auth and token requests.
    pub user: String,
    /// Password.
    pub pass: Secret,
    /// Bearer token (regsync's experimental `token`).
    pub token: Secret,
    /// `docker-credential-<name>` to run for a login.
    pub cred_helper: Option<String>,
    /// How long a helper's login is reused.
    pub cred_expire: Duration,
    /// Name passed to the helper instead of the registry.
    pub cred_host: Option<String>,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificate (PEM).
    pub regcert: Option<String>,
    /// Client certificate for mTLS (PEM).
    pub client_cert: Option<String>,
    /// Client key for mTLS (PEM).
    pub client_key: Secret,
    /// Path inserted after `/v2/` for repository requests.
    pub path_prefix: String,
    /// Pull-only mirrors, tried before this registry.
    pub mirrors: Vec<String>,
    /// Mirror sort key: higher first.
    pub priority: u32,
    /// Separate token state per repository.
    pub repo_auth: bool,
    /// Requests per second to this host; `None` is unlimited.
    pub req_per_sec: Option<f64>,
    /// Requests in flight to this host at once: a hard limit, or `None` for the adaptive
    /// one ([`ADAPTIVE_REQ_CONCURRENT`]).
    pub req_concurrent: Option<u32>,
    /// Chunk size for chunked uploads.
    pub blob_chunk: u64,
    /// Blobs above this size are uploaded in chunks; `None` disables the limit.
    pub blob_max: Option<u64>,
    /// `apiOpts`, as given (`disableHead` is honoured).
    pub api_opts: BTreeMap<String, String>,
    /// `limits` for this registry (over those under `defaults`).
    pub limits: LimitSettings,
}

impl Host {
    /// Settings for a registry that has no `creds` entry.
    pub fn with_defaults(registry: &str) -> Host {
        Host {
            registry: registry.to_owned(),
            hostname: regferry_registry::api_hostname(registry).to_owned(),
            user: String::new(),
            pass: Secret::default(),
            token: Secret::default(),
            cred_helper: None,
            cred_expire: DEFAULT_CRED_EXPIRE,
            cred_host: None,
            tls: TlsMode::Enabled,
            regcert: None,
            client_cert: None,
            client_key: Secret::default(),
            path_prefix: String::new(),
            mirrors: Vec::new(),
            priority: 0,
            repo_auth: false,
            req_per_sec: None,
            req_concurrent: None,
            blob_chunk: DEFAULT_BLOB_CHUNK,
            blob_max: None,
            api_opts: BTreeMap::new(),
            limits: LimitSettings::default(),
        }
    }

    /// How to reach this registry, as the registry client takes it: every setting of the
    /// `creds` entry, with the process-wide `userAgent`, `blobLimit` and `limits` of
    /// `defaults`. All but the login, whose source (this entry, a credential helper, the
    /// Docker config) is the caller's to choose.
    pub fn client_options(&self, globals: &Globals) -> HostOptions {
        let mut o = HostOptions::new(&self.registry);
        o.hostname = self.hostname.clone();
        o.tls = self.tls;
        o.ca_pem = self.regcert.clone();
        o.client_cert_pem = self.client_cert.clone();
        o.client_key_pem = self.client_key.clone();
        o.token = self.token.clone();
        o.path_prefix = self.path_prefix.clone();
        o.req_concurrent = self.req_concurrent;
        o.req_per_sec = self.req_per_sec;
        o.blob_chunk = self.blob_chunk;
        o.blob_max = self.blob_max;
        o.disable_head = self.disable_head();
        o.repo_auth = self.repo_auth;
        o.limits = self.limits.over(globals.limits).client_limits(o.limits);
        if let Some(limit) = globals.blob_limit {
            o.limits.chunk_bytes = limit;
        }
        if let Some(ua) = &globals.user_agent {
            o.user_agent = ua.clone();
        }
        o
    }

    /// Whether `apiOpts.disableHead` asks for GET instead of HEAD.
    pub fn disable_head(&self) -> bool {
        self.api_opts
            .get("disableHead")
            .is_some_and(|v| v == "true")
    }
}

/// What a sync entry copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// One image (tag or digest).
    Image,
    /// The tags of one repository.
    Repository,
    /// The repositories of a registry (via `_catalog`).
    Registry,
}

impl SyncKind {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncKind::Image => "image",
            SyncKind::Repository => "repository",
            SyncKind::Registry => "registry",
        }
    }
}

/// Where images come from or go to.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// A repository on a registry, with a tag or digest for `type: image`.
    Registry(Reference),
    /// A whole registry, or the repositories under a path (`type: registry`).
    Namespace {
        /// Registry name as in references.
        registry: String,
        /// Repository path prefix, without slashes at either end; may be empty.
        prefix: String,
    },
    /// An OCI image layout directory (`ocidir://path[:tag]`).
    OciDir {
        /// The directory.
        path: PathBuf,
        /// The tag (`:tag`), for `type: image`.
        tag: Option<String>,
    },
}

impl Endpoint {
    /// The registry name, for registry endpoints.
    pub fn registry(&self) -> Option<&str> {
        match self {
            Endpoint::Registry(r) => Some(r.registry()),
            Endpoint::Namespace { registry, .. } => Some(registry),
            Endpoint::OciDir { .. } => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Registry(r) => write!(f, "{r}"),
            Endpoint::Namespace { registry, prefix } if prefix.is_empty() => f.write_str(registry),
            Endpoint::Namespace { registry, prefix } => write!(f, "{registry}/{prefix}"),
            Endpoint::OciDir { path, tag: None } => write!(f, "ocidir://{}", path.display()),
            Endpoint::OciDir { path, tag: Some(t) } => write!(f, "ocidir://{}:{t}", path.display()),
        }
    }
}

/// When the server runs an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Every `interval`.
    Interval(Duration),
    /// On a cron `schedule`.
    Schedule(Schedule),
}

/// regsync's source rate-limit guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Wait when fewer pulls than this remain; 0 disables the guard.
    pub min: u64,
    /// How long to wait before looking again (at least 5m).
    pub retry: Duration,
}

/// What `.Ref` shows a `backup` template: the target about to be overwritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefFields {
    /// The whole reference.
    pub reference: String,
    /// The registry (empty for an OCI layout).
    pub registry: String,
    /// The repository (the directory for an OCI layout).
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The digest the tag pointed at.
    pub digest: String,
}

/// The `backup` template, expanded at copy time with `.Ref` and `.Sync`.
#[derive(Clone)]
pub struct BackupTemplate {
    text: String,
    template: Template,
}

impl BackupTemplate {
    pub(crate) fn new(text: String, template: Template) -> Self {
        BackupTemplate { text, template }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Expands the template for the target image about to be overwritten. The result is a tag
    /// in the target repository, or a full reference when it contains `:` or `/`.
    pub fn render(
        &self,
        target: &Reference,
        entry: &SyncEntry,
        host: &dyn template::Host,
    ) -> Result<String, template::Error> {
        let fields = RefFields {
            reference: target.to_string(),
            registry: target.registry().to_owned(),
            repository: target.repository().to_owned(),
            tag: target.tag().unwrap_or_default().to_owned(),
            digest: target.digest().map(ToString::to_string).unwrap_or_default(),
        };
        self.render_fields(&fields, entry, host)
    }

    /// [`BackupTemplate::render`] for any target, an OCI layout included.
    pub fn render_fields(
        &self,
        target: &RefFields,
        entry: &SyncEntry,
        host: &dyn template::Host,
    ) -> Result<String, template::Error> {
        let mut data = BTreeMap::new();
        let r = Value::Map(BTreeMap::from([
            ("Reference".to_owned(), Value::Str(target.reference.clone())),
            ("Registry".to_owned(), Value::Str(target.registry.clone())),
            (
                "Repository".to_owned(),
                Value::Str(target.repository.clone()),
            ),
            ("Tag".to_owned(), Value::Str(target.tag.clone())),
            ("Digest".to_owned(), Value::Str(target.digest.clone())),
        ]));
        data.insert("Ref".to_owned(), r);
        data.insert("Sync".to_owned(), entry.template_data.clone());
        data.insert("Step".to_owned(), entry.template_data.clone());
        Ok(self
            .template
            .render(&Value::Map(data), host)?
            .trim()
            .to_owned())
    }
}

impl fmt::Debug for BackupTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupTemplate({:?})", self.text)
    }
}

impl PartialEq for BackupTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// `require` (regferry extension): what a source image must have before it is copied. An
/// image that lacks it is held: not copied, and the target keeps what it had.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Require {
    /// Each needs at least one matching referrer of the image, where its referrers are read.
    pub referrers: Vec<ReferrerFilter>,
    /// cosign public keys; when any is given, the image needs a signature one of them
    /// verifies.
    pub keys: Vec<SignatureKey>,
}

/// A cosign public key (ECDSA P-256) of `require.signature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureKey {
    /// The key.
    pub key: p256::ecdsa::VerifyingKey,
    /// `sha256:` and the first 16 hex digits of the key's PEM text (trimmed), to name it.
    pub fingerprint: String,
}

impl SignatureKey {
    /// Parses a PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign generate-key-pair`
    /// writes `cosign.pub`).
    pub fn from_pem(pem: &str) -> Option<SignatureKey> {
        use p256::pkcs8::DecodePublicKey as _;
        let pem = pem.trim();
        let key = p256::ecdsa::VerifyingKey::from_public_key_pem(pem).ok()?;
        let digest = regferry_registry::blob::sha256(pem.as_bytes()).to_string();
        let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
        Some(SignatureKey {
            key,
            fingerprint: format!("sha256:{}", &hex[..16]),
        })
    }
}

/// `prune` (regferry extension): after a run that read the source's tag list completely,
/// delete the target tags in the entry's scope that the source no longer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    /// The most one run may delete in one repository; above it, nothing is deleted.
    pub max_delete: MaxDelete,
}

/// `prune.maxDelete`: an absolute count, or a percentage of the target's tags in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    /// At most this many tags.
    Count(usize),
    /// At most this percentage (1-100) of the tags in scope, rounded up.
    Percent(u32),
}

impl Default for MaxDelete {
    fn default() -> Self {
        MaxDelete::Percent(10)
    }
}

impl MaxDelete {
    /// How many of `in_scope` tags one run may delete. A percentage rounds up, so that a
    /// window of a few tags (`latest: 5`) can still move by one.
    pub fn limit(self, in_scope: usize) -> usize {
        match self {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(p) => (in_scope * p as usize).div_ceil(100),
        }
    }
}

impl fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// One `sync` entry with defaults applied, templates expanded and everything parsed.
#[derive(Debug, Clone)]
pub struct SyncEntry {
    /// Index in the file's `sync` list, from 0.
    pub index: usize,
    /// The entry's name: `name` when set, else a stable id derived from source and target,
    /// so that metrics and the admin API keep naming the same entry when others are added.
    pub name: String,
    /// Whether `name` was written in the file (else it is the derived id).
    pub named: bool,
    /// What is copied.
    pub kind: SyncKind,
    /// Where from.
    pub source: Endpoint,
    /// Where to: the only target, or the first of `targets`.
    pub target: Endpoint,
    /// regferry extension: the targets after the first, when the entry has `targets`.
    /// Each gets the same selection; the source is read once for all of them.
    pub more_targets: Vec<Endpoint>,
    /// Which tags (repository and registry types).
    pub tags: TagFilter,
    /// Which repositories (registry type).
    pub repos: RepoFilter,
    /// Copy only this platform's manifest: the target becomes a single-platform image.
    pub platform: Option<Platform>,
    /// Copy only these platforms of an index; `None` in the list matches descriptors without a platform.
    pub platforms: Vec<Option<Platform>>,
    /// When the server runs this entry; `None`: only `once`/`check` run it.
    pub trigger: Option<Trigger>,
    /// Keep the old image before overwriting a tag.
    pub backup: Option<BackupTemplate>,
    /// Source rate-limit guard.
    pub ratelimit: RateLimit,
    /// Top-level media types to copy.
    pub media_types: Vec<String>,
    /// Copy layers that have `urls` (foreign layers).
    pub include_external: bool,
    /// Copy `sha256-<hex>.*` tags with each digest.
    pub digest_tags: bool,
    /// Copy OCI referrers.
    pub referrers: bool,
    /// Which referrers; empty means all.
    pub referrer_filters: Vec<ReferrerFilter>,
    /// Where to read referrers from instead of the source (merged when several).
    pub referrer_sources: Vec<Endpoint>,
    /// Where to write referrers instead of the target.
    pub referrer_target: Option<Endpoint>,
    /// Scan an OCI layout for referrers (regsync's `referrerSlow`).
    pub referrer_slow: bool,
    /// Skip referrer and digest-tag checks when the target digest already matches.
    pub fast_check: bool,
    /// Re-walk every child even when the top digest matches.
    pub force_recursive: bool,
    /// `.Sync` for the backup template: the entry as regsync's Go struct would show it
    /// (nil when the entry has no backup, the only template read at run time).
    pub template_data: Value,
    /// regferry extension: delete target tags the source no longer has; `None` when off.
    pub prune: Option<Prune>,
    /// regferry extension: what an image needs before it is copied; `None` when nothing.
    pub require: Option<Require>,
}

/// The default name of an entry: `e-` and 8 hex digits of an FNV-1a hash of
/// `source -> target`, stable across restarts and unaffected by other entries.
pub fn default_entry_name(source: &str, target: &str) -> String {
    let h = regferry_registry::hash::fnv1a(format!("{source} -> {target}").as_bytes());
    format!("e-{:08x}", (h >> 32) ^ (h & 0xffff_ffff))
}

impl SyncEntry {
    /// What a person calls the entry: its `name` when the file gives one, else `sync[i]`.
    pub fn display_name(&self) -> String {
        if self.named {
            self.name.clone()
        } else {
            format!("sync[{}]", self.index)
        }
    }

    /// A short label for logs: `sync[2] docker.io/library/busybox -> ...`.
    pub fn label(&self) -> String {
        format!(
            "sync[{}] {} -> {}",
            self.index,
            self.source,
            self.targets_text()
        )
    }

    /// Every target: `target`, then the rest of `targets`.
    pub fn targets(&self) -> impl Iterator<Item = &Endpoint> {
        std::iter::once(&self.target).chain(&self.more_targets)
    }

    /// The targets as a person reads them: `a` or `a, b, c`.
    pub fn targets_text(&self) -> String {
        self.targets()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
