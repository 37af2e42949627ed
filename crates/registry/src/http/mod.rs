//! regferry's registry client: a thin layer over reqwest that keeps what a sync daemon
//! needs and `oci-client` hides: every response header (rate limits, `Retry-After`, `Link`,
//! `OCI-Subject`, `Content-Type`), retries with backoff, per-registry limits, bearer-token
//! scopes across repositories (for cross-repository mounts), and client certificates.
mod auth;
mod challenge;
mod concurrency;
mod ops;
mod referrers;
mod send;

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::Credential;
use crate::error::{Error, Result};
use crate::memory::Memory;
use crate::secret::Secret;

pub use ops::{ManifestHead, Mount, PushedManifest, RateLimitHeaders, UploadMode, UploadSession};
pub use send::RequestStats;

/// How to speak TLS to a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Verified HTTPS.
    #[default]
    Enabled,
    /// HTTPS without certificate verification.
    Insecure,
    /// Plain HTTP.
    Disabled,
}

impl TlsMode {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Enabled => "enabled",
            TlsMode::Insecure => "insecure",
            TlsMode::Disabled => "disabled",
        }
    }
}

/// Where a login comes from, looked up when the registry first asks for one.
#[derive(Debug, Clone, Default)]
pub enum LoginSource {
    /// No login: anonymous access.
    #[default]
    Anonymous,
    /// A fixed login from the configuration.
    Static(Credential),
    /// `docker-credential-<helper>`, re-asked after `expire`.
    Helper {
        /// The helper's name.
        helper: String,
        /// The server name passed to it.
        server: String,
        /// How long an answer is reused.
        expire: Duration,
    },
    /// The Docker CLI configuration file (its helpers included).
    DockerConfig {
        /// The parsed file.
        config: Arc<crate::credentials::DockerConfig>,
        /// The name looked up.
        server: String,
    },
}

/// Retry behaviour for one registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles each time.
    pub base_delay: Duration,
    /// The longest backoff, and the longest `Retry-After` honoured.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Bounds on what one registry may send and how long it may take. Registries are not
/// trusted: every answer is read against these, and a registry that exceeds one gets a
/// clear error instead of memory or time. The defaults suit every registry seen in practice;
/// docs/operations.md ("Security model") lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to open a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time from sending a request to its response headers; for a streamed upload, from
    /// its last byte.
    pub response_timeout: Duration,
    /// Longest silence inside a response body, and longest a streamed upload may go
    /// without sending a byte; also the window over which a blob download must keep up
    /// [`Limits::min_speed`].
    pub idle_timeout: Duration,
    /// Slowest a blob download may be, in bytes per second of waiting for the registry
    /// (time spent waiting for the target does not count), averaged over
    /// [`Limits::idle_timeout`]: a source that trickles is given up like a silent one.
    pub min_speed: u64,
    /// A whole request whose answer is read in full (manifest, listing, token, error):
    /// headers and body together.
    pub request_deadline: Duration,
    /// Largest token answer.
    pub token_bytes: usize,
    /// Largest manifest (distribution itself refuses more than 4 MiB).
    pub manifest_bytes: usize,
    /// Largest page of a tag list, catalog or referrers listing.
    pub page_bytes: usize,
    /// Largest listing, all its pages together: what one listing may hold in memory.
    pub listing_bytes: usize,
    /// Most pages one listing may have.
    pub pages: usize,
    /// Most names one listing may hold (tags of a repository, repositories of a catalog,
    /// referrers of a subject).
    pub names: usize,
    /// Largest `OCI-Chunk-Min-Length` a registry may demand (regsync's `blobLimit`): a
    /// chunk is held in memory, so a larger demand fails the upload instead.
    pub chunk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(120),
            min_speed: 1 << 10,
            request_deadline: Duration::from_secs(300),
            token_bytes: 1 << 20,
            manifest_bytes: 4 << 20,
            page_bytes: 16 << 20,
            listing_bytes: 64 << 20,
            pages: 10_000,
            names: 100_000,
            chunk_bytes: 64 << 20,
        }
    }
}

/// Requests in flight to one registry at once, unless configured (`reqConcurrent`): the
/// start and the ceiling of the adaptive limit (see `concurrency.rs`).
pub const ADAPTIVE_REQ_CONCURRENT: (u32, u32) = (concurrency::INITIAL, concurrency::MAX);

/// Chunk size of chunked uploads, unless configured (`blobChunk`).
pub const DEFAULT_BLOB_CHUNK: u64 = 1 << 20;

