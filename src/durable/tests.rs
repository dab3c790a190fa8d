//! The plans in virtual time, with a real engine: `now` is `t0` plus what the test says, and
//! the backend is played by the test (its answers are values).

use std::time::{Duration, Instant};

use super::{ClusterPlan, Command, StorePlan};
use crate::cluster::{Event, RoomState, Round, RoundResult};
use crate::engine::{
    Backend, ClientId, Engine, Format, JoinError, Limits, SavedVariable, SetLine, ValueRef,
};
use crate::store::Reply;

const F: Format = Format(0);
const TICK: Duration = Duration::from_millis(100);

fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
    out.push_str(line.name);
    out.push('=');
    out.push_str(line.value.text());
}

fn engine(backend: Backend) -> Engine {
    let mut e = Engine::new(Limits::default(), encode);
    e.set_backend(backend);
    e
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

fn join(e: &mut Engine, room: &str, client: u64, now: Instant) -> Result<(), JoinError> {
    e.join(room, ClientId(client), F, None, now).map(|_| ())
}

fn set(e: &mut Engine, room: &str, client: u64, value: &str) {
    let key = e.room_key(room).expect("room in memory");
    e.set(key, ClientId(client), "☁ v", ValueRef::Number(value), true);
}

/// The commands of one poll, and the clients it refused.
fn poll(plan: &mut ClusterPlan, e: &mut Engine, now: Instant) -> (Vec<Command>, Vec<ClientId>) {
    let mut out = Vec::new();
    let refused = plan.poll(e, now, &mut out);
    (out, refused)
}

fn rounds(commands: Vec<Command>) -> Vec<Round> {
    commands
        .into_iter()
        .filter_map(|c| match c {
            Command::Round(round) => Some(round),
            _ => None,
        })
        .collect()
}

fn subscribes(commands: &[Command]) -> Vec<&str> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Subscribe(room) => Some(&**room),
            _ => None,
        })
        .collect()
}

fn read(room: &str, version: u64) -> RoomState {
    RoomState {
        room: room.into(),
        version,
        variables: vec![SavedVariable {
            user: Default::default(),
            changed_ms: 0,
            name: "☁ v".into(),
            value: version.to_string(),
            is_number: true,
        }],
    }
}

fn answer(round: Round, loaded: Vec<RoomState>) -> Event {
    let member_totals = round.members.clone();
    Event::RoundDone(RoundResult {
        batch: round.batch,
        saved: true,
        loaded,
        load_failed: Vec::new(),
        member_totals,
    })
}

/// Answers every round that goes out until none does (member counts after joins).
fn settle(plan: &mut ClusterPlan, e: &mut Engine, now: Instant) {
    loop {
        let (commands, _) = poll(plan, e, now);
        let Some(round) = rounds(commands).pop() else {
            return;
        };
        assert!(round.loads.is_empty(), "{round:?}");
        plan.handle_event(e, answer(round, Vec::new()), now);
    }
}

/// Brings `room` into memory as a join to it does (subscribe, confirmation, read in a round),
/// joins `client`, and lets the member count go out.
fn bring_in(plan: &mut ClusterPlan, e: &mut Engine, room: &str, client: u64, at: Instant) {
    assert_eq!(join(e, room, client, at), Err(JoinError::Loading));
    let (commands, _) = poll(plan, e, at);
    assert_eq!(subscribes(&commands), [room]);
    assert!(plan
        .handle_event(e, Event::Subscribed(room.into()), at)
        .is_empty());
    let (commands, _) = poll(plan, e, at);
    let round = rounds(commands).pop().expect("a round reads the room");
    assert_eq!(round.loads, [Box::<str>::from(room)]);
    let resumed = plan.handle_event(e, answer(round, vec![read(room, 1)]), at);
    assert_eq!(resumed, [ClientId(client)]);
    join(e, room, client, at).expect("join after the read");
    settle(plan, e, at);
}

