//! `TokenIssuer`: a token server for distribution's `auth: token:` mode (the Docker registry
//! token protocol), on a loopback port.
//!
//! Tokens are ES256 JWTs whose header carries the issuer's self-signed certificate in `x5c`;
//! the same certificate is the registry's `rootcertbundle`. distribution 2.8.2
//! (`registry/auth/token/token.go`) checks, in order: `iss` is the configured issuer, `aud` (a
//! plain string in 2.8, not a list) is the configured service, `exp`/`nbf` within a 60 s leeway,
//! the `x5c` chain verifies against the root bundle, and the signature verifies with the leaf
//! certificate's key (libtrust: ES256 signatures are the 64-byte `r || s` JOSE form).
//!
//! Served:
//! - `GET /token?service=S&scope=T:NAME:ACTIONS[&scope=..]` with HTTP Basic credentials or
//!   anonymous; `offline_token=true` adds a `refresh_token` (what the docker CLI sends).
//! - `POST /token` (OAuth2 form, as docker and regclient may use): `grant_type=password` with
//!   `username`/`password` (returns a `refresh_token`), or `grant_type=refresh_token`.
//!
//! A known user gets every action it asks for (or only `pull` if made with
//! [`TokenUser::pull_only`]); anonymous requests get `pull` if
//! [`TokenOptions::anonymous_pull`] is set and a 401 otherwise; wrong credentials get a 401.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

use crate::server::{Body, Handler, ServerThread, respond};

/// A user the issuer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUser {
    /// User name (the token's `sub`).
    pub name: String,
    /// Password.
    pub pass: String,
    /// Only `pull` is ever granted to this user.
    pub pull_only: bool,
}

impl TokenUser {
    /// A user granted every action it asks for.
    pub fn new(name: &str, pass: &str) -> Self {
        Self {
            name: name.to_owned(),
            pass: pass.to_owned(),
            pull_only: false,
        }
    }

    /// This user only ever gets `pull`.
    pub fn pull_only(mut self) -> Self {
        self.pull_only = true;
        self
    }
}

/// How a [`TokenIssuer`] behaves.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// Known users; the first is what [`TokenIssuer::user`] (and a token-mode
    /// [`crate::TestRegistry::credentials`]) returns.
    pub users: Vec<TokenUser>,
    /// Anonymous requests get `pull` (and nothing else); otherwise they get a 401.
    pub anonymous_pull: bool,
    /// Token lifetime in seconds (`expires_in`, and `exp - iat`).
    pub expires_in: u64,
    /// The registry's `auth.token.service`, and the tokens' `aud`.
    pub service: String,
    /// The registry's `auth.token.issuer`, and the tokens' `iss`.
    pub issuer: String,
}

impl Default for TokenOptions {
    fn default() -> Self {
        Self {
            users: vec![TokenUser::new("regferry", "regferry-secret")],
            anonymous_pull: false,
            expires_in: 300,
            service: "regferry-testkit-registry".to_owned(),
            issuer: "regferry-testkit-issuer".to_owned(),
        }
    }
}

/// One request the issuer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// For POST: `grant_type` (`password`, `refresh_token`, ...).
    pub grant_type: Option<String>,
    /// The authenticated user, if any (None for anonymous and for failed logins).
    pub user: Option<String>,
    /// The `service` parameter.
    pub service: Option<String>,
    /// The requested scopes, as sent (`repository:x/y:pull,push`).
    pub scopes: Vec<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

/// A running token server; stops on drop. Its constructor blocks only to bind a port, so it
/// can be used from `#[test]` and `#[tokio::test]` alike.
#[derive(Debug)]
pub struct TokenIssuer {
    server: ServerThread,
    state: Arc<IssuerState>,
    cert_path: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct IssuerState {
    opts: TokenOptions,
    signer: Signer,
    log: Mutex<Vec<TokenRequest>>,
    /// refresh token -> user name
    refresh: Mutex<HashMap<String, String>>,
}

impl TokenIssuer {
    /// An issuer with [`TokenOptions::default`]: user `regferry` / `regferry-secret`, no
    /// anonymous access.
    pub fn start() -> Self {
        Self::start_with(TokenOptions::default())
    }

    /// An issuer that knows one user, otherwise with [`TokenOptions::default`].
    pub fn for_user(user: &str, pass: &str) -> Self {
        Self::start_with(TokenOptions {
            users: vec![TokenUser::new(user, pass)],
            ..TokenOptions::default()
        })
    }

