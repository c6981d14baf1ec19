//! The `system` bucket on DynamoDB.
//!
//! One table, partition key `k` (string) = the store key. An item holds its value in one of
//! three shapes, decided by the operation that wrote it:
//!
//! - `v` (binary): the value, written by `set`, `set_many` and `compare_and_swap`;
//! - `n` (number): a counter created by `increment`, which is one `UpdateItem ADD` (atomic in
//!   DynamoDB, one write unit). `get` returns it as the 8 bytes little-endian the trait
//!   demands, and a swap that expects those 8 bytes matches it;
//! - `r` (string) + `h` (binary): a value over [`INLINE_MAX`] bytes, which does not fit in a
//!   DynamoDB item (400 KB). The bytes go to the S3 object `r` (`blob/<key>/<unique id>`) first,
//!   then the item, whose `h` is the value's sha256. Each object belongs to exactly one item
//!   version: whoever replaces or deletes that version gets the old item back and deletes its
//!   object. Batch writes cannot return old items, so a value spilled to S3 and then replaced by
//!   `set_many` or removed by `delete_many` leaves its object behind (garbage; `docs/aws.md`).
//!
//! Reads are strongly consistent everywhere (`ConsistentRead`), so a read sees every write
//! that returned before it. Compare-and-swap is one conditional `PutItem`.

use crate::meter::{ItemSizes, Meter, item_size};
use crate::{backoff, unavailable};
use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, ReturnValue, WriteRequest,
};
use faaskeeper_storage::{Store, StoreError, decode_counter};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const KEY: &str = "k";
const VALUE: &str = "v";
const COUNTER: &str = "n";
const BLOB: &str = "r";
const HASH: &str = "h";

/// Largest value kept inside the item; larger values go to S3. DynamoDB's item limit is
/// 400 KB including attribute names and the key; this leaves room for keys up to 2 KiB.
pub const INLINE_MAX: usize = 380 * 1024;

/// Most keys in one `BatchGetItem`.
const BATCH_GET_MAX: usize = 100;
/// Most requests in one `BatchWriteItem`.
const BATCH_WRITE_MAX: usize = 25;

type Item = HashMap<String, AttributeValue>;

/// The `system` bucket: one DynamoDB table (see the module docs for the item layout).
pub struct DynamoSystemStore {
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) table: String,
    /// Where values over [`INLINE_MAX`] live, under `blob/`.
    pub(crate) bucket: String,
    pub(crate) meter: Arc<Meter>,
    /// Values larger than this go to S3 ([`INLINE_MAX`] for the system bucket; less for a
    /// table of user nodes, where an S3 PUT is cheaper than the write units of a large item).
    pub(crate) inline_max: usize,
    /// Sizes of the items seen, for billing writes as DynamoDB does.
    pub(crate) sizes: ItemSizes,
}

enum Stored {
    Inline(Vec<u8>),
    Counter(i64),
    Spilled(String),
}

/// What a conditional write did.
enum Written {
    /// Applied; the old item if it was asked for and existed.
    Done(Option<Item>),
    /// The condition did not hold; nothing changed.
    ConditionFailed,
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}

/// A DynamoDB number as the trait's counter: wraps like two's complement, since `ADD` does not.
fn parse_counter(n: &str) -> Result<i64, StoreError> {
    n.parse::<i128>()
        .map(|x| x as i64)
        .map_err(|_| StoreError::InvalidValue(format!("counter {n:?}")))
}

fn decode(item: &Item) -> Result<Stored, StoreError> {
    if let Some(AttributeValue::B(v)) = item.get(VALUE) {
        return Ok(Stored::Inline(v.as_ref().to_vec()));
    }
    if let Some(AttributeValue::N(n)) = item.get(COUNTER) {
        return Ok(Stored::Counter(parse_counter(n)?));
    }
    if let Some(AttributeValue::S(r)) = item.get(BLOB) {
        return Ok(Stored::Spilled(r.clone()));
    }
    Err(StoreError::InvalidValue("item without a value".into()))
}

fn key_of(item: &Item) -> Option<&str> {
    match item.get(KEY) {
        Some(AttributeValue::S(k)) => Some(k),
        _ => None,
    }
}

fn blob_of(item: &Item) -> Option<&str> {
    match item.get(BLOB) {
        Some(AttributeValue::S(r)) => Some(r),
        _ => None,
    }
}

fn inline_item(key: &str, value: &[u8]) -> Item {
    HashMap::from([(KEY.to_string(), s(key)), (VALUE.to_string(), b(value))])
}

