//! A count of things allowed at once that a running daemon can change: a reload resizes
//! it while work started under the old size finishes.
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Permits for work done at once (image copies, blobs in flight), resizable.
#[derive(Debug)]
pub struct Slots {
    sem: Semaphore,
    /// The total the permits are being brought to.
    size: Mutex<usize>,
}

impl Slots {
    /// `size` permits.
    pub fn new(size: usize) -> Arc<Slots> {
        Arc::new(Slots {
            sem: Semaphore::new(size),
            size: Mutex::new(size),
        })
    }

    /// Waits for a permit; `None` once the slots are closed.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.sem.acquire().await.ok()
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Brings the total to `size`: more permits at once, fewer as those in use come back (a
    /// task takes the surplus and forgets it). Each call starts from the last total asked
    /// for, so resizes in quick succession add up right. Needs a Tokio runtime to shrink.
    pub fn resize(self: &Arc<Self>, size: usize) {
        let Ok(mut total) = self.size.lock() else {
            return;
        };
        if size > *total {
            self.sem.add_permits(size - *total);
        } else if size < *total {
            let fewer = u32::try_from(*total - size).unwrap_or(u32::MAX);
            let slots = self.clone();
            tokio::spawn(async move {
                if let Ok(p) = slots.sem.acquire_many(fewer).await {
                    p.forget();
                }
            });
        }
        *total = size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn resizing_waits_for_permits_in_use_and_adds_up_across_calls() {
        let slots = Slots::new(4);
        let busy = slots.sem.acquire_many(3).await.unwrap();
        slots.resize(2);
        settle().await;
        assert_eq!(slots.available(), 0, "the free one is retired first");
        drop(busy);
        settle().await;
        assert_eq!(slots.available(), 2);
        // Twice the same size (a retried reload): still that size.
        slots.resize(1);
        slots.resize(1);
        settle().await;
        assert_eq!(slots.available(), 1);
        slots.resize(6);
        assert_eq!(slots.available(), 6);
    }
}
