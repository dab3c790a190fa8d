//! A request head as it arrives: each byte is looked at once, when it arrives, by a small state
//! machine that knows where an HTTP/1.1 head ends and which bytes each part of it may hold.
//!
//! A byte that no request could hold at its place (a control byte in a header, a non-token
//! byte in the method, a version other than `HTTP/1.0`/`HTTP/1.1`, a CR without LF) answers
//! `400` as soon as it arrives, instead of waiting for a line end that garbage never sends.
//! The rules are httparse's for requests with its default configuration, so nothing it would
//! accept is refused here; `httparse` then parses the whole head once, when the empty line
//! that ends it has arrived. So the work per connection is linear in the bytes received, however
//! they are split into reads.
//!
//! Bytes 0x80 to 0xFF are allowed where httparse allows them: in header values (obs-text:
//! browsers send UTF-8 there) and in the request target.

use super::http::{self, Head, Response, MAX_HEAD_BYTES};

/// The bytes of a head received so far, and where the scan of them stands.
#[derive(Debug, Default)]
pub struct HeadReader {
    bytes: Vec<u8>,
    state: State,
}

/// Where the scan stands: the part of the head the next byte belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    /// Before the request line; empty lines are skipped there.
    #[default]
    Start,
    /// A CR before the request line; LF must follow.
    StartLf,
    Method,
    /// Right after the method's space: the target has at least one byte.
    TargetStart,
    Target,
    /// This many bytes of `HTTP/1.` matched.
    Version(u8),
    /// After the version; the request line ends here.
    RequestLineEnd,
    /// A CR ending a line; LF must follow, then a header or the empty line.
    LineLf,
    /// The start of a header line, or of the empty line that ends the head.
    LineStart,
    Name,
    Value,
    /// A CR at the start of a line; LF must follow and ends the head.
    EndLf,
    /// The head ended; the bytes after it are not the head's.
    Ended,
    /// A byte no request may hold at its place arrived.
    Invalid,
}

const VERSION_PREFIX: &[u8] = b"HTTP/1.";

impl HeadReader {
    /// Takes the bytes of one read and says whether the head is complete, invalid, or needs
    /// more. Only the new bytes are scanned; the head is parsed once, when it has ended.
    pub fn receive(&mut self, new: &[u8]) -> Head {
        if matches!(self.state, State::Ended | State::Invalid) {
            return self.verdict();
        }
        let scanned = self.bytes.len();
        self.bytes.extend_from_slice(new);
        let room = MAX_HEAD_BYTES.saturating_sub(scanned);
        for &byte in new.iter().take(room) {
            self.state = step(self.state, byte);
            if matches!(self.state, State::Ended | State::Invalid) {
                break;
            }
        }
        self.verdict()
    }

    fn verdict(&self) -> Head {
        match self.state {
            State::Invalid => Head::Invalid(Response::BAD_REQUEST),
            State::Ended => match http::parse_head(&self.bytes) {
                // The scan follows httparse's rules, so a head it saw end is complete for
                // httparse too; should they ever disagree, the request is refused, not waited for.
                Head::Partial => Head::Invalid(Response::BAD_REQUEST),
                done => done,
            },
            _ if self.bytes.len() >= MAX_HEAD_BYTES => Head::Invalid(Response::TOO_LARGE),
            _ => Head::Partial,
        }
    }