fn is_condition_failure<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// A name no other writer will pick: time, process and a process-wide counter.
fn unique_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl DynamoSystemStore {
    async fn get_item(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.meter.dynamo_request();
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let size = out.item.as_ref().map(item_size);
        tracing::trace!(target: "faaskeeper::billing", table = %self.table, op = "get", key, size);
        self.meter.read_item(size);
        self.sizes.seen(key, size);
        Ok(out.item)
    }

    /// `PutItem`, optionally under `condition`, optionally returning the old item.
    async fn put(
        &self,
        item: Item,
        condition: Option<(&str, Item)>,
        return_old: bool,
    ) -> Result<Written, StoreError> {
        self.meter.dynamo_request();
        let key = key_of(&item).unwrap_or_default().to_string();
        let size = item_size(&item);
        let billed = self.sizes.billed(&key, size);
        tracing::trace!(target: "faaskeeper::billing", table = %self.table, op = "put", key, billed);
        self.meter.write_item(billed);
        let mut req = self
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        if let Some((expr, values)) = condition {
            req = req.condition_expression(expr);
            if !values.is_empty() {
                req = req.set_expression_attribute_values(Some(values));
            }
        }
        if return_old {
            req = req.return_values(ReturnValue::AllOld);
        }
        match req.send().await {
            Ok(out) => {
                self.sizes.seen(&key, Some(size));
                Ok(Written::Done(out.attributes))
            }
            Err(e) if is_condition_failure(&e) => Ok(Written::ConditionFailed),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The item for `value`: inline, or spilled to a new S3 object (returned for clean-up).
    async fn item_for(
        &self,
        key: &str,
        value: &[u8],
    ) -> Result<(Item, Option<String>), StoreError> {
        if value.len() <= self.inline_max {
            return Ok((inline_item(key, value), None));
        }
        let blob = format!("blob/{key}/{}", unique_id());
        self.meter.s3_put();
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&blob)
            .body(value.to_vec().into())
            .send()
            .await
            .map_err(unavailable)?;
        let item = HashMap::from([
            (KEY.to_string(), s(key)),
            (BLOB.to_string(), s(&blob)),
            (HASH.to_string(), b(&sha2::Sha256::digest(value))),
        ]);
        Ok((item, Some(blob)))
    }

    async fn get_blob(&self, blob: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.meter.s3_get();
        match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(blob)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.body
                    .collect()
                    .await
                    .map_err(unavailable)?
                    .into_bytes()
                    .to_vec(),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Delete a spilled value's object. Best effort: a leftover object is only garbage.
    async fn delete_blob(&self, blob: &str) {
        self.meter.s3_delete();
        if let Err(e) = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(blob)
            .send()
            .await
        {
            tracing::warn!(
                "leaving S3 object {blob}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            );
        }
    }

    async fn drop_old(&self, old: Option<Item>) {
        if let Some(blob) = old.as_ref().and_then(blob_of) {
            self.delete_blob(blob).await;
        }
    }

    /// Replace `key` with `item` unconditionally, deleting the object of a spilled old value.
    /// The first try is conditional on the old value not being spilled, so the common case
    /// does not ship the old value back.
    async fn replace(&self, item: Item) -> Result<(), StoreError> {
        let not_spilled = format!("attribute_not_exists({BLOB})");
        match self
            .put(item.clone(), Some((&not_spilled, Item::new())), false)
            .await?
        {
            Written::Done(_) => Ok(()),
            Written::ConditionFailed => match self.put(item, None, true).await? {
                Written::Done(old) => {
                    self.drop_old(old).await;
                    Ok(())
                }
                Written::ConditionFailed => {
                    Err(StoreError::Unavailable("unconditional put refused".into()))
                }
            },
        }
    }

    async fn value_of(&self, key: &str, item: &Item) -> Result<Option<Vec<u8>>, StoreError> {
        match decode(item)? {
            Stored::Inline(v) => Ok(Some(v)),
            Stored::Counter(n) => Ok(Some(n.to_le_bytes().to_vec())),
            Stored::Spilled(blob) => match self.get_blob(&blob).await? {
                Some(v) => Ok(Some(v)),
                // Replaced (and its object deleted) since the item was read: read again.
                None => self.get(key).await,
            },
        }
    }

    async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_WRITE_MAX) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                self.meter.dynamo_request();
                for r in &pending {
                    let (key, size) = match (r.put_request(), r.delete_request()) {
                        (Some(p), _) => (key_of(p.item()), Some(item_size(p.item()))),
                        (None, Some(d)) => (key_of(d.key()), None),
                        (None, None) => (None, None),
                    };
                    let key = key.unwrap_or_default();
                    let billed = self.sizes.billed(key, size.unwrap_or(0));
                    tracing::trace!(target: "faaskeeper::billing", table = %self.table, op = "batch-write", key, billed);
                    self.meter.write_item(billed);
                    self.sizes.seen(key, size);
                }
                let out = self
                    .ddb
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(unavailable)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for DynamoSystemStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // A spilled value whose object vanishes was replaced meanwhile; a few rereads find
        // the new one. Endless replacement would be a livelock of the writers, not ours.
        for _ in 0..8 {
            let Some(item) = self.get_item(key).await? else {
                return Ok(None);
            };
            match decode(&item)? {
                Stored::Inline(v) => return Ok(Some(v)),
                Stored::Counter(n) => return Ok(Some(n.to_le_bytes().to_vec())),
                Stored::Spilled(blob) => {
                    if let Some(v) = self.get_blob(&blob).await? {
                        return Ok(Some(v));
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "{key}: value kept changing while being read"
        )))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // BatchGetItem refuses duplicate keys.
        let mut unique: Vec<&String> = keys.iter().collect();
        unique.sort();
        unique.dedup();
        let mut found: HashMap<String, Item> = HashMap::new();
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let mut pending: Vec<Item> = chunk
                .iter()
                .map(|k| HashMap::from([(KEY.to_string(), s(k))]))
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let ask = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .consistent_read(true)
                    .build()
                    .map_err(unavailable)?;
                self.meter.dynamo_request();
                let out = self
                    .ddb
                    .batch_get_item()
                    .request_items(&self.table, ask)
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let size = item_size(&item);
                    tracing::trace!(target: "faaskeeper::billing", table = %self.table, op = "batch-get", key = key_of(&item), size);
                    self.meter.read_item(Some(size));
                    if let Some(k) = key_of(&item) {
                        self.sizes.seen(k, Some(size));
                        found.insert(k.to_string(), item);
                    }
                }
                pending = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|ka| ka.keys)
                    .unwrap_or_default();
                if !pending.is_empty() {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
        for _ in found.len()..unique.len() {
            self.meter.read_item(None);
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(match found.get(k) {
                None => None,
                Some(item) => self.value_of(k, item).await?,
            });
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let (item, _) = self.item_for(key, &value).await?;
        self.replace(item).await
    }

    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        // BatchWriteItem refuses duplicate keys: the last value of a key wins, as in a loop.
        let mut last: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in items {
            last.insert(k, v);
        }
        let mut requests = Vec::new();
        for (k, v) in last {
            if v.len() > self.inline_max {
                self.set(&k, v).await?;
                continue;
            }
            let put = PutRequest::builder()
                .set_item(Some(inline_item(&k, &v)))
                .build()
                .map_err(unavailable)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        self.batch_write(requests).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let not_spilled = format!("attribute_not_exists({BLOB})");
        for return_old in [false, true] {
            self.meter.dynamo_request();
            let billed = self.sizes.billed(key, 0);
            tracing::trace!(target: "faaskeeper::billing", table = %self.table, op = "delete", key, billed);
            self.meter.write_item(billed);
            let mut req = self
                .ddb
                .delete_item()
                .table_name(&self.table)
                .key(KEY, s(key));
            if return_old {
                req = req.return_values(ReturnValue::AllOld);
            } else {
                req = req.condition_expression(&not_spilled);
            }
            match req.send().await {
                Ok(out) => {
                    self.sizes.seen(key, None);
                    self.drop_old(out.attributes).await;
                    return Ok(());
                }
                Err(e) if !return_old && is_condition_failure(&e) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let mut unique = keys;
        unique.sort();
        unique.dedup();
        let mut requests = Vec::with_capacity(unique.len());
        for k in unique {
            let del = DeleteRequest::builder()
                .key(KEY, s(&k))
                .build()
                .map_err(unavailable)?;
            requests.push(WriteRequest::builder().delete_request(del).build());
        }
        self.batch_write(requests).await
    }

    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        // A table with only a partition key has no order: scan it all and sort. Nothing in
        // the protocol lists the system bucket; this serves tools and the conformance suite.
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.meter.dynamo_request();
            let out = self
                .ddb
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .projection_expression(KEY)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(unavailable)?;
            let items = out.items.unwrap_or_default();
            let bytes: usize = items.iter().map(item_size).sum();
            self.meter.read_item(Some(bytes));
            keys.extend(items.iter().filter_map(key_of).map(str::to_string));
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.retain(|k| cursor.as_ref().is_none_or(|c| k > c));
        keys.sort();
        let limit = limit.max(1);
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next = if more { keys.last().cloned() } else { None };
        Ok((keys, next))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let plain = format!("attribute_not_exists({VALUE}) AND attribute_not_exists({BLOB})");
        loop {
            self.meter.dynamo_request();
            let res = self
                .ddb
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .update_expression(format!("ADD {COUNTER} :d"))
                .condition_expression(&plain)
                .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            match res {
                Ok(out) => {
                    let n = match out.attributes.as_ref().and_then(|a| a.get(COUNTER)) {
                        Some(AttributeValue::N(n)) => n.clone(),
                        _ => return Err(StoreError::Unavailable("ADD returned no value".into())),
                    };
                    self.meter
                        .write_item(KEY.len() + key.len() + COUNTER.len() + n.len() / 2 + 1);
                    let wide = n
                        .parse::<i128>()
                        .map_err(|_| StoreError::InvalidValue(format!("counter {n:?}")))?;
                    let wrapped = wide as i64;
                    if i128::from(wrapped) != wide {
                        // Keep the stored number in i64's range so that swaps expecting its
                        // 8 bytes still match. Losing this race only means another increment
                        // got there first, which rewrote it anyway.
                        self.meter.dynamo_request();
                        self.meter.write_item(1);
                        let _ = self
                            .ddb
                            .update_item()
                            .table_name(&self.table)
                            .key(KEY, s(key))
                            .update_expression(format!("SET {COUNTER} = :w"))
                            .condition_expression(format!("{COUNTER} = :old"))
                            .expression_attribute_values(
                                ":w",
                                AttributeValue::N(wrapped.to_string()),
                            )
                            .expression_attribute_values(":old", AttributeValue::N(n))
                            .send()
                            .await;
                    }
                    return Ok(wrapped);
                }
                Err(e) if is_condition_failure(&e) => {
                    self.meter.write_item(1);
                    // The key holds bytes (written by `set` or a swap): if they are a counter,
                    // add by read, then swap.
                    let Some(item) = self.get_item(key).await? else {
                        continue;
                    };
                    let old = match decode(&item)? {
                        Stored::Inline(v) => v,
                        Stored::Counter(_) => continue,
                        Stored::Spilled(_) => {
                            return Err(StoreError::InvalidValue(format!(
                                "counter of more than {} bytes",
                                self.inline_max
                            )));
                        }
                    };
                    let next = decode_counter(&old)?.wrapping_add(delta);
                    let cond = format!("{VALUE} = :old");
                    let values = HashMap::from([(":old".to_string(), b(&old))]);
                    match self
                        .put(
                            inline_item(key, &next.to_le_bytes()),
                            Some((&cond, values)),
                            false,
                        )
                        .await?
                    {
                        Written::Done(_) => return Ok(next),
                        Written::ConditionFailed => continue,
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut values = Item::new();
        // The size of a value decides where it lives, so the condition names one attribute.
        let cond = match expected {
            None => format!("attribute_not_exists({KEY})"),
            Some(e) if e.len() > self.inline_max => {
                values.insert(":h".into(), b(&sha2::Sha256::digest(e)));
                format!("{HASH} = :h")
            }
            Some(e) => {
                values.insert(":e".into(), b(e));
                if let Ok(n) = decode_counter(e) {
                    values.insert(":n".into(), AttributeValue::N(n.to_string()));
                    format!("{VALUE} = :e OR {COUNTER} = :n")
                } else {
                    format!("{VALUE} = :e")
                }
            }
        };
        let spilled_old = expected.is_some_and(|e| e.len() > self.inline_max);
        let (item, blob) = self.item_for(key, &new).await?;
        match self.put(item, Some((&cond, values)), spilled_old).await? {
            Written::Done(old) => {
                self.drop_old(old).await;
                Ok(())
            }
            Written::ConditionFailed => {
                if let Some(blob) = blob {
                    self.delete_blob(&blob).await;
                }
                Err(StoreError::CasConflict)
            }
        }
    }

    fn write_unit(&self) -> Option<usize> {
        Some(1024)
    }

    fn summary(&self) -> String {
        format!(
            "DynamoDB table {} (values over {} KiB in S3 bucket {}, under blob/)",
            self.table,
            self.inline_max / 1024,
            self.bucket
        )
    }
}
