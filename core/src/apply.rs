//! The deterministic apply step: current state + one txn → new state, a result and events.
//!
//! This is the only place that decides ZooKeeper outcomes (`NodeExists`, `NoNode`,
//! `BadVersion`, `NotEmpty`, `NoChildrenForEphemerals`, `NoWatcher`, sequential names, stat
//! updates, the watch trigger table, container deletion). The distributor runs it in zxid
//! order over a [`State`] backed by the system bucket; tests run it over [`MemState`]. Given
//! the same state and txn it always produces the same writes, which is what makes redoing a
//! crashed batch safe (Guarantee 1).
//!
//! ## Containers
//!
//! ZooKeeper deletes a container whose last child went in a background `ContainerManager`
//! (every `znode.container.checkIntervalMs`). Here it is deleted in the txn that removed the
//! last child — by `delete`, a `multi` or a session close — with the events a client delete
//! would fire, cascading to a parent container that becomes empty in turn. It happens once
//! all of the txn's deletes are done, so a `multi` that deletes a container's last child and
//! then creates another keeps the container, as ZooKeeper's later check would. A container
//! that never had a child stays, as in ZooKeeper's default configuration.

use crate::acl::{self, Acl, Id, perms};
use crate::session::SERVICE_SESSION;
use crate::wire::{
    Delivery, EventType, Framed, FramedError, MultiOp, NODE_RECORD_MAGIC, NodeView, Op, OpResult,
    Request, SessionEvent, Txn, WatchEvent, WatchKind, decode_framed, frame_parts,
};
use crate::{
    CONTAINER_EPHEMERAL_OWNER, CreateMode, SessionId, Stat, ZkError, Zxid, is_session_owner, path,
};
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
    /// The ACL in [`acl::stored`] form: empty, and left out of the JSON, for `world:anyone`
    /// with all permissions (so records of open nodes, and those written before ACLs
    /// existed, read back as open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acl: Vec<Acl>,
}

impl NodeRecord {
    /// The object clients read from the user bucket, with the ACL the read route checks.
    pub fn view(&self) -> NodeView {
        NodeView {
            data: self.data.clone(),
            stat: client_stat(self.stat),
            children: self.children.iter().cloned().collect(),
            acl: self.acl.clone(),
        }
    }

    /// The record as the system bucket stores it: the binary layout of
    /// [`crate::wire::frame_parts`], a header in [`NodeRecord::record_json`] without the data,
    /// then the data as it is (no base64 to write here and to read back in the next batch).
    pub fn record_bytes(&self) -> Result<Vec<u8>, FramedError> {
        let header = node_json(&[], &self.stat, &self.children, &self.acl, None)
            .map_err(|e| FramedError::Json(e.to_string()))?;
        frame_parts(NODE_RECORD_MAGIC, &header, &[&self.data])
    }

    /// A record of the system bucket in either layout: [`NodeRecord::record_bytes`], or the
    /// JSON of [`NodeRecord::record_json`] that records written before are in.
    pub fn from_record(bytes: &[u8]) -> Result<NodeRecord, FramedError> {
        decode_framed(NODE_RECORD_MAGIC, bytes)
    }

    /// The record as JSON (what the system bucket stored before the binary layout): what
    /// `serde_json` makes of it, written without scanning the base64 of the data for
    /// characters to escape (it has none). Under 32 writing sessions, that scan of the
    /// payloads' base64 was ≈ 6 % of the host's CPU (`perf`, docs/benchmarks.md); node
    /// records and objects were half of it.
    pub fn record_json(&self) -> serde_json::Result<Vec<u8>> {
        node_json(&self.data, &self.stat, &self.children, &self.acl, None)
    }

    /// The object stored in the user bucket: [`NodeRecord::view`] as JSON, written as
    /// [`NodeRecord::record_json`] is and without copying the data and child names into a
    /// [`NodeView`] first (the distributor writes one per changed node). Where the view's
    /// stat hides the owner (TTL and container nodes carry their kind in it), the raw owner
    /// follows as `owner`, so that the object holds the whole record
    /// ([`NodeRecord::from_object`]); clients ignore the field.
    pub fn view_json(&self) -> serde_json::Result<Vec<u8>> {
        let stat = client_stat(self.stat);
        let hidden = (stat.ephemeral_owner != self.stat.ephemeral_owner)
            .then_some(self.stat.ephemeral_owner);
        node_json(&self.data, &stat, &self.children, &self.acl, hidden)
    }

    /// The record a user-bucket object ([`NodeRecord::view_json`]) holds. Objects written
    /// before the owner was kept in them read with the stat's owner, which hides a TTL or
    /// container node's kind: read those records from the system bucket.
    pub fn from_object(object: &[u8]) -> serde_json::Result<NodeRecord> {
        #[derive(Deserialize)]
        struct Object {
            #[serde(with = "crate::wire::b64")]
            data: Vec<u8>,
            stat: Stat,
            children: BTreeSet<String>,
            #[serde(default)]
            acl: Vec<Acl>,
            #[serde(default)]
            owner: Option<i64>,
        }
        let o: Object = serde_json::from_slice(object)?;
        let mut stat = o.stat;
        if let Some(owner) = o.owner {
            stat.ephemeral_owner = owner;
        }
        Ok(NodeRecord {
            data: o.data,
            stat,
            children: o.children,
            acl: o.acl,
        })
    }
}

/// `{"data":<base64>,"stat":..,"children":[..](,"acl":[..])(,"owner":..)}`: the JSON
/// `serde_json` makes of a [`NodeRecord`] and of a [`NodeView`], whose fields are these, in
/// this order (`owner` is the user object's own).
fn node_json(
    data: &[u8],
    stat: &Stat,
    children: &BTreeSet<String>,
    acl: &[Acl],
    owner: Option<i64>,
) -> serde_json::Result<Vec<u8>> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let encoded = base64::encoded_len(data.len(), true).unwrap_or(0);
    let mut out = Vec::with_capacity(encoded + 256 + children.len() * 16);
    out.extend_from_slice(b"{\"data\":\"");
    let start = out.len();
    out.resize(start + encoded, 0);
    let written = STANDARD
        .encode_slice(data, &mut out[start..])
        .map_err(|e| <serde_json::Error as serde::ser::Error>::custom(e.to_string()))?;
    out.truncate(start + written);
    out.extend_from_slice(b"\",\"stat\":");
    serde_json::to_writer(&mut out, stat)?;
    out.extend_from_slice(b",\"children\":");
    serde_json::to_writer(&mut out, children)?;
    if !acl.is_empty() {
        out.extend_from_slice(b",\"acl\":");
        serde_json::to_writer(&mut out, acl)?;
    }
    if let Some(owner) = owner {
        out.extend_from_slice(b",\"owner\":");
        serde_json::to_writer(&mut out, &owner)?;
    }
    out.push(b'}');
    Ok(out)
}

impl Framed for NodeRecord {
    fn payload_slots(&mut self) -> Vec<&mut Vec<u8>> {
        vec![&mut self.data]
    }
}

/// A session as the distributor keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Negotiated timeout.
    pub timeout_ms: i32,
    /// Delivery address.
    pub notify: String,
    /// Where deliveries go once `notify` has failed (`Op::OpenSession`); taken for good by
    /// [`SessionRecord::fall_back`]. Left out of the JSON while unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// Highest seq applied (dedup and FIFO).
    pub last_seq: i64,
    /// zxid and result of `last_seq`, re-sent when that request is redelivered.
    pub last_result: Option<(Zxid, OpResult)>,
    /// Paths of the session's ephemeral nodes.
    pub ephemerals: BTreeSet<String>,
    /// Closed sessions stay as tombstones so that late requests get `SessionExpired`.
    pub closed: bool,
    /// The ids the session authenticated with (`addAuth`), in the order it did; every later
    /// request of the session is judged with them. Left out of the JSON while empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<Id>,
}

impl SessionRecord {
    /// Whether `self` and `other` differ at most in the last request and its result
    /// (`last_seq`, `last_result`): what a distributor may keep outside the record
    /// (`components/distributor`, the progress record's last results) while the rest of
    /// the record, which other readers use, stays as stored.
    pub fn same_but_last_result(&self, other: &SessionRecord) -> bool {
        let SessionRecord {
            timeout_ms,
            notify,
            fallback,
            last_seq: _,
            last_result: _,
            ephemerals,
            closed,
            auth,
        } = self;
        *timeout_ms == other.timeout_ms
            && *notify == other.notify
            && *fallback == other.fallback
            && *ephemerals == other.ephemerals
            && *closed == other.closed
            && *auth == other.auth
    }

    /// Deliver at the fallback address from now on, because the session's own address could
    /// not be reached; `false` if there is none (nothing changed). For good: anything
    /// delivered at the own address later could overtake what waits at the fallback.
    pub fn fall_back(&mut self) -> bool {
        match self.fallback.take() {
            Some(f) => {
                self.notify = f;
                true
            }
            None => false,
        }
    }
}

/// Watches left on a path, by session.
///
/// The new fields are `#[serde(default)]` and left out of the JSON when empty, so records
/// written before they existed read back unchanged and stores without persistent watches
/// hold the same bytes as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRecord {
    /// One-shot data and exists watches (ZooKeeper keeps both in its data-watch table).
    pub data: BTreeSet<SessionId>,
    /// One-shot child watches.
    pub child: BTreeSet<SessionId>,
    /// Persistent watches (`addWatch` mode `PERSISTENT`): every event on the path, kept after
    /// firing.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub persistent: BTreeSet<SessionId>,
    /// Persistent recursive watches (`addWatch` mode `PERSISTENT_RECURSIVE`): created,
    /// deleted and data-changed events on the path and every descendant, kept after firing.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub persistent_recursive: BTreeSet<SessionId>,
    /// Only meaningful on the root's record (`/`), 0 elsewhere: how many persistent
    /// recursive watches are registered anywhere in the tree. Finding them for an event means
    /// reading the record of every ancestor of its path; while this is 0 that walk is skipped.
    /// It may count watches of sessions that have closed until an event drops them, which
    /// only costs reads, never an event.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recursive_anywhere: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl WatchRecord {
    /// Whether no watch (and, on the root, no recursive-watch count) is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.child.is_empty()
            && self.persistent.is_empty()
            && self.persistent_recursive.is_empty()
            && self.recursive_anywhere == 0
    }
}

/// The state apply reads and changes. Reads may fail (the distributor reads a store); writes
/// only stage changes, which the caller persists after the whole batch is decided.
///
/// Reads lend the record (`*_ref`); apply takes a copy (`node`, `session`, `watches`) only of
/// what it changes. A node's copy holds its data and child names, so a check of a stat or of
/// existence, which is most of what apply reads, is cheaper on the loan.
pub trait State {
    /// Error of the underlying reads.
    type Error;
    /// A node, if it exists.
    fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, Self::Error>;
    /// Stage a node write.
    fn put_node(&mut self, path: &str, node: NodeRecord);
    /// Stage a node removal.
    fn remove_node(&mut self, path: &str);
    /// A session, if it was ever opened.
    fn session_ref(&mut self, id: SessionId) -> Result<Option<&SessionRecord>, Self::Error>;
    /// Stage a session write.
    fn put_session(&mut self, id: SessionId, session: SessionRecord);
    /// Watches on a path (`None` or an empty record if none).
    fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, Self::Error>;
    /// Stage the watches of a path (an empty record removes it).
    fn put_watches(&mut self, path: &str, watches: WatchRecord);

