//! What the admin API asks of the engine: a room's summary and members, an operator's set and
//! delete, and finding a user's connections in a room.
//!
//! An operator's change is a change like a member's (the room is marked dirty, the backend
//! owes it, history records it), with three differences: its writer is nobody, so every
//! member is sent it; history and the variable show `@<operator>`; and the project's rules
//! (`read-only`, `writers`, the value rules, `max-sets-per-minute`) do not apply, since they
//! guard clients and an operator's repair must be able to restore any earlier value. The
//! value itself is checked as any set is (name, type, length, number of variables).

use std::sync::Arc;
use std::time::Instant;

use super::{ClientId, EditError, Engine, JoinError, Rejection, RoomKey, SetOutcome, ValueRef};
use super::{Format, NOBODY};

/// One room in the admin API's list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSummary {
    pub id: String,
    pub members: usize,
    pub variables: usize,
    /// Bytes of its variables' names and values.
    pub bytes: usize,
    /// The newest variable's time (Unix ms); `None` when no variable has one.
    pub last_change: Option<u64>,
}

/// One member of a room, as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminMember<'r> {
    pub client: ClientId,
    /// The name as its dialect shows it (empty when none).
    pub user: &'r str,
    pub format: Format,
    /// When it joined the room (Unix ms).
    pub joined_ms: u64,
}

impl Engine {
    /// The room `room_id` for an operator's change: its key when it is in memory; with a
    /// backend, [`JoinError::Loading`] (with `client` waiting for it as a join would, to be
    /// resumed when it is in) or the failed load's error; without one, a new empty room.
    pub fn admin_room(
        &mut self,
        room_id: &str,
        client: ClientId,
        now: Instant,
    ) -> Result<RoomKey, JoinError> {
        if let Some(key) = self.room_key(room_id) {
            return Ok(key);
        }
        if self.durable.loads_rooms() {
            return Err(self.durable.wait_for_load(room_id, client));
        }
        self.create_room(room_id, now).map(RoomKey)
    }

    /// `operator` sets `name` of `room` to `value` (created if new); see the module's text.
    pub fn admin_set(
        &mut self,
        room: RoomKey,
        operator: &Arc<str>,
        name: &str,
        value: ValueRef<'_>,
        now: Instant,
    ) -> Result<(), Rejection> {
        match self.set_checked(room, NOBODY, name, value, true, Some(now), Some(operator)) {
            SetOutcome::Applied => Ok(()),
            SetOutcome::Rejected(why) => Err(why),
            // Only a set that may not create reports it.
            SetOutcome::Unknown => Err(Rejection::InvalidName),
        }
    }

    /// `operator` deletes `name` of `room`; see the module's text.
    pub fn admin_delete(
        &mut self,
        room: RoomKey,
        operator: &Arc<str>,
        name: &str,
        now: Instant,
    ) -> Result<(), EditError> {
        self.delete_checked(room, NOBODY, name, Some(now), Some(operator))
    }

    /// Every room in memory, summarised.
    pub fn room_summaries(&self) -> Vec<RoomSummary> {
        self.rooms
            .iter()
            .map(|(_, room)| RoomSummary {
                id: room.id.to_string(),
                members: room.members.len(),
                variables: room.variables.len(),
                bytes: room
                    .variables
                    .iter()
                    .map(|v| v.name.len() + v.value.as_ref().text().len())
                    .sum(),
                last_change: room
                    .variables
                    .iter()
                    .map(|v| v.changed_ms)
                    .filter(|&ms| ms > 0)
                    .max(),
            })
            .collect()
    }

