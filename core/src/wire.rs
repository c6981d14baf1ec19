//! The serde types that travel between client, host and stages (all JSON on the wire).
//!
//! One format for every platform: the bundled host, Spin and wasmCloud pass these bodies over
//! `wasi:http` unchanged. Binary payloads are base64 strings.

use crate::acl::{Acl, Id};
use crate::{CreateMode, SessionId, Stat, ZkError, Zxid};
use serde::{Deserialize, Serialize};

/// Binary data as a base64 string in JSON.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserializer, Serializer};

    /// Serialize bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Deserialize base64 into bytes, refusing anything that is not base64. The text is
    /// decoded where the deserializer holds it (JSON without escapes: in the input), not
    /// copied into a `String` first.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(Base64Visitor)
    }

    struct Base64Visitor;

    impl serde::de::Visitor<'_> for Base64Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a base64 string")
        }

        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
            STANDARD.decode(s.as_bytes()).map_err(E::custom)
        }
    }
}

/// One client request, as a session issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The issuing session.
    pub session: SessionId,
    /// The session's request counter: strictly increasing, used for FIFO and dedup.
    pub seq: i64,
    /// What to do.
    pub op: Op,
}

/// The operations that go through the ordered pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Start a session; `notify` is where its results and events are delivered.
    OpenSession {
        /// Requested session timeout.
        timeout_ms: i32,
        /// Delivery address of the session's channel.
        notify: String,
        /// Where its deliveries go once `notify` cannot be reached (a client's own
        /// listener, with its session queue behind it): from then on, for good, so that
        /// nothing the session gets overtakes what is waiting there (Guarantee 4).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<String>,
    },
    /// End a session; its ephemeral nodes are deleted.
    CloseSession,
    /// Create a node.
    Create {
        /// Path (the prefix, for sequential nodes).
        path: String,
        /// Payload.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Create mode.
        mode: CreateMode,
        /// The node's ACL; none means `world:anyone` with all permissions. An empty list is
        /// `InvalidACL`, as in ZooKeeper.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acl: Option<Vec<Acl>>,
    },
    /// Replace a node's data if `version` matches (-1: any).
    SetData {
        /// Path.
        path: String,
        /// New payload.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// Delete a node if `version` matches (-1: any).
    Delete {
        /// Path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// Read data through the pipeline, optionally leaving a data watch.
    GetData {
        /// Path.
        path: String,
        /// Leave a one-shot data watch.
        watch: bool,
    },
    /// Read the stat through the pipeline, optionally leaving an exists watch.
    Exists {
        /// Path.
        path: String,
        /// Leave a one-shot exists watch (also on a missing node).
        watch: bool,
    },
    /// List children through the pipeline, optionally leaving a child watch.
    GetChildren {
        /// Path.
        path: String,
        /// Leave a one-shot child watch.
        watch: bool,
    },
    /// Several writes applied all-or-nothing at one zxid (ZooKeeper's `multi`).
    Multi {
        /// The sub-ops, applied in order.
        ops: Vec<MultiOp>,
    },
    /// Re-arm watches after a reconnect (ZooKeeper's `setWatches`): for each path, fire at
    /// once if it changed after `relative_zxid` (the last zxid the client saw), else leave
    /// the watch.
    SetWatches {
        /// Last zxid the client saw.
        relative_zxid: i64,
        /// Data watches.
        data: Vec<String>,
        /// Exists watches (on nodes that did not exist).
        exist: Vec<String>,
        /// Child watches.
        child: Vec<String>,
    },
    /// The issuing session's ephemeral nodes (ZooKeeper's `getEphemerals`).
    GetEphemerals {
        /// Plain string prefix the paths must start with ("/" for all). It is not a path:
        /// "/a" also matches "/ab".
        prefix: String,
    },
    /// Number of descendants of a node, all levels, the node itself not counted
    /// (ZooKeeper's `getAllChildrenNumber`).
    GetAllChildrenNumber {
        /// Path.
        path: String,
    },
    /// Answered once every txn before it is applied and its events handed over, so the
    /// session has seen every change acknowledged anywhere before the sync (ZooKeeper's
    /// `sync`; Guarantees 3 and 4).
    Sync {
        /// Path (validated, otherwise only echoed).
        path: String,
    },
    /// Leave a persistent watch that stays after it fires (ZooKeeper 3.6+ `addWatch`). The
    /// node need not exist.
    AddWatch {
        /// Path.
        path: String,
        /// `PERSISTENT_RECURSIVE` (created, deleted and data-changed events of the node and
        /// every descendant) instead of `PERSISTENT` (every event of the node itself).
        recursive: bool,
    },
    /// Remove the session's watches of one kind on a path (ZooKeeper's `removeWatches`), or
    /// with `check_only` only ask whether there is one (`checkWatches`). `NoWatcher` when the
    /// session has no such watch there.
    RemoveWatches {
        /// Path.
        path: String,
        /// Which watches.
        kind: WatchKind,
        /// Only check, remove nothing (`checkWatches`).
        check_only: bool,
    },
    /// Replace a node's ACL if its `aversion` is `version` (-1: any); needs ADMIN on the node.
    SetAcl {
        /// Path.
        path: String,
        /// The new ACL (checked and expanded as a create's).
        acl: Vec<Acl>,
        /// Expected aversion, -1 for any.
        version: i32,
    },
    /// A node's ACL and stat; needs READ or ADMIN on the node (digest ids are shown as
    /// `user:x` without ADMIN).
    GetAcl {
        /// Path.
        path: String,
    },
    /// Authenticate the session (ZooKeeper's `addAuth`), e.g. scheme `digest` with
    /// `user:password`. This is what clients send; the writer turns it into
    /// [`Op::Authenticated`] before the log ([`to_log`]), so no password is ever stored.
    /// An unknown scheme is refused with `AuthFailed`.
    AddAuth {
        /// Scheme.
        scheme: String,
        /// Credentials.
        #[serde(with = "b64")]
        auth: Vec<u8>,
    },
    /// The log form of [`Op::AddAuth`]: the ids the credentials proved, added to the
    /// session's ids in session order, so every later request of the session is judged with
    /// them. Only the writer makes it; sent by a client it is `BadArguments`.
    Authenticated {
        /// Proved ids (none for an `ip` addAuth, which proves nothing here).
        ids: Vec<Id>,
    },
    /// Delete a TTL node that has expired (`crate::ttl::expired` at the txn's time), with the
    /// events of a delete; anything else is left alone. Only the service issues it, under
    /// [`crate::session::SERVICE_SESSION`] (ZooKeeper's `deleteContainer` from its
    /// `ContainerManager`); from a client session it is `BadArguments`.
    DeleteExpired {
        /// Path of the TTL node.
        path: String,
    },
}

/// Which watches a [`Op::RemoveWatches`] means: ZooKeeper's `Watcher.WatcherType`, with its
/// wire numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    /// One-shot child watches, left by `getChildren` (1).
    Children,
    /// One-shot data and exists watches, left by `getData` and `exists` (2).
    Data,
    /// Every watch of the session on the path, persistent ones included (3).
    Any,
    /// Persistent watches, left by `addWatch` in `PERSISTENT` mode (4).
    Persistent,
    /// Persistent recursive watches, left by `addWatch` in `PERSISTENT_RECURSIVE` mode (5).
    PersistentRecursive,
}

