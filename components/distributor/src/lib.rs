//! # faaskeeper-distributor
//!
//! The single logical applier. It walks the log from `log/head` back to the last applied zxid,
//! applies the new txns in zxid order with `faaskeeper_core::apply` (which alone decides
//! ZooKeeper outcomes), persists node records (system bucket) and node objects (user bucket),
//! and hands results and watch events to the watch stage.
//!
//! *One at a time*: a lease in the system bucket (`dist/lease`, created at init, changed only
//! by compare-and-swap) admits one distributor; the platform may start as many as it likes.
//! A platform that never runs two distributors at once may name a stable owner in the
//! wake-up body (`{"owner": "..."}`; the bundled host does): that owner keeps the lease
//! between runs and renews it only when half of it has passed, which saves two
//! compare-and-swaps per run. Without an owner a run takes the lease when it starts, keeps it
//! from round to round while the log has more, and releases it when the log has run dry or
//! the run stops; then it reads the log's head again (txns whose run found the lease taken
//! were left to it).
//!
//! *Crash safety* (Guarantee 1): each batch is decided in memory, then written as a redo record
//! before any of its effects. Effects are plain overwrites and deletes, so a distributor that
//! dies anywhere is finished by the next one, which replays the redo record instead of
//! deciding the txns again (deciding twice could differ: a create would see its own node and
//! answer `NodeExists`).
//!
//! *One record of progress* (`dist/applied`): the last applied zxid and, while a batch is in
//! progress, its redo record. Starting a batch is one write (applied, redo), ending it another
//! (new applied, no redo); a run reads one key to learn both. On DynamoDB each of those
//! writes and reads costs request units, which is why they are not two keys. The redo record
//! names each changed node once: the user-bucket object is derived from the node record when
//! the batch is carried out, not stored a second time. Where writes are billed by size (on
//! DynamoDB), a batch that spends log records is ended by deleting them instead of by the
//! second write, one write unit or more per batch saved for a read of one key by the next run
//! (`Pending::ends_by_delete`).
//!
//! *Last results in the progress record*: a session's record holds its last request and
//! result, re-sent when that request comes again (Guarantee 2). A batch that changes nothing
//! else of a session keeps those in the progress record it writes anyway
//! (`state::LastResults`, at most `state::LAST_RESULTS_MAX` sessions, each until it goes
//! stale), not in the session's
//! record: on DynamoDB a write unit saved per write. Reads of a session put them over its
//! record; anything else of a session changing writes its record whole and takes it out.
//!
//! *Records known from run to run* ([`known`]): where node records live in the user bucket,
//! what a batch read or wrote is not read again by the batches after it, nor by later runs
//! of a platform that sends back the `memo` of the last answer, which a run takes only if the
//! progress record shows that no other distributor started a batch since.
//!
//! *Deliveries in flight*: a batch's deliveries are sent to the watch stage without waiting
//! for the answer, and the next batch is decided meanwhile (reads and computation only).
//! Nothing of the next batch is written before the answer came; its first write, the progress
//! record naming the batch before applied, then also ends that one (unless that one ends by
//! its log records' delete), so a batch followed by another costs one progress write, not
//! two. Under load the watch stage took about a third of the distributor's time, which this
//! overlaps with deciding.

mod known;
mod state;

use faaskeeper_core::SessionId;
use faaskeeper_core::Zxid;
use faaskeeper_core::apply::{NodeRecord, Reads, SessionRecord, WatchRecord, apply, initial_nodes};
use faaskeeper_core::keys;
use faaskeeper_core::session::{LiveSession, LiveSessions};
use faaskeeper_core::ttl::TtlIndex;
use faaskeeper_core::wire::{Delivery, HandOver, LogEntry, LogHead, b64, decode_log_record};
use faaskeeper_core::wire::{Op, OpResult, Txn};
use faaskeeper_guest::kv::{Bucket, KvError};
use faaskeeper_guest::pack::{pack, unpack};
use faaskeeper_guest::{Reply, Stage};
use known::{Known, Memo};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use state::{KvState, LastResults};

/// Where the watch stage is reached.
const WATCH_URL: &str = "http://watch.spin.internal/";
/// A lease not renewed for this long is taken over.
const LEASE_MS: i64 = 10_000;
/// Most txns decided and persisted as one batch.
const MAX_BATCH: usize = 512;
/// Most batches one invocation applies before handing over (the next wake-up continues).
const MAX_ROUNDS: usize = 64;
/// An invocation starts no batch after it has run this long, so that it ends well within a
/// platform's limit on one invocation (the bundled host's is 30 s) however fast writes come
/// in. Its answer then says `"more": true`: the platform may wake it again at once.
const RUN_BUDGET_MS: i64 = 10_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Lease {
    owner: String,
    expires_ms: i64,
    fence: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Put {
    key: String,
    #[serde(with = "b64")]
    value: Vec<u8>,
}

/// The redo record of one batch. The records are kept typed, not as the bytes they are
/// stored as: JSON inside base64 inside JSON is a third larger, and on DynamoDB the redo
/// record is written twice per batch (as it starts, and by the write that ends it).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    to_zxid: Zxid,
    /// Changed nodes (`None`: deleted); each is written to both buckets (the system record
    /// and the user object derived from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    nodes: Vec<(String, Option<NodeRecord>)>,
    /// Changed session records, each as the JSON it is stored as: encoded once, for this
    /// record and for the session's key alike (the same bytes a `SessionRecord` has in the
    /// redo record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    sessions: Vec<(SessionId, Box<RawValue>)>,
    /// Changed watch records (an empty one: deleted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    watches: Vec<(String, WatchRecord)>,
    /// The new index of TTL nodes, if the batch changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_index: Option<TtlIndex>,
    /// The new index of open sessions, if the batch changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live: Option<LiveSessions>,
    /// Raw writes: what redo records written before the typed fields existed held.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    system_puts: Vec<Put>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    system_deletes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_puts: Vec<Put>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    user_deletes: Vec<String>,
    /// Each session's `Delivery`, as the JSON it is sent to the watch stage in: encoded once,
    /// for this record and for the watch stage's batch.
    deliveries: Vec<Box<RawValue>>,
    /// Log records the batch consumed (it applied their last txns), deleted once it is
    /// applied.
    txn_ids: Vec<String>,
    /// Node data left out of `nodes` because a log record of the batch holds the same bytes
    /// (the records stay until the batch is applied): written once more, not twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    data_refs: Vec<DataRef>,
    /// The batch is ended by deleting its spent log records, not by a write of the progress
    /// record: the last of `txn_ids` is deleted first, after every effect and the hand-over
    /// of the deliveries, so a later run that finds it gone knows the batch was carried out
    /// ([`carried_out`]). Chosen where writes are billed (`FAASKEEPER_WRITE_UNIT`): there the
    /// ending write costs a write unit or more per batch (billed by the larger old item, the
    /// redo record), and the later run's check one read unit. Elsewhere (the bundled host's
    /// own store defers deleting log records to its next checkpoint) the write ends it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ends_by_delete: bool,
}

