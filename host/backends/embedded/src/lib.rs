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
//! replaying it. So the keys the caller names as the log ([`LogKeys`]) live in a second file,
//! an append-only write-ahead log with its own committer that fsyncs every commit but one of
//! plain sets (`wal`: one small append and one `fdatasync` per commit, the keys in
//! memory), and the rest is committed without fsync
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

mod wal;

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
    /// Every so often, then forwarding the deferred log deletes to the log's committer.
    Checkpoint(Duration, mpsc::Sender<Job>),
}

/// One redb file and its committer thread.
struct File {
    db: Arc<Database>,
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    /// Held by whoever commits to the file. Checkpointed files only: a write that finds it
    /// free commits on the caller's thread (a commit without fsync takes microseconds),
    /// saving the two thread switches of a round trip through the committer.
    inline: Option<Arc<std::sync::Mutex<Checkpointing>>>,
}

/// What a checkpointed file's committers share.
struct Checkpointing {
    /// Whether anything was committed since the last durable commit.
    dirty: bool,
    /// Log deletes waiting for the next durable commit.
    deferred: Vec<(String, String)>,
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
        let inline = match sync {
            Sync::Every => None,
            Sync::Checkpoint(..) => Some(Arc::new(std::sync::Mutex::new(Checkpointing {
                dirty: false,
                deferred: Vec::new(),
            }))),
        };
        let shared = inline.clone();
        std::thread::Builder::new()
            .name("faaskeeper-commit".into())
            .spawn(move || commit_loop(&committer, &sync, shared.as_deref(), rx))
            .map_err(unavailable)?;
        Ok(File {
            db,
            path: path.to_path_buf(),
            jobs: tx,
            inline,
        })
    }

    async fn write(&self, bucket: &str, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        if let Some(shared) = &self.inline
            && let Ok(mut state) = shared.try_lock()
        {
            if let WriteOp::DeferLogDelete(keys) = op {
                // Out after the next durable commit, which follows every write before this.
                state
                    .deferred
                    .extend(keys.into_iter().map(|k| (bucket.to_string(), k)));
                return Ok(WriteOutcome::Done);
            }
            let job = Job {
                bucket: bucket.to_string(),
                op,
                reply: None,
            };
            let results = run_group(&self.db, std::slice::from_ref(&job), false)?;
            state.dirty = true;
            return only_result(results);
        }
        submit(&self.jobs, bucket, op).await
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

/// The answer of a group of one job.
pub(crate) fn only_result(
    mut results: Vec<Result<WriteOutcome, StoreError>>,
) -> Result<WriteOutcome, StoreError> {
    results
        .pop()
        .unwrap_or_else(|| Err(StoreError::Unavailable("commit answered nothing".into())))
}

/// Hand a write to a committer thread and wait for its answer.
pub(crate) async fn submit(
    jobs: &mpsc::Sender<Job>,
    bucket: &str,
    op: WriteOp,
) -> Result<WriteOutcome, StoreError> {
    let (reply, rx) = oneshot::channel();
    jobs.send(Job {
        bucket: bucket.to_string(),
        op,
        reply: Some(reply),
    })
    .map_err(|_| StoreError::Unavailable("committer stopped".into()))?;
    rx.await
        .map_err(|_| StoreError::Unavailable("committer stopped".into()))?
}

/// Where a key lives: the state's redb file or, in log mode, the log.
enum Part<'a> {
    State(&'a File),
    Log(&'a wal::Wal),
}

impl Part<'_> {
    async fn write(&self, bucket: &str, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match self {
            Part::State(f) => f.write(bucket, op).await,
            Part::Log(w) => match op {
                WriteOp::Set(items) => w.set(bucket, items).await.map(|()| WriteOutcome::Done),
                op => submit(&w.jobs, bucket, op).await,
            },
        }
    }

    fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Part::State(f) => f.read(bucket, |t| Ok(t.get(key)?.map(|v| v.value().to_vec()))),
            Part::Log(w) => w.get(bucket, key),
        }
    }
}

/// The buckets of one data directory.
pub struct EmbeddedDb {
    /// Every key, or every key but the log's.
    state: File,
    /// The log's keys, in log mode.
    log: Option<(wal::Wal, LogKeys)>,
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

