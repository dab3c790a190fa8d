//! A socket for unit tests of the transport and the frame writer: it takes at most `room`
//! bytes in total, then says `WouldBlock`, and keeps what it took. The test holds the same
//! [`Wire`] as the transport's stream, to read what went out and to make room.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;

use super::transport::HalfClose;

/// What the peer's side of the socket has taken, and how much it takes in total.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    pub taken: Vec<u8>,
    pub room: usize,
}

#[derive(Debug)]
pub(crate) struct Pipe(Rc<RefCell<Wire>>);

impl Pipe {
    /// A pipe that takes `room` bytes, and the test's handle on what it takes.
    pub(crate) fn with_room(room: usize) -> (Pipe, Rc<RefCell<Wire>>) {
        let wire = Rc::new(RefCell::new(Wire {
            taken: Vec::new(),
            room,
        }));
        (Pipe(wire.clone()), wire)
    }
}

impl Read for Pipe {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut wire = self.0.borrow_mut();
        let n = buf.len().min(wire.room.saturating_sub(wire.taken.len()));
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        wire.taken.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()) {
            match self.write(buf) {
                Ok(n) if n < buf.len() => return Ok(total + n),
                Ok(n) => total += n,
                Err(e) if total == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl HalfClose for Pipe {}
