//! Counting billable requests, in one place per bucket.
//!
//! DynamoDB on-demand bills *request units*, not requests: a strongly consistent read of an
//! item costs one read unit per started 4 KiB of the item (a missing item costs one), a write
//! one write unit per started 1 KiB of the item written (a failed condition still costs the
//! write). S3 bills per request: GET, PUT, LIST; DELETE is free but counted anyway. The units
//! are computed here from the item sizes this crate sends and receives (DynamoDB's own
//! `ConsumedCapacity` is not trusted because moto reports fixed numbers). DynamoDB bills a
//! write by the larger of the old and the new item, and a delete by the item it removes; the
//! old sizes come from [`ItemSizes`], which remembers the size of every item this process read
//! or wrote. An item last written by another process and not read here since is billed by
//! its new size alone (a delete: one unit), so such writes may be undercounted.
//!
//! SQS bills every started 64 KiB of a call's payload as one request (a batch call of up to
//! 10 messages is one call). Lambda bills invocations and duration × memory (GB-s).

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Items remembered by [`ItemSizes`] before it starts afresh (about 100 bytes each).
const SIZES_KEPT: usize = 100_000;

/// The last known size of each item of one table, by key (`None`: known to be absent).
#[derive(Debug, Default)]
pub(crate) struct ItemSizes(Mutex<std::collections::HashMap<String, usize>>);

impl ItemSizes {
    /// `key` was read or written with `size` bytes, or found absent or deleted (`None`).
    pub(crate) fn seen(&self, key: &str, size: Option<usize>) {
        let Ok(mut m) = self.0.lock() else { return };
        match size {
            Some(n) => {
                if m.len() >= SIZES_KEPT {
                    m.clear();
                }
                m.insert(key.to_string(), n);
            }
            None => {
                m.remove(key);
            }
        }
    }

    /// The size a write of `new` bytes to `key` is billed by: the larger of old and new.
    pub(crate) fn billed(&self, key: &str, new: usize) -> usize {
        let old = self.0.lock().ok().and_then(|m| m.get(key).copied());
        old.unwrap_or(0).max(new)
    }
}

/// Live counters of one bucket; cheap to update from many tasks at once.
#[derive(Debug, Default)]
pub struct Meter {
    dynamo_requests: AtomicU64,
    dynamo_read_units: AtomicU64,
    dynamo_write_units: AtomicU64,
    s3_get: AtomicU64,
    s3_put: AtomicU64,
    s3_list: AtomicU64,
    s3_delete: AtomicU64,
    sqs_requests: AtomicU64,
    sqs_billed: AtomicU64,
    lambda_invocations: AtomicU64,
    lambda_mb_ms: AtomicU64,
}

/// A copy of a [`Meter`]'s counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// DynamoDB API calls (any operation, retries of unprocessed batch items included).
    pub dynamo_requests: u64,
    /// DynamoDB read request units (strongly consistent: 1 per started 4 KiB per item).
    pub dynamo_read_units: u64,
    /// DynamoDB write request units (1 per started 1 KiB per item written).
    pub dynamo_write_units: u64,
    /// S3 GET requests.
    pub s3_get: u64,
    /// S3 PUT requests.
    pub s3_put: u64,
    /// S3 LIST requests.
    pub s3_list: u64,
    /// S3 DELETE requests (single or multi-object; free on S3).
    pub s3_delete: u64,
    /// SQS API calls (send, receive, delete, queue management).
    pub sqs_requests: u64,
    /// SQS requests as billed: every started 64 KiB of a call's payload is one request (a
    /// batch of up to 10 messages is one call).
    pub sqs_billed: u64,
    /// Lambda invocations.
    pub lambda_invocations: u64,
    /// Lambda duration × configured memory, in MB-milliseconds (GB-s = this / 1024 / 1000).
    pub lambda_mb_ms: u64,
}

