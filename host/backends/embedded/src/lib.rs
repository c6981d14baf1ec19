//! # faaskeeper-backend-embedded
//!
//! The default backend: every bucket is a table in a [redb](https://docs.rs/redb) file under
//! the data directory.
//!
//! **Plain mode** ([`EmbeddedDb::open`]): one file, and a write returns only after its
//! transaction is committed with `Durability::Immediate` (fsynced), so an acknowledged write
//! survives SIGKILL and power loss.
//!
//! **Log mode** ([`EmbeddedDb::open_with_log`]), what the service runs. The service's state
//! is derived from its transaction log, as ZooKeeper's tree is derived from its txn log: only
//! the log must be on disk before a write is acknowledged; everything else can be rebuilt by
//! replaying it. So the keys the caller names as the log ([`LogKeys`]) live in a second file
//! with its own committer that fsyncs every commit, and the rest is committed without fsync
//! (`Durability::None`) and made durable by a checkpoint commit every
//! [`LogKeys::checkpoint`]. A crash loses at most the state written since the last checkpoint
//! — always a prefix of the commit order, because redb persists a non-durable commit only with
//! a later durable one — and that state is rebuilt from the log. For that to work, deleting a
//! log key (the distributor drops a txn entry once applied) is *deferred*: it is carried out
//! after the next checkpoint, when the state that made the entry unnecessary is on disk.
//! Until then a read still sees the entry. The log's fsyncs never hold up the state's
//! commits, which is what makes this fast.
//!
//! **Group commit**, in both modes: all writes to a file go through one committer thread. It
//! takes every write that is waiting, applies them in arrival order inside a single redb
//! transaction, commits once, and then answers each caller. Concurrent writers therefore
//! share one fsync, and a compare-and-swap is decided against the state left by the writes
//! queued before it, exactly as if the writes had run one by one. Reads use redb's MVCC
//! snapshots and never wait for a committer.
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
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most writes folded into one commit.
const MAX_GROUP: usize = 1024;
/// The table a checkpoint writes, so that its commit is never empty.
const META_TABLE: &str = "__faaskeeper_meta";

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
    /// Deletes of log keys, to be sent to the log's committer after the next checkpoint.
    DeferLogDelete(Vec<String>),
}

enum WriteOutcome {
    Done,
    Counter(i64),
}

struct Job {
    bucket: String,
    op: WriteOp,
    reply: Option<oneshot::Sender<Result<WriteOutcome, StoreError>>>,
}

/// The keys that form the log in [`EmbeddedDb::open_with_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeys {
    /// `(bucket, key prefix)` pairs.
    pub keys: Vec<(String, String)>,
    /// How often the rest of the state is made durable.
    pub checkpoint: Duration,
}

impl LogKeys {
    fn contains(&self, bucket: &str, key: &str) -> bool {
        self.keys
            .iter()
            .any(|(b, prefix)| b == bucket && key.starts_with(prefix.as_str()))
    }
}

/// When a file's committer fsyncs.
enum Sync {
    /// Every commit.
    Every,
    /// Every commit with a write other than a plain set: sets are persisted with the next
    /// such commit, which is how the writer's txn entries reach the disk with the head that
    /// points at them, in one fsync.
    ExceptSets,
    /// Every so often, then forwarding the deferred log deletes to the log's committer.
    Checkpoint(Duration, mpsc::Sender<Job>),
}

/// One redb file and its committer thread.
struct File {
    db: Arc<Database>,
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
}

impl File {
    fn open(path: &Path, buckets: &[&str], sync: Sync) -> Result<File, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let db = Arc::new(Database::create(path).map_err(unavailable)?);
        let txn = db.begin_write().map_err(unavailable)?;
        for b in buckets.iter().copied().chain([META_TABLE]) {
            txn.open_table(table(b)).map_err(unavailable)?;
        }
        txn.commit().map_err(unavailable)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let committer = db.clone();
        std::thread::Builder::new()
            .name("faaskeeper-commit".into())
            .spawn(move || commit_loop(&committer, &sync, rx))
            .map_err(unavailable)?;
        Ok(File {
            db,
            path: path.to_path_buf(),
            jobs: tx,
        })
    }

    async fn write(&self, bucket: &str, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job {
                bucket: bucket.to_string(),
                op,
                reply: Some(reply),
            })
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("committer stopped".into()))?
    }

    fn read<T>(
        &self,
        bucket: &str,
        f: impl FnOnce(
            &redb::ReadOnlyTable<&'static str, &'static [u8]>,
        ) -> Result<T, redb::StorageError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let t = txn.open_table(table(bucket)).map_err(unavailable)?;
        f(&t).map_err(unavailable)
    }
}

