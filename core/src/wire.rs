//! The serde types that travel between client, host and stages (all JSON on the wire).
//!
//! One format for every platform: the bundled host, Spin and wasmCloud pass these bodies over
//! `wasi:http` unchanged. Binary payloads are base64 strings.

use crate::{CreateMode, SessionId, Stat, ZkError, Zxid};
use serde::{Deserialize, Serialize};

/// Binary data as a base64 string in JSON.
pub mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize bytes as base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Deserialize base64 into bytes, refusing anything that is not base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
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
            | Op::RemoveWatches { path, .. } => Some(path),
            Op::OpenSession { .. }
            | Op::CloseSession
            | Op::SetWatches { .. }
            | Op::Multi { .. }
            | Op::GetEphemerals { .. } => None,
        }
    }
}

/// Stateless checks a writer makes before a request may enter the log: anything refused here
/// would be refused by the distributor too, so refusing early changes nothing observable.
pub fn precheck(op: &Op) -> Result<(), (ZkError, String)> {
    match op {
        Op::Create { path, data, mode } => {
            crate::path::validate_create(path, mode.is_sequential())
                .map_err(|e| (ZkError::BadArguments, e.to_string()))?;
            check_len(data)
        }
        Op::SetData { path, data, .. } => {
            crate::path::validate(path).map_err(|e| (ZkError::BadArguments, e.to_string()))?;
            check_len(data)
        }
        Op::Delete { path, .. }
        | Op::GetData { path, .. }
        | Op::Exists { path, .. }
        | Op::GetChildren { path, .. }
        | Op::GetAllChildrenNumber { path }
        | Op::Sync { path }
        | Op::AddWatch { path, .. }
        | Op::RemoveWatches { path, .. } => {
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
        // Paths inside a multi are judged by apply, which fails the multi at that op as
        // ZooKeeper does; only the size limit is checked before the log.
        Op::Multi { ops } => ops.iter().try_for_each(|op| match op {
            MultiOp::Create { data, .. } | MultiOp::SetData { data, .. } => check_len(data),
            MultiOp::Delete { .. } | MultiOp::Check { .. } => Ok(()),
        }),
        Op::OpenSession { .. } | Op::CloseSession => Ok(()),
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

fn check_len(data: &[u8]) -> Result<(), (ZkError, String)> {
    if data.len() > crate::MAX_DATA_LEN {
        Err((
            ZkError::BadArguments,
            format!(
                "data is {} bytes, more than the {} byte limit (jute.maxbuffer)",
                data.len(),
                crate::MAX_DATA_LEN
            ),
        ))
    } else {
        Ok(())
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

/// The record a writer stores under `txn/<id>`: a txn plus the id of the txn before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Id of the previous txn in the chain ("" before the first).
    pub prev: String,
    /// The txn itself.
    pub txn: Txn,
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
    /// Events in zxid order.
    pub events: Vec<SessionEvent>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_as_json() {
        let r = Request {
            session: 3,
            seq: 9,
            op: Op::Create {
                path: "/x".into(),
                data: vec![0, 1, 255],
                mode: CreateMode::EphemeralSequential,
            },
        };
        let s = serde_json::to_string(&r).expect("serialize");
        assert!(s.contains("\"AAH/\""), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).expect("parse"), r);
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
        let big = Op::SetData {
            path: "/a".into(),
            data: vec![0; crate::MAX_DATA_LEN + 1],
            version: -1,
        };
        assert_eq!(precheck(&big).unwrap_err().0, ZkError::BadArguments);
        let ok = Op::SetData {
            path: "/a".into(),
            data: vec![0; crate::MAX_DATA_LEN],
            version: -1,
        };
        assert!(precheck(&ok).is_ok());
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
