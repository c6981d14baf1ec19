//! Fault injection with linearizability checking (DESIGN.md Guarantees 1, 2, 4 and 5).
//!
//! Per fault kind, a host runs under a seeded [`FaultPlan`] (traps in a stage after storage
//! steps or outgoing requests; dropped, lost-reply, duplicated, delayed and reordered stage
//! messages; SIGKILL of the whole host process at random storage steps, restarted on the same
//! data) while concurrent sessions create, read, compare-and-set, set and delete a few hot
//! znodes, pipeline version-chained sets on a private znode, and keep data watches. Then:
//!
//! - every znode's history (invoke/return times and outcomes; unknown outcomes possibly
//!   applied) must be linearizable under ZooKeeper's rules (`linearizability::check`), the
//!   final reads, taken with the faults off after a `sync`, included;
//! - no acknowledged write may be lost (the final state is at least as new as every
//!   acknowledged write; a private znode holds its last acknowledged value);
//! - pipelined requests take effect in issue order (Guarantee 2);
//! - a session sees a watch event before it reads data newer than it (Guarantee 4);
//! - a silent session's ephemeral nodes are gone after it expires (Guarantee 5).
//!
//! Seeded and replayable: `FAASKEEPER_FAULTS_SEED` (default fixed) picks the workload and the
//! fault decisions; `FAASKEEPER_FAULTS_SCALE` multiplies the operations (default 1). Each
//! kind prints one summary line (`--nocapture`); a failure names the seed.
#![allow(clippy::unwrap_used)]

use faaskeeper_client::{Client, Options, Watch};
use faaskeeper_core::wire::{Op, OpResult};
use faaskeeper_core::{CreateMode, Stat, ZkError};
use faaskeeper_host::faults::{FaultPlan, FaultRule, FaultSpec, SeededRng, Step, Target};
use faaskeeper_host::runtime::{Limits, StageName};
use faaskeeper_tests::linearizability::{OPEN, Operation, Verdict, ZkOp, ZkRet, check};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEFAULT_SEED: u64 = 0x0fa1_75ee_d5ee_d001;
/// Concurrent sessions per run.
const SESSIONS: usize = 8;
/// Operations per session at scale 1.
const OPS_PER_SESSION: usize = 250;
/// Hot znodes every session works on.
const HOT: usize = 4;
/// Ephemeral nodes of the session left to expire.
const EPHEMERALS: usize = 3;
/// States the checker may visit per history before it gives up.
const CHECK_LIMIT: usize = 2_000_000;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn seed() -> u64 {
    env_u64("FAASKEEPER_FAULTS_SEED").unwrap_or(DEFAULT_SEED)
}

fn scale() -> usize {
    env_u64("FAASKEEPER_FAULTS_SCALE").unwrap_or(1).max(1) as usize
}

/// Compiled stages are cached here across the hosts of this suite (and its child processes).
fn cache_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("faaskeeper-faults-compiled")
}

// ---------------------------------------------------------------------------------------
// Recording

/// One recorded operation.
#[derive(Debug, Clone)]
struct Rec {
    znode: String,
    session: i64,
    call: u64,
    ret: u64,
    op: ZkOp,
    out: ZkRet,
    /// The zxid of an acknowledged write.
    zxid: Option<i64>,
    /// Whether the op went through the log (writes, reads that leave a watch): such an op
    /// of a session takes effect before the session's next one does (Guarantee 2).
    logged: bool,
}

#[derive(Default)]
struct Tally {
    fifo: AtomicU64,
    notifications: AtomicU64,
    notes: Mutex<Vec<String>>,
}

impl Tally {
    fn violation(&self, counter: &AtomicU64, note: String) {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut notes = self.notes.lock().unwrap();
        if notes.len() < 20 {
            notes.push(note);
        }
    }
}

struct Shared {
    /// (generation, URL) of the live host; a restart bumps the generation.
    url: Mutex<(u64, String)>,
    start: Instant,
    recs: Mutex<Vec<Rec>>,
    tally: Tally,
    ops: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn url(&self) -> (u64, String) {
        self.url.lock().unwrap().clone()
    }

    fn record(&self, rec: Rec) {
        self.recs.lock().unwrap().push(rec);
    }
}

fn options() -> Options {
    Options {
        request_timeout: Duration::from_secs(10),
        ..Options::default()
    }
}

