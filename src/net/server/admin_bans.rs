//! The admin API's bans and runtime project blocks: listing, banning, lifting, blocking and
//! unblocking, on the book the policy holds (`admin/bans.rs`), which the joins consult.
//!
//! A change is made in memory and handed to the backend in the same call: the storage thread
//! writes it to SQLite, or in a cluster the command thread writes it to Redis's hash and
//! publishes it on the control channel, which every node applies (`on_control`, this node
//! included: applying a change twice is harmless). The answer waits for the backend to say
//! it wrote the change (`finish_change`); if its channel cannot take it, or the write fails,
//! the change is undone and answered 503: what the API says was done is what is persisted.
//! Expired entries go at housekeeping (`expire_bans`).
//! Connections already in are not closed by a ban: a kick does that.

use std::time::Instant;

use log::{debug, info, warn};
use serde_json::{json, Value};

use super::durable::Durable;
use super::queries::{Waiting, MAX_READS_OUT};
use super::setup::wall_clock_ms;
use super::Server;
use crate::admin::bans::{Ban, Banned, Block, Change, MAX_BANS, MAX_BLOCKS, MAX_REASON_CHARS};
use crate::admin::control::{Control, ControlMessage};
use crate::admin::{AdminRequest, BanTarget};
use crate::config::Network;
use crate::engine::ClientId;
use crate::policy::{UsernameFilter, MAX_ROOM_ID_CHARS};
use crate::query::Answer;

/// The longest ban or block, in seconds (100 years): longer is refused as a mistake.
const MAX_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// A change handed to the backend, waiting for it to say whether it was written.
#[derive(Debug)]
pub(super) struct ChangeWait {
    change: Change,
    undo: Change,
    /// The answer's JSON once written, and the audit line logged then.
    json: String,
    audit: String,
}

impl Server {
    pub(super) fn admin_bans(
        &mut self,
        client: ClientId,
        operator: &str,
        request: AdminRequest,
        _now: Instant,
    ) -> Option<Answer> {
        let now_ms = wall_clock_ms();
        let answer = match request {
            AdminRequest::ListBans => {
                let bans: Vec<Value> = self.policy.bans.bans().map(Ban::to_json).collect();
                ok(json!({ "bans": bans }))
            }
            AdminRequest::ListBlocks => {
                let blocks: Vec<Value> = self.policy.bans.blocks().map(Block::to_json).collect();
                ok(json!({ "blocks": blocks }))
            }
            AdminRequest::Ban {
                target,
                seconds,
                reason,
            } => return self.ban(client, operator, target, seconds, reason, now_ms),
            AdminRequest::LiftBan { id } => {
                let Some(ban) = self.policy.bans.ban(id).cloned() else {
                    return Some(error(404, "no such ban"));
                };
                let wait = ChangeWait {
                    change: Change::Lift(id),
                    undo: Change::Ban(ban.clone()),
                    json: json!({ "ok": true, "lifted": id }).to_string(),
                    audit: format!("admin {operator} lift-ban {id} ({})", ban.target_text()),
                };
                return self.change(client, wait);
            }
            AdminRequest::Block { project, seconds } => {
                return self.block(client, operator, project, seconds, now_ms);
            }
            AdminRequest::Unblock { project } => {
                let Some(block) = self.policy.bans.block(&project).cloned() else {
                    return Some(error(404, "project is not blocked"));
                };
                let wait = ChangeWait {
                    change: Change::Unblock(project.clone()),
                    undo: Change::Block(block),
                    audit: format!("admin {operator} unblock project {project:?}"),
                    json: json!({ "ok": true, "unblocked": project }).to_string(),
                };
                return self.change(client, wait);
            }
            _ => error(400, "not a ban or block request"),
        };
        Some(answer)
    }

