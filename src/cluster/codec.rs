//! The payload published on a room's channel for every batch (written by the Lua script in
//! `scripts.rs`, read here).
//!
//! ```text
//! payload = "S2 " VERSION " " LOCAL_VERSION " " REPLACE_ALL(0|1) " " COUNT "\n"
//!           field(NODE) COUNT × (field(NAME) field(STORED_VALUE) field(META))
//! field   = BYTE_LENGTH ":" BYTES
//! ```
//! Stored values are `n`/`t` followed by the text, as in the vars hash; `META` is the
//! variable's last writer as in the meta hash (`keys::encode_meta`: time, `:`, user), so other
//! nodes' rooms know who wrote last. Length prefixes make it binary-safe without escaping, and
//! cheap to build in Lua with `table.concat`.
//!
//! The earlier format, `S1`, had no `META` field; it is still read (writer unknown, time 0), so
//! that during a rolling upgrade the upgraded nodes follow the old ones. An old node cannot
//! read `S2`: it misses the upgraded nodes' batches until one of its own kind shows it the gap
//! (then it reads the room again), so a cluster is best upgraded all at once.

use super::keys::{apply_meta, decode_variable};
use super::RemoteBatch;
pub(super) use crate::engine::history_codec::field;
#[cfg(test)]
use crate::engine::history_codec::push_field;

/// Format tag: a node that sees another tag knows the payload is not for it.
pub const TAG: &str = "S2";
/// The format before variables carried their writer (no `META` field).
const TAG_WITHOUT_META: &str = "S1";

/// Decodes a payload received on `room`'s channel; the error says what is wrong.
pub fn decode(room: &str, payload: &[u8]) -> Result<RemoteBatch, &'static str> {
    let newline = payload
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let (header, rest) = payload.split_at(newline);
    let mut rest = rest.get(1..).unwrap_or_default();
    let header = std::str::from_utf8(header).map_err(|_| "header is not text")?;
    let mut words = header.split(' ');
    let with_meta = match words.next() {
        Some(TAG) => true,
        Some(TAG_WITHOUT_META) => false,
        _ => return Err("unknown format"),
    };
    let mut number = || -> Result<u64, &'static str> {
        words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or("bad header number")
    };
    let version = number()?;
    let local_version = number()?;
    let replace_all = match number()? {
        0 => false,
        1 => true,
        _ => return Err("bad replace flag"),
    };
    let count = number()?;
    let node = field(&mut rest)?;
    let node = std::str::from_utf8(node).map_err(|_| "node id is not text")?;
    // Each variable takes at least four bytes ("0:0:"): a lying count cannot reserve much.
    let mut variables = Vec::with_capacity((count as usize).min(rest.len() / 4));
    for _ in 0..count {
        let name = field(&mut rest)?;
        let stored = field(&mut rest)?;
        let mut variable = decode_variable(name, stored).ok_or("bad variable")?;
        if with_meta && !apply_meta(&mut variable, field(&mut rest)?) {
            return Err("bad writer");
        }
        variables.push(variable);
    }
    if !rest.is_empty() {
        return Err("trailing bytes");
    }
    Ok(RemoteBatch {
        room: room.into(),
        version,
        node: node.into(),
        local_version,
        replace_all,
        variables,
    })
}

/// What the script publishes, built in Rust (tests only: the script is the real writer).
#[cfg(test)]
pub fn encode(batch: &RemoteBatch) -> Vec<u8> {
    encode_tagged(batch, TAG)
}

/// `batch` in format `tag` (`S1` leaves the writers out).
#[cfg(test)]
fn encode_tagged(batch: &RemoteBatch, tag: &str) -> Vec<u8> {
    use super::keys::{encode_meta, encode_value};
    let mut out = format!(
        "{tag} {} {} {} {}\n",
        batch.version,
        batch.local_version,
        u8::from(batch.replace_all),
        batch.variables.len()
    )
    .into_bytes();
    push_field(&mut out, batch.node.as_bytes());
    for variable in &batch.variables {
        push_field(&mut out, variable.name.as_bytes());
        push_field(&mut out, encode_value(variable).as_bytes());
        if tag == TAG {
            push_field(&mut out, encode_meta(variable).as_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SavedVariable;

    fn sample() -> RemoteBatch {
        RemoteBatch {
            room: "r".into(),
            version: 7,
            node: "node:1".into(),
            local_version: 3,
            replace_all: true,
            variables: vec![
                SavedVariable {
                    user: "Alice: 3".into(),
                    changed_ms: 1_733_400_000_000,
                    name: "☁ a:b".into(),
                    value: "1e3".into(),
                    is_number: true,
                },
                SavedVariable {
                    user: Default::default(),
                    changed_ms: 0,
                    name: "t".into(),
                    value: "line\none 12:".into(),
                    is_number: false,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let batch = sample();
        assert_eq!(decode("r", &encode(&batch)), Ok(batch));
    }

    #[test]
    fn payloads_without_writers_are_still_read() {
        let batch = sample();
        let old = decode("r", &encode_tagged(&batch, "S1")).expect("S1 decodes");
        assert_eq!(old.variables.len(), 2);
        for (old, new) in old.variables.iter().zip(&batch.variables) {
            assert_eq!((&old.name, &old.value), (&new.name, &new.value));
            assert_eq!((&*old.user, old.changed_ms), ("", 0));
        }
    }

    #[test]
    fn a_bad_writer_is_refused() {
        assert!(decode("r", b"S2 1 0 0 1\n0:1:x2:n11:u").is_err());
        assert!(decode("r", b"S2 1 0 0 1\n0:1:x2:n1").is_err());
        assert!(decode("r", b"S2 1 0 0 1\n0:1:x2:n13:5:u").is_ok());
    }

    #[test]
    fn every_cut_is_refused() {
        let bytes = encode(&sample());
        for end in 0..bytes.len() {
            assert!(decode("r", &bytes[..end]).is_err(), "cut at {end}");
        }
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(decode("r", &longer).is_err());
    }

    #[test]
    fn hostile_headers_are_refused() {
        for payload in [
            &b"S3 1 0 0 0\n0:"[..],
            b"S1 1 0 2 0\n0:",
            b"S1 1 0 0 99999999999999\n0:",
            b"S1 x 0 0 0\n0:",
            b"S1 1 0 0 1\n0:99999999999999999999999:",
        ] {
            assert!(decode("r", payload).is_err());
        }
        assert!(decode("r", b"S1 1 0 0 0\n0:").is_ok());
    }
}
