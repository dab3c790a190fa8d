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
use crate::admin::tokens::AdminTokens;
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
    // Scratch clients that join after the reload read the new format.
    "relay-user",
    // The operators are read again (`reload_admin_tokens`); `admin-listen` needs a restart.
    "admin-tokens",
];

/// How a setting without a value shows in a reload's log line.
const UNSET: &str = "(unset)";

/// The settings whose values differ between two `--print-config` texts, as (key, old value,
/// new value), `None` where a text has no line for the key (an option that gained or lost its
/// value). Lines are matched by key, under their `[table]` heading if any: a setting that
/// appears or disappears does not shift the others.
fn changed_settings<'a>(
    old: &'a str,
    new: &'a str,
) -> Vec<(String, Option<&'a str>, Option<&'a str>)> {
    let old = settings_by_key(old);
    let new = settings_by_key(new);
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let (before, after) = (old.get(key).copied(), new.get(key).copied());
            (before != after).then(|| (key.clone(), before, after))
        })
        .collect()
}

/// Each `key = value  # source` line's value (without the source), by `table.key`.
fn settings_by_key(text: &str) -> std::collections::BTreeMap<String, &str> {
    let mut table = "";
    let mut settings = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            table = line;
            continue;
        }
        let Some((key, rest)) = line.split_once(" = ") else {
            continue;
        };
        let value = rest.split("  #").next().unwrap_or_default();
        let key = if table.is_empty() {
            key.to_owned()
        } else {
            format!("{table}.{key}")
        };
        settings.insert(key, value);
    }
    settings
}

impl Server {
    /// Reads `--admin-tokens` again: a removed operator's token is refused from now on (open
    /// connections included: every request is checked). A file that cannot be read or holds a
    /// bad line keeps the operators in force; no file configured turns the admin API off.
    fn reload_admin_tokens(&mut self, config: &config::Config) {
        let Some(path) = &config.admin_tokens else {
            self.api.admin.tokens_path = None;
            if self.api.admin.tokens.take().is_some() {
                warn!("reload: no --admin-tokens any more: the admin API is off");
            }
            return;
        };
        self.api.admin.tokens_path = Some(path.clone());
        self.reload_admin_tokens_file(path);
    }

    /// A configuration that does not load must not keep a revoked token valid until it is
    /// fixed: the tokens file in force (its last known path) is read again all the same.
    fn reload_last_admin_tokens(&mut self) {
        if self.api.admin.tokens.is_none() {
            return;
        }
        if let Some(path) = self.api.admin.tokens_path.clone() {
            warn!(
                "reload: re-reading --admin-tokens {} all the same",
                path.display()
            );
            self.reload_admin_tokens_file(&path);
        }
    }

    fn reload_admin_tokens_file(&mut self, path: &std::path::Path) {
        match AdminTokens::load(path) {
            Ok(tokens) => {
                super::setup::warn_if_readable_by_others(path);
                info!(
                    "reload: admin operators: {}",
                    tokens.names().collect::<Vec<_>>().join(", ")
                );
                self.api.admin.tokens = Some(tokens);
            }
            Err(e) => error!("reload: keeping the admin operators in force: --admin-tokens {e}"),
        }
    }
}

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
                error!("reload failed, keeping the running configuration: {e}");
                return self.reload_last_admin_tokens();
            }
            Err(config::LoadError::Args(e)) => {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                error!("reload failed, keeping the running configuration: {first}");
                return self.reload_last_admin_tokens();
            }
        };
        let mut policy = match build_policy(&loaded.config) {
            Ok(policy) => policy,
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                return self.reload_last_admin_tokens();
            }
        };
        let described = loaded.describe();
        let changes = changed_settings(&reload.described, &described);
        let mut changed = changes.len();
        for (key, old, new) in changes {
            let old = old.unwrap_or(UNSET);
            let new = new.unwrap_or(UNSET);
            if LIVE.contains(&key.as_str()) {
                info!("reload: {key} {old} -> {new}");
            } else {
                warn!("reload: {key} {old} -> {new} takes effect after a restart");
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
        // Bans and blocks are the admin API's state, not the file's.
        policy.bans = std::mem::take(&mut self.policy.bans);
        self.policy = policy;
        reload.described = described;
        reload.projects = projects;
        self.reload_admin_tokens(&loaded.config);
        info!("reloaded the configuration: {changed} settings changed");
    }
}
