//! `TestRegistry`: a real distribution registry (Debian's `docker-registry`, 2.8) on a free
//! loopback port with its own temporary storage, killed on drop; plain HTTP, or HTTPS with a
//! fresh CA (optionally requiring client certificates), see [`Tls`].
//!
//! Everything here blocks the calling thread (spawning the process and polling `/v2/` until it
//! answers, typically ~100 ms); that is fine from `#[test]` and from `#[tokio::test]` (it does
//! not use the caller's runtime, so paused time does not matter).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tls::{Tls, TlsMaterial};
use crate::token::TokenIssuer;
use crate::wait::{Deadline, pause};

/// The registry binary; `REGFERRY_REGISTRY_BIN` overrides it.
pub const DEFAULT_REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// curl, the readiness probe of HTTPS registries; `REGFERRY_CURL_BIN` overrides it.
pub const DEFAULT_CURL_BIN: &str = "curl";

/// How long a registry may take to answer `GET /v2/`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts when another process takes the port between probing and binding it.
const PORT_ATTEMPTS: usize = 5;

/// How clients authenticate to a [`TestRegistry`].
#[derive(Debug, Clone, Copy, Default)]
pub enum Auth<'a> {
    /// No authentication.
    #[default]
    None,
    /// HTTP Basic against an htpasswd file (bcrypt) with one user.
    Htpasswd {
        /// User name.
        user: &'a str,
        /// Password.
        pass: &'a str,
    },
    /// Bearer tokens from this issuer (`auth: token:`); its certificate becomes the
    /// registry's `rootcertbundle`.
    Token {
        /// The token server the registry trusts.
        issuer: &'a TokenIssuer,
    },
}

/// Options for [`TestRegistry::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions<'a> {
    /// Authentication mode.
    pub auth: Auth<'a>,
    /// `http.relativeurls`: `Location` headers without scheme and host.
    pub relative_urls: bool,
    /// distribution's application log level (`log.level`); default `info`.
    pub log_level: Option<&'a str>,
    /// With [`Auth::Token`]: the realm to advertise instead of the issuer's own, e.g. a
    /// [`crate::FaultProxy`] in front of the issuer (`format!("{}/token", proxy.url())`) to
    /// inject faults into token fetches.
    pub token_realm: Option<&'a str>,
    /// Serve HTTPS (a fresh CA and a server certificate for `127.0.0.1` and `localhost`),
    /// optionally requiring client certificates; see [`TestRegistry::tls`].
    pub tls: Tls,
    /// `storage.delete.enabled: false`: the registry refuses every DELETE of a manifest.
    pub no_delete: bool,
    /// Every response carries an `X-Padding` header (`http.headers`) with one value of each
    /// of these sizes in bytes, for clients' bounds on a response head, over HTTP/1 and
    /// HTTP/2 (where each value is a field of its own).
    pub header_padding: &'a [usize],
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// HTTP method.
    pub method: String,
    /// Path and query, as requested.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl AccessLogEntry {
    /// PUT, POST, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE")
    }
}

