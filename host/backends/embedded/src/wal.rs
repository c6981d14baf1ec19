//! The log's own file in log mode: an append-only write-ahead log of committed groups, with
//! the live keys in memory, as ZooKeeper keeps its txn log.
//!
//! A durable commit of the log is one append of a few hundred bytes and one `fdatasync`,
//! where a B-tree file rewrites several pages (copy on write) per commit; on this project's
//! machines that halves the time of the fsync that every acknowledged write waits for
//! (docs/benchmarks.md).
//!
//! **File format.** The magic [`MAGIC`], then records: payload length (`u32` LE), CRC-32 of
//! the payload (`u32` LE), payload; then zeros up to the preallocated end (a zero length
//! ends the records: no record is empty). A payload is one committed group: a sequence of
//! operations, `1` set (bucket, key, value) or `2` delete (bucket, key), with `u8`-prefixed
//! bucket names and `u32`-prefixed keys and values. On open the records are replayed in
//! order; the first incomplete or corrupt record is taken for a write the crash interrupted
//! (nothing after it was acknowledged, because records are appended in commit order and a
//! durable commit is synced before it is answered), so the file is cut there. Whole records
//! can follow it (pages of unsynced appends reach the disk in any order), but so can they
//! after damage to the file, which this cannot tell apart: the bytes cut are always kept in
//! `<log>.cut-<offset>`, and whole records among them are logged as an error.
//!
//! **Failures.** A failed sync stops the log for good (the kernel may have dropped the
//! pages it could not write, so a later sync that succeeds proves nothing), as does a
//! compaction that fails after renaming its file over the log; a restart replays what the
//! disk holds. `<log>.lock` keeps a second open, in this process or another, off a log in
//! use.
//!
//! **Compaction.** Applied txn entries are deleted, so the live keys stay few while the file
//! grows. When the file is [`COMPACT_FROM`] and four times the live data, the committer
//! writes the live keys as one record to a new file, syncs it and renames it over the log.

use crate::{Job, MAX_GROUP, WriteOp, WriteOutcome, unavailable};
use faaskeeper_storage::{StoreError, decode_counter};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, mpsc};

/// First bytes of a log file.
const MAGIC: &[u8; 8] = b"FKWAL\x00\x01\n";
/// A log file this large is compacted if most of it is dead.
const COMPACT_FROM: u64 = 8 << 20;
/// The file is extended by this much ahead of the records (zeros, as ZooKeeper pads its txn
/// log), so that most appends do not change its size and `fdatasync` has no size to write.
const PREALLOCATE: u64 = 16 << 20;
const SET: u8 = 1;
const DELETE: u8 = 2;

/// Live keys by bucket.
type Tables = HashMap<String, BTreeMap<String, Vec<u8>>>;

/// The log file and its committer thread.
pub(crate) struct Wal {
    pub(crate) path: PathBuf,
    tables: Arc<RwLock<Tables>>,
    pub(crate) jobs: mpsc::Sender<Job>,
    /// Shared with the committer thread, which holds it while it commits a group: a plain
    /// set that finds it free is appended on the caller's thread instead (see [`Wal::set`]).
    committer: Arc<Mutex<Committer>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Unavailable("log tables poisoned by a panic".into())
}

impl Wal {
    /// Open (or create) the log at `path`. A log an earlier version kept as a redb file at
    /// `legacy` is taken over when `path` does not exist yet, then removed.
    pub(crate) fn open(path: &Path, legacy: Option<&Path>) -> Result<Wal, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        // Held for the committer's life: a second process (or a second open in this one) on
        // the same data directory must not cut or append to a log another one is writing.
        // A file of its own, because compaction replaces the log's file.
        let lock = lock_log(path)?;
        let _ = std::fs::remove_file(compact_path(path));
        match legacy {
            Some(old) if old.exists() => {
                // The new file appears complete (by rename) or not at all: if it exists, the
                // takeover finished and only the removal of the old file was left.
                if !path.exists() {
                    let tables = read_legacy(old)?;
                    write_snapshot(path, &tables)?;
                }
                std::fs::remove_file(old).map_err(unavailable)?;
            }
            _ => {}
        }
        if !path.exists() {
            write_snapshot(path, &Tables::new())?;
        }
        let (tables, valid) = replay(path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(unavailable)?;
        // Cut a torn tail (and the old preallocation), so that zeros follow the last whole
        // record, then preallocate again.
        file.set_len(valid).map_err(unavailable)?;
        file.set_len(valid + PREALLOCATE).map_err(unavailable)?;
        file.sync_all().map_err(unavailable)?;
        let tables = Arc::new(RwLock::new(tables));
        let (tx, rx) = mpsc::channel::<Job>();
        let committer = Committer {
            path: path.to_path_buf(),
            file,
            len: valid,
            allocated: valid + PREALLOCATE,
            live: live_bytes(&*tables.read().map_err(poisoned)?),
            tables: tables.clone(),
            broken: None,
            _lock: lock,
        };
        let committer = Arc::new(Mutex::new(committer));
        let shared = committer.clone();
        std::thread::Builder::new()
            .name("faaskeeper-log".into())
            .spawn(move || Committer::run(&shared, rx))
            .map_err(unavailable)?;
        Ok(Wal {
            path: path.to_path_buf(),
            tables,
            jobs: tx,
            committer,
        })
    }

