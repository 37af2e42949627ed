//! `regferry server`: each entry on its `interval` or `schedule`, after a first pass that
//! copies missing tags (regsync's behaviour); manual and webhook triggers; a graceful stop.
//!
//! One task per scheduled entry runs it whenever its schedule fires or a trigger arrives.
//! A run never overlaps another run of the same entry: ticks that pass during a run are
//! skipped and counted, and triggers that arrive meanwhile collapse into one more run.
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regferry_config::schedule::Schedule;
use regferry_config::{Endpoint, SyncEntry, SyncKind, Trigger};
use regferry_registry::Reference;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Mode, Only, RunOptions};
use crate::metrics::Metrics;
use crate::shard::{owner, owns, repository_key};

/// Wall-clock time, injectable so that schedule tests can run on paused tokio time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a given time and advances with tokio's (pausable) time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start: DateTime<Utc>,
    at: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `start` now.
    pub fn starting_at(start: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start,
            at: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.at.elapsed()).unwrap_or_default();
        self.start + elapsed
    }
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Stop the server at the first failed run.
    pub abort_on_error: bool,
    /// How long in-flight copies may finish after a stop signal.
    pub grace: Duration,
    /// The largest start offset given to an entry, so that many entries on the same
    /// schedule do not fire in the same second. Each entry's offset is fixed (derived from
    /// its name) and at most a tenth of its interval.
    pub max_jitter: Duration,
    /// Run the missing-only first pass before scheduling (regsync does).
    pub first_pass: bool,
    /// This replica's shard, `(index, count)`: only entries it owns run here.
    pub shard: Option<(u32, u32)>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            abort_on_error: false,
            grace: Duration::from_secs(30),
            max_jitter: Duration::from_secs(30),
            first_pass: true,
            shard: None,
        }
    }
}

/// A request from the admin API.
#[derive(Debug)]
pub enum Request {
    /// Run an entry now (`POST /v1/sync/<entry>`); answers whether the entry exists here.
    Sync {
        /// The entry's name.
        entry: String,
        /// The answer.
        reply: oneshot::Sender<bool>,
    },
    /// Replace the configuration: entries in flight finish their run under the old one,
    /// then stop; the new entries are scheduled at once, and new names run immediately.
    Reload(Reload),
    /// A registry push (a webhook): run the entries whose source is that repository, for
    /// that tag; answers the names of the entries started.
    Push {
        /// The repository as the registry names it (`docker.io/user/app` or `user/app`).
        repository: String,
        /// The tag pushed.
        tag: Option<String>,
        /// The answer.
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// A new configuration for a running server (SIGHUP, `POST /v1/reload`).
#[derive(Debug)]
pub struct Reload {
    /// The engine built from the new configuration.
    pub engine: Arc<Engine>,
    /// Answered once the new entries are scheduled: how many there are.
    pub reply: oneshot::Sender<usize>,
}

/// How a server run ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Runs that had a failure.
    pub failed_runs: u64,
    /// Whether in-flight work had to be cancelled after the grace period.
    pub cancelled_in_flight: bool,
}

struct EntryTask {
    name: String,
    tx: mpsc::Sender<Only>,
    /// Shared with the entry's loop: one copy of each entry, however many hold it.
    entry: Arc<SyncEntry>,
}

fn schedule_of(entry: &SyncEntry) -> Option<Schedule> {
    match &entry.trigger {
        Some(Trigger::Schedule(s)) => Some(s.clone()),
        Some(Trigger::Interval(d)) => Schedule::every(*d).ok(),
        None => None,
    }
}

/// A fixed offset in `[0, max)` for an entry, from its name.
fn jitter(name: &str, max: Duration, schedule: &Schedule) -> Duration {
    let cap = match schedule.period() {
        Some(p) => max.min(p / 10),
        None => max,
    };
    let ms = cap.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let h = name.bytes().fold(0x811c_9dc5u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0193)
    });
    Duration::from_millis(h % ms)
}

