//! Registry authentication: anonymous, basic, and the bearer-token flow of the distribution
//! spec ("Token Authentication Specification"): learn the challenge from a 401, ask the
//! realm for a token covering the request's scopes (several at once for cross-repository
//! mounts), cache it until shortly before it expires, and ask again when a 401 says it no
//! longer suffices. Identity (refresh) tokens use the OAuth2 `refresh_token` grant.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use reqwest::header::HeaderValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::LoginSource;
use super::challenge::{Challenge, parse_challenges};
use crate::credentials::{Credential, DEFAULT_HELPER_TIMEOUT};
use crate::error::{Error, Result};
use crate::secret::Secret;

#[derive(Debug)]
pub(crate) struct Auth {
    registry: String,
    /// The registry's own origin (`https://host:port/`): credentials go there and to the
    /// token realm it names, nowhere else.
    base: url::Url,
    /// Largest token answer read, and the time a token request may take.
    limits: super::Limits,
    login: LoginSource,
    static_token: Secret,
    /// The login last looked up, and until when it is reused (one for the host, also with
    /// `repoAuth`: a credential helper is not run per repository).
    login_cache: Mutex<Option<(Option<Credential>, Instant)>>,
    /// Keep a challenge and tokens per repository (`repoAuth`), as regclient does, for
    /// registries whose challenge differs by repository; else one state for the host.
    repo_auth: bool,
    states: std::sync::Mutex<HashMap<String, Arc<Mutex<State>>>>,
}

