//! History entries as bytes, one encoding for both durable backends: an entry of a room's Redis
//! list (`stratus:{ROOM}:history`, newest first) is one encoded entry; a chunk of the SQLite
//! store (one row per room per batch, `store/db.rs`) is its entries encoded one after the
//! other, newest first.
//!
//! ```text
//! entry = TIMESTAMP_MS " " SEQ " " VERB "\n" field(USER) field(NAME) field(VALUE)
//! field = BYTE_LENGTH ":" BYTES
//! ```
//! `VERB` is Scratch's name (`set_var`, …); `SEQ` is the room's sequence number of the entry
//! (in a cluster the writing node's: it orders one node's entries of one millisecond, and lets
//! the merge with the entries still in memory recognise one of them read back). Length
//! prefixes, as in the cluster channel's payload, make it binary-safe without escaping and
//! self-delimiting, so entries can follow each other. Reads walk entries as borrowed views and
//! copy only those they keep.

use std::io::Write;
use std::sync::Arc;

use super::history::{HistoryEntry, Verb};

/// Appends `entry`, encoded, to `out` (no allocation beyond `out` growing).
pub fn encode_into(out: &mut Vec<u8>, entry: &HistoryEntry) {
    // Writing to a Vec cannot fail.
    let _ = writeln!(
        out,
        "{} {} {}",
        entry.timestamp_ms,
        entry.seq,
        entry.verb.as_str()
    );
    push_field(out, entry.user.as_bytes());
    push_field(out, entry.name.as_bytes());
    push_field(out, entry.value.as_bytes());
}

/// `entry` encoded alone (a Redis list element).
pub fn encode(entry: &HistoryEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(entry.user.len() + entry.name.len() + entry.value.len() + 48);
    encode_into(&mut out, entry);
    out
}

/// An encoded entry, borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub timestamp_ms: u64,
    pub seq: u64,
    pub verb: Verb,
    pub user: &'a str,
    pub name: &'a str,
    pub value: &'a str,
}

impl EntryView<'_> {
    /// The entry, copied out.
    pub fn to_entry(&self) -> HistoryEntry {
        HistoryEntry {
            user: Arc::from(self.user),
            verb: self.verb,
            name: self.name.to_owned(),
            value: self.value.to_owned(),
            timestamp_ms: self.timestamp_ms,
            seq: self.seq,
        }
    }
}

/// The entry at the start of `rest`, which then starts after it; `None` when the bytes there
/// are not an entry of ours.
pub fn next_view<'a>(rest: &mut &'a [u8]) -> Option<EntryView<'a>> {
    let newline = rest.iter().take(64).position(|&b| b == b'\n')?;
    let (header, after) = rest.split_at(newline);
    let mut body = after.get(1..).unwrap_or_default();
    let mut words = std::str::from_utf8(header).ok()?.split(' ');
    let timestamp_ms = words.next()?.parse().ok()?;
    let seq = words.next()?.parse().ok()?;
    let verb = Verb::parse(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    let mut text = || -> Option<&'a str> { std::str::from_utf8(field(&mut body).ok()?).ok() };
    let user = text()?;
    let name = text()?;
    let value = text()?;
    *rest = body;
    Some(EntryView {
        timestamp_ms,
        seq,
        verb,
        user,
        name,
        value,
    })
}

/// The entries of `chunk` in their order, up to the first bytes that are not an entry.
pub fn views(mut chunk: &[u8]) -> impl Iterator<Item = EntryView<'_>> {
    std::iter::from_fn(move || next_view(&mut chunk))
}

/// One entry stored alone (a Redis list element) back; `None` when it is not ours (it is then
/// skipped).
pub fn decode(stored: &[u8]) -> Option<HistoryEntry> {
    let mut rest = stored;
    let view = next_view(&mut rest)?;
    rest.is_empty().then(|| view.to_entry())
}

/// Reads one `LEN:BYTES` field from the front of `rest`.
pub fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let colon = rest
        .iter()
        .take(20)
        .position(|&b| b == b':')
        .ok_or("field without length")?;
    let (len, body) = rest.split_at(colon);
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|l| l.parse().ok())
        .ok_or("bad field length")?;
    let body = body.get(1..).unwrap_or_default();
    let value = body.get(..len).ok_or("field cut short")?;
    *rest = body.get(len..).unwrap_or_default();
    Ok(value)
}

/// Appends one `LEN:BYTES` field to `out`.
pub fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}:", bytes.len());
    out.extend_from_slice(bytes);
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

    #[test]
    fn a_chunk_is_its_entries_one_after_the_other_up_to_the_first_bad_bytes() {
        let newer = HistoryEntry {
            seq: 43,
            value: String::new(),
            verb: Verb::Delete,
            ..sample()
        };
        let mut chunk = Vec::new();
        encode_into(&mut chunk, &newer);
        encode_into(&mut chunk, &sample());
        let read: Vec<HistoryEntry> = views(&chunk).map(|v| v.to_entry()).collect();
        assert_eq!(read, [newer.clone(), sample()]);
        chunk.extend_from_slice(b"garbage");
        encode_into(&mut chunk, &sample());
        assert_eq!(views(&chunk).count(), 2, "reading stops at bytes not ours");
    }
}
