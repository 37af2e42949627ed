//! Credentials from the Docker CLI configuration and `docker-credential-*` helpers.
//!
//! Lookup order follows the Docker CLI (`cli/config/configfile`): a per-registry
//! `credHelpers` entry, else the global `credsStore`, else the `auths` map in the file.
//! Unlike the Docker CLI, an `auths` entry is still used when a helper knows nothing of the
//! registry, since many hosts carry both. Helpers run with a timeout, so a hung helper
//! (a locked keychain, an unreachable cloud metadata service) cannot stall a sync.
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;
use crate::secret::Secret;

/// How long a credential helper may run before it is killed.
pub const DEFAULT_HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The key Docker uses for Docker Hub in config files and helpers.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A login for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or a personal access token used as one).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token endpoint.
    IdentityToken(Secret),
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The Docker config file exists but cannot be read.
    #[error("reading docker config {path}: {source}")]
    ConfigRead {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Docker config file is not valid JSON of the expected shape.
    #[error("parsing docker config {path}: {source}")]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// An `auths[…].auth` field is not base64 of `user:password`.
    #[error("docker config {path}: auths[{key:?}].auth is not base64 of user:password")]
    BadAuthField {
        /// The config file.
        path: PathBuf,
        /// The auths key.
        key: String,
    },
    /// The helper program could not be started.
    #[error("credential helper docker-credential-{helper} could not be started: {source}")]
    HelperSpawn {
        /// The helper's name (without the `docker-credential-` prefix).
        helper: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The helper ran longer than allowed and was killed.
    #[error("credential helper docker-credential-{helper} did not answer within {timeout:?}")]
    HelperTimeout {
        /// The helper's name.
        helper: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The helper exited with an error other than "not found". What it printed is not
    /// kept: a helper may print its secret before it fails.
    #[error(
        "credential helper docker-credential-{helper} failed ({status}); its output is not shown \
         because it may hold a secret: run `echo <registry> | docker-credential-{helper} get` \
         to see it"
    )]
    HelperFailed {
        /// The helper's name.
        helper: String,
        /// The exit status.
        status: String,
    },
    /// The helper's answer was not the protocol's JSON. Only where and what kind of error is
    /// kept: a JSON parser's message quotes the values it read.
    #[error(
        "credential helper docker-credential-{helper} answered with something other than \
         {{\"Username\": …, \"Secret\": …}} ({what} at line {line}, column {column})"
    )]
    HelperOutput {
        /// The helper's name.
        helper: String,
        /// What kind of error: not JSON, a field of the wrong type, an early end.
        what: &'static str,
        /// Where in the answer.
        line: usize,
        /// Where in the line.
        column: usize,
    },
}

/// A parsed Docker CLI `config.json`.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    path: PathBuf,
    auths: BTreeMap<String, RawAuth>,
    creds_store: Option<String>,
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct RawDockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Clone, Default, Deserialize)]
struct RawAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl std::fmt::Debug for RawAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawAuth(***)")
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl DockerConfig {
    /// Where the Docker CLI looks: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn default_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
        if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(Path::new(&dir).join("config.json"));
        }
        env("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| Path::new(&h).join(".docker").join("config.json"))
    }

    /// Reads a config file; a missing file is an empty config, as for the Docker CLI.
    pub fn load(path: &Path) -> Result<DockerConfig, CredentialError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path: path.to_owned(),
                    ..DockerConfig::default()
                });
            }
            Err(source) => {
                return Err(CredentialError::ConfigRead {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let raw: RawDockerConfig =
            serde_json::from_str(&text).map_err(|source| CredentialError::ConfigParse {
                path: path.to_owned(),
                source,
            })?;
        Ok(DockerConfig {
            path: path.to_owned(),
            auths: raw.auths,
            creds_store: raw.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: raw.cred_helpers,
        })
    }

    /// The file this configuration was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential for a registry (as written in references, e.g. `docker.io`), if any.
    /// `credential_host` overrides the name looked up, like regsync's `credHost`.
    pub fn lookup(
        &self,
        registry: &str,
        credential_host: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<Credential>, CredentialError> {
        let host = credential_host.unwrap_or(registry);
        let key = config_key(host);
        let wanted = key_hostname(&key);
        let helper = self
            .cred_helpers
            .iter()
            .find(|(k, _)| key_hostname(k) == wanted)
            .map(|(_, h)| h.as_str())
            .or(self.creds_store.as_deref());
        if let Some(helper) = helper
            && let Some(cred) = run_helper(helper, &key, timeout)?
        {
            return Ok(Some(cred));
        }
        let Some((found_key, auth)) = self.auths.iter().find(|(k, _)| key_hostname(k) == wanted)
        else {
            return Ok(None);
        };
        self.decode(found_key, auth)
    }

    fn decode(&self, key: &str, auth: &RawAuth) -> Result<Option<Credential>, CredentialError> {
        if let Some(token) = auth.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential::IdentityToken(Secret::new(token))));
        }
        if let Some(encoded) = auth.auth.as_deref().filter(|a| !a.is_empty()) {
            let bad = || CredentialError::BadAuthField {
                path: self.path.clone(),
                key: key.to_owned(),
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| bad())?;
            let text = String::from_utf8(bytes).map_err(|_| bad())?;
            let (user, pass) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential::Basic {
                username: user.to_owned(),
                password: Secret::new(pass),
            }));
        }
        match (&auth.username, &auth.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::Basic {
                username: u.clone(),
                password: Secret::new(p.clone()),
            })),
            _ => Ok(None),
        }
    }
}