    /// A copy of a node, to change and put back.
    fn node(&mut self, path: &str) -> Result<Option<NodeRecord>, Self::Error> {
        Ok(self.node_ref(path)?.cloned())
    }
    /// A copy of a session record, to change and put back.
    fn session(&mut self, id: SessionId) -> Result<Option<SessionRecord>, Self::Error> {
        Ok(self.session_ref(id)?.cloned())
    }
    /// A copy of the watches on a path (empty if none), to change and put back.
    fn watches(&mut self, path: &str) -> Result<WatchRecord, Self::Error> {
        Ok(self.watches_ref(path)?.cloned().unwrap_or_default())
    }
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
            match state.session_ref(session)? {
                Some(rec) if !rec.closed || session == issuer => out.push(Delivery {
                    session,
                    notify: rec.notify.clone(),
                    fallback: rec.fallback.clone(),
                    events,
                }),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The initial tree of a fresh service, as Apache ZooKeeper 3.8 starts it: `/`,
/// `/zookeeper`, `/zookeeper/config` and `/zookeeper/quota`, all at zxid 0. Every node is
/// open but `/zookeeper/config`, which ZooKeeper makes world-readable only (ZOOKEEPER-2014)
/// with a `setACL` at version -1 that leaves its aversion at -1 (measured on 3.8.0).
pub fn initial_nodes() -> Vec<(String, NodeRecord)> {
    let node = |children: &[&str]| NodeRecord {
        data: Vec::new(),
        stat: Stat {
            num_children: children.len() as i32,
            ..Stat::default()
        },
        children: children.iter().map(|c| c.to_string()).collect(),
        acl: Vec::new(),
    };
    let mut config = node(&[]);
    config.acl = acl::read_unsafe();
    config.stat.aversion = -1;
    vec![
        ("/".to_string(), node(&["zookeeper"])),
        ("/zookeeper".to_string(), node(&["config", "quota"])),
        ("/zookeeper/config".to_string(), config),
        ("/zookeeper/quota".to_string(), node(&[])),
    ]
}

/// The records [`apply`] reads for a batch of txns on their usual course, so that a store
/// can fetch them in one call instead of one call each (a store may still be asked for
/// others: a sequential name, a session that hears a watch event, a container's parent).
///
/// Each key is one that [`apply`] reads when the txn succeeds; when it fails early (a
/// missing parent, a bad version, a closed session) some are read for nothing. Invalid paths
/// add nothing, as [`apply`] reads nothing for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Session records.
    pub sessions: BTreeSet<SessionId>,
    /// Node records.
    pub nodes: BTreeSet<String>,
    /// Watch records.
    pub watches: BTreeSet<String>,
}

impl Reads {
    /// The reads of `txns`, in order.
    pub fn of<'a>(txns: impl IntoIterator<Item = &'a Txn>) -> Reads {
        let mut reads = Reads::default();
        for txn in txns {
            reads.add(txn);
        }
        reads
    }

