//! A fixed-size log-linear latency histogram, HDR-style: exact below 128 µs, then 64
//! buckets per power of two (under 1.6 % relative error). Recording is an index computation
//! and an increment; nothing is allocated after construction.

const SUB_BITS: u32 = 7;
const LINEAR: u64 = 1 << SUB_BITS;
const HALF: usize = 1 << (SUB_BITS - 1);
/// Enough buckets for any u64.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * HALF + HALF;

pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, value: u64) {
        self.counts[index_of(value)] += 1;
        self.total += 1;
        self.max = self.max.max(value);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), as the upper edge of its bucket, never above the
    /// largest recorded value. None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper_edge(index).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[inline]
fn index_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb + 1 - SUB_BITS;
    // `top` keeps the SUB_BITS most significant bits, so it lies in [HALF, 2 * HALF).
    let top = (value >> shift) as usize;
    shift as usize * HALF + top
}

fn upper_edge(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let shift = index / HALF - 1;
    let top = (index % HALF + HALF) as u64;
    (((top + 1) as u128) << shift)
        .saturating_sub(1)
        .min(u64::MAX as u128) as u64
}
