//! `regferry server`: each entry on its `interval` or `schedule`, after a first pass that
//! copies missing tags (regsync's behaviour); manual and webhook triggers; a graceful stop.
//!
//! One timetable holds every scheduled entry's next run time; a task exists only while an
//! entry runs. A run never overlaps another run of the same entry, also across a reload:
//! ticks that pass during a run are skipped and counted, and triggers that arrive meanwhile
//! collapse into one more run.
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use regferry_config::schedule::Schedule;
use regferry_config::{Endpoint, SyncEntry, SyncKind, Trigger};
use regferry_registry::Reference;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, Mode, Only, RunOptions};
use crate::metrics::Metrics;
use crate::shard::{owner, owns, repository_key};

mod timetable;
use timetable::{Finished, Timetable};

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
    Duration::from_millis(regferry_registry::hash::fnv1a(name.as_bytes()) % ms)
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

/// The entries of a configuration this replica runs, as indices into its `sync` list,
/// scheduled and unscheduled: with a shard, the entries it owns, plus every
/// `type: registry` entry (whose repositories are split instead). Indices, not copies: a
/// server of thousands of entries holds each entry once, in its configuration.
fn my_entries(engine: &Engine, shard: Option<(u32, u32)>) -> (Vec<u32>, Vec<u32>) {
    let (mut scheduled, mut unscheduled) = (Vec::new(), Vec::new());
    for (i, e) in engine.config().sync.iter().enumerate() {
        let mine = match shard {
            Some((k, n)) => e.kind == SyncKind::Registry || owns(&e.name, k, n),
            None => true,
        };
        match (mine, e.trigger.is_some()) {
            (false, _) => {}
            (true, true) => scheduled.push(i as u32),
            (true, false) => unscheduled.push(i as u32),
        }
    }
    (scheduled, unscheduled)
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
    warn_unscheduled(&engine, &unscheduled);
    let failed = Arc::new(AtomicU64::new(0));
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
        for &i in &scheduled {
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
                let e = &engine.config().sync[i as usize];
                let missing = Mode::Copy { missing_only: true };
                let ok = Box::pin(run_once(
                    &engine,
                    &metrics,
                    &*clock,
                    e,
                    missing,
                    &Only::default(),
                    false,
                ))
                .await;
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
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

    let mut engine = engine;
    let mut generation = 0u64;
    let mut table = timetable(&engine, &scheduled, &opts, clock.now());
    drop(scheduled);
    let mut runner = Runner {
        metrics: metrics.clone(),
        clock: clock.clone(),
        failed: failed.clone(),
        stop_all: stop_all.clone(),
        abort_on_error: opts.abort_on_error,
        runs: JoinSet::new(),
    };

    loop {
        let wake = table
            .next_due()
            .map(|t| (t - clock.now()).to_std().unwrap_or_default());
        tokio::select! {
            () = stop_all.cancelled() => break,
            Some(done) = runner.runs.join_next(), if !runner.runs.is_empty() => {
                let Ok(done) = done else { continue };
                // A run of an earlier configuration: the entry of the same name, if any,
                // waited for it.
                let slot = if done.generation == generation {
                    Some(done.slot)
                } else {
                    table.entries().find(|&(s, i)| {
                        table.is_inherited(s) && engine.config().sync[i as usize].name == done.name
                    }).map(|(s, _)| s)
                };
                let Some(slot) = slot else { continue };
                let i = table.entry(slot);
                let e = &engine.config().sync[i as usize];
                let Some(schedule) = schedule_of(e) else { continue };
                let Finished { missed, again } = table.finished(slot, &schedule, clock.now());
                if missed > 0 {
                    tracing::warn!(entry = %e.name, skipped = missed, "Skipped schedule ticks while the entry was still running");
                    metrics.skipped_ticks(&e.name, missed);
                }
                if let Some(only) = again {
                    runner.start(&engine, generation, slot, i, only, false);
                }
            }
            () = sleep_for(wake) => {
                let now = clock.now();
                while let Some(slot) = table.pop_due(now) {
                    runner.start(&engine, generation, slot, table.entry(slot), Only::default(), true);
                }
            }
            req = requests.recv() => match req {
                Some(Request::Sync { entry, reply }) => {
                    let found = table
                        .entries()
                        .find(|&(_, i)| engine.config().sync[i as usize].name == entry);
                    if let Some((slot, i)) = found
                        && let Some(only) = table.trigger(slot, Only::default())
                    {
                        runner.start(&engine, generation, slot, i, only, false);
                    }
                    let _ = reply.send(found.is_some());
                }
                Some(Request::Push { repository, tag, reply }) => {
                    let mut started = Vec::new();
                    let matching: Vec<(usize, u32, Only)> = table
                        .entries()
                        .filter_map(|(slot, i)| {
                            let e = &engine.config().sync[i as usize];
                            let only = push_matches(e, &repository, tag.as_deref())?;
                            // A registry entry runs on every replica; the pushed repository
                            // belongs to one of them.
                            if let (Some((k, n)), Some(repo)) = (opts.shard, &only.repository)
                                && !owns(&repository_key(&e.name, repo), k, n)
                            {
                                return None;
                            }
                            Some((slot, i, only))
                        })
                        .collect();
                    for (slot, i, only) in matching {
                        started.push(engine.config().sync[i as usize].name.clone());
                        if let Some(only) = table.trigger(slot, only) {
                            runner.start(&engine, generation, slot, i, only, false);
                        }
                    }
                    let _ = reply.send(started);
                }
                Some(Request::Reload(Reload { engine: new, reply })) => {
                    let (scheduled, unscheduled) = my_entries(&new, opts.shard);
                    warn_unscheduled(&new, &unscheduled);
                    let count = scheduled.len();
                    let mut next = timetable(&new, &scheduled, &opts, clock.now());
                    // Entries still running under the old configuration finish that run
                    // first; new names run at once.
                    let name = |engine: &Engine, i: u32| engine.config().sync[i as usize].name.clone();
                    let old: std::collections::HashSet<String> =
                        table.entries().map(|(_, i)| name(&engine, i)).collect();
                    let busy: std::collections::HashSet<String> =
                        table.busy().map(|s| name(&engine, table.entry(s))).collect();
                    let slots: Vec<(usize, u32)> = next.entries().collect();
                    generation += 1;
                    for (slot, i) in slots {
                        let n = &new.config().sync[i as usize].name;
                        if busy.contains(n) {
                            next.inherit(slot);
                        } else if !old.contains(n)
                            && let Some(only) = next.trigger(slot, Only::default())
                        {
                            runner.start(&new, generation, slot, i, only, false);
                        }
                    }
                    table = next;
                    engine = new.clone();
                    // Engines whose runs have all ended are dropped; a server reloaded
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
    shutdown(&engines, runner.runs, opts.grace, &failed).await
}

fn warn_unscheduled(engine: &Engine, unscheduled: &[u32]) {
    for &i in unscheduled {
        let e = &engine.config().sync[i as usize];
        tracing::warn!(entry = %e.name, source = %e.source, "Entry has no interval or schedule; the server does not run it");
    }
}

/// The timetable of a configuration's scheduled entries, from `now`.
fn timetable(
    engine: &Engine,
    scheduled: &[u32],
    opts: &ServerOptions,
    now: DateTime<Utc>,
) -> Timetable {
    let mut table = Timetable::default();
    for &i in scheduled {
        let e = &engine.config().sync[i as usize];
        let Some(schedule) = schedule_of(e) else {
            continue;
        };
        let offset = jitter(&e.name, opts.max_jitter, &schedule);
        if !table.add(i, &schedule, offset, now) {
            tracing::warn!(entry = %e.name, schedule = %schedule, "Schedule never fires; the entry runs only when triggered");
        }
    }
    table
}

/// Sleeps for `wait`, or forever without one.
async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// A finished scheduled run: which slot of which configuration.
struct RunDone {
    generation: u64,
    slot: usize,
    /// The entry's name, to find its slot after a reload.
    name: String,
}

/// Starts the scheduled runs, each in a task of its own while it runs.
struct Runner {
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    failed: Arc<AtomicU64>,
    stop_all: CancellationToken,
    abort_on_error: bool,
    runs: JoinSet<RunDone>,
}

impl Runner {
    /// Starts a run of `slot`; `scheduled` for a tick of its schedule (which may trust
    /// what the last clean run saw in the target), not for a trigger.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        engine: &Arc<Engine>,
        generation: u64,
        slot: usize,
        entry: u32,
        only: Only,
        scheduled: bool,
    ) {
        let (engine, metrics, clock, failed, stop_all) = (
            engine.clone(),
            self.metrics.clone(),
            self.clock.clone(),
            self.failed.clone(),
            self.stop_all.clone(),
        );
        let abort_on_error = self.abort_on_error;
        self.runs.spawn(async move {
            let e = &engine.config().sync[entry as usize];
            let full = Mode::Copy {
                missing_only: false,
            };
            // A panic in a run counts as a failed run; the entry stays scheduled.
            let ok = AssertUnwindSafe(Box::pin(run_once(
                &engine, &metrics, &*clock, e, full, &only, scheduled,
            )))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(entry = %e.name, "Run panicked");
                false
            });
            if !ok {
                failed.fetch_add(1, Ordering::Relaxed);
                if abort_on_error {
                    stop_all.cancel();
                }
            }
            RunDone {
                generation,
                slot,
                name: e.name.clone(),
            }
        });
    }
}

async fn shutdown<T: 'static>(
    engines: &[Arc<Engine>],
    mut tasks: JoinSet<T>,
    grace: Duration,
    failed: &AtomicU64,
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
        failed_runs: failed.load(Ordering::Relaxed),
        cancelled_in_flight: cancelled,
    }
}

/// Runs an entry once and records it; returns whether it had no failure.
async fn run_once(
    engine: &Engine,
    metrics: &Metrics,
    clock: &dyn Clock,
    entry: &SyncEntry,
    mode: Mode,
    only: &Only,
    scheduled: bool,
) -> bool {
    let started = tokio::time::Instant::now();
    let abort = AtomicBool::new(false);
    let opts = RunOptions {
        mode,
        abort_on_error: false,
        trust_target: scheduled,
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