/// The buckets of one data directory.
pub struct EmbeddedDb {
    /// Every key, or every key but the log's.
    state: File,
    /// The log's keys, in log mode.
    log: Option<(File, LogKeys)>,
    buckets: Vec<String>,
}

impl EmbeddedDb {
    /// Open (or create) the file at `path` with the given buckets; every write is fsynced.
    pub fn open(path: &Path, buckets: &[&str]) -> Result<Arc<EmbeddedDb>, StoreError> {
        Ok(Arc::new(EmbeddedDb {
            state: File::open(path, buckets, Sync::Every)?,
            log: None,
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
        }))
    }

    /// Log mode (see the crate docs): the keys `log` names live in `log_path` and are
    /// fsynced on every commit; the rest lives in `state_path` and is checkpointed.
    pub fn open_with_log(
        state_path: &Path,
        log_path: &Path,
        buckets: &[&str],
        log: LogKeys,
    ) -> Result<Arc<EmbeddedDb>, StoreError> {
        let log_file = File::open(log_path, buckets, Sync::ExceptSets)?;
        let state = File::open(
            state_path,
            buckets,
            Sync::Checkpoint(log.checkpoint, log_file.jobs.clone()),
        )?;
        Ok(Arc::new(EmbeddedDb {
            state,
            log: Some((log_file, log)),
            buckets: buckets.iter().map(|b| b.to_string()).collect(),
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

    /// The file holding `key` of `bucket`.
    fn file(&self, bucket: &str, key: &str) -> &File {
        match &self.log {
            Some((file, keys)) if keys.contains(bucket, key) => file,
            _ => &self.state,
        }
    }
}

fn commit_loop(db: &Database, sync: &Sync, rx: mpsc::Receiver<Job>) {
    // Checkpointing state: when the last durable commit was, whether anything was committed
    // since, and the log deletes waiting for the next durable commit.
    let mut last_durable = Instant::now();
    let mut dirty = false;
    let mut deferred: Vec<(String, String)> = Vec::new();
    loop {
        let pending = dirty || !deferred.is_empty();
        let first = match sync {
            Sync::Checkpoint(every, _) if pending => {
                match rx.recv_timeout(every.saturating_sub(last_durable.elapsed())) {
                    Ok(j) => Some(j),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            _ => match rx.recv() {
                Ok(j) => Some(j),
                Err(_) => return,
            },
        };
        let mut group: Vec<Job> = first.into_iter().collect();
        while !group.is_empty() && group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let durable = match sync {
            Sync::Every => true,
            Sync::ExceptSets => group.iter().any(|j| !matches!(j.op, WriteOp::Set(_))),
            Sync::Checkpoint(every, _) => last_durable.elapsed() >= *every,
        };
        if group.is_empty() && !durable {
            continue;
        }
        // Deletes deferred in this group follow every write queued before them, so they may
        // go out after this commit if it is durable, else after the next durable one.
        let mut deferred_here = Vec::new();
        for job in &mut group {
            if let WriteOp::DeferLogDelete(keys) = &mut job.op {
                deferred_here.extend(keys.drain(..).map(|k| (job.bucket.clone(), k)));
            }
        }
        match run_group(db, &group, durable) {
            Ok(results) => {
                for (job, r) in group.into_iter().zip(results) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(r);
                    }
                }
                deferred.append(&mut deferred_here);
                if durable {
                    last_durable = Instant::now();
                    dirty = false;
                    if let Sync::Checkpoint(_, log) = sync {
                        forward_deletes(log, std::mem::take(&mut deferred));
                    }
                } else {
                    dirty = true;
                }
            }
            Err(e) => {
                // Nothing of the group was committed, its deferred deletes included.
                for job in group {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

/// Hand deletes of log keys to the log's committer, unanswered: a lost one leaves a txn entry
/// nobody reads, never a missing one.
fn forward_deletes(log: &mpsc::Sender<Job>, deletes: Vec<(String, String)>) {
    let mut by_bucket: Vec<(String, Vec<String>)> = Vec::new();
    for (bucket, key) in deletes {
        match by_bucket.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, keys)) => keys.push(key),
            None => by_bucket.push((bucket, vec![key])),
        }
    }
    for (bucket, keys) in by_bucket {
        let _ = log.send(Job {
            bucket,
            op: WriteOp::Delete(keys),
            reply: None,
        });
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
            WriteOp::DeferLogDelete(_) => Ok(WriteOutcome::Done),
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
    if group.is_empty() {
        // A checkpoint with nothing queued must still write something to be a commit.
        let mut meta = txn.open_table(table(META_TABLE)).map_err(unavailable)?;
        meta.insert("checkpoint", [].as_slice())
            .map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok(results)
}

struct RedbBucket {
    db: Arc<EmbeddedDb>,
    name: String,
}

impl RedbBucket {
    /// Split keys (with their positions) by the file holding them.
    fn split<T>(&self, items: Vec<(String, T)>) -> [Vec<(String, T)>; 2] {
        let mut state = Vec::new();
        let mut log = Vec::new();
        for (k, v) in items {
            match &self.db.log {
                Some((_, keys)) if keys.contains(&self.name, &k) => log.push((k, v)),
                _ => state.push((k, v)),
            }
        }
        [state, log]
    }
}

#[async_trait]
impl Store for RedbBucket {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .file(&self.name, key)
            .read(&self.name, |t| Ok(t.get(key)?.map(|v| v.value().to_vec())))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = vec![None; keys.len()];
        let indexed = keys.iter().cloned().zip(0..keys.len()).collect();
        for part in self.split(indexed) {
            let Some((first, _)) = part.first() else {
                continue;
            };
            let file = self.db.file(&self.name, first);
            file.read(&self.name, |t| {
                for (k, i) in &part {
                    out[*i] = t.get(k.as_str())?.map(|v| v.value().to_vec());
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.set_many(vec![(key.to_string(), value)]).await
    }

    /// Each file's part of the batch is one transaction (stronger than the trait promises).
    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        for part in self.split(items) {
            let Some((first, _)) = part.first() else {
                continue;
            };
            let file = self.db.file(&self.name, first);
            file.write(&self.name, WriteOp::Set(part)).await?;
        }
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.delete_many(vec![key.to_string()]).await
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let [state, log] = self.split(keys.into_iter().map(|k| (k, ())).collect());
        if !state.is_empty() {
            self.db
                .state
                .write(
                    &self.name,
                    WriteOp::Delete(state.into_iter().map(|(k, ())| k).collect()),
                )
                .await?;
        }
        if !log.is_empty() {
            // Through the state's committer, after everything written before (crate docs).
            self.db
                .state
                .write(
                    &self.name,
                    WriteOp::DeferLogDelete(log.into_iter().map(|(k, ())| k).collect()),
                )
                .await?;
        }
        Ok(())
    }

    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let limit = limit.max(1);
        let list = |file: &File| {
            file.read(&self.name, |t| {
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
            })
        };
        let mut keys = list(&self.db.state)?;
        if let Some((file, log)) = &self.db.log {
            keys.retain(|k| !log.contains(&self.name, k));
            keys.extend(
                list(file)?
                    .into_iter()
                    .filter(|k| log.contains(&self.name, k)),
            );
            keys.sort();
            keys.truncate(limit);
        }
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
            .file(&self.name, key)
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
            .file(&self.name, key)
            .write(
                &self.name,
                WriteOp::Cas(key.to_string(), expected.map(<[u8]>::to_vec), new),
            )
            .await
            .map(|_| ())
    }

    fn summary(&self) -> String {
        match &self.db.log {
            None => format!(
                "embedded redb table {:?} in {} (fsync on every commit, group commit)",
                self.name,
                self.db.state.path.display()
            ),
            Some((file, log)) => format!(
                "embedded redb table {:?}: log keys {} in {} (fsync on every commit), the rest \
                 in {} (checkpointed every {:?}, rebuilt from the log after a crash); group commit",
                self.name,
                log.keys
                    .iter()
                    .filter(|(b, _)| *b == self.name)
                    .map(|(_, k)| format!("{k}*"))
                    .collect::<Vec<_>>()
                    .join(", "),
                file.path.display(),
                self.db.state.path.display(),
                log.checkpoint
            ),
        }
    }
}
