//! `wasi:keyvalue/atomics`: `increment` and compare-and-swap.
//!
//! A `cas` resource remembers the value read when it was created; `swap` succeeds only if the
//! key still holds exactly that value (absent included), decided atomically by the backend.
//! On a lost race the guest gets `cas-failed` with a fresh handle holding the current value.

use super::bindings::atomics::{self, CasError};
use super::bindings::store::Error;
use super::{BucketHandle, CasHandle, KvCtxView, to_wit_error};
use faaskeeper_storage::StoreError;
use wasmtime::component::Resource;

impl atomics::Host for KvCtxView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .increment(&key, delta)
            .await
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), CasError>> {
        let h = self.table.delete(cas)?;
        let swapped = h
            .store
            .compare_and_swap(&h.key, h.current.as_deref(), value)
            .await;
        self.step()?;
        match swapped {
            Ok(()) => Ok(Ok(())),
            Err(StoreError::CasConflict) => {
                let current = match h.store.get(&h.key).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(CasError::StoreError(to_wit_error(&h.bucket, e)))),
                };
                let fresh = self.table.push(CasHandle { current, ..h })?;
                Ok(Err(CasError::CasFailed(fresh)))
            }
            Err(e) => Ok(Err(CasError::StoreError(to_wit_error(&h.bucket, e)))),
        }
    }
}

impl atomics::HostCas for KvCtxView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasHandle>, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let read = s.get(&key).await;
        self.step()?;
        let current = match read {
            Ok(v) => v,
            Err(e) => return Ok(Err(to_wit_error(&name, e))),
        };
        Ok(Ok(self.table.push(CasHandle {
            store: s,
            bucket: name,
            key,
            current,
        })?))
    }

    async fn current(
        &mut self,
        cas: Resource<CasHandle>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
