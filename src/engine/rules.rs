//! Per-project settings and variable rules: what the operator allows in one project's room
//! beyond the server-wide limits, and the checks a set must pass there.
//!
//! Built by the caller from its configuration ([`Rules`], plain data) and installed with
//! [`super::Engine::set_rules`]. Each room holds a shared reference to its project's resolved
//! settings, looked up once when the room is created or the rules are replaced, so a set in a
//! room without rules costs two branches. A variable remembers which rule applies to it and
//! resolves it again only when the room's rules changed (a reload) or it was renamed.
//!
//! Value checks are pure functions of the rule, the new value and the current one
//! ([`check_value`]); who may write and how often need the setter's name and time, which the
//! engine has from the member and the dialect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::rate::TokenBucket;
use super::value::ValueRef;
use super::Limits;

/// A rule a set broke; its [`Rule::name`] is the configuration key the operator wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The project is `read-only`.
    ReadOnly,
    Writers,
    Integer,
    Min,
    Max,
    OnlyIncrease,
    MaxStep,
    MaxSetsPerMinute,
}

impl Rule {
    pub const ALL: [Rule; 8] = [
        Rule::ReadOnly,
        Rule::Writers,
        Rule::Integer,
        Rule::Min,
        Rule::Max,
        Rule::OnlyIncrease,
        Rule::MaxStep,
        Rule::MaxSetsPerMinute,
    ];

    /// The configuration key, as array-RPC clients and `/metrics` are told it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::ReadOnly => "read-only",
            Rule::Writers => "writers",
            Rule::Integer => "integer",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::OnlyIncrease => "only-increase",
            Rule::MaxStep => "max-step",
            Rule::MaxSetsPerMinute => "max-sets-per-minute",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// What one variable of a project must satisfy. Every field is optional; an empty rule
/// accepts every valid value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VariableRule {
    /// Values must be whole numbers.
    pub integer: bool,
    /// Inclusive bounds.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// A value below the current one is refused (an equal one is accepted).
    pub only_increase: bool,
    /// `|new - current|` at most this.
    pub max_step: Option<f64>,
    /// Only these users may set it, compared case-insensitively; `None`: anyone.
    pub writers: Option<Vec<Box<str>>>,
    /// Sets per user per minute (a bucket of this many, refilled over a minute).
    pub max_sets_per_minute: Option<u32>,
}

impl VariableRule {
    /// Whether any check needs the value as a number.
    fn is_numeric(&self) -> bool {
        self.integer
            || self.min.is_some()
            || self.max.is_some()
            || self.only_increase
            || self.max_step.is_some()
    }
}

/// The settings of one project's rooms, fully resolved (the server-wide value where the
/// project sets none).
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectSettings {
    pub allow_non_numeric: bool,
    pub max_clients_per_room: usize,
    pub max_variables_per_room: usize,
    /// Longest string value, in characters.
    pub max_value_chars: usize,
    pub enable_rename: bool,
    pub enable_delete: bool,
    /// Nobody may set, rename or delete a variable.
    pub read_only: bool,
    /// Rules by variable name (exact, prefix included).
    pub variables: Vec<(Box<str>, VariableRule)>,
}

impl ProjectSettings {
    /// The server-wide settings, as `limits` gives them, with no rules.
    pub fn from_limits(limits: &Limits) -> Self {
        ProjectSettings {
            allow_non_numeric: limits.allow_non_numeric,
            max_clients_per_room: limits.max_clients_per_room,
            max_variables_per_room: limits.max_variables_per_room,
            max_value_chars: limits.max_value_chars,
            enable_rename: limits.enable_rename,
            enable_delete: limits.enable_delete,
            read_only: false,
            variables: Vec::new(),
        }
    }
}

impl Default for ProjectSettings {
    fn default() -> Self {
        ProjectSettings::from_limits(&Limits::default())
    }
}

/// Every project's settings: the server-wide ones, and those of projects the operator gave a
/// table. Plain data; the engine resolves it when installed.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    pub default: ProjectSettings,
    /// Project id → its settings (already merged with the server-wide ones).
    pub projects: Vec<(String, ProjectSettings)>,
}

/// One project's settings as rooms hold them.
#[derive(Debug)]
pub(crate) struct RoomRules {
    pub settings: ProjectSettings,
    /// Changes with every installation, so variables know to look their rule up again.
    pub epoch: u32,
    /// The project's row in [`Refusals`]; `None` for the server-wide settings.
    pub counted_as: Option<usize>,
}

impl RoomRules {
    /// The index of `name`'s rule, if it has one.
    pub fn rule_index(&self, name: &str) -> Option<u16> {
        self.settings
            .variables
            .iter()
            .position(|(rule_name, _)| &**rule_name == name)
            .and_then(|i| u16::try_from(i).ok())
    }

