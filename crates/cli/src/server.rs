//! `regferry server`: the scheduler, the admin HTTP listener, signals and systemd.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use regferry_config::Config;
use regferry_scheduler::Engine;
use regferry_scheduler::metrics::Metrics;
use regferry_scheduler::server::{self, Reload, Request, ServerOptions, SystemClock};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// What `regferry server` was asked to do.
pub(crate) struct Settings {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) token: Option<String>,
    pub(crate) grace: Duration,
    pub(crate) shard: Option<(u32, u32)>,
    pub(crate) abort_on_error: bool,
    /// The config file, for reloads (`None` when it came from standard input).
    pub(crate) config_path: Option<std::path::PathBuf>,
}

/// Parses `I/N`.
struct Admin {
    /// This replica and the count, when sharded.
    shard: Option<(u32, u32)>,
    ready: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    engine: watch::Receiver<Arc<Engine>>,
    requests: mpsc::Sender<Request>,
    token: Option<String>,
    reloader: Reloader,
}

/// Reads the config file again and hands a new engine to the server.
#[derive(Clone)]
struct Reloader {
    path: Option<std::path::PathBuf>,
    shard: Option<(u32, u32)>,
    requests: mpsc::Sender<Request>,
    /// The engine in force, which the new one takes over from.
    current: watch::Receiver<Arc<Engine>>,
}

impl Reloader {
    /// Reloads; an invalid file leaves the running configuration in force.
    async fn reload(&self) -> Result<usize, String> {
        let Some(path) = self.path.clone() else {
            return Err(
                "the configuration came from standard input and cannot be read again".into(),
            );
        };
        let loaded = tokio::task::spawn_blocking(move || {
            regferry_config::load_file(&path, &regferry_config::template::SystemHost)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        for w in loaded.warning_lines() {
            tracing::warn!("{w}");
        }
        let previous = self.current.borrow().clone();
        let engine = Arc::new(Engine::succeeding(
            Arc::new(loaded.config),
            self.shard,
            &previous,
        ));
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Reload(Reload { engine, reply: tx }))
            .await
            .map_err(|_| "the server is stopping".to_owned())?;
        rx.await.map_err(|_| "the server is stopping".to_owned())
    }
}

pub(crate) fn run(config: Config, s: Settings) -> anyhow::Result<u8> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let engine = Arc::new(Engine::with_shard(Arc::new(config), s.shard));
        let (current_tx, current_rx) = watch::channel(engine.clone());
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
        let cancel = CancellationToken::new();
        let (req_tx, req_rx) = mpsc::channel(64);
        let (ready_tx, ready_rx) = watch::channel(false);

        tokio::spawn(signals(cancel.clone()));
        let reloader = Reloader {
            path: s.config_path.clone(),
            shard: s.shard,
            requests: req_tx.clone(),
            current: current_rx.clone(),
        };
        tokio::spawn(hangups(reloader.clone()));
        if let Some(addr) = s.listen {
            let admin = Arc::new(Admin {
                shard: s.shard,
                ready: ready_rx.clone(),
                metrics: metrics.clone(),
                engine: current_rx.clone(),
                requests: req_tx.clone(),
                token: s.token.clone().filter(|t| !t.is_empty()),
                reloader: reloader.clone(),
            });
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            tracing::info!(address = %listener.local_addr()?, "Admin listener started");
            let stop = cancel.clone();
            tokio::spawn(async move {
                let app = router(admin);
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                {
                    tracing::error!(error = %e, "Admin listener failed");
                }
            });
        }
        tokio::spawn(systemd(ready_rx.clone(), cancel.clone()));
        let opts = ServerOptions {
            abort_on_error: s.abort_on_error,
            grace: s.grace,
            shard: s.shard,
            ..ServerOptions::default()
        };
        let outcome = server::serve(
            engine,
            metrics,
            opts,
            Arc::new(SystemClock),
            cancel.clone(),
            req_rx,
            ready_tx,
            current_tx,
        )
        .await;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        tracing::info!(
            failed_runs = outcome.failed_runs,
            cancelled = outcome.cancelled_in_flight,
            "Server stopped"
        );
        Ok(if s.abort_on_error && outcome.failed_runs > 0 {
            1
        } else {
            0
        })
    })
}

