//! Project tables of the configuration file: per-project overrides of the server-wide settings
//! (`[projects."ID"]`) and variable rules (`[projects."ID".variables."☁ NAME"]`).
//!
//! They exist only in the file (no flag or environment variable names a project), are read
//! with the spans of every key and value, so any mistake is reported with its line, and are
//! kept as written (`None` = not set): the server merges them with the server-wide settings,
//! and `--print-config` shows them as they were given.

use std::fmt::Write as _;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::engine::value::is_valid_name;
use crate::policy::{MAX_ROOM_ID_CHARS, MAX_USERNAME_CHARS};

/// Most variable rules one project may have: rooms index their rules with 16 bits, and a
/// room holds far fewer variables (`--max-variables-per-room`, 128 by default).
const MAX_RULES_PER_PROJECT: usize = 4096;

/// One `[projects."ID"]` table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProjectTable {
    pub id: String,
    pub allow_non_numeric: Option<bool>,
    pub max_clients_per_room: Option<usize>,
    pub max_variables_per_room: Option<usize>,
    pub max_value_length: Option<usize>,
    pub enable_rename: Option<bool>,
    pub enable_delete: Option<bool>,
    pub read_only: Option<bool>,
    pub variables: Vec<VariableTable>,
}

/// One `[projects."ID".variables."NAME"]` table: the rules of one variable.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariableTable {
    pub name: String,
    pub integer: Option<bool>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub only_increase: Option<bool>,
    pub max_step: Option<f64>,
    pub writers: Option<Vec<String>>,
    pub max_sets_per_minute: Option<u32>,
}

/// The project-level keys, in the order `--print-config` shows them.
const PROJECT_KEYS: [&str; 9] = [
    "allow-non-numeric",
    "max-clients-per-room",
    "max-variables-per-room",
    "max-value-length",
    "enable-rename",
    "enable-delete",
    "read-only",
    "history",
    "variables",
];

const RULE_KEYS: [&str; 7] = [
    "integer",
    "min",
    "max",
    "only-increase",
    "max-step",
    "writers",
    "max-sets-per-minute",
];

/// Reads the `projects` table of `text` (a whole configuration file); an error names the line.
pub fn parse(text: &str) -> Result<Vec<ProjectTable>, String> {
    let file = File { text };
    let document = DeTable::parse(text).map_err(|e| {
        let line = e.span().map_or(0, |span| file.line(span.start));
        format!("line {line}: {}", e.message())
    })?;
    let Some((key, projects)) = document
        .get_ref()
        .iter()
        .find(|(key, _)| key.get_ref() == "projects")
    else {
        return Ok(Vec::new());
    };
    let projects = file.table(projects, "projects", key.span())?;
    let mut tables = Vec::with_capacity(projects.len());
    for (id, project) in projects {
        let label = format!("projects.{:?}", id.get_ref());
        if id.get_ref().is_empty() || id.get_ref().chars().nth(MAX_ROOM_ID_CHARS).is_some() {
            return Err(file.error(id.span(), &format!("{label}: not a project id")));
        }
        let entries = file.table(project, &label, id.span())?;
        tables.push(file.project(id.get_ref(), entries, &label)?);
    }
    Ok(tables)
}

/// The file's text, to turn spans into line numbers.
struct File<'t> {
    text: &'t str,
}

