//! `faaskeeper_core::apply::State` over the system bucket (node records: over the user bucket
//! in a store that keeps them there): reads go to the store once and are cached; writes are
//! staged in memory until the whole batch is decided.

use faaskeeper_core::SessionId;
use faaskeeper_core::apply::{NodeRecord, Reads, SessionRecord, State, WatchRecord};
use faaskeeper_core::{keys, ttl};
use faaskeeper_guest::kv::{Bucket, KvError, decode_json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub struct KvState<'a> {
    system: &'a Bucket,
    /// Where node records are read from when it is not the system bucket: the user bucket,
    /// whose objects hold the whole record (`NodeRecord::from_object`).
    nodes_from: Option<&'a Bucket>,
    nodes: BTreeMap<String, Option<NodeRecord>>,
    sessions: BTreeMap<SessionId, Option<SessionRecord>>,
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
    pub sessions: Vec<(SessionId, SessionRecord)>,
    pub watches: Vec<(String, WatchRecord)>,
    /// TTL nodes created (or rewritten) by the batch, for the TTL index.
    pub ttl_written: BTreeSet<String>,
    /// TTL nodes deleted by the batch.
    pub ttl_removed: BTreeSet<String>,
}

impl<'a> KvState<'a> {
    pub fn new(system: &'a Bucket, nodes_from: Option<&'a Bucket>) -> Self {
        KvState {
            system,
            nodes_from,
            nodes: BTreeMap::new(),
            sessions: BTreeMap::new(),
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
        let sessions: Vec<SessionId> = reads
            .sessions
            .iter()
            .filter(|id| !self.sessions.contains_key(id))
            .copied()
            .collect();
        let watches: Vec<&String> = reads
            .watches
            .iter()
            .filter(|p| !self.watches.contains_key(*p))
            .collect();
        let nodes: Vec<&String> = reads
            .nodes
            .iter()
            .filter(|p| !self.nodes.contains_key(*p))
            .collect();
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
            self.sessions.insert(id, record);
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
        Changes {
            ttl_written,
            ttl_removed,
            nodes: self
                .dirty_nodes
                .iter()
                .map(|p| (p.clone(), self.nodes.remove(p).flatten()))
                .collect(),
            sessions: self
                .dirty_sessions
                .iter()
                .filter_map(|id| self.sessions.remove(id).flatten().map(|s| (*id, s)))
                .collect(),
            watches: self
                .dirty_watches
                .iter()
                .map(|p| (p.clone(), self.watches.remove(p).unwrap_or_default()))
                .collect(),
        }
    }
}

impl State for KvState<'_> {
    type Error = KvError;

    fn node_ref(&mut self, path: &str) -> Result<Option<&NodeRecord>, KvError> {
        if !self.nodes.contains_key(path) {
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
        if !self.sessions.contains_key(&id) {
            let s: Option<SessionRecord> = self.system.get_json(&keys::session(id))?;
            self.sessions.insert(id, s);
        }
        Ok(self.sessions.get(&id).and_then(Option::as_ref))
    }

    fn put_session(&mut self, id: SessionId, session: SessionRecord) {
        self.sessions.insert(id, Some(session));
        self.dirty_sessions.insert(id);
    }

    fn watches_ref(&mut self, path: &str) -> Result<Option<&WatchRecord>, KvError> {
        if !self.watches.contains_key(path) {
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