    /// Bytes read after the head ended (a request body): kept after it, as the caller bounds.
    pub fn append(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Every byte received: the head, then whatever followed it in the same reads.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The state after `byte`.
fn step(state: State, byte: u8) -> State {
    use State::*;
    match (state, byte) {
        (Start, b'\r') => StartLf,
        (Start | StartLf, b'\n') => Start,
        (Start | Method, b) if is_token(b) => Method,
        (Method, b' ') => TargetStart,
        (TargetStart | Target, b) if is_target_byte(b) => Target,
        (Target, b' ') => Version(0),
        (Version(matched), b) if VERSION_PREFIX.get(usize::from(matched)) == Some(&b) => {
            Version(matched + 1)
        }
        (Version(7), b'0' | b'1') => RequestLineEnd,
        (RequestLineEnd | Value, b'\r') => LineLf,
        (RequestLineEnd | Value | LineLf, b'\n') => LineStart,
        (LineStart, b'\r') => EndLf,
        (LineStart | EndLf, b'\n') => Ended,
        (LineStart | Name, b) if is_token(b) => Name,
        (Name, b':') => Value,
        (Value, b) if is_value_byte(b) => Value,
        (Ended, _) => Ended,
        _ => Invalid,
    }
}

/// A method or header name byte (RFC 9110 `tchar`).
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A request target byte as httparse accepts it: visible ASCII, or 0x80 and above.
fn is_target_byte(byte: u8) -> bool {
    matches!(byte, b'!'..=0x7e | 0x80..=0xff)
}

/// A header value byte: HTAB, SP, visible ASCII, or obs-text (0x80 and above).
fn is_value_byte(byte: u8) -> bool {
    matches!(byte, b'\t' | b' '..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws/world/1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    /// Feeds `bytes` in pieces of `piece` bytes; the first answer that is not `Partial`, and
    /// after how many bytes.
    fn feed(bytes: &[u8], piece: usize) -> (Head, usize) {
        let mut reader = HeadReader::default();
        let mut given = 0;
        for chunk in bytes.chunks(piece.max(1)) {
            given += chunk.len();
            match reader.receive(chunk) {
                Head::Partial => {}
                done => return (done, given),
            }
        }
        (Head::Partial, given)
    }

    /// A small deterministic generator, so failures repeat.
    fn pseudo_random(seed: u64, length: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..length)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn a_valid_head_completes_however_it_is_split() {
        let mut with_data = UPGRADE.to_vec();
        with_data.extend_from_slice(b"\x81\x85more");
        for piece in [1, 2, 7, 64, with_data.len()] {
            match feed(&with_data, piece) {
                (Head::Complete(request, length), _) => {
                    assert_eq!(length, UPGRADE.len(), "piece {piece}");
                    assert!(request.websocket_key.is_some());
                }
                other => panic!("piece {piece}: {other:?}"),
            }
        }
    }

    #[test]
    fn obs_text_and_utf8_in_values_and_the_target_are_accepted() {
        let head = "GET /ws/world/caf\u{e9} HTTP/1.1\r\nHost: x\r\nUser-Agent: Br\u{f6}wser \u{2603}\r\n\r\n";
        let mut bytes = head.as_bytes().to_vec();
        // Latin-1 bytes (not UTF-8) in a value are obs-text too.
        let at = bytes.len() - 2;
        bytes.splice(at..at, b"X-Latin1: \xe9t\xe9 \xff\r\n".iter().copied());
        match feed(&bytes, 1).0 {
            Head::Complete(request, length) => {
                assert_eq!(length, bytes.len());
                assert_eq!(request.path, "/ws/world/caf\u{e9}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_byte_no_request_may_hold_is_refused_when_it_arrives() {
        // Each ends with the byte that cannot be.
        for bad in [
            &b"\x16"[..],                     // a TLS ClientHello on the plain port
            b"GET /\x00",                     // NUL in the target
            b"GET / HTTP/1.1\r\nHost: a\x7f", // DEL in a value
            b"GET / HTTP/1.1\r\nHost: a\x01", // a control byte in a value
            b"GET / HTTP/2",                  // not HTTP/1.x
            b"GET / HTTP/1.1\rX",             // CR without LF
            b"GET / HTTP/1.1\r\nHo ",         // a space in a header name
            b"GET / HTTP/1.1\r\n ",           // obsolete line folding
            b"G\xc3",                         // a non-token method
            b"GET  ",                         // an empty target
            b"GET / HTTP/1.1\r\n:",           // an empty header name
        ] {
            let (head, after) = feed(bad, 1);
            assert_eq!(head, Head::Invalid(Response::BAD_REQUEST), "{bad:?}");
            assert_eq!(
                after,
                bad.len(),
                "{bad:?}: refused at the byte that cannot be"
            );
        }
    }

    #[test]
    fn random_garbage_is_refused_within_a_few_bytes() {
        for seed in 1..200 {
            let garbage = pseudo_random(seed, 2_000);
            let (head, after) = feed(&garbage, 1);
            assert_eq!(head, Head::Invalid(Response::BAD_REQUEST), "seed {seed}");
            assert!(after < 100, "seed {seed}: refused after {after} bytes");
        }
    }

    #[test]
    fn a_head_that_never_ends_is_too_large_at_the_limit() {
        let mut endless = b"GET / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(3 * MAX_HEAD_BYTES, b'a');
        let (head, after) = feed(&endless, 100);
        assert_eq!(head, Head::Invalid(Response::TOO_LARGE));
        assert!((MAX_HEAD_BYTES..MAX_HEAD_BYTES + 100).contains(&after));
        // Empty lines before the request line are skipped, as httparse does, up to the limit.
        let (head, _) = feed(&vec![b'\n'; MAX_HEAD_BYTES], 1);
        assert_eq!(head, Head::Invalid(Response::TOO_LARGE));
    }

    /// The scan agrees with httparse on every prefix of heads near valid ones: it refuses
    /// what httparse refuses, and ends where httparse completes. The one thing it leaves to
    /// httparse is whether a target's bytes of 0x80 and above are UTF-8, decided at the end.
    #[test]
    fn the_scan_agrees_with_httparse() {
        let mut cases = vec![UPGRADE.to_vec(), b"\r\n\nGET / HTTP/1.0\n\n".to_vec()];
        for seed in 1..400u64 {
            // Change one byte of the valid head to another.
            let mut mutated = UPGRADE.to_vec();
            let noise = pseudo_random(seed, 2);
            let at = usize::from(noise[0]) % mutated.len();
            mutated[at] = noise[1];
            cases.push(mutated);
        }
        for case in cases {
            for cut in 0..=case.len() {
                let prefix = &case[..cut];
                let mut reader = HeadReader::default();
                let scanned = reader.receive(prefix);
                let parsed = http::parse_head(prefix);
                let same = match (&scanned, &parsed) {
                    (Head::Invalid(a), Head::Invalid(b)) => a.status == b.status,
                    (Head::Partial, Head::Invalid(_)) => prefix.iter().any(|&b| b >= 0x80),
                    _ => scanned == parsed,
                };
                assert!(same, "{prefix:?}: scan {scanned:?}, httparse {parsed:?}");
            }
        }
    }
}
