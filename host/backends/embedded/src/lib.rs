//! # faaskeeper-backend-embedded
//!
//! The default backend: every bucket is a table in one [redb](https://docs.rs/redb) file under
//! the data directory. A write returns only after its transaction is committed with
//! `Durability::Immediate` (fsynced), so an acknowledged write survives SIGKILL and power loss.
//!
//! **Durable keys only** ([`SyncPolicy::Only`]). All writes are committed in one order, and
//! redb persists a commit made without fsync (`Durability::None`) with the next fsynced one,
//! or loses it on a crash together with every later commit: what survives is always a prefix
//! of the commit order. A caller that can rebuild everything except a few keys from those
//! keys (the service rebuilds its state from the transaction log, whose head is such a key,
//! as ZooKeeper rebuilds its tree from its txn log) names them, and only groups that write
//! one of them wait for an fsync. Everything else is as fast as memory, and never newer on
//! disk than the keys it derives from.
//!
//! **Group commit.** All writes go through one committer thread. It takes every write that is
//! waiting, applies them in arrival order inside a single redb transaction, commits once, and
//! then answers each caller. Concurrent writers therefore share one fsync, and a
//! compare-and-swap is decided against the state left by the writes queued before it, exactly
//! as if the writes had run one by one. Reads use redb's MVCC snapshots and never wait for the
//! committer.
//!
//! ## Example
//!
//! ```
//! use faaskeeper_backend_embedded::EmbeddedDb;
//! use faaskeeper_storage::Store;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let db = EmbeddedDb::open(&dir.path().join("faaskeeper.redb"), &["system", "user"]).unwrap();
//! let system = db.bucket("system").unwrap();
//! system.set("k", b"v".to_vec()).await.unwrap();
//! assert_eq!(system.get("k").await.unwrap(), Some(b"v".to_vec()));
//! # });
//! ```
#![deny(missing_docs)]

use async_trait::async_trait;
use faaskeeper_storage::{Store, StoreError, decode_counter};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Most writes folded into one commit.
const MAX_GROUP: usize = 1024;

fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

enum WriteOp {
    Set(Vec<(String, Vec<u8>)>),
    Delete(Vec<String>),
    Increment(String, i64),
    Cas(String, Option<Vec<u8>>, Vec<u8>),
}

enum WriteOutcome {
    Done,
    Counter(i64),
}

struct Job {
    bucket: String,
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome, StoreError>>,
}

/// Which writes are fsynced before they return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Every write (the `Store` trait's plain promise).
    #[default]
    Every,
    /// Only writes to these `(bucket, key prefix)` pairs; a group containing one makes the
    /// whole commit order up to it durable. See the crate docs for when this is sound.
    Only(Vec<(String, String)>),
}

impl SyncPolicy {
    fn requires(&self, job: &Job) -> bool {
        let SyncPolicy::Only(keys) = self else {
            return true;
        };
        let hits = |k: &str| {
            keys.iter()
                .any(|(b, prefix)| *b == job.bucket && k.starts_with(prefix.as_str()))
        };
        match &job.op {
            WriteOp::Set(items) => items.iter().any(|(k, _)| hits(k)),
            WriteOp::Delete(keys) => keys.iter().any(|k| hits(k)),
            WriteOp::Increment(k, _) | WriteOp::Cas(k, _, _) => hits(k),
        }
    }
}

/// One redb file holding every bucket.
pub struct EmbeddedDb {
    db: Arc<Database>,
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    buckets: Vec<String>,
    policy: SyncPolicy,
}

impl EmbeddedDb {
    /// Open (or create) the file at `path` with the given buckets; every write is fsynced.
    pub fn open(path: &Path, buckets: &[&str]) -> Result<Arc<EmbeddedDb>, StoreError> {
        EmbeddedDb::open_with(path, buckets, SyncPolicy::Every)
    }

    /// Like [`EmbeddedDb::open`], fsyncing as `policy` says.
    pub fn open_with(
        path: &Path,
        buckets: &[&str],
        policy: SyncPolicy,
    ) -> Result<Arc<EmbeddedDb>, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Arc::new(Database::create(path).map_err(unavailable)?);
        let txn = db.begin_write().map_err(unavailable)?;
        for b in buckets {
            txn.open_table(table(b)).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let committer = db.clone();
        let committer_policy = policy.clone();
        std::thread::Builder::new()
            .name("faaskeeper-commit".into())
            .spawn(move || commit_loop(&committer, &committer_policy, rx))
            .map_err(unavailable)?;
        Ok(Arc::new(EmbeddedDb {
            db,
            path: path.to_path_buf(),
            jobs: tx,
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
            policy,
        }))
    }

    /// A handle on one bucket.
    pub fn bucket(self: &Arc<Self>, name: &str) -> Result<Arc<dyn Store>, StoreError> {
        if !self.buckets.iter().any(|b| b == name) {
            return Err(StoreError::NoSuchStore(name.to_string()));
        }
        Ok(Arc::new(RedbBucket {
            db: self.clone(),
            name: name.to_string(),
        }))
    }

