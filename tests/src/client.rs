//! `RawClient`: a small blocking HTTP client for arranging and checking registry state in tests
//! (pushing artifacts that skopeo 1.9 cannot, probing auth, reading through a proxy). It talks
//! to the real registry; it is no substitute for one.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ureq::Agent;

use crate::image::{Content, Image, Manifest, referrers_index, referrers_tag, sha256_digest};
use crate::registry::TestRegistry;

/// Largest response body the client reads (synthetic images are small).
const BODY_LIMIT: u64 = 1 << 30;

/// A blocking agent: no status-as-error, no redirects, plain HTTP.
pub(crate) fn agent(timeout: Duration) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A response read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A transport-level failure: connection refused or reset, a short body, a timeout.
#[derive(Debug)]
pub struct TransportError(pub ureq::Error);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transport error: {}", self.0)
    }
}

impl std::error::Error for TransportError {}

/// A blocking client for one registry base URL that answers `401` challenges the way registry
/// clients do: `Basic` with its credentials, `Bearer` by fetching a token from the challenge's
/// realm (with its credentials as Basic auth, or anonymously).
#[derive(Debug, Clone)]
pub struct RawClient {
    base: String,
    agent: Agent,
    credentials: Option<(String, String)>,
}

impl RawClient {
    /// A client for `base_url` (`http://127.0.0.1:PORT`), without credentials.
    pub fn new(base_url: &str) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_owned(),
            agent: agent(Duration::from_secs(60)),
            credentials: None,
        }
    }

    /// A client for `reg` with the credentials it accepts, if any.
    ///
    /// # Panics
    /// If `reg` serves HTTPS: this client speaks plain HTTP only (use skopeo there).
    pub fn for_registry(reg: &TestRegistry) -> Self {
        assert!(
            reg.tls().is_none(),
            "RawClient speaks plain HTTP only; {} serves HTTPS (use the skopeo helpers)",
            reg.host()
        );
        let c = Self::new(&reg.url());
        match reg.credentials() {
            Some((u, p)) => c.with_credentials(u, p),
            None => c,
        }
    }

    /// The same client with these credentials.
    pub fn with_credentials(mut self, user: &str, pass: &str) -> Self {
        self.credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// The same client without credentials.
    pub fn anonymous(mut self) -> Self {
        self.credentials = None;
        self
    }

    /// One request, with no challenge handling: exactly these headers.
    ///
    /// # Errors
    /// On a transport failure (including a body shorter than its `Content-Length`).
    pub fn send(
        &self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawResponse, TransportError> {
        let url = if path_or_url.starts_with("http://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(body.to_vec())
            .map_err(|e| TransportError(e.into()))?;
        let mut resp = self.agent.run(req).map_err(TransportError)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = if method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(BODY_LIMIT)
                .read_to_vec()
                .map_err(TransportError)?
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// A request that answers a `401` challenge once (see the type's docs).
    ///
    /// # Errors
    /// On a transport failure.
    pub fn request(
        &self,
        method: &str,
        path_or_url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<RawResponse, TransportError> {
        let first = self.send(method, path_or_url, headers, body)?;
        if first.status != 401 {
            return Ok(first);
        }
        let Some(auth) = first
            .header("www-authenticate")
            .and_then(|c| self.authorization(c))
        else {
            return Ok(first);
        };
        let mut with_auth = headers.to_vec();
        with_auth.push(("Authorization", &auth));
        self.send(method, path_or_url, &with_auth, body)
    }

    /// The `Authorization` value answering a challenge, if this client can.
    fn authorization(&self, challenge: &str) -> Option<String> {
        let (scheme, params) = parse_challenge(challenge)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let (u, p) = self.credentials.as_ref()?;
            return Some(basic(u, p));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(s) = get("service") {
            query.append_pair("service", s);
        }
        if let Some(s) = get("scope") {
            for scope in s.split(' ') {
                query.append_pair("scope", scope);
            }
        }
        let url = format!("{}?{}", get("realm")?, query.finish());
        let auth = self.credentials.as_ref().map(|(u, p)| basic(u, p));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let resp = self.send("GET", &url, &headers, &[]).ok()?;
        if resp.status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
        let token = json
            .get("token")
            .or_else(|| json.get("access_token"))?
            .as_str()?;
        Some(format!("Bearer {token}"))
    }

    /// `GET path`.
    ///
    /// # Panics
    /// On a transport failure.
    pub fn get(&self, path: &str) -> RawResponse {
        self.request("GET", path, &[], &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET /v2/REPO/manifests/REFERENCE` accepting every manifest type.
    ///
    /// # Panics
    /// On a transport failure.
    pub fn get_manifest(&self, repo: &str, reference: &str) -> RawResponse {
        let path = format!("/v2/{repo}/manifests/{reference}");
        self.request("GET", &path, &[("Accept", crate::image::ACCEPT_ALL)], &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Uploads a blob (POST, then a monolithic PUT) unless the registry has it; returns its digest.
    ///
    /// # Panics
    /// If the registry refuses.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        let head = self
            .request("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], &[])
            .unwrap_or_else(|e| panic!("HEAD blob {digest}: {e}"));
        if head.status == 200 {
            return digest;
        }
        let start = self
            .request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], &[])
            .unwrap_or_else(|e| panic!("POST upload: {e}"));
        assert_eq!(
            start.status,
            202,
            "start upload in {repo}: {}",
            start.text()
        );
        let location = start.header("location").expect("upload Location");
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = if location.starts_with('/') {
            format!("{}{location}{sep}digest={digest}", self.base)
        } else {
            format!("{location}{sep}digest={digest}")
        };
        let put = self
            .request(
                "PUT",
                &url,
                &[("Content-Type", "application/octet-stream")],
                data,
            )
            .unwrap_or_else(|e| panic!("PUT blob {digest}: {e}"));
        assert_eq!(put.status, 201, "upload {digest} to {repo}: {}", put.text());
        digest
    }

    /// PUTs a manifest under `reference` (a tag or its digest); returns its digest.
    ///
    /// # Panics
    /// If the registry refuses.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Manifest) -> String {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self
            .request(
                "PUT",
                &path,
                &[("Content-Type", manifest.media_type.as_str())],
                &manifest.bytes,
            )
            .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
        assert_eq!(resp.status, 201, "PUT {path}: {}", resp.text());
        manifest.digest()
    }

    /// Pushes an image, index or artifact with everything it references (children before
    /// parents), tagged `tag` or, with None, by digest only; returns the top manifest's digest.
    ///
    /// # Panics
    /// If the registry refuses.
    pub fn push(&self, repo: &str, tag: Option<&str>, content: &dyn Content) -> String {
        for blob in content.blobs() {
            self.push_blob(repo, &blob.data);
        }
        for child in content.children() {
            self.push_manifest(repo, &child.digest(), child);
        }
        let top = content.manifest();
        self.push_manifest(repo, tag.unwrap_or(&top.digest()), top)
    }

    /// Publishes `referrers` of `subject` as a registry without the referrers API keeps
    /// them: each pushed by digest, then listed in the subject's `sha256-<hex>` index.
    ///
    /// # Panics
    /// If the registry refuses.
    pub fn publish_referrers(&self, repo: &str, subject: &str, referrers: &[&Image]) {
        for r in referrers {
            self.push(repo, None, *r);
        }
        self.push_manifest(repo, &referrers_tag(subject), &referrers_index(referrers));
    }
}

/// `Basic base64(user:pass)`.
pub fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
}

/// `Bearer realm="..",service="..",scope=".."` -> ("Bearer", [(realm, ..), ..]). Values may be
/// quoted and contain commas (`scope="repository:x:pull,push"`).
pub fn parse_challenge(header: &str) -> Option<(String, Vec<(String, String)>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some((scheme.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:x/y:pull,push""#,
        )
        .expect("parses");
        assert_eq!(scheme, "Bearer");
        assert_eq!(
            params,
            vec![
                ("realm".into(), "http://127.0.0.1:1/token".into()),
                ("service".into(), "reg".into()),
                ("scope".into(), "repository:x/y:pull,push".into()),
            ]
        );
        let (scheme, params) = parse_challenge(r#"Basic realm="r""#).expect("parses");
        assert_eq!((scheme.as_str(), params.len()), ("Basic", 1));
    }
}