#[test]
fn an_outage_during_a_read_refuses_the_join_at_once_and_the_late_answer_changes_nothing() {
    let t0 = Instant::now();
    let mut e = engine(Backend::Cluster);
    let mut plan = ClusterPlan::new("n".into(), TICK, t0);
    assert_eq!(join(&mut e, "r", 1, t0), Err(JoinError::Loading));
    let (commands, _) = poll(&mut plan, &mut e, t0);
    assert_eq!(subscribes(&commands), ["r"]);
    plan.handle_event(&mut e, Event::Subscribed("r".into()), ms(t0, 1));
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 2));
    let round = rounds(commands).pop().expect("the read goes out");
    assert_eq!(round.loads, [Box::<str>::from("r")]);

    let refused = plan.handle_event(&mut e, Event::Outage, ms(t0, 10));
    assert_eq!(refused, [ClientId(1)], "the join is refused at once");
    assert_eq!(
        join(&mut e, "r", 1, ms(t0, 10)),
        Err(JoinError::Unavailable)
    );
    assert_eq!(
        plan.poll_timeout(&e, ms(t0, 10)),
        None,
        "no round during an outage"
    );

    // The read comes back after all: nobody waits for it any more.
    let resumed = plan.handle_event(&mut e, answer(round, vec![read("r", 1)]), ms(t0, 20));
    assert!(resumed.is_empty(), "the join is not resumed twice");
    assert!(e.room_key("r").is_none(), "the room is not installed");
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 30));
    assert!(!commands.is_empty());
    assert!(
        commands
            .iter()
            .all(|c| matches!(c, Command::Unsubscribe(room) if &**room == "r")),
        "its channel is left: {commands:?}"
    );
}

#[test]
fn a_reload_of_every_room_drops_the_reads_of_the_round_out_and_reads_them_again() {
    let t0 = Instant::now();
    let mut e = engine(Backend::Cluster);
    let mut plan = ClusterPlan::new("n".into(), TICK, t0);
    bring_in(&mut plan, &mut e, "r", 1, t0);
    // A join to another room; its read is out when the subscription is lost.
    let at = ms(t0, 10);
    assert_eq!(join(&mut e, "s", 2, at), Err(JoinError::Loading));
    let (commands, _) = poll(&mut plan, &mut e, at);
    assert_eq!(subscribes(&commands), ["s"]);
    plan.handle_event(&mut e, Event::Subscribed("s".into()), at);
    let (commands, _) = poll(&mut plan, &mut e, at);
    let round = rounds(commands).pop().expect("the read goes out");
    assert_eq!(round.loads, [Box::<str>::from("s")]);

    assert!(plan
        .handle_event(&mut e, Event::Resubscribed, ms(t0, 20))
        .is_empty());
    // The read predates what the lost subscription missed: it is not used.
    let resumed = plan.handle_event(&mut e, answer(round, vec![read("s", 3)]), ms(t0, 30));
    assert!(resumed.is_empty(), "{resumed:?}");
    assert!(e.room_key("s").is_none(), "the stale read is not installed");

    // Both rooms are read again: the one in memory at once, the awaited one after its
    // subscription is confirmed again.
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 40));
    assert_eq!(subscribes(&commands), ["s"]);
    let round = rounds(commands)
        .pop()
        .expect("a round reads the room in memory");
    assert_eq!(round.loads, [Box::<str>::from("r")]);
    plan.handle_event(&mut e, answer(round, vec![read("r", 2)]), ms(t0, 50));
    plan.handle_event(&mut e, Event::Subscribed("s".into()), ms(t0, 50));
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 60));
    let round = rounds(commands)
        .pop()
        .expect("a round reads the awaited room");
    assert_eq!(round.loads, [Box::<str>::from("s")]);
    let resumed = plan.handle_event(&mut e, answer(round, vec![read("s", 4)]), ms(t0, 70));
    assert_eq!(resumed, [ClientId(2)]);
    assert_eq!(
        e.value("s", "☁ v"),
        Some(ValueRef::Number("4")),
        "the room is the current read"
    );
}

#[test]
fn member_counts_redis_did_not_answer_for_are_reported_again_and_only_those() {
    let t0 = Instant::now();
    let mut e = engine(Backend::Cluster);
    let mut plan = ClusterPlan::new("n".into(), TICK, t0);
    bring_in(&mut plan, &mut e, "a", 1, t0);
    bring_in(&mut plan, &mut e, "b", 2, t0);
    join(&mut e, "a", 3, ms(t0, 5)).expect("join");
    join(&mut e, "b", 4, ms(t0, 5)).expect("join");
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 10));
    let round = rounds(commands).pop().expect("the counts go out");
    let mut members = round.members.clone();
    members.sort();
    assert_eq!(members, [("a".into(), 2), ("b".into(), 2)]);

    // Redis answers for "a" only.
    let result = RoundResult {
        batch: round.batch,
        saved: true,
        member_totals: vec![("a".into(), 3)],
        ..RoundResult::default()
    };
    plan.handle_event(&mut e, Event::RoundDone(result), ms(t0, 20));
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 30));
    let round = rounds(commands)
        .pop()
        .expect("the unanswered count goes out again");
    assert_eq!(round.members, [("b".into(), 2)], "b again, a not");
}

