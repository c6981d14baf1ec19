//! The deterministic apply step: current state + one txn → new state, a result and events.
//!
//! This is the only place that decides ZooKeeper outcomes (`NodeExists`, `NoNode`,
//! `BadVersion`, `NotEmpty`, `NoChildrenForEphemerals`, sequential names, stat updates, the
//! watch trigger table). The distributor runs it in zxid order over a [`State`] backed by the
//! system bucket; tests run it over [`MemState`]. Given the same state and txn it always
//! produces the same writes, which is what makes redoing a crashed batch safe (Guarantee 1).

use crate::wire::{
    Delivery, EventType, MultiOp, NodeView, Op, OpResult, SessionEvent, Txn, WatchEvent,
};
use crate::{CreateMode, SessionId, Stat, ZkError, Zxid, path};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A node as the distributor keeps it in the system bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Payload.
    #[serde(with = "crate::wire::b64")]
    pub data: Vec<u8>,
    /// Stat.
    pub stat: Stat,
    /// Child names.
    pub children: BTreeSet<String>,
}

impl NodeRecord {
    /// The object clients read from the user bucket.
    pub fn view(&self) -> NodeView {
        NodeView {
            data: self.data.clone(),
            stat: self.stat,
            children: self.children.iter().cloned().collect(),
        }
    }
}

/// A session as the distributor keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Negotiated timeout.
    pub timeout_ms: i32,
    /// Delivery address.
    pub notify: String,
    /// Highest seq applied (dedup and FIFO).
    pub last_seq: i64,
    /// zxid and result of `last_seq`, re-sent when that request is redelivered.
    pub last_result: Option<(Zxid, OpResult)>,
    /// Paths of the session's ephemeral nodes.
    pub ephemerals: BTreeSet<String>,
    /// Closed sessions stay as tombstones so that late requests get `SessionExpired`.
    pub closed: bool,
}

/// One-shot watches left on a path, by session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// Data and exists watches (ZooKeeper keeps both in its data-watch table).
    pub data: BTreeSet<SessionId>,
    /// Child watches.
    pub child: BTreeSet<SessionId>,
}

impl WatchRecord {
    /// Whether no watch is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.child.is_empty()
    }
}

/// The state apply reads and changes. Reads may fail (the distributor reads a store); writes
/// only stage changes, which the caller persists after the whole batch is decided.
pub trait State {
    /// Error of the underlying reads.
    type Error;
    /// A node, if it exists.
    fn node(&mut self, path: &str) -> Result<Option<NodeRecord>, Self::Error>;
    /// Stage a node write.
    fn put_node(&mut self, path: &str, node: NodeRecord);
    /// Stage a node removal.
    fn remove_node(&mut self, path: &str);
    /// A session, if it was ever opened.
    fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>, Self::Error>;
    /// Stage a session write.
    fn put_session(&mut self, id: SessionId, session: SessionRecord);
    /// Watches on a path (empty if none).
    fn watches(&mut self, path: &str) -> Result<WatchRecord, Self::Error>;
    /// Stage the watches of a path (an empty record removes it).
    fn put_watches(&mut self, path: &str, watches: WatchRecord);
}

/// What applying one txn produced besides the staged state changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The result for the issuing session (also part of `deliveries`).
    pub result: OpResult,
    /// Events to deliver, grouped by session, in order.
    pub deliveries: Vec<Delivery>,
}

/// Collects events per session in the order they arise.
#[derive(Default)]
struct Outbox {
    order: Vec<SessionId>,
    events: BTreeMap<SessionId, Vec<SessionEvent>>,
}

impl Outbox {
    fn append(&mut self, other: Outbox) {
        let Outbox { order, mut events } = other;
        for session in order {
            for e in events.remove(&session).unwrap_or_default() {
                self.push(session, e);
            }
        }
    }

    fn push(&mut self, session: SessionId, event: SessionEvent) {
        let list = self.events.entry(session).or_default();
        if list.is_empty() {
            self.order.push(session);
        }
        list.push(event);
    }

