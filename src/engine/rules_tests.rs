//! The engine applying projects' settings and rules: per room, per variable, per user.

use super::*;

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

const F: Format = Format(0);

fn engine_with(projects: Vec<(&str, ProjectSettings)>) -> Engine {
    let mut engine = Engine::new(Limits::default(), encode);
    engine.set_rules(rules(projects));
    engine
}

fn rules(projects: Vec<(&str, ProjectSettings)>) -> Rules {
    Rules {
        default: ProjectSettings::default(),
        projects: projects
            .into_iter()
            .map(|(id, settings)| (id.to_owned(), settings))
            .collect(),
    }
}

fn with_rule(name: &str, rule: VariableRule) -> ProjectSettings {
    ProjectSettings {
        variables: vec![(name.into(), rule)],
        ..ProjectSettings::default()
    }
}

fn join_as(engine: &mut Engine, room: &str, client: u64, user: &str) -> RoomKey {
    engine
        .join_as(room, ClientId(client), user, F, None, Instant::now())
        .expect("join")
}

fn set(engine: &mut Engine, room: RoomKey, client: u64, value: &str, now: Instant) -> SetOutcome {
    engine.set_at(
        room,
        ClientId(client),
        "☁ s",
        ValueRef::Number(value),
        true,
        now,
    )
}

fn refused(rule: Rule) -> SetOutcome {
    SetOutcome::Rejected(Rejection::Rule(rule))
}

fn flushed(engine: &mut Engine) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    engine.flush(|_, client, frame| {
        out.push((client.0, frame.to_string()));
        true
    });
    out.sort();
    out
}

#[test]
fn a_refused_set_changes_nothing_and_is_not_relayed() {
    let rule = VariableRule {
        only_increase: true,
        ..VariableRule::default()
    };
    let mut e = engine_with(vec![("1", with_rule("☁ s", rule))]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "a");
    join_as(&mut e, "1", 2, "b");
    assert_eq!(set(&mut e, room, 1, "10", now), SetOutcome::Applied);
    assert_eq!(flushed(&mut e), vec![(2, "☁ s=10".to_owned())]);
    assert_eq!(set(&mut e, room, 1, "9", now), refused(Rule::OnlyIncrease));
    assert_eq!(flushed(&mut e), vec![]);
    assert_eq!(e.value("1", "☁ s"), Some(ValueRef::Number("10")));
    assert_eq!(e.stats.rule_violations, 1);
    let counted: Vec<_> = e.refusals.iter().collect();
    assert_eq!(counted, vec![("1", Rule::OnlyIncrease, 1)]);
    // Another project has no rules.
    let other = join_as(&mut e, "2", 3, "c");
    assert_eq!(set(&mut e, other, 3, "10", now), SetOutcome::Applied);
    assert_eq!(set(&mut e, other, 3, "9", now), SetOutcome::Applied);
}

#[test]
fn writers_are_matched_case_insensitively_with_the_name_joined_with() {
    let rule = VariableRule {
        writers: Some(vec!["alice".into()]),
        ..VariableRule::default()
    };
    let mut e = engine_with(vec![("1", with_rule("☁ s", rule))]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "ALICE");
    join_as(&mut e, "1", 2, "bob");
    assert_eq!(set(&mut e, room, 1, "1", now), SetOutcome::Applied);
    assert_eq!(set(&mut e, room, 2, "2", now), refused(Rule::Writers));
    // Other variables of the project have no rule.
    let other = e.set_at(room, ClientId(2), "☁ t", ValueRef::Number("1"), true, now);
    assert_eq!(other, SetOutcome::Applied);
}

