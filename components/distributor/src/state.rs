//! `faaskeeper_core::apply::State` over the system bucket (node records: over the user bucket
//! in a store that keeps them there): reads go to the store once and are cached; writes are
//! staged in memory until the whole batch is decided.
//!
//! A session's last request and its result are kept in the progress record
//! ([`LastResults`]) rather than in the session's own record, as long as nothing else of the
//! session changes: a write then costs no write of its session's record, only its share of
//! the batch's progress write. Reads of a session put the kept result over the stored record.

use crate::known::Known;
use faaskeeper_core::apply::{NodeRecord, Reads, SessionRecord, State, WatchRecord};
use faaskeeper_core::wire::OpResult;
use faaskeeper_core::{SessionId, Zxid};
use faaskeeper_core::{keys, ttl};
use faaskeeper_guest::kv::{Bucket, KvError, decode_json};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A session's last request (`SessionRecord::last_seq`) and its zxid and result
/// (`last_result`, as its JSON), newer than what the session's own record holds, and the
/// number of the batch that kept it (see [`STALE_AFTER_BATCHES`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastResult(
    pub i64,
    pub Zxid,
    pub Box<RawValue>,
    // Left out by the first version of this layout: such a result counts as kept by batch 0.
    #[serde(default)] pub u64,
);

/// The last results the progress record keeps, by session. A session leaves it when its
/// record is written whole: anything else of it changed, or its result went stale.
pub type LastResults = BTreeMap<SessionId, LastResult>;

/// Most sessions whose last result the progress record keeps. When it is full, a session
/// that is not in it yet has its record written as before: with more sessions writing than
/// this, pushing older ones out would cost a read and a write for each write.
pub const LAST_RESULTS_MAX: usize = 64;

/// A last result not renewed for this many batches goes back to its session's record (one
/// read and one write, once). Each batch writes every kept result again in the progress
/// record (about 50 bytes each, deflated); keeping a session that writes less often than
/// this would cost more per batch than its record's write saves.
pub const STALE_AFTER_BATCHES: u64 = 16;

/// A result longer than this (a read's data) is written with its session's record, not
/// kept in the progress record.
const LAST_RESULT_MAX_BYTES: usize = 512;

pub struct KvState<'a> {
    system: &'a Bucket,
    /// Where node records are read from when it is not the system bucket: the user bucket,
    /// whose objects hold the whole record (`NodeRecord::from_object`).
    nodes_from: Option<&'a Bucket>,
    /// Records known as the store holds them, read from it only if not known.
    known: Option<&'a Known>,
    /// Sessions' records as stored (without the kept last results), where records are
    /// [`Known`].
    stored_sessions: BTreeMap<SessionId, Option<SessionRecord>>,
    nodes: BTreeMap<String, Option<NodeRecord>>,
    sessions: BTreeMap<SessionId, Option<SessionRecord>>,
    /// The last results kept in the progress record before this batch.
    last: &'a LastResults,
    /// The number of this batch (counted by the progress record).
    batch: u64,
    /// Each changed session as it was before its first change in this batch.
    sessions_before: BTreeMap<SessionId, Option<SessionRecord>>,
    /// Sessions whose record is written whole ([`KvState::settle_sessions`]).
    written_whole: BTreeSet<SessionId>,
    watches: BTreeMap<String, WatchRecord>,
    dirty_nodes: BTreeSet<String>,
    dirty_sessions: BTreeSet<SessionId>,
    dirty_watches: BTreeSet<String>,
    /// TTL nodes this batch removed (known from the record read before the removal).
    removed_ttl: BTreeSet<String>,
}

/// The staged writes of a batch (`None`: delete).
pub struct Changes {
    pub nodes: Vec<(String, Option<NodeRecord>)>,
    /// Session records to write whole.
    pub sessions: Vec<(SessionId, SessionRecord)>,
    pub watches: Vec<(String, WatchRecord)>,
    /// TTL nodes created (or rewritten) by the batch, for the TTL index.
    pub ttl_written: BTreeSet<String>,
    /// TTL nodes deleted by the batch.
    pub ttl_removed: BTreeSet<String>,
    /// The records read and left unchanged, where records are [`Known`].
    pub read: Read,
}

