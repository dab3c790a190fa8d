//! When each room flushes: a token bucket per room, and one shared beat for rooms that must wait.
//!
//! Each room holds up to `burst` tokens; one token is added at every beat of a grid shared by
//! all rooms (`epoch + k × pace`, `pace = 1 / --tick-hz`). A room with news and a token spends
//! it and flushes at the end of the loop iteration that changed it, so a change in a quiet room
//! leaves at once, and so do the next few of a short burst. A room without a token waits for the
//! next beat: every room waiting then flushes in that one wake-up, each with the token the beat
//! gave it, its news collapsed to the latest values. So a member gets at most `burst` frames plus
//! one per beat from a room, `1 / pace` a second on average, and busy rooms wake the loop once
//! per beat together instead of each at its own moment.
//!
//! Waiting rooms sit in one list, all for the same beat, which is the loop's wake-up time;
//! nothing wakes when no room waits. Members whose sockets are full do not keep a room pending:
//! they wait in the room (see `Member::waiting`) until their connection drains.
//!
//! This module only keeps the books (which rooms are due, which wait, how many tokens each
//! has); it never touches a room's members or frames, and it never reads the clock: every
//! moment comes from the caller.

use std::time::{Duration, Instant};

use slab::Slab;

use super::room::Room;

/// Where a room stands with respect to flushing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Every member has seen the room's latest version, as far as the engine knows.
    Idle,
    /// Changed since its last flush; decided at the next `take_due` call.
    Dirty,
    /// Out of tokens; flushes at the next beat.
    Waiting,
}

/// A room's flush bookkeeping, kept in the room.
#[derive(Debug)]
pub struct RoomPace {
    pub pending: Pending,
    /// Flushes the room may make before it has to wait for a beat.
    tokens: u32,
    /// The beat up to which `tokens` has been refilled.
    beat: u64,
}

/// The engine's lists of rooms to flush. Room keys are slab keys; a room leaves the lists when
/// it is flushed or removed, and a key whose room is not in the state the list says is skipped.
pub struct Pacer {
    /// Time between two beats; zero flushes every change at once (no pacing).
    pace: Duration,
    /// Most tokens a room holds: the frames it may send back to back before waiting.
    burst: u32,
    /// Beat 0 of the shared grid.
    epoch: Option<Instant>,
    dirty: Vec<usize>,
    /// Rooms out of tokens with news; all wait for `next_beat`.
    waiting: Vec<usize>,
    /// The beat the waiting rooms wait for (set by the first of them).
    next_beat: Option<Instant>,
    /// Rooms not idle, so `has_pending` needs no scan.
    pending_rooms: usize,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            pace: Duration::ZERO,
            burst: 1,
            epoch: None,
            dirty: Vec::new(),
            waiting: Vec::new(),
            next_beat: None,
            pending_rooms: 0,
        }
    }
}

impl Pacer {
    /// Beats every `pace` from `epoch`, rooms holding up to `burst` tokens (at least one).
    /// Zero `pace` turns pacing off. Rooms made before keep their tokens until their next
    /// refill caps them at the new burst.
    pub fn configure(&mut self, pace: Duration, burst: u32, epoch: Instant) {
        self.pace = pace;
        self.burst = burst.max(1);
        self.epoch = Some(epoch);
    }

    pub fn pace(&self) -> Duration {
        self.pace
    }

    /// The bookkeeping of a new room: idle, its bucket full.
    pub fn new_room(&self) -> RoomPace {
        RoomPace {
            pending: Pending::Idle,
            tokens: self.burst,
            beat: 0,
        }
    }

    pub fn has_pending(&self) -> bool {
        self.pending_rooms > 0
    }

    /// The beat the waiting rooms wait for; `None` when no room waits.
    pub fn next_beat(&self) -> Option<Instant> {
        self.next_beat.filter(|_| !self.waiting.is_empty())
    }

    /// Records that room `key` changed. A room that waits for the beat keeps waiting: the
    /// change goes out with it.
    pub fn mark_dirty(&mut self, key: usize, room: &mut RoomPace) {
        match room.pending {
            Pending::Idle => self.pending_rooms += 1,
            Pending::Dirty | Pending::Waiting => return,
        }
        room.pending = Pending::Dirty;
        self.dirty.push(key);
    }

