//! The distribution API calls a sync needs, over [`super::send`].
//! Spec: https://github.com/opencontainers/distribution-spec/blob/main/spec.md
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LINK, LOCATION, RANGE,
};
use reqwest::{Method, Response, StatusCode};
use tokio::time::Instant;
use url::Url;

use super::RegistryClient;
use super::challenge::next_link;
use super::send::{Body, Deadline, Endpoint, Request, describe, parse_retry_after, redact};
use crate::blob::{Blob, ByteStream};
use crate::digest::Digest;
use crate::error::{Error, Result, printable};
use crate::manifest::{Manifest, media_type};

/// How often a blob download resumes after a broken connection.
const MAX_RESUMES: u32 = 5;

/// What a manifest HEAD tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Docker Hub's pull-limit headers, when sent.
    pub rate_limit: Option<RateLimitHeaders>,
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, as Docker Hub sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Pulls allowed per window.
    pub limit: Option<u64>,
    /// Pulls left in the window.
    pub remaining: u64,
    /// Seconds until the window resets, when sent.
    pub reset: Option<u64>,
}

/// What a manifest PUT answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    /// `Docker-Content-Digest`, when sent.
    pub digest: Option<Digest>,
    /// `OCI-Subject`: the registry indexed the manifest's subject (referrers API).
    pub subject: Option<Digest>,
}

/// How to upload a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    /// One streamed PUT with the whole blob (needs the size).
    Monolithic,
    /// PATCH chunks of `blobChunk` bytes, then PUT.
    Chunked,
}

/// The outcome of a cross-repository mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The blob is now in the target repository.
    Mounted,
    /// The registry declined (202) and opened an upload session instead.
    Upload(UploadSession),
    /// The store cannot mount (an OCI layout).
    Unsupported,
}

/// An upload session a registry opened: where to send the blob, and the smallest chunk
/// it takes (`OCI-Chunk-Min-Length`), if it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// The session's URL (`Location`).
    pub url: Url,
    /// The registry's smallest chunk for chunked uploads.
    pub min_chunk: Option<u64>,
    /// Its entry among the client's open sessions.
    id: u64,
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn repo_scope(repo: &str, push: bool) -> String {
    if push {
        format!("repository:{repo}:pull,push")
    } else {
        format!("repository:{repo}:pull")
    }
}

fn rate_limit(h: &HeaderMap) -> Option<RateLimitHeaders> {
    // Values look like "100;w=21600"; the count is before the first ';'.
    let num = |name: &str| {
        header_str(h, name).and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok())
    };
    Some(RateLimitHeaders {
        remaining: num("ratelimit-remaining")?,
        limit: num("ratelimit-limit"),
        reset: num("ratelimit-reset"),
    })
}

/// Turns a non-success response into an error, with the registry's error code and message.
pub(crate) async fn status_error(method: &Method, url: &Url, resp: Response) -> Error {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorBody>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let body = read_limited(resp, 64 << 10).await.unwrap_or_default();
    let (code, message) = match serde_json::from_slice::<Errors>(&body) {
        // The registry's words reach terminals and logs: escaped and cut short.
        Ok(e) if !e.errors.is_empty() => (
            Some(printable(&e.errors[0].code, 64)).filter(|c| !c.is_empty()),
            Some(printable(&e.errors[0].message, 512)).filter(|m| !m.is_empty()),
        ),
        _ => (None, None),
    };
    Error::Status {
        method: method.to_string(),
        url: redact(url),
        status,
        code,
        message,
        retry_after,
    }
}

