//! `FaultProxy`: an HTTP/1.1 reverse proxy on a loopback port in front of a [`TestRegistry`],
//! forwarding everything (request and response bodies stream through; nothing is buffered
//! whole) and injecting faults by rule.
//!
//! Rules are tried in the order added; the first that matches a request and still has uses left
//! decides what happens to it (one action per request). `Location` headers that point at the
//! upstream are rewritten to point at the proxy, so upload sessions stay behind it.
//!
//! Within the harness, an [`Interceptor`] can script more than faults: it sees each request no
//! rule answered and may answer it or forward it with a hook on the response head. That is how
//! [`crate::ReferrersApi`] serves an API the registry behind it lacks.
//!
//! The constructor only binds a port; the proxy runs on its own thread and runtime, so it works
//! from `#[test]` and `#[tokio::test]` alike.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HOST, HeaderValue, LOCATION};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use regex::Regex;

use crate::registry::TestRegistry;
use crate::server::{Body, BoxError, Conn, Handler, ServerThread, path_and_query, respond};

/// What a rule does to a matching request.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer without asking the upstream.
    Respond {
        /// Status code.
        status: u16,
        /// Extra headers (`Retry-After`, `WWW-Authenticate`, ...).
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Forward, then reset the TCP connection (RST) after this many bytes of the upstream
    /// response body (0: right after the headers).
    ResetAfter(u64),
    /// Forward, then close the connection (FIN) after this many bytes of the upstream response
    /// body, keeping its `Content-Length`: the client sees a short read.
    TruncateAfter(u64),
    /// Forward, flipping every bit of the response body byte at this offset.
    CorruptAt(u64),
    /// Wait this long, then forward.
    Delay(Duration),
    /// Forward, sending the response body one byte per this interval: a source that is
    /// never silent long enough for an idle timeout and takes forever to finish.
    Trickle(Duration),
    /// Forward, and add these headers to the upstream's response (Docker Hub's
    /// `RateLimit-Remaining`, for instance).
    AddHeaders(Vec<(String, String)>),
}

impl Action {
    /// Answer `status` with these headers and a distribution-style JSON error body
    /// (`TOOMANYREQUESTS` for 429, `UNAVAILABLE` for 503, `UNKNOWN` otherwise).
    pub fn respond(status: u16, headers: &[(&str, &str)]) -> Self {
        let code = match status {
            429 => "TOOMANYREQUESTS",
            503 => "UNAVAILABLE",
            401 => "UNAUTHORIZED",
            403 => "DENIED",
            404 => "NOT_FOUND",
            _ => "UNKNOWN",
        };
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".to_owned(), "application/json".to_owned()));
        }
        let body = serde_json::json!({"errors": [{"code": code, "message": "injected by FaultProxy", "detail": null}]});
        Self::Respond {
            status,
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    fn kind(&self) -> FaultKind {
        match self {
            Action::Respond { .. } => FaultKind::Respond,
            Action::ResetAfter(_) => FaultKind::Reset,
            Action::TruncateAfter(_) => FaultKind::Truncate,
            Action::CorruptAt(_) => FaultKind::Corrupt,
            Action::Delay(_) => FaultKind::Delay,
            Action::Trickle(_) => FaultKind::Trickle,
            Action::AddHeaders(_) => FaultKind::Headers,
        }
    }
}

/// Which fault a request met, in [`ProxiedRequest::fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// [`Action::Respond`].
    Respond,
    /// [`Action::ResetAfter`].
    Reset,
    /// [`Action::TruncateAfter`].
    Truncate,
    /// [`Action::CorruptAt`].
    Corrupt,
    /// [`Action::Delay`].
    Delay,
    /// [`Action::Trickle`].
    Trickle,
    /// [`Action::AddHeaders`].
    Headers,
}

#[derive(Debug, Clone)]
enum PathMatch {
    Contains(String),
    Regex(Regex),
}

/// A fault rule: which requests, how many times, what to do.
#[derive(Debug, Clone)]
pub struct Rule {
    method: Option<String>,
    path: PathMatch,
    times: Option<u32>,
    action: Action,
}

