//! What the kernel tells about processes: the server's CPU time and RSS from /proc, the
//! generator's own CPU time from getrusage, and the open-files limit. Linux only.

use std::fs;

/// CPU time in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: f64,
    pub system: f64,
}

impl CpuTimes {
    pub fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }

    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime and stime of a whole process (all its threads), from /proc/PID/stat.
pub fn process_cpu(pid: u32) -> Option<CpuTimes> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses, so count fields from
    // the last ')'. What follows starts at field 3; utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let hz = clock_ticks_per_sec();
    Some(CpuTimes {
        user: utime as f64 / hz,
        system: stime as f64 / hz,
    })
}

/// Resident set size in KiB, from the VmRSS line of /proc/PID/status.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The generator's own CPU time so far.
pub fn own_cpu() -> CpuTimes {
    // SAFETY: rusage is plain old data; getrusage fills it in and cannot fail for
    // RUSAGE_SELF with a valid pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    CpuTimes {
        user: secs(usage.ru_utime),
        system: secs(usage.ru_stime),
    }
}

/// Makes sure `needed` file descriptors can be open at once, raising the soft
/// RLIMIT_NOFILE to the hard limit if necessary. Returns the soft limit now in force.
pub fn ensure_fd_limit(needed: u64) -> Result<u64, String> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!(
            "cannot read RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= needed {
        return Ok(soft);
    }
    // An unlimited hard limit cannot be used as a soft limit above fs.nr_open, so ask
    // for the hard limit first and for just what is needed if that is refused.
    for wanted in [hard, needed] {
        if wanted < needed {
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(wanted);
        }
    }
    Err(format!(
        "this run needs {needed} open files (one per connection plus a margin), but the \
         open-files limit is {soft} (hard limit {hard}) and cannot be raised far enough. \
         Raise it before running, e.g. `ulimit -n {needed}` in the same shell (raising the \
         hard limit needs root or an entry in /etc/security/limits.conf), or use fewer \
         rooms/clients."
    ))
}
