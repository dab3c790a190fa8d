//! Projects' variable rules in the sans-IO engine: random rules (re-installed at random
//! moments, as SIGHUP does) × random sets from up to 5 clients with names differing only in
//! case, in a room with rules and one without. The engine is flushed after every operation,
//! and after each step:
//! - a set the engine refused changed nothing and reached nobody (no frame at all);
//! - an applied set reached every other member of its room, with its value;
//! - an applied set satisfies the rule of its variable as the harness knows it (bounds,
//!   integer, only-increase and max-step against the value before, writers
//!   case-insensitively), and a read-only project applies none;
//! - a refusal by rule names a rule the variable (or its project) has, and the room without a
//!   table refuses nothing by rule.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stratus::engine::{
    ClientId, Engine, Format, Limits, ProjectSettings, Rejection, Rule, Rules, SetLine, SetOutcome,
    ValueRef, VariableRule,
};

const ROOMS: [&str; 2] = ["ruled", "free"];
const USERS: [&str; 5] = ["alice", "ALICE", "bob", "", "carol"];
const NAMES: [&str; 3] = ["☁ a", "☁ b", "☁ c"];
const TEXTS: [&str; 8] = ["", "1", "-.5", "007", "abc", "1e5", "2.50", "-0"];

#[derive(Arbitrary, Debug, Clone)]
struct ArbRule {
    integer: bool,
    min: Option<i8>,
    max: Option<i8>,
    only_increase: bool,
    max_step: Option<u8>,
    /// Which of USERS may write (bit i: USERS[i], as written in the file: any case).
    writers: Option<u8>,
    per_minute: Option<u8>,
}

#[derive(Arbitrary, Debug, Clone)]
struct ArbRules {
    read_only: bool,
    allow_non_numeric: bool,
    rules: [Option<ArbRule>; 3],
}

#[derive(Arbitrary, Debug)]
enum Val {
    Int(i16),
    Quarter(i16),
    Text(u8),
    AnyText(String),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Join { client: u8, room: bool },
    Leave { client: u8 },
    Set { client: u8, name: u8, value: Val },
    Wait { seconds: u8 },
    Reinstall(ArbRules),
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: ArbRules,
    ops: Vec<Op>,
}

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

fn settings(arb: &ArbRules) -> ProjectSettings {
    let variables = NAMES
        .iter()
        .zip(&arb.rules)
        .filter_map(|(name, rule)| {
            let rule = rule.as_ref()?;
            let (min, max) = match (rule.min, rule.max) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                bounds => bounds,
            };
            let writers = rule.writers.map(|bits| {
                USERS
                    .iter()
                    .enumerate()
                    .filter(|(i, name)| bits & (1 << i) != 0 && !name.is_empty())
                    .map(|(_, name)| name.to_ascii_lowercase().into_boxed_str())
                    .collect()
            });
            let variable = VariableRule {
                integer: rule.integer,
                min: min.map(f64::from),
                max: max.map(f64::from),
                only_increase: rule.only_increase,
                max_step: rule.max_step.map(f64::from),
                writers,
                max_sets_per_minute: rule.per_minute.map(|n| u32::from(n).max(1)),
            };
            Some(((*name).into(), variable))
        })
        .collect();
    ProjectSettings {
        read_only: arb.read_only,
        allow_non_numeric: arb.allow_non_numeric,
        variables,
        ..ProjectSettings::default()
    }
}

fn install(engine: &mut Engine, arb: &ArbRules) -> ProjectSettings {
    let project = settings(arb);
    engine.set_rules(Rules {
        default: ProjectSettings::default(),
        projects: vec![(ROOMS[0].to_owned(), project.clone())],
    });
    project
}

