//! The byte stream under one connection, with the bookkeeping the event loop needs.
//!
//! [`Transport`] wraps a socket (or, in tests and fuzzing, any `Read + Write`) and:
//! - remembers that a short read drained the kernel buffer, so the next read returns
//!   `WouldBlock` without a syscall (edge-triggered readiness will announce new data);
//! - counts bytes read, for the per-connection byte rate limit;
//! - writes a pending prefix (the HTTP `101` response) before anything tungstenite writes;
//! - remembers whether the last write hit `WouldBlock`, which is how the loop knows a client is
//!   behind and should not be handed more frames until it drains.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::{Interest, Registry, Token};

/// A listening socket's accepted stream: TCP or a unix domain socket.
#[derive(Debug)]
pub enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Socket {
    pub fn shutdown_write(&self) {
        // Shutdown failing means the peer is already gone; the connection is closing anyway.
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Write),
            Socket::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.deregister(registry),
            Socket::Unix(s) => s.deregister(registry),
        }
    }
}

/// Streams that can half-close; in-memory test streams do nothing.
pub trait HalfClose {
    fn shutdown_write(&self) {}
}

impl HalfClose for Socket {
    fn shutdown_write(&self) {
        Socket::shutdown_write(self);
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
        self.prefix = Vec::new();
        Ok(())
    }

    /// Writes the pending prefix; used when no WebSocket output follows it.
    pub fn flush_prefix(&mut self) -> io::Result<()> {
        let result = self.write_prefix();
        self.note(&result);
        result
    }

    fn note<T>(&mut self, result: &io::Result<T>) {
        self.blocked = matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    }
}

impl<S: Read> Read for Transport<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained {
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
