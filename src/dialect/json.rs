//! JSON in and out: zero-copy parsing with reused simd-json buffers, and string escaping.
//!
//! One [`JsonParser`] serves the whole event loop: its input copy, its simd-json buffers and its
//! tape are reused for every message, so parsing a message allocates nothing once they have
//! grown to the largest message seen.

use std::fmt::{self, Write as _};

use simd_json::prelude::*;
use simd_json::tape::{Tape, Value};
use simd_json::{Buffers, ValueType};

use crate::engine::ValueRef;

/// Above this, the parser's buffers are given back after the message instead of reused.
const KEEP_INPUT_BYTES: usize = 64 * 1024;

pub struct JsonParser {
    input: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

impl Default for JsonParser {
    fn default() -> Self {
        JsonParser {
            input: Vec::new(),
            buffers: Buffers::new(512),
            tape: Some(Tape::null().reset()),
        }
    }
}

/// The message could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidJson {
    /// Not JSON at all.
    Syntax,
    /// JSON whose number is outside what a double can hold (`1e400`): JavaScript would read it
    /// as Infinity, which no cloud variable accepts, so the dialects treat it as an invalid
    /// value rather than a protocol violation.
    NumberOutOfRange,
}

impl JsonParser {
    /// Parses `text` and hands the document to `handle`, whose borrowed strings point into the
    /// parser's own copy of the input.
    pub fn parse<R>(
        &mut self,
        text: &[u8],
        handle: impl FnOnce(Value<'_, '_>) -> R,
    ) -> Result<R, InvalidJson> {
        self.input.clear();
        self.input.extend_from_slice(text);
        let mut tape: Tape<'_> = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = match simd_json::fill_tape(&mut self.input, &mut self.buffers, &mut tape) {
            Ok(()) => Ok(handle(tape.as_value())),
            Err(e) => Err(match e.error() {
                simd_json::ErrorType::InvalidNumber | simd_json::ErrorType::InvalidExponent => {
                    InvalidJson::NumberOutOfRange
                }
                _ => InvalidJson::Syntax,
            }),
        };
        self.tape = Some(tape.reset());
        // One huge message should not pin a huge input copy, nor simd-json buffers and a tape
        // sized for it (about 15 times its size), for the rest of the run.
        if self.input.capacity() > KEEP_INPUT_BYTES {
            *self = JsonParser::default();
        }
        result
    }
}

/// The string at `key`, borrowed from the input (not from the tape, so it outlives the lookup).
pub fn get_str<'v>(doc: Value<'_, 'v>, key: &str) -> Option<&'v str> {
    doc.get(key)?.into_string()
}

/// A number written as JSON text in a stack buffer, so numbers need no allocation.
pub struct NumberText {
    bytes: [u8; 40],
    len: usize,
}

impl NumberText {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.bytes.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

impl fmt::Write for NumberText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a JSON number the way JavaScript would read it back: integers without a fraction,
/// other values in Rust's shortest round-trip form. `None` for non-finite numbers.
pub fn number_text(value: Value<'_, '_>) -> Option<NumberText> {
    let mut text = NumberText {
        bytes: [0; 40],
        len: 0,
    };
    let written = match value.value_type() {
        ValueType::I64 => write!(text, "{}", value.as_i64()?),
        ValueType::U64 => write!(text, "{}", value.as_u64()?),
        ValueType::F64 => {
            let float = value.as_f64()?;
            if !float.is_finite() {
                return None;
            }
            if float.fract() == 0.0 && float.abs() < 1e15 {
                write!(text, "{}", float as i64)
            } else {
                write!(text, "{float:?}")
            }
        }
        _ => return None,
    };
    written.ok()?;
    Some(text)
}

/// Reads a value that may be a JSON string or number. `number` is the caller's buffer for a
/// number's text. `None` for any other JSON type.
pub fn value_ref<'r, 'v: 'r>(
    value: Value<'_, 'v>,
    number: &'r mut Option<NumberText>,
) -> Option<ValueRef<'r>> {
    if let Some(text) = value.into_string() {
        return Some(ValueRef::Text(text));
    }
    *number = Some(number_text(value)?);
    number.as_ref().map(|n| ValueRef::Number(n.as_str()))
}

/// Appends a value with its JSON type: a number as its digits, text as a string literal.
pub fn push_value(out: &mut String, value: ValueRef<'_>) {
    match value {
        ValueRef::Number(text) => out.push_str(text),
        ValueRef::Text(text) => push_string(out, text),
    }
}

/// Appends `{"name":value,...}` for the given variables.
pub fn push_variables<'a>(
    out: &mut String,
    variables: impl Iterator<Item = (&'a str, ValueRef<'a>)>,
) {
    out.push('{');
    for (i, (name, value)) in variables.enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(out, name);
        out.push(':');
        push_value(out, value);
    }
    out.push('}');
}