    /// Resolve delivery addresses. `issuer` hears its result even when its session has just
    /// closed; watch events for other closed sessions are dropped, nobody is listening.
    fn into_deliveries<S: State>(
        mut self,
        state: &mut S,
        issuer: SessionId,
    ) -> Result<Vec<Delivery>, S::Error> {
        let mut out = Vec::new();
        for session in self.order {
            let Some(events) = self.events.remove(&session) else {
                continue;
            };
            match state.session(session)? {
                Some(rec) if !rec.closed || session == issuer => out.push(Delivery {
                    session,
                    notify: rec.notify,
                    events,
                }),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The initial tree of a fresh service, as Apache ZooKeeper 3.8 starts it: `/`,
/// `/zookeeper`, `/zookeeper/config` and `/zookeeper/quota`, all at zxid 0.
pub fn initial_nodes() -> Vec<(String, NodeRecord)> {
    let node = |children: &[&str]| NodeRecord {
        data: Vec::new(),
        stat: Stat {
            num_children: children.len() as i32,
            ..Stat::default()
        },
        children: children.iter().map(|c| c.to_string()).collect(),
    };
    vec![
        ("/".to_string(), node(&["zookeeper"])),
        ("/zookeeper".to_string(), node(&["config", "quota"])),
        ("/zookeeper/config".to_string(), node(&[])),
        ("/zookeeper/quota".to_string(), node(&[])),
    ]
}

/// Apply one txn. Never fails on bad input: a bad request yields an error *result*.
pub fn apply<S: State>(state: &mut S, txn: &Txn) -> Result<Applied, S::Error> {
    let req = &txn.request;
    let mut out = Outbox::default();

    // Dedup and session checks come before anything else (Guarantee 2: applied once, FIFO).
    let session = state.session(req.session)?;
    if let Op::OpenSession { timeout_ms, notify } = &req.op {
        if let Some(rec) = session {
            // A redelivered open is answered again; a reused id is refused.
            let result = match (&rec.last_result, rec.closed, req.seq == 0) {
                (Some((_, r)), false, true) => r.clone(),
                _ => OpResult::error(ZkError::SessionExpired, "session id already used"),
            };
            return finish(state, txn, out, result);
        }
        let timeout_ms = crate::negotiate_timeout(*timeout_ms);
        let result = OpResult::SessionOpened { timeout_ms };
        state.put_session(
            req.session,
            SessionRecord {
                timeout_ms,
                notify: notify.clone(),
                last_seq: req.seq,
                last_result: Some((txn.zxid, result.clone())),
                ephemerals: BTreeSet::new(),
                closed: false,
            },
        );
        return finish(state, txn, out, result);
    }
    let Some(mut sess) = session.filter(|s| !s.closed) else {
        // A closed session still has a tombstone with its address: tell it. An id never
        // opened has nowhere to be told; the host refuses such requests before the log.
        let result = OpResult::error(ZkError::SessionExpired, "session is closed or unknown");
        return finish(state, txn, out, result);
    };
    if req.seq <= sess.last_seq {
        // Redelivered request: re-send the stored result of the newest one, nothing else.
        let result = match &sess.last_result {
            Some((_, r)) if req.seq == sess.last_seq => r.clone(),
            _ => {
                return Ok(Applied {
                    result: OpResult::error(ZkError::SystemError, "duplicate of an old request"),
                    deliveries: Vec::new(),
                });
            }
        };
        let zxid = sess
            .last_result
            .as_ref()
            .map(|(z, _)| *z)
            .unwrap_or(txn.zxid);
        out.push(
            req.session,
            SessionEvent::Result {
                seq: req.seq,
                zxid,
                result: result.clone(),
            },
        );
        return Ok(Applied {
            result,
            deliveries: out.into_deliveries(state, txn.request.session)?,
        });
    }

    let result = match &req.op {
        Op::OpenSession { .. } => unreachable_open(),
        Op::CloseSession => {
            for eph in std::mem::take(&mut sess.ephemerals) {
                // Deleting in path order; each delete fires its events as a client delete would.
                let _ = delete_node(
                    state,
                    &mut out,
                    txn.zxid,
                    &eph,
                    -1,
                    (req.session, &mut sess),
                )?;
            }
            sess.closed = true;
            OpResult::SessionClosed
        }
        Op::Create { path, data, mode } => {
            create(state, &mut out, txn, &mut sess, path, data, *mode)?
        }
        Op::SetData {
            path,
            data,
            version,
        } => set_data(state, &mut out, txn, path, data, *version)?,
        Op::Delete { path, version } => {
            match delete_node(
                state,
                &mut out,
                txn.zxid,
                path,
                *version,
                (req.session, &mut sess),
            )? {
                Ok(()) => OpResult::Deleted,
                Err(e) => e,
            }
        }
        Op::GetData { path, watch } => match checked(path).map(|()| path) {
            Err(e) => e,
            Ok(path) => match state.node(path)? {
                None => OpResult::error(ZkError::NoNode, path.clone()),
                Some(n) => {
                    if *watch {
                        add_watch(state, path, req.session, false)?;
                    }
                    OpResult::Data {
                        data: n.data,
                        stat: n.stat,
                    }
                }
            },
        },
        Op::Exists { path, watch } => match checked(path) {
            Err(e) => e,
            Ok(()) => {
                let stat = state.node(path)?.map(|n| n.stat);
                if *watch {
                    add_watch(state, path, req.session, false)?;
                }
                OpResult::Exists { stat }
            }
        },
        Op::GetChildren { path, watch } => match checked(path) {
            Err(e) => e,
            Ok(()) => match state.node(path)? {
                None => OpResult::error(ZkError::NoNode, path.clone()),
                Some(n) => {
                    if *watch {
                        add_watch(state, path, req.session, true)?;
                    }
                    OpResult::Children {
                        children: n.children.into_iter().collect(),
                        stat: n.stat,
                    }
                }
            },
        },
        Op::Multi { ops } => multi(state, &mut out, txn, &mut sess, ops)?,
        Op::SetWatches {
            relative_zxid,
            data,
            exist,
            child,
        } => {
            set_watches(state, &mut out, txn, *relative_zxid, data, exist, child)?;
            OpResult::WatchesSet
        }
    };
    sess.last_seq = req.seq;
    sess.last_result = Some((txn.zxid, result.clone()));
    state.put_session(req.session, sess);
    finish(state, txn, out, result)
}

fn unreachable_open() -> OpResult {
    OpResult::error(ZkError::SystemError, "open-session handled above")
}

fn finish<S: State>(
    state: &mut S,
    txn: &Txn,
    mut out: Outbox,
    result: OpResult,
) -> Result<Applied, S::Error> {
    out.push(
        txn.request.session,
        SessionEvent::Result {
            seq: txn.request.seq,
            zxid: txn.zxid,
            result: result.clone(),
        },
    );
    Ok(Applied {
        result,
        deliveries: out.into_deliveries(state, txn.request.session)?,
    })
}

fn checked(p: &str) -> Result<(), OpResult> {
    path::validate(p).map_err(|e| OpResult::error(ZkError::BadArguments, e.to_string()))
}

fn add_watch<S: State>(
    state: &mut S,
    path: &str,
    session: SessionId,
    child: bool,
) -> Result<(), S::Error> {
    let mut w = state.watches(path)?;
    if child {
        w.child.insert(session);
    } else {
        w.data.insert(session);
    }
    state.put_watches(path, w);
    Ok(())
}

/// Fire ZooKeeper's trigger table for one event: data watches for created/deleted/changed,
/// child watches for children-changed and deleted; each session hears an event once.
fn trigger<S: State>(
    state: &mut S,
    out: &mut Outbox,
    kind: EventType,
    path: &str,
    zxid: Zxid,
) -> Result<(), S::Error> {
    let mut w = state.watches(path)?;
    if w.is_empty() {
        return Ok(());
    }
    let mut fired = BTreeSet::new();
    let fires_data = kind != EventType::NodeChildrenChanged;
    let fires_child = matches!(
        kind,
        EventType::NodeChildrenChanged | EventType::NodeDeleted
    );
    if fires_data {
        fired.extend(std::mem::take(&mut w.data));
    }
    if fires_child {
        fired.extend(std::mem::take(&mut w.child));
    }
    for session in fired {
        out.push(
            session,
            SessionEvent::Watch {
                event: WatchEvent {
                    kind,
                    path: path.to_string(),
                    zxid,
                },
            },
        );
    }
    state.put_watches(path, w);
    Ok(())
}

/// All-or-nothing: the sub-ops run over an [`Overlay`]; only if all succeed are their changes,
/// events and session updates kept. The first failure is reported with its index.
fn multi<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    sess: &mut SessionRecord,
    ops: &[MultiOp],
) -> Result<OpResult, S::Error> {
    let mut overlay = Overlay::new(state);
    let mut sub_out = Outbox::default();
    let mut sub_sess = sess.clone();
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let r = match op {
            MultiOp::Create { path, data, mode } => create(
                &mut overlay,
                &mut sub_out,
                txn,
                &mut sub_sess,
                path,
                data,
                *mode,
            )?,
            MultiOp::Delete { path, version } => {
                let owner = (txn.request.session, &mut sub_sess);
                match delete_node(&mut overlay, &mut sub_out, txn.zxid, path, *version, owner)? {
                    Ok(()) => OpResult::Deleted,
                    Err(e) => e,
                }
            }
            MultiOp::SetData {
                path,
                data,
                version,
            } => set_data(&mut overlay, &mut sub_out, txn, path, data, *version)?,
            MultiOp::Check { path, version } => check(&mut overlay, path, *version)?,
        };
        if let OpResult::Error { error, message } = r {
            return Ok(OpResult::MultiFailed {
                index,
                error,
                message,
            });
        }
        results.push(r);
    }
    overlay.commit();
    out.append(sub_out);
    *sess = sub_sess;
    Ok(OpResult::Multi { results })
}

fn check<S: State>(state: &mut S, path: &str, version: i32) -> Result<OpResult, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(e);
    }
    Ok(match state.node(path)? {
        None => OpResult::error(ZkError::NoNode, path),
        Some(n) if version != -1 && n.stat.version != version => OpResult::error(
            ZkError::BadVersion,
            format!(
                "{path}: expected version {version}, node has {}",
                n.stat.version
            ),
        ),
        Some(_) => OpResult::Checked,
    })
}

