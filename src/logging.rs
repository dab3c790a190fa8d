//! Log setup: one line per event to stderr, optionally also to daily files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use log::LevelFilter;

/// Deletes daily log files (`stratus.YYYY-MM-DD.log`) older than `keep_days` days; 0 keeps all.
/// Returns how many were deleted.
pub fn prune(dir: &Path, keep_days: u32) -> usize {
    if keep_days == 0 {
        return 0;
    }
    let cutoff = SystemTime::now() - Duration::from_secs(u64::from(keep_days) * 86_400);
    // ISO dates sort as text: a file is older when its date sorts before the cutoff's.
    let cutoff = humantime::format_rfc3339(cutoff).to_string();
    let Some(cutoff) = cutoff.get(..10) else {
        return 0;
    };
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
        // Named by the same (UTC) clock as the lines in them.
        dispatch =
            dispatch.chain(fern::DateBased::new(dir.join("stratus."), "%Y-%m-%d.log").utc_time());
    }
    dispatch
        .apply()
        .map_err(|e| format!("cannot install logger: {e}"))
}
