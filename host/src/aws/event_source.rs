//! Lambda's SQS event source mapping, done in this process: it polls a queue, hands each
//! batch to a [`Function`] as the SQS event Lambda would send, and deletes what the function
//! handled. `faaskeeper cost --measure --lambda` runs the functions behind it, so that what a
//! deployment on Lambda bills is counted rather than estimated: the functions' invocations
//! and durations, and the mapping's own receives and deletes, which AWS bills to the account
//! as SQS requests.
//!
//! As the mapping of `deploy/aws/template.json` does:
//! - long polls of up to 20 s, batches of up to `batch_size` messages;
//! - with a batching window, more receives until the batch is full or the window, counted
//!   from the batch's first message, has passed;
//! - with `ReportBatchItemFailures`, the messages a function names stay on the queue (they are
//!   seen again after the visibility timeout), the others are deleted, 10 per request; a
//!   failed invocation deletes nothing.
//!
//! One [`EventSource::spawn`] is one poller feeding one warm function instance; Lambda runs
//! as many instances as it has pollers with batches (one, for a function limited to one
//! concurrent execution, as the distributor is).

use super::lambda::{Function, SqsEvent, SqsMessageAttribute, SqsRecord};
use faaskeeper_backend_aws::{QueueError, Queues, Received, SPILL_ATTRIBUTE};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An event source mapping's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Most messages per batch (`BatchSize`).
    pub batch_size: usize,
    /// How long a batch is gathered for (`MaximumBatchingWindowInSeconds`).
    pub window: Duration,
    /// Most concurrent invocations (`ScalingConfig.MaximumConcurrency`, or the function's
    /// `ReservedConcurrentExecutions`).
    pub concurrency: usize,
}

/// The writer queue's mapping in `deploy/aws/template.json` (its test checks that they
/// agree). Two concurrent invocations, the least Lambda allows a mapping, so that the writes
/// that arrive together are appended together (each append is a head swap and a log record,
/// whatever it carries).
pub const WRITER_MAPPING: Mapping = Mapping {
    batch_size: 10,
    window: Duration::ZERO,
    concurrency: 2,
};

/// The distributor queue's mapping in `deploy/aws/template.json`: wake-ups gathered for up
/// to 1 s, one invocation at a time (the function's reserved concurrency is 1).
pub const DISTRIBUTOR_MAPPING: Mapping = Mapping {
    batch_size: 10,
    window: Duration::from_secs(1),
    concurrency: 1,
};

/// One queue's event source mapping.
pub struct EventSource {
    queues: Queues,
    queue: String,
    batch_size: usize,
    window: Duration,
    region: String,
}

impl EventSource {
    /// A mapping of `queue` (a name of [`Queues::names`]) with batches of up to
    /// `mapping.batch_size` (1–10) and a batching window of `mapping.window` (zero: a batch
    /// is what one receive brings). Its receives and deletes are counted by `queues`' meter.
    /// Its concurrency is as many [`EventSource::spawn`]s as are made.
    pub fn new(queues: Queues, queue: String, mapping: Mapping, region: &str) -> EventSource {
        EventSource {
            queues,
            queue,
            batch_size: mapping.batch_size.clamp(1, 10),
            window: mapping.window,
            region: region.to_string(),
        }
    }

    /// Receive one batch (waiting up to 20 s for its first message), invoke `function` with
    /// it, and delete what it handled. The number of messages in the batch.
    pub async fn poll_once(&self, function: &Function) -> Result<usize, QueueError> {
        let batch = self.receive_batch().await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let event = self.event(&batch);
        let payload = serde_json::to_value(&event)
            .map_err(|e| QueueError::Unavailable(format!("SQS event: {e}")))?;
        let failed: HashSet<String> = match function.handle(payload).await {
            Ok(answer) => answer
                .batch_item_failures
                .into_iter()
                .map(|f| f.item_identifier)
                .collect(),
            Err(e) => {
                tracing::warn!(queue = self.queue, error = %e, "invocation failed; the batch stays");
                return Ok(batch.len());
            }
        };
        // Lambda takes a failure naming no message of the batch as the whole batch failing.
        if failed
            .iter()
            .any(|id| !batch.iter().any(|r| &r.message_id == id))
        {
            tracing::warn!(
                queue = self.queue,
                "a failure names no message of the batch; the batch stays"
            );
            return Ok(batch.len());
        }
        let done: Vec<Received> = batch
            .iter()
            .filter(|r| !failed.contains(&r.message_id))
            .map(|r| Received {
                // A spilled body is the function's to delete (it read it), not the mapping's.
                spill_key: None,
                ..r.clone()
            })
            .collect();
        self.queues.delete(&self.queue, &done).await?;
        Ok(batch.len())
    }

    /// Poll for `function` until the task is aborted.
    pub fn spawn(self: Arc<Self>, function: Arc<Function>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(e) = self.poll_once(&function).await {
                    tracing::warn!(queue = self.queue, error = %e, "event source: queue not reachable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
    }

    async fn receive_batch(&self) -> Result<Vec<Received>, QueueError> {
        let want = self.batch_size as i32;
        let mut batch = self.queues.receive_as_sent(&self.queue, want, 20).await?;
        let Some(until) = (!batch.is_empty()).then(|| Instant::now() + self.window) else {
            return Ok(batch);
        };
        while batch.len() < self.batch_size {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // SQS waits whole seconds; a wait of 0 answers at once, which would spin.
            let wait = left.as_secs_f64().ceil().clamp(1.0, 20.0) as i32;
            let more = self
                .queues
                .receive_as_sent(&self.queue, want - batch.len() as i32, wait)
                .await?;
            batch.extend(more);
        }
        Ok(batch)
    }

    /// The batch as Lambda's SQS event (the fields Lambda sends that a function can use).
    fn event(&self, batch: &[Received]) -> SqsEvent {
        let arn = format!("arn:aws:sqs:{}:000000000000:{}", self.region, self.queue);
        let records = batch
            .iter()
            .map(|r| {
                let mut attributes = HashMap::new();
                if let Some(group) = &r.group {
                    attributes.insert("MessageGroupId".to_string(), group.clone());
                }
                let mut message_attributes = HashMap::new();
                if let Some(key) = &r.spill_key {
                    message_attributes.insert(
                        SPILL_ATTRIBUTE.to_string(),
                        SqsMessageAttribute {
                            string_value: Some(key.clone()),
                            data_type: "String".to_string(),
                        },
                    );
                }
                SqsRecord {
                    message_id: r.message_id.clone(),
                    receipt_handle: r.receipt_handle.clone(),
                    // SQS bodies are text; a body that is not was spilled, and this is its key
                    // (`receive_as_sent` reads no spilled body, so there is always one).
                    body: r
                        .body
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .into_owned(),
                    attributes,
                    message_attributes,
                    md5_of_body: None,
                    event_source: Some("aws:sqs".to_string()),
                    event_source_arn: Some(arn.clone()),
                    aws_region: Some(self.region.clone()),
                }
            })
            .collect();
        SqsEvent { records }
    }
}