    async fn write(&self, bucket: &str, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                bucket: bucket.to_string(),
                op,
                reply,
            })
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?
    }
}

fn commit_loop(db: &Database, policy: &SyncPolicy, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let durable = group.iter().any(|j| policy.requires(j));
        match run_group(db, &group, durable) {
            Ok(results) => {
                for (job, r) in group.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Apply a group in one transaction. Per-job outcomes (a lost CAS, a bad counter) do not abort
/// the others; only a failed commit fails them all.
fn run_group(
    db: &Database,
    group: &[Job],
    durable: bool,
) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
    let mut txn = db.begin_write().map_err(unavailable)?;
    if !durable {
        txn.set_durability(redb::Durability::None)
            .map_err(unavailable)?;
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let mut t = txn.open_table(table(&job.bucket)).map_err(unavailable)?;
        let r = match &job.op {
            WriteOp::Set(items) => items
                .iter()
                .try_for_each(|(k, v)| t.insert(k.as_str(), v.as_slice()).map(|_| ()))
                .map(|()| WriteOutcome::Done)
                .map_err(unavailable),
            WriteOp::Delete(keys) => keys
                .iter()
                .try_for_each(|k| t.remove(k.as_str()).map(|_| ()))
                .map(|()| WriteOutcome::Done)
                .map_err(unavailable),
            WriteOp::Increment(k, delta) => {
                let cur = match t.get(k.as_str()).map_err(unavailable)? {
                    Some(v) => decode_counter(v.value()),
                    None => Ok(0),
                };
                match cur {
                    Ok(cur) => {
                        let new = cur.wrapping_add(*delta);
                        t.insert(k.as_str(), new.to_le_bytes().as_slice())
                            .map_err(unavailable)?;
                        Ok(WriteOutcome::Counter(new))
                    }
                    Err(e) => Err(e),
                }
            }
            WriteOp::Cas(k, expected, new) => {
                let matches = {
                    let cur = t.get(k.as_str()).map_err(unavailable)?;
                    cur.as_ref().map(|v| v.value()) == expected.as_deref()
                };
                if matches {
                    t.insert(k.as_str(), new.as_slice()).map_err(unavailable)?;
                    Ok(WriteOutcome::Done)
                } else {
                    Err(StoreError::CasConflict)
                }
            }
        };
        results.push(r);
    }
    txn.commit().map_err(unavailable)?;
    Ok(results)
}

struct RedbBucket {
    db: Arc<EmbeddedDb>,
    name: String,
}

impl RedbBucket {
    fn read<T>(
        &self,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        ) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.db.begin_read().map_err(unavailable)?;
        let t = txn.open_table(table(&self.name)).map_err(unavailable)?;
        f(&t).map_err(unavailable)
    }
}

#[async_trait]
impl Store for RedbBucket {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|t| Ok(t.get(key)?.map(|v| v.value().to_vec())))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.read(|t| {
            keys.iter()
                .map(|k| Ok(t.get(k.as_str())?.map(|v| v.value().to_vec())))
                .collect()
        })
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.db
            .write(&self.name, WriteOp::Set(vec![(key.to_string(), value)]))
            .await
            .map(|_| ())
    }

    /// On this backend the whole batch is one transaction (stronger than the trait promises).
    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.db
            .write(&self.name, WriteOp::Set(items))
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.db
            .write(&self.name, WriteOp::Delete(vec![key.to_string()]))
            .await
            .map(|_| ())
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.db
            .write(&self.name, WriteOp::Delete(keys))
            .await
            .map(|_| ())
    }

    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let keys = self.read(|t| {
            let range = match &cursor {
                Some(c) => t.range::<&str>((
                    std::ops::Bound::Excluded(c.as_str()),
                    std::ops::Bound::Unbounded,
                ))?,
                None => t.range::<&str>(..)?,
            };
            let mut keys = Vec::new();
            for item in range.take(limit) {
                let (k, _) = item?;
                keys.push(k.value().to_string());
            }
            Ok(keys)
        })?;
        let next = if keys.len() == limit {
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        match self
            .db
            .write(&self.name, WriteOp::Increment(key.to_string(), delta))
            .await?
        {
            WriteOutcome::Counter(n) => Ok(n),
            WriteOutcome::Done => Err(StoreError::Unavailable("committer answered oddly".into())),
        }
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.db
            .write(
                &self.name,
                WriteOp::Cas(key.to_string(), expected.map(<[u8]>::to_vec), new),
            )
            .await
            .map(|_| ())
    }

    fn summary(&self) -> String {
        let sync = match &self.db.policy {
            SyncPolicy::Every => "fsync on every commit".to_string(),
            SyncPolicy::Only(keys) => format!(
                "fsync on commits writing {}; the rest persisted in order with them",
                keys.iter()
                    .filter(|(b, _)| *b == self.name)
                    .map(|(_, k)| format!("{k}*"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        format!(
            "embedded redb table {:?} in {} ({sync}, group commit)",
            self.name,
            self.db.path.display()
        )
    }
}