    /// Collects into `due` the rooms to flush at `now`: at or after the beat, every waiting
    /// room; then every changed room that has a token (spending it). Changed rooms without one
    /// start waiting for the next beat. With `now` absent, or no pace, every room that is not
    /// idle is due at once (unpaced, for tests and tools).
    pub fn take_due(&mut self, now: Option<Instant>, due: &mut Vec<usize>, rooms: &mut Slab<Room>) {
        // The grid's start and the beat `now` falls in, when pacing.
        let paced = match (now, self.epoch) {
            (Some(now), Some(epoch)) if !self.pace.is_zero() => {
                Some((epoch, beat_index(epoch, self.pace, now)))
            }
            _ => None,
        };
        let beat_reached = match (self.next_beat, now) {
            (Some(beat), Some(now)) => beat <= now,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if beat_reached || paced.is_none() {
            self.next_beat = None;
            for key in self.waiting.drain(..) {
                let Some(Room { pace, .. }) = rooms.get_mut(key) else {
                    continue;
                };
                if pace.pending != Pending::Waiting {
                    continue;
                }
                if let Some((_, beat)) = paced {
                    // The beat has given it at least one token since it began to wait.
                    refill(pace, beat, self.burst);
                    pace.tokens = pace.tokens.saturating_sub(1);
                }
                pace.pending = Pending::Dirty;
                due.push(key);
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
            let Some((epoch, beat)) = paced else {
                due.push(key);
                continue;
            };
            refill(pace, beat, self.burst);
            if pace.tokens > 0 {
                pace.tokens -= 1;
                due.push(key);
            } else {
                pace.pending = Pending::Waiting;
                self.waiting.push(key);
                // Every waiting room waits for the same beat: the next one.
                let next = beat_at(epoch, self.pace, beat.saturating_add(1));
                self.next_beat = Some(self.next_beat.map_or(next, |b| b.min(next)));
            }
        }
        // Hand the allocation back; nothing was marked dirty meanwhile.
        self.dirty = dirty;
    }

    /// Records that a room taken by `take_due` was flushed.
    pub fn flushed(&mut self, room: &mut RoomPace) {
        if room.pending != Pending::Idle {
            room.pending = Pending::Idle;
            self.pending_rooms -= 1;
        }
    }

    /// Forgets a room that is being removed, so the room that takes its slot starts afresh.
    /// Only a room removed with news costs a search of its list (it is normally empty by then).
    pub fn remove_room(&mut self, key: usize, room: &RoomPace) {
        match room.pending {
            Pending::Idle => return,
            Pending::Dirty => self.dirty.retain(|&k| k != key),
            Pending::Waiting => self.waiting.retain(|&k| k != key),
        }
        self.pending_rooms -= 1;
    }
}

/// Adds to `room` the tokens of the beats since it was last refilled, up to `burst`.
fn refill(room: &mut RoomPace, beat: u64, burst: u32) {
    let gained = beat.saturating_sub(room.beat);
    let tokens = u64::from(room.tokens).saturating_add(gained);
    room.tokens = u32::try_from(tokens.min(u64::from(burst))).unwrap_or(burst);
    room.beat = room.beat.max(beat);
}

/// How many whole beats of `pace` lie between `epoch` and `now`.
fn beat_index(epoch: Instant, pace: Duration, now: Instant) -> u64 {
    let since = now.saturating_duration_since(epoch).as_nanos();
    let beats = since / pace.as_nanos().max(1);
    u64::try_from(beats).unwrap_or(u64::MAX)
}

/// The moment of beat `beat`: `epoch + beat × pace`.
fn beat_at(epoch: Instant, pace: Duration, beat: u64) -> Instant {
    let offset = pace.as_nanos().saturating_mul(u128::from(beat));
    let offset = Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
    // Only centuries from `epoch` could this overflow; the beat is then simply due.
    epoch.checked_add(offset).unwrap_or(epoch)
}
