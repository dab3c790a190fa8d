//! Building the frames a flush sends: one newline-joined frame per member with news.
//!
//! Members that need the same bytes share one frame: the frame for a member is determined by its
//! format (dialect), the version it has seen, and whether it wrote some of the changed variables
//! itself (then it gets a frame of its own without them, unless a full-state reply older than
//! those writes told it otherwise: see `Member::resend_own`). A flush of a room where everybody
//! is up to date except for the latest changes builds one frame plus one per writer.

use smallvec::SmallVec;

use super::room::{Member, Room};
use super::value::ValueRef;
use super::{ClientId, Format};

/// A finished frame. Cloning it is a reference-count increment, so one frame built for a room
/// is handed to every member that needs exactly those bytes.
pub type Frame = tungstenite::Utf8Bytes;

/// Writes one `set` line for a variable in a given format. Dialects provide this.
/// The room's id is given for formats that name the room in every line.
pub type EncodeSet = fn(format: Format, room: &str, line: SetLine<'_>, out: &mut String);

/// What a `set` line may show of a variable: formats that name its last writer read `user`
/// and `changed_ms`, the others only `name` and `value`.
#[derive(Clone, Copy, Debug)]
pub struct SetLine<'a> {
    pub name: &'a str,
    pub value: ValueRef<'a>,
    /// The last writer as its dialect knows it ("" when unknown).
    pub user: &'a str,
    /// When it wrote, in Unix milliseconds (0 when unknown).
    pub changed_ms: u64,
}

/// Identifies a frame's contents: who it is for, in terms that decide its bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FrameKey {
    format: Format,
    seen: u64,
    /// Set when the frame leaves out this client's own writes.
    excluding: Option<ClientId>,
}

/// Frames built during one room's flush, reused for every member with the same key.
#[derive(Default)]
pub struct FrameCache {
    frames: SmallVec<[(FrameKey, Frame); 4]>,
    scratch: String,
}

impl FrameCache {
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    /// The frame `member` needs to catch up with `room`, or `None` if every change since it last
    /// looked was its own.
    pub fn frame_for(&mut self, room: &Room, member: &Member, encode: EncodeSet) -> Option<Frame> {
        let excluding = (!member.resend_own && room.wrote_since(member.client, member.seen))
            .then_some(member.client);
        let key = FrameKey {
            format: member.format,
            seen: member.seen,
            excluding,
        };
        if let Some((_, frame)) = self.frames.iter().find(|(k, _)| *k == key) {
            return (!frame.is_empty()).then(|| frame.clone());
        }
        self.scratch.clear();
        for variable in &room.variables {
            if variable.changed_at <= member.seen || Some(variable.writer) == excluding {
                continue;
            }
            if !self.scratch.is_empty() {
                self.scratch.push('\n');
            }
            encode(member.format, &room.id, variable.line(), &mut self.scratch);
        }
        let frame = Frame::from(self.scratch.clone());
        self.frames.push((key, frame.clone()));
        (!frame.is_empty()).then_some(frame)
    }
}

/// Every variable of `room` in one frame, for a member that just joined.
pub fn snapshot(room: &Room, format: Format, encode: EncodeSet) -> Option<Frame> {
    if room.variables.is_empty() {
        return None;
    }
    let mut text = String::new();
    write_snapshot(room, format, encode, &mut text);
    Some(Frame::from(text))
}

/// Writes every variable of `room` as newline-joined `format` lines.
pub fn write_snapshot(room: &Room, format: Format, encode: EncodeSet, out: &mut String) {
    for (i, variable) in room.variables.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        encode(format, &room.id, variable.line(), out);
    }
}
