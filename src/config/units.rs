//! Values an operator types the way they think: sizes with units (`2MiB`), durations with
//! units (`10s`, `90d`), and plain numbers, which mean bytes or seconds.

use std::time::Duration;

/// A duration: a plain number of seconds (`1.5`) or a number with a unit (`500ms`, `2s`,
/// `10m`, `90d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (try 10s, 5m, 90d)"))
}

/// Whole seconds, given as a plain number or a duration with a unit (`30`, `30s`, `1h`).
pub fn parse_seconds(text: &str) -> Result<u64, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 {
        return Err(format!("{text:?}: give whole seconds"));
    }
    Ok(duration.as_secs())
}

/// A number of bytes: plain (`1048576`) or with a unit (`512KiB`, `1MiB`, `1MB`, `2 GiB`).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bytes = parse_bytes(text)?;
    if bytes.fract() != 0.0 || bytes > usize::MAX as f64 {
        return Err(format!("{text:?}: not a whole number of bytes"));
    }
    Ok(bytes as usize)
}

/// Bytes (per second, for rates), possibly fractional: `2MiB`, `0.5KiB`, `4096`.
pub fn parse_bytes(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{text:?}: not a size (try 1048576, 512KiB, 1MiB)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit (B, KB, KiB, MB, MiB, GB, GiB)"
            ))
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!("{text:?}: not a size"));
    }
    Ok(bytes)
}

/// A count that must be at least 1.
pub fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// `--history`'s upper bound: one room's history is read, trimmed and held per room, so its
/// cap is kept within what one save and one page can move cheaply.
pub const MAX_HISTORY: usize = 100_000;

/// `--history`: entries kept per room, 0 to [`MAX_HISTORY`].
pub fn parse_history(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n <= MAX_HISTORY => Ok(n),
        Ok(n) => Err(format!(
            "{n} entries per project is more than the {MAX_HISTORY} history can keep; \
             use at most {MAX_HISTORY} (0 turns history off)"
        )),
        Err(e) => Err(format!("{text:?}: {e}")),
    }
}

/// A file mode in octal, as `chmod` takes it (`660`, `0660`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim().trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{text:?}: not an octal file mode such as 0660")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units_and_plain_numbers_are_bytes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2 MiB"), Ok(2 << 20));
        assert_eq!(parse_size("512kib"), Ok(512 * 1024));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_bytes("0.5KiB"), Ok(512.0));
        assert!(parse_size("1.5B").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn durations_take_units_and_plain_numbers_are_seconds() {
        assert_eq!(parse_seconds("30"), Ok(30));
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        assert!(parse_seconds("1.5").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn counts_and_modes() {
        assert_eq!(parse_positive("5"), Ok(5));
        assert!(parse_positive("0").is_err());
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("999").is_err());
    }
}
