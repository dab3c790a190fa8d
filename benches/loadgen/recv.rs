//! Receive-side accounting shared by all connections: counts messages ("frames" in the
//! report) and the sets in them with one `memchr` pass over each payload chunk as it lies in
//! the read buffer, and measures latency on a sample of messages by reading the send time
//! back out of each set's value. Nothing is allocated per message.

use std::collections::BTreeMap;
use std::time::Instant;

use memchr::memmem::Finder;

use crate::histogram::Histogram;

/// Monotonic counters; a measured window is the difference of two copies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub sets_sent: u64,
    /// Sends refused because the connection's write buffer was full (server not reading).
    pub sends_dropped: u64,
    /// Scheduled sends given up because the generator fell more than a second behind.
    pub sends_skipped: u64,
    pub frames: u64,
    pub sets_received: u64,
    pub bytes_received: u64,
    pub binary_frames: u64,
}

impl Counters {
    pub fn since(self, earlier: Counters) -> Counters {
        Counters {
            sets_sent: self.sets_sent - earlier.sets_sent,
            sends_dropped: self.sends_dropped - earlier.sends_dropped,
            sends_skipped: self.sends_skipped - earlier.sends_skipped,
            frames: self.frames - earlier.frames,
            sets_received: self.sets_received - earlier.sets_received,
            bytes_received: self.bytes_received - earlier.bytes_received,
            binary_frames: self.binary_frames - earlier.binary_frames,
        }
    }
}

/// The time base of every value sent: microseconds since the generator started.
#[derive(Clone, Copy)]
pub struct Clock {
    pub start: Instant,
}

impl Clock {
    #[inline]
    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_micros() as u64
    }
}

pub struct Receiver {
    pub counters: Counters,
    pub latency: Histogram,
    /// Sampled sets whose value was not a send time of this run's measured window, e.g. the
    /// variables a server replays on join.
    pub unmatched_samples: u64,
    /// Close codes of closes the server started (1005 when the frame carried no code).
    pub server_close_codes: BTreeMap<u16, u64>,
    measuring: bool,
    window_start_us: u64,
    sample_every: u32,
    until_sample: u32,
    clock: Clock,
    value_key: Finder<'static>,
}

impl Receiver {
    pub fn new(clock: Clock, sample_every: u32) -> Self {
        Receiver {
            counters: Counters::default(),
            latency: Histogram::new(),
            unmatched_samples: 0,
            server_close_codes: BTreeMap::new(),
            measuring: false,
            window_start_us: 0,
            sample_every,
            until_sample: sample_every,
            clock,
            value_key: Finder::new(b"\"value\""),
        }
    }

    /// Latency is only recorded between these calls, and only for sets sent inside.
    pub fn start_measuring(&mut self, at: Instant) {
        self.measuring = true;
        self.window_start_us = self.clock.micros(at);
    }

    pub fn stop_measuring(&mut self) {
        self.measuring = false;
    }

    pub fn on_server_close(&mut self, code: u16) {
        *self.server_close_codes.entry(code).or_insert(0) += 1;
    }

    /// A data message starts: decide now whether its latency is sampled.
    #[inline]
    pub fn begin_message(&mut self, binary: bool) -> Message {
        let mut sampled = false;
        if self.measuring {
            self.until_sample -= 1;
            if self.until_sample == 0 {
                self.until_sample = self.sample_every;
                sampled = true;
            }
        }
        Message {
            binary,
            sampled,
            len: 0,
            last: b'\n',
            at_line_start: true,
        }
    }

    /// Part of a message's payload, as it lies in the read buffer. A message holds
    /// newline-separated sets, so sets are counted as newlines here plus one at the end
    /// unless the payload ends with a newline.
    #[inline]
    pub fn on_message_bytes(&mut self, message: &mut Message, chunk: &[u8], continues: bool) {
        let Some(&last) = chunk.last() else {
            return;
        };
        self.counters.sets_received += memchr::memchr_iter(b'\n', chunk).count() as u64;
        message.len += chunk.len() as u64;
        message.last = last;
        if message.sampled {
            self.sample_latency(message, chunk, continues);
        }
    }

    #[inline]
    pub fn end_message(&mut self, message: &Message) {
        let c = &mut self.counters;
        c.frames += 1;
        c.bytes_received += message.len;
        c.binary_frames += u64::from(message.binary);
        c.sets_received += u64::from(message.len > 0 && message.last != b'\n');
    }

    /// Reads the send time out of every complete line of the chunk. A line cut by the end of
    /// a read is skipped rather than stitched together, which keeps this copy-free.
    fn sample_latency(&mut self, message: &mut Message, chunk: &[u8], continues: bool) {
        let mut lines = chunk;
        if !message.at_line_start {
            match memchr::memchr(b'\n', lines) {
                Some(i) => lines = &lines[i + 1..],
                None => return,
            }
        }
        if continues {
            lines = memchr::memrchr(b'\n', lines).map_or(&[], |i| &lines[..i]);
        }
        message.at_line_start = !continues || chunk.last() == Some(&b'\n');
        let now_us = self.clock.micros(Instant::now());
        for line in lines.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            match parse_value(line, &self.value_key) {
                Some(sent_us) if (self.window_start_us..=now_us).contains(&sent_us) => {
                    self.latency.record(now_us - sent_us)
                }
                _ => self.unmatched_samples += 1,
            }
        }
    }
}

/// Receive progress of one data message (a frame, or several fragments).
pub struct Message {
    binary: bool,
    sampled: bool,
    len: u64,
    last: u8,
    at_line_start: bool,
}

/// The leading unsigned integer of a set's value, quoted or not:
/// `..."value":"123"...` or `..."value": 123...`.
fn parse_value(line: &[u8], key: &Finder<'_>) -> Option<u64> {
    let after_key = &line[key.find(line)? + key.needle().len()..];
    let after_colon = after_key.trim_ascii_start().strip_prefix(b":")?;
    let value = after_colon.trim_ascii_start();
    let digits = value.strip_prefix(b"\"").unwrap_or(value);
    let mut result: u64 = 0;
    let mut seen_digit = false;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        result = result.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        seen_digit = true;
    }
    seen_digit.then_some(result)
}
