//! Large full-state renderings after they were handed out: which are still alive, and how many
//! bytes of them only blocked connections keep alive.
//!
//! A rendering of a whole room (a join's snapshot, a `cloud.get` or `JOINED_ROOM` reply) is one
//! reference-counted buffer, shared by the room's cache for a short while and by every
//! connection that has not written it out yet. Once the cache lets go, only connections hold
//! it: connections that do not read keep megabytes alive that nobody will share again. The
//! engine remembers every rendering of [`SHARE_STALE_BYTES`] or more it made (a clone costs
//! a reference, not a copy); once a second the event loop takes a [`RenderCensus`], finds which
//! of them the unsent output of its blocked connections points into, and hands the total back
//! ([`super::Engine::note_held_renders`]), which then counts against the state budget. A
//! rendering only the book still holds is dropped at that census.
//!
//! Nothing here runs per message: renderings are made at most once per room and format per
//! reuse window, and the census runs once a second.

use bytes::Bytes;

use super::{Frame, SHARE_STALE_BYTES};

/// The large renderings made and possibly still held outside the engine.
#[derive(Debug, Default)]
pub struct RenderBook {
    live: Vec<Bytes>,
    /// Bytes of renderings that, at the last census, only blocked connections held.
    pub held_bytes: usize,
}

impl RenderBook {
    /// Remembers `frame` if it is large enough to matter.
    pub fn track(&mut self, frame: &Frame) {
        if frame.len() >= SHARE_STALE_BYTES {
            self.live.push(Bytes::from(frame.clone()));
        }
    }

    /// Forgets the renderings nobody but the book holds (freeing them) and lists the others;
    /// `cached` tells which buffers (by their first byte's address, sorted) the rooms' caches
    /// hold.
    pub fn census(&mut self, cached: &[usize]) -> RenderCensus {
        self.live.retain(|render| !render.is_unique());
        let mut spans: Vec<Span> = self
            .live
            .iter()
            .map(|render| {
                let start = render.as_ptr() as usize;
                Span {
                    start,
                    len: render.len(),
                    cached: cached.binary_search(&start).is_ok(),
                    holders: 0,
                }
            })
            .collect();
        spans.sort_unstable_by_key(|span| span.start);
        RenderCensus { spans }
    }

    /// Renderings being tracked, for tests.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.live.len()
    }
}

/// One tracked rendering's buffer and who was found holding it.
#[derive(Debug)]
struct Span {
    start: usize,
    len: usize,
    /// A room's cache holds it: it may still be handed to others.
    cached: bool,
    /// Blocked connections found holding part of it.
    holders: u32,
}

/// Which renderings blocked connections hold, filled in by the event loop.
#[derive(Debug, Default)]
pub struct RenderCensus {
    spans: Vec<Span>,
}

/// A rendering in a [`RenderCensus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderId(usize);

impl RenderCensus {
    /// The rendering that `chunk` (a piece of a connection's unsent output) is part of.
    pub fn find(&self, chunk: &[u8]) -> Option<RenderId> {
        let at = chunk.as_ptr() as usize;
        let index = self.spans.partition_point(|span| span.start <= at);
        let span = self.spans.get(index.checked_sub(1)?)?;
        (at < span.start + span.len).then_some(RenderId(index - 1))
    }

    /// Whether no large rendering may be held outside the engine: nothing to look for.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Records one more connection holding `render`; call once per connection.
    pub fn hold(&mut self, render: RenderId) {
        if let Some(span) = self.spans.get_mut(render.0) {
            span.holders += 1;
        }
    }

    /// Whether `render` is held by connections and by no cache: nobody will be handed it
    /// again, and its bytes live on only for the clients that have not read them.
    pub fn is_retired(&self, render: RenderId) -> bool {
        self.spans
            .get(render.0)
            .is_some_and(|span| span.holders > 0 && !span.cached)
    }

    /// Size of `render`'s buffer.
    pub fn len(&self, render: RenderId) -> usize {
        self.spans.get(render.0).map_or(0, |span| span.len)
    }

    /// Bytes of the renderings that blocked connections hold and no cache does.
    pub fn held_bytes(&self) -> usize {
        self.spans
            .iter()
            .filter(|span| span.holders > 0 && !span.cached)
            .map(|span| span.len)
            .sum()
    }
}