/// Deepest nesting [`push_json`] writes back; client-chosen values (ping payloads, request ids)
/// deeper than this are refused rather than recursed into.
pub const MAX_ECHO_DEPTH: usize = 32;

/// Writes a parsed value back as JSON, for echoing what a client sent. `None` (with `out`
/// unchanged) when it nests deeper than [`MAX_ECHO_DEPTH`].
pub fn push_json(out: &mut String, value: Value<'_, '_>) -> Option<()> {
    let start = out.len();
    let written = write_json(out, value, MAX_ECHO_DEPTH);
    if written.is_none() {
        out.truncate(start);
    }
    written
}

fn write_json(out: &mut String, value: Value<'_, '_>, depth: usize) -> Option<()> {
    let depth = depth.checked_sub(1)?;
    match value.value_type() {
        ValueType::Null => out.push_str("null"),
        ValueType::Bool => out.push_str(if value.as_bool()? { "true" } else { "false" }),
        ValueType::I64 | ValueType::U64 | ValueType::F64 => {
            out.push_str(number_text(value)?.as_str())
        }
        ValueType::String => push_string(out, value.into_string()?),
        ValueType::Array => {
            out.push('[');
            for (i, item) in value.as_array()?.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, depth)?;
            }
            out.push(']');
        }
        ValueType::Object => {
            out.push('{');
            for (i, (key, item)) in value.as_object()?.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(out, key);
                out.push(':');
                write_json(out, item, depth)?;
            }
            out.push('}');
        }
        _ => return None,
    }
    Some(())
}

/// Appends `text` as a JSON string literal.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    // Names and numeric values never need escaping; check that in one tight pass first.
    if !text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        out.push_str(text);
        out.push('"');
        return;
    }
    let mut clean_from = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(text.get(clean_from..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        clean_from = i + 1;
    }
    out.push_str(text.get(clean_from..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(json: &str) -> Option<String> {
        let mut parser = JsonParser::default();
        parser
            .parse(json.as_bytes(), |v| {
                number_text(v).map(|n| n.as_str().to_owned())
            })
            .ok()
            .flatten()
    }

    #[test]
    fn numbers_keep_a_javascript_shape() {
        assert_eq!(number("1000").as_deref(), Some("1000"));
        assert_eq!(number("-5").as_deref(), Some("-5"));
        assert_eq!(number("1.5").as_deref(), Some("1.5"));
        assert_eq!(number("2.0").as_deref(), Some("2"));
        assert_eq!(number("1e300").as_deref(), Some("1e300"));
        assert_eq!(
            number("18446744073709551615").as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(number("\"1\""), None);
        assert_eq!(number("true"), None);
    }

    #[test]
    fn escaping_round_trips_through_a_json_parser() {
        for text in [
            "plain",
            "quo\"te",
            "back\\slash",
            "new\nline",
            "\u{1}ctl",
            "☁ ünï",
        ] {
            let mut out = String::new();
            push_string(&mut out, text);
            let back: String = serde_json::from_str(&out).expect("valid JSON");
            assert_eq!(back, text);
        }
    }

    fn echo(json: &str) -> Option<String> {
        let mut parser = JsonParser::default();
        parser
            .parse(json.as_bytes(), |v| {
                let mut out = String::new();
                push_json(&mut out, v).map(|()| out)
            })
            .ok()
            .flatten()
    }

    #[test]
    fn values_are_echoed_as_equal_json() {
        for text in [
            "1501676765",
            "-1.5",
            "null",
            "true",
            r#""a\"b""#,
            r#"[1,"x",{"k":[false,null]}]"#,
            "{}",
            "[]",
        ] {
            let back = echo(text).expect("echoed");
            let original: serde_json::Value = serde_json::from_str(text).expect("valid");
            let echoed: serde_json::Value = serde_json::from_str(&back).expect("valid");
            assert_eq!(original, echoed, "{text}");
        }
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert_eq!(echo(&deep), None, "too deep to echo");
    }

    #[test]
    fn the_parser_is_reusable_after_errors() {
        let mut parser = JsonParser::default();
        assert_eq!(parser.parse(b"{", |_| ()), Err(InvalidJson::Syntax));
        assert_eq!(
            parser.parse(br#"{"value":1e400}"#, |_| ()),
            Err(InvalidJson::NumberOutOfRange)
        );
        let name = parser
            .parse(br#"{"name":"\u2601 a"}"#, |v| {
                get_str(v, "name").map(str::to_owned)
            })
            .expect("valid");
        assert_eq!(name.as_deref(), Some("☁ a"));
    }
}
