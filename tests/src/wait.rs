//! Wall-clock waits for the blocking parts of the harness.
//!
//! The workspace bans `std::time::Instant` and `std::thread::sleep` so that daemon code uses
//! tokio's pausable clock. The harness is the exception: its blocking helpers wait on the
//! calling test thread, and their deadlines must keep running even when the caller's tokio
//! runtime has paused time, or a registry that never comes up would hang the test instead of
//! failing it.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::time::Duration;

/// A point in wall-clock time after which a wait gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    end: std::time::Instant,
}

impl Deadline {
    /// `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Self {
        Self {
            end: std::time::Instant::now() + timeout,
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn passed(&self) -> bool {
        std::time::Instant::now() >= self.end
    }
}

/// Blocks the calling (test) thread for `d`.
pub(crate) fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Wall-clock time measured around `f`, for tests that assert on timing.
#[cfg(test)]
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = std::time::Instant::now();
    let out = f();
    (out, start.elapsed())
}