/// Records a batch read and left as they were stored.
#[derive(Default)]
pub struct Read {
    pub nodes: Vec<(String, Option<NodeRecord>)>,
    pub sessions: Vec<(SessionId, Option<SessionRecord>)>,
    pub watches: Vec<(String, WatchRecord)>,
}

impl<'a> KvState<'a> {
    pub fn new(
        system: &'a Bucket,
        nodes_from: Option<&'a Bucket>,
        known: Option<&'a Known>,
        last: &'a LastResults,
        batch: u64,
    ) -> Self {
        KvState {
            system,
            nodes_from,
            known,
            stored_sessions: BTreeMap::new(),
            nodes: BTreeMap::new(),
            sessions: BTreeMap::new(),
            last,
            batch,
            sessions_before: BTreeMap::new(),
            written_whole: BTreeSet::new(),
            watches: BTreeMap::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_sessions: BTreeSet::new(),
            dirty_watches: BTreeSet::new(),
            removed_ttl: BTreeSet::new(),
        }
    }

    /// Fetch the records `reads` names that are not cached yet: one call per bucket, where
    /// reading them as apply comes to them would be a call each. On DynamoDB that is one
    /// `BatchGetItem` instead of a round trip per key, billed the same.
    pub fn prefetch(&mut self, reads: &Reads) -> Result<(), KvError> {
        let mut sessions: Vec<SessionId> = Vec::new();
        for id in &reads.sessions {
            if !self.has_session(*id)? {
                sessions.push(*id);
            }
        }
        let watches: Vec<&String> = reads
            .watches
            .iter()
            .filter(|p| !self.has_watches(p))
            .collect();
        let nodes: Vec<&String> = reads.nodes.iter().filter(|p| !self.has_node(p)).collect();
        let mut wanted: Vec<String> = sessions.iter().map(|id| keys::session(*id)).collect();
        wanted.extend(watches.iter().map(|p| keys::watches(p)));
        let node_key = |p: &str| match self.nodes_from {
            None => keys::node(p),
            Some(_) => keys::user_node(p),
        };
        let node_keys: Vec<String> = nodes.iter().map(|p| node_key(p)).collect();
        let mut found = match self.nodes_from {
            None => {
                wanted.extend(node_keys.iter().cloned());
                fetch(self.system, wanted)?
            }
            Some(user) => {
                let mut found = fetch(self.system, wanted)?;
                found.extend(fetch(user, node_keys.clone())?);
                found
            }
        };
        for id in sessions {
            let record = take_json(&mut found, keys::session(id))?;
            self.take_session(id, record)?;
        }
        for path in watches {
            let record = take_json(&mut found, keys::watches(path))?;
            self.watches
                .insert(path.clone(), record.unwrap_or_default());
        }
        for (path, key) in nodes.into_iter().zip(node_keys) {
            let record = match found.remove(&key) {
                Some(bytes) => Some(self.decode_node(path, &bytes)?),
                None => None,
            };
            self.nodes.insert(path.clone(), record);
        }
        Ok(())
    }

    /// Whether the batch has the node at `path`: read already, or taken now from what is
    /// [`Known`].
    fn has_node(&mut self, path: &str) -> bool {
        if self.nodes.contains_key(path) {
            return true;
        }
        let Some(node) = self.known.and_then(|k| k.node(path)) else {
            return false;
        };
        self.nodes.insert(path.to_string(), node.cloned());
        true
    }

    /// [`KvState::has_node`] for a session's record.
    fn has_session(&mut self, id: SessionId) -> Result<bool, KvError> {
        if self.sessions.contains_key(&id) {
            return Ok(true);
        }
        let Some(stored) = self.known.and_then(|k| k.session(id)) else {
            return Ok(false);
        };
        self.take_session(id, stored.cloned())?;
        Ok(true)
    }

    /// [`KvState::has_node`] for a watch record.
    fn has_watches(&mut self, path: &str) -> bool {
        if self.watches.contains_key(path) {
            return true;
        }
        let Some(record) = self.known.and_then(|k| k.watches(path)) else {
            return false;
        };
        self.watches.insert(path.to_string(), record.clone());
        true
    }

