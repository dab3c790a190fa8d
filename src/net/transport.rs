//! The byte stream under one connection, with the bookkeeping the event loop needs.
//!
//! [`Transport`] wraps a socket (or, in tests and fuzzing, any `Read + Write`) and:
//! - remembers that a short read drained the kernel buffer, so the next read returns
//!   `WouldBlock` without a syscall (edge-triggered readiness will announce new data);
//! - counts bytes read, for the per-connection byte rate limit;
//! - writes a pending prefix (the HTTP `101` response, or the unsent rest of a data frame)
//!   before anything tungstenite writes;
//! - sends whole data frames itself with one vectored write of header and shared payload, so
//!   fan-out copies nothing and no large buffer stays behind once a frame is out;
//! - remembers whether the last write hit `WouldBlock`, which is how the loop knows a client is
//!   behind and should not be handed more frames until it drains.
//!
//! The stream is a plain socket or TLS ([`super::tls::TlsStream`]); TLS holds output of its
//! own, which `flush` writes and [`HalfClose::holds_data`] reports.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::tls::TlsStream;

/// A listening socket's accepted stream: TCP or a unix domain socket.
#[derive(Debug)]
pub enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
    Tls(Box<TlsStream<mio::net::TcpStream>>),
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
            Socket::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
            Socket::Tls(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write_vectored(bufs),
            Socket::Unix(s) => s.write_vectored(bufs),
            Socket::Tls(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(_) | Socket::Unix(_) => Ok(()),
            Socket::Tls(s) => s.flush(),
        }
    }
}

impl Source for Socket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.register(registry, token, interests),
            Socket::Unix(s) => s.register(registry, token, interests),
            Socket::Tls(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.reregister(registry, token, interests),
            Socket::Unix(s) => s.reregister(registry, token, interests),
            Socket::Tls(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.deregister(registry),
            Socket::Unix(s) => s.deregister(registry),
            Socket::Tls(s) => s.deregister(registry),
        }
    }
}

/// What the transport needs from a stream beyond `Read + Write`; in-memory test streams keep
/// the defaults.
pub trait HalfClose {
    /// Ends our direction of the stream (after a TLS close_notify, for TLS).
    fn shutdown_write(&mut self) {}

    /// The stream itself holds something for the loop to do (encrypted output not yet
    /// written, an end of stream not yet reported), so an empty socket buffer is no reason
    /// to skip a read.
    fn holds_data(&self) -> bool {
        false
    }
}

