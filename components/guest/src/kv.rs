//! Typed access to the `wasi:keyvalue@0.2.0-draft2` buckets.
//!
//! The protocol relies only on what every supported backend does correctly (DESIGN.md): get,
//! set, delete, atomic increment, and compare-and-swap on keys that already exist.

use crate::bindings::wasi::keyvalue::{atomics, batch, store};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors from a bucket: the store's own, or a value that is not what we stored.
#[derive(Debug)]
pub enum KvError {
    /// The store failed (unavailable, denied, ...).
    Store(String),
    /// A value could not be decoded.
    Corrupt(String),
    /// A compare-and-swap lost against a concurrent writer.
    CasConflict,
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::Store(e) => write!(f, "store error: {e}"),
            KvError::Corrupt(e) => write!(f, "corrupt value: {e}"),
            KvError::CasConflict => write!(f, "compare-and-swap conflict"),
        }
    }
}

fn store_err(e: store::Error) -> KvError {
    KvError::Store(match e {
        store::Error::NoSuchStore => "no such store".to_string(),
        store::Error::AccessDenied => "access denied".to_string(),
        store::Error::Other(s) => s,
    })
}

/// A key and its value, if any.
pub type KeyValue = (String, Option<Vec<u8>>);

/// An open bucket.
pub struct Bucket {
    inner: store::Bucket,
}

impl Bucket {
    /// Open a bucket by name (`system` or `user`).
    pub fn open(name: &str) -> Result<Bucket, KvError> {
        Ok(Bucket {
            inner: store::open(name).map_err(store_err)?,
        })
    }

    /// Raw get.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(key).map_err(store_err)
    }

    /// Raw set.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.inner.set(key, value).map_err(store_err)
    }

    /// Delete (absent keys are fine).
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key).map_err(store_err)
    }

    /// Get and decode JSON.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        self.get(key)?.map(|v| decode_json(key, &v)).transpose()
    }

    /// Encode JSON and set.
    pub fn set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let v = serde_json::to_vec(value).map_err(|e| KvError::Corrupt(e.to_string()))?;
        self.set(key, &v)
    }

    /// Many gets in one call.
    pub fn get_many(&self, keys: Vec<String>) -> Result<Vec<KeyValue>, KvError> {
        batch::get_many(&self.inner, &keys).map_err(store_err)
    }

    /// Many sets in one call (not atomic as a whole: each key is).
    pub fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        if items.is_empty() {
            return Ok(());
        }
        batch::set_many(&self.inner, &items).map_err(store_err)
    }

    /// Many deletes in one call (not atomic as a whole).
    pub fn delete_many(&self, keys: Vec<String>) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::delete_many(&self.inner, &keys).map_err(store_err)
    }

    /// Read `key` for a compare-and-swap; the key must already exist.
    pub fn cas<T: DeserializeOwned>(&self, key: &str) -> Result<(Cas, T), KvError> {
        let handle = atomics::Cas::new(&self.inner, key).map_err(store_err)?;
        let current = handle.current().map_err(store_err)?.ok_or_else(|| {
            KvError::Corrupt(format!("{key} missing; was the store initialised?"))
        })?;
        let value = serde_json::from_slice(&current)
            .map_err(|e| KvError::Corrupt(format!("{key}: {e}")))?;
        Ok((Cas { handle }, value))
    }

    /// Atomically add `delta` and return the new value.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.inner, key, delta).map_err(store_err)
    }
}

/// A pending compare-and-swap.
pub struct Cas {
    handle: atomics::Cas,
}

impl Cas {
    /// Swap in `value` if the key still holds what was read.
    pub fn swap<T: Serialize>(self, value: &T) -> Result<(), KvError> {
        let v = serde_json::to_vec(value).map_err(|e| KvError::Corrupt(e.to_string()))?;
        atomics::swap(self.handle, &v).map_err(|e| match e {
            atomics::CasError::CasFailed(_) => KvError::CasConflict,
            atomics::CasError::StoreError(e) => store_err(e),
        })
    }
}

/// Decode the JSON stored under `key` (from `get_json`, or from a `get_many`).
pub fn decode_json<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, KvError> {
    serde_json::from_slice(bytes).map_err(|e| KvError::Corrupt(format!("{key}: {e}")))
}