    fn ban(
        &mut self,
        client: ClientId,
        operator: &str,
        target: BanTarget,
        seconds: u64,
        reason: String,
        now_ms: u64,
    ) -> Option<Answer> {
        if seconds == 0 || seconds > MAX_SECONDS {
            return Some(error(400, "seconds must be 1 to 3153600000"));
        }
        if reason.chars().nth(MAX_REASON_CHARS).is_some() {
            return Some(error(400, "reason is longer than 200 characters"));
        }
        let who = match target {
            BanTarget::User(name) => {
                // Only a name a client could join with: the filter's form, without its
                // patterns.
                if UsernameFilter::default().check(&name).is_err() {
                    return Some(error(400, "user must be 1-20 of A-Z a-z 0-9 _ -"));
                }
                Banned::User(name)
            }
            BanTarget::Address(text) => match Network::parse(text.trim()) {
                Some(network) => Banned::Address(network),
                None => {
                    return Some(error(
                        400,
                        "address must be an address or a network (10.0.0.0/8)",
                    ))
                }
            },
        };
        if self.policy.bans.bans().count() >= MAX_BANS {
            return Some(error(409, "too many bans (10000): lift some first"));
        }
        let ban = Ban {
            id: self.policy.bans.next_id(now_ms),
            who,
            until_ms: now_ms.saturating_add(seconds.saturating_mul(1000)),
            reason,
            by: operator.to_owned(),
        };
        let wait = ChangeWait {
            undo: Change::Lift(ban.id),
            json: json!({ "ok": true, "ban": ban.to_json() }).to_string(),
            audit: format!("admin {operator} ban {} {seconds}s", ban.target_text()),
            change: Change::Ban(ban),
        };
        self.change(client, wait)
    }

    fn block(
        &mut self,
        client: ClientId,
        operator: &str,
        project: String,
        seconds: Option<u64>,
        now_ms: u64,
    ) -> Option<Answer> {
        if project.is_empty() || project.chars().nth(MAX_ROOM_ID_CHARS).is_some() {
            return Some(error(400, "project must be 1-999 characters"));
        }
        if seconds.is_some_and(|s| s == 0 || s > MAX_SECONDS) {
            return Some(error(400, "seconds must be 1 to 3153600000"));
        }
        let previous = self.policy.bans.block(&project).cloned();
        if previous.is_none() && self.policy.bans.blocks().count() >= MAX_BLOCKS {
            return Some(error(409, "too many blocks (10000): unblock some first"));
        }
        let block = Block {
            project: project.clone(),
            until_ms: seconds.map(|s| now_ms.saturating_add(s.saturating_mul(1000))),
            by: operator.to_owned(),
        };
        let how_long = seconds.map_or_else(|| "until lifted".to_owned(), |s| format!("{s}s"));
        let wait = ChangeWait {
            undo: previous.map_or_else(|| Change::Unblock(project.clone()), Change::Block),
            json: json!({ "ok": true, "block": block.to_json() }).to_string(),
            audit: format!("admin {operator} block project {project:?} {how_long}"),
            change: Change::Block(block),
        };
        self.change(client, wait)
    }

    /// Makes the change in the book and hands it to the backend. Without a backend it is
    /// answered at once; otherwise the answer waits for the backend's word (`finish_change`).
    /// When the backend cannot take it, the undo puts the book back and the answer is 503.
    fn change(&mut self, client: ClientId, wait: ChangeWait) -> Option<Answer> {
        if self.policy.bans.apply(wait.change.clone()).is_err() {
            return Some(error(409, "too many bans or blocks"));
        }
        if self.durable.is_none() {
            info!("{}", wait.audit);
            return Some(Answer::Json(wait.json));
        }
        let id = self.queries.next_id;
        let sent = self.queries.waiting.len() < MAX_READS_OUT
            && match &mut self.durable {
                None => false,
                Some(Durable::Store(store, _)) => store.write_bans(wait.change.clone(), id),
                Some(Durable::Cluster(cluster, _)) => {
                    cluster.send_control(Control::Change(wait.change.clone()), Some(id))
                }
            };
        if !sent {
            let _ = self.policy.bans.apply(wait.undo);
            return Some(busy());
        }
        self.queries.next_id += 1;
        self.queries
            .waiting
            .insert(id, (client, Waiting::Change(wait)));
        None
    }