/// For a sharded replica: the replicas (of `count`) whose scheduled entries a push of
/// `repository[:tag]` starts, so that a replica that owns none of them can say where it
/// went rather than answer "not found". For a `type: registry` entry, the replica that owns
/// the pushed repository.
pub fn push_owners(
    config: &regferry_config::Config,
    count: u32,
    repository: &str,
    tag: Option<&str>,
) -> Vec<u32> {
    let mut out: Vec<u32> = config
        .sync
        .iter()
        .filter(|e| e.trigger.is_some())
        .filter_map(|e| {
            let only = push_matches(e, repository, tag)?;
            Some(match &only.repository {
                // A registry entry's repositories are split among the replicas.
                Some(repo) => owner(&repository_key(&e.name, repo), count),
                None => owner(&e.name, count),
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The entries of a configuration this replica runs: with a shard, the entries it owns,
/// plus every `type: registry` entry (whose repositories are split instead).
fn my_entries(engine: &Engine, shard: Option<(u32, u32)>) -> (Vec<SyncEntry>, Vec<SyncEntry>) {
    engine
        .config()
        .sync
        .iter()
        .filter(|e| match shard {
            Some((i, n)) => e.kind == SyncKind::Registry || owns(&e.name, i, n),
            None => true,
        })
        .cloned()
        .partition(|e| e.trigger.is_some())
}

/// Runs the server until `cancel` fires (or, with `abort_on_error`, a run fails).
/// `current` always holds the engine of the configuration in force, for the admin API.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    opts: ServerOptions,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    mut requests: mpsc::Receiver<Request>,
    ready: watch::Sender<bool>,
    current: watch::Sender<Arc<Engine>>,
) -> Outcome {
    let (scheduled, unscheduled) = my_entries(&engine, opts.shard);
    for e in &unscheduled {
        tracing::warn!(entry = %e.name, source = %e.source, "Entry has no interval or schedule; the server does not run it");
    }
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop_all = cancel.child_token();
    let mut engines = vec![engine.clone()];

    if opts.first_pass {
        tracing::info!(
            entries = scheduled.len(),
            "Starting the first pass (missing tags only)"
        );
        let mut first = JoinSet::new();
        // A bounded number of entries at a time (the engine runs no more at once anyway):
        // a task per entry of a file of thousands would hold them all from the start.
        let in_flight = engine.entry_slots();
        for e in scheduled.clone() {
            while first.len() >= in_flight && !stop_all.is_cancelled() {
                tokio::select! {
                    _ = first.join_next() => {}
                    () = stop_all.cancelled() => {}
                }
            }
            if stop_all.is_cancelled() {
                break;
            }
            let (engine, metrics, clock, failed, stop_all) = (
                engine.clone(),
                metrics.clone(),
                clock.clone(),
                failed.clone(),
                stop_all.clone(),
            );
            let abort_on_error = opts.abort_on_error;
            first.spawn(async move {
                let ok = Box::pin(run_once(
                    &engine,
                    &metrics,
                    &*clock,
                    &e,
                    Mode::Copy { missing_only: true },
                    &Only::default(),
                ))
                .await;
                if !ok {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if abort_on_error {
                        stop_all.cancel();
                    }
                }
            });
        }
        loop {
            tokio::select! {
                next = first.join_next() => if next.is_none() { break },
                () = stop_all.cancelled() => break,
            }
        }
        if stop_all.is_cancelled() {
            return shutdown(&engines, first, opts.grace, &failed).await;
        }
    }
    let _ = ready.send(true);
    tracing::info!(entries = scheduled.len(), "Scheduling entries");

    let mut tasks = JoinSet::new();
    let mut generation = stop_all.child_token();
    let mut handles = spawn_loops(
        &mut tasks,
        &engine,
        &metrics,
        &clock,
        &opts,
        scheduled,
        &generation,
        &stop_all,
        &failed,
    );
    // From here `engines` and the loops hold it, so a reload can let it go.
    drop(engine);

    loop {
        tokio::select! {
            () = stop_all.cancelled() => break,
            // Reap loops of earlier configurations as they finish.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            req = requests.recv() => match req {
                Some(Request::Sync { entry, reply }) => {
                    let found = handles.iter().find(|h| h.name == entry);
                    if let Some(h) = found {
                        // A full channel means a run is already pending: debounced.
                        let _ = h.tx.try_send(Only::default());
                    }
                    let _ = reply.send(found.is_some());
                }
                Some(Request::Push { repository, tag, reply }) => {
                    let mut started = Vec::new();
                    for h in &handles {
                        let Some(only) = push_matches(&h.entry, &repository, tag.as_deref()) else {
                            continue;
                        };
                        // A registry entry runs on every replica; the pushed repository
                        // belongs to one of them.
                        if let (Some((i, n)), Some(repo)) = (opts.shard, &only.repository)
                            && !owns(&repository_key(&h.entry.name, repo), i, n)
                        {
                            continue;
                        }
                        let _ = h.tx.try_send(only);
                        started.push(h.name.clone());
                    }
                    let _ = reply.send(started);
                }
                Some(Request::Reload(Reload { engine: new, reply })) => {
                    let (scheduled, unscheduled) = my_entries(&new, opts.shard);
                    for e in &unscheduled {
                        tracing::warn!(entry = %e.name, source = %e.source, "Entry has no interval or schedule; the server does not run it");
                    }
                    let old_names: Vec<String> = handles.iter().map(|h| h.name.clone()).collect();
                    // The old loops finish the run they are in, then end.
                    generation.cancel();
                    generation = stop_all.child_token();
                    let count = scheduled.len();
                    handles = spawn_loops(&mut tasks, &new, &metrics, &clock, &opts, scheduled, &generation, &stop_all, &failed);
                    for h in &handles {
                        if !old_names.contains(&h.name) {
                            let _ = h.tx.try_send(Only::default());
                        }
                    }
                    // Engines whose loops have all ended are dropped; a server reloaded
                    // every few minutes would otherwise keep every configuration it had.
                    engines.retain(|e| Arc::strong_count(e) > 1);
                    engines.push(new.clone());
                    let _ = current.send(new);
                    tracing::info!(entries = count, "Configuration reloaded");
                    let _ = reply.send(count);
                }
                None => stop_all.cancelled().await,
            },
        }
    }
    shutdown(&engines, tasks, opts.grace, &failed).await
}

#[allow(clippy::too_many_arguments)]
fn spawn_loops(
    tasks: &mut JoinSet<()>,
    engine: &Arc<Engine>,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
    opts: &ServerOptions,
    scheduled: Vec<SyncEntry>,
    generation: &CancellationToken,
    stop_all: &CancellationToken,
    failed: &Arc<std::sync::atomic::AtomicU64>,
) -> Vec<EntryTask> {
    let mut handles = Vec::new();
    for e in scheduled {
        let Some(schedule) = schedule_of(&e) else {
            continue;
        };
        let e = Arc::new(e);
        // Room for a burst of pushes during a run; they are merged into one run after it.
        let (tx, rx) = mpsc::channel(16);
        handles.push(EntryTask {
            name: e.name.clone(),
            tx,
            entry: e.clone(),
        });
        let offset = jitter(&e.name, opts.max_jitter, &schedule);
        let (engine, metrics, clock, failed) = (
            engine.clone(),
            metrics.clone(),
            clock.clone(),
            failed.clone(),
        );
        let (generation, stop_all) = (generation.clone(), stop_all.clone());
        let abort_on_error = opts.abort_on_error;
        tasks.spawn(async move {
            entry_loop(
                &engine,
                &metrics,
                &*clock,
                &e,
                schedule,
                offset,
                rx,
                &generation,
                &stop_all,
                abort_on_error,
                &failed,
            )
            .await;
        });
    }
    handles
}

async fn shutdown(
    engines: &[Arc<Engine>],
    mut tasks: JoinSet<()>,
    grace: Duration,
    failed: &std::sync::atomic::AtomicU64,
) -> Outcome {
    tracing::info!(grace = %regferry_config::duration::format_go_duration(grace), "Stopping: no new images start; waiting for copies in flight");
    for e in engines {
        e.stop();
    }
    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    let mut cancelled = false;
    loop {
        tokio::select! {
            next = tasks.join_next() => if next.is_none() { break },
            () = &mut deadline => {
                tracing::warn!("Grace period over; cancelling copies in flight (no tag points at partial content: manifests are pushed last)");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                cancelled = true;
                break;
            }
        }
    }
    Outcome {
        failed_runs: failed.load(std::sync::atomic::Ordering::Relaxed),
        cancelled_in_flight: cancelled,
    }
}

#[allow(clippy::too_many_arguments)]
async fn entry_loop(
    engine: &Engine,
    metrics: &Metrics,
    clock: &dyn Clock,
    entry: &SyncEntry,
    schedule: Schedule,
    offset: Duration,
    mut rx: mpsc::Receiver<Only>,
    generation: &CancellationToken,
    stop_all: &CancellationToken,
    abort_on_error: bool,
    failed: &std::sync::atomic::AtomicU64,
) {
    schedule_loop(
        clock,
        &schedule,
        offset,
        &mut rx,
        generation,
        |only| async move {
            // Boxed: an idle entry's loop then holds no room for a run's state.
            let ok = Box::pin(run_once(engine, metrics, clock, entry, Mode::Copy { missing_only: false }, &only)).await;
            if !ok {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if abort_on_error {
                    stop_all.cancel();
                    return false;
                }
            }
            true
        },
        |missed| {
            tracing::warn!(entry = %entry.name, skipped = missed, "Skipped schedule ticks while the entry was still running");
            metrics.skipped_ticks(&entry.name, missed);
        },
    )
    .await;
}

/// Fires `run` on each tick of `schedule` (shifted by `offset`) and on each request from
/// `rx`, never two runs at once. Ticks that pass during a run are reported to `skipped`
/// and dropped. Ends when `stop` fires, `rx` closes, or `run` returns false.
pub(crate) async fn schedule_loop<F, Fut>(
    clock: &dyn Clock,
    schedule: &Schedule,
    offset: Duration,
    rx: &mut mpsc::Receiver<Only>,
    stop: &CancellationToken,
    mut run: F,
    mut skipped: impl FnMut(u64),
) where
    F: FnMut(Only) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let offset_c = chrono::Duration::from_std(offset).unwrap_or_default();
    let next_fire =
        |after: DateTime<Utc>| schedule.next_after(after - offset_c).map(|t| t + offset_c);
    let Some(mut next) = next_fire(clock.now()) else {
        tracing::warn!(schedule = %schedule, "Schedule never fires");
        return;
    };
    loop {
        let wait = (next - clock.now()).to_std().unwrap_or_default();
        let (only, from_tick) = tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => (Only::default(), true),
            r = rx.recv() => match r {
                Some(only) => (drain_and_merge(only, rx), false),
                None => return,
            },
        };
        if !run(only).await {
            return;
        }
        let now = clock.now();
        if from_tick {
            let Some(t) = next_fire(next) else { return };
            next = t;
        }
        let mut missed = 0u64;
        while next <= now {
            missed += 1;
            let Some(t) = next_fire(next) else { return };
            next = t;
        }
        if missed > 0 {
            skipped(missed);
        }
    }
}

/// Merges every trigger already waiting into `first`: the same request once, different
/// ones into a full run, so no pushed tag is lost and a burst costs one run.
fn drain_and_merge(first: Only, rx: &mut mpsc::Receiver<Only>) -> Only {
    let mut merged = first;
    while let Ok(next) = rx.try_recv() {
        if next != merged {
            merged = Only::default();
        }
    }
    merged
}

/// Runs an entry once and records it; returns whether it had no failure.
async fn run_once(
    engine: &Engine,
    metrics: &Metrics,
    clock: &dyn Clock,
    entry: &SyncEntry,
    mode: Mode,
    only: &Only,
) -> bool {
    let started = tokio::time::Instant::now();
    let abort = AtomicBool::new(false);
    let opts = RunOptions {
        mode,
        abort_on_error: false,
    };
    let report = engine.run_entry_only(entry, opts, &abort, only).await;
    let took = started.elapsed();
    let bytes_total = engine.transfer().stats().snapshot().bytes_copied;
    let now = clock.now();
    metrics.record_run(
        &entry.name,
        &report,
        took,
        now.timestamp_millis() as f64 / 1000.0,
        bytes_total,
    );
    let failures = usize::from(report.error.is_some())
        + report
            .tags
            .iter()
            .filter(|t| t.state == crate::report::State::Failed)
            .count();
    let copied = report.tags.iter().filter(|t| t.copied).count();
    if failures > 0 {
        tracing::error!(entry = %entry.name, failures, copied, took_ms = took.as_millis() as u64, "Run failed");
    } else {
        tracing::info!(entry = %entry.name, copied, tags = report.tags.len(), took_ms = took.as_millis() as u64, "Run finished");
    }
    failures == 0
}

/// Whether a push of `repository:tag` concerns `entry`, and what to run.
pub fn push_matches(entry: &SyncEntry, repository: &str, tag: Option<&str>) -> Option<Only> {
    // Docker Hub names `user/app`; other registries may send `host/path`.
    let pushed = Reference::parse(repository).ok()?;
    let only_tag = |t: Option<&str>| t.filter(|t| entry.tags.matches(t)).map(str::to_owned);
    match (&entry.source, entry.kind) {
        (Endpoint::Registry(src), SyncKind::Repository) => (src.registry() == pushed.registry()
            && src.repository() == pushed.repository()
            && tag.is_none_or(|t| entry.tags.matches(t)))
        .then(|| Only {
            repository: None,
            tag: only_tag(tag),
        }),
        (Endpoint::Registry(src), SyncKind::Image) => (src.registry() == pushed.registry()
            && src.repository() == pushed.repository()
            && tag.is_none_or(|t| src.tag() == Some(t)))
        .then(Only::default),
        (Endpoint::Namespace { registry, prefix }, SyncKind::Registry) => {
            let inside =
                prefix.is_empty() || pushed.repository().starts_with(&format!("{prefix}/"));
            (registry == pushed.registry()
                && inside
                && entry.repos.matches(pushed.repository())
                && tag.is_none_or(|t| entry.tags.matches(t)))
            .then(|| Only {
                repository: Some(pushed.repository().to_owned()),
                tag: only_tag(tag),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
