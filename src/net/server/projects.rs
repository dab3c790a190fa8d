//! The configuration's project tables turned into the engine's rules: each table merged with
//! the server-wide settings, usernames of `writers` lowercased once here.

use crate::config::{Config, ProjectTable, VariableTable};
use crate::engine::{ProjectSettings, Rules, VariableRule};

/// Every project's settings, from the flags, environment and file in `config`.
pub(super) fn build_rules(config: &Config) -> Rules {
    let default = ProjectSettings {
        allow_non_numeric: config.allow_non_numeric,
        max_clients_per_room: config.max_clients_per_room,
        max_variables_per_room: config.max_variables_per_room,
        max_value_chars: config.max_value_length,
        enable_rename: config.enable_rename,
        enable_delete: config.enable_delete,
        read_only: false,
        variables: Vec::new(),
    };
    let projects = config
        .projects
        .iter()
        .map(|table| (table.id.clone(), merge(table, &default)))
        .collect();
    Rules { default, projects }
}

fn merge(table: &ProjectTable, global: &ProjectSettings) -> ProjectSettings {
    ProjectSettings {
        allow_non_numeric: table.allow_non_numeric.unwrap_or(global.allow_non_numeric),
        max_clients_per_room: table
            .max_clients_per_room
            .unwrap_or(global.max_clients_per_room),
        max_variables_per_room: table
            .max_variables_per_room
            .unwrap_or(global.max_variables_per_room),
        max_value_chars: table.max_value_length.unwrap_or(global.max_value_chars),
        enable_rename: table.enable_rename.unwrap_or(global.enable_rename),
        enable_delete: table.enable_delete.unwrap_or(global.enable_delete),
        read_only: table.read_only.unwrap_or(false),
        variables: table
            .variables
            .iter()
            .map(|rule| (rule.name.as_str().into(), variable_rule(rule)))
            .collect(),
    }
}

fn variable_rule(table: &VariableTable) -> VariableRule {
    VariableRule {
        integer: table.integer.unwrap_or(false),
        min: table.min,
        max: table.max,
        only_increase: table.only_increase.unwrap_or(false),
        max_step: table.max_step,
        writers: table.writers.as_ref().map(|names| {
            names
                .iter()
                .map(|name| name.to_ascii_lowercase().into_boxed_str())
                .collect()
        }),
        max_sets_per_minute: table.max_sets_per_minute,
    }
}