impl Rule {
    /// Requests with `method` (`"*"`: any) whose path and query contain `path_substring`
    /// (`""`: any).
    pub fn new(method: &str, path_substring: &str, action: Action) -> Self {
        Self {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path: PathMatch::Contains(path_substring.to_owned()),
            times: None,
            action,
        }
    }

    /// Requests with `method` (`"*"`: any) whose path and query match `pattern`.
    ///
    /// # Panics
    /// If `pattern` is not a valid regex.
    pub fn regex(method: &str, pattern: &str, action: Action) -> Self {
        Self {
            path: PathMatch::Regex(Regex::new(pattern).expect("valid rule regex")),
            ..Self::new(method, "", action)
        }
    }

    /// Applies to the first `n` matching requests only; later ones pass (or meet later rules).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && match &self.path {
                PathMatch::Contains(s) => path.contains(s.as_str()),
                PathMatch::Regex(r) => r.is_match(path),
            }
    }
}

/// What an [`Interceptor`] decides for one request.
pub(crate) enum Intercept {
    /// Answer with this response; the upstream is not asked.
    Answer(Response<Body>),
    /// Forward this request (possibly with its body read and replaced); then let the hook, if
    /// any, see and change the upstream's response head before the client does.
    Forward(Request<Body>, Option<AfterHook>),
}

/// Sees (and may change) the upstream's response head of a forwarded request.
pub(crate) type AfterHook = Box<dyn FnOnce(&mut hyper::http::response::Parts) + Send>;

/// A future an [`Interceptor`] returns.
pub(crate) type InterceptFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Intercept> + Send>>;

/// Behaviour scripted into a [`FaultProxy`] beyond fault rules, for emulating a registry
/// feature the real registry lacks (see [`crate::referrers_api`]). Consulted for every request
/// no fault rule answered.
pub(crate) trait Interceptor: Send + Sync {
    /// Answers `req` itself, or forwards it.
    fn intercept(&self, method: &str, path: &str, req: Request<Body>) -> InterceptFuture;
}

/// One request the proxy handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Status sent to the client (502 if the upstream could not be reached).
    pub status: u16,
    /// The fault applied, if any.
    pub fault: Option<FaultKind>,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<ProxiedRequest>>,
    /// Every request as it arrived (method, path and query), before any fault or answer.
    arrivals: Mutex<Vec<(String, String)>>,
    /// Requests being handled now (until their response starts), and the most at once.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn new(shared: &'a Shared) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let now = shared.in_flight.fetch_add(1, SeqCst) + 1;
        shared.most_in_flight.fetch_max(now, SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Shared {
    /// The action of the first matching rule with uses left, using one.
    fn take_action(&self, method: &str, path: &str) -> Option<Action> {
        let mut rules = self.rules.lock().expect("rules lock");
        let rule = rules
            .iter_mut()
            .find(|r| r.times != Some(0) && r.matches(method, path))?;
        if let Some(n) = rule.times.as_mut() {
            *n -= 1;
        }
        Some(rule.action.clone())
    }

    fn record(&self, method: &str, path: &str, status: u16, fault: Option<FaultKind>) {
        self.log.lock().expect("log lock").push(ProxiedRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            fault,
        });
    }
}

/// A running fault-injection proxy; stops on drop.
#[derive(Debug)]
pub struct FaultProxy {
    server: ServerThread,
    shared: Arc<Shared>,
    upstream: String,
}

impl FaultProxy {
    /// A proxy in front of `reg`.
    pub fn start(reg: &TestRegistry) -> Self {
        Self::start_for(&reg.host())
    }

