//! # faaskeeper-client
//!
//! Async Rust client of FaaSKeeper over the bundled host's HTTP API (`docs/api.md`). Writes
//! (and reads that leave a watch) go through the ordered pipeline; plain reads go straight to
//! the user store. Results and watch events arrive on the session's channel, which a
//! background task long-polls.
//!
//! Guarantees the client keeps (DESIGN.md):
//! - **FIFO** (2): a session submits one request at a time to the writer, so the log holds
//!   them in issue order; callers may still pipeline by awaiting several futures at once.
//! - **Read-your-writes** (3): a write returns only when its result arrived, which the
//!   distributor sends after the user store holds the new node.
//! - **At-least-once delivery made exactly-once**: duplicated results and events are dropped.
//!
//! ## Example
//!
//! ```no_run
//! use faaskeeper_client::{Client, Options};
//! use faaskeeper_core::CreateMode;
//! # async fn run() -> Result<(), faaskeeper_client::Error> {
//! let client = Client::connect("http://127.0.0.1:8181", Options::default()).await?;
//! client.create("/a", b"hello", CreateMode::Persistent).await?;
//! let (data, stat, watch) = client.get_data_w("/a").await?;
//! assert_eq!(data, b"hello");
//! client.set_data("/a", b"x", stat.version).await?;
//! let event = watch.wait().await?;
//! println!("{:?} on {}", event.kind, event.path);
//! client.close().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

#[cfg(feature = "aws")]
pub mod aws;
pub mod recipes;
mod transport;
mod watches;

use faaskeeper_core::acl::Acl;
use faaskeeper_core::wire::{
    NodeView, Op, OpResult, SessionEvent, Submission, WatchEvent, WriteBatch,
};
use faaskeeper_core::{CreateMode, SessionId, Stat, ZkError, Zxid};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
pub use transport::LocalService;
use transport::Transport;
use watches::{WatchKind, Watchers};

pub use faaskeeper_core::wire::EventType;
pub use watches::{PersistentWatch, Watch};

/// Errors of client operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// ZooKeeper's answer (`NoNode`, `BadVersion`, ...).
    #[error("{code:?}: {message}")]
    Zk {
        /// The code.
        code: ZkError,
        /// Detail from the service.
        message: String,
    },
    /// The service could not be reached or answered with something unexpected.
    #[error("transport error: {0}")]
    Transport(String),
    /// No result within [`Options::request_timeout`]; the request may still take effect.
    #[error("request timed out")]
    Timeout,
}

impl Error {
    /// The ZooKeeper code, if this is a ZooKeeper answer.
    pub fn code(&self) -> Option<ZkError> {
        match self {
            Error::Zk { code, .. } => Some(*code),
            Error::Timeout => Some(ZkError::OperationTimeout),
            Error::Transport(_) => Some(ZkError::ConnectionLoss),
        }
    }

    fn zk(code: ZkError, message: impl Into<String>) -> Error {
        Error::Zk {
            code,
            message: message.into(),
        }
    }
}

/// Where a session stands; watch it with [`Client::session_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Open and reachable.
    Connected,
    /// Ended by the service (missed heartbeats) or its channel was lost.
    Expired,
    /// Closed by this client.
    Closed,
    /// [`Client::add_auth`] named a scheme the service does not know. As a ZooKeeper client
    /// does after `AuthFailed`, the client stops: every later request fails with
    /// `AuthFailed` and heartbeats stop, so the service expires the session.
    AuthFailed,
}

/// Session options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requested session timeout.
    pub session_timeout_ms: i32,
    /// How long an operation waits for its result.
    pub request_timeout: Duration,
    /// Ping the service every third of the session timeout in the background. A front end
    /// that relays another client's pings (the ZooKeeper gateway) turns this off and calls
    /// [`Client::heartbeat`] itself.
    pub auto_heartbeat: bool,
}

/// A node read straight from the store, as the session may see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRead {
    /// No node at the path.
    Missing,
    /// The node object (without its ACL).
    Node(NodeView),
    /// The session may not read the node (`NoAuth`); its stat, which ZooKeeper's `exists`
    /// shows to anyone.
    NoAuth(Stat),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            session_timeout_ms: 10_000,
            request_timeout: Duration::from_secs(30),
            auto_heartbeat: true,
        }
    }
}

