//! The payload published on a room's channel for every batch (written by the Lua script in
//! `scripts.rs`, read here).
//!
//! ```text
//! payload = "S1 " VERSION " " LOCAL_VERSION " " REPLACE_ALL(0|1) " " COUNT "\n"
//!           field(NODE) COUNT × (field(NAME) field(STORED_VALUE))
//! field   = BYTE_LENGTH ":" BYTES
//! ```
//! Stored values are `n`/`t` followed by the text, as in the vars hash. Length prefixes make
//! it binary-safe without escaping, and cheap to build in Lua with `table.concat`.

use super::keys::decode_variable;
use super::RemoteBatch;

/// Format tag: a node that sees another tag knows the payload is not for it.
pub const TAG: &str = "S1";

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
    if words.next() != Some(TAG) {
        return Err("unknown format");
    }
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
        variables.push(decode_variable(name, stored).ok_or("bad variable")?);
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

/// Takes one `LEN:BYTES` field off the front of `rest`.
fn field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
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

/// What the script publishes, built in Rust (tests only: the script is the real writer).
#[cfg(test)]
pub fn encode(batch: &RemoteBatch) -> Vec<u8> {
    use super::keys::encode_value;
    let mut out = format!(
        "{TAG} {} {} {} {}\n",
        batch.version,
        batch.local_version,
        u8::from(batch.replace_all),
        batch.variables.len()
    )
    .into_bytes();
    let mut push = |bytes: &[u8]| {
        out.extend_from_slice(format!("{}:", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
    };
    push(batch.node.as_bytes());
    for variable in &batch.variables {
        push(variable.name.as_bytes());
        push(encode_value(variable).as_bytes());
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
                    user: Default::default(),
                    changed_ms: 0,
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
            &b"S2 1 0 0 0\n0:"[..],
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
