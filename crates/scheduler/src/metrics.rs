//! Prometheus metrics, `regferry_<thing>_<unit>`, labelled by entry and registry only
//! (never tag or digest, which would make the series count unbounded).
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use regferry_registry::http::{RegistryClient, RequestStats};

use crate::report::{EntryReport, State};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabel {
    entry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryResult {
    entry: String,
    result: String,
}

/// The metrics of a server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<EntryResult, Counter>,
    last_run: Family<EntryLabel, Gauge<f64, AtomicU64>>,
    last_success: Family<EntryLabel, Gauge<f64, AtomicU64>>,
    duration: Family<EntryLabel, Histogram, fn() -> Histogram>,
    tags: Family<EntryResult, Counter>,
    referrers: Family<EntryLabel, Counter>,
    skipped_ticks: Family<EntryLabel, Counter>,
    bytes: Counter,
    /// The copy engine's byte total already added to `bytes`.
    bytes_seen: std::sync::atomic::AtomicU64,
}

fn duration_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(env!("CARGO_PKG_VERSION"))
    }
}

impl Metrics {
    /// Registers every metric; `version` goes into `regferry_build_info`.
    pub fn new(version: &str) -> Metrics {
        let runs = Family::<EntryResult, Counter>::default();
        let last_run = Family::<EntryLabel, Gauge<f64, AtomicU64>>::default();
        let last_success = Family::<EntryLabel, Gauge<f64, AtomicU64>>::default();
        let duration = Family::<EntryLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let tags = Family::<EntryResult, Counter>::default();
        let referrers = Family::<EntryLabel, Counter>::default();
        let skipped_ticks = Family::<EntryLabel, Counter>::default();
        let bytes = Counter::default();
        let mut r = Registry::default();
        r.register(
            "regferry_build",
            "regferry's version",
            Info::new(vec![("version".to_owned(), version.to_owned())]),
        );
        r.register(
            "regferry_entry_runs",
            "Runs of each entry, by result",
            runs.clone(),
        );
        r.register(
            "regferry_entry_last_run_timestamp_seconds",
            "When each entry last finished a run",
            last_run.clone(),
        );
        r.register(
            "regferry_entry_last_success_timestamp_seconds",
            "When each entry last finished a run without failures",
            last_success.clone(),
        );
        r.register(
            "regferry_entry_run_duration_seconds",
            "How long runs take",
            duration.clone(),
        );
        r.register(
            "regferry_entry_tags",
            "Tags by result: copied, up_to_date, skipped, failed, held (`require` not met); outside_latest for tags a `latest` count left out; pruned for target tags deleted by `prune`",
            tags.clone(),
        );
        r.register(
            "regferry_entry_referrers_copied",
            "Referrers copied",
            referrers.clone(),
        );
        r.register(
            "regferry_entry_skipped_ticks",
            "Schedule ticks skipped because the entry was still running",
            skipped_ticks.clone(),
        );
        r.register(
            "regferry_blob_bytes_copied",
            "Blob bytes copied",
            bytes.clone(),
        );
        Metrics {
            registry: r,
            runs,
            last_run,
            last_success,
            duration,
            tags,
            referrers,
            skipped_ticks,
            bytes,
            bytes_seen: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Records a finished run of `entry`; `bytes_total` is the copy engine's byte count so
    /// far (runs overlap, so a run's own bytes cannot be told apart).
    pub fn record_run(
        &self,
        entry: &str,
        report: &EntryReport,
        took: Duration,
        now_unix: f64,
        bytes_total: u64,
    ) {
        let label = EntryLabel {
            entry: entry.to_owned(),
        };
        let failed = report.error.is_some() || report.tags.iter().any(|t| t.state == State::Failed);
        let result = if failed { "failure" } else { "success" };
        self.runs
            .get_or_create(&EntryResult {
                entry: entry.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.last_run.get_or_create(&label).set(now_unix);
        if !failed {
            self.last_success.get_or_create(&label).set(now_unix);
        }
        self.duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        for (result, tags) in [
            ("pruned", &report.pruned),
            ("outside_latest", &report.outside_latest),
        ] {
            if !tags.is_empty() {
                self.tags
                    .get_or_create(&EntryResult {
                        entry: entry.to_owned(),
                        result: result.to_owned(),
                    })
                    .inc_by(tags.len() as u64);
            }
        }
        for t in &report.tags {
            let result = match (t.copied, t.state) {
                (true, _) => "copied",
                (false, State::UpToDate) => "up_to_date",
                (false, State::Failed) => "failed",
                (false, State::Held) => "held",
                (false, _) => "skipped",
            };
            self.tags
                .get_or_create(&EntryResult {
                    entry: entry.to_owned(),
                    result: result.to_owned(),
                })
                .inc();
            if !t.referrers.is_empty() {
                self.referrers
                    .get_or_create(&label)
                    .inc_by(t.referrers.len() as u64);
            }
        }
        // Runs overlap and share one copy engine (reloads included): count the engine's
        // total once, whichever run reports it first, not each run's before/after.
        let seen = self
            .bytes_seen
            .fetch_max(bytes_total, std::sync::atomic::Ordering::Relaxed);
        self.bytes.inc_by(bytes_total.saturating_sub(seen));
    }

    /// Counts ticks skipped while `entry` was running.
    pub fn skipped_ticks(&self, entry: &str, n: u64) {
        if n > 0 {
            self.skipped_ticks
                .get_or_create(&EntryLabel {
                    entry: entry.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// The Prometheus text exposition, with per-registry request counters read from the
    /// clients at scrape time.
    pub fn render(&self, clients: &[RegistryClient]) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The encoder ends with "# EOF"; registry families go before it.
        let body = out.strip_suffix("# EOF\n").unwrap_or(&out).to_owned();
        let mut out = body;
        let _ = writeln!(
            out,
            "# HELP regferry_registry_requests Requests sent to each registry, by method and status (0: no answer)."
        );
        let _ = writeln!(out, "# TYPE regferry_registry_requests counter");
        for c in clients {
            for ((method, status), n) in c.stats().by_method_status() {
                let _ = writeln!(
                    out,
                    "regferry_registry_requests_total{{registry=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    escape(c.registry())
                );
            }
        }
        for (name, help, value) in REGISTRY_COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for c in clients {
                let _ = writeln!(
                    out,
                    "{name}_total{{registry=\"{}\"}} {}",
                    escape(c.registry()),
                    value(c.stats())
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP regferry_registry_ratelimit_remaining Pulls left in the registry's rate-limit window, as last reported."
        );
        let _ = writeln!(out, "# TYPE regferry_registry_ratelimit_remaining gauge");
        for c in clients {
            if let Some(left) = c.stats().ratelimit_remaining() {
                let _ = writeln!(
                    out,
                    "regferry_registry_ratelimit_remaining{{registry=\"{}\"}} {left}",
                    escape(c.registry())
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP regferry_registry_concurrency Requests allowed in flight to the registry now: reqConcurrent, or where the adaptive limit stands."
        );
        let _ = writeln!(out, "# TYPE regferry_registry_concurrency gauge");
        for c in clients {
            let _ = writeln!(
                out,
                "regferry_registry_concurrency{{registry=\"{}\"}} {}",
                escape(c.registry()),
                c.concurrency_limit()
            );
        }
        out.push_str("# EOF\n");
        out
    }
}

/// A per-registry counter read from the clients' [`RequestStats`] at scrape time: name, help,
/// and how to read it.
type StatsCounter = (&'static str, &'static str, fn(&RequestStats) -> u64);

const REGISTRY_COUNTERS: [StatsCounter; 3] = [
    (
        "regferry_registry_retries",
        "Requests sent again after a failure.",
        RequestStats::retries,
    ),
    (
        "regferry_registry_rate_limited",
        "429 answers received.",
        RequestStats::rate_limited,
    ),
    (
        "regferry_registry_invalid_names",
        "Names in a registry's answers (tags, repositories) that broke the distribution grammar and were skipped.",
        RequestStats::invalid_names,
    ),
];

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TagReport;

    fn tag(state: State, copied: bool) -> TagReport {
        TagReport {
            state,
            copied,
            ..TagReport::new("s".into(), "t".into())
        }
    }

    #[test]
    fn runs_tags_and_ticks_are_counted_per_entry() {
        let m = Metrics::new("1.2.3");
        let report = EntryReport {
            index: 0,
            name: "e-1".into(),
            display_name: "sync[0]".into(),
            label: "a -> b".into(),
            tags: vec![
                tag(State::Missing, true),
                tag(State::UpToDate, false),
                tag(State::Failed, false),
                tag(State::Held, false),
            ],
            outside_latest: vec!["s:1.0".into(), "s:0.9".into()],
            pruned: vec!["t:0.8".into()],
            error: None,
        };
        m.record_run(
            "mirror",
            &report,
            Duration::from_millis(1500),
            1_700_000_000.0,
            1024,
        );
        // Another run ending with the same engine total (it overlapped): nothing new.
        m.record_run(
            "other",
            &report,
            Duration::from_millis(10),
            1_700_000_000.0,
            1024,
        );
        m.skipped_ticks("mirror", 2);
        let text = m.render(&[]);
        for want in [
            "regferry_build_info{version=\"1.2.3\"} 1",
            "regferry_entry_runs_total{entry=\"mirror\",result=\"failure\"} 1",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"copied\"} 1",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"up_to_date\"} 1",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"failed\"} 1",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"held\"} 1",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"outside_latest\"} 2",
            "regferry_entry_tags_total{entry=\"mirror\",result=\"pruned\"} 1",
            "regferry_entry_skipped_ticks_total{entry=\"mirror\"} 2",
            "regferry_blob_bytes_copied_total 1024",
            "regferry_entry_last_run_timestamp_seconds{entry=\"mirror\"} 1700000000.0",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(
            !text.contains("regferry_entry_last_success_timestamp_seconds{entry=\"mirror\"}"),
            "a failed run is no success"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
