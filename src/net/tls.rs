//! A TLS connection as one more byte stream under [`Transport`](super::transport::Transport).
//!
//! [`TlsStream`] pairs a socket with rustls's sans-IO `ServerConnection`: reads pull ciphertext
//! from the socket, let rustls decrypt it (answering handshake messages on the way) and hand
//! out plaintext; writes give plaintext to rustls and push the records it makes to the socket.
//! The connection above sees plain bytes and never knows. Two things matter under edge-triggered
//! readiness:
//! - a read returns less than asked only when rustls holds no more plaintext *and* the socket
//!   said `WouldBlock` (or ended), so the transport's "short read means drained" stays true;
//! - records rustls could not write yet are its own buffered output: `flush` writes them and
//!   says `WouldBlock` while some remain, and [`HalfClose::holds_data`] tells the transport
//!   not to skip I/O for them. rustls's buffer limit keeps that output bounded per client.
//!
//! Every shared frame is encrypted once per connection: TLS records are per-session, so the
//! plain path's one `writev` of a shared payload does not carry over.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::event::Source;
use mio::{Interest, Registry, Token};
use rustls::{ServerConfig, ServerConnection};
use smallvec::SmallVec;

use super::transport::HalfClose;

/// Encrypted output (and plaintext queued before the handshake ends) rustls may hold for one
/// client before writes say `WouldBlock`; beyond it the transport keeps the rest of a frame.
pub const TLS_OUTPUT_LIMIT: usize = 16 * 1024;

pub struct TlsStream<S> {
    socket: S,
    tls: ServerConnection,
    /// The socket reached end of stream: reads answer 0 from now on.
    eof: bool,
    /// Our direction is shut: whatever rustls still holds is dropped, never written, and what
    /// the peer still sends is read off the socket without rustls (see [`Self::discard_input`]).
    write_shut: bool,
    /// rustls refused the peer's input (or the socket failed under it): the connection is dead,
    /// and rustls must not be handed more input (it has sent its fatal alert).
    failed: bool,
    /// Bytes read off the socket (records, handshake, padding) not yet taken by
    /// [`HalfClose::take_wire_bytes_read`]: the byte rate limit charges these, not plaintext.
    wire_bytes_read: u64,
}

impl<S> std::fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.tls.is_handshaking())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl<S> TlsStream<S> {
    pub fn new(socket: S, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut tls = ServerConnection::new(config)?;
        tls.set_buffer_limit(Some(TLS_OUTPUT_LIMIT));
        Ok(TlsStream {
            socket,
            tls,
            eof: false,
            write_shut: false,
            failed: false,
            wire_bytes_read: 0,
        })
    }

    pub fn socket(&self) -> &S {
        &self.socket
    }

    /// The negotiated TLS version, once the handshake is done (for the log).
    pub fn protocol(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.protocol_version()
    }
}

impl<S: Write> TlsStream<S> {
    /// Writes the records rustls holds; `WouldBlock` if the socket could not take them all.
    fn write_records(&mut self) -> io::Result<()> {
        if self.write_shut {
            return Ok(());
        }
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what it can; only a failed socket is an error.
    fn write_records_if_possible(&mut self) -> io::Result<()> {
        match self.write_records() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::ErrorKind::InvalidData.into());
        }
        if self.write_shut {
            return self.discard_input(buf);
        }
        // Handshake answers that did not fit earlier go first: the client waits for them.
        self.write_records_if_possible()?;
        let mut filled = 0;
        loop {
            // Plaintext rustls already holds: no readiness event will announce it.
            match self
                .tls
                .reader()
                .read(buf.get_mut(filled..).unwrap_or_default())
            {
                Ok(0) if filled < buf.len() => return Ok(filled), // close_notify received
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without close_notify: an end of stream like any other.
                Err(e) if self.eof && e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(filled)
                }
                Err(e) => return if filled > 0 { Ok(filled) } else { Err(e) },
            }
            if filled == buf.len() || self.eof {
                return Ok(filled);
            }
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(filled);
                }
                Ok(n) => {
                    self.wire_bytes_read += n as u64;
                    if let Err(error) = self.tls.process_new_packets() {
                        // rustls has queued an alert saying why; send it before giving up.
                        self.failed = true;
                        let _ = self.write_records();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, error));
                    }
                    self.write_records_if_possible()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 && e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) => {
                    // The socket failed, or rustls's input buffer is full: either way no more
                    // input goes to rustls.
                    self.failed = true;
                    return Err(e);
                }
            }
        }
    }
}

impl<S: Read> TlsStream<S> {
    /// After our close_notify, reads the peer's bytes off the socket into `buf` undecrypted,
    /// for the closing drain, which only waits for the peer's end of stream. rustls must not
    /// see them: it counts close_notify as the one alert it may send, and a bad record now
    /// would make it send a second (its debug assertion panics; release builds would send it).
    fn discard_input(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let n = self.socket.read(buf)?;
        self.eof = n == 0 && !buf.is_empty();
        self.wire_bytes_read += n as u64;
        Ok(n)
    }
}

