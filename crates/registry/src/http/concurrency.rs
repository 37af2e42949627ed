//! How many requests go to one registry at once. With `reqConcurrent` set, exactly that
//! many: a hard limit. Without it, a limit that adapts the way TCP's congestion control
//! does: it starts at [`INITIAL`], grows while the registry answers as fast as it did at
//! its fastest and the limit is what holds requests back (doubling per round trip at
//! first, then by one per round trip), and backs off when the registry pushes back: halved
//! on a 429, a 503 or a timeout, and trimmed towards [`INITIAL`] when answers slow down.
//!
//! Over a slow link, round trips and not the registry decide the time: 141 requests of a
//! no-op at 6 at a time over a 50 ms round trip take 24 round trips; at 32, five.
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// The adaptive limit's start.
pub(super) const INITIAL: u32 = 6;
/// The adaptive limit's ceiling.
pub(super) const MAX: u32 = 32;
/// The adaptive limit's floor when a registry refuses (429, 503, timeouts).
const MIN: u32 = 2;
/// Latency that counts as "as fast as ever": twice the fastest answer seen, plus this.
const SLACK: Duration = Duration::from_millis(5);
/// The fastest answer is remembered over two windows of this length, so that a registry
/// that became slower for good is measured against its new speed.
const FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// At most one cut per this long (or per two round trips, if longer): one burst of 429s is
/// one signal, not twenty.
const CUT_SPACING: Duration = Duration::from_millis(100);

/// How a request ended, as far as the registry's load is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer, with the time its headers took; `None` for an upload, whose time is the
    /// transfer's and says nothing of the registry's load.
    Answered(Option<Duration>),
    /// 429, 503 or a timeout: the registry is overloaded or asks to slow down.
    Refused,
    /// A failure that says nothing of the registry's load (a connection refused, a 404).
    Neutral,
}

/// Requests in flight to one registry.
#[derive(Debug)]
pub(crate) struct Concurrency {
    sem: Semaphore,
    /// The adaptive limit, or `None` for a fixed one.
    adaptive: Option<Mutex<Adaptive>>,
    fixed: u32,
}

/// A request's place in flight; give it back with [`Concurrency::release`].
pub(crate) struct Permit<'a> {
    permit: SemaphorePermit<'a>,
    /// Whether the limit held the request back (it waited, or half the limit was in use):
    /// only then does an answer say that a higher limit would help.
    pressed: bool,
}

impl Concurrency {
    /// `fixed` requests at once, or an adaptive limit when `None`.
    pub(crate) fn new(fixed: Option<u32>) -> Concurrency {
        match fixed {
            Some(n) => Concurrency {
                sem: Semaphore::new(n.max(1) as usize),
                adaptive: None,
                fixed: n.max(1),
            },
            None => Concurrency {
                sem: Semaphore::new(INITIAL as usize),
                adaptive: Some(Mutex::new(Adaptive::new(Instant::now()))),
                fixed: 0,
            },
        }
    }

    /// Waits for a place.
    pub(crate) async fn acquire(&self) -> Option<Permit<'_>> {
        let free = self.sem.try_acquire();
        let waited = free.is_err();
        let permit = match free {
            Ok(p) => p,
            Err(_) => self.sem.acquire().await.ok()?,
        };
        let pressed = waited || self.sem.available_permits() < self.limit() as usize / 2;
        Some(Permit { permit, pressed })
    }

    /// Gives a place back, learning from how the request ended; returns the new limit when
    /// it moved.
    pub(crate) fn release(&self, permit: Permit<'_>, outcome: Outcome) -> Option<u32> {
        let Some(adaptive) = &self.adaptive else {
            drop(permit);
            return None;
        };
        let Ok(mut a) = adaptive.lock() else {
            drop(permit);
            return None;
        };
        let before = a.issued;
        let was = a.limit as u32;
        a.learn(outcome, permit.pressed, Instant::now());
        let target = a.limit as u32;
        if target > before {
            self.sem.add_permits((target - before) as usize);
            a.issued = target;
            drop(permit);
        } else if target < a.issued {
            // Take away free places now, and this one; the rest as they come back.
            permit.permit.forget();
            a.issued -= 1;
            let more = (a.issued - target) as usize;
            a.issued -= self.sem.forget_permits(more) as u32;
        } else {
            drop(permit);
        }
        (target != was).then_some(target)
    }

    /// The limit now (places taken beyond it are given up as they come back).
    pub(crate) fn limit(&self) -> u32 {
        match &self.adaptive {
            Some(a) => a.lock().map_or(INITIAL, |a| a.limit as u32),
            None => self.fixed,
        }
    }
}

