//! Work that overlapping callers share: the first caller for a key runs it, the others
//! wait for its result, and every one of them gets that result with its kind intact
//! ([`Error::Shared`]). Used for blobs and child manifests, so that two images (or two
//! entries of one index) that need the same content copy it once, and a registry never
//! sees two writes of the same content at the same moment.
//!
//! A caller may also [`claim`](Joined::claim) several keys before doing the work of all of
//! them at once (one source read streamed to several targets): it learns at once which keys
//! are its own and which it waits for, so two such callers never wait for each other.
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use regferry_registry::{Digest, Error, Result};
use tokio::sync::watch;

type Key = (String, Digest);
type Outcome<T> = Option<std::result::Result<T, Arc<Error>>>;

/// In-flight work by (target repository, digest).
#[derive(Debug)]
pub(crate) struct Joined<T> {
    inflight: Mutex<HashMap<Key, watch::Receiver<Outcome<T>>>>,
}

impl<T> Default for Joined<T> {
    fn default() -> Self {
        Joined {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

/// A key's work: this caller's to do, or another's to wait for.
pub(crate) enum Claim<'a, T> {
    /// Do the work and [`finish`](Owner::finish) it.
    Mine(Owner<'a, T>),
    /// Wait for the caller doing it.
    Theirs(Waiter<T>),
}

/// The right, and the duty, to do a key's work. Dropped unfinished (a cancelled copy), it
/// lets the waiters go, and each of them tries again.
pub(crate) struct Owner<'a, T> {
    joined: &'a Joined<T>,
    key: Key,
    tx: watch::Sender<Outcome<T>>,
}

/// Waits for another caller's result.
pub(crate) struct Waiter<T> {
    rx: watch::Receiver<Outcome<T>>,
}

impl<T: Clone> Joined<T> {
    /// Takes `key`'s work, or joins the caller already doing it.
    pub(crate) fn claim(&self, key: Key) -> Claim<'_, T> {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(&key) {
            return Claim::Theirs(Waiter { rx: rx.clone() });
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx);
        Claim::Mine(Owner {
            joined: self,
            key,
            tx,
        })
    }
}

impl<T: Clone> Joined<T> {
    /// Work for several keys at once: `work` gets the places (in `keys`) of those this
    /// caller claimed and returns their results in that order; the others join the work
    /// under way for them, and a key whose owner gave up unfinished goes to `alone`. A key
    /// listed twice (two tags of one repository) is worked on once.
    pub(crate) async fn run_all<W, WFut, A, AFut>(
        &self,
        keys: Vec<Key>,
        work: W,
        alone: A,
    ) -> Vec<Result<T>>
    where
        W: FnOnce(Vec<usize>) -> WFut,
        WFut: Future<Output = Vec<Result<T>>>,
        A: Fn(usize) -> AFut,
        AFut: Future<Output = Result<T>>,
    {
        let n = keys.len();
        // Each key's first place; a later place of the same key takes its result.
        let mut first: HashMap<&Key, usize> = HashMap::new();
        let same: Vec<usize> = keys
            .iter()
            .enumerate()
            .map(|(at, k)| *first.entry(k).or_insert(at))
            .collect();
        let mut owners = Vec::new();
        let mut waiters = Vec::new();
        for (at, key) in keys.iter().enumerate() {
            if same[at] != at {
                continue;
            }
            match self.claim(key.clone()) {
                Claim::Mine(owner) => owners.push((at, owner)),
                Claim::Theirs(waiter) => waiters.push((at, waiter)),
            }
        }
        let mut out: Vec<Option<std::result::Result<T, Arc<Error>>>> =
            (0..n).map(|_| None).collect();
        // This caller's own work is finished, and its keys released, before it waits for
        // anyone else's: two callers whose keys overlap then never wait for each other.
        let places: Vec<usize> = owners.iter().map(|(at, _)| *at).collect();
        let mut mine = work(places).await.into_iter();
        for (at, owner) in owners {
            let result = mine.next().unwrap_or(Err(Error::Cancelled));
            out[at] = Some(owner.finish(result).map_err(Arc::new));
        }
        for (at, waiter) in waiters {
            let result = match waiter.wait().await {
                Some(r) => r,
                None => alone(at).await,
            };
            out[at] = Some(result.map_err(Arc::new));
        }
        (0..n)
            .map(|at| match &out[same[at]] {
                Some(r) => r.clone().map_err(Error::Shared),
                None => Err(Error::Cancelled),
            })
            .collect()
    }
}

impl<T: Clone> Owner<'_, T> {
    /// Hands `result` to every waiter (and back, shared the same way).
    pub(crate) fn finish(self, result: Result<T>) -> Result<T> {
        let shared = result.map_err(Arc::new);
        self.tx.send_replace(Some(shared.clone()));
        shared.map_err(Error::Shared)
    }
}

impl<T> Drop for Owner<'_, T> {
    fn drop(&mut self) {
        // The map only joins work that overlaps; later callers ask the target again, so a
        // long-running server neither grows the map nor trusts content a registry's garbage
        // collection may have removed since.
        let mut map = self
            .joined
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.tx.subscribe()))
        {
            map.remove(&self.key);
        }
    }
}

impl<T: Clone> Waiter<T> {
    /// The owner's result; `None` when it gave up without one (then try again).
    pub(crate) async fn wait(mut self) -> Option<Result<T>> {
        let seen = self.rx.wait_for(Option::is_some).await.ok()?;
        let result = (*seen).clone();
        result.map(|r| r.map_err(Error::Shared))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        (
            "r/a".into(),
            Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_waiter_gets_the_owners_result_and_retries_when_it_vanishes() {
        let j: Joined<u32> = Joined::default();
        let Claim::Mine(owner) = j.claim(key()) else {
            panic!("the first claim owns")
        };
        let Claim::Theirs(waiter) = j.claim(key()) else {
            panic!("the second claim waits")
        };
        let (got, mine) = tokio::join!(waiter.wait(), async { owner.finish(Ok(7)) });
        assert_eq!(got.unwrap().unwrap(), 7);
        assert_eq!(mine.unwrap(), 7);
        // Finished work is forgotten: the next caller owns the key again.
        let Claim::Mine(owner) = j.claim(key()) else {
            panic!("finished work is not joined")
        };
        let Claim::Theirs(waiter) = j.claim(key()) else {
            panic!("waits")
        };
        drop(owner);
        assert!(waiter.wait().await.is_none(), "a vanished owner lets go");
        assert!(matches!(j.claim(key()), Claim::Mine(_)));
    }
}