/// Everything needed to talk to one registry.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The registry's name in references (`docker.io`, `localhost:5000`).
    pub registry: String,
    /// The host to connect to.
    pub hostname: String,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificate (PEM).
    pub ca_pem: Option<String>,
    /// Client certificate (PEM) for mTLS.
    pub client_cert_pem: Option<String>,
    /// Client key (PEM) for mTLS.
    pub client_key_pem: Secret,
    /// Where the login comes from.
    pub login: LoginSource,
    /// A bearer token to send as is (regsync's experimental `token`).
    pub token: Secret,
    /// Inserted after `/v2/` on repository requests.
    pub path_prefix: String,
    /// Requests in flight at once: a hard limit, or `None` for one that adapts to the
    /// registry (see [`ADAPTIVE_REQ_CONCURRENT`]).
    pub req_concurrent: Option<u32>,
    /// Requests per second; `None` is unlimited.
    pub req_per_sec: Option<f64>,
    /// Chunk size for chunked uploads.
    pub blob_chunk: u64,
    /// Blobs above this size go up in chunks.
    pub blob_max: Option<u64>,
    /// Use GET where HEAD would do (for registries whose HEAD is broken).
    pub disable_head: bool,
    /// `User-Agent`.
    pub user_agent: String,
    /// Retries.
    pub retry: RetryPolicy,
    /// Keep token state per repository (regsync's `repoAuth`).
    pub repo_auth: bool,
    /// When this host is a pull-only mirror: the upstream registry, sent as `?ns=` so a
    /// mirror serving several upstreams knows which one is meant.
    pub mirror_of: Option<String>,
    /// Bounds on answers and time.
    pub limits: Limits,
}

impl HostOptions {
    /// Defaults for a registry without configuration.
    pub fn new(registry: &str) -> HostOptions {
        HostOptions {
            registry: registry.to_owned(),
            hostname: crate::reference::api_hostname(registry).to_owned(),
            tls: TlsMode::Enabled,
            ca_pem: None,
            client_cert_pem: None,
            client_key_pem: Secret::default(),
            login: LoginSource::Anonymous,
            token: Secret::default(),
            path_prefix: String::new(),
            req_concurrent: None,
            req_per_sec: None,
            blob_chunk: DEFAULT_BLOB_CHUNK,
            blob_max: None,
            disable_head: false,
            user_agent: format!("regferry/{}", env!("CARGO_PKG_VERSION")),
            retry: RetryPolicy::default(),
            repo_auth: false,
            mirror_of: None,
            limits: Limits::default(),
        }
    }
}

/// A client for one registry. Cheap to clone; clones share connections, tokens and limits.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    inner: Arc<send::Inner>,
}

impl RegistryClient {
    /// Builds a client with a memory of its own; fails on unusable TLS material.
    pub fn new(opts: HostOptions) -> Result<RegistryClient> {
        RegistryClient::sharing(opts, Memory::new())
    }

    /// Builds a client that shares `memory` with the other clients and layouts made with it.
    pub fn sharing(opts: HostOptions, memory: Memory) -> Result<RegistryClient> {
        // HTTP clients for the registry's own origin, which present the client certificate,
        // and for any other host the registry names (object storage behind a blob redirect,
        // an upload `Location`, a token realm), which present nothing; each twice, as blob
        // bodies get connections of their own (see `send::Clients`). None follows redirects
        // by itself: `send` does, choosing the client and the credentials for each hop.
        let own = build_http(&opts, true, SMALL_IDLE)?;
        let bulk = build_http(&opts, true, BULK_IDLE)?;
        let foreign = build_http(&opts, false, SMALL_IDLE)?;
        let foreign_bulk = build_http(&opts, false, BULK_IDLE)?;
        let scheme = if opts.tls == TlsMode::Disabled {
            "http"
        } else {
            "https"
        };
        let base = url::Url::parse(&format!("{scheme}://{}/", opts.hostname))
            .ok()
            .filter(|u| u.path() == "/" && u.query().is_none() && u.username().is_empty())
            .ok_or_else(|| Error::Protocol {
                what: opts.registry.clone(),
                reason: format!("hostname {:?} is not a host[:port]", opts.hostname),
            })?;
        Ok(RegistryClient {
            inner: Arc::new(send::Inner::new(
                opts,
                send::Clients {
                    own,
                    bulk,
                    foreign,
                    foreign_bulk,
                },
                base,
                memory,
            )),
        })
    }

