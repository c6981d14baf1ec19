//! Records a run knows to be what the store holds, so that it need not read them again: the
//! node objects, where the user bucket keeps the node records (S3: a GET each, $0.40 per
//! million, about as much as all else a set costs above its PUT), and the sessions' and
//! watches' records (a read unit each on DynamoDB, $0.125 per million).
//!
//! What a batch read and what it wrote stay known for the batches after it, in the same run
//! and, through the platform, in later runs: the answer to a wake-up carries them as `memo`,
//! and a platform that keeps one distributor process (the bundled host, a warm Lambda) sends
//! it back in the next wake-up. Nothing is trusted because the platform sent it: a run takes
//! the memo only if the progress record shows that no batch was started since the one it
//! describes (`batch`), and that this chain of runs started that one (`by`, a random token
//! each batch-start write of the chain names). Only distributors write these records, one at
//! a time, so no one else can have changed them since. A platform that sends no memo (Spin,
//! wasmCloud) only loses the saving.

use faaskeeper_core::apply::{NodeRecord, SessionRecord, WatchRecord};
use faaskeeper_core::path;
use faaskeeper_core::{SessionId, Zxid};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;

/// Most records of each kind a memo carries (the most recently used ones).
const MEMO_MAX_RECORDS: usize = 1024;
/// Most bytes of node data and children's names, and of session records, a memo carries,
/// each.
const MEMO_MAX_BYTES: usize = 256 * 1024;
/// A record larger than this (node data, a session's record with a read's result, a watch
/// record of many sessions) is not kept: it is read when it is needed, as any record is,
/// rather than carried through every wake-up.
const RECORD_MAX_BYTES: usize = 4096;

/// The records known to a chain of runs, as the store holds them after the last batch the
/// chain applied.
#[derive(Debug)]
pub struct Known {
    /// Names this chain's batch-start writes of the progress record (`Progress::by`).
    pub token: String,
    /// Node objects by path (`None`: no such node).
    nodes: Used<String, Option<NodeRecord>>,
    /// Sessions' records as stored, without the last results the progress record keeps
    /// (`None`: no record).
    sessions: Used<SessionId, Option<SessionRecord>>,
    /// Watch records by path (empty: none stored).
    watches: Used<String, WatchRecord>,
}

/// What a run hands on to the next ([`Known`], with the progress it is valid for).
#[derive(Debug, Serialize, Deserialize)]
pub struct Memo {
    /// The token the chain's progress writes name.
    pub by: String,
    /// The number of the last batch started (`Progress::batch`).
    pub batch: u64,
    /// The zxid that batch applied to.
    pub applied: Zxid,
    pub nodes: Vec<(String, Option<NodeRecord>)>,
    #[serde(default)]
    pub sessions: Vec<(SessionId, Option<SessionRecord>)>,
    #[serde(default)]
    pub watches: Vec<(String, WatchRecord)>,
}

impl Known {
    /// Nothing known, under a new token.
    pub fn fresh() -> Known {
        Known {
            token: faaskeeper_guest::random_id(),
            nodes: Used::default(),
            sessions: Used::default(),
            watches: Used::default(),
        }
    }

    /// The records of `memo`, if it describes the progress record read now: no batch
    /// started since its own (`batch`), and that one by its chain (`by`). Otherwise nothing.
    pub fn from_memo(memo: Option<Memo>, by: Option<&str>, batch: u64, applied: Zxid) -> Known {
        match memo {
            Some(m) if by == Some(m.by.as_str()) && m.batch == batch && m.applied == applied => {
                let mut known = Known {
                    token: m.by,
                    nodes: Used::default(),
                    sessions: Used::default(),
                    watches: Used::default(),
                };
                // Most recently used first in the memo: learnt last, so they stay the most
                // recent.
                known.learn_nodes(m.nodes.into_iter().rev());
                known.learn_sessions(m.sessions.into_iter().rev());
                known.learn_watches(m.watches.into_iter().rev());
                known
            }
            _ => Known::fresh(),
        }
    }

    /// What the user bucket holds at `path`, if known (`Some(None)`: no node there). A node
    /// whose parent is known and does not list it is known to be absent: after a whole
    /// batch, a node's object exists exactly when its parent's children name it.
    pub fn node(&self, path: &str) -> Option<Option<&NodeRecord>> {
        if let Some(node) = self.nodes.get(path) {
            return Some(node.as_ref());
        }
        match self.nodes.get(path::parent(path)?)? {
            Some(p) if p.children.contains(path::name(path)) => None,
            _ => Some(None),
        }
    }

