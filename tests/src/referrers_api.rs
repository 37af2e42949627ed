//! `ReferrersApi`: an EMULATION of the OCI 1.1 referrers API, for tests only, served by a
//! [`FaultProxy`] in front of a real registry that lacks it (Debian's distribution 2.8, which
//! answers `GET /v2/<name>/referrers/<digest>` with 404).
//!
//! No registry with the API can be installed from this machine's package registries, so the
//! proxy plays that part, from what passes through it (distribution-spec v1.1):
//! - "Pushing Manifests with Subject": a manifest `PUT` whose body has a `subject` is forwarded;
//!   when the registry stores it (201), the proxy remembers the referrer and adds
//!   `OCI-Subject: <subject digest>` to the response, which tells clients not to maintain the
//!   referrers tag schema (`sha256-<hex>` indexes) themselves.
//! - "Listing Referrers": `GET /v2/<name>/referrers/<digest>` is answered by the proxy with an
//!   OCI index of the referrers it remembers for that repository and subject (an empty index
//!   when none), `page_size` entries per page, further pages linked with
//!   `Link: <…>; rel="next"`. An `artifactType` query filters, and the answer then says so
//!   with `OCI-Filters-Applied: artifactType`.
//!
//! It is not a registry: referrers pushed around the proxy (straight to the registry) are not
//! listed, deletes are not tracked, and the listing is not authenticated. Everything else
//! passes through, fault rules ([`ReferrersApi::proxy`]) included.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use regex::Regex;
use serde_json::{Value, json};

use crate::image::{OCI_INDEX, sha256_digest};
use crate::proxy::{FaultProxy, Intercept, InterceptFuture, Interceptor, ProxiedRequest};
use crate::registry::TestRegistry;
use crate::server::{Body, full, respond};

/// Largest manifest body the emulation reads to look for a `subject`.
const MANIFEST_LIMIT: usize = 4 << 20;

/// A [`FaultProxy`] serving the OCI 1.1 referrers API in front of a registry without it; stops
/// on drop. See the module docs: an emulation for tests.
#[derive(Debug)]
pub struct ReferrersApi {
    proxy: FaultProxy,
    state: Arc<ApiState>,
}

#[derive(Debug)]
struct ApiState {
    page_size: AtomicUsize,
    /// (repository, subject digest) -> referrer descriptors, in push order.
    referrers: Mutex<BTreeMap<(String, String), Vec<Value>>>,
    listing: Regex,
    manifest: Regex,
}

impl ReferrersApi {
    /// The API in front of `reg`, with pages of 100 referrers.
    pub fn start(reg: &TestRegistry) -> Self {
        Self::start_for(&reg.host())
    }

    /// The API in front of `upstream` (`127.0.0.1:PORT`).
    pub fn start_for(upstream: &str) -> Self {
        let state = Arc::new(ApiState {
            page_size: AtomicUsize::new(100),
            referrers: Mutex::new(BTreeMap::new()),
            listing: Regex::new(r"^/v2/(.+)/referrers/([a-z0-9]+:[a-f0-9]+)(?:\?(.*))?$")
                .expect("listing regex"),
            manifest: Regex::new(r"^/v2/(.+)/manifests/[^/?]+(?:\?.*)?$").expect("manifest regex"),
        });
        let interceptor: Arc<dyn Interceptor> = Arc::new(Emulation(state.clone()));
        let proxy = FaultProxy::start_intercepted(upstream, Some(interceptor));
        Self { proxy, state }
    }

    /// Answers listings `n` referrers per page (at least 1).
    pub fn set_page_size(&self, n: usize) {
        self.state.page_size.store(n.max(1), Ordering::Relaxed);
    }