#[derive(Debug, Default)]
struct State {
    challenge: Option<Challenge>,
    tokens: HashMap<String, (Secret, Instant)>,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Auth {
    pub(crate) fn new(
        registry: &str,
        login: LoginSource,
        static_token: Secret,
        base: url::Url,
        limits: super::Limits,
        repo_auth: bool,
    ) -> Auth {
        Auth {
            registry: registry.to_owned(),
            base,
            limits,
            login,
            static_token,
            login_cache: Mutex::new(None),
            repo_auth,
            states: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The auth state a request needing `scopes` uses: the host's, or with `repoAuth` that
    /// of the repository its first scope names (a mount's target).
    fn state(&self, scopes: &[String]) -> Arc<Mutex<State>> {
        let key = if self.repo_auth {
            scopes
                .first()
                .and_then(|s| s.strip_prefix("repository:"))
                .and_then(|s| s.rsplit_once(':'))
                .map(|(repo, _)| repo.to_owned())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let mut states = match self.states.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        states.entry(key).or_default().clone()
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::Auth {
            registry: self.registry.clone(),
            reason: reason.into(),
        }
    }

    /// The `Authorization` header for a request needing `scopes`, or `None` to go anonymous
    /// (before the registry has said what it wants).
    pub(crate) async fn header(
        &self,
        own: &reqwest::Client,
        foreign: &reqwest::Client,
        scopes: &[String],
    ) -> Result<Option<HeaderValue>> {
        if !self.static_token.is_empty() {
            return Ok(Some(bearer(&self.static_token)?));
        }
        let state = self.state(scopes);
        let mut st = state.lock().await;
        let Some(ch) = st.challenge.clone() else {
            return Ok(None);
        };
        match ch.scheme.as_str() {
            "basic" => match self.login().await? {
                Some(Credential::Basic { username, password }) => {
                    Ok(Some(basic(&username, &password)?))
                }
                _ => Ok(None),
            },
            "bearer" => {
                let key = scope_key(scopes);
                if let Some((tok, exp)) = st.tokens.get(&key)
                    && Instant::now() < *exp
                {
                    return Ok(Some(bearer(tok)?));
                }
                let login = self.login().await?;
                let (tok, exp) = self
                    .fetch_token(own, foreign, &ch, scopes, login.as_ref())
                    .await?;
                let h = bearer(&tok)?;
                st.tokens.insert(key, (tok, exp));
                Ok(Some(h))
            }
            other => Err(self.err(format!("unsupported authentication scheme {other:?}"))),
        }
    }

    /// Learns from a 401. Returns whether retrying with new credentials can help.
    pub(crate) async fn unauthorized(
        &self,
        www_authenticate: Option<&str>,
        scopes: &[String],
    ) -> bool {
        if !self.static_token.is_empty() {
            return false;
        }
        let state = self.state(scopes);
        let mut st = state.lock().await;
        let challenges = www_authenticate.map(parse_challenges).unwrap_or_default();
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| challenges.iter().find(|c| c.scheme == "basic"))
            .cloned();
        let had_token = st.tokens.remove(&scope_key(scopes)).is_some();
        let had_same_challenge = st.challenge.is_some() && st.challenge == chosen;
        match chosen {
            None => false,
            Some(c) => {
                let is_basic = c.scheme == "basic";
                st.challenge = Some(c);
                // A first challenge, or an expired/insufficient token: try again. The same
                // basic challenge again means the password was refused.
                !had_same_challenge || (had_token && !is_basic)
            }
        }
    }

    async fn login(&self) -> Result<Option<Credential>> {
        let mut cache = self.login_cache.lock().await;
        if let Some((cred, until)) = &*cache
            && Instant::now() < *until
        {
            return Ok(cred.clone());
        }
        let (cred, ttl) = match &self.login {
            LoginSource::Anonymous => (None, Duration::from_secs(86_400 * 365)),
            LoginSource::Static(c) => (Some(c.clone()), Duration::from_secs(86_400 * 365)),
            LoginSource::Helper {
                helper,
                server,
                expire,
            } => {
                let (helper, server) = (helper.clone(), server.clone());
                let cred = tokio::task::spawn_blocking(move || {
                    crate::credentials::run_helper(&helper, &server, DEFAULT_HELPER_TIMEOUT)
                })
                .await
                .map_err(|e| self.err(e.to_string()))?
                .map_err(|e| self.err(e.to_string()))?;
                (cred, *expire)
            }
            LoginSource::DockerConfig { config, server } => {
                let (config, server) = (config.clone(), server.clone());
                let cred = tokio::task::spawn_blocking(move || {
                    config.lookup(&server, None, DEFAULT_HELPER_TIMEOUT)
                })
                .await
                .map_err(|e| self.err(e.to_string()))?
                .map_err(|e| self.err(e.to_string()))?;
                (cred, Duration::from_secs(3600))
            }
        };
        *cache = Some((cred.clone(), Instant::now() + ttl));
        Ok(cred)
    }

    /// The realm of a bearer challenge, if credentials may go there: over HTTPS, or over
    /// plain HTTP only when the registry itself is plain HTTP.
    fn realm(&self, ch: &Challenge) -> Result<url::Url> {
        let raw = ch
            .params
            .get("realm")
            .ok_or_else(|| self.err("bearer challenge without realm"))?;
        let realm = url::Url::parse(raw)
            .map_err(|e| self.err(format!("bearer challenge realm is not a URL: {e}")))?;
        if !super::send::may_follow(&self.base, &self.base, &realm) || !realm.username().is_empty()
        {
            return Err(self.err(format!(
                "the registry names the token realm {}, which is not https like the registry; \
                 no credentials are sent there",
                super::send::redact(&realm)
            )));
        }
        Ok(realm)
    }

    async fn fetch_token(
        &self,
        own: &reqwest::Client,
        foreign: &reqwest::Client,
        ch: &Challenge,
        scopes: &[String],
        login: Option<&Credential>,
    ) -> Result<(Secret, Instant)> {
        let realm_url = self.realm(ch)?;
        // The client certificate is for the registry's own origin only.
        let http = if realm_url.origin() == self.base.origin() {
            own
        } else {
            foreign
        };
        let realm = super::send::redact(&realm_url);
        let service = ch.params.get("service").cloned().unwrap_or_default();
        let started = Instant::now();
        let resp = match login {
            Some(Credential::IdentityToken(refresh)) => {
                let scope = scopes.join(" ");
                let form = [
                    ("grant_type", "refresh_token"),
                    ("service", service.as_str()),
                    ("scope", scope.as_str()),
                    ("client_id", "regferry"),
                    ("refresh_token", refresh.expose()),
                ];
                http.post(realm_url.clone())
                    .timeout(self.limits.request_deadline)
                    .form(&form)
                    .send()
                    .await
            }
            _ => {
                let mut q: Vec<(&str, &str)> = Vec::new();
                if !service.is_empty() {
                    q.push(("service", &service));
                }
                for s in scopes {
                    q.push(("scope", s));
                }
                let mut req = http
                    .get(realm_url.clone())
                    .timeout(self.limits.request_deadline)
                    .query(&q);
                if let Some(Credential::Basic { username, password }) = login {
                    req = req.basic_auth(username, Some(password.expose()));
                }
                req.send().await
            }
        };
        let resp = resp.map_err(|e| {
            self.err(format!(
                "token request to {realm}: {}",
                super::send::describe(e)
            ))
        })?;
        let status = resp.status();
        if !status.is_success() {
            let what = if status.as_u16() == 401 || status.as_u16() == 403 {
                "the credentials were refused"
            } else {
                "the token service failed"
            };
            return Err(self.err(format!("{what} (HTTP {} from {realm})", status.as_u16())));
        }
        let body = super::ops::read_limited(resp, self.limits.token_bytes)
            .await
            .map_err(|e| self.err(format!("token answer from {realm}: {e}")))?;
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| self.err(format!("token answer from {realm}: {e}")))?;
        let token = if answer.token.is_empty() {
            answer.access_token
        } else {
            answer.token
        };
        if token.is_empty() {
            return Err(self.err(format!("no token in the answer from {realm}")));
        }
        // Distribution's default lifetime is 60 s; renew at 90% of it.
        let life = Duration::from_secs(answer.expires_in.unwrap_or(60).clamp(1, 86_400));
        Ok((Secret::new(token), started + life.mul_f64(0.9)))
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
    s.sort_unstable();
    s.join(" ")
}

fn bearer(token: &Secret) -> Result<HeaderValue> {
    let mut v =
        HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| Error::Auth {
            registry: String::new(),
            reason: "token contains characters not allowed in a header".into(),
        })?;
    v.set_sensitive(true);
    Ok(v)
}

fn basic(user: &str, pass: &Secret) -> Result<HeaderValue> {
    let raw = format!("{user}:{}", pass.expose());
    let mut v = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    ))
    .map_err(|_| Error::Auth {
        registry: String::new(),
        reason: "credentials contain characters not allowed in a header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}
