//! SIGHUP, as `systemctl reload` and logrotate send it: log files are reopened, and the
//! configuration (file, environment and the original flags), the username filter and the
//! project lists are read again. Every connection stays. What changed is logged; a broken new
//! configuration is logged and the running one kept. Settings outside the policy (limits of the
//! loop, the listen address, storage) are reported as needing a restart.

use std::ffi::OsString;

use log::{error, info, warn};

use super::setup::build_policy;
use super::Server;
use crate::config;

/// Settings that take effect at once on reload: the ones the policy holds.
const LIVE: &[&str] = &[
    "username-filter",
    "allowed-projects",
    "blocked-projects",
    "enable-rename",
    "enable-delete",
    "message-rate",
    "message-burst",
    "max-rooms-per-connection",
];

pub(super) struct Reload {
    args: Vec<OsString>,
    /// `--print-config` of the configuration in force.
    described: String,
}

impl Server {
    /// Lets SIGHUP re-read the configuration from `args` (as given at start); `described` is
    /// the configuration in force.
    pub fn enable_reload(&mut self, args: Vec<OsString>, described: String) {
        self.reload = Some(Reload { args, described });
    }

    pub(super) fn on_hangup(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut self.hangups, &mut buf), Ok(n) if n > 0) {}
        crate::logging::reopen();
        info!("SIGHUP: log files reopened");
        // New connections get the re-read certificate; open ones keep theirs.
        if let Some(tls) = &mut self.tls {
            match tls.reload() {
                Ok(()) => info!(
                    "SIGHUP: reloaded the TLS certificate {}",
                    tls.cert_path().display()
                ),
                Err(e) => error!("SIGHUP: keeping the previous TLS certificate: {e}"),
            }
        }
        let Some(reload) = &mut self.reload else {
            return;
        };
        let loaded = match config::load(reload.args.clone()) {
            Ok(loaded) => loaded,
            Err(config::LoadError::File(e)) => {
                return error!("reload failed, keeping the running configuration: {e}");
            }
            Err(config::LoadError::Args(e)) => {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                return error!("reload failed, keeping the running configuration: {first}");
            }
        };
        let policy = match build_policy(&loaded.config) {
            Ok(policy) => policy,
            Err(e) => return error!("reload failed, keeping the running configuration: {e}"),
        };
        let described = loaded.describe();
        let mut changed = 0;
        for (old, new) in reload.described.lines().zip(described.lines()) {
            if old == new {
                continue;
            }
            changed += 1;
            let key = new.split(" = ").next().unwrap_or_default();
            let value = |line: &str| {
                let value = line.split(" = ").nth(1).unwrap_or_default();
                value.split("  #").next().unwrap_or_default().to_owned()
            };
            if LIVE.contains(&key) {
                info!("reload: {key} {} -> {}", value(old), value(new));
            } else {
                warn!(
                    "reload: {key} {} -> {} takes effect after a restart",
                    value(old),
                    value(new)
                );
            }
        }
        self.policy = policy;
        reload.described = described;
        info!("reloaded the configuration: {changed} settings changed");
    }
}
