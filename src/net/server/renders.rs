//! Once a second: which large renderings of whole rooms (full-state replies) only blocked
//! connections keep alive, and which of those connections stopped reading them.
//!
//! The engine lists the renderings it made that may still be held ([`Engine::render_census`]);
//! each connection blocked on a reply says which buffers its unsent output points into. The
//! bytes of renderings held by such connections and by no room's cache count against
//! `--max-state-memory` until the next census. A connection holding such a rendering that has
//! written nothing for [`UNREAD_REPLY_TIMEOUT`] is dropped: a client that reads nothing for that
//! long while owing a reply is not coming back for it, and the megabytes live on only for it and
//! others like it. This holds whether one connection holds the rendering or several: otherwise
//! non-readers asking in pairs would each keep half a rendering for the whole write-stall
//! timeout (60 s), and a connection pool could keep one rendering per pair. While a room's
//! cache still holds the rendering, it costs the non-readers nothing of their own.
//!
//! [`Engine::render_census`]: crate::engine::Engine::render_census

use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::Server;
use crate::engine::RenderId;

/// How long a connection may hold, unread, a rendering no room's cache holds any more.
pub(super) const UNREAD_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Server {
    /// Takes the census of held renderings, records their bytes in the engine, and drops the
    /// connections that hold one and have not read for [`UNREAD_REPLY_TIMEOUT`].
    pub(super) fn watch_held_renders(&mut self, now: Instant) {
        let mut census = self.engine.render_census();
        if census.is_empty() {
            self.engine.note_held_renders(0);
            return;
        }
        // (connection, rendering) for each rendering a blocked connection holds, once.
        let mut holding: Vec<(usize, RenderId)> = Vec::new();
        for (key, entry) in self.conns.iter_mut() {
            let mut found: SmallVec<[RenderId; 2]> = SmallVec::new();
            for chunk in entry.conn.unsent_replies() {
                if let Some(render) = census.find(chunk) {
                    if !found.contains(&render) {
                        found.push(render);
                    }
                }
            }
            for render in found {
                census.hold(render);
                holding.push((key, render));
            }
        }
        self.engine.note_held_renders(census.held_bytes());
        for (key, render) in holding {
            if !census.is_retired(render) {
                continue;
            }
            let (mut ctx, conns, followups) = self.context(now);
            let Some(entry) = conns.get_mut(key) else {
                continue;
            };
            if entry.conn.unread_for(now) >= UNREAD_REPLY_TIMEOUT {
                let status = entry.conn.drop_unread_reply(census.len(render), &mut ctx);
                followups.apply(key, status);
            }
        }
    }
}