    /// A proxy in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start_for(upstream: &str) -> Self {
        Self::start_intercepted(upstream, None)
    }

    /// A proxy in front of `upstream` that lets `interceptor` answer or rewrite requests no
    /// fault rule answered.
    pub(crate) fn start_intercepted(
        upstream: &str,
        interceptor: Option<Arc<dyn Interceptor>>,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        let upstream = upstream.to_owned();
        // The proxy's own address is only known once bound; handlers read it from here.
        let own = Arc::new(Mutex::new(String::new()));
        let client: Client<HttpConnector, Body> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let handler: Handler = {
            let (shared, upstream, own) = (shared.clone(), upstream.clone(), own.clone());
            Arc::new(move |req, conn| {
                let ctx = Ctx {
                    shared: shared.clone(),
                    upstream: upstream.clone(),
                    own: own.lock().expect("own lock").clone(),
                    client: client.clone(),
                    interceptor: interceptor.clone(),
                };
                Box::pin(async move { ctx.handle(req, conn).await })
            })
        };
        let server = ServerThread::spawn("fault-proxy", handler);
        *own.lock().expect("own lock") = server.addr().to_string();
        Self {
            server,
            shared,
            upstream,
        }
    }

    /// `127.0.0.1:PORT`: use it where a registry host goes.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The upstream `127.0.0.1:PORT`.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Adds a rule after the existing ones.
    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().expect("rules lock").push(rule);
    }

    /// Removes every rule: from now on the proxy only forwards.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().expect("rules lock").clear();
    }

    /// Every request handled so far, in the order their responses started.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.log.lock().expect("log lock").clone()
    }

    /// The most requests the proxy handled at once (each until its response started).
    pub fn max_in_flight(&self) -> usize {
        self.shared
            .most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.log.lock().expect("log lock").clear();
    }

    /// Requests with `method` (`"*"`: any) whose path contains `path_substring` that have
    /// arrived so far, answered or not (a delayed one counts from its arrival).
    pub fn arrived(&self, method: &str, path_substring: &str) -> usize {
        self.shared
            .arrivals
            .lock()
            .expect("arrivals lock")
            .iter()
            .filter(|(m, p)| (method == "*" || m == method) && p.contains(path_substring))
            .count()
    }

    /// How many requests had `method` (`"*"`: any) and a path containing `path_substring`
    /// (counted when their response started).
    pub fn count(&self, method: &str, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| (method == "*" || r.method == method) && r.path.contains(path_substring))
            .count()
    }
}

/// Hop-by-hop headers, not forwarded (RFC 9110 §7.6.1); hyper sets framing itself.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

struct Ctx {
    shared: Arc<Shared>,
    upstream: String,
    own: String,
    client: Client<HttpConnector, Body>,
    interceptor: Option<Arc<dyn Interceptor>>,
}

impl Ctx {
    async fn handle(self, req: Request<Incoming>, conn: Arc<Conn>) -> Response<Body> {
        let shared = self.shared.clone();
        let _counted = InFlight::new(&shared);
        let method = req.method().as_str().to_owned();
        let path = path_and_query(&req);
        self.shared
            .arrivals
            .lock()
            .expect("arrivals lock")
            .push((method.clone(), path.clone()));
        let action = self.shared.take_action(&method, &path);
        let fault = action.as_ref().map(Action::kind);
        let mut add_headers = Vec::new();
        let body_fault = match action {
            Some(Action::Respond {
                status,
                headers,
                body,
            }) => {
                self.shared.record(&method, &path, status, fault);
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                return respond(status, &headers, body);
            }
            Some(Action::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(Action::ResetAfter(n)) => Some(BodyFault::Cut {
                after: n,
                rst: true,
            }),
            Some(Action::TruncateAfter(n)) => Some(BodyFault::Cut {
                after: n,
                rst: false,
            }),
            Some(Action::CorruptAt(n)) => Some(BodyFault::Corrupt { at: n }),
            Some(Action::Trickle(every)) => Some(BodyFault::Trickle { every }),
            Some(Action::AddHeaders(h)) => {
                add_headers = h;
                None
            }
            None => None,
        };

        let req = req.map(|b| b.map_err(BoxError::from).boxed_unsync());
        let (req, after) = match &self.interceptor {
            None => (req, None),
            Some(i) => match i.intercept(&method, &path, req).await {
                Intercept::Answer(resp) => {
                    self.shared
                        .record(&method, &path, resp.status().as_u16(), fault);
                    return resp;
                }
                Intercept::Forward(req, after) => (req, after),
            },
        };
        let (mut parts, body) = req.into_parts();
        parts.uri = match Uri::try_from(format!("http://{}{path}", self.upstream)) {
            Ok(uri) => uri,
            Err(_) => {
                self.shared.record(&method, &path, 400, fault);
                return respond(400, &[], "bad request target");
            }
        };
        for h in HOP_BY_HOP {
            parts.headers.remove(*h);
        }
        if let Ok(host) = HeaderValue::from_str(&self.upstream) {
            parts.headers.insert(HOST, host);
        }
        let up_req = Request::from_parts(parts, body);
        let resp = match self.client.request(up_req).await {
            Ok(resp) => resp,
            Err(e) => {
                self.shared.record(&method, &path, 502, fault);
                return respond(502, &[], format!("FaultProxy: upstream error: {e}"));
            }
        };
        let (mut parts, body) = resp.into_parts();
        for h in HOP_BY_HOP {
            parts.headers.remove(*h);
        }
        let upstream_prefix = format!("http://{}", self.upstream);
        if let Some(loc) = parts.headers.get(LOCATION).and_then(|v| v.to_str().ok())
            && let Some(rest) = loc.strip_prefix(&upstream_prefix)
            && let Ok(v) = HeaderValue::from_str(&format!("http://{}{rest}", self.own))
        {
            parts.headers.insert(LOCATION, v);
        }
        if let Some(after) = after {
            after(&mut parts);
        }
        for (k, v) in add_headers {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                parts.headers.insert(k, v);
            }
        }
        self.shared
            .record(&method, &path, parts.status.as_u16(), fault);
        let body = match body_fault {
            None => body.map_err(BoxError::from).boxed_unsync(),
            Some(f) => faulty_body(body, f, conn),
        };
        Response::from_parts(parts, body)
    }
}