    /// The members of `room`, in the room's order.
    pub fn admin_members(&self, room: RoomKey) -> impl Iterator<Item = AdminMember<'_>> {
        self.rooms
            .get(room.0)
            .into_iter()
            .flat_map(|room| room.members.iter())
            .map(|m| AdminMember {
                client: m.client,
                user: &m.shown,
                format: m.format,
                joined_ms: m.joined_ms,
            })
    }

    /// The clients of `room` whose user name is `user`, compared case-insensitively (as
    /// `writers` rules compare it).
    pub fn clients_of_user(&self, room: RoomKey, user: &str) -> Vec<ClientId> {
        self.rooms
            .get(room.0)
            .into_iter()
            .flat_map(|room| room.members.iter())
            .filter(|m| !m.user.is_empty() && m.user.eq_ignore_ascii_case(user))
            .map(|m| m.client)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::engine::{Limits, ProjectSettings, Rule, Rules, SetLine, VariableRule, Verb};

    fn encode(_format: Format, _room: &str, line: SetLine<'_>, out: &mut String) {
        out.push_str(line.name);
        out.push('=');
        out.push_str(line.value.text());
    }

    fn engine() -> Engine {
        let mut e = Engine::new(Limits::default(), encode);
        e.set_history(100);
        e
    }

    fn flushed(e: &mut Engine) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        e.flush(|_, client, frame| {
            out.push((client.0, frame.to_string()));
            true
        });
        out
    }

    #[test]
    fn an_operators_set_reaches_every_member_and_is_recorded_as_theirs() {
        let mut e = engine();
        let now = Instant::now();
        let room = e
            .join_as("1", ClientId(1), "Alice", Format(0), None, now)
            .expect("join");
        let operator: Arc<str> = Arc::from("@root");
        e.admin_set(room, &operator, "☁ a", ValueRef::Number("5"), now)
            .expect("set");
        assert_eq!(flushed(&mut e), vec![(1, "☁ a=5".to_owned())]);
        let entry = e.history_in_memory(room).into_iter().next().expect("entry");
        assert_eq!((&*entry.user, entry.verb), ("@root", Verb::Create));
        let shown: Vec<_> = e.variables_shown(room).collect();
        assert_eq!(shown, vec![("☁ a", "5", "@root", entry.timestamp_ms)]);
        // Invalid values and names are refused as any set's are.
        assert_eq!(
            e.admin_set(room, &operator, "☁ a", ValueRef::Text("x"), now),
            Err(Rejection::InvalidValue)
        );
        assert_eq!(
            e.admin_set(room, &operator, "no cloud", ValueRef::Number("1"), now),
            Err(Rejection::InvalidName)
        );
        e.admin_delete(room, &operator, "☁ a", now).expect("delete");
        assert_eq!(e.variable_count(room), 0);
        let entry = e.history_in_memory(room).into_iter().next().expect("entry");
        assert_eq!((&*entry.user, entry.verb), ("@root", Verb::Delete));
        assert_eq!(
            e.admin_delete(room, &operator, "☁ a", now),
            Err(EditError::UnknownVariable)
        );
    }

    #[test]
    fn rules_guard_clients_not_operators() {
        let mut e = engine();
        let rule = VariableRule {
            only_increase: true,
            ..VariableRule::default()
        };
        let settings = ProjectSettings {
            read_only: false,
            variables: vec![("☁ score".into(), rule)],
            ..ProjectSettings::default()
        };
        e.set_rules(Rules {
            default: ProjectSettings::default(),
            projects: vec![("1".to_owned(), settings)].into_iter().collect(),
        });
        let now = Instant::now();
        let room = e
            .join_as("1", ClientId(1), "alice", Format(0), None, now)
            .expect("join");
        let set = |e: &mut Engine, value| {
            e.set_at(
                room,
                ClientId(1),
                "☁ score",
                ValueRef::Number(value),
                true,
                now,
            )
        };
        assert_eq!(set(&mut e, "1000"), SetOutcome::Applied);
        assert_eq!(
            set(&mut e, "5"),
            SetOutcome::Rejected(Rejection::Rule(Rule::OnlyIncrease))
        );
        // The vandalised score is lowered by an operator, and deleted despite its rule.
        let operator: Arc<str> = Arc::from("@root");
        e.admin_set(room, &operator, "☁ score", ValueRef::Number("5"), now)
            .expect("an operator lowers it");
        assert_eq!(
            e.current_value(room, "☁ score"),
            Some(ValueRef::Number("5"))
        );
        assert_eq!(
            e.delete_at(room, ClientId(1), "☁ score", now),
            Err(EditError::Protected)
        );
        e.admin_delete(room, &operator, "☁ score", now)
            .expect("an operator deletes it");
    }

    #[test]
    fn a_room_not_in_memory_is_made_without_a_backend() {
        let mut e = engine();
        let room = e
            .admin_room("7", ClientId(9), Instant::now())
            .expect("room");
        assert_eq!(e.room_id(room), Some("7"));
        assert_eq!(e.member_count(room), 0);
    }

    #[test]
    fn a_users_clients_are_found_case_insensitively() {
        let mut e = engine();
        let now = Instant::now();
        let room = e
            .join_as("1", ClientId(1), "Alice", Format(0), None, now)
            .expect("join");
        for (client, user) in [(2, "bob"), (3, "ALICE"), (4, "")] {
            e.join_as("1", ClientId(client), user, Format(2), None, now)
                .expect("join");
        }
        assert_eq!(
            e.clients_of_user(room, "aLiCe"),
            vec![ClientId(1), ClientId(3)]
        );
        assert!(e.clients_of_user(room, "").is_empty());
        let members: Vec<_> = e.admin_members(room).map(|m| m.user).collect();
        assert_eq!(members, vec!["Alice", "bob", "ALICE", ""]);
        let operator: Arc<str> = Arc::from("@root");
        e.admin_set(room, &operator, "☁ a", ValueRef::Number("12"), now)
            .expect("set");
        let summary = e.room_summaries();
        assert_eq!(summary.len(), 1);
        let first = &summary[0];
        assert_eq!((first.members, first.variables, first.bytes), (4, 1, 7));
    }
}
