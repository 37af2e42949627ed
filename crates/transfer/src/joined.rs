//! Work that overlapping callers share: the first caller for a key runs it, the others
//! wait for its result, and every one of them gets that result with its kind intact
//! ([`Error::Shared`]). Used for blobs and child manifests, so that two images (or two
//! entries of one index) that need the same content copy it once, and a registry never
//! sees two writes of the same content at the same moment.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use regferry_registry::{Digest, Error, Result};
use tokio::sync::{Mutex, OnceCell};

type Cell<T> = Arc<OnceCell<Result<T, Arc<Error>>>>;

/// In-flight work by (target repository, digest).
#[derive(Debug)]
pub(crate) struct Joined<T> {
    inflight: Mutex<HashMap<(String, Digest), Cell<T>>>,
}

impl<T> Default for Joined<T> {
    fn default() -> Self {
        Joined {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Joined<T> {
    /// Runs `work` for `key`, or waits for the run already under way.
    pub(crate) async fn run<F, Fut>(&self, key: (String, Digest), work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cell = {
            let mut map = self.inflight.lock().await;
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let result = cell
            .get_or_init(|| async { work().await.map_err(Arc::new) })
            .await
            .clone();
        // The map only joins work that overlaps; later callers ask the target again, so a
        // long-running server neither grows the map nor trusts content a registry's garbage
        // collection may have removed since.
        self.inflight.lock().await.remove(&key);
        result.map_err(Error::Shared)
    }
}
