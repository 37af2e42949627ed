//! Sending one request: host pause (after a 429), concurrency and rate limits, auth,
//! retries with exponential backoff and jitter, `Retry-After`, and counters.
use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use super::HostOptions;
use super::auth::Auth;
use super::concurrency::{Concurrency, Outcome};
use crate::blob::ByteStream;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::memory::Memory;

/// Counters of the requests one client sent, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct RequestStats {
    by_method_status: StdMutex<BTreeMap<(String, u16), u64>>,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    invalid_names: AtomicU64,
    /// The last `RateLimit-Remaining` seen, plus one (0: never seen).
    ratelimit_remaining: AtomicU64,
}

impl RequestStats {
    fn record(&self, method: &Method, status: u16) {
        if let Ok(mut m) = self.by_method_status.lock() {
            *m.entry((method.to_string(), status)).or_default() += 1;
        }
    }

    /// Requests by (method, status); status 0 is a transport error.
    pub fn by_method_status(&self) -> BTreeMap<(String, u16), u64> {
        self.by_method_status
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Requests with this method, whatever their status.
    pub fn count(&self, method: &str) -> u64 {
        self.by_method_status()
            .iter()
            .filter(|((m, _), _)| m == method)
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests sent again after a failure.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// 429 answers received.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Names (tags, repositories) in the registry's answers that broke the distribution
    /// grammar and were skipped.
    pub fn invalid_names(&self) -> u64 {
        self.invalid_names.load(Ordering::Relaxed)
    }

    pub(crate) fn record_invalid_names(&self, n: usize) {
        self.invalid_names.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The pulls left in the registry's rate-limit window, as its last answer said
    /// (`RateLimit-Remaining`, Docker Hub); `None` when it never said.
    pub fn ratelimit_remaining(&self) -> Option<u64> {
        self.ratelimit_remaining
            .load(Ordering::Relaxed)
            .checked_sub(1)
    }

    pub(crate) fn record_ratelimit(&self, remaining: u64) {
        self.ratelimit_remaining
            .store(remaining.saturating_add(1), Ordering::Relaxed);
    }
}

/// A request body: bytes can be sent again after a failure; a stream only once.
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream {
        stream: ByteStream,
        len: Option<u64>,
    },
}

pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    pub(crate) scopes: Vec<String>,
    /// A blob body: sent over the connections kept for bulk reads (see [`Clients`]).
    pub(crate) bulk: bool,
}

/// The HTTP clients of one registry, each with its own pool of connections.
///
/// hyper grows a connection's read buffer while reads fill it, up to [`super::BUF_MAX`],
/// and keeps it for the connection's life; on a fast link every blob body does that. So
/// blob bodies have connections of their own, of which few are kept idle, and the many
/// connections for HEADs, manifests, listings and uploads keep their small buffers.
#[derive(Debug)]
pub(crate) struct Clients {
    /// The registry's own origin (presents the client certificate).
    pub(crate) own: reqwest::Client,
    /// The registry's own origin, for blob bodies.
    pub(crate) bulk: reqwest::Client,
    /// Any other host the registry names (presents nothing): an upload `Location`, a token
    /// realm.
    pub(crate) foreign: reqwest::Client,
    /// Any other host, for blob bodies: object storage behind a blob redirect.
    pub(crate) foreign_bulk: reqwest::Client,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) opts: HostOptions,
    pub(crate) clients: Clients,
    pub(crate) base: Url,
    pub(crate) auth: Auth,
    pub(crate) stats: RequestStats,
    pub(crate) memory: Memory,
    /// Upload sessions open now (repository, where the session is), by id: a session still
    /// here when its copy was dropped (a cancelled run) is cancelled by
    /// [`super::RegistryClient::cancel_abandoned_uploads`].
    pub(crate) uploads: StdMutex<BTreeMap<u64, (String, Url)>>,
    pub(crate) next_upload: AtomicU64,
    pub(crate) concurrency: Concurrency,
    next_slot: Mutex<Instant>,
    paused_until: Mutex<Option<Instant>>,
}

