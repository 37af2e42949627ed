//! Copies images between repositories (registries or OCI layouts): every blob verified
//! while it streams, manifests pushed byte for byte, children before the manifest or index
//! that references them, and the tag last. A crash at any point leaves no tag pointing at
//! an incomplete image.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod blob;
mod image;
mod joined;
mod platform;
mod referrers;
mod slots;
mod stats;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use regferry_registry::Digest;
use tokio::sync::Mutex;

pub use image::{CopyOptions, Destination, GraphLimits, filter_index};
pub use platform::{matches_platform, select_platform};
pub use referrers::{ReferrerCopy, ReferrerFilterFn, ReferrerWalk};
pub use slots::Slots;
pub use stats::{Stats, StatsSnapshot};

/// How a blob got to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// It was already there.
    Existed,
    /// It was linked from another repository of the same registry.
    Mounted,
    /// It was streamed from the source; this many bytes.
    Copied(u64),
}

/// The copy engine, shared by all copies of a run so that a blob needed by many images
/// is transferred once per target repository.
#[derive(Debug)]
pub struct Transfer {
    blob_slots: Arc<Slots>,
    /// Blob copies under way, joined by later callers.
    blobs_inflight: joined::Joined<BlobOutcome>,
    /// Child manifest copies under way, joined by later callers.
    manifests_inflight: joined::Joined<()>,
    /// Target repositories each blob is known to be in, for mounting.
    landed: Mutex<HashMap<Digest, Vec<blob::Landing>>>,
    /// Registries that answered a mount from a repository itself with an error.
    refuses_self_mount: Mutex<HashSet<String>>,
    /// Manifests pushed (target repository, digest), so that a new repository is asked
    /// about a child only when it may have it; a hint, bounded like `landed`.
    pushed: Mutex<HashSet<(String, Digest)>>,
    stats: Stats,
}

impl Transfer {
    /// An engine that moves at most `concurrent_blobs` blobs at once.
    pub fn new(concurrent_blobs: usize) -> Transfer {
        Transfer {
            blob_slots: Slots::new(concurrent_blobs.max(1)),
            blobs_inflight: joined::Joined::default(),
            manifests_inflight: joined::Joined::default(),
            landed: Mutex::new(HashMap::new()),
            refuses_self_mount: Mutex::new(HashSet::new()),
            pushed: Mutex::new(HashSet::new()),
            stats: Stats::default(),
        }
    }

    /// Changes how many blobs move at once (a reloaded configuration taking over).
    pub fn resize(&self, concurrent_blobs: usize) {
        self.blob_slots.resize(concurrent_blobs.max(1));
    }

    /// Counters of what was copied.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}