impl HalfClose for mio::net::TcpStream {
    fn shutdown_write(&mut self) {
        // Shutdown failing means the peer is already gone; the connection is closing anyway.
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl HalfClose for Socket {
    fn shutdown_write(&mut self) {
        match self {
            Socket::Tcp(s) => s.shutdown_write(),
            Socket::Unix(s) => {
                let _ = s.shutdown(Shutdown::Write);
            }
            Socket::Tls(s) => s.shutdown_write(),
        }
    }

    fn holds_data(&self) -> bool {
        match self {
            Socket::Tcp(_) | Socket::Unix(_) => false,
            Socket::Tls(s) => s.holds_data(),
        }
    }
}

#[derive(Debug)]
pub struct Transport<S> {
    stream: S,
    /// The last read returned less than asked: the kernel buffer is empty until the next
    /// readable event.
    drained: bool,
    /// The last write could not finish: the peer is behind.
    blocked: bool,
    bytes_read: u64,
    bytes_written: u64,
    prefix: Vec<u8>,
}

impl<S> Transport<S> {
    pub fn new(stream: S) -> Self {
        Transport {
            stream,
            drained: false,
            blocked: false,
            bytes_read: 0,
            bytes_written: 0,
            prefix: Vec::new(),
        }
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// A readable event arrived: there may be data again.
    pub fn mark_readable(&mut self) {
        self.drained = false;
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Bytes read since the last call.
    pub fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Ends our direction of the stream once everything is written.
    pub fn shutdown_write(&mut self)
    where
        S: HalfClose,
    {
        self.stream.shutdown_write();
    }

    /// Queues bytes to go out before anything else written through this transport.
    pub fn set_prefix(&mut self, bytes: Vec<u8>) {
        self.prefix = bytes;
    }
}

impl<S: Write> Transport<S> {
    fn write_prefix(&mut self) -> io::Result<()> {
        while !self.prefix.is_empty() {
            let written = self.stream.write(&self.prefix)?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.bytes_written += written as u64;
            self.prefix.drain(..written);
        }
        // Give the memory back: an idle connection should hold no output buffer.
        if self.prefix.capacity() > 0 {
            self.prefix = Vec::new();
        }
        Ok(())
    }

    /// Writes the pending prefix; used when no WebSocket output follows it.
    pub fn flush_prefix(&mut self) -> io::Result<()> {
        let result = self.write_prefix().and_then(|()| self.stream.flush());
        self.note(&result);
        result
    }

    fn note<T>(&mut self, result: &io::Result<T>) {
        self.blocked = matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    }
}

impl<S: Write> Transport<S> {
    /// Sends one already-framed message: `header` then `payload`, in one vectored write when
    /// nothing is pending. What the socket does not take is kept and goes out first later; the
    /// buffer holding it is freed once it has been written.
    pub fn send_frame(&mut self, header: &[u8], payload: &[u8]) -> io::Result<()> {
        if !self.prefix.is_empty() {
            self.prefix.extend_from_slice(header);
            self.prefix.extend_from_slice(payload);
            return self.flush_prefix();
        }
        let total = header.len() + payload.len();
        let written = match self
            .stream
            .write_vectored(&[IoSlice::new(header), IoSlice::new(payload)])
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        self.bytes_written += written as u64;
        if written < total {
            let header_rest = header.get(written..).unwrap_or_default();
            let payload_rest = payload
                .get(written.saturating_sub(header.len())..)
                .unwrap_or_default();
            self.prefix
                .reserve_exact(header_rest.len() + payload_rest.len());
            self.prefix.extend_from_slice(header_rest);
            self.prefix.extend_from_slice(payload_rest);
            self.blocked = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // A TLS stream took the frame but may still hold records the socket did not take.
        let result = self.stream.flush();
        self.note(&result);
        result
    }
}

impl<S: Read + HalfClose> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained && !self.stream.holds_data() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.stream.read(buf) {
            Ok(n) => {
                if n < buf.len() {
                    self.drained = true;
                }
                self.bytes_read += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                Err(e)
            }
        }
    }
}

impl<S: Write> Write for Transport<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.write_prefix().and_then(|()| self.stream.write(buf));
        if let Ok(n) = result {
            self.bytes_written += n as u64;
        }
        self.note(&result);
        result
    }

    fn flush(&mut self) -> io::Result<()> {
        let result = self.write_prefix().and_then(|()| self.stream.flush());
        self.note(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts at most `room` bytes in total, then says `WouldBlock`.
    struct Pipe {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.taken.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_partly_sent_frame_is_finished_before_anything_else() {
        let mut transport = Transport::new(Pipe {
            taken: Vec::new(),
            room: 3,
        });
        let sent = transport.send_frame(b"HH", b"payload");
        assert_eq!(sent.map_err(|e| e.kind()), Err(io::ErrorKind::WouldBlock));
        assert!(transport.is_blocked());
        // Later output (a pong from tungstenite, say) must wait for the frame's rest.
        transport.stream.room = 100;
        transport.write_all(b"|next").expect("write");
        assert_eq!(transport.stream.taken, b"HHpayload|next");
        assert!(!transport.is_blocked());
        assert_eq!(
            transport.prefix.capacity(),
            0,
            "the pending buffer is released"
        );
    }

    #[test]
    fn frames_queue_behind_pending_bytes() {
        let mut transport = Transport::new(Pipe {
            taken: Vec::new(),
            room: 0,
        });
        transport.set_prefix(b"101 ".to_vec());
        assert!(transport.send_frame(b"H", b"x").is_err());
        transport.stream.room = 100;
        transport.flush_prefix().expect("flush");
        assert_eq!(transport.stream.taken, b"101 Hx");
    }
}
