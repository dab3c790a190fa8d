//! History entries as stored in a room's Redis list (`stratus:{ROOM}:history`, newest first):
//! built here by the command thread, pushed by the `WRITE` script as they are, read back here
//! for `/logs`.
//!
//! ```text
//! entry = TIMESTAMP_MS " " SEQ " " VERB "\n" field(USER) field(NAME) field(VALUE)
//! field = BYTE_LENGTH ":" BYTES
//! ```
//! `VERB` is Scratch's name (`set_var`, …); `SEQ` is the writing node's room sequence number
//! (node-local: it orders one node's entries of one millisecond, and lets the merge with the
//! entries still in memory recognise one of them read back). Length prefixes, as in the
//! channel's payload (`codec.rs`), make it binary-safe without escaping.

use std::sync::Arc;

use super::codec::{field, push_field};
use crate::engine::{HistoryEntry, Verb};

/// `entry` as stored in the list.
pub fn encode(entry: &HistoryEntry) -> Vec<u8> {
    let mut out = format!(
        "{} {} {}\n",
        entry.timestamp_ms,
        entry.seq,
        entry.verb.as_str()
    )
    .into_bytes();
    out.reserve(entry.user.len() + entry.name.len() + entry.value.len() + 24);
    push_field(&mut out, entry.user.as_bytes());
    push_field(&mut out, entry.name.as_bytes());
    push_field(&mut out, entry.value.as_bytes());
    out
}

/// An entry back from the list; `None` when it is not ours (it is then skipped).
pub fn decode(stored: &[u8]) -> Option<HistoryEntry> {
    let newline = stored.iter().position(|&b| b == b'\n')?;
    let (header, rest) = stored.split_at(newline);
    let mut rest = rest.get(1..).unwrap_or_default();
    let mut words = std::str::from_utf8(header).ok()?.split(' ');
    let timestamp_ms = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let verb = Verb::parse(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    let mut text = || -> Option<&str> { std::str::from_utf8(field(&mut rest).ok()?).ok() };
    let user: Arc<str> = Arc::from(text()?);
    let name = text()?.to_owned();
    let value = text()?.to_owned();
    if !rest.is_empty() {
        return None;
    }
    Some(HistoryEntry {
        user,
        verb,
        name,
        value,
        timestamp_ms,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HistoryEntry {
        HistoryEntry {
            user: Arc::from("a:b\n1:"),
            verb: Verb::Rename,
            name: "☁ x 3:".into(),
            value: "line\nnew 12:".into(),
            timestamp_ms: 1_733_400_000_000,
            seq: 42,
        }
    }

    #[test]
    fn entries_round_trip_whatever_their_strings_hold() {
        let entry = sample();
        let stored = encode(&entry);
        assert!(stored.starts_with(b"1733400000000 42 rename_var\n"));
        assert_eq!(decode(&stored), Some(entry));
        for verb in [Verb::Set, Verb::Create, Verb::Delete] {
            let entry = HistoryEntry { verb, ..sample() };
            assert_eq!(decode(&encode(&entry)), Some(entry));
        }
    }

    #[test]
    fn cut_or_hostile_entries_are_refused() {
        let stored = encode(&sample());
        for end in 0..stored.len() {
            assert_eq!(decode(&stored[..end]), None, "cut at {end}");
        }
        let mut longer = stored.clone();
        longer.push(b'x');
        assert_eq!(decode(&longer), None);
        for hostile in [
            &b"1 2 set\n0:0:0:"[..],
            b"x 2 set_var\n0:0:0:",
            b"1 2 set_var extra\n0:0:0:",
            b"1 2 set_var\n0:0:99999999999999999999999:",
            b"1 2 set_var\n0:0:1:\xff",
        ] {
            assert_eq!(decode(hostile), None, "{hostile:?}");
        }
        assert!(decode(b"1 2 set_var\n0:0:0:").is_some());
    }
}
