//! The operators of the admin API and their bearer tokens (`--admin-tokens FILE`).
//!
//! The file has one operator a line, `name token`; blank lines and `#` comments are skipped.
//! A token is 32 to 256 visible ASCII characters: a shorter one is guessable, so the file is
//! refused (at start: the server does not start; at SIGHUP: the operators in force stay),
//! naming the line but never echoing a token. A presented token is compared with every
//! operator's in constant time (`subtle`), always all of them, so neither the time an answer
//! takes nor which comparison stopped tells an attacker how close a guess was or whose token it
//! nearly was.

use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Longest token accepted; a presented token is compared within this many bytes.
pub const MAX_TOKEN_CHARS: usize = 256;
/// Longest operator name (it appears in audit lines and history as `@<name>`).
pub const MAX_NAME_CHARS: usize = 64;
/// Most operators in one file.
pub const MAX_OPERATORS: usize = 1000;

/// The operators, each with a token, in the file's order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminTokens {
    operators: Vec<(String, [u8; MAX_TOKEN_CHARS], usize)>,
}

/// Tokens never appear in debug output (a log line of a configuration, a panic message).
impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.names().collect();
        write!(f, "AdminTokens {{ operators: {names:?} }}")
    }
}

impl AdminTokens {
    /// Reads a tokens file's text; the error names the line at fault and what is wrong with it.
    pub fn parse(text: &str) -> Result<AdminTokens, String> {
        let mut operators: Vec<(String, [u8; MAX_TOKEN_CHARS], usize)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_ascii_whitespace();
            let (Some(name), Some(token), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!(
                    "line {number}: expected `name token` (two fields separated by spaces)"
                ));
            };
            if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(format!(
                    "line {number}: the operator name must be 1 to {MAX_NAME_CHARS} printable characters"
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {number}: operator {name:?}: the token must be visible ASCII characters"
                ));
            }
            if token.len() < MIN_TOKEN_CHARS || token.len() > MAX_TOKEN_CHARS {
                return Err(format!(
                    "line {number}: operator {name:?}: the token has {} characters; it must have {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS}",
                    token.len()
                ));
            }
            if operators.iter().any(|(other, ..)| other == name) {
                return Err(format!("line {number}: operator {name:?} is named twice"));
            }
            let mut padded = [0u8; MAX_TOKEN_CHARS];
            padded
                .iter_mut()
                .zip(token.bytes())
                .for_each(|(slot, byte)| *slot = byte);
            if operators
                .iter()
                .any(|(_, other, length)| *other == padded && *length == token.len())
            {
                return Err(format!(
                    "line {number}: operator {name:?} has another operator's token"
                ));
            }
            if operators.len() == MAX_OPERATORS {
                return Err(format!(
                    "line {number}: more than {MAX_OPERATORS} operators"
                ));
            }
            operators.push((name.to_owned(), padded, token.len()));
        }
        Ok(AdminTokens { operators })
    }

    /// Reads a tokens file.
    pub fn load(path: &std::path::Path) -> Result<AdminTokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        AdminTokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The operator whose token `presented` is, comparing it with every token in constant
    /// time (the work does not depend on where, or whether, it matches).
    pub fn operator(&self, presented: &[u8]) -> Option<&str> {
        let mut candidate = [0u8; MAX_TOKEN_CHARS];
        candidate
            .iter_mut()
            .zip(presented)
            .for_each(|(slot, byte)| *slot = *byte);
        let presented_length = presented.len() as u64;
        // 0 = none; otherwise the index of the operator plus one.
        let mut found = 0u64;
        for (index, (_, token, length)) in self.operators.iter().enumerate() {
            let same = candidate.ct_eq(token) & presented_length.ct_eq(&(*length as u64));
            found = u64::conditional_select(&found, &(index as u64 + 1), same);
        }
        let index = usize::try_from(found).ok()?.checked_sub(1)?;
        self.operators.get(index).map(|(name, ..)| name.as_str())
    }

    /// The operators' names, in the file's order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.operators.iter().map(|(name, ..)| name.as_str())
    }

    pub fn len(&self) -> usize {
        self.operators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operators.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice-token-0123456789abcdef0123456789";
    const BOB: &str = "bob-token-0123456789abcdef0123456789xyz";

    fn error(text: &str) -> String {
        match AdminTokens::parse(text) {
            Err(e) => e,
            Ok(ok) => panic!("{text:?} was accepted: {ok:?}"),
        }
    }

    #[test]
    fn operators_are_found_by_their_token_only() {
        let tokens = AdminTokens::parse(&format!("# operators\n\nalice {ALICE}\n  bob\t{BOB}  \n"))
            .expect("valid");
        assert_eq!(tokens.names().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(tokens.operator(ALICE.as_bytes()), Some("alice"));
        assert_eq!(tokens.operator(BOB.as_bytes()), Some("bob"));
        assert_eq!(tokens.operator(b""), None);
        assert_eq!(tokens.operator(&ALICE.as_bytes()[1..]), None, "a suffix");
        assert_eq!(
            tokens.operator(&ALICE.as_bytes()[..ALICE.len() - 1]),
            None,
            "a prefix"
        );
        assert_eq!(tokens.operator(format!("{ALICE}x").as_bytes()), None);
        assert_eq!(
            tokens.operator(format!("{ALICE}\0").as_bytes()),
            None,
            "padding is not the token"
        );
        let long = "a".repeat(10_000);
        assert_eq!(tokens.operator(long.as_bytes()), None);
        assert_eq!(AdminTokens::default().operator(ALICE.as_bytes()), None);
        assert!(
            !format!("{tokens:?}").contains(ALICE),
            "tokens are not in debug output"
        );
    }

    #[test]
    fn a_bad_line_is_named_without_its_token() {
        let short = "short-token-31-characters-long!";
        assert_eq!(short.len(), 31);
        let message = error(&format!("alice {ALICE}\nbob {short}\n"));
        assert!(message.starts_with("line 2: operator \"bob\""), "{message}");
        assert!(message.contains("31 characters"), "{message}");
        assert!(!message.contains(short), "{message}");
        assert!(AdminTokens::parse(&format!("bob {}", "x".repeat(32))).is_ok());
        assert!(error(&format!("bob {}", "x".repeat(257))).starts_with("line 1:"));
        assert!(error("alice\n").starts_with("line 1: expected"));
        assert!(error(&format!("alice {ALICE} extra\n")).starts_with("line 1: expected"));
        assert!(error(&format!("\nalice {ALICE}\nalice {BOB}")).starts_with("line 3:"));
        assert!(error(&format!("alice {ALICE}\nbob {ALICE}")).contains("another operator"));
        assert!(error(&format!("alice {}\u{e9}", "x".repeat(40))).contains("visible ASCII"));
        assert!(error(&format!("{} {ALICE}", "n".repeat(65))).contains("operator name"));
        assert!(AdminTokens::parse("").expect("empty").is_empty());
    }
}
