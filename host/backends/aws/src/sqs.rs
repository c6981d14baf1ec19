//! The stage queues on SQS, and each session's delivery queue.
//!
//! Names (all under the deployment's prefix):
//!
//! | queue | kind | carries | consumed by |
//! |---|---|---|---|
//! | `<prefix>-writer.fifo` | FIFO, group = session | client write batches and pings | the writer (poller or Lambda) |
//! | `<prefix>-distributor` | standard | wake-ups (`{}`) | the distributor Lambda |
//! | `<prefix>-session-<id>.fifo` | FIFO, one group | results and watch events of one session | that session's client |
//! | `<prefix>-writer-dlq.fifo` | FIFO | writer messages that failed `maxReceiveCount` times | an operator |
//!
//! The writer queue is FIFO because a session's requests must enter the log in the order the
//! session issued them (Guarantee 2) while the client does not wait for one to be appended
//! before sending the next; SQS delivers a group's messages in order and holds the group
//! while one of its messages is in flight. A session queue is FIFO because the distributor
//! hands each session its events in zxid order (Guarantee 4) and a standard queue may
//! reorder them. Delivery is at least once everywhere: the writer dedups by (session, seq),
//! the client drops events and results it has seen.
//!
//! A body over [`INLINE_BODY_MAX`] (SQS stops at 256 KiB) is put in the user bucket as
//! `queue/<queue>/<random id>` first, and the message carries only that key in the attribute
//! [`SPILL_ATTRIBUTE`]; [`Queues::receive`] reads it back and [`Queues::delete`] deletes it
//! with the message (not if SQS did not delete the message, which then comes again).

use crate::meter::Meter;
use crate::unavailable;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName,
};
use faaskeeper_storage::StoreError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Largest body sent inline; anything larger goes through S3 (SQS's limit is 256 KiB for
/// the body and its attributes together).
pub const INLINE_BODY_MAX: usize = 250 * 1024;
/// Message attribute naming the S3 object that holds a spilled body.
pub const SPILL_ATTRIBUTE: &str = "faaskeeper-s3-key";
/// Prefix of spilled bodies in the user bucket.
pub const SPILL_PREFIX: &str = "queue/";
/// Authority of session delivery addresses on AWS: the watch stage POSTs a session's events
/// to `http://queues.faaskeeper.internal/<queue name>`, which the host turns into an SQS send.
pub const NOTIFY_AUTHORITY: &str = "queues.faaskeeper.internal";
/// Seconds a received message stays invisible to other consumers (SQS's default).
pub const VISIBILITY_TIMEOUT_S: i32 = 30;
/// Receives before a writer message goes to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;

/// The queue names of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueNames {
    prefix: String,
}

impl QueueNames {
    /// The names under `prefix` (the same prefix as the table and bucket).
    pub fn new(prefix: &str) -> QueueNames {
        QueueNames {
            prefix: prefix.to_string(),
        }
    }

    /// The writer's FIFO queue.
    pub fn writer(&self) -> String {
        format!("{}-writer.fifo", self.prefix)
    }

    /// The writer queue's dead-letter queue.
    pub fn writer_dlq(&self) -> String {
        format!("{}-writer-dlq.fifo", self.prefix)
    }

    /// The distributor's wake-up queue.
    pub fn distributor(&self) -> String {
        format!("{}-distributor", self.prefix)
    }

    /// The delivery queue of one session.
    pub fn session(&self, session: i64) -> String {
        format!("{}-session-{session}.fifo", self.prefix)
    }

    /// The session whose delivery queue `name` is, if it is one of this deployment's.
    pub fn session_of(&self, name: &str) -> Option<i64> {
        name.strip_prefix(&self.prefix)?
            .strip_prefix("-session-")?
            .strip_suffix(".fifo")?
            .parse()
            .ok()
    }

    /// The delivery address the watch stage is given for `session` (see [`NOTIFY_AUTHORITY`]).
    pub fn notify_url(&self, session: i64) -> String {
        format!("http://{NOTIFY_AUTHORITY}/{}", self.session(session))
    }
}

