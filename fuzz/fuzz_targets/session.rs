//! The sans-IO room engine driven by a sequence of operations from up to 8 clients over 3 room
//! ids, with small limits so they are hit, checked step by step against a model.
//!
//! The model keeps each room's variables with the version and writer of their last change, each
//! member's last seen version, and each client's view: its snapshot at join, plus its own writes,
//! plus every frame delivered to it. After each step:
//! - the engine's rooms, variables (in order) and members equal the model's, within the limits;
//! - a join's snapshot is every variable of the room; a flush sends a member exactly the
//!   variables changed since it last caught up that it did not write itself (no echo, nothing
//!   stale, current values), and nothing to a member with no news or a client in no room;
//! - a slow member (deliver returned false) keeps its place and is skipped, with no frame built
//!   for it and nothing queued, until its connection drains (`Engine::resume`, modelled at the
//!   next flush whose `slow` bit for it is clear); then it gets the news;
//! - a caught-up member's view holds every variable of the room with the room's value;
//! - heap use is bounded by rooms × variables × the sizes of names and values.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use stratus::dialect::encode_set;
use stratus::engine::value::{is_valid_name, is_valid_value};
use stratus::engine::{
    ClientId, EditError, Engine, Format, JoinError, Limits, Rejection, RoomKey, SetOutcome,
    ValueRef,
};

const ROOMS: [&str; 3] = ["1", "2", "3"];
const CLIENTS: usize = 8;
const MAX_OPS: usize = 200;
const TTL: Duration = Duration::from_secs(10);

const NAMES: [&str; 9] = [
    "☁ a",
    "☁ b",
    "☁ c",
    ":cloud: d",
    "☁ \"q\\\n\t\u{1}",
    "☁ ",
    "score",
    ":cloud: ",
    "☁score",
];
const NUMBERS: [&str; 7] = [
    "0",
    "1",
    "-1",
    "1.5",
    "1e300",
    "18446744073709551615",
    "-9223372036854775808",
];
const TEXTS: [&str; 9] = [
    "",
    "1",
    "-.5",
    "007",
    "abc",
    "1.2.3",
    "\"\\\n\u{1}",
    "☁",
    "1e5",
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Any(String),
}