/// Staged changes over another [`State`], kept only on [`Overlay::commit`].
struct Overlay<'a, S: State> {
    base: &'a mut S,
    nodes: BTreeMap<String, Option<NodeRecord>>,
    sessions: BTreeMap<SessionId, SessionRecord>,
    watches: BTreeMap<String, WatchRecord>,
}

impl<'a, S: State> Overlay<'a, S> {
    fn new(base: &'a mut S) -> Self {
        Overlay {
            base,
            nodes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            watches: BTreeMap::new(),
        }
    }

    fn commit(self) {
        for (path, node) in self.nodes {
            match node {
                Some(n) => self.base.put_node(&path, n),
                None => self.base.remove_node(&path),
            }
        }
        for (id, s) in self.sessions {
            self.base.put_session(id, s);
        }
        for (path, w) in self.watches {
            self.base.put_watches(&path, w);
        }
    }
}

impl<S: State> State for Overlay<'_, S> {
    type Error = S::Error;
    fn node(&mut self, path: &str) -> Result<Option<NodeRecord>, S::Error> {
        match self.nodes.get(path) {
            Some(n) => Ok(n.clone()),
            None => self.base.node(path),
        }
    }
    fn put_node(&mut self, path: &str, node: NodeRecord) {
        self.nodes.insert(path.to_string(), Some(node));
    }
    fn remove_node(&mut self, path: &str) {
        self.nodes.insert(path.to_string(), None);
    }
    fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>, S::Error> {
        match self.sessions.get(&id) {
            Some(s) => Ok(Some(s.clone())),
            None => self.base.session(id),
        }
    }
    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        self.sessions.insert(id, session);
    }
    fn watches(&mut self, path: &str) -> Result<WatchRecord, S::Error> {
        match self.watches.get(path) {
            Some(w) => Ok(w.clone()),
            None => self.base.watches(path),
        }
    }
    fn put_watches(&mut self, path: &str, watches: WatchRecord) {
        self.watches.insert(path.to_string(), watches);
    }
}

