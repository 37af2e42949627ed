//! What a process learns about registries while it runs: which tags it wrote (so a listing
//! taken before never hides them), whether a registry has the referrers API, and the locks
//! that keep its own concurrent writers of one referrers index from losing each other's
//! entries. Owned by whoever makes the clients (the engine), shared by every client and
//! layout it makes and kept across its configuration reloads, and keyed by the resolved
//! host (scheme, host and port) rather than by a registry's name in the configuration: two
//! names may be one host, and one name may point at another host after a reload.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Tag writes remembered, at most; beyond that the log starts again and listings made
/// before that moment are no longer trusted about absent tags.
const WRITES_KEPT: usize = 50_000;

/// How long the answer about a registry's referrers API is trusted, so that a long-running
/// server notices an upgraded registry.
const API_MEMORY: Duration = Duration::from_secs(3600);

/// Locks in the fixed set: a daemon publishes to ever new tags, and a map of one lock per
/// tag would grow for as long as it runs. Two keys sharing a lock only wait for each other.
const LOCKS: usize = 256;

/// Shared, cheap to clone: clones are the same memory.
#[derive(Clone)]
pub struct Memory {
    inner: Arc<Inner>,
}

struct Inner {
    writes: Mutex<WriteLog>,
    api: Mutex<HashMap<String, (bool, Instant)>>,
    locks: Vec<Arc<tokio::sync::Mutex<()>>>,
}

#[derive(Default)]
struct WriteLog {
    at: HashMap<String, Instant>,
    /// When the log last started again, if it did.
    cleared: Option<Instant>,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Memory")
    }
}

impl Memory {
    /// An empty memory.
    pub fn new() -> Memory {
        Memory {
            inner: Arc::new(Inner {
                writes: Mutex::new(WriteLog::default()),
                api: Mutex::new(HashMap::new()),
                locks: (0..LOCKS)
                    .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                    .collect(),
            }),
        }
    }

    /// Notes that this process wrote the tag `key` (`<repository key>:<tag>`).
    pub(crate) fn note_write(&self, key: String) {
        let mut log = match self.inner.writes.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if log.at.len() >= WRITES_KEPT {
            log.at.clear();
            log.cleared = Some(Instant::now());
        }
        log.at.insert(key, Instant::now());
    }

    /// Whether the tag `key` may have been written at or after `t`.
    pub(crate) fn written_since(&self, key: &str, t: Instant) -> bool {
        let Ok(log) = self.inner.writes.lock() else {
            return true;
        };
        log.cleared.is_some_and(|c| c > t) || log.at.get(key).is_some_and(|w| *w >= t)
    }

    /// Whether the host `origin` has the referrers API, when known and fresh.
    pub(crate) fn api_known(&self, origin: &str) -> Option<bool> {
        let (supported, at) = self.inner.api.lock().ok()?.get(origin).copied()?;
        (at.elapsed() < API_MEMORY).then_some(supported)
    }

    /// Remembers whether the host `origin` has the referrers API.
    pub(crate) fn remember_api(&self, origin: &str, supported: bool) {
        if let Ok(mut m) = self.inner.api.lock() {
            m.insert(origin.to_owned(), (supported, Instant::now()));
        }
    }

    /// The lock for `key`, from the fixed set.
    pub(crate) fn lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        // Stable and cheap. Keys that collide only wait for each other.
        let h = crate::hash::fnv1a(key.as_bytes());
        self.inner.locks[(h % LOCKS as u64) as usize].clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_memories_know_nothing_of_each_other() {
        let (a, b) = (Memory::new(), Memory::new());
        a.remember_api("https://r.example", true);
        a.note_write("https://r.example/app:t".into());
        let before = Instant::now() - Duration::from_secs(1);
        assert_eq!(a.api_known("https://r.example"), Some(true));
        assert_eq!(b.api_known("https://r.example"), None);
        assert!(a.written_since("https://r.example/app:t", before));
        assert!(!b.written_since("https://r.example/app:t", before));
        assert!(
            Arc::ptr_eq(&a.lock("k"), &a.clone().lock("k")),
            "a clone is the same memory"
        );
    }
}