/// The key Docker config files and helpers use for a registry.
pub fn config_key(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" || registry == "registry-1.docker.io"
    {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

// Docker's ConvertToHostname: drop the scheme and any path.
fn key_hostname(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Runs `docker-credential-<helper> get` for `server`; `Ok(None)` when it knows no login.
pub fn run_helper(
    helper: &str,
    server: &str,
    timeout: Duration,
) -> Result<Option<Credential>, CredentialError> {
    run_helper_program(
        &format!("docker-credential-{helper}"),
        helper,
        server,
        timeout,
    )
}

fn run_helper_program(
    program: &str,
    helper: &str,
    server: &str,
    timeout: Duration,
) -> Result<Option<Credential>, CredentialError> {
    let spawn_err = |source| CredentialError::HelperSpawn {
        helper: helper.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not read: a helper's messages may quote its secret, and none of it reaches a log.
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is not an error here; its exit status says.
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.stdout.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut buf);
        }
        buf
    });
    let start = std::time::SystemTime::now();
    let status = loop {
        match child.try_wait().map_err(spawn_err)? {
            Some(status) => break status,
            None if start.elapsed().unwrap_or_default() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CredentialError::HelperTimeout {
                    helper: helper.to_owned(),
                    timeout,
                });
            }
            None => {
                // This runs on a blocking thread (callers use spawn_blocking), so a short sleep is fine.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    let out = out_reader.join().unwrap_or_default();
    let out_text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The helper protocol reports "credentials not found in native keychain" on stdout.
        if out_text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(CredentialError::HelperFailed {
            helper: helper.to_owned(),
            status: status.to_string(),
        });
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|e| {
        use serde_json::error::Category;
        CredentialError::HelperOutput {
            helper: helper.to_owned(),
            what: match e.classify() {
                Category::Syntax => "not JSON",
                Category::Data => "a field of the wrong type",
                Category::Eof | Category::Io => "the answer ends early",
            },
            line: e.line(),
            column: e.column(),
        }
    })?;
    if answer.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(Secret::new(answer.secret))));
    }
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credential::Basic {
        username: answer.username,
        password: Secret::new(answer.secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_config(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn default_path_prefers_docker_config() {
        let env = |k: &str| match k {
            "DOCKER_CONFIG" => Some("/etc/dc".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(
            DockerConfig::default_path(&env).unwrap(),
            Path::new("/etc/dc/config.json")
        );
        let env = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        assert_eq!(
            DockerConfig::default_path(&env).unwrap(),
            Path::new("/home/u/.docker/config.json")
        );
    }

    #[test]
    fn reads_auths_for_docker_hub_and_other_registries() {
        let dir = tempfile::tempdir().unwrap();
        // "alice:s3cret" and "bob:pw:with:colons"
        let path = write_config(
            dir.path(),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0"},
                "https://ghcr.io":{"auth":"Ym9iOnB3OndpdGg6Y29sb25z"},
                "quay.io":{"identitytoken":"refresh-me"},
                "broken.io":{"auth":"!!!"}
            }}"#,
        );
        let cfg = DockerConfig::load(&path).unwrap();
        let t = DEFAULT_HELPER_TIMEOUT;
        assert_eq!(
            cfg.lookup("docker.io", None, t).unwrap(),
            Some(Credential::Basic {
                username: "alice".into(),
                password: Secret::new("s3cret")
            })
        );
        assert_eq!(
            cfg.lookup("ghcr.io", None, t).unwrap(),
            Some(Credential::Basic {
                username: "bob".into(),
                password: Secret::new("pw:with:colons")
            })
        );
        assert_eq!(
            cfg.lookup("quay.io", None, t).unwrap(),
            Some(Credential::IdentityToken(Secret::new("refresh-me")))
        );
        assert_eq!(cfg.lookup("example.com", None, t).unwrap(), None);
        // credHost redirects the lookup.
        assert!(
            cfg.lookup("mirror.local", Some("ghcr.io"), t)
                .unwrap()
                .is_some()
        );
        let err = cfg.lookup("broken.io", None, t).unwrap_err();
        assert!(err.to_string().contains("broken.io"), "{err}");
        assert!(!err.to_string().contains("!!!"));
    }

    #[test]
    fn missing_file_is_empty_and_bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DockerConfig::load(&dir.path().join("nope.json")).unwrap();
        assert_eq!(
            cfg.lookup("docker.io", None, DEFAULT_HELPER_TIMEOUT)
                .unwrap(),
            None
        );
        let path = write_config(dir.path(), "{not json");
        let err = DockerConfig::load(&path).unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    /// Held by every test that writes helper scripts and runs them. A script is open for
    /// writing while it is written; a process forked by another test in that moment inherits
    /// the open file until its own exec, and running the script then fails with "Text file
    /// busy" (ETXTBSY). Seen once in CI and about once in 300 runs here.
    static HELPERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn helpers_alone() -> std::sync::MutexGuard<'static, ()> {
        HELPERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn install_helper(dir: &Path, name: &str, script: &str) {
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // run_helper looks helpers up on PATH; the test runs them by absolute path instead, so it
    // needs no process-global PATH change.
    #[test]
    fn helper_protocol_answers_not_found_failure_and_timeout() {
        let _alone = helpers_alone();
        let dir = tempfile::tempdir().unwrap();
        install_helper(
            dir.path(),
            "ok",
            r#"read server; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"p"}' "$server" "$server""#,
        );
        install_helper(
            dir.path(),
            "tok",
            r#"printf '{"Username":"<token>","Secret":"rt"}'"#,
        );
        install_helper(
            dir.path(),
            "none",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        install_helper(dir.path(), "boom", "echo 'keychain locked' >&2; exit 3");
        install_helper(dir.path(), "hang", "sleep 5");
        let abs = |name: &str| format!("{}/docker-credential-{name}", dir.path().display());
        let run = |name: &str, timeout| run_helper_program(&abs(name), name, "ghcr.io", timeout);
        assert_eq!(
            run("ok", DEFAULT_HELPER_TIMEOUT).unwrap(),
            Some(Credential::Basic {
                username: "u-ghcr.io".into(),
                password: Secret::new("p")
            })
        );
        assert_eq!(
            run("tok", DEFAULT_HELPER_TIMEOUT).unwrap(),
            Some(Credential::IdentityToken(Secret::new("rt")))
        );
        assert_eq!(run("none", DEFAULT_HELPER_TIMEOUT).unwrap(), None);
        let err = run("boom", DEFAULT_HELPER_TIMEOUT).unwrap_err();
        assert!(
            matches!(&err, CredentialError::HelperFailed { status, .. } if status.contains('3')),
            "{err}"
        );
        let err = run("hang", Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(err, CredentialError::HelperTimeout { .. }),
            "{err}"
        );
        assert!(matches!(
            run_helper("regferry-test-missing", "x", DEFAULT_HELPER_TIMEOUT),
            Err(CredentialError::HelperSpawn { .. })
        ));
    }

    #[test]
    fn a_helper_s_output_never_appears_in_an_error() {
        let _alone = helpers_alone();
        let dir = tempfile::tempdir().unwrap();
        // Failing after printing its answer; an answer of the wrong shape; an answer that is
        // not JSON; a failure that echoes what it read.
        install_helper(
            dir.path(),
            "half",
            r#"printf '{"Username":"u","Secret":"hunter2-out"}'; echo 'hunter2-err' >&2; exit 1"#,
        );
        install_helper(
            dir.path(),
            "shape",
            r#"printf '{"Username":"u","Secret":["hunter2-shape"]}'"#,
        );
        install_helper(
            dir.path(),
            "number",
            r#"printf '{"Username":"u","Secret":31415926}'"#,
        );
        install_helper(dir.path(), "text", "echo 'password=hunter2-text'");
        let abs = |name: &str| format!("{}/docker-credential-{name}", dir.path().display());
        for (name, secret) in [
            ("half", "hunter2"),
            ("shape", "hunter2"),
            ("number", "31415926"),
            ("text", "hunter2"),
        ] {
            let err = run_helper_program(&abs(name), name, "ghcr.io", DEFAULT_HELPER_TIMEOUT)
                .unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{name}: {shown}");
            assert!(shown.contains(name), "the helper is named: {shown}");
        }
    }
}