/// Reads a whole (small) answer: at most `limit` bytes, and by the request's deadline
/// when [`super::send::Inner::send`] gave it one.
pub(crate) async fn read_limited(resp: Response, limit: usize) -> Result<Bytes> {
    let url = resp.url().clone();
    let deadline = resp.extensions().get::<Deadline>().copied();
    let read = async {
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(Error::Protocol {
                what: redact(&url),
                reason: format!("answer larger than {limit} bytes"),
            });
        }
        let mut out = BytesMut::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Transport {
                method: "GET".into(),
                url: redact(&url),
                reason: describe(e),
                retryable: true,
            })?;
            if out.len() + chunk.len() > limit {
                return Err(Error::Protocol {
                    what: redact(&url),
                    reason: format!("answer larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    };
    match deadline {
        None => read.await,
        Some(Deadline(at)) => tokio::time::timeout_at(at, read).await.unwrap_or_else(|_| {
            Err(Error::Transport {
                method: "GET".into(),
                url: redact(&url),
                reason: "the answer did not arrive in time (request deadline)".into(),
                retryable: true,
            })
        }),
    }
}

impl RegistryClient {
    pub(crate) fn plain_request(&self, method: Method, url: Url, scopes: Vec<String>) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            scopes,
            bulk: false,
        }
    }

    /// A GET of a blob's body, over the connections kept for blob bodies.
    fn blob_request(&self, url: Url, scopes: Vec<String>) -> Request {
        Request {
            bulk: true,
            ..self.plain_request(Method::GET, url, scopes)
        }
    }

    /// The digest, type and size of a manifest; `None` when it does not exist.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<ManifestHead>> {
        let i = &self.inner;
        if i.opts.disable_head {
            return match self.get_manifest(repo, reference).await {
                Ok(m) => Ok(Some(ManifestHead {
                    size: m.bytes.len() as u64,
                    digest: m.digest,
                    media_type: m.media_type,
                    rate_limit: None,
                })),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            };
        }
        let url = i.repo_url(repo, Endpoint::Manifest(reference))?;
        let mut r = self.plain_request(Method::HEAD, url.clone(), vec![repo_scope(repo, false)]);
        r.headers.insert(
            ACCEPT,
            HeaderValue::from_static(media_type::MANIFEST_ACCEPT),
        );
        let resp = i.send(r).await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let h = resp.headers();
                let digest =
                    header_str(h, "docker-content-digest").and_then(|d| Digest::parse(d).ok());
                // A Content-Type that declares no manifest type is ignored, as on a GET: the
                // manifest is read below and its own type used.
                let media =
                    header_str(h, "content-type").and_then(crate::manifest::declared_media_type);
                let size = header_str(h, "content-length").and_then(|v| v.parse().ok());
                let rl = rate_limit(h);
                if let Some(r) = rl {
                    i.stats.record_ratelimit(r.remaining);
                }
                match (digest, media, size) {
                    (Some(digest), Some(media_type), Some(size)) => Ok(Some(ManifestHead {
                        digest,
                        media_type,
                        size,
                        rate_limit: rl,
                    })),
                    // No digest header (some registries), or no usable type or size: fall
                    // back to GET and hash.
                    _ => {
                        let m = self.get_manifest(repo, reference).await?;
                        Ok(Some(ManifestHead {
                            size: m.bytes.len() as u64,
                            digest: m.digest,
                            media_type: m.media_type,
                            rate_limit: rl,
                        }))
                    }
                }
            }
            _ => Err(status_error(&Method::HEAD, &url, resp).await),
        }
    }

    /// A manifest's exact bytes, checked against the digest asked for or announced.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<Manifest> {
        let i = &self.inner;
        let url = i.repo_url(repo, Endpoint::Manifest(reference))?;
        let mut r = self.plain_request(Method::GET, url.clone(), vec![repo_scope(repo, false)]);
        r.headers.insert(
            ACCEPT,
            HeaderValue::from_static(media_type::MANIFEST_ACCEPT),
        );
        let resp = i.send(r).await?;
        let what = || format!("{}/{repo}:{reference}", i.opts.registry);
        match resp.status() {
            StatusCode::NOT_FOUND => return Err(Error::NotFound { what: what() }),
            s if !s.is_success() => return Err(status_error(&Method::GET, &url, resp).await),
            _ => {}
        }
        let media = header_str(resp.headers(), "content-type").map(str::to_owned);
        let announced =
            header_str(resp.headers(), "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let bytes = read_limited(resp, i.opts.limits.manifest_bytes).await?;
        let m = Manifest::new(bytes, media.as_deref());
        // Schema 1 signed manifests are digested without their signatures; skip that check.
        let schema1 = m.media_type == media_type::DOCKER_SCHEMA1_SIGNED;
        let expected = Digest::parse(reference).ok().or(announced);
        if let Some(expected) = expected
            && !schema1
            && expected.algorithm() == "sha256"
            && expected != m.digest
        {
            return Err(Error::DigestMismatch {
                expected,
                actual: m.digest,
            });
        }
        Ok(m)
    }

    /// Pushes a manifest's exact bytes under a tag or its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        m: &Manifest,
    ) -> Result<PushedManifest> {
        let i = &self.inner;
        let url = i.repo_url(repo, Endpoint::Manifest(reference))?;
        let mut r = self.plain_request(Method::PUT, url.clone(), vec![repo_scope(repo, true)]);
        let ct = HeaderValue::from_str(&m.media_type).map_err(|_| Error::InvalidManifest {
            reference: format!("{repo}:{reference}"),
            reason: format!("media type {:?} is not a valid header", m.media_type),
        })?;
        r.headers.insert(CONTENT_TYPE, ct);
        r.body = Body::Bytes(m.bytes.clone());
        let resp = i.send(r).await?;
        if !resp.status().is_success() {
            return Err(status_error(&Method::PUT, &url, resp).await);
        }
        let h = resp.headers();
        let digest = header_str(h, "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        if let Some(d) = &digest
            && d.algorithm() == "sha256"
            && *d != m.digest
        {
            return Err(Error::DigestMismatch {
                expected: m.digest.clone(),
                actual: d.clone(),
            });
        }
        Ok(PushedManifest {
            digest,
            subject: header_str(h, "oci-subject").and_then(|d| Digest::parse(d).ok()),
        })
    }

    /// Every tag of a repository, following `Link` pagination. Registries that ignore
    /// `n`/`last` (distribution 2.8 on tags) would repeat a page forever; a page that adds
    /// nothing new, or a link seen before, ends the listing.
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Tags {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let i = &self.inner;
        let first = i.repo_url(repo, Endpoint::Tags)?;
        let pages = self
            .paginate(first, vec![repo_scope(repo, false)], |b| {
                serde_json::from_slice::<Tags>(b).map(|t| t.tags.unwrap_or_default())
            })
            .await;
        let pages = pages.map(|names| self.valid_names(names, "tag", repo, crate::is_valid_tag));
        match pages {
            // The registry says the repository does not exist. A 404 without such a code
            // (a proxy that hides listings) stays a status error: still "not found" to a
            // reader, but not proof that the repository is empty.
            Err(Error::Status {
                status: 404,
                code: Some(code),
                ..
            }) if matches!(code.as_str(), "NAME_UNKNOWN" | "NOT_FOUND") => Err(Error::NotFound {
                what: format!("{}/{repo}", i.opts.registry),
            }),
            other => other,
        }
    }

    /// Every repository of the registry (`_catalog`), following `Link` pagination.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            #[serde(default)]
            repositories: Option<Vec<String>>,
        }
        let mut first = self.inner.url("/v2/_catalog");
        first.query_pairs_mut().append_pair("n", "1000");
        let names = self
            .paginate(first, vec!["registry:catalog:*".to_owned()], |b| {
                serde_json::from_slice::<Catalog>(b).map(|c| c.repositories.unwrap_or_default())
            })
            .await?;
        Ok(self.valid_names(names, "repository", "_catalog", crate::is_valid_repository))
    }

    /// The names of a listing that pass the grammar; the others are skipped with one
    /// warning and counted ([`super::RequestStats::invalid_names`]): they never reach a URL.
    fn valid_names(
        &self,
        names: Vec<String>,
        kind: &str,
        repo: &str,
        valid: fn(&str) -> bool,
    ) -> Vec<String> {
        let (good, bad): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| valid(n));
        if let Some(first) = bad.first() {
            self.inner.stats.record_invalid_names(bad.len());
            let example: String = first.chars().take(100).collect();
            tracing::warn!(
                registry = %self.inner.opts.registry,
                repository = %repo,
                count = bad.len(),
                example = ?example,
                "Skipping names in the listing that are not a valid {kind}"
            );
        }
        good
    }

    /// Follows a listing's `Link` pages. Pages stay on the registry's own origin (a `Link`
    /// to another host is an error naming both), and a listing ends with an error past
    /// [`super::Limits::pages`] pages or [`super::Limits::names`] names.
    async fn paginate(
        &self,
        first: Url,
        scopes: Vec<String>,
        parse: impl Fn(&[u8]) -> serde_json::Result<Vec<String>>,
    ) -> Result<Vec<String>> {
        let i = &self.inner;
        let limits = i.opts.limits;
        let mut out = Vec::new();
        // Names already listed, by a hash keyed at random (so a registry cannot choose
        // names that collide): the names themselves are held once, in `out`.
        let keys = std::hash::RandomState::new();
        let mut seen_items: HashSet<u64> = HashSet::new();
        let mut seen_urls: HashSet<String> = HashSet::new();
        let mut listed = 0usize;
        let mut url = first;
        loop {
            if seen_urls.len() >= limits.pages {
                return Err(Error::Protocol {
                    what: redact(&url),
                    reason: format!("listing has more than {} pages", limits.pages),
                });
            }
            seen_urls.insert(url.to_string());
            let resp = i
                .send(self.plain_request(Method::GET, url.clone(), scopes.clone()))
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(&Method::GET, &url, resp).await);
            }
            let next = resp
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let body = read_limited(resp, limits.page_bytes).await?;
            listed += body.len();
            if listed > limits.listing_bytes {
                return Err(Error::Protocol {
                    what: redact(&url),
                    reason: format!("listing is larger than {} bytes", limits.listing_bytes),
                });
            }
            let items = parse(&body).map_err(|e| Error::Protocol {
                what: redact(&url),
                reason: format!("invalid listing: {e}"),
            })?;
            let mut added = 0;
            for t in items {
                if seen_items.insert(std::hash::BuildHasher::hash_one(&keys, &t)) {
                    if out.len() >= limits.names {
                        return Err(Error::Protocol {
                            what: redact(&url),
                            reason: format!("listing has more than {} names", limits.names),
                        });
                    }
                    out.push(t);
                    added += 1;
                }
            }
            let Some(next) = next else { break };
            let next = self.next_page(&url, &next)?;
            if added == 0 || seen_urls.contains(next.as_str()) {
                tracing::debug!(url = %redact(&url), "Pagination made no progress; stopping");
                break;
            }
            url = next;
        }
        Ok(out)
    }

    /// The next page a `Link` names, which must be on the registry's own origin: a page
    /// elsewhere would be asked with the registry's credentials, or trusted as its answer.
    pub(crate) fn next_page(&self, url: &Url, link: &str) -> Result<Url> {
        let next = url.join(link).map_err(|e| Error::Protocol {
            what: redact(url),
            reason: format!("invalid Link: {e}"),
        })?;
        if !self.inner.is_own(&next) {
            return Err(Error::Protocol {
                what: redact(url),
                reason: format!(
                    "the next page (Link) is on {}, not on the registry's own {}; not followed",
                    origin_text(&next),
                    origin_text(&self.inner.base)
                ),
            });
        }
        Ok(next)
    }

    /// The size of a blob in a repository; `None` when absent.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let i = &self.inner;
        let url = i.repo_url(repo, Endpoint::Blob(digest))?;
        let resp = i
            .send(self.plain_request(Method::HEAD, url.clone(), vec![repo_scope(repo, false)]))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                header_str(resp.headers(), "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            _ => Err(status_error(&Method::HEAD, &url, resp).await),
        }
    }

    /// Streams a blob. A connection that breaks mid-body is resumed with `Range` requests.
    /// The stream is not verified here; [`crate::blob::verify`] does that for the copy.
    pub async fn get_blob(&self, repo: &str, digest: &Digest, size: Option<u64>) -> Result<Blob> {
        let i = &self.inner;
        let url = i.repo_url(repo, Endpoint::Blob(digest))?;
        let scopes = vec![repo_scope(repo, false)];
        let resp = i
            .send(self.blob_request(url.clone(), scopes.clone()))
            .await?;
        match resp.status() {
            StatusCode::NOT_FOUND => {
                return Err(Error::NotFound {
                    what: format!("blob {digest} in {}/{repo}", i.opts.registry),
                });
            }
            s if !s.is_success() => return Err(status_error(&Method::GET, &url, resp).await),
            _ => {}
        }
        let len = resp.content_length().or(size);
        let state = Resume {
            client: self.clone(),
            url,
            scopes,
            offset: 0,
            len,
            body: Some(Box::pin(resp.bytes_stream())),
            resumes: 0,
            pace: Pace::default(),
        };
        Ok(Blob {
            size: len,
            stream: Box::pin(futures_util::stream::unfold(state, Resume::next)),
        })
    }

    /// Asks the registry to link a blob from another repository on the same host.
    pub async fn mount_blob(&self, repo: &str, digest: &Digest, from_repo: &str) -> Result<Mount> {
        let i = &self.inner;
        if !crate::reference::is_valid_repository(from_repo) {
            return Err(Error::invalid_name("repository", from_repo));
        }
        let mut url = i.repo_url(repo, Endpoint::Uploads)?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from_repo);
        let scopes = vec![repo_scope(repo, true), repo_scope(from_repo, false)];
        let resp = i
            .send(self.plain_request(Method::POST, url.clone(), scopes))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Upload(
                self.opened_session(repo, &url, resp.headers()).await?,
            )),
            _ => Err(status_error(&Method::POST, &url, resp).await),
        }
    }

    /// Removes `tag` from `repo`, and nothing else: other tags on the same image stay.
    /// `Ok(false)` when the tag was not there.
    ///
    /// A registry that deletes tags (`DELETE …/manifests/<tag>`, OCI distribution 1.1) does
    /// it in one request. One that deletes only by digest (distribution 2.8, where that
    /// removes every tag on the digest) gets what `regctl tag delete` does: the tag is
    /// pointed at a small manifest of its own, which is then deleted by digest. Whether the
    /// registry deletes at all is asked with that manifest untagged first, so a registry
    /// that refuses deletes leaves the tag as it was.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        match self.delete_manifest(repo, tag).await {
            Ok(true) => return Ok(true),
            // A 404 may mean "no such tag" or "no deleting by tag here": only a HEAD tells.
            Ok(false) => {}
            // 400/405: not by tag here (distribution 2.8 answers 400 DIGEST_INVALID for a
            // tag; others say UNSUPPORTED). Anything else is an error to report as is.
            Err(Error::Status {
                status: 400 | 405, ..
            }) => {}
            Err(e) => return Err(e),
        }
        let Some(old) = self.head_manifest(repo, tag).await? else {
            return Ok(false);
        };
        let placeholder = placeholder_manifest(repo, tag);
        let empty = crate::blob::sha256(EMPTY_JSON);
        if self.blob_size(repo, &empty).await?.is_none() {
            let blob = Blob::from_bytes(Bytes::from_static(EMPTY_JSON));
            self.put_blob(repo, &empty, blob, UploadMode::Monolithic, None)
                .await?;
        }
        let digest = placeholder.digest.to_string();
        let refused = |status| Error::Protocol {
            what: format!("{}/{repo}@{digest}", self.inner.opts.registry),
            reason: format!(
                "the registry answered {status} to deleting a manifest it had just stored: it does not delete, so {tag} was left as it was"
            ),
        };
        // Deletes must work before the tag is moved, or the tag would stay on the placeholder.
        self.put_manifest(repo, &digest, &placeholder).await?;
        if !self.delete_manifest(repo, &digest).await? {
            return Err(refused("404"));
        }
        self.put_manifest(repo, tag, &placeholder).await?;
        match self.delete_manifest(repo, &digest).await {
            Ok(true) => Ok(true),
            failed => {
                // Put the tag back where it was; the image itself was never touched.
                let restored = async {
                    let m = self.get_manifest(repo, &old.digest.to_string()).await?;
                    self.put_manifest(repo, tag, &m).await
                }
                .await;
                let reason = match failed {
                    Err(e) => e.to_string(),
                    Ok(_) => "404".to_owned(),
                };
                Err(Error::Protocol {
                    what: format!("{}/{repo}:{tag}", self.inner.opts.registry),
                    reason: match restored {
                        Ok(_) => format!(
                            "deleting its placeholder failed ({reason}); the tag was put back on {}",
                            old.digest
                        ),
                        Err(e) => format!(
                            "deleting its placeholder failed ({reason}), and putting the tag back on {} failed too ({e}): the tag names an empty placeholder image until the next run",
                            old.digest
                        ),
                    },
                })
            }
        }
    }

    /// `DELETE …/manifests/<reference>`: `Ok(false)` on 404.
    async fn delete_manifest(&self, repo: &str, reference: &str) -> Result<bool> {
        let i = &self.inner;
        let url = i.repo_url(repo, Endpoint::Manifest(reference))?;
        let scopes = vec![format!("repository:{repo}:delete")];
        let resp = i
            .send(self.plain_request(Method::DELETE, url.clone(), scopes))
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(status_error(&Method::DELETE, &url, resp).await),
        }
    }

    /// Cancels an upload session nobody will use (best effort: registries expire them).
    pub async fn cancel_upload(&self, repo: &str, session: UploadSession) {
        self.upload_closed(session.id);
        let scopes = vec![repo_scope(repo, true)];
        let _ = self
            .inner
            .send(self.plain_request(Method::DELETE, session.url, scopes))
            .await;
    }

    /// Cancels every upload session this client opened that no copy finished or cancelled:
    /// those of copies dropped mid-way (a run interrupted by a signal), so that the target
    /// keeps no half upload. Returns how many there were.
    pub async fn cancel_abandoned_uploads(&self) -> usize {
        let open: Vec<(String, Url)> = match self.inner.uploads.lock() {
            Ok(mut m) => std::mem::take(&mut *m).into_values().collect(),
            Err(_) => Vec::new(),
        };
        let n = open.len();
        let cancels = open.into_iter().map(|(repo, url)| async move {
            let scopes = vec![repo_scope(&repo, true)];
            let _ = self
                .inner
                .send(self.plain_request(Method::DELETE, url, scopes))
                .await;
        });
        futures_util::future::join_all(cancels).await;
        n
    }

    fn upload_opened(&self, repo: &str, url: &Url) -> u64 {
        let id = self.inner.next_upload.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.inner.uploads.lock() {
            m.insert(id, (repo.to_owned(), url.clone()));
        }
        id
    }

    fn upload_moved(&self, id: u64, url: &Url) {
        if let Ok(mut m) = self.inner.uploads.lock()
            && let Some(entry) = m.get_mut(&id)
        {
            entry.1 = url.clone();
        }
    }

    fn upload_closed(&self, id: u64) {
        if let Ok(mut m) = self.inner.uploads.lock() {
            m.remove(&id);
        }
    }

    /// The upload session a 202 opened (`Location`, `OCI-Chunk-Min-Length`). A session
    /// whose minimum chunk is above the limit is cancelled at once and refused.
    async fn opened_session(&self, repo: &str, url: &Url, h: &HeaderMap) -> Result<UploadSession> {
        let session = location(&self.inner, url, h)?;
        let id = self.upload_opened(repo, &session);
        match min_chunk(&self.inner, url, h) {
            Ok(min_chunk) => Ok(UploadSession {
                url: session,
                min_chunk,
                id,
            }),
            Err(e) => {
                let session = UploadSession {
                    url: session,
                    min_chunk: None,
                    id,
                };
                self.cancel_upload(repo, session).await;
                Err(e)
            }
        }
    }

    /// Uploads a blob. `session` reuses an upload a refused mount opened. On failure the
    /// session is cancelled, so the registry keeps no half upload.
    pub async fn put_blob(
        &self,
        repo: &str,
        digest: &Digest,
        blob: Blob,
        mode: UploadMode,
        session: Option<UploadSession>,
    ) -> Result<()> {
        let i = &self.inner;
        let scopes = vec![repo_scope(repo, true)];
        let (mut session, min_chunk, id) = match session {
            Some(s) => (s.url, s.min_chunk, s.id),
            None => {
                let url = i.repo_url(repo, Endpoint::Uploads)?;
                let resp = i
                    .send(self.plain_request(Method::POST, url.clone(), scopes.clone()))
                    .await?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(status_error(&Method::POST, &url, resp).await);
                }
                let s = self.opened_session(repo, &url, resp.headers()).await?;
                (s.url, s.min_chunk, s.id)
            }
        };
        let mode = match (mode, blob.size) {
            (UploadMode::Monolithic, Some(size))
                if i.opts.blob_max.is_none_or(|max| size <= max) =>
            {
                UploadMode::Monolithic
            }
            _ => UploadMode::Chunked,
        };
        let result = match mode {
            UploadMode::Monolithic => self.put_monolithic(&session, digest, blob, &scopes).await,
            UploadMode::Chunked => {
                // The session moves with each chunk; a cancel goes to where it is now.
                self.put_chunked(&mut session, id, digest, blob, min_chunk, &scopes)
                    .await
            }
        };
        if result.is_err() {
            // Best effort: the registry would expire the session anyway.
            let session = UploadSession {
                url: session,
                min_chunk,
                id,
            };
            self.cancel_upload(repo, session).await;
        } else {
            self.upload_closed(id);
        }
        result
    }

    async fn put_monolithic(
        &self,
        session: &Url,
        digest: &Digest,
        blob: Blob,
        scopes: &[String],
    ) -> Result<()> {
        let i = &self.inner;
        let mut url = session.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut r = self.plain_request(Method::PUT, url.clone(), scopes.to_vec());
        r.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r.body = Body::Stream {
            stream: blob.stream,
            len: blob.size,
        };
        let resp = i.send(r).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&Method::PUT, &url, resp).await);
        }
        Ok(())
    }

    async fn put_chunked(
        &self,
        session: &mut Url,
        id: u64,
        digest: &Digest,
        blob: Blob,
        min_chunk: Option<u64>,
        scopes: &[String],
    ) -> Result<()> {
        let i = &self.inner;
        let chunk_size = i.opts.blob_chunk.max(min_chunk.unwrap_or(0)).max(1) as usize;
        let mut stream: ByteStream = blob.stream;
        let mut buf = BytesMut::with_capacity(chunk_size.min(16 << 20));
        let mut offset: u64 = 0;
        // A finished stream must not be polled again, so its end is remembered.
        let mut stream_done = false;
        loop {
            while !stream_done && buf.len() < chunk_size {
                match stream.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => return Err(e),
                    None => stream_done = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            let take = buf.len().min(chunk_size);
            let chunk = buf.split_to(take).freeze();
            let end = offset + chunk.len() as u64 - 1;
            let mut r = self.plain_request(Method::PATCH, session.clone(), scopes.to_vec());
            r.headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r.headers.insert(
                "content-range",
                HeaderValue::from_str(&format!("{offset}-{end}")).map_err(|_| Error::Protocol {
                    what: "upload".into(),
                    reason: "bad range".into(),
                })?,
            );
            r.headers.insert(CONTENT_LENGTH, chunk.len().into());
            offset += chunk.len() as u64;
            r.body = Body::Bytes(chunk);
            let resp = i.send(r).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(status_error(&Method::PATCH, session, resp).await);
            }
            *session = location(i, session, resp.headers())?;
            self.upload_moved(id, session);
        }
        let mut url = session.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let mut r = self.plain_request(Method::PUT, url.clone(), scopes.to_vec());
        r.headers.insert(CONTENT_LENGTH, 0.into());
        let resp = i.send(r).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&Method::PUT, &url, resp).await);
        }
        Ok(())
    }
}

