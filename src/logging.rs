//! Log setup: one line per event to stderr, optionally also to daily files.
//!
//! Daily files are named by the UTC date, like the timestamps of the lines in them, and are
//! reopened after [`reopen`] (SIGHUP, as logrotate sends after moving a file away).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

/// Set by [`reopen`]; the next line opens the file anew.
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Makes the next log line reopen its daily file.
pub fn reopen() {
    REOPEN.store(true, Ordering::Relaxed);
}

/// `stratus.YYYY-MM-DD.log` in a directory, switching at UTC midnight.
struct DailyFile {
    dir: PathBuf,
    open: Option<(String, File)>,
}

impl DailyFile {
    fn file(&mut self) -> std::io::Result<&mut File> {
        let today = utc_date(SystemTime::now());
        let stale = REOPEN.swap(false, Ordering::Relaxed)
            || self.open.as_ref().is_none_or(|(date, _)| *date != today);
        if stale {
            let path = self.dir.join(format!("stratus.{today}.log"));
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            self.open = Some((today, file));
        }
        match &mut self.open {
            Some((_, file)) => Ok(file),
            None => Err(std::io::ErrorKind::NotFound.into()),
        }
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.open {
            Some((_, file)) => file.flush(),
            None => Ok(()),
        }
    }
}

/// `YYYY-MM-DD` of `time` in UTC.
fn utc_date(time: SystemTime) -> String {
    let text = humantime::format_rfc3339(time).to_string();
    text.get(..10).unwrap_or_default().to_owned()
}

use log::LevelFilter;

/// Deletes daily log files (`stratus.YYYY-MM-DD.log`) older than `keep_days` days; 0 keeps all.
/// Returns how many were deleted.
pub fn prune(dir: &Path, keep_days: u32) -> usize {
    if keep_days == 0 {
        return 0;
    }
    let cutoff = SystemTime::now() - Duration::from_secs(u64::from(keep_days) * 86_400);
    // ISO dates sort as text: a file is older when its date sorts before the cutoff's.
    let cutoff = utc_date(cutoff);
    let cutoff = cutoff.as_str();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut deleted = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(date) = name
            .to_str()
            .and_then(|n| n.strip_prefix("stratus."))
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|d| d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
        else {
            continue;
        };
        if date < cutoff && std::fs::remove_file(entry.path()).is_ok() {
            deleted += 1;
        }
    }
    deleted
}

/// Installs the global logger. Fails if the log directory cannot be used.
pub fn init(level: LevelFilter, dir: Option<&Path>) -> Result<(), String> {
    let mut dispatch = fern::Dispatch::new()
        .level(level)
        .format(|out, message, record| {
            out.finish(format_args!(
                "{} {:5} {}",
                humantime::format_rfc3339_millis(SystemTime::now()),
                record.level(),
                message
            ))
        })
        .chain(std::io::stderr());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
        // The daily file is opened on the first line; find out now, not at every line.
        let probe = dir.join(".stratus-write-test");
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&probe)
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| format!("cannot write log files in {}: {e}", dir.display()))?;
        let file: Box<dyn Write + Send> = Box::new(DailyFile {
            dir: dir.to_owned(),
            open: None,
        });
        dispatch = dispatch.chain(file);
    }
    dispatch
        .apply()
        .map_err(|e| format!("cannot install logger: {e}"))
}
