use super::{ensure_path, sequence_of};
use crate::{Client, Error};
use faaskeeper_core::{CreateMode, ZkError};

/// A distributed FIFO queue: items are persistent sequential nodes; a consumer takes the
/// lowest one by deleting it (only one consumer's delete can succeed).
pub struct Queue<'a> {
    client: &'a Client,
    dir: String,
}

impl<'a> Queue<'a> {
    /// A queue under `dir` (created if missing).
    pub fn new(client: &'a Client, dir: &str) -> Queue<'a> {
        Queue {
            client,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Append an item.
    pub async fn put(&self, item: &[u8]) -> Result<(), Error> {
        ensure_path(self.client, &self.dir).await?;
        self.client
            .create(
                &format!("{}/item-", self.dir),
                item,
                CreateMode::PersistentSequential,
            )
            .await
            .map(|_| ())
    }

    /// Take the oldest item, or `None` if the queue is empty.
    pub async fn take(&self) -> Result<Option<Vec<u8>>, Error> {
        let mut items = match self.client.get_children(&self.dir).await {
            Ok(items) => items,
            Err(e) if e.code() == Some(ZkError::NoNode) => return Ok(None),
            Err(e) => return Err(e),
        };
        items.retain(|c| sequence_of(c).is_some());
        items.sort_by_key(|c| sequence_of(c));
        for item in items {
            let path = format!("{}/{item}", self.dir);
            let (data, stat) = match self.client.get_data(&path).await {
                Ok(x) => x,
                Err(e) if e.code() == Some(ZkError::NoNode) => continue,
                Err(e) => return Err(e),
            };
            match self.client.delete(&path, stat.version).await {
                Ok(()) => return Ok(Some(data)),
                // Another consumer took it first.
                Err(e) if e.code() == Some(ZkError::NoNode) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}