impl File<'_> {
    fn line(&self, offset: usize) -> usize {
        let before = self.text.get(..offset).unwrap_or(self.text);
        before.bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn error(&self, span: Range<usize>, what: &str) -> String {
        format!("line {}: {what}", self.line(span.start))
    }

    fn table<'a, 'i>(
        &self,
        value: &'a Spanned<DeValue<'i>>,
        label: &str,
        key_span: Range<usize>,
    ) -> Result<&'a DeTable<'i>, String> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            _ => Err(self.error(key_span, &format!("{label}: expected a table"))),
        }
    }

    fn project(
        &self,
        id: &str,
        entries: &DeTable<'_>,
        label: &str,
    ) -> Result<ProjectTable, String> {
        let mut table = ProjectTable {
            id: id.to_owned(),
            ..ProjectTable::default()
        };
        for (key, value) in entries {
            let name = key.get_ref().replace('_', "-");
            let label = format!("{label}: {name}");
            match name.as_str() {
                "allow-non-numeric" => table.allow_non_numeric = Some(self.bool(value, &label)?),
                "max-clients-per-room" => {
                    table.max_clients_per_room = Some(self.count(value, &label)?)
                }
                "max-variables-per-room" => {
                    table.max_variables_per_room = Some(self.count(value, &label)?)
                }
                "max-value-length" => table.max_value_length = Some(self.count(value, &label)?),
                "enable-rename" => table.enable_rename = Some(self.bool(value, &label)?),
                "enable-delete" => table.enable_delete = Some(self.bool(value, &label)?),
                "read-only" => table.read_only = Some(self.bool(value, &label)?),
                "history" => {
                    return Err(self.error(
                        key.span(),
                        &format!(
                            "{label}: history is kept server-wide, up to `--history` entries \
                             per project; remove the key"
                        ),
                    ))
                }
                "variables" => {
                    let variables = self.table(value, &label, key.span())?;
                    for (name, rules) in variables {
                        let label = format!("{label}.{:?}", name.get_ref());
                        if !is_valid_name(name.get_ref()) {
                            return Err(self.error(
                                name.span(),
                                &format!("{label}: a cloud variable name starts with \"☁ \""),
                            ));
                        }
                        let entries = self.table(rules, &label, name.span())?;
                        let rule = self.rule(name.get_ref(), entries, name.span(), &label)?;
                        if table.variables.len() >= MAX_RULES_PER_PROJECT {
                            return Err(self.error(
                                name.span(),
                                &format!(
                                    "{label}: at most {MAX_RULES_PER_PROJECT} variable rules \
                                     per project"
                                ),
                            ));
                        }
                        table.variables.push(rule);
                    }
                }
                _ => return Err(self.unknown(key.span(), &label, &PROJECT_KEYS)),
            }
        }
        Ok(table)
    }

    fn rule(
        &self,
        name: &str,
        entries: &DeTable<'_>,
        header: Range<usize>,
        label: &str,
    ) -> Result<VariableTable, String> {
        let mut rule = VariableTable {
            name: name.to_owned(),
            ..VariableTable::default()
        };
        for (key, value) in entries {
            let key_name = key.get_ref().replace('_', "-");
            let label = format!("{label}: {key_name}");
            match key_name.as_str() {
                "integer" => rule.integer = Some(self.bool(value, &label)?),
                "min" => rule.min = Some(self.number(value, &label)?),
                "max" => rule.max = Some(self.number(value, &label)?),
                "only-increase" => rule.only_increase = Some(self.bool(value, &label)?),
                "max-step" => {
                    let step = self.number(value, &label)?;
                    if step < 0.0 {
                        return Err(self.error(value.span(), &format!("{label}: below 0")));
                    }
                    rule.max_step = Some(step);
                }
                "writers" => rule.writers = Some(self.writers(value, &label)?),
                "max-sets-per-minute" => {
                    let count = self.count(value, &label)?;
                    let count = u32::try_from(count)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| {
                            self.error(
                                value.span(),
                                &format!("{label}: expected 1 to {}", u32::MAX),
                            )
                        })?;
                    rule.max_sets_per_minute = Some(count);
                }
                _ => return Err(self.unknown(key.span(), &label, &RULE_KEYS)),
            }
        }
        if let (Some(min), Some(max)) = (rule.min, rule.max) {
            if min > max {
                return Err(self.error(header, &format!("{label}: min is above max")));
            }
        }
        Ok(rule)
    }

    fn unknown(&self, span: Range<usize>, label: &str, known: &[&str]) -> String {
        self.error(
            span,
            &format!("{label}: unknown key (known: {})", known.join(", ")),
        )
    }

    fn bool(&self, value: &Spanned<DeValue<'_>>, label: &str) -> Result<bool, String> {
        match value.get_ref() {
            DeValue::Boolean(on) => Ok(*on),
            _ => Err(self.error(value.span(), &format!("{label}: expected true or false"))),
        }
    }

    /// A whole number of zero or more.
    fn count(&self, value: &Spanned<DeValue<'_>>, label: &str) -> Result<usize, String> {
        let parsed = match value.get_ref() {
            DeValue::Integer(n) => u64::from_str_radix(n.as_str(), n.radix())
                .ok()
                .and_then(|n| usize::try_from(n).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.error(
                value.span(),
                &format!("{label}: expected a whole number, 0 or more"),
            )
        })
    }

    fn number(&self, value: &Spanned<DeValue<'_>>, label: &str) -> Result<f64, String> {
        let parsed = match value.get_ref() {
            DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            _ => None,
        };
        parsed
            .filter(|x| x.is_finite())
            .ok_or_else(|| self.error(value.span(), &format!("{label}: expected a number")))
    }

    fn writers(&self, value: &Spanned<DeValue<'_>>, label: &str) -> Result<Vec<String>, String> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.error(
                value.span(),
                &format!("{label}: expected a list of usernames"),
            ));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(name) if is_username(name) => Ok(name.to_string()),
                _ => Err(self.error(
                    item.span(),
                    &format!("{label}: a username is 1-{MAX_USERNAME_CHARS} of A-Z a-z 0-9 _ -"),
                )),
            })
            .collect()
    }
}

