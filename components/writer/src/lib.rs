//! # faaskeeper-writer
//!
//! The writer stage: takes a batch of client requests, refuses what is plainly invalid
//! (`faaskeeper_core::wire::precheck`), and appends the rest to the transaction log in the
//! `system` bucket. The log position is the request's zxid (Guarantee 1: one total order).
//!
//! Appending needs only compare-and-swap on a key that exists (DESIGN.md): the requests of a
//! batch are stored as log records (several txns each, up to `LOG_RECORD_BYTES`) under fresh
//! random ids, each with a pointer to the record before it, then `log/head` is swapped from
//! the head that was read to `{zxid + n, last id}`. A lost swap rewrites the records against
//! the new head and tries again. Records of a lost race are never linked, so a writer that
//! crashes anywhere leaves at most unreachable records behind.
//!
//! After appending, the writer wakes the distributor by service chaining.
//!
//! It also serves reads, which need no pipeline: `/node?path=<path>&session=<id>` answers the
//! node object of a path from the `user` bucket (what the bundled host's `GET /v1/node`
//! answers, READ permission checked the same way), so that a platform without the bundled
//! host (Spin) has a read route for clients.

use faaskeeper_core::acl::{ReadAnswer, judge_read, session_ids};
use faaskeeper_core::keys;
use faaskeeper_core::wire::{
    LogEntry, LogHead, Submission, Txn, WriteBatch, decode_write_batch, encode_log_record,
    log_record_lengths, precheck, to_log,
};
use faaskeeper_guest::kv::{Bucket, KvError};
use faaskeeper_guest::{Reply, Stage};

/// Where the distributor is reached (Spin service chaining; the bundled host routes it too).
const DISTRIBUTOR_URL: &str = "http://distributor.spin.internal/";
/// A writer gives up after this many lost swaps in a row (heavy contention or a broken CAS).
const MAX_CAS_ATTEMPTS: usize = 10_000;

struct Writer;

impl Stage for Writer {
    fn handle(path: &str, body: Vec<u8>) -> Reply {
        if path == "/node" || path.starts_with("/node?") {
            return read_node(path);
        }
        // The bundled host sends the binary layout; clients of the HTTP API, JSON.
        let batch = match decode_write_batch(&body) {
            Ok(b) => b,
            Err(e) => return Reply::error(400, &format!("malformed write batch: {e}")),
        };
        match write(batch) {
            Ok(subs) => Reply::json(&subs),
            Err(e) => Reply::error(503, &e.to_string()),
        }
    }
}

faaskeeper_guest::export_stage!(Writer);

/// `/node?path=<path>&session=<id>`: the node object (`NodeView` JSON, without its ACL),
/// 404 if there is none, 403 with the stat if the session may not read it (no `session`:
/// judged as a session without ids).
fn read_node(uri: &str) -> Reply {
    let query = uri.split_once('?').map_or("", |(_, q)| q);
    let Some(path) = faaskeeper_core::url::query_param(query, "path") else {
        return Reply::error(400, "missing or malformed ?path=");
    };
    if let Err(e) = faaskeeper_core::path::validate(&path) {
        return Reply::error(400, &e.to_string());
    }
    let session = match faaskeeper_core::url::query_param(query, "session") {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => return Reply::error(400, "session is not a number"),
        },
    };
    let object = match Bucket::open(keys::USER_BUCKET).and_then(|b| b.get(&keys::user_node(&path)))
    {
        Ok(Some(body)) => body,
        Ok(None) => return Reply::error(404, &format!("no node {path}")),
        Err(e) => return Reply::error(503, &e.to_string()),
    };
    let ids = || -> Result<_, KvError> {
        let Some(id) = session else {
            return Ok(Vec::new());
        };
        match Bucket::open(keys::SYSTEM_BUCKET)?.get(&keys::session(id))? {
            Some(rec) => session_ids(&rec).map_err(|e| KvError::Corrupt(e.to_string())),
            None => Ok(Vec::new()),
        }
    };
    match judge_read(object, ids) {
        Ok(ReadAnswer::Serve(body)) => Reply { status: 200, body },
        Ok(ReadAnswer::NoAuth(stat)) => Reply {
            status: 403,
            body: serde_json::json!({ "error": "no_auth", "message": path, "stat": stat })
                .to_string()
                .into_bytes(),
        },
        Err(e) => Reply::error(503, &e.to_string()),
    }
}