    /// An issuer with these options.
    pub fn start_with(opts: TokenOptions) -> Self {
        let dir = crate::temp_dir();
        let signer = Signer::generate();
        let cert_path = dir.path().join("token-root.pem");
        std::fs::write(&cert_path, &signer.cert_pem).expect("write token root certificate");
        let state = Arc::new(IssuerState {
            opts,
            signer,
            log: Mutex::new(Vec::new()),
            refresh: Mutex::new(HashMap::new()),
        });
        let handler: Handler = {
            let state = state.clone();
            Arc::new(move |req, _conn| {
                let state = state.clone();
                Box::pin(async move { handle(&state, req).await })
            })
        };
        Self {
            server: ServerThread::spawn("token-issuer", handler),
            state,
            cert_path,
            _dir: dir,
        }
    }

    /// `127.0.0.1:PORT` (to put a [`crate::FaultProxy`] in front of the issuer).
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// The registry's `auth.token.realm`: `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// The service name (`aud`).
    pub fn service(&self) -> &str {
        &self.state.opts.service
    }

    /// The issuer name (`iss`).
    pub fn issuer(&self) -> &str {
        &self.state.opts.issuer
    }

    /// The first configured user, as `(user, pass)`.
    pub fn user(&self) -> Option<(&str, &str)> {
        self.state
            .opts
            .users
            .first()
            .map(|u| (u.name.as_str(), u.pass.as_str()))
    }

    /// The self-signed certificate (PEM) that signs tokens: the registry's `rootcertbundle`.
    pub fn cert_pem(&self) -> &str {
        &self.state.signer.cert_pem
    }

    /// Where [`Self::cert_pem`] is written.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.log.lock().expect("token log lock").clone()
    }

    /// Whether a token was successfully issued for a request that asked for exactly `scope`.
    pub fn fetched_scope(&self, scope: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r.status == 200 && r.scopes.iter().any(|s| s == scope))
    }

    /// Mints a token for `subject` granting exactly `scopes` (`repository:x/y:pull,push`), without
    /// any access check: for tests that need a token with a precise grant.
    pub fn mint(&self, subject: &str, scopes: &[&str]) -> String {
        let access = scopes
            .iter()
            .filter_map(|s| parse_scope(s))
            .map(|(kind, name, actions)| json!({"type": kind, "name": name, "actions": actions}))
            .collect();
        self.state.token(subject, self.service(), access).0
    }
}

impl IssuerState {
    /// A signed token and its issue time (unix seconds).
    fn token(&self, subject: &str, service: &str, access: Vec<serde_json::Value>) -> (String, u64) {
        let now = unix_now();
        let claims = json!({
            "iss": self.opts.issuer,
            "sub": subject,
            "aud": service,
            "exp": now + self.opts.expires_in,
            "nbf": now.saturating_sub(1),
            "iat": now,
            "jti": random_hex(16),
            "access": access,
        });
        (self.signer.sign(&claims), now)
    }

    /// What `user` (None: anonymous) gets for the requested scopes.
    fn grant(&self, user: Option<&TokenUser>, scopes: &[String]) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for scope in scopes {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                continue;
            };
            let granted: Vec<&str> = actions
                .into_iter()
                .filter(|a| match user {
                    Some(u) if !u.pull_only => true,
                    _ => *a == "pull",
                })
                .collect();
            if !granted.is_empty() {
                out.push(json!({"type": kind, "name": name, "actions": granted}));
            }
        }
        out
    }

    fn find_user(&self, name: &str, pass: &str) -> Option<&TokenUser> {
        self.opts
            .users
            .iter()
            .find(|u| u.name == name && u.pass == pass)
    }

    fn record(&self, r: TokenRequest) {
        self.log.lock().expect("token log lock").push(r);
    }
}

/// Splits `type:name:actions`; the name may itself contain `:` (e.g. a registry host with a port).
fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions = actions.split(',').filter(|a| !a.is_empty()).collect();
    Some((kind, name, actions))
}

