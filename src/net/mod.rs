//! The I/O layer: the mio event loop and everything that touches sockets.

mod admission;
pub mod api;
pub mod conn;
mod fd_limit;
mod frame_boundary;
mod frame_writer;
pub mod head_reader;
pub mod http;
mod loop_context;
pub mod per_ip;
mod server;
mod socket;
#[cfg(test)]
mod test_pipe;
pub mod tls;
pub mod tls_config;
pub mod transport;
pub mod write_budget;

pub use server::durable::{drain, BackendLink};
pub use server::{BoundAddress, Server, StartError};