#[test]
fn max_sets_per_minute_is_per_user_and_refills() {
    let rule = VariableRule {
        max_sets_per_minute: Some(2),
        ..VariableRule::default()
    };
    let mut e = engine_with(vec![("1", with_rule("☁ s", rule))]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "alice");
    join_as(&mut e, "1", 2, "Alice");
    join_as(&mut e, "1", 3, "bob");
    assert_eq!(set(&mut e, room, 1, "1", now), SetOutcome::Applied);
    // Alice's second connection spends the same budget.
    assert_eq!(set(&mut e, room, 2, "2", now), SetOutcome::Applied);
    assert_eq!(
        set(&mut e, room, 2, "3", now),
        refused(Rule::MaxSetsPerMinute)
    );
    assert_eq!(
        set(&mut e, room, 1, "3", now),
        refused(Rule::MaxSetsPerMinute)
    );
    // Bob has his own.
    assert_eq!(set(&mut e, room, 3, "3", now), SetOutcome::Applied);
    // Half a minute gives one set back.
    let later = now + Duration::from_secs(30);
    assert_eq!(set(&mut e, room, 1, "4", later), SetOutcome::Applied);
    assert_eq!(
        set(&mut e, room, 1, "5", later),
        refused(Rule::MaxSetsPerMinute)
    );
    // A refused value does not spend the budget.
    let min = VariableRule {
        max_sets_per_minute: Some(1),
        min: Some(0.0),
        ..VariableRule::default()
    };
    e.set_rules(rules(vec![("1", with_rule("☁ s", min))]));
    assert_eq!(set(&mut e, room, 3, "-1", later), refused(Rule::Min));
    assert_eq!(set(&mut e, room, 3, "1", later), SetOutcome::Applied);
    // The budget is kept on members: nothing is left once they leave.
    for client in 1..=3 {
        e.leave(room, ClientId(client), later);
    }
    assert!(e.rooms.iter().all(|(_, r)| r.members.is_empty()));
}

#[test]
fn new_rules_apply_to_rooms_and_variables_already_in_memory() {
    let mut e = engine_with(vec![]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "a");
    assert_eq!(set(&mut e, room, 1, "100", now), SetOutcome::Applied);
    let cap = VariableRule {
        max: Some(50.0),
        ..VariableRule::default()
    };
    e.set_rules(rules(vec![("1", with_rule("☁ s", cap.clone()))]));
    assert_eq!(set(&mut e, room, 1, "60", now), refused(Rule::Max));
    assert_eq!(set(&mut e, room, 1, "50", now), SetOutcome::Applied);
    // A variable under a rule keeps it: it can be neither renamed nor deleted, and no other
    // variable can be renamed onto its name (each would carry a value no rule checked).
    e.set_rules(rules(vec![(
        "1",
        ProjectSettings {
            enable_rename: true,
            enable_delete: true,
            ..with_rule("☁ s", cap)
        },
    )]));
    assert!(e.may_rename(room));
    let protected = Err(EditError::Protected);
    assert_eq!(e.rename(room, ClientId(1), "☁ s", "☁ free"), protected);
    assert_eq!(e.delete(room, "☁ s"), protected);
    let other = e.set_at(
        room,
        ClientId(1),
        "☁ other",
        ValueRef::Number("99"),
        true,
        now,
    );
    assert_eq!(other, SetOutcome::Applied);
    assert_eq!(e.rename(room, ClientId(1), "☁ other", "☁ s"), protected);
    assert_eq!(e.rename(room, ClientId(1), "☁ other", "☁ free"), Ok(()));
    assert_eq!(e.delete(room, "☁ free"), Ok(()));
    assert_eq!(set(&mut e, room, 1, "60", now), refused(Rule::Max));
    // Removing the table gives the room the server-wide settings back.
    e.set_rules(rules(vec![]));
    assert_eq!(set(&mut e, room, 1, "1000", now), SetOutcome::Applied);
    assert!(!e.may_rename(room));
}

