//! The TLS listener's certificate and key: read from PEM files at start and again on SIGHUP.
//!
//! [`TlsSetup`] owns the two file paths and the current `rustls::ServerConfig`. Every new
//! connection takes the config current at accept time; connections already open keep the one
//! they started with, so a reload never drops anyone. A reload that fails (unreadable file,
//! garbage, expired certificate, key that does not match) leaves the old config in place. The
//! session-ticket key and the session cache are kept across reloads, so clients resume their
//! sessions after a certificate renewal too.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use log::warn;
use rustls::crypto::ring;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS sessions remembered for TLS 1.2 session-id resumption (TLS 1.3 uses tickets).
const SESSION_CACHE_SIZE: usize = 1024;

pub struct TlsSetup {
    cert_path: PathBuf,
    key_path: PathBuf,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    current: Arc<ServerConfig>,
}

impl TlsSetup {
    /// Reads the certificate chain and key; the error says which file is wrong and how.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsSetup, String> {
        let ticketer = ring::Ticketer::new()
            .map_err(|e| format!("cannot create a session-ticket key: {e}"))?;
        let sessions: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
        let current = build(cert_path, key_path, &ticketer, &sessions, now_unix())?;
        Ok(TlsSetup {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            ticketer,
            sessions,
            current: Arc::new(current),
        })
    }

    /// Reads the files again; on error the previous certificate stays in use.
    pub fn reload(&mut self) -> Result<(), String> {
        let config = build(
            &self.cert_path,
            &self.key_path,
            &self.ticketer,
            &self.sessions,
            now_unix(),
        )?;
        self.current = Arc::new(config);
        Ok(())
    }

    /// The config for the next accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.clone()
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn build(
    cert_path: &Path,
    key_path: &Path,
    ticketer: &Arc<dyn ProducesTickets>,
    sessions: &Arc<dyn StoresServerSessions>,
    now: i64,
) -> Result<ServerConfig, String> {
    let cert_name = cert_path.display();
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificate {cert_name}: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "no certificate in {cert_name} (expected PEM \"BEGIN CERTIFICATE\" blocks)"
        ));
    };
    let (not_before, not_after) = validity(leaf).ok_or_else(|| {
        format!("the first certificate in {cert_name} is not a valid X.509 certificate")
    })?;
    if now > not_after {
        // Refusing is kinder than serving: every browser would reject it, and an operator
        // learns more from a server that does not start than from clients that silently fail.
        return Err(format!(
            "the certificate in {cert_name} expired at {} (unix time {not_after}); renew it",
            utc_text(not_after)
        ));
    }
    if now < not_before {
        warn!(
            "the certificate in {cert_name} is valid only from {}: is the clock right?",
            utc_text(not_before)
        );
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        format!(
            "cannot read private key {} (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
            key_path.display()
        )
    })?;
    let provider = Arc::new(ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "certificate {cert_name} and key {} do not fit together: {e}",
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = ticketer.clone();
    config.session_storage = sessions.clone();
    Ok(config)
}

/// `notBefore` and `notAfter` of a DER certificate, as unix seconds.
pub fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    // version [0] is optional; then serial number, signature algorithm, issuer, validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (tag, validity, _) = der_element(tbs)?;
    if tag != 0x30 {
        return None;
    }
    let (before_tag, before, rest) = der_element(validity)?;
    let (after_tag, after, _) = der_element(rest)?;
    Some((der_time(before_tag, before)?, der_time(after_tag, after)?))
}

/// One DER element: its tag, its content, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (content, after) = rest.split_at_checked(length)?;
    Some((tag, content, after))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = std::str::from_utf8(text.get(range)?).ok()?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, rest) = match tag {
        0x17 if text.len() == 13 => {
            let yy = digits(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        0x18 if text.len() == 15 => (digits(0..4)?, 4),
        _ => return None,
    };
    if text.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(rest..rest + 2)?;
    let day = digits(rest + 2..rest + 4)?;
    let hour = digits(rest + 4..rest + 6)?;
    let minute = digits(rest + 6..rest + 8)?;
    let second = digits(rest + 8..rest + 10)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD HH:MM:SS UTC` for log lines.
fn utc_text(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(der_time(0x17, b"000301000000Z"), Some(951_868_800));
        assert_eq!(der_time(0x18, b"20000301000000Z"), Some(951_868_800));
        assert_eq!(utc_text(951_868_800), "2000-03-01 00:00:00 UTC");
        assert_eq!(der_time(0x17, b"0003010000Z"), None);
        assert_eq!(der_time(0x17, b"001301000000Z"), None);
    }

    #[test]
    fn reads_the_validity_of_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 2, 3);
        params.not_after = rcgen::date_time_ymd(2049, 12, 31);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (before, after) = validity(cert.der()).unwrap();
        assert_eq!(utc_text(before), "2001-02-03 00:00:00 UTC");
        assert_eq!(utc_text(after), "2049-12-31 00:00:00 UTC");
        assert_eq!(validity(b"garbage"), None);
        assert_eq!(validity(&cert.der()[..40]), None);
    }
}