impl Usage {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            dynamo_requests: self.dynamo_requests - earlier.dynamo_requests,
            dynamo_read_units: self.dynamo_read_units - earlier.dynamo_read_units,
            dynamo_write_units: self.dynamo_write_units - earlier.dynamo_write_units,
            s3_get: self.s3_get - earlier.s3_get,
            s3_put: self.s3_put - earlier.s3_put,
            s3_list: self.s3_list - earlier.s3_list,
            s3_delete: self.s3_delete - earlier.s3_delete,
            sqs_requests: self.sqs_requests - earlier.sqs_requests,
            sqs_billed: self.sqs_billed - earlier.sqs_billed,
            lambda_invocations: self.lambda_invocations - earlier.lambda_invocations,
            lambda_mb_ms: self.lambda_mb_ms - earlier.lambda_mb_ms,
        }
    }

    /// The sum of two usages.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            dynamo_requests: self.dynamo_requests + other.dynamo_requests,
            dynamo_read_units: self.dynamo_read_units + other.dynamo_read_units,
            dynamo_write_units: self.dynamo_write_units + other.dynamo_write_units,
            s3_get: self.s3_get + other.s3_get,
            s3_put: self.s3_put + other.s3_put,
            s3_list: self.s3_list + other.s3_list,
            s3_delete: self.s3_delete + other.s3_delete,
            sqs_requests: self.sqs_requests + other.sqs_requests,
            sqs_billed: self.sqs_billed + other.sqs_billed,
            lambda_invocations: self.lambda_invocations + other.lambda_invocations,
            lambda_mb_ms: self.lambda_mb_ms + other.lambda_mb_ms,
        }
    }
}

impl Meter {
    /// The counters now.
    pub fn snapshot(&self) -> Usage {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Usage {
            dynamo_requests: r(&self.dynamo_requests),
            dynamo_read_units: r(&self.dynamo_read_units),
            dynamo_write_units: r(&self.dynamo_write_units),
            s3_get: r(&self.s3_get),
            s3_put: r(&self.s3_put),
            s3_list: r(&self.s3_list),
            s3_delete: r(&self.s3_delete),
            sqs_requests: r(&self.sqs_requests),
            sqs_billed: r(&self.sqs_billed),
            lambda_invocations: r(&self.lambda_invocations),
            lambda_mb_ms: r(&self.lambda_mb_ms),
        }
    }

    pub(crate) fn dynamo_request(&self) {
        self.dynamo_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A strongly consistent read of an item of `size` bytes (`None`: not found).
    pub(crate) fn read_item(&self, size: Option<usize>) {
        let units = size.map_or(1, |s| s.div_ceil(4096).max(1));
        self.dynamo_read_units
            .fetch_add(units as u64, Ordering::Relaxed);
    }

    /// A write (put, update, delete; failed conditions included) of an item of `size` bytes.
    pub(crate) fn write_item(&self, size: usize) {
        let units = size.div_ceil(1024).max(1);
        self.dynamo_write_units
            .fetch_add(units as u64, Ordering::Relaxed);
    }

    pub(crate) fn s3_get(&self) {
        self.s3_get.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn s3_put(&self) {
        self.s3_put.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn s3_list(&self) {
        self.s3_list.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn s3_delete(&self) {
        self.s3_delete.fetch_add(1, Ordering::Relaxed);
    }

    /// One SQS call carrying `payload` bytes of message bodies (sent or received).
    pub(crate) fn sqs_request(&self, payload: usize) {
        self.sqs_requests.fetch_add(1, Ordering::Relaxed);
        let chunks = payload.div_ceil(64 * 1024).max(1);
        self.sqs_billed.fetch_add(chunks as u64, Ordering::Relaxed);
    }

    /// One Lambda invocation that ran `millis` with `memory_mb` configured (billed per
    /// started millisecond).
    pub fn lambda_invocation(&self, memory_mb: u64, millis: u64) {
        self.lambda_invocations.fetch_add(1, Ordering::Relaxed);
        self.lambda_mb_ms
            .fetch_add(memory_mb * millis.max(1), Ordering::Relaxed);
    }
}

/// DynamoDB's size of an item: attribute names plus values (strings and binaries by length,
/// numbers by about one byte per two digits plus one).
pub(crate) fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter()
        .map(|(name, v)| name.len() + value_size(v))
        .sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_up_per_item() {
        let m = Meter::default();
        m.read_item(None);
        m.read_item(Some(1));
        m.read_item(Some(4096));
        m.read_item(Some(4097));
        m.write_item(0);
        m.write_item(1024);
        m.write_item(1025);
        let u = m.snapshot();
        assert_eq!(u.dynamo_read_units, 1 + 1 + 1 + 2);
        assert_eq!(u.dynamo_write_units, 1 + 1 + 2);
        assert_eq!(u.since(&u), Usage::default());
        m.sqs_request(0);
        m.sqs_request(64 * 1024);
        m.sqs_request(64 * 1024 + 1);
        m.sqs_request(256 * 1024);
        m.lambda_invocation(512, 0);
        m.lambda_invocation(512, 1500);
        let u = m.snapshot();
        assert_eq!((u.sqs_requests, u.sqs_billed), (4, 1 + 1 + 2 + 4));
        assert_eq!(
            (u.lambda_invocations, u.lambda_mb_ms),
            (2, 512 + 512 * 1500)
        );
    }
}