/// Where the data of `nodes[node]` is: payload `payload` of the log record `txn` (counted
/// over its txns, see `LogEntry::payloads`), `len` bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DataRef {
    node: usize,
    txn: String,
    payload: usize,
    len: usize,
}

/// Node data at least this long goes into the redo record by reference.
const DATA_REF_MIN: usize = 256;

impl Pending {
    /// The redo record to store when node data that a log record of the batch (`records`)
    /// holds can be left out and named by reference; `None` when nothing can (then `self` is
    /// stored as it is, without a copy).
    fn by_reference(&self, records: &[&(String, LogEntry)]) -> Option<Pending> {
        let refs: Vec<DataRef> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, (_, node))| {
                let data = &node.as_ref()?.data;
                if data.len() < DATA_REF_MIN {
                    return None;
                }
                records.iter().rev().find_map(|(id, entry)| {
                    let payload = entry
                        .payloads()
                        .iter()
                        .position(|p| *p == data.as_slice())?;
                    Some(DataRef {
                        node: i,
                        txn: id.clone(),
                        payload,
                        len: data.len(),
                    })
                })
            })
            .collect();
        if refs.is_empty() {
            return None;
        }
        let mut stored = self.clone();
        for r in &refs {
            if let Some((_, Some(node))) = stored.nodes.get_mut(r.node) {
                node.data = Vec::new();
            }
        }
        stored.data_refs = refs;
        Some(stored)
    }

    /// Put the data named by reference back, from the log records (a redo after a crash),
    /// and check the parts kept as JSON: a damaged redo record is refused, not carried out.
    fn resolve(mut self, system: &Bucket) -> Result<Pending, KvError> {
        for (id, raw) in &self.sessions {
            serde_json::from_str::<SessionRecord>(raw.get())
                .map_err(|e| corrupt(format!("redo record: session {id}: {e}")))?;
        }
        for raw in &self.deliveries {
            serde_json::from_str::<Delivery>(raw.get())
                .map_err(|e| corrupt(format!("redo record: delivery: {e}")))?;
        }
        let mut entries: Vec<(String, LogEntry)> = Vec::new();
        for r in std::mem::take(&mut self.data_refs) {
            if !entries.iter().any(|(id, _)| *id == r.txn) {
                let entry = log_record(system, &r.txn)?
                    .ok_or_else(|| corrupt(format!("redo names log record {} missing", r.txn)))?;
                entries.push((r.txn.clone(), entry));
            }
            let data = entries
                .iter()
                .find(|(id, _)| *id == r.txn)
                .and_then(|(_, e)| e.payloads().get(r.payload).map(|d| d.to_vec()))
                .filter(|d| d.len() == r.len)
                .ok_or_else(|| corrupt(format!("redo names payload {} of {}", r.payload, r.txn)))?;
            match self.nodes.get_mut(r.node) {
                Some((_, Some(node))) => node.data = data,
                _ => return Err(corrupt(format!("redo names node {} of none", r.node))),
            }
        }
        Ok(self)
    }
}

/// What `dist/applied` holds: the last applied zxid and the batch in progress, if any.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    applied: Zxid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
    /// Node records live in the user bucket only (its objects hold the whole record): no
    /// copy in the system bucket. Fixed for the store's life by `init` (see
    /// [`NODES_IN_USER_ENV`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    nodes_in_user: bool,
    /// Sessions' last results newer than their records hold (`state::LastResults`), as they
    /// stand once `applied` (and `pending`, if any) is carried out.
    #[serde(default, skip_serializing_if = "LastResults::is_empty")]
    last_results: LastResults,
    /// The number of the last batch started (for the age of `last_results`).
    #[serde(default, skip_serializing_if = "is_zero")]
    batch: u64,
    /// The token of the chain of runs that started that batch, where nodes live in the user
    /// bucket (see [`known`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A [`Progress`] as it is written, without copying the batch or the last results.
#[derive(Serialize)]
struct Stored<'a> {
    applied: Zxid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<&'a Pending>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    nodes_in_user: bool,
    #[serde(skip_serializing_if = "LastResults::is_empty")]
    last_results: &'a LastResults,
    #[serde(skip_serializing_if = "is_zero")]
    batch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
}

/// Set (to `1`) by a platform whose user bucket bills every write (the bundled host over S3
/// or DynamoDB user storage): `init` then makes a store that keeps each node once, as its
/// user-bucket object, instead of also as a system record billed for every change again.
/// On S3 each node read is then a GET ($0.40 per million) instead of a read unit ($0.125),
/// and each change saves a write unit or more ($0.625 per unit): a set saves about $0.35 per
/// million, a create or delete (two nodes each) twice that. Read only by `init`: a store
/// keeps the layout it was made with.
const NODES_IN_USER_ENV: &str = "FAASKEEPER_NODES_IN_USER";

