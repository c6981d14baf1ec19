//! `wasi:keyvalue/store`.

use super::bindings::store::{self, Error, KeyResponse};
use super::{BucketHandle, KvCtxView, to_wit_error};
use wasmtime::component::Resource;

/// Most keys returned by one `list-keys` call; guests page with the cursor.
const LIST_PAGE: usize = 1000;

impl store::Host for KvCtxView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketHandle>, Error>> {
        match self.ctx.stores.open(&identifier) {
            Ok(store) => Ok(Ok(self.table.push(BucketHandle {
                name: identifier,
                store,
            })?)),
            Err(e) => Ok(Err(to_wit_error(&identifier, e))),
        }
    }
}

impl KvCtxView<'_> {
    pub(crate) fn bucket(
        &self,
        b: &Resource<BucketHandle>,
    ) -> wasmtime::Result<(String, std::sync::Arc<dyn faaskeeper_storage::Store>)> {
        let h = self.table.get(b)?;
        Ok((h.name.clone(), h.store.clone()))
    }
}

impl store::HostBucket for KvCtxView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s.get(&key).await.map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn set(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s.set(&key, value).await.map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn delete(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s.delete(&key).await.map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn exists(
        &mut self,
        bucket: Resource<BucketHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .get(&key)
            .await
            .map(|v| v.is_some())
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<KeyResponse, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .list_keys(cursor, LIST_PAGE)
            .await
            .map(|(keys, cursor)| KeyResponse { keys, cursor })
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn drop(&mut self, bucket: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
