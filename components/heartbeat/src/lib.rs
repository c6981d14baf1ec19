//! # faaskeeper-heartbeat
//!
//! The heartbeat stage (Guarantee 5: ephemeral nodes live exactly as long as their session).
//!
//! - `POST /ping` with `{"session": id}`: a client (or the ZooKeeper gateway, on the client's
//!   pings) says it is alive; the time is stored under `alive/<id>`. No log entry, one write.
//! - `POST /check`, on a timer (the bundled host every 500 ms; Spin's cron trigger): every
//!   session in the distributor's index (`sessions/live`) whose last ping is older than its
//!   timeout is expired by appending a `close_session` (seq `EXPIRE_SEQ`) through the writer,
//!   so its ephemerals are deleted, with their watch events, by the normal pipeline. Sweeping
//!   twice is harmless: the distributor applies the expiry once.
//!
//!   The same sweep deletes expired TTL nodes (`faaskeeper_core::ttl`): every node in the
//!   distributor's TTL index (`ttl/nodes`) that is childless and unmodified for longer than
//!   its TTL gets a `delete_expired` under the service session. Apply checks expiry again at
//!   the txn's time, so a node changed since this look stays, and a repeated one is a no-op.

use faaskeeper_core::apply::NodeRecord;
use faaskeeper_core::keys;
use faaskeeper_core::session::{EXPIRE_SEQ, LiveSessions, SERVICE_SESSION, lapsed};
use faaskeeper_core::ttl::{self, TtlIndex};
use faaskeeper_core::wire::{Op, Request, WriteBatch};
use faaskeeper_guest::kv::{Bucket, KvError};
use faaskeeper_guest::{Reply, Stage};
use std::collections::BTreeMap;

const WRITER_URL: &str = "http://writer.spin.internal/";

struct Heartbeat;

#[derive(serde::Deserialize)]
struct Ping {
    session: i64,
}

impl Stage for Heartbeat {
    fn handle(path: &str, body: Vec<u8>) -> Reply {
        let result = if path.starts_with("/ping") {
            match serde_json::from_slice::<Ping>(&body) {
                Ok(p) => ping(p.session).map(|()| serde_json::json!({ "ok": true })),
                Err(e) => return Reply::error(400, &format!("malformed ping: {e}")),
            }
        } else if path.starts_with("/check") {
            check().map(|(expired, reaped)| {
                serde_json::json!({ "expired": expired, "ttl_expired": reaped })
            })
        } else {
            return Reply::error(404, "unknown heartbeat endpoint");
        };
        match result {
            Ok(v) => Reply::json(&v),
            Err(e) => Reply::error(503, &e.to_string()),
        }
    }
}

faaskeeper_guest::export_stage!(Heartbeat);

fn ping(session: i64) -> Result<(), KvError> {
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    system.set_json(&keys::alive(session), &faaskeeper_guest::now_ms())
}

/// One sweep: the sessions expired and the TTL nodes found expired (both submitted).
fn check() -> Result<(Vec<i64>, Vec<String>), KvError> {
    let system = Bucket::open(keys::SYSTEM_BUCKET)?;
    let now = faaskeeper_guest::now_ms();
    let expired = lapsed_sessions(&system, now)?;
    let reaped = expired_ttl_nodes(&system, now)?;
    let mut requests: Vec<Request> = expired
        .iter()
        .map(|id| Request {
            session: *id,
            seq: EXPIRE_SEQ,
            op: Op::CloseSession,
        })
        .collect();
    requests.extend(reaped.iter().map(|path| Request {
        session: SERVICE_SESSION,
        seq: 0,
        op: Op::DeleteExpired { path: path.clone() },
    }));
    if requests.is_empty() {
        return Ok((expired, reaped));
    }
    let body = serde_json::to_vec(&WriteBatch { requests })
        .map_err(|e| KvError::Corrupt(e.to_string()))?;
    match faaskeeper_guest::post(WRITER_URL, &body) {
        Ok((200, _)) => {}
        Ok((status, b)) => {
            return Err(KvError::Store(format!(
                "writer answered {status}: {}",
                String::from_utf8_lossy(&b)
            )));
        }
        Err(e) => return Err(KvError::Store(format!("writer unreachable: {e}"))),
    }
    // Forget the pings of sessions that are gone; the index entry goes when the expiry is
    // applied.
    if !expired.is_empty() {
        system.delete_many(expired.iter().map(|id| keys::alive(*id)).collect())?;
    }
    Ok((expired, reaped))
}

fn lapsed_sessions(system: &Bucket, now: i64) -> Result<Vec<i64>, KvError> {
    let live: LiveSessions = system.get_json(keys::LIVE_SESSIONS)?.unwrap_or_default();
    if live.sessions.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = live.sessions.keys().copied().collect();
    let values = system.get_many(ids.iter().map(|id| keys::alive(*id)).collect())?;
    let mut alive = BTreeMap::new();
    for (id, (_, v)) in ids.iter().zip(values) {
        if let Some(ms) = v.and_then(|b| serde_json::from_slice::<i64>(&b).ok()) {
            alive.insert(*id, ms);
        }
    }
    Ok(lapsed(&live, &alive, now))
}

fn expired_ttl_nodes(system: &Bucket, now: i64) -> Result<Vec<String>, KvError> {
    let index: TtlIndex = system.get_json(keys::TTL_NODES)?.unwrap_or_default();
    if index.paths.is_empty() {
        return Ok(Vec::new());
    }
    let paths: Vec<String> = index.paths.into_iter().collect();
    // Node records are where the store keeps them (the index says, as the distributor wrote
    // it): system records, or user objects that hold the whole record.
    let records: Vec<Option<NodeRecord>> = if index.nodes_in_user {
        Bucket::open(keys::USER_BUCKET)?
            .get_many(paths.iter().map(|p| keys::user_node(p)).collect())?
            .into_iter()
            .map(|(_, v)| v.and_then(|b| NodeRecord::from_object(&b).ok()))
            .collect()
    } else {
        system
            .get_many(paths.iter().map(|p| keys::node(p)).collect())?
            .into_iter()
            .map(|(_, v)| v.and_then(|b| NodeRecord::from_record(&b).ok()))
            .collect()
    };
    Ok(paths
        .into_iter()
        .zip(records)
        .filter(|(_, n)| {
            n.as_ref()
                .is_some_and(|n| n.children.is_empty() && ttl::expired(&n.stat, now))
        })
        .map(|(p, _)| p)
        .collect())
}
