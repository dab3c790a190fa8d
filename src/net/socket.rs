//! An accepted connection's stream: TCP, a unix domain socket, or TLS over TCP, as one
//! [`Socket`] the transport reads and writes and the poll registers.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::tls::TlsStream;
use super::transport::HalfClose;

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

    fn take_wire_bytes_read(&mut self) -> Option<u64> {
        match self {
            Socket::Tcp(_) | Socket::Unix(_) => None,
            Socket::Tls(s) => s.take_wire_bytes_read(),
        }
    }
}
