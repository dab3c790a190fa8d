//! The open-file limit: raised to its hard maximum at start, and the connection cap fitted to it.

use log::{info, warn};

/// Raises the soft open-file limit to the hard limit, logs both, and returns the largest number
/// of connections (at most `wanted`) the limit can hold with `reserved` descriptors to spare.
pub fn fit_connections(wanted: usize, reserved: u64) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("cannot read the open-file limit; keeping max connections at {wanted}");
        return wanted;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    info!(
        "open-file limit: soft {} (was {before}), hard {}",
        limit.rlim_cur, limit.rlim_max
    );
    // rlim_t is u64 on 64-bit targets but u32 on 32-bit ARM (armv7): widen it.
    #[allow(clippy::useless_conversion)]
    let soft = u64::from(limit.rlim_cur);
    // At least one connection is always served, however low the limit.
    let room = usize::try_from(soft.saturating_sub(reserved))
        .unwrap_or(usize::MAX)
        .max(1);
    if room < wanted {
        warn!(
            "open-file limit {} cannot hold {wanted} connections: serving at most {room} (raise it with `ulimit -n`)",
            limit.rlim_cur
        );
        return room;
    }
    wanted
}
