//! Counters of a run, read by progress bars, summaries and metrics.
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) manifests_pushed: AtomicU64,
    pub(crate) blobs_copied: AtomicU64,
    pub(crate) blobs_mounted: AtomicU64,
    pub(crate) blobs_existing: AtomicU64,
    pub(crate) bytes_copied: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) referrers_copied: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Manifests and indexes pushed.
    pub manifests_pushed: u64,
    /// Blobs streamed from source to target.
    pub blobs_copied: u64,
    /// Blobs linked by cross-repository mount.
    pub blobs_mounted: u64,
    /// Blobs the target already had.
    pub blobs_existing: u64,
    /// Blob bytes written to targets (including bytes of attempts that failed and were
    /// retried).
    pub bytes_copied: u64,
    /// Blob bytes read from sources: less than `bytes_copied` when one read fed several
    /// targets (`targets`).
    pub bytes_read: u64,
    /// Referrers copied.
    pub referrers_copied: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            manifests_pushed: r(&self.manifests_pushed),
            blobs_copied: r(&self.blobs_copied),
            blobs_mounted: r(&self.blobs_mounted),
            blobs_existing: r(&self.blobs_existing),
            bytes_copied: r(&self.bytes_copied),
            bytes_read: r(&self.bytes_read),
            referrers_copied: r(&self.referrers_copied),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