    /// Set keys of the log. Plain sets are not synced (they reach the disk with the next
    /// synced append: the head that points at them), so when no group is being committed
    /// the caller appends them itself: no round trip to the committer thread, which would
    /// cost two thread wake-ups on the writer's path. Otherwise they join the next group.
    pub(crate) async fn set(
        &self,
        bucket: &str,
        items: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let op = WriteOp::Set(items);
        if let Ok(mut committer) = self.committer.try_lock() {
            let job = Job {
                bucket: bucket.to_string(),
                op,
                reply: None,
            };
            let results = committer.commit(std::slice::from_ref(&job))?;
            return crate::only_result(results).map(|_| ());
        }
        crate::submit(&self.jobs, bucket, op).await.map(|_| ())
    }

    pub(crate) fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tables = self.tables.read().map_err(poisoned)?;
        Ok(tables.get(bucket).and_then(|t| t.get(key)).cloned())
    }

    /// Keys of `bucket` after `cursor`, in order, at most `limit`.
    pub(crate) fn list(
        &self,
        bucket: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tables = self.tables.read().map_err(poisoned)?;
        let Some(t) = tables.get(bucket) else {
            return Ok(Vec::new());
        };
        let range = match cursor {
            Some(c) => {
                t.range::<str, _>((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
            }
            None => t.range::<str, _>(..),
        };
        Ok(range.take(limit).map(|(k, _)| k.clone()).collect())
    }
}

/// Take the lock of the log at `path` (`<path>.lock`), held while the returned file is open.
fn lock_log(path: &Path) -> Result<std::fs::File, StoreError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(PathBuf::from(name))
        .map_err(unavailable)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{} is in use (another process, or another open in this one, has it)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(unavailable(e)),
    }
}

fn compact_path(path: &Path) -> PathBuf {
    path.with_extension("compacting")
}