fn is_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USERNAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Inherited values a project table does not set, for `--print-config`.
pub struct Inherited {
    pub allow_non_numeric: bool,
    pub max_clients_per_room: usize,
    pub max_variables_per_room: usize,
    pub max_value_length: usize,
    pub enable_rename: bool,
    pub enable_delete: bool,
}

/// The project tables as TOML, each key with its source: `file` for what the table sets,
/// commented-out lines with `global` for what it inherits.
pub fn describe(tables: &[ProjectTable], global: &Inherited) -> String {
    let mut out = String::new();
    for table in tables {
        let id = toml_string(&table.id);
        let _ = writeln!(out, "\n[projects.{id}]  # file");
        let mut line = |key: &str, set: Option<String>, inherited: String| match set {
            Some(value) => {
                let _ = writeln!(out, "{key} = {value}  # file");
            }
            None => {
                let _ = writeln!(out, "# {key} = {inherited}  # global");
            }
        };
        let text = |v: &dyn ToString| v.to_string();
        line(
            "allow-non-numeric",
            table.allow_non_numeric.map(|v| text(&v)),
            text(&global.allow_non_numeric),
        );
        line(
            "max-clients-per-room",
            table.max_clients_per_room.map(|v| text(&v)),
            text(&global.max_clients_per_room),
        );
        line(
            "max-variables-per-room",
            table.max_variables_per_room.map(|v| text(&v)),
            text(&global.max_variables_per_room),
        );
        line(
            "max-value-length",
            table.max_value_length.map(|v| text(&v)),
            text(&global.max_value_length),
        );
        line(
            "enable-rename",
            table.enable_rename.map(|v| text(&v)),
            text(&global.enable_rename),
        );
        line(
            "enable-delete",
            table.enable_delete.map(|v| text(&v)),
            text(&global.enable_delete),
        );
        line(
            "read-only",
            table.read_only.map(|v| text(&v)),
            "false".to_owned(),
        );
        for rule in &table.variables {
            let _ = writeln!(
                out,
                "\n[projects.{id}.variables.{}]  # file",
                toml_string(&rule.name)
            );
            let mut set = |key: &str, value: Option<String>| {
                if let Some(value) = value {
                    let _ = writeln!(out, "{key} = {value}  # file");
                }
            };
            set("integer", rule.integer.map(|v| text(&v)));
            set("min", rule.min.map(toml_number));
            set("max", rule.max.map(toml_number));
            set("only-increase", rule.only_increase.map(|v| text(&v)));
            set("max-step", rule.max_step.map(toml_number));
            set(
                "writers",
                rule.writers.as_ref().map(|names| {
                    let names: Vec<String> = names.iter().map(|n| toml_string(n)).collect();
                    format!("[{}]", names.join(", "))
                }),
            );
            set(
                "max-sets-per-minute",
                rule.max_sets_per_minute.map(|v| text(&v)),
            );
        }
    }
    out
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn toml_number(x: f64) -> String {
    toml::Value::Float(x).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_tables_and_rules_are_read() {
        let text = r#"
tick-hz = 30

[projects."123"]
allow_non_numeric = true
max-value-length = 10

[projects."123".variables."☁ score"]
integer = true
min = 0
max = 1.5e3
only-increase = true
max-step = 100
writers = ["Alice", "bob"]
max-sets-per-minute = 60
"#;
        let tables = parse(text).expect("parses");
        assert_eq!(tables.len(), 1);
        let table = &tables[0];
        assert_eq!(table.id, "123");
        assert_eq!(table.allow_non_numeric, Some(true));
        assert_eq!(table.max_value_length, Some(10));
        assert_eq!(table.max_clients_per_room, None);
        let rule = &table.variables[0];
        assert_eq!(rule.name, "☁ score");
        assert_eq!(rule.integer, Some(true));
        assert_eq!(rule.min, Some(0.0));
        assert_eq!(rule.max, Some(1500.0));
        assert_eq!(rule.max_step, Some(100.0));
        assert_eq!(
            rule.writers,
            Some(vec!["Alice".to_owned(), "bob".to_owned()])
        );
        assert_eq!(rule.max_sets_per_minute, Some(60));
        // What --print-config writes is TOML that reads back the same.
        let global = Inherited {
            allow_non_numeric: false,
            max_clients_per_room: 128,
            max_variables_per_room: 128,
            max_value_length: 100_000,
            enable_rename: false,
            enable_delete: false,
        };
        let described = describe(&tables, &global);
        assert!(described.contains("# max-clients-per-room = 128  # global"));
        assert_eq!(parse(&described).expect("reads back"), tables);
    }

    #[test]
    fn a_project_has_at_most_so_many_rules() {
        let mut text = String::from("[projects.\"1\".variables]\n");
        for i in 0..MAX_RULES_PER_PROJECT {
            text.push_str(&format!("\"☁ v{i}\" = {{ min = 0 }}\n"));
        }
        assert_eq!(
            parse(&text).expect("the most allowed")[0].variables.len(),
            4096
        );
        text.push_str("\"☁ one more\" = { min = 0 }\n");
        let error = parse(&text).expect_err("one too many");
        assert!(error.contains("at most 4096 variable rules"), "{error}");
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let cases = [
            (
                "[projects.\"1\"]\nmax-client = 5\n",
                "line 2:",
                "unknown key",
            ),
            (
                "[projects.\"1\"]\nread-only = \"yes\"\n",
                "line 2:",
                "expected true or false",
            ),
            (
                "a = 1\n[projects.\"1\".variables.\"☁ s\"]\n\nmin = \"0\"\n",
                "line 4:",
                "expected a number",
            ),
            (
                "[projects.\"1\".variables.\"☁ s\"]\nonly_increase = true\nbogus = 1\n",
                "line 3:",
                "unknown key",
            ),
            (
                "[projects.\"1\".variables.\"score\"]\nmin = 0\n",
                "line 1:",
                "starts with",
            ),
            (
                "[projects.\"1\".variables.\"☁ s\"]\nmin = 5\nmax = 1\n",
                "line 1:",
                "min is above max",
            ),
            (
                "[projects.\"1\".variables.\"☁ s\"]\nwriters = [\"a b\"]\n",
                "line 2:",
                "username",
            ),
            (
                "[projects.\"1\".variables.\"☁ s\"]\nmax-sets-per-minute = 0\n",
                "line 2:",
                "expected 1",
            ),
            (
                "[projects.\"1\".variables.\"☁ s\"]\nmax-step = -1\n",
                "line 2:",
                "below 0",
            ),
            ("\n\n[projects.\"1\"]\nhistory = 50\n", "line 4:", "history"),
            ("projects = 5\n", "line 1:", "expected a table"),
            (
                "[projects.\"1\"]\nmax-clients-per-room = -1\n",
                "line 2:",
                "0 or more",
            ),
        ];
        for (text, line, what) in cases {
            let error = parse(text).expect_err(text);
            assert!(error.starts_with(line), "{text:?}: {error}");
            assert!(error.contains(what), "{text:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}