    /// Take a session's record as stored: with the newer last result the progress record
    /// keeps put over it.
    fn take_session(
        &mut self,
        id: SessionId,
        stored: Option<SessionRecord>,
    ) -> Result<(), KvError> {
        if self.known.is_some() {
            self.stored_sessions.insert(id, stored.clone());
        }
        let record = self.with_last_result(id, stored)?;
        self.sessions.insert(id, record);
        Ok(())
    }

    /// A session's record as stored, with the newer last result the progress record keeps.
    fn with_last_result(
        &self,
        id: SessionId,
        record: Option<SessionRecord>,
    ) -> Result<Option<SessionRecord>, KvError> {
        let Some(LastResult(seq, zxid, result, _)) = self.last.get(&id) else {
            return Ok(record);
        };
        let Some(mut rec) = record else {
            return Ok(None);
        };
        if *seq >= rec.last_seq {
            let result: OpResult = serde_json::from_str(result.get())
                .map_err(|e| KvError::Corrupt(format!("last result of session {id}: {e}")))?;
            rec.last_seq = *seq;
            rec.last_result = Some((*zxid, result));
        }
        Ok(Some(rec))
    }

    /// Decide, once the batch is applied, which changed sessions keep their last result in
    /// the progress record and which have their record written whole; the last results the
    /// progress record keeps after the batch. Reads the records of stale results, which go
    /// back to them.
    pub fn settle_sessions(&mut self) -> Result<LastResults, KvError> {
        let mut next = self.last.clone();
        let mut admitted: Vec<(Zxid, SessionId)> = Vec::new();
        for id in &self.dirty_sessions {
            let Some(Some(rec)) = self.sessions.get(id) else {
                continue;
            };
            let unchanged_but_last = matches!(
                self.sessions_before.get(id),
                Some(Some(before)) if rec.same_but_last_result(before)
            );
            let kept = match (&rec.last_result, unchanged_but_last) {
                (Some((zxid, result)), true) => {
                    let raw = serde_json::value::to_raw_value(result).map_err(|e| {
                        KvError::Corrupt(format!("last result of session {id}: {e}"))
                    })?;
                    (raw.get().len() <= LAST_RESULT_MAX_BYTES).then_some(LastResult(
                        rec.last_seq,
                        *zxid,
                        raw,
                        self.batch,
                    ))
                }
                _ => None,
            };
            match kept {
                Some(last) => {
                    if !next.contains_key(id) {
                        admitted.push((last.1, *id));
                    }
                    next.insert(*id, last);
                }
                None => {
                    next.remove(id);
                    self.written_whole.insert(*id);
                }
            }
        }
        // Stale results go back to their records, read now (with the result put over them),
        // before the bound is applied: they make room.
        let stale: BTreeSet<SessionId> = next
            .iter()
            .filter(|(_, l)| l.3 + STALE_AFTER_BATCHES < self.batch)
            .map(|(id, _)| *id)
            .collect();
        if !stale.is_empty() {
            self.prefetch(&Reads {
                sessions: stale.clone(),
                ..Reads::default()
            })?;
            for id in stale {
                next.remove(&id);
                if let Some(Some(_)) = self.sessions.get(&id) {
                    self.written_whole.insert(id);
                }
            }
        }
        // Full: the sessions new to it this batch are written as before, the latest first
        // refused (those that came earlier keep their place).
        let over = next.len().saturating_sub(LAST_RESULTS_MAX);
        admitted.sort_unstable();
        for (_, id) in admitted.into_iter().rev().take(over) {
            next.remove(&id);
            self.written_whole.insert(id);
        }
        Ok(next)
    }

    /// A node record as the store keeps it: a system record, or a user object.
    fn decode_node(&self, path: &str, bytes: &[u8]) -> Result<NodeRecord, KvError> {
        match self.nodes_from {
            None => NodeRecord::from_record(bytes)
                .map_err(|e| KvError::Corrupt(format!("node record {path}: {e}"))),
            Some(_) => NodeRecord::from_object(bytes)
                .map_err(|e| KvError::Corrupt(format!("node object {path}: {e}"))),
        }
    }