/// Store the progress record: deflated where that saves write units
/// (`faaskeeper_guest::pack`). A record with a redo record in it is mostly JSON names
/// repeated per txn, and DynamoDB bills it by the KiB, twice per batch; deflated, the redo
/// record of a single small write fits in one unit.
fn put_progress<T: Serialize>(system: &Bucket, record: &T) -> Result<(), KvError> {
    system.set(keys::DIST_APPLIED, &pack(encode(record)?))
}

/// A log record (deflated or not, as the writer stored it).
fn log_record(system: &Bucket, id: &str) -> Result<Option<LogEntry>, KvError> {
    let Some(bytes) = system.get(&keys::txn(id))? else {
        return Ok(None);
    };
    let bytes = unpack(bytes).map_err(|e| corrupt(format!("log record {id} {e}")))?;
    decode_log_record(&bytes)
        .map(Some)
        .map_err(|e| corrupt(format!("log record {id}: {e}")))
}

/// The progress record, from either layout; `true` if it was the old one.
fn progress(system: &Bucket) -> Result<(Progress, bool), KvError> {
    stored_progress(system)?.ok_or_else(|| corrupt("applied marker missing; run init"))
}

/// [`progress`], `None` before `init` made it.
fn stored_progress(system: &Bucket) -> Result<Option<(Progress, bool)>, KvError> {
    let stored = match system.get(keys::DIST_APPLIED)? {
        None => None,
        Some(bytes) => {
            let json = unpack(bytes).map_err(|e| corrupt(format!("progress record {e}")))?;
            // A bare zxid (with the redo record under `dist/pending`) was the layout before
            // `Progress`; stores written by that version still read. (Not an untagged enum:
            // serde's buffering of those cannot read maps with number keys, as in the index
            // of open sessions.)
            Some(match serde_json::from_slice::<Zxid>(&json) {
                Ok(applied) => Err(applied),
                Err(_) => Ok(serde_json::from_slice::<Progress>(&json)
                    .map_err(|e| corrupt(format!("progress record: {e}")))?),
            })
        }
    };
    match stored {
        None => Ok(None),
        Some(Ok(p)) => Ok(Some((p, false))),
        Some(Err(applied)) => Ok(Some((
            Progress {
                applied,
                pending: system.get_json::<Pending>(keys::DIST_PENDING)?,
                nodes_in_user: false,
                last_results: LastResults::new(),
                batch: 0,
                by: None,
            },
            true,
        ))),
    }
}

struct Distributor;

/// The body of a wake-up; anything else (`{}`, empty) is a wake-up without an owner.
#[derive(Deserialize)]
struct Wake {
    owner: Option<String>,
    /// What the last run answered as its `memo`, sent back ([`known`]).
    memo: Option<Box<RawValue>>,
    /// A shorter budget than [`RUN_BUDGET_MS`], for a platform whose limit on one invocation
    /// is shorter (ms; 0: one batch).
    budget_ms: Option<i64>,
}

impl Stage for Distributor {
    fn handle(path: &str, body: Vec<u8>) -> Reply {
        let result = if path.starts_with("/init") {
            init().map(|()| serde_json::json!({ "initialized": true }))
        } else {
            // `/recover` is sent by a platform that knows every earlier distributor is dead
            // (the bundled host owns its store file exclusively): a lease left by a killed
            // process is taken over at once instead of after it expires.
            let takeover = path.starts_with("/recover");
            let wake = serde_json::from_slice::<Wake>(&body).ok();
            let budget = wake
                .as_ref()
                .and_then(|w| w.budget_ms)
                .map_or(RUN_BUDGET_MS, |b| b.clamp(0, RUN_BUDGET_MS));
            let (owner, memo) = wake.map_or((None, None), |w| (w.owner, w.memo));
            let owner = owner.filter(|o| !o.is_empty());
            // A memo that does not read is only a saving lost.
            let memo = memo.and_then(|m| serde_json::from_str::<Memo>(m.get()).ok());
            run(takeover, owner, memo, budget).map(|ran| {
                let mut answer = serde_json::json!({ "applied": ran.applied });
                if let Some(memo) = ran.memo {
                    answer["memo"] = serde_json::json!(memo);
                }
                if ran.more {
                    answer["more"] = true.into();
                }
                answer
            })
        };
        match result {
            Ok(v) => Reply::json(&v),
            Err(e) => {
                faaskeeper_guest::log(&format!("distributor: {e}"));
                Reply::error(503, &e.to_string())
            }
        }
    }
}

faaskeeper_guest::export_stage!(Distributor);

fn corrupt(msg: impl Into<String>) -> KvError {
    KvError::Corrupt(msg.into())
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KvError> {
    encoded(serde_json::to_vec(v))
}

/// `v` as a JSON value kept encoded.
fn raw<T: Serialize>(v: &T) -> Result<Box<RawValue>, KvError> {
    serde_json::value::to_raw_value(v).map_err(|e| corrupt(e.to_string()))
}

/// The body of a call to the watch stage: a `wire::DeliveryBatch` of deliveries that are
/// encoded already.
#[derive(Serialize)]
struct DeliveryBatch<'a> {
    deliveries: &'a [Box<RawValue>],
}

/// A record's bytes, or why it could not be encoded.
fn encoded<E: std::fmt::Display>(bytes: Result<Vec<u8>, E>) -> Result<Vec<u8>, KvError> {
    bytes.map_err(|e| corrupt(e.to_string()))
}

