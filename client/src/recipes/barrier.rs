use crate::{Client, Error};
use faaskeeper_core::{CreateMode, ZkError};

/// A barrier: while its node exists, [`Barrier::wait`] blocks; removing it lets everyone
/// through.
pub struct Barrier<'a> {
    client: &'a Client,
    path: String,
}

impl<'a> Barrier<'a> {
    /// A barrier at `path`.
    pub fn new(client: &'a Client, path: &str) -> Barrier<'a> {
        Barrier {
            client,
            path: path.to_string(),
        }
    }

    /// Raise the barrier (fine if it is already up).
    pub async fn raise(&self) -> Result<(), Error> {
        match self
            .client
            .create(&self.path, b"", CreateMode::Persistent)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ZkError::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lower the barrier, releasing every waiter.
    pub async fn lower(&self) -> Result<(), Error> {
        match self.client.delete(&self.path, -1).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ZkError::NoNode) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Block until the barrier is down.
    pub async fn wait(&self) -> Result<(), Error> {
        loop {
            match self.client.exists_w(&self.path).await? {
                (None, _) => return Ok(()),
                (Some(_), watch) => {
                    watch.wait().await?;
                }
            }
        }
    }
}