#[test]
fn a_dead_helper_thread_is_an_outage_that_never_ends() {
    let t0 = Instant::now();
    let mut e = engine(Backend::Cluster);
    let mut plan = ClusterPlan::new("n".into(), TICK, t0);
    bring_in(&mut plan, &mut e, "r", 1, t0);
    assert_eq!(join(&mut e, "s", 2, ms(t0, 10)), Err(JoinError::Loading));

    let refused = plan.handle_broken(&mut e, ms(t0, 20));
    assert_eq!(
        refused,
        [ClientId(2)],
        "a join waiting for a read is refused"
    );
    assert!(plan.handle_broken(&mut e, ms(t0, 30)).is_empty(), "once");

    // Redis answering again does not bring the node back.
    assert!(plan
        .handle_event(&mut e, Event::Restored, ms(t0, 40))
        .is_empty());
    set(&mut e, "r", 1, "5");
    assert_eq!(plan.poll_timeout(&e, ms(t0, 50)), None);
    let (commands, _) = poll(&mut plan, &mut e, ms(t0, 1000));
    assert!(rounds(commands).is_empty(), "no round");
    assert!(e.has_unsaved(), "the change stays owed");
    // Joins to rooms not in memory are refused at once.
    assert_eq!(join(&mut e, "t", 3, ms(t0, 1000)), Err(JoinError::Loading));
    let (commands, refused) = poll(&mut plan, &mut e, ms(t0, 1000));
    assert_eq!(refused, [ClientId(3)]);
    assert!(subscribes(&commands).is_empty());
}

/// A store plan with room "r" in memory (as a join loads it) and one member.
fn store_with_room(t0: Instant) -> (StorePlan, Engine) {
    let mut e = engine(Backend::Store);
    let mut plan = StorePlan::new(TICK, t0);
    assert_eq!(join(&mut e, "r", 1, t0), Err(JoinError::Loading));
    let mut out = Vec::new();
    plan.poll(&mut e, t0, &mut out);
    assert!(matches!(&out[..], [Command::Load(room)] if &**room == "r"));
    let resumed = plan.handle_reply(&mut e, Reply::Loaded("r".into(), Vec::new(), 0), t0);
    assert_eq!(resumed, [ClientId(1)]);
    join(&mut e, "r", 1, t0).expect("join");
    (plan, e)
}

fn saves(plan: &mut StorePlan, e: &mut Engine, now: Instant) -> Vec<crate::engine::Batch> {
    let mut out = Vec::new();
    plan.poll(e, now, &mut out);
    out.into_iter()
        .filter_map(|c| match c {
            Command::Save(batch) => Some(batch),
            _ => None,
        })
        .collect()
}

#[test]
fn the_store_gets_a_batch_at_most_every_interval() {
    let t0 = Instant::now();
    let (mut plan, mut e) = store_with_room(t0);
    set(&mut e, "r", 1, "1");
    let batch = saves(&mut plan, &mut e, t0).pop().expect("a batch at once");
    plan.handle_reply(&mut e, Reply::Saved(batch), ms(t0, 5));
    set(&mut e, "r", 1, "2");
    assert!(
        saves(&mut plan, &mut e, ms(t0, 50)).is_empty(),
        "within the interval"
    );
    assert_eq!(plan.poll_timeout(&e), Some(t0 + TICK));
    assert_eq!(saves(&mut plan, &mut e, t0 + TICK).len(), 1);
}

#[test]
fn the_store_has_one_batch_out_at_a_time() {
    let t0 = Instant::now();
    let (mut plan, mut e) = store_with_room(t0);
    set(&mut e, "r", 1, "1");
    let batch = saves(&mut plan, &mut e, t0).pop().expect("a batch");
    set(&mut e, "r", 1, "2");
    assert!(
        saves(&mut plan, &mut e, ms(t0, 500)).is_empty(),
        "one is out"
    );
    assert_eq!(plan.poll_timeout(&e), None);
    plan.handle_reply(&mut e, Reply::Saved(batch), ms(t0, 600));
    assert_eq!(saves(&mut plan, &mut e, ms(t0, 600)).len(), 1);
}

#[test]
fn a_batch_the_store_could_not_take_is_given_back() {
    let t0 = Instant::now();
    let (mut plan, mut e) = store_with_room(t0);
    set(&mut e, "r", 1, "1");
    let batch = saves(&mut plan, &mut e, t0).pop().expect("a batch");
    plan.handle_unsent(&mut e, Command::Save(batch));
    assert!(e.has_unsaved(), "owed again");
    let batch = saves(&mut plan, &mut e, t0 + TICK)
        .pop()
        .expect("sent again");
    assert_eq!(batch.rooms[0].variables[0].value, "1");
}
