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
//! compare-and-swaps per run. Without an owner every run takes and releases the lease.
//!
//! *Crash safety* (Guarantee 1): each batch is decided in memory, then written as a redo record
//! (`dist/pending`) before any of its effects. Effects are plain overwrites and deletes, so a
//! distributor that dies anywhere is finished by the next one, which replays the redo record
//! instead of deciding the txns again (deciding twice could differ: a create would see its own
//! node and answer `NodeExists`).

mod state;

use faaskeeper_core::Zxid;
use faaskeeper_core::apply::{NodeRecord, apply, initial_nodes};
use faaskeeper_core::keys;
use faaskeeper_core::session::{LiveSession, LiveSessions};
use faaskeeper_core::ttl::TtlIndex;
use faaskeeper_core::wire::{Delivery, DeliveryBatch, LogEntry, LogHead, b64};
use faaskeeper_core::wire::{Op, OpResult};
use faaskeeper_guest::kv::{Bucket, KvError};
use faaskeeper_guest::{Reply, Stage};
use serde::{Deserialize, Serialize};
use state::KvState;

/// Where the watch stage is reached.
const WATCH_URL: &str = "http://watch.spin.internal/";
/// A lease not renewed for this long is taken over.
const LEASE_MS: i64 = 10_000;
/// Most txns decided and persisted as one batch.
const MAX_BATCH: usize = 512;
/// Most batches one invocation applies before handing over (the next wake-up continues).
const MAX_ROUNDS: usize = 64;

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

/// The redo record of one batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    to_zxid: Zxid,
    system_puts: Vec<Put>,
    system_deletes: Vec<String>,
    user_puts: Vec<Put>,
    user_deletes: Vec<String>,
    deliveries: Vec<Delivery>,
    /// Log entries the batch consumed, deleted once it is applied.
    txn_ids: Vec<String>,
}

struct Distributor;

/// The body of a wake-up; anything else (`{}`, empty) is a wake-up without an owner.
#[derive(Deserialize)]
struct Wake {
    owner: Option<String>,
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
            let owner = serde_json::from_slice::<Wake>(&body)
                .ok()
                .and_then(|w| w.owner)
                .filter(|o| !o.is_empty());
            run(takeover, owner).map(|applied| serde_json::json!({ "applied": applied }))
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
    serde_json::to_vec(v).map_err(|e| corrupt(e.to_string()))
}

/// Create the keys the protocol later changes only by CAS, and ZooKeeper's initial tree.
/// Idempotent; run once per deployment before traffic (create-if-absent is not atomic on
/// every backend, so it must not race with itself).
fn init() -> Result<(), KvError> {
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    let user = Bucket::open(keys::USER_BUCKET)?;
    if system.get(&keys::node("/"))?.is_none() {
        for (path, node) in initial_nodes() {
            user.set(&keys::user_node(&path), &encode(&node.view())?)?;
            system.set(&keys::node(&path), &encode(&node)?)?;
        }
    }
    if system.get(keys::DIST_APPLIED)?.is_none() {
        system.set_json(keys::DIST_APPLIED, &0i64)?;
    }
    if system.get(keys::DIST_LEASE)?.is_none() {
        system.set_json(keys::DIST_LEASE, &Lease::default())?;
    }
    if system.get(keys::LOG_HEAD)?.is_none() {
        system.set_json(keys::LOG_HEAD, &LogHead::default())?;
    }
    Ok(())
}

/// Apply everything in the log; returns the last applied zxid, or `None` if another
/// distributor holds the lease (it will see our txns: it re-reads the head after releasing).
fn run(mut takeover: bool, owner: Option<String>) -> Result<Option<Zxid>, KvError> {
    let sticky = owner.is_some();
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    let user = Bucket::open(keys::USER_BUCKET)?;
    let me = owner.unwrap_or_else(faaskeeper_guest::random_id);
    let mut applied = None;
    for _ in 0..MAX_ROUNDS {
        if !acquire(&system, &me, std::mem::take(&mut takeover))? {
            return Ok(applied);
        }
        let outcome = apply_all(&system, &user, &me);
        if !sticky {
            release(&system, &me)?;
        }
        let now = outcome?;
        applied = Some(now);
        let head: LogHead = system
            .get_json(keys::LOG_HEAD)?
            .ok_or_else(|| corrupt("log head missing; run init"))?;
        if head.zxid <= now {
            break;
        }
    }
    Ok(applied)
}