/// A session of a worker, with what it needs for the notification check.
struct Conn {
    client: Client,
    generation: u64,
    /// Watch events as they reached the session: (path, zxid).
    events: Arc<Mutex<Vec<(String, i64)>>>,
    /// Data watches left and not yet seen firing: path → mzxid the registering read saw.
    watches: HashMap<String, i64>,
    _handles: Vec<Watch>,
    /// An operation of this session got no answer.
    broken: bool,
}

async fn connect(sh: &Shared, opts: Options) -> Option<(Client, u64)> {
    let (generation, url) = sh.url();
    match Client::connect(&url, opts).await {
        Ok(c) => Some((c, generation)),
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

async fn open_conn(sh: &Shared) -> Option<Conn> {
    let (client, generation) = connect(sh, options()).await?;
    let events: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let sink = events.clone();
    client.on_watch_event(Box::new(move |e| {
        sink.lock().unwrap().push((e.path.clone(), e.zxid));
    }));
    Some(Conn {
        client,
        generation,
        events,
        watches: HashMap::new(),
        _handles: Vec::new(),
        broken: false,
    })
}

fn zk_op(path: &str, op: &ZkOp) -> Op {
    match op {
        ZkOp::Create { data } => Op::Create {
            path: path.into(),
            data: data.clone().into_bytes(),
            mode: CreateMode::Persistent,
            acl: None,
        },
        ZkOp::Delete { version } => Op::Delete {
            path: path.into(),
            version: *version,
        },
        ZkOp::Set { data, version } => Op::SetData {
            path: path.into(),
            data: data.clone().into_bytes(),
            version: *version,
        },
        ZkOp::Get => Op::GetData {
            path: path.into(),
            watch: false,
        },
    }
}

fn outcome(r: Result<(i64, OpResult), faaskeeper_client::Error>) -> (ZkRet, Option<i64>) {
    match r {
        Ok((z, OpResult::Created { .. } | OpResult::Deleted)) => (ZkRet::Ok, Some(z)),
        Ok((z, OpResult::Stat { stat })) => (
            ZkRet::Stat {
                version: stat.version,
            },
            Some(z),
        ),
        Ok((_, OpResult::Error { error, .. })) => match error {
            ZkError::NodeExists => (ZkRet::NodeExists, None),
            ZkError::NoNode => (ZkRet::NoNode, None),
            ZkError::BadVersion => (ZkRet::BadVersion, None),
            // SessionExpired, SystemError...: not a ZooKeeper answer about this znode.
            _ => (ZkRet::Unknown, None),
        },
        _ => (ZkRet::Unknown, None),
    }
}

/// A write through the pipeline, recorded.
async fn write(sh: &Shared, c: &mut Conn, path: &str, op: ZkOp) -> (ZkRet, Option<i64>) {
    let call = sh.now();
    let r = c.client.request(zk_op(path, &op)).await;
    let ret = sh.now();
    let (out, zxid) = outcome(r);
    c.broken |= out == ZkRet::Unknown;
    sh.record(Rec {
        znode: path.into(),
        session: c.client.session_id(),
        call,
        ret,
        op,
        out: out.clone(),
        zxid,
        logged: true,
    });
    (out, zxid)
}

fn data_of(data: &[u8], stat: &Stat) -> ZkRet {
    ZkRet::Data {
        data: String::from_utf8_lossy(data).into_owned(),
        version: stat.version,
    }
}

/// Guarantee 4: if `path` changed since the session's watch on it was left, the event must
/// have reached the session before this read returned.
fn check_notification(sh: &Shared, c: &mut Conn, path: &str, seen: Option<&Stat>) {
    let Some(&registered) = c.watches.get(path) else {
        return;
    };
    let fired = c
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|(p, z)| p == path && *z > registered);
    let changed = seen.is_none_or(|s| s.mzxid != registered);
    if fired {
        c.watches.remove(path);
    } else if changed {
        c.watches.remove(path);
        sh.tally.violation(
            &sh.tally.notifications,
            format!(
                "session {} read {path} at {:?} (watch left at mzxid {registered}) before its event",
                c.client.session_id(),
                seen.map(|s| s.mzxid)
            ),
        );
    }
}

/// A plain read (straight from the user store), recorded if it answered.
async fn read(sh: &Shared, c: &mut Conn, path: &str) -> Option<Option<Stat>> {
    let call = sh.now();
    let r = c.client.get_data(path).await;
    let ret = sh.now();
    let (out, stat) = match r {
        Ok((data, stat)) => (data_of(&data, &stat), Some(stat)),
        Err(e) if e.code() == Some(ZkError::NoNode) => (ZkRet::NoNode, None),
        Err(_) => return None,
    };
    check_notification(sh, c, path, stat.as_ref());
    sh.record(Rec {
        znode: path.into(),
        session: c.client.session_id(),
        call,
        ret,
        op: ZkOp::Get,
        out,
        zxid: None,
        logged: false,
    });
    Some(stat)
}

/// A read that leaves a data watch (through the log), recorded if it answered.
async fn read_and_watch(sh: &Shared, c: &mut Conn, path: &str) -> Option<Option<Stat>> {
    let call = sh.now();
    let r = c.client.get_data_w(path).await;
    let ret = sh.now();
    let (out, stat) = match r {
        Ok((data, stat, w)) => {
            c.watches.insert(path.into(), stat.mzxid);
            c._handles.push(w);
            (data_of(&data, &stat), Some(stat))
        }
        Err(e) if e.code() == Some(ZkError::NoNode) => (ZkRet::NoNode, None),
        Err(_) => return None,
    };
    sh.record(Rec {
        znode: path.into(),
        session: c.client.session_id(),
        call,
        ret,
        op: ZkOp::Get,
        out,
        zxid: None,
        logged: true,
    });
    Some(stat)
}

/// Guarantee 2: three version-chained sets of the session's private znode, pipelined. Each
/// can succeed only if the one before it took effect just before it.
async fn fifo_burst(sh: &Shared, c: &mut Conn, path: &str, tag: &str) {
    let Some(Some(stat)) = read(sh, c, path).await else {
        return;
    };
    let base = stat.version;
    let session = c.client.session_id();
    let call = sh.now();
    let timed = |k: i32| {
        let op = ZkOp::Set {
            data: format!("{tag}-{k}"),
            version: base + k,
        };
        let req = zk_op(path, &op);
        let client = &c.client;
        async move {
            let r = client.request(req).await;
            (op, r, sh.now())
        }
    };
    // join! polls in order, so the requests take the session's sequence numbers in order.
    let (a, b, d) = tokio::join!(timed(0), timed(1), timed(2));
    let mut outs = Vec::new();
    for (op, r, ret) in [a, b, d] {
        let (out, zxid) = outcome(r);
        c.broken |= out == ZkRet::Unknown;
        sh.record(Rec {
            znode: path.into(),
            session,
            call,
            ret,
            op,
            out: out.clone(),
            zxid,
            logged: true,
        });
        outs.push((out, zxid));
    }
    for k in 0..2 {
        let (first, second) = (&outs[k], &outs[k + 1]);
        let broken = match (first, second) {
            ((ZkRet::Stat { .. }, _), (ZkRet::BadVersion, _)) => true,
            ((ZkRet::Stat { .. }, Some(z1)), (ZkRet::Stat { .. }, Some(z2))) => z2 <= z1,
            _ => false,
        };
        if broken {
            sh.tally.violation(
                &sh.tally.fifo,
                format!("session {session}: pipelined sets on {path} out of order: {outs:?}"),
            );
        }
    }
}

struct Workload {
    hot: Vec<String>,
    base: String,
    seed: u64,
    ops: usize,
}

async fn worker(sh: Arc<Shared>, w: usize, wl: Arc<Workload>, sigkill: bool) {
    let mut rng = SeededRng::new(wl.seed ^ (w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let private = format!("{}/p{w}", wl.base);
    let mut conn: Option<Conn> = None;
    let mut versions: HashMap<String, i32> = HashMap::new();
    let mut private_ready = false;
    let mut i = 0;
    while i < wl.ops {
        let stale = match &conn {
            None => true,
            Some(c) if sigkill && c.broken => {
                // The host was killed (nothing else fails here): wait for its restart instead
                // of piling up operations with unknown outcomes.
                for _ in 0..200 {
                    if c.generation != sh.url().0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                true
            }
            Some(c) => c.client.is_expired() || (sigkill && c.generation != sh.url().0),
        };
        if stale {
            conn = open_conn(&sh).await;
            versions.clear();
            continue;
        }
        let Some(c) = conn.as_mut() else { continue };
        i += 1;
        sh.ops.fetch_add(1, Ordering::SeqCst);
        let z = wl.hot[rng.below(wl.hot.len() as u64) as usize].clone();
        // Every other value is long enough that the distributor's redo record names it by
        // reference to its log entry, so a redo after a fault rebuilds data from the log.
        let data = if i % 2 == 0 {
            format!("w{w}-{i}-{}", "x".repeat(300))
        } else {
            format!("w{w}-{i}")
        };
        let roll = rng.below(100);
        if !private_ready {
            let (out, _) = write(
                &sh,
                c,
                &private,
                ZkOp::Create {
                    data: format!("w{w}-init"),
                },
            )
            .await;
            private_ready = matches!(out, ZkRet::Ok | ZkRet::NodeExists);
            continue;
        }
        match roll {
            0..=29 => {
                if let Some(stat) = read(&sh, c, &z).await {
                    match stat {
                        Some(s) => versions.insert(z, s.version),
                        None => versions.remove(&z),
                    };
                }
            }
            30..=39 => {
                if c.watches.contains_key(&z) {
                    let _ = read(&sh, c, &z).await;
                } else if let Some(Some(s)) = read_and_watch(&sh, c, &z).await {
                    versions.insert(z, s.version);
                }
            }
            40..=54 => {
                // Compare-and-set from the last version this session saw.
                let version = match versions.get(&z) {
                    Some(v) => *v,
                    None => match read(&sh, c, &z).await {
                        Some(Some(s)) => s.version,
                        _ => continue,
                    },
                };
                match write(&sh, c, &z, ZkOp::Set { data, version }).await {
                    (ZkRet::Stat { version }, _) => versions.insert(z, version),
                    _ => versions.remove(&z),
                };
            }
            55..=64 => {
                match write(&sh, c, &z, ZkOp::Set { data, version: -1 }).await {
                    (ZkRet::Stat { version }, _) => versions.insert(z, version),
                    _ => versions.remove(&z),
                };
            }
            65..=77 => {
                if let (ZkRet::Ok, _) = write(&sh, c, &z, ZkOp::Create { data }).await {
                    versions.insert(z, 0);
                }
            }
            78..=87 => {
                let version = match versions.get(&z) {
                    Some(v) if rng.chance(0.5) => *v,
                    _ => -1,
                };
                write(&sh, c, &z, ZkOp::Delete { version }).await;
                versions.remove(&z);
            }
            _ => fifo_burst(&sh, c, &private, &format!("w{w}-b{i}")).await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Ephemerals (Guarantee 5)

/// Open a session that never pings and create ephemeral nodes with it; returns their paths
/// (only those known to exist as this session's).
async fn leave_ephemerals(sh: &Shared, base: &str) -> Vec<String> {
    let opts = Options {
        session_timeout_ms: 4000,
        auto_heartbeat: false,
        ..options()
    };
    for _ in 0..100 {
        let Some((client, _)) = connect(sh, opts.clone()).await else {
            continue;
        };
        let mut made = Vec::new();
        for k in 0..EPHEMERALS {
            let path = format!("{base}/e{k}");
            for _ in 0..5 {
                let r = client.create(&path, b"e", CreateMode::Ephemeral).await;
                let mine = match r {
                    Ok(_) => true,
                    Err(_) => matches!(
                        client.exists(&path).await,
                        Ok(Some(s)) if s.ephemeral_owner == client.session_id()
                    ),
                };
                if mine {
                    made.push(path);
                    break;
                }
            }
        }
        if !made.is_empty() {
            // Dropped without closing: the session goes silent and must expire.
            return made;
        }
    }
    panic!("no ephemeral node could be created");
}

// ---------------------------------------------------------------------------------------
// Checking

#[derive(Debug, Default, Clone)]
struct Report {
    ops: u64,
    histories: usize,
    recorded: usize,
    unknown: usize,
    faults: u64,
    violations: u64,
    lost: u64,
    notes: Vec<String>,
}

/// Linearizability of every znode's history, and lost acknowledged writes.
fn check_histories(recs: &[Rec], hot: &[String], report: &mut Report) {
    // Bound unknown outcomes by FIFO order: an op of a session that went through the log took
    // effect, if at all, before the session's next logged op with a known outcome returned.
    let mut by_session: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        if r.logged {
            by_session.entry(r.session).or_default().push(i);
        }
    }
    let mut bound = vec![OPEN; recs.len()];
    for idx in by_session.values_mut() {
        idx.sort_by_key(|&i| recs[i].call);
        for (k, &i) in idx.iter().enumerate() {
            if recs[i].out == ZkRet::Unknown {
                // The next op issued after this one returned (pipelined ones overlap it).
                bound[i] = idx[k + 1..]
                    .iter()
                    .find(|&&j| recs[j].call >= recs[i].ret && recs[j].out != ZkRet::Unknown)
                    .map_or(OPEN, |&j| recs[j].ret);
            }
        }
    }
    let mut parts: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for (i, r) in recs.iter().enumerate() {
        parts.entry(&r.znode).or_default().push(Operation {
            client: r.session,
            call: r.call,
            ret: if r.out == ZkRet::Unknown {
                bound[i]
            } else {
                r.ret
            },
            op: r.op.clone(),
            out: r.out.clone(),
        });
    }
    for (znode, ops) in &parts {
        report.histories += 1;
        report.recorded += ops.len();
        report.unknown += ops.iter().filter(|o| o.out == ZkRet::Unknown).count();
        // Hot znodes start absent; private ones are created by their session in the history.
        match check(ops, None, CHECK_LIMIT) {
            Verdict::Linearizable => {}
            v => {
                report.violations += 1;
                report.notes.push(format!(
                    "{znode}: not linearizable ({} ops): {v:?}",
                    ops.len()
                ));
            }
        }
    }
    // Lost acknowledged writes, judged against the final read of each znode.
    for (znode, _) in parts {
        let mine: Vec<&Rec> = recs.iter().filter(|r| r.znode == znode).collect();
        let Some(last) = mine.iter().max_by_key(|r| r.call) else {
            continue;
        };
        let final_stat = match &last.out {
            ZkRet::Data { .. } => true,
            ZkRet::NoNode => false,
            _ => continue,
        };
        let acked = |r: &&&Rec| r.zxid.is_some();
        let lost: u64 = if final_stat {
            // The final state holds data at some mzxid; every acknowledged create or set must
            // be at or below it and every acknowledged delete below its creation.
            let Some(fs) = FINAL_STATS.lock().unwrap().get(znode).cloned() else {
                continue;
            };
            mine.iter()
                .filter(acked)
                .filter(|r| match r.op {
                    ZkOp::Delete { .. } => r.zxid.unwrap_or(0) > fs.czxid,
                    _ => r.zxid.unwrap_or(0) > fs.mzxid,
                })
                .count() as u64
        } else {
            // Absent at the end: an acknowledged create or set newer than every delete that
            // may have happened is lost.
            let unknown_delete = mine
                .iter()
                .any(|r| matches!(r.op, ZkOp::Delete { .. }) && r.out == ZkRet::Unknown);
            let last_delete = mine
                .iter()
                .filter(acked)
                .filter(|r| matches!(r.op, ZkOp::Delete { .. }))
                .filter_map(|r| r.zxid)
                .max()
                .unwrap_or(0);
            if unknown_delete {
                0
            } else {
                mine.iter()
                    .filter(acked)
                    .filter(|r| !matches!(r.op, ZkOp::Delete { .. }))
                    .filter(|r| r.zxid.unwrap_or(0) > last_delete)
                    .count() as u64
            }
        };
        if lost > 0 {
            report.notes.push(format!(
                "{znode}: {lost} acknowledged writes lost{}",
                if hot.iter().any(|h| h == znode) {
                    ""
                } else {
                    " (private znode)"
                }
            ));
        }
        report.lost += lost;
    }
}

/// The stat of each znode's final read (the linearizability history keeps only data and
/// version). Keyed by path; paths are unique per run.
static FINAL_STATS: Mutex<BTreeMap<String, Stat>> = Mutex::new(BTreeMap::new());

/// With the faults off: a `sync` (every logged write is applied), then one read per znode,
/// recorded after every other operation.
async fn final_reads(sh: &Shared, znodes: &[String]) {
    let c = loop {
        if let Some(c) = open_conn(sh).await {
            break c;
        }
    };
    for _ in 0..100 {
        if c.client.sync("/").await.is_ok() {
            break;
        }
    }
    for z in znodes {
        for _ in 0..100 {
            let call = sh.now();
            let r = c.client.get_data(z).await;
            let ret = sh.now();
            let (out, stat) = match r {
                Ok((data, stat)) => (data_of(&data, &stat), Some(stat)),
                Err(e) if e.code() == Some(ZkError::NoNode) => (ZkRet::NoNode, None),
                Err(_) => continue,
            };
            if let Some(s) = stat {
                FINAL_STATS.lock().unwrap().insert(z.clone(), s);
            }
            sh.record(Rec {
                znode: z.clone(),
                session: c.client.session_id(),
                call,
                ret,
                op: ZkOp::Get,
                out,
                zxid: None,
                logged: false,
            });
            break;
        }
    }
}

/// Guarantee 5: the silent session's ephemerals disappear (checked with the faults off; the
/// wait is a liveness bound, not a timing assertion).
async fn ephemerals_gone(sh: &Shared, paths: &[String]) -> Result<(), String> {
    let c = loop {
        if let Some(c) = open_conn(sh).await {
            break c;
        }
    };
    for _ in 0..300 {
        let mut left = Vec::new();
        for p in paths {
            match c.client.exists(p).await {
                Ok(None) => {}
                _ => left.push(p.clone()),
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "ephemerals {paths:?} of an expired session still exist"
    ))
}

// ---------------------------------------------------------------------------------------
// Running one fault kind

/// How the host of a run is provided.
enum Hosting {
    /// In this process, with the plan.
    InProcess(FaultSpec),
    /// In child processes that SIGKILL themselves at random storage steps, restarted on the
    /// same data `kills` times.
    Sigkill { kills: u64, chance: f64 },
}

async fn run_kind(name: &str, hosting: Hosting) -> Report {
    let seed = seed();
    let ops = OPS_PER_SESSION * scale();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("/faults-{name}");
    let hot: Vec<String> = (0..HOT).map(|k| format!("{base}/hot{k}")).collect();
    let wl = Arc::new(Workload {
        hot: hot.clone(),
        base: base.clone(),
        seed,
        ops,
    });

    // Start the host (faults paused until the workload starts).
    let mut in_process = None;
    let mut supervisor = None;
    let sup = Arc::new(Supervision::default());
    let sh = match &hosting {
        Hosting::InProcess(spec) => {
            let plan = Arc::new(FaultPlan::new(spec.clone()));
            plan.pause();
            let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
                data_dir: dir.path().to_path_buf(),
                listen: "127.0.0.1:0".parse().unwrap(),
                zk_listen: None,
                limits: Limits {
                    cache_dir: Some(cache_dir()),
                    faults: Some(plan.clone()),
                    ..Limits::default()
                },
                stores: None,
                ..Default::default()
            })
            .await
            .expect("start host");
            let sh = Arc::new(Shared {
                url: Mutex::new((0, host.url())),
                start: Instant::now(),
                recs: Mutex::default(),
                tally: Tally::default(),
                ops: AtomicU64::new(0),
            });
            in_process = Some((host, plan));
            sh
        }
        Hosting::Sigkill {
            kills: target,
            chance,
        } => {
            let (child, url) = spawn_child(dir.path(), None);
            let sh = Arc::new(Shared {
                url: Mutex::new((0, url)),
                start: Instant::now(),
                recs: Mutex::default(),
                tally: Tally::default(),
                ops: AtomicU64::new(0),
            });
            supervisor = Some(std::thread::spawn({
                let sh = sh.clone();
                let sup = sup.clone();
                let dir = dir.path().to_path_buf();
                let (target, chance) = (*target, *chance);
                move || supervise(child, &sh, &dir, &sup, target, chance, seed)
            }));
            sh
        }
    };
    let setup = loop {
        if let Some(c) = open_conn(&sh).await {
            break c;
        }
    };
    setup
        .client
        .create(&base, b"", CreateMode::Persistent)
        .await
        .expect("create the base znode");
    drop(setup);
    if let Some((_, plan)) = &in_process {
        plan.resume();
    }

    let ephemerals = leave_ephemerals(&sh, &base).await;
    sup.go.store(true, Ordering::SeqCst);
    let workers: Vec<_> = (0..SESSIONS)
        .map(|w| tokio::spawn(worker(sh.clone(), w, wl.clone(), supervisor.is_some())))
        .collect();
    for w in workers {
        w.await.expect("worker panicked");
    }

    // Quiet the service, then read the outcome.
    let faults = match &in_process {
        Some((_, plan)) => {
            plan.pause();
            plan.counts().total()
        }
        None => {
            // The supervisor leaves a host without faults running.
            sup.stop.store(true, Ordering::SeqCst);
            while !sup.quiet.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sup.kills.load(Ordering::SeqCst)
        }
    };
    let mut znodes = hot.clone();
    znodes.extend((0..SESSIONS).map(|w| format!("{base}/p{w}")));
    final_reads(&sh, &znodes).await;
    let eph = ephemerals_gone(&sh, &ephemerals).await;

    let recs = sh.recs.lock().unwrap().clone();
    let mut report = Report {
        ops: sh.ops.load(Ordering::SeqCst),
        faults,
        ..Report::default()
    };
    check_histories(&recs, &hot, &mut report);
    let fifo = sh.tally.fifo.load(Ordering::SeqCst);
    let notifications = sh.tally.notifications.load(Ordering::SeqCst);
    report.violations += fifo + notifications;
    report.notes.extend(sh.tally.notes.lock().unwrap().clone());
    if let Err(e) = eph {
        report.violations += 1;
        report.notes.push(e);
    }
    println!(
        "fault kind {name:<26} ops {:>6}  histories {:>3} ({} recorded, {} unknown)  faults injected {:>5}  violations {}  acked writes lost {}  (fifo {fifo}, notifications {notifications})",
        report.ops,
        report.histories,
        report.recorded,
        report.unknown,
        report.faults,
        report.violations,
        report.lost,
    );
    if let Some(s) = supervisor {
        sup.done.store(true, Ordering::SeqCst);
        let _ = s.join();
    }
    drop(in_process);
    report
}

fn assert_clean(name: &str, r: &Report) {
    let seed = seed();
    assert!(
        r.violations == 0 && r.lost == 0,
        "fault kind {name} (FAASKEEPER_FAULTS_SEED={seed:#x}): {} violations, {} acknowledged writes lost:\n{}",
        r.violations,
        r.lost,
        r.notes.join("\n")
    );
    assert!(
        r.faults > 0,
        "fault kind {name} (seed {seed:#x}): no fault was injected"
    );
    assert!(
        r.recorded as u64 >= r.ops / 2,
        "fault kind {name} (seed {seed:#x}): only {} of {} operations answered",
        r.recorded,
        r.ops
    );
}

fn spec(salt: u64, rules: Vec<FaultRule>) -> FaultSpec {
    FaultSpec {
        seed: seed() ^ salt,
        rules,
    }
}

async fn in_process(name: &str, salt: u64, rules: Vec<FaultRule>) {
    let r = run_kind(name, Hosting::InProcess(spec(salt, rules))).await;
    assert_clean(name, &r);
}

// ---------------------------------------------------------------------------------------
// SIGKILL: the host runs in a child process (this test binary, `sigkill_child_host`)

/// Between a SIGKILL run and its supervisor thread.
#[derive(Default)]
struct Supervision {
    /// Set-up done: replace the set-up host by one that kills itself.
    go: AtomicBool,
    /// Workers done: no more kills.
    stop: AtomicBool,
    /// A host without faults is running (after `stop`).
    quiet: AtomicBool,
    /// Run over: kill the last host and return.
    done: AtomicBool,
    /// Hosts that died of their own SIGKILL.
    kills: AtomicU64,
}

const CHILD_DIR: &str = "FAASKEEPER_FAULTS_CHILD_DIR";
const CHILD_READY: &str = "faults-child listening on ";

fn spawn_child(dir: &std::path::Path, plan: Option<FaultSpec>) -> (std::process::Child, String) {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--exact", "sigkill_child_host", "--ignored", "--nocapture"])
        .env(CHILD_DIR, dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    match plan {
        Some(p) => cmd.env("FAASKEEPER_TEST_FAULTS", serde_json::to_string(&p).unwrap()),
        None => cmd.env_remove("FAASKEEPER_TEST_FAULTS"),
    };
    let mut child = cmd.spawn().expect("spawn the child host");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix(CHILD_READY) {
                    break Some(url.trim().to_string());
                }
            }
            _ => break None,
        }
    };
    std::thread::spawn(move || for _ in lines {});
    match url {
        Some(url) => (child, url),
        None => {
            // Killed while starting (a kill during recovery): report it as such.
            let _ = child.wait();
            (child, String::new())
        }
    }
}

/// Once set-up is done, replace the host by one that SIGKILLs itself at a random storage
/// step; restart it on the same data whenever it dies, with the kill plan until `target` kills
/// happened; once the workers are done, make sure a host without faults runs.
fn supervise(
    mut child: std::process::Child,
    sh: &Shared,
    dir: &std::path::Path,
    sup: &Supervision,
    target: u64,
    chance: f64,
    seed: u64,
) {
    use std::os::unix::process::ExitStatusExt;
    let mut restarts = 0u64;
    let mut restart = |child: &mut std::process::Child, faulty: bool| {
        restarts += 1;
        let plan = faulty.then(|| FaultSpec {
            seed: seed ^ restarts,
            rules: vec![FaultRule::Kill {
                chance,
                after_steps: 300,
            }],
        });
        let (c, url) = spawn_child(dir, plan);
        *child = c;
        let mut u = sh.url.lock().unwrap();
        *u = (u.0 + 1, url);
    };
    while !sup.go.load(Ordering::SeqCst) {
        if sup.done.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut faulty = target > 0;
    restart(&mut child, faulty);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if faulty && status.signal() == Some(9) {
                    sup.kills.fetch_add(1, Ordering::SeqCst);
                }
                faulty =
                    sup.kills.load(Ordering::SeqCst) < target && !sup.stop.load(Ordering::SeqCst);
                restart(&mut child, faulty);
            }
            Ok(None) if sup.done.load(Ordering::SeqCst) => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            Ok(None) if faulty && sup.stop.load(Ordering::SeqCst) => {
                // Workers done while a host that may kill itself runs: replace it.
                let _ = child.kill();
                let _ = child.wait();
                faulty = false;
                restart(&mut child, false);
            }
            Ok(None) => {
                if !faulty && sup.stop.load(Ordering::SeqCst) {
                    sup.quiet.store(true, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return,
        }
    }
}

/// The host of the SIGKILL kind, run by the parent test as a child process. Does nothing
/// unless the parent set its data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by sigkill_restart as a child process"]
async fn sigkill_child_host() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let plan = FaultPlan::from_env().expect("fault plan").map(Arc::new);
    if let Some(p) = &plan {
        p.pause();
    }
    let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
        data_dir: dir.into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        zk_listen: None,
        limits: Limits {
            cache_dir: Some(cache_dir()),
            faults: plan.clone(),
            ..Limits::default()
        },
        stores: None,
        ..Default::default()
    })
    .await
    .expect("start host");
    if let Some(p) = &plan {
        // Recovery done: from now on any storage step may be the last.
        p.resume();
    }
    println!("{CHILD_READY}{}", host.url());
    std::future::pending::<()>().await;
}

// ---------------------------------------------------------------------------------------
// The fault kinds

fn trap(stage: StageName, at: Step, chance: f64) -> Vec<FaultRule> {
    vec![FaultRule::Trap { stage, at, chance }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_writer_after_storage_steps() {
    in_process(
        "trap-writer-storage",
        1,
        trap(StageName::Writer, Step::Storage, 0.05),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_writer_after_outgoing_requests() {
    in_process(
        "trap-writer-outgoing",
        2,
        trap(StageName::Writer, Step::Outgoing, 0.2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_distributor_after_storage_steps() {
    in_process(
        "trap-distributor-storage",
        3,
        trap(StageName::Distributor, Step::Storage, 0.01),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_distributor_after_outgoing_requests() {
    in_process(
        "trap-distributor-outgoing",
        4,
        trap(StageName::Distributor, Step::Outgoing, 0.2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_watch_after_outgoing_requests() {
    in_process(
        "trap-watch-outgoing",
        5,
        trap(StageName::Watch, Step::Outgoing, 0.05),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_every_stage_at_nth_steps() {
    // Deterministic positions: the k-th storage step of each stage for a spread of k.
    let mut rules = Vec::new();
    for stage in [
        StageName::Writer,
        StageName::Distributor,
        StageName::Heartbeat,
    ] {
        for nth in (1..40).map(|k| 17 * k + 5) {
            rules.push(FaultRule::TrapNth {
                stage,
                at: Step::Storage,
                nth,
            });
        }
    }
    for nth in (1..40).map(|k| 11 * k) {
        rules.push(FaultRule::TrapNth {
            stage: StageName::Watch,
            at: Step::Outgoing,
            nth,
        });
    }
    in_process("trap-nth-step", 6, rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_stage_messages() {
    in_process(
        "drop",
        7,
        vec![FaultRule::Drop {
            target: Target::Any,
            chance: 0.15,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lose_replies_of_stage_messages() {
    in_process(
        "lose-reply",
        8,
        vec![FaultRule::LoseReply {
            target: Target::Any,
            chance: 0.15,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_stage_messages() {
    in_process(
        "duplicate",
        9,
        vec![FaultRule::Duplicate {
            target: Target::Any,
            chance: 0.3,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_stage_messages() {
    in_process(
        "delay",
        10,
        vec![FaultRule::Delay {
            target: Target::Any,
            chance: 0.3,
            max_ms: 40,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorder_stage_messages() {
    in_process(
        "reorder",
        11,
        vec![FaultRule::Reorder {
            target: Target::Any,
            chance: 0.3,
            max_ms: 40,
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart() {
    let name = "sigkill-restart";
    let r = run_kind(
        name,
        Hosting::Sigkill {
            kills: 3 * scale() as u64,
            chance: 1.0 / 1500.0,
        },
    )
    .await;
    assert_clean(name, &r);
}
