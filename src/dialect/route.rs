//! Which dialect an upgrade asked for, decided from the request path before any message.

use crate::policy::MAX_ROOM_ID_CHARS;

/// What the upgrade path says about the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Any other path: the first message decides (Scratch or legacy `kind`).
    Sniff,
    /// `/ws/world/<room>`: the array-RPC dialect, in this room (percent-decoded).
    World(String),
    /// `/ws/world/<something>` whose room is not a valid id (bad percent-encoding, not UTF-8,
    /// empty or too long); the dialect tells the client and closes.
    InvalidWorld,
    /// `/ws/multistudio`: the MultiStudio dialect, whose HELLO is due within 5 s.
    Studio,
}

const WORLD_PREFIX: &str = "/ws/world/";

impl Route {
    /// The route of a request target such as `/ws/world/42?x=1`.
    pub fn from_path(target: &str) -> Route {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        if path == "/ws/multistudio" {
            return Route::Studio;
        }
        let Some(encoded) = path.strip_prefix(WORLD_PREFIX) else {
            return Route::Sniff;
        };
        match percent_decode(encoded) {
            Some(room) if !room.is_empty() && room.chars().nth(MAX_ROOM_ID_CHARS).is_none() => {
                Route::World(room)
            }
            _ => Route::InvalidWorld,
        }
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let high = hex_digit(*bytes.get(i + 1)?)?;
            let low = hex_digit(*bytes.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_paths_name_a_percent_decoded_room() {
        assert_eq!(Route::from_path("/"), Route::Sniff);
        assert_eq!(Route::from_path("/ws/world"), Route::Sniff);
        assert_eq!(Route::from_path("/ws/multistudio?v=1"), Route::Studio);
        assert_eq!(Route::from_path("/ws/world/42"), Route::World("42".into()));
        assert_eq!(
            Route::from_path("/ws/world/a%20b%E2%98%81?token=1"),
            Route::World("a b☁".into())
        );
        assert_eq!(Route::from_path("/ws/world/"), Route::InvalidWorld);
        assert_eq!(Route::from_path("/ws/world/%zz"), Route::InvalidWorld);
        assert_eq!(Route::from_path("/ws/world/%2"), Route::InvalidWorld);
        assert_eq!(Route::from_path("/ws/world/%+1"), Route::InvalidWorld);
        assert_eq!(Route::from_path("/ws/world/%ff"), Route::InvalidWorld);
        let long = format!("/ws/world/{}", "x".repeat(MAX_ROOM_ID_CHARS + 1));
        assert_eq!(Route::from_path(&long), Route::InvalidWorld);
    }
}
