//! Streaming reader of server-to-client WebSocket frames. Headers are parsed by tungstenite;
//! payloads are never buffered or copied: each chunk read from the socket is handed to the
//! [`Receiver`] where it lies, so large coalesced frames cost one pass of `memchr` and no
//! UTF-8 validation or zero-filled buffers. Only control frames (at most 125 bytes) are
//! collected, for the caller to answer.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control as ControlOp, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::recv::{Message, Receiver};

/// Refuse frames larger than this (tungstenite's default limit for a message).
const MAX_FRAME: u64 = 64 << 20;
const MAX_HEADER: usize = 14;
const MAX_CONTROL: usize = 125;
/// RFC 6455 "no status received", reported when a close frame carries no code.
pub const NO_STATUS: u16 = 1005;

/// A complete control frame, for the connection to act on.
pub enum Control {
    Ping(ControlPayload),
    Pong,
    Close(u16),
}

pub struct ControlPayload {
    bytes: [u8; MAX_CONTROL],
    len: u8,
}

impl ControlPayload {
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

enum State {
    Header,
    Data { remaining: u64, fin: bool },
    Control { remaining: u64, op: ControlOp },
}

pub struct FrameReader {
    state: State,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// The data message being received, possibly over several frames.
    message: Option<Message>,
    control: ControlPayload,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            state: State::Header,
            header: [0; MAX_HEADER],
            header_len: 0,
            message: None,
            control: ControlPayload {
                bytes: [0; MAX_CONTROL],
                len: 0,
            },
        }
    }

    /// Consumes bytes until they run out or a control frame completes. Returns how many
    /// bytes were used (call again with the rest) and the control frame, if any.
    pub fn consume(
        &mut self,
        data: &[u8],
        rx: &mut Receiver,
    ) -> Result<(usize, Option<Control>), String> {
        let mut pos = 0;
        loop {
            match self.state {
                State::Header => {
                    let Some(used) = self.read_header(&data[pos..], rx)? else {
                        return Ok((data.len(), None));
                    };
                    pos += used;
                }
                State::Data { remaining, fin } => {
                    let take = remaining.min((data.len() - pos) as u64) as usize;
                    let remaining = remaining - take as u64;
                    let message_ends = remaining == 0 && fin;
                    if let Some(message) = &mut self.message {
                        rx.on_message_bytes(message, &data[pos..pos + take], !message_ends);
                    }
                    pos += take;
                    self.state = State::Data { remaining, fin };
                    if remaining == 0 {
                        self.finish_data_frame(fin, rx);
                    }
                }
                State::Control { remaining, op } => {
                    let take = remaining.min((data.len() - pos) as u64) as usize;
                    let at = usize::from(self.control.len);
                    self.control.bytes[at..at + take].copy_from_slice(&data[pos..pos + take]);
                    self.control.len += take as u8;
                    pos += take;
                    let remaining = remaining - take as u64;
                    self.state = State::Control { remaining, op };
                    if remaining == 0 {
                        return Ok((pos, Some(self.finish_control(op))));
                    }
                }
            }
            if pos == data.len() {
                // A zero-length frame may still be pending completion.
                match self.state {
                    State::Data { remaining: 0, fin } => self.finish_data_frame(fin, rx),
                    State::Control { remaining: 0, op } => {
                        return Ok((pos, Some(self.finish_control(op))))
                    }
                    _ => {}
                }
                return Ok((pos, None));
            }
        }
    }

    /// Parses a header from the bytes kept so far plus `data`. Returns how many bytes of
    /// `data` it used, or None when the header is still incomplete (all of `data` kept).
    fn read_header(&mut self, data: &[u8], rx: &mut Receiver) -> Result<Option<usize>, String> {
        let kept = self.header_len;
        let added = (MAX_HEADER - kept).min(data.len());
        let parsed = if kept == 0 {
            parse_header(data)?
        } else {
            self.header[kept..kept + added].copy_from_slice(&data[..added]);
            parse_header(&self.header[..kept + added])?
        };
        let Some((header, length, header_size)) = parsed else {
            self.header[kept..kept + added].copy_from_slice(&data[..added]);
            self.header_len = kept + added;
            return Ok(None);
        };
        self.header_len = 0;
        self.start_frame(&header, length, rx)?;
        Ok(Some(header_size - kept))
    }

    fn start_frame(
        &mut self,
        h: &FrameHeader,
        length: u64,
        rx: &mut Receiver,
    ) -> Result<(), String> {
        if h.mask.is_some() {
            return Err("protocol: masked frame from server".into());
        }
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return Err("protocol: reserved bits set".into());
        }
        if length > MAX_FRAME {
            return Err("protocol: frame too large".into());
        }
        self.state = match h.opcode {
            OpCode::Data(Data::Continue) if self.message.is_none() => {
                return Err("protocol: continuation without a message".into())
            }
            OpCode::Data(Data::Continue) => State::Data {
                remaining: length,
                fin: h.is_final,
            },
            OpCode::Data(_) if self.message.is_some() => {
                return Err("protocol: new message inside a fragmented one".into())
            }
            OpCode::Data(data) => {
                self.message = Some(rx.begin_message(data == Data::Binary));
                State::Data {
                    remaining: length,
                    fin: h.is_final,
                }
            }
            OpCode::Control(_) if !h.is_final || length > MAX_CONTROL as u64 => {
                return Err("protocol: fragmented or oversized control frame".into())
            }
            OpCode::Control(op) => {
                self.control.len = 0;
                State::Control {
                    remaining: length,
                    op,
                }
            }
        };
        Ok(())
    }

    fn finish_data_frame(&mut self, fin: bool, rx: &mut Receiver) {
        self.state = State::Header;
        if fin {
            if let Some(message) = self.message.take() {
                rx.end_message(&message);
            }
        }
    }

    fn finish_control(&mut self, op: ControlOp) -> Control {
        self.state = State::Header;
        match op {
            ControlOp::Ping => Control::Ping(ControlPayload {
                bytes: self.control.bytes,
                len: self.control.len,
            }),
            ControlOp::Close => Control::Close(match self.control.as_slice() {
                [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                _ => NO_STATUS,
            }),
            _ => Control::Pong,
        }
    }
}

/// Header, payload length and header size, or None if `bytes` holds only part of a header.
fn parse_header(bytes: &[u8]) -> Result<Option<(FrameHeader, u64, usize)>, String> {
    let mut cursor = Cursor::new(bytes);
    match FrameHeader::parse(&mut cursor) {
        Ok(Some((header, length))) => Ok(Some((header, length, cursor.position() as usize))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("protocol: {e}")),
    }
}
