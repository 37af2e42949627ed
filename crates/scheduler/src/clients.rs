//! One registry client per registry name and one layout handle per directory, built from
//! the configuration on first use and shared by every entry of a run. They share one
//! [`Memory`] (tags written, referrers-API answers, index locks), which an engine hands on
//! to the engine that succeeds it after a reload.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regferry_config::{Config, Endpoint, Host};
use regferry_registry::credentials::{Credential, DockerConfig, config_key};
use regferry_registry::http::{HostOptions, LoginSource, RegistryClient};
use regferry_registry::ocidir::OciLayout;
use regferry_registry::repo::Repo;
use regferry_registry::{Error, Memory, Result};

/// Registry clients and layouts for one configuration.
#[derive(Debug)]
pub struct Clients {
    config: Arc<Config>,
    docker: Option<Arc<DockerConfig>>,
    registries: Mutex<HashMap<String, RegistryClient>>,
    layouts: Mutex<HashMap<PathBuf, OciLayout>>,
    memory: Memory,
}

impl Clients {
    /// Clients for `config`; reads the Docker config file unless `skipDockerConfig`.
    pub fn new(config: Arc<Config>) -> Clients {
        Clients::sharing(config, Memory::new())
    }

    /// [`Clients::new`], sharing `memory` with the clients made before (a reload).
    pub fn sharing(config: Arc<Config>, memory: Memory) -> Clients {
        let docker = if config.globals.skip_docker_config {
            None
        } else {
            let env = |k: &str| std::env::var(k).ok();
            DockerConfig::default_path(&env).and_then(|p| match DockerConfig::load(&p) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(error = %e, "Ignoring the Docker config file");
                    None
                }
            })
        };
        Clients {
            config,
            docker,
            registries: Mutex::new(HashMap::new()),
            layouts: Mutex::new(HashMap::new()),
            memory,
        }
    }

    /// What these clients have learned, to hand on to those made after a reload.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The client for a registry name.
    pub fn registry(&self, registry: &str) -> Result<RegistryClient> {
        self.client(registry, None)
    }

    /// A client for `registry`, or for it as a pull-only mirror of `mirror_of`.
    fn client(&self, registry: &str, mirror_of: Option<&str>) -> Result<RegistryClient> {
        let key = format!("{registry}\u{0}{}", mirror_of.unwrap_or_default());
        let mut map = self.registries.lock().map_err(|_| Error::Cancelled)?;
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let host = self.host(registry);
        let mut opts = self.options(&host);
        opts.mirror_of = mirror_of.map(str::to_owned);
        let client = RegistryClient::sharing(opts, self.memory.clone())?;
        map.insert(key, client.clone());
        Ok(client)
    }

    fn host(&self, registry: &str) -> Host {
        self.config
            .host(registry)
            .cloned()
            .unwrap_or_else(|| Host::with_defaults(registry))
    }

    /// A repository on a registry, with its mirrors (if any) ordered for reads: by
    /// priority, highest first, the registry itself after mirrors of equal priority.
    fn registry_repo(&self, registry: &str, name: String) -> Result<Repo> {
        let client = self.registry(registry)?;
        let host = self.host(registry);
        let mut reads = Vec::new();
        if !host.mirrors.is_empty() {
            let mut order: Vec<(u32, bool, RegistryClient)> =
                vec![(host.priority, true, client.clone())];
            for m in &host.mirrors {
                let prio = self.host(m).priority;
                order.push((prio, false, self.client(m, Some(registry))?));
            }
            // Higher priority first; at equal priority mirrors (false) before the upstream (true).
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            reads = order.into_iter().map(|(_, _, c)| c).collect();
        }
        Ok(Repo::Registry {
            client,
            name,
            reads,
        })
    }

    /// Every registry client made so far, with its name (mirrors included).
    pub fn registries(&self) -> Vec<RegistryClient> {
        match self.registries.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Cancels the upload sessions that work dropped mid-way left open, on every registry;
    /// returns how many there were.
    pub async fn cancel_abandoned_uploads(&self) -> usize {
        let mut n = 0;
        for c in self.registries() {
            n += c.cancel_abandoned_uploads().await;
        }
        n
    }

    /// The handle for a layout directory (one per directory, so writers share its lock).
    pub fn layout(&self, path: &Path) -> OciLayout {
        let mut map = match self.layouts.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(path.to_owned())
            .or_insert_with(|| OciLayout::sharing(path, self.memory.clone()))
            .clone()
    }

    /// The repository an endpoint names, with `repository` appended for registry-wide entries.
    pub fn repo(&self, endpoint: &Endpoint, repository: Option<&str>) -> Result<Repo> {
        match endpoint {
            Endpoint::Registry(r) => self.registry_repo(r.registry(), r.repository().to_owned()),
            Endpoint::Namespace { registry, prefix } => {
                let repo = repository.unwrap_or_default();
                let name = match (prefix.is_empty(), repo.is_empty()) {
                    (true, _) => repo.to_owned(),
                    (false, true) => prefix.clone(),
                    (false, false) => format!("{prefix}/{repo}"),
                };
                self.registry_repo(registry, name)
            }
            Endpoint::OciDir { path, .. } => Ok(Repo::Layout(self.layout(path))),
        }
    }

    fn options(&self, h: &Host) -> HostOptions {
        let mut o = h.client_options(&self.config.globals);
        let server = h
            .cred_host
            .clone()
            .unwrap_or_else(|| config_key(&h.registry));
        o.login = if !h.user.is_empty() || !h.pass.is_empty() {
            LoginSource::Static(Credential::Basic {
                username: h.user.clone(),
                password: h.pass.clone(),
            })
        } else if let Some(helper) = &h.cred_helper {
            LoginSource::Helper {
                helper: helper.clone(),
                server,
                expire: h.cred_expire,
            }
        } else if let Some(docker) = &self.docker {
            // The Docker config is keyed by host: a `credHost` with a path (from a creds
            // `registry` written with one) is for credential helpers only.
            let server = h.cred_host.clone().filter(|c| !c.contains('/'));
            LoginSource::DockerConfig {
                config: docker.clone(),
                server: server.unwrap_or_else(|| h.registry.clone()),
            }
        } else {
            LoginSource::Anonymous
        };
        o
    }
}