/// ZooKeeper's `DataTree.setWatches`: what changed since the client last looked fires now,
/// the rest is registered as if the reads had just been made.
#[allow(clippy::too_many_arguments)]
fn set_watches<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    relative_zxid: i64,
    data: &[String],
    exist: &[String],
    child: &[String],
) -> Result<(), S::Error> {
    let session = txn.request.session;
    let event = |kind, path: &str| SessionEvent::Watch {
        event: WatchEvent {
            kind,
            path: path.to_string(),
            zxid: txn.zxid,
        },
    };
    for p in data {
        match state.node(p)? {
            None => out.push(session, event(EventType::NodeDeleted, p)),
            Some(n) if n.stat.mzxid > relative_zxid => {
                out.push(session, event(EventType::NodeDataChanged, p))
            }
            Some(_) => add_watch(state, p, session, false)?,
        }
    }
    for p in exist {
        match state.node(p)? {
            Some(_) => out.push(session, event(EventType::NodeCreated, p)),
            None => add_watch(state, p, session, false)?,
        }
    }
    for p in child {
        match state.node(p)? {
            None => out.push(session, event(EventType::NodeDeleted, p)),
            Some(n) if n.stat.pzxid > relative_zxid => {
                out.push(session, event(EventType::NodeChildrenChanged, p))
            }
            Some(_) => add_watch(state, p, session, true)?,
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn create<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    sess: &mut SessionRecord,
    path: &str,
    data: &[u8],
    mode: CreateMode,
) -> Result<OpResult, S::Error> {
    if let Err(e) = path::validate_create(path, mode.is_sequential()) {
        return Ok(OpResult::error(ZkError::BadArguments, e.to_string()));
    }
    if data.len() > crate::MAX_DATA_LEN {
        return Ok(OpResult::error(ZkError::BadArguments, "data too large"));
    }
    // For a sequential create the parent is that of the prefix ("/a/" → "/a").
    let Some(parent_path) = path::parent(&format!("{path}x")).map(str::to_string) else {
        return Ok(OpResult::error(ZkError::NodeExists, path));
    };
    let Some(mut parent) = state.node(&parent_path)? else {
        return Ok(OpResult::error(ZkError::NoNode, parent_path));
    };
    let path = if mode.is_sequential() {
        format!("{path}{:010}", parent.stat.cversion)
    } else {
        path.to_string()
    };
    if state.node(&path)?.is_some() {
        return Ok(OpResult::error(ZkError::NodeExists, path));
    }
    if parent.stat.ephemeral_owner != 0 {
        return Ok(OpResult::error(
            ZkError::NoChildrenForEphemerals,
            parent_path,
        ));
    }
    let zxid = txn.zxid;
    let stat = Stat {
        czxid: zxid,
        mzxid: zxid,
        ctime: txn.time_ms,
        mtime: txn.time_ms,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: if mode.is_ephemeral() {
            txn.request.session
        } else {
            0
        },
        data_length: data.len() as i32,
        num_children: 0,
        pzxid: zxid,
    };
    parent.children.insert(path::name(&path).to_string());
    parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
    parent.stat.pzxid = zxid;
    parent.stat.num_children = parent.children.len() as i32;
    state.put_node(&parent_path, parent);
    state.put_node(
        &path,
        NodeRecord {
            data: data.to_vec(),
            stat,
            children: BTreeSet::new(),
        },
    );
    if mode.is_ephemeral() {
        sess.ephemerals.insert(path.clone());
    }
    trigger(state, out, EventType::NodeCreated, &path, zxid)?;
    trigger(
        state,
        out,
        EventType::NodeChildrenChanged,
        &parent_path,
        zxid,
    )?;
    Ok(OpResult::Created { path, stat })
}

fn set_data<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    path: &str,
    data: &[u8],
    version: i32,
) -> Result<OpResult, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(e);
    }
    if data.len() > crate::MAX_DATA_LEN {
        return Ok(OpResult::error(ZkError::BadArguments, "data too large"));
    }
    let Some(mut node) = state.node(path)? else {
        return Ok(OpResult::error(ZkError::NoNode, path));
    };
    if version != -1 && version != node.stat.version {
        return Ok(OpResult::error(
            ZkError::BadVersion,
            format!(
                "{path}: expected version {version}, node has {}",
                node.stat.version
            ),
        ));
    }
    node.data = data.to_vec();
    node.stat.version = node.stat.version.wrapping_add(1);
    node.stat.mzxid = txn.zxid;
    node.stat.mtime = txn.time_ms;
    node.stat.data_length = data.len() as i32;
    let stat = node.stat;
    state.put_node(path, node);
    trigger(state, out, EventType::NodeDataChanged, path, txn.zxid)?;
    Ok(OpResult::Stat { stat })
}

