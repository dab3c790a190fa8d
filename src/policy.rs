//! What the operator allows: usernames, projects, and the optional protocol features.
//!
//! Built from the configuration and read by the dialects at handshake time; SIGHUP builds it
//! again. What each project's rooms allow (rename, delete, values, rules) is the engine's
//! (`engine/rules.rs`).

use std::collections::HashSet;
use std::fmt;

use regex_lite::{Regex, RegexBuilder};

use crate::admin::bans::Bans;

/// The built-in username filter, used unless the operator names another file.
pub const DEFAULT_USERNAME_FILTER: &str = include_str!("../filters/usernames.txt");

/// Longest and shortest accepted usernames, in characters.
pub const MAX_USERNAME_CHARS: usize = 20;

/// Longest accepted room (project) id, in characters.
pub const MAX_ROOM_ID_CHARS: usize = 999;

#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub usernames: UsernameFilter,
    /// When set, only these project ids may be used.
    pub allowed_projects: Option<HashSet<String>>,
    pub blocked_projects: HashSet<String>,
    /// Incoming messages (each newline-separated object) per second, sustained; 0 = unlimited.
    pub message_rate: f64,
    pub message_burst: f64,
    /// Rooms one MultiStudio connection may be in at once.
    pub max_rooms_per_connection: usize,
    /// Rooms whose joins fail as an internal error (fault injection for tests).
    pub fault_rooms: HashSet<String>,
    /// Scratch-dialect clients that join are sent each variable's last writer and time of
    /// change with its value (`--relay-user`).
    pub relay_user: bool,
    /// Bans and project blocks made through the admin API: runtime state, not configuration,
    /// so a reload carries them over (`net/server/reload.rs`).
    pub bans: Bans,
}

impl Policy {
    pub fn project_allowed(&self, room: &str) -> bool {
        let listed = self
            .allowed_projects
            .as_ref()
            .is_none_or(|allowed| allowed.contains(room));
        listed && !self.blocked_projects.contains(room) && !self.bans.blocks_project(room)
    }

    /// Checks a username's form, the filter, then the admin API's bans: a banned name is
    /// refused like a filtered one, in each dialect's form.
    pub fn check_username(&self, username: &str) -> Result<(), UsernameProblem> {
        self.usernames.check(username)?;
        if self.bans.refuses_user(username) {
            return Err(UsernameProblem::Banned);
        }
        Ok(())
    }
}

/// Why a username was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsernameProblem {
    Length,
    Characters,
    Filtered,
    /// Banned through the admin API.
    Banned,
}

impl UsernameProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            UsernameProblem::Length => "username must be 1-20 characters",
            UsernameProblem::Characters => "username may contain only A-Z a-z 0-9 _ -",
            UsernameProblem::Filtered => "username is not allowed",
            UsernameProblem::Banned => "username is banned",
        }
    }
}

/// Case-insensitive patterns tested against a username with its non-alphanumerics removed.
#[derive(Clone, Default)]
pub struct UsernameFilter {
    patterns: Vec<Regex>,
}

impl fmt::Debug for UsernameFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UsernameFilter({} patterns)", self.patterns.len())
    }
}

/// A filter line that is not a valid regular expression.
#[derive(Debug)]
pub struct FilterError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl UsernameFilter {
    /// Parses one pattern per line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let regex = RegexBuilder::new(line)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| FilterError {
                    line: number + 1,
                    message: e.to_string(),
                })?;
            patterns.push(regex);
        }
        Ok(UsernameFilter { patterns })
    }

    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Checks form (1-20 of `[A-Za-z0-9_-]`) and then the patterns.
    pub fn check(&self, username: &str) -> Result<(), UsernameProblem> {
        if username.is_empty() || username.len() > MAX_USERNAME_CHARS {
            return Err(UsernameProblem::Length);
        }
        let well_formed = username
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(UsernameProblem::Characters);
        }
        let stripped: String = username
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        if self.patterns.iter().any(|p| p.is_match(&stripped)) {
            return Err(UsernameProblem::Filtered);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_filter() -> UsernameFilter {
        UsernameFilter::parse(DEFAULT_USERNAME_FILTER).expect("built-in filter parses")
    }

    #[test]
    fn form_is_checked_before_patterns() {
        let filter = UsernameFilter::default();
        assert_eq!(filter.check(""), Err(UsernameProblem::Length));
        assert_eq!(filter.check(&"a".repeat(21)), Err(UsernameProblem::Length));
        assert_eq!(filter.check(&"a".repeat(20)), Ok(()));
        assert_eq!(filter.check("a b"), Err(UsernameProblem::Characters));
        assert_eq!(filter.check("é"), Err(UsernameProblem::Characters));
        assert_eq!(filter.check("player_1-x"), Ok(()));
    }

    #[test]
    fn the_default_filter_blocks_scratch_team_impersonation() {
        let filter = default_filter();
        for name in [
            "ScratchCat",
            "scratch_cat",
            "Scratch-Team",
            "TheScratchTeam",
            "Scratch",
            "ceebee",
            "ADMIN",
        ] {
            assert_eq!(filter.check(name), Err(UsernameProblem::Filtered), "{name}");
        }
        for name in ["griffpatch", "player1", "ScratchFan", "cat", "Zach"] {
            assert_eq!(filter.check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_patterns_are_reported_with_their_line() {
        let error = UsernameFilter::parse("# comment\nok\n(unclosed").expect_err("invalid");
        assert_eq!(error.line, 3);
    }

    #[test]
    fn project_lists() {
        let mut policy = Policy::default();
        assert!(policy.project_allowed("1"));
        policy.blocked_projects.insert("1".into());
        assert!(!policy.project_allowed("1"));
        policy.allowed_projects = Some(["2".to_string()].into_iter().collect());
        assert!(policy.project_allowed("2"));
        assert!(!policy.project_allowed("3"));
    }

    #[test]
    fn admin_bans_and_blocks_refuse_like_the_configuration() {
        use crate::admin::bans::{Ban, Banned, Block, Change};
        let mut policy = Policy::default();
        policy
            .bans
            .apply(Change::Ban(Ban {
                id: 1,
                who: Banned::User("Bob".into()),
                until_ms: u64::MAX,
                reason: String::new(),
                by: "op".into(),
            }))
            .unwrap();
        policy
            .bans
            .apply(Change::Block(Block {
                project: "9".into(),
                until_ms: None,
                by: "op".into(),
            }))
            .unwrap();
        assert_eq!(policy.check_username("bob"), Err(UsernameProblem::Banned));
        assert_eq!(
            policy.check_username("bob!"),
            Err(UsernameProblem::Characters)
        );
        assert_eq!(policy.check_username("alice"), Ok(()));
        assert!(!policy.project_allowed("9"));
        assert!(policy.project_allowed("10"));
    }
}
