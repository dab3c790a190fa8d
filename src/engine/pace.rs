//! When each room flushes: a per-room pace instead of a global tick.
//!
//! A room with news flushes at the end of the loop iteration that changed it if its last flush
//! was at least one pace ago, and otherwise at that moment (last flush + pace). So a member gets
//! at most one frame per pace from a room, a burst still collapses to the latest values, and a
//! change in a quiet room leaves at once. Rooms waiting for their moment sit in a binary heap of
//! `(deadline, room, serial)`; the earliest deadline is the loop's wake-up time, and nothing
//! wakes when no room waits. Members whose sockets are full do not keep a room pending: they wait
//! in the room (see `Member::waiting`) until their connection drains.
//!
//! This module only keeps the books (which rooms are due, which wait); it never touches a
//! room's members or frames.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use slab::Slab;

use super::room::Room;

/// Where a room stands with respect to flushing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Every member has seen the room's latest version, as far as the engine knows.
    Idle,
    /// Changed since its last flush; decided at the next `due` call.
    Dirty,
    /// Changed within its pace; flushes at this deadline.
    Waiting(Instant),
}

/// A room's flush bookkeeping, kept in the room.
#[derive(Debug)]
pub struct RoomPace {
    pub pending: Pending,
    /// When the room last flushed, for the pace (`None`: never, or only unpaced flushes).
    pub last_flush: Option<Instant>,
    /// Tells this room's timer entries from those of an earlier room in the same slab slot.
    pub serial: u64,
}

impl RoomPace {
    pub fn new(serial: u64) -> Self {
        RoomPace {
            pending: Pending::Idle,
            last_flush: None,
            serial,
        }
    }
}

/// The engine's lists of rooms to flush. Room keys are slab keys; a key whose room is gone or
/// whose state no longer matches is skipped, so removing a room needs no search of the heap.
#[derive(Default)]
pub struct Pacer {
    /// Shortest time between two flushes of one room; zero flushes every change at once.
    pub pace: Duration,
    /// Benchmarks only: the start of a shared grid of pace steps every room flushes on.
    pub grid: Option<Instant>,
    dirty: Vec<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Rooms not idle, so `has_pending` needs no scan.
    pending_rooms: usize,
    next_serial: u64,
}

impl Pacer {
    pub fn new_room(&mut self) -> RoomPace {
        self.next_serial += 1;
        RoomPace::new(self.next_serial)
    }

    pub fn has_pending(&self) -> bool {
        self.pending_rooms > 0
    }

    /// The earliest moment a waiting room is due. May be early (an entry of a room that has
    /// since been flushed or removed), which costs one spurious wake-up, never a missed one.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers
            .peek()
            .map(|Reverse((deadline, _, _))| *deadline)
    }

    /// Records that room `key` changed. A room that waits for its moment keeps waiting: the
    /// change goes out with it.
    pub fn mark_dirty(&mut self, key: usize, room: &mut RoomPace) {
        match room.pending {
            Pending::Idle => self.pending_rooms += 1,
            Pending::Dirty | Pending::Waiting(_) => return,
        }
        room.pending = Pending::Dirty;
        self.dirty.push(key);
    }

    /// Collects into `due` the rooms to flush at `now`, each with the moment to record as its
    /// flush time; rooms changed within their pace start waiting instead. With `now` absent
    /// every room that is not idle is due at once (unpaced, for tests and tools).
    pub fn take_due(
        &mut self,
        now: Option<Instant>,
        due: &mut Vec<(usize, Option<Instant>)>,
        rooms: &mut Slab<Room>,
    ) {
        while let Some(&Reverse((deadline, key, serial))) = self.timers.peek() {
            if now.is_some_and(|now| deadline > now) {
                break;
            }
            self.timers.pop();
            if let Some(Room { pace, .. }) = rooms.get_mut(key) {
                if pace.serial == serial && pace.pending == Pending::Waiting(deadline) {
                    pace.pending = Pending::Dirty;
                    due.push((key, Some(deadline)));
                }
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(Room { pace, .. }) = rooms.get_mut(key) else {
                continue;
            };
            if pace.pending != Pending::Dirty {
                continue;
            }
            let earliest = match (self.grid, now) {
                (Some(epoch), Some(now)) => Some(next_grid_point(epoch, self.pace, now)),
                _ => pace.last_flush.map(|last| last + self.pace),
            };
            match (now, earliest) {
                (Some(now), Some(earliest)) if earliest > now => {
                    pace.pending = Pending::Waiting(earliest);
                    self.timers.push(Reverse((earliest, key, pace.serial)));
                }
                _ => due.push((key, now)),
            }
        }
        // Hand the allocation back; nothing was marked dirty meanwhile.
        self.dirty = dirty;
    }

    /// Records that room `key` was flushed: `at` is its deadline or the moment it was found due
    /// (kept to hold the pace's phase, unless that is already more than a pace ago).
    pub fn flushed(&mut self, room: &mut RoomPace, at: Option<Instant>, now: Option<Instant>) {
        if let (Some(at), Some(now)) = (at, now) {
            room.last_flush = Some(if at + self.pace <= now { now } else { at });
        }
        if room.pending != Pending::Idle {
            room.pending = Pending::Idle;
            self.pending_rooms -= 1;
        }
    }

    /// Forgets a room that is being removed.
    pub fn remove_room(&mut self, key: usize, room: &RoomPace) {
        if room.pending != Pending::Idle {
            self.pending_rooms -= 1;
        }
        self.dirty.retain(|&k| k != key);
    }
}

/// The first point of the grid `epoch + k × pace` at or after `now`.
fn next_grid_point(epoch: Instant, pace: Duration, now: Instant) -> Instant {
    let since = now.saturating_duration_since(epoch).as_nanos();
    let step = pace.as_nanos().max(1);
    let steps = since.div_ceil(step);
    let offset = u64::try_from(steps.saturating_mul(step)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}
