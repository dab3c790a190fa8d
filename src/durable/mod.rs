//! When work goes to the durable backend and what its answers mean: the store's and the
//! cluster's orchestration, sans-IO.
//!
//! The engine keeps what is owed and who waits (`engine/durable.rs`, `engine/cluster.rs`);
//! the plans here decide when to hand it out (a batch at most every `--persist-interval`, one
//! round per tick, member counts refreshed every 5 s), what is out (one batch or round at a
//! time), and what an answer or an outage means for it. They never read the clock and never
//! touch a channel: the loop's driver (`net/server/durable.rs`) passes `now` and the
//! backend's answers in, sends the [`Command`]s they produce, gives back the ones the
//! backend's bounded channel refused ([`StorePlan::handle_unsent`],
//! [`ClusterPlan::handle_unsent`]), and resumes the clients they name (joins that can be
//! tried again). So the whole policy is testable in virtual time (`tests.rs`).
//!
//! Call order, per loop turn: the backend's answers as they arrive (`handle_reply` /
//! `handle_event`); then, for the cluster, `handle_broken` if a helper thread is found gone
//! (checked before each poll); then `poll` (again while it names clients to resume), sending
//! each command and handing back the refused ones (`handle_unsent`); then `poll_timeout` for
//! the loop's wake-up.

mod cluster_plan;
mod store_plan;

#[cfg(test)]
mod tests;

pub use cluster_plan::ClusterPlan;
pub use store_plan::StorePlan;

use crate::cluster::Round;
use crate::engine::Batch;

/// Work for the backend, as values; the driver sends each.
#[derive(Debug)]
pub enum Command {
    /// Store: read a room joins wait for.
    Load(Box<str>),
    /// Store: write a batch (one is out at a time).
    Save(Batch),
    /// Cluster: subscribe to a room's channel; the read follows Redis's confirmation, so that
    /// no batch published after the read is missed.
    Subscribe(Box<str>),
    /// Cluster: leave the channel of a room that left memory.
    Unsubscribe(Box<str>),
    /// Cluster: one pipeline with the batch, the reads and the member counts (one is out at
    /// a time).
    Round(Round),
}
