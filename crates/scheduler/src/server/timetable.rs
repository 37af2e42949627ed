//! When each scheduled entry runs next: one heap of due times for every entry of the
//! server, instead of a task, a timer and a channel per entry (a config of 7,241 entries
//! held 28 MiB in those alone, ~4 KB an entry, while idle).
//!
//! A slot is idle, running, or waiting for a run that an earlier configuration started (a
//! reload never runs an entry twice at once). Ticks that pass during a run are skipped and
//! counted; triggers that arrive during a run are merged into one more run after it.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regferry_config::schedule::Schedule;

use crate::engine::Only;

/// A scheduled entry.
#[derive(Debug)]
struct Slot {
    /// The entry's index in its configuration's `sync` list.
    entry: u32,
    /// The entry's fixed start offset (jitter), in milliseconds.
    offset_ms: u32,
    /// When the schedule fires next; `None` once it never fires again (triggers still run).
    next: Option<DateTime<Utc>>,
    /// Whether the heap holds `next` for this slot.
    queued: bool,
    run: Run,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Run {
    Idle,
    /// A run of this configuration; `pending` is what triggers asked for meanwhile.
    Running {
        from_tick: bool,
        pending: Option<Box<Only>>,
    },
    /// A run that an earlier configuration started for the same entry name.
    Inherited {
        pending: Option<Box<Only>>,
    },
}

/// What to do once a run has finished.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Schedule ticks that passed during the run and were skipped.
    pub(crate) missed: u64,
    /// Triggers arrived during the run: start this run now.
    pub(crate) again: Option<Only>,
}

/// The next run time of every scheduled entry.
#[derive(Debug, Default)]
pub(crate) struct Timetable {
    slots: Vec<Slot>,
    due: BinaryHeap<Reverse<(DateTime<Utc>, u32)>>,
}

fn next_fire(schedule: &Schedule, offset_ms: u32, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset = chrono::Duration::milliseconds(i64::from(offset_ms));
    schedule.next_after(after - offset).map(|t| t + offset)
}

impl Timetable {
    /// Schedules `entry` on `schedule`, shifted by `offset`, from `now`, in the next slot;
    /// returns whether the schedule ever fires (an entry that never fires still runs when
    /// triggered).
    pub(crate) fn add(
        &mut self,
        entry: u32,
        schedule: &Schedule,
        offset: Duration,
        now: DateTime<Utc>,
    ) -> bool {
        let offset_ms = u32::try_from(offset.as_millis()).unwrap_or(u32::MAX);
        // An interval counts from the previous tick, so its offset is set once, here: from
        // `now` alone, every entry on `@every 1h` started together would fire together.
        let from = match schedule.period() {
            Some(_) => now + chrono::Duration::milliseconds(i64::from(offset_ms)),
            None => now,
        };
        let next = next_fire(schedule, offset_ms, from);
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            entry,
            offset_ms,
            next,
            queued: next.is_some(),
            run: Run::Idle,
        });
        if let Some(t) = next {
            self.due.push(Reverse((t, slot)));
        }
        next.is_some()
    }

    /// The index of `slot`'s entry in its configuration.
    pub(crate) fn entry(&self, slot: usize) -> u32 {
        self.slots[slot].entry
    }

    /// The slots and their entries' indices.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        self.slots.iter().enumerate().map(|(i, s)| (i, s.entry))
    }

    /// The slots with a run in progress (of this configuration or an earlier one).
    pub(crate) fn busy(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.run != Run::Idle)
            .map(|(i, _)| i)
    }

    /// Whether the top of the heap is a time this slot still waits for.
    fn is_current(&self, at: DateTime<Utc>, slot: u32) -> bool {
        let s = &self.slots[slot as usize];
        s.next == Some(at) && s.run == Run::Idle
    }

    /// When the earliest idle slot is due.
    pub(crate) fn next_due(&mut self) -> Option<DateTime<Utc>> {
        while let Some(&Reverse((at, slot))) = self.due.peek() {
            if self.is_current(at, slot) {
                return Some(at);
            }
            self.due.pop();
            let s = &mut self.slots[slot as usize];
            if s.next == Some(at) {
                s.queued = false;
            }
        }
        None
    }

    /// A slot due at `now` or before, now marked running for its tick.
    pub(crate) fn pop_due(&mut self, now: DateTime<Utc>) -> Option<usize> {
        let at = self.next_due()?;
        if at > now {
            return None;
        }
        let Reverse((_, slot)) = self.due.pop()?;
        let s = &mut self.slots[slot as usize];
        s.queued = false;
        s.run = Run::Running {
            from_tick: true,
            pending: None,
        };
        Some(slot as usize)
    }

    /// A trigger for `slot`: what to run now if it is idle; otherwise it is merged into
    /// the run after the current one (the same request once, different ones into a full
    /// run, so that no pushed tag is lost and a burst costs one run).
    pub(crate) fn trigger(&mut self, slot: usize, only: Only) -> Option<Only> {
        let s = &mut self.slots[slot];
        match &mut s.run {
            Run::Idle => {
                s.run = Run::Running {
                    from_tick: false,
                    pending: None,
                };
                Some(only)
            }
            Run::Running { pending, .. } | Run::Inherited { pending } => {
                *pending = Some(Box::new(match pending.take() {
                    Some(p) if *p != only => Only::default(),
                    _ => only,
                }));
                None
            }
        }
    }

    /// Marks `slot` as waiting for a run that an earlier configuration started.
    pub(crate) fn inherit(&mut self, slot: usize) {
        self.slots[slot].run = Run::Inherited { pending: None };
    }

    /// Whether `slot` waits for a run of an earlier configuration.
    pub(crate) fn is_inherited(&self, slot: usize) -> bool {
        matches!(self.slots[slot].run, Run::Inherited { .. })
    }

    /// The run of `slot` has finished at `now`: moves its schedule past the tick it ran
    /// for and past every tick that passed meanwhile (counted as missed), and either
    /// starts the merged triggers that arrived meanwhile or waits for the next tick.
    pub(crate) fn finished(
        &mut self,
        slot: usize,
        schedule: &Schedule,
        now: DateTime<Utc>,
    ) -> Finished {
        let s = &mut self.slots[slot];
        let (from_tick, pending) = match std::mem::replace(&mut s.run, Run::Idle) {
            Run::Running { from_tick, pending } => (from_tick, pending),
            Run::Inherited { pending } => (false, pending),
            Run::Idle => (false, None),
        };
        let before = s.next;
        if from_tick {
            s.next = s.next.and_then(|t| next_fire(schedule, s.offset_ms, t));
        }
        let mut missed = 0;
        while let Some(t) = s.next.filter(|t| *t <= now) {
            missed += 1;
            s.next = next_fire(schedule, s.offset_ms, t);
        }
        if let Some(only) = pending {
            s.run = Run::Running {
                from_tick: false,
                pending: None,
            };
            return Finished {
                missed,
                again: Some(*only),
            };
        }
        if let Some(t) = s.next
            && (!s.queued || s.next != before)
        {
            s.queued = true;
            self.due.push(Reverse((t, slot as u32)));
        }
        Finished {
            missed,
            again: None,
        }
    }
}