/// SIGTERM or SIGINT starts a graceful stop; a second one exits at once.
async fn signals(cancel: CancellationToken) {
    let Some(mut signals) = crate::signals::StopSignals::install() else {
        return;
    };
    signals.next().await;
    tracing::info!("Stop signal received; stopping gracefully (send it again to exit at once)");
    cancel.cancel();
    signals.next().await;
    tracing::warn!("Second stop signal: exiting now");
    std::process::exit(130);
}

/// SIGHUP reloads the configuration.
async fn hangups(reloader: Reloader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("Cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        // Success is logged once, by the scheduler ("Configuration reloaded").
        if let Err(e) = reloader.reload().await {
            tracing::error!(error = %e, "Reload failed; the running configuration stays in force");
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    }
}

/// Tells systemd when the server is ready, and keeps its watchdog fed.
async fn systemd(mut ready: watch::Receiver<bool>, cancel: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    while !*ready.borrow() {
        if ready.changed().await.is_err() {
            return;
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    if let Some(timeout) = sd_notify::watchdog_enabled().filter(|t| !t.is_zero()) {
        let period = timeout / 2;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(period) => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/sync/{entry}", post(sync_entry))
        .route("/v1/reload", post(reload))
        .route("/v1/webhooks/dockerhub/{token}", post(dockerhub))
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(admin)
}

async fn readyz(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    if *a.ready.borrow() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "first pass running\n")
    }
}

async fn metrics(State(a): State<Arc<Admin>>) -> impl IntoResponse {
    let engine = a.engine.borrow().clone();
    let body = a.metrics.render(&engine.clients().registries());
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long an admin POST sent during the first pass waits for it to end.
const FIRST_PASS_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks the bearer token of an admin POST, then waits for the first pass to end (at
/// most [`FIRST_PASS_WAIT`], then 503), so that a trigger or a reload from a CI job just
/// works. A request with a wrong token is answered at once.
async fn authorized(a: &Admin, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    check_token(a, headers)?;
    let mut ready = a.ready.clone();
    let waited = tokio::time::timeout(FIRST_PASS_WAIT, ready.wait_for(|r| *r)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        _ => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the first pass is still running after {}s; try again when /readyz says ready\n",
                FIRST_PASS_WAIT.as_secs()
            ),
        )),
    }
}

/// Checks the bearer token of an admin POST.
fn check_token(a: &Admin, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let Some(token) = &a.token else {
        return Err((
            StatusCode::FORBIDDEN,
            "this endpoint needs --webhook-token\n".to_owned(),
        ));
    };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if same_secret(given, token) {
        Ok(())
    } else {
        Err((
            StatusCode::UNAUTHORIZED,
            "bad or missing bearer token\n".to_owned(),
        ))
    }
}

async fn reload(State(a): State<Arc<Admin>>, headers: HeaderMap) -> impl IntoResponse {
    if let Err(e) = authorized(&a, &headers).await {
        return e;
    }
    match a.reloader.reload().await {
        Ok(n) => (StatusCode::OK, format!("reloaded: {n} scheduled entries\n")),
        Err(e) => {
            tracing::error!(error = %e, "Reload failed; the running configuration stays in force");
            (
                StatusCode::BAD_REQUEST,
                format!("reload failed, the running configuration stays: {e}\n"),
            )
        }
    }
}

async fn sync_entry(
    State(a): State<Arc<Admin>>,
    Path(entry): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    if let Err(e) = authorized(&a, &headers).await {
        return e;
    }
    let (tx, rx) = oneshot::channel();
    if a.requests
        .send(Request::Sync {
            entry: entry.clone(),
            reply: tx,
        })
        .await
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned());
    }
    match rx.await {
        Ok(true) => (StatusCode::ACCEPTED, format!("sync of {entry} started\n")),
        Ok(false) => {
            // Sharded: an entry of the configuration that another replica owns is a
            // misdirected request, and the answer names the replica to ask.
            let elsewhere = a.shard.and_then(|(me, count)| {
                let config = a.engine.borrow().config_arc();
                config
                    .sync
                    .iter()
                    .any(|e| e.name == entry && e.trigger.is_some())
                    .then(|| regferry_scheduler::shard::owner(&entry, count))
                    // Never send the caller back here (a reload between the two looks).
                    .filter(|owner| *owner != me)
            });
            match elsewhere {
                Some(owner) => (
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("entry {entry:?} is synced by shard {owner}; send it there\n"),
                ),
                None => (
                    StatusCode::NOT_FOUND,
                    format!("no scheduled entry {entry:?} here\n"),
                ),
            }
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
    }
}