/// What kind of queue to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// At-least-once, any order.
    Standard,
    /// Ordered per message group, deduplicated by id for 5 minutes.
    Fifo,
}

/// A message as received, its body already read back from S3 if it was spilled.
#[derive(Debug, Clone)]
pub struct Received {
    /// SQS's message id.
    pub message_id: String,
    /// The handle that deletes this receipt of the message.
    pub receipt_handle: String,
    /// The body, or why a spilled body could not be read back (the message is received all
    /// the same: its consumer fails or skips it alone).
    pub body: Result<Vec<u8>, QueueError>,
    /// The message group (FIFO queues).
    pub group: Option<String>,
    /// The S3 key of a spilled body, deleted with the message.
    pub spill_key: Option<String>,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The queue does not exist (a session queue deleted by its client, for instance).
    #[error("queue {0} does not exist")]
    NoSuchQueue(String),
    /// SQS or S3 could not be reached or refused the request.
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

fn queue_unavailable<E: std::error::Error>(e: E) -> QueueError {
    QueueError::Unavailable(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

/// SQS queues of one deployment, with spilling of large bodies to S3; every request counted.
#[derive(Clone)]
pub struct Queues {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) names: QueueNames,
    /// The `user` bucket, on a client's queues (which read nodes directly).
    pub(crate) nodes: Option<crate::UserStore>,
    pub(crate) meter: Arc<Meter>,
    pub(crate) urls: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("names", &self.names)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Queues {
    /// This deployment's queue names.
    pub fn names(&self) -> &QueueNames {
        &self.names
    }

    /// The live counters of the queues (SQS requests, and the S3 requests of spilled bodies).
    pub fn meter(&self) -> Arc<Meter> {
        self.meter.clone()
    }

    fn cached_url(&self, name: &str) -> Option<String> {
        self.urls.lock().ok().and_then(|m| m.get(name).cloned())
    }

    fn remember(&self, name: &str, url: &str) {
        if let Ok(mut m) = self.urls.lock() {
            m.insert(name.to_string(), url.to_string());
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut m) = self.urls.lock() {
            m.remove(name);
        }
    }

    /// The URL of queue `name` (looked up once, then cached).
    pub async fn url(&self, name: &str) -> Result<String, QueueError> {
        if let Some(url) = self.cached_url(name) {
            return Ok(url);
        }
        self.meter.sqs_request(0);
        match self.sqs.get_queue_url().queue_name(name).send().await {
            Ok(out) => {
                let url = out
                    .queue_url()
                    .ok_or_else(|| QueueError::Unavailable(format!("no URL for queue {name}")))?
                    .to_string();
                self.remember(name, &url);
                Ok(url)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                Err(QueueError::NoSuchQueue(name.to_string()))
            }
            Err(e) => Err(queue_unavailable(e)),
        }
    }

    /// Create queue `name` if it does not exist (same attributes: a no-op) and return its
    /// URL. `dead_letter`: the queue that receives a message after [`MAX_RECEIVES`] receives.
    pub async fn ensure(
        &self,
        name: &str,
        kind: QueueKind,
        dead_letter: Option<&str>,
    ) -> Result<String, QueueError> {
        let mut req = self.sqs.create_queue().queue_name(name).attributes(
            QueueAttributeName::VisibilityTimeout,
            VISIBILITY_TIMEOUT_S.to_string(),
        );
        if kind == QueueKind::Fifo {
            req = req.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if let Some(dlq) = dead_letter {
            let dlq_url = self.url(dlq).await?;
            self.meter.sqs_request(0);
            let arn = self
                .sqs
                .get_queue_attributes()
                .queue_url(&dlq_url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .map_err(queue_unavailable)?
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
                .ok_or_else(|| QueueError::Unavailable(format!("no ARN for queue {dlq}")))?;
            req = req.attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": MAX_RECEIVES })
                    .to_string(),
            );
        }
        self.meter.sqs_request(0);
        let out = req.send().await.map_err(queue_unavailable)?;
        let url = out
            .queue_url()
            .ok_or_else(|| QueueError::Unavailable(format!("no URL for queue {name}")))?
            .to_string();
        self.remember(name, &url);
        Ok(url)
    }

    /// Create the stage queues of this deployment (writer + its dead-letter queue,
    /// distributor) if they are missing.
    pub async fn ensure_stage_queues(&self) -> Result<(), QueueError> {
        let names = self.names.clone();
        self.ensure(&names.writer_dlq(), QueueKind::Fifo, None)
            .await?;
        self.ensure(&names.writer(), QueueKind::Fifo, Some(&names.writer_dlq()))
            .await?;
        self.ensure(&names.distributor(), QueueKind::Standard, None)
            .await?;
        Ok(())
    }

    /// Approximate (visible, in flight) message counts of queue `name`.
    pub async fn queue_depth(&self, name: &str) -> Result<(u64, u64), QueueError> {
        let url = self.url(name).await?;
        self.meter.sqs_request(0);
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(queue_unavailable)?;
        let get = |n: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&n))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }

    /// Delete queue `name` (a session's, when it closes). A missing queue is not an error.
    pub async fn delete_queue(&self, name: &str) -> Result<(), QueueError> {
        let url = match self.url(name).await {
            Ok(url) => url,
            Err(QueueError::NoSuchQueue(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.meter.sqs_request(0);
        let r = self.sqs.delete_queue().queue_url(url).send().await;
        self.forget(name);
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                Ok(())
            }
            Err(e) => Err(queue_unavailable(e)),
        }
    }

    /// Send `body` to queue `name`. FIFO queues need `group` and `dedup` (the id under which
    /// SQS drops a repeat sent within 5 minutes); standard queues ignore both. A body over
    /// [`INLINE_BODY_MAX`] is spilled to S3 first.
    pub async fn send(
        &self,
        name: &str,
        body: &[u8],
        group: Option<&str>,
        dedup: Option<&str>,
    ) -> Result<(), QueueError> {
        let url = self.url(name).await?;
        let mut req = self.sqs.send_message().queue_url(&url);
        let text = match std::str::from_utf8(body) {
            Ok(text) if body.len() <= INLINE_BODY_MAX => text.to_string(),
            // Too large, or not text (SQS bodies are Unicode text): the body goes to S3.
            _ => {
                let key = format!("{SPILL_PREFIX}{name}/{}", random_hex());
                self.meter.s3_put();
                self.s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .body(body.to_vec().into())
                    .send()
                    .await
                    .map_err(|e| QueueError::Unavailable(unavailable(e).to_string()))?;
                req = req.message_attributes(
                    SPILL_ATTRIBUTE,
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(&key)
                        .build()
                        .map_err(queue_unavailable)?,
                );
                key
            }
        };
        if name.ends_with(".fifo") {
            req = req
                .message_group_id(group.unwrap_or("0"))
                .message_deduplication_id(dedup.map_or_else(random_hex, str::to_string));
        }
        self.meter.sqs_request(text.len());
        match req.message_body(text).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                self.forget(name);
                Err(QueueError::NoSuchQueue(name.to_string()))
            }
            Err(e) => Err(queue_unavailable(e)),
        }
    }

    /// Receive up to `max` (1–10) messages, waiting up to `wait_s` (0–20) seconds for the
    /// first (long polling). Spilled bodies are read back from S3; one that cannot be is the
    /// `body` error of its message, not the receive's.
    pub async fn receive(
        &self,
        name: &str,
        max: i32,
        wait_s: i32,
    ) -> Result<Vec<Received>, QueueError> {
        self.receive_messages(name, max, wait_s, true).await
    }

    /// [`Queues::receive`] leaving a spilled message's body as SQS holds it (its S3 key, also
    /// in `spill_key`), as Lambda's event source hands it to a function.
    pub async fn receive_as_sent(
        &self,
        name: &str,
        max: i32,
        wait_s: i32,
    ) -> Result<Vec<Received>, QueueError> {
        self.receive_messages(name, max, wait_s, false).await
    }

    async fn receive_messages(
        &self,
        name: &str,
        max: i32,
        wait_s: i32,
        read_spilled: bool,
    ) -> Result<Vec<Received>, QueueError> {
        let url = self.url(name).await?;
        let out = self
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait_s.clamp(0, 20))
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist()) =>
            {
                self.meter.sqs_request(0);
                self.forget(name);
                return Err(QueueError::NoSuchQueue(name.to_string()));
            }
            Err(e) => {
                self.meter.sqs_request(0);
                return Err(queue_unavailable(e));
            }
        };
        let payload: usize = out
            .messages()
            .iter()
            .map(|m| m.body().map_or(0, str::len))
            .sum();
        self.meter.sqs_request(payload);
        let mut received = Vec::with_capacity(out.messages().len());
        for m in out.messages() {
            let spill_key = m
                .message_attributes()
                .and_then(|a| a.get(SPILL_ATTRIBUTE))
                .and_then(|v| v.string_value())
                .map(str::to_string);
            let body = match &spill_key {
                Some(key) if read_spilled => self.read_spilled(key).await,
                _ => Ok(m.body().unwrap_or_default().as_bytes().to_vec()),
            };
            received.push(Received {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt_handle: m.receipt_handle().unwrap_or_default().to_string(),
                body,
                group: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned(),
                spill_key,
            });
        }
        Ok(received)
    }

    /// The body a spilled message points at.
    pub async fn read_spilled(&self, key: &str) -> Result<Vec<u8>, QueueError> {
        if !key.starts_with(SPILL_PREFIX) {
            return Err(QueueError::Unavailable(format!(
                "spilled body outside {SPILL_PREFIX}: {key}"
            )));
        }
        self.meter.s3_get();
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| QueueError::Unavailable(unavailable(e).to_string()))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Delete received messages (done with them), 10 per request, and the spilled bodies of
    /// those SQS deleted: one it did not delete comes again and needs its body then.
    pub async fn delete(&self, name: &str, done: &[Received]) -> Result<(), QueueError> {
        if done.is_empty() {
            return Ok(());
        }
        let url = self.url(name).await?;
        for chunk in done.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&r.receipt_handle)
                        .build()
                        .map_err(queue_unavailable)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.meter.sqs_request(0);
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(queue_unavailable)?;
            // Entry ids are indices in the chunk.
            let failed: HashSet<&str> = out.failed().iter().map(|f| f.id()).collect();
            if let Some(f) = out.failed().first() {
                // An expired receipt handle: the message is visible again and will be
                // redelivered, which every consumer tolerates.
                tracing::warn!(
                    queue = name,
                    code = f.code(),
                    count = failed.len(),
                    "messages not deleted"
                );
            }
            for (i, r) in chunk.iter().enumerate() {
                if let Some(key) = &r.spill_key
                    && !failed.contains(i.to_string().as_str())
                {
                    self.delete_spilled(key).await;
                }
            }
        }
        Ok(())
    }

    /// Delete a spilled body once its message is handled (a failure leaves garbage, logged).
    pub async fn delete_spilled(&self, key: &str) {
        if !key.starts_with(SPILL_PREFIX) {
            return;
        }
        self.meter.s3_delete();
        if let Err(e) = self
            .s3
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            tracing::warn!(key, error = %unavailable(e), "spilled body not deleted");
        }
    }
}

/// 128 random bits as hex (message ids of spilled bodies, dedup ids when none is given).
fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u64(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    a.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u64(a.finish());
    format!("{:016x}{:016x}", a.finish(), b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_queue_names_round_trip() {
        let n = QueueNames::new("app");
        assert_eq!(n.session(42), "app-session-42.fifo");
        assert_eq!(n.session_of("app-session-42.fifo"), Some(42));
        assert_eq!(n.session_of("other-session-42.fifo"), None);
        assert_eq!(n.session_of("app-session-x.fifo"), None);
        assert_eq!(n.session_of("app-writer.fifo"), None);
        assert_eq!(
            n.notify_url(7),
            "http://queues.faaskeeper.internal/app-session-7.fifo"
        );
    }
}
