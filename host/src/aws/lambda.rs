//! The Lambda handler: what the `bootstrap` binary of `host/lambda` (runtime
//! `provided.al2023`, handler `bootstrap`) runs for each invocation. It runs the same stage components as
//! `faaskeeper serve`, on the AWS backend, one function per role (`FAASKEEPER_FUNCTION`):
//!
//! | role | triggered by | does |
//! |---|---|---|
//! | `writer` | the writer FIFO queue (SQS event source, `ReportBatchItemFailures`) | appends the batches through the writer stage; pings go to the heartbeat stage |
//! | `distributor` | the distributor queue, and a schedule | one distributor run (the watch stage delivers to session queues) |
//! | `heartbeat` | a schedule | one heartbeat sweep |
//!
//! A writer batch answers `{"batchItemFailures": [...]}` naming the messages to deliver
//! again: a record whose spilled body could not be read, every later record of its message
//! group (FIFO), and every record whose append failed. A record that does not decode never
//! will: it is dropped with a warning. The `bootstrap` binary takes its configuration from
//! the environment; `faaskeeper cost --measure --lambda` starts these functions in its own
//! process, behind [`event_source`](super::event_source), to count what a deployment on
//! Lambda bills.
//!
//! Each invocation is metered (the invocation and its MB-milliseconds, besides the
//! DynamoDB, S3 and SQS requests it made); with [`FunctionOptions::log_usage`] it also prints
//! one JSON line `{"faaskeeper_usage": {...}}` with what it counted.

use crate::aws::{QueueRecord, SqsOutbound, WriterQueue};
use crate::runtime::{Limits, Runtime};
use faaskeeper_backend_aws::{AwsBackend, AwsOptions, AwsUsage, Meter};
use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An SQS event as Lambda delivers it (the fields this handler reads, with their AWS names).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SqsEvent {
    /// The messages of the batch.
    #[serde(rename = "Records")]
    pub records: Vec<SqsRecord>,
}

/// One message of an [`SqsEvent`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    /// SQS's message id: what a batch item failure names.
    pub message_id: String,
    /// The receipt handle (Lambda deletes the message itself on success).
    #[serde(default)]
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// System attributes (`MessageGroupId` on a FIFO queue, `ApproximateReceiveCount`, …).
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    /// Message attributes (a spilled body's S3 key).
    #[serde(default)]
    pub message_attributes: HashMap<String, SqsMessageAttribute>,
    /// MD5 of the body.
    #[serde(default)]
    pub md5_of_body: Option<String>,
    /// `aws:sqs`.
    #[serde(default)]
    pub event_source: Option<String>,
    /// The queue's ARN.
    #[serde(default, rename = "eventSourceARN")]
    pub event_source_arn: Option<String>,
    /// The region.
    #[serde(default)]
    pub aws_region: Option<String>,
}

/// A message attribute of an [`SqsRecord`].
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessageAttribute {
    /// The value of a `String` attribute.
    #[serde(default)]
    pub string_value: Option<String>,
    /// `String`, `Number` or `Binary`.
    #[serde(default)]
    pub data_type: String,
}

/// The answer to an SQS batch with `ReportBatchItemFailures` on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// The messages to deliver again.
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// One message to deliver again.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchItemFailure {
    /// Its `messageId`.
    pub item_identifier: String,
}

/// What a function does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Consumes the writer queue.
    Writer,
    /// Runs the distributor (queue wake-ups, schedule).
    Distributor,
    /// Sweeps for lapsed sessions (schedule).
    Heartbeat,
}

impl Role {
    /// Parse `writer`, `distributor` or `heartbeat`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "writer" => Some(Role::Writer),
            "distributor" => Some(Role::Distributor),
            "heartbeat" => Some(Role::Heartbeat),
            _ => None,
        }
    }
}

/// How a function instance is configured (the function's settings in the template).
#[derive(Debug, Clone)]
pub struct FunctionOptions {
    /// The function's memory (MB): what its duration is billed at.
    pub memory_mb: u64,
    /// Where compiled stages are cached (`/tmp` on Lambda survives warm starts).
    pub cache_dir: Option<std::path::PathBuf>,
    /// The watch stage also delivers to clients' own listeners (sessions opened with a direct
    /// address, `docs/aws.md`), which the function must be able to reach.
    pub direct_results: bool,
    /// Print each invocation's counts as a `faaskeeper_usage` JSON line on stdout (Lambda
    /// keeps it in the function's log).
    pub log_usage: bool,
}

