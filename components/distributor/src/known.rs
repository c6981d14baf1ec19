//! Node objects a run knows to be what the user bucket holds, so that it need not read them
//! again: where the user bucket keeps the node records (S3), each read is a GET billed at
//! $0.40 per million, about as much as all else a set costs above its PUT.
//!
//! What a batch read and what it wrote stay known for the batches after it, in the same run
//! and, through the platform, in later runs: the answer to a wake-up carries them as `memo`,
//! and a platform that keeps one distributor process (the bundled host, a warm Lambda) sends
//! it back in the next wake-up. Nothing is trusted because the platform sent it: a run takes
//! the memo only if the progress record shows that no batch was started since the one it
//! describes (`batch`), and that this chain of runs started that one (`by`, a random token
//! each batch-start write of the chain names). Only distributors write node objects, one at
//! a time, so no one else can have changed them since. A platform that sends no memo (Spin,
//! wasmCloud) only loses the saving.

use faaskeeper_core::Zxid;
use faaskeeper_core::apply::NodeRecord;
use faaskeeper_core::path;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::HashMap;

/// Most nodes a memo carries (the most recently used ones).
const MEMO_MAX_NODES: usize = 1024;
/// Most bytes of node data a memo carries.
const MEMO_MAX_BYTES: usize = 256 * 1024;
/// A node with more data than this is not kept: it is read when it is needed (one GET, as
/// for any node) rather than carried through every wake-up.
const NODE_MAX_BYTES: usize = 4096;

/// The nodes known to a chain of runs, as the user bucket holds them after the last batch the
/// chain applied.
#[derive(Debug)]
pub struct Known {
    /// Names this chain's batch-start writes of the progress record (`Progress::by`).
    pub token: String,
    /// By path: the record (`None`: no such node) and when it was last used.
    nodes: HashMap<String, (Option<NodeRecord>, Cell<u64>)>,
    tick: Cell<u64>,
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
}

impl Known {
    /// Nothing known, under a new token.
    pub fn fresh() -> Known {
        Known {
            token: faaskeeper_guest::random_id(),
            nodes: HashMap::new(),
            tick: Cell::new(0),
        }
    }

    /// The nodes of `memo`, if it describes the progress record read now: no batch started
    /// since its own (`batch`), and that one by its chain (`by`). Otherwise nothing.
    pub fn from_memo(memo: Option<Memo>, by: Option<&str>, batch: u64, applied: Zxid) -> Known {
        match memo {
            Some(m) if by == Some(m.by.as_str()) && m.batch == batch && m.applied == applied => {
                let mut known = Known {
                    token: m.by,
                    nodes: HashMap::new(),
                    tick: Cell::new(0),
                };
                known.learn(m.nodes);
                known
            }
            _ => Known::fresh(),
        }
    }

    /// What the user bucket holds at `path`, if known (`Some(None)`: no node there). A node
    /// whose parent is known and does not list it is known to be absent: after a whole
    /// batch, a node's object exists exactly when its parent's children name it.
    pub fn node(&self, path: &str) -> Option<Option<&NodeRecord>> {
        if let Some((n, used)) = self.nodes.get(path) {
            used.set(self.next_tick());
            return Some(n.as_ref());
        }
        let (parent, _) = self.nodes.get(path::parent(path)?)?;
        match parent {
            Some(p) if p.children.contains(path::name(path)) => None,
            _ => Some(None),
        }
    }

    /// Take `nodes` as what the user bucket now holds.
    pub fn learn(&mut self, nodes: impl IntoIterator<Item = (String, Option<NodeRecord>)>) {
        for (path, node) in nodes {
            if node.as_ref().is_some_and(|n| n.data.len() > NODE_MAX_BYTES) {
                self.nodes.remove(&path);
            } else {
                let used = Cell::new(self.next_tick());
                self.nodes.insert(path, (node, used));
            }
        }
    }

    fn next_tick(&self) -> u64 {
        self.tick.set(self.tick.get() + 1);
        self.tick.get()
    }

    /// The memo of the progress a run leaves: `batch`, applying to `applied`. The most
    /// recently used nodes, within the bounds.
    pub fn into_memo(self, batch: u64, applied: Zxid) -> Memo {
        let mut nodes: Vec<_> = self.nodes.into_iter().collect();
        nodes.sort_unstable_by_key(|(_, (_, used))| std::cmp::Reverse(used.get()));
        let mut bytes = 0;
        let kept = nodes
            .into_iter()
            .take(MEMO_MAX_NODES)
            .take_while(|(_, (n, _))| {
                bytes += n.as_ref().map_or(0, |n| n.data.len());
                bytes <= MEMO_MAX_BYTES
            })
            .map(|(path, (n, _))| (path, n))
            .collect();
        Memo {
            by: self.token,
            batch,
            applied,
            nodes: kept,
        }
    }
}