    /// The backend said whether it wrote change `id`: the answer goes out now. Written, the
    /// change is applied again (the book may have been replaced by a read of Redis made
    /// before it); not written, it is undone.
    pub(super) fn finish_change(&mut self, id: u64, written: bool) {
        let Some((client, Waiting::Change(wait))) = self.queries.waiting.remove(&id) else {
            return;
        };
        let answer = if written {
            if self.policy.bans.apply(wait.change).is_err() {
                warn!("a ban or block written by the backend is beyond the bounds here");
            }
            info!("{}", wait.audit);
            Answer::Json(wait.json)
        } else {
            warn!("{} failed: the backend did not write it", wait.audit);
            let _ = self.policy.bans.apply(wait.undo);
            busy()
        };
        self.queries.ready.push((client, answer));
    }

    /// The bans and blocks the backend holds, at start or when Redis was read again.
    pub(super) fn install_bans(&mut self, bans: Vec<Ban>, blocks: Vec<Block>) {
        let (ban_count, block_count) = (bans.len(), blocks.len());
        let left_out = self.policy.bans.replace_all(bans, blocks);
        if left_out > 0 {
            warn!("{left_out} stored bans or blocks beyond the bounds were left out");
        }
        debug!("{ban_count} bans and {block_count} project blocks in force");
    }

    /// A control message from the cluster: an admin action, applied here too. This node's
    /// own changes are applied again (they may have been lost to a read of Redis made before
    /// them); its own kicks are not (it kicked its connections already).
    pub(super) fn on_control(&mut self, message: ControlMessage, now: Instant) {
        let own = match &self.durable {
            Some(Durable::Cluster(cluster, _)) => cluster.node_id() == message.node,
            _ => true,
        };
        match message.control {
            Control::Change(change) => {
                debug!(
                    "cluster: node {:?} changed the bans: {change:?}",
                    message.node
                );
                if self.policy.bans.apply(change).is_err() {
                    warn!(
                        "cluster: a ban or block from node {:?} is beyond the bounds",
                        message.node
                    );
                }
            }
            Control::Kick { .. } if own => {}
            Control::Kick { room, user } => {
                let kicked = self.kick_local(&room, &user, now);
                info!(
                    "cluster: node {:?} kicked {user:?} from {room:?}: {kicked} connections here",
                    message.node
                );
            }
        }
    }

    /// In a cluster, tells every other node to kick `user` from `room` (the admin kick of
    /// `admin_rooms.rs` kicks this node's connections itself); logged when Redis's channel
    /// cannot take it.
    pub(super) fn publish_kick(&mut self, room: &str, user: &str) {
        if let Some(Durable::Cluster(cluster, _)) = &mut self.durable {
            let control = Control::Kick {
                room: room.to_owned(),
                user: user.to_owned(),
            };
            if !cluster.send_control(control, None) {
                warn!("cluster: the kick of {user:?} in {room:?} could not be sent to other nodes");
            }
        }
    }

    /// Once a second: drops what expired, and has the store delete it too (Redis's hashes
    /// are cleaned when read).
    pub(super) fn expire_bans(&mut self) {
        let now_ms = wall_clock_ms();
        let expired = self.policy.bans.expire(now_ms);
        if expired == 0 {
            return;
        }
        debug!("{expired} bans or project blocks expired");
        if let Some(Durable::Store(store, _)) = &mut self.durable {
            store.expire_bans(now_ms);
        }
    }
}

fn busy() -> Answer {
    Answer::Status {
        status: 503,
        json: r#"{"error":"the backend is busy, try again"}"#.to_owned(),
    }
}

fn ok(value: Value) -> Answer {
    Answer::Json(value.to_string())
}

fn error(status: u16, message: &str) -> Answer {
    Answer::Status {
        status,
        json: json!({ "error": message }).to_string(),
    }
}