    /// Log mode (see the crate docs): the keys `log` names live in the write-ahead log at
    /// `log_path` and are fsynced on every commit; the rest lives in `state_path` and is
    /// checkpointed. A log that an earlier version kept as a redb file (`log_path` with the
    /// extension `redb`) is taken over into the new one and removed.
    pub fn open_with_log(
        state_path: &Path,
        log_path: &Path,
        buckets: &[&str],
        log: LogKeys,
    ) -> Result<Arc<EmbeddedDb>, StoreError> {
        let legacy = log_path.with_extension("redb");
        let log_file = wal::Wal::open(log_path, Some(legacy.as_path()).filter(|l| *l != log_path))?;
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

    /// The part holding `key` of `bucket`.
    fn part(&self, bucket: &str, key: &str) -> Part<'_> {
        match &self.log {
            Some((wal, keys)) if keys.contains(bucket, key) => Part::Log(wal),
            _ => Part::State(&self.state),
        }
    }
}

/// The deletes of log keys a group defers (taken out of its jobs).
fn take_deferred(group: &mut [Job]) -> Vec<(String, String)> {
    let mut deferred = Vec::new();
    for job in group {
        if let WriteOp::DeferLogDelete(keys) = &mut job.op {
            deferred.extend(keys.drain(..).map(|k| (job.bucket.clone(), k)));
        }
    }
    deferred
}

/// The committer thread of a file: takes every write waiting, commits them as one group and
/// answers them. A checkpointed file (`shared` set) commits without fsync, and durably once
/// every period while anything is pending; then the log deletes deferred until then go to
/// the log's committer.
fn commit_loop(
    db: &Database,
    sync: &Sync,
    shared: Option<&std::sync::Mutex<Checkpointing>>,
    rx: mpsc::Receiver<Job>,
) {
    let mut last_durable = Instant::now();
    loop {
        let first = match sync {
            // Inline writes do not pass through here, so wake up every period to look.
            Sync::Checkpoint(every, _) => {
                match rx.recv_timeout(every.saturating_sub(last_durable.elapsed())) {
                    Ok(j) => Some(j),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
            Sync::Every => match rx.recv() {
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
        // Inline writers wait while this commit runs.
        let mut state = shared.map(|m| m.lock().unwrap_or_else(|p| p.into_inner()));
        let pending = state
            .as_ref()
            .is_some_and(|s| s.dirty || !s.deferred.is_empty());
        let durable = match sync {
            Sync::Every => true,
            Sync::Checkpoint(every, _) => pending && last_durable.elapsed() >= *every,
        };
        if group.is_empty() && !durable {
            if !pending {
                last_durable = Instant::now();
            }
            continue;
        }
        // Deletes deferred in this group follow every write queued before them, so they may
        // go out after this commit if it is durable, else after the next durable one.
        let deferred_here = take_deferred(&mut group);
        match run_group(db, &group, durable) {
            Ok(results) => {
                for (job, r) in group.into_iter().zip(results) {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(r);
                    }
                }
                if let Some(state) = state.as_mut() {
                    state.deferred.extend(deferred_here);
                    if durable {
                        last_durable = Instant::now();
                        state.dirty = false;
                        if let Sync::Checkpoint(_, log) = sync {
                            forward_deletes(log, std::mem::take(&mut state.deferred));
                        }
                    } else {
                        state.dirty = true;
                    }
                }
            }
            Err(e) => {
                if durable && let Sync::Checkpoint(..) = sync {
                    // Tried again a period later, not at once: a failing disk would otherwise
                    // keep this thread spinning on it.
                    tracing::error!(error = %e, "state checkpoint failed; retrying");
                    last_durable = Instant::now();
                }
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
        self.db.part(&self.name, key).get(&self.name, key)
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = vec![None; keys.len()];
        let indexed = keys.iter().cloned().zip(0..keys.len()).collect();
        for part in self.split(indexed) {
            let Some((first, _)) = part.first() else {
                continue;
            };
            match self.db.part(&self.name, first) {
                Part::State(file) => file.read(&self.name, |t| {
                    for (k, i) in &part {
                        out[*i] = t.get(k.as_str())?.map(|v| v.value().to_vec());
                    }
                    Ok(())
                })?,
                Part::Log(wal) => {
                    for (k, i) in &part {
                        out[*i] = wal.get(&self.name, k)?;
                    }
                }
            }
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
            self.db
                .part(&self.name, first)
                .write(&self.name, WriteOp::Set(part))
                .await?;
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
        if let Some((wal, log)) = &self.db.log {
            keys.retain(|k| !log.contains(&self.name, k));
            keys.extend(
                wal.list(&self.name, cursor.as_deref(), limit)?
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
            .part(&self.name, key)
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
            .part(&self.name, key)
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
                "embedded redb table {:?}: log keys {} in the write-ahead log {} (fsync on every \
                 commit), the rest in {} (checkpointed every {:?}, rebuilt from the log after a \
                 crash); group commit",
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