    /// `127.0.0.1:PORT`: use it where a registry host goes.
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// The proxy underneath, for fault rules and its request log.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// Every request handled so far (listings answered by the emulation included).
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.proxy.requests()
    }

    /// The digests the API lists for `subject` in `repo`, in push order.
    pub fn referrers(&self, repo: &str, subject: &str) -> Vec<String> {
        self.state
            .referrers
            .lock()
            .expect("referrers lock")
            .get(&(repo.to_owned(), subject.to_owned()))
            .map(|list| {
                list.iter()
                    .filter_map(|d| d["digest"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

struct Emulation(Arc<ApiState>);

impl Interceptor for Emulation {
    fn intercept(&self, method: &str, path: &str, req: Request<Body>) -> InterceptFuture {
        let state = self.0.clone();
        if method == "GET"
            && let Some(c) = state.listing.captures(path)
        {
            let repo = c[1].to_owned();
            let subject = c[2].to_owned();
            let query = c.get(3).map_or("", |m| m.as_str()).to_owned();
            return Box::pin(async move { Intercept::Answer(state.list(&repo, &subject, &query)) });
        }
        if method == "PUT"
            && let Some(c) = state.manifest.captures(path)
        {
            let repo = c[1].to_owned();
            return Box::pin(async move { state.put_manifest(repo, req).await });
        }
        Box::pin(async move { Intercept::Forward(req, None) })
    }
}

impl ApiState {
    /// One page of the referrers list ("Listing Referrers").
    fn list(&self, repo: &str, subject: &str, query: &str) -> Response<Body> {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let artifact_type = get("artifactType");
        let page: usize = get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let size = self.page_size.load(Ordering::Relaxed);
        let all: Vec<Value> = self
            .referrers
            .lock()
            .expect("referrers lock")
            .get(&(repo.to_owned(), subject.to_owned()))
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|d| {
                artifact_type
                    .as_deref()
                    .is_none_or(|t| d["artifactType"].as_str() == Some(t))
            })
            .collect();
        let items: Vec<Value> = all.iter().skip(page * size).take(size).cloned().collect();
        let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": items});
        let mut headers = vec![("Content-Type".to_owned(), OCI_INDEX.to_owned())];
        if (page + 1) * size < all.len() {
            let mut next = form_urlencoded::Serializer::new(String::new());
            next.append_pair("page", &(page + 1).to_string());
            if let Some(t) = &artifact_type {
                next.append_pair("artifactType", t);
            }
            headers.push((
                "Link".to_owned(),
                format!(
                    "</v2/{repo}/referrers/{subject}?{}>; rel=\"next\"",
                    next.finish()
                ),
            ));
        }
        if artifact_type.is_some() {
            headers.push(("OCI-Filters-Applied".to_owned(), "artifactType".to_owned()));
        }
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        respond(200, &headers, body.to_string())
    }

    /// Forwards a manifest PUT; when its body has a `subject` and the registry stored it,
    /// remembers the referrer and confirms with `OCI-Subject` ("Pushing Manifests with Subject").
    async fn put_manifest(self: Arc<Self>, repo: String, req: Request<Body>) -> Intercept {
        let (parts, body) = req.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return Intercept::Answer(respond(
                    400,
                    &[],
                    format!("ReferrersApi: reading the manifest: {e}"),
                ));
            }
        };
        let referrer = (bytes.len() <= MANIFEST_LIMIT)
            .then(|| serde_json::from_slice::<Value>(&bytes).ok())
            .flatten()
            .and_then(|m| {
                let subject = m["subject"]["digest"].as_str()?.to_owned();
                let media_type = parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| m["mediaType"].as_str().map(str::to_owned))?;
                let mut d = json!({
                    "mediaType": media_type,
                    "digest": sha256_digest(&bytes),
                    "size": bytes.len(),
                });
                // The spec: artifactType, else the config's media type.
                if let Some(t) = m["artifactType"]
                    .as_str()
                    .or_else(|| m["config"]["mediaType"].as_str())
                {
                    d["artifactType"] = Value::String(t.to_owned());
                }
                if m["annotations"].is_object() {
                    d["annotations"] = m["annotations"].clone();
                }
                Some((subject, d))
            });
        let req = Request::from_parts(parts, full(bytes));
        let Some((subject, descriptor)) = referrer else {
            return Intercept::Forward(req, None);
        };
        let after: crate::proxy::AfterHook = Box::new(move |head| {
            if head.status.as_u16() != 201 {
                return;
            }
            let mut all = self.referrers.lock().expect("referrers lock");
            let list = all.entry((repo, subject.clone())).or_default();
            if !list.iter().any(|d| d["digest"] == descriptor["digest"]) {
                list.push(descriptor);
            }
            if let Ok(v) = HeaderValue::from_str(&subject) {
                head.headers.insert("oci-subject", v);
            }
        });
        Intercept::Forward(req, Some(after))
    }
}