/// The adaptive limit's state.
#[derive(Debug)]
struct Adaptive {
    /// The limit, fractional: congestion avoidance adds 1/limit per answer.
    limit: f64,
    /// Places that exist now (free or taken); moves towards `limit`.
    issued: u32,
    /// Below it the limit grows by one per answer (doubling per round trip), above by
    /// 1/limit per answer (one per round trip).
    threshold: f64,
    /// The fastest answer of this window and of the one before.
    floor: [Option<Duration>; 2],
    window_start: Instant,
    last_cut: Option<Instant>,
}

impl Adaptive {
    fn new(now: Instant) -> Adaptive {
        Adaptive {
            limit: f64::from(INITIAL),
            issued: INITIAL,
            threshold: f64::from(MAX),
            floor: [None, None],
            window_start: now,
            last_cut: None,
        }
    }

    fn fastest(&self) -> Option<Duration> {
        match self.floor {
            [Some(a), Some(b)] => Some(a.min(b)),
            [a, b] => a.or(b),
        }
    }

    fn may_cut(&self, now: Instant) -> bool {
        let spacing = self
            .fastest()
            .map_or(CUT_SPACING, |f| CUT_SPACING.max(f * 2));
        self.last_cut
            .is_none_or(|t| now.duration_since(t) >= spacing)
    }