    /// Add the reads of one txn.
    pub fn add(&mut self, txn: &Txn) {
        let req = &txn.request;
        if req.session == SERVICE_SESSION {
            if let Op::DeleteExpired { path } = &req.op {
                self.delete(path);
            }
            return;
        }
        self.sessions.insert(req.session);
        match &req.op {
            Op::Create { path, mode, .. } => self.create(path, *mode),
            Op::SetData { path, .. } => self.set_data(path),
            Op::Delete { path, .. } => self.delete(path),
            Op::GetData { path, watch }
            | Op::Exists { path, watch }
            | Op::GetChildren { path, watch } => self.read(path, *watch),
            Op::Multi { ops } => {
                for op in ops {
                    match op {
                        MultiOp::Create { path, mode, .. } => self.create(path, *mode),
                        MultiOp::SetData { path, .. } => self.set_data(path),
                        MultiOp::Delete { path, .. } => self.delete(path),
                        MultiOp::Check { path, .. } => {
                            if path::validate(path).is_ok() {
                                self.nodes.insert(path.clone());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The parent, the node (unless its name is not known before the parent's counter is),
    /// the watches of both, and the root's for the recursive-watch check.
    fn create(&mut self, path: &str, mode: CreateMode) {
        if path::validate_create(path, mode.is_sequential()).is_err() {
            return;
        }
        let Some(parent) = path::parent_of_prefix(path) else {
            return;
        };
        self.nodes.insert(parent.to_string());
        self.watches.insert(parent.to_string());
        self.watches.insert("/".to_string());
        if !mode.is_sequential() {
            self.nodes.insert(path.to_string());
            self.watches.insert(path.to_string());
        }
    }

    fn set_data(&mut self, path: &str) {
        if path::validate(path).is_ok() {
            self.nodes.insert(path.to_string());
            self.watches.insert(path.to_string());
            self.watches.insert("/".to_string());
        }
    }

    fn delete(&mut self, path: &str) {
        if path::validate(path).is_err() {
            return;
        }
        if let Some(parent) = path::parent(path) {
            self.nodes.insert(parent.to_string());
            self.watches.insert(parent.to_string());
        }
        self.nodes.insert(path.to_string());
        self.watches.insert(path.to_string());
        self.watches.insert("/".to_string());
    }

    fn read(&mut self, path: &str, watch: bool) {
        if path::validate(path).is_ok() {
            self.nodes.insert(path.to_string());
            if watch {
                self.watches.insert(path.to_string());
            }
        }
    }
}

/// Apply one txn. Never fails on bad input: a bad request yields an error *result*.
pub fn apply<S: State>(state: &mut S, txn: &Txn) -> Result<Applied, S::Error> {
    let req = &txn.request;
    let mut out = Outbox::default();

    if req.session == SERVICE_SESSION
        && let Op::DeleteExpired { path } = &req.op
    {
        return delete_expired(state, txn, path);
    }

    // Dedup and session checks come before anything else (Guarantee 2: applied once, FIFO).
    // They read the session record on loan; a request that goes on copies it, without the
    // stored result it replaces.
    let session = state.session_ref(req.session)?;
    if let Op::OpenSession {
        timeout_ms,
        notify,
        fallback,
    } = &req.op
    {
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
                fallback: fallback.clone(),
                last_seq: req.seq,
                last_result: Some((txn.zxid, result.clone())),
                ephemerals: BTreeSet::new(),
                closed: false,
                auth: Vec::new(),
            },
        );
        return finish(state, txn, out, result);
    }
    let rec = match session {
        // A redelivered close is answered as the first one was, not with `SessionExpired`:
        // it is the close that made the session closed (found by `fuzz/`'s apply target).
        Some(SessionRecord {
            closed: true,
            last_seq,
            last_result: Some((zxid, result)),
            ..
        }) if req.seq == *last_seq && matches!(req.op, Op::CloseSession) => {
            let (zxid, result) = (*zxid, result.clone());
            return resend(state, req, zxid, result);
        }
        Some(rec) if !rec.closed => rec,
        _ => {
            // A closed session still has a tombstone with its address: tell it. An id never
            // opened has nowhere to be told; the host refuses such requests before the log.
            let result = OpResult::error(ZkError::SessionExpired, "session is closed or unknown");
            return finish(state, txn, out, result);
        }
    };
    if req.seq <= rec.last_seq {
        // Redelivered request: re-send the stored result of the newest one, nothing else.
        return match &rec.last_result {
            Some((zxid, r)) if req.seq == rec.last_seq => {
                let (zxid, r) = (*zxid, r.clone());
                resend(state, req, zxid, r)
            }
            _ => Ok(Applied {
                result: OpResult::error(ZkError::SystemError, "duplicate of an old request"),
                deliveries: Vec::new(),
            }),
        };
    }
    let mut sess = SessionRecord {
        timeout_ms: rec.timeout_ms,
        notify: rec.notify.clone(),
        fallback: rec.fallback.clone(),
        last_seq: rec.last_seq,
        // Set below, once the request's result is known.
        last_result: None,
        ephemerals: rec.ephemerals.clone(),
        closed: false,
        auth: rec.auth.clone(),
    };

    let result = match &req.op {
        Op::OpenSession { .. } => unreachable_open(),
        Op::CloseSession => {
            let mut emptied = Vec::new();
            for eph in std::mem::take(&mut sess.ephemerals) {
                // Deleting in path order; each delete fires its events as a client delete would.
                let _ = delete_node(
                    state,
                    &mut out,
                    txn.zxid,
                    &eph,
                    -1,
                    (req.session, &mut sess),
                    None,
                    &mut emptied,
                )?;
            }
            reap_containers(state, &mut out, txn.zxid, (req.session, &mut sess), emptied)?;
            sess.closed = true;
            OpResult::SessionClosed
        }
        Op::Create {
            path,
            data,
            mode,
            acl,
        } => create(
            state,
            &mut out,
            txn,
            &mut sess,
            path,
            data,
            *mode,
            acl.as_deref(),
        )?,
        Op::SetData {
            path,
            data,
            version,
        } => set_data(state, &mut out, txn, &sess.auth, path, data, *version)?,
        Op::Delete { path, version } => {
            let mut emptied = Vec::new();
            let auth = sess.auth.clone();
            match delete_node(
                state,
                &mut out,
                txn.zxid,
                path,
                *version,
                (req.session, &mut sess),
                Some(&auth),
                &mut emptied,
            )? {
                Ok(()) => {
                    reap_containers(state, &mut out, txn.zxid, (req.session, &mut sess), emptied)?;
                    OpResult::Deleted
                }
                Err(e) => e,
            }
        }
        Op::GetData { path, watch } => match checked(path).map(|()| path) {
            Err(e) => e,
            Ok(path) => match state.node_ref(path)? {
                None => OpResult::error(ZkError::NoNode, path.clone()),
                // ZooKeeper checks READ before it registers the watch: a refused read leaves
                // none (FinalRequestProcessor.handleGetDataRequest).
                Some(n) if !acl::allows(&n.acl, &sess.auth, perms::READ) => no_auth(path),
                Some(n) => {
                    let result = OpResult::Data {
                        data: n.data.clone(),
                        stat: n.stat,
                    };
                    if *watch {
                        add_watch(state, path, req.session, false)?;
                    }
                    result
                }
            },
        },
        Op::Exists { path, watch } => match checked(path) {
            Err(e) => e,
            Ok(()) => {
                let stat = state.node_ref(path)?.map(|n| n.stat);
                if *watch {
                    add_watch(state, path, req.session, false)?;
                }
                OpResult::Exists { stat }
            }
        },
        Op::GetChildren { path, watch } => match checked(path) {
            Err(e) => e,
            Ok(()) => match state.node_ref(path)? {
                None => OpResult::error(ZkError::NoNode, path.clone()),
                Some(n) if !acl::allows(&n.acl, &sess.auth, perms::READ) => no_auth(path),
                Some(n) => {
                    let result = OpResult::Children {
                        children: n.children.iter().cloned().collect(),
                        stat: n.stat,
                    };
                    if *watch {
                        add_watch(state, path, req.session, true)?;
                    }
                    result
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
        Op::GetEphemerals { prefix } => match crate::wire::check_prefix(prefix) {
            Err((error, message)) => OpResult::Error { error, message },
            // ZooKeeper's `FinalRequestProcessor` matches with `String.startsWith`; the
            // session's list is a `BTreeSet`, so the answer comes sorted.
            Ok(()) => OpResult::Ephemerals {
                paths: sess
                    .ephemerals
                    .iter()
                    .filter(|p| p.starts_with(prefix.as_str()))
                    .cloned()
                    .collect(),
            },
        },
        Op::Sync { path } => match checked(path) {
            Err(e) => e,
            Ok(()) => OpResult::Synced { path: path.clone() },
        },
        Op::GetAllChildrenNumber { path } => match checked(path) {
            Err(e) => e,
            Ok(()) => match state.node(path)? {
                None => OpResult::error(ZkError::NoNode, path.clone()),
                Some(n) if !acl::allows(&n.acl, &sess.auth, perms::READ) => no_auth(path),
                Some(n) => OpResult::AllChildrenNumber {
                    total: count_descendants(state, path, &n)?,
                },
            },
        },
        Op::AddWatch { path, recursive } => match checked(path) {
            Err(e) => e,
            Ok(()) => {
                add_persistent_watch(state, path, req.session, *recursive)?;
                OpResult::WatchAdded
            }
        },
        Op::RemoveWatches {
            path,
            kind,
            check_only,
        } => match checked(path) {
            Err(e) => e,
            Ok(()) => remove_watches(state, path, req.session, *kind, *check_only)?,
        },
        Op::DeleteExpired { .. } => OpResult::error(
            ZkError::BadArguments,
            "only the service deletes expired TTL nodes",
        ),
        Op::SetAcl { path, acl, version } => set_acl(state, &sess.auth, path, acl, *version)?,
        Op::GetAcl { path } => get_acl(state, &sess.auth, path)?,
        Op::Authenticated { ids } => {
            for id in ids {
                // ZooKeeper keeps each id once (`ServerCnxn.addAuthInfo`).
                if !sess.auth.contains(id) {
                    sess.auth.push(id.clone());
                }
            }
            OpResult::AuthAdded
        }
        // Writers put `Authenticated` in the log instead (`wire::to_log`); an `AddAuth`
        // found there is judged the same way, and its credentials never leave apply.
        Op::AddAuth { scheme, auth } => match acl::authenticate(scheme, auth) {
            Ok(id) => {
                if let Some(id) = id
                    && !sess.auth.contains(&id)
                {
                    sess.auth.push(id);
                }
                OpResult::AuthAdded
            }
            Err(e) => OpResult::error(e, format!("no authentication scheme {scheme:?}")),
        },
    };
    sess.last_seq = req.seq;
    sess.last_result = Some((txn.zxid, result.clone()));
    state.put_session(req.session, sess);
    finish(state, txn, out, result)
}

fn no_auth(path: &str) -> OpResult {
    OpResult::error(ZkError::NoAuth, path)
}

/// ZooKeeper's setACL (`PrepRequestProcessor`, `OpCode.setACL`): path rules, then the new
/// list (`InvalidACL`), then `NoNode`, ADMIN on the node (`NoAuth`), the aversion
/// (`BadVersion`). Only the ACL and aversion change; no watch fires.
fn set_acl<S: State>(
    state: &mut S,
    auth: &[Id],
    path: &str,
    new: &[Acl],
    version: i32,
) -> Result<OpResult, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(e);
    }
    let new = match acl::fixup(new, auth) {
        Ok(a) => a,
        Err(e) => return Ok(OpResult::error(e, format!("{path}: invalid ACL"))),
    };
    let Some(mut node) = state.node(path)? else {
        return Ok(OpResult::error(ZkError::NoNode, path));
    };
    if !acl::allows(&node.acl, auth, perms::ADMIN) {
        return Ok(no_auth(path));
    }
    if version != -1 && version != node.stat.aversion {
        return Ok(OpResult::error(
            ZkError::BadVersion,
            format!(
                "{path}: expected aversion {version}, node has {}",
                node.stat.aversion
            ),
        ));
    }
    node.stat.aversion = node.stat.aversion.wrapping_add(1);
    node.acl = acl::stored(new);
    let stat = node.stat;
    state.put_node(path, node);
    Ok(OpResult::Stat { stat })
}

/// ZooKeeper's getACL (`FinalRequestProcessor`, `OpCode.getACL`): `NoNode`, then READ or
/// ADMIN on the node (`NoAuth`); without ADMIN digest ids are shown as `user:x`.
fn get_acl<S: State>(state: &mut S, auth: &[Id], path: &str) -> Result<OpResult, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(e);
    }
    let Some(node) = state.node(path)? else {
        return Ok(OpResult::error(ZkError::NoNode, path));
    };
    if !acl::allows(&node.acl, auth, perms::READ | perms::ADMIN) {
        return Ok(no_auth(path));
    }
    let list = acl::effective(&node.acl);
    let list = if acl::allows(&node.acl, auth, perms::ADMIN) {
        list
    } else {
        acl::redacted(list)
    };
    Ok(OpResult::Acl {
        acl: list,
        stat: node.stat,
    })
}

fn unreachable_open() -> OpResult {
    OpResult::error(ZkError::SystemError, "open-session handled above")
}

/// Answer a redelivered request with the stored result of its first delivery, changing
/// nothing.
fn resend<S: State>(
    state: &mut S,
    req: &Request,
    zxid: Zxid,
    result: OpResult,
) -> Result<Applied, S::Error> {
    // The session keeps the result as stored; clients see it as `finish` showed it the first
    // time (a TTL node's owner marker reads as 0; found by `fuzz/`'s apply target).
    let result = client_result(result);
    let mut out = Outbox::default();
    out.push(
        req.session,
        SessionEvent::Result {
            seq: req.seq,
            zxid,
            result: result.clone(),
        },
    );
    Ok(Applied {
        result,
        deliveries: out.into_deliveries(state, req.session)?,
    })
}

fn finish<S: State>(
    state: &mut S,
    txn: &Txn,
    mut out: Outbox,
    result: OpResult,
) -> Result<Applied, S::Error> {
    let result = client_result(result);
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

/// The suffix of the next sequential child. ZooKeeper stores in a parent only the number of
/// children ever *created* under it, reports `cversion` as `2 * created - numChildren`
/// (`DataNode.copyStat`: creates plus deletes), and names sequential nodes from the stored
/// count. We keep the reported value, so the stored one is `(cversion + numChildren) / 2`.
/// (Found by the randomized differential test against ZooKeeper 3.8.)
fn sequence_number(parent: &Stat) -> i32 {
    ((i64::from(parent.cversion) + i64::from(parent.num_children)) / 2) as i32
}

/// The stat a client sees: ZooKeeper (`DataTree.getClientEphemeralOwner`) reports 0 as the
/// owner of containers and TTL nodes, whose stored owner field is only a type marker.
pub fn client_stat(mut stat: Stat) -> Stat {
    if !is_session_owner(stat.ephemeral_owner) {
        stat.ephemeral_owner = 0;
    }
    stat
}

fn client_result(r: OpResult) -> OpResult {
    match r {
        OpResult::Created { path, stat } => OpResult::Created {
            path,
            stat: client_stat(stat),
        },
        OpResult::Stat { stat } => OpResult::Stat {
            stat: client_stat(stat),
        },
        OpResult::Data { data, stat } => OpResult::Data {
            data,
            stat: client_stat(stat),
        },
        OpResult::Exists { stat } => OpResult::Exists {
            stat: stat.map(client_stat),
        },
        OpResult::Children { children, stat } => OpResult::Children {
            children,
            stat: client_stat(stat),
        },
        OpResult::Acl { acl, stat } => OpResult::Acl {
            acl,
            stat: client_stat(stat),
        },
        OpResult::Multi { results } => OpResult::Multi {
            results: results.into_iter().map(client_result).collect(),
        },
        other => other,
    }
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

/// Leave a persistent watch (ZooKeeper's `DataTree.addWatch`). The node need not exist.
fn add_persistent_watch<S: State>(
    state: &mut S,
    path: &str,
    session: SessionId,
    recursive: bool,
) -> Result<(), S::Error> {
    let mut w = state.watches(path)?;
    let new_recursive = if recursive {
        w.persistent_recursive.insert(session)
    } else {
        w.persistent.insert(session);
        false
    };
    state.put_watches(path, w);
    if new_recursive {
        adjust_recursive_count(state, 1)?;
    }
    Ok(())
}

/// `removeWatches` / `checkWatches` for one session, path and kind.
///
/// Each kind names its own watches, as in ZooKeeper 3.9 (ZOOKEEPER-4466/4471/4472): `Data`
/// and `Children` touch only one-shot watches, `Persistent` and `PersistentRecursive` only
/// those, `Any` all of them (in 3.8 too, `Any` removes a session's persistent watches). The
/// path must match exactly: a recursive watch on an ancestor is not "on" the path.
fn remove_watches<S: State>(
    state: &mut S,
    path: &str,
    session: SessionId,
    kind: WatchKind,
    check_only: bool,
) -> Result<OpResult, S::Error> {
    let mut w = state.watches(path)?;
    let any = kind == WatchKind::Any;
    let data = any || kind == WatchKind::Data;
    let child = any || kind == WatchKind::Children;
    let persistent = any || kind == WatchKind::Persistent;
    let recursive = any || kind == WatchKind::PersistentRecursive;
    let found = (data && w.data.contains(&session))
        || (child && w.child.contains(&session))
        || (persistent && w.persistent.contains(&session))
        || (recursive && w.persistent_recursive.contains(&session));
    if !found {
        // ZooKeeper's message for `NoWatcherException`: "<path> (type: <WatcherType>)".
        return Ok(OpResult::error(
            ZkError::NoWatcher,
            format!("{path} (type: {kind:?})"),
        ));
    }
    if check_only {
        return Ok(OpResult::WatchesRemoved);
    }
    if data {
        w.data.remove(&session);
    }
    if child {
        w.child.remove(&session);
    }
    if persistent {
        w.persistent.remove(&session);
    }
    let removed_recursive = recursive && w.persistent_recursive.remove(&session);
    state.put_watches(path, w);
    if removed_recursive {
        adjust_recursive_count(state, -1)?;
    }
    Ok(OpResult::WatchesRemoved)
}

/// Change the root's count of recursive watches. Called after the record holding the watch
/// was staged, so that when that record is the root's the change is not overwritten.
fn adjust_recursive_count<S: State>(state: &mut S, delta: i32) -> Result<(), S::Error> {
    let mut root = state.watches("/")?;
    root.recursive_anywhere = root.recursive_anywhere.saturating_add_signed(delta);
    state.put_watches("/", root);
    Ok(())
}

fn is_live<S: State>(state: &mut S, session: SessionId) -> Result<bool, S::Error> {
    Ok(matches!(state.session_ref(session)?, Some(rec) if !rec.closed))
}

/// Add the open sessions of a persistent watch set to `fired` and drop the others from it:
/// a closed session's persistent watches would otherwise stay forever (ZooKeeper drops a
/// connection's watches when it closes; we keep no per-session index of them). Returns how
/// many were dropped.
fn fire_persistent<S: State>(
    state: &mut S,
    set: &mut BTreeSet<SessionId>,
    fired: &mut BTreeSet<SessionId>,
) -> Result<i32, S::Error> {
    let mut dead = Vec::new();
    for &session in set.iter() {
        if is_live(state, session)? {
            fired.insert(session);
        } else {
            dead.push(session);
        }
    }
    for session in &dead {
        set.remove(session);
    }
    Ok(dead.len() as i32)
}

/// Fire ZooKeeper's trigger table for one event (Guarantee 6; `WatchManager.triggerWatch`
/// over the data and child tables):
/// - one-shot data/exists watches on the path: created, deleted, data changed; removed;
/// - one-shot child watches on the path: children changed, deleted; removed;
/// - persistent watches on the path: every event; kept;
/// - persistent recursive watches on the path or any ancestor: every event but children
///   changed; kept.
///
/// Each session hears the event once, however many of its watches match.
///
/// Cost: recursive watches are kept on the watched path's record, so finding them means
/// reading the record of every ancestor of the event path. That walk is done only when the
/// root's `recursive_anywhere` count is non-zero, and never for children-changed events; the
/// price of the check is one read of the root's record per event (which the distributor
/// caches for its batch).
fn trigger<S: State>(
    state: &mut S,
    out: &mut Outbox,
    kind: EventType,
    path: &str,
    zxid: Zxid,
) -> Result<(), S::Error> {
    let none_here = state.watches_ref(path)?.is_none_or(|w| {
        w.data.is_empty()
            && w.child.is_empty()
            && w.persistent.is_empty()
            && w.persistent_recursive.is_empty()
    });
    let walk = kind.fires_recursive_watch()
        && state
            .watches_ref("/")?
            .is_some_and(|w| w.recursive_anywhere > 0);
    if none_here && !walk {
        // Most events: nothing watches the path, and no recursive watch anywhere.
        return Ok(());
    }
    // The event path first, then its ancestors up to the root; no path appears twice, so
    // each record is changed and staged once.
    let mut records = vec![(path.to_string(), state.watches(path)?, false)];
    if walk {
        let mut p = path;
        while let Some(parent) = path::parent(p) {
            records.push((parent.to_string(), state.watches(parent)?, false));
            p = parent;
        }
    }
    let mut fired = BTreeSet::new();
    let mut dead_recursive = 0;
    for (i, (_, w, changed)) in records.iter_mut().enumerate() {
        if i == 0 {
            if kind.fires_data_watch() && !w.data.is_empty() {
                fired.extend(std::mem::take(&mut w.data));
                *changed = true;
            }
            if kind.fires_child_watch() && !w.child.is_empty() {
                fired.extend(std::mem::take(&mut w.child));
                *changed = true;
            }
            if fire_persistent(state, &mut w.persistent, &mut fired)? > 0 {
                *changed = true;
            }
        }
        if kind.fires_recursive_watch() {
            let dead = fire_persistent(state, &mut w.persistent_recursive, &mut fired)?;
            if dead > 0 {
                dead_recursive += dead;
                *changed = true;
            }
        }
    }
    for (p, w, changed) in records {
        if changed {
            state.put_watches(&p, w);
        }
    }
    if dead_recursive > 0 {
        adjust_recursive_count(state, -dead_recursive)?;
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
    Ok(())
}

/// Number of descendants of `path` (whose record is `node`), all levels: ZooKeeper's
/// `DataTree.getAllChildrenNumber`. Reads every node of the subtree, so its cost grows with
/// the subtree, as ZooKeeper's scan of its whole node table does.
fn count_descendants<S: State>(
    state: &mut S,
    path: &str,
    node: &NodeRecord,
) -> Result<i32, S::Error> {
    let mut total: i32 = 0;
    let mut stack: Vec<String> = node.children.iter().map(|c| path::join(path, c)).collect();
    while let Some(child) = stack.pop() {
        total = total.saturating_add(1);
        if let Some(n) = state.node(&child)? {
            stack.extend(n.children.iter().map(|c| path::join(&child, c)));
        }
    }
    Ok(total)
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
    let mut emptied = Vec::new();
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let r = match op {
            MultiOp::Create {
                path,
                data,
                mode,
                acl,
            } => create(
                &mut overlay,
                &mut sub_out,
                txn,
                &mut sub_sess,
                path,
                data,
                *mode,
                acl.as_deref(),
            )?,
            MultiOp::Delete { path, version } => {
                let auth = sub_sess.auth.clone();
                let owner = (txn.request.session, &mut sub_sess);
                match delete_node(
                    &mut overlay,
                    &mut sub_out,
                    txn.zxid,
                    path,
                    *version,
                    owner,
                    Some(&auth),
                    &mut emptied,
                )? {
                    Ok(()) => OpResult::Deleted,
                    Err(e) => e,
                }
            }
            MultiOp::SetData {
                path,
                data,
                version,
            } => set_data(
                &mut overlay,
                &mut sub_out,
                txn,
                &sub_sess.auth,
                path,
                data,
                *version,
            )?,
            MultiOp::Check { path, version } => {
                check(&mut overlay, &sub_sess.auth, path, *version)?
            }
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
    // Containers emptied by the multi go only now that every op has run (see the module
    // docs), inside the overlay so that they share the multi's zxid and all-or-nothing fate.
    reap_containers(
        &mut overlay,
        &mut sub_out,
        txn.zxid,
        (txn.request.session, &mut sub_sess),
        emptied,
    )?;
    overlay.commit();
    out.append(sub_out);
    *sess = sub_sess;
    Ok(OpResult::Multi { results })
}

/// A multi's `check`: `NoNode`, READ on the node (`NoAuth`), then the version, as
/// ZooKeeper's `PrepRequestProcessor` (`OpCode.check`).
fn check<S: State>(
    state: &mut S,
    auth: &[Id],
    path: &str,
    version: i32,
) -> Result<OpResult, S::Error> {
    if let Err(e) = checked(path) {
        return Ok(e);
    }
    Ok(match state.node(path)? {
        None => OpResult::error(ZkError::NoNode, path),
        Some(n) if !acl::allows(&n.acl, auth, perms::READ) => no_auth(path),
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
    fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, S::Error> {
        match self.nodes.get(path) {
            Some(n) => Ok(n.as_ref()),
            None => self.base.node_ref(path),
        }
    }
    fn put_node(&mut self, path: &str, node: NodeRecord) {
        self.nodes.insert(path.to_string(), Some(node));
    }
    fn remove_node(&mut self, path: &str) {
        self.nodes.insert(path.to_string(), None);
    }
    fn session_ref(&mut self, id: SessionId) -> Result<Option<&SessionRecord>, S::Error> {
        match self.sessions.get(&id) {
            Some(s) => Ok(Some(s)),
            None => self.base.session_ref(id),
        }
    }
    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        self.sessions.insert(id, session);
    }
    fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, S::Error> {
        match self.watches.get(path) {
            Some(w) => Ok(Some(w)),
            None => self.base.watches_ref(path),
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

/// ZooKeeper's create (`PrepRequestProcessor.pRequest2TxnCreate`), in its order: the TTL,
/// the ACL (`InvalidACL`; before the rest of the path rules, as ZooKeeper checks only for a
/// `/` first), the path, the parent (`NoNode`), CREATE on the parent (`NoAuth`), the
/// sequential name, `NodeExists`, an ephemeral parent.
#[allow(clippy::too_many_arguments)]
fn create<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    sess: &mut SessionRecord,
    path: &str,
    data: &[u8],
    mode: CreateMode,
    acl: Option<&[Acl]>,
) -> Result<OpResult, S::Error> {
    if let Err(e) = mode.validate() {
        return Ok(OpResult::error(e, format!("{path}: TTL out of range")));
    }
    let acl = match acl {
        None => Vec::new(),
        Some(_) if !crate::wire::create_path_shaped(path) => {
            return Ok(OpResult::error(ZkError::BadArguments, path));
        }
        Some(list) => match acl::fixup(list, &sess.auth) {
            Ok(a) => acl::stored(a),
            Err(e) => return Ok(OpResult::error(e, format!("{path}: invalid ACL"))),
        },
    };
    if let Err(e) = path::validate_create(path, mode.is_sequential()) {
        return Ok(OpResult::error(ZkError::BadArguments, e.to_string()));
    }
    if data.len() > crate::MAX_DATA_LEN {
        return Ok(OpResult::error(ZkError::BadArguments, "data too large"));
    }
    // For a sequential create the parent is that of the prefix ("/a/" → "/a").
    let Some(parent_path) = path::parent_of_prefix(path).map(str::to_string) else {
        return Ok(OpResult::error(ZkError::NodeExists, path));
    };
    let Some(mut parent) = state.node(&parent_path)? else {
        return Ok(OpResult::error(ZkError::NoNode, parent_path));
    };
    if !acl::allows(&parent.acl, &sess.auth, perms::CREATE) {
        return Ok(no_auth(&parent_path));
    }
    let path = if mode.is_sequential() {
        format!("{path}{:010}", sequence_number(&parent.stat))
    } else {
        path.to_string()
    };
    if state.node_ref(&path)?.is_some() {
        return Ok(OpResult::error(ZkError::NodeExists, path));
    }
    // Only a plain ephemeral refuses children (ZooKeeper checks for `EphemeralType.NORMAL`):
    // a container is made to have them.
    if is_session_owner(parent.stat.ephemeral_owner) {
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
        ephemeral_owner: mode.ephemeral_owner(txn.request.session),
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
            acl,
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

/// setData: `NoNode`, WRITE on the node (`NoAuth`), then the version.
fn set_data<S: State>(
    state: &mut S,
    out: &mut Outbox,
    txn: &Txn,
    auth: &[Id],
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
    let Some(old) = state.node_ref(path)? else {
        return Ok(OpResult::error(ZkError::NoNode, path));
    };
    if !acl::allows(&old.acl, auth, perms::WRITE) {
        return Ok(no_auth(path));
    }
    if version != -1 && version != old.stat.version {
        return Ok(OpResult::error(
            ZkError::BadVersion,
            format!(
                "{path}: expected version {version}, node has {}",
                old.stat.version
            ),
        ));
    }
    // A copy of everything but the data being replaced.
    let mut node = NodeRecord {
        data: data.to_vec(),
        stat: old.stat,
        children: old.children.clone(),
        acl: old.acl.clone(),
    };
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
/// ephemeral node leaves its owner's list in the same txn. `auth` is the ids of a client's
/// delete, which needs DELETE on the parent (checked after the parent's `NoNode` and before
/// the node's, as ZooKeeper does); `None` for the deletes the service makes itself (a closed
/// session's ephemerals, containers, expired TTL nodes), which ZooKeeper does not check
/// either. When the parent is a container left without children it is added to `emptied`,
/// for [`reap_containers`].
#[allow(clippy::too_many_arguments)]
fn delete_node<S: State>(
    state: &mut S,
    out: &mut Outbox,
    zxid: Zxid,
    path: &str,
    version: i32,
    owner: (SessionId, &mut SessionRecord),
    auth: Option<&[Id]>,
    emptied: &mut Vec<String>,
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
    if let Some(auth) = auth
        && !acl::allows(&parent.acl, auth, perms::DELETE)
    {
        return Ok(Err(no_auth(path)));
    }
    let Some(node) = state.node_ref(path)? else {
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
    if is_session_owner(eph_owner) {
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
    if parent.stat.ephemeral_owner == CONTAINER_EPHEMERAL_OWNER && parent.children.is_empty() {
        emptied.push(parent_path.clone());
    }
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

/// The service's [`Op::DeleteExpired`]: delete `path` if it is a TTL node that has expired at
/// the txn's time (a change or a child since the heartbeat's sweep keeps it), with the
/// events of a delete and the reaping of a container it empties. Nobody hears the result.
fn delete_expired<S: State>(state: &mut S, txn: &Txn, path: &str) -> Result<Applied, S::Error> {
    let mut out = Outbox::default();
    let due = checked(path).is_ok()
        && state
            .node(path)?
            .is_some_and(|n| n.children.is_empty() && crate::ttl::expired(&n.stat, txn.time_ms));
    let result = if due {
        let mut service = SessionRecord::default();
        let mut emptied = Vec::new();
        let deleted = delete_node(
            state,
            &mut out,
            txn.zxid,
            path,
            -1,
            (SERVICE_SESSION, &mut service),
            None,
            &mut emptied,
        )?;
        reap_containers(
            state,
            &mut out,
            txn.zxid,
            (SERVICE_SESSION, &mut service),
            emptied,
        )?;
        match deleted {
            Ok(()) => OpResult::Deleted,
            Err(e) => e,
        }
    } else {
        OpResult::error(ZkError::NoNode, format!("{path}: no expired TTL node"))
    };
    Ok(Applied {
        result,
        deliveries: out.into_deliveries(state, SERVICE_SESSION)?,
    })
}

/// Delete the containers in `emptied` that are still containers without children once the
/// txn's own deletes are done, each with the events of a client delete; a parent container
/// they leave empty is deleted in turn. (ZooKeeper's `ContainerManager` does this later, with
/// `deleteContainer` requests; see the module docs.)
fn reap_containers<S: State>(
    state: &mut S,
    out: &mut Outbox,
    zxid: Zxid,
    owner: (SessionId, &mut SessionRecord),
    mut emptied: Vec<String>,
) -> Result<(), S::Error> {
    let (issuer, sess) = owner;
    let mut next = 0;
    while let Some(p) = emptied.get(next).cloned() {
        next += 1;
        let Some(node) = state.node(&p)? else {
            continue; // Already reaped (listed twice) or deleted by the txn itself.
        };
        if node.stat.ephemeral_owner != CONTAINER_EPHEMERAL_OWNER || !node.children.is_empty() {
            continue; // Refilled later in the same multi, or replaced by another node.
        }
        // Cannot fail: the node exists, has no children and any version is accepted.
        let _ = delete_node(
            state,
            out,
            zxid,
            &p,
            -1,
            (issuer, &mut *sess),
            None,
            &mut emptied,
        )?;
    }
    Ok(())
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
    fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, Self::Error> {
        Ok(self.nodes.get(path))
    }
    fn put_node(&mut self, path: &str, node: NodeRecord) {
        self.nodes.insert(path.to_string(), node);
    }
    fn remove_node(&mut self, path: &str) {
        self.nodes.remove(path);
    }
    fn session_ref(&mut self, id: SessionId) -> Result<Option<&SessionRecord>, Self::Error> {
        Ok(self.sessions.get(&id))
    }
    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        self.sessions.insert(id, session);
    }
    fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, Self::Error> {
        Ok(self.watches.get(path))
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
            let seq = *seq;
            self.run_at(session, seq, 1001 + self.zxid, op)
        }
        /// Apply the next txn with an explicit seq and time.
        fn run_at(&mut self, session: SessionId, seq: i64, time_ms: i64, op: Op) -> Applied {
            self.zxid += 1;
            let txn = Txn {
                zxid: self.zxid,
                time_ms,
                request: Request { session, seq, op },
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
                    fallback: None,
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
                    acl: None,
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

    /// The watch events `session` got from one applied txn, in order.
    fn events_for(a: &Applied, session: SessionId) -> Vec<(EventType, String)> {
        a.deliveries
            .iter()
            .filter(|d| d.session == session)
            .flat_map(|d| d.events.iter())
            .filter_map(|e| match e {
                SessionEvent::Watch { event } => Some((event.kind, event.path.clone())),
                SessionEvent::Result { .. } => None,
            })
            .collect()
    }

    fn ev(kind: EventType, path: &str) -> (EventType, String) {
        (kind, path.to_string())
    }

    impl World {
        fn delete(&mut self, s: SessionId, path: &str) -> Applied {
            self.run(
                s,
                Op::Delete {
                    path: path.into(),
                    version: -1,
                },
            )
        }
        fn set(&mut self, s: SessionId, path: &str) -> Applied {
            self.run(
                s,
                Op::SetData {
                    path: path.into(),
                    data: vec![7],
                    version: -1,
                },
            )
        }
        fn add_watch(&mut self, s: SessionId, path: &str, recursive: bool) {
            let r = self.run(
                s,
                Op::AddWatch {
                    path: path.into(),
                    recursive,
                },
            );
            assert_eq!(r.result, OpResult::WatchAdded);
        }
        fn remove_watches(
            &mut self,
            s: SessionId,
            path: &str,
            kind: WatchKind,
            check_only: bool,
        ) -> OpResult {
            self.run(
                s,
                Op::RemoveWatches {
                    path: path.into(),
                    kind,
                    check_only,
                },
            )
            .result
        }
        fn recursive_count(&self) -> u32 {
            self.state
                .watches
                .get("/")
                .map_or(0, |w| w.recursive_anywhere)
        }
    }

    /// A node whose child names need escaping in JSON, with data of every length mod 3.
    fn node_with_odd_children() -> NodeRecord {
        let mut children = BTreeSet::new();
        for name in ["quote\"d", "back\\slash", "tab\tname", "ünï", "ctl\u{1}"] {
            children.insert(name.to_string());
        }
        NodeRecord {
            data: b"ab".to_vec(),
            stat: Stat::default(),
            children,
            acl: Vec::new(),
        }
    }

    #[test]
    fn node_json_is_what_serde_json_makes_of_record_and_view() {
        let mut w = World::new();
        w.open(1);
        w.create(1, "/v", CreateMode::Persistent);
        w.create(1, "/v/a", CreateMode::Persistent);
        w.create(1, "/v/b", CreateMode::EphemeralSequential);
        w.create(1, "/t", CreateMode::PersistentWithTtl { ttl_ms: 5000 });
        let mut locked = w.state.nodes["/v"].clone();
        locked.data = vec![0, 1, 2, 255];
        locked.acl = vec![Acl {
            perms: perms::READ,
            scheme: "digest".into(),
            id: "u:x".into(),
        }];
        let mut records: Vec<NodeRecord> = w.state.nodes.values().cloned().collect();
        records.push(locked);
        let mut named = node_with_odd_children();
        records.push(named.clone());
        named.data = Vec::new();
        records.push(named);
        for node in records {
            let view = serde_json::to_vec(&node.view()).expect("view encodes");
            let object = node.view_json().expect("view_json encodes");
            if node.view().stat == node.stat {
                assert_eq!(object, view);
            } else {
                // A TTL node: the view hides its owner, the object keeps it after the view.
                let owner = format!(",\"owner\":{}}}", node.stat.ephemeral_owner);
                assert_eq!(object, [&view[..view.len() - 1], owner.as_bytes()].concat());
            }
            let read: NodeView = serde_json::from_slice(&object).expect("clients read it");
            assert_eq!(read, node.view());
            assert_eq!(NodeRecord::from_object(&object).expect("object"), node);
            let record = serde_json::to_vec(&node).expect("record encodes");
            assert_eq!(node.record_json().expect("record_json encodes"), record);
            let back: NodeRecord = serde_json::from_slice(&record).expect("record decodes");
            assert_eq!(back, node);
            // The binary layout the system bucket stores now, and the JSON one it stored
            // before, both read back.
            let bytes = node.record_bytes().expect("record_bytes encodes");
            assert!(bytes.starts_with(NODE_RECORD_MAGIC));
            assert_eq!(NodeRecord::from_record(&bytes), Ok(node.clone()));
            assert_eq!(NodeRecord::from_record(&record), Ok(node.clone()));
            assert!(NodeRecord::from_record(&bytes[..bytes.len() - 1]).is_err());
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
            matches!(r, OpResult::Created { ref path, .. } if path == "/q/n-0000000001"),
            "a delete advances cversion but not the sequence: {r:?}"
        );
        let r = w.create(1, "/q/", CreateMode::EphemeralSequential);
        assert!(
            matches!(r, OpResult::Created { ref path, .. } if path == "/q/0000000002"),
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
                acl: None,
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
                        acl: None,
                    },
                    MultiOp::Create {
                        path: "/m/s-".into(),
                        data: vec![],
                        mode: CreateMode::EphemeralSequential,
                        acl: None,
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
                        acl: None,
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
    fn ttl_nodes_are_deleted_only_when_expired_and_childless() {
        let mut w = World::new();
        w.open(1);
        w.run(
            1,
            Op::Exists {
                path: "/t".into(),
                watch: false,
            },
        );
        let created = w.run(
            1,
            Op::Create {
                path: "/t".into(),
                data: vec![],
                mode: CreateMode::PersistentWithTtl { ttl_ms: 100 },
                acl: None,
            },
        );
        let OpResult::Created { stat, .. } = created.result else {
            panic!("TTL create failed: {:?}", created.result);
        };
        assert_eq!(
            stat.ephemeral_owner, 0,
            "clients see 0, as ZooKeeper reports"
        );
        let stored = w.state.nodes["/t"].stat;
        assert_eq!(crate::ttl::of_owner(stored.ephemeral_owner), Some(100));
        w.run(
            1,
            Op::Exists {
                path: "/t".into(),
                watch: true,
            },
        );
        let reap = |w: &mut World, at: i64| {
            w.run_at(
                SERVICE_SESSION,
                0,
                at,
                Op::DeleteExpired { path: "/t".into() },
            )
        };
        // Not yet expired: nothing happens.
        let early = reap(&mut w, stored.mtime + 100);
        assert_eq!(err(&early.result), Some(ZkError::NoNode));
        assert!(w.state.nodes.contains_key("/t") && early.deliveries.is_empty());
        // A child keeps it, however old.
        create_child(&mut w);
        let with_child = reap(&mut w, stored.mtime + 10_000);
        assert_eq!(err(&with_child.result), Some(ZkError::NoNode));
        w.delete(1, "/t/c");
        // Expired and childless: deleted with the watcher's event; nobody hears the result.
        let due = reap(&mut w, stored.mtime + 10_000);
        assert_eq!(due.result, OpResult::Deleted);
        assert!(!w.state.nodes.contains_key("/t"));
        assert_eq!(events_for(&due, 1), vec![ev(EventType::NodeDeleted, "/t")]);
        assert!(due.deliveries.iter().all(|d| d.session == 1));
        // A client cannot ask for it.
        let forged = w.run(1, Op::DeleteExpired { path: "/t".into() });
        assert_eq!(err(&forged.result), Some(ZkError::BadArguments));
        // And TTLs out of range are refused like ZooKeeper's `validateTTL`.
        for ttl_ms in [0, -5, crate::ttl::MAX_TTL_MS + 1] {
            let r = w.run(
                1,
                Op::Create {
                    path: "/u".into(),
                    data: vec![],
                    mode: CreateMode::PersistentWithTtl { ttl_ms },
                    acl: None,
                },
            );
            assert_eq!(err(&r.result), Some(ZkError::BadArguments));
        }

        fn create_child(w: &mut World) {
            let r = w.create(1, "/t/c", CreateMode::Ephemeral);
            assert!(matches!(r, OpResult::Created { .. }), "{r:?}");
        }
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
                acl: None,
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

    #[test]
    fn a_redelivered_close_is_answered_as_the_first() {
        let mut w = World::new();
        w.open(1);
        let first = w.run(1, Op::CloseSession);
        assert_eq!(first.result, OpResult::SessionClosed);
        let again = w.run_at(1, 1, 5000, Op::CloseSession);
        assert_eq!(again.result, OpResult::SessionClosed);
        assert_eq!(
            again.deliveries.len(),
            1,
            "the closed session still hears it"
        );
        // Anything newer from the closed session is refused.
        let later = w.run_at(1, 2, 5000, Op::CloseSession);
        assert!(matches!(
            later.result,
            OpResult::Error {
                error: ZkError::SessionExpired,
                ..
            }
        ));
    }

    #[test]
    fn a_redelivered_ttl_create_shows_owner_zero() {
        let mut w = World::new();
        w.open(1);
        let op = Op::Create {
            path: "/t".into(),
            data: vec![],
            mode: CreateMode::PersistentWithTtl { ttl_ms: 1000 },
            acl: None,
        };
        let first = w.run_at(1, 1, 5000, op.clone());
        let again = w.run_at(1, 1, 5000, op);
        assert_eq!(again.result, first.result);
        let OpResult::Created { stat, .. } = again.result else {
            panic!("{:?}", again.result)
        };
        assert_eq!(stat.ephemeral_owner, 0);
    }

    #[test]
    fn container_owner_and_children() {
        let mut w = World::new();
        w.open(1);
        let r = w.create(1, "/c", CreateMode::Container);
        let OpResult::Created { stat, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            stat.ephemeral_owner, 0,
            "clients see 0 as a container's owner"
        );
        assert_eq!(
            w.state.nodes["/c"].stat.ephemeral_owner,
            i64::MIN,
            "stored as CONTAINER_EPHEMERAL_OWNER"
        );
        assert_eq!(w.state.nodes["/c"].view().stat.ephemeral_owner, 0);
        assert!(
            w.state.sessions[&1].ephemerals.is_empty(),
            "a container belongs to no session"
        );
        // Not an ephemeral parent: children of every kind are allowed, containers too.
        for (p, m) in [
            ("/c/p", CreateMode::Persistent),
            ("/c/e", CreateMode::Ephemeral),
            ("/c/s-", CreateMode::PersistentSequential),
            ("/c/inner", CreateMode::Container),
        ] {
            let r = w.create(1, p, m);
            assert!(matches!(r, OpResult::Created { .. }), "{p}: {r:?}");
        }
        // A container that never had a child stays (ZooKeeper's default
        // znode.container.maxNeverUsedIntervalMs = 0 never reaps those).
        assert!(w.state.nodes.contains_key("/c/inner"));
        // Removing one of several children leaves the container.
        w.delete(1, "/c/p");
        assert!(w.state.nodes.contains_key("/c"));
        assert!(is_session_owner(1) && !is_session_owner(0));
        assert!(!is_session_owner(CONTAINER_EPHEMERAL_OWNER));
        assert!(
            !is_session_owner(0xff00_0000_0000_0005_u64 as i64),
            "TTL marker"
        );
    }

    #[test]
    fn container_goes_with_its_last_child_and_cascades() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(1, "/p", CreateMode::Container);
        w.create(1, "/p/c", CreateMode::Container);
        w.create(1, "/p/c/x", CreateMode::Persistent);
        w.create(1, "/keep", CreateMode::Persistent);
        w.create(1, "/keep/x", CreateMode::Persistent);
        for p in ["/p/c/x", "/p/c", "/p"] {
            w.run(
                2,
                Op::Exists {
                    path: p.into(),
                    watch: true,
                },
            );
        }
        for p in ["/p/c", "/p", "/"] {
            w.run(
                2,
                Op::GetChildren {
                    path: p.into(),
                    watch: true,
                },
            );
        }
        let r = w.delete(1, "/p/c/x");
        assert_eq!(r.result, OpResult::Deleted);
        assert_eq!(
            events_for(&r, 2),
            vec![
                ev(EventType::NodeDeleted, "/p/c/x"),
                ev(EventType::NodeChildrenChanged, "/p/c"),
                ev(EventType::NodeDeleted, "/p/c"),
                ev(EventType::NodeChildrenChanged, "/p"),
                ev(EventType::NodeDeleted, "/p"),
                ev(EventType::NodeChildrenChanged, "/"),
            ]
        );
        assert!(!w.state.nodes.contains_key("/p/c"));
        assert!(!w.state.nodes.contains_key("/p"));
        let root = &w.state.nodes["/"];
        assert_eq!(root.stat.pzxid, w.zxid, "same txn");
        assert!(!root.children.contains("p"));
        // A plain persistent parent is not reaped.
        w.delete(1, "/keep/x");
        assert!(w.state.nodes.contains_key("/keep"));
    }

    #[test]
    fn container_emptied_by_session_close() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(2, "/locks", CreateMode::Container);
        w.create(1, "/locks/a", CreateMode::Ephemeral);
        w.create(1, "/locks/b", CreateMode::EphemeralSequential);
        w.run(
            2,
            Op::Exists {
                path: "/locks".into(),
                watch: true,
            },
        );
        let r = w.run(1, Op::CloseSession);
        assert_eq!(r.result, OpResult::SessionClosed);
        assert!(!w.state.nodes.contains_key("/locks"));
        assert_eq!(
            events_for(&r, 2),
            vec![ev(EventType::NodeDeleted, "/locks")]
        );
        assert_eq!(w.state.nodes["/"].stat.pzxid, w.zxid);
    }

    #[test]
    fn container_in_multi_is_judged_after_all_ops() {
        let mut w = World::new();
        w.open(1);
        w.create(1, "/c", CreateMode::Container);
        w.create(1, "/c/a", CreateMode::Persistent);
        // Last child deleted, then another created: the container stays, as it would for
        // ZooKeeper's later check, and the create does not fail with NoNode.
        let r = w.run(
            1,
            Op::Multi {
                ops: vec![
                    MultiOp::Delete {
                        path: "/c/a".into(),
                        version: -1,
                    },
                    MultiOp::Create {
                        path: "/c/b".into(),
                        data: vec![],
                        mode: CreateMode::Persistent,
                        acl: None,
                    },
                ],
            },
        );
        assert!(matches!(r.result, OpResult::Multi { .. }), "{:?}", r.result);
        assert!(w.state.nodes.contains_key("/c/b"));
        // A failed multi reaps nothing.
        let before = w.state.nodes.clone();
        let r = w.run(
            1,
            Op::Multi {
                ops: vec![
                    MultiOp::Delete {
                        path: "/c/b".into(),
                        version: -1,
                    },
                    MultiOp::Check {
                        path: "/c".into(),
                        version: 9,
                    },
                ],
            },
        );
        assert!(matches!(r.result, OpResult::MultiFailed { index: 1, .. }));
        assert_eq!(w.state.nodes, before);
        // A multi that empties it deletes it at the multi's zxid.
        let r = w.run(
            1,
            Op::Multi {
                ops: vec![
                    MultiOp::Delete {
                        path: "/c/b".into(),
                        version: -1,
                    },
                    MultiOp::Create {
                        path: "/other".into(),
                        data: vec![],
                        mode: CreateMode::Persistent,
                        acl: None,
                    },
                ],
            },
        );
        let OpResult::Multi { results } = &r.result else {
            panic!("{:?}", r.result)
        };
        assert_eq!(results.len(), 2, "the reap adds no result");
        assert!(!w.state.nodes.contains_key("/c"));
        assert_eq!(w.state.nodes["/"].stat.pzxid, w.zxid);
    }

    #[test]
    fn get_ephemerals_by_prefix() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(1, "/a", CreateMode::Persistent);
        w.create(1, "/e1", CreateMode::Ephemeral);
        w.create(1, "/a/e2", CreateMode::Ephemeral);
        w.create(1, "/ab", CreateMode::EphemeralSequential);
        w.create(1, "/p", CreateMode::Persistent);
        w.create(2, "/e3", CreateMode::Ephemeral);
        let mut get = |s, prefix: &str| {
            w.run(
                s,
                Op::GetEphemerals {
                    prefix: prefix.into(),
                },
            )
            .result
        };
        let paths = |v: &[&str]| OpResult::Ephemerals {
            paths: v.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(get(1, "/"), paths(&["/a/e2", "/ab0000000002", "/e1"]));
        assert_eq!(
            get(1, "/a"),
            paths(&["/a/e2", "/ab0000000002"]),
            "string prefix"
        );
        assert_eq!(get(1, "/a/"), paths(&["/a/e2"]));
        assert_eq!(get(1, "/zz"), paths(&[]));
        assert_eq!(get(2, "/"), paths(&["/e3"]), "only the issuer's own");
        assert_eq!(err(&get(1, "a")), Some(ZkError::BadArguments));
    }

    #[test]
    fn get_all_children_number_counts_descendants() {
        let mut w = World::new();
        w.open(1);
        let count =
            |w: &mut World, p: &str| w.run(1, Op::GetAllChildrenNumber { path: p.into() }).result;
        // ZooKeeper answers nodes.size() - 2 for "/": /zookeeper, /zookeeper/config,
        // /zookeeper/quota on a fresh tree.
        assert_eq!(count(&mut w, "/"), OpResult::AllChildrenNumber { total: 3 });
        for p in ["/a", "/a/b", "/a/b/c", "/a/d"] {
            w.create(1, p, CreateMode::Persistent);
        }
        assert_eq!(
            count(&mut w, "/a"),
            OpResult::AllChildrenNumber { total: 3 }
        );
        assert_eq!(
            count(&mut w, "/a/b/c"),
            OpResult::AllChildrenNumber { total: 0 }
        );
        assert_eq!(count(&mut w, "/"), OpResult::AllChildrenNumber { total: 7 });
        assert_eq!(err(&count(&mut w, "/nope")), Some(ZkError::NoNode));
        assert_eq!(err(&count(&mut w, "/a/")), Some(ZkError::BadArguments));
    }

    #[test]
    fn persistent_watch_sees_every_event_on_its_path_and_stays() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.add_watch(2, "/w", false); // the node need not exist
        assert_eq!(w.recursive_count(), 0);
        let r = w.create(1, "/w", CreateMode::Persistent);
        assert!(matches!(r, OpResult::Created { .. }));
        let steps: Vec<(Applied, Vec<(EventType, String)>)> = vec![
            (
                w.run(
                    1,
                    Op::Create {
                        path: "/w/x".into(),
                        data: vec![],
                        mode: CreateMode::Persistent,
                        acl: None,
                    },
                ),
                vec![ev(EventType::NodeChildrenChanged, "/w")],
            ),
            (w.set(1, "/w"), vec![ev(EventType::NodeDataChanged, "/w")]),
            (w.set(1, "/w/x"), vec![]),
            (
                w.delete(1, "/w/x"),
                vec![ev(EventType::NodeChildrenChanged, "/w")],
            ),
            (w.delete(1, "/w"), vec![ev(EventType::NodeDeleted, "/w")]),
            (
                w.run(
                    1,
                    Op::Create {
                        path: "/w".into(),
                        data: vec![],
                        mode: CreateMode::Persistent,
                        acl: None,
                    },
                ),
                vec![ev(EventType::NodeCreated, "/w")],
            ),
        ];
        for (i, (a, want)) in steps.iter().enumerate() {
            assert_eq!(&events_for(a, 2), want, "step {i}");
        }
        assert!(w.state.watches["/w"].persistent.contains(&2));
    }

    #[test]
    fn recursive_watch_sees_the_subtree_but_not_child_lists() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.add_watch(2, "/r", true);
        w.add_watch(2, "/r", true); // twice is one watch
        assert_eq!(w.recursive_count(), 1);
        let mut got = Vec::new();
        for p in ["/r", "/r/a", "/r/a/b", "/rx", "/other"] {
            let a = w.run(
                1,
                Op::Create {
                    path: p.into(),
                    data: vec![],
                    mode: CreateMode::Persistent,
                    acl: None,
                },
            );
            got.extend(events_for(&a, 2));
        }
        let a = w.set(1, "/r/a/b");
        got.extend(events_for(&a, 2));
        let a = w.delete(1, "/r/a/b");
        got.extend(events_for(&a, 2));
        assert_eq!(
            got,
            vec![
                ev(EventType::NodeCreated, "/r"),
                ev(EventType::NodeCreated, "/r/a"),
                ev(EventType::NodeCreated, "/r/a/b"),
                ev(EventType::NodeDataChanged, "/r/a/b"),
                ev(EventType::NodeDeleted, "/r/a/b"),
            ],
            "no NodeChildrenChanged, nothing outside /r (not even /rx)"
        );
        // A recursive watch on the root sees everything, and the root's own node too.
        w.open(3);
        w.add_watch(3, "/", true);
        assert_eq!(w.recursive_count(), 2);
        let a = w.set(1, "/other");
        assert_eq!(
            events_for(&a, 3),
            vec![ev(EventType::NodeDataChanged, "/other")]
        );
        let a = w.set(1, "/");
        assert_eq!(events_for(&a, 3), vec![ev(EventType::NodeDataChanged, "/")]);
        assert_eq!(events_for(&a, 2), vec![]);
    }

    #[test]
    fn one_event_per_session_per_trigger() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.open(3);
        // Session 2: one-shot exists, persistent and recursive on /x, recursive on two
        // ancestors. Session 3: persistent on "/" (gets the root's child list change).
        w.run(
            2,
            Op::Exists {
                path: "/x".into(),
                watch: true,
            },
        );
        w.add_watch(2, "/x", false);
        w.add_watch(2, "/x", true);
        w.add_watch(2, "/", true);
        w.add_watch(3, "/", false);
        let a = w.run(
            1,
            Op::Create {
                path: "/x".into(),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: None,
            },
        );
        assert_eq!(events_for(&a, 2), vec![ev(EventType::NodeCreated, "/x")]);
        assert_eq!(
            events_for(&a, 3),
            vec![ev(EventType::NodeChildrenChanged, "/")]
        );
        let a = w.set(1, "/x");
        assert_eq!(
            events_for(&a, 2),
            vec![ev(EventType::NodeDataChanged, "/x")]
        );
        w.run(
            2,
            Op::GetData {
                path: "/x".into(),
                watch: true,
            },
        );
        w.run(
            2,
            Op::GetChildren {
                path: "/x".into(),
                watch: true,
            },
        );
        let a = w.delete(1, "/x");
        assert_eq!(events_for(&a, 2), vec![ev(EventType::NodeDeleted, "/x")]);
        assert_eq!(
            events_for(&a, 3),
            vec![ev(EventType::NodeChildrenChanged, "/")]
        );
        // The one-shots are spent, the persistent ones stay.
        let rec = &w.state.watches["/x"];
        assert!(rec.data.is_empty() && rec.child.is_empty());
        assert!(rec.persistent.contains(&2) && rec.persistent_recursive.contains(&2));
        let a = w.create(1, "/x", CreateMode::Persistent);
        assert!(matches!(a, OpResult::Created { .. }));
    }

    #[test]
    fn remove_and_check_watches() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.create(1, "/n", CreateMode::Persistent);
        w.run(
            2,
            Op::GetData {
                path: "/n".into(),
                watch: true,
            },
        );
        w.run(
            2,
            Op::GetChildren {
                path: "/n".into(),
                watch: true,
            },
        );
        w.add_watch(2, "/n", false);
        w.add_watch(2, "/n", true);
        let ok = OpResult::WatchesRemoved;
        let no = Some(ZkError::NoWatcher);
        // checkWatches changes nothing.
        assert_eq!(w.remove_watches(2, "/n", WatchKind::Data, true), ok);
        assert!(w.state.watches["/n"].data.contains(&2));
        assert_eq!(w.remove_watches(2, "/n", WatchKind::Data, false), ok);
        assert_eq!(err(&w.remove_watches(2, "/n", WatchKind::Data, true)), no);
        assert_eq!(err(&w.remove_watches(2, "/n", WatchKind::Data, false)), no);
        assert_eq!(w.remove_watches(2, "/n", WatchKind::Children, false), ok);
        assert_eq!(
            err(&w.remove_watches(2, "/n", WatchKind::Children, true)),
            no
        );
        assert_eq!(err(&w.remove_watches(1, "/n", WatchKind::Any, true)), no);
        assert_eq!(w.remove_watches(2, "/n", WatchKind::Persistent, false), ok);
        assert_eq!(
            err(&w.remove_watches(2, "/n", WatchKind::Persistent, true)),
            no
        );
        assert_eq!(w.recursive_count(), 1);
        assert_eq!(
            w.remove_watches(2, "/n", WatchKind::PersistentRecursive, true),
            ok
        );
        assert_eq!(
            w.remove_watches(2, "/n", WatchKind::PersistentRecursive, false),
            ok
        );
        assert_eq!(w.recursive_count(), 0);
        assert!(w.state.watches.is_empty(), "{:?}", w.state.watches);
        // Removed watches no longer fire.
        let a = w.set(1, "/n");
        assert!(events_for(&a, 2).is_empty());
        // Data/Children do not touch persistent watches; Any removes everything.
        w.add_watch(2, "/n", false);
        w.add_watch(2, "/n", true);
        w.run(
            2,
            Op::Exists {
                path: "/n".into(),
                watch: true,
            },
        );
        assert_eq!(
            err(&w.remove_watches(2, "/n", WatchKind::Children, false)),
            no
        );
        assert_eq!(w.remove_watches(2, "/n", WatchKind::Any, false), ok);
        assert_eq!(err(&w.remove_watches(2, "/n", WatchKind::Any, true)), no);
        assert!(w.state.watches.is_empty(), "{:?}", w.state.watches);
        // The path must match exactly: a recursive watch on an ancestor is not on /n.
        w.add_watch(2, "/", true);
        assert_eq!(
            err(&w.remove_watches(2, "/n", WatchKind::PersistentRecursive, true)),
            no
        );
        assert_eq!(
            err(&w.remove_watches(2, "/n/", WatchKind::Any, true)),
            Some(ZkError::BadArguments)
        );
        // The node need not exist.
        w.add_watch(2, "/ghost", false);
        assert_eq!(w.remove_watches(2, "/ghost", WatchKind::Any, false), ok);
    }

    #[test]
    fn persistent_watches_of_closed_sessions_are_dropped() {
        let mut w = World::new();
        w.open(1);
        w.open(2);
        w.add_watch(2, "/", true);
        w.add_watch(2, "/z", false);
        assert_eq!(w.recursive_count(), 1);
        w.run(2, Op::CloseSession);
        let a = w.create(1, "/z", CreateMode::Persistent);
        assert!(matches!(a, OpResult::Created { .. }));
        assert_eq!(w.recursive_count(), 0);
        assert!(w.state.watches.is_empty(), "{:?}", w.state.watches);
    }

    #[test]
    fn watch_record_json_is_backward_compatible() {
        let old: WatchRecord =
            serde_json::from_str(r#"{"data":[1],"child":[2]}"#).expect("old record");
        assert!(old.persistent.is_empty() && old.recursive_anywhere == 0);
        assert_eq!(
            serde_json::to_string(&old).expect("serialize"),
            r#"{"data":[1],"child":[2]}"#,
            "no new fields written while unused"
        );
        let mut rec = WatchRecord::default();
        assert!(rec.is_empty());
        rec.recursive_anywhere = 1;
        assert!(!rec.is_empty(), "the root's count keeps its record");
        let s = serde_json::to_string(&rec).expect("serialize");
        assert_eq!(serde_json::from_str::<WatchRecord>(&s).expect("parse"), rec);
    }

    mod acls {
        //! ZooKeeper 3.8's ACL checks, in its order relative to the other errors (measured
        //! with kazoo against ZooKeeper 3.8.0; the same scenario is diffed end to end in
        //! `tests/zk_acl.rs`).
        use super::*;
        use crate::acl::{Acl, digest, perms};

        fn auth(w: &mut World, s: SessionId, user_password: &str) {
            let r = w.run(
                s,
                Op::AddAuth {
                    scheme: "digest".into(),
                    auth: user_password.as_bytes().to_vec(),
                },
            );
            assert_eq!(r.result, OpResult::AuthAdded);
        }
        fn create_acl(w: &mut World, s: SessionId, path: &str, acl: Vec<Acl>) -> OpResult {
            w.run(
                s,
                Op::Create {
                    path: path.into(),
                    data: b"d".to_vec(),
                    mode: CreateMode::Persistent,
                    acl: Some(acl),
                },
            )
            .result
        }
        fn alice_all() -> Acl {
            Acl::new(perms::ALL, "digest", &digest(b"alice:pa"))
        }
        /// Sessions 1 (alice), 2 (bob), 3 (nobody); `/p` alice-only, `/p/k` alice-only.
        fn world() -> World {
            let mut w = World::new();
            for s in 1..=3 {
                w.open(s);
            }
            auth(&mut w, 1, "alice:pa");
            auth(&mut w, 2, "bob:pb");
            assert!(matches!(
                create_acl(&mut w, 1, "/p", vec![alice_all()]),
                OpResult::Created { .. }
            ));
            assert!(matches!(
                create_acl(&mut w, 1, "/p/k", vec![alice_all()]),
                OpResult::Created { .. }
            ));
            w
        }

        #[test]
        fn writes_need_their_permission_after_no_node() {
            let mut w = world();
            let e = |w: &mut World, op| err(&w.run(2, op).result);
            let set = |path: &str, version| Op::SetData {
                path: path.into(),
                data: vec![1],
                version,
            };
            let del = |path: &str, version| Op::Delete {
                path: path.into(),
                version,
            };
            assert_eq!(e(&mut w, set("/p", -1)), Some(ZkError::NoAuth));
            assert_eq!(
                e(&mut w, set("/p", 7)),
                Some(ZkError::NoAuth),
                "before the version"
            );
            assert_eq!(e(&mut w, set("/p/none", -1)), Some(ZkError::NoNode));
            assert_eq!(e(&mut w, del("/p/k", 9)), Some(ZkError::NoAuth));
            // DELETE is on the parent, checked before the node itself is looked up.
            assert_eq!(e(&mut w, del("/p/none", -1)), Some(ZkError::NoAuth));
            assert_eq!(e(&mut w, del("/p/none/x", -1)), Some(ZkError::NoNode));
            assert_eq!(
                err(&w.create(2, "/p/c", CreateMode::Persistent)),
                Some(ZkError::NoAuth)
            );
            assert_eq!(
                err(&w.create(2, "/p/k", CreateMode::Persistent)),
                Some(ZkError::NoAuth)
            );
            assert_eq!(
                err(&w.create(2, "/p/x/y", CreateMode::Persistent)),
                Some(ZkError::NoNode)
            );
            // Nothing changed; the owner may do all of it.
            assert_eq!(w.state.nodes["/p"].stat.version, 0);
            assert!(matches!(
                w.run(1, set("/p", 0)).result,
                OpResult::Stat { .. }
            ));
            assert!(matches!(
                w.create(1, "/p/c", CreateMode::Persistent),
                OpResult::Created { .. }
            ));
            assert_eq!(w.run(1, del("/p/c", -1)).result, OpResult::Deleted);
        }

        #[test]
        fn reads_need_read_but_exists_and_ephemerals_do_not() {
            let mut w = world();
            let data = |path: &str| Op::GetData {
                path: path.into(),
                watch: true,
            };
            assert_eq!(err(&w.run(2, data("/p")).result), Some(ZkError::NoAuth));
            assert!(
                !w.state.watches.contains_key("/p"),
                "a refused read leaves no watch"
            );
            assert_eq!(
                err(&w.run(2, data("/p/none")).result),
                Some(ZkError::NoNode)
            );
            let kids = Op::GetChildren {
                path: "/p".into(),
                watch: false,
            };
            assert_eq!(err(&w.run(3, kids).result), Some(ZkError::NoAuth));
            let count = Op::GetAllChildrenNumber { path: "/p".into() };
            assert_eq!(err(&w.run(2, count.clone()).result), Some(ZkError::NoAuth));
            assert_eq!(
                w.run(1, count).result,
                OpResult::AllChildrenNumber { total: 1 }
            );
            let exists = Op::Exists {
                path: "/p".into(),
                watch: true,
            };
            assert!(matches!(
                w.run(2, exists).result,
                OpResult::Exists { stat: Some(_) }
            ));
            let eph = Op::GetEphemerals {
                prefix: "/p".into(),
            };
            assert_eq!(w.run(2, eph).result, OpResult::Ephemerals { paths: vec![] });
            assert!(matches!(w.run(1, data("/p")).result, OpResult::Data { .. }));
        }

        #[test]
        fn set_acl_and_get_acl() {
            let mut w = world();
            let set = |acl: Vec<Acl>, version| Op::SetAcl {
                path: "/p".into(),
                acl,
                version,
            };
            let world_read = Acl::new(perms::READ, "world", "anyone");
            let both = vec![alice_all(), world_read.clone()];
            assert_eq!(
                err(&w.run(2, set(both.clone(), -1)).result),
                Some(ZkError::NoAuth)
            );
            assert_eq!(
                err(&w.run(2, set(both.clone(), 9)).result),
                Some(ZkError::NoAuth)
            );
            assert_eq!(
                err(&w.run(1, set(both.clone(), 5)).result),
                Some(ZkError::BadVersion)
            );
            // The list is judged first, even on a missing node.
            assert_eq!(
                err(&w.run(1, set(vec![], 0)).result),
                Some(ZkError::InvalidAcl)
            );
            let missing = Op::SetAcl {
                path: "/none".into(),
                acl: vec![Acl::new(1, "foo", "x")],
                version: 0,
            };
            assert_eq!(err(&w.run(1, missing).result), Some(ZkError::InvalidAcl));
            let get = Op::GetAcl { path: "/p".into() };
            assert_eq!(err(&w.run(2, get.clone()).result), Some(ZkError::NoAuth));
            let OpResult::Stat { stat } = w.run(1, set(both.clone(), 0)).result else {
                panic!("setACL refused")
            };
            assert_eq!(
                (stat.aversion, stat.version, stat.mzxid),
                (1, 0, stat.czxid)
            );
            // READ without ADMIN: digest ids are cut to `user:x`.
            let OpResult::Acl { acl, stat } = w.run(2, get.clone()).result else {
                panic!("getACL refused")
            };
            assert_eq!(
                acl,
                vec![Acl::new(perms::ALL, "digest", "alice:x"), world_read]
            );
            assert_eq!(stat.aversion, 1);
            assert_eq!(w.run(1, get).result, OpResult::Acl { acl: both, stat });
            assert!(matches!(
                w.run(
                    3,
                    Op::GetData {
                        path: "/p".into(),
                        watch: false
                    }
                )
                .result,
                OpResult::Data { .. }
            ));
            // The initial tree: `/zookeeper/config` is world-readable only, aversion -1.
            let OpResult::Acl { acl, stat } = w
                .run(
                    3,
                    Op::GetAcl {
                        path: "/zookeeper/config".into(),
                    },
                )
                .result
            else {
                panic!("getACL of /zookeeper/config")
            };
            assert_eq!((acl, stat.aversion), (crate::acl::read_unsafe(), -1));
            let OpResult::Acl { acl, .. } = w.run(3, Op::GetAcl { path: "/".into() }).result else {
                panic!("getACL of /")
            };
            assert_eq!(acl, crate::acl::open_unsafe());
        }

        #[test]
        fn create_acls_are_validated_and_auth_expands() {
            let mut w = world();
            let any = |scheme: &str, id: &str| Acl::new(perms::ALL, scheme, id);
            assert_eq!(
                err(&create_acl(&mut w, 3, "/q", vec![any("auth", "")])),
                Some(ZkError::InvalidAcl)
            );
            assert_eq!(
                err(&create_acl(&mut w, 1, "/q", vec![])),
                Some(ZkError::InvalidAcl)
            );
            // The ACL is judged before the parent is looked up.
            assert_eq!(
                err(&create_acl(&mut w, 1, "/none/q", vec![])),
                Some(ZkError::InvalidAcl)
            );
            for bad in [
                any("foo", "x"),
                any("world", "foo"),
                any("digest", "alice"),
                any("ip", "10.0.0.1"),
            ] {
                assert_eq!(
                    err(&create_acl(&mut w, 1, "/q", vec![bad])),
                    Some(ZkError::InvalidAcl)
                );
            }
            assert!(!w.state.nodes.contains_key("/q"));
            auth(&mut w, 1, "bob:pb");
            auth(&mut w, 1, "alice:pa");
            assert!(matches!(
                create_acl(&mut w, 1, "/q", vec![Acl::new(3, "auth", "ignored")]),
                OpResult::Created { .. }
            ));
            assert_eq!(
                w.state.nodes["/q"].acl,
                vec![
                    Acl::new(3, "digest", &digest(b"alice:pa")),
                    Acl::new(3, "digest", &digest(b"bob:pb")),
                ],
                "one entry per id, each once"
            );
            // An explicit open ACL is stored as no ACL (the bytes of an open node).
            create_acl(&mut w, 3, "/open", crate::acl::open_unsafe());
            assert!(w.state.nodes["/open"].acl.is_empty());
        }

        #[test]
        fn a_multi_with_one_refused_op_changes_nothing() {
            let mut w = world();
            w.create(2, "/free", CreateMode::Persistent);
            let ops = vec![
                MultiOp::Create {
                    path: "/free/a".into(),
                    data: vec![],
                    mode: CreateMode::Persistent,
                    acl: None,
                },
                MultiOp::SetData {
                    path: "/p".into(),
                    data: vec![],
                    version: -1,
                },
            ];
            let r = w.run(2, Op::Multi { ops }).result;
            assert!(
                matches!(
                    r,
                    OpResult::MultiFailed {
                        index: 1,
                        error: ZkError::NoAuth,
                        ..
                    }
                ),
                "{r:?}"
            );
            assert!(!w.state.nodes.contains_key("/free/a"));
            let check = vec![MultiOp::Check {
                path: "/p".into(),
                version: 5,
            }];
            let r = w.run(2, Op::Multi { ops: check }).result;
            assert!(
                matches!(
                    r,
                    OpResult::MultiFailed {
                        index: 0,
                        error: ZkError::NoAuth,
                        ..
                    }
                ),
                "READ before the version: {r:?}"
            );
        }

        #[test]
        fn the_service_deletes_without_permission() {
            // Ephemerals of a closed session go even under a parent it may not delete from.
            let mut w = world();
            let grant = Op::SetAcl {
                path: "/p".into(),
                acl: vec![
                    alice_all(),
                    Acl::new(perms::CREATE, "digest", &digest(b"bob:pb")),
                ],
                version: -1,
            };
            assert!(matches!(w.run(1, grant).result, OpResult::Stat { .. }));
            assert!(matches!(
                w.create(2, "/p/e", CreateMode::Ephemeral),
                OpResult::Created { .. }
            ));
            assert_eq!(err(&w.delete(2, "/p/e").result), Some(ZkError::NoAuth));
            assert_eq!(w.run(2, Op::CloseSession).result, OpResult::SessionClosed);
            assert!(!w.state.nodes.contains_key("/p/e"));
        }

        #[test]
        fn credentials_never_reach_the_log_and_bad_schemes_fail() {
            let op = crate::wire::to_log(Op::AddAuth {
                scheme: "digest".into(),
                auth: b"alice:pa".to_vec(),
            });
            assert_eq!(
                op,
                Op::Authenticated {
                    ids: vec![Id {
                        scheme: "digest".into(),
                        id: digest(b"alice:pa")
                    }]
                }
            );
            assert!(!serde_json::to_string(&op).expect("json").contains("pa\""));
            let bad = Op::AddAuth {
                scheme: "foo".into(),
                auth: b"x".to_vec(),
            };
            assert_eq!(
                crate::wire::precheck(&bad).map_err(|e| e.0),
                Err(ZkError::AuthFailed)
            );
            let forged = Op::Authenticated { ids: vec![] };
            assert_eq!(
                crate::wire::precheck(&forged).map_err(|e| e.0),
                Err(ZkError::BadArguments)
            );
            let mut w = World::new();
            w.open(1);
            assert_eq!(err(&w.run(1, bad).result), Some(ZkError::AuthFailed));
            assert!(w.state.sessions[&1].auth.is_empty());
        }

        #[test]
        fn records_without_acls_read_back_open() {
            let old: NodeRecord = serde_json::from_str(
                r#"{"data":"","stat":{"czxid":1,"mzxid":1,"ctime":0,"mtime":0,"version":0,"cversion":0,"aversion":0,"ephemeral_owner":0,"data_length":0,"num_children":0,"pzxid":1},"children":[]}"#,
            )
            .expect("old record");
            assert!(old.acl.is_empty());
            assert!(!serde_json::to_string(&old).expect("json").contains("acl"));
            let sess: SessionRecord = serde_json::from_str(
                r#"{"timeout_ms":4000,"notify":"n","last_seq":0,"last_result":null,"ephemerals":[],"closed":false}"#,
            )
            .expect("old session");
            assert!(sess.auth.is_empty());
        }
    }
}

#[cfg(test)]
mod reads_tests {
    //! [`Reads`] names what [`apply`] reads, so that a batch can be fetched in one call.
    use super::*;
    use crate::wire::Request;

    /// A [`MemState`] that notes every read.
    #[derive(Default)]
    struct Noting {
        inner: MemState,
        read: Reads,
    }

    impl State for Noting {
        type Error = std::convert::Infallible;
        fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, Self::Error> {
            self.read.nodes.insert(path.to_string());
            self.inner.node_ref(path)
        }
        fn put_node(&mut self, path: &str, node: NodeRecord) {
            self.inner.put_node(path, node)
        }
        fn remove_node(&mut self, path: &str) {
            self.inner.remove_node(path)
        }
        fn session_ref(&mut self, id: SessionId) -> Result<Option<&SessionRecord>, Self::Error> {
            self.read.sessions.insert(id);
            self.inner.session_ref(id)
        }
        fn put_session(&mut self, id: SessionId, session: SessionRecord) {
            self.inner.put_session(id, session)
        }
        fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, Self::Error> {
            self.read.watches.insert(path.to_string());
            self.inner.watches_ref(path)
        }
        fn put_watches(&mut self, path: &str, watches: WatchRecord) {
            self.inner.put_watches(path, watches)
        }
    }

    fn txn(zxid: Zxid, seq: i64, op: Op) -> Txn {
        Txn {
            zxid,
            time_ms: 1000 + zxid,
            request: Request {
                session: 7,
                seq,
                op,
            },
        }
    }

    fn create(path: &str, mode: CreateMode) -> Op {
        Op::Create {
            path: path.into(),
            data: b"d".to_vec(),
            mode,
            acl: None,
        }
    }

    /// Apply `ops` as one batch after the session opened; what was read, and what `Reads`
    /// named beforehand.
    fn batch(ops: Vec<Op>) -> (Reads, Reads) {
        let mut state = Noting {
            inner: MemState::initialized(),
            ..Noting::default()
        };
        let open = Op::OpenSession {
            timeout_ms: 4000,
            notify: "n".into(),
            fallback: None,
        };
        let setup = [
            txn(1, 0, open),
            txn(2, 1, create("/a", CreateMode::Persistent)),
            txn(3, 2, create("/a/old", CreateMode::Persistent)),
        ];
        for t in &setup {
            let Ok(a) = apply(&mut state, t);
            assert!(err_of(&a.result).is_none(), "set-up: {:?}", a.result);
        }
        state.read = Reads::default();
        let txns: Vec<Txn> = ops
            .into_iter()
            .enumerate()
            .map(|(i, op)| txn(4 + i as Zxid, 3 + i as i64, op))
            .collect();
        for t in &txns {
            let Ok(a) = apply(&mut state, t);
            assert!(
                err_of(&a.result).is_none(),
                "{:?}: {:?}",
                t.request.op,
                a.result
            );
        }
        (state.read, Reads::of(&txns))
    }

    fn err_of(r: &OpResult) -> Option<ZkError> {
        match r {
            OpResult::Error { error, .. } => Some(*error),
            OpResult::Multi { results } => results.iter().find_map(err_of),
            OpResult::MultiFailed { error, .. } => Some(*error),
            _ => None,
        }
    }

    #[test]
    fn names_exactly_what_the_usual_ops_read() {
        let (read, named) = batch(vec![
            Op::SetData {
                path: "/a".into(),
                data: b"x".to_vec(),
                version: -1,
            },
            create("/a/new", CreateMode::Ephemeral),
            create("/b", CreateMode::Persistent),
            Op::Delete {
                path: "/a/old".into(),
                version: 0,
            },
            Op::Exists {
                path: "/c".into(),
                watch: true,
            },
            Op::GetData {
                path: "/a".into(),
                watch: false,
            },
            Op::Multi {
                ops: vec![
                    MultiOp::Check {
                        path: "/b".into(),
                        version: 0,
                    },
                    MultiOp::SetData {
                        path: "/b".into(),
                        data: b"y".to_vec(),
                        version: 0,
                    },
                    MultiOp::Create {
                        path: "/b/c".into(),
                        data: Vec::new(),
                        mode: CreateMode::Persistent,
                        acl: None,
                    },
                ],
            },
        ]);
        assert_eq!(read, named);
    }

    #[test]
    fn a_sequential_name_is_read_when_known() {
        let (read, named) = batch(vec![create("/a/s-", CreateMode::PersistentSequential)]);
        assert!(named.nodes.is_subset(&read.nodes));
        assert!(named.watches.is_subset(&read.watches));
        assert_eq!(
            read.nodes.difference(&named.nodes).collect::<Vec<_>>(),
            vec!["/a/s-0000000001"],
            "only the new name, which the parent's counter decides"
        );
    }

    #[test]
    fn invalid_paths_name_nothing() {
        let bad = |path: &str| Txn {
            zxid: 9,
            time_ms: 0,
            request: Request {
                session: 7,
                seq: 1,
                op: Op::SetData {
                    path: path.into(),
                    data: Vec::new(),
                    version: -1,
                },
            },
        };
        for path in ["", "a", "/a/", "/a//b", "/a/./b"] {
            let reads = Reads::of([&bad(path)]);
            assert!(
                reads.nodes.is_empty() && reads.watches.is_empty(),
                "{path:?}"
            );
            assert_eq!(reads.sessions, BTreeSet::from([7]));
        }
    }
}