type Pending = HashMap<i64, oneshot::Sender<Result<(Zxid, OpResult), Error>>>;
/// A request's result as its [`Pending`] sender hands it over.
type Arrived = Result<Result<(Zxid, OpResult), Error>, oneshot::error::RecvError>;

/// A callback that sees every watch event of the session, in order (see
/// [`Client::on_watch_event`]).
pub type WatchCallback = Box<dyn Fn(&WatchEvent) + Send + Sync>;

struct Inner {
    transport: Transport,
    session: SessionId,
    options: Options,
    /// Held while a request is handed to the writer: this is what keeps FIFO order.
    next_seq: tokio::sync::Mutex<i64>,
    pending: Mutex<Pending>,
    watchers: Mutex<Watchers>,
    expired: AtomicBool,
    /// Set when an `addAuth` failed: the session is unusable (see [`SessionState::AuthFailed`]).
    auth_failed: AtomicBool,
    timeout_ms: std::sync::atomic::AtomicI32,
    last_zxid: std::sync::atomic::AtomicI64,
    on_event: Mutex<Option<WatchCallback>>,
    on_expired: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    state: tokio::sync::watch::Sender<SessionState>,
}

/// A session with the service.
pub struct Client {
    inner: Arc<Inner>,
    poller: tokio::task::JoinHandle<()>,
    pinger: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
        if let Some(p) = &self.pinger {
            p.abort();
        }
    }
}