/// Delete `path`. `owner` is the issuing session and its in-flight record, so that an
/// ephemeral node leaves its owner's list in the same txn.
fn delete_node<S: State>(
    state: &mut S,
    out: &mut Outbox,
    zxid: Zxid,
    path: &str,
    version: i32,
    owner: (SessionId, &mut SessionRecord),
) -> Result<Result<(), OpResult>, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(Err(e));
    }
    let Some(parent_path) = path::parent(path).map(str::to_string) else {
        return Ok(Err(OpResult::error(
            ZkError::BadArguments,
            "the root node cannot be deleted",
        )));
    };
    let Some(mut parent) = state.node(&parent_path)? else {
        return Ok(Err(OpResult::error(ZkError::NoNode, path)));
    };
    let Some(node) = state.node(path)? else {
        return Ok(Err(OpResult::error(ZkError::NoNode, path)));
    };
    if version != -1 && version != node.stat.version {
        return Ok(Err(OpResult::error(
            ZkError::BadVersion,
            format!(
                "{path}: expected version {version}, node has {}",
                node.stat.version
            ),
        )));
    }
    if !node.children.is_empty() {
        return Ok(Err(OpResult::error(ZkError::NotEmpty, path)));
    }
    let eph_owner = node.stat.ephemeral_owner;
    if eph_owner != 0 {
        let (issuer, sess) = owner;
        if eph_owner == issuer {
            // The issuing session's record is written once at the end of apply.
            sess.ephemerals.remove(path);
        } else if let Some(mut other) = state.session(eph_owner)?
            && other.ephemerals.remove(path)
        {
            state.put_session(eph_owner, other);
        }
    }
    parent.children.remove(path::name(path));
    parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
    parent.stat.pzxid = zxid;
    parent.stat.num_children = parent.children.len() as i32;
    state.put_node(&parent_path, parent);
    state.remove_node(path);
    trigger(state, out, EventType::NodeDeleted, path, zxid)?;
    trigger(
        state,
        out,
        EventType::NodeChildrenChanged,
        &parent_path,
        zxid,
    )?;
    Ok(Ok(()))
}

/// An in-memory [`State`]: the reference model for tests and the example above.
#[derive(Debug, Clone, Default)]
pub struct MemState {
    /// Nodes by path.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Sessions by id.
    pub sessions: BTreeMap<SessionId, SessionRecord>,
    /// Watches by path.
    pub watches: BTreeMap<String, WatchRecord>,
}

impl MemState {
    /// A state holding ZooKeeper's initial tree.
    pub fn initialized() -> MemState {
        MemState {
            nodes: initial_nodes().into_iter().collect(),
            ..MemState::default()
        }
    }
}