#[test]
fn project_overrides_change_only_their_project() {
    let settings = ProjectSettings {
        allow_non_numeric: true,
        max_variables_per_room: 1,
        max_value_chars: 3,
        max_clients_per_room: 1,
        ..ProjectSettings::default()
    };
    let mut e = engine_with(vec![("1", settings)]);
    let now = Instant::now();
    let special = join_as(&mut e, "1", 1, "a");
    let plain = join_as(&mut e, "2", 2, "b");
    let text = |e: &mut Engine, room, name, value| {
        e.set_at(room, ClientId(0), name, ValueRef::Text(value), true, now)
    };
    assert_eq!(text(&mut e, special, "☁ a", "abc"), SetOutcome::Applied);
    let long = text(&mut e, special, "☁ a", "abcd");
    assert_eq!(long, SetOutcome::Rejected(Rejection::InvalidValue));
    let second = text(&mut e, special, "☁ b", "1");
    assert_eq!(second, SetOutcome::Rejected(Rejection::TooManyVariables));
    let full = e.join_as("1", ClientId(3), "c", F, None, now);
    assert_eq!(full, Err(JoinError::RoomFull));
    // The other project keeps the server-wide settings.
    let words = text(&mut e, plain, "☁ a", "abc");
    assert_eq!(words, SetOutcome::Rejected(Rejection::InvalidValue));
    assert_eq!(text(&mut e, plain, "☁ a", "1234"), SetOutcome::Applied);
    assert_eq!(text(&mut e, plain, "☁ b", "1"), SetOutcome::Applied);
    assert!(e.join_as("2", ClientId(4), "d", F, None, now).is_ok());
}

#[test]
fn a_read_only_project_refuses_every_change() {
    let settings = ProjectSettings {
        read_only: true,
        enable_rename: true,
        enable_delete: true,
        ..ProjectSettings::default()
    };
    let mut e = engine_with(vec![("1", settings)]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "a");
    assert_eq!(set(&mut e, room, 1, "1", now), refused(Rule::ReadOnly));
    assert!(!e.may_rename(room));
    assert!(!e.may_delete(room));
    assert_eq!(e.variable_count(room), 0);
}

/// The frames each client got from one flush of every room.
fn flush_frames(e: &mut Engine) -> Vec<(u64, String)> {
    let mut frames = Vec::new();
    e.flush(|_, client, frame| {
        frames.push((client.0, frame.as_str().to_owned()));
        true
    });
    frames
}

#[test]
fn a_refused_setter_gets_the_current_value_at_the_next_flush_and_nobody_else_does() {
    let cap = VariableRule {
        max: Some(50.0),
        ..VariableRule::default()
    };
    let mut e = engine_with(vec![("1", with_rule("☁ s", cap))]);
    let now = Instant::now();
    let room = join_as(&mut e, "1", 1, "a");
    join_as(&mut e, "1", 2, "b");
    // Someone else's value: the refused setter had been sent it already.
    assert_eq!(set(&mut e, room, 2, "40", now), SetOutcome::Applied);
    assert_eq!(flush_frames(&mut e), vec![(1, "☁ s=40".to_owned())]);
    assert_eq!(set(&mut e, room, 1, "60", now), refused(Rule::Max));
    assert_eq!(set(&mut e, room, 1, "70", now), refused(Rule::Max));
    e.resend(room, ClientId(1), "☁ s");
    e.resend(room, ClientId(1), "☁ s");
    assert_eq!(flush_frames(&mut e), vec![(1, "☁ s=40".to_owned())]);
    assert_eq!(flush_frames(&mut e), vec![], "once");
    // Its own earlier value, which it is otherwise never sent.
    assert_eq!(set(&mut e, room, 1, "45", now), SetOutcome::Applied);
    assert_eq!(flush_frames(&mut e), vec![(2, "☁ s=45".to_owned())]);
    assert_eq!(set(&mut e, room, 1, "80", now), refused(Rule::Max));
    e.resend(room, ClientId(1), "☁ s");
    assert_eq!(flush_frames(&mut e), vec![(1, "☁ s=45".to_owned())]);
}