#[derive(Debug, Clone, Copy)]
enum BodyFault {
    Cut { after: u64, rst: bool },
    Corrupt { at: u64 },
    Trickle { every: Duration },
}

struct BodyState {
    body: Incoming,
    fault: BodyFault,
    sent: u64,
    cut: bool,
    conn: Arc<Conn>,
    /// Upstream bytes not yet sent (for [`BodyFault::Trickle`]).
    held: Bytes,
}

/// The upstream body with `fault` applied, streamed frame by frame.
fn faulty_body(body: Incoming, fault: BodyFault, conn: Arc<Conn>) -> Body {
    let state = BodyState {
        body,
        fault,
        sent: 0,
        cut: false,
        conn,
        held: Bytes::new(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.cut {
            // Give hyper a moment to flush what was sent, then end the connection under it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let BodyFault::Cut { rst, .. } = st.fault else {
                return None;
            };
            st.conn.end(rst);
            std::future::pending::<()>().await;
            return None;
        }
        if let BodyFault::Trickle { every } = st.fault
            && !st.held.is_empty()
        {
            tokio::time::sleep(every).await;
            let byte = st.held.split_to(1);
            return Some((Ok(Frame::data(byte)), st));
        }
        let frame = match st.body.frame().await? {
            Ok(frame) => frame,
            Err(e) => return Some((Err(BoxError::from(e)), st)),
        };
        let Ok(mut data) = frame.into_data() else {
            // Trailers: none from distribution; drop them rather than reorder the stream.
            return Some((Ok(Frame::data(Bytes::new())), st));
        };
        let start = st.sent;
        let len = data.len() as u64;
        st.sent += len;
        match st.fault {
            BodyFault::Cut { after, .. } => {
                if st.sent >= after {
                    data.truncate(after.saturating_sub(start) as usize);
                    st.cut = true;
                }
            }
            BodyFault::Corrupt { at } => {
                if (start..st.sent).contains(&at) {
                    let mut copy = BytesMut::from(&data[..]);
                    copy[(at - start) as usize] ^= 0xFF;
                    data = copy.freeze();
                }
            }
            BodyFault::Trickle { .. } => {
                st.held = data;
                data = Bytes::new();
            }
        }
        Some((Ok(Frame::data(data)), st))
    });
    StreamBody::new(stream).boxed_unsync()
}