/// The upload URL from `Location`, resolved against the request URL. It may name another
/// host (object storage); [`super::send::Inner::send`] sends that host no credentials.
fn location(i: &super::send::Inner, base: &Url, h: &HeaderMap) -> Result<Url> {
    let loc = h
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Protocol {
            what: redact(base),
            reason: "upload response without Location".into(),
        })?;
    let url = base.join(loc).map_err(|e| Error::Protocol {
        what: redact(base),
        reason: format!("invalid Location: {e}"),
    })?;
    i.check_named_url(base, &url)?;
    Ok(url)
}

/// `OCI-Chunk-Min-Length`, refused above the chunk limit (`blobLimit`): a chunk is held in
/// memory, so a registry must not be able to make it a whole blob.
fn min_chunk(i: &super::send::Inner, url: &Url, h: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = header_str(h, "oci-chunk-min-length") else {
        return Ok(None);
    };
    let limit = i.opts.limits.chunk_bytes;
    match v.parse::<u64>() {
        Ok(n) if n <= limit => Ok(Some(n)),
        Ok(n) => Err(Error::Protocol {
            what: redact(url),
            reason: format!(
                "the registry demands chunks of at least {n} bytes (OCI-Chunk-Min-Length), more than the limit of {limit} (blobLimit)"
            ),
        }),
        Err(_) => Ok(None),
    }
}

type BodyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blob download that picks up where a broken connection left off.
struct Resume {
    client: RegistryClient,
    url: Url,
    scopes: Vec<String>,
    offset: u64,
    len: Option<u64>,
    body: Option<BodyStream>,
    resumes: u32,
    pace: Pace,
}

/// How fast the registry has been sending: bytes, and time spent waiting for them, since
/// the window began. Only the waiting counts, so a slow target (which slows the reading)
/// never makes the source look slow.
#[derive(Debug, Default)]
struct Pace {
    bytes: u64,
    waited: Duration,
}

impl Pace {
    /// Counts `bytes` that took `waited`; at the end of a window of `limits.idle_timeout`,
    /// the reason to give up when they came slower than `limits.min_speed`.
    fn add(&mut self, bytes: u64, waited: Duration, limits: &super::Limits) -> Option<String> {
        self.bytes += bytes;
        self.waited += waited;
        if self.waited < limits.idle_timeout {
            return None;
        }
        let window = std::mem::take(self);
        let floor = limits.min_speed as f64 * window.waited.as_secs_f64();
        ((window.bytes as f64) < floor).then(|| {
            format!(
                "{} bytes in {:.0?} of waiting, slower than {} bytes/s (limits.minSpeed)",
                window.bytes, window.waited, limits.min_speed
            )
        })
    }
}

