//! `wasi:keyvalue/batch`. Each key is atomic; a batch is not promised to be (the embedded
//! backend happens to commit it in one transaction).

use super::bindings::batch;
use super::bindings::store::Error;
use super::{BucketHandle, KvCtxView, to_wit_error};
use wasmtime::component::Resource;

impl batch::Host for KvCtxView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .get_many(&keys)
            .await
            .map(|values| keys.into_iter().zip(values).collect())
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .set_many(key_values)
            .await
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (name, s) = self.bucket(&bucket)?;
        let r = s
            .delete_many(keys)
            .await
            .map_err(|e| to_wit_error(&name, e));
        self.step()?;
        Ok(r)
    }
}
