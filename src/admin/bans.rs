//! The book of bans and runtime project blocks the admin API keeps, sans-IO.
//!
//! A ban keeps a user name (compared case-insensitively) or an address or network out until
//! its time (`until`, Unix milliseconds); a block refuses a project's rooms, until a time or
//! until lifted. The book answers the joins' questions (`refuses_user`, `refuses_address`,
//! `blocks_project`) from indexes, takes changes ([`Change`], from the API, from storage at
//! start or from another node), and drops what expired when the loop's housekeeping calls
//! [`Bans::expire`] once a second (so an entry may outlive its time by up to a second). It is
//! bounded: at most [`MAX_BANS`] bans and [`MAX_BLOCKS`] blocks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::admin::tokens::MAX_NAME_CHARS;
use crate::config::Network;
use crate::policy::{UsernameFilter, MAX_ROOM_ID_CHARS};

/// Most bans the book holds; a ban beyond is refused (409).
pub const MAX_BANS: usize = 10_000;
/// Most runtime project blocks the book holds.
pub const MAX_BLOCKS: usize = 10_000;
/// Longest reason kept with a ban, in characters.
pub const MAX_REASON_CHARS: usize = 200;
/// The largest ban id: ids stay exact in JavaScript (below 2^53), and `DELETE /bans/<id>`
/// takes no larger one.
pub const MAX_BAN_ID: u64 = (1 << 53) - 1;

/// Whom a ban names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Banned {
    /// A user name as the operator wrote it (compared case-insensitively).
    User(String),
    Address(Network),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    pub id: u64,
    pub who: Banned,
    /// Unix milliseconds; the ban is gone at this time.
    pub until_ms: u64,
    pub reason: String,
    /// The operator who banned.
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub project: String,
    /// Unix milliseconds; `None` until lifted.
    pub until_ms: Option<u64>,
    pub by: String,
}

/// One change to the book, as made by the API and as storage and other nodes pass it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Ban(Ban),
    Lift(u64),
    Block(Block),
    Unblock(String),
}

/// The book holds as many entries as it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Debug, Default)]
pub struct Bans {
    bans: BTreeMap<u64, Ban>,
    /// Lowercased user name → how many bans name it.
    users: HashMap<String, usize>,
    /// Single addresses (IPv4-mapped ones as IPv4) → how many bans name them.
    addresses: HashMap<IpAddr, usize>,
    /// Bans of networks, by id: looked through one by one (few in practice).
    networks: Vec<(u64, Network)>,
    blocks: BTreeMap<String, Block>,
    /// The last id given; new ids grow from the clock (see [`Bans::next_id`]).
    last_id: u64,
    /// Added to clock-made ids, so two nodes banning in the same millisecond differ.
    id_salt: u64,
}

impl Bans {
    /// Sets the part of new ids that tells this node's from another's (taken modulo 1000).
    pub fn set_id_salt(&mut self, salt: u64) {
        self.id_salt = salt % 1000;
    }

    /// An id for a new ban: the clock in milliseconds times 1000 plus the salt, or one more than
    /// the last when that is larger. Unique across nodes unless two ban in the same millisecond
    /// with the same salt, and below 2^53 (exact in JavaScript) for centuries.
    pub fn next_id(&self, now_ms: u64) -> u64 {
        now_ms
            .saturating_mul(1000)
            .saturating_add(self.id_salt)
            .max(self.last_id.saturating_add(1))
    }

    /// Applies a change. A new ban or block beyond the bounds is refused; replacing one (same
    /// id, same project) is always taken. Lifting what is not there changes nothing.
    pub fn apply(&mut self, change: Change) -> Result<(), Full> {
        match change {
            Change::Ban(ban) => self.insert_ban(ban),
            Change::Lift(id) => {
                self.lift(id);
                Ok(())
            }
            Change::Block(block) => {
                if self.blocks.len() >= MAX_BLOCKS && !self.blocks.contains_key(&block.project) {
                    return Err(Full);
                }
                self.blocks.insert(block.project.clone(), block);
                Ok(())
            }
            Change::Unblock(project) => {
                self.blocks.remove(&project);
                Ok(())
            }
        }
    }

    fn insert_ban(&mut self, ban: Ban) -> Result<(), Full> {
        if self.bans.contains_key(&ban.id) {
            self.lift(ban.id);
        } else if self.bans.len() >= MAX_BANS {
            return Err(Full);
        }
        match &ban.who {
            Banned::User(name) => *self.users.entry(name.to_lowercase()).or_default() += 1,
            Banned::Address(network) => match network.single_address() {
                Some(ip) => *self.addresses.entry(canonical(ip)).or_default() += 1,
                None => self.networks.push((ban.id, *network)),
            },
        }
        // An id beyond the bound (only from a bad store) must not push new ids past it.
        if ban.id <= MAX_BAN_ID {
            self.last_id = self.last_id.max(ban.id);
        }
        self.bans.insert(ban.id, ban);
        Ok(())
    }

    /// Removes ban `id`; returns it if there was one.
    pub fn lift(&mut self, id: u64) -> Option<Ban> {
        let ban = self.bans.remove(&id)?;
        match &ban.who {
            Banned::User(name) => forget(&mut self.users, name.to_lowercase()),
            Banned::Address(network) => match network.single_address() {
                Some(ip) => forget(&mut self.addresses, canonical(ip)),
                None => self.networks.retain(|(other, _)| *other != id),
            },
        }
        Some(ban)
    }

    pub fn ban(&self, id: u64) -> Option<&Ban> {
        self.bans.get(&id)
    }

    pub fn block(&self, project: &str) -> Option<&Block> {
        self.blocks.get(project)
    }