fn acquire(system: &Bucket, me: &str, takeover: bool) -> Result<bool, KvError> {
    let (cas, lease): (_, Lease) = system.cas(keys::DIST_LEASE)?;
    let now = faaskeeper_guest::now_ms();
    if lease.owner == me && lease.expires_ms > now + LEASE_MS / 2 {
        return Ok(true); // Still ours for long enough: nothing to write.
    }
    if !takeover && !lease.owner.is_empty() && lease.owner != me && lease.expires_ms > now {
        return Ok(false);
    }
    let next = Lease {
        owner: me.to_string(),
        expires_ms: now + LEASE_MS,
        fence: lease.fence + 1,
    };
    match cas.swap(&next) {
        Ok(()) => Ok(true),
        Err(KvError::CasConflict) => Ok(false),
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
fn still_holding(system: &Bucket, me: &str) -> Result<(), KvError> {
    let lease: Lease = system
        .get_json(keys::DIST_LEASE)?
        .ok_or_else(|| corrupt("lease missing"))?;
    if lease.owner == me && lease.expires_ms > faaskeeper_guest::now_ms() {
        Ok(())
    } else {
        Err(KvError::Store("distributor lease lost".into()))
    }
}

fn apply_all(system: &Bucket, user: &Bucket, me: &str) -> Result<Zxid, KvError> {
    let mut applied: Zxid = system
        .get_json(keys::DIST_APPLIED)?
        .ok_or_else(|| corrupt("applied marker missing; run init"))?;
    // Finish a batch a crashed distributor left behind.
    if let Some(pending) = system.get_json::<Pending>(keys::DIST_PENDING)? {
        if pending.to_zxid > applied {
            finish(system, user, &pending)?;
            applied = pending.to_zxid;
        } else {
            system.delete(keys::DIST_PENDING)?;
        }
    }
    let head: LogHead = system
        .get_json(keys::LOG_HEAD)?
        .ok_or_else(|| corrupt("log head missing; run init"))?;
    if head.zxid <= applied {
        return Ok(applied);
    }
    // Walk back along the chain to the first unapplied txn.
    let mut chain: Vec<(String, LogEntry)> = Vec::new();
    let mut id = head.id.clone();
    let mut zxid = head.zxid;
    while zxid > applied {
        let entry: LogEntry = system
            .get_json(&keys::txn(&id))?
            .ok_or_else(|| corrupt(format!("log entry {id} (zxid {zxid}) missing")))?;
        if entry.txn.zxid != zxid {
            return Err(corrupt(format!(
                "log entry {id} has zxid {}, expected {zxid}",
                entry.txn.zxid
            )));
        }
        let prev = entry.prev.clone();
        chain.push((id, entry));
        id = prev;
        zxid -= 1;
    }
    chain.reverse();
    for part in chain.chunks(MAX_BATCH) {
        still_holding(system, me)?;
        let pending = decide(system, part)?;
        system.set_json(keys::DIST_PENDING, &pending)?;
        finish(system, user, &pending)?;
        applied = pending.to_zxid;
    }
    Ok(applied)
}

/// Decide a batch: apply its txns in order over the current state, collect the effects.
fn decide(system: &Bucket, part: &[(String, LogEntry)]) -> Result<Pending, KvError> {
    let mut state = KvState::new(system);
    let mut per_session: Vec<Delivery> = Vec::new();
    // The index of open sessions the heartbeat stage sweeps (Guarantee 5). Read only for
    // batches that open or end a session, to keep it off the path of ordinary writes.
    let touches_sessions = part
        .iter()
        .any(|(_, e)| matches!(e.txn.request.op, Op::OpenSession { .. } | Op::CloseSession));
    let mut live: LiveSessions = if touches_sessions {
        system.get_json(keys::LIVE_SESSIONS)?.unwrap_or_default()
    } else {
        LiveSessions::default()
    };
    let live_before = live.clone();
    for (_, entry) in part {
        let out = apply(&mut state, &entry.txn)?;
        let session = entry.txn.request.session;
        match (&entry.txn.request.op, &out.result) {
            (Op::OpenSession { .. }, OpResult::SessionOpened { timeout_ms }) => {
                live.sessions.entry(session).or_insert(LiveSession {
                    timeout_ms: *timeout_ms,
                    opened_ms: entry.txn.time_ms,
                    zxid: entry.txn.zxid,
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
    let changes = state.into_changes();
    // The index of TTL nodes the heartbeat stage sweeps, read only when the batch creates or
    // deletes one.
    let ttl_index = if changes.ttl_written.is_empty() && changes.ttl_removed.is_empty() {
        None
    } else {
        let mut index: TtlIndex = system.get_json(keys::TTL_NODES)?.unwrap_or_default();
        index.paths.extend(changes.ttl_written.iter().cloned());
        for p in &changes.ttl_removed {
            index.paths.remove(p);
        }
        Some(index)
    };
    let mut pending = Pending {
        to_zxid: part.last().map(|(_, e)| e.txn.zxid).unwrap_or(0),
        system_puts: Vec::new(),
        system_deletes: Vec::new(),
        user_puts: Vec::new(),
        user_deletes: Vec::new(),
        deliveries: per_session,
        txn_ids: part.iter().map(|(id, _)| id.clone()).collect(),
    };
    for (path, node) in changes.nodes {
        match node {
            Some(node) => {
                pending.user_puts.push(Put {
                    key: keys::user_node(&path),
                    value: encode(&node.view())?,
                });
                pending.system_puts.push(Put {
                    key: keys::node(&path),
                    value: encode::<NodeRecord>(&node)?,
                });
            }
            None => {
                pending.user_deletes.push(keys::user_node(&path));
                pending.system_deletes.push(keys::node(&path));
            }
        }
    }
    if let Some(index) = ttl_index {
        pending.system_puts.push(Put {
            key: keys::TTL_NODES.to_string(),
            value: encode(&index)?,
        });
    }
    if live != live_before {
        pending.system_puts.push(Put {
            key: keys::LIVE_SESSIONS.to_string(),
            value: encode(&live)?,
        });
    }
    for (id, session) in changes.sessions {
        pending.system_puts.push(Put {
            key: keys::session(id),
            value: encode(&session)?,
        });
    }
    for (path, watches) in changes.watches {
        if watches.is_empty() {
            pending.system_deletes.push(keys::watches(&path));
        } else {
            pending.system_puts.push(Put {
                key: keys::watches(&path),
                value: encode(&watches)?,
            });
        }
    }
    Ok(pending)
}

/// Carry out a decided batch. Every step is an overwrite or delete, so repeating it after a
/// crash is harmless; notifications may repeat and clients drop duplicates.
fn finish(system: &Bucket, user: &Bucket, p: &Pending) -> Result<(), KvError> {
    let to_pairs = |puts: &[Put]| {
        puts.iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    };
    system.set_many(to_pairs(&p.system_puts))?;
    system.delete_many(p.system_deletes.clone())?;
    user.set_many(to_pairs(&p.user_puts))?;
    user.delete_many(p.user_deletes.clone())?;
    if !p.deliveries.is_empty() {
        let batch = DeliveryBatch {
            deliveries: p.deliveries.clone(),
        };
        // The batch counts as applied only once its events are handed over (Guarantee 4).
        match faaskeeper_guest::post(WATCH_URL, &encode(&batch)?) {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok((status, body)) => {
                return Err(KvError::Store(format!(
                    "watch stage answered {status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            Err(e) => return Err(KvError::Store(format!("watch stage unreachable: {e}"))),
        }
    }
    system.set_json(keys::DIST_APPLIED, &p.to_zxid)?;
    system.delete(keys::DIST_PENDING)?;
    system.delete_many(p.txn_ids.iter().map(|id| keys::txn(id)).collect())?;
    Ok(())
}