/// Append a batch; the answer has one submission per request, in request order (the bundled
/// host's write combiner splits it back among the sessions whose requests it merged).
fn write(batch: WriteBatch) -> Result<Vec<Submission>, KvError> {
    let mut subs: Vec<Option<Submission>> = batch.requests.iter().map(|_| None).collect();
    let mut accepted = Vec::new();
    let mut positions = Vec::new();
    for (i, mut req) in batch.requests.into_iter().enumerate() {
        match precheck(&req.op) {
            Ok(()) => {
                // Credentials of an addAuth become the ids they prove: never in the log.
                req.op = to_log(req.op);
                accepted.push(req);
                positions.push(i);
            }
            Err((error, message)) => {
                subs[i] = Some(Submission::Rejected {
                    seq: req.seq,
                    error,
                    message,
                })
            }
        }
    }
    if accepted.is_empty() {
        return Ok(subs.into_iter().flatten().collect());
    }
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    // Requests appended together share log records (fewer items to write, read and delete).
    let lengths = log_record_lengths(&accepted.iter().map(|r| &r.op).collect::<Vec<_>>());
    let ids: Vec<String> = lengths
        .iter()
        .map(|_| faaskeeper_guest::random_id())
        .collect();
    let mut attempts = 0;
    let first_zxid = loop {
        attempts += 1;
        let (cas, head): (_, LogHead) = system.cas(keys::LOG_HEAD)?;
        let time_ms = faaskeeper_guest::now_ms();
        let mut prev = head.id.clone();
        let mut records = Vec::with_capacity(ids.len());
        let mut zxid = head.zxid;
        let mut requests = accepted.iter();
        for (id, n) in ids.iter().zip(&lengths) {
            let txns = requests
                .by_ref()
                .take(*n)
                .map(|req| {
                    zxid += 1;
                    Txn {
                        zxid,
                        time_ms,
                        request: req.clone(),
                    }
                })
                .collect();
            let record = LogEntry {
                prev: std::mem::replace(&mut prev, id.clone()),
                txns,
            };
            let bytes = encode_log_record(record).map_err(|e| KvError::Corrupt(e.to_string()))?;
            // Deflated where writes are billed by size: a record of several small txns is
            // mostly JSON names repeated per txn, and its write and delete are billed by it.
            records.push((keys::txn(id), faaskeeper_guest::pack::pack(bytes)));
        }
        // Records must be durable before the head points at them.
        system.set_many(records)?;
        let new_head = LogHead { zxid, id: prev };
        match cas.swap(&new_head) {
            Ok(()) => break head.zxid + 1,
            Err(KvError::CasConflict) if attempts < MAX_CAS_ATTEMPTS => continue,
            Err(e) => {
                let _ = system.delete_many(ids.iter().map(|id| keys::txn(id)).collect());
                return Err(e);
            }
        }
    };
    for (k, (req, i)) in accepted.iter().zip(&positions).enumerate() {
        subs[*i] = Some(Submission::Appended {
            seq: req.seq,
            zxid: first_zxid + k as i64,
        });
    }
    // The txns are in the log whatever happens now; a failed wake-up is repaired by the next
    // writer's wake-up, or by the host's periodic one.
    if let Err(e) = faaskeeper_guest::post(DISTRIBUTOR_URL, b"{}") {
        faaskeeper_guest::log(&format!("writer: distributor not reached: {e}"));
    }
    Ok(subs.into_iter().flatten().collect())
}
