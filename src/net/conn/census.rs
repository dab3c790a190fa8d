//! What the once-a-second census of held renderings (`net/server/renders.rs`) asks of a
//! connection: which shared replies its blocked output holds, and for how long nothing of it
//! was read.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use super::{Conn, LoopContext, Phase, Status};
use crate::net::transport::HalfClose;

/// What the census of held renderings (`net/server/renders.rs`) asks of a connection.
impl<S: Read + Write + HalfClose> Conn<S> {
    /// The chunks of unsent output of an open connection blocked on a reply that holds a
    /// shared frame (a full-state reply); nothing for the others, so the census walks only
    /// these.
    pub fn unsent_replies(&mut self) -> impl Iterator<Item = &bytes::Bytes> {
        let transport = match &self.phase {
            Phase::Open { ws, .. } if self.reply_blocked => Some(ws.get_ref()),
            _ => None,
        };
        let transport = transport.filter(|t| t.pending_bytes() > 0);
        self.reply_blocked = transport.is_some();
        transport.into_iter().flat_map(|t| t.unsent())
    }

    /// How long output has waited without a byte of it being written, as seen by successive
    /// calls (about once a second).
    pub fn unread_for(&mut self, now: Instant) -> Duration {
        let written = self.bytes_written();
        // Output the loop's write budget held back is the server's delay, not the client's.
        let held_back = matches!(&self.phase, Phase::Open { ws, .. } if ws.get_ref().is_cut());
        if written != self.write_progress.0 || held_back {
            self.write_progress = (written, now);
        }
        self.stalled_since.map_or(Duration::ZERO, |since| {
            now.saturating_duration_since(since.max(self.write_progress.1))
        })
    }

    /// Drops a connection that stopped reading a large whole-room reply: like the write-stall
    /// timeout, without a close frame it would not read either.
    pub fn drop_unread_reply(&mut self, bytes: usize, ctx: &mut LoopContext<'_>) -> Status {
        let reason = format!("closed: client stopped reading a whole-room reply of {bytes} bytes");
        self.finish(&reason, ctx);
        self.status()
    }
}