fn number(text: &str) -> Option<f64> {
    if text.is_empty() {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// Whether the rule the harness installed allows this applied set.
fn allowed(rule: &VariableRule, user: &str, new: &str, before: Option<&str>) -> bool {
    let writer_ok = rule
        .writers
        .as_ref()
        .is_none_or(|w| w.iter().any(|name| **name == *user.to_ascii_lowercase()));
    let numeric = rule.integer
        || rule.min.is_some()
        || rule.max.is_some()
        || rule.only_increase
        || rule.max_step.is_some();
    if !numeric {
        return writer_ok;
    }
    let Some(value) = number(new) else {
        return false;
    };
    let before = before.and_then(number);
    writer_ok
        && (!rule.integer || value.fract() == 0.0)
        && rule.min.is_none_or(|min| value >= min)
        && rule.max.is_none_or(|max| value <= max)
        && (!rule.only_increase || before.is_none_or(|b| value >= b))
        && rule
            .max_step
            .is_none_or(|step| before.is_none_or(|b| (value - b).abs() <= step))
}

fn has_rule(settings: &ProjectSettings, name: &str, rule: Rule) -> bool {
    if rule == Rule::ReadOnly {
        return settings.read_only;
    }
    let Some((_, r)) = settings.variables.iter().find(|(n, _)| &**n == name) else {
        return false;
    };
    match rule {
        Rule::ReadOnly => false,
        Rule::Writers => r.writers.is_some(),
        Rule::Integer | Rule::Min | Rule::Max | Rule::OnlyIncrease | Rule::MaxStep => {
            r.integer
                || r.min.is_some()
                || r.max.is_some()
                || r.only_increase
                || r.max_step.is_some()
        }
        Rule::MaxSetsPerMinute => r.max_sets_per_minute.is_some(),
    }
}

fuzz_target!(|input: Input| {
    let mut engine = Engine::new(Limits::default(), encode);
    let mut project = install(&mut engine, &input.rules);
    let mut now = Instant::now();
    // Which room each client is in.
    let mut rooms: [Option<usize>; USERS.len()] = [None; USERS.len()];
    for op in input.ops.iter().take(300) {
        let mut expect_silence = true;
        let mut applied: Option<(usize, usize, String)> = None;
        match op {
            Op::Join { client, room } => {
                let c = usize::from(*client) % USERS.len();
                let r = usize::from(*room);
                if let Some(old) = rooms[c].take() {
                    let key = engine.room_key(ROOMS[old]).expect("joined room is in memory");
                    engine.leave(key, ClientId(c as u64), now);
                }
                let joined = engine.join_as(
                    ROOMS[r],
                    ClientId(c as u64),
                    USERS[c],
                    Format(0),
                    None,
                    now,
                );
                if joined.is_ok() {
                    rooms[c] = Some(r);
                }
                // A joiner is sent nothing by a flush: it takes the room as it is.
            }
            Op::Leave { client } => {
                let c = usize::from(*client) % USERS.len();
                if let Some(old) = rooms[c].take() {
                    let key = engine.room_key(ROOMS[old]).expect("joined room is in memory");
                    engine.leave(key, ClientId(c as u64), now);
                }
            }
            Op::Wait { seconds } => now += Duration::from_secs(u64::from(*seconds)),
            Op::Reinstall(arb) => project = install(&mut engine, arb),
            Op::Set {
                client,
                name,
                value,
            } => {
                let c = usize::from(*client) % USERS.len();
                let Some(r) = rooms[c] else {
                    continue;
                };
                let key = engine.room_key(ROOMS[r]).expect("joined room is in memory");
                let name = NAMES[usize::from(*name) % NAMES.len()];
                let text = match value {
                    Val::Int(n) => n.to_string(),
                    Val::Quarter(n) => (f64::from(*n) / 4.0).to_string(),
                    Val::Text(i) => TEXTS[usize::from(*i) % TEXTS.len()].to_owned(),
                    Val::AnyText(s) => s.clone(),
                };
                let value = match value {
                    Val::Int(_) | Val::Quarter(_) => ValueRef::Number(&text),
                    _ => ValueRef::Text(&text),
                };
                let before = engine.current_value(key, name).map(|v| v.text().to_owned());
                let outcome = engine.set_at(key, ClientId(c as u64), name, value, true, now);
                let after = engine.current_value(key, name).map(|v| v.text().to_owned());
                match outcome {
                    SetOutcome::Applied => {
                        assert_eq!(after.as_deref(), Some(text.as_str()));
                        if r == 0 {
                            assert!(!project.read_only, "a read-only project applied a set");
                            if let Some((_, rule)) =
                                project.variables.iter().find(|(n, _)| &**n == name)
                            {
                                assert!(
                                    allowed(rule, USERS[c], &text, before.as_deref()),
                                    "{name} = {text:?} (was {before:?}) by {:?} broke {rule:?}",
                                    USERS[c]
                                );
                            }
                        }
                        expect_silence = false;
                        applied = Some((r, c, format!("{name}={text}")));
                    }
                    SetOutcome::Rejected(why) => {
                        assert_eq!(after, before, "a refused set changed the value");
                        if let Rejection::Rule(rule) = why {
                            assert_eq!(r, 0, "the room without rules refused by {rule:?}");
                            assert!(has_rule(&project, name, rule), "{name}: {rule:?}");
                        }
                    }
                    SetOutcome::Unknown => panic!("a set that creates is never Unknown"),
                }
            }
        }
        let mut delivered: Vec<(u64, String)> = Vec::new();
        engine.flush_due(now, |_, client, frame| {
            delivered.push((client.0, frame.to_string()));
            true
        });
        if expect_silence {
            assert!(delivered.is_empty(), "{op:?} sent {delivered:?}");
        }
        if let Some((room, setter, line)) = applied {
            let mut expected: Vec<u64> = (0..USERS.len())
                .filter(|&c| c != setter && rooms[c] == Some(room))
                .map(|c| c as u64)
                .collect();
            let mut got: Vec<u64> = delivered.iter().map(|(c, _)| *c).collect();
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected, "who got {line}");
            for (_, frame) in &delivered {
                assert_eq!(frame, &line);
            }
        }
    }
});
