//! Sending one request: host pause (after a 429), concurrency and rate limits, auth,
//! retries with exponential backoff and jitter, `Retry-After`, and counters.
use std::collections::BTreeMap;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::HostOptions;
use super::auth::Auth;
use crate::blob::ByteStream;
use crate::error::{Error, Result};

/// Counters of the requests one client sent, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct RequestStats {
    by_method_status: StdMutex<BTreeMap<(String, u16), u64>>,
    retries: AtomicU64,
    rate_limited: AtomicU64,
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
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) opts: HostOptions,
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) auth: Auth,
    pub(crate) stats: RequestStats,
    permits: Semaphore,
    next_slot: Mutex<Instant>,
    paused_until: Mutex<Option<Instant>>,
}

impl Inner {
    pub(crate) fn new(opts: HostOptions, http: reqwest::Client, base: Url) -> Inner {
        Inner {
            auth: Auth::new(&opts.registry, opts.login.clone(), opts.token.clone()),
            permits: Semaphore::new(opts.req_concurrent.max(1) as usize),
            next_slot: Mutex::new(Instant::now()),
            paused_until: Mutex::new(None),
            stats: RequestStats::default(),
            base,
            http,
            opts,
        }
    }

    /// `/v2/<pathPrefix>/<repo>/<rest>` as a URL.
    pub(crate) fn repo_url(&self, repo: &str, rest: &str) -> Url {
        let prefix = if self.opts.path_prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.opts.path_prefix)
        };
        let mut url = self.url(&format!("/v2/{prefix}{repo}/{rest}"));
        if let Some(ns) = &self.opts.mirror_of {
            url.query_pairs_mut().append_pair("ns", ns);
        }
        url
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        self.base.join(path).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends a request with limits, auth and retries. Any status comes back as a response;
    /// transport errors, and retryable statuses after the last try, come back as errors.
    pub(crate) async fn send(&self, mut req: Request) -> Result<Response> {
        let policy = self.opts.retry;
        let mut attempt = 0u32;
        let mut reauthed = 0u32;
        loop {
            attempt += 1;
            self.wait_for_pause().await;
            self.pace().await;
            let auth = self.auth.header(&self.http, &req.scopes).await?;
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
                    (Some(reqwest::Body::wrap_stream(stream)), false)
                }
            };
            let mut rb = self
                .http
                .request(req.method.clone(), req.url.clone())
                .headers(req.headers.clone());
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            if let Some(b) = body {
                rb = rb.body(b);
            }
            let permit = self.permits.acquire().await.map_err(|_| Error::Cancelled)?;
            let result = rb.send().await;
            drop(permit);
            match result {
                Ok(resp) => {
                    let status = resp.status();
                    self.stats.record(&req.method, status.as_u16());
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
                        if status == StatusCode::TOO_MANY_REQUESTS {
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
                Err(e) => {
                    self.stats.record(&req.method, 0);
                    // A certificate the client refuses (or that the server refuses) will be
                    // refused again: fail at once instead of backing off five times.
                    let tls_refusal = is_tls_refusal(&chain(&e));
                    let retryable = !tls_refusal
                        && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body());
                    if retryable && replayable && attempt < policy.attempts {
                        let delay = self.delay(attempt, None);
                        tracing::warn!(
                            registry = %self.opts.registry,
                            method = %req.method,
                            error = %chain(&e),
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
                        url: redact(&req.url),
                        reason: chain(&e),
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

    #[test]
    fn redaction_drops_query_and_userinfo() {
        let u = Url::parse(
            "https://u:p@r.example/v2/x/blobs/uploads/abc?_state=secret&digest=sha256:1",
        )
        .unwrap();
        assert_eq!(redact(&u), "https://r.example/v2/x/blobs/uploads/abc");
    }
}
