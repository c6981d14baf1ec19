//! Coordination recipes on top of the client, in the shape of ZooKeeper's classic recipes:
//! a fair [`Lock`] from ephemeral sequential nodes, [`LeaderElection`] (the lock's first
//! contender leads), a [`Barrier`] that holds until a node is removed, and a FIFO
//! [`Queue`] of persistent sequential nodes.

mod barrier;
mod lock;
mod queue;

pub use barrier::Barrier;
pub use lock::{LeaderElection, Lock, LockGuard};
pub use queue::Queue;

use crate::{Client, Error};
use faaskeeper_core::{CreateMode, ZkError};

/// Create `path` and its missing ancestors as persistent nodes (an existing node is fine).
pub async fn ensure_path(client: &Client, path: &str) -> Result<(), Error> {
    let mut prefix = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        prefix.push('/');
        prefix.push_str(part);
        match client.create(&prefix, b"", CreateMode::Persistent).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(ZkError::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The 10-digit sequence suffix ZooKeeper appends to sequential names.
pub(crate) fn sequence_of(name: &str) -> Option<i64> {
    let digits = name.get(name.len().checked_sub(10)?..)?;
    digits.parse().ok()
}