/// A running registry process; killed (and reaped) on drop, then its storage is deleted.
///
/// The process stays in the test's process group on purpose: a Ctrl-C on `cargo test` reaches it
/// too, where its own group would leave it running.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<TlsMaterial>,
    // Declared last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl TestRegistry {
    /// A registry over plain HTTP without authentication.
    ///
    /// # Panics
    /// If the registry does not come up; the message carries its log.
    pub fn start() -> Self {
        Self::start_with(RegistryOptions::default())
    }

    /// A registry with these options.
    ///
    /// # Panics
    /// If the registry does not come up; the message carries its log.
    pub fn start_with(opts: RegistryOptions<'_>) -> Self {
        let dir = crate::temp_dir();
        let auth_yaml = match opts.auth {
            Auth::None => String::new(),
            Auth::Htpasswd { user, pass } => {
                let path = dir.path().join("htpasswd");
                // Cost 4 is bcrypt's minimum: a login check stays ~1 ms.
                let hash = bcrypt::hash(pass, 4).expect("bcrypt hash");
                std::fs::write(&path, format!("{user}:{hash}\n")).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: regferry-testkit\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token { issuer } => {
                let path = dir.path().join("token-root.pem");
                std::fs::write(&path, issuer.cert_pem()).expect("write rootcertbundle");
                format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    opts.token_realm
                        .map_or_else(|| issuer.realm(), str::to_owned),
                    issuer.service(),
                    issuer.issuer(),
                    path.display()
                )
            }
        };
        let credentials = match opts.auth {
            Auth::None => None,
            Auth::Htpasswd { user, pass } => Some((user.to_owned(), pass.to_owned())),
            Auth::Token { issuer } => issuer.user().map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        let bin = std::env::var("REGFERRY_REGISTRY_BIN")
            .unwrap_or_else(|_| DEFAULT_REGISTRY_BIN.to_owned());
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("create registry storage dir");
        let tls = TlsMaterial::generate(dir.path(), opts.tls);
        let tls_yaml = tls
            .as_ref()
            .map(TlsMaterial::config_yaml)
            .unwrap_or_default();

        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let config = format!(
                "version: 0.1
log:
  level: {level}
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: {delete}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: regferry-testkit-{port}-not-secret
  relativeurls: {relative}
  headers:
    X-Content-Type-Options: [nosniff]
{padding}{tls_yaml}health:
  storagedriver:
    enabled: false
{auth_yaml}",
                level = opts.log_level.unwrap_or("info"),
                delete = !opts.no_delete,
                data = data.display(),
                relative = opts.relative_urls,
                padding = match opts.header_padding {
                    [] => String::new(),
                    sizes => format!(
                        "    X-Padding: [{}]\n",
                        sizes
                            .iter()
                            .map(|&n| "a".repeat(n))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).expect("write registry config");
            // A retry appends to the same logs; the port in each line tells the attempts apart.
            let access = append(&dir.path().join("access.log"));
            let app = append(&dir.path().join("registry.log"));
            let mut cmd = Command::new(&bin);
            cmd.arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::from(access))
                .stderr(Stdio::from(app));
            // distribution lets REGISTRY_* variables override the config file.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(k);
                }
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}); is the docker-registry package installed?")
            });
            match wait_ready(&mut child, port, dir.path(), tls.as_ref()) {
                Ok(()) => {
                    return Self {
                        child,
                        port,
                        credentials,
                        tls,
                        dir,
                    };
                }
                Err(Exit::PortTaken) if attempt < PORT_ATTEMPTS => continue,
                Err(why) => {
                    kill(&mut child);
                    panic!(
                        "registry on 127.0.0.1:{port} did not start ({why}); config:\n{}\nlog:\n{}",
                        read(&dir.path().join("config.yml")),
                        read(&dir.path().join("registry.log")),
                    )
                }
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `127.0.0.1:PORT`, for references (`127.0.0.1:PORT/repo:tag`).
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`, or `https://127.0.0.1:PORT` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.host())
    }

    /// The certificates and keys of an HTTPS registry ([`RegistryOptions::tls`]); `None` for
    /// plain HTTP.
    pub fn tls(&self) -> Option<&TlsMaterial> {
        self.tls.as_ref()
    }

    /// The registry's process id (for checks that it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A reference on this registry: `reference("x/y:1")` is `127.0.0.1:PORT/x/y:1`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.host())
    }

    /// `(user, pass)` that the registry accepts, if it has authentication.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The filesystem storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temp dir with `config.yml`, `access.log`, `registry.log` and `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's application log (stderr) so far.
    pub fn registry_log(&self) -> String {
        read(&self.dir.path().join("registry.log"))
    }

    /// Every request the registry has logged, oldest first, including the harness's own
    /// readiness probes (`GET /v2/`).
    ///
    /// distribution logs a request when its handler returns, which is before the response's
    /// last bytes are flushed to the client: once a client has read a whole response, its line
    /// is here.
    pub fn access_log(&self) -> Vec<AccessLogEntry> {
        read(&self.dir.path().join("access.log"))
            .lines()
            .filter_map(parse_access_line)
            .collect()
    }

    /// How many PUT/POST/PATCH/DELETE requests the registry has served.
    pub fn writes(&self) -> usize {
        self.access_log().iter().filter(|e| e.is_write()).count()
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Why a registry did not come up.
#[derive(Debug)]
enum Exit {
    PortTaken,
    Exited(std::process::ExitStatus),
    /// The last probe's failure, if any.
    Timeout(Option<String>),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::PortTaken => write!(f, "port taken"),
            Exit::Exited(status) => write!(f, "exited: {status}"),
            Exit::Timeout(None) => write!(f, "no answer on /v2/ within {START_TIMEOUT:?}"),
            Exit::Timeout(Some(last)) => write!(
                f,
                "no answer on /v2/ within {START_TIMEOUT:?}; last probe: {last}"
            ),
        }
    }
}