/// Create the keys the protocol later changes only by CAS, and ZooKeeper's initial tree.
/// Idempotent; run once per deployment before traffic (create-if-absent is not atomic on
/// every backend, so it must not race with itself).
fn init() -> Result<(), KvError> {
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    let user = Bucket::open(keys::USER_BUCKET)?;
    let made = stored_progress(&system)?;
    let nodes_in_user = match &made {
        Some((p, _)) => p.nodes_in_user,
        None => std::env::var(NODES_IN_USER_ENV).is_ok_and(|v| v == "1"),
    };
    let root = if nodes_in_user {
        user.get(&keys::user_node("/"))?
    } else {
        system.get(&keys::node("/"))?
    };
    if root.is_none() {
        for (path, node) in initial_nodes() {
            user.set(&keys::user_node(&path), &encoded(node.view_json())?)?;
            if !nodes_in_user {
                system.set(&keys::node(&path), &encoded(node.record_bytes())?)?;
            }
        }
    }
    if made.is_none() {
        let fresh = Progress {
            nodes_in_user,
            ..Progress::default()
        };
        system.set_json(keys::DIST_APPLIED, &fresh)?;
    }
    if system.get(keys::DIST_LEASE)?.is_none() {
        system.set_json(keys::DIST_LEASE, &Lease::default())?;
    }
    if system.get(keys::LOG_HEAD)?.is_none() {
        // A store that has applied txns always has a head: without one the log was lost or
        // cut, and a fresh head would number new writes below those already applied.
        if let Some((p, _)) = &made
            && p.applied > 0
        {
            return Err(corrupt(format!(
                "log head missing while txns up to zxid {} are applied: the log was lost or cut",
                p.applied
            )));
        }
        system.set_json(keys::LOG_HEAD, &LogHead::default())?;
    }
    Ok(())
}

/// What a run did.
struct Ran {
    /// The last applied zxid, or `None` if another distributor holds the lease (it will see
    /// our txns: it re-reads the head after releasing).
    applied: Option<Zxid>,
    /// The memo for the next run (see [`known`]), where nodes live in the user bucket.
    memo: Option<Memo>,
    /// The run stopped with txns left in the log ([`MAX_ROUNDS`], [`RUN_BUDGET_MS`]).
    more: bool,
}

/// A run stops on `e`: one without an owner that holds the lease (`keep` false) releases
/// it, so that runs that found it taken meanwhile are not shut out until it expires. A
/// batch in flight is left to its redo record, as after a crash.
fn give_up(system: &Bucket, me: &str, keep: bool, e: KvError) -> KvError {
    if !keep {
        // The run's own error is the one to report.
        let _ = release(system, me);
    }
    e
}

/// End the batch in flight and release the lease, also when the batch cannot be ended (it
/// is then left to its redo record).
fn settle_and_release(
    system: &Bucket,
    me: &str,
    cursor: &mut Option<Cursor>,
) -> Result<(), KvError> {
    let settled = settle(system, me, cursor);
    release(system, me)?;
    settled
}

/// The log's head, if it is beyond `applied`.
fn log_head_beyond(system: &Bucket, applied: Zxid) -> Result<Option<LogHead>, KvError> {
    let head = log_head(system)?;
    Ok((head.zxid > applied).then_some(head))
}

fn log_head(system: &Bucket) -> Result<LogHead, KvError> {
    system
        .get_json(keys::LOG_HEAD)?
        .ok_or_else(|| corrupt("log head missing; run init"))
}

/// Apply everything in the log, or as much as one invocation may: no batch after the first
/// is started once the run has taken `budget` ms.
fn run(
    mut takeover: bool,
    owner: Option<String>,
    mut memo: Option<Memo>,
    budget: i64,
) -> Result<Ran, KvError> {
    let started = faaskeeper_guest::now_ms();
    let sticky = owner.is_some();
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    let user = Bucket::open(keys::USER_BUCKET)?;
    let me = owner.unwrap_or_else(faaskeeper_guest::random_id);
    let mut applied = None;
    let mut cursor: Option<Cursor> = None;
    let mut more = false;
    // Until when the lease is ours, as last seen, while this run holds it.
    let mut held: Option<i64> = None;
    // The log's head as read at the end of the round before (the next round applies up to
    // it without reading it again).
    let mut head: Option<LogHead> = None;
    for round in 0..MAX_ROUNDS {
        if round > 0 && faaskeeper_guest::now_ms() - started >= budget {
            break;
        }
        let lease_until = match held {
            // Ours for more than half its length: no one can have taken it (as in
            // `acquire`), so there is nothing to read or write.
            Some(until) if until > faaskeeper_guest::now_ms() + LEASE_MS / 2 => until,
            _ => match acquire(&system, &me, std::mem::take(&mut takeover)) {
                Err(e) => return Err(give_up(&system, &me, sticky || held.is_none(), e)),
                // Lost to a distributor that took over: a batch still in flight is left to
                // it (its redo record is stored).
                Ok(Acquired::No) => {
                    return Ok(Ran {
                        applied,
                        memo: None,
                        more: false,
                    });
                }
                Ok(Acquired::Yes { kept, until }) => {
                    if !kept {
                        // Another distributor may have run since this run last held the
                        // lease (a run without an owner releases it when the log ran dry):
                        // what this run knew of the progress record is stale, and a batch
                        // it had in flight may have been redone. Start again from the
                        // progress record (which shows whether what the run knew of the
                        // nodes still holds). Unless it had a batch in flight: the other
                        // may have finished that one and moved its sessions to their
                        // fallback (`fall_back`), which the progress record does not show.
                        if let Some(c) = cursor.take() {
                            memo = c.in_flight.is_none().then(|| c.into_memo()).flatten();
                        }
                    }
                    until
                }
            },
        };
        held = Some(lease_until);
        let deadline = started + budget;
        let outcome = apply_all(
            &system,
            &user,
            (&me, lease_until, deadline),
            (&mut cursor, head.take()),
            &mut memo,
        );
        held = cursor.as_ref().map(|c| c.lease_until).or(held);
        let now = outcome.map_err(|e| give_up(&system, &me, sticky, e))?;
        applied = Some(now);
        head = log_head_beyond(&system, now).map_err(|e| give_up(&system, &me, sticky, e))?;
        more = head.is_some();
        if more {
            continue;
        }
        if !sticky {
            // A run without an owner keeps the lease only while the log has more. It
            // releases it and then reads the head again: a run that found the lease taken
            // gave its txns up to this one (see `Ran::applied`).
            settle_and_release(&system, &me, &mut cursor)?;
            held = None;
            head = log_head_beyond(&system, now)?;
            more = head.is_some();
            if more {
                continue;
            }
        }
        break;
    }
    if !sticky && held.is_some() {
        // Stopped by the budget or the rounds' limit with the lease held: nothing may be
        // left in flight without it.
        settle_and_release(&system, &me, &mut cursor)?;
    }
    settle(&system, &me, &mut cursor)?;
    Ok(Ran {
        applied,
        memo: cursor.and_then(Cursor::into_memo).or(memo),
        more,
    })
}

