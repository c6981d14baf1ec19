//! # faaskeeper-storage
//!
//! The storage capability of the bundled host: the [`Store`] trait that every backend
//! implements (embedded redb, AWS), the [`StoreManager`] that maps bucket names to stores, an
//! in-memory backend ([`MemStore`]) with the same semantics, and the [`conformance`] suite
//! every backend must pass. The trait speaks our own types, never generated WIT types.
//!
//! What the stage protocol relies on (DESIGN.md, "The platform contract"): single-key
//! operations are atomic and durable once they return; [`Store::compare_and_swap`] is exact;
//! [`Store::increment`] is atomic. A batch (`set_many`, `delete_many`) is *not* promised to be
//! atomic as a whole, because not every platform's store makes it so.
//!
//! ## Example
//!
//! ```
//! use faaskeeper_storage::{MemStore, Store};
//! # tokio_test_block_on(async {
//! let s = MemStore::new();
//! s.set("k", b"v".to_vec()).await.unwrap();
//! assert_eq!(s.get("k").await.unwrap(), Some(b"v".to_vec()));
//! assert!(s.compare_and_swap("k", Some(b"old"), b"new".to_vec()).await.is_err());
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
#![deny(missing_docs)]

pub mod conformance;
mod mem;

pub use mem::MemStore;

use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Errors a store reports. The protocol must tell a lost race from an outage, so the two are
/// separate variants and never flattened into strings before the WIT boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A compare-and-swap found a value other than the expected one. Retry after re-reading.
    #[error("compare-and-swap conflict")]
    CasConflict,
    /// No bucket of that name is configured.
    #[error("no such store: {0}")]
    NoSuchStore(String),
    /// A stored value is not what the operation expects (e.g. a counter that is not 8 bytes).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The backend failed or cannot be reached; nothing is known to have been written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// One bucket of key/value pairs.
///
/// Every method is atomic for the one key it names and, once it returns `Ok`, durable (on the
/// embedded backend: fsynced). Keys are UTF-8 strings; values are bytes.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value of `key`, if any. Sees every write that returned before the call.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Values of several keys, in the order asked. Each value is read atomically; the set of
    /// values need not be one snapshot.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(k).await?);
        }
        Ok(out)
    }

    /// Set `key` to `value`. Idempotent.
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError>;

    /// Set several keys. Each key is atomic; the batch as a whole is not promised to be.
    /// On `Err`, any subset may have been written. Idempotent.
    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        for (k, v) in items {
            self.set(&k, v).await?;
        }
        Ok(())
    }

    /// Delete `key`; deleting an absent key succeeds. Idempotent.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Delete several keys; like [`Store::set_many`], not atomic as a whole. Idempotent.
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        for k in keys {
            self.delete(&k).await?;
        }
        Ok(())
    }

    /// Up to `limit` keys in ascending order, strictly after `cursor`; the returned cursor is
    /// `Some` when more keys may follow.
    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError>;

    /// Atomically add `delta` to the counter at `key` (absent counts as 0) and return the new
    /// value. Counters are stored as 8 bytes, little-endian two's complement; a value of
    /// another size is `InvalidValue`. Overflow wraps, as in two's-complement arithmetic.
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;

    /// Atomically replace the value of `key` with `new` if it currently equals `expected`
    /// (`None`: the key is absent); otherwise `Err(CasConflict)` and nothing changes.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError>;

    /// A one-line human description for logs (`faaskeeper serve` prints it).
    fn summary(&self) -> String;

    /// The size by which the backend bills a write, if it bills by size (DynamoDB: a write
    /// unit per KiB). Stages pack records into fewer units only where this is set: elsewhere
    /// the packing would cost time and save nothing.
    fn write_unit(&self) -> Option<usize> {
        None
    }

    /// Whether the backend bills every write (S3 per PUT; DynamoDB per write unit, so every
    /// backend with a [`write_unit`](Store::write_unit)). Where the user bucket does, the
    /// distributor keeps each node once, as its user object: a second copy in the system
    /// bucket would be billed for every change of the node.
    fn bills_writes(&self) -> bool {
        self.write_unit().is_some()
    }
}

/// Maps bucket names to stores: the delegating router of the host.
#[derive(Clone, Default)]
pub struct StoreManager {
    buckets: BTreeMap<String, Arc<dyn Store>>,
}

impl std::fmt::Debug for StoreManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.summary()).finish()
    }
}

impl StoreManager {
    /// An empty manager.
    pub fn new() -> StoreManager {
        StoreManager::default()
    }

    /// Route bucket `name` to `store`.
    pub fn with_bucket(mut self, name: &str, store: Arc<dyn Store>) -> StoreManager {
        self.buckets.insert(name.to_string(), store);
        self
    }

    /// Open a bucket by name.
    pub fn open(&self, name: &str) -> Result<Arc<dyn Store>, StoreError> {
        self.buckets
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::NoSuchStore(name.to_string()))
    }

    /// Whether a bucket of that name is configured.
    pub fn is_defined(&self, name: &str) -> bool {
        self.buckets.contains_key(name)
    }

    /// One line per bucket.
    pub fn summary(&self) -> Vec<String> {
        self.buckets
            .iter()
            .map(|(name, s)| format!("bucket {name}: {}", s.summary()))
            .collect()
    }
}

/// Decode a stored counter.
pub fn decode_counter(bytes: &[u8]) -> Result<i64, StoreError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::InvalidValue(format!("counter of {} bytes", bytes.len())))?;
    Ok(i64::from_le_bytes(arr))
}