    /// The registry's name in references.
    pub fn registry(&self) -> &str {
        &self.inner.opts.registry
    }

    /// The options this client was built with.
    pub fn options(&self) -> &HostOptions {
        &self.inner.opts
    }

    /// The memory this client shares.
    pub(crate) fn memory(&self) -> &Memory {
        &self.inner.memory
    }

    /// The resolved host, `scheme://host[:port]`: what the client's memory is keyed by.
    pub(crate) fn origin(&self) -> &str {
        self.inner.base.as_str().trim_end_matches('/')
    }

    /// Counters of the requests sent so far.
    pub fn stats(&self) -> &RequestStats {
        &self.inner.stats
    }

    /// Requests allowed in flight to this registry now: `reqConcurrent`, or where the
    /// adaptive limit stands.
    pub fn concurrency_limit(&self) -> u32 {
        self.inner.concurrency.limit()
    }

    /// Whether two clients talk to the same registry host (so blobs can be mounted).
    pub fn same_host(&self, other: &RegistryClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.opts.hostname == other.inner.opts.hostname
                && self.inner.opts.tls == other.inner.opts.tls)
    }
}

/// Idle connections kept per host for HEADs, manifests, listings and uploads: as many as the
/// adaptive request limit allows in flight.
const SMALL_IDLE: usize = 32;
/// Idle connections kept per host for blob bodies (see [`send::Clients`]). Each holds a read
/// buffer of up to [`BUF_MAX`]. With hyper's 408 KiB buffers, 2 kept peak RSS on the lab set
/// about 1 MiB lower than 4, but reconnecting cost 0.1–0.2 s over a 50 ms round trip
/// (docs/performance.md, issue 11, session 8).
const BULK_IDLE: usize = 4;

/// The largest an HTTP/1 connection's read buffer grows (hyper grows it while reads fill it,
/// to about 400 KiB by default, and keeps it for the connection's life). A response head
/// that does not end within it is refused. With 64 KiB, a cold run of the lab set peaks
/// 4 MiB lower (docs/performance.md, issue 11, session 9). HTTP/2 keeps hyper's own bounds:
/// a 16 KiB header list, and flow-control windows for bodies.
pub(crate) const BUF_MAX: usize = 64 << 10;

/// An HTTP client for one registry: its TLS trust (and, for its own origin, its client
/// certificate), timeouts, and no automatic redirects.
fn build_http(opts: &HostOptions, with_identity: bool, idle: usize) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(opts.user_agent.clone())
        .connect_timeout(opts.limits.connect_timeout)
        // No `read_timeout`: reqwest runs it from the start of a request to its answer,
        // which for an upload is the whole upload. Silences are bounded here instead:
        // answers by `response_timeout`, uploads by `idle_timeout` without progress (see
        // `send`), and blob downloads by `idle_timeout` between chunks (see `ops::Resume`).
        .pool_max_idle_per_host(idle)
        .http1_max_buf_size(BUF_MAX)
        .redirect(reqwest::redirect::Policy::none());
    let tls_err = |reason: String| Error::Tls {
        registry: opts.registry.clone(),
        reason,
    };
    // `insecure` is about the registry's own certificate; another host it names is verified.
    if opts.tls == TlsMode::Insecure && with_identity {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    // The own origin of a plain-HTTP registry is never spoken to over TLS (an `https://` URL
    // on the same host is another origin), so its clients load no system roots: about 85 KB
    // of parsed certificates per client otherwise.
    if opts.tls == TlsMode::Disabled && with_identity {
        b = b.tls_certs_only(Vec::new());
    }
    if let Some(pem) = &opts.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            tls_err(format!(
                "regcert is not a PEM certificate: {}",
                send::chain(&e)
            ))
        })?;
        if certs.is_empty() {
            return Err(tls_err(
                "regcert holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(cert) = opts.client_cert_pem.as_ref().filter(|_| with_identity) {
        let pem = format!("{}\n{}\n", cert.trim(), opts.client_key_pem.expose().trim());
        // reqwest's errors display as just "builder error"; the cause is in the chain.
        let id = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| {
            tls_err(format!(
                "clientCert/clientKey are not a PEM certificate and key: {}",
                send::chain(&e)
            ))
        })?;
        b = b.identity(id);
    }
    // With the client's key, rustls checks here that it is usable and matches clientCert.
    b.build().map_err(|e| tls_err(send::chain(&e)))
}