fn live_bytes(tables: &Tables) -> u64 {
    tables
        .values()
        .flat_map(|t| t.iter())
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

fn put_set(out: &mut Vec<u8>, bucket: &str, key: &str, value: &[u8]) {
    out.push(SET);
    put_name(out, bucket, key);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn put_delete(out: &mut Vec<u8>, bucket: &str, key: &str) {
    out.push(DELETE);
    put_name(out, bucket, key);
}

fn put_name(out: &mut Vec<u8>, bucket: &str, key: &str) {
    // Bucket names are the protocol's few short names (checked when the store opens).
    out.push(bucket.len().min(255) as u8);
    out.extend_from_slice(&bucket.as_bytes()[..bucket.len().min(255)]);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

/// A record: length, CRC-32, payload.
fn record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// One operation of a record.
enum Change {
    Set(String, String, Vec<u8>),
    Delete(String, String),
}

/// The operations of one record's payload; `None` if it does not parse.
fn parse(mut p: &[u8]) -> Option<Vec<Change>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if p.len() < n {
            return None;
        }
        let (head, rest) = p.split_at(n);
        *p = rest;
        Some(head)
    }
    fn take_u32(p: &mut &[u8]) -> Option<usize> {
        let b = take(p, 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn take_str(p: &mut &[u8], n: usize) -> Option<String> {
        String::from_utf8(take(p, n)?.to_vec()).ok()
    }
    let mut changes = Vec::new();
    while !p.is_empty() {
        let tag = take(&mut p, 1)?[0];
        let blen = take(&mut p, 1)?[0] as usize;
        let bucket = take_str(&mut p, blen)?;
        let klen = take_u32(&mut p)?;
        let key = take_str(&mut p, klen)?;
        changes.push(match tag {
            SET => {
                let vlen = take_u32(&mut p)?;
                Change::Set(bucket, key, take(&mut p, vlen)?.to_vec())
            }
            DELETE => Change::Delete(bucket, key),
            _ => return None,
        });
    }
    Some(changes)
}

/// Apply `changes`; how many bytes of live keys and values they added (or removed).
fn apply(tables: &mut Tables, changes: Vec<Change>) -> i64 {
    let mut delta = 0i64;
    for c in changes {
        match c {
            Change::Set(bucket, key, value) => {
                let added = (key.len() + value.len()) as i64;
                let klen = key.len() as i64;
                if let Some(old) = tables.entry(bucket).or_default().insert(key, value) {
                    delta -= klen + old.len() as i64;
                }
                delta += added;
            }
            Change::Delete(bucket, key) => {
                if let Some(old) = tables.get_mut(&bucket).and_then(|t| t.remove(&key)) {
                    delta -= (key.len() + old.len()) as i64;
                }
            }
        }
    }
    delta
}

/// The tables a log file holds, and the length of its whole records.
fn replay(path: &Path) -> Result<(Tables, u64), StoreError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(unavailable)?;
    if !bytes.starts_with(MAGIC) {
        return Err(StoreError::Unavailable(format!(
            "{} is not a FaaSKeeper log file",
            path.display()
        )));
    }
    let mut tables = Tables::new();
    let mut at = MAGIC.len();
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        // The CRC matched, so the record is as written: a payload that does not parse is a
        // bug, not a torn write, and must not be skipped silently.
        let Some(changes) = parse(payload) else {
            return Err(StoreError::Unavailable(format!(
                "{}: unreadable record at byte {at}",
                path.display()
            )));
        };
        apply(&mut tables, changes);
        at += 8 + len;
    }
    if let Some(last) = bytes[at..].iter().rposition(|b| *b != 0) {
        let cut = &bytes[at..at + last + 1];
        let kept_in = keep_cut(path, at, cut);
        match whole_record_in(cut) {
            // Records are appended in order, so this is a torn tail only if the whole records
            // after the damaged one were never synced (a crash in the middle of a group).
            // It may also be damage to the file, which this cannot tell apart: say so loudly.
            Some(offset) => tracing::error!(
                path = %path.display(),
                kept = at,
                dropped = cut.len(),
                whole_record_at = at + offset,
                kept_in = %kept_in,
                "log has a bad record followed by a whole one; cut at the bad one (a crash \
                 during an unsynced append, or a damaged file: then writes after it are lost)"
            ),
            None => tracing::warn!(
                path = %path.display(),
                kept = at,
                dropped = cut.len(),
                kept_in = %kept_in,
                "log ends in an incomplete record (a write interrupted by a crash); cut there"
            ),
        }
    }
    Ok((tables, at as u64))
}

/// Copy the bytes a replay cuts off the log to `<path>.cut-<offset>`, so that nothing is
/// thrown away unseen; where they went (or why they could not be kept).
fn keep_cut(path: &Path, offset: usize, cut: &[u8]) -> String {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".cut-{offset}"));
    let side = PathBuf::from(name);
    let written = std::fs::File::create(&side).and_then(|mut f| {
        f.write_all(cut)?;
        f.sync_all()
    });
    match written {
        Ok(()) => side.display().to_string(),
        Err(e) => format!("nowhere ({}: {e})", side.display()),
    }
}

