//! One server per data directory: an exclusive lock on `stratus.lock`, held while it runs.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as the server uses the directory; released when dropped (or when the
/// process dies, so a crash never leaves a stale lock).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, String> {
        let path = dir.join("stratus.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // SAFETY: flock on a valid, open descriptor has no memory effects.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            return Err(format!(
                "{} is in use by another stratus process (locked {}); \
                 stop it, or give this one another --data-dir",
                dir.display(),
                path.display()
            ));
        }
        Ok(DirLock { _file: file })
    }
}
