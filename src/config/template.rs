//! `--print-config --all`: every option, as a configuration file to start from. Options with a
//! value print as `--print-config` prints them; options without one (a TLS certificate, a
//! cluster URL) are commented out with a placeholder; each comes after its help text.

use std::collections::HashMap;
use std::fmt::Write as _;

use clap::{ArgAction, CommandFactory};

use super::{Config, Loaded};

/// Options that are not settings: never written to a file.
const NOT_SETTINGS: &[&str] = &["config", "print_config", "all", "help", "version"];

/// Width of the help comments.
const WIDTH: usize = 96;

impl Loaded {
    /// Every setting with its help, unset ones commented out, for `--print-config --all`.
    pub fn describe_all(&self) -> String {
        let described = self.describe();
        let lines: HashMap<&str, &str> = described
            .lines()
            .filter_map(|line| Some((line.split(" = ").next()?, line)))
            .collect();
        let mut out = String::from(
            "# stratus: every setting. Uncomment and change what you need; flags and STRATUS_*\n\
             # environment variables override this file. Each line's last comment says where its\n\
             # value comes from now.\n",
        );
        for arg in Config::command().get_arguments() {
            let (Some(long), false) = (arg.get_long(), arg.is_hide_set()) else {
                continue;
            };
            if NOT_SETTINGS.contains(&arg.get_id().as_str()) {
                continue;
            }
            out.push('\n');
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            write_comment(&mut out, &help);
            match lines.get(long) {
                Some(line) => {
                    let _ = writeln!(out, "{line}");
                }
                None => {
                    let placeholder = arg
                        .get_value_names()
                        .and_then(|names| names.first())
                        .map_or_else(|| "VALUE".to_owned(), |name| name.to_string());
                    let many = arg.get_value_delimiter().is_some()
                        || matches!(arg.get_action(), ArgAction::Append);
                    let value = toml::Value::String(placeholder).to_string();
                    if many {
                        let _ = writeln!(out, "# {long} = [{value}]  # unset");
                    } else {
                        let _ = writeln!(out, "# {long} = {value}  # unset");
                    }
                }
            }
        }
        out
    }
}

/// `text` as `# ` comment lines of at most [`WIDTH`] characters.
fn write_comment(out: &mut String, text: &str) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > WIDTH && line.len() > 1 {
            let _ = writeln!(out, "{line}");
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    if line.len() > 1 {
        let _ = writeln!(out, "{line}");
    }
}