/// The offset in `bytes` of the first whole record (non-empty, CRC matching, parsing), if
/// any. Scans every offset, so it looks at no more than [`SCAN_LIMIT`] bytes.
fn whole_record_in(bytes: &[u8]) -> Option<usize> {
    let end = bytes.len().min(SCAN_LIMIT);
    (1..end).find(|&at| {
        let Some(header) = bytes.get(at..at + 8) else {
            return false;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        len > 0
            && bytes
                .get(at + 8..at + 8 + len)
                .is_some_and(|p| crc32fast::hash(p) == crc && parse(p).is_some())
    })
}

/// How much of a cut tail [`whole_record_in`] scans.
const SCAN_LIMIT: usize = 4 << 20;

/// How writing a log file failed: before its rename (the file at `path` is as it was) or
/// after it (the new file is in place, but its rename may not be durable).
enum Snapshot {
    NotRenamed(StoreError),
    Renamed(StoreError),
}

impl From<Snapshot> for StoreError {
    fn from(s: Snapshot) -> StoreError {
        match s {
            Snapshot::NotRenamed(e) | Snapshot::Renamed(e) => e,
        }
    }
}

/// Write `tables` as a complete log file at `path`: to a side file, synced, then renamed.
/// Returns the new file, open for appending, and its length.
fn write_snapshot(path: &Path, tables: &Tables) -> Result<(std::fs::File, u64), Snapshot> {
    let tmp = compact_path(path);
    let mut payload = Vec::new();
    for (bucket, t) in tables {
        for (k, v) in t {
            put_set(&mut payload, bucket, k, v);
        }
    }
    let mut bytes = MAGIC.to_vec();
    if !payload.is_empty() {
        bytes.extend_from_slice(&record(&payload));
    }
    let before = |e: std::io::Error| Snapshot::NotRenamed(unavailable(e));
    let mut f = std::fs::File::create(&tmp).map_err(before)?;
    f.write_all(&bytes).map_err(before)?;
    f.sync_all().map_err(before)?;
    std::fs::rename(&tmp, path).map_err(before)?;
    sync_dir(path).map_err(Snapshot::Renamed)?;
    Ok((f, bytes.len() as u64))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(unavailable)
}

/// Everything a log of an earlier version held (a redb file of the same buckets).
fn read_legacy(path: &Path) -> Result<Tables, StoreError> {
    use redb::{ReadableDatabase, ReadableTable, TableHandle};
    let db = redb::Database::open(path).map_err(unavailable)?;
    let txn = db.begin_read().map_err(unavailable)?;
    let mut tables = Tables::new();
    for handle in txn.list_tables().map_err(unavailable)? {
        let name = handle.name().to_string();
        let t = txn.open_table(crate::table(&name)).map_err(unavailable)?;
        let entries = tables.entry(name).or_default();
        for item in t.iter().map_err(unavailable)? {
            let (k, v) = item.map_err(unavailable)?;
            entries.insert(k.value().to_string(), v.value().to_vec());
        }
    }
    tables.retain(|name, t| name != crate::META_TABLE && !t.is_empty());
    Ok(tables)
}

struct Committer {
    path: PathBuf,
    file: std::fs::File,
    /// Length of the whole records in the file.
    len: u64,
    /// The file's length: whole records, then zeros.
    allocated: u64,
    /// Bytes of live keys and values.
    live: u64,
    tables: Arc<RwLock<Tables>>,
    /// Set when the file cannot be trusted to hold what was appended (a failed sync, a
    /// failed append that could not be cleared, a compaction that failed after its rename):
    /// nothing more may be appended; a restart replays what the disk holds.
    broken: Option<String>,
    /// The log's lock ([`lock_log`]), held as long as this committer can append.
    _lock: std::fs::File,
}

impl Committer {
    fn run(shared: &Mutex<Committer>, rx: mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(j) => group.push(j),
                    Err(_) => break,
                }
            }
            let Ok(mut committer) = shared.lock() else {
                for job in group {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(poisoned(())));
                    }
                }
                continue;
            };
            let results = match committer.commit(&group) {
                Ok(results) => results,
                Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
            };
            for (job, r) in group.into_iter().zip(results) {
                if let Some(reply) = job.reply {
                    let _ = reply.send(r);
                }
            }
            if committer.len > COMPACT_FROM
                && committer.len > 4 * committer.live
                && let Err(e) = committer.compact()
            {
                tracing::warn!(error = %e, "log compaction failed; the log goes on uncompacted");
            }
        }
    }

    /// Decide the group against the live keys, append it, sync it unless it holds only
    /// plain sets (they reach the disk with the next synced append, which is how the
    /// writer's txn entries are synced with the head that points at them), then publish it.
    fn commit(
        &mut self,
        group: &[Job],
    ) -> Result<Vec<Result<WriteOutcome, StoreError>>, StoreError> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Unavailable(why.clone()));
        }
        let mut payload = Vec::new();
        let mut results = Vec::with_capacity(group.len());
        // What the group changed so far: later jobs decide against it (a CAS after a set of
        // the same key sees the set, as if the jobs had run one by one), and it is what is
        // published once the record is written.
        let mut changed: HashMap<(&str, &str), Option<Vec<u8>>> = HashMap::new();
        {
            let tables = self.tables.read().map_err(poisoned)?;
            for job in group {
                let b = job.bucket.as_str();
                let current =
                    |changed: &HashMap<(&str, &str), Option<Vec<u8>>>, k: &str| match changed
                        .get(&(b, k))
                    {
                        Some(v) => v.clone(),
                        None => tables.get(b).and_then(|t| t.get(k)).cloned(),
                    };
                let r = match &job.op {
                    WriteOp::Set(items) => {
                        for (k, v) in items {
                            put_set(&mut payload, b, k, v);
                            changed.insert((b, k), Some(v.clone()));
                        }
                        Ok(WriteOutcome::Done)
                    }
                    WriteOp::Delete(keys) | WriteOp::DeferLogDelete(keys) => {
                        for k in keys {
                            put_delete(&mut payload, b, k);
                            changed.insert((b, k), None);
                        }
                        Ok(WriteOutcome::Done)
                    }
                    WriteOp::Increment(k, delta) => {
                        match current(&changed, k).map_or(Ok(0), |v| decode_counter(&v)) {
                            Ok(cur) => {
                                let new = cur.wrapping_add(*delta);
                                put_set(&mut payload, b, k, &new.to_le_bytes());
                                changed.insert((b, k), Some(new.to_le_bytes().to_vec()));
                                Ok(WriteOutcome::Counter(new))
                            }
                            Err(e) => Err(e),
                        }
                    }
                    WriteOp::Cas(k, expected, new) => {
                        if current(&changed, k).as_deref() == expected.as_deref() {
                            put_set(&mut payload, b, k, new);
                            changed.insert((b, k), Some(new.clone()));
                            Ok(WriteOutcome::Done)
                        } else {
                            Err(StoreError::CasConflict)
                        }
                    }
                };
                results.push(r);
            }
        }
        if payload.is_empty() {
            return Ok(results);
        }
        let durable = group.iter().any(|j| !matches!(j.op, WriteOp::Set(_)));
        let bytes = record(&payload);
        let end = self.len + bytes.len() as u64;
        let appended = (|| {
            if end > self.allocated {
                let to = end + PREALLOCATE;
                self.file.set_len(to)?;
                self.allocated = to;
            }
            self.file.write_all_at(&bytes, self.len)?;
            Ok::<_, std::io::Error>(())
        })();
        if appended.is_ok()
            && durable
            && let Err(e) = self.file.sync_data()
        {
            // After a failed sync the kernel may have dropped dirty pages of earlier appends
            // (plain sets waiting for this sync) and marked them clean, so a later sync that
            // succeeds proves nothing: the log stops here.
            self.broken = Some(format!("log sync failed: {e}"));
            return Err(unavailable(e));
        }
        if let Err(e) = appended {
            // Nothing of the group is published or acknowledged; the next append overwrites
            // what part of the record was written, and zeros must follow it.
            let zeros = vec![0u8; bytes.len()];
            if let Err(clear) = self.file.write_all_at(&zeros, self.len) {
                self.broken = Some(format!(
                    "log append failed ({e}) and could not be cleared ({clear})"
                ));
            }
            return Err(unavailable(e));
        }
        self.len += bytes.len() as u64;
        let changes = changed
            .into_iter()
            .map(|((b, k), v)| match v {
                Some(v) => Change::Set(b.to_string(), k.to_string(), v),
                None => Change::Delete(b.to_string(), k.to_string()),
            })
            .collect();
        let mut tables = self.tables.write().map_err(poisoned)?;
        self.live = self.live.saturating_add_signed(apply(&mut tables, changes));
        Ok(results)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        let tables = self.tables.read().map_err(poisoned)?.clone();
        let (file, len) = match write_snapshot(&self.path, &tables) {
            Ok(written) => written,
            Err(Snapshot::NotRenamed(e)) => return Err(e),
            Err(Snapshot::Renamed(e)) => {
                // The old file is gone from the directory: appending to it would acknowledge
                // writes that no restart can find.
                self.broken = Some(format!("log compaction failed after its rename: {e}"));
                return Err(e);
            }
        };
        self.file = file;
        self.len = len;
        self.allocated = len;
        // Without the preallocation the next append extends the file itself.
        if self.file.set_len(len + PREALLOCATE).is_ok() {
            self.allocated = len + PREALLOCATE;
        }
        tracing::debug!(path = %self.path.display(), len = self.len, "log compacted");
        Ok(())
    }
}
