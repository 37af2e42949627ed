//! The OCI 1.1 referrers API (distribution-spec "Listing Referrers"):
//! `GET /v2/<name>/referrers/<digest>` answers an image index of descriptors, paged with
//! `Link`. Registries without the API answer 404 (distribution 2.x) or something else that
//! is not an index; the caller then uses the referrers tag schema (`sha256-<hex>`).
use reqwest::header::{ACCEPT, HeaderValue, LINK};
use reqwest::{Method, StatusCode};

use super::RegistryClient;
use super::challenge::next_link;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Content, Descriptor, Manifest, media_type};

impl RegistryClient {
    /// The referrers of `subject` through the referrers API, all pages; `Ok(None)` when the
    /// registry does not implement the API. No `artifactType` filter is sent: filters are
    /// applied by the caller, which works the same whether or not a registry honours
    /// `OCI-Filters-Applied`.
    pub async fn referrers_api(
        &self,
        repo: &str,
        subject: &Digest,
    ) -> Result<Option<Vec<Descriptor>>> {
        let i = &self.inner;
        let mut url = i.repo_url(repo, super::send::Endpoint::Referrers(subject))?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let what = format!("{}/{repo} referrers of {subject}", i.opts.registry);
        let limits = i.opts.limits;
        let mut listed = 0usize;
        loop {
            if !seen.insert(url.to_string()) {
                break;
            }
            if seen.len() > limits.pages {
                return Err(Error::Protocol {
                    what,
                    reason: format!("listing has more than {} pages", limits.pages),
                });
            }
            let mut r = self.plain_request(
                Method::GET,
                url.clone(),
                vec![format!("repository:{repo}:pull")],
            );
            r.headers
                .insert(ACCEPT, HeaderValue::from_static(media_type::OCI_INDEX));
            let resp = i.send(r).await?;
            let status = resp.status();
            let is_index = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(media_type::OCI_INDEX));
            if status == StatusCode::NOT_FOUND {
                // A registry with the API answers 404 only for a repository it does not
                // have (NAME_UNKNOWN); any other 404 (distribution 2.8's plain "404 page not
                // found") means it has no API.
                let body = super::ops::read_limited(resp, 64 << 10)
                    .await
                    .unwrap_or_default();
                if String::from_utf8_lossy(&body).contains("NAME_UNKNOWN") {
                    return Err(Error::NotFound {
                        what: format!("repository {}/{repo}", i.opts.registry),
                    });
                }
                return Ok(None);
            }
            if status.is_success() && !is_index {
                // No API: a page that is not an index (some proxies answer the UI).
                return Ok(None);
            }
            if !status.is_success() {
                return Err(super::ops::status_error(&Method::GET, &url, resp).await);
            }
            let next = resp
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let body = super::ops::read_limited(resp, limits.page_bytes).await?;
            listed += body.len();
            if listed > limits.listing_bytes {
                return Err(Error::Protocol {
                    what,
                    reason: format!("listing is larger than {} bytes", limits.listing_bytes),
                });
            }
            let page = Manifest::new(body, Some(media_type::OCI_INDEX));
            match page.content(&what)? {
                Content::Index { manifests, .. } => {
                    if out.len() + manifests.len() > limits.names {
                        return Err(Error::Protocol {
                            what,
                            reason: format!("more than {} referrers", limits.names),
                        });
                    }
                    out.extend(manifests)
                }
                _ => {
                    return Err(Error::Protocol {
                        what,
                        reason: "the referrers answer is not an index".into(),
                    });
                }
            }
            let Some(next) = next else { break };
            url = self.next_page(&url, &next)?;
        }
        Ok(Some(out))
    }
}
