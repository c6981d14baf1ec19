//! Client-side watch table, as ZooKeeper's client keeps it: the service sends one event per
//! session and trigger; the client fires every local watcher the event concerns.

use faaskeeper_core::wire::{EventType, WatchEvent};
use std::collections::{HashSet, VecDeque};
use tokio::sync::oneshot;

/// Which watch a read left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WatchKind {
    Data,
    Exists,
    Child,
}

/// A one-shot watch; [`Watch::wait`] yields its event.
#[derive(Debug)]
pub struct Watch {
    pub(crate) rx: oneshot::Receiver<WatchEvent>,
}

struct Entry {
    kind: WatchKind,
    path: String,
    /// The request that left it; `None` once its result arrived (armed).
    pending_seq: Option<i64>,
    tx: oneshot::Sender<WatchEvent>,
}

/// How many recent events are remembered to drop redeliveries.
const SEEN: usize = 10_000;

/// A persistent watch: every event it matches, until dropped or removed.
#[derive(Debug)]
pub struct PersistentWatch {
    pub(crate) rx: tokio::sync::mpsc::UnboundedReceiver<WatchEvent>,
}

impl PersistentWatch {
    /// The next event, or `None` once the session has ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.rx.recv().await
    }
}

struct PersistentEntry {
    path: String,
    recursive: bool,
    tx: tokio::sync::mpsc::UnboundedSender<WatchEvent>,
}

#[derive(Default)]
pub(crate) struct Watchers {
    entries: Vec<Entry>,
    persistent: Vec<PersistentEntry>,
    seen: HashSet<(i64, EventType, String)>,
    seen_order: VecDeque<(i64, EventType, String)>,
}

impl Watchers {
    pub(crate) fn add(&mut self, kind: WatchKind, path: &str, seq: i64) -> Watch {
        let (tx, rx) = oneshot::channel();
        self.entries.push(Entry {
            kind,
            path: path.to_string(),
            pending_seq: Some(seq),
            tx,
        });
        Watch { rx }
    }

    /// The result of `seq` arrived: arm its watch if the read succeeded, else drop it.
    /// ZooKeeper leaves an exists watch even on a missing node, which is a success here.
    pub(crate) fn settle(&mut self, seq: i64, ok: bool) {
        if ok {
            for e in &mut self.entries {
                if e.pending_seq == Some(seq) {
                    e.pending_seq = None;
                }
            }
        } else {
            self.forget(seq);
        }
    }

    pub(crate) fn forget(&mut self, seq: i64) {
        self.entries.retain(|e| e.pending_seq != Some(seq));
    }

    /// Whether any watch is left (armed or waiting for its read's result).
    pub(crate) fn has_any(&self) -> bool {
        !self.entries.is_empty() || !self.persistent.is_empty()
    }

    pub(crate) fn add_persistent(&mut self, path: &str, recursive: bool) -> PersistentWatch {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.persistent.push(PersistentEntry {
            path: path.to_string(),
            recursive,
            tx,
        });
        PersistentWatch { rx }
    }

    pub(crate) fn remove_persistent(&mut self, path: &str) {
        self.persistent.retain(|p| p.path != path);
    }

    pub(crate) fn clear(&mut self) {
        self.persistent.clear();
        self.entries.clear();
    }

    /// Fire local watchers; `false` if the event is a redelivery and was dropped.
    pub(crate) fn fire(&mut self, event: WatchEvent) -> bool {
        let key = (event.zxid, event.kind, event.path.clone());
        if !self.seen.insert(key.clone()) {
            return false;
        }
        self.seen_order.push_back(key);
        if self.seen_order.len() > SEEN
            && let Some(old) = self.seen_order.pop_front()
        {
            self.seen.remove(&old);
        }
        // The service's trigger table decides which local watchers an event concerns.
        let concerns = |k: WatchKind| match k {
            WatchKind::Data | WatchKind::Exists => event.kind.fires_data_watch(),
            WatchKind::Child => event.kind.fires_child_watch(),
        };
        let (fire, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| e.pending_seq.is_none() && e.path == event.path && concerns(e.kind));
        self.entries = keep;
        for e in fire {
            let _ = e.tx.send(event.clone());
        }
        // Persistent watches: the node itself; recursive ones also its descendants.
        self.persistent.retain(|p| {
            let hit = if p.recursive {
                event.kind.fires_recursive_watch()
                    && faaskeeper_core::path::is_within(&event.path, &p.path)
            } else {
                p.path == event.path
            };
            !hit || p.tx.send(event.clone()).is_ok()
        });
        true
    }
}