impl Resume {
    async fn next(mut self) -> Option<(Result<Bytes>, Resume)> {
        loop {
            let body = self.body.as_mut()?;
            let asked = Instant::now();
            let idle = self.client.inner.opts.limits.idle_timeout;
            let Ok(next) = tokio::time::timeout(idle, body.next()).await else {
                let reason = format!(
                    "no data for {} (limits.idleTimeout)",
                    super::send::humanize(idle)
                );
                if let Err(e) = self.reopen(&reason).await {
                    self.body = None;
                    return Some((Err(e), self));
                }
                continue;
            };
            let waited = asked.elapsed();
            match next {
                Some(Ok(b)) => {
                    self.offset += b.len() as u64;
                    let limits = self.client.inner.opts.limits;
                    if let Some(reason) = self.pace.add(b.len() as u64, waited, &limits) {
                        // What came is good; the rest is asked for again, then given up.
                        if let Err(e) = self.reopen(&reason).await {
                            self.body = None;
                            return Some((Err(e), self));
                        }
                    }
                    return Some((Ok(b), self));
                }
                None => {
                    // A clean end before the announced length is a short read too.
                    match self.len {
                        Some(len) if self.offset < len => {}
                        _ => return None,
                    }
                    if let Err(e) = self.reopen("connection closed early").await {
                        self.body = None;
                        return Some((Err(e), self));
                    }
                }
                Some(Err(e)) => {
                    let reason = describe(e);
                    if let Err(err) = self.reopen(&reason).await {
                        self.body = None;
                        return Some((Err(err), self));
                    }
                }
            }
        }
    }

