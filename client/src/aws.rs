//! The AWS transport (feature `aws`): a client talks to an AWS deployment with no function
//! and no host in between, as FaaSKeeper's clients do.
//!
//! - **Writes** go to the writer FIFO queue (`<prefix>-writer.fifo`), message group = the
//!   session, so SQS hands them to the writer in the order the session sent them
//!   (Guarantee 2); deduplication id = `<session>-<seq>`. Bodies over SQS's limit go through
//!   S3 (`faaskeeper_backend_aws::Queues::send`).
//! - **Reads** go straight to the user bucket: one S3 GET of the node object (`node<path>`)
//!   in `<prefix>-user`, or, with `AwsOptions::user_storage` = DynamoDB, one strongly
//!   consistent `GetItem` in `<prefix>-nodes` (plus an S3 GET for a node too large for an
//!   item). The session's `AwsOptions` must name the deployment's user storage.
//! - **Results and watch events** come on the session's own FIFO queue
//!   (`<prefix>-session-<id>.fifo`), created when the session opens and deleted when it
//!   closes. No other session reads it, so none can take another's replies; the watch stage
//!   writes to it in zxid order (Guarantee 4).
//! - **Pings** are `{"ping": <session>}` messages on the writer queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), faaskeeper_client::Error> {
//! use faaskeeper_backend_aws::AwsOptions;
//! let aws = AwsOptions { prefix: "faaskeeper".into(), ..Default::default() };
//! let client = faaskeeper_client::Client::connect_aws(&aws, Default::default()).await?;
//! client.create("/a", b"x", faaskeeper_core::CreateMode::Persistent).await?;
//! client.close().await
//! # }
//! ```

use crate::Error;
use faaskeeper_backend_aws::{AwsOptions, QueueError, QueueKind, Queues, Usage};
use faaskeeper_core::queue::WriterMessage;
use faaskeeper_core::wire::{
    Delivery, NodeView, Op, Request, SessionEvent, Submission, WriteBatch,
};
use faaskeeper_core::{SessionId, ZkError};

/// Seconds one receive on the session queue waits (SQS's longest long poll).
const POLL_WAIT_S: i32 = 20;

pub(crate) struct AwsTransport {
    queues: Queues,
}

fn transport(e: impl std::fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

fn queue_error(e: QueueError) -> Error {
    match e {
        QueueError::NoSuchQueue(q) => Error::Zk {
            code: ZkError::SessionExpired,
            message: format!("session queue {q} is gone"),
        },
        other => transport(other),
    }
}

/// A positive, non-zero session id that no other client is likely to pick.
fn new_session_id() -> SessionId {
    use std::hash::{BuildHasher, RandomState};
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    ((RandomState::new().hash_one((t, std::process::id())) >> 1) | 1) as i64
}

impl AwsTransport {
    pub(crate) async fn connect(opts: &AwsOptions) -> Result<AwsTransport, Error> {
        let queues = Queues::connect(opts).await.map_err(transport)?;
        Ok(AwsTransport { queues })
    }

    /// What this session's transport counted: SQS requests (64 KiB chunks) and S3 requests.
    pub(crate) fn usage(&self) -> Usage {
        self.queues.meter().snapshot()
    }

    async fn send(
        &self,
        session: SessionId,
        msg: &WriterMessage,
        dedup: &str,
    ) -> Result<(), Error> {
        let body = serde_json::to_vec(msg).map_err(transport)?;
        self.queues
            .send(
                &self.queues.names().writer(),
                &body,
                Some(&session.to_string()),
                Some(dedup),
            )
            .await
            .map_err(transport)
    }

    /// Create the session's queue, then ask for the session (seq 0); its result arrives on
    /// that queue.
    pub(crate) async fn open_session(&self, timeout_ms: i32) -> Result<SessionId, Error> {
        let session = new_session_id();
        let names = self.queues.names();
        self.queues
            .ensure(&names.session(session), QueueKind::Fifo, None)
            .await
            .map_err(transport)?;
        let open = WriteBatch {
            requests: vec![Request {
                session,
                seq: 0,
                op: Op::OpenSession {
                    timeout_ms,
                    notify: names.notify_url(session),
                },
            }],
        };
        self.send(
            session,
            &WriterMessage::Write(open),
            &format!("{session}-0"),
        )
        .await?;
        Ok(session)
    }

    /// Queue the batch; the writer's answer (and any refusal) comes on the session queue.
    pub(crate) async fn submit(
        &self,
        session: SessionId,
        batch: &WriteBatch,
    ) -> Result<Vec<Submission>, Error> {
        let dedup = batch
            .requests
            .first()
            .map_or_else(|| format!("{session}"), |r| format!("{session}-{}", r.seq));
        self.send(session, &WriterMessage::Write(batch.clone()), &dedup)
            .await?;
        // Queued, not yet in the log: its zxid is unknown here (0); the result carries it.
        Ok(batch
            .requests
            .iter()
            .map(|r| Submission::Appended {
                seq: r.seq,
                zxid: 0,
            })
            .collect())
    }

    pub(crate) async fn heartbeat(&self, session: SessionId) -> Result<(), Error> {
        let dedup = format!(
            "{session}-ping-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        self.send(session, &WriterMessage::Ping { ping: session }, &dedup)
            .await
    }

    pub(crate) async fn close(&self, session: SessionId) -> Result<(), Error> {
        self.queues
            .delete_queue(&self.queues.names().session(session))
            .await
            .map_err(transport)
    }

    pub(crate) async fn read_node(&self, path: &str) -> Result<Option<NodeView>, Error> {
        match self.queues.read_node(path).await.map_err(transport)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| transport(format!("node object of {path}: {e}"))),
            None => Ok(None),
        }
    }

    /// One long poll of the session queue: the events of every message received, in order;
    /// the messages are deleted once decoded (the client drops anything redelivered).
    pub(crate) async fn poll(&self, session: SessionId) -> Result<Vec<(u64, SessionEvent)>, Error> {
        let queue = self.queues.names().session(session);
        let got = self
            .queues
            .receive(&queue, 10, POLL_WAIT_S)
            .await
            .map_err(queue_error)?;
        let mut events = Vec::new();
        for m in &got {
            match serde_json::from_slice::<Delivery>(&m.body) {
                Ok(d) if d.session == session => {
                    events.extend(d.events.into_iter().map(|e| (0, e)))
                }
                Ok(_) | Err(_) => tracing::warn!(session, "undecodable delivery dropped"),
            }
        }
        self.queues
            .delete(&queue, &got)
            .await
            .map_err(queue_error)?;
        Ok(events)
    }
}

impl crate::Client {
    /// What this session's AWS transport has counted (its SQS and S3 requests); `None` on
    /// the HTTP transport.
    pub fn aws_usage(&self) -> Option<Usage> {
        match &self.inner.transport {
            crate::transport::Transport::Aws(a) => Some(a.usage()),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}
