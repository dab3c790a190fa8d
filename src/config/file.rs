//! The configuration as the server sees it: command-line flags, then `STRATUS_*` environment
//! variables, then a TOML file (`--config`), then defaults, in that order of precedence, and
//! where each value came from (`--print-config`).
//!
//! The file uses the flags' names (`max-connections = 5000`, `tick-hz = 60`, `trust-proxy =
//! true`; `_` works as well as `-`). Its values are handed to the same parser as the flags, so
//! they are checked the same way.

use std::ffi::OsString;
use std::fmt::Write as _;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Config;

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    /// The `PORT` environment variable, for `--listen`.
    Port,
    File,
    Default,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::Port => "env PORT",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// A flag or environment variable is wrong (or `--help`/`--version`): clap reports it.
    Args(clap::Error),
    /// The configuration file cannot be read or holds something wrong.
    File(String),
}

/// The effective configuration and the matches it came from.
pub struct Loaded {
    pub config: Config,
    matches: ArgMatches,
    from_file: Vec<String>,
    /// `--listen` came from the `PORT` environment variable.
    from_port: bool,
}

/// Reads the configuration from `args` (the program name first), the environment and the
/// file named by `--config`.
pub fn load(args: impl IntoIterator<Item = OsString>) -> Result<Loaded, LoadError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let command = Config::command();
    let matches = command
        .clone()
        .try_get_matches_from(&args)
        .map_err(LoadError::Args)?;
    let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
        return finish(matches, Vec::new(), Vec::new());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| LoadError::File(format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| LoadError::File(format!("{}: {e}", path.display())))?;
    let mut extra: Vec<OsString> = Vec::new();
    let mut from_file = Vec::new();
    // Project tables have no flag: `projects.rs` reads them, with their lines.
    let projects = super::projects::parse(&text)
        .map_err(|e| LoadError::File(format!("{}: {e}", path.display())))?;
    for (key, value) in table.iter().filter(|(key, _)| *key != "projects") {
        let id = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_id().as_str() == id && arg.get_long().is_some())
            .filter(|_| !matches!(id.as_str(), "config" | "print_config" | "all"))
            .ok_or_else(|| {
                LoadError::File(format!("{}: unknown setting {key:?}", path.display()))
            })?;
        let given = matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let flag = format!("--{}", arg.get_long().unwrap_or(key));
        let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let bad = |what: &str| LoadError::File(format!("{}: {key}: {what}", path.display()));
        let values: Vec<String> = match value {
            toml::Value::Boolean(on) if is_switch => {
                if *on {
                    extra.push(flag.into());
                    from_file.push(id);
                }
                continue;
            }
            _ if is_switch => return Err(bad("expected true or false")),
            toml::Value::Boolean(on) => vec![on.to_string()],
            toml::Value::String(text) => vec![text.clone()],
            toml::Value::Integer(n) => vec![n.to_string()],
            toml::Value::Float(x) => vec![x.to_string()],
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.clone()),
                    toml::Value::Integer(n) => Ok(n.to_string()),
                    toml::Value::Boolean(b) => Ok(b.to_string()),
                    _ => Err(bad("list items must be strings or numbers")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad("expected a string, a number or a list")),
        };
        extra.push(flag.into());
        extra.push(values.join(",").into());
        from_file.push(id);
    }
    let mut argv = Vec::with_capacity(args.len() + extra.len());
    argv.extend(args.first().cloned());
    argv.extend(extra);
    argv.extend(args.iter().skip(1).cloned());
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default();
        LoadError::File(format!(
            "{}: {}",
            path.display(),
            first.trim_start_matches("error: ")
        ))
    })?;
    finish(matches, from_file, projects)
}

fn finish(
    matches: ArgMatches,
    from_file: Vec<String>,
    projects: Vec<super::ProjectTable>,
) -> Result<Loaded, LoadError> {
    let mut config = Config::from_arg_matches(&matches).map_err(LoadError::Args)?;
    config.projects = projects;
    let listen_given = from_file.iter().any(|f| f == "listen")
        || matches!(
            matches.value_source("listen"),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
    let from_port = !listen_given && super::port::apply(&mut config)?;
    Ok(Loaded {
        config,
        matches,
        from_file,
        from_port,
    })
}

impl Loaded {
    /// Where the value of setting `id` (the field name) came from.
    pub fn source(&self, id: &str) -> Source {
        if id == "listen" && self.from_port {
            return Source::Port;
        }
        if self.from_file.iter().any(|f| f == id) {
            return Source::File;
        }
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => Source::Default,
        }
    }

    /// The file's project tables as TOML, with sources, for `--print-config` after
    /// [`Loaded::describe`].
    pub fn describe_projects(&self) -> String {
        let config = &self.config;
        let global = super::projects::Inherited {
            allow_non_numeric: config.allow_non_numeric,
            max_clients_per_room: config.max_clients_per_room,
            max_variables_per_room: config.max_variables_per_room,
            max_value_length: config.max_value_length,
            enable_rename: config.enable_rename,
            enable_delete: config.enable_delete,
        };
        super::projects::describe(&config.projects, &global)
    }

    /// Every setting as a TOML line with its source, for `--print-config`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for arg in Config::command().get_arguments() {
            let id = arg.get_id().as_str();
            let (Some(long), false) = (arg.get_long(), arg.is_hide_set()) else {
                continue;
            };
            if matches!(id, "config" | "print_config" | "all" | "help" | "version") {
                continue;
            }
            let values: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let values: Vec<String> = match id {
                "cluster" => values.iter().map(|url| hide_password(url)).collect(),
                "listen" if self.from_port => vec![self.config.listen.clone()],
                _ => values,
            };
            let is_switch = matches!(arg.get_action(), ArgAction::SetTrue);
            let value = match values.as_slice() {
                _ if is_switch => {
                    let on = self.matches.get_one::<bool>(id).copied().unwrap_or(false);
                    on.to_string()
                }
                [] => continue,
                [one] if arg.get_value_delimiter().is_none() => toml_value(one),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(|v| toml_value(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = writeln!(out, "{long} = {value}  # {}", self.source(id).name());
        }
        out
    }
}

/// A URL with its password (`scheme://user:PASSWORD@host`) replaced by `***`, for output.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) if credentials.contains(':') => {
            let user = credentials.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// A raw value as TOML: what TOML reads as a number or a boolean stays as it is (`0660` does
/// not), anything else is quoted.
fn toml_value(raw: &str) -> String {
    let stays_bare = format!("v = {raw}").parse::<toml::Table>().is_ok_and(|t| {
        matches!(
            t.get("v"),
            Some(toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))
        )
    });
    if stays_bare {
        raw.to_owned()
    } else {
        toml::Value::String(raw.to_owned()).to_string()
    }
}