    async fn reopen(&mut self, reason: &str) -> Result<()> {
        let fail = |reason: String| Error::Transport {
            method: "GET".into(),
            url: redact(&self.url),
            reason,
            retryable: true,
        };
        if self.resumes >= MAX_RESUMES {
            return Err(fail(format!("{reason} (after {} resumes)", self.resumes)));
        }
        self.resumes += 1;
        tracing::warn!(url = %redact(&self.url), offset = self.offset, reason, "Resuming blob download");
        let i = &self.client.inner;
        let mut r = self
            .client
            .blob_request(self.url.clone(), self.scopes.clone());
        r.headers.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={}-", self.offset))
                .map_err(|_| fail("bad range".into()))?,
        );
        let resp = i.send(r).await?;
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(fail(format!(
                "{reason}; resume with Range got HTTP {} instead of 206",
                resp.status().as_u16()
            )));
        }
        self.body = Some(Box::pin(resp.bytes_stream()));
        self.pace = Pace::default();
        Ok(())
    }
}

/// `scheme://host:port` of a URL, for messages.
pub(crate) fn origin_text(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// The OCI empty descriptor's content, `{}`.
const EMPTY_JSON: &[u8] = b"{}";

/// A manifest that exists only to take a tag away from its image before it is deleted:
/// no layers, the empty config, and annotations naming the tag and the moment, so that its
/// digest is shared by no other tag.
fn placeholder_manifest(repo: &str, tag: &str) -> Manifest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": crate::blob::sha256(EMPTY_JSON).to_string(),
            "size": EMPTY_JSON.len(),
        },
        "layers": [],
        "annotations": {
            "dev.regferry.pruned": format!("{repo}:{tag}"),
            "dev.regferry.pruned.at": now.to_string(),
        },
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    Manifest::new(Bytes::from(bytes), Some(media_type::OCI_MANIFEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", HeaderValue::from_static("100;w=21600"));
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from_static("76;w=21600"),
        );
        assert_eq!(
            rate_limit(&h),
            Some(RateLimitHeaders {
                limit: Some(100),
                remaining: 76,
                reset: None
            })
        );
        h.insert("ratelimit-remaining", HeaderValue::from_static("lots"));
        assert_eq!(rate_limit(&h), None, "only a number counts as a limit");
    }
}