impl State for MemState {
    type Error = std::convert::Infallible;
    fn node(&mut self, path: &str) -> Result<Option<NodeRecord>, Self::Error> {
        Ok(self.nodes.get(path).cloned())
    }
    fn put_node(&mut self, path: &str, node: NodeRecord) {
        self.nodes.insert(path.to_string(), node);
    }
    fn remove_node(&mut self, path: &str) {
        self.nodes.remove(path);
    }
    fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>, Self::Error> {
        Ok(self.sessions.get(&id).cloned())
    }
    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        self.sessions.insert(id, session);
    }
    fn watches(&mut self, path: &str) -> Result<WatchRecord, Self::Error> {
        Ok(self.watches.get(path).cloned().unwrap_or_default())
    }
    fn put_watches(&mut self, path: &str, watches: WatchRecord) {
        if watches.is_empty() {
            self.watches.remove(path);
        } else {
            self.watches.insert(path.to_string(), watches);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Pins ZooKeeper's outcomes and stat rules for each op (Guarantee 6).
    use super::*;
    use crate::wire::Request;

    struct World {
        state: MemState,
        zxid: Zxid,
        seqs: BTreeMap<SessionId, i64>,
    }

    impl World {
        fn new() -> World {
            World {
                state: MemState::initialized(),
                zxid: 0,
                seqs: BTreeMap::new(),
            }
        }
        fn run(&mut self, session: SessionId, op: Op) -> Applied {
            let seq = self.seqs.entry(session).or_insert(-1);
            *seq += 1;
            self.zxid += 1;
            let txn = Txn {
                zxid: self.zxid,
                time_ms: 1000 + self.zxid,
                request: Request {
                    session,
                    seq: *seq,
                    op,
                },
            };
            match apply(&mut self.state, &txn) {
                Ok(a) => a,
                Err(e) => match e {},
            }
        }
        fn open(&mut self, session: SessionId) {
            let r = self.run(
                session,
                Op::OpenSession {
                    timeout_ms: 1000,
                    notify: format!("n{session}"),
                },
            );
            assert_eq!(
                r.result,
                OpResult::SessionOpened { timeout_ms: 4000 },
                "negotiated up to the minimum"
            );
        }
        fn create(&mut self, s: SessionId, path: &str, mode: CreateMode) -> OpResult {
            self.run(
                s,
                Op::Create {
                    path: path.into(),
                    data: b"d".to_vec(),
                    mode,
                },
            )
            .result
        }
    }

    fn err(r: &OpResult) -> Option<ZkError> {
        match r {
            OpResult::Error { error, .. } => Some(*error),
            _ => None,
        }
    }

    #[test]
    fn create_updates_parent_stat() {
        let mut w = World::new();
        w.open(1);
        let r = w.create(1, "/a", CreateMode::Persistent);
        let OpResult::Created { path, stat } = r else {
            panic!("{r:?}")
        };
        assert_eq!(path, "/a");
        assert_eq!(
            (
                stat.czxid,
                stat.mzxid,
                stat.pzxid,
                stat.version,
                stat.data_length
            ),
            (2, 2, 2, 0, 1)
        );
        let root = &w.state.nodes["/"];
        assert_eq!(
            (root.stat.cversion, root.stat.pzxid, root.stat.num_children),
            (1, 2, 2)
        );
        assert_eq!(
            root.stat.mzxid, 0,
            "a child create does not change the parent's mzxid"
        );
    }

    #[test]
    fn errors_in_zookeeper_order() {
        let mut w = World::new();
        w.open(1);
        assert_eq!(
            err(&w.create(1, "/a/b", CreateMode::Persistent)),
            Some(ZkError::NoNode)
        );
        w.create(1, "/a", CreateMode::Persistent);
        assert_eq!(
            err(&w.create(1, "/a", CreateMode::Persistent)),
            Some(ZkError::NodeExists)
        );
        assert_eq!(
            err(&w.create(1, "/", CreateMode::Persistent)),
            Some(ZkError::NodeExists)
        );
        assert_eq!(
            err(&w.create(1, "/a/", CreateMode::Persistent)),
            Some(ZkError::BadArguments)
        );
        w.create(1, "/a/b", CreateMode::Persistent);
        let r = w
            .run(
                1,
                Op::Delete {
                    path: "/a".into(),
                    version: 5,
                },
            )
            .result;
        assert_eq!(
            err(&r),
            Some(ZkError::BadVersion),
            "version is checked before children"
        );
        let r = w
            .run(
                1,
                Op::Delete {
                    path: "/a".into(),
                    version: -1,
                },
            )
            .result;
        assert_eq!(err(&r), Some(ZkError::NotEmpty));
        let r = w
            .run(
                1,
                Op::SetData {
                    path: "/a".into(),
                    data: vec![],
                    version: 1,
                },
            )
            .result;
        assert_eq!(err(&r), Some(ZkError::BadVersion));
        let r = w
            .run(
                1,
                Op::SetData {
                    path: "/a".into(),
                    data: vec![1, 2],
                    version: 0,
                },
            )
            .result;
        let OpResult::Stat { stat } = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (stat.version, stat.data_length, stat.czxid < stat.mzxid),
            (1, 2, true)
        );
        let r = w
            .run(
                1,
                Op::Delete {
                    path: "/nope".into(),
                    version: -1,
                },
            )
            .result;
        assert_eq!(err(&r), Some(ZkError::NoNode));
        let r = w
            .run(
                1,
                Op::Delete {
                    path: "/".into(),
                    version: -1,
                },
            )
            .result;
        assert_eq!(err(&r), Some(ZkError::BadArguments));
    }

    #[test]
    fn sequential_names_come_from_parent_cversion() {
        let mut w = World::new();
        w.open(1);
        w.create(1, "/q", CreateMode::Persistent);
        w.create(1, "/q/x", CreateMode::Persistent);
        w.run(
            1,
            Op::Delete {
                path: "/q/x".into(),
                version: -1,
            },
        );
        let r = w.create(1, "/q/n-", CreateMode::PersistentSequential);
        assert!(
            matches!(r, OpResult::Created { ref path, .. } if path == "/q/n-0000000002"),
            "{r:?}"
        );
        let r = w.create(1, "/q/", CreateMode::EphemeralSequential);
        assert!(
            matches!(r, OpResult::Created { ref path, .. } if path == "/q/0000000003"),
            "{r:?}"
        );
    }

    #[test]
    fn ephemerals_die_with_their_session() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(1, "/e", CreateMode::Ephemeral);
        assert_eq!(
            err(&w.create(2, "/e/c", CreateMode::Persistent)),
            Some(ZkError::NoChildrenForEphemerals)
        );
        assert_eq!(w.state.nodes["/e"].stat.ephemeral_owner, 1);
        w.run(
            2,
            Op::Exists {
                path: "/e".into(),
                watch: true,
            },
        );
        let r = w.run(1, Op::CloseSession);
        assert_eq!(r.result, OpResult::SessionClosed);
        assert!(!w.state.nodes.contains_key("/e"));
        let to2: Vec<_> = r.deliveries.iter().filter(|d| d.session == 2).collect();
        assert_eq!(to2.len(), 1);
        assert!(
            matches!(&to2[0].events[0], SessionEvent::Watch { event } if event.kind == EventType::NodeDeleted)
        );
        let r = w.create(1, "/x", CreateMode::Persistent);
        assert_eq!(err(&r), Some(ZkError::SessionExpired));
        assert!(!w.state.nodes.contains_key("/x"));
    }

    #[test]
    fn watches_fire_once_per_trigger_table() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.run(
            2,
            Op::Exists {
                path: "/w".into(),
                watch: true,
            },
        );
        w.run(
            2,
            Op::GetChildren {
                path: "/".into(),
                watch: true,
            },
        );
        let r = w.run(
            1,
            Op::Create {
                path: "/w".into(),
                data: vec![],
                mode: CreateMode::Persistent,
            },
        );
        let kinds: Vec<_> = r
            .deliveries
            .iter()
            .filter(|d| d.session == 2)
            .flat_map(|d| d.events.iter())
            .map(|e| match e {
                SessionEvent::Watch { event } => (event.kind, event.path.clone()),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventType::NodeCreated, "/w".to_string()),
                (EventType::NodeChildrenChanged, "/".to_string())
            ]
        );
        // One-shot: the next change fires nothing.
        let r = w.run(
            1,
            Op::SetData {
                path: "/w".into(),
                data: vec![1],
                version: -1,
            },
        );
        assert!(r.deliveries.iter().all(|d| d.session == 1));
        // Data + child watch on the same node: one NodeDeleted for the session.
        w.run(
            2,
            Op::GetData {
                path: "/w".into(),
                watch: true,
            },
        );
        w.run(
            2,
            Op::GetChildren {
                path: "/w".into(),
                watch: true,
            },
        );
        let r = w.run(
            1,
            Op::Delete {
                path: "/w".into(),
                version: -1,
            },
        );
        let n = r
            .deliveries
            .iter()
            .filter(|d| d.session == 2)
            .map(|d| d.events.len())
            .sum::<usize>();
        assert_eq!(n, 1);
        assert!(w.state.watches.is_empty());
    }

    #[test]
    fn multi_is_all_or_nothing() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.run(
            2,
            Op::Exists {
                path: "/m".into(),
                watch: true,
            },
        );
        let ok = w.run(
            1,
            Op::Multi {
                ops: vec![
                    MultiOp::Create {
                        path: "/m".into(),
                        data: vec![1],
                        mode: CreateMode::Persistent,
                    },
                    MultiOp::Create {
                        path: "/m/s-".into(),
                        data: vec![],
                        mode: CreateMode::EphemeralSequential,
                    },
                    MultiOp::SetData {
                        path: "/m".into(),
                        data: vec![2],
                        version: 0,
                    },
                    MultiOp::Check {
                        path: "/m".into(),
                        version: 1,
                    },
                ],
            },
        );
        let OpResult::Multi { results } = &ok.result else {
            panic!("{:?}", ok.result)
        };
        assert!(matches!(&results[1], OpResult::Created { path, .. } if path == "/m/s-0000000000"));
        assert!(matches!(results[3], OpResult::Checked));
        assert!(w.state.sessions[&1].ephemerals.contains("/m/s-0000000000"));
        assert!(
            ok.deliveries.iter().any(|d| d.session == 2),
            "events of a multi are delivered"
        );
        let zxid = w.zxid;
        assert_eq!(
            w.state.nodes["/m"].stat.mzxid, zxid,
            "one zxid for the whole multi"
        );
        let before = w.state.nodes.clone();
        let failed = w.run(
            1,
            Op::Multi {
                ops: vec![
                    MultiOp::Delete {
                        path: "/m/s-0000000000".into(),
                        version: -1,
                    },
                    MultiOp::SetData {
                        path: "/m".into(),
                        data: vec![9],
                        version: 7,
                    },
                    MultiOp::Create {
                        path: "/x".into(),
                        data: vec![],
                        mode: CreateMode::Persistent,
                    },
                ],
            },
        );
        assert!(
            matches!(
                failed.result,
                OpResult::MultiFailed {
                    index: 1,
                    error: ZkError::BadVersion,
                    ..
                }
            ),
            "{:?}",
            failed.result
        );
        assert_eq!(w.state.nodes, before, "a failed multi changes nothing");
        assert!(w.state.sessions[&1].ephemerals.contains("/m/s-0000000000"));
        let bad = w.run(
            1,
            Op::Multi {
                ops: vec![MultiOp::Check {
                    path: "bad".into(),
                    version: -1,
                }],
            },
        );
        assert!(matches!(
            bad.result,
            OpResult::MultiFailed {
                index: 0,
                error: ZkError::BadArguments,
                ..
            }
        ));
    }

    #[test]
    fn set_watches_fires_what_changed_and_arms_the_rest() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(1, "/same", CreateMode::Persistent);
        let seen = w.zxid;
        w.create(1, "/changed", CreateMode::Persistent);
        w.run(
            1,
            Op::SetData {
                path: "/changed".into(),
                data: vec![1],
                version: -1,
            },
        );
        let r = w.run(
            2,
            Op::SetWatches {
                relative_zxid: seen,
                data: vec!["/same".into(), "/changed".into(), "/gone".into()],
                exist: vec!["/changed".into(), "/later".into()],
                child: vec!["/same".into()],
            },
        );
        assert_eq!(r.result, OpResult::WatchesSet);
        let kinds: Vec<_> = r
            .deliveries
            .iter()
            .flat_map(|d| d.events.iter())
            .filter_map(|e| match e {
                SessionEvent::Watch { event } => Some((event.kind, event.path.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventType::NodeDataChanged, "/changed".to_string()),
                (EventType::NodeDeleted, "/gone".to_string()),
                (EventType::NodeCreated, "/changed".to_string()),
            ]
        );
        let r = w.create(1, "/later", CreateMode::Persistent);
        assert!(matches!(r, OpResult::Created { .. }));
        assert!(w.state.watches["/same"].data.contains(&2));
        assert!(w.state.watches["/same"].child.contains(&2));
    }

    #[test]
    fn redelivered_requests_apply_once() {
        let mut w = World::new();
        w.open(1);
        let req = Request {
            session: 1,
            seq: 1,
            op: Op::Create {
                path: "/d".into(),
                data: vec![],
                mode: CreateMode::PersistentSequential,
            },
        };
        let a = apply(
            &mut w.state,
            &Txn {
                zxid: 10,
                time_ms: 1,
                request: req.clone(),
            },
        )
        .unwrap_or_else(|e| match e {});
        let b = apply(
            &mut w.state,
            &Txn {
                zxid: 11,
                time_ms: 2,
                request: req,
            },
        )
        .unwrap_or_else(|e| match e {});
        assert_eq!(a.result, b.result);
        assert_eq!(w.state.nodes["/"].children.len(), 2);
        let SessionEvent::Result { zxid, .. } = &b.deliveries[0].events[0] else {
            panic!()
        };
        assert_eq!(
            *zxid, 10,
            "the redelivered result carries the original zxid"
        );
    }
}