impl Name {
    fn text(&self) -> &str {
        match self {
            Name::Known(i) => NAMES[*i as usize % NAMES.len()],
            Name::Any(s) => s,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Val {
    Number(u8),
    Text(u8),
    AnyInteger(i64),
    AnyFloat(f64),
    AnyText(String),
}

/// A value in the model and in a client's view.
#[derive(Clone, Debug, PartialEq, Eq)]
struct V {
    number: bool,
    text: String,
}

impl V {
    fn as_ref(&self) -> ValueRef<'_> {
        if self.number {
            ValueRef::Number(&self.text)
        } else {
            ValueRef::Text(&self.text)
        }
    }

    fn of(value: ValueRef<'_>) -> V {
        V {
            number: value.is_number(),
            text: value.text().to_owned(),
        }
    }
}

impl Val {
    fn value(&self) -> V {
        match self {
            Val::Number(i) => V {
                number: true,
                text: NUMBERS[*i as usize % NUMBERS.len()].to_owned(),
            },
            Val::Text(i) => V {
                number: false,
                text: TEXTS[*i as usize % TEXTS.len()].to_owned(),
            },
            Val::AnyInteger(n) => V {
                number: true,
                text: n.to_string(),
            },
            // The way the dialects write a parsed JSON number (finite only).
            Val::AnyFloat(f) => V {
                number: true,
                text: if !f.is_finite() {
                    "0".to_owned()
                } else if f.fract() == 0.0 && f.abs() < 1e15 {
                    (*f as i64).to_string()
                } else {
                    format!("{f:?}")
                },
            },
            Val::AnyText(s) => V {
                number: false,
                text: s.clone(),
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Joins (leaving its current room first); `legacy` picks the format, `declare` the legacy
    /// dialect's declared variables.
    Join {
        client: u8,
        room: u8,
        legacy: bool,
        declare: Option<Vec<(Name, Val)>>,
    },
    Leave {
        client: u8,
    },
    Set {
        client: u8,
        name: Name,
        value: Val,
        create: bool,
    },
    Rename {
        client: u8,
        name: Name,
        new_name: Name,
    },
    Delete {
        client: u8,
        name: Name,
    },
    /// Bit i set: client i's socket is behind and refuses the frame.
    Flush {
        slow: u8,
    },
    /// Time passes; empty rooms expire.
    Wait {
        seconds: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    allow_non_numeric: bool,
    ops: Vec<Op>,
}

struct MVar {
    name: String,
    value: V,
    changed: u64,
    writer: usize,
}

struct MRoom {
    id: &'static str,
    vars: Vec<MVar>,
    members: Vec<usize>,
    version: u64,
    emptied_at: Option<Instant>,
}

impl MRoom {
    fn var(&self, name: &str) -> Option<usize> {
        self.vars.iter().position(|v| v.name == name)
    }
}

#[derive(Default)]
struct MClient {
    room: Option<(&'static str, RoomKey)>,
    legacy: bool,
    seen: u64,
    view: HashMap<String, V>,
    /// Variables this client renamed while its own value of them was out of date: the engine
    /// does not send a renamer the variable back, so the client keeps its old value until the
    /// next change by someone else. Exempt from the convergence check unless STRICT_RENAME.
    stale_by_rename: HashSet<String>,
    /// Refused a frame and has not drained yet: flushes skip it.
    waiting: bool,
}

struct Model {
    limits: Limits,
    engine: Engine,
    now: Instant,
    rooms: Vec<MRoom>,
    clients: Vec<MClient>,
    sets_applied: u64,
    /// Longest name and value ever handed to the engine, for the memory bound.
    longest_name: usize,
    longest_value: usize,
}

fn strict_rename() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    // The engine sends a renamer that is behind the current value; LENIENT_RENAME restores the
    // old, weaker check for comparing against an engine without that fix.
    *STRICT.get_or_init(|| std::env::var_os("LENIENT_RENAME").is_none())
}

fn id(client: usize) -> ClientId {
    ClientId(100 + client as u64)
}

fn format(legacy: bool) -> Format {
    Format(u8::from(legacy))
}

/// Parses one frame line into (name, value). Legacy values are always strings.
fn parse_line(line: &str, legacy: bool) -> (String, V) {
    let json: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("frame line is not JSON ({e}): {line:?}"));
    let object = json.as_object().expect("a set line is an object");
    assert_eq!(object.len(), 3, "{line:?}");
    let (kind, name_key) = if legacy {
        ("kind", "variable")
    } else {
        ("method", "name")
    };
    assert_eq!(object.get(kind).and_then(|v| v.as_str()), Some("set"));
    let name = object
        .get(name_key)
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("no name: {line:?}"))
        .to_owned();
    let value = object.get("value").expect("a value");
    let value = if let Some(text) = value.as_str() {
        V {
            number: false,
            text: text.to_owned(),
        }
    } else {
        assert!(!legacy && value.is_number(), "{line:?}");
        // The number's exact text: the line ends with `,"value":<number>}`.
        let at = line.rfind(",\"value\":").expect("value key") + 9;
        V {
            number: true,
            text: line[at..line.len() - 1].to_owned(),
        }
    };
    (name, value)
}

fn parse_frame(frame: &str, legacy: bool) -> Vec<(String, V)> {
    assert!(!frame.is_empty(), "no empty frames");
    frame.split('\n').map(|l| parse_line(l, legacy)).collect()
}

/// Whether a client's view of a value matches: legacy clients only see the text.
fn same(a: &V, b: &V, legacy: bool) -> bool {
    if legacy {
        a.text == b.text
    } else {
        a == b
    }
}

impl Model {
    fn new(allow_non_numeric: bool) -> Self {
        let limits = Limits {
            max_rooms: 2,
            max_clients_per_room: 3,
            max_variables_per_room: 4,
            empty_room_ttl: TTL,
            allow_non_numeric,
            max_state_bytes: 0,
            ..Limits::default()
        };
        Model {
            engine: Engine::new(limits.clone(), encode_set),
            limits,
            now: Instant::now(),
            rooms: Vec::new(),
            clients: (0..CLIENTS).map(|_| MClient::default()).collect(),
            sets_applied: 0,
            longest_name: 0,
            longest_value: 0,
        }
    }

    fn room(&mut self, id: &str) -> Option<&mut MRoom> {
        self.rooms.iter_mut().find(|r| r.id == id)
    }

    fn tick(&mut self) {
        // Every step happens at its own instant, so "the room empty the longest" is unique.
        self.now += Duration::from_millis(1);
    }

    fn leave(&mut self, c: usize) {
        let Some((room_id, key)) = self.clients[c].room.take() else {
            return;
        };
        self.engine.leave(key, id(c), self.now);
        let now = self.now;
        let room = self.room(room_id).expect("a member's room exists");
        room.members.retain(|&m| m != c);
        if room.members.is_empty() {
            room.emptied_at = Some(now);
        }
        let client = &mut self.clients[c];
        client.view.clear();
        client.stale_by_rename.clear();
        client.waiting = false;
    }

    fn join(
        &mut self,
        c: usize,
        room_id: &'static str,
        legacy: bool,
        declare: Option<&[(Name, Val)]>,
    ) {
        if self.clients[c].room.is_some() {
            self.leave(c);
            self.tick();
        }
        let declared: Option<Vec<(String, V)>> = declare.map(|list| {
            list.iter()
                .map(|(n, v)| (n.text().to_owned(), v.value()))
                .collect()
        });
        for (name, value) in declared.iter().flatten() {
            self.longest_name = self.longest_name.max(name.len());
            self.longest_value = self.longest_value.max(value.text.len());
        }
        let refs: Option<Vec<(&str, ValueRef<'_>)>> = declared
            .as_ref()
            .map(|list| list.iter().map(|(n, v)| (n.as_str(), v.as_ref())).collect());
        let result = self
            .engine
            .join(room_id, id(c), format(legacy), refs.as_deref(), self.now);

        let expected = self.model_join(c, room_id, declared.as_deref());
        match (result, expected) {
            (Ok(key), Ok(())) => {
                assert_eq!(self.engine.room_id(key), Some(room_id));
                let snapshot = self.engine.snapshot(key, format(legacy));
                let room = self.rooms.iter().find(|r| r.id == room_id).expect("joined");
                let expected: Vec<(String, V)> = room
                    .vars
                    .iter()
                    .map(|v| (v.name.clone(), v.value.clone()))
                    .collect();
                let got = snapshot
                    .map(|f| parse_frame(&f, legacy))
                    .unwrap_or_default();
                assert_eq!(got.len(), expected.len(), "snapshot has every variable");
                for ((gn, gv), (en, ev)) in got.iter().zip(&expected) {
                    assert_eq!(gn, en, "snapshot in creation order");
                    assert!(same(gv, ev, legacy), "snapshot value {gv:?} != {ev:?}");
                }
                let version = room.version;
                let client = &mut self.clients[c];
                client.room = Some((room_id, key));
                client.legacy = legacy;
                client.seen = version;
                client.view = got.into_iter().collect();
                client.stale_by_rename.clear();
                client.waiting = false;
            }
            (Err(got), Err(expected)) => assert_eq!(got, expected),
            (got, expected) => panic!("join: engine {got:?}, model {expected:?}"),
        }
    }

    /// The engine's join rules, applied to the model.
    fn model_join(
        &mut self,
        c: usize,
        room_id: &'static str,
        declared: Option<&[(String, V)]>,
    ) -> Result<(), JoinError> {
        if self.room(room_id).is_none() {
            if self.rooms.len() >= self.limits.max_rooms {
                let oldest = self
                    .rooms
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.emptied_at.map(|at| (at, i)))
                    .min();
                let Some((at, index)) = oldest else {
                    return Err(JoinError::TooManyRooms);
                };
                let ties = self
                    .rooms
                    .iter()
                    .filter(|r| r.emptied_at == Some(at))
                    .count();
                assert_eq!(ties, 1, "model: eviction order is ambiguous");
                self.rooms.remove(index);
            }
            self.rooms.push(MRoom {
                id: room_id,
                vars: Vec::new(),
                members: Vec::new(),
                version: 0,
                emptied_at: Some(self.now),
            });
        }
        let limits = self.limits.clone();
        let room = self.room(room_id).expect("created");
        if room.members.len() >= limits.max_clients_per_room {
            return Err(JoinError::RoomFull);
        }
        if let Some(declared) = declared {
            if declared.len() > limits.max_variables_per_room {
                return Err(JoinError::InvalidDeclaration);
            }
            let valid = declared.iter().all(|(n, v)| {
                is_valid_name(n) && is_valid_value(v.as_ref(), limits.allow_non_numeric)
            });
            let distinct: HashSet<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
            if !valid || distinct.len() != declared.len() {
                return Err(JoinError::InvalidDeclaration);
            }
            if room.vars.is_empty() {
                for (name, value) in declared {
                    room.version += 1;
                    room.vars.push(MVar {
                        name: name.clone(),
                        value: value.clone(),
                        changed: room.version,
                        writer: c,
                    });
                }
            } else if declared.len() != room.vars.len()
                || declared.iter().any(|(n, _)| room.var(n).is_none())
            {
                return Err(JoinError::Incompatible);
            }
        }
        room.members.push(c);
        room.emptied_at = None;
        Ok(())
    }

    fn set(&mut self, c: usize, name: &str, value: V, create: bool) {
        let Some((room_id, key)) = self.clients[c].room else {
            return;
        };
        self.longest_name = self.longest_name.max(name.len());
        self.longest_value = self.longest_value.max(value.text.len());
        let got = self.engine.set(key, id(c), name, value.as_ref(), create);
        let limits = self.limits.clone();
        let room = self.room(room_id).expect("a member's room exists");
        let expected = if !is_valid_value(value.as_ref(), limits.allow_non_numeric) {
            SetOutcome::Rejected(Rejection::InvalidValue)
        } else if let Some(i) = room.var(name) {
            room.version += 1;
            let var = &mut room.vars[i];
            var.value = value.clone();
            var.changed = room.version;
            var.writer = c;
            SetOutcome::Applied
        } else if !create {
            SetOutcome::Unknown
        } else if !is_valid_name(name) {
            SetOutcome::Rejected(Rejection::InvalidName)
        } else if room.vars.len() >= limits.max_variables_per_room {
            SetOutcome::Rejected(Rejection::TooManyVariables)
        } else {
            room.version += 1;
            room.vars.push(MVar {
                name: name.to_owned(),
                value: value.clone(),
                changed: room.version,
                writer: c,
            });
            SetOutcome::Applied
        };
        assert_eq!(got, expected, "set {name:?} = {value:?}");
        if got == SetOutcome::Applied {
            self.sets_applied += 1;
            let client = &mut self.clients[c];
            client.view.insert(name.to_owned(), value);
            client.stale_by_rename.remove(name);
        }
    }

    fn rename(&mut self, c: usize, name: &str, new_name: &str) {
        let Some((room_id, key)) = self.clients[c].room else {
            return;
        };
        self.longest_name = self.longest_name.max(new_name.len());
        let got = self.engine.rename(key, id(c), name, new_name);
        let seen = self.clients[c].seen;
        let room = self.room(room_id).expect("a member's room exists");
        let expected = match room.var(name) {
            None => Err(EditError::UnknownVariable),
            Some(_) if !is_valid_name(new_name) => Err(EditError::InvalidName),
            Some(_) if room.var(new_name).is_some() => Err(EditError::NameTaken),
            Some(i) => {
                let current = room.vars[i].writer == c || seen >= room.vars[i].changed;
                room.version += 1;
                let var = &mut room.vars[i];
                var.name = new_name.to_owned();
                var.changed = room.version;
                var.writer = if current { c } else { usize::MAX };
                Ok(var.value.clone())
            }
        };
        assert_eq!(got, expected.as_ref().map(|_| ()).map_err(|e| *e), "rename");
        if let Ok(value) = expected {
            // The client renames its own copy, whatever value it holds.
            let client = &mut self.clients[c];
            let legacy = client.legacy;
            let old = client.view.remove(name);
            let was_stale = client.stale_by_rename.remove(name);
            if was_stale || !old.as_ref().is_some_and(|old| same(old, &value, legacy)) {
                client.stale_by_rename.insert(new_name.to_owned());
            } else {
                client.stale_by_rename.remove(new_name);
            }
            if let Some(old) = old {
                client.view.insert(new_name.to_owned(), old);
            } else {
                client.view.remove(new_name);
            }
        }
    }

    fn delete(&mut self, c: usize, name: &str) {
        let Some((room_id, key)) = self.clients[c].room else {
            return;
        };
        let got = self.engine.delete(key, name);
        let room = self.room(room_id).expect("a member's room exists");
        let expected = match room.var(name) {
            Some(i) => {
                room.vars.remove(i);
                Ok(())
            }
            None => Err(EditError::UnknownVariable),
        };
        assert_eq!(got, expected, "delete");
        if got.is_ok() {
            self.clients[c].view.remove(name);
            self.clients[c].stale_by_rename.remove(name);
        }
    }

    fn flush(&mut self, slow: u8) {
        // Waiting members whose bit is clear have drained since: their connection says so.
        for (index, client) in self.clients.iter_mut().enumerate() {
            if client.waiting && slow >> index & 1 == 0 {
                client.waiting = false;
                if let Some((_, key)) = client.room {
                    self.engine.resume(key, id(index));
                }
            }
        }
        let mut delivered: Vec<(ClientId, String, bool)> = Vec::new();
        let clients = &self.clients;
        self.engine.flush(|room, client, frame| {
            let index = client.0.checked_sub(100).expect("one of ours") as usize;
            let member_of = clients.get(index).and_then(|c| c.room).map(|(_, key)| key);
            assert_eq!(
                member_of,
                Some(room),
                "client {index} got a frame of another room"
            );
            let ok = slow >> index & 1 == 0;
            delivered.push((client, frame.to_string(), ok));
            ok
        });
        let mut by_client: HashMap<usize, (String, bool)> = HashMap::new();
        for (client, frame, ok) in delivered {
            let c = (client.0 - 100) as usize;
            assert!(
                by_client.insert(c, (frame, ok)).is_none(),
                "client {c} got two frames in one flush"
            );
        }
        for room in &self.rooms {
            for &m in &room.members {
                let client = &mut self.clients[m];
                let got = by_client.remove(&m);
                if client.waiting {
                    assert!(got.is_none(), "client {m} is waiting but was offered {got:?}");
                    continue;
                }
                if client.seen >= room.version {
                    assert!(got.is_none(), "client {m} has no news but got {got:?}");
                    continue;
                }
                let expected: Vec<(&str, &V)> = room
                    .vars
                    .iter()
                    .filter(|v| v.changed > client.seen && v.writer != m)
                    .map(|v| (v.name.as_str(), &v.value))
                    .collect();
                let Some((frame, ok)) = got else {
                    assert!(
                        expected.is_empty(),
                        "client {m} was not sent {expected:?} (seen {}, room version {})",
                        client.seen,
                        room.version
                    );
                    client.seen = room.version;
                    continue;
                };
                let lines = parse_frame(&frame, client.legacy);
                assert_eq!(
                    lines.len(),
                    expected.len(),
                    "client {m} (seen {}): got {lines:?}, expected {expected:?}",
                    client.seen
                );
                for ((gn, gv), (en, ev)) in lines.iter().zip(&expected) {
                    assert_eq!(gn, en, "client {m}: frame in creation order, no echo");
                    assert!(same(gv, ev, client.legacy), "client {m}: {gv:?} != {ev:?}");
                }
                if ok {
                    client.seen = room.version;
                    for (name, value) in lines {
                        client.stale_by_rename.remove(&name);
                        client.view.insert(name, value);
                    }
                } else {
                    client.waiting = true;
                }
            }
        }
        assert!(
            by_client.is_empty(),
            "frames for clients in no room: {by_client:?}"
        );
        assert!(
            !self.engine.has_pending(),
            "a member that is behind keeps nothing queued until it drains"
        );
        self.check_convergence();
    }

    /// A member that is caught up sees every variable of its room with the room's value.
    fn check_convergence(&self) {
        for room in &self.rooms {
            for &m in &room.members {
                let client = &self.clients[m];
                if client.seen < room.version {
                    continue;
                }
                for var in &room.vars {
                    if !strict_rename() && client.stale_by_rename.contains(&var.name) {
                        continue;
                    }
                    let view = client.view.get(&var.name);
                    assert!(
                        view.is_some_and(|v| same(v, &var.value, client.legacy)),
                        "client {m} caught up in room {} but sees {:?} = {view:?}, room has {:?}",
                        room.id,
                        var.name,
                        var.value
                    );
                }
            }
        }
    }

    fn wait(&mut self, seconds: u8) {
        self.now += Duration::from_secs(u64::from(seconds % 16));
        let now = self.now;
        let before = self.rooms.len();
        self.rooms.retain(|r| {
            r.emptied_at
                .is_none_or(|at| now.saturating_duration_since(at) < TTL)
        });
        let expired = self.engine.expire(now);
        assert_eq!(expired, before - self.rooms.len(), "expired rooms");
    }

    /// The engine's state equals the model's, within the limits and the memory bound.
    fn check(&self) {
        let limits = &self.limits;
        assert_eq!(self.engine.room_count(), self.rooms.len());
        assert!(self.engine.room_count() <= limits.max_rooms);
        assert_eq!(self.engine.stats.sets_applied, self.sets_applied);
        let mut bound = 0;
        let mut behind = false;
        for room in &self.rooms {
            let vars = self.engine.variables(room.id);
            assert!(vars.len() <= limits.max_variables_per_room);
            assert_eq!(vars.len(), room.vars.len(), "room {}", room.id);
            for ((name, value), var) in vars.iter().zip(&room.vars) {
                assert_eq!(*name, var.name);
                assert_eq!(V::of(*value), var.value);
            }
            assert!(room.members.len() <= limits.max_clients_per_room);
            assert_eq!(room.emptied_at.is_some(), room.members.is_empty());
            for &m in &room.members {
                let (room_id, key) = self.clients[m].room.expect("a member");
                assert_eq!(room_id, room.id);
                assert_eq!(self.engine.room_id(key), Some(room.id));
                assert_eq!(self.engine.member_count(key), room.members.len());
                assert_eq!(self.engine.variable_count(key), room.vars.len());
                // A waiting member is behind without being queued, until it drains.
                behind |= self.clients[m].seen < room.version && !self.clients[m].waiting;
            }
            // The room and its members (each with its shown name and history fields).
            bound += room.id.len() + 128 * 8;
            bound += room.vars.len() * (self.longest_name + 2 * self.longest_value + 8 + 128);
        }
        if behind {
            assert!(
                self.engine.has_pending(),
                "a member behind (and not waiting) is queued for a flush"
            );
        }
        let heap = self.engine.heap_bytes();
        assert!(heap <= bound, "heap {heap} > bound {bound}");
    }
}

fuzz_target!(|input: Input| {
    let mut model = Model::new(input.allow_non_numeric);
    for op in input.ops.iter().take(MAX_OPS) {
        model.tick();
        match op {
            Op::Join {
                client,
                room,
                legacy,
                declare,
            } => {
                let room_id = ROOMS[*room as usize % ROOMS.len()];
                let declare = declare.as_deref().map(|d| &d[..d.len().min(6)]);
                model.join(*client as usize % CLIENTS, room_id, *legacy, declare);
            }
            Op::Leave { client } => model.leave(*client as usize % CLIENTS),
            Op::Set {
                client,
                name,
                value,
                create,
            } => model.set(
                *client as usize % CLIENTS,
                name.text(),
                value.value(),
                *create,
            ),
            Op::Rename {
                client,
                name,
                new_name,
            } => model.rename(*client as usize % CLIENTS, name.text(), new_name.text()),
            Op::Delete { client, name } => model.delete(*client as usize % CLIENTS, name.text()),
            Op::Flush { slow } => model.flush(*slow),
            Op::Wait { seconds } => model.wait(*seconds),
        }
        model.check();
    }
    // Everyone reads: a flush with no slow client brings every member up to date.
    model.flush(0);
    assert!(!model.engine.has_pending());
});