#[derive(serde::Deserialize)]
struct DockerHubPush {
    repository: DockerHubRepo,
    #[serde(default)]
    push_data: Option<DockerHubPushData>,
}

#[derive(serde::Deserialize)]
struct DockerHubRepo {
    repo_name: String,
}

#[derive(serde::Deserialize)]
struct DockerHubPushData {
    #[serde(default)]
    tag: Option<String>,
}

/// The first name of a push payload that breaks the distribution grammar, cut for messages.
fn invalid_push_name(repo_name: &str, tag: Option<&str>) -> Option<String> {
    let cut = |s: &str| s.chars().take(100).collect::<String>();
    if !regferry_registry::is_valid_repository(repo_name) {
        return Some(cut(repo_name));
    }
    match tag {
        Some(t) if !regferry_registry::is_valid_tag(t) => Some(cut(t)),
        _ => None,
    }
}

/// Docker Hub's webhook (https://docs.docker.com/docker-hub/repos/manage/webhooks/): the
/// secret is in the path because Docker Hub does not sign its requests.
async fn dockerhub(
    State(a): State<Arc<Admin>>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let Some(expected) = &a.token else {
        return (StatusCode::NOT_FOUND, "webhooks are off\n".to_owned());
    };
    if !same_secret(&token, expected) {
        return (StatusCode::NOT_FOUND, "not found\n".to_owned());
    }
    if !*a.ready.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the first pass is still running; send the push again when /readyz says ready\n"
                .to_owned(),
        );
    }
    let push: DockerHubPush = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a Docker Hub push payload: {e}\n"),
            );
        }
    };
    let tag = push.push_data.and_then(|p| p.tag).filter(|t| !t.is_empty());
    // The payload is remote input: names outside the distribution grammar (`..`, `/` in a
    // tag, `%2e`) are refused before they can reach a filter, a URL or a log line.
    if let Some(bad) = invalid_push_name(&push.repository.repo_name, tag.as_deref()) {
        tracing::warn!(name = ?bad, "Refusing a webhook with an invalid name");
        return (
            StatusCode::BAD_REQUEST,
            format!("refusing the push: {bad:?} is not a valid repository or tag name\n"),
        );
    }
    let repository = format!("docker.io/{}", push.repository.repo_name);
    let (tx, rx) = oneshot::channel();
    let req = Request::Push {
        repository: repository.clone(),
        tag: tag.clone(),
        reply: tx,
    };
    if a.requests.send(req).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned());
    }
    match rx.await {
        Ok(started) if started.is_empty() => {
            // Sharded, with one webhook per replica: the push is another replica's, and
            // that one got the same delivery. Not a failure to report back.
            let owners = a.shard.map(|(me, count)| {
                let config = a.engine.borrow().config_arc();
                let mut owners = regferry_scheduler::server::push_owners(
                    &config,
                    count,
                    &repository,
                    tag.as_deref(),
                );
                owners.retain(|o| *o != me);
                owners
            });
            match owners {
                Some(owners) if !owners.is_empty() => (
                    StatusCode::OK,
                    format!(
                        "{repository}: synced by shard {}, not this one\n",
                        owners
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    format!(
                        "no entry syncs {repository}{}\n",
                        tag.map(|t| format!(":{t}")).unwrap_or_default()
                    ),
                ),
            }
        }
        Ok(started) => {
            tracing::info!(repository, ?started, "Webhook started a sync");
            (
                StatusCode::ACCEPTED,
                format!("started: {}\n", started.join(", ")),
            )
        }
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
    }
}
