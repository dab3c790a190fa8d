//! Log setup: one line per event to stderr, optionally also to daily files.

use std::path::Path;
use std::time::SystemTime;

use log::LevelFilter;

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
        dispatch = dispatch.chain(fern::DateBased::new(dir.join("stratus."), "%Y-%m-%d.log"));
    }
    dispatch
        .apply()
        .map_err(|e| format!("cannot install logger: {e}"))
}