/// Where a run stands between its batches.
struct Cursor {
    /// The last zxid whose batch has its effects written.
    applied: Zxid,
    nodes_in_user: bool,
    /// The last results the progress record holds (as of `applied`).
    last_results: LastResults,
    /// The number of the last batch started.
    batch: u64,
    /// The nodes known as the user bucket holds them, where node records live there.
    known: Option<Known>,
    /// The last batch, while its deliveries are on their way to the watch stage.
    in_flight: Option<InFlight>,
    /// Until when the lease was last seen to be ours (ms).
    lease_until: i64,
}

/// A batch whose effects are written and whose deliveries were sent to the watch stage
/// without waiting for the answer: the next batch is decided meanwhile (reads and
/// computation only). It is ended by the next batch's first write, whose progress record
/// names it applied, or by [`settle`] when there is none.
struct InFlight {
    pending: Pending,
    sent: Option<faaskeeper_guest::Sent>,
}

/// Wait for the batch in flight to be handed over, then end it.
fn settle(system: &Bucket, me: &str, cursor: &mut Option<Cursor>) -> Result<(), KvError> {
    let Some(c) = cursor.as_mut() else {
        return Ok(());
    };
    if let Some((p, _)) = c.handed_over(system, me)? {
        end(system, &p, c.nodes_in_user, c.tail())?;
    }
    Ok(())
}

impl Cursor {
    /// What the progress record says besides the batch: the last results as of `applied`,
    /// the number of the last batch and who started it.
    fn tail(&self) -> Tail<'_> {
        (
            &self.last_results,
            self.batch,
            self.known.as_ref().map(|k| k.token.as_str()),
        )
    }

    /// The memo of what the run knows of the nodes, as of the batches it carried out.
    fn into_memo(self) -> Option<Memo> {
        let (batch, applied) = (self.batch, self.applied);
        self.known.map(|k| k.into_memo(batch, applied))
    }

    /// Wait for the batch in flight to be handed over and check the lease; ending it is then
    /// the caller's. `true` with it: sessions were moved to their fallback address, so a
    /// batch decided meanwhile must be decided again.
    fn handed_over(
        &mut self,
        system: &Bucket,
        me: &str,
    ) -> Result<Option<(Pending, bool)>, KvError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(None);
        };
        let moved = handed_over(f.sent)?;
        // The wait may have been long: the lease is checked before the writes that follow.
        self.check_lease(system, me)?;
        fall_back(system, &moved)?;
        if let Some(known) = self.known.as_mut() {
            for id in &moved {
                known.forget_session(*id);
            }
        }
        let moved = !moved.is_empty();
        Ok(Some((f.pending, moved)))
    }

    /// Before a write: check the lease again unless it was seen to be ours for at least a
    /// quarter of its length more (a wait for the watch stage, which retries an unreachable
    /// session, or a long batch may have used it up).
    fn check_lease(&mut self, system: &Bucket, me: &str) -> Result<(), KvError> {
        if faaskeeper_guest::now_ms() + LEASE_MS / 4 > self.lease_until {
            self.lease_until = still_holding(system, me)?;
        }
        Ok(())
    }
}

/// What [`acquire`] got.
enum Acquired {
    /// Another distributor holds the lease.
    No,
    /// The lease is ours until `until` (ms); `kept`: it was ours already (no one else can
    /// have held it since we last wrote it, as taking it over names the new owner).
    Yes { kept: bool, until: i64 },
}

fn acquire(system: &Bucket, me: &str, takeover: bool) -> Result<Acquired, KvError> {
    let (cas, lease): (_, Lease) = system.cas(keys::DIST_LEASE)?;
    let now = faaskeeper_guest::now_ms();
    let kept = lease.owner == me;
    if kept && lease.expires_ms > now + LEASE_MS / 2 {
        // Still ours for long enough: nothing to write.
        return Ok(Acquired::Yes {
            kept,
            until: lease.expires_ms,
        });
    }
    if !takeover && !lease.owner.is_empty() && !kept && lease.expires_ms > now {
        return Ok(Acquired::No);
    }
    let next = Lease {
        owner: me.to_string(),
        expires_ms: now + LEASE_MS,
        fence: lease.fence + 1,
    };
    let until = next.expires_ms;
    match cas.swap(&next) {
        Ok(()) => Ok(Acquired::Yes { kept, until }),
        Err(KvError::CasConflict) => Ok(Acquired::No),
        Err(e) => Err(e),
    }
}