impl WatchKind {
    /// ZooKeeper's wire number.
    pub fn code(self) -> i32 {
        match self {
            WatchKind::Children => 1,
            WatchKind::Data => 2,
            WatchKind::Any => 3,
            WatchKind::Persistent => 4,
            WatchKind::PersistentRecursive => 5,
        }
    }

    /// The kind for a ZooKeeper wire number, if it is one.
    pub fn from_code(code: i32) -> Option<WatchKind> {
        Some(match code {
            1 => WatchKind::Children,
            2 => WatchKind::Data,
            3 => WatchKind::Any,
            4 => WatchKind::Persistent,
            5 => WatchKind::PersistentRecursive,
            _ => return None,
        })
    }
}

/// One write inside a [`Op::Multi`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MultiOp {
    /// As [`Op::Create`].
    Create {
        /// Path (prefix for sequential nodes).
        path: String,
        /// Payload.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Create mode.
        mode: CreateMode,
        /// As in [`Op::Create`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acl: Option<Vec<Acl>>,
    },
    /// As [`Op::Delete`].
    Delete {
        /// Path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// As [`Op::SetData`].
    SetData {
        /// Path.
        path: String,
        /// New payload.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// Fails the whole multi unless the node exists with this version (-1: any).
    Check {
        /// Path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
}

impl Op {
    /// The path the op names, if any. [`Op::GetEphemerals`] names none: its prefix is a
    /// string prefix, not a path.
    pub fn path(&self) -> Option<&str> {
        match self {
            Op::Create { path, .. }
            | Op::SetData { path, .. }
            | Op::Delete { path, .. }
            | Op::GetData { path, .. }
            | Op::Exists { path, .. }
            | Op::GetChildren { path, .. }
            | Op::GetAllChildrenNumber { path }
            | Op::Sync { path }
            | Op::AddWatch { path, .. }
            | Op::RemoveWatches { path, .. }
            | Op::SetAcl { path, .. }
            | Op::GetAcl { path }
            | Op::DeleteExpired { path } => Some(path),
            Op::OpenSession { .. }
            | Op::CloseSession
            | Op::SetWatches { .. }
            | Op::Multi { .. }
            | Op::AddAuth { .. }
            | Op::Authenticated { .. }
            | Op::GetEphemerals { .. } => None,
        }
    }

    /// The node data the op carries, in order: the data of a create or a set, or of each
    /// create and set of a multi.
    pub fn payloads(&self) -> Vec<&[u8]> {
        match self {
            Op::Create { data, .. } | Op::SetData { data, .. } => vec![data.as_slice()],
            Op::Multi { ops } => ops
                .iter()
                .filter_map(|o| match o {
                    MultiOp::Create { data, .. } | MultiOp::SetData { data, .. } => {
                        Some(data.as_slice())
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The payloads of [`Op::payloads`], to move out or fill in, in the same order.
    pub fn payloads_mut(&mut self) -> Vec<&mut Vec<u8>> {
        match self {
            Op::Create { data, .. } | Op::SetData { data, .. } => vec![data],
            Op::Multi { ops } => ops
                .iter_mut()
                .filter_map(|o| match o {
                    MultiOp::Create { data, .. } | MultiOp::SetData { data, .. } => Some(data),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// About how many bytes the op takes in a log record (its data, paths, names): an
    /// estimate for grouping txns into records, not a bound.
    pub fn log_size_hint(&self) -> usize {
        let payloads = self.payloads();
        let data: usize = payloads.iter().map(|d| d.len()).sum();
        let ops = match self {
            Op::Multi { ops } => ops.len(),
            _ => 1,
        };
        data + 4 * payloads.len() + ops * 160 + self.path().map_or(0, str::len)
    }
}

/// Stateless checks a writer makes before a request may enter the log: anything refused here
/// would be refused by the distributor too, so refusing early changes nothing observable.
pub fn precheck(op: &Op) -> Result<(), (ZkError, String)> {
    check_packet(op)?;
    match op {
        Op::Create {
            path, mode, acl, ..
        } => {
            mode.validate()
                .map_err(|e| (e, format!("TTL must be 1..={} ms", crate::ttl::MAX_TTL_MS)))?;
            // ZooKeeper judges the ACL before the rest of the path; an `auth` entry depends
            // on the session's ids, so such a create is judged whole by apply.
            let has_auth = match acl {
                Some(acl) if create_path_shaped(path) => {
                    crate::acl::check_shape(acl).map_err(|e| (e, format!("{path}: invalid ACL")))?
                }
                _ => false,
            };
            if has_auth {
                return Ok(());
            }
            crate::path::validate_create(path, mode.is_sequential())
                .map_err(|e| (ZkError::BadArguments, e.to_string()))
        }
        Op::SetAcl { path, acl, .. } => {
            crate::path::validate(path).map_err(|e| (ZkError::BadArguments, e.to_string()))?;
            crate::acl::check_shape(acl)
                .map(|_| ())
                .map_err(|e| (e, format!("{path}: invalid ACL")))
        }
        Op::AddAuth { scheme, auth } => crate::acl::authenticate(scheme, auth)
            .map(|_| ())
            .map_err(|e| (e, format!("no authentication scheme {scheme:?}"))),
        Op::Authenticated { .. } => Err((
            ZkError::BadArguments,
            "authenticated ids are recorded by the writer only".to_string(),
        )),
        Op::SetData { path, .. }
        | Op::Delete { path, .. }
        | Op::GetData { path, .. }
        | Op::Exists { path, .. }
        | Op::GetChildren { path, .. }
        | Op::GetAllChildrenNumber { path }
        | Op::Sync { path }
        | Op::AddWatch { path, .. }
        | Op::RemoveWatches { path, .. }
        | Op::GetAcl { path }
        | Op::DeleteExpired { path } => {
            crate::path::validate(path).map_err(|e| (ZkError::BadArguments, e.to_string()))
        }
        Op::GetEphemerals { prefix } => check_prefix(prefix),
        Op::OpenSession { timeout_ms, .. } if *timeout_ms <= 0 => Err((
            ZkError::BadArguments,
            format!("session timeout must be positive, got {timeout_ms}"),
        )),
        Op::SetWatches {
            data, exist, child, ..
        } => data
            .iter()
            .chain(exist)
            .chain(child)
            .try_for_each(|p| crate::path::validate(p))
            .map_err(|e| (ZkError::BadArguments, e.to_string())),
        // Paths and modes inside a multi are judged by apply, which fails the multi at that
        // op as ZooKeeper does; only the packet size is checked before the log.
        Op::Multi { .. } | Op::OpenSession { .. } | Op::CloseSession => Ok(()),
    }
}

/// Whether ZooKeeper gets as far as the ACL of a create with this path
/// (`PrepRequestProcessor.validatePathForCreate`: a `/` somewhere and no NUL); the path's
/// other rules are checked after the ACL.
pub(crate) fn create_path_shaped(path: &str) -> bool {
    path.contains('/') && !path.contains('\0')
}

/// The op as it enters the log: [`Op::AddAuth`] becomes [`Op::Authenticated`] (the ids its
/// credentials prove), so credentials never reach the log; anything else is unchanged.
/// Called by the writer after [`precheck`] accepted the op.
pub fn to_log(op: Op) -> Op {
    match op {
        Op::AddAuth { scheme, auth } => match crate::acl::authenticate(&scheme, &auth) {
            Ok(id) => Op::Authenticated {
                ids: id.into_iter().collect(),
            },
            // precheck refused it already; keep the refusal without the credentials.
            Err(_) => Op::AddAuth {
                scheme,
                auth: Vec::new(),
            },
        },
        other => other,
    }
}

/// Length of a jute string or buffer: a 4-byte length, then the bytes.
fn jute(bytes: usize) -> usize {
    4 + bytes
}

/// The jute length of an ACL vector: its length (4), then per entry perms (4), scheme, id.
/// No ACL counts as the open ACL `[world:anyone, ALL]` (27 bytes).
fn acl_len(acl: Option<&[Acl]>) -> usize {
    match acl {
        None => 4 + 4 + jute(5) + jute(6),
        Some(acl) => {
            4 + acl
                .iter()
                .map(|a| 4 + jute(a.scheme.len()) + jute(a.id.len()))
                .sum::<usize>()
        }
    }
}

/// Body of a create request: path, data, ACL, flags, and the TTL of `createTTL`.
fn create_body(path: &str, data: &[u8], mode: &CreateMode, acl: Option<&[Acl]>) -> usize {
    let ttl = if mode.ttl_ms().is_some() { 8 } else { 0 };
    jute(path.len()) + jute(data.len()) + acl_len(acl) + 4 + ttl
}

/// The length the op would have as a ZooKeeper request packet (xid, op code and body: what
/// its length prefix counts), with the open ACL on creates. ZooKeeper refuses packets above
/// [`crate::MAX_PACKET_LEN`], so this is what makes our limit the same as ZooKeeper's to the
/// byte, whichever way a request arrives. Ops with no ZooKeeper packet of their own count
/// their paths.
pub fn packet_len(op: &Op) -> usize {
    const HEADER: usize = 8;
    // Each multi op is preceded by a `MultiHeader` (type, done, err), and one more ends it.
    const MULTI_HEADER: usize = 4 + 1 + 4;
    HEADER
        + match op {
            Op::Create {
                path,
                data,
                mode,
                acl,
            } => create_body(path, data, mode, acl.as_deref()),
            Op::SetAcl { path, acl, .. } => jute(path.len()) + acl_len(Some(acl)) + 4,
            Op::GetAcl { path } => jute(path.len()),
            Op::AddAuth { scheme, auth } => 4 + jute(scheme.len()) + jute(auth.len()),
            Op::Authenticated { ids } => {
                4 + ids
                    .iter()
                    .map(|i| jute(i.scheme.len()) + jute(i.id.len()))
                    .sum::<usize>()
            }
            Op::SetData { path, data, .. } => jute(path.len()) + jute(data.len()) + 4,
            Op::Delete { path, .. } => jute(path.len()) + 4,
            Op::GetData { path, .. } | Op::Exists { path, .. } | Op::GetChildren { path, .. } => {
                jute(path.len()) + 1
            }
            Op::AddWatch { path, .. } | Op::RemoveWatches { path, .. } => jute(path.len()) + 4,
            Op::GetAllChildrenNumber { path } | Op::Sync { path } | Op::DeleteExpired { path } => {
                jute(path.len())
            }
            Op::GetEphemerals { prefix } => jute(prefix.len()),
            Op::SetWatches {
                data, exist, child, ..
            } => {
                let list = |l: &Vec<String>| 4 + l.iter().map(|p| jute(p.len())).sum::<usize>();
                8 + list(data) + list(exist) + list(child)
            }
            Op::Multi { ops } => {
                MULTI_HEADER
                    + ops
                        .iter()
                        .map(|o| {
                            MULTI_HEADER
                                + match o {
                                    MultiOp::Create {
                                        path,
                                        data,
                                        mode,
                                        acl,
                                    } => create_body(path, data, mode, acl.as_deref()),
                                    MultiOp::SetData { path, data, .. } => {
                                        jute(path.len()) + jute(data.len()) + 4
                                    }
                                    MultiOp::Delete { path, .. } | MultiOp::Check { path, .. } => {
                                        jute(path.len()) + 4
                                    }
                                }
                        })
                        .sum::<usize>()
            }
            Op::OpenSession { notify, .. } => jute(notify.len()),
            Op::CloseSession => 0,
        }
}

fn check_packet(op: &Op) -> Result<(), (ZkError, String)> {
    let len = packet_len(op);
    if len > crate::MAX_PACKET_LEN {
        Err((
            ZkError::BadArguments,
            format!(
                "request is {len} bytes as a ZooKeeper packet, more than the {} byte limit \
                 (jute.maxbuffer)",
                crate::MAX_PACKET_LEN
            ),
        ))
    } else {
        Ok(())
    }
}

/// The prefix of a [`Op::GetEphemerals`] is matched as a plain string (as ZooKeeper does), so
/// it is not validated as a path; it only has to look like the start of one.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), (ZkError, String)> {
    if prefix.starts_with('/') {
        Ok(())
    } else {
        Err((
            ZkError::BadArguments,
            format!("ephemerals prefix must start with /, got {prefix:?}"),
        ))
    }
}

/// A request placed in the log: what the distributor applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Log position.
    pub zxid: Zxid,
    /// Wall-clock time the writer stamped, used for ctime/mtime.
    pub time_ms: i64,
    /// The client's request.
    pub request: Request,
}

/// The record a writer stores under `txn/<id>`: the txns of one append, with consecutive
/// zxids, plus the id of the record before it in the chain.
///
/// One record holds several txns so that requests appended together are written, read and
/// deleted as one item: a store that bills per item and per started KiB (DynamoDB) bills
/// small txns together, not one unit each. Records written before this held one txn under
/// `txn`; they still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredLogEntry")]
pub struct LogEntry {
    /// Id of the previous record in the chain ("" before the first).
    pub prev: String,
    /// The txns, at least one, zxids ascending by one.
    pub txns: Vec<Txn>,
}

/// Most bytes (by [`Op::log_size_hint`]) a writer puts into one log record of several txns;
/// a txn larger than this gets a record of its own. Far below DynamoDB's 400 KB item limit,
/// so records are not spilled to S3.
pub const LOG_RECORD_BYTES: usize = 48 * 1024;

/// Both layouts of a log record, as stored.
#[derive(Deserialize)]
struct StoredLogEntry {
    prev: String,
    #[serde(default)]
    txn: Option<Txn>,
    #[serde(default)]
    txns: Vec<Txn>,
}

impl TryFrom<StoredLogEntry> for LogEntry {
    type Error = String;

    fn try_from(stored: StoredLogEntry) -> Result<Self, String> {
        let txns = match (stored.txn, stored.txns) {
            (Some(txn), txns) if txns.is_empty() => vec![txn],
            (None, txns) if !txns.is_empty() => txns,
            (Some(_), _) => return Err("log record has both txn and txns".into()),
            (None, _) => return Err("log record holds no txn".into()),
        };
        if txns
            .windows(2)
            .any(|w| w[0].zxid.checked_add(1) != Some(w[1].zxid))
        {
            return Err("log record's zxids are not consecutive".into());
        }
        Ok(LogEntry {
            prev: stored.prev,
            txns,
        })
    }
}

impl LogEntry {
    /// The zxid of its first txn.
    pub fn first_zxid(&self) -> Zxid {
        self.txns.first().map_or(0, |t| t.zxid)
    }

    /// The zxid of its last txn.
    pub fn last_zxid(&self) -> Zxid {
        self.txns.last().map_or(0, |t| t.zxid)
    }

    /// The node data of all its txns, in order ([`Op::payloads`] of each).
    pub fn payloads(&self) -> Vec<&[u8]> {
        self.txns
            .iter()
            .flat_map(|t| t.request.op.payloads())
            .collect()
    }
}

/// First bytes of a log record in the binary layout ([`encode_log_record`]). JSON starts
/// with `{` (or whitespace), so the layouts never look alike.
pub const LOG_RECORD_MAGIC: &[u8; 4] = b"FKL\x01";
/// First bytes of a write batch in the binary layout ([`encode_write_batch`]).
pub const WRITE_BATCH_MAGIC: &[u8; 4] = b"FKW\x01";
/// First bytes of a node record of the system bucket in the binary layout
/// (`apply::NodeRecord::record_bytes`).
pub const NODE_RECORD_MAGIC: &[u8; 4] = b"FKN\x01";

/// Why bytes are not a record in the layout they claim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramedError {
    /// The JSON (of a whole record, or of a binary record's header) does not decode.
    #[error("{0}")]
    Json(String),
    /// The binary layout is cut short, or has bytes after its last payload.
    #[error("{0}")]
    Layout(&'static str),
}

/// A value whose node data can be moved out of it and back, for the binary layout.
pub trait Framed: Serialize + serde::de::DeserializeOwned {
    /// Its payloads, in a fixed order.
    fn payload_slots(&mut self) -> Vec<&mut Vec<u8>>;
}

impl Framed for LogEntry {
    fn payload_slots(&mut self) -> Vec<&mut Vec<u8>> {
        self.txns
            .iter_mut()
            .flat_map(|t| t.request.op.payloads_mut())
            .collect()
    }
}

impl Framed for WriteBatch {
    fn payload_slots(&mut self) -> Vec<&mut Vec<u8>> {
        self.requests
            .iter_mut()
            .flat_map(|r| r.op.payloads_mut())
            .collect()
    }
}

/// The binary layout of a [`Framed`] value: `magic`; the length (`u32` LE) of a header, the
/// value in JSON with every payload left empty; then each payload, in
/// [`Framed::payload_slots`] order, as its length (`u32` LE) and its bytes.
///
/// Payloads are the bulk of most requests, and in JSON each is base64 in a string that is
/// escaped on the way in and parsed on the way out: a third larger, and CPU spent on every
/// hop (docs/benchmarks.md). Only the payloads change form: the header is the JSON as
/// before, so the types and their checks are the same in both layouts.
pub fn encode_framed<T: Framed>(magic: &[u8; 4], mut value: T) -> Result<Vec<u8>, FramedError> {
    let payloads: Vec<Vec<u8>> = value
        .payload_slots()
        .into_iter()
        .map(std::mem::take)
        .collect();
    let header = serde_json::to_vec(&value).map_err(|e| FramedError::Json(e.to_string()))?;
    let payloads: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    frame_parts(magic, &header, &payloads)
}

/// The binary layout from its parts: `header`, the JSON of a value whose payloads are left
/// empty, and the `payloads` in [`Framed::payload_slots`] order (for writers that make the
/// header from borrowed parts, without taking the payloads out of a value they own).
pub fn frame_parts(
    magic: &[u8; 4],
    header: &[u8],
    payloads: &[&[u8]],
) -> Result<Vec<u8>, FramedError> {
    let body: usize = payloads.iter().map(|p| 4 + p.len()).sum();
    let mut out = Vec::with_capacity(magic.len() + 4 + header.len() + body);
    out.extend_from_slice(magic);
    out.extend_from_slice(&frame_len(header.len())?.to_le_bytes());
    out.extend_from_slice(header);
    for payload in payloads {
        out.extend_from_slice(&frame_len(payload.len())?.to_le_bytes());
        out.extend_from_slice(payload);
    }
    Ok(out)
}

fn frame_len(len: usize) -> Result<u32, FramedError> {
    u32::try_from(len).map_err(|_| FramedError::Layout("a part over 4 GiB"))
}

/// A value in either layout: [`encode_framed`]'s (the bytes start with `magic`) or plain
/// JSON.
pub fn decode_framed<T: Framed>(magic: &[u8; 4], bytes: &[u8]) -> Result<T, FramedError> {
    let Some(rest) = bytes.strip_prefix(magic.as_slice()) else {
        return serde_json::from_slice(bytes).map_err(|e| FramedError::Json(e.to_string()));
    };
    let (header, mut rest) = take_part(rest)?;
    let mut value: T =
        serde_json::from_slice(header).map_err(|e| FramedError::Json(e.to_string()))?;
    for slot in value.payload_slots() {
        if !slot.is_empty() {
            return Err(FramedError::Layout("a payload inside the header"));
        }
        let (payload, after) = take_part(rest)?;
        slot.extend_from_slice(payload);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(FramedError::Layout("bytes after the last payload"));
    }
    Ok(value)
}

/// One length-prefixed part of a binary record, and what follows it.
fn take_part(bytes: &[u8]) -> Result<(&[u8], &[u8]), FramedError> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or(FramedError::Layout("cut short in a length"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(FramedError::Layout("cut short in a part"));
    }
    Ok(rest.split_at(len))
}

/// A log record as writers store it: [`encode_framed`] with [`LOG_RECORD_MAGIC`].
pub fn encode_log_record(entry: LogEntry) -> Result<Vec<u8>, FramedError> {
    encode_framed(LOG_RECORD_MAGIC, entry)
}

/// A stored log record, in either layout: binary ([`encode_log_record`]) or JSON (records
/// written before the binary layout).
pub fn decode_log_record(bytes: &[u8]) -> Result<LogEntry, FramedError> {
    decode_framed(LOG_RECORD_MAGIC, bytes)
}

/// A write batch as the bundled host sends it to the writer: [`encode_framed`] with
/// [`WRITE_BATCH_MAGIC`]. Clients of the HTTP API send JSON, which the writer reads too.
pub fn encode_write_batch(batch: WriteBatch) -> Result<Vec<u8>, FramedError> {
    encode_framed(WRITE_BATCH_MAGIC, batch)
}

/// A write batch in either layout.
pub fn decode_write_batch(bytes: &[u8]) -> Result<WriteBatch, FramedError> {
    decode_framed(WRITE_BATCH_MAGIC, bytes)
}

/// Split requests appended together into log records: consecutive runs whose
/// [`Op::log_size_hint`]s add up to at most [`LOG_RECORD_BYTES`] (a larger one alone).
/// Returns the length of each run.
pub fn log_record_lengths(ops: &[&Op]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let (mut n, mut bytes) = (0usize, 0usize);
    for op in ops {
        let size = op.log_size_hint();
        if n > 0 && bytes + size > LOG_RECORD_BYTES {
            lengths.push(n);
            (n, bytes) = (0, 0);
        }
        n += 1;
        bytes += size;
    }
    if n > 0 {
        lengths.push(n);
    }
    lengths
}

/// The value of `log/head`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    /// zxid of the newest txn (0: empty log).
    pub zxid: Zxid,
    /// Its id ("" for the empty log).
    pub id: String,
}

/// The outcome of one op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum OpResult {
    /// The session is open.
    SessionOpened {
        /// Negotiated timeout.
        timeout_ms: i32,
    },
    /// The session is closed.
    SessionClosed,
    /// A node was created.
    Created {
        /// Actual path (with the sequence suffix for sequential nodes).
        path: String,
        /// Its stat.
        stat: Stat,
    },
    /// Data was set; the new stat.
    Stat {
        /// The node's stat after the change.
        stat: Stat,
    },
    /// The node was deleted.
    Deleted,
    /// Node data and stat.
    Data {
        /// Payload.
        #[serde(with = "b64")]
        data: Vec<u8>,
        /// Stat.
        stat: Stat,
    },
    /// Result of `exists`.
    Exists {
        /// The stat, or none when the node does not exist.
        stat: Option<Stat>,
    },
    /// Sorted child names and the node's stat.
    Children {
        /// Child names.
        children: Vec<String>,
        /// Stat.
        stat: Stat,
    },
    /// Watches were re-armed (events for what changed meanwhile follow).
    WatchesSet,
    /// A `check` inside a multi held.
    Checked,
    /// Result of [`Op::GetEphemerals`].
    Ephemerals {
        /// The session's ephemeral node paths matching the prefix, sorted.
        paths: Vec<String>,
    },
    /// Result of [`Op::GetAllChildrenNumber`].
    AllChildrenNumber {
        /// Number of descendants, all levels.
        total: i32,
    },
    /// A node's ACL ([`Op::GetAcl`]).
    Acl {
        /// The entries.
        acl: Vec<Acl>,
        /// The node's stat.
        stat: Stat,
    },
    /// The session's ids now include what [`Op::AddAuth`] proved.
    AuthAdded,
    /// A persistent watch was left ([`Op::AddWatch`]).
    WatchAdded,
    /// Watches were removed, or with `check_only` found ([`Op::RemoveWatches`]).
    WatchesRemoved,
    /// A sync completed.
    Synced {
        /// The path the sync named.
        path: String,
    },
    /// Every op of a multi took effect; one result per op.
    Multi {
        /// Results in op order.
        results: Vec<OpResult>,
    },
    /// A multi changed nothing because op `index` failed with `error`.
    MultiFailed {
        /// Index of the failing op.
        index: usize,
        /// Its error.
        error: ZkError,
        /// Detail.
        message: String,
    },
    /// The op failed with a ZooKeeper error.
    Error {
        /// The code.
        error: ZkError,
        /// Human detail.
        message: String,
    },
}

/// The per-op codes ZooKeeper reports for a multi of `ops` ops whose op `index` failed with
/// `error`: 0 for the ops before it (rolled back), its code, then `RuntimeInconsistency`.
pub fn multi_failure_codes(ops: usize, index: usize, error: ZkError) -> Vec<i32> {
    (0..ops)
        .map(|i| match i.cmp(&index) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Equal => error.code(),
            std::cmp::Ordering::Greater => ZkError::RuntimeInconsistency.code(),
        })
        .collect()
}

impl OpResult {
    /// An error result.
    pub fn error(error: ZkError, message: impl Into<String>) -> OpResult {
        OpResult::Error {
            error,
            message: message.into(),
        }
    }
}

/// ZooKeeper's watch event types, with their wire numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// 1
    NodeCreated,
    /// 2
    NodeDeleted,
    /// 3
    NodeDataChanged,
    /// 4
    NodeChildrenChanged,
}

impl EventType {
    /// ZooKeeper's trigger table: data and exists watches fire on everything but a change
    /// of the children.
    pub fn fires_data_watch(self) -> bool {
        self != EventType::NodeChildrenChanged
    }

    /// Child watches fire when the children change or the node goes.
    pub fn fires_child_watch(self) -> bool {
        matches!(
            self,
            EventType::NodeChildrenChanged | EventType::NodeDeleted
        )
    }

    /// Persistent-recursive watches fire on every event of the node or a descendant except
    /// a change of the children.
    pub fn fires_recursive_watch(self) -> bool {
        self != EventType::NodeChildrenChanged
    }

    /// ZooKeeper's wire number.
    pub fn code(self) -> i32 {
        match self {
            EventType::NodeCreated => 1,
            EventType::NodeDeleted => 2,
            EventType::NodeDataChanged => 3,
            EventType::NodeChildrenChanged => 4,
        }
    }
}

/// A fired watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventType,
    /// Where.
    pub path: String,
    /// The txn that caused it.
    pub zxid: Zxid,
}

/// What a session receives on its channel, in zxid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// The result of one of the session's requests.
    Result {
        /// The request's seq.
        seq: i64,
        /// zxid at which it took effect.
        zxid: Zxid,
        /// The outcome.
        result: OpResult,
    },
    /// A watch fired.
    Watch {
        /// The event.
        event: WatchEvent,
    },
}

/// Events for one session, as the distributor hands them to the watch stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The session.
    pub session: SessionId,
    /// Its delivery address.
    pub notify: String,
    /// Where the watch stage delivers when `notify` cannot be reached (see
    /// `Op::OpenSession`); naming the session in its answer's [`HandOver::fell_back`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Events in zxid order.
    pub events: Vec<SessionEvent>,
}

/// Path, under a hub's origin, that takes many sessions' deliveries in one POST (a
/// [`DeliveryBatch`] body, a [`DeliveryReceipt`] answer).
pub const HUB_BATCH_PATH: &str = "/v1/deliveries";

/// The origin of the hub behind a delivery address, if it is one: addresses of the form
/// `<origin>/v1/sessions/<session>/deliver` (the bundled host's session hub) belong to a hub
/// that also serves [`HUB_BATCH_PATH`]. `None` for any other address.
pub fn hub_origin(notify: &str, session: SessionId) -> Option<&str> {
    let rest = notify.strip_suffix("/deliver")?;
    let (origin, id) = rest.rsplit_once("/v1/sessions/")?;
    (id.parse::<SessionId>().ok()? == session && !origin.is_empty()).then_some(origin)
}

/// The watch stage's answer to the distributor when it took a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandOver {
    /// Deliveries made.
    #[serde(default)]
    pub delivered: usize,
    /// Sessions whose channel is gone (nothing to retry).
    #[serde(default)]
    pub failed: usize,
    /// Sessions delivered at their fallback address because their own could not be
    /// reached: the distributor moves them there for good before anything later is
    /// delivered ([`crate::apply::SessionRecord::fall_back`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fell_back: Vec<SessionId>,
}

/// The path at which a client's own listener takes `session`'s deliveries (a delivery
/// address with a fallback, `Op::OpenSession`): `secret` (16 to 64 letters and digits) makes
/// it known to the service alone.
pub fn listener_path(session: SessionId, secret: &str) -> String {
    format!("/v1/sessions/{session}/{secret}/deliver")
}

/// Whether `path` is a [`listener_path`] of `session`, with a secret of the right shape.
pub fn is_listener_path(path: &str, session: SessionId) -> bool {
    let Some(secret) = path
        .strip_prefix(&format!("/v1/sessions/{session}/"))
        .and_then(|r| r.strip_suffix("/deliver"))
    else {
        return false;
    };
    (16..=64).contains(&secret.len()) && secret.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A hub's answer to a batch of deliveries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReceipt {
    /// Deliveries queued.
    pub delivered: usize,
    /// Sessions the hub has no channel for (closed clients): nothing to retry.
    #[serde(default)]
    pub gone: Vec<SessionId>,
}

/// Body of a call to the writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBatch {
    /// Requests, in the order they are to enter the log.
    pub requests: Vec<Request>,
}

