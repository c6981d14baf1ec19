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
//! - Or, with [`Results::Direct`], they come to an HTTP listener of the session's own,
//!   which the service POSTs to (a deployment run with direct results, `docs/aws.md`): no
//!   SQS request per result, as FaaSKeeper's clients get theirs over TCP. The queue is still
//!   made and read (a long poll every 20 s while idle): if the listener cannot be reached,
//!   the service delivers there instead, for good, so nothing overtakes what waits in it.
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
use std::sync::Arc;

/// Seconds one receive on the session queue waits (SQS's longest long poll).
const POLL_WAIT_S: i32 = 20;

/// Where a session on the AWS transport takes its results and watch events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Results {
    /// Its own SQS queue.
    #[default]
    Queue,
    /// An HTTP listener of its own at `listen` (port 0: any free port), which the service
    /// reaches at `advertise` (default: the address bound). The service must run with
    /// direct results (`faaskeeper serve --backend aws --direct-results`); the session's
    /// queue is the fallback address.
    Direct {
        /// Address to bind.
        listen: std::net::SocketAddr,
        /// Address the service is given, if not the one bound (behind a NAT, say).
        advertise: Option<std::net::SocketAddr>,
    },
}

/// Largest delivery the listener takes: results and events carry stats and paths, not data.
const MAX_DELIVERY: usize = 16 * 1024 * 1024;

/// What arrives for the session, from its listener or its queue, in the order it arrived.
type Arrivals = Result<Vec<SessionEvent>, Error>;

/// A session's own listener, and the task that reads its queue behind it.
struct Direct {
    advertise: std::net::SocketAddr,
    /// A secret part of the address, so that nobody but the service (which keeps the
    /// address in the session's record) can deliver to the session.
    token: String,
    /// Set by a failed receive that came after deliveries [`AwsTransport::poll`] returned:
    /// given back by the next call.
    failed: std::sync::Mutex<Option<Error>>,
    /// The session the listener takes deliveries for, once it is known.
    session: Arc<std::sync::OnceLock<SessionId>>,
    tx: tokio::sync::mpsc::UnboundedSender<Arrivals>,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Arrivals>>,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Direct {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default()
        {
            t.abort();
        }
    }
}

