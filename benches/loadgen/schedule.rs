//! When each set goes out and what it says. One global schedule replaces a timer per client:
//! with N clients at S sets/s, the k-th send of the run is due at k / (N * S) seconds and goes
//! to client k mod N, taken room by room in turn, so every client sends every 1/S seconds and
//! the sends of a room are spread evenly over that period. The encoder formats a turn's sets
//! into one buffer, so sending costs no allocation per message.

use std::time::{Duration, Instant};

use tungstenite::Bytes;

/// The global send schedule: send k is due at `start + k * interval`.
pub struct Schedule {
    start: Instant,
    interval: f64,
    /// The next send not yet handed out.
    pub next: u64,
    clients_total: u64,
    rooms: u64,
    clients_per_room: u64,
}

impl Schedule {
    pub fn new(start: Instant, rate: f64, rooms: u32, clients_per_room: u32) -> Self {
        let clients_total = u64::from(rooms) * u64::from(clients_per_room);
        Schedule {
            start,
            interval: 1.0 / (rate * clients_total as f64),
            next: 0,
            clients_total,
            rooms: u64::from(rooms),
            clients_per_room: u64::from(clients_per_room),
        }
    }

    /// One past the last send due at `now`.
    pub fn due_until(&self, now: Instant) -> u64 {
        (now.duration_since(self.start).as_secs_f64() / self.interval) as u64 + 1
    }

    pub fn sends_per_second(&self) -> u64 {
        (1.0 / self.interval).ceil() as u64
    }

    pub fn time_of(&self, seq: u64) -> Instant {
        self.start + Duration::from_secs_f64(seq as f64 * self.interval)
    }

    /// Consecutive sends go to different rooms, so each room's sends are spread out too.
    pub fn client_of(&self, seq: u64) -> usize {
        let position = seq % self.clients_total;
        let room = position % self.rooms;
        let member = position / self.rooms;
        (room * self.clients_per_room + member) as usize
    }
}

pub struct PendingSet {
    pub client: u32,
    pub start: usize,
    pub end: usize,
}

/// Formats a turn's sets into one buffer that becomes one shared `Bytes`; each message is a
/// slice of it, so sending costs no allocation per message.
pub struct SetEncoder {
    /// `{"method":"set","name":"☁ vN","value":"` for each variable N.
    prefixes: Vec<Box<[u8]>>,
    buf: Vec<u8>,
    pending: Vec<PendingSet>,
    rng: u64,
}

impl SetEncoder {
    pub fn new(vars: u32) -> Self {
        SetEncoder {
            prefixes: (0..vars)
                .map(|v| {
                    format!("{{\"method\":\"set\",\"name\":\"☁ v{v}\",\"value\":\"")
                        .into_bytes()
                        .into_boxed_slice()
                })
                .collect(),
            buf: Vec::new(),
            pending: Vec::new(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn push(&mut self, client: u32, var: u32, value: u64) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&self.prefixes[var as usize]);
        push_decimal(&mut self.buf, value);
        self.buf.extend_from_slice(b"\"}");
        self.pending.push(PendingSet {
            client,
            start,
            end: self.buf.len(),
        });
    }

    pub fn random_var(&mut self) -> u32 {
        // xorshift64: plenty for spreading sets over variables.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.prefixes.len() as u64) as u32
    }

    pub fn take_batch(&mut self) -> (Bytes, Vec<PendingSet>) {
        let capacity = self.buf.capacity();
        let batch = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(capacity),
        ));
        (batch, std::mem::take(&mut self.pending))
    }

    pub fn give_back(&mut self, pending: Vec<PendingSet>) {
        self.pending = pending;
    }
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
