//! The bundled host's implementation of `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch)
//! over [`faaskeeper_storage::StoreManager`].
//!
//! wasmtime's own `wasmtime-wasi-keyvalue` pins another draft (no CAS, private data per
//! `open`), so this module implements the draft Spin links, in wasmtime's ctx/view shape:
//! [`KvCtx`] is configuration kept in the store data, [`KvCtxView`] borrows it with the
//! resource table, every generated `Host` trait is implemented on the view, and the embedder's
//! `T` implements [`KvView`]. One file per interface: `store.rs`, `atomics.rs`, `batch.rs`.
//!
//! Storage errors reach the guest through [`to_wit_error`], the single place where a
//! [`faaskeeper_storage::StoreError`] becomes the WIT `error`.

mod atomics;
mod batch;
pub mod bindings;
mod store;

use crate::faults::InvocationFaults;
use faaskeeper_storage::{Store, StoreError, StoreManager};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// The value behind a `bucket` resource.
pub struct BucketHandle {
    pub(crate) name: String,
    pub(crate) store: Arc<dyn Store>,
}

/// The value behind a `cas` resource: the key and the value read when it was made.
pub struct CasHandle {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) current: Option<Vec<u8>>,
}

/// Key-value configuration: which buckets exist and where they live.
#[derive(Clone)]
pub struct KvCtx {
    stores: StoreManager,
    faults: Option<Arc<InvocationFaults>>,
}

impl KvCtx {
    /// A context over the given buckets.
    pub fn new(stores: StoreManager) -> KvCtx {
        KvCtx {
            stores,
            faults: None,
        }
    }

    /// The same buckets, with a test's fault plan consulted after every call.
    pub fn with_faults(&self, faults: Option<Arc<InvocationFaults>>) -> KvCtx {
        KvCtx {
            stores: self.stores.clone(),
            faults,
        }
    }
}

impl KvCtxView<'_> {
    /// End of a storage step: an injected fault traps the guest here, after the call took
    /// effect ([`crate::faults`]).
    pub(crate) fn step(&self) -> wasmtime::Result<()> {
        match &self.ctx.faults {
            Some(f) => f.after_storage().map_err(wasmtime::Error::from),
            None => Ok(()),
        }
    }
}

/// A borrow of [`KvCtx`] and the resource table; the generated traits are implemented on it.
pub struct KvCtxView<'a> {
    /// The configuration.
    pub ctx: &'a KvCtx,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
}

/// Implemented by the embedder's store data to hand out a [`KvCtxView`].
pub trait KvView: Send {
    /// Borrow the key-value view.
    fn kv(&mut self) -> KvCtxView<'_>;
}

/// [`HasData`] marker feeding [`KvCtxView`] to the generated `add_to_linker`.
pub struct Kv;

impl HasData for Kv {
    type Data<'a> = KvCtxView<'a>;
}

/// Link `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`.
pub fn add_to_linker<T: KvView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    bindings::store::add_to_linker::<T, Kv>(linker, T::kv)?;
    bindings::atomics::add_to_linker::<T, Kv>(linker, T::kv)?;
    bindings::batch::add_to_linker::<T, Kv>(linker, T::kv)?;
    Ok(())
}

/// Map a storage error to what the guest sees, logging outages (the guest only gets text).
pub(crate) fn to_wit_error(bucket: &str, e: StoreError) -> bindings::store::Error {
    match e {
        StoreError::NoSuchStore(name) => {
            tracing::debug!(bucket = name, "guest opened an unknown bucket");
            bindings::store::Error::NoSuchStore
        }
        other => {
            tracing::warn!(bucket, error = %other, "key-value operation failed");
            bindings::store::Error::Other(other.to_string())
        }
    }
}
