//! SIGHUP, as `systemctl reload` and logrotate send it: log files are reopened, and the
//! configuration (file, environment and the original flags), the username filter, the
//! project lists and the project tables (settings and variable rules) are read again. Every connection stays. What changed is logged; a broken new
//! configuration is logged and the running one kept. Settings outside the policy (limits of the
//! loop, the listen address, storage) are reported as needing a restart.

use std::ffi::OsString;

use log::{error, info, warn};

use super::projects::build_rules;
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
    // Per-project settings start from these (`projects.rs`), re-installed on every reload.
    "allow-non-numeric",
    "max-clients-per-room",
    "max-variables-per-room",
    "max-value-length",
    "message-rate",
    "message-burst",
    "max-rooms-per-connection",
];

pub(super) struct Reload {
    args: Vec<OsString>,
    /// `--print-config` of the configuration in force.
    described: String,
    /// Its project tables, as `--print-config` shows them.
    projects: String,
}

impl Server {
    /// Lets SIGHUP re-read the configuration from `args` (as given at start); `described` is
    /// the configuration in force.
    pub fn enable_reload(&mut self, args: Vec<OsString>, described: String, projects: String) {
        self.reload = Some(Reload {
            args,
            described,
            projects,
        });
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
        // Project tables: rooms take their new settings and rules at once (see
        // `Engine::set_rules`); their members' next messages follow them.
        let projects = loaded.describe_projects();
        if projects != reload.projects {
            info!(
                "reload: project tables changed: {} projects, {} variable rules",
                loaded.config.projects.len(),
                loaded
                    .config
                    .projects
                    .iter()
                    .map(|p| p.variables.len())
                    .sum::<usize>()
            );
            changed += 1;
        }
        self.engine.set_rules(build_rules(&loaded.config));
        self.policy = policy;
        reload.described = described;
        reload.projects = projects;
        info!("reloaded the configuration: {changed} settings changed");
    }
}
