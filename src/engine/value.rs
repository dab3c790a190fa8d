//! Variable names and values: what the room engine accepts, and how a value is kept.
//!
//! Both dialects hand the engine borrowed text straight out of the parser; validation here is
//! the single rule set for every protocol. A value keeps its JSON type (number or string) so a
//! Scratch client gets back exactly the type that was set.

use super::rules::Rule;

/// The prefixes Scratch puts in front of every cloud variable name.
const NAME_PREFIXES: [&str; 2] = ["☁ ", ":cloud: "];

/// Longest accepted variable name, in characters.
pub const MAX_NAME_CHARS: usize = 1024;

/// Longest accepted string value, in characters.
pub const MAX_VALUE_CHARS: usize = 100_000;

/// A value as it arrives from a client, borrowed from the parser's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// A JSON number, already written as its decimal text.
    Number(&'a str),
    /// A JSON string, unescaped.
    Text(&'a str),
}

impl<'a> ValueRef<'a> {
    /// The value's text: a number's decimal digits or the string itself.
    pub fn text(&self) -> &'a str {
        match self {
            ValueRef::Number(text) | ValueRef::Text(text) => text,
        }
    }

    pub fn is_number(&self) -> bool {
        matches!(self, ValueRef::Number(_))
    }
}

/// A stored value. The text buffer is reused when a variable changes, so a steady stream of sets
/// does not allocate once the buffer has grown to the values' size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredValue {
    text: String,
    is_number: bool,
}

impl StoredValue {
    pub fn new(value: ValueRef<'_>) -> Self {
        StoredValue {
            text: value.text().to_owned(),
            is_number: value.is_number(),
        }
    }

    pub fn replace(&mut self, value: ValueRef<'_>) {
        self.text.clear();
        self.text.push_str(value.text());
        self.is_number = value.is_number();
        // A single huge value should not pin its buffer forever once values are small again.
        if self.text.capacity() > 4096 && self.text.len() < self.text.capacity() / 4 {
            self.text.shrink_to(self.text.len().max(64));
        }
    }

    pub fn as_ref(&self) -> ValueRef<'_> {
        if self.is_number {
            ValueRef::Number(&self.text)
        } else {
            ValueRef::Text(&self.text)
        }
    }

    /// Bytes held on the heap, for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
    }
}

/// Why a set was not applied. These are ignored by the protocol (the connection stays open),
/// but counted and logged at debug level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    InvalidName,
    InvalidValue,
    TooManyVariables,
    /// A rule of the project refused it (see `rules.rs`); the setter is told which.
    Rule(Rule),
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::InvalidName => "invalid variable name",
            Rejection::InvalidValue => "invalid value",
            Rejection::TooManyVariables => "too many variables in room",
            Rejection::Rule(_) => "refused by a rule of the project",
        }
    }
}

/// A cloud variable name: a Scratch cloud prefix followed by at least one character, at most
/// [`MAX_NAME_CHARS`] characters in all.
pub fn is_valid_name(name: &str) -> bool {
    let has_prefix = NAME_PREFIXES
        .iter()
        .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix));
    has_prefix && !exceeds_chars(name, MAX_NAME_CHARS)
}

/// A finite number is always valid. A string must look like a number (optional `-`, digits with
/// at most one `.`, at least one digit unless the string is empty) unless `allow_non_numeric`,
/// and be at most [`MAX_VALUE_CHARS`] characters.
pub fn is_valid_value(value: ValueRef<'_>, allow_non_numeric: bool) -> bool {
    is_valid_value_within(value, allow_non_numeric, MAX_VALUE_CHARS)
}

/// [`is_valid_value`] with a string at most `max_chars` characters long (a project's
/// `max-value-length`).
pub fn is_valid_value_within(
    value: ValueRef<'_>,
    allow_non_numeric: bool,
    max_chars: usize,
) -> bool {
    match value {
        ValueRef::Number(_) => true,
        ValueRef::Text(text) => {
            !exceeds_chars(text, max_chars) && (allow_non_numeric || is_numeric_text(text))
        }
    }
}

fn exceeds_chars(text: &str, max: usize) -> bool {
    // Bytes bound characters from above, so most strings never need counting.
    text.len() > max && text.chars().nth(max).is_some()
}

fn is_numeric_text(text: &str) -> bool {
    let digits_and_dot = text.strip_prefix('-').unwrap_or(text);
    if text.is_empty() {
        return true;
    }
    let mut seen_dot = false;
    let mut seen_digit = false;
    for byte in digits_and_dot.bytes() {
        match byte {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => return false,
        }
    }
    seen_digit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_cloud_prefix_and_something_after_it() {
        assert!(is_valid_name("☁ score"));
        assert!(is_valid_name(":cloud: score"));
        assert!(!is_valid_name("☁ "));
        assert!(!is_valid_name(":cloud: "));
        assert!(!is_valid_name("score"));
        assert!(!is_valid_name("☁score"));
        assert!(!is_valid_name(""));
    }

    #[test]
    fn names_are_limited_in_characters_not_bytes() {
        let at_limit = format!("☁ {}", "☁".repeat(MAX_NAME_CHARS - 2));
        assert!(is_valid_name(&at_limit));
        let over = format!("☁ {}", "a".repeat(MAX_NAME_CHARS - 1));
        assert!(!is_valid_name(&over));
    }

    #[test]
    fn numeric_strings_follow_turbowarps_rules() {
        for ok in ["", "0", "-1", "4.", ".32", "-.5", "123.456", "00012"] {
            assert!(is_valid_value(ValueRef::Text(ok), false), "{ok:?}");
        }
        for bad in [
            ".", "-", "-.", "1e5", " 1", "1 ", "1.2.3", "--1", "abc", "1-", "+1",
        ] {
            assert!(!is_valid_value(ValueRef::Text(bad), false), "{bad:?}");
        }
    }

    #[test]
    fn non_numeric_strings_pass_when_allowed() {
        assert!(is_valid_value(ValueRef::Text("hello"), true));
        assert!(is_valid_value(ValueRef::Number("1e21"), false));
    }

    #[test]
    fn long_values_are_rejected() {
        let at_limit = "1".repeat(MAX_VALUE_CHARS);
        assert!(is_valid_value(ValueRef::Text(&at_limit), false));
        let over = "1".repeat(MAX_VALUE_CHARS + 1);
        assert!(!is_valid_value(ValueRef::Text(&over), false));
        assert!(!is_valid_value(ValueRef::Text(&over), true));
        assert!(is_valid_value_within(ValueRef::Text("☁☁☁"), true, 3));
        assert!(!is_valid_value_within(ValueRef::Text("1234"), true, 3));
        assert!(is_valid_value_within(ValueRef::Number("1234"), true, 3));
    }

    #[test]
    fn stored_values_keep_their_type() {
        let mut stored = StoredValue::new(ValueRef::Number("5"));
        assert_eq!(stored.as_ref(), ValueRef::Number("5"));
        stored.replace(ValueRef::Text("6"));
        assert_eq!(stored.as_ref(), ValueRef::Text("6"));
    }
}
