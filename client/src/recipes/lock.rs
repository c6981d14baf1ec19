use super::{ensure_path, sequence_of};
use crate::{Client, Error};
use faaskeeper_core::{CreateMode, ZkError};

/// A fair, exclusive lock: each contender creates an ephemeral sequential node under the
/// lock path and waits for the node just before its own to go (no herd effect). The holder's
/// node is deleted on release, or by the service when its session ends.
pub struct Lock<'a> {
    client: &'a Client,
    dir: String,
}

/// Held lock; release with [`LockGuard::release`] (or end the session).
pub struct LockGuard<'a> {
    client: &'a Client,
    node: String,
}

impl<'a> Lock<'a> {
    /// A lock under `dir` (created if missing).
    pub fn new(client: &'a Client, dir: &str) -> Lock<'a> {
        Lock {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Wait until this session holds the lock.
    pub async fn acquire(&self) -> Result<LockGuard<'a>, Error> {
        ensure_path(self.client, &self.dir).await?;
        let node = self
            .client
            .create(
                &format!("{}/lock-", self.dir),
                b"",
                CreateMode::EphemeralSequential,
            )
            .await?;
        let mine = node.rsplit('/').next().unwrap_or_default().to_string();
        loop {
            let mut contenders = self.client.get_children(&self.dir).await?;
            contenders.retain(|c| sequence_of(c).is_some());
            contenders.sort_by_key(|c| sequence_of(c));
            let Some(pos) = contenders.iter().position(|c| *c == mine) else {
                return Err(Error::Zk {
                    code: ZkError::NoNode,
                    message: format!("lock node {node} vanished (session expired?)"),
                });
            };
            if pos == 0 {
                return Ok(LockGuard {
                    client: self.client,
                    node,
                });
            }
            let before = format!("{}/{}", self.dir, contenders[pos - 1]);
            match self.client.exists_w(&before).await? {
                (None, _) => continue, // gone between listing and watching
                (Some(_), watch) => {
                    watch.wait().await?;
                }
            }
        }
    }
}

impl LockGuard<'_> {
    /// Release the lock.
    pub async fn release(self) -> Result<(), Error> {
        match self.client.delete(&self.node, -1).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ZkError::NoNode) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Leader election: contenders queue like lock waiters; the first one leads until it
/// resigns or its session ends, then the next one is elected.
pub struct LeaderElection<'a> {
    lock: Lock<'a>,
}

impl<'a> LeaderElection<'a> {
    /// An election under `dir`.
    pub fn new(client: &'a Client, dir: &str) -> LeaderElection<'a> {
        LeaderElection {
            lock: Lock::new(client, dir),
        }
    }

    /// Wait until elected; drop leadership with [`LockGuard::release`].
    pub async fn lead(&self) -> Result<LockGuard<'a>, Error> {
        self.lock.acquire().await
    }
}
