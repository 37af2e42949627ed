//! `check` and `once`: run the engine, show progress on a terminal, print the outcome.
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use regferry_config::Config;
use regferry_scheduler::{Engine, EntryReport, Mode, RunOptions, RunReport, State};

use crate::args::OutputFormat;
use crate::signals::{Stop, StopSignals};

/// Exit code of `check` when the target differs from the source.
pub(crate) const EXIT_DRIFT: u8 = 3;

pub(crate) fn run(
    config: Config,
    mode: Mode,
    abort_on_error: bool,
    format: OutputFormat,
) -> anyhow::Result<u8> {
    // One thread: a run is network-bound, and on a multi-threaded runtime every response
    // wakes a task on another worker (an eventfd write and a futex wait each). Measured on
    // 1 x 3,000 tags (docs/performance.md): 30% less CPU in regferry, 1-2 MiB less RSS, the
    // same wall time on the lab set, and a 1 GiB layer hashed as fast. File I/O still goes
    // to tokio's blocking pool.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let engine = Arc::new(Engine::new(Arc::new(config)));
    let opts = RunOptions {
        mode,
        abort_on_error,
        trust_target: false,
    };
    let (report, interrupted) = rt.block_on(async {
        let progress = (mode != Mode::Check && std::io::stderr().is_terminal())
            .then(|| Progress::start(engine.clone()));
        // The first stop signal cancels the copies in flight (the run then ends at once
        // with what it has done); a second one quits without waiting for anything.
        let interrupted = Arc::new(std::sync::OnceLock::<Stop>::new());
        if let Some(mut signals) = StopSignals::install() {
            let (engine, interrupted) = (engine.clone(), interrupted.clone());
            tokio::spawn(async move {
                let first = signals.next().await;
                tracing::warn!(
                    signal = first.name(),
                    "Interrupted: cancelling the copies in flight (send it again to quit at once)"
                );
                let _ = interrupted.set(first);
                engine.cancel();
                signals.next().await;
                std::process::exit(i32::from(first.exit_code()));
            });
        }
        let report = engine.run(opts).await;
        let interrupted = interrupted.get().copied();
        if let Some(p) = progress {
            p.finish().await;
        }
        if interrupted.is_some() {
            // What the dropped copies left open on the targets (bounded: the registry
            // expires them anyway).
            let cancel = engine.clients().cancel_abandoned_uploads();
            match tokio::time::timeout(Duration::from_secs(10), cancel).await {
                Ok(n) if n > 0 => {
                    tracing::info!(sessions = n, "Cancelled the upload sessions left open")
                }
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "Gave up cancelling upload sessions after 10s; the registry expires them"
                ),
            }
        }
        (report, interrupted)
    });
    // The work is done whether or not anyone reads the report: a closed stdout changes
    // nothing about the exit code.
    let mut out = std::io::stdout().lock();
    let written = match format {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => write_table(&mut out, &report, mode),
    };
    if let Err(e) = written.and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "The report could not be written to standard output");
    }
    if let Some(signal) = interrupted {
        return Ok(signal.exit_code());
    }
    // A tag held by `require` is a failure only with --abort-on-error.
    let held = report.count(|t| t.state == State::Held);
    let code = if report.failures() > 0 || (abort_on_error && held > 0) {
        1
    } else if mode == Mode::Check && report.drift() > 0 {
        EXIT_DRIFT
    } else {
        0
    };
    Ok(code)
}