    fn learn(&mut self, outcome: Outcome, pressed: bool, now: Instant) {
        if now.duration_since(self.window_start) >= FLOOR_WINDOW {
            self.floor = [self.floor[1], None];
            self.window_start = now;
        }
        match outcome {
            Outcome::Neutral | Outcome::Answered(None) => {}
            Outcome::Refused => {
                if self.may_cut(now) {
                    self.limit = (self.limit / 2.0).max(f64::from(MIN));
                    self.threshold = self.limit;
                    self.last_cut = Some(now);
                }
            }
            Outcome::Answered(Some(took)) => {
                self.floor[1] = Some(self.floor[1].map_or(took, |f| f.min(took)));
                let fastest = self.fastest().unwrap_or(took);
                if took <= fastest * 2 + SLACK {
                    if pressed {
                        self.limit += if self.limit < self.threshold {
                            1.0
                        } else {
                            1.0 / self.limit
                        };
                        self.limit = self.limit.min(f64::from(MAX));
                    }
                } else if took > fastest * 4 + SLACK * 4
                    && self.limit > f64::from(INITIAL)
                    && self.may_cut(now)
                {
                    // Answers four times slower than the fastest: the registry queues them.
                    self.limit = (self.limit * 0.8).max(f64::from(INITIAL));
                    self.threshold = self.limit;
                    self.last_cut = Some(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn answered(ms: u64) -> Outcome {
        Outcome::Answered(Some(MS * ms as u32))
    }

    #[test]
    fn the_limit_doubles_per_round_trip_then_grows_by_one() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        // One round trip: every place answers once, at a flat 50 ms.
        for round in 1..=2u32 {
            let places = a.limit as u32;
            for _ in 0..places {
                a.learn(answered(50), true, t0 + MS * 50 * round);
            }
        }
        assert_eq!(a.limit as u32, 24, "6 -> 12 -> 24");
        for _ in 0..100 {
            a.learn(answered(50), true, t0);
        }
        assert_eq!(a.limit as u32, MAX, "never above the ceiling");
    }

    #[test]
    fn an_unpressed_limit_does_not_grow() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        for _ in 0..100 {
            a.learn(answered(50), false, t0);
        }
        assert_eq!(a.limit as u32, INITIAL);
    }

    #[test]
    fn refusals_halve_the_limit_once_per_burst() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        for _ in 0..30 {
            a.learn(answered(10), true, t0);
        }
        assert_eq!(a.limit as u32, MAX);
        // A burst of twenty 429s within a few milliseconds is one signal.
        for i in 0..20 {
            a.learn(Outcome::Refused, true, t0 + MS * (1000 + i));
        }
        assert_eq!(a.limit as u32, MAX / 2);
        // Later bursts cut again, down to the floor, never below.
        for i in 0..20u32 {
            a.learn(Outcome::Refused, true, t0 + MS * (2000 + 200 * i));
        }
        assert_eq!(a.limit as u32, MIN);
        // After a cut the limit grows by about one per round trip only.
        for _ in 0..=MIN {
            a.learn(answered(10), true, t0 + MS * 10_000);
        }
        assert_eq!(a.limit as u32, MIN + 1);
    }

    #[test]
    fn slower_answers_stop_the_growth_and_trim_it() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        for _ in 0..10 {
            a.learn(answered(20), true, t0);
        }
        let grown = a.limit;
        // Twice as slow plus a little: no growth, no cut.
        for _ in 0..10 {
            a.learn(answered(50), true, t0 + MS * 500);
        }
        assert_eq!(a.limit, grown);
        // Five times as slow: trimmed, never below the start.
        for i in 0..50u32 {
            a.learn(answered(120), true, t0 + MS * (1000 + 200 * i));
        }
        assert_eq!(a.limit as u32, INITIAL);
        // Neutral failures and uploads teach nothing.
        a.learn(Outcome::Neutral, true, t0);
        a.learn(Outcome::Answered(None), true, t0);
        assert_eq!(a.limit as u32, INITIAL);
    }

    #[test]
    fn a_registry_that_became_slower_is_measured_against_its_new_speed() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(t0);
        a.learn(answered(1), true, t0);
        // Next window: 40 ms is forty times the fastest, so the limit is trimmed.
        for _ in 0..10 {
            a.learn(answered(40), true, t0 + FLOOR_WINDOW);
        }
        assert_eq!(a.limit as u32, INITIAL);
        // Two windows later the 1 ms answer is forgotten: 40 ms is the new fastest.
        for _ in 0..10 {
            a.learn(answered(40), true, t0 + FLOOR_WINDOW * 2);
        }
        assert!(
            a.limit > f64::from(INITIAL + 1),
            "grows again at the new speed"
        );
    }

    #[tokio::test]
    async fn places_follow_the_limit_up_and_down() {
        let c = Concurrency::new(None);
        assert_eq!(c.limit(), INITIAL);
        let at_once = |n: usize| futures_util::future::join_all((0..n).map(|_| c.acquire()));
        // Six requests at once, each answered fast: the limit grows by one for each that
        // found more than half the places taken (the last three), and places appear.
        for p in at_once(6).await {
            c.release(p.unwrap(), Outcome::Answered(Some(MS)));
        }
        assert_eq!((c.limit(), c.sem.available_permits()), (9, 9));
        // A refusal while ten are taken: free places go at once, taken ones as they return.
        for p in at_once(9).await {
            c.release(p.unwrap(), Outcome::Answered(Some(MS)));
        }
        assert_eq!((c.limit(), c.sem.available_permits()), (13, 13));
        let mut held = at_once(10).await.into_iter().map(Option::unwrap);
        c.release(held.next().unwrap(), Outcome::Refused);
        assert_eq!((c.limit(), c.sem.available_permits()), (6, 0));
        for p in held {
            c.release(p, Outcome::Neutral);
        }
        assert_eq!(c.sem.available_permits(), 6);
        // A fixed limit never moves.
        let f = Concurrency::new(Some(3));
        let p = f.acquire().await.unwrap();
        f.release(p, Outcome::Refused);
        assert_eq!((f.limit(), f.sem.available_permits()), (3, 3));
    }
}