impl Default for FunctionOptions {
    fn default() -> FunctionOptions {
        FunctionOptions {
            memory_mb: 128,
            cache_dir: None,
            direct_results: false,
            log_usage: true,
        }
    }
}

/// A warm function instance: the compiled stages on the AWS backend.
pub struct Function {
    role: Role,
    rt: Arc<Runtime>,
    backend: AwsBackend,
    writer: WriterQueue,
    options: FunctionOptions,
    last_usage: Mutex<AwsUsage>,
    /// The writer's invocations whose batch held no write, only session pings: what keeping
    /// sessions alive costs, apart from what writes cost.
    keepalive: Meter,
}

/// Why an invocation failed as a whole (Lambda retries the whole event).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event is not what this role takes.
    #[error("unexpected event for the {0:?} function: {1}")]
    BadEvent(Role, String),
    /// The stage failed.
    #[error("{0}")]
    Stage(String),
}

impl Function {
    /// Cold start: open the AWS resources (creating nothing), compile the stages (cached in
    /// `options.cache_dir`), route deliveries and distributor wake-ups to SQS.
    pub async fn start(
        role: Role,
        opts: &AwsOptions,
        options: FunctionOptions,
    ) -> anyhow::Result<Function> {
        let backend = AwsBackend::open(opts).await?;
        let stores = backend.store_manager(SYSTEM_BUCKET, USER_BUCKET);
        let stages = crate::embedded_stages();
        let limits = Limits {
            // One invocation at a time per instance: a small pool is plenty.
            instances: 16,
            memory_bytes: 256 << 20,
            cache_dir: options.cache_dir.clone(),
            // A cold start compiles the stages (`/tmp` is empty): without the inliner that
            // takes a quarter of the time, for apply logic ≈ 9 % slower.
            inlining: false,
            ..Limits::default()
        };
        let rt = tokio::task::spawn_blocking(move || {
            Runtime::new(&stages, stores, Default::default(), limits)
        })
        .await??;
        rt.set_outbound(Arc::new(
            SqsOutbound::new(backend.queues().clone(), true)
                .with_direct_results(options.direct_results),
        ));
        if role == Role::Distributor {
            // The protocol's initial keys (idempotent). Only the distributor does it: it runs
            // one instance at a time, and initialisation must not race with itself.
            rt.init_store().await?;
        }
        tokio::spawn(rt.clone().run_write_combiner());
        let writer = WriterQueue::new(rt.clone(), backend.queues().clone());
        let last_usage = Mutex::new(backend.usage());
        Ok(Function {
            role,
            rt,
            backend,
            writer,
            options,
            last_usage,
            keepalive: Meter::default(),
        })
    }

    /// The role this instance plays.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What this instance has counted since its cold start.
    pub fn usage(&self) -> AwsUsage {
        self.backend.usage()
    }

    /// Of [`Function::usage`]'s invocations, those of the writer whose batch held only
    /// session pings (their number and billed duration).
    pub fn keepalive_usage(&self) -> faaskeeper_backend_aws::Usage {
        self.keepalive.snapshot()
    }

    /// Handle one invocation's payload.
    pub async fn handle(&self, payload: serde_json::Value) -> Result<BatchResponse, HandlerError> {
        let started = Instant::now();
        let (result, writes) = self.dispatch(payload).await;
        let meter: Arc<Meter> = self.backend.queues().meter();
        // Lambda bills each invocation's duration rounded up to the millisecond.
        let millis = started.elapsed().as_micros().div_ceil(1000) as u64;
        meter.lambda_invocation(self.options.memory_mb, millis);
        if self.role == Role::Writer && writes == 0 && result.is_ok() {
            self.keepalive
                .lambda_invocation(self.options.memory_mb, millis);
        }
        let now = self.backend.usage();
        if !self.options.log_usage {
            return result;
        }
        if let Ok(mut last) = self.last_usage.lock() {
            let used = now.since(&last);
            *last = now;
            println!(
                "{}",
                serde_json::json!({ "faaskeeper_usage": usage_json(&used) })
            );
        }
        result
    }