impl Inner {
    /// Stop waiting for the result of `seq`: drop its pending entry and any watch it left.
    fn forget(&self, seq: i64) {
        lock(&self.pending).remove(&seq);
        lock(&self.watchers).forget(seq);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another task panicked mid-update of plain maps; the data is
    // still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Client {
    /// Open a session at `url` (e.g. `http://127.0.0.1:8181`).
    pub async fn connect(url: &str, options: Options) -> Result<Client, Error> {
        let transport = Transport::Http(transport::HttpTransport::new(url)?);
        Client::open(transport, options).await
    }

    /// Open a session on a [`LocalService`]: the bundled host's API in this process (what
    /// the host's ZooKeeper gateway does), with no HTTP round trip.
    pub async fn connect_local(
        service: Arc<dyn LocalService>,
        options: Options,
    ) -> Result<Client, Error> {
        Client::open(Transport::Local(service), options).await
    }

    /// Open a session on an AWS deployment directly: writes go to its SQS writer queue,
    /// reads to its S3 bucket, and results and events come on a queue of this session's own
    /// (created now, deleted at [`Client::close`]). See [`aws`].
    #[cfg(feature = "aws")]
    pub async fn connect_aws(
        aws: &faaskeeper_backend_aws::AwsOptions,
        options: Options,
    ) -> Result<Client, Error> {
        Client::connect_aws_with(aws, options, &aws::Results::Queue).await
    }

    /// [`Client::connect_aws`], taking results and events as `results` says: on the
    /// session's queue, or at a listener of its own ([`aws::Results::Direct`]).
    #[cfg(feature = "aws")]
    pub async fn connect_aws_with(
        aws: &faaskeeper_backend_aws::AwsOptions,
        options: Options,
        results: &aws::Results,
    ) -> Result<Client, Error> {
        let transport = Transport::Aws(aws::AwsTransport::connect(aws, results).await?);
        Client::open(transport, options).await
    }

    async fn open(transport: Transport, options: Options) -> Result<Client, Error> {
        let session = transport.open_session(options.session_timeout_ms).await?;
        let (tx, rx) = oneshot::channel();
        let mut pending = Pending::new();
        pending.insert(0, tx);
        let inner = Arc::new(Inner {
            transport,
            session,
            options: options.clone(),
            next_seq: tokio::sync::Mutex::new(1),
            pending: Mutex::new(pending),
            watchers: Mutex::new(Watchers::default()),
            expired: AtomicBool::new(false),
            auth_failed: AtomicBool::new(false),
            timeout_ms: std::sync::atomic::AtomicI32::new(options.session_timeout_ms),
            last_zxid: std::sync::atomic::AtomicI64::new(0),
            on_event: Mutex::new(None),
            on_expired: Mutex::new(None),
            state: tokio::sync::watch::Sender::new(SessionState::Connected),
        });
        let poller = tokio::spawn(poll_loop(inner.clone()));
        let mut client = Client {
            inner,
            poller,
            pinger: None,
        };
        match tokio::time::timeout(options.request_timeout, rx).await {
            Ok(Ok(Ok((_, OpResult::SessionOpened { timeout_ms })))) => {
                client.inner.timeout_ms.store(timeout_ms, Ordering::SeqCst);
                if options.auto_heartbeat {
                    client.pinger = Some(tokio::spawn(ping_loop(client.inner.clone())));
                }
                Ok(client)
            }
            Ok(Ok(Ok((_, other)))) => Err(Error::Transport(format!("unexpected {other:?}"))),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Transport("session channel closed".into())),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// This session's id.
    pub fn session_id(&self) -> SessionId {
        self.inner.session
    }

    /// Tell the service this session is alive (done in the background unless
    /// [`Options::auto_heartbeat`] is off). A session silent for its timeout is expired:
    /// its ephemeral nodes go and its requests fail with `SessionExpired`.
    pub async fn heartbeat(&self) -> Result<(), Error> {
        self.inner.transport.heartbeat(self.inner.session).await
    }

    /// The session timeout the service granted.
    pub fn session_timeout_ms(&self) -> i32 {
        self.inner.timeout_ms.load(Ordering::SeqCst)
    }

    /// The highest zxid this session has seen in a result or event.
    pub fn last_zxid(&self) -> Zxid {
        self.inner.last_zxid.load(Ordering::SeqCst)
    }

    /// The session's state, as a channel that also tells of every change (connected →
    /// expired or closed).
    pub fn session_state(&self) -> tokio::sync::watch::Receiver<SessionState> {
        self.inner.state.subscribe()
    }

    /// Whether the session has ended (closed, expired or its channel lost).
    pub fn is_expired(&self) -> bool {
        self.inner.expired.load(Ordering::SeqCst)
    }

    /// Call `f` with every watch event of the session, in zxid order, before any later
    /// result is handed out, so that a caller relaying both (the ZooKeeper gateway) keeps
    /// ZooKeeper's order: an event reaches the client before a read that observed its change.
    pub fn on_watch_event(&self, f: WatchCallback) {
        *lock(&self.inner.on_event) = Some(f);
    }

    /// Call `f` once when the session ends for any reason other than [`Client::close`].
    pub fn on_expired(&self, f: Box<dyn FnOnce() + Send>) {
        *lock(&self.inner.on_expired) = Some(f);
    }

    /// Send any op through the pipeline and return its zxid and result as the distributor
    /// decided it, ZooKeeper errors included (`OpResult::Error`). This is the building block
    /// for protocol front ends; applications use the typed methods.
    pub async fn request(&self, op: Op) -> Result<(Zxid, OpResult), Error> {
        match self.submit(op, None).await {
            Ok((zxid, result, _)) => Ok((zxid, result)),
            Err(Error::Zk { code, message }) => Ok((
                self.last_zxid(),
                OpResult::Error {
                    error: code,
                    message,
                },
            )),
            Err(e) => Err(e),
        }
    }

    /// Send one op through the pipeline and wait for its result. `watch` is registered
    /// locally before sending, and armed only when the result arrives, so no event is lost
    /// and none from before the read is taken for ours.
    async fn submit(
        &self,
        op: Op,
        watch: Option<(WatchKind, String)>,
    ) -> Result<(Zxid, OpResult, Option<Watch>), Error> {
        if self.inner.auth_failed.load(Ordering::SeqCst) {
            return Err(Error::zk(ZkError::AuthFailed, "an earlier addAuth failed"));
        }
        if self.inner.expired.load(Ordering::SeqCst) {
            return Err(Error::zk(ZkError::SessionExpired, "session expired"));
        }
        let (outcome, watch, seq) = {
            let mut next = self.inner.next_seq.lock().await;
            let seq = *next;
            *next += 1;
            let (tx, mut rx) = oneshot::channel();
            lock(&self.inner.pending).insert(seq, tx);
            let watch = watch.map(|(kind, path)| lock(&self.inner.watchers).add(kind, &path, seq));
            let batch = WriteBatch {
                requests: vec![faaskeeper_core::wire::Request {
                    session: self.inner.session,
                    seq,
                    op,
                }],
            };
            // The result may come before the writer's answer (the distributor can apply the
            // request while the writer's invocation is still ending): it shows that the request
            // was appended, so the answer is not waited for then.
            let answer = tokio::select! {
                biased;
                answer = self.inner.transport.submit(self.inner.session, batch) => answer,
                result = &mut rx => return self.finish(Ok(result), watch, seq),
            };
            match answer {
                Ok(subs) => match subs.into_iter().next() {
                    Some(Submission::Appended { .. }) => {}
                    Some(Submission::Rejected { error, message, .. }) => {
                        self.inner.forget(seq);
                        return Err(Error::zk(error, message));
                    }
                    None => {
                        self.inner.forget(seq);
                        return Err(Error::Transport("writer answered nothing".into()));
                    }
                },
                Err(e) => {
                    self.inner.forget(seq);
                    if let Error::Zk {
                        code: ZkError::SessionExpired,
                        ..
                    } = e
                    {
                        self.inner.expired.store(true, Ordering::SeqCst);
                    }
                    return Err(e);
                }
            }
            let outcome = tokio::time::timeout(self.inner.options.request_timeout, rx);
            (outcome, watch, seq)
        };
        self.finish(outcome.await, watch, seq)
    }

    /// What [`Client::submit`] answers for request `seq`, given how waiting for its result
    /// ended (`Err`: the request timeout passed).
    fn finish(
        &self,
        outcome: Result<Arrived, tokio::time::error::Elapsed>,
        watch: Option<Watch>,
        seq: i64,
    ) -> Result<(Zxid, OpResult, Option<Watch>), Error> {
        match outcome {
            Ok(Ok(Ok((_, OpResult::Error { error, message })))) => Err(Error::zk(error, message)),
            Ok(Ok(Ok((zxid, result)))) => Ok((zxid, result, watch)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::zk(ZkError::SessionExpired, "session channel closed")),
            Err(_) => {
                self.inner.forget(seq);
                Err(Error::Timeout)
            }
        }
    }

    /// Create a node; returns its actual path (with the suffix, for sequential nodes).
    pub async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String, Error> {
        self.create2(path, data, mode).await.map(|(p, _)| p)
    }

    /// Create a node; returns its actual path and its stat.
    pub async fn create2(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<(String, Stat), Error> {
        self.create_op(path, data, mode, None).await
    }

    /// Create a node with an ACL (entries of scheme `world:anyone`, `digest` or `auth`; see
    /// [`faaskeeper_core::acl`]); returns its actual path and its stat. Needs CREATE on the
    /// parent; an empty or malformed list is `InvalidAcl`.
    pub async fn create_with_acl(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
        acl: &[Acl],
    ) -> Result<(String, Stat), Error> {
        self.create_op(path, data, mode, Some(acl.to_vec())).await
    }

    async fn create_op(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
        acl: Option<Vec<Acl>>,
    ) -> Result<(String, Stat), Error> {
        let op = Op::Create {
            path: path.to_string(),
            data: data.to_vec(),
            mode,
            acl,
        };
        match self.submit(op, None).await? {
            (_, OpResult::Created { path, stat }, _) => Ok((path, stat)),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Authenticate the session (ZooKeeper's `addAuth`), e.g. `add_auth("digest",
    /// b"alice:secret")`: every later request of the session, pipelined or not, is judged
    /// with the proved id. An unknown scheme fails with `AuthFailed` and leaves the client
    /// unusable ([`SessionState::AuthFailed`]), as ZooKeeper's clients are.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<(), Error> {
        let op = Op::AddAuth {
            scheme: scheme.to_string(),
            auth: auth.to_vec(),
        };
        match self.submit(op, None).await {
            Ok((_, OpResult::AuthAdded, _)) => Ok(()),
            Ok((_, other, _)) => Err(unexpected(other)),
            Err(e) => {
                if e.code() == Some(ZkError::AuthFailed) {
                    self.inner.auth_failed.store(true, Ordering::SeqCst);
                    self.inner.state.send_replace(SessionState::AuthFailed);
                    if let Some(p) = &self.pinger {
                        p.abort();
                    }
                }
                Err(e)
            }
        }
    }

    /// A node's ACL and stat. Needs READ or ADMIN on the node; without ADMIN, digest ids are
    /// shown as `user:x`.
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat), Error> {
        let op = Op::GetAcl {
            path: path.to_string(),
        };
        match self.submit(op, None).await? {
            (_, OpResult::Acl { acl, stat }, _) => Ok((acl, stat)),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Replace a node's ACL if its `aversion` is `version` (-1: any); returns the new stat.
    /// Needs ADMIN on the node.
    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: i32) -> Result<Stat, Error> {
        let op = Op::SetAcl {
            path: path.to_string(),
            acl: acl.to_vec(),
            version,
        };
        match self.submit(op, None).await? {
            (_, OpResult::Stat { stat }, _) => Ok(stat),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Replace a node's data if its version is `version` (-1: any); returns the new stat.
    pub async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat, Error> {
        let op = Op::SetData {
            path: path.to_string(),
            data: data.to_vec(),
            version,
        };
        match self.submit(op, None).await? {
            (_, OpResult::Stat { stat }, _) => Ok(stat),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Delete a node if its version is `version` (-1: any).
    pub async fn delete(&self, path: &str, version: i32) -> Result<(), Error> {
        let op = Op::Delete {
            path: path.to_string(),
            version,
        };
        match self.submit(op, None).await? {
            (_, OpResult::Deleted, _) => Ok(()),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Read a node straight from the user store. If this session has watches and the read
    /// saw a change it has not been told about yet, hold the answer until a sync through the
    /// pipeline has delivered every earlier event (Guarantee 4: no data newer than an event
    /// the session has not received).
    ///
    /// Nodes whose ACL does not let this session read come back as [`NodeRead::NoAuth`].
    async fn read(&self, path: &str) -> Result<NodeRead, Error> {
        faaskeeper_core::path::validate(path)
            .map_err(|e| Error::zk(ZkError::BadArguments, e.to_string()))?;
        if self.inner.auth_failed.load(Ordering::SeqCst) {
            return Err(Error::zk(ZkError::AuthFailed, "an earlier addAuth failed"));
        }
        let session = self.inner.session;
        let node = self.inner.transport.read_node(session, path).await?;
        let newest = match &node {
            NodeRead::Missing => None,
            NodeRead::Node(n) => Some(n.stat.newest_zxid()),
            NodeRead::NoAuth(stat) => Some(stat.newest_zxid()),
        };
        let told = newest.is_some_and(|z| z <= self.last_zxid());
        if !told && lock(&self.inner.watchers).has_any() {
            self.sync("/").await?;
        }
        Ok(node)
    }

    /// Wait until every write acknowledged anywhere before this call is applied and its
    /// events are delivered to this session (ZooKeeper's `sync`).
    pub async fn sync(&self, path: &str) -> Result<(), Error> {
        match self
            .submit(
                Op::Sync {
                    path: path.to_string(),
                },
                None,
            )
            .await?
        {
            (_, OpResult::Synced { .. }, _) => Ok(()),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Data and stat of a node (needs READ on it).
    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat), Error> {
        match self.read(path).await? {
            NodeRead::Node(n) => Ok((n.data, n.stat)),
            NodeRead::Missing => Err(Error::zk(ZkError::NoNode, path)),
            NodeRead::NoAuth(_) => Err(Error::zk(ZkError::NoAuth, path)),
        }
    }

    /// The stat of a node, or `None` if it does not exist (needs no permission, as in
    /// ZooKeeper).
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, Error> {
        Ok(match self.read(path).await? {
            NodeRead::Node(n) => Some(n.stat),
            NodeRead::NoAuth(stat) => Some(stat),
            NodeRead::Missing => None,
        })
    }

    /// Sorted child names of a node.
    pub async fn get_children(&self, path: &str) -> Result<Vec<String>, Error> {
        self.get_children2(path).await.map(|(c, _)| c)
    }

    /// Sorted child names and the stat of a node (needs READ on it).
    pub async fn get_children2(&self, path: &str) -> Result<(Vec<String>, Stat), Error> {
        match self.read(path).await? {
            NodeRead::Node(n) => Ok((n.children, n.stat)),
            NodeRead::Missing => Err(Error::zk(ZkError::NoNode, path)),
            NodeRead::NoAuth(_) => Err(Error::zk(ZkError::NoAuth, path)),
        }
    }

    /// Data and stat of a node, leaving a one-shot data watch (fires on change or delete).
    pub async fn get_data_w(&self, path: &str) -> Result<(Vec<u8>, Stat, Watch), Error> {
        let op = Op::GetData {
            path: path.to_string(),
            watch: true,
        };
        match self
            .submit(op, Some((WatchKind::Data, path.to_string())))
            .await?
        {
            (_, OpResult::Data { data, stat }, Some(w)) => Ok((data, stat, w)),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Stat of a node (or `None`), leaving a one-shot exists watch (fires on create, change
    /// or delete).
    pub async fn exists_w(&self, path: &str) -> Result<(Option<Stat>, Watch), Error> {
        let op = Op::Exists {
            path: path.to_string(),
            watch: true,
        };
        match self
            .submit(op, Some((WatchKind::Exists, path.to_string())))
            .await?
        {
            (_, OpResult::Exists { stat }, Some(w)) => Ok((stat, w)),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Children of a node, leaving a one-shot child watch (fires on a child's create or
    /// delete, or the node's delete).
    pub async fn get_children_w(&self, path: &str) -> Result<(Vec<String>, Stat, Watch), Error> {
        let op = Op::GetChildren {
            path: path.to_string(),
            watch: true,
        };
        match self
            .submit(op, Some((WatchKind::Child, path.to_string())))
            .await?
        {
            (_, OpResult::Children { children, stat }, Some(w)) => Ok((children, stat, w)),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Paths of this session's ephemeral nodes that start with `prefix`, sorted.
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let op = Op::GetEphemerals {
            prefix: prefix.to_string(),
        };
        match self.submit(op, None).await? {
            (_, OpResult::Ephemerals { paths }, _) => Ok(paths),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Number of descendants of a node (all levels).
    pub async fn get_all_children_number(&self, path: &str) -> Result<i32, Error> {
        let op = Op::GetAllChildrenNumber {
            path: path.to_string(),
        };
        match self.submit(op, None).await? {
            (_, OpResult::AllChildrenNumber { total }, _) => Ok(total),
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Leave a persistent watch on `path` (and, if `recursive`, on everything below it):
    /// every matching event arrives on the returned stream until the watch is removed.
    pub async fn add_watch(&self, path: &str, recursive: bool) -> Result<PersistentWatch, Error> {
        // Registered locally first so that no event after the registration is missed.
        let watch = lock(&self.inner.watchers).add_persistent(path, recursive);
        let op = Op::AddWatch {
            path: path.to_string(),
            recursive,
        };
        match self.submit(op, None).await {
            Ok((_, OpResult::WatchAdded, _)) => Ok(watch),
            Ok((_, other, _)) => Err(unexpected(other)),
            Err(e) => {
                lock(&self.inner.watchers).remove_persistent(path);
                Err(e)
            }
        }
    }

    /// Remove this session's watches of `kind` on `path` (`NoWatcher` if there is none).
    pub async fn remove_watches(
        &self,
        path: &str,
        kind: faaskeeper_core::wire::WatchKind,
    ) -> Result<(), Error> {
        let op = Op::RemoveWatches {
            path: path.to_string(),
            kind,
            check_only: false,
        };
        match self.submit(op, None).await? {
            (_, OpResult::WatchesRemoved, _) => {
                use faaskeeper_core::wire::WatchKind as K;
                if matches!(kind, K::Any | K::Persistent | K::PersistentRecursive) {
                    lock(&self.inner.watchers).remove_persistent(path);
                }
                Ok(())
            }
            (_, other, _) => Err(unexpected(other)),
        }
    }

    /// Apply several writes all-or-nothing at one zxid; one result per op. On failure
    /// nothing changed and the error names the failing op's index.
    pub async fn multi(
        &self,
        ops: Vec<faaskeeper_core::wire::MultiOp>,
    ) -> Result<Vec<OpResult>, Error> {
        match self.request(Op::Multi { ops }).await? {
            (_, OpResult::Multi { results }) => Ok(results),
            (
                _,
                OpResult::MultiFailed {
                    index,
                    error,
                    message,
                },
            ) => Err(Error::zk(error, format!("multi op {index}: {message}"))),
            (_, OpResult::Error { error, message }) => Err(Error::zk(error, message)),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Close the session: its ephemeral nodes are deleted before this returns.
    pub async fn close(self) -> Result<(), Error> {
        self.close_ref().await
    }

    /// [`Client::close`] for a shared client.
    pub async fn close_ref(&self) -> Result<(), Error> {
        lock(&self.inner.on_expired).take();
        let r = self.submit(Op::CloseSession, None).await;
        self.inner.state.send_replace(SessionState::Closed);
        let _ = self.inner.transport.close(self.inner.session).await;
        match r {
            Ok((_, OpResult::SessionClosed, _)) => Ok(()),
            Ok((_, other, _)) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }
}

fn unexpected(r: OpResult) -> Error {
    Error::Transport(format!("unexpected result {r:?}"))
}

/// Ping every third of the session timeout, as ZooKeeper clients do.
async fn ping_loop(inner: Arc<Inner>) {
    loop {
        let period = (inner.timeout_ms.load(Ordering::SeqCst).max(300) / 3) as u64;
        tokio::time::sleep(Duration::from_millis(period)).await;
        if inner.expired.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = inner.transport.heartbeat(inner.session).await {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }
}

/// Long-poll the session channel and dispatch results and events in order.
async fn poll_loop(inner: Arc<Inner>) {
    let mut after = 0u64;
    let mut failures = 0u32;
    loop {
        match inner.transport.poll(inner.session, after).await {
            Ok(events) => {
                failures = 0;
                for (index, event) in events {
                    after = after.max(index + 1);
                    dispatch(&inner, event);
                }
                // Nothing comes for an expired session: polling on would only cost requests
                // (a long poll every 20 s on a session queue) for as long as the client lives.
                if inner.expired.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(Error::Zk {
                code: ZkError::SessionExpired,
                ..
            }) => break,
            Err(e) => {
                failures += 1;
                tracing::debug!(error = %e, "poll failed");
                if failures > 50 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    inner.expired.store(true, Ordering::SeqCst);
    if let Some(f) = lock(&inner.on_expired).take() {
        f();
    }
    for (_, tx) in lock(&inner.pending).drain() {
        let _ = tx.send(Err(Error::zk(
            ZkError::SessionExpired,
            "session channel is gone",
        )));
    }
    lock(&inner.watchers).clear();
}

fn dispatch(inner: &Inner, event: SessionEvent) {
    match event {
        SessionEvent::Result { seq, .. } if seq == faaskeeper_core::session::EXPIRE_SEQ => {
            // The heartbeat stage expired this session (Guarantee 5).
            inner.expired.store(true, Ordering::SeqCst);
            inner.state.send_replace(SessionState::Expired);
            if let Some(f) = lock(&inner.on_expired).take() {
                f();
            }
            for (_, tx) in lock(&inner.pending).drain() {
                let _ = tx.send(Err(Error::zk(ZkError::SessionExpired, "session expired")));
            }
            lock(&inner.watchers).clear();
        }
        SessionEvent::Result { seq, zxid, result } => {
            inner.last_zxid.fetch_max(zxid, Ordering::SeqCst);
            let ok = !matches!(result, OpResult::Error { .. });
            // Arm (or drop) this request's watch before anything later is dispatched.
            lock(&inner.watchers).settle(seq, ok);
            if let Some(tx) = lock(&inner.pending).remove(&seq) {
                let _ = tx.send(Ok((zxid, result)));
            }
        }
        SessionEvent::Watch { event } => {
            inner.last_zxid.fetch_max(event.zxid, Ordering::SeqCst);
            let fresh = lock(&inner.watchers).fire(event.clone());
            if fresh && let Some(f) = lock(&inner.on_event).as_ref() {
                f(&event);
            }
        }
    }
}

impl Watch {
    /// Wait for the event.
    pub async fn wait(self) -> Result<WatchEvent, Error> {
        self.rx.await.map_err(|_| {
            Error::zk(
                ZkError::SessionExpired,
                "session ended before the watch fired",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How a [`Scripted`] service answers; every one opens session 7.
    enum Script {
        /// Appends every request, but never delivers a result.
        Unanswering,
        /// Never answers a submission, while each request's result arrives on the session's
        /// channel (the distributor applied it while the writer's invocation was still
        /// ending).
        ResultBeforeAnswer {
            tx: tokio::sync::mpsc::UnboundedSender<SessionEvent>,
            results: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<SessionEvent>>,
        },
        /// Expires the session at its first poll after the open.
        Expiring,
    }

    /// A service in process that follows its script, counting polls.
    struct Scripted {
        script: Script,
        polls: std::sync::atomic::AtomicUsize,
    }

    impl Scripted {
        fn new(script: Script) -> Arc<Scripted> {
            Arc::new(Scripted {
                script,
                polls: std::sync::atomic::AtomicUsize::new(0),
            })
        }
    }

    #[async_trait::async_trait]
    impl LocalService for Scripted {
        async fn open_session(&self, _: i32) -> Result<SessionId, Error> {
            Ok(7)
        }

        async fn submit(&self, _: SessionId, batch: WriteBatch) -> Result<Vec<Submission>, Error> {
            match &self.script {
                Script::Unanswering => Ok(batch
                    .requests
                    .iter()
                    .map(|r| Submission::Appended {
                        seq: r.seq,
                        zxid: 1,
                    })
                    .collect()),
                Script::ResultBeforeAnswer { tx, .. } => {
                    for r in &batch.requests {
                        let _ = tx.send(SessionEvent::Result {
                            seq: r.seq,
                            zxid: 5,
                            result: OpResult::Deleted,
                        });
                    }
                    std::future::pending().await
                }
                Script::Expiring => Err(Error::Transport("not in this script".into())),
            }
        }

        async fn heartbeat(&self, _: SessionId) -> Result<(), Error> {
            Ok(())
        }

        async fn close(&self, _: SessionId) -> Result<(), Error> {
            Ok(())
        }

        async fn read_node(&self, _: SessionId, _: &str) -> Result<NodeRead, Error> {
            Ok(NodeRead::Missing)
        }

        async fn poll(
            &self,
            _: SessionId,
            after: u64,
            wait: Duration,
        ) -> Result<Vec<(u64, SessionEvent)>, Error> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if after == 0 {
                let result = OpResult::SessionOpened { timeout_ms: 10_000 };
                let opened = SessionEvent::Result {
                    seq: 0,
                    zxid: 1,
                    result,
                };
                return Ok(vec![(0, opened)]);
            }
            match &self.script {
                Script::Unanswering => {
                    tokio::time::sleep(wait).await;
                    Ok(Vec::new())
                }
                Script::ResultBeforeAnswer { results, .. } => {
                    let mut results = results.lock().await;
                    match tokio::time::timeout(wait, results.recv()).await {
                        Ok(Some(event)) => Ok(vec![(after, event)]),
                        _ => Ok(Vec::new()),
                    }
                }
                Script::Expiring => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let expired = SessionEvent::Result {
                        seq: faaskeeper_core::session::EXPIRE_SEQ,
                        zxid: 1,
                        result: OpResult::SessionClosed,
                    };
                    Ok(vec![(after, expired)])
                }
            }
        }
    }

    fn options(request_timeout: Duration) -> Options {
        Options {
            request_timeout,
            auto_heartbeat: false,
            ..Options::default()
        }
    }

    #[tokio::test]
    async fn a_timed_out_request_leaves_no_pending_entry_or_watch() {
        let service = Scripted::new(Script::Unanswering);
        let client = Client::connect_local(service, options(Duration::from_millis(200)))
            .await
            .expect("open");
        let got = client.get_data_w("/a").await;
        assert!(matches!(got, Err(Error::Timeout)), "{got:?}");
        assert!(
            lock(&client.inner.pending).is_empty(),
            "the timed-out request is still pending"
        );
        assert!(
            !lock(&client.inner.watchers).has_any(),
            "the timed-out read's watch is still registered"
        );
    }

    #[tokio::test]
    async fn a_result_that_comes_before_the_writers_answer_is_returned() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let service = Scripted::new(Script::ResultBeforeAnswer {
            tx,
            results: tokio::sync::Mutex::new(rx),
        });
        let client = Client::connect_local(service, options(Duration::from_secs(5)))
            .await
            .expect("open");
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(10), client.delete("/a", -1))
                .await
                .expect("answered without the writer's answer")
                .expect("the result is the answer");
        }
        assert_eq!(client.last_zxid(), 5);
        assert!(lock(&client.inner.pending).is_empty());
    }

    #[tokio::test]
    async fn an_expired_session_stops_polling() {
        let service = Scripted::new(Script::Expiring);
        let client = Client::connect_local(service.clone(), options(Duration::from_secs(5)))
            .await
            .expect("open");
        let mut state = client.session_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == SessionState::Expired),
        )
        .await
        .expect("expired in time")
        .expect("state");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let polls = service.polls.load(Ordering::SeqCst);
        assert!(
            polls <= 3,
            "{polls} polls: the session kept polling after it expired"
        );
    }
}