    /// A session's record as stored, if known (`Some(None)`: none).
    pub fn session(&self, id: SessionId) -> Option<Option<&SessionRecord>> {
        self.sessions.get(&id).map(Option::as_ref)
    }

    /// The watch record of `path` as stored, if known (empty: none).
    pub fn watches(&self, path: &str) -> Option<&WatchRecord> {
        self.watches.get(path)
    }

    /// Take `nodes` as what the user bucket now holds.
    pub fn learn_nodes(&mut self, nodes: impl IntoIterator<Item = (String, Option<NodeRecord>)>) {
        for (path, node) in nodes {
            // Its data and its children's names (a node of many children is not kept).
            let bytes = node.as_ref().map_or(0, |n| {
                n.data.len() + n.children.iter().map(|c| c.len() + 3).sum::<usize>()
            });
            self.nodes.put(path.clone(), node, bytes + path.len());
        }
    }

    /// Take `sessions` as the records the system bucket now holds.
    pub fn learn_sessions(
        &mut self,
        sessions: impl IntoIterator<Item = (SessionId, Option<SessionRecord>)>,
    ) {
        for (id, record) in sessions {
            // Sized by its JSON, as stored; one that does not encode is not kept.
            let bytes = record
                .as_ref()
                .map_or(Some(0), |r| serde_json::to_vec(r).ok().map(|v| v.len()));
            match bytes {
                Some(bytes) => self.sessions.put(id, record, bytes),
                None => self.sessions.forget(&id),
            }
        }
    }

    /// Take `watches` as the records the system bucket now holds.
    pub fn learn_watches(&mut self, watches: impl IntoIterator<Item = (String, WatchRecord)>) {
        for (path, record) in watches {
            let sessions = record.data.len()
                + record.child.len()
                + record.persistent.len()
                + record.persistent_recursive.len();
            self.watches.put(path, record, sessions * 8);
        }
    }

    /// Forget a session's record (written outside a batch).
    pub fn forget_session(&mut self, id: SessionId) {
        self.sessions.forget(&id);
    }

    /// The memo of the progress a run leaves: `batch`, applying to `applied`. The most
    /// recently used records, within the bounds.
    pub fn into_memo(self, batch: u64, applied: Zxid) -> Memo {
        Memo {
            by: self.token,
            batch,
            applied,
            nodes: self.nodes.into_recent(),
            sessions: self.sessions.into_recent(),
            watches: self.watches.into_recent(),
        }
    }
}

/// Records by key, each with its size and when it was last used.
#[derive(Debug)]
struct Used<K, V> {
    map: HashMap<K, (V, usize, Cell<u64>)>,
    tick: Cell<u64>,
}

impl<K, V> Default for Used<K, V> {
    fn default() -> Self {
        Used {
            map: HashMap::new(),
            tick: Cell::new(0),
        }
    }
}

impl<K: Hash + Eq, V> Used<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (value, _, used) = self.map.get(key)?;
        used.set(self.next_tick());
        Some(value)
    }

    /// Keep `value` (of `bytes`) for `key`; one too large to keep is forgotten instead.
    fn put(&mut self, key: K, value: V, bytes: usize) {
        if bytes > RECORD_MAX_BYTES {
            self.map.remove(&key);
        } else {
            let used = Cell::new(self.next_tick());
            self.map.insert(key, (value, bytes, used));
        }
    }

    fn forget(&mut self, key: &K) {
        self.map.remove(key);
    }

    fn next_tick(&self) -> u64 {
        self.tick.set(self.tick.get() + 1);
        self.tick.get()
    }

    /// The most recently used records, within the memo's bounds.
    fn into_recent(self) -> Vec<(K, V)> {
        let mut all: Vec<_> = self.map.into_iter().collect();
        all.sort_unstable_by_key(|(_, (_, _, used))| std::cmp::Reverse(used.get()));
        let mut total = 0;
        all.into_iter()
            .take(MEMO_MAX_RECORDS)
            .take_while(|(_, (_, bytes, _))| {
                total += bytes;
                total <= MEMO_MAX_BYTES
            })
            .map(|(key, (value, _, _))| (key, value))
            .collect()
    }
}