pub(crate) struct AwsTransport {
    queues: Queues,
    direct: Option<Direct>,
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
    pub(crate) async fn connect(
        opts: &AwsOptions,
        results: &Results,
    ) -> Result<AwsTransport, Error> {
        let queues = Queues::connect(opts).await.map_err(transport)?;
        let direct = match results {
            Results::Queue => None,
            Results::Direct { listen, advertise } => {
                Some(Direct::listen(*listen, *advertise).await?)
            }
        };
        Ok(AwsTransport { queues, direct })
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
        let (notify, fallback) = match &self.direct {
            Some(d) => {
                d.start(session, self.queues.clone());
                (d.address(session), Some(names.notify_url(session)))
            }
            None => (names.notify_url(session), None),
        };
        let open = WriteBatch {
            requests: vec![Request {
                session,
                seq: 0,
                op: Op::OpenSession {
                    timeout_ms,
                    notify,
                    fallback,
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
        if let Some(d) = &self.direct
            && let Ok(mut tasks) = d.tasks.lock()
        {
            // The listener first: nothing is taken for a session that is going.
            for t in tasks.drain(..) {
                t.abort();
            }
            let _ = d.tx.send(Err(Error::Zk {
                code: ZkError::SessionExpired,
                message: "session closed".into(),
            }));
        }
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

    /// What came next for the session: one long poll of its queue, or, with a listener,
    /// what it and the queue brought, in the order they arrived. The client drops anything
    /// redelivered.
    pub(crate) async fn poll(&self, session: SessionId) -> Result<Vec<(u64, SessionEvent)>, Error> {
        let Some(direct) = &self.direct else {
            let events = poll_queue(&self.queues, session).await?;
            return Ok(events.into_iter().map(|e| (0, e)).collect());
        };
        if let Some(e) = direct.failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        let mut rx = direct.rx.lock().await;
        let mut events = Vec::new();
        match rx.recv().await {
            Some(got) => events.extend(got?),
            None => return Err(transport("session listener stopped")),
        }
        // What arrived meanwhile, up to a failure: the events before it are already taken
        // (answered, or deleted from the queue), so they are returned and the failure is
        // given back by the next call.
        while let Ok(got) = rx.try_recv() {
            match got {
                Ok(more) => events.extend(more),
                Err(e) => {
                    if let Ok(mut f) = direct.failed.lock() {
                        *f = Some(e);
                    }
                    break;
                }
            }
        }
        Ok(events.into_iter().map(|e| (0, e)).collect())
    }
}

/// One long poll of the session queue: the events of the messages received, in order, up to
/// one whose spilled body could not be read. That one and those after it are left on the
/// queue, to come again in order; the others are deleted once decoded. Their events are
/// returned even if the delete fails: the messages then come again, and the client drops
/// what it has seen.
async fn poll_queue(queues: &Queues, session: SessionId) -> Result<Vec<SessionEvent>, Error> {
    let queue = queues.names().session(session);
    let got = queues
        .receive(&queue, 10, POLL_WAIT_S)
        .await
        .map_err(queue_error)?;
    let mut events = Vec::new();
    let mut taken = 0;
    for m in &got {
        let body = match &m.body {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(session, error = %e, "delivery unreadable; it comes again");
                break;
            }
        };
        match serde_json::from_slice::<Delivery>(body) {
            Ok(d) if d.session == session => events.extend(d.events),
            Ok(_) | Err(_) => tracing::warn!(session, "undecodable delivery dropped"),
        }
        taken += 1;
    }
    if let Err(e) = queues.delete(&queue, &got[..taken]).await {
        tracing::warn!(session, error = %e, "deliveries not deleted; they come again");
    }
    Ok(events)
}

impl Direct {
    /// Bind the listener and serve it: each delivery for the session is passed on before it
    /// is answered, so deliveries are passed on in the order the service made them (it sends
    /// a session's next one only after this one's answer).
    async fn listen(
        listen: std::net::SocketAddr,
        advertise: Option<std::net::SocketAddr>,
    ) -> Result<Direct, Error> {
        if advertise.is_none() && listen.ip().is_unspecified() {
            return Err(transport(format!(
                "a session listener on {listen} needs the address the service reaches it at"
            )));
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| transport(format!("session listener on {listen}: {e}")))?;
        let bound = listener.local_addr().map_err(transport)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let session = Arc::new(std::sync::OnceLock::new());
        let token = secret()?;
        let accept = tokio::spawn(serve_listener(
            listener,
            session.clone(),
            token.clone(),
            tx.clone(),
        ));
        Ok(Direct {
            advertise: advertise.unwrap_or(bound),
            token,
            failed: std::sync::Mutex::new(None),
            session,
            tx,
            rx: tokio::sync::Mutex::new(rx),
            tasks: std::sync::Mutex::new(vec![accept]),
        })
    }

    /// The address the service is given for `session`.
    fn address(&self, session: SessionId) -> String {
        format!(
            "http://{}{}",
            self.advertise,
            faaskeeper_core::wire::listener_path(session, &self.token)
        )
    }

    /// Take deliveries for `session`, and read its queue behind the listener.
    fn start(&self, session: SessionId, queues: Queues) {
        let _ = self.session.set(session);
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            loop {
                let got = poll_queue(&queues, session).await;
                let stop = matches!(
                    got,
                    Err(Error::Zk {
                        code: ZkError::SessionExpired,
                        ..
                    })
                );
                let failed = got.is_err();
                if tx.send(got).is_err() || stop {
                    return;
                }
                if failed {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        });
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }
}

/// 128 random bits from the operating system, in hex.
fn secret() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| transport(format!("no random bits: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `a == b` in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a connection to the listener may take to send a request's head, and its body.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_listener(
    listener: tokio::net::TcpListener,
    session: Arc<std::sync::OnceLock<SessionId>>,
    token: String,
    tx: tokio::sync::mpsc::UnboundedSender<Arrivals>,
) {
    // Dropped (aborting every connection) when this task is aborted at close.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!(error = %e, "session listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (session, token, tx) = (session.clone(), token.clone(), tx.clone());
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (session, token, tx) = (session.clone(), token.clone(), tx.clone());
                async move {
                    Ok::<_, std::convert::Infallible>(
                        take_delivery(req, &session, &token, &tx).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answer one POST to the listener: 200 once the delivery is passed on; 404 for a session
/// this listener does not serve (the service then uses the fallback address); 400 for
/// anything that is not a delivery.
async fn take_delivery(
    req: http::Request<hyper::body::Incoming>,
    session: &std::sync::OnceLock<SessionId>,
    token: &str,
    tx: &tokio::sync::mpsc::UnboundedSender<Arrivals>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let answer = |status: u16, msg: &str| {
        let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(
            serde_json::json!({ "error": msg }).to_string(),
        )));
        *r.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_REQUEST);
        r
    };
    let Some(&mine) = session.get() else {
        return answer(404, "no session yet");
    };
    let own = faaskeeper_core::wire::listener_path(mine, token);
    if req.method() != http::Method::POST || !same(req.uri().path().as_bytes(), own.as_bytes()) {
        return answer(404, "no such session here");
    }
    let read = http_body_util::Limited::new(req.into_body(), MAX_DELIVERY).collect();
    let body = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => return answer(400, &format!("delivery not read: {e}")),
        Err(_) => return answer(408, "delivery not read in time"),
    };
    match serde_json::from_slice::<Delivery>(&body) {
        Ok(d) if d.session == mine => {
            if tx.send(Ok(d.events)).is_err() {
                return answer(503, "session closing");
            }
            let mut ok =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")));
            *ok.status_mut() = http::StatusCode::OK;
            ok
        }
        Ok(_) => answer(404, "delivery for another session"),
        Err(e) => answer(400, &format!("malformed delivery: {e}")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use faaskeeper_backend_aws::moto::MotoServer;
    use faaskeeper_backend_aws::{AwsBackend, INLINE_BODY_MAX};
    use faaskeeper_core::wire::OpResult;

    /// The result of `seq` for `session`, as the watch stage delivers it.
    fn delivery(session: SessionId, seq: i64) -> (Vec<u8>, SessionEvent) {
        let event = SessionEvent::Result {
            seq,
            zxid: seq,
            result: OpResult::Deleted,
        };
        let body = serde_json::to_vec(&Delivery {
            session,
            notify: String::new(),
            fallback: None,
            events: vec![event.clone()],
        })
        .expect("encode");
        (body, event)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poll_whose_delete_fails_still_returns_its_events() {
        let moto = MotoServer::start().expect("moto");
        let opts = moto.options("poll-undeleted");
        let aws = AwsBackend::connect(&opts).await.expect("connect");
        let q = aws.queues();
        let session = 31;
        let queue = q.names().session(session);
        q.ensure(&queue, QueueKind::Fifo, None)
            .await
            .expect("session queue");
        let mut sent = Vec::new();
        for seq in [1, 2] {
            let (body, event) = delivery(session, seq);
            q.send(&queue, &body, Some("31"), None).await.expect("send");
            sent.push(event);
        }
        let refusing = Queues::connect(&AwsOptions {
            endpoint: Some(
                faaskeeper_backend_aws::moto::refusing(moto.endpoint(), "DeleteMessageBatch")
                    .await
                    .expect("proxy"),
            ),
            ..opts
        })
        .await
        .expect("queues");
        let got = poll_queue(&refusing, session).await.expect("the events");
        assert_eq!(got, sent);
        assert_eq!(
            q.queue_depth(&queue).await.expect("depth"),
            (0, 2),
            "(visible, in flight): not deleted, they come again"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_delivery_waits_with_those_after_it() {
        let moto = MotoServer::start().expect("moto");
        let aws = AwsBackend::connect(&moto.options("poll-unreadable"))
            .await
            .expect("connect");
        // Another deployment spills into its own bucket: this one finds no body at the key.
        let other = AwsBackend::connect(&moto.options("poll-elsewhere"))
            .await
            .expect("connect");
        let q = aws.queues();
        let session = 32;
        let queue = q.names().session(session);
        q.ensure(&queue, QueueKind::Fifo, None)
            .await
            .expect("session queue");
        let (first, event) = delivery(session, 1);
        q.send(&queue, &first, Some("32"), None)
            .await
            .expect("send");
        other
            .queues()
            .send(&queue, &vec![b' '; INLINE_BODY_MAX + 1], Some("32"), None)
            .await
            .expect("send spilled");
        q.send(&queue, &delivery(session, 2).0, Some("32"), None)
            .await
            .expect("send");
        let got = poll_queue(q, session).await.expect("the readable events");
        assert_eq!(got, vec![event], "up to the unreadable delivery");
        assert_eq!(
            q.queue_depth(&queue).await.expect("depth"),
            (0, 2),
            "(visible, in flight): the first deleted, the others come again in order"
        );
    }
}