/// Waits until `GET /v2/` answers 200 or 401 (auth modes), or the process exits.
fn wait_ready(
    child: &mut Child,
    port: u16,
    dir: &Path,
    tls: Option<&TlsMaterial>,
) -> Result<(), Exit> {
    let deadline = Deadline::after(START_TIMEOUT);
    let agent = crate::client::agent(Duration::from_secs(2));
    let url = format!("http://127.0.0.1:{port}/v2/");
    let mut last_error = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(
                if read(&dir.join("registry.log")).contains("address already in use") {
                    Exit::PortTaken
                } else {
                    Exit::Exited(status)
                },
            );
        }
        let status = match tls {
            None => agent.get(&url).call().map(|r| r.status().as_u16()).ok(),
            Some(tls) => match probe_https(port, tls) {
                Ok(status) => status,
                Err(e) => {
                    last_error = Some(e);
                    None
                }
            },
        };
        if matches!(status, Some(200 | 401)) {
            return Ok(());
        }
        if deadline.passed() {
            return Err(Exit::Timeout(last_error));
        }
        pause(Duration::from_millis(20));
    }
}

/// `GET https://127.0.0.1:PORT/v2/` with curl, trusting only the registry's CA (and showing its
/// client certificate with [`Tls::Mutual`]): `Ok(None)` while the port does not accept
/// connections yet, `Ok(Some(status))` on an answer, `Err` with curl's message otherwise (a
/// TLS failure here is a harness bug, reported if the registry never becomes ready).
///
/// curl rather than the harness's ureq agent: ureq's TLS support would add rustls with its
/// `ring` provider to a workspace whose reqwest builds rustls with `aws-lc-rs`, changing
/// rustls's features (and so rebuilding reqwest and regferry) in every test build, and leaving
/// the binary under test with a crypto set-up the shipped one does not have. curl also checks
/// the generated certificates with a third, independent TLS stack (OpenSSL).
fn probe_https(port: u16, tls: &TlsMaterial) -> Result<Option<u16>, String> {
    // Only spawn curl once the port accepts connections; until then the registry is starting.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
        return Ok(None);
    }
    let bin = std::env::var("REGFERRY_CURL_BIN").unwrap_or_else(|_| DEFAULT_CURL_BIN.to_owned());
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--max-time",
        "2",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        "--cacert",
    ])
    .arg(tls.ca_path());
    if let Some((cert, key)) = tls.client_paths() {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .arg(format!("https://127.0.0.1:{port}/v2/"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); is the curl package installed?"));
    if !out.status.success() {
        return Err(format!(
            "curl ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse().ok())
}

/// SIGKILL (the registry keeps nothing worth a graceful stop) and reap.
fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn append(path: &Path) -> File {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// A port that was free a moment ago. The registry binds it itself, so another process may take
/// it in between; [`TestRegistry::start_with`] retries on "address already in use".
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Parses a gorilla/handlers combined log line:
/// `127.0.0.1 - - [02/Jan/2024:03:04:05 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "ureq/3"`.
fn parse_access_line(line: &str) -> Option<AccessLogEntry> {
    // The user field is always `-`: gorilla only logs a user from the URL, never from auth.
    let (_, rest) = line.split_once(" [")?;
    let (_, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let status = rest.split(' ').next()?.parse().ok()?;
    // The last quoted field is the user agent.
    let user_agent = rest
        .rsplit_once(" \"")
        .map(|(_, ua)| ua.trim_end_matches('"').to_owned())
        .unwrap_or_default();
    Some(AccessLogEntry {
        method,
        path,
        status,
        user_agent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_combined_log_lines() {
        let e = parse_access_line(
            r#"127.0.0.1 - - [02/Jan/2024:03:04:05 +0000] "PUT /v2/x/y/manifests/1?a=b HTTP/1.1" 201 0 "" "skopeo/1.9.3""#,
        )
        .expect("parses");
        assert_eq!(e.method, "PUT");
        assert_eq!(e.path, "/v2/x/y/manifests/1?a=b");
        assert_eq!(e.status, 201);
        assert_eq!(e.user_agent, "skopeo/1.9.3");
        assert!(e.is_write());
        assert_eq!(parse_access_line("time=\"..\" level=info msg=hello"), None);
    }
}