    pub fn rule(&self, index: u16) -> Option<&VariableRule> {
        self.settings
            .variables
            .get(usize::from(index))
            .map(|(_, rule)| rule)
    }

    pub fn has_rules(&self) -> bool {
        self.settings.read_only || !self.settings.variables.is_empty()
    }
}

/// The installed rules: a lookup by project id, used when a room is created.
#[derive(Debug)]
pub(crate) struct Installed {
    pub default: Arc<RoomRules>,
    projects: HashMap<Box<str>, Arc<RoomRules>>,
    epoch: u32,
}

impl Installed {
    pub fn new(default: ProjectSettings) -> Self {
        Installed {
            default: Arc::new(RoomRules {
                settings: default,
                epoch: 1,
                counted_as: None,
            }),
            projects: HashMap::new(),
            epoch: 1,
        }
    }

    /// Replaces everything with `rules`; each project gets its row in `refusals`.
    pub fn replace(&mut self, rules: Rules, refusals: &mut Refusals) {
        self.epoch = self.epoch.wrapping_add(1).max(1);
        let epoch = self.epoch;
        self.default = Arc::new(RoomRules {
            settings: rules.default,
            epoch,
            counted_as: None,
        });
        self.projects = rules
            .projects
            .into_iter()
            .map(|(id, settings)| {
                let row = refusals.row(&id);
                let rules = RoomRules {
                    settings,
                    epoch,
                    counted_as: Some(row),
                };
                (id.into_boxed_str(), Arc::new(rules))
            })
            .collect();
    }

    /// The rules of project `room_id`'s rooms.
    pub fn for_project(&self, room_id: &str) -> Arc<RoomRules> {
        self.projects.get(room_id).unwrap_or(&self.default).clone()
    }
}

/// Sets refused by a rule, per project and rule: one row per project that ever had a table
/// (bounded by the configuration files the server read).
#[derive(Debug, Default)]
pub struct Refusals {
    rows: Vec<(Box<str>, [u64; Rule::ALL.len()])>,
    /// Log lines about refusals: a few at once, then about one a second.
    log_budget: Option<TokenBucket>,
    unlogged: u64,
}

impl Refusals {
    /// Whether a refusal may be logged at `now`; if so, how many were not logged before it.
    pub fn log_permit(&mut self, now: Instant) -> Option<u64> {
        let budget = self
            .log_budget
            .get_or_insert_with(|| TokenBucket::new(1.0, 10.0, now));
        if budget.take(1.0, now) {
            Some(std::mem::take(&mut self.unlogged))
        } else {
            self.unlogged += 1;
            None
        }
    }

    fn row(&mut self, project: &str) -> usize {
        if let Some(row) = self.rows.iter().position(|(id, _)| &**id == project) {
            return row;
        }
        self.rows.push((project.into(), [0; Rule::ALL.len()]));
        self.rows.len() - 1
    }

    pub(crate) fn count(&mut self, row: Option<usize>, rule: Rule) {
        if let Some((_, counts)) = row.and_then(|row| self.rows.get_mut(row)) {
            if let Some(count) = counts.get_mut(rule.slot()) {
                *count += 1;
            }
        }
    }

    /// Every (project, rule, count) with a count, for `/metrics`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Rule, u64)> + '_ {
        self.rows.iter().flat_map(|(id, counts)| {
            Rule::ALL
                .iter()
                .zip(counts)
                .filter(|(_, &n)| n > 0)
                .map(move |(&rule, &n)| (&**id, rule, n))
        })
    }
}

/// Checks `value` against `rule`'s value checks, given the variable's `current` value (`None`
/// for a new variable). A value that is not a number fails the first numeric check; a current
/// value that is not a number does not limit `only-increase` or `max-step`.
pub fn check_value(
    rule: &VariableRule,
    value: ValueRef<'_>,
    current: Option<ValueRef<'_>>,
) -> Result<(), Rule> {
    if !rule.is_numeric() {
        return Ok(());
    }
    let first_numeric = if rule.integer {
        Rule::Integer
    } else if rule.min.is_some() {
        Rule::Min
    } else if rule.max.is_some() {
        Rule::Max
    } else if rule.only_increase {
        Rule::OnlyIncrease
    } else {
        Rule::MaxStep
    };
    let Some(new) = number(value) else {
        return Err(first_numeric);
    };
    if rule.integer && new.fract() != 0.0 {
        return Err(Rule::Integer);
    }
    if rule.min.is_some_and(|min| new < min) {
        return Err(Rule::Min);
    }
    if rule.max.is_some_and(|max| new > max) {
        return Err(Rule::Max);
    }
    let Some(current) = current.and_then(number) else {
        return Ok(());
    };
    if rule.only_increase && new < current {
        return Err(Rule::OnlyIncrease);
    }
    if rule
        .max_step
        .is_some_and(|step| (new - current).abs() > step)
    {
        return Err(Rule::MaxStep);
    }
    Ok(())
}