    /// Whether `user` (any case) is banned. Allocates only while some user is banned.
    pub fn refuses_user(&self, user: &str) -> bool {
        !self.users.is_empty() && self.users.contains_key(&user.to_lowercase())
    }

    /// Whether `ip` is banned, by itself or by a network holding it.
    pub fn refuses_address(&self, ip: IpAddr) -> bool {
        self.addresses.contains_key(&canonical(ip))
            || self
                .networks
                .iter()
                .any(|(_, network)| network.contains(ip))
    }

    pub fn blocks_project(&self, project: &str) -> bool {
        !self.blocks.is_empty() && self.blocks.contains_key(project)
    }

    /// Drops bans and blocks whose time has come; returns how many went.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let expired: Vec<u64> = self
            .bans
            .values()
            .filter(|ban| ban.until_ms <= now_ms)
            .map(|ban| ban.id)
            .collect();
        for id in &expired {
            self.lift(*id);
        }
        let blocks = self.blocks.len();
        self.blocks
            .retain(|_, block| block.until_ms.is_none_or(|until| until > now_ms));
        expired.len() + blocks - self.blocks.len()
    }

    /// Every ban, by id (oldest first).
    pub fn bans(&self) -> impl Iterator<Item = &Ban> {
        self.bans.values()
    }

    /// Every block, by project id.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.blocks.values()
    }

    /// Replaces the whole book with what a backend holds (at start, or when Redis is read
    /// again); entries beyond the bounds are left out. Returns how many were left out.
    pub fn replace_all(&mut self, bans: Vec<Ban>, blocks: Vec<Block>) -> usize {
        let salt = self.id_salt;
        let last_id = self.last_id;
        *self = Bans::default();
        self.id_salt = salt;
        self.last_id = last_id;
        let mut left_out = 0;
        for change in bans
            .into_iter()
            .map(Change::Ban)
            .chain(blocks.into_iter().map(Change::Block))
        {
            if self.apply(change).is_err() {
                left_out += 1;
            }
        }
        left_out
    }
}

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`: the same address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn forget<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

impl Ban {
    /// The JSON object the API lists and Redis stores:
    /// `{"id","user"|null,"address"|null,"until","reason","by"}`.
    pub fn to_json(&self) -> Value {
        let (user, address) = match &self.who {
            Banned::User(name) => (Some(name.clone()), None),
            Banned::Address(network) => (None, Some(network.to_string())),
        };
        json!({
            "id": self.id,
            "user": user,
            "address": address,
            "until": self.until_ms,
            "reason": self.reason,
            "by": self.by,
        })
    }

    /// Reads [`Ban::to_json`]'s form back; `None` when it is not one, or not one the API
    /// could have made ([`Ban::is_sound`]).
    pub fn from_json(value: &Value) -> Option<Ban> {
        let who = match (value.get("user"), value.get("address")) {
            (Some(Value::String(user)), _) => Banned::User(user.clone()),
            (_, Some(Value::String(address))) => Banned::Address(Network::parse(address)?),
            _ => return None,
        };
        let ban = Ban {
            id: value.get("id")?.as_u64()?,
            who,
            until_ms: value.get("until")?.as_u64()?,
            reason: value.get("reason")?.as_str()?.to_owned(),
            by: value.get("by")?.as_str()?.to_owned(),
        };
        ban.is_sound().then_some(ban)
    }

    /// Whether a ban read from SQLite, Redis or another node is one the API could have made:
    /// an id from 1 to [`MAX_BAN_ID`], a user name of the form the API takes, a reason of at
    /// most [`MAX_REASON_CHARS`] and an operator name of at most [`MAX_NAME_CHARS`]
    /// characters. Anything else (a store edited by hand, a hostile Redis) is dropped.
    pub fn is_sound(&self) -> bool {
        let who = match &self.who {
            Banned::User(name) => UsernameFilter::default().check(name).is_ok(),
            Banned::Address(_) => true,
        };
        who && (1..=MAX_BAN_ID).contains(&self.id)
            && self.reason.chars().nth(MAX_REASON_CHARS).is_none()
            && self.by.chars().nth(MAX_NAME_CHARS).is_none()
    }

    /// What an audit line says of it: `user "bob"` (quoted: a name read from Redis or SQLite may
    /// hold anything) or `address 10.0.0.0/8`.
    pub fn target_text(&self) -> String {
        match &self.who {
            Banned::User(name) => format!("user {name:?}"),
            Banned::Address(network) => format!("address {network}"),
        }
    }
}

impl Block {
    /// `{"project","until": ms | null,"by"}`.
    pub fn to_json(&self) -> Value {
        json!({"project": self.project, "until": self.until_ms, "by": self.by})
    }

    /// Reads [`Block::to_json`]'s form back; `None` when it is not one, or not a sound one.
    pub fn from_json(value: &Value) -> Option<Block> {
        let block = Block {
            project: value.get("project")?.as_str()?.to_owned(),
            until_ms: match value.get("until")? {
                Value::Null => None,
                until => Some(until.as_u64()?),
            },
            by: value.get("by")?.as_str()?.to_owned(),
        };
        block.is_sound().then_some(block)
    }

    /// Whether a block read from SQLite, Redis or another node is one the API could have
    /// made: a project of 1 to [`MAX_ROOM_ID_CHARS`] characters, an operator name of at
    /// most [`MAX_NAME_CHARS`].
    pub fn is_sound(&self) -> bool {
        !self.project.is_empty()
            && self.project.chars().nth(MAX_ROOM_ID_CHARS).is_none()
            && self.by.chars().nth(MAX_NAME_CHARS).is_none()
    }
}

#[cfg(test)]
#[path = "bans_tests.rs"]
mod tests;