fn json_response(status: u16, body: &serde_json::Value) -> Response<Body> {
    respond(
        status,
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
}

async fn handle(state: &IssuerState, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_owned();
    if req.uri().path() != "/token" {
        return respond(404, &[], "not found");
    }
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    let mut params: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if method == "POST" {
        let body = Limited::new(req.into_body(), 64 * 1024).collect().await;
        let Ok(body) = body else {
            return respond(400, &[], "unreadable body");
        };
        params.extend(form_urlencoded::parse(&body.to_bytes()).into_owned());
    }
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // GET repeats `scope`; the OAuth2 form joins scopes with spaces.
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let service = param("service");
    let grant_type = if method == "POST" {
        param("grant_type")
    } else {
        None
    };
    let mut entry = TokenRequest {
        method: method.clone(),
        grant_type: grant_type.clone(),
        user: None,
        service: service.clone(),
        scopes: scopes.clone(),
        status: 200,
    };

    let unauthorized = |entry: &mut TokenRequest, why: &str| {
        entry.status = 401;
        json_response(401, &json!({"details": why}))
    };
    let bad_request = |entry: &mut TokenRequest, why: &str| {
        entry.status = 400;
        json_response(400, &json!({"error": why}))
    };

    // Who is asking, and whether to hand out a refresh token.
    let (user, offline): (Option<&TokenUser>, bool) = match (method.as_str(), grant_type.as_deref())
    {
        ("GET", _) => match &basic {
            Some((u, p)) => match state.find_user(u, p) {
                Some(user) => (
                    Some(user),
                    param("offline_token").as_deref() == Some("true"),
                ),
                None => {
                    let r = unauthorized(&mut entry, "incorrect username or password");
                    state.record(entry);
                    return r;
                }
            },
            None if state.opts.anonymous_pull => (None, false),
            None => {
                let r = unauthorized(&mut entry, "authentication required");
                state.record(entry);
                return r;
            }
        },
        ("POST", Some("password")) => {
            let (u, p) = (param("username"), param("password"));
            match u.zip(p).and_then(|(u, p)| state.find_user(&u, &p)) {
                Some(user) => (Some(user), true),
                None => {
                    let r = unauthorized(&mut entry, "incorrect username or password");
                    state.record(entry);
                    return r;
                }
            }
        }
        ("POST", Some("refresh_token")) => {
            let name = param("refresh_token")
                .and_then(|t| state.refresh.lock().expect("refresh lock").get(&t).cloned());
            match name.and_then(|n| state.opts.users.iter().find(|u| u.name == n)) {
                Some(user) => (Some(user), false),
                None => {
                    let r = bad_request(&mut entry, "invalid_grant");
                    state.record(entry);
                    return r;
                }
            }
        }
        ("POST", _) => {
            let r = bad_request(&mut entry, "unsupported_grant_type");
            state.record(entry);
            return r;
        }
        _ => {
            entry.status = 405;
            state.record(entry);
            return respond(405, &[], "method not allowed");
        }
    };
    entry.user = user.map(|u| u.name.clone());

    let service = service.unwrap_or_else(|| state.opts.service.clone());
    let access = state.grant(user, &scopes);
    let subject = user.map(|u| u.name.as_str()).unwrap_or("");
    let (token, iat) = state.token(subject, &service, access);
    let mut body = json!({
        "token": token,
        "access_token": token,
        "expires_in": state.opts.expires_in,
        "issued_at": rfc3339(iat),
    });
    if method == "POST" {
        body["scope"] = json!(scopes.join(" "));
    }
    if let Some(user) = user {
        if grant_type.as_deref() == Some("refresh_token") {
            body["refresh_token"] = json!(param("refresh_token"));
        } else if offline {
            let refresh = random_hex(24);
            state
                .refresh
                .lock()
                .expect("refresh lock")
                .insert(refresh.clone(), user.name.clone());
            body["refresh_token"] = json!(refresh);
        }
    }
    state.record(entry);
    json_response(200, &body)
}

/// `Basic base64(user:pass)` -> (user, pass).
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// The signing key and its self-signed certificate.
struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    cert_pem: String,
    /// The certificate, DER in standard base64: the `x5c` header entry.
    x5c: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("x5c", &self.x5c)
            .finish_non_exhaustive()
    }
}

impl Signer {
    fn generate() -> Self {
        // rcgen's default key is ECDSA P-256 (SHA-256), the key ES256 needs.
        let key_pair = rcgen::KeyPair::generate().expect("generate P-256 key");
        let mut params = rcgen::CertificateParams::new(vec!["regferry-testkit-issuer".to_owned()])
            .expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regferry-testkit token issuer");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params
            .self_signed(&key_pair)
            .expect("self-sign certificate");
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key_pair.serialize_der(),
            &rng,
        )
        .expect("load signing key");
        Self {
            key,
            rng,
            cert_pem: cert.pem(),
            x5c: STANDARD.encode(cert.der()),
        }
    }

    /// A compact JWS (ES256) over `claims`.
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("sign token");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("system random source");
    hex::encode(buf)
}

/// Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scopes_split_with_colons_in_names() {
        assert_eq!(
            parse_scope("repository:127.0.0.1:5000/x:pull,push"),
            Some(("repository", "127.0.0.1:5000/x", vec!["pull", "push"]))
        );
        assert_eq!(parse_scope("nonsense"), None);
    }
}