    pub fn into_changes(mut self) -> Changes {
        let is_ttl = |n: &NodeRecord| ttl::of_owner(n.stat.ephemeral_owner).is_some();
        let ttl_written = self
            .dirty_nodes
            .iter()
            .filter(|p| {
                self.nodes
                    .get(*p)
                    .and_then(Option::as_ref)
                    .is_some_and(is_ttl)
            })
            .cloned()
            .collect();
        let ttl_removed = std::mem::take(&mut self.removed_ttl)
            .into_iter()
            .filter(|p| matches!(self.nodes.get(p), Some(None)))
            .collect();
        let sessions = self
            .written_whole
            .iter()
            .filter_map(|id| Some((*id, self.sessions.remove(id).flatten()?)))
            .collect();
        let nodes = self
            .dirty_nodes
            .iter()
            .map(|p| (p.clone(), self.nodes.remove(p).flatten()))
            .collect();
        let watches = self
            .dirty_watches
            .iter()
            .map(|p| (p.clone(), self.watches.remove(p).unwrap_or_default()))
            .collect();
        let read = match self.known {
            None => Read::default(),
            Some(_) => {
                let mut stored = std::mem::take(&mut self.stored_sessions);
                stored.retain(|id, _| !self.written_whole.contains(id));
                Read {
                    nodes: std::mem::take(&mut self.nodes).into_iter().collect(),
                    sessions: stored.into_iter().collect(),
                    watches: std::mem::take(&mut self.watches).into_iter().collect(),
                }
            }
        };
        Changes {
            ttl_written,
            ttl_removed,
            sessions,
            read,
            nodes,
            watches,
        }
    }
}

impl State for KvState<'_> {
    type Error = KvError;

    fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, KvError> {
        if !self.has_node(path) {
            let stored = match self.nodes_from {
                None => self.system.get(&keys::node(path))?,
                Some(user) => user.get(&keys::user_node(path))?,
            };
            let n = match stored {
                Some(bytes) => Some(self.decode_node(path, &bytes)?),
                None => None,
            };
            self.nodes.insert(path.to_string(), n);
        }
        Ok(self.nodes.get(path).and_then(Option::as_ref))
    }

    fn put_node(&mut self, path: &str, node: NodeRecord) {
        self.nodes.insert(path.to_string(), Some(node));
        self.dirty_nodes.insert(path.to_string());
    }

    fn remove_node(&mut self, path: &str) {
        // Apply reads a node before it removes one, so the old record is cached here.
        if let Some(Some(old)) = self.nodes.get(path)
            && ttl::of_owner(old.stat.ephemeral_owner).is_some()
        {
            self.removed_ttl.insert(path.to_string());
        }
        self.nodes.insert(path.to_string(), None);
        self.dirty_nodes.insert(path.to_string());
    }

    fn session_ref(&mut self, id: SessionId) -> Result<Option<&SessionRecord>, KvError> {
        if !self.has_session(id)? {
            let stored = self.system.get_json(&keys::session(id))?;
            self.take_session(id, stored)?;
        }
        Ok(self.sessions.get(&id).and_then(Option::as_ref))
    }

    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        let before = self.sessions.insert(id, Some(session)).flatten();
        if self.dirty_sessions.insert(id) {
            self.sessions_before.insert(id, before);
        }
    }

    fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, KvError> {
        if !self.has_watches(path) {
            let w: WatchRecord = self
                .system
                .get_json(&keys::watches(path))?
                .unwrap_or_default();
            self.watches.insert(path.to_string(), w);
        }
        Ok(self.watches.get(path))
    }

    fn put_watches(&mut self, path: &str, watches: WatchRecord) {
        self.watches.insert(path.to_string(), watches);
        self.dirty_watches.insert(path.to_string());
    }
}

/// The JSON record fetched under `key`, taken out of `found`.
fn take_json<T: serde::de::DeserializeOwned>(
    found: &mut HashMap<String, Vec<u8>>,
    key: String,
) -> Result<Option<T>, KvError> {
    found
        .remove(&key)
        .map(|v| decode_json(&key, &v))
        .transpose()
}

/// The values of `keys` that exist, by key, in one call (none for no keys). Matched by key,
/// not by position: a platform's `get-many` may leave out keys it did not find.
fn fetch(bucket: &Bucket, keys: Vec<String>) -> Result<HashMap<String, Vec<u8>>, KvError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(bucket
        .get_many(keys)?
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect())
}