    /// The answer, and how many of the event's messages held writes (writer only).
    async fn dispatch(
        &self,
        payload: serde_json::Value,
    ) -> (Result<BatchResponse, HandlerError>, usize) {
        let sqs = payload.get("Records").is_some();
        match self.role {
            Role::Writer => match serde_json::from_value::<SqsEvent>(payload) {
                Ok(event) => {
                    let (answer, writes) = self.writer_batch(&event).await;
                    (Ok(answer), writes)
                }
                Err(e) => (Err(HandlerError::BadEvent(self.role, e.to_string())), 0),
            },
            Role::Distributor | Role::Heartbeat => (self.run(payload, sqs).await, 0),
        }
    }

    /// A distributor run or heartbeat sweep, for a queue's or a schedule's event.
    async fn run(
        &self,
        payload: serde_json::Value,
        sqs: bool,
    ) -> Result<BatchResponse, HandlerError> {
        let event: Option<SqsEvent> = if sqs {
            Some(
                serde_json::from_value(payload)
                    .map_err(|e| HandlerError::BadEvent(self.role, e.to_string()))?,
            )
        } else {
            // A scheduled event: nothing in it matters.
            None
        };
        let run = if self.role == Role::Distributor {
            match super::run_distributor_once(&self.rt).await {
                // Txns are left, and nothing else may wake a distributor for them
                // (their writers' wake-ups were in this event): the next invocation
                // takes them.
                Ok(true) => self.wake_distributor().await,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            }
        } else {
            super::run_heartbeat_once(&self.rt).await
        };
        match (run, event) {
            (Ok(()), _) => Ok(BatchResponse::default()),
            (Err(e), Some(event)) => {
                tracing::error!(error = format!("{e:#}"), "run failed");
                Ok(BatchResponse {
                    batch_item_failures: event
                        .records
                        .iter()
                        .map(|r| BatchItemFailure {
                            item_identifier: r.message_id.clone(),
                        })
                        .collect(),
                })
            }
            (Err(e), None) => Err(HandlerError::Stage(format!("{e:#}"))),
        }
    }

    /// A wake-up on the distributor queue, as the writer sends.
    async fn wake_distributor(&self) -> anyhow::Result<()> {
        let queues = self.backend.queues();
        queues
            .send(&queues.names().distributor(), b"{}", None, None)
            .await?;
        Ok(())
    }

    /// The answer, and how many messages held writes.
    async fn writer_batch(&self, event: &SqsEvent) -> (BatchResponse, usize) {
        let queues = self.backend.queues();
        let mut records = Vec::with_capacity(event.records.len());
        let mut spilled = HashMap::new();
        for r in &event.records {
            let group = r.attributes.get("MessageGroupId").cloned();
            let spill = r
                .message_attributes
                .get(faaskeeper_backend_aws::SPILL_ATTRIBUTE)
                .and_then(|a| a.string_value.clone());
            let body = match &spill {
                Some(key) => {
                    let body = queues.read_spilled(key).await;
                    if body.is_ok() {
                        spilled.insert(r.message_id.clone(), key.clone());
                    }
                    body
                }
                None => Ok(r.body.clone().into_bytes()),
            };
            records.push(QueueRecord {
                id: r.message_id.clone(),
                body,
                group,
            });
        }
        let (failed, writes) = self.writer.process_counted(&records).await;
        for (id, key) in &spilled {
            if !failed.contains(id) {
                queues.delete_spilled(key).await;
            }
        }
        let answer = BatchResponse {
            batch_item_failures: failed
                .into_iter()
                .map(|item_identifier| BatchItemFailure { item_identifier })
                .collect(),
        };
        (answer, writes)
    }
}

/// The counters of one invocation as JSON.
pub fn usage_json(u: &AwsUsage) -> serde_json::Value {
    let one = |u: &faaskeeper_backend_aws::Usage| {
        serde_json::json!({
            "dynamo_requests": u.dynamo_requests,
            "dynamo_read_units": u.dynamo_read_units,
            "dynamo_write_units": u.dynamo_write_units,
            "s3_get": u.s3_get,
            "s3_put": u.s3_put,
            "s3_list": u.s3_list,
            "s3_delete": u.s3_delete,
            "sqs_requests": u.sqs_requests,
            "sqs_billed": u.sqs_billed,
            "lambda_invocations": u.lambda_invocations,
            "lambda_mb_ms": u.lambda_mb_ms,
        })
    };
    serde_json::json!({ "system": one(&u.system), "user": one(&u.user), "queues": one(&u.queues) })
}