/// Whether `user` (already lowercase) may set a variable with `rule`.
pub fn may_write(rule: &VariableRule, user: &str) -> bool {
    rule.writers
        .as_ref()
        .is_none_or(|writers| writers.iter().any(|w| **w == *user))
}

/// A value as a finite number: a JSON number, or a string that reads as one (not empty).
fn number(value: ValueRef<'_>) -> Option<f64> {
    let text = value.text();
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> VariableRule {
        VariableRule::default()
    }

    fn check(rule: &VariableRule, new: &str, current: Option<&str>) -> Result<(), Rule> {
        check_value(rule, ValueRef::Number(new), current.map(ValueRef::Number))
    }

    #[test]
    fn bounds_are_inclusive() {
        let r = VariableRule {
            min: Some(0.0),
            max: Some(100.0),
            ..rule()
        };
        assert_eq!(check(&r, "0", None), Ok(()));
        assert_eq!(check(&r, "100", None), Ok(()));
        assert_eq!(check(&r, "-0.5", None), Err(Rule::Min));
        assert_eq!(check(&r, "100.01", None), Err(Rule::Max));
    }

    #[test]
    fn integers_are_whole_numbers_in_any_notation() {
        let r = VariableRule {
            integer: true,
            ..rule()
        };
        assert_eq!(check(&r, "5", None), Ok(()));
        assert_eq!(check(&r, "1e3", None), Ok(()));
        assert_eq!(check(&r, "-2.0", None), Ok(()));
        assert_eq!(check(&r, "2.5", None), Err(Rule::Integer));
    }

    #[test]
    fn only_increase_accepts_an_equal_value() {
        let r = VariableRule {
            only_increase: true,
            ..rule()
        };
        assert_eq!(check(&r, "10", Some("10")), Ok(()));
        assert_eq!(check(&r, "11", Some("10")), Ok(()));
        assert_eq!(check(&r, "9.99", Some("10")), Err(Rule::OnlyIncrease));
        // A new variable, or one whose value is not a number, has nothing to compare with.
        assert_eq!(check(&r, "-5", None), Ok(()));
        let text = check_value(&r, ValueRef::Number("-5"), Some(ValueRef::Text("abc")));
        assert_eq!(text, Ok(()));
    }

    #[test]
    fn max_step_counts_both_directions() {
        let r = VariableRule {
            max_step: Some(10.0),
            ..rule()
        };
        assert_eq!(check(&r, "110", Some("100")), Ok(()));
        assert_eq!(check(&r, "90", Some("100")), Ok(()));
        assert_eq!(check(&r, "89", Some("100")), Err(Rule::MaxStep));
        assert_eq!(check(&r, "111", Some("100")), Err(Rule::MaxStep));
        assert_eq!(check(&r, "-5", Some("-10")), Ok(()));
        assert_eq!(check(&r, "-21", Some("-10")), Err(Rule::MaxStep));
    }

    #[test]
    fn a_value_that_is_not_a_number_fails_the_first_numeric_rule() {
        let r = VariableRule {
            max: Some(5.0),
            only_increase: true,
            ..rule()
        };
        for bad in ["", "abc", "1e999"] {
            let result = check_value(&r, ValueRef::Text(bad), Some(ValueRef::Number("1")));
            assert_eq!(result, Err(Rule::Max), "{bad:?}");
        }
        assert_eq!(check_value(&r, ValueRef::Text("3"), None), Ok(()));
        // Without numeric rules any value passes.
        assert_eq!(check_value(&rule(), ValueRef::Text("abc"), None), Ok(()));
    }

    #[test]
    fn writers_are_compared_with_the_lowercased_name() {
        let r = VariableRule {
            writers: Some(vec!["alice".into()]),
            ..rule()
        };
        assert!(may_write(&r, "alice"));
        assert!(!may_write(&r, "bob"));
        assert!(!may_write(&r, ""));
        assert!(may_write(&rule(), ""));
        let nobody = VariableRule {
            writers: Some(Vec::new()),
            ..rule()
        };
        assert!(!may_write(&nobody, "alice"));
    }

    #[test]
    fn refusal_rows_are_kept_per_project_across_installations() {
        let mut refusals = Refusals::default();
        let mut installed = Installed::new(ProjectSettings::default());
        let rules = Rules {
            default: ProjectSettings::default(),
            projects: vec![("7".into(), ProjectSettings::default())],
        };
        installed.replace(rules.clone(), &mut refusals);
        let row = installed.for_project("7").counted_as;
        refusals.count(row, Rule::Min);
        installed.replace(rules, &mut refusals);
        assert_eq!(installed.for_project("7").counted_as, row);
        refusals.count(row, Rule::Min);
        let counted: Vec<_> = refusals.iter().collect();
        assert_eq!(counted, vec![("7", Rule::Min, 2)]);
        assert_eq!(installed.for_project("8").counted_as, None);
    }
}
