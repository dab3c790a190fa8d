//! `--api-rate` and `--api-burst`: the HTTP API's per-address limit, checked when read.
//!
//! The limit divides by the rate (the time a bucket takes to refill, `Retry-After`), so a
//! value that is not a plain number in a sane range is refused with the flag's name rather
//! than turned into a panic or an endless wait at the first request.

/// Slowest rate accepted besides 0 (no limit): one request per 1000 s.
pub const MIN_API_RATE: f64 = 0.001;
/// Largest rate or burst accepted.
pub const MAX_API_LIMIT: f64 = 1_000_000.0;

/// `--api-rate`: 0 (no limit), or requests per second from 0.001 to 1000000.
pub fn parse_api_rate(text: &str) -> Result<f64, String> {
    let rate = number(text)?;
    if rate == 0.0 || (MIN_API_RATE..=MAX_API_LIMIT).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{text:?}: must be 0 (no limit) or from {MIN_API_RATE} to {MAX_API_LIMIT} requests per second"
        ))
    }
}

/// `--api-burst`: requests at once, from 1 to 1000000.
pub fn parse_api_burst(text: &str) -> Result<f64, String> {
    let burst = number(text)?;
    if (1.0..=MAX_API_LIMIT).contains(&burst) {
        Ok(burst)
    } else {
        Err(format!(
            "{text:?}: must be from 1 to {MAX_API_LIMIT} requests"
        ))
    }
}

/// A finite decimal number (`nan`, `inf` are not).
fn number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| format!("{text:?}: not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_0_or_in_range_and_bursts_at_least_1() {
        assert_eq!(parse_api_rate("0"), Ok(0.0));
        assert_eq!(parse_api_rate(" 0.01 "), Ok(0.01));
        assert_eq!(parse_api_rate("10"), Ok(10.0));
        for bad in [
            "nan", "NaN", "inf", "-1", "1e-300", "0.0001", "1e7", "ten", "",
        ] {
            assert!(parse_api_rate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_api_burst("20"), Ok(20.0));
        assert_eq!(parse_api_burst("1"), Ok(1.0));
        for bad in ["nan", "inf", "0", "0.5", "-3", "1e9"] {
            assert!(parse_api_burst(bad).is_err(), "{bad:?}");
        }
    }
}
