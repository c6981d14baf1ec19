use crate::{Store, StoreError, decode_counter};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// An in-memory bucket with exactly the trait's semantics (not durable, by definition).
/// Unlike `wasmtime-wasi-keyvalue`'s double, every `open` of a bucket sees the same data.
#[derive(Default)]
pub struct MemStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl MemStore {
    /// An empty bucket.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>, StoreError> {
        self.map
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store poisoned".into()))
    }
}

#[async_trait]
impl Store for MemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(key).cloned())
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.lock()?.insert(key.to_string(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.remove(key);
        Ok(())
    }

    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let map = self.lock()?;
        let iter: Box<dyn Iterator<Item = &String>> = match &cursor {
            Some(c) => Box::new(
                map.range::<String, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k),
            ),
            None => Box::new(map.keys()),
        };
        let keys: Vec<String> = iter.take(limit.max(1)).cloned().collect();
        let next = if keys.len() == limit.max(1) {
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut map = self.lock()?;
        let cur = match map.get(key) {
            Some(v) => decode_counter(v)?,
            None => 0,
        };
        let new = cur.wrapping_add(delta);
        map.insert(key.to_string(), new.to_le_bytes().to_vec());
        Ok(new)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut map = self.lock()?;
        if map.get(key).map(Vec::as_slice) != expected {
            return Err(StoreError::CasConflict);
        }
        map.insert(key.to_string(), new);
        Ok(())
    }

    fn summary(&self) -> String {
        "in-memory (not durable)".to_string()
    }
}