fn write_table(out: &mut impl Write, report: &RunReport, mode: Mode) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = report
        .entries
        .iter()
        .flat_map(|e| {
            let entry_error = e.error.as_ref().map(|err| {
                [
                    e.display_name.clone(),
                    "failed".to_owned(),
                    e.label.clone(),
                    String::new(),
                    err.clone(),
                ]
            });
            e.tags
                .iter()
                .map(move |t| {
                    let state = if t.copied {
                        "copied".to_owned()
                    } else if mode == Mode::Check
                        && matches!(t.state, State::Missing | State::Changed)
                    {
                        format!("{} (would copy)", t.state.as_str())
                    } else {
                        t.state.as_str().to_owned()
                    };
                    let mut detail = match (&t.reason, t.state) {
                        (Some(r), _) => r.clone(),
                        (None, State::Missing) => "target does not have it".to_owned(),
                        _ => String::new(),
                    };
                    let verb = if mode == Mode::Check {
                        "to copy"
                    } else {
                        "copied"
                    };
                    let mut extra = Vec::new();
                    if !t.referrers.is_empty() {
                        let kinds: Vec<&str> = t
                            .referrers
                            .iter()
                            .map(|r| r.artifact_type.as_deref().unwrap_or("untyped"))
                            .collect();
                        extra.push(format!(
                            "{} {verb} ({})",
                            count(t.referrers.len(), "referrer"),
                            kinds.join(", ")
                        ));
                    }
                    if !t.digest_tags.is_empty() {
                        extra.push(format!("digest tags {verb}: {}", t.digest_tags.join(", ")));
                    }
                    if let Some(b) = &t.backup {
                        extra.push(format!("old image kept as {b}"));
                    }
                    if !extra.is_empty() {
                        if !detail.is_empty() {
                            detail.push_str("; ");
                        }
                        detail.push_str(&extra.join("; "));
                    }
                    [
                        e.display_name.clone(),
                        state,
                        t.source.clone(),
                        t.target.clone(),
                        detail,
                    ]
                })
                .chain(entry_error)
                .chain(outside_latest_row(e))
                .chain(e.pruned.iter().map(move |t| {
                    [
                        e.display_name.clone(),
                        if mode == Mode::Check {
                            "would prune".to_owned()
                        } else {
                            "pruned".to_owned()
                        },
                        String::new(),
                        t.clone(),
                        "no longer in the source's selection (prune)".to_owned(),
                    ]
                }))
        })
        .collect();
    let header = ["ENTRY", "STATE", "SOURCE", "TARGET", "DETAIL"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for r in std::iter::once(&header).chain(rows.iter()) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(rows.iter()) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 4 {
                    c.clone()
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    let n = |s: State| report.count(|t| t.state == s && !t.copied);
    // Counts shown only when there are any: pruned (or to prune) and held tags.
    let pruned: usize = report.entries.iter().map(|e| e.pruned.len()).sum();
    let mut extensions = match (pruned, mode) {
        (0, _) => String::new(),
        (p, Mode::Check) => format!(", {p} to prune"),
        (p, _) => format!(", {p} pruned"),
    };
    let held = report.count(|t| t.state == State::Held);
    if held > 0 {
        extensions.push_str(&format!(", {held} held"));
    }
    let s = report.stats;
    writeln!(
        out,
        "\n{} copied, {} missing, {} changed, {} up-to-date, {} skipped, {} failed{extensions}; {} {}; {} ({}) copied, {} mounted, {} already there; {:.1}s",
        report.copied(),
        n(State::Missing),
        n(State::Changed),
        n(State::UpToDate),
        n(State::Skipped),
        report.failures(),
        count(report.referrers(), "referrer"),
        if mode == Mode::Check {
            "to copy"
        } else {
            "copied"
        },
        count(s.blobs_copied as usize, "blob"),
        // With `targets`, one read of the source feeds several targets.
        if s.bytes_read > 0 && s.bytes_read != s.bytes_copied {
            format!(
                "{} to targets, {} from sources",
                bytes(s.bytes_copied),
                bytes(s.bytes_read)
            )
        } else {
            bytes(s.bytes_copied)
        },
        s.blobs_mounted,
        s.blobs_existing,
        report.duration.as_secs_f64()
    )
}

/// One row for the tags a `latest` count left out: how many, and the first few (JSON has all).
fn outside_latest_row(e: &EntryReport) -> Option<[String; 5]> {
    const SHOWN: usize = 5;
    let all = &e.outside_latest;
    if all.is_empty() {
        return None;
    }
    let mut named = all
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > SHOWN {
        named.push_str(&format!(
            " and {} more (all of them in --format json)",
            all.len() - SHOWN
        ));
    }
    Some([
        e.display_name.clone(),
        "outside-latest".to_owned(),
        e.label.clone(),
        String::new(),
        format!(
            "{} left out by `latest` (older versions): {named}",
            count(all.len(), "tag")
        ),
    ])
}

/// `1 referrer`, `2 referrers`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A progress line on the terminal: tags done and bytes moved, updated from the counters.
struct Progress {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(engine: Arc<Engine>) -> Progress {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                let s = engine.transfer().stats().snapshot();
                let (seen, done) = engine.progress();
                let secs = started.elapsed().as_secs_f64().max(0.001);
                b.set_message(format!(
                    "tags {done}/{seen}: {} manifests, {} blobs, {} ({}/s)",
                    s.manifests_pushed,
                    s.blobs_copied + s.blobs_mounted,
                    bytes(s.bytes_copied),
                    bytes((s.bytes_copied as f64 / secs) as u64)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress { bar, task }
    }

    async fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