/// The writer's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Submission {
    /// In the log at this zxid; the result follows on the session's channel.
    Appended {
        /// seq of the request.
        seq: i64,
        /// Log position.
        zxid: Zxid,
    },
    /// Refused before entering the log; nothing changed.
    Rejected {
        /// seq of the request.
        seq: i64,
        /// The code.
        error: ZkError,
        /// Why.
        message: String,
    },
}

/// Body of a call to the watch stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryBatch {
    /// One entry per session.
    pub deliveries: Vec<Delivery>,
}

/// The user-visible object of a node in the user bucket (what clients read directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Payload.
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    /// Stat.
    pub stat: Stat,
    /// Sorted child names.
    pub children: Vec<String>,
    /// The node's ACL in [`crate::acl::stored`] form: empty (and left out of the JSON) when
    /// it is `world:anyone` with all permissions. Whoever serves reads checks READ against it
    /// and strips it from the answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<Acl>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_txn(zxid: Zxid, data: Vec<u8>) -> Txn {
        Txn {
            zxid,
            time_ms: 1,
            request: Request {
                session: 2,
                seq: zxid,
                op: Op::SetData {
                    path: "/a".into(),
                    data,
                    version: -1,
                },
            },
        }
    }

    #[test]
    fn log_records_read_in_both_layouts_and_refuse_gaps() {
        let one = set_txn(7, b"x".to_vec());
        let old = serde_json::json!({ "prev": "p", "txn": one }).to_string();
        let entry: LogEntry = serde_json::from_str(&old).expect("old layout");
        assert_eq!(entry.txns, vec![one.clone()]);
        assert_eq!((entry.first_zxid(), entry.last_zxid()), (7, 7));

        let two = set_txn(8, b"yz".to_vec());
        let record = LogEntry {
            prev: "p".into(),
            txns: vec![one.clone(), two.clone()],
        };
        let json = serde_json::to_string(&record).expect("encode");
        assert!(!json.contains("\"txn\""), "{json}");
        let back: LogEntry = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, record);
        assert_eq!((back.first_zxid(), back.last_zxid()), (7, 8));
        assert_eq!(back.payloads(), vec![b"x".as_slice(), b"yz".as_slice()]);

        let gap = serde_json::json!({ "prev": "p", "txns": [one, set_txn(9, vec![])] });
        let err = serde_json::from_value::<LogEntry>(gap).expect_err("a gap");
        assert!(err.to_string().contains("not consecutive"), "{err}");
        let empty = serde_json::json!({ "prev": "p", "txns": [] });
        assert!(serde_json::from_value::<LogEntry>(empty).is_err());
        let both = serde_json::json!({ "prev": "p", "txn": two, "txns": [two] });
        assert!(serde_json::from_value::<LogEntry>(both).is_err());
        let overflow = serde_json::json!({ "prev": "p", "txns": [set_txn(i64::MAX, vec![]), set_txn(i64::MIN, vec![])] });
        assert!(serde_json::from_value::<LogEntry>(overflow).is_err());
    }

    #[test]
    fn log_records_round_trip_in_the_binary_layout_and_json_ones_still_read() {
        let multi = Txn {
            zxid: 3,
            time_ms: 1,
            request: Request {
                session: 2,
                seq: 3,
                op: Op::Multi {
                    ops: vec![
                        MultiOp::Create {
                            path: "/m".into(),
                            data: b"created".to_vec(),
                            mode: CreateMode::Persistent,
                            acl: None,
                        },
                        MultiOp::Delete {
                            path: "/gone".into(),
                            version: -1,
                        },
                        MultiOp::SetData {
                            path: "/m".into(),
                            data: vec![0, 255, b'"', b'\\'],
                            version: 0,
                        },
                    ],
                },
            },
        };
        let entry = LogEntry {
            prev: "p".into(),
            txns: vec![set_txn(1, vec![7; 1024]), set_txn(2, Vec::new()), multi],
        };
        let bytes = encode_log_record(entry.clone()).expect("encode");
        assert!(bytes.starts_with(LOG_RECORD_MAGIC));
        assert_eq!(decode_log_record(&bytes), Ok(entry.clone()));
        // The payloads are stored as they are, not in base64 inside the JSON.
        assert!(bytes.len() < serde_json::to_vec(&entry).expect("json").len());
        // A record a writer stored as JSON reads the same.
        let json = serde_json::to_vec(&entry).expect("json");
        assert_eq!(decode_log_record(&json), Ok(entry.clone()));

        // Damaged records are refused, whatever is cut or added.
        for cut in 0..bytes.len() {
            assert!(decode_log_record(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_log_record(&longer),
            Err(FramedError::Layout("bytes after the last payload"))
        );
        // A header that holds a payload itself is not what a writer stores.
        let header = serde_json::to_vec(&LogEntry {
            prev: "p".into(),
            txns: vec![set_txn(1, b"inline".to_vec())],
        })
        .expect("json");
        let mut odd = LOG_RECORD_MAGIC.to_vec();
        odd.extend_from_slice(&(header.len() as u32).to_le_bytes());
        odd.extend_from_slice(&header);
        odd.extend_from_slice(&6u32.to_le_bytes());
        odd.extend_from_slice(b"inline");
        assert_eq!(
            decode_log_record(&odd),
            Err(FramedError::Layout("a payload inside the header"))
        );
        let mut garbage = LOG_RECORD_MAGIC.to_vec();
        garbage.extend_from_slice(&[3, 0, 0, 0, b'{', b'x', b'}']);
        assert!(matches!(
            decode_log_record(&garbage),
            Err(FramedError::Json(_))
        ));
    }

    #[test]
    fn write_batches_read_in_both_layouts() {
        let batch = WriteBatch {
            requests: vec![
                set_txn(1, vec![1, 2, 3]).request,
                Request {
                    session: 4,
                    seq: 1,
                    op: Op::Sync { path: "/".into() },
                },
                set_txn(2, Vec::new()).request,
            ],
        };
        let bytes = encode_write_batch(batch.clone()).expect("encode");
        assert!(bytes.starts_with(WRITE_BATCH_MAGIC));
        assert_eq!(decode_write_batch(&bytes), Ok(batch.clone()));
        let json = serde_json::to_vec(&batch).expect("json");
        assert_eq!(decode_write_batch(&json), Ok(batch));
        // A log record is not a write batch, nor the other way round.
        assert!(decode_log_record(&bytes).is_err());
        assert!(decode_write_batch(b"not json").is_err());
    }

    #[test]
    fn appended_requests_are_grouped_into_records_by_size() {
        let small = Op::SetData {
            path: "/a".into(),
            data: vec![0; 100],
            version: -1,
        };
        let big = Op::SetData {
            path: "/b".into(),
            data: vec![0; LOG_RECORD_BYTES],
            version: -1,
        };
        assert_eq!(log_record_lengths(&[]), Vec::<usize>::new());
        assert_eq!(log_record_lengths(&[&small; 10]), vec![10]);
        // A txn over the limit gets a record of its own; the others stay together.
        assert_eq!(
            log_record_lengths(&[&small, &small, &big, &small]),
            vec![2, 1, 1]
        );
        let many: Vec<&Op> = std::iter::repeat_n(&small, 1000).collect();
        let lengths = log_record_lengths(&many);
        assert_eq!(lengths.iter().sum::<usize>(), 1000);
        assert!(lengths.len() > 1, "{lengths:?}");
        assert!(
            lengths
                .iter()
                .all(|n| n * small.log_size_hint() <= LOG_RECORD_BYTES)
        );
    }

    #[test]
    fn request_round_trips_as_json() {
        let r = Request {
            session: 3,
            seq: 9,
            op: Op::Create {
                path: "/x".into(),
                data: vec![0, 1, 255],
                mode: CreateMode::EphemeralSequential,
                acl: None,
            },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert!(s.contains("\"AAH/\""), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).expect("parse"), r);
    }

    #[test]
    fn hub_origin_only_for_the_session_s_own_hub_address() {
        let url = "http://sessions.faaskeeper.internal/v1/sessions/42/deliver";
        assert_eq!(
            hub_origin(url, 42),
            Some("http://sessions.faaskeeper.internal")
        );
        assert_eq!(hub_origin(url, 43), None);
        assert_eq!(hub_origin("http://127.0.0.1:9000/events", 42), None);
        assert_eq!(hub_origin("http://faaskeeper-sqs.internal/q-42", 42), None);
        assert_eq!(hub_origin("/v1/sessions/42/deliver", 42), None);
        assert_eq!(hub_origin("http://h/v1/sessions/x42/deliver", 42), None);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(serde_json::from_str::<Request>("{\"session\":1}").is_err());
        assert!(
            serde_json::from_str::<Request>(
                r#"{"session":1,"seq":1,"op":{"op":"create","path":"/a","data":"@@","mode":"persistent"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn precheck_refuses_oversize_and_bad_paths() {
        // Measured on ZooKeeper 3.8.0: `setData("/x")` with 1,048,553 bytes is accepted
        // (packet 1,048,575 bytes), one byte more closes the connection.
        let set = |n| Op::SetData {
            path: "/x".into(),
            data: vec![0; n],
            version: -1,
        };
        assert_eq!(packet_len(&set(1_048_553)), crate::MAX_PACKET_LEN);
        assert!(precheck(&set(1_048_553)).is_ok());
        assert_eq!(
            precheck(&set(1_048_554)).unwrap_err().0,
            ZkError::BadArguments
        );
        let create = |n, mode| Op::Create {
            path: "/x".into(),
            data: vec![0; n],
            mode,
            acl: None,
        };
        // 8 + (4+2) + (4+n) + 27 + 4 (+ 8 for the TTL of createTTL), as the measured frames.
        assert_eq!(packet_len(&create(0, CreateMode::Persistent)), 49);
        assert_eq!(
            packet_len(&create(0, CreateMode::PersistentWithTtl { ttl_ms: 1 })),
            57
        );
        let bad_ttl = create(0, CreateMode::PersistentWithTtl { ttl_ms: 0 });
        assert_eq!(precheck(&bad_ttl).unwrap_err().0, ZkError::BadArguments);
        let bad = Op::Delete {
            path: "/a/".into(),
            version: -1,
        };
        assert!(precheck(&bad).is_err());
    }

    #[test]
    fn precheck_new_ops() {
        let bad = |op: &Op| precheck(op).map_err(|e| e.0);
        assert_eq!(
            bad(&Op::GetAllChildrenNumber { path: "x".into() }),
            Err(ZkError::BadArguments)
        );
        assert_eq!(
            bad(&Op::AddWatch {
                path: "/a//b".into(),
                recursive: true
            }),
            Err(ZkError::BadArguments)
        );
        assert_eq!(
            bad(&Op::RemoveWatches {
                path: "/a/".into(),
                kind: WatchKind::Any,
                check_only: false
            }),
            Err(ZkError::BadArguments)
        );
        assert_eq!(
            bad(&Op::GetEphemerals { prefix: "".into() }),
            Err(ZkError::BadArguments)
        );
        // A prefix is not a path: a trailing slash or a partial name is fine.
        assert_eq!(
            bad(&Op::GetEphemerals {
                prefix: "/a/".into()
            }),
            Ok(())
        );
        assert_eq!(bad(&Op::GetEphemerals { prefix: "/".into() }), Ok(()));
        assert_eq!(Op::GetEphemerals { prefix: "/".into() }.path(), None);
        assert_eq!(
            Op::AddWatch {
                path: "/w".into(),
                recursive: false
            }
            .path(),
            Some("/w")
        );
    }

    #[test]
    fn watch_kinds_and_new_ops_round_trip() {
        for k in [
            WatchKind::Children,
            WatchKind::Data,
            WatchKind::Any,
            WatchKind::Persistent,
            WatchKind::PersistentRecursive,
        ] {
            assert_eq!(WatchKind::from_code(k.code()), Some(k));
        }
        assert_eq!(WatchKind::from_code(0), None);
        assert_eq!(WatchKind::from_code(6), None);
        let op = Op::RemoveWatches {
            path: "/w".into(),
            kind: WatchKind::PersistentRecursive,
            check_only: true,
        };
        let s = serde_json::to_string(&op).expect("serialize");
        assert_eq!(
            s,
            r#"{"op":"remove_watches","path":"/w","kind":"persistent_recursive","check_only":true}"#
        );
        assert_eq!(serde_json::from_str::<Op>(&s).expect("parse"), op);
        let r = OpResult::AllChildrenNumber { total: 3 };
        let s = serde_json::to_string(&r).expect("serialize");
        assert_eq!(s, r#"{"result":"all_children_number","total":3}"#);
        assert_eq!(serde_json::from_str::<OpResult>(&s).expect("parse"), r);
    }
}