fn release(system: &Bucket, me: &str) -> Result<(), KvError> {
    let (cas, lease): (_, Lease) = system.cas(keys::DIST_LEASE)?;
    if lease.owner != me {
        return Ok(());
    }
    let free = Lease {
        owner: String::new(),
        expires_ms: 0,
        fence: lease.fence,
    };
    match cas.swap(&free) {
        Ok(()) | Err(KvError::CasConflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuse to write effects unless we still hold the lease. (A holder paused past its lease
/// could still interleave; DESIGN.md's fault-injection work tightens this with fenced writes.)
/// Read only when the lease seen last has less than a quarter of its length left
/// ([`Cursor::check_lease`]): before that no other distributor can take it.
fn still_holding(system: &Bucket, me: &str) -> Result<i64, KvError> {
    let lease: Lease = system
        .get_json(keys::DIST_LEASE)?
        .ok_or_else(|| corrupt("lease missing"))?;
    if lease.owner == me && lease.expires_ms > faaskeeper_guest::now_ms() {
        Ok(lease.expires_ms)
    } else {
        Err(KvError::Store("distributor lease lost".into()))
    }
}

/// Apply what the log holds beyond the cursor, up to its head (`head`, if just read), as
/// `me`, whose lease runs until `lease_until`; no batch after the first is started past
/// `deadline` (ms).
fn apply_all(
    system: &Bucket,
    user: &Bucket,
    (me, lease_until, deadline): (&str, i64, i64),
    (cursor, head): (&mut Option<Cursor>, Option<LogHead>),
    memo: &mut Option<Memo>,
) -> Result<Zxid, KvError> {
    let c = match cursor {
        Some(c) => c,
        None => cursor.insert(start_run(system, user, me, memo.take())?),
    };
    c.lease_until = lease_until;
    let head = match head {
        Some(head) => head,
        None => log_head(system)?,
    };
    if head.zxid <= c.applied {
        return Ok(c.applied);
    }
    // Walk back along the chain to the record holding the first unapplied txn.
    let mut chain: Vec<(String, LogEntry)> = Vec::new();
    let mut id = head.id.clone();
    let mut zxid = head.zxid;
    while zxid > c.applied {
        let entry = log_record(system, &id)?
            .ok_or_else(|| corrupt(format!("log record {id} (zxid {zxid}) missing")))?;
        if entry.last_zxid() != zxid {
            return Err(corrupt(format!(
                "log record {id} ends at zxid {}, expected {zxid}",
                entry.last_zxid()
            )));
        }
        let prev = entry.prev.clone();
        zxid = entry.first_zxid().saturating_sub(1);
        chain.push((id, entry));
        id = prev;
    }
    chain.reverse();
    // The unapplied txns in order, each with its record (the first record may hold txns an
    // earlier batch applied: a batch ends where `MAX_BATCH` cuts, not where records do).
    let applied = c.applied;
    let steps: Vec<(usize, &Txn)> = chain
        .iter()
        .enumerate()
        .flat_map(|(r, (_, e))| e.txns.iter().map(move |t| (r, t)))
        .filter(|(_, t)| t.zxid > applied)
        .collect();
    for (i, part) in steps.chunks(MAX_BATCH).enumerate() {
        // A backlog of many batches is applied over several invocations (`RUN_BUDGET_MS`).
        if i > 0 && faaskeeper_guest::now_ms() >= deadline {
            break;
        }
        let to_zxid = part.last().map_or(c.applied, |(_, t)| t.zxid);
        let mut records: Vec<&(String, LogEntry)> = part.iter().map(|(r, _)| &chain[*r]).collect();
        records.dedup_by(|a, b| a.0 == b.0);
        // A record is deleted by the batch that applies its last txn.
        let spent: Vec<String> = records
            .iter()
            .filter(|(_, e)| e.last_zxid() <= to_zxid)
            .map(|(id, _)| id.clone())
            .collect();
        let txns: Vec<&Txn> = part.iter().map(|(_, t)| *t).collect();
        let nodes_in_user = c.nodes_in_user;
        let decide_batch = |c: &Cursor| {
            decide(
                system,
                (user, c.known.as_ref()),
                nodes_in_user,
                &txns,
                (&c.last_results, c.batch + 1),
            )
        };
        let mut decided = decide_batch(c)?;
        // Nothing of this batch is written before the batch in flight is handed over: a
        // client must get an event before it can read newer data (Guarantee 4).
        let before = match c.handed_over(system, me)? {
            // Sessions were moved to their fallback address: this batch was decided with
            // their old one, and is decided again (reads only, nothing of it was written).
            Some((p, true)) => {
                decided = decide_batch(c)?;
                Some(p)
            }
            Some((p, false)) => Some(p),
            None => None,
        };
        let Decided {
            mut pending,
            last_results,
            read,
            written,
        } = decided;
        pending.ends_by_delete =
            faaskeeper_guest::pack::write_unit().is_some() && !spent.is_empty();
        pending.txn_ids = spent;
        c.check_lease(system, me)?;
        let spent_before = match before {
            // Ended by deleting its records, as a batch without a successor is
            // (`carried_out` relies on it).
            Some(p) if p.ends_by_delete => {
                end(system, &p, c.nodes_in_user, c.tail())?;
                Vec::new()
            }
            // Ended by this batch's progress write below, which names it applied.
            Some(p) => p.txn_ids,
            None => Vec::new(),
        };
        let stored = pending.by_reference(&records);
        let start = Stored {
            applied: c.applied,
            pending: Some(stored.as_ref().unwrap_or(&pending)),
            nodes_in_user: c.nodes_in_user,
            last_results: &last_results,
            batch: c.batch + 1,
            by: c.known.as_ref().map(|k| k.token.as_str()),
        };
        put_progress(system, &start)?;
        c.last_results = last_results;
        c.batch += 1;
        // The progress record now names the batch before applied: the log records it spent
        // go, right after the write that ends it (as in `end`).
        if !spent_before.is_empty() {
            system.delete_many(spent_before.iter().map(|id| keys::txn(id)).collect())?;
        }
        write_effects(system, user, &pending, c.nodes_in_user)?;
        if let Some(known) = c.known.as_mut() {
            // The store now holds what the batch read and left, and what it wrote.
            known.learn_nodes(read.nodes);
            known.learn_sessions(read.sessions);
            known.learn_watches(read.watches);
            known.learn_nodes(pending.nodes.iter().cloned());
            known.learn_sessions(written.into_iter().map(|(id, r)| (id, Some(r))));
            known.learn_watches(pending.watches.iter().cloned());
        }
        let sent = hand_over(&pending)?;
        c.applied = pending.to_zxid;
        c.in_flight = Some(InFlight { pending, sent });
    }
    Ok(c.applied)
}

/// The first round of a run: read the progress record, and finish a batch a crashed
/// distributor left behind. `memo`: what the run before knew of the nodes.
fn start_run(
    system: &Bucket,
    user: &Bucket,
    me: &str,
    memo: Option<Memo>,
) -> Result<Cursor, KvError> {
    let (record, old_layout) = progress(system)?;
    let mut applied = record.applied;
    let mut finished = false;
    if let Some(pending) = record.pending {
        if pending.to_zxid > applied {
            let to_zxid = pending.to_zxid;
            if !carried_out(system, &pending)? {
                let pending = pending.resolve(system)?;
                finish(
                    system,
                    user,
                    me,
                    &pending,
                    record.nodes_in_user,
                    // Not the starter's token: what it knew is not what this left.
                    (&record.last_results, record.batch, None),
                )?;
                finished = true;
            }
            applied = to_zxid;
        }
        if old_layout {
            // `finish` has written the new layout's marker; the old redo record is spent.
            system.delete(keys::DIST_PENDING)?;
        }
    }
    // A batch finished here was another's: what the memo knew is not taken.
    let known = record.nodes_in_user.then(|| match finished {
        true => Known::fresh(),
        false => Known::from_memo(memo, record.by.as_deref(), record.batch, applied),
    });
    Ok(Cursor {
        applied,
        nodes_in_user: record.nodes_in_user,
        last_results: record.last_results,
        batch: record.batch,
        known,
        in_flight: None,
        // Set by the caller, from what `acquire` saw.
        lease_until: 0,
    })
}

/// Decide a batch: apply its txns in order over the current state (with the last results
/// `last` of the progress record), collect the effects and the last results after it. The
/// log records it spends are filled in by the caller.
fn decide(
    system: &Bucket,
    (user, known): (&Bucket, Option<&Known>),
    nodes_in_user: bool,
    part: &[&Txn],
    (last, batch): (&LastResults, u64),
) -> Result<Decided, KvError> {
    let mut state = KvState::new(system, nodes_in_user.then_some(user), known, last, batch);
    let mut per_session: Vec<Delivery> = Vec::new();
    // The index of open sessions the heartbeat stage sweeps (Guarantee 5). Read only for
    // batches that open or end a session, to keep it off the path of ordinary writes.
    let touches_sessions = part
        .iter()
        .any(|t| matches!(t.request.op, Op::OpenSession { .. } | Op::CloseSession));
    let mut live: LiveSessions = if touches_sessions {
        system.get_json(keys::LIVE_SESSIONS)?.unwrap_or_default()
    } else {
        LiveSessions::default()
    };
    let live_before = live.clone();
    state.prefetch(&Reads::of(part.iter().copied()))?;
    for txn in part {
        let out = apply(&mut state, txn)?;
        let session = txn.request.session;
        match (&txn.request.op, &out.result) {
            (Op::OpenSession { .. }, OpResult::SessionOpened { timeout_ms }) => {
                live.sessions.entry(session).or_insert(LiveSession {
                    timeout_ms: *timeout_ms,
                    opened_ms: txn.time_ms,
                    zxid: txn.zxid,
                });
            }
            (Op::CloseSession, OpResult::SessionClosed)
            | (
                _,
                OpResult::Error {
                    error: faaskeeper_core::ZkError::SessionExpired,
                    ..
                },
            ) => {
                live.sessions.remove(&session);
            }
            _ => {}
        }
        for d in out.deliveries {
            match per_session.iter_mut().find(|x| x.session == d.session) {
                Some(x) => x.events.extend(d.events),
                None => per_session.push(d),
            }
        }
    }
    let last_results = state.settle_sessions()?;
    let changes = state.into_changes();
    // The index of TTL nodes the heartbeat stage sweeps, read only when the batch creates or
    // deletes one.
    let ttl_index = if changes.ttl_written.is_empty() && changes.ttl_removed.is_empty() {
        None
    } else {
        let mut index: TtlIndex = system.get_json(keys::TTL_NODES)?.unwrap_or_default();
        index.nodes_in_user = nodes_in_user;
        index.paths.extend(changes.ttl_written.iter().cloned());
        for p in &changes.ttl_removed {
            index.paths.remove(p);
        }
        Some(index)
    };
    let sessions = changes
        .sessions
        .iter()
        .map(|(id, rec)| Ok((*id, raw(rec)?)))
        .collect::<Result<_, KvError>>()?;
    let deliveries = per_session.iter().map(raw).collect::<Result<_, _>>()?;
    let pending = Pending {
        to_zxid: part.last().map_or(0, |t| t.zxid),
        nodes: changes.nodes,
        sessions,
        watches: changes.watches,
        ttl_index,
        live: (live != live_before).then_some(live),
        system_puts: Vec::new(),
        system_deletes: Vec::new(),
        user_puts: Vec::new(),
        user_deletes: Vec::new(),
        deliveries,
        ends_by_delete: false,
        txn_ids: Vec::new(),
        data_refs: Vec::new(),
    };
    let written = match known {
        Some(_) => changes.sessions,
        None => Vec::new(),
    };
    Ok(Decided {
        pending,
        last_results,
        read: changes.read,
        written,
    })
}

/// A batch decided: its redo record, the last results after it, and where records are
/// [`Known`], those it read and left unchanged and the sessions' records it writes whole.
struct Decided {
    pending: Pending,
    last_results: LastResults,
    read: state::Read,
    written: Vec<(SessionId, SessionRecord)>,
}

/// What a progress write holds besides the applied zxid and the batch: the last results, the
/// number of the last batch started, and the token of the chain that started it.
type Tail<'a> = (&'a LastResults, u64, Option<&'a str>);

/// Whether a batch left in the progress record was carried out to its end: only a batch
/// that [ends by deleting its log records](Pending::ends_by_delete) can have been, and then
/// only if the record it deletes first is gone. Every other one is finished (again: its
/// steps are overwrites and deletes).
fn carried_out(system: &Bucket, pending: &Pending) -> Result<bool, KvError> {
    match pending.txn_ids.last() {
        Some(last) if pending.ends_by_delete => Ok(system.get(&keys::txn(last))?.is_none()),
        _ => Ok(false),
    }
}

/// Carry out a decided batch. Every step is an overwrite or delete, so repeating it after a
/// crash is harmless; notifications may repeat and clients drop duplicates.
fn finish(
    system: &Bucket,
    user: &Bucket,
    me: &str,
    p: &Pending,
    nodes_in_user: bool,
    tail: Tail<'_>,
) -> Result<(), KvError> {
    write_effects(system, user, p, nodes_in_user)?;
    let moved = handed_over(hand_over(p)?)?;
    // The wait may have been long: no write after it without the lease.
    still_holding(system, me)?;
    fall_back(system, &moved)?;
    end(system, p, nodes_in_user, tail)
}

/// Write a batch's effects to both buckets.
fn write_effects(
    system: &Bucket,
    user: &Bucket,
    p: &Pending,
    nodes_in_user: bool,
) -> Result<(), KvError> {
    let mut system_puts: Vec<(String, Vec<u8>)> = Vec::new();
    let mut system_deletes = p.system_deletes.clone();
    let mut user_puts: Vec<(String, Vec<u8>)> = Vec::new();
    let mut user_deletes = p.user_deletes.clone();
    for (path, node) in &p.nodes {
        match node {
            Some(node) => {
                if !nodes_in_user {
                    system_puts.push((keys::node(path), encoded(node.record_bytes())?));
                }
                user_puts.push((keys::user_node(path), encoded(node.view_json())?));
            }
            None => {
                if !nodes_in_user {
                    system_deletes.push(keys::node(path));
                }
                user_deletes.push(keys::user_node(path));
            }
        }
    }
    if let Some(index) = &p.ttl_index {
        system_puts.push((keys::TTL_NODES.to_string(), encode(index)?));
    }
    if let Some(live) = &p.live {
        system_puts.push((keys::LIVE_SESSIONS.to_string(), encode(live)?));
    }
    for (id, session) in &p.sessions {
        system_puts.push((keys::session(*id), session.get().as_bytes().to_vec()));
    }
    for (path, watches) in &p.watches {
        if watches.is_empty() {
            system_deletes.push(keys::watches(path));
        } else {
            system_puts.push((keys::watches(path), encode(watches)?));
        }
    }
    let pairs = |puts: &[Put]| {
        puts.iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect::<Vec<_>>()
    };
    system_puts.extend(pairs(&p.system_puts));
    user_puts.extend(pairs(&p.user_puts));
    system.set_many(system_puts)?;
    system.delete_many(system_deletes)?;
    user.set_many(user_puts)?;
    user.delete_many(user_deletes)?;
    Ok(())
}

/// Send a batch's deliveries to the watch stage; the answer is read by [`handed_over`].
fn hand_over(p: &Pending) -> Result<Option<faaskeeper_guest::Sent>, KvError> {
    if p.deliveries.is_empty() {
        return Ok(None);
    }
    let batch = encode(&DeliveryBatch {
        deliveries: &p.deliveries,
    })?;
    faaskeeper_guest::send(WATCH_URL, &batch)
        .map(Some)
        .map_err(|e| KvError::Store(format!("watch stage unreachable: {e}")))
}

/// Whether the watch stage took the deliveries: a batch counts as applied only once its
/// events are handed over (Guarantee 4). Returns the sessions it delivered at their fallback
/// address, which the caller moves there for good ([`fall_back`]) before the batch ends, so
/// that no later delivery can overtake what waits there.
fn handed_over(sent: Option<faaskeeper_guest::Sent>) -> Result<Vec<SessionId>, KvError> {
    let Some(sent) = sent else {
        return Ok(Vec::new());
    };
    match sent.wait() {
        // An answer without the field (a watch stage before fallback addresses) moved
        // nobody; one that cannot be read may have moved anyone, and the batch is not taken
        // as handed over (it is sent again).
        Ok((status, body)) if (200..300).contains(&status) => {
            serde_json::from_slice::<HandOver>(&body)
                .map(|h| h.fell_back)
                .map_err(|e| {
                    KvError::Store(format!("watch stage answered {status} unreadably: {e}"))
                })
        }
        Ok((status, body)) => Err(KvError::Store(format!(
            "watch stage answered {status}: {}",
            String::from_utf8_lossy(&body)
        ))),
        Err(e) => Err(KvError::Store(format!("watch stage unreachable: {e}"))),
    }
}

/// Move `sessions` to their fallback address for good ([`SessionRecord::fall_back`]). Written
/// before the batch that was just handed over ends: if the distributor stops in between, the
/// batch is carried out again and its deliveries sent again (to the old address, if its
/// redo record rewrites the session's record), and they come before anything later.
fn fall_back(system: &Bucket, sessions: &[SessionId]) -> Result<(), KvError> {
    let mut puts = Vec::new();
    for id in sessions {
        let key = keys::session(*id);
        let Some(mut rec) = system.get_json::<SessionRecord>(&key)? else {
            continue;
        };
        if rec.fall_back() {
            puts.push((key, encode(&rec)?));
        }
    }
    if !puts.is_empty() {
        system.set_many(puts)?;
    }
    Ok(())
}

/// End a batch that is carried out and handed over: record it applied (with the last results
/// as of it) and delete the log records it spent.
fn end(
    system: &Bucket,
    p: &Pending,
    nodes_in_user: bool,
    (last_results, batch, by): Tail<'_>,
) -> Result<(), KvError> {
    if let (true, Some((last, rest))) = (p.ends_by_delete, p.txn_ids.split_last()) {
        // The first delete ends the batch (see `carried_out`); the rest follow it.
        system.delete(&keys::txn(last))?;
        if !rest.is_empty() {
            system.delete_many(rest.iter().map(|id| keys::txn(id)).collect())?;
        }
        return Ok(());
    }
    let done = Stored {
        applied: p.to_zxid,
        pending: None,
        nodes_in_user,
        last_results,
        batch,
        by,
    };
    put_progress(system, &done)?;
    system.delete_many(p.txn_ids.iter().map(|id| keys::txn(id)).collect())?;
    Ok(())
}
