//! The `user` bucket on S3: one object per key, named `node` + key, so the node at `/a/b` is
//! the object `node/a/b` (the root: `node/`) and a client reads it with one GET, no function
//! on the read path. S3 is strongly consistent for reads after writes and for listings.
//!
//! Compare-and-swap uses S3's conditional writes: `If-None-Match: *` creates only if absent;
//! otherwise the object is read, compared byte for byte with the expected value, and replaced
//! with `If-Match: <the ETag read>`, which fails if anything wrote the object in between.
//! `increment` is the same read-modify-swap loop on an 8-byte object.

use crate::meter::Meter;
use crate::unavailable;
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use faaskeeper_storage::{Store, StoreError, decode_counter};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Prefix of every node object.
pub const OBJECT_PREFIX: &str = "node";

/// Requests in flight at once for `get_many` and `set_many`.
const PARALLEL: usize = 16;
/// Most keys in one `DeleteObjects`.
const DELETE_MAX: usize = 1000;

/// The `user` bucket: one S3 object per key.
#[derive(Clone)]
pub struct S3UserStore {
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) meter: Arc<Meter>,
}

enum Precondition {
    None,
    Absent,
    Etag(String),
}

/// A conditional write lost: 412 (the condition is false), 409 (a concurrent conditional
/// write to the same key), 404 (`If-Match` on an object deleted meanwhile).
fn lost_condition<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(
        e.as_service_error().and_then(|s| s.code()),
        Some("PreconditionFailed" | "ConditionalRequestConflict" | "NoSuchKey")
    )
}

impl S3UserStore {
    fn object(key: &str) -> String {
        format!("{OBJECT_PREFIX}{key}")
    }

    /// The value and ETag of `key`.
    async fn fetch(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        self.meter.s3_get();
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(Self::object(key))
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag.clone().unwrap_or_default();
                let body = out.body.collect().await.map_err(unavailable)?;
                Ok(Some((body.into_bytes().to_vec(), etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// PUT `value`; `Ok(false)` if the precondition did not hold.
    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<bool, StoreError> {
        self.meter.s3_put();
        let mut req = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(Self::object(key))
            .body(value.into());
        match pre {
            Precondition::None => {}
            Precondition::Absent => req = req.if_none_match("*"),
            Precondition::Etag(etag) => req = req.if_match(etag),
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if lost_condition(&e) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Run `f` on every item, [`PARALLEL`] at a time, keeping the order of the results.
    async fn parallel<T, R, F, Fut>(&self, items: Vec<T>, f: F) -> Result<Vec<R>, StoreError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(S3UserStore, T) -> Fut,
        Fut: std::future::Future<Output = Result<R, StoreError>> + Send + 'static,
    {
        let mut out = Vec::with_capacity(items.len());
        let mut items = items.into_iter();
        loop {
            let mut set = tokio::task::JoinSet::new();
            for (i, item) in items.by_ref().take(PARALLEL).enumerate() {
                let fut = f(self.clone(), item);
                set.spawn(async move { (i, fut.await) });
            }
            if set.is_empty() {
                return Ok(out);
            }
            let mut batch: Vec<Option<R>> = (0..set.len()).map(|_| None).collect();
            while let Some(done) = set.join_next().await {
                let (i, r) = done.map_err(unavailable)?;
                batch[i] = Some(r?);
            }
            out.extend(batch.into_iter().flatten());
        }
    }
}

#[async_trait]
impl Store for S3UserStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.fetch(key).await?.map(|(v, _)| v))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.parallel(keys.to_vec(), |s, k| async move { s.get(&k).await })
            .await
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.put(key, value, Precondition::None).await.map(|_| ())
    }

    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        // Parallel PUTs of one key would race: the last value of a key wins, as in a loop.
        let last: BTreeMap<String, Vec<u8>> = items.into_iter().collect();
        self.parallel(last.into_iter().collect(), |s, (k, v)| async move {
            s.set(&k, v).await
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.meter.s3_delete();
        self.s3
            .delete_object()
            .bucket(&self.bucket)
            .key(Self::object(key))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let mut keys = keys;
        keys.sort();
        keys.dedup();
        for chunk in keys.chunks(DELETE_MAX) {
            let objects = chunk
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(Self::object(k))
                        .build()
                        .map_err(unavailable)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(unavailable)?;
            self.meter.s3_delete();
            let out = self
                .s3
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(unavailable)?;
            if let Some(e) = out.errors().first() {
                return Err(StoreError::Unavailable(format!(
                    "deleting {:?}: {:?} {:?}",
                    e.key(),
                    e.code(),
                    e.message()
                )));
            }
        }
        Ok(())
    }

    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        self.meter.s3_list();
        // S3 lists in byte order, and a common prefix keeps that order for the keys.
        let out = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(OBJECT_PREFIX)
            .set_start_after(cursor.map(|c| Self::object(&c)))
            .max_keys(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(unavailable)?;
        let keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| k.strip_prefix(OBJECT_PREFIX))
            .map(str::to_string)
            .collect();
        let next = if out.is_truncated() == Some(true) {
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        loop {
            let (next, pre) = match self.fetch(key).await? {
                None => (delta, Precondition::Absent),
                Some((v, etag)) => (
                    decode_counter(&v)?.wrapping_add(delta),
                    Precondition::Etag(etag),
                ),
            };
            if self.put(key, next.to_le_bytes().to_vec(), pre).await? {
                return Ok(next);
            }
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError> {
        let pre = match expected {
            None => Precondition::Absent,
            Some(e) => match self.fetch(key).await? {
                Some((cur, etag)) if cur == e => Precondition::Etag(etag),
                _ => return Err(StoreError::CasConflict),
            },
        };
        if self.put(key, new, pre).await? {
            Ok(())
        } else {
            Err(StoreError::CasConflict)
        }
    }

    fn bills_writes(&self) -> bool {
        true
    }

    fn summary(&self) -> String {
        format!(
            "S3 bucket {}, one object per key under {OBJECT_PREFIX}",
            self.bucket
        )
    }
}