impl Inner {
    pub(crate) fn new(opts: HostOptions, clients: Clients, base: Url, memory: Memory) -> Inner {
        Inner {
            auth: Auth::new(
                &opts.registry,
                opts.login.clone(),
                opts.token.clone(),
                base.clone(),
                opts.limits,
                opts.repo_auth,
            ),
            concurrency: Concurrency::new(opts.req_concurrent),
            next_slot: Mutex::new(Instant::now()),
            paused_until: Mutex::new(None),
            stats: RequestStats::default(),
            memory,
            uploads: StdMutex::new(BTreeMap::new()),
            next_upload: AtomicU64::new(0),
            base,
            clients,
            opts,
        }
    }

    /// `/v2/<pathPrefix>/<repo>/<endpoint>` as a URL, built segment by segment from names
    /// checked against the distribution grammar: no input can leave `/v2/<repo>/`.
    pub(crate) fn repo_url(&self, repo: &str, endpoint: Endpoint<'_>) -> Result<Url> {
        build_repo_url(
            &self.base,
            &self.opts.path_prefix,
            repo,
            endpoint,
            self.opts.mirror_of.as_deref(),
        )
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Whether `url` is on the registry's own origin (scheme, host and port): only such
    /// requests carry its credentials and client certificate.
    pub(crate) fn is_own(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// Checks a URL the registry named (`Location`, a redirect) before it is requested:
    /// never from HTTPS down to plain HTTP, and only http(s).
    pub(crate) fn check_named_url(&self, from: &Url, to: &Url) -> Result<()> {
        if !may_follow(&self.base, from, to) {
            return Err(Error::Protocol {
                what: redact(from),
                reason: format!(
                    "the registry named {}, which is not https like the registry itself; not followed",
                    redact(to)
                ),
            });
        }
        Ok(())
    }

    /// Sends a request with limits, auth and retries. Any status comes back as a response;
    /// transport errors, and retryable statuses after the last try, come back as errors.
    ///
    /// Redirects of GET and HEAD are followed here, hop by hop (at most [`MAX_REDIRECTS`]):
    /// credentials and the client certificate go only to the registry's own origin, never
    /// to a host it redirects to, and a 401 from another host never changes the registry's
    /// auth state. A request whose answer is read whole gets [`Limits::request_deadline`]
    /// (see [`Deadline`]); one without a streamed body gets [`Limits::response_timeout`]
    /// for its headers.
    pub(crate) async fn send(&self, mut req: Request) -> Result<Response> {
        let policy = self.opts.retry;
        let limits = self.opts.limits;
        let mut attempt = 0u32;
        let mut reauthed = 0u32;
        loop {
            attempt += 1;
            let mut url = req.url.clone();
            let mut hops = 0u32;
            let deadline = Instant::now() + limits.request_deadline;
            let (result, own, replayable) = loop {
                let own = self.is_own(&url);
                if own {
                    self.wait_for_pause().await;
                }
                self.pace().await;
                let auth = if own {
                    self.auth
                        .header(&self.clients.own, &self.clients.foreign, &req.scopes)
                        .await?
                } else {
                    None
                };
                let mut progress = None;
                let (body, replayable) = match std::mem::replace(&mut req.body, Body::Empty) {
                    Body::Empty => (None, true),
                    Body::Bytes(b) => {
                        req.body = Body::Bytes(b.clone());
                        (Some(reqwest::Body::from(b)), true)
                    }
                    Body::Stream { stream, len } => {
                        if let Some(len) = len {
                            req.headers
                                .insert(reqwest::header::CONTENT_LENGTH, len.into());
                        }
                        let p = Progress::new();
                        let stream = p.watching(stream, len);
                        progress = Some(p);
                        (Some(reqwest::Body::wrap_stream(stream)), false)
                    }
                };
                let http = match (own, req.bulk) {
                    (true, false) => &self.clients.own,
                    (true, true) => &self.clients.bulk,
                    (false, false) => &self.clients.foreign,
                    (false, true) => &self.clients.foreign_bulk,
                };
                let mut rb = http
                    .request(req.method.clone(), url.clone())
                    .headers(req.headers.clone());
                if let Some(a) = auth {
                    rb = rb.header(AUTHORIZATION, a);
                }
                let streamed = !replayable;
                if let Some(b) = body {
                    rb = rb.body(b);
                }
                let permit = self.concurrency.acquire().await.ok_or(Error::Cancelled)?;
                let sent = Instant::now();
                // An upload's clock starts now, not while it waited for a request slot.
                if let Some(p) = &progress {
                    p.start();
                }
                // A streamed upload is answered only once the registry has it all: it may
                // take as long as its bytes keep flowing. It is given up after
                // `idle_timeout` without progress, or `response_timeout` after its last byte
                // without an answer.
                let result = if let Some(progress) = &progress {
                    tokio::select! {
                        r = rb.send() => r.map_err(Failure::Http),
                        why = progress.stalled(limits.idle_timeout, limits.response_timeout) => Err(Failure::Stalled(why)),
                    }
                } else {
                    let until = deadline.min(Instant::now() + limits.response_timeout);
                    match tokio::time::timeout_at(until, rb.send()).await {
                        Ok(r) => r.map_err(Failure::Http),
                        Err(_) => Err(Failure::Timeout),
                    }
                };
                let outcome = match &result {
                    // Another host (a blob store the registry redirects to) says nothing of
                    // the registry's load.
                    _ if !own => Outcome::Neutral,
                    Ok(r)
                        if matches!(
                            r.status(),
                            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                        ) =>
                    {
                        Outcome::Refused
                    }
                    Ok(_) => Outcome::Answered((!streamed).then(|| sent.elapsed())),
                    Err(Failure::Timeout | Failure::Stalled(_)) => Outcome::Refused,
                    Err(Failure::Http(e)) if e.is_timeout() => Outcome::Refused,
                    Err(Failure::Http(_)) => Outcome::Neutral,
                };
                tracing::trace!(method = %req.method, url = %redact(&url), took_ms = sent.elapsed().as_millis() as u64, ?outcome, "Request");
                if let Some(limit) = self.concurrency.release(permit, outcome) {
                    tracing::debug!(registry = %self.opts.registry, limit, ?outcome, "Requests at once");
                }
                if let Ok(resp) = &result
                    && resp.status().is_redirection()
                    && matches!(req.method, Method::GET | Method::HEAD)
                    && let Some(next) = resp
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                {
                    self.stats.record(&req.method, resp.status().as_u16());
                    if hops >= MAX_REDIRECTS {
                        return Err(Error::Protocol {
                            what: redact(&req.url),
                            reason: format!("more than {MAX_REDIRECTS} redirects"),
                        });
                    }
                    let next = url.join(next).map_err(|e| Error::Protocol {
                        what: redact(&url),
                        reason: format!("invalid redirect: {e}"),
                    })?;
                    self.check_named_url(&url, &next)?;
                    hops += 1;
                    url = next;
                    continue;
                }
                break (result, own, replayable);
            };
            match result {
                Ok(mut resp) => {
                    let status = resp.status();
                    self.stats.record(&req.method, status.as_u16());
                    // An upload's answer is read from now: the upload itself may have
                    // taken longer than a whole request may.
                    let body_deadline = if replayable {
                        deadline
                    } else {
                        Instant::now() + limits.response_timeout
                    };
                    resp.extensions_mut().insert(Deadline(body_deadline));
                    if status == StatusCode::UNAUTHORIZED && !own {
                        // Another host's challenge is not the registry's: it learns nothing
                        // from it and sends it nothing.
                        return Ok(resp);
                    }
                    if status == StatusCode::UNAUTHORIZED && reauthed < 2 {
                        let www = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        if replayable && self.auth.unauthorized(www.as_deref(), &req.scopes).await {
                            reauthed += 1;
                            attempt -= 1;
                            continue;
                        }
                        return Ok(resp);
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                    }
                    if is_retryable_status(status) && replayable && attempt < policy.attempts {
                        let retry_after = parse_retry_after(resp.headers());
                        let delay = self.delay(attempt, retry_after);
                        if status == StatusCode::TOO_MANY_REQUESTS && own {
                            // A 429 is about the registry, not this request: hold every request to it.
                            self.pause_for(delay).await;
                        }
                        tracing::warn!(
                            registry = %self.opts.registry,
                            method = %req.method,
                            status = status.as_u16(),
                            attempt,
                            delay_ms = delay.as_millis() as u64,
                            "Retrying request"
                        );
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Ok(resp);
                }
                Err(failure) => {
                    self.stats.record(&req.method, 0);
                    let (reason, retryable) = match failure {
                        Failure::Http(e) => {
                            let kind =
                                e.is_connect() || e.is_timeout() || e.is_request() || e.is_body();
                            let reason = describe(e);
                            if is_plain_http_answer(&reason) && req.url.scheme() == "https" {
                                // It will answer plain HTTP again: say what to change, now.
                                let host = if self.is_own(&req.url) {
                                    format!("set `tls: disabled` for {}", self.opts.registry)
                                } else {
                                    format!(
                                        "{} is not served over HTTPS",
                                        super::ops::origin_text(&req.url)
                                    )
                                };
                                (
                                    format!(
                                        "the registry answered plain HTTP to an HTTPS request: {host}"
                                    ),
                                    false,
                                )
                            } else if is_head_too_large(&reason) {
                                // The registry would send the same head again.
                                (
                                    format!(
                                        "the response head is too large (more than {} KiB, \
                                         or more than 100 headers)",
                                        super::BUF_MAX >> 10
                                    ),
                                    false,
                                )
                            } else if is_h2_head_refused(&reason) {
                                // As over HTTP/1: the same head would come again.
                                (
                                    "the response head is too large or malformed (HTTP/2: \
                                     more than 16 KiB of headers, or headers HTTP/2 forbids)"
                                        .to_owned(),
                                    false,
                                )
                            } else {
                                // A certificate the client refuses (or that the server
                                // refuses) will be refused again: fail at once.
                                (reason.clone(), kind && !is_tls_refusal(&reason))
                            }
                        }
                        Failure::Timeout => (
                            format!(
                                "no response within {}",
                                humanize(limits.response_timeout.min(limits.request_deadline))
                            ),
                            true,
                        ),
                        Failure::Stalled(why) => (why, true),
                    };
                    if retryable && replayable && attempt < policy.attempts {
                        let delay = self.delay(attempt, None);
                        tracing::warn!(
                            registry = %self.opts.registry,
                            method = %req.method,
                            error = %reason,
                            attempt,
                            delay_ms = delay.as_millis() as u64,
                            "Retrying request"
                        );
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    return Err(Error::Transport {
                        method: req.method.to_string(),
                        url: redact(&url),
                        reason,
                        retryable,
                    });
                }
            }
        }
    }

    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let policy = self.opts.retry;
        if let Some(ra) = retry_after {
            return ra.min(policy.max_delay);
        }
        let exp = policy
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(policy.max_delay);
        // Jitter: 50% to 100% of the backoff, so that many clients do not retry in step.
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    async fn wait_for_pause(&self) {
        let until = *self.paused_until.lock().await;
        if let Some(t) = until
            && t > Instant::now()
        {
            tokio::time::sleep_until(t).await;
        }
    }

    async fn pause_for(&self, d: Duration) {
        let mut p = self.paused_until.lock().await;
        let t = Instant::now() + d;
        if p.is_none_or(|old| old < t) {
            *p = Some(t);
        }
    }

    async fn pace(&self) {
        let Some(rate) = self.opts.req_per_sec.filter(|r| *r > 0.0) else {
            return;
        };
        let gap = Duration::from_secs_f64(1.0 / rate);
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + gap;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// What a repository URL addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    /// `manifests/<tag or digest>`.
    Manifest(&'a str),
    /// `blobs/<digest>`.
    Blob(&'a Digest),
    /// `blobs/uploads/`.
    Uploads,
    /// `tags/list`.
    Tags,
    /// `referrers/<digest>`.
    Referrers(&'a Digest),
}

pub(crate) fn build_repo_url(
    base: &Url,
    path_prefix: &str,
    repo: &str,
    endpoint: Endpoint<'_>,
    mirror_of: Option<&str>,
) -> Result<Url> {
    if !crate::reference::is_valid_repository(repo) {
        return Err(Error::invalid_name("repository", repo));
    }
    if !path_prefix.is_empty() && !crate::reference::is_valid_repository(path_prefix) {
        return Err(Error::invalid_name("pathPrefix", path_prefix));
    }
    let digest_text;
    let tail: &[&str] = match endpoint {
        Endpoint::Manifest(r) => {
            if !crate::reference::is_valid_tag(r) && Digest::parse(r).is_err() {
                return Err(Error::invalid_name("manifest reference", r));
            }
            &["manifests", r]
        }
        Endpoint::Blob(d) => {
            digest_text = d.to_string();
            &["blobs", &digest_text]
        }
        Endpoint::Uploads => &["blobs", "uploads", ""],
        Endpoint::Tags => &["tags", "list"],
        Endpoint::Referrers(d) => {
            digest_text = d.to_string();
            &["referrers", &digest_text]
        }
    };
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut segs = url.path_segments_mut().map_err(|()| Error::Protocol {
            what: redact(base),
            reason: "not a base URL".into(),
        })?;
        segs.clear().push("v2");
        if !path_prefix.is_empty() {
            segs.extend(path_prefix.split('/'));
        }
        segs.extend(repo.split('/'));
        segs.extend(tail.iter().copied());
    }
    if let Some(ns) = mirror_of {
        url.query_pairs_mut().append_pair("ns", ns);
    }
    Ok(url)
}

/// Whether a URL a registry named (`Location`, a redirect, a token realm) may be requested
/// from `from` by a client of the registry at `base`: http(s) only, and never from HTTPS
/// down to plain HTTP (plain HTTP only while both the registry and `from` are).
pub(crate) fn may_follow(base: &Url, from: &Url, to: &Url) -> bool {
    match to.scheme() {
        "https" => true,
        "http" => from.scheme() == "http" && base.scheme() == "http",
        _ => false,
    }
}

/// Most redirects one request follows.
const MAX_REDIRECTS: u32 = 10;

/// Why a request got no response.
enum Failure {
    Http(reqwest::Error),
    Timeout,
    /// An upload that stopped: why.
    Stalled(String),
}

/// When a request's answer must have been read in full; stored in the response's
/// extensions by [`Inner::send`] and honoured by [`super::ops::read_limited`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) Instant);

/// How far a streamed request body has got, for its timeouts: when a chunk last went out,
/// when the last one did, and whether the body is waiting for its own source.
#[derive(Debug, Clone)]
struct Progress(std::sync::Arc<std::sync::Mutex<Sent>>);

#[derive(Debug, Clone, Copy)]
struct Sent {
    last: Instant,
    done: Option<Instant>,
    /// The body itself has nothing to give yet (its source is slow, or a shared read waits
    /// for another target): the source's own timeouts bound that, not the upload's.
    waiting: bool,
}

impl Sent {
    /// Nothing sent yet, as of now.
    fn now() -> Sent {
        Sent {
            last: Instant::now(),
            done: None,
            waiting: false,
        }
    }
}

impl Progress {
    fn new() -> Progress {
        Progress(std::sync::Arc::new(std::sync::Mutex::new(Sent::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request is sent now.
    fn start(&self) {
        *self.lock() = Sent::now();
    }

    /// `stream`, noting each chunk it yields, when it has none yet, and its end: the end
    /// of the stream, or its `len`-th byte (with a length, hyper may not ask for the end).
    fn watching(&self, mut stream: crate::ByteStream, len: Option<u64>) -> crate::ByteStream {
        let progress = self.clone();
        let mut sent = 0u64;
        Box::pin(futures_util::stream::poll_fn(move |cx| {
            let polled = stream.as_mut().poll_next(cx);
            let now = Instant::now();
            let mut p = progress.lock();
            match &polled {
                std::task::Poll::Pending => p.waiting = true,
                std::task::Poll::Ready(Some(item)) => {
                    p.waiting = false;
                    p.last = now;
                    if let Ok(b) = item {
                        sent += b.len() as u64;
                        if len.is_some_and(|len| sent >= len) {
                            p.done.get_or_insert(now);
                        }
                    }
                }
                std::task::Poll::Ready(None) => {
                    p.waiting = false;
                    p.done.get_or_insert(now);
                }
            }
            polled
        }))
    }

    /// Returns, with the reason, once the target has taken nothing for `idle` while the
    /// body had data for it, or has not answered `answer` after the last byte.
    async fn stalled(&self, idle: Duration, answer: Duration) -> String {
        loop {
            let p = *self.lock();
            let now = Instant::now();
            let next = now + Duration::from_millis(250);
            let until = match p.done {
                Some(done) if now >= done + answer => {
                    return format!(
                        "no answer within {} of the upload's last byte (limits.responseTimeout)",
                        humanize(answer)
                    );
                }
                Some(done) => done + answer,
                None if p.waiting => next,
                None if now >= p.last + idle => {
                    return format!(
                        "the registry took no data for {} (limits.idleTimeout)",
                        humanize(idle)
                    );
                }
                None => p.last + idle,
            };
            // Progress moves the deadline: looked at again a few times a second.
            tokio::time::sleep_until(until.min(next)).await;
        }
    }
}

/// A reqwest error and its causes, without its URL: reqwest's text carries the whole URL,
/// query included, and upload and pre-signed URLs keep secrets there.
pub(crate) fn describe(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

/// A duration for messages (`2m`, `30s`).
pub(crate) fn humanize(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs().max(1))).to_string()
}

fn is_retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn parse_retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Whether a transport error is a TLS verdict (an untrusted or bad certificate) rather
/// than a network failure. rustls reports these as connect errors.
fn is_tls_refusal(chain: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "invalid peer certificate",
        "UnknownIssuer",
        "BadCertificate",
        "CertificateRequired",
        "NotValidForName",
        "certificate verify failed",
    ];
    MARKERS.iter().any(|m| chain.contains(m))
}

/// Whether a TLS handshake failed because the server answered in plain HTTP (rustls reads
/// the HTTP response as a TLS record of an unknown content type).
fn is_plain_http_answer(chain: &str) -> bool {
    chain.contains("InvalidContentType")
}

/// Whether hyper refused a response head: it outgrew the connection's read buffer
/// ([`super::BUF_MAX`]), had more than 100 headers, or a `Content-Length` past u64.
fn is_head_too_large(chain: &str) -> bool {
    chain.contains("message head is too large")
}

/// Whether h2 refused a response head itself (the text says "detected"; what the server
/// sends says "received" and stays retryable), in one of the three ways it does:
/// - a header list over hyper's 16 KiB (`SETTINGS_MAX_HEADER_LIST_SIZE`), or headers HTTP/2
///   forbids: the stream is reset with PROTOCOL_ERROR;
/// - a header list over four times that: the connection is closed, "header_list_way_too_large";
/// - a header block whose CONTINUATION frames outgrow the bound before it ends: the
///   connection is closed with COMPRESSION_ERROR.
///
/// Each depends only on the head the registry's HTTP/2 end sent (with TLS, the registry or
/// the proxy that ends TLS for it), which would send it again.
fn is_h2_head_refused(chain: &str) -> bool {
    const MARKERS: [&str; 3] = [
        "stream error detected: unspecific protocol error detected",
        "header_list_way_too_large",
        "connection error detected: unable to maintain the header compression context",
    ];
    MARKERS.iter().any(|m| chain.contains(m))
}

/// An error and its causes on one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A URL for messages: no user info, no query (upload URLs carry state tokens).
pub(crate) fn redact(u: &Url) -> String {
    let mut u = u.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_heads_h2_refused_itself_are_final() {
        let sent = "error sending request: client error (SendRequest): http2 error: ";
        for ours in [
            "stream error detected: unspecific protocol error detected",
            "connection error detected: detected excessive load generating behavior \
             (b\"header_list_way_too_large\")",
            "connection error detected: unable to maintain the header compression context",
        ] {
            assert!(is_h2_head_refused(&format!("{sent}{ours}")), "{ours}");
        }
        // What the server sends (a reset under load, a GOAWAY) is worth another try.
        for theirs in [
            "stream error received: unspecific protocol error detected",
            "stream error received: refused stream before processing any application logic",
            "connection error received: not a result of an error",
            "stream error detected: refused stream before processing any application logic",
        ] {
            assert!(!is_h2_head_refused(&format!("{sent}{theirs}")), "{theirs}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        let future = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            httpdate::fmt_http_date(future).parse().unwrap(),
        );
        let d = parse_retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }

    proptest::proptest! {
        /// Whatever a registry or webhook sends as a repository or manifest reference, the
        /// URL built from it is refused, or stays at `/v2/<repo>/manifests/<reference>` on
        /// the registry's own origin, without query, fragment or dot segments.
        #[test]
        fn no_name_leaves_its_repository(
            repo in "([a-z0-9]{1,3}|\\.\\.|%2e|[./_?#%-]){1,8}",
            reference in "([A-Za-z0-9]{1,3}|\\.\\.|%2e|[./_?#%:-]){1,12}",
            prefix in "|[a-z]{1,3}|\\.\\./x",
        ) {
            let base = Url::parse("https://r.example:5000/").unwrap();
            if let Ok(u) = build_repo_url(&base, &prefix, &repo, Endpoint::Manifest(&reference), None) {
                proptest::prop_assert_eq!(u.origin(), base.origin());
                proptest::prop_assert!(u.query().is_none() && u.fragment().is_none());
                let pre = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
                proptest::prop_assert_eq!(u.path(), format!("/v2/{pre}{repo}/manifests/{reference}"));
                proptest::prop_assert!(!u.path()[1..].split('/').any(|s| s == ".." || s == "." || s.is_empty()));
            }
        }

        /// The tag and repository checks are the distribution grammar, exactly.
        #[test]
        fn names_follow_the_distribution_grammar(name in "[a-zA-Z0-9._/%-]{0,140}") {
            let tag = regex::Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").unwrap();
            let repo = regex::Regex::new(
                r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
            )
            .unwrap();
            proptest::prop_assert_eq!(crate::is_valid_tag(&name), tag.is_match(&name));
            proptest::prop_assert_eq!(
                crate::is_valid_repository(&name),
                repo.is_match(&name) && name.len() <= 255
            );
        }
    }

    #[test]
    fn the_url_builder_refuses_what_would_leave_the_repository() {
        let base = Url::parse("http://r.example/").unwrap();
        let build =
            |repo: &str, r: &str| build_repo_url(&base, "", repo, Endpoint::Manifest(r), None);
        for (repo, reference) in [
            ("app", "../../../victim/manifests/pwn"),
            ("app", "..%2f..%2fvictim"),
            ("app", "a?b"),
            ("app", "x#y"),
            ("ok/../../victim", "1"),
            ("ok/%2e%2e/victim", "1"),
            ("app", ""),
        ] {
            let e = build(repo, reference).unwrap_err();
            assert!(
                matches!(e, Error::InvalidName { .. }),
                "{repo} {reference}: {e}"
            );
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            build("team/app", &digest).unwrap().as_str(),
            format!("http://r.example/v2/team/app/manifests/{digest}")
        );
        let uploads = build_repo_url(
            &base,
            "pre/fix",
            "app",
            Endpoint::Uploads,
            Some("docker.io"),
        )
        .unwrap();
        assert_eq!(
            uploads.as_str(),
            "http://r.example/v2/pre/fix/app/blobs/uploads/?ns=docker.io"
        );
    }

    #[test]
    fn redaction_drops_query_and_userinfo() {
        let u = Url::parse(
            "https://u:p@r.example/v2/x/blobs/uploads/abc?_state=secret&digest=sha256:1",
        )
        .unwrap();
        assert_eq!(redact(&u), "https://r.example/v2/x/blobs/uploads/abc");
    }
}