impl<S: Write> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.write_shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.write_records_if_possible()?;
        // One call to rustls per pass, so header and payload share records.
        let mut rest: SmallVec<[IoSlice<'_>; 4]> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut rest[..];
        let mut taken = 0;
        while rest.iter().any(|b| !b.is_empty()) {
            let n = self.tls.writer().write_vectored(rest)?;
            taken += n;
            IoSlice::advance_slices(&mut rest, n);
            match self.write_records() {
                Ok(()) if n > 0 => {}
                // rustls's buffer is at its limit, or the socket is full: the client is behind.
                // Keep going while the socket takes records, or no writable edge would come.
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records()
    }
}

impl<S: Write + HalfClose> HalfClose for TlsStream<S> {
    fn shutdown_write(&mut self) {
        self.tls.send_close_notify();
        // Best effort, like the close frame before it: the socket is closing either way.
        let _ = self.write_records();
        self.write_shut = true;
        self.socket.shutdown_write();
    }

    fn holds_data(&self) -> bool {
        self.eof || (self.tls.wants_write() && !self.write_shut)
    }

    fn take_wire_bytes_read(&mut self) -> Option<u64> {
        Some(std::mem::take(&mut self.wire_bytes_read))
    }
}

impl<S: Source> Source for TlsStream<S> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `input` (then `WouldBlock`, or the end of stream once `eof`); takes `budget`
    /// bytes, then says `WouldBlock`; remembers writes after the shutdown.
    #[derive(Default)]
    struct Pipe {
        input: Vec<u8>,
        eof: bool,
        budget: usize,
        written: usize,
        shut: bool,
        written_after_shut: usize,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.budget);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.budget -= n;
            self.written += n;
            if self.shut {
                self.written_after_shut += n;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl HalfClose for Pipe {
        fn shutdown_write(&mut self) {
            self.shut = true;
        }
    }

    fn config() -> Arc<ServerConfig> {
        let generated =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![generated.cert.der().clone()], key)
                .expect("config");
        Arc::new(config)
    }

    #[test]
    fn nothing_is_written_after_the_write_half_is_shut() {
        let mut stream = TlsStream::new(Pipe::default(), config()).expect("stream");
        // The close_notify cannot go out now; it must not go out after the shutdown either
        // (a real socket would fail the write and cut the drain short).
        stream.shutdown_write();
        assert!(stream.socket().shut);
        stream.socket.budget = usize::MAX;
        let mut buf = [0u8; 64];
        assert!(stream.read(&mut buf).is_err());
        assert!(stream.write(b"late").is_err());
        assert_eq!(stream.socket().written_after_shut, 0);
        assert!(!stream.holds_data());
    }

    /// Found by the `tls` fuzz target (`fuzz/corpus/tls/regression-fatal-alert-after-close-notify`):
    /// a client sends one byte of a record and stalls; the handshake deadline closes the
    /// connection with close_notify; then the rest of the record arrives while the connection
    /// drains. rustls counts close_notify as its one terminal alert, so the bad record made it
    /// send a second, fatal one (a debug assertion panics on it).
    #[test]
    fn input_after_our_close_notify_never_reaches_rustls() {
        let mut stream = TlsStream::new(Pipe::default(), config()).expect("stream");
        let mut buf = [0u8; 64];
        stream.socket.input = vec![0x14];
        let error = stream.read(&mut buf).expect_err("a partial record header");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        stream.shutdown_write();
        // A change_cipher_spec header with a version rustls refuses, and more garbage.
        stream.socket.input = vec![0x14; 20];
        stream.socket.budget = usize::MAX;
        assert_eq!(stream.read(&mut buf).expect("discarded"), 20);
        let error = stream.read(&mut buf).expect_err("nothing more yet");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        stream.socket.eof = true;
        assert_eq!(stream.read(&mut buf).expect("end of stream"), 0);
        assert!(stream.holds_data(), "the end of stream is reported again");
        assert_eq!(stream.socket().written_after_shut, 0);
    }

    #[test]
    fn every_byte_off_the_socket_counts_for_the_byte_limit_plaintext_or_not() {
        let mut stream = TlsStream::new(Pipe::default(), config()).expect("stream");
        // Half a ClientHello record header: no plaintext, but 3 bytes read.
        stream.socket.input = vec![22, 3, 1];
        let mut buf = [0u8; 64];
        assert!(stream.read(&mut buf).is_err());
        assert_eq!(stream.take_wire_bytes_read(), Some(3));
        assert_eq!(stream.take_wire_bytes_read(), Some(0));
    }
}
